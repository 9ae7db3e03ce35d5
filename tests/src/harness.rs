//! What the tests that start real processes share: free ports, child processes in their own
//! process group (`devtools::ProcessGroup`, as `cargo xtask dev` runs them: killed with the whole
//! group on drop, also when a test fails or panics), `wrangler dev` on the built Worker, an HTTP
//! client, and polling with a deadline.

use axum::body::Bytes;
use axum::http::HeaderMap;
use devtools::ProcessGroup;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (see [`devtools::free_port`]).
pub fn free_port() -> u16 {
    devtools::free_port().expect("a free port")
}

/// A binary of this workspace (`issuer`, `demo-origin`) from the target folder the running test was
/// built in: the test executable is `<target>/<profile>/deps/<test>-<hash>`, the binaries are in
/// `<target>/<profile>/`. Panics with what to run when it is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's folder");
    let profile = if deps.ends_with("deps") { deps.parent().unwrap_or(deps) } else { deps };
    let binary = profile.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p issuer -p tests --bins` (`cargo xtask test` does)",
        binary.display()
    );
    binary
}

/// A child process in its own process group ([`ProcessGroup`]), with its output in a log file.
/// Dropping it stops the whole group (SIGTERM, then SIGKILL after 5 s), also while a test panics,
/// and then prints the end of the log.
pub struct Process {
    name: String,
    group: ProcessGroup,
    log: PathBuf,
}

impl Process {
    /// Starts `command` as `name` in a new process group, stdin closed, stdout and stderr to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Self {
        let group = ProcessGroup::spawn_logged(&mut command, &log)
            .unwrap_or_else(|error| panic!("start the {name} ({command:?}, log {}): {error}", log.display()));
        Self { name: name.to_owned(), group, log }
    }

    /// Everything it has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.group.try_wait() {
            panic!("the {} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// Waits (at most 5 s) for a log line containing every one of `parts`.
    pub async fn logged(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.log_text().lines().find(|line| parts.iter().all(|part| line.contains(part))) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {parts:?} in:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the whole group and says how the process ended.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.group.stop()
    }

    /// Kills the whole group at once, as a crash would (SIGKILL, no grace), and says how the
    /// process ended.
    pub fn kill(mut self) -> Option<ExitStatus> {
        let group = i32::try_from(self.group.id()).expect("a process id fits an i32");
        killpg(Pid::from_raw(group), Signal::SIGKILL).unwrap_or_else(|error| panic!("kill the {}: {error}", self.name));
        // Waits for the leader; `stop`'s own signals reach a group that is dying or gone.
        self.group.stop()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.group.stop();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of the {} ({}) ---", self.name, self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `wrangler dev` serving a built Worker, in its own process group (see [`Process`]).
pub struct Wrangler {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    started: Instant,
}

impl Wrangler {
    /// Starts `wrangler dev` on the Worker in `edge/<build>` with `vars` (as `--var`) and
    /// `config_tail` at the end of its wrangler config (tables such as `[vars.POLICY]`), on a free
    /// port and a free inspector port, its state kept in `dir/state` (the Cache API persists there)
    /// and its output in `dir/<name>.log`.
    pub fn start(name: &str, build: &str, dir: &Path, vars: &[(&str, String)], config_tail: &str) -> Self {
        Self::start_on(free_port(), name, build, dir, vars, config_tail)
    }

    /// [`Self::start`] on `port` (a test that must know the Worker's URL before it starts, to
    /// register it somewhere).
    pub fn start_on(
        port: u16,
        name: &str,
        build: &str,
        dir: &Path,
        vars: &[(&str, String)],
        config_tail: &str,
    ) -> Self {
        let root = devtools::workspace_root();
        let entry = root.join("edge").join(build).join("index.js");
        assert!(
            entry.is_file(),
            "{} is missing: build the Worker first with `cargo xtask test` (or `cargo xtask build-worker`{})",
            entry.display(),
            if build == "build" { "" } else { ", `cargo xtask bench-edge` for the benchmark Worker" }
        );
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(wrangler.exists(), "{} is missing: run `npm ci` (or `cargo xtask test`)", wrangler.display());

        // The repository's wrangler.toml less its build step and vars: same runtime, prebuilt Worker.
        let root_config = std::fs::read_to_string(root.join("wrangler.toml")).expect("wrangler.toml");
        let compatibility: Vec<&str> =
            root_config.lines().filter(|line| line.trim_start().starts_with("compatibility_")).collect();
        assert!(!compatibility.is_empty(), "wrangler.toml sets no compatibility_date");
        let config = dir.join(format!("{name}.wrangler.toml"));
        let text = format!(
            "name = \"portcullis-edge-{name}\"\nmain = {:?}\n{}\n{config_tail}",
            entry.display().to_string(),
            compatibility.join("\n")
        );
        std::fs::write(&config, text).expect("write the test's wrangler config");

        let mut command = Command::new(&wrangler);
        command
            .args(["dev", "--config"])
            .arg(&config)
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string(), "--persist-to"])
            .arg(dir.join("state"))
            .current_dir(dir)
            .envs(devtools::WRANGLER_ENV);
        for (name, value) in vars {
            command.arg("--var").arg(format!("{name}:{value}"));
        }
        let process = Process::spawn(&format!("wrangler dev ({name})"), command, dir.join(format!("{name}.log")));
        Self { process, base: format!("http://127.0.0.1:{port}"), started: Instant::now() }
    }

    /// Waits (at most 90 s) until the Worker answers, and says how long that took from the start.
    pub async fn ready(&mut self, client: &Client) -> Duration {
        let deadline = self.started + Duration::from_secs(90);
        loop {
            self.process.assert_running();
            // With the status secret: a Worker that has it counts no refusal for the probe.
            let secret = [("authorization", format!("Bearer {STATUS_SECRET}"))];
            let headers: Vec<(&str, &str)> = secret.iter().map(|(name, value)| (*name, value.as_str())).collect();
            let answer =
                client.try_send("GET", "/_portcullis/status", &headers, Vec::new(), Duration::from_secs(5)).await;
            if answer.is_some_and(|answer| answer.headers.contains_key("cache-control")) {
                return self.started.elapsed();
            }
            assert!(Instant::now() < deadline, "wrangler dev did not answer within 90 s:\n{}", self.process.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most 5 s) for a log line containing every one of `parts`.
    pub async fn logged(&self, parts: &[&str]) -> String {
        self.process.logged(parts).await
    }
}

/// Waits (at most 30 s) until `path` answers `GET` with 200; panics with `process`'s log if it
/// exits or does not answer in time.
pub async fn wait_until_serving(process: &mut Process, client: &Client, path: &str) -> Duration {
    let start = Instant::now();
    loop {
        process.assert_running();
        let answer = client.try_send("GET", path, &[], Vec::new(), Duration::from_secs(2)).await;
        if answer.is_some_and(|answer| answer.status == 200) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the {} did not answer {path} within 30 s:\n{}",
            process.name,
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `probe` every 100 ms until it returns `Ok`, for at most `limit`; panics with `what` and
/// the last `Err` otherwise. Returns the value and how long it took.
pub async fn poll<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Result<T, String>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return (value, start.elapsed()),
            Err(last) if start.elapsed() >= limit => panic!("{what}: not within {limit:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The first value of header `name`, if it is text.
pub fn first_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// An HTTP response, read whole.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

/// An HTTP/1 client for one base URL.
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, which request paths are appended to.
    pub base: String,
}

impl Client {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: String) -> Self {
        Self { inner: HyperClient::builder(TokioExecutor::new()).build_http(), base }
    }

    /// Sends a request; `None` when it fails or no whole answer comes within `limit`.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        limit: Duration,
    ) -> Option<Answer> {
        let mut request = axum::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let exchange = async {
            let response = self.inner.request(request).await.ok()?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some(Answer { status, headers, body })
        };
        tokio::time::timeout(limit, exchange).await.ok().flatten()
    }

    /// Sends a request; panics when it gets no answer within 30 s.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        self.try_send(method, path, headers, body, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{method} {}{path}: no answer within 30 s", self.base))
    }

    /// `GET path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path, headers, Vec::new()).await
    }

    /// The edge's status page, opened with [`STATUS_SECRET`] (which the test Workers run with).
    pub async fn status(&self) -> Answer {
        self.get_with_token("/_portcullis/status", STATUS_SECRET).await
    }

    /// `GET path` with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Answer {
        self.get(path, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// `POST path` with `params` as an `application/x-www-form-urlencoded` body; `None` when it
    /// fails or no whole answer comes within `limit`.
    pub async fn try_post_form(&self, path: &str, params: &[(&str, &str)], limit: Duration) -> Option<Answer> {
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.try_send("POST", path, &headers, form(params), limit).await
    }
}

/// The session objects' binding and migration, as the repository's wrangler.toml has them: the
/// start of the wrangler config tail of a test Worker with browser sessions.
pub const SESSION_OBJECTS: &str = r#"
[[durable_objects.bindings]]
name = "SESSIONS"
class_name = "BrowserSession"

[[migrations]]
tag = "v1"
new_sqlite_classes = ["BrowserSession"]
"#;

/// The `STATUS_SECRET` the test Workers run with: the bearer that opens their status page.
pub const STATUS_SECRET: &str = "portcullis-test-status-secret";

/// `params` as an `application/x-www-form-urlencoded` body (bytes other than ASCII letters,
/// digits and `-._*` percent-encoded, spaces as `+`).
fn form(params: &[(&str, &str)]) -> Vec<u8> {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => char::from(byte).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{byte:02X}"),
            })
            .collect()
    };
    let pairs: Vec<String> = params.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect();
    pairs.join("&").into_bytes()
}
