//! The console's purchases: every purchase with its state (filter by state), Telegram sales made
//! for an account, confirming one, refunding a paid one. All through the payments API.

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::html::{csrf_field, page};
use super::nav;
use super::session::{AdminSession, Posted};
use super::{ApiClient, PageResult};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct PurchaseRow {
    id: Uuid,
    account_id: Uuid,
    account_name: String,
    status: String,
    plan_name: String,
    amount_usd: rust_decimal::Decimal,
    method: String,
    reference: Option<String>,
    invoice_number: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
struct StatusFilter {
    status: Option<String>,
}

async fn admin_purchases(
    session: AdminSession,
    State(state): State<AppState>,
    Query(f): Query<StatusFilter>,
) -> PageResult<Html<String>> {
    let status = f.status.filter(|s| !s.is_empty());
    let rows: Vec<PurchaseRow> = sqlx::query_as(
        "SELECT p.id, p.account_id, a.name AS account_name, p.status, p.plan_name, p.amount_usd, p.method,
            p.reference, p.invoice_number, p.created_at
         FROM purchases p JOIN accounts a ON a.id = p.account_id
         WHERE $1::text IS NULL OR p.status = $1 ORDER BY p.created_at DESC, p.id DESC LIMIT 200",
    )
    .bind(&status)
    .fetch_all(&state.pool)
    .await?;
    let csrf = &session.csrf;
    let body = html! {
        form.row method="get" action="/admin/purchases" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in ["pending", "held", "paid", "refunded", "expired", "failed"] {
                    option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                }
            } }
            button.secondary type="submit" { "Filter" }
        }
        table #admin-purchases {
            thead { tr { th { "Created" } th { "Account" } th { "Plan" } th.num { "Price" } th { "Method" } th { "Status" } th { "Invoice" } th {} } }
            tbody {
                @for p in &rows {
                    tr {
                        td { (super::html::when(p.created_at)) }
                        td { a href={ "/admin/accounts/" (p.account_id) } { (p.account_name) } }
                        td { (p.plan_name) } td.num { (super::html::usd(p.amount_usd)) }
                        td { (p.method) @if let Some(r) = &p.reference { br; span.muted { (r) } } }
                        td class={ "status-" (p.status) } { (p.status) }
                        td { (p.invoice_number.as_deref().unwrap_or("")) }
                        td {
                            @if p.method == "telegram" && (p.status == "pending" || p.status == "held") {
                                form.row method="post" action={ "/admin/purchases/" (p.id) "/confirm" } {
                                    (csrf_field(csrf))
                                    input type="text" name="reference" placeholder="payment reference" maxlength="200";
                                    button type="submit" { "Confirm paid" }
                                }
                            }
                            @if p.status == "paid" {
                                form.row method="post" action={ "/admin/purchases/" (p.id) "/refund" }
                                    data-confirm="Refund this purchase? Its credits are taken back." {
                                    (csrf_field(csrf))
                                    input type="text" name="reason" placeholder="reason" required maxlength="1000";
                                    button.danger type="submit" { "Refund" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(page("Purchases", nav::admin(&session), body).into_string()))
}

/// The console's form to record a Telegram sale for an account (shown on the account page).
pub fn telegram_sale_form(csrf: &str, account_id: Uuid, plans: &[(Uuid, String)]) -> Markup {
    html! {
        form.row.card method="post" action={ "/admin/accounts/" (account_id) "/telegram-sale" } {
            (csrf_field(csrf))
            label { "Plan" select name="plan_id" { @for (id, name) in plans { option value=(id) { (name) } } } }
            label { "Chat or order reference" input type="text" name="reference" required maxlength="200"; }
            button.secondary type="submit" { "Record Telegram sale" }
        }
    }
}

#[derive(Deserialize)]
struct SaleForm {
    plan_id: Uuid,
    #[serde(default)]
    reference: String,
}

async fn telegram_sale(
    Extension(api): Extension<ApiClient>,
    Path(account_id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, SaleForm>,
) -> PageResult<Redirect> {
    let body = json!({ "plan_id": form.plan_id, "method": "telegram", "reference": form.reference });
    api.call(
        &session.actor(),
        Method::POST,
        &format!("/v1/accounts/{account_id}/purchases"),
        Some(&body),
    )
    .await?;
    Ok(Redirect::to("/admin/purchases?status=pending"))
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    reference: String,
}

async fn confirm(
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, ConfirmForm>,
) -> PageResult<Redirect> {
    let reference = form.reference.trim();
    let body = if reference.is_empty() {
        json!({})
    } else {
        json!({ "reference": reference })
    };
    api.call(
        &session.actor(),
        Method::POST,
        &format!("/v1/purchases/{id}/confirm"),
        Some(&body),
    )
    .await?;
    Ok(Redirect::to("/admin/purchases"))
}

#[derive(Deserialize)]
struct RefundForm {
    #[serde(default)]
    reason: String,
}

async fn refund(
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, RefundForm>,
) -> PageResult<Redirect> {
    let body = json!({ "reason": form.reason });
    api.call(
        &session.actor(),
        Method::POST,
        &format!("/v1/purchases/{id}/refund"),
        Some(&body),
    )
    .await?;
    Ok(Redirect::to("/admin/purchases"))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/purchases", get(admin_purchases))
        .route("/admin/accounts/{id}/telegram-sale", post(telegram_sale))
        .route("/admin/purchases/{id}/confirm", post(confirm))
        .route("/admin/purchases/{id}/refund", post(refund))
}
