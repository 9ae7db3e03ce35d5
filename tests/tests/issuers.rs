//! Several issuer processes and crashes, over HTTP only, with the real issuer binary:
//!
//! - two `issuer serve` processes of one issuer (own ports and data folders; the same PostgreSQL
//!   database, `iss` and key-encryption key), as replicas behind a load balancer: a refresh chain
//!   alternating between them, each access token verified against both JWKS; one refresh token
//!   presented to both at once (exactly one wins); a rotation on one served by the other within
//!   the `replica_sync` bound, and its key signing there;
//! - `issuer serve` killed (SIGKILL) under a load of refresh chains and restarted on the same data,
//!   on SQLite and on PostgreSQL: every refresh token the issuer answered with is accepted once
//!   after the restart, and refused the second time. Killed once after the load has stopped, once
//!   mid-flight.
//!
//! What needs PostgreSQL runs on a new database of the server in `PORTCULLIS_TEST_POSTGRES`
//! (`postgres://user@host:port`; `cargo xtask test` starts one and sets it), dropped afterwards,
//! and is skipped, with a line saying so, without it. Needs the issuer binary (`cargo build -p issuer --bins`).

use devtools::postgres::{TEST_SERVER_ENV, TestDatabase};
use jwks::{ClaimsOptions, KeySet, P256Verifier, UntrustedToken, Validator};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::harness::{Client, poll};
use tests::issuer::{AUDIENCE, Issuer, REPLICA_SYNC};

/// The password of every user here.
const PASSWORD: &str = "correct horse battery staple";
/// How many refreshes the chain alternating between the two processes makes.
const ALTERNATING_REFRESHES: usize = 20;
/// How many times one refresh token goes to both processes at once.
const RACES: usize = 10;
/// How many refresh chains run at once when the issuer is killed.
const CHAINS: usize = 20;
/// How long they run before the kill.
const LOAD: Duration = Duration::from_millis(1500);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Says that `test` is skipped for want of a PostgreSQL server.
fn skipped(test: &str) {
    eprintln!("{test}: skipped, {TEST_SERVER_ENV} is not set (`cargo xtask test` sets it)");
}

/// Creates `count` users (`user-<n>@example.com`, role `reader`, password [`PASSWORD`]) with
/// `POST /users` and an admin token; their emails.
async fn create_users(issuer: &Issuer, count: usize) -> Vec<String> {
    let bearer = format!("Bearer {}", issuer.admin_token().await);
    let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let mut emails = Vec::with_capacity(count);
    for user in 0..count {
        let email = format!("user-{user}@example.com");
        let body = json!({ "email": email, "password": PASSWORD, "roles": ["reader"] });
        let answer = issuer.client.send("POST", "/users", &headers, body.to_string().into_bytes()).await;
        assert_eq!(answer.status, 201, "create {email}: {}", answer.text());
        emails.push(email);
    }
    emails
}

/// The access and refresh tokens of a token endpoint's 200 answer.
fn tokens(body: &Value) -> (String, String) {
    let text = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("no {name} in {body}")).to_owned();
    (text("access_token"), text("refresh_token"))
}

/// A password login at `issuer`: the access and refresh tokens.
async fn login(issuer: &Issuer, email: &str) -> (String, String) {
    let (status, body) = issuer.grant(&[("grant_type", "password"), ("username", email), ("password", PASSWORD)]).await;
    assert_eq!(status, 200, "login of {email} at {}: {body}", issuer.url());
    tokens(&body)
}

/// Presents `refresh` at `issuer`: the status and the JSON body.
async fn refresh_at(issuer: &Issuer, refresh: &str) -> (u16, Value) {
    issuer.grant(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await
}

/// True for a 400 `invalid_grant` answer.
fn invalid_grant(status: u16, body: &Value) -> bool {
    status == 400 && body["error"] == "invalid_grant"
}

fn kid_of(token: &str) -> String {
    let token = UntrustedToken::parse(token).expect("a compact JWS");
    token.header().kid.clone().expect("a kid")
}

/// Asserts that `token` verifies against the JWKS each of `issuers` serves now, with the claims
/// rules of a verifier of their `iss` and [`AUDIENCE`].
async fn assert_verifies(token: &str, issuers: &[&Issuer]) {
    for issuer in issuers {
        let jwks = issuer.jwks().await.unwrap_or_else(|error| panic!("the JWKS of {}: {error}", issuer.url()));
        let keys = KeySet::parse(&jwks.body).expect("a key set");
        let validator = Validator::new(ClaimsOptions::new(issuer.identifier(), [AUDIENCE]));
        if let Err(error) = validator.validate(token, &keys, &P256Verifier, now()) {
            panic!("a token signed by {} does not verify against the JWKS of {}: {error}", kid_of(token), issuer.url());
        }
    }
}

/// Two `issuer serve` processes on one PostgreSQL database, with the same `iss` and KEK: each
/// serves what the other writes (refresh tokens, keys), and of one refresh token presented to
/// both at once exactly one use wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuer_processes_share_one_postgresql() {
    let Some(database) = TestDatabase::create("issuer_replicas") else {
        skipped("two_issuer_processes_share_one_postgresql");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = Issuer::new("issuer-a", dir.path(), Some(database.url()));
    let mut b = a.replica("issuer-b");
    // A first: it creates the schema, the first key and the KEK file that B reads.
    let a_took = a.serve().await;
    let b_took = b.serve().await;
    eprintln!("issuer A up in {:.1} s, B in {:.1} s", a_took.as_secs_f64(), b_took.as_secs_f64());
    let email = create_users(&b, 1).await.remove(0);

    // A chain of refreshes alternately at B and A, from a login at A.
    let (access, mut refresh) = login(&a, &email).await;
    assert_verifies(&access, &[&a, &b]).await;
    let started = Instant::now();
    for step in 0..ALTERNATING_REFRESHES {
        let at = if step.is_multiple_of(2) { &b } else { &a };
        let (status, body) = refresh_at(at, &refresh).await;
        assert_eq!(status, 200, "refresh {step} at {}: {body}", at.url());
        let (access, next) = tokens(&body);
        assert_ne!(next, refresh, "the refresh token rotates");
        assert_verifies(&access, &[&a, &b]).await;
        refresh = next;
    }
    eprintln!(
        "{ALTERNATING_REFRESHES} refreshes alternately at B and A in {:.2} s, each access token verified against both JWKS",
        started.elapsed().as_secs_f64()
    );

    // One refresh token presented to A and B at once: one new pair, one invalid_grant.
    let mut wins = (0, 0);
    for race in 0..RACES {
        let (_, contested) = login(&a, &email).await;
        let ((a_status, a_body), (b_status, b_body)) =
            tokio::join!(refresh_at(&a, &contested), refresh_at(&b, &contested));
        match (a_status, b_status) {
            (200, _) if invalid_grant(b_status, &b_body) => wins.0 += 1,
            (_, 200) if invalid_grant(a_status, &a_body) => wins.1 += 1,
            _ => panic!(
                "race {race}: not one 200 and one 400 invalid_grant: A {a_status} {a_body}, B {b_status} {b_body}"
            ),
        }
    }
    eprintln!(
        "one refresh token at A and B at once, {RACES} times: A won {}, B won {}; the other got invalid_grant",
        wins.0, wins.1
    );

    // A rotation on A (its admin endpoint): B serves the next key within the bound, then signs
    // with it, unsealing what A sealed.
    let bearer = format!("Bearer {}", a.admin_token().await);
    let rotation = a.client.send("POST", "/admin/keys/rotate", &[("authorization", &bearer)], Vec::new()).await;
    assert_eq!(rotation.status, 202, "rotate: {}", rotation.text());
    let next = rotation.json()["next"].as_str().expect("the next kid").to_owned();
    let kids = a.jwks_kids().await.expect("A's JWKS");
    assert!(kids.contains(&next), "A publishes its next key at once: {kids:?}");
    let bound = REPLICA_SYNC * 2 + Duration::from_secs(2);
    let (_, served) = poll("B serves the key rotated in on A", bound, async || {
        let kids = b.jwks_kids().await?;
        if kids.contains(&next) { Ok(()) } else { Err(format!("{kids:?}")) }
    })
    .await;
    eprintln!(
        "rotation on A served by B after {:.2} s (bound {:.0} s: 2 × replica_sync + 2 s)",
        served.as_secs_f64(),
        bound.as_secs_f64()
    );
    let (_, signing) = poll("the key rotated in on A signs at B", Duration::from_secs(10), async || {
        let (status, body) = refresh_at(&b, &refresh).await;
        assert_eq!(status, 200, "refresh at B: {body}");
        let (access, next_refresh) = tokens(&body);
        assert_verifies(&access, &[&a, &b]).await;
        refresh = next_refresh;
        if kid_of(&access) == next { Ok(()) } else { Err(format!("still signed by {}", kid_of(&access))) }
    })
    .await;
    eprintln!("the key rotated in on A signs at B {:.1} s after that", signing.as_secs_f64());
}

/// `issuer serve` killed under refresh load on SQLite: see [`killed_issuer_loses_no_refresh_token`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_issuer_loses_no_refresh_token_on_sqlite() {
    killed_issuer_loses_no_refresh_token("SQLite", None).await;
}

/// `issuer serve` killed under refresh load on PostgreSQL: see
/// [`killed_issuer_loses_no_refresh_token`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_issuer_loses_no_refresh_token_on_postgresql() {
    let Some(database) = TestDatabase::create("issuer_killed") else {
        skipped("killed_issuer_loses_no_refresh_token_on_postgresql");
        return;
    };
    killed_issuer_loses_no_refresh_token("PostgreSQL", Some(database.url())).await;
}

/// When the issuer is killed.
#[derive(Clone, Copy)]
enum Kill {
    /// Once the load has stopped and every request has its answer: every chain is idle.
    AfterTheLoad,
    /// While the load runs: some chains wait for an answer that will never come.
    MidFlight,
}

/// What a refresh chain holds when it ends.
struct Chain {
    /// The last refresh token the issuer answered with (at first, the login's).
    latest: String,
    /// The refreshes answered with 200.
    answered: usize,
    /// True when a request with `latest` went out and no answer came: it may have spent `latest`.
    in_flight: bool,
    /// An answer other than 200, which ended the chain.
    failure: Option<String>,
}

/// How long chain `index` waits after each answer: none for the even ones, 50 ms for the odd
/// ones (about twice a refresh's time under this load), so that a kill mid-flight finds requests
/// in flight and chains idle with a token just answered.
fn pause(index: usize) -> Duration {
    if index.is_multiple_of(2) { Duration::ZERO } else { Duration::from_millis(50) }
}

/// A refresh chain at `base`: from the refresh token `first`, refreshes with the latest token
/// the issuer answered with, `pause` after each answer, until `stop`.
fn refresh_chain(
    base: String,
    first: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Chain> {
    tokio::spawn(async move {
        let client = Client::new(base);
        let mut chain = Chain { latest: first, answered: 0, in_flight: false, failure: None };
        while !stop.load(Ordering::SeqCst) {
            chain.in_flight = true;
            let params = [("grant_type", "refresh_token"), ("refresh_token", chain.latest.as_str())];
            // No answer: the issuer was killed (a hang shows as a chain in flight after the load).
            let Some(answer) = client.try_post_form("/oauth/token", &params, Duration::from_secs(10)).await else {
                break;
            };
            chain.in_flight = false;
            if answer.status != 200 {
                chain.failure = Some(format!("{} {}", answer.status, answer.text()));
                break;
            }
            chain.latest = tokens(&answer.json()).1;
            chain.answered += 1;
            tokio::time::sleep(pause).await;
        }
        chain
    })
}

/// `issuer serve` with [`CHAINS`] users, each logged in once, and a refresh chain per login for
/// [`LOAD`]; then killed (SIGKILL) as `kill` says, and restarted on the same data. Every chain
/// that was idle at the kill presents the last refresh token the issuer answered with: accepted,
/// then refused the second time. A chain with a request in flight at the kill presents the token
/// it sent, which the lost request may have spent: accepted or refused, then refused.
async fn killed_issuer_loses_no_refresh_token(backend: &str, database_url: Option<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut issuer = Issuer::new("issuer", dir.path(), database_url);
    issuer.serve().await;
    let emails = create_users(&issuer, CHAINS).await;
    for kill in [Kill::AfterTheLoad, Kill::MidFlight] {
        let mut firsts = Vec::with_capacity(CHAINS);
        for email in &emails {
            firsts.push(login(&issuer, email).await.1);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let running: Vec<_> = firsts
            .into_iter()
            .enumerate()
            .map(|(index, first)| refresh_chain(issuer.url().to_owned(), first, pause(index), Arc::clone(&stop)))
            .collect();
        tokio::time::sleep(LOAD).await;
        stop.store(true, Ordering::SeqCst);
        if let Kill::MidFlight = kill {
            issuer.kill();
        }
        let mut chains = Vec::with_capacity(CHAINS);
        for chain in running {
            chains.push(chain.await.expect("a refresh chain"));
        }
        if let Kill::AfterTheLoad = kill {
            issuer.kill();
        }

        let failures: Vec<String> = chains
            .iter()
            .enumerate()
            .filter_map(|(index, chain)| chain.failure.as_ref().map(|failure| format!("chain {index}: {failure}")))
            .collect();
        assert!(failures.is_empty(), "{backend}: refreshes refused under load: {failures:#?}");
        let answered: usize = chains.iter().map(|chain| chain.answered).sum();
        let idle = chains.iter().filter(|chain| !chain.in_flight).count();
        assert!(
            chains.iter().all(|chain| chain.answered > 0),
            "{backend}: a chain got no answer in {LOAD:?}: {:?}",
            chains.iter().map(|chain| chain.answered).collect::<Vec<_>>()
        );
        match kill {
            Kill::AfterTheLoad => assert_eq!(idle, CHAINS, "{backend}: every request had its answer before the kill"),
            Kill::MidFlight => assert!(
                0 < idle && idle < CHAINS,
                "{backend}: the kill found {idle} of {CHAINS} chains idle: not mid-flight"
            ),
        }

        let restarted = issuer.serve().await;
        let (mut accepted, mut lost, mut unspent, mut spent) = (0, Vec::new(), 0, 0);
        for (index, chain) in chains.iter().enumerate() {
            let (status, body) = refresh_at(&issuer, &chain.latest).await;
            let (again, again_body) = refresh_at(&issuer, &chain.latest).await;
            assert!(
                invalid_grant(again, &again_body),
                "{backend}, chain {index}: presented again: {again} {again_body}"
            );
            match (chain.in_flight, status) {
                (false, 200) => accepted += 1,
                (false, _) => lost.push(format!("chain {index} ({} answered): {status} {body}", chain.answered)),
                (true, 200) => unspent += 1,
                (true, _) if invalid_grant(status, &body) => spent += 1,
                (true, _) => panic!("{backend}, chain {index}: the token in flight at the kill: {status} {body}"),
            }
        }
        eprintln!(
            "{backend}, killed {}: {CHAINS} chains, {answered} refreshes answered before the kill, \
             {accepted}/{idle} last tokens of idle chains accepted after the restart ({:.1} s) and refused the \
             second time; {} chains in flight, their token unspent: {unspent}, spent by the lost request: {spent}",
            match kill {
                Kill::AfterTheLoad => "after the load",
                Kill::MidFlight => "mid-flight",
            },
            restarted.as_secs_f64(),
            CHAINS - idle,
        );
        assert!(lost.is_empty(), "{backend}: refresh tokens the issuer answered with are lost: {lost:#?}");
    }
    issuer.stop();
}
