//! Snapshot synchronisation: which worker pulls (a lease in shared data), what it asks for, and how
//! a page is applied to the key and account entries every worker reads.
//!
//! * `cs.lease3` -> [`Lease`]: the worker that syncs for this Envoy until `expires_ms`; it renews
//!   on every tick, any worker takes it over once it expires (a worker that died or drains).
//! * `cs.sync3` -> [`SyncStatus`]: the version every applied change is at, the last time the
//!   control plane answered, and a counter that moves when the price table changes.
//! * `cs.prices3` -> the price table as the snapshot sent it (JSON, read only when it changed).
//!
//! The version moves only after the last page of a snapshot: a worker that takes over mid-way
//! starts again from the same `since`, and applying a row twice is harmless (versions only move
//! forward).
//!
//! Versions can go backwards: a database restore, a failover to a lagging replica, a new database
//! behind a running Envoy. The control plane then finds our `since` ahead of its version and
//! answers a full snapshot (the only case where a request with `since` gets `full: true`). Keeping
//! our higher version and our newer-looking rows would ignore every change it makes under the
//! reused numbers, revocations included, until it caught up. So such a snapshot is a reset: its
//! rows replace the entries whatever their versions, and the sync version becomes its version.

use metering::wire::{Prices, Snapshot, PROTOCOL_VERSION};

use crate::shared::balances::{store_account, store_key, Apply};
use crate::shared::store::{update, Change, SharedStore, UpdateError};

// Suffixed `3` since protocol 3 (account entries with holds, price entries with
// `max_output_tokens`): a module of this protocol syncs apart from an older module's VMs that
// still run in the same Envoy during a module update, from a full snapshot of its own, instead of
// sharing entries the older VMs cannot read (key entries are unchanged and shared).
pub const LEASE_KEY: &str = "cs.lease3";
pub const STATUS_KEY: &str = "cs.sync3";
pub const PRICES_KEY: &str = "cs.prices3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub owner: u64,
    pub expires_ms: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (owner, rest) = bytes.split_first_chunk::<8>()?;
        let expires: [u8; 8] = rest.try_into().ok()?;
        Some(Self {
            owner: u64::from_le_bytes(*owner),
            expires_ms: u64::from_le_bytes(expires),
        })
    }
}

/// The lease to write when `me` should lead now: it is free, expired, or already mine.
pub fn next_lease(current: Option<Lease>, me: u64, now_ms: u64, ttl_ms: u64) -> Option<Lease> {
    match current {
        Some(l) if l.owner != me && l.expires_ms > now_ms => None,
        _ => Some(Lease {
            owner: me,
            expires_ms: now_ms.saturating_add(ttl_ms),
        }),
    }
}

/// Takes or renews the lease; true when this worker leads until the next tick.
pub fn hold_lease<S: SharedStore + ?Sized>(
    store: &S,
    me: u64,
    now_ms: u64,
    ttl_ms: u64,
    attempts: u32,
) -> bool {
    update(store, LEASE_KEY, attempts, |v| {
        match next_lease(v.and_then(Lease::decode), me, now_ms, ttl_ms) {
            Some(lease) => Change::Write(lease.encode(), true),
            None => Change::Keep(false),
        }
    })
    .unwrap_or(false)
}

/// Gives the lease up at once (drain), so another worker need not wait for it to expire.
pub fn release_lease<S: SharedStore + ?Sized>(store: &S, me: u64, attempts: u32) {
    let _ = update(store, LEASE_KEY, attempts, |v| match v.and_then(Lease::decode) {
        Some(l) if l.owner == me => Change::Write(
            Lease {
                owner: me,
                expires_ms: 0,
            }
            .encode(),
            (),
        ),
        _ => Change::Keep(()),
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStatus {
    /// Every change committed at or below it is applied.
    pub version: u64,
    /// When the control plane last answered a snapshot request (host clock, ms).
    pub last_ok_ms: u64,
    /// Moves each time `cs.prices3` is written.
    pub prices_seq: u64,
}

impl SyncStatus {
    pub(crate) fn encode(&self) -> Vec<u8> {
        [self.version, self.last_ok_ms, self.prices_seq]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (a, rest) = bytes.split_first_chunk::<8>()?;
        let (b, rest) = rest.split_first_chunk::<8>()?;
        let c: [u8; 8] = rest.try_into().ok()?;
        Some(Self {
            version: u64::from_le_bytes(*a),
            last_ok_ms: u64::from_le_bytes(*b),
            prices_seq: u64::from_le_bytes(c),
        })
    }

    pub fn read<S: SharedStore + ?Sized>(store: &S) -> Self {
        store
            .get(STATUS_KEY)
            .0
            .as_deref()
            .and_then(Self::decode)
            .unwrap_or_default()
    }

    /// True when no snapshot answer arrived within `stale_after_ms` (or never).
    pub fn is_stale(&self, now_ms: u64, stale_after_ms: u64) -> bool {
        self.last_ok_ms == 0 || now_ms.saturating_sub(self.last_ok_ms) > stale_after_ms
    }
}

/// The sync leader's progress through a (possibly paged) snapshot: what it asks next and when.
/// The root context keeps one and carries out what it says with host calls.
#[derive(Debug, Default)]
pub struct Progress {
    /// The host's token of the page request in flight.
    pub in_flight: Option<u32>,
    since: u64,
    cursor: Option<String>,
    next_at_ms: u64,
}

impl Progress {
    /// Whether a sync starts now (none in flight, its time come): it then asks for what changed
    /// since `version`, from the first page.
    pub fn start(&mut self, version: u64, now_ms: u64) -> bool {
        if self.in_flight.is_some() || now_ms < self.next_at_ms {
            return false;
        }
        self.since = version;
        self.cursor = None;
        true
    }

    /// The path of the page to ask for.
    pub fn path(&self, limit: u32) -> String {
        snapshot_path(self.since, self.cursor.as_deref(), limit)
    }

    /// The sync's first page (it carries the Envoy's hold report).
    pub fn first_page(&self) -> bool {
        self.cursor.is_none()
    }

    /// The version the sync asked from.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// The request failed, or its page was not applied whole: the same page again in a period.
    pub fn retry_later(&mut self, now_ms: u64, period_ms: u64) {
        self.next_at_ms = now_ms.saturating_add(period_ms);
    }

    /// A page applied whole: true when the next page is to be asked for at once (a full snapshot
    /// should not take pages x period; a drain asks for none), else the next sync waits a period.
    pub fn page_applied(
        &mut self,
        next_cursor: Option<String>,
        draining: bool,
        now_ms: u64,
        period_ms: u64,
    ) -> bool {
        match next_cursor {
            Some(cursor) if !draining => {
                self.cursor = Some(cursor);
                true
            }
            _ => {
                self.retry_later(now_ms, period_ms);
                false
            }
        }
    }
}

/// A snapshot page as the control plane answered it (`status` `None`: no answer; `body` read only
/// for a 200), or why there is none.
pub fn read_page(status: Option<u16>, body: impl FnOnce() -> Vec<u8>) -> Result<Snapshot, String> {
    match status {
        Some(200) => {
            serde_json::from_slice::<Snapshot>(&body()).map_err(|e| format!("unreadable snapshot: {e}"))
        }
        Some(status) => Err(format!("snapshot answered {status}")),
        None => Err("snapshot request failed (timeout or connection error)".into()),
    }
}

/// `GET /internal/v1/snapshot?...` for the next page: no `since` on the first sync (a full one).
pub fn snapshot_path(since: u64, cursor: Option<&str>, limit: u32) -> String {
    let mut path = format!("/internal/v1/snapshot?protocol={PROTOCOL_VERSION}&limit={limit}");
    if since > 0 {
        path.push_str(&format!("&since={since}"));
    }
    if let Some(c) = cursor {
        path.push_str("&cursor=");
        path.push_str(&percent_encode(c));
    }
    path
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    pub keys_changed: usize,
    pub accounts_changed: usize,
    pub prices_changed: bool,
    /// The last page: the sync version moved to the snapshot's.
    pub complete: bool,
    /// Rows that could not be written (CAS contention): the page must be fetched again.
    pub failures: Vec<UpdateError>,
    /// The control plane's version went behind ours: rows replaced whatever their versions.
    pub reset: bool,
}

/// Whether a page answering a request with `since` (0: none) resets the entries: a full snapshot
/// asked for as a delta means the control plane's version is behind ours (see the module docs).
pub fn is_reset(page: &Snapshot, since: u64) -> bool {
    page.full && since > 0
}

/// Applies one page of the snapshot asked for with `since`. On the last page (and only if every
/// row was written) the sync version moves to the snapshot's version (forward only, except after
/// a reset); `last_ok_ms` moves on every page that arrived.
pub fn apply_page<S: SharedStore + ?Sized>(
    store: &S,
    page: &Snapshot,
    since: u64,
    now_ms: u64,
    attempts: u32,
) -> PageOutcome {
    let mut out = PageOutcome::default();
    let reset = is_reset(page, since);
    out.reset = reset;
    let mode = if reset { Apply::Reset } else { Apply::Forward };
    for key in &page.keys {
        match store_key(store, key, page.version, mode, attempts) {
            Ok(changed) => out.keys_changed += usize::from(changed),
            Err(e) => out.failures.push(e),
        }
    }
    for account in &page.accounts {
        match store_account(store, account, page.version, mode, attempts) {
            Ok(changed) => out.accounts_changed += usize::from(changed),
            Err(e) => out.failures.push(e),
        }
    }
    if let Some(prices) = &page.prices {
        out.prices_changed = store_prices(store, prices);
    }
    out.complete = page.next_cursor.is_none() && out.failures.is_empty();
    let complete = out.complete;
    let prices_changed = out.prices_changed;
    let _ = update(store, STATUS_KEY, attempts, |v| {
        let mut status = v.and_then(SyncStatus::decode).unwrap_or_default();
        status.last_ok_ms = now_ms;
        if complete {
            status.version = if reset {
                page.version
            } else {
                status.version.max(page.version)
            };
        }
        if prices_changed {
            status.prices_seq = status.prices_seq.wrapping_add(1);
        }
        Change::Write(status.encode(), ())
    });
    out
}

/// Writes the price table when it differs from the stored one.
fn store_prices<S: SharedStore + ?Sized>(store: &S, prices: &Prices) -> bool {
    let Ok(json) = serde_json::to_vec(prices) else {
        return false;
    };
    if store.get(PRICES_KEY).0.as_deref() == Some(json.as_slice()) {
        return false;
    }
    store.set(PRICES_KEY, &json, None).is_ok()
}

/// The price table stored by the leader, if any.
pub fn read_prices<S: SharedStore + ?Sized>(store: &S) -> Option<Prices> {
    serde_json::from_slice(&store.get(PRICES_KEY).0?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::balances::{read_account, read_key};
    use crate::shared::store::MemoryStore;
    use metering::wire::{AccountState, AccountStatus, KeyStatus};
    use rust_decimal::Decimal;
    use uuid::Uuid;

    #[test]
    fn free_or_expired_lease_is_taken_and_a_live_one_is_respected() {
        assert_eq!(
            next_lease(None, 1, 100, 50),
            Some(Lease {
                owner: 1,
                expires_ms: 150
            })
        );
        let held = Lease {
            owner: 2,
            expires_ms: 200,
        };
        assert_eq!(next_lease(Some(held), 1, 199, 50), None);
        assert_eq!(
            next_lease(Some(held), 1, 200, 50),
            Some(Lease {
                owner: 1,
                expires_ms: 250
            })
        );
        assert_eq!(
            next_lease(Some(held), 2, 150, 50),
            Some(Lease {
                owner: 2,
                expires_ms: 200
            })
        );
    }

    #[test]
    fn only_one_worker_leads_and_a_released_lease_passes_on() {
        let s = MemoryStore::default();
        assert!(hold_lease(&s, 1, 0, 1000, 4));
        assert!(!hold_lease(&s, 2, 10, 1000, 4));
        assert!(hold_lease(&s, 1, 20, 1000, 4), "renewal");
        release_lease(&s, 1, 4);
        assert!(hold_lease(&s, 2, 30, 1000, 4));
    }

    #[test]
    fn first_sync_asks_for_a_full_snapshot_and_cursor_is_encoded() {
        assert_eq!(
            snapshot_path(0, None, 500),
            "/internal/v1/snapshot?protocol=4&limit=500"
        );
        assert_eq!(
            snapshot_path(42, Some("a b&c=d"), 10),
            "/internal/v1/snapshot?protocol=4&limit=10&since=42&cursor=a%20b%26c%3Dd"
        );
    }

    #[test]
    fn never_synced_or_old_answer_is_stale() {
        assert!(SyncStatus::default().is_stale(10, 5000));
        let s = SyncStatus {
            version: 1,
            last_ok_ms: 1000,
            prices_seq: 0,
        };
        assert!(!s.is_stale(6000, 5000));
        assert!(s.is_stale(6001, 5000));
    }

    fn page(version: u64, cursor: Option<&str>, balance: i64, status: KeyStatus) -> Snapshot {
        Snapshot {
            protocol: 1,
            version,
            full: false,
            keys: vec![crate::fixtures::key_state(version, status)],
            accounts: vec![AccountState {
                account_id: Uuid::from_u128(2),
                status: AccountStatus::Active,
                balance: Decimal::from(balance),
                version,
                spend_control: Default::default(),
            }],
            prices: None,
            next_cursor: cursor.map(str::to_owned),
            others: None,
        }
    }

    #[test]
    fn version_moves_only_after_the_last_page() {
        let s = MemoryStore::default();
        let out = apply_page(&s, &page(7, Some("c1"), 10, KeyStatus::Active), 0, 100, 4);
        assert!(!out.complete);
        assert_eq!(SyncStatus::read(&s).version, 0);
        assert_eq!(SyncStatus::read(&s).last_ok_ms, 100);
        let out = apply_page(&s, &page(7, None, 10, KeyStatus::Active), 0, 200, 4);
        assert!(out.complete);
        assert_eq!(SyncStatus::read(&s).version, 7);
    }

    #[test]
    fn revocation_and_top_up_in_a_delta_reach_the_entries() {
        let s = MemoryStore::default();
        apply_page(&s, &page(7, None, 10, KeyStatus::Active), 0, 100, 4);
        apply_page(&s, &page(9, None, 50, KeyStatus::Revoked), 0, 200, 4);
        assert_eq!(read_key(&s, "h").unwrap().status, KeyStatus::Revoked);
        assert_eq!(
            read_account(&s, &Uuid::from_u128(2)).unwrap().spendable(),
            Decimal::from(50)
        );
    }

    /// The sync loop as the leader runs it: ask with the stored version, apply what comes back.
    fn sync_once(s: &MemoryStore, answer: impl Fn(u64) -> Snapshot, now: u64) -> PageOutcome {
        let since = SyncStatus::read(s).version;
        apply_page(s, &answer(since), since, now, 4)
    }

    #[test]
    fn control_plane_version_going_backwards_resets_and_later_revocations_apply() {
        let s = MemoryStore::default();
        let id = Uuid::from_u128(2);
        sync_once(&s, |_| page(50, None, 10, KeyStatus::Active), 100);
        assert_eq!(SyncStatus::read(&s).version, 50);
        crate::shared::balances::add_spend(&s, &id, Decimal::from(3), 4).unwrap();
        crate::shared::balances::ack_spend(&s, &id, Decimal::from(1), 48, 4).unwrap();

        // Restored to version 5: our since=50 is ahead, so it answers a full snapshot in two pages.
        let restored = |since: u64, cursor: Option<&str>| {
            assert_eq!(since, 50);
            let mut p = page(5, cursor, 8, KeyStatus::Active);
            p.full = true;
            p
        };
        let first = sync_once(&s, |since| restored(since, Some("c")), 200);
        assert!(first.reset && !first.complete);
        assert_eq!(SyncStatus::read(&s).version, 50, "moves after the last page only");
        let last = sync_once(&s, |since| restored(since, None), 300);
        assert!(last.reset && last.complete);
        assert_eq!(
            SyncStatus::read(&s).version,
            5,
            "the snapshot's version, not the max"
        );
        let a = read_account(&s, &id).unwrap();
        assert_eq!((a.balance, a.snapshot_version), (Decimal::from(8), 5));
        assert_eq!(a.spendable(), Decimal::from(6), "unacknowledged local spend kept");

        // A revocation under a reused version number reaches the entry.
        let out = sync_once(
            &s,
            |since| {
                assert_eq!(since, 5);
                page(6, None, 8, KeyStatus::Revoked)
            },
            400,
        );
        assert!(!out.reset);
        assert_eq!(read_key(&s, "h").unwrap().status, KeyStatus::Revoked);
        assert_eq!(SyncStatus::read(&s).version, 6);
    }

    #[test]
    fn first_full_snapshot_and_deltas_are_not_resets() {
        let mut p = page(7, None, 10, KeyStatus::Active);
        p.full = true;
        assert!(!is_reset(&p, 0));
        assert!(is_reset(&p, 9));
        p.full = false;
        assert!(!is_reset(&p, 3));
    }

    #[test]
    fn contention_keeps_the_version_so_the_page_is_fetched_again() {
        let s = MemoryStore::default();
        s.interfere.set(10);
        let out = apply_page(&s, &page(7, None, 10, KeyStatus::Active), 0, 100, 2);
        assert!(!out.complete && !out.failures.is_empty());
        assert_eq!(SyncStatus::read(&s).version, 0);
    }

    #[test]
    fn price_changes_move_the_sequence_once() {
        let s = MemoryStore::default();
        let mut p = page(7, None, 10, KeyStatus::Active);
        p.prices = Some(Prices {
            factor: Decimal::new(70, 2),
            entries: vec![],
            inference_geo_default: None,
        });
        assert!(apply_page(&s, &p, 0, 1, 4).prices_changed);
        assert!(!apply_page(&s, &p, 0, 2, 4).prices_changed);
        assert_eq!(SyncStatus::read(&s).prices_seq, 1);
        assert_eq!(read_prices(&s).unwrap().factor, Decimal::new(70, 2));
    }

    #[test]
    fn a_sync_pages_through_at_once_and_waits_a_period_between_syncs() {
        let mut p = Progress::default();
        assert!(p.start(7, 0));
        assert!(p.first_page());
        assert_eq!(
            p.path(100),
            format!("/internal/v1/snapshot?protocol={PROTOCOL_VERSION}&limit=100&since=7")
        );
        p.in_flight = Some(1);
        assert!(!p.start(7, 10), "one sync at a time");
        p.in_flight = None;
        assert!(p.page_applied(Some("k/1".into()), false, 10, 1_000));
        assert!(!p.first_page());
        assert_eq!(p.since(), 7);
        assert!(p.path(100).ends_with("&since=7&cursor=k%2F1"), "{}", p.path(100));
        // The last page: the next sync in a period, from the first page again.
        assert!(!p.page_applied(None, false, 20, 1_000));
        assert!(!p.start(9, 1_019));
        assert!(p.start(9, 1_020));
        assert!(p.first_page());
        assert_eq!(p.since(), 9);
    }

    #[test]
    fn a_failed_page_is_asked_again_after_a_period_and_a_drain_asks_no_next_page() {
        let mut p = Progress::default();
        assert!(p.start(0, 0));
        assert!(p.page_applied(Some("a".into()), false, 0, 500));
        p.retry_later(100, 500);
        assert!(!p.start(0, 599));
        // A retry mid-sync is a new sync from the same version (rows applied twice are harmless).
        assert!(p.start(0, 600));
        assert!(p.page_applied(Some("b".into()), false, 600, 500));
        assert!(
            !p.page_applied(Some("c".into()), true, 700, 500),
            "draining: no next page"
        );
    }

    #[test]
    fn only_a_readable_200_is_a_page() {
        assert!(read_page(Some(200), || b"{".to_vec())
            .unwrap_err()
            .starts_with("unreadable snapshot"));
        assert_eq!(
            read_page(Some(401), || unreachable!()).unwrap_err(),
            "snapshot answered 401"
        );
        assert_eq!(
            read_page(None, || unreachable!()).unwrap_err(),
            "snapshot request failed (timeout or connection error)"
        );
    }
}
