//! Access tokens (RFC 9068): header `typ: at+jwt` and `kid`; claims `iss sub aud exp iat nbf jti
//! roles client_id` and an optional `scope`, signed ES256 with the active key. And ID tokens
//! (OpenID Connect Core §2): header `typ: JWT`, `aud` the client: no verifier of access tokens
//! takes one for the other.

use crate::domain::keys::{KeyStoreError, SigningKey};
use crate::duration::show;
use jwt_simple::claims::{Audiences, JWTClaims};
use jwt_simple::prelude::Duration as JwtTime;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// The header `typ` of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The header `typ` of ID tokens.
pub const ID_TOKEN_TYPE: &str = "JWT";

/// What to put in an access token. Checked by [`AppState::mint`](crate::AppState::mint) against
/// the configuration before anything is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenRequest {
    /// `sub`: the user, or the client for a service token.
    pub subject: String,
    /// `aud`: each must be a configured audience (or the admin audience).
    pub audiences: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// `client_id`: the OAuth client the token is issued to.
    pub client_id: String,
    /// `scope`, space-separated, if any.
    pub scope: Option<String>,
    /// The lifetime; at most (and by default) the configured `access_token_ttl`.
    pub ttl: Option<Duration>,
    /// A client's token for itself (`client_credentials`): marked `gty: client-credentials`, so
    /// that verifiers tell it from a user's.
    pub service: bool,
}

/// A signed access token.
#[derive(Clone, Debug, Serialize)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub kid: String,
    /// Its `jti`.
    pub jti: String,
    /// `iat` (Unix seconds).
    pub issued_at: u64,
    /// `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// A field of the request breaks a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        rule: String,
    },
    /// The signing key could not be had or used.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    roles: &'a [String],
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gty: Option<&'static str>,
}

fn invalid(field: &'static str, rule: impl Into<String>) -> MintError {
    MintError::Invalid { field, rule: rule.into() }
}

/// A string claim: 1 to `max` characters, no control characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), MintError> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid(field, format!("must be 1 to {max} characters without control characters")));
    }
    Ok(())
}

/// Checks a list of roles: at most 64, each 1 to 64 characters without spaces or commas.
pub(crate) fn check_roles(roles: &[String]) -> Result<(), MintError> {
    if roles.len() > 64 {
        return Err(invalid("roles", "at most 64 roles"));
    }
    for role in roles {
        if role.is_empty() || role.len() > 64 || role.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',') {
            return Err(invalid("roles", format!("{role:?} must be 1 to 64 characters without spaces or commas")));
        }
    }
    Ok(())
}

/// Checks a request against the issuer's rules (the audiences it may name, the longest lifetime
/// it signs) and returns the lifetime to use.
pub(crate) fn check(
    request: &AccessTokenRequest,
    allowed_audiences: &[&str],
    max_ttl: Duration,
) -> Result<Duration, MintError> {
    check_text("sub", &request.subject, 256)?;
    check_text("client_id", &request.client_id, 256)?;
    if request.audiences.is_empty() {
        return Err(invalid("aud", "at least one audience is required"));
    }
    for audience in &request.audiences {
        if !allowed_audiences.contains(&audience.as_str()) {
            return Err(invalid("aud", format!("{audience:?} is not a configured audience")));
        }
    }
    check_roles(&request.roles)?;
    if let Some(scope) = &request.scope {
        check_text("scope", scope, 1024)?;
    }
    let ttl = request.ttl.unwrap_or(max_ttl);
    if ttl.as_secs() == 0 || ttl > max_ttl {
        return Err(invalid("ttl", format!("must be between 1s and access_token_ttl ({})", show(max_ttl))));
    }
    Ok(ttl)
}

/// Signs an access token for `request` with `key` at `now`, valid for `ttl`, with the `jti` `id`
/// (fresh and random: [`random_id`](crate::domain::secrets::random_id)), without checking the request against any configuration:
/// [`AppState::mint`](crate::AppState::mint) is the checked way.
pub fn sign(
    key: &SigningKey,
    issuer: &str,
    request: &AccessTokenRequest,
    ttl: Duration,
    now: u64,
    id: String,
) -> Result<MintedToken, MintError> {
    let expires_at = now.saturating_add(ttl.as_secs());
    let jti = id;
    let audiences = match request.audiences.as_slice() {
        [one] => Audiences::AsString(one.clone()),
        many => Audiences::AsSet(many.iter().cloned().collect::<HashSet<_>>()),
    };
    let mut seen = HashSet::new();
    let roles: Vec<String> = request.roles.iter().filter(|role| seen.insert(role.as_str())).cloned().collect();
    let claims = JWTClaims {
        issued_at: Some(JwtTime::from_secs(now)),
        expires_at: Some(JwtTime::from_secs(expires_at)),
        invalid_before: Some(JwtTime::from_secs(now)),
        issuer: Some(issuer.to_owned()),
        subject: Some(request.subject.clone()),
        audiences: Some(audiences),
        jwt_id: Some(jti.clone()),
        nonce: None,
        custom: AccessClaims {
            roles: &roles,
            client_id: &request.client_id,
            scope: request.scope.as_deref(),
            gty: request.service.then_some(jwks::SERVICE_GRANT),
        },
    };
    let token = key.sign(claims, ACCESS_TOKEN_TYPE)?;
    Ok(MintedToken { token, kid: key.kid().to_owned(), jti, issued_at: now, expires_at })
}

/// What to put in an ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenRequest<'a> {
    /// `sub`: the user.
    pub subject: &'a str,
    /// `aud`: the client.
    pub client_id: &'a str,
    /// `nonce`, from the authorization request.
    pub nonce: Option<&'a str>,
    /// `auth_time`: when the user last proved who they are.
    pub auth_time: u64,
    /// `sid`: the issuer's browser session.
    pub session_id: &'a str,
    /// `email`, when the `email` scope was granted.
    pub email: Option<&'a str>,
    /// The access token issued with it, for `at_hash`.
    pub access_token: &'a str,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    auth_time: u64,
    sid: &'a str,
    at_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

/// `at_hash` (OpenID Connect Core §3.1.3.6): the left half of the SHA-256 of the access token,
/// base64url.
fn access_token_hash(access_token: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Signs an ID token for `request` with `key` at `now`, valid for `ttl`.
pub fn sign_id_token(
    key: &SigningKey,
    issuer: &str,
    request: &IdTokenRequest<'_>,
    ttl: Duration,
    now: u64,
) -> Result<String, MintError> {
    let claims = JWTClaims {
        issued_at: Some(JwtTime::from_secs(now)),
        expires_at: Some(JwtTime::from_secs(now.saturating_add(ttl.as_secs()))),
        invalid_before: None,
        issuer: Some(issuer.to_owned()),
        subject: Some(request.subject.to_owned()),
        audiences: Some(Audiences::AsString(request.client_id.to_owned())),
        jwt_id: None,
        nonce: request.nonce.map(str::to_owned),
        custom: IdClaims {
            auth_time: request.auth_time,
            sid: request.session_id,
            at_hash: access_token_hash(request.access_token),
            email: request.email,
        },
    };
    Ok(key.sign(claims, ID_TOKEN_TYPE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_sha_256() {
        // OpenID Connect Core, Appendix A.3 (an RS256 example; at_hash depends only on SHA-256).
        assert_eq!(access_token_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
