//! Property tests of the incremental parsers: for generated bodies (varied counts, content,
//! key order, whitespace, escapes, line endings) every split into chunks, byte-at-a-time
//! feeding and the whole body give the same result; arbitrary bytes never panic; the JSON
//! meter agrees with serde_json on what the usage is and the scanner on what is JSON.
#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use metering::anthropic::{AnthropicJsonMeter, AnthropicSseMeter};
use metering::json::{JsonScanner, JsonSink, Path, Value};
use metering::openai::{OpenAiJsonMeter, OpenAiSseMeter};
use metering::request::RequestMeter;
use metering::{MeterError, Metered};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Feeding

trait Meter {
    type Output: PartialEq + std::fmt::Debug;
    fn start() -> Self;
    fn push(&mut self, chunk: &[u8]);
    fn end(self) -> Self::Output;
}

macro_rules! meter {
    ($($t:ty),*) => {$(
        impl Meter for $t {
            type Output = (Metered, Result<Metered, MeterError>);
            fn start() -> Self { <$t>::new() }
            fn push(&mut self, chunk: &[u8]) { self.feed(chunk) }
            fn end(self) -> Self::Output { (self.best_effort(), self.finish()) }
        }
    )*};
}
meter!(
    AnthropicJsonMeter,
    AnthropicSseMeter,
    OpenAiJsonMeter,
    OpenAiSseMeter
);

impl Meter for RequestMeter {
    type Output = (
        bool,
        Result<metering::request::RequestFields, metering::request::RequestError>,
    );
    fn start() -> Self {
        RequestMeter::new()
    }
    fn push(&mut self, chunk: &[u8]) {
        self.feed(chunk)
    }
    fn end(self) -> Self::Output {
        (self.is_complete(), self.finish())
    }
}

fn whole<M: Meter>(body: &[u8]) -> M::Output {
    let mut m = M::start();
    m.push(body);
    m.end()
}

fn chunked<M: Meter>(body: &[u8], cuts: &[Index]) -> M::Output {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    at.sort_unstable();
    let mut m = M::start();
    let mut from = 0;
    for to in at.into_iter().chain([body.len()]) {
        m.push(&body[from..to]);
        from = to;
    }
    m.end()
}

fn bytewise<M: Meter>(body: &[u8]) -> M::Output {
    let mut m = M::start();
    for b in body {
        m.push(std::slice::from_ref(b));
    }
    m.end()
}

/// The whole body and a prefix of it (a cut stream): chunked and byte by byte equal whole.
fn check_splits<M: Meter>(body: &[u8], cuts: &[Index], cut: Index) -> Result<(), TestCaseError> {
    let prefix = &body[..cut.index(body.len() + 1)];
    for input in [body, prefix] {
        let expected = whole::<M>(input);
        prop_assert_eq!(&chunked::<M>(input, cuts), &expected);
        prop_assert_eq!(&bytewise::<M>(input), &expected);
    }
    Ok(())
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..=4)
}

#[path = "parser_props/bodies.rs"]
mod bodies;
#[path = "parser_props/render.rs"]
mod render;

use bodies::*;
use render::{render, style, JSON_SPACE, SSE_SPACE};

// ---------------------------------------------------------------------------------------------
// Properties

/// Ignores every event: the differential property compares acceptance only.
struct Nothing;
impl JsonSink for Nothing {
    fn value(&mut self, _path: Path<'_>, _value: Value<'_>) {}
}

/// Pieces of JSON, valid and not, for the scanner to agree with serde_json on.
fn json_token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"a\"",
        "\"\\u00e9\"",
        "\"\\ud83c\\udf0d\"",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"é\"",
        "\"\\q\"",
        "\"",
        "\\",
        "1",
        "-0",
        "0.5",
        "1e5",
        "01",
        "-",
        "2.",
        "true",
        "nul",
        "null",
        "\u{1}",
        "\n",
        "\u{feff}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn anthropic_json_any_split_equals_whole_and_serde_json(msg in anthropic_message(), style in style(JSON_SPACE), cuts in cuts(), cut in any::<Index>()) {
        let body = render(&msg, &style);
        check_splits::<AnthropicJsonMeter>(body.as_bytes(), &cuts, cut)?;
        let (best, result) = whole::<AnthropicJsonMeter>(body.as_bytes());
        let expected = expected_usage(&body).unwrap();
        let mut lenient = expected.clone();
        lenient.thinking_tokens = lenient.thinking_tokens.min(lenient.output_tokens);
        if best.output_estimated {
            prop_assert_eq!(best.usage.input_tokens, expected.input_tokens);
        } else {
            prop_assert_eq!(&best.usage, &lenient);
        }
        if let Ok(metered) = result {
            prop_assert!(metered.output_estimated || metered.usage == expected);
            prop_assert!(metered.usage.validate().is_ok());
        }
    }

    #[test]
    fn anthropic_sse_any_split_equals_whole(events in anthropic_stream(), style in style(SSE_SPACE), eol in eol(), named in any::<bool>(), cuts in cuts(), cut in any::<Index>()) {
        let body = render_sse(&events, &style, eol, named);
        check_splits::<AnthropicSseMeter>(body.as_bytes(), &cuts, cut)?;
    }

    #[test]
    fn openai_json_any_split_equals_whole(body in openai_completion(), style in style(JSON_SPACE), cuts in cuts(), cut in any::<Index>()) {
        check_splits::<OpenAiJsonMeter>(render(&body, &style).as_bytes(), &cuts, cut)?;
    }

    #[test]
    fn openai_sse_any_split_equals_whole(events in openai_stream(), style in style(SSE_SPACE), eol in eol(), cuts in cuts(), cut in any::<Index>()) {
        let body = render_sse(&events, &style, eol, false);
        check_splits::<OpenAiSseMeter>(body.as_bytes(), &cuts, cut)?;
        let (_, result) = whole::<OpenAiSseMeter>(body.as_bytes());
        if let Ok(metered) = result {
            prop_assert!(metered.usage.validate().is_ok());
        }
    }

    #[test]
    fn request_any_split_equals_whole(body in request_body(), style in style(JSON_SPACE), cuts in cuts(), cut in any::<Index>()) {
        check_splits::<RequestMeter>(render(&body, &style).as_bytes(), &cuts, cut)?;
    }

    #[test]
    fn request_price_fields_agree_with_serde_json(body in request_body(), style in style(JSON_SPACE)) {
        let text = render(&body, &style);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (_, fields) = whole::<RequestMeter>(text.as_bytes());
        let fields = fields.unwrap();
        let text_at = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        prop_assert_eq!(&fields.speed, &text_at("speed"));
        prop_assert_eq!(&fields.inference_geo, &text_at("inference_geo"));
        let fallbacks: Vec<String> = doc
            .get("fallbacks")
            .and_then(|f| f.as_array())
            .map(|f| {
                f.iter()
                    .filter_map(|e| e.as_str().or_else(|| e.get("model")?.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(&fields.fallbacks, &fallbacks);
        let tools = doc.get("tools").and_then(|t| t.as_array()).cloned().unwrap_or_default();
        let kind = |t: &serde_json::Value| t.get("type").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        prop_assert_eq!(
            &fields.tools.code_execution,
            &tools.iter().map(kind).find(|k| k.starts_with("code_execution"))
        );
        prop_assert_eq!(
            fields.tools.free_container,
            tools.iter().map(kind).any(|k| k == "web_search_20260209" || k == "web_fetch_20260209")
        );
        let advisors: Vec<String> = tools
            .iter()
            .filter(|t| kind(t).starts_with("advisor"))
            .filter_map(|t| t.get("model")?.as_str().map(str::to_owned))
            .collect();
        prop_assert_eq!(&fields.tools.advisor_models, &advisors);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_splits_agree(bytes in prop::collection::vec(any::<u8>(), 0..512), cuts in cuts(), cut in any::<Index>()) {
        check_splits::<AnthropicJsonMeter>(&bytes, &cuts, cut)?;
        check_splits::<AnthropicSseMeter>(&bytes, &cuts, cut)?;
        check_splits::<OpenAiJsonMeter>(&bytes, &cuts, cut)?;
        check_splits::<OpenAiSseMeter>(&bytes, &cuts, cut)?;
        check_splits::<RequestMeter>(&bytes, &cuts, cut)?;
    }

    #[test]
    fn sse_shaped_noise_never_panics_and_splits_agree(parts in prop::collection::vec(prop::sample::select(vec![
        "data: ", "data:", "event: message_delta", ":", "\n", "\r", "\r\n", "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":",
        "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":", "5}}", "}", "[DONE]", "{\"usage\":{\"prompt_tokens\":3}}", "\u{feff}",
    ]), 0..40), cuts in cuts(), cut in any::<Index>()) {
        let body = parts.concat();
        check_splits::<AnthropicSseMeter>(body.as_bytes(), &cuts, cut)?;
        check_splits::<OpenAiSseMeter>(body.as_bytes(), &cuts, cut)?;
    }

    #[test]
    fn json_scanner_accepts_exactly_what_serde_json_accepts(tokens in prop::collection::vec(json_token(), 0..30)) {
        let body = tokens.concat();
        let mut scanner = JsonScanner::default();
        let ours = scanner.feed(body.as_bytes(), &mut Nothing).and_then(|()| scanner.finish(&mut Nothing));
        // serde_json also refuses a number too big for an f64 ("1e5" followed by "01" is 1e501);
        // RFC 8259 leaves magnitude to implementations and the scanner checks only the grammar
        // (it classifies numbers, it never converts them). A negative exponent has the same
        // grammar and serde_json never refuses it (it rounds to zero), so the oracle reads that.
        let oracle = body.replace("1e5", "1e-5");
        let theirs = serde_json::from_str::<serde_json::Value>(&oracle);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?}: ours {:?}, serde_json on {:?}: {:?}", body, ours, oracle, theirs);
    }
}
