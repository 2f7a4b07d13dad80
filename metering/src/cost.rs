//! Exact cost of a request: credits at the public price, the upstream's list price in USD, and the
//! price version used. No rounding anywhere: a request costs fractions of a credit. One function
//! ([`cost`], and [`credits`] without the labels) prices every request, in the filter's local spend
//! and in the control plane's authoritative debit.
//!
//! What the upstream bills, as `prices-2026-12.md` states it:
//! * the top-level usage at the served model's version in force at admission (the requested
//!   model's when the served one has no price), its prompt-size tier chosen by every input-side
//!   token;
//! * every rate of the request multiplied by its modifiers (`speed`, `inference_geo`): the value the
//!   answer reports when the model's version prices it, else the value the request asked for, else
//!   the upstream's default (the table's `inference_geo` default, the operator's workspace
//!   setting), else none (x1). A reported value the version does not price is billed as
//!   unreported, and flagged (`not_available`, which older models report, is no news);
//! * `usage.iterations` on top: compaction steps at the served model, advisor steps at the
//!   advisor's model, fallback attempts at their own model (free when they declined before any
//!   output), steps of unknown types at their model rather than dropped; the serving step
//!   (`message`) is the top-level usage already, and `fallback_credit` is already in the reported
//!   counts. A step's model without a price is billed at the served model's rates, and flagged.
//!   A step on the served model takes the top-level modifiers; a step of another model (a
//!   fallback attempt, an advisor) the request's values, since the answer's report describes the
//!   serving attempt only: at the step model's multiplier where it prices the value, else the
//!   served model's (never less);
//! * web searches at the version's fee, and the code execution fee when the request declared it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::price::{Modifier, PriceEntry, PriceError, PriceTable, Rates};
use crate::request::RequestedOptions;
use crate::usage::{Iteration, IterationKind, Usage};

/// What a served request's price depends on.
#[derive(Debug, Clone, Copy)]
pub struct ServedRequest<'a> {
    pub usage: &'a Usage,
    pub model_requested: &'a str,
    /// The model the answer named, when it named one.
    pub model_served: Option<&'a str>,
    /// What the request asked for that changes its price.
    pub requested: &'a RequestedOptions,
    /// When the gateway admitted it: selects the price versions.
    pub admitted_at: DateTime<Utc>,
}

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
    /// The `speed` billed: the priced value the answer reported, else the one requested, else
    /// the value reported without a price (billed x1), else none.
    pub speed: Option<String>,
    /// The `inference_geo` billed, chosen the same way.
    pub inference_geo: Option<String>,
    /// The product of the modifiers' multipliers on the top-level usage (1 without modifiers).
    pub multiplier: Decimal,
    /// The answer reported a modifier value the served model's version has no multiplier for
    /// (billed as if unreported): the price table needs that value.
    pub reported_modifier_unpriced: bool,
    /// A step of `usage.iterations` named a model without a price (billed at the served model's
    /// rates).
    pub iteration_model_unpriced: bool,
}

/// Prices a served request. See the module documentation.
pub fn cost(table: &PriceTable, request: &ServedRequest<'_>) -> Result<Cost, PriceError> {
    let p = price(table, request)?;
    let label = |m: &Modifier| p.modifiers.label(*m, request, table).map(str::to_owned);
    Ok(Cost {
        credits: p.credits,
        list_usd: p.list_usd,
        model: p.entry.model.clone(),
        price_version: p.entry.version(),
        tier_above_prompt_tokens: p.tier,
        served_model_unpriced: p.served_model_unpriced,
        speed: label(&Modifier::Speed),
        inference_geo: label(&Modifier::InferenceGeo),
        multiplier: p.modifiers.multiplier,
        reported_modifier_unpriced: p.modifiers.reported_unpriced,
        iteration_model_unpriced: p.iteration_model_unpriced,
    })
}

/// The credits [`cost`] answers, and whether the served model had no price: all a gateway needs
/// for its local spend, without the labels a usage record keeps (no allocation).
pub fn credits(table: &PriceTable, request: &ServedRequest<'_>) -> Result<(Decimal, bool), PriceError> {
    let p = price(table, request)?;
    Ok((p.credits, p.served_model_unpriced))
}

struct Priced<'a> {
    entry: &'a PriceEntry,
    credits: Decimal,
    list_usd: Decimal,
    tier: Option<u64>,
    served_model_unpriced: bool,
    modifiers: Modifiers,
    iteration_model_unpriced: bool,
}

/// Where each modifier's billed value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Reported,
    Requested,
    /// The upstream's default, neither asked for nor reported.
    Default,
    /// Reported, without a multiplier in the version: billed x1.
    ReportedUnpriced,
    None,
}

/// The modifiers of the top-level usage.
struct Modifiers {
    speed: Source,
    inference_geo: Source,
    multiplier: Decimal,
    reported_unpriced: bool,
}

impl Modifiers {
    fn label<'r>(
        &self,
        modifier: Modifier,
        request: &ServedRequest<'r>,
        table: &'r PriceTable,
    ) -> Option<&'r str> {
        let (source, reported, requested) = match modifier {
            Modifier::Speed => (self.speed, &request.usage.speed, &request.requested.speed),
            Modifier::InferenceGeo => (
                self.inference_geo,
                &request.usage.inference_geo,
                &request.requested.inference_geo,
            ),
        };
        match source {
            Source::Reported | Source::ReportedUnpriced => reported.as_deref(),
            Source::Requested => requested.as_deref(),
            Source::Default => table.default_value(modifier),
            Source::None => None,
        }
    }
}

/// The multiplier of one modifier on `entry`, and where its value came from: the reported value
/// when `entry` prices it (or `fallback`: for the top-level usage of a request another model
/// served, the requested model's version; for a step of another model, the served model's),
/// else the requested value's (the admission checked that the requested model prices it), else 1.
fn modifier(
    modifier: Modifier,
    entry: &PriceEntry,
    fallback: Option<&PriceEntry>,
    reported: Option<&str>,
    requested: Option<&str>,
    default: Option<&str>,
) -> (Decimal, Source) {
    let of = |value: &str| {
        entry
            .multiplier(modifier, value)
            .or_else(|| fallback.and_then(|f| f.multiplier(modifier, value)))
    };
    if let Some(m) = reported.and_then(of) {
        return (m, Source::Reported);
    }
    if let Some(value) = requested {
        return (of(value).unwrap_or(Decimal::ONE), Source::Requested);
    }
    if reported.is_none() {
        if let Some(m) = default.and_then(of) {
            return (m, Source::Default);
        }
    }
    match reported {
        Some(_) => (Decimal::ONE, Source::ReportedUnpriced),
        None => (Decimal::ONE, Source::None),
    }
}

/// Both modifiers' multiplier on `entry` (see [`modifier`]). `with_report`: whether the answer's
/// top-level report applies (it describes the serving attempt, not a step of another model).
fn modifiers(
    table: &PriceTable,
    entry: &PriceEntry,
    fallback: Option<&PriceEntry>,
    request: &ServedRequest<'_>,
    with_report: bool,
) -> Modifiers {
    let (usage, asked) = (request.usage, request.requested);
    fn report(value: &Option<String>, with_report: bool) -> Option<&str> {
        value.as_deref().filter(|_| with_report)
    }
    let default_geo = table.default_value(Modifier::InferenceGeo);
    // Most requests ask for no modifier and the answer reports none: nothing to look up.
    if report(&usage.speed, with_report).is_none()
        && report(&usage.inference_geo, with_report).is_none()
        && asked.speed.is_none()
        && asked.inference_geo.is_none()
        && default_geo.is_none()
    {
        return Modifiers {
            speed: Source::None,
            inference_geo: Source::None,
            multiplier: Decimal::ONE,
            reported_unpriced: false,
        };
    }
    let (m_speed, speed) = modifier(
        Modifier::Speed,
        entry,
        fallback,
        report(&usage.speed, with_report),
        asked.speed.as_deref(),
        table.default_value(Modifier::Speed),
    );
    let (m_geo, inference_geo) = modifier(
        Modifier::InferenceGeo,
        entry,
        fallback,
        report(&usage.inference_geo, with_report),
        asked.inference_geo.as_deref(),
        default_geo,
    );
    // A reported value without a price is news only where the version prices that modifier at
    // all, and other than `not_available` (which older models and regions report).
    let unpriced = |m: Modifier, reported: Option<&str>| {
        reported.is_some_and(|v| {
            v != "not_available"
                && entry.multiplier(m, v).is_none()
                && fallback.is_none_or(|f| f.multiplier(m, v).is_none())
                && !entry.multipliers(m).is_empty()
        })
    };
    Modifiers {
        speed,
        inference_geo,
        multiplier: m_speed * m_geo,
        reported_unpriced: unpriced(Modifier::Speed, report(&usage.speed, with_report))
            || unpriced(Modifier::InferenceGeo, report(&usage.inference_geo, with_report)),
    }
}

fn price<'a>(table: &'a PriceTable, request: &ServedRequest<'_>) -> Result<Priced<'a>, PriceError> {
    let at = request.admitted_at;
    let usage = request.usage;
    let served = request.model_served.filter(|m| !m.is_empty());
    let (entry, served_model_unpriced) = match served.map(|m| table.resolve(m, at)) {
        Some(Ok(entry)) => (entry, false),
        Some(Err(_)) => (table.resolve(request.model_requested, at)?, true),
        None => (table.resolve(request.model_requested, at)?, false),
    };
    // The requested model's version prices what the request asked for when the served one does
    // not (a fallback served it): looked up only then.
    let requested_entry = || match served {
        Some(m) if m != request.model_requested && !served_model_unpriced => {
            table.resolve(request.model_requested, at).ok()
        }
        _ => None,
    };
    let modifiers = if request.requested.speed.is_some() || request.requested.inference_geo.is_some() {
        modifiers(table, entry, requested_entry(), request, true)
    } else {
        modifiers(table, entry, None, request, true)
    };
    let (rates, tier) = entry.rates_for(usage.prompt_tokens());
    let mut usd_micro =
        tokens_usd_micro(&Counts::of(usage), rates, modifiers.multiplier).ok_or(PriceError::Overflow)?;
    let mut iteration_model_unpriced = false;
    for step in &usage.iterations {
        let Some(step_usd_micro) = step_usd_micro(table, entry, request, step, &mut iteration_model_unpriced)
        else {
            continue;
        };
        usd_micro = usd_micro
            .checked_add(step_usd_micro?)
            .ok_or(PriceError::Overflow)?;
    }
    let mut fees = Decimal::from(usage.web_search_requests)
        .checked_mul(entry.web_search_usd_per_request)
        .ok_or(PriceError::Overflow)?;
    if request.requested.code_execution {
        let fee = entry
            .code_execution_usd_per_request
            .or_else(|| requested_entry().and_then(|e| e.code_execution_usd_per_request))
            .unwrap_or_default();
        fees = fees.checked_add(fee).ok_or(PriceError::Overflow)?;
    }
    let list_usd = (usd_micro / Decimal::from(1_000_000))
        .checked_add(fees)
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
        modifiers,
        iteration_model_unpriced,
    })
}

/// One step of `usage.iterations` in USD x 1e6, or `None` when the step is not billed on top of
/// the top-level usage.
fn step_usd_micro(
    table: &PriceTable,
    served: &PriceEntry,
    request: &ServedRequest<'_>,
    step: &Iteration,
    model_unpriced: &mut bool,
) -> Option<Result<Decimal, PriceError>> {
    match step.kind() {
        IterationKind::Message | IterationKind::FallbackCredit => return None,
        IterationKind::FallbackMessage if step.output_tokens == 0 => return None,
        IterationKind::Compaction
        | IterationKind::FallbackMessage
        | IterationKind::AdvisorMessage
        | IterationKind::Other => {}
    }
    let entry = match step.model.as_deref().filter(|m| !m.is_empty()) {
        None => served,
        Some(model) => table.resolve(model, request.admitted_at).unwrap_or_else(|_| {
            *model_unpriced = true;
            served
        }),
    };
    // A step on the served model takes the top-level report; a step of another model only what
    // the request asked (the report describes the serving attempt).
    let other_model = !std::ptr::eq(entry, served);
    let fallback = other_model.then_some(served);
    let multiplier = modifiers(table, entry, fallback, request, !other_model).multiplier;
    let (rates, _) = entry.rates_for(step.prompt_tokens());
    Some(tokens_usd_micro(&Counts::step(step), rates, multiplier).ok_or(PriceError::Overflow))
}

/// Token counts by rate.
struct Counts {
    input: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
    cache_read: u64,
    plain_output: u64,
    thinking: u64,
}

impl Counts {
    fn of(u: &Usage) -> Self {
        let thinking = u.thinking_tokens.min(u.output_tokens);
        Counts {
            input: u.input_tokens,
            cache_write_5m: u.cache_write_5m_tokens,
            cache_write_1h: u.cache_write_1h_tokens,
            cache_read: u.cache_read_tokens,
            plain_output: u.output_tokens - thinking,
            thinking,
        }
    }

    fn step(s: &Iteration) -> Self {
        Counts {
            input: s.input_tokens,
            cache_write_5m: s.cache_write_5m_tokens,
            cache_write_1h: s.cache_write_1h_tokens,
            cache_read: s.cache_read_tokens,
            plain_output: s.output_tokens,
            thinking: 0,
        }
    }
}

/// Sum of count x USD-per-million-tokens over the token categories, times the modifiers'
/// multiplier (so: USD x 1e6).
fn tokens_usd_micro(c: &Counts, r: &Rates, multiplier: Decimal) -> Option<Decimal> {
    let sum = [
        (c.input, r.input),
        (c.cache_write_5m, r.cache_write_5m),
        (c.cache_write_1h, r.cache_write_1h),
        (c.cache_read, r.cache_read),
        (c.plain_output, r.output),
        (c.thinking, r.thinking_rate()),
    ]
    .into_iter()
    .try_fold(Decimal::ZERO, |acc, (count, rate)| {
        acc.checked_add(Decimal::from(count).checked_mul(rate)?)
    })?;
    if multiplier == Decimal::ONE {
        Some(sum)
    } else {
        sum.checked_mul(multiplier)
    }
}
