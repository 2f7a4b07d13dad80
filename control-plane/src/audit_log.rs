//! `GET /v1/audit` (admin): the audit log, newest first, optionally for one target. It is written
//! by [`crate::audit::record`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::page::{checked_limit, decode, paginate, Page};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    /// e.g. `credits.grant`, `credits.correction`, `key.create`, `key.revoke`, `account.status`,
    /// `price.set`, `plan.create`, `plan.update`.
    pub action: String,
    /// What was acted on, e.g. `account:<uuid>`, `key:<uuid>`, `price:<model>`, `plan:<uuid>`.
    pub target: String,
    pub reason: Option<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only entries about this target (e.g. `account:<uuid>`).
    pub target: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<AuditEntry>), (status = 401, body = crate::error::ErrorBody)))]
async fn list_audit(
    _admin: Admin,
    state: axum::extract::State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<axum::Json<Page<AuditEntry>>> {
    let limit = checked_limit(q.limit)?;
    let after: Option<i64> = q.cursor.as_deref().map(decode).transpose()?;
    let rows: Vec<AuditEntry> = sqlx::query_as(
        "SELECT id, actor, action, target, reason, details, created_at FROM audit_log
         WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR target = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(after)
    .bind(q.target)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(axum::Json(paginate(rows, limit, |r| r.id, |r| r)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}
