//! `POST /internal/v1/debits`: a gateway's batch of served requests, applied in one transaction,
//! idempotently per debit id, with set-based writes (one statement per table, not per debit).
//!
//! A served request's debit is always recorded, even below zero: the tokens were delivered. Every
//! debit batch locks the `usage_revenue` ledger account, so debit batches apply one after another
//! and the check for already-recorded ids (made after that lock) sees every earlier batch.
//! What a batch comes to is decided in [`plan`], without the database; this module reads what
//! the plan needs and writes what it says.

mod plan;

use std::collections::{HashMap, HashSet};

use metering::wire::{DebitAck, DebitBatch, DebitOutcome, DebitResult, PROTOCOL_VERSION};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::ledger;
use crate::state::AppState;
use crate::sync;

use plan::{Recorded, UsageRow};

/// The most debits one batch may carry.
pub const MAX_BATCH: usize = 5000;

/// The keys of a batch's distinct hashes: (hash, key id, account id); see `apply_in`.
pub const KEYS_BY_HASH: &str = "SELECT h.key_hash, k.id, k.account_id FROM UNNEST($1::text[]) AS h(key_hash)
     CROSS JOIN LATERAL (SELECT k.id, k.account_id FROM api_keys k WHERE k.key_hash = h.key_hash OFFSET 0) k";

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
    let prepared = plan::prepare(debits, &keys, &table);

    let mut lock_ids: Vec<Uuid> = debits.iter().map(|d| d.account_id).collect();
    lock_ids.push(ledger::USAGE_REVENUE);
    let balances = ledger::lock_accounts(conn, &lock_ids).await?;

    let ids: Vec<Uuid> = debits.iter().map(|d| d.debit_id).collect();
    let recorded: HashMap<Uuid, Recorded> = sqlx::query_as::<_, (Uuid, String, i64, Decimal)>(
        "SELECT debit_id, fingerprint, sync_version, cost FROM usage_records WHERE debit_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(id, fingerprint, version, cost)| {
        let recorded = Recorded {
            fingerprint,
            version,
            cost,
        };
        (id, recorded)
    })
    .collect();

    let actor = format!(
        "gateway:{}",
        without_nul(batch.gateway_id.as_deref().unwrap_or("unnamed"))
    );
    let mut plan = plan::plan(
        debits,
        prepared,
        &recorded,
        balances,
        &actor,
        ledger::new_transfer_id,
    )?;
    let Some(writes) = plan.writes.take() else {
        return Ok(plan.results);
    };
    for r in writes.rows.iter().filter(|r| r.unpriced_report) {
        // The answer billed something the table cannot price exactly: the operator adds the
        // value or model (no content or key in this line).
        tracing::warn!(
            debit_id = %r.debit.debit_id,
            model = %r.model_billed,
            speed = ?r.debit.usage.speed,
            inference_geo = ?r.debit.usage.inference_geo,
            iteration_models = ?r.debit.usage.iterations.iter().filter_map(|i| i.model.as_deref()).collect::<Vec<_>>(),
            "a debit's answer names a modifier value or an iteration model without a price"
        );
    }
    ledger::insert(conn, &writes.transfers, &writes.entries).await?;
    let limited = crate::keys::lock_limited(conn, &writes.spent_keys).await?;
    let version = sync::bump(conn).await?;
    ledger::store_balances(conn, &writes.balances, version).await?;
    let accounts: Vec<Uuid> = writes.balances.keys().copied().collect();
    crate::webhooks::events::balances_changed(conn, &accounts, chrono::Utc::now()).await?;
    insert_usage(conn, &writes.rows, batch.gateway_id.as_deref(), version).await?;
    crate::keys::limits_spent(conn, &limited, version, chrono::Utc::now()).await?;
    Ok(plan.stamped(version))
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
