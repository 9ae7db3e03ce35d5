//! Helpers shared by the integration tests: hex, signing arbitrary tokens, the vectors folder.

#![allow(dead_code, unreachable_pub)]

use jwks::PublicKey;
use p256::ecdsa::{Signature, SigningKey, signature::Signer as _};
use std::path::PathBuf;

/// RFC 7515 A.3.1's compact JWS and A.3's key.
pub const RFC7515_A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
pub const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;

/// A fixed time for tests: 2027-01-15.
pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api";

pub fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit")).collect()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A Wycheproof vector file from `jwks/tests/vectors/wycheproof` (unchanged copies, see its
/// README), or from `$PORTCULLIS_VECTORS` to try others.
pub fn wycheproof(file: &str) -> serde_json::Value {
    let dir = std::env::var_os("PORTCULLIS_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wycheproof"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {} ({error}); set PORTCULLIS_VECTORS", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

/// A signing key derived from a small seed, with its public key.
pub struct TestKey {
    pub signing: SigningKey,
    pub public: PublicKey,
}

impl TestKey {
    pub fn new(seed: u8) -> Self {
        let mut secret = [0u8; 32];
        secret[31] = seed.max(1);
        secret[0] = 0x42;
        let signing = SigningKey::from_slice(&secret).expect("valid scalar");
        let public = PublicKey::from(signing.verifying_key());
        Self { signing, public }
    }

    pub fn kid(&self) -> &str {
        self.public.thumbprint()
    }

    /// Signs `header` and `payload` (raw JSON texts) into a compact JWS.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// A good access token for `claims` (a JSON object text), with this key's kid.
    pub fn sign_claims(&self, claims: &str) -> String {
        self.sign_raw(&format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"{}"}}"#, self.kid()), claims)
    }

    /// The JWKS that publishes this key.
    pub fn jwks(&self) -> String {
        serde_json::to_string(&jwks::JwkSet { keys: vec![self.public.to_jwk()] }).expect("serializes")
    }
}

/// Claims that pass the default options at [`NOW`], with `changes` applied (an empty value
/// removes the member).
pub fn claims(changes: &[(&str, &str)]) -> String {
    let mut members: Vec<(String, String)> = vec![
        ("iss".into(), format!("{ISSUER:?}")),
        ("sub".into(), r#""user-1""#.into()),
        ("aud".into(), format!("{AUDIENCE:?}")),
        ("exp".into(), (NOW + 300).to_string()),
        ("iat".into(), NOW.to_string()),
        ("nbf".into(), NOW.to_string()),
        ("jti".into(), r#""jti-1""#.into()),
        ("roles".into(), r#"["reader"]"#.into()),
    ];
    for (name, value) in changes {
        members.retain(|(member, _)| member != name);
        if !value.is_empty() {
            members.push(((*name).into(), (*value).into()));
        }
    }
    let body: Vec<String> = members.iter().map(|(name, value)| format!("{name:?}:{value}")).collect();
    format!("{{{}}}", body.join(","))
}

pub fn options() -> jwks::ClaimsOptions {
    jwks::ClaimsOptions::new(ISSUER, [AUDIENCE])
}

pub fn decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).expect("base64url")
}
