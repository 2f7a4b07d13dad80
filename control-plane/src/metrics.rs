//! Prometheus metrics, `GET /metrics` (OpenMetrics text, which Prometheus scrapes as is). Per
//! process (each replica its own); names and meanings are listed in `docs/metrics.md`.
//!
//! Counted where things happen (HTTP requests, debit batches, snapshots, hold reports, webhook
//! deliveries); purchases by state and the database's state are read when scraped.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route's template (`/v1/accounts/{id}`), never the path itself (no ids in labels).
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: HistogramFamily<RouteLabels>,
    pub debit_batches: Counter,
    pub debit_batch_size: Histogram,
    pub debit_batch_seconds: Histogram,
    pub debits: Family<OutcomeLabels, Counter>,
    pub ledger_lag_seconds: Histogram,
    pub snapshot_pages: Counter,
    pub snapshot_version: Gauge,
    pub sync_clients: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub purchases: Family<StateLabels, Gauge>,
    pub database_up: Gauge,
    /// Gateways by id and when they last reported (for `sync_clients`).
    gateways: Mutex<HashMap<uuid::Uuid, Instant>>,
}

/// A gateway that has not reported for this long no longer counts as a sync client.
const CLIENT_FRESH: Duration = Duration::from_secs(15);

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("claudestore"),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            debit_batches: Counter::default(),
            debit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            debit_batch_seconds: latency_histogram(),
            debits: Family::default(),
            // 10 ms to about 1.5 hours: a backlog after an outage shows in the top buckets.
            ledger_lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 20)),
            snapshot_pages: Counter::default(),
            snapshot_version: Gauge::default(),
            sync_clients: Gauge::default(),
            webhook_deliveries: Family::default(),
            purchases: Family::default(),
            database_up: Gauge::default(),
            gateways: Mutex::new(HashMap::new()),
        };
        let registry = &mut m.registry;
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "Time to answer an HTTP request, by route template",
            m.http_seconds.clone(),
        );
        registry.register(
            "debit_batches",
            "Debit batches received from gateways (POST /internal/v1/debits), applied or not",
            m.debit_batches.clone(),
        );
        registry.register("debit_batch_size", "Debits per batch", m.debit_batch_size.clone());
        registry.register(
            "debit_batch_seconds",
            "Time to apply a debit batch (one transaction)",
            m.debit_batch_seconds.clone(),
        );
        registry.register(
            "debits",
            "Debits by outcome: applied, duplicate (applied before), rejected (never recordable)",
            m.debits.clone(),
        );
        registry.register(
            "ledger_lag_seconds",
            "From a request's admission at the gateway to its debit's commit in the ledger",
            m.ledger_lag_seconds.clone(),
        );
        registry.register(
            "snapshot_pages",
            "Snapshot pages served to gateways",
            m.snapshot_pages.clone(),
        );
        registry.register(
            "snapshot_version",
            "The sync version of the last snapshot page served",
            m.snapshot_version.clone(),
        );
        registry.register(
            "sync_clients",
            "Gateways (Envoys) that reported to this replica in the last 15 s",
            m.sync_clients.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retrying, failed (given up after 24 h)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "purchases",
            "Purchases by state (read from the database when scraped)",
            m.purchases.clone(),
        );
        registry.register(
            "database_up",
            "1 while the database answers, 0 while requests that need it get 503",
            m.database_up.clone(),
        );
        // Every outcome shown from the start (at 0), so that a rate over it exists.
        for outcome in ["delivered", "retrying", "failed"] {
            m.webhook_deliveries
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
        for outcome in ["applied", "duplicate", "conflict", "rejected"] {
            m.debits.get_or_create(&OutcomeLabels { outcome }).inc_by(0);
        }
        m
    }

    /// A gateway reported (its hold report with a snapshot request).
    pub fn gateway_seen(&self, gateway: uuid::Uuid) {
        let Ok(mut seen) = self.gateways.lock() else {
            return;
        };
        let now = Instant::now();
        seen.insert(gateway, now);
        seen.retain(|_, at| now.duration_since(*at) < CLIENT_FRESH);
        self.sync_clients
            .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
    }

    fn fresh_clients(&self) {
        if let Ok(mut seen) = self.gateways.lock() {
            seen.retain(|_, at| at.elapsed() < CLIENT_FRESH);
            self.sync_clients
                .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
        }
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Counts every routed request by its route template, method and status, and times it.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &*METRICS;
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.http_seconds
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let m = &*METRICS;
    m.database_up.set(i64::from(!state.db.is_down()));
    m.fresh_clients();
    if !state.db.is_down() {
        let counts =
            sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM purchases GROUP BY status")
                .fetch_all(&state.pool);
        if let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_millis(500), counts).await {
            for state in ["pending", "paid", "held", "expired", "failed", "refunded"] {
                let n = rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
                m.purchases
                    .get_or_create(&StateLabels {
                        state: state.to_owned(),
                    })
                    .set(n);
            }
        }
    }
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &m.registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics not encodable",
        )
            .into_response();
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
