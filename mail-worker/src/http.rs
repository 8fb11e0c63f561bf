//! The worker's small HTTP port: `/healthz`, `/readyz`, `/metrics`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Json, Router, extract::State, response::Response, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use shared::redis_pool::RedisPool;
use sqlx::PgPool;

/// What the probes look at.
#[derive(Clone)]
pub struct HttpState {
    pub db: PgPool,
    pub redis: RedisPool,
    pub consuming: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready when PostgreSQL and Redis answer and a consumer is attached to RabbitMQ. SMTP is
/// deliberately not checked: a provider outage is handled by retries, not by restarts.
async fn readyz(State(state): State<HttpState>) -> Response {
    let consuming = state.consuming.load(Ordering::SeqCst);
    shared::telemetry::readiness(&state.db, &state.redis, true, consuming).await
}

async fn metrics(State(state): State<HttpState>) -> Response {
    shared::telemetry::metrics_response(&state.metrics)
}
