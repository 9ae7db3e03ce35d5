//! Cross-check with an independent implementation: a token minted here verifies with PyJWT,
//! which fetches the discovery document and the JWKS from a real listening issuer.
//!
//! Needs `python3` (or `$PORTCULLIS_PYTHON`) with the `venv` module, and network access on the
//! first run: PyJWT and cryptography are installed, pinned, into a virtual environment under
//! the target folder, and reused by later runs.

use crate::common::config;
use issuer::clock::SystemClock;
use issuer::domain::kek::Kek;
use issuer::{AppState, app};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const PACKAGES: &[&str] = &["PyJWT==2.10.1", "cryptography==44.0.0"];

fn run(command: &mut Command) -> std::process::Output {
    let shown = format!("{command:?}");
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {shown}: {error}"));
    assert!(
        output.status.success(),
        "{shown} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A Python interpreter that can `import jwt, cryptography`, set up on first use.
fn python_with_pyjwt() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyjwt-venv");
    let python = venv.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import jwt, cryptography"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !ready(&python) {
        let base = std::env::var("PORTCULLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(Command::new(base).args(["-m", "venv", "--clear"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES));
        assert!(ready(&python), "PyJWT is not importable after installing it");
    }
    python
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
        tokio::task::spawn_blocking(move || run(Command::new(python).arg(script).args([&base_url, &token, "billing"])))
            .await
            .expect("PyJWT ran")
    };
    let verified: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from the script");
    assert_eq!(verified["header"]["kid"], token.kid.as_str());
    assert_eq!(verified["claims"]["iss"], base_url.as_str());
    assert_eq!(verified["claims"]["aud"], "billing");
    assert_eq!(verified["claims"]["jti"], token.jti.as_str());
    assert_eq!(verified["claims"]["roles"], serde_json::json!(["reader", "admin"]));
    server.abort();
}
