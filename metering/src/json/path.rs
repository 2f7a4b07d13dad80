//! Where a value sits in a JSON document: the stack of enclosing objects (with the current key)
//! and arrays (with the current index), and the patterns meters match it against.

use core::fmt;

/// The longest object key kept, in decoded bytes. A longer key is remembered only as "too long"
/// and matches no pattern: no field a meter reads has a name anywhere near this long.
pub const MAX_KEY_BYTES: usize = 64;

/// The decoded name of the current member of an object, kept inline so that the path stack
/// never allocates per key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; MAX_KEY_BYTES],
    len: u8,
    too_long: bool,
}

impl Key {
    pub(super) const EMPTY: Key = Key {
        bytes: [0; MAX_KEY_BYTES],
        len: 0,
        too_long: false,
    };

    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.too_long = false;
    }

    /// The key as text, or `None` when it was longer than [`MAX_KEY_BYTES`].
    pub fn as_str(&self) -> Option<&str> {
        if self.too_long {
            return None;
        }
        self.bytes
            .get(..usize::from(self.len))
            .and_then(|b| core::str::from_utf8(b).ok())
    }

    /// Whether this key is exactly `name` (a too-long key equals nothing). Compared as bytes: a
    /// kept key is always whole UTF-8 characters, so byte equality is text equality, and meters
    /// compare keys at every value.
    pub fn is(&self, name: &str) -> bool {
        !self.too_long && self.bytes.get(..usize::from(self.len)) == Some(name.as_bytes())
    }
}

impl super::string::CharSink for Key {
    fn begin_char(&mut self, width: usize) {
        // Decide per whole character so that a kept key is always valid UTF-8.
        if usize::from(self.len).saturating_add(width) > MAX_KEY_BYTES {
            self.too_long = true;
        }
    }

    fn byte(&mut self, b: u8) {
        if self.too_long {
            return;
        }
        if let Some(slot) = self.bytes.get_mut(usize::from(self.len)) {
            *slot = b;
            self.len = self.len.saturating_add(1);
        }
    }

    fn plain_run(&mut self, run: &[u8]) {
        if self.too_long {
            return;
        }
        let len = usize::from(self.len);
        let take = MAX_KEY_BYTES.saturating_sub(len).min(run.len());
        if let (Some(dst), Some(src)) = (self.bytes.get_mut(len..len + take), run.get(..take)) {
            dst.copy_from_slice(src);
            self.len = u8::try_from(len + take).unwrap_or(u8::MAX);
        }
        if take < run.len() {
            self.too_long = true;
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "{s:?}"),
            None => f.write_str("<key too long>"),
        }
    }
}

/// One level of nesting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Inside an object, at the member with this key.
    Object(Key),
    /// Inside an array, at the element with this index (0-based).
    Array(u64),
}

/// One step of a pattern: an object key, or any element of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    AnyIndex,
}

impl Step<'_> {
    fn matches(&self, frame: &Frame) -> bool {
        match (self, frame) {
            (Step::Key(name), Frame::Object(key)) => key.is(name),
            (Step::AnyIndex, Frame::Array(_)) => true,
            _ => false,
        }
    }
}

/// The path from the document root to a value: empty for the root value itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path<'a> {
    frames: &'a [Frame],
}

impl<'a> Path<'a> {
    pub(super) fn new(frames: &'a [Frame]) -> Self {
        Path { frames }
    }

    /// The enclosing frames, outermost first.
    pub fn frames(&self) -> &'a [Frame] {
        self.frames
    }

    /// The path of the enclosing container (`None` for the root value).
    pub fn parent(&self) -> Option<Path<'a>> {
        self.frames.split_last().map(|(_, rest)| Path::new(rest))
    }

    /// How many containers enclose the value (0 for the root value).
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Whether the path is exactly this chain of object keys from the root.
    pub fn is(&self, keys: &[&str]) -> bool {
        self.frames.len() == keys.len() && self.starts_with(keys)
    }

    /// Whether the path begins with this chain of object keys.
    pub fn starts_with(&self, keys: &[&str]) -> bool {
        keys.len() <= self.frames.len() && keys.iter().zip(self.frames).all(|(k, f)| Step::Key(k).matches(f))
    }

    /// Whether this path is a strict prefix of `keys`: a value here contains the value at `keys`,
    /// so a new value here replaces it.
    pub fn is_ancestor_of(&self, keys: &[&str]) -> bool {
        self.frames.len() < keys.len() && keys.iter().zip(self.frames).all(|(k, f)| Step::Key(k).matches(f))
    }

    /// The rest of the path below the chain of object keys `keys`, when it starts with them.
    pub fn strip_prefix(&self, keys: &[&str]) -> Option<Path<'a>> {
        if !self.starts_with(keys) {
            return None;
        }
        self.frames.get(keys.len()..).map(Path::new)
    }

    /// The rest of the path below an array element, when it starts with one.
    pub fn strip_index(&self) -> Option<Path<'a>> {
        match self.frames.split_first() {
            Some((Frame::Array(_), rest)) => Some(Path::new(rest)),
            _ => None,
        }
    }

    /// Whether the path matches the pattern step for step (same length).
    pub fn matches(&self, pattern: &[Step<'_>]) -> bool {
        self.frames.len() == pattern.len() && pattern.iter().zip(self.frames).all(|(s, f)| s.matches(f))
    }
}
