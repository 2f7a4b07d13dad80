//! SSE streams whose events carry one JSON document each (Anthropic, OpenAI): every event's data
//! is streamed into a JSON scanner, and a meter applies the event once it is dispatched whole.

use super::{SseHandler, StreamEnd};
use crate::json::{JsonScanner, JsonSink, Limits};
use crate::usage::MeterError;

/// What a streaming meter does with complete events.
pub trait EventMeter: Clone {
    /// What one event's JSON says, collected while it is scanned.
    type Event: JsonSink + Default + Clone;

    /// Data that is exactly this text, not JSON, marks the end of the stream (OpenAI's `[DONE]`).
    const SENTINEL: Option<&'static [u8]> = None;

    /// A dispatched event whose data was one valid JSON document.
    fn apply(&mut self, event: &Self::Event);

    /// A dispatched event whose data was the sentinel.
    fn sentinel(&mut self) {}
}

/// An [`SseHandler`] that scans each event's data as JSON and hands complete events to `M`.
///
/// An event whose data is not valid JSON is skipped and its error kept (the first one only); the
/// events after it are still applied, since each stands alone and later ones carry the usage.
/// A syntax error's offset counts from the start of that event's data.
pub struct JsonEvents<M: EventMeter> {
    meter: M,
    scanner: JsonScanner,
    event: M::Event,
    /// How much of the current event's data matched the sentinel; `None` once it differs.
    sentinel_matched: Option<usize>,
    error: Option<MeterError>,
}

impl<M: EventMeter> JsonEvents<M> {
    pub fn new(meter: M) -> Self {
        JsonEvents {
            meter,
            scanner: JsonScanner::new(Limits::default()),
            event: M::Event::default(),
            sentinel_matched: M::SENTINEL.map(|_| 0),
            error: None,
        }
    }

    /// The meter and first error as they stand if the stream ends here. An event cut only before
    /// its blank line, whose JSON is complete, is applied: the upstream did send what it says
    /// (a browser would drop it, but billing must not).
    pub fn settled(&self, end: StreamEnd) -> (M, Option<MeterError>) {
        let mut meter = self.meter.clone();
        let mut error = self.error.clone();
        if end == StreamEnd::MidEvent {
            if self.is_sentinel() {
                meter.sentinel();
            } else if self.scanner.is_done() {
                meter.apply(&self.event);
            } else if let Some(e) = self.scanner.error() {
                error.get_or_insert_with(|| e.clone());
            }
        }
        (meter, error)
    }

    fn is_sentinel(&self) -> bool {
        matches!((M::SENTINEL, self.sentinel_matched), (Some(s), Some(n)) if n == s.len())
    }

    fn next_event(&mut self) {
        self.scanner.reset();
        self.event = M::Event::default();
        self.sentinel_matched = M::SENTINEL.map(|_| 0);
    }
}

impl<M: EventMeter> SseHandler for JsonEvents<M> {
    fn data(&mut self, bytes: &[u8]) {
        if let (Some(sentinel), Some(matched)) = (M::SENTINEL, self.sentinel_matched) {
            let end = matched.saturating_add(bytes.len());
            self.sentinel_matched = (sentinel.get(matched..end) == Some(bytes)).then_some(end);
        }
        // A scanner error is kept by the scanner and read at dispatch.
        let _ = self.scanner.feed(bytes, &mut self.event);
    }

    fn dispatch(&mut self, _event: Option<&[u8]>) {
        if self.is_sentinel() {
            self.meter.sentinel();
        } else {
            match self.scanner.finish(&mut self.event) {
                Ok(()) => self.meter.apply(&self.event),
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        self.next_event();
    }
}
