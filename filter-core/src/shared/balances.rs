//! Reads and compare-and-swap writes of key and account entries in shared data: the only code that
//! changes what every worker of this Envoy sees about keys and balances.

use metering::wire::{AccountState, AccountStatus, KeyState, SpendControl};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::shared::accountcache::epoch_shard;
use crate::shared::state::{account_entry_name, key_entry_name, AccountEntry, KeyEntry, KeyLimit, KeyRules};
use crate::shared::store::{update, Change, SharedStore, UpdateError};

pub fn read_key<S: SharedStore + ?Sized>(store: &S, key_hash: &str) -> Option<KeyEntry> {
    store
        .get(&key_entry_name(key_hash))
        .0
        .as_deref()
        .and_then(KeyEntry::decode)
}

pub fn read_account<S: SharedStore + ?Sized>(store: &S, account: &Uuid) -> Option<AccountEntry> {
    store
        .get(&account_entry_name(account))
        .0
        .as_deref()
        .and_then(AccountEntry::decode)
}

/// How a row meets the stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Versions only move forward: an older row than the stored one is ignored.
    Forward,
    /// The control plane's versions went backwards: the row replaces the entry whatever its version
    /// (see [`crate::sync::snapshot::apply_page`]).
    Reset,
}

/// Stores a key row unless a newer version is already stored; a limited key's budget (what is left
/// of its limit, as of `version` or the row's own when higher) first, so that a worker that finds
/// the key limited finds its budget.
pub fn apply_key<S: SharedStore + ?Sized>(
    store: &S,
    key: &KeyState,
    version: u64,
    attempts: u32,
) -> Result<bool, UpdateError> {
    store_key(store, key, version, Apply::Forward, attempts)
}

/// The entry a key row is stored as.
pub fn key_entry_of(key: &KeyState) -> KeyEntry {
    let millis = |t: chrono::DateTime<chrono::Utc>| u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let rules =
        (key.limit.is_some() || !key.allowed_models.is_empty() || key.expires_at.is_some()).then(|| {
            std::rc::Rc::new(KeyRules {
                expires_at_ms: key.expires_at.map(millis),
                limit: key.limit.as_ref().map(|l| KeyLimit {
                    credits: l.credits,
                    period: l.period,
                    resets_at_ms: l.resets_at.map(millis),
                }),
                allowed_models: key.allowed_models.clone(),
            })
        });
    KeyEntry {
        key_id: key.key_id,
        account_id: key.account_id,
        status: key.status,
        version: key.version,
        rules,
    }
}

pub fn store_key<S: SharedStore + ?Sized>(
    store: &S,
    key: &KeyState,
    version: u64,
    mode: Apply,
    attempts: u32,
) -> Result<bool, UpdateError> {
    let budget_changed = match &key.limit {
        Some(limit) => {
            let budget = AccountState {
                account_id: key.key_id,
                status: AccountStatus::Active,
                balance: limit.remaining,
                version: key.version,
                spend_control: SpendControl::Reserve,
            };
            store_account(store, &budget, version, mode, attempts)?
        }
        None => false,
    };
    let entry = key_entry_of(key);
    let written = update(
        store,
        &key_entry_name(&key.key_hash),
        attempts,
        |current| match current.and_then(KeyEntry::decode) {
            Some(old) if old == entry => Change::Keep(false),
            Some(old) if old.version > entry.version && mode == Apply::Forward => Change::Keep(false),
            _ => Change::Write(entry.encode(), true),
        },
    )?;
    Ok(written || budget_changed)
}

/// Applies an account row at `version` (the snapshot's version when higher than the row's own:
/// the snapshot's balance includes every debit at or below it).
pub fn apply_account<S: SharedStore + ?Sized>(
    store: &S,
    account: &AccountState,
    version: u64,
    attempts: u32,
) -> Result<bool, UpdateError> {
    store_account(store, account, version, Apply::Forward, attempts)
}

pub fn store_account<S: SharedStore + ?Sized>(
    store: &S,
    account: &AccountState,
    version: u64,
    mode: Apply,
    attempts: u32,
) -> Result<bool, UpdateError> {
    let version = version.max(account.version);
    let written = update(
        store,
        &account_entry_name(&account.account_id),
        attempts,
        |current| match current.and_then(AccountEntry::decode) {
            Some(mut entry) => {
                let changed = match mode {
                    Apply::Forward => {
                        entry.apply_snapshot(account.status, account.balance, version, account.spend_control)
                    }
                    Apply::Reset => entry.reset_to_snapshot(
                        account.status,
                        account.balance,
                        version,
                        account.spend_control,
                    ),
                };
                if changed {
                    Change::Write(entry.encode(), true)
                } else {
                    Change::Keep(false)
                }
            }
            None => {
                let mut entry = AccountEntry::new(account.status, account.balance, version);
                entry.spend_control = account.spend_control;
                Change::Write(entry.encode(), true)
            }
        },
    );
    counted(store, &account.account_id, written)
}

/// Moves the account's write counter after a write (see `accountcache`): whatever wrote, every
/// worker's copy of the entry is dropped.
fn counted<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    written: Result<bool, UpdateError>,
) -> Result<bool, UpdateError> {
    if written == Ok(true) {
        store.bump_epoch(epoch_shard(account));
    }
    written
}

/// Modifies an existing account entry; a missing or unreadable entry is left alone (`Ok(false)`).
fn modify<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    attempts: u32,
    f: impl Fn(&mut AccountEntry),
) -> Result<bool, UpdateError> {
    let written = update(
        store,
        &account_entry_name(account),
        attempts,
        |current| match current.and_then(AccountEntry::decode) {
            Some(mut entry) => {
                f(&mut entry);
                Change::Write(entry.encode(), true)
            }
            None => Change::Keep(false),
        },
    );
    counted(store, account, written)
}

/// A finalised debit's local amount: spent for every worker at once.
pub fn add_spend<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    amount: Decimal,
    attempts: u32,
) -> Result<bool, UpdateError> {
    modify(store, account, attempts, |e| e.add_unacked(amount))
}

/// Credits held on an account by one request in flight, in its worker's lease, which expires at
/// `expiry_ms` unless the worker renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub account: Uuid,
    pub amount: Decimal,
    pub expiry_ms: u64,
}

/// What an attempt to hold credits found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Held: the worker's lease is now `held`.
    Held { held: Decimal },
    /// Did not fit: what was available (the entry's spendable minus its holds minus `outside`).
    Short { available: Decimal },
    /// No entry for the account (not synced yet): nothing held.
    NoEntry,
}

/// A change of one worker's lease on an account (see `worker::Lease`): its current hold goes, its
/// ended requests' spend is added, and a new hold covers what it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseChange {
    /// The worker's hold now in the entry, and the group it is in.
    pub release: Decimal,
    pub release_expiry_ms: u64,
    /// Spend of its ended requests (and unpublished spend) to add.
    pub spend: Decimal,
    /// The ceilings of its requests in flight, which stay held whatever happens.
    pub in_use: Decimal,
    /// The new request's ceiling (0: only settle the lease).
    pub ceiling: Decimal,
    /// The group of the new hold.
    pub expiry_ms: u64,
}

/// Spare credits a lease takes beyond its requests when the account has plenty: up to nine more
/// ceilings, at most a tenth of what is left, and none when less than twenty ceilings are left (so
/// that near the end of a balance every worker holds exactly what its requests may cost).
fn spare(available_after: Decimal, ceiling: Decimal) -> Decimal {
    let twenty = ceiling.checked_mul(Decimal::from(20)).unwrap_or(Decimal::MAX);
    if ceiling.is_zero() || available_after < twenty {
        return Decimal::ZERO;
    }
    let nine = ceiling.checked_mul(Decimal::from(9)).unwrap_or(Decimal::MAX);
    nine.min(available_after / Decimal::from(10))
}

/// Applies a lease change in one compare-and-swap: the request's ceiling is held if it fits what
/// is available (the entry's spendable balance minus every hold in force minus `others`, the
/// other Envoys' holds, once this worker's old hold is released and its spend added), with spare
/// credits when there is plenty; otherwise only the requests in flight stay held. Concurrent
/// requests on every worker of the Envoy never hold the same credits twice. The write moves no
/// counter: other workers' copies of the entry serve only the header check, which this decides
/// again on what shared data holds (copies last at most a tick).
pub fn lease<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    change: &LeaseChange,
    others: Decimal,
    now_ms: u64,
    attempts: u32,
) -> Result<Reserved, UpdateError> {
    use crate::shared::state::{add, sub};
    update(store, &account_entry_name(account), attempts, |current| {
        let Some(mut entry) = current.and_then(AccountEntry::decode) else {
            return Change::Keep(Reserved::NoEntry);
        };
        entry.release(change.release, change.release_expiry_ms, now_ms);
        entry.add_unacked(change.spend);
        let available = sub(entry.available(now_ms), others);
        let need = add(change.in_use, change.ceiling);
        let result = if change.ceiling.is_zero() || need > available {
            if !change.in_use.is_zero() {
                entry.hold(change.in_use, change.expiry_ms, now_ms);
            }
            if change.ceiling.is_zero() {
                Reserved::Held { held: change.in_use }
            } else {
                Reserved::Short {
                    available: sub(available, change.in_use),
                }
            }
        } else {
            let held = add(need, spare(sub(available, need), change.ceiling));
            entry.hold(held, change.expiry_ms, now_ms);
            Reserved::Held { held }
        };
        Change::Write(entry.encode(), result)
    })
}

/// What the control plane said of one debit's local amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpendOutcome {
    /// Recorded at this version.
    Acked { amount: Decimal, version: u64 },
    /// Will never be recorded.
    Forgotten { amount: Decimal },
}

/// Applies, in order, what the control plane said of several debits of one account, in one
/// read-modify-write: the same entry as applying them one by one, with one shared-data read and
/// write instead of one per debit.
pub fn settle_spends<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    outcomes: &[SpendOutcome],
    attempts: u32,
) -> Result<bool, UpdateError> {
    modify(store, account, attempts, |e| {
        for o in outcomes {
            match *o {
                SpendOutcome::Acked { amount, version } => e.ack(amount, version),
                SpendOutcome::Forgotten { amount } => e.forget_unacked(amount),
            }
        }
    })
}

/// The control plane recorded one debit at `version` (what `settle_spends` does for a batch).
#[cfg(test)]
pub fn ack_spend<S: SharedStore + ?Sized>(
    store: &S,
    account: &Uuid,
    amount: Decimal,
    version: u64,
    attempts: u32,
) -> Result<bool, UpdateError> {
    settle_spends(
        store,
        account,
        &[SpendOutcome::Acked { amount, version }],
        attempts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::store::MemoryStore;
    use metering::wire::{AccountStatus, KeyStatus};

    fn key(version: u64, status: KeyStatus) -> KeyState {
        crate::fixtures::key_state(version, status)
    }

    fn acct(balance: i64, version: u64) -> AccountState {
        AccountState {
            account_id: Uuid::from_u128(2),
            status: AccountStatus::Active,
            balance: Decimal::from(balance),
            version,
            spend_control: Default::default(),
        }
    }

    #[test]
    fn newer_key_row_replaces_older_and_not_the_reverse() {
        let s = MemoryStore::default();
        assert_eq!(apply_key(&s, &key(5, KeyStatus::Active), 0, 4), Ok(true));
        assert_eq!(apply_key(&s, &key(7, KeyStatus::Revoked), 0, 4), Ok(true));
        assert_eq!(apply_key(&s, &key(6, KeyStatus::Active), 0, 4), Ok(false));
        assert_eq!(read_key(&s, "h").map(|k| k.status), Some(KeyStatus::Revoked));
    }

    #[test]
    fn spend_ack_and_snapshot_reconcile_without_double_counting() {
        let s = MemoryStore::default();
        let id = Uuid::from_u128(2);
        apply_account(&s, &acct(10, 3), 3, 4).unwrap();
        add_spend(&s, &id, Decimal::from(4), 4).unwrap();
        assert_eq!(read_account(&s, &id).unwrap().spendable(), Decimal::from(6));
        ack_spend(&s, &id, Decimal::from(4), 9, 4).unwrap();
        // Snapshot 8 predates the debit; snapshot 9 includes it in the balance.
        apply_account(&s, &acct(10, 8), 8, 4).unwrap();
        assert_eq!(read_account(&s, &id).unwrap().spendable(), Decimal::from(6));
        apply_account(&s, &acct(6, 9), 9, 4).unwrap();
        assert_eq!(read_account(&s, &id).unwrap().spendable(), Decimal::from(6));
        assert!(read_account(&s, &id).unwrap().acked.is_empty());
    }

    #[test]
    fn snapshot_version_above_the_row_version_drops_included_groups() {
        let s = MemoryStore::default();
        let id = Uuid::from_u128(2);
        apply_account(&s, &acct(10, 3), 3, 4).unwrap();
        add_spend(&s, &id, Decimal::from(1), 4).unwrap();
        ack_spend(&s, &id, Decimal::from(1), 5, 4).unwrap();
        // The row last changed at 5 (the debit), the snapshot is at 12.
        apply_account(&s, &acct(9, 5), 12, 4).unwrap();
        assert_eq!(read_account(&s, &id).unwrap().snapshot_version, 12);
        assert_eq!(read_account(&s, &id).unwrap().spendable(), Decimal::from(9));
    }

    #[test]
    fn reset_rows_replace_entries_with_higher_versions() {
        let s = MemoryStore::default();
        let id = Uuid::from_u128(2);
        apply_key(&s, &key(50, KeyStatus::Active), 0, 4).unwrap();
        apply_account(&s, &acct(10, 50), 50, 4).unwrap();
        add_spend(&s, &id, Decimal::from(1), 4).unwrap();
        assert_eq!(apply_key(&s, &key(7, KeyStatus::Revoked), 0, 4), Ok(false));
        assert_eq!(
            store_key(&s, &key(7, KeyStatus::Revoked), 0, Apply::Reset, 4),
            Ok(true)
        );
        assert_eq!(read_key(&s, "h").unwrap(), {
            let k = key(7, KeyStatus::Revoked);
            crate::shared::state::KeyEntry {
                key_id: k.key_id,
                account_id: k.account_id,
                status: k.status,
                version: 7,
                rules: None,
            }
        });
        assert_eq!(store_account(&s, &acct(4, 6), 7, Apply::Reset, 4), Ok(true));
        let a = read_account(&s, &id).unwrap();
        assert_eq!((a.balance, a.snapshot_version), (Decimal::from(4), 7));
        assert_eq!(a.spendable(), Decimal::from(3), "local spend kept");
    }

    #[test]
    fn spend_on_an_unknown_account_changes_nothing() {
        let s = MemoryStore::default();
        assert_eq!(add_spend(&s, &Uuid::from_u128(9), Decimal::ONE, 4), Ok(false));
        assert_eq!(s.sets.get(), 0);
    }

    #[test]
    fn concurrent_spend_is_not_lost() {
        let s = MemoryStore::default();
        let id = Uuid::from_u128(2);
        apply_account(&s, &acct(10, 1), 1, 4).unwrap();
        s.interfere.set(3);
        add_spend(&s, &id, Decimal::from(2), 8).unwrap();
        add_spend(&s, &id, Decimal::from(3), 8).unwrap();
        assert_eq!(read_account(&s, &id).unwrap().spendable(), Decimal::from(5));
    }
}
