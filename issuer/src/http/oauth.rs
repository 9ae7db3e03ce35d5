//! The OAuth 2.0 endpoints: the token endpoint (RFC 6749: `authorization_code` with PKCE,
//! `password`, `refresh_token`, `client_credentials`), revocation (RFC 7009) and introspection
//! (RFC 7662).

use super::ApiError;
use super::extract::{Caller, OAuthForm};
use crate::domain::accounts::Client;
use crate::domain::tokens::{AccessTokenRequest, MintedToken};
use crate::metrics::GrantLabels;
use crate::state::{AppState, TokenError};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jwks::Claims;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(token)).routes(routes!(revoke)).routes(routes!(introspect))
}

/// RFC 6749 §5.1.
#[derive(Serialize, ToSchema)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// OpenID Connect Core §3.1.3.3, when `openid` was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    /// The granted scopes, when the grant had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

fn token_response(access: MintedToken, refresh: Option<String>) -> Response {
    tokens_response(TokenResponse {
        expires_in: access.expires_at.saturating_sub(access.issued_at),
        access_token: access.token,
        token_type: "Bearer",
        refresh_token: refresh,
        id_token: None,
        scope: None,
    })
}

fn tokens_response(body: TokenResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
}

/// `POST /oauth/token`: each grant is counted by type and outcome.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`grant_type` and the grant's parameters; client credentials by Basic or in the form"),
    responses(
        (status = 200, description = "Tokens (RFC 6749 §5.1)", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `invalid_grant` or `unsupported_grant_type` (RFC 6749 §5.2)"),
        (status = 401, description = "`invalid_client`"),
        (status = 429, description = "Too many failed logins, with `Retry-After`"),
    )
)]
async fn token(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let grant_type = form.required("grant_type")?;
    let (grant_type, answer) = match grant_type {
        "authorization_code" => ("authorization_code", authorization_code_grant(&state, &form).await),
        "password" => ("password", password_grant(&state, &form).await),
        "refresh_token" => ("refresh_token", refresh_grant(&state, &form).await),
        "client_credentials" => ("client_credentials", client_credentials_grant(&state, &form).await),
        _ => ("unsupported", Err(ApiError::UnsupportedGrantType)),
    };
    let outcome = answer.as_ref().map_or_else(ApiError::code, |_| "issued");
    state.metrics().grants.get_or_create(&GrantLabels { grant_type, outcome }).inc();
    answer
}

/// RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.5): a registered client (a public one by its
/// `client_id` alone) exchanges its code.
async fn authorization_code_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let (code, verifier) = (form.required("code")?, form.required("code_verifier")?);
    let Caller::Client(client) = form.caller(state).await? else {
        return Err(ApiError::InvalidClient);
    };
    let issued = state.exchange_code(&client.client_id, code, form.optional("redirect_uri"), verifier).await?;
    Ok(tokens_response(TokenResponse {
        expires_in: issued.access.expires_at.saturating_sub(issued.access.issued_at),
        access_token: issued.access.token,
        token_type: "Bearer",
        refresh_token: Some(issued.refresh),
        id_token: issued.id_token,
        scope: Some(issued.scope).filter(|scope| !scope.is_empty()),
    }))
}

async fn password_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let (username, password) = (form.required("username")?, form.required("password")?);
    let caller = form.caller(state).await?;
    // A registered public client signs users in through the browser (PKCE), never with their
    // password: naming one proves nothing, so it does not lend its id to password-grant tokens.
    if let Caller::Client(Client { public: true, .. }) = caller {
        return Err(ApiError::InvalidClient);
    }
    let resource = form.optional("resource");
    let (access, refresh) = state.password_login(username, password, caller.client_id(), form.client, resource).await?;
    Ok(token_response(access, Some(refresh)))
}

async fn refresh_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let refresh = form.required("refresh_token")?;
    let caller = form.caller(state).await?;
    let (access, refresh) = state.refresh(refresh, caller.client_id()).await?;
    Ok(token_response(access, Some(refresh)))
}

async fn client_credentials_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let client = match form.caller(state).await? {
        Caller::Client(client) if !client.public => client,
        _ => return Err(ApiError::InvalidClient),
    };
    let request = AccessTokenRequest {
        subject: client.client_id.clone(),
        audiences: client.audiences.clone(),
        roles: client.roles.clone(),
        client_id: client.client_id.clone(),
        scope: None,
        ttl: None,
        service: true,
    };
    let access = state.mint(&request).await?;
    state.sessions().record_service_token(&access, &client.client_id).await?;
    tracing::info!(client = %client.client_id, "client credentials");
    Ok(token_response(access, None))
}

/// True when `token` has the shape of a JWS (three segments), not of a refresh token.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
#[utoipa::path(
    post,
    path = "/oauth/revoke",
    tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token`, and the client's credentials"),
    responses(
        (status = 200, description = "Revoked, or not a token of this client (RFC 7009 §2.2)"),
        (status = 401, description = "`invalid_client`"),
        (status = 503, description = "The token cannot be checked now"),
    )
)]
async fn revoke(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let token = form.required("token")?;
    let caller = form.caller(&state).await?;
    let now = state.now();
    if looks_like_jwt(token) {
        match state.verify_access_token(token).await {
            // Only the client a token was issued to may revoke it (RFC 7009 §2.1).
            Ok(claims) if claims.client_id.as_deref() == Some(caller.client_id()) => {
                revoke_access(&state, &claims).await?;
            }
            Ok(_) => tracing::info!(client = caller.client_id(), "revocation of another client's access token ignored"),
            // Not a token of ours, expired, or revoked already: nothing to do (RFC 7009 §2.2).
            Err(TokenError::Invalid(_) | TokenError::Revoked) => {}
            // The key set or the database cannot be read now: say so (§2.2.1, 503), rather than
            // tell the client a token is revoked that is not.
            Err(error) => return Err(error.into()),
        }
    } else {
        state.sessions().revoke_refresh_token(token, caller.client_id(), now).await?;
    }
    Ok(StatusCode::OK.into_response())
}

/// Lists the access token of `claims` as revoked until it expires.
pub(super) async fn revoke_access(state: &AppState, claims: &Claims) -> Result<(), ApiError> {
    if let Some(jti) = &claims.jti {
        state.sessions().revoke_access_token(jti, claims.exp, state.now()).await?;
    }
    Ok(())
}

/// The role that lets a client introspect tokens issued to other clients (a gateway, a resource
/// server); without it a client sees only its own tokens (RFC 7662 §4: the server decides which
/// clients may learn about which tokens).
pub(crate) const INTROSPECTION_ROLE: &str = "introspection";

/// `POST /oauth/introspect` (RFC 7662), for confidential clients: their own tokens, or any with
/// the [`INTROSPECTION_ROLE`]; every other token is `{"active": false}`.
#[utoipa::path(
    post,
    path = "/oauth/introspect",
    tag = "oauth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`token`, and the client's credentials"),
    responses(
        (status = 200, description = "`{\"active\": ...}` and, when active (and the caller's or visible to it), the token's claims", content_type = "application/json"),
        (status = 401, description = "`invalid_client`"),
    )
)]
async fn introspect(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let token = form.required("token")?;
    let client = match form.caller(&state).await? {
        Caller::Client(client) if !client.public => client,
        _ => return Err(ApiError::InvalidClient),
    };
    let may_see =
        |issued_to: &str| issued_to == client.client_id || client.roles.iter().any(|role| role == INTROSPECTION_ROLE);
    let inactive = || Json(serde_json::json!({ "active": false })).into_response();
    if looks_like_jwt(token) {
        let Ok(claims) = state.verify_access_token(token).await else { return Ok(inactive()) };
        if !may_see(claims.client_id.as_deref().unwrap_or_default()) {
            return Ok(inactive());
        }
        let mut body = serde_json::to_value(&claims).unwrap_or_default();
        body["active"] = true.into();
        body["token_type"] = "access_token".into();
        return Ok(Json(body).into_response());
    }
    match state.sessions().refresh_token(token, state.now()).await? {
        Some(info) if info.active && may_see(&info.family.client_id) => Ok(Json(serde_json::json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": info.family.user_id,
            "client_id": info.family.client_id,
            "iat": info.issued_at,
            "exp": info.expires_at,
            "iss": state.config().issuer,
        }))
        .into_response()),
        _ => Ok(inactive()),
    }
}
