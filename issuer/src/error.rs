//! The one error type of the HTTP API. Every error answers with a status that fits and a JSON
//! body `{"error": "<stable code>"}` (for the OAuth endpoints, the RFC 6749 §5.2 codes); the
//! detail goes to the log, never to the client.

use crate::accounts::AccountError;
use crate::keys::KeyStoreError;
use crate::secrets::PasswordError;
use crate::sessions::SessionError;
use crate::token::MintError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jwks::VerifyError;

/// An error of the HTTP API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization: Bearer` credentials.
    #[error("no bearer token")]
    MissingToken,
    /// The bearer token was refused by the `jwks` core.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] VerifyError),
    /// The `Authorization` header is not readable text.
    #[error("the Authorization header is not visible ASCII")]
    MalformedAuthorization,
    /// The token is good but lacks the `admin` role.
    #[error("the token lacks the admin role")]
    InsufficientScope,
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A `kid` in the path that cannot be a key id.
    #[error("not a key id")]
    InvalidKid,
    /// A key operation failed.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// A dependency of the answer (the database) does not answer: try again later.
    #[error("the database does not answer")]
    Unavailable,
    /// The bearer token was revoked (by `jti`).
    #[error("the token was revoked")]
    RevokedToken,
    /// A malformed request: a missing, repeated or unreadable parameter (RFC 6749 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// Client authentication failed (RFC 6749 `invalid_client`).
    #[error("client authentication failed")]
    InvalidClient,
    /// Wrong credentials, or a refresh token that is unknown, spent, revoked or expired
    /// (RFC 6749 `invalid_grant`).
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    /// A `grant_type` the issuer does not serve.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// Too many failed logins: try again after `retry_after` seconds.
    #[error("too many failed logins")]
    RateLimited {
        /// Seconds until a login may be tried again.
        retry_after: u64,
    },
    /// `POST /users` without an admin token while registration is closed.
    #[error("registration is closed")]
    RegistrationClosed,
    /// An account operation failed.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// A session operation failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// An access token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            Self::InvalidToken(_) | Self::MalformedAuthorization => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::InvalidKid => (StatusCode::BAD_REQUEST, "invalid_kid"),
            Self::Keys(KeyStoreError::UnknownKey) => (StatusCode::NOT_FOUND, "unknown_key"),
            Self::Keys(KeyStoreError::TooManyKeys) => (StatusCode::CONFLICT, "too_many_keys"),
            Self::Keys(KeyStoreError::NoActiveKey) => (StatusCode::SERVICE_UNAVAILABLE, "no_active_key"),
            Self::Keys(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::RevokedToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            Self::InvalidGrant(_) | Self::Sessions(SessionError::InvalidGrant(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_grant")
            }
            Self::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::RegistrationClosed => (StatusCode::FORBIDDEN, "registration_closed"),
            Self::Accounts(AccountError::InvalidEmail | AccountError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            Self::Accounts(AccountError::Password(PasswordError::Policy)) => (StatusCode::BAD_REQUEST, "weak_password"),
            Self::Accounts(AccountError::EmailTaken) => (StatusCode::CONFLICT, "email_taken"),
            Self::Accounts(AccountError::ClientTaken) => (StatusCode::CONFLICT, "client_taken"),
            Self::Accounts(AccountError::UnknownUser) => (StatusCode::NOT_FOUND, "unknown_user"),
            Self::Accounts(AccountError::UnknownClient) => (StatusCode::NOT_FOUND, "unknown_client"),
            Self::Mint(MintError::Keys(KeyStoreError::NoActiveKey))
            | Self::Sessions(SessionError::Mint(MintError::Keys(KeyStoreError::NoActiveKey))) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_active_key")
            }
            Self::Accounts(_) | Self::Sessions(_) | Self::Mint(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }

    /// RFC 6750 §3: what a bearer-token refusal tells the client in `WWW-Authenticate`.
    fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some(r#"Bearer realm="portcullis-admin""#),
            Self::InvalidToken(_) | Self::MalformedAuthorization | Self::RevokedToken => {
                Some(r#"Bearer realm="portcullis-admin", error="invalid_token""#)
            }
            Self::InvalidClient => Some(r#"Basic realm="portcullis""#),
            Self::InsufficientScope => Some(r#"Bearer realm="portcullis-admin", error="insufficient_scope""#),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        } else {
            tracing::info!(reason = %self, code, "request refused");
        }
        let mut response = error_body(status, code);
        if let Some(challenge) = self.www_authenticate() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Self::RateLimited { retry_after } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// `{"error": code}` with `status`.
pub(crate) fn error_body(status: StatusCode, code: &str) -> Response {
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

/// The stable code for an error status produced outside the handlers (by a tower layer).
pub(crate) fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}
