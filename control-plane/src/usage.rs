//! Usage records as admins and customers read them: the per-request listing (JSON or CSV), the
//! daily aggregate by model, and the margin report (credits charged against upstream list cost).
//!
//! `created_at` of a usage row is when the gateway admitted the request (the time that selects
//! its price), so a listing orders requests as they happened, not as their debits arrived.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::money;
use crate::page::{self, paginate, Page};
use crate::state::AppState;

/// The most rows one CSV export returns (continue with the `x-next-cursor` header).
const MAX_CSV_ROWS: i64 = 100_000;
const DEFAULT_CSV_ROWS: i64 = 10_000;
/// The longest range a daily aggregate or margin report covers.
const MAX_REPORT_DAYS: i64 = 400;
/// USD per credit, the pricing unit.
const USD_PER_CREDIT: Decimal = Decimal::from_parts(5, 0, 0, false, 3);

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UsageView {
    /// The gateway-generated debit id (also the `x-claudestore-request-id` response header).
    pub request_id: Uuid,
    pub key_id: Uuid,
    /// The model served (the one requested when the response named none).
    pub model: String,
    pub model_requested: String,
    pub input_tokens: i64,
    /// Inclusive of thinking tokens.
    pub output_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cache_read_tokens: i64,
    pub thinking_tokens: i64,
    pub web_search_requests: i64,
    /// The `speed` billed: the answer's report where the price has it, else the request's; null:
    /// none (x1).
    pub speed: Option<String>,
    /// The `inference_geo` billed, chosen the same way.
    pub inference_geo: Option<String>,
    /// `usage.service_tier` as the upstream reported it.
    pub service_tier: Option<String>,
    /// The upstream's per-iteration usage (compaction, fallback attempts, advisor calls, the
    /// message itself), each step as reported; empty when the answer listed none.
    #[sqlx(json)]
    pub iterations: Vec<IterationView>,
    /// Credits charged, exact.
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "6.489")]
    pub cost: Decimal,
    /// The upstream's list price in USD (admin listings only).
    #[serde(serialize_with = "money::ser_opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    #[sqlx(skip)]
    pub list_usd: Option<Decimal>,
    pub price_version: String,
    pub partial: bool,
    /// A partial record whose input was estimated from the request's size (cut before the upstream
    /// reported usage).
    pub input_estimated: bool,
    /// When the gateway admitted the request.
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub list_usd_raw: Decimal,
}

/// One step of `usage.iterations`. Compaction and advisor steps are billed on top of the top-level
/// usage, fallback attempts at their own model (free when they produced no output); the
/// `message` step is the top-level usage itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct IterationView {
    #[serde(rename = "type")]
    pub kind: String,
    /// The step's model (null for compaction: the request's).
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_tokens: u64,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Rows per page: 1 to 1000 (JSON, default 50) or to 100000 (CSV, default 10000).
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only requests admitted at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only requests admitted before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    pub format: Option<String>,
}

/// Which account's usage, and whether the reader may see the operator's cost.
pub struct UsageScope {
    pub account_id: Uuid,
    pub show_list_usd: bool,
}

fn wants_csv(q: &UsageQuery, headers: &HeaderMap) -> ApiResult<bool> {
    match q.format.as_deref() {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::invalid(format!("format {other:?} must be json or csv"))),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))),
    }
}

/// The usage listing shared by the admin route and `GET /v1/me/usage`.
pub async fn list(
    pool: &PgPool,
    scope: UsageScope,
    q: UsageQuery,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let csv = wants_csv(&q, headers)?;
    let limit = match (csv, q.limit) {
        (true, None) => DEFAULT_CSV_ROWS,
        (true, Some(n)) if (1..=MAX_CSV_ROWS).contains(&n) => n,
        (true, Some(n)) => {
            return Err(ApiError::invalid(format!(
                "limit {n} must be between 1 and {MAX_CSV_ROWS}"
            )))
        }
        (false, l) => page::checked_limit(l)?,
    };
    let page = rows(pool, &scope, &q, limit).await?;
    if !csv {
        return Ok(Json(page).into_response());
    }
    let mut resp = to_csv(&page.data, scope.show_list_usd).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"usage.csv\""),
    );
    if let Some(c) = page.next_cursor.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("x-next-cursor", c);
    }
    Ok(resp)
}

/// One page of the account's usage, newest first, as [`list`] answers it (also read in process
/// by the dashboard's request log).
pub async fn rows(
    pool: &PgPool,
    scope: &UsageScope,
    q: &UsageQuery,
    limit: i64,
) -> ApiResult<Page<UsageView>> {
    if let Some(m) = &q.model {
        if m.is_empty() || m.len() > 256 {
            return Err(ApiError::invalid("model must be 1 to 256 characters"));
        }
    }
    let after: Option<(DateTime<Utc>, Uuid)> = q.cursor.as_deref().map(page::decode).transpose()?;
    let mut conn = pool.acquire().await?;
    crate::accounts::fetch(&mut conn, scope.account_id).await?;
    let rows: Vec<UsageView> = sqlx::query_as(
        "SELECT debit_id AS request_id, key_id, coalesce(model_served, model_requested) AS model, model_requested,
            input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
            thinking_tokens, web_search_requests, speed, inference_geo, service_tier,
            coalesce(iterations, '[]'::jsonb) AS iterations, cost, list_usd AS list_usd_raw, price_version, partial,
            input_estimated, admitted_at AS created_at, finished_at
         FROM usage_records
         WHERE account_id = $1
           AND ($2::timestamptz IS NULL OR (admitted_at, debit_id) < ($2, $3))
           AND ($4::timestamptz IS NULL OR admitted_at >= $4)
           AND ($5::timestamptz IS NULL OR admitted_at < $5)
           AND ($6::uuid IS NULL OR key_id = $6)
           AND ($7::text IS NULL OR coalesce(model_served, model_requested) = $7)
         ORDER BY admitted_at DESC, debit_id DESC LIMIT $8",
    )
    .bind(scope.account_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(q.from)
    .bind(q.to)
    .bind(q.key_id)
    .bind(&q.model)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let show = scope.show_list_usd;
    let page = paginate(
        rows,
        limit,
        |r| (r.created_at, r.request_id),
        |mut r| {
            r.list_usd = show.then_some(r.list_usd_raw);
            r
        },
    );
    Ok(page)
}

/// One CSV cell: quoted when needed, and a leading `= + - @` neutralised (spreadsheet formulas).
/// The one guard of every CSV the control plane writes (the API's and the dashboard's).
pub(crate) fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The steps as compact JSON in one cell (empty without steps).
fn iterations_cell(steps: &[IterationView]) -> String {
    if steps.is_empty() {
        return String::new();
    }
    cell(&serde_json::to_string(steps).unwrap_or_default())
}

fn to_csv(rows: &[UsageView], show_list_usd: bool) -> String {
    let mut out = String::from(
        "request_id,created_at,key_id,model,model_requested,input_tokens,output_tokens,cache_write_5m_tokens,\
         cache_write_1h_tokens,cache_read_tokens,thinking_tokens,web_search_requests,cost,partial,price_version,\
         speed,inference_geo,service_tier,iterations",
    );
    if show_list_usd {
        out.push_str(",list_usd");
    }
    out.push('\n');
    for r in rows {
        let mut fields = vec![
            r.request_id.to_string(),
            r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            r.key_id.to_string(),
            cell(&r.model),
            cell(&r.model_requested),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cache_write_5m_tokens.to_string(),
            r.cache_write_1h_tokens.to_string(),
            r.cache_read_tokens.to_string(),
            r.thinking_tokens.to_string(),
            r.web_search_requests.to_string(),
            money::plain(r.cost),
            r.partial.to_string(),
            cell(&r.price_version),
            cell(r.speed.as_deref().unwrap_or_default()),
            cell(r.inference_geo.as_deref().unwrap_or_default()),
            cell(r.service_tier.as_deref().unwrap_or_default()),
            iterations_cell(&r.iterations),
        ];
        if show_list_usd {
            fields.push(money::plain(r.list_usd_raw));
        }
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// An account's usage, newest first; JSON or CSV.
#[utoipa::path(get, path = "/v1/accounts/{id}/usage", tag = "usage", params(("id" = Uuid, Path), UsageQuery),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<UsageView>, content_type = "application/json"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn account_usage(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let scope = UsageScope {
        account_id,
        show_list_usd: true,
    };
    list(&state.pool, scope, q, &headers).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Start (inclusive, RFC 3339); default 30 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (exclusive, RFC 3339); default now.
    pub to: Option<DateTime<Utc>>,
}

impl RangeQuery {
    fn bounds(&self) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let to = self.to.unwrap_or_else(Utc::now);
        let from = self.from.unwrap_or(to - Duration::days(30));
        if from >= to {
            return Err(ApiError::invalid("from must be before to"));
        }
        if to - from > Duration::days(MAX_REPORT_DAYS) {
            return Err(ApiError::invalid(format!(
                "the range may cover at most {MAX_REPORT_DAYS} days"
            )));
        }
        Ok((from, to))
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DailyUsage {
    /// UTC day.
    pub date: NaiveDate,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cache_read_tokens: i64,
    pub thinking_tokens: i64,
    pub web_search_requests: i64,
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String)]
    pub cost: Decimal,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyUsageList {
    pub data: Vec<DailyUsage>,
    /// Always null: the range bounds the answer.
    pub next_cursor: Option<String>,
}

/// An account's usage per UTC day and model, newest day first.
#[utoipa::path(get, path = "/v1/accounts/{id}/usage/daily", tag = "usage", params(("id" = Uuid, Path), RangeQuery),
    security(("admin_token" = [])),
    responses((status = 200, body = DailyUsageList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn daily_usage(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<DailyUsageList>> {
    let (from, to) = q.bounds()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account_id).await?;
    let data: Vec<DailyUsage> = sqlx::query_as(
        "SELECT (admitted_at AT TIME ZONE 'UTC')::date AS date, coalesce(model_served, model_requested) AS model,
            count(*) AS requests, sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
            sum(cache_write_5m_tokens)::bigint AS cache_write_5m_tokens,
            sum(cache_write_1h_tokens)::bigint AS cache_write_1h_tokens,
            sum(cache_read_tokens)::bigint AS cache_read_tokens, sum(thinking_tokens)::bigint AS thinking_tokens,
            sum(web_search_requests)::bigint AS web_search_requests, sum(cost) AS cost
         FROM usage_records WHERE account_id = $1 AND admitted_at >= $2 AND admitted_at < $3
         GROUP BY 1, 2 ORDER BY 1 DESC, 2",
    )
    .bind(account_id)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(DailyUsageList {
        data,
        next_cursor: None,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarginRow {
    /// UTC day.
    pub date: NaiveDate,
    /// The model family billed.
    pub model: String,
    pub requests: i64,
    /// Credits charged.
    #[schema(value_type = String)]
    pub credits: String,
    /// The credits at the $0.005 unit price.
    #[schema(value_type = String)]
    pub credits_usd: String,
    /// What the upstream's list price makes of the same usage.
    #[schema(value_type = String)]
    pub list_usd: String,
    /// `credits_usd - list_usd`.
    #[schema(value_type = String)]
    pub margin_usd: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarginReport {
    pub data: Vec<MarginRow>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub next_cursor: Option<String>,
}

/// Credits charged against the upstream's list cost, per UTC day and model (all accounts).
#[utoipa::path(get, path = "/v1/reports/margin", tag = "usage", params(RangeQuery),
    security(("admin_token" = [])),
    responses((status = 200, body = MarginReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn margin_report(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> ApiResult<Json<MarginReport>> {
    let (from, to) = q.bounds()?;
    let rows: Vec<(NaiveDate, String, i64, Decimal, Decimal)> = sqlx::query_as(
        "SELECT (admitted_at AT TIME ZONE 'UTC')::date, model_billed, count(*), sum(cost), sum(list_usd)
         FROM usage_records WHERE admitted_at >= $1 AND admitted_at < $2
         GROUP BY 1, 2 ORDER BY 1 DESC, 2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await?;
    let overflow = || ApiError::Internal("margin report amounts overflow".into());
    let data = rows
        .into_iter()
        .map(|(date, model, requests, credits, list_usd)| {
            let credits_usd = credits.checked_mul(USD_PER_CREDIT).ok_or_else(overflow)?;
            let margin = credits_usd.checked_sub(list_usd).ok_or_else(overflow)?;
            Ok(MarginRow {
                date,
                model,
                requests,
                credits: money::plain(credits),
                credits_usd: money::plain(credits_usd),
                list_usd: money::plain(list_usd),
                margin_usd: money::plain(margin),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(MarginReport {
        data,
        from,
        to,
        next_cursor: None,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account_usage))
        .routes(routes!(daily_usage))
        .routes(routes!(margin_report))
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(cell("claude-sonnet-4-5"), "claude-sonnet-4-5");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
    }
}
