//! The Envoy's holds, as the control plane must hear of them, and the other Envoys' holds, as the
//! control plane tells them (spend control `reserve` across several Envoys).
//!
//! Every hold is in its account's shared entry at once, for every worker of this Envoy
//! (`state`). Other Envoys learn of them through the control plane, within about one sync period:
//! * each worker writes what its requests in flight hold, per account, to `cs.wh.<worker id>`
//!   on its tick when it changed (and at least every [`HEARTBEAT_MS`]), after registering its id in
//!   `cs.workers` once;
//! * the sync leader sums the fresh reports (a report older than [`FRESH_MS`] is a worker that is
//!   gone: its holds still expire in the entries, but are no longer reported) and posts them, once
//!   per sync period, as the body of the snapshot request (`POST /internal/v1/snapshot`) under the
//!   Envoy's id (`cs.gateway`, drawn once per Envoy process); ids silent for [`FORGET_MS`] leave the registry;
//! * the answer, what the other Envoys hold per account, goes to `cs.others`, which every worker
//!   reads on its tick and subtracts from what a request may hold.

use std::collections::HashMap;

use metering::wire::AccountHold;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::shared::state::Reader;
use crate::shared::store::{update, Change, SharedStore, UpdateError};

pub const REGISTRY_KEY: &str = "cs.workers";
pub const OTHERS_KEY: &str = "cs.others";
pub const GATEWAY_KEY: &str = "cs.gateway";
/// Keys refused for their limit, not yet reported (16 bytes each).
pub const LIMITED_KEY: &str = "cs.limited";
/// Keys `cs.limited` keeps at most: past it, more wait for the next refusal after a report.
const MAX_LIMITED: usize = 1024;

/// A worker with holds rewrites its report at least this often, so that the leader can tell it
/// from a worker that is gone.
pub const HEARTBEAT_MS: u64 = 2_000;
/// A report older than this (or three ticks, when longer) is not summed.
pub const FRESH_MS: u64 = 3 * HEARTBEAT_MS;
/// A worker whose report is this old leaves the registry.
pub const FORGET_MS: u64 = 60_000;

/// How old a worker's report may be and still be summed, for a tick of `tick_ms`: a worker writes
/// its report on its tick, so three ticks at least.
pub fn fresh_ms(tick_ms: u64) -> u64 {
    FRESH_MS.max(tick_ms.saturating_mul(3))
}

/// Whether the other Envoys' holds, last answered at `answered_ms`, are too old to count: the
/// control plane stops counting a silent Envoy's after the same time.
pub fn others_stale(now_ms: u64, answered_ms: u64, stale_after_ms: u64) -> bool {
    now_ms.saturating_sub(answered_ms) > stale_after_ms
}

pub fn report_key(worker_id: u64) -> String {
    format!("cs.wh.{worker_id:016x}")
}

fn encode_amounts(head: Option<u64>, amounts: &[(Uuid, Decimal)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + amounts.len() * 32);
    if let Some(h) = head {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(amounts.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (account, amount) in amounts.iter().take(u32::MAX as usize) {
        out.extend_from_slice(account.as_bytes());
        out.extend_from_slice(&amount.serialize());
    }
    out
}

fn decode_amounts(r: &mut Reader<'_>) -> Option<Vec<(Uuid, Decimal)>> {
    let n = u32::from_le_bytes(r.take::<4>()?);
    // Never trust a count for an allocation: each entry takes 32 bytes.
    let mut out = Vec::with_capacity((n as usize).min(r.bytes.len() / 32));
    for _ in 0..n {
        out.push((r.uuid()?, r.decimal()?));
    }
    r.done().then_some(out)
}

/// A worker's report: when written, and its holds per account.
pub fn encode_report(written_ms: u64, holds: &[(Uuid, Decimal)]) -> Vec<u8> {
    encode_amounts(Some(written_ms), holds)
}

pub fn decode_report(bytes: &[u8]) -> Option<(u64, Vec<(Uuid, Decimal)>)> {
    let mut r = Reader { bytes };
    let written = r.u64()?;
    Some((written, decode_amounts(&mut r)?))
}

/// Adds the worker to the registry unless it is there.
pub fn register<S: SharedStore + ?Sized>(
    store: &S,
    worker_id: u64,
    attempts: u32,
) -> Result<(), UpdateError> {
    update(store, REGISTRY_KEY, attempts, |current| {
        let mut ids = current.map(decode_ids).unwrap_or_default();
        if ids.contains(&worker_id) {
            Change::Keep(())
        } else {
            ids.push(worker_id);
            Change::Write(encode_ids(&ids), ())
        }
    })
}

fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

fn decode_ids(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect()
}

/// What this Envoy's workers hold, summed per account over the reports written in the last
/// `fresh_ms`, and the ids whose reports are older than [`FORGET_MS`], which the caller may
/// [`forget`] (a worker registered and not reported yet is left alone).
pub fn gather<S: SharedStore + ?Sized>(
    store: &S,
    now_ms: u64,
    fresh_ms: u64,
) -> (Vec<AccountHold>, Vec<u64>) {
    let ids = store
        .get(REGISTRY_KEY)
        .0
        .map(|b| decode_ids(&b))
        .unwrap_or_default();
    let mut sums: HashMap<Uuid, Decimal> = HashMap::new();
    let mut gone = Vec::new();
    for id in ids {
        let report = store.get(&report_key(id)).0.and_then(|b| decode_report(&b));
        match report {
            Some((written, holds)) if written.saturating_add(fresh_ms) >= now_ms => {
                for (account, amount) in holds {
                    let sum = sums.entry(account).or_default();
                    *sum = crate::shared::state::add(*sum, amount.max(Decimal::ZERO));
                }
            }
            Some((written, _)) if written.saturating_add(FORGET_MS) >= now_ms => {}
            Some(_) => gone.push(id),
            None => {}
        }
    }
    let mut holds: Vec<AccountHold> = sums
        .into_iter()
        .filter(|(_, c)| !c.is_zero())
        .map(|(account_id, credits)| AccountHold { account_id, credits })
        .collect();
    holds.sort_by_key(|h| h.account_id);
    (holds, gone)
}

/// Drops ids from the registry (their reports stay, unread).
pub fn forget<S: SharedStore + ?Sized>(store: &S, gone: &[u64], attempts: u32) -> Result<(), UpdateError> {
    if gone.is_empty() {
        return Ok(());
    }
    update(store, REGISTRY_KEY, attempts, |current| {
        let ids = current.map(decode_ids).unwrap_or_default();
        let kept: Vec<u64> = ids.iter().copied().filter(|id| !gone.contains(id)).collect();
        if kept.len() == ids.len() {
            Change::Keep(())
        } else {
            Change::Write(encode_ids(&kept), ())
        }
    })
}

/// The Envoy's id: the one in shared data, or `candidate` stored as it when there is none yet.
pub fn gateway_id<S: SharedStore + ?Sized>(store: &S, candidate: Uuid, attempts: u32) -> Option<Uuid> {
    update(store, GATEWAY_KEY, attempts, |current| {
        match current.and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(bytes) => Change::Keep(Uuid::from_bytes(bytes)),
            None => Change::Write(candidate.as_bytes().to_vec(), candidate),
        }
    })
    .ok()
}

/// Stores the other Envoys' holds unless unchanged.
pub fn write_others<S: SharedStore + ?Sized>(store: &S, others: &[AccountHold]) -> bool {
    let amounts: Vec<(Uuid, Decimal)> = others
        .iter()
        .filter(|h| h.credits > Decimal::ZERO)
        .map(|h| (h.account_id, h.credits))
        .collect();
    let bytes = encode_amounts(None, &amounts);
    if store.get(OTHERS_KEY).0.as_deref() == Some(bytes.as_slice()) {
        return false;
    }
    store.set(OTHERS_KEY, &bytes, None).is_ok()
}

pub fn read_others<S: SharedStore + ?Sized>(store: &S) -> HashMap<Uuid, Decimal> {
    store
        .get(OTHERS_KEY)
        .0
        .and_then(|bytes| decode_amounts(&mut Reader { bytes: &bytes }))
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// One worker's side: writes its report when it changed, and at least every [`HEARTBEAT_MS`].
fn decode_uuids(bytes: &[u8]) -> Vec<Uuid> {
    bytes
        .chunks_exact(16)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok().map(Uuid::from_bytes))
        .collect()
}

/// Notes a key refused for its limit, for the next hold report.
pub fn note_limited<S: SharedStore + ?Sized>(store: &S, key: Uuid, attempts: u32) -> Result<(), UpdateError> {
    update(store, LIMITED_KEY, attempts, |current| {
        let keys = current.map(decode_uuids).unwrap_or_default();
        if keys.contains(&key) || keys.len() >= MAX_LIMITED {
            return Change::Keep(());
        }
        let mut bytes = current.map(<[u8]>::to_vec).unwrap_or_default();
        bytes.truncate(keys.len() * 16);
        bytes.extend_from_slice(key.as_bytes());
        Change::Write(bytes, ())
    })
}

/// The keys noted since the last report.
pub fn limited<S: SharedStore + ?Sized>(store: &S) -> Vec<Uuid> {
    store
        .get(LIMITED_KEY)
        .0
        .map(|b| decode_uuids(&b))
        .unwrap_or_default()
}

/// Drops the keys a report delivered (noted again meanwhile or not: one event per period).
pub fn reported_limited<S: SharedStore + ?Sized>(
    store: &S,
    sent: &[Uuid],
    attempts: u32,
) -> Result<(), UpdateError> {
    if sent.is_empty() {
        return Ok(());
    }
    update(store, LIMITED_KEY, attempts, |current| {
        let keys = current.map(decode_uuids).unwrap_or_default();
        let kept: Vec<u8> = keys
            .iter()
            .filter(|k| !sent.contains(k))
            .flat_map(|k| *k.as_bytes())
            .collect();
        if kept.len() == keys.len() * 16 {
            Change::Keep(())
        } else {
            Change::Write(kept, ())
        }
    })
}

#[derive(Debug, Default)]
pub struct Reporter {
    last: Option<(u64, Vec<(Uuid, Decimal)>)>,
    registered: bool,
}

impl Reporter {
    pub fn tick<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        worker_id: u64,
        held: &HashMap<Uuid, Decimal>,
        now_ms: u64,
        attempts: u32,
    ) {
        if !self.registered {
            self.registered = register(store, worker_id, attempts).is_ok();
        }
        let mut holds: Vec<(Uuid, Decimal)> = held
            .iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|(a, c)| (*a, *c))
            .collect();
        holds.sort_unstable_by_key(|(a, _)| *a);
        let due = match &self.last {
            None => true,
            Some((at, last)) => *last != holds || now_ms.saturating_sub(*at) >= HEARTBEAT_MS,
        };
        if due
            && store
                .set(&report_key(worker_id), &encode_report(now_ms, &holds), None)
                .is_ok()
        {
            self.last = Some((now_ms, holds));
            // Back in the registry if the leader dropped the id (a long stall): a read when there.
            self.registered = register(store, worker_id, attempts).is_ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::store::MemoryStore;

    fn d(n: i64) -> Decimal {
        Decimal::from(n)
    }

    #[test]
    fn reports_of_live_workers_are_summed_per_account_and_stale_ones_left_out() {
        let s = MemoryStore::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut one = Reporter::default();
        let mut two = Reporter::default();
        let mut gone = Reporter::default();
        one.tick(&s, 1, &HashMap::from([(a, d(3)), (b, d(1))]), 10_000, 4);
        two.tick(&s, 2, &HashMap::from([(a, d(4))]), 10_000, 4);
        gone.tick(&s, 3, &HashMap::from([(a, d(100))]), 1_000, 4);
        let (holds, forgotten) = gather(&s, 10_500, FRESH_MS);
        assert_eq!(
            holds,
            vec![
                AccountHold {
                    account_id: a,
                    credits: d(7)
                },
                AccountHold {
                    account_id: b,
                    credits: d(1)
                }
            ]
        );
        assert!(forgotten.is_empty(), "stale, not yet forgotten");
        let (_, forgotten) = gather(&s, 1_000 + FORGET_MS + 1, FRESH_MS);
        assert!(forgotten.contains(&3));
        forget(&s, &forgotten, 4).unwrap();
        assert!(!decode_ids(&s.get(REGISTRY_KEY).0.unwrap()).contains(&3));
        // A worker registered but not reported yet is not forgotten; one dropped after a stall
        // is back with its next report.
        register(&s, 4, 4).unwrap();
        assert!(!gather(&s, 1_000 + FORGET_MS + 1, FRESH_MS).1.contains(&4));
        gone.tick(
            &s,
            3,
            &HashMap::from([(a, d(1))]),
            1_000 + FORGET_MS + HEARTBEAT_MS,
            4,
        );
        assert!(decode_ids(&s.get(REGISTRY_KEY).0.unwrap()).contains(&3));
    }

    #[test]
    fn keys_refused_for_their_limit_are_noted_once_until_reported() {
        let s = MemoryStore::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        note_limited(&s, a, 4).unwrap();
        note_limited(&s, a, 4).unwrap();
        note_limited(&s, b, 4).unwrap();
        assert_eq!(limited(&s), vec![a, b]);
        let sent = limited(&s);
        let c = Uuid::from_u128(3);
        note_limited(&s, c, 4).unwrap();
        reported_limited(&s, &sent, 4).unwrap();
        assert_eq!(limited(&s), vec![c], "noted after the report was built: kept");
        s.set(LIMITED_KEY, b"short", None).unwrap();
        assert!(limited(&s).is_empty(), "damage reads as nothing");
        note_limited(&s, a, 4).unwrap();
        assert_eq!(limited(&s), vec![a]);
    }

    #[test]
    fn a_report_is_written_when_it_changes_or_for_the_heartbeat_only() {
        let s = MemoryStore::default();
        let a = Uuid::from_u128(1);
        let mut r = Reporter::default();
        r.tick(&s, 1, &HashMap::from([(a, d(3))]), 0, 4);
        let writes = s.sets.get();
        r.tick(&s, 1, &HashMap::from([(a, d(3))]), 100, 4);
        assert_eq!(s.sets.get(), writes, "unchanged: nothing written");
        r.tick(&s, 1, &HashMap::from([(a, d(3))]), HEARTBEAT_MS, 4);
        assert_eq!(s.sets.get(), writes + 1, "heartbeat");
        r.tick(&s, 1, &HashMap::new(), HEARTBEAT_MS + 1, 4);
        assert_eq!(s.sets.get(), writes + 2, "changed");
        assert_eq!(gather(&s, HEARTBEAT_MS + 1, FRESH_MS).0, vec![]);
    }

    #[test]
    fn others_round_trip_and_are_written_only_when_changed() {
        let s = MemoryStore::default();
        let others = vec![AccountHold {
            account_id: Uuid::from_u128(9),
            credits: Decimal::new(125, 2),
        }];
        assert!(write_others(&s, &others));
        assert!(!write_others(&s, &others));
        assert_eq!(
            read_others(&s),
            HashMap::from([(Uuid::from_u128(9), Decimal::new(125, 2))])
        );
        assert!(write_others(&s, &[]));
        assert!(read_others(&s).is_empty());
    }

    #[test]
    fn the_gateway_id_is_drawn_once() {
        let s = MemoryStore::default();
        assert_eq!(gateway_id(&s, Uuid::from_u128(5), 4), Some(Uuid::from_u128(5)));
        assert_eq!(gateway_id(&s, Uuid::from_u128(6), 4), Some(Uuid::from_u128(5)));
    }

    #[test]
    fn damaged_values_decode_to_nothing() {
        let bytes = encode_report(7, &[(Uuid::from_u128(1), d(2))]);
        for cut in 0..bytes.len() {
            assert_eq!(decode_report(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = 7u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_report(&huge), None);
    }

    #[test]
    fn reports_stay_fresh_three_ticks_and_others_go_stale_after_the_bound() {
        assert_eq!(fresh_ms(1_000), FRESH_MS);
        assert_eq!(fresh_ms(5_000), 15_000);
        assert_eq!(fresh_ms(u64::MAX), u64::MAX);
        assert!(!others_stale(10_000, 5_000, 5_000));
        assert!(others_stale(10_001, 5_000, 5_000));
        assert!(!others_stale(0, 5_000, 0), "a clock going back is not stale");
    }
}
