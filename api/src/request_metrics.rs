//! `http_requests_total` and `http_request_duration_seconds`, with their handles registered
//! once per route, method and status instead of looked up by label on every request, and
//! `http_requests_in_flight` (what a drain after SIGTERM waits for).

use std::{
    collections::HashMap,
    sync::{LazyLock, RwLock},
};

use axum::http::Method;
use metrics::{Counter, Gauge, Histogram};

/// Requests being answered now, counted from their start to their end (or cancellation).
pub struct InFlight(());

static IN_FLIGHT: LazyLock<Gauge> = LazyLock::new(|| metrics::gauge!("http_requests_in_flight"));

impl InFlight {
    /// Counts a request in until the returned guard is dropped.
    pub fn enter() -> Self {
        IN_FLIGHT.increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.decrement(1.0);
    }
}

/// Handles of one route.
#[derive(Default)]
struct Route {
    counters: Vec<(Method, u16, Counter)>,
    durations: Vec<(Method, Histogram)>,
}

impl Route {
    fn get(&self, method: &Method, status: u16) -> Option<(&Counter, &Histogram)> {
        let counter = self
            .counters
            .iter()
            .find(|(m, s, _)| m == method && *s == status)?;
        let duration = self.durations.iter().find(|(m, _)| m == method)?;
        Some((&counter.2, &duration.1))
    }
}

/// Routes are the router's patterns (and `unmatched`), so the map stays small.
static ROUTES: LazyLock<RwLock<HashMap<String, Route>>> = LazyLock::new(Default::default);

/// The method as a label: the standard ones by name, any other as `other`, so a client
/// cannot make new series by inventing methods.
fn method_label(method: &Method) -> Method {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    if KNOWN.contains(method) {
        method.clone()
    } else {
        Method::from_bytes(b"other").unwrap_or(Method::GET)
    }
}

/// Counts one answered request and records how long it took.
pub fn record(route: &str, method: &Method, status: u16, seconds: f64) {
    let method = method_label(method);
    if let Ok(routes) = ROUTES.read()
        && let Some((counter, duration)) = routes.get(route).and_then(|r| r.get(&method, status))
    {
        counter.increment(1);
        duration.record(seconds);
        return;
    }
    let Ok(mut routes) = ROUTES.write() else {
        return;
    };
    let handles = routes.entry(route.to_owned()).or_default();
    if !handles
        .counters
        .iter()
        .any(|(m, s, _)| *m == method && *s == status)
    {
        let counter = metrics::counter!("http_requests_total", "method" => method.to_string(),
            "route" => route.to_owned(), "status" => status.to_string());
        handles.counters.push((method.clone(), status, counter));
    }
    if !handles.durations.iter().any(|(m, _)| *m == method) {
        let duration = metrics::histogram!("http_request_duration_seconds",
            "method" => method.to_string(), "route" => route.to_owned());
        handles.durations.push((method.clone(), duration));
    }
    if let Some((counter, duration)) = handles.get(&method, status) {
        counter.increment(1);
        duration.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), Method::POST);
        let invented = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&invented).as_str(), "other");
    }
}
