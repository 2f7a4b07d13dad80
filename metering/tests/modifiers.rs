//! What the December 2026 API bills beyond the five token categories (`prices-2026-12.md`): the
//! lineup as new versions, fast mode and US-only inference as multipliers of every rate, the
//! per-iteration usage, the code execution fee, and the admission check that refuses what cannot
//! be billed. Property checks use a seeded generator, so that they run natively and in wasm alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use metering::billable::{check, Unbillable};
use metering::price::{default_price_factor, PriceTable};
use metering::request::RequestMeter;
use metering::{cost, credits, Cost, Iteration, RequestedOptions, ServedRequest, Usage};
use rust_decimal::Decimal;
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn table() -> PriceTable {
    PriceTable::default_table(default_price_factor()).unwrap()
}

fn december() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap()
}

fn november() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn options(speed: Option<&str>, geo: Option<&str>) -> RequestedOptions {
    RequestedOptions {
        speed: speed.map(str::to_owned),
        inference_geo: geo.map(str::to_owned),
        code_execution: false,
    }
}

fn price(usage: &Usage, model: &str, requested: &RequestedOptions) -> Cost {
    price_at(usage, model, requested, december())
}

fn price_at(usage: &Usage, model: &str, requested: &RequestedOptions, at: DateTime<Utc>) -> Cost {
    cost(
        &table(),
        &ServedRequest {
            usage,
            model_requested: model,
            model_served: Some(model),
            requested,
            admitted_at: at,
        },
    )
    .unwrap()
}

fn input(n: u64) -> Usage {
    Usage {
        input_tokens: n,
        ..Usage::default()
    }
}

fn reported(mut usage: Usage, speed: Option<&str>, geo: Option<&str>) -> Usage {
    usage.speed = speed.map(str::to_owned);
    usage.inference_geo = geo.map(str::to_owned);
    usage
}

// ---------------------------------------------------------------------------------------------
// The December lineup

#[test]
fn the_newest_models_are_priced_from_december_and_older_usage_keeps_its_version() {
    let none = RequestedOptions::default();
    let c = price(&input(1_000_000), "claude-fable-5-2-20261120", &none);
    assert_eq!(c.model, "claude-fable-5-2");
    assert_eq!(c.price_version, "claude-fable-5-2@2026-12-01T00:00:00Z");
    // 8 USD per million input at 70%, in credits of $0.005.
    assert_eq!(c.credits, dec("1120"));
    let c = price(&input(1_000_000), "claude-mythos-5-2", &none);
    assert_eq!(c.list_usd, dec("8"));
    // Admitted before the version starts: not yet priced (refused at admission).
    let before = cost(
        &table(),
        &ServedRequest {
            usage: &input(1),
            model_requested: "claude-fable-5-2",
            model_served: None,
            requested: &none,
            admitted_at: november(),
        },
    );
    assert!(before.is_err());
    // Usage admitted in November keeps the November version.
    let old = price_at(&input(1_000), "claude-sonnet-5-5", &none, november());
    assert_eq!(old.price_version, "claude-sonnet-5-5@2026-10-07T00:00:00Z");
    let new = price(&input(1_000), "claude-sonnet-5-5", &none);
    assert_eq!(new.price_version, "claude-sonnet-5-5@2026-12-01T00:00:00Z");
    assert_eq!(old.credits, new.credits);
}

#[test]
fn december_versions_list_the_modifiers_each_model_supports() {
    let t = table();
    let entry = |m: &str| t.resolve(m, december()).unwrap();
    let fast = metering::Modifier::Speed;
    let geo = metering::Modifier::InferenceGeo;
    for m in [
        "claude-fable-5-2",
        "claude-mythos-5-2",
        "claude-opus-5-5",
        "claude-opus-5",
    ] {
        assert_eq!(entry(m).multiplier(fast, "fast"), Some(dec("2")), "{m}");
        assert_eq!(entry(m).multiplier(geo, "us"), Some(dec("1.1")), "{m}");
    }
    // Opus 4.6 takes fast and bills it standard; 4.7 refuses it; 4.8's fast mode ended.
    assert_eq!(
        entry("claude-opus-4-6").multiplier(fast, "fast"),
        Some(Decimal::ONE)
    );
    for m in [
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
    ] {
        assert_eq!(entry(m).multiplier(fast, "fast"), None, "{m}");
        assert_eq!(entry(m).multiplier(fast, "standard"), Some(Decimal::ONE), "{m}");
    }
    // Models before Claude 4.6 refuse inference_geo.
    for m in ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"] {
        assert!(entry(m).multipliers(geo).is_empty(), "{m}");
    }
    // Nothing prices code execution by default.
    assert!(t
        .entries()
        .iter()
        .all(|e| e.code_execution_usd_per_request.is_none()));
}

// ---------------------------------------------------------------------------------------------
// Modifiers

#[test]
fn fast_and_us_multiply_every_category_on_opus_5_5() {
    let usage = Usage {
        input_tokens: 1_000_000,
        cache_write_5m_tokens: 1_000_000,
        cache_write_1h_tokens: 1_000_000,
        cache_read_tokens: 1_000_000,
        output_tokens: 1_000_000,
        ..Usage::default()
    };
    let standard = price(&usage, "claude-opus-5-5", &RequestedOptions::default());
    // 4 + 5 + 8 + 0.20 + 20
    assert_eq!(standard.list_usd, dec("37.2"));
    let asked = options(Some("fast"), Some("us"));
    let c = price(
        &reported(usage, Some("fast"), Some("us")),
        "claude-opus-5-5",
        &asked,
    );
    assert_eq!(c.list_usd, dec("81.84"), "37.2 x 2 x 1.1");
    assert_eq!(c.credits, dec("11457.6"));
    assert_eq!(c.multiplier, dec("2.2"));
    assert_eq!(
        (c.speed.as_deref(), c.inference_geo.as_deref()),
        (Some("fast"), Some("us"))
    );
    // The shared file's own example: fast + US on Opus 5.5 input is 8.80 USD per million.
    let c = price(
        &reported(input(1_000_000), Some("fast"), Some("us")),
        "claude-opus-5-5",
        &asked,
    );
    assert_eq!(c.list_usd, dec("8.8"));
}

#[test]
fn the_answer_wins_and_a_missing_report_bills_what_was_asked() {
    let asked = options(Some("fast"), Some("us"));
    let base = price(&input(1_000_000), "claude-opus-5-5", &RequestedOptions::default()).list_usd;
    // Asked fast, ran standard (reported): standard.
    let ran_standard = price(
        &reported(input(1_000_000), Some("standard"), Some("global")),
        "claude-opus-5-5",
        &asked,
    );
    assert_eq!(ran_standard.list_usd, base);
    assert_eq!(ran_standard.speed.as_deref(), Some("standard"));
    // Asked, not reported: billed as asked.
    let silent = price(&input(1_000_000), "claude-opus-5-5", &asked);
    assert_eq!(silent.list_usd, base * dec("2.2"));
    // Reported without being asked (a workspace default): billed as reported.
    let default_us = price(
        &reported(input(1_000_000), None, Some("us")),
        "claude-opus-5-5",
        &RequestedOptions::default(),
    );
    assert_eq!(default_us.list_usd, base * dec("1.1"));
}

#[test]
fn modifiers_multiply_the_tier_rates_and_the_cache_rates() {
    // Haiku 5.5 above 100,000 prompt tokens: every rate switches, then x1.1 for US inference.
    let usage = Usage {
        input_tokens: 60_000,
        cache_read_tokens: 50_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    let asked = options(None, Some("us"));
    let c = price(&reported(usage, None, Some("us")), "claude-haiku-5-5", &asked);
    assert_eq!(c.tier_above_prompt_tokens, Some(100_000));
    // (60,000 x 0.50 + 50,000 x 0.05 + 1,000 x 2.50) / 1e6 x 1.1
    assert_eq!(c.list_usd, dec("0.03850"));
}

#[test]
fn a_reported_value_without_a_price_bills_as_unreported_and_is_flagged() {
    // Asked fast, the answer says a speed the table does not know: the request's value is billed.
    let c = price(
        &reported(input(1_000_000), Some("turbo"), None),
        "claude-opus-5-5",
        &options(Some("fast"), None),
    );
    assert_eq!(c.list_usd, dec("8"));
    assert_eq!(c.speed.as_deref(), Some("fast"));
    assert!(c.reported_modifier_unpriced);
    // Asked nothing: x1, the value kept for the record.
    let c = price(
        &reported(input(1_000_000), Some("turbo"), None),
        "claude-opus-5-5",
        &RequestedOptions::default(),
    );
    assert_eq!((c.list_usd, c.speed.as_deref()), (dec("4"), Some("turbo")));
    // An older model reporting `not_available`: no geo on it, so no news.
    let c = price(
        &reported(input(1_000_000), None, Some("not_available")),
        "claude-opus-4-5",
        &RequestedOptions::default(),
    );
    assert_eq!(c.list_usd, dec("5"));
    assert!(!c.reported_modifier_unpriced);
}

// ---------------------------------------------------------------------------------------------
// Iterations

fn step(kind: &str, model: Option<&str>, input: u64, output: u64) -> Iteration {
    Iteration {
        kind: kind.into(),
        model: model.map(str::to_owned),
        input_tokens: input,
        output_tokens: output,
        ..Iteration::default()
    }
}

#[test]
fn compaction_is_billed_on_top_of_the_top_level_usage_and_the_message_step_is_not() {
    let mut usage = Usage {
        input_tokens: 10_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    let without = price(&usage, "claude-sonnet-4-6", &RequestedOptions::default()).list_usd;
    usage.iterations = vec![
        step("compaction", None, 180_000, 3_500),
        step("message", Some("claude-sonnet-4-6"), 10_000, 1_000),
    ];
    let with = price(&usage, "claude-sonnet-4-6", &RequestedOptions::default()).list_usd;
    // 180,000 x 3 + 3,500 x 15 = 592,500 micro-USD on top.
    assert_eq!(with - without, dec("0.5925"));
}

#[test]
fn advisor_steps_bill_at_the_advisor_model_and_fallbacks_at_their_own() {
    let usage = input(1_000);
    let base = price(&usage, "claude-sonnet-5-5", &RequestedOptions::default()).list_usd;
    let with = |steps: Vec<Iteration>| {
        let mut u = usage.clone();
        u.iterations = steps;
        price(&u, "claude-sonnet-5-5", &RequestedOptions::default()).list_usd - base
    };
    // Opus 4.8 advising: 1,000 x 5 + 100 x 25 micro-USD.
    assert_eq!(
        with(vec![step("advisor_message", Some("claude-opus-4-8"), 1_000, 100)]),
        dec("0.0075")
    );
    // A fallback that declined before any output is free, one that produced output is billed.
    assert_eq!(
        with(vec![step("fallback_message", Some("claude-opus-5-5"), 50_000, 0)]),
        Decimal::ZERO
    );
    assert_eq!(
        with(vec![step("fallback_message", Some("claude-opus-5-5"), 1_000, 10)]),
        dec("0.0042")
    );
    // A type this gateway does not know is billed rather than dropped.
    assert_eq!(
        with(vec![step("review_pass", Some("claude-opus-4-8"), 1_000, 0)]),
        dec("0.005")
    );
}

#[test]
fn a_step_model_without_a_price_bills_at_the_served_model_and_is_flagged() {
    let mut usage = input(0);
    usage.iterations = vec![step("advisor_message", Some("claude-unknown-9"), 1_000_000, 0)];
    let c = price(&usage, "claude-sonnet-4-6", &RequestedOptions::default());
    assert_eq!(c.list_usd, dec("3"));
    assert!(c.iteration_model_unpriced);
}

#[test]
fn steps_take_the_request_modifiers() {
    let mut usage = reported(input(0), Some("fast"), None);
    usage.iterations = vec![step("compaction", None, 1_000_000, 0)];
    let c = price(&usage, "claude-opus-5-5", &options(Some("fast"), None));
    assert_eq!(c.list_usd, dec("8"), "compaction on a fast request: 4 x 2");
    // A step on a model without fast is billed at the served model's multiplier (never less).
    usage.iterations = vec![step("advisor_message", Some("claude-sonnet-4-6"), 1_000_000, 0)];
    let c = price(&usage, "claude-opus-5-5", &options(Some("fast"), None));
    assert_eq!(c.list_usd, dec("6"));
}

// ---------------------------------------------------------------------------------------------
// Code execution

#[test]
fn code_execution_costs_its_fee_when_the_operator_set_one() {
    let mut entries = table().entries().to_vec();
    for e in entries.iter_mut().filter(|e| e.model == "claude-opus-5-5") {
        e.code_execution_usd_per_request = Some(dec("0.005"));
    }
    let t = PriceTable::new(entries, default_price_factor()).unwrap();
    let asked = RequestedOptions {
        code_execution: true,
        ..RequestedOptions::default()
    };
    let c = cost(
        &t,
        &ServedRequest {
            usage: &input(0),
            model_requested: "claude-opus-5-5",
            model_served: None,
            requested: &asked,
            admitted_at: december(),
        },
    )
    .unwrap();
    assert_eq!((c.list_usd, c.credits), (dec("0.005"), dec("0.7")));
}

// ---------------------------------------------------------------------------------------------
// Refused before the upstream gets a byte

fn admit(body: &str, t: &PriceTable) -> Result<RequestedOptions, Unbillable> {
    let mut meter = RequestMeter::new();
    meter.feed(body.as_bytes());
    let fields = meter.finish().unwrap();
    let model = fields.model.clone().unwrap();
    check(t, &model, &fields, december())
}

#[test]
fn modifier_values_without_a_multiplier_are_refused_with_the_field_and_the_remedy() {
    let t = table();
    let ok = admit(
        r#"{"model":"claude-opus-5-5","speed":"fast","inference_geo":"us","messages":[]}"#,
        &t,
    )
    .unwrap();
    assert_eq!(ok, options(Some("fast"), Some("us")));
    for (body, field, value) in [
        (r#"{"model":"claude-sonnet-4-6","speed":"fast"}"#, "speed", "fast"),
        (r#"{"model":"claude-opus-4-7","speed":"fast"}"#, "speed", "fast"),
        (
            r#"{"model":"claude-opus-5-5","speed":"ludicrous"}"#,
            "speed",
            "ludicrous",
        ),
        (
            r#"{"model":"claude-opus-4-5","inference_geo":"us"}"#,
            "inference_geo",
            "us",
        ),
        (
            r#"{"model":"claude-opus-5-5","inference_geo":"eu"}"#,
            "inference_geo",
            "eu",
        ),
    ] {
        let err = admit(body, &t).unwrap_err();
        assert_eq!(err.reason(), "modifier_not_priced", "{body}");
        let m = err.to_string();
        assert!(
            m.contains(field) && m.contains(&format!("{value:?}")) && m.contains("PUT /v1/prices/"),
            "{m}"
        );
    }
    // Standard speed is accepted everywhere the December table prices a model.
    assert!(admit(r#"{"model":"claude-haiku-4-5","speed":"standard"}"#, &t).is_ok());
}

#[test]
fn fallbacks_and_advisors_must_be_priced() {
    let t = table();
    assert!(admit(
        r#"{"model":"claude-opus-5-5","fallbacks":["claude-sonnet-5-5",{"model":"claude-haiku-5-5"}]}"#,
        &t
    )
    .is_ok());
    let err = admit(
        r#"{"model":"claude-opus-5-5","fallbacks":["claude-sonnet-5-5","claude-nope-1"]}"#,
        &t,
    )
    .unwrap_err();
    assert_eq!(err, Unbillable::Fallback("claude-nope-1".into()));
    let err = admit(
        r#"{"model":"claude-sonnet-5-5","tools":[{"type":"advisor_20260301","name":"advisor","model":"claude-nope-2"}]}"#,
        &t,
    )
    .unwrap_err();
    assert_eq!(err, Unbillable::Advisor("claude-nope-2".into()));
}

#[test]
fn code_execution_is_refused_unless_priced_or_made_free_by_a_web_tool() {
    let t = table();
    let body =
        r#"{"model":"claude-opus-5-5","tools":[{"type":"code_execution_20250825","name":"code_execution"}]}"#;
    let err = admit(body, &t).unwrap_err();
    assert_eq!(err.reason(), "tool_not_metered");
    assert!(
        err.to_string().contains("code_execution_usd_per_request"),
        "{err}"
    );
    // Declared beside a web tool of the 2026-02-09 versions, the container is free.
    let free = r#"{"model":"claude-opus-5-5","tools":[{"name":"code_execution","type":"code_execution_20250825"},{"type":"web_fetch_20260209","name":"web_fetch"}]}"#;
    assert!(!admit(free, &t).unwrap().code_execution);
    // Priced by the operator: admitted, and its debit carries the fee.
    let mut entries = t.entries().to_vec();
    for e in entries.iter_mut() {
        e.code_execution_usd_per_request = Some(dec("0.01"));
    }
    let priced = PriceTable::new(entries, default_price_factor()).unwrap();
    assert!(admit(body, &priced).unwrap().code_execution);
}

// ---------------------------------------------------------------------------------------------
// Properties, over seeded random usages

/// splitmix64: a small deterministic generator (the same cases on every platform).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn count(&mut self) -> u64 {
        match self.below(4) {
            0 => 0,
            1 => self.below(100),
            2 => self.below(300_000),
            _ => self.below(5_000_000),
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const MODELS: [&str; 6] = [
    "claude-opus-5-5",
    "claude-fable-5-2",
    "claude-opus-4-6",
    "claude-haiku-5-5",
    "claude-sonnet-4-6",
    "claude-opus-4-5",
];

fn random_usage(rng: &mut Rng) -> Usage {
    let output = rng.count();
    let mut usage = Usage {
        input_tokens: rng.count(),
        output_tokens: output,
        thinking_tokens: rng.below(output + 1),
        cache_write_5m_tokens: rng.count(),
        cache_write_1h_tokens: rng.count(),
        cache_read_tokens: rng.count(),
        web_search_requests: rng.below(5),
        ..Usage::default()
    };
    for _ in 0..rng.below(3) {
        let kind = rng.pick(&[
            "compaction",
            "message",
            "advisor_message",
            "fallback_message",
            "other",
        ]);
        let model = (rng.below(2) == 0).then(|| rng.pick(&MODELS).to_owned());
        usage.iterations.push(Iteration {
            kind: kind.into(),
            model,
            input_tokens: rng.count(),
            output_tokens: rng.count(),
            cache_write_5m_tokens: rng.count(),
            cache_write_1h_tokens: rng.count(),
            cache_read_tokens: rng.count(),
        });
    }
    usage
}

#[test]
fn property_a_modifier_never_makes_a_request_cheaper() {
    let t = table();
    let mut rng = Rng(7);
    for case in 0..3_000 {
        let usage = random_usage(&mut rng);
        let model = rng.pick(&MODELS);
        let entry = t.resolve(model, december()).unwrap();
        let speed = rng.pick(&["fast", "standard"]);
        let geo = rng.pick(&["us", "global"]);
        let speed = entry.multiplier(metering::Modifier::Speed, speed).map(|_| speed);
        let geo = entry
            .multiplier(metering::Modifier::InferenceGeo, geo)
            .map(|_| geo);
        let plain = price(&usage, model, &RequestedOptions::default());
        // Asked (and the answer silent), reported, or both.
        let asked = options(speed, geo);
        let silent = price(&usage, model, &asked);
        let told = price(
            &reported(usage.clone(), speed, geo),
            model,
            &RequestedOptions::default(),
        );
        let both = price(&reported(usage.clone(), speed, geo), model, &asked);
        for (name, c) in [("asked", &silent), ("reported", &told), ("both", &both)] {
            assert!(
                c.credits >= plain.credits,
                "case {case} {name}: {} < {}",
                c.credits,
                plain.credits
            );
            assert!(c.list_usd >= plain.list_usd, "case {case} {name}");
        }
        // A report that omits a requested modifier bills it as requested.
        assert_eq!(silent.credits, both.credits, "case {case}");
        // A report without the request's value bills the same where every step ran on the
        // served model; steps of other models take only what was asked (the report describes
        // the serving attempt), so never more there.
        let other_models = usage
            .iterations
            .iter()
            .any(|s| s.model.as_deref().is_some_and(|m| m != model));
        if other_models {
            assert!(told.credits <= silent.credits, "case {case}");
        } else {
            assert_eq!(silent.credits, told.credits, "case {case}");
        }
        // credits() is cost()'s figure.
        let (local, _) = credits(
            &t,
            &ServedRequest {
                usage: &usage,
                model_requested: model,
                model_served: Some(model),
                requested: &asked,
                admitted_at: december(),
            },
        )
        .unwrap();
        assert_eq!(local, silent.credits, "case {case}");
    }
}

#[test]
fn property_steps_only_ever_add_to_the_bill() {
    let mut rng = Rng(11);
    for case in 0..2_000 {
        let usage = random_usage(&mut rng);
        let model = rng.pick(&MODELS);
        let asked = RequestedOptions::default();
        let without = Usage {
            iterations: Vec::new(),
            ..usage.clone()
        };
        assert!(
            price(&usage, model, &asked).credits >= price(&without, model, &asked).credits,
            "case {case}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What the review of the first version found

#[test]
fn a_fallback_attempt_that_ran_fast_is_billed_fast_whatever_the_serving_attempt_reports() {
    // Asked fast on Opus 5.5 with a Sonnet fallback; Opus declined after 500 output tokens and
    // Sonnet served, reporting standard speed (the report describes the serving attempt only).
    let mut usage = reported(input(1_000), Some("standard"), None);
    usage.iterations = vec![step("fallback_message", Some("claude-opus-5-5"), 10_000, 500)];
    let asked = options(Some("fast"), None);
    let c = cost(
        &table(),
        &ServedRequest {
            usage: &usage,
            model_requested: "claude-opus-5-5",
            model_served: Some("claude-sonnet-4-6"),
            requested: &asked,
            admitted_at: december(),
        },
    )
    .unwrap();
    // Sonnet 4.6 standard: 1,000 x 3; the Opus attempt fast: (10,000 x 4 + 500 x 20) x 2.
    assert_eq!(c.list_usd, dec("0.103"));
}

#[test]
fn the_upstream_default_inference_geo_is_billed_where_nobody_names_one() {
    let t = table().with_default_inference_geo(Some("us".into()));
    let price_with = |usage: &Usage, model: &str| {
        cost(
            &t,
            &ServedRequest {
                usage,
                model_requested: model,
                model_served: Some(model),
                requested: &RequestedOptions::default(),
                admitted_at: december(),
            },
        )
        .unwrap()
    };
    let c = price_with(&input(1_000_000), "claude-opus-5-5");
    assert_eq!((c.list_usd, c.inference_geo.as_deref()), (dec("4.4"), Some("us")));
    // The answer's report still wins; a model without US-only inference is not multiplied.
    let c = price_with(
        &reported(input(1_000_000), None, Some("global")),
        "claude-opus-5-5",
    );
    assert_eq!(c.list_usd, dec("4"));
    assert_eq!(
        price_with(&input(1_000_000), "claude-opus-4-5").list_usd,
        dec("5")
    );
    // `global` is the upstream's own default: no default at all.
    let global = table().with_default_inference_geo(Some("global".into()));
    assert_eq!(global.default_value(metering::Modifier::InferenceGeo), None);
}

#[test]
fn not_available_is_no_news_and_a_fallback_credit_step_is_not_billed_again() {
    let mut usage = reported(input(1_000_000), None, Some("not_available"));
    usage.iterations = vec![step("fallback_credit", None, 5_000, 0)];
    let c = price(&usage, "claude-opus-5-5", &RequestedOptions::default());
    assert_eq!(c.list_usd, dec("4"));
    assert!(!c.reported_modifier_unpriced);
}

#[test]
fn past_the_kept_steps_a_declined_fallback_never_joins_one_that_produced_output() {
    let mut steps = Vec::new();
    for _ in 0..metering::usage::MAX_ITERATIONS {
        assert!(metering::usage::push_iteration(
            &mut steps,
            step("compaction", None, 1, 1)
        ));
    }
    let m = Some("claude-opus-5-5");
    assert!(metering::usage::push_iteration(
        &mut steps,
        step("fallback_message", m, 100, 0)
    ));
    assert!(metering::usage::push_iteration(
        &mut steps,
        step("fallback_message", m, 100, 7)
    ));
    assert!(metering::usage::push_iteration(
        &mut steps,
        step("fallback_message", m, 50, 0)
    ));
    let declined: Vec<&Iteration> = steps.iter().filter(|s| s.kind == "fallback_message").collect();
    assert_eq!(declined.len(), 2);
    assert_eq!(
        (declined[0].input_tokens, declined[0].output_tokens),
        (150, 0),
        "free ones together"
    );
    assert_eq!((declined[1].input_tokens, declined[1].output_tokens), (100, 7));
}

#[test]
fn price_fields_given_twice_are_refused_rather_than_guessed() {
    // `model` may repeat: the answer names the model it served, and that is billed.
    let mut meter = RequestMeter::new();
    meter.feed(br#"{"model":"claude-opus-5-5","model":"claude-haiku-4-5"}"#);
    assert_eq!(meter.finish().unwrap().model.as_deref(), Some("claude-haiku-4-5"));
    for body in [
        r#"{"model":"claude-opus-5-5","speed":"fast","speed":"standard"}"#,
        r#"{"model":"claude-opus-5-5","inference_geo":"us","inference_geo":"global"}"#,
        r#"{"model":"claude-opus-5-5","tools":[],"tools":[]}"#,
        r#"{"model":"claude-opus-5-5","fallbacks":[],"fallbacks":["x"]}"#,
    ] {
        let mut meter = RequestMeter::new();
        meter.feed(body.as_bytes());
        let err = meter.finish().unwrap_err();
        assert!(err.to_string().contains("is given twice"), "{body}: {err}");
    }
}

#[test]
fn control_characters_in_reported_text_read_as_absent() {
    let body = r#"{"id":"m","model":"claude-opus-5-5","usage":{"input_tokens":1000000,"output_tokens":0,"speed":"fa\u0000st","service_tier":"std\u0007","iterations":[{"type":"compaction\u0000","input_tokens":1000000,"output_tokens":0}]}}"#;
    let mut meter = metering::anthropic::AnthropicJsonMeter::new();
    meter.feed(body.as_bytes());
    let metered = meter.finish().unwrap();
    assert_eq!(
        (&metered.usage.speed, &metered.usage.service_tier),
        (&None, &None)
    );
    // The step is still billed (as an unknown type, at the served model).
    assert_eq!(metered.usage.iterations[0].kind, "");
    let c = price(&metered.usage, "claude-opus-5-5", &RequestedOptions::default());
    assert_eq!(c.list_usd, dec("8"));
    let mut request = RequestMeter::new();
    request.feed(br#"{"model":"claude-opus-5-5","speed":"fast\u0000"}"#);
    assert!(request.finish().is_err());
}
