//! One admitted billed request from admission to its debit. The response side is a small state
//! machine whose only way to produce a [`Debit`] consumes the meter, so a request is debited at
//! most once whichever callback gets there first (end of stream, or `on_log` after a cut); and
//! only 2xx answers are metered at all.
//!
//! Input estimate for cut responses. The upstream reports usage at a point of its choosing: an
//! OpenAI-compatible stream only in its last chunk, an Anthropic JSON answer in its last member. A
//! caller who drops the connection before that point would otherwise be billed no input at all,
//! which makes cutting early a way to pay less. So a partial debit with no input side reported
//! (input, cache writes and cache reads all 0) is billed `ceil(request body bytes / 4)` input tokens,
//! the same 4-bytes-per-token rule as the output estimate, and marked `input_estimated`. The body
//! length is the caller's body as received (before any rewrite); JSON syntax and base64 media make
//! it an overestimate, which falls on the caller who cut the answer, never on the operator.
//!
//! The same estimate bills a caller who leaves before the response headers: the body was read to
//! its end and forwarded, so the upstream may be spending tokens on it (Envoy cancels the upstream
//! request, but not necessarily before the upstream started). Hanging up early must not make a
//! request free; a request whose body never reached its end is never billed.

use chrono::{DateTime, Utc};
use metering::wire::{Debit, Route};
use metering::{Metered, RequestedOptions};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::request::meter::ResponseMeter;

/// Who and what was admitted; the fields every debit carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub debit_id: Uuid,
    pub route: Route,
    pub key_hash: String,
    pub account_id: Uuid,
    pub admitted_at: DateTime<Utc>,
    /// The account's spendable balance when the request was admitted, as the worker judged it.
    pub spendable: Decimal,
}

enum Response {
    /// No response headers yet.
    Awaiting,
    /// A 2xx answer whose body is being metered.
    Metering {
        status: u16,
        meter: Box<ResponseMeter>,
        upstream_request_id: Option<String>,
    },
    /// Not billed (non-2xx), or already debited.
    Closed,
}

pub struct Exchange {
    pub admission: Admission,
    /// Set once the request body was read and the model found priced.
    pub model_requested: Option<String>,
    /// What the request asked for that changes its price, read with the model.
    pub requested: RequestedOptions,
    /// The request body's length as the caller sent it, for the input estimate of a cut response.
    pub request_body_bytes: u64,
    response: Response,
}

impl Exchange {
    pub fn new(admission: Admission) -> Self {
        Self {
            admission,
            model_requested: None,
            requested: RequestedOptions::default(),
            request_body_bytes: 0,
            response: Response::Awaiting,
        }
    }

    /// Response headers arrived. Non-2xx answers are passed through and never billed.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        upstream_request_id: Option<String>,
    ) {
        if !matches!(self.response, Response::Awaiting) {
            return;
        }
        self.response = if (200..300).contains(&status) && self.model_requested.is_some() {
            Response::Metering {
                status,
                meter: Box::new(ResponseMeter::for_response(self.admission.route, content_type)),
                upstream_request_id,
            }
        } else {
            Response::Closed
        };
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if let Response::Metering { meter, .. } = &mut self.response {
            meter.feed(chunk);
        }
    }

    pub fn is_metering(&self) -> bool {
        matches!(self.response, Response::Metering { .. })
    }

    /// The response ended normally: the debit, once.
    pub fn finish(&mut self, now: DateTime<Utc>) -> Option<Debit> {
        match std::mem::replace(&mut self.response, Response::Closed) {
            Response::Metering {
                status,
                meter,
                upstream_request_id,
            } => Some(self.debit(meter.finish(), Some(status), upstream_request_id, now)),
            other => {
                self.response = other;
                None
            }
        }
    }

    /// The stream ended without its end (caller gone, upstream reset): the partial debit, once.
    /// Also closes an exchange still awaiting its response, so nothing is debited after it.
    pub fn cut(&mut self, now: DateTime<Utc>) -> Option<Debit> {
        match std::mem::replace(&mut self.response, Response::Closed) {
            Response::Metering {
                status,
                meter,
                upstream_request_id,
            } => {
                let metered = meter.cut();
                Some(self.debit(metered, Some(status), upstream_request_id, now))
            }
            // Gone before the answer: the input estimate, when the body was read and forwarded.
            Response::Awaiting if self.model_requested.is_some() && self.request_body_bytes > 0 => {
                let nothing_reported = Metered {
                    partial: true,
                    ..Metered::default()
                };
                Some(self.debit(nothing_reported, None, None, now))
            }
            _ => None,
        }
    }

    fn debit(
        &self,
        metered: Metered,
        status: Option<u16>,
        upstream_request_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Debit {
        let a = &self.admission;
        let mut usage = metered.usage;
        let input_estimated = metered.partial && usage.prompt_tokens() == 0 && self.request_body_bytes > 0;
        if input_estimated {
            usage.input_tokens = estimate_input(self.request_body_bytes);
        }
        Debit {
            debit_id: a.debit_id,
            key_hash: a.key_hash.clone(),
            account_id: a.account_id,
            route: a.route,
            model_requested: self.model_requested.clone().unwrap_or_default(),
            model_served: metered.model,
            usage,
            requested: self.requested.clone(),
            partial: metered.partial,
            output_estimated: metered.output_estimated,
            input_estimated,
            admitted_at: a.admitted_at,
            finished_at: Some(now),
            upstream_request_id,
            upstream_message_id: metered.message_id,
            upstream_status: status,
        }
    }
}

/// Input tokens billed for a cut response without reported input (see the module docs).
pub fn estimate_input(request_body_bytes: u64) -> u64 {
    request_body_bytes.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn exchange() -> Exchange {
        let mut e = Exchange::new(Admission {
            debit_id: Uuid::from_u128(5),
            route: Route::AnthropicMessages,
            key_hash: "h".into(),
            account_id: Uuid::from_u128(6),
            admitted_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            spendable: Decimal::ONE,
        });
        e.model_requested = Some("claude-sonnet-4-5".into());
        e
    }

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_010, 0).unwrap()
    }

    const BODY: &[u8] = br#"{"id":"msg_9","model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":3,"output_tokens":2}}"#;

    #[test]
    fn complete_response_is_debited_once_even_if_on_log_follows() {
        let mut e = exchange();
        e.on_response_headers(200, Some("application/json"), Some("req_1".into()));
        e.feed(BODY);
        let d = e.finish(now()).unwrap();
        assert_eq!(d.debit_id, Uuid::from_u128(5));
        assert_eq!(d.usage.input_tokens, 3);
        assert!(!d.partial);
        assert_eq!(d.upstream_request_id.as_deref(), Some("req_1"));
        assert_eq!(d.upstream_message_id.as_deref(), Some("msg_9"));
        assert_eq!(d.model_requested, "claude-sonnet-4-5");
        assert!(e.cut(now()).is_none());
        assert!(e.finish(now()).is_none());
    }

    #[test]
    fn the_debit_carries_what_the_request_asked_and_what_the_answer_reported() {
        let mut e = exchange();
        e.requested = metering::RequestedOptions {
            speed: Some("fast".into()),
            inference_geo: Some("us".into()),
            code_execution: false,
        };
        e.on_response_headers(200, Some("application/json"), None);
        e.feed(br#"{"id":"m","model":"claude-opus-5-5","usage":{"input_tokens":3,"output_tokens":2,"speed":"standard","inference_geo":"us","iterations":[{"type":"compaction","input_tokens":50,"output_tokens":5}]}}"#);
        let d = e.finish(now()).unwrap();
        assert_eq!(d.requested, e.requested);
        assert_eq!(d.usage.speed.as_deref(), Some("standard"));
        assert_eq!(d.usage.inference_geo.as_deref(), Some("us"));
        assert_eq!(d.usage.iterations.len(), 1);
        assert_eq!(d.usage.iterations[0].input_tokens, 50);
    }

    #[test]
    fn cut_stream_is_debited_as_partial_once() {
        let mut e = exchange();
        e.on_response_headers(200, Some("application/json"), None);
        e.feed(&BODY[..40]);
        let d = e.cut(now()).unwrap();
        assert!(d.partial);
        assert!(e.cut(now()).is_none());
        assert!(e.finish(now()).is_none());
    }

    #[test]
    fn json_answer_cut_before_its_usage_bills_input_estimated_from_the_body() {
        let mut e = exchange();
        e.request_body_bytes = 1_001;
        e.on_response_headers(200, Some("application/json"), None);
        // Cut inside the content, before `usage`.
        e.feed(br#"{"id":"msg_9","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hello world"}],"stop"#);
        let d = e.cut(now()).unwrap();
        assert!(d.partial && d.input_estimated);
        assert_eq!(d.usage.input_tokens, 251);
        assert!(d.usage.output_tokens > 0, "output estimated too");
    }

    #[test]
    fn openai_stream_cut_before_its_usage_bills_input_estimated_from_the_body() {
        let mut e = exchange();
        e.admission.route = Route::OpenaiChatCompletions;
        e.request_body_bytes = 400;
        e.on_response_headers(200, Some("text/event-stream"), None);
        e.feed(b"data: {\"id\":\"c1\",\"model\":\"claude-sonnet-4-5\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi there\"}}]}\n\n");
        let d = e.cut(now()).unwrap();
        assert!(d.partial && d.input_estimated);
        assert_eq!(d.usage.input_tokens, 100);
    }

    #[test]
    fn reported_input_side_is_never_replaced_by_the_estimate() {
        let mut e = exchange();
        e.request_body_bytes = 100_000;
        e.on_response_headers(200, Some("text/event-stream"), None);
        e.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":0,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n");
        let d = e.cut(now()).unwrap();
        assert!(d.partial && !d.input_estimated);
        assert_eq!((d.usage.input_tokens, d.usage.cache_read_tokens), (0, 7));

        let mut complete = exchange();
        complete.request_body_bytes = 100_000;
        complete.on_response_headers(200, Some("application/json"), None);
        complete.feed(BODY);
        let d = complete.finish(now()).unwrap();
        assert!(!d.input_estimated);
        assert_eq!(d.usage.input_tokens, 3);
    }

    #[test]
    fn non_2xx_answer_is_not_billed() {
        for status in [400, 429, 500, 529] {
            let mut e = exchange();
            e.on_response_headers(status, Some("application/json"), None);
            e.feed(br#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#);
            assert!(e.finish(now()).is_none(), "{status}");
            assert!(e.cut(now()).is_none(), "{status}");
        }
    }

    #[test]
    fn caller_gone_before_the_answer_bills_its_estimated_input_once() {
        let mut e = exchange();
        e.request_body_bytes = 1_001;
        let d = e.cut(now()).unwrap();
        assert!(d.partial && d.input_estimated && !d.output_estimated);
        let only_input = metering::Usage {
            input_tokens: 251,
            ..metering::Usage::default()
        };
        assert_eq!(d.usage, only_input);
        assert_eq!(d.upstream_status, None);
        assert_eq!(
            (d.model_served, d.upstream_message_id, d.upstream_request_id),
            (None, None, None)
        );
        assert!(e.cut(now()).is_none(), "debited once");
        e.on_response_headers(200, Some("application/json"), None);
        assert!(!e.is_metering());
        assert!(e.finish(now()).is_none(), "closed by the cut");
    }

    #[test]
    fn no_body_forwarded_is_not_billed() {
        // The body never reached its end (the model was never read), or was empty.
        let mut e = exchange();
        e.model_requested = None;
        e.request_body_bytes = 500;
        assert!(e.cut(now()).is_none());
        let mut e = exchange();
        e.request_body_bytes = 0;
        assert!(e.cut(now()).is_none());
    }

    #[test]
    fn request_body_never_read_is_not_metered() {
        let mut e = exchange();
        e.model_requested = None;
        e.on_response_headers(200, Some("application/json"), None);
        assert!(!e.is_metering());
    }
}
