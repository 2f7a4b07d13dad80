//! Database set-up at start: create the database when it does not exist, connect, run the
//! embedded migrations, seed the default prices.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};

use crate::error::ApiError;

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
            // Another instance created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
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
        .acquire_timeout(Duration::from_secs(10))
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
    crate::MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| ApiError::Internal(format!("migrations failed: {e}")))?;
    for source in crate::prices::seed_defaults(&pool).await? {
        tracing::info!(source, "added the versions of a shipped price table");
    }
    Ok(pool)
}
