//! The incremental parsers against realistic bodies: Anthropic Messages JSON and SSE, OpenAI chat
//! completions JSON and SSE, request bodies, and the JSON scanner and SSE framer under them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Under wasm32 the same tests run with wasm-bindgen-test (in Node): `cargo xtask test`.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use metering::anthropic::{estimate_output, AnthropicJsonMeter, AnthropicSseMeter, ContentSeen};
use metering::json::{Container, JsonScanner, JsonSink, Limits, Number, Path, Value};
use metering::openai::{OpenAiJsonMeter, OpenAiSseMeter};
use metering::request::{RequestError, RequestMeter, StreamOptions};
use metering::sse::{SseFramer, SseHandler, StreamEnd};
use metering::{MeterError, Metered, Usage};
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------------------------
// Helpers

trait Meter {
    fn start() -> Self;
    fn push(&mut self, chunk: &[u8]);
    fn end(self) -> Result<Metered, MeterError>;
    fn so_far(&self) -> Metered;
}

macro_rules! meter {
    ($($t:ty),*) => {$(
        impl Meter for $t {
            fn start() -> Self { <$t>::new() }
            fn push(&mut self, chunk: &[u8]) { self.feed(chunk) }
            fn end(self) -> Result<Metered, MeterError> { self.finish() }
            fn so_far(&self) -> Metered { self.best_effort() }
        }
    )*};
}
meter!(
    AnthropicJsonMeter,
    AnthropicSseMeter,
    OpenAiJsonMeter,
    OpenAiSseMeter
);

/// Meters the body whole, byte by byte and in 7-byte chunks; all three must agree.
fn run<M: Meter>(body: &[u8]) -> (Result<Metered, MeterError>, Metered) {
    let mut whole = M::start();
    whole.push(body);
    let mut bytewise = M::start();
    let mut chunked = M::start();
    for b in body {
        bytewise.push(std::slice::from_ref(b));
    }
    for c in body.chunks(7) {
        chunked.push(c);
    }
    let best = whole.so_far();
    assert_eq!(bytewise.so_far(), best, "best effort differs byte by byte");
    assert_eq!(chunked.so_far(), best, "best effort differs in chunks");
    let result = whole.end();
    assert_eq!(bytewise.end(), result, "result differs byte by byte");
    assert_eq!(chunked.end(), result, "result differs in chunks");
    (result, best)
}

fn meter<M: Meter>(body: &str) -> Result<Metered, MeterError> {
    run::<M>(body.as_bytes()).0
}

fn best_effort<M: Meter>(body: &str) -> Metered {
    run::<M>(body.as_bytes()).1
}

fn bad_count(field: &str, reason: &'static str) -> MeterError {
    MeterError::BadCount {
        field: field.to_owned(),
        reason,
    }
}

/// An SSE stream of `(event name, data)` pairs, lines ended by `eol`.
fn sse(events: &[(&str, Json)], eol: &str) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}{eol}data: {data}{eol}{eol}"))
        .collect()
}

fn ceil4(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

// ---------------------------------------------------------------------------------------------
// Anthropic JSON

const TRICKY_TEXT: &str = "Your usage: \"usage\": {\"input_tokens\": 999999} — héllo 🌍";

fn anthropic_message() -> Json {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "The user asks about usage.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
            {"type": "text", "text": TRICKY_TEXT},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "report",
             "input": {"usage": {"input_tokens": 777777, "output_tokens": -3}, "model": "gpt-evil", "id": "x"}}
        ],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 2095,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 50000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
            "output_tokens": 503,
            "output_tokens_details": {"thinking_tokens": 120},
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
            "service_tier": "standard"
        }
    })
}

fn anthropic_message_usage() -> Usage {
    Usage {
        input_tokens: 2095,
        output_tokens: 503,
        thinking_tokens: 120,
        cache_write_5m_tokens: 1000,
        cache_write_1h_tokens: 2000,
        cache_read_tokens: 50000,
        web_search_requests: 2,
        web_fetch_requests: 1,
        service_tier: Some("standard".to_owned()),
    }
}

#[test]
fn anthropic_json_reads_usage_model_and_id_not_fooled_by_nested_usage_or_text() {
    let body = serde_json::to_string_pretty(&anthropic_message()).unwrap();
    let metered = meter::<AnthropicJsonMeter>(&body).unwrap();
    assert_eq!(
        metered,
        Metered {
            usage: anthropic_message_usage(),
            model: Some("claude-sonnet-4-5-20250929".to_owned()),
            message_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".to_owned()),
            partial: false,
            output_estimated: false,
        }
    );
}

#[test]
fn anthropic_json_reads_usage_placed_before_the_content() {
    let body = r#"{"usage":{"output_tokens":7,"input_tokens":3},"model":"claude-haiku-4-5","content":[{"type":"text","text":"usage"}],"id":"msg_1"}"#;
    let metered = meter::<AnthropicJsonMeter>(body).unwrap();
    assert_eq!(
        metered.usage,
        Usage {
            input_tokens: 3,
            output_tokens: 7,
            ..Usage::default()
        }
    );
    assert_eq!(metered.model.as_deref(), Some("claude-haiku-4-5"));
    assert!(!metered.partial);
}

#[test]
fn anthropic_json_cache_writes_follow_the_ttl_split_rules() {
    // (usage object, expected 5m writes, expected 1h writes)
    let cases = [
        (json!({"cache_creation_input_tokens": 500}), 500, 0),
        (
            json!({"cache_creation_input_tokens": 500, "cache_creation": null}),
            500,
            0,
        ),
        (
            json!({"cache_creation_input_tokens": 500, "cache_creation": {"ephemeral_1h_input_tokens": 500}}),
            0,
            500,
        ),
        // The split leaves 100 writes unplaced: 5m, the TTL of writes without a split.
        (
            json!({"cache_creation_input_tokens": 600, "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300}}),
            300,
            300,
        ),
        // A total below the split's sum does not shrink it.
        (
            json!({"cache_creation_input_tokens": 100, "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300}}),
            200,
            300,
        ),
        (
            json!({"cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 2}}),
            40,
            2,
        ),
    ];
    for (usage, write_5m, write_1h) in cases {
        let body = json!({"type": "message", "usage": usage.clone()}).to_string();
        let metered = best_effort::<AnthropicJsonMeter>(&body);
        assert_eq!(
            (
                metered.usage.cache_write_5m_tokens,
                metered.usage.cache_write_1h_tokens
            ),
            (write_5m, write_1h),
            "{usage}"
        );
    }
}

#[test]
fn anthropic_json_nulls_count_as_absent() {
    let body = r#"{"model":null,"id":"msg_2","usage":{"input_tokens":null,"output_tokens":9,"cache_read_input_tokens":null,"server_tool_use":null,"service_tier":null}}"#;
    let metered = meter::<AnthropicJsonMeter>(body).unwrap();
    assert_eq!(
        metered.usage,
        Usage {
            output_tokens: 9,
            ..Usage::default()
        }
    );
    assert_eq!(metered.model, None);
}

#[test]
fn anthropic_json_repeated_keys_last_value_wins_and_replaces_the_whole_object() {
    let body = r#"{"usage":{"input_tokens":5,"output_tokens":6},"model":"a","usage":{"output_tokens":8,"output_tokens":9},"model":"claude-opus-4-1"}"#;
    let metered = meter::<AnthropicJsonMeter>(body).unwrap();
    assert_eq!(
        metered.usage,
        Usage {
            output_tokens: 9,
            ..Usage::default()
        }
    );
    assert_eq!(metered.model.as_deref(), Some("claude-opus-4-1"));
}

#[test]
fn anthropic_json_keys_written_with_escapes_are_the_same_keys() {
    let body = r#"{"\u0075sage":{"input_\u0074okens":11,"output_tokens":1}}"#;
    assert_eq!(meter::<AnthropicJsonMeter>(body).unwrap().usage.input_tokens, 11);
}

#[test]
fn anthropic_json_invalid_counts_are_bad_count_errors_at_usage_paths_only() {
    let cases: [(&str, &'static str); 8] = [
        ("-5", "negative"),
        ("-0", "negative"),
        ("1.5", "not an integer"),
        ("10.0", "not an integer"),
        ("1e3", "not an integer"),
        ("18446744073709551616", "absurdly large"),
        ("1000000000001", "absurdly large"),
        ("\"12\"", "not a number"),
    ];
    for (count, reason) in cases {
        let body = format!(r#"{{"model":"m","usage":{{"input_tokens":{count},"output_tokens":4}}}}"#);
        let (result, best) = run::<AnthropicJsonMeter>(body.as_bytes());
        assert_eq!(result, Err(bad_count("usage.input_tokens", reason)), "{count}");
        // Billing after the error still gets everything else.
        assert_eq!(
            best.usage,
            Usage {
                output_tokens: 4,
                ..Usage::default()
            }
        );
        assert!(best.partial);
    }
    for count in ["true", "{}", "[]"] {
        let body = format!(
            r#"{{"usage":{{"output_tokens":4,"cache_creation":{{"ephemeral_1h_input_tokens":{count}}}}}}}"#
        );
        assert_eq!(
            meter::<AnthropicJsonMeter>(&body),
            Err(bad_count(
                "usage.cache_creation.ephemeral_1h_input_tokens",
                "not a number"
            ))
        );
    }
    // The same values anywhere else are nobody's business.
    let body = r#"{"usage":{"output_tokens":4,"unknown_tokens":-1.5},"content":[{"input":{"input_tokens":-1}}],"x":1e400}"#;
    assert_eq!(meter::<AnthropicJsonMeter>(body).unwrap().usage.output_tokens, 4);
}

#[test]
fn anthropic_json_thinking_above_output_is_a_bad_count() {
    let body = r#"{"usage":{"output_tokens":4,"output_tokens_details":{"thinking_tokens":5}}}"#;
    let (result, best) = run::<AnthropicJsonMeter>(body.as_bytes());
    assert!(matches!(result, Err(MeterError::BadCount { ref field, .. }) if field == "thinking_tokens"));
    assert_eq!((best.usage.output_tokens, best.usage.thinking_tokens), (4, 4));
}

#[test]
fn anthropic_json_truncated_body_is_a_syntax_error_but_best_effort_bills_what_was_reported() {
    let body = r#"{"id":"msg_3","model":"claude-sonnet-4-5","usage":{"input_tokens":40,"cache_read_input_tokens":7,"output_tokens":12},"content":[{"type":"text","text":"abcdefgh"}]}"#;
    let cut = &body[..body.len() - 10];
    let (result, best) = run::<AnthropicJsonMeter>(cut.as_bytes());
    assert_eq!(
        result,
        Err(MeterError::Syntax {
            offset: cut.len() as u64,
            reason: "unexpected end of input"
        })
    );
    assert!(best.partial);
    assert_eq!(best.usage.input_tokens, 40);
    assert_eq!(best.usage.output_tokens, 12);
    assert_eq!(best.message_id.as_deref(), Some("msg_3"));
}

#[test]
fn anthropic_json_without_output_count_estimates_it_from_the_content() {
    let body = json!({"content": [
        {"type": "thinking", "thinking": "0123456789"},
        {"type": "text", "text": TRICKY_TEXT}
    ], "usage": {"input_tokens": 3}})
    .to_string();
    let metered = meter::<AnthropicJsonMeter>(&body).unwrap();
    assert!(metered.partial && metered.output_estimated);
    assert_eq!(metered.usage.output_tokens, ceil4(TRICKY_TEXT.len()) + 3);
    assert_eq!(metered.usage.thinking_tokens, 3);
    assert_eq!(metered.usage.input_tokens, 3);
}

#[test]
fn anthropic_json_rejects_what_is_not_json() {
    let cases: [(&str, u64, &str); 7] = [
        ("", 0, "no JSON value"),
        ("<html>502 Bad Gateway</html>", 0, "expected a JSON value"),
        ("{'usage': 1}", 1, "expected a string key"),
        (
            r#"{"usage": {"input_tokens": 01}}"#,
            28,
            "leading zero in a number",
        ),
        (r#"{"a": 1,}"#, 8, "expected a string key"),
        (r#"{"a": 1} {"#, 9, "trailing characters after the JSON value"),
        (
            r#"{"a": tru }"#,
            9,
            "invalid literal (expected true, false or null)",
        ),
    ];
    for (body, offset, reason) in cases {
        assert_eq!(
            meter::<AnthropicJsonMeter>(body),
            Err(MeterError::Syntax { offset, reason }),
            "{body}"
        );
    }
}

fn nested(levels: usize) -> String {
    format!(
        r#"{{"usage":{{"output_tokens":1}},"x":{}{}}}"#,
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

#[test]
fn anthropic_json_nesting_deeper_than_64_levels_is_too_deep() {
    assert_eq!(
        meter::<AnthropicJsonMeter>(&nested(64))
            .unwrap()
            .usage
            .output_tokens,
        1
    );
    assert_eq!(
        meter::<AnthropicJsonMeter>(&nested(65)),
        Err(MeterError::TooDeep { limit: 64 })
    );
    let (_, best) = run::<AnthropicJsonMeter>(format!("{}1", "[".repeat(100_000)).as_bytes());
    assert!(best.partial);
}

// ---------------------------------------------------------------------------------------------
// Anthropic SSE

const THINKING: &str = "The user asks about usage; check the weather tool. ✓";
const TEXT: &str = "Hello! \"usage\":{\"output_tokens\":999} — 🌍";
const JSON_PARTS: [&str; 2] = ["{\"location\": \"San Fra", "ncisco, CA\", \"usage\": 5}"];

fn message_start(usage: Json) -> (&'static str, Json) {
    (
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null,
            "stop_sequence": null, "usage": usage}}),
    )
}

fn start_usage() -> Json {
    json!({
        "input_tokens": 472, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 20000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 1, "service_tier": "standard"
    })
}

fn delta(index: u32, delta: Json) -> (&'static str, Json) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

/// The events of a stream with thinking, text and a tool call, up to the content's end.
fn stream_content() -> Vec<(&'static str, Json)> {
    vec![
        message_start(start_usage()),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        delta(0, json!({"type": "thinking_delta", "thinking": THINKING})),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        delta(1, json!({"type": "text_delta", "text": TEXT})),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": JSON_PARTS[0]}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": JSON_PARTS[1]}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
    ]
}

fn message_delta(usage: Json) -> (&'static str, Json) {
    (
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": usage}),
    )
}

fn message_stop() -> (&'static str, Json) {
    ("message_stop", json!({"type": "message_stop"}))
}

fn full_stream(eol: &str) -> String {
    let mut events = stream_content();
    events.push(message_delta(json!({"output_tokens": 89})));
    events.push(message_stop());
    sse(&events, eol)
}

fn full_stream_metered() -> Metered {
    Metered {
        usage: Usage {
            input_tokens: 472,
            output_tokens: 89,
            cache_write_5m_tokens: 1000,
            cache_write_1h_tokens: 2000,
            cache_read_tokens: 20000,
            service_tier: Some("standard".to_owned()),
            ..Usage::default()
        },
        model: Some("claude-sonnet-4-5-20250929".to_owned()),
        message_id: Some("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".to_owned()),
        partial: false,
        output_estimated: false,
    }
}

#[test]
fn anthropic_sse_complete_stream_bills_start_usage_with_final_output() {
    assert_eq!(
        meter::<AnthropicSseMeter>(&full_stream("\n")),
        Ok(full_stream_metered())
    );
}

#[test]
fn anthropic_sse_line_endings_lf_crlf_and_cr_give_the_same_usage() {
    for eol in ["\n", "\r\n", "\r"] {
        assert_eq!(
            meter::<AnthropicSseMeter>(&full_stream(eol)),
            Ok(full_stream_metered()),
            "{eol:?}"
        );
    }
}

#[test]
fn anthropic_sse_message_delta_overrides_start_usage_field_by_field() {
    let mut events = stream_content();
    events.push(message_delta(json!({
        "input_tokens": 500, "cache_read_input_tokens": 0, "output_tokens": 89,
        "cache_creation": {"ephemeral_1h_input_tokens": 2500},
        "output_tokens_details": {"thinking_tokens": 40},
        "server_tool_use": {"web_search_requests": 3}
    })));
    events.push(message_stop());
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert_eq!(
        metered.usage,
        Usage {
            input_tokens: 500,
            output_tokens: 89,
            thinking_tokens: 40,
            // The total 3000 stays from message_start; the new split places 2500 + 1000 of it.
            cache_write_5m_tokens: 1000,
            cache_write_1h_tokens: 2500,
            cache_read_tokens: 0,
            web_search_requests: 3,
            web_fetch_requests: 0,
            service_tier: Some("standard".to_owned()),
        }
    );
    assert!(!metered.partial && !metered.output_estimated);
}

#[test]
fn anthropic_sse_later_message_delta_overrides_earlier_and_nulls_override_nothing() {
    let events = [
        message_start(json!({"input_tokens": 10, "output_tokens": 1})),
        message_delta(json!({"output_tokens": 20, "input_tokens": 11})),
        message_delta(json!({"output_tokens": 30, "input_tokens": null})),
        message_stop(),
    ];
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert_eq!(
        (metered.usage.input_tokens, metered.usage.output_tokens),
        (11, 30)
    );
}

#[test]
fn anthropic_sse_trusts_the_data_type_over_the_event_line() {
    let events = [
        (
            "message_delta",
            message_start(json!({"input_tokens": 10, "output_tokens": 1})).1,
        ),
        ("ping", message_delta(json!({"output_tokens": 20})).1),
        (
            "custom_future_event",
            json!({"type": "custom_future_event", "usage": {"output_tokens": 1000}}),
        ),
        ("", message_stop().1),
    ];
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert_eq!(
        (metered.usage.input_tokens, metered.usage.output_tokens),
        (10, 20)
    );
    assert!(!metered.partial);
}

#[test]
fn anthropic_sse_multi_line_data_comments_and_unknown_fields_are_handled() {
    let body = ": keep-alive comment\r\n\
        id: 1\r\nretry: 3000\r\nunknown-field: x\r\n\
        event: message_start\r\n\
        data: {\"type\":\"message_start\",\r\n\
        data:\"message\":{\"model\":\"claude-opus-4-1\",\"id\":\"msg_9\",\r\n\
        data: \"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\r\n\
        \r\n\
        :\r\n\
        data:{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n\
        data: {\"type\":\"message_stop\"}\r\r";
    let metered = meter::<AnthropicSseMeter>(body).unwrap();
    assert_eq!(
        metered.usage,
        Usage {
            input_tokens: 7,
            output_tokens: 2,
            ..Usage::default()
        }
    );
    assert_eq!(metered.model.as_deref(), Some("claude-opus-4-1"));
    assert!(!metered.partial);
}

#[test]
fn anthropic_sse_error_event_mid_stream_leaves_it_partial() {
    let mut events = stream_content();
    events.truncate(4);
    events.push((
        "error",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert!(metered.partial);
    assert_eq!(metered.usage.input_tokens, 472);
}

#[test]
fn anthropic_sse_cut_after_message_start_bills_input_as_partial_with_estimated_output() {
    let body = sse(&stream_content(), "\n");
    let metered = meter::<AnthropicSseMeter>(&body).unwrap();
    let text_bytes = TEXT.len() + JSON_PARTS[0].len() + JSON_PARTS[1].len();
    let thinking = ceil4(THINKING.len());
    assert_eq!(
        metered,
        Metered {
            usage: Usage {
                output_tokens: ceil4(text_bytes) + thinking,
                thinking_tokens: thinking,
                ..full_stream_metered().usage
            },
            partial: true,
            output_estimated: true,
            ..full_stream_metered()
        }
    );
    // Only message_start arrived: its output_tokens (1) is the floor.
    let metered = meter::<AnthropicSseMeter>(&sse(&stream_content()[..1], "\n")).unwrap();
    assert_eq!(
        (metered.usage.input_tokens, metered.usage.output_tokens),
        (472, 1)
    );
    assert!(metered.partial && metered.output_estimated);
}

#[test]
fn anthropic_sse_without_message_stop_or_final_usage_is_partial() {
    let mut events = stream_content();
    events.push(message_delta(json!({"output_tokens": 89})));
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert!(metered.partial && !metered.output_estimated);
    assert_eq!(metered.usage.output_tokens, 89);

    let mut events = stream_content();
    events.push(message_stop());
    let metered = meter::<AnthropicSseMeter>(&sse(&events, "\n")).unwrap();
    assert!(metered.partial && metered.output_estimated);
}

#[test]
fn anthropic_sse_cut_inside_an_event_is_partial_and_a_complete_last_event_still_counts() {
    let full = full_stream("\n");
    // Cut before the final blank line: message_stop's JSON is whole but not dispatched.
    let metered = meter::<AnthropicSseMeter>(&full[..full.len() - 1]).unwrap();
    assert_eq!(
        metered,
        Metered {
            partial: true,
            ..full_stream_metered()
        }
    );
    // Cut inside message_delta's JSON: its usage was never complete.
    let at = full.find("\"usage\":{\"output_tokens\":89").unwrap() + 20;
    let metered = meter::<AnthropicSseMeter>(&full[..at]).unwrap();
    assert!(metered.partial && metered.output_estimated);
}

#[test]
fn anthropic_sse_invalid_event_json_is_an_error_but_later_usage_is_kept_for_best_effort() {
    let mut body = sse(&stream_content()[..1], "\n");
    body.push_str("data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a\"\n\n");
    body.push_str(&sse(
        &[message_delta(json!({"output_tokens": 50})), message_stop()],
        "\n",
    ));
    let (result, best) = run::<AnthropicSseMeter>(body.as_bytes());
    assert!(matches!(result, Err(MeterError::Syntax { .. })), "{result:?}");
    assert_eq!((best.usage.input_tokens, best.usage.output_tokens), (472, 50));
    assert!(best.partial);
}

#[test]
fn anthropic_sse_bad_count_in_message_delta_is_an_error_and_best_effort_estimates_output() {
    let mut events = stream_content();
    events.push(message_delta(json!({"output_tokens": -89})));
    events.push(message_stop());
    let (result, best) = run::<AnthropicSseMeter>(sse(&events, "\n").as_bytes());
    assert_eq!(result, Err(bad_count("usage.output_tokens", "negative")));
    let text_bytes = TEXT.len() + JSON_PARTS[0].len() + JSON_PARTS[1].len();
    assert!(best.partial && best.output_estimated);
    assert_eq!(
        best.usage.output_tokens,
        ceil4(text_bytes) + ceil4(THINKING.len())
    );
    assert_eq!(best.usage.input_tokens, 472);
}

#[test]
fn anthropic_sse_leading_byte_order_mark_is_skipped() {
    let body = format!("\u{feff}{}", full_stream("\r\n"));
    assert_eq!(meter::<AnthropicSseMeter>(&body), Ok(full_stream_metered()));
}

#[test]
fn anthropic_sse_garbage_is_an_error_never_a_panic() {
    let (result, best) = run::<AnthropicSseMeter>(b"data: \xff\xfe\n\nHTTP/1.1 502\r\n\r\n");
    assert!(matches!(result, Err(MeterError::Syntax { .. })));
    assert!(best.partial);
    assert_eq!(
        best.usage,
        Usage {
            output_tokens: 0,
            ..Usage::default()
        }
    );
}

#[test]
fn output_estimate_rounds_text_and_thinking_up_separately_and_never_goes_below_reported() {
    let seen = |text_bytes, thinking_bytes, thinking_seen| ContentSeen {
        text_bytes,
        thinking_bytes,
        thinking_seen,
    };
    assert_eq!(estimate_output(1, 0, &seen(0, 0, false)), (1, 0));
    assert_eq!(estimate_output(1, 0, &seen(5, 5, true)), (4, 2));
    assert_eq!(estimate_output(100, 0, &seen(5, 5, true)), (100, 2));
    assert_eq!(estimate_output(1, 0, &seen(8, 0, true)), (2, 0));
    assert_eq!(estimate_output(0, 3, &seen(4, 0, false)), (1, 1));
    assert_eq!(
        estimate_output(0, 0, &seen(u64::MAX, u64::MAX, true)),
        (1 << 63, 1 << 62)
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible

const OPENAI_JSON: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your usage: {\"usage\": {\"prompt_tokens\": 1}}", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {
    "prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 10, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

#[test]
fn openai_json_maps_prompt_minus_cached_to_input_and_reasoning_to_thinking() {
    assert_eq!(
        meter::<OpenAiJsonMeter>(OPENAI_JSON),
        Ok(Metered {
            usage: Usage {
                input_tokens: 93,
                cache_read_tokens: 1024,
                output_tokens: 46,
                thinking_tokens: 10,
                service_tier: Some("default".to_owned()),
                ..Usage::default()
            },
            model: Some("gpt-4o-2024-08-06".to_owned()),
            message_id: Some("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".to_owned()),
            partial: false,
            output_estimated: false,
        })
    );
}

#[test]
fn openai_json_more_cached_than_prompt_tokens_is_a_bad_count_never_negative() {
    let body = r#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":11}}}"#;
    let (result, best) = run::<OpenAiJsonMeter>(body.as_bytes());
    assert_eq!(
        result,
        Err(bad_count(
            "usage.prompt_tokens_details.cached_tokens",
            "greater than prompt_tokens, which includes it"
        ))
    );
    assert_eq!((best.usage.input_tokens, best.usage.cache_read_tokens), (0, 11));
    let body = r#"{"usage":{"prompt_tokens":10,"completion_tokens":1.5}}"#;
    assert_eq!(
        meter::<OpenAiJsonMeter>(body),
        Err(bad_count("usage.completion_tokens", "not an integer"))
    );
}

#[test]
fn openai_json_truncated_is_a_syntax_error_with_partial_best_effort() {
    let cut = &OPENAI_JSON[..OPENAI_JSON.find("\"service_tier\"").unwrap()];
    let (result, best) = run::<OpenAiJsonMeter>(cut.as_bytes());
    assert!(matches!(
        result,
        Err(MeterError::Syntax {
            reason: "unexpected end of input",
            ..
        })
    ));
    assert!(best.partial);
    assert_eq!(best.usage.output_tokens, 46);
}

fn openai_chunk(choices: Json, usage: Json) -> String {
    let chunk = json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices": choices, "usage": usage});
    format!("data: {chunk}\n\n")
}

fn openai_content(content: &str) -> String {
    openai_chunk(
        json!([{"index": 0, "delta": {"content": content}, "logprobs": null, "finish_reason": null}]),
        Json::Null,
    )
}

fn openai_stream(with_usage: bool, done: bool) -> String {
    let mut body = openai_chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        Json::Null,
    );
    body += &openai_chunk(
        json!([{"index": 0, "delta": {"reasoning_content": "Think: usage?"}}]),
        Json::Null,
    );
    body += &openai_content("Hello");
    body += &openai_content(" wörld, \"usage\": {\"completion_tokens\": 1}");
    body += &openai_chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        Json::Null,
    );
    if with_usage {
        body += &openai_chunk(
            json!([]),
            json!({"prompt_tokens": 90, "completion_tokens": 12, "total_tokens": 102,
                "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 4}}),
        );
    }
    if done {
        body += "data: [DONE]\n\n";
    }
    body
}

#[test]
fn openai_sse_with_include_usage_bills_the_final_usage_chunk() {
    assert_eq!(
        meter::<OpenAiSseMeter>(&openai_stream(true, true)),
        Ok(Metered {
            usage: Usage {
                input_tokens: 26,
                cache_read_tokens: 64,
                output_tokens: 12,
                thinking_tokens: 4,
                ..Usage::default()
            },
            model: Some("gpt-4o-mini".to_owned()),
            message_id: Some("chatcmpl-123".to_owned()),
            partial: false,
            output_estimated: false,
        })
    );
    let crlf = openai_stream(true, true).replace('\n', "\r\n");
    assert!(!meter::<OpenAiSseMeter>(&crlf).unwrap().partial);
}

#[test]
fn openai_sse_without_done_or_usage_is_partial_and_estimates_output_from_content() {
    let metered = meter::<OpenAiSseMeter>(&openai_stream(true, false)).unwrap();
    assert!(metered.partial && !metered.output_estimated);
    assert_eq!(metered.usage.output_tokens, 12);

    let metered = meter::<OpenAiSseMeter>(&openai_stream(false, true)).unwrap();
    let text = "Hello".len() + " wörld, \"usage\": {\"completion_tokens\": 1}".len();
    let thinking = ceil4("Think: usage?".len());
    assert!(metered.partial && metered.output_estimated);
    assert_eq!(metered.usage.output_tokens, ceil4(text) + thinking);
    assert_eq!(metered.usage.thinking_tokens, thinking);
    assert_eq!(metered.model.as_deref(), Some("gpt-4o-mini"));
}

#[test]
fn openai_sse_error_chunk_leaves_the_stream_partial() {
    let mut body = openai_content("Hi");
    body += "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
    body += "data: [DONE]\n\n";
    let metered = meter::<OpenAiSseMeter>(&body).unwrap();
    assert!(metered.partial);
}

#[test]
fn openai_sse_done_must_be_exact_and_anything_else_must_be_json() {
    let mut body = openai_stream(true, false);
    body += "data: [DONE!]\n\n";
    assert!(matches!(
        meter::<OpenAiSseMeter>(&body),
        Err(MeterError::Syntax { .. })
    ));
    // Anthropic streams have no such sentinel.
    assert!(matches!(
        meter::<AnthropicSseMeter>("data: [DONE]\n\n"),
        Err(MeterError::Syntax { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Request bodies

fn read_request(body: &str) -> (Result<metering::request::RequestFields, RequestError>, bool) {
    let mut whole = RequestMeter::new();
    whole.feed(body.as_bytes());
    let mut bytewise = RequestMeter::new();
    for b in body.as_bytes() {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(bytewise.fields(), whole.fields());
    let complete = whole.is_complete();
    let result = whole.finish();
    assert_eq!(bytewise.finish(), result);
    (result, complete)
}

#[test]
fn request_model_after_a_huge_messages_array_is_read_and_nested_model_keys_ignored() {
    let filler = "x".repeat(1024);
    let messages: Vec<Json> = (0..300)
        .map(|i| json!({"role": "user", "content": [{"type": "text", "text": filler, "model": "claude-haiku-4-5"}], "i": i}))
        .collect();
    let body = format!(
        r#"{{"messages": {}, "tools": [{{"name": "t", "input_schema": {{"model": {{"type": "string"}}, "stream": true}}}}], "max_tokens": 1024, "stream": true, "model": "claude-opus-4-1"}}"#,
        serde_json::to_string(&messages).unwrap()
    );
    let (result, complete) = read_request(&body);
    let fields = result.unwrap();
    assert!(complete);
    assert_eq!(fields.model.as_deref(), Some("claude-opus-4-1"));
    assert_eq!(fields.stream, Some(true));
    assert_eq!(fields.max_tokens, Some(1024));
    assert_eq!(fields.stream_options, None);
    assert_eq!(fields.members, 5);
    assert_eq!(fields.closing_brace, Some(body.len() as u64 - 1));
}

#[test]
fn request_reports_stream_options_and_the_closing_brace_for_injection() {
    let body = r#"{"model":"gpt-4o","stream":true,"max_completion_tokens":50,"stream_options":{"include_usage":false}}  "#;
    let fields = read_request(body).0.unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: true,
            include_usage: Some(false)
        })
    );
    assert_eq!(fields.max_completion_tokens, Some(50));
    assert_eq!(fields.closing_brace, Some(body.rfind('}').unwrap() as u64));

    let fields = read_request(r#"{"stream_options":null,"model":"m"}"#).0.unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: false,
            include_usage: None
        })
    );
    let fields = read_request(r#"{"stream_options":{"include_usage":true},"stream_options":{}}"#)
        .0
        .unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: true,
            include_usage: None
        })
    );
    let fields = read_request(" {} ").0.unwrap();
    assert_eq!(
        (fields.members, fields.closing_brace, fields.model),
        (0, Some(2), None)
    );
}

#[test]
fn request_fields_of_the_wrong_type_read_as_absent() {
    let fields = read_request(r#"{"model":"m","stream":"true","max_tokens":-1,"max_completion_tokens":1.5}"#)
        .0
        .unwrap();
    assert_eq!(
        (fields.stream, fields.max_tokens, fields.max_completion_tokens),
        (None, None, None)
    );
}

#[test]
fn request_errors_are_values_for_a_400() {
    let long_model = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    let cases: Vec<(&str, RequestError)> = vec![
        (r#"{"model": 5}"#, RequestError::ModelNotString),
        (r#"{"model": null}"#, RequestError::ModelNotString),
        (r#"{"model": ["claude-opus-4-1"]}"#, RequestError::ModelNotString),
        (&long_model, RequestError::ModelTooLong { limit: 256 }),
        (r#"["model", "claude"]"#, RequestError::NotAnObject),
        (r#""claude""#, RequestError::NotAnObject),
        (
            "",
            RequestError::Json(MeterError::Syntax {
                offset: 0,
                reason: "no JSON value",
            }),
        ),
        (
            r#"{"model": "a"} x"#,
            RequestError::Json(MeterError::Syntax {
                offset: 15,
                reason: "trailing characters after the JSON value",
            }),
        ),
        (
            r#"{"model": "a""#,
            RequestError::Json(MeterError::Syntax {
                offset: 13,
                reason: "unexpected end of input",
            }),
        ),
    ];
    for (body, error) in cases {
        let (result, complete) = read_request(body);
        assert_eq!(result, Err(error), "{body}");
        assert!(!complete);
    }
    let exact = format!(r#"{{"model":"{}"}}"#, "m".repeat(256));
    assert_eq!(read_request(&exact).0.unwrap().model.map(|m| m.len()), Some(256));
}

#[test]
fn request_meter_says_when_the_body_is_incomplete() {
    let mut meter = RequestMeter::new();
    meter.feed(br#"{"model":"claude-opus-4-1","messages":[{"#);
    assert_eq!(meter.fields().model.as_deref(), Some("claude-opus-4-1"));
    assert!(!meter.is_complete() && meter.error().is_none());
    meter.feed(b"}]}");
    assert!(meter.is_complete());
}

// ---------------------------------------------------------------------------------------------
// JSON scanner

/// Every event as a line of text, for comparing runs.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    capture_all: bool,
}

fn path_text(path: Path<'_>) -> String {
    path.frames()
        .iter()
        .map(|f| match f {
            metering::json::Frame::Object(k) => format!(".{}", k.as_str().unwrap_or("<long>")),
            metering::json::Frame::Array(i) => format!("[{i}]"),
        })
        .collect()
}

impl JsonSink for Recorder {
    fn capture_string(&mut self, _path: Path<'_>) -> bool {
        self.capture_all
    }
    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        self.events.push(format!("{} = {value:?}", path_text(path)));
    }
    fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
        self.events
            .push(format!("{} close {container:?} at {offset}", path_text(path)));
    }
}

fn scan_with(body: &[u8], limits: Limits, split: usize) -> (Vec<String>, Result<(), MeterError>) {
    let mut scanner = JsonScanner::new(limits);
    let mut sink = Recorder {
        capture_all: true,
        ..Recorder::default()
    };
    let mut result = Ok(());
    for chunk in body.chunks(split.max(1)) {
        result = result.and_then(|()| scanner.feed(chunk, &mut sink));
    }
    let result = result.and_then(|()| scanner.finish(&mut sink));
    (sink.events, result)
}

/// Scans whole and byte by byte; both must agree.
fn scan(body: &[u8]) -> (Vec<String>, Result<(), MeterError>) {
    let whole = scan_with(body, Limits::default(), body.len());
    assert_eq!(
        scan_with(body, Limits::default(), 1),
        whole,
        "byte by byte differs"
    );
    whole
}

#[test]
fn json_scanner_reports_every_value_with_its_path() {
    let body = br#" {"a": [1, -2, 3.5, 1e2, true, false, null, "s\u00e9\ud83c\udf0d\n"], "b": {"": 0}} "#;
    let at = |needle: &[u8]| body.windows(needle.len()).position(|w| w == needle).unwrap();
    let close_a = format!(".a close Array at {}", at(b"]"));
    let close_b = format!(".b close Object at {}", at(b"}}"));
    let close_root = format!(" close Object at {}", at(b"} "));
    let (events, result) = scan(body);
    assert_eq!(result, Ok(()));
    assert_eq!(
        events,
        [
            " = Object",
            ".a = Array",
            ".a[0] = Number(Integer(1))",
            ".a[1] = Number(Negative)",
            ".a[2] = Number(NotInteger)",
            ".a[3] = Number(NotInteger)",
            ".a[4] = Bool(true)",
            ".a[5] = Bool(false)",
            ".a[6] = Null",
            ".a[7] = String(Text { captured: Some(\"sé🌍\\n\"), truncated: false, len: 8 })",
            close_a.as_str(),
            ".b = Object",
            ".b. = Number(Integer(0))",
            close_b.as_str(),
            close_root.as_str(),
        ]
    );
}

#[test]
fn json_scanner_number_at_the_root_is_reported_at_finish() {
    assert_eq!(
        scan(b"18446744073709551615").0,
        [" = Number(Integer(18446744073709551615))"]
    );
    assert_eq!(scan(b"18446744073709551616").0, [" = Number(TooLarge)"]);
    assert_eq!(scan(b"0 ").0, [" = Number(Integer(0))"]);
    assert_eq!(
        scan(b"-").1,
        Err(MeterError::Syntax {
            offset: 1,
            reason: "unexpected end of input"
        })
    );
}

#[test]
fn json_scanner_rejects_invalid_strings_with_the_offset() {
    let cases: [(&[u8], u64, &str); 12] = [
        (b"\"a\x01\"", 2, "control character in string"),
        (b"\"\\x\"", 2, "invalid escape in string"),
        (b"\"\\u12G4\"", 5, "invalid hex digit in \\u escape"),
        (b"\"\\udc00\"", 6, "unpaired surrogate in \\u escape"),
        (b"\"\\ud800\"", 7, "unpaired surrogate in \\u escape"),
        (b"\"\\ud800\\u0041\"", 12, "unpaired surrogate in \\u escape"),
        (b"\"\xc0\x80\"", 1, "invalid UTF-8 in string"),
        (b"\"\xed\xa0\x80\"", 2, "invalid UTF-8 in string"),
        (b"\"\xf4\x90\x80\x80\"", 2, "invalid UTF-8 in string"),
        (b"\"\xf5\"", 1, "invalid UTF-8 in string"),
        (b"\"\xe2\x82\"", 3, "invalid UTF-8 in string"),
        (b"\"\x80\"", 1, "invalid UTF-8 in string"),
    ];
    for (body, offset, reason) in cases {
        assert_eq!(
            scan(body).1,
            Err(MeterError::Syntax { offset, reason }),
            "{body:?}"
        );
    }
    assert_eq!(scan("\"\u{7f}\u{10ffff}\u{800}\"".as_bytes()).1, Ok(()));
}

#[test]
fn json_scanner_rejects_non_rfc_8259_syntax() {
    for body in [
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "[1,]",
        "[,1]",
        "{,}",
        "[1 2]",
        "01",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "NaN",
        "Infinity",
        "'a'",
        "[}",
        "{]",
        "{\"a\":}",
        "nul",
        "truex",
        "[1]]",
        "\"a",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(scan(body.as_bytes()).1, Err(MeterError::Syntax { .. })),
            "{body:?} accepted"
        );
    }
}

#[test]
fn json_scanner_keys_longer_than_64_bytes_match_nothing() {
    let key64 = "k".repeat(64);
    let key65 = "k".repeat(65);
    let (events, _) = scan(format!(r#"{{"{key64}":1,"{key65}":2}}"#).as_bytes());
    assert_eq!(events[1], format!(".{key64} = Number(Integer(1))"));
    assert_eq!(events[2], ".<long> = Number(Integer(2))");
}

#[test]
fn json_scanner_capture_stops_at_a_character_boundary_and_still_counts_the_length() {
    let text = format!("{}é", "a".repeat(255));
    let (events, _) = scan(format!("\"{text}\"").as_bytes());
    let expected = Value::String(metering::json::Text {
        captured: Some(&text[..255]),
        truncated: true,
        len: 257,
    });
    assert_eq!(events, [format!(" = {expected:?}")]);
}

#[test]
fn json_scanner_nesting_limit_is_configurable_and_exact() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(scan_with(b"[[[]]]", limits, 1).1, Ok(()));
    assert_eq!(
        scan_with(b"[[[[]]]]", limits, 1).1,
        Err(MeterError::TooDeep { limit: 3 })
    );
    let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(scan(deep.as_bytes()).1, Ok(()));
    let deeper = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(scan(deeper.as_bytes()).1, Err(MeterError::TooDeep { limit: 64 }));
}

#[test]
fn json_scanner_reset_starts_a_new_document_and_errors_are_sticky_until_then() {
    let mut scanner = JsonScanner::default();
    let mut sink = Recorder::default();
    assert!(scanner.feed(b"{x", &mut sink).is_err());
    assert_eq!(
        scanner.feed(b"}", &mut sink),
        Err(MeterError::Syntax {
            offset: 1,
            reason: "expected a string key"
        })
    );
    scanner.reset();
    assert_eq!(scanner.feed(b"[7]", &mut sink), Ok(()));
    assert_eq!(scanner.finish(&mut sink), Ok(()));
    assert_eq!(sink.events.last().map(String::as_str), Some(" close Array at 2"));
    assert!(matches!(Value::Number(Number::Integer(7)).count(), Some(Ok(7))));
}

// ---------------------------------------------------------------------------------------------
// SSE framer

#[derive(Default)]
struct Events {
    dispatched: Vec<(Option<String>, String)>,
    data: Vec<u8>,
}

impl SseHandler for Events {
    fn data(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
    fn dispatch(&mut self, event: Option<&[u8]>) {
        let name = event.map(|e| String::from_utf8_lossy(e).into_owned());
        let data = String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned();
        self.dispatched.push((name, data));
    }
}

fn frame(chunks: &[&str]) -> (Vec<(Option<String>, String)>, StreamEnd) {
    let mut framer = SseFramer::new();
    let mut events = Events::default();
    for chunk in chunks {
        framer.feed(chunk.as_bytes(), &mut events);
    }
    (events.dispatched, framer.finish())
}

fn ev(name: Option<&str>, data: &str) -> (Option<String>, String) {
    (name.map(str::to_owned), data.to_owned())
}

#[test]
fn sse_cr_ending_one_chunk_and_lf_starting_the_next_are_one_line_ending() {
    let (events, end) = frame(&["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
    assert_eq!(events, [ev(None, "a\nb")]);
    assert_eq!(end, StreamEnd::Clean);
    // Two CRs are two line endings: the second ends the event.
    let (events, _) = frame(&["data: a\r", "\rdata: b\r\r"]);
    assert_eq!(events, [ev(None, "a"), ev(None, "b")]);
}

#[test]
fn sse_data_lines_join_with_newlines_and_strip_one_space() {
    let (events, _) = frame(&["event: e\ndata\ndata:\ndata:  two spaces\ndata:x\n\n"]);
    assert_eq!(events, [ev(Some("e"), "\n\n two spaces\nx")]);
}

#[test]
fn sse_events_without_data_are_not_dispatched_and_names_do_not_leak() {
    let (events, _) = frame(&["event: lonely\n\ndata: 1\n\nevent: named\nevent:\ndata: 2\n\n"]);
    assert_eq!(events, [ev(None, "1"), ev(None, "2")]);
}

#[test]
fn sse_over_long_lines_other_than_data_are_skipped() {
    let long = "x".repeat(10_000);
    let body = format!(": {long}\nevent: {long}\n{long}: v\ndata{long}: w\ndata: {long}\n\n");
    let (events, end) = frame(&[&body]);
    assert_eq!(events, [ev(None, &long)]);
    assert_eq!(end, StreamEnd::Clean);
}

#[test]
fn sse_stream_ending_inside_an_event_says_so() {
    assert_eq!(
        frame(&["data: 1\n\ndata: 2\n"]),
        (vec![ev(None, "1")], StreamEnd::MidEvent)
    );
    assert_eq!(frame(&["data: 1\n\ndata: 2"]).1, StreamEnd::MidEvent);
    assert_eq!(frame(&["data: 1\n\n: comment"]).1, StreamEnd::MidEvent);
    assert_eq!(frame(&["data: 1\r\n\r\n"]).1, StreamEnd::Clean);
    assert_eq!(frame(&[""]).1, StreamEnd::Clean);
}

#[test]
fn sse_byte_order_mark_is_skipped_only_at_the_start() {
    assert_eq!(frame(&["\u{feff}", "data: 1\n\n"]).0, [ev(None, "1")]);
    assert_eq!(frame(&["\u{feff}data: \u{feff}1\n\n"]).0, [ev(None, "\u{feff}1")]);
    // A lookalike start is a field name, not a BOM.
    assert_eq!(frame(&["\u{fefe}data: 1\n\n"]).0, []);
}

// ---------------------------------------------------------------------------------------------
// Memory bounds as documented in the modules

#[test]
fn parser_state_sizes_stay_within_the_documented_bounds() {
    use std::mem::size_of;
    assert!(size_of::<metering::json::Frame>() <= 72);
    assert!(size_of::<JsonScanner>() <= 168);
    assert!(size_of::<AnthropicSseMeter>() <= 1536);
    assert!(size_of::<AnthropicJsonMeter>() <= 1024);
    assert!(size_of::<OpenAiSseMeter>() <= 1024);
    assert!(size_of::<OpenAiJsonMeter>() <= 1024);
    assert!(size_of::<RequestMeter>() <= 512);
}
