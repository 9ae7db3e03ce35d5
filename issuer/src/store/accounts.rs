//! The `users` and `clients` tables. List columns (roles, audiences) hold JSON arrays of strings.

use super::{Db, DbError, DbResult, to_db_time};
use sqlx::{AnyConnection, FromRow};

/// A row of `users`, without the password hash.
#[derive(Debug, FromRow)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) email: String,
    /// A JSON array of strings.
    pub(crate) roles: String,
    pub(crate) disabled_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) last_login_at: Option<i64>,
}

const USER_COLUMNS: &str = "id, email, roles, disabled_at, created_at, last_login_at";

/// What a password login reads of a user.
#[derive(Debug, FromRow)]
pub(crate) struct CredentialsRow {
    pub(crate) id: String,
    pub(crate) password_hash: String,
    pub(crate) disabled_at: Option<i64>,
}

/// A row of `clients`.
#[derive(Debug, FromRow)]
pub(crate) struct ClientRow {
    pub(crate) client_id: String,
    pub(crate) secret_hash: String,
    /// A JSON array of strings.
    pub(crate) audiences: String,
    /// A JSON array of strings.
    pub(crate) roles: String,
    pub(crate) created_at: i64,
    /// A JSON array of exact URIs.
    pub(crate) redirect_uris: String,
    /// A JSON array of exact URIs.
    pub(crate) post_logout_redirect_uris: String,
    /// 1 for a public client (no secret: PKCE only), 0 otherwise.
    pub(crate) public_client: i64,
}

const CLIENT_COLUMNS: &str =
    "client_id, secret_hash, audiences, roles, created_at, redirect_uris, post_logout_redirect_uris, public_client";

/// A list column's text.
pub(crate) fn encode_list(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

/// A list column read back.
pub(crate) fn decode_list(table: &'static str, text: &str) -> DbResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|error| DbError::Corrupt { table, detail: format!("a list column is not a JSON list: {error}") })
}

/// Inserts a user; [`DbError::Duplicate`] when the email is taken.
pub(crate) async fn insert_user(db: &Db, row: &UserRow, password_hash: &str) -> DbResult<()> {
    sqlx::query("INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&row.id)
        .bind(&row.email)
        .bind(password_hash)
        .bind(&row.roles)
        .bind(row.created_at)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Every user, by email.
pub(crate) async fn users(db: &Db) -> DbResult<Vec<UserRow>> {
    Ok(sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email")).fetch_all(db.pool()).await?)
}

/// The column a user is looked up by.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UserKey {
    /// The opaque id.
    Id,
    /// The normalized email address.
    Email,
}

/// The user whose id or email is `value`.
pub(crate) async fn user(db: &Db, key: UserKey, value: &str) -> DbResult<Option<UserRow>> {
    let column = match key {
        UserKey::Id => "id",
        UserKey::Email => "email",
    };
    Ok(sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1"))
        .bind(value)
        .fetch_optional(db.pool())
        .await?)
}

/// The password hash and state of the user with this email.
pub(crate) async fn credentials(db: &Db, email: &str) -> DbResult<Option<CredentialsRow>> {
    Ok(sqlx::query_as("SELECT id, password_hash, disabled_at FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db.pool())
        .await?)
}

/// Records a successful login.
pub(crate) async fn set_last_login(db: &Db, id: &str, now: u64) -> DbResult<()> {
    sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
        .bind(to_db_time(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Replaces a user's roles (a JSON list).
pub(crate) async fn set_roles(db: &Db, id: &str, roles: &str) -> DbResult<()> {
    sqlx::query("UPDATE users SET roles = $1 WHERE id = $2").bind(roles).bind(id).execute(db.pool()).await?;
    Ok(())
}

/// Disables a user (idempotent: the first time is kept).
pub(crate) async fn disable(db: &Db, id: &str, now: u64) -> DbResult<()> {
    sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
        .bind(to_db_time(now))
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Inserts a client; [`DbError::Duplicate`] when the id is taken.
pub(crate) async fn insert_client(db: &Db, row: &ClientRow) -> DbResult<()> {
    sqlx::query(&format!("INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .bind(&row.client_id)
        .bind(&row.secret_hash)
        .bind(&row.audiences)
        .bind(&row.roles)
        .bind(row.created_at)
        .bind(&row.redirect_uris)
        .bind(&row.post_logout_redirect_uris)
        .bind(row.public_client)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Every client, by id.
pub(crate) async fn clients(db: &Db) -> DbResult<Vec<ClientRow>> {
    Ok(sqlx::query_as(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id")).fetch_all(db.pool()).await?)
}

/// The client with this id.
pub(crate) async fn client(db: &Db, client_id: &str) -> DbResult<Option<ClientRow>> {
    Ok(sqlx::query_as(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"))
        .bind(client_id)
        .fetch_optional(db.pool())
        .await?)
}

/// Deletes a client, in the transaction of `connection`. False when there was no such client.
pub(crate) async fn delete_client(connection: &mut AnyConnection, client_id: &str) -> DbResult<bool> {
    let done =
        sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(&mut *connection).await?;
    Ok(done.rows_affected() == 1)
}
