//! The issuer's configuration: a TOML file and `PORTCULLIS_*` environment variables (the
//! environment wins), parsed and validated once at start. A bad value stops the start with a
//! message that names the setting, where it came from, and the rule it broke.

use crate::domain::address::Cidr;
use crate::domain::kek::Kek;
use crate::domain::keys::RotationPolicy;
pub use crate::domain::secrets::PasswordHashing;
use crate::domain::sessions::SessionPolicy;
use crate::domain::sessions::limits::LoginLimits;
use crate::domain::signin::SignInPolicy;
use crate::duration::{parse_duration, show};
use crate::store::Backend;
use jwks::ClaimsOptions;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of every environment variable the issuer reads.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// The environment variable that holds the key-encryption key (base64, 32 bytes). It is never
/// read from the configuration file.
pub const KEK_ENV: &str = "PORTCULLIS_KEK";

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    /// The issuer identifier, `iss` of every token: an `https` URL (or `http` on a loopback host),
    /// without query, fragment or trailing slash. Default `http://127.0.0.1:8080`.
    pub issuer: String,
    /// The audiences tokens may be minted for. Default `["api"]`.
    pub audiences: Vec<String>,
    /// The audience an admin token must carry to use `/admin/*`. Default: the issuer URL.
    pub admin_audience: String,
    /// The lifetime of access tokens, and the longest the issuer ever signs. Default 5 minutes.
    pub access_token_ttl: Duration,
    /// `Cache-Control: max-age` of the JWKS and the discovery document. Default 5 minutes.
    pub jwks_max_age: Duration,
    /// How long a key signs before the next one takes over. Default 1 day.
    pub rotation_period: Duration,
    /// How long a new key is published before it signs. At least `jwks_max_age` (the default).
    pub publish_lead: Duration,
    /// How often each `serve` process applies due rotation steps and re-reads the key set; a new
    /// key waits twice this on top of `publish_lead` before it signs. 1 s to 1 m; default 5 s.
    pub replica_sync: Duration,
    /// How long a key stays published after it stopped signing. At least `access_token_ttl` plus
    /// `leeway` (the default).
    pub retire_delay: Duration,
    /// Clock difference allowed when checking tokens (admin tokens here). Default 60 s.
    pub leeway: Duration,
    /// The address `serve` listens on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// Where `/metrics` is served: on a listener of its own at this address (for a port that
    /// only the monitoring network reaches), or, unset (the default), on `bind` with the API.
    pub metrics_bind: Option<SocketAddr>,
    /// The proxies (CIDR blocks) whose `X-Forwarded-For` and `Forwarded` headers say which
    /// client a request comes from (see [`client_address`](crate::domain::address::client_address)).
    /// Default none: the TCP peer is the client.
    pub trusted_proxies: Vec<Cidr>,
    /// The folder for the SQLite database and the development key file. Default `data`.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`. Default `sqlite://<data_dir>/issuer.db?mode=rwc`.
    pub database_url: String,
    /// Where the key-encryption key comes from.
    pub kek: KekSource,
    /// Log output: human-readable text or JSON lines. Default text.
    pub log_format: LogFormat,
    /// Whether anyone may create an account with `POST /users` (an admin always may). Default closed.
    pub registration: Registration,
    /// A refresh token unused for this long expires (each rotation restarts it). Default 14 days.
    pub refresh_idle_timeout: Duration,
    /// No refresh token of a login outlives this, however often it is rotated. At least
    /// `refresh_idle_timeout`; default 30 days.
    pub refresh_max_lifetime: Duration,
    /// How long a spent refresh token may still be rotated (a client that lost the answer) before
    /// its reuse revokes the family. Default 0: never. At most 1 minute.
    pub refresh_reuse_grace: Duration,
    /// Failed password logins to one account from one client address (an IPv6 /64) within
    /// `login_failure_window` after which that address is refused for that account with `429`.
    /// Default 5.
    pub login_max_failures: u32,
    /// Failed password logins from one client address, to any accounts, within
    /// `login_failure_window` after which that address is refused with `429`. Default 50.
    pub login_max_failures_per_address: u32,
    /// Open registrations (`POST /users` without an admin token) from one client address within
    /// `login_failure_window` after which that address is refused with `429`, each attempt
    /// counted, taken or not. Default 10.
    pub registration_max_per_address: u32,
    /// The window failed logins are counted in. Default 15 minutes.
    pub login_failure_window: Duration,
    /// The longest a login to an account failing from many addresses waits before its password is
    /// checked (it is never refused for that). 0s to 5s; default 3s.
    pub login_max_delay: Duration,
    /// The cost of password hashes.
    pub password_hashing: PasswordHashing,
    /// `Cache-Control: max-age` of `GET /revoked`. At most `access_token_ttl`; default 30 s (or
    /// `access_token_ttl` if shorter).
    pub revoked_max_age: Duration,
    /// A browser session (the issuer's own, for single sign-on) unused this long ends: 1m to 1d,
    /// default 1h.
    pub session_idle_timeout: Duration,
    /// No browser session outlives this, counted from its login: at least
    /// `session_idle_timeout`, at most 30d, default 10h.
    pub session_max_lifetime: Duration,
    /// The SMTP server that sends sign-in links (`smtp://` or `smtps://`, lettre's syntax); unset:
    /// they are written to the development outbox, `data_dir/outbox`.
    pub smtp_url: Option<String>,
    /// The sender of sign-in links; default `Portcullis <portcullis@localhost>`.
    pub mail_from: String,
    /// What loading noticed and ignored, for the caller to log once logging is set up.
    warnings: Vec<ConfigWarning>,
}

/// Something the configuration ignored, without refusing the start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigWarning {
    /// A `PORTCULLIS_*` environment variable that names no setting. It is not refused: the
    /// project's own tools share the prefix (`PORTCULLIS_TOOLS`, `PORTCULLIS_TEST_POSTGRES`,
    /// ...), and the issuer starts from such environments. Unknown keys in the configuration
    /// file are still refused.
    #[error("ignoring the environment variable {name}: it names no setting (a typo?): {known}")]
    UnknownEnv {
        /// The variable's name (its value is not repeated: it may be a secret).
        name: String,
        /// The settings there are, as the parser lists them.
        known: String,
    },
    /// Password hashes cheaper than every configuration OWASP recommends: for tests only.
    #[error(
        "password_hash_memory = {memory_kib} KiB with password_hash_iterations = {iterations} is below OWASP's \
         recommendation (19456 KiB with 2 iterations, or an equivalent): use it for tests only"
    )]
    WeakPasswordHashing {
        /// Memory, KiB.
        memory_kib: u32,
        /// Iterations.
        iterations: u32,
    },
}

/// Whether `POST /users` is open to anyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may create an account (without roles).
    Open,
    /// Only an admin may create accounts.
    Closed,
}

/// Where the key-encryption key (KEK) comes from.
#[derive(Clone, Debug)]
pub enum KekSource {
    /// Given in `PORTCULLIS_KEK`.
    Env(Kek),
    /// Read from the file named by `kek_file`.
    File(PathBuf),
    /// Neither was given: a development key file in the data folder, created on first use with
    /// mode 0600.
    DevFile(PathBuf),
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Debug for Config {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Config")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("admin_audience", &self.admin_audience)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("rotation_period", &self.rotation_period)
            .field("publish_lead", &self.publish_lead)
            .field("replica_sync", &self.replica_sync)
            .field("retire_delay", &self.retire_delay)
            .field("leeway", &self.leeway)
            .field("bind", &self.bind)
            .field("metrics_bind", &self.metrics_bind)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.redacted_database_url())
            .field("kek", &self.kek)
            .field("log_format", &self.log_format)
            .field("registration", &self.registration)
            .field("refresh_idle_timeout", &self.refresh_idle_timeout)
            .field("refresh_max_lifetime", &self.refresh_max_lifetime)
            .field("refresh_reuse_grace", &self.refresh_reuse_grace)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_max_failures_per_address", &self.login_max_failures_per_address)
            .field("registration_max_per_address", &self.registration_max_per_address)
            .field("login_failure_window", &self.login_failure_window)
            .field("login_max_delay", &self.login_max_delay)
            .field("password_hashing", &self.password_hashing)
            .field("revoked_max_age", &self.revoked_max_age)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_max_lifetime", &self.session_max_lifetime)
            .field("smtp_url", &self.smtp_url.as_deref().map(crate::store::redact_url))
            .field("mail_from", &self.mail_from)
            .finish()
    }
}

impl Config {
    /// Reads the optional TOML file, overlays the `PORTCULLIS_*` variables of `env`, and
    /// validates the result. `env` is passed in (usually `std::env::vars()`) so that tests need
    /// not touch the process environment.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut raw = Raw::default();
        if let Some(path) = file {
            raw.read_file(path)?;
        }
        let mut warnings = raw.read_env(env)?;
        let config = raw.validate()?;
        let PasswordHashing { memory_kib, iterations } = config.password_hashing;
        if !config.password_hashing.meets_owasp() {
            warnings.push(ConfigWarning::WeakPasswordHashing { memory_kib, iterations });
        }
        Ok(Config { warnings, ..config })
    }

    /// What [`load`](Self::load) ignored: to be logged as warnings.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// `database_url` as logs and errors may show it: scheme, host and port, and the database
    /// name or file; never credentials or the query (see [`redact_url`](crate::store::redact_url)).
    pub fn redacted_database_url(&self) -> String {
        crate::store::redact_url(&self.database_url)
    }

    /// The URL of the JWKS, as the discovery document names it.
    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.issuer)
    }

    /// The rotation rules these settings describe.
    pub fn rotation_policy(&self) -> RotationPolicy {
        RotationPolicy {
            rotation_period: self.rotation_period,
            publish_lead: self.publish_lead,
            retire_delay: self.retire_delay,
            replica_sync: self.replica_sync,
        }
    }

    /// The refresh-token lifetimes and login limits these settings describe.
    pub fn session_policy(&self) -> SessionPolicy {
        SessionPolicy {
            idle_timeout: self.refresh_idle_timeout,
            max_lifetime: self.refresh_max_lifetime,
            reuse_grace: self.refresh_reuse_grace,
            login: LoginLimits {
                max_failures: self.login_max_failures,
                max_address_failures: self.login_max_failures_per_address,
                max_registrations: self.registration_max_per_address,
                window: self.login_failure_window,
                max_delay: self.login_max_delay,
            },
            access_token_lifetime: self.access_token_ttl + self.leeway,
        }
    }

    /// The browser session lifetimes these settings describe.
    pub fn sign_in_policy(&self) -> SignInPolicy {
        SignInPolicy { idle_timeout: self.session_idle_timeout, max_lifetime: self.session_max_lifetime }
    }

    /// Where sign-in links are written when no `smtp_url` is set.
    pub fn outbox(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// How the issuer checks its own ID tokens for `client_id` (an `id_token_hint`): `typ` JWT,
    /// `aud` the client.
    pub fn id_token_claims(&self, client_id: &str) -> ClaimsOptions {
        ClaimsOptions::new(self.issuer.clone(), [client_id])
            .with_token_type(crate::domain::tokens::ID_TOKEN_TYPE)
            .with_leeway(self.leeway.as_secs())
            .with_max_lifetime(self.access_token_ttl.as_secs())
    }

    /// How the issuer checks admin tokens: its own issuer, the admin audience.
    pub fn admin_claims(&self) -> ClaimsOptions {
        ClaimsOptions::new(self.issuer.clone(), [self.admin_audience.clone()])
            .with_leeway(self.leeway.as_secs())
            .with_max_lifetime(self.access_token_ttl.as_secs())
    }

    /// How the issuer checks the access tokens it accepts (`/userinfo`, logout, revocation): any
    /// configured audience or the admin audience.
    pub fn access_claims(&self) -> ClaimsOptions {
        let mut claims = self.admin_claims();
        claims.audiences = self.audiences.iter().chain([&self.admin_audience]).cloned().collect();
        claims
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key in the configuration file that names no setting (a typo, most likely).
    #[error("unknown setting `{name}` in {origin}: {known}")]
    Unknown {
        /// The name as written.
        name: String,
        /// The file.
        origin: String,
        /// The settings there are, as the parser lists them.
        known: String,
    },
    /// A setting with a value that breaks a rule.
    #[error("invalid setting `{setting}` ({origin}): {rule}")]
    Invalid {
        /// The setting's name.
        setting: String,
        /// Where the value came from.
        origin: String,
        /// The rule it broke, with the value when it is not secret.
        rule: String,
    },
}

impl ConfigError {
    fn invalid(setting: &str, origin: Origin, rule: impl Into<String>) -> Self {
        Self::Invalid { setting: setting.to_owned(), origin: origin.describe(setting), rule: rule.into() }
    }
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Env,
}

impl Origin {
    fn describe(self, setting: &str) -> String {
        match self {
            Self::Default => "default".to_owned(),
            Self::File => "from the configuration file".to_owned(),
            Self::Env => format!("from {ENV_PREFIX}{}", setting.to_ascii_uppercase()),
        }
    }
}

/// A duration setting, or its default.
fn seconds(value: Option<Seconds>, default: Duration) -> Duration {
    value.map_or(default, |Seconds(value)| value)
}

/// A text setting, trimmed, or its default.
fn text(value: Option<String>, default: &str) -> String {
    value.map_or_else(|| default.to_owned(), |text| text.trim().to_owned())
}

/// The token and key settings, validated.
struct TokenSettings {
    issuer: String,
    audiences: Vec<String>,
    admin_audience: String,
    access_token_ttl: Duration,
    leeway: Duration,
    jwks_max_age: Duration,
    publish_lead: Duration,
    replica_sync: Duration,
    retire_delay: Duration,
    rotation_period: Duration,
}

/// The listener and storage settings, validated.
struct StorageSettings {
    bind: SocketAddr,
    metrics_bind: Option<SocketAddr>,
    trusted_proxies: Vec<Cidr>,
    data_dir: PathBuf,
    database_url: String,
    kek: KekSource,
}

/// The account and session settings, validated.
struct SessionSettings {
    refresh_idle_timeout: Duration,
    refresh_max_lifetime: Duration,
    refresh_reuse_grace: Duration,
    login_max_failures: u32,
    login_max_failures_per_address: u32,
    registration_max_per_address: u32,
    login_failure_window: Duration,
    login_max_delay: Duration,
    password_hashing: PasswordHashing,
    revoked_max_age: Duration,
}

/// The browser sign-in settings, validated.
struct SignInSettings {
    session_idle_timeout: Duration,
    session_max_lifetime: Duration,
    smtp_url: Option<String>,
    mail_from: String,
}

/// The settings as written, every one optional: deserialized from the configuration file, and
/// from the environment (each variable a string). Unknown names are refused by serde.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    issuer: Option<String>,
    audiences: Option<List>,
    admin_audience: Option<String>,
    access_token_ttl: Option<Seconds>,
    jwks_max_age: Option<Seconds>,
    rotation_period: Option<Seconds>,
    publish_lead: Option<Seconds>,
    replica_sync: Option<Seconds>,
    retire_delay: Option<Seconds>,
    leeway: Option<Seconds>,
    bind: Option<String>,
    metrics_bind: Option<String>,
    trusted_proxies: Option<List>,
    data_dir: Option<String>,
    database_url: Option<String>,
    kek_file: Option<String>,
    log_format: Option<LogFormat>,
    registration: Option<Registration>,
    refresh_idle_timeout: Option<Seconds>,
    refresh_max_lifetime: Option<Seconds>,
    refresh_reuse_grace: Option<Seconds>,
    login_max_failures: Option<Whole>,
    login_max_failures_per_address: Option<Whole>,
    registration_max_per_address: Option<Whole>,
    login_failure_window: Option<Seconds>,
    login_max_delay: Option<Seconds>,
    password_hash_memory: Option<Whole>,
    password_hash_iterations: Option<Whole>,
    revoked_max_age: Option<Seconds>,
    session_idle_timeout: Option<Seconds>,
    session_max_lifetime: Option<Seconds>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
}

/// A duration: a whole number of seconds, or a string such as `"5m"` (see [`parse_duration`]).
#[derive(Clone, Copy, Debug)]
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a duration such as \"5m\"")
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Seconds, E> {
                u64::try_from(secs)
                    .map(|secs| Seconds(Duration::from_secs(secs)))
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(secs)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Seconds, E> {
                parse_duration(text).map(Seconds).ok_or_else(|| {
                    E::custom(format!("{text:?} is not a duration (a whole number with s, m, h or d, e.g. \"5m\")"))
                })
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

/// A whole number, written as a number or as a string (the environment's form).
#[derive(Clone, Copy, Debug)]
struct Whole(i128);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeVisitor;
        impl Visitor<'_> for WholeVisitor {
            type Value = Whole;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Whole, E> {
                Ok(Whole(i128::from(value)))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Whole, E> {
                Ok(Whole(i128::from(value)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Whole, E> {
                text.trim().parse().map(Whole).map_err(|_| E::custom(format!("{text:?} is not a whole number")))
            }
        }
        deserializer.deserialize_any(WholeVisitor)
    }
}

/// A list of strings, written as a TOML array or as one comma-separated string.
#[derive(Clone, Debug)]
struct List(Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = List;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of strings")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<List, E> {
                Ok(List(text.split(',').map(|item| item.trim().to_owned()).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<List, A::Error> {
                let mut list = Vec::new();
                while let Some(item) =
                    items.next_element::<String>().map_err(|_| de::Error::custom("must be a list of strings"))?
                {
                    list.push(item);
                }
                Ok(List(list))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// The settings as given, with where each came from.
#[derive(Default)]
struct Raw {
    values: toml::Table,
    origins: BTreeMap<String, Origin>,
    kek: Option<String>,
}

/// What a one-setting table says when it does not deserialize: an unknown name (with the list
/// of known ones, as serde gives it) or a value that breaks the setting's type.
enum Refusal {
    Unknown(String),
    Invalid(String),
}

/// Checks one setting on its own, so that an error names it and where it came from.
fn check_one(name: &str, value: &toml::Value) -> Result<(), Refusal> {
    let table = toml::Table::from_iter([(name.to_owned(), value.clone())]);
    match table.try_into::<Settings>() {
        Ok(_) => Ok(()),
        Err(error) if error.message().starts_with("unknown field") => Err(Refusal::Unknown(error.message().to_owned())),
        Err(error) => Err(Refusal::Invalid(error.message().trim().to_owned())),
    }
}

impl Raw {
    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|error| ConfigError::Toml { path: path.to_owned(), message: error.to_string() })?;
        for (name, value) in table {
            if name == "kek" {
                return Err(ConfigError::Invalid {
                    setting: "kek".to_owned(),
                    origin: "from the configuration file".to_owned(),
                    rule: format!("a key must not be kept in the configuration file; set {KEK_ENV} or `kek_file`"),
                });
            }
            match check_one(&name, &value) {
                Ok(()) => self.set(name, Origin::File, value),
                Err(Refusal::Unknown(known)) => {
                    return Err(ConfigError::Unknown { name, origin: path.display().to_string(), known });
                }
                Err(Refusal::Invalid(rule)) => return Err(ConfigError::invalid(&name, Origin::File, rule)),
            }
        }
        Ok(())
    }

    /// Takes the `PORTCULLIS_*` settings of `env`; returns a warning for each other
    /// `PORTCULLIS_*` variable, which is ignored.
    fn read_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = Vec::new();
        for (name, value) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else { continue };
            if name == KEK_ENV {
                self.kek = Some(value);
                continue;
            }
            // PORTCULLIS_CONFIG names the file itself and is read by the command line.
            if suffix == "CONFIG" {
                continue;
            }
            let setting = suffix.to_ascii_lowercase();
            let value = toml::Value::String(value.trim().to_owned());
            match check_one(&setting, &value) {
                Ok(()) => self.set(setting, Origin::Env, value),
                Err(Refusal::Unknown(known)) => warnings.push(ConfigWarning::UnknownEnv { name, known }),
                Err(Refusal::Invalid(rule)) => return Err(ConfigError::invalid(&setting, Origin::Env, rule)),
            }
        }
        Ok(warnings)
    }

    fn set(&mut self, name: String, origin: Origin, value: toml::Value) {
        self.origins.insert(name.clone(), origin);
        self.values.insert(name, value);
    }

    fn origin(&self, setting: &str) -> Origin {
        self.origins.get(setting).copied().unwrap_or(Origin::Default)
    }

    /// The typed settings with their defaults, checked against each other.
    fn validate(self) -> Result<Config, ConfigError> {
        let mut settings: Settings =
            self.values.clone().try_into().map_err(|error: toml::de::Error| ConfigError::Invalid {
                setting: "?".to_owned(),
                origin: "combined".to_owned(),
                rule: error.message().to_owned(),
            })?;
        let sign_in = self.sign_in(&settings)?;
        let TokenSettings {
            issuer,
            audiences,
            admin_audience,
            access_token_ttl,
            leeway,
            jwks_max_age,
            publish_lead,
            replica_sync,
            retire_delay,
            rotation_period,
        } = self.tokens_and_keys(&mut settings)?;
        let StorageSettings { bind, metrics_bind, trusted_proxies, data_dir, database_url, kek } =
            self.listeners_and_storage(&mut settings)?;
        let SessionSettings {
            refresh_idle_timeout,
            refresh_max_lifetime,
            refresh_reuse_grace,
            login_max_failures,
            login_max_failures_per_address,
            registration_max_per_address,
            login_failure_window,
            login_max_delay,
            password_hashing,
            revoked_max_age,
        } = self.accounts_and_sessions(&mut settings, access_token_ttl)?;
        Ok(Config {
            issuer,
            audiences,
            admin_audience,
            access_token_ttl,
            jwks_max_age,
            rotation_period,
            publish_lead,
            replica_sync,
            retire_delay,
            leeway,
            bind,
            metrics_bind,
            trusted_proxies,
            data_dir,
            database_url,
            kek,
            log_format: settings.log_format.take().unwrap_or(LogFormat::Text),
            registration: settings.registration.take().unwrap_or(Registration::Closed),
            refresh_idle_timeout,
            refresh_max_lifetime,
            refresh_reuse_grace,
            login_max_failures,
            login_max_failures_per_address,
            registration_max_per_address,
            login_failure_window,
            login_max_delay,
            password_hashing,
            revoked_max_age,
            session_idle_timeout: sign_in.session_idle_timeout,
            session_max_lifetime: sign_in.session_max_lifetime,
            smtp_url: sign_in.smtp_url,
            mail_from: sign_in.mail_from,
            warnings: Vec::new(),
        })
    }

    /// The token and key settings: who the issuer is, for whom it signs, and when keys change.
    fn tokens_and_keys(&self, settings: &mut Settings) -> Result<TokenSettings, ConfigError> {
        let issuer = text(settings.issuer.take(), "http://127.0.0.1:8080");
        check_issuer(&issuer).map_err(|rule| ConfigError::invalid("issuer", self.origin("issuer"), rule))?;

        let audiences = settings.audiences.take().map_or_else(|| vec!["api".to_owned()], |List(items)| items);
        if audiences.is_empty() {
            return Err(ConfigError::invalid("audiences", self.origin("audiences"), "must name at least one audience"));
        }
        for (index, audience) in audiences.iter().enumerate() {
            check_identifier(audience)
                .map_err(|rule| ConfigError::invalid("audiences", self.origin("audiences"), rule))?;
            if audiences[..index].contains(audience) {
                let rule = format!("{audience:?} is listed twice");
                return Err(ConfigError::invalid("audiences", self.origin("audiences"), rule));
            }
        }
        let admin_audience = text(settings.admin_audience.take(), &issuer);
        check_identifier(&admin_audience)
            .map_err(|rule| ConfigError::invalid("admin_audience", self.origin("admin_audience"), rule))?;

        let access_token_ttl = seconds(settings.access_token_ttl.take(), Duration::from_secs(5 * 60));
        within("access_token_ttl", self.origin("access_token_ttl"), access_token_ttl, Duration::from_secs(1), HOUR)?;
        let leeway = seconds(settings.leeway.take(), Duration::from_secs(60));
        within("leeway", self.origin("leeway"), leeway, Duration::ZERO, Duration::from_secs(5 * 60))?;
        let jwks_max_age = seconds(settings.jwks_max_age.take(), Duration::from_secs(5 * 60));
        within("jwks_max_age", self.origin("jwks_max_age"), jwks_max_age, Duration::ZERO, DAY)?;
        let publish_lead = seconds(settings.publish_lead.take(), jwks_max_age);
        let why = " so that every verifier has a key before it signs";
        let floor = ("jwks_max_age", jwks_max_age);
        at_least("publish_lead", self.origin("publish_lead"), publish_lead, floor, 7 * DAY, why)?;
        let replica_sync = seconds(settings.replica_sync.take(), crate::domain::keys::REPLICA_SYNC);
        let (one_second, one_minute) = (Duration::from_secs(1), Duration::from_secs(60));
        within("replica_sync", self.origin("replica_sync"), replica_sync, one_second, one_minute)?;
        let longest_token = access_token_ttl + leeway;
        let retire_delay = seconds(settings.retire_delay.take(), longest_token);
        let why = " so that no key leaves the JWKS before the tokens it signed expire";
        let floor = ("access_token_ttl + leeway", longest_token);
        at_least("retire_delay", self.origin("retire_delay"), retire_delay, floor, 30 * DAY, why)?;
        let rotation_period = seconds(settings.rotation_period.take(), DAY);
        let floor = ("publish_lead and at least 1m", publish_lead.max(one_minute));
        at_least("rotation_period", self.origin("rotation_period"), rotation_period, floor, 365 * DAY, "")?;
        Ok(TokenSettings {
            issuer,
            audiences,
            admin_audience,
            access_token_ttl,
            leeway,
            jwks_max_age,
            publish_lead,
            replica_sync,
            retire_delay,
            rotation_period,
        })
    }

    /// Where the issuer listens and keeps its data and its key-encryption key.
    fn listeners_and_storage(&self, settings: &mut Settings) -> Result<StorageSettings, ConfigError> {
        let bind = text(settings.bind.take(), "127.0.0.1:8080");
        let bind: SocketAddr = bind.parse().map_err(|_| {
            let rule = format!("{bind:?} is not an address and port such as 127.0.0.1:8080");
            ConfigError::invalid("bind", self.origin("bind"), rule)
        })?;

        let metrics_bind = match settings.metrics_bind.take().map(|text| text.trim().to_owned()) {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                let rule = format!("{text:?} is not an address and port such as 127.0.0.1:9090");
                ConfigError::invalid("metrics_bind", self.origin("metrics_bind"), rule)
            })?),
        };
        if metrics_bind == Some(bind) {
            let rule = "must differ from `bind` (leave it unset to serve /metrics there)";
            return Err(ConfigError::invalid("metrics_bind", self.origin("metrics_bind"), rule));
        }

        let trusted_proxies = settings
            .trusted_proxies
            .take()
            .map_or_else(Vec::new, |List(items)| items)
            .iter()
            .map(|block| block.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                ConfigError::invalid("trusted_proxies", self.origin("trusted_proxies"), error.to_string())
            })?;

        let data_dir = text(settings.data_dir.take(), "data");
        if data_dir.is_empty() {
            return Err(ConfigError::invalid("data_dir", self.origin("data_dir"), "must not be empty"));
        }
        let data_dir = PathBuf::from(data_dir);
        let database_url = match settings.database_url.take() {
            Some(url) => {
                let url = url.trim().to_owned();
                check_database_url(&url)
                    .map_err(|rule| ConfigError::invalid("database_url", self.origin("database_url"), rule))?;
                url
            }
            None => {
                let file = data_dir.join("issuer.db");
                let file = file
                    .to_str()
                    .ok_or_else(|| ConfigError::invalid("data_dir", self.origin("data_dir"), "must be UTF-8"))?;
                format!("sqlite://{file}?mode=rwc")
            }
        };

        let kek = match (&self.kek, settings.kek_file.take().map(|path| path.trim().to_owned())) {
            (Some(value), _) => KekSource::Env(Kek::from_base64(value).map_err(|error| ConfigError::Invalid {
                setting: "kek".to_owned(),
                origin: format!("from {KEK_ENV}"),
                rule: error.to_string(),
            })?),
            (None, Some(path)) if path.is_empty() => {
                return Err(ConfigError::invalid("kek_file", self.origin("kek_file"), "must not be empty"));
            }
            (None, Some(path)) => KekSource::File(PathBuf::from(path)),
            (None, None) => KekSource::DevFile(data_dir.join("kek")),
        };
        Ok(StorageSettings { bind, metrics_bind, trusted_proxies, data_dir, database_url, kek })
    }

    /// Refresh tokens, login limits, password hashing and the revocation list's cache time.
    fn accounts_and_sessions(
        &self,
        settings: &mut Settings,
        access_token_ttl: Duration,
    ) -> Result<SessionSettings, ConfigError> {
        let one_minute = Duration::from_secs(60);
        let one_second = Duration::from_secs(1);
        let refresh_idle_timeout = seconds(settings.refresh_idle_timeout.take(), 14 * DAY);
        let setting = "refresh_idle_timeout";
        within(setting, self.origin(setting), refresh_idle_timeout, one_minute, 365 * DAY)?;
        let refresh_max_lifetime = seconds(settings.refresh_max_lifetime.take(), 30 * DAY);
        let floor = ("refresh_idle_timeout", refresh_idle_timeout);
        let setting = "refresh_max_lifetime";
        at_least(setting, self.origin(setting), refresh_max_lifetime, floor, 365 * DAY, "")?;
        let refresh_reuse_grace = seconds(settings.refresh_reuse_grace.take(), Duration::ZERO);
        let setting = "refresh_reuse_grace";
        within(setting, self.origin(setting), refresh_reuse_grace, Duration::ZERO, one_minute)?;
        let login_max_failures = whole(self, "login_max_failures", settings.login_max_failures.take(), 5, 1, 1000)?;
        let setting = "login_max_failures_per_address";
        let login_max_failures_per_address =
            whole(self, setting, settings.login_max_failures_per_address.take(), 50, 1, 100_000)?;
        let setting = "registration_max_per_address";
        let registration_max_per_address =
            whole(self, setting, settings.registration_max_per_address.take(), 10, 1, 100_000)?;
        let login_failure_window = seconds(settings.login_failure_window.take(), Duration::from_secs(15 * 60));
        let setting = "login_failure_window";
        within(setting, self.origin(setting), login_failure_window, one_second, DAY)?;
        let login_max_delay = seconds(settings.login_max_delay.take(), Duration::from_secs(3));
        let setting = "login_max_delay";
        within(setting, self.origin(setting), login_max_delay, Duration::ZERO, Duration::from_secs(5))?;
        let memory_kib = whole(self, "password_hash_memory", settings.password_hash_memory.take(), 19_456, 8, 1 << 20)?;
        let iterations = whole(self, "password_hash_iterations", settings.password_hash_iterations.take(), 2, 1, 16)?;
        let revoked_max_age = seconds(settings.revoked_max_age.take(), Duration::from_secs(30).min(access_token_ttl));
        let ceiling = ("access_token_ttl", access_token_ttl);
        at_most("revoked_max_age", self.origin("revoked_max_age"), revoked_max_age, ceiling)?;
        Ok(SessionSettings {
            refresh_idle_timeout,
            refresh_max_lifetime,
            refresh_reuse_grace,
            login_max_failures,
            login_max_failures_per_address,
            registration_max_per_address,
            login_failure_window,
            login_max_delay,
            password_hashing: PasswordHashing { memory_kib, iterations },
            revoked_max_age,
        })
    }

    /// The browser sign-in settings: session lifetimes, and how sign-in links are sent.
    fn sign_in(&self, settings: &Settings) -> Result<SignInSettings, ConfigError> {
        let origin = |setting: &str| self.origin(setting);
        let session_idle_timeout = seconds(settings.session_idle_timeout, HOUR);
        let setting = "session_idle_timeout";
        within(setting, origin(setting), session_idle_timeout, Duration::from_secs(60), DAY)?;
        let session_max_lifetime = seconds(settings.session_max_lifetime, 10 * HOUR);
        let floor = ("session_idle_timeout", session_idle_timeout);
        let setting = "session_max_lifetime";
        at_least(setting, origin(setting), session_max_lifetime, floor, 30 * DAY, "")?;
        let smtp_url = settings.smtp_url.as_deref().map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned);
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            // Not the value: it may hold a password.
            return Err(ConfigError::invalid("smtp_url", origin("smtp_url"), "must be an smtp:// or smtps:// URL"));
        }
        let mail_from = settings.mail_from.as_deref().map_or("Portcullis <portcullis@localhost>", str::trim).to_owned();
        if mail_from.is_empty() || mail_from.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "mail_from",
                origin("mail_from"),
                "must be an address such as \"Name <a@b.example>\"",
            ));
        }
        Ok(SignInSettings { session_idle_timeout, session_max_lifetime, smtp_url, mail_from })
    }
}

/// A whole-number setting between `min` and `max`, `default` when not given.
fn whole(raw: &Raw, setting: &str, value: Option<Whole>, default: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    let Some(Whole(value)) = value else { return Ok(default) };
    match u32::try_from(value) {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(ConfigError::invalid(
            setting,
            raw.origin(setting),
            format!("must be between {min} and {max}; got {value}"),
        )),
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn within(setting: &str, origin: Origin, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            setting,
            origin,
            format!("must be between {} and {}; got {}", show(min), show(max), show(value)),
        ));
    }
    Ok(())
}

/// Like [`within`], for a minimum set by other settings: the message names them (`floor` is
/// their description and the value they give) and says `why`.
fn at_least(
    setting: &str,
    origin: Origin,
    value: Duration,
    floor: (&str, Duration),
    max: Duration,
    why: &str,
) -> Result<(), ConfigError> {
    let (floor_name, floor) = floor;
    if value < floor || value > max {
        return Err(ConfigError::invalid(
            setting,
            origin,
            format!(
                "must be at least {floor_name} ({}){why}, and at most {}; got {}",
                show(floor),
                show(max),
                show(value)
            ),
        ));
    }
    Ok(())
}

/// A duration bounded by another setting (`ceiling` names it and gives its value).
fn at_most(setting: &str, origin: Origin, value: Duration, ceiling: (&str, Duration)) -> Result<(), ConfigError> {
    let (ceiling_name, ceiling) = ceiling;
    if value > ceiling {
        return Err(ConfigError::invalid(
            setting,
            origin,
            format!("must be at most {ceiling_name} ({}); got {}", show(ceiling), show(value)),
        ));
    }
    Ok(())
}

fn check_issuer(issuer: &str) -> Result<(), String> {
    let parsed = url::Url::parse(issuer).map_err(|_| format!("{issuer:?} is not a URL"))?;
    // First, and without repeating the value: the credentials must not reach a message.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials (user or password)".to_owned());
    }
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(format!("{issuer:?} must be an https URL (http only for localhost)")),
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or a fragment".to_owned());
    }
    if issuer.ends_with('/') {
        return Err(format!("{issuer:?} must not end with '/'"));
    }
    Ok(())
}

fn check_identifier(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 256 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{value:?} must be 1 to 256 characters without spaces"));
    }
    Ok(())
}

fn check_database_url(url: &str) -> Result<(), String> {
    match Backend::from_url(url) {
        Some(_) => Ok(()),
        None => Err(format!("must start with {}", Backend::SCHEMES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    fn load(file: Option<&str>, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("issuer.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write");
        }
        Config::load(file.map(|_| path.as_path()), env(pairs))
    }

    fn message(result: Result<Config, ConfigError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn defaults() {
        let config = load(None, &[]).expect("defaults are valid");
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.audiences, ["api"]);
        assert_eq!(config.admin_audience, config.issuer);
        assert_eq!(config.access_token_ttl, Duration::from_secs(300));
        assert_eq!(config.jwks_max_age, Duration::from_secs(300));
        assert_eq!(config.publish_lead, config.jwks_max_age);
        assert_eq!(config.replica_sync, Duration::from_secs(5));
        assert_eq!(config.retire_delay, Duration::from_secs(360));
        assert_eq!(config.leeway, Duration::from_secs(60));
        assert_eq!(config.rotation_period, DAY);
        assert_eq!(config.bind, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(config.metrics_bind, None);
        assert_eq!(config.database_url, "sqlite://data/issuer.db?mode=rwc");
        assert!(matches!(config.kek, KekSource::DevFile(ref path) if path == Path::new("data/kek")));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.registration, Registration::Closed);
        assert_eq!(config.refresh_idle_timeout, 14 * DAY);
        assert_eq!(config.refresh_max_lifetime, 30 * DAY);
        assert_eq!(config.refresh_reuse_grace, Duration::ZERO);
        assert_eq!(config.login_max_failures, 5);
        assert_eq!(config.login_max_failures_per_address, 50);
        assert_eq!(config.registration_max_per_address, 10);
        assert_eq!(config.login_failure_window, Duration::from_secs(900));
        assert_eq!(config.login_max_delay, Duration::from_secs(3));
        assert!(config.trusted_proxies.is_empty(), "the TCP peer is the client");
        assert_eq!(config.password_hashing, PasswordHashing { memory_kib: 19_456, iterations: 2 });
        assert!(config.password_hashing.meets_owasp());
        assert_eq!(config.revoked_max_age, Duration::from_secs(30));
    }

    #[test]
    fn cheap_password_hashes_start_with_a_warning() {
        let config = load(Some("password_hash_memory = 64\npassword_hash_iterations = 1"), &[]).expect("valid");
        assert_eq!(config.password_hashing, PasswordHashing { memory_kib: 64, iterations: 1 });
        assert_eq!(config.warnings(), [ConfigWarning::WeakPasswordHashing { memory_kib: 64, iterations: 1 }]);
        assert!(config.warnings()[0].to_string().contains("for tests only"));
        let equivalent =
            load(None, &[("PORTCULLIS_PASSWORD_HASH_MEMORY", "9216"), ("PORTCULLIS_PASSWORD_HASH_ITERATIONS", "4")]);
        assert!(equivalent.expect("valid").warnings().is_empty(), "an OWASP equivalent");
        let config = load(None, &[("PORTCULLIS_REGISTRATION", "open"), ("PORTCULLIS_LOGIN_MAX_FAILURES", "10")]);
        let config = config.expect("valid");
        assert_eq!((config.registration, config.login_max_failures), (Registration::Open, 10));
    }

    #[test]
    fn trusted_proxies_are_cidr_blocks_from_the_file_or_the_environment() {
        let config = load(Some("trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]"), &[]);
        let shown: Vec<String> = config.expect("valid").trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        let config = load(None, &[("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.1, ::1")]).expect("valid");
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(config.trusted_proxies[1].contains("::1".parse().expect("address")));
        let config = load(None, &[("PORTCULLIS_LOGIN_MAX_DELAY", "0s")]).expect("off is valid");
        assert_eq!(config.session_policy().login.max_delay, Duration::ZERO);
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("issuer.example.toml");
        let example = Config::load(Some(&path), env(&[])).expect("the example is valid");
        let defaults = load(None, &[]).expect("defaults");
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn file_then_env_and_env_wins() {
        let file = r#"
            issuer = "https://auth.example.com"
            audiences = ["api", "billing"]
            access_token_ttl = "10m"
            jwks_max_age = 120
            rotation_period = "7d"
        "#;
        let config = load(Some(file), &[("PORTCULLIS_ACCESS_TOKEN_TTL", "2m"), ("OTHER_VAR", "x")]).expect("valid");
        assert_eq!(config.issuer, "https://auth.example.com");
        assert_eq!(config.audiences, ["api", "billing"]);
        assert_eq!(config.access_token_ttl, Duration::from_secs(120));
        assert_eq!(config.jwks_max_age, Duration::from_secs(120));
        assert_eq!(config.publish_lead, Duration::from_secs(120), "defaults to jwks_max_age");
        assert_eq!(config.retire_delay, Duration::from_secs(180), "defaults to ttl + leeway");
        assert_eq!(config.rotation_period, 7 * DAY);
        let config = load(None, &[("PORTCULLIS_AUDIENCES", "a, b")]).expect("valid");
        assert_eq!(config.audiences, ["a", "b"]);
    }

    #[test]
    fn refusals_name_the_setting_and_the_rule() {
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (None, &[("PORTCULLIS_ISSUER", "http://auth.example.com")], "`issuer` (from PORTCULLIS_ISSUER): "),
            (None, &[("PORTCULLIS_ISSUER", "https://auth.example.com/")], "must not end with '/'"),
            (None, &[("PORTCULLIS_ISSUER", "https://a.example?x=1")], "query"),
            (
                None,
                &[("PORTCULLIS_ACCESS_TOKEN_TTL", "2h")],
                "`access_token_ttl` (from PORTCULLIS_ACCESS_TOKEN_TTL): must be between 1s and 1h; got 2h",
            ),
            (None, &[("PORTCULLIS_ACCESS_TOKEN_TTL", "5 minutes")], "is not a duration"),
            (
                None,
                &[("PORTCULLIS_SESSION_IDLE_TIMEOUT", "10s")],
                "`session_idle_timeout` (from PORTCULLIS_SESSION_IDLE_TIMEOUT)",
            ),
            (
                None,
                &[("PORTCULLIS_SESSION_IDLE_TIMEOUT", "2h"), ("PORTCULLIS_SESSION_MAX_LIFETIME", "1h")],
                "must be at least session_idle_timeout (2h)",
            ),
            (
                None,
                &[("PORTCULLIS_SMTP_URL", "http://user:hunter2@mail.example")],
                "`smtp_url` (from PORTCULLIS_SMTP_URL): must be an smtp:// or smtps:// URL",
            ),
            (Some("mail_from = \"\""), &[], "`mail_from` (from the configuration file)"),
            (Some("leeway = -1"), &[], "`leeway` (from the configuration file): must not be negative"),
            (
                None,
                &[("PORTCULLIS_PUBLISH_LEAD", "1m")],
                "`publish_lead` (from PORTCULLIS_PUBLISH_LEAD): must be at least jwks_max_age (5m)",
            ),
            (None, &[("PORTCULLIS_RETIRE_DELAY", "5m")], "must be at least access_token_ttl + leeway (6m)"),
            (
                None,
                &[("PORTCULLIS_ROTATION_PERIOD", "1m")],
                "`rotation_period` (from PORTCULLIS_ROTATION_PERIOD): must be at least publish_lead",
            ),
            (
                None,
                &[("PORTCULLIS_REPLICA_SYNC", "0s")],
                "`replica_sync` (from PORTCULLIS_REPLICA_SYNC): must be between 1s and 1m",
            ),
            (None, &[("PORTCULLIS_AUDIENCES", "api,api")], "listed twice"),
            (None, &[("PORTCULLIS_AUDIENCES", "api,")], "`audiences`"),
            (Some("audiences = [1]"), &[], "must be a list of strings"),
            (None, &[("PORTCULLIS_BIND", "localhost")], "`bind`"),
            (None, &[("PORTCULLIS_METRICS_BIND", "9090")], "`metrics_bind` (from PORTCULLIS_METRICS_BIND): "),
            (None, &[("PORTCULLIS_METRICS_BIND", "127.0.0.1:8080")], "must differ from `bind`"),
            (None, &[("PORTCULLIS_DATABASE_URL", "mysql://x")], "`database_url`"),
            (None, &[("PORTCULLIS_LOG_FORMAT", "xml")], "`log_format`"),
            (None, &[("PORTCULLIS_KEK", "c2hvcnQ=")], "`kek` (from PORTCULLIS_KEK)"),
            (Some("isuer = \"https://a.example\""), &[], "unknown setting `isuer`"),
            (Some("kek = \"abc\""), &[], "must not be kept in the configuration file"),
            (Some("issuer = "), &[], "not valid TOML"),
            (None, &[("PORTCULLIS_REGISTRATION", "maybe")], "`registration` (from PORTCULLIS_REGISTRATION)"),
            (None, &[("PORTCULLIS_REFRESH_IDLE_TIMEOUT", "10s")], "must be between 1m and 365d; got 10s"),
            (None, &[("PORTCULLIS_REFRESH_MAX_LIFETIME", "1d")], "must be at least refresh_idle_timeout (14d)"),
            (None, &[("PORTCULLIS_REFRESH_REUSE_GRACE", "2m")], "`refresh_reuse_grace`"),
            (None, &[("PORTCULLIS_LOGIN_MAX_FAILURES", "0")], "must be between 1 and 1000; got 0"),
            (
                None,
                &[("PORTCULLIS_LOGIN_MAX_FAILURES_PER_ADDRESS", "0")],
                "`login_max_failures_per_address` (from PORTCULLIS_LOGIN_MAX_FAILURES_PER_ADDRESS): must be between 1",
            ),
            (None, &[("PORTCULLIS_REGISTRATION_MAX_PER_ADDRESS", "0")], "`registration_max_per_address`"),
            (None, &[("PORTCULLIS_LOGIN_MAX_DELAY", "6s")], "`login_max_delay` (from PORTCULLIS_LOGIN_MAX_DELAY)"),
            (
                None,
                &[("PORTCULLIS_TRUSTED_PROXIES", "10.0.0.0/8, 10.1.2.3/16")],
                "`trusted_proxies` (from PORTCULLIS_TRUSTED_PROXIES): \"10.1.2.3/16\" has bits set after its prefix; \
                 the block is 10.1.0.0/16",
            ),
            (Some("trusted_proxies = [\"proxy.internal\"]"), &[], "is not an address or a CIDR block"),
            (Some("trusted_proxies = \"\""), &[], "`trusted_proxies` (from the configuration file)"),
            (Some("login_max_failures = \"many\""), &[], "is not a whole number"),
            (Some("login_max_failures = 1.5"), &[], "expected a whole number"),
            (None, &[("PORTCULLIS_PASSWORD_HASH_MEMORY", "4")], "`password_hash_memory`"),
            (None, &[("PORTCULLIS_PASSWORD_HASH_ITERATIONS", "99")], "must be between 1 and 16"),
            (None, &[("PORTCULLIS_REVOKED_MAX_AGE", "1h")], "must be at most access_token_ttl (5m); got 1h"),
        ];
        for (file, pairs, expected) in cases {
            let got = message(load(*file, pairs));
            assert!(got.contains(expected), "{file:?} {pairs:?}: {got}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let secret = "c2VjcmV0LXBhc3N3b3JkLXdpdGgtdGhpcnR5LXR3by1ieXRlcw==";
        let config = load(
            None,
            &[
                ("PORTCULLIS_KEK", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
                ("PORTCULLIS_DATABASE_URL", "postgres://u:hunter2@db/issuer"),
            ],
        )
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("AAECAwQF"), "{shown}");
        assert_eq!(config.redacted_database_url(), "postgres://db/issuer");
        let config =
            load(None, &[("PORTCULLIS_DATABASE_URL", "postgres://db/issuer?password=hunter2")]).expect("valid");
        assert_eq!(config.redacted_database_url(), "postgres://db/issuer");
        assert!(!format!("{config:?}").contains("hunter2"));
        let refused = message(load(None, &[("PORTCULLIS_KEK", secret)]));
        assert!(!refused.contains(secret), "{refused}");
        for issuer in ["https://admin:hunter2@auth.example.com", "http://admin:hunter2@auth.example.com"] {
            let refused = message(load(None, &[("PORTCULLIS_ISSUER", issuer)]));
            assert!(refused.contains("must not carry credentials") && !refused.contains("hunter2"), "{refused}");
        }
    }

    #[test]
    fn unknown_environment_variables_are_warnings() {
        let config = load(
            None,
            &[
                ("PORTCULLIS_TOOLS", "/opt/tools"),
                ("PORTCULLIS_TEST_POSTGRES", "postgres://u:hunter2@db"),
                ("PORTCULLIS_TTL", "5m"),
                ("PORTCULLIS_ISSUER", "https://auth.example.com"),
            ],
        )
        .expect("unknown PORTCULLIS_* variables do not stop the start");
        assert_eq!(config.issuer, "https://auth.example.com", "known ones still apply");
        let names: Vec<String> = config
            .warnings()
            .iter()
            .filter_map(|warning| match warning {
                ConfigWarning::UnknownEnv { name, .. } => Some(name.clone()),
                ConfigWarning::WeakPasswordHashing { .. } => None,
            })
            .collect();
        assert_eq!(names, ["PORTCULLIS_TOOLS", "PORTCULLIS_TEST_POSTGRES", "PORTCULLIS_TTL"]);
        let shown = config.warnings()[1].to_string();
        assert!(shown.contains("PORTCULLIS_TEST_POSTGRES") && !shown.contains("hunter2"), "{shown}");
        assert!(load(None, &[]).expect("defaults").warnings().is_empty());
        // Bad values of known variables and unknown keys in the file are still refused.
        assert!(message(load(None, &[("PORTCULLIS_TOOLS", "x"), ("PORTCULLIS_LEEWAY", "soon")])).contains("`leeway`"));
        assert!(message(load(Some("tools = 1"), &[])).contains("unknown setting `tools`"));
    }
}
