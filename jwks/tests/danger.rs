//! The escape hatches in `jwks::danger`: what each one skips, and what it still refuses.

mod support;

use jwks::{ClaimsError, KeySet, P256Verifier, SignatureError, UntrustedToken, danger};
use support::{NOW, TestKey, b64, claims, options};

fn parse(token: &str) -> UntrustedToken<'_> {
    UntrustedToken::parse(token).expect("well formed")
}

#[test]
fn verify_with_key_skips_key_selection_and_nothing_else() {
    let key = TestKey::new(1);
    let other = TestKey::new(2);
    let keys = KeySet::from_keys([key.public.clone()]);
    let body = claims(&[]);
    let cases = [
        (r#"{"alg":"ES256","typ":"at+jwt"}"#.to_owned(), SignatureError::MissingKid),
        (r#"{"alg":"ES256","typ":"at+jwt","kid":"nobody"}"#.to_owned(), SignatureError::UnknownKid),
        (format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, other.kid()), SignatureError::UnknownKid),
    ];
    for (header, refusal) in cases {
        let token = key.sign_raw(&header, &body);
        let token = parse(&token);
        assert_eq!(token.verify(&keys, &P256Verifier).map(|_| ()), Err(refusal), "{header}");
        let verified = danger::verify_with_key(&token, &key.public, &P256Verifier).expect("signed by this key");
        assert_eq!(verified.kid(), key.kid(), "the kid is the given key's thumbprint, whatever the token names");
        assert_eq!(verified.claims(&options(), NOW).map(|claims| claims.sub), Ok(Some("user-1".to_owned())));
        let wrong = danger::verify_with_key(&token, &other.public, &P256Verifier);
        assert_eq!(wrong.map(|_| ()), Err(SignatureError::Invalid), "{header}");
    }
}

#[test]
fn verify_with_key_still_applies_the_header_rules() {
    let key = TestKey::new(1);
    let body = claims(&[]);
    let cases = [
        (r#"{"alg":"none"}"#, SignatureError::AlgorithmNotEs256),
        (r#"{"alg":"HS256"}"#, SignatureError::AlgorithmNotEs256),
        (r#"{"alg":"es256"}"#, SignatureError::AlgorithmNotEs256),
        (r#"{"alg":"ES256","jwk":{}}"#, SignatureError::EmbeddedKey("jwk")),
        (r#"{"alg":"ES256","jku":"https://evil.example"}"#, SignatureError::EmbeddedKey("jku")),
        (r#"{"alg":"ES256","crit":["exp"]}"#, SignatureError::CriticalHeader),
    ];
    for (header, refusal) in cases {
        let token = key.sign_raw(header, &body);
        let verdict = danger::verify_with_key(&parse(&token), &key.public, &P256Verifier);
        assert_eq!(verdict.map(|_| ()), Err(refusal), "{header}");
    }
    let good = key.sign_raw(r#"{"alg":"ES256"}"#, &body);
    let truncated = format!("{}.{}", &good[..good.rfind('.').expect("dot")], b64(&[7; 63]));
    let verdict = danger::verify_with_key(&parse(&truncated), &key.public, &P256Verifier);
    assert_eq!(verdict.map(|_| ()), Err(SignatureError::WrongLength));
}

#[test]
fn payload_gives_the_signed_bytes_with_no_claims_checked() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let expired = claims(&[("exp", &(NOW - 3600).to_string()), ("iat", &(NOW - 3900).to_string())]);
    for body in [expired.as_str(), "not json at all"] {
        let token = key.sign_claims(body);
        let verified = parse(&token).verify(&keys, &P256Verifier).expect("the signature is good");
        assert!(verified.claims(&options(), NOW).is_err(), "{body}");
        assert_eq!(danger::payload(&verified), body.as_bytes());
    }
    let token = key.sign_claims(&expired);
    let verified = parse(&token).verify(&keys, &P256Verifier).expect("the signature is good");
    assert_eq!(verified.claims(&options(), NOW), Err(ClaimsError::Expired));
}

#[test]
fn debug_output_of_a_verified_token_shows_no_payload() {
    let key = TestKey::new(1);
    let keys = KeySet::from_keys([key.public.clone()]);
    let token = key.sign_claims(&claims(&[("sub", r#""secret-subject""#)]));
    let verified = parse(&token).verify(&keys, &P256Verifier).expect("verifies");
    let shown = format!("{verified:?}");
    assert!(shown.contains(key.kid()), "{shown}");
    assert!(shown.contains(&format!("payload_bytes: {}", danger::payload(&verified).len())), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}
