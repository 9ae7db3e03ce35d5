//! Browser sign-in: the issuer's own browser sessions (single sign-on), one-time sign-in links,
//! and authorization codes with PKCE (RFC 6749 §4.1, RFC 7636, OpenID Connect Core).
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`request`] | the authorization request, checked as a pure function; redirect URI rules |
//! | [`pkce`] | S256 challenges and verifiers |
//! | [`code`] | the pure decision on a presented code |
//! | [`mail`] | sending sign-in links: SMTP or the development outbox |
//!
//! Every secret (the session cookie's value, a link's token, a code) is 256 random bits, shown
//! once and stored as its SHA-256. Codes and links are spent by one conditional update each, so
//! of concurrent uses exactly one wins.

pub mod code;
pub mod mail;
pub mod pkce;
pub mod request;

use crate::domain::accounts::AccountError;
use crate::domain::secrets::{random_id, random_token, same_hash, secret_hash};
use crate::domain::sessions::{IssuedAccess, SessionError, Sessions};
use crate::domain::tokens::MintError;
use crate::store::sessions::NewFamily;
use crate::store::signin::{
    self as rows, BrowserSessionRow, CodeRow, Issued, NewBrowserSession, NewCode, NewSignInLink,
};
use crate::store::{Db, DbError, from_db_time};
use code::CodeRefusal;
use std::time::Duration;

/// How long an authorization code lives (OAuth 2.1 §4.1.2: a short lifetime; at most 60 s here).
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// How long a sign-in link lives (at most 10 minutes).
pub const LINK_TTL: Duration = Duration::from_secs(10 * 60);

/// Sign-in links sent per email address within the failure window.
pub const LINKS_PER_EMAIL: u32 = 3;

/// Sign-in links asked for per client address within the failure window.
pub const LINKS_PER_ADDRESS: u32 = 10;

/// How long browser sessions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignInPolicy {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// No session outlives this, counted from its login.
    pub max_lifetime: Duration,
}

/// Why a sign-in operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignInError {
    /// The code cannot be exchanged (unknown, expired, another client's, wrong redirect URI or
    /// verifier).
    #[error("authorization code refused: {0}")]
    InvalidGrant(&'static str),
    /// The code was used before: what its first exchange issued is revoked now.
    #[error("authorization code refused: reused authorization code")]
    Reused,
    /// The code's user is disabled (or deleted) since the code was issued.
    #[error("authorization code refused: the user is disabled")]
    DisabledUser,
    /// Starting the refresh-token family, or revoking one, failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// Reading the user failed.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The tokens could not be signed.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SignInError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(error.into())
    }
}

/// A live browser session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSession {
    /// Its public id: the ID tokens' `sid`.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// When the user last proved who they are (Unix seconds): the ID tokens' `auth_time`.
    pub auth_time: u64,
    /// When it ends at the latest (Unix seconds).
    pub expires_at: u64,
}

/// True when the session of `row` may be used at `now`: not ended, before its absolute end and
/// its idle timeout, and its user not disabled.
fn is_live(row: &BrowserSessionRow, idle_timeout: Duration, now: u64) -> bool {
    row.ended_at.is_none()
        && row.user_disabled_at.is_none()
        && from_db_time(row.expires_at) > now
        && from_db_time(row.last_seen_at).saturating_add(idle_timeout.as_secs()) > now
}

/// A sign-in link that can still be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLink {
    /// The authorization request it resumes (a query string).
    pub request: String,
    /// The account it signs in to.
    pub email: String,
    /// True when the browser opening it is the one that asked for it.
    pub same_browser: bool,
}

/// What an authorization code is issued for.
#[derive(Clone, Debug)]
pub struct CodeGrant<'a> {
    /// The client.
    pub client_id: &'a str,
    /// The redirect URI of the request.
    pub redirect_uri: &'a str,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
    /// The granted scopes.
    pub scope: &'a str,
    /// The request's nonce.
    pub nonce: Option<&'a str>,
    /// The browser session the code comes from.
    pub session: &'a BrowserSession,
}

/// A code exchange, as the token endpoint received it.
#[derive(Clone, Debug)]
pub struct Exchange<'a> {
    /// The code.
    pub code: &'a str,
    /// The client that presents it.
    pub client_id: &'a str,
    /// The `redirect_uri` sent with it.
    pub redirect_uri: Option<&'a str>,
    /// The PKCE verifier.
    pub verifier: &'a str,
    /// The `jti` of the access token the exchange will issue.
    pub access_jti: &'a str,
    /// The `exp` of that access token.
    pub access_expires_at: u64,
}

/// What a code was issued for, once exchanged, and the first refresh token of its new family.
#[derive(Clone, Debug)]
pub struct Exchanged {
    /// The user.
    pub user_id: String,
    /// The granted scopes.
    pub scope: String,
    /// The nonce for the ID token.
    pub nonce: Option<String>,
    /// The browser session: the ID token's `sid`.
    pub session_id: String,
    /// The ID token's `auth_time`.
    pub auth_time: u64,
    /// The refresh token (shown once).
    pub refresh: String,
}

/// Browser sessions, sign-in links and codes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SignIn {
    db: Db,
    policy: SignInPolicy,
}

impl SignIn {
    /// Over `db`, under `policy`.
    pub fn new(db: Db, policy: SignInPolicy) -> Self {
        Self { db, policy }
    }

    /// The session lifetimes.
    pub fn policy(&self) -> SignInPolicy {
        self.policy
    }

    /// Starts a browser session for `user_id`, who has just proved who they are. Returns the
    /// session and the cookie's value (shown once; only its hash is stored).
    pub async fn start_session(&self, user_id: &str, now: u64) -> Result<(BrowserSession, String), SignInError> {
        let (id, secret) = (random_id(), random_token());
        let expires_at = now.saturating_add(self.policy.max_lifetime.as_secs());
        let row = NewBrowserSession { id: &id, secret_hash: &secret_hash(&secret), user_id, now, expires_at };
        rows::insert_browser_session(&self.db, &row).await?;
        Ok((BrowserSession { id, user_id: user_id.to_owned(), auth_time: now, expires_at }, secret))
    }

    /// The live session whose cookie holds `secret`, marked as used at `now`.
    pub async fn session(&self, secret: &str, now: u64) -> Result<Option<BrowserSession>, SignInError> {
        let Some(row) = rows::browser_session(&self.db, &secret_hash(secret)).await? else { return Ok(None) };
        if !is_live(&row, self.policy.idle_timeout, now) {
            return Ok(None);
        }
        rows::touch_browser_session(&self.db, &row.id, now).await?;
        Ok(Some(BrowserSession {
            id: row.id,
            user_id: row.user_id,
            auth_time: from_db_time(row.auth_time),
            expires_at: from_db_time(row.expires_at),
        }))
    }

    /// Ends a browser session (idempotent).
    pub async fn end_session(&self, id: &str, now: u64) -> Result<(), SignInError> {
        Ok(rows::end_browser_session(&self.db, id, now).await?)
    }

    /// A sign-in link token for `user_id` that resumes the authorization request `request` (its
    /// query string), valid for [`LINK_TTL`], asked for by the browser whose CSRF cookie holds
    /// `browser` (kept hashed, to tell that browser from another when the link is opened).
    pub async fn create_link(
        &self,
        user_id: &str,
        request: &str,
        browser: Option<&str>,
        now: u64,
    ) -> Result<String, SignInError> {
        let token = random_token();
        let expires_at = now.saturating_add(LINK_TTL.as_secs());
        let browser_hash = browser.map(secret_hash);
        let link = NewSignInLink {
            hash: &secret_hash(&token),
            user_id,
            request,
            browser_hash: browser_hash.as_deref(),
            now,
            expires_at,
        };
        rows::insert_link(&self.db, &link).await?;
        Ok(token)
    }

    /// The link `token` while it can be used, as opened by the browser whose CSRF cookie holds
    /// `browser`; spends nothing.
    pub async fn pending_link(
        &self,
        token: &str,
        browser: Option<&str>,
        now: u64,
    ) -> Result<Option<PendingLink>, SignInError> {
        let row = rows::pending_link(&self.db, &secret_hash(token), now).await?;
        Ok(row.map(|row| PendingLink {
            same_browser: match (row.browser_hash.as_deref(), browser) {
                (Some(stored), Some(browser)) => same_hash(stored, &secret_hash(browser)),
                _ => false,
            },
            request: row.request,
            email: row.email,
        }))
    }

    /// Spends the link `token`: its user and the request it resumes, or `None` when it is
    /// unknown, spent or expired (the same answer for each).
    pub async fn redeem_link(&self, token: &str, now: u64) -> Result<Option<(String, String)>, SignInError> {
        let spent = rows::spend_link(&self.db, &secret_hash(token), now).await?;
        Ok(spent.map(|row| (row.user_id, row.request)))
    }

    /// A new authorization code for `grant`, valid for [`CODE_TTL`].
    pub async fn issue_code(&self, grant: &CodeGrant<'_>, now: u64) -> Result<String, SignInError> {
        let code = random_token();
        let row = NewCode {
            hash: &secret_hash(&code),
            client_id: grant.client_id,
            redirect_uri: grant.redirect_uri,
            code_challenge: grant.code_challenge,
            scope: grant.scope,
            nonce: grant.nonce,
            user_id: &grant.session.user_id,
            session_id: &grant.session.id,
            auth_time: grant.session.auth_time,
            now,
            expires_at: now.saturating_add(CODE_TTL.as_secs()),
        };
        rows::insert_code(&self.db, &row).await?;
        Ok(code)
    }

    /// The code `exchange.code` as the pure [`code::decide`] sees it before anything changes; a
    /// code used before revokes what its first exchange issued.
    pub(crate) async fn check_code(
        &self,
        sessions: &Sessions,
        exchange: &Exchange<'_>,
        now: u64,
    ) -> Result<CodeRow, SignInError> {
        let hash = secret_hash(exchange.code);
        let row = rows::code(&self.db, &hash).await?.ok_or(SignInError::InvalidGrant("unknown authorization code"))?;
        match code::decide(&row, exchange.client_id, exchange.redirect_uri, exchange.verifier, now) {
            // A code whose sign-in has been logged out since (single logout ran before it was
            // exchanged) starts nothing: the logout would never end what it gave.
            Ok(()) if !rows::browser_session_live(&self.db, &row.session_id).await? => {
                Err(SignInError::InvalidGrant("the sign-in of this authorization code has ended"))
            }
            Ok(()) => Ok(row),
            Err(CodeRefusal::Spent) => Err(self.reused(sessions, &row, now).await),
            Err(refusal) => Err(SignInError::InvalidGrant(refusal.reason())),
        }
    }

    /// Exchanges a code that [`check_code`](Self::check_code) accepted as `row`: spends it with
    /// one conditional update and starts its refresh-token family in the same transaction. Of
    /// concurrent exchanges exactly one wins; the others revoke what it issued.
    pub(crate) async fn exchange_code(
        &self,
        sessions: &Sessions,
        exchange: &Exchange<'_>,
        row: CodeRow,
        now: u64,
    ) -> Result<Exchanged, SignInError> {
        let hash = secret_hash(exchange.code);
        let family_id = random_id();
        let issued = Issued {
            family_id: &family_id,
            access_jti: exchange.access_jti,
            access_expires_at: exchange.access_expires_at,
        };
        let mut tx = self.db.begin().await?;
        if !rows::spend_code(&mut tx, &hash, now, &issued).await? {
            tx.rollback().await?;
            // Another exchange won since the check: its commit is visible now.
            let row =
                rows::code(&self.db, &hash).await?.ok_or(SignInError::InvalidGrant("unknown authorization code"))?;
            return Err(self.reused(sessions, &row, now).await);
        }
        let family = NewFamily {
            id: &family_id,
            user_id: &row.user_id,
            client_id: exchange.client_id,
            created_at: now,
            expires_at: 0,
            scope: Some(&row.scope),
            audiences: None,
            browser_session_id: Some(&row.session_id),
        };
        let access = IssuedAccess { jti: exchange.access_jti, expires_at: exchange.access_expires_at };
        let refresh = sessions.start_in(&mut tx, family, access).await?;
        tx.commit().await?;
        Ok(Exchanged {
            user_id: row.user_id,
            scope: row.scope,
            nonce: row.nonce,
            session_id: row.session_id,
            auth_time: from_db_time(row.auth_time),
            refresh,
        })
    }

    /// A second use of a code: revokes the refresh-token family and the access token its first
    /// exchange issued (RFC 6749 §4.1.2), and says so.
    async fn reused(&self, sessions: &Sessions, row: &CodeRow, now: u64) -> SignInError {
        let revoked = async {
            if let Some(family) = &row.family_id {
                sessions.revoke_family(family, now).await?;
            }
            if let (Some(jti), Some(exp)) = (&row.access_jti, row.access_expires_at) {
                sessions.revoke_access_token(jti, from_db_time(exp), now).await?;
            }
            Ok::<_, SessionError>(())
        };
        match revoked.await {
            Ok(()) => {
                tracing::warn!(client = %row.client_id, user = %row.user_id, "authorization code reused: its tokens are revoked");
                SignInError::Reused
            }
            Err(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> BrowserSessionRow {
        BrowserSessionRow {
            id: "s".to_owned(),
            user_id: "u".to_owned(),
            auth_time: 100,
            last_seen_at: 200,
            expires_at: 1_000,
            ended_at: None,
            user_disabled_at: None,
        }
    }

    #[test]
    fn a_session_lives_until_idle_ended_expired_or_its_user_disabled() {
        let idle = Duration::from_secs(100);
        assert!(is_live(&row(), idle, 299));
        assert!(!is_live(&row(), idle, 300), "idle");
        assert!(!is_live(&BrowserSessionRow { last_seen_at: 950, ..row() }, idle, 1_000), "absolute end");
        assert!(!is_live(&BrowserSessionRow { ended_at: Some(250), ..row() }, idle, 260), "ended");
        assert!(!is_live(&BrowserSessionRow { user_disabled_at: Some(250), ..row() }, idle, 260), "disabled user");
    }
}
