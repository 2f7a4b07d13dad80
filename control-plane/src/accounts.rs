//! Customer accounts: create, get, list, suspend and reactivate (admin).

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

use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{paginate, Page, PageParams};
use crate::{money, sync, AppState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Current balance in credits (may be negative after usage in flight).
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "1000")]
    pub balance: Decimal,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub status: AccountStatus,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

pub fn check_text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_owned())
}

fn check_email(email: &str) -> Result<String, ApiError> {
    let e = check_text("email", email, 254)?;
    let valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !e.contains(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(e)
    } else {
        Err(ApiError::invalid(format!("email {e:?} is not an email address")))
    }
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> ApiResult<Account> {
    sqlx::query_as(
        "SELECT a.id, a.name, a.email, a.status, l.balance, a.created_at
         FROM accounts a JOIN ledger_accounts l ON l.id = a.id WHERE a.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("account {id} not found")))
}

/// Creates a customer account with a zero balance.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = NewAccount,
    security(("admin_token" = [])),
    responses((status = 201, body = Account), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_account(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewAccount>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    let name = check_text("name", &body.name, 200)?;
    let email = check_email(&body.email)?;
    let id = Uuid::new_v4();
    let mut tx = state.pool.begin().await?;
    sqlx::query("INSERT INTO accounts (id, name, email) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&name)
        .bind(&email)
        .execute(&mut *tx)
        .await?;
    let audit = Audit {
        actor: &admin.actor,
        action: "account.create",
        target: format!("account:{id}"),
        reason: None,
        details: serde_json::json!({ "name": name, "email": email }),
    };
    audit::record(&mut tx, audit).await?;
    let version = sync::bump(&mut tx).await?;
    sqlx::query("INSERT INTO ledger_accounts (id, account_id, sync_version) VALUES ($1, $1, $2)")
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    let account = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// Lists accounts, newest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<Account>), (status = 401, body = ErrorBody)))]
async fn list_accounts(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Account>>> {
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.after()?;
    let rows: Vec<Account> = sqlx::query_as(
        "SELECT a.id, a.name, a.email, a.status, l.balance, a.created_at
         FROM accounts a JOIN ledger_accounts l ON l.id = a.id
         WHERE ($1::timestamptz IS NULL OR (a.created_at, a.id) < ($1, $2))
         ORDER BY a.created_at DESC, a.id DESC LIMIT $3",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(paginate(rows, limit, |a| (a.created_at, a.id), |a| a)))
}

/// One account with its current balance.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Account), (status = 404, body = ErrorBody)))]
async fn get_account(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Account>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(fetch(&mut conn, id).await?))
}

/// Suspends or reactivates an account; gateways see the change in their next snapshot.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "accounts", request_body = AccountPatch,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Account), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn patch_account(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AccountPatch>,
) -> ApiResult<Json<Account>> {
    let reason = body
        .reason
        .as_deref()
        .map(|r| check_text("reason", r, 1000))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    // Ledger row first: transfers lock it before the sync row too.
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM ledger_accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    locked.ok_or_else(|| ApiError::not_found(format!("account {id} not found")))?;
    let previous: String = sqlx::query_scalar("SELECT status FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if previous != body.status.as_str() {
        sqlx::query("UPDATE accounts SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(body.status.as_str())
            .execute(&mut *tx)
            .await?;
        let audit = Audit {
            actor: &admin.actor,
            action: "account.status",
            target: format!("account:{id}"),
            reason: reason.as_deref(),
            details: serde_json::json!({ "from": previous, "to": body.status.as_str() }),
        };
        audit::record(&mut tx, audit).await?;
        let version = sync::bump(&mut tx).await?;
        sqlx::query("UPDATE ledger_accounts SET sync_version = $2 WHERE id = $1")
            .bind(id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    let account = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(account))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, patch_account))
}
