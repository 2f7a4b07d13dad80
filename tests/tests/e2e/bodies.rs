//! Request and response bodies as they come: large (model last, as SDKs send it), uploaded in
//! chunks without a length, and large responses: all pass whole and are billed.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::api::Api;
use crate::call::{raw_exchange, Call};
use crate::harness;
use crate::hostile::scripted_in_body;
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

/// 6 MB of messages before `model`, as SDKs order it: buffered, read, forwarded whole, billed.
#[tokio::test]
async fn large_request_body_with_model_last_is_forwarded_whole_and_billed() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    let tokens = Tokens {
        input: 150_000,
        output: 10,
        ..Tokens::default()
    };
    let script = json!({"usage": tokens.anthropic_usage()});
    let big = "y".repeat(6 * 1024 * 1024);
    let body =
        format!(r#"{{"max_tokens":16,"messages":[{{"role":"user","content":"{big}"}}],"model":"{SONNET}"}}"#);
    let call = Call::new(Method::POST, "/v1/messages")
        .key(&tenant.key)
        .header("content-type", "application/json")
        .raw(body.clone().into_bytes())
        .script(&script);
    let reply = api.send(call).await;
    reply.assert_ok();
    assert_eq!(api.upstream_one(&reply.marker).await.body_len, body.len());

    // The OpenAI route rewrites a large streaming body (include_usage) and still sends all of it.
    let openai_body =
        format!(r#"{{"messages":[{{"role":"user","content":"{big}"}}],"stream":true,"model":"{SONNET}"}}"#);
    let openai = Call::new(Method::POST, "/v1/chat/completions")
        .bearer(&tenant.key)
        .header("content-type", "application/json")
        .raw(openai_body.clone().into_bytes())
        .script(&json!({"usage": {"prompt_tokens": 150_000, "completion_tokens": 10}}));
    let streamed = api.send(openai).await;
    streamed.assert_ok();
    let up = api.upstream_one(&streamed.marker).await;
    assert!(
        up.body_len > openai_body.len(),
        "include_usage not added to the large body"
    );

    let rows = api.usage_settled(tenant.account, 2).await;
    for id in [reply.request_id(), streamed.request_id()] {
        let row = Api::row(&rows, id);
        assert_eq!(row.tokens(), tokens);
        assert_eq!(row.cost(), dec("63.021"));
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

#[tokio::test]
async fn five_megabyte_response_passes_intact_and_is_billed() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("10").await;
    let text = "z".repeat(5 * 1024 * 1024);
    let raw = format!(
        r#"{{"id":"msg_big","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":10,"output_tokens":20}}}}"#
    );
    let reply = api
        .send(scripted_in_body(&tenant.key, &json!({"raw_body": raw}), false))
        .await;
    reply.assert_ok();
    assert_eq!(reply.body.len(), raw.len());
    assert!(
        reply.body == raw.as_bytes(),
        "the 5 MB response changed on its way"
    );
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].cost(), dec("0.0462"));
    assert!(!rows[0].partial);
}

/// A body uploaded with `transfer-encoding: chunked` (no content-length), `model` in the last chunk
/// and split across chunks, arriving slowly: read whole, forwarded whole, billed.
#[tokio::test]
async fn chunked_upload_with_model_in_the_last_chunk_is_read_and_billed() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("10").await;
    let tokens = Tokens {
        input: 321,
        output: 12,
        ..Tokens::default()
    };
    let script = json!({"usage": tokens.anthropic_usage()});
    let body = format!(
        r#"{{"max_tokens":16,"messages":[{{"role":"user","content":"{}"}}],"model":"{SONNET}"}}"#,
        "w".repeat(100_000)
    );
    let cut = body.len() - 12; // inside the model name
    let pieces = vec![
        body.as_bytes()[..40_000].to_vec(),
        body.as_bytes()[40_000..cut].to_vec(),
        body.as_bytes()[cut..].to_vec(),
    ];
    let marker = uuid::Uuid::new_v4().to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nx-e2e-marker: {marker}\r\n\
         x-fake-script: {script}\r\n",
        tenant.key
    );
    let base = api.gw.url.clone();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(&base, &head, &pieces, true, Duration::from_millis(100))
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(api.upstream_one(&marker).await.body_len, body.len());
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].tokens(), tokens);
    assert_eq!(rows[0].cost(), tokens.cost(&sonnet_4_5()));
    assert_eq!(rows[0].cost(), dec("0.16002"));
}
