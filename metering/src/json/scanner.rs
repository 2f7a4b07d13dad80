//! The scanner's state machine: one byte at a time, so that where a chunk ends never matters.

use super::path::{Frame, Key, Path};
use super::string::{Capture, CharSink, Discard, Progress, StrDecoder};
use super::{Container, JsonSink, Limits, Number, Text, Value};
use crate::usage::MeterError;

/// What the scanner expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A value: at the start, after `:` or after `,` in an array.
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    CommaOrEnd,
    /// After the root value: only whitespace.
    Done,
    /// Inside a key string.
    KeyString,
    /// Inside a string value.
    ValueString,
    /// Inside a number.
    Number(NumberPart),
    /// Inside `true`, `false` or `null`: which one and how many bytes matched.
    Literal(Literal, u8),
}

/// The part of a number being read (RFC 8259 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumberPart {
    Minus,
    Zero,
    Int,
    Dot,
    Fraction,
    Exp,
    ExpSign,
    ExpDigits,
}

impl NumberPart {
    /// Whether a number may end here.
    fn is_complete(self) -> bool {
        matches!(
            self,
            NumberPart::Zero | NumberPart::Int | NumberPart::Fraction | NumberPart::ExpDigits
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Literal {
    True,
    False,
    Null,
}

impl Literal {
    fn text(self) -> &'static [u8] {
        match self {
            Literal::True => b"true",
            Literal::False => b"false",
            Literal::Null => b"null",
        }
    }

    fn value(self) -> Value<'static> {
        match self {
            Literal::True => Value::Bool(true),
            Literal::False => Value::Bool(false),
            Literal::Null => Value::Null,
        }
    }
}

/// The digits of the number being read, accumulated only as far as a `u64` goes.
#[derive(Clone, Copy, Debug, Default)]
struct NumberValue {
    negative: bool,
    not_integer: bool,
    overflow: bool,
    value: u64,
}

impl NumberValue {
    fn push_digit(&mut self, b: u8) {
        match self
            .value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
        {
            Some(v) => self.value = v,
            None => self.overflow = true,
        }
    }

    fn classify(&self) -> Number {
        if self.negative {
            Number::Negative
        } else if self.not_integer {
            Number::NotInteger
        } else if self.overflow {
            Number::TooLarge
        } else {
            Number::Integer(self.value)
        }
    }
}

/// Frames allocated up front at most (the default depth is 64).
const MAX_PREALLOCATED_FRAMES: usize = 1024;

/// An incremental JSON scanner. See the module documentation.
#[derive(Clone, Debug)]
pub struct JsonScanner {
    limits: Limits,
    frames: Vec<Frame>,
    state: State,
    string: StrDecoder,
    capture: Capture,
    number: NumberValue,
    /// Offset of the next byte, from the start of the document.
    offset: u64,
    /// The first error; every later call returns it again.
    error: Option<MeterError>,
    /// Every byte through [`Self::byte`], for the tests that compare the two ways.
    #[cfg(test)]
    full_machine_only: bool,
}

impl Default for JsonScanner {
    fn default() -> Self {
        JsonScanner::new(Limits::default())
    }
}

impl JsonScanner {
    pub fn new(limits: Limits) -> Self {
        JsonScanner {
            limits,
            // Limits come from code, not bodies; the cap only keeps an absurd one from aborting.
            frames: Vec::with_capacity(limits.max_depth.min(MAX_PREALLOCATED_FRAMES)),
            state: State::Value,
            string: StrDecoder::new(),
            capture: Capture::new(limits.max_capture_bytes),
            number: NumberValue::default(),
            offset: 0,
            error: None,
            #[cfg(test)]
            full_machine_only: false,
        }
    }

    /// Starts a new document, keeping the allocations.
    pub fn reset(&mut self) {
        self.frames.clear();
        self.state = State::Value;
        self.string = StrDecoder::new();
        self.number = NumberValue::default();
        self.offset = 0;
        self.error = None;
    }

    /// Whether a complete root value was read (only whitespace may follow).
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.error.is_none()
    }

    /// The first error met, if any.
    pub fn error(&self) -> Option<&MeterError> {
        self.error.as_ref()
    }

    /// Scans the next chunk of the document, reporting its values to `sink`.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl JsonSink) -> Result<(), MeterError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            let run = self.plain_run(rest);
            if run > 0 {
                // Strings are mostly plain ASCII (keys, content, base64 images): read in bulk,
                // copied only where a key or a wanted capture keeps them.
                let plain = rest.get(..run).unwrap_or_default();
                match (self.state, self.frames.last_mut()) {
                    (State::KeyString, Some(Frame::Object(key))) => key.plain_run(plain),
                    (State::ValueString, _) => self.capture.plain_run(plain),
                    _ => {}
                }
                self.string.add_plain(run);
                self.offset = self.offset.saturating_add(run as u64);
                rest = rest.get(run..).unwrap_or_default();
                continue;
            }
            if self.shortcut() && self.between_values(b) {
                self.offset = self.offset.saturating_add(1);
                rest = tail;
                continue;
            }
            if let Err(e) = self.byte(b, sink) {
                self.error = Some(e.clone());
                return Err(e);
            }
            self.offset = self.offset.saturating_add(1);
            rest = tail;
        }
        Ok(())
    }

    /// Ends the document: an error unless exactly one complete value was read. A number at the
    /// root can only be known complete here, so its value is reported now.
    pub fn finish(&mut self, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.state {
            State::Done => return Ok(()),
            State::Number(part) if part.is_complete() && self.frames.is_empty() => {
                self.end_number(sink);
                return Ok(());
            }
            _ => {}
        }
        let reason = if self.state == State::Value && self.frames.is_empty() {
            "no JSON value"
        } else {
            "unexpected end of input"
        };
        let e = self.syntax(reason);
        self.error = Some(e.clone());
        Err(e)
    }

    /// How many bytes at the start of `bytes` are one-byte characters (printable ASCII, no quote
    /// or backslash) inside a key or a string value: they are read in bulk, with the same effect
    /// as byte by byte.
    fn plain_run(&self, bytes: &[u8]) -> usize {
        if !matches!(self.state, State::ValueString | State::KeyString) || !self.string.at_char() {
            return 0;
        }
        plain_prefix(bytes)
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn shortcut(&self) -> bool {
        true
    }

    #[cfg(test)]
    fn shortcut(&self) -> bool {
        !self.full_machine_only
    }

    /// The bytes of an object's structure that concern no sink and cannot be an error (the quotes
    /// around a key, `:` after it, `,` before the next member, whitespace where it may stand),
    /// done here with the same effect as [`Self::byte`], which does everything else: most of a
    /// body's bytes outside strings are these.
    #[inline(always)]
    fn between_values(&mut self, b: u8) -> bool {
        let space = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match (self.state, b) {
            (State::KeyOrEnd | State::Key, b'"') => self.begin_key(),
            (State::KeyString, b'"') if self.string.at_char() => self.state = State::Colon,
            (State::Colon, b':') => self.state = State::Value,
            (State::CommaOrEnd, b',') if matches!(self.frames.last(), Some(Frame::Object(_))) => {
                self.state = State::Key;
            }
            (
                State::Value
                | State::ValueOrEnd
                | State::KeyOrEnd
                | State::Key
                | State::Colon
                | State::CommaOrEnd
                | State::Done,
                _,
            ) if space => {}
            _ => return false,
        }
        true
    }

    fn syntax(&self, reason: &'static str) -> MeterError {
        MeterError::Syntax {
            offset: self.offset,
            reason,
        }
    }

    fn byte(&mut self, b: u8, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        let is_space = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Value => self.begin_value(b, sink)?,
            State::ValueOrEnd if b == b']' => self.close(Container::Array, sink)?,
            State::ValueOrEnd => self.begin_value(b, sink)?,
            State::KeyOrEnd if b == b'}' => self.close(Container::Object, sink)?,
            State::KeyOrEnd | State::Key => match b {
                b'"' => self.begin_key(),
                _ if is_space => {}
                _ => return Err(self.syntax("expected a string key")),
            },
            State::Colon => match b {
                b':' => self.state = State::Value,
                _ if is_space => {}
                _ => return Err(self.syntax("expected ':' after a key")),
            },
            State::CommaOrEnd => match b {
                b',' => self.next_member(),
                b']' => self.close(Container::Array, sink)?,
                b'}' => self.close(Container::Object, sink)?,
                _ if is_space => {}
                _ => return Err(self.syntax("expected ',' or a closing bracket")),
            },
            State::Done if is_space => {}
            State::Done => return Err(self.syntax("trailing characters after the JSON value")),
            State::KeyString => self.key_byte(b)?,
            State::ValueString => self.string_byte(b, sink)?,
            State::Number(part) => {
                if !self.number_byte(part, b)? {
                    // The byte ends the number and belongs to what follows it.
                    self.end_number(sink);
                    return self.byte(b, sink);
                }
            }
            State::Literal(lit, matched) => self.literal_byte(lit, matched, b, sink)?,
        }
        Ok(())
    }

    fn begin_value(&mut self, b: u8, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'{' => self.open(Container::Object, sink)?,
            b'[' => self.open(Container::Array, sink)?,
            b'"' => {
                let wanted = sink.capture_string(Path::new(&self.frames));
                self.capture.start(wanted);
                self.string = StrDecoder::new();
                self.state = State::ValueString;
            }
            b'-' => {
                self.number = NumberValue {
                    negative: true,
                    ..NumberValue::default()
                };
                self.state = State::Number(NumberPart::Minus);
            }
            b'0'..=b'9' => {
                self.number = NumberValue::default();
                self.number.push_digit(b);
                let part = if b == b'0' {
                    NumberPart::Zero
                } else {
                    NumberPart::Int
                };
                self.state = State::Number(part);
            }
            b't' => self.state = State::Literal(Literal::True, 1),
            b'f' => self.state = State::Literal(Literal::False, 1),
            b'n' => self.state = State::Literal(Literal::Null, 1),
            _ => return Err(self.syntax("expected a JSON value")),
        }
        Ok(())
    }

    fn open(&mut self, container: Container, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        if self.frames.len() >= self.limits.max_depth {
            return Err(MeterError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let (value, frame, state) = match container {
            Container::Object => (Value::Object, Frame::Object(Key::EMPTY), State::KeyOrEnd),
            Container::Array => (Value::Array, Frame::Array(0), State::ValueOrEnd),
        };
        sink.value(Path::new(&self.frames), value);
        self.frames.push(frame);
        self.state = state;
        Ok(())
    }

    fn close(&mut self, container: Container, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        let open_matches = matches!(
            (self.frames.last(), container),
            (Some(Frame::Object(_)), Container::Object) | (Some(Frame::Array(_)), Container::Array)
        );
        if !open_matches {
            return Err(self.syntax("closing bracket does not match the open one"));
        }
        self.frames.pop();
        sink.close(Path::new(&self.frames), container, self.offset);
        self.after_value();
        Ok(())
    }

    /// After `,`: the next array element or object member.
    fn next_member(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Array(index)) => {
                *index = index.saturating_add(1);
                self.state = State::Value;
            }
            Some(Frame::Object(_)) => self.state = State::Key,
            // CommaOrEnd is only entered inside a container.
            None => self.state = State::Done,
        }
    }

    fn after_value(&mut self) {
        self.state = if self.frames.is_empty() {
            State::Done
        } else {
            State::CommaOrEnd
        };
    }

    fn begin_key(&mut self) {
        if let Some(Frame::Object(key)) = self.frames.last_mut() {
            key.clear();
        }
        self.string = StrDecoder::new();
        self.state = State::KeyString;
    }

    fn key_byte(&mut self, b: u8) -> Result<(), MeterError> {
        let progress = match self.frames.last_mut() {
            Some(Frame::Object(key)) => self.string.byte(b, key),
            _ => self.string.byte(b, &mut Discard),
        };
        match progress {
            Ok(Progress::More) => {}
            Ok(Progress::Closed) => self.state = State::Colon,
            Err(reason) => return Err(self.syntax(reason)),
        }
        Ok(())
    }

    fn string_byte(&mut self, b: u8, sink: &mut impl JsonSink) -> Result<(), MeterError> {
        match self.string.byte(b, &mut self.capture) {
            Ok(Progress::More) => {}
            Ok(Progress::Closed) => {
                let (captured, truncated, control) = self.capture.text();
                let text = Text {
                    captured,
                    truncated,
                    control,
                    len: self.string.len,
                };
                sink.value(Path::new(&self.frames), Value::String(text));
                self.after_value();
            }
            Err(reason) => return Err(self.syntax(reason)),
        }
        Ok(())
    }

    /// Whether the byte continues the number; `false` when it ends a complete number.
    fn number_byte(&mut self, part: NumberPart, b: u8) -> Result<bool, MeterError> {
        let digit = b.is_ascii_digit();
        let next = match (part, b) {
            (NumberPart::Minus, b'0') => NumberPart::Zero,
            (NumberPart::Minus, _) if digit => NumberPart::Int,
            (NumberPart::Minus, _) => return Err(self.syntax("expected a digit after '-'")),
            (NumberPart::Zero, _) if digit => return Err(self.syntax("leading zero in a number")),
            (NumberPart::Int, _) if digit => NumberPart::Int,
            (NumberPart::Zero | NumberPart::Int, b'.') => NumberPart::Dot,
            (NumberPart::Dot | NumberPart::Fraction, _) if digit => NumberPart::Fraction,
            (NumberPart::Dot, _) => return Err(self.syntax("expected a digit after '.'")),
            (NumberPart::Zero | NumberPart::Int | NumberPart::Fraction, b'e' | b'E') => NumberPart::Exp,
            (NumberPart::Exp, b'+' | b'-') => NumberPart::ExpSign,
            (NumberPart::Exp | NumberPart::ExpSign | NumberPart::ExpDigits, _) if digit => {
                NumberPart::ExpDigits
            }
            (NumberPart::Exp | NumberPart::ExpSign, _) => {
                return Err(self.syntax("expected a digit in the exponent"))
            }
            // Zero, Int, Fraction, ExpDigits followed by anything else: the number is complete.
            _ => return Ok(false),
        };
        match next {
            NumberPart::Zero | NumberPart::Int => self.number.push_digit(b),
            _ => self.number.not_integer = true,
        }
        self.state = State::Number(next);
        Ok(true)
    }

    fn end_number(&mut self, sink: &mut impl JsonSink) {
        sink.value(Path::new(&self.frames), Value::Number(self.number.classify()));
        self.after_value();
    }

    fn literal_byte(
        &mut self,
        lit: Literal,
        matched: u8,
        b: u8,
        sink: &mut impl JsonSink,
    ) -> Result<(), MeterError> {
        let text = lit.text();
        if text.get(usize::from(matched)) != Some(&b) {
            return Err(self.syntax("invalid literal (expected true, false or null)"));
        }
        let matched = matched.saturating_add(1);
        if usize::from(matched) == text.len() {
            sink.value(Path::new(&self.frames), lit.value());
            self.after_value();
        } else {
            self.state = State::Literal(lit, matched);
        }
        Ok(())
    }
}

/// A byte a string holds as itself: printable ASCII other than the quote and the backslash.
fn is_plain(c: u8) -> bool {
    (0x20..0x80).contains(&c) && c != b'"' && c != b'\\'
}

/// How many bytes at the start of `bytes` are [`is_plain`], tested eight at a time (strings are
/// most of a body: model ids, text, keys, base64).
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte that is zero (exact for the lowest such byte, which is all that
    // counts: a borrow only runs upwards, from a byte that is itself flagged).
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut n = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            // Cannot happen; fewer bytes in bulk is always safe (the rest go one by one).
            return n;
        };
        let w = u64::from_le_bytes(word);
        let stop = w.wrapping_sub(ONES * 0x20) & !w & HIGH // below 0x20
            | w & HIGH // 0x80 and above
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if stop != 0 {
            return n + (stop.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + words.remainder().iter().take_while(|&&c| is_plain(c)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a sink is told, in order.
    #[derive(Default)]
    struct Record(Vec<String>);

    impl JsonSink for Record {
        fn capture_string(&mut self, path: Path<'_>) -> bool {
            self.0.push(format!("capture? {path:?}"));
            path.depth() % 2 == 1
        }
        fn value(&mut self, path: Path<'_>, value: Value<'_>) {
            self.0.push(format!("{path:?} = {value:?}"));
        }
        fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
            self.0.push(format!("close {path:?} {container:?} at {offset}"));
        }
    }

    fn scan(doc: &[u8], chunk: usize, full_machine_only: bool) -> (Vec<String>, Result<(), MeterError>) {
        let mut scanner = JsonScanner::new(Limits::default());
        scanner.full_machine_only = full_machine_only;
        let mut sink = Record::default();
        let mut result = Ok(());
        for part in doc.chunks(chunk.max(1)) {
            result = scanner.feed(part, &mut sink);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = scanner.finish(&mut sink);
        }
        (sink.0, result)
    }

    #[test]
    fn the_shortcut_between_values_does_what_the_full_machine_does() {
        // Token soups, mostly JSON-shaped, often not: every event, value, path and error offset
        // must be the same with and without the shortcut, however the input is split.
        const TOKENS: [&str; 22] = [
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\n",
            "\t",
            "\"k\"",
            "\"usage\"",
            "\"v\\n\"",
            "\"",
            "1",
            "-2.5e3",
            "tr",
            "ue",
            "null",
            "x",
            "\\",
            "\"\\u00e9\"",
            "\u{e9}",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut differ_checked = 0;
        for _ in 0..20_000 {
            let len = next() % 24;
            let mut doc = String::new();
            // Half start as an object, so that most soups get some way in.
            if next() % 2 == 0 {
                doc.push_str("{\"a\":");
            }
            for _ in 0..len {
                doc.push_str(TOKENS[(next() % TOKENS.len() as u64) as usize]);
            }
            let chunk = (next() % 8) as usize;
            let fast = scan(doc.as_bytes(), chunk, false);
            let full = scan(doc.as_bytes(), chunk, true);
            assert_eq!(fast.1, full.1, "{doc:?} in chunks of {chunk}");
            assert_eq!(fast.0, full.0, "{doc:?} in chunks of {chunk}");
            differ_checked += usize::from(!fast.0.is_empty());
        }
        assert!(differ_checked > 10_000, "{differ_checked} soups produced events");
    }

    #[test]
    fn plain_prefix_stops_where_a_byte_by_byte_reading_would() {
        let naive = |b: &[u8]| b.iter().take_while(|&&c| is_plain(c)).count();
        // Every byte value at every position of a 17-byte run, after plain bytes.
        for at in 0..17 {
            for stop in 0..=255u8 {
                let mut b = vec![b'a'; 17];
                b[at] = stop;
                assert_eq!(plain_prefix(&b), naive(&b), "byte {stop:#x} at {at}");
                b[..at].fill(0x7f);
                assert_eq!(plain_prefix(&b), naive(&b), "byte {stop:#x} at {at} after 0x7f");
            }
        }
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            let b: Vec<u8> = (0..(x % 40))
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    // Mostly plain, sometimes anything.
                    if x % 7 == 0 {
                        (x >> 24) as u8
                    } else {
                        0x20 + ((x >> 24) as u8 % 0x5f)
                    }
                })
                .collect();
            assert_eq!(plain_prefix(&b), naive(&b), "{b:?}");
        }
    }
}
