//! The console's reports: the audit log (`GET /v1/audit`: who did what to which target, newest
//! first, filtered by target, a page at a time) and the margin report (`GET /v1/reports/margin`:
//! credits charged against the upstream's list cost per day and model, over a date range).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Html;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::console_page::render;
use super::html::{credits, usd, when};
use super::session::AdminSession;
use super::{ApiClient, PageError, PageResult};
use crate::state::AppState;

/// Audit entries on one page.
const AUDIT_PAGE: u32 = 50;

/// A page of the API's answer.
#[derive(Deserialize)]
struct Listing<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

/// An audit entry as `GET /v1/audit` answers it.
#[derive(Deserialize)]
struct AuditEntry {
    actor: String,
    action: String,
    target: String,
    reason: Option<String>,
    details: serde_json::Value,
    created_at: DateTime<Utc>,
}

/// The parameters of a page's address, read leniently: an empty value is no value.
fn params(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
        .collect()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Where a target leads in the console, if anywhere (`account:<id>`).
fn target_link(target: &str) -> Markup {
    html! {
        @match target.strip_prefix("account:") {
            Some(id) if uuid::Uuid::parse_str(id).is_ok() => a href={ "/admin/accounts/" (id) } { (target) },
            _ => (target),
        }
    }
}

async fn audit(
    session: AdminSession,
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let p = params(&uri);
    let target = p.get("target").map(String::as_str).unwrap_or_default();
    let cursor = p.get("cursor").map(String::as_str).unwrap_or_default();
    let limit = AUDIT_PAGE.to_string();
    let mut asked = vec![("limit", limit.as_str())];
    if !target.is_empty() {
        asked.push(("target", target));
    }
    if !cursor.is_empty() {
        asked.push(("cursor", cursor));
    }
    let page: Listing<AuditEntry> = api
        .json(
            &session.actor(),
            Method::GET,
            &format!("/v1/audit?{}", query(&asked)),
            None,
        )
        .await?;
    let link = |cursor: Option<&str>| {
        let mut pairs = Vec::new();
        if !target.is_empty() {
            pairs.push(("target", target));
        }
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        let q = query(&pairs);
        if q.is_empty() {
            "/admin/audit".to_owned()
        } else {
            format!("/admin/audit?{q}")
        }
    };
    let body = html! {
        form.row method="get" action="/admin/audit" {
            label { "Target (e.g. account:<id>, purchase:<id>, price:<model>)"
                input type="text" name="target" value=(target) maxlength="200"; }
            button.secondary type="submit" { "Filter" }
            @if !target.is_empty() { a href="/admin/audit" { "Every target" } }
        }
        @if page.data.is_empty() {
            p.muted { "No entry here." }
        } @else {
            div.table-wrap {
                table #audit {
                    thead { tr { th { "When" } th { "Who" } th { "Did" } th { "To" } th { "Reason" } th.wide { "Details" } } }
                    tbody {
                        @for e in &page.data {
                            tr {
                                td { (when(e.created_at)) }
                                td { (e.actor) }
                                td.mono { (e.action) }
                                td.mono { (target_link(&e.target)) }
                                td { (e.reason.as_deref().unwrap_or("")) }
                                td.wide.mono.details { (e.details) }
                            }
                        }
                    }
                }
            }
        }
        p.pager {
            @if !cursor.is_empty() { a #audit-newest href=(link(None)) { "Newest" } }
            @if let Some(next) = &page.next_cursor { a #audit-older href=(link(Some(next))) { "Older" } }
        }
    };
    Ok(render(&state, &session, "Audit log", body))
}

/// A row of `GET /v1/reports/margin` (amounts as decimal strings).
#[derive(Deserialize)]
struct MarginRow {
    date: NaiveDate,
    model: String,
    requests: i64,
    credits: Decimal,
    credits_usd: Decimal,
    list_usd: Decimal,
    margin_usd: Decimal,
}

/// Days shown when the address names none.
const DEFAULT_DAYS: i64 = 30;

/// The report's range: whole UTC days from `from` to `to`, both included.
struct DayRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl DayRange {
    fn of(p: &BTreeMap<String, String>, today: NaiveDate) -> PageResult<DayRange> {
        let day = |name: &str| -> PageResult<Option<NaiveDate>> {
            p.get(name)
                .map(|v| {
                    NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .ok()
                        .filter(|d| (2000..=9999).contains(&chrono::Datelike::year(d)))
                        .ok_or_else(|| {
                            PageError::BadRequest(format!(
                                "The {name} date {v:?} is not a date from 2000 to 9999; choose one like {today}."
                            ))
                        })
                })
                .transpose()
        };
        let to = day("to")?.unwrap_or(today);
        let from = day("from")?.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
        if from > to {
            return Err(PageError::BadRequest(
                "The range starts after it ends; choose a from date before the to date.".into(),
            ));
        }
        Ok(DayRange { from, to })
    }

    /// The API's bounds: the start of `from`, the start of the day after `to`.
    fn api_query(&self) -> String {
        let start = self.from.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = (self.to + Duration::days(1))
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        query(&[
            ("from", &super::html::as_written(start)),
            ("to", &super::html::as_written(end)),
        ])
    }
}

/// Totals of a set of rows: requests, credits, charged, list cost, margin.
#[derive(Default)]
struct Totals {
    requests: i64,
    credits: Decimal,
    credits_usd: Decimal,
    list_usd: Decimal,
    margin_usd: Decimal,
}

impl Totals {
    fn add(&mut self, r: &MarginRow) {
        self.requests += r.requests;
        self.credits += r.credits;
        self.credits_usd += r.credits_usd;
        self.list_usd += r.list_usd;
        self.margin_usd += r.margin_usd;
    }

    /// The margin as a share of what was charged.
    fn percent(&self) -> String {
        if self.credits_usd.is_zero() {
            return "—".into();
        }
        format!(
            "{}%",
            (self.margin_usd / self.credits_usd * Decimal::from(100)).round_dp(1)
        )
    }
}

fn totals_cells(t: &Totals) -> Markup {
    html! {
        td.num { (t.requests) } td.num.wide { (credits(t.credits)) } td.num { (usd(t.credits_usd)) }
        td.num { (usd(t.list_usd)) } td.num { (usd(t.margin_usd)) } td.num { (t.percent()) }
    }
}

async fn margins(
    session: AdminSession,
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let range = DayRange::of(&params(&uri), Utc::now().date_naive())?;
    let report: Listing<MarginRow> = api
        .json(
            &session.actor(),
            Method::GET,
            &format!("/v1/reports/margin?{}", range.api_query()),
            None,
        )
        .await?;
    let mut all = Totals::default();
    let mut by_model: BTreeMap<&str, Totals> = BTreeMap::new();
    for r in &report.data {
        all.add(r);
        by_model.entry(r.model.as_str()).or_default().add(r);
    }
    let body = html! {
        form.row method="get" action="/admin/margins" {
            label { "From (UTC day)" input type="date" name="from" value=(range.from); }
            label { "To (included)" input type="date" name="to" value=(range.to); }
            button.secondary type="submit" { "Show" }
        }
        p.muted { "What customers were charged (credits at $0.005) against what the upstream's list price makes of the same requests." }
        @if report.data.is_empty() {
            p.muted #no-margins { "No requests from " (range.from) " to " (range.to) "." }
        } @else {
            h2 { "By model" }
            div.table-wrap {
                table #margins-by-model {
                    thead { tr { th { "Model" } th.num { "Requests" } th.num.wide { "Credits" } th.num { "Charged" } th.num { "List cost" } th.num { "Margin" } th.num { "Share" } } }
                    tbody {
                        @for (model, t) in &by_model {
                            tr.negative[t.margin_usd < Decimal::ZERO] { td.mono { (model) } (totals_cells(t)) }
                        }
                        tr.total { th { "All models" } (totals_cells(&all)) }
                    }
                }
            }
            h2 { "By day" }
            div.table-wrap {
                table #margins {
                    thead { tr { th { "Day" } th { "Model" } th.num { "Requests" } th.num.wide { "Credits" } th.num { "Charged" } th.num { "List cost" } th.num { "Margin" } } }
                    tbody {
                        @for r in &report.data {
                            tr.negative[r.margin_usd < Decimal::ZERO] {
                                td { (r.date) } td.mono { (r.model) } td.num { (r.requests) } td.num.wide { (credits(r.credits)) }
                                td.num { (usd(r.credits_usd)) } td.num { (usd(r.list_usd)) } td.num { (usd(r.margin_usd)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(render(&state, &session, "Margins", body))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/audit", get(audit))
        .route("/admin/margins", get(margins))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn p(q: &str) -> BTreeMap<String, String> {
        params(&format!("/admin/margins?{q}").parse().unwrap())
    }

    #[test]
    fn the_margin_range_defaults_to_thirty_days_and_includes_its_last_day() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap();
        let r = DayRange::of(&p(""), today).unwrap();
        assert_eq!(
            (r.from.to_string(), r.to.to_string()),
            ("2026-03-02".into(), "2026-03-31".into())
        );
        let r = DayRange::of(&p("from=2026-01-01&to=2026-01-01"), today).unwrap();
        assert_eq!(
            r.api_query(),
            "from=2026-01-01T00%3A00%3A00Z&to=2026-01-02T00%3A00%3A00Z"
        );
        assert!(DayRange::of(&p("from=2026-02-01&to=2026-01-01"), today).is_err());
        assert!(DayRange::of(&p("from=yesterday"), today).is_err());
    }

    #[test]
    fn only_account_targets_link_to_a_page() {
        let id = uuid::Uuid::new_v4();
        assert!(target_link(&format!("account:{id}"))
            .into_string()
            .contains("href"));
        assert!(!target_link("price:claude-x").into_string().contains("href"));
        assert!(!target_link("account:<b>").into_string().contains("<b>"));
    }
}
