//! The demo origin for `cargo xtask dev`: `demo-origin [ADDRESS]` (default 127.0.0.1:3000).

use std::net::SocketAddr;
use std::process::ExitCode;
use tests::demo_origin::{Messages, app};

#[tokio::main]
async fn main() -> ExitCode {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let Ok(address) = address.parse::<SocketAddr>() else {
        eprintln!("demo-origin: {address:?} is not an address like 127.0.0.1:3000");
        return ExitCode::from(2);
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("demo-origin: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("demo-origin: listening on http://{address}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match axum::serve(listener, app(Messages::seeded())).with_graceful_shutdown(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-origin: {error}");
            ExitCode::FAILURE
        }
    }
}
