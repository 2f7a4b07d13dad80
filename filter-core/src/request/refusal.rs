//! Every reason the gateway answers a request itself, with the HTTP status, Anthropic's error type
//! and the body `{"type":"error","error":{"type":...,"message":...}}` the contract fixes.

use metering::billable::Unbillable;
use metering::keylimit::LimitPeriod;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::shared::state::KeyLimit;

#[derive(Serialize)]
struct ErrorBody {
    r#type: &'static str,
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    r#type: &'static str,
    message: String,
}

/// What a request refused for its ceiling was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The request's ceiling, credits.
    pub ceiling: Decimal,
    /// What the account had available (spendable minus holds in flight), credits.
    pub available: Decimal,
    pub model: String,
    pub output_tokens: u64,
    /// Whether `output_tokens` is the request's own `max_tokens`.
    pub from_request: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the route is not offered by this gateway.
    RouteNotOffered,
    /// 401: neither `x-api-key` nor `Authorization: Bearer`.
    MissingKey,
    /// 401: both key headers, with different keys.
    ConflictingKeys,
    /// 401: not in our key format or a wrong checksum (decided without any network call).
    MalformedKey,
    /// 401: the control plane does not know the key.
    UnknownKey,
    /// 401: the key was revoked.
    RevokedKey,
    /// 401: the account is suspended.
    SuspendedAccount,
    /// 402: spendable balance <= 0.
    NoCredit,
    /// 402 (spend control `reserve`): the most the request may cost does not fit what is available.
    CeilingExceeded(Box<Shortfall>),
    /// 401: the key's `expires_at` (ms) has passed.
    ExpiredKey(u64),
    /// 403: the key's `allowed_models` do not include this model (of the request, its fallbacks or
    /// advisor tools).
    ModelNotAllowed(String),
    /// 402: nothing is left of the key's limit this period.
    KeyLimitReached(KeyLimit),
    /// 402 (spend control `reserve`): the request's ceiling does not fit what is left of the key's
    /// limit (`Shortfall::available` is that).
    KeyCeilingExceeded(Box<(Shortfall, KeyLimit)>),
    /// 400: the requested model has no price.
    ModelNotPriced(String),
    /// 400: the body's model cannot be read.
    UnreadableBody(String),
    /// 400: the request asks for something without a price (a modifier value, a fallback or
    /// advisor model) or that cannot be metered (code execution without a fee).
    NotBillable(Unbillable),
    /// 503: `fail_mode` closed and the control plane unreachable.
    ControlPlaneUnavailable,
    /// 503: the key is unknown and the control plane could not be asked.
    LookupFailed,
    /// 503: the debit buffer is full; serving would be unbillable.
    DebitBufferFull,
    /// 503: the key is not cached and this worker's lookup budget is spent (a flood of new keys).
    LookupRateLimited,
}

impl Refusal {
    pub fn status(&self) -> u32 {
        match self {
            Refusal::RouteNotOffered => 403,
            Refusal::MissingKey
            | Refusal::ConflictingKeys
            | Refusal::MalformedKey
            | Refusal::UnknownKey
            | Refusal::RevokedKey
            | Refusal::SuspendedAccount
            | Refusal::ExpiredKey(_) => 401,
            Refusal::ModelNotAllowed(_) => 403,
            Refusal::NoCredit
            | Refusal::CeilingExceeded(_)
            | Refusal::KeyLimitReached(_)
            | Refusal::KeyCeilingExceeded(_) => 402,
            Refusal::ModelNotPriced(_) | Refusal::UnreadableBody(_) | Refusal::NotBillable(_) => 400,
            Refusal::ControlPlaneUnavailable
            | Refusal::LookupFailed
            | Refusal::DebitBufferFull
            | Refusal::LookupRateLimited => 503,
        }
    }

    /// Anthropic's error type for the status.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            403 => "permission_error",
            401 => "authentication_error",
            402 => "billing_error",
            400 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The metric label (`claudestore.refused.<reason>`): one counter per reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::RouteNotOffered => "route_not_offered",
            Refusal::MissingKey => "missing_key",
            Refusal::ConflictingKeys => "conflicting_keys",
            Refusal::MalformedKey => "malformed_key",
            Refusal::UnknownKey => "unknown_key",
            Refusal::RevokedKey => "revoked_key",
            Refusal::SuspendedAccount => "suspended_account",
            Refusal::NoCredit => "no_credit",
            Refusal::CeilingExceeded(_) => "ceiling_exceeded",
            Refusal::ExpiredKey(_) => "expired_key",
            Refusal::ModelNotAllowed(_) => "model_not_allowed",
            Refusal::KeyLimitReached(_) => "key_limit_reached",
            Refusal::KeyCeilingExceeded(_) => "key_ceiling_exceeded",
            Refusal::ModelNotPriced(_) => "model_not_priced",
            Refusal::UnreadableBody(_) => "unreadable_body",
            Refusal::NotBillable(u) => u.reason(),
            Refusal::ControlPlaneUnavailable => "control_plane_unavailable",
            Refusal::LookupFailed => "lookup_failed",
            Refusal::DebitBufferFull => "debit_buffer_full",
            Refusal::LookupRateLimited => "lookup_rate_limited",
        }
    }

    /// Every reason label, for defining the metrics up front.
    pub const REASONS: [&'static str; 23] = [
        "route_not_offered",
        "missing_key",
        "conflicting_keys",
        "malformed_key",
        "unknown_key",
        "revoked_key",
        "suspended_account",
        "no_credit",
        "ceiling_exceeded",
        "expired_key",
        "model_not_allowed",
        "key_limit_reached",
        "key_ceiling_exceeded",
        "model_not_priced",
        "unreadable_body",
        "modifier_not_priced",
        "fallback_not_priced",
        "advisor_not_priced",
        "tool_not_metered",
        "control_plane_unavailable",
        "lookup_failed",
        "debit_buffer_full",
        "lookup_rate_limited",
    ];

    /// A message a caller can act on. Never echoes the key.
    pub fn message(&self) -> String {
        match self {
            Refusal::RouteNotOffered => "this route is not offered by the gateway".into(),
            Refusal::MissingKey => "missing API key: send it in x-api-key or Authorization: Bearer".into(),
            Refusal::ConflictingKeys => {
                "x-api-key and Authorization: Bearer carry different keys; send one".into()
            }
            Refusal::MalformedKey | Refusal::UnknownKey => "invalid API key".into(),
            Refusal::RevokedKey => "this API key has been revoked".into(),
            Refusal::SuspendedAccount => "the account of this API key is suspended".into(),
            Refusal::NoCredit => "your credit balance is too low; buy credits to continue".into(),
            Refusal::CeilingExceeded(s) => s.message(),
            Refusal::ExpiredKey(at) => format!("this API key expired at {}", instant(*at)),
            Refusal::ModelNotAllowed(m) => format!("this API key may not use model {m}"),
            Refusal::KeyLimitReached(l) => format!(
                "this API key's limit of {} is spent; {}",
                limit_words(l),
                resets_words(l)
            ),
            Refusal::KeyCeilingExceeded(b) => {
                let (s, l) = &**b;
                let remedy = if s.from_request {
                    "lower max_tokens or raise the key's limit"
                } else {
                    "set a lower max_tokens or raise the key's limit"
                };
                format!(
                    "this request may cost up to {} credits ({}); this API key's limit of {} has {} credits left ({}): {remedy}",
                    round_up(s.ceiling),
                    s.bound(),
                    limit_words(l),
                    round_down(s.available),
                    resets_words(l)
                )
            }
            Refusal::ModelNotPriced(m) => format!("model {m} is not available on this gateway"),
            Refusal::UnreadableBody(why) => format!("the request body could not be read: {why}"),
            Refusal::NotBillable(why) => why.to_string(),
            Refusal::ControlPlaneUnavailable => "billing is temporarily unavailable; retry shortly".into(),
            Refusal::LookupFailed => "the API key could not be verified right now; retry shortly".into(),
            Refusal::DebitBufferFull => "the gateway is temporarily overloaded; retry shortly".into(),
            Refusal::LookupRateLimited => {
                "too many requests with API keys this gateway has not seen yet; retry shortly".into()
            }
        }
    }

    /// `{"type":"error","error":{"type":...,"message":...}}`, members in Anthropic's order.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            r#type: "error",
            error: ErrorDetail {
                r#type: self.error_type(),
                message: self.message(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl Shortfall {
    /// "this request may cost up to 112.6 credits (max_tokens 32000 on claude-opus-4-8); 40.2
    /// credits are available: lower max_tokens or buy credits". The ceiling is rounded up and the
    /// available credits down, to a tenth: the figures never make the gap look smaller.
    pub fn message(&self) -> String {
        let remedy = if self.from_request {
            "lower max_tokens or buy credits"
        } else {
            "set a lower max_tokens or buy credits"
        };
        format!(
            "this request may cost up to {} credits ({}); {} credits are available: {remedy}",
            round_up(self.ceiling),
            self.bound(),
            round_down(self.available)
        )
    }

    /// What bounds the output: "max_tokens 32000 on claude-opus-4-8" or "no max_tokens: up to ...".
    fn bound(&self) -> String {
        if self.from_request {
            format!("max_tokens {} on {}", self.output_tokens, self.model)
        } else {
            format!(
                "no max_tokens: up to {} output tokens on {}",
                self.output_tokens, self.model
            )
        }
    }
}

/// Credits a request may cost, rounded up to a tenth (never making a gap look smaller).
fn round_up(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(1, RoundingStrategy::ToPositiveInfinity)
        .normalize()
}

/// Credits available, rounded down to a tenth, 0 at least.
fn round_down(d: Decimal) -> Decimal {
    d.max(Decimal::ZERO)
        .round_dp_with_strategy(1, RoundingStrategy::ToNegativeInfinity)
        .normalize()
}

/// An instant (ms since the epoch) as RFC 3339 in UTC, to the second.
fn instant(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "an unknown time".to_owned(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// "100 credits per day", "100 credits in total".
fn limit_words(l: &KeyLimit) -> String {
    let per = match l.period {
        LimitPeriod::Day => "per day",
        LimitPeriod::Week => "per week",
        LimitPeriod::Month => "per month",
        LimitPeriod::Total => "in total",
    };
    format!("{} credits {per}", l.credits.normalize())
}

fn resets_words(l: &KeyLimit) -> String {
    match l.resets_at_ms {
        Some(at) => format!("it resets at {}", instant(at)),
        None => "it does not reset: ask for a higher limit".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortfall(from_request: bool) -> Shortfall {
        Shortfall {
            ceiling: Decimal::new(1_125_252, 4),
            available: Decimal::new(40_28, 2),
            model: "claude-opus-4-8".into(),
            output_tokens: 32_000,
            from_request,
        }
    }

    #[test]
    fn a_ceiling_refusal_states_the_ceiling_what_is_available_and_the_remedy() {
        let r = Refusal::CeilingExceeded(Box::new(shortfall(true)));
        assert_eq!((r.status(), r.error_type()), (402, "billing_error"));
        assert_eq!(
            r.message(),
            "this request may cost up to 112.6 credits (max_tokens 32000 on claude-opus-4-8); \
             40.2 credits are available: lower max_tokens or buy credits"
        );
        let mut s = shortfall(false);
        s.available = Decimal::new(-3, 0);
        assert_eq!(
            s.message(),
            "this request may cost up to 112.6 credits (no max_tokens: up to 32000 output tokens \
             on claude-opus-4-8); 0 credits are available: set a lower max_tokens or buy credits"
        );
    }

    fn day_limit() -> KeyLimit {
        KeyLimit {
            credits: Decimal::from(100),
            period: LimitPeriod::Day,
            // 2026-12-07T00:00:00Z
            resets_at_ms: Some(1_796_601_600_000),
        }
    }

    #[test]
    fn key_refusals_name_the_limit_its_reset_and_the_remedy() {
        let r = Refusal::KeyLimitReached(day_limit());
        assert_eq!((r.status(), r.error_type()), (402, "billing_error"));
        assert_eq!(
            r.message(),
            "this API key's limit of 100 credits per day is spent; it resets at 2026-12-07T00:00:00Z"
        );
        let total = KeyLimit {
            period: LimitPeriod::Total,
            resets_at_ms: None,
            ..day_limit()
        };
        assert!(Refusal::KeyLimitReached(total)
            .message()
            .contains("100 credits in total"));
        let r = Refusal::KeyCeilingExceeded(Box::new((shortfall(true), day_limit())));
        assert_eq!((r.status(), r.error_type()), (402, "billing_error"));
        assert_eq!(
            r.message(),
            "this request may cost up to 112.6 credits (max_tokens 32000 on claude-opus-4-8); \
             this API key's limit of 100 credits per day has 40.2 credits left (it resets at \
             2026-12-07T00:00:00Z): lower max_tokens or raise the key's limit"
        );
        let r = Refusal::ModelNotAllowed("claude-opus-4-8".into());
        assert_eq!((r.status(), r.error_type()), (403, "permission_error"));
        assert_eq!(r.message(), "this API key may not use model claude-opus-4-8");
        let r = Refusal::ExpiredKey(1_796_601_600_000);
        assert_eq!((r.status(), r.error_type()), (401, "authentication_error"));
        assert_eq!(r.message(), "this API key expired at 2026-12-07T00:00:00Z");
    }

    #[test]
    fn body_has_anthropic_error_shape() {
        let body = String::from_utf8(Refusal::NoCredit.body()).unwrap();
        assert!(
            body.starts_with(r#"{"type":"error","error":{"type":"billing_error","message":"#),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "billing_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("credit"));
    }

    #[test]
    fn statuses_and_types_follow_the_contract() {
        let cases = [
            (Refusal::RouteNotOffered, 403, "permission_error"),
            (Refusal::MissingKey, 401, "authentication_error"),
            (Refusal::ConflictingKeys, 401, "authentication_error"),
            (Refusal::RevokedKey, 401, "authentication_error"),
            (Refusal::SuspendedAccount, 401, "authentication_error"),
            (Refusal::NoCredit, 402, "billing_error"),
            (Refusal::ModelNotPriced("m".into()), 400, "invalid_request_error"),
            (Refusal::UnreadableBody("x".into()), 400, "invalid_request_error"),
            (Refusal::ControlPlaneUnavailable, 503, "api_error"),
            (Refusal::LookupFailed, 503, "api_error"),
            (Refusal::DebitBufferFull, 503, "api_error"),
            (Refusal::LookupRateLimited, 503, "api_error"),
        ];
        for (r, status, ty) in cases {
            assert_eq!((r.status(), r.error_type()), (status, ty), "{r:?}");
        }
    }

    #[test]
    fn every_reason_is_listed_for_metrics() {
        let all = [
            Refusal::RouteNotOffered,
            Refusal::MissingKey,
            Refusal::ConflictingKeys,
            Refusal::MalformedKey,
            Refusal::UnknownKey,
            Refusal::RevokedKey,
            Refusal::SuspendedAccount,
            Refusal::NoCredit,
            Refusal::CeilingExceeded(Box::new(shortfall(true))),
            Refusal::ExpiredKey(0),
            Refusal::ModelNotAllowed(String::new()),
            Refusal::KeyLimitReached(day_limit()),
            Refusal::KeyCeilingExceeded(Box::new((shortfall(true), day_limit()))),
            Refusal::ModelNotPriced(String::new()),
            Refusal::UnreadableBody(String::new()),
            Refusal::NotBillable(Unbillable::Modifier {
                field: "speed",
                value: String::new(),
                model: String::new(),
                family: String::new(),
            }),
            Refusal::NotBillable(Unbillable::Fallback(String::new())),
            Refusal::NotBillable(Unbillable::Advisor(String::new())),
            Refusal::NotBillable(Unbillable::CodeExecution {
                tool: String::new(),
                model: String::new(),
                family: String::new(),
            }),
            Refusal::ControlPlaneUnavailable,
            Refusal::LookupFailed,
            Refusal::DebitBufferFull,
            Refusal::LookupRateLimited,
        ];
        for r in &all {
            assert!(Refusal::REASONS.contains(&r.reason()), "{r:?}");
        }
        // Every listed reason is some refusal's (no dead metric).
        for reason in Refusal::REASONS {
            assert!(all.iter().any(|r| r.reason() == reason), "{reason}");
        }
    }

    #[test]
    fn an_unbillable_request_is_a_400_naming_the_field_the_value_and_the_remedy() {
        let r = Refusal::NotBillable(Unbillable::Modifier {
            field: "speed",
            value: "fast".into(),
            model: "claude-sonnet-4-6-20260101".into(),
            family: "claude-sonnet-4-6".into(),
        });
        assert_eq!((r.status(), r.error_type()), (400, "invalid_request_error"));
        let m = r.message();
        for part in [
            "speed",
            "\"fast\"",
            "claude-sonnet-4-6-20260101",
            "PUT /v1/prices/claude-sonnet-4-6",
        ] {
            assert!(m.contains(part), "{part} not in {m}");
        }
    }

    #[test]
    fn model_name_is_escaped_in_the_json_body() {
        let body = Refusal::ModelNotPriced("a\"}b".into()).body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("a\"}b"));
    }
}
