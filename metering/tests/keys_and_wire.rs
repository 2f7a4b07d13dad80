//! API key format and the internal API's compatibility rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use metering::apikey;
use metering::wire::{DebitBatch, Snapshot, PROTOCOL_VERSION};

#[test]
fn generated_keys_are_well_formed_and_hash_to_64_hex_digits() {
    let key = apikey::generate(&[7u8; apikey::RANDOM_BYTES]);
    assert!(key.starts_with("csk_"));
    assert_eq!(key.len(), apikey::KEY_LEN);
    assert!(apikey::is_well_formed(&key));
    let h = apikey::hash(&key);
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(apikey::display_prefix(&key), &key[..12]);
    assert_ne!(apikey::generate(&[8u8; apikey::RANDOM_BYTES]), key);
}

#[test]
fn the_key_hash_is_the_lowercase_hex_sha256_of_the_key() {
    // printf %s csk_abc | sha256sum
    assert_eq!(
        apikey::hash("csk_abc"),
        "c773b81ef04a4af745e3bcc4e88a484981b120598ebef14c6e5553e6f3b74b17"
    );
}

#[test]
fn a_mistyped_or_made_up_key_fails_the_checksum() {
    let key = apikey::generate(&[1u8; apikey::RANDOM_BYTES]);
    let mut chars: Vec<char> = key.chars().collect();
    chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    assert!(!apikey::is_well_formed(&typo));
    // The typo still has a key's format: the gateway looks it up among known keys by hash (which
    // it cannot match) before it checks the checksum.
    assert!(apikey::has_key_format(&typo) && apikey::has_key_format(&key));
    for bad in [
        "",
        "csk_",
        "sk-ant-api03-abc",
        &key[..key.len() - 1],
        &format!("{key}0"),
        &key.to_uppercase(),
    ] {
        assert!(!apikey::is_well_formed(bad), "{bad}");
        assert!(!apikey::has_key_format(bad), "{bad}");
    }
    // Multi-byte input at the split point must not panic.
    let odd = format!("csk_{}é", "a".repeat(apikey::KEY_LEN - 6));
    assert!(!apikey::is_well_formed(&odd) && !apikey::has_key_format(&odd));
    assert_eq!(apikey::display_prefix("é"), "csk_");
}

#[test]
fn constant_time_eq_compares_content_and_length() {
    assert!(apikey::constant_time_eq(b"token", b"token"));
    assert!(!apikey::constant_time_eq(b"token", b"tokem"));
    assert!(!apikey::constant_time_eq(b"token", b"token2"));
}

#[test]
fn an_older_reader_ignores_new_fields_and_a_newer_reader_defaults_missing_ones() {
    let from_newer = r#"{"protocol":2,"version":9,"full":false,"keys":[],"accounts":[],
        "next_cursor":null,"some_future_field":{"x":1}}"#;
    let s: Snapshot = serde_json::from_str(from_newer).unwrap();
    assert_eq!(s.version, 9);
    let minimal = r#"{"version":3,"full":true}"#;
    let s: Snapshot = serde_json::from_str(minimal).unwrap();
    assert_eq!(s.protocol, PROTOCOL_VERSION);
    assert!(s.keys.is_empty() && s.prices.is_none() && s.next_cursor.is_none());
    let batch = r#"{"debits":[{"debit_id":"6f1c2a44-1b7e-4f0e-9d7a-0a5b2f1e9c11","key_hash":"ab",
        "account_id":"0b7e5e9a-8d55-4b7c-9a63-2f6f7d1e2c33","model_requested":"claude-haiku-4-5",
        "usage":{"input_tokens":5,"output_tokens":2},"admitted_at":"2026-11-25T10:00:00Z"}]}"#;
    let b: DebitBatch = serde_json::from_str(batch).unwrap();
    assert_eq!(b.debits[0].usage.input_tokens, 5);
    assert!(!b.debits[0].partial);
    let round: DebitBatch = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(round, b);
}

#[test]
fn money_travels_as_decimal_strings() {
    let json = r#"{"account_id":"0b7e5e9a-8d55-4b7c-9a63-2f6f7d1e2c33","status":"active",
        "balance":"12.345678901234567890","version":1}"#;
    let a: metering::wire::AccountState = serde_json::from_str(json).unwrap();
    let out = serde_json::to_value(&a).unwrap();
    assert_eq!(out["balance"], "12.345678901234567890");
}
