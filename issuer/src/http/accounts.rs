//! The account endpoints: registration, `/userinfo`, the admin user endpoints; and the session
//! endpoints: logout, logout everywhere, and the list of revoked access tokens.

use super::ApiError;
use super::extract::{Admin, Bearer, ClientAddress};
use super::oauth::revoke_access;
use super::well_known::{if_none_match, public_cache};
use crate::config::Registration;
use crate::domain::accounts::AccountError;
use crate::domain::published::entity_tag;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/users`, `/userinfo`, `/admin/users...`, `/logout`, `/logout-all`, `/revoked`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(userinfo))
        .routes(routes!(list_users))
        .routes(routes!(set_roles))
        .routes(routes!(disable_user))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(revoked))
}

/// `POST /logout`: ends the bearer's session (the refresh-token family the access token came
/// with) and revokes the access token.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sessions",
    security(("bearer" = [])),
    responses((status = 204, description = "The session ended"), (status = 401, description = "No valid access token"))
)]
async fn logout(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    if let Some(jti) = &claims.jti
        && let Some(family) = state.sessions().family_of_access_token(jti).await?
    {
        state.sessions().revoke_family(&family, state.now()).await?;
    }
    revoke_access(&state, &claims).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /logout-all`: ends every session of the bearer's user and revokes the access token.
#[utoipa::path(
    post,
    path = "/logout-all",
    tag = "sessions",
    security(("bearer" = [])),
    responses((status = 204, description = "Every session ended"), (status = 401, description = "No valid access token"))
)]
async fn logout_all(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    if let Some(sub) = &claims.sub {
        let ended = state.sessions().revoke_user(sub, state.now()).await?;
        tracing::info!(user = %sub, ended, "logout everywhere");
    }
    revoke_access(&state, &claims).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /revoked`: the access tokens revoked before their expiry, still unexpired.
#[utoipa::path(
    get,
    path = "/revoked",
    tag = "sessions",
    responses(
        (status = 200, description = "`{\"revoked\": [{\"jti\", \"exp\"}]}`, with `ETag` and `Cache-Control`", content_type = "application/json"),
        (status = 304, description = "`If-None-Match` matched: the list has not changed"),
    )
)]
async fn revoked(State(state): State<AppState>, request_headers: HeaderMap) -> Result<Response, ApiError> {
    let revoked = state.sessions().revoked(state.now()).await?;
    let body = serde_json::to_vec(&serde_json::json!({ "revoked": revoked }))
        .map_err(|error| ApiError::Internal(format!("the revocation list does not serialize: {error}")))?;
    let etag = entity_tag(&body);
    let headers = [
        (header::CACHE_CONTROL, public_cache(state.config().revoked_max_age)),
        (
            header::ETAG,
            HeaderValue::try_from(etag.as_str()).map_err(|_| ApiError::Internal("a bad entity tag".to_owned()))?,
        ),
    ];
    if if_none_match(&request_headers, etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((headers, [content_type], body).into_response())
}

/// The body of `POST /users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// The body of `POST /admin/users/{id}/roles`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRoles {
    roles: Vec<String>,
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))
}

/// `POST /users`: registration when open (limited per client address); an admin may always
/// create users, with roles.
#[utoipa::path(
    post,
    path = "/users",
    tag = "accounts",
    request_body = NewUser,
    responses(
        (status = 201, description = "The user", content_type = "application/json"),
        (status = 400, description = "`invalid_request` or `weak_password`"),
        (status = 403, description = "Registration is closed, or roles without an admin token"),
        (status = 409, description = "`email_taken`"),
        (status = 429, description = "Too many registrations from this address, with `Retry-After`"),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    admin: Option<Admin>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let user = match &admin {
        Some(admin) => {
            admin.audit("create user");
            state.accounts().create_user(&body.email, &body.password, &body.roles, state.now()).await?
        }
        None if state.config().registration == Registration::Closed => {
            return Err(ApiError::RegistrationClosed);
        }
        None if !body.roles.is_empty() => return Err(ApiError::InsufficientScope),
        None => state.register(&body.email, &body.password, client).await?,
    };
    tracing::info!(user = %user.id, "user created");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// `GET /userinfo`: the bearer's account; a disabled user's tokens are refused.
#[utoipa::path(
    get,
    path = "/userinfo",
    tag = "accounts",
    security(("bearer" = [])),
    responses((status = 200, description = "The account", content_type = "application/json"), (status = 401, description = "No valid access token"))
)]
async fn userinfo(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    // A token from a browser sign-in carries its scopes: it reads userinfo only with `openid`,
    // and the email only with `email` (OpenID Connect Core §5.4). Tokens of the password grant
    // carry none and read the whole account, as before.
    let scopes: Option<Vec<&str>> = claims.scope.as_deref().map(|scope| scope.split(' ').collect());
    if scopes.as_ref().is_some_and(|scopes| !scopes.contains(&"openid")) {
        return Err(ApiError::InsufficientScope);
    }
    let sub = claims.sub.as_deref().unwrap_or_default();
    let user = state.accounts().user(sub).await?.ok_or(AccountError::UnknownUser)?;
    if user.disabled {
        return Err(ApiError::InvalidToken("the user is disabled".to_owned()));
    }
    let mut body = serde_json::json!({
        "sub": user.id,
        "roles": user.roles,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    });
    if scopes.as_ref().is_none_or(|scopes| scopes.contains(&"email")) {
        body["email"] = user.email.into();
    }
    Ok(Json(body).into_response())
}

/// `GET /admin/users`.
#[utoipa::path(
    get,
    path = "/admin/users",
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Every user", content_type = "application/json"), (status = 401, description = "No valid admin token"))
)]
async fn list_users(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("list users");
    Ok(Json(serde_json::json!({ "users": state.accounts().users().await? })).into_response())
}

/// `POST /admin/users/{id}/roles`: replaces the roles (the next refresh carries them).
#[utoipa::path(
    post,
    path = "/admin/users/{id}/roles",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user id")),
    request_body = NewRoles,
    responses((status = 200, description = "The user", content_type = "application/json"), (status = 404, description = "`unknown_user`"))
)]
async fn set_roles(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<NewRoles>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin.audit("set roles");
    let body = json_body(body)?;
    Ok(Json(state.accounts().set_roles(&id, &body.roles).await?).into_response())
}

/// `POST /admin/users/{id}/disable`: no more logins or refreshes; every session ends.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/disable",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user id")),
    responses((status = 200, description = "The user", content_type = "application/json"), (status = 404, description = "`unknown_user`"))
)]
async fn disable_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin.audit("disable user");
    let user = state.accounts().disable(&id, state.now()).await?;
    state.sessions().revoke_user(&user.id, state.now()).await?;
    Ok(Json(user).into_response())
}
