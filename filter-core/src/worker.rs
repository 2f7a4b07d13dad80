//! The state one worker's contexts share (one VM per worker, single-threaded): the debit buffer,
//! the negative cache, the price table in use, and the count of billed requests being served.
//! The root context owns it; HTTP contexts reach it through an `Rc<RefCell<_>>` and never keep a
//! borrow across callbacks.

use std::collections::HashMap;
use std::rc::Rc;

use metering::wire::Debit;
use metering::PriceTable;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::config::Config;
use crate::debits::buffer::{DebitBuffer, PendingDebit, Settlement};
use crate::debits::ids::DebitIds;
use crate::request::admission::GatewayState;
use crate::shared::accountcache::{counters_move, epoch_shard, AccountCache};
use crate::shared::balances::{
    add_spend, lease, read_account, read_key, settle_spends, Hold, LeaseChange, Reserved, SpendOutcome,
};
use crate::shared::keycache::KeyCache;
use crate::shared::lookup_budget::LookupBudget;
use crate::shared::negcache::NegativeCache;
use crate::shared::state::{add, sub, AccountEntry, KeyEntry};
use crate::shared::store::{SharedStore, UpdateError};
use crate::sync::snapshot::{read_prices, SyncStatus};

pub struct Worker {
    pub settings: Rc<Config>,
    pub debits: DebitBuffer,
    pub negative: NegativeCache,
    /// Lookups of keys not cached yet that this worker may still make (see `lookup_budget`).
    pub lookups: LookupBudget,
    /// Billed requests admitted and not yet finalised: they reserve room in the debit buffer.
    pub in_flight: usize,
    pub prices: Rc<PriceTable>,
    prices_seq: Option<u64>,
    /// `cs.sync3` as last read: by the tick, or by a request that found it stale.
    status: Option<SyncStatus>,
    keys: KeyCache,
    accounts: AccountCache,
    /// The write counters were seen to move ([`Self::check_counters`]): copies may be kept.
    copies: bool,
    /// Local spend finalised here and not yet added to the shared account entries (see
    /// [`Self::record_debit`]).
    unpublished: HashMap<Uuid, Decimal>,
    /// This worker's leases: its share of each account's holds in shared data (spend control
    /// `reserve`), what it reports for the Envoy's hold report.
    leases: HashMap<Uuid, Lease>,
    /// What requests that held their ceiling cost, per account, until the control plane
    /// acknowledges their debits: reported with the holds, so that other Envoys keep counting a
    /// request between its end here and its debit in their snapshots.
    spent_unacked: HashMap<Uuid, Decimal>,
    /// What other Envoys' requests in flight hold, per account, as the control plane last said.
    others: HashMap<Uuid, Decimal>,
    /// Keys this worker noted as refused for their limit, and when (see [`Self::note_limited`]).
    limited_noted: HashMap<Uuid, u64>,
    pub ids: DebitIds,
}

/// A worker's share of an account's holds in shared data. Requests of the worker take their
/// ceilings from it without a shared-data call while it has room; when it has none, one
/// compare-and-swap releases it, writes the ended requests' spend, and holds what the requests in
/// flight need plus the new one's ceiling, with spare credits when the account has plenty
/// ([`crate::shared::balances::lease`]). The tick gives the spare back, writes the spend, and renews the
/// lease's expiry while requests are in flight. Other workers see the whole lease held: at most a
/// tick's worth of spare they cannot use, never a credit held twice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Lease {
    /// Held in shared data for this worker, in the group expiring at `expiry_ms`.
    held: Decimal,
    expiry_ms: u64,
    /// The ceilings of this worker's requests in flight on the account.
    in_use: Decimal,
    /// What its ended requests cost, not yet written to the entry (still covered by `held`).
    spent: Decimal,
}

impl Lease {
    fn free(&self) -> Decimal {
        sub(sub(self.held, self.in_use), self.spent)
    }
}

/// Why a request's ceiling was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// It does not fit: what was available.
    Short(Decimal),
}

/// A limited key's budget entry as a request spends on it: its id (the key's), the spendable
/// budget the admission saw, and the request's hold on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCharge {
    pub id: Uuid,
    pub spendable: Decimal,
    pub hold: Option<Hold>,
}

/// What recording a debit did, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub local_amount: Decimal,
    pub served_model_unpriced: bool,
    pub spend_error: Option<UpdateError>,
}

impl Worker {
    /// `seed`: entropy for the debit ids (see [`DebitIds`]).
    pub fn new(settings: Rc<Config>, fallback_prices: PriceTable, seed: [u8; 32]) -> Self {
        Self {
            debits: DebitBuffer::new(
                duration_ms(settings.flush_period),
                duration_ms(settings.flush_backoff_max),
            ),
            negative: NegativeCache::new(
                settings.negative_cache_size,
                duration_ms(settings.negative_cache_ttl),
            ),
            lookups: LookupBudget::new(settings.lookup_rate_per_s, settings.lookup_burst),
            in_flight: 0,
            prices: Rc::new(fallback_prices),
            prices_seq: None,
            status: None,
            keys: KeyCache::default(),
            accounts: AccountCache::default(),
            copies: false,
            unpublished: HashMap::new(),
            leases: HashMap::new(),
            spent_unacked: HashMap::new(),
            others: HashMap::new(),
            limited_noted: HashMap::new(),
            ids: DebitIds::new(seed),
            settings,
        }
    }

    pub fn gateway_state(&self, status: &SyncStatus, now_ms: u64) -> GatewayState {
        GatewayState {
            fail_mode: self.settings.fail_mode,
            control_plane_stale: status.is_stale(now_ms, duration_ms(self.settings.stale_after)),
            debit_buffer_full: self.load() >= self.settings.debit_buffer_max,
        }
    }

    /// The tick read `cs.sync3`. Copies of account entries are dropped on every tick besides their
    /// write counters (a bound that does not depend on the counters).
    pub fn observe_status(&mut self, status: SyncStatus) {
        self.status = Some(status);
        self.keys.observe_version(status.version);
        self.accounts.clear();
    }

    /// The sync status a request decides on, without a shared-data read per request: the one the
    /// last tick read, unless it says stale. `last_ok_ms` only moves forward, so a status that is
    /// not stale was not stale when read and is not now; a stale one is read again, so a
    /// control plane that answers again is seen at once, exactly as with a read per request.
    pub fn sync_status<S: SharedStore + ?Sized>(&mut self, store: &S, now_ms: u64) -> SyncStatus {
        let stale_after = duration_ms(self.settings.stale_after);
        match self.status {
            Some(s) if !s.is_stale(now_ms, stale_after) => s,
            _ => {
                let s = SyncStatus::read(store);
                self.observe_status(s);
                s
            }
        }
    }

    /// The key's entry: this worker's copy while the sync version it saw when reading it holds
    /// (see [`KeyCache`]), else read from shared data. Call after [`Self::sync_status`].
    pub fn key_entry<S: SharedStore + ?Sized>(&mut self, store: &S, key_hash: &str) -> Option<KeyEntry> {
        if let Some(entry) = self.keys.get(key_hash) {
            return Some(entry);
        }
        let entry = read_key(store, key_hash)?;
        self.keys.insert(key_hash, entry.clone());
        Some(entry)
    }

    /// The account's entry as shared data holds it: this worker's copy while the entry's write
    /// counter shows the value it showed before the copy was read (see [`AccountCache`]), else
    /// read from shared data. Without this worker's unpublished spend: see [`Self::account_view`].
    pub fn account_entry<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        account: &Uuid,
    ) -> Option<AccountEntry> {
        let epoch = if self.copies {
            store.epoch(epoch_shard(account))
        } else {
            None
        };
        if let Some(entry) = epoch.and_then(|e| self.accounts.get(account, e)) {
            return Some(entry);
        }
        let entry = read_account(store, account)?;
        if let Some(e) = epoch {
            self.accounts.insert(*account, e, entry.clone());
        }
        Some(entry)
    }

    /// Keeps copies of account entries only if the write counters move (see [`AccountCache`]);
    /// called at configure. Whether they do.
    pub fn check_counters<S: SharedStore + ?Sized>(&mut self, store: &S) -> bool {
        self.copies = counters_move(store);
        self.accounts.clear();
        self.copies
    }

    /// Debits this worker still owes the control plane: the buffered ones plus the billed requests
    /// being served (each will add one). What the buffer bound counts, what the
    /// `debit_buffer.size` gauge shows, and what a drain waits for.
    pub fn load(&self) -> usize {
        self.debits.len().saturating_add(self.in_flight)
    }

    /// Nothing buffered and nothing being served: the worker may stop.
    pub fn drained(&self) -> bool {
        self.load() == 0 && self.leases.is_empty()
    }

    /// Adopts the leader's price table when it changed. An unusable table is logged and the
    /// current one kept.
    pub fn refresh_prices<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        status: &SyncStatus,
    ) -> Result<bool, String> {
        if self.prices_seq == Some(status.prices_seq) || status.prices_seq == 0 {
            return Ok(false);
        }
        // Marked seen only once adopted: a table that fails here is tried again on the next tick
        // instead of leaving the worker on the fallback until the next price change.
        let Some(prices) = read_prices(store) else {
            return Err("the synced price table cannot be read".into());
        };
        let table = PriceTable::new(prices.entries, prices.factor)
            .map_err(|e| e.to_string())?
            .with_default_inference_geo(prices.inference_geo_default);
        self.prices = Rc::new(table);
        self.prices_seq = Some(status.prices_seq);
        Ok(true)
    }

    /// The account as this worker must judge it: the shared entry plus what this worker spent
    /// and has not published to it yet.
    pub fn account_view(&self, account: &Uuid, mut entry: AccountEntry) -> AccountEntry {
        if let Some(amount) = self.unpublished.get(account) {
            entry.add_unacked(*amount);
        }
        entry
    }

    /// Holds a request's ceiling on its account (spend control `reserve`): `Ok(Some(hold))` when
    /// held, `Ok(None)` when admitted without a hold (no entry yet, or shared data too contended to
    /// write while the last entry read says it fits: availability first, the debit still comes),
    /// `Err` when it does not fit. From the worker's lease when it has room (no shared-data call),
    /// else by one compare-and-swap (see [`Lease`]).
    pub fn reserve<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        account: Uuid,
        amount: Decimal,
        now_ms: u64,
    ) -> Result<Option<Hold>, NotHeld> {
        let ceiling = amount.max(Decimal::ZERO);
        let current = self.leases.get(&account).copied().unwrap_or_default();
        // A lease in its last half is renewed by a write rather than used to its end.
        let ttl = duration_ms(self.settings.hold_ttl);
        if current.free() >= ceiling && current.expiry_ms > now_ms.saturating_add(ttl / 2) {
            let l = self.leases.entry(account).or_default();
            l.in_use = add(l.in_use, ceiling);
            return Ok(Some(Hold {
                account,
                amount: ceiling,
                expiry_ms: l.expiry_ms,
            }));
        }
        let others = self.others.get(&account).copied().unwrap_or_default();
        let unpublished = self.unpublished.remove(&account).unwrap_or_default();
        let expiry_ms = self.expiry(now_ms);
        let change = LeaseChange {
            release: current.held,
            release_expiry_ms: current.expiry_ms,
            spend: add(current.spent, unpublished),
            in_use: current.in_use,
            ceiling,
            expiry_ms,
        };
        let written = lease(
            store,
            &account,
            &change,
            others,
            now_ms,
            self.settings.cas_retries,
        );
        match written {
            Ok(Reserved::Held { held }) => {
                self.leases.insert(
                    account,
                    Lease {
                        held,
                        expiry_ms,
                        in_use: add(current.in_use, ceiling),
                        spent: Decimal::ZERO,
                    },
                );
                Ok(Some(Hold {
                    account,
                    amount: ceiling,
                    expiry_ms,
                }))
            }
            Ok(Reserved::Short { available }) => {
                self.leases.insert(
                    account,
                    Lease {
                        held: current.in_use,
                        expiry_ms,
                        in_use: current.in_use,
                        spent: Decimal::ZERO,
                    },
                );
                Err(NotHeld::Short(available))
            }
            Ok(Reserved::NoEntry) => {
                self.restore_unpublished(account, unpublished);
                Ok(None)
            }
            Err(_) => {
                self.restore_unpublished(account, unpublished);
                // Decide on the entry as last read, as if this worker's lease were settled.
                match read_account(store, &account) {
                    Some(mut entry) => {
                        entry.release(change.release, change.release_expiry_ms, now_ms);
                        entry.add_unacked(change.spend);
                        let available = sub(sub(entry.available(now_ms), others), current.in_use);
                        if ceiling > available {
                            Err(NotHeld::Short(available))
                        } else {
                            Ok(None)
                        }
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// The expiry group of a lease written now: `hold_ttl` ahead, rounded up to a sixteenth of it,
    /// so that an account's entry keeps at most about 17 groups.
    fn expiry(&self, now_ms: u64) -> u64 {
        let ttl = duration_ms(self.settings.hold_ttl);
        let grain = (ttl / 16).max(1);
        now_ms.saturating_add(ttl).div_ceil(grain).saturating_mul(grain)
    }

    fn restore_unpublished(&mut self, account: Uuid, amount: Decimal) {
        if !amount.is_zero() {
            let pending = self.unpublished.entry(account).or_default();
            *pending = add(*pending, amount);
        }
    }

    /// A request that held credits ended without a debit (refused or failed upstream, nothing
    /// metered): its ceiling goes back to the worker's lease.
    pub fn release_hold(&mut self, hold: Hold) {
        self.end_hold(&hold, Decimal::ZERO);
    }

    fn end_hold(&mut self, hold: &Hold, spent: Decimal) {
        match self.leases.get_mut(&hold.account) {
            Some(l) => {
                l.in_use = sub(l.in_use, hold.amount).max(Decimal::ZERO);
                l.spent = add(l.spent, spent.max(Decimal::ZERO));
            }
            // No lease to spend from (never so while a request holds): published as spend.
            None => self.restore_unpublished(hold.account, spent.max(Decimal::ZERO)),
        }
    }

    /// Settles a lease in one write (the tick's): its ended requests' spend is written, the spare
    /// given back, and what the requests in flight need held again under a fresh expiry.
    fn settle_lease<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        account: Uuid,
        now_ms: u64,
    ) -> Result<(), UpdateError> {
        let Some(current) = self.leases.get(&account).copied() else {
            return Ok(());
        };
        let renew = current.expiry_ms <= now_ms.saturating_add(duration_ms(self.settings.hold_ttl) / 2);
        let unpublished = self.unpublished.get(&account).copied().unwrap_or_default();
        let idle = current.held == current.in_use && current.spent.is_zero() && unpublished.is_zero();
        if idle && !renew {
            if current.held.is_zero() {
                self.leases.remove(&account);
            }
            return Ok(());
        }
        let expiry_ms = self.expiry(now_ms);
        let change = LeaseChange {
            release: current.held,
            release_expiry_ms: current.expiry_ms,
            spend: add(current.spent, unpublished),
            in_use: current.in_use,
            ceiling: Decimal::ZERO,
            expiry_ms,
        };
        let others = self.others.get(&account).copied().unwrap_or_default();
        self.accounts.forget(&account);
        lease(
            store,
            &account,
            &change,
            others,
            now_ms,
            self.settings.cas_retries,
        )?;
        self.unpublished.remove(&account);
        if current.in_use.is_zero() {
            self.leases.remove(&account);
        } else {
            self.leases.insert(
                account,
                Lease {
                    held: current.in_use,
                    expiry_ms,
                    in_use: current.in_use,
                    spent: Decimal::ZERO,
                },
            );
        }
        Ok(())
    }

    /// Per account, what this worker holds in shared data (its leases).
    pub fn held_here(&self) -> HashMap<Uuid, Decimal> {
        self.leases
            .iter()
            .filter(|(_, l)| !l.held.is_zero())
            .map(|(a, l)| (*a, l.held))
            .collect()
    }

    /// What this worker reports to the control plane per account: the holds of its requests in
    /// flight plus what its finished requests that held cost until their debits are acknowledged.
    pub fn reported(&self) -> HashMap<Uuid, Decimal> {
        let mut out = self.held_here();
        for (account, amount) in &self.spent_unacked {
            let sum = out.entry(*account).or_default();
            *sum = add(*sum, *amount);
        }
        out
    }

    /// A key was refused for its limit: noted in shared data for the next hold report (the
    /// control plane sends `key.limit_reached`, once per period), at most once a minute per key
    /// from this worker, so that a caller retrying a spent key costs no write per refusal.
    pub fn note_limited<S: SharedStore + ?Sized>(&mut self, store: &S, key: Uuid, now_ms: u64) {
        const AGAIN_AFTER_MS: u64 = 60_000;
        if self
            .limited_noted
            .get(&key)
            .is_some_and(|at| now_ms.saturating_sub(*at) < AGAIN_AFTER_MS)
        {
            return;
        }
        if self.limited_noted.len() >= 4096 {
            self.limited_noted.clear();
        }
        if crate::sync::holds::note_limited(store, key, self.settings.cas_retries).is_ok() {
            self.limited_noted.insert(key, now_ms);
        }
    }

    /// What the control plane says other Envoys hold (read from shared data on each tick).
    pub fn set_others(&mut self, others: HashMap<Uuid, Decimal>) {
        self.others = others;
    }

    /// A request's debit: priced locally, spent on the account, and queued for the control plane.
    /// Never fails to queue: the debit is what counts.
    ///
    /// This worker counts the spend at once for its own admissions ([`Self::account_view`]). It
    /// adds it to the shared entry, for the other workers of the Envoy, on its next tick, unless
    /// that would leave it unpublished past `spend_publish_fraction` of `spendable` (what the
    /// request's admission saw), or the admission is older than a sync period (a long stream: its
    /// view may be stale): then at once. A busy account with credit to spare costs a shared-data
    /// read and write per tick instead of per request; one whose spendable balance is under a
    /// hundred times a request's cost is published at every request.
    ///
    /// A request that held its ceiling releases it here, and its spend is written with the release
    /// (one write, at once).
    pub fn record_debit<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        debit: &Debit,
        spendable: Decimal,
        hold: Option<Hold>,
    ) -> Recorded {
        self.record_charged(store, debit, spendable, hold, None)
    }

    /// [`Self::record_debit`], spending also on a limited key's budget entry, the same way.
    pub fn record_charged<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        debit: &Debit,
        spendable: Decimal,
        hold: Option<Hold>,
        budget: Option<BudgetCharge>,
    ) -> Recorded {
        let priced = metering::credits(&self.prices, &debit.served_request());
        let (local_amount, served_model_unpriced) = match priced {
            Ok(c) => c,
            // The control plane prices it exactly; locally it is only spent later, by the snapshot.
            Err(_) => (Decimal::ZERO, false),
        };
        let fresh = debit.finished_at.is_some_and(|end| {
            (end - debit.admitted_at)
                .to_std()
                .is_ok_and(|took| took <= self.settings.sync_period)
        });
        let amount = local_amount.max(Decimal::ZERO);
        let mut spend_error = self.charge(store, debit.account_id, amount, spendable, hold, fresh);
        if let Some(b) = budget {
            let e = self.charge(store, b.id, amount, b.spendable, b.hold, fresh);
            spend_error = spend_error.or(e);
        }
        self.debits
            .push(PendingDebit::new(debit, local_amount).with_budget(budget.map(|b| b.id)));
        Recorded {
            local_amount,
            served_model_unpriced,
            spend_error,
        }
    }

    /// Spends `amount` on one entry (an account, or a key's budget): from the request's hold when
    /// it has one, else as unpublished spend, published now or on the tick (see
    /// [`Self::record_debit`]).
    fn charge<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        id: Uuid,
        amount: Decimal,
        spendable: Decimal,
        hold: Option<Hold>,
        fresh: bool,
    ) -> Option<UpdateError> {
        if let Some(hold) = hold {
            // Spent from the lease: written with this worker's next write of the entry.
            let spent = self.spent_unacked.entry(id).or_default();
            *spent = add(*spent, amount);
            self.end_hold(&hold, amount);
            return None;
        }
        let pending = self.unpublished.entry(id).or_insert(Decimal::ZERO);
        *pending = add(*pending, amount);
        let allowance = spendable
            .checked_mul(self.settings.spend_publish_fraction)
            .unwrap_or(Decimal::ZERO);
        if pending.is_zero() {
            // Nothing to spend (an unpriced model): nothing to publish, now or later.
            self.unpublished.remove(&id);
            None
        } else if fresh && *pending <= allowance {
            None
        } else {
            self.publish_account(store, id).err()
        }
    }

    /// Adds the account's unpublished spend to its shared entry; a failed write keeps it
    /// unpublished (still counted here) for the next attempt.
    fn publish_account<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        account: Uuid,
    ) -> Result<(), UpdateError> {
        let Some(amount) = self.unpublished.remove(&account) else {
            return Ok(());
        };
        if amount.is_zero() {
            return Ok(());
        }
        self.accounts.forget(&account);
        add_spend(store, &account, amount, self.settings.cas_retries)
            .map(|_| ())
            .inspect_err(|_| {
                self.unpublished.insert(account, amount);
            })
    }

    /// Adds every account's unpublished spend to the shared entries: on every tick, and before a
    /// batch is sent (its acknowledgement moves amounts out of the entries' unacknowledged spend,
    /// so they must be in it by then: a batch waits while any write fails). What fails stays
    /// unpublished and is tried again.
    pub fn publish_spend<S: SharedStore + ?Sized>(&mut self, store: &S, now_ms: u64) -> Vec<UpdateError> {
        let leased: Vec<Uuid> = self.leases.keys().copied().collect();
        let mut failures: Vec<UpdateError> = leased
            .into_iter()
            .filter_map(|account| self.settle_lease(store, account, now_ms).err())
            .collect();
        let accounts: Vec<Uuid> = self.unpublished.keys().copied().collect();
        failures.extend(
            accounts
                .into_iter()
                .filter_map(|account| self.publish_account(store, account).err()),
        );
        failures
    }

    /// Applies the control plane's answers to the shared account entries: one read-modify-write
    /// per account of the batch (its settlements in order), not one per debit, so that a batch
    /// costs shared-data calls per account served rather than per request.
    pub fn settle<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        settlements: &[Settlement],
    ) -> Vec<UpdateError> {
        let mut by_account: Vec<(Uuid, SpendOutcome)> = Vec::with_capacity(settlements.len());
        for s in settlements {
            let (account, budget, outcome) = match s {
                Settlement::Acked {
                    account,
                    budget,
                    amount,
                    version,
                } => (
                    *account,
                    *budget,
                    SpendOutcome::Acked {
                        amount: *amount,
                        version: *version,
                    },
                ),
                Settlement::Dropped {
                    account,
                    budget,
                    amount,
                    ..
                } => (*account, *budget, SpendOutcome::Forgotten { amount: *amount }),
            };
            by_account.push((account, outcome));
            if let Some(b) = budget {
                by_account.push((b, outcome));
            }
        }
        for (account, outcome) in &by_account {
            let amount = match outcome {
                SpendOutcome::Acked { amount, .. } | SpendOutcome::Forgotten { amount } => *amount,
            };
            if let Some(spent) = self.spent_unacked.get_mut(account) {
                *spent = sub(*spent, amount).max(Decimal::ZERO);
                if spent.is_zero() {
                    self.spent_unacked.remove(account);
                }
            }
        }
        // Stable: each account's settlements stay in the order they came.
        by_account.sort_by_key(|(account, _)| *account);
        by_account
            .chunk_by(|a, b| a.0 == b.0)
            .filter_map(|group| {
                let account = group.first()?.0;
                self.accounts.forget(&account);
                let outcomes: Vec<SpendOutcome> = group.iter().map(|(_, o)| *o).collect();
                settle_spends(store, &account, &outcomes, self.settings.cas_retries).err()
            })
            .collect()
    }
}

pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::balances::{apply_account, read_account};
    use crate::shared::store::{Counters, MemoryStore};
    use chrono::{TimeZone, Utc};
    use metering::wire::{
        AccountState, AccountStatus, DebitAck, DebitOutcome, DebitResult, KeyStatus, Route,
    };
    use metering::Usage;
    use uuid::Uuid;

    fn worker(json: &str) -> Worker {
        let settings = Rc::new(Config::from_json(json.as_bytes()).unwrap());
        Worker::new(
            settings,
            PriceTable::default_table(Decimal::new(70, 2)).unwrap(),
            [5; 32],
        )
    }

    fn debit(model: &str) -> Debit {
        Debit {
            debit_id: Uuid::from_u128(1),
            key_hash: "h".into(),
            account_id: Uuid::from_u128(2),
            route: Route::AnthropicMessages,
            model_requested: model.into(),
            model_served: None,
            usage: Usage {
                input_tokens: 1_000_000,
                ..Usage::default()
            },
            requested: Default::default(),
            partial: false,
            output_estimated: false,
            input_estimated: false,
            admitted_at: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            finished_at: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
            upstream_request_id: None,
            upstream_message_id: None,
            upstream_status: Some(200),
        }
    }

    fn seed(store: &MemoryStore, balance: i64) {
        let a = AccountState {
            account_id: Uuid::from_u128(2),
            status: AccountStatus::Active,
            balance: Decimal::from(balance),
            version: 1,
            spend_control: Default::default(),
        };
        apply_account(store, &a, 1, 4).unwrap();
    }

    #[test]
    fn recorded_debit_is_spent_locally_and_queued() {
        let s = MemoryStore::default();
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let model = w.prices.entries()[0].model.clone();
        let r = w.record_debit(&s, &debit(&model), Decimal::ZERO, None);
        assert!(r.local_amount > Decimal::ZERO);
        assert_eq!(r.spend_error, None);
        assert_eq!(w.debits.len(), 1);
        let spendable = read_account(&s, &Uuid::from_u128(2)).unwrap().spendable();
        assert_eq!(spendable, Decimal::from(1_000_000) - r.local_amount);
    }

    #[test]
    fn local_spend_prices_the_modifiers_as_the_control_plane_does() {
        let s = MemoryStore::default();
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let standard = w
            .record_debit(&s, &debit("claude-opus-5-5"), Decimal::ZERO, None)
            .local_amount;
        let mut fast = debit("claude-opus-5-5");
        fast.requested.speed = Some("fast".into());
        fast.usage.inference_geo = Some("us".into());
        let local = w.record_debit(&s, &fast, Decimal::ZERO, None).local_amount;
        assert_eq!(local, standard * Decimal::new(22, 1));
        let authoritative = metering::cost(&w.prices, &fast.served_request()).unwrap();
        assert_eq!(local, authoritative.credits);
    }

    #[test]
    fn spend_within_the_allowance_waits_for_the_tick_and_counts_here_at_once() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let model = w.prices.entries()[0].model.clone();
        let shared = |s: &MemoryStore| read_account(s, &account).unwrap();
        let seen = Decimal::from(1_000_000);
        let first = w.record_debit(&s, &debit(&model), seen, None).local_amount;
        let second = w.record_debit(&s, &debit(&model), seen, None).local_amount;
        assert!(first > Decimal::ZERO && (first + second) * Decimal::from(100) < seen);
        // Other workers do not see it yet; this one does.
        assert_eq!(shared(&s).spendable(), seen);
        assert_eq!(
            w.account_view(&account, shared(&s)).spendable(),
            seen - first - second
        );
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(shared(&s).spendable(), seen - first - second);
        assert_eq!(
            w.account_view(&account, shared(&s)).spendable(),
            seen - first - second
        );
        assert!(w.publish_spend(&s, 0).is_empty(), "nothing twice");
        assert_eq!(shared(&s).spendable(), seen - first - second);
    }

    #[test]
    fn spend_past_the_allowance_is_published_at_once_with_what_waited() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let model = w.prices.entries()[0].model.clone();
        let waited = w
            .record_debit(&s, &debit(&model), Decimal::from(1_000_000), None)
            .local_amount;
        // An account seen near its limit: 1% of it is less than this debit.
        let r = w.record_debit(&s, &debit(&model), Decimal::from(1_000), None);
        assert_eq!(r.spend_error, None);
        let expected = Decimal::from(1_000_000) - waited - r.local_amount;
        assert_eq!(read_account(&s, &account).unwrap().spendable(), expected);
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(read_account(&s, &account).unwrap().spendable(), expected);
        // A fraction of 0 publishes every debit.
        let mut w = worker(r#"{"internal_token":"t","spend_publish_fraction":0}"#);
        let r = w.record_debit(&s, &debit(&model), Decimal::from(1_000_000), None);
        assert_eq!(
            read_account(&s, &account).unwrap().spendable(),
            expected - r.local_amount
        );
    }

    #[test]
    fn a_long_request_is_published_at_once_whatever_its_allowance() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let model = w.prices.entries()[0].model.clone();
        let mut long = debit(&model);
        // Admitted a minute before it ended: what its admission saw may be stale by now.
        long.finished_at = Some(long.admitted_at + chrono::Duration::seconds(60));
        let r = w.record_debit(&s, &long, Decimal::from(1_000_000), None);
        assert_eq!(
            read_account(&s, &account).unwrap().spendable(),
            Decimal::from(1_000_000) - r.local_amount
        );
    }

    #[test]
    fn a_failed_publication_keeps_the_spend_counted_and_tries_again() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t","cas_retries":2}"#);
        let model = w.prices.entries()[0].model.clone();
        let amount = w
            .record_debit(&s, &debit(&model), Decimal::from(1_000_000), None)
            .local_amount;
        s.interfere.set(2);
        assert_eq!(
            w.publish_spend(&s, 0).len(),
            1,
            "every attempt met another writer"
        );
        assert_eq!(
            read_account(&s, &account).unwrap().spendable(),
            Decimal::from(1_000_000)
        );
        assert_eq!(
            w.account_view(&account, read_account(&s, &account).unwrap())
                .spendable(),
            Decimal::from(1_000_000) - amount,
            "still counted here"
        );
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(
            read_account(&s, &account).unwrap().spendable(),
            Decimal::from(1_000_000) - amount
        );
        assert_eq!(
            w.account_view(&account, read_account(&s, &account).unwrap())
                .spendable(),
            Decimal::from(1_000_000) - amount,
            "and not twice"
        );
    }

    #[test]
    fn unpriceable_debit_is_still_queued() {
        let s = MemoryStore::default();
        seed(&s, 10);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let writes = s.sets.get();
        let r = w.record_debit(&s, &debit("claude-imaginary"), Decimal::ZERO, None);
        assert_eq!(r.local_amount, Decimal::ZERO);
        assert_eq!(w.debits.len(), 1);
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(s.sets.get(), writes, "nothing spent, nothing written");
    }

    /// A batch's settlements over two accounts, mixed versions and a dropped debit: one write per
    /// account, and the same entries as applying each settlement on its own.
    #[test]
    fn settling_a_batch_writes_once_per_account_with_the_same_result() {
        let accounts = [Uuid::from_u128(2), Uuid::from_u128(3)];
        let seeded = || {
            let s = MemoryStore::default();
            for (i, account_id) in accounts.iter().enumerate() {
                let a = AccountState {
                    account_id: *account_id,
                    status: AccountStatus::Active,
                    balance: Decimal::from(100 + i as i64),
                    version: 1,
                    spend_control: Default::default(),
                };
                apply_account(&s, &a, 1, 4).unwrap();
                crate::shared::balances::add_spend(&s, account_id, Decimal::new(95, 1), 4).unwrap();
            }
            s
        };
        let settlements: Vec<Settlement> = (0..40u64)
            .map(|i| {
                let account = accounts[(i % 2) as usize];
                let amount = Decimal::new(i64::try_from(i).unwrap() + 1, 2);
                if i % 7 == 3 {
                    Settlement::Dropped {
                        account,
                        budget: None,
                        amount,
                        debit_id: Uuid::from_u128(u128::from(i)),
                        reason: "test".into(),
                    }
                } else {
                    // Mostly this batch's version; some duplicates answered with older ones.
                    let version = if i % 5 == 0 { 3 + i % 3 } else { 9 };
                    Settlement::Acked {
                        account,
                        budget: None,
                        amount,
                        version,
                    }
                }
            })
            .collect();
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let batched = seeded();
        let before = batched.sets.get();
        assert!(w.settle(&batched, &settlements).is_empty());
        assert_eq!(batched.sets.get() - before, 2, "one write per account");
        let one_by_one = seeded();
        for s in &settlements {
            assert!(w.settle(&one_by_one, std::slice::from_ref(s)).is_empty());
        }
        for account in &accounts {
            let name = crate::shared::state::account_entry_name(account);
            assert_eq!(batched.get(&name).0, one_by_one.get(&name).0, "{account}");
        }
    }

    #[test]
    fn acknowledged_then_snapshotted_debit_is_counted_once() {
        let s = MemoryStore::default();
        seed(&s, 100);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let model = w.prices.entries()[0].model.clone();
        let amount = w
            .record_debit(&s, &debit(&model), Decimal::ZERO, None)
            .local_amount;
        w.debits.start_batch(10, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: vec![DebitResult {
                debit_id: Uuid::from_u128(1),
                outcome: DebitOutcome::Applied,
                version: 5,
                credits: Some(amount),
                error: None,
            }],
        };
        let (settlements, _) = w.debits.batch_acked(&ack, 0);
        assert!(w.settle(&s, &settlements).is_empty());
        let expected = Decimal::from(100) - amount;
        assert_eq!(
            read_account(&s, &Uuid::from_u128(2)).unwrap().spendable(),
            expected
        );
        let a = AccountState {
            account_id: Uuid::from_u128(2),
            status: AccountStatus::Active,
            balance: expected,
            version: 5,
            spend_control: Default::default(),
        };
        apply_account(&s, &a, 5, 4).unwrap();
        assert_eq!(
            read_account(&s, &Uuid::from_u128(2)).unwrap().spendable(),
            expected
        );
    }

    #[test]
    fn buffer_bound_counts_requests_in_flight() {
        let w = {
            let mut w = worker(r#"{"internal_token":"t","debit_buffer_max":2}"#);
            w.in_flight = 1;
            w
        };
        let status = SyncStatus {
            version: 1,
            last_ok_ms: 100,
            prices_seq: 0,
        };
        assert!(!w.gateway_state(&status, 100).debit_buffer_full);
        let mut w = w;
        w.in_flight = 2;
        assert!(w.gateway_state(&status, 100).debit_buffer_full);
    }

    #[test]
    fn sync_status_is_read_again_only_when_it_looks_stale() {
        let s = MemoryStore::default();
        let mut w = worker(r#"{"internal_token":"t","stale_after_ms":1000}"#);
        let fresh = SyncStatus {
            version: 4,
            last_ok_ms: 10_000,
            prices_seq: 0,
        };
        s.set(crate::sync::snapshot::STATUS_KEY, &fresh.encode(), None)
            .unwrap();
        assert_eq!(w.sync_status(&s, 10_500), fresh, "never read: read now");
        let newer = SyncStatus {
            version: 5,
            last_ok_ms: 10_900,
            prices_seq: 0,
        };
        s.set(crate::sync::snapshot::STATUS_KEY, &newer.encode(), None)
            .unwrap();
        assert_eq!(w.sync_status(&s, 10_800), fresh, "not stale: no read");
        assert_eq!(
            w.sync_status(&s, 11_500),
            newer,
            "looks stale: read again, not stale"
        );
        w.observe_status(fresh);
        assert_eq!(w.sync_status(&s, 10_000), fresh);
    }

    #[test]
    fn key_entry_is_read_once_per_sync_version() {
        let s = MemoryStore::default();
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let key = |status, version| crate::fixtures::key_state(version, status);
        crate::shared::balances::apply_key(&s, &key(KeyStatus::Active, 1), 0, 4).unwrap();
        w.observe_status(SyncStatus {
            version: 1,
            last_ok_ms: 1,
            prices_seq: 0,
        });
        assert_eq!(w.key_entry(&s, "h").map(|k| k.status), Some(KeyStatus::Active));
        // A snapshot revokes it; until its version is seen the copy stands, then it is read again.
        crate::shared::balances::apply_key(&s, &key(KeyStatus::Revoked, 2), 0, 4).unwrap();
        assert_eq!(w.key_entry(&s, "h").map(|k| k.status), Some(KeyStatus::Active));
        w.observe_status(SyncStatus {
            version: 2,
            last_ok_ms: 2,
            prices_seq: 0,
        });
        assert_eq!(w.key_entry(&s, "h").map(|k| k.status), Some(KeyStatus::Revoked));
        assert_eq!(w.key_entry(&s, "unknown"), None);
    }

    #[test]
    fn price_table_that_cannot_be_read_is_retried_on_the_next_tick() {
        let s = MemoryStore::default();
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let status = SyncStatus {
            version: 1,
            last_ok_ms: 1,
            prices_seq: 1,
        };
        // The leader moved the sequence but the table is not readable yet (e.g. a torn write).
        s.set(crate::sync::snapshot::PRICES_KEY, b"not json", None)
            .unwrap();
        assert!(w.refresh_prices(&s, &status).is_err());
        let prices = metering::wire::Prices {
            factor: Decimal::new(50, 2),
            entries: w.prices.entries().iter().take(1).cloned().collect(),
            inference_geo_default: Some("us".into()),
        };
        s.set(
            crate::sync::snapshot::PRICES_KEY,
            &serde_json::to_vec(&prices).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(w.refresh_prices(&s, &status), Ok(true));
        assert_eq!(w.prices.factor(), Decimal::new(50, 2));
        assert_eq!(
            w.prices.default_value(metering::Modifier::InferenceGeo),
            Some("us"),
            "the upstream's default inference geo comes with the table"
        );
    }

    #[test]
    fn request_in_flight_keeps_the_worker_from_being_drained() {
        let s = MemoryStore::default();
        seed(&s, 100);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        assert!(w.drained());
        w.in_flight = 1;
        assert_eq!(w.load(), 1);
        assert!(!w.drained(), "a billed request being served will add a debit");
        let model = w.prices.entries()[0].model.clone();
        w.record_debit(&s, &debit(&model), Decimal::ZERO, None);
        w.in_flight = 0;
        assert_eq!(w.load(), 1);
        assert!(!w.drained());
        w.debits.start_batch(10, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: None,
            batch_len: None,
            results: vec![DebitResult {
                debit_id: Uuid::from_u128(1),
                outcome: DebitOutcome::Applied,
                version: 5,
                credits: None,
                error: None,
            }],
        };
        w.debits.batch_acked(&ack, 0);
        assert!(w.drained());
    }

    #[test]
    fn synced_price_table_replaces_the_fallback_once() {
        let s = MemoryStore::default();
        let mut w = worker(r#"{"internal_token":"t"}"#);
        let entries = w.prices.entries().iter().take(1).cloned().collect::<Vec<_>>();
        let mut page = metering::wire::Snapshot {
            protocol: 1,
            version: 3,
            full: true,
            keys: vec![],
            accounts: vec![],
            prices: Some(metering::wire::Prices {
                factor: Decimal::new(50, 2),
                entries,
                inference_geo_default: Some("us".into()),
            }),
            next_cursor: None,
            others: None,
        };
        crate::sync::snapshot::apply_page(&s, &page, 0, 10, 4);
        let status = SyncStatus::read(&s);
        assert_eq!(w.refresh_prices(&s, &status), Ok(true));
        assert_eq!(w.prices.factor(), Decimal::new(50, 2));
        assert_eq!(w.prices.entries().len(), 1);
        assert_eq!(w.refresh_prices(&s, &status), Ok(false));
        page.prices = None;
        crate::sync::snapshot::apply_page(&s, &page, 0, 20, 4);
        assert_eq!(w.refresh_prices(&s, &SyncStatus::read(&s)), Ok(false));
    }

    #[test]
    fn an_account_entry_is_read_again_after_any_write_of_it() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        assert!(w.check_counters(&s));
        let spendable = |w: &mut Worker, s: &MemoryStore| w.account_entry(s, &account).unwrap().spendable();
        assert_eq!(spendable(&mut w, &s), Decimal::from(1_000));
        let reads = s.gets.get();
        assert_eq!(spendable(&mut w, &s), Decimal::from(1_000));
        assert_eq!(s.gets.get(), reads, "the second request used this worker's copy");
        // Another worker publishes its spend: seen at once.
        add_spend(&s, &account, Decimal::from(7), 4).unwrap();
        assert_eq!(spendable(&mut w, &s), Decimal::from(993));
        // A snapshot (a top-up, or spend through another Envoy): seen at once.
        let top_up = AccountState {
            account_id: account,
            status: AccountStatus::Suspended,
            balance: Decimal::from(5_000),
            version: 2,
            spend_control: Default::default(),
        };
        apply_account(&s, &top_up, 2, 4).unwrap();
        let entry = w.account_entry(&s, &account).unwrap();
        assert_eq!(
            (entry.status, entry.spendable()),
            (AccountStatus::Suspended, Decimal::from(4_993))
        );
        // A settlement.
        settle_spends(
            &s,
            &account,
            &[SpendOutcome::Forgotten {
                amount: Decimal::from(7),
            }],
            4,
        )
        .unwrap();
        assert_eq!(spendable(&mut w, &s), Decimal::from(5_000));
        // What did not write (an older snapshot) keeps the copy.
        let old = AccountState { version: 1, ..top_up };
        assert_eq!(apply_account(&s, &old, 1, 4), Ok(false));
        let reads = s.gets.get();
        assert_eq!(spendable(&mut w, &s), Decimal::from(5_000));
        assert_eq!(s.gets.get(), reads);
    }

    #[test]
    fn copies_of_account_entries_last_one_tick_and_need_the_counters() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        assert!(w.check_counters(&s));
        w.account_entry(&s, &account).unwrap();
        w.observe_status(SyncStatus {
            version: 1,
            last_ok_ms: 0,
            prices_seq: 0,
        });
        let reads = s.gets.get();
        w.account_entry(&s, &account).unwrap();
        assert_eq!(s.gets.get(), reads + 1, "the tick dropped the copy");
        // Without readable counters, every request reads the entry.
        let plain = MemoryStore::default();
        plain.counters.set(Counters::Unreadable);
        seed(&plain, 1_000);
        for n in 1..=3 {
            let reads = plain.gets.get();
            assert_eq!(
                w.account_entry(&plain, &account).unwrap().spendable(),
                Decimal::from(1_000)
            );
            assert_eq!(plain.gets.get(), reads + 1, "request {n}");
        }
    }

    #[test]
    fn without_moving_counters_no_copy_is_kept() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        // Not checked yet, then checked against counters that read but never move.
        w.account_entry(&s, &account).unwrap();
        let reads = s.gets.get();
        w.account_entry(&s, &account).unwrap();
        assert_eq!(s.gets.get(), reads + 1, "no copy before the check");
        let frozen = MemoryStore::default();
        frozen.counters.set(Counters::Frozen);
        assert!(!w.check_counters(&frozen));
        let reads = s.gets.get();
        w.account_entry(&s, &account).unwrap();
        w.account_entry(&s, &account).unwrap();
        assert_eq!(s.gets.get(), reads + 2);
    }

    #[test]
    fn a_write_right_after_the_copy_was_read_is_seen_by_the_next_request() {
        let account = Uuid::from_u128(2);
        let s = MemoryStore::default();
        seed(&s, 1_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        assert!(w.check_counters(&s));
        // Another worker writes the entry right after this one read it.
        *s.after_read.borrow_mut() = Some((
            crate::shared::state::account_entry_name(&account),
            Box::new(move |s: &MemoryStore| {
                add_spend(s, &account, Decimal::from(7), 4).unwrap();
            }),
        ));
        // This request saw the entry before the write: what shared data held during it.
        assert_eq!(
            w.account_entry(&s, &account).unwrap().spendable(),
            Decimal::from(1_000)
        );
        // The copy was taken at the counter's value before the read: the write moved it since.
        assert_eq!(
            w.account_entry(&s, &account).unwrap().spendable(),
            Decimal::from(993)
        );
    }

    #[test]
    fn the_own_spend_is_counted_once_with_or_without_a_copy() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = worker(r#"{"internal_token":"t"}"#);
        assert!(w.check_counters(&s));
        let model = w.prices.entries()[0].model.clone();
        let seen = w.account_entry(&s, &account).unwrap().spendable();
        let spent = w.record_debit(&s, &debit(&model), seen, None).local_amount;
        assert!(spent > Decimal::ZERO);
        let reads = s.gets.get();
        let entry = w.account_entry(&s, &account).unwrap();
        assert_eq!(
            s.gets.get(),
            reads,
            "deferred spend wrote nothing: the copy holds"
        );
        assert_eq!(w.account_view(&account, entry).spendable(), seen - spent);
        assert!(w.publish_spend(&s, 0).is_empty());
        let entry = w.account_entry(&s, &account).unwrap();
        assert_eq!(entry.spendable(), seen - spent, "published: in the shared entry");
        assert_eq!(
            w.account_view(&account, entry).spendable(),
            seen - spent,
            "and counted once"
        );
    }

    #[test]
    fn a_worker_drops_its_copy_of_an_entry_it_writes_whatever_the_counters_do() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        // Published at every request; the counters move at the check, then no more.
        let mut w = worker(r#"{"internal_token":"t","spend_publish_fraction":0}"#);
        assert!(w.check_counters(&s));
        s.counters.set(Counters::Frozen);
        let model = w.prices.entries()[0].model.clone();
        let seen = w.account_entry(&s, &account).unwrap().spendable();
        let spent = w.record_debit(&s, &debit(&model), seen, None).local_amount;
        assert!(spent > Decimal::ZERO);
        let entry = w.account_entry(&s, &account).unwrap();
        assert_eq!(w.account_view(&account, entry).spendable(), seen - spent);
        // A settlement written by this worker: its copy goes too.
        let forgotten = [Settlement::Dropped {
            debit_id: Uuid::from_u128(1),
            account,
            budget: None,
            amount: spent,
            reason: "test".into(),
        }];
        assert!(w.settle(&s, &forgotten).is_empty());
        assert_eq!(w.account_entry(&s, &account).unwrap().spendable(), seen);
    }

    fn workers(n: usize) -> Vec<Worker> {
        (0..n)
            .map(|_| worker(r#"{"internal_token":"t","hold_ttl_ms":16000}"#))
            .collect()
    }

    #[test]
    fn two_workers_racing_for_the_last_ceiling_hold_it_once() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 10);
        let mut w = workers(2);
        let mut second = w.pop().unwrap();
        let mut first = w.pop().unwrap();
        // The second worker holds 6 credits right after the first read the entry: the first's
        // write then meets another writer's, reads again, and finds 4 left.
        let raced = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen = std::rc::Rc::clone(&raced);
        *s.after_read.borrow_mut() = Some((
            crate::shared::state::account_entry_name(&account),
            Box::new(move |s: &MemoryStore| {
                seen.set(Some(second.reserve(s, account, Decimal::from(6), 1_000)));
            }),
        ));
        let mine = first.reserve(&s, account, Decimal::from(6), 1_000);
        assert!(matches!(raced.get(), Some(Ok(Some(_)))), "{:?}", raced.get());
        assert_eq!(mine, Err(NotHeld::Short(Decimal::from(4))));
        assert_eq!(
            read_account(&s, &account).unwrap().available(1_000),
            Decimal::from(4)
        );
    }

    /// Many requests over three workers against a balance that covers 7 ceilings, with writes
    /// contended at random: exactly 7 hold, what is held never passes the balance, and once they
    /// all end the entry holds nothing and has spent exactly their debits.
    #[test]
    fn many_requests_against_one_balance_hold_exactly_what_it_covers() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        let model = worker(r#"{"internal_token":"t"}"#).prices.entries()[0]
            .model
            .clone();
        let mut w = workers(3);
        let spend = w[0]
            .record_debit(&MemoryStore::default(), &debit(&model), Decimal::ZERO, None)
            .local_amount;
        let ceiling = spend * Decimal::from(3);
        seed(&s, 0);
        let balance = ceiling * Decimal::from(7) + spend;
        crate::shared::balances::store_account(
            &s,
            &AccountState {
                account_id: account,
                status: AccountStatus::Active,
                balance,
                version: 2,
                spend_control: Default::default(),
            },
            2,
            crate::shared::balances::Apply::Forward,
            4,
        )
        .unwrap();
        let mut held = Vec::new();
        let mut refused = 0;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for i in 0..60usize {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            s.interfere.set(u32::try_from(rng % 4).unwrap());
            let who = i % 3;
            match w[who].reserve(&s, account, ceiling, 1_000) {
                Ok(Some(h)) => held.push((who, h)),
                Ok(None) => panic!("admitted without a hold"),
                Err(NotHeld::Short(available)) => {
                    assert!(available < ceiling);
                    refused += 1;
                }
            }
            let entry = read_account(&s, &account).unwrap();
            assert!(
                entry.available(1_000) >= Decimal::ZERO,
                "over-held at request {i}"
            );
        }
        assert_eq!((held.len(), refused), (7, 53));
        let reported: Decimal = w.iter().flat_map(|w| w.held_here().into_values()).sum();
        assert_eq!(reported, ceiling * Decimal::from(7));
        for (who, hold) in held {
            w[who].record_debit(&s, &debit(&model), balance, Some(hold));
        }
        for w in &mut w {
            assert!(w.publish_spend(&s, 1_000).is_empty());
        }
        let entry = read_account(&s, &account).unwrap();
        assert!(entry.holds.is_empty());
        assert_eq!(entry.spendable(), balance - spend * Decimal::from(7));
        assert!(w.iter().all(|w| w.held_here().is_empty()));
    }

    #[test]
    fn a_hold_whose_request_never_ends_expires_after_the_ttl() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 10);
        let mut w = workers(1).pop().unwrap();
        // Held at t=1 s by a worker that then disappears.
        let hold = w.reserve(&s, account, Decimal::from(8), 1_000).unwrap().unwrap();
        assert!(hold.expiry_ms >= 1_000 + 16_000 && hold.expiry_ms <= 1_000 + 17_000);
        let mut other = workers(1).pop().unwrap();
        assert_eq!(
            other.reserve(&s, account, Decimal::from(8), 10_000),
            Err(NotHeld::Short(Decimal::from(2)))
        );
        assert!(other
            .reserve(&s, account, Decimal::from(8), hold.expiry_ms)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_request_without_a_debit_gives_its_hold_back_and_other_envoys_holds_count() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 10);
        let mut w = workers(1).pop().unwrap();
        w.set_others(HashMap::from([(account, Decimal::from(3))]));
        assert_eq!(
            w.reserve(&s, account, Decimal::from(8), 0),
            Err(NotHeld::Short(Decimal::from(7)))
        );
        let hold = w.reserve(&s, account, Decimal::from(7), 0).unwrap().unwrap();
        let writes = s.sets.get();
        w.release_hold(hold);
        assert_eq!(s.sets.get(), writes, "written with the next hold or on the tick");
        // Other workers still see it held, in this worker's lease; this one takes it again from
        // its lease, without a write.
        assert_eq!(
            read_account(&s, &account).unwrap().available(10),
            Decimal::from(3)
        );
        let again = w.reserve(&s, account, Decimal::from(7), 10).unwrap().unwrap();
        assert_eq!(s.sets.get(), writes, "from the lease");
        assert_eq!(
            read_account(&s, &account).unwrap().available(10),
            Decimal::from(3)
        );
        w.release_hold(again);
        assert!(
            !w.drained(),
            "a release still to write keeps the worker from stopping"
        );
        assert!(w.publish_spend(&s, 10).is_empty());
        assert!(w.drained());
        assert_eq!(
            read_account(&s, &account).unwrap().available(10),
            Decimal::from(10)
        );
    }

    #[test]
    fn a_release_that_cannot_be_written_is_retried_on_the_tick() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 10);
        let mut w = worker(r#"{"internal_token":"t","cas_retries":2}"#);
        let hold = w.reserve(&s, account, Decimal::from(5), 0).unwrap().unwrap();
        w.release_hold(hold);
        s.interfere.set(2);
        assert_eq!(
            w.publish_spend(&s, 0).len(),
            1,
            "every attempt met another writer"
        );
        assert_eq!(read_account(&s, &account).unwrap().available(0), Decimal::from(5));
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(
            read_account(&s, &account).unwrap().available(0),
            Decimal::from(10)
        );
    }

    /// Between a request's end and its debit's acknowledgement, what it cost stays in the
    /// worker's report (other Envoys see it neither as a hold nor in a snapshot yet).
    #[test]
    fn a_finished_request_is_reported_until_its_debit_is_acknowledged() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000_000);
        let mut w = workers(1).pop().unwrap();
        let model = w.prices.entries()[0].model.clone();
        let hold = w.reserve(&s, account, Decimal::from(10), 0).unwrap().unwrap();
        // Plenty of credit: the lease takes nine more ceilings of spare.
        assert_eq!(w.reported(), HashMap::from([(account, Decimal::from(100))]));
        let spent = w
            .record_debit(&s, &debit(&model), Decimal::ZERO, Some(hold))
            .local_amount;
        assert_eq!(
            w.reported(),
            HashMap::from([(account, Decimal::from(100) + spent)])
        );
        assert!(w.publish_spend(&s, 0).is_empty());
        assert_eq!(w.reported(), HashMap::from([(account, spent)]));
        w.debits.start_batch(10, None).unwrap();
        let ack = DebitAck {
            protocol: 1,
            applied_at_version: Some(5),
            batch_len: Some(1),
            results: vec![],
        };
        let (settlements, _) = w.debits.batch_acked(&ack, 0);
        assert!(w.settle(&s, &settlements).is_empty());
        assert!(w.reported().is_empty());
    }

    /// A lease with spare credits is held for every worker: another worker can use what is left
    /// beside it, and the tick gives the spare back.
    #[test]
    fn a_lease_holds_its_spare_for_every_worker_until_the_tick() {
        let s = MemoryStore::default();
        let account = Uuid::from_u128(2);
        seed(&s, 1_000);
        let mut w = workers(2);
        let mut b = w.pop().unwrap();
        let mut a = w.pop().unwrap();
        let first = a.reserve(&s, account, Decimal::from(10), 0).unwrap().unwrap();
        // 1,000 available, 10 needed: 9 more ceilings of spare (at most a tenth of 990).
        assert_eq!(
            read_account(&s, &account).unwrap().available(0),
            Decimal::from(900)
        );
        assert_eq!(
            b.reserve(&s, account, Decimal::from(901), 0),
            Err(NotHeld::Short(Decimal::from(900)))
        );
        let writes = s.sets.get();
        let second = a.reserve(&s, account, Decimal::from(50), 0).unwrap().unwrap();
        assert_eq!(s.sets.get(), writes, "taken from the lease");
        a.release_hold(first);
        a.release_hold(second);
        assert!(
            !a.drained(),
            "a lease to give back keeps the worker from stopping"
        );
        assert!(a.publish_spend(&s, 0).is_empty());
        assert!(a.drained());
        assert_eq!(
            read_account(&s, &account).unwrap().available(0),
            Decimal::from(1_000)
        );
        assert!(b.reserve(&s, account, Decimal::from(1_000), 0).unwrap().is_some());
    }
}
