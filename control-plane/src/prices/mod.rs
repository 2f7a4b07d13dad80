//! Prices: the effective-dated table of official USD rates (seeded from metering's default table at
//! first start), the public listing with credits per token at the configured factor, and admin
//! changes effective from a time (earlier versions kept). The in-memory [`PriceCache`] follows the
//! database's price version, so every instance prices debits with the committed table.

pub mod store;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use metering::{Modifier, PriceEntry, PriceTable, Rates, Tier};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::check_text;
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::money::{self, Amount};
use crate::state::AppState;
use crate::sync;

use store::insert_version;
pub use store::{seed_defaults, PriceCache};

/// How far in the past an explicit `effective_from` may be (clock skew between admin and server).
const PAST_TOLERANCE_SECONDS: i64 = 60;

/// Rates of one kind, each a decimal string.
#[derive(Debug, Serialize, ToSchema)]
pub struct RatesView {
    pub input: String,
    pub cache_write_5m: String,
    pub cache_write_1h: String,
    pub cache_read: String,
    pub output: String,
    pub thinking: String,
}

impl RatesView {
    fn new(r: &Rates, f: impl Fn(Decimal) -> Decimal) -> Self {
        let p = |d: Decimal| money::plain(f(d));
        Self {
            input: p(r.input),
            cache_write_5m: p(r.cache_write_5m),
            cache_write_1h: p(r.cache_write_1h),
            cache_read: p(r.cache_read),
            output: p(r.output),
            thinking: p(r.thinking_rate()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    /// These rates apply to the whole request when its prompt (input + cache writes + cache reads)
    /// is strictly above this many tokens.
    pub above_prompt_tokens: u64,
    pub usd_per_mtok: RatesView,
    pub credits_per_token: RatesView,
}

/// One value of a modifier a model supports.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModifierView {
    /// The value, as the request (`speed`, `inference_geo`) and the answer's `usage` name it.
    pub value: String,
    /// Every rate of a request with this value is multiplied by this (modifiers stack).
    pub multiplier: String,
    /// The base rates with this value alone, in credits per token (with the other modifier too,
    /// multiply by its multiplier as well).
    pub credits_per_token: RatesView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub model: String,
    pub aliases: Vec<String>,
    pub effective_from: DateTime<Utc>,
    /// The label usage records keep (`model@effective_from`).
    pub version: String,
    /// True for the version that applies to requests admitted now.
    pub in_force: bool,
    pub tiers: Vec<TierView>,
    /// Official USD per million tokens.
    pub usd_per_mtok: RatesView,
    /// Credits per token at the configured price factor (1 credit = $0.005), exact.
    pub credits_per_token: RatesView,
    pub web_search_usd_per_request: String,
    pub web_search_credits_per_request: String,
    /// The `speed` values the model supports (a request asking another is refused with 400).
    pub speed: Vec<ModifierView>,
    /// The `inference_geo` values the model supports.
    pub inference_geo: Vec<ModifierView>,
    /// The fee of a request that declares the code execution tool (container time is not
    /// reported); null: such requests are refused unless a web_search_20260209 or
    /// web_fetch_20260209 tool makes the container free.
    pub code_execution_usd_per_request: Option<String>,
    pub code_execution_credits_per_request: Option<String>,
    /// The output bound of a request without `max_tokens` in its ceiling; null: the gateway's
    /// default.
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceList {
    pub data: Vec<PriceView>,
    /// The public price as a fraction of the official price.
    pub factor: String,
    /// The `inference_geo` billed where neither a request nor its answer names one (the
    /// upstream workspace's default, `UPSTREAM_INFERENCE_GEO`).
    pub default_inference_geo: String,
}

fn modifier_views(table: &PriceTable, e: &PriceEntry, modifier: Modifier) -> Vec<ModifierView> {
    e.multipliers(modifier)
        .iter()
        .map(|(value, m)| ModifierView {
            value: value.clone(),
            multiplier: money::plain(*m),
            credits_per_token: RatesView::new(&e.usd_per_mtok, |d| table.credits_per_token(d * *m)),
        })
        .collect()
}

fn view(table: &PriceTable, e: &PriceEntry, now: DateTime<Utc>) -> PriceView {
    let cpt = |d: Decimal| table.credits_per_token(d);
    let in_force = table
        .resolve(&e.model, now)
        .is_ok_and(|cur| cur.effective_from == e.effective_from);
    PriceView {
        model: e.model.clone(),
        aliases: e.aliases.clone(),
        effective_from: e.effective_from,
        version: e.version(),
        in_force,
        tiers: e
            .tiers
            .iter()
            .map(|t| TierView {
                above_prompt_tokens: t.above_prompt_tokens,
                usd_per_mtok: RatesView::new(&t.usd_per_mtok, |d| d),
                credits_per_token: RatesView::new(&t.usd_per_mtok, cpt),
            })
            .collect(),
        usd_per_mtok: RatesView::new(&e.usd_per_mtok, |d| d),
        credits_per_token: RatesView::new(&e.usd_per_mtok, cpt),
        web_search_usd_per_request: money::plain(e.web_search_usd_per_request),
        web_search_credits_per_request: money::plain(
            table
                .credits_for_usd(e.web_search_usd_per_request)
                .unwrap_or_default(),
        ),
        speed: modifier_views(table, e, Modifier::Speed),
        inference_geo: modifier_views(table, e, Modifier::InferenceGeo),
        code_execution_usd_per_request: e.code_execution_usd_per_request.map(money::plain),
        code_execution_credits_per_request: e
            .code_execution_usd_per_request
            .map(|fee| money::plain(table.credits_for_usd(fee).unwrap_or_default())),
        max_output_tokens: e.max_output_tokens,
    }
}

/// Every price version of every model (public).
#[utoipa::path(get, path = "/v1/prices", tag = "prices", responses((status = 200, body = PriceList)))]
async fn list_prices(State(state): State<AppState>) -> ApiResult<Json<PriceList>> {
    let mut conn = state.pool.acquire().await?;
    let table = state.prices.latest(&mut conn).await?;
    let now = Utc::now();
    Ok(Json(PriceList {
        data: table.entries().iter().map(|e| view(&table, e, now)).collect(),
        factor: money::plain(table.factor()),
        default_inference_geo: table
            .default_value(Modifier::InferenceGeo)
            .unwrap_or("global")
            .to_owned(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesInput {
    #[schema(value_type = String)]
    pub input: Amount,
    #[schema(value_type = String)]
    pub cache_write_5m: Amount,
    #[schema(value_type = String)]
    pub cache_write_1h: Amount,
    #[schema(value_type = String)]
    pub cache_read: Amount,
    #[schema(value_type = String)]
    pub output: Amount,
    /// Defaults to the output rate.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub thinking: Option<Amount>,
}

impl From<RatesInput> for Rates {
    fn from(r: RatesInput) -> Self {
        Rates {
            input: r.input.0,
            cache_write_5m: r.cache_write_5m.0,
            cache_write_1h: r.cache_write_1h.0,
            cache_read: r.cache_read.0,
            output: r.output.0,
            thinking: r.thinking.map(|t| t.0),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    pub above_prompt_tokens: u64,
    pub usd_per_mtok: RatesInput,
}

/// A new version of a model's price, in official USD per million tokens.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceChange {
    /// When the version starts to apply to admitted requests: now when absent, never in the past.
    #[serde(default)]
    pub effective_from: Option<DateTime<Utc>>,
    /// Default: the aliases of the model's latest version.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    pub usd_per_mtok: RatesInput,
    #[serde(default)]
    pub tiers: Vec<TierInput>,
    /// Default: the fee of the model's latest version, else 0.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub web_search_usd_per_request: Option<Amount>,
    /// The `speed` values the model supports, each with the multiplier of every rate (1 to 100),
    /// e.g. `{"standard": "1", "fast": "2"}`. A request asking for a value not listed is refused
    /// with 400. Default: the latest version's; `{}`: none.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub speed: Option<BTreeMap<String, Amount>>,
    /// The same for `inference_geo`, e.g. `{"global": "1", "us": "1.1"}`.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub inference_geo: Option<BTreeMap<String, Amount>>,
    /// USD billed per request that declares the code execution tool (its container time is not
    /// reported). Default: the latest version's; `null`: none (such requests are refused).
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>, nullable)]
    pub code_execution_usd_per_request: Option<Option<Amount>>,
    /// The most output tokens the model gives in one answer: the output side of the ceiling of a
    /// request that states no `max_tokens` (spend control `reserve`). Default: the latest
    /// version's; `null`: none (the gateway's default ceiling applies).
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<u64>, nullable)]
    pub max_output_tokens: Option<Option<u64>>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn multipliers(
    given: Option<BTreeMap<String, Amount>>,
    previous: Option<&BTreeMap<String, Decimal>>,
) -> BTreeMap<String, Decimal> {
    match given {
        Some(map) => map.into_iter().map(|(k, v)| (k, v.0)).collect(),
        None => previous.cloned().unwrap_or_default(),
    }
}

fn check_model_id(model: &str) -> ApiResult<()> {
    let ok = !model.is_empty()
        && model.len() <= 128
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "model must be 1 to 128 characters of letters, digits, '-', '.', '_' or ':'",
        ))
    }
}

/// Adds a version of a model's price (a new model, or a change effective from a time).
#[utoipa::path(put, path = "/v1/prices/{model}", tag = "prices", request_body = PriceChange,
    params(("model" = String, Path, description = "model family id, e.g. claude-sonnet-4-5")),
    security(("admin_token" = [])),
    responses((status = 201, body = PriceView), (status = 400, body = ErrorBody),
        (status = 409, description = "a version with that effective_from exists", body = ErrorBody),
        (status = 422, description = "the table would become invalid", body = ErrorBody)))]
async fn put_price(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiJson(body): ApiJson<PriceChange>,
) -> ApiResult<(StatusCode, Json<PriceView>)> {
    check_model_id(&model)?;
    let reason = body
        .reason
        .as_deref()
        .map(|r| check_text("reason", r, 1000))
        .transpose()?;
    let now = Utc::now();
    let effective_from = body.effective_from.unwrap_or(now);
    if effective_from < now - Duration::seconds(PAST_TOLERANCE_SECONDS) {
        return Err(ApiError::invalid(
            "effective_from is in the past; prices change from now on (requests already admitted keep their price)",
        ));
    }
    let mut tx = state.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7242652)")
        .execute(&mut *tx)
        .await?;
    let table = state.prices.latest(&mut tx).await?;
    let previous = table.entries().iter().rfind(|e| e.model == model);
    let entry = PriceEntry {
        model: model.clone(),
        aliases: body
            .aliases
            .or_else(|| previous.map(|p| p.aliases.clone()))
            .unwrap_or_default(),
        effective_from,
        usd_per_mtok: body.usd_per_mtok.into(),
        tiers: body
            .tiers
            .into_iter()
            .map(|t| Tier {
                above_prompt_tokens: t.above_prompt_tokens,
                usd_per_mtok: t.usd_per_mtok.into(),
            })
            .collect(),
        web_search_usd_per_request: body
            .web_search_usd_per_request
            .map(|a| a.0)
            .or_else(|| previous.map(|p| p.web_search_usd_per_request))
            .unwrap_or_default(),
        speed: multipliers(body.speed, previous.map(|p| &p.speed)),
        inference_geo: multipliers(body.inference_geo, previous.map(|p| &p.inference_geo)),
        code_execution_usd_per_request: match body.code_execution_usd_per_request {
            Some(fee) => fee.map(|a| a.0),
            None => previous.and_then(|p| p.code_execution_usd_per_request),
        },
        max_output_tokens: match body.max_output_tokens {
            Some(n) => n,
            None => previous.and_then(|p| p.max_output_tokens),
        },
    };
    entry.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
    if table
        .entries()
        .iter()
        .any(|e| e.model == model && e.effective_from == effective_from)
    {
        return Err(ApiError::conflict(format!(
            "{} already exists; choose another effective_from",
            entry.version()
        )));
    }
    let mut entries = table.entries().to_vec();
    entries.push(entry.clone());
    let new_table = PriceTable::new(entries, table.factor())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?
        .with_default_inference_geo(table.default_value(Modifier::InferenceGeo).map(str::to_owned));
    let audit = Audit {
        actor: &admin.actor,
        action: "price.set",
        target: format!("price:{model}"),
        reason: reason.as_deref(),
        details: serde_json::to_value(&entry).unwrap_or_default(),
    };
    audit::record(&mut tx, audit).await?;
    let version = sync::bump_prices(&mut tx).await?;
    insert_version(&mut tx, &entry, &admin.actor, reason.as_deref(), version).await?;
    tx.commit().await?;
    let body = view(&new_table, &entry, Utc::now());
    Ok((StatusCode::CREATED, Json(body)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_prices))
        .routes(routes!(put_price))
}
