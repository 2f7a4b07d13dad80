//! Pending purchases expire after `PURCHASE_EXPIRY_SECONDS` (24 h by default). [`expire_pending`]
//! is the step (tests call it with any `now`); [`run`] calls it every minute in the binary.
//!
//! A crypto purchase with money already received is not simply expired: under the `hold` policy
//! it is held for review, under `credit_share` the share received is credited. One whose payment
//! the processor still reports in flight (confirming, confirmed, sending) is held too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::crypto;
use super::fulfil;
use super::model::{Purchase, SELECT};
use crate::config::PaymentConfig;
use crate::error::ApiResult;
use crate::money;

const BATCH: i64 = 100;
const PERIOD: Duration = Duration::from_secs(60);

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpiryReport {
    pub expired: u64,
    pub held: u64,
    pub paid: u64,
}

/// Expires (or settles, see the module doc) every pending purchase whose time is up at `now`.
/// Rows another transaction holds (a callback being applied) are skipped until the next step.
pub async fn expire_pending(
    pool: &PgPool,
    now: DateTime<Utc>,
    config: &PaymentConfig,
) -> ApiResult<ExpiryReport> {
    let mut report = ExpiryReport::default();
    loop {
        let mut tx = pool.begin().await?;
        let due: Vec<Purchase> = sqlx::query_as(&format!(
            "{SELECT} WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        for p in &due {
            let received = p.received_amount.unwrap_or(Decimal::ZERO);
            let in_flight = matches!(
                p.provider_status.as_deref(),
                Some("confirming" | "confirmed" | "sending" | "partially_paid")
            );
            if p.method == "crypto" && received > Decimal::ZERO {
                let amounts = format!(
                    "received {} of {} {} by expiry",
                    money::plain(received),
                    money::plain(p.pay_amount.unwrap_or_default()),
                    p.pay_currency.as_deref().unwrap_or_default()
                );
                let reference = p.provider_ref.clone().unwrap_or_default();
                match crypto::settle_short(&mut tx, p, received, &amounts, "expiry", &reference, config)
                    .await?
                {
                    "paid_share" => report.paid += 1,
                    _ => report.held += 1,
                }
            } else if p.method == "crypto" && in_flight {
                let reason = "a payment was still being confirmed when the purchase expired";
                fulfil::hold(&mut tx, p, "expiry", reason).await?;
                report.held += 1;
            } else {
                fulfil::close(&mut tx, p, "expired", "expiry", "not paid in time").await?;
                report.expired += 1;
            }
        }
        tx.commit().await?;
        if (due.len() as i64) < BATCH {
            break;
        }
    }
    Ok(report)
}

/// The background task of the binary: one step a minute, errors logged and retried.
pub async fn run(pool: PgPool, config: PaymentConfig) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match expire_pending(&pool, Utc::now(), &config).await {
            Ok(r) if r != ExpiryReport::default() => {
                tracing::info!(
                    expired = r.expired,
                    held = r.held,
                    paid = r.paid,
                    "purchase expiry"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purchase expiry failed; retrying in a minute"),
        }
    }
}
