//! What the December 2026 API bills beyond the five token categories, through Envoy: fast mode and
//! US-only inference multiply every rate (the answer's report wins, the request's value is billed
//! when the answer is silent), compaction and advisor steps are billed on top, the newest models
//! are priced, and what cannot be billed is refused before the upstream gets a byte. Streams are
//! cut into small pieces, as real networks deliver them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::Api;
use crate::call::{message_body, Call};
use crate::harness;
use crate::pricing::{dec, fable_5_2, opus_4_8, opus_5_5, sonnet_4_5, Tokens};

const OPUS: &str = "claude-opus-5-5";

fn messages(key: &str, model: &str, stream: bool, extra: Value) -> Call {
    let mut body = message_body(model, stream);
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    Call::new(Method::POST, "/v1/messages").key(key).json(&body)
}

fn tokens() -> Tokens {
    Tokens {
        input: 1200,
        write_5m: 1000,
        write_1h: 2000,
        read: 5000,
        output: 700,
        ..Tokens::default()
    }
}

/// Usage reporting `speed` and `inference_geo` (or not, where `None`).
fn usage_reporting(t: &Tokens, speed: Option<&str>, geo: Option<&str>) -> Value {
    let mut u = t.anthropic_usage();
    if let Some(s) = speed {
        u["speed"] = json!(s);
    }
    if let Some(g) = geo {
        u["inference_geo"] = json!(g);
    }
    u
}

#[tokio::test]
async fn fast_and_us_multiply_every_rate_json_and_stream_alike() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let asked = json!({"speed": "fast", "inference_geo": "us"});
    // (what the answer reports, the multiplier billed)
    let cases = [
        (Some(("fast", "us")), "2.2"),
        // Asked for fast, ran at standard speed: standard.
        (Some(("standard", "us")), "1.1"),
        // The answer says nothing: what was asked is billed.
        (None, "2.2"),
    ];
    let mut expected = Vec::new();
    for (report, factor) in cases {
        for stream in [false, true] {
            let t = tokens();
            let usage = match report {
                Some((s, g)) => usage_reporting(&t, Some(s), Some(g)),
                None => t.anthropic_usage(),
            };
            let mut script = json!({"usage": usage});
            if stream {
                script["chunk_bytes"] = json!(5);
            }
            let reply = api
                .send(messages(&tenant.key, OPUS, stream, asked.clone()).script(&script))
                .await;
            reply.assert_ok();
            // The upstream got the request's fields as sent.
            let up = api.upstream_one(&reply.marker).await;
            let sent: Value = serde_json::from_str(&up.body).unwrap();
            assert_eq!(
                (sent["speed"].clone(), sent["inference_geo"].clone()),
                (json!("fast"), json!("us"))
            );
            expected.push((report, stream, factor, reply.request_id(), t));
        }
    }
    let rows = api.usage_settled(tenant.account, expected.len()).await;
    for (report, stream, factor, id, t) in &expected {
        let row = Api::row(&rows, *id);
        let what = format!("report {report:?}, stream {stream}");
        assert_eq!(row.tokens(), *t, "{what}");
        assert_eq!(row.cost(), t.cost(&opus_5_5().times(factor)), "{what}");
        assert!(!row.partial, "{what}");
        let speed = report.map_or("fast", |(s, _)| s);
        assert_eq!(row.speed.as_deref(), Some(speed), "{what}");
        assert_eq!(row.inference_geo.as_deref(), Some("us"), "{what}");
    }
    // The hand-computed figure of one: (1200 x 4 + 1000 x 5 + 2000 x 8 + 5000 x 0.2 + 700 x 20)
    // micro-USD x 2.2 x 0.7 / $0.005.
    assert_eq!(Api::row(&rows, expected[0].3).cost(), dec("12.5664"));
    api.assert_balance(&tenant, tenant.granted, &rows).await;
    api.assert_ledger_invariants().await;
}

/// Without a script the fake answers like today's API: it reports the speed and region it ran
/// at (in `message_start` only, in a stream), and the tier; the record keeps them.
#[tokio::test]
async fn what_the_answer_reports_is_recorded_with_the_service_tier() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let mut ids = Vec::new();
    for stream in [false, true] {
        let reply = api
            .send(
                messages(&tenant.key, "claude-fable-5-2", stream, json!({"speed": "fast"}))
                    .script(&json!({"chunk_bytes": 3})),
            )
            .await;
        reply.assert_ok();
        ids.push(reply.request_id());
    }
    let plain = api
        .send(Call::messages(&tenant.key, "claude-fable-5-2", true))
        .await;
    plain.assert_ok();
    let rows = api.usage_settled(tenant.account, 3).await;
    for id in &ids {
        let row = Api::row(&rows, *id);
        assert_eq!(
            (
                row.speed.as_deref(),
                row.inference_geo.as_deref(),
                row.service_tier.as_deref()
            ),
            (Some("fast"), Some("global"), Some("standard"))
        );
        assert_eq!(row.cost(), row.tokens().cost(&fable_5_2().times("2")));
    }
    let row = Api::row(&rows, plain.request_id());
    assert_eq!(
        (row.speed.as_deref(), row.inference_geo.as_deref()),
        (Some("standard"), Some("global"))
    );
    assert_eq!(row.cost(), row.tokens().cost(&fable_5_2()));
}

#[tokio::test]
async fn compaction_and_advisor_steps_are_billed_on_top_json_and_stream_alike() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let top = Tokens {
        input: 2000,
        output: 500,
        ..Tokens::default()
    };
    let compaction = Tokens {
        input: 150_000,
        output: 3000,
        ..Tokens::default()
    };
    let advisor = Tokens {
        input: 4000,
        read: 1000,
        output: 200,
        ..Tokens::default()
    };
    let mut usage = top.anthropic_usage();
    usage["iterations"] = json!([
        {"type": "compaction", "input_tokens": 150_000, "output_tokens": 3000,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        {"type": "advisor_message", "model": "claude-opus-4-8", "input_tokens": 4000, "output_tokens": 200,
         "cache_read_input_tokens": 1000},
        {"type": "message", "model": OPUS, "input_tokens": 2000, "output_tokens": 500}
    ]);
    let mut ids = Vec::new();
    for stream in [false, true] {
        // In a stream the steps come in the final message_delta, cut into 4-byte pieces.
        let script = json!({"usage": usage, "chunk_bytes": 4});
        let reply = api
            .send(Call::messages(&tenant.key, OPUS, stream).script(&script))
            .await;
        reply.assert_ok();
        if stream {
            let text = reply.text();
            let start = text.find("message_start").unwrap();
            let delta = text.find("message_delta").unwrap();
            assert!(
                !text[start..delta].contains("iterations"),
                "steps only in message_delta"
            );
            assert!(text[delta..].contains("advisor_message"));
        }
        ids.push(reply.request_id());
    }
    let rows = api.usage_settled(tenant.account, 2).await;
    let expected = top.cost(&opus_5_5()) + compaction.cost(&opus_5_5()) + advisor.cost(&opus_4_8());
    // (2000 x 4 + 500 x 20) + (150,000 x 4 + 3000 x 20) + (4000 x 5 + 1000 x 0.5 + 200 x 25)
    // = 18,000 + 660,000 + 25,500 micro-USD, x 0.7 / $0.005.
    assert_eq!(expected, dec("98.49"));
    for id in &ids {
        let row = Api::row(&rows, *id);
        assert_eq!(row.cost(), expected);
        assert_eq!(row.tokens(), top, "the top-level counts are the serving step's");
        assert_eq!(row.iterations.len(), 3);
        assert_eq!(row.iterations[1]["model"], "claude-opus-4-8");
        assert_eq!(row.iterations[0]["input_tokens"], 150_000);
        assert!(!row.partial);
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// Refused with 400 before the upstream gets a byte, the message naming the field, the value and
/// how an admin prices it; nothing is billed.
#[tokio::test]
async fn what_cannot_be_billed_is_refused_before_the_upstream_sees_it() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let cases = [
        (
            "claude-sonnet-4-6",
            json!({"speed": "fast"}),
            ["speed", "\"fast\"", "PUT /v1/prices/claude-sonnet-4-6"],
        ),
        (
            "claude-opus-4-5",
            json!({"inference_geo": "us"}),
            ["inference_geo", "\"us\"", "PUT /v1/prices/claude-opus-4-5"],
        ),
        (
            OPUS,
            json!({"speed": "ludicrous"}),
            ["speed", "\"ludicrous\"", "PUT /v1/prices/claude-opus-5-5"],
        ),
        (
            OPUS,
            json!({"fallbacks": ["claude-sonnet-5-5", "claude-nope-7"]}),
            ["fallbacks", "claude-nope-7", "PUT /v1/prices/claude-nope-7"],
        ),
        (
            OPUS,
            json!({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}),
            [
                "code_execution_20250825",
                "code_execution_usd_per_request",
                "PUT /v1/prices/claude-opus-5-5",
            ],
        ),
        (OPUS, json!({"speed": 1}), ["speed", "string", "request body"]),
    ];
    for (model, extra, words) in cases {
        for stream in [false, true] {
            let reply = api
                .send(messages(&tenant.key, model, stream, extra.clone()))
                .await;
            reply.assert_refused(400, "invalid_request_error");
            let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
            for w in words {
                assert!(message.contains(w), "{w:?} not in {message:?}");
            }
            assert!(
                api.upstream_saw(&reply.marker).await.is_empty(),
                "the upstream got a request the gateway refused: {extra}"
            );
        }
    }
    // The same with a web tool of the 2026-02-09 versions beside it: the container is free.
    let free = json!({"tools": [{"type": "code_execution_20250825", "name": "code_execution"},
                                 {"type": "web_search_20260209", "name": "web_search"}]});
    let reply = api.send(messages(&tenant.key, OPUS, false, free)).await;
    reply.assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id, reply.request_id());
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// The OpenAI-compatible route bills as before; a modifier asked for on it is checked and billed
/// as asked (its usage reports none).
#[tokio::test]
async fn openai_route_is_unchanged_and_bills_an_asked_modifier() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("100").await;
    let usage = json!({"prompt_tokens": 1500, "completion_tokens": 600, "total_tokens": 2100,
                       "prompt_tokens_details": {"cached_tokens": 500}});
    let expected = Tokens {
        input: 1000,
        read: 500,
        output: 600,
        ..Tokens::default()
    };
    let chat = |model: &str, extra: Value, stream: bool| {
        let mut b =
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        Call::new(Method::POST, "/v1/chat/completions")
            .bearer(&tenant.key)
            .json(&b)
            .script(&json!({"usage": usage, "chunk_bytes": 6}))
    };
    let plain = api.send(chat("claude-sonnet-4-5", json!({}), true)).await;
    plain.assert_ok();
    let fast = api.send(chat(OPUS, json!({"speed": "fast"}), false)).await;
    fast.assert_ok();
    api.send(chat("claude-sonnet-4-5", json!({"speed": "fast"}), false))
        .await
        .assert_refused(400, "invalid_request_error");
    let rows = api.usage_settled(tenant.account, 2).await;
    let row = Api::row(&rows, plain.request_id());
    assert_eq!(
        (row.tokens(), row.cost()),
        (expected, expected.cost(&sonnet_4_5()))
    );
    assert_eq!(row.cost(), dec("1.701"));
    assert_eq!(row.speed, None);
    let row = Api::row(&rows, fast.request_id());
    assert_eq!(row.cost(), expected.cost(&opus_5_5().times("2")));
    assert_eq!(row.speed.as_deref(), Some("fast"));
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}
