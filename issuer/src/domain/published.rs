//! The published key set as served: a serialized JWKS body, its entity tag, and the same bytes
//! parsed back by the `jwks` core (the key set admin tokens are checked against). Rebuilt only when the key-set
//! version in the database moves; that version is compared at most once per
//! [`KEY_SET_CHECK_INTERVAL`] when the JWKS is read, so what one process changed is served by
//! every other within about that long.

use crate::domain::keys::{KEY_SET_CHECK_INTERVAL, KeyStore, KeyStoreError, PublishedKeys};
use crate::store::DbError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jwks::{JwkSet, KeySet};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// How long a read waits for the version check before it serves the snapshot it has.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// One version of the published key set, ready to serve.
#[derive(Debug)]
pub(crate) struct PublishedSnapshot {
    /// The key-set version it was built from.
    pub(crate) version: i64,
    /// `{"keys":[...]}`.
    pub(crate) body: Bytes,
    /// A strong entity tag: the quoted SHA-256 of the body, base64url (visible ASCII).
    pub(crate) etag: String,
    /// The body as a verifier reads it.
    pub(crate) keys: KeySet,
    /// The kid of the active key at that version, if there was one.
    pub(crate) active: Option<String>,
}

/// A strong entity tag (RFC 9110 §8.8.3) for a document: its SHA-256, base64url, quoted.
pub(crate) fn entity_tag(body: &[u8]) -> String {
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(Sha256::digest(body)))
}

impl PublishedSnapshot {
    fn build(published: &PublishedKeys) -> Result<Self, KeyStoreError> {
        let set = JwkSet { keys: published.keys.iter().map(jwks::PublicKey::to_jwk).collect() };
        let body = serde_json::to_vec(&set).map_err(|error| KeyStoreError::Jwks(error.to_string()))?;
        // Read back exactly as the edge reads it: what is served is what verifiers will accept.
        let keys = KeySet::parse(&body).map_err(|error| KeyStoreError::Jwks(error.to_string()))?;
        if keys.len() != published.keys.len() {
            return Err(KeyStoreError::Jwks(format!("{} of its keys are unusable", keys.skipped().len())));
        }
        let etag = entity_tag(&body);
        Ok(Self { version: published.version, body: Bytes::from(body), etag, keys, active: published.active.clone() })
    }
}

/// A snapshot as a read found it.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The snapshot to use.
    pub(crate) snapshot: Arc<PublishedSnapshot>,
    /// True when it matched the database at most [`KEY_SET_CHECK_INTERVAL`] ago; false when the
    /// check failed or timed out (the reason was logged), so it may be older.
    pub(crate) fresh: bool,
}

/// The current snapshot, replaced whole when the key set changes.
#[derive(Debug)]
pub(crate) struct PublishedKeySet {
    current: RwLock<Arc<PublishedSnapshot>>,
    /// One check or rebuild at a time.
    rebuild: tokio::sync::Mutex<()>,
    /// The clock reading (Unix seconds) taken before the last version check that succeeded.
    confirmed_at: AtomicU64,
    /// The same for the last check attempted, successful or not.
    attempted_at: AtomicU64,
}

/// True when a check made at `last` is too old at `now` (or the clock went back since).
fn due(now: u64, last: u64) -> bool {
    now < last || now - last >= KEY_SET_CHECK_INTERVAL.as_secs()
}

impl PublishedKeySet {
    /// Builds the first snapshot, as of `now`.
    pub(crate) async fn load(keys: &KeyStore, now: u64) -> Result<Self, KeyStoreError> {
        let snapshot = PublishedSnapshot::build(&keys.published().await?)?;
        Ok(Self {
            current: RwLock::new(Arc::new(snapshot)),
            rebuild: tokio::sync::Mutex::new(()),
            confirmed_at: AtomicU64::new(now),
            attempted_at: AtomicU64::new(now),
        })
    }

    /// The snapshot as it is, without a check.
    pub(crate) fn current(&self) -> Arc<PublishedSnapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The snapshot to serve at `now`: as it is when the version was compared less than
    /// [`KEY_SET_CHECK_INTERVAL`] ago (the hot path: two atomic loads), else after comparing it
    /// (and rebuilding when it moved). A check that fails or takes longer than
    /// [`CHECK_TIMEOUT`] is logged and not retried within the interval; the snapshot is then
    /// returned with `fresh: false`.
    pub(crate) async fn checked(&self, keys: &KeyStore, now: u64) -> Checked {
        if !due(now, self.confirmed_at.load(Ordering::Acquire)) {
            return Checked { snapshot: self.current(), fresh: true };
        }
        let _one_at_a_time = self.rebuild.lock().await;
        // Another read may have checked while this one waited.
        if !due(now, self.confirmed_at.load(Ordering::Acquire)) {
            return Checked { snapshot: self.current(), fresh: true };
        }
        if !due(now, self.attempted_at.load(Ordering::Acquire)) {
            return Checked { snapshot: self.current(), fresh: false };
        }
        self.attempted_at.store(now, Ordering::Release);
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, self.rebuild_if_moved(keys)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(KeyStoreError::Db(DbError::TimedOut(CHECK_TIMEOUT))),
        };
        match outcome {
            Ok(()) => {
                self.confirmed_at.store(now, Ordering::Release);
                Checked { snapshot: self.current(), fresh: true }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot compare the key set with the database; serving the cached one");
                Checked { snapshot: self.current(), fresh: false }
            }
        }
    }

    /// Compares the key-set version with the database now and rebuilds the snapshot if it
    /// moved; `now` is the clock reading taken before this call.
    pub(crate) async fn refresh(&self, keys: &KeyStore, now: u64) -> Result<(), KeyStoreError> {
        let _one_at_a_time = self.rebuild.lock().await;
        self.rebuild_if_moved(keys).await?;
        self.confirmed_at.store(now, Ordering::Release);
        Ok(())
    }

    /// The check itself; the caller holds `rebuild`.
    async fn rebuild_if_moved(&self, keys: &KeyStore) -> Result<(), KeyStoreError> {
        if keys.version().await? == self.current().version {
            return Ok(());
        }
        let snapshot = Arc::new(PublishedSnapshot::build(&keys.published().await?)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_due_once_per_interval_or_when_the_clock_goes_back() {
        assert!(!due(100, 100));
        assert!(due(101, 100));
        assert!(due(200, 100));
        assert!(due(99, 100), "a clock that went back checks again");
    }
}
