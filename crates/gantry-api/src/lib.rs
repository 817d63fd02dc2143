//! `gantry serve`: the finance and CRM HTTP API (contract §5) over the tables `gantry run`
//! writes. A process of its own, so query load never slows ingestion and each scales on
//! its own; it reads ClickHouse and, for adjustments only, publishes to Kafka.
//!
//! Every `/v1` route but the OpenAPI document passes [`guard`]: the key is checked (401),
//! the handler checks its role (403), and the request is written to the audit trail before
//! its answer leaves (503 if the trail cannot be written). The OpenAPI document is
//! generated from the handlers' annotations by utoipa and built with the router from the
//! same list ([`router`]), so a route cannot be missing from it.
//!
//! What this crate must not know: how batches are landed or recovered. It reads only
//! committed results and the journal's counts, and writes only `api_audit`,
//! `api_adjustments` and adjustment events.

#![forbid(unsafe_code)]

pub mod adjust;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod crm;
pub mod db;
pub mod erase;
pub mod error;
pub mod finance;
pub mod params;
pub mod pii;
pub mod render;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{Audit, AuditRow, Subject};
use crate::auth::Keys;
use crate::config::ServeConfig;
use crate::error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<ServeConfig>,
    pub db: db::Db,
    pub keys: Arc<Keys>,
    pub audit: Audit,
    /// `None` when no producer could be made: adjustments answer 503.
    pub adjuster: Option<Arc<adjust::Adjuster>>,
    pub metrics: Arc<Metrics>,
    /// The key ring plates are opened with (`pii_keys_file`).
    pub plates: Option<Arc<gantry_pii::Keyring>>,
    /// Reconciliation's count of each committed batch's rows (see [`cache`]).
    pub batch_counts: Arc<cache::BatchCounts>,
    /// Segments and churn risk, per as-of date (see [`cache`]).
    pub segments: Arc<cache::Population<crm::TierLists>>,
    pub churn: Arc<cache::Population<Vec<crm::ChurnRisk>>>,
}

impl AppState {
    /// How plates are shown to `caller`.
    pub fn shown(&self, caller: &auth::Caller) -> pii::Shown<'_> {
        pii::Shown { keys: self.plates.as_deref(), visibility: caller.sees_pii() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// The API's own metrics (`/metrics`).
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabel, Histogram>,
    next_request: AtomicU64,
}

/// Latency buckets, seconds: 1 ms to ~16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("gantry_api");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register("requests", "Requests answered, by route and status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer, by route (audit write included)",
            latency.clone(),
        );
        Metrics { registry, requests, latency, next_request: AtomicU64::new(0) }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Gantry finance and CRM API", description = "Contract §5: settlement, clearing, reconciliation, arrears, customer usage, statements, segments, churn risk, cards, adjustments."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The routes that need a key, with their OpenAPI description: one list for both.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(finance::settlements_daily))
        .routes(routes!(finance::clearing))
        .routes(routes!(finance::reconciliation))
        .routes(routes!(finance::arrears))
        .routes(routes!(crm::usage))
        .routes(routes!(crm::statement))
        .routes(routes!(crm::segments))
        .routes(routes!(crm::churn_risk))
        .routes(routes!(crm::card))
        .routes(routes!(crm::plate))
        .routes(routes!(adjust::post_adjustment))
}

/// The OpenAPI document of the `/v1` API (also served at `/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = v1_routes().split_for_parts();
    api
}

/// The whole server: `/v1` behind the guard, then the open routes.
pub fn router(state: AppState) -> axum::Router {
    let (v1, api) = v1_routes().split_for_parts();
    let api = Arc::new(api);
    let v1 = v1.route_layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    v1.route("/v1/openapi.json", get(move || async move { axum::Json(api.as_ref().clone()) }))
        .route("/health", get(ready))
        .route("/health/live", get(|| async { axum::Json(serde_json::json!({"live": true})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .with_state(state)
}

/// Authenticates, runs the handler, audits, counts. The key is never logged: only its id.
async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = s.keys.authenticate(header);
    let (key_id, roles) = match &caller {
        Ok(c) => (c.key_id.to_string(), c.roles_text()),
        Err(_) => (String::new(), String::new()),
    };
    let response = match caller {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    let subject = response.extensions().get::<Subject>().cloned().unwrap_or_default();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let row = AuditRow {
        time: now.as_secs() as u32,
        time_ms: now.subsec_millis() as u16,
        request_id: format!(
            "{:x}-{}",
            now.as_secs(),
            s.metrics.next_request.fetch_add(1, Ordering::Relaxed)
        ),
        key_id,
        roles,
        method,
        endpoint: endpoint.clone(),
        query,
        customer_id: subject.customer_id,
        card_id: subject.card_id,
        personal: subject.personal as u8,
        pii_shown: subject.pii_shown as u8,
        status: response.status().as_u16(),
    };
    let written =
        if subject.personal { s.audit.record(row).await } else { s.audit.enqueue(row).await };
    let response = match written {
        Ok(()) => response,
        Err(_) => ApiError::unavailable(
            "audit_unavailable",
            "the audit trail could not be written; nothing was returned",
        )
        .into_response(),
    };
    let labels = RequestLabels { endpoint: endpoint.clone(), status: response.status().as_u16() };
    s.metrics.requests.get_or_create(&labels).inc();
    s.metrics
        .latency
        .get_or_create(&EndpointLabel { endpoint })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Ready when ClickHouse answers.
async fn ready(State(s): State<AppState>) -> Response {
    match s.db.query("SELECT 1").fetch_one::<u8>().await {
        Ok(_) => axum::Json(serde_json::json!({"live": true, "ready": true})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: ClickHouse does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"live": true, "ready": false})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &s.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Keys(#[from] gantry_pii::KeyError),
}

/// The state for `cfg` (starts the audit writer on the current runtime).
pub fn state(cfg: ServeConfig) -> Result<AppState, ServeError> {
    let plates = match &cfg.pii_keys_file {
        Some(path) => Some(Arc::new(gantry_pii::Keyring::load(path)?)),
        None => {
            tracing::warn!("no pii_keys_file: plates are shown empty");
            None
        }
    };
    let db = db::Db::new(&cfg.clickhouse_url, &cfg.database, cfg.query_timeout_ms);
    let audit =
        Audit::start(db.client().clone(), Duration::from_millis(cfg.audit_insert_interval_ms));
    let adjuster = match adjust::Adjuster::new(
        db.clone(),
        &cfg.brokers,
        &cfg.account_topic,
        cfg.network_utc_offset_min,
    ) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::error!(error = %e, "no Kafka producer: adjustments will answer 503");
            None
        }
    };
    let refresh = Duration::from_millis(cfg.population_refresh_ms);
    Ok(AppState {
        batch_counts: Arc::new(cache::BatchCounts::default()),
        segments: Arc::new(cache::Population::new(refresh)),
        churn: Arc::new(cache::Population::new(refresh)),
        keys: Arc::new(Keys::new(&cfg.api_keys)),
        cfg: Arc::new(cfg),
        db,
        audit,
        adjuster,
        metrics: Arc::new(Metrics::new()),
        plates,
    })
}

/// Serves until `shutdown` resolves (in-flight requests finish).
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = cfg.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Listen { addr: addr.clone(), source })?;
    let keys = cfg.api_keys.len();
    let app = router(state(cfg)?);
    tracing::info!(%addr, keys, "gantry serve: listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(ServeError::Serve)
}
