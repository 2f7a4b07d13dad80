//! The internal API for the gateways (contract: "Sync protocol"), authenticated with the internal
//! token: snapshot deltas by commit-ordered version, debit batches, key lookup, hold reports.
//!
//! Snapshot paging: rows are read in `(sync_version, id)` order after the cursor, with no upper
//! bound. A row changed while a reader pages only moves forward, so it is still reached (perhaps
//! twice); each row carries its own version, so a reader always knows how recent a row is. The
//! snapshot's `version` is read before the first page: every change at or below it is included.

mod debits;
mod holds;

pub use debits::KEYS_BY_HASH;

use axum::extract::{DefaultBodyLimit, State};
use axum::Json;
use metering::keylimit::LimitPeriod;
use metering::wire::{
    AccountState, AccountStatus, DebitAck, DebitBatch, KeyLimitState, KeyLookup, KeyLookupResult, KeyState,
    KeyStatus, Prices, Snapshot, SpendControl, PROTOCOL_VERSION,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Internal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::{page, sync};

pub use debits::MAX_BATCH;

pub const DEFAULT_SNAPSHOT_LIMIT: i64 = 1000;
pub const MAX_SNAPSHOT_LIMIT: i64 = 5000;
/// Debit batches are large: up to [`MAX_BATCH`] debits.
const INTERNAL_BODY_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// The version the reader has fully applied; absent for a full snapshot.
    pub since: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page (accounts and keys together): 1 to 5000, default 1000.
    pub limit: Option<i64>,
    /// The reader's protocol version (absent: 1). A version 1 reader gets price entries without
    /// the fields it cannot parse (modifiers, the code execution fee).
    pub protocol: Option<u32>,
}

/// Where a paged snapshot continues.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotCursor {
    /// The snapshot's version, read at the first page.
    v: i64,
    /// The lower bound (exclusive) of the rows' versions: `since`, or 0 for a full snapshot.
    s: i64,
    full: bool,
    /// 0: accounts, 1: keys.
    phase: u8,
    /// The last row returned in this phase.
    after: (i64, Uuid),
}

type AccountRow = (Uuid, String, Decimal, i64, String);
type KeyRow = (
    String,
    Uuid,
    Uuid,
    String,
    i64,
    Option<Decimal>,
    Option<String>,
    Vec<String>,
    Option<chrono::DateTime<chrono::Utc>>,
    Decimal,
);

fn account_state((account_id, status, balance, version, spend_control): AccountRow) -> AccountState {
    AccountState {
        account_id,
        status: if status == "suspended" {
            AccountStatus::Suspended
        } else {
            AccountStatus::Active
        },
        balance: crate::money::canonical(balance),
        version: sync::to_wire(version),
        spend_control: SpendControl::parse(&spend_control).unwrap_or_default(),
    }
}

/// A key row as the gateways need it, its limit's remaining credits as of `now` (the instant its
/// period's spend was summed at).
fn key_state(row: KeyRow, now: chrono::DateTime<chrono::Utc>) -> KeyState {
    let (key_hash, key_id, account_id, status, version, credits, period, allowed_models, expires_at, spent) =
        row;
    let limit = match (credits, period.as_deref().and_then(LimitPeriod::parse)) {
        (Some(credits), Some(period)) => Some(KeyLimitState {
            credits: crate::money::canonical(credits),
            period,
            remaining: crate::money::canonical(credits - spent),
            resets_at: period.bounds(now).1,
        }),
        _ => None,
    };
    KeyState {
        key_hash,
        key_id,
        account_id,
        status: if status == "revoked" {
            KeyStatus::Revoked
        } else {
            KeyStatus::Active
        },
        version: sync::to_wire(version),
        limit,
        allowed_models,
        expires_at,
    }
}

/// Key rows with the spend of a limited key's current period as of `$1`; the caller adds the rest.
const KEY_COLUMNS: &str = "SELECT k.key_hash, k.id, k.account_id, k.status, k.sync_version,
        k.limit_credits, k.limit_period, k.allowed_models, k.expires_at,
        CASE WHEN k.limit_credits IS NULL THEN 0 ELSE
            (SELECT coalesce(sum(u.cost), 0) FROM usage_records u
             WHERE u.key_id = k.id AND u.admitted_at >= key_period_start(k.limit_period, $1)) END
    FROM api_keys k";

const ACCOUNTS: &str = "SELECT l.id, a.status, l.balance, l.sync_version, a.spend_control
    FROM ledger_accounts l JOIN accounts a ON a.id = l.account_id
    WHERE l.account_id IS NOT NULL AND l.sync_version > $1 AND (l.sync_version, l.id) > ($2, $3)
    ORDER BY l.sync_version, l.id LIMIT $4";
const KEYS: &str = "WHERE k.sync_version > $2 AND (k.sync_version, k.id) > ($3, $4)
    ORDER BY k.sync_version, k.id LIMIT $5";

/// Accounts and keys changed after a version (or all, `full`), paged.
#[utoipa::path(get, path = "/internal/v1/snapshot", tag = "internal", params(SnapshotQuery),
    security(("internal_token" = [])),
    responses((status = 200, description = "metering::wire::Snapshot", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn snapshot(
    _: Internal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> ApiResult<Json<Snapshot>> {
    snapshot_page(&state, q).await.map(Json)
}

/// The same page, with the gateway's hold report as the body: the report replaces its previous
/// one and the answer adds `others`, what the other gateways hold (one call per sync period for
/// both; see `holds`).
#[utoipa::path(post, path = "/internal/v1/snapshot", tag = "internal", params(SnapshotQuery),
    request_body(content = serde_json::Value, description = "metering::wire::HoldReport"),
    security(("internal_token" = [])),
    responses((status = 200, description = "metering::wire::Snapshot with `others`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn snapshot_with_holds(
    _: Internal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
    ApiJson(report): ApiJson<metering::wire::HoldReport>,
) -> ApiResult<Json<Snapshot>> {
    crate::metrics::METRICS.gateway_seen(report.gateway);
    let others = holds::exchange(&state, &report).await?;
    let mut page = snapshot_page(&state, q).await?;
    page.others = Some(others);
    Ok(Json(page))
}

async fn snapshot_page(state: &AppState, q: SnapshotQuery) -> ApiResult<Snapshot> {
    let limit = match q.limit {
        None => DEFAULT_SNAPSHOT_LIMIT,
        Some(n) if (1..=MAX_SNAPSHOT_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "limit {n} must be between 1 and {MAX_SNAPSHOT_LIMIT}"
            )))
        }
    };
    // A snapshot is written in the reader's protocol version (absent: 1), up to this one's.
    let reader = q.protocol.unwrap_or(1).clamp(1, PROTOCOL_VERSION);
    let mut conn = state.pool.acquire().await?;
    let (cursor, prices) = match q.cursor.as_deref() {
        Some(c) => (page::decode::<SnapshotCursor>(c)?, None),
        None => {
            // Keys whose period ended get the new period's budget in this snapshot.
            crate::keys::roll_over_periods(&state.pool).await?;
            first_page(&mut conn, state, q.since, reader).await?
        }
    };
    let mut accounts = Vec::new();
    let mut keys = Vec::new();
    let mut phase = cursor.phase;
    let mut after = cursor.after;
    let mut room = limit;
    if phase == 0 {
        let rows: Vec<AccountRow> = sqlx::query_as(ACCOUNTS)
            .bind(cursor.s)
            .bind(after.0)
            .bind(after.1)
            .bind(room + 1)
            .fetch_all(&mut *conn)
            .await?;
        accounts = rows.into_iter().map(account_state).collect();
        if accounts.len() as i64 > room {
            accounts.truncate(room as usize);
            let last = accounts.last().map(|a| (a.version as i64, a.account_id));
            return Ok(page_of(&cursor, 0, last, accounts, keys, prices, reader));
        }
        room -= accounts.len() as i64;
        phase = 1;
        after = (-1, Uuid::nil());
    }
    if phase == 1 && room > 0 {
        let now = chrono::Utc::now();
        let rows: Vec<KeyRow> = sqlx::query_as(&format!("{KEY_COLUMNS} {KEYS}"))
            .bind(now)
            .bind(cursor.s)
            .bind(after.0)
            .bind(after.1)
            .bind(room + 1)
            .fetch_all(&mut *conn)
            .await?;
        keys = rows.into_iter().map(|r| key_state(r, now)).collect();
        if keys.len() as i64 > room {
            keys.truncate(room as usize);
            let last = keys.last().map(|k| (k.version as i64, k.key_id));
            return Ok(page_of(&cursor, 1, last, accounts, keys, prices, reader));
        }
        return Ok(page_of(&cursor, 1, None, accounts, keys, prices, reader));
    }
    // The page filled up with accounts exactly; the keys follow on the next page.
    Ok(page_of(
        &cursor,
        1,
        Some((-1, Uuid::nil())),
        accounts,
        keys,
        prices,
        reader,
    ))
}

async fn first_page(
    conn: &mut PgConnection,
    state: &AppState,
    since: Option<u64>,
    protocol: u32,
) -> ApiResult<(SnapshotCursor, Option<Prices>)> {
    let (version, prices_version) = sync::current(conn).await?;
    let since = since.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    let full = since.is_none_or(|s| s > version);
    let lower = if full { 0 } else { since.unwrap_or(0) };
    let prices = if full || prices_version > lower {
        let table = state.prices.at(conn, prices_version).await?;
        Some(
            Prices {
                factor: table.factor(),
                entries: table.entries().to_vec(),
                inference_geo_default: table
                    .default_value(metering::Modifier::InferenceGeo)
                    .map(str::to_owned),
            }
            .for_protocol(protocol),
        )
    } else {
        None
    };
    let cursor = SnapshotCursor {
        v: version,
        s: lower,
        full,
        phase: 0,
        after: (-1, Uuid::nil()),
    };
    Ok((cursor, prices))
}

fn page_of(
    cursor: &SnapshotCursor,
    phase: u8,
    next_after: Option<(i64, Uuid)>,
    accounts: Vec<AccountState>,
    keys: Vec<KeyState>,
    prices: Option<Prices>,
    protocol: u32,
) -> Snapshot {
    let next_cursor = next_after.map(|after| {
        page::encode(&SnapshotCursor {
            v: cursor.v,
            s: cursor.s,
            full: cursor.full,
            phase,
            after,
        })
    });
    let m = &*crate::metrics::METRICS;
    m.snapshot_pages.inc();
    m.snapshot_version.set(cursor.v);
    Snapshot {
        protocol,
        version: sync::to_wire(cursor.v),
        full: cursor.full,
        keys,
        accounts,
        prices,
        next_cursor,
        others: None,
    }
}

/// Applies a batch of debits, idempotently per debit id.
#[utoipa::path(post, path = "/internal/v1/debits", tag = "internal",
    request_body(content = serde_json::Value, description = "metering::wire::DebitBatch"),
    security(("internal_token" = [])),
    responses((status = 200, description = "metering::wire::DebitAck: one result per debit, in order; with `compact_ack` in the batch, only the debits it did not apply, plus `applied_at_version` and `batch_len`", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn post_debits(
    _: Internal,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<DebitBatch>,
) -> ApiResult<Json<DebitAck>> {
    let m = &*crate::metrics::METRICS;
    m.debit_batches.inc();
    m.debit_batch_size.observe(batch.debits.len() as f64);
    let started = std::time::Instant::now();
    let admitted: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        batch.debits.iter().map(|d| (d.debit_id, d.admitted_at)).collect();
    let ack = debits::apply(&state, batch).await?;
    m.debit_batch_seconds.observe(started.elapsed().as_secs_f64());
    debits::observe(&ack, &admitted, chrono::Utc::now());
    Ok(Json(ack))
}

/// A key (by hash) the gateway's cache has not seen, with its account.
#[utoipa::path(post, path = "/internal/v1/keys/lookup", tag = "internal",
    request_body(content = serde_json::Value, description = "metering::wire::KeyLookup"),
    security(("internal_token" = [])),
    responses((status = 200, description = "metering::wire::KeyLookupResult", body = serde_json::Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn lookup_key(
    _: Internal,
    State(state): State<AppState>,
    ApiJson(q): ApiJson<KeyLookup>,
) -> ApiResult<Json<KeyLookupResult>> {
    if q.key_hash.len() != 64
        || !q
            .key_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApiError::invalid("key_hash must be 64 lowercase hex digits"));
    }
    let mut conn = state.pool.acquire().await?;
    let (version, _) = sync::current(&mut conn).await?;
    let now = chrono::Utc::now();
    let key: Option<KeyRow> = sqlx::query_as(&format!("{KEY_COLUMNS} WHERE k.key_hash = $2"))
        .bind(now)
        .bind(&q.key_hash)
        .fetch_optional(&mut *conn)
        .await?;
    let account = match &key {
        Some((_, _, account_id, ..)) => sqlx::query_as::<_, AccountRow>(
            "SELECT l.id, a.status, l.balance, l.sync_version, a.spend_control FROM ledger_accounts l
             JOIN accounts a ON a.id = l.account_id WHERE l.id = $1",
        )
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(account_state),
        None => None,
    };
    Ok(Json(KeyLookupResult {
        protocol: PROTOCOL_VERSION,
        version: sync::to_wire(version),
        key: key.map(|k| key_state(k, now)),
        account,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(snapshot, snapshot_with_holds))
        .routes(routes!(post_debits))
        .routes(routes!(lookup_key))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT))
}
