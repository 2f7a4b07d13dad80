//! The usage of one request as the upstream reports it, and the outcome of metering a response.

use serde::{Deserialize, Serialize};

/// A count above this is not a real token count but garbage or an attack on the arithmetic.
/// (No model has a context window within three orders of magnitude of it.)
pub const MAX_COUNT: u64 = 1_000_000_000_000;

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
