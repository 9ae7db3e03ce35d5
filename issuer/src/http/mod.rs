//! The HTTP layer: one router per area, merged in [`app`], with the middleware every answer goes
//! through. Handlers parse the request, call the domain through [`AppState`], and map its errors
//! with `?` (the one mapping is in [`error`]).
//!
//! | module | routes |
//! | --- | --- |
//! | [`well_known`] | `/.well-known/jwks.json`, `/.well-known/openid-configuration`, `/healthz` |
//! | [`keys`] | `/admin/keys`, `/admin/keys/rotate`, `/admin/keys/{kid}/revoke` |
//! | [`oauth`] | `/oauth/token`, `/oauth/revoke`, `/oauth/introspect` |
//! | [`accounts`] | `/users`, `/userinfo`, `/admin/users...`, `/logout`, `/logout-all`, `/revoked` |
//! | [`signin`] | `/authorize`, `/login`, `/login/email`, `/login/email/continue`, `/session/end` (HTML pages from [`pages`]) |
//! | [`observe`] | `/metrics` (here, or on its own listener: the `metrics_bind` setting) |
//! | this module | `/openapi.json`: the OpenAPI 3.1 description of all of the above |
//!
//! Every route is registered with `routes!` from its `#[utoipa::path]` description, so the
//! router and its OpenAPI description are built from the same source.

mod accounts;
mod error;
mod extract;
mod keys;
mod oauth;
mod observe;
mod pages;
mod signin;
mod well_known;

pub use error::ApiError;
pub use signin::{CSRF_COOKIE, SESSION_COOKIE};

use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Router};
use error::{ErrorRecord, code_for_status, error_body};
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a request may take before it is answered `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenAPI document's root: what the paths are merged into.
#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis issuer", description = "ES256 access tokens, their keys (JWKS), accounts and sessions."),
    modifiers(&BearerScheme),
    tags(
        (name = "keys", description = "The published keys and the discovery document"),
        (name = "oauth", description = "The token, revocation and introspection endpoints"),
        (name = "accounts", description = "Registration and the bearer's account"),
        (name = "sessions", description = "Logout and the revoked access tokens"),
        (name = "signin", description = "Browser sign-in: the authorization endpoint, the login page, sign-in links, RP-initiated logout"),
        (name = "admin", description = "Keys and users, with an admin token for the admin audience"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the admin and account paths name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The serialized OpenAPI document, handed to its route as an extension.
#[derive(Clone)]
struct OpenApiJson(Bytes);

/// The OpenAPI 3.1 description of the issuer's HTTP API (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_document(Extension(OpenApiJson(document)): Extension<OpenApiJson>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document).into_response()
}

/// The routes of every area with their descriptions; `/metrics` among them unless it has a
/// listener of its own.
fn described_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(well_known::routes())
        .merge(keys::routes())
        .merge(oauth::routes())
        .merge(accounts::routes())
        .merge(signin::routes())
        .routes(routes!(openapi_document));
    if state.config().metrics_bind.is_some() { routes } else { routes.merge(observe::routes()) }
}

/// The OpenAPI description of what [`app`] serves.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    described_routes(state).into_openapi()
}

/// The issuer's routes, with tracing, security headers, a body size limit, a timeout, JSON
/// bodies for every error, and every request counted in the metrics.
pub fn app(state: AppState) -> Router {
    let (routes, document) = described_routes(&state).split_for_parts();
    let document = OpenApiJson(Bytes::from(document.to_json().unwrap_or_else(|_| "{}".to_owned())));
    finish(routes.layer(Extension(document)), state)
}

/// Only `/metrics`, for the listener of the `metrics_bind` setting.
pub fn metrics_app(state: AppState) -> Router {
    let (routes, _) = observe::routes().split_for_parts();
    finish(routes, state)
}

/// The fallbacks, the request metrics and the common middleware around `routes`.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::record_request));
    with_middleware(routes.with_state(state))
}

/// The layers around the routes. In a `ServiceBuilder` the first layer is the outermost: tracing
/// sees every response; the security headers are added to every response, a caught panic's
/// included; errors are logged once and those made by the layers below get JSON bodies; a panic
/// becomes a `500`.
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
            .layer(axum::middleware::from_fn(log_errors))
            .layer(CatchPanicLayer::custom(|_| error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")))
            .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT)),
    )
}

/// The one place errors are logged: a server error as an error with its detail, a refusal as
/// info with its reason. Error answers that are neither JSON nor a page (those made by tower
/// layers: 408, 413, ...) get the JSON body `{"error": code}`, keeping their status and headers.
async fn log_errors(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let record = response.extensions_mut().remove::<ErrorRecord>();
    let code = record.as_ref().map_or_else(|| code_for_status(status), |record| record.code);
    let reason = record.as_ref().map_or("", |record| record.reason.as_str());
    if status.is_server_error() {
        tracing::error!(error = reason, code, status = status.as_u16(), "request failed");
    } else {
        tracing::info!(reason, code, status = status.as_u16(), "request refused");
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if content_type == b"application/json" || content_type.starts_with(b"text/html") {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": code }).to_string();
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

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
}
