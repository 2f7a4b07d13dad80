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
use crate::state::AppState;
use crate::{money, sync};

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

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
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
    /// `balance.low` is sent when the balance goes below this many credits; null: no alert.
    #[serde(serialize_with = "money::ser_opt")]
    #[schema(value_type = Option<String>)]
    pub low_balance_threshold: Option<Decimal>,
    /// Where the account's events are POSTed; null: none.
    pub webhook_url: Option<String>,
    /// `reserve`: a billed request is admitted only if the most it may cost (its ceiling) fits the
    /// spendable balance, and holds it while it runs; `balance`: admitted while the balance is
    /// above zero.
    #[schema(example = "reserve")]
    pub spend_control: String,
}

/// An account after a change; `webhook_secret` only in the answer that set a webhook URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatchedAccount {
    #[serde(flatten)]
    pub account: Account,
    /// The secret that signs the account's events (`x-claudestore-signature`), shown only here:
    /// keep it. Setting the URL again gives a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub name: String,
    pub email: String,
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    #[serde(default)]
    pub status: Option<AccountStatus>,
    /// Credits; `null` removes the alert.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>, nullable)]
    pub low_balance_threshold: Option<Option<money::Amount>>,
    /// An http(s) URL for the account's events (no loopback, link-local or private address unless
    /// the operator allows them); `null` removes it. The answer that sets it carries the signing
    /// secret, once.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>, nullable)]
    pub webhook_url: Option<Option<String>>,
    /// `reserve` or `balance` (see [`Account::spend_control`]).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "balance")]
    pub spend_control: Option<SpendControlField>,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpendControlField {
    Reserve,
    Balance,
}

impl SpendControlField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Balance => "balance",
        }
    }
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
        "SELECT a.id, a.name, a.email, a.status, l.balance, a.created_at, a.low_balance_threshold, a.webhook_url, a.spend_control
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
    sqlx::query("INSERT INTO accounts (id, name, email, spend_control) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(&name)
        .bind(&email)
        .bind(state.config.spend_control.as_str())
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
        "SELECT a.id, a.name, a.email, a.status, l.balance, a.created_at, a.low_balance_threshold, a.webhook_url, a.spend_control
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

/// Suspends or reactivates an account and sets its spend control (gateways see both in their
/// next snapshot), and sets its low-balance alert and webhook.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "accounts", request_body = AccountPatch,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 200, body = PatchedAccount), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn patch_account(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AccountPatch>,
) -> ApiResult<Json<PatchedAccount>> {
    let reason = body
        .reason
        .as_deref()
        .map(|r| check_text("reason", r, 1000))
        .transpose()?;
    if body.status.is_none()
        && body.low_balance_threshold.is_none()
        && body.webhook_url.is_none()
        && body.spend_control.is_none()
    {
        return Err(ApiError::invalid(
            "nothing to change: give status, spend_control, low_balance_threshold or webhook_url",
        ));
    }
    let threshold = match body.low_balance_threshold {
        Some(Some(t)) if t.0.is_sign_negative() => {
            return Err(ApiError::invalid(
                "low_balance_threshold must be 0 or more credits",
            ))
        }
        other => other.map(|t| t.map(|t| t.0)),
    };
    let url = match body.webhook_url {
        Some(Some(u)) => Some(Some(
            crate::webhooks::target::check_url(u.trim(), state.config.webhooks.allow_private)?.to_string(),
        )),
        other => other,
    };
    let mut tx = state.pool.begin().await?;
    // Ledger row first: transfers lock it before the sync row too.
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM ledger_accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    locked.ok_or_else(|| ApiError::not_found(format!("account {id} not found")))?;
    let (previous, previous_control): (String, String) =
        sqlx::query_as("SELECT status, spend_control FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let status = body.status.filter(|s| previous != s.as_str());
    let control = body.spend_control.filter(|c| previous_control != c.as_str());
    if status.is_some() || control.is_some() {
        sqlx::query(
            "UPDATE accounts SET status = COALESCE($2, status), spend_control = COALESCE($3, spend_control)
             WHERE id = $1",
        )
        .bind(id)
        .bind(status.map(AccountStatus::as_str))
        .bind(control.map(SpendControlField::as_str))
        .execute(&mut *tx)
        .await?;
        if let Some(status) = status {
            let audit = Audit {
                actor: &admin.actor,
                action: "account.status",
                target: format!("account:{id}"),
                reason: reason.as_deref(),
                details: serde_json::json!({ "from": previous, "to": status.as_str() }),
            };
            audit::record(&mut tx, audit).await?;
        }
        if let Some(control) = control {
            let audit = Audit {
                actor: &admin.actor,
                action: "account.spend_control",
                target: format!("account:{id}"),
                reason: reason.as_deref(),
                details: serde_json::json!({ "from": previous_control, "to": control.as_str() }),
            };
            audit::record(&mut tx, audit).await?;
        }
        let version = sync::bump(&mut tx).await?;
        sqlx::query("UPDATE ledger_accounts SET sync_version = $2 WHERE id = $1")
            .bind(id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    let mut webhook_secret = None;
    if threshold.is_some() || url.is_some() {
        let version: i32 = sqlx::query_scalar(
            "UPDATE accounts SET
                low_balance_threshold = CASE WHEN $2 THEN $3 ELSE low_balance_threshold END,
                low_balance_alerted = CASE WHEN $2 THEN false ELSE low_balance_alerted END,
                webhook_url = CASE WHEN $4 THEN $5 ELSE webhook_url END,
                webhook_secret_version = webhook_secret_version + CASE WHEN $5 IS NOT NULL THEN 1 ELSE 0 END
             WHERE id = $1 RETURNING webhook_secret_version",
        )
        .bind(id)
        .bind(threshold.is_some())
        .bind(threshold.flatten())
        .bind(url.is_some())
        .bind(url.clone().flatten())
        .fetch_one(&mut *tx)
        .await?;
        if url.as_ref().is_some_and(Option::is_some) {
            webhook_secret = Some(crate::webhooks::target::secret_for(
                &state.config.webhooks.signing_key,
                id,
                version,
            ));
        }
        let audit = Audit {
            actor: &admin.actor,
            action: "account.alerts",
            target: format!("account:{id}"),
            reason: reason.as_deref(),
            details: serde_json::json!({
                "low_balance_threshold": threshold.map(|t| t.map(money::plain)),
                "webhook_url": url,
            }),
        };
        audit::record(&mut tx, audit).await?;
        // A threshold set above the balance is a crossing too.
        crate::webhooks::events::balances_changed(&mut tx, &[id], chrono::Utc::now()).await?;
    }
    let account = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(PatchedAccount {
        account,
        webhook_secret,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account, patch_account))
}
