//! The core under WebAssembly (run by wasm-bindgen-test under Node): the same verdicts as natively.
#![cfg(target_arch = "wasm32")]

use jwks::{
    ClaimsError, ClaimsOptions, Jwk, KeySet, P256Verifier, Policy, PublicKey, SignatureError, UntrustedToken, danger,
};
use support::{RFC7515_A3_JWK, RFC7515_A3_TOKEN};
use wasm_bindgen_test::wasm_bindgen_test;

mod support;

fn rfc_key() -> PublicKey {
    let mut jwk: Jwk = serde_json::from_str(RFC7515_A3_JWK).expect("JWK");
    jwk.d = None;
    PublicKey::from_jwk(&jwk).expect("valid key")
}

/// The RFC key's public part as a JWK with a kid.
fn rfc_public_jwk() -> String {
    let mut jwk = rfc_key().to_jwk();
    jwk.kid = Some("a3".into());
    serde_json::to_string(&jwk).expect("JWK")
}

#[wasm_bindgen_test]
fn thumbprint_matches_rfc7638() {
    assert_eq!(rfc_key().thumbprint(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
}

#[wasm_bindgen_test]
fn rfc7515_a3_signature_and_expiry() {
    let token = UntrustedToken::parse(RFC7515_A3_TOKEN).expect("well formed");
    let verified = danger::verify_with_key(&token, &rfc_key(), &P256Verifier).expect("verifies");
    let options = ClaimsOptions::new("joe", ["any"]);
    assert_eq!(verified.claims(&options, 1_795_392_000), Err(ClaimsError::Expired));
    let keys = KeySet::parse(format!(r#"{{"keys":[{}]}}"#, rfc_public_jwk()).as_bytes()).expect("set");
    assert_eq!(token.verify(&keys, &P256Verifier).map(|_| ()), Err(SignatureError::MissingKid));
}

#[wasm_bindgen_test]
fn off_curve_points_and_private_keys_are_refused() {
    let off_curve = RFC7515_A3_JWK.replace("I5a0", "I5a4");
    let with_d =
        RFC7515_A3_JWK.replace(r#""kid":"a3""#, r#""kid":"a3","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI""#);
    for jwk in [off_curve, with_d] {
        let set = KeySet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).expect("set");
        assert!(set.is_empty());
        assert_eq!(set.skipped().len(), 1);
    }
}

#[wasm_bindgen_test]
fn policy_first_match_and_deny() {
    let policy = Policy::parse(
        r#"
        [[rules]]
        path = "/api/admin/*"
        access = "any_role"
        roles = ["admin"]
        [[rules]]
        path = "/api/*"
        access = "authenticated"
        "#,
    )
    .expect("policy");
    assert!(policy.route("GET", "/api/admin/x").is_some_and(|rule| !rule.access.permits(&[])));
    assert!(policy.route("GET", "/api/x").is_some_and(|rule| rule.access.permits(&[])));
    assert!(policy.route("GET", "/api/../admin").is_none());
    assert!(policy.route("GET", "/other").is_none());
}
