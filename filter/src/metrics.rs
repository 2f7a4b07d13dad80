//! The filter's metrics, defined once per worker in `on_configure`. Envoy shares a metric of the
//! same name between workers and shows it in `/stats` with the `wasmcustom.` prefix, e.g.
//! `wasmcustom.claudestore.refused.no_credit`.
//!
//! Gauges that add up over workers (buffer size, cache size) move by deltas, so each worker's
//! share is counted once; the sync age is set by the leader only.

use std::cell::Cell;
use std::collections::HashMap;

use crate::host;
use crate::refusal::Refusal;

type Id = Option<u32>;

pub struct Metrics {
    pub admitted_billed: Id,
    pub admitted_free: Id,
    pub passed_control_plane: Id,
    refused: HashMap<&'static str, Id>,
    pub lookups: Id,
    pub lookup_failures: Id,
    pub debits_finalised: Id,
    pub debits_partial: Id,
    pub debits_sent: Id,
    pub debits_acked: Id,
    pub debits_retried: Id,
    pub debits_dropped: Id,
    pub served_model_unpriced: Id,
    pub shared_data_contention: Id,
    pub sync_pages: Id,
    pub sync_failures: Id,
    pub sync_age_ms: Id,
    pub debit_buffer_size: Id,
    pub negative_cache_size: Id,
    buffer_reported: Cell<i64>,
    cache_reported: Cell<i64>,
}

fn counter(name: &str) -> Id {
    host::define_counter(&format!("claudestore.{name}"))
}

fn gauge(name: &str) -> Id {
    host::define_gauge(&format!("claudestore.{name}"))
}

impl Metrics {
    pub fn define() -> Self {
        Self {
            admitted_billed: counter("admitted.billed"),
            admitted_free: counter("admitted.free"),
            passed_control_plane: counter("passed.control_plane"),
            refused: Refusal::REASONS
                .iter()
                .map(|r| (*r, counter(&format!("refused.{r}"))))
                .collect(),
            lookups: counter("lookups"),
            lookup_failures: counter("lookup_failures"),
            debits_finalised: counter("debits.finalised"),
            debits_partial: counter("debits.partial"),
            debits_sent: counter("debits.sent"),
            debits_acked: counter("debits.acked"),
            debits_retried: counter("debits.retried"),
            debits_dropped: counter("debits.dropped"),
            served_model_unpriced: counter("served_model_unpriced"),
            shared_data_contention: counter("shared_data_contention"),
            sync_pages: counter("sync.pages"),
            sync_failures: counter("sync.failures"),
            sync_age_ms: gauge("sync.age_ms"),
            debit_buffer_size: gauge("debit_buffer.size"),
            negative_cache_size: gauge("negative_cache.size"),
            buffer_reported: Cell::new(0),
            cache_reported: Cell::new(0),
        }
    }

    pub fn count(&self, id: Id) {
        host::increment(id, 1);
    }

    pub fn add(&self, id: Id, n: u64) {
        host::increment(id, i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn refused(&self, refusal: &Refusal) {
        host::increment(self.refused.get(refusal.reason()).copied().flatten(), 1);
    }

    /// This worker's share of `debit_buffer.size` ([`crate::worker::Worker::load`]: buffered
    /// debits plus billed requests in flight), summed over workers by Envoy. Reported whenever
    /// either changes, so a drain that reads 0 has nothing left to wait for.
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
