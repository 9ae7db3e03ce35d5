//! `cargo xtask dev`: the whole stack on this machine. The issuer on SQLite and two sites, each
//! a demo origin behind its own edge Worker under `wrangler dev`: the site (client `site`,
//! `http://127.0.0.1:8787`) and the blog (client `blog`, `http://localhost:8788`), the pattern of a
//! main site and its blog sharing one sign-in. Each process runs in its own process group, with its
//! log in `.dev/`.
//!
//! Each edge is the issuer's OpenID Connect client (README.md, "Browser sessions"): registered
//! with its callback and its page after logout, with its own secrets in `.dev/<client>.vars` (mode
//! 0600, wrangler's `--env-file`): the client's secret, a cookie key (`SESSION_COOKIE_KEYS`, new
//! random bytes each run) and a key to sign its assertions to its origin (`issuer keys
//! new-edge-key`, `ASSERTION_KEYS`), which the origin verifies against the edge's published keys.
//! Each edge keeps its Durable Objects (the browser sessions) in its own state folder.
//!
//! The blog has a host name of its own because a browser's cookies ignore the port: two edges on
//! one host would send each other their cookies, of the same names, and each would overwrite the
//! other's session. (The issuer may share a host with an edge: their cookies have other names.)
//!
//! It creates the demo users, prints the URLs and example requests (curl, and a browser sign-in on
//! the site then the blog) with the answers it got running them, then the sign-in links the issuer
//! writes to its development outbox as they arrive; Ctrl-C stops everything it started.

use crate::worker::{self, Tools};
use anyhow::{Context as _, Result, bail};
use devtools::ProcessGroup;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the issuer listens (the `ISSUER` of wrangler.toml's `[vars]`).
const ISSUER_ADDR: &str = "127.0.0.1:8080";
/// The `iss` of the edges' assertions (the edge's default `ASSERTION_ISSUER`).
const EDGE_ISSUER: &str = "portcullis-edge";
/// The path of each site a logout ends on (`SESSION_AFTER_LOGOUT`): the demo origin's public page.
const AFTER_LOGOUT: &str = "/public/signed-out";
/// The page of each site that shows who is signed in.
const PAGE: &str = "/api/page";
/// The headers of a page's navigation in a browser: what the edge sends to sign in.
const NAVIGATE: [(&str, &str); 3] =
    [("accept", "text/html"), ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")];
/// The PKCE pair of the printed browser example: RFC 7636 Appendix B's (a real client makes a
/// new one for each sign-in).
const EXAMPLE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const EXAMPLE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// How long each part may take to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// One site of the demo: a demo origin behind its own edge, the edge a client of the issuer.
struct Site {
    /// Its client id at the issuer; its files in `.dev/` are named after it.
    client: &'static str,
    /// The names of its processes (and of their logs).
    edge_part: &'static str,
    origin_part: &'static str,
    /// Where its `wrangler dev` listens.
    edge_addr: &'static str,
    /// Its address in a browser, on a host of its own (see the module's documentation).
    browser: &'static str,
    /// Where its demo origin listens; `http://` and this is the edge's `ORIGIN_URL`, the `aud` of
    /// its assertions.
    origin_addr: &'static str,
    /// Its wrangler's inspector (wrangler defaults to 9229, which another Node process may hold).
    inspector_port: &'static str,
}

/// The main site, whose edge is the one of wrangler.toml (`ORIGIN_URL` http://127.0.0.1:3000).
const SITE: Site = Site {
    client: "site",
    edge_part: "site edge",
    origin_part: "site origin",
    edge_addr: "127.0.0.1:8787",
    browser: "http://127.0.0.1:8787",
    origin_addr: "127.0.0.1:3000",
    inspector_port: "9239",
};

/// A second site signing in at the same issuer.
const BLOG: Site = Site {
    client: "blog",
    edge_part: "blog edge",
    origin_part: "blog origin",
    edge_addr: "127.0.0.1:8788",
    browser: "http://localhost:8788",
    origin_addr: "127.0.0.1:3001",
    inspector_port: "9240",
};

impl Site {
    fn origin_url(&self) -> String {
        format!("http://{}", self.origin_addr)
    }

    /// Where the edge publishes the public halves of its assertion keys.
    fn jwks_url(&self) -> String {
        format!("http://{}/_portcullis/jwks.json", self.edge_addr)
    }

    /// Where the issuer sends a browser back to after a sign-in (the edge's callback).
    fn callback(&self) -> String {
        format!("{}/_portcullis/callback", self.browser)
    }

    /// The `Host` a browser sends it.
    fn browser_host(&self) -> &'static str {
        self.browser.trim_start_matches("http://")
    }
}

/// Runs the stack until Ctrl-C (or until one of its processes stops).
pub(crate) fn dev(root: &Path) -> Result<()> {
    let addresses = [
        ("issuer", ISSUER_ADDR),
        (SITE.origin_part, SITE.origin_addr),
        (SITE.edge_part, SITE.edge_addr),
        (BLOG.origin_part, BLOG.origin_addr),
        (BLOG.edge_part, BLOG.edge_addr),
    ];
    for (what, address) in addresses {
        if let Err(error) = TcpListener::bind(address) {
            if error.kind() == std::io::ErrorKind::AddrInUse {
                bail!("{address} (for the {what}) is in use: is another `cargo xtask dev` running?");
            }
            bail!("cannot listen on {address} (for the {what}): {error}");
        }
    }
    let tools = worker::ensure_tools(root)?;
    worker::build_worker(root, &tools)?;
    crate::build_binaries(root)?;

    // A clean start: fresh keys, database and Worker cache state each run.
    let state = root.join(".dev");
    if state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("cannot clear {}", state.display()))?;
    }
    std::fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;

    let (stop, stopped) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .context("cannot catch Ctrl-C")?;

    let mut stack = Stack::start(root, &state, &tools)?;
    let demo = stack.demo()?;
    demo.print(&stack);
    let mut outbox = Outbox { folder: stack.issuer_data.join("outbox"), shown: Vec::new() };

    loop {
        outbox.print_new_links();
        if stopped.recv_timeout(Duration::from_millis(250)).is_ok() {
            println!("\nstopping...");
            return Ok(());
        }
        if let Some(name) = stack.exited() {
            bail!("the {name} stopped; its log is in {}", stack.log(name).display());
        }
    }
}

/// A process of the stack, in its own process group: dropping it stops the whole group.
struct Part {
    name: &'static str,
    group: ProcessGroup,
    log: PathBuf,
}

/// The processes of the stack: the issuer, and each site's origin and edge.
struct Stack {
    root: PathBuf,
    state: PathBuf,
    /// Where cargo put the debug binaries.
    binaries: PathBuf,
    issuer_data: PathBuf,
    /// The client secret of each site, as the issuer gave it.
    secrets: Vec<(&'static str, String)>,
    parts: Vec<Part>,
}

impl Stack {
    /// Starts every part and waits until each answers: the issuer first (the edges' clients are
    /// registered there before they start), then the origins and the site's edge, then the blog's
    /// (its wrangler runs no build: the site's may be rewriting edge/build/ as it starts).
    fn start(root: &Path, state: &Path, tools: &Tools) -> Result<Self> {
        let issuer_data = state.join("issuer");
        let binaries = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), |dir| root.join(dir))
            .join("debug");
        let mut stack = Self {
            root: root.to_owned(),
            state: state.to_owned(),
            binaries,
            issuer_data,
            secrets: Vec::new(),
            parts: Vec::new(),
        };

        let mut issuer = Command::new(stack.binaries.join("issuer"));
        issuer.arg("serve");
        stack.issuer_env(&mut issuer);
        stack.spawn("issuer", issuer)?;
        stack.wait_until_ready(&[("issuer", ISSUER_ADDR, "/healthz")])?;

        for site in [&SITE, &BLOG] {
            let secret = stack.add_client(site)?;
            stack.secrets.push((site.client, secret));
            // The origin starts first: it fetches the edge's keys on the first request that needs them.
            let mut origin = Command::new(stack.binaries.join("demo-origin"));
            origin.arg("--edge-jwks-url").arg(site.jwks_url());
            origin.args(["--edge-issuer", EDGE_ISSUER, "--origin-url"]).arg(site.origin_url());
            origin.arg(site.origin_addr);
            stack.spawn(site.origin_part, origin)?;
        }
        stack.start_edge(&SITE, &root.join("wrangler.toml"), tools)?;
        stack.wait_until_ready(&[
            (SITE.origin_part, SITE.origin_addr, "/public/hello"),
            (BLOG.origin_part, BLOG.origin_addr, "/public/hello"),
            (SITE.edge_part, SITE.edge_addr, "/_portcullis/jwks.json"),
        ])?;
        let blog_config = stack.prebuilt_config()?;
        stack.start_edge(&BLOG, &blog_config, tools)?;
        stack.wait_until_ready(&[(BLOG.edge_part, BLOG.edge_addr, "/_portcullis/jwks.json")])?;
        Ok(stack)
    }

    /// Starts `site`'s edge under `wrangler dev` with `config`: its secrets from its env file, its
    /// origin and page after logout as vars, its own state folder (its Durable Objects).
    fn start_edge(&mut self, site: &Site, config: &Path, tools: &Tools) -> Result<()> {
        let vars = self.secrets_file(site)?;
        let address: SocketAddr = site.edge_addr.parse().context("an ip:port address")?;
        let mut edge = Command::new(&tools.wrangler);
        edge.args(["dev", "--config"])
            .arg(config)
            .args(["--ip", &address.ip().to_string(), "--port", &address.port().to_string()])
            .args(["--inspector-port", site.inspector_port, "--persist-to"])
            .arg(self.state.join(format!("wrangler-{}", site.client)))
            .arg("--env-file")
            .arg(&vars)
            .arg("--var")
            .arg(format!("ORIGIN_URL:{}", site.origin_url()))
            .arg("--var")
            .arg(format!("SESSION_AFTER_LOGOUT:{AFTER_LOGOUT}"))
            .envs(devtools::WRANGLER_ENV)
            .current_dir(&self.root);
        self.spawn(site.edge_part, edge)
    }

    /// wrangler.toml for a second `wrangler dev` of the built Worker: the same vars, policy and
    /// Durable Object binding, without the build step (and its watch), under another name.
    fn prebuilt_config(&self) -> Result<PathBuf> {
        let text = std::fs::read_to_string(self.root.join("wrangler.toml")).context("cannot read wrangler.toml")?;
        let main = self.root.join("edge").join("build").join("index.js");
        let main = main.to_str().context("the workspace's path is not UTF-8")?;
        let mut config = String::new();
        let (mut in_table, mut in_build) = (false, false);
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                in_table = true;
                in_build = trimmed.trim_end() == "[build]";
            }
            // The top level's `name` and `main` are replaced; tables have keys `name` too.
            let key = trimmed.split_once('=').map(|(key, _)| key.trim());
            if in_build || (!in_table && matches!(key, Some("name" | "main"))) {
                continue;
            }
            config.push_str(line);
            config.push('\n');
        }
        let config = format!("name = \"portcullis-edge-{}\"\nmain = {main:?}\n{config}", BLOG.client);
        let path = self.state.join(format!("{}.wrangler.toml", BLOG.client));
        std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// `site`'s edge secrets in `.dev/<client>.vars` (mode 0600), the form `wrangler dev
    /// --env-file` reads secrets in: they stay out of command lines and logs (wrangler shows a
    /// secret's value as hidden), as `wrangler secret put` keeps them in production. A new
    /// assertion key (`issuer keys new-edge-key`) and new cookie keys each run.
    fn secrets_file(&self, site: &Site) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let client_secret = self
            .secrets
            .iter()
            .find_map(|(client, secret)| (*client == site.client).then_some(secret.as_str()))
            .context("the site's client is not registered")?;
        let assertion_keys = self.new_edge_key()?;
        let cookie_key = base64url(&random_bytes::<32>()?);
        let secrets = [
            ("ASSERTION_KEYS", assertion_keys.as_str()),
            ("SESSION_CLIENT_ID", site.client),
            ("SESSION_CLIENT_SECRET", client_secret),
            ("SESSION_COOKIE_KEYS", cookie_key.as_str()),
        ];
        let path = self.state.join(format!("{}.vars", site.client));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        for (name, value) in secrets {
            // Single-quoted: each value is one line without `'` (base64url, JSON of fixed members).
            if value.is_empty() || value.contains(['\'', '\n', '\r']) {
                bail!("{name} for {} is empty or cannot be single-quoted", site.client);
            }
            writeln!(file, "{name}='{value}'").with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(path)
    }

    /// A new edge key set (`issuer keys new-edge-key`), as one line of JSON.
    fn new_edge_key(&self) -> Result<String> {
        let output = Command::new(self.binaries.join("issuer"))
            .args(["keys", "new-edge-key"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run issuer keys new-edge-key")?;
        if !output.status.success() {
            bail!(
                "issuer keys new-edge-key failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let keys = String::from_utf8(output.stdout).context("issuer keys new-edge-key printed no text")?;
        let keys = keys.trim();
        if !keys.starts_with('{') || keys.contains('\n') {
            bail!("issuer keys new-edge-key printed no key set on one line");
        }
        Ok(keys.to_owned())
    }

    /// The issuer's settings for this stack: its data under `.dev/issuer`, the rest as in
    /// wrangler.toml (`ISSUER`, `AUDIENCE`).
    fn issuer_env(&self, command: &mut Command) {
        command
            .env("PORTCULLIS_DATA_DIR", &self.issuer_data)
            .env("PORTCULLIS_BIND", ISSUER_ADDR)
            .env("PORTCULLIS_ISSUER", format!("http://{ISSUER_ADDR}"))
            .env("PORTCULLIS_AUDIENCES", "api")
            .current_dir(&self.root);
    }

    fn spawn(&mut self, name: &'static str, mut command: Command) -> Result<()> {
        let log = self.state.join(format!("{}.log", name.replace(' ', "-")));
        let group = ProcessGroup::spawn_logged(&mut command, &log)
            .with_context(|| format!("cannot start the {name} (log {})", log.display()))?;
        self.parts.push(Part { name, group, log });
        Ok(())
    }

    fn log(&self, name: &str) -> PathBuf {
        self.parts.iter().find(|part| part.name == name).map_or_else(PathBuf::new, |part| part.log.clone())
    }

    /// The name of a part that has stopped, if any.
    fn exited(&mut self) -> Option<&'static str> {
        self.parts.iter_mut().find_map(|part| (!part.group.is_running()).then_some(part.name))
    }

    /// Waits until each of `probes` (part, address, path) answers 200, in turn.
    fn wait_until_ready(&mut self, probes: &[(&str, &str, &str)]) -> Result<()> {
        for &(name, address, path) in probes {
            let deadline = Instant::now() + READY_TIMEOUT;
            print!("waiting for the {name} ...");
            let _ = std::io::stdout().flush();
            loop {
                if matches!(http_request(address, "GET", path, &[], None), Ok(Answer { status: 200, .. })) {
                    println!(" ready");
                    break;
                }
                if let Some(stopped) = self.exited() {
                    println!();
                    bail!("the {stopped} stopped while starting; see {}", self.log(stopped).display());
                }
                if Instant::now() > deadline {
                    println!();
                    bail!("the {name} did not answer within {READY_TIMEOUT:?}; see {}", self.log(name).display());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Creates a user with the issuer's CLI (the password goes in on stdin, as from a script).
    fn add_user(&self, user: &DemoUser) -> Result<()> {
        let mut command = Command::new(self.binaries.join("issuer"));
        command.args(["users", "add", user.email, "--role", user.role]);
        self.issuer_env(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run issuer users add")?;
        child.stdin.take().context("no stdin")?.write_all(format!("{}\n", user.password).as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("issuer users add {} failed ({status})", user.email);
        }
        Ok(())
    }

    /// Registers `site`'s edge as a confidential client of browser sign-in (its callback and its
    /// page after logout, at its browser address); returns its secret.
    fn add_client(&self, site: &Site) -> Result<String> {
        let mut command = Command::new(self.binaries.join("issuer"));
        command.args(["clients", "add", site.client, "--redirect-uri", &site.callback()]);
        command.args(["--post-logout-redirect-uri", &format!("{}{AFTER_LOGOUT}", site.browser)]);
        self.issuer_env(&mut command);
        let output = command.stderr(Stdio::null()).output().context("cannot run issuer clients add")?;
        if !output.status.success() {
            bail!("issuer clients add {} failed ({})", site.client, output.status);
        }
        let printed: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("issuer clients add printed no JSON")?;
        printed["client_secret"].as_str().map(str::to_owned).context("issuer clients add printed no client_secret")
    }

    /// A page's navigation to `site` without a session, as a browser makes it: the edge should
    /// send it to the issuer's login page. What happened, in a few words.
    fn check_sign_in(&self, site: &Site) -> Result<String> {
        let mut headers = vec![("host", site.browser_host())];
        headers.extend(NAVIGATE);
        let started = http_request(site.edge_addr, "GET", PAGE, &headers, None)?;
        let authorize = format!("http://{ISSUER_ADDR}/authorize?");
        let Some(path) = started.header("location").and_then(|location| location.strip_prefix(&authorize)) else {
            return Ok(format!(
                "{} {}: no redirect to the issuer (see {})",
                started.status,
                started.body.trim(),
                self.log(site.edge_part).display()
            ));
        };
        let login = http_request(ISSUER_ADDR, "GET", &format!("/authorize?{path}"), &[], None)?;
        Ok(if login.status == 200 && login.body.contains("password") {
            format!("{} to the issuer's login page", started.status)
        } else {
            format!("{} to the issuer, which answered {} (not its login page)", started.status, login.status)
        })
    }

    /// Creates the demo users, then runs the example requests the banner shows, for real.
    fn demo(&self) -> Result<Demo> {
        let users = [DemoUser::new("alice@example.com", "reader")?, DemoUser::new("admin@example.com", "admin")?];
        for user in &users {
            self.add_user(user)?;
        }
        let login = http_request(ISSUER_ADDR, "POST", "/oauth/token", &[], Some(&users[0].login_form()))?;
        let token = serde_json::from_str::<serde_json::Value>(&login.body)
            .ok()
            .and_then(|body| body["access_token"].as_str().map(str::to_owned))
            .with_context(|| format!("the login answered {} without an access token", login.status))?;
        let bearer = format!("Bearer {token}");
        let bearer = [("authorization", bearer.as_str())];
        let me = http_request(SITE.edge_addr, "GET", "/api/me", &bearer, None)?;
        let admin_route = http_request(SITE.edge_addr, "GET", "/api/admin/messages", &bearer, None)?;
        let no_token = http_request(SITE.edge_addr, "GET", "/api/me", &[], None)?;
        let sign_in = [self.check_sign_in(&SITE)?, self.check_sign_in(&BLOG)?];
        Ok(Demo { users, login, me, admin_route, no_token, sign_in })
    }

    fn secret(&self, client: &str) -> &str {
        self.secrets.iter().find_map(|(name, secret)| (*name == client).then_some(secret.as_str())).unwrap_or("?")
    }
}

/// The issuer's development outbox: the sign-in links it writes, printed once each.
struct Outbox {
    folder: PathBuf,
    shown: Vec<PathBuf>,
}

impl Outbox {
    /// Prints the link of each message not shown yet, oldest first.
    fn print_new_links(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.folder) else { return };
        let mut messages: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
            .filter(|path| !self.shown.contains(path))
            .collect();
        messages.sort();
        for message in messages {
            let text = std::fs::read_to_string(&message).unwrap_or_default();
            let to = text.lines().find_map(|line| line.strip_prefix("To: ")).unwrap_or("?");
            if let Some(link) = text.split_whitespace().find(|word| word.contains("/login/email?token=")) {
                println!("\nsign-in link for {to} (from the issuer's outbox, {}):\n  {link}", message.display());
            }
            self.shown.push(message);
        }
    }
}

/// A user the demo creates, with a password new each run.
struct DemoUser {
    email: &'static str,
    role: &'static str,
    password: String,
}

impl DemoUser {
    fn new(email: &'static str, role: &'static str) -> Result<Self> {
        let password = random_bytes::<9>()?.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self { email, role, password })
    }

    /// The form of a password-grant login (the values need no percent-encoding).
    fn login_form(&self) -> String {
        format!("grant_type=password&username={}&password={}", self.email, self.password)
    }
}

/// `N` random bytes.
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0_u8; N];
    File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).context("no /dev/urandom")?;
    Ok(bytes)
}

/// `bytes` in base64url without padding (RFC 4648 §5), as `SESSION_COOKIE_KEYS` takes its keys.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits =
            chunk.iter().enumerate().fold(0_u32, |bits, (index, byte)| bits | u32::from(*byte) << (16 - 8 * index));
        for index in 0..=chunk.len() {
            text.push(char::from(ALPHABET[(bits >> (18 - 6 * index)) as usize & 63]));
        }
    }
    text
}

/// Answers to the example requests, and what a browser's first visit to each site did.
struct Demo {
    users: [DemoUser; 2],
    login: Answer,
    me: Answer,
    admin_route: Answer,
    no_token: Answer,
    /// The site's, then the blog's.
    sign_in: [String; 2],
}

impl Demo {
    fn print(&self, stack: &Stack) {
        let [alice, admin] = &self.users;
        let login_form = alice.login_form().replace('&', " -d ");
        let [site_sign_in, blog_sign_in] = &self.sign_in;
        let dev = stack.state.display();
        println!(
            r#"
Portcullis is running (logs in {dev}):
  site: edge (wrangler dev)  {site_browser}    policy: wrangler.toml [vars.POLICY]
        demo origin          http://{site_origin}    (through the edge only: /api/* needs the edge's assertion)
  blog: edge (wrangler dev)  {blog_browser}    the same Worker and policy, its own sessions and keys
        demo origin          http://{blog_origin}
  issuer                     http://{ISSUER_ADDR}    JWKS: http://{ISSUER_ADDR}/.well-known/jwks.json
  edge status                {site_browser}/_portcullis/status   (for a token with the admin role)
  edge assertion keys        {site_jwks}, {blog_jwks}
  each edge's secrets        {dev}/site.vars, {dev}/blog.vars (new keys each run)

Users (new passwords each run; more with `{issuer} users add EMAIL --role ROLE`, with
PORTCULLIS_DATA_DIR={data}):
  {alice_email:<19} role {alice_role:<7} password {alice_password}
  {admin_email:<19} role {admin_role:<7} password {admin_password}

In a browser: one sign-in for both sites (each edge signs browsers in: README.md, "Browser sessions"):
  1. open {site_browser}{PAGE} and sign in as {alice_email} (password {alice_password})
       a first visit: {site_sign_in}
  2. then open {blog_browser}{PAGE}: signed in without a password (the issuer remembers the browser)
       a first visit: {blog_sign_in}
  3. each page shows who is signed in (the origin reads it from the edge's signed assertion); its
     logout button ends that site's session and the issuer's (the other site's too), and lands on
     {AFTER_LOGOUT}
  The blog is at localhost, not 127.0.0.1: cookies ignore the port, and two edges on one host
  would overwrite each other's session cookie.

Try it with curl (a bearer token works beside the browser sessions):
  # 1. log in as alice at the issuer's token endpoint (OAuth 2.0 password grant)
  TOKEN=$(curl -s -d {login_form} http://{ISSUER_ADDR}/oauth/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
      -> {login_status} {login_body}

  # 2. a protected route through the edge: the origin sees alice's identity
  curl -s -H "Authorization: Bearer $TOKEN" {site_browser}/api/me
      -> {me_status} {me_body}

  # 3. an admin-only route: refused at the edge
  curl -si -H "Authorization: Bearer $TOKEN" {site_browser}/api/admin/messages
      -> {admin_status} {admin_body}

  # without a token: {no_token_status}; log in as {admin_email} for the admin route
  # public: curl -s {site_browser}/public/hello

By hand, as any client would (authorization code with PKCE, as client `site`):
  http://{ISSUER_ADDR}/authorize?response_type=code&client_id=site&redirect_uri={site_callback_encoded}&scope=openid%20email&state=demo&code_challenge={EXAMPLE_CHALLENGE}&code_challenge_method=S256
  Sign in as alice (or choose "Email me a sign-in link": the link is printed below). The browser
  lands on {site_callback}?code=... (the edge answers 400: it did not start this
  sign-in); exchange the code from the address bar within 60 s:
  curl -s -u site:{site_secret} -d grant_type=authorization_code -d code=CODE -d redirect_uri={site_callback} -d code_verifier={EXAMPLE_VERIFIER} http://{ISSUER_ADDR}/oauth/token
  Sign out of the issuer at http://{ISSUER_ADDR}/session/end

Ctrl-C stops everything."#,
            site_browser = SITE.browser,
            site_origin = SITE.origin_addr,
            blog_browser = BLOG.browser,
            blog_origin = BLOG.origin_addr,
            site_jwks = SITE.jwks_url(),
            blog_jwks = BLOG.jwks_url(),
            site_callback = SITE.callback(),
            site_callback_encoded = SITE.callback().replace(':', "%3A").replace('/', "%2F"),
            site_secret = stack.secret(SITE.client),
            issuer = stack.binaries.join("issuer").display(),
            data = stack.issuer_data.display(),
            alice_email = alice.email,
            alice_role = alice.role,
            alice_password = alice.password,
            admin_email = admin.email,
            admin_role = admin.role,
            admin_password = admin.password,
            login_status = self.login.status,
            login_body = shorten_tokens(&self.login.body),
            me_status = self.me.status,
            me_body = self.me.body.trim(),
            admin_status = self.admin_route.status,
            admin_body = self.admin_route.body.trim(),
            no_token_status = self.no_token.status,
        );
    }
}

/// A JSON body with its long strings (tokens) cut short, to fit a line.
fn shorten_tokens(body: &str) -> String {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.trim().to_owned();
    };
    for value in fields.values_mut() {
        if let Some(text) = value.as_str()
            && text.len() > 24
        {
            *value = format!("{}...", text.chars().take(12).collect::<String>()).into();
        }
    }
    serde_json::Value::Object(fields).to_string()
}

/// An HTTP answer: the status, the head (status line and headers) and the body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The value of the header `name` (the first, if repeated).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A minimal HTTP/1.1 request (the stack only listens on loopback), with `headers` (a `host` among
/// them replaces the address) and an optional form body.
fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Result<Answer> {
    let address: SocketAddr = address.parse().context("an ip:port address")?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = form.unwrap_or_default();
    if form.is_some() {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    write!(stream, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").context("no end of the headers")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = &response[split + 4..];
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no HTTP status")?;
    let chunked = head.lines().any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Ok(Answer { status, head, body: String::from_utf8_lossy(&body).into_owned() })
}

/// The body of a chunked response.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") {
        let size =
            std::str::from_utf8(&body[..line_end]).ok().and_then(|size| usize::from_str_radix(size.trim(), 16).ok());
        let rest = &body[line_end + 2..];
        match size {
            Some(size) if size > 0 && rest.len() >= size => {
                out.extend_from_slice(&rest[..size]);
                body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_keys_are_base64url_without_padding() {
        let bytes: Vec<u8> = (0..32).collect();
        // The key of tests/tests/sessions.rs: bytes 0 to 31.
        assert_eq!(base64url(&bytes), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&random_bytes::<32>().expect("random")).len(), 43);
    }

    #[test]
    fn the_blogs_config_is_wrangler_toml_without_its_build() {
        let root = devtools::workspace_root();
        let state = tempfile_dir();
        let stack = Stack {
            root: root.clone(),
            state: state.clone(),
            binaries: PathBuf::new(),
            issuer_data: PathBuf::new(),
            secrets: Vec::new(),
            parts: Vec::new(),
        };
        let config = std::fs::read_to_string(stack.prebuilt_config().expect("written")).expect("read");
        let _ = std::fs::remove_dir_all(&state);
        assert!(config.starts_with("name = \"portcullis-edge-blog\"\nmain = \""), "{config}");
        assert!(config.contains(&format!("{:?}", root.join("edge/build/index.js").display().to_string())));
        assert!(!config.contains("\n[build]") && !config.contains("cargo xtask build-worker"), "{config}");
        assert!(!config.contains("name = \"portcullis-edge\"\n") && !config.contains("main = \"edge/"), "{config}");
        for kept in
            ["[vars]", "[vars.POLICY]", "class_name = \"BrowserSession\"", "name = \"SESSIONS\"", "[[migrations]]"]
        {
            assert!(config.contains(kept), "{kept}: {config}");
        }
    }

    /// A new empty folder in the system's temporary folder.
    fn tempfile_dir() -> PathBuf {
        let name =
            format!("xtask-dev-test-{}-{}", std::process::id(), base64url(&random_bytes::<6>().expect("random")));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("a temp folder");
        dir
    }
}
