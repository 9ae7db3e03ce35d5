//! The one mapping from domain errors to HTTP answers. Every error answers with a status that fits
//! and a JSON body `{"error": "<stable code>"}` (for the OAuth endpoints, the RFC 6749 §5.2
//! codes). Each domain error type is mapped once, here, by a `From` impl; the detail travels to
//! the log (written once, by [`log_errors`](super::log_errors)), never to the client.

use crate::domain::accounts::AccountError;
use crate::domain::keys::KeyStoreError;
use crate::domain::secrets::PasswordError;
use crate::domain::sessions::SessionError;
use crate::domain::signin::SignInError;
use crate::domain::tokens::MintError;
use crate::state::{LoginError, RegistrationError, TokenError};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error of the HTTP API, as the client will see it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization: Bearer` credentials.
    #[error("no bearer token")]
    MissingToken,
    /// The bearer token was refused (malformed, bad signature, wrong audience, expired, revoked).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The request is understood and refused: the code names why (`csrf`, ...).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The token is good but lacks the `admin` role.
    #[error("the token lacks the admin role")]
    InsufficientScope,
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// No such key, user or client: the code names which (`unknown_key`, ...).
    #[error("{0}")]
    UnknownResource(&'static str),
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A `kid` in the path that cannot be a key id.
    #[error("not a key id")]
    InvalidKid,
    /// A malformed request: a missing, repeated or unreadable parameter (RFC 6749 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A new password that breaks the policy.
    #[error("the password breaks the policy")]
    WeakPassword,
    /// Client authentication failed (RFC 6749 `invalid_client`).
    #[error("client authentication failed")]
    InvalidClient,
    /// Wrong credentials, or a refresh token that is unknown, spent, revoked or expired
    /// (RFC 6749 `invalid_grant`).
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    /// A `resource` the token cannot be for (RFC 8707 `invalid_target`).
    #[error("invalid target")]
    InvalidTarget,
    /// A `grant_type` the issuer does not serve.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// Too many attempts (failed logins, sign-in links, registrations): try again after
    /// `retry_after` seconds.
    #[error("too many attempts")]
    RateLimited {
        /// Seconds until a login may be tried again.
        retry_after: u64,
    },
    /// `POST /users` without an admin token while registration is closed.
    #[error("registration is closed")]
    RegistrationClosed,
    /// The resource exists already, or a limit is reached: the code names which.
    #[error("{0}")]
    Conflict(&'static str),
    /// A dependency of the answer does not answer, or there is no active key: try again later.
    #[error("unavailable ({code}): {reason}")]
    Unavailable {
        /// `unavailable` or `no_active_key`.
        code: &'static str,
        /// What failed, for the log.
        reason: String,
    },
    /// A fault of the issuer (a corrupt row, a crypto failure): the detail is logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable code the client sees (`invalid_grant`, ...).
    pub(crate) fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::Forbidden(code) => (StatusCode::FORBIDDEN, code),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::UnknownResource(code) => (StatusCode::NOT_FOUND, code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::InvalidKid => (StatusCode::BAD_REQUEST, "invalid_kid"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::WeakPassword => (StatusCode::BAD_REQUEST, "weak_password"),
            Self::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            Self::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
            Self::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            Self::InvalidTarget => (StatusCode::BAD_REQUEST, "invalid_target"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::RegistrationClosed => (StatusCode::FORBIDDEN, "registration_closed"),
            Self::Conflict(code) => (StatusCode::CONFLICT, code),
            Self::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// RFC 6750 §3: what a bearer-token refusal tells the client in `WWW-Authenticate`.
    fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some(r#"Bearer realm="portcullis-admin""#),
            Self::InvalidToken(_) => Some(r#"Bearer realm="portcullis-admin", error="invalid_token""#),
            Self::InvalidClient => Some(r#"Basic realm="portcullis""#),
            Self::InsufficientScope => Some(r#"Bearer realm="portcullis-admin", error="insufficient_scope""#),
            _ => None,
        }
    }
}

impl From<KeyStoreError> for ApiError {
    fn from(error: KeyStoreError) -> Self {
        match error {
            KeyStoreError::UnknownKey => Self::UnknownResource("unknown_key"),
            KeyStoreError::TooManyKeys => Self::Conflict("too_many_keys"),
            KeyStoreError::NoActiveKey => Self::Unavailable { code: "no_active_key", reason: error.to_string() },
            _ => Self::Internal(error.to_string()),
        }
    }
}

impl From<MintError> for ApiError {
    /// A token the issuer asked for itself: a rule it breaks is the issuer's fault.
    fn from(error: MintError) -> Self {
        match error {
            MintError::Keys(error) => error.into(),
            _ => Self::Internal(error.to_string()),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::InvalidEmail | AccountError::Invalid(_) => Self::InvalidRequest(error.to_string()),
            AccountError::Password(PasswordError::Policy) => Self::WeakPassword,
            AccountError::EmailTaken => Self::Conflict("email_taken"),
            AccountError::ClientTaken => Self::Conflict("client_taken"),
            AccountError::UnknownUser => Self::UnknownResource("unknown_user"),
            AccountError::UnknownClient => Self::UnknownResource("unknown_client"),
            _ => Self::Internal(error.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::InvalidGrant(reason) => Self::InvalidGrant(reason),
            SessionError::Reused => Self::InvalidGrant("reused refresh token"),
            SessionError::Mint(error) => error.into(),
            SessionError::Db(_) => Self::Internal(error.to_string()),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid(_) | TokenError::Revoked => Self::InvalidToken(error.to_string()),
            TokenError::Unconfirmed => Self::Unavailable { code: "unavailable", reason: error.to_string() },
            TokenError::Sessions(error) => error.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            LoginError::WrongCredentials => Self::InvalidGrant("wrong credentials or disabled user"),
            LoginError::Accounts(error) => error.into(),
            LoginError::Sessions(error) => error.into(),
            LoginError::Mint(error) => error.into(),
            LoginError::SignIn(error) => error.into(),
            LoginError::InvalidTarget => Self::InvalidTarget,
        }
    }
}

impl From<RegistrationError> for ApiError {
    fn from(error: RegistrationError) -> Self {
        match error {
            RegistrationError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            RegistrationError::Accounts(error) => error.into(),
            RegistrationError::Sessions(error) => error.into(),
        }
    }
}

impl From<SignInError> for ApiError {
    fn from(error: SignInError) -> Self {
        match error {
            SignInError::InvalidGrant(reason) => Self::InvalidGrant(reason),
            SignInError::Reused => Self::InvalidGrant("reused authorization code"),
            SignInError::DisabledUser => Self::InvalidGrant("the user is disabled"),
            SignInError::Sessions(error) => error.into(),
            SignInError::Accounts(error) => error.into(),
            SignInError::Mint(error) => error.into(),
            _ => Self::Internal(error.to_string()),
        }
    }
}

/// What [`log_errors`](super::log_errors) logs of an error answer: put on the response as an
/// extension by [`ApiError::into_response`], taken off before the response leaves.
#[derive(Clone, Debug)]
pub(crate) struct ErrorRecord {
    pub(crate) code: &'static str,
    pub(crate) reason: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = error_body(status, code);
        if let Some(challenge) = self.www_authenticate() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Self::RateLimited { retry_after } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response.extensions_mut().insert(ErrorRecord { code, reason: self.to_string() });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kek::KekError;
    use crate::store::DbError;

    #[test]
    fn each_domain_error_maps_to_one_status_and_code() {
        let cases: Vec<(ApiError, StatusCode, &str)> = vec![
            (KeyStoreError::UnknownKey.into(), StatusCode::NOT_FOUND, "unknown_key"),
            (KeyStoreError::TooManyKeys.into(), StatusCode::CONFLICT, "too_many_keys"),
            (KeyStoreError::NoActiveKey.into(), StatusCode::SERVICE_UNAVAILABLE, "no_active_key"),
            (
                KeyStoreError::Unseal(KekError::Unseal { kid: "k".to_owned() }).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
            (MintError::Keys(KeyStoreError::NoActiveKey).into(), StatusCode::SERVICE_UNAVAILABLE, "no_active_key"),
            (
                MintError::Invalid { field: "aud", rule: "x".to_owned() }.into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
            (AccountError::InvalidEmail.into(), StatusCode::BAD_REQUEST, "invalid_request"),
            (AccountError::Password(PasswordError::Policy).into(), StatusCode::BAD_REQUEST, "weak_password"),
            (AccountError::EmailTaken.into(), StatusCode::CONFLICT, "email_taken"),
            (AccountError::ClientTaken.into(), StatusCode::CONFLICT, "client_taken"),
            (AccountError::UnknownUser.into(), StatusCode::NOT_FOUND, "unknown_user"),
            (AccountError::UnknownClient.into(), StatusCode::NOT_FOUND, "unknown_client"),
            (AccountError::Db(DbError::Duplicate).into(), StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            (SessionError::InvalidGrant("expired").into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (SessionError::Reused.into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (
                SessionError::Mint(MintError::Keys(KeyStoreError::NoActiveKey)).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "no_active_key",
            ),
            (TokenError::Revoked.into(), StatusCode::UNAUTHORIZED, "invalid_token"),
            (TokenError::Unconfirmed.into(), StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (LoginError::RateLimited { retry_after: 3 }.into(), StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            (LoginError::WrongCredentials.into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (
                RegistrationError::RateLimited { retry_after: 3 }.into(),
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
            ),
            (RegistrationError::Accounts(AccountError::EmailTaken).into(), StatusCode::CONFLICT, "email_taken"),
            (SignInError::Reused.into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (LoginError::InvalidTarget.into(), StatusCode::BAD_REQUEST, "invalid_target"),
            (SignInError::InvalidGrant("expired").into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (SignInError::DisabledUser.into(), StatusCode::BAD_REQUEST, "invalid_grant"),
            (SignInError::Db(DbError::Duplicate).into(), StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        ];
        for (error, status, code) in cases {
            let shown = format!("{error:?}");
            assert_eq!(error.status_and_code(), (status, code), "{shown}");
        }
    }

    #[test]
    fn the_answer_carries_the_challenge_and_the_record_for_the_log() {
        let response = ApiError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let record = response.extensions().get::<ErrorRecord>().expect("a record for the log");
        assert_eq!(record.code, "too_many_requests");
        let response = ApiError::InvalidToken("expired".to_owned()).into_response();
        assert!(response.headers()[header::WWW_AUTHENTICATE].to_str().expect("ASCII").contains("invalid_token"));
    }
}
