//! The filter's metrics, defined once per worker in `on_configure`. Envoy shares a metric of the
//! same name between workers and shows it in `/stats` with the `wasmcustom.` prefix, e.g.
//! `wasmcustom.claudestore.refused.no_credit`.
//!
//! Gauges that add up over workers (buffer size, cache size) move by deltas, so each worker's
//! share is counted once; the sync age is set by the leader only.
//!
//! Nothing here calls the host for a request that is served: the counters every served request
//! moves add up in the worker and are handed to Envoy by [`Metrics::flush`] on the root context's
//! tick (a host call costs more than the counting); refusals and failures, rare and watched, count
//! at once. The gauges are reported from the tick and the debit acknowledgements.

use std::cell::Cell;
use std::collections::HashMap;

use crate::host;
use filter_core::request::refusal::Refusal;
use filter_core::shared::store::UpdateError;

type Id = Option<u32>;

/// A counter's Envoy id and, for one moved by every served request, what this worker counted
/// since the last flush.
pub struct Counter {
    id: Id,
    batched: bool,
    pending: Cell<u64>,
}

impl Counter {
    fn define(name: &str) -> Self {
        Self {
            id: host::define_counter(&format!("claudestore.{name}")),
            batched: false,
            pending: Cell::new(0),
        }
    }

    /// Moved by every served request: counted in the worker, flushed on the tick.
    fn per_request(name: &str) -> Self {
        Self {
            batched: true,
            ..Self::define(name)
        }
    }

    fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            host::increment(self.id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

pub struct Metrics {
    pub admitted_billed: Counter,
    pub admitted_free: Counter,
    pub passed_control_plane: Counter,
    refused: HashMap<&'static str, Counter>,
    pub lookups: Counter,
    pub lookup_failures: Counter,
    pub debits_finalised: Counter,
    pub debits_partial: Counter,
    pub debits_sent: Counter,
    pub debits_acked: Counter,
    pub debits_retried: Counter,
    pub debits_dropped: Counter,
    pub served_model_unpriced: Counter,
    /// Billed requests of `reserve` accounts admitted without holding their ceiling (no account
    /// entry yet, or shared data too contended).
    pub admitted_without_hold: Counter,
    pub shared_data_contention: Counter,
    pub sync_pages: Counter,
    pub sync_failures: Counter,
    pub sync_age_ms: Id,
    pub debit_buffer_size: Id,
    pub negative_cache_size: Id,
    buffer_reported: Cell<i64>,
    cache_reported: Cell<i64>,
}

fn gauge(name: &str) -> Id {
    host::define_gauge(&format!("claudestore.{name}"))
}

impl Metrics {
    pub fn define() -> Self {
        Self {
            admitted_billed: Counter::per_request("admitted.billed"),
            admitted_free: Counter::per_request("admitted.free"),
            passed_control_plane: Counter::per_request("passed.control_plane"),
            refused: Refusal::REASONS
                .iter()
                .map(|r| (*r, Counter::define(&format!("refused.{r}"))))
                .collect(),
            lookups: Counter::define("lookups"),
            lookup_failures: Counter::define("lookup_failures"),
            debits_finalised: Counter::per_request("debits.finalised"),
            debits_partial: Counter::per_request("debits.partial"),
            debits_sent: Counter::define("debits.sent"),
            debits_acked: Counter::define("debits.acked"),
            debits_retried: Counter::define("debits.retried"),
            debits_dropped: Counter::define("debits.dropped"),
            served_model_unpriced: Counter::define("served_model_unpriced"),
            admitted_without_hold: Counter::define("admitted.without_hold"),
            shared_data_contention: Counter::define("shared_data_contention"),
            sync_pages: Counter::define("sync.pages"),
            sync_failures: Counter::define("sync.failures"),
            sync_age_ms: gauge("sync.age_ms"),
            debit_buffer_size: gauge("debit_buffer.size"),
            negative_cache_size: gauge("negative_cache.size"),
            buffer_reported: Cell::new(0),
            cache_reported: Cell::new(0),
        }
    }

    pub fn count(&self, counter: &Counter) {
        self.add(counter, 1);
    }

    pub fn add(&self, counter: &Counter, n: u64) {
        if counter.batched {
            counter.pending.set(counter.pending.get().saturating_add(n));
        } else {
            host::increment(counter.id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A local spend that did not reach the shared entry yet (every compare-and-swap attempt met
    /// another writer, or the host refused the write): it stays counted by its worker and is
    /// tried again on the next tick.
    pub fn spend_not_published(&self, e: &UpdateError) {
        self.count(&self.shared_data_contention);
        log::warn!("local spend not published yet ({e}); tried again on the next tick");
    }

    pub fn refused(&self, refusal: &Refusal) {
        if let Some(counter) = self.refused.get(refusal.reason()) {
            self.count(counter);
        }
    }

    /// Hands what the worker counted since the last flush to Envoy (root context's tick).
    pub fn flush(&self) {
        [
            &self.admitted_billed,
            &self.admitted_free,
            &self.passed_control_plane,
            &self.debits_finalised,
            &self.debits_partial,
        ]
        .into_iter()
        .for_each(Counter::flush);
    }

    /// This worker's share of `debit_buffer.size` ([`filter_core::worker::Worker::load`]: buffered
    /// debits plus billed requests in flight), summed over workers by Envoy. Reported on every
    /// tick (at most one sync period apart, which is what a drain waits between its two reads of
    /// 0) and after every acknowledgement, not per request.
    pub fn report_buffer(&self, size: usize) {
        report_delta(self.debit_buffer_size, &self.buffer_reported, size);
    }

    pub fn report_negative_cache(&self, size: usize) {
        report_delta(self.negative_cache_size, &self.cache_reported, size);
    }

    pub fn report_sync_age(&self, age_ms: u64) {
        host::record(self.sync_age_ms, age_ms);
    }
}

fn report_delta(id: Id, reported: &Cell<i64>, size: usize) {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let delta = size - reported.get();
    if delta != 0 {
        host::increment(id, delta);
        reported.set(size);
    }
}
