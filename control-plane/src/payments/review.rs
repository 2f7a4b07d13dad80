//! What a person decides (admin): confirm a Telegram sale or approve a held purchase, reject a
//! held or pending one, refund a paid one. Each decision is audited with the actor.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::fulfil::{self, Reversal};
use super::model::{self, Purchase, Settlement};
use super::purchases::unavailable;
use crate::accounts::check_text;
use crate::auth::Admin;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::money::{self, Amount};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The payment's reference (e.g. the Telegram order or transaction); the sale's when absent.
    #[serde(default)]
    pub reference: Option<String>,
    /// Held purchases only: credit this many whole credits (at most the plan's) instead of the
    /// plan's, e.g. the share an under-payment bought; the invoice shows the same share of the price.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "42000")]
    pub credits: Option<Amount>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (kept on the purchase, the ledger or credit note, and the audit log).
    pub reason: String,
}

fn settlement(p: &Purchase, actor: &str, reference: &str, credits: Option<Decimal>) -> ApiResult<Settlement> {
    let mut s = Settlement::full(p, actor, reference);
    if let Some(c) = credits.map(money::canonical) {
        if c <= Decimal::ZERO || c > p.credits || c.fract() != Decimal::ZERO {
            return Err(ApiError::invalid(format!(
                "credits must be a whole number from 1 to the plan's {}",
                money::plain(p.credits)
            )));
        }
        let usd = (p.amount_usd * c / p.credits).round_dp_with_strategy(2, RoundingStrategy::ToZero);
        if usd <= Decimal::ZERO {
            return Err(ApiError::invalid(
                "credits are worth less than a cent; nothing to invoice",
            ));
        }
        s.credits = c;
        s.amount_usd = usd;
        s.note = Some(format!(
            "approved after review: {} of {} credits",
            money::plain(c),
            money::plain(p.credits)
        ));
    } else if p.status == "held" {
        s.note = Some("approved after review".to_owned());
    }
    Ok(s)
}

/// The header of an answer that changed nothing because the purchase was already confirmed or
/// refunded (`true`): the caller's request had been carried out before, by it or another.
pub const REPLAYED: &str = "idempotent-replayed";

/// The purchase as answered, marked [`REPLAYED`] when this request changed nothing.
fn answer(purchase: Purchase, replayed: bool) -> (HeaderMap, Json<Purchase>) {
    let mut headers = HeaderMap::new();
    if replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    (headers, Json(purchase))
}

/// Confirms a Telegram sale as paid, or approves a held purchase of any method: credits the
/// account and issues the invoice, once. Confirming a paid purchase again answers 200 unchanged.
#[utoipa::path(post, path = "/v1/purchases/{id}/confirm", tag = "payments", request_body = ConfirmRequest,
    params(("id" = Uuid, Path, description = "purchase id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Purchase, headers(("idempotent-replayed" = String, description = "`true` when the purchase was already paid and this request changed nothing"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a pending card or crypto purchase (its processor confirms it), or expired, \
            failed or refunded", body = ErrorBody)))]
async fn confirm_purchase(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    raw: axum::body::Bytes,
) -> ApiResult<(HeaderMap, Json<Purchase>)> {
    // The body is optional: an empty one confirms with the sale's own reference.
    let body: ConfirmRequest = if raw.iter().all(u8::is_ascii_whitespace) {
        ConfirmRequest::default()
    } else {
        crate::extract::parse_json(&raw)?
    };
    let reference = body
        .reference
        .as_deref()
        .map(|r| check_text("reference", r, 200))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    let p = model::lock(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("purchase {id} not found")))?;
    if p.status == "paid" {
        return Ok(answer(p, true));
    }
    if p.method != "telegram" && p.status == "pending" {
        return Err(ApiError::conflict(format!(
            "purchase {id} is a pending {} purchase; its processor confirms it (only a held one can be approved)",
            p.method
        )));
    }
    if body.credits.is_some() && p.status != "held" {
        return Err(ApiError::invalid(
            "credits can only be chosen when approving a held purchase",
        ));
    }
    let reference = reference
        .or_else(|| p.reference.clone())
        .or_else(|| p.provider_ref.clone())
        .unwrap_or_default();
    let s = settlement(&p, &admin.actor, &reference, body.credits.map(|c| c.0))?;
    fulfil::pay(&mut tx, &p, &s, &state.config.payments).await?;
    let purchase = model::fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(answer(purchase, false))
}

/// Rejects a pending or held purchase: `failed`, nothing credited. Money a processor received for
/// it is returned outside this API.
#[utoipa::path(post, path = "/v1/purchases/{id}/reject", tag = "payments", request_body = ReasonRequest,
    params(("id" = Uuid, Path, description = "purchase id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Purchase), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the purchase is paid, refunded, expired or failed", body = ErrorBody)))]
async fn reject_purchase(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReasonRequest>,
) -> ApiResult<Json<Purchase>> {
    let reason = check_text("reason", &body.reason, 1000)?;
    let mut tx = state.pool.begin().await?;
    let p = model::lock(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("purchase {id} not found")))?;
    if !p.payable() {
        return Err(ApiError::conflict(format!(
            "purchase {id} is {}; only a pending or held purchase can be rejected",
            p.status
        )));
    }
    fulfil::close(
        &mut tx,
        &p,
        "failed",
        &admin.actor,
        &format!("rejected: {reason}"),
    )
    .await?;
    let purchase = model::fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(purchase))
}

/// Refunds a whole paid purchase: reverses its credits (the balance may go negative), issues a
/// credit note and flags the account. A card purchase is refunded at Stripe first. Refunding a
/// refunded purchase again answers 200 with it unchanged.
#[utoipa::path(post, path = "/v1/purchases/{id}/refund", tag = "payments", request_body = ReasonRequest,
    params(("id" = Uuid, Path, description = "purchase id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Purchase, headers(("idempotent-replayed" = String, description = "`true` when the purchase was already refunded and this request changed nothing"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the purchase is not paid", body = ErrorBody),
        (status = 503, description = "Stripe refused or failed; nothing changed", body = ErrorBody)))]
async fn refund_purchase(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReasonRequest>,
) -> ApiResult<(HeaderMap, Json<Purchase>)> {
    let reason = check_text("reason", &body.reason, 1000)?;
    let current = {
        let mut conn = state.pool.acquire().await?;
        model::fetch(&mut conn, id).await?
    };
    if current.status == "refunded" {
        return Ok(answer(current, true));
    }
    if current.status != "paid" {
        return Err(ApiError::conflict(format!(
            "purchase {id} is {}; only a paid purchase can be refunded",
            current.status
        )));
    }
    // Money first: Stripe's refund is idempotent per purchase, and its charge.refunded event finds
    // the purchase refunded (or refunds it, if it comes first).
    if let (Some(stripe), Some(intent)) = (&state.payments.stripe, &current.payment_intent) {
        stripe
            .refund(&current, intent)
            .await
            .map_err(|e| unavailable("the Stripe refund", &e))?;
    }
    let mut tx = state.pool.begin().await?;
    let p = model::lock(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("purchase {id} not found")))?;
    let applied = p.status == "paid";
    if applied {
        fulfil::reverse(
            &mut tx,
            &p,
            Reversal::Refund,
            &admin.actor,
            &reason,
            &state.config.payments,
        )
        .await?;
    }
    let purchase = model::fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(answer(purchase, !applied))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(confirm_purchase))
        .routes(routes!(reject_purchase))
        .routes(routes!(refund_purchase))
}
