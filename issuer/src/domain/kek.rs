//! The key-encryption key (KEK): private signing keys are stored sealed with AES-256-GCM under
//! it, each bound to its `kid` as associated data so that a sealed key cannot be moved to
//! another row. The KEK itself never reaches the database, a log or `Debug` output.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The version tag of the sealed format: `v1:` + base64url(nonce || ciphertext || tag).
const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// A 256-bit AES-GCM key that seals private keys at rest.
#[derive(Clone)]
pub struct Kek {
    cipher: Arc<Aes256Gcm>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Kek(<redacted>)")
    }
}

/// Why a KEK could not be loaded, or a sealed key not opened. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The KEK is not standard base64 of exactly 32 bytes.
    #[error("must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)")]
    Malformed,
    /// The KEK file could not be read or created.
    #[error("key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The sealed value is not in the expected format, or does not open under this KEK (a
    /// different KEK, or a value moved from another key).
    #[error("the sealed private key of {kid} does not open under this key-encryption key")]
    Unseal {
        /// The key it belongs to.
        kid: String,
    },
}

impl Kek {
    /// A fresh random KEK.
    pub fn generate() -> Self {
        Self::from_bytes(&random_key_bytes())
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self { cipher: Arc::new(Aes256Gcm::new(bytes.into())) }
    }

    /// Reads a KEK given as standard base64 (padding and surrounding white space allowed).
    pub fn from_base64(text: &str) -> Result<Self, KekError> {
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KekError::Malformed)?);
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| KekError::Malformed)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads the KEK from `path`. A file that others may read is accepted with a warning.
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        let file_error = |source| KekError::File { path: path.display().to_string(), source };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(file_error)?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_err(file_error)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the key-encryption key file is readable by others; chmod 600 it");
            }
        }
        Self::from_base64(&text)
    }

    /// Reads the development KEK file at `path`, creating it (mode 0600, with its folder) with
    /// a random key if it does not exist. Returns the KEK and whether it was created.
    ///
    /// The file appears whole or not at all: the key is written to a temporary file (mode 0600)
    /// in the same folder, synced, then linked to `path` only if nothing is there yet. Processes
    /// starting together on a fresh folder thus agree on one key, and a failed write leaves no
    /// empty file behind.
    pub fn load_or_create_dev_file(path: &Path) -> Result<(Self, bool), KekError> {
        let file_error = |source| KekError::File { path: path.display().to_string(), source };
        let folder = match path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            Some(parent) => parent,
            None => Path::new("."),
        };
        std::fs::create_dir_all(folder).map_err(file_error)?;
        if path.exists() {
            return Ok((Self::read_complete_file(path)?, false));
        }
        let bytes = random_key_bytes();
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(bytes.as_ref())));
        // tempfile creates the file with mode 0600 on Unix.
        let mut temporary = tempfile::Builder::new().prefix(".kek-").tempfile_in(folder).map_err(file_error)?;
        temporary.write_all(text.as_bytes()).and_then(|()| temporary.as_file().sync_all()).map_err(file_error)?;
        match temporary.persist_noclobber(path) {
            Ok(_) => {
                sync_folder(folder);
                Ok((Self::from_bytes(&bytes), true))
            }
            // Another process made it first (the temporary file is removed on drop).
            Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::read_complete_file(path)?, false))
            }
            Err(error) => Err(file_error(error.error)),
        }
    }

    /// Reads a KEK file that may still be being written by an older issuer that wrote it in
    /// place: a malformed file is read again for a short while before it is refused.
    fn read_complete_file(path: &Path) -> Result<Self, KekError> {
        let mut attempts = 0;
        loop {
            match Self::from_file(path) {
                Err(KekError::Malformed) if attempts < 10 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(KekError::Malformed) => {
                    return Err(KekError::File {
                        path: path.display().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not a key (32 random bytes in base64); an interrupted start may have left it: \
                             remove it if no database was sealed with it",
                        ),
                    });
                }
                other => return other,
            }
        }
    }

    /// Seals `secret` (a private key) for the key `kid`.
    pub(crate) fn seal(&self, kid: &str, secret: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(kid);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad: &aad })
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts any message shorter than 64 GiB"));
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Opens what [`seal`](Self::seal) made for `kid`.
    pub(crate) fn open(&self, kid: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, KekError> {
        let unseal = || KekError::Unseal { kid: kid.to_owned() };
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(unseal)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| unseal())?;
        if bytes.len() <= NONCE_LEN {
            return Err(unseal());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(kid);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| unseal())
    }
}

/// 32 random bytes for a new key, erased from memory when dropped.
fn random_key_bytes() -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    bytes
}

/// Makes a new name in `folder` durable (best effort: not every platform can sync a folder).
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Err(error) = std::fs::File::open(folder).and_then(|handle| handle.sync_all()) {
        tracing::debug!(%error, folder = %folder.display(), "cannot sync the key file's folder");
    }
    #[cfg(not(unix))]
    let _ = folder;
}

fn associated_data(kid: &str) -> Vec<u8> {
    format!("portcullis signing key {kid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_kid() {
        let kek = Kek::generate();
        let sealed = kek.seal("kid-1", b"secret scalar");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("secret"));
        assert_eq!(kek.open("kid-1", &sealed).expect("opens").as_slice(), b"secret scalar");
        assert!(matches!(kek.open("kid-2", &sealed), Err(KekError::Unseal { .. })), "bound to its kid");
        assert!(Kek::generate().open("kid-1", &sealed).is_err(), "another KEK");
        let mut tampered = sealed.clone();
        tampered.push('A');
        assert!(kek.open("kid-1", &tampered).is_err());
        assert!(kek.open("kid-1", "v1:").is_err());
        assert!(kek.open("kid-1", "v2:AAAA").is_err());
        assert_ne!(kek.seal("kid-1", b"x"), kek.seal("kid-1", b"x"), "fresh nonce each time");
    }

    #[test]
    fn base64_form() {
        assert!(Kek::from_base64(" AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").is_ok());
        assert!(matches!(Kek::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"), Err(KekError::Malformed)));
        assert!(matches!(Kek::from_base64("not base64!"), Err(KekError::Malformed)));
        assert_eq!(format!("{:?}", Kek::generate()), "Kek(<redacted>)");
    }

    #[cfg(unix)]
    #[test]
    fn dev_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/kek");
        let (first, created) = Kek::load_or_create_dev_file(&path).expect("created");
        assert!(created);
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, created) = Kek::load_or_create_dev_file(&path).expect("read back");
        assert!(!created);
        let sealed = first.seal("k", b"v");
        assert_eq!(second.open("k", &sealed).expect("same key").as_slice(), b"v");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("folder")).expect("list").collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind: {names:?}");
    }

    #[test]
    fn processes_creating_the_dev_file_at_once_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data/kek");
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Kek::load_or_create_dev_file(&path).expect("loads or creates"))
            })
            .collect();
        let keks: Vec<(Kek, bool)> = starts.into_iter().map(|start| start.join().expect("thread")).collect();
        assert_eq!(keks.iter().filter(|(_, created)| *created).count(), 1, "exactly one created it");
        let sealed = keks[0].0.seal("k", b"v");
        for (kek, _) in &keks {
            assert_eq!(kek.open("k", &sealed).expect("the same key").as_slice(), b"v");
        }
        assert_eq!(std::fs::read_dir(dir.path().join("data")).expect("list").count(), 1);
    }

    #[test]
    fn an_empty_dev_file_is_refused_with_a_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek");
        std::fs::write(&path, "").expect("write");
        let error = Kek::load_or_create_dev_file(&path).expect_err("refused").to_string();
        assert!(error.contains("not a key") && error.contains("kek"), "{error}");
    }
}
