//! The HTTP API: the JWKS, discovery, health, the admin endpoints for keys, and the routes of
//! the OAuth and account endpoints (in [`oauth`](crate::oauth)).

use crate::error::{ApiError, code_for_status, error_body};
use crate::jwks_cache::Checked;
use crate::keys::{KEY_SET_CHECK_INTERVAL, Rotation};
use crate::oauth;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jwks::Claims;
use serde::Serialize;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a request may take before it is answered `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The role an admin token must carry.
pub const ADMIN_ROLE: &str = "admin";

/// The issuer's routes, with tracing, security headers, a body size limit, a timeout, and JSON
/// bodies for every error.
pub fn app(state: AppState) -> Router {
    with_middleware(
        Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/healthz", get(healthz))
            .route("/admin/keys", get(list_keys))
            .route("/admin/keys/rotate", post(rotate_keys))
            .route("/admin/keys/{kid}/revoke", post(revoke_key))
            .route("/oauth/token", post(oauth::token))
            .route("/oauth/revoke", post(oauth::revoke))
            .route("/oauth/introspect", post(oauth::introspect))
            .route("/logout", post(oauth::logout))
            .route("/logout-all", post(oauth::logout_all))
            .route("/revoked", get(oauth::revoked))
            .route("/users", post(oauth::create_user))
            .route("/userinfo", get(oauth::userinfo))
            .route("/admin/users", get(oauth::list_users))
            .route("/admin/users/{id}/roles", post(oauth::set_roles))
            .route("/admin/users/{id}/disable", post(oauth::disable_user))
            .fallback(|| async { ApiError::NotFound })
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .with_state(state),
    )
}

/// The layers around the routes. In a `ServiceBuilder` the first layer is the outermost: tracing
/// sees every response; the security headers are added to every response, a caught panic's
/// included; errors made by the layers below get JSON bodies; a panic becomes a `500`.
fn with_middleware(routes: Router) -> Router {
    let static_header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    routes.layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(tracing::Level::INFO)))
            .layer(static_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(static_header(header::X_FRAME_OPTIONS, "DENY"))
            .layer(static_header(header::REFERRER_POLICY, "no-referrer"))
            .layer(static_header(header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
            .layer(static_header(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
            .layer(static_header(header::CACHE_CONTROL, "no-store"))
            .layer(axum::middleware::from_fn(json_errors))
            .layer(CatchPanicLayer::custom(|_| error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")))
            .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT)),
    )
}

/// Gives every error response that is not JSON yet (those made by tower layers: 408, 413, ...)
/// the JSON body `{"error": code}`, keeping its status and headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|value| value == "application/json");
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": code_for_status(status) }).to_string();
    Response::from_parts(parts, Body::from(body))
}

/// `Cache-Control: public, max-age=N`.
pub(crate) fn public_cache(max_age: Duration) -> HeaderValue {
    HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// `GET /.well-known/jwks.json`: the published keys, from the cached body. A body the database
/// could not confirm just now (it did not answer in time) may lack a key published since, so
/// verifiers are told to keep it only until the next check rather than for `jwks_max_age`.
async fn jwks(State(state): State<AppState>, request_headers: HeaderMap) -> Response {
    let Checked { snapshot, fresh } = state.jwks().await;
    let max_age = if fresh { state.config().jwks_max_age } else { KEY_SET_CHECK_INTERVAL };
    let cache_control = public_cache(max_age);
    let headers = [(header::CACHE_CONTROL, cache_control), (header::ETAG, snapshot.etag.clone())];
    if if_none_match(&request_headers, &snapshot.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (headers, [content_type], snapshot.body.clone()).into_response()
}

/// RFC 9110 §13.1.2: `If-None-Match` matches `*` or any listed entity tag, compared weakly.
fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value
            .as_bytes()
            .split(|byte| *byte == b',')
            .map(<[u8]>::trim_ascii)
            .any(|candidate| candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == ours)
    })
}

/// The OAuth 2.0 grant types the token endpoint serves.
const GRANT_TYPES: &[&str] = &["password", "refresh_token", "client_credentials"];

/// How clients authenticate at the token, revocation and introspection endpoints (`none`: the
/// public client, for the password and refresh grants).
const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];

/// The discovery document (RFC 8414, OpenID Connect Discovery 1.0): the fields that apply.
///
/// RFC 8414 §3.2: a claim with zero elements MUST be omitted, so no empty array is published.
/// `response_types_supported` (REQUIRED by §2) is omitted: it lists what the authorization
/// endpoint answers, and there is none, nor do the grants served use one; the OAuth working
/// group's direction for such servers is to omit it (as OpenID4VCI does). Servers with an
/// authorization endpoint (Ory Hydra, Keycloak, Dex) list only the flows they really serve.
#[derive(Serialize)]
struct Discovery<'a> {
    issuer: &'a str,
    jwks_uri: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    userinfo_endpoint: String,
    grant_types_supported: &'a [&'a str],
    token_endpoint_auth_methods_supported: &'a [&'a str],
    revocation_endpoint_auth_methods_supported: &'a [&'a str],
    introspection_endpoint_auth_methods_supported: &'a [&'a str],
    subject_types_supported: &'a [&'a str],
    claims_supported: &'a [&'a str],
}

/// `GET /.well-known/openid-configuration`.
async fn discovery(State(state): State<AppState>) -> Response {
    let config = state.config();
    let document = Discovery {
        issuer: &config.issuer,
        jwks_uri: config.jwks_uri(),
        token_endpoint: format!("{}/oauth/token", config.issuer),
        revocation_endpoint: format!("{}/oauth/revoke", config.issuer),
        introspection_endpoint: format!("{}/oauth/introspect", config.issuer),
        userinfo_endpoint: format!("{}/userinfo", config.issuer),
        grant_types_supported: GRANT_TYPES,
        token_endpoint_auth_methods_supported: AUTH_METHODS,
        revocation_endpoint_auth_methods_supported: AUTH_METHODS,
        introspection_endpoint_auth_methods_supported: &AUTH_METHODS[..2],
        subject_types_supported: &["public"],
        claims_supported: &["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "roles", "client_id", "scope"],
    };
    ([(header::CACHE_CONTROL, public_cache(config.jwks_max_age))], Json(document)).into_response()
}

/// `GET /healthz`: 200 when the database answers.
async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.healthy().await {
        Ok(Json(serde_json::json!({ "status": "ok" })).into_response())
    } else {
        Err(ApiError::Unavailable)
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingToken)?;
    let value = value.to_str().map_err(|_| ApiError::MalformedAuthorization)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    Ok(token.trim())
}

/// The claims of a verified admin token: an extractor that refuses everything else.
#[derive(Debug)]
pub(crate) struct Admin(Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.verify_admin_token(bearer_token(parts)?).await?;
        if !claims.roles.iter().any(|role| role == ADMIN_ROLE) {
            tracing::info!(sub = ?claims.sub, jti = ?claims.jti, "admin endpoint refused: no admin role");
            return Err(ApiError::InsufficientScope);
        }
        Ok(Self(claims))
    }
}

/// No `Authorization` header: no admin; a header: it must hold an admin token.
impl OptionalFromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
    }
}

impl Admin {
    /// Logs an admin action with the admin's `sub` and `jti`.
    pub(crate) fn audit(&self, action: &str) {
        tracing::info!(sub = ?self.0.sub, jti = ?self.0.jti, action, "admin");
    }
}

/// The claims of a verified, unrevoked access token for any configured audience (or the admin
/// audience).
#[derive(Debug)]
pub(crate) struct Bearer(pub(crate) Claims);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Self(state.verify_access_token(bearer_token(parts)?).await?))
    }
}

/// `GET /admin/keys`: every key with its lifecycle times.
async fn list_keys(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("list keys");
    let keys = state.keys().list().await?;
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

/// `POST /admin/keys/rotate`: 200 when a next key took over, 202 when one is scheduled to.
async fn rotate_keys(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("rotate");
    let rotation = state.rotate_keys().await?;
    let status = match rotation {
        Rotation::Rotated { .. } => StatusCode::OK,
        Rotation::Scheduled { .. } => StatusCode::ACCEPTED,
    };
    Ok((status, Json(rotation)).into_response())
}

/// `POST /admin/keys/{kid}/revoke`: emergency revocation.
async fn revoke_key(
    admin: Admin,
    State(state): State<AppState>,
    Path(kid): Path<String>,
) -> Result<Response, ApiError> {
    admin.audit("revoke");
    if !is_key_id(&kid) {
        return Err(ApiError::InvalidKid);
    }
    Ok(Json(state.revoke_key(&kid).await?).into_response())
}

/// An RFC 7638 SHA-256 thumbprint: 43 base64url characters.
fn is_key_id(kid: &str) -> bool {
    kid.len() == 43 && kid.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let etag = HeaderValue::from_static("\"abc\"");
        let matches = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            if_none_match(&headers, &etag)
        };
        assert!(matches("\"abc\""));
        assert!(matches("W/\"abc\""));
        assert!(matches("\"x\", \"abc\""));
        assert!(matches("*"));
        assert!(!matches("\"abcd\""));
        assert!(!matches("abc"));
        assert!(!matches(""));
    }

    #[tokio::test]
    async fn a_caught_panic_gets_the_security_headers_and_a_json_body() {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        async fn boom() -> StatusCode {
            panic!("a handler bug")
        }
        let routes = Router::new().route("/boom", get(boom));
        let response = with_middleware(routes)
            .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers().clone();
        for (name, value) in [
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "application/json"),
        ] {
            assert_eq!(headers.get(&name).map(HeaderValue::as_bytes), Some(value.as_bytes()), "{name}");
        }
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], br#"{"error":"internal_error"}"#);
    }

    #[test]
    fn key_ids() {
        assert!(is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U"));
        assert!(!is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-"));
        assert!(!is_key_id("oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD+U"));
        assert!(!is_key_id("../../../../etc/passwd"));
    }
}
