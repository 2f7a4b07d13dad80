//! The stored price table: reading it, the in-process [`PriceCache`] that follows the database's
//! price version, seeding the shipped tables at start and adding a version.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use metering::{PriceEntry, PriceTable};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::audit::{self, Audit};
use crate::error::{ApiError, ApiResult};
use crate::sync;

/// The price table in force in this process, with the database price version it was read at.
pub struct PriceCache {
    factor: Decimal,
    /// The upstream workspace's default `inference_geo` (`UPSTREAM_INFERENCE_GEO`).
    default_inference_geo: Option<String>,
    current: RwLock<(i64, Arc<PriceTable>)>,
}

async fn read_table(conn: &mut PgConnection, factor: Decimal) -> ApiResult<PriceTable> {
    let rows: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT entry FROM price_versions ORDER BY model, effective_from")
            .fetch_all(conn)
            .await?;
    let entries = rows
        .into_iter()
        .map(|(v,)| serde_json::from_value::<PriceEntry>(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("a stored price entry does not parse: {e}")))?;
    PriceTable::new(entries, factor).map_err(|e| ApiError::Internal(format!("stored price table: {e}")))
}

impl PriceCache {
    pub async fn load(
        pool: &PgPool,
        factor: Decimal,
        default_inference_geo: Option<String>,
    ) -> ApiResult<Self> {
        let mut conn = pool.acquire().await?;
        let (_, prices_version) = sync::current(&mut conn).await?;
        let table = read_table(&mut conn, factor)
            .await?
            .with_default_inference_geo(default_inference_geo.clone());
        Ok(Self {
            factor,
            default_inference_geo,
            current: RwLock::new((prices_version, Arc::new(table))),
        })
    }

    pub fn factor(&self) -> Decimal {
        self.factor
    }

    /// The table as of `prices_version` (read by the caller in its transaction), reloaded first
    /// when the database has a newer one.
    pub async fn at(&self, conn: &mut PgConnection, prices_version: i64) -> ApiResult<Arc<PriceTable>> {
        {
            let cur = self.current.read().await;
            if cur.0 >= prices_version {
                return Ok(cur.1.clone());
            }
        }
        let table = Arc::new(
            read_table(conn, self.factor)
                .await?
                .with_default_inference_geo(self.default_inference_geo.clone()),
        );
        let mut cur = self.current.write().await;
        if cur.0 < prices_version {
            *cur = (prices_version, table.clone());
        }
        Ok(table)
    }

    pub async fn latest(&self, conn: &mut PgConnection) -> ApiResult<Arc<PriceTable>> {
        let (_, prices_version) = sync::current(conn).await?;
        self.at(conn, prices_version).await
    }
}

/// Applies each shipped price table the database has not had yet ([`metering::price::DEFAULT_TABLES`],
/// oldest first): its versions are added, and earlier versions stay, so usage already recorded
/// keeps its price; a table's versions take effect from their own `effective_from`. Answers the
/// sources applied.
///
/// An operator's prices win over shipped ones: a shipped version is left out when the database has
/// a version of that model at the same instant, when an admin has priced that model (the admin's
/// price would otherwise be replaced from the shipped version's date, perhaps by a lower one), and
/// when it would make the table invalid (say an admin's alias names the model): each left out is
/// logged and listed in the audit entry, and the admin adds it with `PUT /v1/prices` if wanted.
pub async fn seed_defaults(pool: &PgPool) -> ApiResult<Vec<&'static str>> {
    let mut applied = Vec::new();
    let mut tx = pool.begin().await?;
    // Two control planes starting together apply each table once.
    sqlx::query("SELECT pg_advisory_xact_lock(7242651)")
        .execute(&mut *tx)
        .await?;
    let seeded: Vec<String> = sqlx::query_scalar("SELECT source FROM price_seeds")
        .fetch_all(&mut *tx)
        .await?;
    let factor = metering::price::default_price_factor();
    for (source, json) in metering::price::DEFAULT_TABLES {
        if seeded.iter().any(|s| s == source) {
            continue;
        }
        let shipped = metering::price::entries_of(json)
            .map_err(|e| ApiError::Internal(format!("the shipped price table {source} is invalid: {e}")))?;
        let existing: Vec<(String, DateTime<Utc>, String)> =
            sqlx::query_as("SELECT model, effective_from, actor FROM price_versions")
                .fetch_all(&mut *tx)
                .await?;
        let mut table = read_table(&mut tx, factor).await?.entries().to_vec();
        let mut added = Vec::new();
        let mut left_out: Vec<String> = Vec::new();
        for e in shipped {
            let why = if existing
                .iter()
                .any(|(m, t, _)| *m == e.model && *t == e.effective_from)
            {
                Some("a version at that instant exists")
            } else if existing
                .iter()
                .any(|(m, _, actor)| *m == e.model && actor != "system")
            {
                Some("an admin has priced this model")
            } else {
                let mut trial = table.clone();
                trial.push(e.clone());
                PriceTable::new(trial, factor)
                    .err()
                    .map(|_| "it would make the table invalid (an alias names the model?)")
            };
            match why {
                Some(why) => {
                    tracing::warn!(source, model = %e.model, why, "a shipped price version was left out");
                    left_out.push(format!("{}: {why}", e.version()));
                }
                None => {
                    table.push(e.clone());
                    added.push(e);
                }
            }
        }
        let audit = Audit {
            actor: "system",
            action: "price.seed",
            target: "prices".into(),
            reason: Some("shipped price table"),
            details: serde_json::json!({ "source": source, "entries": added.len(), "left_out": left_out }),
        };
        audit::record(&mut tx, audit).await?;
        let version = sync::bump_prices(&mut tx).await?;
        for e in &added {
            insert_version(&mut tx, e, "system", Some(source), version).await?;
        }
        sqlx::query("INSERT INTO price_seeds (source) VALUES ($1)")
            .bind(source)
            .execute(&mut *tx)
            .await?;
        applied.push(source);
    }
    tx.commit().await?;
    Ok(applied)
}

pub(super) async fn insert_version(
    conn: &mut PgConnection,
    e: &PriceEntry,
    actor: &str,
    reason: Option<&str>,
    version: i64,
) -> ApiResult<()> {
    let entry = serde_json::to_value(e).map_err(|e| ApiError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO price_versions (id, model, effective_from, entry, actor, reason, sync_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::new_v4())
    .bind(&e.model)
    .bind(e.effective_from)
    .bind(entry)
    .bind(actor)
    .bind(reason)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}
