//! Envoy shared data behind a small trait, and the bounded compare-and-swap loop every writer
//! uses: read a value with its CAS token, compute the new value, write it only if nobody wrote in
//! between, retry a bounded number of times (after Kong/proxy-wasm-rust-rate-limiting).
//!
//! The trait keeps the read-modify-write logic testable natively; `host::HostStore` is the real
//! implementation and [`MemoryStore`] the test one (it can simulate a concurrent writer).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// Anything else the host reports.
    Failed,
}

pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when the key was never written.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if the CAS token still matches (`None`: unconditional).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
    /// The write counter of one shard of the account entries (see `accountcache`): every writer
    /// of an entry of the shard moves it after the write. `None` where it cannot be read (then
    /// no copy of an entry is kept).
    fn epoch(&self, _shard: usize) -> Option<u64> {
        None
    }
    /// Moves the write counter of `shard`: called after every write of an account entry.
    fn bump_epoch(&self, _shard: usize) {}
}

/// What an update function decides for the value it was shown.
pub enum Change<T> {
    /// Write these bytes, then return the result.
    Write(Vec<u8>, T),
    /// Leave the value as it is.
    Keep(T),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt met a concurrent writer.
    Contended {
        key: String,
        attempts: u32,
    },
    Failed {
        key: String,
    },
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Contended { key, attempts } => {
                write!(
                    f,
                    "shared data {key}: {attempts} compare-and-swap attempts all conflicted"
                )
            }
            UpdateError::Failed { key } => write!(f, "shared data {key}: the host refused the write"),
        }
    }
}

/// Read-modify-write of one key with at most `attempts` tries. `f` may run several times and
/// must compute from the value it is given only.
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    attempts: u32,
    mut f: impl FnMut(Option<&[u8]>) -> Change<T>,
) -> Result<T, UpdateError> {
    for _ in 0..attempts.max(1) {
        let (value, cas) = store.get(key);
        match f(value.as_deref()) {
            Change::Keep(result) => return Ok(result),
            Change::Write(bytes, result) => match store.set(key, &bytes, cas) {
                Ok(()) => return Ok(result),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return Err(UpdateError::Failed { key: key.to_owned() }),
            },
        }
    }
    Err(UpdateError::Contended {
        key: key.to_owned(),
        attempts,
    })
}

#[cfg(test)]
pub use memory::{Counters, MemoryStore};

#[cfg(test)]
mod memory {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// How the account entries' write counters behave.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub enum Counters {
        /// As in Envoy: readable, moved by every bump.
        #[default]
        Move,
        /// Readable but never moving (Envoy's null counters, under a rejecting `stats_matcher`).
        Frozen,
        /// Not readable (a host without them).
        Unreadable,
    }

    /// Something another worker does right after this one reads a key (once).
    type AfterRead = (String, Box<dyn FnOnce(&MemoryStore)>);

    /// Shared data as Envoy keeps it: a CAS counter per entry, never deleted. `interfere` makes
    /// the next N writes fail as if another worker had written first (and bumps the CAS);
    /// `after_read` makes another worker act right after a read of one key; `gets` counts reads.
    #[derive(Default)]
    pub struct MemoryStore {
        entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        pub interfere: Cell<u32>,
        pub sets: Cell<u32>,
        pub gets: Cell<u32>,
        epochs: RefCell<[u64; crate::shared::accountcache::EPOCH_SHARDS]>,
        pub counters: Cell<Counters>,
        pub after_read: RefCell<Option<AfterRead>>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.gets.set(self.gets.get() + 1);
            let read = match self.entries.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            };
            let due = self.after_read.borrow().as_ref().is_some_and(|(k, _)| k == key);
            if let Some((_, act)) = due.then(|| self.after_read.take()).flatten() {
                act(self);
            }
            read
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            let mut entries = self.entries.borrow_mut();
            self.next_cas.set(self.next_cas.get() + 1);
            if self.interfere.get() > 0 {
                self.interfere.set(self.interfere.get() - 1);
                if let Some(e) = entries.get_mut(key) {
                    e.1 = self.next_cas.get();
                }
                return Err(SetError::CasMismatch);
            }
            let current = entries.get(key).map(|e| e.1);
            if let (Some(want), Some(have)) = (cas, current) {
                if want != have {
                    return Err(SetError::CasMismatch);
                }
            }
            self.sets.set(self.sets.get() + 1);
            entries.insert(key.to_owned(), (value.to_vec(), self.next_cas.get()));
            Ok(())
        }

        fn epoch(&self, shard: usize) -> Option<u64> {
            match self.counters.get() {
                Counters::Unreadable => None,
                Counters::Move | Counters::Frozen => self.epochs.borrow().get(shard).copied(),
            }
        }

        fn bump_epoch(&self, shard: usize) {
            if self.counters.get() != Counters::Move {
                return;
            }
            if let Some(e) = self.epochs.borrow_mut().get_mut(shard) {
                *e += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_one(store: &MemoryStore, attempts: u32) -> Result<u8, UpdateError> {
        update(store, "n", attempts, |v| {
            let n = v.and_then(|b| b.first().copied()).unwrap_or(0) + 1;
            Change::Write(vec![n], n)
        })
    }

    #[test]
    fn update_writes_from_the_current_value() {
        let s = MemoryStore::default();
        assert_eq!(add_one(&s, 3), Ok(1));
        assert_eq!(add_one(&s, 3), Ok(2));
        assert_eq!(s.get("n").0, Some(vec![2]));
    }

    #[test]
    fn update_retries_after_a_concurrent_write() {
        let s = MemoryStore::default();
        add_one(&s, 3).unwrap();
        s.interfere.set(2);
        assert_eq!(add_one(&s, 3), Ok(2));
    }

    #[test]
    fn update_gives_up_after_the_attempt_bound() {
        let s = MemoryStore::default();
        s.interfere.set(5);
        assert_eq!(
            add_one(&s, 3),
            Err(UpdateError::Contended {
                key: "n".into(),
                attempts: 3
            })
        );
        assert_eq!(s.get("n").0, None, "nothing half-written");
    }

    #[test]
    fn keep_does_not_write() {
        let s = MemoryStore::default();
        let r = update(&s, "k", 3, |_| Change::Keep(7));
        assert_eq!(r, Ok(7));
        assert_eq!(s.sets.get(), 0);
    }

    #[test]
    fn stale_cas_token_is_a_mismatch() {
        let s = MemoryStore::default();
        s.set("k", b"a", None).unwrap();
        let (_, cas) = s.get("k");
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", cas), Err(SetError::CasMismatch));
    }
}
