//! The `browser_sessions`, `sign_in_links` and `authorization_codes` tables.

use super::{Db, DbResult, to_db_time};
use sqlx::{AnyConnection, FromRow};

/// A row of `browser_sessions`, with whether its user is disabled.
#[derive(Debug, FromRow)]
pub(crate) struct BrowserSessionRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) auth_time: i64,
    pub(crate) last_seen_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) user_disabled_at: Option<i64>,
}

/// A new browser session.
#[derive(Debug)]
pub(crate) struct NewBrowserSession<'a> {
    pub(crate) id: &'a str,
    /// The SHA-256 of the cookie's secret.
    pub(crate) secret_hash: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) now: u64,
    pub(crate) expires_at: u64,
}

/// Inserts a browser session that starts (and was authenticated) at `now`.
pub(crate) async fn insert_browser_session(db: &Db, session: &NewBrowserSession<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO browser_sessions (id, secret_hash, user_id, auth_time, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(session.id)
    .bind(session.secret_hash)
    .bind(session.user_id)
    .bind(to_db_time(session.now))
    .bind(to_db_time(session.expires_at))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// True when the browser session `id` has not been ended (logout).
pub(crate) async fn browser_session_live(db: &Db, id: &str) -> DbResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM browser_sessions WHERE id = $1 AND ended_at IS NULL")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// The browser session whose cookie secret hashes to `secret_hash`.
pub(crate) async fn browser_session(db: &Db, secret_hash: &str) -> DbResult<Option<BrowserSessionRow>> {
    Ok(sqlx::query_as(
        "SELECT s.id, s.user_id, s.auth_time, s.last_seen_at, s.expires_at, s.ended_at, \
         u.disabled_at AS user_disabled_at \
         FROM browser_sessions s JOIN users u ON u.id = s.user_id WHERE s.secret_hash = $1",
    )
    .bind(secret_hash)
    .fetch_optional(db.pool())
    .await?)
}

/// Records that a session was used at `now` (its idle timeout counts from here).
pub(crate) async fn touch_browser_session(db: &Db, id: &str, now: u64) -> DbResult<()> {
    sqlx::query("UPDATE browser_sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1")
        .bind(to_db_time(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends a browser session (idempotent: the first end is kept).
pub(crate) async fn end_browser_session(db: &Db, id: &str, now: u64) -> DbResult<()> {
    sqlx::query("UPDATE browser_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
        .bind(to_db_time(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A new sign-in link.
#[derive(Debug)]
pub(crate) struct NewSignInLink<'a> {
    /// The SHA-256 of the link's token.
    pub(crate) hash: &'a str,
    pub(crate) user_id: &'a str,
    /// The authorization request it resumes, as its query string.
    pub(crate) request: &'a str,
    /// The SHA-256 of the asking browser's CSRF cookie.
    pub(crate) browser_hash: Option<&'a str>,
    pub(crate) now: u64,
    pub(crate) expires_at: u64,
}

/// Inserts a sign-in link.
pub(crate) async fn insert_link(db: &Db, link: &NewSignInLink<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO sign_in_links (hash, user_id, request, browser_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(link.hash)
    .bind(link.user_id)
    .bind(link.request)
    .bind(link.browser_hash)
    .bind(to_db_time(link.now))
    .bind(to_db_time(link.expires_at))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A sign-in link that can still be used, as the page it opens shows it.
#[derive(Debug, FromRow)]
pub(crate) struct PendingLinkRow {
    pub(crate) request: String,
    pub(crate) email: String,
    pub(crate) browser_hash: Option<String>,
}

/// The link `hash` while it is unspent and unexpired at `now`, with its user's email; nothing changes.
pub(crate) async fn pending_link(db: &Db, hash: &str, now: u64) -> DbResult<Option<PendingLinkRow>> {
    Ok(sqlx::query_as(
        "SELECT l.request, u.email, l.browser_hash FROM sign_in_links l JOIN users u ON u.id = l.user_id \
         WHERE l.hash = $1 AND l.spent_at IS NULL AND l.expires_at > $2",
    )
    .bind(hash)
    .bind(to_db_time(now))
    .fetch_optional(db.pool())
    .await?)
}

/// What a spent sign-in link resumes.
#[derive(Debug, FromRow)]
pub(crate) struct SpentLinkRow {
    pub(crate) user_id: String,
    pub(crate) request: String,
}

/// Spends the link `hash` if it is unspent and unexpired at `now`: one conditional update, so of
/// concurrent uses exactly one gets the row.
pub(crate) async fn spend_link(db: &Db, hash: &str, now: u64) -> DbResult<Option<SpentLinkRow>> {
    Ok(sqlx::query_as(
        "UPDATE sign_in_links SET spent_at = $2 WHERE hash = $1 AND spent_at IS NULL AND expires_at > $2 \
         RETURNING user_id, request",
    )
    .bind(hash)
    .bind(to_db_time(now))
    .fetch_optional(db.pool())
    .await?)
}

/// A row of `authorization_codes`.
#[derive(Debug, FromRow)]
pub(crate) struct CodeRow {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) scope: String,
    pub(crate) nonce: Option<String>,
    pub(crate) user_id: String,
    pub(crate) session_id: String,
    pub(crate) auth_time: i64,
    pub(crate) expires_at: i64,
    pub(crate) spent_at: Option<i64>,
    pub(crate) family_id: Option<String>,
    pub(crate) access_jti: Option<String>,
    pub(crate) access_expires_at: Option<i64>,
}

/// A new authorization code.
#[derive(Debug)]
pub(crate) struct NewCode<'a> {
    /// The SHA-256 of the code.
    pub(crate) hash: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) code_challenge: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) user_id: &'a str,
    pub(crate) session_id: &'a str,
    pub(crate) auth_time: u64,
    pub(crate) now: u64,
    pub(crate) expires_at: u64,
}

/// Inserts an authorization code.
pub(crate) async fn insert_code(db: &Db, code: &NewCode<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, scope, nonce, user_id, \
         session_id, auth_time, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(code.hash)
    .bind(code.client_id)
    .bind(code.redirect_uri)
    .bind(code.code_challenge)
    .bind(code.scope)
    .bind(code.nonce)
    .bind(code.user_id)
    .bind(code.session_id)
    .bind(to_db_time(code.auth_time))
    .bind(to_db_time(code.now))
    .bind(to_db_time(code.expires_at))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The authorization code with this hash.
pub(crate) async fn code(db: &Db, hash: &str) -> DbResult<Option<CodeRow>> {
    Ok(sqlx::query_as(
        "SELECT client_id, redirect_uri, code_challenge, scope, nonce, user_id, session_id, auth_time, expires_at, \
         spent_at, family_id, access_jti, access_expires_at FROM authorization_codes WHERE hash = $1",
    )
    .bind(hash)
    .fetch_optional(db.pool())
    .await?)
}

/// What an exchange issues, recorded on the code it spends.
#[derive(Debug)]
pub(crate) struct Issued<'a> {
    pub(crate) family_id: &'a str,
    pub(crate) access_jti: &'a str,
    pub(crate) access_expires_at: u64,
}

/// Spends the code `hash` if it is unspent at `now`, recording what its exchange issues: one
/// conditional update, so of concurrent exchanges exactly one changes the row. True for that one.
pub(crate) async fn spend_code(
    connection: &mut AnyConnection,
    hash: &str,
    now: u64,
    issued: &Issued<'_>,
) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE authorization_codes SET spent_at = $2, family_id = $3, access_jti = $4, access_expires_at = $5 \
         WHERE hash = $1 AND spent_at IS NULL",
    )
    .bind(hash)
    .bind(to_db_time(now))
    .bind(issued.family_id)
    .bind(issued.access_jti)
    .bind(to_db_time(issued.access_expires_at))
    .execute(&mut *connection)
    .await?;
    Ok(done.rows_affected() == 1)
}
