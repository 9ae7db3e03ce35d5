//! The `issuer` command: `serve`, `keys list | rotate | revoke KID | new-edge-key`, `token mint`,
//! `users add | list | set-roles | disable`, `clients add | list | remove`. The configuration is
//! read once, here, and handed to the command; the commands live in [`cli`].

mod cli;

use clap::Parser as _;
use issuer::config::{Config, LogFormat};
use issuer::metrics::DbEventRecorder;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if let cli::Command::BenchSign { seconds } = args.command {
        return match cli::bench::sign(std::time::Duration::from_secs(seconds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        };
    }
    // The edge's key set goes from its input to stdout: no configuration, database or KEK.
    if let cli::Command::Keys { command: cli::KeysCommand::NewEdgeKey(edge_key) } = &args.command {
        return match cli::edge_key::run(edge_key) {
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
    let recorder = DbEventRecorder::default();
    init_tracing(config.log_format, recorder.clone());
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    match runtime.block_on(cli::run(args.command, config, recorder)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("issuer: {error:#}");
    ExitCode::FAILURE
}

/// Log lines to stderr (level from `RUST_LOG`, default `info,sqlx=warn`), and sqlx's statement
/// and acquire events, whatever that level, to the database metrics.
fn init_tracing(format: LogFormat, recorder: DbEventRecorder) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let database_events = DbEventRecorder::TARGETS
        .into_iter()
        .fold(Targets::new(), |targets, target| targets.with_target(target, tracing::Level::DEBUG));
    tracing_subscriber::registry().with(lines.with_filter(filter)).with(recorder.with_filter(database_events)).init();
}
