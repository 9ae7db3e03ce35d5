//! The CLI: the commands and their arguments, and the code that only the binary uses. Each
//! command opens what it needs from the configuration `main` read, does its work, and closes
//! the database whatever the outcome.

pub(crate) mod bench;
mod clients;
pub(crate) mod edge_key;
mod keys;
mod serve;
mod users;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use issuer::AppState;
use issuer::clock::SystemClock;
use issuer::config::{Config, KekSource};
use issuer::domain::kek::Kek;
use issuer::domain::tokens::AccessTokenRequest;
use issuer::duration::parse_duration;
use issuer::metrics::DbEventRecorder;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Portcullis issuer: ES256 access tokens and a JWKS whose keys rotate on their own.
///
/// Settings come from the TOML file given with --config and from PORTCULLIS_* environment
/// variables, which win (e.g. PORTCULLIS_ISSUER, PORTCULLIS_DATABASE_URL, PORTCULLIS_KEK).
#[derive(Debug, Parser)]
#[command(name = "issuer", version)]
pub(crate) struct Cli {
    /// The TOML configuration file.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the JWKS, discovery and admin endpoints, and rotate keys on schedule.
    Serve,
    /// List, rotate or revoke signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Tokens for development and tests.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage user accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage service clients (client credentials).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Measures the token endpoint: argon2 cost, password and refresh grants per second, and
    /// refresh latency under concurrent clients (on a temporary SQLite database).
    #[command(hide = true)]
    BenchOauth {
        /// How long to measure each grant, in seconds.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Measure on this PostgreSQL database (e.g. `postgres://user@host/bench`; users are
        /// added to it) instead of a temporary SQLite file.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Measures ES256 access-token signatures per second on one core.
    #[command(hide = true)]
    BenchSign {
        /// How long to measure, in seconds.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Every key with its state and times.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rotate now: a next key published long enough takes over, or one is published and scheduled.
    Rotate,
    /// Emergency revocation: the key leaves the JWKS at once; an active key is replaced.
    Revoke {
        /// The key id. A kid is base64url, so it may begin with `-` (one in 64 does).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Print the edge's assertion key set (ASSERTION_KEYS): a new key, or a rotation step.
    ///
    /// One JSON line, private parts included, for `wrangler secret put ASSERTION_KEYS`: a set of
    /// one new key; with --add-to, that set with a new key appended (published, not signing); with
    /// --promote, the set of --in with that key first (it signs); with --drop, the set of --in
    /// without that key. The edge signs with the first key and publishes all of them at
    /// /_portcullis/jwks.json. Needs no configuration, database or KEK.
    NewEdgeKey(EdgeKeyArgs),
}

/// `keys new-edge-key`'s options: none, `--add-to`, or `--in` with `--promote` or `--drop`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("change").multiple(false).args(["add_to", "promote", "drop"])))]
pub(crate) struct EdgeKeyArgs {
    /// The current set (a file, or `-` for stdin): print it with a new key appended, published
    /// but not signing.
    #[arg(long, value_name = "FILE")]
    pub(crate) add_to: Option<PathBuf>,
    /// Print the set of --in with this key first: it signs from then on.
    #[arg(long, value_name = "KID", requires = "input", allow_hyphen_values = true)]
    pub(crate) promote: Option<String>,
    /// Print the set of --in without this key (not the signing one, never the last one).
    #[arg(long, value_name = "KID", requires = "input", allow_hyphen_values = true)]
    pub(crate) drop: Option<String>,
    /// The current set for --promote and --drop (a file, or `-` for stdin).
    #[arg(long = "in", value_name = "FILE", requires = "change", conflicts_with = "add_to")]
    pub(crate) input: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a user; the password is read from a prompt, or from the first line of stdin when
    /// it is not a terminal.
    Add {
        /// The email address.
        email: String,
        /// A role (repeat, or comma-separated).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Every user.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replace a user's roles (none clears them).
    SetRoles {
        /// The email address.
        email: String,
        /// A role (repeat, or comma-separated).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Disable a user and end every session of theirs.
    Disable {
        /// The email address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientsCommand {
    /// Register a client; prints its secret, once (a public client has none).
    Add {
        /// The client id.
        client_id: String,
        /// An audience of its service tokens (repeat); default: the first configured audience.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A role of its service tokens (repeat, or comma-separated).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
        /// Where `/authorize` may send a browser back to, matched exactly (repeat): https, or
        /// http on localhost, 127.0.0.1 or [::1].
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Where `/session/end` may send a browser back to after a logout, matched exactly (repeat).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (a single-page or native app): no secret, PKCE only, no service tokens.
        #[arg(long)]
        public: bool,
    },
    /// Every client.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a client (its access tokens live until they expire).
    Remove {
        /// The client id.
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print an access token signed by the active key.
    Mint {
        /// The subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Roles, comma-separated.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// An audience (repeat for several); default: the first configured audience.
        #[arg(long)]
        aud: Vec<String>,
        /// The lifetime, e.g. 5m; default and maximum: access_token_ttl.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// The `client_id` claim.
        #[arg(long, default_value = "issuer-cli")]
        client_id: String,
        /// The `scope` claim.
        #[arg(long)]
        scope: Option<String>,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration such as 90s or 5m"))
}

/// Whether a command may create the development KEK file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum KekFile {
    /// Create it if missing (`serve`, `keys rotate`, `token mint`).
    Create,
    /// Only read it (`keys revoke`).
    Existing,
}

pub(crate) fn load_kek(source: &KekSource, file: KekFile) -> anyhow::Result<Kek> {
    match source {
        KekSource::Env(kek) => Ok(kek.clone()),
        KekSource::File(path) => Kek::from_file(path).with_context(|| format!("kek_file {}", path.display())),
        KekSource::DevFile(path) if file == KekFile::Existing => Kek::from_file(path)
            .with_context(|| format!("the development key-encryption key {} (made by `issuer serve`)", path.display())),
        KekSource::DevFile(path) => {
            let (kek, created) = Kek::load_or_create_dev_file(path).context("development key-encryption key")?;
            let verb = if created { "created" } else { "using" };
            eprintln!(
                "issuer: {verb} the development key-encryption key {} (mode 0600); set PORTCULLIS_KEK or kek_file in production",
                path.display()
            );
            Ok(kek)
        }
    }
}

pub(crate) async fn run(command: Command, config: Config, recorder: DbEventRecorder) -> anyhow::Result<()> {
    match command {
        Command::Serve => closing(open(config).await?, async |state| serve::serve(state, &recorder).await).await,
        // Read-only: no database, folder, KEK file or key is created, and no rotation step runs.
        Command::Keys { command: KeysCommand::List { json } } => {
            let keys = issuer::list_keys(&config).await?;
            if json {
                return print_json(&serde_json::json!({ "keys": keys }));
            }
            keys::print_table(&keys);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate } => {
            closing(open(config).await?, async |state| print_json(&state.rotate_keys().await?)).await
        }
        // An existing issuer only: a missing or empty database is refused by the read-only
        // listing before the KEK is read, and nothing is created on opening.
        Command::Keys { command: KeysCommand::Revoke { kid } } => {
            issuer::list_keys(&config).await?;
            let kek = load_kek(&config.kek, KekFile::Existing)?;
            let state = AppState::open_existing(config, kek, Arc::new(SystemClock)).await?;
            closing(state, async |state| print_json(&state.revoke_key(&kid).await?)).await
        }
        Command::Token { command: TokenCommand::Mint { sub, roles, aud, ttl, client_id, scope } } => {
            let request =
                AccessTokenRequest { subject: sub, audiences: aud, roles, client_id, scope, ttl, service: false };
            closing(open(config).await?, async |state| mint(state, request).await).await
        }
        Command::Users { command } => users::run(command, &config).await,
        Command::Clients { command } => clients::run(command, &config).await,
        Command::BenchOauth { seconds, clients, database_url } => {
            bench::oauth(config, Duration::from_secs(seconds), clients, database_url).await
        }
        Command::BenchSign { .. } => unreachable!("bench-sign runs before the configuration is read"),
        Command::Keys { command: KeysCommand::NewEdgeKey(_) } => {
            unreachable!("new-edge-key runs before the configuration is read")
        }
    }
}

/// Opens the issuer for a command that may set one up: the database, the development KEK file
/// and the first key are created if missing, and due rotation steps run.
async fn open(config: Config) -> anyhow::Result<AppState> {
    let kek = load_kek(&config.kek, KekFile::Create)?;
    Ok(AppState::open(config, kek, Arc::new(SystemClock)).await?)
}

/// Runs `work` on `state`, then closes the database whatever the outcome.
pub(crate) async fn closing(
    state: AppState,
    work: impl AsyncFnOnce(&AppState) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let result = work(&state).await;
    state.close().await;
    result
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `token mint`: the first configured audience unless `--aud` names some.
async fn mint(state: &AppState, mut request: AccessTokenRequest) -> anyhow::Result<()> {
    if request.audiences.is_empty() {
        request.audiences = state.config().audiences.iter().take(1).cloned().collect();
    }
    let minted = state.mint(&request).await?;
    println!("{}", minted.token);
    Ok(())
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The current time, Unix seconds.
fn now() -> u64 {
    use issuer::clock::Clock as _;
    SystemClock.now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from(["issuer", "token", "mint", "--sub", "s", "--roles", "a,b", "--ttl", "5m"])
            .expect("parses");
        let Command::Token { command: TokenCommand::Mint { roles, ttl, .. } } = cli.command else {
            panic!("mint");
        };
        assert_eq!(roles, ["a", "b"]);
        assert_eq!(ttl, Some(Duration::from_secs(300)));
        assert!(Cli::try_parse_from(["issuer", "token", "mint", "--sub", "s", "--ttl", "5 minutes"]).is_err());
        assert!(Cli::try_parse_from(["issuer", "keys", "revoke"]).is_err());
    }

    #[test]
    fn new_edge_key_takes_one_change_at_a_time() {
        let parses =
            |args: &[&str]| Cli::try_parse_from([&["issuer", "keys", "new-edge-key"][..], args].concat()).is_ok();
        assert!(parses(&[]));
        assert!(parses(&["--add-to", "-"]));
        assert!(parses(&["--promote", "-5r5PseIjxKbX7Dv", "--in", "keys.json"]));
        assert!(parses(&["--drop", "k1", "--in", "-"]));
        assert!(!parses(&["--promote", "k1"]), "--promote needs --in");
        assert!(!parses(&["--promote", "k1", "--drop", "k2", "--in", "-"]));
        assert!(!parses(&["--add-to", "-", "--promote", "k1", "--in", "-"]));
        assert!(!parses(&["--add-to", "a.json", "--in", "b.json"]));
        assert!(!parses(&["--in", "b.json"]), "--in alone changes nothing");
    }

    /// A kid is base64url: one in 64 begins with `-`, and must not be read as an option.
    #[test]
    fn a_kid_may_begin_with_a_hyphen() {
        let kid = "-5r5PseIjxKbX7Dv-kM0J_HM4qf-WPpNKknE3bvzUj8";
        let cli = Cli::try_parse_from(["issuer", "keys", "revoke", kid]).expect("parses");
        let Command::Keys { command: KeysCommand::Revoke { kid: parsed } } = cli.command else {
            panic!("revoke");
        };
        assert_eq!(parsed, kid);
    }
}
