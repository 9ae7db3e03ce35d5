//! Signature verification: the header rules, key selection by `kid`, and the seam through which a
//! backend (p256 natively, WebCrypto at the edge) checks the ECDSA signature itself.

use crate::cache::TokenCache;
use crate::claims::{Claims, ClaimsError, ClaimsOptions};
use crate::key::PublicKey;
use crate::keyset::KeySet;
use crate::token::{Header, ParseError, ParseLimits, UntrustedToken};
use std::cell::RefCell;
use std::future::Future;

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
/// and [`UntrustedToken::verify_async`] make one.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    header: Header,
    kid: String,
    payload: Vec<u8>,
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

    /// The signed payload, as bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Checks the claims and the token type against `options` at `now` (Unix seconds).
    pub fn claims(&self, options: &ClaimsOptions, now: u64) -> Result<Claims, ClaimsError> {
        Claims::check(self.header.typ.as_deref(), &self.payload, options, now)
    }
}

impl UntrustedToken<'_> {
    /// Applies the header rules, selects the key by `kid`, and has `backend` check the signature.
    pub fn verify<B: Es256Verifier>(&self, keys: &KeySet, backend: &B) -> Result<VerifiedToken, SignatureError> {
        let (kid, key, signature) = self.select_key(keys)?;
        let valid = backend.verify_es256(key, self.signing_input.as_bytes(), signature);
        self.verified(kid, valid)
    }

    /// [`verify`](Self::verify) with an asynchronous backend.
    pub async fn verify_async<B: AsyncEs256Verifier>(
        &self,
        keys: &KeySet,
        backend: &B,
    ) -> Result<VerifiedToken, SignatureError> {
        let (kid, key, signature) = self.select_key(keys)?;
        let valid = backend.verify_es256(key, self.signing_input.as_bytes(), signature).await;
        self.verified(kid, valid)
    }

    /// Applies the header rules and checks the signature under `key`, whatever `kid` the token
    /// names (or none). For a caller that trusts exactly one key, such as a test vector or an
    /// issuer reading back its own token; a verifier holding a key set uses [`verify`](Self::verify).
    pub fn verify_with_key<B: Es256Verifier>(
        &self,
        key: &PublicKey,
        backend: &B,
    ) -> Result<VerifiedToken, SignatureError> {
        let signature = self.checked_signature()?;
        let valid = backend.verify_es256(key, self.signing_input.as_bytes(), signature);
        self.verified(key.thumbprint(), valid)
    }

    fn select_key<'k>(&self, keys: &'k KeySet) -> Result<(&str, &'k PublicKey, &[u8; 64]), SignatureError> {
        let signature = self.checked_signature()?;
        let kid = self.header.kid.as_deref().ok_or(SignatureError::MissingKid)?;
        let key = keys.get(kid).ok_or(SignatureError::UnknownKid)?;
        Ok((kid, key, signature))
    }

    /// The header rules, then the signature's length.
    fn checked_signature(&self) -> Result<&[u8; 64], SignatureError> {
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

    fn verified(&self, kid: &str, valid: bool) -> Result<VerifiedToken, SignatureError> {
        if !valid {
            return Err(SignatureError::Invalid);
        }
        Ok(VerifiedToken { header: self.header.clone(), kid: kid.to_owned(), payload: self.payload.clone() })
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
        let token = UntrustedToken::parse_with_limits(token, &self.parse_limits)?;
        Ok(token.verify(keys, backend)?.claims(&self.claims, now)?)
    }

    /// [`validate`](Self::validate) with an asynchronous backend.
    pub async fn validate_async<B: AsyncEs256Verifier>(
        &self,
        token: &str,
        keys: &KeySet,
        backend: &B,
        now: u64,
    ) -> Result<Claims, VerifyError> {
        let token = UntrustedToken::parse_with_limits(token, &self.parse_limits)?;
        Ok(token.verify_async(keys, backend).await?.claims(&self.claims, now)?)
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
        if let Some(claims) = cache.borrow_mut().get(token, keys, &self.claims, now) {
            return Ok(claims);
        }
        let parsed = UntrustedToken::parse_with_limits(token, &self.parse_limits)?;
        let verified = parsed.verify_async(keys, backend).await?;
        let claims = verified.claims(&self.claims, now)?;
        cache.borrow_mut().insert(token, verified.kid(), keys, &self.claims, &claims);
        Ok(claims)
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
