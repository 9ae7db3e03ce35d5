//! The application state: the domain's parts (keys, the published JWKS, accounts, sessions)
//! assembled over one database from the configuration, with the use cases that span several of
//! them (minting, checking a bearer token, rotation with the JWKS rebuilt). Shared by the HTTP
//! layer, the background tasks and the CLI; it knows nothing of HTTP.

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::accounts::User;
use crate::domain::accounts::{AccountError, Accounts, normalize_email};
use crate::domain::address::address_key;
use crate::domain::kek::Kek;
use crate::domain::keys::SigningKey;
use crate::domain::keys::{self, Change, KeyInfo, KeyStore, KeyStoreError, Revocation, Rotation};
use crate::domain::published::{Checked, PublishedKeySet};
use crate::domain::secrets::{PasswordError, PasswordHasher, random_id};
use crate::domain::sessions::{IssuedAccess, LoginStart, SessionError, Sessions};
use crate::domain::signin::mail::{MailError, Mailer};
use crate::domain::signin::{SignIn, SignInError};
use crate::domain::tokens::{self, AccessTokenRequest, MintError, MintedToken};
use crate::metrics::{HashLabels, Metrics, PoolLabels};
use crate::store::{Db, DbError, MAX_CONNECTIONS, OpenMode};
use jwks::{Claims, P256Verifier, Validator, VerifyError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

mod signin;

pub use signin::CodeTokens;

/// The role an admin token must carry.
pub const ADMIN_ROLE: &str = "admin";

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The `jwks` core refused it.
    #[error("invalid token: {0}")]
    Invalid(#[from] VerifyError),
    /// It was revoked (by `jti`), or its user is disabled.
    #[error("the token was revoked")]
    Revoked,
    /// The key set or the revocation list cannot be confirmed now: the database does not answer.
    #[error("the key set cannot be confirmed now")]
    Unconfirmed,
    /// Reading the revocation list failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
}

/// Everything a request needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    clock: SharedClockDebug,
    db: Db,
    keys: KeyStore,
    jwks: PublishedKeySet,
    admin: Validator,
    access: Validator,
    accounts: Accounts,
    sessions: Sessions,
    signin: SignIn,
    mailer: Mailer,
    metrics: Metrics,
}

/// The clock, with a `Debug` that says nothing about it.
struct SharedClockDebug(SharedClock);

impl std::fmt::Debug for SharedClockDebug {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Clock")
    }
}

/// Why a password login gave no tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// Too many failed logins for the account or the address: try again after `retry_after` s.
    #[error("too many failed logins; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a login may be tried again.
        retry_after: u64,
    },
    /// An unknown email, a wrong password or a disabled user: the same answer for each.
    #[error("wrong credentials or disabled user")]
    WrongCredentials,
    /// Reading the account or checking the password failed.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// Recording the attempt or starting the session failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// The access token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// Starting the browser session or issuing the code failed.
    #[error(transparent)]
    SignIn(#[from] SignInError),
    /// `resource` names no audience this user may have a token for (RFC 8707 `invalid_target`).
    #[error("the requested resource is not one this user may have a token for")]
    InvalidTarget,
}

/// Why a registration made no account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// Too many registrations from the address: try again after `retry_after` s.
    #[error("too many registrations; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a registration may be tried again.
        retry_after: u64,
    },
    /// The email or the password was refused, or the account could not be stored.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// Counting the attempt failed.
    #[error(transparent)]
    Sessions(#[from] SessionError),
}

/// Why the issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The keys could not be set up or read.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyStoreError),
    /// The configured password-hash cost is refused by argon2.
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
    /// `smtp_url` or `mail_from` cannot be used.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The active key does not open under the configured KEK.
    #[error("{0}; is PORTCULLIS_KEK (or kek_file) the key-encryption key this database was created with?")]
    WrongKek(KeyStoreError),
    /// A command that needs an existing issuer found a database without keys (or without the
    /// issuer's tables).
    #[error(
        "{database}: {reason}; is data_dir (or database_url) right? `issuer serve` creates the database and its first key"
    )]
    NoKeys {
        /// The database, redacted.
        database: String,
        /// What was found.
        reason: String,
    },
}

/// Every key of an existing issuer database, for `issuer keys list`. Nothing is created or
/// changed (no database, folder, KEK file or key; no rotation step), and no KEK is needed.
pub async fn list_keys(config: &Config) -> Result<Vec<KeyInfo>, StartError> {
    let db = Db::open(&config.database_url, OpenMode::Existing).await?;
    let keys = existing_keys(&db, config).await;
    db.close().await;
    keys
}

/// The keys of `db`, refusing a database that has none.
async fn existing_keys(db: &Db, config: &Config) -> Result<Vec<KeyInfo>, StartError> {
    let no_keys = |reason: String| StartError::NoKeys { database: config.redacted_database_url(), reason };
    match keys::list(db).await {
        Ok(keys) if keys.is_empty() => Err(no_keys("there are no signing keys".to_owned())),
        Ok(keys) => Ok(keys),
        Err(KeyStoreError::Db(DbError::Sqlx(sqlx::Error::Database(error)))) => {
            Err(no_keys(format!("cannot read signing keys ({})", error.message())))
        }
        Err(other) => Err(other.into()),
    }
}

impl AppState {
    /// Opens the database (creating and migrating it if needed), creates the first key on a
    /// first start, applies any due rotation step, checks that `kek` opens the active key, and
    /// builds the JWKS. For `serve` and the commands that may set up a new issuer.
    pub async fn open(config: Config, kek: Kek, clock: SharedClock) -> Result<Self, StartError> {
        let db = Db::open(&config.database_url, OpenMode::Create).await?;
        let keys = KeyStore::new(db.clone(), kek, config.rotation_policy());
        for change in keys.tick(clock.now()).await? {
            tracing::info!(?change, "key set changed");
        }
        Self::assemble(config, clock, db, keys).await
    }

    /// Opens an existing issuer database as it is: creates nothing, migrates nothing, applies
    /// no rotation step, and refuses a database without keys (naming it, redacted). Checks that
    /// `kek` opens the active key. For commands that act on an existing issuer (`keys revoke`).
    pub async fn open_existing(config: Config, kek: Kek, clock: SharedClock) -> Result<Self, StartError> {
        let db = Db::open(&config.database_url, OpenMode::Existing).await?;
        existing_keys(&db, &config).await?;
        let keys = KeyStore::new(db.clone(), kek, config.rotation_policy());
        Self::assemble(config, clock, db, keys).await
    }

    async fn assemble(config: Config, clock: SharedClock, db: Db, keys: KeyStore) -> Result<Self, StartError> {
        keys.signer().await.map_err(|error| match error {
            KeyStoreError::Unseal(_) => StartError::WrongKek(error),
            other => StartError::Keys(other),
        })?;
        let jwks = PublishedKeySet::load(&keys, clock.now()).await?;
        let admin = Validator::new(config.admin_claims());
        let access = Validator::new(config.access_claims());
        let accounts = Accounts::new(db.clone(), PasswordHasher::new(config.password_hashing).await?);
        let sessions = Sessions::new(db.clone(), config.session_policy());
        let signin = SignIn::new(db.clone(), config.sign_in_policy());
        let mailer = Mailer::new(config.smtp_url.as_deref(), &config.mail_from, config.outbox())?;
        let metrics = Metrics::default();
        let inner = Inner {
            config,
            clock: SharedClockDebug(clock),
            db,
            keys,
            jwks,
            admin,
            access,
            accounts,
            sessions,
            signin,
            mailer,
            metrics,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// The users and clients.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// The refresh tokens, revocations and failed logins.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The current time from the injected clock (Unix seconds).
    pub fn now(&self) -> u64 {
        self.inner.clock.0.now()
    }

    /// One step of the background sync: applies due rotation steps, then rebuilds the cached JWKS
    /// if the key set changed (here or in another process on the same database). The JWKS is
    /// refreshed even when the rotation step failed, so that a replica never stops following
    /// the key set; the step's error is returned after that.
    pub async fn sync(&self) -> Result<Vec<Change>, KeyStoreError> {
        let now = self.now();
        let ticked = self.inner.keys.tick(now).await;
        match &ticked {
            Ok(changes) => {
                for change in changes {
                    tracing::info!(?change, "key set changed");
                    self.inner.metrics.key_changed(match change {
                        Change::Created { .. } => "created",
                        Change::Promoted { .. } => "promoted",
                        Change::Retired { .. } => "retired",
                    });
                }
            }
            Err(error) => tracing::error!(%error, "scheduled rotation step failed; refreshing the JWKS anyway"),
        }
        let refreshed = self.inner.jwks.refresh(&self.inner.keys, now).await;
        match (ticked, refreshed) {
            (Ok(changes), Ok(())) => Ok(changes),
            (Err(error), Ok(())) | (Ok(_), Err(error)) => Err(error),
            (Err(error), Err(refresh_error)) => {
                tracing::error!(error = %refresh_error, "JWKS refresh failed too");
                Err(error)
            }
        }
    }

    /// Runs [`sync`](Self::sync) every `replica_sync` (the setting) until the task is aborted. Errors are logged and retried at the next tick.
    pub fn spawn_key_sync(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(state.inner.keys.policy().replica_sync);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = state.sync().await {
                    tracing::error!(%error, "key sync failed; retrying at the next tick");
                }
            }
        })
    }

    /// Rotation on demand (see [`KeyStore::rotate`]); the JWKS is rebuilt at once.
    pub async fn rotate_keys(&self) -> Result<Rotation, KeyStoreError> {
        let now = self.now();
        let rotation = self.inner.keys.rotate(now).await?;
        tracing::info!(?rotation, "rotation on demand");
        self.inner.metrics.key_changed(match rotation {
            Rotation::Rotated { .. } => "promoted",
            Rotation::Scheduled { .. } => "scheduled",
        });
        self.inner.jwks.refresh(&self.inner.keys, now).await?;
        Ok(rotation)
    }

    /// Emergency revocation (see [`KeyStore::revoke`]); the JWKS is rebuilt at once.
    pub async fn revoke_key(&self, kid: &str) -> Result<Revocation, KeyStoreError> {
        let now = self.now();
        let revocation = self.inner.keys.revoke(kid, now).await?;
        tracing::warn!(?revocation, "key revoked");
        self.inner.metrics.key_changed("revoked");
        self.inner.jwks.refresh(&self.inner.keys, now).await?;
        Ok(revocation)
    }

    /// Mints an access token with the active key, after checking the request against the
    /// configuration: audiences among `audiences` (or the admin audience), lifetime at most
    /// `access_token_ttl`.
    pub async fn mint(&self, request: &AccessTokenRequest) -> Result<MintedToken, MintError> {
        let ttl = self.check(request)?;
        let (key, now) = self.signer().await?;
        tokens::sign(&key, &self.inner.config.issuer, request, ttl, now, random_id())
    }

    /// The lifetime of the token `request` asks for, once checked against the configuration.
    fn check(&self, request: &AccessTokenRequest) -> Result<Duration, MintError> {
        let config = &self.inner.config;
        let allowed: Vec<&str> =
            config.audiences.iter().map(String::as_str).chain([config.admin_audience.as_str()]).collect();
        tokens::check(request, &allowed, config.access_token_ttl)
    }

    /// The active key, published by this process, and the time to sign at. The hot path asks no
    /// database: the key set compared with the database less than
    /// [`KEY_SET_CHECK_INTERVAL`](crate::domain::keys::KEY_SET_CHECK_INTERVAL) ago names the
    /// active key, and the decrypted key kept in memory is that one. So a key revoked or replaced
    /// by another process stops signing here within that interval, as it leaves this process's
    /// JWKS.
    async fn signer(&self) -> Result<(Arc<SigningKey>, u64), MintError> {
        let now = self.now();
        let checked = self.inner.jwks.checked(&self.inner.keys, now).await;
        if checked.fresh
            && let Some(key) = checked.snapshot.active.as_deref().and_then(|kid| self.inner.keys.cached_signer_for(kid))
        {
            return Ok((key, now));
        }
        let key = self.inner.keys.signer().await?;
        // The clock is read once the signer is known, so that `iat` is never before the moment
        // its key became active (a rotation may land while the signer is read).
        let now = self.now();
        // Never sign with a key this process does not publish: catch up first if another
        // process changed the key set since this one last looked.
        if self.inner.jwks.current().keys.get(key.kid()).is_none() {
            self.inner.jwks.refresh(&self.inner.keys, now).await?;
        }
        Ok((key, now))
    }

    /// The access token request for the user `subject` with `roles` at `client_id`, for the
    /// audiences its login asked for (`asked`, checked by [`target`](Self::target)) or else every
    /// configured audience, never the admin audience unless asked for by an admin (RFC 8707: a
    /// token means what it was asked for; an admin's everyday token does not open the admin API).
    pub fn user_token_request(
        &self,
        subject: &str,
        roles: &[String],
        client_id: &str,
        asked: Option<&[String]>,
    ) -> AccessTokenRequest {
        let config = &self.inner.config;
        let admin = roles.iter().any(|role| role == ADMIN_ROLE);
        // An audience kept for a refresh family: the admin one only while the user is an admin.
        let kept: Vec<String> = asked
            .unwrap_or_default()
            .iter()
            .filter(|audience| admin || **audience != config.admin_audience)
            .cloned()
            .collect();
        AccessTokenRequest {
            subject: subject.to_owned(),
            audiences: if kept.is_empty() { config.audiences.clone() } else { kept },
            roles: roles.to_vec(),
            client_id: client_id.to_owned(),
            scope: None,
            ttl: None,
            service: false,
        }
    }

    /// The audience a password login asks for with `resource` (RFC 8707): a configured audience,
    /// or the admin audience for an admin.
    fn target(&self, resource: &str, roles: &[String]) -> Result<Vec<String>, LoginError> {
        let config = &self.inner.config;
        let admin = roles.iter().any(|role| role == ADMIN_ROLE);
        if config.audiences.iter().any(|audience| audience == resource) || (admin && resource == config.admin_audience)
        {
            Ok(vec![resource.to_owned()])
        } else {
            Err(LoginError::InvalidTarget)
        }
    }

    /// The access token request for a browser sign-in of the user `subject` at `client_id` with
    /// the granted `scope`: the configured audiences, never the admin audience (an admin's browser
    /// sign-in at a site does not give that site the issuer's admin API), and the scopes.
    pub fn browser_token_request(
        &self,
        subject: &str,
        roles: &[String],
        client_id: &str,
        scope: &str,
    ) -> AccessTokenRequest {
        AccessTokenRequest {
            subject: subject.to_owned(),
            audiences: self.inner.config.audiences.clone(),
            roles: roles.to_vec(),
            client_id: client_id.to_owned(),
            scope: Some(scope.to_owned()).filter(|scope| !scope.is_empty()),
            ttl: None,
            service: false,
        }
    }

    /// A password login at `client_id` from the client address `client` (see
    /// [`authenticate`](Self::authenticate)),
    /// for the audience `resource` if asked (RFC 8707), which starts a session. Returns the access
    /// token and the first refresh token.
    pub async fn password_login(
        &self,
        username: &str,
        password: &str,
        client_id: &str,
        client: Option<IpAddr>,
        resource: Option<&str>,
    ) -> Result<(MintedToken, String), LoginError> {
        let user = self.authenticate(username, password, client).await?;
        let asked = resource.map(|resource| self.target(resource, &user.roles)).transpose()?;
        let access = self.mint(&self.user_token_request(&user.id, &user.roles, client_id, asked.as_deref())).await?;
        let refresh = self.inner.sessions.start(&user.id, client_id, &access, asked.as_deref(), self.now()).await?;
        tracing::info!(user = %user.id, client = client_id, "password login");
        Ok((access, refresh))
    }

    /// Checks a password, for the password grant and the login page alike, from the client
    /// address `client`: the attempt is recorded and judged by the login limits (see
    /// [`limits`](crate::domain::sessions::limits)) before the password is checked; a login to an
    /// account failing from many addresses waits first; a success forgets its address's failures
    /// on the account.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<User, LoginError> {
        let (sessions, metrics) = (&self.inner.sessions, &self.inner.metrics);
        let account = normalize_email(username).unwrap_or_else(|_| username.trim().to_lowercase());
        let address = client.map(address_key).unwrap_or_default();
        let now = self.now();
        let attempt = match sessions.begin_login(&account, &address, now).await? {
            LoginStart::Allowed { attempt, delay } => {
                if !delay.is_zero() {
                    metrics.login_delay.observe(delay.as_secs_f64());
                    tracing::info!(?delay, "login slowed down: the account fails from many addresses");
                    tokio::time::sleep(delay).await;
                }
                attempt
            }
            LoginStart::Refused { limit, retry_after } => {
                metrics.limit_refused(limit.label());
                return Err(LoginError::RateLimited { retry_after });
            }
        };
        let user = self.inner.accounts.login(username, password, now).await?.ok_or_else(|| {
            metrics.login_failures.inc();
            LoginError::WrongCredentials
        })?;
        sessions.login_succeeded(attempt).await?;
        Ok(user)
    }

    /// An open registration from the client address `client`: at most
    /// [`LoginLimits::max_registrations`](crate::domain::sessions::limits::LoginLimits) per
    /// address (an IPv6 /64) in the failure window, every
    /// attempt counted before anything else; then the user is created (the email is checked
    /// before the password is hashed), without roles.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<User, RegistrationError> {
        let now = self.now();
        let subject = format!("register:{}", client.map(address_key).unwrap_or_default());
        let limit = self.inner.sessions.login_limits().max_registrations;
        if let Err(retry_after) = self.inner.sessions.count_attempt(&[(subject, limit)], now).await? {
            self.inner.metrics.limit_refused("registration");
            return Err(RegistrationError::RateLimited { retry_after });
        }
        Ok(self.inner.accounts.create_user(email, password, &[], now).await?)
    }

    /// Rotates the refresh token `refresh` presented by `client_id` (see [`Sessions::rotate`]):
    /// the new access token carries the user's roles as they are now, and a disabled or deleted
    /// user gets none. Returns the access token and the new refresh token.
    pub async fn refresh(&self, refresh: &str, client_id: &str) -> Result<(MintedToken, String), SessionError> {
        // The key first: once the old token is spent, signing must not fail for want of one.
        let (key, now) = self.signer().await?;
        let jti = random_id();
        // Tokens of a refresh family have no lifetime of their own: `check` below gives this one.
        let issued =
            IssuedAccess { jti: &jti, expires_at: now.saturating_add(self.inner.config.access_token_ttl.as_secs()) };
        let rotated = match self.inner.sessions.rotate(refresh, client_id, now, issued).await {
            Err(SessionError::Reused) => {
                self.inner.metrics.refresh_reuse.inc();
                return Err(SessionError::Reused);
            }
            rotated => rotated?,
        };
        let user_id = &rotated.family.user_id;
        let request = match &rotated.scope {
            Some(scope) => self.browser_token_request(user_id, &rotated.roles, client_id, scope),
            None => self.user_token_request(user_id, &rotated.roles, client_id, rotated.audiences.as_deref()),
        };
        // Checked after the spend, since it needs the roles; it holds by construction (the
        // configured audiences, the stored id and roles, checked when they were written).
        let ttl = self.check(&request)?;
        Ok((tokens::sign(&key, &self.inner.config.issuer, &request, ttl, now, jti)?, rotated.refresh))
    }

    /// The JWKS to serve: the cached snapshot, compared with the database at most once per
    /// [`KEY_SET_CHECK_INTERVAL`](crate::domain::keys::KEY_SET_CHECK_INTERVAL). When the database does
    /// not answer, the cached snapshot is served (verifiers keep their keys either way), marked
    /// not fresh.
    pub(crate) async fn jwks(&self) -> Checked {
        self.inner.jwks.checked(&self.inner.keys, self.now()).await
    }

    /// Checks an admin token with the `jwks` core, against the key set this process serves,
    /// compared with the database at most [`KEY_SET_CHECK_INTERVAL`](crate::domain::keys::KEY_SET_CHECK_INTERVAL)
    /// ago: a key revoked by any process stops opening admin endpoints here within that time.
    /// When that cannot be confirmed (the database does not answer), the token is not accepted.
    /// A revoked token (by `jti`) is refused.
    pub async fn verify_admin_token(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_token(token, &self.inner.admin).await
    }

    /// Checks an access token as [`verify_admin_token`](Self::verify_admin_token) does, for any
    /// configured audience or the admin audience.
    pub async fn verify_access_token(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_token(token, &self.inner.access).await
    }

    async fn verify_token(&self, token: &str, validator: &Validator) -> Result<Claims, TokenError> {
        let now = self.now();
        let checked = self.inner.jwks.checked(&self.inner.keys, now).await;
        if !checked.fresh {
            return Err(TokenError::Unconfirmed);
        }
        let claims = validator.validate(token, &checked.snapshot.keys, &P256Verifier, now)?;
        if let Some(jti) = &claims.jti
            && self.inner.sessions.is_revoked(jti).await?
        {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Runs [`Sessions::purge`] every `interval` until the task is aborted.
    pub fn spawn_purge(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match state.inner.sessions.purge(state.now()).await {
                    Ok(deleted) => tracing::debug!(deleted, "expired sessions and revocations purged"),
                    Err(error) => tracing::error!(%error, "purge failed; retrying at the next tick"),
                }
            }
        })
    }

    /// The metrics, for the HTTP layer to count requests and grants.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The metrics as a scrape sees them: the gauges (the active key's age, the pool, a database
    /// round trip) are read now, then everything is rendered.
    pub async fn render_metrics(&self) -> String {
        let metrics = &self.inner.metrics;
        let started = std::time::Instant::now();
        let healthy = self.inner.db.ping().await;
        metrics.db_ping.set(if healthy { started.elapsed().as_secs_f64() } else { f64::NAN });
        let (open, idle) = self.inner.db.connections();
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        for (state, value) in [("in_use", i64::from(open) - idle), ("idle", idle), ("max", i64::from(MAX_CONNECTIONS))]
        {
            metrics.pool.get_or_create(&PoolLabels { state }).set(value);
        }
        match self.inner.keys.list().await {
            Ok(keys) => {
                let activated =
                    keys.iter().find(|key| key.state == keys::KeyState::Active).and_then(|key| key.activated_at);
                let age = activated.map_or(f64::NAN, |at| self.now().saturating_sub(at) as f64);
                metrics.active_key_age.set(age);
            }
            Err(error) => tracing::warn!(%error, "metrics: cannot read the keys"),
        }
        let hasher = self.inner.accounts.hasher();
        for (operation, count) in [("hash", hasher.hashed()), ("verify", hasher.verified())] {
            let counter = metrics.password_hashes.get_or_create(&HashLabels { operation });
            counter.inner().store(count, std::sync::atomic::Ordering::Relaxed);
        }
        metrics.render()
    }

    /// True when the database answers.
    pub(crate) async fn healthy(&self) -> bool {
        self.inner.db.ping().await
    }

    /// Closes the database connections.
    pub async fn close(&self) {
        self.inner.db.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn sync_refreshes_the_jwks_even_when_the_rotation_step_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = [("PORTCULLIS_DATA_DIR".to_owned(), dir.path().to_str().expect("UTF-8").to_owned())];
        let config = Config::load(None, env).expect("valid");
        let (kek, clock) = (Kek::generate(), Arc::new(ManualClock::new(1_800_000_000)));
        let ours = AppState::open(config.clone(), kek.clone(), clock.clone()).await.expect("starts");
        let theirs = AppState::open(config, kek, clock.clone()).await.expect("starts");
        // Another process publishes a next key; this one has not looked since.
        let Rotation::Scheduled { next, .. } = theirs.rotate_keys().await.expect("rotates") else {
            panic!("the first rotation only schedules");
        };
        assert!(ours.inner.jwks.current().keys.get(&next).is_none());
        // Its promotion becomes due, but every change to a key fails.
        sqlx::query(
            "CREATE TRIGGER refuse_key_changes BEFORE UPDATE ON signing_keys \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(ours.inner.db.pool())
        .await
        .expect("trigger");
        clock.advance(ours.keys().policy().lead());
        let error = ours.sync().await.expect_err("the promotion fails");
        assert!(error.to_string().contains("refused by the test"), "{error}");
        assert!(ours.inner.jwks.current().keys.get(&next).is_some(), "the JWKS followed the key set anyway");
    }
}
