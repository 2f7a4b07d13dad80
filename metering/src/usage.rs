//! The usage of one request as the upstream reports it, and the outcome of metering a response.

use serde::{Deserialize, Serialize};

/// A count above this is not a real token count but garbage or an attack on the arithmetic.
/// (No model has a context window within three orders of magnitude of it.)
pub const MAX_COUNT: u64 = 1_000_000_000_000;

/// The most iterations a usage keeps one by one; further ones are added to a kept iteration of
/// the same type and model (the same rates, so nothing is lost to the bill).
pub const MAX_ITERATIONS: usize = 16;

/// The most iterations of distinct types and models a usage may hold: beyond it the usage is
/// invalid (no upstream answer comes near it).
pub const MAX_ITERATION_GROUPS: usize = 64;

/// The longest text a usage keeps (a tier, a speed, a model id): no real one is near it.
pub const MAX_TEXT_BYTES: usize = 256;

/// Token usage of one request, in the five billed categories plus the cache TTL split and
/// server tool counts. All counts are plain non-negative integers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens as the upstream counts them: inclusive of thinking tokens.
    pub output_tokens: u64,
    /// The part of `output_tokens` that was thinking, when the upstream reports it; else 0.
    pub thinking_tokens: u64,
    /// Cache writes with the 5-minute TTL (all cache writes when the upstream gives no split).
    pub cache_write_5m_tokens: u64,
    /// Cache writes with the 1-hour TTL.
    pub cache_write_1h_tokens: u64,
    /// Cache reads.
    pub cache_read_tokens: u64,
    /// `server_tool_use.web_search_requests`: billed per request.
    pub web_search_requests: u64,
    /// `server_tool_use.web_fetch_requests`: no fee, kept for reports.
    pub web_fetch_requests: u64,
    /// `usage.service_tier` when reported (e.g. `standard`, `priority`, `batch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// `usage.speed` when reported (`standard`, `fast`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<String>,
    /// `usage.inference_geo` when reported (`global`, `us`, `not_available`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    /// `usage.iterations`: each sampling step of the request when the upstream lists them
    /// (compaction, fallback attempts, advisor calls, the message itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<Iteration>,
}

/// One sampling step of `usage.iterations`, with its own model and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Iteration {
    /// The step's `type`: `message`, `compaction`, `fallback_message`, `advisor_message`, ...
    /// (empty when the answer gave none: billed as an unknown type).
    #[serde(rename = "type")]
    pub kind: String,
    /// The model of the step; absent for compaction (the request's model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_tokens: u64,
}

/// How an iteration is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationKind {
    /// The serving step: the top-level usage already covers it.
    Message,
    /// Compaction: billed on top of the top-level usage, at the served model.
    Compaction,
    /// An attempt of the request's `fallbacks` that did not serve: at its own model, free when it
    /// declined before producing any output.
    FallbackMessage,
    /// The advisor tool: at the advisor model, on top of the top-level usage.
    AdvisorMessage,
    /// A fallback credit (`redeemed`, `not_applied`): already reflected in the reported counts.
    FallbackCredit,
    /// A type this gateway does not know: billed on top, at its model, rather than dropped.
    Other,
}

impl Iteration {
    pub fn kind(&self) -> IterationKind {
        match self.kind.as_str() {
            "message" => IterationKind::Message,
            "compaction" => IterationKind::Compaction,
            "fallback_message" => IterationKind::FallbackMessage,
            "advisor_message" => IterationKind::AdvisorMessage,
            "fallback_credit" => IterationKind::FallbackCredit,
            _ => IterationKind::Other,
        }
    }

    /// Every input-side token of the step: what prompt-size tiers count.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
            .saturating_add(self.cache_read_tokens)
    }

    /// Adds another step's counts (of the same type and model).
    pub fn absorb(&mut self, other: &Iteration) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_write_5m_tokens = self
            .cache_write_5m_tokens
            .saturating_add(other.cache_write_5m_tokens);
        self.cache_write_1h_tokens = self
            .cache_write_1h_tokens
            .saturating_add(other.cache_write_1h_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
    }

    fn counts(&self) -> [(&'static str, u64); 5] {
        [
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("cache_write_5m_tokens", self.cache_write_5m_tokens),
            ("cache_write_1h_tokens", self.cache_write_1h_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
        ]
    }
}

/// Adds `step` to `steps`: kept on its own while fewer than [`MAX_ITERATIONS`] are, else into a
/// kept step of the same type and model (and, for a fallback attempt, as free or not); a step of
/// a new kind beyond [`MAX_ITERATION_GROUPS`] is refused (`false`). Steps added together are
/// priced together: past [`MAX_ITERATIONS`], a prompt-size tier sees their sum (never less).
pub fn push_iteration(steps: &mut Vec<Iteration>, step: Iteration) -> bool {
    if steps.len() < MAX_ITERATIONS {
        steps.push(step);
        return true;
    }
    // A fallback attempt that declined before any output is free: it never joins one that did not.
    let declined = |s: &Iteration| s.output_tokens == 0;
    if let Some(same) = steps
        .iter_mut()
        .find(|s| s.kind == step.kind && s.model == step.model && declined(s) == declined(&step))
    {
        same.absorb(&step);
        return true;
    }
    if steps.len() < MAX_ITERATION_GROUPS {
        steps.push(step);
        return true;
    }
    false
}

impl Usage {
    /// Every input-side token of the request: what prompt-size tiers count.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
            .saturating_add(self.cache_read_tokens)
    }

    /// Rejects counts no upstream can have produced, and thinking above output.
    pub fn validate(&self) -> Result<(), MeterError> {
        for (name, v) in [
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("thinking_tokens", self.thinking_tokens),
            ("cache_write_5m_tokens", self.cache_write_5m_tokens),
            ("cache_write_1h_tokens", self.cache_write_1h_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("web_search_requests", self.web_search_requests),
            ("web_fetch_requests", self.web_fetch_requests),
        ] {
            if v > MAX_COUNT {
                return Err(MeterError::BadCount {
                    field: name.to_owned(),
                    reason: "absurdly large",
                });
            }
        }
        if self.thinking_tokens > self.output_tokens {
            return Err(MeterError::BadCount {
                field: "thinking_tokens".to_owned(),
                reason: "greater than output_tokens, which includes it",
            });
        }
        let texts = [&self.service_tier, &self.speed, &self.inference_geo];
        if texts
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES))
        {
            return Err(MeterError::BadCount {
                field: "usage".to_owned(),
                reason: "a text field is longer than 256 bytes",
            });
        }
        if self.iterations.len() > MAX_ITERATION_GROUPS {
            return Err(MeterError::BadCount {
                field: "iterations".to_owned(),
                reason: "more steps of distinct types and models than any answer has",
            });
        }
        for step in &self.iterations {
            if step.kind.len() > MAX_TEXT_BYTES
                || step.model.as_ref().is_some_and(|m| m.len() > MAX_TEXT_BYTES)
            {
                return Err(MeterError::BadCount {
                    field: "iterations".to_owned(),
                    reason: "a step's type or model is longer than 256 bytes",
                });
            }
            if let Some((name, _)) = step.counts().into_iter().find(|(_, v)| *v > MAX_COUNT) {
                return Err(MeterError::BadCount {
                    field: format!("iterations.{name}"),
                    reason: "absurdly large",
                });
            }
        }
        Ok(())
    }
}

/// The result of metering one response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metered {
    pub usage: Usage,
    /// The model the upstream says it served, when the body names one.
    pub model: Option<String>,
    /// The upstream's message id (`msg_...`, `chatcmpl-...`), when present.
    pub message_id: Option<String>,
    /// True when the body did not carry a complete final usage (stream cut, no final usage,
    /// truncated JSON, mid-stream error event): billed for what was reported, plus estimates.
    pub partial: bool,
    /// True when `output_tokens` (and `thinking_tokens`) were estimated from the content seen
    /// because the upstream never reported them.
    pub output_estimated: bool,
}

/// Why a body could not be metered. Never a panic, never a negative or wrapped count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("body is not valid JSON at byte {offset}: {reason}")]
    Syntax { offset: u64, reason: &'static str },
    #[error("JSON nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("usage field {field} is invalid: {reason}")]
    BadCount { field: String, reason: &'static str },
    #[error("an SSE line longer than {limit} bytes outside a data field")]
    LineTooLong { limit: usize },
}
