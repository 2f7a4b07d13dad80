//! Invoices and credit notes as the dashboard and the console serve them: the document as the
//! invoices API renders it (HTML or PDF), with its own content policy and, for a PDF, a download
//! name. Who may see which document is the caller's check.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{ApiClient, PageError, PageResult};
use crate::invoices::InvoiceDocument;

/// `?format=html|pdf` of a document's address.
#[derive(Deserialize)]
pub struct FormatParam {
    pub format: Option<String>,
}

/// Document numbers are letters, digits and dashes (`INV-2026-000001`); anything else names none.
pub fn valid_number(number: &str) -> bool {
    !number.is_empty() && number.len() <= 64 && number.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The document `number` as the invoices API describes it (a number that cannot be one is none).
pub async fn fetch(api: &ApiClient, actor: &str, number: &str) -> PageResult<InvoiceDocument> {
    if !valid_number(number) {
        return Err(PageError::NotFound(format!(
            "There is no invoice or credit note {number}."
        )));
    }
    api.json(
        actor,
        Method::GET,
        &format!("/v1/invoices/{number}?format=json"),
        None,
    )
    .await
}

/// The document `number` as `format` (`pdf`, else HTML), from the invoices API.
pub async fn serve(api: &ApiClient, actor: &str, number: &str, format: &str) -> PageResult<Response> {
    let format = if format == "pdf" { "pdf" } else { "html" };
    let resp = api
        .send(
            actor,
            Method::GET,
            &format!("/v1/invoices/{number}?format={format}"),
            None,
        )
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_letters_digits_and_dashes_name_a_document() {
        assert!(valid_number("INV-2026-000001"));
        for bad in ["", "../etc", "INV 1", "INV-1?format=pdf", &"X".repeat(65)] {
            assert!(!valid_number(bad), "{bad:?}");
        }
    }
}
