//! Streams through the gateway: they reach the caller as they are produced, and every way a stream
//! can end early (upstream cut, caller gone, error event, no final usage) is billed exactly once,
//! as partial, for what was reported, with the output estimated when the upstream never said it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{Api, UsageRow};
use crate::call::Call;
use crate::harness;
use crate::pricing::{sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

/// A partial record: input as reported, output estimated above what was reported (1, from
/// `message_start`) and below `output_at_most`, charged exactly for the recorded counts.
fn assert_partial_estimate(row: &UsageRow, input: u64, output_at_most: u64) {
    assert!(row.partial, "not marked partial: {row:#?}");
    assert_eq!(row.input_tokens, input, "{row:#?}");
    assert!(
        row.output_tokens > 1 && row.output_tokens <= output_at_most,
        "output {} not estimated from the content forwarded (expected 2..={output_at_most})",
        row.output_tokens
    );
    assert_eq!(row.cost(), row.tokens().cost(&sonnet_4_5()), "{row:#?}");
}

#[tokio::test]
async fn stream_reaches_the_caller_event_by_event() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    // 11 events, 200 ms apart: the upstream needs 2 s for the whole stream.
    let call = Call::messages(&tenant.key, SONNET, true).script(&json!({"deltas": 5, "delay_ms": 200}));
    let sent = Instant::now();
    let mut resp = api.start(call).await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut seen = String::new();
    let (mut first_event, mut last_event, mut chunks) = (None, None, 0);
    while let Some(chunk) = resp.chunk().await.expect("stream body") {
        chunks += 1;
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if first_event.is_none() && seen.contains("event: message_start") {
            first_event = Some(sent.elapsed());
        }
        if seen.contains("event: message_stop") {
            last_event = Some(sent.elapsed());
        }
    }
    let (first, last) = (
        first_event.expect("message_start"),
        last_event.expect("message_stop"),
    );
    eprintln!("measured: first event after {first:?}, last after {last:?}, {chunks} chunks");
    assert!(
        last - first >= Duration::from_millis(1500),
        "the stream was held back: first event at {first:?}, last at {last:?}"
    );
    assert!(chunks >= 6, "only {chunks} chunks reached the caller");
    let rows = api.usage_settled(tenant.account, 1).await;
    assert!(!rows[0].partial);
}

#[tokio::test]
async fn stream_cut_by_the_upstream_is_billed_once_as_partial_with_estimated_output() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let usage = Tokens {
        input: 100,
        output: 50,
        ..Tokens::default()
    };
    // message_start, content_block_start, ping, three 16-byte deltas, then the connection drops.
    let script = json!({"usage": usage.anthropic_usage(), "text": "abcdefghijklmnop", "deltas": 10,
                        "cut_after_events": 6});
    let mut resp = api
        .start(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let id = resp.headers()["x-claudestore-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut seen = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("message_stop"), "the stream was not cut: {seen}");
    assert_eq!(
        seen.matches("abcdefghijklmnop").count(),
        3,
        "the events before the cut: {seen}"
    );
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id.to_string(), id);
    // 48 bytes of text forwarded: output estimated from them, never the unreported 50.
    assert_partial_estimate(&rows[0], 100, 48);
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

#[tokio::test]
async fn caller_disconnecting_mid_stream_is_billed_once_as_partial() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let usage = Tokens {
        input: 200,
        output: 500,
        ..Tokens::default()
    };
    let script = json!({"usage": usage.anthropic_usage(), "deltas": 40, "delay_ms": 100});
    let body = serde_json::to_vec(&crate::call::message_body(SONNET, true)).unwrap();
    let addr = api.gw.url.trim_start_matches("http://").to_owned();
    let key = tenant.key.clone();
    // A raw connection, so that the test decides exactly when the caller goes away.
    let received = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: gateway\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n\
             x-fake-script: {script}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen).matches("content_block_delta").count() < 4 {
            let n = s.read(&mut buf).expect("stream data");
            assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
        // the connection is dropped here, mid-stream
    })
    .await
    .unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    let rows = api.usage_settled(tenant.account, 1).await;
    let id = received
        .lines()
        .find_map(|l| l.strip_prefix("x-claudestore-request-id: "))
        .expect("request id header");
    assert_eq!(rows[0].request_id.to_string(), id.trim());
    // At least 4 of 40 six-byte deltas forwarded; the upstream's 500 was never reported.
    assert_partial_estimate(&rows[0], 200, 60);
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

#[tokio::test]
async fn error_event_mid_stream_is_billed_once_as_partial() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let usage = Tokens {
        input: 300,
        output: 80,
        ..Tokens::default()
    };
    // message_start, content_block_start, ping, three deltas, then an overloaded_error event.
    let script = json!({"usage": usage.anthropic_usage(), "deltas": 10, "text": "0123456789abcdef",
                        "error_event_after": 6});
    let reply = api
        .send(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    reply.assert_ok();
    assert!(reply.text().contains("overloaded_error"), "{}", reply.text());
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id, reply.request_id());
    assert_partial_estimate(&rows[0], 300, 48);
}

#[tokio::test]
async fn stream_without_final_usage_is_billed_as_partial_with_estimated_output() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let usage = Tokens {
        input: 400,
        read: 1000,
        output: 999,
        ..Tokens::default()
    };
    let script = json!({"usage": usage.anthropic_usage(), "deltas": 4, "text": "abcdefgh",
                        "omit_final_usage": true});
    let reply = api
        .send(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    reply.assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_partial_estimate(&rows[0], 400, 32);
    assert_eq!(
        rows[0].cache_read_tokens, 1000,
        "message_start's cache reads billed"
    );
}

/// A key revoked while its stream is running does not cut the stream: it is delivered and billed
/// once, complete; the key's next request is refused.
#[tokio::test]
async fn key_revoked_mid_stream_still_bills_the_stream_once() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let usage = Tokens {
        input: 50,
        output: 70,
        ..Tokens::default()
    };
    let script = json!({"usage": usage.anthropic_usage(), "deltas": 8, "delay_ms": 150});
    let mut resp = api
        .start(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.chunk().await.expect("stream").expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    api.revoke(tenant.key_id).await;
    let mut seen = String::new();
    while let Some(chunk) = resp.chunk().await.expect("stream body") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: message_stop"), "the stream was cut: {seen}");
    let rows = api.usage_settled(tenant.account, 1).await;
    assert!(!rows[0].partial);
    assert_eq!(rows[0].tokens(), usage);
    assert_eq!(rows[0].cost(), usage.cost(&sonnet_4_5()));
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_refused(401, "authentication_error");
}

/// A caller that hangs up after sending the whole request, before the upstream has answered, is
/// billed once the input estimated from its body (the upstream had the request and may bill it):
/// hanging up early never makes a request free. The gateway goes on serving.
#[tokio::test]
async fn caller_gone_before_the_answer_is_billed_its_estimated_input_once() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let body = serde_json::to_vec(&crate::call::message_body(SONNET, false)).unwrap();
    let marker = uuid::Uuid::new_v4().to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: gateway\r\nx-api-key: {}\r\ncontent-type: application/json\r\n\
         x-e2e-marker: {marker}\r\nx-fake-script: {{\"answer_after_ms\": 1500}}\r\ncontent-length: {}\r\n\r\n",
        tenant.key,
        body.len()
    );
    let addr = api.gw.url.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    // Hang up once the upstream has the request, long before it answers.
    crate::api::eventually(
        "the upstream to receive the request",
        Duration::from_secs(5),
        || async { (!api.upstream_saw(&marker).await.is_empty()).then_some(()) },
    )
    .await;
    drop(s);
    // Past the moment the upstream would have answered: nothing more may come of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let next = api.send(Call::messages(&tenant.key, SONNET, false)).await;
    next.assert_ok();
    let rows = api.usage_settled(tenant.account, 2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let gone = rows
        .iter()
        .find(|r| r.request_id != next.request_id())
        .expect("the usage record of the request whose caller left");
    assert!(gone.partial && gone.input_estimated, "{gone:#?}");
    assert_eq!(gone.input_tokens, (body.len() as u64).div_ceil(4), "{gone:#?}");
    assert_eq!(gone.output_tokens, 0, "{gone:#?}");
    assert_eq!(gone.cost(), gone.tokens().cost(&sonnet_4_5()), "{gone:#?}");
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}

/// A caller on a raw connection: sends `body` to `path` with `auth` (a header line) and the fake's
/// `script`, reads until `until` was seen `times` times, then goes away. Returns what it read.
async fn cut_by_caller(
    api: &Api,
    path: &str,
    auth: String,
    body: Vec<u8>,
    script: serde_json::Value,
    until: &'static str,
    times: usize,
) -> String {
    let addr = api.gw.url.trim_start_matches("http://").to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: gateway\r\n{auth}\r\ncontent-type: application/json\r\n\
             x-fake-script: {script}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen).matches(until).count() < times {
            let n = s.read(&mut buf).expect("response data");
            assert!(
                n > 0,
                "the response ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
        // the connection is dropped here, before the upstream reported usage
    })
    .await
    .unwrap()
}

fn request_id(received: &str) -> String {
    received
        .lines()
        .find_map(|l| l.strip_prefix("x-claudestore-request-id: "))
        .expect("request id header")
        .trim()
        .to_owned()
}

/// OpenAI-compatible streams report usage only in their last chunk and Anthropic JSON answers in
/// their last member: a caller who cuts the answer before it must still pay for the input, which
/// the gateway then estimates from the request body's size (4 bytes a token) and marks.
#[tokio::test]
async fn answers_cut_before_their_usage_bill_an_estimated_input() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("10").await;
    let prompt = "p".repeat(4_000);

    let openai_body = serde_json::to_vec(&json!({
        "model": SONNET, "stream": true,
        "messages": [{"role": "user", "content": prompt}]
    }))
    .unwrap();
    let openai_script = json!({"usage": {"prompt_tokens": 1200, "completion_tokens": 300},
                               "deltas": 40, "delay_ms": 50});
    let openai = cut_by_caller(
        &api,
        "/v1/chat/completions",
        format!("authorization: Bearer {}", tenant.key),
        openai_body.clone(),
        openai_script,
        "chat.completion.chunk",
        4,
    )
    .await;
    assert!(openai.starts_with("HTTP/1.1 200"), "{openai}");

    let anthropic_body = serde_json::to_vec(&json!({
        "model": SONNET, "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}]
    }))
    .unwrap();
    let anthropic_script = json!({"usage": {"input_tokens": 1200, "output_tokens": 300},
                                  "deltas": 20, "chunk_bytes": 40, "delay_ms": 100});
    let anthropic = cut_by_caller(
        &api,
        "/v1/messages",
        format!("x-api-key: {}", tenant.key),
        anthropic_body.clone(),
        anthropic_script,
        "hello",
        2,
    )
    .await;
    assert!(anthropic.starts_with("HTTP/1.1 200"), "{anthropic}");
    assert!(
        !anthropic.contains("usage"),
        "the caller saw the usage: {anthropic}"
    );

    let rows = api.usage_settled(tenant.account, 2).await;
    for (received, body) in [(&openai, &openai_body), (&anthropic, &anthropic_body)] {
        let row = rows
            .iter()
            .find(|r| r.request_id.to_string() == request_id(received))
            .expect("the cut request's usage record");
        assert!(row.partial && row.input_estimated, "{row:#?}");
        assert_eq!(row.input_tokens, (body.len() as u64).div_ceil(4), "{row:#?}");
        assert_eq!(row.cost(), row.tokens().cost(&sonnet_4_5()), "{row:#?}");
    }
    api.assert_balance(&tenant, tenant.granted, &rows).await;
}
