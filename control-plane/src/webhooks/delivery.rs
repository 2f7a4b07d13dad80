//! Delivering events at least once: each due event is leased (so that replicas and overlapping
//! steps never send it twice at once), POSTed with its signature to the account's webhook URL as
//! it is then (an event waiting for a retry follows a moved endpoint, and fails at once when the
//! URL was removed), and logged; a 2xx answer
//! delivers it, anything else is retried after 30 s, 1 min, 2 min, ... (at most an hour apart)
//! until 24 hours after the event, when it fails for good. Redirects are not followed, and the
//! address a host name resolves to is checked at every attempt (a name that once pointed outside
//! may later point inside).
//!
//! [`deliver_due`] is one step (tests drive it with any `now`); [`run`] steps every few seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::target::{is_public, secret_for, signature};
use crate::config::WebhookConfig;
use crate::error::ApiResult;

/// Events claimed per step.
const BATCH: i64 = 20;
/// How long a claimed event is kept from other senders.
const LEASE: Duration = Duration::from_secs(60);
/// One attempt's time limit.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long an event is retried.
pub const RETRY_FOR: chrono::Duration = chrono::Duration::hours(24);
const FIRST_RETRY_SECONDS: i64 = 30;
const LONGEST_WAIT_SECONDS: i64 = 3600;
const PERIOD: Duration = Duration::from_secs(5);
/// The longest error text kept in the log.
const MAX_ERROR: usize = 500;
const REMOVED: &str = "the account's webhook URL was removed";

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub delivered: u64,
    pub retrying: u64,
    pub failed: u64,
}

/// The wait before attempt `attempts + 1`: 30 s doubled per attempt, at most an hour.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    chrono::Duration::seconds((FIRST_RETRY_SECONDS << shift).min(LONGEST_WAIT_SECONDS))
}

type Claimed = (Uuid, Uuid, Option<String>, String, i32, DateTime<Utc>, i32);

/// Sends every event due at `now` (one batch after another), and answers what happened.
pub async fn deliver_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    config: &WebhookConfig,
) -> ApiResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    loop {
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE webhook_events e SET next_attempt_at = $2, attempts = e.attempts + 1
             FROM accounts a
             WHERE a.id = e.account_id AND e.id IN (
                 SELECT id FROM webhook_events WHERE status = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING e.id, e.account_id, a.webhook_url, e.body, e.attempts, e.created_at, a.webhook_secret_version",
        )
        .bind(now)
        .bind(lease_until)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        if claimed.is_empty() {
            return Ok(report);
        }
        // RETURNING comes in no particular order: send in the order the events happened.
        claimed.sort_by_key(|c| (c.5, c.0));
        for (id, account, url, body, attempts, created_at, version) in claimed {
            let started = Instant::now();
            let secret = secret_for(&config.signing_key, account, version);
            let outcome = match &url {
                Some(url) => send(url, &body, &signature(&secret, now.timestamp(), &body), config).await,
                None => Err(REMOVED.to_owned()),
            };
            let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            let (code, error) = match &outcome {
                Ok(code) => (Some(i32::from(*code)), None),
                Err(e) => (None, Some(e.chars().take(MAX_ERROR).collect::<String>())),
            };
            let delivered = matches!(outcome, Ok(code) if (200..300).contains(&code));
            let (status, next) = if delivered {
                ("delivered", now)
            } else if url.is_none() || now - created_at >= RETRY_FOR {
                ("failed", now)
            } else {
                ("pending", now + backoff(attempts))
            };
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO webhook_attempts (event_id, attempt, at, status_code, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(attempts)
            .bind(now)
            .bind(code)
            .bind(&error)
            .bind(duration_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_events SET status = $2, next_attempt_at = $3,
                    delivered_at = CASE WHEN $2 = 'delivered' THEN $4 END WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(next)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let outcome = match status {
                "delivered" => "delivered",
                "failed" => "failed",
                _ => "retrying",
            };
            crate::metrics::METRICS
                .webhook_deliveries
                .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                .inc();
            match status {
                "delivered" => report.delivered += 1,
                "failed" => {
                    tracing::warn!(event = %id, %account, attempts, "a webhook event was not delivered in 24 hours");
                    report.failed += 1;
                }
                _ => report.retrying += 1,
            }
        }
    }
}

/// One POST: the HTTP status, or why there was none.
async fn send(url: &str, body: &str, signature: &str, config: &WebhookConfig) -> Result<u16, String> {
    let url = Url::parse(url).map_err(|e| format!("the URL does not parse: {e}"))?;
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if !config.allow_private {
        if let Some(inside) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(format!(
                "{host} resolves to {}, a loopback, link-local or private address (WEBHOOK_ALLOW_PRIVATE is off)",
                inside.ip()
            ));
        }
    }
    let first = addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    // The connection goes to the address just checked, not to a second resolution of the name.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .resolve(&bare, first)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "claudestore-webhooks/1")
        .header("x-claudestore-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    Ok(answer.status().as_u16())
}

/// Delivers due events every few seconds, forever (the binary spawns it).
pub async fn run(pool: PgPool, config: WebhookConfig) {
    loop {
        if let Err(e) = deliver_due(&pool, Utc::now(), &config).await {
            tracing::warn!(error = %e, "webhook delivery step failed; retrying");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_thirty_seconds_up_to_an_hour() {
        let secs: Vec<i64> = (1..=10).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(0).num_seconds(), 30);
        assert_eq!(backoff(i32::MAX).num_seconds(), 3600);
    }
}
