//! The streaming Messages meter: SSE events, each a JSON document whose `type` says what it is
//! (the `event:` line is not trusted; the data is what SDKs act on).

use super::message::{MessageFields, UsageFields};
use super::{reported, ContentSeen};
use crate::json::{JsonSink, Path, Value};
use crate::meter::{SseMeter, Stream};
use crate::sse::{EventMeter, StreamEnd};
use crate::usage::{MeterError, Metered};

/// Meters a streaming Messages response.
///
/// * `message_start` gives the initial usage, model and id;
/// * `message_delta` usage is cumulative: every field it has replaces `message_start`'s, input
///   and cache counts included;
/// * `content_block_delta` text, thinking and tool-input JSON sizes feed the output estimate;
/// * `message_stop` ends the stream; `ping` and unknown events are ignored;
/// * an `error` event leaves the stream partial.
///
/// The result is partial unless the stream had `message_start`, a `message_delta` with usage,
/// `message_stop`, no `error` event, and ended between events. When no `message_delta` reported
/// `output_tokens`, the output is estimated ([`estimate_output`]). An event whose data is not
/// valid JSON makes `finish` answer its error; the other events are still metered for
/// `best_effort`.
pub type AnthropicSseMeter = SseMeter<AnthropicStream>;

/// What the events of a Messages stream applied so far say.
#[derive(Clone, Debug, Default)]
pub struct AnthropicStream {
    /// `message_start`'s message.
    start: Option<MessageFields>,
    /// The `message_delta` usages, overlaid in order.
    deltas: UsageFields,
    delta_usage_seen: bool,
    stopped: bool,
    error_event: bool,
    content: ContentSeen,
}

/// What one event says.
#[derive(Clone, Debug, Default)]
pub struct EventFields {
    kind: Option<String>,
    message: MessageFields,
    usage: UsageFields,
    usage_present: bool,
    delta: ContentSeen,
}

const TYPE: &[&str] = &["type"];
const MESSAGE: &[&str] = &["message"];
const USAGE: &[&str] = &["usage"];
const DELTA: &[&str] = &["delta"];
const DELTA_TEXT: &[&str] = &["delta", "text"];
const DELTA_JSON: &[&str] = &["delta", "partial_json"];
const DELTA_THINKING: &[&str] = &["delta", "thinking"];

impl JsonSink for EventFields {
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        path.is(TYPE)
            || path.strip_prefix(MESSAGE).is_some_and(MessageFields::wants_text)
            || path.strip_prefix(USAGE).is_some_and(UsageFields::wants_text)
    }

    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        if path.is(TYPE) {
            self.kind = value.text().map(str::to_owned);
        } else if let Some(rel) = path.strip_prefix(MESSAGE) {
            self.message.record(rel, &value);
        } else if let Some(rel) = path.strip_prefix(USAGE) {
            if rel.depth() == 0 {
                self.usage_present = value == Value::Object;
            }
            self.usage.record(rel, &value);
        } else if path.is(DELTA) {
            self.delta = ContentSeen::default();
        } else if let Value::String(text) = value {
            if path.is(DELTA_TEXT) || path.is(DELTA_JSON) {
                self.delta.add_text(text.len);
            } else if path.is(DELTA_THINKING) {
                self.delta.add_thinking(text.len);
            }
        }
    }
}

impl EventMeter for AnthropicStream {
    type Event = EventFields;

    fn apply(&mut self, event: &EventFields) {
        match event.kind.as_deref() {
            Some("message_start") => self.start = Some(event.message.clone()),
            Some("message_delta") if event.usage_present => {
                self.delta_usage_seen = true;
                self.deltas.overlay(&event.usage);
            }
            Some("content_block_delta") => self.content.add(&event.delta),
            Some("message_stop") => self.stopped = true,
            Some("error") => self.error_event = true,
            _ => {}
        }
    }
}

impl Stream for AnthropicStream {
    fn metered(&self, end: StreamEnd) -> (Metered, Option<MeterError>) {
        let start = self.start.clone().unwrap_or_default();
        let mut fields = start.usage.clone();
        fields.overlay(&self.deltas);
        let (usage, error) = fields.resolve();
        let complete = self.start.is_some()
            && self.delta_usage_seen
            && self.stopped
            && !self.error_event
            && end == StreamEnd::Clean;
        let output = self.deltas.has_output();
        (
            reported(usage, output, &self.content, start.model, start.id, !complete),
            error,
        )
    }
}
