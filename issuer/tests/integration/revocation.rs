//! Every way a session ends lists the access tokens it issued that are still unexpired in
//! `GET /revoked`, and the issuer's own bearer check refuses them: logout, logout everywhere,
//! RFC 7009 revocation of a refresh token, refresh-token reuse, disabling the user, removing the
//! client (with its client-credentials tokens). Tokens of other sessions stay off the list. (A
//! second use of an authorization code: `signin.rs`.)

use crate::common::{TestIssuer, get, json, post, post_form};
use crate::oauth::{PASSWORD, form, login, refresh, text};
use axum::Router;
use axum::http::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `jti` of an access token (checked by the core, so while it is unexpired).
pub(crate) async fn jti(issuer: &TestIssuer, token: &str) -> String {
    let claims = issuer.validator().validate(token, &issuer.key_set().await, &jwks::P256Verifier, issuer.now());
    claims.expect("a valid access token").jti.expect("a jti")
}

/// `GET /revoked` as a map from `jti` to the listed `exp`.
pub(crate) async fn revoked(app: &Router) -> BTreeMap<String, u64> {
    let (status, _, body) = get(app, "/revoked", None).await;
    assert_eq!(status, StatusCode::OK);
    let body = json(&body);
    let entries = body["revoked"].as_array().expect("a list");
    entries.iter().map(|entry| (text(entry, "jti"), entry["exp"].as_u64().expect("an exp"))).collect()
}

/// Asserts that each of `ended` is listed and refused by `/userinfo`, and that each of `alive`
/// is neither.
pub(crate) async fn assert_ended(issuer: &TestIssuer, ended: &[(&str, String)], alive: &[(&str, String)]) {
    let app = issuer.app();
    let listed = revoked(&app).await;
    for (token, jti) in ended {
        assert!(listed.contains_key(jti), "{jti} in {listed:?}");
        let (status, _, _) = get(&app, "/userinfo", Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{jti} is refused by the issuer");
    }
    for (token, jti) in alive {
        assert!(!listed.contains_key(jti), "{jti} not in {listed:?}");
        let (status, _, _) = get(&app, "/userinfo", Some(token)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{jti} is still accepted");
    }
}

/// A password login and two refreshes: the three access tokens of one session (with their
/// `jti`) and its latest refresh token.
async fn session(issuer: &TestIssuer, email: &str) -> (Vec<(String, String)>, String) {
    let app = issuer.app();
    let (access, mut latest) = login(&app, email).await;
    let mut tokens = vec![(jti(issuer, &access).await, access)];
    for _ in 0..2 {
        let (status, body) = refresh(&app, &latest).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        latest = text(&body, "refresh_token");
        let access = text(&body, "access_token");
        tokens.push((jti(issuer, &access).await, access));
    }
    (tokens, latest)
}

/// The (token, jti) pairs as `assert_ended` takes them.
fn pairs(tokens: &[(String, String)]) -> Vec<(&str, String)> {
    tokens.iter().map(|(jti, token)| (token.as_str(), jti.clone())).collect()
}

#[tokio::test]
async fn logout_lists_every_unexpired_access_token_of_the_session_with_its_exp() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    // An access token of the session that has expired by the logout is not listed.
    let (first, mut latest) = login(&app, "alice@example.com").await;
    let first_jti = jti(&issuer, &first).await;
    issuer.advance(Duration::from_secs(301));
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, body) = refresh(&app, &latest).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        latest = text(&body, "refresh_token");
        let access = text(&body, "access_token");
        tokens.push((jti(&issuer, &access).await, access));
    }
    let (others, _) = session(&issuer, "alice@example.com").await;
    // Logging out with one token of the session ends it all.
    let (status, _, _) = post(&app, "/logout", Some(&tokens[0].1)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_ended(&issuer, &pairs(&tokens), &pairs(&others)).await;
    let listed = revoked(&app).await;
    assert!(!listed.contains_key(&first_jti), "an expired token is not listed: {listed:?}");
    // Each is listed until its own `exp`, rotated ones included (stored with the refresh token).
    let keys = issuer.key_set().await;
    for (jti, token) in tokens.drain(..) {
        let claims = issuer.validator().validate(&token, &keys, &jwks::P256Verifier, issuer.now());
        let exp = claims.map(|claims| claims.exp).unwrap_or_else(|_| panic!("{jti} checks"));
        assert_eq!(listed[&jti], exp, "{jti}");
    }
}

#[tokio::test]
async fn logout_all_lists_every_session_of_the_user_and_no_other_user() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    issuer.user("bob@example.com", &[]).await;
    let (first, _) = session(&issuer, "alice@example.com").await;
    let (second, _) = session(&issuer, "alice@example.com").await;
    let (bobs, _) = session(&issuer, "bob@example.com").await;
    let (status, _, _) = post(&issuer.app(), "/logout-all", Some(&second[2].1)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended: Vec<(String, String)> = first.into_iter().chain(second).collect();
    assert_ended(&issuer, &pairs(&ended), &pairs(&bobs)).await;
}

#[tokio::test]
async fn revoking_a_refresh_token_lists_the_access_tokens_of_its_family() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let (tokens, latest) = session(&issuer, "alice@example.com").await;
    let (others, _) = session(&issuer, "alice@example.com").await;
    let (status, _, _) = post_form(&issuer.app(), "/oauth/revoke", &form(&[("token", &latest)]), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_ended(&issuer, &pairs(&tokens), &pairs(&others)).await;
}

#[tokio::test]
async fn a_reused_refresh_token_lists_the_access_tokens_of_its_family() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let app = issuer.app();
    let (access, spent) = login(&app, "alice@example.com").await;
    let mut tokens = vec![(jti(&issuer, &access).await, access)];
    let (status, body) = refresh(&app, &spent).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = text(&body, "access_token");
    tokens.push((jti(&issuer, &access).await, access));
    let (others, _) = session(&issuer, "alice@example.com").await;
    let (status, _) = refresh(&app, &spent).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reuse");
    assert_ended(&issuer, &pairs(&tokens), &pairs(&others)).await;
}

#[tokio::test]
async fn disabling_a_user_lists_every_session_of_the_user_and_no_other_user() {
    let issuer = TestIssuer::start(&[]).await;
    let alice = issuer.user("alice@example.com", &[]).await;
    issuer.user("bob@example.com", &[]).await;
    let (first, _) = session(&issuer, "alice@example.com").await;
    let (second, _) = session(&issuer, "alice@example.com").await;
    let (bobs, _) = session(&issuer, "bob@example.com").await;
    let admin = issuer.admin_token().await;
    let (status, _, _) = post(&issuer.app(), &format!("/admin/users/{}/disable", alice.id), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let ended: Vec<(String, String)> = first.into_iter().chain(second).collect();
    assert_ended(&issuer, &pairs(&ended), &pairs(&bobs)).await;
}

#[tokio::test]
async fn removing_a_client_lists_its_sessions_and_its_client_credentials_tokens() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let web = issuer.client("web", &[]).await;
    let other = issuer.client("other", &[]).await;
    let app = issuer.app();
    // A session at each client, and a client-credentials token of each.
    let mut tokens = BTreeMap::new();
    for (client, secret) in [("web", &web), ("other", &other)] {
        let login = form(&[("grant_type", "password"), ("username", "alice@example.com"), ("password", PASSWORD)]);
        let (status, _, body) = post_form(&app, "/oauth/token", &login, Some((client, secret)), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rotate = form(&[("grant_type", "refresh_token"), ("refresh_token", &text(&body, "refresh_token"))]);
        let (status, _, rotated) = post_form(&app, "/oauth/token", &rotate, Some((client, secret)), None).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let (status, _, service) =
            post_form(&app, "/oauth/token", "grant_type=client_credentials", Some((client, secret)), None).await;
        assert_eq!(status, StatusCode::OK, "{service}");
        let mut issued = Vec::new();
        for access in [&body, &rotated, &service].map(|body| text(body, "access_token")) {
            issued.push((jti(&issuer, &access).await, access));
        }
        tokens.insert(client, issued);
    }
    issuer.state.accounts().remove_client(issuer.state.sessions(), "web", issuer.now()).await.expect("removed");
    assert_ended(&issuer, &pairs(&tokens["web"]), &pairs(&tokens["other"])).await;
    // Once expired, they leave the list, and the purge deletes them: the three revocations, both
    // clients' service tokens, and the removed client's family with its two refresh tokens.
    issuer.advance(Duration::from_secs(301));
    assert!(revoked(&app).await.is_empty());
    assert_eq!(issuer.state.sessions().purge(issuer.now()).await.expect("purges"), 8);
}
