//! The Worker: the fetch handler and the I/O around the pure decisions. Only built for wasm32.

#[cfg(feature = "bench")]
mod bench;
mod browser;
mod documents;
mod forward;
mod sealing;
mod session_object;
mod sign;
mod webcrypto;

use crate::assertion::{self, AssertionCache};
use crate::config::{Config, ConfigError};
use crate::cors;
use crate::counters::{Allowed, CacheLookups, Counters};
use crate::decision::{self, Identity, Refusal};
use crate::reply::{self, Reply};
use crate::request::{self, ParsedHead, RequestHead, Route};
use crate::revocations::RevocationList;
use crate::session;
use documents::DocumentStore;
use js_sys::futures::JsFuture;
use jwks::{Access, Claims, KeySet, SubjectKind, TokenCache, UntrustedToken, VerifyError};
use serde_json::json;
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};
use webcrypto::WebCrypto;
use worker::{Context, Env, console_error, console_log, event};

/// The per-isolate state: the configuration, read once, the key set and revocation list caches,
/// the tokens verified already, and the counters of what was decided (shared with the fetches).
struct Edge {
    config: Config,
    /// The Worker's bindings (the session objects); `None` in the benchmark.
    env: Option<JsValue>,
    keys: Rc<DocumentStore<KeySet>>,
    revocations: Option<Rc<DocumentStore<RevocationList>>>,
    tokens: RefCell<TokenCache>,
    assertions: RefCell<AssertionCache>,
    counters: Rc<Counters>,
}

thread_local! {
    static EDGE: OnceCell<Result<Rc<Edge>, ConfigError>> = const { OnceCell::new() };
}

/// The current time in Unix milliseconds (`SystemTime::now()` panics on wasm32).
fn now_ms() -> u64 {
    // Date.now() is a whole, non-negative number of milliseconds well within u64.
    js_sys::Date::now().max(0.0) as u64
}

/// A variable's text: a string as it is, any other JSON value (wrangler turns TOML tables and
/// numbers in `[vars]` into JSON) as its JSON text; `None` when unset.
fn env_text(env: &JsValue, name: &str) -> Option<String> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    if let Some(text) = value.as_string() {
        return Some(text);
    }
    js_sys::JSON::stringify(&value).ok().and_then(|text| text.as_string())
}

/// A request that passed: who it is, with which token, and the session cookie to set if its
/// token was refreshed.
struct Authenticated {
    identity: Identity,
    token: String,
    set_cookie: Option<String>,
}

/// The `kid` a token names, for the log.
fn kid_of(token: &str) -> Option<String> {
    UntrustedToken::parse(token).ok().and_then(|parsed| parsed.header().kid.clone())
}

/// What the edge does with a request, decided before any forwarding.
enum Action {
    /// Answer it itself (a refusal is logged already).
    Answer(Reply),
    /// Send it on to the origin: with the identity on a protected route, and with its body or not.
    Forward {
        /// Who the verified token says the caller is, and that token.
        identity: Option<(Identity, String)>,
        /// Whether the request's body goes too.
        body: bool,
        /// A session cookie to set on the answer (its access token was refreshed).
        set_cookie: Option<String>,
    },
    /// Run the benchmark.
    #[cfg(feature = "bench")]
    Bench,
}

impl Edge {
    /// An isolate's state for `config` (and the bindings `env`), with empty caches and counters
    /// at zero.
    fn new(config: Config, env: Option<JsValue>) -> Self {
        let counters = Rc::new(Counters::default());
        let keys = Rc::new(DocumentStore::new(
            &config.jwks_url,
            config.cache,
            Rc::clone(&counters),
            Counters::jwks_fetch,
            webcrypto::retain_only,
        ));
        let revocations = config.revocations.as_ref().map(|settings| {
            Rc::new(DocumentStore::new(
                &settings.url,
                settings.bounds,
                Rc::clone(&counters),
                Counters::revocation_fetch,
                |_| {},
            ))
        });
        let tokens = RefCell::new(TokenCache::new(config.token_cache_entries));
        let assertions = RefCell::new(AssertionCache::new(config.token_cache_entries));
        Self { config, env, keys, revocations, tokens, assertions, counters }
    }

    /// This isolate's state, made on the first request.
    fn for_isolate(env: &Env) -> Result<Rc<Self>, ConfigError> {
        EDGE.with(|cell| {
            cell.get_or_init(|| {
                Config::from_lookup(|name| env_text(env, name))
                    .map(|config| Rc::new(Self::new(config, Some(JsValue::from(env.clone())))))
            })
            .clone()
        })
    }

    /// Routes one request and answers it.
    async fn handle(&self, request: web_sys::Request, ctx: &Context) -> worker::Result<web_sys::Response> {
        let block = read_head(&request);
        let Some(parsed) = ParsedHead::parse(&block) else {
            return Err(worker::Error::RustError("the runtime gave a request without a method or URL".to_owned()));
        };
        let head = parsed.head();
        let cors_headers = cors::response_headers(self.config.cors.as_ref(), &head);
        if head.url_parts().path == session::LOGOUT_PATH
            && let (Some(settings), Some(env)) = (&self.config.session, &self.env)
        {
            return respond(self.logout(settings, &head, &request, env).await);
        }
        match self.decide(&head, ctx).await {
            Action::Answer(mut reply) => {
                // A preflight's answer has its own; any other answer lets an allowed page read it.
                if !reply.headers.iter().any(|(name, _)| name.starts_with("access-control-")) {
                    reply.headers.extend(cors_headers);
                }
                respond(reply)
            }
            Action::Forward { identity, body, set_cookie } => {
                let assertion = match &identity {
                    Some((identity, token)) => match self.assertion(token, identity).await {
                        Ok(assertion) => assertion,
                        Err(reply) => return respond(reply),
                    },
                    None => None,
                };
                let identity = identity.map(|(identity, _)| identity);
                let response =
                    forward::to_origin(&self.config, &head, identity.as_ref(), assertion.as_deref(), &request, body)
                        .await?;
                let mut headers = cors_headers;
                headers.extend(set_cookie.map(|cookie| ("set-cookie", cookie)));
                with_headers(response, &headers)
            }
            #[cfg(feature = "bench")]
            Action::Bench => bench::run(&head, ctx).await,
        }
    }

    /// Everything the edge decides about a request: its route, and for a protected one the token,
    /// the key set, the verification and the roles.
    async fn decide(&self, head: &RequestHead<'_>, ctx: &Context) -> Action {
        let route = request::route(&self.config, head);
        let body = route.forwards_body(head.method);
        match route {
            Route::Status => {
                if !request::bearer_is(head, self.config.status.secret.as_deref())
                    && let Err((refusal, kid)) = self.authenticate(head, &self.config.status.access, None, ctx).await
                {
                    return Action::Answer(self.refuse(head, &refusal, Some(request::STATUS_PATH), kid.as_deref()));
                }
                let (tokens_cached, lookups) = {
                    let tokens = self.tokens.borrow();
                    (tokens.len(), CacheLookups::from(&*tokens))
                };
                let now = now_ms();
                let keys = self.keys.status(now);
                let revocations = self.revocations.as_ref().map_or(serde_json::Value::Null, |store| store.status(now));
                let reuse = self.assertions.borrow().counts();
                Action::Answer(reply::status_reply(
                    &self.config,
                    keys,
                    revocations,
                    tokens_cached,
                    lookups,
                    reuse,
                    &self.counters,
                ))
            }
            Route::AssertionKeys => Action::Answer(reply::assertion_keys_reply(&self.config)),
            Route::ReservedUnknown => Action::Answer(reply::not_found_reply()),
            #[cfg(feature = "bench")]
            Route::Bench => Action::Bench,
            #[cfg(not(feature = "bench"))]
            Route::Bench => Action::Answer(reply::not_found_reply()),
            Route::Preflight => {
                self.counters.allowed(Allowed::Preflight);
                let method = head.preflight_method().unwrap_or_default();
                Action::Answer(cors::preflight_reply(self.config.cors.as_ref(), head, method))
            }
            Route::Public => {
                self.counters.allowed(Allowed::Public);
                Action::Forward { identity: None, body, set_cookie: None }
            }
            Route::Callback => match (&self.config.session, &self.env) {
                (Some(settings), Some(env)) => Action::Answer(self.callback(settings, head, env, ctx).await),
                _ => Action::Answer(reply::not_found_reply()),
            },
            Route::Denied => Action::Answer(self.refuse(head, &Refusal::NoRule, None, None)),
            Route::Protected { access, subject, rule } => match self.authenticate(head, access, subject, ctx).await {
                Ok(Authenticated { identity, token, set_cookie }) => {
                    self.counters.allowed(Allowed::Token);
                    Action::Forward { identity: Some((identity, token)), body, set_cookie }
                }
                Err((refusal, kid)) => {
                    Action::Answer(self.refuse_or_sign_in(head, &refusal, rule, kid.as_deref()).await)
                }
            },
        }
    }

    /// Finds and verifies the token (from `Authorization`, the token cookie, or the browser's
    /// session), checks it against the revocation list (when revocations are checked), then
    /// applies the rule's `access` and the kind of caller it admits (`subject`). On refusal, also
    /// gives the token's `kid` (for the log).
    async fn authenticate(
        &self,
        head: &RequestHead<'_>,
        access: &Access,
        subject: Option<SubjectKind>,
        ctx: &Context,
    ) -> Result<Authenticated, (Refusal, Option<String>)> {
        if let Some(token) = request::credential(head, self.config.token_cookie.as_deref()).token() {
            let verified = self.verify(token, ctx).await?;
            return self.authorize(token, access, subject, verified, ctx, None).await;
        }
        let Some(settings) = &self.config.session else {
            return Err((Refusal::NoToken, None));
        };
        let Some(mut cookie) = self.open_session(settings, head).await else {
            return Err((Refusal::NoToken, None));
        };
        if !session::may_use_session(head, self.config.cors.as_ref()) {
            return Err((Refusal::CrossSiteRequest, None));
        }
        // The cookie's access token while it has more than a few seconds left; else (or when the
        // token was too large for the cookie) the session's object gives the current one,
        // refreshed once for everyone who asks at that moment.
        if !cookie.access_token.is_empty() {
            let verified = self.verify(&cookie.access_token, ctx).await?;
            let now = now_ms() / 1000;
            if verified.as_ref().is_ok_and(|claims| claims.exp > now + session_object::REFRESH_MARGIN_SECS) {
                let token = cookie.access_token;
                return self.authorize(&token, access, subject, verified, ctx, None).await;
            }
        }
        let set_cookie = self.refresh_session(settings, &mut cookie).await.map_err(|refusal| (refusal, None))?;
        let token = cookie.access_token;
        let verified = self.verify(&token, ctx).await?;
        self.authorize(&token, access, subject, verified, ctx, set_cookie).await
    }

    /// Verifies `token` with the key set (refetched once for an unknown `kid`, within the
    /// cooldown). `Err` only when no key set can be had.
    async fn verify(
        &self,
        token: &str,
        ctx: &Context,
    ) -> Result<Result<Claims, VerifyError>, (Refusal, Option<String>)> {
        let Some(keys) = Rc::clone(&self.keys).for_request(ctx).await else {
            return Err((Refusal::KeysUnavailable, kid_of(token)));
        };
        let validator = &self.config.validator;
        let validate = |keys: Rc<jwks::KeySet>| async move {
            validator.validate_async_cached(token, &keys, &WebCrypto, now_ms() / 1000, &self.tokens).await
        };
        let mut verified = validate(keys).await;
        if matches!(&verified, Err(error) if error.is_unknown_kid())
            && let Some(refetched) = self.keys.refetch_for_unknown_kid().await
        {
            verified = validate(refetched).await;
        }
        Ok(verified)
    }

    /// The revocation list, the rule's `access` and its `subject` applied to the outcome of
    /// verifying `token`; `set_cookie` goes with a pass.
    async fn authorize(
        &self,
        token: &str,
        access: &Access,
        subject: Option<SubjectKind>,
        verified: Result<Claims, VerifyError>,
        ctx: &Context,
        set_cookie: Option<String>,
    ) -> Result<Authenticated, (Refusal, Option<String>)> {
        let revocations = match &self.revocations {
            Some(store) if verified.is_ok() => match Rc::clone(store).for_request(ctx).await {
                Some(list) => Some(list),
                None => return Err((Refusal::RevocationsUnavailable, kid_of(token))),
            },
            _ => None,
        };
        let identity = decision::authorize(access, subject, verified, revocations.as_deref())
            .map_err(|refusal| (refusal, kid_of(token)))?;
        Ok(Authenticated { identity, token: token.to_owned(), set_cookie })
    }

    /// Logs a refusal and answers it; but a browser's navigation without a usable session, when
    /// the edge runs sessions, goes to sign in instead. A session that has ended loses its cookie.
    async fn refuse_or_sign_in(
        &self,
        head: &RequestHead<'_>,
        refusal: &Refusal,
        rule: &str,
        kid: Option<&str>,
    ) -> Reply {
        let bearer =
            matches!(request::credential(head, self.config.token_cookie.as_deref()), request::Credential::Bearer(_));
        let mut reply = match &self.config.session {
            Some(settings) if !bearer && refusal.needs_sign_in() && head.is_browser_navigation() => {
                self.note_refusal(head, refusal, Some(rule), kid);
                self.begin_sign_in(settings, head).await
            }
            _ => self.refuse(head, refusal, Some(rule), kid),
        };
        if *refusal == Refusal::SessionEnded {
            reply.headers.push(("set-cookie", session::clear_cookie(session::SESSION_COOKIE)));
        }
        reply
    }

    /// The assertion for a request forwarded with `identity`: `None` without assertion keys; the
    /// one made for the same token while it has most of its life left; otherwise a new one,
    /// signed with WebCrypto. When it cannot be signed (the key does not import), an error answer:
    /// forwarding without it would only be refused by the origin.
    async fn assertion(&self, token: &str, identity: &Identity) -> Result<Option<String>, Reply> {
        let Some(settings) = &self.config.assertion else { return Ok(None) };
        let now = now_ms() / 1000;
        if let Some(reused) = self.assertions.borrow_mut().get(token, now) {
            return Ok(Some(reused));
        }
        let unsigned = || {
            console_error!("{}", reply::event_log("assertion_not_signed", json!({ "kid": settings.signer.kid })));
            reply::internal_error_reply()
        };
        let jti = sign::random_id().ok_or_else(unsigned)?;
        let (input, exp) = assertion::to_sign(settings, &self.config.origin_url, identity, &jti, now);
        let signature = sign::sign_es256(&settings.signer, input.as_bytes()).await.ok_or_else(unsigned)?;
        let signed = jwks::assertion::compact(&input, &signature);
        self.assertions.borrow_mut().insert(token, signed.clone(), now, exp);
        Ok(Some(signed))
    }

    /// Logs a refusal (one line), counts it under the same code, and gives its answer.
    fn refuse(&self, head: &RequestHead<'_>, refusal: &Refusal, rule: Option<&str>, kid: Option<&str>) -> Reply {
        self.note_refusal(head, refusal, rule, kid);
        reply::refusal_reply(&self.config, head, refusal)
    }

    /// Logs a refusal (one line) and counts it under the same code.
    fn note_refusal(&self, head: &RequestHead<'_>, refusal: &Refusal, rule: Option<&str>, kid: Option<&str>) {
        console_log!("{}", reply::refusal_log(head, refusal, rule, kid));
        self.counters.refused(refusal.code());
    }
}

// The edge reads a request's method, URL and the few headers it decides on in one call, and the
// origin's request is a copy of the client's with the edge's header edits applied in one call.
// Measured in workerd, iterating a request's headers costs about 0.5 us per header, and building
// the origin's request from a list of headers several times what copying the client's costs.
#[wasm_bindgen(inline_js = r#"
export function readHead(request, names) {
  const headers = request.headers;
  let block = request.method + "\n" + request.url + "\n";
  for (const name of names) {
    const value = headers.get(name);
    if (value !== null) block += name + "\n" + value + "\n";
  }
  return block;
}
export function withHeaders(response, plan) {
  const copy = new Response(response.body, response);
  const lines = plan.split("\n");
  for (let i = 0; i + 1 < lines.length; i += 2) {
    if (lines[i] === "set-cookie") copy.headers.append(lines[i], lines[i + 1]);
    else copy.headers.set(lines[i], lines[i + 1]);
  }
  return copy;
}
export function headerNames(request) {
  let block = "";
  for (const name of request.headers.keys()) block += name + "\n";
  return block;
}
export function outboundRequest(incoming, withBody, noStore, plan) {
  const lines = plan.split("\n");
  const target = lines[0];
  const outbound = !noStore && incoming.redirect === "manual" && (withBody || incoming.body === null)
    ? new Request(target, incoming)
    : new Request(target, {
        method: incoming.method,
        headers: incoming.headers,
        body: withBody ? incoming.body : null,
        redirect: "manual",
        ...(noStore ? { cache: "no-store" } : {}),
      });
  const headers = outbound.headers;
  let i = 1;
  for (; i < lines.length && lines[i] !== ""; i++) headers.delete(lines[i]);
  for (i++; i + 1 < lines.length; i += 2) headers.set(lines[i], lines[i + 1]);
  return outbound;
}
"#)]
extern "C" {
    /// `method\nurl\n`, then `name\nvalue\n` for each header of `names` the request has (see
    /// [`ParsedHead::parse`]).
    #[wasm_bindgen(js_name = readHead)]
    fn read_head_js(request: &web_sys::Request, names: &js_sys::Array) -> String;
    /// A copy of `response` with the headers of `plan` (`name\nvalue\n` each) set.
    #[wasm_bindgen(js_name = withHeaders, catch)]
    fn with_headers_js(response: &web_sys::Response, plan: &str) -> Result<web_sys::Response, JsValue>;
    /// The names of the request's headers, `name\n` each.
    #[wasm_bindgen(js_name = headerNames)]
    fn header_names(request: &web_sys::Request) -> String;
    /// A copy of `incoming` for the target of `plan` (method, headers, the body when
    /// `with_body`, redirects not followed, with `cache: "no-store"` when `no_store`: no cache on
    /// the way keeps an answer made for one user) with the header edits of `plan` applied (see
    /// [`crate::headers::HeaderEdits::plan`]).
    #[wasm_bindgen(js_name = outboundRequest, catch)]
    fn outbound_request_js(
        incoming: &web_sys::Request,
        with_body: bool,
        no_store: bool,
        plan: &str,
    ) -> Result<web_sys::Request, JsValue>;
}

thread_local! {
    /// [`request::DECISION_HEADERS`] as a JavaScript array, made once.
    static DECISION_NAMES: js_sys::Array =
        request::DECISION_HEADERS.iter().map(|name| JsValue::from_str(name)).collect();
}

/// The request's method, URL and the headers the edge decides on, as one block.
fn read_head(request: &web_sys::Request) -> String {
    DECISION_NAMES.with(|names| read_head_js(request, names))
}

#[wasm_bindgen]
extern "C" {
    /// The runtime's global `fetch` (workerd's global is not a `WorkerGlobalScope`).
    #[wasm_bindgen(js_name = fetch, catch)]
    fn global_fetch(request: &web_sys::Request) -> Result<js_sys::Promise, JsValue>;
}

/// Sends a subrequest with the runtime's `fetch`.
async fn subrequest(request: &web_sys::Request) -> Result<web_sys::Response, JsValue> {
    let response = JsFuture::from(global_fetch(request)?).await?;
    Ok(response.unchecked_into())
}

/// A JavaScript error's message, for logs.
fn js_reason(error: JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| "unknown JavaScript error".to_owned())
}

/// The origin's `response`, with `headers` added (none: the response as it is).
fn with_headers(response: web_sys::Response, headers: &[(&'static str, String)]) -> worker::Result<web_sys::Response> {
    if headers.is_empty() {
        return Ok(response);
    }
    let plan: String = headers.iter().map(|(name, value)| format!("{name}\n{value}\n")).collect();
    Ok(with_headers_js(&response, &plan)?)
}

/// A response the edge makes itself: never stored by caches.
fn respond(reply: Reply) -> worker::Result<web_sys::Response> {
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", reply.content_type())?;
    headers.set("cache-control", "no-store")?;
    for (name, value) in &reply.headers {
        // Several cookies may be set; every other header is one value (its own wins).
        if *name == "set-cookie" {
            headers.append(name, value)?;
        } else {
            headers.set(name, value)?;
        }
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(reply.status);
    init.set_headers(&headers);
    // A 204 has no body at all (the runtime refuses even an empty one).
    let body = (!reply.body.is_empty()).then_some(reply.body.as_str());
    Ok(web_sys::Response::new_with_opt_str_and_init(body, &init)?)
}

/// The Worker's entry point: the isolate's state, then [`Edge::handle`]. A bad configuration
/// answers every request with a generic 500 and logs which variable is wrong; so does any other
/// error, with one structured log line.
#[event(fetch)]
async fn fetch(request: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    match Edge::for_isolate(&env) {
        Ok(edge) => match edge.handle(request, &ctx).await {
            Ok(response) => Ok(response),
            Err(error) => {
                console_error!("{}", reply::event_log("internal_error", json!({ "reason": error.to_string() })));
                respond(reply::internal_error_reply())
            }
        },
        Err(error) => {
            console_error!("{}", reply::config_error_log(&error));
            respond(reply::config_error_reply())
        }
    }
}
