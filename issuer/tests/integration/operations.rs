//! Operations: the Prometheus metrics as a scrape reads them, and the OpenAPI description
//! checked against the router it was built from.

use crate::common::{TestIssuer, get, json, send};
use crate::oauth::{PASSWORD, login, password_grant, refresh};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use std::time::Duration;

pub(crate) async fn scrape(app: &axum::Router) -> String {
    let (status, headers, body) = get(app, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ASCII").starts_with("application/openmetrics-text"));
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn metrics_count_requests_grants_logins_reuse_and_key_changes() {
    let issuer = TestIssuer::start(&[("login_max_failures", "1")]).await;
    issuer.user("alice@example.com", &["reader"]).await;
    let app = issuer.app();

    let (_, first_refresh) = login(&app, "alice@example.com").await;
    let (status, _) = refresh(&app, &first_refresh).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = refresh(&app, &first_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reuse");
    let (status, _, _) = password_grant(&app, "alice@example.com", "wrong password").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = password_grant(&app, "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the limit of one failure");
    issuer.state.rotate_keys().await.expect("rotates");
    assert_eq!(get(&app, "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/no/such/route", None).await.0, StatusCode::NOT_FOUND);
    issuer.advance(Duration::from_secs(100));

    let text = scrape(&app).await;
    for expected in [
        r#"portcullis_oauth_grants_total{grant_type="password",outcome="issued"} 1"#,
        r#"portcullis_oauth_grants_total{grant_type="password",outcome="invalid_grant"} 1"#,
        r#"portcullis_oauth_grants_total{grant_type="password",outcome="too_many_requests"} 1"#,
        r#"portcullis_oauth_grants_total{grant_type="refresh_token",outcome="issued"} 1"#,
        r#"portcullis_oauth_grants_total{grant_type="refresh_token",outcome="invalid_grant"} 1"#,
        "portcullis_refresh_reuse_detections_total 1",
        "portcullis_login_failures_total 1",
        r#"portcullis_limit_refusals_total{limit="login_account_address"} 1"#,
        r#"portcullis_password_hashes_total{operation="verify"} 2"#,
        "portcullis_login_delay_seconds_count 0",
        r#"portcullis_key_changes_total{change="scheduled"} 1"#,
        r#"portcullis_http_requests_total{route="/oauth/token",method="POST",status="200"} 2"#,
        r#"portcullis_http_requests_total{route="/oauth/token",method="POST",status="400"} 2"#,
        r#"portcullis_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
        r#"portcullis_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"portcullis_http_request_duration_seconds_count{route="/oauth/token",method="POST"} 5"#,
        "portcullis_active_key_age_seconds 100",
        r#"portcullis_db_pool_connections{state="max"} 8"#,
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in:\n{text}");
    }
    assert!(!text.contains("alice") && !text.contains(&first_refresh) && !text.contains("/no/such"), "{text}");

    let again = scrape(&app).await;
    assert!(again.contains(r#"portcullis_http_requests_total{route="/metrics",method="GET",status="200"} 1"#));
}

#[tokio::test]
async fn metrics_on_their_own_listener_leave_the_api() {
    let issuer = TestIssuer::start(&[("metrics_bind", "127.0.0.1:9464")]).await;
    let (status, _, body) = get(&issuer.app(), "/metrics", None).await;
    assert_eq!((status, json(&body)["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let text = scrape(&issuer::http::metrics_app(issuer.state.clone())).await;
    // The same counters as the API's: the 404 above is counted there.
    assert!(
        text.contains(r#"portcullis_http_requests_total{route="unmatched",method="GET",status="404"} 1"#),
        "{text}"
    );
    let document = issuer::http::openapi(&issuer.state);
    assert!(!document.paths.paths.contains_key("/metrics"));
}

/// The routes the issuer serves: the test fails when one is added without being listed here, or
/// listed without being served.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/openid-configuration"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("POST", "/admin/keys/{kid}/revoke"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
    ("POST", "/oauth/introspect"),
    ("POST", "/users"),
    ("GET", "/userinfo"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users/{id}/roles"),
    ("POST", "/admin/users/{id}/disable"),
    ("POST", "/logout"),
    ("POST", "/logout-all"),
    ("GET", "/authorize"),
    ("POST", "/login"),
    ("POST", "/login/email"),
    ("GET", "/login/email"),
    ("POST", "/login/email/continue"),
    ("GET", "/session/end"),
    ("POST", "/session/end"),
    ("GET", "/revoked"),
];

#[tokio::test]
async fn openapi_describes_every_route_and_every_described_route_is_served() {
    let issuer = TestIssuer::start(&[]).await;
    let app = issuer.app();
    let (status, _, body) = get(&app, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let document = json(&body);
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{document}");
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys().filter(|key| *key != "parameters") {
            described.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    described.sort();
    let mut served: Vec<(String, String)> =
        ROUTES.iter().map(|(method, path)| ((*method).to_owned(), (*path).to_owned())).collect();
    served.sort();
    assert_eq!(described, served, "the description and the route list differ");

    for (method, path) in &described {
        let concrete = path.replace("{kid}", &"k".repeat(43)).replace("{id}", "someone");
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a method"))
            .uri(&concrete)
            .body(Body::empty())
            .expect("request");
        let (status, _, body) = send(&app, request).await;
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|body| body["error"].as_str().map(str::to_owned));
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(code.as_deref(), Some("not_found"), "{method} {path} is described but not served");
    }
    let (status, _, _) = get(&app, "/not/described", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "and a path not described is not served");
}
