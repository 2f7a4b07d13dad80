//! A request's ceiling: an upper estimate of what it may cost, computed before it is served from
//! what its body says, and held against the account's spendable balance while it runs (spend
//! control `reserve`).
//!
//! * Output: the request's `max_tokens` (or `max_completion_tokens`, whichever is larger when both
//!   are given); absent, the model's `max_output_tokens` from the price table, else the gateway's
//!   default. The upstream never produces more than the bound it was given.
//! * Input: the body's bytes, base64 images left out, divided by `input_bytes_per_token`, plus a
//!   bound per image. English prose runs about 4 bytes per token with the tokenizers before
//!   Claude 4.7 and about 3 with 4.7 and later (30% more tokens for the same text), and JSON syntax
//!   and escapes add bytes without tokens: the default of 2.5 bytes per token stays above the
//!   newer tokenizers for prose and code. It is an estimate, not a bound: text of rare characters
//!   can run near 1 byte per token. An image is billed about width x height / 750 tokens after
//!   the upstream resizes it (a few thousand at most), so its base64 bytes say little: a base64
//!   image source (in a message's or a tool result's content) or `data:image/` URL counts as
//!   `media_block_tokens`. Documents (PDF pages are billed as text plus an image each) and
//!   everything else count by their bytes. The estimate never passes `input_tokens_max`, the largest context
//!   window: the upstream refuses a longer prompt (a 400, not billed).
//! * Prompt-size tier from the input estimate, modifiers the request asks for (else the upstream's
//!   default), the code execution fee when the request declares that tool.
//! * Web searches: the declared `max_uses` at the model's fee; a search tool without `max_uses`
//!   counts as `web_searches_default`.
//! * Each `fallbacks` model and each advisor model as one more step with the same input and output
//!   bounds at its own rates.
//!
//! Not covered, so an answer can exceed its ceiling: cache writes (the 1-hour write rate is twice
//! the input rate), compaction steps, searches beyond the default where none was declared, input
//! the body only refers to (a document by URL or file id, what web fetch and search bring into a
//! multi-step tool loop). The
//! debit is always the answer's actual cost; the ceiling only decides admission.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::cost::{credits, ServedRequest};
use crate::price::{PriceError, PriceTable};
use crate::request::{RequestFields, RequestedOptions};
use crate::usage::{Iteration, Usage, MAX_COUNT};

/// How the estimate is made (the gateway's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CeilingRules {
    /// Body bytes per input token, above 0.
    pub input_bytes_per_token: Decimal,
    /// Tokens a base64 image or document block counts for.
    pub media_block_tokens: u64,
    /// Output tokens when neither the request nor the price table bounds them.
    pub output_tokens_default: u64,
    /// Web searches a search tool without `max_uses` counts for.
    pub web_searches_default: u64,
    /// The most input tokens any request can have (the largest context window).
    pub input_tokens_max: u64,
}

impl Default for CeilingRules {
    fn default() -> Self {
        CeilingRules {
            input_bytes_per_token: Decimal::new(25, 1),
            media_block_tokens: 4_000,
            output_tokens_default: 64_000,
            web_searches_default: 10,
            input_tokens_max: 1_000_000,
        }
    }
}

/// Where the output bound came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputBound {
    /// The request's `max_tokens` / `max_completion_tokens`.
    Request,
    /// The model's `max_output_tokens` in the price table.
    Model,
    /// The gateway's default.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    /// Credits, exact.
    pub credits: Decimal,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub output_bound: OutputBound,
}

/// The ceiling of a request whose body (`body_len` bytes as received) read as `fields`, for the
/// model it names, admitted at `at`. The model must be priced (checked before, by
/// [`crate::billable::check`]).
pub fn ceiling(
    table: &PriceTable,
    fields: &RequestFields,
    requested: &RequestedOptions,
    body_len: u64,
    at: DateTime<Utc>,
    rules: &CeilingRules,
) -> Result<Ceiling, PriceError> {
    let model = fields.model.as_deref().unwrap_or_default();
    let entry = table.resolve(model, at)?;
    let (output_tokens, output_bound) = match fields.max_tokens.max(fields.max_completion_tokens) {
        Some(n) => (n, OutputBound::Request),
        None => match entry.max_output_tokens {
            Some(n) => (n, OutputBound::Model),
            None => (rules.output_tokens_default, OutputBound::Default),
        },
    };
    let output_tokens = output_tokens.min(MAX_COUNT);
    let input_tokens = input_estimate(fields, body_len, rules);
    let searches = match (fields.tools.web_search, fields.tools.web_search_max_uses) {
        (0, _) => 0,
        (_, Some(n)) => n,
        (n, None) => u64::from(n).saturating_mul(rules.web_searches_default),
    };
    // An admin's separate thinking rate may be the higher one: output may all be thinking.
    let thinking_priced = entry.usd_per_mtok.thinking.is_some()
        || entry.tiers.iter().any(|t| t.usd_per_mtok.thinking.is_some());
    if fields.fallbacks.is_empty() && fields.tools.advisor_models.is_empty() && !thinking_priced {
        let credits = plain_ceiling(table, entry, requested, input_tokens, output_tokens, searches)
            .ok_or(PriceError::Overflow)?;
        return Ok(Ceiling {
            credits,
            input_tokens,
            output_tokens,
            output_bound,
        });
    }
    let step = |kind: &str, model: &str| Iteration {
        kind: kind.to_owned(),
        model: Some(model.to_owned()),
        input_tokens,
        output_tokens,
        ..Iteration::default()
    };
    let mut usage = Usage {
        input_tokens,
        output_tokens,
        web_search_requests: searches.min(MAX_COUNT),
        ..Usage::default()
    };
    usage
        .iterations
        .extend(fields.fallbacks.iter().map(|m| step("fallback_message", m)));
    usage.iterations.extend(
        fields
            .tools
            .advisor_models
            .iter()
            .map(|m| step("advisor_message", m)),
    );
    fn request<'a>(
        usage: &'a Usage,
        model: &'a str,
        requested: &'a RequestedOptions,
        at: DateTime<Utc>,
    ) -> ServedRequest<'a> {
        ServedRequest {
            usage,
            model_requested: model,
            model_served: None,
            requested,
            admitted_at: at,
        }
    }
    let (mut credits_max, _) = credits(table, &request(&usage, model, requested, at))?;
    if thinking_priced {
        usage.thinking_tokens = output_tokens;
        credits_max = credits_max.max(credits(table, &request(&usage, model, requested, at))?.0);
    }
    Ok(Ceiling {
        credits: credits_max,
        input_tokens,
        output_tokens,
        output_bound,
    })
}

/// The ceiling of a request with no steps beyond its own and no separate thinking rate, priced as
/// [`credits`] prices such a usage (input and output at the tier of the input, the request's
/// modifiers or the upstream's default, web searches and the code execution fee), with the few
/// operations it needs: every request computes one.
fn plain_ceiling(
    table: &PriceTable,
    entry: &crate::price::PriceEntry,
    requested: &RequestedOptions,
    input_tokens: u64,
    output_tokens: u64,
    searches: u64,
) -> Option<Decimal> {
    use crate::price::Modifier;
    let (rates, _) = entry.rates_for(input_tokens);
    let multiplier = |m: Modifier, asked: Option<&str>| {
        asked
            .or_else(|| table.default_value(m))
            .and_then(|v| entry.multiplier(m, v))
            .unwrap_or(Decimal::ONE)
    };
    let mut usd_micro = Decimal::from(input_tokens)
        .checked_mul(rates.input)?
        .checked_add(Decimal::from(output_tokens).checked_mul(rates.output)?)?;
    let m = multiplier(Modifier::Speed, requested.speed.as_deref())
        * multiplier(Modifier::InferenceGeo, requested.inference_geo.as_deref());
    if m != Decimal::ONE {
        usd_micro = usd_micro.checked_mul(m)?;
    }
    let mut usd = usd_micro / Decimal::from(1_000_000);
    if searches > 0 {
        usd = usd.checked_add(Decimal::from(searches).checked_mul(entry.web_search_usd_per_request)?)?;
    }
    if requested.code_execution {
        usd = usd.checked_add(entry.code_execution_usd_per_request.unwrap_or_default())?;
    }
    Some(table.credits_for_usd(usd)?.normalize())
}

/// The input estimate, in tokens (see the module documentation).
pub fn input_estimate(fields: &RequestFields, body_len: u64, rules: &CeilingRules) -> u64 {
    let text_bytes = body_len.saturating_sub(fields.media_bytes);
    let per_token = if rules.input_bytes_per_token > Decimal::ZERO {
        rules.input_bytes_per_token
    } else {
        Decimal::ONE
    };
    let text_tokens = (Decimal::from(text_bytes) / per_token).ceil();
    let text_tokens = u64::try_from(text_tokens).unwrap_or(MAX_COUNT);
    text_tokens
        .saturating_add(fields.media_blocks.saturating_mul(rules.media_block_tokens))
        .min(rules.input_tokens_max)
        .min(MAX_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestMeter;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn table() -> PriceTable {
        PriceTable::default_table(Decimal::new(70, 2)).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).unwrap()
    }

    fn read(body: &str) -> RequestFields {
        let mut m = RequestMeter::new();
        m.feed(body.as_bytes());
        m.finish().unwrap()
    }

    fn of(body: &str) -> Ceiling {
        let f = read(body);
        ceiling(
            &table(),
            &f,
            &f.requested_options(),
            body.len() as u64,
            at(),
            &CeilingRules::default(),
        )
        .unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Credits per token at 70% of `usd_per_mtok`.
    fn rate(usd_per_mtok: &str) -> Decimal {
        d(usd_per_mtok) * d("0.7") / d("1000000") / d("0.005")
    }

    #[test]
    fn output_at_max_tokens_plus_the_input_estimate() {
        let body =
            r#"{"model":"claude-opus-4-8","max_tokens":32000,"messages":[{"role":"user","content":"Hi"}]}"#;
        let c = of(body);
        assert_eq!(c.output_bound, OutputBound::Request);
        assert_eq!(c.output_tokens, 32_000);
        // 90 bytes / 2.5 = 36 tokens.
        assert_eq!(body.len(), 90);
        assert_eq!(c.input_tokens, 36);
        assert_eq!(c.credits, rate("25") * d("32000") + rate("5") * d("36"));
        assert_eq!(c.credits, d("112.0252"));
    }

    #[test]
    fn the_larger_of_max_tokens_and_max_completion_tokens_counts() {
        let a = of(r#"{"model":"claude-sonnet-4-6","max_completion_tokens":10,"max_tokens":500}"#);
        let b = of(r#"{"model":"claude-sonnet-4-6","max_tokens":10,"max_completion_tokens":500}"#);
        assert_eq!((a.output_tokens, b.output_tokens), (500, 500));
    }

    #[test]
    fn without_max_tokens_the_model_or_the_default_bounds_output() {
        let body = r#"{"model":"claude-opus-5-5","messages":[]}"#;
        let f = read(body);
        let mut t = table();
        let model_bound = t.resolve("claude-opus-5-5", at()).unwrap().max_output_tokens;
        let c = of(body);
        match model_bound {
            Some(n) => assert_eq!((c.output_tokens, c.output_bound), (n, OutputBound::Model)),
            None => assert_eq!(c.output_bound, OutputBound::Default),
        }
        let mut entries = t.entries().to_vec();
        for e in &mut entries {
            e.max_output_tokens = None;
        }
        t = PriceTable::new(entries, Decimal::new(70, 2)).unwrap();
        let rules = CeilingRules {
            output_tokens_default: 1234,
            ..CeilingRules::default()
        };
        let c = ceiling(&t, &f, &f.requested_options(), body.len() as u64, at(), &rules).unwrap();
        assert_eq!((c.output_tokens, c.output_bound), (1234, OutputBound::Default));
    }

    #[test]
    fn base64_images_count_per_block_not_per_byte() {
        let image = "A".repeat(2_000_000);
        let block = |media: &str, kind: &str| {
            format!(
                r#"{{"type":"image","source":{{"data":"{image}","media_type":"{media}","type":"{kind}"}}}}"#
            )
        };
        let body = format!(
            r#"{{"model":"claude-sonnet-4-6","max_tokens":100,"messages":[{{"role":"user","content":[{},{{"type":"tool_result","tool_use_id":"t","content":[{}]}},{{"type":"text","text":"What is this?"}}]}}]}}"#,
            block("image/png", "base64"),
            block("image/jpeg", "base64"),
        );
        let f = read(&body);
        assert_eq!((f.media_blocks, f.media_bytes), (2, 4_000_000));
        let c = of(&body);
        let text = body.len() as u64 - 4_000_000;
        let expected = (Decimal::from(text) / d("2.5")).ceil();
        assert_eq!(c.input_tokens, u64::try_from(expected).unwrap() + 2 * 4_000);
        // An OpenAI image data URL too; a PDF file is counted by its bytes.
        let body = format!(
            r#"{{"model":"claude-sonnet-4-6","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}},{{"type":"file","file":{{"file_data":"data:application/pdf;base64,{image}"}}}}]}}]}}"#
        );
        assert_eq!(read(&body).media_blocks, 1);
    }

    /// What the upstream reads as text is counted as text: a PDF or a text document, a source
    /// that is not base64, and an image-shaped source where no image can be (a tool_use input).
    #[test]
    fn only_images_where_images_go_are_counted_per_block() {
        let data = "A".repeat(10_000);
        let count = |content: String| {
            read(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{content}]}}]}}"#
            ))
            .media_blocks
        };
        let source = |media: &str, kind: &str| {
            format!(r#"{{"type":"{kind}","media_type":"{media}","data":"{data}"}}"#)
        };
        assert_eq!(
            count(format!(
                r#"{{"type":"image","source":{}}}"#,
                source("image/png", "base64")
            )),
            1
        );
        assert_eq!(
            count(format!(
                r#"{{"type":"document","source":{}}}"#,
                source("application/pdf", "base64")
            )),
            0
        );
        assert_eq!(
            count(format!(
                r#"{{"type":"document","source":{}}}"#,
                source("text/plain", "text")
            )),
            0
        );
        assert_eq!(
            count(format!(
                r#"{{"type":"tool_use","id":"x","name":"n","input":{{"source":{}}}}}"#,
                source("image/png", "base64")
            )),
            0
        );
        assert_eq!(
            count(format!(
                r#"{{"type":"tool_use","id":"x","name":"n","input":{{"content":[{{"source":{}}}]}}}}"#,
                source("image/png", "base64")
            )),
            0
        );
        assert_eq!(
            read(r#"{"model":"m","metadata":{"source":{"data":"xyz"}}}"#).media_blocks,
            0
        );
    }

    #[test]
    fn modifiers_tiers_and_fees_apply_as_in_the_debit() {
        // Bodies of different lengths: 100 bytes a token makes both inputs 1 token.
        let coarse = CeilingRules {
            input_bytes_per_token: d("100"),
            ..CeilingRules::default()
        };
        let of_coarse = |body: &str| {
            let f = read(body);
            ceiling(
                &table(),
                &f,
                &f.requested_options(),
                body.len() as u64,
                at(),
                &coarse,
            )
            .unwrap()
        };
        let plain = of_coarse(r#"{"model":"claude-opus-5-5","max_tokens":1000}"#);
        let fast =
            of_coarse(r#"{"model":"claude-opus-5-5","max_tokens":1000,"speed":"fast","inference_geo":"us"}"#);
        assert_eq!((plain.input_tokens, fast.input_tokens), (1, 1));
        assert_eq!(fast.credits, plain.credits * d("2.2"));
        // Haiku 5.5 switches every rate above 100,000 prompt tokens: 300 KB of text is past it.
        let long = format!(
            r#"{{"model":"claude-haiku-5-5","max_tokens":1000,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(300_000)
        );
        let c = of(&long);
        assert!(c.input_tokens > 100_000);
        assert_eq!(
            c.credits,
            rate("0.50") * Decimal::from(c.input_tokens) + rate("2.50") * d("1000")
        );
    }

    #[test]
    fn web_search_max_uses_fallbacks_and_advisors_add_their_maxima() {
        let base = of(r#"{"model":"claude-sonnet-4-6","max_tokens":100}"#);
        let search = |tools: &str| {
            let body = format!(r#"{{"model":"claude-sonnet-4-6","max_tokens":100,"tools":{tools}}}"#);
            let c = of(&body);
            let input = rate("3") * Decimal::from(c.input_tokens);
            c.credits - input - rate("15") * d("100")
        };
        // 10 USD per 1,000 searches: 0.01 USD each, 1.4 credits at 70%.
        assert_eq!(
            search(r#"[{"type":"web_search_20250305","name":"web_search","max_uses":5}]"#),
            d("7")
        );
        assert_eq!(
            search(r#"[{"type":"web_search_20250305","name":"web_search"}]"#),
            d("14")
        );
        assert_eq!(
            search(
                r#"[{"type":"web_search_20250305","max_uses":2},{"type":"web_search_20260209","max_uses":3}]"#
            ),
            d("7")
        );
        let fb = of(r#"{"model":"claude-sonnet-4-6","max_tokens":100,"fallbacks":["claude-opus-4-8"]}"#);
        let opus_step = rate("25") * d("100") + rate("5") * Decimal::from(fb.input_tokens);
        let sonnet = rate("15") * d("100") + rate("3") * Decimal::from(fb.input_tokens);
        assert_eq!(fb.credits, sonnet + opus_step);
        assert!(base.credits < sonnet);
    }

    #[test]
    fn the_input_estimate_stops_at_the_largest_context_window() {
        let body = format!(
            r#"{{"model":"claude-sonnet-4-6","max_tokens":1,"system":"{}"}}"#,
            "y".repeat(6_000_000)
        );
        let c = of(&body);
        assert_eq!(c.input_tokens, 1_000_000);
    }

    /// The plain computation equals the general one (pricing the same maximal usage) for every
    /// model, tier, modifier, search count and code execution fee of the shipped tables.
    #[test]
    fn the_plain_ceiling_prices_as_the_debit_would() {
        let table = table();
        let mut checked = 0;
        for entry in table.entries() {
            let at = entry.effective_from;
            let Ok(resolved) = table.resolve(&entry.model, at) else {
                continue;
            };
            if resolved != entry {
                continue;
            }
            let speeds: Vec<Option<String>> = std::iter::once(None)
                .chain(entry.speed.keys().cloned().map(Some))
                .collect();
            let geos: Vec<Option<String>> = std::iter::once(None)
                .chain(entry.inference_geo.keys().cloned().map(Some))
                .collect();
            for speed in &speeds {
                for geo in &geos {
                    for (input, output, searches) in
                        [(0, 0, 0), (36, 32_000, 0), (150_000, 1, 7), (999_999, 64_000, 3)]
                    {
                        for code_execution in [false, entry.code_execution_usd_per_request.is_some()] {
                            let requested = RequestedOptions {
                                speed: speed.clone(),
                                inference_geo: geo.clone(),
                                code_execution,
                            };
                            let plain =
                                plain_ceiling(&table, entry, &requested, input, output, searches).unwrap();
                            let usage = Usage {
                                input_tokens: input,
                                output_tokens: output,
                                web_search_requests: searches,
                                ..Usage::default()
                            };
                            let served = ServedRequest {
                                usage: &usage,
                                model_requested: &entry.model,
                                model_served: None,
                                requested: &requested,
                                admitted_at: at,
                            };
                            let (general, _) = credits(&table, &served).unwrap();
                            assert_eq!(
                                plain, general,
                                "{} {requested:?} {input} {output} {searches}",
                                entry.model
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
        // And with the upstream's default inference geo.
        let table = table.with_default_inference_geo(Some("us".into()));
        let entry = table.resolve("claude-opus-5-5", at()).unwrap();
        let requested = RequestedOptions::default();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 10,
            ..Usage::default()
        };
        let served = ServedRequest {
            usage: &usage,
            model_requested: "claude-opus-5-5",
            model_served: None,
            requested: &requested,
            admitted_at: at(),
        };
        assert_eq!(
            plain_ceiling(&table, entry, &requested, 10, 10, 0).unwrap(),
            credits(&table, &served).unwrap().0
        );
    }

    #[test]
    fn absurd_max_tokens_gives_a_large_ceiling_not_an_overflow() {
        let c = of(r#"{"model":"claude-fable-5-2","max_tokens":1000000000000}"#);
        assert_eq!(c.output_tokens, MAX_COUNT);
        assert!(c.credits > d("1000000"));
    }
}
