//! The customer's usage over a date range, optionally one key's or one model's: credits per UTC day
//! and model as an SVG bar chart drawn here (no script, no external asset), the same numbers as a
//! table, the request log paged to its end, and CSV downloads of both (the requests through the
//! API's own export, without the operator's cost column).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::Uri;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Datelike, Duration, NaiveDate, Utc};
use maud::{html, Markup};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::html::{credits, request_options as options};
use super::session::CustomerSession;
use super::PageResult;
// `cell`: the one CSV guard (quoted when needed, a leading formula character neutralised).
use crate::money;
use crate::page::Page;
use crate::state::AppState;
use crate::usage::{self, cell, UsageQuery, UsageScope, UsageView};

const PALETTE: &[&str] = &[
    "#b4532a", "#2a6fb4", "#2f8f4e", "#8e44ad", "#c0392b", "#d4a017", "#16a085", "#7f8c8d",
];

/// The longest range the page draws, in days.
const MAX_DAYS: i64 = 366;

/// What the page shows: a range of UTC days (both included), one key or all, one model or all,
/// and where the request log is. Read leniently from the address: what does not parse is
/// ignored and said on the page, never an error.
#[derive(Debug, Clone, PartialEq)]
struct Filters {
    from: NaiveDate,
    to: NaiveDate,
    key: Option<uuid::Uuid>,
    model: Option<String>,
    /// The request log's cursor (the API's).
    cursor: Option<String>,
    /// Parameters that were ignored, in words.
    ignored: Vec<String>,
}

impl Filters {
    fn of(query: Option<&str>, today: NaiveDate) -> Filters {
        let mut days = 30;
        let (mut from, mut to, mut key, mut model, mut cursor) = (None, None, None, None, None);
        let mut ignored = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match &*k {
                "days" => match v.parse::<i64>() {
                    Ok(d) if (1..=MAX_DAYS).contains(&d) => days = d,
                    _ => ignored.push(format!("the range {v:?} (whole days, 1 to {MAX_DAYS})")),
                },
                "from" | "to" => match NaiveDate::parse_from_str(v, "%Y-%m-%d") {
                    Ok(d) if !(2000..=9999).contains(&d.year()) => {
                        ignored.push(format!("the date {v:?} (years 2000 to 9999)"))
                    }
                    Ok(d) if &*k == "from" => from = Some(d),
                    Ok(d) => to = Some(d),
                    Err(_) => ignored.push(format!("the date {v:?} (YYYY-MM-DD)")),
                },
                "key" => match uuid::Uuid::parse_str(v) {
                    Ok(id) => key = Some(id),
                    Err(_) => ignored.push("a key that is not one of yours".into()),
                },
                "model" if v.len() <= 256 => model = Some(v.to_owned()),
                "cursor" => match crate::page::decode::<(chrono::DateTime<Utc>, uuid::Uuid)>(v) {
                    Ok(_) => cursor = Some(v.to_owned()),
                    Err(_) => {
                        ignored.push("a page of the request log that does not exist (from the newest)".into())
                    }
                },
                _ => {}
            }
        }
        let mut to = to.unwrap_or(today);
        let mut from = match from {
            Some(f) => f,
            None => to - Duration::days(days - 1),
        };
        if from > to {
            ignored.push("a start after the end (the two dates were swapped)".into());
            std::mem::swap(&mut from, &mut to);
        }
        if (to - from).num_days() >= MAX_DAYS {
            ignored.push(format!("days beyond {MAX_DAYS} (the range was shortened)"));
            from = to - Duration::days(MAX_DAYS - 1);
        }
        Filters {
            from,
            to,
            key,
            model,
            cursor,
            ignored,
        }
    }

    fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    /// This page's address with other filters (no cursor: the request log from its start).
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("from", &self.from.to_string());
        q.append_pair("to", &self.to.to_string());
        if let Some(k) = self.key {
            q.append_pair("key", &k.to_string());
        }
        if let Some(m) = &self.model {
            q.append_pair("model", m);
        }
        q.finish()
    }

    /// The same range ending today over `days` days.
    fn last(&self, days: i64, today: NaiveDate) -> Filters {
        Filters {
            from: today - Duration::days(days - 1),
            to: today,
            cursor: None,
            ignored: Vec::new(),
            ..self.clone()
        }
    }

    /// The API's filters for the request log and its CSV.
    fn usage_query(&self, format: Option<&str>) -> UsageQuery {
        UsageQuery {
            from: Some(self.from.and_time(chrono::NaiveTime::MIN).and_utc()),
            to: Some(
                (self.to + Duration::days(1))
                    .and_time(chrono::NaiveTime::MIN)
                    .and_utc(),
            ),
            key_id: self.key,
            model: self.model.clone(),
            cursor: if format.is_some() {
                None
            } else {
                self.cursor.clone()
            },
            limit: if format.is_some() {
                Some(100_000)
            } else {
                Some(REQUESTS_PAGE)
            },
            format: format.map(str::to_owned),
        }
    }
}

/// Requests per page of the log.
const REQUESTS_PAGE: i64 = 50;

#[derive(sqlx::FromRow)]
struct DayModel {
    date: NaiveDate,
    model: String,
    /// The speed and inference geo billed (rows are split by them: they multiply the price).
    speed: Option<String>,
    inference_geo: Option<String>,
    service_tier: Option<String>,
    requests: i64,
    /// Steps of the answers billed on top of their top-level usage (compaction, advisor, fallback).
    steps: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_write_tokens: i64,
    cache_read_tokens: i64,
    cost: Decimal,
}

async fn daily(state: &AppState, account: uuid::Uuid, f: &Filters) -> PageResult<Vec<DayModel>> {
    let rows = sqlx::query_as(
        "SELECT (admitted_at AT TIME ZONE 'UTC')::date AS date, coalesce(model_served, model_requested) AS model,
            speed, inference_geo, service_tier, count(*) AS requests,
            coalesce(sum((SELECT count(*) FROM jsonb_array_elements(iterations) s WHERE s->>'type' <> 'message')), 0)::bigint
                AS steps, sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
            sum(cache_write_5m_tokens + cache_write_1h_tokens)::bigint AS cache_write_tokens,
            sum(cache_read_tokens)::bigint AS cache_read_tokens, sum(cost) AS cost
         FROM usage_records WHERE account_id = $1
           AND admitted_at >= $2::date AT TIME ZONE 'UTC' AND admitted_at < ($3::date + 1) AT TIME ZONE 'UTC'
           AND ($4::uuid IS NULL OR key_id = $4)
           AND ($5::text IS NULL OR coalesce(model_served, model_requested) = $5)
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1 DESC, 2, 3 NULLS FIRST, 4 NULLS FIRST, 5 NULLS FIRST",
    )
    .bind(account)
    .bind(f.from)
    .bind(f.to)
    .bind(f.key)
    .bind(&f.model)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows)
}

/// The segments of one day's bar, bottom up: (top y, height, row).
fn stack<'a>(list: &[&'a DayModel], base: f64, scale: f64) -> Vec<(f64, f64, &'a DayModel)> {
    let mut y = base;
    list.iter()
        .map(|r| {
            let h = r.cost.to_f64().unwrap_or(0.0) * scale;
            y -= h;
            (y, h, *r)
        })
        .collect()
}

/// How a chart is drawn: its width in user units (text is 11 units high), its element id.
struct ChartSize {
    width: f64,
    id: &'static str,
    class: &'static str,
}

/// Wide, for screens of a laptop and more.
const WIDE: ChartSize = ChartSize {
    width: 900.0,
    id: "usage-chart",
    class: "chart chart-wide",
};
/// Narrow, for phones: about as many units as pixels, so that its text stays readable.
const NARROW: ChartSize = ChartSize {
    width: 360.0,
    id: "usage-chart-narrow",
    class: "chart chart-narrow",
};

/// Stacked bars: one per day, one colour per model, height = credits.
fn chart(first: NaiveDate, days: i64, rows: &[DayModel], size: &ChartSize) -> Markup {
    let models = models_of(rows);
    let color = |model: &str| color_of(&models, model);
    let mut per_day: BTreeMap<NaiveDate, Vec<&DayModel>> = BTreeMap::new();
    for r in rows {
        per_day.entry(r.date).or_default().push(r);
    }
    let total = |v: &Vec<&DayModel>| v.iter().map(|r| r.cost).sum::<Decimal>();
    let max = per_day
        .values()
        .map(total)
        .max()
        .unwrap_or_default()
        .to_f64()
        .unwrap_or(0.0);
    let max = if max > 0.0 { max } else { 1.0 };
    let w = size.width;
    let (h, left, bottom, top) = (
        if w < 500.0 { 220.0_f64 } else { 260.0_f64 },
        60.0_f64,
        28.0_f64,
        12.0_f64,
    );
    let plot_w = w - left - 10.0;
    let plot_h = h - bottom - top;
    let slot = plot_w / days as f64;
    let bar = (slot * 0.8).max(1.0);
    // A date label is about 36 units wide.
    let labels = ((plot_w / 44.0) as i64).clamp(1, 10);
    let label_every = (days / labels).max(1);
    html! {
        svg class=(size.class) id=(size.id) xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) }
            role="img" aria-label="Credits per day and model" {
            @for i in 0..=4 {
                @let y = top + plot_h - plot_h * f64::from(i) / 4.0;
                line x1=(left) x2=(w - 10.0) y1=(y) y2=(y) stroke="#e2e2e6" {}
                text x=(left - 6.0) y=(y + 4.0) text-anchor="end" { (credits(Decimal::from_f64_retain(max * f64::from(i) / 4.0).unwrap_or_default().round_dp(1))) }
            }
            @for d in 0..days {
                @let date = first + Duration::days(d);
                @let x = left + slot * d as f64 + (slot - bar) / 2.0;
                @if let Some(list) = per_day.get(&date) {
                    @for (y, bh, r) in stack(list, top + plot_h, plot_h / max) {
                        rect x=(x) y=(y) width=(bar) height=(bh) fill=(color(&r.model)) {
                            title { (date) " " (r.model) ": " (credits(r.cost)) " credits, " (r.requests) " requests" }
                        }
                    }
                }
                @if d % label_every == 0 {
                    text x=(x + bar / 2.0) y=(h - 10.0) text-anchor="middle" { (date.format("%m-%d")) }
                }
            }
        }
    }
}

/// The models of the rows, in the order (and so the colours) the charts use.
fn models_of(rows: &[DayModel]) -> Vec<&str> {
    let mut m: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    m.sort_unstable();
    m.dedup();
    m
}

fn color_of(models: &[&str], model: &str) -> &'static str {
    let i = models.iter().position(|m| *m == model).unwrap_or(0);
    PALETTE.get(i % PALETTE.len()).copied().unwrap_or("#888")
}

/// The charts' legend: one colour per model.
fn legend(rows: &[DayModel]) -> Markup {
    let models = models_of(rows);
    html! {
        div.legend {
            @for m in &models {
                span {
                    svg.swatch xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" { rect width="10" height="10" fill=(color_of(&models, m)) {} }
                    span.mono { (m) }
                }
            }
        }
    }
}

/// The account's usage listing as the API's CSV export.
async fn requests_csv_of(state: &AppState, account_id: uuid::Uuid, f: &Filters) -> PageResult<Response> {
    let scope = UsageScope {
        account_id,
        show_list_usd: false,
    };
    Ok(usage::list(&state.pool, scope, f.usage_query(Some("csv")), &HeaderMap::new()).await?)
}

/// A page of the request log, read as the API reads it.
async fn request_log(state: &AppState, account_id: uuid::Uuid, f: &Filters) -> PageResult<Page<UsageView>> {
    let scope = UsageScope {
        account_id,
        show_list_usd: false,
    };
    Ok(usage::rows(&state.pool, &scope, &f.usage_query(None), REQUESTS_PAGE).await?)
}

async fn usage_page(
    session: CustomerSession,
    State(state): State<AppState>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let today = Utc::now().date_naive();
    let f = Filters::of(uri.query(), today);
    let rows = daily(&state, session.account_id, &f).await?;
    let keys: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT id, name, prefix FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC LIMIT 500",
    )
    .bind(session.account_id)
    .fetch_all(&state.pool)
    .await?;
    let models: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT coalesce(model_served, model_requested) FROM usage_records WHERE account_id = $1 ORDER BY 1 LIMIT 200",
    )
    .bind(session.account_id)
    .fetch_all(&state.pool)
    .await?;
    let log = request_log(&state, session.account_id, &f).await?;
    let key_name = |id: uuid::Uuid| keys.iter().find(|k| k.0 == id).map_or("—", |k| k.1.as_str());
    let total: Decimal = rows.iter().map(|r| r.cost).sum();
    let requests: i64 = rows.iter().map(|r| r.requests).sum();
    let query = f.query();
    let body = html! {
        @if !f.ignored.is_empty() {
            p.notice.error #ignored role="status" { "Ignored " (f.ignored.join("; ")) "." }
        }
        form.row.card #usage-filters method="get" action="/dashboard/usage" {
            label { "From" input type="date" name="from" value=(f.from); }
            label { "To" input type="date" name="to" value=(f.to); }
            label { "Key" select name="key" {
                option value="" { "All keys" }
                @for (id, name, prefix) in &keys { option value=(id) selected[f.key == Some(*id)] { (name) " (" (prefix) "…)" } }
            } }
            label { "Model" select name="model" {
                option value="" { "All models" }
                @for m in &models { option value=(m) selected[f.model.as_deref() == Some(m.as_str())] { (m) } }
            } }
            button type="submit" { "Show" }
        }
        p.ranges {
            "Last "
            @for d in [7, 30, 90] {
                a href={ "/dashboard/usage?" (f.last(d, today).query()) } { (d) " days" } " "
            }
            " · " (f.days()) " days: " strong #usage-total { (credits(total)) } " credits"
            " (≈ " (super::html::usd(total * money::credit_usd())) ") in " strong #usage-requests { (requests) } " requests"
        }
        div.chart-box {
            (chart(f.from, f.days(), &rows, &WIDE))
            (chart(f.from, f.days(), &rows, &NARROW))
            (legend(&rows))
        }
        p {
            a href={ "/dashboard/usage.csv?" (query) } download { "Download the days (CSV)" }
            " · "
            a #requests-csv href={ "/dashboard/usage/requests.csv?" (query) } download { "Download every request (CSV)" }
        }
        @if rows.is_empty() {
            p.muted { "No usage in this range." }
        } @else {
            div.table-wrap {
                table #usage-table {
                    thead { tr {
                        th { "Day (UTC)" } th { "Model" } th.wide { "Ran as" } th.num { "Requests" } th.num.wide { "Extra steps" } th.num { "Input" } th.num { "Output" }
                        th.num.wide { "Cache writes" } th.num.wide { "Cache reads" } th.num { "Credits" }
                    } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { (r.date) } td.mono { (r.model) } td.wide { (options(r.speed.as_deref(), r.inference_geo.as_deref(), r.service_tier.as_deref())) }
                                td.num { (r.requests) } td.num.wide { (r.steps) } td.num { (r.input_tokens) }
                                td.num { (r.output_tokens) } td.num.wide { (r.cache_write_tokens) } td.num.wide { (r.cache_read_tokens) }
                                td.num { (credits(r.cost)) }
                            }
                        }
                    }
                }
            }
        }
        h2 #requests { "Requests" }
        @if log.data.is_empty() {
            p.muted { "No requests in this range." }
        } @else {
            div.table-wrap {
                table #request-log {
                    thead { tr { th { "Time" } th { "Key" } th { "Model" } th.num { "Input" } th.num { "Output" } th.num.wide { "Cache" } th.num { "Credits" } th.wide { "Request id" } } }
                    tbody {
                        @for r in &log.data {
                            tr {
                                td { (r.created_at.format("%Y-%m-%d %H:%M:%S")) }
                                td { (key_name(r.key_id)) }
                                td.mono { (r.model) @if r.partial { " (partial)" } }
                                td.num { (r.input_tokens) } td.num { (r.output_tokens) }
                                td.num.wide { (r.cache_write_5m_tokens + r.cache_write_1h_tokens + r.cache_read_tokens) }
                                td.num { (credits(r.cost)) }
                                td.mono.wide { (r.request_id) }
                            }
                        }
                    }
                }
            }
        }
        p.pager {
            @if f.cursor.is_some() { a href={ "/dashboard/usage?" (query) "#requests" } { "Newest" } }
            @if let Some(next) = &log.next_cursor {
                @let mut q = form_urlencoded::Serializer::new(query.clone());
                a #requests-next href={ "/dashboard/usage?" (q.append_pair("cursor", next).finish()) "#requests" } { "Older requests" }
            }
        }
    };
    super::customer::render(&state, &session, "Usage", body).await
}

fn csv_response(body: String, filename: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(filename));
    resp
}

async fn usage_csv(
    session: CustomerSession,
    State(state): State<AppState>,
    uri: Uri,
) -> PageResult<Response> {
    let f = Filters::of(uri.query(), Utc::now().date_naive());
    let rows = daily(&state, session.account_id, &f).await?;
    let mut out = String::from(
        "date,model,speed,inference_geo,service_tier,requests,steps,input_tokens,output_tokens,cache_write_tokens,\
         cache_read_tokens,credits\n",
    );
    for r in &rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.date,
            cell(&r.model),
            cell(r.speed.as_deref().unwrap_or_default()),
            cell(r.inference_geo.as_deref().unwrap_or_default()),
            cell(r.service_tier.as_deref().unwrap_or_default()),
            r.requests,
            r.steps,
            r.input_tokens,
            r.output_tokens,
            r.cache_write_tokens,
            r.cache_read_tokens,
            money::plain(r.cost)
        ));
    }
    Ok(csv_response(out, "attachment; filename=\"usage-daily.csv\""))
}

/// Every request of the filters, as the API's CSV (the first 100,000; its `x-next-cursor` says
/// where more start).
async fn requests_csv(
    session: CustomerSession,
    State(state): State<AppState>,
    uri: Uri,
) -> PageResult<Response> {
    let f = Filters::of(uri.query(), Utc::now().date_naive());
    requests_csv_of(&state, session.account_id, &f).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/usage", get(usage_page))
        .route("/dashboard/usage.csv", get(usage_csv))
        .route("/dashboard/usage/requests.csv", get(requests_csv))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn chart_escapes_model_ids_and_draws_one_bar_per_row() {
        let today = Utc::now().date_naive();
        let rows = vec![DayModel {
            date: today,
            model: "<script>x</script>".into(),
            speed: Some("fast".into()),
            inference_geo: None,
            service_tier: None,
            requests: 2,
            steps: 0,
            input_tokens: 10,
            output_tokens: 20,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            cost: Decimal::from(12),
        }];
        let svg = chart(today - Duration::days(6), 7, &rows, &WIDE).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert_eq!(svg.matches("<rect x=").count(), 1, "{svg}");
    }

    #[test]
    fn filters_are_read_leniently_and_said_when_ignored() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let f = Filters::of(None, today);
        assert_eq!((f.from, f.to, f.days()), (today - Duration::days(29), today, 30));
        let f = Filters::of(Some("days=abc&key=nope&from=2026-13-01"), today);
        assert_eq!(f.days(), 30);
        assert_eq!(f.ignored.len(), 3, "{:?}", f.ignored);
        assert!(f.key.is_none());
        let f = Filters::of(
            Some("from=2026-11-01&to=2026-11-30&model=claude-sonnet-4-5&days=7"),
            today,
        );
        assert_eq!(
            (f.from.to_string(), f.to.to_string(), f.days()),
            ("2026-11-01".into(), "2026-11-30".into(), 30)
        );
        assert_eq!(f.query(), "from=2026-11-01&to=2026-11-30&model=claude-sonnet-4-5");
        let f = Filters::of(Some("from=2026-12-05&to=2026-12-01"), today);
        assert_eq!(
            (f.from.to_string(), f.to.to_string()),
            ("2026-12-01".into(), "2026-12-05".into())
        );
        assert_eq!(f.ignored.len(), 1);
        for far in [
            "to=-262144-01-01",
            "to=%2B262143-12-31",
            "from=0001-01-01",
            "cursor=garbage",
        ] {
            let f = Filters::of(Some(far), today);
            assert_eq!((f.to, f.ignored.len()), (today, 1), "{far}");
            let _ = f.usage_query(None);
        }
        let f = Filters::of(Some("from=2020-01-01"), today);
        assert_eq!(f.days(), MAX_DAYS);
        let q = Filters::of(Some("days=7"), today).usage_query(None);
        assert_eq!(q.limit, Some(REQUESTS_PAGE));
        assert_eq!(q.to.unwrap().date_naive(), today + Duration::days(1));
    }

    #[test]
    fn csv_cells_neutralise_formulas() {
        assert_eq!(cell("=cmd()"), "'=cmd()");
        assert_eq!(cell("a,b"), "\"a,b\"");
    }
}
