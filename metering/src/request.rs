//! The request-side fields the filter needs from an Anthropic Messages or OpenAI chat request
//! body, read incrementally: `model` may come after a `messages` array of any size.
//!
//! Read from the root object only (a `model` key inside a message or tool schema is not the
//! model): `model`, `stream`, `max_tokens`, `max_completion_tokens`, and for the injection of
//! `"stream_options":{"include_usage":true}` into OpenAI streaming requests: `stream_options`
//! and its `include_usage`, the number of members of the root object and the offset of its
//! closing brace. What changes the price: `speed`, `inference_geo`, the models of `fallbacks`,
//! and of `tools` the code execution tools, the web tools that make their container free and the
//! advisor tools' models. A repeated key's last value wins, as in the upstreams' parsers, except
//! for the members the price depends on that an answer may not report (`speed`, `inference_geo`,
//! `fallbacks`, `tools`): given twice, they are an error (which one the upstream takes is not
//! ours to guess).
//!
//! A `model` that is not a string (null included) or longer than [`MAX_MODEL_BYTES`], a body
//! that is not a JSON object and invalid JSON are errors: the filter answers 400 and the upstream
//! never gets such a body. So is anything of what changes the price that cannot be read for
//! certain (a `speed` that is not a string, a `fallbacks` entry without a model, more than
//! [`MAX_LISTED`] fallbacks or advisors): never serve what cannot be billed. `stream`,
//! `max_tokens` and friends of the wrong type read as absent (the upstream answers those with its
//! own 400, which is not billed).
//!
//! Memory bound: the JSON scanner (under 5 KiB), the meter itself (at most 576 bytes with its
//! fields, the media and web search counts included), the model,
//! speed, inference geo and the tool being read (at most 256 bytes each), and at most
//! [`MAX_LISTED`] fallback and advisor models of 256 bytes: under 16 KiB, whatever the body.

use serde::{Deserialize, Serialize};

use crate::json::{Container, Frame, JsonScanner, JsonSink, Limits, Path, Step, Value};
use crate::usage::MeterError;

/// The longest model id accepted; no real one comes close.
pub const MAX_MODEL_BYTES: usize = 256;

/// The most `fallbacks` entries, and advisor tools, a request may list.
pub const MAX_LISTED: usize = 16;

/// The tool types that make a code execution container free when declared beside it.
const FREE_CONTAINER_TOOLS: [&str; 2] = ["web_search_20260209", "web_fetch_20260209"];

/// Why a request body cannot be admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body: {0}")]
    Json(MeterError),
    #[error("request body is not a JSON object")]
    NotAnObject,
    #[error("request field model is not a string")]
    ModelNotString,
    #[error("request field model is longer than {limit} bytes")]
    ModelTooLong { limit: usize },
    #[error("request field {field} {reason}")]
    BadField {
        field: &'static str,
        reason: &'static str,
    },
}

/// What a request asks for that changes its price, read at admission and carried by its debit:
/// where the answer does not report a modifier, the request's value is billed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestedOptions {
    /// The request's `speed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<String>,
    /// The request's `inference_geo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    /// The request declared a code execution tool and no web tool that makes its container free:
    /// it is billed the model's per-request code execution fee.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub code_execution: bool,
}

impl RequestedOptions {
    /// Nothing asked for: the debit leaves the member out (and is fingerprinted as before).
    pub fn is_empty(&self) -> bool {
        self.speed.is_none() && self.inference_geo.is_none() && !self.code_execution
    }
}

/// The server tools of `tools` that change what a request may cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredTools {
    /// The type of the first code execution tool (`code_execution_*`): billed by container time,
    /// which no answer reports.
    pub code_execution: Option<String>,
    /// A `web_search_20260209` or `web_fetch_20260209` tool: code execution's container is free.
    pub free_container: bool,
    /// The `model` of each advisor tool (`advisor_*`) that names one.
    pub advisor_models: Vec<String>,
    /// Web search tools (`web_search_*`) declared.
    pub web_search: u32,
    /// The sum of their `max_uses`; `None` when one declares no bound.
    pub web_search_max_uses: Option<u64>,
}

impl DeclaredTools {
    /// Whether the request must pay for code execution it cannot be metered for.
    pub fn code_execution_billed(&self) -> bool {
        self.code_execution.is_some() && !self.free_container
    }
}

/// The root object's `stream_options` member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Whether it is an object (not `null` or another value).
    pub is_object: bool,
    /// Its `include_usage` member, when a boolean.
    pub include_usage: Option<bool>,
}

/// What a request body says, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFields {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub stream_options: Option<StreamOptions>,
    /// Members of the root object read so far (each repetition of a key counts): 0 means an
    /// injected member needs no comma before it.
    pub members: u64,
    /// Offset in the body of the root object's closing `}`, once read.
    pub closing_brace: Option<u64>,
    pub speed: Option<String>,
    pub inference_geo: Option<String>,
    /// The models of `fallbacks`, in order.
    pub fallbacks: Vec<String>,
    pub tools: DeclaredTools,
    /// Base64 images (image sources of messages and tool results, `data:image/` URLs): how many,
    /// and their decoded bytes. The input estimate counts such a block by a bound per block, not
    /// by its bytes ([`crate::ceiling`]).
    pub media_blocks: u64,
    pub media_bytes: u64,
}

impl RequestFields {
    /// The options its debit carries.
    pub fn requested_options(&self) -> RequestedOptions {
        RequestedOptions {
            speed: self.speed.clone(),
            inference_geo: self.inference_geo.clone(),
            code_execution: self.tools.code_execution_billed(),
        }
    }
}

/// Reads a request body. See the module documentation.
pub struct RequestMeter {
    scanner: JsonScanner,
    sink: RequestSink,
}

/// The tool of `tools` being read: decided when its object closes (members come in any order).
#[derive(Default)]
struct ToolBeingRead {
    kind: Option<String>,
    model: Option<String>,
    max_uses: Option<u64>,
}

/// The `fallbacks` entry being read, when it is an object: it must name a model.
#[derive(Default)]
struct FallbackBeingRead {
    model: Option<String>,
}

#[derive(Default)]
struct RequestSink {
    fields: RequestFields,
    error: Option<RequestError>,
    /// The image `source` object being read (its members come in any order).
    source: Option<SourceBeingRead>,
    tool: Option<ToolBeingRead>,
    fallback: Option<FallbackBeingRead>,
    /// Which of [`PRICED_KEYS`] the root object has given so far.
    given: u8,
}

/// The root members the price depends on that an answer may not report: each may be given once.
/// Parsers differ on which of two values wins (the last here, perhaps the first upstream), so a
/// repeated one is refused rather than guessed. (`model` may repeat: the answer names the model it
/// served, and that is what is billed.)
const PRICED_KEYS: [&str; 4] = ["speed", "inference_geo", "fallbacks", "tools"];

/// Marks `field` (one of [`PRICED_KEYS`]) given, or the error when it was given before.
fn given_once(given: &mut u8, field: &'static str) -> Result<(), RequestError> {
    let bit = PRICED_KEYS
        .iter()
        .position(|k| *k == field)
        .map_or(0, |i| 1u8 << i);
    if *given & bit != 0 {
        return Err(RequestError::BadField {
            field,
            reason: "is given twice",
        });
    }
    *given |= bit;
    Ok(())
}

const MODEL: &[&str] = &["model"];
const STREAM: &[&str] = &["stream"];
const MAX_TOKENS: &[&str] = &["max_tokens"];
const MAX_COMPLETION_TOKENS: &[&str] = &["max_completion_tokens"];
const STREAM_OPTIONS: &[&str] = &["stream_options"];
const INCLUDE_USAGE: &[&str] = &["stream_options", "include_usage"];
const SPEED: &[&str] = &["speed"];
const INFERENCE_GEO: &[&str] = &["inference_geo"];
const FALLBACKS: &str = "fallbacks";
const TOOLS: &str = "tools";

/// Where a value sits under `fallbacks` or `tools`: the key, and the path below the element.
fn in_list<'a>(path: Path<'a>, list: &str) -> Option<Path<'a>> {
    match path.frames() {
        [Frame::Object(key), Frame::Array(_), ..] if key.is(list) => {
            path.strip_prefix(&[list])?.strip_index()
        }
        _ => None,
    }
}

/// Where an image block's `source` sits: in a message's content, or in a tool result's content
/// within it. Nowhere else (a `source` inside a `tool_use` input is text to the upstream).
const IMAGE_SOURCES: [&[Step<'static>]; 2] = [
    &[
        Step::Key("messages"),
        Step::AnyIndex,
        Step::Key("content"),
        Step::AnyIndex,
        Step::Key("source"),
    ],
    &[
        Step::Key("messages"),
        Step::AnyIndex,
        Step::Key("content"),
        Step::AnyIndex,
        Step::Key("content"),
        Step::AnyIndex,
        Step::Key("source"),
    ],
];

/// Where an OpenAI image data URL sits.
const IMAGE_URL: &[Step<'static>] = &[
    Step::Key("messages"),
    Step::AnyIndex,
    Step::Key("content"),
    Step::AnyIndex,
    Step::Key("image_url"),
    Step::Key("url"),
];

fn is_image_source(path: Path<'_>) -> bool {
    IMAGE_SOURCES.iter().any(|p| path.matches(p))
}

/// The member of an image `source` at `path`, when it is one.
fn image_source_member(path: Path<'_>) -> Option<&'static str> {
    let [.., Frame::Object(key)] = path.frames() else {
        return None;
    };
    let name = ["type", "media_type", "data"].into_iter().find(|n| key.is(n))?;
    is_image_source(path.parent()?).then_some(name)
}

/// A `source` object being read: whether it is a base64 image, and its data's length.
#[derive(Default)]
struct SourceBeingRead {
    base64: bool,
    image: bool,
    data_len: Option<u64>,
}

/// A string the price depends on: the text, or an error naming the field.
fn priced_text(value: &Value<'_>, field: &'static str) -> Result<Option<String>, RequestError> {
    match value {
        Value::Null => Ok(None),
        Value::String(_) => match value.text() {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(RequestError::BadField {
                field,
                reason: "is longer than 256 bytes or has control characters",
            }),
        },
        _ => Err(RequestError::BadField {
            field,
            reason: "must be a string",
        }),
    }
}

impl RequestSink {
    fn fail(&mut self, e: RequestError) {
        self.error.get_or_insert(e);
    }

    /// Base64 images: an Anthropic image `source` (`type` `base64`, an `image/*` media type)
    /// where a message's content can hold one, or an OpenAI `data:image/` URL. Documents, text
    /// sources and anything elsewhere count by their bytes.
    fn media_value(&mut self, path: Path<'_>, value: &Value<'_>) {
        if *value == Value::Object && is_image_source(path) {
            self.source = Some(SourceBeingRead::default());
            return;
        }
        if let Value::String(text) = value {
            if path.matches(IMAGE_URL) {
                if text.captured.is_some_and(|c| c.starts_with("data:image/")) {
                    self.add_media(text.len);
                }
                return;
            }
            let (Some(member), Some(source)) = (image_source_member(path), self.source.as_mut()) else {
                return;
            };
            match member {
                "type" => source.base64 = text.captured == Some("base64"),
                "media_type" => source.image = text.captured.is_some_and(|m| m.starts_with("image/")),
                _ => source.data_len = Some(text.len),
            }
        }
    }

    fn add_media(&mut self, len: u64) {
        self.fields.media_blocks = self.fields.media_blocks.saturating_add(1);
        self.fields.media_bytes = self.fields.media_bytes.saturating_add(len);
    }

    /// A value at `rel` below an element of `fallbacks`.
    fn fallback_value(&mut self, rel: Path<'_>, value: &Value<'_>) {
        if rel.depth() == 0 {
            self.fallback = None;
            match value {
                Value::Object => self.fallback = Some(FallbackBeingRead::default()),
                Value::String(_) => match priced_text(value, "fallbacks") {
                    Ok(Some(model)) => self.add_fallback(model),
                    Ok(None) => {}
                    Err(e) => self.fail(e),
                },
                _ => self.fail(RequestError::BadField {
                    field: "fallbacks",
                    reason: "entries must be model ids or objects with a model",
                }),
            }
        } else if rel.is(MODEL) {
            match priced_text(value, "fallbacks.model") {
                Ok(model) => {
                    if let Some(f) = &mut self.fallback {
                        f.model = model;
                    }
                }
                Err(e) => self.fail(e),
            }
        }
    }

    fn add_fallback(&mut self, model: String) {
        if self.fields.fallbacks.len() >= MAX_LISTED {
            self.fail(RequestError::BadField {
                field: "fallbacks",
                reason: "lists more models than this gateway accepts (16)",
            });
        } else {
            self.fields.fallbacks.push(model);
        }
    }

    /// A value at `rel` below an element of `tools`.
    fn tool_value(&mut self, rel: Path<'_>, value: &Value<'_>) {
        if rel.depth() == 0 {
            self.tool = (*value == Value::Object).then(ToolBeingRead::default);
            return;
        }
        let Some(tool) = &mut self.tool else {
            return;
        };
        if rel.is(&["type"]) {
            tool.kind = value.text().map(str::to_owned);
        } else if rel.is(MODEL) {
            tool.model = value.text().map(str::to_owned);
        } else if rel.is(&["max_uses"]) {
            tool.max_uses = value.count().and_then(Result::ok);
        }
    }

    /// A tool's object closed: what it declares.
    fn end_tool(&mut self) {
        let Some(tool) = self.tool.take() else {
            return;
        };
        let Some(kind) = tool.kind else {
            return;
        };
        let declared = &mut self.fields.tools;
        if kind.starts_with("code_execution") {
            declared.code_execution.get_or_insert(kind);
        } else if kind.starts_with("web_search") {
            declared.web_search = declared.web_search.saturating_add(1);
            declared.web_search_max_uses = match (declared.web_search, tool.max_uses) {
                (1, uses) => uses,
                (_, Some(uses)) => declared.web_search_max_uses.map(|n| n.saturating_add(uses)),
                (_, None) => None,
            };
            if FREE_CONTAINER_TOOLS.contains(&kind.as_str()) {
                declared.free_container = true;
            }
        } else if FREE_CONTAINER_TOOLS.contains(&kind.as_str()) {
            declared.free_container = true;
        } else if kind.starts_with("advisor") {
            if let Some(model) = tool.model {
                if declared.advisor_models.len() >= MAX_LISTED {
                    self.fail(RequestError::BadField {
                        field: "tools",
                        reason: "declares more advisor tools than this gateway accepts (16)",
                    });
                } else {
                    declared.advisor_models.push(model);
                }
            }
        }
    }
}

impl JsonSink for RequestSink {
    fn capture_string(&mut self, path: Path<'_>) -> bool {
        if path.depth() >= 6 {
            return path.matches(IMAGE_URL)
                || matches!(image_source_member(path), Some("type" | "media_type"));
        }
        match path.depth() {
            1 => path.is(MODEL) || path.is(SPEED) || path.is(INFERENCE_GEO),
            2 => in_list(path, FALLBACKS).is_some(),
            3 => in_list(path, FALLBACKS)
                .or_else(|| in_list(path, TOOLS))
                .is_some_and(|rel| rel.is(MODEL) || rel.is(&["type"])),
            _ => false,
        }
    }

    fn value(&mut self, path: Path<'_>, value: Value<'_>) {
        // Fields stay as they were at the first error, wherever the chunk it came in ends.
        if self.error.is_some() {
            return;
        }
        if path.depth() >= 5 {
            self.media_value(path, &value);
        }
        match path.depth() {
            0 if value != Value::Object => {
                self.error.get_or_insert(RequestError::NotAnObject);
            }
            1 => self.fields.members = self.fields.members.saturating_add(1),
            2 | 3 => {
                if let Some(rel) = in_list(path, FALLBACKS) {
                    self.fallback_value(rel, &value);
                } else if let Some(rel) = in_list(path, TOOLS) {
                    self.tool_value(rel, &value);
                }
                if path.depth() == 3 {
                    return;
                }
            }
            // Nothing read lies deeper.
            _ => return,
        }
        let modifier = if path.is(SPEED) {
            Some(("speed", &mut self.fields.speed))
        } else if path.is(INFERENCE_GEO) {
            Some(("inference_geo", &mut self.fields.inference_geo))
        } else {
            None
        };
        if let Some((field, slot)) = modifier {
            if let Err(e) = given_once(&mut self.given, field) {
                self.error.get_or_insert(e);
                return;
            }
            match priced_text(&value, field) {
                Ok(text) => *slot = text,
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
            return;
        }
        if path.depth() == 1 && path.is(&[FALLBACKS]) {
            if let Err(e) = given_once(&mut self.given, FALLBACKS) {
                self.fail(e);
                return;
            }
            self.fields.fallbacks.clear();
            self.fallback = None;
            if !matches!(value, Value::Array | Value::Null) {
                self.fail(RequestError::BadField {
                    field: "fallbacks",
                    reason: "must be an array",
                });
            }
            return;
        }
        if path.depth() == 1 && path.is(&[TOOLS]) {
            if let Err(e) = given_once(&mut self.given, TOOLS) {
                self.fail(e);
                return;
            }
            self.fields.tools = DeclaredTools::default();
            self.tool = None;
            return;
        }
        let fields = &mut self.fields;
        let bool_value = match value {
            Value::Bool(b) => Some(b),
            _ => None,
        };
        if path.is(MODEL) {
            fields.model = match value {
                Value::String(text) if text.truncated => {
                    self.error.get_or_insert(RequestError::ModelTooLong {
                        limit: MAX_MODEL_BYTES,
                    });
                    None
                }
                Value::String(_) => match value.text() {
                    Some(text) => Some(text.to_owned()),
                    None => {
                        self.error.get_or_insert(RequestError::BadField {
                            field: "model",
                            reason: "has control characters",
                        });
                        None
                    }
                },
                _ => {
                    self.error.get_or_insert(RequestError::ModelNotString);
                    None
                }
            };
        } else if path.is(STREAM) {
            fields.stream = bool_value;
        } else if path.is(MAX_TOKENS) {
            fields.max_tokens = value.count().and_then(Result::ok);
        } else if path.is(MAX_COMPLETION_TOKENS) {
            fields.max_completion_tokens = value.count().and_then(Result::ok);
        } else if path.is(STREAM_OPTIONS) {
            fields.stream_options = Some(StreamOptions {
                is_object: value == Value::Object,
                include_usage: None,
            });
        } else if path.is(INCLUDE_USAGE) {
            if let Some(options) = &mut fields.stream_options {
                options.include_usage = bool_value;
            }
        }
    }

    fn close(&mut self, path: Path<'_>, container: Container, offset: u64) {
        if self.error.is_some() || container != Container::Object {
            return;
        }
        if path.depth() >= 5 && is_image_source(path) {
            if let Some(SourceBeingRead {
                base64: true,
                image: true,
                data_len: Some(len),
            }) = self.source.take()
            {
                self.add_media(len);
            }
            return;
        }
        match path.depth() {
            0 => self.fields.closing_brace = Some(offset),
            2 if in_list(path, TOOLS).is_some() => self.end_tool(),
            2 if in_list(path, FALLBACKS).is_some() => match self.fallback.take() {
                Some(FallbackBeingRead { model: Some(model) }) => self.add_fallback(model),
                _ => self.fail(RequestError::BadField {
                    field: "fallbacks",
                    reason: "entries must be model ids or objects with a model",
                }),
            },
            _ => {}
        }
    }
}

impl Default for RequestMeter {
    fn default() -> Self {
        RequestMeter::new()
    }
}

impl RequestMeter {
    pub fn new() -> Self {
        let limits = Limits {
            max_capture_bytes: MAX_MODEL_BYTES,
            ..Limits::default()
        };
        RequestMeter {
            scanner: JsonScanner::new(limits),
            sink: RequestSink::default(),
        }
    }

    /// Reads the next chunk of the body. After an error, the rest is ignored.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.sink.error.is_none() {
            if let Err(e) = self.scanner.feed(chunk, &mut self.sink) {
                self.sink.error.get_or_insert(RequestError::Json(e));
            }
        }
    }

    /// The fields read so far.
    pub fn fields(&self) -> &RequestFields {
        &self.sink.fields
    }

    /// The first error met so far.
    pub fn error(&self) -> Option<&RequestError> {
        self.sink.error.as_ref()
    }

    /// Whether the whole root object was read without error (only whitespace may follow).
    pub fn is_complete(&self) -> bool {
        self.sink.error.is_none() && self.scanner.is_done()
    }

    /// The body ended: its fields, or why it is not a valid request body.
    pub fn finish(mut self) -> Result<RequestFields, RequestError> {
        if self.sink.error.is_none() {
            if let Err(e) = self.scanner.finish(&mut self.sink) {
                self.sink.error.get_or_insert(RequestError::Json(e));
            }
        }
        match self.sink.error {
            Some(e) => Err(e),
            None => Ok(self.sink.fields),
        }
    }
}
