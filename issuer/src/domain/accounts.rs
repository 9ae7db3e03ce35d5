//! Users (email, argon2id password hash, roles, disabled flag) and clients (client id, hashed
//! secret or none for a public client, the audiences and roles of their service tokens, the exact
//! redirect URIs of their browser sign-ins), stored in the database.

use crate::domain::secrets::{PasswordError, PasswordHasher, random_id, random_token, same_hash, secret_hash};
use crate::domain::sessions::Sessions;
use crate::domain::tokens::{self, MintError};
use crate::store::accounts::{self as rows, ClientRow, UserKey, UserRow, decode_list, encode_list};
use crate::store::{Db, DbError, from_db_time, to_db_time};
use serde::Serialize;
use std::collections::BTreeSet;
use url::Url;

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

/// A registered client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Client {
    /// Its id, `sub` and `client_id` of its tokens.
    pub client_id: String,
    /// The audiences of its service tokens (client credentials).
    pub audiences: Vec<String>,
    /// The roles of its service tokens.
    pub roles: Vec<String>,
    /// When it was registered (Unix seconds).
    pub created_at: u64,
    /// Where `/authorize` may send a browser back to, matched exactly; none: no browser sign-in.
    pub redirect_uris: Vec<String>,
    /// Where `/session/end` may send a browser back to, matched exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client has no secret: it signs users in with PKCE only, and gets no service tokens.
    pub public: bool,
}

/// What a new client is registered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewClient {
    /// Its id.
    pub client_id: String,
    /// The audiences of its service tokens: checked by the caller against the configuration.
    pub audiences: Vec<String>,
    /// The roles of its service tokens.
    pub roles: Vec<String>,
    /// Its exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Its exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// No secret: PKCE only.
    pub public: bool,
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

/// The users and clients. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Accounts {
    db: Db,
    hasher: PasswordHasher,
}

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

/// The rule for a redirect URI at registration (RFC 6749 §3.1.2, OAuth 2.1 §2.3.1): absolute,
/// no fragment, no credentials; `https`, or `http` only on a loopback host. Matching is exact.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let parsed = Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URL"))?;
    if parsed.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{uri:?} must not carry credentials"));
    }
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{uri:?} must be https (http only for localhost, 127.0.0.1 and [::1])")),
    }
}

/// A set of roles: checked, sorted, without duplicates.
pub(crate) fn role_set(roles: &[String]) -> Result<Vec<String>, AccountError> {
    tokens::check_roles(roles)?;
    Ok(sorted_set(roles))
}

fn sorted_set(items: &[String]) -> Vec<String> {
    items.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

impl TryFrom<UserRow> for User {
    type Error = AccountError;

    fn try_from(row: UserRow) -> Result<Self, AccountError> {
        Ok(Self {
            roles: decode_list("users", &row.roles)?,
            disabled: row.disabled_at.is_some(),
            created_at: from_db_time(row.created_at),
            last_login_at: row.last_login_at.map(from_db_time),
            id: row.id,
            email: row.email,
        })
    }
}

impl TryFrom<&ClientRow> for Client {
    type Error = AccountError;

    fn try_from(row: &ClientRow) -> Result<Self, AccountError> {
        Ok(Self {
            client_id: row.client_id.clone(),
            audiences: decode_list("clients", &row.audiences)?,
            roles: decode_list("clients", &row.roles)?,
            created_at: from_db_time(row.created_at),
            redirect_uris: decode_list("clients", &row.redirect_uris)?,
            post_logout_redirect_uris: decode_list("clients", &row.post_logout_redirect_uris)?,
            public: row.public_client != 0,
        })
    }
}

/// A taken email or client id instead of a bare [`DbError::Duplicate`].
fn taken(error: DbError, what: AccountError) -> AccountError {
    match error {
        DbError::Duplicate => what,
        other => other.into(),
    }
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

    /// Creates a user. The email is normalized and must be free, which is checked before the
    /// password is hashed (a taken email costs no hash); the password must meet the policy; roles
    /// are checked.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: &[String],
        now: u64,
    ) -> Result<User, AccountError> {
        let email = normalize_email(email)?;
        let roles = role_set(roles)?;
        if rows::user(&self.db, UserKey::Email, &email).await?.is_some() {
            return Err(AccountError::EmailTaken);
        }
        let password_hash = self.hasher.hash(password).await?;
        let row = UserRow {
            id: random_id(),
            email,
            roles: encode_list(&roles),
            disabled_at: None,
            created_at: to_db_time(now),
            last_login_at: None,
        };
        rows::insert_user(&self.db, &row, &password_hash)
            .await
            .map_err(|error| taken(error, AccountError::EmailTaken))?;
        User::try_from(row)
    }

    /// Every user, by email.
    pub async fn users(&self) -> Result<Vec<User>, AccountError> {
        rows::users(&self.db).await?.into_iter().map(User::try_from).collect()
    }

    /// The user with this id.
    pub async fn user(&self, id: &str) -> Result<Option<User>, AccountError> {
        rows::user(&self.db, UserKey::Id, id).await?.map(User::try_from).transpose()
    }

    /// The user with this email address (normalized first).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, AccountError> {
        rows::user(&self.db, UserKey::Email, &normalize_email(email)?).await?.map(User::try_from).transpose()
    }

    /// Replaces the roles of a user.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> Result<User, AccountError> {
        let roles = role_set(roles)?;
        rows::set_roles(&self.db, id, &encode_list(&roles)).await?;
        self.user(id).await?.ok_or(AccountError::UnknownUser)
    }

    /// Disables a user (idempotent). Ending their sessions is the caller's part
    /// ([`Sessions::revoke_user`](crate::domain::sessions::Sessions::revoke_user)).
    pub async fn disable(&self, id: &str, now: u64) -> Result<User, AccountError> {
        rows::disable(&self.db, id, now).await?;
        self.user(id).await?.ok_or(AccountError::UnknownUser)
    }

    /// A password login: the user when the email names an enabled user and the password matches.
    /// Unknown emails are checked against a dummy hash, so every refusal takes the same time.
    pub(crate) async fn login(&self, email: &str, password: &str, now: u64) -> Result<Option<User>, AccountError> {
        let Ok(email) = normalize_email(email) else {
            self.hasher.verify(password, None).await?;
            return Ok(None);
        };
        let row = rows::credentials(&self.db, &email).await?;
        let (id, stored, disabled) =
            row.map_or((None, None, false), |row| (Some(row.id), Some(row.password_hash), row.disabled_at.is_some()));
        if !self.hasher.verify(password, stored).await? || disabled {
            return Ok(None);
        }
        let Some(id) = id else { return Ok(None) };
        rows::set_last_login(&self.db, &id, now).await?;
        self.user(&id).await
    }

    /// Registers a client. A confidential client gets a new random secret, returned once (only
    /// its hash is kept); a public client gets none. Redirect URIs must follow
    /// [`check_redirect_uri`]; a public client must have one (it has no other use).
    pub async fn create_client(&self, new: &NewClient, now: u64) -> Result<(Client, Option<String>), AccountError> {
        if new.client_id == PUBLIC_CLIENT_ID {
            return Err(AccountError::ClientTaken);
        }
        tokens::check_text("client_id", &new.client_id, 256)?;
        let invalid = |field, rule: String| AccountError::Invalid(MintError::Invalid { field, rule });
        if new.audiences.is_empty() && !new.public {
            return Err(invalid("aud", "at least one audience is required".to_owned()));
        }
        if new.public && new.redirect_uris.is_empty() {
            return Err(invalid("redirect_uri", "a public client needs at least one".to_owned()));
        }
        for uri in new.redirect_uris.iter().chain(&new.post_logout_redirect_uris) {
            check_redirect_uri(uri).map_err(|rule| invalid("redirect_uri", rule))?;
        }
        let secret = (!new.public).then(random_token);
        let row = ClientRow {
            client_id: new.client_id.clone(),
            // No secret hashes to this: a public client cannot authenticate with one.
            secret_hash: secret.as_deref().map(secret_hash).unwrap_or_default(),
            audiences: encode_list(&sorted_set(&new.audiences)),
            roles: encode_list(&role_set(&new.roles)?),
            created_at: to_db_time(now),
            redirect_uris: encode_list(&sorted_set(&new.redirect_uris)),
            post_logout_redirect_uris: encode_list(&sorted_set(&new.post_logout_redirect_uris)),
            public_client: i64::from(new.public),
        };
        rows::insert_client(&self.db, &row).await.map_err(|error| taken(error, AccountError::ClientTaken))?;
        Ok((Client::try_from(&row)?, secret))
    }

    /// The client with this id, if registered.
    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, AccountError> {
        rows::client(&self.db, client_id).await?.as_ref().map(Client::try_from).transpose()
    }

    /// Every client, by id.
    pub async fn clients(&self) -> Result<Vec<Client>, AccountError> {
        rows::clients(&self.db).await?.iter().map(Client::try_from).collect()
    }

    /// Removes a client and, in the same transaction, ends its sessions in `sessions` (see
    /// [`Sessions::end_client_in`]): a client registered later under the same id inherits none,
    /// and every unexpired access token it was issued is listed as revoked.
    pub async fn remove_client(&self, sessions: &Sessions, client_id: &str, now: u64) -> Result<(), AccountError> {
        let mut tx = self.db.begin().await?;
        if !rows::delete_client(&mut tx, client_id).await? {
            return Err(AccountError::UnknownClient);
        }
        let ended = sessions.end_client_in(&mut tx, client_id, now).await?;
        tx.commit().await.map_err(DbError::from)?;
        tracing::info!(client = client_id, sessions = ended, "client removed");
        Ok(())
    }

    /// The client when `secret` is its secret.
    pub(crate) async fn authenticate_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Client>, AccountError> {
        let presented = secret_hash(secret);
        match rows::client(&self.db, client_id).await? {
            Some(row) if row.public_client == 0 && same_hash(&row.secret_hash, &presented) => {
                Ok(Some(Client::try_from(&row)?))
            }
            _ => Ok(None),
        }
    }
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
    fn redirect_uris_are_registered_only_when_safe() {
        for good in ["https://site.example/cb", "http://127.0.0.1:8787/cb", "http://localhost/cb", "http://[::1]:9/cb"]
        {
            assert!(check_redirect_uri(good).is_ok(), "{good}");
        }
        for bad in
            ["http://site.example/cb", "https://site.example/cb#x", "/cb", "https://u:p@site.example/", "ftp://x/"]
        {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_sets_are_sorted_and_unique() {
        let roles = ["b", "a", "b"].map(str::to_owned);
        assert_eq!(role_set(&roles).expect("valid"), ["a", "b"]);
        assert!(role_set(&["a b".to_owned()]).is_err());
        assert!(role_set(&[String::new()]).is_err());
    }
}
