//! The edge Worker under the real runtime: `wrangler dev` serving the built Worker (`edge/build/`),
//! with an in-process test server for the JWKS and the origin, all on 127.0.0.1.
//!
//! The Worker must be built first: `cargo xtask test` does it, or `cargo xtask build-worker`.
//! The benchmark (`bench_inside_workerd`, ignored by default) needs `edge/build-bench/`:
//! `cargo xtask bench-edge` builds it and runs it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use jwks::{
    ClaimsError, ClaimsOptions, JwkSet, KeySet, P256Verifier, PublicKey, SignatureError, Validator, VerifyError,
};
use p256::ecdsa::{Signature, SigningKey, signature::Signer as _};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::harness::{Answer, Client, STATUS_SECRET, Wrangler, first_header, free_port, poll};
use tokio::sync::oneshot;

const ISSUER: &str = "https://issuer.test";
const REALM: &str = "portcullis-test";
/// The route policy as a `[vars.POLICY]` table in the Worker's wrangler config, as the repository's
/// wrangler.toml has it: wrangler hands the table to the Worker as JSON.
const POLICY_TABLE: &str = r#"
[vars.POLICY]
preflight = true

[[vars.POLICY.rules]]
path = "/public/*"
access = "public"

[[vars.POLICY.rules]]
path = "/api/admin/*"
access = "any_role"
roles = ["admin"]

[[vars.POLICY.rules]]
path = "/api/internal/*"
access = "authenticated"
subject = "service"

[[vars.POLICY.rules]]
path = "/api/*"
access = "authenticated"
"#;
/// The same policy as JSON text, as a `--var` or a secret gives it.
const POLICY_JSON: &str = r#"{"rules": [
    {"path": "/public/*", "access": "public"},
    {"path": "/api/admin/*", "access": "any_role", "roles": ["admin"]},
    {"path": "/api/internal/*", "access": "authenticated", "subject": "service"},
    {"path": "/api/*", "access": "authenticated"}
]}"#;
/// The refetch cooldown the Worker runs with here (seconds).
const COOLDOWN_SECS: u64 = 2;
/// The revocation list's longest lifetime at the Worker here (seconds): the revocation bound.
const REVOCATION_MAX_AGE_SECS: u64 = 2;
/// How long a poll for what the cooldown holds back may take: the cooldown and ample room.
const COOLDOWN_POLL: Duration = Duration::from_secs(COOLDOWN_SECS + 10);

// ---------------------------------------------------------------------------------------------
// Keys and tokens.

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A signing key derived from a seed, and its public key (whose thumbprint is its `kid`).
struct TestKey {
    signing: SigningKey,
    public: PublicKey,
}

impl TestKey {
    fn new(seed: u8) -> Self {
        let mut secret = [0x42u8; 32];
        secret[31] = seed;
        let signing = SigningKey::from_slice(&secret).expect("valid scalar");
        let public = PublicKey::from(signing.verifying_key());
        Self { signing, public }
    }

    fn kid(&self) -> &str {
        self.public.thumbprint()
    }

    /// A compact JWS of `header` and `claims`, signed with this key.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// An access token for `claims`, with this key's `kid`.
    fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid()}), claims)
    }
}

/// Good claims at the current time, with `changes` applied (`Value::Null` removes a claim).
fn claims(changes: &[(&str, Value)]) -> Value {
    let now = now();
    let mut claims = json!({
        "iss": ISSUER, "sub": "user-1", "aud": "api", "iat": now, "nbf": now, "exp": now + 300,
        "jti": "token-1", "roles": ["reader"], "client_id": "test-client",
    });
    let members = claims.as_object_mut().expect("an object");
    for (name, value) in changes {
        if value.is_null() {
            members.remove(*name);
        } else {
            members.insert((*name).to_owned(), value.clone());
        }
    }
    claims
}

fn jwks_of(keys: &[&TestKey]) -> String {
    serde_json::to_string(&JwkSet { keys: keys.iter().map(|key| key.public.to_jwk()).collect() }).expect("JSON")
}

// ---------------------------------------------------------------------------------------------
// The test server: a JWKS endpoint and an origin that records what it receives.

/// One request as the origin received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    fn header_count(&self, name: &str) -> usize {
        self.headers.get_all(name).iter().count()
    }

    /// Every value of header `name`, joined with `; `.
    fn all(&self, name: &str) -> String {
        let values: Vec<&str> = self.headers.get_all(name).iter().filter_map(|value| value.to_str().ok()).collect();
        values.join("; ")
    }
}

#[derive(Default)]
struct Backend {
    jwks: Mutex<String>,
    jwks_max_age: AtomicU64,
    /// When not 0, the status the JWKS URL answers with instead of the set (the issuer failing).
    jwks_failure: AtomicU16,
    /// The revocation list's body (`None`: `{"revoked": []}`), served with an `ETag`.
    revoked: Mutex<Option<String>>,
    /// Fetches of the revocation list, and how many of them were answered 304.
    revoked_fetches: AtomicUsize,
    revoked_not_modified: AtomicUsize,
    jwks_fetches: AtomicUsize,
    /// When each fetch of the JWKS arrived.
    jwks_fetched_at: Mutex<Vec<Instant>>,
    seen: Mutex<Vec<Seen>>,
}

impl Backend {
    fn set_jwks(&self, jwks: String) {
        *self.jwks.lock().expect("lock") = jwks;
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The time between the last two fetches of the JWKS.
    fn last_fetch_gap(&self) -> Duration {
        let fetched_at = self.jwks_fetched_at.lock().expect("lock");
        match fetched_at[..] {
            [.., before, last] => last - before,
            _ => panic!("fewer than two fetches of the JWKS"),
        }
    }

    /// Asserts that the last fetch came no sooner than the cooldown after the one before (the
    /// Worker counts it from its own clock, a few milliseconds off the server's).
    fn assert_cooldown_kept(&self) {
        let gap = self.last_fetch_gap();
        let cooldown = Duration::from_secs(COOLDOWN_SECS);
        assert!(gap + Duration::from_millis(200) >= cooldown, "refetched {gap:?} after the last fetch");
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn last_seen(&self) -> Seen {
        self.seen().last().cloned().expect("the origin received a request")
    }
}

async fn serve_jwks(State(backend): State<Arc<Backend>>) -> axum::response::Response {
    backend.jwks_fetched_at.lock().expect("lock").push(Instant::now());
    backend.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let failure = backend.jwks_failure.load(Ordering::SeqCst);
    if failure != 0 {
        return StatusCode::from_u16(failure).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    }
    let max_age = backend.jwks_max_age.load(Ordering::SeqCst);
    let body = backend.jwks.lock().expect("lock").clone();
    ([("content-type", "application/json".to_owned()), ("cache-control", format!("max-age={max_age}"))], body)
        .into_response()
}

/// The revocation list as the issuer serves it: `max-age` 30 and an `ETag` (a hash of the body)
/// that `If-None-Match` is answered 304 to.
async fn serve_revoked(State(backend): State<Arc<Backend>>, headers: HeaderMap) -> axum::response::Response {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    backend.revoked_fetches.fetch_add(1, Ordering::SeqCst);
    let body = backend.revoked.lock().expect("lock").clone().unwrap_or_else(|| r#"{"revoked": []}"#.to_owned());
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{:x}\"", hasher.finish());
    let cache = [("cache-control", "public, max-age=30".to_owned()), ("etag", etag.clone())];
    if first_header(&headers, "if-none-match") == Some(etag.as_str()) {
        backend.revoked_not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, body).into_response()
}

/// The issuer's part of the test server: the key set and the revocation list of `backend`.
fn issuer_router(backend: &Arc<Backend>) -> Router {
    Router::new().route("/jwks", get(serve_jwks)).route("/revoked", get(serve_revoked)).with_state(Arc::clone(backend))
}

async fn serve_origin(State(backend): State<Arc<Backend>>, request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    backend.seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    if parts.uri.path().ends_with("/moved") {
        return (StatusCode::FOUND, [("x-origin", "yes"), ("location", "/base/api/items")], "moved").into_response();
    }
    ([("x-origin", "yes")], "from the origin").into_response()
}

/// A server on 127.0.0.1 that stops when the sender is dropped or fired.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers over the harness.

/// GET `path` with each of `tokens`, all at once.
async fn at_once(client: &Client, path: &str, tokens: [&str; 4]) -> [Answer; 4] {
    let (a, b, c, d) = tokio::join!(
        client.get_with_token(path, tokens[0]),
        client.get_with_token(path, tokens[1]),
        client.get_with_token(path, tokens[2]),
        client.get_with_token(path, tokens[3]),
    );
    [a, b, c, d]
}

/// The variables every test Worker runs with, pointing at `jwks` and `origin` (all but POLICY).
fn vars(jwks: SocketAddr, origin: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("ISSUER", ISSUER.to_owned()),
        ("AUDIENCE", "api, other-api".to_owned()),
        ("JWKS_URL", format!("http://{jwks}/jwks")),
        ("ORIGIN_URL", format!("http://{origin}/base")),
        ("TOKEN_COOKIE", "pc_token".to_owned()),
        ("LOGIN_URL", "https://login.test/start".to_owned()),
        ("REALM", REALM.to_owned()),
        ("JWKS_MIN_TTL_SECONDS", "1".to_owned()),
        ("JWKS_REFETCH_COOLDOWN_SECONDS", COOLDOWN_SECS.to_string()),
        ("JWKS_TIMEOUT_MS", "2000".to_owned()),
        ("CORS", r#"{"allow_origins": ["https://app.test"]}"#.to_owned()),
        ("JWKS_MAX_STALE_SECONDS", "86400".to_owned()),
        ("REVOCATION_URL", format!("http://{jwks}/revoked")),
        ("REVOCATION_MAX_AGE_SECONDS", REVOCATION_MAX_AGE_SECS.to_string()),
        ("STATUS_SECRET", STATUS_SECRET.to_owned()),
    ]
}

/// Every counter of the status page, as [`counters`] names them.
const COUNTERS: [&str; 28] = [
    "allowed.preflight",
    "allowed.public",
    "allowed.token",
    "jwks_fetches.bad_status",
    "jwks_fetches.not_modified",
    "jwks_fetches.ok",
    "jwks_fetches.refused",
    "jwks_fetches.timeout",
    "jwks_fetches.unreachable",
    "refused.cross_site_request",
    "refused.insufficient_role",
    "refused.invalid_token",
    "refused.keys_unavailable",
    "refused.no_rule",
    "refused.no_token",
    "refused.revocations_unavailable",
    "refused.revoked",
    "refused.session_ended",
    "refused.session_unavailable",
    "refused.wrong_subject_kind",
    "revocation_fetches.bad_status",
    "revocation_fetches.not_modified",
    "revocation_fetches.ok",
    "revocation_fetches.refused",
    "revocation_fetches.timeout",
    "revocation_fetches.unreachable",
    "token_cache.hits",
    "token_cache.misses",
];

/// The counters of a status page, flattened to `group.label` (`refused.no_token`); checks that
/// it shows every one of [`COUNTERS`] and no other.
fn counters(status: &Value) -> BTreeMap<String, u64> {
    let mut flat = BTreeMap::new();
    for (group, labels) in status["counters"].as_object().unwrap_or_else(|| panic!("no counters: {status}")) {
        for (label, count) in labels.as_object().unwrap_or_else(|| panic!("{group}: {status}")) {
            let count = count.as_u64().unwrap_or_else(|| panic!("{group}.{label}: {status}"));
            flat.insert(format!("{group}.{label}"), count);
        }
    }
    assert_eq!(flat.keys().map(String::as_str).collect::<Vec<_>>(), COUNTERS, "{status}");
    flat
}

/// The counters of the status page `client` reaches.
async fn read_counters(client: &Client) -> BTreeMap<String, u64> {
    counters(&client.status().await.json())
}

/// The counters that moved from `before` to `after`, and by how much (none may go down).
fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, &count)| {
            let was = before[name];
            assert!(count >= was, "{name} went down from {was} to {count}");
            (count > was).then(|| (name.clone(), count - was))
        })
        .collect()
}

/// Counts by counter name.
fn counts(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(name, count)| ((*name).to_owned(), *count)).collect()
}

fn challenge(error: Option<&str>) -> String {
    match error {
        Some(error) => format!("Bearer realm=\"{REALM}\", error=\"{error}\""),
        None => format!("Bearer realm=\"{REALM}\""),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Everything the issue asks of the Worker under `wrangler dev`, in one run (each instance costs
/// seconds to start), then a second instance on the same state to check that a fresh isolate starts
/// warm from the Cache API while the issuer is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_under_wrangler_dev() {
    let dir = tempfile::tempdir().expect("temp dir");
    let k1 = TestKey::new(1);
    let k2 = TestKey::new(2);
    let backend = Arc::new(Backend::default());
    backend.set_jwks(jwks_of(&[&k1]));
    backend.jwks_max_age.store(300, Ordering::SeqCst);
    let jwks_server = Server::start(issuer_router(&backend)).await;
    let origin = Server::start(Router::new().fallback(serve_origin).with_state(Arc::clone(&backend))).await;

    let mut wrangler = Wrangler::start("main", "build", dir.path(), &vars(jwks_server.addr, origin.addr), POLICY_TABLE);
    let client = Client::new(wrangler.base.clone());
    let took = wrangler.ready(&client).await;
    eprintln!("wrangler dev: first answer {:.2} s after start", took.as_secs_f64());

    // POLICY came as a [vars.POLICY] table, which wrangler hands over as JSON: loaded. The status
    // page says which variables are set, never their values.
    let status = client.status().await;
    let document = status.json();
    assert_eq!((document["config"].as_str(), document["rules"].as_u64()), (Some("loaded"), Some(4)), "{document}");
    let set: Vec<&str> =
        document["variables_set"].as_array().expect("names").iter().filter_map(Value::as_str).collect();
    assert!(set.contains(&"POLICY") && set.contains(&"LOGIN_URL"), "{document}");
    assert!(!status.text().contains("login.test"), "no values: {document}");
    // Without ASSERTION_KEYS the edge signs no assertions and publishes no keys.
    assert!(document["assertions"].is_null(), "{document}");
    assert_eq!(client.get("/_portcullis/jwks.json", &[]).await.status, 404);

    // Several first requests at once, on a cold isolate with nothing in the Cache API: one fetch of
    // the key set, which the others wait for (no request may await another's promise in workerd:
    // it would be cancelled as hung).
    let reader = k1.token(&claims(&[]));
    for answer in at_once(&client, "/api/items", [&reader; 4]).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(backend.fetches(), 1, "one fetch of the key set for the first requests");

    // A good token: the origin gets the request, the identity headers, and not the client's
    // spoofed ones nor the token.
    let answer = client
        .get(
            "/api/items?page=2&q=a%20b",
            &[
                ("authorization", &format!("Bearer {reader}")),
                ("x-auth-subject", "admin"),
                ("x-auth-roles", "admin"),
                ("x-portcullis-assertion", "forged"),
                ("cookie", "theme=dark"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-origin"), Some("yes"));
    assert_eq!(answer.text(), "from the origin");
    let seen = backend.last_seen();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/base/api/items?page=2&q=a%20b"));
    assert_eq!(seen.header("x-auth-subject"), Some("user-1"));
    assert_eq!(seen.header_count("x-auth-subject"), 1);
    assert_eq!(seen.header("x-auth-roles"), Some("reader"));
    assert_eq!(seen.header_count("x-auth-roles"), 1);
    assert_eq!(seen.header("x-auth-issuer"), Some(ISSUER));
    assert_eq!(seen.header("x-auth-token-id"), Some("token-1"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header_count(ASSERTION_HEADER), 0, "no assertion without keys, not the client's");
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // Fetched with `cache: "no-store"` (an answer made for one user is kept by no cache on the
    // way): workerd says so to the origin as `Cache-Control: no-cache` and `Pragma: no-cache`.
    assert_eq!((seen.header("cache-control"), seen.header("pragma")), (Some("no-cache"), Some("no-cache")));
    // Hop-by-hop headers and any X-Auth-* do not reach the origin; the rest do, as sent. (The
    // runtime takes `Connection` away before the Worker runs, so the names a client lists there
    // cannot be known; the unit tests cover them.)
    let answer = client
        .get(
            "/api/items",
            &[
                ("authorization", &format!("Bearer {reader}")),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("x-auth-email", "admin@example.test"),
                ("x-forwarded-host", "spoofed.test"),
                ("x-forwarded-for", "10.9.8.7"),
                ("forwarded", "for=10.9.8.7;proto=https"),
                ("accept-language", "en-GB, fr;q=0.5"),
                ("x-request-id", "r-1"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = backend.last_seen();
    for dropped in ["proxy-authorization", "x-auth-email", "authorization", "forwarded"] {
        assert_eq!(seen.header(dropped), None, "{dropped}: {:?}", seen.headers);
    }
    assert_ne!(seen.header("x-forwarded-host"), Some("spoofed.test"));
    assert!(!seen.all("x-forwarded-for").contains("10.9.8.7"), "{:?}", seen.headers);
    // Names an origin reads with `_` as `-` (CGI, WSGI, Rack), method and path overrides, and
    // client-claimed addresses never reach the origin; the edge tells the client's address itself,
    // in X-Forwarded-For, from what the runtime says (CF-Connecting-IP).
    let answer = client
        .get(
            "/api/items",
            &[
                ("authorization", &format!("Bearer {reader}")),
                ("x_auth_roles", "admin"),
                ("X_Auth_Subject", "root"),
                ("X.Auth.Token-Id", "forged"),
                ("x-http-method-override", "DELETE"),
                ("x-original-url", "/api/admin/x"),
                ("x-real-ip", "10.9.8.7"),
                ("true-client-ip", "10.9.8.7"),
                ("cookie", r#"prefs=a,b; q="1, 2""#),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cleaned = backend.last_seen();
    for dropped in
        ["x_auth_roles", "x_auth_subject", "x-http-method-override", "x-original-url", "x-real-ip", "true-client-ip"]
    {
        assert_eq!(cleaned.header(dropped), None, "{dropped}: {:?}", cleaned.headers);
    }
    assert_eq!(cleaned.header("cookie"), Some(r#"prefs=a,b; q="1, 2""#), "cookies as sent");
    // wrangler dev gives the loopback address as CF-Connecting-IP.
    assert_eq!(cleaned.all("x-forwarded-for"), "127.0.0.1", "{:?}", cleaned.headers);
    // The origin's redirect is the client's to follow, not the edge's.
    let answer = client.get_with_token("/api/moved", &reader).await;
    assert_eq!((answer.status, answer.header("location")), (302, Some("/base/api/items")), "{}", answer.text());
    assert_eq!(backend.last_seen().uri, "/base/api/moved");
    assert_eq!((seen.header("accept-language"), seen.header("x-request-id")), (Some("en-GB, fr;q=0.5"), Some("r-1")));
    assert_eq!(seen.header("x-auth-subject"), Some("user-1"));
    let fetches_after_first = backend.fetches();
    assert_eq!(fetches_after_first, 1, "no more fetches while the set is fresh");

    // The token may come in the cookie; the cookie does not reach the origin, other cookies do.
    let answer = client.get("/api/items", &[("cookie", &format!("a=1; pc_token={reader}; b=2"))]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(backend.last_seen().header("cookie"), Some("a=1; b=2"));
    // Repeated Cookie headers (which the runtime joins with ", "): the token is read from them and
    // does not reach the origin; the other cookies do.
    let answer = client.get("/api/items", &[("cookie", "a=1"), ("cookie", &format!("pc_token={reader}, b=2"))]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cookies = backend.last_seen().all("cookie");
    assert!(cookies.contains("a=1") && cookies.contains("b=2") && !cookies.contains("pc_token"), "{cookies}");
    assert!(!cookies.contains(&reader), "{cookies}");

    // Refusals: 401 with the right challenge, nothing reaches the origin.
    let seen_before = backend.seen().len();
    let answer = client.get("/api/items", &[]).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some(challenge(None).as_str())));
    assert_eq!(answer.text(), "unauthorized\n");
    let invalid = challenge(Some("invalid_token"));
    let now = now();
    let wrong_signature = k2.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": k1.kid()}), &claims(&[]));
    let expired = k1.token(&claims(&[("iat", json!(now - 4000)), ("nbf", Value::Null), ("exp", json!(now - 3600))]));
    let cases: Vec<(&str, String)> = vec![
        ("a bad signature", wrong_signature),
        ("an expired token", expired.clone()),
        ("a wrong issuer", k1.token(&claims(&[("iss", json!("https://evil.test"))]))),
        ("a wrong audience", k1.token(&claims(&[("aud", json!(["billing"]))]))),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"at+jwt"}"#), b64(claims(&[]).to_string().as_bytes())),
        ),
        ("alg none with a kid", {
            let header = json!({"alg": "none", "typ": "at+jwt", "kid": k1.kid()}).to_string();
            format!("{}.{}.", b64(header.as_bytes()), b64(claims(&[]).to_string().as_bytes()))
        }),
        ("HS256", {
            let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": k1.kid()}).to_string();
            format!("{}.{}.{}", b64(header.as_bytes()), b64(claims(&[]).to_string().as_bytes()), b64(&[7; 32]))
        }),
        ("a wrong typ", k1.sign(&json!({"alg": "ES256", "typ": "JWT", "kid": k1.kid()}), &claims(&[]))),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (what, token) in &cases {
        let answer = client.get_with_token("/api/items", token).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        assert_eq!(answer.header("www-authenticate"), Some(invalid.as_str()), "{what}");
        assert_eq!(answer.text(), "unauthorized\n", "{what}: the reason is not echoed");
    }
    // The reason is logged, one structured line.
    let line = wrangler.logged(&["\"event\":\"refused\"", "expired"]).await;
    assert!(line.contains("\"code\":\"invalid_token\""), "{line}");
    assert_eq!(backend.seen().len(), seen_before, "no refused request reaches the origin");

    // A browser without a token goes to the login page with its URL to come back to.
    let answer = client.get("/api/items?x=1", &[("accept", "text/html,application/xhtml+xml")]).await;
    assert_eq!(answer.status, 302);
    let location = answer.header("location").expect("a location");
    assert!(location.starts_with("https://login.test/start?return_to=http%3A%2F%2F127.0.0.1%3A"), "{location}");
    assert!(location.ends_with("%2Fapi%2Fitems%3Fx%3D1"), "{location}");
    // A page's navigation as Chromium sends it goes too; a fetch from a page, even one that
    // accepts HTML, gets its 401 (a redirect to a login page is no answer for a script).
    let navigate = [("accept", "text/html"), ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")];
    assert_eq!(client.get("/api/items", &navigate).await.status, 302);
    let fetch = [("accept", "text/html, */*"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")];
    let answer = client.get("/api/items", &fetch).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some(challenge(None).as_str())));
    // So does a browser whose cookie token is no good (expired); a bad token in Authorization is
    // an API client's: 401.
    let answer = client.get("/api/items", &[("accept", "text/html"), ("cookie", &format!("pc_token={expired}"))]).await;
    assert_eq!(answer.status, 302, "{}", answer.text());
    assert!(answer.header("location").is_some_and(|location| location.starts_with("https://login.test/start?")));
    let answer =
        client.get("/api/items", &[("accept", "text/html"), ("authorization", &format!("Bearer {expired}"))]).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some(invalid.as_str())));

    // A missing role: 403 insufficient_scope; with the role: allowed.
    let answer = client.get_with_token("/api/admin/users", &reader).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.header("www-authenticate"), Some(challenge(Some("insufficient_scope")).as_str()));
    let admin = k1.token(&claims(&[("roles", json!(["reader", "admin"]))]));
    let answer = client.get_with_token("/api/admin/users", &admin).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(backend.last_seen().header("x-auth-roles"), Some("reader,admin"));

    // No rule: denied without a challenge.
    let answer = client.get_with_token("/elsewhere", &admin).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (403, None));
    // Paths an origin could read as another one match no rule: denied, whatever the token.
    let seen_before = backend.seen().len();
    for path in ["/public/..;/api/admin/users", "/api/%61dmin/users"] {
        let answer = client.get_with_token(path, &reader).await;
        assert_eq!((answer.status, answer.header("www-authenticate")), (403, None), "{path}: {}", answer.text());
    }
    assert_eq!(backend.seen().len(), seen_before, "no ambiguous path reaches the origin");
    // `/api/admin/*` covers `/api/admin` too: a reader lacks the role.
    let answer = client.get_with_token("/api/admin", &reader).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.header("www-authenticate"), Some(challenge(Some("insufficient_scope")).as_str()));

    // A public route reaches the origin without a token (and cleaned).
    let answer = client.get("/public/page", &[("authorization", "Bearer whatever"), ("x-auth-subject", "admin")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = backend.last_seen();
    assert_eq!(seen.uri, "/base/public/page");
    assert_eq!((seen.header("authorization"), seen.header("x-auth-subject")), (None, None));
    assert_eq!(seen.header("cache-control"), None, "a public answer may be cached");
    // A CORS preflight is answered by the edge from CORS: nothing without a token reaches a
    // protected route of the origin.
    let seen_before = backend.seen().len();
    let preflight = [("origin", "https://app.test"), ("access-control-request-method", "POST")];
    let answer = client.send("OPTIONS", "/api/items", &preflight, b"not for the origin".to_vec()).await;
    assert_eq!(answer.status, 204, "{}", answer.text());
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://app.test"));
    assert_eq!(answer.header("access-control-allow-headers"), Some("authorization, content-type"));
    let other_page = [("origin", "https://evil.test"), ("access-control-request-method", "POST")];
    let answer = client.send("OPTIONS", "/api/items", &other_page, Vec::new()).await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (403, None));
    let unlisted_header = [
        ("origin", "https://app.test"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-custom"),
    ];
    let answer = client.send("OPTIONS", "/api/items", &unlisted_header, Vec::new()).await;
    assert_eq!(answer.status, 403, "a header CORS does not list");
    assert_eq!(backend.seen().len(), seen_before, "no preflight reached the origin");
    // The allowed page can read the answers: the origin's, and the edge's refusals.
    let answer = client
        .get("/api/items", &[("origin", "https://app.test"), ("authorization", &format!("Bearer {reader}"))])
        .await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (200, Some("https://app.test")));
    let answer = client.get("/api/items", &[("origin", "https://app.test")]).await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (401, Some("https://app.test")));
    let answer = client.get("/api/items", &[("origin", "https://evil.test")]).await;
    assert_eq!((answer.status, answer.header("access-control-allow-origin")), (401, None));
    // A preflight for a path no rule matches is an ordinary OPTIONS: denied, not forwarded.
    let seen_before = backend.seen().len();
    let answer = client.send("OPTIONS", "/elsewhere", &preflight, b"x".to_vec()).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (403, None), "{}", answer.text());
    assert_eq!(backend.seen().len(), seen_before, "the preflight did not reach the origin");

    // A POST body arrives intact (binary, larger than one chunk).
    let body: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let answer = client
        .send(
            "POST",
            "/api/upload?v=1",
            &[("authorization", &format!("Bearer {reader}")), ("content-type", "application/octet-stream")],
            body.clone(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = backend.last_seen();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("POST", "/base/api/upload?v=1"));
    assert_eq!(seen.header("content-type"), Some("application/octet-stream"));
    assert!(seen.body == body, "the body changed on the way ({} bytes of {})", seen.body.len(), body.len());

    // The status page counts what the edge decides: after requests of known kinds, each counter
    // has moved by exactly what was sent, and no other (the key set is fresh: no fetch).
    let before = read_counters(&client).await;
    let fetches = backend.fetches();
    let counted = k1.token(&claims(&[("jti", json!("counted-1"))]));
    let forged = k2.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": k1.kid()}), &claims(&[]));
    let bearer = |token: &str| format!("Bearer {token}");
    let with_token = |token: &str| vec![("authorization", bearer(token))];
    let preflight_headers: Vec<(&str, String)> =
        preflight.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
    let sent = [
        ("a new token: allowed, checked in full", "GET", "/api/items", with_token(&counted), 200),
        ("the same token again: allowed from the cache", "GET", "/api/items", with_token(&counted), 200),
        ("no token", "GET", "/api/items", Vec::new(), 401),
        ("a bad signature", "GET", "/api/items", with_token(&forged), 401),
        ("a missing role (the token from the cache)", "GET", "/api/admin/users", with_token(&counted), 403),
        ("no rule (no token read)", "GET", "/elsewhere", with_token(&counted), 403),
        ("a public route", "GET", "/public/page", Vec::new(), 200),
        ("a preflight", "OPTIONS", "/api/items", preflight_headers, 204),
    ];
    for (what, method, path, headers, status) in &sent {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let answer = client.send(method, path, &headers, Vec::new()).await;
        assert_eq!(answer.status, *status, "{what}: {}", answer.text());
    }
    let after = read_counters(&client).await;
    let expected = counts(&[
        ("allowed.preflight", 1),
        ("allowed.public", 1),
        ("allowed.token", 2),
        ("refused.insufficient_role", 1),
        ("refused.invalid_token", 1),
        ("refused.no_rule", 1),
        ("refused.no_token", 1),
        ("token_cache.hits", 2),
        ("token_cache.misses", 2),
    ]);
    assert_eq!(moved(&before, &after), expected, "before {before:?}, after {after:?}");
    assert_eq!(backend.fetches(), fetches, "no fetch of the key set meanwhile");
    assert_eq!(
        after["jwks_fetches.ok"],
        u64::try_from(fetches).expect("a count"),
        "every fetch so far installed a set"
    );

    // An unknown kid, then a JWKS that has it: refused without a fetch while the cooldown since
    // the last fetch lasts, then accepted after exactly one refetch.
    backend.set_jwks(jwks_of(&[&k1, &k2]));
    let fetches = backend.fetches();
    let from_k2 = k2.token(&claims(&[("sub", json!("user-2"))]));
    let (_, took) = poll("the unknown kid's token accepted after a refetch", COOLDOWN_POLL, async || {
        let answer = client.get_with_token("/api/items", &from_k2).await;
        if answer.status == 200 {
            return Ok(());
        }
        assert_eq!((answer.status, backend.fetches()), (401, fetches), "before the refetch: {}", answer.text());
        Err(format!("{} {}", answer.status, answer.text().trim()))
    })
    .await;
    eprintln!("unknown kid: accepted after {:.1} s (the cooldown)", took.as_secs_f64());
    assert_eq!(backend.last_seen().header("x-auth-subject"), Some("user-2"));
    assert_eq!(backend.fetches(), fetches + 1, "exactly one refetch");
    backend.assert_cooldown_kept();
    // A flood of random kids within the cooldown: refused, and no more fetches.
    for i in 0..8 {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("random-{i}")});
        let answer = client.get_with_token("/api/items", &k1.sign(&header, &claims(&[]))).await;
        assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some(invalid.as_str())), "kid {i}");
    }
    assert_eq!(backend.fetches(), fetches + 1, "unknown kids within the cooldown refetch nothing");

    // The issuer goes away: the cached keys keep serving past their lifetime (stale), and the
    // status page says so. First have the Worker take a set with a 1 s lifetime.
    backend.jwks_max_age.store(1, Ordering::SeqCst);
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "not-there-either"});
    let not_there = k1.sign(&header, &claims(&[]));
    poll("the unknown kid refetched once the cooldown has passed", COOLDOWN_POLL, async || {
        let answer = client.get_with_token("/api/items", &not_there).await;
        assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some(invalid.as_str())));
        let fetched = backend.fetches() - fetches;
        if fetched == 2 { Ok(()) } else { Err(format!("{fetched} refetches")) }
    })
    .await;
    assert_eq!(backend.fetches(), fetches + 2, "one refetch for the unknown kid");
    backend.assert_cooldown_kept();
    let jwks_addr = jwks_server.addr;
    jwks_server.stop().await;
    // Once the set has expired and the cooldown has passed, a request makes the Worker try the
    // issuer, fail and serve the expired set; the cached keys work all along.
    let (_, took) = poll("the edge serves stale keys", COOLDOWN_POLL, async || {
        for token in [&reader, &from_k2] {
            let answer = client.get_with_token("/api/items", token).await;
            assert_eq!(answer.status, 200, "the cached keys keep working: {}", answer.text());
        }
        let status = client.status().await.json();
        let keys = &status["keys"];
        if keys["state"] == "stale" && keys["last_error"].is_string() { Ok(()) } else { Err(keys.to_string()) }
    })
    .await;
    eprintln!("issuer down: the edge serves stale keys after {:.1} s", took.as_secs_f64());
    wrangler.logged(&["keys_fetch_failed"]).await;
    let status = client.status().await.json();
    assert_eq!(status["config"], "loaded");
    assert_eq!(status["keys"]["state"], "stale", "{status}");
    assert_eq!(status["keys"]["serving"], true, "{status}");
    assert!(status["keys"]["last_error"].is_string(), "{status}");
    assert!(status["token_cache"]["entries"].as_u64().is_some_and(|entries| entries >= 2), "{status}");
    let kids: Vec<&str> =
        status["keys"]["keys"]["kids"].as_array().expect("kids").iter().filter_map(Value::as_str).collect();
    assert!(kids.contains(&k1.kid()) && kids.contains(&k2.kid()), "{status}");
    // Every fetch the key set's server answered installed a set; those since it went away failed
    // as unreachable.
    let counted = counters(&status);
    assert_eq!(counted["jwks_fetches.ok"], u64::try_from(backend.fetches()).expect("a count"), "{status}");
    assert!(counted["jwks_fetches.unreachable"] >= 1, "{status}");
    for outcome in ["bad_status", "refused", "timeout"] {
        assert_eq!(counted[&format!("jwks_fetches.{outcome}")], 0, "{outcome}: {status}");
    }
    drop(wrangler);

    // A new instance on the same state and JWKS_URL, with the issuer still down: it starts from the
    // key set the first one kept in the Cache API.
    let mut wrangler = Wrangler::start("warm", "build", dir.path(), &vars(jwks_addr, origin.addr), POLICY_TABLE);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    // Several first requests at once: each reads the Cache API before anything else (none goes
    // to the issuer, which is down, and fails with 503, while the Cache API has a set).
    for answer in at_once(&client, "/api/items", [&from_k2, &reader, &from_k2, &reader]).await {
        assert_eq!(answer.status, 200, "a fresh isolate starts warm from the Cache API: {}", answer.text());
    }
    let status = client.status().await.json();
    assert_eq!(status["keys"]["keys"]["source"], "cache_api", "{status}");
    // Its counters started at zero: no set fetched, the four requests allowed.
    let counted = counters(&status);
    assert_eq!((counted["jwks_fetches.ok"], counted["allowed.token"]), (0, 4), "{status}");

    // The origin goes away: 502, and one structured log line says why.
    origin.stop().await;
    let answer = client.get("/public/page", &[]).await;
    assert_eq!((answer.status, answer.text().as_str()), (502, "bad gateway\n"));
    let line = wrangler.logged(&["\"event\":\"origin_unreachable\""]).await;
    assert!(line.contains("\"path\":\"/public/page\""), "{line}");
    drop(wrangler);
}

/// A key set server that answers badly four times, each in its own way, then well.
struct Script {
    calls: AtomicUsize,
    jwks: String,
}

async fn scripted_jwks(State(script): State<Arc<Script>>) -> axum::response::Response {
    match script.calls.fetch_add(1, Ordering::SeqCst) {
        // Longer than the Worker's JWKS_TIMEOUT_MS.
        0 => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            script.jwks.clone().into_response()
        }
        1 => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response(),
        2 => "not a key set".into_response(),
        3 => r#"{"keys": []}"#.into_response(),
        _ => ([("cache-control", "max-age=300")], script.jwks.clone()).into_response(),
    }
}

/// The key set's fetches under the real runtime, counted by outcome (a timeout, an error status,
/// two documents refused, then a good set), and the requests refused meanwhile (503, no key set)
/// counted under the code of their log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_set_fetches_are_counted_by_outcome() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = TestKey::new(3);
    let script = Arc::new(Script { calls: AtomicUsize::new(0), jwks: jwks_of(&[&key]) });
    let jwks_server =
        Server::start(Router::new().route("/jwks", get(scripted_jwks)).with_state(Arc::clone(&script))).await;
    let origin = Server::start(Router::new().fallback(serve_origin).with_state(Arc::new(Backend::default()))).await;
    let mut vars = vars(jwks_server.addr, origin.addr);
    vars.retain(|(name, _)| !["JWKS_TIMEOUT_MS", "JWKS_REFETCH_COOLDOWN_SECONDS", "REVOCATION_URL"].contains(name));
    vars.push(("REVOCATION_URL", "off".to_owned()));
    vars.push(("JWKS_TIMEOUT_MS", "500".to_owned()));
    vars.push(("JWKS_REFETCH_COOLDOWN_SECONDS", "1".to_owned()));
    let mut wrangler = Wrangler::start("fetches", "build", dir.path(), &vars, POLICY_TABLE);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;

    let before = read_counters(&client).await;
    assert!(before.values().all(|count| *count == 0), "a new isolate counts from zero: {before:?}");
    // Each request while no good set has come is refused (503); one fetch per cooldown at most.
    let token = key.token(&claims(&[]));
    let mut unavailable = 0;
    let (_, took) = poll("a good key set after four bad fetches", Duration::from_secs(30), async || {
        let answer = client.get_with_token("/api/items", &token).await;
        match answer.status {
            200 => Ok(()),
            503 => {
                unavailable += 1;
                Err(format!("503 after {} fetches", script.calls.load(Ordering::SeqCst)))
            }
            other => panic!("{other}: {}", answer.text()),
        }
    })
    .await;
    eprintln!("a good key set after {:.1} s, {unavailable} requests refused meanwhile", took.as_secs_f64());
    assert_eq!(script.calls.load(Ordering::SeqCst), 5, "four bad fetches and a good one");
    let after = read_counters(&client).await;
    let expected = counts(&[
        ("allowed.token", 1),
        ("jwks_fetches.bad_status", 1),
        ("jwks_fetches.ok", 1),
        ("jwks_fetches.refused", 2),
        ("jwks_fetches.timeout", 1),
        ("refused.keys_unavailable", unavailable),
        ("token_cache.misses", 1),
    ]);
    assert_eq!(moved(&before, &after), expected, "before {before:?}, after {after:?}");
    // The key set's log lines carry the same outcomes; the refusals their code.
    for outcome in ["timeout", "bad_status", "refused"] {
        wrangler.logged(&[&format!("\"outcome\":\"{outcome}\"")]).await;
    }
    wrangler.logged(&["\"event\":\"refused\"", "\"code\":\"keys_unavailable\""]).await;
    drop(wrangler);
    jwks_server.stop().await;
    origin.stop().await;
}

/// Revocations under the real runtime: a token the issuer lists as revoked is refused within
/// `REVOCATION_MAX_AGE_SECONDS` (and a second) of its listing, the verified-token cache's hits
/// included, and the unchanged list is refreshed with `If-None-Match` (304). The status page is
/// not public. And a key the issuer drops stops verifying within the key set's max-age while every
/// later fetch fails (no stale set past it by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_status_page_and_key_removal_under_wrangler_dev() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = TestKey::new(4);
    let backend = Arc::new(Backend::default());
    backend.set_jwks(jwks_of(&[&key]));
    backend.jwks_max_age.store(300, Ordering::SeqCst);
    let issuer = Server::start(issuer_router(&backend)).await;
    let origin = Server::start(Router::new().fallback(serve_origin).with_state(Arc::clone(&backend))).await;
    let mut wrangler =
        Wrangler::start("revocations", "build", dir.path(), &vars(issuer.addr, origin.addr), POLICY_TABLE);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;

    // 1. Revocations. Two tokens of one user; both pass, the second time from the token cache.
    let revoked = key.token(&claims(&[("jti", json!("revoked-1"))]));
    let kept = key.token(&claims(&[("jti", json!("kept-1"))]));
    for token in [&revoked, &kept, &revoked, &kept] {
        assert_eq!(client.get_with_token("/api/items", token).await.status, 200);
    }
    let listed_at = Instant::now();
    *backend.revoked.lock().expect("lock") =
        Some(format!(r#"{{"revoked": [{{"jti": "revoked-1", "exp": {}}}]}}"#, now() + 300));
    let (refused, took) =
        poll("the revoked token refused", Duration::from_secs(REVOCATION_MAX_AGE_SECS + 5), async || {
            let answer = client.get_with_token("/api/items", &revoked).await;
            if answer.status == 401 { Ok(answer) } else { Err(answer.status.to_string()) }
        })
        .await;
    let bound = Duration::from_secs(REVOCATION_MAX_AGE_SECS + 1);
    eprintln!("revoked at the issuer -> refused at the edge: {:.2} s (bound {bound:?})", took.as_secs_f64());
    assert!(listed_at.elapsed() >= took && took <= bound, "refused {took:?} after the listing");
    assert_eq!(refused.header("www-authenticate"), Some(challenge(Some("invalid_token")).as_str()));
    assert_eq!(client.get_with_token("/api/items", &kept).await.status, 200, "another token of the user still passes");
    let line = wrangler.logged(&["\"code\":\"revoked\""]).await;
    assert!(line.contains("\"sub\":\"user-1\""), "{line}");
    // The list, unchanged, is refreshed with If-None-Match and answered 304.
    poll("a 304 for the unchanged list", Duration::from_secs(REVOCATION_MAX_AGE_SECS + 5), async || {
        client.get_with_token("/api/items", &kept).await;
        let count = backend.revoked_not_modified.load(Ordering::SeqCst);
        if count > 0 { Ok(()) } else { Err(format!("{} fetches", backend.revoked_fetches.load(Ordering::SeqCst))) }
    })
    .await;
    let status = client.status().await.json();
    assert_eq!(status["revocations"]["revocations"]["entries"], 1, "{status}");
    assert!(status["counters"]["refused"]["revoked"].as_u64() >= Some(1), "{status}");
    assert!(status["counters"]["revocation_fetches"]["not_modified"].as_u64() >= Some(1), "{status}");

    // 2. The status page is not public: it answers like a protected route without the role
    // (STATUS_ROLE, default admin) or the secret.
    let admin = key.token(&claims(&[("jti", json!("admin-1")), ("roles", json!(["admin"]))]));
    for (credential, expected) in [
        (None, 401),
        (Some(kept.as_str()), 403),
        (Some("not-the-secret-and-not-a-token"), 401),
        (Some(admin.as_str()), 200),
        (Some(STATUS_SECRET), 200),
    ] {
        let answer = match credential {
            Some(credential) => client.get_with_token("/_portcullis/status", credential).await,
            None => client.get("/_portcullis/status", &[]).await,
        };
        assert_eq!(answer.status, expected, "{credential:?}: {}", answer.text());
        if expected != 200 {
            assert!(answer.header("www-authenticate").is_some() && !answer.text().contains("counters"));
        }
    }
    // 3. Service tokens are told from user tokens: a route for services admits only tokens with
    // gty client-credentials, and the origin is told which kind it gets (a client's claim to be a
    // service is removed).
    let service =
        key.token(&claims(&[("jti", json!("svc-1")), ("sub", json!("billing")), ("gty", json!("client-credentials"))]));
    let spoof = [("x-auth-subject-type", "service"), ("x_auth_subject_type", "service")];
    for (token, path, expected, kind) in [
        (&service, "/api/internal/jobs", 200, Some("service")),
        (&kept, "/api/internal/jobs", 403, None),
        (&service, "/api/items", 200, Some("service")),
        (&kept, "/api/items", 200, Some("user")),
    ] {
        let before = backend.seen().len();
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(spoof);
        let answer = client.get(path, &headers).await;
        assert_eq!(answer.status, expected, "{path}: {}", answer.text());
        if let Some(kind) = kind {
            let seen = backend.last_seen();
            assert_eq!((seen.header("x-auth-subject-type"), seen.header_count("x-auth-subject-type")), (Some(kind), 1));
            assert_eq!(seen.header("x_auth_subject_type"), None);
        } else {
            assert_eq!(answer.header("www-authenticate"), Some(challenge(Some("insufficient_scope")).as_str()));
            assert_eq!(backend.seen().len(), before, "nothing reaches the origin");
        }
    }
    wrangler.logged(&["\"code\":\"wrong_subject_kind\""]).await;

    // Opened by a revoked token? No.
    let revoked_admin = key.token(&claims(&[("jti", json!("revoked-1")), ("roles", json!(["admin"]))]));
    assert_eq!(client.get_with_token("/_portcullis/status", &revoked_admin).await.status, 401);
    wrangler.process.stop();

    // 4. Key removal while fetches fail: a set served with max-age 4 s; the issuer drops the key
    // and from then on every fetch fails (500). The key verifies until the set's max-age, never
    // past it (JWKS_MAX_STALE_SECONDS 0, the default).
    let mut strict = vars(issuer.addr, origin.addr);
    strict.retain(|(name, _)| !["JWKS_MAX_STALE_SECONDS", "REVOCATION_URL"].contains(name));
    strict.push(("REVOCATION_URL", "off".to_owned()));
    backend.jwks_max_age.store(4, Ordering::SeqCst);
    // Its own state: no key set in its Cache API.
    let strict_dir = tempfile::tempdir().expect("temp dir");
    let mut wrangler = Wrangler::start("key-removal", "build", strict_dir.path(), &strict, POLICY_TABLE);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    assert_eq!(client.get_with_token("/api/items", &kept).await.status, 200);
    let fetched_by = Instant::now();
    backend.jwks_failure.store(500, Ordering::SeqCst);
    let (_, took) = poll("the dropped key refused", Duration::from_secs(10), async || {
        let answer = client.get_with_token("/api/items", &kept).await;
        if answer.status == 503 { Ok(()) } else { Err(answer.status.to_string()) }
    })
    .await;
    let since_fetch = fetched_by.elapsed();
    eprintln!("key set max-age 4 s, issuer failing: the key stops verifying {:.2} s later", took.as_secs_f64());
    assert!(since_fetch <= Duration::from_secs(4 + 1), "verified {since_fetch:?} after the set's last fetch");
    let status = client.status().await.json();
    assert_eq!(status["keys"]["state"], "expired", "{status}");
    assert!(
        status["counters"]["jwks_fetches"]["bad_status"].as_u64() >= Some(1),
        "refreshed ahead, and failing: {status}"
    );
    wrangler.process.stop();
    issuer.stop().await;
    origin.stop().await;
}

/// An address nothing listens on.
fn jwks_server_addr_gone() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A bad configuration value: every request gets a generic 500, and the log names the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_answers_500_and_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut vars = vars(jwks_server_addr_gone(), jwks_server_addr_gone());
    // POLICY as JSON text here (the other instances have the table): good, so that the bad
    // LEEWAY_SECONDS after it is what is reported.
    vars.push(("POLICY", POLICY_JSON.to_owned()));
    vars.push(("LEEWAY_SECONDS", "a minute".to_owned()));
    let mut wrangler = Wrangler::start("bad-config", "build", dir.path(), &vars, "");
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    for path in ["/api/items", "/public/page", "/_portcullis/status"] {
        let answer = client.get(path, &[]).await;
        assert_eq!((answer.status, answer.text().as_str()), (500, "internal error\n"), "{path}");
    }
    let line = wrangler.logged(&["\"event\":\"config_error\""]).await;
    assert!(line.contains("\"variable\":\"LEEWAY_SECONDS\""), "{line}");
    assert!(!line.contains("a minute"), "the value is not logged: {line}");
}

// ---------------------------------------------------------------------------------------------
// The edge's assertions to the origin.

/// The header that carries the edge's assertion to the origin.
const ASSERTION_HEADER: &str = "x-portcullis-assertion";
/// The assertions' `iss` when `ASSERTION_ISSUER` is unset.
const EDGE: &str = "portcullis-edge";

/// A signing key of the edge's assertions, as `ASSERTION_KEYS` lists it.
struct EdgeKey {
    signing: SigningKey,
    kid: &'static str,
}

impl EdgeKey {
    fn new(seed: u8, kid: &'static str) -> Self {
        let mut secret = [0x24u8; 32];
        secret[31] = seed;
        Self { signing: SigningKey::from_slice(&secret).expect("valid scalar"), kid }
    }

    /// The public coordinates `x` and `y`, base64url.
    fn coordinates(&self) -> (String, String) {
        let point = self.signing.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        assert_eq!(bytes.len(), 65, "an uncompressed point");
        (b64(&bytes[1..33]), b64(&bytes[33..]))
    }

    /// The private part `d`, base64url: what the edge must never publish nor log.
    fn d(&self) -> String {
        b64(&self.signing.to_bytes())
    }

    /// The key as `ASSERTION_KEYS` holds it: its public coordinates, `d` and `kid`.
    fn private_jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "d": self.d(), "kid": self.kid})
    }
}

/// `ASSERTION_KEYS`: a JWK set of `keys`, the first one signing.
fn assertion_keys(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// `wrangler dev` on the Worker with `vars` and the `ASSERTION_KEYS` secret `keys`, in
/// `dir/<name>/`: the secret in the `.dev.vars` next to its config (where wrangler reads a local
/// Worker's secrets, whose values it does not print), its state there too.
fn start_with_keys(name: &str, dir: &Path, vars: &[(&str, String)], keys: &str) -> Wrangler {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).expect("the instance's folder");
    std::fs::write(own.join(".dev.vars"), format!("ASSERTION_KEYS='{keys}'\n")).expect("write .dev.vars");
    Wrangler::start(name, "build", &own, vars, POLICY_TABLE)
}

/// The edge's published keys (`GET /_portcullis/jwks.json`), checked: 200, JSON, cacheable for
/// five minutes, exactly the public halves of `expected` in that order (no private part). Returns
/// them as an origin would load them.
async fn published_keys(client: &Client, expected: &[&EdgeKey]) -> KeySet {
    let answer = client.get("/_portcullis/jwks.json", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let text = answer.text();
    assert!(!text.contains("\"d\""), "a private part is published: {text}");
    for key in expected {
        assert!(!text.contains(&key.d()), "{}'s private part is published", key.kid);
    }
    let set: JwkSet = serde_json::from_str(&text).expect("a JWK set");
    let published: Vec<(Option<&str>, Option<&str>, Option<&str>)> =
        set.keys.iter().map(|jwk| (jwk.kid.as_deref(), jwk.x.as_deref(), jwk.y.as_deref())).collect();
    let coordinates: Vec<(String, String)> = expected.iter().map(|key| key.coordinates()).collect();
    let wanted: Vec<(Option<&str>, Option<&str>, Option<&str>)> = expected
        .iter()
        .zip(&coordinates)
        .map(|(key, (x, y))| (Some(key.kid), Some(x.as_str()), Some(y.as_str())))
        .collect();
    assert_eq!(published, wanted, "{text}");
    let keys = KeySet::parse(text.as_bytes()).expect("an origin loads it");
    assert!(keys.skipped().is_empty(), "{:?}", keys.skipped());
    keys
}

/// The one assertion the origin received with `seen`.
fn assertion_of(seen: &Seen) -> String {
    assert_eq!(seen.header_count(ASSERTION_HEADER), 1, "one assertion: {:?}", seen.headers);
    seen.header(ASSERTION_HEADER).expect("an assertion in text").to_owned()
}

/// Part `index` of a compact JWS (0 the header, 1 the claims), decoded.
fn jws_part(token: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// The `kid` in an assertion's header.
fn kid_of(assertion: &str) -> String {
    jws_part(assertion, 0)["kid"].as_str().expect("a kid").to_owned()
}

/// How many assertions the status page says were reused and signed.
async fn assertion_counts(client: &Client) -> (u64, u64) {
    let status = client.status().await.json();
    let count = |name: &str| status["assertions"][name].as_u64().unwrap_or_else(|| panic!("{name}: {status}"));
    (count("reused"), count("signed"))
}

/// The edge's assertions under `wrangler dev` (one instance per `ASSERTION_KEYS`): the origin gets
/// one it can verify against the edge's published keys, for the token's identity; one per token,
/// reused; never a client's; the edge takes none as a bearer token, the origin no access token as
/// one; a second key is published before it signs, so the origin keeps accepting across the
/// switch; a bad key set is a 500 that names the variable and not the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_under_wrangler_dev() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer_key = TestKey::new(9);
    let backend = Arc::new(Backend::default());
    backend.set_jwks(jwks_of(&[&issuer_key]));
    backend.jwks_max_age.store(300, Ordering::SeqCst);
    let jwks_server = Server::start(issuer_router(&backend)).await;
    let origin = Server::start(Router::new().fallback(serve_origin).with_state(Arc::clone(&backend))).await;
    let vars = vars(jwks_server.addr, origin.addr);
    // The audience is ORIGIN_URL as configured, without a trailing slash.
    let audience = format!("http://{}/base", origin.addr);
    let validator = Validator::new(ClaimsOptions::edge_assertion(EDGE, audience.clone()));
    let a = EdgeKey::new(1, "edge-a");
    let b = EdgeKey::new(2, "edge-b");
    let token = |jti: &str, changes: &[(&str, Value)]| {
        let mut all = vec![("jti", json!(jti)), ("roles", json!(["reader", "writer"]))];
        all.extend(changes.iter().cloned());
        issuer_key.token(&claims(&all))
    };

    // 1. ASSERTION_KEYS = [A]: the edge publishes A's public half, and every request it forwards
    // with an identity carries an assertion the origin verifies against it.
    let mut wrangler = start_with_keys("assert-a", dir.path(), &vars, &assertion_keys(&[a.private_jwk()]));
    let client = Client::new(wrangler.base.clone());
    let took = wrangler.ready(&client).await;
    eprintln!("wrangler dev (ASSERTION_KEYS [A]): first answer {:.2} s after start", took.as_secs_f64());
    let keys_a = published_keys(&client, &[&a]).await;
    let status = client.status().await.json();
    let shown = &status["assertions"];
    assert_eq!((shown["issuer"].as_str(), shown["ttl_seconds"].as_u64()), (Some(EDGE), Some(60)), "{status}");
    assert_eq!(shown["signing_kid"], "edge-a", "{status}");
    assert!(!status.to_string().contains(&a.d()), "{status}");

    // The first requests at once, on a cold isolate (the key not imported yet): each gets its own
    // valid assertion, for its own token.
    let firsts: Vec<String> =
        (1..=4).map(|i| token(&format!("first-{i}"), &[("sub", json!(format!("user-{i}")))])).collect();
    for answer in at_once(&client, "/api/items", [&firsts[0], &firsts[1], &firsts[2], &firsts[3]]).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 4);
    for seen in &seen {
        let assertion = assertion_of(seen);
        let verified = validator.validate(&assertion, &keys_a, &P256Verifier, now()).expect("a valid assertion");
        assert_eq!(verified.sub.as_deref(), seen.header("x-auth-subject"));
        assert_eq!(jws_part(&assertion, 1)["token_jti"].as_str(), seen.header("x-auth-token-id"));
    }

    // One request, looked at closely.
    let reader = token("assert-1", &[]);
    let sent_at = now();
    let answer = client.get_with_token("/api/items", &reader).await;
    let answered_at = now();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = backend.last_seen();
    let first = assertion_of(&seen);
    let verified = validator.validate(&first, &keys_a, &P256Verifier, now()).expect("a valid assertion");
    let header = jws_part(&first, 0);
    assert_eq!(header, json!({"alg": "ES256", "typ": "portcullis-assertion+jwt", "kid": "edge-a"}));
    let payload = jws_part(&first, 1);
    eprintln!("assertion: {} bytes, header {header}, claims {payload}", first.len());
    assert_eq!((payload["iss"].as_str(), payload["aud"].as_str()), (Some(EDGE), Some(audience.as_str())), "{payload}");
    assert_eq!(verified.sub.as_deref(), Some("user-1"));
    assert_eq!(verified.roles, ["reader", "writer"]);
    assert_eq!(payload["token_jti"], "assert-1", "{payload}");
    assert_eq!(
        (seen.header("x-auth-subject"), seen.header("x-auth-roles"), seen.header("x-auth-token-id")),
        (Some("user-1"), Some("reader,writer"), Some("assert-1")),
        "the X-Auth-* hints say the same"
    );
    assert_eq!(verified.exp - verified.iat, 60, "the default lifetime: {payload}");
    assert!((sent_at..=answered_at).contains(&verified.iat), "issued for this request ({sent_at}): {payload}");
    let jti = verified.jti.clone().expect("a jti");
    assert!(jti.len() == 32 && jti.bytes().all(|byte| byte.is_ascii_hexdigit()), "{jti}");
    let origin_seen: Vec<Seen> = backend.seen();
    let other_jtis: Vec<Value> =
        origin_seen[..4].iter().map(|seen| jws_part(&assertion_of(seen), 1)["jti"].clone()).collect();
    assert!(!other_jtis.contains(&json!(jti)), "each assertion has its own jti");
    // A token that expires sooner than the default lifetime: the assertion expires with it.
    let expires = now() + 20;
    let short = token("assert-short", &[("exp", json!(expires))]);
    let answer = client.get_with_token("/api/items", &short).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let short_assertion = assertion_of(&backend.last_seen());
    let verified = validator.validate(&short_assertion, &keys_a, &P256Verifier, now()).expect("a valid assertion");
    assert_eq!(verified.exp, expires, "never after the access token's exp");
    assert!(verified.exp - verified.iat <= 20, "{verified:?}");

    // 2. Reuse: the same token gets the same assertion, byte for byte; another token another one.
    // The status page counts both.
    let (reused, signed) = assertion_counts(&client).await;
    let answer = client.get_with_token("/api/items", &reader).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(assertion_of(&backend.last_seen()), first, "the same token, the same assertion");
    let writer = token("assert-2", &[("sub", json!("user-2"))]);
    let answer = client.get_with_token("/api/items", &writer).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let second = assertion_of(&backend.last_seen());
    assert_ne!(second, first, "another token, another assertion");
    let verified = validator.validate(&second, &keys_a, &P256Verifier, now()).expect("a valid assertion");
    assert_eq!(
        (verified.sub.as_deref(), jws_part(&second, 1)["token_jti"].as_str()),
        (Some("user-2"), Some("assert-2"))
    );
    assert_eq!(assertion_counts(&client).await, (reused + 1, signed + 1), "one reused, one signed");

    // 3. A client's X-Portcullis-Assertion never reaches the origin: not on a public route (where
    // the edge sends none), not on a protected one (where the origin gets the edge's alone).
    let forged = ("x-portcullis-assertion", "forged");
    let answer = client.get("/public/page", &[forged]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = backend.last_seen();
    assert_eq!(
        (seen.uri.as_str(), seen.header_count(ASSERTION_HEADER)),
        ("/base/public/page", 0),
        "{:?}",
        seen.headers
    );
    let bearer = format!("Bearer {reader}");
    let answer = client.get("/api/items", &[forged, ("authorization", &bearer), forged]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(assertion_of(&backend.last_seen()), first, "the edge's, not the client's");
    let fresh = token("assert-3", &[]);
    let answer = client.get("/api/items", &[("authorization", &format!("Bearer {fresh}")), forged]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let signed_now = assertion_of(&backend.last_seen());
    validator.validate(&signed_now, &keys_a, &P256Verifier, now()).expect("the edge's, newly signed");

    // 4. The edge takes no assertion as a bearer token (its typ, iss, aud and key are not an
    // access token's): 401 invalid_token, nothing reaches the origin.
    let seen_before = backend.seen().len();
    let fetches = backend.fetches();
    let answer = client.get_with_token("/api/items", &first).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.header("www-authenticate"), Some(challenge(Some("invalid_token")).as_str()));
    assert_eq!(backend.seen().len(), seen_before, "not forwarded");
    let line = wrangler.logged(&["\"event\":\"refused\"", "\"code\":\"invalid_token\""]).await;
    eprintln!("an assertion as a bearer token: {line}; key set fetches meanwhile: {}", backend.fetches() - fetches);

    // 5. An access token in an assertion's place fails the origin's check: it names a key the
    // edge's set does not have, and even with the issuer's key in that set, its typ is not an
    // assertion's.
    let refused = validator.validate(&reader, &keys_a, &P256Verifier, now()).expect_err("not an assertion");
    assert!(matches!(refused, VerifyError::Signature(SignatureError::UnknownKid)), "{refused:?}");
    let mut both: JwkSet =
        serde_json::from_str(&client.get("/_portcullis/jwks.json", &[]).await.text()).expect("a JWK set");
    both.keys.push(issuer_key.public.to_jwk());
    let both = KeySet::parse(&serde_json::to_vec(&both).expect("JSON")).expect("a key set");
    let refused = validator.validate(&reader, &both, &P256Verifier, now()).expect_err("not an assertion");
    assert!(matches!(refused, VerifyError::Claims(ClaimsError::WrongTokenType)), "{refused:?}");
    // Even one the issuer were made to sign with the edge's iss and the origin's aud.
    let lookalike = token("assert-4", &[("iss", json!(EDGE)), ("aud", json!(audience))]);
    let refused = validator.validate(&lookalike, &both, &P256Verifier, now()).expect_err("not an assertion");
    assert!(matches!(refused, VerifyError::Claims(ClaimsError::WrongTokenType)), "{refused:?}");
    // And the edge's own assertion fails once expired, or at another origin.
    let exp = jws_part(&first, 1)["exp"].as_u64().expect("exp");
    let late = validator.validate(&first, &keys_a, &P256Verifier, exp + 6).expect_err("expired (5 s of leeway)");
    assert!(matches!(late, VerifyError::Claims(ClaimsError::Expired)), "{late:?}");
    let elsewhere = Validator::new(ClaimsOptions::edge_assertion(EDGE, "http://127.0.0.1:1/other"));
    let refused = elsewhere.validate(&first, &keys_a, &P256Verifier, now()).expect_err("another origin");
    assert!(matches!(refused, VerifyError::Claims(ClaimsError::WrongAudience)), "{refused:?}");
    assert!(!wrangler.process.log_text().contains(&a.d()), "the private key is never logged");
    wrangler.process.stop();

    // 6. Rotation. ASSERTION_KEYS = [A, B]: B is published, A still signs. The origin fetches
    // this set and keeps it.
    let keys = assertion_keys(&[a.private_jwk(), b.private_jwk()]);
    let mut wrangler = start_with_keys("assert-ab", dir.path(), &vars, &keys);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    let keys_ab = published_keys(&client, &[&a, &b]).await;
    let answer = client.get_with_token("/api/items", &reader).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let by_a = assertion_of(&backend.last_seen());
    assert_eq!(kid_of(&by_a), "edge-a", "the first key signs");
    for keys in [&keys_a, &keys_ab] {
        validator.validate(&by_a, keys, &P256Verifier, now()).expect("valid against the old and the new set");
    }
    assert!(!wrangler.process.log_text().contains(&b.d()), "the private keys are never logged");
    wrangler.process.stop();
    // ASSERTION_KEYS = [B, A]: B signs, and the set the origin fetched before already has it; an
    // origin that had not refetched since [A] alone would not know it (hence: publish first).
    let keys = assertion_keys(&[b.private_jwk(), a.private_jwk()]);
    let mut wrangler = start_with_keys("assert-ba", dir.path(), &vars, &keys);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    let keys_ba = published_keys(&client, &[&b, &a]).await;
    let answer = client.get_with_token("/api/items", &reader).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let by_b = assertion_of(&backend.last_seen());
    assert_eq!(kid_of(&by_b), "edge-b", "the new first key signs");
    let verified = validator.validate(&by_b, &keys_ab, &P256Verifier, now()).expect("valid against the kept set");
    assert_eq!((verified.sub.as_deref(), jws_part(&by_b, 1)["token_jti"].as_str()), (Some("user-1"), Some("assert-1")));
    validator.validate(&by_b, &keys_ba, &P256Verifier, now()).expect("valid against the new set");
    let refused = validator.validate(&by_b, &keys_a, &P256Verifier, now()).expect_err("B was not in [A]");
    assert!(refused.is_unknown_kid(), "{refused:?}");
    // A's assertions made before the switch stay good against the new set while they live.
    let first_iat = jws_part(&first, 1)["iat"].as_u64().expect("iat");
    validator.validate(&first, &keys_ba, &P256Verifier, first_iat).expect("A's assertion after the switch");
    let status = client.status().await.json();
    assert_eq!(status["assertions"]["signing_kid"], "edge-b", "{status}");
    let log = wrangler.process.log_text();
    assert!(!log.contains(&a.d()) && !log.contains(&b.d()), "the private keys are never logged");
    wrangler.process.stop();

    // A key set with a bad key (B, then A without its private part): every request gets a generic
    // 500, and the log names ASSERTION_KEYS, never a key.
    let mut a_public = a.private_jwk();
    a_public.as_object_mut().expect("an object").remove("d");
    let keys = assertion_keys(&[b.private_jwk(), a_public]);
    let mut wrangler = start_with_keys("assert-bad", dir.path(), &vars, &keys);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    let seen_before = backend.seen().len();
    for path in ["/api/items", "/public/page", "/_portcullis/status", "/_portcullis/jwks.json"] {
        let answer = client.get_with_token(path, &reader).await;
        assert_eq!((answer.status, answer.text().as_str()), (500, "internal error\n"), "{path}");
    }
    assert_eq!(backend.seen().len(), seen_before, "nothing reaches the origin");
    let line = wrangler.logged(&["\"event\":\"config_error\""]).await;
    assert!(line.contains("\"variable\":\"ASSERTION_KEYS\""), "{line}");
    let log = wrangler.process.log_text();
    assert!(!log.contains(&b.d()) && !log.contains(&a.coordinates().0), "no key in the log: {line}");
    eprintln!("a bad ASSERTION_KEYS: {line}");
    wrangler.process.stop();

    // A key whose `d` is another key's (A's coordinates, B's private part): refused when the edge
    // imports it (500 on a protected route, public routes still served), logged, without the key.
    let mut mismatched = a.private_jwk();
    mismatched["d"] = json!(b.d());
    let keys = assertion_keys(&[mismatched]);
    let mut wrangler = start_with_keys("assert-mismatch", dir.path(), &vars, &keys);
    let client = Client::new(wrangler.base.clone());
    wrangler.ready(&client).await;
    let seen_before = backend.seen().len();
    let answer = client.get_with_token("/api/items", &reader).await;
    assert_eq!((answer.status, answer.text().as_str()), (500, "internal error\n"), "no assertion signed");
    assert_eq!(backend.seen().len(), seen_before, "nothing reaches the origin without its assertion");
    // workerd's importKey already refuses the pair ("does not import"); the probe would catch a
    // runtime that does not.
    let line = wrangler.logged(&["\"event\":\"assertion_key_unusable\""]).await;
    assert!(line.contains("\"kid\":\"edge-a\""), "{line}");
    assert!(!wrangler.process.log_text().contains(&b.d()), "no key in the log: {line}");
    assert_eq!(client.get("/public/page", &[]).await.status, 200, "public routes need no assertion");
    wrangler.process.stop();

    jwks_server.stop().await;
    origin.stop().await;
    eprintln!("assertions under wrangler dev: {:.1} s", started.elapsed().as_secs_f64());
}

/// The benchmark (`cargo xtask bench-edge`): the cost of a verified request inside workerd with
/// warm keys, against a plain `crypto.subtle.verify` loop. Prints its figures; asserts nothing
/// about time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: needs edge/build-bench, run it with `cargo xtask bench-edge`"]
async fn bench_inside_workerd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let iterations: u32 = std::env::var("PORTCULLIS_BENCH_N").ok().and_then(|n| n.parse().ok()).unwrap_or(500);
    let mut wrangler = Wrangler::start(
        "bench",
        "build-bench",
        dir.path(),
        &vars(jwks_server_addr_gone(), jwks_server_addr_gone()),
        POLICY_TABLE,
    );
    let client = Client::new(wrangler.base.clone());
    let took = wrangler.ready(&client).await;
    let answer = client.get(&format!("/_portcullis/bench?n={iterations}"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let result = answer.json();
    println!("wrangler dev: first answer {:.2} s after start", took.as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&result).expect("JSON"));
    let figure = |name: &str| result[name].as_f64().unwrap_or(f64::NAN);
    println!(
        "per verified request: edge {:.1} us (of which verification {:.1} us), crypto.subtle.verify floor {:.1} us, \
         ratio {:.2} (verification {:.2}); median of the rounds' own ratios {:.2} (verification {:.2}); \
         a plain JavaScript edge {:.1} us (verification {:.1} us), its ratios {:.2} ({:.2}); \
         with the token cached (seen before) {:.1} us (verification {:.1} us), ratios {:.2} ({:.2})",
        figure("median_edge_us"),
        figure("median_verification_us"),
        figure("median_floor_us"),
        figure("ratio"),
        figure("verification_ratio"),
        figure("median_paired_ratio"),
        figure("median_paired_verification_ratio"),
        figure("median_plain_js_edge_us"),
        figure("median_plain_js_verification_us"),
        figure("median_paired_plain_js_ratio"),
        figure("median_paired_plain_js_verification_ratio"),
        figure("median_cached_edge_us"),
        figure("median_cached_verification_us"),
        figure("median_paired_cached_ratio"),
        figure("median_paired_cached_verification_ratio"),
    );
    let breakdown = |name: &str| result["breakdown_us"][name].as_f64().unwrap_or(f64::NAN);
    println!(
        "the origin's assertion ({} bytes): signed {:.1} us (ratio to the floor {:.2}), reused {:.1} us ({:.2})",
        result["assertion_bytes"],
        breakdown("assertion_signed"),
        figure("assertion_signed_ratio"),
        breakdown("assertion_reused"),
        figure("assertion_reused_ratio"),
    );
    println!(
        "from a browser's session cookie (sealed, its token fresh): {:.1} us, ratio {:.2} (token cached: {:.1} us, {:.2}); \
         a revocation look-up among {} entries {:.1} us; parsing that list ({} bytes) {:.0} us",
        figure("median_cookie_edge_us"),
        figure("median_paired_cookie_ratio"),
        figure("median_cached_cookie_edge_us"),
        figure("median_paired_cached_cookie_ratio"),
        result["revocation_entries"],
        breakdown("revocation_lookup"),
        result["revocation_list_bytes"],
        figure("median_revocation_list_parse_us"),
    );
}
