//! Request bodies.

use super::*;

fn read_request(body: &str) -> (Result<metering::request::RequestFields, RequestError>, bool) {
    let mut whole = RequestMeter::new();
    whole.feed(body.as_bytes());
    let mut bytewise = RequestMeter::new();
    for b in body.as_bytes() {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(bytewise.fields(), whole.fields());
    let complete = whole.is_complete();
    let result = whole.finish();
    assert_eq!(bytewise.finish(), result);
    (result, complete)
}

#[test]
fn request_model_after_a_huge_messages_array_is_read_and_nested_model_keys_ignored() {
    let filler = "x".repeat(1024);
    let messages: Vec<Json> = (0..300)
        .map(|i| json!({"role": "user", "content": [{"type": "text", "text": filler, "model": "claude-haiku-4-5"}], "i": i}))
        .collect();
    let body = format!(
        r#"{{"messages": {}, "tools": [{{"name": "t", "input_schema": {{"model": {{"type": "string"}}, "stream": true}}}}], "max_tokens": 1024, "stream": true, "model": "claude-opus-4-1"}}"#,
        serde_json::to_string(&messages).unwrap()
    );
    let (result, complete) = read_request(&body);
    let fields = result.unwrap();
    assert!(complete);
    assert_eq!(fields.model.as_deref(), Some("claude-opus-4-1"));
    assert_eq!(fields.stream, Some(true));
    assert_eq!(fields.max_tokens, Some(1024));
    assert_eq!(fields.stream_options, None);
    assert_eq!(fields.members, 5);
    assert_eq!(fields.closing_brace, Some(body.len() as u64 - 1));
}

#[test]
fn request_reports_stream_options_and_the_closing_brace_for_injection() {
    let body = r#"{"model":"gpt-4o","stream":true,"max_completion_tokens":50,"stream_options":{"include_usage":false}}  "#;
    let fields = read_request(body).0.unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: true,
            include_usage: Some(false)
        })
    );
    assert_eq!(fields.max_completion_tokens, Some(50));
    assert_eq!(fields.closing_brace, Some(body.rfind('}').unwrap() as u64));

    let fields = read_request(r#"{"stream_options":null,"model":"m"}"#).0.unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: false,
            include_usage: None
        })
    );
    let fields = read_request(r#"{"stream_options":{"include_usage":true},"stream_options":{}}"#)
        .0
        .unwrap();
    assert_eq!(
        fields.stream_options,
        Some(StreamOptions {
            is_object: true,
            include_usage: None
        })
    );
    let fields = read_request(" {} ").0.unwrap();
    assert_eq!(
        (fields.members, fields.closing_brace, fields.model),
        (0, Some(2), None)
    );
}

#[test]
fn request_fields_of_the_wrong_type_read_as_absent() {
    let fields = read_request(r#"{"model":"m","stream":"true","max_tokens":-1,"max_completion_tokens":1.5}"#)
        .0
        .unwrap();
    assert_eq!(
        (fields.stream, fields.max_tokens, fields.max_completion_tokens),
        (None, None, None)
    );
}

#[test]
fn request_errors_are_values_for_a_400() {
    let long_model = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    let cases: Vec<(&str, RequestError)> = vec![
        (r#"{"model": 5}"#, RequestError::ModelNotString),
        (r#"{"model": null}"#, RequestError::ModelNotString),
        (r#"{"model": ["claude-opus-4-1"]}"#, RequestError::ModelNotString),
        (&long_model, RequestError::ModelTooLong { limit: 256 }),
        (r#"["model", "claude"]"#, RequestError::NotAnObject),
        (r#""claude""#, RequestError::NotAnObject),
        (
            "",
            RequestError::Json(MeterError::Syntax {
                offset: 0,
                reason: "no JSON value",
            }),
        ),
        (
            r#"{"model": "a"} x"#,
            RequestError::Json(MeterError::Syntax {
                offset: 15,
                reason: "trailing characters after the JSON value",
            }),
        ),
        (
            r#"{"model": "a""#,
            RequestError::Json(MeterError::Syntax {
                offset: 13,
                reason: "unexpected end of input",
            }),
        ),
    ];
    for (body, error) in cases {
        let (result, complete) = read_request(body);
        assert_eq!(result, Err(error), "{body}");
        assert!(!complete);
    }
    let exact = format!(r#"{{"model":"{}"}}"#, "m".repeat(256));
    assert_eq!(read_request(&exact).0.unwrap().model.map(|m| m.len()), Some(256));
}

#[test]
fn request_meter_says_when_the_body_is_incomplete() {
    let mut meter = RequestMeter::new();
    meter.feed(br#"{"model":"claude-opus-4-1","messages":[{"#);
    assert_eq!(meter.fields().model.as_deref(), Some("claude-opus-4-1"));
    assert!(!meter.is_complete() && meter.error().is_none());
    meter.feed(b"}]}");
    assert!(meter.is_complete());
}
