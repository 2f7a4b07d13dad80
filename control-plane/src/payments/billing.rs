//! The buyer's billing details printed on invoices (`PUT`/`GET /v1/accounts/{id}/billing`, admin)
//! and the account's flags (refunds, disputes, chargebacks) shown with them.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::check_text;
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingDetails {
    /// The legal name on invoices (the account's name when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// Postal address; lines separated by newlines.
    #[serde(default)]
    pub address: Option<String>,
    /// VAT or other tax id.
    #[serde(default)]
    pub tax_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AccountFlag {
    pub reason: String,
    pub purchase_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Billing {
    pub account_id: Uuid,
    pub name: Option<String>,
    pub address: Option<String>,
    pub tax_id: Option<String>,
    /// Why the account needs a look (refunds, disputes, chargebacks), newest first.
    pub flags: Vec<AccountFlag>,
}

fn check_address(value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 500 {
        return Err(ApiError::invalid("address must be 1 to 500 characters"));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid(
            "address must not contain control characters other than newlines",
        ));
    }
    Ok(v.to_owned())
}

async fn load(conn: &mut PgConnection, account_id: Uuid) -> ApiResult<Billing> {
    crate::accounts::fetch(conn, account_id).await?;
    let row: Option<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT name, address, tax_id FROM billing_details WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (name, address, tax_id) = row.unwrap_or_default();
    let flags: Vec<AccountFlag> = sqlx::query_as(
        "SELECT reason, purchase_id, created_at FROM account_flags WHERE account_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(account_id)
    .fetch_all(conn)
    .await?;
    Ok(Billing {
        account_id,
        name,
        address,
        tax_id,
        flags,
    })
}

/// The account's billing details and flags.
#[utoipa::path(get, path = "/v1/accounts/{id}/billing", tag = "payments",
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Billing), (status = 404, body = ErrorBody)))]
async fn get_billing(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
) -> ApiResult<Json<Billing>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(load(&mut conn, account_id).await?))
}

/// Sets the billing details for invoices issued from now on (issued invoices never change).
#[utoipa::path(put, path = "/v1/accounts/{id}/billing", tag = "payments", request_body = BillingDetails,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Billing), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_billing(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BillingDetails>,
) -> ApiResult<Json<Billing>> {
    let name = body
        .name
        .as_deref()
        .map(|n| check_text("name", n, 200))
        .transpose()?;
    let address = body.address.as_deref().map(check_address).transpose()?;
    let tax_id = body
        .tax_id
        .as_deref()
        .map(|t| check_text("tax_id", t, 64))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    crate::accounts::fetch(&mut tx, account_id).await?;
    sqlx::query(
        "INSERT INTO billing_details (account_id, name, address, tax_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id) DO UPDATE SET name = $2, address = $3, tax_id = $4, updated_at = now()",
    )
    .bind(account_id)
    .bind(&name)
    .bind(&address)
    .bind(&tax_id)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        Audit {
            actor: &admin.actor,
            action: "billing.update",
            target: format!("account:{account_id}"),
            reason: None,
            details: json!({ "name": name, "address": address, "tax_id": tax_id }),
        },
    )
    .await?;
    let billing = load(&mut tx, account_id).await?;
    tx.commit().await?;
    Ok(Json(billing))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_billing, put_billing))
}
