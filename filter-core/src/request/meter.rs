//! Response metering for one exchange: the meter is picked by route and content type, fed every
//! chunk as it passes (nothing buffered), and finalised once.

use metering::anthropic::{AnthropicJsonMeter, AnthropicSseMeter};
use metering::openai::{OpenAiJsonMeter, OpenAiSseMeter};
use metering::wire::Route;
use metering::Metered;

// One per metered response, boxed by its owner: the size spread between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ResponseMeter {
    AnthropicJson(AnthropicJsonMeter),
    AnthropicSse(AnthropicSseMeter),
    OpenAiJson(OpenAiJsonMeter),
    OpenAiSse(OpenAiSseMeter),
}

/// `text/event-stream` (any parameters, any case) is a stream; anything else is read as JSON,
/// which the meter refuses gracefully (billed as partial) when it is not.
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

impl ResponseMeter {
    pub fn for_response(route: Route, content_type: Option<&str>) -> Self {
        match (route, is_event_stream(content_type)) {
            (Route::AnthropicMessages, false) => Self::AnthropicJson(AnthropicJsonMeter::new()),
            (Route::AnthropicMessages, true) => Self::AnthropicSse(AnthropicSseMeter::new()),
            (Route::OpenaiChatCompletions, false) => Self::OpenAiJson(OpenAiJsonMeter::new()),
            (Route::OpenaiChatCompletions, true) => Self::OpenAiSse(OpenAiSseMeter::new()),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Self::AnthropicJson(m) => m.feed(chunk),
            Self::AnthropicSse(m) => m.feed(chunk),
            Self::OpenAiJson(m) => m.feed(chunk),
            Self::OpenAiSse(m) => m.feed(chunk),
        }
    }

    /// The body ended normally: its usage, or the best effort marked partial when the body did
    /// not carry a complete usage.
    pub fn finish(self) -> Metered {
        let (result, fallback) = match self {
            Self::AnthropicJson(m) => (m.best_effort(), m.finish()),
            Self::AnthropicSse(m) => (m.best_effort(), m.finish()),
            Self::OpenAiJson(m) => (m.best_effort(), m.finish()),
            Self::OpenAiSse(m) => (m.best_effort(), m.finish()),
        };
        match fallback {
            Ok(metered) => metered,
            Err(_) => Metered {
                partial: true,
                ..result
            },
        }
    }

    /// The stream was cut (no end of stream seen): what was reported so far, marked partial.
    pub fn cut(&self) -> Metered {
        let metered = match self {
            Self::AnthropicJson(m) => m.best_effort(),
            Self::AnthropicSse(m) => m.best_effort(),
            Self::OpenAiJson(m) => m.best_effort(),
            Self::OpenAiSse(m) => m.best_effort(),
        };
        Metered {
            partial: true,
            ..metered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_content_type_is_recognised_with_parameters() {
        assert!(is_event_stream(Some("text/event-stream")));
        assert!(is_event_stream(Some("Text/Event-Stream; charset=utf-8")));
        assert!(!is_event_stream(Some("application/json")));
        assert!(!is_event_stream(None));
    }

    const JSON: &str = r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-5-20250929",
        "content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":12,"output_tokens":7}}"#;

    #[test]
    fn anthropic_json_fed_in_small_chunks_is_metered() {
        let mut m = ResponseMeter::for_response(Route::AnthropicMessages, Some("application/json"));
        for chunk in JSON.as_bytes().chunks(3) {
            m.feed(chunk);
        }
        let metered = m.finish();
        assert_eq!((metered.usage.input_tokens, metered.usage.output_tokens), (12, 7));
        assert!(!metered.partial);
        assert_eq!(metered.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn cut_anthropic_stream_is_partial_with_the_input_reported() {
        let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\
            \"model\":\"claude-x\",\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n";
        let mut m = ResponseMeter::for_response(Route::AnthropicMessages, Some("text/event-stream"));
        m.feed(sse.as_bytes());
        let metered = m.cut();
        assert!(metered.partial);
        assert_eq!(metered.usage.input_tokens, 30);
    }

    #[test]
    fn garbage_body_is_billed_as_partial_not_a_panic() {
        let mut m = ResponseMeter::for_response(Route::OpenaiChatCompletions, Some("application/json"));
        m.feed(b"\xff\x00<html>nope");
        assert!(m.finish().partial);
    }

    #[test]
    fn openai_stream_usage_chunk_is_metered() {
        let sse =
            "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
            data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\
            \"completion_tokens\":4,\"total_tokens\":13}}\n\ndata: [DONE]\n\n";
        let mut m = ResponseMeter::for_response(Route::OpenaiChatCompletions, Some("text/event-stream"));
        m.feed(sse.as_bytes());
        let metered = m.finish();
        assert_eq!((metered.usage.input_tokens, metered.usage.output_tokens), (9, 4));
    }
}
