//! Building the application: connections, state, router and server. `Application::build` is
//! both the production start and the test harness (bind port 0, own database per test).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::HeaderName,
    middleware::{self, Next},
    response::Response,
};
use shared::{clock::Clock, token::TokenKeys};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    config::Config,
    error::{ApiError, ErrorCode},
    hashing::Hasher,
    publisher::Publisher,
    rate_limit::RateLimiter,
    routes,
    sessions::Sessions,
    state::{AppState, Services},
    tokens::TokenService,
};

/// Largest request body accepted (JSON bodies here are well under 2 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A built, bound, not yet running api.
pub struct Application {
    listener: TcpListener,
    /// `/metrics` only, on `API_METRICS_BIND`: operators' data (routes, error rates, queue
    /// latency) is not for the public port a load balancer exposes.
    metrics_listener: TcpListener,
    /// The admin API on `ADMIN_API_BIND`, when set (see [`crate::admin::http`]).
    admin_listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (running pending migrations), Redis and RabbitMQ and binds the
    /// listener. Uses the system clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(shared::clock::SystemClock)).await
    }

    /// Like [`Self::build`] with an injected clock (tests move time instead of sleeping).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let db = config.database()?;
        let schema_ready = Arc::new(AtomicBool::new(!config.migrate_on_start));
        if config.migrate_on_start {
            match connect_for_migrations(&config).await {
                Ok(direct) => {
                    crate::migrations::migrate(&direct).await?;
                    direct.close().await;
                    schema_ready.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"),
                        "PostgreSQL unreachable at start; migrating once it is back, not ready until then");
                    tokio::spawn(migrate_when_reachable(config.clone(), schema_ready.clone()));
                }
            }
        } else {
            // Migrations are a release job's; still say when the schema is a newer release's.
            let db = db.clone();
            tokio::spawn(async move { crate::migrations::log_unknown(&db).await });
        }

        let redis = config.redis()?;
        if !redis.ping().await {
            tracing::warn!("Redis unreachable at start; requests will get 503 until it is back");
        }
        let publisher =
            Publisher::start(config.broker(), config.topology(), config.publish_timeout).await;
        let token_keys = TokenKeys::new(config.token_secrets.clone(), config.token_digest)
            .map_err(|e| anyhow::anyhow!("TOKEN_SECRETS: {e}"))?;
        let hasher = Hasher::new(config.argon2, config.hash_concurrency)?
            .with_per_client(config.hash_per_client);

        let state = AppState::new(Services {
            sessions: Sessions::new(redis.clone(), config.session_ttl),
            limiter: RateLimiter::new(
                redis.clone(),
                config.pseudonym_secret(),
                crate::rate_limit::Limits::from_config(&config),
            ),
            tokens: TokenService::new(
                token_keys,
                redis.clone(),
                config.reset_token_max_age,
                config.verify_token_max_age,
            ),
            hasher,
            publisher,
            outbox: crate::outbox::Outbox::default(),
            readiness: routes::health::ProbeCache::default(),
            devices: crate::devices::Devices::new(&config.token_secrets, config.cookie_secure),
            refusals: crate::audit::RefusalAudit::new(
                db.clone(),
                redis.clone(),
                config.pseudonym_secret(),
            ),
            clock,
            metrics: {
                let handle = shared::telemetry::prometheus();
                register_failure_counters();
                handle
            },
            pages: Arc::new(routes::pages::Pages::new().context("page templates")?),
            breached: crate::breached::BreachedPasswords::new(
                breached_corpus(&config)?,
                config.pwned_passwords_timeout,
                config.pwned_passwords_fail_closed,
            ),
            factors: crate::mfa::Factors::new(&config.token_secrets, &config.product_name),
            challenges: crate::mfa::challenge::Challenges::new(redis.clone()),
            passkeys: crate::mfa::passkeys::Passkeys::new(
                &config.public_base_url,
                &config.product_name,
                redis.clone(),
            )
            .context("PUBLIC_BASE_URL as the passkeys' relying party")?,
            db,
            redis,
            schema_ready,
            refusal_floor: crate::refusal_floor::RefusalFloor::default(),
            config: Arc::new(config),
        });
        let listener = TcpListener::bind(state.config.bind)
            .await
            .with_context(|| format!("cannot bind API_BIND={}", state.config.bind))?;
        let metrics_listener = TcpListener::bind(state.config.metrics_bind)
            .await
            .with_context(|| {
                format!("cannot bind API_METRICS_BIND={}", state.config.metrics_bind)
            })?;
        let admin_listener = match state.config.admin_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind ADMIN_API_BIND={addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            admin_listener,
            state,
        })
    }

    /// The bound address (port 0 in the configuration becomes the real port here).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound address of `/metrics`.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// The bound address of the admin API, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The shared state (tests reach the pool and Redis through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// for up to `SHUTDOWN_TIMEOUT_SECS`, and closes the broker connection.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "api listening");
        // Set when the drain starts: the admin API drains with the public listener.
        let (draining, drain) = tokio::sync::watch::channel(false);
        let admin = self
            .admin_listener
            .map(|listener| admin(&self.state, listener, drain));
        let background = background(&self.state, self.metrics_listener)?;
        let state = self.state.clone();
        // The outbox relay runs until the server has drained, so what the last requests
        // committed still goes out (or waits in the table for another replica).
        let (relay_stop, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(state.outbox.clone().relay(
            state.db.clone(),
            state.publisher.clone(),
            state.publisher.publish_limit(),
            async move {
                let _ = relay_stopped.await;
            },
        ));
        let grace = state.config.shutdown_timeout;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = draining.send(true);
            let _ = stopping_tx.send(());
        };
        let server = axum::serve(
            self.listener,
            router(self.state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let drained = async move {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        };
        let served = tokio::select! {
            result = server => result.context("server error"),
            () = drained => {
                tracing::warn!("drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        for task in background {
            task.abort();
        }
        if let Some(admin) = admin {
            // An erasure or an import in flight finishes (within the same grace).
            let handle = admin.abort_handle();
            if tokio::time::timeout(grace, admin).await.is_err() {
                handle.abort();
            }
        }
        let _ = relay_stop.send(());
        let relay_handle = relay.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .is_err()
        {
            relay_handle.abort();
        }
        served?;
        // The refusal rows still being written (bounded: each is one marker and one insert).
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), state.refusals.settle()).await;
        state.publisher.close().await;
        state.db.close().await;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// The tasks that run beside the public listener until it has drained: the metrics listener,
/// the refusal floor's timing, and the audit table's pruning (with `AUDIT_RETENTION_DAYS`).
fn background(
    state: &AppState,
    metrics_listener: TcpListener,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let metrics_addr = metrics_listener.local_addr()?;
    tracing::info!(addr = %metrics_addr, "api metrics listening");
    let router = metrics_router(state.clone());
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, router).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    })];
    // Timed on this replica's own hashing threads: its refusals wait for its own floor.
    let floor = state.refusal_floor.clone();
    tasks.push(tokio::spawn(
        floor.keep_fresh(state.db.clone(), state.hasher.clone()),
    ));
    // Secrets sealed under an older TOKEN_SECRETS entry move to the current one.
    let (db, factors) = (state.db.clone(), state.factors.clone());
    tasks.push(tokio::spawn(async move {
        crate::mfa::reseal_all(db, factors).await;
    }));
    if let Some(days) = state.config.audit_retention_days {
        let pruning = crate::audit::keep_for(state.db.clone(), state.clock.clone(), days);
        tasks.push(tokio::spawn(pruning));
    }
    Ok(tasks)
}

/// The admin API (`ADMIN_API_BIND`), serving until `drain` turns true, then finishing the
/// requests in flight.
fn admin(
    state: &AppState,
    listener: TcpListener,
    mut drain: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin api listening");
    }
    let keys = crate::admin::keys::AdminKeys::new(&state.config.admin_keys.0);
    let router = crate::admin::http::router(state.clone(), keys);
    tokio::spawn(async move {
        let drained = async move {
            let _ = drain.wait_for(|draining| *draining).await;
        };
        let served = axum::serve(listener, router).with_graceful_shutdown(drained);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    })
}

/// A small pool for migrations: `MIGRATE_DATABASE_URL` when set (a direct connection, since
/// migrations hold a session-level advisory lock that a transaction-pooling PgBouncer would
/// not keep), else `DATABASE_URL`.
pub async fn connect_for_migrations(config: &Config) -> anyhow::Result<PgPool> {
    let url = config.migrate_database_url.as_ref().map_or(
        config.database_url.as_str(),
        shared::config::SecretUrl::expose,
    );
    shared::telemetry::connect_db(url, 1, &config.tls).await
}

/// Retries the migrations every few seconds until PostgreSQL answers and they succeed; the
/// api stays unready until then. A migration that fails on a reachable database is logged on
/// every try (an operator has to act), never silently skipped.
async fn migrate_when_reachable(config: Config, schema_ready: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let result = async {
            let direct = connect_for_migrations(&config).await?;
            let result = crate::migrations::migrate(&direct).await;
            direct.close().await;
            result
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!("migrations applied; the api is ready");
                schema_ready.store(true, Ordering::Release);
                return;
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "migrations still pending"),
        }
    }
}

/// The router, shared by `main` and the tests.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let (router, mut openapi) = api_routes().split_for_parts();
    utoipa::Modify::modify(&routes::CommonResponses, &mut openapi);
    let document = Arc::new(openapi);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .merge(routes::pages::router(state.clone()))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(answer_headers))
        .layer(middleware::from_fn(track))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(set_aside_client_request_id))
        .with_state(state)
}

/// The router of `API_METRICS_BIND`: `/metrics` and the full readiness report, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(routes::health::metrics))
        .route(
            "/readyz",
            axum::routing::get(routes::health::readyz_detailed),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Headers of every answer of the public listener (and the admin API's): `X-Content-Type-Options: nosniff` (a JSON
/// error that echoes input is never sniffed into HTML) and, unless the route chose its own
/// caching (the static assets), `Cache-Control: no-store`: answers about accounts, sessions
/// and links are for one client only and must not stay in a shared or browser cache.
pub(crate) async fn answer_headers(request: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A caller's own `x-request-id`, kept for the log line only.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub String);

/// Request ids are ours: the one stored in audit rows, sent to the worker and answered in
/// `x-request-id` is always generated here. A caller-chosen id could collide on purpose with
/// another request's, or smuggle text into audit rows; it is moved aside (printable ASCII, at
/// most 128 bytes) and logged as `client_request_id` so a client's support request can still
/// be matched.
async fn set_aside_client_request_id(mut request: Request, next: Next) -> Response {
    if let Some(value) = request.headers_mut().remove("x-request-id")
        && let Ok(text) = value.to_str()
        && text.len() <= 128
        && !text.is_empty()
    {
        let id = ClientRequestId(text.to_owned());
        request.extensions_mut().insert(id);
    }
    next.run(request).await
}

/// Where the breached-password check reads its ranges, if anywhere.
fn breached_corpus(config: &Config) -> anyhow::Result<Option<crate::breached::Corpus>> {
    use crate::breached::Corpus;
    Ok(
        match (&config.pwned_passwords_dir, &config.pwned_passwords_url) {
            (Some(dir), _) => Some(Corpus::Files(dir.clone())),
            (None, Some(url)) => {
                Some(Corpus::api(url, config.tls.extra()).context("PWNED_PASSWORDS_URL client")?)
            }
            (None, None) => None,
        },
    )
}

/// Every documented route with its OpenAPI description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::users::router())
        .merge(routes::sessions::router())
        .merge(routes::password::router())
        .merge(routes::account::router())
        .merge(routes::mfa::router())
        .merge(routes::health::router())
}

/// The OpenAPI document (paths are added by [`api_routes`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = api_routes().into_openapi();
    utoipa::Modify::modify(&routes::CommonResponses, &mut openapi);
    openapi
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Password recovery api", description = "Sign-up, sign-in, forgot and reset password. Every error is `{code, message}`."),
    modifiers(&SessionAuth)
)]
struct ApiDoc;

struct SessionAuth;

impl utoipa::Modify for SessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::sessions::SECURE_COOKIE_NAME,
            ))),
        );
    }
}

/// The server span, one log line and the request metrics per request. Logs the route
/// pattern, never the URI: query strings may carry tokens. The span continues the caller's
/// trace when its `traceparent` is valid; its `trace_id` is on every line logged within it.
async fn track(mut request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let _in_flight = crate::request_metrics::InFlight::enter();
    let method = request.method().clone();
    // Shared handles, not copies: the pattern and the header value are reference-counted.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = request.headers().get("x-request-id").cloned();
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let client_request_id = request.extensions_mut().remove::<ClientRequestId>();
    let client_request_id = client_request_id.as_ref().map_or("", |c| c.0.as_str());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id,
        trace_id = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| crate::extract::valid_traceparent(t));
    shared::otel::continue_trace(&span, traceparent);
    // Unexported, the trace id the job will carry: the caller's, else our request id's.
    let trace_id = shared::otel::trace_id(&span).or_else(|| match traceparent {
        Some(traceparent) => shared::otel::trace_id_of(traceparent).map(str::to_owned),
        None => Some(request_id.replace('-', "")).filter(|id| id.len() == 32),
    });
    let trace_id = trace_id.as_deref().unwrap_or("");
    span.record("trace_id", trace_id);
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let code = response.extensions().get::<ErrorCode>().map_or("", |c| c.0);
    crate::request_metrics::record(route, &method, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            request_id,
            client_request_id,
            trace_id,
            %method,
            route,
            status,
            code,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

/// The counters of failures and attacks exist from the start, at 0: a dashboard shows 0
/// rather than no data, and a rate over them is defined before their first event.
fn register_failure_counters() {
    for kind in shared::message::Job::KINDS {
        metrics::counter!("publish_failures_total", "kind" => kind).increment(0);
    }
    metrics::counter!("burned_token_replays_total").increment(0);
    metrics::counter!("code_entry_refused_total").increment(0);
    metrics::counter!("rate_limit_audit_skipped_total").increment(0);
    metrics::gauge!("code_entry_paused").set(0.0);
    crate::hashing::register_metrics();
    crate::outbox::register_metrics();
    shared::telemetry::record_build_info("api", env!("CARGO_PKG_VERSION"), build_info::COMMIT);
}
