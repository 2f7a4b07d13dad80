//! The processors' callbacks (`POST /v1/webhooks/stripe`, `POST /v1/webhooks/nowpayments`) and the
//! pages Stripe Checkout returns the customer to.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::Json;
use chrono::Utc;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::crypto;
use super::model::{self, Delivery, WebhookReceipt};
use super::stripe::{apply_event, verify_signature, SIGNATURE_HEADER, TOLERANCE_SECS};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

/// Stripe's webhook. The signature is checked on the raw bytes before anything is parsed; each
/// event is applied once (by event id) and answered 200 only after its transaction committed, so
/// a redelivery after a lost reply finds the event and changes nothing.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "payments",
    request_body(content = serde_json::Value, description = "a Stripe event, signed in Stripe-Signature"),
    responses(
        (status = 200, description = "applied (or a redelivery)", body = WebhookReceipt),
        (status = 400, description = "missing, stale or wrong signature; malformed event", body = ErrorBody),
        (status = 404, description = "card payments are not configured", body = ErrorBody)))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookReceipt>> {
    let secret = state
        .payments
        .stripe_webhook_secret
        .as_deref()
        .ok_or_else(|| ApiError::not_found("card payments are not configured (STRIPE_WEBHOOK_SECRET)"))?;
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    verify_signature(header, &body, secret, Utc::now().timestamp(), TOLERANCE_SECS).map_err(|e| {
        tracing::warn!(error = %e, "refused a Stripe webhook");
        ApiError::invalid(format!("webhook refused: {e}"))
    })?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the event is not JSON: {e}")))?;
    let (Some(event_id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::invalid("the event has no id or type"));
    };
    let mut tx = match model::begin_event(&state.pool, "stripe", event_id, event_type).await? {
        Delivery::Duplicate(receipt) => return Ok(Json(receipt)),
        Delivery::New(tx) => tx,
    };
    let (purchase_id, outcome) = apply_event(&mut tx, &event, event_id, &state.config.payments).await?;
    let receipt = model::finish_event(tx, "stripe", event_id, purchase_id, outcome).await?;
    Ok(Json(receipt))
}

const PAGE: &str =
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ClaudeStore</title></head>\
    <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">";

/// Where Stripe Checkout returns the customer after paying.
#[utoipa::path(get, path = "/checkout/complete", tag = "payments",
    responses((status = 200, description = "a plain thank-you page", body = String, content_type = "text/html")))]
async fn checkout_complete() -> Html<String> {
    Html(format!(
        "{PAGE}<h1>Thank you</h1><p>Your payment was received. The credits appear on your account as soon as \
         the payment is confirmed, usually within a minute.</p></body></html>"
    ))
}

/// Where Stripe Checkout returns the customer who cancelled.
#[utoipa::path(get, path = "/checkout/cancelled", tag = "payments",
    responses((status = 200, description = "a plain page", body = String, content_type = "text/html")))]
async fn checkout_cancelled() -> Html<String> {
    Html(format!(
        "{PAGE}<h1>Payment cancelled</h1><p>Nothing was charged. The purchase expires unless you pay it.</p></body></html>"
    ))
}

/// A crypto processor's payment callback (NOWPayments IPN). Verified on the raw bytes with the
/// IPN secret; applied once per distinct report; answered 200 only after the commit.
#[utoipa::path(post, path = "/v1/webhooks/nowpayments", tag = "payments",
    request_body(content = serde_json::Value, description = "the IPN body, signed in x-nowpayments-sig"),
    responses(
        (status = 200, description = "applied (or a redelivery)", body = WebhookReceipt),
        (status = 400, description = "missing or wrong signature, malformed body", body = ErrorBody),
        (status = 404, description = "crypto payments are not configured", body = ErrorBody)))]
async fn nowpayments_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookReceipt>> {
    let provider = state.payments.crypto.clone().ok_or_else(|| {
        ApiError::not_found(
            "crypto payments are not configured (NOWPAYMENTS_API_KEY, NOWPAYMENTS_IPN_SECRET)",
        )
    })?;
    let report = provider.verify_callback(&headers, &body).map_err(|e| {
        tracing::warn!(error = %e, "refused a crypto payment callback");
        ApiError::invalid(format!("callback refused: {e}"))
    })?;
    let name = provider.name();
    let mut tx = match model::begin_event(&state.pool, name, &report.event_id, &report.raw_status).await? {
        Delivery::Duplicate(receipt) => return Ok(Json(receipt)),
        Delivery::New(tx) => tx,
    };
    let mut purchase = model::lock_by_provider_ref(&mut tx, name, &report.provider_ref).await?;
    if purchase.is_none() {
        // The callback may overtake the creation's own update of provider_ref: find it by order.
        if let Some(order) = report.order_id {
            purchase = model::lock(&mut tx, order)
                .await?
                .filter(|p| p.provider == name && p.provider_ref.is_none());
        }
    }
    let (purchase_id, outcome) = match purchase {
        None => {
            tracing::warn!(payment = %report.provider_ref, "crypto callback for an unknown payment");
            (None, "unknown_payment")
        }
        Some(p) => (
            Some(p.id),
            crypto::apply(&mut tx, &p, &report, &state.config.payments).await?,
        ),
    };
    let receipt = model::finish_event(tx, name, &report.event_id, purchase_id, outcome).await?;
    Ok(Json(receipt))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stripe_webhook))
        .routes(routes!(checkout_complete))
        .routes(routes!(checkout_cancelled))
        .routes(routes!(nowpayments_webhook))
}
