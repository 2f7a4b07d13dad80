//! Buying credits and the papers that follow: the customer's plan choice (card -> the processor's
//! checkout page; crypto -> address, exact amount, network and a QR code drawn here), the purchase
//! page whose status follows the processor, purchases with their invoices (HTML, PDF), and the
//! console's purchases (confirm Telegram sales, refund). All through the payments API.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{Html, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::html::{credits, csrf_field, page};
use super::nav;
use super::session::{AdminSession, CustomerSession, Posted};
use super::{ApiClient, PageError, PageResult};
use crate::invoices::InvoiceDocument;
use crate::money;
use crate::page::Page;
use crate::payments::model::Purchase;
use crate::plans::PlanList;
use crate::state::AppState;

const CRYPTO: &[(&str, &str)] = &[
    ("BTC", "Bitcoin"),
    ("ETH", "Ether"),
    ("USDT_TRC20", "USDT on Tron (TRC-20)"),
    ("USDT_ERC20", "USDT on Ethereum (ERC-20)"),
    ("USDC_ERC20", "USDC on Ethereum (ERC-20)"),
];

/// An optional text of an answer, empty when absent.
fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

/// A QR code as inline SVG: dark modules as one path, drawn from the `qrcode` crate's matrix.
pub fn qr_svg(data: &str) -> Markup {
    let Ok(code) = qrcode::QrCode::new(data.as_bytes()) else {
        return html! {};
    };
    let width = code.width();
    let mut path = String::new();
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            path.push_str(&format!("M{},{}h1v1h-1z", i % width + 4, i / width + 4));
        }
    }
    let size = width + 8;
    html! {
        svg #qr xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (size) " " (size) } shape-rendering="crispEdges"
            role="img" aria-label="QR code of the payment address" {
            rect width=(size) height=(size) fill="#fff" {}
            path d=(path) fill="#000" {}
        }
    }
}

/// The exact amount to send, as the API writes it; empty when not a crypto purchase.
fn pay_amount(p: &Purchase) -> String {
    p.pay_amount.map(money::plain).unwrap_or_default()
}

/// What a wallet scans: BIP-21 with the amount for Bitcoin, the address for the others.
fn qr_payload(purchase: &Purchase) -> String {
    let address = text(&purchase.pay_address);
    match text(&purchase.pay_currency) {
        "BTC" => format!("bitcoin:{address}?amount={}", pay_amount(purchase)),
        _ => address.to_owned(),
    }
}

async fn buy(
    session: CustomerSession,
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
) -> PageResult<Html<String>> {
    let plans: PlanList = api.json(&session.actor(), Method::GET, "/v1/plans", None).await?;
    let card = state.config.payments.stripe_secret_key.is_some();
    let crypto = state.config.payments.nowpayments_api_key.is_some();
    let csrf = &session.csrf;
    let body = html! {
        @if !card && !crypto { p.notice.error { "Online payments are not set up here; ask support to sell you credits." } }
        div.plans {
            @for plan in plans.data.iter().filter(|p| p.active) {
                div.card.plan {
                    h2 { (plan.name) }
                    div.price { "$" (money::plain(plan.price_usd)) }
                    div.muted { (credits(plan.credits)) " credits" }
                    @if card {
                        form method="post" action="/dashboard/buy" {
                            (csrf_field(csrf))
                            input type="hidden" name="plan_id" value=(plan.id);
                            input type="hidden" name="method" value="card";
                            button type="submit" { "Pay by card" }
                        }
                    }
                    @if crypto {
                        form.row method="post" action="/dashboard/buy" {
                            (csrf_field(csrf))
                            input type="hidden" name="plan_id" value=(plan.id);
                            input type="hidden" name="method" value="crypto";
                            select name="currency" aria-label="Cryptocurrency" {
                                @for (code, label) in CRYPTO { option value=(code) { (label) } }
                            }
                            button.secondary type="submit" { "Pay with crypto" }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        page("Buy credits", nav::customer(&session), body).into_string(),
    ))
}

#[derive(Deserialize)]
struct BuyForm {
    plan_id: Uuid,
    method: String,
    #[serde(default)]
    currency: Option<String>,
}

async fn start_purchase(
    Extension(api): Extension<ApiClient>,
    Posted { session, form }: Posted<CustomerSession, BuyForm>,
) -> PageResult<Redirect> {
    if form.method != "card" && form.method != "crypto" {
        return Err(PageError::BadRequest("pay by card or with crypto".into()));
    }
    let mut body = json!({ "plan_id": form.plan_id, "method": form.method });
    if form.method == "crypto" {
        body["currency"] = json!(form.currency);
    }
    let path = format!("/v1/accounts/{}/purchases", session.account_id);
    let purchase: Purchase = api
        .json(&session.actor(), Method::POST, &path, Some(&body))
        .await?;
    Ok(Redirect::to(&format!("/dashboard/purchases/{}", purchase.id)))
}

/// The purchase, if it is the session's account's.
async fn own_purchase(api: &ApiClient, session: &CustomerSession, id: Uuid) -> PageResult<Purchase> {
    let purchase: Purchase = api
        .json(
            &session.actor(),
            Method::GET,
            &format!("/v1/purchases/{id}"),
            None,
        )
        .await?;
    if purchase.account_id != session.account_id {
        return Err(PageError::NotFound(format!("you have no purchase {id}")));
    }
    Ok(purchase)
}

fn invoice_links(number: &str) -> Markup {
    html! {
        a href={ "/dashboard/invoices/" (number) "?format=html" } { (number) }
        " (" a.pdf href={ "/dashboard/invoices/" (number) "?format=pdf" } download { "PDF" } ")"
    }
}

async fn purchase_page(
    session: CustomerSession,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
) -> PageResult<Html<String>> {
    let p = own_purchase(&api, &session, id).await?;
    let status = p.status.as_str();
    let body = html! {
        div.card #purchase data-purchase-status=(status) data-status-url={ "/dashboard/purchases/" (id) "/status" } {
            p { strong { (p.plan_name) } ": " (credits(p.credits)) " credits for $" (money::plain(p.amount_usd)) }
            p { "Status: " strong #purchase-status class={ "status-" (status) } { (status) }
                @if let Some(reason) = &p.status_reason { " " span.muted { (reason) } } }
            @if status == "pending" && p.method == "card" {
                p { a.button #checkout href=(text(&p.checkout_url)) rel="noreferrer" { "Continue to the card payment" } }
            }
            @if status == "pending" && p.method == "crypto" {
                div.cards {
                    div {
                        p { "Send exactly" }
                        p.amount #pay-amount { (pay_amount(&p)) " " (text(&p.pay_currency)) }
                        p { "on the " strong #network { (text(&p.network)) } " network to" }
                        p.secret #pay-address { (text(&p.pay_address)) }
                        p.muted { "This page updates by itself when the payment arrives (or reload it)." }
                    }
                    div.qr { (qr_svg(&qr_payload(&p))) }
                }
            }
            @if let Some(number) = &p.invoice_number {
                p #invoice { "Invoice " (invoice_links(number)) }
            }
        }
        p { a href="/dashboard/purchases" { "All purchases" } }
    };
    Ok(Html(
        page("Purchase", nav::customer(&session), body).into_string(),
    ))
}

/// What the purchase page polls for.
#[derive(Serialize)]
struct PurchaseStatus {
    status: String,
}

async fn purchase_status(
    session: CustomerSession,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
) -> PageResult<Json<PurchaseStatus>> {
    let p = own_purchase(&api, &session, id).await?;
    Ok(Json(PurchaseStatus { status: p.status }))
}

async fn purchases(
    session: CustomerSession,
    Extension(api): Extension<ApiClient>,
) -> PageResult<Html<String>> {
    let path = format!("/v1/accounts/{}/purchases?limit=200", session.account_id);
    let list: Page<Purchase> = api.json(&session.actor(), Method::GET, &path, None).await?;
    let body = html! {
        table #purchases {
            thead { tr { th { "Created" } th { "Plan" } th.num { "Credits" } th.num { "Price" } th { "Method" } th { "Status" } th { "Invoice" } } }
            tbody {
                @for p in &list.data {
                    tr {
                        td { a href={ "/dashboard/purchases/" (p.id) } { (p.created_at.format("%Y-%m-%dT%H:%M")) } }
                        td { (p.plan_name) } td.num { (credits(p.credits)) } td.num { "$" (money::plain(p.amount_usd)) }
                        td { (p.method) } td class={ "status-" (p.status) } { (p.status) }
                        td { @if let Some(n) = &p.invoice_number { (invoice_links(n)) }
                             @if let Some(n) = &p.credit_note_number { br; "Credit note " (invoice_links(n)) } }
                    }
                }
            }
        }
    };
    Ok(Html(
        page("Purchases", nav::customer(&session), body).into_string(),
    ))
}

#[derive(Deserialize)]
struct FormatParam {
    format: Option<String>,
}

/// An invoice or credit note of the session's account, as the invoices API renders it.
async fn invoice(
    session: CustomerSession,
    Extension(api): Extension<ApiClient>,
    Path(number): Path<String>,
    Query(q): Query<FormatParam>,
) -> PageResult<Response> {
    if number.is_empty()
        || number.len() > 64
        || !number.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(PageError::NotFound("no such invoice".into()));
    }
    let doc: InvoiceDocument = api
        .json(
            &session.actor(),
            Method::GET,
            &format!("/v1/invoices/{number}?format=json"),
            None,
        )
        .await?;
    if doc.buyer.account_id != Some(session.account_id) {
        return Err(PageError::NotFound(format!("you have no invoice {number}")));
    }
    let format = if q.format.as_deref() == Some("pdf") {
        "pdf"
    } else {
        "html"
    };
    let resp = api
        .send(
            &session.actor(),
            Method::GET,
            &format!("/v1/invoices/{number}?format={format}"),
            None,
        )
        .await?;
    if !resp.status().is_success() {
        return Err(PageError::Internal(format!(
            "invoice {number} answered {}",
            resp.status()
        )));
    }
    let (mut parts, body) = resp.into_parts();
    if format == "pdf" {
        let disposition = format!("attachment; filename=\"{number}.pdf\"");
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            parts.headers.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    // The invoice page is self-contained with its own inline styles; still no script, no fetches.
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    Ok(Response::from_parts(parts, body))
}

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
        .route("/dashboard/buy", get(buy).post(start_purchase))
        .route("/dashboard/purchases", get(purchases))
        .route("/dashboard/purchases/{id}", get(purchase_page))
        .route("/dashboard/purchases/{id}/status", get(purchase_status))
        .route("/dashboard/invoices/{number}", get(invoice))
        .route("/admin/purchases", get(admin_purchases))
        .route("/admin/accounts/{id}/telegram-sale", post(telegram_sale))
        .route("/admin/purchases/{id}/confirm", post(confirm))
        .route("/admin/purchases/{id}/refund", post(refund))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_code_is_an_inline_svg_path() {
        let svg = qr_svg("bitcoin:bc1qexample?amount=0.001").into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<path d=\"M"), "{svg}");
        assert!(!svg.contains("http://") || svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
