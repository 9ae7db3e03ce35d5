//! Restart on the same database: the keys survive, and the same kids are served.

use crate::common::{TestIssuer, get};
use axum::http::header;
use issuer::domain::kek::Kek;
use issuer::domain::keys::{KeyInfo, KeyState};
use issuer::store::{Db, OpenMode};
use issuer::{AppState, StartError, app};
use std::time::Duration;

fn kids(keys: &[KeyInfo]) -> Vec<(String, KeyState)> {
    keys.iter().map(|key| (key.kid.clone(), key.state)).collect()
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.state.rotate_keys().await.expect("publishes a next key");
    let (_, headers, body) = get(&issuer.app(), "/.well-known/jwks.json", None).await;
    let before = issuer.state.keys().list().await.expect("list");
    let active = issuer.mint(&[]).await.kid;
    issuer.state.close().await;

    let state = AppState::open(issuer.config(&[]), issuer.kek.clone(), issuer.clock.clone()).await.expect("restarts");
    let (_, headers_after, body_after) = get(&app(state.clone()), "/.well-known/jwks.json", None).await;
    assert_eq!(body_after, body, "the same keys, in the same order");
    assert_eq!(headers_after[header::ETAG], headers[header::ETAG]);
    let after = state.keys().list().await.expect("list");
    assert_eq!(kids(&after), kids(&before));
    let minted = crate::common::mint(&state, "api", &[]).await;
    assert_eq!(minted.kid, active, "the same key signs: its private key was stored, sealed");
    state.close().await;
}

#[tokio::test]
async fn a_different_kek_stops_the_start() {
    let issuer = TestIssuer::start(&[]).await;
    issuer.state.close().await;
    let error = AppState::open(issuer.config(&[]), Kek::generate(), issuer.clock.clone()).await.expect_err("refused");
    assert!(matches!(error, StartError::WrongKek(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("does not open") && message.contains("PORTCULLIS_KEK"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_at_once_on_a_new_database_agree_on_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = Kek::generate();
    let clock = std::sync::Arc::new(issuer::clock::ManualClock::new(crate::common::T0));
    let database = crate::common::fresh_postgres_database();
    let database_url = database.as_ref().map(devtools::postgres::TestDatabase::url);
    let starts = (0..4).map(|_| {
        let config = crate::common::config(dir.path(), database_url.as_deref(), &[]);
        let (kek, clock) = (kek.clone(), clock.clone());
        tokio::spawn(async move { AppState::open(config, kek, clock).await })
    });
    let mut active = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        let state = start.await.expect("task").expect("starts");
        active.push(state.keys().signer().await.expect("active").kid().to_owned());
    }
    active.dedup();
    assert_eq!(active.len(), 1, "one first key for all: {active:?}");
}

#[tokio::test]
async fn commands_on_an_existing_issuer_create_nothing() {
    // A mistyped data folder: refused with the database named, and nothing is created.
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("dta");
    let config = crate::common::config(&typo, None, &[]);
    let clock = std::sync::Arc::new(issuer::clock::ManualClock::new(crate::common::T0));
    let error = issuer::list_keys(&config).await.expect_err("refused").to_string();
    assert!(error.contains("there is no database at sqlite://") && error.contains("dta/issuer.db"), "{error}");
    let error = AppState::open_existing(config.clone(), Kek::generate(), clock.clone()).await.expect_err("refused");
    assert!(error.to_string().contains("dta/issuer.db"), "{error}");
    assert!(!typo.exists(), "no folder, database or key was created");

    // A database without keys, or a file that is not an issuer database: refused, named.
    Db::open(&config.database_url, OpenMode::Create).await.expect("creates the schema only").close().await;
    let error = issuer::list_keys(&config).await.expect_err("refused").to_string();
    assert!(error.contains("dta/issuer.db: there are no signing keys; is data_dir"), "{error}");
    let other = dir.path().join("other.db");
    std::fs::write(&other, "").expect("an empty file");
    let config = crate::common::config(dir.path(), Some(&format!("sqlite://{}", other.display())), &[]);
    let error = issuer::list_keys(&config).await.expect_err("refused").to_string();
    assert!(error.contains("other.db: cannot read signing keys"), "{error}");

    // An existing issuer: listed as it is, and opened without running the due rotation step.
    let issuer = TestIssuer::start(&[]).await;
    let before = issuer.state.keys().list().await.expect("list");
    issuer.advance(Duration::from_secs(2 * 24 * 3600));
    assert_eq!(kids(&issuer::list_keys(&issuer.config(&[])).await.expect("lists")), kids(&before));
    let existing =
        AppState::open_existing(issuer.config(&[]), issuer.kek.clone(), issuer.clock.clone()).await.expect("opens");
    assert_eq!(kids(&existing.keys().list().await.expect("list")), kids(&before), "no rotation step ran");
    let wrong = AppState::open_existing(issuer.config(&[]), Kek::generate(), issuer.clock.clone()).await;
    assert!(matches!(wrong, Err(StartError::WrongKek(_))), "{wrong:?}");
    let opened = AppState::open(issuer.config(&[]), issuer.kek.clone(), issuer.clock.clone()).await.expect("opens");
    assert_ne!(kids(&opened.keys().list().await.expect("list")), kids(&before), "`open` runs the due step");
}

#[tokio::test]
async fn accounts_sessions_revocations_and_failed_logins_survive_a_restart() {
    use crate::common::post_form;
    use crate::oauth::{PASSWORD, form, login, password_grant, refresh};
    use axum::http::StatusCode;
    let settings = [("login_max_failures", "2")];
    let issuer = TestIssuer::start(&settings).await;
    issuer.user("alice@example.com", &["reader"]).await;
    issuer.user("bob@example.com", &[]).await;
    let secret = issuer.client("worker", &[]).await;
    let app = issuer.app();
    let (access, refresh_token) = login(&app, "alice@example.com").await;
    post_form(&app, "/oauth/revoke", &form(&[("token", &access)]), None, None).await;
    for _ in 0..2 {
        password_grant(&app, "bob@example.com", "wrong password").await;
    }
    issuer.state.close().await;

    let state =
        AppState::open(issuer.config(&settings), issuer.kek.clone(), issuer.clock.clone()).await.expect("restarts");
    let app = issuer::app(state.clone());
    let users = state.accounts().users().await.expect("lists");
    assert_eq!(
        users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(),
        ["alice@example.com", "bob@example.com"]
    );
    let (status, body) = refresh(&app, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "the refresh token survived: {body}");
    let (status, _, _) = get(&app, "/userinfo", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the revocation survived");
    let (status, _, body) = get(&app, "/revoked", None).await;
    assert_eq!((status, crate::common::json(&body)["revoked"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, _, _) = password_grant(&app, "bob@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the failed logins survived");
    let (status, _, _) =
        post_form(&app, "/oauth/token", "grant_type=client_credentials", Some(("worker", &secret)), None).await;
    assert_eq!(status, StatusCode::OK, "the client survived");
    state.close().await;
}
