//! Published test vectors: RFC 7515 Appendix A.3, RFC 7638, and Project Wycheproof's ECDSA
//! P-256 (P1363), JSON Web Signature and JSON Web Key cases.

mod support;

use jwks::{
    ClaimsError, ClaimsOptions, Es256Verifier as _, Jwk, KeySet, P256Verifier, PublicKey, SignatureError,
    UntrustedToken, danger,
};
use serde_json::{Value, json};
use support::{RFC7515_A3_JWK, RFC7515_A3_TOKEN, hex, wycheproof};

fn rfc7515_public_key() -> PublicKey {
    let mut jwk: Jwk = serde_json::from_str(RFC7515_A3_JWK).expect("JWK");
    jwk.d = None; // the RFC prints the private key too; a verifier only ever sees the public part
    PublicKey::from_jwk(&jwk).expect("valid key")
}

#[test]
fn rfc7638_thumbprint_of_the_rfc7515_key() {
    assert_eq!(rfc7515_public_key().thumbprint(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
}

#[test]
fn rfc7515_a3_verifies_at_its_own_time_and_is_expired_today() {
    let key = rfc7515_public_key();
    let token = UntrustedToken::parse(RFC7515_A3_TOKEN).expect("well formed");
    assert_eq!(token.header().alg, "ES256");
    // The RFC's token names no kid: only the one-key escape hatch checks it.
    let verified = danger::verify_with_key(&token, &key, &P256Verifier).expect("the RFC's signature verifies");
    assert!(danger::payload(&verified).starts_with(br#"{"iss":"joe","#));

    let options = ClaimsOptions::new("joe", ["any"]);
    // At its own time (exp 1300819380) expiry is no objection; what remains is that the RFC's
    // example is not an RFC 9068 access token (no typ).
    assert_eq!(verified.claims(&options, 1_300_819_379), Err(ClaimsError::WrongTokenType));
    // 2026-11-22 (a fixed "today", so that the test does not read a clock).
    assert_eq!(verified.claims(&options, 1_795_392_000), Err(ClaimsError::Expired));

    // With a key set, the RFC token has no kid and is refused: there is no "first key" fallback.
    let keys = KeySet::from_keys([key]);
    assert_eq!(token.verify(&keys, &P256Verifier).map(|_| ()), Err(SignatureError::MissingKid));
}

#[test]
fn rfc7515_a3_fails_when_changed() {
    let key = rfc7515_public_key();
    let mut bytes = RFC7515_A3_TOKEN.as_bytes().to_vec();
    let at = RFC7515_A3_TOKEN.find('.').expect("dot") + 5;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(bytes).expect("ASCII");
    let token = UntrustedToken::parse(&changed).expect("still well formed");
    assert_eq!(danger::verify_with_key(&token, &key, &P256Verifier).map(|_| ()), Err(SignatureError::Invalid));
}

/// The verdict for raw P1363 input, as the verifier reaches it: anything not 64 bytes is refused
/// before the backend is asked.
fn p1363_verdict(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    match <&[u8; 64]>::try_from(signature) {
        Ok(signature) => P256Verifier.verify_es256(key, message, signature),
        Err(_) => false,
    }
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363() {
    let file = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json");
    let (mut valid, mut invalid, mut total) = (0, 0, 0);
    for group in file["testGroups"].as_array().expect("groups") {
        let sec1 = hex(group["publicKey"]["uncompressed"].as_str().expect("key"));
        let key = PublicKey::from_sec1(&sec1).expect("group key imports");
        if let Some(jwk) = group.get("publicKeyJwk") {
            let from_jwk = PublicKey::from_jwk(&serde_json::from_value(jwk.clone()).expect("jwk"));
            assert_eq!(from_jwk.as_ref(), Ok(&key), "the JWK form is the same key");
        }
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let message = hex(case["msg"].as_str().expect("msg"));
            let signature = hex(case["sig"].as_str().expect("sig"));
            let accepted = p1363_verdict(&key, &message, &signature);
            match case["result"].as_str() {
                Some("valid") => {
                    assert!(accepted, "tcId {id} ({}) must verify", case["comment"]);
                    valid += 1;
                }
                Some("invalid") => {
                    assert!(!accepted, "tcId {id} ({}) must not verify", case["comment"]);
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other:?}"),
            }
            total += 1;
        }
    }
    assert_eq!((total, valid, invalid), (262, 173, 89));
    println!("wycheproof p1363: {total} cases, {valid} valid verified, {invalid} invalid refused");
}

#[test]
fn wycheproof_p1363_high_s_twin_is_accepted() {
    // tcId 1 is a high-S signature marked valid: JWS (unlike Bitcoin) does not require low S.
    let file = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json");
    let group = &file["testGroups"][0];
    let case = &group["tests"][0];
    assert_eq!(case["tcId"], 1);
    let key = PublicKey::from_sec1(&hex(group["publicKey"]["uncompressed"].as_str().expect("key"))).expect("key");
    assert!(p1363_verdict(&key, &hex(case["msg"].as_str().expect("msg")), &hex(case["sig"].as_str().expect("sig"))));
}

/// What the verifier says of one JWS against one published key.
#[derive(Debug, PartialEq)]
enum JwsVerdict {
    /// Signature good; carries the payload.
    Verified(Vec<u8>),
    /// Refused before or at the signature.
    Refused(String),
}

fn jws_verdict(keys: &KeySet, jws: &str) -> JwsVerdict {
    match UntrustedToken::parse(jws) {
        Err(error) => JwsVerdict::Refused(format!("parse: {error}")),
        Ok(token) => match token.verify(keys, &P256Verifier) {
            Ok(verified) => {
                // The payload is "foo", not a claims object: a signature success must still be a
                // claims failure, never an accepted access token.
                let options = ClaimsOptions::new("https://issuer.test", ["api"]);
                assert_eq!(verified.claims(&options, 0), Err(ClaimsError::NotJsonObject));
                JwsVerdict::Verified(danger::payload(&verified).to_vec())
            }
            Err(error) => JwsVerdict::Refused(format!("signature: {error}")),
        },
    }
}

fn key_set_of(public: &Value) -> KeySet {
    let document = if public.get("keys").is_some() { public.clone() } else { json!({ "keys": [public] }) };
    KeySet::parse(document.to_string().as_bytes()).expect("the document itself is well formed")
}

#[test]
fn wycheproof_json_web_signature_es256() {
    let file = wycheproof("json_web_signature_test.json");
    let es256_groups = ["es256", "SpecialCaseEs256", "ec_key_for_encryption"];
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().expect("groups") {
        if !es256_groups.contains(&group["comment"].as_str().unwrap_or_default()) {
            continue;
        }
        let keys = key_set_of(&group["public"]);
        for case in group["tests"].as_array().expect("tests") {
            let verdict = jws_verdict(&keys, case["jws"].as_str().expect("jws"));
            let id = &case["tcId"];
            match case["result"].as_str() {
                Some("valid") => {
                    assert_eq!(verdict, JwsVerdict::Verified(b"foo".to_vec()), "tcId {id}");
                    valid += 1;
                }
                Some("invalid") => {
                    assert!(matches!(verdict, JwsVerdict::Refused(_)), "tcId {id} ({}) accepted", case["comment"]);
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other:?}"),
            }
        }
    }
    assert_eq!(valid + invalid, 41, "the ES256 cases");
    println!("wycheproof JWS ES256: {} cases, {valid} valid verified, {invalid} invalid refused", valid + invalid);
}

#[test]
fn wycheproof_json_web_signature_other_algorithms_are_all_refused() {
    // Every non-ES256 case, valid or not, must be refused: Portcullis verifies ES256 only.
    let file = wycheproof("json_web_signature_test.json");
    let mut refused = 0;
    for group in file["testGroups"].as_array().expect("groups") {
        let Some(public) = group.get("public") else { continue };
        let Ok(keys) = KeySet::parse(json!({ "keys": [public] }).to_string().as_bytes()) else { continue };
        for case in group["tests"].as_array().expect("tests") {
            let jws = case["jws"].as_str().unwrap_or_default();
            let Ok(token) = UntrustedToken::parse(jws) else { continue };
            if token.header().alg == "ES256" {
                continue;
            }
            assert!(token.verify(&keys, &P256Verifier).is_err(), "tcId {} accepted", case["tcId"]);
            refused += 1;
        }
    }
    assert!(refused > 100, "only {refused} non-ES256 cases seen");
}

#[test]
fn wycheproof_json_web_key() {
    let file = wycheproof("json_web_key_test.json");
    let (mut cases, mut accepted, mut refused_valid) = (0, 0, 0);
    for group in file["testGroups"].as_array().expect("groups") {
        // A verifier is given the public set; where the group has none, the private one is what a
        // careless publisher would serve, and must yield no usable key.
        let published = group.get("public").unwrap_or(&group["private"]);
        let keys = key_set_of(published);
        let has_private_part = |kid: &str| {
            published["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kid"] == kid && (k.get("d").is_some() || k.get("k").is_some()))
        };
        assert!(
            keys.kids().all(|kid| !has_private_part(kid)),
            "{}: a key with a private part is usable",
            group["comment"]
        );
        for case in group["tests"].as_array().expect("tests") {
            cases += 1;
            let verdict = jws_verdict(&keys, case["jws"].as_str().expect("jws"));
            let id = &case["tcId"];
            match (case["result"].as_str(), &verdict) {
                (Some("valid"), JwsVerdict::Verified(_)) => accepted += 1,
                // Valid HMAC/RSA cases: not ES256, so refused here by design.
                (Some("valid"), JwsVerdict::Refused(_)) => refused_valid += 1,
                (Some("invalid"), JwsVerdict::Refused(_)) => {}
                (result, verdict) => panic!("tcId {id}: expected {result:?}, got {verdict:?}"),
            }
        }
    }
    assert_eq!(cases, 26);
    println!(
        "wycheproof JWK: {cases} cases, {accepted} accepted, all invalid refused, {refused_valid} valid non-ES256 refused"
    );
}
