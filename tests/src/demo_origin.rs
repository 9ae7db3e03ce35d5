//! The demo origin: an axum app that sits behind the edge Worker, echoes the identity the edge
//! vouched for, and keeps a few secret messages per user.
//!
//! It trusts a signature, not the network: every `/api/*` request must carry the edge's assertion
//! (`X-Portcullis-Assertion`, one, a compact JWS), which it verifies with the `jwks` crate
//! ([`ClaimsOptions::edge_assertion`]: `typ` `portcullis-assertion+jwt`, `iss` the edge, `aud`
//! this origin, short-lived) against the keys the edge publishes at `/_portcullis/jwks.json`. The
//! identity it answers with comes from the assertion only; the edge's `X-Auth-*` headers are hints
//! it ignores. Without a valid assertion: 401 with a short JSON body (the reason goes to stderr).
//!
//! The keys ([`EdgeKeys`]) are fetched on first use (the origin may start before the edge), kept
//! for the `max-age` the edge's JWKS answer gives (default 300 s), and fetched again when an
//! assertion names an unknown `kid`, at most once per [`EdgeSettings::refetch_cooldown`]: a
//! key the edge has just published is picked up, a stream of forged `kid`s costs one fetch per
//! cooldown. A fetch that fails keeps the keys it had.
//!
//! It answers CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, which the
//! edge lets through without a token or an assertion) with 200, allowing the caller's origin, `GET`
//! and `POST`, and the `Authorization` and `Content-Type` headers.
//!
//! | route | policy in `wrangler.toml` | answer |
//! |---|---|---|
//! | `GET /public/hello` | public | a greeting, no identity (the edge sends no assertion) |
//! | `GET /api/me` | authenticated | the identity of the assertion |
//! | `GET /api/messages` | authenticated | the caller's messages |
//! | `POST /api/messages` | authenticated | adds a message (text body, at most 1 KiB) |
//! | `GET /api/admin/messages` | role `admin` | how many messages each user has |
//! | `GET /api/page` | authenticated | an HTML page: who is signed in, their messages, a logout button |
//! | `GET /public/signed-out` | public | an HTML page to land on after a logout |
//!
//! `/api/page` is for a browser the edge has signed in (README.md, "Browser sessions"): its logout
//! button is a form that POSTs to the edge's `/_portcullis/logout` with the field `csrf`, the value
//! of the edge's `__Host-portcullis-edge-csrf` cookie, which the edge forwards to the origin (its session
//! cookie it keeps). Without that cookie (a bearer token) the page has no logout button. Every
//! value on the page is HTML-escaped.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, body::Bytes};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jwks::{ClaimsOptions, KeySet, KeySetLimits, P256Verifier, SubjectKind, Validator, VerifyError};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The edge's cookie with a browser session's CSRF token, for the logout form of the site's pages.
pub const EDGE_CSRF_COOKIE: &str = "__Host-portcullis-edge-csrf";

/// Where the edge ends a browser session: a same-origin form POST with the field `csrf`.
pub const EDGE_LOGOUT_PATH: &str = "/_portcullis/logout";

/// The most bytes one message may have.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The most messages one user keeps (older ones are dropped).
pub const MAX_MESSAGES_PER_USER: usize = 20;

pub use jwks::assertion::{ASSERTION_HEADER, DEFAULT_ASSERTION_ISSUER};

/// The least time between two fetches of the edge's keys, unless configured.
pub const DEFAULT_REFETCH_COOLDOWN: Duration = Duration::from_secs(5);

/// How long fetched keys are used before they are fetched again, when the answer gives no
/// `max-age` (the edge's gives 300 s).
pub const DEFAULT_KEYS_MAX_AGE: Duration = Duration::from_secs(300);

/// The longest a `max-age` is followed.
const MAX_KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long a fetch of the keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Messages by subject.
#[derive(Clone, Default)]
pub struct Messages {
    by_subject: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Messages {
    /// A store with a message for the demo users `alice` and `admin`.
    pub fn seeded() -> Self {
        let messages = Self::default();
        messages.add("alice", "the coffee machine on floor 3 works again");
        messages.add("admin", "rotate the keys before the audit");
        messages
    }

    fn add(&self, subject: &str, message: &str) {
        let mut by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        let list = by_subject.entry(subject.to_owned()).or_default();
        list.push(message.to_owned());
        if list.len() > MAX_MESSAGES_PER_USER {
            list.remove(0);
        }
    }

    fn of(&self, subject: &str) -> Vec<String> {
        let by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        by_subject.get(subject).cloned().unwrap_or_default()
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let by_subject = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        by_subject.iter().map(|(subject, list)| (subject.clone(), list.len())).collect()
    }
}

/// Whom the origin trusts to vouch for callers, and where their keys are.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The edge's published keys, `http://.../_portcullis/jwks.json` (plain http only: the demo
    /// origin and the edge run on one machine).
    pub jwks_url: Uri,
    /// The `iss` of its assertions (the edge's `ASSERTION_ISSUER`).
    pub issuer: String,
    /// This origin, the `aud` its assertions must have: exactly the edge's `ORIGIN_URL`.
    pub origin: String,
    /// The least time between two fetches of the keys.
    pub refetch_cooldown: Duration,
}

impl EdgeSettings {
    /// Settings with the default cooldown; `jwks_url` must be an `http://` URL.
    pub fn new(jwks_url: &str, issuer: &str, origin: &str) -> Result<Self, String> {
        let jwks_url: Uri = jwks_url.parse().map_err(|_| format!("{jwks_url:?} is not a URL"))?;
        if jwks_url.scheme_str() != Some("http") || jwks_url.host().is_none() {
            return Err(format!("{jwks_url} is not an http:// URL (the demo origin fetches over plain http)"));
        }
        if issuer.is_empty() || origin.is_empty() {
            return Err("the edge issuer and the origin URL must not be empty".to_owned());
        }
        Ok(Self {
            jwks_url,
            issuer: issuer.to_owned(),
            origin: origin.to_owned(),
            refetch_cooldown: DEFAULT_REFETCH_COOLDOWN,
        })
    }
}

/// The identity an assertion vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller (`sub`).
    pub subject: String,
    /// The caller's roles.
    pub roles: Vec<String>,
    /// The edge that signed the assertion (`iss`).
    pub edge: String,
    /// The assertion's id (`jti`).
    pub assertion_id: Option<String>,
    /// The access token's id (`token_jti`), for tracing.
    pub token_id: Option<String>,
    /// A user, or a service (`gty` `client-credentials`, as the access token said).
    pub kind: SubjectKind,
}

/// Why a request has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `X-Portcullis-Assertion`.
    #[error("no assertion")]
    Missing,
    /// The header more than once, or not as text.
    #[error("the assertion header is repeated or not text")]
    Malformed,
    /// The assertion did not verify.
    #[error("the assertion: {0}")]
    Invalid(#[from] VerifyError),
    /// A valid assertion without a subject.
    #[error("the assertion names no subject")]
    NoSubject,
}

/// The edge's published keys, fetched lazily and cached; verifies assertions against them.
pub struct EdgeKeys {
    settings: EdgeSettings,
    validator: Validator,
    client: HyperClient<HttpConnector, Empty<Bytes>>,
    /// Held across a fetch, so that requests that need one wait for the same fetch.
    cached: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    keys: Arc<KeySet>,
    /// When the keys need fetching again; `None` before the first good fetch.
    fresh_until: Option<Instant>,
    /// The last fetch, good or not.
    last_attempt: Option<Instant>,
}

impl EdgeKeys {
    /// Keys to be fetched from `settings.jwks_url` on first use.
    pub fn new(settings: EdgeSettings) -> Self {
        let validator = Validator::new(ClaimsOptions::edge_assertion(&settings.issuer, &settings.origin));
        let client = HyperClient::builder(TokioExecutor::new()).build_http();
        Self { settings, validator, client, cached: tokio::sync::Mutex::default() }
    }

    /// The identity a request's assertion vouches for.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identity, Refusal> {
        let mut values = headers.get_all(ASSERTION_HEADER).iter();
        let assertion = match (values.next(), values.next()) {
            (None, _) => return Err(Refusal::Missing),
            (Some(value), None) => value.to_str().map_err(|_| Refusal::Malformed)?,
            (Some(_), Some(_)) => return Err(Refusal::Malformed),
        };
        self.verify(assertion).await
    }

    /// Verifies `assertion` now: against the cached keys, and once more after a refetch when it
    /// names a `kid` they lack (if the cooldown allows one).
    pub async fn verify(&self, assertion: &str) -> Result<Identity, Refusal> {
        let keys = self.current().await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let claims = match self.validator.validate(assertion, &keys, &P256Verifier, now) {
            Err(error) if error.is_unknown_kid() => match self.refetched(&keys).await {
                Some(keys) => self.validator.validate(assertion, &keys, &P256Verifier, now)?,
                None => return Err(error.into()),
            },
            verified => verified?,
        };
        // The payload that just verified, read once more for the one claim `Claims` leaves out.
        let token_id = assertion
            .split('.')
            .nth(1)
            .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
            .and_then(|payload| serde_json::from_slice::<Value>(&payload).ok())
            .and_then(|payload| payload.get("token_jti").and_then(Value::as_str).map(str::to_owned));
        let kind = claims.subject_kind();
        Ok(Identity {
            kind,
            subject: claims.sub.filter(|subject| !subject.is_empty()).ok_or(Refusal::NoSubject)?,
            roles: claims.roles,
            edge: claims.iss,
            assertion_id: claims.jti,
            token_id,
        })
    }

    /// The keys, fetched first if there are none yet or they are past their `max-age` (and the
    /// cooldown allows a fetch).
    async fn current(&self) -> Arc<KeySet> {
        let mut cached = self.cached.lock().await;
        let stale = cached.fresh_until.is_none_or(|until| Instant::now() >= until);
        if stale && self.may_fetch(&cached) {
            self.fetch(&mut cached).await;
        }
        Arc::clone(&cached.keys)
    }

    /// Newer keys than `seen`, after an unknown `kid`: those another request fetched meanwhile,
    /// or a fetch now if the cooldown allows it; `None` when there are none.
    async fn refetched(&self, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let mut cached = self.cached.lock().await;
        if Arc::ptr_eq(&cached.keys, seen) && self.may_fetch(&cached) {
            self.fetch(&mut cached).await;
        }
        (!Arc::ptr_eq(&cached.keys, seen)).then(|| Arc::clone(&cached.keys))
    }

    fn may_fetch(&self, cached: &Cached) -> bool {
        cached.last_attempt.is_none_or(|last| last.elapsed() >= self.settings.refetch_cooldown)
    }

    async fn fetch(&self, cached: &mut Cached) {
        cached.last_attempt = Some(Instant::now());
        let url = &self.settings.jwks_url;
        match tokio::time::timeout(FETCH_TIMEOUT, self.get_keys()).await {
            Ok(Ok((keys, max_age))) => {
                eprintln!("demo-origin: {} edge key(s) from {url}, for {}s", keys.len(), max_age.as_secs());
                for skipped in keys.skipped() {
                    eprintln!("demo-origin: {url}: {skipped}");
                }
                cached.keys = Arc::new(keys);
                cached.fresh_until = Some(Instant::now() + max_age);
            }
            Ok(Err(error)) => eprintln!("demo-origin: the edge's keys from {url}: {error}; keeping the keys it had"),
            Err(_) => eprintln!("demo-origin: the edge's keys from {url}: no answer within {FETCH_TIMEOUT:?}"),
        }
    }

    /// `GET jwks_url`: the key set and how long to keep it.
    async fn get_keys(&self) -> Result<(KeySet, Duration), String> {
        let response = self.client.get(self.settings.jwks_url.clone()).await.map_err(|error| error.to_string())?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err("404: the edge publishes no assertion keys (is ASSERTION_KEYS set?)".to_owned());
        }
        if status != StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let max_age = max_age(response.headers()).unwrap_or(DEFAULT_KEYS_MAX_AGE);
        let limit = KeySetLimits::default().max_bytes;
        let body = Limited::new(response.into_body(), limit).collect().await.map_err(|error| error.to_string())?;
        let keys = KeySet::parse(&body.to_bytes()).map_err(|error| error.to_string())?;
        Ok((keys, max_age))
    }
}

/// `Cache-Control: max-age=N`, within [`MAX_KEYS_MAX_AGE`].
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    let seconds = value.split(',').find_map(|directive| directive.trim().strip_prefix("max-age="))?;
    Some(Duration::from_secs(seconds.trim().parse().ok()?).min(MAX_KEYS_MAX_AGE))
}

/// Lets a request through with the [`Identity`] of its assertion; 401 without one.
async fn require_assertion(State(edge): State<Arc<EdgeKeys>>, mut request: Request, next: Next) -> Response {
    match edge.identify(request.headers()).await {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(refusal) => {
            eprintln!("demo-origin: refused {} {}: {refusal}", request.method(), request.uri().path());
            let body = json!({"error": "no valid assertion from the edge: call this through the edge"});
            (StatusCode::UNAUTHORIZED, Json(body)).into_response()
        }
    }
}

async fn hello() -> Json<Value> {
    Json(json!({"message": "hello from the demo origin; this route is public"}))
}

async fn me(Extension(identity): Extension<Identity>) -> Json<Value> {
    Json(json!({
        "subject": identity.subject,
        "roles": identity.roles,
        "edge": identity.edge,
        "token_id": identity.token_id,
        "assertion_id": identity.assertion_id,
        "subject_type": identity.kind.as_str(),
    }))
}

/// `GET /api/page`: who is signed in, as HTML, with a logout button when the browser has a session
/// at the edge.
async fn page(
    State(messages): State<Messages>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    let csrf = request_cookie(&headers, EDGE_CSRF_COOKIE);
    // Without the cookie in the request, a script looks for it in `document.cookie`.
    let nonce = if csrf.is_none() { script_nonce() } else { None };
    let html = signed_in_html(&identity, &messages.of(&identity.subject), csrf, nonce.as_deref());
    html_page(&html, nonce.as_deref())
}

/// `GET /public/signed-out`: where a logout ends.
async fn signed_out() -> Response {
    html_page(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head>\n\
         <body><h1>Signed out</h1><p>You are signed out of this site and of the issuer. \
         <a href=\"/api/page\">Sign in again</a></p></body></html>\n",
        None,
    )
}

/// An HTML answer: not cached, no styles or frames, and no scripts but the one with `nonce`.
fn html_page(html: &str, nonce: Option<&str>) -> Response {
    // No `form-action`: the logout form's answer redirects on to the issuer.
    let mut policy = "default-src 'none'; frame-ancestors 'none'".to_owned();
    if let Some(nonce) = nonce {
        policy.push_str(&format!("; script-src 'nonce-{nonce}'"));
    }
    let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, policy),
        ],
        html.to_owned(),
    )
        .into_response()
}

/// A new nonce for a page's script (16 random bytes, base64url); `None` if there is no randomness.
fn script_nonce() -> Option<String> {
    use std::io::Read as _;
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The page of a signed-in caller. Its logout button posts the edge's CSRF token: from the
/// request's cookie, or else (a request that came without it) from `document.cookie` by the script
/// of `nonce`, which shows the button only if it finds the cookie (a bearer token has none).
fn signed_in_html(identity: &Identity, messages: &[String], csrf: Option<&str>, nonce: Option<&str>) -> String {
    let subject = escape_html(&identity.subject);
    let roles = if identity.roles.is_empty() {
        "none".to_owned()
    } else {
        identity.roles.iter().map(|role| escape_html(role)).collect::<Vec<_>>().join(", ")
    };
    let messages = if messages.is_empty() {
        "<p>No messages.</p>".to_owned()
    } else {
        let items: String = messages.iter().map(|message| format!("<li>{}</li>", escape_html(message))).collect();
        format!("<ul>{items}</ul>")
    };
    let form = |hidden: &str, csrf: &str| {
        format!(
            "<form id=\"logout\" method=\"post\" action=\"{EDGE_LOGOUT_PATH}\"{hidden}>\
             <input type=\"hidden\" id=\"csrf\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            escape_html(csrf)
        )
    };
    let logout = match (csrf, nonce) {
        (Some(csrf), _) => form("", csrf),
        (None, nonce) => {
            let script = nonce.map_or_else(String::new, |nonce| {
                format!(
                    "\n<script nonce=\"{}\">\
                     const name = \"{EDGE_CSRF_COOKIE}=\";\
                     const pair = document.cookie.split(\"; \").find((pair) => pair.startsWith(name));\
                     if (pair) {{ document.getElementById(\"csrf\").value = pair.slice(name.length);\
                     document.getElementById(\"logout\").hidden = false;\
                     document.getElementById(\"no-session\").hidden = true; }}</script>",
                    escape_html(nonce)
                )
            });
            format!(
                "<p id=\"no-session\">No browser session at the edge (a bearer token?): nothing to log out of here.</p>\n{}{script}",
                form(" hidden", "")
            )
        }
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed in as {subject}</title></head>\n\
         <body><h1>Signed in as <span id=\"subject\">{subject}</span></h1>\n\
         <p>Roles: <span id=\"roles\">{roles}</span>; a {kind}, vouched for by the edge {edge} \
         (its signed assertion, checked by this origin).</p>\n<h2>Messages</h2>\n{messages}\n{logout}\n</body></html>\n",
        kind = escape_html(identity.kind.as_str()),
        edge = escape_html(&identity.edge),
    )
}

/// `text` safe in HTML text and in a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The value of the first cookie `name` of the request's `Cookie` headers.
fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key.trim() == name).then(|| value.trim()))
        .filter(|value| !value.is_empty())
}

async fn list_messages(State(messages): State<Messages>, Extension(identity): Extension<Identity>) -> Json<Value> {
    Json(json!({"subject": identity.subject, "messages": messages.of(&identity.subject)}))
}

async fn add_message(
    State(messages): State<Messages>,
    Extension(identity): Extension<Identity>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "the message must be UTF-8 text"}))).into_response();
    };
    let text = text.trim();
    if text.is_empty() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "the message is empty"}))).into_response();
    }
    messages.add(&identity.subject, text);
    (StatusCode::CREATED, Json(json!({"subject": identity.subject, "messages": messages.of(&identity.subject)})))
        .into_response()
}

/// The admin route checks the role itself: an assertion is not bound to a path, so the edge's
/// route policy alone would leave it to whoever can reach the origin with any user's assertion.
async fn message_counts(State(messages): State<Messages>, Extension(identity): Extension<Identity>) -> Response {
    if !identity.roles.iter().any(|role| role == "admin") {
        return (StatusCode::FORBIDDEN, Json(json!({"error": "the admin role is required"}))).into_response();
    }
    Json(json!({"messages_by_user": messages.counts()})).into_response()
}

/// Answers a CORS preflight itself; lets every other request through.
async fn preflight(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).cloned();
    let preflight = request.method() == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    match origin {
        Some(origin) if preflight => (
            StatusCode::OK,
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST")),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type")),
                (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
                (header::VARY, HeaderValue::from_static("origin")),
            ],
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// The demo origin's routes: `/api/*` only with a valid assertion from the edge of `edge`.
pub fn app(messages: Messages, edge: Arc<EdgeKeys>) -> Router {
    let api = Router::new()
        .route("/api/me", get(me))
        .route("/api/messages", get(list_messages).post(add_message))
        .route("/api/admin/messages", get(message_counts))
        .route("/api/page", get(page))
        .route_layer(middleware::from_fn_with_state(edge, require_assertion));
    Router::new()
        .route("/public/hello", get(hello))
        .route("/public/signed-out", get(signed_out))
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn(preflight))
        .with_state(messages)
}
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use jwks::assertion::{AssertionClaims, compact, signing_input};
    use jwks::{JwkSet, PublicKey};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use tower::ServiceExt as _;

    const EDGE: &str = "portcullis-edge";
    const ORIGIN: &str = "http://127.0.0.1:3000";

    /// An edge key: the signing half, and its `kid` (thumbprint).
    struct EdgeKey {
        signing: SigningKey,
        kid: String,
    }

    fn edge_key(seed: u8) -> EdgeKey {
        let signing = SigningKey::from_slice(&[seed; 32]).expect("a scalar");
        let kid = PublicKey::from(signing.verifying_key()).thumbprint().to_owned();
        EdgeKey { signing, kid }
    }

    /// The JWKS the edge publishes for `keys`.
    fn published(keys: &[&EdgeKey]) -> String {
        let keys = keys
            .iter()
            .map(|key| {
                let mut jwk = PublicKey::from(key.signing.verifying_key()).to_jwk();
                jwk.kid = Some(key.kid.clone());
                jwk.alg = Some("ES256".to_owned());
                jwk.key_use = Some("sig".to_owned());
                jwk
            })
            .collect();
        serde_json::to_string(&JwkSet { keys }).expect("JSON")
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
    }

    /// Alice's claims, issued now for 60 s.
    fn claims(roles: &[String]) -> AssertionClaims<'_> {
        AssertionClaims {
            iss: EDGE,
            aud: ORIGIN,
            sub: Some("alice"),
            roles,
            jti: "assertion-1",
            iat: now(),
            exp: now() + 60,
            token_jti: Some("token-1"),
            gty: None,
        }
    }

    /// An assertion as the edge makes it (WebCrypto's raw `r || s` there, p256's here).
    fn assert_as(key: &EdgeKey, claims: &AssertionClaims<'_>) -> String {
        let input = signing_input(&key.kid, claims);
        let signature: Signature = key.signing.sign(input.as_bytes());
        compact(&input, &signature.to_bytes().into())
    }

    /// Any JWS under `key`: header and claims as given.
    fn jws(key: &EdgeKey, header: &Value, claims: &Value) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature: Signature = key.signing.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// The edge's `/_portcullis/jwks.json`: 404 until keys are set (no `ASSERTION_KEYS`), with a
    /// count of the fetches.
    #[derive(Clone, Default)]
    struct Edge {
        jwks: Arc<Mutex<Option<String>>>,
        max_age: Arc<AtomicU64>,
        fetches: Arc<AtomicUsize>,
    }

    impl Edge {
        /// Serves on a free port; returns it with its JWKS URL.
        async fn start() -> (Self, String) {
            let edge = Self::default();
            edge.max_age.store(300, Ordering::SeqCst);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let url = format!("http://{}/_portcullis/jwks.json", listener.local_addr().expect("address"));
            let app = Router::new().route("/_portcullis/jwks.json", get(Self::serve)).with_state(edge.clone());
            tokio::spawn(axum::serve(listener, app).into_future());
            (edge, url)
        }

        async fn serve(State(edge): State<Self>) -> Response {
            edge.fetches.fetch_add(1, Ordering::SeqCst);
            let cache_control = format!("public, max-age={}", edge.max_age.load(Ordering::SeqCst));
            match edge.jwks.lock().expect("lock").clone() {
                Some(jwks) => ([(header::CACHE_CONTROL, cache_control)], jwks).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }

        fn publish(&self, keys: &[&EdgeKey]) {
            *self.jwks.lock().expect("lock") = Some(published(keys));
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    /// The demo origin, trusting `edge`'s published keys.
    fn origin(url: &str, cooldown: Duration) -> (Router, Arc<EdgeKeys>) {
        let mut settings = EdgeSettings::new(url, EDGE, ORIGIN).expect("settings");
        settings.refetch_cooldown = cooldown;
        let keys = Arc::new(EdgeKeys::new(settings));
        (app(Messages::seeded(), Arc::clone(&keys)), keys)
    }

    async fn call(app: &Router, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.clone().oneshot(request.body(Body::from(body.to_owned())).expect("request")).await;
        let response = response.expect("an answer");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `GET path` with `headers`: the status, the headers and the body as text.
    async fn get_text(app: &Router, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let request =
            headers.iter().fold(Request::builder().uri(path), |request, (name, value)| request.header(*name, *value));
        let response = app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("an answer");
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, headers, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn the_page_shows_who_is_signed_in_with_a_logout_button() {
        let (edge, url) = Edge::start().await;
        let key = edge_key(1);
        edge.publish(&[&key]);
        let (app, _) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        let roles = ["reader".to_owned(), "writer".to_owned()];
        let alice = assert_as(&key, &claims(&roles));
        let csrf = "c2VjcmV0LWNzcmYtdG9rZW4tb2YtdGhlLXNlc3Npb24";
        // The edge forwards its CSRF cookie among the site's own (its session cookie it keeps).
        let cookie = format!("theme=dark; {EDGE_CSRF_COOKIE}={csrf}; lang=en");
        let (status, headers, html) =
            get_text(&app, "/api/page", &[(ASSERTION_HEADER, &alice), ("cookie", &cookie)]).await;
        assert_eq!(
            (status, headers[header::CONTENT_TYPE].to_str().ok()),
            (200, Some("text/html; charset=utf-8")),
            "{html}"
        );
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], "default-src 'none'; frame-ancestors 'none'");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(html.contains(r#"Signed in as <span id="subject">alice</span>"#), "{html}");
        assert!(html.contains(r#"<span id="roles">reader, writer</span>"#), "{html}");
        assert!(html.contains("<li>the coffee machine on floor 3 works again</li>"), "her messages: {html}");
        let form = format!(
            r#"<form id="logout" method="post" action="/_portcullis/logout"><input type="hidden" id="csrf" name="csrf" value="{csrf}">"#
        );
        assert!(html.contains(&form) && !html.contains("<script"), "{html}");

        // Without the edge's CSRF cookie in the request (a bearer token's, say): the button
        // hidden, and a script that
        // shows it with the cookie's value if `document.cookie` has one; the only script allowed.
        let others = [
            "theme=dark".to_owned(),
            format!("{EDGE_CSRF_COOKIE}="),
            format!("x{EDGE_CSRF_COOKIE}=abc"),
            // The issuer's own CSRF cookie, should it share the host: not the edge's.
            "__Host-portcullis-csrf=abc".to_owned(),
        ];
        let mut nonces = Vec::new();
        for cookie in &others {
            let (status, headers, html) =
                get_text(&app, "/api/page", &[(ASSERTION_HEADER, &alice), ("cookie", cookie)]).await;
            assert_eq!(status, 200);
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("text");
            let nonce = policy.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).expect("a nonce");
            assert_eq!(nonce.len(), 22, "{policy}");
            assert!(
                html.contains(&format!("<script nonce=\"{nonce}\">const name = \"{EDGE_CSRF_COOKIE}=\";")),
                "{html}"
            );
            assert!(html.contains(r#"<form id="logout" method="post" action="/_portcullis/logout" hidden>"#), "{html}");
            assert!(html.contains(r#"name="csrf" value="">"#) && html.contains("nothing to log out of"), "{html}");
            nonces.push(nonce.to_owned());
        }
        nonces.dedup();
        assert_eq!(nonces.len(), others.len(), "a new nonce each time");
        let (status, _, html) = get_text(&app, "/api/page", &[(ASSERTION_HEADER, &alice)]).await;
        assert!(
            status == 200
                && html.contains("<form id=\"logout\" method=\"post\" action=\"/_portcullis/logout\" hidden>")
        );
        // Only with the edge's assertion, like every /api/* route.
        let (status, _, _) = get_text(&app, "/api/page", &[("cookie", &cookie), ("x-auth-subject", "alice")]).await;
        assert_eq!(status, 401);
        // And the page to land on after a logout is public.
        let (status, headers, html) = get_text(&app, "/public/signed-out", &[]).await;
        assert_eq!((status, headers[header::CONTENT_TYPE].to_str().ok()), (200, Some("text/html; charset=utf-8")));
        assert!(html.contains("Signed out") && html.contains(r#"href="/api/page""#), "{html}");
    }

    #[tokio::test]
    async fn the_page_escapes_every_value() {
        let (edge, url) = Edge::start().await;
        let key = edge_key(1);
        edge.publish(&[&key]);
        let (app, _) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        let roles = ["<b>admin</b>".to_owned(), "a&b".to_owned()];
        let subject = r#"<script>alert("x")</script>"#;
        let assertion = assert_as(&key, &AssertionClaims { sub: Some(subject), ..claims(&roles) });
        let (status, _) =
            call(&app, "POST", "/api/messages", &[(ASSERTION_HEADER, &assertion)], "<img src=x onerror='y'>").await;
        assert_eq!(status, 201);
        let cookie = format!(r#"{EDGE_CSRF_COOKIE}="><script>z</script>"#);
        let (status, _, html) =
            get_text(&app, "/api/page", &[(ASSERTION_HEADER, &assertion), ("cookie", &cookie)]).await;
        assert_eq!(status, 200, "{html}");
        for raw in ["<script", "<b>", "<img", "a&b", "onerror='"] {
            assert!(!html.contains(raw), "{raw} unescaped: {html}");
        }
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;admin&lt;/b&gt;, a&amp;b"), "{html}");
        assert!(html.contains("<li>&lt;img src=x onerror=&#39;y&#39;&gt;</li>"), "{html}");
        assert!(html.contains(r#"name="csrf" value="&quot;&gt;&lt;script&gt;z&lt;/script&gt;">"#), "{html}");
        assert_eq!(escape_html(r#"&<>"'é"#), "&amp;&lt;&gt;&quot;&#39;é");
    }

    #[tokio::test]
    async fn the_identity_comes_from_the_assertion_only() {
        let (edge, url) = Edge::start().await;
        let key = edge_key(1);
        edge.publish(&[&key]);
        let (app, _) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        assert_eq!(edge.fetches(), 0, "the keys are fetched on first use");
        let roles = ["reader".to_owned(), "writer".to_owned()];
        let alice = assert_as(&key, &claims(&roles));

        let (status, body) = call(&app, "GET", "/api/me", &[(ASSERTION_HEADER, &alice)], "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({
                "subject": "alice",
                "roles": ["reader", "writer"],
                "edge": EDGE,
                "token_id": "token-1",
                "assertion_id": "assertion-1",
                "subject_type": "user",
            })
        );
        // X-Auth-* headers are hints: they neither replace nor change the assertion's identity.
        let spoofed = [(ASSERTION_HEADER, alice.as_str()), ("x-auth-subject", "admin"), ("x-auth-roles", "admin")];
        let (status, body) = call(&app, "GET", "/api/me", &spoofed, "").await;
        assert_eq!((status, &body["subject"], &body["roles"]), (200, &json!("alice"), &json!(["reader", "writer"])));
        let (status, body) = call(&app, "GET", "/api/me", &spoofed[1..], "").await;
        assert_eq!(status, 401, "X-Auth-* alone: {body}");
        assert!(body["error"].as_str().is_some_and(|error| error.contains("assertion")), "{body}");
        // Public routes get no assertion from the edge, and need none.
        let (status, body) = call(&app, "GET", "/public/hello", &[], "").await;
        assert!(status == 200 && body["message"].is_string());
        assert_eq!(edge.fetches(), 1, "fetched once, then cached");
    }

    #[tokio::test]
    async fn refuses_every_request_without_a_valid_assertion() {
        let (edge, url) = Edge::start().await;
        let (key, unpublished) = (edge_key(1), edge_key(2));
        edge.publish(&[&key]);
        let (app, keys) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        let roles = ["admin".to_owned()];
        let good = claims(&roles);
        // The same key, issuer, audience and claims, but the `typ` of an access token.
        let token_claims =
            json!({"iss": EDGE, "aud": ORIGIN, "sub": "alice", "roles": ["admin"], "iat": now(), "exp": now() + 60});
        let access_token = jws(&key, &json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}), &token_claims);
        // A good assertion's header and signature around another payload.
        let signed = assert_as(&key, &good);
        let parts: Vec<&str> = signed.split('.').collect();
        let mut admin = token_claims.clone();
        admin["sub"] = json!("admin");
        admin["jti"] = json!("x");
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(admin.to_string()), parts[2]);
        let cases = [
            ("garbage", "not-an-assertion".to_owned()),
            ("expired", assert_as(&key, &AssertionClaims { iat: now() - 120, exp: now() - 60, ..good.clone() })),
            ("for another origin", assert_as(&key, &AssertionClaims { aud: "http://127.0.0.1:3001", ..good.clone() })),
            ("from another edge", assert_as(&key, &AssertionClaims { iss: "http://127.0.0.1:8080", ..good.clone() })),
            ("longer than 5 minutes", assert_as(&key, &AssertionClaims { exp: now() + 301, ..good.clone() })),
            ("without a subject", assert_as(&key, &AssertionClaims { sub: None, ..good.clone() })),
            ("an access token in its place", access_token),
            ("an unpublished key", assert_as(&unpublished, &good)),
            ("a tampered payload", tampered),
        ];
        for (what, assertion) in &cases {
            let (status, body) = call(&app, "GET", "/api/admin/messages", &[(ASSERTION_HEADER, assertion)], "").await;
            assert_eq!(status, 401, "{what}: {body}");
            assert!(keys.verify(assertion).await.is_err(), "{what}");
        }
        let claims_error = async |index: usize| match keys.verify(&cases[index].1).await {
            Err(Refusal::Invalid(VerifyError::Claims(error))) => Some(error),
            _ => None,
        };
        assert_eq!(claims_error(1).await, Some(jwks::ClaimsError::Expired));
        assert_eq!(claims_error(2).await, Some(jwks::ClaimsError::WrongAudience));
        assert_eq!(claims_error(3).await, Some(jwks::ClaimsError::WrongIssuer));
        assert_eq!(claims_error(4).await, Some(jwks::ClaimsError::LifetimeTooLong));
        assert_eq!(keys.verify(&cases[5].1).await, Err(Refusal::NoSubject));
        assert_eq!(claims_error(6).await, Some(jwks::ClaimsError::WrongTokenType), "an access token is no assertion");
        assert!(matches!(keys.verify(&cases[7].1).await, Err(Refusal::Invalid(error)) if error.is_unknown_kid()));

        let assertion = assert_as(&key, &good);
        let (status, _) = call(&app, "GET", "/api/admin/messages", &[], "").await;
        assert_eq!(status, 401, "no assertion");
        let twice = [(ASSERTION_HEADER, assertion.as_str()), (ASSERTION_HEADER, assertion.as_str())];
        let (status, _) = call(&app, "GET", "/api/admin/messages", &twice, "").await;
        assert_eq!(status, 401, "an assertion twice is none");
        let (status, body) = call(&app, "GET", "/api/admin/messages", &[(ASSERTION_HEADER, &assertion)], "").await;
        assert_eq!(status, 200, "and the good one passes: {body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_fetched_lazily_and_refetched_on_an_unknown_kid_at_most_once_per_cooldown() {
        let cooldown = Duration::from_millis(300);
        let (edge, url) = Edge::start().await;
        let (first, second, forged) = (edge_key(1), edge_key(2), edge_key(3));
        let (_, keys) = origin(&url, cooldown);
        let roles = Vec::new();
        let by = |key: &EdgeKey| assert_as(key, &claims(&roles));

        // The origin starts before the edge has keys (404): refused, and no fetch storm.
        assert!(keys.verify(&by(&first)).await.is_err());
        assert!(keys.verify(&by(&first)).await.is_err());
        assert_eq!(edge.fetches(), 1, "one fetch per cooldown");
        edge.publish(&[&first]);
        tokio::time::sleep(cooldown).await;
        assert_eq!(keys.verify(&by(&first)).await.map(|identity| identity.subject), Ok("alice".to_owned()));
        for _ in 0..5 {
            assert!(keys.verify(&by(&first)).await.is_ok());
        }
        assert_eq!(edge.fetches(), 2, "then cached");

        // A key published before it signs is picked up by the first assertion it signs.
        edge.publish(&[&first, &second]);
        tokio::time::sleep(cooldown).await;
        assert!(keys.verify(&by(&second)).await.is_ok(), "the new key");
        assert!(keys.verify(&by(&first)).await.is_ok(), "and the old one still");
        assert_eq!(edge.fetches(), 3);

        // Forged kids, many at once: one fetch per cooldown at most.
        tokio::time::sleep(cooldown).await;
        let forged = by(&forged);
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let (keys, forged) = (Arc::clone(&keys), forged.clone());
                tokio::spawn(async move { keys.verify(&forged).await })
            })
            .collect();
        for attempt in attempts {
            assert!(attempt.await.expect("ran").is_err());
        }
        assert!(keys.verify(&forged).await.is_err());
        assert_eq!(edge.fetches(), 4, "twenty-one unknown kids, one fetch");
    }

    #[tokio::test]
    async fn a_dropped_key_is_refused_once_the_keys_expire() {
        let (edge, url) = Edge::start().await;
        let (old, new) = (edge_key(1), edge_key(2));
        edge.max_age.store(1, Ordering::SeqCst);
        edge.publish(&[&new, &old]);
        let (_, keys) = origin(&url, Duration::from_millis(100));
        let roles = Vec::new();
        let by_old = assert_as(&old, &claims(&roles));
        assert!(keys.verify(&by_old).await.is_ok());
        edge.publish(&[&new]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(keys.verify(&by_old).await, Err(Refusal::Invalid(error)) if error.is_unknown_kid()));
        assert_eq!(edge.fetches(), 2, "once more after max-age, not again for the unknown kid");
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).expect("a header value"));
            max_age(&headers)
        };
        assert_eq!(with("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(with("max-age=99999"), Some(MAX_KEYS_MAX_AGE));
        assert_eq!(with("no-store"), None);
        assert!(EdgeSettings::new("https://edge.example/_portcullis/jwks.json", EDGE, ORIGIN).is_err(), "http only");
    }

    #[tokio::test]
    async fn answers_cors_preflights() {
        let (_, url) = Edge::start().await;
        let (app, _) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        let preflight = [("origin", "https://app.test"), ("access-control-request-method", "GET")];
        let request = Request::builder().method("OPTIONS").uri("/api/me");
        let request = preflight.iter().fold(request, |request, (name, value)| request.header(*name, *value));
        let response = app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("an answer");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["access-control-allow-origin"], "https://app.test");
        let (status, _) = call(&app, "OPTIONS", "/api/me", &preflight[..1], "").await;
        assert_eq!(status, 401, "a plain OPTIONS is no preflight: it needs an assertion");
    }

    #[tokio::test]
    async fn keeps_messages_per_user() {
        let (edge, url) = Edge::start().await;
        let key = edge_key(1);
        edge.publish(&[&key]);
        let (app, _) = origin(&url, DEFAULT_REFETCH_COOLDOWN);
        let roles = ["reader".to_owned()];
        let alice = assert_as(&key, &claims(&roles));
        let bob = assert_as(&key, &AssertionClaims { sub: Some("bob"), ..claims(&roles) });
        let alice = [(ASSERTION_HEADER, alice.as_str())];
        let (status, body) = call(&app, "POST", "/api/messages", &alice, "lunch at noon").await;
        assert_eq!(status, 201);
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
        let (_, body) = call(&app, "GET", "/api/messages", &[(ASSERTION_HEADER, &bob)], "").await;
        assert_eq!(body["messages"], json!([]), "bob does not see alice's messages");
        let (status, _) = call(&app, "POST", "/api/messages", &alice, "   ").await;
        assert_eq!(status, 400);
        let (status, _) = call(&app, "POST", "/api/messages", &alice, &"x".repeat(MAX_MESSAGE_BYTES + 1)).await;
        assert_eq!(status, 413);
        for i in 0..MAX_MESSAGES_PER_USER {
            call(&app, "POST", "/api/messages", &alice, &format!("note {i}")).await;
        }
        let (status, _) = call(&app, "GET", "/api/admin/messages", &alice, "").await;
        assert_eq!(status, 403, "a reader's valid assertion does not open the admin route");
        let admin_roles = ["admin".to_owned()];
        let admin = assert_as(&key, &AssertionClaims { sub: Some("root"), ..claims(&admin_roles) });
        let (status, body) = call(&app, "GET", "/api/admin/messages", &[(ASSERTION_HEADER, &admin)], "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages_by_user"], json!({"admin": 1, "alice": MAX_MESSAGES_PER_USER}));
    }
}
