//! Anthropic Messages JSON bodies.

use super::*;

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
        ..Usage::default()
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
