//! Database set-up at start: create the database when it does not exist, connect, run the
//! embedded migrations, seed the default prices.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};

use crate::error::ApiError;

/// The embedded migrations (the workspace's top-level `migrations/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

fn options(url: &str) -> Result<PgConnectOptions, ApiError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| ApiError::Internal(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))
}

/// Creates the database named in `url` when it does not exist (connecting to `postgres` for that).
pub async fn create_database_if_missing(url: &str) -> Result<(), ApiError> {
    let opts = options(url)?;
    let name = opts.get_database().unwrap_or("postgres").to_owned();
    let mut conn = opts.clone().database("postgres").connect().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another instance created it at the same moment: PostgreSQL says so as
            // duplicate_database, or, when both inserted the catalog row at once, as a unique
            // violation of pg_database's name index.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// The pool. Its connections plan every statement for the parameters and tables of the moment
/// (`plan_cache_mode = force_custom_plan`): a prepared statement otherwise settles on a generic plan
/// after five runs and keeps it for the connection's life, and one made while a table was small
/// (a new database) reads the whole table on every run once it has grown, until an ANALYZE, which
/// never comes where autovacuum is off. Planning costs tens of microseconds per statement; a full
/// scan of a grown ledger costs milliseconds to seconds.
pub async fn connect(url: &str) -> Result<PgPool, ApiError> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        // Not longer: while the database is out of reach, a request waits this long for a
        // connection before its 503 (and `Health` answers the ones after it at once).
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A statement after connecting rather than a startup option: connection poolers in
        // front of PostgreSQL refuse or drop startup options.
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET plan_cache_mode = force_custom_plan").await?;
                Ok(())
            })
        })
        .connect_with(options(url)?)
        .await?;
    Ok(pool)
}

/// Everything before serving: database, migrations, default prices.
pub async fn prepare(url: &str) -> Result<PgPool, ApiError> {
    create_database_if_missing(url).await?;
    let pool = connect(url).await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| ApiError::Internal(format!("migrations failed: {e}")))?;
    for source in crate::prices::store::seed_defaults(&pool).await? {
        tracing::info!(source, "added the versions of a shipped price table");
    }
    Ok(pool)
}

/// How long a request waits for a connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A health check that takes longer says the database is down.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether the database answers, as the last check (or a request that could not reach it) found.
/// While it does not, requests that need it get 503 at once instead of each waiting for a
/// connection that will not come, and `/readyz` answers at once; a watcher checks again every
/// 250 ms until it answers (every second while it does).
pub struct Health {
    down: AtomicBool,
    pool: PgPool,
}

impl Health {
    /// Starts the watcher, which ends when the last holder of the returned handle is gone.
    pub fn watch(pool: PgPool) -> Arc<Health> {
        let health = Arc::new(Health {
            down: AtomicBool::new(false),
            pool,
        });
        let weak: Weak<Health> = Arc::downgrade(&health);
        tokio::spawn(async move {
            loop {
                let Some(h) = weak.upgrade() else { return };
                let up = h.check().await;
                let was_down = h.down.swap(!up, Ordering::Relaxed);
                if was_down && up {
                    tracing::info!("the database answers again");
                } else if !was_down && !up {
                    tracing::warn!("the database does not answer: requests that need it get 503");
                }
                drop(h);
                tokio::time::sleep(if up {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(250)
                })
                .await;
            }
        });
        health
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A request found the database out of reach: the next ones are answered at once, until the
    /// watcher's next check says otherwise.
    pub fn mark_down(&self) {
        self.down.store(true, Ordering::Relaxed);
    }

    /// A connection and `SELECT 1` within [`CHECK_TIMEOUT`].
    pub async fn check(&self) -> bool {
        let probe = async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await
        };
        matches!(tokio::time::timeout(CHECK_TIMEOUT, probe).await, Ok(Ok(_)))
    }
}
