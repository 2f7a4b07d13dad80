//! What every handler shares: the pool, the configuration, the price table, the payment
//! processors' clients and the database's health.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Config;
use crate::db;
use crate::error::ApiError;
use crate::payments::processors::Payments;
use crate::prices::store::PriceCache;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub prices: Arc<PriceCache>,
    /// The payment processors' clients (configured or not).
    pub payments: Arc<Payments>,
    /// Whether the database answers (see [`db::Health`]).
    pub db: Arc<db::Health>,
}

impl AppState {
    /// Loads the price table from the (migrated, seeded) database.
    pub async fn new(pool: PgPool, config: Config) -> Result<Self, ApiError> {
        let prices =
            PriceCache::load(&pool, config.price_factor, config.upstream_inference_geo.clone()).await?;
        let payments = Payments::new(&config.payments)?;
        Ok(Self {
            payments: Arc::new(payments),
            db: db::Health::watch(pool.clone()),
            pool,
            config: Arc::new(config),
            prices: Arc::new(prices),
        })
    }
}
