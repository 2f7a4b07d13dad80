//! `GET /healthz` (the process is up) and `GET /readyz` (the database answers and every embedded
//! migration is applied).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database is reachable and the migrations are applied. Answers within a second whatever
/// the database does (a probe with a short timeout must not see a timeout).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if state.db.is_down() {
        return Err(ApiError::Unavailable("database unreachable".into()));
    }
    let check = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(&state.pool);
    let applied: Vec<(i64,)> = match tokio::time::timeout(crate::db::CHECK_TIMEOUT, check).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            state.db.mark_down();
            return Err(ApiError::Unavailable("database unreachable".into()));
        }
        Err(_) => {
            state.db.mark_down();
            return Err(ApiError::Unavailable("database did not answer in time".into()));
        }
    };
    let missing = crate::db::MIGRATOR
        .iter()
        .filter(|m| !applied.iter().any(|(v,)| *v == m.version))
        .count();
    if missing > 0 {
        return Err(ApiError::Unavailable(format!(
            "{missing} migration(s) not applied yet"
        )));
    }
    Ok(Json(Health { status: "ok" }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}
