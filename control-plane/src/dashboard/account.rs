//! The customer's account pages: the balance history (every transfer, in words), the price list
//! in credits, and the settings (billing details for invoices, the low-balance alert and the
//! events webhook; the password form posts to `login`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use maud::html;
use metering::Modifier;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::customer::{page, render, standing};
use super::form::{self, Done, Submitted};
use super::html::{credits, when};
use super::session::CustomerSession;
use super::{ApiClient, PageError, PageResult};
use crate::money;
use crate::state::AppState;

/// Transfers per page of the history.
const HISTORY_PAGE: i64 = 50;

#[derive(sqlx::FromRow)]
struct HistoryRow {
    entry_id: i64,
    kind: String,
    reason: Option<String>,
    credits: Decimal,
    balance_after: Decimal,
    created_at: DateTime<Utc>,
    /// For a request: the model it was billed as and its request id.
    model: Option<String>,
    request_id: Option<Uuid>,
}

/// What a transfer was, in the customer's words.
fn described(kind: &str) -> &'static str {
    match kind {
        "grant" => "Credits added by us",
        "correction" => "Correction by us",
        "usage" => "API request",
        "purchase" => "Credits bought",
        "refund" => "Purchase refunded",
        _ => "Other",
    }
}

/// The history's query: `before` (an entry id: the next page), `requests=hide`.
struct HistoryQuery {
    before: Option<i64>,
    hide_requests: bool,
}

impl HistoryQuery {
    /// Read leniently: a value that does not parse is ignored, never an error page.
    fn of(uri: &Uri) -> Self {
        let mut q = HistoryQuery {
            before: None,
            hide_requests: false,
        };
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            match &*k {
                "before" => q.before = v.parse().ok().filter(|n: &i64| *n > 0),
                "requests" => q.hide_requests = v == "hide",
                _ => {}
            }
        }
        q
    }

    fn link(&self, before: Option<i64>) -> String {
        let mut link = String::from("/dashboard/history?");
        if self.hide_requests {
            link.push_str("requests=hide&");
        }
        if let Some(b) = before {
            link.push_str(&format!("before={b}"));
        }
        link.trim_end_matches(['?', '&']).to_owned()
    }
}

async fn history(
    session: CustomerSession,
    State(state): State<AppState>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let q = HistoryQuery::of(&uri);
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT e.id AS entry_id, t.kind, t.reason, e.amount AS credits, e.balance_after, t.created_at,
            coalesce(u.model_served, u.model_requested) AS model, u.debit_id AS request_id
         FROM entries e JOIN transfers t ON t.id = e.transfer_id
         LEFT JOIN usage_records u ON u.transfer_id = t.id AND t.kind = 'usage'
         WHERE e.ledger_account_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
           AND (NOT $3 OR t.kind <> 'usage')
         ORDER BY e.id DESC LIMIT $4",
    )
    .bind(session.account_id)
    .bind(q.before)
    .bind(q.hide_requests)
    .bind(HISTORY_PAGE + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() > usize::try_from(HISTORY_PAGE).unwrap_or(usize::MAX);
    let shown = &rows[..rows
        .len()
        .min(usize::try_from(HISTORY_PAGE).unwrap_or(usize::MAX))];
    let next = shown.last().filter(|_| more).map(|r| r.entry_id);
    let body = html! {
        p.actions {
            @if q.hide_requests {
                a href="/dashboard/history" { "Show API requests too" }
            } @else {
                a href="/dashboard/history?requests=hide" { "Only purchases, grants, corrections and refunds" }
            }
        }
        @if shown.is_empty() {
            p.muted { "Nothing here yet." }
        } @else {
            div.table-wrap {
                table #history {
                    thead { tr { th { "When" } th { "What" } th.num { "Credits" } th.num { "Balance after" } } }
                    tbody {
                        @for r in shown {
                            tr class={ "kind-" (r.kind) } {
                                td { (when(r.created_at)) }
                                td {
                                    (described(&r.kind))
                                    @if let Some(m) = &r.model { " · " span.mono { (m) } }
                                    @if let Some(reason) = r.reason.as_deref().filter(|s| !s.is_empty() && r.kind != "usage") { br; span.muted { (reason) } }
                                    @if let Some(id) = r.request_id { br; span.muted.mono { (id) } }
                                }
                                td.num class=@if r.credits < Decimal::ZERO { "minus" } @else { "plus" } {
                                    @if r.credits > Decimal::ZERO { "+" } (credits(r.credits))
                                }
                                td.num { (credits(r.balance_after)) }
                            }
                        }
                    }
                }
            }
        }
        p.pager {
            @if q.before.is_some() { a href=(q.link(None)) { "Newest" } }
            @if let Some(n) = next { a #history-next href=(q.link(Some(n))) { "Older" } }
        }
    };
    render(&state, &session, "Balance history", body).await
}

/// Credits per million tokens for an official USD per million tokens.
fn per_million(table: &metering::PriceTable, usd_per_mtok: Decimal) -> String {
    credits(table.credits_per_token(usd_per_mtok) * Decimal::from(1_000_000))
}

async fn prices(session: CustomerSession, State(state): State<AppState>) -> PageResult<Html<String>> {
    let mut conn = state.pool.acquire().await?;
    let table = state.prices.latest(&mut conn).await?;
    let now = Utc::now();
    // The version of each model in force now.
    let mut current: BTreeMap<&str, &metering::PriceEntry> = BTreeMap::new();
    for e in table.entries() {
        if table
            .resolve(&e.model, now)
            .is_ok_and(|cur| cur.effective_from == e.effective_from)
        {
            current.insert(e.model.as_str(), e);
        }
    }
    let m = |usd: Decimal| per_million(&table, usd);
    let body = html! {
        p { "Credits per million tokens, as each request is billed (1 credit = $0.005; bigger plans sell credits for less). "
            "A request that names a speed or an inference region the model prices differently costs its multiple of every rate." }
        div.table-wrap {
            table #prices {
                thead { tr {
                    th { "Model" } th.num { "Input" } th.num { "Cache write 5 min" } th.num { "Cache write 1 h" }
                    th.num { "Cache read" } th.num { "Output" } th { "Also" }
                } }
                tbody {
                    @for (model, e) in &current {
                        @let r = &e.usd_per_mtok;
                        tr {
                            td.mono { (model) @if !e.aliases.is_empty() { br; span.muted { (e.aliases.join(", ")) } } }
                            td.num { (m(r.input)) } td.num { (m(r.cache_write_5m)) } td.num { (m(r.cache_write_1h)) }
                            td.num { (m(r.cache_read)) } td.num { (m(r.output)) }
                            td {
                                @if let Some(t) = r.thinking { "thinking " (m(t)) br; }
                                @for tier in &e.tiers {
                                    "prompts over " (tier.above_prompt_tokens) " tokens: input " (m(tier.usd_per_mtok.input)) ", output " (m(tier.usd_per_mtok.output)) br;
                                }
                                @for modifier in Modifier::ALL {
                                    @for (value, x) in e.multipliers(modifier) {
                                        @if *x != Decimal::ONE { (modifier.field()) " " (value) ": × " (money::plain(*x)) br; }
                                    }
                                }
                                @if !e.web_search_usd_per_request.is_zero() {
                                    "web search: " (credits(table.credits_for_usd(e.web_search_usd_per_request).unwrap_or_default())) " a search"
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Thinking is billed as output unless a separate rate is shown. Prices can change; a request is billed at the price in force when it was admitted." }
    };
    render(&state, &session, "Prices", body).await
}

/// The account as the settings page shows it.
#[derive(sqlx::FromRow)]
struct SettingsRow {
    low_balance_threshold: Option<Decimal>,
    webhook_url: Option<String>,
    billing_name: Option<String>,
    address: Option<String>,
    tax_id: Option<String>,
}

async fn settings(
    session: CustomerSession,
    State(state): State<AppState>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let s: SettingsRow = sqlx::query_as(
        "SELECT a.low_balance_threshold, a.webhook_url, b.name AS billing_name, b.address, b.tax_id
         FROM accounts a LEFT JOIN billing_details b ON b.account_id = a.id WHERE a.id = $1",
    )
    .bind(session.account_id)
    .fetch_one(&state.pool)
    .await?;
    let standing = standing(&state, &session).await?;
    // Read last: a secret in the result is shown once, so nothing may fail after it is taken.
    let done = form::outcome(&state, session.token(), &uri).await?;
    let csrf = &session.csrf;
    let body = html! {
        (form::notice(done.as_ref()))
        @if let Some(secret) = done.as_ref().and_then(|d| d.secret.as_deref()) {
            div.card #webhook-secret-card {
                p { "The signing secret of your webhook. Copy it now: it is shown only this once." }
                div.secret #webhook-secret { (secret) }
            }
        }
        h2 { "Billing details" }
        p.muted { "Printed on the invoices of your next purchases (invoices already issued do not change)." }
        form.card.stack #billing method="post" action="/dashboard/settings/billing" {
            (form::fields(csrf))
            label { "Name on invoices (empty: " (session.name) ")"
                input type="text" name="name" maxlength="200" value=(s.billing_name.unwrap_or_default()); }
            label { "Address" textarea name="address" rows="3" maxlength="500" { (s.address.unwrap_or_default()) } }
            label { "Tax id (VAT number)" input type="text" name="tax_id" maxlength="64" value=(s.tax_id.unwrap_or_default()); }
            button type="submit" { "Save billing details" }
        }
        h2 { "Alerts" }
        form.card.stack #alerts method="post" action="/dashboard/settings/alerts" {
            (form::fields(csrf))
            label { "Warn me when my balance falls below (credits; empty: never)"
                input type="text" name="low_balance_threshold" inputmode="decimal" maxlength="20"
                    value=(s.low_balance_threshold.map(money::plain).unwrap_or_default()); }
            label { "Send events (balance low, key limit reached) to this https URL (empty: none)"
                input type="url" name="webhook_url" maxlength="2000" value=(s.webhook_url.unwrap_or_default()); }
            button type="submit" { "Save alerts" }
        }
        h2 { "Password" }
        form.card.stack #password method="post" action="/dashboard/settings/password" {
            (form::fields(csrf))
            label { "Current password" input type="password" name="current" required autocomplete="current-password"; }
            label { "New password (10 characters or more)" input type="password" name="password" required minlength="10" autocomplete="new-password"; }
            label { "New password again" input type="password" name="confirm" required minlength="10" autocomplete="new-password"; }
            button type="submit" { "Change password" }
        }
    };
    Ok(page(&session, &standing, "Settings", body))
}

fn optional(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

#[derive(Deserialize)]
struct BillingForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    tax_id: String,
}

async fn save_billing(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<CustomerSession, BillingForm>,
) -> PageResult<Response> {
    let details = json!({
        "name": optional(&form.name),
        // Browsers send a textarea's line breaks as CR LF; the address keeps LF only.
        "address": optional(&form.address.replace("\r\n", "\n").replace('\r', "\n")),
        "tax_id": optional(&form.tax_id),
    });
    let saved = api
        .call(
            &session.actor(),
            Method::PUT,
            &format!("/v1/accounts/{}/billing", session.account_id),
            Some(&details),
        )
        .await
        .map(|()| {
            Done::to(
                "/dashboard/settings",
                "Billing details saved: your next invoices carry them.",
            )
        });
    claim.finish(&state, saved).await
}

#[derive(Deserialize)]
struct AlertsForm {
    #[serde(default)]
    low_balance_threshold: String,
    #[serde(default)]
    webhook_url: String,
}

/// What `PATCH /v1/accounts/{id}` answers that the page reads.
#[derive(Deserialize)]
struct Patched {
    #[serde(default)]
    webhook_secret: Option<String>,
}

async fn save_alerts(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<CustomerSession, AlertsForm>,
) -> PageResult<Response> {
    let saved = async {
        let threshold = optional(&form.low_balance_threshold);
        if let Some(t) = threshold {
            if !money::parse_plain(t).is_ok_and(|d| d >= Decimal::ZERO) {
                return Err(PageError::Refused(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "The alert threshold {t:?} is not a number of credits; write it like 500 or 12.5."
                    ),
                ));
            }
        }
        let current: Option<String> = sqlx::query_scalar("SELECT webhook_url FROM accounts WHERE id = $1")
            .bind(session.account_id)
            .fetch_one(&state.pool)
            .await?;
        let url = optional(&form.webhook_url);
        let mut change = json!({ "low_balance_threshold": threshold });
        // Setting the same URL again would change its signing secret: only a change is sent.
        if url != current.as_deref() {
            change["webhook_url"] = json!(url);
        }
        let patched: Patched = api
            .json(
                &session.actor(),
                Method::PATCH,
                &format!("/v1/accounts/{}", session.account_id),
                Some(&change),
            )
            .await?;
        let done = Done::to("/dashboard/settings", "Alerts saved.");
        Ok(match patched.webhook_secret {
            Some(secret) => done.with_secret(secret),
            None => done,
        })
    }
    .await;
    claim.finish(&state, saved).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/history", get(history))
        .route("/dashboard/prices", get(prices))
        .route("/dashboard/settings", get(settings))
        .route("/dashboard/settings/billing", post(save_billing))
        .route("/dashboard/settings/alerts", post(save_alerts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_history_query_is_read_leniently() {
        let q = HistoryQuery::of(&"/dashboard/history?before=abc&requests=hide".parse().unwrap());
        assert_eq!((q.before, q.hide_requests), (None, true));
        assert_eq!(q.link(Some(42)), "/dashboard/history?requests=hide&before=42");
        let q = HistoryQuery::of(&"/dashboard/history?before=-3".parse().unwrap());
        assert_eq!((q.before, q.hide_requests), (None, false));
        assert_eq!(q.link(None), "/dashboard/history");
    }

    #[test]
    fn every_kind_of_transfer_has_words() {
        for kind in ["grant", "correction", "usage", "purchase", "refund"] {
            assert_ne!(described(kind), "Other", "{kind}");
        }
    }

    #[test]
    fn usd_of_credits_at_the_list_price() {
        use super::super::html::usd;
        assert_eq!(usd(Decimal::from(1000) * money::credit_usd()), "$5.00");
    }
}
