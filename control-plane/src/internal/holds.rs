//! Hold reports: each gateway's sync leader reports, once per sync period (as the body of
//! `POST /internal/v1/snapshot`), the credits its requests in flight hold per account, and gets
//! back what the *other* gateways hold,
//! which it subtracts from what its own requests may hold (spend control `reserve` across
//! several Envoys); and the keys it refused for their limit (`key.limit_reached`). A report replaces the gateway's previous one; reports older than
//! [`FRESH_SECS`] (a gateway gone) no longer count, and are deleted after [`KEEP_SECS`].

use metering::wire::{AccountHold, HoldReport};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A gateway reports every sync period (250 ms by default): one silent for this long is gone.
pub const FRESH_SECS: f64 = 15.0;
/// Reports this old are deleted by the next report of any gateway.
pub const KEEP_SECS: f64 = 600.0;
/// Accounts one report may list.
pub const MAX_ACCOUNTS: usize = 100_000;
/// Keys refused for their limit one report may list.
pub const MAX_LIMITED_KEYS: usize = 10_000;

/// Replaces the gateway's holds with its report and reads what the other gateways hold.
pub async fn exchange(state: &AppState, report: &HoldReport) -> ApiResult<Vec<AccountHold>> {
    if report.holds.len() > MAX_ACCOUNTS {
        return Err(ApiError::invalid(format!(
            "a hold report lists at most {MAX_ACCOUNTS} accounts"
        )));
    }
    if report
        .holds
        .iter()
        .any(|h| h.credits <= Decimal::ZERO || h.credits.scale() > 20)
    {
        return Err(ApiError::invalid(
            "held credits must be above 0, with at most 20 decimal places",
        ));
    }
    if report.limited_keys.len() > MAX_LIMITED_KEYS {
        return Err(ApiError::invalid(format!(
            "a hold report lists at most {MAX_LIMITED_KEYS} limited keys"
        )));
    }
    let (accounts, credits): (Vec<Uuid>, Vec<Decimal>) =
        report.holds.iter().map(|h| (h.account_id, h.credits)).unzip();
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "DELETE FROM gateway_holds
         WHERE gateway = $1 OR reported_at < now() - make_interval(secs => $2)",
    )
    .bind(report.gateway)
    .bind(KEEP_SECS)
    .execute(&mut *tx)
    .await?;
    // One row per account: a report that lists an account twice is summed. Two reports of one
    // gateway at once (its leadership changing hands) must not fail on each other's rows.
    sqlx::query(
        "INSERT INTO gateway_holds (gateway, account_id, credits, reported_at)
         SELECT $1, account_id, sum(credits), now()
         FROM unnest($2::uuid[], $3::numeric[]) AS h (account_id, credits)
         GROUP BY account_id
         ON CONFLICT (gateway, account_id) DO UPDATE
         SET credits = EXCLUDED.credits, reported_at = EXCLUDED.reported_at",
    )
    .bind(report.gateway)
    .bind(&accounts)
    .bind(&credits)
    .execute(&mut *tx)
    .await?;
    let others: Vec<(Uuid, Decimal)> = sqlx::query_as(
        "SELECT account_id, sum(credits) FROM gateway_holds
         WHERE gateway <> $1 AND reported_at >= now() - make_interval(secs => $2)
         GROUP BY account_id ORDER BY account_id",
    )
    .bind(report.gateway)
    .bind(FRESH_SECS)
    .fetch_all(&mut *tx)
    .await?;
    crate::keys::limits_refused(&mut tx, &report.limited_keys, chrono::Utc::now()).await?;
    tx.commit().await?;
    Ok(others
        .into_iter()
        .map(|(account_id, credits)| AccountHold {
            account_id,
            credits: crate::money::canonical(credits),
        })
        .collect())
}
