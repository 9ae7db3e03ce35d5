//! Signature verification: the header rules, key selection by `kid`, and the seam through which a
//! backend (p256 natively, WebCrypto at the edge) checks the ECDSA signature itself.

use crate::cache::TokenCache;
use crate::claims::{Claims, ClaimsError, ClaimsOptions};
use crate::key::PublicKey;
use crate::keyset::KeySet;
use crate::token::{Header, ParseError, ParseLimits, UntrustedToken};
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Checks an ES256 signature: ECDSA over P-256 with SHA-256, `signature` as raw `r || s`.
///
/// This is the seam between the core and a crypto implementation. It answers only yes or no;
/// everything that decides *which* key and *whether* to check at all stays in the core.
pub trait Es256Verifier {
    /// True when `signature` is a valid ES256 signature of `message` under `key`.
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool;
}

/// The asynchronous form of [`Es256Verifier`], for backends such as WebCrypto whose
/// `crypto.subtle.verify` returns a promise. Every [`Es256Verifier`] is one too.
pub trait AsyncEs256Verifier {
    /// Resolves to true when `signature` is a valid ES256 signature of `message` under `key`.
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> impl Future<Output = bool>;
}

impl<T: Es256Verifier> AsyncEs256Verifier for T {
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> impl Future<Output = bool> {
        std::future::ready(Es256Verifier::verify_es256(self, key, message, signature))
    }
}

/// Why a well-formed token's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// `alg` is not exactly `ES256` (`none`, `HS256`, `es256`, ...).
    #[error("alg is not ES256")]
    AlgorithmNotEs256,
    /// The header embeds or points to a key (`jwk`, `jku`, `x5u`, `x5c`).
    #[error("the header carries a {0} member")]
    EmbeddedKey(&'static str),
    /// The header has a `crit` member; no extension is understood.
    #[error("the header has a crit member")]
    CriticalHeader,
    /// The header has no `kid`.
    #[error("the header has no kid")]
    MissingKid,
    /// No usable key has this `kid` (or more than one has).
    #[error("no usable key has the token's kid")]
    UnknownKid,
    /// The signature is not 64 bytes (raw `r || s`).
    #[error("the signature is not 64 bytes")]
    WrongLength,
    /// The signature does not verify under the selected key.
    #[error("the signature does not verify")]
    Invalid,
}

/// A token whose signature verified under a key from the set. Only [`UntrustedToken::verify`]
/// and [`UntrustedToken::verify_async`] make one (and, fenced off, [`danger::verify_with_key`]).
/// Its payload is reachable only as claims that passed [`claims`](Self::claims) (or, fenced off,
/// through [`danger::payload`]).
///
/// [`danger::verify_with_key`]: crate::danger::verify_with_key
/// [`danger::payload`]: crate::danger::payload
#[derive(Clone)]
pub struct VerifiedToken {
    header: Header,
    kid: String,
    pub(crate) payload: Vec<u8>,
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("VerifiedToken")
            .field("header", &self.header)
            .field("kid", &self.kid)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

impl VerifiedToken {
    /// The protected header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The `kid` of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Checks the claims and the token type against `options` at `now` (Unix seconds).
    pub fn claims(&self, options: &ClaimsOptions, now: u64) -> Result<Claims, ClaimsError> {
        Claims::check(self.header.typ.as_deref(), &self.payload, options, now)
    }
}

impl UntrustedToken<'_> {
    /// Applies the header rules, selects the key by `kid`, and has `backend` check the signature.
    pub fn verify<B: Es256Verifier>(&self, keys: &KeySet, backend: &B) -> Result<VerifiedToken, SignatureError> {
        resolved(self.verify_async(keys, backend))
    }

    /// [`verify`](Self::verify) with an asynchronous backend.
    pub async fn verify_async<B: AsyncEs256Verifier>(
        &self,
        keys: &KeySet,
        backend: &B,
    ) -> Result<VerifiedToken, SignatureError> {
        let signature = self.checked_signature()?;
        let kid = self.header.kid.as_deref().ok_or(SignatureError::MissingKid)?;
        let key = keys.get(kid).ok_or(SignatureError::UnknownKid)?;
        self.check_signature(kid, key, signature, backend).await
    }

    /// The header rules, then the signature's length.
    pub(crate) fn checked_signature(&self) -> Result<&[u8; 64], SignatureError> {
        let header = &self.header;
        if header.alg != "ES256" {
            return Err(SignatureError::AlgorithmNotEs256);
        }
        if let Some(member) = header.embedded_key {
            return Err(SignatureError::EmbeddedKey(member));
        }
        if header.has_crit {
            return Err(SignatureError::CriticalHeader);
        }
        self.signature.as_slice().try_into().map_err(|_| SignatureError::WrongLength)
    }

    /// Has `backend` check `signature` under `key`, the key selected as `kid`; the last step of
    /// every verification, after [`checked_signature`](Self::checked_signature).
    pub(crate) async fn check_signature<B: AsyncEs256Verifier>(
        &self,
        kid: &str,
        key: &PublicKey,
        signature: &[u8; 64],
        backend: &B,
    ) -> Result<VerifiedToken, SignatureError> {
        if !backend.verify_es256(key, self.signing_input.as_bytes(), signature).await {
            return Err(SignatureError::Invalid);
        }
        Ok(VerifiedToken { header: self.header.clone(), kid: kid.to_owned(), payload: self.payload.clone() })
    }
}

/// The output of a future that completes at its first poll, as every future built on an
/// [`Es256Verifier`] does: such a backend is an [`AsyncEs256Verifier`] only through the blanket
/// implementation, whose futures are [`std::future::ready`]. So the synchronous entry points run
/// the asynchronous ones, and each sequence of checks is written once.
pub(crate) fn resolved<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("a synchronous backend's future is ready at its first poll"),
    }
}

/// Why [`Validator`] refused a token: the phase, and within it the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Parse(#[from] ParseError),
    /// The header, the key selection or the signature failed.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signature is good but the claims are not acceptable.
    #[error("claims: {0}")]
    Claims(#[from] ClaimsError),
}

impl VerifyError {
    /// True when the token names a `kid` the key set does not have: the one refusal after which a
    /// verifier may refetch the key set (rate-limited), since the issuer may have published a key.
    pub fn is_unknown_kid(&self) -> bool {
        matches!(self, Self::Signature(SignatureError::UnknownKid))
    }
}

/// Parsing, signature and claims checks in one call, with one set of options.
#[derive(Debug, Clone)]
pub struct Validator {
    /// What the claims must satisfy.
    pub claims: ClaimsOptions,
    /// Bounds on the token before decoding.
    pub parse_limits: ParseLimits,
}

impl Validator {
    /// A validator with the default parse limits.
    pub fn new(claims: ClaimsOptions) -> Self {
        Self { claims, parse_limits: ParseLimits::default() }
    }

    /// Validates `token` against `keys` at `now` (Unix seconds), with a synchronous backend.
    pub fn validate<B: Es256Verifier>(
        &self,
        token: &str,
        keys: &KeySet,
        backend: &B,
        now: u64,
    ) -> Result<Claims, VerifyError> {
        resolved(self.validate_async(token, keys, backend, now))
    }

    /// [`validate`](Self::validate) with an asynchronous backend.
    pub async fn validate_async<B: AsyncEs256Verifier>(
        &self,
        token: &str,
        keys: &KeySet,
        backend: &B,
        now: u64,
    ) -> Result<Claims, VerifyError> {
        self.run(token, keys, backend, now, &NoCache).await
    }

    /// [`validate_async`](Self::validate_async) that first looks `token` up in `cache` (a token
    /// seen before skips the signature check, not the time checks: see [`TokenCache`]) and
    /// keeps it there once it passes. `cache` is borrowed around the look-up and the insertion
    /// only, never while the signature is checked, so that requests may share it.
    pub async fn validate_async_cached<B: AsyncEs256Verifier>(
        &self,
        token: &str,
        keys: &KeySet,
        backend: &B,
        now: u64,
        cache: &RefCell<TokenCache>,
    ) -> Result<Claims, VerifyError> {
        self.run(token, keys, backend, now, cache).await
    }

    /// Every validation: the cache look-up, parsing, the signature, the claims, and keeping the
    /// token in the cache.
    async fn run<B: AsyncEs256Verifier, C: Remembered>(
        &self,
        token: &str,
        keys: &KeySet,
        backend: &B,
        now: u64,
        cache: &C,
    ) -> Result<Claims, VerifyError> {
        if let Some(claims) = cache.recall(token, keys, &self.claims, now) {
            return Ok(claims);
        }
        let parsed = UntrustedToken::parse_with_limits(token, &self.parse_limits)?;
        let verified = parsed.verify_async(keys, backend).await?;
        let claims = verified.claims(&self.claims, now)?;
        cache.keep(token, verified.kid(), keys, &self.claims, &claims);
        Ok(claims)
    }
}

/// Where [`Validator::run`] looks tokens up and keeps them: a [`TokenCache`], or nowhere.
trait Remembered {
    fn recall(&self, token: &str, keys: &KeySet, options: &ClaimsOptions, now: u64) -> Option<Claims>;
    fn keep(&self, token: &str, kid: &str, keys: &KeySet, options: &ClaimsOptions, claims: &Claims);
}

/// No cache. A type of its own (not an `Option<&RefCell<_>>`), so that the futures of the
/// uncached entry points hold no `RefCell` and stay `Send` whenever the backend's are.
struct NoCache;

impl Remembered for NoCache {
    fn recall(&self, _: &str, _: &KeySet, _: &ClaimsOptions, _: u64) -> Option<Claims> {
        None
    }

    fn keep(&self, _: &str, _: &str, _: &KeySet, _: &ClaimsOptions, _: &Claims) {}
}

impl Remembered for RefCell<TokenCache> {
    fn recall(&self, token: &str, keys: &KeySet, options: &ClaimsOptions, now: u64) -> Option<Claims> {
        self.borrow_mut().get(token, keys, options, now)
    }

    fn keep(&self, token: &str, kid: &str, keys: &KeySet, options: &ClaimsOptions, claims: &Claims) {
        self.borrow_mut().insert(token, kid, keys, options, claims);
    }
}

/// The native backend: RustCrypto's p256. High-S signatures are accepted, as JWS requires.
#[cfg(feature = "p256")]
#[derive(Debug, Clone, Copy, Default)]
pub struct P256Verifier;

#[cfg(feature = "p256")]
impl Es256Verifier for P256Verifier {
    fn verify_es256(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        let Ok(verifying_key) = p256::ecdsa::VerifyingKey::try_from(key) else {
            return false;
        };
        let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        verifying_key.verify(message, &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A backend whose futures are `Send`, as a multi-threaded server needs.
    struct SendBackend;

    impl Es256Verifier for SendBackend {
        fn verify_es256(&self, _: &PublicKey, _: &[u8], _: &[u8; 64]) -> bool {
            false
        }
    }

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn uncached_futures_are_send_when_the_backend_is() {
        let keys = KeySet::from_keys([]);
        let validator = Validator::new(ClaimsOptions::new("https://issuer.test", ["api"]));
        let validation = validator.validate_async("a.b.c", &keys, &SendBackend, 0);
        is_send(&validation);
        assert!(resolved(validation).is_err());
        let token = UntrustedToken::parse("eyJhbGciOiJub25lIn0.e30.").expect("well formed");
        let verification = token.verify_async(&keys, &SendBackend);
        is_send(&verification);
        assert_eq!(resolved(verification).map(|_| ()), Err(SignatureError::AlgorithmNotEs256));
    }

    #[test]
    fn the_synchronous_and_asynchronous_paths_agree() {
        let keys = KeySet::from_keys([]);
        let validator = Validator::new(ClaimsOptions::new("https://issuer.test", ["api"]));
        let cache = RefCell::new(TokenCache::new(4));
        for token in ["a.b", "e30.e30.", "eyJhbGciOiJFUzI1NiJ9.e30.", "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.e30.AA"] {
            let sync = validator.validate(token, &keys, &SendBackend, 0);
            assert_eq!(resolved(validator.validate_async(token, &keys, &SendBackend, 0)), sync, "{token}");
            let cached = resolved(validator.validate_async_cached(token, &keys, &SendBackend, 0, &cache));
            assert_eq!(cached, sync, "{token}");
            assert!(sync.is_err());
        }
        assert!(cache.borrow().is_empty());
    }
}
