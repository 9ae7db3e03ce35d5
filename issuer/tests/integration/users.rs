//! The account endpoints: registration (open or closed), `GET /userinfo`, and the admin endpoints
//! for users.

use crate::common::{TestIssuer, get, json, post, post_json};
use crate::oauth::{PASSWORD, login, password_grant, refresh, text};
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registration_is_closed_by_default_and_admins_always_may() {
    let issuer = TestIssuer::start(&[]).await;
    let app = issuer.app();
    let new = json!({ "email": "alice@example.com", "password": PASSWORD });
    let (status, body) = post_json(&app, "/users", &new, None).await;
    assert_eq!((status, body), (StatusCode::FORBIDDEN, json!({ "error": "registration_closed" })));

    let admin = issuer.admin_token().await;
    let with_roles = json!({ "email": "Alice@Example.com", "password": PASSWORD, "roles": ["reader", "reader", "a"] });
    let (status, body) = post_json(&app, "/users", &with_roles, Some(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["email"].as_str(), &body["roles"]), (Some("alice@example.com"), &json!(["a", "reader"])));
    assert!(body.get("password_hash").is_none() && !body.to_string().contains("argon2"));
    let (status, body) = post_json(&app, "/users", &new, Some(&admin)).await;
    assert_eq!((status, body), (StatusCode::CONFLICT, json!({ "error": "email_taken" })));
    let reader = issuer.mint(&["reader"]).await.token;
    let (status, _) =
        post_json(&app, "/users", &json!({ "email": "b@example.com", "password": PASSWORD }), Some(&reader)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a token that is not an admin token is refused, not ignored");
}

#[tokio::test]
async fn open_registration_and_input_errors() {
    let issuer = TestIssuer::start(&[("registration", "open")]).await;
    let app = issuer.app();
    let (status, body) =
        post_json(&app, "/users", &json!({ "email": "bob@example.com", "password": PASSWORD }), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["roles"], json!([]));
    for (input, code) in [
        (json!({ "email": "carol@example.com", "password": PASSWORD, "roles": ["admin"] }), "insufficient_scope"),
        (json!({ "email": "not-an-email", "password": PASSWORD }), "invalid_request"),
        (json!({ "email": "carol@example.com", "password": "short" }), "weak_password"),
        (json!({ "email": "carol@example.com" }), "invalid_request"),
        (json!({ "email": "carol@example.com", "password": PASSWORD, "extra": 1 }), "invalid_request"),
        (json!(["carol@example.com"]), "invalid_request"),
    ] {
        let (status, body) = post_json(&app, "/users", &input, None).await;
        assert_eq!(body, json!({ "error": code }), "{input}");
        assert!(status.is_client_error(), "{input}: {status}");
    }
    let (status, _, body) = post(&app, "/users", None).await;
    assert_eq!((status, json(&body)), (StatusCode::BAD_REQUEST, json!({ "error": "invalid_request" })), "no body");
}

#[tokio::test]
async fn admins_list_users_set_roles_and_disable() {
    let issuer = TestIssuer::start(&[]).await;
    let alice = issuer.user("alice@example.com", &["reader"]).await;
    let app = issuer.app();
    let admin = issuer.admin_token().await;
    let (status, _, body) = get(&app, "/admin/users", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["users"][0]["email"], "alice@example.com");
    let (status, _, _) = get(&app, "/admin/users", Some(&issuer.mint(&["reader"]).await.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an API token is not an admin token");
    let (status, _, _) = get(&app, "/admin/users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (access, refresh_token) = login(&app, "alice@example.com").await;
    let path = format!("/admin/users/{}/roles", alice.id);
    let (status, body) = post_json(&app, &path, &json!({ "roles": ["writer", "reader"] }), Some(&admin)).await;
    assert_eq!((status, &body["roles"]), (StatusCode::OK, &json!(["reader", "writer"])));
    let (status, body) = post_json(&app, &path, &json!({ "roles": ["bad role"] }), Some(&admin)).await;
    assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({ "error": "invalid_request" })));
    let (status, body) = post_json(&app, "/admin/users/nobody/roles", &json!({ "roles": [] }), Some(&admin)).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({ "error": "unknown_user" })));
    let (status, body) = refresh(&app, &refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    let claims = issuer
        .validator()
        .validate(&text(&body, "access_token"), &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("valid");
    assert_eq!(claims.roles, ["reader", "writer"], "the next refresh carries the new roles");
    let latest = text(&body, "refresh_token");
    let (_, _, info) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(json(&info)["roles"], json!(["reader", "writer"]));

    let (status, _, body) = post(&app, &format!("/admin/users/{}/disable", alice.id), Some(&admin)).await;
    assert_eq!((status, json(&body)["disabled"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, _) = refresh(&app, &latest).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a disabled user's access token no longer opens userinfo");
    // Verifiers learn of it too: the access tokens of the user's sessions are listed as revoked.
    let (_, _, body) = get(&app, "/revoked", None).await;
    let listed = json(&body);
    let listed: Vec<&str> =
        listed["revoked"].as_array().expect("a list").iter().filter_map(|entry| entry["jti"].as_str()).collect();
    let first = issuer.validator().validate(&access, &issuer.key_set().await, &jwks::P256Verifier, issuer.now());
    for jti in [first.expect("valid").jti, claims.jti] {
        let jti = jti.expect("a jti");
        assert!(listed.contains(&jti.as_str()), "{jti} in {listed:?}");
    }
    let (status, _, _) = password_grant(&app, "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = post(&app, "/admin/users/nobody/disable", Some(&admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
