//! Any bytes as a token: parsing and full validation must never panic.
#![no_main]

use jwks::{ClaimsOptions, KeySet, P256Verifier, UntrustedToken, Validator};
use libfuzzer_sys::fuzz_target;

const JWKS: &[u8] = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = UntrustedToken::parse(text) {
        let _ = token.header();
    }
    let keys = KeySet::parse(JWKS).expect("the fixed key set parses");
    let validator = Validator::new(ClaimsOptions::new("https://issuer.test", ["api"]));
    let _ = validator.validate(text, &keys, &P256Verifier, 1_800_000_000);
});
