//! A purchase as stored and as shown, how one is settled, and the statements that read and lock it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Card,
    Crypto,
    Telegram,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Crypto => "crypto",
            Self::Telegram => "telegram",
        }
    }
}

/// One purchase of a plan. Method-specific fields are null for the other methods.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Purchase {
    pub id: Uuid,
    pub account_id: Uuid,
    /// `pending`, `paid`, `held` (needs review), `expired`, `failed` or `refunded`.
    pub status: String,
    /// Why the purchase is held, failed, expired or refunded.
    pub status_reason: Option<String>,
    pub plan_id: Uuid,
    pub plan_name: String,
    /// The plan's credits, fixed at creation.
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "105000")]
    pub credits: Decimal,
    /// The plan's price in USD, fixed at creation.
    #[serde(serialize_with = "money::ser")]
    #[schema(value_type = String, example = "500")]
    pub amount_usd: Decimal,
    /// `card`, `crypto` or `telegram`.
    pub method: String,
    /// `USD` (card); `BTC`, `ETH`, `USDT_TRC20`, `USDT_ERC20`, `USDC_ERC20` (crypto); as recorded
    /// (telegram).
    pub currency: Option<String>,
    /// Card: the Stripe Checkout page to send the customer to.
    pub checkout_url: Option<String>,
    /// Crypto: where to send the payment.
    pub pay_address: Option<String>,
    /// Crypto: the exact amount to send, in `pay_currency`.
    #[serde(serialize_with = "money::ser_opt")]
    #[schema(value_type = Option<String>, example = "0.00773")]
    pub pay_amount: Option<Decimal>,
    /// Crypto: the currency to send (as `currency`).
    pub pay_currency: Option<String>,
    /// Crypto: the network to send on: `bitcoin`, `ethereum` or `tron`.
    pub network: Option<String>,
    /// Telegram: the chat or order reference.
    pub reference: Option<String>,
    /// `stripe`, `nowpayments` or `telegram`.
    pub provider: String,
    /// The processor's id: Checkout Session id or crypto payment id.
    pub provider_ref: Option<String>,
    #[serde(skip)]
    pub payment_intent: Option<String>,
    /// Crypto: the amount the processor last reported as received, in `pay_currency`.
    #[serde(serialize_with = "money::ser_opt")]
    #[schema(value_type = Option<String>)]
    pub received_amount: Option<Decimal>,
    /// The processor's last reported status for the payment.
    pub provider_status: Option<String>,
    /// Credits actually granted once paid (the plan's, or a share under the under-payment policy).
    #[serde(serialize_with = "money::ser_opt")]
    #[schema(value_type = Option<String>)]
    pub credited: Option<Decimal>,
    /// What a person should look at (over-payment, late payment).
    pub review_note: Option<String>,
    pub invoice_number: Option<String>,
    pub credit_note_number: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
}

impl Purchase {
    /// Still waiting for money: the states from which a payment may complete it.
    pub fn payable(&self) -> bool {
        self.status == "pending" || self.status == "held"
    }

    /// The Stripe amount in cents (prices have at most 2 fractional digits).
    pub fn amount_cents(&self) -> Option<i64> {
        use rust_decimal::prelude::ToPrimitive;
        (self.amount_usd * Decimal::ONE_HUNDRED).to_i64()
    }
}

/// How a purchase is settled: what to credit and invoice, who says so, on what evidence.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Credits to grant: the plan's, or the share received.
    pub credits: Decimal,
    /// The USD total to invoice: the plan's price, or the share received.
    pub amount_usd: Decimal,
    /// `stripe`, `nowpayments`, `admin:<name>`, `expiry`.
    pub actor: String,
    /// The evidence: processor event id or payment id, Telegram reference.
    pub reference: String,
    /// Something a person should review (over-payment, a share credited).
    pub note: Option<String>,
}

impl Settlement {
    /// The whole plan.
    pub fn full(p: &Purchase, actor: &str, reference: &str) -> Self {
        Self {
            credits: p.credits,
            amount_usd: p.amount_usd,
            actor: actor.to_owned(),
            reference: reference.to_owned(),
            note: None,
        }
    }
}

pub const SELECT: &str =
    "SELECT id, account_id, status, status_reason, plan_id, plan_name, credits, amount_usd,
    method, currency, checkout_url, pay_address, pay_amount, pay_currency, network, reference, provider,
    provider_ref, payment_intent, received_amount, provider_status, credited, review_note, invoice_number,
    credit_note_number, created_by, created_at, expires_at, paid_at, refunded_at FROM purchases";

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> ApiResult<Purchase> {
    sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("purchase {id} not found")))
}

/// Locks the purchase row for the rest of the transaction (the first lock any payment change takes).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Purchase>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Locks the purchase a processor names by its own id.
pub async fn lock_by_provider_ref(
    conn: &mut PgConnection,
    provider: &str,
    provider_ref: &str,
) -> Result<Option<Purchase>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE provider = $1 AND provider_ref = $2 FOR UPDATE"
    ))
    .bind(provider)
    .bind(provider_ref)
    .fetch_optional(conn)
    .await
}

/// Locks the card purchase paid by a Stripe PaymentIntent (refunds and disputes name it).
pub async fn lock_by_payment_intent(
    conn: &mut PgConnection,
    intent: &str,
) -> Result<Option<Purchase>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE payment_intent = $1 AND provider = 'stripe' FOR UPDATE"
    ))
    .bind(intent)
    .fetch_optional(conn)
    .await
}

/// Records a processor callback by its event id. `false`: it was recorded before (a redelivery),
/// and the caller applies nothing. A concurrent delivery of the same event waits here until the
/// first one commits (then sees it) or rolls back (then records it itself).
pub async fn record_event(
    conn: &mut PgConnection,
    provider: &str,
    event_id: &str,
    event_type: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payment_events (provider, event_id, event_type, outcome) VALUES ($1, $2, $3, 'received')
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(provider)
    .bind(event_id)
    .bind(event_type)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// What applying the event did, kept with it.
pub async fn event_outcome(
    conn: &mut PgConnection,
    provider: &str,
    event_id: &str,
    purchase_id: Option<Uuid>,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payment_events SET outcome = $3, purchase_id = $4 WHERE provider = $1 AND event_id = $2",
    )
    .bind(provider)
    .bind(event_id)
    .bind(outcome)
    .bind(purchase_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Outcome of a previously recorded event (for the reply to a redelivery).
pub async fn previous_outcome(
    conn: &mut PgConnection,
    provider: &str,
    event_id: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT outcome FROM payment_events WHERE provider = $1 AND event_id = $2")
        .bind(provider)
        .bind(event_id)
        .fetch_one(conn)
        .await
}

/// The answer to a processor callback, sent only after the transaction that applied it committed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// The event was applied before (a redelivery): nothing changed now.
    pub duplicate: bool,
    /// What applying it did, e.g. `paid`, `held_underpaid`, `refunded`, `ignored`.
    pub outcome: String,
}

/// A verified callback, either new (its transaction open, the event recorded in it) or seen before.
pub enum Delivery {
    New(sqlx::Transaction<'static, sqlx::Postgres>),
    Duplicate(WebhookReceipt),
}

/// Opens the transaction that applies an event and records the event in it. A redelivery (or a
/// concurrent duplicate, once the first commits) gets the first delivery's outcome.
pub async fn begin_event(
    pool: &sqlx::PgPool,
    provider: &str,
    event_id: &str,
    event_type: &str,
) -> ApiResult<Delivery> {
    let mut tx = pool.begin().await?;
    if record_event(&mut tx, provider, event_id, event_type).await? {
        return Ok(Delivery::New(tx));
    }
    let outcome = previous_outcome(&mut tx, provider, event_id).await?;
    tx.commit().await?;
    Ok(Delivery::Duplicate(WebhookReceipt {
        received: true,
        duplicate: true,
        outcome,
    }))
}

/// Stores what the event did and commits; the caller answers 2xx only after this returns.
pub async fn finish_event(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    provider: &str,
    event_id: &str,
    purchase_id: Option<Uuid>,
    outcome: &str,
) -> ApiResult<WebhookReceipt> {
    event_outcome(&mut tx, provider, event_id, purchase_id, outcome).await?;
    tx.commit().await?;
    Ok(WebhookReceipt {
        received: true,
        duplicate: false,
        outcome: outcome.to_owned(),
    })
}
