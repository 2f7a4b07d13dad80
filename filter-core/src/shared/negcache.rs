//! The per-worker cache of keys the control plane said it does not know, so that random
//! well-formed keys cannot make every request a lookup. Shared data is no place for it (entries can
//! be neither deleted nor listed).
//!
//! Entries live `ttl` and the cache holds at most `capacity`; with one TTL for all, insertion order
//! is expiry order, so a queue evicts both the oldest and the expired entries first.

use std::collections::{HashMap, VecDeque};

pub struct NegativeCache {
    capacity: usize,
    ttl_ms: u64,
    expiry: HashMap<String, u64>,
    order: VecDeque<(String, u64)>,
}

impl NegativeCache {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            capacity,
            ttl_ms,
            expiry: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }

    /// True while the key hash is remembered as unknown.
    pub fn contains(&mut self, key_hash: &str, now_ms: u64) -> bool {
        self.expire(now_ms);
        self.expiry.get(key_hash).is_some_and(|&until| until > now_ms)
    }

    pub fn insert(&mut self, key_hash: &str, now_ms: u64) {
        if self.capacity == 0 || self.ttl_ms == 0 {
            return;
        }
        self.expire(now_ms);
        while self.expiry.len() >= self.capacity {
            if !self.pop_oldest() {
                break;
            }
        }
        let until = now_ms.saturating_add(self.ttl_ms);
        self.expiry.insert(key_hash.to_owned(), until);
        self.order.push_back((key_hash.to_owned(), until));
    }

    /// Forgets a key (the control plane knows it now).
    pub fn remove(&mut self, key_hash: &str) {
        self.expiry.remove(key_hash);
    }

    fn expire(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(_, until)| *until <= now_ms) {
            self.pop_oldest();
        }
    }

    /// Removes the oldest queue item; the map entry only if it is that item's (a re-inserted key
    /// has a later expiry and a later queue item).
    fn pop_oldest(&mut self) -> bool {
        let Some((hash, until)) = self.order.pop_front() else {
            return false;
        };
        if self.expiry.get(&hash) == Some(&until) {
            self.expiry.remove(&hash);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_until_the_ttl_passes() {
        let mut c = NegativeCache::new(10, 1000);
        c.insert("a", 0);
        assert!(c.contains("a", 999));
        assert!(!c.contains("a", 1000));
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let mut c = NegativeCache::new(2, 1000);
        c.insert("a", 0);
        c.insert("b", 1);
        c.insert("c", 2);
        assert_eq!(c.len(), 2);
        assert!(!c.contains("a", 3));
        assert!(c.contains("b", 3) && c.contains("c", 3));
    }

    #[test]
    fn reinserting_extends_and_old_queue_item_does_not_evict_it() {
        let mut c = NegativeCache::new(10, 100);
        c.insert("a", 0);
        c.insert("a", 50);
        assert!(c.contains("a", 120), "second insert lives until 150");
        assert!(!c.contains("a", 150));
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut c = NegativeCache::new(0, 100);
        c.insert("a", 0);
        assert!(!c.contains("a", 1));
    }

    #[test]
    fn removed_key_is_no_longer_negative() {
        let mut c = NegativeCache::new(4, 100);
        c.insert("a", 0);
        c.remove("a");
        assert!(!c.contains("a", 1));
    }
}
