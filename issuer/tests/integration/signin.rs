//! Browser sign-in through `oneshot`: `/authorize`, the login page and its forms, sign-in links
//! from the development outbox, the code exchange with PKCE, the ID token, single sign-on and
//! RP-initiated logout, with every error branch.

use crate::common::{TestIssuer, get, json, post_form, send};
use crate::oauth::{PASSWORD, form, text};
use crate::revocation::{assert_ended, jti};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use issuer::domain::accounts::NewClient;
use jwks::{ClaimsOptions, Validator};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

const REDIRECT: &str = "https://site.example/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const EMAIL: &str = "alice@example.com";

/// A browser: a cookie jar over `oneshot`.
struct Browser {
    app: Router,
    cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` seen, as sent.
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(app: Router) -> Self {
        Self { app, cookies: BTreeMap::new(), set_cookies: Vec::new() }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: Body) -> (StatusCode, HeaderMap, String) {
        let cookie = self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ");
        let request = if cookie.is_empty() { request } else { request.header(header::COOKIE, cookie) };
        let (status, headers, body) = send(&self.app, request.body(body).expect("request")).await;
        for set in headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("ASCII").to_owned();
            let (name, value) = set.split(';').next().and_then(|pair| pair.split_once('=')).expect("name=value");
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(set);
        }
        (status, headers, String::from_utf8(body.to_vec()).expect("UTF-8"))
    }

    async fn get(&mut self, path: &str) -> (StatusCode, HeaderMap, String) {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(request, Body::from(form(fields))).await
    }

    /// Opens `/authorize?query` and signs in with the password on the page.
    async fn sign_in(&mut self, query: &str) -> String {
        let (status, _, page) = self.get(&format!("/authorize?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let (csrf, request) = (hidden(&page, "csrf"), hidden(&page, "request"));
        let fields = [("csrf", csrf.as_str()), ("request", request.as_str()), ("email", EMAIL), ("password", PASSWORD)];
        let (status, headers, body) = self.post("/login", &fields).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        location(&headers)
    }
}

/// The value of the hidden input `name` of a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    let end = start + page[start..].find('"').expect("closing quote");
    page[start..end].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn location(headers: &HeaderMap) -> String {
    headers.get(header::LOCATION).expect("Location").to_str().expect("ASCII").to_owned()
}

/// The query parameters of a URL.
fn params(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url).expect("URL").query_pairs().into_owned().collect()
}

/// An authorization request's query for `client_id` with `extra` parameters.
fn query(client_id: &str, extra: &str) -> String {
    format!(
        "response_type=code&client_id={client_id}&redirect_uri={}&state=st-1&code_challenge={CHALLENGE}\
         &code_challenge_method=S256&scope=openid%20email&nonce=n-1{extra}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    )
}

impl TestIssuer {
    /// Registers a browser client; returns its secret (none for a public one).
    async fn browser_client(&self, id: &str, public: bool) -> Option<String> {
        let new = NewClient {
            client_id: id.to_owned(),
            audiences: if public { Vec::new() } else { vec!["api".to_owned()] },
            redirect_uris: vec![REDIRECT.to_owned()],
            post_logout_redirect_uris: vec!["https://site.example/bye".to_owned()],
            public,
            ..NewClient::default()
        };
        self.state.accounts().create_client(&new, self.now()).await.expect("registers").1
    }
}

/// A test issuer with alice and a confidential client `site`.
async fn issuer() -> (TestIssuer, String) {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user(EMAIL, &["reader"]).await;
    let secret = issuer.browser_client("site", false).await.expect("a secret");
    (issuer, secret)
}

/// Exchanges `code` at the token endpoint as the confidential client `site`.
async fn exchange(app: &Router, secret: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]);
    let (status, _, value) = post_form(app, "/oauth/token", &body, Some(("site", secret)), None).await;
    (status, value)
}

#[tokio::test]
async fn the_code_flow_gives_tokens_and_an_id_token_once() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let redirect = browser.sign_in(&query("site", "")).await;
    assert!(redirect.starts_with(&format!("{REDIRECT}?")), "{redirect}");
    let answer = params(&redirect);
    assert_eq!(answer["state"], "st-1", "state echoed");
    assert_eq!(answer["iss"], issuer.state.config().issuer, "RFC 9207");
    let session_cookie = browser.set_cookies.iter().find(|set| set.starts_with("__Host-portcullis-session="));
    let session_cookie = session_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(session_cookie.contains(attribute), "{attribute} in {session_cookie}");
    }
    assert!(!session_cookie.contains("Domain"), "{session_cookie}");

    let (status, tokens) = exchange(&issuer.app(), &secret, &answer["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "openid email");
    // The access token is an access token for the configured audience, with the scope.
    let claims = issuer.validator().validate(
        &text(&tokens, "access_token"),
        &issuer.key_set().await,
        &jwks::P256Verifier,
        issuer.now(),
    );
    let claims = claims.expect("an access token");
    assert_eq!(claims.scope.as_deref(), Some("openid email"));
    assert_eq!(claims.client_id.as_deref(), Some("site"));
    // The ID token: typ JWT, aud the client, nonce, auth_time, sid, at_hash, email.
    let id_token = text(&tokens, "id_token");
    let options = ClaimsOptions::new(issuer.state.config().issuer.clone(), ["site"]).with_token_type("JWT");
    Validator::new(options)
        .validate(&id_token, &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("an ID token");
    let payload = id_token.split('.').nth(1).expect("payload");
    let payload: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
            .expect("JSON");
    assert_eq!(payload["nonce"], "n-1");
    assert_eq!(payload["email"], EMAIL);
    assert_eq!(payload["auth_time"], issuer.now());
    assert!(payload["sid"].is_string());
    let at_hash = Sha256::digest(text(&tokens, "access_token").as_bytes());
    assert_eq!(payload["at_hash"], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&at_hash[..16]));
    // The ID token is not an access token: an access-token verifier refuses it.
    assert!(
        issuer.validator().validate(&id_token, &issuer.key_set().await, &jwks::P256Verifier, issuer.now()).is_err()
    );

    // userinfo with the access token.
    let (status, _, body) = get(&issuer.app(), "/userinfo", Some(&text(&tokens, "access_token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["email"], EMAIL);

    // The same code again: refused, and what it issued is revoked.
    let (status, again) = exchange(&issuer.app(), &secret, &answer["code"], VERIFIER).await;
    assert_eq!((status, again["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let refresh = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(&tokens, "refresh_token"))]);
    let (status, _, body) = post_form(&issuer.app(), "/oauth/token", &refresh, Some(("site", &secret)), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "family revoked");
    let (status, _, _) = get(&issuer.app(), "/userinfo", Some(&text(&tokens, "access_token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "access token revoked");
}

#[tokio::test]
async fn codes_are_bound_to_the_client_the_redirect_uri_the_verifier_and_a_minute() {
    let (issuer, secret) = issuer().await;
    let other_secret = {
        let new = NewClient {
            client_id: "other".to_owned(),
            audiences: vec!["api".to_owned()],
            redirect_uris: vec![REDIRECT.to_owned()],
            ..NewClient::default()
        };
        issuer.state.accounts().create_client(&new, issuer.now()).await.expect("registers").1.expect("secret")
    };
    let mut browser = Browser::new(issuer.app());
    let code = |redirect: String| params(&redirect)["code"].clone();

    let first = code(browser.sign_in(&query("site", "")).await);
    let wrong_verifier = VERIFIER.replace('d', "e");
    let (status, body) = exchange(&issuer.app(), &secret, &first, &wrong_verifier).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "verifier");
    // Another client's code.
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &first),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]);
    let (status, _, value) =
        post_form(&issuer.app(), "/oauth/token", &body, Some(("other", &other_secret)), None).await;
    assert_eq!((status, value["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "client");
    // Another redirect URI.
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &first),
        ("redirect_uri", "https://site.example/other"),
        ("code_verifier", VERIFIER),
    ]);
    let (status, _, value) = post_form(&issuer.app(), "/oauth/token", &body, Some(("site", &secret)), None).await;
    assert_eq!((status, value["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "redirect_uri");
    // No client authentication.
    let (status, _, value) =
        post_form(&issuer.app(), "/oauth/token", &body.replace("other", "callback"), None, None).await;
    assert_eq!((status, value["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // None of those spent it: the right exchange still works.
    let (status, _) = exchange(&issuer.app(), &secret, &first, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);

    // Expired after 60 s.
    let (_, headers, _) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    let late = code(location(&headers));
    issuer.advance(Duration::from_secs(60));
    let (status, body) = exchange(&issuer.app(), &secret, &late, VERIFIER).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "expired");
    let (status, body) = exchange(&issuer.app(), &secret, "made-up", VERIFIER).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "unknown");
}

#[tokio::test]
async fn a_reused_code_lists_every_access_token_of_the_session_it_started() {
    let (issuer, secret) = issuer().await;
    let app = issuer.app();
    let mut browser = Browser::new(app.clone());
    let code = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let (status, tokens) = exchange(&app, &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let rotate = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(&tokens, "refresh_token"))]);
    let (status, _, rotated) = post_form(&app, "/oauth/token", &rotate, Some(("site", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let mut ended = Vec::new();
    for access in [text(&tokens, "access_token"), text(&rotated, "access_token")] {
        ended.push((jti(&issuer, &access).await, access));
    }
    // Another sign-in of the same user at the same client, in another browser: another session.
    let other = params(&Browser::new(app.clone()).sign_in(&query("site", "")).await)["code"].clone();
    let (status, kept) = exchange(&app, &secret, &other, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    let kept = text(&kept, "access_token");
    let kept = [(kept.as_str(), jti(&issuer, &kept).await)];
    let (status, _) = exchange(&app, &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a second use");
    let ended: Vec<(&str, String)> = ended.iter().map(|(jti, token)| (token.as_str(), jti.clone())).collect();
    assert_ended(&issuer, &ended, &kept).await;
}

#[tokio::test]
async fn concurrent_exchanges_of_one_code_have_one_winner() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let code = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let exchanges = (0..8).map(|_| {
        let (app, secret, code) = (issuer.app(), secret.clone(), code.clone());
        tokio::spawn(async move { exchange(&app, &secret, &code, VERIFIER).await })
    });
    let mut winners = Vec::new();
    for handle in exchanges {
        let (status, body) = handle.await.expect("joins");
        if status == StatusCode::OK {
            winners.push(body);
        } else {
            assert_eq!(body["error"], "invalid_grant");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one exchange wins");
    // The losers were reuses: the winner's refresh token is revoked.
    let refresh = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(&winners[0], "refresh_token"))]);
    let (status, _, _) = post_form(&issuer.app(), "/oauth/token", &refresh, Some(("site", &secret)), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_public_client_signs_in_with_pkce_only() {
    let (issuer, _) = issuer().await;
    assert_eq!(issuer.browser_client("spa", true).await, None, "no secret");
    let mut browser = Browser::new(issuer.app());
    let code = params(&browser.sign_in(&query("spa", "")).await)["code"].clone();
    let body = |verifier: &str| {
        form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
    };
    let (status, _, value) = post_form(&issuer.app(), "/oauth/token", &body(&"a".repeat(43)), None, None).await;
    assert_eq!((status, value["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _, value) = post_form(&issuer.app(), "/oauth/token", &body(VERIFIER), None, None).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    // A public client lends its id to no password-grant token, gets no service tokens.
    let password =
        form(&[("grant_type", "password"), ("client_id", "spa"), ("username", EMAIL), ("password", PASSWORD)]);
    let (status, _, _) = post_form(&issuer.app(), "/oauth/token", &password, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post_form(
        &issuer.app(),
        "/oauth/token",
        &form(&[("grant_type", "client_credentials"), ("client_id", "spa")]),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_browser_sign_in_carries_its_scopes_and_never_the_admin_audience() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user(EMAIL, &["admin"]).await;
    let secret = issuer.browser_client("site", false).await.expect("a secret");
    let mut browser = Browser::new(issuer.app());
    let code = params(&browser.sign_in(&query("site", "").replace("openid%20email", "openid")).await)["code"].clone();
    let (status, tokens) = exchange(&issuer.app(), &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(&tokens, "refresh_token"))]);
    let (status, _, refreshed) =
        post_form(&issuer.app(), "/oauth/token", &refresh, Some(("site", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    for token in [text(&tokens, "access_token"), text(&refreshed, "access_token")] {
        // An admin's browser sign-in at a site does not open the issuer's admin API to that site.
        let (status, _, _) = get(&issuer.app(), "/admin/users", Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no admin audience");
        // The granted scopes, also after a refresh: openid without email.
        let (status, _, body) = get(&issuer.app(), "/userinfo", Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(json(&body).get("email").is_none(), "{}", String::from_utf8_lossy(&body));
    }
    // The same admin's password grant asking for the admin audience (RFC 8707) gets it.
    let admin_audience = issuer.state.config().admin_audience.clone();
    let asked =
        form(&[("grant_type", "password"), ("username", EMAIL), ("password", PASSWORD), ("resource", &admin_audience)]);
    let (status, _, login) = post_form(&issuer.app(), "/oauth/token", &asked, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&issuer.app(), "/admin/users", Some(&text(&login, "access_token"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_clients_and_redirect_uris_get_a_page_never_a_redirect() {
    let (issuer, _) = issuer().await;
    let app = issuer.app();
    let prefix = query("site", "").replace("callback", "callback%2Fextra");
    let shorter = query("site", "").replace("%2Fcallback", "%2Fcall");
    let no_uri = query("site", "").replace(
        &format!("redirect_uri={}&", url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()),
        "",
    );
    for query in [query("nobody", ""), prefix, shorter, no_uri, format!("{}&client_id=site", query("site", ""))] {
        let (status, headers, body) = get(&app, &format!("/authorize?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(headers.get(header::LOCATION).is_none(), "{query}");
        assert!(headers[header::CONTENT_TYPE].to_str().expect("ASCII").starts_with("text/html"));
        assert!(String::from_utf8_lossy(&body).contains("not valid"), "{query}");
    }
}

#[tokio::test]
async fn other_request_errors_go_back_to_the_client_with_the_state() {
    let (issuer, _) = issuer().await;
    let app = issuer.app();
    let cases = [
        (query("site", "").replace("&code_challenge_method=S256", "&code_challenge_method=plain"), "invalid_request"),
        (query("site", "").replace(&format!("&code_challenge={CHALLENGE}"), ""), "invalid_request"),
        (query("site", "").replace("response_type=code", "response_type=token"), "unsupported_response_type"),
        (query("site", "").replace("openid%20email", "openid%20admin"), "invalid_scope"),
        (query("site", "&prompt=none"), "login_required"),
    ];
    for (query, code) in cases {
        let (status, headers, _) = get(&app, &format!("/authorize?{query}"), None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{query}");
        let answer = params(&location(&headers));
        assert_eq!(answer["error"], code, "{query}");
        assert_eq!(answer["state"], "st-1", "{query}");
        assert!(location(&headers).starts_with(REDIRECT));
    }
}

#[tokio::test]
async fn the_login_form_is_csrf_protected_and_answers_alike_for_unknown_accounts() {
    let (issuer, _) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let (status, headers, page) =
        browser.get(&format!("/authorize?{}", query("site", "&login_hint=bob%40example.com"))).await;
    assert_eq!(status, StatusCode::OK);
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ASCII");
    assert!(policy.contains("form-action 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(page.contains(r#"autocomplete="username""#) && page.contains(r#"autocomplete="current-password""#));
    assert!(page.contains(r#"<label for="email">"#) && page.contains(r#"value="bob@example.com""#), "login_hint");
    let csrf_cookie =
        browser.set_cookies.iter().find(|set| set.starts_with("__Host-portcullis-csrf=")).expect("CSRF cookie");
    assert!(
        csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("Secure")
    );
    let (csrf, request) = (hidden(&page, "csrf"), hidden(&page, "request"));

    // No CSRF field, a wrong one, or a cross-site post: refused, nothing tried.
    for fields in [
        vec![("request", request.as_str()), ("email", EMAIL), ("password", PASSWORD)],
        vec![
            ("csrf", "x".repeat(22).leak() as &str),
            ("request", request.as_str()),
            ("email", EMAIL),
            ("password", PASSWORD),
        ],
    ] {
        let (status, _, _) = browser.post("/login", &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let cross_site = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site");
    let body = form(&[("csrf", &csrf), ("request", &request), ("email", EMAIL), ("password", PASSWORD)]);
    let (status, _, _) = browser.send(cross_site, Body::from(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-site");
    // Without the cookie, the field alone does not do.
    let mut stranger = Browser::new(issuer.app());
    let (status, _, _) = stranger
        .post("/login", &[("csrf", &csrf), ("request", &request), ("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A wrong password and an unknown account: the same page, the same words.
    let mut pages = Vec::new();
    for email in [EMAIL, "nobody@example.com"] {
        let (status, _, page) = browser
            .post("/login", &[("csrf", &csrf), ("request", &request), ("email", email), ("password", "wrong")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        pages.push(page.replace(email, "EMAIL"));
    }
    assert_eq!(pages[0], pages[1]);
    assert!(pages[0].contains("Wrong email or password."));
}

#[tokio::test]
async fn the_login_page_has_the_brute_force_limit_of_the_password_grant() {
    let (issuer, _) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let (_, _, page) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    let (csrf, request) = (hidden(&page, "csrf"), hidden(&page, "request"));
    let max = issuer.state.config().login_max_failures;
    for _ in 0..max {
        let (status, _, _) = browser
            .post("/login", &[("csrf", &csrf), ("request", &request), ("email", EMAIL), ("password", "wrong")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, _) = browser
        .post("/login", &[("csrf", &csrf), ("request", &request), ("email", EMAIL), ("password", PASSWORD)])
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password");
    assert!(headers.contains_key(header::RETRY_AFTER));
    // The password grant counts the same failures (from the same address: none recorded here).
    let login = form(&[("grant_type", "password"), ("username", EMAIL), ("password", PASSWORD)]);
    let (status, _, _) = post_form(&issuer.app(), "/oauth/token", &login, None, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // From another address the right password gets in at once.
    let (status, _, _) = crate::oauth::password_grant(&issuer.app(), EMAIL, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn single_sign_on_prompt_login_and_max_age() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    browser.sign_in(&query("site", "")).await;
    issuer.advance(Duration::from_secs(30));
    // Another authorization while the session lives: no page, a code at once.
    let (status, headers, _) = browser.get(&format!("/authorize?{}", query("site", "&max_age=60"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let code = params(&location(&headers))["code"].clone();
    let (status, tokens) = exchange(&issuer.app(), &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let payload = text(&tokens, "id_token");
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("JSON");
    assert_eq!(payload["auth_time"], issuer.now() - 30, "auth_time is the login's");
    // max_age shorter than the session's age, or prompt=login: the page again.
    for extra in ["&max_age=10", "&prompt=login"] {
        let (status, _, _) = browser.get(&format!("/authorize?{}", query("site", extra))).await;
        assert_eq!(status, StatusCode::OK, "{extra}");
    }
    // prompt=none with a session: a code.
    let (status, headers, _) = browser.get(&format!("/authorize?{}", query("site", "&prompt=none"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(params(&location(&headers)).contains_key("code"));
    // Logging out everywhere (with an access token of this sign-in) ends the browser session too.
    let (status, headers, _) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, tokens) = exchange(&issuer.app(), &secret, &params(&location(&headers))["code"], VERIFIER).await;
    let (status, _, _) = crate::common::post(&issuer.app(), "/logout-all", Some(&text(&tokens, "access_token"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    assert_eq!(status, StatusCode::OK, "logout-all ended the browser session");
    browser.sign_in(&query("site", "")).await;
    // After the idle timeout, no session.
    issuer.advance(issuer.state.config().session_idle_timeout);
    let (status, _, _) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_session_and_returns_only_to_registered_uris() {
    let (issuer, _) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    browser.sign_in(&query("site", "")).await;
    let (status, _, _) =
        browser.get("/session/end?client_id=site&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unregistered URI");
    let (status, _, _) = browser.get("/session/end?client_id=site&client_id=site").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a repeated parameter");
    let (status, headers, _) = browser.post("/login", &[("csrf", "a"), ("csrf", "b")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a form that does not read");
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ASCII").starts_with("text/html"), "a page, not JSON");
    let (status, _, page) = browser
        .get("/session/end?client_id=site&post_logout_redirect_uri=https%3A%2F%2Fsite.example%2Fbye&state=s2")
        .await;
    assert_eq!(status, StatusCode::OK, "no hint: a confirmation");
    let csrf = hidden(&page, "csrf");
    let (status, _, _) = browser.post("/session/end", &[("client_id", "site")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let fields = [
        ("csrf", csrf.as_str()),
        ("client_id", "site"),
        ("post_logout_redirect_uri", "https://site.example/bye"),
        ("state", "s2"),
    ];
    let (status, headers, _) = browser.post("/session/end", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "https://site.example/bye?state=s2");
    assert!(!browser.cookies.contains_key("__Host-portcullis-session"), "cookie cleared");
    let (status, _, _) = browser.get(&format!("/authorize?{}", query("site", "&prompt=none"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_id_token_hint_signs_out_at_once() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let code = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let (_, tokens) = exchange(&issuer.app(), &secret, &code, VERIFIER).await;
    let hint = text(&tokens, "id_token");
    let (status, headers, _) = browser
        .get(&format!(
            "/session/end?id_token_hint={hint}&client_id=site&post_logout_redirect_uri=https%3A%2F%2Fsite.example%2Fbye"
        ))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "https://site.example/bye");
    let (_, headers, _) = browser.get(&format!("/authorize?{}", query("site", "&prompt=none"))).await;
    assert_eq!(params(&location(&headers))["error"], "login_required", "the session ended");
}

#[tokio::test]
async fn an_expired_id_token_hint_still_signs_out_at_once() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let code = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let (_, tokens) = exchange(&issuer.app(), &secret, &code, VERIFIER).await;
    let hint = text(&tokens, "id_token");
    // The user logs out ten minutes later: the ID token (5 minutes) has long expired.
    issuer.advance(Duration::from_secs(600));
    let end = format!(
        "/session/end?id_token_hint={hint}&client_id=site&post_logout_redirect_uri=https%3A%2F%2Fsite.example%2Fbye"
    );
    let (status, headers, _) = browser.get(&end).await;
    assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "https://site.example/bye".to_owned()));
    // An altered hint is no hint, however old: the user is asked (a confirmation page).
    let mut other = Browser::new(issuer.app());
    other.sign_in(&query("site", "")).await;
    let altered = format!("{}{}", &hint[..hint.len() - 2], if hint.ends_with("AA") { "BA" } else { "AA" });
    let (status, _, _) = other.get(&end.replace(&hint, &altered)).await;
    assert_eq!(status, StatusCode::OK, "an altered hint: asked");
}

#[tokio::test]
async fn logout_at_the_issuer_ends_every_client_session_the_sign_in_started() {
    let (issuer, secret) = issuer().await;
    let blog_secret = issuer.browser_client("blog", false).await.expect("a secret");
    let mut browser = Browser::new(issuer.app());
    // The site signs the user in; the blog gets its code by single sign-on, without a password.
    let site_code = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let (_, site) = exchange(&issuer.app(), &secret, &site_code, VERIFIER).await;
    let (_, headers, _) = browser.get(&format!("/authorize?{}", query("blog", "&prompt=none"))).await;
    let blog_code = params(&location(&headers))["code"].clone();
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &blog_code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]);
    let (status, _, blog) = post_form(&issuer.app(), "/oauth/token", &body, Some(("blog", &blog_secret)), None).await;
    assert_eq!(status, StatusCode::OK, "{blog}");
    // A password login of the same user is another session: it survives.
    let (status, _, other) = crate::oauth::password_grant(&issuer.app(), EMAIL, crate::oauth::PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let other = text(&other, "access_token");

    // Logout at the site (RP-initiated, with its ID token): both clients' sessions end.
    let hint = text(&site, "id_token");
    let end = format!(
        "/session/end?id_token_hint={hint}&client_id=site&post_logout_redirect_uri=https%3A%2F%2Fsite.example%2Fbye"
    );
    let (status, _, _) = browser.get(&end).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    for (client, client_secret, tokens) in [("site", &secret, &site), ("blog", &blog_secret, &blog)] {
        let refresh = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(tokens, "refresh_token"))]);
        let (status, _, body) =
            post_form(&issuer.app(), "/oauth/token", &refresh, Some((client, client_secret)), None).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{client}");
        let (status, _, _) = get(&issuer.app(), "/userinfo", Some(&text(tokens, "access_token"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{client}'s access token listed as revoked");
    }
    let (status, _, listed) = get(&issuer.app(), "/revoked", None).await;
    assert_eq!((status, json(&listed)["revoked"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
    let (status, _, _) = get(&issuer.app(), "/userinfo", Some(&other)).await;
    assert_eq!(status, StatusCode::OK, "a session of another sign-in is not ended");
}

#[tokio::test]
async fn a_code_of_a_sign_in_logged_out_since_starts_nothing() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let first = params(&browser.sign_in(&query("site", "")).await)["code"].clone();
    let (_, tokens) = exchange(&issuer.app(), &secret, &first, VERIFIER).await;
    // A second code of the same sign-in, still unused when the user logs out.
    let (_, headers, _) = browser.get(&format!("/authorize?{}", query("site", "&prompt=none"))).await;
    let pending = params(&location(&headers))["code"].clone();
    let hint = text(&tokens, "id_token");
    let (status, _, _) = browser.get(&format!("/session/end?id_token_hint={hint}&client_id=site")).await;
    assert!(status.is_success() || status.is_redirection(), "{status}");
    let (status, answer) = exchange(&issuer.app(), &secret, &pending, VERIFIER).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{answer}");
}

/// The newest sign-in link in the outbox of `issuer`, waiting for the background send.
async fn newest_link(issuer: &TestIssuer, count: usize) -> String {
    let outbox = issuer.state.config().outbox();
    for _ in 0..100 {
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= count {
            files.sort();
            let text = std::fs::read_to_string(files.last().expect("a message")).expect("readable");
            let start = text.find("/login/email?token=").expect("a link");
            let end = start + text[start..].find(char::is_whitespace).expect("end of link");
            return text[start..end].to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no message in {}", outbox.display());
}

#[tokio::test]
async fn a_sign_in_link_resumes_the_request_once_within_ten_minutes() {
    let (issuer, secret) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let (_, _, page) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    let (csrf, request) = (hidden(&page, "csrf"), hidden(&page, "request"));
    let (status, _, known) =
        browser.post("/login/email", &[("csrf", &csrf), ("request", &request), ("email", EMAIL)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, unknown) =
        browser.post("/login/email", &[("csrf", &csrf), ("request", &request), ("email", "nobody@example.com")]).await;
    assert_eq!((status, &known), (StatusCode::OK, &unknown), "the same answer either way");
    let link = newest_link(&issuer, 1).await;

    // Opened in another browser (a phone, or a link someone else sent): the page names the account.
    let (status, _, elsewhere) = Browser::new(issuer.app()).get(&link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(elsewhere.contains("another browser") && elsewhere.contains(EMAIL), "{elsewhere}");

    // Opening the link spends nothing; its button does.
    let (status, headers, page) = browser.get(&link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("another browser") && !page.contains(EMAIL), "the browser that asked: {page}");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ASCII");
    assert!(policy.contains("form-action 'self' https://site.example;"), "the client's origin only: {policy}");
    let (status, _, _) = browser.get(&link).await;
    assert_eq!(status, StatusCode::OK, "opened twice: still unspent");
    let (token, csrf) = (hidden(&page, "token"), hidden(&page, "csrf"));
    let (status, _, _) = browser.post("/login/email/continue", &[("token", &token)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let (status, headers, _) = browser.post("/login/email/continue", &[("csrf", &csrf), ("token", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let answer = params(&location(&headers));
    assert_eq!(answer["state"], "st-1", "the request it was asked for");
    let (status, _) = exchange(&issuer.app(), &secret, &answer["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = browser.post("/login/email/continue", &[("csrf", &csrf), ("token", &token)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "used once");
    let (status, _, _) = browser.get(&link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a used link says so when opened");

    // A second link, too late.
    let (status, _, _) =
        browser.post("/login/email", &[("csrf", &csrf), ("request", &request), ("email", EMAIL)]).await;
    assert_eq!(status, StatusCode::OK);
    let late = newest_link(&issuer, 2).await;
    assert_ne!(late, link);
    issuer.advance(Duration::from_secs(600));
    let token = late.split("token=").nth(1).expect("token").to_owned();
    let (status, _, _) = browser.post("/login/email/continue", &[("csrf", &csrf), ("token", &token)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "expired");
}

/// Asks for a sign-in link for `email` from the address 192.0.2.7.
async fn ask_for_link(browser: &mut Browser, csrf: &str, request: &str, email: &str) -> StatusCode {
    let body = form(&[("csrf", csrf), ("request", request), ("email", email)]);
    let address: std::net::SocketAddr = "192.0.2.7:5000".parse().expect("address");
    let request = Request::post("/login/email")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .extension(axum::extract::ConnectInfo(address));
    browser.send(request, Body::from(body)).await.0
}

#[tokio::test]
async fn sign_in_links_are_limited_per_email_and_per_address() {
    use issuer::domain::signin::{LINKS_PER_ADDRESS, LINKS_PER_EMAIL};
    let (issuer, _) = issuer().await;
    let mut browser = Browser::new(issuer.app());
    let (_, _, page) = browser.get(&format!("/authorize?{}", query("site", ""))).await;
    let (csrf, request) = (hidden(&page, "csrf"), hidden(&page, "request"));
    for _ in 0..LINKS_PER_EMAIL {
        assert_eq!(ask_for_link(&mut browser, &csrf, &request, "nobody@example.com").await, StatusCode::OK);
    }
    let status = ask_for_link(&mut browser, &csrf, &request, "nobody@example.com").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "per email");
    // Per address: other emails from the same address, up to its limit (the refused one above
    // did not count).
    for index in LINKS_PER_EMAIL..LINKS_PER_ADDRESS {
        let email = format!("user{index}@example.com");
        assert_eq!(ask_for_link(&mut browser, &csrf, &request, &email).await, StatusCode::OK, "{email}");
    }
    let status = ask_for_link(&mut browser, &csrf, &request, "one-more@example.com").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "per address");
}

#[tokio::test]
async fn discovery_describes_the_code_flow() {
    let (issuer, _) = issuer().await;
    let (status, _, body) = get(&issuer.app(), "/.well-known/openid-configuration", None).await;
    assert_eq!(status, StatusCode::OK);
    let document = json(&body);
    let base = &issuer.state.config().issuer;
    assert_eq!(document["authorization_endpoint"], format!("{base}/authorize"));
    assert_eq!(document["end_session_endpoint"], format!("{base}/session/end"));
    assert_eq!(document["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(document["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(document["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert_eq!(document["scopes_supported"], serde_json::json!(["openid", "email", "offline_access"]));
    assert_eq!(document["authorization_response_iss_parameter_supported"], true);
}
