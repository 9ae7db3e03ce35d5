//! Sessions: refresh-token families and their rotation, revoked access tokens, and the failed
//! logins the brute-force limit counts. Everything lives in the database, so it survives
//! restarts and is shared by every issuer process on it.
//!
//! A password login starts a family. Each refresh spends the presented token with one
//! conditional `UPDATE` (`... WHERE hash = $1 AND spent_at IS NULL`) inside the transaction that
//! also inserts its successor: of several concurrent uses exactly one sees a row change; every
//! other use is a reuse, which revokes the family.

use crate::config::Config;
use crate::db::{Db, DbError, from_db_time, to_db_time};
use crate::secrets::{random_token, secret_hash};
use crate::token::{self, MintError, MintedToken};
use std::time::Duration;

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
    /// Failed logins (per account, per address) within `failure_window` that block further ones.
    pub max_failures: u32,
    /// The window failed logins are counted in.
    pub failure_window: Duration,
    /// How long an access token issued with a refresh token may still be accepted after it was
    /// issued (its lifetime plus the leeway): how long its revocation must be kept.
    pub access_token_lifetime: Duration,
}

impl SessionPolicy {
    /// The policy the configuration sets.
    pub fn from_config(config: &Config) -> Self {
        Self {
            idle_timeout: config.refresh_idle_timeout,
            max_lifetime: config.refresh_max_lifetime,
            reuse_grace: config.refresh_reuse_grace,
            max_failures: config.login_max_failures,
            failure_window: config.login_failure_window,
            access_token_lifetime: config.access_token_ttl + config.leeway,
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The refresh token is unknown, expired, revoked, spent, or not the presenting client's.
    #[error("refresh token refused: {0}")]
    InvalidGrant(&'static str),
    /// The access token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SessionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(error))
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

/// The session store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: Db,
    policy: SessionPolicy,
}

type TokenRow = (String, String, String, i64, i64, Option<i64>, i64, Option<i64>);

const TOKEN_COLUMNS: &str =
    "f.id, f.user_id, f.client_id, t.issued_at, t.expires_at, t.spent_at, f.expires_at, f.revoked_at";

impl Sessions {
    /// The sessions of `db` under `policy`.
    pub fn new(db: Db, policy: SessionPolicy) -> Self {
        Self { db, policy }
    }

    /// Starts a family for a login and returns its first refresh token (shown once; only its
    /// hash is stored), issued with the access token `access`.
    pub async fn start(
        &self,
        user_id: &str,
        client_id: &str,
        access: &MintedToken,
        now: u64,
    ) -> Result<String, SessionError> {
        let family_id = token::random_id();
        let family_expires_at = now.saturating_add(self.policy.max_lifetime.as_secs());
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, client_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&family_id)
        .bind(user_id)
        .bind(client_id)
        .bind(to_db_time(now))
        .bind(to_db_time(family_expires_at))
        .execute(&mut *tx)
        .await?;
        let refresh = self.insert_token(&mut tx, &family_id, &access.jti, now, family_expires_at).await?;
        tx.commit().await?;
        Ok(refresh)
    }

    async fn insert_token(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        family_id: &str,
        access_jti: &str,
        now: u64,
        family_expires_at: u64,
    ) -> Result<String, SessionError> {
        let refresh = random_token();
        let expires_at = now.saturating_add(self.policy.idle_timeout.as_secs()).min(family_expires_at);
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family_id, access_jti, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(secret_hash(&refresh))
        .bind(family_id)
        .bind(access_jti)
        .bind(to_db_time(now))
        .bind(to_db_time(expires_at))
        .execute(&mut **tx)
        .await?;
        Ok(refresh)
    }

    /// Rotates `refresh`, presented by `client_id`: lets `mint` sign the access token for the
    /// family (and refuse, e.g. for a disabled user), then spends the token and stores its
    /// successor in one transaction. A spent token (past the grace window) revokes its family.
    /// Returns the access token and the new refresh token.
    ///
    /// The access token is signed before the transaction starts, so that the transaction needs
    /// no other connection than its own (signing reads the active key): concurrent uses that wait
    /// for the write lock while holding the pool's connections cannot starve the one that holds it.
    pub async fn rotate(
        &self,
        refresh: &str,
        client_id: &str,
        now: u64,
        mint: impl AsyncFnOnce(&Family) -> Result<MintedToken, SessionError>,
    ) -> Result<(MintedToken, String), SessionError> {
        let hash = secret_hash(refresh);
        // Without a grace window (the default), any earlier use makes this one a reuse, whatever
        // the clocks of concurrent requests say.
        let grace = self.policy.reuse_grace.as_secs();
        let grace_floor = (grace > 0).then(|| now.saturating_sub(grace));
        let row = self.token_row(&hash).await?.ok_or(SessionError::InvalidGrant("unknown refresh token"))?;
        let (family_id, user_id, owner, _, expires_at, spent_at, family_expires_at, revoked_at) = row;
        let family = Family { id: family_id, user_id, client_id: owner };
        let reused = spent_at.is_some_and(|spent| grace_floor.is_none_or(|floor| from_db_time(spent) <= floor));
        let access = if reused {
            None
        } else {
            if revoked_at.is_some() {
                return Err(SessionError::InvalidGrant("revoked family"));
            }
            if from_db_time(expires_at) <= now || from_db_time(family_expires_at) <= now {
                return Err(SessionError::InvalidGrant("expired refresh token"));
            }
            if family.client_id != client_id {
                return Err(SessionError::InvalidGrant("refresh token of another client"));
            }
            Some(mint(&family).await?)
        };
        let mut tx = self.db.pool().begin().await?;
        // The one statement that decides which of concurrent uses wins; it also sees a family
        // revoked since the read above.
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = COALESCE(spent_at, $1) \
             WHERE hash = $2 AND expires_at > $1 AND (spent_at IS NULL OR spent_at > $3) \
             AND family_id IN (SELECT id FROM refresh_families WHERE revoked_at IS NULL AND expires_at > $1)",
        )
        .bind(to_db_time(now))
        .bind(&hash)
        .bind(grace_floor.map_or(i64::MAX, to_db_time))
        .execute(&mut *tx)
        .await?;
        let Some(access) = access.filter(|_| spent.rows_affected() == 1) else {
            let spent_at: Option<(Option<i64>,)> =
                sqlx::query_as("SELECT spent_at FROM refresh_tokens WHERE hash = $1")
                    .bind(&hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            if spent_at.is_some_and(|(spent_at,)| spent_at.is_some()) {
                revoke_family(&mut tx, &family.id, now).await?;
                tx.commit().await?;
                tracing::warn!(family = %family.id, user = %family.user_id, "refresh token reused: family revoked");
                return Err(SessionError::InvalidGrant("reused refresh token"));
            }
            return Err(SessionError::InvalidGrant("refresh token expired or revoked meanwhile"));
        };
        let refresh = self.insert_token(&mut tx, &family.id, &access.jti, now, from_db_time(family_expires_at)).await?;
        tx.commit().await?;
        Ok((access, refresh))
    }

    async fn token_row(&self, hash: &str) -> Result<Option<TokenRow>, SessionError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = $1"
        ))
        .bind(hash)
        .fetch_optional(self.db.pool())
        .await?)
    }

    /// What introspection says of a refresh token; `None` when unknown.
    pub async fn refresh_token(&self, refresh: &str, now: u64) -> Result<Option<RefreshTokenInfo>, SessionError> {
        let row = self.token_row(&secret_hash(refresh)).await?;
        Ok(row.map(|(id, user_id, client_id, issued_at, expires_at, spent_at, family_expires_at, revoked_at)| {
            let expires_at = from_db_time(expires_at);
            let active =
                spent_at.is_none() && revoked_at.is_none() && expires_at > now && from_db_time(family_expires_at) > now;
            RefreshTokenInfo {
                family: Family { id, user_id, client_id },
                issued_at: from_db_time(issued_at),
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

    /// Revokes a family (idempotent).
    pub async fn revoke_family(&self, family_id: &str, now: u64) -> Result<(), SessionError> {
        let mut tx = self.db.pool().begin().await?;
        revoke_family(&mut tx, family_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The family whose refresh token was issued with the access token `jti`.
    pub async fn family_of_access_token(&self, jti: &str) -> Result<Option<String>, SessionError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE access_jti = $1")
            .bind(jti)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|(family,)| family))
    }

    /// Ends every session of `user_id`: its refresh-token families are revoked, and so are the
    /// access tokens issued with them that may still be accepted (so that `/revoked` lists them
    /// for verifiers). Returns the number of families revoked.
    pub async fn revoke_user(&self, user_id: &str, now: u64) -> Result<u64, SessionError> {
        let lifetime = i64::try_from(self.policy.access_token_lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) \
             SELECT t.access_jti, t.issued_at + $1, $2 FROM refresh_tokens t \
             JOIN refresh_families f ON f.id = t.family_id \
             WHERE f.user_id = $3 AND t.issued_at + $1 > $2 \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(lifetime)
        .bind(to_db_time(now))
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(to_db_time(now))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Revokes an access token until its expiry (idempotent).
    pub async fn revoke_access_token(&self, jti: &str, exp: u64, now: u64) -> Result<(), SessionError> {
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(to_db_time(exp))
        .bind(to_db_time(now))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// True when the access token `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, SessionError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT jti FROM revoked_access_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    /// The revoked access tokens that have not expired, soonest expiry first.
    pub async fn revoked(&self, now: u64) -> Result<Vec<RevokedToken>, SessionError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1 ORDER BY expires_at, jti",
        )
        .bind(to_db_time(now))
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(|(jti, exp)| RevokedToken { jti, exp: from_db_time(exp) }).collect())
    }

    /// Records a login attempt for each of `subjects` before the password is checked, so that
    /// parallel guesses count against the limit at once rather than after their hashes. When the
    /// attempt would make more than `max_failures` in the window for any subject, nothing stays
    /// recorded and the answer is the seconds until the oldest that counts leaves the window.
    /// An attempt whose password turns out wrong stays recorded as a failure.
    pub async fn begin_login(&self, subjects: &[String], now: u64) -> Result<Result<LoginAttempt, u64>, SessionError> {
        let ids: Vec<String> = subjects.iter().map(|_| token::random_id()).collect();
        let mut tx = self.db.pool().begin().await?;
        for (id, subject) in ids.iter().zip(subjects) {
            sqlx::query("INSERT INTO login_failures (id, subject, failed_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(subject)
                .bind(to_db_time(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let attempt = LoginAttempt { ids };
        let window = self.policy.failure_window.as_secs();
        let mut retry_after = None;
        for subject in subjects {
            // The attempt that would be one too many, counting this one.
            let row: Option<(i64,)> = sqlx::query_as(
                "SELECT failed_at FROM login_failures WHERE subject = $1 AND failed_at > $2 \
                 ORDER BY failed_at DESC LIMIT 1 OFFSET $3",
            )
            .bind(subject)
            .bind(to_db_time(now.saturating_sub(window)))
            .bind(i64::from(self.policy.max_failures))
            .fetch_optional(self.db.pool())
            .await?;
            if let Some((failed_at,)) = row {
                let wait = from_db_time(failed_at).saturating_add(window).saturating_sub(now).max(1);
                retry_after = Some(retry_after.map_or(wait, |other: u64| other.max(wait)));
            }
        }
        match retry_after {
            Some(wait) => {
                self.forget(&attempt).await?;
                Ok(Err(wait))
            }
            None => Ok(Ok(attempt)),
        }
    }

    /// After a successful login: forgets the attempt and the earlier failed logins of `account`.
    pub async fn login_succeeded(&self, attempt: LoginAttempt, account: &str) -> Result<(), SessionError> {
        self.forget(&attempt).await?;
        sqlx::query("DELETE FROM login_failures WHERE subject = $1").bind(account).execute(self.db.pool()).await?;
        Ok(())
    }

    async fn forget(&self, attempt: &LoginAttempt) -> Result<(), SessionError> {
        for id in &attempt.ids {
            sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(id).execute(self.db.pool()).await?;
        }
        Ok(())
    }

    /// Deletes what can no longer matter: expired revocations, failed logins out of the window,
    /// and the refresh tokens and families that are revoked or past their lifetime. Returns the
    /// number of rows deleted.
    pub async fn purge(&self, now: u64) -> Result<u64, SessionError> {
        let now_db = to_db_time(now);
        let window_floor = to_db_time(now.saturating_sub(self.policy.failure_window.as_secs()));
        let mut tx = self.db.pool().begin().await?;
        let mut deleted = 0;
        for (sql, bound) in [
            ("DELETE FROM revoked_access_tokens WHERE expires_at <= $1", now_db),
            ("DELETE FROM login_failures WHERE failed_at <= $1", window_floor),
            (
                "DELETE FROM refresh_tokens WHERE family_id IN \
                 (SELECT id FROM refresh_families WHERE expires_at <= $1 OR revoked_at IS NOT NULL)",
                now_db,
            ),
            ("DELETE FROM refresh_families WHERE expires_at <= $1 OR revoked_at IS NOT NULL", now_db),
        ] {
            deleted += sqlx::query(sql).bind(bound).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

async fn revoke_family(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    family_id: &str,
    now: u64,
) -> Result<(), SessionError> {
    sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(to_db_time(now))
        .bind(family_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A login attempt recorded by [`Sessions::begin_login`], pending the password check.
#[derive(Debug)]
pub struct LoginAttempt {
    ids: Vec<String>,
}
