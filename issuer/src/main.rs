//! The `issuer` command: `serve`, `keys list | rotate | revoke KID`, `token mint`,
//! `users add | list | set-roles | disable`, `clients add | list | remove`. The configuration is
//! read once, here, and handed to the command; the commands live in [`cli`].

mod cli;

use clap::Parser as _;
use issuer::config::{Config, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if let cli::Command::BenchSign { seconds } = args.command {
        return match cli::bench::sign(std::time::Duration::from_secs(seconds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        };
    }
    let config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("issuer: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    match runtime.block_on(cli::run(args.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("issuer: {error:#}");
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
