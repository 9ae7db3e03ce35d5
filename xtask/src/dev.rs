//! `cargo xtask dev`: the whole stack on this machine. The issuer on SQLite, the demo origin, and
//! the edge Worker under `wrangler dev` in front of it, each in its own process group, with their
//! logs in `.dev/`. The edge signs its assertions to the origin with a key new each run (`issuer
//! keys new-edge-key`, handed to wrangler as the secret `ASSERTION_KEYS` in `.dev/edge.vars`); the
//! origin verifies them against the edge's published keys. Registers the edge as an OAuth client,
//! prints the URLs and example requests (curl, and a browser sign-in), then the sign-in links the
//! issuer writes to its development outbox as they arrive; Ctrl-C stops everything it started.

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
/// Where the demo origin listens (the `ORIGIN_URL` of wrangler.toml's `[vars]`).
const ORIGIN_ADDR: &str = "127.0.0.1:3000";
/// The `aud` of the edge's assertions: wrangler.toml's `ORIGIN_URL`, exactly.
const ORIGIN_URL: &str = "http://127.0.0.1:3000";
/// The `iss` of the edge's assertions (the edge's default `ASSERTION_ISSUER`).
const EDGE_ISSUER: &str = "portcullis-edge";
/// Where the edge publishes the public halves of its assertion keys.
const EDGE_JWKS_URL: &str = "http://127.0.0.1:8787/_portcullis/jwks.json";
/// Where `wrangler dev` serves the Worker.
const EDGE_ADDR: &str = "127.0.0.1:8787";
/// wrangler's inspector (it defaults to 9229, which another Node process may hold).
const INSPECTOR_PORT: &str = "9239";
/// Where the issuer sends a browser back to after a sign-in for the edge (the edge's callback).
const EDGE_CALLBACK: &str = "http://127.0.0.1:8787/_portcullis/callback";
/// The PKCE pair of the printed browser example: RFC 7636 Appendix B's (a real client makes a
/// new one for each sign-in).
const EXAMPLE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const EXAMPLE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// How long each part may take to answer after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the stack until Ctrl-C (or until one of its processes stops).
pub(crate) fn dev(root: &Path) -> Result<()> {
    for (what, address) in [("issuer", ISSUER_ADDR), ("demo origin", ORIGIN_ADDR), ("edge", EDGE_ADDR)] {
        TcpListener::bind(address)
            .with_context(|| format!("{address} (for the {what}) is in use: is another `cargo xtask dev` running?"))?;
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
    stack.wait_until_ready()?;
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

/// The three processes of the stack.
struct Stack {
    root: PathBuf,
    /// Where cargo put the debug binaries.
    binaries: PathBuf,
    issuer_data: PathBuf,
    parts: Vec<Part>,
}

impl Stack {
    fn start(root: &Path, state: &Path, tools: &Tools) -> Result<Self> {
        let issuer_data = state.join("issuer");
        let binaries = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), |dir| root.join(dir))
            .join("debug");
        let mut stack = Self { root: root.to_owned(), binaries, issuer_data, parts: Vec::new() };

        let mut issuer = Command::new(stack.binaries.join("issuer"));
        issuer.arg("serve");
        stack.issuer_env(&mut issuer);
        stack.spawn("issuer", issuer, state)?;

        // The origin starts first: it fetches the edge's keys on the first request that needs them.
        let mut origin = Command::new(stack.binaries.join("demo-origin"));
        origin.args(["--edge-jwks-url", EDGE_JWKS_URL, "--edge-issuer", EDGE_ISSUER, "--origin-url", ORIGIN_URL]);
        origin.arg(ORIGIN_ADDR);
        stack.spawn("demo origin", origin, state)?;

        let edge_vars = stack.edge_key_file(state)?;
        let (ip, port) = EDGE_ADDR.split_once(':').context("EDGE_ADDR is ip:port")?;
        let mut edge = Command::new(&tools.wrangler);
        edge.args(["dev", "--ip", ip, "--port", port, "--inspector-port", INSPECTOR_PORT, "--persist-to"])
            .arg(state.join("wrangler"))
            .arg("--env-file")
            .arg(&edge_vars)
            .envs(devtools::WRANGLER_ENV)
            .current_dir(root);
        stack.spawn("edge", edge, state)?;
        Ok(stack)
    }

    /// A new edge key set (`issuer keys new-edge-key`) in `state/edge.vars` (mode 0600), the form
    /// `wrangler dev --env-file` reads secrets in: the key stays out of command lines and logs
    /// (wrangler shows a secret's value as hidden), as `wrangler secret put` keeps it in production.
    fn edge_key_file(&self, state: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
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
        // One line of JSON with no `'` (base64url and fixed member names): safe in single quotes.
        if !keys.starts_with('{') || keys.contains(['\'', '\n']) {
            bail!("issuer keys new-edge-key printed no key set on one line");
        }
        let path = state.join("edge.vars");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(file, "ASSERTION_KEYS='{keys}'").with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
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

    fn spawn(&mut self, name: &'static str, mut command: Command, state: &Path) -> Result<()> {
        let log = self.log_in(state, name);
        let group = ProcessGroup::spawn_logged(&mut command, &log)
            .with_context(|| format!("cannot start the {name} (log {})", log.display()))?;
        self.parts.push(Part { name, group, log });
        Ok(())
    }

    fn log_in(&self, state: &Path, name: &str) -> PathBuf {
        state.join(format!("{}.log", name.replace(' ', "-")))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.parts.iter().find(|part| part.name == name).map_or_else(PathBuf::new, |part| part.log.clone())
    }

    /// The name of a part that has stopped, if any.
    fn exited(&mut self) -> Option<&'static str> {
        self.parts.iter_mut().find_map(|part| (!part.group.is_running()).then_some(part.name))
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let probes = [
            ("issuer", ISSUER_ADDR, "/healthz"),
            ("demo origin", ORIGIN_ADDR, "/public/hello"),
            ("edge", EDGE_ADDR, "/_portcullis/jwks.json"),
        ];
        for (name, address, path) in probes {
            let deadline = Instant::now() + READY_TIMEOUT;
            print!("waiting for the {name} ...");
            let _ = std::io::stdout().flush();
            loop {
                if matches!(http_request(address, "GET", path, None, None), Ok((200, _))) {
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

    /// Registers the edge as a confidential client of browser sign-in; returns its secret.
    fn add_edge_client(&self) -> Result<String> {
        let mut command = Command::new(self.binaries.join("issuer"));
        command.args(["clients", "add", "edge", "--redirect-uri", EDGE_CALLBACK]);
        command.args(["--post-logout-redirect-uri", &format!("http://{EDGE_ADDR}/")]);
        self.issuer_env(&mut command);
        let output = command.stderr(Stdio::null()).output().context("cannot run issuer clients add")?;
        if !output.status.success() {
            bail!("issuer clients add edge failed ({})", output.status);
        }
        let printed: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("issuer clients add printed no JSON")?;
        printed["client_secret"].as_str().map(str::to_owned).context("issuer clients add printed no client_secret")
    }

    /// Creates the demo users and the edge's client, then runs the example requests the banner
    /// shows, for real.
    fn demo(&self) -> Result<Demo> {
        let users = [DemoUser::new("alice@example.com", "reader")?, DemoUser::new("admin@example.com", "admin")?];
        for user in &users {
            self.add_user(user)?;
        }
        let edge_secret = self.add_edge_client()?;
        let login = http_request(ISSUER_ADDR, "POST", "/oauth/token", None, Some(&users[0].login_form()))?;
        let token = serde_json::from_str::<serde_json::Value>(&login.1)
            .ok()
            .and_then(|body| body["access_token"].as_str().map(str::to_owned))
            .with_context(|| format!("the login answered {} without an access token", login.0))?;
        let me = http_request(EDGE_ADDR, "GET", "/api/me", Some(&token), None)?;
        let admin_route = http_request(EDGE_ADDR, "GET", "/api/admin/messages", Some(&token), None)?;
        let no_token = http_request(EDGE_ADDR, "GET", "/api/me", None, None)?;
        Ok(Demo { users, edge_secret, login, me, admin_route, no_token })
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
        let mut bytes = [0_u8; 9];
        File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).context("no /dev/urandom")?;
        let password = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self { email, role, password })
    }

    /// The form of a password-grant login (the values need no percent-encoding).
    fn login_form(&self) -> String {
        format!("grant_type=password&username={}&password={}", self.email, self.password)
    }
}

/// Answers to the example requests: status and body.
struct Demo {
    users: [DemoUser; 2],
    edge_secret: String,
    login: (u16, String),
    me: (u16, String),
    admin_route: (u16, String),
    no_token: (u16, String),
}

impl Demo {
    fn print(&self, stack: &Stack) {
        let [alice, admin] = &self.users;
        let login_form = alice.login_form().replace('&', " -d ");
        println!(
            r#"
Portcullis is running (logs in {logs}):
  edge (wrangler dev)  http://{EDGE_ADDR}      policy: wrangler.toml [vars.POLICY]
  issuer               http://{ISSUER_ADDR}      JWKS: http://{ISSUER_ADDR}/.well-known/jwks.json
  demo origin          http://{ORIGIN_ADDR}      (reach it through the edge: /api/* needs the edge's assertion)
  edge status          http://{EDGE_ADDR}/_portcullis/status   (for a token with the admin role)
  edge assertion keys  {EDGE_JWKS_URL}   (the secret: {edge_vars}, new each run)

Users (new passwords each run; more with `{issuer} users add EMAIL --role ROLE`, with
PORTCULLIS_DATA_DIR={data}):
  {alice_email:<19} role {alice_role:<7} password {alice_password}
  {admin_email:<19} role {admin_role:<7} password {admin_password}

Try it:
  # 1. log in as alice at the issuer's token endpoint (OAuth 2.0 password grant)
  TOKEN=$(curl -s -d {login_form} http://{ISSUER_ADDR}/oauth/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
      -> {login_status} {login_body}

  # 2. a protected route through the edge: the origin sees alice's identity
  curl -s -H "Authorization: Bearer $TOKEN" http://{EDGE_ADDR}/api/me
      -> {me_status} {me_body}

  # 3. an admin-only route: refused at the edge
  curl -si -H "Authorization: Bearer $TOKEN" http://{EDGE_ADDR}/api/admin/messages
      -> {admin_status} {admin_body}

  # without a token: {no_token_status}; log in as {admin_email} for the admin route
  # public: curl -s http://{EDGE_ADDR}/public/hello

In a browser: sign in at the issuer (authorization code with PKCE; the edge is client `edge`):
  http://{ISSUER_ADDR}/authorize?response_type=code&client_id=edge&redirect_uri=http%3A%2F%2F127.0.0.1%3A8787%2F_portcullis%2Fcallback&scope=openid%20email&state=demo&code_challenge={EXAMPLE_CHALLENGE}&code_challenge_method=S256
  Sign in as alice (or choose "Email me a sign-in link": the link is printed below). The browser
  lands on {EDGE_CALLBACK}?code=...; exchange the code within 60 s:
  curl -s -u edge:{edge_secret} -d grant_type=authorization_code -d code=CODE -d redirect_uri={EDGE_CALLBACK} -d code_verifier={EXAMPLE_VERIFIER} http://{ISSUER_ADDR}/oauth/token
  A second visit to the first URL signs in without a password (the issuer's session); sign out
  at http://{ISSUER_ADDR}/session/end

Ctrl-C stops everything."#,
            logs = stack.root.join(".dev").display(),
            edge_vars = stack.root.join(".dev").join("edge.vars").display(),
            issuer = stack.binaries.join("issuer").display(),
            data = stack.issuer_data.display(),
            alice_email = alice.email,
            alice_role = alice.role,
            alice_password = alice.password,
            admin_email = admin.email,
            admin_role = admin.role,
            admin_password = admin.password,
            login_status = self.login.0,
            login_body = shorten_tokens(&self.login.1),
            me_status = self.me.0,
            me_body = self.me.1.trim(),
            admin_status = self.admin_route.0,
            admin_body = self.admin_route.1.trim(),
            no_token_status = self.no_token.0,
            edge_secret = self.edge_secret,
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

/// A minimal HTTP/1.1 request (the stack only listens on 127.0.0.1), with an optional bearer
/// token and form body: the status and the body.
fn http_request(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    form: Option<&str>,
) -> Result<(u16, String)> {
    let address: SocketAddr = address.parse().context("an ip:port address")?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let body = form.unwrap_or_default();
    let content_type = if form.is_some() { "Content-Type: application/x-www-form-urlencoded\r\n" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").context("no end of the headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no HTTP status")?;
    let chunked = head.lines().any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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
