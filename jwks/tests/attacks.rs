//! DESIGN.md, "What the verifier refuses, always": one test for each, each asserting the exact
//! reason, plus the high-S twin that must be accepted.

mod support;

use jwks::{
    ClaimsError, KeyError, KeySet, KeySetError, KeySetLimits, P256Verifier, ParseError, SignatureError, SkipReason,
    Validator, VerifyError,
};
use support::{AUDIENCE, ISSUER, NOW, TestKey, b64, claims, options};

fn validate(key: &TestKey, token: &str) -> Result<jwks::Claims, VerifyError> {
    let keys = KeySet::parse(key.jwks().as_bytes()).expect("key set");
    Validator::new(options()).validate(token, &keys, &P256Verifier, NOW)
}

fn signature_error(error: SignatureError) -> Result<jwks::Claims, VerifyError> {
    Err(VerifyError::Signature(error))
}

fn claims_error(error: ClaimsError) -> Result<jwks::Claims, VerifyError> {
    Err(VerifyError::Claims(error))
}

#[test]
fn a_good_token_is_accepted() {
    let key = TestKey::new(1);
    let accepted = validate(&key, &key.sign_claims(&claims(&[]))).expect("valid token");
    assert_eq!(accepted.sub.as_deref(), Some("user-1"));
    assert_eq!(accepted.iss, ISSUER);
    assert_eq!(accepted.aud, [AUDIENCE]);
}

#[test]
fn alg_none_is_refused() {
    let key = TestKey::new(1);
    let header = format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{}"}}"#, key.kid());
    let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(claims(&[]).as_bytes()));
    assert_eq!(validate(&key, &unsigned), signature_error(SignatureError::AlgorithmNotEs256));
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    // The classic confusion: HMAC keyed with the public key's bytes, which anyone knows.
    use hmac_sha256::HMAC;
    let key = TestKey::new(1);
    let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#, key.kid());
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims(&[]).as_bytes()));
    for secret in [key.public.to_sec1().to_vec(), key.jwks().into_bytes()] {
        let token = format!("{input}.{}", b64(&HMAC::mac(input.as_bytes(), &secret)));
        assert_eq!(validate(&key, &token), signature_error(SignatureError::AlgorithmNotEs256));
    }
}

#[test]
fn alg_in_another_case_is_refused() {
    let key = TestKey::new(1);
    for alg in ["es256", "Es256", "ES256 ", "ES384", "ES256K", "EdDSA"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid());
        let token = key.sign_raw(&header, &claims(&[]));
        assert_eq!(validate(&key, &token), signature_error(SignatureError::AlgorithmNotEs256), "{alg}");
    }
}

#[test]
fn embedded_key_headers_are_refused_even_when_they_hold_the_right_key() {
    let key = TestKey::new(1);
    let jwk = serde_json::to_string(&key.public.to_jwk()).expect("jwk");
    for (member, value) in [
        ("jwk", jwk.as_str()),
        ("jku", r#""https://attacker.test/jwks.json""#),
        ("x5u", r#""https://attacker.test/cert.pem""#),
        ("x5c", r#"["MIIB"]"#),
    ] {
        let header = format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}","{member}":{value}}}"#, key.kid());
        let token = key.sign_raw(&header, &claims(&[]));
        assert_eq!(validate(&key, &token), signature_error(SignatureError::EmbeddedKey(member)), "{member}");
    }
}

#[test]
fn crit_is_refused() {
    let key = TestKey::new(1);
    for crit in [r#"["exp"]"#, r#"["b64"]"#, "[]"] {
        let header = format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}","crit":{crit},"b64":false}}"#, key.kid());
        let token = key.sign_raw(&header, &claims(&[]));
        assert_eq!(validate(&key, &token), signature_error(SignatureError::CriticalHeader), "{crit}");
    }
}

#[test]
fn unknown_kid_never_falls_back_to_the_only_key() {
    let key = TestKey::new(1);
    let header = r#"{"alg":"ES256","typ":"at+jwt","kid":"not-in-the-set"}"#;
    let error = validate(&key, &key.sign_raw(header, &claims(&[]))).expect_err("refused");
    assert!(error.is_unknown_kid());
    let no_kid = key.sign_raw(r#"{"alg":"ES256","typ":"at+jwt"}"#, &claims(&[]));
    assert_eq!(validate(&key, &no_kid), signature_error(SignatureError::MissingKid));
}

#[test]
fn a_token_signed_by_another_key_with_a_published_kid_is_refused() {
    let published = TestKey::new(1);
    let attacker = TestKey::new(2);
    let header = format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, published.kid());
    let token = attacker.sign_raw(&header, &claims(&[]));
    assert_eq!(validate(&published, &token), signature_error(SignatureError::Invalid));
}

#[test]
fn a_tampered_payload_is_refused() {
    let key = TestKey::new(1);
    let token = key.sign_claims(&claims(&[]));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(claims(&[("roles", r#"["admin"]"#)]).as_bytes());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(validate(&key, &tampered), signature_error(SignatureError::Invalid));
}

#[test]
fn a_token_without_exp_is_refused() {
    let key = TestKey::new(1);
    assert_eq!(validate(&key, &key.sign_claims(&claims(&[("exp", "")]))), claims_error(ClaimsError::Missing("exp")));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let key = TestKey::new(1);
    let expired = claims(&[("iat", &(NOW - 400).to_string()), ("exp", &(NOW - 61).to_string())]);
    assert_eq!(validate(&key, &key.sign_claims(&expired)), claims_error(ClaimsError::Expired));
    let early = claims(&[("nbf", &(NOW + 120).to_string())]);
    assert_eq!(validate(&key, &key.sign_claims(&early)), claims_error(ClaimsError::NotYetValid));
}

#[test]
fn a_wrong_typ_is_refused() {
    let key = TestKey::new(1);
    for typ in [r#","typ":"JWT""#, r#","typ":"id_token+jwt""#, ""] {
        let header = format!(r#"{{"alg":"ES256","kid":"{}"{typ}}}"#, key.kid());
        let token = key.sign_raw(&header, &claims(&[]));
        assert_eq!(validate(&key, &token), claims_error(ClaimsError::WrongTokenType), "{typ}");
    }
}

#[test]
fn an_issuer_that_is_not_exactly_the_configured_one_is_refused() {
    let key = TestKey::new(1);
    for iss in [r#""https://issuer.test/""#, r#""https://ISSUER.test""#, r#""https://issuer.test.evil""#] {
        let token = key.sign_claims(&claims(&[("iss", iss)]));
        assert_eq!(validate(&key, &token), claims_error(ClaimsError::WrongIssuer), "{iss}");
    }
}

#[test]
fn an_audience_with_none_of_the_configured_ones_is_refused() {
    let key = TestKey::new(1);
    for aud in [r#""other""#, r#"["other","apis"]"#, "[]"] {
        let token = key.sign_claims(&claims(&[("aud", aud)]));
        assert_eq!(validate(&key, &token), claims_error(ClaimsError::WrongAudience), "{aud}");
    }
    let token = key.sign_claims(&claims(&[("aud", r#"["other","api"]"#)]));
    assert!(validate(&key, &token).is_ok(), "any-of");
}

#[test]
fn times_given_as_strings_are_refused() {
    let key = TestKey::new(1);
    let token = key.sign_claims(&claims(&[("exp", &format!("\"{}\"", NOW + 300))]));
    assert_eq!(validate(&key, &token), claims_error(ClaimsError::WrongClaimType("exp")));
    let token = key.sign_claims(&claims(&[("nbf", &format!("\"{NOW}\""))]));
    assert_eq!(validate(&key, &token), claims_error(ClaimsError::WrongClaimType("nbf")));
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let key = TestKey::new(1);
    let padding = "x".repeat(9000);
    let token = key.sign_claims(&claims(&[("pad", &format!("{padding:?}"))]));
    assert_eq!(validate(&key, &token), Err(VerifyError::Parse(ParseError::TooLarge { limit: 8192 })));
}

#[test]
fn oversized_key_sets_are_refused() {
    let key = TestKey::new(1);
    let jwk = serde_json::to_string(&key.public.to_jwk()).expect("jwk");
    let many = format!(r#"{{"keys":[{}]}}"#, vec![jwk.as_str(); 33].join(","));
    assert_eq!(KeySet::parse(many.as_bytes()), Err(KeySetError::TooManyKeys { limit: 32 }));
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(64 * 1024));
    assert_eq!(KeySet::parse(big.as_bytes()), Err(KeySetError::TooLarge { limit: 64 * 1024 }));
    let limits = KeySetLimits::default();
    assert_eq!((limits.max_bytes, limits.max_keys), (65_536, 32));
}

#[test]
fn duplicate_json_members_are_refused_everywhere() {
    let key = TestKey::new(1);
    let header = format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}","alg":"ES256"}}"#, key.kid());
    let token = key.sign_raw(&header, &claims(&[]));
    assert_eq!(validate(&key, &token), Err(VerifyError::Parse(ParseError::HeaderDuplicateMember)));

    let payload = claims(&[]).replacen('{', r#"{"sub":"admin","#, 1);
    assert_eq!(validate(&key, &key.sign_claims(&payload)), claims_error(ClaimsError::DuplicateMember));

    let jwks = key.jwks().replacen(r#""kty":"EC""#, r#""kty":"EC","kty":"EC""#, 1);
    assert_eq!(KeySet::parse(jwks.as_bytes()), Err(KeySetError::DuplicateMember));
}

#[test]
fn keys_that_are_not_p256_signing_keys_are_skipped() {
    let key = TestKey::new(1);
    let mut jwk = serde_json::to_value(key.public.to_jwk()).expect("jwk");
    let variant = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut changed = jwk.clone();
        change(&mut changed);
        let set = KeySet::parse(serde_json::json!({ "keys": [changed] }).to_string().as_bytes()).expect("set");
        assert!(set.get(key.kid()).is_none());
        set.skipped()[0].reason.clone()
    };
    assert_eq!(variant(&|k| k["use"] = "enc".into()), SkipReason::Key(KeyError::NotForSignatures("enc".into())));
    assert_eq!(
        variant(&|k| k["crv"] = "P-384".into()),
        SkipReason::Key(KeyError::UnsupportedCurve(Some("P-384".into())))
    );
    assert_eq!(
        variant(&|k| k["crv"] = "secp256k1".into()),
        SkipReason::Key(KeyError::UnsupportedCurve(Some("secp256k1".into())))
    );
    assert_eq!(variant(&|k| k["d"] = b64(&[1; 32]).into()), SkipReason::Key(KeyError::PrivateKey));
    assert_eq!(variant(&|k| k["y"] = b64(&[1; 32]).into()), SkipReason::Key(KeyError::NotOnCurve));
    assert_eq!(
        variant(&|k| k["key_ops"] = serde_json::json!(["encrypt"])),
        SkipReason::Key(KeyError::NotForVerification)
    );
    assert_eq!(variant(&|k| k["alg"] = "RS256".into()), SkipReason::Key(KeyError::WrongAlgorithm("RS256".into())));
    assert_eq!(variant(&|k| k["kty"] = "oct".into()), SkipReason::Key(KeyError::UnsupportedKeyType("oct".into())));

    // And a token that names such a key is refused as an unknown kid.
    jwk["use"] = "enc".into();
    let set = KeySet::parse(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes()).expect("set");
    let error = Validator::new(options()).validate(&key.sign_claims(&claims(&[])), &set, &P256Verifier, NOW);
    assert!(error.expect_err("refused").is_unknown_kid());
}

#[test]
fn high_s_twins_are_accepted() {
    use p256::ecdsa::Signature;
    let key = TestKey::new(1);
    let token = key.sign_claims(&claims(&[]));
    let (input, signature) = token.rsplit_once('.').expect("dot");
    let signature = Signature::from_slice(&support::decode(signature)).expect("signature");
    let (r, s) = signature.split_scalars();
    let twin = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("n - s is a valid scalar");
    assert_ne!(twin, signature);
    let twin_token = format!("{input}.{}", b64(&twin.to_bytes()));
    // Exactly one of the two is high-S; both verify.
    assert!((signature.normalize_s() == signature) != (twin.normalize_s() == twin));
    assert!(validate(&key, &token).is_ok());
    assert!(validate(&key, &twin_token).is_ok());
}
