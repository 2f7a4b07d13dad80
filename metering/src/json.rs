//! An incremental, push-based JSON scanner whose memory does not depend on the body's size.
//!
//! The meters never build a document tree: they feed body chunks to a [`JsonScanner`], which
//! reports each value to a [`JsonSink`] together with its [`Path`] from the root. Containers are
//! reported when they open (so a sink can forget what a repeated key replaces: the last duplicate
//! wins) and when they close (with the offset of the closing bracket). Strings are decoded and
//! validated as UTF-8; the sink chooses per path whether the decoded text is captured (bounded)
//! or only its decoded length reported. Numbers are classified, not converted: a non-negative
//! integer that fits in a `u64` is reported as such, anything else as what it is not.
//!
//! Syntax is strict RFC 8259; a `\u` escape of a lone surrogate is an error too (it cannot be
//! decoded to UTF-8). The events are the same whether a body arrives whole or split at any byte.
//!
//! Memory bound: `max_depth` path frames of 72 bytes each (a key is kept inline, up to
//! [`MAX_KEY_BYTES`]) plus a capture buffer of `max_capture_bytes`, allocated when the scanner is
//! made and never grown, plus 168 bytes of state: with [`Limits::default`]
//! 64 x 72 + 256 + 168 = 5,032 bytes, under 5 KiB.

mod fields;
mod path;
mod scanner;
mod string;

pub use fields::{CountFields, Reading};
pub use path::{Frame, Key, Path, Step, MAX_KEY_BYTES};
pub use scanner::JsonScanner;

use crate::usage::MAX_COUNT;

/// The bounds a scanner keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Containers nested deeper than this are refused with `MeterError::TooDeep`.
    pub max_depth: usize,
    /// The longest string value captured, in decoded bytes; a longer one is reported truncated.
    pub max_capture_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_capture_bytes: 256,
        }
    }
}

/// Receives the scanner's events.
pub trait JsonSink {
    /// Whether the decoded text of the string value starting at `path` should be captured.
    /// Its decoded length is reported either way.
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        let _ = path;
        false
    }

    /// A value at `path`: a scalar once it is complete, an object or array as soon as it opens
    /// (its members follow as values with longer paths).
    fn value(&mut self, path: Path<'_>, value: Value<'_>);

    /// The object or array at `path` closed; `offset` is that of its closing bracket.
    fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
        let _ = (path, container, offset);
    }
}

/// The kind of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Object,
    Array,
}

/// A value as the scanner reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Text<'a>),
    /// An object opens here.
    Object,
    /// An array opens here.
    Array,
}

/// A JSON number, classified for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Number {
    /// A non-negative integer written without fraction or exponent, fitting a `u64`.
    Integer(u64),
    /// Written with a minus sign (`-0` included: no upstream writes a count that way).
    Negative,
    /// Written with a fraction or an exponent.
    NotInteger,
    /// An integer above `u64::MAX`.
    TooLarge,
}

/// A decoded string value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text<'a> {
    /// The decoded text when the sink asked for it: at most `max_capture_bytes`, cut at a
    /// character boundary.
    pub captured: Option<&'a str>,
    /// Whether the text was longer than what was captured.
    pub truncated: bool,
    /// Whether what was captured has a C0 control character (no real id or name does).
    pub control: bool,
    /// The decoded length in UTF-8 bytes (escapes resolved).
    pub len: u64,
}

impl Value<'_> {
    /// This value read as a token count: `None` for null (absent), otherwise the count or why
    /// it is not one.
    pub fn count(&self) -> Reading {
        match *self {
            Value::Null => None,
            Value::Number(Number::Integer(n)) if n <= MAX_COUNT => Some(Ok(n)),
            Value::Number(Number::Integer(_) | Number::TooLarge) => Some(Err("absurdly large")),
            Value::Number(Number::Negative) => Some(Err("negative")),
            Value::Number(Number::NotInteger) => Some(Err("not an integer")),
            Value::Bool(_) | Value::String(_) | Value::Object | Value::Array => Some(Err("not a number")),
        }
    }

    /// The captured text of a complete string value; `None` for anything else, including a
    /// string cut at the capture limit (no real model id or tier is that long) and one with a
    /// C0 control character (no real one has any, and PostgreSQL refuses NUL in text and JSON: a
    /// debit carrying one would stop the batches behind it).
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::String(Text {
                captured: Some(s),
                truncated: false,
                control: false,
                ..
            }) => Some(s),
            _ => None,
        }
    }
}
