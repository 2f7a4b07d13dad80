//! `GET /v1/invoices/{number}` (JSON, HTML or PDF; the admin, or the customer whose invoice it
//! is), `GET /v1/accounts/{id}/invoices` (admin) and `GET /v1/me/invoices` (customer).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{fetch, html, pdf, InvoiceDocument};
use crate::auth::{Admin, Customer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::page::{paginate, Page, PageParams};
use crate::state::AppState;

/// The admin, or a customer by one of the account's own keys.
enum Viewer {
    Admin,
    Customer(Uuid),
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Admin::from_request_parts(parts, state).await {
            Ok(_) => Ok(Self::Admin),
            Err(admin_error) => match Customer::from_request_parts(parts, state).await {
                Ok(c) => Ok(Self::Customer(c.account_id)),
                Err(_) => Err(admin_error),
            },
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json`, `html` or `pdf`; without it, the `Accept` header decides (JSON by default).
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Html,
    Pdf,
}

fn negotiate(query: Option<&str>, headers: &HeaderMap) -> ApiResult<Format> {
    match query {
        Some("json") => return Ok(Format::Json),
        Some("html") => return Ok(Format::Html),
        Some("pdf") => return Ok(Format::Pdf),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format {other:?} is not offered: use json, html or pdf"
            )))
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // The first of the listed types we offer wins (quality values are not weighed).
    for item in accept.split(',') {
        match item.split(';').next().unwrap_or_default().trim() {
            "application/pdf" => return Ok(Format::Pdf),
            "text/html" => return Ok(Format::Html),
            "application/json" | "*/*" | "application/*" => return Ok(Format::Json),
            _ => {}
        }
    }
    Ok(Format::Json)
}

/// An invoice or credit note: JSON, HTML or PDF (by `?format=` or `Accept`).
#[utoipa::path(get, path = "/v1/invoices/{number}", tag = "invoices",
    params(("number" = String, Path, description = "e.g. INV-2026-000001 or CN-2026-000001"), FormatQuery),
    security(("admin_token" = []), ("api_key" = []), ("customer_bearer" = [])),
    responses(
        (status = 200, description = "the document", content(
            (InvoiceDocument = "application/json"),
            (String = "text/html"),
            (Vec<u8> = "application/pdf"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "no such invoice (or not the caller's)", body = ErrorBody)))]
async fn get_invoice(
    viewer: Viewer,
    State(state): State<AppState>,
    ApiPath(number): ApiPath<String>,
    ApiQuery(q): ApiQuery<FormatQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let format = negotiate(q.format.as_deref(), &headers)?;
    let mut conn = state.pool.acquire().await?;
    let doc = fetch(&mut conn, &number).await?;
    if let Viewer::Customer(account) = viewer {
        if doc.buyer.account_id != Some(account) {
            return Err(ApiError::not_found(format!("invoice {number} not found")));
        }
    }
    Ok(match format {
        Format::Json => Json(doc).into_response(),
        Format::Html => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html::render(&doc),
        )
            .into_response(),
        Format::Pdf => {
            let disposition = format!("inline; filename=\"{}.pdf\"", doc.number);
            let mut response = (
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/pdf"))],
                pdf::render(&doc),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            response
        }
    })
}

/// An invoice or credit note in a list.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvoiceSummary {
    pub number: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    pub purchase_id: Uuid,
    pub corrects: Option<String>,
    /// The document's total in USD (negative on a credit note).
    pub total_usd: String,
    pub issued_at: DateTime<Utc>,
}

/// The account's invoices and credit notes, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/invoices", tag = "invoices",
    params(("id" = Uuid, Path, description = "account id"), PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<InvoiceSummary>), (status = 404, body = ErrorBody)))]
async fn list_invoices(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<InvoiceSummary>>> {
    Ok(Json(list_for(&state, account_id, &page).await?))
}

/// The caller's own invoices and credit notes, newest first (customer API key).
#[utoipa::path(get, path = "/v1/me/invoices", tag = "me", params(PageParams),
    security(("api_key" = []), ("customer_bearer" = [])),
    responses((status = 200, body = Page<InvoiceSummary>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn my_invoices(
    customer: Customer,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<InvoiceSummary>>> {
    Ok(Json(list_for(&state, customer.account_id, &page).await?))
}

async fn list_for(state: &AppState, account_id: Uuid, page: &PageParams) -> ApiResult<Page<InvoiceSummary>> {
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, String)> = page.after()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account_id).await?;
    let rows: Vec<InvoiceSummary> = sqlx::query_as(
        "SELECT number, kind, purchase_id, corrects, document->>'total_usd' AS total_usd, issued_at
         FROM invoices WHERE account_id = $1
           AND ($2::timestamptz IS NULL OR (issued_at, number) < ($2, $3))
         ORDER BY issued_at DESC, number DESC LIMIT $4",
    )
    .bind(account_id)
    .bind(after.as_ref().map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(paginate(rows, limit, |r| (r.issued_at, r.number.clone()), |r| r))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_invoice))
        .routes(routes!(list_invoices))
        .routes(routes!(my_invoices))
}
