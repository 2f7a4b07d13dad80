//! Failed sign-ins, counted in PostgreSQL so that every instance sees them: at most 5 failures per
//! email and 20 per client address in 15 minutes for customers, 10 per address for the console.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::dashboard::{PageError, PageResult};
use crate::state::AppState;

const WINDOW_MINUTES: i64 = 15;
pub(super) const MAX_FAILURES_PER_EMAIL: i64 = 5;
pub(super) const MAX_FAILURES_PER_IP: i64 = 20;
pub(super) const MAX_ADMIN_FAILURES_PER_IP: i64 = 10;

/// The client's address as the TCP peer (behind a reverse proxy this is the proxy: every client
/// then shares the per-address limit, and the per-email limit still holds).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        Ok(Self(ip))
    }
}

pub(super) async fn failures(state: &AppState, scope: &str, column: &str, value: &str) -> PageResult<i64> {
    let sql = format!(
        "SELECT count(*) FROM login_failures WHERE scope = $1 AND {column} = $2
         AND created_at > now() - make_interval(mins => $3)"
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(scope)
        .bind(value)
        .bind(WINDOW_MINUTES as i32)
        .fetch_one(&state.pool)
        .await?)
}

pub(super) async fn record_failure(
    state: &AppState,
    scope: &str,
    email: Option<&str>,
    ip: &str,
) -> PageResult<()> {
    sqlx::query("DELETE FROM login_failures WHERE created_at < now() - make_interval(mins => $1)")
        .bind(WINDOW_MINUTES as i32)
        .execute(&state.pool)
        .await?;
    sqlx::query("INSERT INTO login_failures (scope, email, ip) VALUES ($1, $2, $3)")
        .bind(scope)
        .bind(email)
        .bind(ip)
        .execute(&state.pool)
        .await?;
    Ok(())
}

pub(super) fn too_many() -> PageError {
    PageError::TooManyAttempts(format!(
        "Too many failed sign-ins. Wait {WINDOW_MINUTES} minutes and try again, or ask support for a password reset link."
    ))
}
