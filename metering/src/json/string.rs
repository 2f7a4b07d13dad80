//! Decoding the inside of a JSON string one byte at a time: escapes (with `\uXXXX` surrogate
//! pairs) and UTF-8 validation, so that a split anywhere in the string changes nothing.

/// Where decoded characters go: a key, a capture buffer, or nowhere.
pub(super) trait CharSink {
    /// A character of `width` UTF-8 bytes follows (lets a bounded sink keep whole characters).
    fn begin_char(&mut self, width: usize);
    /// One byte of that character.
    fn byte(&mut self, b: u8);
    /// A run of one-byte characters (printable ASCII, no quote or backslash): the same as
    /// `begin_char(1)` and `byte(b)` for each, which is what it does unless a sink does better.
    fn plain_run(&mut self, run: &[u8]) {
        for &b in run {
            self.begin_char(1);
            self.byte(b);
        }
    }
}

/// Decoded characters nobody keeps (their length is still counted by the decoder).
pub(super) struct Discard;

impl CharSink for Discard {
    fn begin_char(&mut self, _width: usize) {}
    fn byte(&mut self, _b: u8) {}
    fn plain_run(&mut self, _run: &[u8]) {}
}

/// A bounded copy of a decoded string value that a sink asked for.
#[derive(Clone, Debug, Default)]
pub(super) struct Capture {
    buf: Vec<u8>,
    limit: usize,
    wanted: bool,
    truncated: bool,
    /// A C0 control character was captured. Only an escape can bring one (raw control bytes are
    /// not JSON), and escapes are decoded byte by byte, never in plain runs.
    control: bool,
}

impl Capture {
    pub(super) fn new(limit: usize) -> Self {
        // Limits come from code, not bodies; the cap only keeps an absurd one from aborting.
        Capture {
            buf: Vec::with_capacity(limit.min(64 * 1024)),
            limit,
            wanted: false,
            truncated: false,
            control: false,
        }
    }

    pub(super) fn start(&mut self, wanted: bool) {
        self.buf.clear();
        self.wanted = wanted;
        self.truncated = false;
        self.control = false;
    }

    /// The captured text (when it was wanted), whether it was cut at the limit, and whether it has
    /// a C0 control character.
    pub(super) fn text(&self) -> (Option<&str>, bool, bool) {
        if !self.wanted {
            return (None, false, false);
        }
        // Only whole, validated characters are ever pushed, so this cannot fail.
        (core::str::from_utf8(&self.buf).ok(), self.truncated, self.control)
    }
}

impl CharSink for Capture {
    fn begin_char(&mut self, width: usize) {
        if self.wanted && !self.truncated && self.buf.len().saturating_add(width) > self.limit {
            self.truncated = true;
        }
    }

    fn byte(&mut self, b: u8) {
        if self.wanted && !self.truncated {
            self.control |= b < 0x20;
            self.buf.push(b);
        }
    }

    fn plain_run(&mut self, run: &[u8]) {
        if !self.wanted || self.truncated {
            return;
        }
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf
            .extend_from_slice(run.get(..room.min(run.len())).unwrap_or_default());
        if run.len() > room {
            self.truncated = true;
        }
    }
}

/// What the decoder expects next inside a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A plain character, a backslash or the closing quote.
    Char,
    /// The character after a backslash.
    Escape,
    /// Hex digits of `\uXXXX`: the value so far and how many digits were read.
    Hex { value: u16, digits: u8 },
    /// The `\` that must start the low half after a high surrogate.
    LowBackslash { high: u16 },
    /// The `u` of that low half.
    LowU { high: u16 },
    /// The low half's hex digits.
    LowHex { high: u16, value: u16, digits: u8 },
    /// Continuation bytes of a UTF-8 sequence: how many remain, and the allowed range of the
    /// next one (narrower than 80..=BF right after some lead bytes, to reject overlong forms,
    /// surrogates and code points above U+10FFFF).
    Utf8 { remaining: u8, lo: u8, hi: u8 },
}

/// What one byte did to the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Progress {
    More,
    /// The closing quote was read.
    Closed,
}

/// The state of the string being read; `len` is its decoded length in bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct StrDecoder {
    expect: Expect,
    pub(super) len: u64,
}

impl StrDecoder {
    pub(super) const fn new() -> Self {
        StrDecoder {
            expect: Expect::Char,
            len: 0,
        }
    }

    /// Whether the next byte starts a character (not inside an escape or UTF-8 sequence).
    pub(super) fn at_char(&self) -> bool {
        self.expect == Expect::Char
    }

    /// Accounts for a run of plain ASCII characters read in bulk.
    pub(super) fn add_plain(&mut self, run: usize) {
        self.len = self.len.saturating_add(run as u64);
    }

    /// Feeds the byte after the opening quote, or any later one.
    pub(super) fn byte(&mut self, b: u8, out: &mut impl CharSink) -> Result<Progress, &'static str> {
        match self.expect {
            Expect::Char => return self.plain(b, out),
            Expect::Escape => self.escape(b, out)?,
            Expect::Hex { value, digits } => {
                let value = push_hex(value, b)?;
                if digits < 3 {
                    self.expect = Expect::Hex {
                        value,
                        digits: digits + 1,
                    };
                } else if (0xD800..=0xDBFF).contains(&value) {
                    self.expect = Expect::LowBackslash { high: value };
                } else {
                    self.expect = Expect::Char;
                    self.emit(u32::from(value), out)?;
                }
            }
            Expect::LowBackslash { high } => {
                if b != b'\\' {
                    return Err("unpaired surrogate in \\u escape");
                }
                self.expect = Expect::LowU { high };
            }
            Expect::LowU { high } => {
                if b != b'u' {
                    return Err("unpaired surrogate in \\u escape");
                }
                self.expect = Expect::LowHex {
                    high,
                    value: 0,
                    digits: 0,
                };
            }
            Expect::LowHex { high, value, digits } => {
                let value = push_hex(value, b)?;
                if digits < 3 {
                    self.expect = Expect::LowHex {
                        high,
                        value,
                        digits: digits + 1,
                    };
                } else if (0xDC00..=0xDFFF).contains(&value) {
                    self.expect = Expect::Char;
                    let code = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(value) - 0xDC00);
                    self.emit(code, out)?;
                } else {
                    return Err("unpaired surrogate in \\u escape");
                }
            }
            Expect::Utf8 { remaining, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return Err("invalid UTF-8 in string");
                }
                out.byte(b);
                self.expect = match remaining {
                    1 => Expect::Char,
                    _ => Expect::Utf8 {
                        remaining: remaining - 1,
                        lo: 0x80,
                        hi: 0xBF,
                    },
                };
            }
        }
        Ok(Progress::More)
    }

    fn plain(&mut self, b: u8, out: &mut impl CharSink) -> Result<Progress, &'static str> {
        // UTF-8 well-formed byte sequences, Unicode 15 table 3-7.
        let (width, lo, hi) = match b {
            b'"' => return Ok(Progress::Closed),
            b'\\' => {
                self.expect = Expect::Escape;
                return Ok(Progress::More);
            }
            0x00..=0x1F => return Err("control character in string"),
            0x20..=0x7F => (1, 0, 0),
            0xC2..=0xDF => (2, 0x80, 0xBF),
            0xE0 => (3, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
            0xED => (3, 0x80, 0x9F),
            0xF0 => (4, 0x90, 0xBF),
            0xF1..=0xF3 => (4, 0x80, 0xBF),
            0xF4 => (4, 0x80, 0x8F),
            _ => return Err("invalid UTF-8 in string"),
        };
        out.begin_char(usize::from(width));
        out.byte(b);
        self.len = self.len.saturating_add(u64::from(width));
        if width > 1 {
            self.expect = Expect::Utf8 {
                remaining: width - 1,
                lo,
                hi,
            };
        }
        Ok(Progress::More)
    }

    fn escape(&mut self, b: u8, out: &mut impl CharSink) -> Result<(), &'static str> {
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                self.expect = Expect::Hex { value: 0, digits: 0 };
                return Ok(());
            }
            _ => return Err("invalid escape in string"),
        };
        self.expect = Expect::Char;
        self.emit(u32::from(c), out)
    }

    fn emit(&mut self, code: u32, out: &mut impl CharSink) -> Result<(), &'static str> {
        let c = char::from_u32(code).ok_or("unpaired surrogate in \\u escape")?;
        let mut buf = [0u8; 4];
        let encoded = c.encode_utf8(&mut buf);
        out.begin_char(encoded.len());
        for b in encoded.bytes() {
            out.byte(b);
        }
        self.len = self.len.saturating_add(encoded.len() as u64);
        Ok(())
    }
}

fn push_hex(value: u16, b: u8) -> Result<u16, &'static str> {
    let digit = char::from(b)
        .to_digit(16)
        .ok_or("invalid hex digit in \\u escape")?;
    // Four digits of at most 15 fit a u16 exactly: the shift never drops a set bit.
    Ok((value << 4) | digit as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::json::path::{Key, MAX_KEY_BYTES};

    /// Feeds `text` one character at a time.
    fn by_char(sink: &mut impl CharSink, text: &[u8]) {
        for &b in text {
            sink.begin_char(1);
            sink.byte(b);
        }
    }

    /// A run read in bulk, split anywhere, leaves keys and captures exactly as character by
    /// character, on both sides of their limits.
    #[test]
    fn bulk_runs_equal_character_by_character() {
        let text: Vec<u8> = (0..MAX_KEY_BYTES * 2 + 3)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        for len in [
            0,
            1,
            MAX_KEY_BYTES - 1,
            MAX_KEY_BYTES,
            MAX_KEY_BYTES + 1,
            text.len(),
        ] {
            let text = &text[..len];
            let mut one = Key::EMPTY;
            by_char(&mut one, text);
            for split in 0..=len {
                let mut bulk = Key::EMPTY;
                bulk.plain_run(&text[..split]);
                bulk.plain_run(&text[split..]);
                assert_eq!(bulk, one, "key of {len} bytes split at {split}");
            }
            for limit in [0, 1, len.saturating_sub(1), len, len + 1] {
                for wanted in [true, false] {
                    let mut one = Capture::new(limit);
                    one.start(wanted);
                    by_char(&mut one, text);
                    for split in 0..=len {
                        let mut bulk = Capture::new(limit);
                        bulk.start(wanted);
                        bulk.plain_run(&text[..split]);
                        bulk.plain_run(&text[split..]);
                        assert_eq!(bulk.text(), one.text(), "capture {len}/{limit} split at {split}");
                    }
                }
            }
        }
    }
}
