//! Admin grants and corrections (`POST /v1/accounts/{id}/credits`) and the account's ledger with
//! its running balance (`GET /v1/accounts/{id}/ledger`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::check_text;
use crate::audit::Audit;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ledger::{self, NewTransfer, Posted};
use crate::money::{self, Amount};
use crate::page::{paginate, Page, PageParams};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    /// Positive: a grant. Negative: a correction (needs a reason). A decimal string or an integer.
    #[schema(value_type = String, example = "1000")]
    pub credits: Amount,
    /// Why; required for corrections. Kept in the ledger and the audit log.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unique per intended transfer: a retry with the same key and content returns the original.
    pub idempotency_key: String,
}

/// A transfer as seen from one customer account.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TransferView {
    pub id: Uuid,
    pub account_id: Uuid,
    /// Signed: positive adds to the account, negative takes from it.
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "1000")]
    pub credits: Decimal,
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "1000")]
    pub balance_after: Decimal,
    /// `grant`, `correction`, `usage`, `purchase` or `refund`.
    pub kind: String,
    pub reason: Option<String>,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    #[sqlx(default)]
    pub entry_id: i64,
}

const VIEW: &str = "SELECT t.id, e.ledger_account_id AS account_id, e.amount AS credits, e.balance_after,
        t.kind, t.reason, t.idempotency_key, t.created_at, e.id AS entry_id
    FROM entries e JOIN transfers t ON t.id = e.transfer_id";

async fn view(conn: &mut PgConnection, transfer_id: Uuid, account_id: Uuid) -> ApiResult<TransferView> {
    sqlx::query_as(&format!(
        "{VIEW} WHERE e.transfer_id = $1 AND e.ledger_account_id = $2"
    ))
    .bind(transfer_id)
    .bind(account_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::Internal(format!("transfer {transfer_id} has no entry for {account_id}")))
}

/// Grants (positive) or corrects (negative) an account's credits, idempotently.
#[utoipa::path(post, path = "/v1/accounts/{id}/credits", tag = "credits", request_body = CreditsRequest,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "applied now", body = TransferView),
        (status = 200, description = "the same idempotency key and content: the original transfer", body = TransferView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the idempotency key was used with other content", body = ErrorBody)))]
async fn post_credits(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreditsRequest>,
) -> ApiResult<(StatusCode, Json<TransferView>)> {
    let credits = money::canonical(body.credits.0);
    if credits.is_zero() {
        return Err(ApiError::invalid(
            "credits must not be zero: positive to grant, negative to correct",
        ));
    }
    let key = check_text("idempotency_key", &body.idempotency_key, 200)?;
    let reason = body
        .reason
        .as_deref()
        .map(|r| check_text("reason", r, 1000))
        .transpose()?;
    let grant = credits.is_sign_positive();
    if !grant && reason.is_none() {
        return Err(ApiError::invalid(
            "reason is required for a correction (negative credits)",
        ));
    }
    let (kind, from, to) = if grant {
        ("grant", ledger::ISSUANCE, account_id)
    } else {
        ("correction", account_id, ledger::ISSUANCE)
    };
    let fingerprint = ledger::fingerprint(&[
        &account_id.to_string(),
        &credits.to_string(),
        reason.as_deref().unwrap_or(""),
    ]);
    let transfer = NewTransfer {
        id: ledger::new_transfer_id(),
        scope: "admin",
        idempotency_key: key.clone(),
        kind,
        from,
        to,
        amount: credits.abs(),
        reason: reason.clone(),
        actor: admin.actor.clone(),
        fingerprint,
    };
    let audit = Audit {
        actor: &admin.actor,
        action: if grant {
            "credits.grant"
        } else {
            "credits.correction"
        },
        target: format!("account:{account_id}"),
        reason: reason.as_deref(),
        details: serde_json::json!({ "credits": money::plain(credits), "idempotency_key": key, "transfer_id": transfer.id }),
    };
    let mut tx = state.pool.begin().await?;
    let posted = ledger::post(&mut tx, transfer, audit).await?;
    let (status, id) = match posted {
        Posted::Created(id) => (StatusCode::CREATED, id),
        Posted::Existing(id) => (StatusCode::OK, id),
    };
    let view = view(&mut tx, id, account_id).await?;
    tx.commit().await?;
    Ok((status, Json(view)))
}

/// The account's transfers, newest first, each with the balance right after it.
#[utoipa::path(get, path = "/v1/accounts/{id}/ledger", tag = "credits", params(("id" = Uuid, Path), PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<TransferView>), (status = 404, body = ErrorBody)))]
async fn list_ledger(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TransferView>>> {
    let limit = page.limit()?;
    let after: Option<i64> = page.after()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account_id).await?;
    let rows: Vec<TransferView> = sqlx::query_as(&format!(
        "{VIEW} WHERE e.ledger_account_id = $1 AND ($2::bigint IS NULL OR e.id < $2) ORDER BY e.id DESC LIMIT $3"
    ))
    .bind(account_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(paginate(rows, limit, |t| t.entry_id, |t| t)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_credits))
        .routes(routes!(list_ledger))
}
