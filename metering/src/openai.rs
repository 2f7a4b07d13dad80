//! Meters for OpenAI-compatible chat completion responses: [`OpenAiJsonMeter`] for a JSON body,
//! [`OpenAiSseMeter`] for a stream of `chat.completion.chunk` events ended by `data: [DONE]`.
//!
//! Mapping (the contract's billing rules): input = `usage.prompt_tokens` minus
//! `usage.prompt_tokens_details.cached_tokens` (more cached than prompt tokens is
//! [`MeterError::BadCount`], never a negative count), cache reads = `cached_tokens`, output =
//! `usage.completion_tokens`, thinking = `usage.completion_tokens_details.reasoning_tokens`;
//! `model`, `id` and `service_tier` from the root. Paths, duplicates, nulls, bad counts, the
//! output estimate and the `feed`/`finish`/`best_effort` contract are as in
//! [`anthropic`](crate::anthropic).
//!
//! Memory bound: the JSON scanner (under 5 KiB), the meter itself (under 1 KiB), at most six
//! captured strings of 256 bytes (`model`, `id`, `service_tier`, in the chunk being read and in
//! the stream so far) and the SSE framer's 256 bytes: under 8 KiB per meter.

use crate::anthropic::{reported, ContentSeen};
use crate::json::{CountFields, JsonSink, Path, Step, Value};
use crate::meter::{Body, JsonMeter, SseMeter, Stream};
use crate::sse::{EventMeter, StreamEnd};
use crate::usage::{MeterError, Metered, Usage};

const PROMPT: usize = 0;
const COMPLETION: usize = 1;
const CACHED: usize = 2;
const REASONING: usize = 3;

static USAGE_PATHS: [&[&str]; 4] = [
    &["prompt_tokens"],
    &["completion_tokens"],
    &["prompt_tokens_details", "cached_tokens"],
    &["completion_tokens_details", "reasoning_tokens"],
];

const MODEL: &[&str] = &["model"];
const ID: &[&str] = &["id"];
const SERVICE_TIER: &[&str] = &["service_tier"];
const USAGE: &[&str] = &["usage"];
const ERROR: &[&str] = &["error"];
const CHOICES: &[&str] = &["choices"];

/// What a completion object (a JSON response, or one chunk of a stream) says. `message` is
/// where a choice keeps its content: `message` in a response, `delta` in a chunk.
#[derive(Clone, Debug)]
pub struct CompletionFields<const CHUNK: bool> {
    model: Option<String>,
    id: Option<String>,
    service_tier: Option<String>,
    usage: CountFields<4>,
    usage_present: bool,
    error_present: bool,
    content: ContentSeen,
}

impl<const CHUNK: bool> Default for CompletionFields<CHUNK> {
    fn default() -> Self {
        CompletionFields {
            model: None,
            id: None,
            service_tier: None,
            usage: CountFields::new(&USAGE_PATHS),
            usage_present: false,
            error_present: false,
            content: ContentSeen::default(),
        }
    }
}

impl<const CHUNK: bool> CompletionFields<CHUNK> {
    const MESSAGE: &'static str = if CHUNK { "delta" } else { "message" };

    fn content_path(path: Path<'_>, field: &str) -> bool {
        path.matches(&[
            Step::Key("choices"),
            Step::AnyIndex,
            Step::Key(Self::MESSAGE),
            Step::Key(field),
        ])
    }

    fn tool_arguments_path(path: Path<'_>) -> bool {
        path.matches(&[
            Step::Key("choices"),
            Step::AnyIndex,
            Step::Key(Self::MESSAGE),
            Step::Key("tool_calls"),
            Step::AnyIndex,
            Step::Key("function"),
            Step::Key("arguments"),
        ])
    }

    /// The usage reported, with invalid fields read as absent, and the first invalid field.
    fn resolve(&self) -> (Usage, Option<MeterError>) {
        let count = |field| self.usage.count(field).unwrap_or(0);
        let (prompt, cached) = (count(PROMPT), count(CACHED));
        let error = self.usage.first_error("usage.").or_else(|| {
            (cached > prompt).then(|| MeterError::BadCount {
                field: "usage.prompt_tokens_details.cached_tokens".to_owned(),
                reason: "greater than prompt_tokens, which includes it",
            })
        });
        let usage = Usage {
            input_tokens: prompt.saturating_sub(cached),
            cache_read_tokens: cached,
            output_tokens: count(COMPLETION),
            thinking_tokens: count(REASONING),
            service_tier: self.service_tier.clone(),
            ..Usage::default()
        };
        (usage, error)
    }

    fn outcome(&self, complete: bool) -> (Metered, Option<MeterError>) {
        let (usage, error) = self.resolve();
        // An invalid count is an error for `finish`, and leaves `best_effort` to estimate.
        let output = self.usage.count(COMPLETION).is_some();
        let (model, id) = (self.model.clone(), self.id.clone());
        (
            reported(usage, output, &self.content, model, id, !complete || !output),
            error,
        )
    }
}

impl<const CHUNK: bool> JsonSink for CompletionFields<CHUNK> {
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        path.is(MODEL) || path.is(ID) || path.is(SERVICE_TIER)
    }

    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        if path.is(MODEL) {
            self.model = value.text().map(str::to_owned);
        } else if path.is(ID) {
            self.id = value.text().map(str::to_owned);
        } else if path.is(SERVICE_TIER) {
            self.service_tier = value.text().map(str::to_owned);
        } else if path.is(ERROR) {
            self.error_present = value != Value::Null;
        } else if path.is(CHOICES) {
            self.content = ContentSeen::default();
        } else if let Some(rel) = path.strip_prefix(USAGE) {
            if rel.depth() == 0 {
                self.usage_present = value == Value::Object;
            }
            self.usage.record(rel, &value);
        } else if let Value::String(text) = value {
            if Self::content_path(path, "content") || Self::tool_arguments_path(path) {
                self.content.add_text(text.len);
            } else if Self::content_path(path, "reasoning_content") {
                self.content.add_thinking(text.len);
            }
        }
    }
}

/// Meters a non-streaming chat completion body; `finish` answers an error for a body that is
/// not one complete JSON document, as [`AnthropicJsonMeter`](crate::anthropic::AnthropicJsonMeter)
/// does. Without `usage.completion_tokens` the result is partial, its output estimated from
/// the choices' content.
pub type OpenAiJsonMeter = JsonMeter<CompletionFields<false>>;

impl Body for CompletionFields<false> {
    fn metered(&self, complete: bool) -> (Metered, Option<MeterError>) {
        self.outcome(complete)
    }
}

/// Meters a streaming chat completion: the chunks' `model` and `id`, the usage of the last
/// chunk that has one (with `stream_options.include_usage`, a final chunk with empty `choices`),
/// content sizes for the estimate, and `data: [DONE]`. Partial without `[DONE]`, without a
/// usage, after an `error` chunk, or when the stream ended inside an event.
pub type OpenAiSseMeter = SseMeter<OpenAiStream>;

/// What the chunks of a chat completion stream applied so far say.
#[derive(Clone, Debug, Default)]
pub struct OpenAiStream {
    /// Model, id and tier as the chunks last gave them, the last usage reported, and all content.
    summary: CompletionFields<true>,
    done: bool,
    error_chunk: bool,
}

impl EventMeter for OpenAiStream {
    type Event = CompletionFields<true>;

    const SENTINEL: Option<&'static [u8]> = Some(b"[DONE]");

    fn apply(&mut self, chunk: &CompletionFields<true>) {
        let summary = &mut self.summary;
        for (mine, theirs) in [
            (&mut summary.model, &chunk.model),
            (&mut summary.id, &chunk.id),
            (&mut summary.service_tier, &chunk.service_tier),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        // Each usage a stream reports is the whole usage so far: the last one replaces.
        if chunk.usage_present {
            summary.usage.clone_from(&chunk.usage);
            summary.usage_present = true;
        }
        summary.content.add(&chunk.content);
        self.error_chunk |= chunk.error_present;
    }

    fn sentinel(&mut self) {
        self.done = true;
    }
}

impl Stream for OpenAiStream {
    fn metered(&self, end: StreamEnd) -> (Metered, Option<MeterError>) {
        let complete =
            self.done && self.summary.usage_present && !self.error_chunk && end == StreamEnd::Clean;
        self.summary.outcome(complete)
    }
}
