//! A signed-in customer changes their password: the current one first (a session left open on a
//! shared computer does not let someone else lock the owner out), the new one twice. The
//! account's other sessions end; this one stays. Wrong current passwords count as failed sign-ins
//! of the account's email: after as many as sign-in allows, the form is refused for a while too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::password::{blocking, hash_password, new_password_problem, verify_password};
use super::throttle::{failures, record_failure, too_many, ClientIp, MAX_FAILURES_PER_EMAIL};
use crate::audit::{self, Audit};
use crate::dashboard::form::{Done, Submitted};
use crate::dashboard::session::{token_hash, CustomerSession};
use crate::dashboard::{PageError, PageResult};
use crate::state::AppState;

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn change(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Submitted { session, form, claim }: Submitted<CustomerSession, ChangeForm>,
) -> PageResult<Response> {
    let changed = change_password(&state, &session, &ip, form).await;
    claim.finish(&state, changed).await
}

async fn change_password(
    state: &AppState,
    session: &CustomerSession,
    ip: &str,
    form: ChangeForm,
) -> PageResult<Done> {
    let refused = |why: String| PageError::Refused(StatusCode::BAD_REQUEST, why);
    if let Some(p) = new_password_problem(&form.password, &form.confirm, &session.email) {
        return Err(refused(p));
    }
    // The key the sign-in form counts failures under.
    let email = session.email.trim().to_lowercase();
    if failures(state, "customer", "email", &email).await? >= MAX_FAILURES_PER_EMAIL {
        return Err(too_many());
    }
    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM customer_logins WHERE account_id = $1")
            .bind(session.account_id)
            .fetch_optional(&state.pool)
            .await?;
    let current = form.current.clone();
    let matches = match stored {
        Some(hash) => blocking(move || verify_password(&current, &hash)).await?,
        None => false,
    };
    if !matches {
        record_failure(state, "customer", Some(&email), ip).await?;
        return Err(refused(
            "The current password is not right; nothing was changed.".into(),
        ));
    }
    let password = form.password.clone();
    let hash = blocking(move || hash_password(&password)).await??;
    let mut tx = state.pool.begin().await?;
    sqlx::query("UPDATE customer_logins SET password_hash = $2, updated_at = now() WHERE account_id = $1")
        .bind(session.account_id)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM web_sessions WHERE account_id = $1 AND token_hash <> $2")
        .bind(session.account_id)
        .bind(token_hash(session.token()))
        .execute(&mut *tx)
        .await?;
    let actor = session.actor();
    audit::record(
        &mut tx,
        Audit {
            actor: &actor,
            action: "login.password_change",
            target: format!("account:{}", session.account_id),
            reason: None,
            details: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Done::to(
        "/dashboard/settings",
        "Password changed. Your other signed-in browsers are signed out.",
    ))
}

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard/settings/password", post(change))
}
