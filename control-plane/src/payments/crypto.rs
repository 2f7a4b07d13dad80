//! Crypto payments behind a small processor trait (NOWPayments first; BTCPay Server or Coinbase
//! Commerce would be another implementation), and the policy that turns a processor's report into
//! a purchase transition.
//!
//! Policy (configured by `CRYPTO_UNDERPAY_POLICY`, default `hold`):
//! * The currency and the network are always explicit. A report in another currency or on another
//!   network than the purchase asked for never credits: the purchase is `held` for review.
//! * `finished` with at least the amount asked: paid, the plan's credits. More than asked: paid,
//!   the plan's credits, and the excess is written in `review_note` (and the audit log) for a
//!   person to refund or credit by hand.
//! * Less than asked (`partially_paid`, or `finished` short): `CRYPTO_UNDERPAY_POLICY=hold`
//!   (default) holds the purchase for review; `credit_share` credits the share received at the
//!   plan's rate, rounded down to whole credits, once the payment is final (`finished`, or the
//!   processor's or our expiry with money received); until then it stays pending.
//! * `failed`/`expired` with nothing received never credit. A payment reported after the purchase
//!   expired or failed is recorded in `review_note`; the purchase stays as it is.

use std::future::Future;
use std::pin::Pin;

use axum::http::HeaderMap;
use rust_decimal::{Decimal, RoundingStrategy};
use sqlx::PgConnection;
use uuid::Uuid;

use super::fulfil;
use super::model::{Purchase, Settlement};
use crate::config::{PaymentConfig, UnderpayPolicy};
use crate::error::ApiResult;
use crate::money;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The currencies sold, each on one explicit network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoCurrency {
    Btc,
    Eth,
    UsdtTrc20,
    UsdtErc20,
    UsdcErc20,
}

impl CryptoCurrency {
    pub const ALL: [Self; 5] = [
        Self::Btc,
        Self::Eth,
        Self::UsdtTrc20,
        Self::UsdtErc20,
        Self::UsdcErc20,
    ];

    /// The name in the public API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Btc => "BTC",
            Self::Eth => "ETH",
            Self::UsdtTrc20 => "USDT_TRC20",
            Self::UsdtErc20 => "USDT_ERC20",
            Self::UsdcErc20 => "USDC_ERC20",
        }
    }

    /// The network the payment must be sent on.
    pub fn network(self) -> &'static str {
        match self {
            Self::Btc => "bitcoin",
            Self::Eth | Self::UsdtErc20 | Self::UsdcErc20 => "ethereum",
            Self::UsdtTrc20 => "tron",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What the control plane asks a processor for.
#[derive(Debug, Clone)]
pub struct CryptoOrder {
    pub purchase_id: Uuid,
    pub amount_usd: Decimal,
    pub currency: CryptoCurrency,
    pub description: String,
    pub callback_url: String,
}

/// Where and how much to pay, as the processor answered (checked against the order).
#[derive(Debug, Clone)]
pub struct CryptoInvoice {
    pub provider_ref: String,
    pub pay_address: String,
    pub pay_amount: Decimal,
}

/// The processor's state of a payment, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoStatus {
    /// Waiting, confirming, confirmed, sending: nothing to decide yet.
    InProgress,
    PartiallyPaid,
    Finished,
    Failed,
    Expired,
    Refunded,
}

/// A verified callback.
#[derive(Debug, Clone)]
pub struct CryptoReport {
    /// Unique per distinct report (deduplication key).
    pub event_id: String,
    /// The processor's status as sent (kept on the purchase).
    pub raw_status: String,
    pub status: CryptoStatus,
    pub provider_ref: String,
    /// Our purchase id, when the processor echoes it.
    pub order_id: Option<Uuid>,
    /// The currency and network the payment was made in; `Err` holds what was reported when it is
    /// none of ours.
    pub currency: Result<CryptoCurrency, String>,
    /// The amount received so far, in the pay currency.
    pub actually_paid: Option<Decimal>,
}

/// Why a callback is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("signature header missing")]
    MissingSignature,
    #[error("signature does not match the body")]
    BadSignature,
    #[error("body is not a valid callback: {0}")]
    Malformed(String),
}

/// A crypto payment processor.
pub trait CryptoProvider: Send + Sync {
    /// `provider` on the purchases it creates (e.g. `nowpayments`).
    fn name(&self) -> &'static str;

    /// Creates the payment: address and exact amount in the order's currency and network.
    fn create_payment<'a>(&'a self, order: &'a CryptoOrder) -> BoxFuture<'a, Result<CryptoInvoice, String>>;

    /// Verifies a callback on its raw bytes (before any trust in its content) and normalises it.
    fn verify_callback(&self, headers: &HeaderMap, body: &[u8]) -> Result<CryptoReport, CallbackError>;
}

/// The share of the plan a short payment buys: whole credits, and the USD it is worth (cents,
/// rounded down).
pub fn share(p: &Purchase, paid: Decimal) -> Option<(Decimal, Decimal)> {
    let asked = p.pay_amount.filter(|a| *a > Decimal::ZERO)?;
    let fraction = paid.checked_div(asked)?;
    let credits = (p.credits * fraction).floor();
    let usd = (p.amount_usd * fraction).round_dp_with_strategy(2, RoundingStrategy::ToZero);
    (credits > Decimal::ZERO && usd > Decimal::ZERO).then_some((credits, usd))
}

/// Applies a verified report to its (locked) purchase under the configured policy; returns what
/// happened, for the event log.
pub async fn apply(
    conn: &mut PgConnection,
    p: &Purchase,
    r: &CryptoReport,
    config: &PaymentConfig,
) -> ApiResult<&'static str> {
    let actor = p.provider.as_str();
    sqlx::query(
        "UPDATE purchases SET provider_status = $2, received_amount = coalesce($3, received_amount),
            provider_ref = coalesce(provider_ref, $4), updated_at = now() WHERE id = $1",
    )
    .bind(p.id)
    .bind(&r.raw_status)
    .bind(r.actually_paid)
    .bind(&r.provider_ref)
    .execute(&mut *conn)
    .await?;
    let paid = r.actually_paid.or(p.received_amount).unwrap_or(Decimal::ZERO);
    let money_moved =
        paid > Decimal::ZERO || matches!(r.status, CryptoStatus::Finished | CryptoStatus::PartiallyPaid);
    let expected = CryptoCurrency::parse(p.pay_currency.as_deref().unwrap_or_default());
    if r.currency.as_ref().ok().copied() != expected || expected.is_none() {
        let got = match &r.currency {
            Ok(c) => format!("{} on {}", c.name(), c.network()),
            Err(raw) => raw.clone(),
        };
        let reason = format!(
            "paid in {got}, but the purchase asked for {} on {}",
            p.pay_currency.as_deref().unwrap_or("?"),
            p.network.as_deref().unwrap_or("?")
        );
        if !money_moved {
            return Ok("ignored_wrong_currency");
        }
        if p.status == "pending" {
            fulfil::hold(conn, p, actor, &reason).await?;
            return Ok("held_wrong_currency");
        }
        fulfil::note(conn, p, actor, &reason).await?;
        return Ok("noted_wrong_currency");
    }
    let asked = p.pay_amount.unwrap_or(Decimal::ZERO);
    let amounts = format!(
        "received {} of {} {}",
        money::plain(paid),
        money::plain(asked),
        p.pay_currency.as_deref().unwrap_or_default()
    );
    if !p.payable() {
        if money_moved && r.status != CryptoStatus::Refunded {
            if p.status == "paid" && p.received_amount.is_some_and(|before| paid > before) {
                fulfil::note(conn, p, actor, &format!("more money after payment: {amounts}")).await?;
                return Ok("noted_late_top_up");
            }
            if p.status == "expired" || p.status == "failed" {
                fulfil::note(
                    conn,
                    p,
                    actor,
                    &format!(
                        "late payment after the purchase was {}: {amounts}; credit or refund by hand",
                        p.status
                    ),
                )
                .await?;
                return Ok("noted_late_payment");
            }
        }
        if r.status == CryptoStatus::Refunded && p.status == "paid" {
            fulfil::reverse(
                conn,
                p,
                fulfil::Reversal::Refund,
                actor,
                "refunded by the processor",
                config,
            )
            .await?;
            return Ok("refunded");
        }
        return Ok("no_change");
    }
    if p.pay_amount.is_none() && money_moved {
        // Only possible if a report overtakes the creation's own update: no quote to compare with.
        let reason = format!("payment reported before its quote was stored: {amounts}");
        fulfil::hold(conn, p, actor, &reason).await?;
        return Ok("held_no_quote");
    }
    let reference = r.provider_ref.clone();
    match r.status {
        CryptoStatus::InProgress | CryptoStatus::Refunded => Ok("in_progress"),
        CryptoStatus::Finished if paid >= asked && asked > Decimal::ZERO => {
            let mut s = Settlement::full(p, actor, &reference);
            if paid > asked {
                s.note = Some(format!(
                    "over-payment: {amounts}; excess {} noted for review",
                    money::plain(paid - asked)
                ));
            }
            fulfil::pay(conn, p, &s, config).await?;
            Ok(if paid > asked { "paid_overpaid" } else { "paid" })
        }
        CryptoStatus::Finished | CryptoStatus::Failed | CryptoStatus::Expired if paid > Decimal::ZERO => {
            settle_short(conn, p, paid, &amounts, actor, &reference, config).await
        }
        CryptoStatus::PartiallyPaid => match config.underpay_policy {
            UnderpayPolicy::Hold => {
                fulfil::hold(conn, p, actor, &format!("under-payment: {amounts}")).await?;
                Ok("held_underpaid")
            }
            UnderpayPolicy::CreditShare => Ok("partial_waiting"),
        },
        CryptoStatus::Finished => {
            fulfil::hold(
                conn,
                p,
                actor,
                &format!("finished without an amount received: {amounts}"),
            )
            .await?;
            Ok("held_no_amount")
        }
        CryptoStatus::Failed => {
            fulfil::close(
                conn,
                p,
                "failed",
                actor,
                "the processor reports the payment failed",
            )
            .await?;
            Ok("failed")
        }
        CryptoStatus::Expired => {
            fulfil::close(
                conn,
                p,
                "expired",
                actor,
                "the processor expired the payment unpaid",
            )
            .await?;
            Ok("expired")
        }
    }
}

/// A final short payment: hold it, or credit the share received, by policy.
pub async fn settle_short(
    conn: &mut PgConnection,
    p: &Purchase,
    paid: Decimal,
    amounts: &str,
    actor: &str,
    reference: &str,
    config: &PaymentConfig,
) -> ApiResult<&'static str> {
    match (config.underpay_policy, share(p, paid)) {
        (UnderpayPolicy::CreditShare, Some((credits, usd))) => {
            let s = Settlement {
                credits,
                amount_usd: usd,
                actor: actor.to_owned(),
                reference: reference.to_owned(),
                note: Some(format!("under-payment: {amounts}; credited the share received")),
            };
            fulfil::pay(conn, p, &s, config).await?;
            Ok("paid_share")
        }
        _ => {
            fulfil::hold(conn, p, actor, &format!("under-payment: {amounts}")).await?;
            Ok("held_underpaid")
        }
    }
}
