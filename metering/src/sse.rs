//! An incremental Server-Sent-Events framer (WHATWG HTML, "event stream interpretation").
//!
//! Lines end in LF, CRLF or CR; a CR ending one chunk and an LF starting the next are one line
//! ending. A leading UTF-8 byte order mark is skipped. `data:` values are streamed to the
//! [`SseHandler`] as they arrive (the lines of one event joined by `\n`), never buffered, so a
//! JSON scanner can consume an event of any size; a blank line dispatches the event. `event:`
//! names the event; comments (`:` lines), `id:`, `retry:` and unknown fields are ignored, and
//! one space after the colon is stripped.
//!
//! Lines other than `data:` lines are kept only up to [`MAX_LINE_BYTES`]: a longer field name
//! makes the line an unknown field, and a longer `event:` value is dropped as if the line were
//! absent. Skipping rather than failing keeps a stream with long comments (keep-alive padding)
//! meterable; nothing billed depends on an event name, the meters read the JSON `type`.
//!
//! [`JsonEvents`] connects the framer to a [`JsonScanner`](crate::json::JsonScanner) per event
//! for the meters of JSON-carrying streams.
//!
//! Memory bound of the framer: two buffers of [`MAX_LINE_BYTES`] (field name, event name), 256
//! bytes, plus a few bytes of state.

mod json_events;

pub use json_events::{EventMeter, JsonEvents};

/// The longest field name or `event:` value kept.
pub const MAX_LINE_BYTES: usize = 128;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Receives the framer's events.
pub trait SseHandler {
    /// Bytes of the current event's data (with `\n` between its data lines), in order.
    fn data(&mut self, bytes: &[u8]);

    /// A blank line ended an event that had at least one data line. `event` is the value of its
    /// `event:` field, `None` when absent, empty or longer than [`MAX_LINE_BYTES`].
    fn dispatch(&mut self, event: Option<&[u8]>);
}

/// Where the framer is in the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the beginning of a line.
    Start,
    /// Reading a field name into `name`.
    Name,
    /// Skipping to the end of the line (comment, unknown field, over-long name).
    Skip,
    /// Right after `data:`: a single space is stripped.
    DataStart,
    /// Streaming a data value.
    Data,
    /// Right after `event:`.
    EventStart,
    /// Reading an event name into `event`.
    Event,
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// At an event boundary.
    Clean,
    /// Inside an event: data or a line was pending and is discarded (WHATWG: an incomplete event
    /// at the end of the stream is not dispatched).
    MidEvent,
}

/// The framer. See the module documentation.
#[derive(Debug)]
pub struct SseFramer {
    line: Line,
    name: Vec<u8>,
    event: Vec<u8>,
    /// Whether `event` holds a complete, kept event name.
    event_set: bool,
    /// Data lines in the current event (0: nothing to dispatch).
    data_lines: u64,
    /// The previous byte was a CR: an LF now belongs to the same line ending.
    after_cr: bool,
    /// How many bytes of a leading BOM were matched; `None` once past the stream start.
    bom: Option<usize>,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer::new()
    }
}

impl SseFramer {
    pub fn new() -> Self {
        SseFramer {
            line: Line::Start,
            name: Vec::with_capacity(MAX_LINE_BYTES),
            event: Vec::with_capacity(MAX_LINE_BYTES),
            event_set: false,
            data_lines: 0,
            after_cr: false,
            bom: Some(0),
        }
    }

    /// Frames the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8], handler: &mut impl SseHandler) {
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if let Some(matched) = self.bom {
                if BOM.get(matched) == Some(&b) {
                    self.bom = if matched + 1 == BOM.len() {
                        None
                    } else {
                        Some(matched + 1)
                    };
                    rest = tail;
                    continue;
                }
                // Not a BOM after all: the bytes matched so far are ordinary line bytes.
                self.bom = None;
                for &held in BOM.get(..matched).unwrap_or_default() {
                    self.line_byte(held, handler);
                }
            }
            let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => self.end_line(handler),
                _ if matches!(self.line, Line::DataStart | Line::Data) => {
                    let value = if self.line == Line::DataStart && b == b' ' {
                        tail
                    } else {
                        rest
                    };
                    self.line = Line::Data;
                    let end = value
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(value.len());
                    let (run, after) = value.split_at_checked(end).unwrap_or((value, &[]));
                    if !run.is_empty() {
                        handler.data(run);
                    }
                    rest = after;
                    continue;
                }
                _ => self.line_byte(b, handler),
            }
            rest = tail;
        }
    }

    /// Whether the stream, ending here, stopped inside an event.
    pub fn finish(&self) -> StreamEnd {
        let mid_event = self.line != Line::Start || self.data_lines > 0 || self.event_set;
        // A stream of nothing but part of a BOM also ends inside a line.
        let partial_bom = matches!(self.bom, Some(n) if n > 0);
        if mid_event || partial_bom {
            StreamEnd::MidEvent
        } else {
            StreamEnd::Clean
        }
    }

    fn line_byte(&mut self, b: u8, handler: &mut impl SseHandler) {
        match self.line {
            Line::Start if b == b':' => self.line = Line::Skip,
            Line::Start => {
                self.name.clear();
                self.name.push(b);
                self.line = Line::Name;
            }
            Line::Name if b == b':' => self.field_value_starts(handler),
            Line::Name if self.name.len() < MAX_LINE_BYTES => self.name.push(b),
            Line::Name => self.line = Line::Skip,
            Line::EventStart if b == b' ' => self.line = Line::Event,
            Line::EventStart | Line::Event => {
                self.line = Line::Event;
                if self.event.len() < MAX_LINE_BYTES {
                    self.event.push(b);
                } else {
                    self.line = Line::Skip;
                }
            }
            // Data bytes are streamed by `feed`; a skipped line ignores its bytes.
            Line::Skip | Line::DataStart | Line::Data => {}
        }
    }

    /// The colon after a field name.
    fn field_value_starts(&mut self, handler: &mut impl SseHandler) {
        self.line = match self.name.as_slice() {
            b"data" => {
                self.data_line_starts(handler);
                Line::DataStart
            }
            b"event" => {
                self.event.clear();
                self.event_set = false;
                Line::EventStart
            }
            _ => Line::Skip,
        };
    }

    fn data_line_starts(&mut self, handler: &mut impl SseHandler) {
        // The lines of one event are joined by "\n", which the handler must see between them.
        if self.data_lines > 0 {
            handler.data(b"\n");
        }
        self.data_lines = self.data_lines.saturating_add(1);
    }

    fn end_line(&mut self, handler: &mut impl SseHandler) {
        match self.line {
            Line::Start => self.dispatch(handler),
            // A line without a colon is a field with an empty value.
            Line::Name => match self.name.as_slice() {
                b"data" => self.data_line_starts(handler),
                b"event" => {
                    self.event.clear();
                    self.event_set = false;
                }
                _ => {}
            },
            Line::EventStart | Line::Event => self.event_set = !self.event.is_empty(),
            Line::Skip | Line::DataStart | Line::Data => {}
        }
        self.line = Line::Start;
    }

    fn dispatch(&mut self, handler: &mut impl SseHandler) {
        if self.data_lines > 0 {
            handler.dispatch(if self.event_set { Some(&self.event) } else { None });
        }
        self.data_lines = 0;
        self.event.clear();
        self.event_set = false;
    }
}
