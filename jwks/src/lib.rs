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
//! [`UntrustedToken::verify`] against a [`KeySet`] ([`SignatureError`]), which alone (outside
//! [`danger`]) makes a [`VerifiedToken`], whose [`VerifiedToken::claims`] are checked against [`ClaimsOptions`]
//! ([`ClaimsError`]). A [`Policy`] ([`PolicyError`]) maps a request to the [`Access`] it needs.
//! [`Validator`] runs the three phases in one call, synchronously or with an asynchronous backend,
//! and optionally with a [`TokenCache`].
//!
//! Nothing at the crate root skips a check: an [`UntrustedToken`] shows its header only, and a
//! [`VerifiedToken`] gives its payload only as checked claims. The two escape hatches, checking a
//! signature under one given key without selecting it by `kid`, and reading a verified token's
//! payload before its claims are checked, live in [`danger`], which says why each is dangerous
//! and who may use it.
//!
//! Features: `p256` (default) for [`P256Verifier`], `toml` (default) for TOML policies. Keys convert to
//! and from p256's types (with `p256`); a key from any other library comes in through its
//! uncompressed SEC1 bytes ([`PublicKey::from_sec1`]) or its JWK ([`PublicKey::from_jwk`]).

pub mod assertion;
mod b64;
mod cache;
mod claims;
mod curve;
pub mod danger;
pub mod json;
mod key;
mod keyset;
mod policy;
mod token;
mod verify;

pub use cache::{DEFAULT_TOKEN_CACHE_ENTRIES, TokenCache};
pub use claims::{Claims, ClaimsError, ClaimsOptions, SERVICE_GRANT, SubjectKind};
pub use key::{Jwk, JwkSet, KeyError, PublicKey};
pub use keyset::{KeySet, KeySetError, KeySetLimits, SkipReason, SkippedKey};
pub use policy::{Access, Policy, PolicyError, Rule};
pub use token::{Header, ParseError, ParseLimits, Segment, UntrustedToken};
#[cfg(feature = "p256")]
pub use verify::P256Verifier;
pub use verify::{AsyncEs256Verifier, Es256Verifier, SignatureError, Validator, VerifiedToken, VerifyError};
