//! The extractors: who is calling, from the typed `Authorization` header (a bearer token, or a
//! client's Basic credentials) and from OAuth form bodies.

use super::ApiError;
use crate::domain::accounts::{Client, PUBLIC_CLIENT_ID};
use crate::domain::address::client_address;
use crate::state::{ADMIN_ROLE, AppState};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum_extra::headers::authorization::{Basic, Bearer as BearerCredentials};
use axum_extra::headers::{Authorization, HeaderMapExt as _};
use jwks::Claims;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The token of an `Authorization: Bearer` header. Another scheme carries no bearer token
/// (RFC 6750 §3.1: no error code); a header that is not visible ASCII is an invalid token.
fn bearer_token(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.typed_try_get::<Authorization<BearerCredentials>>() {
        Ok(Some(credentials)) => Ok(credentials.token().trim().to_owned()),
        Ok(None) => Err(ApiError::MissingToken),
        Err(_) => match headers.get(header::AUTHORIZATION).map(|value| value.to_str()) {
            Some(Err(_)) => Err(ApiError::InvalidToken("the Authorization header is not visible ASCII".to_owned())),
            _ => Err(ApiError::MissingToken),
        },
    }
}

/// The claims of a verified admin token: an extractor that refuses everything else.
#[derive(Debug)]
pub(crate) struct Admin(Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.verify_admin_token(&bearer_token(&parts.headers)?).await?;
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
        Ok(Self(state.verify_access_token(&bearer_token(&parts.headers)?).await?))
    }
}

/// The client's address, as the limits count it: the TCP peer's, or, when the peer is one of
/// `trusted_proxies`, the client its `X-Forwarded-For` or `Forwarded` header names (see
/// [`client_address`]); a header value that is not visible ASCII leaves the peer. `None` when the
/// server does not record the peer (`serve` does; `oneshot` tests may).
fn client_of(headers: &HeaderMap, extensions: &Extensions, state: &AppState) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let values =
        |name: &str| -> Option<Vec<&str>> { headers.get_all(name).iter().map(|value| value.to_str().ok()).collect() };
    match (values("x-forwarded-for"), values(header::FORWARDED.as_str())) {
        (Some(forwarded_for), Some(forwarded)) => {
            Some(client_address(peer, &forwarded_for, &forwarded, &state.config().trusted_proxies))
        }
        _ => Some(peer),
    }
}

/// The client's address (see [`client_of`]).
#[derive(Debug)]
pub(crate) struct ClientAddress(pub(crate) Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(client_of(&parts.headers, &parts.extensions, state)))
    }
}

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// The parameters of an `application/x-www-form-urlencoded` body, each present at most once
/// (RFC 6749 §3.2), with the client credentials of an `Authorization: Basic` header and the
/// client's address.
#[derive(Debug)]
pub(crate) struct OAuthForm {
    params: HashMap<String, String>,
    basic: Option<(String, String)>,
    /// The client's address (see [`client_of`]).
    pub(crate) client: Option<IpAddr>,
}

impl FromRequest<AppState> for OAuthForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let form_type =
            request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).is_some_and(|value| {
                value.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_TYPE))
            });
        if !form_type {
            let refusal = ApiError::InvalidRequest("the body is not application/x-www-form-urlencoded".to_owned());
            return Err(refusal.into_response());
        }
        let client = client_of(request.headers(), request.extensions(), state);
        let basic = basic_credentials(request.headers()).map_err(IntoResponse::into_response)?;
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(&body) {
            if value.is_empty() {
                continue; // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
            }
            if params.insert(name.into_owned(), value.into_owned()).is_some() {
                return Err(ApiError::InvalidRequest("a parameter is repeated".to_owned()).into_response());
            }
        }
        Ok(Self { params, basic, client })
    }
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`. The typed header
/// decodes the base64 and splits at the first `:`; the form-urlencoding of each half is undone
/// here.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let credentials = match headers.typed_try_get::<Authorization<Basic>>() {
        Ok(Some(Authorization(credentials))) => credentials,
        _ => return Err(ApiError::InvalidClient),
    };
    let unescape = |text: &str| {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(Cow::into_owned)
            .map_err(|_| ApiError::InvalidClient)
    };
    Ok(Some((unescape(credentials.username())?, unescape(credentials.password())?)))
}

impl OAuthForm {
    /// A parameter, if sent.
    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A parameter that must be sent.
    pub(crate) fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.optional(name).ok_or_else(|| ApiError::InvalidRequest(format!("missing {name}")))
    }

    /// Who is calling: a registered client that authenticated (by Basic or by the form), a
    /// registered public client (its `client_id` alone), or the public client (no credentials,
    /// or `client_id=public`). Wrong credentials, an unknown client, or two methods at once are
    /// refused.
    pub(crate) async fn caller(&self, state: &AppState) -> Result<Caller, ApiError> {
        let form = match (self.optional("client_id"), self.optional("client_secret")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) | (Some(PUBLIC_CLIENT_ID), None) => None,
            // A registered public client names itself and proves nothing (PKCE does, for codes).
            (Some(id), None) if self.basic.is_none() => {
                return match state.accounts().client(id).await? {
                    Some(client) if client.public => Ok(Caller::Client(client)),
                    _ => Err(ApiError::InvalidClient),
                };
            }
            _ => return Err(ApiError::InvalidClient),
        };
        let (id, secret) = match (&self.basic, form) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidRequest("two client authentication methods".to_owned()));
            }
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
pub(crate) enum Caller {
    /// No client authentication.
    Public,
    /// A registered client: confidential and authenticated, or public (`client.public`).
    Client(Client),
}

impl Caller {
    /// The `client_id` of the tokens this caller gets.
    pub(crate) fn client_id(&self) -> &str {
        match self {
            Self::Public => PUBLIC_CLIENT_ID,
            Self::Client(client) => &client.client_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).expect("a header value"));
        headers
    }

    #[test]
    fn bearer_tokens_from_the_typed_header() {
        assert!(matches!(bearer_token(&HeaderMap::new()), Err(ApiError::MissingToken)));
        assert_eq!(bearer_token(&with_authorization(b"Bearer abc.def.ghi")).expect("token"), "abc.def.ghi");
        assert_eq!(bearer_token(&with_authorization(b"bearer abc")).expect("any case"), "abc");
        assert!(matches!(bearer_token(&with_authorization(b"Basic YTpi")), Err(ApiError::MissingToken)));
        assert!(matches!(bearer_token(&with_authorization(b"Bearer \xff")), Err(ApiError::InvalidToken(_))));
    }

    #[test]
    fn basic_credentials_are_form_decoded_as_rfc_6749_says() {
        assert!(basic_credentials(&HeaderMap::new()).expect("no header").is_none());
        // base64("my%20client:p+w%3Ad") = "bXklMjBjbGllbnQ6cCt3JTNBZA=="
        let headers = with_authorization(b"Basic bXklMjBjbGllbnQ6cCt3JTNBZA==");
        let (id, secret) = basic_credentials(&headers).expect("decodes").expect("present");
        assert_eq!((id.as_str(), secret.as_str()), ("my client", "p w:d"));
        for bad in [&b"Bearer abc"[..], b"Basic !!!", b"Basic bm9jb2xvbg=="] {
            assert!(matches!(basic_credentials(&with_authorization(bad)), Err(ApiError::InvalidClient)), "{bad:?}");
        }
    }
}
