//! The issuer's Prometheus metrics: one registry per [`AppState`](crate::AppState), no global
//! recorder, so that every test and every process counts only its own. Names follow Prometheus'
//! conventions (`_total` for counters, `_seconds` for durations); no label takes user input: routes
//! are the router's templates, the other labels come from fixed sets in the code.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// The content type of [`Metrics::render`]: the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request, by the route that answered it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/admin/keys/{kid}/revoke`), or `unmatched`.
    pub route: String,
    /// The method, when it is one of the standard ones; `other` else.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

/// A request's duration, by route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, or `unmatched`.
    pub route: String,
    /// The method, as in [`RequestLabels`].
    pub method: &'static str,
}

/// A grant at the token endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// `password`, `refresh_token`, `client_credentials`, or `unsupported`.
    pub grant_type: &'static str,
    /// `issued`, or the error code of the answer (`invalid_grant`, `too_many_requests`, ...).
    pub outcome: &'static str,
}

/// A refusal by an attempt limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `login_account_address`, `login_address`, `sign_in_link` or `registration`.
    pub limit: &'static str,
}

/// Password hashing work.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabels {
    /// `hash` (a new password) or `verify` (a login).
    pub operation: &'static str,
}

/// A change to the key set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyChangeLabels {
    /// `created`, `promoted`, `retired` or `revoked`.
    pub change: &'static str,
}

/// A state of the database pool's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `in_use`, `idle` or `max`.
    pub state: &'static str,
}

/// The metrics and their registry. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request durations, by route and method.
    pub request_duration: Family<RouteLabels, Histogram>,
    /// Grants at the token endpoint, by type and outcome.
    pub grants: Family<GrantLabels, Counter>,
    /// Refresh tokens presented again after they were spent (each revoked its family).
    pub refresh_reuse: Counter,
    /// Password logins refused for wrong credentials (or a disabled user).
    pub login_failures: Counter,
    /// Attempts refused by a limit (logins, sign-in links, registrations), by limit.
    pub limit_refusals: Family<LimitLabels, Counter>,
    /// How long slowed-down logins waited before their password check.
    pub login_delay: Histogram,
    /// Argon2id computations since the start, by operation (set from the hasher at each scrape).
    pub password_hashes: Family<HashLabels, Counter>,
    /// Changes to the key set made by this process.
    pub key_changes: Family<KeyChangeLabels, Counter>,
    /// Seconds since the active key started signing, as of the last scrape.
    pub active_key_age: Gauge<f64, AtomicU64>,
    /// The database pool's connections, as of the last scrape.
    pub pool: Family<PoolLabels, Gauge>,
    /// How long a trivial query took at the last scrape.
    pub db_ping: Gauge<f64, AtomicU64>,
    /// How long each SQL statement ran (from sqlx's statement events, see [`DbEventRecorder`]).
    pub query_duration: Histogram,
    /// How long each request for a pooled connection waited (sqlx's acquire events).
    pub pool_wait: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Request durations from 1 ms to about 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::default();
        registry.register("http_requests", "HTTP requests answered, by route, method and status", requests.clone());
        let request_duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route and method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let grants = Family::default();
        registry.register("oauth_grants", "Token endpoint grants, by grant type and outcome", grants.clone());
        let refresh_reuse = Counter::default();
        registry.register(
            "refresh_reuse_detections",
            "Spent refresh tokens presented again (each revoked its family)",
            refresh_reuse.clone(),
        );
        let login_failures = Counter::default();
        registry.register("login_failures", "Password logins refused for wrong credentials", login_failures.clone());
        let limit_refusals = Family::default();
        registry.register("limit_refusals", "Attempts refused by a limit, by limit", limit_refusals.clone());
        let login_delay = Histogram::new(exponential_buckets(0.25, 2.0, 6));
        let help = "Time a login to an account failing from many addresses waited before its password check";
        registry.register_with_unit("login_delay", help, Unit::Seconds, login_delay.clone());
        let password_hashes = Family::default();
        let help = "Argon2id computations, by operation: hash (a new password) or verify (a login)";
        registry.register("password_hashes", help, password_hashes.clone());
        let key_changes = Family::default();
        registry.register("key_changes", "Changes to the signing key set made by this process", key_changes.clone());
        let active_key_age = Gauge::default();
        registry.register_with_unit(
            "active_key_age",
            "Time since the active signing key started signing",
            Unit::Seconds,
            active_key_age.clone(),
        );
        let pool = Family::default();
        registry.register("db_pool_connections", "Database pool connections, by state", pool.clone());
        let db_ping = Gauge::default();
        registry.register_with_unit(
            "db_ping",
            "Round trip of a trivial query at the scrape",
            Unit::Seconds,
            db_ping.clone(),
        );
        let query_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "db_query_duration",
            "Time an SQL statement ran",
            Unit::Seconds,
            query_duration.clone(),
        );
        let pool_wait = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let help = "Time a request for a pooled database connection waited";
        registry.register_with_unit("db_pool_wait", help, Unit::Seconds, pool_wait.clone());
        Self {
            registry,
            requests,
            request_duration,
            grants,
            refresh_reuse,
            login_failures,
            limit_refusals,
            login_delay,
            password_hashes,
            key_changes,
            active_key_age,
            pool,
            db_ping,
            query_duration,
            pool_wait,
        }
    }
}

impl Metrics {
    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts one refusal by `limit` (see [`LimitLabels`]).
    pub fn limit_refused(&self, limit: &'static str) {
        self.limit_refusals.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Counts one key-set change (`created`, `promoted`, `retired`, `revoked`).
    pub fn key_changed(&self, change: &'static str) {
        self.key_changes.get_or_create(&KeyChangeLabels { change }).inc();
    }
}

/// A tracing layer that turns sqlx's own events into [`Metrics::query_duration`] (target
/// `sqlx::query`, field `elapsed_secs`, one per statement) and [`Metrics::pool_wait`] (target
/// `sqlx::pool::acquire`, field `aquired_after_secs`, one per acquire): sqlx has no other hook
/// for either. It records nothing until [`attach`](Self::attach)ed to a process's metrics, since
/// the subscriber is installed before the state is opened. Give it a filter that enables its
/// [`TARGETS`](Self::TARGETS) at `DEBUG`.
#[derive(Clone, Debug, Default)]
pub struct DbEventRecorder {
    histograms: Arc<OnceLock<(Histogram, Histogram)>>,
}

impl DbEventRecorder {
    /// The targets it reads.
    pub const TARGETS: [&str; 2] = ["sqlx::query", "sqlx::pool::acquire"];

    /// Records into these metrics from now on (the first call wins).
    pub fn attach(&self, metrics: &Metrics) {
        let _ = self.histograms.set((metrics.query_duration.clone(), metrics.pool_wait.clone()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DbEventRecorder {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let Some((queries, waits)) = self.histograms.get() else { return };
        let (field, histogram) = match event.metadata().target() {
            "sqlx::query" => ("elapsed_secs", queries),
            "sqlx::pool::acquire" => ("aquired_after_secs", waits),
            _ => return,
        };
        let mut seconds = Seconds { field, value: None };
        event.record(&mut seconds);
        if let Some(value) = seconds.value {
            histogram.observe(value);
        }
    }
}

/// Reads one `f64` field of an event.
struct Seconds {
    field: &'static str,
    value: Option<f64>,
}

impl Visit for Seconds {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == self.field {
            self.value = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// The method as a label: one of the standard methods, or `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_labels_are_fixed() {
        let metrics = Metrics::default();
        metrics.grants.get_or_create(&GrantLabels { grant_type: "password", outcome: "issued" }).inc();
        metrics.key_changed("created");
        metrics
            .request_duration
            .get_or_create(&RouteLabels { route: "/healthz".to_owned(), method: "GET" })
            .observe(0.002);
        let text = metrics.render();
        for expected in [
            "portcullis_oauth_grants_total{grant_type=\"password\",outcome=\"issued\"} 1",
            "portcullis_key_changes_total{change=\"created\"} 1",
            "portcullis_http_request_duration_seconds_bucket{le=\"0.002\",route=\"/healthz\",method=\"GET\"} 1",
            "portcullis_refresh_reuse_detections_total 0",
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        assert_eq!(method_label("GET"), "GET");
    }

    #[test]
    fn sqlx_events_become_query_and_pool_wait_durations() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let metrics = Metrics::default();
        let recorder = DbEventRecorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "sqlx::query", elapsed_secs = 0.25, "before the recorder is attached");
            recorder.attach(&metrics);
            tracing::debug!(target: "sqlx::query", summary = "select", elapsed_secs = 0.003);
            tracing::warn!(target: "sqlx::query", elapsed_secs = 1.5, "slow statement");
            tracing::debug!(target: "sqlx::pool::acquire", aquired_after_secs = 0.0002, "acquired connection");
            tracing::debug!(target: "other", elapsed_secs = 9.0);
        });
        let text = metrics.render();
        for expected in [
            "portcullis_db_query_duration_seconds_sum 1.503",
            "portcullis_db_query_duration_seconds_count 2",
            "portcullis_db_pool_wait_seconds_count 1",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        assert_eq!(method_label("BREW"), "other");
    }
}
