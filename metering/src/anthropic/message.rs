//! What an Anthropic Messages `message` object says about billing: its `usage` object, `model`
//! and `id`, and the size of its content (for estimates). Read the same way at the root of a JSON
//! response and inside a stream's `message_start` event.

use super::ContentSeen;
use crate::json::{CountFields, Path, Step, Value};
use crate::usage::{push_iteration, Iteration, MeterError, Usage};

const INPUT: usize = 0;
const OUTPUT: usize = 1;
const CACHE_CREATION: usize = 2;
const CACHE_5M: usize = 3;
const CACHE_1H: usize = 4;
const CACHE_READ: usize = 5;
const THINKING: usize = 6;
const WEB_SEARCH: usize = 7;
const WEB_FETCH: usize = 8;

/// Paths inside `usage`, indexed by the constants above.
const USAGE_PATHS: [&[&str]; 9] = [
    &["input_tokens"],
    &["output_tokens"],
    &["cache_creation_input_tokens"],
    &["cache_creation", "ephemeral_5m_input_tokens"],
    &["cache_creation", "ephemeral_1h_input_tokens"],
    &["cache_read_input_tokens"],
    &["output_tokens_details", "thinking_tokens"],
    &["server_tool_use", "web_search_requests"],
    &["server_tool_use", "web_fetch_requests"],
];

const SERVICE_TIER: &[&str] = &["service_tier"];
const SPEED: &[&str] = &["speed"];
const INFERENCE_GEO: &[&str] = &["inference_geo"];
const ITERATIONS: &[&str] = &["iterations"];
const TYPE: &[&str] = &["type"];
const MODEL_KEY: &[&str] = &["model"];

/// Paths inside one step of `iterations`: the token counts and cache split of a usage, indexed
/// alike.
static ITERATION_PATHS: [&[&str]; 6] = [
    USAGE_PATHS[INPUT],
    USAGE_PATHS[OUTPUT],
    USAGE_PATHS[CACHE_CREATION],
    USAGE_PATHS[CACHE_5M],
    USAGE_PATHS[CACHE_1H],
    USAGE_PATHS[CACHE_READ],
];

/// One step of `usage.iterations` as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepFields {
    kind: Option<String>,
    model: Option<String>,
    counts: CountFields<6>,
}

impl Default for StepFields {
    fn default() -> Self {
        StepFields {
            kind: None,
            model: None,
            counts: CountFields::new(&ITERATION_PATHS),
        }
    }
}

impl StepFields {
    fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        self.counts.record(rel, value);
        if rel.is(TYPE) {
            self.kind = value.text().map(str::to_owned);
        } else if rel.is(MODEL_KEY) {
            self.model = value.text().map(str::to_owned);
        }
    }

    /// The step, with invalid counts read as absent.
    fn resolve(&self) -> Iteration {
        let count = |field| self.counts.count(field).unwrap_or(0);
        let (write_5m, write_1h) = cache_writes(
            self.counts.count(CACHE_CREATION),
            self.counts.count(CACHE_5M),
            self.counts.count(CACHE_1H),
        );
        Iteration {
            kind: self.kind.clone().unwrap_or_default(),
            model: self.model.clone(),
            input_tokens: count(INPUT),
            output_tokens: count(OUTPUT),
            cache_write_5m_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            cache_read_tokens: count(CACHE_READ),
        }
    }
}

/// `usage.iterations` as reported: the steps read (each resolved once the next one starts), the
/// step being read, and the first invalid value among them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StepsFields {
    /// Whether `iterations` was given (an array); a later report replaces an earlier one only then.
    present: bool,
    done: Vec<Iteration>,
    current: Option<StepFields>,
    error: Option<MeterError>,
}

impl StepsFields {
    fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        if rel.depth() == 0 {
            // `iterations` itself (again): whatever an earlier one said is replaced.
            *self = StepsFields {
                present: *value == Value::Array,
                ..StepsFields::default()
            };
            return;
        }
        match rel.strip_index() {
            Some(step) if step.depth() == 0 => {
                self.end_step();
                self.current = (*value == Value::Object).then(StepFields::default);
            }
            Some(step) => {
                if let Some(current) = &mut self.current {
                    current.record(step, value);
                }
            }
            // Not an array: nothing in it is a step.
            None => {}
        }
    }

    fn end_step(&mut self) {
        if let Some(step) = self.current.take() {
            if self.error.is_none() {
                self.error = step.counts.first_error("usage.iterations.");
            }
            if !push_iteration(&mut self.done, step.resolve()) {
                self.error.get_or_insert(MeterError::BadCount {
                    field: "usage.iterations".to_owned(),
                    reason: "more steps of distinct types and models than any answer has",
                });
            }
        }
    }

    /// Every step, the one being read included, and the first invalid value.
    fn resolve(&self) -> (Vec<Iteration>, Option<MeterError>) {
        let mut steps = self.clone();
        steps.end_step();
        (steps.done, steps.error)
    }
}

/// The fields of one `usage` object as reported (absent, a count, or not a count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsageFields {
    counts: CountFields<9>,
    service_tier: Option<String>,
    speed: Option<String>,
    inference_geo: Option<String>,
    /// Only answers that list their steps have them: kept apart, so that the others stay small.
    iterations: Option<Box<StepsFields>>,
}

impl Default for UsageFields {
    fn default() -> Self {
        UsageFields {
            counts: CountFields::new(&USAGE_PATHS),
            service_tier: None,
            speed: None,
            inference_geo: None,
            iterations: None,
        }
    }
}

impl UsageFields {
    pub(crate) fn wants_text(rel: Path<'_>) -> bool {
        match rel.depth() {
            1 => rel.is(SERVICE_TIER) || rel.is(SPEED) || rel.is(INFERENCE_GEO),
            3 => rel
                .strip_prefix(ITERATIONS)
                .and_then(|r| r.strip_index())
                .is_some_and(|step| step.is(TYPE) || step.is(MODEL_KEY)),
            _ => false,
        }
    }

    /// Records a value at `rel`, relative to the `usage` object.
    pub(crate) fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        if rel.depth() == 0 {
            // The usage itself (again): whatever an earlier one said is replaced.
            *self = UsageFields::default();
            return;
        }
        if let Some(steps) = rel.strip_prefix(ITERATIONS) {
            self.iterations
                .get_or_insert_with(Box::default)
                .record(steps, value);
            return;
        }
        self.counts.record(rel, value);
        if rel.is(SERVICE_TIER) {
            self.service_tier = value.text().map(str::to_owned);
        } else if rel.is(SPEED) {
            self.speed = value.text().map(str::to_owned);
        } else if rel.is(INFERENCE_GEO) {
            self.inference_geo = value.text().map(str::to_owned);
        }
    }

    /// Fields present in `newer` replace these: `message_delta` usage is cumulative.
    pub(crate) fn overlay(&mut self, newer: &UsageFields) {
        self.counts.overlay(&newer.counts);
        for (mine, theirs) in [
            (&mut self.service_tier, &newer.service_tier),
            (&mut self.speed, &newer.speed),
            (&mut self.inference_geo, &newer.inference_geo),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        if newer.iterations.as_ref().is_some_and(|steps| steps.present) {
            self.iterations.clone_from(&newer.iterations);
        }
    }

    /// Whether a valid output count was reported (an invalid one is an error for `finish`,
    /// and leaves `best_effort` to estimate).
    pub(crate) fn has_output(&self) -> bool {
        self.counts.count(OUTPUT).is_some()
    }

    /// The usage these fields give, with invalid fields read as absent, and the first invalid
    /// field as an error.
    pub(crate) fn resolve(&self) -> (Usage, Option<MeterError>) {
        let count = |field| self.counts.count(field).unwrap_or(0);
        let (write_5m, write_1h) = cache_writes(
            self.counts.count(CACHE_CREATION),
            self.counts.count(CACHE_5M),
            self.counts.count(CACHE_1H),
        );
        let usage = Usage {
            input_tokens: count(INPUT),
            output_tokens: count(OUTPUT),
            thinking_tokens: count(THINKING),
            cache_write_5m_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            cache_read_tokens: count(CACHE_READ),
            web_search_requests: count(WEB_SEARCH),
            web_fetch_requests: count(WEB_FETCH),
            service_tier: self.service_tier.clone(),
            speed: self.speed.clone(),
            inference_geo: self.inference_geo.clone(),
            iterations: Vec::new(),
        };
        let error = self.counts.first_error("usage.");
        let Some(steps) = self.iterations.as_ref().filter(|steps| steps.present) else {
            return (usage, error);
        };
        let (iterations, steps_error) = steps.resolve();
        let usage = Usage { iterations, ..usage };
        (usage, error.or(steps_error))
    }
}

/// Cache writes by TTL: `(5m, 1h)`.
///
/// Without the `cache_creation` split every write is a 5m write. With it, the split is trusted
/// (it is the finer report); should `cache_creation_input_tokens` exceed its sum, the excess is
/// counted as 5m writes, the TTL of writes the split does not place. A total below the sum is
/// ignored rather than letting it shrink the split.
fn cache_writes(total: Option<u64>, split_5m: Option<u64>, split_1h: Option<u64>) -> (u64, u64) {
    if split_5m.is_none() && split_1h.is_none() {
        return (total.unwrap_or(0), 0);
    }
    let (split_5m, split_1h) = (split_5m.unwrap_or(0), split_1h.unwrap_or(0));
    let unplaced = total
        .unwrap_or(0)
        .saturating_sub(split_5m.saturating_add(split_1h));
    (split_5m.saturating_add(unplaced), split_1h)
}

/// A `message` object: at the root of a JSON response, or `message` in `message_start`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageFields {
    pub(crate) model: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) usage: UsageFields,
    /// Content blocks' text and thinking, for an estimate when the output count is missing.
    pub(crate) content: ContentSeen,
}

const MODEL: &[&str] = &["model"];
const ID: &[&str] = &["id"];
const USAGE: &[&str] = &["usage"];
const CONTENT: &[&str] = &["content"];

impl MessageFields {
    pub(crate) fn wants_text(rel: Path<'_>) -> bool {
        rel.is(MODEL) || rel.is(ID) || rel.strip_prefix(USAGE).is_some_and(UsageFields::wants_text)
    }

    /// Records a value at `rel`, relative to the message object.
    pub(crate) fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        if rel.depth() == 0 {
            // The message itself (again): whatever an earlier one said is replaced.
            *self = MessageFields::default();
        } else if rel.is(MODEL) {
            self.model = value.text().map(str::to_owned);
        } else if rel.is(ID) {
            self.id = value.text().map(str::to_owned);
        } else if let Some(rel) = rel.strip_prefix(USAGE) {
            self.usage.record(rel, value);
        } else if rel.is(CONTENT) {
            self.content = ContentSeen::default();
        } else if let Value::String(text) = value {
            if rel.matches(&[Step::Key("content"), Step::AnyIndex, Step::Key("text")]) {
                self.content.add_text(text.len);
            } else if rel.matches(&[Step::Key("content"), Step::AnyIndex, Step::Key("thinking")]) {
                self.content.add_thinking(text.len);
            }
        }
    }
}
