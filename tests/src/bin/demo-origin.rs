//! The demo origin for `cargo xtask dev`:
//!
//! ```text
//! demo-origin --edge-jwks-url URL [--edge-issuer ISS] [--origin-url URL]
//!             [--refetch-cooldown-seconds N] [ADDRESS]
//! ```
//!
//! It listens on ADDRESS (default 127.0.0.1:3000) and answers `/api/*` only with a valid assertion
//! from the edge: signed by a key published at `--edge-jwks-url` (the edge's
//! `/_portcullis/jwks.json`, plain http, fetched on first use), `iss` `--edge-issuer` (default
//! `portcullis-edge`, the edge's `ASSERTION_ISSUER`), `aud` `--origin-url` (default
//! `http://ADDRESS`; exactly the edge's `ORIGIN_URL`). `--refetch-cooldown-seconds` (default 5) is
//! the least time between two fetches of the keys.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tests::demo_origin::{DEFAULT_ASSERTION_ISSUER, EdgeKeys, EdgeSettings, Messages, app};

const USAGE: &str = "usage: demo-origin --edge-jwks-url URL [--edge-issuer ISS] [--origin-url URL] \
                     [--refetch-cooldown-seconds N] [ADDRESS]";

/// The listening address and whom to trust, from the command line.
fn parse(args: impl Iterator<Item = String>) -> Result<(SocketAddr, EdgeSettings), String> {
    let (mut address, mut jwks_url, mut issuer, mut origin, mut cooldown) = (None, None, None, None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match name.as_str() {
            "--edge-jwks-url" => &mut jwks_url,
            "--edge-issuer" => &mut issuer,
            "--origin-url" => &mut origin,
            "--refetch-cooldown-seconds" => &mut cooldown,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
            _ if address.is_none() => {
                address = Some(arg);
                continue;
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        };
        let value = inline.or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
        *slot = Some(value);
    }
    let address = address.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let address: SocketAddr =
        address.parse().map_err(|_| format!("{address:?} is not an address like 127.0.0.1:3000"))?;
    let jwks_url = jwks_url.ok_or_else(|| format!("--edge-jwks-url is required\n{USAGE}"))?;
    let origin = origin.unwrap_or_else(|| format!("http://{address}"));
    let mut settings = EdgeSettings::new(&jwks_url, issuer.as_deref().unwrap_or(DEFAULT_ASSERTION_ISSUER), &origin)?;
    if let Some(seconds) = cooldown {
        let seconds: u64 =
            seconds.parse().map_err(|_| format!("--refetch-cooldown-seconds {seconds:?}: not a number"))?;
        settings.refetch_cooldown = Duration::from_secs(seconds);
    }
    Ok((address, settings))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (address, settings) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("demo-origin: {message}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("demo-origin: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "demo-origin: listening on http://{address}; /api/* needs an assertion from {:?} for {:?}, its keys from {} (on first use)",
        settings.issuer, settings.origin, settings.jwks_url
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let edge = Arc::new(EdgeKeys::new(settings));
    match axum::serve(listener, app(Messages::seeded(), edge)).with_graceful_shutdown(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-origin: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod command_line {
    use super::*;

    fn args(line: &str) -> Result<(SocketAddr, EdgeSettings), String> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn settings_from_the_command_line() {
        let (address, settings) =
            args("--edge-jwks-url http://127.0.0.1:8787/_portcullis/jwks.json 127.0.0.1:3000").expect("parses");
        assert_eq!(address.to_string(), "127.0.0.1:3000");
        assert_eq!((settings.issuer.as_str(), settings.origin.as_str()), ("portcullis-edge", "http://127.0.0.1:3000"));
        let (_, settings) = args(
            "--edge-jwks-url=http://127.0.0.1:9/k --edge-issuer edge-2 --origin-url https://o.example --refetch-cooldown-seconds 1",
        )
        .expect("parses");
        assert_eq!((settings.issuer.as_str(), settings.origin.as_str()), ("edge-2", "https://o.example"));
        assert_eq!(settings.refetch_cooldown, Duration::from_secs(1));
        assert!(args("127.0.0.1:3000").is_err_and(|message| message.contains("--edge-jwks-url is required")));
        assert!(args("--edge-jwks-url https://edge.example/k").is_err(), "plain http only");
        assert!(args("--edge-jwks-url http://a/k --bogus 1").is_err());
        assert!(args("--edge-jwks-url").is_err());
    }
}
