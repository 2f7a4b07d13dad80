//! The audit log's writer: every action that moves money or changes access is recorded, with who,
//! when and why, in the transaction that does it. `GET /v1/audit` reads it (`audit_log.rs`).

use sqlx::PgConnection;

/// One action to record.
pub struct Audit<'a> {
    pub actor: &'a str,
    pub action: &'static str,
    pub target: String,
    pub reason: Option<&'a str>,
    pub details: serde_json::Value,
}

/// Records `a` in the caller's transaction, so it commits or rolls back with the change it describes.
pub async fn record(conn: &mut PgConnection, a: Audit<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (actor, action, target, reason, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(a.actor)
        .bind(a.action)
        .bind(a.target)
        .bind(a.reason)
        .bind(a.details)
        .execute(conn)
        .await?;
    Ok(())
}
