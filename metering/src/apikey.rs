//! Customer API keys: format, hashing and display prefix.
//!
//! A key is `csk_` + 40 hex digits of randomness (160 bits) + 8 hex digits of checksum (the first
//! four bytes of SHA-256 over the prefix and randomness). The checksum lets the gateway refuse a
//! mistyped or made-up key without asking the control plane. Only the SHA-256 hash of the whole key
//! and its display prefix are ever stored.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "csk_";
/// Bytes of randomness in a key.
pub const RANDOM_BYTES: usize = 20;
const CHECKSUM_HEX: usize = 8;
/// Length of a well-formed key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + RANDOM_BYTES * 2 + CHECKSUM_HEX;
/// How much of a key is shown in listings: the prefix and 8 digits, never enough to use it.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// Builds a key from fresh randomness supplied by the caller (this crate does no I/O).
pub fn generate(random: &[u8; RANDOM_BYTES]) -> String {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(&hex::encode(random));
    let sum = checksum(&key);
    key.push_str(&sum);
    key
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    hex::encode(digest.get(..CHECKSUM_HEX / 2).unwrap_or_default())
}

/// True when `key` has the format and a correct checksum. Anything else cannot be a key we issued.
pub fn is_well_formed(key: &str) -> bool {
    if !has_key_format(key) {
        return false;
    }
    let Some((body, sum)) = key.split_at_checked(KEY_LEN - CHECKSUM_HEX) else {
        return false;
    };
    constant_time_eq(checksum(body).as_bytes(), sum.as_bytes())
}

/// True when `key` has the format of a key (prefix, length, lowercase hex), whatever its
/// checksum: enough to look it up among known keys, whose hashes only issued keys can match.
pub fn has_key_format(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.starts_with(KEY_PREFIX)
        && key.get(KEY_PREFIX.len()..).is_some_and(|r| {
            r.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The hash stored and looked up: lowercase hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    hex_lower(&Sha256::digest(key.as_bytes()))
}

/// Lowercase hex, as `hex::encode` writes it, without going through `char`s (the gateway hashes
/// a key per request).
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'));
        }
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The part of a key shown in listings and logs.
pub fn display_prefix(key: &str) -> &str {
    key.get(..DISPLAY_PREFIX_LEN).unwrap_or(KEY_PREFIX)
}

/// Compares two secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
