//! `issuer bench-oauth` (the token endpoint through a real socket, on a temporary SQLite database
//! or a PostgreSQL database given by URL, with the configured password-hash cost) and
//! `issuer bench-sign` (ES256 signatures).

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use issuer::clock::{Clock as _, SystemClock};
use issuer::config::Config;
use issuer::domain::kek::Kek;
use issuer::domain::keys::SigningKey;
use issuer::domain::secrets::random_id;
use issuer::domain::tokens::{self, AccessTokenRequest};
use issuer::{AppState, app};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const PASSWORD: &str = "correct horse battery staple";

/// Runs the measurements and prints them: the issuer serves on a loopback port, and `clients`
/// tasks of this process drive it, each over its own keep-alive connection.
pub(crate) async fn oauth(
    config: Config,
    duration: Duration,
    clients: usize,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The configured settings, on a temporary or the given database: never the configured one.
    let mut config = config;
    config.database_url =
        database_url.unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()));
    // Every client logs in from 127.0.0.1 at once: the per-address limit would refuse them.
    config.login_max_failures = u32::MAX;
    config.login_max_failures_per_address = u32::MAX;
    let cost = config.password_hashing;
    let database = issuer::store::redact_url(&config.database_url);
    let state = AppState::open(config, Kek::generate(), Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "bench-oauth: {cores} cores, argon2id m={} KiB t={} p=1, {clients} concurrent clients over \
         http://{address}, {database}",
        cost.memory_kib, cost.iterations,
    );

    let hasher = state.accounts().hasher().clone();
    let start = Instant::now();
    for _ in 0..10 {
        hasher.hash(PASSWORD).await?;
    }
    println!("argon2id: {:.1} ms per hash (10 hashes, one at a time)", start.elapsed().as_secs_f64() * 100.0);

    // A prefix of its own, so that a run on a database used before finds no user of its own.
    let run_id = random_id();
    let emails: Arc<Vec<String>> =
        Arc::new((0..clients).map(|index| format!("{run_id}-{index}@bench.example")).collect());
    for email in emails.iter() {
        state.accounts().create_user(email, PASSWORD, &[], 0).await?;
    }
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Mutex::new(connect(address).await?));
    }
    let connections = Arc::new(connections);

    let (shared, names) = (connections.clone(), emails.clone());
    let logins = run(clients, duration, move |index| {
        let (connections, emails) = (shared.clone(), names.clone());
        async move {
            let (status, _) = login(&mut *connections[index].lock().await, &emails[index]).await?;
            anyhow::ensure!(status == StatusCode::OK, "password grant answered {status}");
            Ok(())
        }
    })
    .await?;
    report("password grant", &logins, duration);

    let mut tokens = Vec::with_capacity(clients);
    for (connection, email) in connections.iter().zip(emails.iter()) {
        tokens.push(Mutex::new(login(&mut *connection.lock().await, email).await?.1));
    }
    let tokens = Arc::new(tokens);
    let refreshes = run(clients, duration, move |index| {
        let (connections, tokens) = (connections.clone(), tokens.clone());
        async move {
            let mut token = tokens[index].lock().await;
            let body = format!("grant_type=refresh_token&refresh_token={token}");
            let (status, answer) = post_form(&mut *connections[index].lock().await, body).await?;
            anyhow::ensure!(status == StatusCode::OK, "refresh grant answered {status}");
            *token = answer["refresh_token"].as_str().context("a refresh token")?.to_owned();
            Ok(())
        }
    })
    .await?;
    report("refresh grant", &refreshes, duration);
    server.abort();
    state.close().await;
    Ok(())
}

/// A keep-alive HTTP/1.1 connection to `address`.
async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn login(connection: &mut SendRequest<Full<Bytes>>, email: &str) -> anyhow::Result<(StatusCode, String)> {
    let body =
        format!("grant_type=password&username={}&password={}", email.replace('@', "%40"), PASSWORD.replace(' ', "+"));
    let (status, answer) = post_form(connection, body).await?;
    Ok((status, answer["refresh_token"].as_str().unwrap_or_default().to_owned()))
}

async fn post_form(
    connection: &mut SendRequest<Full<Bytes>>,
    body: String,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    connection.ready().await?;
    let request = Request::post("/oauth/token")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?;
    let response = connection.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// Runs `clients` tasks, each repeating `work(index)` until `duration` is over; returns every
/// latency.
async fn run<F, Fut>(clients: usize, duration: Duration, work: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|index| {
            let work = work.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    work(index).await?;
                    latencies.push(start.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

fn report(what: &str, latencies: &[Duration], duration: Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let percentile = |p: f64| {
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: {} requests in {:.1} s = {:.1} requests/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        duration.as_secs_f64(),
        sorted.len() as f64 / duration.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
    );
}

/// Signs access tokens on this thread for `duration` and prints the rate.
pub(crate) fn sign(duration: Duration) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    let request = AccessTokenRequest {
        subject: "user-1234".to_owned(),
        audiences: vec!["api".to_owned()],
        roles: vec!["reader".to_owned(), "writer".to_owned()],
        client_id: "web".to_owned(),
        scope: None,
        ttl: None,
        service: false,
    };
    let ttl = Duration::from_secs(300);
    let now = SystemClock.now();
    let token = tokens::sign(&key, "https://issuer.example", &request, ttl, now, random_id())?;
    let start = Instant::now();
    let mut count: u64 = 0;
    while start.elapsed() < duration {
        for _ in 0..100 {
            tokens::sign(&key, "https://issuer.example", &request, ttl, now, random_id())?;
        }
        count += 100;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "ES256 access tokens ({} bytes): {count} in {elapsed:.2} s on one thread = {:.0} signatures/s ({:.1} µs each)",
        token.token.len(),
        count as f64 / elapsed,
        elapsed * 1e6 / count as f64
    );
    Ok(())
}
