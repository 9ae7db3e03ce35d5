//! Shared set-up: an issuer on a fresh SQLite file in a temporary folder, with a manual clock.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use devtools::postgres::TestDatabase;
use http_body_util::BodyExt as _;
use issuer::clock::ManualClock;
use issuer::config::Config;
use issuer::domain::kek::Kek;
use issuer::domain::tokens::{AccessTokenRequest, MintedToken};
use issuer::{AppState, app};
use jwks::{ClaimsOptions, KeySet, Validator};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// The time every test starts at.
pub(crate) const T0: u64 = 1_800_000_000;

/// An issuer under test.
pub(crate) struct TestIssuer {
    pub(crate) dir: TempDir,
    pub(crate) kek: Kek,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) state: AppState,
    /// Declared after `state`, so dropped after the issuer's connections to it.
    database: Option<TestDatabase>,
}

/// A configuration with `data_dir` in `dir`, the database at `database_url` (default: SQLite in
/// `dir`), cheap password hashes (unless `settings` say otherwise) and the given `PORTCULLIS_*`
/// settings.
pub(crate) fn config(dir: &Path, database_url: Option<&str>, settings: &[(&str, &str)]) -> Config {
    let mut env = vec![
        ("PORTCULLIS_DATA_DIR".to_owned(), dir.to_str().expect("UTF-8 path").to_owned()),
        ("PORTCULLIS_PASSWORD_HASH_MEMORY".to_owned(), "64".to_owned()),
        ("PORTCULLIS_PASSWORD_HASH_ITERATIONS".to_owned(), "1".to_owned()),
    ];
    if let Some(url) = database_url {
        env.push(("PORTCULLIS_DATABASE_URL".to_owned(), url.to_owned()));
    }
    env.extend(
        settings.iter().map(|(name, value)| (format!("PORTCULLIS_{}", name.to_ascii_uppercase()), (*value).to_owned())),
    );
    Config::load(None, env).expect("valid test configuration")
}

/// With `PORTCULLIS_TEST_POSTGRES=postgres://user@host:port` set, every test runs on a fresh
/// PostgreSQL database on that server (dropped after the test) instead of a SQLite file.
pub(crate) fn fresh_postgres_database() -> Option<TestDatabase> {
    TestDatabase::create("issuer_test")
}

impl TestIssuer {
    /// A fresh issuer with the given settings.
    pub(crate) async fn start(settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = fresh_postgres_database();
        let kek = Kek::generate();
        let clock = Arc::new(ManualClock::new(T0));
        let config = config(dir.path(), database.as_ref().map(TestDatabase::url).as_deref(), settings);
        let state = AppState::open(config, kek.clone(), clock.clone()).await.expect("starts");
        Self { dir, kek, clock, state, database }
    }

    /// The configuration of this issuer's database with other settings.
    pub(crate) fn config(&self, settings: &[(&str, &str)]) -> Config {
        config(self.dir.path(), self.database.as_ref().map(TestDatabase::url).as_deref(), settings)
    }

    /// Another process on the same database, sharing the clock and the KEK.
    pub(crate) async fn second_process(&self, settings: &[(&str, &str)]) -> AppState {
        AppState::open(self.config(settings), self.kek.clone(), self.clock.clone()).await.expect("starts")
    }

    pub(crate) fn app(&self) -> Router {
        app(self.state.clone())
    }

    pub(crate) fn now(&self) -> u64 {
        self.state.now()
    }

    pub(crate) fn advance(&self, by: Duration) -> u64 {
        self.clock.advance(by)
    }

    /// Mints an access token for the first configured audience.
    pub(crate) async fn mint(&self, roles: &[&str]) -> MintedToken {
        mint(&self.state, &self.state.config().audiences[0].clone(), roles).await
    }

    /// Mints an admin token (admin audience, `admin` role).
    pub(crate) async fn admin_token(&self) -> String {
        mint(&self.state, &self.state.config().admin_audience.clone(), &["admin"]).await.token
    }

    /// The JWKS as a verifier reads it now.
    pub(crate) async fn key_set(&self) -> KeySet {
        key_set(&self.app()).await
    }

    /// A validator for access tokens of the first configured audience.
    pub(crate) fn validator(&self) -> Validator {
        let config = self.state.config();
        Validator::new(ClaimsOptions::new(config.issuer.clone(), config.audiences.clone()))
    }
}

pub(crate) async fn mint(state: &AppState, audience: &str, roles: &[&str]) -> MintedToken {
    let request = AccessTokenRequest {
        subject: "user-1".to_owned(),
        audiences: vec![audience.to_owned()],
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        client_id: "tests".to_owned(),
        scope: None,
        ttl: None,
        service: false,
    };
    state.mint(&request).await.expect("mints")
}

/// The served JWKS, parsed by the `jwks` core.
pub(crate) async fn key_set(app: &Router) -> KeySet {
    let (status, _, body) =
        send(app, Request::get("/.well-known/jwks.json").body(Body::empty()).expect("request")).await;
    assert_eq!(status, StatusCode::OK);
    KeySet::parse(&body).expect("a JWKS the core accepts")
}

/// Sends one request through the router.
pub(crate) async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

/// `GET path`, with an optional bearer token.
pub(crate) async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(app, request.body(Body::empty()).expect("request")).await
}

/// `POST path` without a body, with an optional bearer token.
pub(crate) async fn post(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::post(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(app, request.body(Body::empty()).expect("request")).await
}

/// A JSON body.
pub(crate) fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

/// `POST path` with a form-encoded body, optional HTTP Basic client credentials and an optional
/// peer address (as `serve` records it).
pub(crate) async fn post_form(
    app: &Router,
    path: &str,
    body: &str,
    basic: Option<(&str, &str)>,
    peer: Option<&str>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    use base64::Engine as _;
    let mut request = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    let mut request = request.body(Body::from(body.to_owned())).expect("request");
    if let Some(peer) = peer {
        let address: std::net::SocketAddr = peer.parse().expect("a socket address");
        request.extensions_mut().insert(axum::extract::ConnectInfo(address));
    }
    let (status, headers, body) = send(app, request).await;
    let value = if body.is_empty() { serde_json::Value::Null } else { json(&body) };
    (status, headers, value)
}

/// `POST path` with a JSON body and an optional bearer token.
pub(crate) async fn post_json(
    app: &Router,
    path: &str,
    body: &serde_json::Value,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, body) = send(app, request.body(Body::from(body.to_string())).expect("request")).await;
    (status, if body.is_empty() { serde_json::Value::Null } else { json(&body) })
}
