//! The Messages API: a JSON message, or the SSE event sequence the real API sends.

use axum::response::Response;
use serde_json::{json, Value};

use super::script::{estimate_input, requested_model, Script};
use super::stream::{json_response, sse_event, sse_response};

/// The final usage of the answer: scripted, or derived from the request and the text length,
/// reporting the speed and inference geo it ran at as the December 2026 API does (the request's,
/// else `standard` and `global`).
fn final_usage(script: &Script, request: &Value, output_text: &str) -> Value {
    script.usage.clone().unwrap_or_else(|| {
        let asked = |field: &str, default: &str| {
            request
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        json!({
            "input_tokens": estimate_input(request),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": (output_text.len() as u64).div_ceil(4).max(1),
            "service_tier": "standard",
            "speed": asked("speed", "standard"),
            "inference_geo": asked("inference_geo", "global")
        })
    })
}

/// What `message_delta` leaves out of the final usage: the December 2026 API reports the tier,
/// speed, inference geo and TTL split in `message_start` only; the delta has cumulative counts
/// (and `iterations`).
const START_ONLY: [&str; 4] = ["service_tier", "speed", "inference_geo", "cache_creation"];

pub fn messages(script: &Script, request: &Value) -> Response {
    let model = script.model.clone().unwrap_or_else(|| requested_model(request));
    let text: String = script.text().repeat(script.deltas());
    let usage = final_usage(script, request, &text);
    let id = format!("msg_fake_{:016x}", fastrand_id());
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(script, &id, &model, usage);
    }
    let body = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": usage
    });
    json_response(script, &body, "req_fake_0001")
}

fn stream(script: &Script, id: &str, model: &str, usage: Value) -> Response {
    let nl = script.line_ending();
    let start_usage = script.start_usage.clone().unwrap_or_else(|| {
        let mut u = usage.clone();
        if let Some(o) = u.as_object_mut() {
            o.insert("output_tokens".into(), json!(1));
            o.remove("iterations");
        }
        u
    });
    let mut events = vec![sse_event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        nl,
    )];
    let mut index = 0;
    if let Some(n) = script.thinking_deltas.filter(|n| *n > 0) {
        events.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            nl,
        ));
        for _ in 0..n {
            events.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "thinking_delta", "thinking": "let me think "}}),
                nl,
            ));
        }
        events.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
            nl,
        ));
        index += 1;
    }
    events.push(sse_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        nl,
    ));
    events.push(format!("event: ping{nl}data: {{\"type\": \"ping\"}}{nl}{nl}"));
    let piece = script.text();
    for _ in 0..script.deltas() {
        events.push(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": piece}}),
            nl,
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
        nl,
    ));
    let mut delta = json!({"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": null}});
    if script.omit_final_usage != Some(true) {
        let mut final_usage = usage;
        // The real API's message_delta usage carries output and, when present, the input side
        // too; what message_start alone reports is left out.
        if let Some(o) = final_usage.as_object_mut() {
            for field in START_ONLY {
                o.remove(field);
            }
        }
        delta["usage"] = final_usage;
    }
    events.push(sse_event("message_delta", &delta, nl));
    if script.omit_stop != Some(true) {
        events.push(sse_event("message_stop", &json!({"type": "message_stop"}), nl));
    }
    if let Some(after) = script.error_event_after {
        events.truncate(after);
        events.push(sse_event(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            nl,
        ));
    }
    sse_response(script, events)
}

/// A cheap unique-enough id for message ids (not security relevant).
fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}
