//! The login limits: nobody else's failures lock an account. Failures count per account and
//! client address (an IPv6 /64), an address failing on many accounts is refused, an account
//! failing from many addresses is slowed down, never refused; the client address comes from
//! `X-Forwarded-For` / `Forwarded` only through a trusted proxy. And registration's limit.

use crate::common::{TestIssuer, send};
use crate::oauth::{PASSWORD, form};
use crate::operations::scrape;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use std::time::{Duration, Instant};

/// A password grant for `email` from the TCP peer `peer`, with extra `headers`.
async fn login_from(
    app: &Router,
    email: &str,
    password: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap) {
    let body = form(&[("grant_type", "password"), ("username", email), ("password", password)]);
    let mut request = Request::post("/oauth/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(body)).expect("request");
    let address: std::net::SocketAddr = peer.parse().expect("a socket address");
    request.extensions_mut().insert(axum::extract::ConnectInfo(address));
    let (status, headers, _) = send(app, request).await;
    (status, headers)
}

/// `POST /users` (open registration) from `peer`.
async fn register_from(app: &Router, email: &str, peer: &str) -> (StatusCode, HeaderMap) {
    let body = serde_json::json!({ "email": email, "password": PASSWORD }).to_string();
    let mut request = Request::post("/users")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let address: std::net::SocketAddr = peer.parse().expect("a socket address");
    request.extensions_mut().insert(axum::extract::ConnectInfo(address));
    let (status, headers, _) = send(app, request).await;
    (status, headers)
}

const ATTACKER: &str = "198.51.100.7:4000";
const USER: &str = "192.0.2.1:5000";

#[tokio::test]
async fn an_attacker_at_one_address_never_locks_the_user_out() {
    let issuer = TestIssuer::start(&[("login_max_failures", "3")]).await;
    issuer.user("alice@example.com", &[]).await;
    issuer.user("bob@example.com", &[]).await;
    let app = issuer.app();
    for _ in 0..3 {
        let (status, _) = login_from(&app, "alice@example.com", "wrong password", ATTACKER, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    // The attacker's address is refused for alice, even with the right password...
    let (status, headers) = login_from(&app, "alice@example.com", PASSWORD, ATTACKER, &[]).await;
    assert_eq!(
        (status, &headers[header::RETRY_AFTER]),
        (StatusCode::TOO_MANY_REQUESTS, &"900".parse().expect("value"))
    );
    // ...while alice, from her own address, gets in at once (no wait, no refusal).
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, USER, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(scrape(&app).await.contains("portcullis_login_delay_seconds_count 0"), "not slowed down");
    // Her success does not give the attacker new guesses; another account is not refused to it.
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = login_from(&app, "bob@example.com", PASSWORD, ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Unknown accounts are counted alike (no hint that they do not exist).
    for _ in 0..3 {
        login_from(&app, "nobody@example.com", "wrong password", ATTACKER, &[]).await;
    }
    let (status, _) = login_from(&app, "nobody@example.com", "wrong password", ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The window passes.
    issuer.advance(Duration::from_secs(15 * 60));
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_address_failing_on_many_accounts_is_refused_for_every_account() {
    let issuer = TestIssuer::start(&[("login_max_failures_per_address", "4")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    for account in ["a@example.com", "b@example.com", "c@example.com", "alice@example.com"] {
        let (status, _) = login_from(&app, account, "wrong password", ATTACKER, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{account}");
    }
    let (status, headers) = login_from(&app, "d@example.com", "wrong password", ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, ATTACKER, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, USER, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = scrape(&app).await;
    assert!(text.contains(r#"portcullis_limit_refusals_total{limit="login_address"} 2"#), "{text}");
}

#[tokio::test]
async fn ipv6_addresses_in_one_64_share_a_count() {
    let issuer = TestIssuer::start(&[("login_max_failures", "2")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    for peer in ["[2001:db8:1:2::1]:4000", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:4001"] {
        let (status, _) = login_from(&app, "alice@example.com", "wrong password", peer, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, "[2001:db8:1:2::abcd]:4002", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the same /64");
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, "[2001:db8:1:3::1]:4003", &[]).await;
    assert_eq!(status, StatusCode::OK, "another /64");
}

#[tokio::test]
async fn forwarded_headers_count_only_from_a_trusted_proxy() {
    let issuer = TestIssuer::start(&[("login_max_failures", "2"), ("trusted_proxies", "10.0.0.0/8")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    // From an untrusted peer, X-Forwarded-For is ignored: every attempt is the peer's.
    for claimed in ["203.0.113.1", "203.0.113.2"] {
        let headers = [("x-forwarded-for", claimed)];
        let (status, _) = login_from(&app, "alice@example.com", "wrong password", "192.0.2.9:1", &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let headers = [("x-forwarded-for", "203.0.113.3")];
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, "192.0.2.9:1", &headers).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a claimed address changes nothing");

    // Through the trusted proxy, the client it names is counted.
    let proxy = "10.0.0.5:1";
    for _ in 0..2 {
        let headers = [("x-forwarded-for", "1.2.3.4, 203.0.113.7")];
        let (status, _) = login_from(&app, "alice@example.com", "wrong password", proxy, &headers).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _) =
        login_from(&app, "alice@example.com", PASSWORD, proxy, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the forwarded client is refused");
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, proxy, &[("forwarded", "for=203.0.113.7")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "RFC 7239 names it too");
    let (status, _) =
        login_from(&app, "alice@example.com", PASSWORD, proxy, &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(status, StatusCode::OK, "another client behind the same proxy");
    // A header that cannot be read leaves the proxy's own address: never a 500.
    for headers in [[("x-forwarded-for", "not an address")], [("forwarded", "for=\"unterminated")]] {
        let (status, _) = login_from(&app, "alice@example.com", PASSWORD, proxy, &headers).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}");
    }
}

#[tokio::test]
async fn an_account_failing_from_many_addresses_is_slowed_down_never_refused() {
    let issuer = TestIssuer::start(&[("login_max_failures", "2"), ("login_max_delay", "1s")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    for peer in ["198.51.100.1:1", "198.51.100.1:2", "198.51.100.2:1", "198.51.100.2:2"] {
        let (status, _) = login_from(&app, "alice@example.com", "wrong password", peer, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{peer}");
    }
    // Four failures from elsewhere, two more than one address's worth: 250 ms doubled once.
    let started = Instant::now();
    let (status, _) = login_from(&app, "alice@example.com", PASSWORD, USER, &[]).await;
    assert_eq!(status, StatusCode::OK, "slowed down, not refused");
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    let text = scrape(&app).await;
    assert!(text.contains("portcullis_login_delay_seconds_count 1"), "{text}");
    assert!(text.contains("portcullis_login_delay_seconds_sum 0.5"), "{text}");
}

#[tokio::test]
async fn registration_is_limited_per_address() {
    let issuer = TestIssuer::start(&[("registration", "open")]).await;
    let app = issuer.app();
    for index in 0..10 {
        let (status, _) = register_from(&app, &format!("user{index}@example.com"), ATTACKER).await;
        assert_eq!(status, StatusCode::CREATED, "{index}");
    }
    let (status, headers) = register_from(&app, "user10@example.com", ATTACKER).await;
    assert_eq!(
        (status, &headers[header::RETRY_AFTER]),
        (StatusCode::TOO_MANY_REQUESTS, &"900".parse().expect("value"))
    );
    let (status, _) = register_from(&app, "user10@example.com", USER).await;
    assert_eq!(status, StatusCode::CREATED, "another address");
    let text = scrape(&app).await;
    assert!(text.contains(r#"portcullis_limit_refusals_total{limit="registration"} 1"#), "{text}");
}

#[tokio::test]
async fn a_taken_email_is_answered_without_hashing_the_password() {
    let issuer = TestIssuer::start(&[("registration", "open")]).await;
    let app = issuer.app();
    let (status, _) = register_from(&app, "alice@example.com", USER).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = register_from(&app, "Alice@Example.com", USER).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let text = scrape(&app).await;
    assert!(text.contains(r#"portcullis_password_hashes_total{operation="hash"} 1"#), "{text}");
}
