//! A signed-in customer changes their password: the current one first (a session left open on a
//! shared computer does not let someone else lock the owner out), the new one twice. The
//! account's other sessions end; this one stays.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::password::{blocking, hash_password, verify_password, MAX_PASSWORD, MIN_PASSWORD};
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

/// What is wrong with a new password, in words.
fn problem(password: &str, confirm: &str, email: &str) -> Option<String> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Some(format!(
            "The new password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters."
        ))
    } else if password != confirm {
        Some("The two new passwords differ.".to_owned())
    } else if password.to_lowercase() == email.to_lowercase() {
        Some("The password must not be your email.".to_owned())
    } else {
        None
    }
}

async fn change(
    State(state): State<AppState>,
    Submitted { session, form, claim }: Submitted<CustomerSession, ChangeForm>,
) -> PageResult<Response> {
    let changed = change_password(&state, &session, form).await;
    claim.finish(&state, changed).await
}

async fn change_password(state: &AppState, session: &CustomerSession, form: ChangeForm) -> PageResult<Done> {
    let refused = |why: String| PageError::Refused(StatusCode::BAD_REQUEST, why);
    if let Some(p) = problem(&form.password, &form.confirm, &session.email) {
        return Err(refused(p));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_password_is_long_enough_confirmed_and_not_the_email() {
        assert!(problem("short", "short", "a@b.c").is_some_and(|p| p.contains("10 to 200")));
        assert!(problem("long enough one", "long enough two", "a@b.c").is_some_and(|p| p.contains("differ")));
        assert!(problem("Ada@Example.com", "Ada@Example.com", "ada@example.com")
            .is_some_and(|p| p.contains("email")));
        assert_eq!(problem("long enough one", "long enough one", "a@b.c"), None);
    }
}
