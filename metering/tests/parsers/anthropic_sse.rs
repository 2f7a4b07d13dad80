//! Anthropic Messages streams.

use super::*;

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
            ..Usage::default()
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
