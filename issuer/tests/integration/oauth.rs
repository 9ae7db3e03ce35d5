//! The OAuth endpoints through `oneshot` on a real SQLite file: the three grants, refresh-token
//! rotation and reuse detection, parallel guesses against the login limit, revocation,
//! introspection and logout. (The login limits themselves: `limits.rs`.)

use crate::common::{TestIssuer, get, json, mint, post, post_form, send};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use issuer::AppState;
use issuer::clock::ManualClock;
use issuer::domain::accounts::{NewClient, User};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const PASSWORD: &str = "correct horse";

impl TestIssuer {
    /// Creates a user with the test password.
    pub(crate) async fn user(&self, email: &str, roles: &[&str]) -> User {
        let roles: Vec<String> = roles.iter().map(|role| (*role).to_owned()).collect();
        self.state.accounts().create_user(email, PASSWORD, &roles, self.now()).await.expect("creates the user")
    }

    /// Registers a client; returns its secret.
    pub(crate) async fn client(&self, id: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|role| (*role).to_owned()).collect();
        let audiences = vec![self.state.config().audiences[0].clone()];
        let new = NewClient { client_id: id.to_owned(), audiences, roles, ..NewClient::default() };
        let (_, secret) = self.state.accounts().create_client(&new, self.now()).await.expect("creates the client");
        secret.expect("a confidential client's secret")
    }
}

/// A password login: (access token, refresh token).
pub(crate) async fn login(app: &Router, email: &str) -> (String, String) {
    let (status, _, body) = password_grant(app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (text(&body, "access_token"), text(&body, "refresh_token"))
}

pub(crate) async fn password_grant(
    app: &Router,
    email: &str,
    password: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let body = form(&[("grant_type", "password"), ("username", email), ("password", password)]);
    post_form(app, "/oauth/token", &body, None, Some("192.0.2.1:5000")).await
}

pub(crate) async fn refresh(app: &Router, token: &str) -> (StatusCode, Value) {
    let (status, _, body) =
        post_form(app, "/oauth/token", &form(&[("grant_type", "refresh_token"), ("refresh_token", token)]), None, None)
            .await;
    (status, body)
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub(crate) fn text(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}")).to_owned()
}

fn error(code: &str) -> Value {
    json!({ "error": code })
}

#[tokio::test]
async fn password_grant_issues_tokens_the_core_accepts() {
    let issuer = TestIssuer::start(&[]).await;
    let user = issuer.user(" Alice@Example.com ", &["reader"]).await;
    assert_eq!(user.email, "alice@example.com");
    let app = issuer.app();
    let (status, headers, body) = password_grant(&app, "ALICE@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::PRAGMA], "no-cache");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(text(&body, "refresh_token").len(), 43, "256 bits, base64url");
    let claims = issuer
        .validator()
        .validate(&text(&body, "access_token"), &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("the core accepts it");
    assert_eq!(claims.sub.as_deref(), Some(user.id.as_str()));
    assert_eq!(claims.roles, ["reader"]);
    assert_eq!(claims.client_id.as_deref(), Some("public"));
    assert_eq!(claims.aud, ["api"]);

    let (status, _, info) = get(&app, "/userinfo", Some(&text(&body, "access_token"))).await;
    assert_eq!(status, StatusCode::OK);
    let info = json(&info);
    assert_eq!((info["sub"].as_str(), info["email"].as_str()), (Some(user.id.as_str()), Some("alice@example.com")));
    assert_eq!(info["last_login_at"], issuer.now());
    let (status, _, _) = get(&app, "/userinfo", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An admin's everyday token does not open the admin endpoints: a token asked for the admin
    // audience (RFC 8707 `resource`) does, and its refreshes keep it.
    issuer.user("root@example.com", &["admin"]).await;
    let (everyday, _) = login(&app, "root@example.com").await;
    let (status, _, _) = get(&app, "/admin/users", Some(&everyday)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not for the admin audience");
    let admin_audience = issuer.state.config().admin_audience.clone();
    let asked = form(&[
        ("grant_type", "password"),
        ("username", "root@example.com"),
        ("password", PASSWORD),
        ("resource", &admin_audience),
    ]);
    let (status, _, admin) = post_form(&app, "/oauth/token", &asked, None, None).await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    let (status, _, body) = get(&app, "/admin/users", Some(&text(&admin, "access_token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["users"].as_array().map(Vec::len), Some(2));
    let (status, refreshed) = refresh(&app, &text(&admin, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&app, "/admin/users", Some(&text(&refreshed, "access_token"))).await;
    assert_eq!(status, StatusCode::OK, "the refresh keeps the audience asked for");
    let (status, _, _) = get(&app, "/userinfo", Some(&text(&refreshed, "access_token"))).await;
    assert_eq!(status, StatusCode::OK);
    // Not an audience this user may have: a reader asking for the admin one, anyone for another.
    for (user, resource) in [("alice@example.com", admin_audience.as_str()), ("root@example.com", "elsewhere")] {
        let asked =
            form(&[("grant_type", "password"), ("username", user), ("password", PASSWORD), ("resource", resource)]);
        let (status, _, body) = post_form(&app, "/oauth/token", &asked, None, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_target")),
            "{user} {resource}"
        );
    }
}

#[tokio::test]
async fn token_endpoint_errors_are_rfc_6749_bodies() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let token = |body: &'static str| post_form(&app, "/oauth/token", body, None, None);
    for (body, status, code) in [
        ("grant_type=authorization_code&code=x", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=implicit", StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        ("grant_type=", StatusCode::BAD_REQUEST, "invalid_request"),
        ("username=alice%40example.com", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=password&password=x", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=password&grant_type=password&username=a&password=b", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=refresh_token", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=refresh_token&refresh_token=nope", StatusCode::BAD_REQUEST, "invalid_grant"),
        ("%%%&&==\u{1}", StatusCode::BAD_REQUEST, "invalid_request"),
        ("grant_type=client_credentials", StatusCode::UNAUTHORIZED, "invalid_client"),
        ("grant_type=client_credentials&client_id=svc", StatusCode::UNAUTHORIZED, "invalid_client"),
        ("grant_type=client_credentials&client_id=svc&client_secret=x", StatusCode::UNAUTHORIZED, "invalid_client"),
    ] {
        let (got, headers, answer) = token(body).await;
        assert_eq!((got, &answer), (status, &error(code)), "{body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="portcullis""#);
        }
    }
    // Not a form.
    let request = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"grant_type":"password"}"#))
        .expect("request");
    let (status, _, body) = crate::common::send(&app, request).await;
    assert_eq!((status, json(&body)), (StatusCode::BAD_REQUEST, error("invalid_request")));
    // A Basic header that does not decode.
    let request = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, "Basic %%%")
        .body(Body::from("grant_type=client_credentials"))
        .expect("request");
    let (status, _, body) = crate::common::send(&app, request).await;
    assert_eq!((status, json(&body)), (StatusCode::UNAUTHORIZED, error("invalid_client")));
    // GET is not served.
    let (status, _, _) = get(&app, "/oauth/token", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Wrong password, unknown user, disabled user: one answer.
    let (status, _, wrong) = password_grant(&app, "alice@example.com", "wrong password").await;
    assert_eq!((status, &wrong), (StatusCode::BAD_REQUEST, &error("invalid_grant")));
    let (status, _, unknown) = password_grant(&app, "bob@example.com", PASSWORD).await;
    assert_eq!((status, &unknown), (StatusCode::BAD_REQUEST, &error("invalid_grant")));
    let (status, _, garbage) = password_grant(&app, "not an email", PASSWORD).await;
    assert_eq!((status, &garbage), (StatusCode::BAD_REQUEST, &error("invalid_grant")));
    let carol = issuer.user("carol@example.com", &[]).await;
    let (_, carol_refresh) = login(&app, "carol@example.com").await;
    issuer.state.accounts().disable(&carol.id, issuer.now()).await.expect("disables");
    let (status, _, disabled) = password_grant(&app, "carol@example.com", PASSWORD).await;
    assert_eq!((status, &disabled), (StatusCode::BAD_REQUEST, &error("invalid_grant")));
    let (status, body) = refresh(&app, &carol_refresh).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")), "disabled users get nothing");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &["reader"]).await;
    let app = issuer.app();
    let (_, first) = login(&app, "alice@example.com").await;
    let (_, other_login) = login(&app, "alice@example.com").await;
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = text(&body, "refresh_token");
    assert_ne!(second, first);
    assert_eq!(body["expires_in"], 300);
    issuer
        .validator()
        .validate(&text(&body, "access_token"), &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("the core accepts the refreshed access token");
    let (status, body) = refresh(&app, &second).await;
    assert_eq!(status, StatusCode::OK);
    let third = text(&body, "refresh_token");

    // The spent first token comes back: the whole family dies.
    let (status, body) = refresh(&app, &first).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")));
    let (status, body) = refresh(&app, &third).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")), "the newest one is dead too");
    // Another login's family is untouched.
    let (status, _) = refresh(&app, &other_login).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_spent_token_is_a_reuse_whatever_the_clock_of_the_request() {
    // A second process on the database whose clock is a second behind (or a request that read
    // the clock just before a concurrent use spent the token): the token is spent all the same.
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &["reader"]).await;
    let behind_clock = Arc::new(ManualClock::new(issuer.now()));
    let behind = AppState::open(issuer.config(&[]), issuer.kek.clone(), behind_clock).await.expect("starts");
    issuer.advance(Duration::from_secs(1));
    let app = issuer.app();
    let (_, first) = login(&app, "alice@example.com").await;
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = text(&body, "refresh_token");

    let (status, body) = refresh(&issuer::app(behind), &first).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")), "a reuse, one second earlier");
    let (status, body) = refresh(&app, &second).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")), "the family is revoked");
}

#[tokio::test]
async fn parallel_wrong_passwords_count_before_their_hashes() {
    // Twenty guesses at once: at most `login_max_failures` get a password check; the others are
    // refused before it.
    let issuer = TestIssuer::start(&[("login_max_failures", "3")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let mut guesses = tokio::task::JoinSet::new();
    for guess in 0..20 {
        let app = app.clone();
        guesses.spawn(async move { password_grant(&app, "alice@example.com", &format!("guess {guess}")).await.0 });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses.iter().filter(|status| **status == StatusCode::BAD_REQUEST).count();
    let limited = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + limited, 20, "{statuses:?}");
    assert!(checked <= 3, "{checked} guesses were checked: {statuses:?}");
    // Only the checked guesses count as failures (a refused one is not an attempt).
    let (status, _, _) = password_grant(&app, "alice@example.com", PASSWORD).await;
    let expected = if checked == 3 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
    assert_eq!(status, expected, "after {checked} checked guesses");
}

#[tokio::test]
async fn a_grace_window_lets_a_lost_answer_be_retried() {
    let issuer = TestIssuer::start(&[("refresh_reuse_grace", "10s")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let (_, first) = login(&app, "alice@example.com").await;
    let (status, _) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK);
    issuer.advance(Duration::from_secs(5));
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK, "within the grace window");
    let retried = text(&body, "refresh_token");
    issuer.advance(Duration::from_secs(6));
    let (status, _) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past the window: reuse");
    let (status, _) = refresh(&app, &retried).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the family is revoked");
}

#[tokio::test]
async fn refresh_tokens_expire_when_idle_and_at_the_absolute_lifetime() {
    let issuer = TestIssuer::start(&[("refresh_idle_timeout", "1m"), ("refresh_max_lifetime", "2m")]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let (_, idle) = login(&app, "alice@example.com").await;
    let (_, mut busy) = login(&app, "alice@example.com").await;
    for _ in 0..2 {
        issuer.advance(Duration::from_secs(50));
        let (status, body) = refresh(&app, &busy).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        busy = text(&body, "refresh_token");
    }
    let (status, _) = refresh(&app, &idle).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "idle for 100 s");
    issuer.advance(Duration::from_secs(25));
    let (status, _) = refresh(&app, &busy).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past the absolute lifetime");
}

#[tokio::test]
async fn a_refresh_token_belongs_to_its_client() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let secret = issuer.client("web", &[]).await;
    let app = issuer.app();
    let login = form(&[("grant_type", "password"), ("username", "alice@example.com"), ("password", PASSWORD)]);
    let (status, _, body) = post_form(&app, "/oauth/token", &login, Some(("web", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = text(&body, "refresh_token");
    let (status, body) = refresh(&app, &token).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_grant")), "not the public client's");
    let again = form(&[("grant_type", "refresh_token"), ("refresh_token", &token)]);
    let (status, _, body) = post_form(&app, "/oauth/token", &again, Some(("web", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "the refusal above spent nothing: {body}");
}

#[tokio::test]
async fn client_credentials_by_basic_or_form() {
    let issuer = TestIssuer::start(&[]).await;
    let secret = issuer.client("billing-worker", &["billing"]).await;
    let app = issuer.app();
    let (status, headers, body) =
        post_form(&app, "/oauth/token", "grant_type=client_credentials", Some(("billing-worker", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(body.get("refresh_token").is_none(), "no refresh token for a service");
    let claims = issuer
        .validator()
        .validate(&text(&body, "access_token"), &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("the core accepts it");
    assert_eq!(claims.sub.as_deref(), Some("billing-worker"));
    assert_eq!(claims.client_id.as_deref(), Some("billing-worker"));
    assert_eq!(claims.roles, ["billing"]);
    // A service's token says so (gty), so that verifiers tell it from a user's.
    assert_eq!((claims.gty.as_deref(), claims.subject_kind()), (Some(jwks::SERVICE_GRANT), jwks::SubjectKind::Service));
    let user = mint(&issuer.state, "api", &["reader"]).await;
    let user_claims = issuer
        .validator()
        .validate(&user.token, &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("the core accepts it");
    assert_eq!((user_claims.gty.as_deref(), user_claims.subject_kind()), (None, jwks::SubjectKind::User));

    let posted =
        form(&[("grant_type", "client_credentials"), ("client_id", "billing-worker"), ("client_secret", &secret)]);
    let (status, _, _) = post_form(&app, "/oauth/token", &posted, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = post_form(&app, "/oauth/token", &posted, Some(("billing-worker", &secret)), None).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_request")), "two methods at once");
    let (status, _, body) =
        post_form(&app, "/oauth/token", "grant_type=client_credentials", Some(("billing-worker", "wrong")), None).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, error("invalid_client")));
    // Basic credentials are form-urlencoded first (RFC 6749 §2.3.1): escapes are decoded, a
    // broken escape or a raw `&` is not a way around the check.
    let (status, _, body) =
        post_form(&app, "/oauth/token", "grant_type=client_credentials", Some(("billing%2Dworker", &secret)), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for id in ["billing-worker%zz", "billing-worker&x=y"] {
        let (status, _, body) =
            post_form(&app, "/oauth/token", "grant_type=client_credentials", Some((id, &secret)), None).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, error("invalid_client")), "{id}");
    }
    // A userinfo for a service token: there is no such user.
    let (_, _, body) =
        post_form(&app, "/oauth/token", "grant_type=client_credentials", Some(("billing-worker", &secret)), None).await;
    let (status, _, _) = get(&app, "/userinfo", Some(&text(&body, "access_token"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revocation_is_idempotent_and_listed() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let (ended, refresh_token) = login(&app, "alice@example.com").await;
    for _ in 0..2 {
        let (status, _, body) = post_form(&app, "/oauth/revoke", &form(&[("token", &refresh_token)]), None, None).await;
        assert_eq!((status, body), (StatusCode::OK, Value::Null));
    }
    let (status, _) = refresh(&app, &refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Its session's access token is revoked with it (see revocation.rs); another session's is not.
    let (status, _, _) = get(&app, "/userinfo", Some(&ended)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (access, _) = login(&app, "alice@example.com").await;
    for unknown in ["unknown", "a.b.c"] {
        let body = form(&[("token", unknown), ("token_type_hint", "refresh_token")]);
        let (status, _, _) = post_form(&app, "/oauth/revoke", &body, None, None).await;
        assert_eq!(status, StatusCode::OK, "{unknown}");
    }
    let (status, _, body) = post_form(&app, "/oauth/revoke", "token_type_hint=access_token", None, None).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, error("invalid_request")));

    // Another client cannot revoke it (RFC 7009 §2.1): answered 200, and nothing changes.
    let other_secret = issuer.client("other-service", &[]).await;
    let body = form(&[("token", &access)]);
    let (status, _, _) = post_form(&app, "/oauth/revoke", &body, Some(("other-service", &other_secret)), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(status, StatusCode::OK, "still valid");

    // An access token, by jti, until it expires.
    let (status, _, _) = post_form(&app, "/oauth/revoke", &form(&[("token", &access)]), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = post_form(&app, "/oauth/revoke", &form(&[("token", &access)]), None, None).await;
    assert_eq!(status, StatusCode::OK, "again");
    let (status, headers, _) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE].to_str().expect("ASCII").contains("invalid_token"));
    let (status, headers, body) = get(&app, "/revoked", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=30");
    // Asked again with its entity tag: 304 while the list is the same.
    let etag = headers[header::ETAG].to_str().expect("ASCII").to_owned();
    let conditional =
        |etag: &str| Request::get("/revoked").header("if-none-match", etag).body(Body::empty()).expect("request");
    let (status, unchanged, body_304) = send(&app, conditional(&etag)).await;
    assert_eq!(
        (status, unchanged[header::ETAG].to_str().ok(), body_304.len()),
        (StatusCode::NOT_MODIFIED, Some(etag.as_str()), 0)
    );
    let (status, _, _) = send(&app, conditional("\"another\"")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = json(&body);
    assert_eq!(listed["revoked"].as_array().map(Vec::len), Some(2), "both sessions' access tokens");
    assert_eq!(listed["revoked"][1]["exp"], issuer.now() + 300);

    // Once expired, the entry leaves the list, and the purge deletes it.
    issuer.advance(Duration::from_secs(301));
    let (status, _, body) = send(&app, conditional(&etag)).await;
    assert_eq!(status, StatusCode::OK, "a changed list under the old tag is sent whole");
    assert_eq!(json(&body), json!({ "revoked": [] }));
    assert!(issuer.state.sessions().purge(issuer.now()).await.expect("purges") >= 1);
}

#[tokio::test]
async fn introspection_for_authenticated_clients() {
    let issuer = TestIssuer::start(&[]).await;
    let user = issuer.user("alice@example.com", &["reader"]).await;
    let secret = issuer.client("gateway", &["introspection"]).await;
    let nosy = issuer.client("nosy", &[]).await;
    let app = issuer.app();
    let (access, refresh_token) = login(&app, "alice@example.com").await;
    // A client without the introspection role learns nothing of another client's tokens.
    for token in [&access, &refresh_token] {
        let (status, _, body) =
            post_form(&app, "/oauth/introspect", &form(&[("token", token)]), Some(("nosy", &nosy)), None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "active": false })), "another client's token");
    }
    // Its own tokens it sees.
    let credentials = form(&[("grant_type", "client_credentials")]);
    let (_, _, own) = post_form(&app, "/oauth/token", &credentials, Some(("nosy", &nosy)), None).await;
    let (_, _, body) = post_form(
        &app,
        "/oauth/introspect",
        &form(&[("token", &text(&own, "access_token"))]),
        Some(("nosy", &nosy)),
        None,
    )
    .await;
    assert_eq!(body["active"], true, "{body}");
    let introspect = |token: String| {
        let app = app.clone();
        let secret = secret.clone();
        async move {
            let (status, _, body) =
                post_form(&app, "/oauth/introspect", &form(&[("token", &token)]), Some(("gateway", &secret)), None)
                    .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let (status, _, body) = post_form(&app, "/oauth/introspect", &form(&[("token", &access)]), None, None).await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, error("invalid_client")), "clients only");

    let body = introspect(access.clone()).await;
    assert_eq!((body["active"].as_bool(), body["token_type"].as_str()), (Some(true), Some("access_token")));
    assert_eq!(body["sub"], user.id.as_str());
    assert_eq!(body["roles"], json!(["reader"]));
    let body = introspect(refresh_token.clone()).await;
    assert_eq!((body["active"].as_bool(), body["token_type"].as_str()), (Some(true), Some("refresh_token")));
    assert_eq!((body["sub"].as_str(), body["client_id"].as_str()), (Some(user.id.as_str()), Some("public")));

    for unknown in ["garbage", "x.y.z"] {
        assert_eq!(introspect(unknown.to_owned()).await, json!({ "active": false }), "{unknown:?}");
    }
    // Spent, revoked, expired.
    let (_, rotated) = refresh(&app, &refresh_token).await;
    assert_eq!(introspect(refresh_token).await, json!({ "active": false }), "spent");
    assert_eq!(introspect(text(&rotated, "refresh_token")).await["active"], true);
    post_form(&app, "/oauth/revoke", &form(&[("token", &access)]), None, None).await;
    assert_eq!(introspect(access).await, json!({ "active": false }), "revoked");
    let fresh = text(&rotated, "access_token");
    issuer.advance(Duration::from_secs(400));
    assert_eq!(introspect(fresh).await, json!({ "active": false }), "expired");
}

#[tokio::test]
async fn logout_ends_this_session_and_logout_all_every_session() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let (access, refresh_token) = login(&app, "alice@example.com").await;
    let (_, other) = login(&app, "alice@example.com").await;
    let (status, _, body) = post(&app, "/logout", Some(&access)).await;
    assert_eq!((status, body.is_empty()), (StatusCode::NO_CONTENT, true));
    let (status, _) = refresh(&app, &refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "this session is over");
    let (status, _, _) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the access token is revoked");
    let (status, _, _) = post(&app, "/logout", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token cannot log out again");

    // The other session lives; a refreshed access token still finds its family.
    let (status, body) = refresh(&app, &other).await;
    assert_eq!(status, StatusCode::OK);
    let (_, third) = login(&app, "alice@example.com").await;
    let (status, _, _) = post(&app, "/logout-all", Some(&text(&body, "access_token"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [text(&body, "refresh_token"), third] {
        let (status, _) = refresh(&app, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _, _) = post(&app, "/logout", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
