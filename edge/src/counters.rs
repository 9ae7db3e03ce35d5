//! What the edge decides, counted per isolate: requests allowed (by kind), refused (by
//! [`RefusalCode`], the code of their log line), fetches of the key set (by outcome) and look-ups
//! of verified tokens (hits and misses). The counters are plain integers in the isolate's state,
//! start at zero with the isolate, and are shown by the status page. Every label is one of a fixed
//! set written here or in [`RefusalCode`], never anything a request carries.

use crate::decision::RefusalCode;
use jwks::TokenCache;
use serde_json::{Map, Value, json};
use std::cell::Cell;

/// Why a request went on to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// A public route: no token read.
    Public,
    /// A CORS preflight: no token read.
    Preflight,
    /// A protected route, with a token that passed every check and the rule's roles.
    Token,
}

impl Allowed {
    /// Every kind, in the order of the discriminants (each indexes its counter).
    pub const ALL: [Self; 3] = [Self::Public, Self::Preflight, Self::Token];

    /// The kind as the status page writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Preflight => "preflight",
            Self::Token => "token",
        }
    }
}

/// How one fetch of the key set or the revocation list ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A document was fetched and installed.
    Ok,
    /// The issuer answered `304 Not Modified`: the document held serves a new lifetime.
    NotModified,
    /// The URL answered with a status other than 200 (or 304 to `If-None-Match`), a redirect
    /// included.
    BadStatus,
    /// A document came but was not taken: too large, not of its form, no usable key, or it would
    /// break a key in use.
    Refused,
    /// No answer (or not all of the body) within `JWKS_TIMEOUT_MS`.
    Timeout,
    /// The request failed otherwise: connection refused or lost, DNS, TLS.
    Unreachable,
}

impl FetchOutcome {
    /// Every outcome, in the order of the discriminants (each indexes its counter).
    pub const ALL: [Self; 6] =
        [Self::Ok, Self::NotModified, Self::BadStatus, Self::Refused, Self::Timeout, Self::Unreachable];

    /// The outcome of a fetch that failed with a JavaScript error named `name` (the fetch itself,
    /// or reading its body): a timeout when the `JWKS_TIMEOUT_MS` signal aborted it (workerd
    /// rejects with a `TimeoutError` `DOMException`, for the answer and for the body alike), else
    /// the issuer unreachable.
    pub fn of_error(name: Option<&str>) -> Self {
        if name == Some("TimeoutError") { Self::Timeout } else { Self::Unreachable }
    }

    /// The outcome as the status page and the key set's log lines write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotModified => "not_modified",
            Self::BadStatus => "bad_status",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
        }
    }
}

/// The verified-token cache's look-ups, as it counts them itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheLookups {
    /// Tokens answered from the cache (no signature check).
    pub hits: u64,
    /// Tokens the cache did not hold (or no longer counted).
    pub misses: u64,
}

impl From<&TokenCache> for CacheLookups {
    fn from(cache: &TokenCache) -> Self {
        Self { hits: cache.hits(), misses: cache.misses() }
    }
}

/// The counters of one isolate. Shared by the request handler and the key set's fetches (which
/// may finish after their request), so each is a [`Cell`]: counting needs no borrow and no
/// allocation.
#[derive(Debug, Default)]
pub struct Counters {
    allowed: [Cell<u64>; Allowed::ALL.len()],
    refused: [Cell<u64>; RefusalCode::ALL.len()],
    jwks_fetches: [Cell<u64>; FetchOutcome::ALL.len()],
    revocation_fetches: [Cell<u64>; FetchOutcome::ALL.len()],
}

/// Adds one.
fn bump(counter: &Cell<u64>) {
    counter.set(counter.get().saturating_add(1));
}

/// A JSON object of `labels` and their `counts`.
fn object<L: Copy>(labels: &[L], name: fn(L) -> &'static str, counts: &[Cell<u64>]) -> Value {
    // One insert at a time: collecting into a map would sort, and a sort costs the Worker kilobytes.
    let mut members = Map::new();
    for (label, count) in labels.iter().zip(counts) {
        members.insert(name(*label).to_owned(), Value::from(count.get()));
    }
    Value::Object(members)
}

impl Counters {
    /// Counts a request sent on to the origin.
    pub fn allowed(&self, kind: Allowed) {
        bump(&self.allowed[kind as usize]);
    }

    /// Counts a refused request (where its log line is written, with the same code).
    pub fn refused(&self, code: RefusalCode) {
        bump(&self.refused[code as usize]);
    }

    /// Counts a finished fetch of the key set.
    pub fn jwks_fetch(&self, outcome: FetchOutcome) {
        bump(&self.jwks_fetches[outcome as usize]);
    }

    /// Counts a finished fetch of the revocation list.
    pub fn revocation_fetch(&self, outcome: FetchOutcome) {
        bump(&self.revocation_fetches[outcome as usize]);
    }

    /// The status page's view: `{"allowed": {...}, "refused": {...}, "jwks_fetches": {...},
    /// "revocation_fetches": {...},
    /// "token_cache": {"hits", "misses"}}`, every label present, zeros included; the look-ups are
    /// the verified-token cache's own counts.
    pub fn status(&self, lookups: CacheLookups) -> Value {
        let mut document = Map::new();
        document.insert("allowed".to_owned(), object(&Allowed::ALL, Allowed::as_str, &self.allowed));
        document.insert("refused".to_owned(), object(&RefusalCode::ALL, RefusalCode::as_str, &self.refused));
        let fetches = object(&FetchOutcome::ALL, FetchOutcome::as_str, &self.jwks_fetches);
        document.insert("jwks_fetches".to_owned(), fetches);
        let fetches = object(&FetchOutcome::ALL, FetchOutcome::as_str, &self.revocation_fetches);
        document.insert("revocation_fetches".to_owned(), fetches);
        document.insert("token_cache".to_owned(), json!({"hits": lookups.hits, "misses": lookups.misses}));
        Value::Object(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_isolate_shows_every_counter_at_zero() {
        assert_eq!(
            Counters::default().status(CacheLookups::default()),
            json!({
                "allowed": {"public": 0, "preflight": 0, "token": 0},
                "refused": {
                    "no_token": 0, "invalid_token": 0, "insufficient_role": 0, "no_rule": 0, "keys_unavailable": 0,
                    "revoked": 0, "revocations_unavailable": 0, "wrong_subject_kind": 0, "session_ended": 0, "session_unavailable": 0, "cross_site_request": 0,
                },
                "jwks_fetches": {"ok": 0, "not_modified": 0, "bad_status": 0, "refused": 0, "timeout": 0, "unreachable": 0},
                "revocation_fetches": {"ok": 0, "not_modified": 0, "bad_status": 0, "refused": 0, "timeout": 0, "unreachable": 0},
                "token_cache": {"hits": 0, "misses": 0},
            })
        );
    }

    #[test]
    fn each_event_moves_its_own_counter_by_one() {
        let counters = Counters::default();
        counters.allowed(Allowed::Token);
        counters.allowed(Allowed::Token);
        counters.allowed(Allowed::Preflight);
        counters.refused(RefusalCode::InvalidToken);
        counters.refused(RefusalCode::KeysUnavailable);
        counters.refused(RefusalCode::InvalidToken);
        counters.jwks_fetch(FetchOutcome::Timeout);
        counters.jwks_fetch(FetchOutcome::Ok);
        counters.revocation_fetch(FetchOutcome::NotModified);
        counters.refused(RefusalCode::Revoked);
        assert_eq!(
            counters.status(CacheLookups::default()),
            json!({
                "allowed": {"public": 0, "preflight": 1, "token": 2},
                "refused": {
                    "no_token": 0, "invalid_token": 2, "insufficient_role": 0, "no_rule": 0, "keys_unavailable": 1,
                    "revoked": 1, "revocations_unavailable": 0, "wrong_subject_kind": 0, "session_ended": 0, "session_unavailable": 0, "cross_site_request": 0,
                },
                "jwks_fetches": {"ok": 1, "not_modified": 0, "bad_status": 0, "refused": 0, "timeout": 1, "unreachable": 0},
                "revocation_fetches": {"ok": 0, "not_modified": 1, "bad_status": 0, "refused": 0, "timeout": 0, "unreachable": 0},
                "token_cache": {"hits": 0, "misses": 0},
            })
        );
    }

    #[test]
    fn every_label_has_its_own_slot() {
        // The arrays are indexed by discriminant: ALL must list each label once, in that order.
        for (index, kind) in Allowed::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index, "{kind:?}");
        }
        for (index, outcome) in FetchOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index, "{outcome:?}");
        }
        for code in RefusalCode::ALL {
            let counters = Counters::default();
            counters.refused(code);
            let status = counters.status(CacheLookups::default());
            let moved: Vec<&String> = status["refused"]
                .as_object()
                .expect("an object")
                .iter()
                .filter(|(_, count)| **count != 0)
                .map(|(name, _)| name)
                .collect();
            assert_eq!(moved, [code.as_str()], "{code:?}");
        }
    }

    #[test]
    fn a_fetch_aborted_by_its_signal_is_a_timeout_any_other_error_unreachable() {
        assert_eq!(FetchOutcome::of_error(Some("TimeoutError")), FetchOutcome::Timeout);
        assert_eq!(FetchOutcome::of_error(Some("Error")), FetchOutcome::Unreachable, "connection lost");
        assert_eq!(FetchOutcome::of_error(Some("TypeError")), FetchOutcome::Unreachable);
        assert_eq!(FetchOutcome::of_error(None), FetchOutcome::Unreachable, "not an Error object");
    }

    #[test]
    fn counters_saturate_rather_than_wrap() {
        let counters = Counters::default();
        counters.allowed[Allowed::Token as usize].set(u64::MAX);
        counters.allowed(Allowed::Token);
        assert_eq!(counters.status(CacheLookups::default())["allowed"]["token"], u64::MAX);
    }
}
