//! A verifier's key set: the keys of a JWKS that passed the import rules, looked up by `kid` only.

use crate::json::{self, StrictJsonError};
use crate::key::{Jwk, KeyError, PublicKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Bounds on a key set, so that a hostile or broken JWKS endpoint cannot exhaust a verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySetLimits {
    /// The largest JWKS document accepted, in bytes. Default 64 KiB.
    pub max_bytes: usize,
    /// The most keys (usable or not) a set may list. Default 32.
    pub max_keys: usize,
}

impl Default for KeySetLimits {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024, max_keys: 32 }
    }
}

/// Why a whole JWKS document was refused (a single bad key is skipped instead, see
/// [`KeySet::skipped`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// Larger than [`KeySetLimits::max_bytes`].
    #[error("the key set is larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// Not JSON.
    #[error("the key set is not valid JSON")]
    NotJson,
    /// An object in the document has two members with the same name.
    #[error("the key set has a duplicate JSON member")]
    DuplicateMember,
    /// Not an object with a `keys` array.
    #[error("the key set has no \"keys\" array")]
    NoKeysArray,
    /// More keys than [`KeySetLimits::max_keys`].
    #[error("the key set lists more than {limit} keys")]
    TooManyKeys {
        /// The limit in force.
        limit: usize,
    },
}

/// A key that a set listed but that cannot be used, with the reason (for the caller to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the `keys` array.
    pub index: usize,
    /// The key's `kid`, if it had a string one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a listed key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    /// The key broke an import rule.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Another key in the set has the same `kid`; neither can be selected.
    #[error("another key has the same kid")]
    DuplicateKid,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "key #{}", self.index)?;
        if let Some(kid) = &self.kid {
            write!(formatter, " (kid {kid:?})")?;
        }
        write!(formatter, " skipped: {}", self.reason)
    }
}

/// The usable keys of a JWKS, by `kid`. There is no "default key": a token is checked only
/// against the key its `kid` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
    skipped: Vec<SkippedKey>,
}

impl KeySet {
    /// Parses a JWKS document with the default [`KeySetLimits`].
    pub fn parse(json: &[u8]) -> Result<Self, KeySetError> {
        Self::parse_with_limits(json, &KeySetLimits::default())
    }

    /// Parses a JWKS document. The document as a whole must be within the limits and strict JSON;
    /// each key that is not a usable P-256 signing key is skipped with its reason, and a `kid`
    /// that two keys share selects neither.
    pub fn parse_with_limits(json: &[u8], limits: &KeySetLimits) -> Result<Self, KeySetError> {
        if json.len() > limits.max_bytes {
            return Err(KeySetError::TooLarge { limit: limits.max_bytes });
        }
        let document = json::parse(json).map_err(|error| match error {
            StrictJsonError::Syntax => KeySetError::NotJson,
            StrictJsonError::DuplicateMember => KeySetError::DuplicateMember,
        })?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err(KeySetError::NoKeysArray);
        };
        if entries.len() > limits.max_keys {
            return Err(KeySetError::TooManyKeys { limit: limits.max_keys });
        }

        let mut candidates: Vec<(usize, Option<String>, Result<PublicKey, KeyError>)> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key = Jwk::deserialize_value(entry).and_then(|jwk| {
                let key = PublicKey::from_jwk(&jwk)?;
                if jwk.kid.is_none() { Err(KeyError::MissingKid) } else { Ok(key) }
            });
            candidates.push((index, kid, key));
        }
        Ok(Self::from_candidates(candidates))
    }

    /// A key set of the given keys, each under its thumbprint as `kid`.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let candidates = keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| (index, Some(key.thumbprint().to_owned()), Ok(key)))
            .collect();
        Self::from_candidates(candidates)
    }

    fn from_candidates(candidates: Vec<(usize, Option<String>, Result<PublicKey, KeyError>)>) -> Self {
        let mut set = Self::default();
        let mut kid_count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, kid, _) in &candidates {
            if let Some(kid) = kid {
                *kid_count.entry(kid.as_str()).or_default() += 1;
            }
        }
        let duplicated: Vec<String> =
            kid_count.into_iter().filter(|(_, count)| *count > 1).map(|(kid, _)| kid.to_owned()).collect();
        for (index, kid, key) in candidates {
            match (kid, key) {
                (Some(kid), _) if duplicated.contains(&kid) => {
                    set.skipped.push(SkippedKey { index, kid: Some(kid), reason: SkipReason::DuplicateKid });
                }
                (Some(kid), Ok(key)) => {
                    set.keys.insert(kid, key);
                }
                (kid, Err(reason)) => set.skipped.push(SkippedKey { index, kid, reason: reason.into() }),
                (None, Ok(_)) => set.skipped.push(SkippedKey { index, kid: None, reason: KeyError::MissingKid.into() }),
            }
        }
        set
    }

    /// The key a `kid` selects: `None` when no usable key, or more than one key, has that `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// The `kid`s that select a key.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The usable keys with their `kid`s.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(kid, key)| (kid.as_str(), key))
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that were listed but cannot be used, with the reasons.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }
}

impl Jwk {
    fn deserialize_value(value: &Value) -> Result<Self, KeyError> {
        Self::deserialize(value).map_err(|_| KeyError::Malformed)
    }
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn ec_key(kid: &str, extra: &str) -> String {
        format!(r#"{{"kty":"EC","crv":"P-256","x":"{X}","y":"{Y}","kid":"{kid}"{extra}}}"#)
    }

    #[test]
    fn keeps_good_keys_and_skips_others_with_reasons() {
        let doc = format!(
            r#"{{"keys":[{},{},{},{{"kty":"oct","k":"AAAA","kid":"h"}},{}]}}"#,
            ec_key("a", ""),
            ec_key("b", r#","use":"enc""#),
            ec_key("c", r#","crv":"P-384""#).replace(r#""crv":"P-256","#, ""),
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#
        );
        let set = KeySet::parse(doc.as_bytes()).expect("parses");
        assert_eq!(set.kids().collect::<Vec<_>>(), ["a"]);
        let reasons: Vec<_> = set.skipped().iter().map(|s| (s.index, s.reason.clone())).collect();
        assert_eq!(
            reasons,
            [
                (1, KeyError::NotForSignatures("enc".into()).into()),
                (2, KeyError::UnsupportedCurve(Some("P-384".into())).into()),
                (3, KeyError::UnsupportedKeyType("oct".into()).into()),
                (4, KeyError::MissingKid.into()),
            ]
        );
        assert_eq!(set.skipped()[0].to_string(), r#"key #1 (kid "b") skipped: use "enc" is not sig"#);
    }

    #[test]
    fn a_shared_kid_selects_nothing() {
        let doc = format!(r#"{{"keys":[{},{},{}]}}"#, ec_key("same", ""), ec_key("same", ""), ec_key("other", ""));
        let set = KeySet::parse(doc.as_bytes()).expect("parses");
        assert!(set.get("same").is_none());
        assert!(set.get("other").is_some());
        assert_eq!(set.skipped().len(), 2);
    }

    #[test]
    fn a_bad_key_with_a_shared_kid_still_blocks_the_good_one() {
        let doc = format!(r#"{{"keys":[{},{}]}}"#, ec_key("k", ""), ec_key("k", r#","use":"enc""#));
        let set = KeySet::parse(doc.as_bytes()).expect("parses");
        assert!(set.get("k").is_none());
    }

    #[test]
    fn refuses_whole_documents_that_break_the_limits() {
        let limits = KeySetLimits { max_bytes: 100, max_keys: 1 };
        let big = format!(r#"{{"keys":[{}]}}"#, ec_key("a", ""));
        assert_eq!(KeySet::parse_with_limits(big.as_bytes(), &limits), Err(KeySetError::TooLarge { limit: 100 }));
        let limits = KeySetLimits { max_keys: 1, ..KeySetLimits::default() };
        let two = format!(r#"{{"keys":[{},{}]}}"#, ec_key("a", ""), ec_key("b", ""));
        assert_eq!(KeySet::parse_with_limits(two.as_bytes(), &limits), Err(KeySetError::TooManyKeys { limit: 1 }));
        assert_eq!(KeySet::parse(b"{"), Err(KeySetError::NotJson));
        assert_eq!(KeySet::parse(b"[]"), Err(KeySetError::NoKeysArray));
        assert_eq!(KeySet::parse(br#"{"keys":{}}"#), Err(KeySetError::NoKeysArray));
        assert_eq!(KeySet::parse(br#"{"keys":[],"keys":[]}"#), Err(KeySetError::DuplicateMember));
    }

    #[test]
    fn a_key_of_the_wrong_shape_is_skipped_not_fatal() {
        let doc = format!(r#"{{"keys":[{{"kty":5}},{}]}}"#, ec_key("a", ""));
        let set = KeySet::parse(doc.as_bytes()).expect("parses");
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped()[0].reason, KeyError::Malformed.into());
    }
}
