//! A private signing key: generated, sealed under the KEK for storage, opened again, and used to
//! sign a JWS. The only place that touches private key material.

use super::KeyStoreError;
use crate::domain::kek::Kek;
use jwks::PublicKey;
use jwt_simple::algorithms::{ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ES256KeyPair};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::HeaderOptions;
use serde::Serialize;
use std::fmt;
use zeroize::Zeroizing;

/// A private signing key with its `kid`. Its `Debug` output shows the `kid` only.
pub struct SigningKey {
    kid: String,
    public_key: PublicKey,
    pair: ES256KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random P-256 key.
    pub fn generate() -> Result<Self, KeyStoreError> {
        Self::from_pair(ES256KeyPair::generate())
    }

    fn from_pair(pair: ES256KeyPair) -> Result<Self, KeyStoreError> {
        let sec1 = pair.public_key().public_key().to_bytes_uncompressed();
        let public_key =
            PublicKey::from_sec1(&sec1).map_err(|error| KeyStoreError::Crypto(format!("public key: {error}")))?;
        let kid = public_key.thumbprint().to_owned();
        Ok(Self { pair: pair.with_key_id(&kid), kid, public_key })
    }

    /// Opens a key sealed by [`seal`](Self::seal), checking that it is the key `kid` names.
    pub(crate) fn unseal(kid: &str, sealed: &str, kek: &Kek) -> Result<Self, KeyStoreError> {
        let secret = kek.open(kid, sealed)?;
        let pair = ES256KeyPair::from_bytes(&secret)
            .map_err(|_| KeyStoreError::Crypto(format!("the private key of {kid} is not a P-256 scalar")))?;
        let key = Self::from_pair(pair)?;
        if key.kid != kid {
            return Err(KeyStoreError::Crypto(format!("the private key stored for {kid} belongs to another key")));
        }
        Ok(key)
    }

    /// The private key sealed under `kek`, bound to its `kid`, for storage.
    pub(crate) fn seal(&self, kek: &Kek) -> String {
        let secret = Zeroizing::new(self.pair.to_bytes());
        kek.seal(&self.kid, &secret)
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Signs `claims` as an ES256 JWS with header `typ` and this key's `kid`.
    pub fn sign<C: Serialize>(&self, claims: JWTClaims<C>, typ: &str) -> Result<String, KeyStoreError> {
        let options = HeaderOptions { signature_type: Some(typ.to_owned()), ..HeaderOptions::default() };
        self.pair.sign_with_options(claims, &options).map_err(|error| KeyStoreError::Crypto(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_kid() {
        let key = SigningKey::generate().expect("key");
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("SigningKey {{ kid: {:?}, .. }}", key.kid()));
    }

    #[test]
    fn a_sealed_key_opens_as_the_same_key_and_only_under_its_kid() {
        let kek = Kek::generate();
        let key = SigningKey::generate().expect("key");
        let sealed = key.seal(&kek);
        let back = SigningKey::unseal(key.kid(), &sealed, &kek).expect("same key");
        assert_eq!(back.public_key(), key.public_key());
        let other = SigningKey::generate().expect("key");
        assert!(SigningKey::unseal(other.kid(), &sealed, &kek).is_err(), "a kid that is not its own");
        assert!(SigningKey::unseal(key.kid(), &sealed, &Kek::generate()).is_err(), "another KEK");
    }
}
