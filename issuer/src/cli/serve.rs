//! `issuer serve`: the HTTP server, the background key sync and purge, and a graceful shutdown.

use anyhow::Context as _;
use issuer::domain::sessions::PURGE_INTERVAL;
use issuer::http::metrics_app;
use issuer::metrics::DbEventRecorder;
use issuer::{AppState, app};

/// Serves the API on `bind` (and `/metrics` on `metrics_bind` when set) until SIGINT or SIGTERM.
pub(super) async fn serve(state: &AppState, recorder: &DbEventRecorder) -> anyhow::Result<()> {
    recorder.attach(state.metrics());
    let config = state.config();
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} (setting `bind`)", config.bind))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        issuer = %config.issuer,
        database = %config.redacted_database_url(),
        "serving; JWKS at {}",
        config.jwks_uri()
    );
    let metrics = match config.metrics_bind {
        Some(bind) => {
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind} (setting `metrics_bind`)"))?;
            tracing::info!(address = %listener.local_addr()?, "serving /metrics");
            let served = axum::serve(listener, metrics_app(state.clone())).with_graceful_shutdown(shutdown_signal());
            Some(tokio::spawn(async move {
                if let Err(error) = served.await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            }))
        }
        None => None,
    };
    let sync = state.spawn_key_sync();
    let purge = state.spawn_purge(PURGE_INTERVAL);
    let service = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await;
    sync.abort();
    purge.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served.context("server error")
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
