//! `GET /healthz`, `GET /readyz`, and `GET /metrics` (on the metrics listener only).

use axum::{Json, extract::State, response::Response};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::startup::AppState;

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

/// Readiness: PostgreSQL, Redis and RabbitMQ are all reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "PostgreSQL, Redis and RabbitMQ reachable", body = serde_json::Value),
        (status = 503, description = "A dependency is unreachable; `checks` says which", body = serde_json::Value),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    // PostgreSQL counts as ready only once the schema is current (migrations that were
    // pending because the database was down at start have run).
    let schema_ready = state
        .schema_ready
        .load(std::sync::atomic::Ordering::Acquire);
    let rabbitmq = state.publisher.is_connected().await;
    shared::telemetry::readiness(&state.db, &state.redis, schema_ready, rabbitmq).await
}

/// Prometheus text exposition, served only on `API_METRICS_BIND` (see
/// [`crate::startup::metrics_router`]), never on the public port.
pub async fn metrics(State(state): State<AppState>) -> Response {
    shared::telemetry::metrics_response(&state.metrics)
}
