//! One browser session: a Durable Object per session, named by the session's id, holding its
//! refresh token and its current access token. It is the one place that talks to the issuer for
//! that session, so a refresh happens once however many requests need it at the same moment:
//! every request to one object runs in the object's own I/O context, so they all await the one
//! promise of the refresh under way (the stateless Worker could not: workerd cancels a request
//! that awaits another request's promise).
//!
//! Its protocol, spoken only by this Worker (`POST`):
//! - `/start` with the token endpoint's answer (JSON: `access_token`, `refresh_token`,
//!   `expires_in`, `id_token`): keeps the tokens.
//! - `/access` with the access token the browser's cookie holds: the current access token (text),
//!   refreshed first when it is the one held and about to expire; `401` when the session has
//!   ended (the issuer refused the refresh).
//! - `/end`: revokes the refresh token at the issuer and forgets everything; answers the ID token
//!   (text, empty without one), for the issuer's logout.

use super::{env_text, js_reason, now_ms, subrequest};
use crate::config::{Config, SessionSettings};
use crate::reply::event_log;
use crate::session::SessionTokens;
use js_sys::Promise;
use js_sys::futures::{JsFuture, future_to_promise};
use serde_json::json;
use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use worker::console_log;

/// An access token this close to its expiry is refreshed rather than handed out (seconds).
pub(super) const REFRESH_MARGIN_SECS: u64 = 10;

// The object's storage and the Worker's calls to objects, straight from JavaScript (the `worker`
// crate's wrappers cost the Worker tens of kilobytes for these four calls).
#[wasm_bindgen(inline_js = r#"
export function storageGet(state, key) { return state.storage.get(key); }
export function storagePut(state, key, value) { return state.storage.put(key, value); }
export function storageDeleteAll(state) { return state.storage.deleteAll(); }
export function sessionFetch(env, binding, name, path, body) {
  const namespace = env[binding];
  const stub = namespace.get(namespace.idFromName(name));
  return stub.fetch("https://session.internal" + path, { method: "POST", body });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storageGet, catch)]
    fn storage_get(state: &JsValue, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = storagePut, catch)]
    fn storage_put(state: &JsValue, key: &str, value: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = storageDeleteAll, catch)]
    fn storage_delete_all(state: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_name = sessionFetch, catch)]
    fn session_fetch(env: &JsValue, binding: &str, name: &str, path: &str, body: &str) -> Result<Promise, JsValue>;
}

/// A promise of a boxed future: one copy of the conversion in the Worker for every future here.
fn shared_promise(future: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>>) -> Promise {
    future_to_promise(future)
}

thread_local! {
    /// The session settings, read from the bindings once per isolate.
    static SETTINGS: OnceCell<Option<SessionSettings>> = const { OnceCell::new() };
}

/// The Durable Object binding of the sessions.
const SESSIONS_BINDING: &str = "SESSIONS";

/// The storage key of the tokens.
const TOKENS: &str = "tokens";

/// A call from the Worker to the session object `session_id`: the status and the body, `None`
/// when it cannot be made.
pub(super) async fn session_call(env: &JsValue, session_id: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let response: web_sys::Response =
        JsFuture::from(session_fetch(env, SESSIONS_BINDING, session_id, path, body).ok()?).await.ok()?.unchecked_into();
    let text = JsFuture::from(response.text().ok()?).await.ok()?.as_string().unwrap_or_default();
    Some((response.status(), text))
}

/// A browser session (exported to the runtime as the Durable Object class `BrowserSession`).
#[wasm_bindgen]
pub struct BrowserSession {
    state: JsValue,
    env: JsValue,
    /// The refresh under way: every request that needs it awaits this one promise.
    in_flight: Rc<RefCell<Option<Promise>>>,
}

#[wasm_bindgen]
impl BrowserSession {
    /// The runtime makes the object with its state and the Worker's bindings.
    #[wasm_bindgen(constructor)]
    pub fn new(state: JsValue, env: JsValue) -> Self {
        Self { state, env, in_flight: Rc::default() }
    }

    /// One request from the Worker (see the module's protocol).
    pub fn fetch(&self, request: web_sys::Request) -> Promise {
        let object = Object { state: self.state.clone(), env: self.env.clone(), in_flight: Rc::clone(&self.in_flight) };
        shared_promise(Box::pin(async move { Ok(object.answer(request).await.into()) }))
    }
}

/// What a request to the object works with.
struct Object {
    state: JsValue,
    env: JsValue,
    in_flight: Rc<RefCell<Option<Promise>>>,
}

/// An answer of the object: `status` and a JSON or text body.
fn answer(status: u16, body: &str) -> web_sys::Response {
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    web_sys::Response::new_with_opt_str_and_init(Some(body), &init)
        .unwrap_or_else(|_| web_sys::Response::new().unwrap_or_else(|_| JsValue::UNDEFINED.unchecked_into()))
}

impl Object {
    async fn answer(&self, request: web_sys::Request) -> web_sys::Response {
        let Some(settings) = SETTINGS.with(|cell| {
            cell.get_or_init(|| {
                Config::from_lookup(|name| env_text(&self.env, name)).ok().and_then(|config| config.session)
            })
            .clone()
        }) else {
            return answer(500, "sessions are not configured");
        };
        let url = request.url();
        let path = crate::request::UrlParts::split(&url).path;
        let body = match request.text() {
            Ok(promise) => JsFuture::from(promise).await.ok().and_then(|text| text.as_string()).unwrap_or_default(),
            Err(_) => String::new(),
        };
        match path {
            "/start" => {
                let Some(tokens) = SessionTokens::decode(&body) else { return answer(400, "no tokens to keep") };
                match put(&self.state, &tokens).await {
                    Some(()) => answer(200, "{}"),
                    None => answer(503, "storage failed"),
                }
            }
            "/access" => match self.current(&settings, &body).await {
                Ok(access_token) => answer(200, &access_token),
                Err(status) => answer(status, "the session has ended"),
            },
            "/end" => {
                // A refresh under way finishes first, so that the refresh token revoked is the
                // newest and no rotation stores tokens back after the end.
                let in_flight = self.in_flight.borrow().clone();
                if let Some(promise) = in_flight {
                    let _ = JsFuture::from(promise).await;
                }
                let tokens = get(&self.state).await;
                if let Ok(promise) = storage_delete_all(&self.state) {
                    let _ = JsFuture::from(promise).await;
                }
                let id_token = match tokens {
                    Some(tokens) => {
                        revoke(&settings, &tokens.refresh_token).await;
                        tokens.id_token
                    }
                    None => None,
                };
                answer(200, &id_token.unwrap_or_default())
            }
            _ => answer(404, "not found"),
        }
    }

    /// The access token to use instead of `stale`: the one held if it is another and not about to
    /// expire (a refresh by an earlier request), else a new one from the refresh under way or
    /// from one started now. `Err(401)` when the session has ended, `Err(503)` when the issuer
    /// cannot be reached.
    async fn current(&self, settings: &SessionSettings, stale: &str) -> Result<String, u16> {
        let Some(tokens) = get(&self.state).await else { return Err(401) };
        if tokens.access_token != stale && tokens.access_expires_at > now_ms() / 1000 + REFRESH_MARGIN_SECS {
            return Ok(tokens.access_token);
        }
        let promise = self.refresh_promise(settings);
        match JsFuture::from(promise).await {
            Ok(token) => token.as_string().ok_or(503),
            Err(status) => Err(status.as_f64().map_or(503, |status| status as u16)),
        }
    }

    /// The promise of the refresh under way, or of one started now.
    fn refresh_promise(&self, settings: &SessionSettings) -> Promise {
        if let Some(promise) = self.in_flight.borrow().as_ref() {
            return promise.clone();
        }
        let (state, slot, settings) = (self.state.clone(), Rc::clone(&self.in_flight), settings.clone());
        let promise = shared_promise(Box::pin(async move {
            let refreshed = refresh(&state, &settings).await;
            slot.borrow_mut().take();
            refreshed.map(|token| JsValue::from_str(&token)).map_err(|status| JsValue::from_f64(f64::from(status)))
        }));
        *self.in_flight.borrow_mut() = Some(promise.clone());
        promise
    }
}

/// The tokens the object holds, if any.
async fn get(state: &JsValue) -> Option<SessionTokens> {
    let value = JsFuture::from(storage_get(state, TOKENS).ok()?).await.ok()?;
    SessionTokens::decode(&value.as_string()?)
}

/// Keeps `tokens`; `None` when storage fails.
async fn put(state: &JsValue, tokens: &SessionTokens) -> Option<()> {
    JsFuture::from(storage_put(state, TOKENS, &tokens.encode()).ok()?).await.ok().map(|_| ())
}

/// One refresh at the issuer: the new tokens are stored before anyone gets them. When the
/// issuer refuses (the family revoked, the user disabled, the refresh token expired), the
/// session ends here too.
async fn refresh(state: &JsValue, settings: &SessionSettings) -> Result<String, u16> {
    let Some(tokens) = get(state).await else { return Err(401) };
    let form =
        format!("grant_type=refresh_token&refresh_token={}", crate::reply::percent_encode(&tokens.refresh_token));
    match token_request(settings, &form).await {
        Ok(answer) => {
            let refreshed =
                SessionTokens::from_token_response(&answer, now_ms() / 1000, Some(&tokens)).ok_or(503_u16)?;
            put(state, &refreshed).await.ok_or(503_u16)?;
            console_log!("{}", event_log("session_refreshed", json!({})));
            Ok(refreshed.access_token)
        }
        Err(Some(status)) => {
            console_log!(
                "{}",
                event_log("session_ended", json!({ "issuer_status": status, "error": "invalid_grant" }))
            );
            if let Ok(promise) = storage_delete_all(state) {
                let _ = JsFuture::from(promise).await;
            }
            Err(401)
        }
        Err(None) => Err(503),
    }
}

/// A POST of `form` to the issuer's token endpoint with the edge's client credentials (HTTP Basic,
/// RFC 6749 §2.3.1): its answer's body. `Err(Some(status))` when the issuer refused the grant
/// itself (`invalid_grant`: the refresh token or code is spent, expired or revoked), `Err(None)`
/// for anything else (unreachable, a 5xx, `invalid_client` while a secret is rotated, 429...): a
/// session ends only on the former.
pub(super) async fn token_request(settings: &SessionSettings, form: &str) -> Result<String, Option<u16>> {
    let response = post_form(settings, &settings.token_endpoint, form).await.ok_or(None)?;
    let status = response.status();
    let body = JsFuture::from(response.text().map_err(|_| None)?).await.map_err(|_| None)?;
    let body = body.as_string().unwrap_or_default();
    match status {
        200 => Ok(body),
        400 if jwks::json::parse(body.as_bytes()).is_ok_and(|answer| answer["error"] == "invalid_grant") => {
            Err(Some(status))
        }
        _ => Err(None),
    }
}

/// Revokes the refresh token (RFC 7009): its whole family, and the access tokens it issued, end
/// at the issuer. A failure is logged; the session is forgotten here anyway.
async fn revoke(settings: &SessionSettings, refresh_token: &str) {
    let form = format!("token={}&token_type_hint=refresh_token", crate::reply::percent_encode(refresh_token));
    let revoked = post_form(settings, &settings.revocation_endpoint, &form).await.is_some_and(|response| response.ok());
    if !revoked {
        console_log!("{}", event_log("session_revocation_failed", json!({})));
    }
}

/// A form POST to the issuer with the edge's client credentials; `None` when it fails.
async fn post_form(settings: &SessionSettings, url: &str, form: &str) -> Option<web_sys::Response> {
    use base64::Engine as _;
    let credentials = format!(
        "{}:{}",
        crate::reply::percent_encode(&settings.client_id),
        crate::reply::percent_encode(&settings.client_secret)
    );
    let made = (|| {
        let headers = web_sys::Headers::new()?;
        headers.set("content-type", "application/x-www-form-urlencoded")?;
        headers.set("accept", "application/json")?;
        headers.set(
            "authorization",
            &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())),
        )?;
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(form));
        init.set_redirect(web_sys::RequestRedirect::Manual);
        init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(10_000)));
        web_sys::Request::new_with_str_and_init(url, &init)
    })();
    let request = match made {
        Ok(request) => request,
        Err(error) => {
            console_log!("{}", event_log("issuer_request_failed", json!({ "reason": js_reason(error) })));
            return None;
        }
    };
    match subrequest(&request).await {
        Ok(response) => Some(response),
        Err(error) => {
            console_log!("{}", event_log("issuer_unreachable", json!({ "reason": js_reason(error), "url": url })));
            None
        }
    }
}
