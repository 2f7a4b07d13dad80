//! Payments: customers buy credit plans by card (Stripe Checkout), cryptocurrency (a crypto
//! processor behind [`crypto::CryptoProvider`], NOWPayments first) or through a Telegram sale that
//! support records and confirms. Every paid purchase is credited exactly once and invoiced.
//!
//! The state machine (`purchases.status`, enforced here under the row lock and by a trigger):
//! `pending -> paid | held | expired | failed`, `held -> paid | failed`, `paid -> refunded`.
//! Crediting, invoicing and marking paid happen in one transaction ([`fulfil::pay`]); the
//! ledger's idempotency key `purchase:<id>` makes a second credit impossible even if the status
//! check were bypassed. Processor callbacks are verified on the raw bytes, recorded by event id in
//! the same transaction that applies them, and answered 2xx only after the commit.

pub mod billing;
pub mod crypto;
pub mod expiry;
pub mod fulfil;
pub mod model;
pub mod nowpayments;
pub mod purchases;
pub mod review;
pub mod stripe;

use std::sync::Arc;
use std::time::Duration;

use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::config::PaymentConfig;
use crate::error::ApiError;
use crate::AppState;

/// The system ledger account `sales` (seeded by migration 0001): paid purchases move credits from
/// it to the customer, refunds and chargebacks move them back. Its balance is minus the credits sold.
pub const SALES: Uuid = Uuid::from_u128(3);

/// Timeout of one call to a processor's API.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

/// The configured processors. Secrets stay inside the clients and are never logged.
pub struct Payments {
    pub stripe: Option<stripe::StripeClient>,
    pub stripe_webhook_secret: Option<String>,
    pub crypto: Option<Arc<dyn crypto::CryptoProvider>>,
}

impl Payments {
    pub fn new(config: &PaymentConfig) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .user_agent("claudestore-control-plane")
            .build()
            .map_err(|e| ApiError::Internal(format!("cannot build the HTTP client: {e}")))?;
        let stripe = config
            .stripe_secret_key
            .as_ref()
            .map(|key| stripe::StripeClient::new(http.clone(), &config.stripe_api_base, key));
        let crypto = match (&config.nowpayments_api_key, &config.nowpayments_ipn_secret) {
            (Some(key), Some(secret)) => Some(Arc::new(nowpayments::NowPayments::new(
                http,
                &config.nowpayments_api_base,
                key,
                secret,
            )) as Arc<dyn crypto::CryptoProvider>),
            _ => None,
        };
        Ok(Self {
            stripe,
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            crypto,
        })
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(purchases::router())
        .merge(review::router())
        .merge(stripe::router())
        .merge(nowpayments::router())
        .merge(billing::router())
}
