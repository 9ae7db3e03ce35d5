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
        ("PORTCULLIS_VECTORS", "/opt/vectors"),
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

/// Runs `issuer ARGS` with `stdin` as its standard input.
fn issuer_with_stdin(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_issuer"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PORTCULLIS_")) {
        command.env_remove(name);
    }
    command
        .env("PORTCULLIS_DATA_DIR", data_dir)
        .env("PORTCULLIS_PASSWORD_HASH_MEMORY", "64")
        .env("PORTCULLIS_PASSWORD_HASH_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("the issuer binary runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writes");
    child.wait_with_output().expect("finishes")
}

#[test]
fn users_and_clients_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let added =
        issuer_with_stdin(&data, &["users", "add", "Root@Example.com", "--role", "admin,ops"], "correct horse\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let user: serde_json::Value = serde_json::from_slice(&added.stdout).expect("JSON");
    assert_eq!(
        (user["email"].as_str(), &user["roles"]),
        (Some("root@example.com"), &serde_json::json!(["admin", "ops"]))
    );
    assert!(!String::from_utf8_lossy(&added.stdout).contains("correct horse"));
    let weak = issuer_with_stdin(&data, &["users", "add", "weak@example.com"], "short\n");
    assert!(!weak.status.success() && stderr(&weak).contains("at least 8 characters"), "{}", stderr(&weak));
    let taken = issuer_with_stdin(&data, &["users", "add", "root@example.com"], "correct horse\n");
    assert!(stderr(&taken).contains("taken"), "{}", stderr(&taken));

    let roles = issuer_with_stdin(&data, &["users", "set-roles", "root@example.com", "--role", "reader"], "");
    assert!(roles.status.success(), "{}", stderr(&roles));
    let disabled = issuer_with_stdin(&data, &["users", "disable", "root@example.com"], "");
    assert!(disabled.status.success(), "{}", stderr(&disabled));
    let listed = issuer_with_stdin(&data, &["users", "list", "--json"], "");
    let users: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(users["users"][0]["roles"], serde_json::json!(["reader"]));
    assert_eq!(users["users"][0]["disabled"], true);
    let missing = issuer_with_stdin(&data, &["users", "disable", "nobody@example.com"], "");
    assert!(stderr(&missing).contains("no user nobody@example.com"), "{}", stderr(&missing));

    let client = issuer_with_stdin(&data, &["clients", "add", "worker", "--role", "jobs"], "");
    assert!(client.status.success(), "{}", stderr(&client));
    let client: serde_json::Value = serde_json::from_slice(&client.stdout).expect("JSON");
    assert_eq!(client["client_secret"].as_str().map(str::len), Some(43));
    assert_eq!(client["client"]["audiences"], serde_json::json!(["api"]));
    let foreign = issuer_with_stdin(&data, &["clients", "add", "other", "--audience", "elsewhere"], "");
    assert!(stderr(&foreign).contains("not a configured audience"), "{}", stderr(&foreign));
    let named_like_an_audience =
        issuer_with_stdin(&data, &["clients", "add", "api", "--redirect-uri", "https://a.example/"], "");
    assert!(
        stderr(&named_like_an_audience).contains("is a configured audience"),
        "{}",
        stderr(&named_like_an_audience)
    );
    let bad_uri = issuer_with_stdin(&data, &["clients", "add", "site", "--redirect-uri", "http://site.example/cb"], "");
    assert!(stderr(&bad_uri).contains("http only for localhost"), "{}", stderr(&bad_uri));
    let spa = issuer_with_stdin(
        &data,
        &["clients", "add", "spa", "--public", "--redirect-uri", "http://localhost:5173/cb"],
        "",
    );
    assert!(spa.status.success(), "{}", stderr(&spa));
    let spa: serde_json::Value = serde_json::from_slice(&spa.stdout).expect("JSON");
    assert_eq!((spa["client_secret"].is_null(), &spa["client"]["public"]), (true, &serde_json::json!(true)));
    let table = issuer_with_stdin(&data, &["clients", "list"], "");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("worker") && !table.contains(client["client_secret"].as_str().unwrap_or("-")), "{table}");
    let removed = issuer_with_stdin(&data, &["clients", "remove", "worker"], "");
    assert!(removed.status.success(), "{}", stderr(&removed));
    let again = issuer_with_stdin(&data, &["clients", "remove", "worker"], "");
    assert!(stderr(&again).contains("no such client"), "{}", stderr(&again));
}

/// `keys new-edge-key`: the edge's assertion keys, from nothing to a rotation (add, promote, drop),
/// each set one JSON line on stdout, kids only on stderr, no issuer set up.
#[test]
fn edge_keys_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let run = |args: &[&str], stdin: &str| {
        let output = issuer_with_stdin(&data, &[&["keys", "new-edge-key"][..], args].concat(), stdin);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output, text)
    };
    let kids = |set: &str| -> Vec<String> {
        let set: serde_json::Value = serde_json::from_str(set).expect("JSON");
        let keys = set["keys"].as_array().cloned().unwrap_or_default();
        keys.iter().map(|key| key["kid"].as_str().unwrap_or_default().to_owned()).collect()
    };

    let (output, first) = run(&[], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(first.lines().count(), 1, "one line, as `wrangler secret put` takes it");
    let set: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    let key = &set["keys"][0];
    let public: jwks::Jwk =
        serde_json::from_value(serde_json::json!({"kty": "EC", "crv": "P-256", "x": key["x"], "y": key["y"]}))
            .expect("a JWK");
    let public = jwks::PublicKey::from_jwk(&public).expect("a P-256 key");
    assert_eq!(key["kid"], public.thumbprint(), "kid: the RFC 7638 thumbprint");
    let d = key["d"].as_str().expect("the private part").to_owned();
    assert!(!stderr(&output).contains(&d), "the private part goes to stdout only");
    assert!(!data.exists(), "no issuer is set up");

    let (output, added) = run(&["--add-to", "-"], &first);
    assert!(output.status.success(), "{}", stderr(&output));
    let [old, new] = <[String; 2]>::try_from(kids(&added)).expect("two keys");
    assert_eq!(old, kids(&first)[0], "the new key is appended: the old one still signs");
    let file = dir.path().join("edge-keys.json");
    std::fs::write(&file, &added).expect("write");
    let (output, promoted) = run(&["--promote", &new, "--in", &file.display().to_string()], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(kids(&promoted), [new.clone(), old.clone()]);
    let (output, dropped) = run(&["--drop", &old, "--in", "-"], &promoted);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(kids(&dropped), std::slice::from_ref(&new));
    let (output, _) = run(&["--drop", &new, "--in", "-"], &dropped);
    assert!(!output.status.success() && stderr(&output).contains("the only key"), "{}", stderr(&output));
    let (output, _) = run(&["--add-to", "-"], "{\"keys\":[]}");
    assert!(!output.status.success() && stderr(&output).contains("1 to 4"), "{}", stderr(&output));
    assert!(!data.exists(), "no issuer is set up");
}
