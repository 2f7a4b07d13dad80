//! A debit as the filter sends it, written by hand: every finalised request encodes one, on the
//! request path, so it must cost little. It is the JSON serde would write for [`Debit`] in field
//! order, leaving out every field the control plane reads as its default when absent (zero token
//! counts, false flags, absent options, the default route). The control plane parses the same
//! `Debit` (and fingerprints that, not the bytes), so idempotency does not depend on the encoding a
//! gateway sends. The tests check it byte for byte against a serde-derived reference.

use chrono::{DateTime, Datelike, Timelike, Utc};
use metering::wire::{Debit, Route};
use uuid::Uuid;

/// The debit's JSON as a batch carries it.
pub fn encode(d: &Debit) -> Vec<u8> {
    // Room for the names, ids, counts and timestamps, plus the strings (escapes aside): one
    // allocation for a typical debit.
    let strings: usize = [
        Some(&d.key_hash),
        Some(&d.model_requested),
        d.model_served.as_ref(),
        d.usage.service_tier.as_ref(),
        d.usage.speed.as_ref(),
        d.usage.inference_geo.as_ref(),
        d.upstream_request_id.as_ref(),
        d.upstream_message_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(String::len)
    .sum();
    let mut out = Vec::with_capacity(448 + strings);
    out.extend_from_slice(b"{\"debit_id\":");
    uuid(&mut out, &d.debit_id);
    out.extend_from_slice(b",\"key_hash\":");
    string(&mut out, &d.key_hash);
    out.extend_from_slice(b",\"account_id\":");
    uuid(&mut out, &d.account_id);
    if d.route != Route::default() {
        out.extend_from_slice(b",\"route\":");
        string(&mut out, route_name(d.route));
    }
    out.extend_from_slice(b",\"model_requested\":");
    string(&mut out, &d.model_requested);
    if let Some(m) = &d.model_served {
        out.extend_from_slice(b",\"model_served\":");
        string(&mut out, m);
    }
    out.extend_from_slice(b",\"usage\":{");
    let u = &d.usage;
    let mut first = true;
    for (name, n) in [
        ("input_tokens", u.input_tokens),
        ("output_tokens", u.output_tokens),
        ("thinking_tokens", u.thinking_tokens),
        ("cache_write_5m_tokens", u.cache_write_5m_tokens),
        ("cache_write_1h_tokens", u.cache_write_1h_tokens),
        ("cache_read_tokens", u.cache_read_tokens),
        ("web_search_requests", u.web_search_requests),
        ("web_fetch_requests", u.web_fetch_requests),
    ] {
        if n != 0 {
            member(&mut out, &mut first, name);
            number(&mut out, n);
        }
    }
    for (name, text) in [
        ("service_tier", &u.service_tier),
        ("speed", &u.speed),
        ("inference_geo", &u.inference_geo),
    ] {
        if let Some(text) = text {
            member(&mut out, &mut first, name);
            string(&mut out, text);
        }
    }
    if !u.iterations.is_empty() {
        // Only answers that list their steps have them: serde's writer is fine for those.
        member(&mut out, &mut first, "iterations");
        let _ = serde_json::to_writer(&mut out, &u.iterations);
    }
    out.push(b'}');
    if !d.requested.is_empty() {
        out.extend_from_slice(b",\"requested\":");
        let _ = serde_json::to_writer(&mut out, &d.requested);
    }
    for (name, set) in [
        ("partial", d.partial),
        ("output_estimated", d.output_estimated),
        ("input_estimated", d.input_estimated),
    ] {
        if set {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":true");
        }
    }
    out.extend_from_slice(b",\"admitted_at\":");
    timestamp(&mut out, &d.admitted_at);
    if let Some(t) = &d.finished_at {
        out.extend_from_slice(b",\"finished_at\":");
        timestamp(&mut out, t);
    }
    for (name, value) in [
        ("upstream_request_id", &d.upstream_request_id),
        ("upstream_message_id", &d.upstream_message_id),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            string(&mut out, v);
        }
    }
    if let Some(status) = d.upstream_status {
        out.extend_from_slice(b",\"upstream_status\":");
        number(&mut out, u64::from(status));
    }
    out.push(b'}');
    out
}

fn route_name(r: Route) -> &'static str {
    match r {
        Route::AnthropicMessages => "anthropic_messages",
        Route::OpenaiChatCompletions => "openai_chat_completions",
    }
}

/// `"name":` inside an object, with the comma when a member came before.
fn member(out: &mut Vec<u8>, first: &mut bool, name: &str) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

pub fn number(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            // `n % 10` is a digit: the cast cannot truncate.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

/// Zero-padded to `width` digits (`value` has at most that many).
fn padded(out: &mut Vec<u8>, value: u32, width: u32) {
    let mut div = 10u32.pow(width.saturating_sub(1));
    while div > 0 {
        // A digit: the cast cannot truncate.
        out.push(b'0' + (value / div % 10) as u8);
        div /= 10;
    }
}

/// A JSON string as serde_json writes it: `"`, `\` and control characters escaped, the rest as is.
pub fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    // Ids, hashes and model names have nothing to escape.
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(b"00");
            for nibble in [b >> 4, b & 0xf] {
                out.push(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'));
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// RFC 3339 in UTC as chrono's serde writes it: `Z`, and a fraction of 3, 6 or 9 digits only when
/// the nanoseconds need it.
fn timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let (year, nanos) = (t.year(), t.nanosecond());
    // Years chrono writes with a sign, and leap seconds: rare enough for the general path.
    let (Ok(year @ 0..=9999), 0..=999_999_999) = (u32::try_from(year), nanos) else {
        use std::io::Write;
        let _ = write!(out, "\"{t:?}\"");
        return;
    };
    out.push(b'"');
    padded(out, year, 4);
    out.push(b'-');
    padded(out, t.month(), 2);
    out.push(b'-');
    padded(out, t.day(), 2);
    out.push(b'T');
    padded(out, t.hour(), 2);
    out.push(b':');
    padded(out, t.minute(), 2);
    out.push(b':');
    padded(out, t.second(), 2);
    if nanos != 0 {
        out.push(b'.');
        if nanos % 1_000_000 == 0 {
            padded(out, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            padded(out, nanos / 1_000, 6);
        } else {
            padded(out, nanos, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use metering::{Iteration, RequestedOptions, Usage};

    /// The reference: the same fields through serde, each left out at its default.
    #[derive(serde::Serialize)]
    struct Compact<'a> {
        debit_id: Uuid,
        key_hash: &'a str,
        account_id: Uuid,
        #[serde(skip_serializing_if = "is_default_route")]
        route: Route,
        model_requested: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        model_served: Option<&'a str>,
        usage: CompactUsage<'a>,
        #[serde(skip_serializing_if = "RequestedOptions::is_empty")]
        requested: &'a RequestedOptions,
        #[serde(skip_serializing_if = "is_false")]
        partial: bool,
        #[serde(skip_serializing_if = "is_false")]
        output_estimated: bool,
        #[serde(skip_serializing_if = "is_false")]
        input_estimated: bool,
        admitted_at: &'a DateTime<Utc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        finished_at: Option<&'a DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream_request_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream_message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        upstream_status: Option<u16>,
    }

    #[derive(serde::Serialize)]
    struct CompactUsage<'a> {
        #[serde(skip_serializing_if = "is_zero")]
        input_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        output_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        thinking_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        cache_write_5m_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        cache_write_1h_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        cache_read_tokens: u64,
        #[serde(skip_serializing_if = "is_zero")]
        web_search_requests: u64,
        #[serde(skip_serializing_if = "is_zero")]
        web_fetch_requests: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        service_tier: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        speed: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        inference_geo: Option<&'a str>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        iterations: &'a [metering::Iteration],
    }

    fn is_default_route(r: &Route) -> bool {
        *r == Route::default()
    }

    fn is_false(b: &bool) -> bool {
        !*b
    }

    fn is_zero(n: &u64) -> bool {
        *n == 0
    }

    fn reference(d: &Debit) -> Vec<u8> {
        let u = &d.usage;
        serde_json::to_vec(&Compact {
            debit_id: d.debit_id,
            key_hash: &d.key_hash,
            account_id: d.account_id,
            route: d.route,
            model_requested: &d.model_requested,
            model_served: d.model_served.as_deref(),
            usage: CompactUsage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                thinking_tokens: u.thinking_tokens,
                cache_write_5m_tokens: u.cache_write_5m_tokens,
                cache_write_1h_tokens: u.cache_write_1h_tokens,
                cache_read_tokens: u.cache_read_tokens,
                web_search_requests: u.web_search_requests,
                web_fetch_requests: u.web_fetch_requests,
                service_tier: u.service_tier.as_deref(),
                speed: u.speed.as_deref(),
                inference_geo: u.inference_geo.as_deref(),
                iterations: &u.iterations,
            },
            requested: &d.requested,
            partial: d.partial,
            output_estimated: d.output_estimated,
            input_estimated: d.input_estimated,
            admitted_at: &d.admitted_at,
            finished_at: d.finished_at.as_ref(),
            upstream_request_id: d.upstream_request_id.as_deref(),
            upstream_message_id: d.upstream_message_id.as_deref(),
            upstream_status: d.upstream_status,
        })
        .unwrap()
    }

    fn debit() -> Debit {
        Debit {
            debit_id: Uuid::from_u128(0x0190_aaaa_bbbb_7ccc_8ddd_eeee_ffff_0001),
            key_hash: "ab".repeat(32),
            account_id: Uuid::from_u128(2),
            route: Route::AnthropicMessages,
            model_requested: "claude-sonnet-4-5".into(),
            model_served: None,
            usage: Usage::default(),
            requested: RequestedOptions::default(),
            partial: false,
            output_estimated: false,
            input_estimated: false,
            admitted_at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            finished_at: None,
            upstream_request_id: None,
            upstream_message_id: None,
            upstream_status: Some(200),
        }
    }

    #[test]
    fn every_field_and_value_is_written_as_serde_writes_it() {
        let odd_text = "m \u{1} \u{1f} \u{7f} \n\r\t\u{8}\u{c} \"é\" \\ 𝄞 /";
        let with = |f: &dyn Fn(&mut Debit)| {
            let mut d = debit();
            f(&mut d);
            d
        };
        let mut cases = vec![
            debit(),
            with(&|d| d.route = Route::OpenaiChatCompletions),
            with(&|d| d.model_requested = odd_text.into()),
            with(&|d| d.model_served = Some(odd_text.into())),
            with(&|d| d.key_hash = String::new()),
            with(&|d| d.partial = true),
            with(&|d| d.output_estimated = true),
            with(&|d| d.input_estimated = true),
            with(&|d| {
                d.partial = true;
                d.output_estimated = true;
                d.input_estimated = true;
            }),
            with(&|d| d.upstream_request_id = Some(odd_text.into())),
            with(&|d| d.upstream_message_id = Some("msg_1".into())),
            with(&|d| d.upstream_status = None),
            with(&|d| d.upstream_status = Some(u16::MAX)),
            with(&|d| d.usage.service_tier = Some("priority".into())),
            with(&|d| {
                d.usage = Usage {
                    input_tokens: 1,
                    output_tokens: 20,
                    thinking_tokens: 300,
                    cache_write_5m_tokens: 4_000,
                    cache_write_1h_tokens: 50_000,
                    cache_read_tokens: 600_000,
                    web_search_requests: 7,
                    web_fetch_requests: u64::MAX,
                    service_tier: Some(String::new()),
                    speed: Some("fast".into()),
                    inference_geo: Some(odd_text.into()),
                    iterations: vec![
                        Iteration {
                            kind: "compaction".into(),
                            input_tokens: 5,
                            output_tokens: 6,
                            ..Iteration::default()
                        },
                        Iteration {
                            kind: "advisor_message".into(),
                            model: Some(odd_text.into()),
                            cache_write_1h_tokens: 7,
                            cache_read_tokens: u64::MAX,
                            ..Iteration::default()
                        },
                    ],
                }
            }),
            with(&|d| d.usage.speed = Some("standard".into())),
            with(&|d| d.usage.inference_geo = Some("us".into())),
            with(&|d| d.requested.speed = Some("fast".into())),
            with(&|d| d.requested.inference_geo = Some(odd_text.into())),
            with(&|d| d.requested.code_execution = true),
            with(&|d| d.usage.cache_read_tokens = 10),
        ];
        // Each usage count alone, so that the commas between members are checked everywhere.
        for i in 0..8 {
            cases.push(with(&|d| {
                let u = &mut d.usage;
                let counts = [
                    &mut u.input_tokens,
                    &mut u.output_tokens,
                    &mut u.thinking_tokens,
                    &mut u.cache_write_5m_tokens,
                    &mut u.cache_write_1h_tokens,
                    &mut u.cache_read_tokens,
                    &mut u.web_search_requests,
                    &mut u.web_fetch_requests,
                ];
                for (j, c) in counts.into_iter().enumerate() {
                    *c = if j == i { 9 } else { 0 };
                }
            }));
        }
        // Timestamps: whole seconds, the three fraction widths, the edges of the 4-digit years,
        // a leap second, years chrono writes with a sign.
        let instants = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_800_000_000, 5_000_000).unwrap(),
            Utc.timestamp_opt(1_800_000_000, 120_000).unwrap(),
            Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(1_800_000_000, 1).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        for t in instants {
            cases.push(with(&|d| d.admitted_at = t));
            cases.push(with(&|d| d.finished_at = Some(t)));
        }
        for d in &cases {
            let ours = encode(d);
            assert_eq!(
                String::from_utf8(ours.clone()).unwrap(),
                String::from_utf8(reference(d)).unwrap()
            );
            let back: Debit = serde_json::from_slice(&ours).unwrap();
            assert_eq!(&back, d);
        }
    }

    #[test]
    fn numbers_are_written_in_full() {
        for n in [0, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
