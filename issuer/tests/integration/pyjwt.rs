//! Cross-check with an independent implementation: a token minted here verifies with PyJWT,
//! which fetches the discovery document and the JWKS from a real listening issuer.
//!
//! Needs `python3` (or `$PORTCULLIS_PYTHON`) with the `venv` module, and network access on the
//! first run: PyJWT and cryptography are installed, pinned, into a virtual environment under
//! the target folder (`devtools::python`), and reused by later runs.

use crate::common::config;
use issuer::clock::SystemClock;
use issuer::domain::kek::Kek;
use issuer::{AppState, app};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A Python with PyJWT, in the virtual environment the project's PyJWT checks share.
fn python_with_pyjwt() -> PathBuf {
    devtools::python::with_pyjwt(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("a Python with PyJWT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_verifies_with_pyjwt() {
    let python = tokio::task::spawn_blocking(python_with_pyjwt).await.expect("set-up");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let base_url = format!("http://{}", listener.local_addr().expect("address"));
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = [("issuer", base_url.as_str()), ("audiences", "api,billing")];
    let state = AppState::open(config(dir.path(), None, &settings), Kek::generate(), Arc::new(SystemClock))
        .await
        .expect("starts");
    let server = tokio::spawn(axum::serve(listener, app(state.clone())).into_future());

    let token = crate::common::mint(&state, "billing", &["reader", "admin"]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyjwt_check.py");
    let output = {
        let (base_url, token) = (base_url.clone(), token.token.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python).arg(script).args([&base_url, &token, "billing"]).output()
        })
        .await
        .expect("PyJWT ran")
        .expect("python starts")
    };
    assert!(output.status.success(), "PyJWT refused: {}", String::from_utf8_lossy(&output.stderr));
    let verified: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from the script");
    assert_eq!(verified["header"]["kid"], token.kid.as_str());
    assert_eq!(verified["claims"]["iss"], base_url.as_str());
    assert_eq!(verified["claims"]["aud"], "billing");
    assert_eq!(verified["claims"]["jti"], token.jti.as_str());
    assert_eq!(verified["claims"]["roles"], serde_json::json!(["reader", "admin"]));
    server.abort();
}
