//! The delivery log: each event of an account, newest first, with every attempt to deliver it.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::page::{paginate, Page, PageParams};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; null when there was none (see `error`).
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventView {
    /// The event id (the `id` of the body): receivers deduplicate on it.
    pub id: Uuid,
    /// `balance.low`, `key.limit_reached`, `purchase.paid` or `purchase.refunded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending` (waiting for an attempt), `delivered` (a 2xx answer), `failed` (24 hours without
    /// one, or the webhook was removed).
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending events).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The body as sent: `{"id", "type", "created_at", "data"}`.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

type AttemptRow = (Uuid, i32, DateTime<Utc>, Option<i32>, Option<String>, i32);
type EventRow = (
    Uuid,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    String,
);

/// An account's webhook events, newest first, with their delivery attempts (admin).
#[utoipa::path(get, path = "/v1/accounts/{id}/webhook-events", tag = "accounts",
    params(("id" = Uuid, Path, description = "account id"), PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<WebhookEventView>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_events(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<WebhookEventView>>> {
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.after()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account).await?;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, type, status, created_at, delivered_at, next_attempt_at, body FROM webhook_events
         WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(account)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT event_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts
         WHERE event_id = ANY($1) ORDER BY event_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let page = paginate(
        rows,
        limit,
        |r| (r.3, r.0),
        |(id, kind, status, created_at, delivered_at, next, body)| WebhookEventView {
            id,
            kind,
            next_attempt_at: (status == "pending").then_some(next),
            status,
            created_at,
            delivered_at,
            event: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
            attempts: attempts
                .iter()
                .filter(|a| a.0 == id)
                .map(|(_, attempt, at, status_code, error, duration_ms)| AttemptView {
                    attempt: *attempt,
                    at: *at,
                    status_code: *status_code,
                    error: error.clone(),
                    duration_ms: *duration_ms,
                })
                .collect(),
        },
    );
    Ok(Json(page))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}
