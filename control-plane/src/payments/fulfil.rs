//! The transitions of a purchase, each inside the caller's transaction with the purchase row
//! already locked ([`super::model::lock`]). Lock order in every payment transaction: purchase row,
//! invoice series row, idempotency advisory lock, ledger accounts (sorted), sync version. Nothing
//! else takes the series rows, so this order cannot form a cycle with the ledger's other users.

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::{Purchase, Settlement};
use crate::audit::Audit;
use crate::config::PaymentConfig;
use crate::error::{ApiError, ApiResult};
use crate::invoices;
use crate::ledger::{self, NewTransfer, Posted};
use crate::money;
use crate::webhooks::events;

/// The system ledger account `sales` (seeded by migration 0001): paid purchases move credits from
/// it to the customer, refunds and chargebacks move them back. Its balance is minus the credits sold.
pub const SALES: Uuid = Uuid::from_u128(3);

/// Marks a payable purchase paid: issues its invoice, credits the account (from `sales`, key
/// `purchase:<id>`) and records the audit entry, all in the caller's transaction. Returns the
/// invoice number.
pub async fn pay(
    conn: &mut PgConnection,
    p: &Purchase,
    s: &Settlement,
    config: &PaymentConfig,
) -> ApiResult<String> {
    if !p.payable() {
        return Err(ApiError::conflict(format!(
            "purchase {} is {}; only a pending or held purchase can be paid",
            p.id, p.status
        )));
    }
    if s.credits <= Decimal::ZERO || s.amount_usd <= Decimal::ZERO {
        return Err(ApiError::Internal(format!(
            "purchase {}: a settlement must credit and invoice a positive amount",
            p.id
        )));
    }
    let number = invoices::issue_invoice(conn, p, s, config).await?;
    let transfer = NewTransfer {
        id: ledger::new_transfer_id(),
        scope: "payment",
        idempotency_key: format!("purchase:{}", p.id),
        kind: "purchase",
        from: SALES,
        to: p.account_id,
        amount: s.credits,
        reason: Some(format!(
            "purchase {} of {} ({}), invoice {number}",
            p.id, p.plan_name, p.method
        )),
        actor: s.actor.clone(),
        fingerprint: ledger::fingerprint(&[&p.account_id.to_string(), &money::plain(s.credits)]),
    };
    let audit = Audit {
        actor: &s.actor,
        action: "purchase.paid",
        target: format!("purchase:{}", p.id),
        reason: s.note.as_deref(),
        details: json!({
            "account_id": p.account_id, "method": p.method, "plan_id": p.plan_id,
            "credits": money::plain(s.credits), "amount_usd": money::plain(s.amount_usd),
            "reference": s.reference, "invoice_number": number, "transfer_id": transfer.id,
        }),
    };
    match ledger::post(conn, transfer, audit).await? {
        Posted::Created(_) => {}
        Posted::Existing(_) => {
            return Err(ApiError::Internal(format!(
                "purchase {} was credited before but is {}",
                p.id, p.status
            )))
        }
    }
    sqlx::query(
        "UPDATE purchases SET status = 'paid', status_reason = NULL, credited = $2, invoice_number = $3,
            paid_at = now(), review_note = coalesce($4, review_note), updated_at = now() WHERE id = $1",
    )
    .bind(p.id)
    .bind(s.credits)
    .bind(&number)
    .bind(&s.note)
    .execute(&mut *conn)
    .await?;
    let data = json!({
        "purchase_id": p.id, "account_id": p.account_id, "plan_id": p.plan_id, "method": p.method,
        "credits": money::plain(s.credits), "amount_usd": money::plain(s.amount_usd), "invoice_number": number,
    });
    let key = format!("{}:{}", events::PURCHASE_PAID, p.id);
    events::emit(
        conn,
        p.account_id,
        events::PURCHASE_PAID,
        &key,
        data,
        chrono::Utc::now(),
    )
    .await?;
    Ok(number)
}

/// `pending -> held` with the reason (a held purchase stays held on later calls).
pub async fn hold(conn: &mut PgConnection, p: &Purchase, actor: &str, reason: &str) -> ApiResult<()> {
    if p.status != "pending" {
        return Ok(());
    }
    set_status(conn, p, "held", actor, reason).await
}

/// `pending -> expired | failed`, or `held -> failed`.
pub async fn close(
    conn: &mut PgConnection,
    p: &Purchase,
    status: &'static str,
    actor: &str,
    reason: &str,
) -> ApiResult<()> {
    let allowed = match status {
        "expired" => p.status == "pending",
        "failed" => p.payable(),
        _ => false,
    };
    if !allowed {
        return Ok(());
    }
    set_status(conn, p, status, actor, reason).await
}

async fn set_status(
    conn: &mut PgConnection,
    p: &Purchase,
    status: &'static str,
    actor: &str,
    reason: &str,
) -> ApiResult<()> {
    sqlx::query("UPDATE purchases SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1")
        .bind(p.id)
        .bind(status)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    crate::audit::record(
        conn,
        Audit {
            actor,
            action: match status {
                "held" => "purchase.held",
                "expired" => "purchase.expired",
                _ => "purchase.failed",
            },
            target: format!("purchase:{}", p.id),
            reason: Some(reason),
            details: json!({ "account_id": p.account_id, "from": p.status, "to": status,
                "amount_usd": money::plain(p.amount_usd), "method": p.method }),
        },
    )
    .await?;
    Ok(())
}

/// Adds a note for review (a late payment, a payment that does not match) and audits it.
pub async fn note(conn: &mut PgConnection, p: &Purchase, actor: &str, note: &str) -> ApiResult<()> {
    sqlx::query(
        "UPDATE purchases SET review_note = left(coalesce(review_note || '; ', '') || $2, 2000),
            updated_at = now() WHERE id = $1",
    )
    .bind(p.id)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    crate::audit::record(
        conn,
        Audit {
            actor,
            action: "purchase.review",
            target: format!("purchase:{}", p.id),
            reason: Some(note),
            details: json!({ "account_id": p.account_id, "status": p.status }),
        },
    )
    .await?;
    Ok(())
}

/// Why credits are reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversal {
    /// An admin refund or a refund reported by the processor.
    Refund,
    /// A dispute lost (chargeback).
    Chargeback,
}

/// `paid -> refunded`: moves the credited amount back to `sales` (key `refund:<id>`; the balance
/// may go negative), issues a credit note correcting the invoice, and flags the account. Returns
/// the credit note number.
pub async fn reverse(
    conn: &mut PgConnection,
    p: &Purchase,
    kind: Reversal,
    actor: &str,
    reason: &str,
    config: &PaymentConfig,
) -> ApiResult<String> {
    let credited = match (p.status.as_str(), p.credited) {
        ("paid", Some(c)) => c,
        _ => {
            return Err(ApiError::conflict(format!(
                "purchase {} is {}; only a paid purchase can be refunded",
                p.id, p.status
            )))
        }
    };
    let number = invoices::issue_credit_note(conn, p, reason, config).await?;
    let action = match kind {
        Reversal::Refund => "purchase.refund",
        Reversal::Chargeback => "purchase.chargeback",
    };
    let transfer = NewTransfer {
        id: ledger::new_transfer_id(),
        scope: "payment",
        idempotency_key: format!("refund:{}", p.id),
        kind: "refund",
        from: p.account_id,
        to: SALES,
        amount: credited,
        reason: Some(format!(
            "{action} of purchase {}: {reason} (credit note {number})",
            p.id
        )),
        actor: actor.to_owned(),
        fingerprint: ledger::fingerprint(&[&p.account_id.to_string(), &money::plain(credited)]),
    };
    let audit = Audit {
        actor,
        action,
        target: format!("purchase:{}", p.id),
        reason: Some(reason),
        details: json!({
            "account_id": p.account_id, "credits": money::plain(credited),
            "invoice_number": p.invoice_number, "credit_note_number": number, "transfer_id": transfer.id,
        }),
    };
    if let Posted::Existing(_) = ledger::post(conn, transfer, audit).await? {
        return Err(ApiError::Internal(format!(
            "purchase {} was reversed before but is {}",
            p.id, p.status
        )));
    }
    sqlx::query(
        "UPDATE purchases SET status = 'refunded', status_reason = $2, credit_note_number = $3,
            refunded_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(p.id)
    .bind(reason)
    .bind(&number)
    .execute(&mut *conn)
    .await?;
    flag(conn, p.account_id, Some(p.id), &format!("{action}: {reason}")).await?;
    let data = json!({
        "purchase_id": p.id, "account_id": p.account_id, "credits": money::plain(credited),
        "chargeback": matches!(kind, Reversal::Chargeback), "reason": reason, "credit_note_number": number,
    });
    let key = format!("{}:{}", events::PURCHASE_REFUNDED, p.id);
    events::emit(
        conn,
        p.account_id,
        events::PURCHASE_REFUNDED,
        &key,
        data,
        chrono::Utc::now(),
    )
    .await?;
    Ok(number)
}

/// Flags an account for a person to look at (refunds, disputes, chargebacks).
pub async fn flag(
    conn: &mut PgConnection,
    account_id: Uuid,
    purchase_id: Option<Uuid>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO account_flags (account_id, purchase_id, reason) VALUES ($1, $2, $3)")
        .bind(account_id)
        .bind(purchase_id)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}
