//! Writing events in the transaction that causes them: an event exists if and only if what it
//! tells was committed. Nothing is written for an account without a webhook URL.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::money;

/// `balance.low`: the balance went below the account's threshold (once per crossing).
pub const BALANCE_LOW: &str = "balance.low";
/// `key.limit_reached`: a key's spend in its limit's period reached the limit (once per period).
pub const KEY_LIMIT_REACHED: &str = "key.limit_reached";
/// `purchase.paid`: a purchase was paid and its credits added.
pub const PURCHASE_PAID: &str = "purchase.paid";
/// `purchase.refunded`: a paid purchase was refunded (or charged back) and its credits taken back.
pub const PURCHASE_REFUNDED: &str = "purchase.refunded";

/// Writes an event for `account` if it has a webhook URL. `dedupe_key` names what the event tells
/// (e.g. `purchase.paid:<id>`): the same key twice is one event. Answers the event's id when one
/// was written.
pub async fn emit(
    conn: &mut PgConnection,
    account: Uuid,
    kind: &'static str,
    dedupe_key: &str,
    data: Value,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let url: Option<String> = sqlx::query_scalar("SELECT webhook_url FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
    match url {
        Some(url) => write(conn, account, &url, kind, dedupe_key, data, now).await,
        None => Ok(None),
    }
}

/// Writes an event for `account`, whose webhook URL is `url`.
async fn write(
    conn: &mut PgConnection,
    account: Uuid,
    url: &str,
    kind: &'static str,
    dedupe_key: &str,
    data: Value,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let id = Uuid::now_v7();
    let body = json!({
        "id": id,
        "type": kind,
        "created_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": data,
    })
    .to_string();
    let written: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_events (id, account_id, type, body, url, dedupe_key, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(account)
    .bind(kind)
    .bind(&body)
    .bind(url)
    .bind(dedupe_key)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(written)
}

/// After the balances of `accounts` changed (in the caller's transaction, their ledger rows
/// locked): records, for each account with a threshold, whether it is now below it, and writes a
/// `balance.low` event for each that just went below. One statement whatever the number of
/// accounts; it writes only rows whose state changes.
pub async fn balances_changed(
    conn: &mut PgConnection,
    accounts: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let crossed: Vec<(Uuid, String, Decimal, Decimal)> = sqlx::query_as(
        "WITH changed AS (
             UPDATE accounts a SET low_balance_alerted = (l.balance < a.low_balance_threshold)
             FROM ledger_accounts l
             WHERE a.id = ANY($1) AND l.id = a.id AND a.low_balance_threshold IS NOT NULL
               AND a.low_balance_alerted IS DISTINCT FROM (l.balance < a.low_balance_threshold)
             RETURNING a.id, a.webhook_url, a.low_balance_alerted, l.balance, a.low_balance_threshold)
         SELECT id, webhook_url, balance, low_balance_threshold FROM changed
         WHERE low_balance_alerted AND webhook_url IS NOT NULL",
    )
    .bind(accounts)
    .fetch_all(&mut *conn)
    .await?;
    for (account, url, balance, threshold) in crossed {
        let data = json!({
            "account_id": account,
            "balance": money::plain(balance),
            "low_balance_threshold": money::plain(threshold),
        });
        let key = format!("{BALANCE_LOW}:{account}:{}", Uuid::now_v7());
        write(conn, account, &url, BALANCE_LOW, &key, data, now).await?;
    }
    Ok(())
}
