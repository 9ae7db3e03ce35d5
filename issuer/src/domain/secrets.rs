//! Passwords and random secrets. Passwords are hashed with argon2id at the configured cost, on
//! the blocking thread pool (a hash takes tens of milliseconds of CPU). Random secrets (refresh
//! tokens, client secrets) have 256 bits of entropy, so a SHA-256 hash is enough to store them.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as ArgonHasher, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// The shortest password accepted (NIST SP 800-63B: at least 8 characters).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The longest password accepted, in bytes: long passphrases are fine, megabytes are not.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The argon2id cost of password hashes (the parallelism is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordHashing {
    /// Memory, in KiB. Default 19456 (19 MiB), as OWASP recommends.
    pub memory_kib: u32,
    /// Passes over the memory. Default 2, as OWASP recommends.
    pub iterations: u32,
}

impl PasswordHashing {
    /// OWASP's equivalent argon2id configurations (memory KiB, iterations) for parallelism 1.
    const OWASP: [(u32, u32); 5] = [(47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5)];

    /// True when at least one of OWASP's recommended configurations is met.
    pub fn meets_owasp(self) -> bool {
        Self::OWASP.iter().any(|&(memory, iterations)| self.memory_kib >= memory && self.iterations >= iterations)
    }
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password is too short or too long.
    #[error("a password must have at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes")]
    Policy,
    /// The configured cost is not one argon2 accepts.
    #[error("argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed.
    #[error("argon2: {0}")]
    Hash(String),
    /// The blocking task did not finish.
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes and checks passwords with argon2id, at most one hash per CPU at a time (each takes
/// the configured memory; the others wait their turn in order). New passwords (registrations)
/// take at most half of those slots (at least one), so that a flood of registrations leaves
/// logins the other half, and waits behind at most that many hashes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// The share of `permits` new passwords may hold.
    new_password_permits: Arc<Semaphore>,
    /// Hashes of new passwords, and checks, computed since the start.
    hashed: Arc<AtomicU64>,
    verified: Arc<AtomicU64>,
    /// A hash of a random password at the configured cost: unknown users are checked against it,
    /// so that they take as long as known ones.
    dummy: String,
}

impl PasswordHasher {
    /// A hasher at `cost` (parallelism 1). Computes one hash (the dummy) on the blocking pool,
    /// so it takes as long as a login.
    pub async fn new(cost: PasswordHashing) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|error| PasswordError::Params(error.to_string()))?;
        let dummy = tokio::task::spawn_blocking({
            let params = params.clone();
            move || hash_with(&params, random_token().as_bytes())
        })
        .await??;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self::with_slots(params, dummy, cpus))
    }

    /// A hasher with `slots` hashes at a time.
    fn with_slots(params: Params, dummy: String, slots: usize) -> Self {
        Self {
            params,
            permits: Arc::new(Semaphore::new(slots)),
            new_password_permits: Arc::new(Semaphore::new((slots / 2).max(1))),
            hashed: Arc::default(),
            verified: Arc::default(),
            dummy,
        }
    }

    /// How many new passwords were hashed since the start.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// How many passwords were checked (logins) since the start.
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Checks the length rules of a new password.
    fn check_policy(password: &str) -> Result<(), PasswordError> {
        if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::Policy);
        }
        Ok(())
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of a new password, after the policy check.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        Self::check_policy(password)?;
        let params = self.params.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        // The share first: new passwords beyond it wait outside the queue logins wait in.
        let share = Self::permit(&self.new_password_permits).await?;
        let permit = Self::permit(&self.permits).await?;
        let hashed = Arc::clone(&self.hashed);
        tokio::task::spawn_blocking(move || {
            let _permits = (share, permit);
            hashed.fetch_add(1, Ordering::Relaxed);
            hash_with(&params, &password)
        })
        .await?
    }

    /// A slot of `permits` for one hash. It moves into the blocking task, so that a request
    /// dropped while its hash runs (a timeout, a client gone) still holds the slot until the hash
    /// ends.
    async fn permit(permits: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, PasswordError> {
        Arc::clone(permits).acquire_owned().await.map_err(|error| PasswordError::Hash(error.to_string()))
    }

    /// True when `password` matches `stored` (a PHC string). With `None` (no such user) the
    /// dummy hash is checked instead, and the answer is false, in the same time. A stored hash
    /// that does not parse never matches.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.clone());
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let permit = Self::permit(&self.permits).await?;
        let verified = Arc::clone(&self.verified);
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verified.fetch_add(1, Ordering::Relaxed);
            let Ok(parsed) = PasswordHash::new(&stored) else {
                tracing::error!("a stored password hash does not parse");
                return false;
            };
            Argon2::default().verify_password(&password, &parsed).is_ok()
        })
        .await?;
        Ok(known && matches)
    }
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    ArgonHasher::<PasswordHash>::hash_password_with_salt(&argon2, password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Hash(error.to_string()))
}

/// 128 random bits, base64url: a `jti`, a user id, a refresh-token family id.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// 256 random bits, base64url (43 characters): a refresh token or a client secret.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a secret is stored: its SHA-256, base64url.
pub fn secret_hash(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two stored hashes in time that depends only on their lengths.
pub(crate) fn same_hash(left: &str, right: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(left.as_bytes().ct_eq(right.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: PasswordHashing = PasswordHashing { memory_kib: 64, iterations: 1 };

    #[tokio::test]
    async fn hashes_verify_and_the_dummy_never_matches() {
        let hasher = PasswordHasher::new(CHEAP).await.expect("hasher");
        let stored = hasher.hash("correct horse").await.expect("hash");
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{stored}");
        assert!(hasher.verify("correct horse", Some(stored.clone())).await.expect("verify"));
        assert!(!hasher.verify("correct horsf", Some(stored)).await.expect("verify"));
        assert!(!hasher.verify("anything at all", None).await.expect("verify"));
        assert!(!hasher.verify("anything at all", Some("not a hash".to_owned())).await.expect("verify"));
        assert!(matches!(hasher.hash("short").await, Err(PasswordError::Policy)));
        assert!(matches!(hasher.hash(&"x".repeat(1025)).await, Err(PasswordError::Policy)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_passwords_take_at_most_half_the_slots_and_logins_get_the_rest() {
        let cost = PasswordHashing { memory_kib: 1024, iterations: 1 };
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None).expect("params");
        let dummy = hash_with(&params, b"dummy").expect("hash");
        let hasher = PasswordHasher::with_slots(params, dummy.clone(), 2);
        // A flood of registrations queued first...
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let hasher = hasher.clone();
            flood.spawn(async move { hasher.hash("correct horse").await.map(|_| ()) });
        }
        // ...holds at most its share (one slot of two) while the others wait outside the hash
        // queue: once one of them hashes, a login still finds a slot at once.
        loop {
            let free = hasher.permits.available_permits();
            assert!(free >= 1, "registrations hold every slot");
            if free == 1 {
                drop(hasher.permits.clone().try_acquire_owned().expect("a free slot for the login"));
                assert!(!hasher.verify("correct horse", Some(dummy)).await.expect("verify"));
                break;
            }
            assert!(hasher.hashed() < 6, "no registration was seen hashing");
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.verified(), 1);
        while let Some(joined) = flood.join_next().await {
            joined.expect("joins").expect("hashes");
        }
        assert_eq!(hasher.hashed(), 6);
    }

    #[test]
    fn secrets_and_their_hashes() {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token());
        assert_eq!(secret_hash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert!(same_hash(&secret_hash(&token), &secret_hash(&token)));
        assert!(!same_hash(&secret_hash(&token), &secret_hash("other")));
        assert!(!same_hash("ab", "abc"));
    }
}
