//! The incremental parsers against realistic bodies: Anthropic Messages JSON and SSE, OpenAI chat
//! completions JSON and SSE, request bodies, and the JSON scanner and SSE framer under them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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

#[path = "parsers/anthropic_json.rs"]
mod anthropic_json;
#[path = "parsers/anthropic_sse.rs"]
mod anthropic_sse;
#[path = "parsers/json_scanner.rs"]
mod json_scanner;
#[path = "parsers/openai.rs"]
mod openai;
#[path = "parsers/request.rs"]
mod request;
#[path = "parsers/sse_framer.rs"]
mod sse_framer;

// ---------------------------------------------------------------------------------------------
// Memory bounds as documented in the modules

#[test]
fn parser_state_sizes_stay_within_the_documented_bounds() {
    use std::mem::size_of;
    assert!(size_of::<metering::json::Frame>() <= 72);
    assert!(size_of::<JsonScanner>() <= 168);
    assert!(size_of::<AnthropicSseMeter>() <= 1792);
    assert!(size_of::<AnthropicJsonMeter>() <= 1024);
    assert!(size_of::<OpenAiSseMeter>() <= 1024);
    assert!(size_of::<OpenAiJsonMeter>() <= 1024);
    assert!(size_of::<RequestMeter>() <= 576);
}
