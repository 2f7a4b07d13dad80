//! This worker's debit buffer: finalised debits wait here until the control plane acknowledges
//! them. One batch is in flight at a time; a failed batch goes back to the front and the next
//! attempt waits with exponential backoff. Nothing is dropped except what the control plane says
//! it can never record.
//!
//! The bound is enforced at admission (requests being served count against it), never by
//! dropping a debit for a request that was served.

use std::collections::{HashMap, VecDeque};

use metering::wire::{Debit, DebitAck, DebitBatch, DebitOutcome, DebitResult, PROTOCOL_VERSION};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A debit with the amount it added to the account's local spend (priced locally).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDebit {
    pub debit: Debit,
    pub local_amount: Decimal,
}

/// What an acknowledgement means for the shared account entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Recorded at `version`: move the local amount to that version's group.
    Acked {
        account: Uuid,
        amount: Decimal,
        version: u64,
    },
    /// Will never be recorded: stop counting it.
    Dropped {
        account: Uuid,
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

    /// True when a batch should go now: something queued, nothing in flight, backoff elapsed.
    /// `draining` ignores the backoff so that Envoy's drain flushes promptly.
    pub fn due(&self, now_ms: u64, draining: bool) -> bool {
        !self.queue.is_empty() && self.sending.is_empty() && (draining || now_ms >= self.next_attempt_ms)
    }

    /// Moves up to `max` debits in flight and returns the request body.
    pub fn start_batch(&mut self, max: usize, gateway_id: Option<&str>) -> Option<Vec<u8>> {
        if self.is_sending() || self.queue.is_empty() {
            return None;
        }
        let n = max.min(self.queue.len());
        self.sending = self.queue.drain(..n).collect();
        let batch = DebitBatch {
            protocol: PROTOCOL_VERSION,
            gateway_id: gateway_id.map(str::to_owned),
            debits: self.sending.iter().map(|p| p.debit.clone()).collect(),
        };
        match serde_json::to_vec(&batch) {
            Ok(body) => Some(body),
            Err(_) => {
                // Cannot happen for these types; keep the debits rather than lose them.
                self.requeue_sending();
                None
            }
        }
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

    /// Applies an acknowledgement to the batch in flight.
    pub fn batch_acked(&mut self, ack: &DebitAck, now_ms: u64) -> (Vec<Settlement>, AckCounts) {
        let mut settlements = Vec::new();
        let mut counts = AckCounts::default();
        let mut missing = Vec::new();
        // Indexed once: a batch of n debits is matched in O(n), not O(n x answers). The first
        // result for an id wins, as a scan would have it.
        let mut by_id: HashMap<Uuid, &DebitResult> = HashMap::with_capacity(ack.results.len());
        for r in &ack.results {
            by_id.entry(r.debit_id).or_insert(r);
        }
        for pending in std::mem::take(&mut self.sending) {
            match by_id.get(&pending.debit.debit_id).copied() {
                Some(r) if matches!(r.outcome, DebitOutcome::Applied | DebitOutcome::Duplicate) => {
                    counts.acked += 1;
                    settlements.push(Settlement::Acked {
                        account: pending.debit.account_id,
                        amount: pending.local_amount,
                        version: r.version,
                    });
                }
                Some(r) => {
                    counts.dropped += 1;
                    settlements.push(Settlement::Dropped {
                        account: pending.debit.account_id,
                        amount: pending.local_amount,
                        debit_id: pending.debit.debit_id,
                        reason: r
                            .error
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", r.outcome).to_lowercase()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use metering::wire::Route;
    use metering::Usage;

    fn pending(n: u128) -> PendingDebit {
        PendingDebit {
            debit: Debit {
                debit_id: Uuid::from_u128(n),
                key_hash: "h".into(),
                account_id: Uuid::from_u128(100),
                route: Route::AnthropicMessages,
                model_requested: "claude-x".into(),
                model_served: None,
                usage: Usage::default(),
                partial: false,
                output_estimated: false,
                input_estimated: false,
                admitted_at: Utc.timestamp_opt(0, 0).unwrap(),
                finished_at: None,
                upstream_request_id: None,
                upstream_message_id: None,
                upstream_status: Some(200),
            },
            local_amount: Decimal::from(n as i64),
        }
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
        b.queue.iter().map(|p| p.debit.debit_id.as_u128()).collect()
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
        // 40,000 debits: a scan per debit is 1.6e9 comparisons (many seconds), an index is instant.
        let n = 40_000u128;
        let mut b = DebitBuffer::new(100, 1000);
        (1..=n).for_each(|i| b.push(pending(i)));
        b.start_batch(n as usize, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
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
            results: vec![
                result(1, DebitOutcome::Applied, 40),
                result(1, DebitOutcome::Rejected, 0),
            ],
        };
        let (settlements, counts) = b.batch_acked(&ack, 0);
        assert_eq!(counts.acked, 1);
        assert!(matches!(settlements[0], Settlement::Acked { version: 40, .. }));
    }
}
