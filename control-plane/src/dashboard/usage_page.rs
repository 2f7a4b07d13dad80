//! The customer's usage: credits per UTC day and model as an SVG bar chart drawn here (no script,
//! no external asset), the same numbers as a table, and CSV downloads (the table, and every
//! request through the API's own export, without the operator's cost column).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Duration, NaiveDate, Utc};
use maud::{html, Markup};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::html::{credits, page, request_options as options};
use super::nav;
use super::session::CustomerSession;
use super::PageResult;
// `cell`: the one CSV guard (quoted when needed, a leading formula character neutralised).
use crate::money;
use crate::state::AppState;
use crate::usage::{self, cell, UsageQuery, UsageScope};

const PALETTE: &[&str] = &[
    "#b4532a", "#2a6fb4", "#2f8f4e", "#8e44ad", "#c0392b", "#d4a017", "#16a085", "#7f8c8d",
];

#[derive(Deserialize)]
struct RangeParams {
    days: Option<i64>,
}

impl RangeParams {
    fn days(&self) -> i64 {
        self.days.filter(|d| [7, 30, 90].contains(d)).unwrap_or(30)
    }
}

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

async fn daily(state: &AppState, account: uuid::Uuid, days: i64) -> PageResult<(NaiveDate, Vec<DayModel>)> {
    let first = Utc::now().date_naive() - Duration::days(days - 1);
    let rows = sqlx::query_as(
        "SELECT (admitted_at AT TIME ZONE 'UTC')::date AS date, coalesce(model_served, model_requested) AS model,
            speed, inference_geo, service_tier, count(*) AS requests,
            coalesce(sum((SELECT count(*) FROM jsonb_array_elements(iterations) s WHERE s->>'type' <> 'message')), 0)::bigint
                AS steps, sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
            sum(cache_write_5m_tokens + cache_write_1h_tokens)::bigint AS cache_write_tokens,
            sum(cache_read_tokens)::bigint AS cache_read_tokens, sum(cost) AS cost
         FROM usage_records WHERE account_id = $1 AND admitted_at >= $2::date
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1 DESC, 2, 3 NULLS FIRST, 4 NULLS FIRST, 5 NULLS FIRST",
    )
    .bind(account)
    .bind(first)
    .fetch_all(&state.pool)
    .await?;
    Ok((first, rows))
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

/// Stacked bars: one per day, one colour per model, height = credits.
fn chart(first: NaiveDate, days: i64, rows: &[DayModel]) -> Markup {
    let models: Vec<&str> = {
        let mut m: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let color = |model: &str| {
        let i = models.iter().position(|m| *m == model).unwrap_or(0);
        PALETTE.get(i % PALETTE.len()).copied().unwrap_or("#888")
    };
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
    let (w, h, left, bottom, top) = (900.0_f64, 260.0_f64, 70.0_f64, 28.0_f64, 12.0_f64);
    let plot_w = w - left - 10.0;
    let plot_h = h - bottom - top;
    let slot = plot_w / days as f64;
    let bar = (slot * 0.8).max(1.0);
    let label_every = (days / 10).max(1);
    html! {
        svg.chart #usage-chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) }
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
        div.legend {
            @for m in &models {
                span {
                    svg.swatch xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" { rect width="10" height="10" fill=(color(m)) {} }
                    span.mono { (m) }
                }
            }
        }
    }
}

async fn usage_page(
    session: CustomerSession,
    State(state): State<AppState>,
    Query(q): Query<RangeParams>,
) -> PageResult<Html<String>> {
    let days = q.days();
    let (first, rows) = daily(&state, session.account_id, days).await?;
    let total: Decimal = rows.iter().map(|r| r.cost).sum();
    let body = html! {
        p {
            "Range: "
            @for d in [7, 30, 90] {
                @if d == days { strong { (d) " days" } } @else { a href={ "/dashboard/usage?days=" (d) } { (d) " days" } }
                " "
            }
            " · Total: " strong #usage-total { (credits(total)) } " credits"
        }
        (chart(first, days, &rows))
        p {
            a href={ "/dashboard/usage.csv?days=" (days) } download { "Download this table (CSV)" }
            " · "
            a href="/dashboard/usage/requests.csv" download { "Every request (CSV)" }
        }
        @if rows.is_empty() {
            p.muted { "No usage in this range." }
        } @else {
            table #usage-table {
                thead { tr {
                    th { "Day (UTC)" } th { "Model" } th { "Ran as" } th.num { "Requests" } th.num { "Extra steps" } th.num { "Input" } th.num { "Output" }
                    th.num { "Cache writes" } th.num { "Cache reads" } th.num { "Credits" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.date) } td.mono { (r.model) } td { (options(r.speed.as_deref(), r.inference_geo.as_deref(), r.service_tier.as_deref())) }
                            td.num { (r.requests) } td.num { (r.steps) } td.num { (r.input_tokens) }
                            td.num { (r.output_tokens) } td.num { (r.cache_write_tokens) } td.num { (r.cache_read_tokens) }
                            td.num { (credits(r.cost)) }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(page("Usage", nav::customer(&session), body).into_string()))
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
    Query(q): Query<RangeParams>,
) -> PageResult<Response> {
    let (_, rows) = daily(&state, session.account_id, q.days()).await?;
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

async fn requests_csv(
    session: CustomerSession,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> PageResult<Response> {
    let scope = UsageScope {
        account_id: session.account_id,
        show_list_usd: false,
    };
    let q = UsageQuery {
        format: Some("csv".into()),
        ..UsageQuery::default()
    };
    Ok(usage::list(&state.pool, scope, q, &headers).await?)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/usage", get(usage_page))
        .route("/dashboard/usage.csv", get(usage_csv))
        .route("/dashboard/usage/requests.csv", get(requests_csv))
}

#[cfg(test)]
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
        let svg = chart(today - Duration::days(6), 7, &rows).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert_eq!(svg.matches("<rect x=").count(), 1, "{svg}");
    }

    #[test]
    fn csv_cells_neutralise_formulas() {
        assert_eq!(cell("=cmd()"), "'=cmd()");
        assert_eq!(cell("a,b"), "\"a,b\"");
    }
}
