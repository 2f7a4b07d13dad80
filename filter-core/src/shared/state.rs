//! What the filter keeps in Envoy shared data, in a compact fixed binary format (no JSON on the
//! request path), and the arithmetic of an account's spendable balance.
//!
//! * `cs.k.<key hash>` -> [`KeyEntry`]: the key's account and status at a sync version.
//! * `cs.a3.<account id>` -> [`AccountEntry`]: the balance of the last snapshot applied, plus the
//!   local spend that snapshot does not include yet.
//!
//! Local spend moves through two stages. A finalised debit adds its locally priced amount to
//! `unacked`. When the control plane acknowledges it with version `v`, the amount moves to the
//! group of `v` (or vanishes when a snapshot at or above `v` is already applied). Applying a
//! snapshot at version `V` drops every group `<= V`, because that snapshot's balance includes
//! those debits. So a debit is subtracted exactly once at every instant: first locally, then by
//! the snapshot, never both for longer than an in-flight acknowledgement, never neither.

use std::rc::Rc;

use metering::keylimit::LimitPeriod;
use metering::wire::{AccountStatus, KeyStatus, SpendControl};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Format tag: the first byte of every value, so a future layout can be told apart.
const FORMAT_V1: u8 = 1;
/// Account entries with spend control and holds (entries written as version 1 still decode).
const FORMAT_V2: u8 = 2;
/// Hold groups kept per account; past it the earliest merges into the next (see
/// [`AccountEntry::hold`]).
pub const MAX_HOLD_GROUPS: usize = 32;
/// Acknowledged groups kept per account; past it the two oldest merge (see [`AccountEntry::ack`]).
pub const MAX_ACK_GROUPS: usize = 16;

// Both are built on the request path: plain appends, no formatting machinery.
pub fn key_entry_name(key_hash: &str) -> String {
    let mut name = String::with_capacity(5 + key_hash.len());
    name.push_str("cs.k.");
    name.push_str(key_hash);
    name
}

pub fn account_entry_name(account: &Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let mut name = String::with_capacity(5 + buf.len());
    // `a3`: entries with holds (format 2) live apart from the format 1 entries that a VM of an
    // older module may still write during a module update in the same Envoy (it could not read
    // them, and would write over their holds); see `sync::STATUS_KEY`.
    name.push_str("cs.a3.");
    name.push_str(account.simple().encode_lower(&mut buf));
    name
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key_id: Uuid,
    pub account_id: Uuid,
    pub status: KeyStatus,
    pub version: u64,
    /// Limit, allowed models, expiry: `None` for a key without any (the common case, encoded as
    /// before key limits existed).
    pub rules: Option<Rc<KeyRules>>,
}

/// What a key may do beyond its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRules {
    /// From this instant (ms since the epoch) the key is refused.
    pub expires_at_ms: Option<u64>,
    pub limit: Option<KeyLimit>,
    /// Model ids, families or `prefix*` patterns; empty: every model.
    pub allowed_models: Vec<String>,
}

/// A key's spending limit. What is left of it lives in an account entry of its own, under the
/// key's id ([`account_entry_name`]): held, spent and acknowledged exactly as an account's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimit {
    pub credits: Decimal,
    pub period: LimitPeriod,
    /// When the period the budget entry counts ends (`None`: `total`).
    pub resets_at_ms: Option<u64>,
}

impl KeyEntry {
    /// The key's limit, when it has one: its budget entry is `cs.a3.<key_id>`.
    pub fn limit(&self) -> Option<&KeyLimit> {
        self.rules.as_ref().and_then(|r| r.limit.as_ref())
    }

    /// Whether the key expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.rules
            .as_ref()
            .and_then(|r| r.expires_at_ms)
            .is_some_and(|e| e <= now_ms)
    }
}

/// A little-endian reader over a value; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub(crate) fn slice(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }
    pub(crate) fn uuid(&mut self) -> Option<Uuid> {
        self.take::<16>().map(Uuid::from_bytes)
    }
    pub(crate) fn decimal(&mut self) -> Option<Decimal> {
        self.take::<16>().map(Decimal::deserialize)
    }
    pub(crate) fn done(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn key_status_byte(s: KeyStatus) -> u8 {
    match s {
        KeyStatus::Active => 1,
        KeyStatus::Revoked => 2,
    }
}

fn account_status_byte(s: AccountStatus) -> u8 {
    match s {
        AccountStatus::Active => 1,
        AccountStatus::Suspended => 2,
    }
}

fn period_byte(p: LimitPeriod) -> u8 {
    match p {
        LimitPeriod::Day => 1,
        LimitPeriod::Week => 2,
        LimitPeriod::Month => 3,
        LimitPeriod::Total => 4,
    }
}

fn period_of(b: u8) -> Option<LimitPeriod> {
    Some(match b {
        1 => LimitPeriod::Day,
        2 => LimitPeriod::Week,
        3 => LimitPeriod::Month,
        4 => LimitPeriod::Total,
        _ => return None,
    })
}

/// Allowed-model patterns a key entry keeps, and their longest (the control plane checks both).
const MAX_MODELS: usize = 64;
const MAX_PATTERN: usize = 255;

impl KeyEntry {
    pub const ENCODED_LEN: usize = 1 + 1 + 16 + 16 + 8;

    /// Format 1 for a key without rules (what every module reads), format 2 with them: the
    /// format 1 fields, then a flags byte (1: expiry, 2: limit), the expiry (u64 ms), the limit
    /// (credits, period byte, reset u64 ms with 0 for none), and the models (count u8, each a
    /// length byte and its bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.push(if self.rules.is_some() {
            FORMAT_V2
        } else {
            FORMAT_V1
        });
        out.push(key_status_byte(self.status));
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(self.account_id.as_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        if let Some(rules) = &self.rules {
            let flags = u8::from(rules.expires_at_ms.is_some()) | (u8::from(rules.limit.is_some()) << 1);
            out.push(flags);
            if let Some(e) = rules.expires_at_ms {
                out.extend_from_slice(&e.to_le_bytes());
            }
            if let Some(l) = &rules.limit {
                out.extend_from_slice(&l.credits.serialize());
                out.push(period_byte(l.period));
                out.extend_from_slice(&l.resets_at_ms.unwrap_or(0).to_le_bytes());
            }
            // Past the bounds the list only narrows: a pattern too long to keep becomes one that
            // allows nothing (never an empty list, which allows everything).
            let models: Vec<&str> = rules
                .allowed_models
                .iter()
                .map(|m| if m.len() <= MAX_PATTERN { m.as_str() } else { "" })
                .take(MAX_MODELS)
                .collect();
            out.push(u8::try_from(models.len()).unwrap_or(0));
            for m in models {
                out.push(u8::try_from(m.len()).unwrap_or(0));
                out.extend_from_slice(m.as_bytes());
            }
        }
        out
    }

    /// `None` for anything that is not a value this module wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader { bytes };
        let format = r.u8()?;
        if format != FORMAT_V1 && format != FORMAT_V2 {
            return None;
        }
        let status = match r.u8()? {
            1 => KeyStatus::Active,
            2 => KeyStatus::Revoked,
            _ => return None,
        };
        let mut entry = Self {
            status,
            key_id: r.uuid()?,
            account_id: r.uuid()?,
            version: r.u64()?,
            rules: None,
        };
        if format == FORMAT_V2 {
            let flags = r.u8()?;
            if flags > 3 {
                return None;
            }
            let mut rules = KeyRules::default();
            if flags & 1 != 0 {
                rules.expires_at_ms = Some(r.u64()?);
            }
            if flags & 2 != 0 {
                let credits = r.decimal()?;
                let period = period_of(r.u8()?)?;
                let resets = r.u64()?;
                rules.limit = Some(KeyLimit {
                    credits,
                    period,
                    resets_at_ms: (resets != 0).then_some(resets),
                });
            }
            let n = r.u8()?;
            // Never more than an encoding writes: a value round-trips or does not decode.
            if usize::from(n) > MAX_MODELS {
                return None;
            }
            for _ in 0..n {
                let len = usize::from(r.u8()?);
                let m = std::str::from_utf8(r.slice(len)?).ok()?;
                rules.allowed_models.push(m.to_owned());
            }
            entry.rules = Some(Rc::new(rules));
        }
        r.done().then_some(entry)
    }
}

/// Credits added without overflow (saturating: nothing here is anywhere near the bound, and a
/// value decoded from shared data must not be able to panic the VM).
pub fn add(a: Decimal, b: Decimal) -> Decimal {
    a.checked_add(b).unwrap_or(Decimal::MAX)
}

pub fn sub(a: Decimal, b: Decimal) -> Decimal {
    a.checked_sub(b).unwrap_or(Decimal::MIN)
}

/// Adds `amount` to the group `key` of `groups` (ascending by key), made when missing; past `max`
/// groups, the first joins the next (amounts are never dropped, only counted under a later key).
fn add_to_group(groups: &mut Vec<(u64, Decimal)>, key: u64, amount: Decimal, max: usize) {
    match groups.binary_search_by_key(&key, |(k, _)| *k) {
        Ok(i) => {
            if let Some((_, a)) = groups.get_mut(i) {
                *a = a.checked_add(amount).unwrap_or(Decimal::MAX);
            }
        }
        Err(i) => groups.insert(i, (key, amount)),
    }
    if groups.len() > max {
        let (_, first) = groups.remove(0);
        if let Some((_, next)) = groups.first_mut() {
            *next = next.checked_add(first).unwrap_or(Decimal::MAX);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    pub status: AccountStatus,
    /// The version of the last snapshot (or lookup) whose balance was applied.
    pub snapshot_version: u64,
    /// Credits at `snapshot_version`, including every debit acknowledged at or below it.
    pub balance: Decimal,
    /// Local spend finalised here and not yet acknowledged by the control plane.
    pub unacked: Decimal,
    /// Acknowledged local spend by ack version, each above `snapshot_version`, ascending.
    pub acked: Vec<(u64, Decimal)>,
    pub spend_control: SpendControl,
    /// Credits held by this Envoy's requests in flight, grouped by the instant (ms) the holds
    /// expire, ascending: a request whose end never comes (its worker gone) stops holding then.
    pub holds: Vec<(u64, Decimal)>,
}

impl AccountEntry {
    pub fn new(status: AccountStatus, balance: Decimal, version: u64) -> Self {
        Self {
            status,
            snapshot_version: version,
            balance,
            unacked: Decimal::ZERO,
            acked: Vec::new(),
            spend_control: SpendControl::default(),
            holds: Vec::new(),
        }
    }

    /// Credits held at `now_ms` by this Envoy's requests in flight.
    pub fn held(&self, now_ms: u64) -> Decimal {
        self.holds
            .iter()
            .filter(|(expiry, _)| *expiry > now_ms)
            .fold(Decimal::ZERO, |acc, (_, amount)| add(acc, *amount))
    }

    /// What a new request may still reserve: spendable minus the holds in force.
    pub fn available(&self, now_ms: u64) -> Decimal {
        sub(self.spendable(), self.held(now_ms))
    }

    /// Holds `amount` until `expiry_ms`. Expired groups go first.
    pub fn hold(&mut self, amount: Decimal, expiry_ms: u64, now_ms: u64) {
        self.expire(now_ms);
        let amount = amount.max(Decimal::ZERO);
        // Past the bound the earliest group joins the next one: those holds last a little longer
        // (the later expiry), never less.
        add_to_group(&mut self.holds, expiry_ms, amount, MAX_HOLD_GROUPS);
    }

    /// The request that held `amount` until `expiry_ms` ended. A group that expired (or was
    /// merged into a later one) is left alone: its amount stops counting when that group expires.
    pub fn release(&mut self, amount: Decimal, expiry_ms: u64, now_ms: u64) {
        if let Ok(i) = self.holds.binary_search_by_key(&expiry_ms, |(e, _)| *e) {
            if let Some((_, a)) = self.holds.get_mut(i) {
                *a = a
                    .checked_sub(amount.max(Decimal::ZERO))
                    .unwrap_or(Decimal::ZERO)
                    .max(Decimal::ZERO);
                if a.is_zero() {
                    self.holds.remove(i);
                }
            }
        }
        self.expire(now_ms);
    }

    fn expire(&mut self, now_ms: u64) {
        self.holds.retain(|(expiry, _)| *expiry > now_ms);
    }

    /// Snapshot balance minus the local spend no applied snapshot includes yet.
    pub fn spendable(&self) -> Decimal {
        // Checked: values decoded from shared data must not be able to panic the VM.
        self.acked
            .iter()
            .fold(sub(self.balance, self.unacked), |acc, (_, amount)| {
                sub(acc, *amount)
            })
    }

    /// Applies an account row of a snapshot (or lookup) at `version`. An older row than the one
    /// applied is ignored: versions only move forward. Returns whether anything changed.
    pub fn apply_snapshot(
        &mut self,
        status: AccountStatus,
        balance: Decimal,
        version: u64,
        spend_control: SpendControl,
    ) -> bool {
        if version < self.snapshot_version {
            return false;
        }
        let changed = version != self.snapshot_version
            || balance != self.balance
            || status != self.status
            || spend_control != self.spend_control;
        self.spend_control = spend_control;
        self.status = status;
        self.balance = balance;
        self.snapshot_version = version;
        let before = self.acked.len();
        self.acked.retain(|(v, _)| *v > version);
        changed || before != self.acked.len()
    }

    /// The control plane's versions went backwards (restore, failover, new database) and it sent a
    /// full snapshot at `version`: take its row as the truth whatever the versions say.
    ///
    /// The acknowledged groups go: their versions belong to the old numbering, so comparing them
    /// with new snapshots would keep them counted long after the new balances include them (or drop
    /// them too early), and the snapshot's balance is what the control plane now holds for
    /// everything it acknowledged. `unacked` stays: those debits are still in the workers' buffers
    /// and no snapshot includes them yet; they are acknowledged at new versions when sent.
    pub fn reset_to_snapshot(
        &mut self,
        status: AccountStatus,
        balance: Decimal,
        version: u64,
        spend_control: SpendControl,
    ) -> bool {
        let changed = *self
            != Self {
                status,
                snapshot_version: version,
                balance,
                unacked: self.unacked,
                acked: Vec::new(),
                spend_control,
                holds: self.holds.clone(),
            };
        self.spend_control = spend_control;
        self.status = status;
        self.balance = balance;
        self.snapshot_version = version;
        self.acked.clear();
        changed
    }

    /// A debit finalised on this Envoy: spent at once for every worker.
    pub fn add_unacked(&mut self, amount: Decimal) {
        self.unacked = self
            .unacked
            .checked_add(amount.max(Decimal::ZERO))
            .unwrap_or(Decimal::MAX);
    }

    /// The control plane recorded a debit of `amount` at `version`.
    pub fn ack(&mut self, amount: Decimal, version: u64) {
        let amount = amount.max(Decimal::ZERO);
        self.unacked = self
            .unacked
            .checked_sub(amount)
            .unwrap_or(Decimal::ZERO)
            .max(Decimal::ZERO);
        if version <= self.snapshot_version {
            // The applied snapshot already includes it.
            return;
        }
        // Past the bound the oldest group joins the next one: it then waits for a later
        // snapshot, so the spend is counted a little longer (never dropped early).
        add_to_group(&mut self.acked, version, amount, MAX_ACK_GROUPS);
    }

    /// The control plane will never record this debit (rejected or conflicting): stop counting it.
    pub fn forget_unacked(&mut self, amount: Decimal) {
        self.unacked = self
            .unacked
            .checked_sub(amount.max(Decimal::ZERO))
            .unwrap_or(Decimal::ZERO)
            .max(Decimal::ZERO);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 1 + 8 + 16 + 16 + 1 + self.acked.len() * 24 + 2 + self.holds.len() * 24);
        out.push(FORMAT_V2);
        out.push(account_status_byte(self.status));
        out.extend_from_slice(&self.snapshot_version.to_le_bytes());
        out.extend_from_slice(&self.balance.serialize());
        out.extend_from_slice(&self.unacked.serialize());
        out.push(u8::try_from(self.acked.len()).unwrap_or(u8::MAX));
        for (v, a) in self.acked.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&a.serialize());
        }
        out.push(match self.spend_control {
            SpendControl::Reserve => 1,
            SpendControl::Balance => 2,
        });
        out.push(u8::try_from(self.holds.len()).unwrap_or(u8::MAX));
        for (e, a) in self.holds.iter().take(usize::from(u8::MAX)) {
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(&a.serialize());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader { bytes };
        let format = r.u8()?;
        if format != FORMAT_V1 && format != FORMAT_V2 {
            return None;
        }
        let status = match r.u8()? {
            1 => AccountStatus::Active,
            2 => AccountStatus::Suspended,
            _ => return None,
        };
        let snapshot_version = r.u64()?;
        let balance = r.decimal()?;
        let unacked = r.decimal()?;
        let n = r.u8()?;
        let mut acked = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            acked.push((r.u64()?, r.decimal()?));
        }
        let mut spend_control = SpendControl::default();
        let mut holds = Vec::new();
        if format == FORMAT_V2 {
            spend_control = match r.u8()? {
                1 => SpendControl::Reserve,
                2 => SpendControl::Balance,
                _ => return None,
            };
            let n = r.u8()?;
            holds.reserve(usize::from(n));
            for _ in 0..n {
                let (expiry, amount) = (r.u64()?, r.decimal()?);
                // Groups are written ascending, each above zero: anything else was not written
                // by this module.
                let ascending = holds.last().is_none_or(|(last, _)| *last < expiry);
                if !ascending || amount <= Decimal::ZERO {
                    return None;
                }
                holds.push((expiry, amount));
            }
        }
        r.done().then_some(Self {
            status,
            snapshot_version,
            balance,
            unacked,
            acked,
            spend_control,
            holds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn account(balance: &str, version: u64) -> AccountEntry {
        AccountEntry::new(AccountStatus::Active, d(balance), version)
    }

    #[test]
    fn entry_names_are_the_prefix_and_the_id() {
        let id = Uuid::from_u128(0x0190_aaaa_bbbb_7ccc_8ddd_eeee_ffff_0001);
        assert_eq!(account_entry_name(&id), "cs.a3.0190aaaabbbb7ccc8dddeeeeffff0001");
        assert_eq!(key_entry_name("ab12"), "cs.k.ab12");
    }

    #[test]
    fn key_entry_round_trips() {
        let e = KeyEntry {
            key_id: Uuid::from_u128(7),
            account_id: Uuid::from_u128(0xabc),
            status: KeyStatus::Revoked,
            version: u64::MAX - 3,
            rules: None,
        };
        let bytes = e.encode();
        assert_eq!(bytes.len(), KeyEntry::ENCODED_LEN);
        assert_eq!(KeyEntry::decode(&bytes), Some(e));
    }

    #[test]
    fn key_entry_with_rules_round_trips_and_rejects_damage() {
        let e = KeyEntry {
            key_id: Uuid::from_u128(7),
            account_id: Uuid::from_u128(0xabc),
            status: KeyStatus::Active,
            version: 9,
            rules: Some(Rc::new(KeyRules {
                expires_at_ms: Some(1_800_000_000_000),
                limit: Some(KeyLimit {
                    credits: d("250.5"),
                    period: LimitPeriod::Week,
                    resets_at_ms: Some(1_800_000_100_000),
                }),
                allowed_models: vec!["claude-opus-*".into(), "claude-haiku-4-5".into()],
            })),
        };
        let bytes = e.encode();
        assert_eq!(bytes.first(), Some(&FORMAT_V2));
        assert_eq!(KeyEntry::decode(&bytes), Some(e.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(KeyEntry::decode(bytes.get(..cut).unwrap()), None, "cut at {cut}");
        }
        let total = KeyEntry {
            rules: Some(Rc::new(KeyRules {
                limit: Some(KeyLimit {
                    credits: d("1"),
                    period: LimitPeriod::Total,
                    resets_at_ms: None,
                }),
                ..KeyRules::default()
            })),
            ..e.clone()
        };
        assert_eq!(KeyEntry::decode(&total.encode()), Some(total));
        // A pattern too long to keep narrows the list; it never empties it (empty allows all).
        let long = KeyEntry {
            rules: Some(Rc::new(KeyRules {
                allowed_models: vec!["x".repeat(300)],
                ..KeyRules::default()
            })),
            ..e
        };
        let back = KeyEntry::decode(&long.encode()).unwrap();
        assert_eq!(back.rules.unwrap().allowed_models, vec![String::new()]);
        // More models than an encoding writes do not decode (found by the shared_data fuzz target:
        // such a value did not round-trip).
        let many = KeyEntry {
            rules: Some(Rc::new(KeyRules {
                allowed_models: vec!["m".to_owned(); MAX_MODELS],
                ..KeyRules::default()
            })),
            ..long
        };
        let mut bytes = many.encode();
        assert_eq!(KeyEntry::decode(&bytes), Some(many));
        let count = bytes.len() - MAX_MODELS * 2 - 1;
        bytes[count] += 1;
        bytes.extend_from_slice(&[1, b'm']);
        assert_eq!(KeyEntry::decode(&bytes), None);
    }

    #[test]
    fn account_entry_round_trips_with_groups() {
        let mut a = account("12.345678901234", 10);
        a.add_unacked(d("0.5"));
        a.ack(d("0.25"), 12);
        a.ack(d("0.125"), 11);
        a.status = AccountStatus::Suspended;
        assert_eq!(AccountEntry::decode(&a.encode()), Some(a));
    }

    #[test]
    fn truncated_trailing_or_foreign_bytes_do_not_decode() {
        let bytes = account("1", 1).encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                AccountEntry::decode(bytes.get(..cut).unwrap()),
                None,
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(AccountEntry::decode(&longer), None);
        let mut foreign = bytes;
        foreign[0] = 9;
        assert_eq!(AccountEntry::decode(&foreign), None);
        assert_eq!(KeyEntry::decode(b"{\"json\":true}"), None);
    }

    #[test]
    fn unacked_spend_reduces_spendable_at_once() {
        let mut a = account("10", 5);
        a.add_unacked(d("3.5"));
        assert_eq!(a.spendable(), d("6.5"));
    }

    #[test]
    fn ack_moves_spend_to_its_version_until_a_snapshot_includes_it() {
        let mut a = account("10", 5);
        a.add_unacked(d("3"));
        a.ack(d("3"), 8);
        assert_eq!(a.unacked, Decimal::ZERO);
        assert_eq!(a.spendable(), d("7"), "still counted after the ack");
        // A snapshot at 7 does not include the debit recorded at 8.
        a.apply_snapshot(AccountStatus::Active, d("10"), 7, SpendControl::Reserve);
        assert_eq!(a.spendable(), d("7"));
        // The snapshot at 8 does: its balance already has the debit, the local amount goes.
        a.apply_snapshot(AccountStatus::Active, d("7"), 8, SpendControl::Reserve);
        assert_eq!(a.spendable(), d("7"));
        assert!(a.acked.is_empty());
    }

    #[test]
    fn ack_below_the_applied_snapshot_drops_the_amount() {
        let mut a = account("10", 5);
        a.add_unacked(d("2"));
        // The leader applied a snapshot at 9 (balance with the debit) before the ack arrived.
        a.apply_snapshot(AccountStatus::Active, d("8"), 9, SpendControl::Reserve);
        assert_eq!(
            a.spendable(),
            d("6"),
            "counted twice only while the ack is in flight"
        );
        a.ack(d("2"), 9);
        assert_eq!(a.spendable(), d("8"));
    }

    #[test]
    fn older_snapshot_rows_are_ignored() {
        let mut a = account("10", 5);
        assert!(!a.apply_snapshot(AccountStatus::Suspended, d("99"), 4, SpendControl::Reserve));
        assert_eq!((a.balance, a.status), (d("10"), AccountStatus::Active));
    }

    #[test]
    fn reset_takes_an_older_row_keeps_unacked_spend_and_drops_old_groups() {
        let mut a = account("10", 50);
        a.add_unacked(d("2"));
        a.ack(d("2"), 60);
        a.add_unacked(d("3"));
        assert_eq!(a.spendable(), d("5"));
        // The control plane restarted its numbering at 7 and holds 9 credits.
        assert!(a.reset_to_snapshot(AccountStatus::Suspended, d("9"), 7, SpendControl::Reserve));
        assert_eq!(
            (a.status, a.balance, a.snapshot_version),
            (AccountStatus::Suspended, d("9"), 7)
        );
        assert!(a.acked.is_empty());
        assert_eq!(a.unacked, d("3"), "local spend not acknowledged yet is kept");
        assert_eq!(a.spendable(), d("6"));
        // From here versions move forward again from 7.
        a.ack(d("3"), 8);
        assert_eq!(a.spendable(), d("6"));
        a.apply_snapshot(AccountStatus::Active, d("6"), 8, SpendControl::Reserve);
        assert_eq!(a.spendable(), d("6"));
        assert!(
            !a.reset_to_snapshot(AccountStatus::Active, d("6"), 8, SpendControl::Reserve),
            "no change"
        );
    }

    #[test]
    fn group_overflow_merges_the_oldest_into_the_next_version() {
        let mut a = account("100", 0);
        let n = MAX_ACK_GROUPS as u64 + 1;
        for v in 1..=n {
            a.add_unacked(d("1"));
            a.ack(d("1"), v);
        }
        assert_eq!(a.acked.len(), MAX_ACK_GROUPS);
        assert_eq!(a.acked[0], (2, d("2")));
        assert_eq!(a.spendable(), d("100") - Decimal::from(n));
        // A snapshot at 1 cannot drop the merged amount (it waits for 2).
        a.apply_snapshot(AccountStatus::Active, d("99"), 1, SpendControl::Reserve);
        assert_eq!(a.acked[0], (2, d("2")));
    }

    #[test]
    fn forgetting_a_rejected_debit_restores_spendable() {
        let mut a = account("10", 1);
        a.add_unacked(d("4"));
        a.forget_unacked(d("4"));
        assert_eq!(a.spendable(), d("10"));
        a.forget_unacked(d("1"));
        assert_eq!(a.unacked, Decimal::ZERO, "never negative");
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn holds_reduce_what_is_available_until_released_or_expired() {
        let mut a = AccountEntry::new(AccountStatus::Active, d("10"), 1);
        a.hold(d("3"), 2_000, 1_000);
        a.hold(d("4"), 2_000, 1_000);
        a.hold(d("1.5"), 3_000, 1_000);
        assert_eq!(a.available(1_000), d("1.5"));
        assert_eq!(a.spendable(), d("10"), "spendable is the balance side only");
        a.release(d("3"), 2_000, 1_500);
        assert_eq!(a.available(1_500), d("4.5"));
        // The group of 2,000 expires: its 4 credits stop counting, read or written.
        assert_eq!(a.available(2_000), d("8.5"));
        a.release(d("4"), 2_000, 2_500);
        assert_eq!(a.holds, vec![(3_000, d("1.5"))]);
        a.release(d("1.5"), 3_000, 2_500);
        assert!(a.holds.is_empty());
        a.release(d("1"), 3_000, 2_500);
        assert_eq!(a.available(2_500), d("10"), "a release never adds credits");
    }

    #[test]
    fn too_many_groups_merge_into_a_later_expiry() {
        let mut a = AccountEntry::new(AccountStatus::Active, d("1000"), 1);
        for i in 0..=MAX_HOLD_GROUPS as u64 {
            a.hold(d("1"), 10_000 + i, 0);
        }
        assert_eq!(a.holds.len(), MAX_HOLD_GROUPS);
        assert_eq!(a.holds[0], (10_001, d("2")));
        assert_eq!(a.held(0), Decimal::from(MAX_HOLD_GROUPS as i64 + 1));
        // The merged group's first request ends: its amount waits for the later expiry.
        a.release(d("1"), 10_000, 0);
        assert_eq!(a.held(0), Decimal::from(MAX_HOLD_GROUPS as i64 + 1));
        assert_eq!(a.held(10_001), Decimal::from(MAX_HOLD_GROUPS as i64 - 1));
    }

    #[test]
    fn entries_with_holds_round_trip_and_version_1_entries_still_decode() {
        let mut a = AccountEntry::new(AccountStatus::Active, d("7.25"), 3);
        a.spend_control = SpendControl::Balance;
        a.hold(d("0.125"), 99, 0);
        a.add_unacked(d("1"));
        assert_eq!(AccountEntry::decode(&a.encode()), Some(a.clone()));
        let bytes = a.encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                AccountEntry::decode(bytes.get(..cut).unwrap()),
                None,
                "cut at {cut}"
            );
        }
        // The version 1 layout: no spend control, no holds.
        let mut v1 = vec![FORMAT_V1, 1];
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&d("7.25").serialize());
        v1.extend_from_slice(&Decimal::ZERO.serialize());
        v1.push(0);
        let old = AccountEntry::decode(&v1).unwrap();
        assert_eq!(old, AccountEntry::new(AccountStatus::Active, d("7.25"), 3));
    }

    #[test]
    fn snapshots_keep_the_holds_and_take_the_spend_control() {
        let mut a = AccountEntry::new(AccountStatus::Active, d("10"), 1);
        a.hold(d("2"), 50, 0);
        assert!(a.apply_snapshot(AccountStatus::Active, d("10"), 1, SpendControl::Balance));
        assert_eq!((a.spend_control, a.held(0)), (SpendControl::Balance, d("2")));
        assert!(a.reset_to_snapshot(AccountStatus::Active, d("5"), 1, SpendControl::Reserve));
        assert_eq!((a.spend_control, a.available(0)), (SpendControl::Reserve, d("3")));
    }
}
