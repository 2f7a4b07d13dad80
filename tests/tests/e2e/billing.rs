//! Exact charges: every usage category, JSON and SSE alike, model resolution (dated ids, the
//! served model), free routes, the OpenAI-compatible route and the customer's own `/v1/me`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::Api;
use crate::call::Call;
use crate::harness;
use crate::pricing::{dec, haiku_4_5, haiku_5_5, haiku_5_5_long_prompt, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

/// One request of each usage category (and all together), once as JSON and once as a stream cut
/// into 7-byte pieces with CRLF line endings: each is billed exactly by the formula, the stream
/// exactly like the JSON, and the usage record's counts are the upstream's.
#[tokio::test]
async fn each_usage_category_is_billed_exactly_json_and_stream_alike() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let t = |f: fn(&mut Tokens)| {
        let mut tokens = Tokens::default();
        f(&mut tokens);
        tokens
    };
    let cases = [
        ("input", t(|t| t.input = 1000)),
        ("5m cache write", t(|t| t.write_5m = 1000)),
        ("1h cache write", t(|t| t.write_1h = 1000)),
        ("cache read", t(|t| t.read = 1000)),
        ("output", t(|t| t.output = 1000)),
        (
            "thinking (part of output)",
            t(|t| (t.output, t.thinking) = (1000, 400)),
        ),
        ("web search", t(|t| (t.input, t.web_search) = (10, 2))),
        (
            "all together",
            Tokens {
                input: 1234,
                write_5m: 2000,
                write_1h: 3000,
                read: 5000,
                output: 777,
                thinking: 300,
                web_search: 3,
            },
        ),
    ];
    let mut expected = Vec::new();
    for (name, tokens) in cases {
        for stream in [false, true] {
            let mut script = json!({"usage": tokens.anthropic_usage()});
            if stream {
                script["chunk_bytes"] = json!(7);
                script["line_ending"] = json!("crlf");
                if tokens.thinking > 0 {
                    script["thinking_deltas"] = json!(2);
                }
            }
            let reply = api
                .send(Call::messages(&tenant.key, SONNET, stream).script(&script))
                .await;
            reply.assert_ok();
            if stream {
                assert!(
                    reply.text().contains("event: message_stop"),
                    "{name}: {}",
                    reply.text()
                );
            } else {
                assert_eq!(
                    reply.json()["usage"],
                    tokens.anthropic_usage(),
                    "{name}: body passed unchanged"
                );
            }
            expected.push((name, stream, reply.request_id(), tokens));
        }
    }
    let rows = api.usage_settled(tenant.account, expected.len()).await;
    for (name, stream, id, tokens) in &expected {
        let row = Api::row(&rows, *id);
        let what = format!("{name} (stream: {stream})");
        assert_eq!(row.tokens(), *tokens, "{what}: recorded counts");
        assert_eq!(row.cost(), tokens.cost(&sonnet_4_5()), "{what}: cost");
        assert!(!row.partial, "{what}: complete, not partial");
        assert_eq!(row.model, SONNET, "{what}");
        assert_eq!(row.key_id, tenant.key_id, "{what}");
    }
    // Spot-check the formula against hand-computed figures (the "all together" pair).
    for (name, _, id, _) in &expected {
        if *name == "all together" {
            assert_eq!(Api::row(&rows, *id).cost(), dec("10.12998"));
        }
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
    api.assert_ledger_invariants().await;
}

/// In a stream, `message_delta`'s usage overrides `message_start`'s field by field, input and
/// cache counts included; a field the delta leaves out keeps `message_start`'s value.
#[tokio::test]
async fn stream_final_usage_overrides_message_start_field_by_field() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let script = json!({
        "start_usage": {"input_tokens": 100, "cache_read_input_tokens": 5000, "output_tokens": 1},
        "usage": {"input_tokens": 120, "output_tokens": 30},
        "chunk_bytes": 5
    });
    let reply = api
        .send(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    reply.assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    let expected = Tokens {
        input: 120,
        read: 5000,
        output: 30,
        ..Tokens::default()
    };
    assert_eq!(rows[0].tokens(), expected);
    assert_eq!(rows[0].cost(), expected.cost(&sonnet_4_5()));
    assert!(!rows[0].partial);
}

/// Without the TTL split (`cache_creation` absent) all cache writes are 5-minute writes.
#[tokio::test]
async fn cache_writes_without_ttl_split_are_billed_as_5m_writes() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let usage = json!({"input_tokens": 10, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 0,
                       "output_tokens": 5});
    let reply = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&json!({"usage": usage})))
        .await;
    reply.assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    let expected = Tokens {
        input: 10,
        write_5m: 2000,
        output: 5,
        ..Tokens::default()
    };
    assert_eq!(rows[0].tokens(), expected);
    assert_eq!(rows[0].cost(), expected.cost(&sonnet_4_5()));
    assert_eq!(rows[0].cost(), dec("1.0647"));
}

/// Prompt-size tiers count every input-side token; strictly above 100,000 Haiku 5.5's upper tier
/// applies to the whole request, output included. (Sonnet 4.5's long-context tier ended on
/// 2026-04-30: its December version is flat.)
#[tokio::test]
async fn prompt_above_the_tier_threshold_bills_the_whole_request_at_the_tier() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let model = "claude-haiku-5-5";
    let at = Tokens {
        input: 50_000,
        read: 50_000,
        output: 1000,
        ..Tokens::default()
    };
    let above = Tokens { read: 50_001, ..at };
    let mut ids = Vec::new();
    for (tokens, stream) in [(at, false), (above, false), (above, true)] {
        let script = json!({"usage": tokens.anthropic_usage(), "chunk_bytes": 9});
        let reply = api
            .send(Call::messages(&tenant.key, model, stream).script(&script))
            .await;
        reply.assert_ok();
        ids.push(reply.request_id());
    }
    let rows = api.usage_settled(tenant.account, 3).await;
    assert_eq!(Api::row(&rows, ids[0]).cost(), at.cost(&haiku_5_5()));
    assert_eq!(Api::row(&rows, ids[0]).cost(), dec("0.84"));
    for id in &ids[1..] {
        assert_eq!(Api::row(&rows, *id).cost(), above.cost(&haiku_5_5_long_prompt()));
        assert_eq!(Api::row(&rows, *id).cost(), dec("4.200007"));
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// `claude-haiku-4-5-20251001` is priced as `claude-haiku-4-5`; a response naming another model is
/// billed at the served model's price; a served model without a price falls back to the requested.
#[tokio::test]
async fn dated_model_bills_as_its_family_and_the_served_model_is_billed() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let tokens = Tokens {
        input: 1000,
        output: 1000,
        ..Tokens::default()
    };
    let usage = json!({"usage": tokens.anthropic_usage()});

    let dated = api
        .send(Call::messages(&tenant.key, "claude-haiku-4-5-20251001", false).script(&usage))
        .await;
    dated.assert_ok();
    let mut served_other = usage.clone();
    served_other["model"] = json!("claude-haiku-4-5");
    let served = api
        .send(Call::messages(&tenant.key, SONNET, true).script(&served_other))
        .await;
    served.assert_ok();
    let mut served_unpriced = usage.clone();
    served_unpriced["model"] = json!("claude-imaginary-9");
    let unpriced = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&served_unpriced))
        .await;
    unpriced.assert_ok();

    let rows = api.usage_settled(tenant.account, 3).await;
    let haiku = tokens.cost(&haiku_4_5());
    assert_eq!(haiku, dec("0.84"));
    let row = Api::row(&rows, dated.request_id());
    assert_eq!(
        (row.model.as_str(), row.cost()),
        ("claude-haiku-4-5-20251001", haiku)
    );
    let row = Api::row(&rows, served.request_id());
    assert_eq!((row.model.as_str(), row.cost()), ("claude-haiku-4-5", haiku));
    let row = Api::row(&rows, unpriced.request_id());
    assert_eq!(
        row.cost(),
        tokens.cost(&sonnet_4_5()),
        "unpriced served model billed as requested"
    );
    assert_eq!(row.cost(), dec("2.52"));
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// `count_tokens` and `/v1/models` pass with a valid key even at zero balance (where messages get
/// 402), reach the upstream, and are never billed.
#[tokio::test]
async fn count_tokens_and_models_are_free_and_allowed_at_zero_balance() {
    let api = Api::new(harness::shared());
    let broke = api.tenant("0").await;
    let funded = api.tenant("10").await;
    for tenant in [&broke, &funded] {
        let count = Call::new(Method::POST, "/v1/messages/count_tokens")
            .key(&tenant.key)
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "model": SONNET}));
        let count = api.send(count).await;
        count.assert_ok();
        assert!(
            count.json()["input_tokens"].as_u64().is_some(),
            "{}",
            count.text()
        );
        let models = api
            .send(Call::new(Method::GET, "/v1/models").bearer(&tenant.key))
            .await;
        models.assert_ok();
        assert!(models.json()["data"].is_array(), "{}", models.text());
        assert_eq!(api.upstream_saw(&models.marker).await.len(), 1);
        assert!(
            models.headers.get("x-claudestore-request-id").is_none(),
            "free routes have no debit"
        );
    }
    api.send(Call::messages(&broke.key, SONNET, false))
        .await
        .assert_refused(402, "billing_error");
    // One billed request after the free ones: it must be the only usage record.
    let billed = api.send(Call::messages(&funded.key, SONNET, false)).await;
    billed.assert_ok();
    let rows = api.usage_settled(funded.account, 1).await;
    assert_eq!(rows[0].request_id, billed.request_id());
    assert!(
        api.usage(broke.account).await.is_empty(),
        "free requests billed at zero balance"
    );
    assert_eq!(api.balance(broke.account).await, dec("0"));
    api.assert_balance(&funded, funded.granted, &rows).await;
}

/// The OpenAI-compatible route, JSON and streaming: input = prompt - cached, cache reads = cached,
/// output = completion, thinking = reasoning; the upstream gets the operator key as a Bearer token
/// and a streaming request gets `stream_options.include_usage` even when the caller said false.
#[tokio::test]
async fn openai_route_bills_by_the_mapping_and_streams_ask_for_usage() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("100").await;
    let usage = json!({"prompt_tokens": 1500, "completion_tokens": 600, "total_tokens": 2100,
                       "prompt_tokens_details": {"cached_tokens": 500},
                       "completion_tokens_details": {"reasoning_tokens": 200}});
    let expected = Tokens {
        input: 1000,
        read: 500,
        output: 600,
        thinking: 200,
        ..Tokens::default()
    };
    let body = |stream: Option<Value>| {
        let mut b = json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}]});
        if let Some(options) = stream {
            b["stream"] = json!(true);
            if !options.is_null() {
                b["stream_options"] = options;
            }
        }
        b
    };
    let chat = |b: Value| {
        Call::new(Method::POST, "/v1/chat/completions")
            .bearer(&tenant.key)
            .json(&b)
            .script(&json!({"usage": usage, "chunk_bytes": 11}))
    };
    let plain = api.send(chat(body(None))).await;
    plain.assert_ok();
    assert_eq!(plain.json()["usage"], usage);
    let streamed = api.send(chat(body(Some(Value::Null)))).await;
    streamed.assert_ok();
    assert!(streamed.text().contains("data: [DONE]"), "{}", streamed.text());
    let refused_usage = api.send(chat(body(Some(json!({"include_usage": false}))))).await;
    refused_usage.assert_ok();

    for reply in [&streamed, &refused_usage] {
        let up = api.upstream_one(&reply.marker).await;
        let sent: Value = serde_json::from_str(&up.body).expect("upstream body is JSON");
        assert_eq!(
            sent["stream_options"]["include_usage"],
            json!(true),
            "upstream body: {}",
            up.body
        );
        assert_eq!(sent["model"], SONNET);
    }
    for reply in [&plain, &streamed] {
        let up = api.upstream_one(&reply.marker).await;
        assert_eq!(up.path, "/v1/chat/completions");
        assert_eq!(
            up.header("authorization"),
            Some(format!("Bearer {}", harness::OPERATOR_KEY).as_str())
        );
        assert_eq!(up.header("x-api-key"), None);
    }
    let rows = api.usage_settled(tenant.account, 3).await;
    for reply in [&plain, &streamed, &refused_usage] {
        let row = Api::row(&rows, reply.request_id());
        assert_eq!(row.tokens(), expected);
        assert_eq!(row.cost(), expected.cost(&sonnet_4_5()));
        assert_eq!(row.cost(), dec("1.701"));
        assert!(!row.partial);
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// `GET /v1/me` through the gateway reaches the control plane with the caller's own key.
#[tokio::test]
async fn customer_me_is_served_by_the_control_plane_through_the_gateway() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("42.5").await;
    let me = api.send(Call::new(Method::GET, "/v1/me").key(&tenant.key)).await;
    me.assert_ok();
    let me = me.json();
    assert_eq!(me["account_id"], tenant.account.to_string());
    assert_eq!(dec(me["balance"].as_str().expect("balance")), dec("42.5"));
    assert_eq!(me["key"]["id"], tenant.key_id.to_string());
    let usage = api
        .send(Call::new(Method::GET, "/v1/me/usage").bearer(&tenant.key))
        .await;
    usage.assert_ok();
    assert!(usage.json()["data"].is_array());
    let anonymous = api.send(Call::new(Method::GET, "/v1/me")).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}
