//! The HTTP API through `oneshot`: JWKS shape and caching, discovery, health, admin auth, errors.

use crate::common::{TestIssuer, get, json, post, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use issuer::domain::keys::SigningKey;
use issuer::domain::tokens::AccessTokenRequest;
use std::time::Duration;

#[tokio::test]
async fn jwks_has_the_published_keys_and_nothing_private() {
    let issuer = TestIssuer::start(&[]).await;
    let (status, headers, body) = get(&issuer.app(), "/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let document = json(&body);
    let keys = document["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().expect("a JWK");
    let mut members: Vec<&str> = key.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"], "no private part, nothing else");
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    let active = issuer.state.keys().signer().await.expect("active key");
    assert_eq!(key["kid"], active.kid());
    assert_eq!(issuer.key_set().await.get(active.kid()), Some(active.public_key()));
}

#[tokio::test]
async fn jwks_etag_and_304() {
    let issuer = TestIssuer::start(&[]).await;
    let app = issuer.app();
    let (_, headers, body) = get(&app, "/.well-known/jwks.json", None).await;
    let etag = headers[header::ETAG].to_str().expect("ASCII").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20, "{etag}");

    let conditional = |value: String| {
        let request = Request::get("/.well-known/jwks.json").header(header::IF_NONE_MATCH, value);
        send(&app, request.body(Body::empty()).expect("request"))
    };
    for matching in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
        let (status, headers, body) = conditional(matching.clone()).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{matching}");
        assert!(body.is_empty());
        assert_eq!(headers[header::ETAG], etag.as_str());
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    }
    let (status, _, same) = conditional("\"other\"".to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same, body);

    // Nothing changed: the same bytes and validator. A change gives a new validator.
    issuer.state.sync().await.expect("sync");
    let (_, headers, again) = get(&app, "/.well-known/jwks.json", None).await;
    assert_eq!((headers[header::ETAG].to_str().expect("ASCII"), &again), (etag.as_str(), &body));
    issuer.state.rotate_keys().await.expect("rotate");
    let (status, headers, changed) = conditional(etag.clone()).await;
    assert_eq!(status, StatusCode::OK, "the old validator no longer matches");
    assert_ne!(headers[header::ETAG], etag.as_str());
    assert_eq!(json(&changed)["keys"].as_array().expect("keys").len(), 2);
}

#[tokio::test]
async fn discovery_and_health() {
    let issuer = TestIssuer::start(&[("issuer", "https://auth.example.com")]).await;
    let (status, headers, body) = get(&issuer.app(), "/.well-known/openid-configuration", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    let document = json(&body);
    assert_eq!(document["issuer"], "https://auth.example.com");
    assert_eq!(document["jwks_uri"], "https://auth.example.com/.well-known/jwks.json");
    assert_eq!(document["subject_types_supported"], serde_json::json!(["public"]));
    assert!(document["claims_supported"].as_array().expect("claims").contains(&"roles".into()));
    // RFC 8414 §3.2: no zero-element arrays.
    let members = document.as_object().expect("an object");
    assert!(members.values().all(|value| value.as_array().is_none_or(|array| !array.is_empty())), "{document}");
    assert_eq!(document["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        document["grant_types_supported"],
        serde_json::json!(["authorization_code", "password", "refresh_token", "client_credentials"])
    );
    assert_eq!(document["token_endpoint"], "https://auth.example.com/oauth/token");
    assert_eq!(document["revocation_endpoint"], "https://auth.example.com/oauth/revoke");
    assert_eq!(document["introspection_endpoint"], "https://auth.example.com/oauth/introspect");
    assert_eq!(document["userinfo_endpoint"], "https://auth.example.com/userinfo");
    assert_eq!(
        document["introspection_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );

    let (status, headers, body) = get(&issuer.app(), "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({ "status": "ok" }));
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    issuer.state.close().await;
    let (status, headers, body) = get(&issuer.app(), "/healthz", None).await;
    assert_eq!((status, json(&body)), (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": "unavailable" })));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn admin_endpoints_need_a_valid_admin_token() {
    let issuer = TestIssuer::start(&[("audiences", "api")]).await;
    let app = issuer.app();
    let check = |status: StatusCode, headers: &axum::http::HeaderMap, body: &[u8], code: &str, challenge: &str| {
        assert_eq!(json(body), serde_json::json!({ "error": code }));
        assert_eq!(headers[header::WWW_AUTHENTICATE].to_str().expect("ASCII"), challenge, "{code}");
        status
    };

    let (status, headers, body) = get(&app, "/admin/keys", None).await;
    assert_eq!(
        check(status, &headers, &body, "missing_token", r#"Bearer realm="portcullis-admin""#),
        StatusCode::UNAUTHORIZED
    );

    let basic = Request::get("/admin/keys").header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4=");
    let (status, _, body) = send(&app, basic.body(Body::empty()).expect("request")).await;
    assert_eq!((status, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));

    let invalid = r#"Bearer realm="portcullis-admin", error="invalid_token""#;
    let admin = issuer.admin_token().await;
    let foreign = {
        let key = SigningKey::generate().expect("key");
        let request = AccessTokenRequest {
            subject: "mallory".to_owned(),
            audiences: vec![issuer.state.config().admin_audience.clone()],
            roles: vec!["admin".to_owned()],
            client_id: "x".to_owned(),
            scope: None,
            ttl: None,
            service: false,
        };
        issuer::domain::tokens::sign(
            &key,
            &issuer.state.config().issuer,
            &request,
            Duration::from_secs(60),
            issuer.now(),
            issuer::domain::secrets::random_id(),
        )
        .expect("signs")
        .token
    };
    let mut tampered = admin.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let for_the_api = issuer.mint(&["admin"]).await.token;
    for (name, token) in [
        ("garbage", "not-a-token".to_owned()),
        ("unknown key", foreign),
        ("bad signature", tampered),
        ("wrong audience", for_the_api),
        ("alg none", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned()),
    ] {
        let (status, headers, body) = get(&app, "/admin/keys", Some(&token)).await;
        assert_eq!(check(status, &headers, &body, "invalid_token", invalid), StatusCode::UNAUTHORIZED, "{name}");
    }

    let reader = crate::common::mint(&issuer.state, &issuer.state.config().admin_audience.clone(), &["reader"]).await;
    let (status, headers, body) = get(&app, "/admin/keys", Some(&reader.token)).await;
    let insufficient = r#"Bearer realm="portcullis-admin", error="insufficient_scope""#;
    assert_eq!(check(status, &headers, &body, "insufficient_scope", insufficient), StatusCode::FORBIDDEN);

    let (status, headers, body) = get(&app, "/admin/keys", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let listed = json(&body);
    assert_eq!(listed["keys"][0]["state"], "active");
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("sealed") && !text.contains("v1:") && !text.contains("\"d\""), "{text}");

    // Expired, beyond the leeway.
    issuer.advance(Duration::from_secs(300 + 60));
    let (status, headers, body) = get(&app, "/admin/keys", Some(&admin)).await;
    assert_eq!(check(status, &headers, &body, "invalid_token", invalid), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_rotation_and_revocation() {
    let issuer = TestIssuer::start(&[]).await;
    let app = issuer.app();
    let admin = issuer.admin_token().await;
    let first = issuer.state.keys().signer().await.expect("active").kid().to_owned();
    let lead = issuer.state.keys().policy().lead();
    assert_eq!(
        lead,
        Duration::from_secs(300) + 2 * issuer::domain::keys::REPLICA_SYNC,
        "max-age, then the publish margin"
    );

    let (status, _, body) = post(&app, "/admin/keys/rotate", Some(&admin)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a new key must be published before it signs");
    let scheduled = json(&body);
    assert_eq!(scheduled["outcome"], "scheduled");
    let next = scheduled["next"].as_str().expect("next kid").to_owned();
    assert_eq!(scheduled["activates_at"], issuer.now() + lead.as_secs());
    assert!(issuer.key_set().await.get(&next).is_some(), "published at once");
    assert_eq!(issuer.mint(&[]).await.kid, first, "the old key still signs");

    // Asking again changes nothing: the same schedule, and the key-set version stays put (no
    // process rebuilds its JWKS for it).
    let version = issuer.state.keys().version().await.expect("version");
    let (status, _, again) = post(&app, "/admin/keys/rotate", Some(&admin)).await;
    assert_eq!((status, json(&again)), (StatusCode::ACCEPTED, scheduled.clone()));
    assert_eq!(issuer.state.keys().version().await.expect("version"), version);

    issuer.advance(lead);
    let admin = issuer.admin_token().await;
    let (status, _, body) = post(&app, "/admin/keys/rotate", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({ "outcome": "rotated", "active": next, "retiring": first }));
    assert_eq!(issuer.mint(&[]).await.kid, next);

    let (status, _, body) = post(&app, "/admin/keys/not-a-kid/revoke", Some(&admin)).await;
    assert_eq!((status, json(&body)), (StatusCode::BAD_REQUEST, serde_json::json!({ "error": "invalid_kid" })));
    let unknown = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";
    let (status, _, body) = post(&app, &format!("/admin/keys/{unknown}/revoke"), Some(&admin)).await;
    assert_eq!((status, json(&body)), (StatusCode::NOT_FOUND, serde_json::json!({ "error": "unknown_key" })));

    let (status, _, body) = post(&app, &format!("/admin/keys/{first}/revoke"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({ "kid": first, "previous_state": "retiring", "active": next }));
    let keys = issuer.key_set().await;
    assert!(keys.get(&first).is_none(), "gone from the JWKS at once");
    assert_eq!(keys.len(), 1);
    let (status, _, _) = post(&app, &format!("/admin/keys/{first}/revoke"), Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the admin token was signed by the revoked key");
    let admin = issuer.admin_token().await;
    let (status, _, body) = post(&app, &format!("/admin/keys/{first}/revoke"), Some(&admin)).await;
    assert_eq!((status, json(&body)["previous_state"].as_str()), (StatusCode::OK, Some("revoked")), "idempotent");
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let issuer = TestIssuer::start(&[]).await;
    let app = issuer.app();
    let (status, _, body) = get(&app, "/nope", None).await;
    assert_eq!((status, json(&body)), (StatusCode::NOT_FOUND, serde_json::json!({ "error": "not_found" })));
    let (status, _, body) = get(&app, "/admin/keys/rotate", None).await;
    assert_eq!(
        (status, json(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({ "error": "method_not_allowed" }))
    );
    let (status, _, body) = post(&app, "/.well-known/jwks.json", None).await;
    assert_eq!((status, json(&body)["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));

    let admin = issuer.admin_token().await;
    let large = Request::post("/admin/keys/rotate")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_LENGTH, issuer::MAX_BODY_BYTES + 1)
        .body(Body::from(vec![b'x'; issuer::MAX_BODY_BYTES + 1]))
        .expect("request");
    let (status, headers, body) = send(&app, large).await;
    assert_eq!(
        (status, json(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, serde_json::json!({ "error": "payload_too_large" }))
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");

    let binary = Request::get("/admin/keys")
        .header(header::AUTHORIZATION, axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque header"))
        .body(Body::empty())
        .expect("request");
    let (status, _, body) = send(&app, binary).await;
    assert_eq!((status, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let long = "a".repeat(10_000);
    let (status, _, _) = get(&app, "/admin/keys", Some(&long)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn minting_checks_the_request() {
    let issuer = TestIssuer::start(&[("audiences", "api,billing")]).await;
    let base = AccessTokenRequest {
        subject: "user-1".to_owned(),
        audiences: vec!["api".to_owned(), "billing".to_owned()],
        roles: vec!["reader".to_owned(), "reader".to_owned()],
        client_id: "web".to_owned(),
        scope: Some("read write".to_owned()),
        ttl: Some(Duration::from_secs(60)),
        service: false,
    };
    let minted = issuer.state.mint(&base).await.expect("mints");
    assert_eq!(minted.expires_at - minted.issued_at, 60);
    let claims = issuer
        .validator()
        .validate(&minted.token, &issuer.key_set().await, &jwks::P256Verifier, issuer.now())
        .expect("valid");
    assert_eq!(claims.roles, ["reader"], "duplicates dropped");
    assert_eq!(claims.aud.len(), 2);
    assert_eq!(claims.client_id.as_deref(), Some("web"));
    assert_eq!(claims.scope.as_deref(), Some("read write"));
    assert_eq!(claims.jti.as_deref(), Some(minted.jti.as_str()));
    assert_eq!((claims.iat, claims.nbf, claims.exp), (issuer.now(), Some(issuer.now()), issuer.now() + 60));
    let header = jwks::UntrustedToken::parse(&minted.token).expect("parses").header().clone();
    assert_eq!(
        (header.alg.as_str(), header.typ.as_deref(), header.kid.as_deref()),
        ("ES256", Some("at+jwt"), Some(minted.kid.as_str()))
    );

    let refused = |change: fn(&mut AccessTokenRequest)| {
        let mut request = base.clone();
        change(&mut request);
        let state = issuer.state.clone();
        async move { state.mint(&request).await.expect_err("refused").to_string() }
    };
    assert!(refused(|r| r.audiences = vec!["other".to_owned()]).await.starts_with("aud:"));
    assert!(refused(|r| r.audiences.clear()).await.starts_with("aud:"));
    assert!(refused(|r| r.subject.clear()).await.starts_with("sub:"));
    assert!(refused(|r| r.roles.push("two words".to_owned())).await.starts_with("roles:"));
    assert!(refused(|r| r.ttl = Some(Duration::from_secs(301))).await.starts_with("ttl:"));
    assert!(refused(|r| r.ttl = Some(Duration::ZERO)).await.starts_with("ttl:"));
}

#[tokio::test]
async fn a_revocation_reaches_the_other_processes_within_the_check_interval() {
    let issuer = TestIssuer::start(&[]).await;
    let other = issuer.second_process(&[]).await;
    let (ours, theirs) = (issuer.app(), issuer::app(other.clone()));
    let admin = issuer.admin_token().await;
    let kid = issuer.state.keys().signer().await.expect("active").kid().to_owned();
    let (status, _, _) = get(&theirs, "/admin/keys", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "the other process accepts the admin token");
    assert!(crate::common::key_set(&theirs).await.get(&kid).is_some());

    // Revoked in this process; the other one runs no sync at all.
    let (status, _, _) = post(&ours, &format!("/admin/keys/{kid}/revoke"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    issuer.advance(issuer::domain::keys::KEY_SET_CHECK_INTERVAL);

    let served = crate::common::key_set(&theirs).await;
    assert!(served.get(&kid).is_none(), "gone from the other process's JWKS");
    assert_eq!(served.kids().collect::<Vec<_>>(), crate::common::key_set(&ours).await.kids().collect::<Vec<_>>());
    let (status, _, body) = get(&theirs, "/admin/keys", Some(&admin)).await;
    assert_eq!((status, json(&body)["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let (status, _, body) = post(&theirs, "/admin/keys/rotate", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", String::from_utf8_lossy(&body));
    // A token of the replacement key opens the other process's admin endpoints.
    let (status, _, _) = get(&theirs, "/admin/keys", Some(&issuer.admin_token().await)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn admin_tokens_are_refused_when_the_key_set_cannot_be_checked() {
    let issuer = TestIssuer::start(&[]).await;
    let admin = issuer.admin_token().await;
    let app = issuer.app();
    let (_, _, body) = get(&app, "/.well-known/jwks.json", None).await;
    issuer.state.close().await;
    issuer.advance(issuer::domain::keys::KEY_SET_CHECK_INTERVAL);
    let (status, _, served) = get(&app, "/.well-known/jwks.json", None).await;
    assert_eq!((status, served), (StatusCode::OK, body), "the JWKS is served from the cache");
    let (status, _, body) = get(&app, "/admin/keys", Some(&admin)).await;
    assert_eq!((status, json(&body)), (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "error": "unavailable" })));
}
