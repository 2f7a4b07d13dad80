//! The December 2026 billing through the control plane: the seeded lineup and its modifiers in the
//! price API, a database seeded before December gaining the new versions once, debits priced with
//! modifiers and iterations, and the records, CSV and margin report that show them.

use chrono::{TimeZone, Utc};
use metering::wire::{DebitOutcome, Prices};
use metering::{Iteration, RequestedOptions, Usage};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn the_december_lineup_is_listed_with_its_modifiers_and_their_credits() {
    let app = spawn_app().await;
    let (s, list) = send(app.req(Method::GET, "/v1/prices")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let fable = price_versions(&list, "claude-fable-5-2");
    assert_eq!(fable.len(), 1);
    let f = fable[0];
    assert_eq!(f["effective_from"], "2026-12-01T00:00:00Z");
    assert_eq!(f["in_force"], true);
    assert_eq!(f["usd_per_mtok"]["input"], "8");
    let fast = f["speed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "fast")
        .unwrap();
    assert_eq!(fast["multiplier"], "2");
    // 8 USD per million x 2 x 0.7 / $0.005 / 1e6.
    assert_eq!(fast["credits_per_token"]["input"], "0.00224");
    assert_eq!(f["credits_per_token"]["input"], "0.00112");
    let us = f["inference_geo"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "us")
        .unwrap();
    assert_eq!(us["multiplier"], "1.1");
    assert_eq!(us["credits_per_token"]["output"], "0.00616");
    assert_eq!(f["code_execution_usd_per_request"], Value::Null);
    // An older model: standard speed only, no inference geo.
    let opus45 = price_versions(&list, "claude-opus-4-5");
    let dec = opus45.last().unwrap();
    assert_eq!(dec["inference_geo"], json!([]));
    assert_eq!(dec["speed"][0]["value"], "standard");
    // The November versions are kept, without modifiers.
    assert_eq!(opus45[0]["speed"], json!([]));
}

#[tokio::test]
async fn a_database_seeded_before_december_gains_the_new_versions_once_keeping_an_admins() {
    let app = spawn_app().await;
    // As a database seeded from the November table only would be.
    sqlx::query("DELETE FROM price_versions WHERE effective_from = '2026-12-01T00:00:00Z'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM price_seeds WHERE source = 'prices-2026-12'")
        .execute(&app.pool)
        .await
        .unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM price_versions")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 23);
    // An admin's own prices win: a version at the same instant, a model the admin priced earlier
    // (a shipped version would replace that price from December on), an alias naming a model.
    let admin = |model: &str, at: &str, aliases: Value| {
        json!({"model": model, "aliases": aliases, "effective_from": at,
            "usd_per_mtok": {"input": "4.5", "cache_write_5m": "5", "cache_write_1h": "8", "cache_read": "0.2", "output": "20"},
            "tiers": [], "web_search_usd_per_request": "0.01"})
    };
    for entry in [
        admin("claude-opus-5-5", "2026-12-01T00:00:00Z", json!([])),
        admin("claude-sonnet-5", "2026-11-20T00:00:00Z", json!([])),
        admin(
            "claude-fable-5-1",
            "2026-11-21T00:00:00Z",
            json!(["claude-fable-5-2"]),
        ),
    ] {
        sqlx::query(
            "INSERT INTO price_versions (id, model, effective_from, entry, actor, sync_version)
             VALUES (gen_random_uuid(), $1, $2::timestamptz, $3, 'admin', 0)",
        )
        .bind(entry["model"].as_str())
        .bind(entry["effective_from"].as_str())
        .bind(&entry)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    // Two control planes starting together: the table is applied once.
    let (a, b) = tokio::join!(
        control_plane::prices::seed_defaults(&app.pool),
        control_plane::prices::seed_defaults(&app.pool)
    );
    let applied: Vec<&str> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(applied, ["prices-2026-12"]);
    // 23 November versions and the admin's 3; of December's 18, the admin's three models
    // (opus-5-5, sonnet-5, fable-5-1) and the one an admin alias names (fable-5-2) are left out.
    assert_eq!(count().await, 23 + 3 + 14);
    let left_out: Value = sqlx::query_scalar(
        "SELECT details->'left_out' FROM audit_log WHERE action = 'price.seed' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left_out.as_array().unwrap().len(), 4, "{left_out}");
    let sonnet5: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM price_versions WHERE model = 'claude-sonnet-5' ORDER BY effective_from",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        sonnet5,
        ["system", "admin"],
        "the admin's price is not replaced from December on"
    );
    assert!(control_plane::prices::seed_defaults(&app.pool)
        .await
        .unwrap()
        .is_empty());
    let kept: Value = sqlx::query_scalar(
        "SELECT entry FROM price_versions WHERE model = 'claude-opus-5-5' AND effective_from = '2026-12-01T00:00:00Z'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept["usd_per_mtok"]["input"], "4.5");
    let seeded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'price.seed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        seeded, 3,
        "November and December at first start, December again now"
    );
}

#[tokio::test]
async fn a_price_change_sets_modifiers_keeps_them_by_default_and_refuses_discounts() {
    let app = spawn_app().await;
    let rates = json!({"input": "3", "cache_write_5m": "3.75", "cache_write_1h": "6", "cache_read": "0.3", "output": "15"});
    let (s, b) = app
        .admin_json(
            Method::PUT,
            "/v1/prices/claude-sonnet-4-6",
            json!({"usd_per_mtok": rates, "speed": {"standard": "1", "fast": "2.5"}, "code_execution_usd_per_request": "0.01"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let fast = b["speed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "fast")
        .unwrap();
    assert_eq!(fast["multiplier"], "2.5");
    assert_eq!(
        b["inference_geo"].as_array().unwrap().len(),
        2,
        "kept from the December version"
    );
    assert_eq!(b["code_execution_usd_per_request"], "0.01");
    assert_eq!(b["code_execution_credits_per_request"], "1.4");
    // A later version without the fields keeps them; null removes the fee, {} the speeds.
    let later = |h: i64| (Utc::now() + chrono::Duration::hours(h)).to_rfc3339();
    let (s, b) = app
        .admin_json(
            Method::PUT,
            "/v1/prices/claude-sonnet-4-6",
            json!({"usd_per_mtok": rates, "effective_from": later(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["speed"].as_array().unwrap().len(), 2);
    assert_eq!(b["code_execution_usd_per_request"], "0.01");
    let (s, b) = app
        .admin_json(
            Method::PUT,
            "/v1/prices/claude-sonnet-4-6",
            json!({"usd_per_mtok": rates, "effective_from": later(2), "speed": {}, "code_execution_usd_per_request": null}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (b["speed"].clone(), b["code_execution_usd_per_request"].clone()),
        (json!([]), Value::Null)
    );
    // A multiplier below 1 would make a request cheaper for asking: refused.
    let (s, b) = app
        .admin_json(
            Method::PUT,
            "/v1/prices/claude-sonnet-4-6",
            json!({"usd_per_mtok": rates, "effective_from": later(3), "speed": {"slow": "0.5"}}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(b["error"]["message"].as_str().unwrap().contains("slow"), "{b}");
    let (s, b) = app
        .admin_json(
            Method::PUT,
            "/v1/prices/claude-sonnet-4-6",
            json!({"usd_per_mtok": rates, "effective_from": later(3), "code_execution_usd_per_request": "-1"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
}

#[tokio::test]
async fn debits_are_priced_with_their_modifiers_and_iterations_and_recorded_with_them() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "100000", "g").await;
    let now = Utc::now();
    // Fast and US on Opus 5.5, reported by the answer, with a compaction step and an advisor.
    let mut fast = debit(account, &secret, "claude-opus-5-5", usage(1_000_000, 0), now);
    fast.model_served = Some("claude-opus-5-5".into());
    fast.requested = RequestedOptions {
        speed: Some("fast".into()),
        inference_geo: Some("us".into()),
        code_execution: false,
    };
    fast.usage.speed = Some("fast".into());
    fast.usage.inference_geo = Some("us".into());
    fast.usage.service_tier = Some("priority".into());
    fast.usage.iterations = vec![
        Iteration {
            kind: "compaction".into(),
            input_tokens: 100_000,
            output_tokens: 2_000,
            ..Iteration::default()
        },
        Iteration {
            kind: "advisor_message".into(),
            model: Some("claude-opus-4-8".into()),
            input_tokens: 10_000,
            ..Iteration::default()
        },
        Iteration {
            kind: "message".into(),
            model: Some("claude-opus-5-5".into()),
            input_tokens: 1_000_000,
            ..Iteration::default()
        },
    ];
    // Asked fast, the answer silent: billed fast.
    let mut silent = debit(account, &secret, "claude-opus-5-5", usage(1_000_000, 0), now);
    silent.model_served = Some("claude-opus-5-5".into());
    silent.requested.speed = Some("fast".into());
    let ack = app.debits(vec![fast.clone(), silent.clone()]).await;
    assert!(
        ack.results.iter().all(|r| r.outcome == DebitOutcome::Applied),
        "{ack:?}"
    );
    // Top level 4 x 2.2 = 8.8 USD; compaction (100,000 x 4 + 2,000 x 20) x 2.2 = 0.968;
    // the advisor on Opus 4.8, which has US but no fast: 10,000 x 5 x 2 x 1.1 = 0.11 (the
    // serving model's fast multiplier: never less); the message step is the top level.
    assert_eq!(ack.results[0].credits, Some(d("1382.92")), "9.878 USD at 70%");
    assert_eq!(ack.results[1].credits, Some(d("1120")), "8 USD at 70%");
    // Replaying is a duplicate (the new fields are part of the fingerprint, as sent).
    let again = app.debits(vec![fast.clone()]).await;
    assert_eq!(again.results[0].outcome, DebitOutcome::Duplicate);
    let mut altered = fast.clone();
    altered.requested.speed = None;
    assert_eq!(
        app.debits(vec![altered]).await.results[0].outcome,
        DebitOutcome::Conflict
    );

    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/usage")).await;
    let row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request_id"] == fast.debit_id.to_string())
        .unwrap();
    assert_eq!(row["speed"], "fast");
    assert_eq!(row["inference_geo"], "us");
    assert_eq!(row["service_tier"], "priority");
    assert_eq!(row["iterations"].as_array().unwrap().len(), 3);
    assert_eq!(row["iterations"][0]["type"], "compaction");
    assert_eq!(row["iterations"][0]["model"], Value::Null);
    assert_eq!(row["iterations"][1]["model"], "claude-opus-4-8");
    assert_eq!(row["iterations"][0]["input_tokens"], 100000);
    assert_eq!(row["list_usd"], "9.878");
    let silent_row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request_id"] == silent.debit_id.to_string())
        .unwrap();
    assert_eq!(
        (silent_row["speed"].clone(), silent_row["inference_geo"].clone()),
        (json!("fast"), Value::Null)
    );
    assert_eq!(silent_row["iterations"], json!([]));
    let stored: (Value, rust_decimal::Decimal) =
        sqlx::query_as("SELECT requested, multiplier FROM usage_records WHERE debit_id = $1")
            .bind(fast.debit_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.0, json!({"speed": "fast", "inference_geo": "us"}));
    assert_eq!(stored.1, d("2.2"));

    // The CSV carries the same.
    let csv = app
        .admin(Method::GET, &format!("/v1/accounts/{account}/usage?format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.contains(",speed,inference_geo,service_tier,iterations"),
        "{header}"
    );
    let line = csv
        .lines()
        .find(|l| l.starts_with(&fast.debit_id.to_string()))
        .unwrap();
    assert!(line.contains(",fast,us,priority,"), "{line}");
    assert!(line.contains("advisor_message"), "{line}");

    // The margin report's list price includes the modifiers and the steps.
    let (s, margin) = app.admin_get("/v1/reports/margin").await;
    assert_eq!(s, StatusCode::OK, "{margin}");
    let opus = margin["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "claude-opus-5-5")
        .unwrap();
    assert_eq!(opus["list_usd"], "17.878");
    assert_eq!(opus["credits"], "2502.92");
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn an_answer_naming_an_unpriced_value_is_billed_never_less_and_marked() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let mut d1 = debit(
        account,
        &secret,
        "claude-opus-5-5",
        usage(1_000_000, 0),
        Utc::now(),
    );
    d1.model_served = Some("claude-opus-5-5".into());
    d1.requested.inference_geo = Some("us".into());
    d1.usage.inference_geo = Some("mars".into());
    let ack = app.debits(vec![d1.clone()]).await;
    assert_eq!(
        ack.results[0].credits,
        Some(d("616")),
        "4 x 1.1 USD at 70%: the request's value"
    );
    let marked: bool = sqlx::query_scalar("SELECT unpriced_report FROM usage_records WHERE debit_id = $1")
        .bind(d1.debit_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(marked);
}

#[tokio::test]
async fn a_version_1_gateway_gets_a_price_table_it_can_parse() {
    let app = spawn_app().await;
    let old = app.snapshot("").await;
    let text = old["prices"].to_string();
    assert!(
        !text.contains("\"speed\"") && !text.contains("inference_geo"),
        "protocol 1"
    );
    // A version 1 reader's entries deny unknown fields: they must parse.
    let prices: Prices = serde_json::from_value(old["prices"].clone()).unwrap();
    assert!(prices.entries.iter().all(|e| e.speed.is_empty()));
    assert_eq!(old["protocol"], 1);
    let new = app.snapshot("?protocol=2").await;
    assert_eq!(new["protocol"], 2);
    let prices: Prices = serde_json::from_value(new["prices"].clone()).unwrap();
    let opus = prices
        .entries
        .iter()
        .find(|e| {
            e.model == "claude-opus-5-5"
                && e.effective_from == Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        })
        .unwrap();
    assert_eq!(opus.multiplier(metering::Modifier::Speed, "fast"), Some(d("2")));
}

#[tokio::test]
async fn usage_without_modifiers_reads_as_before() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let plain = debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        Usage {
            input_tokens: 10,
            ..Usage::default()
        },
        Utc::now(),
    );
    app.debits(vec![plain]).await;
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/usage")).await;
    let row = &list["data"][0];
    assert_eq!(
        (row["speed"].clone(), row["inference_geo"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(row["iterations"], json!([]));
}

/// Text a gateway forwards is the upstream's and the caller's: a NUL in it (which PostgreSQL
/// refuses) is replaced, never allowed to fail the batch and every retry of it.
#[tokio::test]
async fn a_nul_in_forwarded_text_does_not_stop_the_batch() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let mut odd = debit(account, &secret, "claude-opus-5-5", usage(1000, 0), Utc::now());
    odd.model_served = Some("claude-opus-5-5\u{0}".into());
    odd.usage.service_tier = Some("std\u{0}".into());
    odd.usage.speed = Some("fa\u{0}st".into());
    odd.upstream_message_id = Some("msg_\u{0}".into());
    odd.usage.iterations = vec![Iteration {
        kind: "compaction\u{0}".into(),
        model: Some("m\u{0}".into()),
        input_tokens: 1,
        ..Iteration::default()
    }];
    let plain = debit(account, &secret, "claude-opus-5-5", usage(1000, 0), Utc::now());
    let batch = metering::wire::DebitBatch {
        protocol: 2,
        gateway_id: Some("gw\u{0}1".into()),
        debits: vec![odd.clone(), plain],
        compact_ack: false,
    };
    let (s, ack) = send(app.internal(Method::POST, "/internal/v1/debits").json(&batch)).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    let ack: metering::wire::DebitAck = serde_json::from_value(ack).unwrap();
    assert!(
        ack.results.iter().all(|r| r.outcome == DebitOutcome::Applied),
        "{ack:?}"
    );
    let stored: (String, Value) =
        sqlx::query_as("SELECT service_tier, iterations FROM usage_records WHERE debit_id = $1")
            .bind(odd.debit_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.0, "std\u{fffd}");
    assert_eq!(stored.1[0]["type"], "compaction\u{fffd}");
    audit_ledger(&app.pool).await;
}

/// An operator whose upstream workspace runs in the US by default says so
/// (`UPSTREAM_INFERENCE_GEO=us`): requests that name no region, with answers that name none
/// either (the OpenAI-compatible route's never do), are billed at the US multiplier.
#[tokio::test]
async fn the_upstream_default_inference_geo_is_billed_and_synced() {
    let app = spawn_app_with(|c| c.upstream_inference_geo = Some("us".into())).await;
    let (_, list) = send(app.req(Method::GET, "/v1/prices")).await;
    assert_eq!(list["default_inference_geo"], "us");
    let snap = app.snapshot("?protocol=2").await;
    assert_eq!(snap["prices"]["inference_geo_default"], "us");
    assert!(
        app.snapshot("").await["prices"]
            .get("inference_geo_default")
            .is_none(),
        "protocol 1"
    );
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let mut silent = debit(
        account,
        &secret,
        "claude-opus-5-5",
        usage(1_000_000, 0),
        Utc::now(),
    );
    silent.model_served = None;
    let mut global = debit(
        account,
        &secret,
        "claude-opus-5-5",
        usage(1_000_000, 0),
        Utc::now(),
    );
    global.model_served = None;
    global.usage.inference_geo = Some("global".into());
    let ack = app.debits(vec![silent, global]).await;
    assert_eq!(ack.results[0].credits, Some(d("616")), "4 x 1.1 USD at 70%");
    assert_eq!(ack.results[1].credits, Some(d("560")), "the answer said global");
}
