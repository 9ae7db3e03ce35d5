//! Signing keys and their lifecycle: `next` (published, does not sign) → `active` (the one key
//! that signs) → `retiring` (published, does not sign) → `retired` (gone), or `revoked` at once.
//!
//! The state lives in the database, not in memory, so rotation survives restarts and works with
//! several processes on one database. Every change runs in one transaction that starts by bumping
//! `key_set_version`: that takes SQLite's write lock or PostgreSQL's row lock before anything is
//! read, so changes from several processes are serialized, and each decides from the latest state.
//! A transaction that finds nothing to change rolls back, the bump with it: the version moves only
//! when a key changed, and other processes rebuild their JWKS only then. The database also enforces "at most one active key, at most one next key" with unique indexes.

use crate::config::Config;
use crate::db::{Db, DbError, from_db_time, to_db_time};
use crate::kek::{Kek, KekError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwks::PublicKey;
use jwt_simple::algorithms::{ECDSAP256KeyPairLike as _, ES256KeyPair};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::HeaderOptions;
use serde::Serialize;
use sqlx::{AnyConnection, FromRow};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use zeroize::Zeroizing;

/// The most keys the JWKS may list. Verifiers refuse sets of more than 32 keys; rotation on demand
/// stops here instead of growing the set without bound.
pub const MAX_PUBLISHED_KEYS: usize = 16;

/// The default of the `replica_sync` setting: how often each `serve` process applies due rotation
/// steps and re-reads the key set in the background. A new key becomes active only once every process has had the time to publish it:
/// see [`RotationPolicy::publish_margin`].
pub const REPLICA_SYNC: Duration = Duration::from_secs(5);

/// How stale the key set a process serves and checks admin tokens against may be: reading it
/// compares the cheap `key_set_version` with the database at most once per this interval (by
/// the injected clock) and rebuilds only when it moved. So a revocation in one process reaches
/// every other within about this long, not at the next [`REPLICA_SYNC`].
pub const KEY_SET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where a key is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Active: the one key that signs. Published.
    Active,
    /// Next: published ahead of taking over, does not sign yet.
    Next,
    /// Retiring: stopped signing, still published until the tokens it signed have expired.
    Retiring,
    /// Retired: no longer published; its private key is erased.
    Retired,
    /// Revoked: removed from the key set at once; its private key is erased.
    Revoked,
}

impl KeyState {
    /// The name stored in the database and shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    /// True for the states whose key is in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, Self::Next | Self::Active | Self::Retiring)
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Next, Self::Active, Self::Retiring, Self::Retired, Self::Revoked]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A key as the store lists it: public facts only.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// The key id: the RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The lifecycle state.
    pub state: KeyState,
    /// The public key.
    #[serde(skip)]
    pub public_key: PublicKey,
    /// When it entered the JWKS (Unix seconds).
    pub published_at: u64,
    /// For a `next` key: when it takes over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activate_after: Option<u64>,
    /// When it started signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<u64>,
    /// When it stopped signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_at: Option<u64>,
    /// When it left the JWKS after retiring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<u64>,
    /// When it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// The timing rules of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long a new key is published before it may sign.
    pub publish_lead: Duration,
    /// How long a key stays published after it stopped signing.
    pub retire_delay: Duration,
    /// The interval of each process's background sync (`replica_sync`); the publish margin
    /// is derived from it.
    pub replica_sync: Duration,
}

impl RotationPolicy {
    /// The policy the configuration describes.
    pub fn from_config(config: &Config) -> Self {
        Self {
            rotation_period: config.rotation_period,
            publish_lead: config.publish_lead,
            retire_delay: config.retire_delay,
            replica_sync: config.replica_sync,
        }
    }

    /// What is added to `publish_lead` before a new key may sign: twice the sync interval.
    ///
    /// The lead counts from `published_at`, but verifiers can only fetch the key once every
    /// process serves it. A process serves a key set at most [`KEY_SET_CHECK_INTERVAL`] old
    /// when it is read, and its background sync re-reads it every `replica_sync`; that sync runs
    /// with `MissedTickBehavior::Delay`, so a slow sync (or a commit that waited for the lock
    /// after `published_at` was taken) pushes the next one back by up to a whole interval. Twice
    /// the interval covers that, with [`KEY_SET_CHECK_INTERVAL`] well inside it. Keep
    /// `publish_margin >= 2 * replica_sync` when changing either.
    pub fn publish_margin(&self) -> Duration {
        self.replica_sync.saturating_mul(2)
    }

    /// The whole lead a new key gets before it may sign: `publish_lead + publish_margin`.
    pub fn lead(&self) -> Duration {
        self.publish_lead.saturating_add(self.publish_margin())
    }

    fn lead_secs(&self) -> u64 {
        self.lead().as_secs()
    }

    /// The earliest moment a key published at `published_at` may sign.
    pub fn earliest_activation(&self, published_at: u64) -> u64 {
        published_at.saturating_add(self.lead_secs())
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No key has this `kid`.
    #[error("no key has this kid")]
    UnknownKey,
    /// Rotation would publish more than [`MAX_PUBLISHED_KEYS`] keys.
    #[error("{MAX_PUBLISHED_KEYS} keys are published already; wait for retiring keys to retire")]
    TooManyKeys,
    /// There is no active key (the key set was changed outside the issuer).
    #[error("there is no active signing key")]
    NoActiveKey,
    /// A sealed private key does not open: the KEK is not the one the key was sealed with.
    #[error(transparent)]
    Unseal(#[from] KekError),
    /// Key generation or signing failed in the crypto library.
    #[error("signing key: {0}")]
    Crypto(String),
    /// The published keys could not be made into the JWKS to serve.
    #[error("JWKS: {0}")]
    Jwks(String),
}

impl From<sqlx::Error> for KeyStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(error))
    }
}

/// A private signing key with its `kid`. Its `Debug` output shows the `kid` only.
pub struct SigningKey {
    kid: String,
    public_key: PublicKey,
    pair: ES256KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random P-256 key.
    pub fn generate() -> Result<Self, KeyStoreError> {
        Self::from_pair(ES256KeyPair::generate())
    }

    fn from_pair(pair: ES256KeyPair) -> Result<Self, KeyStoreError> {
        let public_key = PublicKey::from_jwt_simple(&pair.public_key())
            .map_err(|error| KeyStoreError::Crypto(format!("public key: {error}")))?;
        let kid = public_key.thumbprint().to_owned();
        Ok(Self { pair: pair.with_key_id(&kid), kid, public_key })
    }

    /// Rebuilds a key from its secret scalar, checking that it is the key `kid` names.
    fn from_secret(kid: &str, secret: &[u8]) -> Result<Self, KeyStoreError> {
        let pair = ES256KeyPair::from_bytes(secret)
            .map_err(|_| KeyStoreError::Crypto(format!("the private key of {kid} is not a P-256 scalar")))?;
        let key = Self::from_pair(pair)?;
        if key.kid != kid {
            return Err(KeyStoreError::Crypto(format!("the private key stored for {kid} belongs to another key")));
        }
        Ok(key)
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Signs `claims` as an ES256 JWS with header `typ` and this key's `kid`.
    pub fn sign<C: Serialize>(&self, claims: JWTClaims<C>, typ: &str) -> Result<String, KeyStoreError> {
        let options = HeaderOptions { signature_type: Some(typ.to_owned()), ..HeaderOptions::default() };
        self.pair.sign_with_options(claims, &options).map_err(|error| KeyStoreError::Crypto(error.to_string()))
    }

    fn seal(&self, kek: &Kek) -> String {
        let secret = Zeroizing::new(self.pair.to_bytes());
        kek.seal(&self.kid, &secret)
    }
}

/// What the scheduled step changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A key was created in `state` (`next`, or `active` on a first start).
    Created {
        /// The new key.
        kid: String,
        /// Its state.
        state: KeyState,
    },
    /// A next key became active; the previous active key (if any) is retiring.
    Promoted {
        /// The new active key.
        kid: String,
        /// The key that stopped signing.
        retiring: Option<String>,
    },
    /// A retiring key left the key set.
    Retired {
        /// The key.
        kid: String,
    },
}

/// What a rotation on demand did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Rotation {
    /// The next key had been published long enough: it is active now.
    Rotated {
        /// The new active key.
        active: String,
        /// The key that stopped signing.
        retiring: String,
    },
    /// A next key is published (created now, or already there) and takes over at `activates_at`,
    /// once every verifier can have it.
    Scheduled {
        /// The next key.
        next: String,
        /// When it becomes active (Unix seconds).
        activates_at: u64,
    },
}

/// What a revocation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// The revoked key.
    pub kid: String,
    /// Its state before (`revoked` when it already was: revoking is idempotent).
    pub previous_state: KeyState,
    /// The active key afterwards: a replacement when the active key was revoked.
    pub active: String,
}

/// The published keys at one version of the key set, in JWKS order (active, next, retiring).
#[derive(Clone, Debug)]
pub struct PublishedKeys {
    /// The key-set version these were read at (or after).
    pub version: i64,
    /// The keys.
    pub keys: Vec<PublicKey>,
}

/// The signing keys in the database.
pub struct KeyStore {
    db: Db,
    kek: Kek,
    policy: RotationPolicy,
    /// The decrypted active key, kept while it stays active.
    signer: Mutex<Option<Arc<SigningKey>>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("KeyStore").field("policy", &self.policy).finish_non_exhaustive()
    }
}

#[derive(FromRow)]
struct KeyRow {
    kid: String,
    state: String,
    public_key: String,
    published_at: i64,
    activate_after: Option<i64>,
    activated_at: Option<i64>,
    retiring_at: Option<i64>,
    retired_at: Option<i64>,
    revoked_at: Option<i64>,
}

const KEY_COLUMNS: &str =
    "kid, state, public_key, published_at, activate_after, activated_at, retiring_at, retired_at, revoked_at";

fn corrupt(detail: String) -> KeyStoreError {
    KeyStoreError::Db(DbError::Corrupt { table: "signing_keys", detail })
}

fn decode_public_key(kid: &str, encoded: &str) -> Result<PublicKey, KeyStoreError> {
    let bytes =
        URL_SAFE_NO_PAD.decode(encoded).map_err(|_| corrupt(format!("public key of {kid} is not base64url")))?;
    let key = PublicKey::from_sec1(&bytes).map_err(|error| corrupt(format!("public key of {kid}: {error}")))?;
    if key.thumbprint() != kid {
        return Err(corrupt(format!("public key of {kid} has another thumbprint")));
    }
    Ok(key)
}

impl TryFrom<KeyRow> for KeyInfo {
    type Error = KeyStoreError;

    fn try_from(row: KeyRow) -> Result<Self, KeyStoreError> {
        let state = KeyState::parse(&row.state).ok_or_else(|| corrupt(format!("unknown state of {}", row.kid)))?;
        let public_key = decode_public_key(&row.kid, &row.public_key)?;
        Ok(Self {
            public_key,
            state,
            published_at: from_db_time(row.published_at),
            activate_after: row.activate_after.map(from_db_time),
            activated_at: row.activated_at.map(from_db_time),
            retiring_at: row.retiring_at.map(from_db_time),
            retired_at: row.retired_at.map(from_db_time),
            revoked_at: row.revoked_at.map(from_db_time),
            kid: row.kid,
        })
    }
}

/// What the scheduled step should do, decided from the published keys alone.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    retire: Vec<String>,
    promote: Option<String>,
    create: Option<Create>,
}

#[derive(Debug, PartialEq, Eq)]
enum Create {
    /// No key at all (first start): one that signs at once.
    Active,
    /// The next key, taking over at the given time.
    Next { activate_after: u64 },
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.retire.is_empty() && self.promote.is_none() && self.create.is_none()
    }

    fn for_tick(published: &[KeyInfo], now: u64, policy: &RotationPolicy) -> Self {
        let retire: Vec<String> = published
            .iter()
            .filter(|key| key.state == KeyState::Retiring)
            .filter(|key| now >= key.retiring_at.unwrap_or(0).saturating_add(policy.retire_delay.as_secs()))
            .map(|key| key.kid.clone())
            .collect();
        let active = published.iter().find(|key| key.state == KeyState::Active);
        let next = published.iter().find(|key| key.state == KeyState::Next);
        let mut plan = Self { retire, ..Self::default() };
        match (active, next) {
            (None, None) => plan.create = Some(Create::Active),
            // Not made by the issuer (it never leaves a next key without an active one): recover.
            (None, Some(next)) => plan.promote = Some(next.kid.clone()),
            (Some(_), Some(next)) => {
                let earliest = policy.earliest_activation(next.published_at);
                if now >= earliest && now >= next.activate_after.unwrap_or(earliest) {
                    plan.promote = Some(next.kid.clone());
                }
            }
            (Some(active), None) => {
                let due =
                    active.activated_at.unwrap_or(active.published_at).saturating_add(policy.rotation_period.as_secs());
                // A full key set publishes nothing more; the active key signs on until retiring
                // keys retire (only reachable with a retire delay far beyond the period).
                let remaining = published.len() - plan.retire.len();
                if now.saturating_add(policy.lead_secs()) >= due && remaining < MAX_PUBLISHED_KEYS {
                    let activate_after = due.max(policy.earliest_activation(now));
                    plan.create = Some(Create::Next { activate_after });
                }
            }
        }
        plan
    }
}

impl KeyStore {
    /// A store over `db`, sealing private keys with `kek`.
    pub fn new(db: Db, kek: Kek, policy: RotationPolicy) -> Self {
        Self { db, kek, policy, signer: Mutex::new(None) }
    }

    /// The rotation policy.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Every key, published or not, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyStoreError> {
        list(&self.db).await
    }

    /// The current key-set version: it changes whenever the published keys may have.
    pub async fn version(&self) -> Result<i64, KeyStoreError> {
        let (version,): (i64,) =
            sqlx::query_as("SELECT version FROM key_set_version WHERE id = 1").fetch_one(self.db.pool()).await?;
        Ok(version)
    }

    /// The published keys, active first, then next, then retiring (newest first).
    pub async fn published(&self) -> Result<PublishedKeys, KeyStoreError> {
        // The version is read first: keys read after it are at least as new, so a change in
        // between shows up as a new version at the next look, never as a stale set.
        let version = self.version().await?;
        let mut connection = self.db.pool().acquire().await?;
        let mut keys = load_keys(&mut connection, Keys::Published).await?;
        keys.sort_by(|a, b| a.state.cmp(&b.state).then(b.published_at.cmp(&a.published_at)));
        Ok(PublishedKeys { version, keys: keys.into_iter().map(|key| key.public_key).collect() })
    }

    /// The scheduled step at `now`: retire keys whose delay has passed, promote a next key whose
    /// time has come, publish a next key ahead of the end of the rotation period, and on a first
    /// start create the first key. Does nothing (and takes no lock) when nothing is due.
    pub async fn tick(&self, now: u64) -> Result<Vec<Change>, KeyStoreError> {
        {
            let mut connection = self.db.pool().acquire().await?;
            if Plan::for_tick(&load_keys(&mut connection, Keys::Published).await?, now, &self.policy).is_empty() {
                return Ok(Vec::new());
            }
        }
        let mut tx = self.db.pool().begin().await?;
        lock_key_set(&mut tx).await?;
        // Decided again under the lock: another process may have done it meanwhile.
        let plan = Plan::for_tick(&load_keys(&mut tx, Keys::Published).await?, now, &self.policy);
        if plan.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        for kid in plan.retire {
            retire(&mut tx, &kid, now).await?;
            changes.push(Change::Retired { kid });
        }
        if let Some(kid) = plan.promote {
            let retiring = promote(&mut tx, &kid, now).await?;
            changes.push(Change::Promoted { kid, retiring });
        }
        match plan.create {
            Some(Create::Active) => {
                let kid = self.insert_new(&mut tx, KeyState::Active, now, None).await?;
                changes.push(Change::Created { kid, state: KeyState::Active });
            }
            Some(Create::Next { activate_after }) => {
                let kid = self.insert_new(&mut tx, KeyState::Next, now, Some(activate_after)).await?;
                changes.push(Change::Created { kid, state: KeyState::Next });
            }
            None => {}
        }
        tx.commit().await?;
        Ok(changes)
    }

    /// Rotation on demand at `now`. A next key that has been published for the lead takes over at
    /// once; otherwise a next key is published (if there is none) and scheduled to take over as
    /// soon as the lead allows: a key never signs before verifiers can have it.
    pub async fn rotate(&self, now: u64) -> Result<Rotation, KeyStoreError> {
        let mut tx = self.db.pool().begin().await?;
        lock_key_set(&mut tx).await?;
        let published = load_keys(&mut tx, Keys::Published).await?;
        let active = published.iter().find(|key| key.state == KeyState::Active).ok_or(KeyStoreError::NoActiveKey)?;
        let rotation = match published.iter().find(|key| key.state == KeyState::Next) {
            Some(next) => {
                let earliest = self.policy.earliest_activation(next.published_at);
                if now >= earliest {
                    promote(&mut tx, &next.kid, now).await?;
                    Rotation::Rotated { active: next.kid.clone(), retiring: active.kid.clone() }
                } else {
                    let scheduled = Rotation::Scheduled { next: next.kid.clone(), activates_at: earliest };
                    if next.activate_after.is_some_and(|after| after <= earliest) {
                        // Already scheduled as soon as it may be: nothing changes, and the
                        // rollback undoes the version bump that took the lock.
                        tx.rollback().await?;
                        return Ok(scheduled);
                    }
                    sqlx::query("UPDATE signing_keys SET activate_after = $1 WHERE kid = $2 AND state = 'next'")
                        .bind(to_db_time(earliest))
                        .bind(&next.kid)
                        .execute(&mut *tx)
                        .await?;
                    scheduled
                }
            }
            None if published.len() >= MAX_PUBLISHED_KEYS => return Err(KeyStoreError::TooManyKeys),
            None => {
                let activates_at = self.policy.earliest_activation(now);
                let next = self.insert_new(&mut tx, KeyState::Next, now, Some(activates_at)).await?;
                Rotation::Scheduled { next, activates_at }
            }
        };
        tx.commit().await?;
        Ok(rotation)
    }

    /// Emergency revocation at `now`: the key leaves the JWKS at once and its private key is
    /// erased. When it was the active key, the next key (already published) takes over, or a new
    /// key is created and signs at once. Revoking a revoked key changes nothing.
    pub async fn revoke(&self, kid: &str, now: u64) -> Result<Revocation, KeyStoreError> {
        let mut tx = self.db.pool().begin().await?;
        lock_key_set(&mut tx).await?;
        let state: Option<(String,)> =
            sqlx::query_as("SELECT state FROM signing_keys WHERE kid = $1").bind(kid).fetch_optional(&mut *tx).await?;
        let (state,) = state.ok_or(KeyStoreError::UnknownKey)?;
        let previous_state = KeyState::parse(&state).ok_or_else(|| corrupt(format!("unknown state of {kid}")))?;
        if previous_state == KeyState::Revoked {
            let active = active_key(&mut tx).await?;
            tx.rollback().await?;
            let active = active.ok_or(KeyStoreError::NoActiveKey)?.kid;
            return Ok(Revocation { kid: kid.to_owned(), previous_state, active });
        }
        sqlx::query(
            "UPDATE signing_keys SET state = 'revoked', revoked_at = $1, sealed_private_key = NULL, \
             activate_after = NULL WHERE kid = $2",
        )
        .bind(to_db_time(now))
        .bind(kid)
        .execute(&mut *tx)
        .await?;
        let published = load_keys(&mut tx, Keys::Published).await?;
        let active = match (
            published.iter().find(|key| key.state == KeyState::Active),
            published.iter().find(|key| key.state == KeyState::Next),
        ) {
            (Some(active), _) => active.kid.clone(),
            (None, Some(next)) => {
                promote(&mut tx, &next.kid, now).await?;
                next.kid.clone()
            }
            (None, None) => self.insert_new(&mut tx, KeyState::Active, now, None).await?,
        };
        tx.commit().await?;
        Ok(Revocation { kid: kid.to_owned(), previous_state, active })
    }

    /// The active key, decrypted (and kept in memory while it stays active).
    pub async fn signer(&self) -> Result<Arc<SigningKey>, KeyStoreError> {
        let ActiveKey { kid, sealed_private_key: sealed } =
            active_key(&mut *self.db.pool().acquire().await?).await?.ok_or(KeyStoreError::NoActiveKey)?;
        if let Some(key) = self.cached_signer().filter(|key| key.kid == kid) {
            return Ok(key);
        }
        let sealed = sealed.ok_or_else(|| corrupt(format!("the active key {kid} has no private key")))?;
        let secret = self.kek.open(&kid, &sealed)?;
        let key = Arc::new(SigningKey::from_secret(&kid, &secret)?);
        *self.signer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&key));
        Ok(key)
    }

    fn cached_signer(&self) -> Option<Arc<SigningKey>> {
        self.signer.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn insert_new(
        &self,
        connection: &mut AnyConnection,
        state: KeyState,
        now: u64,
        activate_after: Option<u64>,
    ) -> Result<String, KeyStoreError> {
        let key = SigningKey::generate()?;
        let activated_at = (state == KeyState::Active).then_some(now);
        sqlx::query(
            "INSERT INTO signing_keys (kid, state, public_key, sealed_private_key, published_at, activate_after, \
             activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.kid)
        .bind(state.as_str())
        .bind(URL_SAFE_NO_PAD.encode(key.public_key.to_sec1()))
        .bind(key.seal(&self.kek))
        .bind(to_db_time(now))
        .bind(activate_after.map(to_db_time))
        .bind(activated_at.map(to_db_time))
        .execute(&mut *connection)
        .await?;
        Ok(key.kid.clone())
    }
}

/// Takes the key-set lock for the rest of the transaction and bumps the version.
async fn lock_key_set(connection: &mut AnyConnection) -> Result<(), KeyStoreError> {
    sqlx::query("UPDATE key_set_version SET version = version + 1 WHERE id = 1").execute(&mut *connection).await?;
    Ok(())
}

/// Every key in `db`, published or not, oldest first. Needs no KEK: for readers such as
/// `issuer keys list`.
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyStoreError> {
    load_keys(&mut *db.pool().acquire().await?, Keys::All).await
}

/// Which keys [`load_keys`] reads.
#[derive(Clone, Copy)]
enum Keys {
    All,
    /// `next`, `active` and `retiring`: those in the JWKS.
    Published,
}

/// The keys, oldest first.
async fn load_keys(connection: &mut AnyConnection, which: Keys) -> Result<Vec<KeyInfo>, KeyStoreError> {
    let filter = match which {
        Keys::All => "",
        Keys::Published => "WHERE state IN ('next', 'active', 'retiring') ",
    };
    let sql = format!("SELECT {KEY_COLUMNS} FROM signing_keys {filter}ORDER BY published_at, kid");
    let rows: Vec<KeyRow> = sqlx::query_as(&sql).fetch_all(&mut *connection).await?;
    rows.into_iter().map(KeyInfo::try_from).collect()
}

/// The active key's row.
#[derive(FromRow)]
struct ActiveKey {
    kid: String,
    sealed_private_key: Option<String>,
}

async fn active_key(connection: &mut AnyConnection) -> Result<Option<ActiveKey>, KeyStoreError> {
    Ok(sqlx::query_as("SELECT kid, sealed_private_key FROM signing_keys WHERE state = 'active'")
        .fetch_optional(&mut *connection)
        .await?)
}

/// Makes the next key `kid` active; the active key, if any, starts retiring. Returns that key.
async fn promote(connection: &mut AnyConnection, kid: &str, now: u64) -> Result<Option<String>, KeyStoreError> {
    let now = to_db_time(now);
    let retiring = active_key(connection).await?;
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
    Ok(retiring.map(|key| key.kid))
}

async fn retire(connection: &mut AnyConnection, kid: &str, now: u64) -> Result<(), KeyStoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            rotation_period: Duration::from_secs(60 * MINUTE),
            publish_lead: Duration::from_secs(5 * MINUTE),
            retire_delay: Duration::from_secs(6 * MINUTE),
            replica_sync: Duration::from_secs(5),
        }
    }

    fn key(state: KeyState, published_at: u64) -> KeyInfo {
        let signing = SigningKey::generate().expect("key");
        KeyInfo {
            kid: signing.kid.clone(),
            state,
            public_key: signing.public_key.clone(),
            published_at,
            activate_after: None,
            activated_at: None,
            retiring_at: None,
            retired_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn first_start_creates_an_active_key() {
        assert_eq!(Plan::for_tick(&[], 1000, &policy()).create, Some(Create::Active));
    }

    #[test]
    fn next_key_is_published_one_lead_before_the_period_ends() {
        let mut active = key(KeyState::Active, 0);
        active.activated_at = Some(0);
        let lead = policy().lead().as_secs();
        assert_eq!(lead, 5 * MINUTE + 10, "the publish lead plus twice the sync interval");
        assert!(Plan::for_tick(std::slice::from_ref(&active), 60 * MINUTE - lead - 1, &policy()).is_empty());
        let plan = Plan::for_tick(&[active], 60 * MINUTE - lead, &policy());
        assert_eq!(plan.create, Some(Create::Next { activate_after: 60 * MINUTE }));
    }

    #[test]
    fn next_key_takes_over_only_after_the_lead() {
        let mut active = key(KeyState::Active, 0);
        active.activated_at = Some(0);
        let mut next = key(KeyState::Next, 100);
        next.activate_after = Some(50);
        let keys = [active, next];
        let earliest = 100 + policy().lead().as_secs();
        assert!(Plan::for_tick(&keys, earliest - 1, &policy()).promote.is_none(), "activate_after is not enough");
        assert_eq!(Plan::for_tick(&keys, earliest, &policy()).promote.as_deref(), Some(keys[1].kid.as_str()));
    }

    #[test]
    fn retiring_keys_leave_after_the_delay() {
        let mut active = key(KeyState::Active, 0);
        active.activated_at = Some(0);
        let mut retiring = key(KeyState::Retiring, 0);
        retiring.retiring_at = Some(10);
        let keys = [active, retiring];
        assert!(Plan::for_tick(&keys, 10 + 6 * MINUTE - 1, &policy()).retire.is_empty());
        assert_eq!(Plan::for_tick(&keys, 10 + 6 * MINUTE, &policy()).retire, [keys[1].kid.clone()]);
    }

    #[test]
    fn a_full_key_set_publishes_no_next_key() {
        let mut keys = vec![key(KeyState::Active, 0)];
        for _ in 1..MAX_PUBLISHED_KEYS {
            let mut retiring = key(KeyState::Retiring, 0);
            retiring.retiring_at = Some(1_000_000);
            keys.push(retiring);
        }
        assert!(Plan::for_tick(&keys, 10 * 60 * MINUTE, &policy()).is_empty());
    }

    #[test]
    fn signing_key_debug_shows_only_the_kid() {
        let key = SigningKey::generate().expect("key");
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("SigningKey {{ kid: {:?}, .. }}", key.kid()));
    }

    #[test]
    fn sealed_key_comes_back_as_the_same_key() {
        let kek = Kek::generate();
        let key = SigningKey::generate().expect("key");
        let sealed = key.seal(&kek);
        let secret = kek.open(key.kid(), &sealed).expect("opens");
        let back = SigningKey::from_secret(key.kid(), &secret).expect("same key");
        assert_eq!(back.public_key(), key.public_key());
        let other = SigningKey::generate().expect("key");
        assert!(SigningKey::from_secret(other.kid(), &secret).is_err(), "a kid that is not its own");
    }
}
