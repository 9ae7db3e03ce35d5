//! Users (email, argon2id password hash, roles, disabled flag) and service clients (client id,
//! hashed secret, the audiences and roles of their tokens), stored in the database.

use crate::db::{Db, DbError, from_db_time, to_db_time};
use crate::secrets::{PasswordError, PasswordHasher, random_token, same_hash, secret_hash};
use crate::token::{self, MintError};
use serde::Serialize;
use std::collections::BTreeSet;

/// The `client_id` of tokens issued without client authentication (a public client). No
/// registered client may take this id.
pub const PUBLIC_CLIENT_ID: &str = "public";

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    /// The opaque id, `sub` of the user's tokens.
    pub id: String,
    /// The normalized email address.
    pub email: String,
    /// The roles, sorted.
    pub roles: Vec<String>,
    /// True when the user may not log in.
    pub disabled: bool,
    /// When the account was made (Unix seconds).
    pub created_at: u64,
    /// The last successful password login (Unix seconds).
    pub last_login_at: Option<u64>,
}

/// A service client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Client {
    /// Its id, `sub` and `client_id` of its tokens.
    pub client_id: String,
    /// The audiences of its tokens.
    pub audiences: Vec<String>,
    /// The roles of its tokens.
    pub roles: Vec<String>,
    /// When it was registered (Unix seconds).
    pub created_at: u64,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Not an email address the issuer accepts.
    #[error("not a valid email address")]
    InvalidEmail,
    /// A role (or a client id or audience) breaks a rule.
    #[error(transparent)]
    Invalid(#[from] MintError),
    /// The password breaks the policy, or hashing failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// An account with this email exists.
    #[error("the email address is taken")]
    EmailTaken,
    /// A client with this id exists (or the id is reserved).
    #[error("the client id is taken")]
    ClientTaken,
    /// No such user.
    #[error("no such user")]
    UnknownUser,
    /// No such client.
    #[error("no such client")]
    UnknownClient,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for AccountError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(error))
    }
}

/// The users and clients. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Accounts {
    db: Db,
    hasher: PasswordHasher,
}

type UserRow = (String, String, String, Option<i64>, i64, Option<i64>);

const USER_COLUMNS: &str = "id, email, roles, disabled_at, created_at, last_login_at";

type ClientRow = (String, String, String, String, i64);

const CLIENT_COLUMNS: &str = "client_id, secret_hash, audiences, roles, created_at";

/// Normalizes an email address: trimmed and in lower case; one `@` with text on both sides, no
/// spaces or control characters, at most 254 bytes.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.')
        });
    if valid { Ok(email) } else { Err(AccountError::InvalidEmail) }
}

/// A set of roles: checked, sorted, without duplicates.
pub(crate) fn role_set(roles: &[String]) -> Result<Vec<String>, AccountError> {
    token::check_roles(roles)?;
    Ok(roles.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect())
}

fn encode_list(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

fn decode_list(table: &'static str, text: &str) -> Result<Vec<String>, AccountError> {
    serde_json::from_str(text).map_err(|error| {
        DbError::Corrupt { table, detail: format!("a list column is not a JSON list: {error}") }.into()
    })
}

fn user_from_row((id, email, roles, disabled_at, created_at, last_login_at): UserRow) -> Result<User, AccountError> {
    Ok(User {
        id,
        email,
        roles: decode_list("users", &roles)?,
        disabled: disabled_at.is_some(),
        created_at: from_db_time(created_at),
        last_login_at: last_login_at.map(from_db_time),
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error) if error.is_unique_violation())
}

impl Accounts {
    /// The accounts of `db`, hashing passwords with `hasher`.
    pub fn new(db: Db, hasher: PasswordHasher) -> Self {
        Self { db, hasher }
    }

    /// The password hasher.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates a user. The email is normalized and must be free; the password must meet the
    /// policy; roles are checked.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: &[String],
        now: u64,
    ) -> Result<User, AccountError> {
        let email = normalize_email(email)?;
        let roles = role_set(roles)?;
        let password_hash = self.hasher.hash(password).await?;
        let user = User { id: token::random_id(), email, roles, disabled: false, created_at: now, last_login_at: None };
        let inserted =
            sqlx::query("INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&user.id)
                .bind(&user.email)
                .bind(&password_hash)
                .bind(encode_list(&user.roles))
                .bind(to_db_time(now))
                .execute(self.db.pool())
                .await;
        match inserted {
            Ok(_) => Ok(user),
            Err(error) if is_unique_violation(&error) => Err(AccountError::EmailTaken),
            Err(error) => Err(error.into()),
        }
    }

    /// Every user, by email.
    pub async fn users(&self) -> Result<Vec<User>, AccountError> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"))
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(user_from_row).collect()
    }

    /// The user with this id.
    pub async fn user(&self, id: &str) -> Result<Option<User>, AccountError> {
        self.user_where("id", id).await
    }

    /// The user whose `column` (`id` or `email`) is `value`.
    async fn user_where(&self, column: &'static str, value: &str) -> Result<Option<User>, AccountError> {
        let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1"))
            .bind(value)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(user_from_row).transpose()
    }

    /// The user with this email address (normalized first).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, AccountError> {
        self.user_where("email", &normalize_email(email)?).await
    }

    /// Replaces the roles of a user.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> Result<User, AccountError> {
        let roles = role_set(roles)?;
        sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
            .bind(encode_list(&roles))
            .bind(id)
            .execute(self.db.pool())
            .await?;
        self.user(id).await?.ok_or(AccountError::UnknownUser)
    }

    /// Disables a user (idempotent). Ending their sessions is the caller's part
    /// ([`Sessions::revoke_user`](crate::sessions::Sessions::revoke_user)).
    pub async fn disable(&self, id: &str, now: u64) -> Result<User, AccountError> {
        sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
            .bind(to_db_time(now))
            .bind(id)
            .execute(self.db.pool())
            .await?;
        self.user(id).await?.ok_or(AccountError::UnknownUser)
    }

    /// A password login: the user when the email names an enabled user and the password matches.
    /// Unknown emails are checked against a dummy hash, so every refusal takes the same time.
    pub(crate) async fn login(&self, email: &str, password: &str, now: u64) -> Result<Option<User>, AccountError> {
        let Ok(email) = normalize_email(email) else {
            self.hasher.verify(password, None).await?;
            return Ok(None);
        };
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT id, password_hash, disabled_at FROM users WHERE email = $1")
                .bind(&email)
                .fetch_optional(self.db.pool())
                .await?;
        let (id, stored, disabled_at) =
            row.map_or((None, None, None), |(id, hash, disabled)| (Some(id), Some(hash), disabled));
        if !self.hasher.verify(password, stored).await? || disabled_at.is_some() {
            return Ok(None);
        }
        let Some(id) = id else { return Ok(None) };
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(to_db_time(now))
            .bind(&id)
            .execute(self.db.pool())
            .await?;
        self.user(&id).await
    }

    /// Registers a client with a new random secret, returned once (only its hash is kept).
    /// `audiences` must be checked by the caller against the configuration.
    pub async fn create_client(
        &self,
        client_id: &str,
        audiences: &[String],
        roles: &[String],
        now: u64,
    ) -> Result<(Client, String), AccountError> {
        if client_id == PUBLIC_CLIENT_ID {
            return Err(AccountError::ClientTaken);
        }
        token::check_text("client_id", client_id, 256)?;
        if audiences.is_empty() {
            return Err(
                MintError::Invalid { field: "aud", rule: "at least one audience is required".to_owned() }.into()
            );
        }
        let client = Client {
            client_id: client_id.to_owned(),
            audiences: audiences.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect(),
            roles: role_set(roles)?,
            created_at: now,
        };
        let secret = random_token();
        let inserted = sqlx::query(
            "INSERT INTO clients (client_id, secret_hash, audiences, roles, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&client.client_id)
        .bind(secret_hash(&secret))
        .bind(encode_list(&client.audiences))
        .bind(encode_list(&client.roles))
        .bind(to_db_time(now))
        .execute(self.db.pool())
        .await;
        match inserted {
            Ok(_) => Ok((client, secret)),
            Err(error) if is_unique_violation(&error) => Err(AccountError::ClientTaken),
            Err(error) => Err(error.into()),
        }
    }

    /// Every client, by id.
    pub async fn clients(&self) -> Result<Vec<Client>, AccountError> {
        let rows: Vec<ClientRow> = sqlx::query_as(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id"))
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(|row| client_from_row(row).map(|(client, _)| client)).collect()
    }

    /// Removes a client; its tokens live until they expire.
    pub async fn remove_client(&self, client_id: &str, now: u64) -> Result<(), AccountError> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::UnknownClient);
        }
        // Its sessions end with it: a client registered later under the same id gets none.
        sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL")
            .bind(to_db_time(now))
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The client when `secret` is its secret.
    pub(crate) async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Client>, AccountError> {
        let row: Option<ClientRow> =
            sqlx::query_as(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"))
                .bind(client_id)
                .fetch_optional(self.db.pool())
                .await?;
        let presented = secret_hash(secret);
        match row.map(client_from_row).transpose()? {
            Some((client, stored)) if same_hash(&stored, &presented) => Ok(Some(client)),
            _ => Ok(None),
        }
    }
}

fn client_from_row(
    (client_id, secret_hash, audiences, roles, created_at): ClientRow,
) -> Result<(Client, String), AccountError> {
    let client = Client {
        client_id,
        audiences: decode_list("clients", &audiences)?,
        roles: decode_list("clients", &roles)?,
        created_at: from_db_time(created_at),
    };
    Ok((client, secret_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized() {
        assert_eq!(normalize_email("  Alice@Example.COM ").expect("valid"), "alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "a@b@c", "a@.com", "a\u{0}@b.c"] {
            assert!(matches!(normalize_email(bad), Err(AccountError::InvalidEmail)), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn role_sets_are_sorted_and_unique() {
        let roles = ["b", "a", "b"].map(str::to_owned);
        assert_eq!(role_set(&roles).expect("valid"), ["a", "b"]);
        assert!(role_set(&["a b".to_owned()]).is_err());
        assert!(role_set(&[String::new()]).is_err());
    }
}
