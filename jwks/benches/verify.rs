//! The native cost of verifying one access token, phase by phase.
//!
//! `cargo bench -p jwks` (release profile). Reports nanoseconds per operation as the median of
//! several rounds; compare figures within one run, not across machines.

use jwks::{ClaimsOptions, Es256Verifier as _, KeySet, P256Verifier, PublicKey, UntrustedToken, Validator};
use p256::ecdsa::{Signature, SigningKey, signature::Signer as _};
use std::hint::black_box;
use std::time::Instant;

const NOW: u64 = 1_800_000_000;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Median nanoseconds per call of `f` over `rounds` rounds of `iterations` calls.
fn measure(name: &str, iterations: u32, mut f: impl FnMut()) -> f64 {
    let rounds = 7;
    let mut per_call: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    let median = per_call[rounds / 2];
    println!("{name:<44} {median:>10.0} ns/op   ({:.0} ops/s on one core)", 1e9 / median);
    median
}

fn main() {
    let signing = SigningKey::from_slice(&[0x21; 32]).expect("key");
    let public = PublicKey::from(signing.verifying_key());
    let header = format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, public.thumbprint());
    let claims = format!(
        r#"{{"iss":"https://issuer.test","sub":"user-1","aud":"api","exp":{},"iat":{NOW},"nbf":{NOW},"jti":"0f3c","roles":["reader","writer"],"client_id":"web"}}"#,
        NOW + 300
    );
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature: Signature = signing.sign(input.as_bytes());
    let token = format!("{input}.{}", b64(&signature.to_bytes()));
    let jwks = serde_json::to_string(&jwks::JwkSet { keys: vec![public.to_jwk()] }).expect("jwks");
    let keys = KeySet::parse(jwks.as_bytes()).expect("key set");
    let validator = Validator::new(ClaimsOptions::new("https://issuer.test", ["api"]));
    let raw_signature: [u8; 64] = signature.to_bytes().into();

    println!("token: {} bytes", token.len());
    let full = measure("validate (parse + signature + claims)", 2_000, || {
        black_box(validator.validate(black_box(&token), &keys, &P256Verifier, NOW).expect("valid"));
    });
    let signature_only = measure("p256 signature check alone", 2_000, || {
        black_box(P256Verifier.verify_es256(&public, black_box(input.as_bytes()), &raw_signature));
    });
    measure("parse alone", 100_000, || {
        black_box(UntrustedToken::parse(black_box(&token)).expect("parses"));
    });
    let untrusted = UntrustedToken::parse(&token).expect("parses");
    let verified = untrusted.verify(&keys, &P256Verifier).expect("verifies");
    measure("claims check alone", 100_000, || {
        black_box(verified.claims(&validator.claims, NOW).expect("valid"));
    });
    measure("JWKS parse (1 key, on-curve check)", 20_000, || {
        black_box(KeySet::parse(black_box(jwks.as_bytes())).expect("parses"));
    });
    println!("everything but the signature: {:.1}% of a validation", 100.0 * (full - signature_only) / full);
}
