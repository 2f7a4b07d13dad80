//! The JSON scanner under the meters.

use super::*;

/// Every event as a line of text, for comparing runs.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    capture_all: bool,
}

fn path_text(path: Path<'_>) -> String {
    path.frames()
        .iter()
        .map(|f| match f {
            metering::json::Frame::Object(k) => format!(".{}", k.as_str().unwrap_or("<long>")),
            metering::json::Frame::Array(i) => format!("[{i}]"),
        })
        .collect()
}

impl JsonSink for Recorder {
    fn capture_string(&mut self, _path: Path<'_>) -> bool {
        self.capture_all
    }
    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        self.events.push(format!("{} = {value:?}", path_text(path)));
    }
    fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
        self.events
            .push(format!("{} close {container:?} at {offset}", path_text(path)));
    }
}

fn scan_with(body: &[u8], limits: Limits, split: usize) -> (Vec<String>, Result<(), MeterError>) {
    let mut scanner = JsonScanner::new(limits);
    let mut sink = Recorder {
        capture_all: true,
        ..Recorder::default()
    };
    let mut result = Ok(());
    for chunk in body.chunks(split.max(1)) {
        result = result.and_then(|()| scanner.feed(chunk, &mut sink));
    }
    let result = result.and_then(|()| scanner.finish(&mut sink));
    (sink.events, result)
}

/// Scans whole and byte by byte; both must agree.
fn scan(body: &[u8]) -> (Vec<String>, Result<(), MeterError>) {
    let whole = scan_with(body, Limits::default(), body.len());
    assert_eq!(
        scan_with(body, Limits::default(), 1),
        whole,
        "byte by byte differs"
    );
    whole
}

#[test]
fn json_scanner_reports_every_value_with_its_path() {
    let body = br#" {"a": [1, -2, 3.5, 1e2, true, false, null, "s\u00e9\ud83c\udf0d\n"], "b": {"": 0}} "#;
    let at = |needle: &[u8]| body.windows(needle.len()).position(|w| w == needle).unwrap();
    let close_a = format!(".a close Array at {}", at(b"]"));
    let close_b = format!(".b close Object at {}", at(b"}}"));
    let close_root = format!(" close Object at {}", at(b"} "));
    let (events, result) = scan(body);
    assert_eq!(result, Ok(()));
    assert_eq!(
        events,
        [
            " = Object",
            ".a = Array",
            ".a[0] = Number(Integer(1))",
            ".a[1] = Number(Negative)",
            ".a[2] = Number(NotInteger)",
            ".a[3] = Number(NotInteger)",
            ".a[4] = Bool(true)",
            ".a[5] = Bool(false)",
            ".a[6] = Null",
            ".a[7] = String(Text { captured: Some(\"sé🌍\\n\"), truncated: false, control: true, len: 8 })",
            close_a.as_str(),
            ".b = Object",
            ".b. = Number(Integer(0))",
            close_b.as_str(),
            close_root.as_str(),
        ]
    );
}

#[test]
fn json_scanner_number_at_the_root_is_reported_at_finish() {
    assert_eq!(
        scan(b"18446744073709551615").0,
        [" = Number(Integer(18446744073709551615))"]
    );
    assert_eq!(scan(b"18446744073709551616").0, [" = Number(TooLarge)"]);
    assert_eq!(scan(b"0 ").0, [" = Number(Integer(0))"]);
    assert_eq!(
        scan(b"-").1,
        Err(MeterError::Syntax {
            offset: 1,
            reason: "unexpected end of input"
        })
    );
}

#[test]
fn json_scanner_checks_a_number_s_grammar_not_its_magnitude() {
    // RFC 8259 grammar, whatever an f64 could hold: such a number is never a token count.
    for body in ["1e501", "-1e999", "1e-99999", "[1E+400, 0.5e0001]"] {
        let (events, result) = scan(body.as_bytes());
        assert_eq!(result, Ok(()), "{body}");
        assert!(
            events.iter().all(|e| !e.contains("Integer(")),
            "{body}: {events:?}"
        );
    }
    assert_eq!(scan(b"1e501").0, [" = Number(NotInteger)"]);
    assert_eq!(
        Value::Number(Number::NotInteger).count(),
        Some(Err("not an integer"))
    );
}

#[test]
fn json_scanner_rejects_invalid_strings_with_the_offset() {
    let cases: [(&[u8], u64, &str); 12] = [
        (b"\"a\x01\"", 2, "control character in string"),
        (b"\"\\x\"", 2, "invalid escape in string"),
        (b"\"\\u12G4\"", 5, "invalid hex digit in \\u escape"),
        (b"\"\\udc00\"", 6, "unpaired surrogate in \\u escape"),
        (b"\"\\ud800\"", 7, "unpaired surrogate in \\u escape"),
        (b"\"\\ud800\\u0041\"", 12, "unpaired surrogate in \\u escape"),
        (b"\"\xc0\x80\"", 1, "invalid UTF-8 in string"),
        (b"\"\xed\xa0\x80\"", 2, "invalid UTF-8 in string"),
        (b"\"\xf4\x90\x80\x80\"", 2, "invalid UTF-8 in string"),
        (b"\"\xf5\"", 1, "invalid UTF-8 in string"),
        (b"\"\xe2\x82\"", 3, "invalid UTF-8 in string"),
        (b"\"\x80\"", 1, "invalid UTF-8 in string"),
    ];
    for (body, offset, reason) in cases {
        assert_eq!(
            scan(body).1,
            Err(MeterError::Syntax { offset, reason }),
            "{body:?}"
        );
    }
    assert_eq!(scan("\"\u{7f}\u{10ffff}\u{800}\"".as_bytes()).1, Ok(()));
}

#[test]
fn json_scanner_rejects_non_rfc_8259_syntax() {
    for body in [
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "[1,]",
        "[,1]",
        "{,}",
        "[1 2]",
        "01",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "NaN",
        "Infinity",
        "'a'",
        "[}",
        "{]",
        "{\"a\":}",
        "nul",
        "truex",
        "[1]]",
        "\"a",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(scan(body.as_bytes()).1, Err(MeterError::Syntax { .. })),
            "{body:?} accepted"
        );
    }
}

#[test]
fn json_scanner_keys_longer_than_64_bytes_match_nothing() {
    let key64 = "k".repeat(64);
    let key65 = "k".repeat(65);
    let (events, _) = scan(format!(r#"{{"{key64}":1,"{key65}":2}}"#).as_bytes());
    assert_eq!(events[1], format!(".{key64} = Number(Integer(1))"));
    assert_eq!(events[2], ".<long> = Number(Integer(2))");
}

#[test]
fn json_scanner_capture_stops_at_a_character_boundary_and_still_counts_the_length() {
    let text = format!("{}é", "a".repeat(255));
    let (events, _) = scan(format!("\"{text}\"").as_bytes());
    let expected = Value::String(metering::json::Text {
        captured: Some(&text[..255]),
        truncated: true,
        control: false,
        len: 257,
    });
    assert_eq!(events, [format!(" = {expected:?}")]);
}

#[test]
fn json_scanner_nesting_limit_is_configurable_and_exact() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(scan_with(b"[[[]]]", limits, 1).1, Ok(()));
    assert_eq!(
        scan_with(b"[[[[]]]]", limits, 1).1,
        Err(MeterError::TooDeep { limit: 3 })
    );
    let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(scan(deep.as_bytes()).1, Ok(()));
    let deeper = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(scan(deeper.as_bytes()).1, Err(MeterError::TooDeep { limit: 64 }));
}

#[test]
fn json_scanner_reset_starts_a_new_document_and_errors_are_sticky_until_then() {
    let mut scanner = JsonScanner::default();
    let mut sink = Recorder::default();
    assert!(scanner.feed(b"{x", &mut sink).is_err());
    assert_eq!(
        scanner.feed(b"}", &mut sink),
        Err(MeterError::Syntax {
            offset: 1,
            reason: "expected a string key"
        })
    );
    scanner.reset();
    assert_eq!(scanner.feed(b"[7]", &mut sink), Ok(()));
    assert_eq!(scanner.finish(&mut sink), Ok(()));
    assert_eq!(sink.events.last().map(String::as_str), Some(" close Array at 2"));
    assert!(matches!(Value::Number(Number::Integer(7)).count(), Some(Ok(7))));
}
