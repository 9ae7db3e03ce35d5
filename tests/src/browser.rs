//! A real browser for the tests: Debian's headless Chromium, driven through WebDriver by a private
//! chromedriver ([`devtools::chromedriver::ChromeDriver`], in its own process group, stopped with
//! every browser it started when the [`Browser`] is dropped) with fantoccini over plain HTTP.
//!
//! The helpers are what a test of the issuer's pages needs: open a URL, find elements by CSS,
//! fill fields, click and submit, wait for the URL, read the page's text, and read what the browser
//! itself recorded: its cookies with their attributes ([`Browser::cookies`], WebDriver's cookie
//! endpoint), its console ([`Browser::console`], where Chromium reports Content-Security-Policy
//! violations) and the responses it received with their headers ([`Browser::responses`], from
//! Chromium's performance log). Like [`crate::harness`], they panic with what failed; the
//! fantoccini client ([`Browser::client`]) is there for whatever else a test needs, errors included.
//!
//! `cargo xtask test` installs Chromium and chromedriver (Debian's `chromium` and
//! `chromium-driver`); without them [`Browser::start`] panics saying so.

use devtools::chromedriver::{CHROMIUM, ChromeDriver};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Chromium's command line here (besides `--user-data-dir`, and `--no-sandbox` as root): headless,
/// nothing that talks to the network by itself (component updates, sync, background fetches,
/// QUIC), shared memory in the temporary folder rather than a small `/dev/shm`, and no host name
/// but `localhost` and 127.0.0.1 resolved: the tests' pages are there, and nothing else is reached.
pub const CHROMIUM_ARGS: [&str; 9] = [
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
];

/// How long a page may take to load, and a script to run, before WebDriver gives up.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A cookie as the browser holds it (WebDriver's cookie object, as Chromium reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Its `Path`.
    pub path: Option<String>,
    /// Its domain (the host it was set by, for a host-only cookie).
    pub domain: Option<String>,
    /// Whether it is `Secure`.
    pub secure: bool,
    /// Whether it is `HttpOnly` (invisible to the page's scripts).
    pub http_only: bool,
    /// Its `SameSite` (`"Strict"`, `"Lax"` or `"None"`) as the browser reports it.
    pub same_site: Option<String>,
    /// When it expires (seconds since 1970); `None` for a session cookie.
    pub expiry: Option<u64>,
}

impl Cookie {
    fn from_webdriver(cookie: &Value) -> Option<Self> {
        let text = |name: &str| cookie.get(name).and_then(Value::as_str).map(str::to_owned);
        let flag = |name: &str| cookie.get(name).and_then(Value::as_bool).unwrap_or(false);
        Some(Self {
            name: text("name")?,
            value: text("value")?,
            path: text("path"),
            domain: text("domain"),
            secure: flag("secure"),
            http_only: flag("httpOnly"),
            same_site: text("sameSite"),
            expiry: cookie.get("expiry").and_then(Value::as_u64),
        })
    }
}

/// A line of the browser's console (Chromium's `browser` log), such as a Content-Security-Policy
/// violation (level `SEVERE`, source `security`; in Chromium 156 "Executing inline script violates
/// the following Content Security Policy directive ... The action has been blocked.").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// Where it came from (`security`, `javascript`, `console-api`, `network`, ...), when said.
    pub source: Option<String>,
    /// The message (with the URL and line it came from, as Chromium prints it).
    pub message: String,
}

/// A response as the browser received it, redirects included (each hop is its own response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The URL requested.
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The headers as received, names in lower case (Chromium joins the values of a header sent
    /// more than once, such as `Set-Cookie`, with newlines).
    pub headers: Vec<(String, String)>,
    /// The `Set-Cookie` lines Chromium refused, each with its reasons (`SecureOnly`,
    /// `InvalidPrefix`, ...).
    pub blocked_cookies: Vec<(String, Vec<String>)>,
}

impl Response {
    /// The value of header `name` (any case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// Headless Chromium in a WebDriver session of its own chromedriver, with a new profile folder.
pub struct Browser {
    client: WebDriver,
    /// Declared after the client: dropped (stopped with its browsers) once the client is gone.
    driver: ChromeDriver,
    console: Vec<ConsoleEntry>,
    /// The `Network.*` events of the performance log read so far.
    network: Vec<Value>,
}

impl Browser {
    /// Starts chromedriver (its log `dir/chromedriver.log`) and a Chromium session with a new
    /// profile in `dir/chromium-profile` (which must not exist yet); panics with chromedriver's log
    /// when either fails.
    pub async fn start(dir: &Path) -> Self {
        let log = dir.join("chromedriver.log");
        let driver = tokio::task::spawn_blocking(move || ChromeDriver::start(&log))
            .await
            .expect("chromedriver's start thread")
            .unwrap_or_else(|error| panic!("start chromedriver: {error}"));
        let profile = dir.join("chromium-profile");
        std::fs::create_dir(&profile)
            .unwrap_or_else(|error| panic!("create the new profile folder {}: {error}", profile.display()));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(&profile))
            .connect(&driver.url())
            .await
            .unwrap_or_else(|error| {
                panic!("open a Chromium session ({}): {error}\n{}", driver.url(), driver.log_text())
            });
        Self { client, driver, console: Vec::new(), network: Vec::new() }
    }

    /// The fantoccini client, for what the helpers here do not cover.
    pub fn client(&self) -> &WebDriver {
        &self.client
    }

    /// Everything chromedriver has logged so far.
    pub fn driver_log(&self) -> String {
        self.driver.log_text()
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// The URL of the page shown now.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap_or_else(|error| panic!("the current URL: {error}")).into()
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.client.title().await.unwrap_or_else(|error| panic!("the page's title: {error}"))
    }

    /// The first element matching the CSS selector `css`; panics when there is none.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(error) => panic!("find {css} on {}: {error}", self.url_or_error().await),
        }
    }

    /// Whether an element matches the CSS selector `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        self.client.find_all(Locator::Css(css)).await.is_ok_and(|found| !found.is_empty())
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|error| panic!("the text of {css}: {error}"))
    }

    /// Clears the field matching `css` and types `value` into it, as a person would.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap_or_else(|error| panic!("clear {css}: {error}"));
        field.send_keys(value).await.unwrap_or_else(|error| panic!("type into {css}: {error}"));
    }

    /// Clicks the element matching `css` (a submit button submits its form; a link is followed).
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    /// Submits the form matching `css` as pressing Enter or its button would: `requestSubmit()`,
    /// which validates it and fires its `submit` event.
    pub async fn submit(&self, css: &str) {
        let form = self.find(css).await;
        let element = serde_json::to_value(&form).unwrap_or_else(|error| panic!("{css} as JSON: {error}"));
        self.client
            .execute("arguments[0].requestSubmit()", vec![element])
            .await
            .unwrap_or_else(|error| panic!("submit {css}: {error}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|error| panic!("run {script:?}: {error}"))
    }

    /// Waits (at most `limit`) until the current URL satisfies `done`, and returns it; panics with
    /// the last URL and the console otherwise.
    pub async fn wait_for_url(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let url = self.url().await;
            if done(&url) {
                return url;
            }
            if Instant::now() >= deadline {
                let console = self.console().await;
                panic!("the URL is still {url} after {limit:?}; the console: {console:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every cookie the browser would send to the current page, with its attributes, from
    /// WebDriver's cookie endpoint (`GET /session/{id}/cookie`), HttpOnly ones included.
    pub async fn cookies(&self) -> Vec<Cookie> {
        let answer = match self.client.issue_cmd(Command::get("cookie")).await {
            Ok(answer) => answer,
            Err(error) => panic!("the cookies of {}: {error}", self.url_or_error().await),
        };
        let cookies = answer.as_array().unwrap_or_else(|| panic!("the cookies are not a list: {answer}"));
        cookies
            .iter()
            .map(|cookie| Cookie::from_webdriver(cookie).unwrap_or_else(|| panic!("not a cookie: {cookie}")))
            .collect()
    }

    /// The cookie named `name` that the browser would send to the current page; panics listing the
    /// cookies it has when there is none.
    pub async fn cookie(&self, name: &str) -> Cookie {
        let cookies = self.cookies().await;
        let found = cookies.iter().find(|cookie| cookie.name == name).cloned();
        found.unwrap_or_else(|| panic!("no cookie {name}; the browser has {cookies:#?}"))
    }

    /// Every line the browser's console has had since the session started (Chromium hands each
    /// line out once; they are kept here).
    pub async fn console(&mut self) -> Vec<ConsoleEntry> {
        for entry in self.log("browser").await {
            let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
            self.console.push(ConsoleEntry {
                level: text("level").unwrap_or_default(),
                source: text("source"),
                message: text("message").unwrap_or_default(),
            });
        }
        self.console.clone()
    }

    /// Waits (at most `limit`) for a line of the console that satisfies `wanted`, and returns it;
    /// panics with the console otherwise. Chromium reports some lines (a Content-Security-Policy
    /// violation) a moment after the page has loaded.
    pub async fn wait_for_console(&mut self, limit: Duration, wanted: impl Fn(&ConsoleEntry) -> bool) -> ConsoleEntry {
        let deadline = Instant::now() + limit;
        loop {
            let console = self.console().await;
            if let Some(entry) = console.iter().find(|entry| wanted(entry)) {
                return entry.clone();
            }
            assert!(Instant::now() < deadline, "no such line on the console within {limit:?}: {console:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every response the browser has received since the session started, in order, with their
    /// status and headers as the browser saw them, from Chromium's performance log: a redirect is
    /// its own response (`Network.requestWillBeSent`'s `redirectResponse`), a page or resource
    /// the last one (`Network.responseReceived`), the headers those events leave out (`Set-Cookie`)
    /// and the cookies Chromium refused from `Network.responseReceivedExtraInfo`. A request
    /// blocked before it was sent has no response.
    pub async fn responses(&mut self) -> Vec<Response> {
        for entry in self.log("performance").await {
            let Some(event) = entry.get("message").and_then(Value::as_str) else { continue };
            let Ok(mut event) = serde_json::from_str::<Value>(event) else { continue };
            let event = event["message"].take();
            if event["method"].as_str().is_some_and(|method| method.starts_with("Network.")) {
                self.network.push(event);
            }
        }
        responses(&self.network)
    }

    /// Ends the WebDriver session (Chromium exits) and stops chromedriver.
    pub async fn close(self) {
        let Self { client, mut driver, .. } = self;
        if let Err(error) = client.close().await {
            eprintln!("closing the Chromium session: {error}");
        }
        tokio::task::spawn_blocking(move || driver.stop()).await.expect("chromedriver's stop thread");
    }

    /// The entries of Chromium's log `kind` (`browser`, `performance`) since the last read.
    async fn log(&self, kind: &str) -> Vec<Value> {
        let answer = self
            .client
            .issue_cmd(Command::post("se/log", json!({ "type": kind })))
            .await
            .unwrap_or_else(|error| panic!("Chromium's {kind} log: {error}"));
        match answer {
            Value::Array(entries) => entries,
            other => panic!("Chromium's {kind} log is not a list: {other}"),
        }
    }

    /// The current URL, or why it cannot be had (for messages).
    async fn url_or_error(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.into(),
            Err(error) => format!("(no URL: {error})"),
        }
    }
}

/// The responses in Chromium's `Network.*` events, in order (see [`Browser::responses`]): each
/// with the headers of its `Network.responseReceivedExtraInfo` (the same request and status, in
/// order) when there is one, the filtered headers of the response's own event otherwise.
fn responses(network: &[Value]) -> Vec<Response> {
    let headers = |headers: &Value| -> Vec<(String, String)> {
        headers.as_object().map_or_else(Vec::new, |headers| {
            headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
    };
    let status = |status: &Value| status.as_u64().and_then(|status| u16::try_from(status).ok()).unwrap_or(0);
    let mut extra: Vec<Option<&Value>> = network
        .iter()
        .map(|event| (event["method"] == "Network.responseReceivedExtraInfo").then_some(&event["params"]))
        .collect();
    let mut found = Vec::new();
    for event in network {
        let params = &event["params"];
        let response = match event["method"].as_str() {
            Some("Network.responseReceived") => &params["response"],
            Some("Network.requestWillBeSent") if params["redirectResponse"].is_object() => &params["redirectResponse"],
            _ => continue,
        };
        let mut response = Response {
            url: response["url"].as_str().unwrap_or_default().to_owned(),
            status: status(&response["status"]),
            headers: headers(&response["headers"]),
            blocked_cookies: Vec::new(),
        };
        let matching = extra.iter_mut().find(|info| {
            info.is_some_and(|info| {
                info["requestId"] == params["requestId"] && status(&info["statusCode"]) == response.status
            })
        });
        if let Some(info) = matching.and_then(Option::take) {
            response.headers = headers(&info["headers"]);
            let blocked = info["blockedCookies"].as_array().map(Vec::as_slice).unwrap_or_default();
            response.blocked_cookies = blocked
                .iter()
                .map(|cookie| {
                    let line = cookie["cookieLine"].as_str().unwrap_or_default().to_owned();
                    let reasons = cookie["blockedReasons"].as_array().map(Vec::as_slice).unwrap_or_default();
                    (line, reasons.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                })
                .collect();
        }
        found.push(response);
    }
    found
}

/// The session's capabilities: Chromium at [`CHROMIUM`] with [`CHROMIUM_ARGS`], `--no-sandbox`
/// as root (Chromium's sandbox refuses root) and the profile folder `profile`; its console and
/// network events kept for [`Browser::console`] and [`Browser::responses`]; [`PAGE_LOAD_TIMEOUT`].
fn capabilities(profile: &Path) -> Map<String, Value> {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
    if devtools::postgres::is_root() {
        args.push("--no-sandbox".to_owned());
    }
    args.push(format!("--user-data-dir={}", profile.display()));
    let limit = u64::try_from(PAGE_LOAD_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    let capabilities = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": { "pageLoad": limit, "script": limit, "implicit": 0 },
        // The first tab opens about:blank: Debian's Chromium would open its new-tab page, which
        // first tries the default search engine's (https://start.duckduckgo.com/), and chromedriver
        // waits for that before its first command (5 s here, until the name fails to resolve).
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args,
            "prefs": { "session.restore_on_startup": 4, "session.startup_urls": ["about:blank"] },
        },
        "goog:loggingPrefs": { "browser": "ALL", "performance": "ALL" },
    });
    match capabilities {
        Value::Object(capabilities) => capabilities,
        _ => Map::new(),
    }
}

/// A WebDriver command fantoccini has no method for, on the session: `GET` or `POST`
/// `/session/{id}/<path>`.
#[derive(Debug)]
struct Command {
    path: &'static str,
    body: Option<Value>,
}

impl Command {
    fn get(path: &'static str) -> Self {
        Self { path, body: None }
    }

    fn post(path: &'static str, body: Value) -> Self {
        Self { path, body: Some(body) }
    }
}

impl WebDriverCompatibleCommand for Command {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/{}", session_id.unwrap_or_default(), self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        match &self.body {
            None => (axum::http::Method::GET, None),
            Some(body) => (axum::http::Method::POST, Some(body.to_string())),
        }
    }
}
