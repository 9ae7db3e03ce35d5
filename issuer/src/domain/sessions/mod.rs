//! Sessions: refresh-token families and their rotation, revoked access tokens, and the failed
//! logins the brute-force limit counts. Everything lives in the database, so it survives
//! restarts and is shared by every issuer process on it.
//!
//! A password login starts a family. Each refresh spends the presented token with one
//! conditional update in the transaction that also inserts its successor (see
//! [`Db::rotate_refresh`]): of several concurrent uses exactly one sees a row change. A use that
//! spends nothing is explained by the pure [`refresh::decide`] from the token's row: a reuse
//! (which revokes the family) or a refusal.

pub mod limits;
pub(crate) mod refresh;

use crate::domain::secrets::{random_id, random_token, secret_hash};
use crate::domain::tokens::{MintError, MintedToken};
use crate::store::accounts::{decode_list, encode_list};
use crate::store::sessions::{self as rows, Families, NewFamily, NewRefreshToken, Rotation};
use crate::store::{Db, DbError, DbResult, from_db_time};
use limits::{Limit, LoginLimits, Recent, Verdict};
use sqlx::AnyConnection;
use std::time::Duration;

/// How long a spent or expired authorization code is kept, so that a second use still revokes
/// what the first issued.
const CODE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// How often `serve` purges expired revocations, failed logins and dead refresh tokens.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// How long refresh tokens live and how failed logins are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A refresh token unused this long expires.
    pub idle_timeout: Duration,
    /// No refresh token of a family outlives this, counted from the login.
    pub max_lifetime: Duration,
    /// A spent refresh token may be rotated again this long after it was spent.
    pub reuse_grace: Duration,
    /// How password logins are limited; its window is also the one of every other attempt
    /// limit (sign-in links, registrations).
    pub login: LoginLimits,
    /// How long an access token issued with a refresh token may still be accepted after it was
    /// issued (its lifetime plus the leeway): how long its revocation must be kept.
    pub access_token_lifetime: Duration,
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The refresh token is unknown, expired, revoked, or not the presenting client's.
    #[error("refresh token refused: {0}")]
    InvalidGrant(&'static str),
    /// The refresh token was spent already: its family is revoked now.
    #[error("refresh token refused: reused refresh token")]
    Reused,
    /// The access token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SessionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(error.into())
    }
}

/// The family a refresh token belongs to, as a rotation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The family id.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The client it was issued to.
    pub client_id: String,
}

/// A refresh that won: what the new access token is made of, and the new refresh token.
#[derive(Debug)]
pub struct Rotated {
    /// The family.
    pub family: Family,
    /// The user's roles as they are now.
    pub roles: Vec<String>,
    /// The new refresh token (shown once; only its hash is stored).
    pub refresh: String,
    /// The scopes of a family started by a browser sign-in; `None` for the password grant.
    pub scope: Option<String>,
    /// The audiences its login asked for; `None`: the configured ones.
    pub audiences: Option<Vec<String>>,
}

/// A refresh token as introspection reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenInfo {
    /// Its family.
    pub family: Family,
    /// When it was issued.
    pub issued_at: u64,
    /// When it expires if unused.
    pub expires_at: u64,
    /// True when it can be used now: unspent, unexpired, its family alive.
    pub active: bool,
}

/// An access token revoked before its expiry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RevokedToken {
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`: the entry is purged after that.
    pub exp: u64,
}

/// The access token issued with a refresh token: what ending its session lists as revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedAccess<'a> {
    /// Its `jti`.
    pub jti: &'a str,
    /// Its `exp` (Unix seconds).
    pub expires_at: u64,
}

/// A password login attempt recorded by [`Sessions::begin_login`], pending the password check.
#[derive(Debug)]
pub struct LoginAttempt {
    id: String,
    account: String,
    address: String,
}

/// What [`Sessions::begin_login`] decided.
#[derive(Debug)]
pub enum LoginStart {
    /// Check the password after waiting `delay`, then report a success with
    /// [`Sessions::login_succeeded`].
    Allowed {
        /// The recorded attempt.
        attempt: LoginAttempt,
        /// How long to wait before the password is checked.
        delay: Duration,
    },
    /// Refused by `limit`, without a password check; nothing stays recorded.
    Refused {
        /// The limit reached.
        limit: Limit,
        /// Seconds until a login may be tried again.
        retry_after: u64,
    },
}

/// The session store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: Db,
    policy: SessionPolicy,
}

impl Sessions {
    /// The sessions of `db` under `policy`.
    pub fn new(db: Db, policy: SessionPolicy) -> Self {
        Self { db, policy }
    }

    /// The limits on logins and registrations.
    pub fn login_limits(&self) -> &LoginLimits {
        &self.policy.login
    }

    /// Starts a family for a password login and returns its first refresh token (shown once;
    /// only its hash is stored), issued with the access token `access`, whose audiences (asked
    /// for with `resource`; `None`: the configured ones) every rotated token keeps.
    pub async fn start(
        &self,
        user_id: &str,
        client_id: &str,
        access: &MintedToken,
        audiences: Option<&[String]>,
        now: u64,
    ) -> Result<String, SessionError> {
        let mut tx = self.db.begin().await?;
        let audiences = audiences.map(encode_list);
        let family = NewFamily {
            id: &random_id(),
            user_id,
            client_id,
            created_at: now,
            expires_at: 0,
            scope: None,
            audiences: audiences.as_deref(),
            browser_session_id: None,
        };
        let issued = IssuedAccess { jti: &access.jti, expires_at: access.expires_at };
        let refresh = self.start_in(&mut tx, family, issued).await?;
        tx.commit().await?;
        Ok(refresh)
    }

    /// Starts the family `family` (its expiry set here, from the policy) in the transaction of
    /// `connection`, with its first refresh token issued with the access token `access`.
    pub(crate) async fn start_in(
        &self,
        connection: &mut AnyConnection,
        mut family: NewFamily<'_>,
        access: IssuedAccess<'_>,
    ) -> Result<String, SessionError> {
        family.expires_at = family.created_at.saturating_add(self.policy.max_lifetime.as_secs());
        rows::insert_family(connection, &family).await?;
        let refresh = random_token();
        let hash = secret_hash(&refresh);
        let now = family.created_at;
        let expires_at = now.saturating_add(self.policy.idle_timeout.as_secs()).min(family.expires_at);
        let token = NewRefreshToken {
            hash: &hash,
            family_id: family.id,
            access_jti: access.jti,
            access_expires_at: access.expires_at,
            issued_at: now,
            expires_at,
        };
        rows::insert_token(connection, &token).await?;
        Ok(refresh)
    }

    /// Rotates `refresh`, presented by `client_id` at `now`: spends it and stores its successor,
    /// issued with the access token `access`, durably and in one step (see
    /// [`Db::rotate_refresh`]), when it is spendable and its user is enabled. Otherwise says why;
    /// a token spent before (past the grace window) revokes its family. Returns the family, the
    /// user's roles as they are now, and the new refresh token.
    pub async fn rotate(
        &self,
        refresh: &str,
        client_id: &str,
        now: u64,
        access: IssuedAccess<'_>,
    ) -> Result<Rotated, SessionError> {
        let hash = secret_hash(refresh);
        let floor = refresh::grace_floor(now, self.policy.reuse_grace);
        let successor = random_token();
        let rotation = Rotation {
            hash: hash.clone(),
            client_id: client_id.to_owned(),
            now,
            spent_after: floor,
            successor_hash: secret_hash(&successor),
            access_jti: access.jti.to_owned(),
            access_expires_at: access.expires_at,
            idle_until: now.saturating_add(self.policy.idle_timeout.as_secs()),
        };
        if let Some(rotated) = self.db.rotate_refresh(rotation).await? {
            let family = Family { id: rotated.family_id, user_id: rotated.user_id, client_id: client_id.to_owned() };
            let roles = decode_list("users", &rotated.roles)?;
            let audiences =
                rotated.audiences.as_deref().map(|list| decode_list("refresh_families", list)).transpose()?;
            return Ok(Rotated { family, roles, refresh: successor, scope: rotated.scope, audiences });
        }
        // Not spent: the token as it is now says why (a concurrent use that won has spent it).
        let row = rows::token(&self.db, &hash).await?.ok_or(SessionError::InvalidGrant("unknown refresh token"))?;
        if let Some(refusal) = refresh::unspent(&row, client_id, now, floor) {
            return Err(SessionError::InvalidGrant(refusal.reason()));
        }
        self.revoke_family(&row.family_id, now).await?;
        tracing::warn!(family = %row.family_id, user = %row.user_id, "refresh token reused: family revoked");
        Err(SessionError::Reused)
    }

    /// What introspection says of a refresh token; `None` when unknown.
    pub async fn refresh_token(&self, refresh: &str, now: u64) -> Result<Option<RefreshTokenInfo>, SessionError> {
        let row = rows::token(&self.db, &secret_hash(refresh)).await?;
        Ok(row.map(|row| {
            let expires_at = from_db_time(row.expires_at);
            let active = row.spent_at.is_none()
                && row.family_revoked_at.is_none()
                && expires_at > now
                && from_db_time(row.family_expires_at) > now;
            RefreshTokenInfo {
                family: Family { id: row.family_id, user_id: row.user_id, client_id: row.client_id },
                issued_at: from_db_time(row.issued_at),
                expires_at,
                active,
            }
        }))
    }

    /// Revokes the family of `refresh` if it was issued to `client_id` (RFC 7009: a client
    /// revokes only its own tokens). Returns whether a family was found.
    pub async fn revoke_refresh_token(&self, refresh: &str, client_id: &str, now: u64) -> Result<bool, SessionError> {
        match self.refresh_token(refresh, now).await? {
            Some(info) if info.family.client_id == client_id => {
                self.revoke_family(&info.family.id, now).await?;
                Ok(true)
            }
            Some(_) => {
                tracing::info!("revocation of another client's refresh token ignored");
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Ends a session: revokes the family (idempotent) and lists the access tokens issued with
    /// it that are still unexpired as revoked (so that `/revoked` tells verifiers), in one
    /// transaction.
    pub async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), SessionError> {
        let mut tx = self.db.begin().await?;
        self.end_families(&mut tx, Families::One(family_id), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session started from the issuer's browser session `browser_session_id` (its
    /// single sign-on, whichever clients hold them): their families are revoked and their
    /// unexpired access tokens listed, in one transaction. Returns the families revoked.
    pub async fn revoke_browser_session(&self, browser_session_id: &str, now: u64) -> Result<u64, SessionError> {
        let mut tx = self.db.begin().await?;
        let ended = self.end_families(&mut tx, Families::OfBrowserSession(browser_session_id), now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Revokes `families` and lists their unexpired access tokens, in the transaction of
    /// `connection`. Returns the families revoked now.
    async fn end_families(&self, connection: &mut AnyConnection, families: Families<'_>, now: u64) -> DbResult<u64> {
        let lifetime = self.policy.access_token_lifetime.as_secs();
        rows::revoke_families(connection, families, lifetime, now).await
    }

    /// Ends every session of the client `client_id` in the transaction of `connection` (its
    /// removal): its families are revoked, and the unexpired access tokens issued with them or to
    /// it by the client credentials grant are listed as revoked. Returns the families revoked.
    pub(crate) async fn end_client_in(
        &self,
        connection: &mut AnyConnection,
        client_id: &str,
        now: u64,
    ) -> DbResult<u64> {
        let ended = self.end_families(connection, Families::OfClient(client_id), now).await?;
        rows::revoke_service_tokens(connection, client_id, now).await?;
        Ok(ended)
    }

    /// Records an access token issued to `client_id` by the client credentials grant, so that
    /// removing the client lists it as revoked while it lives.
    pub async fn record_service_token(&self, token: &MintedToken, client_id: &str) -> Result<(), SessionError> {
        Ok(rows::insert_service_token(&self.db, &token.jti, client_id, token.expires_at).await?)
    }

    /// The family whose refresh token was issued with the access token `jti`.
    pub async fn family_of_access_token(&self, jti: &str) -> Result<Option<String>, SessionError> {
        Ok(rows::family_of_access_token(&self.db, jti).await?)
    }

    /// Ends every session of `user_id`: its refresh-token families are revoked, and so are the
    /// access tokens issued with them that may still be accepted (so that `/revoked` lists them
    /// for verifiers); the issuer's browser sessions of the user end. One transaction. Returns
    /// the number of families revoked.
    pub async fn revoke_user(&self, user_id: &str, now: u64) -> Result<u64, SessionError> {
        let mut tx = self.db.begin().await?;
        let ended = self.end_families(&mut tx, Families::OfUser(user_id), now).await?;
        rows::end_browser_sessions(&mut tx, user_id, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Revokes an access token until its expiry (idempotent).
    pub async fn revoke_access_token(&self, jti: &str, exp: u64, now: u64) -> Result<(), SessionError> {
        Ok(rows::revoke_access_token(&self.db, jti, exp, now).await?)
    }

    /// True when the access token `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, SessionError> {
        Ok(rows::is_revoked(&self.db, jti).await?)
    }

    /// The revoked access tokens that have not expired, soonest expiry first.
    pub async fn revoked(&self, now: u64) -> Result<Vec<RevokedToken>, SessionError> {
        let rows = rows::revoked(&self.db, now).await?;
        Ok(rows.into_iter().map(|row| RevokedToken { jti: row.jti, exp: from_db_time(row.expires_at) }).collect())
    }

    /// Records a password login attempt on `account` (the normalized email, or the name as
    /// given) from the client address `address` (its [`address_key`]) before the password is
    /// checked, so that parallel guesses count at once rather than after their hashes, and judges
    /// it by the attempts in the window (see [`limits`]). A refused attempt does not stay
    /// recorded; an allowed one whose password turns out wrong stays as a failure.
    ///
    /// [`address_key`]: crate::domain::address::address_key
    pub async fn begin_login(&self, account: &str, address: &str, now: u64) -> Result<LoginStart, SessionError> {
        let limits = &self.policy.login;
        let id = random_id();
        rows::insert_login_attempt(&self.db, &id, account, address, now).await?;
        let since = now.saturating_sub(limits.window.as_secs());
        let recent = Recent {
            pair: rows::recent_login_attempts(&self.db, Some(account), address, since, limits.max_failures).await?,
            address: rows::recent_login_attempts(&self.db, None, address, since, limits.max_address_failures).await?,
            elsewhere: rows::login_attempts_elsewhere(&self.db, account, address, since, limits.elsewhere_cap())
                .await?,
        };
        match limits.decide(&recent, now) {
            Verdict::Allow { delay } => Ok(LoginStart::Allowed {
                attempt: LoginAttempt { id, account: account.to_owned(), address: address.to_owned() },
                delay,
            }),
            Verdict::Refuse { limit, retry_after } => {
                rows::delete_login_attempt(&self.db, &id).await?;
                Ok(LoginStart::Refused { limit, retry_after })
            }
        }
    }

    /// After a successful login: forgets the attempt and the earlier failures on its account from
    /// its address (the user's own typos), never those from other addresses (an attacker's), so
    /// that a login does not give an attacker new guesses.
    pub async fn login_succeeded(&self, attempt: LoginAttempt) -> Result<(), SessionError> {
        Ok(rows::forget_login_failures(&self.db, &attempt.id, &attempt.account, &attempt.address).await?)
    }

    /// Records an attempt for each `(subject, limit)`, unless it would make more than `limit`
    /// within the window for one of them: then nothing stays recorded and the answer is the
    /// seconds until the oldest that counts leaves the window. For the limits other than the
    /// password login's (sign-in links, registrations).
    pub(crate) async fn count_attempt(
        &self,
        subjects: &[(String, u32)],
        now: u64,
    ) -> Result<Result<(), u64>, SessionError> {
        let attempts: Vec<(String, String)> =
            subjects.iter().map(|(subject, _)| (random_id(), subject.clone())).collect();
        rows::insert_attempts(&self.db, &attempts, now).await?;
        let window = self.policy.login.window.as_secs();
        let mut retry_after = None;
        for (subject, limit) in subjects {
            // The attempt that would be one too many, counting this one.
            let since = now.saturating_sub(window);
            if let Some(failed_at) = rows::nth_recent_attempt(&self.db, subject, since, *limit).await? {
                let wait = failed_at.saturating_add(window).saturating_sub(now).max(1);
                retry_after = Some(retry_after.map_or(wait, |other: u64| other.max(wait)));
            }
        }
        match retry_after {
            Some(wait) => {
                let ids: Vec<String> = attempts.into_iter().map(|(id, _)| id).collect();
                rows::delete_attempts(&self.db, &ids).await?;
                Ok(Err(wait))
            }
            None => Ok(Ok(())),
        }
    }

    /// Deletes what can no longer matter: expired revocations, failed logins out of the window,
    /// expired sign-in links, browser sessions that ended, authorization codes a day after they
    /// expired (until then a second use still revokes what the first issued), and the refresh
    /// tokens and families that are revoked or past their lifetime. Returns the number of rows
    /// deleted.
    pub async fn purge(&self, now: u64) -> Result<u64, SessionError> {
        let failures_until = now.saturating_sub(self.policy.login.window.as_secs());
        let codes_until = now.saturating_sub(CODE_MEMORY.as_secs());
        Ok(rows::purge(&self.db, now, failures_until, codes_until).await?)
    }
}
