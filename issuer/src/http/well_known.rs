//! The public documents: the JWKS, the discovery document, and the health check.

use super::ApiError;
use crate::domain::keys::KEY_SET_CHECK_INTERVAL;
use crate::domain::published::Checked;
use crate::domain::signin::request::SCOPES;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/.well-known/jwks.json`, `/.well-known/openid-configuration`, `/healthz`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks)).routes(routes!(discovery)).routes(routes!(healthz))
}

/// `Cache-Control: public, max-age=N`.
pub(super) fn public_cache(max_age: Duration) -> HeaderValue {
    HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// `GET /.well-known/jwks.json`: the published keys, from the cached body. A body the database
/// could not confirm just now (it did not answer in time) may lack a key published since, so
/// verifiers are told to keep it only until the next check rather than for `jwks_max_age`.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    responses(
        (status = 200, description = "The published keys (RFC 7517), with `ETag` and `Cache-Control`", content_type = "application/json"),
        (status = 304, description = "`If-None-Match` matched"),
    )
)]
async fn jwks(State(state): State<AppState>, request_headers: HeaderMap) -> Result<Response, ApiError> {
    let Checked { snapshot, fresh } = state.jwks().await;
    let max_age = if fresh { state.config().jwks_max_age } else { KEY_SET_CHECK_INTERVAL };
    let etag = HeaderValue::try_from(snapshot.etag.as_str())
        .map_err(|_| ApiError::Internal("the JWKS entity tag is not a header value".to_owned()))?;
    let headers = [(header::CACHE_CONTROL, public_cache(max_age)), (header::ETAG, etag)];
    if if_none_match(&request_headers, snapshot.etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((headers, [content_type], snapshot.body.clone()).into_response())
}

/// RFC 9110 §13.1.2: `If-None-Match` matches `*` or any listed entity tag, compared weakly.
pub(super) fn if_none_match(headers: &HeaderMap, ours: &[u8]) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value
            .as_bytes()
            .split(|byte| *byte == b',')
            .map(<[u8]>::trim_ascii)
            .any(|candidate| candidate == b"*" || candidate.strip_prefix(b"W/").unwrap_or(candidate) == ours)
    })
}

/// The OAuth 2.0 grant types the token endpoint serves.
const GRANT_TYPES: &[&str] = &["authorization_code", "password", "refresh_token", "client_credentials"];

/// How clients authenticate at the token, revocation and introspection endpoints (`none`: a
/// public client, with PKCE for codes).
const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];

/// The discovery document (RFC 8414, OpenID Connect Discovery 1.0): the fields that apply.
/// RFC 8414 §3.2: a claim with zero elements MUST be omitted, so no empty array is published.
#[derive(Serialize)]
struct Discovery<'a> {
    issuer: &'a str,
    authorization_endpoint: String,
    jwks_uri: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    userinfo_endpoint: String,
    end_session_endpoint: String,
    response_types_supported: &'a [&'a str],
    response_modes_supported: &'a [&'a str],
    grant_types_supported: &'a [&'a str],
    code_challenge_methods_supported: &'a [&'a str],
    scopes_supported: &'a [&'a str],
    token_endpoint_auth_methods_supported: &'a [&'a str],
    revocation_endpoint_auth_methods_supported: &'a [&'a str],
    introspection_endpoint_auth_methods_supported: &'a [&'a str],
    subject_types_supported: &'a [&'a str],
    id_token_signing_alg_values_supported: &'a [&'a str],
    claims_supported: &'a [&'a str],
    prompt_values_supported: &'a [&'a str],
    /// RFC 9207: the authorization response names the issuer (`iss`).
    authorization_response_iss_parameter_supported: bool,
}

/// `GET /.well-known/openid-configuration`.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "keys",
    responses((status = 200, description = "The discovery document (RFC 8414)", content_type = "application/json"))
)]
async fn discovery(State(state): State<AppState>) -> Response {
    let config = state.config();
    let document = Discovery {
        issuer: &config.issuer,
        authorization_endpoint: format!("{}/authorize", config.issuer),
        jwks_uri: config.jwks_uri(),
        token_endpoint: format!("{}/oauth/token", config.issuer),
        revocation_endpoint: format!("{}/oauth/revoke", config.issuer),
        introspection_endpoint: format!("{}/oauth/introspect", config.issuer),
        userinfo_endpoint: format!("{}/userinfo", config.issuer),
        end_session_endpoint: format!("{}/session/end", config.issuer),
        response_types_supported: &["code"],
        response_modes_supported: &["query"],
        grant_types_supported: GRANT_TYPES,
        code_challenge_methods_supported: &["S256"],
        scopes_supported: SCOPES,
        token_endpoint_auth_methods_supported: AUTH_METHODS,
        revocation_endpoint_auth_methods_supported: AUTH_METHODS,
        introspection_endpoint_auth_methods_supported: &AUTH_METHODS[..2],
        subject_types_supported: &["public"],
        id_token_signing_alg_values_supported: &["ES256"],
        claims_supported: &[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "roles",
            "client_id",
            "scope",
            "auth_time",
            "nonce",
            "sid",
            "at_hash",
            "email",
        ],
        prompt_values_supported: &["none", "login", "consent", "select_account"],
        authorization_response_iss_parameter_supported: true,
    };
    ([(header::CACHE_CONTROL, public_cache(config.jwks_max_age))], Json(document)).into_response()
}

/// `GET /healthz`: 200 when the database answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", content_type = "application/json"),
        (status = 503, description = "The database does not answer"),
    )
)]
async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.healthy().await {
        Ok(Json(serde_json::json!({ "status": "ok" })).into_response())
    } else {
        Err(ApiError::Unavailable { code: "unavailable", reason: "the database does not answer".to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let matches = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            if_none_match(&headers, b"\"abc\"")
        };
        assert!(matches("\"abc\""));
        assert!(matches("W/\"abc\""));
        assert!(matches("\"x\", \"abc\""));
        assert!(matches("*"));
        assert!(!matches("\"abcd\""));
        assert!(!matches("abc"));
        assert!(!matches(""));
    }
}
