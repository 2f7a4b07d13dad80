//! Exact cost of a request: credits at the public price, the upstream's list price in USD, and the
//! price version used. No rounding anywhere: a request costs fractions of a credit.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::price::{PriceEntry, PriceError, PriceTable, Rates};
use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Credits at the public price (official price x factor / $0.005), exact.
    pub credits: Decimal,
    /// The official list price in USD, exact (for margin reports).
    pub list_usd: Decimal,
    /// The family billed.
    pub model: String,
    /// The price version applied ([`crate::PriceEntry::version`]).
    pub price_version: String,
    /// The prompt-size tier applied (its threshold), if any.
    pub tier_above_prompt_tokens: Option<u64>,
    /// True when the served model had no price and the requested model's price was used.
    pub served_model_unpriced: bool,
}

/// Prices `usage` with the version in force at `admitted_at` of the model served, falling back to
/// the model requested when the served one has no price (or the response named none).
pub fn cost(
    table: &PriceTable,
    usage: &Usage,
    model_requested: &str,
    model_served: Option<&str>,
    admitted_at: DateTime<Utc>,
) -> Result<Cost, PriceError> {
    let p = price(table, usage, model_requested, model_served, admitted_at)?;
    Ok(Cost {
        credits: p.credits,
        list_usd: p.list_usd,
        model: p.entry.model.clone(),
        price_version: p.entry.version(),
        tier_above_prompt_tokens: p.tier,
        served_model_unpriced: p.served_model_unpriced,
    })
}

/// The credits [`cost`] answers, and whether the served model had no price: all a gateway needs
/// for its local spend, without the labels a usage record keeps (no allocation).
pub fn credits(
    table: &PriceTable,
    usage: &Usage,
    model_requested: &str,
    model_served: Option<&str>,
    admitted_at: DateTime<Utc>,
) -> Result<(Decimal, bool), PriceError> {
    let p = price(table, usage, model_requested, model_served, admitted_at)?;
    Ok((p.credits, p.served_model_unpriced))
}

struct Priced<'a> {
    entry: &'a PriceEntry,
    credits: Decimal,
    list_usd: Decimal,
    tier: Option<u64>,
    served_model_unpriced: bool,
}

fn price<'a>(
    table: &'a PriceTable,
    usage: &Usage,
    model_requested: &str,
    model_served: Option<&str>,
    admitted_at: DateTime<Utc>,
) -> Result<Priced<'a>, PriceError> {
    let served = model_served.filter(|m| !m.is_empty());
    let (entry, served_model_unpriced) = match served.map(|m| table.resolve(m, admitted_at)) {
        Some(Ok(entry)) => (entry, false),
        Some(Err(_)) => (table.resolve(model_requested, admitted_at)?, true),
        None => (table.resolve(model_requested, admitted_at)?, false),
    };
    let (rates, tier) = entry.rates_for(usage.prompt_tokens());
    let per_token_usd = list_usd_micro(usage, rates).ok_or(PriceError::Overflow)?;
    let searches = Decimal::from(usage.web_search_requests)
        .checked_mul(entry.web_search_usd_per_request)
        .ok_or(PriceError::Overflow)?;
    let list_usd = (per_token_usd / Decimal::from(1_000_000))
        .checked_add(searches)
        .ok_or(PriceError::Overflow)?
        .normalize();
    let credits = table
        .credits_for_usd(list_usd)
        .ok_or(PriceError::Overflow)?
        .normalize();
    Ok(Priced {
        entry,
        credits,
        list_usd,
        tier,
        served_model_unpriced,
    })
}

/// Sum of count x USD-per-million-tokens over the token categories (so: USD x 1e6).
fn list_usd_micro(u: &Usage, r: &Rates) -> Option<Decimal> {
    let thinking = u.thinking_tokens.min(u.output_tokens);
    let plain_output = u.output_tokens - thinking;
    [
        (u.input_tokens, r.input),
        (u.cache_write_5m_tokens, r.cache_write_5m),
        (u.cache_write_1h_tokens, r.cache_write_1h),
        (u.cache_read_tokens, r.cache_read),
        (plain_output, r.output),
        (thinking, r.thinking_rate()),
    ]
    .into_iter()
    .try_fold(Decimal::ZERO, |acc, (count, rate)| {
        acc.checked_add(Decimal::from(count).checked_mul(rate)?)
    })
}
