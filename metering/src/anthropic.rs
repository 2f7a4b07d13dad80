//! Meters for Anthropic Messages API responses: [`AnthropicJsonMeter`] for a JSON body,
//! [`AnthropicSseMeter`] for a stream.
//!
//! Both read only exact paths from the root (`usage.input_tokens`, not any `input_tokens`), so
//! tool inputs, text mentioning "usage" or nested objects with the same keys change nothing. A
//! repeated key's last value wins, and replaces everything under the earlier one. `null` is
//! absent. A count that is negative, fractional, above [`MAX_COUNT`](crate::usage::MAX_COUNT)
//! or not a number makes `finish` answer [`MeterError::BadCount`]; `best_effort` reads it as
//! absent. `cache_creation` split rules: see `message::cache_writes`.
//!
//! `feed` never fails: the first error is kept and answered by `finish`. `best_effort` gives what
//! was metered so far, marked partial, for callers that must bill even then (a cut body, a
//! caller gone, an invalid count).
//!
//! A `model`, `id`, `service_tier`, `speed` or `inference_geo` longer than 256 bytes is no real
//! one and reads as absent.
//!
//! `usage.iterations` (compaction, fallback and advisor steps) is read step by step: each step's
//! `type`, `model` and counts with their cache split, kept one by one up to
//! [`MAX_ITERATIONS`](crate::usage::MAX_ITERATIONS), then added to a kept step of the same type
//! and model; more than [`MAX_ITERATION_GROUPS`](crate::usage::MAX_ITERATION_GROUPS) distinct ones
//! make the usage invalid. In a stream, `message_delta`'s `iterations` replaces
//! `message_start`'s when present.
//!
//! Memory bound: the JSON scanner (under 5 KiB), the meter itself (about 1.75 KiB), at most
//! fifteen captured strings of 256 bytes (`model`, `id`, tier, speed, inference geo, event `type`:
//! in the event being read and in the stream so far) and the SSE framer's 256 bytes: under 11 KiB
//! per meter, whatever the body's size; plus, only for answers that list iterations, about 600
//! bytes per step kept (64 at most, in each of the stream's two usages). `finish` and
//! `best_effort` clone the stream state for a moment.

mod message;
mod stream;

pub use stream::{AnthropicSseMeter, AnthropicStream};

use crate::json::{JsonSink, Path, Value};
use crate::meter::{Body, JsonMeter};
use crate::usage::{MeterError, Metered, Usage};
use message::MessageFields;

/// How much content a response carried, for estimating output that was not reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentSeen {
    /// Decoded bytes of text and tool-input JSON.
    pub text_bytes: u64,
    /// Decoded bytes of thinking.
    pub thinking_bytes: u64,
    /// Whether any thinking content was seen (even empty).
    pub thinking_seen: bool,
}

impl ContentSeen {
    /// Text or tool-input JSON of this many decoded bytes.
    pub fn add_text(&mut self, bytes: u64) {
        self.text_bytes = self.text_bytes.saturating_add(bytes);
    }

    /// Thinking of this many decoded bytes.
    pub fn add_thinking(&mut self, bytes: u64) {
        self.thinking_bytes = self.thinking_bytes.saturating_add(bytes);
        self.thinking_seen = true;
    }

    /// Everything `other` saw.
    pub fn add(&mut self, other: &ContentSeen) {
        self.add_text(other.text_bytes);
        if other.thinking_seen {
            self.add_thinking(other.thinking_bytes);
        }
    }
}

/// Output and thinking tokens `(output, thinking)` to bill when the upstream never reported
/// its output (a stream cut after `message_start`, a body without `usage.output_tokens`).
///
/// One token per 4 bytes of content forwarded, rounded up, with text (and tool-input JSON) and
/// thinking rounded separately: about what tokenizers give for English and code, and on the
/// caller's side for short outputs. Never less than what was reported (`message_start` says 1).
/// Thinking becomes the thinking estimate when thinking content was seen, and is never more
/// than the output that includes it.
pub fn estimate_output(reported_output: u64, reported_thinking: u64, seen: &ContentSeen) -> (u64, u64) {
    let thinking_estimate = seen.thinking_bytes.div_ceil(4);
    let output = reported_output.max(seen.text_bytes.div_ceil(4).saturating_add(thinking_estimate));
    let thinking = if seen.thinking_seen {
        thinking_estimate
    } else {
        reported_thinking
    };
    (output, thinking.min(output))
}

/// Meters a non-streaming Messages response body (see [`JsonMeter`]). A complete body without
/// `usage.output_tokens` is partial, with the output estimated from its text and thinking.
pub type AnthropicJsonMeter = JsonMeter<AnthropicMessage>;

/// A Messages response body, as the meter collects it.
#[derive(Default)]
pub struct AnthropicMessage(MessageFields);

impl JsonSink for AnthropicMessage {
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        MessageFields::wants_text(path)
    }

    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        self.0.record(path, &value);
    }
}

/// What a response reported, as metered: without a reported output count, the output (and
/// thinking) estimated from the content seen ([`estimate_output`]) and marked so.
pub(crate) fn reported(
    mut usage: Usage,
    output_reported: bool,
    content: &ContentSeen,
    model: Option<String>,
    message_id: Option<String>,
    partial: bool,
) -> Metered {
    if !output_reported {
        (usage.output_tokens, usage.thinking_tokens) =
            estimate_output(usage.output_tokens, usage.thinking_tokens, content);
    }
    Metered {
        usage,
        model,
        message_id,
        partial,
        output_estimated: !output_reported,
    }
}

impl Body for AnthropicMessage {
    fn metered(&self, complete: bool) -> (Metered, Option<MeterError>) {
        let message = &self.0;
        let (usage, error) = message.usage.resolve();
        let output = message.usage.has_output();
        let (model, id) = (message.model.clone(), message.id.clone());
        (
            reported(usage, output, &message.content, model, id, !output || !complete),
            error,
        )
    }
}
