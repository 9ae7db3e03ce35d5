//! The `issuer` command: `serve`, `keys list | rotate | revoke KID`, `token mint`,
//! `users add | list | set-roles | disable`, `clients add | list | remove`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use issuer::accounts::{Accounts, Client, User};
use issuer::clock::{Clock as _, SystemClock};
use issuer::config::{Config, KekSource, LogFormat, parse_duration};
use issuer::db::{Db, OpenMode};
use issuer::kek::Kek;
use issuer::keys::{KeyInfo, SigningKey};
use issuer::secrets::PasswordHasher;
use issuer::sessions::{PURGE_INTERVAL, SessionPolicy, Sessions};
use issuer::token::AccessTokenRequest;
use issuer::{AppState, app};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Portcullis issuer: ES256 access tokens and a JWKS whose keys rotate on their own.
///
/// Settings come from the TOML file given with --config and from PORTCULLIS_* environment
/// variables, which win (e.g. PORTCULLIS_ISSUER, PORTCULLIS_DATABASE_URL, PORTCULLIS_KEK).
#[derive(Debug, Parser)]
#[command(name = "issuer", version)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
enum KeysCommand {
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
        /// The key id.
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
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
enum ClientsCommand {
    /// Register a client; prints its secret, once.
    Add {
        /// The client id.
        client_id: String,
        /// An audience of its tokens (repeat); default: the first configured audience.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A role of its tokens (repeat, or comma-separated).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
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
enum TokenCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::BenchSign { seconds } = cli.command {
        return match bench_sign(Duration::from_secs(seconds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        };
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("issuer: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("issuer: {error:#}");
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether a command may create the development KEK file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KekFile {
    /// Create it if missing (`serve`, `keys rotate`, `token mint`).
    Create,
    /// Only read it (`keys revoke`).
    Existing,
}

fn load_kek(source: &KekSource, file: KekFile) -> anyhow::Result<Kek> {
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

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => closing(open(config).await?, async |state| serve(state).await).await,
        // Read-only: no database, folder, KEK file or key is created, and no rotation step runs.
        Command::Keys { command: KeysCommand::List { json } } => {
            let keys = issuer::list_keys(&config).await?;
            if json {
                return print_json(&serde_json::json!({ "keys": keys }));
            }
            print_table(&keys);
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
            let request = AccessTokenRequest { subject: sub, audiences: aud, roles, client_id, scope, ttl };
            closing(open(config).await?, async |state| mint(state, request).await).await
        }
        Command::Users { command } => users(command, &config).await,
        Command::Clients { command } => clients(command, &config).await,
        Command::BenchOauth { seconds, clients } => bench::oauth(config, Duration::from_secs(seconds), clients).await,
        Command::BenchSign { .. } => unreachable!("bench-sign runs before the configuration is read"),
    }
}

/// Opens the issuer for a command that may set one up: the database, the development KEK file
/// and the first key are created if missing, and due rotation steps run.
async fn open(config: Config) -> anyhow::Result<AppState> {
    let kek = load_kek(&config.kek, KekFile::Create)?;
    Ok(AppState::open(config, kek, Arc::new(SystemClock)).await?)
}

/// Runs `work` on `state`, then closes the database whatever the outcome.
async fn closing(state: AppState, work: impl AsyncFnOnce(&AppState) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let result = work(&state).await;
    state.close().await;
    result
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
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

async fn serve(state: &AppState) -> anyhow::Result<()> {
    let config = state.config();
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} (setting `bind`)", config.bind))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        issuer = %config.issuer,
        database = %config.redacted_database_url(),
        "serving; JWKS at {}",
        config.jwks_uri()
    );
    let sync = state.spawn_key_sync();
    let purge = state.spawn_purge(PURGE_INTERVAL);
    let service = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await;
    sync.abort();
    purge.abort();
    served.context("server error")
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// The accounts and sessions of the configured database (created and migrated if needed); no
/// KEK or signing key is involved.
async fn open_accounts(config: &Config) -> anyhow::Result<(Db, Accounts, Sessions)> {
    let db = Db::open(&config.database_url, OpenMode::Create).await?;
    let accounts = Accounts::new(db.clone(), PasswordHasher::new(config.password_hashing).await?);
    let sessions = Sessions::new(db.clone(), SessionPolicy::from_config(config));
    Ok((db, accounts, sessions))
}

async fn users(command: UsersCommand, config: &Config) -> anyhow::Result<()> {
    let (db, accounts, sessions) = open_accounts(config).await?;
    let now = SystemClock.now();
    let known = async |email: &str| -> anyhow::Result<User> {
        accounts.user_by_email(email).await?.with_context(|| format!("no user {email}"))
    };
    let result = match command {
        UsersCommand::Add { email, roles } => {
            let password = read_password()?;
            let user = accounts.create_user(&email, &password, &roles, now).await?;
            print_json(&user)
        }
        UsersCommand::List { json: true } => print_json(&serde_json::json!({ "users": accounts.users().await? })),
        UsersCommand::List { json: false } => {
            println!("{:<22}  {:<32}  {:<8}  {:<20}  ROLES", "ID", "EMAIL", "STATE", "LAST LOGIN");
            for user in accounts.users().await? {
                let state = if user.disabled { "disabled" } else { "enabled" };
                let login = user.last_login_at.map_or_else(|| "-".to_owned(), utc);
                println!("{:<22}  {:<32}  {state:<8}  {login:<20}  {}", user.id, user.email, user.roles.join(","));
            }
            Ok(())
        }
        UsersCommand::SetRoles { email, roles } => {
            let user = known(&email).await?;
            print_json(&accounts.set_roles(&user.id, &roles).await?)
        }
        UsersCommand::Disable { email } => {
            let user = accounts.disable(&known(&email).await?.id, now).await?;
            let ended = sessions.revoke_user(&user.id, now).await?;
            eprintln!("issuer: {} disabled; {ended} session(s) ended", user.email);
            print_json(&user)
        }
    };
    db.close().await;
    result
}

/// The password of `users add`: from a prompt (twice) on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Again: ")? != password {
            anyhow::bail!("the passwords differ");
        }
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn clients(command: ClientsCommand, config: &Config) -> anyhow::Result<()> {
    let (db, accounts, _) = open_accounts(config).await?;
    let result = match command {
        ClientsCommand::Add { client_id, mut audiences, roles } => {
            if audiences.is_empty() {
                audiences = config.audiences.iter().take(1).cloned().collect();
            }
            let allowed = |audience: &String| config.audiences.contains(audience) || *audience == config.admin_audience;
            if let Some(audience) = audiences.iter().find(|audience| !allowed(audience)) {
                anyhow::bail!("{audience:?} is not a configured audience (setting `audiences`)");
            }
            let (client, secret) = accounts.create_client(&client_id, &audiences, &roles, SystemClock.now()).await?;
            eprintln!("issuer: the client secret is shown once; keep it now");
            print_json(&serde_json::json!({ "client": client, "client_secret": secret }))
        }
        ClientsCommand::List { json: true } => print_json(&serde_json::json!({ "clients": accounts.clients().await? })),
        ClientsCommand::List { json: false } => {
            println!("{:<32}  {:<32}  ROLES", "CLIENT", "AUDIENCES");
            for Client { client_id, audiences, roles, .. } in accounts.clients().await? {
                println!("{client_id:<32}  {:<32}  {}", audiences.join(","), roles.join(","));
            }
            Ok(())
        }
        ClientsCommand::Remove { client_id } => {
            accounts.remove_client(&client_id, SystemClock.now()).await.map_err(Into::into)
        }
    };
    db.close().await;
    result
}

fn print_table(keys: &[KeyInfo]) {
    let time = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), utc);
    println!(
        "{:<43}  {:<8}  {:<20}  {:<20}  {:<20}  {:<20}",
        "KID", "STATE", "PUBLISHED", "ACTIVE", "RETIRING", "GONE"
    );
    for key in keys {
        println!(
            "{:<43}  {:<8}  {:<20}  {:<20}  {:<20}  {:<20}",
            key.kid,
            key.state.as_str(),
            utc(key.published_at),
            time(key.activated_at.or(key.activate_after)),
            time(key.retiring_at),
            time(key.retired_at.or(key.revoked_at)),
        );
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Signs access tokens on this thread for `duration` and prints the rate.
fn bench_sign(duration: Duration) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    let request = AccessTokenRequest {
        subject: "user-1234".to_owned(),
        audiences: vec!["api".to_owned()],
        roles: vec!["reader".to_owned(), "writer".to_owned()],
        client_id: "web".to_owned(),
        scope: None,
        ttl: None,
    };
    let ttl = Duration::from_secs(300);
    let now = SystemClock.now();
    let token = issuer::token::sign(&key, "https://issuer.example", &request, ttl, now)?;
    let start = Instant::now();
    let mut count: u64 = 0;
    while start.elapsed() < duration {
        for _ in 0..100 {
            issuer::token::sign(&key, "https://issuer.example", &request, ttl, now)?;
        }
        count += 100;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "ES256 access tokens ({} bytes): {count} in {elapsed:.2} s on one thread = {:.0} signatures/s ({:.1} µs each)",
        token.token.len(),
        count as f64 / elapsed,
        elapsed * 1e6 / count as f64
    );
    Ok(())
}

mod bench;

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
}
