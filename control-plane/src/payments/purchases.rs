//! The purchase routes (admin): create (card, crypto, Telegram), get, list per account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::crypto::{CryptoCurrency, CryptoOrder};
use super::fulfil;
use super::model::{self, Method, Purchase, SELECT};
use crate::accounts::check_text;
use crate::audit::{self, Audit};
use crate::auth::{Admin, Customer};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::money;
use crate::page::{paginate, Page, PageParams};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPurchase {
    pub plan_id: Uuid,
    pub method: Method,
    /// Crypto (required): `BTC`, `ETH`, `USDT_TRC20`, `USDT_ERC20` or `USDC_ERC20`. Card: `USD` or
    /// absent. Telegram: what the customer pays with, as recorded (optional).
    #[serde(default)]
    pub currency: Option<String>,
    /// Telegram (required): the chat or order reference.
    #[serde(default)]
    pub reference: Option<String>,
}

pub(super) fn unavailable(what: &str, e: &str) -> ApiError {
    tracing::warn!(error = %e, "{what} failed");
    ApiError::Unavailable(format!(
        "{what} failed: {e}; the purchase is marked failed, try again"
    ))
}

/// Creates a pending purchase of a plan. Card: a Stripe Checkout Session (`checkout_url`).
/// Crypto: a payment at the processor (`pay_address`, `pay_amount`, `pay_currency`, `network`).
/// Telegram: a sale recorded by support (`reference`), paid by `POST /v1/purchases/{id}/confirm`.
#[utoipa::path(post, path = "/v1/accounts/{id}/purchases", tag = "payments", request_body = NewPurchase,
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses(
        (status = 201, body = Purchase),
        (status = 400, description = "bad method, currency or reference; payments of that method are off", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, description = "the plan is retired", body = ErrorBody),
        (status = 503, description = "the processor failed; the purchase is marked failed", body = ErrorBody)))]
async fn create_purchase(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewPurchase>,
) -> ApiResult<(StatusCode, Json<Purchase>)> {
    let currency = body.currency.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let reference = body
        .reference
        .as_deref()
        .map(|r| check_text("reference", r, 200))
        .transpose()?;
    let (provider, currency, crypto) = match body.method {
        Method::Card => {
            if state.payments.stripe.is_none() {
                return Err(ApiError::invalid(
                    "card payments are not configured (STRIPE_SECRET_KEY)",
                ));
            }
            if currency.is_some_and(|c| !c.eq_ignore_ascii_case("USD")) {
                return Err(ApiError::invalid("currency for card payments is USD"));
            }
            ("stripe", Some("USD".to_owned()), None)
        }
        Method::Crypto => {
            let Some(provider) = &state.payments.crypto else {
                return Err(ApiError::invalid(
                    "crypto payments are not configured (NOWPAYMENTS_API_KEY, NOWPAYMENTS_IPN_SECRET)",
                ));
            };
            let c = currency.and_then(CryptoCurrency::parse).ok_or_else(|| {
                ApiError::invalid(
                    "currency for crypto payments must be BTC, ETH, USDT_TRC20, USDT_ERC20 or USDC_ERC20",
                )
            })?;
            (provider.name(), Some(c.name().to_owned()), Some(c))
        }
        Method::Telegram => {
            if reference.is_none() {
                return Err(ApiError::invalid(
                    "reference (the Telegram chat or order) is required for a telegram sale",
                ));
            }
            let c = currency.map(|c| check_text("currency", c, 20)).transpose()?;
            ("telegram", c, None)
        }
    };
    let id = Uuid::new_v4();
    let now = Utc::now();
    let expires_at = now + state.config.payments.purchase_expiry;
    let mut tx = state.pool.begin().await?;
    crate::accounts::fetch(&mut tx, account_id).await?;
    let plan: Option<(String, Decimal, Decimal, bool)> =
        sqlx::query_as("SELECT name, credits, price_usd, active FROM plans WHERE id = $1")
            .bind(body.plan_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (plan_name, credits, amount_usd, active) = plan
        .ok_or_else(|| ApiError::not_found(format!("plan {} not found; see GET /v1/plans", body.plan_id)))?;
    if !active {
        return Err(ApiError::Unprocessable(format!(
            "plan {plan_name:?} is retired; see GET /v1/plans"
        )));
    }
    sqlx::query(
        "INSERT INTO purchases (id, account_id, plan_id, plan_name, credits, amount_usd, method, currency,
            provider, reference, pay_currency, network, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id)
    .bind(account_id)
    .bind(body.plan_id)
    .bind(&plan_name)
    .bind(credits)
    .bind(amount_usd)
    .bind(body.method.as_str())
    .bind(&currency)
    .bind(provider)
    .bind(&reference)
    .bind(crypto.map(CryptoCurrency::name))
    .bind(crypto.map(CryptoCurrency::network))
    .bind(&admin.actor)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let audit = Audit {
        actor: &admin.actor,
        action: "purchase.create",
        target: format!("purchase:{id}"),
        reason: None,
        details: json!({ "account_id": account_id, "plan_id": body.plan_id, "method": body.method.as_str(),
            "credits": money::plain(credits), "amount_usd": money::plain(amount_usd),
            "currency": currency, "reference": reference }),
    };
    audit::record(&mut tx, audit).await?;
    let purchase = model::fetch(&mut tx, id).await?;
    // Committed before the processor is called: its callback may arrive before the answer.
    tx.commit().await?;
    match body.method {
        Method::Card => start_card(&state, &purchase, now).await?,
        Method::Crypto => start_crypto(&state, &purchase, crypto).await?,
        Method::Telegram => {}
    }
    let mut conn = state.pool.acquire().await?;
    Ok((StatusCode::CREATED, Json(model::fetch(&mut conn, id).await?)))
}

async fn start_card(state: &AppState, p: &Purchase, now: DateTime<Utc>) -> ApiResult<()> {
    let Some(stripe) = &state.payments.stripe else {
        return Ok(());
    };
    match stripe
        .create_checkout_session(p, &state.config.public_url, now)
        .await
    {
        Ok(session) => {
            sqlx::query(
                "UPDATE purchases SET provider_ref = coalesce(provider_ref, $2), checkout_url = $3,
                    updated_at = now() WHERE id = $1",
            )
            .bind(p.id)
            .bind(&session.id)
            .bind(&session.url)
            .execute(&state.pool)
            .await?;
            Ok(())
        }
        Err(e) => Err(mark_failed(state, p, "Stripe Checkout", &e).await),
    }
}

async fn start_crypto(state: &AppState, p: &Purchase, currency: Option<CryptoCurrency>) -> ApiResult<()> {
    let (Some(provider), Some(currency)) = (&state.payments.crypto, currency) else {
        return Ok(());
    };
    let order = CryptoOrder {
        purchase_id: p.id,
        amount_usd: p.amount_usd,
        currency,
        description: format!("{} ({})", p.plan_name, p.id),
        callback_url: format!("{}/v1/webhooks/{}", state.config.public_url, provider.name()),
    };
    match provider.create_payment(&order).await {
        Ok(invoice) => {
            sqlx::query(
                "UPDATE purchases SET provider_ref = coalesce(provider_ref, $2), pay_address = $3, pay_amount = $4,
                    updated_at = now() WHERE id = $1",
            )
            .bind(p.id)
            .bind(&invoice.provider_ref)
            .bind(&invoice.pay_address)
            .bind(invoice.pay_amount)
            .execute(&state.pool)
            .await?;
            Ok(())
        }
        Err(e) => Err(mark_failed(state, p, "the crypto payment", &e).await),
    }
}

/// The processor refused or failed: the purchase can never be paid, so it is marked failed.
async fn mark_failed(state: &AppState, p: &Purchase, what: &str, e: &str) -> ApiError {
    let result = async {
        let mut tx = state.pool.begin().await?;
        if let Some(locked) = model::lock(&mut tx, p.id).await? {
            fulfil::close(
                &mut tx,
                &locked,
                "failed",
                "system",
                &format!("creating {what} failed: {e}"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(db) = result {
        return db;
    }
    unavailable(&format!("creating {what}"), e)
}

/// One purchase (`invoice_number` once paid).
#[utoipa::path(get, path = "/v1/purchases/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "purchase id")),
    security(("admin_token" = [])),
    responses((status = 200, body = Purchase), (status = 404, body = ErrorBody)))]
async fn get_purchase(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Purchase>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(model::fetch(&mut conn, id).await?))
}

/// The account's purchases, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/purchases", tag = "payments",
    params(("id" = Uuid, Path, description = "account id"), PageParams),
    security(("admin_token" = [])),
    responses((status = 200, body = Page<Purchase>), (status = 404, body = ErrorBody)))]
async fn list_purchases(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Purchase>>> {
    Ok(Json(list_for(&state, account_id, &page).await?))
}

async fn list_for(state: &AppState, account_id: Uuid, page: &PageParams) -> ApiResult<Page<Purchase>> {
    let limit = page.limit()?;
    let after: Option<(DateTime<Utc>, Uuid)> = page.after()?;
    let mut conn = state.pool.acquire().await?;
    crate::accounts::fetch(&mut conn, account_id).await?;
    let rows: Vec<Purchase> = sqlx::query_as(&format!(
        "{SELECT} WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(account_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(paginate(rows, limit, |p| (p.created_at, p.id), |p| p))
}

/// The caller's own purchases, newest first (customer API key). Notes meant for the operator
/// (`review_note`) are left out.
#[utoipa::path(get, path = "/v1/me/purchases", tag = "me", params(PageParams),
    security(("api_key" = []), ("customer_bearer" = [])),
    responses((status = 200, body = Page<Purchase>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn my_purchases(
    customer: Customer,
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Purchase>>> {
    let mut page = list_for(&state, customer.account_id, &page).await?;
    for p in &mut page.data {
        p.review_note = None;
    }
    Ok(Json(page))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_purchase, list_purchases))
        .routes(routes!(get_purchase))
        .routes(routes!(my_purchases))
}
