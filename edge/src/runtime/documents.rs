//! The I/O of a document the Worker fetches from the issuer (the key set, the revocation list):
//! fetching its URL with a timeout and `If-None-Match`, keeping the last good copy in the Workers
//! Cache API so that a fresh isolate starts warm, and refreshing in the background. The decisions
//! are [`DocumentCache`]'s.
//!
//! No request ever awaits a promise (or a future driven by one) that another request started:
//! the Workers runtime cancels a request that does, as hung. A request that needs the outcome of
//! another's fetch watches the shared state instead, on timers of its own; a request of a cold
//! isolate reads the Cache API itself.

use super::{js_reason, now_ms, subrequest};
use crate::counters::{Counters, FetchOutcome};
use crate::document_cache::{self, CacheBounds, DocumentCache, FetchedDocument, Refresh};
use crate::reply::event_log;
use js_sys::futures::JsFuture;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use worker::{Context, console_log};

/// How often a request waiting for another request's fetch looks whether it has finished.
const JOIN_POLL_MS: u32 = 5;

/// The header of a Cache API entry holding the document's `ETag`.
const ETAG_HEADER: &str = "x-portcullis-etag";

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

/// One document of this isolate.
pub(super) struct DocumentStore<D> {
    url: String,
    cache_api_key: String,
    timeout_ms: u32,
    cache: RefCell<DocumentCache<D>>,
    /// The isolate's counters: each fetch's outcome.
    counters: Rc<Counters>,
    /// Counts a fetch's outcome in `counters`.
    count: fn(&Counters, FetchOutcome),
    /// Called with each document installed from the network.
    on_install: fn(&D),
}

/// Why a fetch gave no document: the outcome it counts as, and the reason for the log.
type FetchFailure = (FetchOutcome, String);

/// A JavaScript error of the fetch (or of reading its body) as a failure, by its `name`
/// ([`FetchOutcome::of_error`]).
fn js_failure(context: &str, error: JsValue) -> FetchFailure {
    let name = js_sys::Reflect::get(&error, &JsValue::from_str("name")).ok().and_then(|name| name.as_string());
    (FetchOutcome::of_error(name.as_deref()), format!("{context} failed: {}", js_reason(error)))
}

/// The log event `<document>_<what>`.
fn event(document: &str, what: &str) -> String {
    format!("{document}_{what}")
}

impl<D: FetchedDocument + 'static> DocumentStore<D> {
    /// An empty store for the document at `url`, cached within `bounds`, counting its fetches in
    /// `counters` with `count`, and calling `on_install` with each document fetched.
    pub(super) fn new(
        url: &str,
        bounds: CacheBounds,
        counters: Rc<Counters>,
        count: fn(&Counters, FetchOutcome),
        on_install: fn(&D),
    ) -> Self {
        Self {
            url: url.to_owned(),
            cache_api_key: document_cache::cache_api_key(url),
            timeout_ms: bounds.fetch_timeout_ms,
            cache: RefCell::new(DocumentCache::new(bounds)),
            counters,
            count,
            on_install,
        }
    }

    /// Starts warm with `document`, as if just fetched (the benchmark measures requests with a
    /// warm cache).
    #[cfg(feature = "bench")]
    pub(super) fn preload(&self, document: D) -> Result<(), String> {
        self.cache.borrow_mut().fetched(document, Some(u64::MAX), None, now_ms())
    }

    /// The status page's view of the cache.
    pub(super) fn status(&self, now_ms: u64) -> Value {
        self.cache.borrow().status(D::NAME, now_ms)
    }

    /// The document a request uses. On a cold isolate the request first reads the Cache API (so
    /// that none goes to the issuer, and fails with it down, while the Cache API has a copy). A
    /// due or stale document serves while a background fetch runs; with nothing that may serve,
    /// the request waits for the fetch under way, or fetches. `None` when no document can be had.
    pub(super) async fn for_request(self: Rc<Self>, ctx: &Context) -> Option<Rc<D>> {
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
    /// the fetch under way, and gives the document then held; `None` when no refetch was allowed.
    pub(super) async fn refetch_for_unknown_kid(&self) -> Option<Rc<D>> {
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
    /// finishes (or no longer counts as under way: [`DocumentCache::fetch_in_flight`]).
    async fn join_fetch(&self) {
        while self.cache.borrow().fetch_in_flight(now_ms()) {
            if JsFuture::from(sleep(JOIN_POLL_MS)).await.is_err() {
                return;
            }
        }
    }

    /// Fetches the document and installs it if it is good; a failure keeps the current one.
    /// Counts the outcome as soon as it is known.
    async fn fetch_and_install(&self) {
        let etag = self.cache.borrow().current().and_then(|current| current.etag.clone());
        let got = get(&self.url, D::ACCEPT, etag.as_deref(), self.timeout_ms, D::MAX_BYTES).await;
        let now = now_ms();
        let parsed = got.and_then(|got| match got {
            Got::Body { body, max_age, etag } => D::parse(&body, now / 1000)
                .map(|document| (Some((body, document, etag)), max_age))
                .map_err(|reason| (FetchOutcome::Refused, reason)),
            Got::NotModified { max_age } => Ok((None, max_age)),
        });
        let (outcome, what, detail) = match parsed {
            Ok((Some((body, document, etag)), max_age)) => {
                let summary = document.summary();
                let installed = self.cache.borrow_mut().fetched(document, max_age, etag.clone(), now);
                match installed {
                    Ok(()) => {
                        let (document, ttl) = {
                            let cache = self.cache.borrow();
                            let current =
                                cache.current().map(|current| (Rc::clone(&current.document), current.ttl_secs));
                            (
                                current.as_ref().map(|(document, _)| Rc::clone(document)),
                                current.map_or(0, |(_, ttl)| ttl),
                            )
                        };
                        if let Some(document) = document {
                            (self.on_install)(&document);
                        }
                        let keep_secs = ttl.saturating_add(self.cache.borrow().bounds().max_stale_secs);
                        let stored = Stored { body, fetched_at_ms: now, ttl_secs: ttl, etag };
                        if let Err(reason) = store_in_cache_api(&self.cache_api_key, &stored, keep_secs).await {
                            console_log!(
                                "{}",
                                event_log(&event(D::NAME, "cache_put_failed"), json!({"reason": reason}))
                            );
                        }
                        (FetchOutcome::Ok, "fetched", json!({"document": summary, "ttl_seconds": ttl}))
                    }
                    Err(reason) => (FetchOutcome::Refused, "refused", json!({"reason": reason, "document": summary})),
                }
            }
            Ok((None, max_age)) => match self.cache.borrow_mut().not_modified(max_age, now) {
                Ok(()) => (FetchOutcome::NotModified, "", Value::Null),
                Err(reason) => (FetchOutcome::BadStatus, "fetch_failed", json!({"reason": reason, "url": self.url})),
            },
            Err((outcome, reason)) => {
                self.cache.borrow_mut().failed(now, reason.clone());
                (outcome, "fetch_failed", json!({"outcome": outcome.as_str(), "reason": reason, "url": self.url}))
            }
        };
        if !what.is_empty() {
            console_log!("{}", event_log(&event(D::NAME, what), detail));
        }
        (self.count)(&self.counters, outcome);
    }

    /// Installs the document the Cache API holds, if any, trusted for what is left of its recorded
    /// lifetime.
    async fn restore(&self) {
        let Some(stored) = read_cache_api(&self.cache_api_key).await else {
            return;
        };
        let now = now_ms();
        let restored = D::parse(&stored.body, now / 1000).and_then(|document| {
            let summary = document.summary();
            let restored =
                self.cache.borrow_mut().restored(document, stored.fetched_at_ms, stored.ttl_secs, stored.etag, now);
            restored.map(|()| summary)
        });
        let (what, detail) = match restored {
            Ok(summary) => {
                let age = now.saturating_sub(stored.fetched_at_ms) / 1000;
                ("restored", json!({"document": summary, "age_seconds": age}))
            }
            Err(reason) => ("cache_refused", json!({"reason": reason})),
        };
        console_log!("{}", event_log(&event(D::NAME, what), detail));
    }
}

/// What a GET brought: a body (within the limit) with its `max-age` and `ETag`, or `304`.
enum Got {
    Body { body: Vec<u8>, max_age: Option<u64>, etag: Option<String> },
    NotModified { max_age: Option<u64> },
}

/// One GET of `url` with `accept` (and `If-None-Match: etag`), redirects not followed, aborted
/// after `timeout_ms`, its body read up to `limit` bytes. Not generic: one copy serves every
/// document.
async fn get(url: &str, accept: &str, etag: Option<&str>, timeout_ms: u32, limit: usize) -> Result<Got, FetchFailure> {
    let request = request(url, accept, etag, timeout_ms).map_err(|error| js_failure("making the request", error))?;
    let response = subrequest(&request).await.map_err(|error| js_failure("fetching", error))?;
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let max_age = header("cache-control").and_then(|value| document_cache::max_age(&value));
    let refused = match response.status() {
        200 => document_cache::check_declared_length(header("content-length").as_deref(), limit)
            .map_err(|reason| (FetchOutcome::Refused, reason)),
        304 if etag.is_some() => Ok(()),
        status => Err((FetchOutcome::BadStatus, format!("the URL answered {status}"))),
    };
    if refused.is_err() || response.status() == 304 {
        // The body is not wanted: let the connection go.
        if let Some(body) = response.body() {
            let _ = body.cancel();
        }
        refused?;
        return Ok(Got::NotModified { max_age });
    }
    let cap = u32::try_from(limit).unwrap_or(u32::MAX);
    let body =
        JsFuture::from(read_capped(&response, cap)).await.map_err(|error| js_failure("reading the body", error))?;
    if body.is_null() {
        return Err((FetchOutcome::Refused, format!("the response is larger than {limit} bytes")));
    }
    Ok(Got::Body { body: js_sys::Uint8Array::new(&body).to_vec(), max_age, etag: header("etag") })
}

/// The GET of `url`: redirects not followed (the URL must name the document itself), aborted after
/// `timeout_ms`.
fn request(url: &str, accept: &str, etag: Option<&str>, timeout_ms: u32) -> Result<web_sys::Request, JsValue> {
    let headers = web_sys::Headers::new()?;
    headers.set("accept", accept)?;
    if let Some(etag) = etag {
        headers.set("if-none-match", etag)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(timeout_ms)));
    web_sys::Request::new_with_str_and_init(url, &init)
}

/// A document's copy in the Cache API: its body and what the cache knew of it.
struct Stored {
    body: Vec<u8>,
    fetched_at_ms: u64,
    ttl_secs: u64,
    etag: Option<String>,
}

/// Keeps `stored` in the Cache API under `key` for `keep_secs` (its lifetime and stale bound).
async fn store_in_cache_api(key: &str, stored: &Stored, keep_secs: u64) -> Result<(), String> {
    let Some(cache) = default_cache() else {
        return Ok(());
    };
    let put = async {
        let headers = web_sys::Headers::new()?;
        headers.set("content-type", "application/json")?;
        headers.set("cache-control", &format!("max-age={keep_secs}"))?;
        headers.set(document_cache::FETCHED_AT_HEADER, &stored.fetched_at_ms.to_string())?;
        headers.set(document_cache::TTL_HEADER, &stored.ttl_secs.to_string())?;
        if let Some(etag) = &stored.etag {
            headers.set(ETAG_HEADER, etag)?;
        }
        let init = web_sys::ResponseInit::new();
        init.set_headers(&headers);
        let mut body = stored.body.clone();
        let response = web_sys::Response::new_with_opt_u8_array_and_init(Some(&mut body), &init)?;
        JsFuture::from(cache.put_with_str(key, &response)).await
    };
    put.await.map(|_| ()).map_err(js_reason)
}

/// The copy the Cache API holds under `key`, if any, with what it recorded.
async fn read_cache_api(key: &str) -> Option<Stored> {
    let cache = default_cache()?;
    let found = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    if !found.is_object() {
        return None;
    }
    let response: web_sys::Response = found.unchecked_into();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let number = |name: &str| header(name).and_then(|value| value.parse::<u64>().ok());
    let fetched_at_ms = number(document_cache::FETCHED_AT_HEADER)?;
    let ttl_secs = number(document_cache::TTL_HEADER)?;
    let etag = header(ETAG_HEADER);
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(Stored { body: js_sys::Uint8Array::new(&buffer).to_vec(), fetched_at_ms, ttl_secs, etag })
}

/// `caches.default`, if the runtime has it.
fn default_cache() -> Option<web_sys::Cache> {
    let caches = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("caches")).ok()?;
    let default = js_sys::Reflect::get(&caches, &JsValue::from_str("default")).ok()?;
    default.is_object().then(|| default.unchecked_into())
}
