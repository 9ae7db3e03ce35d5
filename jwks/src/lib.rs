//! The Portcullis core: everything that decides whether a token is good, and nothing that does
//! I/O. Time and bytes come in as arguments; the signature check comes in through a trait, so the
//! same rules run natively (with [`P256Verifier`]) and at the edge (with WebCrypto).
//!
//! ```
//! # #[cfg(feature = "p256")] {
//! use jwks::{ClaimsOptions, KeySet, P256Verifier, Validator};
//!
//! let keys = KeySet::parse(br#"{"keys":[]}"#).expect("a key set");
//! let validator = Validator::new(ClaimsOptions::new("https://issuer.example", ["api"]));
//! let refused = validator.validate("not.a.token", &keys, &P256Verifier, 1_800_000_000);
//! assert!(refused.is_err());
//! # }
//! ```
//!
//! The phases, each with its own error type: [`UntrustedToken::parse`] ([`ParseError`]), then
//! [`UntrustedToken::verify`] against a [`KeySet`] ([`SignatureError`]), which alone makes a
//! [`VerifiedToken`], whose [`VerifiedToken::claims`] are checked against [`ClaimsOptions`]
//! ([`ClaimsError`]). A [`Policy`] ([`PolicyError`]) maps a request to the [`Access`] it needs.

mod b64;
mod cache;
mod claims;
mod curve;
mod json;
mod key;
mod keyset;
mod policy;
mod token;
mod verify;

pub use cache::{DEFAULT_TOKEN_CACHE_ENTRIES, TokenCache};
pub use claims::{Claims, ClaimsError, ClaimsOptions};
pub use key::{Jwk, JwkSet, KeyError, PublicKey};
pub use keyset::{KeySet, KeySetError, KeySetLimits, SkipReason, SkippedKey};
pub use policy::{Access, Policy, PolicyError, Rule};
pub use token::{Header, ParseError, ParseLimits, Segment, UntrustedToken};
#[cfg(feature = "p256")]
pub use verify::P256Verifier;
pub use verify::{AsyncEs256Verifier, Es256Verifier, SignatureError, Validator, VerifiedToken, VerifyError};
