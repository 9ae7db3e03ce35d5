//! The `refresh_families`, `refresh_tokens`, `revoked_access_tokens`, `service_tokens`,
//! `login_attempts` and `login_failures` tables. Refresh tokens are stored by the SHA-256 of the token, never as sent.

use super::{Db, DbResult, to_db_time};
use sqlx::{AnyConnection, FromRow};

/// A rotation's write: spend the presented token and store its successor, both or neither, when
/// the presented token is spendable (unexpired; unspent, or spent after `spent_after`, the reuse
/// grace floor; `None`: never spent), its family alive, unexpired and `client_id`'s, and its user
/// enabled. Of concurrent rotations of one token exactly one wins (without a grace window).
#[derive(Debug)]
pub(crate) struct Rotation {
    /// The SHA-256 of the presented token.
    pub(crate) hash: String,
    pub(crate) client_id: String,
    pub(crate) now: u64,
    pub(crate) spent_after: Option<u64>,
    /// The SHA-256 of the successor.
    pub(crate) successor_hash: String,
    /// The `jti` of the access token issued with the successor.
    pub(crate) access_jti: String,
    /// The `exp` of that access token.
    pub(crate) access_expires_at: u64,
    /// The successor's idle expiry (capped here at its family's expiry).
    pub(crate) idle_until: u64,
}

/// What a rotation that won reads: the family, its user's roles as they are now (a JSON list),
/// and the scopes of a family started by a browser sign-in.
#[derive(Debug)]
pub(crate) struct RotatedRow {
    pub(crate) family_id: String,
    pub(crate) user_id: String,
    pub(crate) roles: String,
    pub(crate) scope: Option<String>,
    /// The audiences a password login asked for (a JSON list).
    pub(crate) audiences: Option<String>,
}

/// SQLite's rotation, first half: spends the presented token if [`Rotation`]'s conditions hold
/// (`$1` now, `$2` its hash, `$3` the spent-after floor, `$4` the client): the one statement that
/// decides which of concurrent uses wins. Returns its family id, the user, the user's roles, the
/// family's expiry and its scopes.
pub(crate) const SPEND: &str = "UPDATE refresh_tokens SET spent_at = COALESCE(spent_at, $1) \
     WHERE hash = $2 AND expires_at > $1 AND (spent_at IS NULL OR spent_at > $3) \
     AND EXISTS (SELECT 1 FROM refresh_families f JOIN users u ON u.id = f.user_id \
     WHERE f.id = refresh_tokens.family_id AND f.revoked_at IS NULL AND f.expires_at > $1 \
     AND f.client_id = $4 AND u.disabled_at IS NULL) \
     RETURNING family_id, \
     (SELECT f.user_id FROM refresh_families f WHERE f.id = refresh_tokens.family_id), \
     (SELECT u.roles FROM refresh_families f JOIN users u ON u.id = f.user_id WHERE f.id = refresh_tokens.family_id), \
     (SELECT f.expires_at FROM refresh_families f WHERE f.id = refresh_tokens.family_id), \
     (SELECT f.scope FROM refresh_families f WHERE f.id = refresh_tokens.family_id), \
     (SELECT f.audiences FROM refresh_families f WHERE f.id = refresh_tokens.family_id)";

/// Rotations in one statement and one round trip on PostgreSQL (data-modifying `WITH`, which
/// SQLite lacks), over arrays of the [`Rotation`] fields (`$1` hashes, `$2` client ids, `$3`
/// times, `$4` spent-after floors, `$5` successor hashes, `$6` access token ids, `$7` idle
/// expiries, `$8` access token expiries; each token at most once): spend each as [`SPEND`] does, read the family and the
/// roles, insert the successor (its idle expiry capped at the family's), as [`SPEND`] and
/// [`INSERT_TOKEN`] do on SQLite. Returns, for each
/// rotation that won, its 1-based position in the arrays, its family id, its user, the roles and
/// the family's scopes.
pub(crate) const ROTATE_MANY: &str = "WITH input AS ( \
       SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::int8[], \
         $8::int8[]) WITH ORDINALITY \
       AS i(hash, client_id, at_time, spent_after, successor_hash, access_jti, idle_until, access_expires_at, position)), \
     spent AS ( \
       UPDATE refresh_tokens t SET spent_at = COALESCE(t.spent_at, i.at_time) FROM input i \
       WHERE t.hash = i.hash AND t.expires_at > i.at_time AND (t.spent_at IS NULL OR t.spent_at > i.spent_after) \
       AND EXISTS (SELECT 1 FROM refresh_families f JOIN users u ON u.id = f.user_id \
         WHERE f.id = t.family_id AND f.revoked_at IS NULL AND f.expires_at > i.at_time \
         AND f.client_id = i.client_id AND u.disabled_at IS NULL) \
       RETURNING t.hash, t.family_id), \
     family AS ( \
       SELECT i.position, f.id AS family_id, f.user_id, u.roles, f.scope, f.audiences, i.successor_hash, i.access_jti, \
         i.access_expires_at, i.at_time, \
         LEAST(f.expires_at, i.idle_until) AS successor_expires_at \
       FROM spent s JOIN input i ON i.hash = s.hash \
       JOIN refresh_families f ON f.id = s.family_id JOIN users u ON u.id = f.user_id), \
     successor AS ( \
       INSERT INTO refresh_tokens (hash, family_id, access_jti, access_expires_at, issued_at, expires_at) \
       SELECT successor_hash, family_id, access_jti, access_expires_at, at_time, successor_expires_at FROM family) \
     SELECT position::int4, family_id, user_id, roles, scope, audiences FROM family";

/// A refresh token with its family, as a rotation or introspection reads it.
#[derive(Clone, Debug, FromRow, PartialEq, Eq)]
pub(crate) struct RefreshTokenRow {
    pub(crate) family_id: String,
    pub(crate) user_id: String,
    pub(crate) client_id: String,
    pub(crate) issued_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) spent_at: Option<i64>,
    pub(crate) family_expires_at: i64,
    pub(crate) family_revoked_at: Option<i64>,
}

/// A new refresh-token family.
#[derive(Debug)]
pub(crate) struct NewFamily<'a> {
    pub(crate) id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) created_at: u64,
    pub(crate) expires_at: u64,
    /// The scopes granted by a browser sign-in; `None` for the password grant.
    pub(crate) scope: Option<&'a str>,
    /// The audiences a password login asked for (a JSON list); `None`: the configured ones.
    pub(crate) audiences: Option<&'a str>,
    /// The issuer's browser session a browser sign-in came from; `None` for the password grant.
    pub(crate) browser_session_id: Option<&'a str>,
}

/// A new refresh token.
#[derive(Debug)]
pub(crate) struct NewRefreshToken<'a> {
    /// The SHA-256 of the token.
    pub(crate) hash: &'a str,
    pub(crate) family_id: &'a str,
    /// The `jti` of the access token issued with it.
    pub(crate) access_jti: &'a str,
    /// The `exp` of that access token.
    pub(crate) access_expires_at: u64,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
}

/// A revoked access token: its `jti` and its `exp`.
#[derive(Debug, FromRow)]
pub(crate) struct RevokedRow {
    pub(crate) jti: String,
    pub(crate) expires_at: i64,
}

/// Inserts a family.
pub(crate) async fn insert_family(connection: &mut AnyConnection, family: &NewFamily<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO refresh_families (id, user_id, client_id, created_at, expires_at, scope, audiences, \
         browser_session_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(family.id)
    .bind(family.user_id)
    .bind(family.client_id)
    .bind(to_db_time(family.created_at))
    .bind(to_db_time(family.expires_at))
    .bind(family.scope)
    .bind(family.audiences)
    .bind(family.browser_session_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Inserts a refresh token: hash, family, access token `jti` and `exp`, issued, expires.
pub(crate) const INSERT_TOKEN: &str = "INSERT INTO refresh_tokens (hash, family_id, access_jti, access_expires_at, \
     issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// Inserts a refresh token.
pub(crate) async fn insert_token(connection: &mut AnyConnection, token: &NewRefreshToken<'_>) -> DbResult<()> {
    sqlx::query(INSERT_TOKEN)
        .bind(token.hash)
        .bind(token.family_id)
        .bind(token.access_jti)
        .bind(to_db_time(token.access_expires_at))
        .bind(to_db_time(token.issued_at))
        .bind(to_db_time(token.expires_at))
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The refresh token with this hash, with its family.
pub(crate) async fn token(db: &Db, hash: &str) -> DbResult<Option<RefreshTokenRow>> {
    Ok(sqlx::query_as(
        "SELECT f.id AS family_id, f.user_id, f.client_id, t.issued_at, t.expires_at, t.spent_at, \
         f.expires_at AS family_expires_at, f.revoked_at AS family_revoked_at \
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = $1",
    )
    .bind(hash)
    .fetch_optional(db.pool())
    .await?)
}

/// The family whose refresh token was issued with the access token `jti`.
pub(crate) async fn family_of_access_token(db: &Db, jti: &str) -> DbResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT family_id FROM refresh_tokens WHERE access_jti = $1")
        .bind(jti)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|(family,)| family))
}

/// The refresh-token families a revocation ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Families<'a> {
    /// One family, by id.
    One(&'a str),
    /// Every family of a user.
    OfUser(&'a str),
    /// Every family issued to a client.
    OfClient(&'a str),
    /// Every family started by one of the issuer's browser sessions (its single sign-on).
    OfBrowserSession(&'a str),
}

/// Revokes `families` (idempotent) and lists as revoked, until they expire, the access tokens
/// issued with their refresh tokens that are still unexpired at `now`, in the transaction of
/// `connection`. An access token's expiry is the one stored with its refresh token, or, for tokens
/// stored without one, `issued_at` + `access_lifetime`. The families are revoked first: on SQLite
/// the transaction then holds the write lock, so no rotation adds a token before the list is
/// read; on PostgreSQL a rotation that read its family alive just before the commit may still add
/// one (the window of one rotation's statement). Returns the families revoked now.
pub(crate) async fn revoke_families(
    connection: &mut AnyConnection,
    families: Families<'_>,
    access_lifetime: u64,
    now: u64,
) -> DbResult<u64> {
    let (column, key) = match families {
        Families::One(id) => ("id", id),
        Families::OfUser(user_id) => ("user_id", user_id),
        Families::OfClient(client_id) => ("client_id", client_id),
        Families::OfBrowserSession(session_id) => ("browser_session_id", session_id),
    };
    let done =
        sqlx::query(&format!("UPDATE refresh_families SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL"))
            .bind(to_db_time(now))
            .bind(key)
            .execute(&mut *connection)
            .await?;
    sqlx::query(&format!(
        "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) \
         SELECT t.access_jti, COALESCE(t.access_expires_at, t.issued_at + $1), $2 FROM refresh_tokens t \
         JOIN refresh_families f ON f.id = t.family_id \
         WHERE f.{column} = $3 AND COALESCE(t.access_expires_at, t.issued_at + $1) > $2 \
         ON CONFLICT (jti) DO NOTHING"
    ))
    .bind(to_db_time(access_lifetime))
    .bind(to_db_time(now))
    .bind(key)
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the issuer's browser sessions of `user_id` (no single sign-on without a new login).
pub(crate) async fn end_browser_sessions(connection: &mut AnyConnection, user_id: &str, now: u64) -> DbResult<()> {
    sqlx::query("UPDATE browser_sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL")
        .bind(to_db_time(now))
        .bind(user_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Records an access token of the client credentials grant until it expires.
pub(crate) async fn insert_service_token(db: &Db, jti: &str, client_id: &str, expires_at: u64) -> DbResult<()> {
    sqlx::query("INSERT INTO service_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3)")
        .bind(jti)
        .bind(client_id)
        .bind(to_db_time(expires_at))
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Lists as revoked the access tokens `client_id` got by the client credentials grant that are
/// still unexpired at `now`, in the transaction of `connection`.
pub(crate) async fn revoke_service_tokens(connection: &mut AnyConnection, client_id: &str, now: u64) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) \
         SELECT jti, expires_at, $1 FROM service_tokens WHERE client_id = $2 AND expires_at > $1 \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(to_db_time(now))
    .bind(client_id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Lists an access token as revoked until `exp` (idempotent).
pub(crate) async fn revoke_access_token(db: &Db, jti: &str, exp: u64, now: u64) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(to_db_time(exp))
    .bind(to_db_time(now))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// True when the access token `jti` is listed as revoked.
pub(crate) async fn is_revoked(db: &Db, jti: &str) -> DbResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT jti FROM revoked_access_tokens WHERE jti = $1")
        .bind(jti)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// The revoked access tokens that expire after `now`, soonest expiry first.
pub(crate) async fn revoked(db: &Db, now: u64) -> DbResult<Vec<RevokedRow>> {
    Ok(sqlx::query_as(
        "SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1 ORDER BY expires_at, jti",
    )
    .bind(to_db_time(now))
    .fetch_all(db.pool())
    .await?)
}

/// Records a password login attempt.
pub(crate) async fn insert_login_attempt(db: &Db, id: &str, account: &str, address: &str, now: u64) -> DbResult<()> {
    sqlx::query("INSERT INTO login_attempts (id, account, address, attempted_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(account)
        .bind(address)
        .bind(to_db_time(now))
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The times of the password login attempts after `since` from `address` (on `account`, or on
/// any account with `None`), newest first: the first `max + 1` of them.
pub(crate) async fn recent_login_attempts(
    db: &Db,
    account: Option<&str>,
    address: &str,
    since: u64,
    max: u32,
) -> DbResult<Vec<u64>> {
    let on_account = if account.is_some() { "account = $4 AND " } else { "" };
    let query = format!(
        "SELECT attempted_at FROM login_attempts WHERE {on_account}address = $1 AND attempted_at > $2 \
         ORDER BY attempted_at DESC LIMIT $3"
    );
    let mut query = sqlx::query_as::<_, (i64,)>(&query).bind(address).bind(to_db_time(since)).bind(i64::from(max) + 1);
    if let Some(account) = account {
        query = query.bind(account);
    }
    let rows = query.fetch_all(db.pool()).await?;
    Ok(rows.into_iter().map(|(at,)| super::from_db_time(at)).collect())
}

/// How many password login attempts on `account` after `since` came from other addresses than
/// `address`, counting up to `cap`.
pub(crate) async fn login_attempts_elsewhere(
    db: &Db,
    account: &str,
    address: &str,
    since: u64,
    cap: u64,
) -> DbResult<u64> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT 1 FROM login_attempts WHERE account = $1 AND address <> $2 \
         AND attempted_at > $3 LIMIT $4) AS elsewhere",
    )
    .bind(account)
    .bind(address)
    .bind(to_db_time(since))
    .bind(to_db_time(cap))
    .fetch_one(db.pool())
    .await?;
    Ok(super::from_db_time(count))
}

/// Deletes a password login attempt.
pub(crate) async fn delete_login_attempt(db: &Db, id: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM login_attempts WHERE id = $1").bind(id).execute(db.pool()).await?;
    Ok(())
}

/// After a successful login: deletes its attempt `id` and the failures on `account` from `address`.
pub(crate) async fn forget_login_failures(db: &Db, id: &str, account: &str, address: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM login_attempts WHERE id = $1 OR (account = $2 AND address = $3)")
        .bind(id)
        .bind(account)
        .bind(address)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records attempts of the other limits (one row per id and subject), in one transaction.
pub(crate) async fn insert_attempts(db: &Db, attempts: &[(String, String)], now: u64) -> DbResult<()> {
    let mut tx = db.pool().begin().await?;
    for (id, subject) in attempts {
        sqlx::query("INSERT INTO login_failures (id, subject, failed_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(subject)
            .bind(to_db_time(now))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The time of the `offset`-th most recent attempt of `subject` after `since` (0: the latest).
pub(crate) async fn nth_recent_attempt(db: &Db, subject: &str, since: u64, offset: u32) -> DbResult<Option<u64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT failed_at FROM login_failures WHERE subject = $1 AND failed_at > $2 \
         ORDER BY failed_at DESC LIMIT 1 OFFSET $3",
    )
    .bind(subject)
    .bind(to_db_time(since))
    .bind(i64::from(offset))
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|(failed_at,)| super::from_db_time(failed_at)))
}

/// Deletes attempts of the other limits by id.
pub(crate) async fn delete_attempts(db: &Db, ids: &[String]) -> DbResult<()> {
    for id in ids {
        sqlx::query("DELETE FROM login_failures WHERE id = $1").bind(id).execute(db.pool()).await?;
    }
    Ok(())
}

/// Deletes expired revocations and service tokens, failed logins at or before `failures_until`,
/// expired sign-in links, authorization codes that expired at or before `codes_until`, ended or expired browser
/// sessions, and the refresh tokens and families that are revoked or expired, in one transaction.
/// Returns the rows deleted.
pub(crate) async fn purge(db: &Db, now: u64, failures_until: u64, codes_until: u64) -> DbResult<u64> {
    let (now, failures_until, codes_until) = (to_db_time(now), to_db_time(failures_until), to_db_time(codes_until));
    let mut tx = db.pool().begin().await?;
    let mut deleted = 0;
    for (sql, bound) in [
        ("DELETE FROM revoked_access_tokens WHERE expires_at <= $1", now),
        ("DELETE FROM service_tokens WHERE expires_at <= $1", now),
        ("DELETE FROM login_failures WHERE failed_at <= $1", failures_until),
        ("DELETE FROM login_attempts WHERE attempted_at <= $1", failures_until),
        ("DELETE FROM sign_in_links WHERE expires_at <= $1", now),
        ("DELETE FROM authorization_codes WHERE expires_at <= $1", codes_until),
        ("DELETE FROM browser_sessions WHERE expires_at <= $1 OR ended_at IS NOT NULL", now),
        (
            "DELETE FROM refresh_tokens WHERE family_id IN \
             (SELECT id FROM refresh_families WHERE expires_at <= $1 OR revoked_at IS NOT NULL)",
            now,
        ),
        ("DELETE FROM refresh_families WHERE expires_at <= $1 OR revoked_at IS NOT NULL", now),
    ] {
        deleted += sqlx::query(sql).bind(bound).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(deleted)
}
