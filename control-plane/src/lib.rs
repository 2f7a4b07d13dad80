//! The ClaudeStore control plane: the single source of truth for money. Accounts, API keys, the
//! double-entry credit ledger, usage, prices and plans over REST (admin, public, customer), and the
//! internal sync API the gateways use; purchases, payment callbacks and invoices. `app` builds the
//! router; `serve` runs it; `prepare` connects, creates the database when missing, migrates and seeds.

pub mod accounts;
pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod config;
pub mod credits;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod internal;
pub mod invoices;
pub mod keys;
pub mod ledger;
pub mod me;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod page;
pub mod payments;
pub mod plans;
pub mod prices;
pub mod secrets;
pub mod state;
pub mod sync;
pub mod usage;
pub mod webhooks;

pub mod db;
mod telemetry;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

pub use config::Config;
pub use db::{connect, create_database_if_missing, prepare, MIGRATOR};
pub use error::ApiError;
pub use prices::PriceCache;
pub use state::AppState;
pub use telemetry::init_tracing;

/// Bodies of the public and admin API are small; the internal API raises its own limit.
const BODY_LIMIT: usize = 256 * 1024;

/// Every route with its OpenAPI description, merged from the resource modules.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(openapi::router())
        .merge(accounts::router())
        .merge(keys::router())
        .merge(credits::router())
        .merge(usage::router())
        .merge(me::router())
        .merge(prices::router())
        .merge(plans::router())
        .merge(audit_log::router())
        .merge(payments::router())
        .merge(invoices::router())
        .merge(internal::router())
        .merge(webhooks::router())
        .merge(dashboard::api_router())
}

async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    dashboard::missing_page(&uri, &headers, axum::http::StatusCode::NOT_FOUND)
        .unwrap_or_else(|| ApiError::not_found("no such route; see GET /openapi.json").into_response())
}

async fn method_not_allowed(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    dashboard::missing_page(&uri, &headers, axum::http::StatusCode::METHOD_NOT_ALLOWED).unwrap_or_else(|| {
        ApiError::MethodNotAllowed("method not allowed on this route; see GET /openapi.json".into())
            .into_response()
    })
}

/// Routes that answer without the database.
fn needs_database(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/metrics")
        && !path.starts_with("/dashboard/assets/")
}

/// Before any route: a NUL byte in the path or query is refused (PostgreSQL cannot store it, and
/// no name or id has one); while the database is out of reach, requests that need it are
/// answered 503 at once. A request that found it out of reach marks it so.
async fn guard(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    let nul = |s: &str| s.contains("%00") || s.contains('\0');
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return ApiError::invalid("the request's path or query contains a NUL byte (%00)").into_response();
    }
    if state.db.is_down() && needs_database(uri.path()) {
        return ApiError::DatabaseUnavailable("marked down by the last check".into()).into_response();
    }
    let response = next.run(req).await;
    if response
        .extensions()
        .get::<error::DatabaseWasUnreachable>()
        .is_some()
    {
        state.db.mark_down();
    }
    response
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (router, doc) = api().split_for_parts();
    // The dashboard's pages change things through the API itself, in process.
    let api_client = dashboard::ApiClient::new(
        router.clone().with_state(state.clone()),
        state.config.admin_token.clone(),
    );
    let router = router
        .merge(dashboard::router(api_client))
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
        .layer(Extension(Arc::new(doc)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    telemetry::layers(router)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address is the client address of the dashboard's sign-in rate limit.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
