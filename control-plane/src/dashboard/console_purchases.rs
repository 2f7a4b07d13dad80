//! The console's purchases: every purchase with its state (filter by state) and its invoice and
//! credit note; Telegram sales made for an account; confirming one as paid (with the payment's
//! reference), rejecting a pending one (with a reason), refunding a paid one. All through the
//! payments API, each form posted once with its result shown once.

use axum::extract::{Path, Query, State};
use axum::http::{Method, Uri};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::console_page::render;
use super::form::{self, Done, Submitted};
use super::html::{credits, usd, when};
use super::session::AdminSession;
use super::{ApiClient, PageError, PageResult};
use crate::payments::model::Purchase;
use crate::state::AppState;

const STATES: [&str; 6] = ["pending", "held", "paid", "refunded", "expired", "failed"];

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
    credit_note_number: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl PurchaseRow {
    /// A Telegram sale waiting for its payment, or any purchase held for review.
    fn confirmable(&self) -> bool {
        (self.method == "telegram" && self.status == "pending") || self.status == "held"
    }
}

#[derive(Deserialize)]
struct StatusFilter {
    status: Option<String>,
}

/// A document's number with its console view, and the document as HTML and as PDF.
pub fn document_links(number: &str) -> Markup {
    html! {
        a.doc href={ "/admin/invoices/" (number) } { (number) }
        " (" a href={ "/admin/invoices/" (number) "?format=html" } { "HTML" }
        ", " a.pdf href={ "/admin/invoices/" (number) "?format=pdf" } download { "PDF" } ")"
    }
}

async fn admin_purchases(
    session: AdminSession,
    State(state): State<AppState>,
    Query(f): Query<StatusFilter>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let done = form::outcome(&state, session.token(), &uri).await?;
    let status = f.status.filter(|s| STATES.contains(&s.as_str()));
    let rows: Vec<PurchaseRow> = sqlx::query_as(
        "SELECT p.id, p.account_id, a.name AS account_name, p.status, p.plan_name, p.amount_usd, p.method,
            p.reference, p.invoice_number, p.credit_note_number, p.created_at
         FROM purchases p JOIN accounts a ON a.id = p.account_id
         WHERE $1::text IS NULL OR p.status = $1 ORDER BY p.created_at DESC, p.id DESC LIMIT 200",
    )
    .bind(&status)
    .fetch_all(&state.pool)
    .await?;
    let csrf = &session.csrf;
    let body = html! {
        (form::notice(done.as_ref()))
        form.row method="get" action="/admin/purchases" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in STATES {
                    option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                }
            } }
            button.secondary type="submit" { "Filter" }
        }
        div.table-wrap {
            table #admin-purchases {
                thead { tr { th.wide { "Created" } th { "Account" } th { "Plan" } th.num { "Price" } th { "Method" } th { "Status" } th { "Invoice and credit note" } th { "Action" } } }
                tbody {
                    @for p in &rows {
                        tr id={ "purchase-" (p.id) } {
                            td.wide { (when(p.created_at)) }
                            td { a href={ "/admin/accounts/" (p.account_id) } { (p.account_name) } }
                            td { (p.plan_name) } td.num { (usd(p.amount_usd)) }
                            td { (p.method) @if let Some(r) = &p.reference { br; span.muted { (r) } } }
                            td class={ "status-" (p.status) } { (p.status) }
                            td.documents {
                                @if let Some(n) = &p.invoice_number { "Invoice " (document_links(n)) }
                                @if let Some(n) = &p.credit_note_number { br; "Credit note " (document_links(n)) }
                            }
                            td.purchase-actions {
                                @if p.confirmable() {
                                    form.row.confirm method="post" action={ "/admin/purchases/" (p.id) "/confirm" } {
                                        (form::fields(csrf))
                                        label { "Payment reference" input type="text" name="reference" required maxlength="200"; }
                                        button type="submit" { "Confirm paid" }
                                    }
                                    form.row.reject method="post" action={ "/admin/purchases/" (p.id) "/reject" }
                                        data-confirm="Reject this sale? Nothing is credited and it cannot be confirmed afterwards." {
                                        (form::fields(csrf))
                                        label { "Reason" input type="text" name="reason" required maxlength="1000"; }
                                        button.danger type="submit" { "Reject" }
                                    }
                                }
                                @if p.status == "paid" {
                                    form.row.refund method="post" action={ "/admin/purchases/" (p.id) "/refund" }
                                        data-confirm="Refund this purchase? Its credits are taken back." {
                                        (form::fields(csrf))
                                        label { "Reason" input type="text" name="reason" required maxlength="1000"; }
                                        button.danger type="submit" { "Refund" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No purchase here." } }
    };
    Ok(render(&state, &session, "Purchases", body))
}

/// The console's form to record a Telegram sale for an account (shown on the account page).
pub fn telegram_sale_form(csrf: &str, account_id: Uuid, plans: &[(Uuid, String)]) -> Markup {
    html! {
        form.row.card #telegram-sale method="post" action={ "/admin/accounts/" (account_id) "/telegram-sale" } {
            (form::fields(csrf))
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
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(account_id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, SaleForm>,
) -> PageResult<Response> {
    let body = json!({ "plan_id": form.plan_id, "method": "telegram", "reference": form.reference.trim() });
    let recorded = api
        .json::<Purchase>(
            &session.actor(),
            Method::POST,
            &format!("/v1/accounts/{account_id}/purchases"),
            Some(&body),
        )
        .await
        .map(|p| {
            Done::to(
                "/admin/purchases?status=pending",
                format!(
                    "Telegram sale recorded: {} ({} credits for {}), pending until confirmed as paid.",
                    p.plan_name,
                    credits(p.credits),
                    usd(p.amount_usd)
                ),
            )
        });
    claim.finish(&state, recorded).await
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    reference: String,
}

async fn confirm(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, ConfirmForm>,
) -> PageResult<Response> {
    let confirmed = async {
        let reference = form.reference.trim();
        if reference.is_empty() {
            return Err(PageError::BadRequest(
                "Enter the payment's reference (the Telegram order or transaction) to confirm a sale as paid."
                    .into(),
            ));
        }
        let (before, p): (bool, Purchase) = api
            .json_replayed(
                &session.actor(),
                Method::POST,
                &format!("/v1/purchases/{id}/confirm"),
                Some(&json!({ "reference": reference })),
            )
            .await?;
        if before {
            return Ok(Done::to(
                "/admin/purchases",
                "This purchase was confirmed before (from another page or tab): nothing was credited again and the reference typed now was not recorded.",
            ));
        }
        let invoice = p
            .invoice_number
            .as_deref()
            .map(|n| format!(", invoice {n}"))
            .unwrap_or_default();
        Ok(Done::to(
            "/admin/purchases",
            format!(
                "Purchase confirmed as paid (reference {reference}): {} credits credited{invoice}.",
                credits(p.credits)
            ),
        ))
    }
    .await;
    claim.finish(&state, confirmed).await
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
}

/// Rejects a pending sale or a held purchase, or refunds a paid one: both need a reason.
async fn decide(
    api: &ApiClient,
    session: &AdminSession,
    id: Uuid,
    action: &str,
    reason: &str,
) -> PageResult<Done> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(PageError::BadRequest(format!(
            "Give a reason to {action} the purchase: it is kept on the purchase and in the audit log."
        )));
    }
    let (before, p): (bool, Purchase) = api
        .json_replayed(
            &session.actor(),
            Method::POST,
            &format!("/v1/purchases/{id}/{action}"),
            Some(&json!({ "reason": reason })),
        )
        .await?;
    let said = match action {
        _ if before => format!(
            "This purchase was {action}ed before (from another page or tab): nothing changed now and the reason typed now was not recorded."
        ),
        "reject" => format!("Purchase rejected ({reason}): nothing was credited."),
        _ => {
            let note = p
                .credit_note_number
                .as_deref()
                .map(|n| format!(", credit note {n}"))
                .unwrap_or_default();
            format!(
                "Purchase refunded ({reason}): {} credits taken back{note}.",
                credits(p.credits)
            )
        }
    };
    Ok(Done::to("/admin/purchases", said))
}

async fn reject(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, ReasonForm>,
) -> PageResult<Response> {
    let rejected = decide(&api, &session, id, "reject", &form.reason).await;
    claim.finish(&state, rejected).await
}

async fn refund(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, ReasonForm>,
) -> PageResult<Response> {
    let refunded = decide(&api, &session, id, "refund", &form.reason).await;
    claim.finish(&state, refunded).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/purchases", get(admin_purchases))
        .route("/admin/accounts/{id}/telegram-sale", post(telegram_sale))
        .route("/admin/purchases/{id}/confirm", post(confirm))
        .route("/admin/purchases/{id}/reject", post(reject))
        .route("/admin/purchases/{id}/refund", post(refund))
}
