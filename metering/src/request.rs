//! The request-side fields the filter needs from an Anthropic Messages or OpenAI chat request
//! body, read incrementally: `model` may come after a `messages` array of any size.
//!
//! Read from the root object only (a `model` key inside a message or tool schema is not the
//! model): `model`, `stream`, `max_tokens`, `max_completion_tokens`, and for the injection of
//! `"stream_options":{"include_usage":true}` into OpenAI streaming requests: `stream_options`
//! and its `include_usage`, the number of members of the root object and the offset of its
//! closing brace. A repeated key's last value wins, as in the upstreams' parsers.
//!
//! A `model` that is not a string (null included) or longer than [`MAX_MODEL_BYTES`], a body
//! that is not a JSON object and invalid JSON are errors: the filter answers 400 and the upstream
//! never gets such a body. `stream`, `max_tokens` and friends of the wrong type read as absent
//! (the upstream answers those with its own 400, which is not billed).
//!
//! Memory bound: the JSON scanner (under 5 KiB), the meter's fields (about 100 bytes) and the
//! model (at most 256 bytes): under 6 KiB.

use crate::json::{Container, JsonScanner, JsonSink, Limits, Path, Value};
use crate::usage::MeterError;

/// The longest model id accepted; no real one comes close.
pub const MAX_MODEL_BYTES: usize = 256;

/// Why a request body cannot be admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body: {0}")]
    Json(MeterError),
    #[error("request body is not a JSON object")]
    NotAnObject,
    #[error("request field model is not a string")]
    ModelNotString,
    #[error("request field model is longer than {limit} bytes")]
    ModelTooLong { limit: usize },
}

/// The root object's `stream_options` member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Whether it is an object (not `null` or another value).
    pub is_object: bool,
    /// Its `include_usage` member, when a boolean.
    pub include_usage: Option<bool>,
}

/// What a request body says, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFields {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub stream_options: Option<StreamOptions>,
    /// Members of the root object read so far (each repetition of a key counts): 0 means an
    /// injected member needs no comma before it.
    pub members: u64,
    /// Offset in the body of the root object's closing `}`, once read.
    pub closing_brace: Option<u64>,
}

/// Reads a request body. See the module documentation.
pub struct RequestMeter {
    scanner: JsonScanner,
    sink: RequestSink,
}

#[derive(Default)]
struct RequestSink {
    fields: RequestFields,
    error: Option<RequestError>,
}

const MODEL: &[&str] = &["model"];
const STREAM: &[&str] = &["stream"];
const MAX_TOKENS: &[&str] = &["max_tokens"];
const MAX_COMPLETION_TOKENS: &[&str] = &["max_completion_tokens"];
const STREAM_OPTIONS: &[&str] = &["stream_options"];
const INCLUDE_USAGE: &[&str] = &["stream_options", "include_usage"];

impl JsonSink for RequestSink {
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        path.is(MODEL)
    }

    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        // Fields stay as they were at the first error, wherever the chunk it came in ends.
        if self.error.is_some() {
            return;
        }
        let fields = &mut self.fields;
        match path.depth() {
            0 if value != Value::Object => {
                self.error.get_or_insert(RequestError::NotAnObject);
            }
            1 => fields.members = fields.members.saturating_add(1),
            _ => {}
        }
        let bool_value = match value {
            Value::Bool(b) => Some(b),
            _ => None,
        };
        if path.is(MODEL) {
            fields.model = match value {
                Value::String(text) if text.truncated => {
                    self.error.get_or_insert(RequestError::ModelTooLong {
                        limit: MAX_MODEL_BYTES,
                    });
                    None
                }
                Value::String(_) => value.text().map(str::to_owned),
                _ => {
                    self.error.get_or_insert(RequestError::ModelNotString);
                    None
                }
            };
        } else if path.is(STREAM) {
            fields.stream = bool_value;
        } else if path.is(MAX_TOKENS) {
            fields.max_tokens = value.count().and_then(Result::ok);
        } else if path.is(MAX_COMPLETION_TOKENS) {
            fields.max_completion_tokens = value.count().and_then(Result::ok);
        } else if path.is(STREAM_OPTIONS) {
            fields.stream_options = Some(StreamOptions {
                is_object: value == Value::Object,
                include_usage: None,
            });
        } else if path.is(INCLUDE_USAGE) {
            if let Some(options) = &mut fields.stream_options {
                options.include_usage = bool_value;
            }
        }
    }

    fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
        if self.error.is_none() && path.depth() == 0 && container == Container::Object {
            self.fields.closing_brace = Some(offset);
        }
    }
}

impl Default for RequestMeter {
    fn default() -> Self {
        RequestMeter::new()
    }
}

impl RequestMeter {
    pub fn new() -> Self {
        let limits = Limits {
            max_capture_bytes: MAX_MODEL_BYTES,
            ..Limits::default()
        };
        RequestMeter {
            scanner: JsonScanner::new(limits),
            sink: RequestSink::default(),
        }
    }

    /// Reads the next chunk of the body. After an error, the rest is ignored.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.sink.error.is_none() {
            if let Err(e) = self.scanner.feed(chunk, &mut self.sink) {
                self.sink.error.get_or_insert(RequestError::Json(e));
            }
        }
    }

    /// The fields read so far.
    pub fn fields(&self) -> &RequestFields {
        &self.sink.fields
    }

    /// The first error met so far.
    pub fn error(&self) -> Option<&RequestError> {
        self.sink.error.as_ref()
    }

    /// Whether the whole root object was read without error (only whitespace may follow).
    pub fn is_complete(&self) -> bool {
        self.sink.error.is_none() && self.scanner.is_done()
    }

    /// The body ended: its fields, or why it is not a valid request body.
    pub fn finish(mut self) -> Result<RequestFields, RequestError> {
        if self.sink.error.is_none() {
            if let Err(e) = self.scanner.finish(&mut self.sink) {
                self.sink.error.get_or_insert(RequestError::Json(e));
            }
        }
        match self.sink.error {
            Some(e) => Err(e),
            None => Ok(self.sink.fields),
        }
    }
}
