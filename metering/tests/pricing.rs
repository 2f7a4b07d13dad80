//! Price table lookups and exact cost, against the worked examples of the billing rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use metering::price::{default_price_factor, PriceTable};
use metering::{Cost, PriceError, RequestedOptions, ServedRequest, Usage};
use rust_decimal::Decimal;
use std::str::FromStr;

/// A request that asked for no modifier, as the one pricing function takes it.
fn plain<'a>(
    usage: &'a Usage,
    requested: &'a str,
    served: Option<&'a str>,
    at: DateTime<Utc>,
    options: &'a RequestedOptions,
) -> ServedRequest<'a> {
    ServedRequest {
        usage,
        model_requested: requested,
        model_served: served,
        requested: options,
        admitted_at: at,
    }
}

fn cost(
    t: &PriceTable,
    usage: &Usage,
    requested: &str,
    served: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Cost, PriceError> {
    metering::cost(
        t,
        &plain(usage, requested, served, at, &RequestedOptions::default()),
    )
}

fn credits(
    t: &PriceTable,
    usage: &Usage,
    requested: &str,
    served: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(Decimal, bool), PriceError> {
    metering::credits(
        t,
        &plain(usage, requested, served, at, &RequestedOptions::default()),
    )
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn table() -> PriceTable {
    PriceTable::default_table(default_price_factor()).unwrap()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    at(2026, 11, 25)
}

#[test]
fn worked_example_sonnet_4_5_costs_6_489_credits() {
    let usage = Usage {
        input_tokens: 1_200,
        cache_write_5m_tokens: 1_000,
        cache_write_1h_tokens: 2_000,
        cache_read_tokens: 50_000,
        output_tokens: 800,
        ..Usage::default()
    };
    let c = cost(&table(), &usage, "claude-sonnet-4-5", None, now()).unwrap();
    assert_eq!(c.credits, dec("6.489"));
    assert_eq!(c.list_usd, dec("0.04635"));
    assert_eq!(c.model, "claude-sonnet-4-5");
    assert_eq!(c.price_version, "claude-sonnet-4-5@2024-01-01T00:00:00Z");
    assert_eq!(c.tier_above_prompt_tokens, None);
}

/// One token of each category, per family: credits per token = USD/MTok x 0.7 / 0.005 / 1e6.
#[test]
fn each_category_is_priced_at_seventy_percent_of_list_in_half_cent_credits() {
    // (model, category, usd per mtok)
    type Case = (&'static str, fn(u64) -> Usage, &'static str);
    let cases: &[Case] = &[
        (
            "claude-opus-4-1",
            |n| Usage {
                input_tokens: n,
                ..Usage::default()
            },
            "15",
        ),
        (
            "claude-opus-4-1",
            |n| Usage {
                cache_write_5m_tokens: n,
                ..Usage::default()
            },
            "18.75",
        ),
        (
            "claude-opus-4-1",
            |n| Usage {
                cache_write_1h_tokens: n,
                ..Usage::default()
            },
            "30",
        ),
        (
            "claude-opus-4-1",
            |n| Usage {
                cache_read_tokens: n,
                ..Usage::default()
            },
            "1.50",
        ),
        (
            "claude-opus-4-1",
            |n| Usage {
                output_tokens: n,
                ..Usage::default()
            },
            "75",
        ),
        (
            "claude-opus-4-1",
            |n| Usage {
                output_tokens: n,
                thinking_tokens: n,
                ..Usage::default()
            },
            "75",
        ),
        (
            "claude-haiku-4-5",
            |n| Usage {
                input_tokens: n,
                ..Usage::default()
            },
            "1",
        ),
        (
            "claude-haiku-4-5",
            |n| Usage {
                cache_read_tokens: n,
                ..Usage::default()
            },
            "0.10",
        ),
        (
            "claude-3-haiku",
            |n| Usage {
                cache_write_5m_tokens: n,
                ..Usage::default()
            },
            "0.30",
        ),
        (
            "claude-fable-5-1",
            |n| Usage {
                cache_read_tokens: n,
                ..Usage::default()
            },
            "0.25",
        ),
        (
            "claude-fable-5",
            |n| Usage {
                cache_read_tokens: n,
                ..Usage::default()
            },
            "1.00",
        ),
        (
            "claude-opus-5-5",
            |n| Usage {
                output_tokens: n,
                ..Usage::default()
            },
            "20",
        ),
        (
            "claude-mythos-5-1",
            |n| Usage {
                cache_write_1h_tokens: n,
                ..Usage::default()
            },
            "20",
        ),
    ];
    let t = table();
    for (model, make, usd) in cases {
        let tokens = 1_000_000;
        let c = cost(&t, &make(tokens), model, None, now()).unwrap();
        let expected = dec(usd) * dec("0.7") / dec("0.005");
        assert_eq!(c.credits, expected.normalize(), "{model} {usd}");
        assert_eq!(c.list_usd, dec(usd).normalize(), "{model} {usd}");
        assert_eq!(
            t.credits_per_token(dec(usd)),
            (expected / Decimal::from(tokens)).normalize()
        );
    }
}

#[test]
fn one_token_costs_an_exact_fraction_of_a_credit_without_rounding() {
    let u = Usage {
        input_tokens: 1,
        ..Usage::default()
    };
    let c = cost(&table(), &u, "claude-3-haiku", None, now()).unwrap();
    assert_eq!(c.credits, dec("0.000035"));
    let u = Usage {
        cache_read_tokens: 1,
        ..Usage::default()
    };
    let c = cost(&table(), &u, "claude-haiku-5-5", None, now()).unwrap();
    assert_eq!(c.credits, dec("0.0000014"));
}

#[test]
fn thinking_is_billed_at_the_output_rate_by_default_and_at_its_own_rate_when_set() {
    let u = Usage {
        output_tokens: 1_000,
        thinking_tokens: 400,
        ..Usage::default()
    };
    let t = table();
    let c = cost(&t, &u, "claude-sonnet-4-6", None, now()).unwrap();
    assert_eq!(c.credits, dec("2.1")); // 1000 x 15 x 0.7 / 5000

    let mut entries = t.entries().to_vec();
    for e in entries.iter_mut().filter(|e| e.model == "claude-sonnet-4-6") {
        e.usd_per_mtok.thinking = Some(dec("5"));
    }
    let t = PriceTable::new(entries, default_price_factor()).unwrap();
    let c = cost(&t, &u, "claude-sonnet-4-6", None, now()).unwrap();
    // 600 x 15 + 400 x 5 = 11000 USD-micro
    assert_eq!(c.credits, dec("1.54"));
}

#[test]
fn web_searches_cost_ten_dollars_per_thousand_and_fetches_are_free() {
    let u = Usage {
        web_search_requests: 3,
        web_fetch_requests: 7,
        ..Usage::default()
    };
    let c = cost(&table(), &u, "claude-opus-4-5", None, now()).unwrap();
    assert_eq!(c.list_usd, dec("0.03"));
    assert_eq!(c.credits, dec("4.2"));
}

#[test]
fn prompt_tier_counts_every_input_side_token_strictly_above_the_threshold() {
    let t = table();
    // Exactly at the threshold: base rates.
    let u = Usage {
        input_tokens: 100_000,
        output_tokens: 10,
        ..Usage::default()
    };
    let c = cost(&t, &u, "claude-haiku-5-5", None, now()).unwrap();
    assert_eq!(c.tier_above_prompt_tokens, None);
    assert_eq!(c.list_usd, dec("0.010005"));
    // One more input-side token anywhere (a cache read): the tier applies to the whole request.
    let u = Usage {
        input_tokens: 100_000,
        cache_read_tokens: 1,
        output_tokens: 10,
        ..Usage::default()
    };
    let c = cost(&t, &u, "claude-haiku-5-5", None, now()).unwrap();
    assert_eq!(c.tier_above_prompt_tokens, Some(100_000));
    // 100000 x 0.5 + 1 x 0.05 + 10 x 2.5 = 50025.05 USD-micro
    assert_eq!(c.list_usd, dec("0.05002505"));

    let u = Usage {
        input_tokens: 10,
        cache_write_5m_tokens: 100_000,
        cache_write_1h_tokens: 50_000,
        cache_read_tokens: 50_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    let c = cost(&t, &u, "claude-sonnet-4-5-20250929", None, now()).unwrap();
    assert_eq!(c.tier_above_prompt_tokens, Some(200_000));
    // 10x6 + 100000x7.5 + 50000x12 + 50000x0.6 + 1000x22.5 = 1402560 USD-micro
    assert_eq!(c.list_usd, dec("1.40256"));
    assert_eq!(c.credits, dec("196.3584"));
    // The same prompt on a model without a long-context tier stays at base rates.
    let c = cost(&t, &u, "claude-sonnet-4-6", None, now()).unwrap();
    assert_eq!(c.tier_above_prompt_tokens, None);
}

#[test]
fn dated_ids_and_aliases_bill_as_their_family_and_nothing_looser_matches() {
    let t = table();
    for (id, family) in [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-opus-4", "claude-opus-4-0"),
        ("claude-opus-4-20250514", "claude-opus-4-0"),
        ("claude-sonnet-4", "claude-sonnet-4-0"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-haiku-5-5", "claude-haiku-5-5"),
    ] {
        assert_eq!(t.family_of(id), Some(family), "{id}");
    }
    for id in [
        "claude-fable-5-3",
        "claude-mythos-preview",
        "claude-sonnet-4-5-2025092",
        "claude-sonnet-4-5-latest",
        "claude-sonnet-4-5x",
        "",
        "CLAUDE-SONNET-4-5",
    ] {
        assert_eq!(t.family_of(id), None, "{id}");
        assert!(matches!(
            cost(
                &t,
                &Usage {
                    input_tokens: 1,
                    ..Usage::default()
                },
                id,
                None,
                now()
            ),
            Err(PriceError::UnknownModel { .. })
        ));
    }
}

#[test]
fn the_version_in_force_when_the_request_was_admitted_applies() {
    let t = table();
    let u = Usage {
        cache_read_tokens: 1_000_000,
        ..Usage::default()
    };
    let before = cost(
        &t,
        &u,
        "claude-sonnet-5-5",
        None,
        Utc.with_ymd_and_hms(2026, 10, 6, 23, 59, 59).unwrap(),
    )
    .unwrap();
    assert_eq!(before.list_usd, dec("0.2"));
    assert_eq!(before.price_version, "claude-sonnet-5-5@2024-01-01T00:00:00Z");
    let from = cost(
        &t,
        &u,
        "claude-sonnet-5-5",
        None,
        Utc.with_ymd_and_hms(2026, 10, 7, 0, 0, 0).unwrap(),
    )
    .unwrap();
    assert_eq!(from.list_usd, dec("0.1"));
    assert_eq!(from.price_version, "claude-sonnet-5-5@2026-10-07T00:00:00Z");
    assert!(matches!(
        cost(&t, &u, "claude-sonnet-5-5", None, at(2023, 1, 1)),
        Err(PriceError::NotYetPriced { .. })
    ));
}

#[test]
fn the_served_model_is_billed_and_an_unpriced_served_model_falls_back_to_the_requested_one() {
    let t = table();
    let u = Usage {
        output_tokens: 1_000_000,
        ..Usage::default()
    };
    let c = cost(
        &t,
        &u,
        "claude-opus-4-1",
        Some("claude-haiku-4-5-20251001"),
        now(),
    )
    .unwrap();
    assert_eq!(c.model, "claude-haiku-4-5");
    assert!(!c.served_model_unpriced);
    let c = cost(&t, &u, "claude-opus-4-1", Some("claude-mythos-preview"), now()).unwrap();
    assert_eq!(c.model, "claude-opus-4-1");
    assert!(c.served_model_unpriced);
    let c = cost(&t, &u, "claude-opus-4-1", Some(""), now()).unwrap();
    assert_eq!(c.model, "claude-opus-4-1");
    assert!(!c.served_model_unpriced);
    assert!(cost(&t, &u, "claude-mythos-preview", Some("also-unknown"), now()).is_err());
}

/// What a gateway spends locally is exactly what the ledger will charge, in every case above.
#[test]
fn credits_alone_are_the_credits_of_the_full_cost() {
    let t = table();
    let u = Usage {
        input_tokens: 1_200,
        cache_write_5m_tokens: 1_000,
        cache_read_tokens: 250_000,
        output_tokens: 800,
        thinking_tokens: 300,
        web_search_requests: 2,
        ..Usage::default()
    };
    for (requested, served) in [
        ("claude-sonnet-4-5", None),
        ("claude-opus-4-1", Some("claude-haiku-4-5-20251001")),
        ("claude-opus-4-1", Some("claude-mythos-preview")),
        ("claude-opus-4-1", Some("")),
        ("claude-haiku-5-5", None),
    ] {
        let full = cost(&t, &u, requested, served, now()).unwrap();
        assert_eq!(
            credits(&t, &u, requested, served, now()).unwrap(),
            (full.credits, full.served_model_unpriced),
            "{requested} {served:?}"
        );
    }
    assert!(credits(&t, &u, "claude-mythos-preview", Some("also-unknown"), now()).is_err());
}

#[test]
fn the_price_factor_is_configuration() {
    let t = PriceTable::default_table(dec("1")).unwrap();
    let u = Usage {
        input_tokens: 100_000,
        ..Usage::default()
    };
    assert_eq!(
        cost(&t, &u, "claude-sonnet-4-5", None, now()).unwrap().credits,
        dec("60")
    );
    assert!(PriceTable::default_table(Decimal::ZERO).is_err());
    assert!(PriceTable::default_table(dec("-0.7")).is_err());
}

#[test]
fn huge_counts_never_overflow_into_a_wrong_price() {
    let u = Usage {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cache_read_tokens: u64::MAX,
        cache_write_5m_tokens: u64::MAX,
        cache_write_1h_tokens: u64::MAX,
        web_search_requests: u64::MAX,
        ..Usage::default()
    };
    match cost(&table(), &u, "claude-opus-4-1", None, now()) {
        Ok(c) => assert!(c.credits > Decimal::from(u64::MAX)),
        Err(e) => assert_eq!(e, PriceError::Overflow),
    }
}

#[test]
fn the_default_table_holds_every_family_of_the_price_sheet() {
    let t = table();
    let families: std::collections::BTreeSet<&str> = t.entries().iter().map(|e| e.model.as_str()).collect();
    // November: 22 families in 23 versions; December: 18 versions, two of them new families.
    assert_eq!(families.len(), 24);
    assert_eq!(t.entries().len(), 41);
    assert!(t
        .entries()
        .iter()
        .all(|e| e.web_search_usd_per_request == dec("0.01")));
}

#[test]
fn invalid_tables_are_refused_with_the_reason() {
    let t = table();
    let mut dup = t.entries().to_vec();
    dup.push(dup[0].clone());
    assert!(matches!(
        PriceTable::new(dup, default_price_factor()),
        Err(PriceError::Table(_))
    ));

    let mut clash = t.entries().to_vec();
    let first = clash[0].model.clone();
    clash[1].aliases.push(first);
    assert!(PriceTable::new(clash, default_price_factor()).is_err());

    let mut negative = t.entries().to_vec();
    negative[0].usd_per_mtok.output = dec("-1");
    let err = PriceTable::new(negative, default_price_factor()).unwrap_err();
    assert!(err.to_string().contains("output is negative"), "{err}");

    assert!(PriceTable::from_json("{\"source\":\"x\",\"entries\":[{\"model\":\"m\"}]}", dec("0.7")).is_err());
}

/// The price version label is written from the date's fields: it must read exactly as chrono's
/// `%Y-%m-%dT%H:%M:%SZ` for any instant, a leap second and years outside 0..=9999 included.
#[test]
fn price_version_reads_as_chrono_formats_it() {
    let mut entry = table().entries()[0].clone();
    let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
        .unwrap()
        .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
        .unwrap()
        .and_utc();
    let instants = [
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(7, 2, 3, 4, 5, 6).unwrap(),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
        Utc.timestamp_opt(1_800_000_000, 999_999_999).unwrap(),
        leap,
    ];
    for at in instants {
        entry.effective_from = at;
        let chrono = format!("{}@{}", entry.model, at.format("%Y-%m-%dT%H:%M:%SZ"));
        assert_eq!(entry.version(), chrono, "{at:?}");
    }
    assert!(entry.version().ends_with("T23:59:60Z"), "the leap second");
}
