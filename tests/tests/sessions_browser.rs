//! Browser sessions at the edge in a real browser: headless Chromium ([`tests::browser::Browser`])
//! against the Worker under `wrangler dev` (Durable Objects included) and the real issuer, with an
//! axum origin behind the edge that shows the subject the edge vouched for.
//!
//! In order, in one browser: a protected page opened without a session goes through the issuer's
//! login page and comes back to itself, signed in; the session cookie is HttpOnly (not in
//! `document.cookie`), Secure, SameSite=Lax, Path=/ and small, the CSRF cookie readable by the
//! page; fifty parallel `fetch`es of the page once its access token needs refreshing all succeed
//! with one refresh at the issuer, and a reload shows nothing of it; the attacks (a forged
//! callback, open redirects through the path, a logout posted by pages of other origins that know
//! the CSRF token) fail and the session survives them; then the page's own logout form ends the
//! session at the edge and at the issuer and comes back to the site, and the protected page asks
//! for a sign-in again. Each page is described (title, heading, text) and photographed (PNG, in
//! the test's temporary folder).
//!
//! A second site, the blog, has an edge of its own (its own `wrangler dev`, client `blog`, secrets,
//! cookie key and state) in front of an origin of its own: once signed in at the site, the blog's
//! protected page signs in without a password (the issuer's single sign-on), with the same subject
//! and a session cookie of the blog's own; the site's logout ends the blog's session too (single
//! logout: the blog's access token is listed at the issuer's `/revoked`), and within the blog
//! edge's revocation bound its protected page asks for a sign-in again.
//!
//! The edge runs on `http://localhost:<port>`, the blog's on `http://127.0.0.1:<port>` and the
//! issuer on `http://127.0.0.1:<port>`: the site apart from the others, as in production; the blog
//! shares its host (cookies ignore the port) with the issuer, whose cookies have names of their own.
//!
//! Needs the Worker (`cargo xtask build-worker`), the issuer binary, and Debian's chromium and
//! chromium-driver (`cargo xtask test` provides all three).

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tests::browser::Browser;
use tests::harness::{Client, SESSION_OBJECTS, STATUS_SECRET, Wrangler, free_port, poll};
use tests::issuer::{AUDIENCE, Issuer};
use tests::signin::add_user;

/// The issuer's access tokens live this long here: the edge refreshes them 10 s before.
const ACCESS_TOKEN_SECONDS: u64 = 13;
/// The edge's session cookie.
const SESSION_COOKIE: &str = "__Host-portcullis-edge-session";
/// The edge's CSRF cookie for logout.
const CSRF_COOKIE: &str = "__Host-portcullis-edge-csrf";
/// How long a revoked access token may still pass at an edge (`REVOCATION_MAX_AGE_SECONDS`).
const REVOCATION_MAX_AGE: Duration = Duration::from_secs(2);
/// The user who signs in.
const EMAIL: &str = "alice@example.com";
/// Her password.
const PASSWORD: &str = "correct horse battery staple";
/// What a navigation (a form, its redirects) may take.
const NAVIGATION: Duration = Duration::from_secs(20);
/// The issuer's login page's title.
const LOGIN_TITLE: &str = "Sign in · Portcullis";

/// The policy (after [`SESSION_OBJECTS`]): a public home page, a protected `/api/*`.
const CONFIG_TAIL: &str = r#"
[vars.POLICY]
[[vars.POLICY.rules]]
path = "/"
access = "public"

[[vars.POLICY.rules]]
path = "/api/*"
access = "authenticated"
"#;

/// Fifty `fetch`es of `/api/me` at once from the page: their statuses and bodies, and the time
/// they took (ms).
const FIFTY_FETCHES: &str = "return (async () => { const started = performance.now(); \
     const answers = await Promise.all(Array.from({ length: 50 }, () => \
       fetch('/api/me', { credentials: 'same-origin' }).then(async answer => [answer.status, await answer.text()]))); \
     return { answers, ms: performance.now() - started }; })();";

/// The page's logout button, as a site would have it: a form posting the CSRF cookie's value.
const LOGOUT: &str = "const csrf = document.cookie.split('; ').find(pair => pair.startsWith(arguments[0] + '=')); \
     const form = document.createElement('form'); form.method = 'POST'; form.action = '/_portcullis/logout'; \
     const field = document.createElement('input'); field.type = 'hidden'; field.name = 'csrf'; \
     field.value = csrf.slice(arguments[0].length + 1); form.append(field); document.body.append(form); \
     setTimeout(() => form.submit(), 0);";

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The subject the edge vouched for (`X-Auth-Subject`), empty without one.
fn subject(request: &Request) -> String {
    request.headers().get("x-auth-subject").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
}

/// The origin: `/`, a public home page; `/api/page`, a page showing the subject; `/api/me`, the
/// subject as text.
fn origin() -> Router {
    let page = |title: &str, heading: &str, subject: &str| {
        Html(format!(
            "<!doctype html><html><head><title>{title}</title></head><body><h1>{heading}</h1>\
             <p>{}<span id=subject>{}</span></p></body></html>",
            if subject.is_empty() { "Not signed in" } else { "Signed in as " },
            escape(subject)
        ))
    };
    Router::new()
        .route("/", get(move |request: Request| async move { page("Home", "Welcome home", &subject(&request)) }))
        .route(
            "/api/page",
            get(move |request: Request| async move { page("Page", "A protected page", &subject(&request)) }),
        )
        .route("/api/me", get(|request: Request| async move { subject(&request) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
}

/// Another site's page: `/logout?target=URL&csrf=TOKEN` posts a logout form to `URL` with `TOKEN`
/// as soon as it loads (an attacker who knows the CSRF token).
fn attacker() -> Router {
    Router::new().route(
        "/logout",
        get(|Query(params): Query<HashMap<String, String>>| async move {
            let field = |name: &str| escape(params.get(name).map_or("", String::as_str));
            Html(format!(
                "<!doctype html><html><head><title>Win a prize</title></head><body><h1>Win a prize</h1>\
                 <form id=steal method=post action=\"{}\"><input type=hidden name=csrf value=\"{}\"></form>\
                 <script>document.getElementById('steal').submit()</script></body></html>",
                field("target"),
                field("csrf")
            ))
        }),
    )
}

/// Serves `router` on a free port of 127.0.0.1 until the test's runtime ends; its port.
async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a port of 127.0.0.1");
    let port = listener.local_addr().expect("the bound address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// Says what the browser shows now (URL, status as received, title, heading, text) and keeps a
/// screenshot of it as `<shots>/<name>.png`; the description.
async fn describe(browser: &mut Browser, shots: &Path, name: &str) -> String {
    let url = browser.url().await;
    let status = browser.responses().await.iter().rfind(|response| response.url == url).map(|response| response.status);
    let title = browser.title().await;
    let heading = if browser.exists("h1").await { browser.text("h1").await } else { String::new() };
    let text = browser.execute("return document.body ? document.body.innerText : ''", Vec::new()).await;
    let text = text.as_str().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = text.chars().take(160).collect();
    let png = browser.client().screenshot().await.unwrap_or_else(|error| panic!("a screenshot of {url}: {error}"));
    let file = shots.join(format!("{name}.png"));
    std::fs::write(&file, &png).unwrap_or_else(|error| panic!("write {}: {error}", file.display()));
    let status = status.map_or_else(|| "?".to_owned(), |status| status.to_string());
    let line = format!(
        "[{name}] {url} (HTTP {status}): title {title:?}, heading {heading:?}, text {text:?} ({} KiB PNG)",
        png.len() / 1024
    );
    eprintln!("{line}");
    line
}

/// The responses the browser has received since the first `seen` (each hop of a redirect chain is
/// its own), but for the favicon it asks for by itself: status, URL and `Location`.
async fn hops(browser: &mut Browser, seen: usize) -> Vec<(u16, String, String)> {
    let responses = browser.responses().await;
    responses[seen.min(responses.len())..]
        .iter()
        .filter(|response| !response.url.ends_with("/favicon.ico"))
        .map(|response| {
            (response.status, response.url.clone(), response.header("location").unwrap_or_default().to_owned())
        })
        .collect()
}

/// How many responses the browser has received so far.
async fn received(browser: &mut Browser) -> usize {
    browser.responses().await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_in_chromium() {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("{:6.1} s  {what}", started.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().expect("temp dir");
    let shots = dir.path().join("screenshots");
    std::fs::create_dir(&shots).expect("the screenshots' folder");

    // The issuer, with the edge registered as its client (callback and page after logout).
    let mut issuer = Issuer::new("issuer", dir.path(), None);
    issuer.set("access_token_ttl", &format!("{ACCESS_TOKEN_SECONDS}s"));
    issuer.set("revoked_max_age", "1s");
    let edge_port = free_port();
    let edge = format!("http://localhost:{edge_port}");
    let callback = format!("{edge}/_portcullis/callback");
    let home = format!("{edge}/");
    let secret = issuer.add_client("edge", &["--redirect-uri", &callback, "--post-logout-redirect-uri", &home]).await;
    // The blog, another site with an edge of its own, registered as a client of its own.
    let blog_port = free_port();
    assert_ne!(blog_port, edge_port, "two edges, two ports");
    let blog = format!("http://127.0.0.1:{blog_port}");
    let blog_callback = format!("{blog}/_portcullis/callback");
    let blog_home = format!("{blog}/");
    let blog_secret =
        issuer.add_client("blog", &["--redirect-uri", &blog_callback, "--post-logout-redirect-uri", &blog_home]).await;
    add_user(&issuer, EMAIL, PASSWORD, "reader");
    issuer.serve().await;
    let iss = issuer.url().to_owned();

    let origin_port = serve(origin()).await;
    let blog_origin_port = serve(origin()).await;
    let attacker_port = serve(attacker()).await;
    let vars = vec![
        ("ISSUER", iss.clone()),
        ("AUDIENCE", AUDIENCE.to_owned()),
        ("ORIGIN_URL", format!("http://127.0.0.1:{origin_port}")),
        ("LEEWAY_SECONDS", "1".to_owned()),
        ("JWKS_MIN_TTL_SECONDS", "1".to_owned()),
        ("REVOCATION_MAX_AGE_SECONDS", REVOCATION_MAX_AGE.as_secs().to_string()),
        ("STATUS_SECRET", STATUS_SECRET.to_owned()),
        ("SESSION_CLIENT_ID", "edge".to_owned()),
        ("SESSION_CLIENT_SECRET", secret),
        ("SESSION_COOKIE_KEYS", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_owned()),
    ];
    // The blog's edge: the same Worker and policy, its own origin, client, cookie key and state.
    let blog_vars: Vec<(&str, String)> = vars
        .iter()
        .map(|(name, value)| {
            let value = match *name {
                "ORIGIN_URL" => format!("http://127.0.0.1:{blog_origin_port}"),
                "SESSION_CLIENT_ID" => "blog".to_owned(),
                "SESSION_CLIENT_SECRET" => blog_secret.clone(),
                "SESSION_COOKIE_KEYS" => "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8".to_owned(),
                _ => value.clone(),
            };
            (*name, value)
        })
        .collect();
    let blog_dir = dir.path().join("blog");
    std::fs::create_dir(&blog_dir).expect("the blog edge's folder");
    // Both edges start at once, then each is waited for.
    let mut wrangler = Wrangler::start_on(
        edge_port,
        "sessions-browser",
        "build",
        dir.path(),
        &vars,
        &format!("{SESSION_OBJECTS}{CONFIG_TAIL}"),
    );
    let mut blog_wrangler = Wrangler::start_on(
        blog_port,
        "sessions-browser-blog",
        "build",
        &blog_dir,
        &blog_vars,
        &format!("{SESSION_OBJECTS}{CONFIG_TAIL}"),
    );
    // The edge over plain HTTP (no browser): for readiness, and for a stolen cookie's replay.
    let client = Client::new(format!("http://127.0.0.1:{edge_port}"));
    wrangler.ready(&client).await;
    blog_wrangler.ready(&Client::new(blog.clone())).await;
    let browser_dir = dir.path().join("browser");
    std::fs::create_dir(&browser_dir).expect("the browser's folder");
    let mut browser = Browser::start(&browser_dir).await;
    lap("issuer, origins, two wrangler devs and Chromium up");

    // 1. A protected page without a session: the issuer's login page, then back to the page.
    let page = format!("{edge}/api/page?x=1");
    browser.goto(&page).await;
    let login = browser.url().await;
    assert!(login.starts_with(&format!("{iss}/authorize?")), "the login page at the issuer: {login}");
    assert_eq!(browser.title().await, LOGIN_TITLE);
    describe(&mut browser, &shots, "01-login").await;
    browser.fill("#email", EMAIL).await;
    browser.fill("#password", PASSWORD).await;
    let seen = received(&mut browser).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    browser.wait_for_url(NAVIGATION, |url| url == page).await;
    let way_back = hops(&mut browser, seen).await;
    eprintln!("after the login form: {way_back:?}");
    assert_eq!(browser.title().await, "Page");
    let subject = browser.text("#subject").await;
    assert!(!subject.is_empty(), "the origin got a subject");
    describe(&mut browser, &shots, "02-signed-in").await;
    lap("signed in, back on the page");

    // 2. The cookies: the session's invisible to the page's scripts, the CSRF token readable.
    let readable = browser.execute("return document.cookie", Vec::new()).await;
    let readable = readable.as_str().unwrap_or_default().to_owned();
    assert!(!readable.contains(SESSION_COOKIE), "HttpOnly: {readable}");
    assert!(readable.contains(&format!("{CSRF_COOKIE}=")), "the CSRF cookie is readable: {readable}");
    let session = browser.cookie(SESSION_COOKIE).await;
    assert!(session.http_only, "{session:?}");
    assert!(session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Lax"), "{session:?}");
    assert_eq!(session.path.as_deref(), Some("/"), "{session:?}");
    assert_eq!(session.domain.as_deref(), Some("localhost"), "host-only: {session:?}");
    assert!(session.value.len() < 1024, "{} bytes", session.value.len());
    let csrf = browser.cookie(CSRF_COOKIE).await;
    assert!(!csrf.http_only && csrf.secure, "{csrf:?}");
    assert_eq!((csrf.same_site.as_deref(), csrf.path.as_deref()), (Some("Lax"), Some("/")), "{csrf:?}");
    let names: Vec<String> = browser.cookies().await.into_iter().map(|cookie| cookie.name).collect();
    eprintln!(
        "the session cookie in Chromium: httpOnly {}, secure {}, sameSite {:?}, path {:?}, domain {:?}, value {} bytes \
         ({} with its name); the CSRF cookie: httpOnly {}, sameSite {:?}; document.cookie shows {:?}; the browser \
         sends the edge {names:?}",
        session.http_only,
        session.secure,
        session.same_site,
        session.path,
        session.domain,
        session.value.len(),
        SESSION_COOKIE.len() + 1 + session.value.len(),
        csrf.http_only,
        csrf.same_site,
        readable.split('=').next().unwrap_or_default(),
    );
    lap("cookies");

    // 2b. The blog: its protected page signs in without a password (the issuer knows the browser:
    // redirects only, no login page), shows the same subject, and the blog has a session cookie of
    // its own on its host.
    let blog_page = format!("{blog}/api/page?from=site");
    let seen = received(&mut browser).await;
    browser.goto(&blog_page).await;
    let sso = hops(&mut browser, seen).await;
    eprintln!("the blog, signed in at the site: {sso:?}");
    assert_eq!(browser.url().await, blog_page, "back on the blog's page: {sso:?}");
    assert!(
        sso.iter().any(|(status, url, _)| *status >= 300 && url.starts_with(&format!("{iss}/authorize?"))),
        "through the issuer: {sso:?}"
    );
    assert!(
        sso.iter().all(|(status, url, _)| !url.starts_with(&iss) || (300..400).contains(status)),
        "no page at the issuer (no password asked): {sso:?}"
    );
    assert_eq!(browser.title().await, "Page");
    assert_eq!(browser.text("#subject").await, subject, "the same subject at the blog");
    describe(&mut browser, &shots, "02b-blog-signed-in").await;
    let blog_session = browser.cookie(SESSION_COOKIE).await;
    assert_eq!(blog_session.domain.as_deref(), Some("127.0.0.1"), "the blog's host only: {blog_session:?}");
    assert!(blog_session.http_only && blog_session.secure, "{blog_session:?}");
    assert_eq!(blog_session.same_site.as_deref(), Some("Lax"), "{blog_session:?}");
    assert_ne!(blog_session.value, session.value, "a session of the blog's own");
    let blog_cookies: Vec<(String, Option<String>)> =
        browser.cookies().await.into_iter().map(|cookie| (cookie.name, cookie.domain)).collect();
    assert_eq!(
        blog_cookies.iter().filter(|(name, _)| name == SESSION_COOKIE).count(),
        1,
        "the site's session cookie stays on its host: {blog_cookies:?}"
    );
    assert!(blog_cookies.iter().any(|(name, _)| name == CSRF_COOKIE), "the blog's CSRF cookie: {blog_cookies:?}");
    eprintln!(
        "the blog's session cookie: domain {:?}, httpOnly {}, sameSite {:?}, {} bytes; the browser sends the blog \
         {blog_cookies:?}",
        blog_session.domain,
        blog_session.http_only,
        blog_session.same_site,
        blog_session.value.len()
    );
    blog_wrangler.logged(&["signed_in"]).await;
    lap("the blog: signed in without a password");

    // 3. Once the access token needs refreshing (less than 10 s left), fifty parallel fetches from
    // the page: fifty successes, one refresh at the issuer; then a reload shows nothing of it. The
    // token the page was just opened with was issued by then at the latest: 4 s later it has at
    // most 9 s left.
    browser.goto(&page).await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TOKEN_SECONDS - 9)).await;
    let before = issuer.grants_issued("refresh_token").await;
    let fetched = browser.execute(FIFTY_FETCHES, Vec::new()).await;
    let after = issuer.grants_issued("refresh_token").await;
    let answers = fetched["answers"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<u64> = answers.iter().map(|answer| answer[0].as_u64().unwrap_or(0)).collect();
    let ok = statuses.iter().filter(|status| **status == 200).count();
    let same_subject = answers.iter().filter(|answer| answer[1] == json!(subject)).count();
    eprintln!(
        "50 parallel fetch('/api/me') from the page after the token needed refreshing: {ok} x 200, {same_subject} with \
         the subject, {} refresh(es) at the issuer, {:.0} ms (Chromium sends at most 6 at once to one HTTP/1.1 host)",
        after - before,
        fetched["ms"].as_f64().unwrap_or_default()
    );
    assert_eq!(ok, 50, "every fetch succeeds: {statuses:?}");
    assert_eq!(same_subject, 50, "{answers:?}");
    assert_eq!(after - before, 1, "exactly one refresh at the issuer");
    let renewed = browser.cookie(SESSION_COOKIE).await;
    assert_ne!(renewed.value, session.value, "the fetches' answers renewed the cookie");
    let seen = received(&mut browser).await;
    browser.client().refresh().await.expect("reload the page");
    let reloaded = hops(&mut browser, seen).await;
    assert_eq!(browser.url().await, page, "still on the page: {reloaded:?}");
    assert_eq!(browser.text("#subject").await, subject, "still signed in");
    assert!(reloaded.iter().all(|(status, _, _)| *status == 200), "no redirect on the reload: {reloaded:?}");
    eprintln!(
        "the reload: {reloaded:?}; refreshes at the issuer since the fetches: {}",
        issuer.grants_issued("refresh_token").await - after
    );
    describe(&mut browser, &shots, "03-reloaded").await;
    lap("fifty fetches, one refresh, a reload");

    // 5 (before the logout). Attacks. A callback with a state the browser has no flow for: 400.
    let forged = format!("{edge}/_portcullis/callback?code=x&state={}", "A".repeat(43));
    browser.goto(&forged).await;
    let shown = describe(&mut browser, &shots, "04-forged-callback").await;
    assert!(shown.contains("(HTTP 400)"), "{shown}");
    assert!(shown.contains("the sign-in could not be completed"), "{shown}");
    // Open redirects through the path: the edge never sends the browser to evil.example.
    for (name, path) in [("05-double-slash", "//evil.example/"), ("06-encoded-slashes", "/%2F%2Fevil.example")] {
        let target = format!("{edge}{path}");
        let seen = received(&mut browser).await;
        browser.goto(&target).await;
        let chain = hops(&mut browser, seen).await;
        let shown = describe(&mut browser, &shots, name).await;
        let at = url::Url::parse(&browser.url().await).expect("a URL");
        assert_eq!(at.host_str(), Some("localhost"), "{path}: {chain:?}");
        assert!(chain.iter().all(|(_, _, location)| location.is_empty()), "no redirect at all: {chain:?}");
        assert!(shown.contains("(HTTP 403)"), "{path}: the policy refuses the ambiguous path: {shown}");
    }
    // A logout posted by another origin's page that even knows the CSRF token: from another port
    // of the same host (same site: the cookies go along) and from another site.
    let csrf_value = browser.cookie(CSRF_COOKIE).await.value;
    for (name, host) in [("07-logout-same-site", "localhost"), ("08-logout-cross-site", "127.0.0.1")] {
        let lure = url::Url::parse_with_params(
            &format!("http://{host}:{attacker_port}/logout"),
            [("target", format!("{edge}/_portcullis/logout")), ("csrf", csrf_value.clone())],
        )
        .expect("the attacker's URL");
        let seen = received(&mut browser).await;
        browser.goto(lure.as_str()).await;
        browser.wait_for_url(NAVIGATION, |url| url.starts_with(&format!("{edge}/_portcullis/logout"))).await;
        let chain = hops(&mut browser, seen).await;
        let shown = describe(&mut browser, &shots, name).await;
        assert!(shown.contains("(HTTP 403)"), "a logout from {host}:{attacker_port}: {chain:?} {shown}");
        let refused = wrangler.logged(&["logout_refused"]).await;
        eprintln!("the edge's log: {}", refused.lines().last().unwrap_or_default().trim());
    }
    browser.goto(&page).await;
    assert_eq!(browser.url().await, page, "the session survived the attacks");
    assert_eq!(browser.text("#subject").await, subject);
    lap("attacks refused, still signed in");

    // 4. Logout from the page's own form: the issuer's logout, back home; the session is gone at
    // the edge (a copy of its cookie stops working) and at the issuer (a sign-in asks again).
    // The issuer knows this browser before: its logout asks to confirm (nothing ends without it).
    let issuer_logout = format!("{iss}/session/end");
    browser.goto(&issuer_logout).await;
    assert_eq!(browser.title().await, "Sign out · Portcullis", "the issuer has a session for this browser");
    describe(&mut browser, &shots, "09-issuer-session-before").await;
    // The blog's session, just refreshed: its access token then passes as it is for a few seconds
    // (it has more than the edge's refresh margin left), so that the logout reaches it through the
    // revocation list rather than a refused refresh.
    let last_blog_cookie = blog_session.value.clone();
    let (_, waited) = poll("the blog's session refreshed", Duration::from_secs(ACCESS_TOKEN_SECONDS + 5), async || {
        browser.goto(&blog_page).await;
        if browser.text("#subject").await != subject {
            return Err(format!("not signed in at the blog: {}", browser.url().await));
        }
        let value = browser.cookie(SESSION_COOKIE).await.value;
        if value == last_blog_cookie { Err("the same cookie".to_owned()) } else { Ok(()) }
    })
    .await;
    let blog_refreshed = Instant::now();
    eprintln!("the blog's session refreshed (a new cookie) after {:.2} s of visits", waited.as_secs_f64());
    browser.goto(&page).await;
    let stolen = format!("{SESSION_COOKIE}={}", browser.cookie(SESSION_COOKIE).await.value);
    let seen = received(&mut browser).await;
    let logout_started = Instant::now();
    browser.execute(LOGOUT, vec![json!(CSRF_COOKIE)]).await;
    browser.wait_for_url(NAVIGATION, |url| url == home).await;
    let logged_out = Instant::now();
    let chain = hops(&mut browser, seen).await;
    eprintln!("logout: {chain:?}");
    let statuses: Vec<u16> = chain.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses, [303, 303, 200], "logout at the edge, at the issuer, home: {chain:?}");
    assert!(chain[1].1.starts_with(&format!("{iss}/session/end?client_id=edge")), "{chain:?}");
    let shown = describe(&mut browser, &shots, "10-signed-out-home").await;
    assert_eq!(browser.title().await, "Home", "{shown}");
    assert_eq!(browser.text("p").await, "Not signed in", "no subject on the public home page");
    let left: Vec<String> = browser.cookies().await.into_iter().map(|cookie| cookie.name).collect();
    assert!(!left.iter().any(|name| name == SESSION_COOKIE || name == CSRF_COOKIE), "{left:?}");
    // The blog's session has ended too: within the blog edge's revocation bound (and a second), its
    // protected page goes to the issuer's login page.
    let (_, polled) = poll("the blog's page asks for a sign-in", Duration::from_secs(15), async || {
        browser.goto(&blog_page).await;
        let url = browser.url().await;
        if url.starts_with(&format!("{iss}/authorize?")) { Ok(()) } else { Err(url) }
    })
    .await;
    let blog_ended = logged_out.elapsed();
    assert_eq!(browser.title().await, LOGIN_TITLE, "the issuer's login page for the blog");
    let refusal = blog_wrangler.process.log_text();
    let refusal =
        refusal.lines().rfind(|line| line.contains("\"refused\"") && line.contains("/api/page")).unwrap_or_default();
    let ended = blog_wrangler.process.log_text().lines().filter(|line| line.contains("\"session_ended\"")).count();
    eprintln!(
        "the blog's page went to the issuer's login page {:.2} s after the logout (its chain took {:.2} s; {:.2} s of \
         polling; the blog's token refreshed {:.2} s before the logout's end); the blog edge's refusal: {}; \
         session_ended lines at the blog edge: {ended}",
        blog_ended.as_secs_f64(),
        (logged_out - logout_started).as_secs_f64(),
        polled.as_secs_f64(),
        (logged_out - blog_refreshed).as_secs_f64(),
        refusal.trim()
    );
    assert!(
        blog_ended <= REVOCATION_MAX_AGE + Duration::from_secs(1),
        "the blog's session ended within the bound and a second: {blog_ended:?}"
    );
    describe(&mut browser, &shots, "10b-blog-login-after-logout").await;
    let (_, took) = poll("the old session cookie refused", Duration::from_secs(10), async || {
        let answer = client.get("/api/me", &[("cookie", &stolen), ("sec-fetch-mode", "cors")]).await;
        if answer.status == 401 { Ok(()) } else { Err(answer.status.to_string()) }
    })
    .await;
    eprintln!("a copy of the old session cookie refused {:.2} s after the logout", took.as_secs_f64());
    browser.goto(&issuer_logout).await;
    assert_eq!(browser.title().await, "Signed out · Portcullis", "the issuer's session has ended");
    describe(&mut browser, &shots, "11-issuer-session-after").await;
    browser.goto(&page).await;
    let again = browser.url().await;
    assert!(again.starts_with(&format!("{iss}/authorize?")), "a sign-in again: {again}");
    assert_eq!(browser.title().await, LOGIN_TITLE);
    describe(&mut browser, &shots, "12-login-again").await;
    lap("logout");

    browser.close().await;
    wrangler.process.stop();
    blog_wrangler.process.stop();
    issuer.stop();
}
