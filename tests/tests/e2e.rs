//! The whole stack, end to end, over HTTP only: the real issuer binary (SQLite in a temporary
//! folder), the demo origin binary, and the built Worker under `wrangler dev` in front of the
//! origin, each on a free port and in its own process group (killed on drop, also when a step
//! fails). Tokens come from the issuer's CLI (`issuer token mint`), key changes from `issuer keys
//! rotate | revoke` against the same database, as an operator would do them; the session scenario
//! logs in, refreshes and logs out at the issuer's OAuth endpoints, and the last one signs a user
//! in to a registered client by the authorization-code flow (`tests::signin`).
//!
//! One stack serves every scenario, in order (a `wrangler dev` costs seconds to start): tokens to
//! the origin, refusals, rotation under load, emergency revocation, the issuer down, the issuer
//! back, a session from login to logout, an ID token refused where its access token is accepted.
//! Needs the Worker (`cargo xtask build-worker`) and the binaries (`cargo build -p issuer -p tests
//! --bins`); `cargo xtask test` builds both.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::harness::{Answer, Client, Process, STATUS_SECRET, Wrangler, free_port, poll, wait_until_serving};
use tests::issuer::{AUDIENCE, Issuer, OTHER_AUDIENCE};
use tests::signin::{add_user, sign_in};

/// The edge's refetch cooldown and least key-set lifetime (seconds): small, so that it notices
/// key changes within seconds.
const EDGE_JWKS_SECONDS: &str = "1";

/// The edge's revocation bound here (seconds): a token revoked at the issuer is refused at the
/// edge at most this long (and a second) after.
const REVOCATION_MAX_AGE_SECONDS: u64 = 2;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Segment `index` (0: header, 1: claims) of a compact JWS, as JSON.
fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn kid_of(token: &str) -> String {
    segment(token, 0)["kid"].as_str().expect("a kid").to_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------------
// The stack.

struct Stack {
    // Dropped in this order: the edge, then the origin, then the issuer.
    edge: Wrangler,
    _origin: Process,
    issuer: Issuer,
    client: Client,
    /// The origin itself, not through the edge.
    origin: Client,
}

impl Stack {
    async fn start(dir: &Path) -> Self {
        let started = Instant::now();
        let mut issuer = Issuer::new("issuer", dir, None);
        let origin_port = free_port();
        // The edge's assertion keys, as an operator makes them (`issuer keys new-edge-key`).
        let edge_keys = issuer.command().args(["keys", "new-edge-key"]).output().expect("issuer keys new-edge-key");
        assert!(edge_keys.status.success(), "{}", String::from_utf8_lossy(&edge_keys.stderr));
        let edge_keys = String::from_utf8(edge_keys.stdout).expect("text").trim().to_owned();
        let root_config = std::fs::read_to_string(devtools::workspace_root().join("wrangler.toml"))
            .expect("the repository's wrangler.toml");
        let policy = &root_config[root_config.find("[vars.POLICY]").expect("wrangler.toml has a [vars.POLICY]")..];
        let vars = vec![
            ("ISSUER", issuer.url().to_owned()),
            ("JWKS_URL", format!("{}/.well-known/jwks.json", issuer.url())),
            ("AUDIENCE", AUDIENCE.to_owned()),
            ("ORIGIN_URL", format!("http://127.0.0.1:{origin_port}")),
            ("LEEWAY_SECONDS", "1".to_owned()),
            ("JWKS_MIN_TTL_SECONDS", EDGE_JWKS_SECONDS.to_owned()),
            ("JWKS_REFETCH_COOLDOWN_SECONDS", EDGE_JWKS_SECONDS.to_owned()),
            ("JWKS_TIMEOUT_MS", "2000".to_owned()),
            // Step 5 stops the issuer: the edge rides that out on its last key set.
            ("JWKS_MAX_STALE_SECONDS", "86400".to_owned()),
            ("REVOCATION_MAX_AGE_SECONDS", REVOCATION_MAX_AGE_SECONDS.to_string()),
            ("STATUS_SECRET", STATUS_SECRET.to_owned()),
            ("ASSERTION_KEYS", edge_keys),
            ("CORS", r#"{"allow_origins": ["https://app.test"]}"#.to_owned()),
        ];
        // The demo policy of the repository's wrangler.toml: public, authenticated, admin-only.
        let mut edge = Wrangler::start("e2e", "build", dir, &vars, policy);
        // The origin verifies the edge's assertions against its published keys (fetched on first use).
        let mut origin_command = Command::new(env!("CARGO_BIN_EXE_demo-origin"));
        origin_command
            .args(["--edge-jwks-url", &format!("{}/_portcullis/jwks.json", edge.base)])
            .args(["--refetch-cooldown-seconds", "1"])
            .arg(format!("127.0.0.1:{origin_port}"));
        let mut origin = Process::spawn("demo origin", origin_command, dir.join("demo-origin.log"));
        let client = Client::new(edge.base.clone());
        let issuer_took = issuer.serve().await;
        let origin_client = Client::new(format!("http://127.0.0.1:{origin_port}"));
        wait_until_serving(&mut origin, &origin_client, "/public/hello").await;
        let edge_took = edge.ready(&client).await;
        eprintln!(
            "stack up in {:.1} s (issuer {:.1} s, edge {:.1} s)",
            started.elapsed().as_secs_f64(),
            issuer_took.as_secs_f64(),
            edge_took.as_secs_f64()
        );
        Self { edge, _origin: origin, issuer, client, origin: origin_client }
    }

    async fn me(&self, token: &str) -> Answer {
        self.client.get_with_token("/api/me", token).await
    }

    /// The edge's key cache, from its status page.
    async fn edge_keys(&self) -> Value {
        self.client.status().await.json()["keys"].clone()
    }

    /// Asserts that each token is accepted (200 from the origin, with its subject).
    async fn assert_accepted(&self, what: &str, tokens: &[&str]) {
        for token in tokens {
            let answer = self.me(token).await;
            assert_eq!(answer.status, 200, "{what}: kid {}: {}", kid_of(token), answer.text());
            assert_eq!(answer.json()["subject"], segment(token, 1)["sub"], "{what}");
        }
    }

    /// Asserts that each token is refused with 401 `invalid_token` and a generic body.
    async fn assert_refused(&self, cases: &[(&str, &str)]) {
        for (what, token) in cases {
            let answer = self.me(token).await;
            assert_eq!(answer.status, 401, "{what}: {}", answer.text());
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
            assert_eq!(answer.text(), "unauthorized\n", "{what}: the reason is not told");
        }
    }
}

/// Tokens that must be refused whatever happens to the issuer.
struct BadTokens {
    garbage: String,
    expired: String,
    wrong_audience: String,
    tampered: String,
    foreign_key: String,
}

impl BadTokens {
    /// Mints them: `foreign` is another issuer (own database, same `iss`) whose key is in no JWKS
    /// the edge sees.
    async fn mint(issuer: &Issuer, foreign: &Issuer) -> Self {
        let good = issuer.mint("mallory", "reader", &[]).await;
        // The payload changed (an admin), header and signature kept.
        let mut claims = segment(&good, 1);
        claims["sub"] = json!("admin");
        claims["roles"] = json!(["admin"]);
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
        Self {
            garbage: "not-a-token".to_owned(),
            expired: issuer.mint("mallory", "reader", &["--ttl", "1s"]).await,
            wrong_audience: issuer.mint("mallory", "reader", &["--aud", OTHER_AUDIENCE]).await,
            tampered,
            foreign_key: foreign.mint("mallory", "admin", &[]).await,
        }
    }

    fn cases(&self) -> [(&str, &str); 5] {
        [
            ("garbage", self.garbage.as_str()),
            ("an expired token", &self.expired),
            ("a wrong audience", &self.wrong_audience),
            ("a tampered payload", &self.tampered),
            ("a key not in the JWKS", &self.foreign_key),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios, in the order they run.

/// 1. A token from the issuer reaches the origin through the edge, with the identity of the
///    token and none the client sent.
async fn token_reaches_the_origin(stack: &Stack) -> String {
    let alice = stack.issuer.mint("alice", "reader,writer", &[]).await;
    let claims = segment(&alice, 1);
    let spoofed = [
        ("authorization", bearer(&alice)),
        ("x-auth-subject", "admin".to_owned()),
        ("x-auth-roles", "admin".to_owned()),
        ("x-auth-issuer", "https://evil.test".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = spoofed.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let answer = stack.client.get("/api/me", &headers).await;
    // The demo origin takes the identity from the edge's assertion only (the spoofed X-Auth-* are
    // removed by the edge, and ignored by the origin anyway).
    assert_eq!(answer.status, 200, "{}", answer.text());
    let me = answer.json();
    assert_eq!(me["subject"], "alice", "{me}");
    assert_eq!(me["roles"], json!(["reader", "writer"]), "{me}");
    assert_eq!(me["edge"], "portcullis-edge", "{me}");
    assert_eq!(me["token_id"], claims["jti"], "{me}");

    // The origin itself refuses what does not come through the edge: no assertion, identity
    // headers alone, or an access token in the assertion's place.
    let direct: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-auth-subject", "alice"), ("x-auth-roles", "reader")],
        &[("x-portcullis-assertion", alice.as_str())],
        &[("authorization", spoofed[0].1.as_str())],
    ];
    for headers in direct {
        let answer = stack.origin.get("/api/me", headers).await;
        assert_eq!(answer.status, 401, "{headers:?}: {}", answer.text());
    }

    // A body goes through too: alice's message is kept under her subject.
    let posted = stack
        .client
        .send(
            "POST",
            "/api/messages",
            &[("authorization", &bearer(&alice)), ("x-auth-subject", "admin")],
            b"hi".to_vec(),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.text());
    assert_eq!(posted.json()["subject"], "alice");
    alice
}

/// 2. Refusals (401), roles (403 and 200), and what needs no token.
async fn refusals_roles_and_public_routes(stack: &Stack, alice: &str, bad: &BadTokens) {
    let answer = stack.client.get("/api/me", &[]).await;
    assert_eq!((answer.status, answer.header("www-authenticate")), (401, Some("Bearer realm=\"portcullis\"")));
    // The expired token has a 1 s lifetime (and the edge 1 s leeway): refused once that has passed.
    let (_, took) = poll("the expired token refused", Duration::from_secs(10), async || {
        let answer = stack.me(&bad.expired).await;
        if answer.status == 401 { Ok(()) } else { Err(format!("{}: {}", answer.status, answer.text())) }
    })
    .await;
    eprintln!("the 1 s token was refused after {:.1} s more", took.as_secs_f64());
    stack.assert_refused(&bad.cases()).await;

    let answer = stack.client.get_with_token("/api/admin/messages", alice).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.header("www-authenticate"), Some("Bearer realm=\"portcullis\", error=\"insufficient_scope\""));
    let admin = stack.issuer.mint("root", "admin", &[]).await;
    let answer = stack.client.get_with_token("/api/admin/messages", &admin).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["messages_by_user"]["alice"], 2, "the seeded message and the one posted");

    let answer = stack.client.get("/public/hello", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let preflight = [("origin", "https://app.test"), ("access-control-request-method", "GET")];
    let answer = stack.client.send("OPTIONS", "/api/me", &preflight, Vec::new()).await;
    assert_eq!(answer.status, 204, "{}", answer.text());
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://app.test"), "the edge answered it");
}

/// What the client loop of the rotation saw.
#[derive(Default)]
struct LoopReport {
    accepted: usize,
    failures: Vec<String>,
}

/// Sends requests through the edge with every token in `tokens`, round after round, until `stop`.
fn client_loop(
    base: String,
    tokens: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LoopReport> {
    tokio::spawn(async move {
        let client = Client::new(base);
        let mut report = LoopReport::default();
        while !stop.load(Ordering::SeqCst) {
            let round = tokens.lock().expect("tokens").clone();
            for token in round {
                let headers = [("authorization", bearer(&token))];
                let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
                match client.try_send("GET", "/api/me", &headers, Vec::new(), Duration::from_secs(10)).await {
                    Some(answer) if answer.status == 200 => report.accepted += 1,
                    Some(answer) => {
                        report.failures.push(format!("kid {}: {} {}", kid_of(&token), answer.status, answer.text()))
                    }
                    None => report.failures.push(format!("kid {}: no answer", kid_of(&token))),
                }
            }
        }
        report
    })
}

/// 3. Two rotations (`issuer keys rotate`) while a client loop keeps calling the edge with tokens
///    of every key: no request fails; each new key is in the edge's cache before it signs, and its
///    first token is accepted at once. Returns a token of each key, oldest first.
async fn rotation_without_downtime(stack: &Stack) -> Vec<String> {
    let first = stack.issuer.mint("rotation-0", "reader", &[]).await;
    let mut by_key = vec![first.clone()];
    let tokens = Arc::new(Mutex::new(vec![first]));
    let stop = Arc::new(AtomicBool::new(false));
    let looping = client_loop(stack.edge.base.clone(), Arc::clone(&tokens), Arc::clone(&stop));
    let started = Instant::now();
    for round in 1..=2 {
        let rotation = stack.issuer.cli_json(&["keys", "rotate"]).await;
        assert_eq!(rotation["outcome"], "scheduled", "{rotation}");
        let next = rotation["next"].as_str().expect("the next kid").to_owned();
        let activates_at = rotation["activates_at"].as_u64().expect("activates_at");
        // Published by the issuer, then fetched by the edge, before the key may sign.
        let (_, published) = poll("the issuer publishes the next key", Duration::from_secs(5), async || {
            let kids = stack.issuer.jwks_kids().await?;
            if kids.contains(&next) { Ok(()) } else { Err(format!("{kids:?}")) }
        })
        .await;
        let (_, cached) = poll("the edge has the next key", Duration::from_secs(8), async || {
            let keys = stack.edge_keys().await;
            let kids = keys["keys"]["kids"].as_array().cloned().unwrap_or_default();
            if kids.iter().any(|kid| kid == next.as_str()) { Ok(()) } else { Err(keys.to_string()) }
        })
        .await;
        assert!(now() < activates_at, "the edge had the key only after it started signing");
        // Tokens minted until the new key signs (each mint runs the issuer's due rotation step);
        // every one is accepted as soon as it is minted.
        let mut minted = 0;
        let (token, switched) = poll("the next key signs", Duration::from_secs(30), async || {
            minted += 1;
            let token = stack.issuer.mint(&format!("rotation-{round}-{minted}"), "reader", &[]).await;
            let answer = stack.me(&token).await;
            assert_eq!(answer.status, 200, "a token just minted (kid {}): {}", kid_of(&token), answer.text());
            tokens.lock().expect("tokens").push(token.clone());
            if kid_of(&token) == next { Ok(token) } else { Err(format!("still signed by {}", kid_of(&token))) }
        })
        .await;
        eprintln!(
            "rotation {round}: published in {:.1} s, at the edge {:.1} s later, signing {:.1} s after that ({minted} tokens minted meanwhile)",
            published.as_secs_f64(),
            cached.as_secs_f64(),
            switched.as_secs_f64()
        );
        by_key.push(token);
    }
    stop.store(true, Ordering::SeqCst);
    let report = looping.await.expect("the client loop");
    eprintln!(
        "client loop: {} requests accepted, {} failed, in {:.1} s",
        report.accepted,
        report.failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.failures.is_empty(), "failed requests during rotation: {:#?}", report.failures);
    assert!(report.accepted >= 20, "the loop sent too few requests: {}", report.accepted);
    let states = stack.issuer.key_states().await;
    let state_of = |token: &str| states.iter().find(|(kid, _)| *kid == kid_of(token)).map(|(_, state)| state.as_str());
    let expected = [Some("retiring"), Some("retiring"), Some("active")];
    assert_eq!(by_key.iter().map(|token| state_of(token)).collect::<Vec<_>>(), expected, "{states:?}");
    by_key
}

/// 4. The active key is revoked (`issuer keys revoke KID`): its tokens are refused once the edge
///    has refetched; the replacement key's tokens and the retiring keys' are accepted.
async fn emergency_revocation(stack: &Stack, by_key: &[String]) -> (String, String) {
    let (revoked_token, retiring) = by_key.split_last().expect("tokens");
    let revoked = kid_of(revoked_token);
    // Accepted first, so the edge holds it in its verified-token cache: the revocation must take
    // it away from there too.
    stack.assert_accepted("the active key's token before its revocation", &[revoked_token.as_str()]).await;
    let revocation = stack.issuer.cli_json(&["keys", "revoke", &revoked]).await;
    assert_eq!(
        (revocation["kid"].as_str(), revocation["previous_state"].as_str()),
        (Some(revoked.as_str()), Some("active"))
    );
    let (_, refused) = poll("the revoked key's token refused", Duration::from_secs(10), async || {
        let answer = stack.me(revoked_token).await;
        if answer.status == 401 { Ok(()) } else { Err(format!("{}: {}", answer.status, answer.text())) }
    })
    .await;
    let replacement = stack.issuer.mint("after-revocation", "reader", &[]).await;
    assert_eq!(Some(kid_of(&replacement).as_str()), revocation["active"].as_str());
    assert_ne!(kid_of(&replacement), revoked);
    // The replacement signs at once: the edge learns it on the unknown kid (after the cooldown).
    let (_, accepted) = poll("the replacement key's token accepted", Duration::from_secs(10), async || {
        let answer = stack.me(&replacement).await;
        if answer.status == 200 { Ok(()) } else { Err(format!("{}: {}", answer.status, answer.text())) }
    })
    .await;
    eprintln!(
        "revocation: refused at the edge after {:.1} s, the replacement accepted {:.1} s later",
        refused.as_secs_f64(),
        accepted.as_secs_f64()
    );
    let retiring: Vec<&str> = retiring.iter().map(String::as_str).collect();
    stack.assert_accepted("a retiring key after the revocation", &retiring).await;
    (revoked_token.clone(), replacement)
}

/// The issuer's keys (from the CLI) and JWKS (served), as kids.
#[derive(Debug, PartialEq, Eq)]
struct IssuerKeys {
    states: Vec<(String, String)>,
    jwks: Vec<String>,
}

impl IssuerKeys {
    async fn of(issuer: &Issuer) -> Self {
        Self { states: issuer.key_states().await, jwks: issuer.jwks_kids().await.expect("the JWKS") }
    }
}

/// 5. The issuer is down: the edge keeps serving its cached keys, stale, and keeps refusing.
///    Returns the issuer's keys as they were before it stopped.
async fn issuer_down(stack: &mut Stack, good: &[&str], bad: &[(&str, &str)]) -> IssuerKeys {
    let before = IssuerKeys::of(&stack.issuer).await;
    stack.issuer.stop();
    // Until the edge has tried the issuer and failed (its set lives 1 s), every request works.
    let (_, took) = poll("the edge notices the issuer is down", Duration::from_secs(10), async || {
        stack.assert_accepted("the issuer down", good).await;
        let keys = stack.edge_keys().await;
        if keys["state"] == "stale" && keys["last_error"].is_string() { Ok(()) } else { Err(keys.to_string()) }
    })
    .await;
    eprintln!("issuer down: the edge serves stale keys after {:.1} s", took.as_secs_f64());
    stack.assert_accepted("the issuer down", good).await;
    stack.assert_refused(bad).await;
    let keys = stack.edge_keys().await;
    assert_eq!((keys["state"].as_str(), keys["serving"].as_bool()), (Some("stale"), Some(true)), "{keys}");
    before
}

/// 6. The issuer back on the same database: the same keys and JWKS as `before`, tokens minted
///    before still valid, new ones from the same key.
async fn issuer_back(stack: &mut Stack, before: &IssuerKeys, good: &[&str], bad: &[(&str, &str)]) {
    let took = stack.issuer.serve().await;
    eprintln!("issuer restarted in {:.1} s", took.as_secs_f64());
    assert_eq!(&IssuerKeys::of(&stack.issuer).await, before, "the keys after the restart");
    let (_, took) = poll("the edge's key set fresh again", Duration::from_secs(10), async || {
        stack.assert_accepted("the issuer back", good).await;
        let keys = stack.edge_keys().await;
        if keys["state"] == "fresh" { Ok(()) } else { Err(keys.to_string()) }
    })
    .await;
    eprintln!("issuer back: the edge's keys fresh after {:.1} s", took.as_secs_f64());
    let after = stack.issuer.mint("after-restart", "reader", &[]).await;
    assert_eq!(kid_of(&after), kid_of(good[0]), "the same active key signs after the restart");
    stack.assert_accepted("minted after the restart", &[&after]).await;
    stack.assert_refused(bad).await;
}

/// 7. A session as a browser app has it: log in with a password at the issuer, call through the
///    edge, refresh, call again with the new access token, log out; the refresh token is dead,
///    and a replay of the first (spent) refresh token is refused too.
async fn session_login_refresh_logout(stack: &Stack) {
    let issuer = &stack.issuer;
    let (email, password) = ("carol@example.com", "correct horse battery staple");
    add_user(issuer, email, password, "reader");

    let (status, login) =
        issuer.grant(&[("grant_type", "password"), ("username", email), ("password", password)]).await;
    assert_eq!(status, 200, "login: {login}");
    let access = login["access_token"].as_str().expect("an access token");
    let refresh = login["refresh_token"].as_str().expect("a refresh token");
    let me = stack.me(access).await;
    assert_eq!((me.status, me.json()["roles"].clone()), (200, json!(["reader"])), "after login: {}", me.text());
    let user_id = me.json()["subject"].clone();

    let (status, refreshed) = issuer.grant(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(status, 200, "refresh: {refreshed}");
    let access2 = refreshed["access_token"].as_str().expect("a new access token");
    let refresh2 = refreshed["refresh_token"].as_str().expect("a new refresh token");
    assert_ne!(refresh2, refresh, "the refresh token rotates");
    let me = stack.me(access2).await;
    assert_eq!((me.status, me.json()["subject"].clone()), (200, user_id), "after refresh: {}", me.text());

    let bearer2 = bearer(access2);
    let logout = issuer.client.send("POST", "/logout", &[("authorization", &bearer2)], Vec::new()).await;
    assert!(matches!(logout.status, 200 | 204), "logout: {} {}", logout.status, logout.text());
    // The session's access tokens (both still unexpired) are refused at the edge within the
    // revocation bound: from the logout's answer to the edge's first 401 for each.
    let bound = Duration::from_secs(REVOCATION_MAX_AGE_SECONDS + 1);
    let logged_out = Instant::now();
    for (what, token) in [("the current access token", access2), ("the session's first access token", access)] {
        let (took, _) = poll(what, bound + Duration::from_secs(5), async || {
            let answer = stack.me(token).await;
            if answer.status == 401 {
                Ok(logged_out.elapsed())
            } else {
                Err(format!("{} {}", answer.status, answer.text()))
            }
        })
        .await;
        eprintln!("logout -> the edge refuses {what}: {:.2} s (bound {bound:?})", took.as_secs_f64());
        assert!(took <= bound, "{what} refused {took:?} after the logout");
    }
    for (what, spent) in [("after logout", refresh2), ("the first, spent", refresh)] {
        let (status, body) = issuer.grant(&[("grant_type", "refresh_token"), ("refresh_token", spent)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{what}: {body}");
    }
    eprintln!("session: login, edge, refresh, edge, logout; the refresh tokens are dead");
}

/// 8. A service's token (`client_credentials`) reaches the origin marked as a service's, a
///    user's as a user's: the issuer writes `gty`, the edge puts it in its assertion.
async fn a_service_token_is_told_from_a_user_token(stack: &Stack) {
    let issuer = &stack.issuer;
    let secret = issuer.add_client("billing-worker", &["--role", "reader"]).await;
    let (status, body) = issuer
        .grant(&[("grant_type", "client_credentials"), ("client_id", "billing-worker"), ("client_secret", &secret)])
        .await;
    assert_eq!(status, 200, "client_credentials: {body}");
    let service = body["access_token"].as_str().expect("an access token");
    assert_eq!(segment(service, 1)["gty"], "client-credentials");
    let me = stack.me(service).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(
        (me.json()["subject"].clone(), me.json()["subject_type"].clone()),
        (json!("billing-worker"), json!("service"))
    );
    let user = issuer.mint("dave", "reader", &[]).await;
    assert_eq!(stack.me(&user).await.json()["subject_type"], "user");
    eprintln!("a service's token reaches the origin as a service's, a user's as a user's");
}

/// 9. An ID token is not an access token: a user signs in by the authorization-code flow
///    (`scope=openid`, PKCE) to a client registered with `issuer clients add`. The ID token of the
///    exchange, signed by this issuer with the key of its access token but typed `JWT` and for the
///    client (`aud`), is refused at the edge like any invalid token, before and after the access
///    token of the same exchange is accepted on the same route.
async fn an_id_token_is_not_an_access_token_at_the_edge(stack: &Stack) {
    let issuer = &stack.issuer;
    let (client_id, redirect_uri) = ("edge-app", "http://127.0.0.1:9/cb");
    let (email, password) = ("dave@example.com", "correct horse battery staple");
    add_user(issuer, email, password, "reader");
    let secret = issuer.add_client(client_id, &["--redirect-uri", redirect_uri]).await;
    let tokens = sign_in(issuer.url(), client_id, &secret, redirect_uri, email, password, "openid").await;
    let access = tokens["access_token"].as_str().unwrap_or_else(|| panic!("no access_token: {tokens}"));
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("no id_token: {tokens}"));

    // A genuine ID token of this sign-in, which the edge must still not take for an access token.
    let (header, claims) = (segment(id_token, 0), segment(id_token, 1));
    assert_eq!(header["typ"], "JWT", "the ID token's header: {header}");
    assert_eq!(kid_of(id_token), kid_of(access), "one key signs both tokens");
    assert_eq!(claims["iss"], issuer.identifier(), "{claims}");
    assert_eq!(claims["sub"], segment(access, 1)["sub"], "{claims}");
    assert!(claims["aud"] == json!(client_id) || claims["aud"] == json!([client_id]), "the ID token's aud: {claims}");

    stack.assert_refused(&[("an ID token", id_token)]).await;
    stack.assert_accepted("the access token of the same sign-in", &[access]).await;
    stack.assert_refused(&[("the ID token, its access token accepted", id_token)]).await;
    eprintln!("ID token: refused at the edge; the access token of the same sign-in accepted");
}

/// Scenarios 1 to 8 of the end-to-end suite, on one stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_stack_end_to_end() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut stack = Stack::start(dir.path()).await;
    let foreign = Issuer::new("foreign-issuer", dir.path(), None);
    let bad = BadTokens::mint(&stack.issuer, &foreign).await;

    let alice = token_reaches_the_origin(&stack).await;
    refusals_roles_and_public_routes(&stack, &alice, &bad).await;
    let by_key = rotation_without_downtime(&stack).await;
    let (revoked, replacement) = emergency_revocation(&stack, &by_key).await;

    let mut refused = bad.cases().to_vec();
    refused.push(("a revoked key", &revoked));
    let good = [replacement.as_str(), by_key[0].as_str(), by_key[1].as_str(), alice.as_str()];
    let before = issuer_down(&mut stack, &good, &refused).await;
    issuer_back(&mut stack, &before, &good, &refused).await;
    session_login_refresh_logout(&stack).await;
    a_service_token_is_told_from_a_user_token(&stack).await;
    an_id_token_is_not_an_access_token_at_the_edge(&stack).await;
    stack.edge.process.assert_running();
    eprintln!("end to end in {:.1} s", started.elapsed().as_secs_f64());
}
