//! The console's catalogue: the price table (every version; add one effective from a date) and
//! the credit plans (add, rename, retire or offer again). Changes go through the API; each form
//! posts once and its result is shown once on the page it redirects to.

use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{NaiveDate, Utc};
use maud::html;
use metering::Modifier;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::console_page::render;
use super::form::{self, Done, Submitted};
use super::html::{credits, usd, when};
use super::session::AdminSession;
use super::{ApiClient, PageError, PageResult};
use crate::money;
use crate::state::AppState;

/// `fast ×2, standard ×1`, or a dash when the model accepts no value.
fn modifier_list(e: &metering::PriceEntry, modifier: Modifier) -> String {
    let values = e.multipliers(modifier);
    if values.is_empty() {
        return "—".into();
    }
    values
        .iter()
        .map(|(v, m)| format!("{v} ×{}", money::plain(*m)))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn prices(session: AdminSession, State(state): State<AppState>, uri: Uri) -> PageResult<Html<String>> {
    let done = form::outcome(&state, session.token(), &uri).await?;
    let mut conn = state.pool.acquire().await?;
    let table = state.prices.latest(&mut conn).await?;
    let now = Utc::now();
    let mut entries: Vec<_> = table.entries().iter().collect();
    entries.sort_by(|a, b| {
        a.model
            .cmp(&b.model)
            .then(b.effective_from.cmp(&a.effective_from))
    });
    let in_force = |e: &metering::PriceEntry| {
        e.effective_from <= now
            && !entries
                .iter()
                .any(|o| o.model == e.model && o.effective_from > e.effective_from && o.effective_from <= now)
    };
    let rate = |d: Decimal| money::plain(d);
    let body = html! {
        (form::notice(done.as_ref()))
        p.muted { "Official USD per million tokens; customers pay " (money::plain(table.factor())) " of it, in credits of $0.005. "
            "Speed and inference geo: the values each model accepts and the multiplier of every rate (they stack); "
            "a request asking for a value not listed is refused. New versions keep them; change them with PUT /v1/prices/{model}." }
        div.table-wrap {
        table #prices {
            thead { tr {
                th { "Model" } th { "Effective from" } th { "State" } th.num { "Input" } th.num { "Output" }
                th.num { "Cache write 5m" } th.num { "Cache write 1h" } th.num { "Cache read" } th.num { "Thinking" } th { "Tiers" }
                th { "Speed" } th { "Inference geo" } th.num { "Code execution (USD / request)" }
            } }
            tbody {
                @for e in &entries {
                    tr {
                        td.mono { (e.model) @for a in &e.aliases { br; span.muted { (a) } } }
                        td { (when(e.effective_from)) }
                        td { @if in_force(e) { strong { "in force" } } @else if e.effective_from > now { "scheduled" } @else { span.muted { "superseded" } } }
                        td.num { (rate(e.usd_per_mtok.input)) } td.num { (rate(e.usd_per_mtok.output)) }
                        td.num { (rate(e.usd_per_mtok.cache_write_5m)) } td.num { (rate(e.usd_per_mtok.cache_write_1h)) }
                        td.num { (rate(e.usd_per_mtok.cache_read)) } td.num { (rate(e.usd_per_mtok.thinking_rate())) }
                        td { (e.tiers.len()) }
                        td { (modifier_list(e, Modifier::Speed)) }
                        td { (modifier_list(e, Modifier::InferenceGeo)) }
                        td.num { @match e.code_execution_usd_per_request { Some(fee) => (rate(fee)), None => span.muted { "refused" } } }
                    }
                }
            }
        }
        }
        h2 { "Add a price version" }
        form.stack.card #price-form method="post" action="/admin/prices" {
            (form::fields(&session.csrf))
            label { "Model family id" input type="text" name="model" required maxlength="128" placeholder="claude-sonnet-4-5"; }
            label { "Effective from (UTC; today means now)" input type="date" name="effective_from" required value=(now.date_naive()); }
            label { "Input (USD / Mtok)" input type="text" name="input" required inputmode="decimal"; }
            label { "Output" input type="text" name="output" required inputmode="decimal"; }
            label { "Cache write 5m" input type="text" name="cache_write_5m" required inputmode="decimal"; }
            label { "Cache write 1h" input type="text" name="cache_write_1h" required inputmode="decimal"; }
            label { "Cache read" input type="text" name="cache_read" required inputmode="decimal"; }
            label { "Thinking (empty: the output rate)" input type="text" name="thinking" inputmode="decimal"; }
            label { "Reason" input type="text" name="reason" maxlength="1000"; }
            button type="submit" { "Add version" }
            p.muted { "Prompt-size tiers and aliases: PUT /v1/prices/{model} in the API." }
        }
    };
    Ok(render(&state, &session, "Prices", body))
}

#[derive(Deserialize)]
struct PriceForm {
    #[serde(default)]
    model: String,
    #[serde(default)]
    effective_from: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    output: String,
    #[serde(default)]
    cache_write_5m: String,
    #[serde(default)]
    cache_write_1h: String,
    #[serde(default)]
    cache_read: String,
    #[serde(default)]
    thinking: String,
    #[serde(default)]
    reason: String,
}

fn rate_field(name: &str, value: &str) -> PageResult<Value> {
    let v = value.trim();
    money::parse_plain(v).map_err(|e| PageError::BadRequest(format!("{name}: {e}")))?;
    Ok(Value::String(v.to_owned()))
}

/// The price version a form describes, as `PUT /v1/prices/{model}` takes it: the model and the body.
async fn price_version(state: &AppState, form: &PriceForm) -> PageResult<(String, Value)> {
    let model = form.model.trim();
    // The model becomes a path segment: only the characters the API accepts in a model id.
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(PageError::BadRequest(
            "model must be letters, digits, '-', '.', '_' or ':'".into(),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let table = state.prices.latest(&mut conn).await?;
    if table
        .entries()
        .iter()
        .any(|e| e.model == model && !e.tiers.is_empty())
    {
        return Err(PageError::BadRequest(format!(
            "{model} has prompt-size tiers; change it with PUT /v1/prices/{model} so that the tiers are kept"
        )));
    }
    let date = NaiveDate::parse_from_str(form.effective_from.trim(), "%Y-%m-%d")
        .map_err(|_| PageError::BadRequest("effective from: a date such as 2026-12-01".into()))?;
    let today = Utc::now().date_naive();
    let effective_from = if date == today {
        Value::Null
    } else {
        json!(date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
    };
    let mut rates = json!({
        "input": rate_field("input", &form.input)?,
        "output": rate_field("output", &form.output)?,
        "cache_write_5m": rate_field("cache write 5m", &form.cache_write_5m)?,
        "cache_write_1h": rate_field("cache write 1h", &form.cache_write_1h)?,
        "cache_read": rate_field("cache read", &form.cache_read)?,
    });
    if !form.thinking.trim().is_empty() {
        rates["thinking"] = rate_field("thinking", &form.thinking)?;
    }
    let reason = form.reason.trim();
    let mut body = json!({ "usd_per_mtok": rates });
    if !effective_from.is_null() {
        body["effective_from"] = effective_from;
    }
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    Ok((model.to_owned(), body))
}

async fn add_price(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<AdminSession, PriceForm>,
) -> PageResult<Response> {
    let added = async {
        let (model, body) = price_version(&state, &form).await?;
        api.call(
            &session.actor(),
            Method::PUT,
            &format!("/v1/prices/{model}"),
            Some(&body),
        )
        .await?;
        Ok(Done::to(
            "/admin/prices",
            format!(
                "Price version of {model} added, effective from {}.",
                form.effective_from.trim()
            ),
        ))
    }
    .await;
    claim.finish(&state, added).await
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    id: Uuid,
    name: String,
    credits: Decimal,
    price_usd: Decimal,
    active: bool,
}

async fn plans(session: AdminSession, State(state): State<AppState>, uri: Uri) -> PageResult<Html<String>> {
    let done = form::outcome(&state, session.token(), &uri).await?;
    let rows: Vec<PlanRow> =
        sqlx::query_as("SELECT id, name, credits, price_usd, active FROM plans ORDER BY price_usd, name")
            .fetch_all(&state.pool)
            .await?;
    let csrf = &session.csrf;
    let body = html! {
        (form::notice(done.as_ref()))
        div.table-wrap {
        table #plans {
            thead { tr { th { "Name" } th.num { "Credits" } th.num { "Price" } th { "Offered" } th { "Rename" } th {} } }
            tbody {
                @for p in &rows {
                    tr {
                        td { (p.name) } td.num { (credits(p.credits)) } td.num { (usd(p.price_usd)) }
                        td { @if p.active { "yes" } @else { span.muted { "retired" } } }
                        td { form.row method="post" action={ "/admin/plans/" (p.id) } {
                            (form::fields(csrf))
                            input type="text" name="name" value=(p.name) required maxlength="200";
                            button.secondary type="submit" { "Rename" }
                        } }
                        td { form.inline method="post" action={ "/admin/plans/" (p.id) } {
                            (form::fields(csrf))
                            input type="hidden" name="active" value=(!p.active);
                            button.secondary type="submit" { @if p.active { "Retire" } @else { "Offer again" } }
                        } }
                    }
                }
            }
        }
        }
        h2 { "New plan" }
        form.row.card method="post" action="/admin/plans" {
            (form::fields(csrf))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            label { "Credits" input type="text" name="credits" required inputmode="decimal"; }
            label { "Price (USD)" input type="text" name="price_usd" required inputmode="decimal"; }
            button type="submit" { "Add plan" }
        }
        p.muted { "A plan's credits and price never change (purchases refer to it): add a plan and retire the old one." }
    };
    Ok(render(&state, &session, "Plans", body))
}

#[derive(Deserialize)]
struct NewPlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    price_usd: String,
}

async fn add_plan(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<AdminSession, NewPlanForm>,
) -> PageResult<Response> {
    let added = async {
        let body = json!({
            "name": form.name.trim(),
            "credits": rate_field("credits", &form.credits)?,
            "price_usd": rate_field("price", &form.price_usd)?,
        });
        api.call(&session.actor(), Method::POST, "/v1/plans", Some(&body))
            .await?;
        Ok(Done::to(
            "/admin/plans",
            format!("Plan {} added and offered.", form.name.trim()),
        ))
    }
    .await;
    claim.finish(&state, added).await
}

#[derive(Deserialize)]
struct PlanChangeForm {
    name: Option<String>,
    active: Option<bool>,
}

async fn change_plan(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, PlanChangeForm>,
) -> PageResult<Response> {
    let mut body = json!({});
    let mut said = Vec::new();
    if let Some(name) = &form.name {
        body["name"] = json!(name);
        said.push(format!("renamed {name}"));
    }
    if let Some(active) = form.active {
        body["active"] = json!(active);
        said.push(if active { "offered again" } else { "retired" }.to_owned());
    }
    let changed = api
        .call(
            &session.actor(),
            Method::PATCH,
            &format!("/v1/plans/{id}"),
            Some(&body),
        )
        .await
        .map(|()| Done::to("/admin/plans", format!("Plan {}.", said.join(" and "))));
    claim.finish(&state, changed).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/prices", get(prices).post(add_price))
        .route("/admin/plans", get(plans).post(add_plan))
        .route("/admin/plans/{id}", post(change_plan))
}
