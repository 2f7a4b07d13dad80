//! Card payments through Stripe Checkout: the REST calls (create a Checkout Session, refund a
//! PaymentIntent), `Stripe-Signature` verification exactly as Stripe specifies, and applying the
//! events of `POST /v1/webhooks/stripe` (the route is in `callbacks.rs`).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::fulfil::{self, Reversal};
use super::model::{self, Purchase, Settlement};
use crate::config::PaymentConfig;
use crate::error::ApiResult;

pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Stripe's default tolerance between the signed timestamp and now, both ways.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a `Stripe-Signature` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no single valid timestamp t=")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signed timestamp is more than {TOLERANCE_SECS} s old")]
    Stale,
    #[error("the signed timestamp is more than {TOLERANCE_SECS} s in the future")]
    Future,
}

/// Verifies `header` against the raw `body`: HMAC-SHA256 keyed with the endpoint secret over
/// `t + "." + body`, compared in constant time with every `v1` value (any one may match; other
/// schemes such as `v0` are ignored), then the timestamp within `tolerance` of `now`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance: i64,
) -> Result<i64, SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.is_none() => timestamp = Some(value.trim()),
            "t" => return Err(SignatureError::NoTimestamp),
            "v1" => signatures.push(value.trim()),
            _ => {}
        }
    }
    let t_text = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let t: i64 = t_text.parse().map_err(|_| SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoV1);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(t_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures.iter().any(|s| match hex::decode(s) {
        Ok(bytes) => mac.clone().verify_slice(&bytes).is_ok(),
        Err(_) => false,
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if now - t > tolerance {
        return Err(SignatureError::Stale);
    }
    if t - now > tolerance {
        return Err(SignatureError::Future);
    }
    Ok(t)
}

/// A Checkout Session as created.
#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

impl StripeClient {
    pub fn new(http: reqwest::Client, base: &str, secret_key: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
        }
    }

    async fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(String, String)],
    ) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|e| format!("Stripe could not be reached: {}", e.without_url()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("Stripe answered {status} with an unreadable body: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            Err(format!("Stripe answered {status}: {message}"))
        }
    }

    /// Creates the Checkout Session of a card purchase (purchase id in `client_reference_id` and
    /// metadata; amount in cents; expiring with the purchase within Stripe's 30 min to 24 h).
    pub async fn create_checkout_session(
        &self,
        p: &Purchase,
        public_url: &str,
        now: DateTime<Utc>,
    ) -> Result<CheckoutSession, String> {
        let cents = p.amount_cents().ok_or("the amount does not fit in cents")?;
        let expires = p.expires_at.clamp(
            now + chrono::Duration::minutes(31),
            now + chrono::Duration::hours(23) + chrono::Duration::minutes(59),
        );
        let id = p.id.to_string();
        let form: Vec<(String, String)> = [
            ("mode", "payment".to_owned()),
            ("client_reference_id", id.clone()),
            ("metadata[purchase_id]", id.clone()),
            ("metadata[account_id]", p.account_id.to_string()),
            ("payment_intent_data[metadata][purchase_id]", id.clone()),
            ("line_items[0][quantity]", "1".to_owned()),
            ("line_items[0][price_data][currency]", "usd".to_owned()),
            ("line_items[0][price_data][unit_amount]", cents.to_string()),
            (
                "line_items[0][price_data][product_data][name]",
                p.plan_name.clone(),
            ),
            (
                "success_url",
                format!("{public_url}/checkout/complete?purchase={id}"),
            ),
            (
                "cancel_url",
                format!("{public_url}/checkout/cancelled?purchase={id}"),
            ),
            ("expires_at", expires.timestamp().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let body = self
            .post("/v1/checkout/sessions", &format!("checkout-{id}"), &form)
            .await?;
        match (body["id"].as_str(), body["url"].as_str()) {
            (Some(id), Some(url)) => Ok(CheckoutSession {
                id: id.to_owned(),
                url: url.to_owned(),
            }),
            _ => Err("Stripe answered without a session id and url".to_owned()),
        }
    }

    /// Refunds a PaymentIntent in full (idempotent per purchase).
    pub async fn refund(&self, p: &Purchase, payment_intent: &str) -> Result<String, String> {
        let form = vec![
            ("payment_intent".to_owned(), payment_intent.to_owned()),
            ("metadata[purchase_id]".to_owned(), p.id.to_string()),
        ];
        let body = self
            .post("/v1/refunds", &format!("refund-{}", p.id), &form)
            .await?;
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    }
}

/// The purchase a Checkout Session event is about, locked.
async fn session_purchase(
    conn: &mut sqlx::PgConnection,
    session: &Value,
) -> Result<Option<Purchase>, sqlx::Error> {
    let reference = session["client_reference_id"]
        .as_str()
        .or_else(|| session["metadata"]["purchase_id"].as_str())
        .and_then(|s| Uuid::parse_str(s).ok());
    let Some(id) = reference else {
        return Ok(None);
    };
    let session_id = session["id"].as_str();
    Ok(model::lock(conn, id).await?.filter(|p| {
        p.provider == "stripe" && (p.provider_ref.is_none() || p.provider_ref.as_deref() == session_id)
    }))
}

/// Fulfils a completed, paid Checkout Session.
async fn fulfil_session(
    conn: &mut sqlx::PgConnection,
    session: &Value,
    event_id: &str,
    config: &PaymentConfig,
) -> ApiResult<(Option<Uuid>, &'static str)> {
    let Some(p) = session_purchase(conn, session).await? else {
        return Ok((None, "unknown_purchase"));
    };
    // The event may overtake the creation's own update: keep the session id and intent now.
    sqlx::query(
        "UPDATE purchases SET provider_ref = coalesce(provider_ref, $2),
            payment_intent = coalesce(payment_intent, $3), provider_status = $4, updated_at = now() WHERE id = $1",
    )
    .bind(p.id)
    .bind(session["id"].as_str())
    .bind(session["payment_intent"].as_str())
    .bind(session["payment_status"].as_str())
    .execute(&mut *conn)
    .await?;
    if !p.payable() {
        if p.status == "expired" || p.status == "failed" {
            let note = format!("card payment completed after the purchase was {} (event {event_id}); refund or credit by hand", p.status);
            fulfil::note(conn, &p, "stripe", &note).await?;
            return Ok((Some(p.id), "noted_late_payment"));
        }
        return Ok((Some(p.id), "already_paid"));
    }
    let amount_ok = session["amount_total"].as_i64() == p.amount_cents()
        && session["currency"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("usd"));
    if !amount_ok {
        let reason = format!(
            "Stripe reports {} {} for a purchase of {} USD",
            session["amount_total"],
            session["currency"],
            crate::money::plain(p.amount_usd)
        );
        fulfil::hold(conn, &p, "stripe", &reason).await?;
        return Ok((Some(p.id), "held_amount_mismatch"));
    }
    fulfil::pay(conn, &p, &Settlement::full(&p, "stripe", event_id), config).await?;
    Ok((Some(p.id), "paid"))
}

/// Reverses a purchase paid by the PaymentIntent a charge or dispute names.
async fn reverse_intent(
    conn: &mut sqlx::PgConnection,
    object: &Value,
    kind: Reversal,
    reason: &str,
    config: &PaymentConfig,
) -> ApiResult<(Option<Uuid>, &'static str)> {
    let Some(intent) = object["payment_intent"].as_str() else {
        return Ok((None, "no_payment_intent"));
    };
    let Some(p) = model::lock_by_payment_intent(conn, intent).await? else {
        return Ok((None, "unknown_payment_intent"));
    };
    if p.status != "paid" {
        return Ok((Some(p.id), "no_change"));
    }
    fulfil::reverse(conn, &p, kind, "stripe", reason, config).await?;
    Ok((Some(p.id), "refunded"))
}

pub(super) async fn apply_event(
    conn: &mut sqlx::PgConnection,
    event: &Value,
    event_id: &str,
    config: &PaymentConfig,
) -> ApiResult<(Option<Uuid>, &'static str)> {
    let object = &event["data"]["object"];
    match event["type"].as_str().unwrap_or_default() {
        "checkout.session.completed" if object["payment_status"] == "paid" => {
            fulfil_session(conn, object, event_id, config).await
        }
        "checkout.session.completed" => {
            // An asynchronous method (bank debit): paid later by async_payment_succeeded.
            let p = session_purchase(conn, object).await?;
            if let Some(p) = &p {
                sqlx::query(
                    "UPDATE purchases SET provider_ref = coalesce(provider_ref, $2),
                        payment_intent = coalesce(payment_intent, $3), provider_status = $4 WHERE id = $1",
                )
                .bind(p.id)
                .bind(object["id"].as_str())
                .bind(object["payment_intent"].as_str())
                .bind(object["payment_status"].as_str())
                .execute(&mut *conn)
                .await?;
            }
            Ok((p.map(|p| p.id), "awaiting_payment"))
        }
        "checkout.session.async_payment_succeeded" => fulfil_session(conn, object, event_id, config).await,
        "checkout.session.async_payment_failed" | "checkout.session.expired" => {
            let Some(p) = session_purchase(conn, object).await? else {
                return Ok((None, "unknown_purchase"));
            };
            let (status, reason) = if event["type"] == "checkout.session.expired" {
                ("expired", "the Checkout Session expired unpaid")
            } else {
                ("failed", "the asynchronous card payment failed")
            };
            if !p.payable() {
                return Ok((Some(p.id), "no_change"));
            }
            fulfil::close(conn, &p, status, "stripe", reason).await?;
            Ok((Some(p.id), if status == "expired" { "expired" } else { "failed" }))
        }
        "charge.refunded" if object["refunded"] == true => {
            reverse_intent(conn, object, Reversal::Refund, "refunded in Stripe", config).await
        }
        "charge.refunded" => {
            // A partial refund: the credits stay; a person decides.
            let intent = object["payment_intent"].as_str().unwrap_or_default();
            let Some(p) = model::lock_by_payment_intent(conn, intent).await? else {
                return Ok((None, "unknown_payment_intent"));
            };
            let note = format!(
                "partial refund in Stripe: {} of {} cents",
                object["amount_refunded"], object["amount"]
            );
            fulfil::note(conn, &p, "stripe", &note).await?;
            fulfil::flag(conn, p.account_id, Some(p.id), &note).await?;
            Ok((Some(p.id), "noted_partial_refund"))
        }
        "charge.dispute.created" => {
            let intent = object["payment_intent"].as_str().unwrap_or_default();
            let Some(p) = model::lock_by_payment_intent(conn, intent).await? else {
                return Ok((None, "unknown_payment_intent"));
            };
            let reason = format!(
                "card dispute opened: {}",
                object["reason"].as_str().unwrap_or("no reason given")
            );
            fulfil::flag(conn, p.account_id, Some(p.id), &reason).await?;
            Ok((Some(p.id), "flagged_dispute"))
        }
        "charge.dispute.closed" if object["status"] == "lost" => {
            reverse_intent(conn, object, Reversal::Chargeback, "card dispute lost", config).await
        }
        _ => Ok((None, "ignored")),
    }
}
