//! The console's view of any invoice or credit note: a page with what it says (the parties, the
//! lines, the totals, the payment), and the document itself as HTML or PDF, served from the
//! invoices API as the customer's invoice page serves their own.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};

use super::console_page::render;
use super::documents::{self, FormatParam};
use super::html::when;
use super::session::AdminSession;
use super::{ApiClient, PageResult};
use crate::invoices::{InvoiceDocument, Party};
use crate::state::AppState;

fn party(p: &Party) -> Markup {
    html! {
        div { strong { (p.name) } }
        @if let Some(e) = &p.email { div { (e) } }
        @if let Some(a) = &p.address { @for line in a.lines() { div { (line) } } }
        @if let Some(t) = &p.tax_id { div { "Tax id " (t) } }
        @if let Some(id) = p.account_id { div { a href={ "/admin/accounts/" (id) } { "Account" } } }
    }
}

async fn invoice(
    session: AdminSession,
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(number): Path<String>,
    Query(q): Query<FormatParam>,
) -> PageResult<Response> {
    let doc = documents::fetch(&api, &session.actor(), &number).await?;
    match q.format.as_deref() {
        Some(format @ ("pdf" | "html")) => {
            documents::serve(&api, &session.actor(), &doc.number, format).await
        }
        _ => Ok(document_page(&state, &session, &doc).into_response()),
    }
}

fn document_page(
    state: &AppState,
    session: &AdminSession,
    doc: &InvoiceDocument,
) -> axum::response::Html<String> {
    let kind = if doc.kind == "credit_note" {
        "Credit note"
    } else {
        "Invoice"
    };
    let n = &doc.number;
    let body = html! {
        p.actions #document-links {
            a.button href={ "/admin/invoices/" (n) "?format=html" } { "Open as HTML" }
            a.button.secondary.pdf href={ "/admin/invoices/" (n) "?format=pdf" } download { "Download PDF" }
            a href="/admin/purchases" { "Purchases" }
        }
        div.card #document {
            p { "Issued " (when(doc.issued_at))
                @if let Some(c) = &doc.corrects { " · corrects " a href={ "/admin/invoices/" (c) } { (c) } } }
            div.cards {
                div { div.muted { "Seller" } (party(&doc.seller)) }
                div { div.muted { "Buyer" } (party(&doc.buyer)) }
            }
        }
        div.table-wrap {
            table #document-lines {
                thead { tr { th { "Description" } th.num { "Credits" } th.num.wide { "Unit price (USD)" } th.num { "Amount (USD)" } } }
                tbody {
                    @for l in &doc.lines {
                        tr { td { (l.description) } td.num { (l.credits) } td.num.wide { (l.unit_price_usd) } td.num { (l.amount_usd) } }
                    }
                }
            }
        }
        div.table-wrap {
            table #document-totals {
                tbody {
                    tr { th { "Subtotal" } td.num { (doc.subtotal_usd) " " (doc.currency) } }
                    tr { th { "Tax (rate " (doc.tax_rate) ")" } td.num { (doc.tax_usd) " " (doc.currency) } }
                    tr { th { "Total" } td.num { strong { (doc.total_usd) " " (doc.currency) } } }
                }
            }
        }
        p { "Paid by " (doc.payment_method)
            @if let Some(r) = &doc.payment_reference { ", reference " span.mono { (r) } } }
        @if let Some(note) = &doc.note { p.muted { (note) } }
    };
    render(state, session, &format!("{kind} {n}"), body)
}

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/invoices/{number}", get(invoice))
}
