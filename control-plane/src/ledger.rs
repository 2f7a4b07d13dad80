//! The double-entry ledger: transfers between ledger accounts, two immutable entries each, balances
//! kept on the ledger account rows in the same transaction.
//!
//! Discipline, in every transaction that moves credits:
//! 1. the ledger account rows involved are locked in one statement in id order (no deadlocks);
//! 2. idempotency keys are checked after that lock, so concurrent requests with one key apply once
//!    (the unique `(scope, idempotency_key)` constraint is the backstop);
//! 3. transfers, then their entries (both in one statement: a trigger checks they balance);
//! 4. the sync version is bumped, and the balances are written with it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Audit};
use crate::error::ApiError;
use crate::sync;

/// System ledger accounts (seeded by the first migration).
pub const ISSUANCE: Uuid = Uuid::from_u128(1);
pub const USAGE_REVENUE: Uuid = Uuid::from_u128(2);

/// A new transfer's id: time-ordered (UUIDv7, 74 random bits below the millisecond), so the
/// transfer and entry indexes grow at their right edge instead of taking each id at a random place
/// in a large B-tree (a page read, dirtied and written to the WAL whole after each checkpoint).
pub fn new_transfer_id() -> Uuid {
    Uuid::now_v7()
}

/// A transfer to write (amount > 0, from != to).
#[derive(Debug, Clone)]
pub struct NewTransfer {
    pub id: Uuid,
    pub scope: &'static str,
    pub idempotency_key: String,
    pub kind: &'static str,
    pub from: Uuid,
    pub to: Uuid,
    pub amount: Decimal,
    pub reason: Option<String>,
    pub actor: String,
    pub fingerprint: String,
}

/// A stored transfer as the ledger shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferRow {
    pub id: Uuid,
    pub kind: String,
    pub idempotency_key: String,
    pub reason: Option<String>,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

/// Lowercase hex SHA-256 of the parts, separated so that no two part lists collide.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Locks the ledger accounts (sorted, one statement) and returns their balances. Unknown ids are
/// simply absent from the map.
pub async fn lock_accounts(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Decimal>, sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, Decimal)> = sqlx::query_as(
        "SELECT id, balance FROM ledger_accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// One entry to write: the transfer, the ledger account, the signed amount, the balance after it.
pub struct NewEntry {
    pub transfer_id: Uuid,
    pub account: Uuid,
    pub amount: Decimal,
    pub balance_after: Decimal,
}

/// Applies the transfers in order to `balances` (which must hold every account involved), and
/// returns the entries with their running balances.
pub fn entries_for(
    transfers: &[NewTransfer],
    balances: &mut HashMap<Uuid, Decimal>,
) -> Result<Vec<NewEntry>, ApiError> {
    let mut entries = Vec::with_capacity(transfers.len() * 2);
    for t in transfers {
        for (account, amount) in [(t.from, -t.amount), (t.to, t.amount)] {
            let balance = balances
                .get_mut(&account)
                .ok_or_else(|| ApiError::Internal(format!("ledger account {account} was not locked")))?;
            *balance = balance
                .checked_add(amount)
                .ok_or_else(|| ApiError::invalid("the balance would leave the representable range"))?;
            entries.push(NewEntry {
                transfer_id: t.id,
                account,
                amount,
                balance_after: *balance,
            });
        }
    }
    Ok(entries)
}

/// Writes transfers and then all their entries, each set in one statement.
pub async fn insert(
    conn: &mut PgConnection,
    transfers: &[NewTransfer],
    entries: &[NewEntry],
) -> Result<(), sqlx::Error> {
    if transfers.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewTransfer) -> String| transfers.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO transfers (id, scope, idempotency_key, kind, from_account, to_account, amount, reason, actor, fingerprint)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[],
                              $7::numeric[], $8::text[], $9::text[], $10::text[])",
    )
    .bind(transfers.iter().map(|t| t.id).collect::<Vec<_>>())
    .bind(col(|t| t.scope.to_owned()))
    .bind(col(|t| t.idempotency_key.clone()))
    .bind(col(|t| t.kind.to_owned()))
    .bind(transfers.iter().map(|t| t.from).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.to).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.amount).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.reason.clone()).collect::<Vec<_>>())
    .bind(col(|t| t.actor.clone()))
    .bind(col(|t| t.fingerprint.clone()))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO entries (transfer_id, ledger_account_id, amount, balance_after)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[], $4::numeric[])",
    )
    .bind(entries.iter().map(|e| e.transfer_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.account).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.amount).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.balance_after).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the new balances, stamped with the sync version of this transaction.
pub async fn store_balances(
    conn: &mut PgConnection,
    balances: &HashMap<Uuid, Decimal>,
    version: i64,
) -> Result<(), sqlx::Error> {
    let (ids, values): (Vec<Uuid>, Vec<Decimal>) = balances.iter().map(|(k, v)| (*k, *v)).unzip();
    sqlx::query(
        "UPDATE ledger_accounts l SET balance = n.balance, sync_version = $3
         FROM UNNEST($1::uuid[], $2::numeric[]) AS n(id, balance) WHERE l.id = n.id",
    )
    .bind(ids)
    .bind(values)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

/// The outcome of posting one transfer with an idempotency key.
pub enum Posted {
    /// Written now.
    Created(Uuid),
    /// Written before with the same content: nothing changed.
    Existing(Uuid),
}

/// Posts one transfer in the caller's transaction, idempotently: the same key with the same
/// fingerprint returns the original; with another fingerprint it is a 409. The audit record is
/// written with it.
pub async fn post(
    conn: &mut PgConnection,
    t: NewTransfer,
    audit_record: Audit<'_>,
) -> Result<Posted, ApiError> {
    // Serialises requests with one key even if they name different accounts (taken before any row
    // lock, so it cannot take part in a lock cycle).
    let key_lock = fingerprint(&[t.scope, &t.idempotency_key]);
    let key_lock = i64::from_str_radix(key_lock.get(..15).unwrap_or("0"), 16).unwrap_or(0);
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key_lock)
        .execute(&mut *conn)
        .await?;
    let mut balances = lock_accounts(conn, &[t.from, t.to]).await?;
    if let Some(existing) = find(conn, t.scope, &t.idempotency_key).await? {
        return if existing.fingerprint == t.fingerprint {
            Ok(Posted::Existing(existing.id))
        } else {
            Err(ApiError::conflict(format!(
                "idempotency key {:?} was already used for a different request; use a new key",
                t.idempotency_key
            )))
        };
    }
    for account in [t.from, t.to] {
        if !balances.contains_key(&account) {
            return Err(ApiError::not_found(format!("account {account} not found")));
        }
    }
    let entries = entries_for(std::slice::from_ref(&t), &mut balances)?;
    insert(conn, std::slice::from_ref(&t), &entries).await?;
    audit::record(conn, audit_record).await?;
    let version = sync::bump(conn).await?;
    store_balances(conn, &balances, version).await?;
    crate::webhooks::events::balances_changed(conn, &[t.from, t.to], chrono::Utc::now()).await?;
    Ok(Posted::Created(t.id))
}

pub async fn find(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
) -> Result<Option<TransferRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, idempotency_key, reason, fingerprint, created_at FROM transfers
         WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// What [`check`] found: every violation of the ledger's invariants, in words (none when sound),
/// and each ledger account's balance.
#[derive(Debug, Default)]
pub struct Check {
    pub violations: Vec<String>,
    pub balances: HashMap<Uuid, Decimal>,
}

/// Reads the whole ledger and checks its invariants: the balances sum to zero; every transfer has
/// exactly two entries that sum to zero; each balance is the sum of its entries and its last
/// entry's `balance_after`; every usage record that cost something has its usage transfer of that
/// amount. One auditor for every suite (and for an operator's query by hand); it reads every row,
/// so it is for tests and audits, not for a request path.
pub async fn check(conn: &mut PgConnection) -> Result<Check, sqlx::Error> {
    let mut out = Check::default();
    let total: Decimal = sqlx::query_scalar("SELECT coalesce(sum(balance), 0) FROM ledger_accounts")
        .fetch_one(&mut *conn)
        .await?;
    if !total.is_zero() {
        out.violations
            .push(format!("the ledger accounts sum to {total}, not 0"));
    }
    let unbalanced: Vec<Uuid> = sqlx::query_scalar(
        "SELECT t.id FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id
         GROUP BY t.id HAVING count(e.id) <> 2 OR coalesce(sum(e.amount), 1) <> 0",
    )
    .fetch_all(&mut *conn)
    .await?;
    for t in unbalanced {
        out.violations
            .push(format!("transfer {t} is not two entries summing to 0"));
    }
    let rows: Vec<(Uuid, Decimal, Decimal, Option<Decimal>)> = sqlx::query_as(
        "SELECT l.id, l.balance, coalesce((SELECT sum(amount) FROM entries e WHERE e.ledger_account_id = l.id), 0),
            (SELECT balance_after FROM entries e WHERE e.ledger_account_id = l.id ORDER BY id DESC LIMIT 1)
         FROM ledger_accounts l",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id, balance, sum, last) in rows {
        if balance != sum {
            out.violations.push(format!(
                "ledger account {id}: balance {balance} is not the sum of its entries {sum}"
            ));
        }
        if balance != last.unwrap_or_default() {
            out.violations.push(format!(
                "ledger account {id}: balance {balance} differs from its last balance_after {last:?}"
            ));
        }
        out.balances.insert(id, balance);
    }
    let unmatched: Vec<(Uuid, Decimal)> = sqlx::query_as(
        "SELECT u.debit_id, u.cost FROM usage_records u LEFT JOIN transfers t ON t.id = u.transfer_id
         WHERE u.cost > 0 AND (t.id IS NULL OR t.amount <> u.cost OR t.kind <> 'usage')",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (debit, cost) in unmatched {
        out.violations.push(format!(
            "usage record {debit} (cost {cost}) has no usage transfer of that amount"
        ));
    }
    Ok(out)
}
