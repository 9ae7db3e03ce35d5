//! P-256 verification keys, their JWK form (RFC 7517 / 7518) and their RFC 7638 thumbprint.

use crate::{b64, curve};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A JSON Web Key as it appears in a key set. Only the members Portcullis reads are kept; all of
/// them are optional here so that a key of another kind can be named in an error, not just refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; `EC` for the keys Portcullis uses.
    pub kty: String,
    /// Curve; `P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// X coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// A private part. Its presence alone makes the key unusable here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use: `sig` or `enc`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Permitted operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Algorithm the key is meant for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

/// A JWK set, `{"keys": [...]}`, as an issuer publishes it. Verifiers parse with
/// [`KeySet::parse`](crate::KeySet::parse) instead, which applies the import rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// Why a key cannot be used to verify ES256 signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not valid JSON for a JWK (a member of the wrong type, `kty` missing).
    #[error("not a well-formed JWK")]
    Malformed,
    /// `kty` is not `EC`.
    #[error("key type {0:?} is not EC")]
    UnsupportedKeyType(String),
    /// `crv` is missing or not `P-256`.
    #[error("curve {0:?} is not P-256")]
    UnsupportedCurve(Option<String>),
    /// The key carries a private part (`d`); a published key set must never hold one.
    #[error("the key has a private part")]
    PrivateKey,
    /// `use` is not `sig`.
    #[error("use {0:?} is not sig")]
    NotForSignatures(String),
    /// `key_ops` does not allow `verify`.
    #[error("key_ops does not include verify")]
    NotForVerification,
    /// `alg` is present and not `ES256`.
    #[error("alg {0:?} is not ES256")]
    WrongAlgorithm(String),
    /// A coordinate is missing, not strict base64url, or not exactly 32 bytes.
    #[error("coordinate {0} is missing or not 32 bytes of base64url")]
    BadCoordinate(&'static str),
    /// A SEC1 encoding that is not 65 bytes starting with 0x04.
    #[error("not an uncompressed SEC1 point")]
    BadEncoding,
    /// The coordinates are not a point of P-256.
    #[error("the point is not on the P-256 curve")]
    NotOnCurve,
    /// The key has no `kid`, so no token can ever select it.
    #[error("the key has no kid")]
    MissingKid,
}

/// A P-256 public key that passed every import rule: coordinates of 32 bytes each that form a
/// point on the curve. It carries its RFC 7638 thumbprint, the `kid` Portcullis uses.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    x: [u8; 32],
    y: [u8; 32],
    thumbprint: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("PublicKey").field("thumbprint", &self.thumbprint).finish()
    }
}

impl PublicKey {
    /// Builds a key from big-endian affine coordinates, checking that they are on the curve.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        let x: [u8; 32] = x.try_into().map_err(|_| KeyError::BadCoordinate("x"))?;
        let y: [u8; 32] = y.try_into().map_err(|_| KeyError::BadCoordinate("y"))?;
        if !curve::is_on_curve(&x, &y) {
            return Err(KeyError::NotOnCurve);
        }
        let thumbprint = thumbprint(&x, &y);
        Ok(Self { x, y, thumbprint })
    }

    /// Builds a key from its uncompressed SEC1 encoding (`0x04 || x || y`, 65 bytes).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        match bytes {
            [0x04, rest @ ..] if rest.len() == 64 => Self::from_coordinates(&rest[..32], &rest[32..]),
            _ => Err(KeyError::BadEncoding),
        }
    }

    /// Imports a JWK under the rules for an ES256 verification key: `kty` EC, `crv` P-256, no
    /// private part, `use` (if present) `sig`, `key_ops` (if present) including `verify`, `alg`
    /// (if present) `ES256`, and coordinates that form a point on the curve. The `kid` is not
    /// checked here: a key set decides what a `kid` selects.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.kty != "EC" {
            return Err(KeyError::UnsupportedKeyType(jwk.kty.clone()));
        }
        if jwk.crv.as_deref() != Some("P-256") {
            return Err(KeyError::UnsupportedCurve(jwk.crv.clone()));
        }
        if jwk.d.is_some() {
            return Err(KeyError::PrivateKey);
        }
        if let Some(key_use) = jwk.key_use.as_ref().filter(|key_use| *key_use != "sig") {
            return Err(KeyError::NotForSignatures(key_use.clone()));
        }
        if jwk.key_ops.as_ref().is_some_and(|key_ops| !key_ops.iter().any(|op| op == "verify")) {
            return Err(KeyError::NotForVerification);
        }
        if let Some(alg) = jwk.alg.as_ref().filter(|alg| *alg != "ES256") {
            return Err(KeyError::WrongAlgorithm(alg.clone()));
        }
        let x = coordinate(jwk.x.as_deref(), "x")?;
        let y = coordinate(jwk.y.as_deref(), "y")?;
        Self::from_coordinates(&x, &y)
    }

    /// The uncompressed SEC1 encoding, `0x04 || x || y`, as WebCrypto's `raw` import takes it.
    pub fn to_sec1(&self) -> [u8; 65] {
        let mut encoded = [0u8; 65];
        encoded[0] = 0x04;
        encoded[1..33].copy_from_slice(&self.x);
        encoded[33..].copy_from_slice(&self.y);
        encoded
    }

    /// The big-endian x coordinate.
    pub fn x(&self) -> &[u8; 32] {
        &self.x
    }

    /// The big-endian y coordinate.
    pub fn y(&self) -> &[u8; 32] {
        &self.y
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the `kid` Portcullis gives this key.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The JWK an issuer publishes for this key: `kid` is the thumbprint, `use` sig, `alg` ES256.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "EC".to_owned(),
            crv: Some("P-256".to_owned()),
            x: Some(b64::encode(&self.x)),
            y: Some(b64::encode(&self.y)),
            d: None,
            kid: Some(self.thumbprint.clone()),
            key_use: Some("sig".to_owned()),
            key_ops: None,
            alg: Some("ES256".to_owned()),
        }
    }
}

fn coordinate(value: Option<&str>, name: &'static str) -> Result<[u8; 32], KeyError> {
    value.and_then(b64::decode_array::<32>).ok_or(KeyError::BadCoordinate(name))
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, without white space.
fn thumbprint(x: &[u8; 32], y: &[u8; 32]) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64::encode(x), b64::encode(y));
    b64::encode(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(feature = "p256")]
mod p256_conversions {
    use super::{KeyError, PublicKey};
    use p256::elliptic_curve::sec1::ToSec1Point as _;

    impl PublicKey {
        /// The same key as a p256 public key.
        pub fn to_p256(&self) -> p256::PublicKey {
            // A `PublicKey` is on the curve by construction, so p256 accepts it.
            p256::PublicKey::from_sec1_bytes(&self.to_sec1())
                .unwrap_or_else(|_| unreachable!("checked on the curve at construction"))
        }
    }

    impl From<&p256::PublicKey> for PublicKey {
        fn from(key: &p256::PublicKey) -> Self {
            let point = key.to_sec1_point(false);
            // p256 keys are valid points that are not the identity, so this cannot fail.
            PublicKey::from_sec1(point.as_bytes())
                .unwrap_or_else(|_| unreachable!("a p256 public key is a curve point"))
        }
    }

    impl From<&p256::ecdsa::VerifyingKey> for PublicKey {
        fn from(key: &p256::ecdsa::VerifyingKey) -> Self {
            Self::from(&p256::PublicKey::from(key))
        }
    }

    impl TryFrom<&PublicKey> for p256::ecdsa::VerifyingKey {
        type Error = KeyError;

        fn try_from(key: &PublicKey) -> Result<Self, KeyError> {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.to_sec1()).map_err(|_| KeyError::NotOnCurve)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// RFC 7515 Appendix A.3's key; RFC 7638 is computed over the same members.
    pub(crate) fn rfc7515_jwk() -> Jwk {
        serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        )
        .expect("JWK")
    }

    #[test]
    fn rfc7515_key_has_the_expected_thumbprint() {
        let key = PublicKey::from_jwk(&rfc7515_jwk()).expect("valid key");
        assert_eq!(key.thumbprint(), "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
    }

    #[test]
    fn round_trips_through_jwk_and_sec1() {
        let key = PublicKey::from_jwk(&rfc7515_jwk()).expect("valid key");
        let jwk = key.to_jwk();
        assert_eq!(jwk.kid.as_deref(), Some(key.thumbprint()));
        assert_eq!(PublicKey::from_jwk(&jwk).expect("own JWK"), key);
        assert_eq!(PublicKey::from_sec1(&key.to_sec1()).expect("own SEC1"), key);
    }

    #[test]
    fn import_rules() {
        let good = rfc7515_jwk();
        let check = |change: &dyn Fn(&mut Jwk), expected: KeyError| {
            let mut jwk = good.clone();
            change(&mut jwk);
            assert_eq!(PublicKey::from_jwk(&jwk), Err(expected));
        };
        check(&|k| k.kty = "RSA".into(), KeyError::UnsupportedKeyType("RSA".into()));
        check(&|k| k.crv = Some("P-384".into()), KeyError::UnsupportedCurve(Some("P-384".into())));
        check(&|k| k.crv = None, KeyError::UnsupportedCurve(None));
        check(&|k| k.d = Some("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI".into()), KeyError::PrivateKey);
        check(&|k| k.key_use = Some("enc".into()), KeyError::NotForSignatures("enc".into()));
        check(&|k| k.key_ops = Some(vec!["sign".into()]), KeyError::NotForVerification);
        check(&|k| k.alg = Some("ES384".into()), KeyError::WrongAlgorithm("ES384".into()));
        check(&|k| k.x = None, KeyError::BadCoordinate("x"));
        check(&|k| k.y = Some("AAAA".into()), KeyError::BadCoordinate("y"));
        check(&|k| k.x = Some(format!("{}=", good.x.clone().unwrap_or_default())), KeyError::BadCoordinate("x"));
        check(&|k| k.y = Some("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1".into()), KeyError::BadCoordinate("y"));
        check(&|k| k.y = Some("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a4".into()), KeyError::NotOnCurve);
        let mut allowed = good.clone();
        allowed.key_use = Some("sig".into());
        allowed.key_ops = Some(vec!["verify".into()]);
        allowed.alg = Some("ES256".into());
        assert!(PublicKey::from_jwk(&allowed).is_ok());
    }

    #[cfg(feature = "p256")]
    #[test]
    fn converts_to_and_from_p256() {
        let ours = PublicKey::from_jwk(&rfc7515_jwk()).expect("valid key");
        let theirs = ours.to_p256();
        assert_eq!(PublicKey::from(&theirs), ours);
        let verifying = p256::ecdsa::VerifyingKey::try_from(&ours).expect("converts");
        assert_eq!(PublicKey::from(&verifying), ours);
    }

    #[test]
    fn debug_output_names_only_the_thumbprint() {
        let key = PublicKey::from_jwk(&rfc7515_jwk()).expect("valid key");
        assert_eq!(format!("{key:?}"), r#"PublicKey { thumbprint: "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U" }"#);
    }
}
