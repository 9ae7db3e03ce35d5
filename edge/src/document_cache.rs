//! The cache rules of a document the Worker fetches from the issuer (the key set, the revocation
//! list), with the clock passed in: when a document is fresh, when it is refreshed ahead of its
//! expiry, how long past its lifetime it may still serve when it cannot be refreshed, and what the
//! status page says. The fetching itself is the Worker's (`runtime::documents`); nothing here does
//! I/O, so every rule is tested natively.

use jwks::KeySet;
use serde_json::{Value, json};
use std::rc::Rc;

/// Bounds on how a document is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    /// The shortest lifetime of a fetched document (lower bound on `max-age`).
    pub min_ttl_secs: u64,
    /// The longest (upper bound on `max-age`): nothing it drops serves longer than this after the
    /// issuer dropped it, plus the stale bound.
    pub max_ttl_secs: u64,
    /// The least time between two fetch attempts that a request may start, whatever triggers them
    /// (an unknown `kid`, a refresh, a failed fetch).
    pub refetch_cooldown_secs: u64,
    /// How long past its lifetime a document still serves when it cannot be refreshed (0: never).
    pub max_stale_secs: u64,
    /// How long a fetch may take, in milliseconds.
    pub fetch_timeout_ms: u32,
}

impl CacheBounds {
    /// The lifetime of a document served with `max_age` (from `Cache-Control`), within the
    /// bounds. Without one, the lower bound.
    pub fn ttl_secs(&self, max_age: Option<u64>) -> u64 {
        max_age.unwrap_or(self.min_ttl_secs).clamp(self.min_ttl_secs, self.max_ttl_secs)
    }
}

/// A document the Worker fetches and caches.
pub trait CachedDocument {
    /// Why this document, just fetched, may not replace `serving` (the one that still serves, if
    /// any): a broken document never replaces a good one. `None` when it may.
    fn refusal(&self, serving: Option<&Self>) -> Option<String>;
    /// What the status page shows of it.
    fn summary(&self) -> Value;
}

/// A [`CachedDocument`] as the Worker fetches it.
pub trait FetchedDocument: CachedDocument + Sized {
    /// Its name in log events (`keys_fetched`, ...) and on the status page.
    const NAME: &'static str;
    /// The `Accept` header of its fetch.
    const ACCEPT: &'static str;
    /// The largest body read.
    const MAX_BYTES: usize;
    /// Parses a fetched body at `now_secs`.
    fn parse(body: &[u8], now_secs: u64) -> Result<Self, String>;
}

impl FetchedDocument for KeySet {
    const NAME: &'static str = "keys";
    const ACCEPT: &'static str = "application/jwk-set+json, application/json";
    const MAX_BYTES: usize = 64 * 1024;

    /// Strictly, with [`jwks::KeySetLimits`]' defaults.
    fn parse(body: &[u8], _now_secs: u64) -> Result<Self, String> {
        KeySet::parse(body).map_err(|error| format!("the key set was refused: {error}"))
    }
}

impl CachedDocument for KeySet {
    /// Refused when it has no usable key, or when it lists a key under a `kid` the serving set
    /// uses but that key cannot be read (malformed, or its `kid` now ambiguous). A `kid` simply
    /// absent from the new set (a rotation, a revocation) is dropped with the old set.
    fn refusal(&self, serving: Option<&Self>) -> Option<String> {
        if self.is_empty() {
            return Some("the key set has no usable key".to_owned());
        }
        let serving = serving?;
        let lost: Vec<String> = self
            .skipped()
            .iter()
            .filter(|skipped| {
                skipped.kid.as_deref().is_some_and(|kid| serving.get(kid).is_some() && self.get(kid).is_none())
            })
            .map(ToString::to_string)
            .collect();
        (!lost.is_empty()).then(|| format!("the key set lists keys in use that cannot be read: {}", lost.join("; ")))
    }

    fn summary(&self) -> Value {
        json!({
            "kids": self.kids().collect::<Vec<_>>(),
            "skipped": self.skipped().iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }
}

/// The `max-age` of a `Cache-Control` header; `Some(0)` for `no-cache` or `no-store` (which the
/// bounds then raise to the minimum lifetime).
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').map_or((directive, None), |(name, value)| (name, Some(value)));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if name.eq_ignore_ascii_case("max-age") {
            let value = value?.trim().trim_matches('"');
            if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            // RFC 9111 §1.2.2: a delta-seconds too large to hold is as good as "forever".
            found = Some(value.parse::<u64>().unwrap_or(u64::MAX));
        }
    }
    found
}

/// Whether a response may be read at all, from its `Content-Length`: one that declares
/// more than `limit` bytes is refused before its body is read. Without a usable length the body
/// is read with the same cap (and the parser checks the size again).
pub fn check_declared_length(content_length: Option<&str>, limit: usize) -> Result<(), String> {
    let Some(length) = content_length
        .map(str::trim)
        .filter(|length| !length.is_empty() && length.bytes().all(|byte| byte.is_ascii_digit()))
    else {
        return Ok(());
    };
    // Too many digits for a u64 is too large as well.
    if length.parse::<u64>().map_or(true, |length| length > limit as u64) {
        return Err(format!("the response is larger than {limit} bytes (its Content-Length says so)"));
    }
    Ok(())
}

/// The Workers Cache API key under which the last good document from `url` is kept: the URL with a
/// marker parameter, so that it never answers a fetch of the URL itself.
pub fn cache_api_key(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}portcullis-edge-cache=1")
}

/// The header of a Cache API entry holding when the document was fetched (Unix milliseconds).
pub const FETCHED_AT_HEADER: &str = "x-portcullis-fetched-at";

/// The header of a Cache API entry holding the document's lifetime (seconds).
pub const TTL_HEADER: &str = "x-portcullis-ttl";

/// Where the document in memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fetched by this isolate.
    Network,
    /// Read back from the Workers Cache API at start (fetched earlier, perhaps by another isolate).
    CacheApi,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::CacheApi => "cache_api",
        }
    }
}

/// A usable document and when it was fetched.
#[derive(Debug)]
pub struct Cached<D> {
    /// The document.
    pub document: Rc<D>,
    /// When it was fetched (or confirmed unchanged by a `304`), in Unix milliseconds.
    pub fetched_at_ms: u64,
    /// Its lifetime, in seconds (already within the bounds).
    pub ttl_secs: u64,
    /// Where this isolate got it.
    pub source: Source,
    /// Its `ETag`, for the next fetch's `If-None-Match`.
    pub etag: Option<String>,
}

/// How the document in memory stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No document.
    Missing,
    /// In the first half of its lifetime.
    Fresh,
    /// In the second half of its lifetime: serves, and is refreshed in the background, so that an
    /// issuer unreachable for less than half the lifetime is never noticed.
    Due,
    /// Past its lifetime but within the stale bound: serves, and should be refreshed.
    Stale,
    /// Past the stale bound: no longer serves.
    Expired,
}

/// What a request should do about fetching before it uses the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing: the document is fresh, or a fetch was attempted too recently.
    No,
    /// Fetch in the background; the current document serves meanwhile.
    Background,
    /// Fetch and wait: there is no document that may serve, and no fetch under way.
    Wait,
    /// Wait for the fetch another request has under way (by watching this state: a request that
    /// awaits another request's promise is cancelled by the Workers runtime).
    Join,
}

/// How long past the fetch timeout a fetch still counts as under way: after that, one whose
/// request went away without finishing it no longer holds anyone up.
const IN_FLIGHT_SLACK_MS: u64 = 1000;

/// The cache state of one document in one isolate.
#[derive(Debug)]
pub struct DocumentCache<D> {
    bounds: CacheBounds,
    current: Option<Cached<D>>,
    last_attempt_ms: Option<u64>,
    last_failure: Option<(u64, String)>,
    fetches: u64,
    failures: u64,
    /// When the fetch under way started, if one is.
    fetch_in_flight_since: Option<u64>,
    /// Whether a read of the Cache API has completed, or a document been fetched, in this isolate.
    warmed: bool,
}

impl<D: CachedDocument> DocumentCache<D> {
    /// An empty cache.
    pub fn new(bounds: CacheBounds) -> Self {
        Self {
            bounds,
            current: None,
            last_attempt_ms: None,
            last_failure: None,
            fetches: 0,
            failures: 0,
            fetch_in_flight_since: None,
            warmed: false,
        }
    }

    /// The bounds in force.
    pub fn bounds(&self) -> CacheBounds {
        self.bounds
    }

    /// How the document stands at `now_ms`. A clock that went back leaves it as fresh as it was
    /// when fetched.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let Some(current) = &self.current else {
            return Freshness::Missing;
        };
        let age_ms = now_ms.saturating_sub(current.fetched_at_ms);
        let ttl_ms = current.ttl_secs.saturating_mul(1000);
        if age_ms < ttl_ms / 2 {
            Freshness::Fresh
        } else if age_ms < ttl_ms {
            Freshness::Due
        } else if age_ms < ttl_ms.saturating_add(self.bounds.max_stale_secs.saturating_mul(1000)) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// The document a request uses at `now_ms`: a fresh, due or stale one, never an expired one.
    pub fn usable(&self, now_ms: u64) -> Option<Rc<D>> {
        match self.freshness(now_ms) {
            Freshness::Fresh | Freshness::Due | Freshness::Stale => {
                self.current.as_ref().map(|current| Rc::clone(&current.document))
            }
            Freshness::Missing | Freshness::Expired => None,
        }
    }

    /// True when the cooldown since the last fetch attempt has passed.
    fn cooled_down(&self, now_ms: u64) -> bool {
        self.last_attempt_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.bounds.refetch_cooldown_secs.saturating_mul(1000))
    }

    /// True while this isolate has neither read the Cache API to the end nor fetched a document: a
    /// request then reads the Cache API itself before anything else, even when another request is
    /// reading it too (it cannot wait on that one's read, and must not go to the issuer while the
    /// Cache API may have a document). See [`DocumentCache::restore_done`].
    pub fn needs_restore(&self) -> bool {
        !self.warmed
    }

    /// Records that a read of the Cache API has completed (whatever it found).
    pub fn restore_done(&mut self) {
        self.warmed = true;
    }

    /// True when a fetch started at most the fetch timeout (and a little) before `now_ms` has not
    /// finished.
    pub fn fetch_in_flight(&self, now_ms: u64) -> bool {
        let bound = u64::from(self.bounds.fetch_timeout_ms) + IN_FLIGHT_SLACK_MS;
        self.fetch_in_flight_since.is_some_and(|since| now_ms.saturating_sub(since) < bound)
    }

    /// What a request at `now_ms` should do before it uses the document (after
    /// [`Self::needs_restore`]). A due or stale document serves while one background fetch
    /// refreshes it. With nothing that may serve, the request waits: on the fetch under way if
    /// there is one, else on its own fetch, unless the last attempt failed within the cooldown (so
    /// that an unreachable issuer is not hammered by every request).
    pub fn refresh_needed(&self, now_ms: u64) -> Refresh {
        let in_flight = self.fetch_in_flight(now_ms);
        match self.freshness(now_ms) {
            Freshness::Fresh => Refresh::No,
            Freshness::Due | Freshness::Stale if self.cooled_down(now_ms) && !in_flight => Refresh::Background,
            Freshness::Due | Freshness::Stale => Refresh::No,
            Freshness::Missing | Freshness::Expired if in_flight => Refresh::Join,
            Freshness::Missing | Freshness::Expired => {
                let failed_recently = self.last_failure.as_ref().is_some_and(|(at, _)| {
                    now_ms.saturating_sub(*at) < self.bounds.refetch_cooldown_secs.saturating_mul(1000)
                });
                if failed_recently { Refresh::No } else { Refresh::Wait }
            }
        }
    }

    /// What a token whose `kid` is not in the set does at `now_ms`: waits for the fetch under way,
    /// or refetches (at most once per cooldown, so random `kid`s cannot turn the edge into a load
    /// generator), or nothing.
    pub fn refresh_for_unknown_kid(&self, now_ms: u64) -> Refresh {
        if self.fetch_in_flight(now_ms) {
            Refresh::Join
        } else if self.cooled_down(now_ms) {
            Refresh::Wait
        } else {
            Refresh::No
        }
    }

    /// Records that a fetch starts at `now_ms` (it is under way until [`Self::fetched`],
    /// [`Self::not_modified`] or [`Self::failed`]).
    pub fn fetch_started(&mut self, now_ms: u64) {
        self.last_attempt_ms = Some(now_ms);
        self.fetch_in_flight_since = Some(now_ms);
        self.fetches += 1;
    }

    /// Installs a document fetched at `now_ms` with the response's `max_age` and `etag`, unless
    /// [`CachedDocument::refusal`] refuses it against the one serving (the refusal is then
    /// recorded as a failure, and the serving document stays).
    pub fn fetched(
        &mut self,
        document: D,
        max_age: Option<u64>,
        etag: Option<String>,
        now_ms: u64,
    ) -> Result<(), String> {
        self.fetch_in_flight_since = None;
        let serving = self.usable(now_ms);
        if let Some(reason) = document.refusal(serving.as_deref()) {
            self.failed(now_ms, reason.clone());
            return Err(reason);
        }
        self.current = Some(Cached {
            document: Rc::new(document),
            fetched_at_ms: now_ms,
            ttl_secs: self.bounds.ttl_secs(max_age),
            source: Source::Network,
            etag,
        });
        self.last_failure = None;
        // A document from the network makes the Cache API's pointless.
        self.warmed = true;
        Ok(())
    }

    /// The issuer answered `304 Not Modified` at `now_ms` to the current document's `ETag`: it
    /// serves a new lifetime (`max_age`). Without a current document, a failure.
    pub fn not_modified(&mut self, max_age: Option<u64>, now_ms: u64) -> Result<(), String> {
        self.fetch_in_flight_since = None;
        let ttl_secs = self.bounds.ttl_secs(max_age);
        let Some(current) = self.current.as_mut() else {
            let reason = "the issuer answered 304 to a fetch without If-None-Match".to_owned();
            self.failed(now_ms, reason.clone());
            return Err(reason);
        };
        current.fetched_at_ms = now_ms;
        current.ttl_secs = ttl_secs;
        current.source = Source::Network;
        self.last_failure = None;
        self.warmed = true;
        Ok(())
    }

    /// Installs a document read back from the Cache API at `now_ms`, fetched at `fetched_at_ms`
    /// with lifetime `ttl_secs`: trusted for what is left of that lifetime (and the stale bound),
    /// never more. Refused when it says it was fetched in the future, when it is refused on its
    /// own, or when this isolate already holds a document at least as recent.
    pub fn restored(
        &mut self,
        document: D,
        fetched_at_ms: u64,
        ttl_secs: u64,
        etag: Option<String>,
        now_ms: u64,
    ) -> Result<(), String> {
        if fetched_at_ms > now_ms {
            return Err("the Cache API's copy says it was fetched in the future".to_owned());
        }
        if let Some(reason) = document.refusal(None) {
            return Err(reason);
        }
        if self.current.as_ref().is_some_and(|current| current.fetched_at_ms >= fetched_at_ms) {
            return Ok(());
        }
        let ttl_secs = ttl_secs.clamp(self.bounds.min_ttl_secs, self.bounds.max_ttl_secs);
        self.current =
            Some(Cached { document: Rc::new(document), fetched_at_ms, ttl_secs, source: Source::CacheApi, etag });
        Ok(())
    }

    /// Records a failed fetch; the current document, if any, stays.
    pub fn failed(&mut self, now_ms: u64, reason: String) {
        self.fetch_in_flight_since = None;
        self.failures += 1;
        self.last_failure = Some((now_ms, reason));
    }

    /// The document in memory, whatever its freshness.
    pub fn current(&self) -> Option<&Cached<D>> {
        self.current.as_ref()
    }

    /// The status page's view of the cache at `now_ms`: the document's summary under `name`.
    pub fn status(&self, name: &str, now_ms: u64) -> Value {
        let freshness = self.freshness(now_ms);
        let state = match freshness {
            Freshness::Missing => "missing",
            Freshness::Fresh | Freshness::Due => "fresh",
            Freshness::Stale => "stale",
            Freshness::Expired => "expired",
        };
        let document = self.current.as_ref().map(|current| {
            let mut summary = current.document.summary();
            if let Value::Object(fields) = &mut summary {
                fields.insert("age_seconds".to_owned(), json!(now_ms.saturating_sub(current.fetched_at_ms) / 1000));
                fields.insert("ttl_seconds".to_owned(), json!(current.ttl_secs));
                fields.insert("source".to_owned(), json!(current.source.name()));
            }
            summary
        });
        let mut status = json!({
            "state": state,
            "serving": matches!(freshness, Freshness::Fresh | Freshness::Due | Freshness::Stale),
            "fetch_attempts": self.fetches,
            "fetch_failures": self.failures,
            "last_attempt_seconds_ago": self.last_attempt_ms.map(|at| now_ms.saturating_sub(at) / 1000),
            "last_error": self.last_failure.as_ref().map(|(_, reason)| reason),
            "max_stale_seconds": self.bounds.max_stale_secs,
        });
        status[name] = document.unwrap_or(Value::Null);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwks::PublicKey;

    type KeyCache = DocumentCache<KeySet>;

    const BOUNDS: CacheBounds = CacheBounds {
        min_ttl_secs: 60,
        max_ttl_secs: 3600,
        refetch_cooldown_secs: 30,
        max_stale_secs: 600,
        fetch_timeout_ms: 5000,
    };
    const T0: u64 = 1_800_000_000_000;
    const SEC: u64 = 1000;

    /// A P-256 point: the generator G.
    fn g() -> PublicKey {
        let x = hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
        let y = hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
        PublicKey::from_coordinates(&x, &y).expect("on the curve")
    }

    /// Another P-256 point: 2G.
    fn g2() -> PublicKey {
        let x = hex("7cf27b188d034f7e8a52380304b51ac3c08969e277f21b35a60b48fc47669978");
        let y = hex("07775510db8ed040293d9ac69f7430dbba7dade63ce982299e04b79d227873d1");
        PublicKey::from_coordinates(&x, &y).expect("on the curve")
    }

    fn keys() -> KeySet {
        KeySet::from_keys([g()])
    }

    /// The JWK of `key`, as a JSON value.
    fn jwk(key: &PublicKey) -> Value {
        serde_json::to_value(key.to_jwk()).expect("JSON")
    }

    /// The JWK of `key` without its `y`: unreadable, under the same `kid`.
    fn broken_jwk(key: &PublicKey) -> Value {
        let mut jwk = jwk(key);
        jwk.as_object_mut().expect("an object").remove("y");
        jwk
    }

    /// A key set parsed from a JWKS document of `keys`.
    fn jwks(keys: &[Value]) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).expect("a key set")
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    fn loaded(max_age: Option<u64>) -> KeyCache {
        let mut cache = KeyCache::new(BOUNDS);
        cache.fetch_started(T0);
        cache.fetched(keys(), max_age, None, T0).expect("usable");
        cache
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(300));
        assert_eq!(max_age("MAX-AGE=\"42\", must-revalidate"), Some(42));
        assert_eq!(max_age("max-age=99999999999999999999999"), Some(u64::MAX));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("max-age=60, no-cache"), Some(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=-1"), None);
        assert_eq!(max_age("max-age"), None);
        assert_eq!(max_age(""), None);
    }

    #[test]
    fn oversized_key_sets_are_refused_from_their_declared_length() {
        let limit = KeySet::MAX_BYTES;
        assert_eq!(limit, jwks::KeySetLimits::default().max_bytes);
        assert!(check_declared_length(Some("65536"), limit).is_ok());
        assert!(check_declared_length(Some(" 1200 "), limit).is_ok());
        assert!(check_declared_length(None, limit).is_ok(), "no length: read with the cap");
        assert!(check_declared_length(Some("65537"), limit).is_err());
        assert!(check_declared_length(Some("99999999999999999999"), limit).is_err());
        assert!(check_declared_length(Some("12, 12"), limit).is_ok(), "unusable: read with the cap");
        let error = check_declared_length(Some("10000000"), limit).expect_err("too large");
        assert!(error.contains("65536"), "{error}");
    }

    #[test]
    fn the_cache_api_key_is_distinct_from_the_jwks_url() {
        assert_eq!(cache_api_key("https://i.example/jwks"), "https://i.example/jwks?portcullis-edge-cache=1");
        assert_eq!(cache_api_key("https://i.example/jwks?v=2"), "https://i.example/jwks?v=2&portcullis-edge-cache=1");
    }

    #[test]
    fn lifetimes_stay_within_bounds() {
        assert_eq!(BOUNDS.ttl_secs(None), 60);
        assert_eq!(BOUNDS.ttl_secs(Some(0)), 60);
        assert_eq!(BOUNDS.ttl_secs(Some(120)), 120);
        assert_eq!(BOUNDS.ttl_secs(Some(u64::MAX)), 3600);
    }

    #[test]
    fn an_empty_cache_fetches_and_waits() {
        let cache = KeyCache::new(BOUNDS);
        assert_eq!(cache.freshness(T0), Freshness::Missing);
        assert_eq!(cache.refresh_needed(T0), Refresh::Wait);
        assert!(cache.usable(T0).is_none());
    }

    #[test]
    fn every_request_of_a_cold_isolate_reads_the_cache_api_until_one_read_completes() {
        let mut cache = KeyCache::new(BOUNDS);
        // Two requests at once: both read (neither may wait on the other's read).
        assert!(cache.needs_restore());
        assert!(cache.needs_restore());
        // A fresh set read back: no fetch at all, for either.
        cache.restored(keys(), T0 - 10 * SEC, 60, None, T0).expect("restored");
        cache.restore_done();
        cache.restored(keys(), T0 - 10 * SEC, 60, None, T0).expect("restored");
        cache.restore_done();
        assert!(!cache.needs_restore());
        assert_eq!(cache.refresh_needed(T0), Refresh::No);
        assert!(cache.usable(T0).is_some());
        assert_eq!(cache.status("keys", T0)["fetch_attempts"], 0);
        // A set fetched makes the Cache API pointless too.
        let mut cache = KeyCache::new(BOUNDS);
        cache.fetch_started(T0);
        cache.fetched(keys(), None, None, T0).expect("usable");
        assert!(!cache.needs_restore());
    }

    #[test]
    fn a_stale_set_from_the_cache_api_serves_while_one_fetch_refreshes_it() {
        let mut cache = KeyCache::new(BOUNDS);
        cache.restored(keys(), T0 - 100 * SEC, 60, None, T0).expect("restored");
        cache.restore_done();
        assert!(cache.usable(T0).is_some(), "the stale set serves at once");
        assert_eq!(cache.refresh_needed(T0), Refresh::Background);
        cache.fetch_started(T0);
        assert_eq!(cache.refresh_needed(T0 + 2 * SEC), Refresh::No, "one background fetch at a time");
        // Even with a cooldown shorter than the fetch timeout.
        let mut cache = KeyCache::new(CacheBounds { refetch_cooldown_secs: 1, ..BOUNDS });
        cache.restored(keys(), T0 - 100 * SEC, 60, None, T0).expect("restored");
        cache.restore_done();
        cache.fetch_started(T0);
        assert_eq!(cache.refresh_needed(T0 + 2 * SEC), Refresh::No);
        cache.failed(T0 + 3 * SEC, "timeout".to_owned());
        assert_eq!(cache.refresh_needed(T0 + 4 * SEC), Refresh::Background);
    }

    #[test]
    fn with_nothing_to_serve_one_request_fetches_and_the_others_join_it() {
        let mut cache = KeyCache::new(BOUNDS);
        cache.restore_done();
        assert_eq!(cache.refresh_needed(T0), Refresh::Wait);
        cache.fetch_started(T0);
        assert_eq!(cache.refresh_needed(T0 + 10), Refresh::Join);
        cache.fetched(keys(), None, None, T0 + 50).expect("usable");
        assert_eq!(cache.refresh_needed(T0 + 60), Refresh::No);
        assert!(cache.usable(T0 + 60).is_some());
    }

    #[test]
    fn a_fetch_whose_request_went_away_holds_nobody_up_past_its_timeout() {
        let mut cache = KeyCache::new(BOUNDS);
        cache.restore_done();
        cache.fetch_started(T0);
        // Never finished: counts as under way for the fetch timeout and a second, then not.
        assert!(cache.fetch_in_flight(T0 + 5999));
        assert_eq!(cache.refresh_needed(T0 + 5999), Refresh::Join);
        assert!(!cache.fetch_in_flight(T0 + 6000));
        assert_eq!(cache.refresh_needed(T0 + 30 * SEC), Refresh::Wait);
    }

    #[test]
    fn a_set_is_fresh_then_due_then_stale_then_expired() {
        let cache = loaded(Some(120));
        assert_eq!(cache.freshness(T0 + 59 * SEC), Freshness::Fresh);
        assert_eq!(cache.refresh_needed(T0 + 59 * SEC), Refresh::No);
        // Refreshed ahead: from half its lifetime, in the background, while it serves.
        assert_eq!(cache.freshness(T0 + 60 * SEC), Freshness::Due);
        assert_eq!(cache.refresh_needed(T0 + 60 * SEC), Refresh::Background);
        assert!(cache.usable(T0 + 119 * SEC).is_some());
        assert_eq!(cache.freshness(T0 + 120 * SEC), Freshness::Stale);
        assert_eq!(cache.refresh_needed(T0 + 120 * SEC), Refresh::Background);
        assert!(cache.usable(T0 + 700 * SEC).is_some());
        assert_eq!(cache.freshness(T0 + 720 * SEC), Freshness::Expired);
        assert!(cache.usable(T0 + 720 * SEC).is_none());
        assert_eq!(cache.refresh_needed(T0 + 720 * SEC), Refresh::Wait);
    }

    #[test]
    fn without_a_stale_bound_a_removed_key_stops_verifying_within_the_lifetime_even_when_fetches_fail() {
        let mut cache = KeyCache::new(CacheBounds { max_stale_secs: 0, ..BOUNDS });
        cache.fetch_started(T0);
        cache.fetched(keys(), Some(300), None, T0).expect("usable");
        // The issuer drops the key at once; every later fetch fails (the issuer down, or blocked).
        for at in [150, 180, 210, 240, 270] {
            assert_eq!(cache.refresh_needed(T0 + at * SEC), Refresh::Background, "at {at} s");
            cache.fetch_started(T0 + at * SEC);
            cache.failed(T0 + at * SEC, "unreachable".to_owned());
            assert!(cache.usable(T0 + at * SEC).is_some(), "still within its lifetime at {at} s");
        }
        assert!(cache.usable(T0 + 299 * SEC).is_some());
        assert!(cache.usable(T0 + 300 * SEC).is_none(), "no longer than max-age after the last good fetch");
        assert_eq!(cache.status("keys", T0 + 300 * SEC)["serving"], false);
    }

    #[test]
    fn a_304_renews_the_lifetime_of_the_document_it_confirms() {
        let mut cache = loaded(Some(120));
        cache.current.as_mut().expect("set").etag = Some("\"v1\"".to_owned());
        cache.fetch_started(T0 + 60 * SEC);
        cache.not_modified(Some(120), T0 + 61 * SEC).expect("renewed");
        assert_eq!(cache.freshness(T0 + 120 * SEC), Freshness::Fresh);
        let current = cache.current().expect("kept");
        assert_eq!((current.fetched_at_ms, current.etag.as_deref()), (T0 + 61 * SEC, Some("\"v1\"")));
        // A 304 with nothing to confirm is a failed fetch.
        let mut empty = KeyCache::new(BOUNDS);
        empty.fetch_started(T0);
        assert!(empty.not_modified(None, T0).is_err());
        assert!(empty.usable(T0).is_none());
        assert_eq!(empty.status("keys", T0)["fetch_failures"], 1);
    }

    #[test]
    fn a_copy_from_the_cache_api_dated_in_the_future_is_refused() {
        let mut cache = KeyCache::new(BOUNDS);
        let error = cache.restored(keys(), T0 + SEC, 60, None, T0).expect_err("refused");
        assert!(error.contains("future"), "{error}");
        assert!(cache.current().is_none());
        // One of the past is trusted only for what is left of its recorded lifetime (and the
        // stale bound, here 600 s).
        cache.restored(keys(), T0 - 650 * SEC, 60, None, T0).expect("restored");
        assert_eq!(cache.freshness(T0), Freshness::Stale);
        assert_eq!(cache.freshness(T0 + 10 * SEC), Freshness::Expired);
        // Its recorded lifetime is held to the bounds too.
        let mut cache = KeyCache::new(BOUNDS);
        cache.restored(keys(), T0 - 4000 * SEC, u64::MAX, None, T0).expect("restored");
        assert_eq!(cache.current().expect("set").ttl_secs, 3600);
        assert_eq!(cache.freshness(T0), Freshness::Stale);
    }

    #[test]
    fn a_clock_going_backwards_does_not_expire_keys() {
        let cache = loaded(None);
        assert_eq!(cache.freshness(T0 - 5 * SEC), Freshness::Fresh);
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let mut cache = loaded(None);
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 29 * SEC), Refresh::No);
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 30 * SEC), Refresh::Wait);
        cache.fetch_started(T0 + 30 * SEC);
        // Meanwhile, other unknown kids wait for that fetch rather than start one.
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 30 * SEC + 10), Refresh::Join);
        cache.fetched(keys(), None, None, T0 + 31 * SEC).expect("usable");
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 32 * SEC), Refresh::No);
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 59 * SEC), Refresh::No);
        assert_eq!(cache.refresh_for_unknown_kid(T0 + 60 * SEC), Refresh::Wait);
    }

    #[test]
    fn a_stale_set_is_refreshed_in_the_background_once_per_cooldown() {
        let mut cache = loaded(None);
        let stale = T0 + 61 * SEC;
        assert_eq!(cache.refresh_needed(stale), Refresh::Background);
        cache.fetch_started(stale);
        cache.failed(stale + SEC, "connection refused".to_owned());
        assert_eq!(cache.refresh_needed(stale + 2 * SEC), Refresh::No);
        assert!(cache.usable(stale + 2 * SEC).is_some(), "the stale set keeps serving");
        assert_eq!(cache.refresh_needed(stale + 30 * SEC), Refresh::Background);
    }

    #[test]
    fn an_unreachable_issuer_is_not_hammered_when_no_set_serves() {
        // A fetch that fails: the requests that joined it find nothing, and nobody refetches
        // within the cooldown.
        let mut cache = KeyCache::new(BOUNDS);
        cache.restore_done();
        cache.fetch_started(T0);
        cache.failed(T0, "timeout".to_owned());
        assert!(!cache.fetch_in_flight(T0));
        assert_eq!(cache.refresh_needed(T0 + 29 * SEC), Refresh::No);
        assert_eq!(cache.refresh_needed(T0 + 30 * SEC), Refresh::Wait);
    }

    #[test]
    fn a_set_without_usable_keys_never_replaces_a_good_one() {
        let mut cache = loaded(None);
        let empty = KeySet::parse(br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r"}]}"#).expect("parses");
        assert!(cache.fetched(empty, None, None, T0 + SEC).is_err());
        let current = cache.current().expect("kept");
        assert_eq!(current.fetched_at_ms, T0);
        assert_eq!(current.document.len(), 1);
        assert_eq!(cache.status("keys", T0 + SEC)["last_error"], "the key set has no usable key");
    }

    #[test]
    fn a_set_that_breaks_a_key_in_use_never_replaces_the_serving_one() {
        let mut cache = loaded(None);
        let kid = g().thumbprint().to_owned();
        // G's entry is now unreadable, beside a good new key: refused, G keeps serving.
        let broken = jwks(&[broken_jwk(&g()), jwk(&g2())]);
        let at = T0 + 10 * SEC;
        let error = cache.fetched(broken, None, None, at).expect_err("refused");
        assert!(error.contains(&kid), "{error}");
        let current = cache.current().expect("kept");
        assert_eq!((current.fetched_at_ms, current.document.kids().collect::<Vec<_>>()), (T0, vec![kid.as_str()]));
        let status = cache.status("keys", at);
        assert_eq!(status["fetch_failures"], 1);
        assert!(status["last_error"].as_str().is_some_and(|error| error.contains("cannot be read")), "{status}");
        // A failure counts for the cooldown: no immediate retry, but one once it has passed.
        cache.fetch_started(at);
        cache.failed(at, "the same again".to_owned());
        assert_eq!(cache.refresh_for_unknown_kid(at + 29 * SEC), Refresh::No);
        assert_eq!(cache.refresh_for_unknown_kid(at + 30 * SEC), Refresh::Wait);

        // The same kid listed twice (ambiguous) loses the key in use just as well.
        let twice = jwks(&[jwk(&g()), jwk(&g()), jwk(&g2())]);
        assert!(cache.fetched(twice, None, None, T0 + 40 * SEC).is_err());
        assert_eq!(cache.current().expect("kept").fetched_at_ms, T0);
    }

    #[test]
    fn a_rotation_drops_absent_kids_and_ignores_unrelated_broken_keys() {
        let mut cache = loaded(None);
        // G is gone (rotated out or revoked), 2G is new, and an unrelated entry is broken.
        let mut unrelated = broken_jwk(&g());
        unrelated["kid"] = json!("some-other-kid");
        let rotated = jwks(&[jwk(&g2()), unrelated]);
        assert_eq!(rotated.skipped().len(), 1);
        cache.fetched(rotated, None, None, T0 + SEC).expect("installed");
        let kids: Vec<String> = cache.current().expect("set").document.kids().map(str::to_owned).collect();
        assert_eq!(kids, [g2().thumbprint()]);
    }

    #[test]
    fn a_set_that_no_longer_serves_is_replaced_even_by_a_partly_broken_one() {
        let mut cache = loaded(Some(60));
        // Past lifetime and stale bound (60 s + 600 s): the old set serves nobody any more.
        let late = T0 + 661 * SEC;
        assert!(cache.usable(late).is_none());
        cache.fetched(jwks(&[broken_jwk(&g()), jwk(&g2())]), None, None, late).expect("better than nothing");
        assert_eq!(cache.current().expect("set").document.len(), 1);
        assert_eq!(cache.freshness(late), Freshness::Fresh);
    }

    #[test]
    fn a_successful_fetch_clears_the_last_error() {
        let mut cache = loaded(None);
        cache.failed(T0 + SEC, "boom".to_owned());
        cache.fetched(keys(), None, None, T0 + 2 * SEC).expect("usable");
        assert_eq!(cache.status("keys", T0 + 2 * SEC)["last_error"], Value::Null);
    }

    #[test]
    fn restored_sets_keep_their_age_and_never_replace_newer_ones() {
        let mut cache = KeyCache::new(BOUNDS);
        cache.restored(keys(), T0 - 100 * SEC, 60, None, T0).expect("restored");
        assert_eq!(cache.freshness(T0), Freshness::Stale);
        assert_eq!(cache.current().expect("restored").source, Source::CacheApi);
        cache.fetched(keys(), None, None, T0).expect("usable");
        cache.restored(keys(), T0 - 10 * SEC, 60, None, T0).expect("restored");
        assert_eq!(cache.current().expect("kept").source, Source::Network);
    }

    #[test]
    fn the_status_tells_kids_age_and_staleness() {
        let mut cache = loaded(Some(60));
        let now = T0 + 90 * SEC;
        cache.fetch_started(now);
        cache.failed(now, "connection refused".to_owned());
        let status = cache.status("keys", now);
        assert_eq!(status["state"], "stale");
        assert_eq!(status["serving"], true);
        assert_eq!(status["keys"]["age_seconds"], 90);
        assert_eq!(status["keys"]["source"], "network");
        assert_eq!(status["keys"]["kids"].as_array().expect("kids").len(), 1);
        assert_eq!(status["fetch_attempts"], 2);
        assert_eq!(status["fetch_failures"], 1);
        assert_eq!(status["last_error"], "connection refused");
    }
}
