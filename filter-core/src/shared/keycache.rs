//! The per-worker copy of the key entries this worker has read from shared data, so that a request
//! of a known key costs one shared-data read (its account) instead of two.
//!
//! A key entry changes only when a snapshot changes it, and the sync version moves only after the
//! snapshot's last page is applied. So every copy is dropped when the worker sees the version move
//! (in either direction: a reset moves it back): a copy read at version `v` is the shared entry
//! until the worker observes a version other than `v`, at most one tick after the leader applied
//! it. Lookups only write entries that no worker found, so none of them is copied here yet.

use std::collections::HashMap;

use crate::shared::state::KeyEntry;

/// Copies kept at most; past it the cache starts again empty (rare, and only costs reads).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct KeyCache {
    version: Option<u64>,
    entries: HashMap<String, KeyEntry>,
}

impl KeyCache {
    /// The sync version the worker sees now: copies read at another one are dropped.
    pub fn observe_version(&mut self, version: u64) {
        if self.version != Some(version) {
            self.entries.clear();
            self.version = Some(version);
        }
    }

    pub fn get(&self, key_hash: &str) -> Option<KeyEntry> {
        self.entries.get(key_hash).cloned()
    }

    /// Keeps a copy of an entry read from shared data after the current version was observed.
    pub fn insert(&mut self, key_hash: &str, entry: KeyEntry) {
        if self.version.is_none() {
            return;
        }
        if self.entries.len() >= CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(key_hash.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metering::wire::KeyStatus;
    use uuid::Uuid;

    fn entry(status: KeyStatus) -> KeyEntry {
        KeyEntry {
            key_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            status,
            version: 3,
            rules: None,
        }
    }

    #[test]
    fn copies_last_until_the_sync_version_moves_either_way() {
        let mut c = KeyCache::default();
        c.observe_version(7);
        c.insert("h", entry(KeyStatus::Active));
        c.observe_version(7);
        assert_eq!(c.get("h"), Some(entry(KeyStatus::Active)));
        c.observe_version(8);
        assert_eq!(c.get("h"), None, "a snapshot may have revoked it");
        c.insert("h", entry(KeyStatus::Revoked));
        c.observe_version(2);
        assert!(c.entries.is_empty(), "a reset moves the version back");
    }

    #[test]
    fn nothing_is_copied_before_a_version_is_seen_and_the_size_is_bounded() {
        let mut c = KeyCache::default();
        c.insert("h", entry(KeyStatus::Active));
        assert!(c.entries.is_empty());
        c.observe_version(1);
        for i in 0..=CAPACITY {
            c.insert(&i.to_string(), entry(KeyStatus::Active));
        }
        assert!(c.entries.len() <= CAPACITY);
        assert_eq!(c.get(&CAPACITY.to_string()), Some(entry(KeyStatus::Active)));
    }
}
