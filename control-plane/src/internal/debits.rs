//! `POST /internal/v1/debits`: a gateway's batch of served requests, applied in one transaction,
//! idempotently per debit id, with set-based writes (one statement per table, not per debit).
//!
//! A served request's debit is always recorded, even below zero: the tokens were delivered. Every
//! debit batch locks the `usage_revenue` ledger account, so debit batches apply one after another
//! and the check for already-recorded ids (made after that lock) sees every earlier batch.

use std::collections::{HashMap, HashSet};

use metering::wire::{Debit, DebitAck, DebitBatch, DebitOutcome, DebitResult, PROTOCOL_VERSION};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::ledger::{self, NewTransfer};
use crate::state::AppState;
use crate::{money, sync};

/// The most debits one batch may carry.
pub const MAX_BATCH: usize = 5000;
const MAX_TEXT: usize = 256;

/// A debit's key id and cost, or why it can never be recorded.
type Priced = Result<(Uuid, metering::Cost), String>;

/// What gets stored for one applied debit.
struct UsageRow<'a> {
    debit: &'a Debit,
    key_id: Uuid,
    transfer_id: Option<Uuid>,
    model_billed: String,
    price_version: String,
    cost: Decimal,
    list_usd: Decimal,
    served_model_unpriced: bool,
    speed: Option<String>,
    inference_geo: Option<String>,
    multiplier: Decimal,
    unpriced_report: bool,
    fingerprint: String,
}

/// The keys of a batch's distinct hashes: (hash, key id, account id); see `apply_in`.
pub const KEYS_BY_HASH: &str = "SELECT h.key_hash, k.id, k.account_id FROM UNNEST($1::text[]) AS h(key_hash)
     CROSS JOIN LATERAL (SELECT k.id, k.account_id FROM api_keys k WHERE k.key_hash = h.key_hash OFFSET 0) k";

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

pub async fn apply(state: &AppState, batch: DebitBatch) -> ApiResult<DebitAck> {
    if batch.protocol == 0 {
        return Err(ApiError::invalid("protocol must be 1 or more"));
    }
    if batch.debits.len() > MAX_BATCH {
        return Err(ApiError::TooLarge(format!(
            "a batch holds at most {MAX_BATCH} debits; split it"
        )));
    }
    if batch.gateway_id.as_ref().is_some_and(|g| g.len() > 128) {
        return Err(ApiError::invalid("gateway_id must be at most 128 bytes"));
    }
    let mut tx = state.pool.begin().await?;
    let results = apply_in(&mut tx, state, &batch).await?;
    tx.commit().await?;
    Ok(if batch.compact_ack {
        compact(results, batch.debits.len())
    } else {
        DebitAck::full(results)
    })
}

/// The answer without the debits this batch applied: they all share one version (the batch's),
/// given once. What is left (duplicates, conflicts, rejections) keeps its full result. A batch
/// that applied nothing, or that repeats a debit id (its results could not be told apart by id),
/// is answered in full.
fn compact(results: Vec<DebitResult>, batch_len: usize) -> DebitAck {
    let mut ids = HashSet::with_capacity(results.len());
    let repeated = !results.iter().all(|r| ids.insert(r.debit_id));
    let applied_at = results
        .iter()
        .find(|r| r.outcome == DebitOutcome::Applied)
        .map(|r| r.version);
    let (false, Some(applied_at)) = (repeated, applied_at) else {
        return DebitAck::full(results);
    };
    DebitAck {
        protocol: PROTOCOL_VERSION,
        results: results
            .into_iter()
            .filter(|r| r.outcome != DebitOutcome::Applied)
            .collect(),
        applied_at_version: Some(applied_at),
        batch_len: Some(u64::try_from(batch_len).unwrap_or(u64::MAX)),
    }
}

async fn apply_in(
    conn: &mut PgConnection,
    state: &AppState,
    batch: &DebitBatch,
) -> ApiResult<Vec<DebitResult>> {
    let debits = &batch.debits;
    // Everything that needs no ledger lock is done before taking it (debit batches apply one after
    // another while they hold it): fingerprints, key lookups, the price table and each cost. Keys
    // never move to another account and prices are effective-dated, so none of this depends on the
    // lock; the check for already-recorded ids, the balances and every write still come after it.
    let fingerprints: Vec<String> = debits.iter().map(fingerprint).collect();
    let mut hashes: Vec<&str> = debits.iter().map(|d| d.key_hash.as_str()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    // One index probe per distinct hash of the batch, whatever the plan cache holds: not
    // `= ANY($1)` (as a prepared statement's generic plan that compares every key with every hash
    // of the batch), and not a plain join either (a plan made while `api_keys` was small hashes the
    // batch and reads every key, per batch, for as long as the connection lives: a cost that grows
    // with the number of keys). `OFFSET 0` keeps the lateral subquery a parameterised probe.
    let keys: HashMap<String, (Uuid, Uuid)> = sqlx::query_as::<_, (String, Uuid, Uuid)>(KEYS_BY_HASH)
        .bind(&hashes)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(h, id, a)| (h, (id, a)))
        .collect();
    let (_, prices_version) = sync::current(conn).await?;
    let table = state.prices.at(conn, prices_version).await?;
    // Per debit: whether it passed `check`, and its key and cost or why it cannot be recorded.
    let mut priced: Vec<Option<(bool, Priced)>> = debits
        .iter()
        .map(|d| {
            Some(match check(d) {
                Err(why) => (false, Err(why)),
                Ok(()) => (true, price(d, &keys, &table)),
            })
        })
        .collect();

    let mut lock_ids: Vec<Uuid> = debits.iter().map(|d| d.account_id).collect();
    lock_ids.push(ledger::USAGE_REVENUE);
    let mut balances = ledger::lock_accounts(conn, &lock_ids).await?;

    let ids: Vec<Uuid> = debits.iter().map(|d| d.debit_id).collect();
    let existing: HashMap<Uuid, (String, i64, Decimal)> = sqlx::query_as::<_, (Uuid, String, i64, Decimal)>(
        "SELECT debit_id, fingerprint, sync_version, cost FROM usage_records WHERE debit_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(id, fp, v, c)| (id, (fp, v, c)))
    .collect();

    let actor = format!(
        "gateway:{}",
        without_nul(batch.gateway_id.as_deref().unwrap_or("unnamed"))
    );
    let mut results: Vec<DebitResult> = Vec::with_capacity(debits.len());
    // Results still waiting for this batch's version: (index in results).
    let mut pending_version: Vec<usize> = Vec::new();
    // The first occurrence of each id in this batch: its fingerprint and the index of its result.
    let mut in_batch: HashMap<Uuid, (String, usize)> = HashMap::new();
    let mut transfers: Vec<NewTransfer> = Vec::new();
    let mut rows: Vec<UsageRow> = Vec::new();
    for ((d, fp), priced) in debits.iter().zip(fingerprints).zip(priced.iter_mut()) {
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
        if let Some((stored_fp, version, cost)) = existing.get(&d.debit_id) {
            results.push(if *stored_fp == fp {
                result(d.debit_id, DebitOutcome::Duplicate, *version, Some(*cost), None)
            } else {
                let why = "debit_id was recorded before with different content".to_owned();
                result(d.debit_id, DebitOutcome::Conflict, 0, None, Some(why))
            });
            continue;
        }
        // A malformed debit is told why first, then a missing account, then the key or the price.
        let priced = match priced.take() {
            Some((checked, p)) if !checked || balances.contains_key(&d.account_id) => p,
            Some(_) => Err(format!("account {} does not exist", d.account_id)),
            None => Err("the debit was priced once".to_owned()),
        };
        match priced {
            Err(why) => results.push(rejected(d.debit_id, why)),
            Ok((key_id, cost)) => {
                let credits = cost.credits;
                let transfer_id = (credits > Decimal::ZERO).then(ledger::new_transfer_id);
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
                        actor: actor.clone(),
                        fingerprint: fp.clone(),
                    });
                }
                pending_version.push(results.len());
                results.push(result(d.debit_id, DebitOutcome::Applied, 0, Some(credits), None));
                let unpriced_report = cost.reported_modifier_unpriced || cost.iteration_model_unpriced;
                if unpriced_report {
                    // The answer billed something the table cannot price exactly: the operator
                    // adds the value or model (no content or key in this line).
                    tracing::warn!(
                        debit_id = %d.debit_id,
                        model = %cost.model,
                        speed = ?d.usage.speed,
                        inference_geo = ?d.usage.inference_geo,
                        iteration_models = ?d.usage.iterations.iter().filter_map(|i| i.model.as_deref()).collect::<Vec<_>>(),
                        "a debit's answer names a modifier value or an iteration model without a price"
                    );
                }
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
                    unpriced_report,
                    fingerprint: fp,
                });
            }
        }
    }
    if rows.is_empty() {
        return Ok(results);
    }
    let entries = ledger::entries_for(&transfers, &mut balances)?;
    ledger::insert(conn, &transfers, &entries).await?;
    let touched: HashSet<Uuid> = entries.iter().map(|e| e.account).collect();
    balances.retain(|id, _| touched.contains(id));
    let mut spent_keys: Vec<Uuid> = rows.iter().map(|r| r.key_id).collect();
    spent_keys.sort_unstable();
    spent_keys.dedup();
    let limited = crate::keys::lock_limited(conn, &spent_keys).await?;
    let version = sync::bump(conn).await?;
    ledger::store_balances(conn, &balances, version).await?;
    let accounts: Vec<Uuid> = balances.keys().copied().collect();
    crate::webhooks::events::balances_changed(conn, &accounts, chrono::Utc::now()).await?;
    insert_usage(conn, &rows, batch.gateway_id.as_deref(), version).await?;
    crate::keys::limits_spent(conn, &limited, version, chrono::Utc::now()).await?;
    for i in pending_version {
        if let Some(r) = results.get_mut(i) {
            r.version = sync::to_wire(version);
        }
    }
    Ok(results)
}

/// The key's id and the cost of a debit that passed [`check`], or why it can never be recorded
/// (whether its account exists is checked under the lock).
fn price(d: &Debit, keys: &HashMap<String, (Uuid, Uuid)>, table: &metering::PriceTable) -> Priced {
    let key_id = match keys.get(&d.key_hash) {
        Some((key_id, account)) if *account == d.account_id => *key_id,
        Some(_) => return Err("the key belongs to another account".into()),
        None => return Err("no key has this hash".into()),
    };
    let cost = metering::cost(table, &d.served_request()).map_err(|e| e.to_string())?;
    Ok((key_id, cost))
}

/// `text` with every NUL replaced by U+FFFD.
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// `value` with every NUL in its strings replaced by U+FFFD.
fn json_without_nul(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(without_nul(s)),
        Value::Array(items) => Value::Array(items.iter().map(json_without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (without_nul(k), json_without_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn insert_usage(
    conn: &mut PgConnection,
    rows: &[UsageRow<'_>],
    gateway: Option<&str>,
    version: i64,
) -> Result<(), sqlx::Error> {
    let ints = |f: fn(&metering::Usage) -> u64| {
        rows.iter()
            .map(|r| count(f(&r.debit.usage)))
            .collect::<Vec<i64>>()
    };
    // Text from a gateway is the upstream's and the caller's: a NUL, which PostgreSQL refuses in
    // text and JSON, would fail the whole batch again at every retry. Its meters drop such text;
    // this keeps one that slipped through from stopping the batches behind it.
    let texts = |f: fn(&UsageRow) -> Option<String>| {
        rows.iter()
            .map(|r| f(r).map(|t| if t.contains('\0') { without_nul(&t) } else { t }))
            .collect::<Vec<Option<String>>>()
    };
    let json = |value: Option<serde_json::Value>| value.map(|v| json_without_nul(&v));
    sqlx::query(
        "INSERT INTO usage_records (debit_id, account_id, key_id, transfer_id, route, model_requested, model_served,
            model_billed, price_version, input_tokens, output_tokens, thinking_tokens, cache_write_5m_tokens,
            cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, service_tier, cost,
            list_usd, partial, output_estimated, served_model_unpriced, admitted_at, finished_at,
            upstream_request_id, upstream_message_id, upstream_status, fingerprint, input_estimated, speed,
            inference_geo, multiplier, requested, iterations, unpriced_report, gateway_id, sync_version)
         SELECT *, $37::text, $38::bigint FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[],
            $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[],
            $19::numeric[], $20::numeric[], $21::bool[], $22::bool[], $23::bool[], $24::timestamptz[],
            $25::timestamptz[], $26::text[], $27::text[], $28::int[], $29::text[], $30::bool[], $31::text[],
            $32::text[], $33::numeric[], $34::jsonb[], $35::jsonb[], $36::bool[])",
    )
    .bind(rows.iter().map(|r| r.debit.debit_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.debit.account_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.key_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.transfer_id).collect::<Vec<_>>())
    .bind(texts(|r| serde_json::to_value(r.debit.route).ok().and_then(|v| v.as_str().map(str::to_owned))))
    .bind(texts(|r| Some(r.debit.model_requested.clone())))
    .bind(texts(|r| r.debit.model_served.clone()))
    .bind(texts(|r| Some(r.model_billed.clone())))
    .bind(texts(|r| Some(r.price_version.clone())))
    .bind(ints(|u| u.input_tokens))
    .bind(ints(|u| u.output_tokens))
    .bind(ints(|u| u.thinking_tokens))
    .bind(ints(|u| u.cache_write_5m_tokens))
    .bind(ints(|u| u.cache_write_1h_tokens))
    .bind(ints(|u| u.cache_read_tokens))
    .bind(ints(|u| u.web_search_requests))
    .bind(ints(|u| u.web_fetch_requests))
    .bind(texts(|r| r.debit.usage.service_tier.clone()))
    .bind(rows.iter().map(|r| r.cost).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.list_usd).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.debit.partial).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.debit.output_estimated).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.served_model_unpriced).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.debit.admitted_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.debit.finished_at).collect::<Vec<_>>())
    .bind(texts(|r| r.debit.upstream_request_id.clone()))
    .bind(texts(|r| r.debit.upstream_message_id.clone()))
    .bind(rows.iter().map(|r| r.debit.upstream_status.map(i32::from)).collect::<Vec<_>>())
    .bind(texts(|r| Some(r.fingerprint.clone())))
    .bind(rows.iter().map(|r| r.debit.input_estimated).collect::<Vec<_>>())
    .bind(texts(|r| r.speed.clone()))
    .bind(texts(|r| r.inference_geo.clone()))
    .bind(rows.iter().map(|r| r.multiplier).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| json((!r.debit.requested.is_empty()).then(|| serde_json::to_value(&r.debit.requested).ok()).flatten()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| json((!r.debit.usage.iterations.is_empty()).then(|| serde_json::to_value(&r.debit.usage.iterations).ok()).flatten()))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.unpriced_report).collect::<Vec<_>>())
    .bind(gateway.map(without_nul))
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a batch's outcomes and, for each debit applied now, the time from its admission to the
/// commit (`ledger_lag_seconds`). A compact answer lists only the debits not applied.
pub fn observe(
    ack: &DebitAck,
    admitted: &[(Uuid, chrono::DateTime<chrono::Utc>)],
    now: chrono::DateTime<chrono::Utc>,
) {
    let m = &*crate::metrics::METRICS;
    let listed: HashMap<Uuid, DebitOutcome> = ack.results.iter().map(|r| (r.debit_id, r.outcome)).collect();
    let compact = ack.applied_at_version.is_some();
    for (i, (id, at)) in admitted.iter().enumerate() {
        // A full answer is in the batch's order (an id repeated in a batch has one result each).
        let outcome = if compact {
            listed.get(id).copied().unwrap_or(DebitOutcome::Applied)
        } else {
            ack.results.get(i).map_or(DebitOutcome::Rejected, |r| r.outcome)
        };
        let label = match outcome {
            DebitOutcome::Applied => {
                let lag = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
                m.ledger_lag_seconds.observe(lag);
                "applied"
            }
            DebitOutcome::Duplicate => "duplicate",
            DebitOutcome::Conflict => "conflict",
            DebitOutcome::Rejected => "rejected",
        };
        m.debits
            .get_or_create(&crate::metrics::OutcomeLabels { outcome: label })
            .inc();
    }
}
