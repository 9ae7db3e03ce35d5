//! The `signing_keys` and `key_set_version` tables. Every change to the key set runs in a
//! transaction that starts with [`lock_key_set`]: bumping the version takes SQLite's write lock
//! or PostgreSQL's row lock before anything is read, so changes from several processes are
//! serialized. The database also enforces "at most one active key, at most one next key" with
//! unique indexes.

use super::{DbResult, to_db_time};
use sqlx::{AnyConnection, FromRow};

/// A row of `signing_keys`, without the sealed private key.
#[derive(Debug, FromRow)]
pub(crate) struct KeyRow {
    pub(crate) kid: String,
    pub(crate) state: String,
    /// The SEC1 uncompressed point, base64url.
    pub(crate) public_key: String,
    pub(crate) published_at: i64,
    pub(crate) activate_after: Option<i64>,
    pub(crate) activated_at: Option<i64>,
    pub(crate) retiring_at: Option<i64>,
    pub(crate) retired_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
}

/// The active key's id and sealed private key.
#[derive(Debug, FromRow)]
pub(crate) struct ActiveKeyRow {
    pub(crate) kid: String,
    pub(crate) sealed_private_key: Option<String>,
}

/// A key to insert.
#[derive(Debug)]
pub(crate) struct NewKey<'a> {
    pub(crate) kid: &'a str,
    pub(crate) state: &'a str,
    pub(crate) public_key: &'a str,
    pub(crate) sealed_private_key: &'a str,
    pub(crate) published_at: u64,
    pub(crate) activate_after: Option<u64>,
    pub(crate) activated_at: Option<u64>,
}

/// Which keys [`load`] reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Which {
    /// Every key, published or not.
    All,
    /// `next`, `active` and `retiring`: those in the JWKS.
    Published,
}

/// The keys, oldest first.
pub(crate) async fn load(connection: &mut AnyConnection, which: Which) -> DbResult<Vec<KeyRow>> {
    let filter = match which {
        Which::All => "",
        Which::Published => "WHERE state IN ('next', 'active', 'retiring') ",
    };
    let sql = format!(
        "SELECT kid, state, public_key, published_at, activate_after, activated_at, retiring_at, retired_at, \
         revoked_at FROM signing_keys {filter}ORDER BY published_at, kid"
    );
    Ok(sqlx::query_as(&sql).fetch_all(&mut *connection).await?)
}

/// The current key-set version.
pub(crate) async fn version(connection: &mut AnyConnection) -> DbResult<i64> {
    let (version,): (i64,) =
        sqlx::query_as("SELECT version FROM key_set_version WHERE id = 1").fetch_one(&mut *connection).await?;
    Ok(version)
}

/// Takes the key-set lock for the rest of the transaction and bumps the version.
pub(crate) async fn lock_key_set(connection: &mut AnyConnection) -> DbResult<()> {
    sqlx::query("UPDATE key_set_version SET version = version + 1 WHERE id = 1").execute(&mut *connection).await?;
    Ok(())
}

/// The state of the key `kid`, if there is one.
pub(crate) async fn state_of(connection: &mut AnyConnection, kid: &str) -> DbResult<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT state FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|(state,)| state))
}

/// The active key.
pub(crate) async fn active(connection: &mut AnyConnection) -> DbResult<Option<ActiveKeyRow>> {
    Ok(sqlx::query_as("SELECT kid, sealed_private_key FROM signing_keys WHERE state = 'active'")
        .fetch_optional(&mut *connection)
        .await?)
}

/// Inserts a key.
pub(crate) async fn insert(connection: &mut AnyConnection, key: &NewKey<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, state, public_key, sealed_private_key, published_at, activate_after, \
         activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.kid)
    .bind(key.state)
    .bind(key.public_key)
    .bind(key.sealed_private_key)
    .bind(to_db_time(key.published_at))
    .bind(key.activate_after.map(to_db_time))
    .bind(key.activated_at.map(to_db_time))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Makes the next key `kid` active at `now`; the active key, if any, starts retiring.
pub(crate) async fn promote(connection: &mut AnyConnection, kid: &str, now: u64) -> DbResult<()> {
    let now = to_db_time(now);
    // Demote first: the unique index allows one active key at a time, even within a transaction.
    sqlx::query("UPDATE signing_keys SET state = 'retiring', retiring_at = $1 WHERE state = 'active'")
        .bind(now)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE signing_keys SET state = 'active', activated_at = $1, activate_after = NULL WHERE kid = $2 AND state = 'next'",
    )
    .bind(now)
    .bind(kid)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Moves the next key `kid` to take over at `activate_after`.
pub(crate) async fn schedule(connection: &mut AnyConnection, kid: &str, activate_after: u64) -> DbResult<()> {
    sqlx::query("UPDATE signing_keys SET activate_after = $1 WHERE kid = $2 AND state = 'next'")
        .bind(to_db_time(activate_after))
        .bind(kid)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// A retiring key leaves the key set; its private key is erased.
pub(crate) async fn retire(connection: &mut AnyConnection, kid: &str, now: u64) -> DbResult<()> {
    sqlx::query(
        "UPDATE signing_keys SET state = 'retired', retired_at = $1, sealed_private_key = NULL \
         WHERE kid = $2 AND state = 'retiring'",
    )
    .bind(to_db_time(now))
    .bind(kid)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A key leaves the key set at once; its private key is erased.
pub(crate) async fn revoke(connection: &mut AnyConnection, kid: &str, now: u64) -> DbResult<()> {
    sqlx::query(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = $1, sealed_private_key = NULL, \
         activate_after = NULL WHERE kid = $2",
    )
    .bind(to_db_time(now))
    .bind(kid)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
