//! Writing an SSE body the way a test asks: paced, in odd-sized pieces, or cut midway.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::script::Script;

pub fn sse_event(name: &str, data: &Value, nl: &str) -> String {
    format!("event: {name}{nl}data: {data}{nl}{nl}")
}

/// Streams `events` with the script's pacing, chunking and cut.
pub fn sse_response(script: &Script, events: Vec<String>) -> Response {
    let delay = Duration::from_millis(script.delay_ms.unwrap_or(0));
    let chunk = script.chunk_bytes.unwrap_or(usize::MAX).max(1);
    let cut = script.cut_after_events;
    let stream = async_stream(events, delay, chunk, cut);
    (
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("request-id", "req_fake_0002"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A JSON answer, written whole; or, when the script sets `chunk_bytes` or `delay_ms`, in pieces of
/// `chunk_bytes` with `delay_ms` between them (so that a caller can cut it before its `usage`).
pub fn json_response(script: &Script, body: &Value, request_id: &'static str) -> Response {
    let text = body.to_string();
    let headers = [("content-type", "application/json"), ("request-id", request_id)];
    if script.chunk_bytes.is_none() && script.delay_ms.is_none() {
        return (headers, text).into_response();
    }
    let delay = Duration::from_millis(script.delay_ms.unwrap_or(0));
    let chunk = script.chunk_bytes.unwrap_or(usize::MAX).max(1);
    // Pieces end on character boundaries, so each is a String as `async_stream` wants.
    let mut pieces = vec![String::new()];
    for c in text.chars() {
        if pieces
            .last()
            .is_some_and(|p| p.len() + c.len_utf8() > chunk && !p.is_empty())
        {
            pieces.push(String::new());
        }
        if let Some(p) = pieces.last_mut() {
            p.push(c);
        }
    }
    (
        headers,
        Body::from_stream(async_stream(pieces, delay, usize::MAX, None)),
    )
        .into_response()
}

fn async_stream(
    events: Vec<String>,
    delay: Duration,
    chunk: usize,
    cut: Option<usize>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if cut == Some(i) {
                // Let the events before the cut reach the socket first: the abort discards
                // whatever the server has not written yet.
                tokio::time::sleep(delay.max(Duration::from_millis(50))).await;
                // An error item makes the server abort the response: the connection is cut.
                let _ = tx.send(Err(std::io::Error::other("scripted cut"))).await;
                return;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            for piece in event.as_bytes().chunks(chunk) {
                if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                    return; // the client went away
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
