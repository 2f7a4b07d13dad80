//! The OpenAI-compatible chat completions route: JSON, or chunks ending with a usage chunk when
//! the request asks for `stream_options.include_usage`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::script::{estimate_input, requested_model, Script};
use super::stream::sse_response;

fn final_usage(script: &Script, request: &Value, text: &str) -> Value {
    script.usage.clone().unwrap_or_else(|| {
        let prompt = estimate_input(request);
        let completion = (text.len() as u64).div_ceil(4).max(1);
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
               "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}})
    })
}

pub fn chat_completions(script: &Script, request: &Value) -> Response {
    let model = script.model.clone().unwrap_or_else(|| requested_model(request));
    let text = script.text().repeat(script.deltas());
    let usage = final_usage(script, request, &text);
    let id = "chatcmpl-fake0001";
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": 1_764_000_000u64, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage
        }))
        .into_response();
    }
    let nl = script.line_ending();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_764_000_000u64, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![format!(
        "data: {}{nl}{nl}",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    )];
    for _ in 0..script.deltas() {
        events.push(format!(
            "data: {}{nl}{nl}",
            chunk(json!({"content": script.text()}), Value::Null)
        ));
    }
    events.push(format!("data: {}{nl}{nl}", chunk(json!({}), json!("stop"))));
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    if include_usage && script.omit_final_usage != Some(true) {
        let last = json!({"id": id, "object": "chat.completion.chunk", "created": 1_764_000_000u64,
                          "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {last}{nl}{nl}"));
    }
    if script.omit_stop != Some(true) {
        events.push(format!("data: [DONE]{nl}{nl}"));
    }
    sse_response(script, events)
}
