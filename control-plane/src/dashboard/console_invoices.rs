//! The console's view of any invoice or credit note: a page with what it says (the parties, the
//! lines, the totals, the payment), and the document itself as HTML or PDF, served from the
//! invoices API as the customer's invoice page serves their own.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::console_page::render;
use super::html::when;
use super::session::AdminSession;
use super::{ApiClient, PageError, PageResult};
use crate::invoices::{InvoiceDocument, Party};
use crate::state::AppState;

#[derive(Deserialize)]
struct FormatParam {
    format: Option<String>,
}

/// Invoice numbers are letters, digits and dashes (`INV-2026-000001`); anything else names none.
fn valid_number(number: &str) -> bool {
    !number.is_empty() && number.len() <= 64 && number.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

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
    if !valid_number(&number) {
        return Err(PageError::NotFound(format!(
            "There is no invoice or credit note {number}."
        )));
    }
    let format = match q.format.as_deref() {
        Some("pdf") => "pdf",
        Some("html") => "html",
        _ => {
            let doc: InvoiceDocument = api
                .json(
                    &session.actor(),
                    Method::GET,
                    &format!("/v1/invoices/{number}?format=json"),
                    None,
                )
                .await?;
            return Ok(document_page(&state, &session, &doc).into_response());
        }
    };
    let resp = api
        .send(
            &session.actor(),
            Method::GET,
            &format!("/v1/invoices/{number}?format={format}"),
            None,
        )
        .await?;
    if resp.status() == axum::http::StatusCode::NOT_FOUND {
        return Err(PageError::NotFound(format!(
            "There is no invoice or credit note {number}."
        )));
    }
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
    // The document is self-contained with its own inline styles; still no script, no fetches.
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    Ok(Response::from_parts(parts, body))
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

#[cfg(test)]
mod tests {
    use super::valid_number;

    #[test]
    fn only_letters_digits_and_dashes_name_a_document() {
        assert!(valid_number("INV-2026-000001") && valid_number("CN-2026-000002"));
        for bad in ["", "../etc", "INV 1", "INV-1?format=pdf", &"X".repeat(65)] {
            assert!(!valid_number(bad), "{bad}");
        }
    }
}
