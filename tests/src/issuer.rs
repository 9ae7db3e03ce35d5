//! The issuer as the tests that start real processes run it: `issuer serve` as a process (see
//! [`Process`]), started, stopped and killed at will, and the issuer's CLI on the same database;
//! on SQLite in its data folder or on a PostgreSQL database, one process or several of one issuer
//! ([`Issuer::replica`]).

use crate::harness::{Answer, Client, Process, free_port, wait_until_serving, workspace_binary};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `replica_sync` of every issuer here: how often each process re-reads the key set.
pub const REPLICA_SYNC: Duration = Duration::from_secs(1);

/// The first audience the issuer mints for: its tokens carry it (the edge's in `tests/e2e.rs`).
pub const AUDIENCE: &str = "api";
/// A second audience the issuer mints for (the edge of `tests/e2e.rs` does not accept it).
pub const OTHER_AUDIENCE: &str = "billing";

/// An issuer: `issuer serve` as a process, and its CLI on the same database and key-encryption
/// key (KEK).
pub struct Issuer {
    name: String,
    binary: PathBuf,
    data: PathBuf,
    logs: PathBuf,
    port: u16,
    /// A client for the port it serves on.
    pub client: Client,
    identifier: String,
    database_url: Option<String>,
    kek_file: Option<PathBuf>,
    serving: Option<Process>,
    starts: usize,
    /// Settings of this test's own, as `PORTCULLIS_*` variables.
    settings: Vec<(String, String)>,
}

impl Issuer {
    /// An issuer (not started) with its data in `dir/<name>` and its logs in `dir`; its database
    /// is PostgreSQL at `database_url` (`postgres://...`), or SQLite in its data folder when that
    /// is `None`; its `iss` is its URL.
    pub fn new(name: &str, dir: &Path, database_url: Option<String>) -> Self {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).expect("the issuer's data folder");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        Self {
            name: name.to_owned(),
            binary: workspace_binary("issuer"),
            data,
            logs: dir.to_owned(),
            port,
            client: Client::new(url.clone()),
            identifier: url,
            database_url,
            kek_file: None,
            serving: None,
            starts: 0,
            settings: Vec::new(),
        }
    }

    /// Another process (not started) of this issuer, as a second replica behind a load balancer:
    /// its own port, and data in `<dir>/<name>`; the same database, `iss` and KEK (the
    /// development KEK file `kek` in this issuer's data folder, which its first command creates).
    /// Panics when this issuer is on SQLite in its own data folder.
    pub fn replica(&self, name: &str) -> Self {
        let database_url = self.database_url.clone().expect("a replica shares a database server");
        let mut replica = Self::new(name, &self.logs, Some(database_url));
        replica.identifier.clone_from(&self.identifier);
        replica.kek_file = Some(self.data.join("kek"));
        replica
    }

    /// `http://127.0.0.1:<port>`, where it serves.
    pub fn url(&self) -> &str {
        &self.client.base
    }

    /// Its `iss`, which is also its admin audience.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The issuer command with this issuer's settings (and no `PORTCULLIS_*` from outside):
    /// rotation that takes seconds (`jwks_max_age`, `publish_lead` and `replica_sync` 1 s, so a
    /// new key signs `publish_lead + 2 * replica_sync` = 3 s after it is published), no scheduled
    /// rotation during the test.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PORTCULLIS_")) {
            command.env_remove(name);
        }
        command
            .env("PORTCULLIS_ISSUER", &self.identifier)
            .env("PORTCULLIS_BIND", format!("127.0.0.1:{}", self.port))
            .env("PORTCULLIS_DATA_DIR", &self.data)
            .env("PORTCULLIS_AUDIENCES", format!("{AUDIENCE},{OTHER_AUDIENCE}"))
            .env("PORTCULLIS_JWKS_MAX_AGE", "1s")
            .env("PORTCULLIS_PUBLISH_LEAD", "1s")
            .env("PORTCULLIS_REPLICA_SYNC", format!("{}s", REPLICA_SYNC.as_secs()))
            .env("PORTCULLIS_ROTATION_PERIOD", "1h")
            // Cheap password hashes: the suite measures the flow, not argon2 (the issuer warns).
            .env("PORTCULLIS_PASSWORD_HASH_MEMORY", "64")
            .env("PORTCULLIS_PASSWORD_HASH_ITERATIONS", "1")
            .env("RUST_LOG", "info,sqlx=warn")
            .current_dir(&self.data);
        if let Some(url) = &self.database_url {
            command.env("PORTCULLIS_DATABASE_URL", url);
        }
        command.envs(self.settings.iter().map(|(name, value)| (name, value)));
        if let Some(kek_file) = &self.kek_file {
            command.env("PORTCULLIS_KEK_FILE", kek_file);
        }
        command
    }

    /// How many `grant_type` grants the issuer has answered with tokens, from its metrics
    /// (`portcullis_oauth_grants_total{grant_type, outcome="issued"}`).
    pub async fn grants_issued(&self, grant_type: &str) -> u64 {
        let metrics = self.client.get("/metrics", &[]).await.text();
        let series = format!("portcullis_oauth_grants_total{{grant_type=\"{grant_type}\",outcome=\"issued\"}}");
        metrics
            .lines()
            .find(|line| line.starts_with(&series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|count| count.parse().ok())
            .unwrap_or(0)
    }

    /// Sets `PORTCULLIS_<NAME>` for every later command and `serve` (a test's own setting, such
    /// as a short `access_token_ttl`).
    pub fn set(&mut self, name: &str, value: &str) {
        self.settings.push((format!("PORTCULLIS_{}", name.to_ascii_uppercase()), value.to_owned()));
    }

    /// Starts `issuer serve` (its log `<dir>/<name>-<n>.log` for the n-th start) and waits until
    /// `/healthz` answers 200.
    pub async fn serve(&mut self) -> Duration {
        assert!(self.serving.is_none(), "the {} is serving already", self.name);
        self.starts += 1;
        let mut command = self.command();
        command.arg("serve");
        let log = self.logs.join(format!("{}-{}.log", self.name, self.starts));
        let process = self.serving.insert(Process::spawn(&self.name, command, log));
        wait_until_serving(process, &self.client, "/healthz").await
    }

    /// Stops `issuer serve` (SIGTERM to its group) and checks that it stopped cleanly.
    pub fn stop(&mut self) {
        let process = self.serving.take().expect("the issuer is serving");
        let status = process.stop().expect("the issuer's exit status");
        assert!(status.success(), "the {} stopped with {status}", self.name);
    }

    /// Kills `issuer serve` at once, as a crash would (SIGKILL to its group: no shutdown), and
    /// checks that the signal ended it.
    pub fn kill(&mut self) {
        let process = self.serving.take().expect("the issuer is serving");
        let status = process.kill().expect("the issuer's exit status");
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "the {} ended with {status}", self.name);
    }

    /// Runs the CLI with `args`; its standard output, or a panic with its standard error.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut command = self.command();
        command.args(args);
        let shown = args.join(" ");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the CLI's thread")
            .unwrap_or_else(|error| panic!("issuer {shown}: {error}"));
        assert!(
            output.status.success(),
            "issuer {shown}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output").trim().to_owned()
    }

    /// `issuer token mint --sub SUB --roles ROLES ...more`.
    pub async fn mint(&self, sub: &str, roles: &str, more: &[&str]) -> String {
        self.cli(&[&["token", "mint", "--sub", sub, "--roles", roles], more].concat()).await
    }

    /// An access token for the admin endpoints: role `admin`, for the admin audience.
    pub async fn admin_token(&self) -> String {
        self.mint("operator", "admin", &["--aud", &self.identifier]).await
    }

    /// Runs the CLI with `args` and reads its output as JSON.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let output = self.cli(args).await;
        serde_json::from_str(&output).unwrap_or_else(|_| panic!("issuer {}: not JSON: {output}", args.join(" ")))
    }

    /// `issuer clients add ID OPTIONS...`: the new client's secret.
    pub async fn add_client(&self, id: &str, options: &[&str]) -> String {
        let args: Vec<&str> = ["clients", "add", id].into_iter().chain(options.iter().copied()).collect();
        let added = self.cli_json(&args).await;
        added["client_secret"].as_str().unwrap_or_else(|| panic!("no client_secret in {added}")).to_owned()
    }

    /// `issuer keys list --json`: kid to state.
    pub async fn key_states(&self) -> Vec<(String, String)> {
        let list = self.cli_json(&["keys", "list", "--json"]).await;
        let keys = list["keys"].as_array().unwrap_or_else(|| panic!("no keys in {list}"));
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        keys.iter().map(|key| (text(&key["kid"]), text(&key["state"]))).collect()
    }

    /// The JWKS the issuer serves, as sent.
    pub async fn jwks(&self) -> Result<Answer, String> {
        let answer = self
            .client
            .try_send("GET", "/.well-known/jwks.json", &[], Vec::new(), Duration::from_secs(5))
            .await
            .ok_or("no answer")?;
        if answer.status != 200 {
            return Err(format!("{}: {}", answer.status, answer.text()));
        }
        Ok(answer)
    }

    /// The kids of the JWKS the issuer serves.
    pub async fn jwks_kids(&self) -> Result<Vec<String>, String> {
        let jwks = self.jwks().await?.json();
        Ok(jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|key| key["kid"].as_str().map(str::to_owned))
            .collect())
    }

    /// `POST /oauth/token` with the form `params`: the status and the JSON body. Panics without
    /// an answer within 30 s.
    pub async fn grant(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let answer = self
            .client
            .try_post_form("/oauth/token", params, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("POST {}/oauth/token: no answer within 30 s", self.url()));
        (answer.status, answer.json())
    }
}
