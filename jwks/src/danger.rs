//! Escape hatches around the verifier's rules, fenced off here as rustls fences off its
//! `dangerous()` configuration: a verifier of access tokens never needs them.
//!
//! The normal path is [`Validator`](crate::Validator), or [`UntrustedToken::verify`] against a
//! [`KeySet`](crate::KeySet) followed by [`VerifiedToken::claims`]: the key comes from the set by
//! the token's `kid`, and the payload is seen only as claims that passed every check. Each
//! function here gives up one of those guarantees:
//!
//! - [`verify_with_key`] checks the signature under the one key it is given, whatever `kid` the
//!   token names, or if it names none. The header rules (`alg` exactly `ES256`, no embedded key,
//!   no `crit`) still apply. It is dangerous because the choice of key moves from the issuer's
//!   published set to the caller: given the wrong key (one the token names or carries, another
//!   issuer's, one meant for another purpose) it accepts tokens the key set refuses, and a
//!   verifier that falls back to it for tokens without a `kid` accepts exactly the tokens the set
//!   refuses as [`MissingKid`](SignatureError::MissingKid). The [`VerifiedToken`] it makes carries
//!   the key's thumbprint as its `kid`.
//! - [`payload`] gives a verified token's payload bytes before any claims check. It is dangerous
//!   because nothing in them has been checked: not `exp`, `nbf`, `iss`, `aud` or `typ`, not even
//!   that they are JSON. Treating them as an access token accepts expired tokens and tokens meant
//!   for other audiences or other uses.
//!
//! Who may use them: tests and test vectors (the RFC 7515 example names no `kid`; Wycheproof's
//! JWS payloads are not claims), and a party that holds exactly one key it trusts for the purpose
//! and reads tokens that are not access tokens, such as an issuer reading back a token it signed
//! itself. A service that accepts access tokens from clients uses [`Validator`](crate::Validator),
//! and the edge Worker uses nothing from this module.
//!
//! ```
//! # #[cfg(feature = "p256")] {
//! use jwks::{P256Verifier, PublicKey, UntrustedToken, danger};
//!
//! # let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
//! # let jwk = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
//! # let key = PublicKey::from_jwk(&serde_json::from_str(jwk).expect("JWK")).expect("RFC 7515 A.3's key");
//! // RFC 7515 A.3: a token without a kid, and the one key that signed it.
//! let token = UntrustedToken::parse(token).expect("well formed");
//! let verified = danger::verify_with_key(&token, &key, &P256Verifier).expect("signed by that key");
//! assert!(danger::payload(&verified).starts_with(br#"{"iss":"joe""#));
//! # }
//! ```
//!
//! Nothing else in the crate reaches the same places: an [`UntrustedToken`] has no way to a
//! payload or a signature check without a key set, and a [`VerifiedToken`] has no payload
//! accessor (its `Debug` output shows the payload's length only).
//!
//! ```compile_fail
//! # fn check(verified: &jwks::VerifiedToken) {
//! let bytes: &[u8] = verified.payload(); // only danger::payload(verified)
//! # }
//! ```
//!
//! ```compile_fail
//! # fn check<B: jwks::Es256Verifier>(token: &jwks::UntrustedToken<'_>, key: &jwks::PublicKey, backend: &B) {
//! let verified = token.verify_with_key(key, backend); // only danger::verify_with_key
//! # }
//! ```

use crate::key::PublicKey;
use crate::token::UntrustedToken;
use crate::verify::{Es256Verifier, SignatureError, VerifiedToken, resolved};

/// Applies the header rules and checks the signature under `key`, whatever `kid` the token names
/// (or none): no key selection. See the [module documentation](self) for why this is dangerous
/// and who may use it; a verifier holding a key set uses [`UntrustedToken::verify`].
pub fn verify_with_key<B: Es256Verifier>(
    token: &UntrustedToken<'_>,
    key: &PublicKey,
    backend: &B,
) -> Result<VerifiedToken, SignatureError> {
    let signature = token.checked_signature()?;
    resolved(token.check_signature(key.thumbprint(), key, signature, backend))
}

/// The signed payload of `token`, as bytes, with no claims checked. See the
/// [module documentation](self) for why this is dangerous and who may use it; a verifier of
/// access tokens uses [`VerifiedToken::claims`].
pub fn payload(token: &VerifiedToken) -> &[u8] {
    &token.payload
}
