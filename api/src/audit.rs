//! Best-effort audit rows written outside a transaction: a failed audit write must not turn
//! an answer into a 503, so it is logged instead. Rows that belong to a change (a password
//! reset, a sign-up) are written inside that change's transaction, not here.

use std::net::IpAddr;

use shared::audit::{Action, AuditEvent, Outcome};

use crate::startup::AppState;

/// Appends `event`, logging (not returning) a failure.
pub async fn record(state: &AppState, event: &AuditEvent<'_>) {
    if let Err(e) = shared::audit::record_on(&state.db, event).await {
        tracing::error!(error = %e, action = %event.action, outcome = %event.outcome, "could not write audit row");
    }
}

/// How long one audit row stands for every refusal of the same (budget, IP, address).
const REFUSAL_AUDIT_PERIOD_SECS: u64 = 60;

/// Records a request refused by a rate limit: which budget (`budget`, the verdict's
/// `refused_by`), from which IP, and for
/// which address pseudonym when the request named one. A campaign against one account
/// (credential stuffing from many IPs) thus leaves rows under that account's pseudonym,
/// whether or not the account exists.
///
/// At most one row per (budget, IP, address) per minute: the refused path is the one a flood
/// takes, and a database insert per refused request would turn every flood into a write load
/// on PostgreSQL (and its connection pool) that no budget bounds. The metric still counts
/// every refusal. A marker in Redis (`SET NX EX`) decides; without Redis the row is skipped.
pub async fn rate_limited(
    state: &AppState,
    budget: Option<Outcome>,
    ip: IpAddr,
    address_hash: Option<&str>,
    request_id: Option<&str>,
) {
    let label = budget.unwrap_or(Outcome::RateLimited);
    metrics::counter!("rate_limit_hits_total", "kind" => label.as_str()).increment(1);
    let subject = format!("{label}\0{ip}\0{}", address_hash.unwrap_or(""));
    let fingerprint = shared::keys::pseudonym(state.config.pseudonym_secret(), "audit", &subject);
    let key = state.redis.keys().audit_mark(&fingerprint);
    match state
        .redis
        .set_marker(&key, REFUSAL_AUDIT_PERIOD_SECS)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "rate-limit refusal not audited: Redis unavailable");
            return;
        }
    }
    record(
        state,
        &AuditEvent {
            ip: Some(ip),
            address_hash,
            request_id,
            ..AuditEvent::new(Action::RateLimited, label)
        },
    )
    .await;
}
