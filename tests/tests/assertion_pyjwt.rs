//! Cross-check of the edge's assertions with an independent verifier: PyJWT, as an origin written
//! in Python verifies them (`assertion_pyjwt.py`, the README's example), fetching the edge's
//! published keys over HTTP. The assertions are made here as the edge makes them (the compact JWS
//! of `jwks::assertion`, signed with p256 instead of WebCrypto); the Worker's own are tested under
//! `wrangler dev`.
//!
//! Needs `python3` (or `$PORTCULLIS_PYTHON`) with the `venv` module, and network access on the
//! first run: PyJWT and cryptography are installed, pinned, into the virtual environment the
//! issuer's PyJWT test uses (`target/tmp/pyjwt-venv`), and reused by later runs.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwks::assertion::{AssertionClaims, compact, signing_input};
use jwks::{JwkSet, PublicKey};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const EDGE: &str = "portcullis-edge";
const ORIGIN: &str = "https://origin.example";

/// A Python with PyJWT, in the virtual environment the project's PyJWT checks share.
fn python_with_pyjwt() -> PathBuf {
    devtools::python::with_pyjwt(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("a Python with PyJWT")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// An edge key: its signing half and `kid` (thumbprint), and its public JWK as the edge publishes it.
fn edge_key(seed: u8) -> (SigningKey, String, jwks::Jwk) {
    let signing = SigningKey::from_slice(&[seed; 32]).expect("a scalar");
    let public = PublicKey::from(signing.verifying_key());
    let kid = public.thumbprint().to_owned();
    let mut jwk = public.to_jwk();
    jwk.kid = Some(kid.clone());
    jwk.alg = Some("ES256".to_owned());
    jwk.key_use = Some("sig".to_owned());
    (signing, kid, jwk)
}

fn sign(signing: &SigningKey, input: &str) -> String {
    let signature: Signature = signing.sign(input.as_bytes());
    compact(input, &signature.to_bytes().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_an_assertion_with_the_published_keys() {
    let python = tokio::task::spawn_blocking(python_with_pyjwt).await.expect("set-up");

    // The edge's /_portcullis/jwks.json, with one key of two in use (the other one published
    // ahead of a rotation).
    let ((signing, kid, jwk), (_, _, next)) = (edge_key(1), edge_key(2));
    let published = serde_json::to_string(&JwkSet { keys: vec![jwk, next] }).expect("JSON");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let jwks_url = format!("http://{}/_portcullis/jwks.json", listener.local_addr().expect("address"));
    let edge = Router::new().route(
        "/_portcullis/jwks.json",
        get(move || async move { ([(header::CACHE_CONTROL, "public, max-age=300")], published) }),
    );
    let server = tokio::spawn(axum::serve(listener, edge).into_future());

    let roles = ["reader".to_owned(), "admin".to_owned()];
    let good = AssertionClaims {
        iss: EDGE,
        aud: ORIGIN,
        sub: Some("alice"),
        roles: &roles,
        jti: "assertion-1",
        iat: now(),
        exp: now() + 60,
        token_jti: Some("token-1"),
        gty: None,
    };
    let assertion = |claims: &AssertionClaims<'_>| sign(&signing, &signing_input(&kid, claims));
    let access_token = {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        let claims = json!({"iss": EDGE, "aud": ORIGIN, "sub": "alice", "iat": now(), "exp": now() + 60, "jti": "t"});
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        sign(&signing, &format!("{}.{}", encode(&header), encode(&claims)))
    };
    let (unpublished, unpublished_kid, _) = edge_key(3);
    let cases = [
        ("good", assertion(&good)),
        ("for another origin", assertion(&AssertionClaims { aud: "https://other.example", ..good.clone() })),
        ("an access token in its place", access_token),
        ("expired", assertion(&AssertionClaims { iat: now() - 120, exp: now() - 60, ..good.clone() })),
        ("from another edge", assertion(&AssertionClaims { iss: "https://issuer.example", ..good.clone() })),
        ("longer than 5 minutes", assertion(&AssertionClaims { exp: now() + 301, ..good.clone() })),
        ("an unpublished key", sign(&unpublished, &signing_input(&unpublished_kid, &good))),
    ];

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assertion_pyjwt.py");
    let input: String = cases.iter().map(|(_, assertion)| format!("{assertion}\n")).collect();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(script)
            .args([&jwks_url, ORIGIN, EDGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python starts");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writes");
        child.wait_with_output().expect("finishes")
    })
    .await
    .expect("PyJWT ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answers: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), cases.len(), "{answers:?}");

    assert_eq!(
        answers[0],
        json!({"identity": {"subject": "alice", "roles": ["reader", "admin"], "token_id": "token-1"}})
    );
    for ((what, _), answer) in cases.iter().zip(&answers).skip(1) {
        assert!(answer["refused"].is_string(), "{what}: {answer}");
    }
    let reason = |index: usize| answers[index]["refused"].as_str().unwrap_or_default().to_owned();
    assert!(reason(1).starts_with("InvalidAudienceError"), "{}", reason(1));
    assert!(reason(2).contains("not an edge assertion"), "{}", reason(2));
    assert!(reason(3).starts_with("ExpiredSignatureError"), "{}", reason(3));
    assert!(reason(4).starts_with("InvalidIssuerError"), "{}", reason(4));
    assert!(reason(5).contains("5 minutes at most"), "{}", reason(5));
    assert!(reason(6).starts_with("PyJWKClientError"), "{}", reason(6));
    server.abort();
}
