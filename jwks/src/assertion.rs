//! Edge assertions: the short-lived token the edge signs for the origin on each request it
//! forwards (`X-Portcullis-Assertion`), so that the origin trusts a signature, not the network.
//!
//! A kind of its own: header `typ` [`ASSERTION_TYPE`] (no access token, ID token or service token
//! has it, and verifiers of those refuse it), `iss` the edge, `aud` the origin, at most
//! [`MAX_ASSERTION_LIFETIME`] seconds of life. The edge signs with a key of its own, never one of
//! the issuer's. The origin verifies with [`ClaimsOptions::edge_assertion`] and a [`Validator`](crate::Validator),
//! against the edge's published keys.
//!
//! This module only assembles the compact JWS around a signature made elsewhere (WebCrypto at the
//! edge): it holds no private key and signs nothing.

use crate::b64;
use crate::claims::ClaimsOptions;
use serde::Serialize;

/// The header `typ` of edge assertions.
pub const ASSERTION_TYPE: &str = "portcullis-assertion+jwt";

/// The request header that carries an assertion to the origin.
pub const ASSERTION_HEADER: &str = "x-portcullis-assertion";

/// The edge's `iss` unless configured otherwise.
pub const DEFAULT_ASSERTION_ISSUER: &str = "portcullis-edge";

/// At most this many keys in the edge's key set: one signing, the others published for rotation.
pub const MAX_ASSERTION_KEYS: usize = 4;

/// The longest lifetime of an assertion, in seconds.
pub const MAX_ASSERTION_LIFETIME: u64 = 300;

/// The clock difference an origin allows an assertion, in seconds: the edge and the origin are
/// expected to keep time closely (the edge's clock is Cloudflare's).
pub const ASSERTION_LEEWAY: u64 = 5;

impl ClaimsOptions {
    /// Options for edge assertions: issued by `edge`, meant for `origin`, `typ`
    /// [`ASSERTION_TYPE`], [`ASSERTION_LEEWAY`] of leeway, at most [`MAX_ASSERTION_LIFETIME`] of life.
    pub fn edge_assertion(edge: impl Into<String>, origin: impl Into<String>) -> Self {
        Self::new(edge, [origin])
            .with_token_type(ASSERTION_TYPE)
            .with_leeway(ASSERTION_LEEWAY)
            .with_max_lifetime(MAX_ASSERTION_LIFETIME)
    }
}

/// What an assertion says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssertionClaims<'a> {
    /// The edge.
    pub iss: &'a str,
    /// The origin it is sent to.
    pub aud: &'a str,
    /// The caller, from the verified access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    /// The caller's roles.
    pub roles: &'a [String],
    /// This assertion's id.
    pub jti: &'a str,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// The `jti` of the access token it vouches for, for tracing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_jti: Option<&'a str>,
    /// [`SERVICE_GRANT`](crate::SERVICE_GRANT) when the caller is a service, as its token said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gty: Option<&'a str>,
}

#[derive(Serialize)]
struct AssertionHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// The JWS signing input of an assertion signed by the key `kid`:
/// `base64url(header) "." base64url(claims)`.
pub fn signing_input(kid: &str, claims: &AssertionClaims<'_>) -> String {
    let header = AssertionHeader { alg: "ES256", typ: ASSERTION_TYPE, kid };
    // Serializing these structs (strings, numbers, string lists) cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", b64::encode(&header), b64::encode(&claims))
}

/// The compact JWS: the signing input, `.`, and the base64url of the raw `r || s` signature
/// (RFC 7518 §3.4), which is what WebCrypto's ECDSA gives.
pub fn compact(signing_input: &str, signature: &[u8; 64]) -> String {
    format!("{signing_input}.{}", b64::encode(signature))
}

#[cfg(all(test, feature = "p256"))]
mod tests {
    use super::*;
    use crate::{KeySet, P256Verifier, Validator, VerifyError};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};

    const NOW: u64 = 1_800_000_000;

    fn key() -> (SigningKey, KeySet, String) {
        let signing = SigningKey::from_slice(&[7; 32]).expect("a scalar");
        let public = crate::PublicKey::from(signing.verifying_key());
        let mut jwk = public.to_jwk();
        let kid = public.thumbprint().to_owned();
        jwk.kid = Some(kid.clone());
        let set = serde_json::to_vec(&crate::JwkSet { keys: vec![jwk] }).expect("JSON");
        (signing, KeySet::parse(&set).expect("a key set"), kid)
    }

    fn assertion(signing: &SigningKey, kid: &str, claims: &AssertionClaims<'_>) -> String {
        let input = signing_input(kid, claims);
        let signature: Signature = signing.sign(input.as_bytes());
        compact(&input, &signature.to_bytes().into())
    }

    fn claims(roles: &[String]) -> AssertionClaims<'_> {
        AssertionClaims {
            iss: "portcullis-edge",
            aud: "https://origin.example",
            sub: Some("alice"),
            roles,
            jti: "a1",
            iat: NOW,
            exp: NOW + 60,
            token_jti: Some("t1"),
            gty: None,
        }
    }

    #[test]
    fn an_origin_verifies_what_the_edge_assembles() {
        let (signing, keys, kid) = key();
        let roles = ["reader".to_owned()];
        let token = assertion(&signing, &kid, &claims(&roles));
        let validator = Validator::new(ClaimsOptions::edge_assertion("portcullis-edge", "https://origin.example"));
        let verified = validator.validate(&token, &keys, &P256Verifier, NOW + 1).expect("valid");
        assert_eq!((verified.sub.as_deref(), verified.roles.as_slice()), (Some("alice"), &roles[..]));
        assert_eq!(verified.jti.as_deref(), Some("a1"));
    }

    #[test]
    fn an_assertion_is_nothing_else_and_nothing_else_is_an_assertion() {
        let (signing, keys, kid) = key();
        let roles = Vec::new();
        let token = assertion(&signing, &kid, &claims(&roles));
        let at = |options: ClaimsOptions| Validator::new(options).validate(&token, &keys, &P256Verifier, NOW + 1);
        // Not an access token, not for another origin, not from another edge, not after exp + leeway.
        assert!(matches!(
            at(ClaimsOptions::new("portcullis-edge", ["https://origin.example"])),
            Err(VerifyError::Claims(_))
        ));
        assert!(at(ClaimsOptions::edge_assertion("portcullis-edge", "https://other.example")).is_err());
        assert!(at(ClaimsOptions::edge_assertion("https://issuer.example", "https://origin.example")).is_err());
        let late = Validator::new(ClaimsOptions::edge_assertion("portcullis-edge", "https://origin.example")).validate(
            &token,
            &keys,
            &P256Verifier,
            NOW + 60 + ASSERTION_LEEWAY + 1,
        );
        assert!(late.is_err());
        // Longer than five minutes: refused even if signed by the right key.
        let long = AssertionClaims { exp: NOW + MAX_ASSERTION_LIFETIME + 1, ..claims(&roles) };
        let token = assertion(&signing, &kid, &long);
        let options = ClaimsOptions::edge_assertion("portcullis-edge", "https://origin.example");
        assert!(Validator::new(options).validate(&token, &keys, &P256Verifier, NOW + 1).is_err());
    }
}
