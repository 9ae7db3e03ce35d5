//! Claims of an access token and the rules they must meet (RFC 7519, RFC 9068).

use crate::json::{self, StrictJsonError};
use serde::Serialize;
use serde_json::{Map, Value};

/// What a verified token's claims must satisfy. [`ClaimsOptions::new`] fills in secure defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimsOptions {
    /// The one accepted `iss`, compared byte for byte.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` must contain at least one. Empty accepts none.
    pub audiences: Vec<String>,
    /// The required header `typ` (RFC 7515 §4.1.9: case-insensitive, `application/` optional).
    /// Default `at+jwt` (RFC 9068), which also accepts `application/at+jwt`.
    pub token_type: String,
    /// Allowed clock difference for `exp`, `nbf` and `iat`, in seconds. Default 60.
    pub leeway_secs: u64,
    /// The longest accepted lifetime, `exp - iat`, in seconds. Default 3600.
    pub max_lifetime_secs: u64,
}

impl ClaimsOptions {
    /// Options for access tokens of `issuer` meant for any of `audiences`, with the defaults:
    /// `typ` at+jwt, 60 s leeway, at most one hour of lifetime.
    pub fn new(issuer: impl Into<String>, audiences: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            token_type: "at+jwt".to_owned(),
            leeway_secs: 60,
            max_lifetime_secs: 3600,
        }
    }

    /// Sets the required `typ`.
    #[must_use]
    pub fn with_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_type = token_type.into();
        self
    }

    /// Sets the leeway, in seconds.
    #[must_use]
    pub fn with_leeway(mut self, leeway_secs: u64) -> Self {
        self.leeway_secs = leeway_secs;
        self
    }

    /// Sets the longest accepted lifetime, in seconds.
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime_secs: u64) -> Self {
        self.max_lifetime_secs = max_lifetime_secs;
        self
    }
}

/// Why the claims of a correctly signed token are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The header has no `typ`, or another one than required.
    #[error("the token type is not the one required")]
    WrongTokenType,
    /// The payload is not a JSON object.
    #[error("the payload is not a JSON object")]
    NotJsonObject,
    /// The payload has two members with the same name.
    #[error("the payload has a duplicate member")]
    DuplicateMember,
    /// A required claim is absent.
    #[error("the claim {0:?} is missing")]
    Missing(&'static str),
    /// A claim has the wrong JSON type (times must be non-negative integers, not strings, floats
    /// or null; `aud` a string or an array of strings; `roles` an array of strings).
    #[error("the claim {0:?} has the wrong type")]
    WrongClaimType(&'static str),
    /// `iss` is not the configured issuer.
    #[error("the issuer is not the one configured")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("the audience is not one of those configured")]
    WrongAudience,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the configured maximum lifetime.
    #[error("the token's lifetime is longer than allowed")]
    LifetimeTooLong,
}

/// The claims of a verified access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user, or the client for a service token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audiences (one or more).
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Roles; empty when the claim is absent.
    pub roles: Vec<String>,
    /// The OAuth client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Space-separated scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The grant the token came from, when the issuer says: [`SERVICE_GRANT`] marks a service
    /// token (see [`Claims::subject_kind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gty: Option<String>,
    /// An ID token's `nonce` (OpenID Connect Core §2): the value its authorization request sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The `gty` of tokens issued to a client for itself (OAuth 2.0 `client_credentials`), as Auth0
/// writes it: RFC 9068 has `sub` name the client then, but no claim that tells it from a user.
pub const SERVICE_GRANT: &str = "client-credentials";

/// Whom a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A user (a token from a login, directly or refreshed).
    User,
    /// A service: a client acting for itself (`gty` [`SERVICE_GRANT`]).
    Service,
}

impl SubjectKind {
    /// `user` or `service`, as policies and the origin's headers write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Service => "service",
        }
    }

    /// The kind named `name` (`user` or `service`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "user" => Some(Self::User),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

impl Claims {
    /// Whom the token speaks for: a service when `gty` is [`SERVICE_GRANT`], else a user.
    pub fn subject_kind(&self) -> SubjectKind {
        if self.gty.as_deref() == Some(SERVICE_GRANT) { SubjectKind::Service } else { SubjectKind::User }
    }

    /// Parses and checks a payload; `typ` is the header's.
    pub(crate) fn check(
        typ: Option<&str>,
        payload: &[u8],
        options: &ClaimsOptions,
        now: u64,
    ) -> Result<Self, ClaimsError> {
        let members = match json::parse(payload) {
            Ok(Value::Object(members)) => members,
            Ok(_) | Err(StrictJsonError::Syntax) => return Err(ClaimsError::NotJsonObject),
            Err(StrictJsonError::DuplicateMember) => return Err(ClaimsError::DuplicateMember),
        };
        // Expiry first: for an expired token, that is the reason worth logging.
        let exp = required(time(&members, "exp")?, "exp")?;
        if now >= exp.saturating_add(options.leeway_secs) {
            return Err(ClaimsError::Expired);
        }
        if !typ.is_some_and(|typ| same_media_type(typ, &options.token_type)) {
            return Err(ClaimsError::WrongTokenType);
        }
        let claims = Self {
            iss: required(string(&members, "iss")?, "iss")?,
            sub: string(&members, "sub")?,
            aud: audiences(&members)?,
            exp,
            iat: required(time(&members, "iat")?, "iat")?,
            nbf: time(&members, "nbf")?,
            jti: string(&members, "jti")?,
            roles: roles(&members)?,
            client_id: string(&members, "client_id")?,
            scope: string(&members, "scope")?,
            gty: string(&members, "gty")?,
            nonce: string(&members, "nonce")?,
        };
        claims.check_against(options, now)?;
        Ok(claims)
    }

    fn check_against(&self, options: &ClaimsOptions, now: u64) -> Result<(), ClaimsError> {
        if self.iss != options.issuer {
            return Err(ClaimsError::WrongIssuer);
        }
        if !self.aud.iter().any(|aud| options.audiences.contains(aud)) {
            return Err(ClaimsError::WrongAudience);
        }
        self.check_times(options, now)?;
        if self.exp.saturating_sub(self.iat) > options.max_lifetime_secs {
            return Err(ClaimsError::LifetimeTooLong);
        }
        Ok(())
    }

    /// The checks that depend on `now`: `exp`, `nbf` and `iat`, each with the leeway. Claims that
    /// passed every check once pass again at a later `now` exactly when these do.
    pub(crate) fn check_times(&self, options: &ClaimsOptions, now: u64) -> Result<(), ClaimsError> {
        let leeway = options.leeway_secs;
        if now >= self.exp.saturating_add(leeway) {
            return Err(ClaimsError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(ClaimsError::NotYetValid);
        }
        if self.iat > now.saturating_add(leeway) {
            return Err(ClaimsError::IssuedInFuture);
        }
        Ok(())
    }
}

/// RFC 7515 §4.1.9: media types compare case-insensitively, and `application/` may be left out.
fn same_media_type(left: &str, right: &str) -> bool {
    fn short(media_type: &str) -> &str {
        let prefix = "application/";
        match media_type.get(..prefix.len()) {
            Some(start) if start.eq_ignore_ascii_case(prefix) => &media_type[prefix.len()..],
            _ => media_type,
        }
    }
    short(left).eq_ignore_ascii_case(short(right))
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, ClaimsError> {
    value.ok_or(ClaimsError::Missing(name))
}

fn string(members: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ClaimsError> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(ClaimsError::WrongClaimType(name)),
    }
}

/// A NumericDate restricted to non-negative integers.
fn time(members: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ClaimsError> {
    match members.get(name) {
        None => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or(ClaimsError::WrongClaimType(name)),
    }
}

fn strings(value: &Value, name: &'static str) -> Result<Vec<String>, ClaimsError> {
    let Value::Array(items) = value else {
        return Err(ClaimsError::WrongClaimType(name));
    };
    items.iter().map(|item| item.as_str().map(str::to_owned).ok_or(ClaimsError::WrongClaimType(name))).collect()
}

fn audiences(members: &Map<String, Value>) -> Result<Vec<String>, ClaimsError> {
    match members.get("aud") {
        None => Err(ClaimsError::Missing("aud")),
        Some(Value::String(aud)) => Ok(vec![aud.clone()]),
        Some(value) => strings(value, "aud"),
    }
}

fn roles(members: &Map<String, Value>) -> Result<Vec<String>, ClaimsError> {
    members.get("roles").map_or(Ok(Vec::new()), |value| strings(value, "roles"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_800_000_000;

    fn options() -> ClaimsOptions {
        ClaimsOptions::new("https://issuer.example", ["api", "admin-api"])
    }

    fn check(payload: &str) -> Result<Claims, ClaimsError> {
        Claims::check(Some("at+jwt"), payload.as_bytes(), &options(), NOW)
    }

    fn payload(changes: &[(&str, &str)]) -> String {
        let mut members = vec![
            ("iss", r#""https://issuer.example""#.to_owned()),
            ("sub", r#""user-1""#.to_owned()),
            ("aud", r#""api""#.to_owned()),
            ("exp", (NOW + 300).to_string()),
            ("iat", NOW.to_string()),
            ("nbf", NOW.to_string()),
            ("jti", r#""t1""#.to_owned()),
            ("roles", r#"["reader","writer"]"#.to_owned()),
        ];
        for (name, value) in changes {
            members.retain(|(member, _)| member != name);
            if !value.is_empty() {
                members.push((*name, (*value).to_owned()));
            }
        }
        let body: Vec<String> = members.iter().map(|(name, value)| format!(r#""{name}":{value}"#)).collect();
        format!("{{{}}}", body.join(","))
    }

    #[test]
    fn a_service_token_is_told_from_a_user_token_by_gty() {
        assert_eq!(check(&payload(&[])).expect("valid").subject_kind(), SubjectKind::User);
        let service = check(&payload(&[("gty", r#""client-credentials""#)])).expect("valid");
        assert_eq!((service.gty.as_deref(), service.subject_kind()), (Some(SERVICE_GRANT), SubjectKind::Service));
        let other = check(&payload(&[("gty", r#""password""#)])).expect("valid");
        assert_eq!(other.subject_kind(), SubjectKind::User);
        assert_eq!(check(&payload(&[("gty", "7")])), Err(ClaimsError::WrongClaimType("gty")));
        for kind in [SubjectKind::User, SubjectKind::Service] {
            assert_eq!(SubjectKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(SubjectKind::from_name("Service"), None);
    }

    #[test]
    fn accepts_a_good_access_token() {
        let claims = check(&payload(&[])).expect("valid claims");
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
        assert_eq!(claims.aud, ["api"]);
        assert_eq!(claims.roles, ["reader", "writer"]);
        assert_eq!(claims.exp, NOW + 300);
    }

    #[test]
    fn typ_is_compared_as_a_media_type() {
        let body = payload(&[]);
        for typ in ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"] {
            assert!(Claims::check(Some(typ), body.as_bytes(), &options(), NOW).is_ok(), "{typ}");
        }
        for typ in [None, Some("JWT"), Some("jwt"), Some("at+jwt "), Some("application/jwt"), Some("text/at+jwt")] {
            assert_eq!(
                Claims::check(typ, body.as_bytes(), &options(), NOW),
                Err(ClaimsError::WrongTokenType),
                "{typ:?}"
            );
        }
    }

    #[test]
    fn times_must_be_non_negative_integers() {
        for value in [r#""1800000300""#, "1800000300.0", "1.8e9", "-1", "null", "1e30", "true", "[1]"] {
            assert_eq!(check(&payload(&[("exp", value)])), Err(ClaimsError::WrongClaimType("exp")), "{value}");
            assert_eq!(check(&payload(&[("nbf", value)])), Err(ClaimsError::WrongClaimType("nbf")), "{value}");
            assert_eq!(check(&payload(&[("iat", value)])), Err(ClaimsError::WrongClaimType("iat")), "{value}");
        }
        assert_eq!(check(&payload(&[("exp", "1e400")])), Err(ClaimsError::NotJsonObject), "beyond f64: not JSON");
        assert_eq!(check(&payload(&[("exp", "")])), Err(ClaimsError::Missing("exp")));
        assert_eq!(check(&payload(&[("iat", "")])), Err(ClaimsError::Missing("iat")));
        assert!(check(&payload(&[("nbf", "")])).is_ok(), "nbf is optional");
    }

    #[test]
    fn time_windows_with_leeway() {
        let at = |exp: u64, now: u64| {
            Claims::check(
                Some("at+jwt"),
                payload(&[("exp", &exp.to_string()), ("iat", &(exp - 300).to_string()), ("nbf", "")]).as_bytes(),
                &options(),
                now,
            )
        };
        assert!(at(NOW, NOW + 59).is_ok(), "within the leeway after exp");
        assert_eq!(at(NOW, NOW + 60), Err(ClaimsError::Expired));
        assert_eq!(check(&payload(&[("nbf", &(NOW + 61).to_string())])), Err(ClaimsError::NotYetValid));
        assert!(check(&payload(&[("nbf", &(NOW + 60).to_string())])).is_ok());
        let future = payload(&[("iat", &(NOW + 61).to_string()), ("exp", &(NOW + 400).to_string())]);
        assert_eq!(check(&future), Err(ClaimsError::IssuedInFuture));
        let long = payload(&[("exp", &(NOW + 3601).to_string())]);
        assert_eq!(check(&long), Err(ClaimsError::LifetimeTooLong));
        let huge = payload(&[("exp", &u64::MAX.to_string())]);
        assert_eq!(check(&huge), Err(ClaimsError::LifetimeTooLong));
    }

    #[test]
    fn issuer_is_exact_and_audience_is_any_of() {
        for iss in [r#""https://issuer.example/""#, r#""HTTPS://issuer.example""#, r#""https://issuer.example ""#] {
            assert_eq!(check(&payload(&[("iss", iss)])), Err(ClaimsError::WrongIssuer), "{iss}");
        }
        assert_eq!(check(&payload(&[("iss", "")])), Err(ClaimsError::Missing("iss")));
        assert_eq!(check(&payload(&[("iss", "1")])), Err(ClaimsError::WrongClaimType("iss")));
        assert!(check(&payload(&[("aud", r#"["other","admin-api"]"#)])).is_ok());
        assert_eq!(check(&payload(&[("aud", "[]")])), Err(ClaimsError::WrongAudience));
        assert_eq!(check(&payload(&[("aud", r#""other""#)])), Err(ClaimsError::WrongAudience));
        assert_eq!(check(&payload(&[("aud", r#"["api",1]"#)])), Err(ClaimsError::WrongClaimType("aud")));
        assert_eq!(check(&payload(&[("aud", "")])), Err(ClaimsError::Missing("aud")));
    }

    #[test]
    fn roles_are_an_array_of_strings() {
        assert_eq!(check(&payload(&[("roles", "")])).map(|c| c.roles), Ok(vec![]));
        assert_eq!(check(&payload(&[("roles", r#""admin""#)])), Err(ClaimsError::WrongClaimType("roles")));
        assert_eq!(check(&payload(&[("roles", r#"["admin",null]"#)])), Err(ClaimsError::WrongClaimType("roles")));
    }

    #[test]
    fn payload_must_be_a_strict_json_object() {
        assert_eq!(check(r#""foo""#), Err(ClaimsError::NotJsonObject));
        assert_eq!(check("{"), Err(ClaimsError::NotJsonObject));
        let twice = payload(&[]).replace(r#""sub":"user-1""#, r#""sub":"user-1","sub":"admin""#);
        assert_eq!(check(&twice), Err(ClaimsError::DuplicateMember));
    }
}
