//! The key set cache's I/O: fetching `JWKS_URL` with a timeout, keeping the last good set in the
//! Workers Cache API so that a fresh isolate starts warm, and refreshing in the background. The
//! decisions are [`KeyCache`]'s.
//!
//! No request ever awaits a promise (or a future driven by one) that another request started:
//! the Workers runtime cancels a request that does, as hung. A request that needs the outcome of
//! another's fetch watches the shared state instead, on timers of its own; a request of a cold
//! isolate reads the Cache API itself.

use super::{js_reason, now_ms, subrequest, webcrypto};
use crate::config::Config;
use crate::counters::{Counters, FetchOutcome};
use crate::keycache::{self, KeyCache, Refresh};
use crate::reply::event_log;
use js_sys::futures::JsFuture;
use jwks::{KeySet, KeySetLimits};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use worker::{Context, console_log};

/// How often a request waiting for another request's fetch looks whether it has finished.
const JOIN_POLL_MS: u32 = 5;

// Reads a response's body up to `limit` bytes: `null` (and the rest cancelled) past it, so that a
// key set without a Content-Length cannot make the Worker buffer any amount.
#[wasm_bindgen(inline_js = r#"
export async function readCapped(response, limit) {
  const reader = response.body ? response.body.getReader() : null;
  if (reader === null) return new Uint8Array(0);
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = readCapped)]
    fn read_capped(response: &web_sys::Response, limit: u32) -> js_sys::Promise;
    fn sleep(ms: u32) -> js_sys::Promise;
}

/// The key set of this isolate.
pub(super) struct KeyStore {
    jwks_url: String,
    cache_api_key: String,
    timeout_ms: u32,
    cache: RefCell<KeyCache>,
    /// The isolate's counters: each fetch's outcome.
    counters: Rc<Counters>,
}

/// A key set as fetched: the document (for the Cache API), the parsed set, and its `max-age`.
struct Fetched {
    body: Vec<u8>,
    keys: KeySet,
    max_age: Option<u64>,
}

/// Why a fetch gave no key set: the outcome it counts as, and the reason for the log.
type FetchFailure = (FetchOutcome, String);

/// A JavaScript error of the fetch (or of reading its body) as a failure, by its `name`
/// ([`FetchOutcome::of_error`]).
fn js_failure(context: &str, error: JsValue) -> FetchFailure {
    let name = js_sys::Reflect::get(&error, &JsValue::from_str("name")).ok().and_then(|name| name.as_string());
    (FetchOutcome::of_error(name.as_deref()), format!("{context} failed: {}", js_reason(error)))
}

impl KeyStore {
    /// An empty store for `config`, counting its fetches in `counters`.
    pub(super) fn new(config: &Config, counters: Rc<Counters>) -> Self {
        Self {
            jwks_url: config.jwks_url.clone(),
            cache_api_key: keycache::cache_api_key(&config.jwks_url),
            timeout_ms: config.cache.fetch_timeout_ms,
            cache: RefCell::new(KeyCache::new(config.cache)),
            counters,
        }
    }

    /// Starts warm with `keys`, as if just fetched (the benchmark measures requests with warm keys).
    #[cfg(feature = "bench")]
    pub(super) fn preload(&self, keys: KeySet) -> Result<(), String> {
        self.cache.borrow_mut().fetched(keys, Some(u64::MAX), now_ms())
    }

    /// The status page's view of the cache.
    pub(super) fn status(&self, now_ms: u64) -> Value {
        self.cache.borrow().status(now_ms)
    }

    /// The key set a request verifies with. On a cold isolate the request first reads the Cache
    /// API (so that none goes to the issuer, and fails with it down, while the Cache API has a
    /// set). A stale set serves while a background fetch runs; with nothing that may serve, the
    /// request waits for the fetch under way, or fetches. `None` when no set can be had.
    pub(super) async fn for_request(self: Rc<Self>, ctx: &Context) -> Option<Rc<KeySet>> {
        let needs_restore = self.cache.borrow().needs_restore();
        if needs_restore {
            self.restore().await;
            self.cache.borrow_mut().restore_done();
        }
        let refresh = self.cache.borrow().refresh_needed(now_ms());
        match refresh {
            Refresh::No => {}
            Refresh::Background => {
                self.cache.borrow_mut().fetch_started(now_ms());
                let store = Rc::clone(&self);
                ctx.wait_until(async move { store.fetch_and_install().await });
            }
            Refresh::Wait => {
                self.cache.borrow_mut().fetch_started(now_ms());
                self.fetch_and_install().await;
            }
            Refresh::Join => self.join_fetch().await,
        }
        self.cache.borrow().usable(now_ms())
    }

    /// After a token named an unknown `kid`: refetches (at most once per cooldown), or waits for
    /// the fetch under way, and gives the set then held; `None` when no refetch was allowed.
    pub(super) async fn refetch_for_unknown_kid(&self) -> Option<Rc<KeySet>> {
        let refresh = self.cache.borrow().refresh_for_unknown_kid(now_ms());
        match refresh {
            Refresh::Wait => {
                self.cache.borrow_mut().fetch_started(now_ms());
                self.fetch_and_install().await;
            }
            Refresh::Join => self.join_fetch().await,
            Refresh::No | Refresh::Background => return None,
        }
        self.cache.borrow().usable(now_ms())
    }

    /// Waits, on this request's own timers, until the fetch another request has under way
    /// finishes (or no longer counts as under way: [`KeyCache::fetch_in_flight`]).
    async fn join_fetch(&self) {
        while self.cache.borrow().fetch_in_flight(now_ms()) {
            if JsFuture::from(sleep(JOIN_POLL_MS)).await.is_err() {
                return;
            }
        }
    }

    /// Fetches the set and installs it if it is good; a failure keeps the current set. Counts the
    /// outcome as soon as it is known.
    async fn fetch_and_install(&self) {
        match self.fetch().await {
            Ok(Fetched { body, keys, max_age }) => {
                let fetched_at = now_ms();
                let kids: Vec<String> = keys.kids().map(str::to_owned).collect();
                let skipped: Vec<String> = keys.skipped().iter().map(ToString::to_string).collect();
                let keys_for_webcrypto = keys.clone();
                let installed = self.cache.borrow_mut().fetched(keys, max_age, fetched_at);
                match installed {
                    Ok(()) => {
                        webcrypto::retain_only(&keys_for_webcrypto);
                        let ttl = self.cache.borrow().current().map_or(0, |current| current.ttl_secs);
                        console_log!(
                            "{}",
                            event_log("keys_fetched", json!({"kids": kids, "skipped": skipped, "ttl_seconds": ttl}))
                        );
                        self.counters.jwks_fetch(FetchOutcome::Ok);
                        self.store_in_cache_api(&body, fetched_at, ttl).await;
                    }
                    Err(reason) => {
                        let outcome = FetchOutcome::Refused;
                        let detail = json!({"outcome": outcome.as_str(), "reason": reason, "skipped": skipped});
                        console_log!("{}", event_log("keys_refused", detail));
                        self.counters.jwks_fetch(outcome);
                    }
                }
            }
            Err((outcome, reason)) => {
                let detail = json!({"outcome": outcome.as_str(), "reason": reason, "url": self.jwks_url});
                console_log!("{}", event_log("keys_fetch_failed", detail));
                self.cache.borrow_mut().failed(now_ms(), reason);
                self.counters.jwks_fetch(outcome);
            }
        }
    }

    /// One GET of `JWKS_URL`, bounded in time and size, parsed strictly.
    async fn fetch(&self) -> Result<Fetched, FetchFailure> {
        let request = self.request().map_err(|error| js_failure("making the key set's request", error))?;
        let response = subrequest(&request).await.map_err(|error| js_failure("fetching the key set", error))?;
        let header = |name: &str| response.headers().get(name).ok().flatten();
        let limit = KeySetLimits::default().max_bytes;
        let refused = if response.status() == 200 {
            keycache::check_declared_length(header("content-length").as_deref(), limit)
                .map_err(|reason| (FetchOutcome::Refused, reason))
        } else {
            Err((FetchOutcome::BadStatus, format!("the JWKS URL answered {}", response.status())))
        };
        if let Err(failure) = refused {
            // The body is not wanted: let the connection go.
            if let Some(body) = response.body() {
                let _ = body.cancel();
            }
            return Err(failure);
        }
        let max_age = header("cache-control").and_then(|value| keycache::max_age(&value));
        let cap = u32::try_from(limit).unwrap_or(u32::MAX);
        let body = JsFuture::from(read_capped(&response, cap))
            .await
            .map_err(|error| js_failure("reading the key set", error))?;
        if body.is_null() {
            return Err((FetchOutcome::Refused, format!("the key set is larger than {limit} bytes")));
        }
        let body = js_sys::Uint8Array::new(&body).to_vec();
        // The parser checks the size again, with the same limits.
        let keys = KeySet::parse(&body)
            .map_err(|error| (FetchOutcome::Refused, format!("the key set was refused: {error}")))?;
        Ok(Fetched { body, keys, max_age })
    }

    /// The GET of `JWKS_URL`: redirects not followed, aborted after `JWKS_TIMEOUT_MS`.
    fn request(&self) -> Result<web_sys::Request, JsValue> {
        let headers = web_sys::Headers::new()?;
        headers.set("accept", "application/jwk-set+json, application/json")?;
        let init = web_sys::RequestInit::new();
        init.set_method("GET");
        init.set_headers(&headers);
        // A redirect is refused rather than followed: JWKS_URL must name the set itself.
        init.set_redirect(web_sys::RequestRedirect::Manual);
        init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(self.timeout_ms)));
        web_sys::Request::new_with_str_and_init(&self.jwks_url, &init)
    }

    /// Keeps the last good set in the Cache API for the stale bound past its lifetime.
    async fn store_in_cache_api(&self, body: &[u8], fetched_at_ms: u64, ttl_secs: u64) {
        let Some(cache) = default_cache() else {
            return;
        };
        let keep_secs = ttl_secs.saturating_add(self.cache.borrow().bounds().max_stale_secs);
        let stored = async {
            let headers = web_sys::Headers::new()?;
            headers.set("content-type", "application/json")?;
            headers.set("cache-control", &format!("max-age={keep_secs}"))?;
            headers.set(keycache::FETCHED_AT_HEADER, &fetched_at_ms.to_string())?;
            headers.set(keycache::TTL_HEADER, &ttl_secs.to_string())?;
            let init = web_sys::ResponseInit::new();
            init.set_headers(&headers);
            let mut body = body.to_vec();
            let response = web_sys::Response::new_with_opt_u8_array_and_init(Some(&mut body), &init)?;
            JsFuture::from(cache.put_with_str(&self.cache_api_key, &response)).await
        };
        if let Err(error) = stored.await {
            console_log!("{}", event_log("keys_cache_put_failed", json!({"reason": js_reason(error)})));
        }
    }

    /// Installs the set the Cache API holds, if any.
    async fn restore(&self) {
        let Some(cache) = default_cache() else {
            return;
        };
        let Ok(found) = JsFuture::from(cache.match_with_str(&self.cache_api_key)).await else {
            return;
        };
        if !found.is_object() {
            return;
        }
        let response: web_sys::Response = found.unchecked_into();
        let number =
            |name: &str| response.headers().get(name).ok().flatten().and_then(|value| value.parse::<u64>().ok());
        let (Some(fetched_at_ms), Some(ttl_secs)) = (number(keycache::FETCHED_AT_HEADER), number(keycache::TTL_HEADER))
        else {
            return;
        };
        let Ok(promise) = response.array_buffer() else {
            return;
        };
        let Ok(buffer) = JsFuture::from(promise).await else {
            return;
        };
        match KeySet::parse(&js_sys::Uint8Array::new(&buffer).to_vec()) {
            Ok(keys) => {
                let kids: Vec<String> = keys.kids().map(str::to_owned).collect();
                self.cache.borrow_mut().restored(keys, fetched_at_ms, ttl_secs);
                let age = now_ms().saturating_sub(fetched_at_ms) / 1000;
                console_log!("{}", event_log("keys_restored", json!({"kids": kids, "age_seconds": age})));
            }
            Err(error) => {
                console_log!("{}", event_log("keys_cache_refused", json!({"reason": error.to_string()})));
            }
        }
    }
}

/// `caches.default`, if the runtime has it.
fn default_cache() -> Option<web_sys::Cache> {
    let caches = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("caches")).ok()?;
    let default = js_sys::Reflect::get(&caches, &JsValue::from_str("default")).ok()?;
    default.is_object().then(|| default.unchecked_into())
}
