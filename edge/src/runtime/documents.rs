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

/// What a fetch brought: a new document (its body, for the Cache API, the parsed document, its
/// `max-age` and `ETag`), or the issuer's word that the current one is unchanged.
enum Fetched<D> {
    New { body: Vec<u8>, document: D, max_age: Option<u64>, etag: Option<String> },
    NotModified { max_age: Option<u64> },
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
fn event<D: FetchedDocument>(what: &str) -> String {
    format!("{}_{what}", D::NAME)
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
        let fetched = self.fetch().await;
        let now = now_ms();
        match fetched {
            Ok(Fetched::New { body, document, max_age, etag }) => {
                let summary = document.summary();
                let installed = self.cache.borrow_mut().fetched(document, max_age, etag.clone(), now);
                match installed {
                    Ok(()) => {
                        let current = self
                            .cache
                            .borrow()
                            .current()
                            .map(|current| (Rc::clone(&current.document), current.ttl_secs));
                        let ttl = current.as_ref().map_or(0, |(document, ttl)| {
                            (self.on_install)(document);
                            *ttl
                        });
                        let detail = json!({"document": summary, "ttl_seconds": ttl});
                        console_log!("{}", event_log(&event::<D>("fetched"), detail));
                        (self.count)(&self.counters, FetchOutcome::Ok);
                        self.store_in_cache_api(&body, now, ttl, etag.as_deref()).await;
                    }
                    Err(reason) => {
                        let outcome = FetchOutcome::Refused;
                        let detail = json!({"outcome": outcome.as_str(), "reason": reason, "document": summary});
                        console_log!("{}", event_log(&event::<D>("refused"), detail));
                        (self.count)(&self.counters, outcome);
                    }
                }
            }
            Ok(Fetched::NotModified { max_age }) => {
                let renewed = self.cache.borrow_mut().not_modified(max_age, now);
                let outcome = if renewed.is_ok() { FetchOutcome::NotModified } else { FetchOutcome::BadStatus };
                (self.count)(&self.counters, outcome);
                if let Err(reason) = renewed {
                    console_log!(
                        "{}",
                        event_log(&event::<D>("fetch_failed"), json!({"reason": reason, "url": self.url}))
                    );
                }
            }
            Err((outcome, reason)) => {
                let detail = json!({"outcome": outcome.as_str(), "reason": reason, "url": self.url});
                console_log!("{}", event_log(&event::<D>("fetch_failed"), detail));
                self.cache.borrow_mut().failed(now, reason);
                (self.count)(&self.counters, outcome);
            }
        }
    }

    /// One GET of the URL, bounded in time and size, parsed strictly.
    async fn fetch(&self) -> Result<Fetched<D>, FetchFailure> {
        let etag = self.cache.borrow().current().and_then(|current| current.etag.clone());
        let request = self.request(etag.as_deref()).map_err(|error| js_failure("making the request", error))?;
        let response = subrequest(&request).await.map_err(|error| js_failure("fetching", error))?;
        let header = |name: &str| response.headers().get(name).ok().flatten();
        let max_age = header("cache-control").and_then(|value| document_cache::max_age(&value));
        let limit = D::MAX_BYTES;
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
            return Ok(Fetched::NotModified { max_age });
        }
        let cap = u32::try_from(limit).unwrap_or(u32::MAX);
        let body =
            JsFuture::from(read_capped(&response, cap)).await.map_err(|error| js_failure("reading the body", error))?;
        if body.is_null() {
            return Err((FetchOutcome::Refused, format!("the response is larger than {limit} bytes")));
        }
        let body = js_sys::Uint8Array::new(&body).to_vec();
        let document = D::parse(&body, now_ms() / 1000).map_err(|reason| (FetchOutcome::Refused, reason))?;
        Ok(Fetched::New { body, document, max_age, etag: header("etag") })
    }

    /// The GET of the URL: redirects not followed, aborted after the fetch timeout.
    fn request(&self, etag: Option<&str>) -> Result<web_sys::Request, JsValue> {
        let headers = web_sys::Headers::new()?;
        headers.set("accept", D::ACCEPT)?;
        if let Some(etag) = etag {
            headers.set("if-none-match", etag)?;
        }
        let init = web_sys::RequestInit::new();
        init.set_method("GET");
        init.set_headers(&headers);
        // A redirect is refused rather than followed: the URL must name the document itself.
        init.set_redirect(web_sys::RequestRedirect::Manual);
        init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(self.timeout_ms)));
        web_sys::Request::new_with_str_and_init(&self.url, &init)
    }

    /// Keeps the last good document in the Cache API for the stale bound past its lifetime.
    async fn store_in_cache_api(&self, body: &[u8], fetched_at_ms: u64, ttl_secs: u64, etag: Option<&str>) {
        let Some(cache) = default_cache() else {
            return;
        };
        let keep_secs = ttl_secs.saturating_add(self.cache.borrow().bounds().max_stale_secs);
        let stored = async {
            let headers = web_sys::Headers::new()?;
            headers.set("content-type", "application/json")?;
            headers.set("cache-control", &format!("max-age={keep_secs}"))?;
            headers.set(document_cache::FETCHED_AT_HEADER, &fetched_at_ms.to_string())?;
            headers.set(document_cache::TTL_HEADER, &ttl_secs.to_string())?;
            if let Some(etag) = etag {
                headers.set(ETAG_HEADER, etag)?;
            }
            let init = web_sys::ResponseInit::new();
            init.set_headers(&headers);
            let mut body = body.to_vec();
            let response = web_sys::Response::new_with_opt_u8_array_and_init(Some(&mut body), &init)?;
            JsFuture::from(cache.put_with_str(&self.cache_api_key, &response)).await
        };
        if let Err(error) = stored.await {
            console_log!("{}", event_log(&event::<D>("cache_put_failed"), json!({"reason": js_reason(error)})));
        }
    }

    /// Installs the document the Cache API holds, if any, trusted for what is left of its recorded
    /// lifetime.
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
        let header = |name: &str| response.headers().get(name).ok().flatten();
        let number = |name: &str| header(name).and_then(|value| value.parse::<u64>().ok());
        let (Some(fetched_at_ms), Some(ttl_secs)) =
            (number(document_cache::FETCHED_AT_HEADER), number(document_cache::TTL_HEADER))
        else {
            return;
        };
        let etag = header(ETAG_HEADER);
        let Ok(promise) = response.array_buffer() else {
            return;
        };
        let Ok(buffer) = JsFuture::from(promise).await else {
            return;
        };
        let now = now_ms();
        let restored = D::parse(&js_sys::Uint8Array::new(&buffer).to_vec(), now / 1000).and_then(|document| {
            let summary = document.summary();
            self.cache.borrow_mut().restored(document, fetched_at_ms, ttl_secs, etag, now).map(|()| summary)
        });
        match restored {
            Ok(summary) => {
                let age = now.saturating_sub(fetched_at_ms) / 1000;
                console_log!(
                    "{}",
                    event_log(&event::<D>("restored"), json!({"document": summary, "age_seconds": age}))
                );
            }
            Err(reason) => console_log!("{}", event_log(&event::<D>("cache_refused"), json!({"reason": reason}))),
        }
    }
}

/// `caches.default`, if the runtime has it.
fn default_cache() -> Option<web_sys::Cache> {
    let caches = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("caches")).ok()?;
    let default = js_sys::Reflect::get(&caches, &JsValue::from_str("default")).ok()?;
    default.is_object().then(|| default.unchecked_into())
}
