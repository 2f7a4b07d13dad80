//! How a test tells the fake upstream what to answer.

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

/// A scripted answer. Every field is optional; absent fields take the unscripted behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The final `usage` object to report, verbatim (Anthropic or OpenAI shape, as the route needs).
    pub usage: Option<Value>,
    /// Usage reported in `message_start` (streams); defaults to `usage` with `output_tokens: 1`,
    /// as the Anthropic API does.
    pub start_usage: Option<Value>,
    /// The model the response names (default: the requested one).
    pub model: Option<String>,
    /// Answer with this status and an Anthropic error body instead.
    pub status: Option<u16>,
    /// Answer 200 with exactly this body (garbage, hostile JSON...).
    pub raw_body: Option<String>,
    /// Answer 200 with exactly these bytes, given in hex (bodies that are not UTF-8).
    pub raw_body_hex: Option<String>,
    /// Content type for `raw_body` and `raw_body_hex`.
    pub content_type: Option<String>,
    /// Number of text deltas in a stream (default 3).
    pub deltas: Option<usize>,
    /// Text of each delta (default "hello ").
    pub text: Option<String>,
    /// Thinking deltas sent before the text (streams).
    pub thinking_deltas: Option<usize>,
    /// Milliseconds between stream events (between the `chunk_bytes` pieces of an Anthropic JSON
    /// answer).
    pub delay_ms: Option<u64>,
    /// Write the stream in pieces of this many bytes (to split events, lines and characters); an
    /// Anthropic JSON answer too, when set.
    pub chunk_bytes: Option<usize>,
    /// Drop the connection after this many events (a cut stream).
    pub cut_after_events: Option<usize>,
    /// Send an `error` event after this many events and end the stream.
    pub error_event_after: Option<usize>,
    /// Leave the usage out of `message_delta` (or the final OpenAI chunk).
    pub omit_final_usage: Option<bool>,
    /// Leave out `message_stop` (or `[DONE]`).
    pub omit_stop: Option<bool>,
    /// Line ending for SSE: "lf" (default), "crlf" or "cr".
    pub line_ending: Option<String>,
    /// Delay before answering at all (milliseconds).
    pub answer_after_ms: Option<u64>,
}

impl Script {
    /// The script from the `x-fake-script` header, else from a first user message `FAKE:{...}`.
    pub fn from_request(headers: &HeaderMap, request: &Value) -> Result<Script, String> {
        if let Some(h) = headers.get("x-fake-script") {
            let text = h.to_str().map_err(|_| "x-fake-script is not text".to_owned())?;
            return serde_json::from_str(text).map_err(|e| format!("x-fake-script: {e}"));
        }
        match first_user_text(request).and_then(|t| t.strip_prefix("FAKE:")) {
            Some(json) => serde_json::from_str(json).map_err(|e| format!("FAKE: script: {e}")),
            None => Ok(Script::default()),
        }
    }

    pub fn line_ending(&self) -> &'static str {
        match self.line_ending.as_deref() {
            Some("crlf") => "\r\n",
            Some("cr") => "\r",
            _ => "\n",
        }
    }

    pub fn deltas(&self) -> usize {
        self.deltas.unwrap_or(3)
    }

    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("hello ")
    }
}

/// Bytes from hex digits (pairs); None when `hex` is not that.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

fn first_user_text(request: &Value) -> Option<&str> {
    let first = request.get("messages")?.as_array()?.first()?;
    match first.get("content")? {
        Value::String(s) => Some(s),
        Value::Array(blocks) => blocks.first()?.get("text")?.as_str(),
        _ => None,
    }
}

/// Input tokens an unscripted request reports: about four bytes of message text a token.
pub fn estimate_input(request: &Value) -> u64 {
    let len = request.get("messages").map_or(0, |m| m.to_string().len());
    (len as u64).div_ceil(4).max(1)
}

/// The requested model, or a default.
pub fn requested_model(request: &Value) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-sonnet-4-5-20250929")
        .to_owned()
}
