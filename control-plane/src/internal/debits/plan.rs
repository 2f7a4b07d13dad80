//! The plan of a debit batch, decided without the database: each debit's outcome (applied,
//! duplicate, conflict, or rejected and why) and what applying the batch writes (usage transfers
//! and their entries, the new balances, usage rows, the keys that spent). The SQL shell (`mod.rs`)
//! reads what the plan needs, calls it and writes exactly what it says.

use std::collections::{HashMap, HashSet};

use metering::wire::{Debit, DebitOutcome, DebitResult};
use metering::PriceTable;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::ApiError;
use crate::ledger::{self, NewEntry, NewTransfer};
use crate::{money, sync};

const MAX_TEXT: usize = 256;

/// A debit's key id and cost, or why it can never be recorded.
type Priced = Result<(Uuid, metering::Cost), String>;

/// One debit as prepared before the ledger lock: its fingerprint, whether it passed [`check`], and
/// its key and cost or why it cannot be recorded.
pub struct Prepared {
    fingerprint: String,
    checked: bool,
    priced: Priced,
}

/// A debit an earlier batch recorded, as stored.
pub struct Recorded {
    pub fingerprint: String,
    pub version: i64,
    pub cost: Decimal,
}

/// What gets stored for one applied debit.
pub struct UsageRow<'a> {
    pub debit: &'a Debit,
    pub key_id: Uuid,
    pub transfer_id: Option<Uuid>,
    pub model_billed: String,
    pub price_version: String,
    pub cost: Decimal,
    pub list_usd: Decimal,
    pub served_model_unpriced: bool,
    pub speed: Option<String>,
    pub inference_geo: Option<String>,
    pub multiplier: Decimal,
    /// The answer billed something the table cannot price exactly (a modifier value or an
    /// iteration model without a price).
    pub unpriced_report: bool,
    pub fingerprint: String,
}

/// What applying a batch that applies at least one debit writes, in the order of the fields.
pub struct Writes<'a> {
    /// The usage transfers (debits that cost something) and their entries.
    pub transfers: Vec<NewTransfer>,
    pub entries: Vec<NewEntry>,
    /// The balances after the entries, of the ledger accounts they touch (only those).
    pub balances: HashMap<Uuid, Decimal>,
    pub rows: Vec<UsageRow<'a>>,
    /// The keys of the debits applied, sorted, each once: those with a spending limit are locked
    /// and re-versioned.
    pub spent_keys: Vec<Uuid>,
}

/// What a batch comes to.
pub struct Plan<'a> {
    /// One per debit, in the batch's order.
    pub results: Vec<DebitResult>,
    /// The results that take the batch's version, once it is bumped (applied now, or repeating in
    /// the batch a debit applied now).
    pub pending_version: Vec<usize>,
    /// `None` when the batch applies nothing: nothing is written and no version is bumped.
    pub writes: Option<Writes<'a>>,
}

impl Plan<'_> {
    /// The results, with the batch's version given to those waiting for it.
    pub fn stamped(mut self, version: i64) -> Vec<DebitResult> {
        for i in self.pending_version {
            if let Some(r) = self.results.get_mut(i) {
                r.version = sync::to_wire(version);
            }
        }
        self.results
    }
}

fn result(
    debit_id: Uuid,
    outcome: DebitOutcome,
    version: i64,
    credits: Option<Decimal>,
    error: Option<String>,
) -> DebitResult {
    DebitResult {
        debit_id,
        outcome,
        version: sync::to_wire(version),
        credits: credits.map(money::canonical),
        error,
    }
}

fn rejected(debit_id: Uuid, why: String) -> DebitResult {
    result(debit_id, DebitOutcome::Rejected, 0, None, Some(why))
}

/// Checks what needs no database: counts, sizes, formats.
fn check(d: &Debit) -> Result<(), String> {
    d.usage.validate().map_err(|e| e.to_string())?;
    if d.key_hash.len() != 64
        || !d
            .key_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("key_hash must be 64 lowercase hex digits".into());
    }
    if d.model_requested.is_empty() || d.model_requested.len() > MAX_TEXT {
        return Err(format!("model_requested must be 1 to {MAX_TEXT} bytes"));
    }
    let texts = [
        &d.model_served,
        &d.upstream_request_id,
        &d.upstream_message_id,
        &d.requested.speed,
        &d.requested.inference_geo,
    ];
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|s| s.len() > MAX_TEXT))
    {
        return Err(format!("text fields are limited to {MAX_TEXT} bytes"));
    }
    Ok(())
}

fn fingerprint(d: &Debit) -> String {
    ledger::fingerprint(&[&serde_json::to_string(d).unwrap_or_default()])
}

/// The key's id and the cost of a debit that passed [`check`], or why it can never be recorded
/// (whether its account exists is checked under the lock).
fn price(d: &Debit, keys: &HashMap<String, (Uuid, Uuid)>, table: &PriceTable) -> Priced {
    let key_id = match keys.get(&d.key_hash) {
        Some((key_id, account)) if *account == d.account_id => *key_id,
        Some(_) => return Err("the key belongs to another account".into()),
        None => return Err("no key has this hash".into()),
    };
    let cost = metering::cost(table, &d.served_request()).map_err(|e| e.to_string())?;
    Ok((key_id, cost))
}

/// Everything that needs no ledger lock, per debit: its fingerprint, `check`, and its key and
/// cost from `keys` (key hash -> (key id, account id)) and the price table.
pub fn prepare(debits: &[Debit], keys: &HashMap<String, (Uuid, Uuid)>, table: &PriceTable) -> Vec<Prepared> {
    debits
        .iter()
        .map(|d| {
            let fingerprint = fingerprint(d);
            match check(d) {
                Err(why) => Prepared {
                    fingerprint,
                    checked: false,
                    priced: Err(why),
                },
                Ok(()) => Prepared {
                    fingerprint,
                    checked: true,
                    priced: price(d, keys, table),
                },
            }
        })
        .collect()
}

/// Decides the batch: `prepared` is [`prepare`]'s answer for `debits`, `recorded` the debits of
/// the batch that earlier batches recorded, `balances` the ledger accounts as locked (the debits'
/// accounts that exist and `usage_revenue`); each transfer's id comes from `new_transfer_id`.
///
/// In the batch, a debit id seen before repeats its first result (a duplicate when that was
/// applied now) or, with other content, is a conflict; an id recorded before is a duplicate with
/// its stored version and cost, or a conflict. Otherwise a malformed debit is told why first,
/// then a missing account, then the key or the price. A debit applied is recorded even when its
/// account goes below zero: the tokens were delivered.
pub fn plan<'a>(
    debits: &'a [Debit],
    prepared: Vec<Prepared>,
    recorded: &HashMap<Uuid, Recorded>,
    mut balances: HashMap<Uuid, Decimal>,
    actor: &str,
    mut new_transfer_id: impl FnMut() -> Uuid,
) -> Result<Plan<'a>, ApiError> {
    let mut results: Vec<DebitResult> = Vec::with_capacity(debits.len());
    let mut pending_version: Vec<usize> = Vec::new();
    // The first occurrence of each id in this batch: its fingerprint and the index of its result.
    let mut in_batch: HashMap<Uuid, (String, usize)> = HashMap::new();
    let mut transfers: Vec<NewTransfer> = Vec::new();
    let mut rows: Vec<UsageRow> = Vec::new();
    for (d, prepared) in debits.iter().zip(prepared) {
        let fp = prepared.fingerprint;
        if let Some((seen_fp, first)) = in_batch.get(&d.debit_id) {
            let repeat = match results.get(*first) {
                Some(r) if *seen_fp == fp => {
                    let mut r = r.clone();
                    if r.outcome == DebitOutcome::Applied {
                        r.outcome = DebitOutcome::Duplicate;
                        pending_version.push(results.len());
                    }
                    r
                }
                _ => {
                    let why = "the same debit_id came twice in the batch with different content".to_owned();
                    result(d.debit_id, DebitOutcome::Conflict, 0, None, Some(why))
                }
            };
            results.push(repeat);
            continue;
        }
        in_batch.insert(d.debit_id, (fp.clone(), results.len()));
        if let Some(stored) = recorded.get(&d.debit_id) {
            results.push(if stored.fingerprint == fp {
                result(
                    d.debit_id,
                    DebitOutcome::Duplicate,
                    stored.version,
                    Some(stored.cost),
                    None,
                )
            } else {
                let why = "debit_id was recorded before with different content".to_owned();
                result(d.debit_id, DebitOutcome::Conflict, 0, None, Some(why))
            });
            continue;
        }
        let priced = if !prepared.checked || balances.contains_key(&d.account_id) {
            prepared.priced
        } else {
            Err(format!("account {} does not exist", d.account_id))
        };
        match priced {
            Err(why) => results.push(rejected(d.debit_id, why)),
            Ok((key_id, cost)) => {
                let credits = cost.credits;
                let transfer_id = (credits > Decimal::ZERO).then(&mut new_transfer_id);
                if let Some(id) = transfer_id {
                    transfers.push(NewTransfer {
                        id,
                        scope: "debit",
                        idempotency_key: d.debit_id.to_string(),
                        kind: "usage",
                        from: d.account_id,
                        to: ledger::USAGE_REVENUE,
                        amount: credits,
                        reason: None,
                        actor: actor.to_owned(),
                        fingerprint: fp.clone(),
                    });
                }
                pending_version.push(results.len());
                results.push(result(d.debit_id, DebitOutcome::Applied, 0, Some(credits), None));
                rows.push(UsageRow {
                    debit: d,
                    key_id,
                    transfer_id,
                    model_billed: cost.model,
                    price_version: cost.price_version,
                    cost: credits,
                    list_usd: cost.list_usd,
                    served_model_unpriced: cost.served_model_unpriced,
                    speed: cost.speed,
                    inference_geo: cost.inference_geo,
                    multiplier: cost.multiplier,
                    unpriced_report: cost.reported_modifier_unpriced || cost.iteration_model_unpriced,
                    fingerprint: fp,
                });
            }
        }
    }
    if rows.is_empty() {
        return Ok(Plan {
            results,
            pending_version,
            writes: None,
        });
    }
    let entries = ledger::entries_for(&transfers, &mut balances)?;
    let touched: HashSet<Uuid> = entries.iter().map(|e| e.account).collect();
    balances.retain(|id, _| touched.contains(id));
    let mut spent_keys: Vec<Uuid> = rows.iter().map(|r| r.key_id).collect();
    spent_keys.sort_unstable();
    spent_keys.dedup();
    Ok(Plan {
        results,
        pending_version,
        writes: Some(Writes {
            transfers,
            entries,
            balances,
            rows,
            spent_keys,
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::Utc;
    use metering::wire::{Debit, DebitOutcome, Route};
    use metering::{PriceTable, Usage};
    use rust_decimal::Decimal;
    use uuid::Uuid;

    use super::{fingerprint, plan, prepare, Plan, Recorded};
    use crate::ledger::USAGE_REVENUE;

    const SECRET: &str = "sk-cs-test-0123456789";

    fn table() -> PriceTable {
        PriceTable::default_table(metering::price::default_price_factor()).unwrap()
    }

    fn debit(account: Uuid, secret: &str, input: u64, output: u64) -> Debit {
        let now = Utc::now();
        Debit {
            debit_id: Uuid::new_v4(),
            key_hash: metering::apikey::hash(secret),
            account_id: account,
            route: Route::AnthropicMessages,
            model_requested: "claude-sonnet-4-5".into(),
            model_served: Some("claude-sonnet-4-5-20250929".into()),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            requested: Default::default(),
            partial: false,
            output_estimated: false,
            input_estimated: false,
            admitted_at: now,
            finished_at: Some(now),
            upstream_request_id: None,
            upstream_message_id: None,
            upstream_status: Some(200),
        }
    }

    fn cost(d: &Debit) -> Decimal {
        metering::cost(&table(), &d.served_request()).unwrap().credits
    }

    /// The keys as read: each secret's hash -> (key id, account id).
    fn keys(of: &[(&str, Uuid, Uuid)]) -> HashMap<String, (Uuid, Uuid)> {
        of.iter()
            .map(|(secret, key, account)| (metering::apikey::hash(secret), (*key, *account)))
            .collect()
    }

    /// The ledger accounts as locked: the given ones and `usage_revenue`.
    fn balances(of: &[(Uuid, i64)]) -> HashMap<Uuid, Decimal> {
        let mut b: HashMap<Uuid, Decimal> = of.iter().map(|(id, v)| (*id, Decimal::from(*v))).collect();
        b.insert(USAGE_REVENUE, Decimal::from(-1000));
        b
    }

    fn run<'a>(
        debits: &'a [Debit],
        keys: &HashMap<String, (Uuid, Uuid)>,
        recorded: &HashMap<Uuid, Recorded>,
        balances: HashMap<Uuid, Decimal>,
    ) -> Plan<'a> {
        let mut next = 1000u128;
        let new_id = move || {
            next += 1;
            Uuid::from_u128(next)
        };
        plan(
            debits,
            prepare(debits, keys, &table()),
            recorded,
            balances,
            "gateway:test",
            new_id,
        )
        .unwrap()
    }

    fn outcomes(p: &Plan<'_>) -> Vec<DebitOutcome> {
        p.results.iter().map(|r| r.outcome).collect()
    }

    #[test]
    fn applied_debits_move_their_costs_summed_exactly_to_usage_revenue() {
        let (account, key) = (Uuid::new_v4(), Uuid::new_v4());
        let debits = vec![
            debit(account, SECRET, 1234, 567),
            debit(account, SECRET, 1, 1),
            debit(account, SECRET, 98_765, 4321),
        ];
        let keys = keys(&[(SECRET, key, account)]);
        let p = run(&debits, &keys, &HashMap::new(), balances(&[(account, 1_000_000)]));
        assert_eq!(outcomes(&p), vec![DebitOutcome::Applied; 3]);
        assert_eq!(p.pending_version, vec![0, 1, 2]);
        let costs: Vec<Decimal> = debits.iter().map(cost).collect();
        for (r, c) in p.results.iter().zip(&costs) {
            assert_eq!(r.credits, Some(crate::money::canonical(*c)));
            assert_eq!(r.version, 0, "the version comes once bumped");
        }
        let total: Decimal = costs.iter().sum();
        let w = p.writes.as_ref().unwrap();
        assert_eq!(w.transfers.len(), 3);
        assert!(w
            .transfers
            .iter()
            .zip(&costs)
            .all(|(t, c)| t.amount == *c && t.from == account && t.to == USAGE_REVENUE && t.kind == "usage"));
        assert_eq!(w.entries.len(), 6);
        let after: Vec<Decimal> = w
            .entries
            .iter()
            .filter(|e| e.account == account)
            .map(|e| e.balance_after)
            .collect();
        let start = Decimal::from(1_000_000);
        assert_eq!(
            after,
            vec![start - costs[0], start - costs[0] - costs[1], start - total]
        );
        assert_eq!(w.balances.len(), 2);
        assert_eq!(w.balances[&account], start - total);
        assert_eq!(w.balances[&USAGE_REVENUE], Decimal::from(-1000) + total);
        assert_eq!(w.rows.len(), 3);
        assert!(w
            .rows
            .iter()
            .zip(&w.transfers)
            .all(|(r, t)| r.transfer_id == Some(t.id) && r.key_id == key));
        let results = p.stamped(7);
        assert!(results.iter().all(|r| r.version == 7));
    }

    #[test]
    fn an_account_without_credits_goes_below_zero_and_its_debit_is_applied() {
        let (account, key) = (Uuid::new_v4(), Uuid::new_v4());
        let debits = vec![debit(account, SECRET, 5000, 800)];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &HashMap::new(),
            balances(&[(account, 0)]),
        );
        assert_eq!(outcomes(&p), vec![DebitOutcome::Applied]);
        let w = p.writes.as_ref().unwrap();
        assert!(cost(&debits[0]) > Decimal::ZERO);
        assert_eq!(w.balances[&account], -cost(&debits[0]));
    }

    #[test]
    fn an_id_repeated_in_the_batch_is_a_duplicate_with_the_same_content_else_a_conflict() {
        let (account, key) = (Uuid::new_v4(), Uuid::new_v4());
        let first = debit(account, SECRET, 100, 10);
        let mut changed = first.clone();
        changed.usage.output_tokens = 11;
        let debits = vec![first.clone(), first.clone(), changed];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &HashMap::new(),
            balances(&[(account, 100)]),
        );
        assert_eq!(
            outcomes(&p),
            vec![
                DebitOutcome::Applied,
                DebitOutcome::Duplicate,
                DebitOutcome::Conflict
            ]
        );
        assert_eq!(p.pending_version, vec![0, 1]);
        assert_eq!(p.results[1].credits, p.results[0].credits);
        assert_eq!(
            p.results[2].error.as_deref(),
            Some("the same debit_id came twice in the batch with different content")
        );
        let w = p.writes.as_ref().unwrap();
        assert_eq!((w.transfers.len(), w.rows.len()), (1, 1), "applied once");
        assert_eq!(w.balances[&account], Decimal::from(100) - cost(&first));
        let results = p.stamped(9);
        assert_eq!(
            results.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![9, 9, 0]
        );
    }

    #[test]
    fn an_id_recorded_before_is_a_duplicate_with_its_stored_version_and_cost_else_a_conflict() {
        let (account, key) = (Uuid::new_v4(), Uuid::new_v4());
        let same = debit(account, SECRET, 100, 10);
        let other = debit(account, SECRET, 200, 20);
        let recorded = HashMap::from([
            (
                same.debit_id,
                Recorded {
                    fingerprint: fingerprint(&same),
                    version: 42,
                    cost: Decimal::new(12_340, 3),
                },
            ),
            (
                other.debit_id,
                Recorded {
                    fingerprint: "another content".into(),
                    version: 43,
                    cost: Decimal::ONE,
                },
            ),
        ]);
        let debits = vec![same, other];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &recorded,
            balances(&[(account, 100)]),
        );
        assert_eq!(
            outcomes(&p),
            vec![DebitOutcome::Duplicate, DebitOutcome::Conflict]
        );
        assert_eq!(p.results[0].version, 42);
        assert_eq!(p.results[0].credits, Some(Decimal::new(1234, 2)));
        assert_eq!(
            p.results[1].error.as_deref(),
            Some("debit_id was recorded before with different content")
        );
        assert_eq!((p.results[1].version, p.results[1].credits), (0, None));
        assert!(p.pending_version.is_empty());
        assert!(p.writes.is_none(), "nothing to write, no version to bump");
    }

    #[test]
    fn an_unknown_key_and_another_accounts_key_are_rejected() {
        let (account, stranger, key) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let debits = vec![
            debit(account, "sk-cs-nobody", 10, 1),
            debit(stranger, SECRET, 10, 1),
        ];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &HashMap::new(),
            balances(&[(account, 100), (stranger, 100)]),
        );
        assert_eq!(outcomes(&p), vec![DebitOutcome::Rejected; 2]);
        assert_eq!(p.results[0].error.as_deref(), Some("no key has this hash"));
        assert_eq!(
            p.results[1].error.as_deref(),
            Some("the key belongs to another account")
        );
        assert!(p.writes.is_none());
    }

    #[test]
    fn a_malformed_debit_is_told_why_before_its_missing_account() {
        let (account, missing, key) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut bad_hash = debit(missing, SECRET, 10, 1);
        bad_hash.key_hash = bad_hash.key_hash.to_uppercase();
        let mut bad_usage = debit(account, SECRET, 10, 1);
        bad_usage.usage.thinking_tokens = 2;
        let mut no_model = debit(account, SECRET, 10, 1);
        no_model.model_requested.clear();
        let well_formed = debit(missing, SECRET, 10, 1);
        let debits = vec![bad_hash, bad_usage, no_model, well_formed];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &HashMap::new(),
            balances(&[(account, 100)]),
        );
        assert_eq!(outcomes(&p), vec![DebitOutcome::Rejected; 4]);
        let errors: Vec<&str> = p.results.iter().filter_map(|r| r.error.as_deref()).collect();
        assert_eq!(errors[0], "key_hash must be 64 lowercase hex digits");
        assert!(errors[1].contains("thinking_tokens"), "{}", errors[1]);
        assert_eq!(errors[2], "model_requested must be 1 to 256 bytes");
        assert_eq!(errors[3], format!("account {missing} does not exist"));
        assert!(p.writes.is_none());
    }

    #[test]
    fn a_free_debit_is_recorded_without_a_transfer() {
        let (account, key) = (Uuid::new_v4(), Uuid::new_v4());
        let debits = vec![debit(account, SECRET, 0, 0)];
        let p = run(
            &debits,
            &keys(&[(SECRET, key, account)]),
            &HashMap::new(),
            balances(&[(account, 5)]),
        );
        assert_eq!(outcomes(&p), vec![DebitOutcome::Applied]);
        assert_eq!(p.results[0].credits, Some(Decimal::ZERO));
        let w = p.writes.as_ref().unwrap();
        assert!(w.transfers.is_empty() && w.entries.is_empty() && w.balances.is_empty());
        assert_eq!(w.rows.len(), 1);
        assert_eq!(w.rows[0].transfer_id, None);
        assert_eq!(w.spent_keys, vec![key]);
    }

    #[test]
    fn the_keys_that_spent_are_listed_once_sorted_and_only_for_debits_applied() {
        let account = Uuid::new_v4();
        let stranger = Uuid::new_v4();
        let (a, b, c) = (Uuid::from_u128(30), Uuid::from_u128(10), Uuid::from_u128(20));
        let debits = vec![
            debit(account, "sk-cs-a", 100, 10),
            debit(account, "sk-cs-b", 100, 10),
            debit(account, "sk-cs-a", 300, 30),
            // Key c is its own account's: this debit names another, so it is rejected.
            debit(account, "sk-cs-c", 100, 10),
        ];
        let keys = keys(&[
            ("sk-cs-a", a, account),
            ("sk-cs-b", b, account),
            ("sk-cs-c", c, stranger),
        ]);
        let p = run(&debits, &keys, &HashMap::new(), balances(&[(account, 100)]));
        assert_eq!(
            outcomes(&p),
            vec![
                DebitOutcome::Applied,
                DebitOutcome::Applied,
                DebitOutcome::Applied,
                DebitOutcome::Rejected
            ]
        );
        let w = p.writes.as_ref().unwrap();
        assert_eq!(w.spent_keys, vec![b, a]);
        let spent_on_a: Decimal = w.rows.iter().filter(|r| r.key_id == a).map(|r| r.cost).sum();
        assert_eq!(spent_on_a, cost(&debits[0]) + cost(&debits[2]));
    }
}
