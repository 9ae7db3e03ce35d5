//! The `issuer` command as a user (or an end-to-end test) starts it: from an environment that
//! holds the project's other `PORTCULLIS_*` variables, on a data folder that may not exist.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `issuer ARGS` with `data_dir` and `env`, and no other `PORTCULLIS_*` variable.
fn issuer(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_issuer"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PORTCULLIS_")) {
        command.env_remove(name);
    }
    command.env("PORTCULLIS_DATA_DIR", data_dir).env("RUST_LOG", "warn").envs(env.iter().copied()).args(args);
    command.output().expect("the issuer binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn read_only_commands_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("dta");
    let kid = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";
    for args in [&["keys", "list"][..], &["keys", "list", "--json"], &["keys", "revoke", kid]] {
        let output = issuer(&typo, &[], args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains("there is no database at sqlite://") && message.contains("dta/issuer.db"),
            "{message}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn unknown_portcullis_variables_only_warn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let project = [
        ("PORTCULLIS_TOOLS", "/opt/tools"),
        ("PORTCULLIS_VECTORS", "../shared/vectors"),
        ("PORTCULLIS_BENCH_N", "1000"),
        ("PORTCULLIS_PYTHON", "python3"),
        ("PORTCULLIS_TEST_POSTGRES", "postgres://u:hunter2@localhost"),
    ];
    let minted = issuer(&data, &project, &["token", "mint", "--sub", "user-1", "--roles", "reader"]);
    let message = stderr(&minted);
    assert!(minted.status.success(), "{message}");
    assert_eq!(String::from_utf8_lossy(&minted.stdout).trim().split('.').count(), 3, "a compact JWS");
    for (name, _) in project {
        assert!(message.contains(&format!("ignoring the environment variable {name}")), "{name}: {message}");
    }
    assert!(!message.contains("hunter2"), "values are not repeated: {message}");
    assert!(data.join("kek").exists() && data.join("issuer.db").exists(), "token mint sets the issuer up");

    let listed = issuer(&data, &project, &["keys", "list", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let keys: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(keys["keys"].as_array().map(|keys| keys.len()), Some(1));
    assert_eq!(keys["keys"][0]["state"], "active");

    // A bad value of a known variable still stops the start, as a configuration error.
    let refused = issuer(&data, &[("PORTCULLIS_LEEWAY", "soon")], &["keys", "list"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("`leeway`"));
}
