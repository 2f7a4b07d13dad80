//! fake-anthropic: an emulator of the Anthropic Messages API (JSON and SSE) and of the
//! OpenAI-compatible chat completions route, scriptable per request so tests can make it answer
//! with exact usage, slow or chunked streams, cuts, error statuses, error events and garbage.
//!
//! A request is scripted by the header `x-fake-script` (JSON, see [`Script`]) or, for clients that
//! cannot set headers, by a first user message whose text starts with `FAKE:` followed by the JSON.
//! Without a script it answers like a small model: usage derived from the request size.
//! Every request it receives is recorded (method, path, headers, body length) and can be read at
//! `GET /__fake/requests` and cleared with `DELETE /__fake/requests`: tests check what reached the
//! upstream.

mod anthropic;
mod openai;
mod script;
mod stream;

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

pub use script::Script;

/// One request as the upstream saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The first 64 KiB of the body.
    pub body: String,
}

#[derive(Clone, Default)]
struct Fake {
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

/// Serves the fake on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new()
        .route("/__fake/requests", get(list_recorded).delete(clear_recorded))
        .fallback(any(dispatch))
        // The real upstream takes request bodies up to 32 MB.
        .layer(DefaultBodyLimit::max(40 * 1024 * 1024))
        .with_state(Fake::default());
    axum::serve(listener, app).await
}

async fn list_recorded(State(fake): State<Fake>) -> Json<Vec<Recorded>> {
    Json(fake.recorded.lock().map(|r| r.clone()).unwrap_or_default())
}

async fn clear_recorded(State(fake): State<Fake>) -> StatusCode {
    if let Ok(mut r) = fake.recorded.lock() {
        r.clear();
    }
    StatusCode::NO_CONTENT
}

async fn dispatch(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let record = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        body: String::from_utf8_lossy(body.get(..body.len().min(64 * 1024)).unwrap_or_default()).into_owned(),
    };
    if let Ok(mut r) = fake.recorded.lock() {
        r.push(record);
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let script = match Script::from_request(&headers, &request) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", &e),
    };
    if let Some(ms) = script.answer_after_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(status) = script.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "api_error", "scripted upstream error");
    }
    let raw = match (&script.raw_body, &script.raw_body_hex) {
        (Some(text), _) => Some(text.clone().into_bytes()),
        (None, Some(hex)) => match script::decode_hex(hex) {
            Some(bytes) => Some(bytes),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "raw_body_hex is not hex",
                )
            }
        },
        (None, None) => None,
    };
    if let Some(raw) = raw {
        let content_type = script
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".into());
        return ([("content-type", content_type)], Body::from(raw)).into_response();
    }
    match (method, uri.path()) {
        (Method::POST, "/v1/messages") => anthropic::messages(&script, &request),
        (Method::POST, "/v1/messages/count_tokens") => {
            Json(serde_json::json!({"input_tokens": script::estimate_input(&request)})).into_response()
        }
        (Method::GET, "/v1/models") => Json(serde_json::json!({
            "data": [{"type": "model", "id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5",
                      "created_at": "2025-09-29T00:00:00Z"}],
            "has_more": false, "first_id": "claude-sonnet-4-5-20250929", "last_id": "claude-sonnet-4-5-20250929"
        }))
        .into_response(),
        (Method::POST, "/v1/chat/completions") => openai::chat_completions(&script, &request),
        _ => error(StatusCode::NOT_FOUND, "not_found_error", "the fake upstream has no such route"),
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, [("request-id", "req_fake_error")], Json(body)).into_response()
}
