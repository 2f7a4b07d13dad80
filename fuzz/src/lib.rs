//! What every fuzz target does: feed the input whole and in chunks split at positions taken
//! from the input's first bytes, and require the same result (any panic is a finding too).
//!
//! Input layout: byte 0 gives the number of cuts (0 to 4), the next two bytes per cut give each
//! cut's position (modulo the body length + 1), and the rest is the body. A long run:
//! `cargo fuzz run --sanitizer none <target> -- -max_total_time=3600` from this folder.

use metering::anthropic::{AnthropicJsonMeter, AnthropicSseMeter};
use metering::openai::{OpenAiJsonMeter, OpenAiSseMeter};
use metering::price::{default_price_factor, PriceTable};
use metering::request::{RequestError, RequestFields, RequestMeter};
use metering::{MeterError, Metered, RequestedOptions, ServedRequest};

/// A parser fed in chunks.
pub trait Meter {
    type Outcome: PartialEq + std::fmt::Debug;
    fn start() -> Self;
    fn push(&mut self, chunk: &[u8]);
    fn outcome(self) -> Self::Outcome;
}

macro_rules! response_meter {
    ($($t:ty),*) => {$(
        impl Meter for $t {
            type Outcome = (Metered, Result<Metered, MeterError>);
            fn start() -> Self { <$t>::new() }
            fn push(&mut self, chunk: &[u8]) { self.feed(chunk) }
            fn outcome(self) -> Self::Outcome { (self.best_effort(), self.finish()) }
        }
    )*};
}
response_meter!(
    AnthropicJsonMeter,
    AnthropicSseMeter,
    OpenAiJsonMeter,
    OpenAiSseMeter
);

impl Meter for RequestMeter {
    type Outcome = (bool, Option<RequestFields>, Result<RequestFields, RequestError>);
    fn start() -> Self {
        RequestMeter::new()
    }
    fn push(&mut self, chunk: &[u8]) {
        self.feed(chunk)
    }
    fn outcome(self) -> Self::Outcome {
        (self.is_complete(), Some(self.fields().clone()), self.finish())
    }
}

/// The body and its chunks, as the input's header describes them.
pub fn split(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let cuts = usize::from(data.first().copied().unwrap_or(0) % 5);
    let header = (1 + 2 * cuts).min(data.len());
    let (head, body) = data.split_at(header);
    let mut at: Vec<usize> = head
        .get(1..)
        .unwrap_or_default()
        .chunks(2)
        .map(|pair| {
            let raw = pair.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            raw % (body.len() + 1)
        })
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for to in at.into_iter().chain([body.len()]) {
        chunks.push(&body[from..to]);
        from = to;
    }
    (body, chunks)
}

/// Feeds the input whole and in chunks; the outcomes must be equal.
pub fn check<M: Meter>(data: &[u8]) {
    let (body, chunks) = split(data);
    let mut whole = M::start();
    whole.push(body);
    let mut parts = M::start();
    for chunk in &chunks {
        parts.push(chunk);
    }
    assert_eq!(
        parts.outcome(),
        whole.outcome(),
        "chunks {:?}",
        chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
    );
}

/// Models the pricing targets pick from.
const MODELS: [&str; 5] = [
    "claude-opus-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-6",
    "claude-sonnet-4-5",
    "claude-fable-5-2",
];

/// The shipped price table, the input's first byte (what to pick) and the rest.
fn table_and_pick(data: &[u8]) -> Option<(&'static PriceTable, u8, &[u8])> {
    static TABLE: std::sync::OnceLock<Option<PriceTable>> = std::sync::OnceLock::new();
    let table = TABLE
        .get_or_init(|| PriceTable::default_table(default_price_factor()).ok())
        .as_ref()?;
    let (&pick, body) = data.split_first()?;
    Some((table, pick, body))
}

/// Prices what an Anthropic JSON answer reports. Byte 0 picks the model and what the request
/// asked (speed, inference geo, code execution); the rest is the answer.
pub fn price(data: &[u8]) {
    let Some((table, pick, body)) = table_and_pick(data) else {
        return;
    };
    let mut meter = AnthropicJsonMeter::new();
    meter.feed(body);
    let metered = meter.best_effort();
    let model = MODELS[usize::from(pick) % MODELS.len()];
    let asked = RequestedOptions {
        speed: (pick & 0x20 != 0).then(|| "fast".to_owned()),
        inference_geo: (pick & 0x40 != 0).then(|| "us".to_owned()),
        code_execution: pick & 0x80 != 0,
    };
    let Some(at) = chrono::DateTime::from_timestamp(1_796_000_000, 0) else {
        return;
    };
    let request = |requested| ServedRequest {
        usage: &metered.usage,
        model_requested: model,
        model_served: metered.model.as_deref(),
        requested,
        admitted_at: at,
    };
    let plain = RequestedOptions::default();
    let (Ok(with), Ok(without)) = (
        metering::cost(table, &request(&asked)),
        metering::cost(table, &request(&plain)),
    ) else {
        return;
    };
    let local = metering::credits(table, &request(&asked)).map(|(c, _)| c);
    assert_eq!(local, Ok(with.credits));
    assert!(with.credits >= without.credits && with.credits >= rust_decimal::Decimal::ZERO);
}

/// The ceiling of a request body. Byte 0 picks the model put into `fields` (the body's own model
/// is usually unpriced) and a `max_tokens` bound; the rest is the body.
pub fn ceiling(data: &[u8]) {
    use metering::ceiling::{ceiling, CeilingRules};
    let Some((table, pick, body)) = table_and_pick(data) else {
        return;
    };
    let mut meter = RequestMeter::new();
    meter.feed(body);
    let Ok(mut fields) = meter.finish() else {
        return;
    };
    fields.model = Some(MODELS[usize::from(pick) % MODELS.len()].to_owned());
    // Fallback and advisor models must be priced (checked before the ceiling, in the filter).
    fields.fallbacks.retain(|m| table.resolve(m, at()).is_ok());
    fields.tools.advisor_models.retain(|m| table.resolve(m, at()).is_ok());
    let rules = CeilingRules::default();
    let requested = RequestedOptions::default();
    let body_len = body.len() as u64;
    let Ok(c) = ceiling(table, &fields, &requested, body_len, at(), &rules) else {
        return;
    };
    assert!(c.credits >= rust_decimal::Decimal::ZERO);
    assert!(c.input_tokens <= rules.input_tokens_max);
    fields.max_tokens = Some(c.output_tokens.saturating_add(u64::from(pick)).min(1_000_000_000_000));
    fields.max_completion_tokens = None;
    if let Ok(more) = ceiling(table, &fields, &requested, body_len, at(), &rules) {
        assert!(more.credits >= c.credits, "{more:?} < {c:?}");
    }
}

fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap_or_default()
}

/// Decodes the bytes as each value the filter keeps in shared data.
pub fn shared_data(data: &[u8]) {
    use filter_core::shared::state::{AccountEntry, KeyEntry};
    if let Some(entry) = AccountEntry::decode(data) {
        let again = AccountEntry::decode(&entry.encode());
        assert_eq!(again.as_ref(), Some(&entry));
        let _ = entry.available(u64::from(data.len() as u32));
    }
    if let Some(key) = KeyEntry::decode(data) {
        assert_eq!(KeyEntry::decode(&key.encode()), Some(key));
    }
    if let Some((written, holds)) = filter_core::sync::holds::decode_report(data) {
        assert_eq!(filter_core::sync::holds::decode_report(&filter_core::sync::holds::encode_report(written, &holds)), Some((written, holds)));
    }
}
