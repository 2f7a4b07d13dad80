//! The customer's own pages: the overview with the live balance (server-sent events) and what it is
//! worth, and API keys (create shows the secret once; spend this period and all time, last use;
//! limits, allowed models and expiry editable; revoke). Every customer page goes through
//! [`render`], which adds the low-balance banner.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use futures_util::stream;
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::form::{self, Done, Submitted};
use super::html::{credits, page_with_banner, request_options, usd, when};
use super::nav;
use super::session::{token_hash, CustomerSession, NoFields};
use super::{ApiClient, PageError, PageResult};
use crate::keys::{CreatedKey, Key};
use crate::money;
use crate::state::AppState;
use metering::keylimit::LimitPeriod;

/// How often the balance stream looks at the database (one primary-key read per open page).
const BALANCE_POLL: Duration = Duration::from_millis(500);

/// The banner of every customer page while the balance is empty or below the account's alert
/// threshold.
fn low_balance_banner(balance: Decimal, threshold: Option<Decimal>) -> Markup {
    html! {
        @if balance <= Decimal::ZERO {
            div.banner.error #low-balance role="alert" {
                "Your balance is empty: API requests are refused until you buy credits. "
                a href="/dashboard/buy" { "Buy credits" }
            }
        } @else if let Some(t) = threshold.filter(|t| balance < *t) {
            div.banner.warn #low-balance role="status" {
                "Your balance (" (credits(balance)) " credits) is below your alert threshold of " (credits(t)) " credits. "
                a href="/dashboard/buy" { "Buy credits" } " to keep your requests served."
            }
        }
    }
}

/// What the low-balance banner of every customer page is made from.
pub struct Standing {
    pub balance: Decimal,
    threshold: Option<Decimal>,
}

/// The account's balance and alert threshold. A page that shows a form's result reads this
/// before taking the result (`form::outcome`): a secret in it is shown once, so nothing may
/// fail after it is taken.
pub async fn standing(state: &AppState, session: &CustomerSession) -> PageResult<Standing> {
    let (balance, threshold) = sqlx::query_as(
        "SELECT l.balance, a.low_balance_threshold FROM accounts a JOIN ledger_accounts l ON l.id = a.id
         WHERE a.id = $1",
    )
    .bind(session.account_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(Standing { balance, threshold })
}

/// A customer page: the navigation, the low-balance banner, the title and the body.
pub fn page(session: &CustomerSession, standing: &Standing, title: &str, body: Markup) -> Html<String> {
    let banner = low_balance_banner(standing.balance, standing.threshold);
    Html(page_with_banner(title, nav::customer(session), banner, body).into_string())
}

/// [`page`] with the account's standing read now.
pub async fn render(
    state: &AppState,
    session: &CustomerSession,
    title: &str,
    body: Markup,
) -> PageResult<Html<String>> {
    Ok(page(session, &standing(state, session).await?, title, body))
}

#[derive(sqlx::FromRow)]
struct RecentRequest {
    created_at: DateTime<Utc>,
    model: String,
    speed: Option<String>,
    inference_geo: Option<String>,
    service_tier: Option<String>,
    /// The types of the answer's steps billed on top (compaction, advisor, fallback attempts).
    steps: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cost: Decimal,
    partial: bool,
}

async fn overview(session: CustomerSession, State(state): State<AppState>) -> PageResult<Html<String>> {
    let standing = standing(&state, &session).await?;
    let balance = standing.balance;
    let month: Decimal = sqlx::query_scalar(
        "SELECT coalesce(sum(cost), 0) FROM usage_records
         WHERE account_id = $1 AND admitted_at >= key_period_start('month', now())",
    )
    .bind(session.account_id)
    .fetch_one(&state.pool)
    .await?;
    let recent: Vec<RecentRequest> = sqlx::query_as(
        "SELECT admitted_at AS created_at, coalesce(model_served, model_requested) AS model,
            speed, inference_geo, service_tier,
            (SELECT string_agg(s->>'type', ', ') FROM jsonb_array_elements(iterations) s
              WHERE s->>'type' <> 'message') AS steps,
            input_tokens, output_tokens, cost, partial
         FROM usage_records WHERE account_id = $1 ORDER BY admitted_at DESC, debit_id DESC LIMIT 10",
    )
    .bind(session.account_id)
    .fetch_all(&state.pool)
    .await?;
    let body = html! {
        div.cards {
            div.card {
                div.muted { "Balance (credits)" }
                div.balance #balance data-live-balance data-balance=(money::plain(balance)) { (credits(balance)) }
                div.muted #balance-usd { "Worth " (usd(balance.max(Decimal::ZERO) * money::credit_usd())) " at $0.005 a credit. Updates by itself as you use the API." }
            }
            div.card {
                div.muted { "Spent this month (UTC)" }
                div.big #month-spend { (credits(month)) " credits" }
                div.muted { "≈ " (usd(month * money::credit_usd())) " · " a href="/dashboard/usage" { "usage" } }
            }
            div.card {
                div.muted { "Account" }
                div { strong { (session.name) } }
                div.muted { (session.email) }
                div { "Status: " span class={ "status-" (session.status) } { (session.status) } }
            }
        }
        p.actions { a.button href="/dashboard/buy" { "Buy credits" } a href="/dashboard/history" { "Balance history" } a href="/dashboard/prices" { "Prices" } }
        h2 { "Latest requests" }
        @if recent.is_empty() {
            p.muted { "No requests yet." }
        } @else {
            div.table-wrap {
                table #recent {
                    thead { tr { th { "Time" } th { "Model" } th.wide { "Ran as" } th.wide { "Extra steps" } th.num { "Input" } th.num { "Output" } th.num { "Credits" } } }
                    tbody {
                        @for r in &recent {
                            tr {
                                td { (when(r.created_at)) }
                                td.mono { (r.model) @if r.partial { " (partial)" } }
                                td.wide { (request_options(r.speed.as_deref(), r.inference_geo.as_deref(), r.service_tier.as_deref())) }
                                td.wide { (r.steps.as_deref().unwrap_or("—")) }
                                td.num { (r.input_tokens) }
                                td.num { (r.output_tokens) }
                                td.num { (credits(r.cost)) }
                            }
                        }
                    }
                }
            }
            p { a href="/dashboard/usage#requests" { "Every request" } }
        }
    };
    Ok(page(&session, &standing, "Overview", body))
}

fn balance_event(balance: Decimal) -> Event {
    let data = json!({ "balance": money::plain(balance), "display": credits(balance) });
    Event::default().event("balance").data(data.to_string())
}

/// `GET /dashboard/balance/stream`: an event with the balance now, then one on every change. Ends
/// when the session does (sign-out elsewhere, expiry), so a stale page stops receiving.
async fn balance_stream(headers: HeaderMap, State(state): State<AppState>) -> PageResult<Response> {
    let Some(session) = CustomerSession::load(&headers, &state).await? else {
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let token_hash = token_hash(session.token());
    let events = stream::unfold(
        (state, token_hash, None::<Decimal>),
        |(state, hash, last)| async move {
            loop {
                if last.is_some() {
                    tokio::time::sleep(BALANCE_POLL).await;
                }
                let row: Result<Option<Decimal>, sqlx::Error> = sqlx::query_scalar(
                    "SELECT l.balance FROM web_sessions s JOIN ledger_accounts l ON l.id = s.account_id
                 WHERE s.token_hash = $1 AND s.kind = 'customer' AND s.expires_at > now()",
                )
                .bind(&hash)
                .fetch_optional(&state.pool)
                .await;
                match row {
                    Ok(Some(balance)) if Some(balance) != last => {
                        return Some((
                            Ok::<_, Infallible>(balance_event(balance)),
                            (state, hash, Some(balance)),
                        ));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "balance stream: database read failed; retrying");
                        tokio::time::sleep(BALANCE_POLL).await;
                    }
                }
            }
        },
    );
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}

async fn keys_of(state: &AppState, account_id: Uuid) -> PageResult<Vec<Key>> {
    let mut conn = state.pool.acquire().await?;
    Ok(crate::keys::list_for_account(&mut conn, account_id, 500).await?)
}

/// "50 / 100 credits per day", or the spend this month without a limit.
fn key_spend(k: &Key) -> String {
    match &k.limit {
        Some(l) => {
            let per = match l.period {
                LimitPeriod::Day => "per day",
                LimitPeriod::Week => "per week",
                LimitPeriod::Month => "per month",
                LimitPeriod::Total => "in total",
            };
            format!(
                "{} / {} credits {per}",
                credits(k.spend_this_period),
                credits(l.credits)
            )
        }
        None => format!("{} credits this month", credits(k.spend_this_period)),
    }
}

/// Each key's spend since it was created.
async fn all_time_spend(
    state: &AppState,
    account_id: Uuid,
) -> PageResult<std::collections::HashMap<Uuid, Decimal>> {
    let rows: Vec<(Uuid, Decimal)> = sqlx::query_as(
        "SELECT key_id, sum(cost) FROM usage_records WHERE account_id = $1 AND key_id IS NOT NULL GROUP BY key_id",
    )
    .bind(account_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().collect())
}

fn keys_page(
    session: &CustomerSession,
    keys: &[Key],
    spent: &std::collections::HashMap<Uuid, Decimal>,
    done: Option<&form::Outcome>,
) -> Markup {
    html! {
        (form::notice(done))
        @if let Some(secret) = done.and_then(|d| d.secret.as_deref()) {
            div.card #new-key {
                p { "Copy your new key now: it is shown only this once." }
                div.secret #new-key-secret { (secret) }
            }
        }
        form.row.card method="post" action="/dashboard/keys" {
            (form::fields(&session.csrf))
            label { "Name" input type="text" name="name" required maxlength="200" placeholder="e.g. production"; }
            button type="submit" { "Create key" }
        }
        div.table-wrap {
            table #keys {
                thead { tr { th { "Name" } th.wide { "Prefix" } th { "Status" } th { "This period" } th.num { "All time" } th { "Last used" } th.wide { "Created" } th {} } }
                tbody {
                    @for k in keys {
                        tr {
                            td { (k.name)
                                @if !k.allowed_models.is_empty() { br; span.muted { "models: " (k.allowed_models.join(", ")) } }
                                @if let Some(at) = k.expires_at { br; span.muted { @if k.expired { "expired " } @else { "expires " } (when(at)) } } }
                            td.mono.wide { (k.prefix) "…" }
                            td class={ "status-" (k.status) } { (k.status)
                                @if let Some(at) = k.revoked_at { " " span.muted { (when(at)) } } }
                            td.spend { (key_spend(k)) }
                            td.num.all-time { (credits(spent.get(&k.id).copied().unwrap_or_default())) }
                            td { @match k.last_used_at { Some(at) => (when(at)), None => span.muted { "never" } } }
                            td.wide { (when(k.created_at)) }
                            td {
                                @if k.status == "active" {
                                    a href={ "/dashboard/keys/" (k.id) } { "Limits" }
                                    " "
                                    form.inline method="post" action={ "/dashboard/keys/" (k.id) "/revoke" }
                                        data-confirm={ "Revoke key " (k.name) "? Requests with it stop within seconds." } {
                                        (form::fields(&session.csrf))
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The key's limits as a form: a limit per period (empty: none), the models it may use, the
/// day it expires.
fn key_limits_page(session: &CustomerSession, k: &Key, error: Option<&str>) -> Markup {
    let period = k.limit.as_ref().map_or(LimitPeriod::Month, |l| l.period);
    html! {
        p { a href="/dashboard/keys" { "← API keys" } }
        @if let Some(e) = error { div.card.error #limits-error { (e) } }
        p { "Spend: " (key_spend(k)) @if let Some(at) = k.period_resets_at { " (resets " (when(at)) ")" } }
        form.card.stack #limits method="post" action={ "/dashboard/keys/" (k.id) } {
            (form::fields(&session.csrf))
            label { "Limit (credits; empty: no limit)"
                input type="text" name="limit_credits" inputmode="decimal" maxlength="20"
                    value=(k.limit.as_ref().map(|l| money::plain(l.credits)).unwrap_or_default()); }
            label { "Per"
                select name="limit_period" {
                    @for p in [LimitPeriod::Day, LimitPeriod::Week, LimitPeriod::Month, LimitPeriod::Total] {
                        option value=(p.as_str()) selected[p == period] { (p.as_str()) }
                    }
                }
            }
            label { "Models it may use (comma-separated ids, or prefixes such as claude-sonnet-*; empty: all)"
                input type="text" name="allowed_models" maxlength="4000" value=(k.allowed_models.join(", ")); }
            label { "Expires on (UTC date; empty: never)"
                input type="date" name="expires_on" value=(k.expires_at.map(|e| e.format("%Y-%m-%d").to_string()).unwrap_or_default()); }
            button type="submit" { "Save" }
        }
    }
}

async fn own_key(state: &AppState, session: &CustomerSession, key_id: Uuid) -> PageResult<Key> {
    let mut conn = state.pool.acquire().await?;
    match crate::keys::fetch_key(&mut conn, key_id).await {
        Ok(k) if k.account_id == session.account_id => Ok(k),
        _ => Err(PageError::NotFound("You have no such key.".into())),
    }
}

async fn key_limits(
    session: CustomerSession,
    State(state): State<AppState>,
    axum::extract::Path(key_id): axum::extract::Path<Uuid>,
) -> PageResult<Html<String>> {
    let k = own_key(&state, &session, key_id).await?;
    render(
        &state,
        &session,
        &format!("Key {}", k.name),
        key_limits_page(&session, &k, None),
    )
    .await
}

#[derive(Deserialize)]
struct LimitsForm {
    #[serde(default)]
    limit_credits: String,
    #[serde(default)]
    limit_period: String,
    #[serde(default)]
    allowed_models: String,
    #[serde(default)]
    expires_on: String,
}

impl LimitsForm {
    /// The change as `PATCH /v1/keys/{key_id}` takes it.
    fn patch(&self) -> Result<serde_json::Value, String> {
        let credits = self.limit_credits.trim();
        let limit = if credits.is_empty() {
            serde_json::Value::Null
        } else {
            json!({"credits": credits, "period": self.limit_period.trim()})
        };
        let models: Vec<&str> = self
            .allowed_models
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        let day = self.expires_on.trim();
        let expires = if day.is_empty() {
            serde_json::Value::Null
        } else {
            let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|_| format!("{day:?} is not a date (YYYY-MM-DD)"))?;
            json!(date.and_time(chrono::NaiveTime::MIN).and_utc())
        };
        Ok(json!({"limit": limit, "allowed_models": models, "expires_at": expires}))
    }
}

async fn save_key_limits(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    axum::extract::Path(key_id): axum::extract::Path<Uuid>,
    Submitted { session, form, claim }: Submitted<CustomerSession, LimitsForm>,
) -> PageResult<Response> {
    let k = match own_key(&state, &session, key_id).await {
        Ok(k) => k,
        Err(e) => return claim.finish(&state, Err(e)).await,
    };
    let saved = match form.patch() {
        Ok(change) => {
            api.call(
                &session.actor(),
                Method::PATCH,
                &format!("/v1/keys/{key_id}"),
                Some(&change),
            )
            .await
        }
        Err(e) => Err(PageError::Refused(StatusCode::BAD_REQUEST, e)),
    };
    match saved {
        Ok(()) => {
            let done = Done::to(
                "/dashboard/keys",
                format!("The limits of key {} are saved.", k.name),
            );
            claim.finish(&state, Ok(done)).await
        }
        // A mistake in the form is shown on the form, with what was there.
        Err(PageError::Refused(status, message)) => {
            claim.release(&state).await;
            let page = render(
                &state,
                &session,
                &format!("Key {}", k.name),
                key_limits_page(&session, &k, Some(&message)),
            )
            .await?;
            Ok((status, page).into_response())
        }
        Err(e) => claim.finish(&state, Err(e)).await,
    }
}

async fn keys(session: CustomerSession, State(state): State<AppState>, uri: Uri) -> PageResult<Html<String>> {
    let keys = keys_of(&state, session.account_id).await?;
    let spent = all_time_spend(&state, session.account_id).await?;
    let standing = standing(&state, &session).await?;
    // Read last: a secret in the result is shown once, so nothing may fail after it is taken.
    let done = form::outcome(&state, session.token(), &uri).await?;
    Ok(page(
        &session,
        &standing,
        "API keys",
        keys_page(&session, &keys, &spent, done.as_ref()),
    ))
}

#[derive(Deserialize)]
struct NewKeyForm {
    #[serde(default)]
    name: String,
}

async fn create_key(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<CustomerSession, NewKeyForm>,
) -> PageResult<Response> {
    let path = format!("/v1/accounts/{}/keys", session.account_id);
    let created = api
        .json::<CreatedKey>(
            &session.actor(),
            Method::POST,
            &path,
            Some(&json!({ "name": form.name })),
        )
        .await
        .map(|created| {
            Done::to("/dashboard/keys", format!("Key {} created.", created.name)).with_secret(created.key)
        });
    claim.finish(&state, created).await
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    axum::extract::Path(key_id): axum::extract::Path<Uuid>,
    Submitted { session, claim, .. }: Submitted<CustomerSession, NoFields>,
) -> PageResult<Response> {
    let revoked = async {
        let k = own_key(&state, &session, key_id).await?;
        api.call(
            &session.actor(),
            Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            None,
        )
        .await?;
        Ok(Done::to(
            "/dashboard/keys",
            format!("Key {} revoked: requests with it stop within seconds.", k.name),
        ))
    }
    .await;
    claim.finish(&state, revoked).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/balance/stream", get(balance_stream))
        .route("/dashboard/keys", get(keys).post(create_key))
        .route("/dashboard/keys/{key_id}", get(key_limits).post(save_key_limits))
        .route("/dashboard/keys/{key_id}/revoke", post(revoke_key))
}
