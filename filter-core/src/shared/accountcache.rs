//! The per-worker copy of the account entries this worker read from shared data, so that a request
//! of a busy account does not copy its entry out of shared data every time (a shared-data read
//! costs Envoy a call back into the VM to allocate the answer; reading a counter does not).
//!
//! Every write of an account entry (a snapshot or lookup applied, spend published, a batch
//! settled: all in `balances`) moves the write counter of the entry's shard *after* the write
//! succeeded; the counters are Envoy metrics, one value for every worker. A copy is kept with the
//! counter's value read *before* the entry was read, and used only while the counter still shows
//! that value:
//! - a write whose counter move came before that first read of the counter is in the copy;
//! - a write whose counter move came after it moved the counter: the copy is dropped, read again;
//! - a write not counted yet when a request checks the counter is missed by that request exactly
//!   as if it had read shared data a moment earlier, before the write.
//!
//! So a request decides on what shared data held at some moment during its own admission, as with
//! a read per request. Copies live at most one tick besides (the tick clears them), a worker drops
//! its copy of an entry it writes itself (whatever the counters do), and none is kept unless the
//! counters are seen to move at configure ([`counters_move`]): Envoy hands out counters that read
//! 0 and never move when its `stats_matcher` rejects them.

use std::collections::HashMap;

use uuid::Uuid;

use crate::shared::state::AccountEntry;
use crate::shared::store::SharedStore;

/// How many write counters account entries are spread over: a write invalidates the copies of
/// about one account in this many, not every worker's every copy.
pub const EPOCH_SHARDS: usize = 16;

/// The write counter an account's entry moves.
pub fn epoch_shard(account: &Uuid) -> usize {
    // The last byte of a UUIDv7 (and of every random UUID) is random.
    usize::from(account.as_bytes()[15]) % EPOCH_SHARDS
}

/// Whether the write counters can be read and move when moved: a counter read, moved by one and
/// read again (by the worker's configure; moving a counter only drops copies).
pub fn counters_move<S: SharedStore + ?Sized>(store: &S) -> bool {
    let Some(before) = store.epoch(0) else {
        return false;
    };
    store.bump_epoch(0);
    store.epoch(0).is_some_and(|after| after > before)
}

/// Copies kept at most; past it the cache starts again empty (rare, and only costs reads).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct AccountCache {
    entries: HashMap<Uuid, (u64, AccountEntry)>,
}

impl AccountCache {
    /// The copy of `account`'s entry if its shard's counter still shows `epoch`.
    pub fn get(&self, account: &Uuid, epoch: u64) -> Option<AccountEntry> {
        match self.entries.get(account) {
            Some((seen, entry)) if *seen == epoch => Some(entry.clone()),
            _ => None,
        }
    }

    /// Keeps a copy of an entry read after its shard's counter showed `epoch`.
    pub fn insert(&mut self, account: Uuid, epoch: u64, entry: AccountEntry) {
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&account) {
            self.entries.clear();
        }
        self.entries.insert(account, (epoch, entry));
    }

    /// Drops the copy of an entry this worker is writing.
    pub fn forget(&mut self, account: &Uuid) {
        self.entries.remove(account);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metering::wire::AccountStatus;
    use rust_decimal::Decimal;

    fn entry(balance: i64) -> AccountEntry {
        AccountEntry::new(AccountStatus::Active, Decimal::from(balance), 1)
    }

    #[test]
    fn a_copy_holds_only_at_the_counter_value_it_was_read_at() {
        let mut c = AccountCache::default();
        let id = Uuid::from_u128(7);
        c.insert(id, 3, entry(10));
        assert_eq!(c.get(&id, 3), Some(entry(10)));
        assert_eq!(c.get(&id, 4), None);
        assert_eq!(c.get(&Uuid::from_u128(8), 3), None);
        c.insert(id, 4, entry(9));
        assert_eq!(c.get(&id, 4), Some(entry(9)));
        c.clear();
        assert_eq!(c.get(&id, 4), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = AccountCache::default();
        for i in 0..(CAPACITY as u128 + 10) {
            c.insert(Uuid::from_u128(i), 1, entry(1));
        }
        assert!(c.len() <= CAPACITY);
        assert_eq!(c.get(&Uuid::from_u128(CAPACITY as u128 + 9), 1), Some(entry(1)));
    }

    #[test]
    fn shards_spread_random_ids() {
        let mut seen = [0u32; EPOCH_SHARDS];
        // UUIDv7 ids as the project makes them (the shard byte is one of their random bits).
        let mut ids = crate::debits::ids::DebitIds::new([7; 32]);
        for ms in 0..1600 {
            seen[epoch_shard(&ids.next(1_800_000_000_000 + ms))] += 1;
        }
        // 100 expected in each: far from empty or crowded.
        assert!(seen.iter().all(|&n| (50..200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn counters_are_trusted_only_when_seen_to_move() {
        use crate::shared::store::{Counters, MemoryStore};
        let store = |counters| {
            let s = MemoryStore::default();
            s.counters.set(counters);
            s
        };
        assert!(counters_move(&store(Counters::Move)));
        assert!(!counters_move(&store(Counters::Frozen)));
        assert!(!counters_move(&store(Counters::Unreadable)));
    }
}
