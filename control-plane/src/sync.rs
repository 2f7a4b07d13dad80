//! The commit-ordered sync version. One counter row, incremented by `UPDATE ... RETURNING` inside
//! every transaction that changes keys, accounts (status or balance) or prices. The row lock is
//! held until commit, so versions are handed out in commit order: a reader that sees version V
//! sees every change committed at or below V. Callers bump as late as possible in their
//! transaction (it serialises committers) and stamp the changed rows with the version.

use sqlx::PgConnection;

/// Takes the next version for a change to keys or accounts.
pub async fn bump(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE sync_state SET version = version + 1 RETURNING version")
        .fetch_one(conn)
        .await
}

/// Takes the next version for a change to the price table.
pub async fn bump_prices(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE sync_state SET version = version + 1, prices_version = version + 1 RETURNING version",
    )
    .fetch_one(conn)
    .await
}

/// The last committed version and the version of the last price change.
pub async fn current(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT version, prices_version FROM sync_state")
        .fetch_one(conn)
        .await
}

pub fn to_wire(version: i64) -> u64 {
    u64::try_from(version).unwrap_or(0)
}
