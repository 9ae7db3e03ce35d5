//! What operators read: `/metrics` (Prometheus), and the middleware that counts every request by
//! its route template.

use crate::metrics::{self, RequestLabels, RouteLabels};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/metrics`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// The issuer's metrics, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text"))
)]
async fn scrape(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.render_metrics().await).into_response()
}

/// Counts the request and its duration under its route template (`unmatched` when no route
/// matched), its method, and the status it got.
pub(super) async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = metrics::method_label(request.method().as_str());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = state.metrics();
    let status = response.status().as_u16();
    metrics.requests.get_or_create(&RequestLabels { route: route.clone(), method, status }).inc();
    metrics.request_duration.get_or_create(&RouteLabels { route, method }).observe(started.elapsed().as_secs_f64());
    response
}
