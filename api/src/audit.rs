//! Best-effort audit rows written outside a transaction: a failed audit write must not turn
//! an answer into a 503, so it is logged instead. Rows that belong to a change (a password
//! reset, a sign-up) are written inside that change's transaction, not here.

use std::net::IpAddr;

use shared::audit::AuditEvent;

use crate::startup::AppState;

/// Appends `event`, logging (not returning) a failure.
pub async fn record(state: &AppState, event: &AuditEvent<'_>) {
    if let Err(e) = shared::audit::record(&state.db, event).await {
        tracing::error!(error = %e, action = event.action, outcome = event.outcome, "could not write audit row");
    }
}

/// Records a request refused by a rate limit: which budget (`label`), from which IP, and for
/// which address pseudonym when the request named one. A campaign against one account
/// (credential stuffing from many IPs) thus leaves a row per refusal under that account's
/// pseudonym, whether or not the account exists.
pub async fn rate_limited(
    state: &AppState,
    label: &'static str,
    ip: IpAddr,
    address_hash: Option<&str>,
    request_id: Option<&str>,
) {
    metrics::counter!("rate_limit_hits_total", "kind" => label).increment(1);
    record(
        state,
        &AuditEvent {
            action: "rate_limited",
            outcome: label,
            ip: Some(ip),
            address_hash,
            request_id,
            ..AuditEvent::default()
        },
    )
    .await;
}
