//! The payment processors' clients, built once from the configuration and shared by the routes.

use std::sync::Arc;
use std::time::Duration;

use super::crypto::CryptoProvider;
use super::nowpayments::NowPayments;
use super::stripe::StripeClient;
use crate::config::PaymentConfig;
use crate::error::ApiError;

/// Timeout of one call to a processor's API.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

/// The configured processors. Secrets stay inside the clients and are never logged.
pub struct Payments {
    pub stripe: Option<StripeClient>,
    pub stripe_webhook_secret: Option<String>,
    pub crypto: Option<Arc<dyn CryptoProvider>>,
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
            .map(|key| StripeClient::new(http.clone(), &config.stripe_api_base, key));
        let crypto = match (&config.nowpayments_api_key, &config.nowpayments_ipn_secret) {
            (Some(key), Some(secret)) => {
                Some(
                    Arc::new(NowPayments::new(http, &config.nowpayments_api_base, key, secret))
                        as Arc<dyn CryptoProvider>,
                )
            }
            _ => None,
        };
        Ok(Self {
            stripe,
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            crypto,
        })
    }
}
