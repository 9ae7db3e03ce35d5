//! After verification: allow with an identity for the origin, or refuse with a reason for the log.

use crate::revocations::RevocationList;
use jwks::{Access, Claims, SubjectKind, VerifyError};

/// Who a verified request is, as the origin will be told in `X-Auth-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`.
    pub subject: Option<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// `iss`.
    pub issuer: String,
    /// `jti`.
    pub token_id: Option<String>,
    /// `exp` (Unix seconds): nothing vouching for this identity may outlive it.
    pub expires_at: u64,
    /// A user, or a service (a client for itself: `gty` `client-credentials`).
    pub kind: SubjectKind,
}

impl Identity {
    /// The identity of `claims`, if every value can travel in a header unchanged: printable ASCII
    /// (spaces allowed inside), and no comma in a role since roles are comma-joined.
    pub fn from_claims(claims: &Claims) -> Option<Self> {
        let safe = |value: &str| {
            value.bytes().all(|byte| (0x20..0x7f).contains(&byte)) && value.trim() == value && !value.is_empty()
        };
        let subject_ok = claims.sub.as_deref().is_none_or(safe);
        let token_id_ok = claims.jti.as_deref().is_none_or(safe);
        let roles_ok = claims.roles.iter().all(|role| safe(role) && !role.contains(','));
        (subject_ok && token_id_ok && roles_ok && safe(&claims.iss)).then(|| Self {
            subject: claims.sub.clone(),
            roles: claims.roles.clone(),
            issuer: claims.iss.clone(),
            token_id: claims.jti.clone(),
            expires_at: claims.exp,
            kind: claims.subject_kind(),
        })
    }

    /// The headers the origin receives, in a fixed order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(5);
        if let Some(subject) = &self.subject {
            headers.push(("x-auth-subject", subject.clone()));
        }
        headers.push(("x-auth-subject-type", self.kind.as_str().to_owned()));
        headers.push(("x-auth-roles", self.roles.join(",")));
        headers.push(("x-auth-issuer", self.issuer.clone()));
        if let Some(token_id) = &self.token_id {
            headers.push(("x-auth-token-id", token_id.clone()));
        }
        headers
    }
}

/// Why the edge answers a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A protected route and no token: 401 without an `error` (RFC 6750 §3.1), or the login page.
    NoToken,
    /// The token is not acceptable: 401 `invalid_token`.
    InvalidToken(String),
    /// The token is good but lacks a role the rule requires: 403 `insufficient_scope`.
    InsufficientRole {
        /// The token's subject, for the log.
        subject: Option<String>,
    },
    /// The token is good but speaks for another kind of caller than the rule admits (a user's
    /// on a route for services, or the reverse): 403 `insufficient_scope`.
    WrongSubjectKind {
        /// The token's subject, for the log.
        subject: Option<String>,
    },
    /// No rule of the policy matches: 403.
    NoRule,
    /// No key set can be had (the issuer unreachable and nothing cached): 503.
    KeysUnavailable,
    /// The token verifies but the issuer lists it as revoked: 401 `invalid_token`.
    Revoked {
        /// The token's subject, for the log.
        subject: Option<String>,
    },
    /// Revocations are checked but no list that may serve can be had (the issuer unreachable
    /// past the stale bound): 503.
    RevocationsUnavailable,
    /// The browser's session has ended (the issuer refused its refresh: logout elsewhere, a
    /// disabled user, a revoked family): 401 `invalid_token`, the cookie cleared.
    SessionEnded,
    /// The browser's session could not be asked for a new access token: 503.
    SessionUnavailable,
    /// A request that changes something (not GET, HEAD or OPTIONS) came with the session cookie
    /// from a page of another origin (neither this site nor a CORS origin allowed credentials):
    /// 403. A cookie goes with a form another site submits; a bearer token does not.
    CrossSiteRequest,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoToken | Self::InvalidToken(_) | Self::Revoked { .. } | Self::SessionEnded => 401,
            Self::InsufficientRole { .. } | Self::WrongSubjectKind { .. } | Self::NoRule | Self::CrossSiteRequest => {
                403
            }
            Self::KeysUnavailable | Self::RevocationsUnavailable | Self::SessionUnavailable => 503,
        }
    }

    /// The RFC 6750 `error` code, if any.
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::InvalidToken(_) | Self::Revoked { .. } | Self::SessionEnded => Some("invalid_token"),
            Self::InsufficientRole { .. } | Self::WrongSubjectKind { .. } => Some("insufficient_scope"),
            Self::NoToken
            | Self::NoRule
            | Self::KeysUnavailable
            | Self::RevocationsUnavailable
            | Self::SessionUnavailable
            | Self::CrossSiteRequest => None,
        }
    }

    /// Its code: the one the log line carries and the counter it moves.
    pub fn code(&self) -> RefusalCode {
        match self {
            Self::NoToken => RefusalCode::NoToken,
            Self::InvalidToken(_) => RefusalCode::InvalidToken,
            Self::InsufficientRole { .. } => RefusalCode::InsufficientRole,
            Self::WrongSubjectKind { .. } => RefusalCode::WrongSubjectKind,
            Self::NoRule => RefusalCode::NoRule,
            Self::KeysUnavailable => RefusalCode::KeysUnavailable,
            Self::Revoked { .. } => RefusalCode::Revoked,
            Self::RevocationsUnavailable => RefusalCode::RevocationsUnavailable,
            Self::SessionEnded => RefusalCode::SessionEnded,
            Self::SessionUnavailable => RefusalCode::SessionUnavailable,
            Self::CrossSiteRequest => RefusalCode::CrossSiteRequest,
        }
    }

    /// True when signing in again would help: no token, a bad or revoked one, an ended session.
    pub fn needs_sign_in(&self) -> bool {
        matches!(self, Self::NoToken | Self::InvalidToken(_) | Self::Revoked { .. } | Self::SessionEnded)
    }

    /// The detailed reason, for the log only.
    pub fn reason(&self) -> &str {
        match self {
            Self::NoToken => "the request carries no token",
            Self::InvalidToken(reason) => reason,
            Self::InsufficientRole { .. } => "the token lacks a role the rule requires",
            Self::WrongSubjectKind { .. } => "the token speaks for another kind of caller than the rule admits",
            Self::NoRule => "no rule of the policy matches the request",
            Self::KeysUnavailable => "no key set is available to verify the token",
            Self::Revoked { .. } => "the issuer lists the token as revoked",
            Self::RevocationsUnavailable => "no revocation list is available to check the token against",
            Self::SessionEnded => "the browser's session has ended at the issuer",
            Self::SessionUnavailable => "the browser's session could not be asked for a token",
            Self::CrossSiteRequest => {
                "a request that changes something came with the session cookie from another origin"
            }
        }
    }
}

/// The kind of a [`Refusal`], without its details: what its log line's `code` says and which
/// counter of the status page it moves. The codes are written here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// [`Refusal::NoToken`].
    NoToken,
    /// [`Refusal::InvalidToken`].
    InvalidToken,
    /// [`Refusal::InsufficientRole`].
    InsufficientRole,
    /// [`Refusal::NoRule`].
    NoRule,
    /// [`Refusal::KeysUnavailable`].
    KeysUnavailable,
    /// [`Refusal::Revoked`].
    Revoked,
    /// [`Refusal::RevocationsUnavailable`].
    RevocationsUnavailable,
    /// [`Refusal::WrongSubjectKind`].
    WrongSubjectKind,
    /// [`Refusal::SessionEnded`].
    SessionEnded,
    /// [`Refusal::SessionUnavailable`].
    SessionUnavailable,
    /// [`Refusal::CrossSiteRequest`].
    CrossSiteRequest,
}

impl RefusalCode {
    /// Every code, in the order of the discriminants (each indexes its counter).
    pub const ALL: [Self; 11] = [
        Self::NoToken,
        Self::InvalidToken,
        Self::InsufficientRole,
        Self::NoRule,
        Self::KeysUnavailable,
        Self::Revoked,
        Self::RevocationsUnavailable,
        Self::WrongSubjectKind,
        Self::SessionEnded,
        Self::SessionUnavailable,
        Self::CrossSiteRequest,
    ];

    /// The code as the log and the status page write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientRole => "insufficient_role",
            Self::NoRule => "no_rule",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Revoked => "revoked",
            Self::RevocationsUnavailable => "revocations_unavailable",
            Self::WrongSubjectKind => "wrong_subject_kind",
            Self::SessionEnded => "session_ended",
            Self::SessionUnavailable => "session_unavailable",
            Self::CrossSiteRequest => "cross_site_request",
        }
    }
}

/// Applies the revocation list (when revocations are checked), then the rule's `access` and the
/// kind of caller it admits (`subject`, `None`: either), to the outcome of verification. A revoked
/// token is refused as such whatever its roles.
pub fn authorize(
    access: &Access,
    subject: Option<SubjectKind>,
    verified: Result<Claims, VerifyError>,
    revocations: Option<&RevocationList>,
) -> Result<Identity, Refusal> {
    let claims = verified.map_err(|error| Refusal::InvalidToken(error.to_string()))?;
    if let (Some(list), Some(jti)) = (revocations, claims.jti.as_deref())
        && list.contains(jti)
    {
        return Err(Refusal::Revoked { subject: claims.sub });
    }
    if !access.permits(&claims.roles) {
        return Err(Refusal::InsufficientRole { subject: claims.sub });
    }
    if subject.is_some_and(|kind| kind != claims.subject_kind()) {
        return Err(Refusal::WrongSubjectKind { subject: claims.sub });
    }
    Identity::from_claims(&claims)
        .ok_or_else(|| Refusal::InvalidToken("a claim cannot be carried in an X-Auth header".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwks::{ClaimsError, SignatureError};

    fn claims(roles: &[&str]) -> Claims {
        Claims {
            iss: "https://issuer.example".to_owned(),
            sub: Some("user-1".to_owned()),
            aud: vec!["api".to_owned()],
            exp: 2,
            iat: 1,
            nbf: None,
            jti: Some("t-1".to_owned()),
            roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            client_id: None,
            scope: None,
            gty: None,
            nonce: None,
        }
    }

    #[test]
    fn a_good_token_with_the_roles_is_allowed() {
        let access = Access::AnyRole(vec!["admin".to_owned()]);
        let identity = authorize(&access, None, Ok(claims(&["reader", "admin"])), None).expect("allowed");
        assert_eq!(
            identity.headers(),
            [
                ("x-auth-subject", "user-1".to_owned()),
                ("x-auth-subject-type", "user".to_owned()),
                ("x-auth-roles", "reader,admin".to_owned()),
                ("x-auth-issuer", "https://issuer.example".to_owned()),
                ("x-auth-token-id", "t-1".to_owned()),
            ]
        );
    }

    #[test]
    fn absent_optional_claims_give_no_header() {
        let mut claims = claims(&[]);
        claims.sub = None;
        claims.jti = None;
        let identity = authorize(&Access::Authenticated, None, Ok(claims), None).expect("allowed");
        assert_eq!(
            identity.headers(),
            [
                ("x-auth-subject-type", "user".to_owned()),
                ("x-auth-roles", String::new()),
                ("x-auth-issuer", "https://issuer.example".to_owned())
            ]
        );
    }

    #[test]
    fn a_missing_role_is_403_insufficient_scope() {
        let refusal =
            authorize(&Access::AllRoles(vec!["a".into(), "b".into()]), None, Ok(claims(&["a"])), None).expect_err("x");
        assert_eq!(refusal, Refusal::InsufficientRole { subject: Some("user-1".to_owned()) });
        assert_eq!((refusal.status(), refusal.bearer_error()), (403, Some("insufficient_scope")));
    }

    #[test]
    fn a_bad_token_is_401_invalid_token_with_the_reason_kept_for_the_log() {
        let refusal =
            authorize(&Access::Authenticated, None, Err(ClaimsError::Expired.into()), None).expect_err("refused");
        assert_eq!((refusal.status(), refusal.bearer_error()), (401, Some("invalid_token")));
        assert!(refusal.reason().contains("expired"), "{}", refusal.reason());
        let refusal =
            authorize(&Access::Authenticated, None, Err(SignatureError::Invalid.into()), None).expect_err("refused");
        assert_eq!(refusal.code(), RefusalCode::InvalidToken);
        assert_eq!(refusal.code().as_str(), "invalid_token");
    }

    #[test]
    fn a_revoked_token_is_401_invalid_token_whatever_its_roles() {
        let list = <RevocationList as crate::document_cache::FetchedDocument>::parse(
            br#"{"revoked":[{"jti":"t-1","exp":99}]}"#,
            1,
        )
        .expect("a list");
        let refusal = authorize(&Access::AnyRole(vec!["admin".into()]), None, Ok(claims(&["reader"])), Some(&list))
            .expect_err("x");
        assert_eq!(refusal, Refusal::Revoked { subject: Some("user-1".to_owned()) });
        assert_eq!(
            (refusal.status(), refusal.bearer_error(), refusal.code().as_str()),
            (401, Some("invalid_token"), "revoked")
        );
        // Another token of the same user passes; so does one without a jti (it cannot be listed).
        let mut other = claims(&[]);
        other.jti = Some("t-2".to_owned());
        assert!(authorize(&Access::Authenticated, None, Ok(other), Some(&list)).is_ok());
        let mut bare = claims(&[]);
        bare.jti = None;
        assert!(authorize(&Access::Authenticated, None, Ok(bare), Some(&list)).is_ok());
        assert_eq!(Refusal::RevocationsUnavailable.status(), 503);
    }

    #[test]
    fn a_rule_for_services_admits_service_tokens_only_and_the_reverse() {
        let service =
            Claims { gty: Some(jwks::SERVICE_GRANT.to_owned()), sub: Some("billing".to_owned()), ..claims(&[]) };
        let user = claims(&[]);
        let services = Some(SubjectKind::Service);
        let identity = authorize(&Access::Authenticated, services, Ok(service.clone()), None).expect("a service");
        assert_eq!(identity.kind, SubjectKind::Service);
        assert!(identity.headers().contains(&("x-auth-subject-type", "service".to_owned())));
        let refusal = authorize(&Access::Authenticated, services, Ok(user.clone()), None).expect_err("a user");
        assert_eq!(refusal, Refusal::WrongSubjectKind { subject: Some("user-1".to_owned()) });
        assert_eq!((refusal.status(), refusal.bearer_error()), (403, Some("insufficient_scope")));
        let users = Some(SubjectKind::User);
        assert!(authorize(&Access::Authenticated, users, Ok(service.clone()), None).is_err());
        assert!(authorize(&Access::Authenticated, users, Ok(user.clone()), None).is_ok());
        for either in [service, user] {
            assert!(authorize(&Access::Authenticated, None, Ok(either), None).is_ok());
        }
    }

    #[test]
    fn claims_that_cannot_travel_in_headers_are_refused() {
        for bad in ["a\r\nX-Auth-Roles: admin", "caf\u{e9}", " padded", ""] {
            let mut claims = claims(&[]);
            claims.sub = Some(bad.to_owned());
            assert!(
                matches!(authorize(&Access::Authenticated, None, Ok(claims), None), Err(Refusal::InvalidToken(_))),
                "{bad:?}"
            );
        }
        assert!(authorize(&Access::Authenticated, None, Ok(claims(&["a,admin"])), None).is_err());
    }

    /// One refusal of each kind. A new kind fails to compile here until it is added.
    fn every_refusal() -> Vec<Refusal> {
        let every = vec![
            Refusal::NoToken,
            Refusal::InvalidToken("bad".to_owned()),
            Refusal::InsufficientRole { subject: None },
            Refusal::NoRule,
            Refusal::KeysUnavailable,
            Refusal::Revoked { subject: None },
            Refusal::RevocationsUnavailable,
            Refusal::WrongSubjectKind { subject: None },
            Refusal::SessionEnded,
            Refusal::SessionUnavailable,
            Refusal::CrossSiteRequest,
        ];
        for refusal in &every {
            match refusal {
                Refusal::NoToken
                | Refusal::InvalidToken(_)
                | Refusal::InsufficientRole { .. }
                | Refusal::NoRule
                | Refusal::KeysUnavailable
                | Refusal::Revoked { .. }
                | Refusal::RevocationsUnavailable
                | Refusal::WrongSubjectKind { .. }
                | Refusal::SessionEnded
                | Refusal::SessionUnavailable
                | Refusal::CrossSiteRequest => {}
            }
        }
        every
    }

    #[test]
    fn each_kind_of_refusal_has_its_own_code_listed_once_in_order() {
        let codes: Vec<RefusalCode> = every_refusal().iter().map(Refusal::code).collect();
        assert_eq!(codes, RefusalCode::ALL, "one code per kind, each listed in ALL");
        for (index, code) in RefusalCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "{code:?}: ALL is in the order of the discriminants");
        }
        let names: Vec<&str> = RefusalCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(
            names,
            [
                "no_token",
                "invalid_token",
                "insufficient_role",
                "no_rule",
                "keys_unavailable",
                "revoked",
                "revocations_unavailable",
                "wrong_subject_kind",
                "session_ended",
                "session_unavailable",
                "cross_site_request"
            ]
        );
    }

    #[test]
    fn statuses_and_codes() {
        assert_eq!((Refusal::NoToken.status(), Refusal::NoToken.bearer_error()), (401, None));
        assert_eq!((Refusal::NoRule.status(), Refusal::NoRule.bearer_error()), (403, None));
        assert_eq!(Refusal::KeysUnavailable.status(), 503);
        assert_eq!(
            (Refusal::SessionEnded.status(), Refusal::SessionEnded.bearer_error()),
            (401, Some("invalid_token"))
        );
        assert_eq!(Refusal::SessionUnavailable.status(), 503);
        assert!(Refusal::SessionEnded.needs_sign_in() && Refusal::NoToken.needs_sign_in());
        assert!(!Refusal::NoRule.needs_sign_in() && !Refusal::SessionUnavailable.needs_sign_in());
        assert!(!Refusal::InsufficientRole { subject: None }.needs_sign_in(), "signing in again gives no role");
    }
}
