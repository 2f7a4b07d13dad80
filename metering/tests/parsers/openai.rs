//! OpenAI-compatible chat completions, JSON and SSE.

use super::*;

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
