//! Browser sessions at the edge, under the real runtime (`wrangler dev`, Durable Objects
//! included) with the real issuer: a browser (plain HTTP with a cookie jar) signs in from a
//! protected page and comes back to it; its access token, kept in a sealed HttpOnly cookie, is
//! refreshed by the session's object once for fifty requests at the same moment; logout ends the
//! session and a stolen copy of the cookie stops working; and the attacks on the flow fail.
//!
//! The Worker must be built first: `cargo xtask test` does it, or `cargo xtask build-worker`.

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::time::{Duration, Instant};
use tests::harness::{Answer, Client, SESSION_OBJECTS, STATUS_SECRET, Wrangler, free_port, poll};
use tests::issuer::{AUDIENCE, Issuer};
use tests::signin::{HttpBrowser, Jar, add_user, described, login_page, set_cookie};

/// The issuer's access tokens live this long here: the edge refreshes them 10 s before.
const ACCESS_TOKEN_SECONDS: u64 = 13;
/// The edge's session cookie.
const SESSION_COOKIE: &str = "__Host-portcullis-edge-session";
/// The edge's CSRF cookie for logout.
const CSRF_COOKIE: &str = "__Host-portcullis-edge-csrf";
/// A navigation of a page, as a browser sends it.
const NAVIGATE: [(&str, &str); 3] =
    [("accept", "text/html"), ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")];

/// The policy (after [`SESSION_OBJECTS`]).
const CONFIG_TAIL: &str = r#"
[vars.POLICY]
[[vars.POLICY.rules]]
path = "/public/*"
access = "public"

[[vars.POLICY.rules]]
path = "/api/*"
access = "authenticated"
"#;

/// The origin: answers with the subject the edge vouched for.
async fn origin(request: Request) -> impl IntoResponse {
    let subject = request.headers().get("x-auth-subject").and_then(|value| value.to_str().ok()).unwrap_or("");
    (StatusCode::OK, format!("hello {subject}"))
}

/// A browser at the edge: the edge's client and its own cookie jar (the issuer's is another).
struct EdgeBrowser<'c> {
    client: &'c Client,
    jar: Jar,
}

impl EdgeBrowser<'_> {
    /// `GET target` (a path, or a URL at the edge) with the jar's cookies and `headers`; keeps
    /// the cookies it sets.
    async fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Answer {
        let path = target.strip_prefix(self.client.base.as_str()).unwrap_or(target);
        let cookie = self.jar.header();
        let mut all = vec![("cookie", cookie.as_str())];
        all.extend_from_slice(headers);
        let answer = self.client.get(path, &all).await;
        self.jar.store(&answer);
        answer
    }
}

/// Signs a new browser in at the edge as `email`: the page's navigation, the issuer's login page,
/// the callback. The browser's cookies at the edge.
async fn sign_in_at_edge(client: &Client, issuer: &Issuer, email: &str, password: &str) -> Jar {
    let mut browser = EdgeBrowser { client, jar: Jar::default() };
    let started = browser.get("/api/items", &NAVIGATE).await;
    assert_eq!(started.status, 302, "{}", described(&started));
    let authorize = url::Url::parse(started.header("location").expect("a location")).expect("a URL");
    let mut at_issuer = HttpBrowser::new(&issuer.client);
    let (csrf, request) = login_page(&at_issuer.get(&authorize).await, "the login page");
    let fields = [("csrf", csrf.as_str()), ("request", &request), ("email", email), ("password", password)];
    let signed_in = at_issuer.submit("/login", &fields).await;
    assert_eq!(signed_in.status, 303, "{}", described(&signed_in));
    let landed = browser.get(signed_in.header("location").expect("back to the edge"), &[]).await;
    assert_eq!(landed.status, 302, "{}", described(&landed));
    browser.jar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_under_wrangler_dev() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut issuer = Issuer::new("issuer", dir.path(), None);
    issuer.set("access_token_ttl", &format!("{ACCESS_TOKEN_SECONDS}s"));
    issuer.set("revoked_max_age", "1s");
    let edge_port = free_port();
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let callback = format!("{edge_url}/_portcullis/callback");
    let after_logout = format!("{edge_url}/");
    let secret =
        issuer.add_client("edge", &["--redirect-uri", &callback, "--post-logout-redirect-uri", &after_logout]).await;
    let (email, password) = ("alice@example.com", "correct horse battery staple");
    add_user(&issuer, email, password, "reader");
    // A user whose access token is too large for a cookie: 64 roles of 60 characters.
    let roles: Vec<String> = (0..64).map(|i| format!("role-{i:02}-{}", "r".repeat(52))).collect();
    add_user(&issuer, "many@example.com", password, &roles.join(","));
    issuer.serve().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, Router::new().fallback(origin)).await });

    let vars = vec![
        ("ISSUER", issuer.url().to_owned()),
        ("AUDIENCE", AUDIENCE.to_owned()),
        ("ORIGIN_URL", format!("http://{origin_addr}")),
        ("LEEWAY_SECONDS", "1".to_owned()),
        ("JWKS_MIN_TTL_SECONDS", "1".to_owned()),
        ("REVOCATION_MAX_AGE_SECONDS", "2".to_owned()),
        ("STATUS_SECRET", STATUS_SECRET.to_owned()),
        ("SESSION_CLIENT_ID", "edge".to_owned()),
        ("SESSION_CLIENT_SECRET", secret),
        ("SESSION_COOKIE_KEYS", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".to_owned()),
    ];
    let mut wrangler = Wrangler::start_on(
        edge_port,
        "sessions",
        "build",
        dir.path(),
        &vars,
        &format!("{SESSION_OBJECTS}{CONFIG_TAIL}"),
    );
    let client = Client::new(edge_url.clone());
    wrangler.ready(&client).await;

    // 1. A protected page without a session: a navigation goes to the issuer's /authorize with
    // PKCE, state and nonce (its flow in a sealed cookie); a fetch gets a 401, never a redirect.
    let mut browser = EdgeBrowser { client: &client, jar: Jar::default() };
    let fetched = browser.get("/api/items", &[("accept", "application/json"), ("sec-fetch-mode", "cors")]).await;
    assert_eq!(fetched.status, 401, "{}", described(&fetched));
    let started = browser.get("/api/items?page=2", &NAVIGATE).await;
    assert_eq!(started.status, 302, "{}", described(&started));
    let authorize = url::Url::parse(started.header("location").expect("a location")).expect("a URL");
    let params: std::collections::HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(authorize.path(), "/authorize");
    assert_eq!((params["client_id"].as_str(), params["redirect_uri"].as_str()), ("edge", callback.as_str()));
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["state"].len() == 43 && params["nonce"].len() == 43, "{params:?}");
    let flow_cookie =
        set_cookie(&started, &format!("__Host-portcullis-edge-flow-{}", params["state"])).expect("a flow cookie");
    assert!(flow_cookie.contains(&"httponly".to_owned()) && flow_cookie.contains(&"secure".to_owned()));

    // 2. The user signs in at the issuer, which sends the browser back to the callback.
    let mut at_issuer = HttpBrowser::new(&issuer.client);
    let page = at_issuer.get(&authorize).await;
    let (csrf, request) = login_page(&page, "the login page");
    let signed_in = at_issuer
        .submit("/login", &[("csrf", &csrf), ("request", &request), ("email", email), ("password", password)])
        .await;
    assert_eq!(signed_in.status, 303, "{}", described(&signed_in));
    let back = signed_in.header("location").expect("back to the edge").to_owned();
    assert!(back.starts_with(&callback), "{back}");

    // Attacks on the callback first: no flow cookie, another state, a state the edge never gave.
    let stranger = Client::new(edge_url.clone());
    let path = back.strip_prefix(&edge_url).expect("at the edge");
    assert_eq!(stranger.get(path, &[]).await.status, 400, "a callback without its flow cookie");
    let forged = path.replace(&params["state"], &"x".repeat(43));
    assert_eq!(browser.get(&forged, &[]).await.status, 400, "a state whose flow cookie the browser lacks");

    // 3. The callback: the session starts, the browser comes back to its page with the cookie.
    let landed = browser.get(&back, &[]).await;
    assert_eq!((landed.status, landed.header("location")), (302, Some("/api/items?page=2")), "{}", described(&landed));
    let session = set_cookie(&landed, SESSION_COOKIE).expect("a session cookie");
    for attribute in ["httponly", "secure", "samesite=lax", "path=/"] {
        assert!(session.contains(&attribute.to_owned()), "{attribute}: {session:?}");
    }
    let cookie_value = browser.jar.get(SESSION_COOKIE).expect("kept").to_owned();
    assert!(SESSION_COOKIE.len() + 1 + cookie_value.len() < 1024, "{} bytes", cookie_value.len());
    assert!(set_cookie(&landed, CSRF_COOKIE).is_some_and(|csrf| !csrf.contains(&"httponly".to_owned())));

    let page = browser.get("/api/items?page=2", &NAVIGATE).await;
    assert_eq!(page.status, 200, "{}", described(&page));
    assert!(page.text().starts_with("hello "), "{}", page.text());
    let subject = page.text().trim_start_matches("hello ").to_owned();
    assert!(!subject.is_empty());

    // The cookie acts for the user only from this site's pages when a request changes something:
    // a form or fetch from another origin (a sibling subdomain, another port) is refused, even
    // though the browser sends the Lax cookie along.
    let session_cookie = browser.jar.header();
    for (site, origin, expected) in [
        ("same-origin", edge_url.as_str(), 200),
        ("same-site", "http://localhost:9", 403),
        ("cross-site", "https://evil.example", 403),
    ] {
        let headers = [("cookie", session_cookie.as_str()), ("sec-fetch-site", site), ("origin", origin)];
        let answer = client.send("POST", "/api/items", &headers, b"x=1".to_vec()).await;
        assert_eq!(answer.status, expected, "a POST from {origin}: {}", described(&answer));
    }
    wrangler.logged(&["\"code\":\"cross_site_request\""]).await;

    // A cookie sealed with another key, or altered, is no session: sign in again.
    let mut other = EdgeBrowser { client: &client, jar: Jar::default() };
    let middle = cookie_value.len() / 2;
    let flipped = if &cookie_value[middle..=middle] == "A" { "B" } else { "A" };
    let altered = format!("{}{flipped}{}", &cookie_value[..middle], &cookie_value[middle + 1..]);
    let answer = other
        .get("/api/items", &[("cookie", &format!("{SESSION_COOKIE}={altered}")), NAVIGATE[0], NAVIGATE[1], NAVIGATE[2]])
        .await;
    assert_eq!(answer.status, 302, "{}", described(&answer));

    // 4. Fifty requests of the page at once after the access token has (nearly) expired: one
    // refresh at the issuer, fifty successes, and the new cookie set.
    let before = issuer.grants_issued("refresh_token").await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TOKEN_SECONDS - 9)).await;
    let cookie = browser.jar.header();
    let started_at = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, cookie) = (Client::new(edge_url.clone()), cookie.clone());
        requests
            .spawn(async move { client.get("/api/items", &[("cookie", &cookie), ("sec-fetch-mode", "cors")]).await });
    }
    let answers = requests.join_all().await;
    let took = started_at.elapsed();
    let ok = answers.iter().filter(|answer| answer.status == 200).count();
    let renewed = answers.iter().filter(|answer| set_cookie(answer, SESSION_COOKIE).is_some()).count();
    let after = issuer.grants_issued("refresh_token").await;
    eprintln!(
        "50 parallel requests after expiry: {ok} succeeded, {} refresh(es) at the issuer, {renewed} new cookies, {:.2} s",
        after - before,
        took.as_secs_f64()
    );
    assert_eq!(ok, 50, "every request succeeds: {:?}", answers.iter().map(|answer| answer.status).collect::<Vec<_>>());
    assert_eq!(after - before, 1, "exactly one refresh at the issuer");
    browser.jar.store(&answers[0]);
    assert_eq!(browser.get("/api/items", &[]).await.status, 200, "the renewed cookie works");

    // What a request costs on each path, from here (one at a time, the same browser): the fast
    // path (the cookie's token is good: no session object) and the refresh path (the object
    // refreshes at the issuer), side by side.
    let timed = async |cookie: &str| {
        let started = Instant::now();
        let answer = client.get("/api/items", &[("cookie", cookie), ("sec-fetch-mode", "cors")]).await;
        assert_eq!(answer.status, 200, "{}", described(&answer));
        (started.elapsed(), answer)
    };
    let (fast, _) = timed(&browser.jar.header()).await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TOKEN_SECONDS - 9)).await;
    let (refreshing, answer) = timed(&browser.jar.header()).await;
    browser.jar.store(&answer);
    let (fast_again, _) = timed(&browser.jar.header()).await;
    eprintln!(
        "one request under wrangler dev: fast path {:.1} ms, refresh path {:.1} ms, fast path again {:.1} ms",
        fast.as_secs_f64() * 1000.0,
        refreshing.as_secs_f64() * 1000.0,
        fast_again.as_secs_f64() * 1000.0
    );

    // A refresh token is no bearer token (the edge never sees one, but a client may try).
    let (status, login) =
        issuer.grant(&[("grant_type", "password"), ("username", email), ("password", password)]).await;
    assert_eq!(status, 200, "{login}");
    let refresh_token = login["refresh_token"].as_str().expect("a refresh token");
    let answer = client.get_with_token("/api/items", refresh_token).await;
    assert_eq!(answer.status, 401, "a refresh token as a bearer: {}", described(&answer));

    // 5. Logout: only from this site's pages with the CSRF token; then the cookies are gone, the
    // issuer's session ends, and a stolen copy of the cookie stops working (its access token is
    // listed as revoked, the edge refuses it within its revocation bound).
    let stolen = browser.jar.header();
    let csrf = browser.jar.get(CSRF_COOKIE).expect("the CSRF cookie").to_owned();
    let logout = |cookie: String, csrf: String, site: &'static str| {
        let client = &client;
        async move {
            let headers = [
                ("cookie", cookie.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", site),
            ];
            client.send("POST", "/_portcullis/logout", &headers, format!("csrf={csrf}").into_bytes()).await
        }
    };
    assert_eq!(logout(stolen.clone(), String::new(), "same-origin").await.status, 403, "without the CSRF token");
    assert_eq!(logout(stolen.clone(), csrf.clone(), "cross-site").await.status, 403, "from another site");
    let out = logout(stolen.clone(), csrf, "same-origin").await;
    assert_eq!(out.status, 303, "{}", described(&out));
    let end = out.header("location").expect("to the issuer's logout");
    assert!(end.starts_with(&format!("{}/session/end?client_id=edge", issuer.url())), "{end}");
    assert!(set_cookie(&out, SESSION_COOKIE).is_some_and(|cleared| cleared.contains(&"max-age=0".to_owned())));
    let (_, took) = poll("the stolen cookie refused", Duration::from_secs(10), async || {
        let answer = client.get("/api/items", &[("cookie", &stolen), ("sec-fetch-mode", "cors")]).await;
        if answer.status == 401 { Ok(()) } else { Err(answer.status.to_string()) }
    })
    .await;
    eprintln!("logout -> a stolen copy of the cookie refused after {:.2} s", took.as_secs_f64());
    // Once its token is due for a refresh, the copy's session object (ended) says so: the session
    // is over, the answer clears the cookie, and a navigation signs in again.
    tokio::time::sleep(Duration::from_secs(ACCESS_TOKEN_SECONDS - 9)).await;
    let ended = client.get("/api/items", &[("cookie", &stolen), NAVIGATE[0], NAVIGATE[1], NAVIGATE[2]]).await;
    assert_eq!(ended.status, 302, "{}", described(&ended));
    assert!(set_cookie(&ended, SESSION_COOKIE).is_some_and(|cleared| cleared.contains(&"max-age=0".to_owned())));
    wrangler.logged(&["\"code\":\"session_ended\""]).await;

    // 6. A token too large for a cookie stays in the session's object: the cookie holds the
    // session's id and CSRF token only (browsers refuse cookies over 4 KB, and a sign-in would
    // loop), and every request gets the token from the object.
    let jar = sign_in_at_edge(&client, &issuer, "many@example.com", password).await;
    let value = jar.get(SESSION_COOKIE).expect("a session cookie");
    assert!(SESSION_COOKIE.len() + 1 + value.len() <= 4000, "{} bytes", value.len());
    for _ in 0..2 {
        let page = client.get("/api/items", &[("cookie", &jar.header())]).await;
        assert_eq!(page.status, 200, "{}", described(&page));
    }
    eprintln!("a user with 64 roles: session cookie {} bytes, the token kept in the session's object", value.len());

    // 7. The code is spent: the same callback again, flow cookie and all, signs nobody in (and the
    // issuer revokes what the code gave, as it does for any code used twice).
    let mut replay = EdgeBrowser { client: &client, jar: Jar::default() };
    replay.jar.store(&started);
    assert_eq!(replay.get(&back, &[]).await.status, 400, "a replayed code");
    wrangler.process.stop();
}
