//! The effective-dated price table: official USD rates per million tokens for each model family,
//! prompt-size tiers, and the lookup from a model id (alias or dated id) to the entry in force.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Official prices, USD per million tokens, for the categories that are billed per token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub input: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    pub cache_read: Decimal,
    pub output: Decimal,
    /// Thinking tokens are output tokens; a separate rate only when an admin sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Decimal>,
}

impl Rates {
    pub fn thinking_rate(&self) -> Decimal {
        self.thinking.unwrap_or(self.output)
    }

    fn all(&self) -> [(&'static str, Decimal); 6] {
        [
            ("input", self.input),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("cache_read", self.cache_read),
            ("output", self.output),
            ("thinking", self.thinking_rate()),
        ]
    }
}

/// Rates that replace the base rates for the whole request when its prompt (every input-side
/// token) is strictly above `above_prompt_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub above_prompt_tokens: u64,
    pub usd_per_mtok: Rates,
}

/// One version of one model family's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// The family id, e.g. `claude-sonnet-4-5`; dated ids (`claude-sonnet-4-5-20250929`) match it.
    pub model: String,
    /// Other ids billed as this family (e.g. `claude-sonnet-4` for `claude-sonnet-4-0`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The first instant at which this version applies to admitted requests.
    pub effective_from: DateTime<Utc>,
    pub usd_per_mtok: Rates,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Web search fee per `server_tool_use.web_search_requests` (web fetch has no fee).
    #[serde(default)]
    pub web_search_usd_per_request: Decimal,
    /// The request's `speed` values this model supports, each with the multiplier it applies to
    /// every rate of the request (`{"standard": "1", "fast": "2"}`). A value not listed is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub speed: BTreeMap<String, Decimal>,
    /// The same for `inference_geo` (`{"global": "1", "us": "1.1"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inference_geo: BTreeMap<String, Decimal>,
    /// A fee per request that declares the code execution tool, whose container time no answer
    /// reports. Absent: such requests are refused (unless a web tool makes the container free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_execution_usd_per_request: Option<Decimal>,
    /// The most output tokens the model produces in one answer: what a request that states no
    /// `max_tokens` may cost at most on the output side, for its reservation ([`crate::ceiling`]).
    /// Absent: the gateway's default ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// A request option that multiplies every rate of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// `speed`: `standard` or `fast`.
    Speed,
    /// `inference_geo`: `global` or `us`.
    InferenceGeo,
}

impl Modifier {
    pub const ALL: [Modifier; 2] = [Modifier::Speed, Modifier::InferenceGeo];

    /// The field's name, in the request, in `usage` and in a price entry.
    pub fn field(self) -> &'static str {
        match self {
            Modifier::Speed => "speed",
            Modifier::InferenceGeo => "inference_geo",
        }
    }
}

/// The most values one modifier may list for a model, and the longest value.
const MAX_MODIFIER_VALUES: usize = 16;
const MAX_MODIFIER_VALUE_BYTES: usize = 64;

impl PriceEntry {
    /// The version label a usage record keeps: family and effective instant, unique in a table.
    pub fn version(&self) -> String {
        use chrono::{Datelike, Timelike};
        use std::fmt::Write;
        // `%Y-%m-%dT%H:%M:%SZ` written from the fields: chrono's format strings are parsed on
        // every call, and every debit is priced.
        let t = self.effective_from;
        if !(0..=9999).contains(&t.year()) {
            return format!("{}@{}", self.model, t.format("%Y-%m-%dT%H:%M:%SZ"));
        }
        let mut out = String::with_capacity(self.model.len() + 21);
        out.push_str(&self.model);
        let _ = write!(
            out,
            "@{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            // A leap second is kept as nanoseconds past 59; chrono's `%S` prints it as 60.
            t.second() + t.nanosecond() / 1_000_000_000
        );
        out
    }

    /// The rates for a request with `prompt_tokens` input-side tokens: the tier with the highest
    /// threshold strictly below the prompt size, else the base rates.
    pub fn rates_for(&self, prompt_tokens: u64) -> (&Rates, Option<u64>) {
        self.tiers
            .iter()
            .filter(|t| prompt_tokens > t.above_prompt_tokens)
            .max_by_key(|t| t.above_prompt_tokens)
            .map_or((&self.usd_per_mtok, None), |t| {
                (&t.usd_per_mtok, Some(t.above_prompt_tokens))
            })
    }

    /// The values of `modifier` this model supports, with their multipliers.
    pub fn multipliers(&self, modifier: Modifier) -> &BTreeMap<String, Decimal> {
        match modifier {
            Modifier::Speed => &self.speed,
            Modifier::InferenceGeo => &self.inference_geo,
        }
    }

    /// The multiplier of `value` of `modifier`, when the model supports that value.
    pub fn multiplier(&self, modifier: Modifier, value: &str) -> Option<Decimal> {
        self.multipliers(modifier).get(value).copied()
    }

    /// Rejects negative rates and fees, empty ids, duplicate tier thresholds and multipliers below
    /// 1 (nothing a caller asks for may make a request cheaper).
    pub fn validate(&self) -> Result<(), PriceError> {
        let bad = |reason: String| PriceError::Invalid {
            model: self.model.clone(),
            reason,
        };
        if self.model.trim().is_empty() || self.model.len() > 128 {
            return Err(bad("model id must be 1 to 128 characters".into()));
        }
        if self
            .aliases
            .iter()
            .any(|a| a.trim().is_empty() || a.len() > 128 || *a == self.model)
        {
            return Err(bad(
                "aliases must be non-empty, at most 128 characters, and differ from the model".into(),
            ));
        }
        let mut rate_sets = vec![&self.usd_per_mtok];
        rate_sets.extend(self.tiers.iter().map(|t| &t.usd_per_mtok));
        for rates in rate_sets {
            for (name, value) in rates.all() {
                if value.is_sign_negative() {
                    return Err(bad(format!("rate {name} is negative")));
                }
            }
        }
        if self.web_search_usd_per_request.is_sign_negative() {
            return Err(bad("web_search_usd_per_request is negative".into()));
        }
        if self
            .code_execution_usd_per_request
            .is_some_and(|fee| fee.is_sign_negative())
        {
            return Err(bad("code_execution_usd_per_request is negative".into()));
        }
        if self
            .max_output_tokens
            .is_some_and(|n| n == 0 || n > crate::usage::MAX_COUNT)
        {
            return Err(bad("max_output_tokens must be 1 to 10^12".into()));
        }
        for modifier in Modifier::ALL {
            let field = modifier.field();
            let values = self.multipliers(modifier);
            if values.len() > MAX_MODIFIER_VALUES {
                return Err(bad(format!(
                    "{field} lists more than {MAX_MODIFIER_VALUES} values"
                )));
            }
            for (value, multiplier) in values {
                if value.is_empty() || value.len() > MAX_MODIFIER_VALUE_BYTES {
                    return Err(bad(format!(
                        "{field} values must be 1 to {MAX_MODIFIER_VALUE_BYTES} characters"
                    )));
                }
                if *multiplier < Decimal::ONE || *multiplier > Decimal::from(100) {
                    return Err(bad(format!(
                        "{field} {value:?} has the multiplier {multiplier}; multipliers are 1 to 100 (a request option never makes a request cheaper)"
                    )));
                }
            }
        }
        let mut thresholds: Vec<u64> = self.tiers.iter().map(|t| t.above_prompt_tokens).collect();
        thresholds.sort_unstable();
        if thresholds.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(bad("two tiers share a threshold".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("model {model} has no price; add it with PUT /v1/prices/{model}")]
    UnknownModel { model: String },
    #[error("model {model} has no price in force at {at}; its first price starts later")]
    NotYetPriced { model: String, at: DateTime<Utc> },
    #[error("price entry for {model} is invalid: {reason}")]
    Invalid { model: String, reason: String },
    #[error("price table is invalid: {0}")]
    Table(String),
    #[error("cost of the usage does not fit the decimal range")]
    Overflow,
}

/// The shipped price tables, oldest first, each named by its source: the default table is all of
/// their versions. A control plane applies each once (a new one adds its versions to a database
/// seeded from the earlier ones; older versions stay, so old usage keeps its price).
pub const DEFAULT_TABLES: [(&str, &str); 2] = [
    ("prices-2026-11", include_str!("../data/prices-2026-11.json")),
    ("prices-2026-12", include_str!("../data/prices-2026-12.json")),
];

/// The public price as a fraction of the official price, unless configured otherwise.
pub fn default_price_factor() -> Decimal {
    Decimal::new(70, 2)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[allow(dead_code)]
    source: String,
    entries: Vec<PriceEntry>,
}

/// The entries of a table file (`{"source": ..., "entries": [...]}`), each validated.
pub fn entries_of(json: &str) -> Result<Vec<PriceEntry>, PriceError> {
    let file: TableFile = serde_json::from_str(json).map_err(|e| PriceError::Table(e.to_string()))?;
    for e in &file.entries {
        e.validate()?;
    }
    Ok(file.entries)
}

/// Every price version of every model family, with the factor that turns official USD into
/// credits. Immutable once built; lookups are by exact id or alias, then by dated id.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    factor: Decimal,
    /// Versions sorted by family then effective instant.
    entries: Vec<PriceEntry>,
    /// Family id or alias -> the family and where its versions lie in `entries`: a lookup costs
    /// one hash of the id, however many models and versions the table holds.
    families: HashMap<String, Family>,
    /// The `inference_geo` the upstream bills when neither the request nor the answer names one
    /// (the operator's upstream workspace default); none: `global`, x1.
    default_inference_geo: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Family {
    id: String,
    versions: std::ops::Range<usize>,
}

/// The one bound of a price factor (the fraction of the official price charged): above 0 and
/// at most 10. `Err` says why, for the caller to name its setting.
pub fn check_factor(factor: Decimal) -> Result<Decimal, String> {
    if factor <= Decimal::ZERO || factor > Decimal::from(10) {
        return Err(format!("{factor} must be above 0 and at most 10"));
    }
    Ok(factor)
}

impl PriceTable {
    pub fn new(mut entries: Vec<PriceEntry>, factor: Decimal) -> Result<Self, PriceError> {
        check_factor(factor).map_err(|why| PriceError::Table(format!("price factor {why}")))?;
        let mut named: HashMap<&str, &str> = HashMap::new();
        for e in &entries {
            e.validate()?;
            for id in std::iter::once(&e.model).chain(&e.aliases) {
                match named.insert(id, &e.model) {
                    Some(family) if family != e.model => {
                        return Err(PriceError::Table(format!(
                            "id {id} names both {family} and {}",
                            e.model
                        )));
                    }
                    _ => {}
                }
            }
        }
        entries.sort_by(|a, b| (&a.model, a.effective_from).cmp(&(&b.model, b.effective_from)));
        if let Some(w) = entries
            .windows(2)
            .find(|w| matches!(w, [a, b] if a.model == b.model && a.effective_from == b.effective_from))
        {
            let v = w.first().map(PriceEntry::version).unwrap_or_default();
            return Err(PriceError::Table(format!("two entries for the version {v}")));
        }
        let mut families: HashMap<String, Family> = HashMap::new();
        let mut start = 0;
        while let Some(first) = entries.get(start) {
            let len = entries
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|e| e.model == first.model)
                .count();
            let family = Family {
                id: first.model.clone(),
                versions: start..start + len,
            };
            let ids = entries
                .get(family.versions.clone())
                .unwrap_or_default()
                .iter()
                .flat_map(|e| std::iter::once(&e.model).chain(&e.aliases));
            for id in ids {
                families.insert(id.clone(), family.clone());
            }
            start += len.max(1);
        }
        Ok(Self {
            factor,
            entries,
            families,
            default_inference_geo: None,
        })
    }

    /// The same table billing `inference_geo` as `value` where neither the request nor the answer
    /// names one (the upstream workspace's default); `None` for `global`.
    pub fn with_default_inference_geo(mut self, value: Option<String>) -> Self {
        self.default_inference_geo = value.filter(|v| v != "global");
        self
    }

    /// The value of `modifier` the upstream bills when neither the request nor the answer names
    /// one.
    pub fn default_value(&self, modifier: Modifier) -> Option<&str> {
        match modifier {
            Modifier::Speed => None,
            Modifier::InferenceGeo => self.default_inference_geo.as_deref(),
        }
    }

    /// Parses a table file (`{"source": ..., "entries": [...]}`).
    pub fn from_json(json: &str, factor: Decimal) -> Result<Self, PriceError> {
        Self::new(entries_of(json)?, factor)
    }

    /// The shipped default table at the given factor: every version of every shipped file.
    pub fn default_table(factor: Decimal) -> Result<Self, PriceError> {
        let mut entries = Vec::new();
        for (_, json) in DEFAULT_TABLES {
            entries.extend(entries_of(json)?);
        }
        Self::new(entries, factor)
    }

    pub fn factor(&self) -> Decimal {
        self.factor
    }

    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// The family a model id bills as: the id itself or an alias, else the id without a
    /// `-YYYYMMDD` date suffix. Nothing looser: `claude-fable-5-2` is not `claude-fable-5`.
    pub fn family_of(&self, model: &str) -> Option<&str> {
        self.family(model).map(|f| f.id.as_str())
    }

    fn family(&self, model: &str) -> Option<&Family> {
        if let Some(f) = self.families.get(model) {
            return Some(f);
        }
        let (base, suffix) = model.rsplit_once('-')?;
        if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            return self.families.get(base);
        }
        None
    }

    /// The version of `model`'s price in force at `at` (the time the request was admitted).
    pub fn resolve(&self, model: &str, at: DateTime<Utc>) -> Result<&PriceEntry, PriceError> {
        let family = self.family(model).ok_or_else(|| PriceError::UnknownModel {
            model: model.to_owned(),
        })?;
        self.entries
            .get(family.versions.clone())
            .unwrap_or_default()
            .iter()
            .rfind(|e| e.effective_from <= at)
            .ok_or_else(|| PriceError::NotYetPriced {
                model: model.to_owned(),
                at,
            })
    }

    /// Credits per token for an official USD-per-million-tokens rate: USD x factor / $0.005 / 1e6.
    pub fn credits_per_token(&self, usd_per_mtok: Decimal) -> Decimal {
        // x / 0.005 / 1e6 == x / 5000, exact in decimal.
        (usd_per_mtok * self.factor / Decimal::from(5000)).normalize()
    }

    /// Credits for an amount of official USD: USD x factor / $0.005.
    pub fn credits_for_usd(&self, usd: Decimal) -> Option<Decimal> {
        usd.checked_mul(self.factor)?.checked_mul(Decimal::from(200))
    }
}
