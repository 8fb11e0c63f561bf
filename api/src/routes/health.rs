//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: the process answers. Deliberately checks no dependency, so an outage of one does
/// not make the orchestrator restart every replica.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: PostgreSQL, Redis and RabbitMQ are all reachable.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = async {
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&state.db),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    };
    let (postgres, redis, rabbitmq) =
        tokio::join!(db, state.redis.ping(), state.publisher.is_connected());
    let ready = postgres && redis && rabbitmq;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": { "postgres": postgres, "redis": redis, "rabbitmq": rabbitmq },
    });
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
