//! The root context, one per worker: configuration, and one timer for all periodic work.
//!
//! Each tick: adopt a changed price table; take or renew the sync lease and, as the leader, ask
//! for the next snapshot page; send this worker's next debit batch when due. Answers come back in
//! `on_http_call_response`. On `on_done` (plugin teardown, Envoy drain) the lease is released and
//! the buffer flushed, answering `false` until it is empty.

use std::cell::RefCell;
use std::rc::Rc;

use metering::wire::{HoldReport, PROTOCOL_VERSION};
use metering::PriceTable;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::host::{self, Call, HostStore};
use crate::http::{BillingHttp, Shared};
use crate::metrics::Metrics;
use filter_core::config::Config;
use filter_core::debits::buffer::{read_answer, Settlement};
use filter_core::sync::holds;
use filter_core::sync::snapshot::{apply_page, hold_lease, read_page, release_lease, Progress, SyncStatus};
use filter_core::worker::{duration_ms, Worker};

pub struct BillingRoot {
    worker_id: u64,
    shared: Option<Shared>,
    sync: Progress,
    flush_token: Option<u32>,
    /// This worker's hold report in shared data.
    reporter: holds::Reporter,
    /// When a hold report (with a snapshot's first page) was last answered.
    holds_ok_ms: u64,
    /// The Envoy's id in hold reports (`cs.gateway`), once read.
    gateway: Option<uuid::Uuid>,
    /// Keys refused for their limit that the report in flight carries (dropped from
    /// `cs.limited` once it is answered).
    limited_sent: Vec<uuid::Uuid>,
    draining: bool,
    /// `proxy_done` was called: the tick may still fire once, it must not call it again.
    done: bool,
}

impl BillingRoot {
    pub fn new() -> Self {
        let worker_id = host::random::<8>().map(u64::from_le_bytes).unwrap_or(0);
        Self {
            worker_id,
            shared: None,
            sync: Progress::default(),
            flush_token: None,
            reporter: holds::Reporter::default(),
            holds_ok_ms: 0,
            gateway: None,
            limited_sent: Vec::new(),
            draining: false,
            done: false,
        }
    }

    fn configure(&mut self) -> Result<(), String> {
        let bytes = host::plugin_configuration().ok_or("the plugin configuration is empty")?;
        let settings = Rc::new(Config::from_json(&bytes)?);
        let fallback = PriceTable::default_table(settings.price_factor)
            .map_err(|e| format!("the built-in price table cannot be loaded: {e}"))?;
        let seed =
            host::random::<32>().ok_or("the host gives no randomness (WASI random_get) for debit ids")?;
        log::info!("claudestore filter configured: {}", settings.summary());
        host::set_tick_period(settings.tick_period());
        host::define_epochs();
        let mut worker = Worker::new(Rc::clone(&settings), fallback, seed);
        if !worker.check_counters(&HostStore) {
            log::warn!(
                "the claudestore.account_writes counters do not move (a stats_matcher rejecting \
                 wasmcustom.*?): account entries are read from shared data on every request"
            );
        }
        self.shared = Some(Shared {
            worker: Rc::new(RefCell::new(worker)),
            metrics: Rc::new(Metrics::define()),
            settings,
        });
        Ok(())
    }

    fn tick(&mut self, shared: &Shared) {
        let now = host::now_ms();
        let status = SyncStatus::read(&HostStore);
        if let Ok(mut worker) = shared.worker.try_borrow_mut() {
            if let Some(entropy) = host::random::<32>() {
                worker.ids.stir(entropy);
            }
            publish_spend(shared, &mut worker);
            worker.set_others(holds::read_others(&HostStore));
            self.reporter.tick(
                &HostStore,
                self.worker_id,
                &worker.reported(),
                now,
                shared.settings.cas_retries,
            );
            worker.observe_status(status);
            match worker.refresh_prices(&HostStore, &status) {
                Ok(true) => log::info!("price table updated from the control plane"),
                Ok(false) => {}
                Err(e) => log::error!("keeping the current price table: {e}"),
            }
        }
        if !self.draining {
            let ttl = duration_ms(shared.settings.lease_ttl);
            if hold_lease(&HostStore, self.worker_id, now, ttl, shared.settings.cas_retries) {
                shared
                    .metrics
                    .report_sync_age(now.saturating_sub(status.last_ok_ms));
                if self.sync.start(status.version, now) {
                    self.request_snapshot(shared, now);
                }
            }
        }
        self.flush(shared, now);
        if let Ok(worker) = shared.worker.try_borrow() {
            shared.metrics.report_buffer(worker.load());
            shared.metrics.report_negative_cache(worker.negative.len());
        }
        shared.metrics.flush();
        // A drain can end here too: the last request in flight may have left no debit.
        self.finish_drain_if_done(shared);
    }

    fn request_snapshot(&mut self, shared: &Shared, now: u64) {
        let s = &shared.settings;
        let path = self.sync.path(s.snapshot_page_limit);
        // A sync's first page carries this Envoy's hold report; its answer, the other Envoys'.
        let report = if self.sync.first_page() {
            self.hold_report(shared, now)
        } else {
            None
        };
        let call = Call {
            cluster: &s.control_plane_cluster,
            authority: &s.control_plane_authority,
            token: &s.internal_token,
            method: if report.is_some() { "POST" } else { "GET" },
            path: &path,
            body: report.as_deref(),
            timeout: s.call_timeout,
        };
        match host::dispatch(&call) {
            Ok(token) => self.sync.in_flight = Some(token),
            Err(e) => {
                log::warn!(
                    "snapshot request to cluster {} not dispatched: {e:?}",
                    s.control_plane_cluster
                );
                shared.metrics.count(&shared.metrics.sync_failures);
                self.sync.retry_later(now, duration_ms(s.sync_period));
            }
        }
    }

    /// As the leader: this Envoy's hold report (see `holds`), the body of a sync's first page.
    fn hold_report(&mut self, shared: &Shared, now: u64) -> Option<Vec<u8>> {
        let s = &shared.settings;
        let gateway = match self.gateway {
            Some(g) => g,
            None => {
                let candidate = uuid::Uuid::from_bytes(host::random::<16>()?);
                let g = holds::gateway_id(&HostStore, candidate, s.cas_retries)?;
                self.gateway = Some(g);
                g
            }
        };
        let fresh = holds::fresh_ms(duration_ms(s.tick_period()));
        let (report, gone) = holds::gather(&HostStore, now, fresh);
        if let Err(e) = holds::forget(&HostStore, &gone, s.cas_retries) {
            log::warn!("silent workers not dropped from the hold registry: {e}");
        }
        self.limited_sent = holds::limited(&HostStore);
        serde_json::to_vec(&HoldReport {
            protocol: PROTOCOL_VERSION,
            gateway,
            holds: report,
            limited_keys: self.limited_sent.clone(),
        })
        .ok()
    }

    /// The other Envoys' holds as a snapshot's answer gave them, or, when no answer came for
    /// longer than `stale_after`, none (as the control plane stops counting a silent Envoy's).
    fn others_answered(&mut self, shared: &Shared, others: Option<&[metering::wire::AccountHold]>, now: u64) {
        match others {
            Some(others) => {
                self.holds_ok_ms = now;
                holds::write_others(&HostStore, others);
                let sent = std::mem::take(&mut self.limited_sent);
                if let Err(e) = holds::reported_limited(&HostStore, &sent, shared.settings.cas_retries) {
                    log::warn!("reported limited keys not dropped (they are reported again): {e}");
                }
            }
            None => {
                if holds::others_stale(now, self.holds_ok_ms, duration_ms(shared.settings.stale_after)) {
                    holds::write_others(&HostStore, &[]);
                }
            }
        }
    }

    fn on_snapshot(&mut self, shared: &Shared, body_size: usize) {
        self.sync.in_flight = None;
        let now = host::now_ms();
        let period = duration_ms(shared.settings.sync_period);
        let page = match read_page(host::call_status(), || host::call_body(body_size)) {
            Ok(page) => page,
            Err(e) => {
                log::warn!("{e}; retrying in {period} ms");
                shared.metrics.count(&shared.metrics.sync_failures);
                self.sync.retry_later(now, period);
                self.others_answered(shared, None, now);
                return;
            }
        };
        if page.others.is_some() {
            self.others_answered(shared, page.others.as_deref(), now);
        }
        let since = self.sync.since();
        let outcome = apply_page(&HostStore, &page, since, now, shared.settings.cas_retries);
        if outcome.reset {
            log::warn!(
                "the control plane is at version {} behind ours ({since}): restored or replaced \
                 database; its snapshot replaces the cached keys and balances",
                page.version
            );
        }
        shared.metrics.count(&shared.metrics.sync_pages);
        if !outcome.failures.is_empty() {
            shared.metrics.add(
                &shared.metrics.shared_data_contention,
                outcome.failures.len() as u64,
            );
            log::warn!(
                "snapshot page not fully applied ({}); fetching it again",
                outcome.failures.len()
            );
            self.sync.retry_later(now, period);
            return;
        }
        if self
            .sync
            .page_applied(page.next_cursor, self.draining, now, period)
        {
            self.request_snapshot(shared, now);
        }
    }

    fn flush(&mut self, shared: &Shared, now: u64) {
        if self.flush_token.is_some() {
            return;
        }
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            return;
        };
        if !worker.debits.due(now, self.draining) {
            return;
        }
        // A batch's acknowledgement settles amounts that must be in the shared entries by then.
        if !publish_spend(shared, &mut worker) {
            return;
        }
        let s = &shared.settings;
        let Some(body) = worker
            .debits
            .start_batch(s.debit_batch_max, s.gateway_id.as_deref())
        else {
            return;
        };
        let call = Call {
            cluster: &s.control_plane_cluster,
            authority: &s.control_plane_authority,
            token: &s.internal_token,
            method: "POST",
            path: "/internal/v1/debits",
            body: Some(&body),
            timeout: s.call_timeout,
        };
        match host::dispatch(&call) {
            Ok(token) => {
                self.flush_token = Some(token);
                let n = worker.debits.len();
                drop(worker);
                log::debug!("debit batch sent ({n} buffered)");
            }
            Err(e) => {
                let n = worker.debits.batch_failed(now);
                shared.metrics.add(&shared.metrics.debits_retried, n as u64);
                log::warn!(
                    "debit batch not dispatched to cluster {}: {e:?}",
                    s.control_plane_cluster
                );
            }
        }
    }

    fn on_debit_ack(&mut self, shared: &Shared, body_size: usize) {
        self.flush_token = None;
        let now = host::now_ms();
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            return;
        };
        match read_answer(&worker.debits, host::call_status(), || host::call_body(body_size)) {
            Ok(ack) => {
                let (settlements, counts) = worker.debits.batch_acked(&ack, now);
                let m = &shared.metrics;
                m.add(&m.debits_sent, counts.acked + counts.dropped);
                m.add(&m.debits_acked, counts.acked);
                m.add(&m.debits_dropped, counts.dropped);
                m.add(&m.debits_retried, counts.requeued);
                for s in &settlements {
                    if let Settlement::Dropped { debit_id, reason, .. } = s {
                        log::error!("control plane refused debit {debit_id} for good: {reason}");
                    }
                }
                let failures = worker.settle(&HostStore, &settlements);
                if !failures.is_empty() {
                    m.add(&m.shared_data_contention, failures.len() as u64);
                    log::warn!(
                        "{} acknowledgements not applied to shared data: {}",
                        failures.len(),
                        failures
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                }
            }
            Err(e) => {
                let n = worker.debits.batch_failed(now);
                shared.metrics.add(&shared.metrics.debits_retried, n as u64);
                log::warn!("{e}; {n} debits stay buffered and are retried with backoff");
            }
        }
        shared.metrics.report_buffer(worker.load());
        let s = &shared.settings;
        let next_now = worker
            .debits
            .send_next_now(self.draining, s.debit_batch_max, s.debit_buffer_max);
        drop(worker);
        if next_now {
            self.flush(shared, now);
        }
        self.finish_drain_if_done(shared);
    }

    /// No batch in flight, nothing buffered, and no billed request still being served (it would
    /// add a debit after the worker stopped).
    fn drained(&self, shared: &Shared) -> bool {
        self.flush_token.is_none() && shared.worker.try_borrow().is_ok_and(|w| w.drained())
    }

    fn finish_drain_if_done(&mut self, shared: &Shared) {
        if self.draining && !self.done && self.drained(shared) {
            self.done = true;
            shared.metrics.flush();
            log::info!("debit buffer flushed; worker done");
            host::done();
        }
    }
}

impl Default for BillingRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for BillingRoot {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.sync.in_flight == Some(token_id) {
            self.on_snapshot(&shared, body_size);
        } else if self.flush_token == Some(token_id) {
            self.on_debit_ack(&shared, body_size);
        }
    }

    fn on_done(&mut self) -> bool {
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        self.draining = true;
        release_lease(&HostStore, self.worker_id, shared.settings.cas_retries);
        self.flush(&shared, host::now_ms());
        let done = self.drained(&shared);
        if !done {
            let (n, serving) = shared
                .worker
                .try_borrow()
                .map(|w| (w.debits.len(), w.in_flight))
                .unwrap_or((0, 0));
            log::info!(
                "draining: flushing {n} buffered debits and waiting for {serving} billed requests \
                 before the worker stops"
            );
        }
        done
    }
}

impl RootContext for BillingRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.configure() {
            Ok(()) => true,
            Err(e) => {
                log::error!("claudestore filter configuration refused: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            self.tick(&shared);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Unconfigured, the context refuses with 503.
        Some(Box::new(BillingHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The worker's unpublished local spend, into the shared entries (see `Worker::publish_spend`);
/// false when some of it is still unpublished.
fn publish_spend(shared: &Shared, worker: &mut Worker) -> bool {
    let failures = worker.publish_spend(&HostStore, host::now_ms());
    for e in &failures {
        shared.metrics.spend_not_published(e);
    }
    failures.is_empty()
}
