//! Bodies nobody should send: garbage and hostile upstream answers pass through unchanged, leave
//! the gateway serving and never produce a negative or absurd charge; upstream errors pass through
//! unbilled.

use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::api::{Api, Tenant};
use crate::call::Call;
use crate::harness;
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

/// A Messages request whose first user message scripts the fake (`FAKE:{...}`): for scripts too
/// large for a header.
pub fn scripted_in_body(key: &str, script: &Value, stream: bool) -> Call {
    Call::new(Method::POST, "/v1/messages")
        .key(key)
        .json(&scripted_body(script, stream))
}

fn scripted_body(script: &Value, stream: bool) -> Value {
    json!({
        "max_tokens": 64,
        "messages": [{"role": "user", "content": format!("FAKE:{script}")}],
        "model": SONNET,
        "stream": stream
    })
}

/// Deterministic noise (xorshift), `len` bytes, not UTF-8.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nested(depth: usize) -> String {
    format!(
        r#"{{"type":"message","model":"claude-sonnet-4-5","usage":{{"input_tokens":10,"output_tokens":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// A normal request that must be served and billed exactly after each hostile one.
async fn still_serving(api: &Api, tenant: &Tenant) -> uuid::Uuid {
    let tokens = Tokens {
        input: 10,
        output: 20,
        ..Tokens::default()
    };
    let reply = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&json!({"usage": tokens.anthropic_usage()})))
        .await;
    reply.assert_ok();
    reply.request_id()
}

#[tokio::test]
async fn hostile_upstream_bodies_leave_the_gateway_serving_and_never_charge_absurdly() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let json_body = |raw: String| json!({"raw_body": raw});
    let sse_body = |raw: String| json!({"raw_body": raw, "content_type": "text/event-stream"});
    let usage =
        |u: &str| format!(r#"{{"type":"message","model":"claude-sonnet-4-5","content":[],"usage":{u}}}"#);
    let sse_event = |data: &str| format!("event: message_start\ndata: {data}\n\n");
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "not JSON",
            json_body("<html>502 Bad Gateway</html>".into()),
            false,
        ),
        ("empty", json_body(String::new()), false),
        (
            "truncated JSON",
            json_body(usage(r#"{"input_tokens":10,"output_tok"#)),
            false,
        ),
        (
            "huge counts",
            json_body(usage(
                r#"{"input_tokens":1e30,"output_tokens":99999999999999999999999999}"#,
            )),
            false,
        ),
        (
            "counts above any upstream",
            json_body(usage(r#"{"input_tokens":10000000000000,"output_tokens":5}"#)),
            false,
        ),
        (
            "negative counts",
            json_body(usage(r#"{"input_tokens":-1000000,"output_tokens":-5}"#)),
            false,
        ),
        (
            "fractional counts",
            json_body(usage(r#"{"input_tokens":10.5,"output_tokens":0.25}"#)),
            false,
        ),
        (
            "counts as strings",
            json_body(usage(r#"{"input_tokens":"1000000","output_tokens":"7"}"#)),
            false,
        ),
        (
            "thinking above output",
            json_body(usage(
                r#"{"input_tokens":1,"output_tokens":2,"output_tokens_details":{"thinking_tokens":900000000}}"#,
            )),
            false,
        ),
        ("usage not an object", json_body(usage(r#"[1,2,3]"#)), false),
        ("deeply nested arrays", json_body(nested(200_000)), false),
        (
            "deeply nested objects",
            json_body(format!(
                "{}1{}",
                r#"{"usage":"#.repeat(50_000),
                "}".repeat(50_000)
            )),
            false,
        ),
        (
            "random bytes as JSON",
            json!({"raw_body_hex": hex(&noise(64 * 1024))}),
            false,
        ),
        (
            "random bytes as SSE",
            json!({"raw_body_hex": hex(&noise(256 * 1024)), "content_type": "text/event-stream"}),
            true,
        ),
        (
            "SSE with huge counts",
            sse_body(sse_event(
                r#"{"type":"message_start","message":{"usage":{"input_tokens":1e300,"output_tokens":-1}}}"#,
            )),
            true,
        ),
        (
            "SSE data that never ends",
            sse_body(format!(
                "event: message_delta\ndata: {{\"usage\":{{\"output_tokens\":{}",
                "9".repeat(100_000)
            )),
            true,
        ),
        (
            "SSE nested",
            sse_body(format!("data: {}\n\n", nested(100_000))),
            true,
        ),
    ];
    let mut normal = Vec::new();
    let mut hostile = Vec::new();
    for (name, script, stream) in &cases {
        let reply = api.send(scripted_in_body(&tenant.key, script, *stream)).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let sent = match (script.get("raw_body"), script.get("raw_body_hex")) {
            (Some(Value::String(text)), _) => text.clone().into_bytes(),
            (_, Some(Value::String(h))) => noise(h.len() / 2),
            _ => unreachable!(),
        };
        assert!(
            reply.body == sent,
            "{name}: the body did not pass through unchanged"
        );
        // The script (the hostile answer itself) travels in the request body: a large request.
        let request_bytes = scripted_body(script, *stream).to_string().len() as u64;
        hostile.push((*name, reply.request_id(), request_bytes));
        normal.push(still_serving(&api, &tenant).await);
    }
    let rows = api.usage_including(tenant.account, &normal).await;
    assert!(rows.len() <= normal.len() + hostile.len(), "{rows:#?}");
    let normal_cost = Tokens {
        input: 10,
        output: 20,
        ..Tokens::default()
    }
    .cost(&sonnet_4_5());
    for id in &normal {
        assert_eq!(Api::row(&rows, *id).cost(), normal_cost);
    }
    for row in &rows {
        let case = hostile
            .iter()
            .find(|(_, id, _)| *id == row.request_id)
            .map(|(n, _, bytes)| (*n, *bytes));
        if let Some((name, request_bytes)) = case {
            eprintln!(
                "hostile body {name:?}: billed {} ({} in, {} out, partial {})",
                row.cost(),
                row.input_tokens,
                row.output_tokens,
                row.partial
            );
            // An answer without a readable input side bills the input estimated from the
            // request's size; beyond that, nothing the upstream sent may charge absurdly.
            let estimate = if row.input_estimated {
                assert_eq!(row.input_tokens, request_bytes.div_ceil(4), "{name}");
                Tokens {
                    input: row.input_tokens,
                    ..Tokens::default()
                }
                .cost(&sonnet_4_5())
            } else {
                Decimal::ZERO
            };
            assert!(
                row.cost() >= Decimal::ZERO && row.cost() - estimate <= dec("100"),
                "{name}: absurd charge {row:#?}"
            );
        } else {
            assert!(
                normal.contains(&row.request_id),
                "usage record of no request: {row:#?}"
            );
        }
    }
    let balance = api.assert_balance(&tenant, tenant.granted, &rows).await;
    assert!(balance <= tenant.granted && balance > dec("0"));
    api.assert_ledger_invariants().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged_and_unbilled() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("10").await;
    for status in [400u16, 401, 403, 404, 413, 429, 500, 503, 529] {
        for stream in [false, true] {
            let reply = api
                .send(Call::messages(&tenant.key, SONNET, stream).script(&json!({"status": status})))
                .await;
            assert_eq!(reply.status, status, "{}", reply.text());
            assert_eq!(
                reply.json(),
                json!({"type": "error", "error": {"type": "api_error", "message": "scripted upstream error"}})
            );
            assert_eq!(
                reply.headers.get("request-id").map(|v| v.to_str().unwrap()),
                Some("req_fake_error")
            );
        }
    }
    let openai = Call::new(Method::POST, "/v1/chat/completions")
        .bearer(&tenant.key)
        .json(&json!({"model": SONNET, "messages": [], "stream": true}))
        .script(&json!({"status": 429}));
    assert_eq!(api.send(openai).await.status, 429);
    let billed = still_serving(&api, &tenant).await;
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id, billed, "an upstream error was billed");
}

/// Anyone can mint well-formed keys; each new one would cost a control-plane lookup. A worker's
/// lookup budget caps that: past it, unknown keys get 503 `api_error` without a lookup, while keys
/// the gateway already knows are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_minted_keys_is_capped_and_known_keys_are_still_served() {
    let stack = harness::OwnedGateway::start(harness::Options {
        envoy_concurrency: 1,
        plugin_extra: json!({"lookup_rate_per_s": 1, "lookup_burst": 3}),
        ..harness::Options::shared()
    });
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("10").await;
    api.until_models_answer(
        &tenant.key,
        200,
        "the key is synced",
        std::time::Duration::from_secs(10),
    )
    .await;
    let lookups_before = api.filter_stat("lookups").await;
    let mut limited = 0;
    for _ in 0..12 {
        let reply = api
            .send(Call::messages(
                &crate::call::well_formed_unknown_key(),
                SONNET,
                false,
            ))
            .await;
        match reply.status {
            401 => reply.assert_refused(401, "authentication_error"),
            503 => {
                reply.assert_refused(503, "api_error");
                assert!(reply.text().contains("not seen yet"), "{}", reply.text());
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    let lookups = api.filter_stat("lookups").await - lookups_before;
    assert!(limited >= 6, "only {limited} of 12 minted keys were limited");
    assert!(lookups <= 6, "{lookups} lookups for 12 minted keys");
    assert_eq!(api.filter_stat("refused.lookup_rate_limited").await, limited);
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
}
