//! The issuer's list of access tokens revoked before their expiry (`GET /revoked`:
//! `{"revoked": [{"jti", "exp"}]}`), as the edge holds it: the `jti`s of the entries that have not
//! expired. A token is looked up by its `jti` on every request, the verified-token cache's hits
//! included.

use crate::document_cache::{CachedDocument, FetchedDocument};
use serde_json::{Value, json};
use std::collections::HashSet;

/// The most entries a list may hold. The issuer lists only unexpired tokens: 100,000 is a
/// revocation every 3 ms for the 5 minutes of a default access token's life.
pub const MAX_REVOCATIONS: usize = 100_000;

/// The longest `jti` the list may name (the issuer's are 22 characters).
const MAX_JTI_LENGTH: usize = 256;

/// The revoked, unexpired tokens' `jti`s.
#[derive(Debug, Default)]
pub struct RevocationList {
    jtis: HashSet<Box<str>>,
}

impl RevocationList {
    /// True when the token `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.jtis.contains(jti)
    }

    /// How many revoked tokens are listed.
    pub fn len(&self) -> usize {
        self.jtis.len()
    }

    /// True when no token is listed.
    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }
}

impl CachedDocument for RevocationList {
    /// Every list that parses replaces the last one (an empty list is a list).
    fn refusal(&self, _serving: Option<&Self>) -> Option<String> {
        None
    }

    fn summary(&self) -> Value {
        json!({ "entries": self.len() })
    }
}

impl FetchedDocument for RevocationList {
    const NAME: &'static str = "revocations";
    const ACCEPT: &'static str = "application/json";
    /// 100,000 entries of the issuer's form (`{"jti":"<22>","exp":<10>},`: 44 bytes) and room.
    const MAX_BYTES: usize = 8 * 1024 * 1024;

    /// Keeps the entries that expire after `now_secs`. Refused whole, so that the last good list
    /// stays, when it is not of that form, lists more than [`MAX_REVOCATIONS`] entries, or names an
    /// empty or overlong `jti`.
    fn parse(body: &[u8], now_secs: u64) -> Result<Self, String> {
        if body.len() > Self::MAX_BYTES {
            return Err(format!("the revocation list is larger than {} bytes", Self::MAX_BYTES));
        }
        // Read with the core's strict parser (no duplicate members), walked by hand: a derived
        // deserializer would cost the Worker kilobytes.
        let not_a_list = || "the revocation list was refused: not a list of jti and exp".to_owned();
        let document = jwks::json::parse(body).map_err(|error| format!("the revocation list was refused: {error}"))?;
        let entries = document.get("revoked").and_then(Value::as_array).ok_or_else(not_a_list)?;
        if entries.len() > MAX_REVOCATIONS {
            return Err(format!("the revocation list has more than {MAX_REVOCATIONS} entries"));
        }
        let mut jtis = HashSet::with_capacity(entries.len());
        for entry in entries {
            let (Some(jti), Some(exp)) =
                (entry.get("jti").and_then(Value::as_str), entry.get("exp").and_then(Value::as_u64))
            else {
                return Err(not_a_list());
            };
            if jti.is_empty() || jti.len() > MAX_JTI_LENGTH {
                return Err(format!("the revocation list names a jti of {} bytes (1 to {MAX_JTI_LENGTH})", jti.len()));
            }
            if exp > now_secs {
                jtis.insert(Box::from(jti));
            }
        }
        Ok(Self { jtis })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn parse(body: &str) -> Result<RevocationList, String> {
        RevocationList::parse(body.as_bytes(), NOW)
    }

    #[test]
    fn unexpired_entries_are_kept_and_looked_up_by_jti() {
        let list = parse(r#"{"revoked":[{"jti":"a","exp":1800000060},{"jti":"old","exp":1800000000},{"jti":"b","exp":1800000001,"extra":1}]}"#)
            .expect("a list");
        assert_eq!(list.len(), 2);
        assert!(list.contains("a") && list.contains("b"));
        assert!(!list.contains("old"), "expired at the time of parsing: no token can still carry it");
        assert!(!list.contains("c"));
        assert_eq!(list.summary(), json!({"entries": 2}));
        assert!(parse(r#"{"revoked":[]}"#).expect("empty").is_empty());
        assert_eq!(list.refusal(None), None);
    }

    #[test]
    fn a_broken_list_is_refused_whole() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"revoked":{}}"#,
            r#"{"revoked":[{"jti":"a"}]}"#,
            r#"{"revoked":[{"jti":"a","exp":-1}]}"#,
            r#"{"revoked":[{"jti":7,"exp":1}]}"#,
            r#"{"revoked":[{"jti":"","exp":1900000000}]}"#,
            r#"{"revoked":[{"jti":"a","exp":1900000000}"#,
            r#"{"revoked":[{"jti":"a","jti":"b","exp":1900000000}]}"#,
        ] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        let long = format!(r#"{{"revoked":[{{"jti":"{}","exp":1900000000}}]}}"#, "j".repeat(257));
        assert!(parse(&long).expect_err("refused").contains("257 bytes"));
    }

    #[test]
    fn size_and_length_are_bounded() {
        let entries = vec![r#"{"jti":"j","exp":1}"#; MAX_REVOCATIONS + 1].join(",");
        let error = parse(&format!(r#"{{"revoked":[{entries}]}}"#)).expect_err("too many");
        assert!(error.contains("100000 entries"), "{error}");
        let padded = format!(r#"{{"revoked":[]{}}}"#, " ".repeat(RevocationList::MAX_BYTES));
        assert!(parse(&padded).expect_err("too large").contains("larger than"));
    }
}
