//! This worker's debit buffer: finalised debits wait here until the control plane acknowledges
//! them. One batch is in flight at a time; a failed batch goes back to the front and the next
//! attempt waits with exponential backoff. Nothing is dropped except what the control plane says
//! it can never record.
//!
//! The bound is enforced at admission (requests being served count against it), never by
//! dropping a debit for a request that was served.

use std::collections::{HashMap, HashSet, VecDeque};

use metering::wire::{Debit, DebitAck, DebitOutcome, DebitResult, PROTOCOL_VERSION};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::debits::json as debit_json;

/// The most bytes of debits one batch carries: half the control plane's body limit (16 MiB), so
/// that a batch is never refused for its size (which would stall the queue behind it).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// A finalised debit waiting for the control plane: its ids, the amount it added to the account's
/// local spend (priced locally), and the debit as the batch sends it ([`debit_json::encode`]),
/// encoded once when the request finished, so that starting a batch copies bytes instead of
/// encoding a thousand debits at once (which stalled every request of the worker behind it).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDebit {
    pub debit_id: Uuid,
    pub account_id: Uuid,
    /// The budget entry the debit also spent on (a limited key's id).
    pub budget: Option<Uuid>,
    pub local_amount: Decimal,
    json: Vec<u8>,
}

impl PendingDebit {
    pub fn new(debit: &Debit, local_amount: Decimal) -> Self {
        Self {
            debit_id: debit.debit_id,
            account_id: debit.account_id,
            budget: None,
            local_amount,
            json: debit_json::encode(debit),
        }
    }

    pub fn with_budget(mut self, budget: Option<Uuid>) -> Self {
        self.budget = budget;
        self
    }
}

/// What an acknowledgement means for the shared account entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Recorded at `version`: move the local amount to that version's group.
    Acked {
        account: Uuid,
        /// A limited key's budget entry, settled the same way.
        budget: Option<Uuid>,
        amount: Decimal,
        version: u64,
    },
    /// Will never be recorded: stop counting it.
    Dropped {
        account: Uuid,
        budget: Option<Uuid>,
        amount: Decimal,
        debit_id: Uuid,
        reason: String,
    },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AckCounts {
    pub acked: u64,
    pub dropped: u64,
    /// Sent but absent from the answer: back in the queue.
    pub requeued: u64,
}

pub struct DebitBuffer {
    queue: VecDeque<PendingDebit>,
    sending: Vec<PendingDebit>,
    failures: u32,
    next_attempt_ms: u64,
    base_ms: u64,
    max_backoff_ms: u64,
}

impl DebitBuffer {
    pub fn new(base_ms: u64, max_backoff_ms: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            sending: Vec::new(),
            failures: 0,
            next_attempt_ms: 0,
            base_ms,
            max_backoff_ms,
        }
    }

    /// Debits not yet acknowledged, queued or in flight.
    pub fn len(&self) -> usize {
        self.queue.len() + self.sending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_sending(&self) -> bool {
        !self.sending.is_empty()
    }

    pub fn push(&mut self, debit: PendingDebit) {
        self.queue.push_back(debit);
    }

    /// After an answer: whether the next batch goes at once rather than on the next tick. A
    /// backlog of full batches keeps going at the ledger's pace, and a drain does not wait; a
    /// partial batch waits for the next tick (each batch costs the worker a moment during which its
    /// requests wait: a few times per second touches well under 1% of them).
    pub fn send_next_now(&self, draining: bool, max: usize, bound: usize) -> bool {
        draining || self.full_batch_waiting(max, bound)
    }

    /// A backlog: at least a full batch of `max` debits is queued, or half of the buffer's bound
    /// `bound` (with a bound under two batches, a full batch could never wait).
    pub fn full_batch_waiting(&self, max: usize, bound: usize) -> bool {
        self.queue.len() >= max.min(bound / 2).max(1)
    }

    /// True when a batch should go now: something queued, nothing in flight, backoff elapsed.
    /// `draining` ignores the backoff so that Envoy's drain flushes promptly.
    pub fn due(&self, now_ms: u64, draining: bool) -> bool {
        !self.queue.is_empty() && self.sending.is_empty() && (draining || now_ms >= self.next_attempt_ms)
    }

    /// Moves up to `max` debits in flight and returns the request body: a `DebitBatch` of those
    /// debits, from their stored encodings, asking for the compact answer.
    pub fn start_batch(&mut self, max: usize, gateway_id: Option<&str>) -> Option<Vec<u8>> {
        if self.is_sending() || self.queue.is_empty() {
            return None;
        }
        // At most `max` debits, and no more bytes than the control plane takes in one body (a
        // debit whose answer listed many iterations is larger than most).
        let mut bytes = 0usize;
        let n = self
            .queue
            .iter()
            .take(max)
            .take_while(|p| {
                bytes = bytes.saturating_add(p.json.len() + 1);
                bytes <= MAX_BATCH_BYTES
            })
            .count()
            .max(1)
            .min(self.queue.len());
        self.sending = self.queue.drain(..n).collect();
        let size: usize = self.sending.iter().map(|p| p.json.len() + 1).sum();
        let mut body = Vec::with_capacity(size + 64 + gateway_id.map_or(0, str::len));
        body.extend_from_slice(b"{\"protocol\":");
        debit_json::number(&mut body, u64::from(PROTOCOL_VERSION));
        body.extend_from_slice(b",\"gateway_id\":");
        match gateway_id {
            Some(id) => debit_json::string(&mut body, id),
            None => body.extend_from_slice(b"null"),
        }
        body.extend_from_slice(b",\"compact_ack\":true,\"debits\":[");
        for (i, p) in self.sending.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&p.json);
        }
        body.extend_from_slice(b"]}");
        Some(body)
    }

    /// The batch failed (transport error, non-2xx, unreadable answer): everything goes back to the
    /// front in order, and the next attempt waits `base * 2^failures`, capped.
    pub fn batch_failed(&mut self, now_ms: u64) -> usize {
        let n = self.sending.len();
        self.requeue_sending();
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(20);
        let delay = self
            .base_ms
            .saturating_mul(1u64 << shift)
            .min(self.max_backoff_ms);
        self.next_attempt_ms = now_ms.saturating_add(delay);
        n
    }

    /// Whether `ack` answers the batch in flight: a full answer always does (a debit it leaves out
    /// is sent again); a compact one, which vouches for every debit it does not list, only when it
    /// names a version, the batch's size, and no debit that was not sent.
    pub fn covers(&self, ack: &DebitAck) -> bool {
        let Some(version) = ack.applied_at_version else {
            return true;
        };
        if version == 0 || ack.batch_len != u64::try_from(self.sending.len()).ok() {
            return false;
        }
        // Every debit it lists must be one sent, or a sent one would be left out and read as
        // applied.
        ack.results.is_empty() || {
            let sent: HashSet<Uuid> = self.sending.iter().map(|p| p.debit_id).collect();
            ack.results.iter().all(|r| sent.contains(&r.debit_id))
        }
    }

    /// Applies an acknowledgement to the batch in flight (one that [`Self::covers`] it).
    pub fn batch_acked(&mut self, ack: &DebitAck, now_ms: u64) -> (Vec<Settlement>, AckCounts) {
        let sending = std::mem::take(&mut self.sending);
        let mut settlements = Vec::with_capacity(sending.len());
        let mut counts = AckCounts::default();
        let mut missing = Vec::new();
        // A full answer has each debit's result in the order sent: then result i is debit i's (and
        // the only one for its id, since the filter's ids are unique). Any other answer is matched
        // through an index built once, O(n) rather than O(n x answers); the first result for an id
        // wins, as a scan would have it. A compact answer lists only what the batch did not apply.
        let applied_at = ack.applied_at_version;
        let aligned = applied_at.is_none()
            && ack.results.len() == sending.len()
            && ack
                .results
                .iter()
                .zip(&sending)
                .all(|(r, p)| r.debit_id == p.debit_id);
        let by_id: HashMap<Uuid, &DebitResult> = if aligned {
            HashMap::new()
        } else {
            let mut by_id = HashMap::with_capacity(ack.results.len());
            for r in &ack.results {
                by_id.entry(r.debit_id).or_insert(r);
            }
            by_id
        };
        for (i, pending) in sending.into_iter().enumerate() {
            let result = if aligned {
                ack.results.get(i)
            } else {
                by_id.get(&pending.debit_id).copied()
            };
            let answer = match (result, applied_at) {
                (Some(r), _) => Some((r.outcome, r.version, r.error.as_deref())),
                (None, Some(version)) => Some((DebitOutcome::Applied, version, None)),
                (None, None) => None,
            };
            match answer {
                Some((DebitOutcome::Applied | DebitOutcome::Duplicate, version, _)) => {
                    counts.acked += 1;
                    settlements.push(Settlement::Acked {
                        account: pending.account_id,
                        budget: pending.budget,
                        amount: pending.local_amount,
                        version,
                    });
                }
                Some((outcome, _, error)) => {
                    counts.dropped += 1;
                    settlements.push(Settlement::Dropped {
                        account: pending.account_id,
                        budget: pending.budget,
                        amount: pending.local_amount,
                        debit_id: pending.debit_id,
                        reason: error.map_or_else(|| format!("{outcome:?}").to_lowercase(), str::to_owned),
                    });
                }
                None => {
                    counts.requeued += 1;
                    missing.push(pending);
                }
            }
        }
        for pending in missing.into_iter().rev() {
            self.queue.push_front(pending);
        }
        self.failures = 0;
        self.next_attempt_ms = now_ms;
        (settlements, counts)
    }

    fn requeue_sending(&mut self) {
        for pending in std::mem::take(&mut self.sending).into_iter().rev() {
            self.queue.push_front(pending);
        }
    }
}

/// One result of an acknowledgement as the filter reads it: the credits the control plane charged
/// are not needed here (the local amount is what gets settled), so they are skipped unparsed.
#[derive(serde::Deserialize)]
struct AckResult {
    debit_id: Uuid,
    outcome: DebitOutcome,
    version: u64,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct AckBody {
    #[serde(default = "protocol_version")]
    protocol: u32,
    results: Vec<AckResult>,
    #[serde(default)]
    applied_at_version: Option<u64>,
    #[serde(default)]
    batch_len: Option<u64>,
}

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

/// The control plane's answer to the batch in flight, as the root context received it (`status`
/// `None`: no answer, a timeout or a connection error; `body` read only for a 200): the
/// acknowledgement when it is readable and [`DebitBuffer::covers`] the batch, or why it is not
/// one (the batch then stays buffered and is retried).
pub fn read_answer(
    buffer: &DebitBuffer,
    status: Option<u16>,
    body: impl FnOnce() -> Vec<u8>,
) -> Result<DebitAck, String> {
    match status {
        Some(200) => {
            let ack = decode_ack(&body())?;
            if buffer.covers(&ack) {
                Ok(ack)
            } else {
                Err("the debit acknowledgement does not cover the batch sent".into())
            }
        }
        Some(status) => Err(format!("debits answered {status}")),
        None => Err("debit request failed (timeout or connection error)".into()),
    }
}

/// Reads the body of `POST /internal/v1/debits`'s answer, without the decimal parsing of every
/// result's credits that the worker would otherwise do at once for the whole batch.
pub fn decode_ack(body: &[u8]) -> Result<DebitAck, String> {
    let ack: AckBody =
        serde_json::from_slice(body).map_err(|e| format!("unreadable debit acknowledgement: {e}"))?;
    Ok(DebitAck {
        protocol: ack.protocol,
        applied_at_version: ack.applied_at_version,
        batch_len: ack.batch_len,
        results: ack
            .results
            .into_iter()
            .map(|r| DebitResult {
                debit_id: r.debit_id,
                outcome: r.outcome,
                version: r.version,
                credits: None,
                error: r.error,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_an_acknowledgement_only_when_it_covers_the_batch() {
        let mut buffer = DebitBuffer::new(100, 1000);
        for n in 1..=3 {
            buffer.push(pending(n));
        }
        assert!(buffer.start_batch(10, None).is_some());
        let full = r#"{"protocol":4,"results":[]}"#;
        assert!(read_answer(&buffer, Some(200), || full.as_bytes().to_vec()).is_ok());
        // Compact: the batch's size and a version, and only debits that were sent.
        let compact = |len: u64, id: u128| {
            format!(
                r#"{{"protocol":4,"applied_at_version":7,"batch_len":{len},"results":[{{"debit_id":"{}","outcome":"rejected","version":0,"error":"x"}}]}}"#,
                Uuid::from_u128(id)
            )
        };
        assert!(read_answer(&buffer, Some(200), || compact(3, 2).into_bytes()).is_ok());
        let short = read_answer(&buffer, Some(200), || compact(2, 2).into_bytes()).unwrap_err();
        assert_eq!(short, "the debit acknowledgement does not cover the batch sent");
        assert!(read_answer(&buffer, Some(200), || compact(3, 99).into_bytes()).is_err());
        let unreadable = read_answer(&buffer, Some(200), || b"{".to_vec()).unwrap_err();
        assert!(
            unreadable.starts_with("unreadable debit acknowledgement"),
            "{unreadable}"
        );
        // Not a 200: the body is not even read.
        let status = read_answer(&buffer, Some(503), || unreachable!("body read")).unwrap_err();
        assert_eq!(status, "debits answered 503");
        let none = read_answer(&buffer, None, || unreachable!("body read")).unwrap_err();
        assert_eq!(none, "debit request failed (timeout or connection error)");
    }

    #[test]
    fn the_next_batch_goes_at_once_when_draining_or_a_full_one_waits() {
        let mut buffer = DebitBuffer::new(100, 1000);
        assert!(!buffer.send_next_now(false, 2, 1_000));
        assert!(buffer.send_next_now(true, 2, 1_000));
        buffer.push(pending(1));
        assert!(!buffer.send_next_now(false, 2, 1_000));
        buffer.push(pending(2));
        assert_eq!(
            buffer.send_next_now(false, 2, 1_000),
            buffer.full_batch_waiting(2, 1_000)
        );
    }
    use chrono::{TimeZone, Utc};
    use metering::wire::{DebitBatch, Route};
    use metering::Usage;

    fn debit(n: u128) -> Debit {
        Debit {
            debit_id: Uuid::from_u128(n),
            key_hash: "h".into(),
            account_id: Uuid::from_u128(100),
            route: Route::AnthropicMessages,
            model_requested: "claude-x".into(),
            model_served: None,
            usage: Usage::default(),
            requested: Default::default(),
            partial: false,
            output_estimated: false,
            input_estimated: false,
            admitted_at: Utc.timestamp_opt(0, 0).unwrap(),
            finished_at: None,
            upstream_request_id: None,
            upstream_message_id: None,
            upstream_status: Some(200),
        }
    }

    fn pending(n: u128) -> PendingDebit {
        PendingDebit::new(&debit(n), Decimal::from(n as i64))
    }

    fn result(n: u128, outcome: DebitOutcome, version: u64) -> DebitResult {
        DebitResult {
            debit_id: Uuid::from_u128(n),
            outcome,
            version,
            credits: None,
            error: None,
        }
    }

    fn ids(b: &DebitBuffer) -> Vec<u128> {
        b.queue.iter().map(|p| p.debit_id.as_u128()).collect()
    }

    #[test]
    fn batch_takes_the_oldest_up_to_the_limit() {
        let mut b = DebitBuffer::new(100, 1000);
        (1..=3).for_each(|n| b.push(pending(n)));
        let body = b.start_batch(2, Some("gw")).unwrap();
        let sent: DebitBatch = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent.debits.len(), 2);
        assert_eq!(sent.debits[0].debit_id, Uuid::from_u128(1));
        assert_eq!(b.len(), 3, "in flight still counts");
        assert!(b.start_batch(2, None).is_none(), "one batch at a time");
    }

    #[test]
    fn a_batch_stays_under_the_byte_bound_whatever_its_debits_carry() {
        // Debits whose answers listed the most iterations a usage holds, with long names.
        let mut big = debit(0);
        big.usage.iterations = (0..metering::usage::MAX_ITERATION_GROUPS)
            .map(|i| metering::Iteration {
                kind: format!("{i:0>200}"),
                model: Some("m".repeat(256)),
                input_tokens: 1,
                ..Default::default()
            })
            .collect();
        let mut b = DebitBuffer::new(10_000, 1000);
        for n in 1..=1000u128 {
            big.debit_id = Uuid::from_u128(n);
            b.push(PendingDebit::new(&big, Decimal::ONE));
        }
        let body = b.start_batch(1000, None).unwrap();
        assert!(body.len() <= MAX_BATCH_BYTES + 128, "{}", body.len());
        let sent: DebitBatch = serde_json::from_slice(&body).unwrap();
        assert!(
            sent.debits.len() > 100 && sent.debits.len() < 1000,
            "{}",
            sent.debits.len()
        );
        // One debit is always sent, however large.
        let mut one = DebitBuffer::new(10, 1000);
        one.push(PendingDebit::new(&big, Decimal::ONE));
        assert!(one.start_batch(1000, None).is_some());
    }

    #[test]
    fn failed_batch_returns_to_the_front_with_growing_backoff() {
        let mut b = DebitBuffer::new(100, 250);
        (1..=3).for_each(|n| b.push(pending(n)));
        b.start_batch(2, None).unwrap();
        assert_eq!(b.batch_failed(1000), 2);
        assert_eq!(ids(&b), vec![1, 2, 3]);
        assert!(!b.due(1099, false) && b.due(1100, false));
        b.start_batch(2, None).unwrap();
        b.batch_failed(2000);
        assert!(!b.due(2199, false) && b.due(2200, false));
        b.start_batch(2, None).unwrap();
        b.batch_failed(3000);
        assert!(b.due(3250, false), "capped at the maximum");
        assert!(b.due(3000, true), "drain ignores the backoff");
    }

    #[test]
    fn ack_settles_recorded_drops_refused_and_requeues_missing() {
        let mut b = DebitBuffer::new(100, 1000);
        (1..=4).for_each(|n| b.push(pending(n)));
        b.start_batch(4, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: vec![
                result(1, DebitOutcome::Applied, 40),
                result(2, DebitOutcome::Duplicate, 41),
                result(3, DebitOutcome::Rejected, 0),
            ],
        };
        let (settlements, counts) = b.batch_acked(&ack, 5);
        assert_eq!(
            counts,
            AckCounts {
                acked: 2,
                dropped: 1,
                requeued: 1
            }
        );
        assert_eq!(
            settlements[0],
            Settlement::Acked {
                account: Uuid::from_u128(100),
                budget: None,
                amount: Decimal::from(1),
                version: 40
            }
        );
        assert!(matches!(settlements[2], Settlement::Dropped { amount, .. } if amount == Decimal::from(3)));
        assert_eq!(ids(&b), vec![4]);
        assert!(b.due(5, false), "backoff reset after an answer");
    }

    #[test]
    fn large_ack_is_matched_by_id_not_by_scanning() {
        // 30,000 debits (as many as one batch's bytes hold): a scan per debit is 9e8 comparisons
        // (seconds), an index is instant.
        let n = 30_000u128;
        let mut b = DebitBuffer::new(100, 1000);
        (1..=n).for_each(|i| b.push(pending(i)));
        b.start_batch(n as usize, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: (1..=n)
                .rev()
                .map(|i| result(i, DebitOutcome::Applied, 7))
                .collect(),
        };
        let started = std::time::Instant::now();
        let (settlements, counts) = b.batch_acked(&ack, 0);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(counts.acked, n as u64);
        assert_eq!(settlements.len(), n as usize);
    }

    #[test]
    fn first_result_for_a_debit_id_wins() {
        let mut b = DebitBuffer::new(100, 1000);
        b.push(pending(1));
        b.start_batch(1, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: vec![
                result(1, DebitOutcome::Applied, 40),
                result(1, DebitOutcome::Rejected, 0),
            ],
        };
        let (settlements, counts) = b.batch_acked(&ack, 0);
        assert_eq!(counts.acked, 1);
        assert!(matches!(settlements[0], Settlement::Acked { version: 40, .. }));
    }

    /// Debits with every field at its default and at other values, one field at a time.
    fn varied_debits() -> Vec<Debit> {
        let mut all = vec![debit(1)];
        let base = debit(2);
        let with = |f: &dyn Fn(&mut Debit)| {
            let mut d = base.clone();
            f(&mut d);
            d
        };
        all.push(with(&|d| d.route = Route::OpenaiChatCompletions));
        all.push(with(&|d| d.model_served = Some("claude-x-2025 \"é\" \\".into())));
        all.push(with(&|d| d.model_requested = "m \u{1} \n".into()));
        all.push(with(&|d| d.partial = true));
        all.push(with(&|d| d.output_estimated = true));
        all.push(with(&|d| d.input_estimated = true));
        all.push(with(&|d| {
            d.finished_at = Some(Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap())
        }));
        all.push(with(&|d| d.upstream_request_id = Some("req_1".into())));
        all.push(with(&|d| d.upstream_message_id = Some("msg_1".into())));
        all.push(with(&|d| d.upstream_status = None));
        all.push(with(&|d| d.usage.service_tier = Some("priority".into())));
        all.push(with(&|d| {
            d.usage = Usage {
                input_tokens: 1,
                output_tokens: 2,
                thinking_tokens: 3,
                cache_write_5m_tokens: 4,
                cache_write_1h_tokens: 5,
                cache_read_tokens: 6,
                web_search_requests: 7,
                web_fetch_requests: u64::MAX,
                service_tier: None,
                speed: Some("fast".into()),
                inference_geo: Some("us".into()),
                iterations: vec![metering::Iteration {
                    kind: "compaction".into(),
                    input_tokens: 8,
                    ..Default::default()
                }],
            }
        }));
        all.push(with(&|d| {
            d.requested = metering::RequestedOptions {
                speed: Some("fast".into()),
                inference_geo: None,
                code_execution: true,
            }
        }));
        all
    }

    #[test]
    fn the_compact_encoding_reads_back_as_the_same_debit() {
        for d in varied_debits() {
            let compact = debit_json::encode(&d);
            let full = serde_json::to_vec(&d).unwrap();
            let back: Debit = serde_json::from_slice(&compact).unwrap();
            assert_eq!(back, d, "{}", String::from_utf8_lossy(&compact));
            assert!(compact.len() <= full.len());
            // What the control plane fingerprints (the debit re-encoded) is the same either way.
            assert_eq!(serde_json::to_vec(&back).unwrap(), full);
        }
        let typical = debit(3);
        let (compact, full) = (
            debit_json::encode(&typical),
            serde_json::to_vec(&typical).unwrap(),
        );
        assert!(
            compact.len() * 4 < full.len() * 3,
            "{} vs {}",
            compact.len(),
            full.len()
        );
        // A served request as the gateway records one: two token counts, ids, both timestamps.
        let mut served = debit(4);
        served.key_hash = "a".repeat(64);
        served.model_requested = "claude-sonnet-4-5".into();
        served.model_served = Some("claude-sonnet-4-5-20250929".into());
        served.usage.input_tokens = 1_234;
        served.usage.output_tokens = 567;
        served.finished_at = Some(Utc.timestamp_opt(1_800_000_000, 123_456_789).unwrap());
        served.upstream_request_id = Some("req_011CVabcdefghijklmnop".into());
        served.upstream_message_id = Some("msg_011CVabcdefghijklmnop".into());
        let (compact, full) = (debit_json::encode(&served), serde_json::to_vec(&served).unwrap());
        assert!(
            compact.len() * 4 < full.len() * 3,
            "{} vs {}",
            compact.len(),
            full.len()
        );
    }

    #[test]
    fn batch_body_reads_as_the_batch_of_its_debits() {
        for gateway in [None, Some("gw \"one\" \\ é \u{1}")] {
            let mut b = DebitBuffer::new(100, 1000);
            let debits = varied_debits();
            for d in &debits {
                b.push(PendingDebit::new(d, Decimal::ONE));
            }
            let body = b.start_batch(100, gateway).unwrap();
            let sent: DebitBatch = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                sent,
                DebitBatch {
                    protocol: PROTOCOL_VERSION,
                    gateway_id: gateway.map(str::to_owned),
                    debits,
                    compact_ack: true,
                }
            );
        }
    }

    #[test]
    fn an_ack_in_another_order_settles_as_one_in_order() {
        let outcomes = [
            DebitOutcome::Applied,
            DebitOutcome::Rejected,
            DebitOutcome::Duplicate,
            DebitOutcome::Conflict,
        ];
        let answer = |order: &[u128]| DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: order
                .iter()
                .map(|n| result(*n, outcomes[(*n as usize) % 4], 10 + *n as u64))
                .collect(),
        };
        let settle = |ack: &DebitAck| {
            let mut b = DebitBuffer::new(100, 1000);
            (1..=8).for_each(|n| b.push(pending(n)));
            b.start_batch(8, None).unwrap();
            let out = b.batch_acked(ack, 0);
            (out, ids(&b))
        };
        let in_order = settle(&answer(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(in_order, settle(&answer(&[8, 7, 6, 5, 4, 3, 2, 1])));
        // One missing, and one answered twice (the first answer wins).
        let (settled, left) = settle(&answer(&[1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(left, vec![8]);
        assert_eq!(settled.1.requeued, 1);
        let mut twice = answer(&[1, 2, 3, 4, 5, 6, 7, 8]);
        twice.results.insert(0, result(2, DebitOutcome::Applied, 99));
        let ((settlements, _), _) = settle(&twice);
        assert!(matches!(settlements[1], Settlement::Acked { version: 99, .. }));
    }

    #[test]
    fn a_compact_ack_applies_every_debit_it_does_not_list_at_its_version() {
        let mut b = DebitBuffer::new(100, 1000);
        (1..=5).for_each(|n| b.push(pending(n)));
        b.start_batch(5, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            results: vec![
                result(2, DebitOutcome::Duplicate, 31),
                result(4, DebitOutcome::Rejected, 0),
            ],
            applied_at_version: Some(40),
            batch_len: Some(5),
        };
        assert!(b.covers(&ack));
        let (settlements, counts) = b.batch_acked(&ack, 0);
        assert_eq!(
            counts,
            AckCounts {
                acked: 4,
                dropped: 1,
                requeued: 0
            }
        );
        let versions: Vec<Option<u64>> = settlements
            .iter()
            .map(|s| match s {
                Settlement::Acked { version, .. } => Some(*version),
                Settlement::Dropped { .. } => None,
            })
            .collect();
        assert_eq!(versions, [Some(40), Some(31), Some(40), None, Some(40)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_compact_ack_for_another_batch_size_does_not_cover_the_batch() {
        let mut b = DebitBuffer::new(100, 1000);
        (1..=3).for_each(|n| b.push(pending(n)));
        b.start_batch(3, None).unwrap();
        let compact = |len| DebitAck {
            protocol: 1,
            results: vec![],
            applied_at_version: Some(9),
            batch_len: len,
        };
        assert!(b.covers(&compact(Some(3))));
        assert!(!b.covers(&compact(Some(2))));
        assert!(!b.covers(&compact(None)));
        let mut stranger = compact(Some(3));
        stranger.results.push(result(99, DebitOutcome::Rejected, 0));
        assert!(!b.covers(&stranger), "it names a debit that was not sent");
        let mut known = compact(Some(3));
        known.results.push(result(2, DebitOutcome::Rejected, 0));
        assert!(b.covers(&known));
        let mut no_version = compact(Some(3));
        no_version.applied_at_version = Some(0);
        assert!(!b.covers(&no_version));
        // A full answer always covers it: what it leaves out is sent again.
        assert!(b.covers(&DebitAck::full(vec![])));
        let decoded = decode_ack(br#"{"protocol":1,"results":[],"applied_at_version":9,"batch_len":3}"#);
        assert_eq!(decoded, Ok(compact(Some(3))));
    }

    #[test]
    fn decoded_acks_keep_everything_but_the_credits() {
        let mut r = result(5, DebitOutcome::Rejected, 0);
        r.credits = Some(Decimal::new(1234, 5));
        r.error = Some("no key has this hash".into());
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: vec![r, result(6, DebitOutcome::Applied, 12)],
        };
        let decoded = decode_ack(&serde_json::to_vec(&ack).unwrap()).unwrap();
        let mut expected = ack;
        expected.results[0].credits = None;
        assert_eq!(decoded, expected);
        assert!(decode_ack(br#"{"results":[{"debit_id":"x"}]}"#).is_err());
        assert!(decode_ack(b"").is_err());
    }

    #[test]
    fn only_a_full_batch_counts_as_a_backlog() {
        let mut b = DebitBuffer::new(100, 1000);
        (1..=3).for_each(|n| b.push(pending(n)));
        assert!(b.full_batch_waiting(3, 100) && !b.full_batch_waiting(4, 100));
        assert!(
            b.full_batch_waiting(1000, 6),
            "half of a small buffer bound is a backlog"
        );
        assert!(!b.full_batch_waiting(1000, 8));
        b.start_batch(2, None).unwrap();
        assert!(!b.full_batch_waiting(2, 100), "what is in flight is not waiting");
        assert!(b.full_batch_waiting(1, 100));
        assert!(b.full_batch_waiting(0, 0), "a limit of 0 means 1");
    }
}
