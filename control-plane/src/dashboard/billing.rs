//! Buying credits and the papers that follow: the customer's plan choice (card -> the processor's
//! checkout page; crypto -> address, exact amount, network and a QR code drawn here), the purchase
//! page whose status follows the processor, purchases with their invoices (HTML, PDF), and the
//! console's purchases (confirm Telegram sales, refund). All through the payments API.

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::documents::{self, FormatParam};
use super::form::{self, Done, Submitted};
use super::html::credits;
use super::session::CustomerSession;
use super::{ApiClient, PageError, PageResult};
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

/// A plan's price per credit, and what it saves against the dearest plan's (the list price).
fn per_credit(price_usd: Decimal, credits: Decimal) -> Option<Decimal> {
    (credits > Decimal::ZERO).then(|| price_usd / credits)
}

/// The saving of a price per credit against the list price, in whole percent (rounded down, so
/// that a saving is never overstated).
fn saving_percent(per_credit: Decimal, list: Decimal) -> Option<Decimal> {
    if list <= Decimal::ZERO || per_credit >= list {
        return None;
    }
    Some(((list - per_credit) / list * Decimal::from(100)).floor())
}

fn contact_link(c: &crate::config::Contact) -> Markup {
    html! { a href=(c.href) rel="noreferrer" { (c.label) } }
}

async fn buy(
    session: CustomerSession,
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
) -> PageResult<Html<String>> {
    let plans: PlanList = api.json(&session.actor(), Method::GET, "/v1/plans", None).await?;
    let path = format!("/v1/accounts/{}/purchases?limit=50", session.account_id);
    let recent: Page<Purchase> = api.json(&session.actor(), Method::GET, &path, None).await?;
    let pending: Vec<&Purchase> = recent.data.iter().filter(|p| p.status == "pending").collect();
    let payments = &state.config.payments;
    let card = payments.stripe_secret_key.is_some();
    let crypto = payments.nowpayments_api_key.is_some();
    let telegram = payments.telegram_contact.as_ref();
    let support = payments.support_contact.as_ref();
    let active: Vec<_> = plans.data.iter().filter(|p| p.active).collect();
    let list = active
        .iter()
        .filter_map(|p| per_credit(p.price_usd, p.credits))
        .max()
        .unwrap_or_else(money::credit_usd);
    let csrf = &session.csrf;
    let body = html! {
        @if !pending.is_empty() {
            div.card #pending {
                h2 { "Waiting for payment" }
                @for p in &pending {
                    p { (p.plan_name) ": " (credits(p.credits)) " credits for " (super::html::usd(p.amount_usd)) " by " (p.method)
                        ", started " (super::html::when(p.created_at)) ". "
                        a.button href={ "/dashboard/purchases/" (p.id) } { "Continue" } }
                }
            }
        }
        ul.methods #methods {
            li class=(if card { "on" } else { "off" }) { @if card { "Card: pay on the card processor's page." } @else { "Card payments are not available here." } }
            li class=(if crypto { "on" } else { "off" }) { @if crypto { "Crypto: BTC, ETH, USDT or USDC, to an address shown on the next page." } @else { "Crypto payments are not available here." } }
            li class=(if telegram.is_some() { "on" } else { "off" }) {
                @match telegram {
                    Some(c) => { "Telegram: message " (contact_link(c)) " with the plan and your email; your credits arrive once they confirm the payment." }
                    None => { "Telegram sales are not available here." }
                }
            }
        }
        @if !card && !crypto && telegram.is_none() {
            p.notice.error #no-methods {
                "No way of paying is set up here yet. "
                @match support { Some(c) => { "Contact us at " (contact_link(c)) " to buy credits." } None => { "Contact the operator of this service to buy credits." } }
            }
        }
        div.plans {
            @for plan in &active {
                @let each = per_credit(plan.price_usd, plan.credits);
                div.card.plan {
                    h2 { (plan.name) }
                    div.price { (super::html::usd(plan.price_usd)) }
                    div { strong { (credits(plan.credits)) } " credits" }
                    @if let Some(each) = each {
                        div.muted.per-credit { "$" (money::plain(each.round_dp(6))) " a credit" }
                        @if let Some(s) = saving_percent(each, list) { div.saving { "Save " (s) "%" } }
                    }
                    @if card {
                        form method="post" action="/dashboard/buy" {
                            (form::fields(csrf))
                            input type="hidden" name="plan_id" value=(plan.id);
                            input type="hidden" name="method" value="card";
                            button type="submit" { "Pay by card" }
                        }
                    }
                    @if crypto {
                        form.row method="post" action="/dashboard/buy" {
                            (form::fields(csrf))
                            input type="hidden" name="plan_id" value=(plan.id);
                            input type="hidden" name="method" value="crypto";
                            select name="currency" aria-label="Cryptocurrency" {
                                @for (code, label) in CRYPTO { option value=(code) { (label) } }
                            }
                            button.secondary type="submit" { "Pay with crypto" }
                        }
                    }
                    @if let Some(c) = telegram {
                        a.button.secondary.telegram href=(c.href) rel="noreferrer" { "Buy on Telegram" }
                    }
                }
            }
        }
        @if let Some(c) = support { p.muted #support { "Questions about paying? " (contact_link(c)) } }
    };
    super::customer::render(&state, &session, "Buy credits", body).await
}

#[derive(Deserialize)]
struct BuyForm {
    plan_id: Uuid,
    method: String,
    #[serde(default)]
    currency: Option<String>,
}

async fn start_purchase(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<CustomerSession, BuyForm>,
) -> PageResult<Response> {
    let started = async {
        if form.method != "card" && form.method != "crypto" {
            return Err(PageError::BadRequest("Pay by card or with crypto.".into()));
        }
        let mut body = json!({ "plan_id": form.plan_id, "method": form.method });
        if form.method == "crypto" {
            body["currency"] = json!(form.currency);
        }
        let path = format!("/v1/accounts/{}/purchases", session.account_id);
        let purchase: Purchase = api
            .json(&session.actor(), Method::POST, &path, Some(&body))
            .await?;
        Ok(Done::to(
            format!("/dashboard/purchases/{}", purchase.id),
            "Purchase started: pay below. You can leave and come back to it from Buy credits.",
        ))
    }
    .await;
    claim.finish(&state, started).await
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
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    uri: axum::http::Uri,
) -> PageResult<Html<String>> {
    let p = own_purchase(&api, &session, id).await?;
    let standing = super::customer::standing(&state, &session).await?;
    // Read last: nothing may fail after the result is taken.
    let done = form::outcome(&state, session.token(), &uri).await?;
    let status = p.status.as_str();
    let body = html! {
        (form::notice(done.as_ref()))
        div.card #purchase data-purchase-status=(status) data-status-url={ "/dashboard/purchases/" (id) "/status" } {
            p { strong { (p.plan_name) } ": " (credits(p.credits)) " credits for " (super::html::usd(p.amount_usd)) }
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
    Ok(super::customer::page(&session, &standing, "Purchase", body))
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
    State(state): State<AppState>,
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
                        td { (p.plan_name) } td.num { (credits(p.credits)) } td.num { (super::html::usd(p.amount_usd)) }
                        td { (p.method) } td class={ "status-" (p.status) } { (p.status) }
                        td { @if let Some(n) = &p.invoice_number { (invoice_links(n)) }
                             @if let Some(n) = &p.credit_note_number { br; "Credit note " (invoice_links(n)) } }
                    }
                }
            }
        }
    };
    super::customer::render(&state, &session, "Purchases", body).await
}

/// An invoice or credit note of the session's account, as the invoices API renders it.
async fn invoice(
    session: CustomerSession,
    Extension(api): Extension<ApiClient>,
    Path(number): Path<String>,
    Query(q): Query<FormatParam>,
) -> PageResult<Response> {
    let doc = documents::fetch(&api, &session.actor(), &number).await?;
    if doc.buyer.account_id != Some(session.account_id) {
        return Err(PageError::NotFound(format!("you have no invoice {number}")));
    }
    documents::serve(
        &api,
        &session.actor(),
        &number,
        q.format.as_deref().unwrap_or("html"),
    )
    .await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/buy", get(buy).post(start_purchase))
        .route("/dashboard/purchases", get(purchases))
        .route("/dashboard/purchases/{id}", get(purchase_page))
        .route("/dashboard/purchases/{id}/status", get(purchase_status))
        .route("/dashboard/invoices/{number}", get(invoice))
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
