//! Two issuer processes on one SQLite file, rotating, syncing and minting at the same time.

use crate::common::{TestIssuer, key_set};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use issuer::clock::Clock as _;
use issuer::domain::keys::{KeyInfo, KeyState};
use issuer::{AppState, app};
use jwks::{KeySet, P256Verifier};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const SETTINGS: &[(&str, &str)] =
    &[("rotation_period", "1m"), ("jwks_max_age", "10s"), ("access_token_ttl", "10s"), ("leeway", "5s")];

fn assert_one_active(keys: &[KeyInfo]) {
    assert_eq!(keys.iter().filter(|key| key.state == KeyState::Active).count(), 1, "{keys:#?}");
    assert!(keys.iter().filter(|key| key.state == KeyState::Next).count() <= 1, "{keys:#?}");
}

#[derive(Clone, Copy)]
enum Work {
    Rotate,
    RotateAndRevoke,
}

/// What the race saw: every token minted (its `kid` and `iat`), and every JWKS either process
/// served, with the time it was served and its `max-age`.
#[derive(Default)]
struct Seen {
    minted: Vec<(String, u64)>,
    served: Vec<(u64, u64, KeySet)>,
}

/// The served JWKS and its `Cache-Control: max-age`.
async fn served_key_set(router: &Router) -> (u64, KeySet) {
    let request = Request::get("/.well-known/jwks.json").body(Body::empty()).expect("request");
    let (status, headers, body) = crate::common::send(router, request).await;
    assert_eq!(status, StatusCode::OK);
    let cache_control = headers[header::CACHE_CONTROL].to_str().expect("ASCII");
    let max_age = cache_control.rsplit_once("max-age=").and_then(|(_, secs)| secs.parse().ok()).expect("a max-age");
    (max_age, KeySet::parse(&body).expect("a JWKS the core accepts"))
}

/// Runs three workers per process for `rounds` rounds each. With [`Work::Rotate`] (no
/// revocations), each token is checked at once against the JWKS of every process, not only the
/// one that signed it.
async fn race(issuer: &TestIssuer, processes: &[AppState], work: Work, rounds: u64) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let routers: Vec<_> = processes.iter().map(|state| app(state.clone())).collect();
    let mut handles = Vec::new();
    for (process, state) in processes.iter().enumerate() {
        for task in 0..3_u64 {
            let state = state.clone();
            let clock = issuer.clock.clone();
            let (routers, seen) = (routers.clone(), Arc::clone(&seen));
            handles.push(tokio::spawn(async move {
                let validator = jwks::Validator::new(jwks::ClaimsOptions::new(
                    state.config().issuer.clone(),
                    state.config().audiences.clone(),
                ));
                let record = |at: u64, (max_age, served): (u64, KeySet)| {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).served.push((at, max_age, served));
                };
                // A small deterministic mix per worker.
                let mut seed = (process as u64 + 1) * 7919 + task * 104_729;
                for round in 0..rounds {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    clock.advance(Duration::from_secs((seed >> 33) % 2));
                    match ((seed >> 40) % 8, work) {
                        (0..=2, _) => {
                            state.rotate_keys().await.expect("rotation");
                        }
                        (3..=4, _) => {
                            state.sync().await.expect("sync");
                        }
                        (5, Work::RotateAndRevoke) => {
                            let active = state.keys().signer().await.expect("active").kid().to_owned();
                            state.revoke_key(&active).await.expect("revocation");
                        }
                        _ => {
                            let token = crate::common::mint(&state, "api", &[]).await;
                            if matches!(work, Work::Rotate) {
                                // The JWKS of the process that signed it, and of the other one.
                                for router in &routers {
                                    let served = served_key_set(router).await;
                                    let now = clock.now();
                                    validator.validate(&token.token, &served.1, &P256Verifier, now).unwrap_or_else(
                                        |error| panic!("{} (kid {}) at {now}: {error:?}", token.issued_at, token.kid),
                                    );
                                    record(now, served);
                                }
                            }
                            seen.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .minted
                                .push((token.kid, token.issued_at));
                        }
                    }
                    // What verifiers fetch between the mints, from either process.
                    let router = &routers[usize::try_from(round).expect("small") % routers.len()];
                    let served = served_key_set(router).await;
                    record(clock.now(), served);
                    assert_one_active(&state.keys().list().await.expect("list"));
                }
            }));
        }
    }
    for handle in handles {
        handle.await.expect("worker");
    }
    Arc::try_unwrap(seen).ok().expect("the workers are done").into_inner().unwrap_or_else(PoisonError::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_rotating_at_once_keep_the_invariants() {
    let issuer = TestIssuer::start(SETTINGS).await;
    let bootstrap = issuer.state.keys().signer().await.expect("active").kid().to_owned();
    let other = issuer.second_process(SETTINGS).await;
    let policy = *issuer.state.keys().policy();
    let Seen { minted, served } = race(&issuer, &[issuer.state.clone(), other.clone()], Work::Rotate, 40).await;

    let keys = issuer.state.keys().list().await.expect("list");
    assert_one_active(&keys);
    let by_kid: HashMap<&str, &KeyInfo> = keys.iter().map(|key| (key.kid.as_str(), key)).collect();
    let promoted = keys.iter().filter(|key| key.activated_at.is_some() && key.kid != bootstrap).count();
    assert!(promoted >= 3, "the race rotated keys: {keys:#?}");
    for key in keys.iter().filter(|key| key.kid != bootstrap) {
        if let Some(activated_at) = key.activated_at {
            let earliest = policy.earliest_activation(key.published_at);
            assert!(activated_at >= earliest, "{} signed before its lead: {key:?}", key.kid);
        }
    }
    assert!(!minted.is_empty());
    for (kid, issued_at) in &minted {
        let key = by_kid[kid.as_str()];
        assert!(key.activated_at.is_some(), "{kid} signed but was never active");
        if *kid != bootstrap {
            assert!(*issued_at >= policy.earliest_activation(key.published_at), "{kid} signed at {issued_at}: {key:?}");
        }
        // A verifier that fetched the JWKS from either process within its max-age before the
        // token was signed knows its key. (A JWKS served while the database was slow to confirm
        // it comes with a max-age of one check interval.)
        for (served_at, _, set) in served.iter().filter(|(at, max_age, _)| at <= issued_at && issued_at - at < *max_age)
        {
            assert!(set.get(kid).is_some(), "{kid} signed at {issued_at}, missing from a JWKS served at {served_at}");
        }
    }
    // Both processes serve the same key set once synced.
    other.sync().await.expect("sync");
    issuer.state.sync().await.expect("sync");
    let ours: Vec<String> = key_set(&app(issuer.state.clone())).await.kids().map(str::to_owned).collect();
    let theirs: Vec<String> = key_set(&app(other.clone())).await.kids().map(str::to_owned).collect();
    assert_eq!(ours, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_never_leave_zero_or_two_active_keys() {
    let issuer = TestIssuer::start(SETTINGS).await;
    let other = issuer.second_process(SETTINGS).await;
    race(&issuer, &[issuer.state.clone(), other], Work::RotateAndRevoke, 30).await;
    assert_one_active(&issuer.state.keys().list().await.expect("list"));
}

/// Twenty concurrent refreshes with one refresh token (on two processes sharing the database):
/// exactly one succeeds, the family ends up revoked, and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_token_let_exactly_one_through() {
    use crate::oauth::{login, refresh, text};
    use axum::http::StatusCode;
    let issuer = TestIssuer::start(&[]).await;
    issuer.user("alice@example.com", &[]).await;
    let second = issuer.second_process(&[]).await;
    let routers = [issuer.app(), app(second.clone())];
    let (_, token) = login(&routers[0], "alice@example.com").await;
    let attempts: Vec<_> = (0..20)
        .map(|index| {
            let (router, token) = (routers[index % 2].clone(), token.clone());
            tokio::spawn(async move { refresh(&router, &token).await })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        let (status, body) = attempt.await.expect("task");
        match status {
            StatusCode::OK => winners.push(text(&body, "refresh_token")),
            StatusCode::BAD_REQUEST => assert_eq!(body, serde_json::json!({ "error": "invalid_grant" })),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one refresh succeeds");
    let (status, _) = refresh(&routers[1], &winners[0]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the family is revoked: the winner's token is dead too");
    let sessions = issuer.state.sessions();
    for presented in [&token, &winners[0]] {
        let info = sessions.refresh_token(presented, issuer.now()).await.expect("reads").expect("stored");
        assert!(!info.active);
    }
    // Nothing half-written: the family holds the first token (spent) and one successor, and
    // every issued refresh token is stored with its access token.
    let pool = sqlx::AnyPool::connect(&issuer.state.config().database_url).await.expect("connects");
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT access_jti, spent_at FROM refresh_tokens ORDER BY issued_at, spent_at")
            .fetch_all(&pool)
            .await
            .expect("reads");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows.iter().filter(|(_, spent)| spent.is_some()).count(), 1, "{rows:?}");
    let families: Vec<(Option<i64>,)> =
        sqlx::query_as("SELECT revoked_at FROM refresh_families").fetch_all(&pool).await.expect("reads");
    assert_eq!(families.len(), 1);
    assert!(families[0].0.is_some(), "revoked");
    pool.close().await;
}
