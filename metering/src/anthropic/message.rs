//! What an Anthropic Messages `message` object says about billing: its `usage` object, `model`
//! and `id`, and the size of its content (for estimates). Read the same way at the root of a JSON
//! response and inside a stream's `message_start` event.

use super::ContentSeen;
use crate::json::{CountFields, Path, Step, Value};
use crate::usage::{MeterError, Usage};

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
static USAGE_PATHS: [&[&str]; 9] = [
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

/// The fields of one `usage` object as reported (absent, a count, or not a count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsageFields {
    counts: CountFields<9>,
    service_tier: Option<String>,
}

impl Default for UsageFields {
    fn default() -> Self {
        UsageFields {
            counts: CountFields::new(&USAGE_PATHS),
            service_tier: None,
        }
    }
}

impl UsageFields {
    pub(crate) fn wants_text(rel: Path<'_>) -> bool {
        rel.is(SERVICE_TIER)
    }

    /// Records a value at `rel`, relative to the `usage` object.
    pub(crate) fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        self.counts.record(rel, value);
        if rel.is(SERVICE_TIER) {
            self.service_tier = value.text().map(str::to_owned);
        } else if rel.is_ancestor_of(SERVICE_TIER) {
            self.service_tier = None;
        }
    }

    /// Fields present in `newer` replace these: `message_delta` usage is cumulative.
    pub(crate) fn overlay(&mut self, newer: &UsageFields) {
        self.counts.overlay(&newer.counts);
        if newer.service_tier.is_some() {
            self.service_tier.clone_from(&newer.service_tier);
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
        };
        (usage, self.counts.first_error("usage."))
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
