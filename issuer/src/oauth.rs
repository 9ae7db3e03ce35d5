//! The OAuth 2.0 endpoints: the token endpoint (RFC 6749: `password`, `refresh_token`,
//! `client_credentials`), revocation (RFC 7009), introspection (RFC 7662), logout, and the list of
//! revoked access tokens; and the account endpoints (`POST /users`, `GET /userinfo`, the admin
//! user endpoints).

use crate::accounts::{AccountError, Client, PUBLIC_CLIENT_ID, User, normalize_email};
use crate::error::ApiError;
use crate::http::{Admin, Bearer, public_cache};
use crate::sessions::SessionError;
use crate::state::AppState;
use crate::token::{AccessTokenRequest, MintedToken};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, http::HeaderMap};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jwks::Claims;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The parameters of an `application/x-www-form-urlencoded` body, each present at most once
/// (RFC 6749 §3.2), with the client credentials of an `Authorization: Basic` header and the
/// peer address.
#[derive(Debug)]
pub(crate) struct OAuthForm {
    params: HashMap<String, String>,
    basic: Option<(String, String)>,
    peer: Option<SocketAddr>,
}

impl FromRequest<AppState> for OAuthForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let form_type =
            request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| {
                value.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_TYPE))
            });
        if !form_type {
            return Err(ApiError::InvalidRequest("the body is not application/x-www-form-urlencoded").into_response());
        }
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        let basic = basic_credentials(request.headers()).map_err(IntoResponse::into_response)?;
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(&body) {
            if value.is_empty() {
                continue; // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
            }
            if params.insert(name.into_owned(), value.into_owned()).is_some() {
                return Err(ApiError::InvalidRequest("a parameter is repeated").into_response());
            }
        }
        Ok(Self { params, basic, peer })
    }
}

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::InvalidClient)?;
    let Some((scheme, encoded)) = value.split_once(' ') else { return Err(ApiError::InvalidClient) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::InvalidClient);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ApiError::InvalidClient)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(ApiError::InvalidClient)?;
    let unescape = |text: &str| {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(Cow::into_owned)
            .map_err(|_| ApiError::InvalidClient)
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

impl OAuthForm {
    fn optional(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.optional(name).ok_or(ApiError::InvalidRequest(name))
    }

    /// Who is calling: a registered client that authenticated (by Basic or by the form), or the
    /// public client (no credentials, or `client_id=public`). Wrong credentials, an unknown
    /// client, or two methods at once are refused.
    async fn caller(&self, state: &AppState) -> Result<Caller, ApiError> {
        let form = match (self.optional("client_id"), self.optional("client_secret")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) | (Some(PUBLIC_CLIENT_ID), None) => None,
            _ => return Err(ApiError::InvalidClient),
        };
        let (id, secret) = match (&self.basic, form) {
            (Some(_), Some(_)) => return Err(ApiError::InvalidRequest("two client authentication methods")),
            (Some((id, secret)), None) => (id.as_str(), secret.as_str()),
            (None, Some(credentials)) => credentials,
            (None, None) => return Ok(Caller::Public),
        };
        match state.accounts().authenticate_client(id, secret).await? {
            Some(client) => Ok(Caller::Client(client)),
            None => Err(ApiError::InvalidClient),
        }
    }
}

/// The party calling an OAuth endpoint.
#[derive(Debug)]
enum Caller {
    Public,
    Client(Client),
}

impl Caller {
    fn client_id(&self) -> &str {
        match self {
            Self::Public => PUBLIC_CLIENT_ID,
            Self::Client(client) => &client.client_id,
        }
    }
}

/// RFC 6749 §5.1.
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

fn token_response(access: MintedToken, refresh: Option<String>) -> Response {
    let body = TokenResponse {
        expires_in: access.expires_at.saturating_sub(access.issued_at),
        access_token: access.token,
        token_type: "Bearer",
        refresh_token: refresh,
    };
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
}

/// `POST /oauth/token`.
pub(crate) async fn token(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    match form.required("grant_type")? {
        "password" => password_grant(&state, &form).await,
        "refresh_token" => refresh_grant(&state, &form).await,
        "client_credentials" => client_credentials_grant(&state, &form).await,
        _ => Err(ApiError::UnsupportedGrantType),
    }
}

async fn password_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let (username, password) = (form.required("username")?, form.required("password")?);
    let caller = form.caller(state).await?;
    let account = format!("account:{}", normalize_email(username).unwrap_or_else(|_| username.to_lowercase()));
    let mut subjects = vec![account.clone()];
    subjects.extend(form.peer.map(|peer| format!("ip:{}", peer.ip())));
    let now = state.now();
    let attempt = state
        .sessions()
        .begin_login(&subjects, now)
        .await?
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let Some(user) = state.accounts().login(username, password, now).await? else {
        return Err(ApiError::InvalidGrant("wrong credentials or disabled user"));
    };
    state.sessions().login_succeeded(attempt, &account).await?;
    let access = state.mint(&user_token_request(state, &user, caller.client_id())).await?;
    let refresh = state.sessions().start(&user.id, caller.client_id(), &access, now).await?;
    tracing::info!(user = %user.id, client = caller.client_id(), "password login");
    Ok(token_response(access, Some(refresh)))
}

/// An access token for `user`: every configured audience, and the admin audience for admins.
fn user_token_request(state: &AppState, user: &User, client_id: &str) -> AccessTokenRequest {
    let config = state.config();
    let mut audiences = config.audiences.clone();
    if user.roles.iter().any(|role| role == crate::ADMIN_ROLE) && !audiences.contains(&config.admin_audience) {
        audiences.push(config.admin_audience.clone());
    }
    AccessTokenRequest {
        subject: user.id.clone(),
        audiences,
        roles: user.roles.clone(),
        client_id: client_id.to_owned(),
        scope: None,
        ttl: None,
    }
}

async fn refresh_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let refresh = form.required("refresh_token")?;
    let caller = form.caller(state).await?;
    let client_id = caller.client_id();
    let (access, refresh) = state
        .sessions()
        .rotate(refresh, client_id, state.now(), async |family| {
            let user = state.accounts().user(&family.user_id).await.map_err(|error| match error {
                AccountError::Db(error) => SessionError::Db(error),
                _ => SessionError::InvalidGrant("unreadable user"),
            })?;
            match user {
                Some(user) if !user.disabled => Ok(state.mint(&user_token_request(state, &user, client_id)).await?),
                _ => Err(SessionError::InvalidGrant("disabled or deleted user")),
            }
        })
        .await?;
    Ok(token_response(access, Some(refresh)))
}

async fn client_credentials_grant(state: &AppState, form: &OAuthForm) -> Result<Response, ApiError> {
    let Caller::Client(client) = form.caller(state).await? else {
        return Err(ApiError::InvalidClient);
    };
    let request = AccessTokenRequest {
        subject: client.client_id.clone(),
        audiences: client.audiences.clone(),
        roles: client.roles.clone(),
        client_id: client.client_id.clone(),
        scope: None,
        ttl: None,
    };
    let access = state.mint(&request).await?;
    tracing::info!(client = %client.client_id, "client credentials");
    Ok(token_response(access, None))
}

/// True when `token` has the shape of a JWS (three segments), not of a refresh token.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub(crate) async fn revoke(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
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
            Err(ApiError::InvalidToken(_) | ApiError::RevokedToken) => {}
            // The key set or the database cannot be read now: say so (§2.2.1, 503), rather than
            // tell the client a token is revoked that is not.
            Err(error) => return Err(error),
        }
    } else {
        state.sessions().revoke_refresh_token(token, caller.client_id(), now).await?;
    }
    Ok(StatusCode::OK.into_response())
}

async fn revoke_access(state: &AppState, claims: &Claims) -> Result<(), ApiError> {
    if let Some(jti) = &claims.jti {
        state.sessions().revoke_access_token(jti, claims.exp, state.now()).await?;
    }
    Ok(())
}

/// `POST /oauth/introspect` (RFC 7662), for authenticated clients.
pub(crate) async fn introspect(State(state): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let token = form.required("token")?;
    let Caller::Client(_) = form.caller(&state).await? else {
        return Err(ApiError::InvalidClient);
    };
    let inactive = || Json(serde_json::json!({ "active": false })).into_response();
    if looks_like_jwt(token) {
        let Ok(claims) = state.verify_access_token(token).await else { return Ok(inactive()) };
        let mut body = serde_json::to_value(&claims).unwrap_or_default();
        body["active"] = true.into();
        body["token_type"] = "access_token".into();
        return Ok(Json(body).into_response());
    }
    match state.sessions().refresh_token(token, state.now()).await? {
        Some(info) if info.active => Ok(Json(serde_json::json!({
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

/// `POST /logout`: ends the bearer's session (the refresh-token family the access token came
/// with) and revokes the access token.
pub(crate) async fn logout(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    if let Some(jti) = &claims.jti
        && let Some(family) = state.sessions().family_of_access_token(jti).await?
    {
        state.sessions().revoke_family(&family, state.now()).await?;
    }
    revoke_access(&state, &claims).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /logout-all`: ends every session of the bearer's user and revokes the access token.
pub(crate) async fn logout_all(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    if let Some(sub) = &claims.sub {
        let ended = state.sessions().revoke_user(sub, state.now()).await?;
        tracing::info!(user = %sub, ended, "logout everywhere");
    }
    revoke_access(&state, &claims).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /revoked`: the access tokens revoked before their expiry, still unexpired.
pub(crate) async fn revoked(State(state): State<AppState>) -> Result<Response, ApiError> {
    let revoked = state.sessions().revoked(state.now()).await?;
    let cache = public_cache(state.config().revoked_max_age);
    Ok(([(header::CACHE_CONTROL, cache)], Json(serde_json::json!({ "revoked": revoked }))).into_response())
}

/// The body of `POST /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// The body of `POST /admin/users/{id}/roles`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRoles {
    roles: Vec<String>,
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|_| ApiError::InvalidRequest("the body is not the expected JSON"))
}

/// `POST /users`: registration when open; an admin may always create users, with roles.
pub(crate) async fn create_user(
    State(state): State<AppState>,
    admin: Option<Admin>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    match &admin {
        Some(admin) => admin.audit("create user"),
        None if state.config().registration == crate::config::Registration::Closed => {
            return Err(ApiError::RegistrationClosed);
        }
        None if !body.roles.is_empty() => return Err(ApiError::InsufficientScope),
        None => {}
    }
    let user = state.accounts().create_user(&body.email, &body.password, &body.roles, state.now()).await?;
    tracing::info!(user = %user.id, "user created");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// `GET /userinfo`: the bearer's account; a disabled user's tokens are refused.
pub(crate) async fn userinfo(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Response, ApiError> {
    let sub = claims.sub.as_deref().unwrap_or_default();
    let user = state.accounts().user(sub).await?.ok_or(AccountError::UnknownUser)?;
    if user.disabled {
        return Err(ApiError::RevokedToken);
    }
    Ok(Json(serde_json::json!({
        "sub": user.id,
        "email": user.email,
        "roles": user.roles,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }))
    .into_response())
}

/// `GET /admin/users`.
pub(crate) async fn list_users(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    admin.audit("list users");
    Ok(Json(serde_json::json!({ "users": state.accounts().users().await? })).into_response())
}

/// `POST /admin/users/{id}/roles`: replaces the roles (the next refresh carries them).
pub(crate) async fn set_roles(
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
pub(crate) async fn disable_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin.audit("disable user");
    let user = state.accounts().disable(&id, state.now()).await?;
    state.sessions().revoke_user(&user.id, state.now()).await?;
    Ok(Json(user).into_response())
}
