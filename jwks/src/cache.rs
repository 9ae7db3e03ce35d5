//! Tokens whose signature a verifier has already checked, so that a token seen again costs its
//! time checks and a look-up instead of a signature verification (clients send the same access
//! token with every request until it expires). Envoy's `jwt_authn` keeps such a cache too.

use crate::claims::{Claims, ClaimsOptions};
use crate::keyset::KeySet;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// What a [`TokenCache`] holds by default: enough for the active tokens of one isolate or one
/// process. An entry is the token and its decoded claims: about 1 KiB for a typical access token,
/// 14 KiB at most with the default [`ParseLimits`](crate::ParseLimits) (8 KiB a token).
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 1024;

/// A bounded cache of verified tokens, keyed by the whole token (so by its signature too).
///
/// An entry counts only while the key set still holds the very key (by RFC 7638 thumbprint, under
/// the same `kid`) that verified it, so a rotated or revoked key takes its tokens with it; and the
/// claims' time checks (`exp`, `nbf`, `iat`) run again at every look-up. Only tokens that passed
/// every check go in, and the entries count only for the [`ClaimsOptions`] they were checked
/// with: a cache asked under other options (another validator's) empties itself first. When
/// full, the oldest entry makes room.
#[derive(Debug, Clone)]
pub struct TokenCache {
    capacity: usize,
    /// The options the entries were checked with.
    options: Option<ClaimsOptions>,
    entries: HashMap<Arc<str>, Entry>,
    /// Tokens in the order they went in, for eviction.
    order: VecDeque<Arc<str>>,
    /// Look-ups that answered with claims.
    hits: u64,
    /// Look-ups that did not.
    misses: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    kid: Box<str>,
    thumbprint: Box<str>,
    claims: Claims,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_TOKEN_CACHE_ENTRIES)
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, options: None, entries: HashMap::new(), order: VecDeque::new(), hits: 0, misses: 0 }
    }

    /// How many look-ups ([`get`](Self::get)) answered with claims.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// How many look-ups did not (the token was not held, or no longer counts).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// The number of tokens held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The claims of `token` if it is held, the key that verified it is still in `keys`, and its
    /// claims pass their time checks at `now` under `options`. An entry that fails is dropped.
    pub fn get(&mut self, token: &str, keys: &KeySet, options: &ClaimsOptions, now: u64) -> Option<Claims> {
        let found = self.find(token, keys, options, now);
        let counter = if found.is_some() { &mut self.hits } else { &mut self.misses };
        *counter = counter.saturating_add(1);
        found
    }

    /// [`get`](Self::get) without the count.
    fn find(&mut self, token: &str, keys: &KeySet, options: &ClaimsOptions, now: u64) -> Option<Claims> {
        if self.options.as_ref() != Some(options) {
            return None;
        }
        let entry = self.entries.get(token)?;
        let key_held = keys.get(&entry.kid).is_some_and(|key| key.thumbprint() == &*entry.thumbprint);
        if key_held && entry.claims.check_times(options, now).is_ok() {
            return Some(entry.claims.clone());
        }
        if let Some((held, _)) = self.entries.remove_entry(token) {
            self.order.retain(|queued| !Arc::ptr_eq(queued, &held));
        }
        None
    }

    /// Keeps `claims` for `token`, checked under `options` and verified under the key `keys`
    /// holds as `kid`.
    pub(crate) fn insert(&mut self, token: &str, kid: &str, keys: &KeySet, options: &ClaimsOptions, claims: &Claims) {
        let Some(key) = keys.get(kid) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        if self.options.as_ref() != Some(options) {
            self.entries.clear();
            self.order.clear();
            self.options = Some(options.clone());
        }
        let entry = Entry { kid: kid.into(), thumbprint: key.thumbprint().into(), claims: claims.clone() };
        if let Some(held) = self.entries.get_mut(token) {
            *held = entry;
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let token: Arc<str> = token.into();
        self.entries.insert(Arc::clone(&token), entry);
        self.order.push_back(token);
    }
}
