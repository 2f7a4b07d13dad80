//! The two shapes every response meter has, written once: [`JsonMeter`] streams a JSON body into
//! a [`Body`], [`SseMeter`] frames an SSE stream and applies each event's JSON to a [`Stream`]. The
//! API's own meters are these with the API's body or stream
//! ([`AnthropicJsonMeter`](crate::anthropic::AnthropicJsonMeter),
//! [`AnthropicSseMeter`](crate::anthropic::AnthropicSseMeter),
//! [`OpenAiJsonMeter`](crate::openai::OpenAiJsonMeter),
//! [`OpenAiSseMeter`](crate::openai::OpenAiSseMeter)).
//!
//! `feed` never fails: the first error is kept and answered by `finish`. `best_effort` gives what
//! was metered so far, marked partial, for callers that must bill even then (a cut body, a caller
//! gone, an invalid count).

use crate::json::{JsonScanner, JsonSink, Limits};
use crate::sse::{EventMeter, JsonEvents, SseFramer, StreamEnd};
use crate::usage::{MeterError, Metered};

/// What a JSON body says, collected while it is scanned.
pub trait Body: JsonSink + Default {
    /// The usage so far; `complete` when the body was one whole JSON document. The error is the
    /// first reason it cannot be billed as it stands (a bad count).
    fn metered(&self, complete: bool) -> (Metered, Option<MeterError>);
}

/// What a stream's events say, applied event by event.
pub trait Stream: EventMeter + Default {
    /// The usage so far, the stream having ended as `end`.
    fn metered(&self, end: StreamEnd) -> (Metered, Option<MeterError>);
}

/// The end of metering: the first error, else the metered usage once it passes validation.
fn conclude(metered: Metered, error: Option<MeterError>) -> Result<Metered, MeterError> {
    match error {
        Some(e) => Err(e),
        None => metered.usage.validate().map(|()| metered),
    }
}

/// What `best_effort` answers: marked partial, and consistent even when the counts were not
/// (thinking never above the output that includes it).
fn best_effort(mut metered: Metered) -> Metered {
    metered.partial = true;
    metered.usage.thinking_tokens = metered.usage.thinking_tokens.min(metered.usage.output_tokens);
    metered
}

/// Meters a JSON response body: `finish` answers an error for a body that is not one complete
/// JSON document (a cut body included), so that nobody bills a truncated body as complete by
/// accident; `best_effort` still gives what the part received reported.
pub struct JsonMeter<B: Body> {
    scanner: JsonScanner,
    body: B,
    error: Option<MeterError>,
}

impl<B: Body> Default for JsonMeter<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Body> JsonMeter<B> {
    pub fn new() -> Self {
        JsonMeter {
            scanner: JsonScanner::new(Limits::default()),
            body: B::default(),
            error: None,
        }
    }

    /// Meters the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.scanner.feed(chunk, &mut self.body) {
                self.error = Some(e);
            }
        }
    }

    /// The body ended: its usage, or why it cannot be billed as it stands.
    pub fn finish(mut self) -> Result<Metered, MeterError> {
        if self.error.is_none() {
            self.error = self.scanner.finish(&mut self.body).err();
        }
        let (metered, error) = self.body.metered(self.scanner.is_done());
        conclude(metered, self.error.or(error))
    }

    /// What was metered so far, marked partial.
    pub fn best_effort(&self) -> Metered {
        best_effort(self.body.metered(false).0)
    }
}

/// Meters an SSE response whose events carry one JSON document each.
pub struct SseMeter<S: Stream> {
    framer: SseFramer,
    events: JsonEvents<S>,
}

impl<S: Stream> Default for SseMeter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Stream> SseMeter<S> {
    pub fn new() -> Self {
        SseMeter {
            framer: SseFramer::new(),
            events: JsonEvents::new(S::default()),
        }
    }

    /// Meters the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.events);
    }

    /// The stream ended: its usage, or the first reason it cannot be billed as it stands.
    pub fn finish(self) -> Result<Metered, MeterError> {
        let (metered, error) = self.outcome();
        conclude(metered, error)
    }

    /// What was metered so far, marked partial.
    pub fn best_effort(&self) -> Metered {
        best_effort(self.outcome().0)
    }

    fn outcome(&self) -> (Metered, Option<MeterError>) {
        let end = self.framer.finish();
        let (state, event_error) = self.events.settled(end);
        let (metered, usage_error) = state.metered(end);
        (metered, event_error.or(usage_error))
    }
}
