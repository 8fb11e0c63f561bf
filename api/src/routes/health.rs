//! `GET /healthz`, `GET /readyz`, and `GET /metrics` (on the metrics listener only).

use std::time::{Duration, Instant};

use axum::{Json, extract::State, response::Response};
use serde_json::json;
use shared::telemetry::Readiness;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: the process answers. Deliberately checks no dependency, so an outage of one does
/// not make the orchestrator restart every replica.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = serde_json::Value)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness as a load balancer sees it: `{"status": "ready"}` or `503 {"status":
/// "unavailable"}`, from a probe at most [`PROBE_MAX_AGE`] old. The public port names no
/// dependency (which store is down is for operators: the full report is `/readyz` on
/// `API_METRICS_BIND`), and a flood of `/readyz` takes no database connection per call: one
/// probe a second at most, shared by every caller.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "PostgreSQL, Redis and RabbitMQ reachable (a probe at most 1 s old)", body = serde_json::Value),
        (status = 503, description = "A dependency is unreachable (which one: `/readyz` on the metrics listener)", body = serde_json::Value),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    state.readiness.current(&state).await.response(false)
}

/// The full readiness report (`checks` names each dependency), on `API_METRICS_BIND` only;
/// probed on every call.
pub async fn readyz_detailed(State(state): State<AppState>) -> Response {
    probe(&state).await.response(true)
}

/// How old the probe behind the public `/readyz` may be.
pub const PROBE_MAX_AGE: Duration = Duration::from_secs(1);

async fn probe(state: &AppState) -> Readiness {
    // PostgreSQL counts as ready only once the schema is current (migrations that were
    // pending because the database was down at start have run).
    let schema_ready = state
        .schema_ready
        .load(std::sync::atomic::Ordering::Acquire);
    let rabbitmq = state.publisher.is_connected().await;
    Readiness::probe(&state.db, &state.redis, schema_ready, rabbitmq).await
}

/// The last probe behind the public `/readyz`. One caller at a time probes; the others wait
/// for its result instead of probing again.
#[derive(Default)]
pub struct ProbeCache {
    last: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

impl ProbeCache {
    /// A probe at most [`PROBE_MAX_AGE`] old.
    pub async fn current(&self, state: &AppState) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, readiness)) = *last
            && at.elapsed() < PROBE_MAX_AGE
        {
            return readiness;
        }
        let readiness = probe(state).await;
        *last = Some((Instant::now(), readiness));
        readiness
    }
}

/// Prometheus text exposition, served only on `API_METRICS_BIND` (see
/// [`crate::startup::metrics_router`]), never on the public port.
pub async fn metrics(State(state): State<AppState>) -> Response {
    shared::telemetry::metrics_response(&state.metrics)
}
