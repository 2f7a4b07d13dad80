//! Invoices and credit notes: issued in the transaction that pays (or refunds) a purchase, with a
//! gapless number per series (`INV-<year>`, `CN-<year>`) taken from a counter row
//! (`invoice_series`) by `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`: the row stays locked to
//! commit and a rollback undoes the increment, so numbers are sequential, never skipped, never
//! reused. The document (seller from configuration, buyer from the account's billing details,
//! lines, totals) is frozen as JSON at issue; HTML and PDF are rendered from it.
//!
//! Plan prices include tax: with `INVOICE_TAX_RATE` r, the total is what was paid, the tax is
//! total x r / (1 + r) rounded to cents, and the subtotal is the rest. By default there is no tax.

mod html;
mod pdf;
mod routes;

use chrono::{DateTime, Datelike, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::PaymentConfig;
use crate::error::{ApiError, ApiResult};
use crate::payments::model::{Purchase, Settlement};

pub use routes::router;

/// A party on the document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Party {
    pub name: String,
    pub address: Option<String>,
    pub tax_id: Option<String>,
    /// The buyer's account and email (absent for the seller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLine {
    /// The plan.
    pub description: String,
    /// Credits sold (negative on a credit note).
    pub credits: String,
    /// USD per credit, shown to 5 decimals.
    pub unit_price_usd: String,
    /// The exact line total in USD.
    pub amount_usd: String,
}

/// An issued invoice or credit note, exactly as frozen at issue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceDocument {
    pub number: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    pub issued_at: DateTime<Utc>,
    pub purchase_id: Uuid,
    /// Credit notes: the invoice they correct.
    pub corrects: Option<String>,
    pub seller: Party,
    pub buyer: Party,
    pub lines: Vec<InvoiceLine>,
    /// Always `USD`.
    pub currency: String,
    pub subtotal_usd: String,
    /// The tax rate as a fraction (`0` = no tax).
    pub tax_rate: String,
    pub tax_usd: String,
    pub total_usd: String,
    /// `card`, `crypto` or `telegram`.
    pub payment_method: String,
    /// The processor's payment id or the Telegram reference.
    pub payment_reference: Option<String>,
    /// Credit notes: why; invoices: a share credited, an over-payment.
    pub note: Option<String>,
}

fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// `d` with exactly `dp` decimals.
fn fixed(d: Decimal, dp: u32) -> String {
    let mut r = d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(dp);
    r.to_string()
}

/// Takes the next number of `series` in the caller's transaction (gapless: see the module doc),
/// with the issue time read once the series row is locked: the row lock is held until commit, so
/// issue times follow number order.
pub async fn next_number(conn: &mut PgConnection, series: &str) -> Result<(i64, DateTime<Utc>), sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO invoice_series (series, last_number) VALUES ($1, 1)
         ON CONFLICT (series) DO UPDATE SET last_number = invoice_series.last_number + 1
         RETURNING last_number, clock_timestamp()",
    )
    .bind(series)
    .fetch_one(conn)
    .await
}

async fn buyer(conn: &mut PgConnection, account_id: Uuid) -> Result<Party, sqlx::Error> {
    let (name, email, address, tax_id): (String, String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT coalesce(b.name, a.name), a.email, b.address, b.tax_id
         FROM accounts a LEFT JOIN billing_details b ON b.account_id = a.id WHERE a.id = $1",
    )
    .bind(account_id)
    .fetch_one(conn)
    .await?;
    Ok(Party {
        name,
        address,
        tax_id,
        account_id: Some(account_id),
        email: Some(email),
    })
}

fn seller(config: &PaymentConfig) -> Party {
    Party {
        name: config.seller_name.clone(),
        address: Some(config.seller_address.clone()),
        tax_id: Some(config.seller_tax_id.clone()),
        account_id: None,
        email: None,
    }
}

async fn store(conn: &mut PgConnection, series: &str, seq: i64, doc: &InvoiceDocument) -> ApiResult<()> {
    let document =
        serde_json::to_value(doc).map_err(|e| ApiError::Internal(format!("invoice document: {e}")))?;
    sqlx::query(
        "INSERT INTO invoices (number, series, seq, kind, purchase_id, account_id, corrects, document, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&doc.number)
    .bind(series)
    .bind(seq)
    .bind(&doc.kind)
    .bind(doc.purchase_id)
    .bind(doc.buyer.account_id)
    .bind(&doc.corrects)
    .bind(document)
    .bind(doc.issued_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Issues the invoice of a purchase being paid with `s`; returns its number.
pub async fn issue_invoice(
    conn: &mut PgConnection,
    p: &Purchase,
    s: &Settlement,
    config: &PaymentConfig,
) -> ApiResult<String> {
    // The series is the year at the start; a payment that waits across midnight of 31 December
    // keeps the old year's series.
    let series = format!("INV-{}", Utc::now().year());
    let (seq, issued_at) = next_number(conn, &series).await?;
    let total = cents(s.amount_usd);
    let rate = config.tax_rate;
    let tax = cents(total * rate / (Decimal::ONE + rate));
    let unit = if s.credits.is_zero() {
        Decimal::ZERO
    } else {
        total / s.credits
    };
    let doc = InvoiceDocument {
        number: format!("{series}-{seq:06}"),
        kind: "invoice".into(),
        issued_at,
        purchase_id: p.id,
        corrects: None,
        seller: seller(config),
        buyer: buyer(conn, p.account_id).await?,
        lines: vec![InvoiceLine {
            description: p.plan_name.clone(),
            credits: crate::money::plain(s.credits),
            unit_price_usd: fixed(unit, 5),
            amount_usd: fixed(total, 2),
        }],
        currency: "USD".into(),
        subtotal_usd: fixed(total - tax, 2),
        tax_rate: crate::money::plain(rate),
        tax_usd: fixed(tax, 2),
        total_usd: fixed(total, 2),
        payment_method: p.method.clone(),
        payment_reference: payment_reference(p, s),
        note: s.note.clone(),
    };
    store(conn, &series, seq, &doc).await?;
    Ok(doc.number)
}

fn payment_reference(p: &Purchase, s: &Settlement) -> Option<String> {
    match p.method.as_str() {
        "telegram" => p.reference.clone().or_else(|| Some(s.reference.clone())),
        _ => p.provider_ref.clone().or_else(|| Some(s.reference.clone())),
    }
}

fn negate(amount: &str) -> String {
    match amount.strip_prefix('-') {
        Some(positive) => positive.to_owned(),
        None if amount.trim_start_matches(['0', '.']).is_empty() => amount.to_owned(),
        None => format!("-{amount}"),
    }
}

/// Issues the credit note that cancels a paid purchase's invoice; returns its number.
pub async fn issue_credit_note(
    conn: &mut PgConnection,
    p: &Purchase,
    reason: &str,
    config: &PaymentConfig,
) -> ApiResult<String> {
    let invoice_number = p
        .invoice_number
        .as_deref()
        .ok_or_else(|| ApiError::Internal(format!("purchase {} is paid without an invoice", p.id)))?;
    let original = fetch(conn, invoice_number).await?;
    // The series is the year at the start; a payment that waits across midnight of 31 December
    // keeps the old year's series.
    let series = format!("CN-{}", Utc::now().year());
    let (seq, issued_at) = next_number(conn, &series).await?;
    let doc = InvoiceDocument {
        number: format!("{series}-{seq:06}"),
        kind: "credit_note".into(),
        issued_at,
        purchase_id: p.id,
        corrects: Some(original.number.clone()),
        seller: seller(config),
        buyer: original.buyer.clone(),
        lines: original
            .lines
            .iter()
            .map(|l| InvoiceLine {
                description: l.description.clone(),
                credits: negate(&l.credits),
                unit_price_usd: l.unit_price_usd.clone(),
                amount_usd: negate(&l.amount_usd),
            })
            .collect(),
        currency: original.currency.clone(),
        subtotal_usd: negate(&original.subtotal_usd),
        tax_rate: original.tax_rate.clone(),
        tax_usd: negate(&original.tax_usd),
        total_usd: negate(&original.total_usd),
        payment_method: original.payment_method.clone(),
        payment_reference: original.payment_reference.clone(),
        note: Some(reason.to_owned()),
    };
    store(conn, &series, seq, &doc).await?;
    Ok(doc.number)
}

/// One document by number.
pub async fn fetch(conn: &mut PgConnection, number: &str) -> ApiResult<InvoiceDocument> {
    let doc: serde_json::Value = sqlx::query_scalar("SELECT document FROM invoices WHERE number = $1")
        .bind(number)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("invoice {number} not found")))?;
    serde_json::from_value(doc).map_err(|e| ApiError::Internal(format!("invoice {number}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn unit_price_has_five_decimals_and_totals_two() {
        let total = Decimal::from(500);
        let unit = total / Decimal::from(105_000);
        assert_eq!(fixed(unit, 5), "0.00476");
        assert_eq!(fixed(total, 2), "500.00");
        assert_eq!(fixed(Decimal::from(5) / Decimal::from(1000), 5), "0.00500");
    }

    #[test]
    fn tax_is_included_in_the_total() {
        let total = Decimal::from(50);
        let rate = Decimal::from_str("0.2").unwrap();
        let tax = cents(total * rate / (Decimal::ONE + rate));
        assert_eq!(fixed(tax, 2), "8.33");
        assert_eq!(fixed(total - tax, 2), "41.67");
    }

    #[test]
    fn negation_keeps_zero_unsigned() {
        assert_eq!(negate("500.00"), "-500.00");
        assert_eq!(negate("-3"), "3");
        assert_eq!(negate("0.00"), "0.00");
    }
}
