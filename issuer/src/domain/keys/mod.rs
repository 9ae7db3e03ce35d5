//! Signing keys and their lifecycle: `next` (published, does not sign) → `active` (the one key
//! that signs) → `retiring` (published, does not sign) → `retired` (gone), or `revoked` at once.
//!
//! The state lives in the database, not in memory, so rotation survives restarts and works with
//! several processes on one database. Every change runs in one transaction that starts by taking
//! the key-set lock (see [`crate::store::keys`]), so each process decides from the latest state.
//! A transaction that finds nothing to change rolls back, the version bump with it: the version
//! moves only when a key changed, and other processes rebuild their JWKS only then.
//!
//! What to do is decided by the pure planner in [`rotation`]; [`KeyStore`] only reads the keys,
//! asks it, and writes its answer.

pub mod rotation;
mod signing;

pub use rotation::{KEY_SET_CHECK_INTERVAL, REPLICA_SYNC, RotationPolicy};
pub use signing::SigningKey;

use crate::domain::kek::{Kek, KekError};
use crate::store::keys::{self as rows, KeyRow, NewKey, Which};
use crate::store::{Db, DbError, from_db_time};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwks::PublicKey;
use rotation::{Create, Plan};
use serde::Serialize;
use sqlx::AnyConnection;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The most keys the JWKS may list. Verifiers refuse sets of more than 32 keys; rotation on demand
/// stops here instead of growing the set without bound.
pub const MAX_PUBLISHED_KEYS: usize = 16;

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

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The kid of the active key, if there is one.
    pub active: Option<String>,
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

fn parse_state(kid: &str, state: &str) -> Result<KeyState, KeyStoreError> {
    KeyState::parse(state).ok_or_else(|| corrupt(format!("unknown state of {kid}")))
}

impl TryFrom<KeyRow> for KeyInfo {
    type Error = KeyStoreError;

    fn try_from(row: KeyRow) -> Result<Self, KeyStoreError> {
        Ok(Self {
            state: parse_state(&row.kid, &row.state)?,
            public_key: decode_public_key(&row.kid, &row.public_key)?,
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

/// The keys, oldest first.
async fn load(connection: &mut AnyConnection, which: Which) -> Result<Vec<KeyInfo>, KeyStoreError> {
    rows::load(connection, which).await?.into_iter().map(KeyInfo::try_from).collect()
}

/// Every key in `db`, published or not, oldest first. Needs no KEK: for readers such as
/// `issuer keys list`.
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, KeyStoreError> {
    load(&mut *db.acquire().await?, Which::All).await
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
        Ok(rows::version(&mut *self.db.acquire().await?).await?)
    }

    /// The published keys, active first, then next, then retiring (newest first).
    pub async fn published(&self) -> Result<PublishedKeys, KeyStoreError> {
        let mut connection = self.db.acquire().await?;
        // The version is read first: keys read after it are at least as new, so a change in
        // between shows up as a new version at the next look, never as a stale set.
        let version = rows::version(&mut connection).await?;
        let mut keys = load(&mut connection, Which::Published).await?;
        keys.sort_by(|a, b| a.state.cmp(&b.state).then(b.published_at.cmp(&a.published_at)));
        let active = keys.iter().find(|key| key.state == KeyState::Active).map(|key| key.kid.clone());
        Ok(PublishedKeys { version, keys: keys.into_iter().map(|key| key.public_key).collect(), active })
    }

    /// The scheduled step at `now` (see [`Plan::for_tick`]). Does nothing (and takes no lock)
    /// when nothing is due.
    pub async fn tick(&self, now: u64) -> Result<Vec<Change>, KeyStoreError> {
        let published = load(&mut *self.db.acquire().await?, Which::Published).await?;
        if Plan::for_tick(&published, now, &self.policy).is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin().await?;
        rows::lock_key_set(&mut tx).await?;
        // Decided again under the lock: another process may have done it meanwhile.
        let plan = Plan::for_tick(&load(&mut tx, Which::Published).await?, now, &self.policy);
        if plan.is_empty() {
            tx.rollback().await.map_err(DbError::from)?;
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        for kid in plan.retire {
            rows::retire(&mut tx, &kid, now).await?;
            changes.push(Change::Retired { kid });
        }
        if let Some(kid) = plan.promote {
            let retiring = rows::active(&mut tx).await?.map(|key| key.kid);
            rows::promote(&mut tx, &kid, now).await?;
            changes.push(Change::Promoted { kid, retiring });
        }
        let created = match plan.create {
            Some(Create::Active) => Some((KeyState::Active, None)),
            Some(Create::Next { activate_after }) => Some((KeyState::Next, Some(activate_after))),
            None => None,
        };
        if let Some((state, activate_after)) = created {
            let kid = self.insert_new(&mut tx, state, now, activate_after).await?;
            changes.push(Change::Created { kid, state });
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(changes)
    }

    /// Rotation on demand at `now`. A next key that has been published for the lead takes over at
    /// once; otherwise a next key is published (if there is none) and scheduled to take over as
    /// soon as the lead allows: a key never signs before verifiers can have it.
    pub async fn rotate(&self, now: u64) -> Result<Rotation, KeyStoreError> {
        let mut tx = self.db.begin().await?;
        rows::lock_key_set(&mut tx).await?;
        let published = load(&mut tx, Which::Published).await?;
        let active = published.iter().find(|key| key.state == KeyState::Active).ok_or(KeyStoreError::NoActiveKey)?;
        let rotation = match published.iter().find(|key| key.state == KeyState::Next) {
            Some(next) => {
                let earliest = self.policy.earliest_activation(next.published_at);
                if now >= earliest {
                    rows::promote(&mut tx, &next.kid, now).await?;
                    Rotation::Rotated { active: next.kid.clone(), retiring: active.kid.clone() }
                } else {
                    let scheduled = Rotation::Scheduled { next: next.kid.clone(), activates_at: earliest };
                    if next.activate_after.is_some_and(|after| after <= earliest) {
                        // Already scheduled as soon as it may be: nothing changes, and the
                        // rollback undoes the version bump that took the lock.
                        tx.rollback().await.map_err(DbError::from)?;
                        return Ok(scheduled);
                    }
                    rows::schedule(&mut tx, &next.kid, earliest).await?;
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
        tx.commit().await.map_err(DbError::from)?;
        Ok(rotation)
    }

    /// Emergency revocation at `now`: the key leaves the JWKS at once and its private key is
    /// erased. When it was the active key, the next key (already published) takes over, or a new
    /// key is created and signs at once. Revoking a revoked key changes nothing.
    pub async fn revoke(&self, kid: &str, now: u64) -> Result<Revocation, KeyStoreError> {
        let mut tx = self.db.begin().await?;
        rows::lock_key_set(&mut tx).await?;
        let state = rows::state_of(&mut tx, kid).await?.ok_or(KeyStoreError::UnknownKey)?;
        let previous_state = parse_state(kid, &state)?;
        if previous_state == KeyState::Revoked {
            let active = rows::active(&mut tx).await?;
            tx.rollback().await.map_err(DbError::from)?;
            let active = active.ok_or(KeyStoreError::NoActiveKey)?.kid;
            return Ok(Revocation { kid: kid.to_owned(), previous_state, active });
        }
        rows::revoke(&mut tx, kid, now).await?;
        let published = load(&mut tx, Which::Published).await?;
        let active = match (
            published.iter().find(|key| key.state == KeyState::Active),
            published.iter().find(|key| key.state == KeyState::Next),
        ) {
            (Some(active), _) => active.kid.clone(),
            (None, Some(next)) => {
                rows::promote(&mut tx, &next.kid, now).await?;
                next.kid.clone()
            }
            (None, None) => self.insert_new(&mut tx, KeyState::Active, now, None).await?,
        };
        tx.commit().await.map_err(DbError::from)?;
        Ok(Revocation { kid: kid.to_owned(), previous_state, active })
    }

    /// The active key, decrypted (and kept in memory while it stays active).
    pub async fn signer(&self) -> Result<Arc<SigningKey>, KeyStoreError> {
        let active = rows::active(&mut *self.db.acquire().await?).await?.ok_or(KeyStoreError::NoActiveKey)?;
        if let Some(key) = self.cached_signer().filter(|key| key.kid() == active.kid) {
            return Ok(key);
        }
        let kid = active.kid;
        let sealed =
            active.sealed_private_key.ok_or_else(|| corrupt(format!("the active key {kid} has no private key")))?;
        let key = Arc::new(SigningKey::unseal(&kid, &sealed, &self.kek)?);
        *self.signer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&key));
        Ok(key)
    }

    fn cached_signer(&self) -> Option<Arc<SigningKey>> {
        self.signer.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The decrypted key `kid` if it is the one kept in memory (the active key when it was last
    /// read), without asking the database: for a caller that knows `kid` is active.
    pub fn cached_signer_for(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.cached_signer().filter(|key| key.kid() == kid)
    }

    async fn insert_new(
        &self,
        connection: &mut AnyConnection,
        state: KeyState,
        now: u64,
        activate_after: Option<u64>,
    ) -> Result<String, KeyStoreError> {
        let key = SigningKey::generate()?;
        let public_key = URL_SAFE_NO_PAD.encode(key.public_key().to_sec1());
        let sealed = key.seal(&self.kek);
        let row = NewKey {
            kid: key.kid(),
            state: state.as_str(),
            public_key: &public_key,
            sealed_private_key: &sealed,
            published_at: now,
            activate_after,
            activated_at: (state == KeyState::Active).then_some(now),
        };
        rows::insert(connection, &row).await?;
        Ok(key.kid().to_owned())
    }
}
