//! Password links: an admin issues a one-time link (`POST /v1/accounts/{id}/password-link`, or the
//! console's button) with which the customer sets (invite) or resets the dashboard password.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::csrf::with_cookie;
use super::password::{blocking, hash_password, new_password_problem, MIN_PASSWORD};
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::dashboard::html::{notice, page, Nav};
use crate::dashboard::session::{self, new_token, token_hash, PlainForm};
use crate::dashboard::{PageError, PageResult};
use crate::error::{constraint_of, ApiError, ApiResult, ErrorBody};
use crate::extract::ApiPath;
use crate::state::AppState;

const INVITE_TTL_HOURS: i64 = 72;
const RESET_TTL_HOURS: i64 = 24;

/// The answer of `POST /v1/accounts/{id}/password-link`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PasswordLink {
    pub account_id: Uuid,
    /// `invite` (the account has no password yet) or `reset`.
    pub purpose: String,
    /// The one-time link to pass on to the customer; it is shown only here.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Creates a one-time link (and voids the account's earlier unused ones).
pub async fn issue_link(state: &AppState, account_id: Uuid, actor: &str) -> ApiResult<PasswordLink> {
    let mut tx = state.pool.begin().await?;
    let account = crate::accounts::fetch(&mut tx, account_id).await?;
    let has_login: Option<Uuid> =
        sqlx::query_scalar("SELECT account_id FROM customer_logins WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    let taken: Option<Uuid> = sqlx::query_scalar(
        "SELECT account_id FROM customer_logins WHERE email_lower = $1 AND account_id <> $2",
    )
    .bind(account.email.to_lowercase())
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(other) = taken {
        return Err(ApiError::conflict(format!(
            "account {other} already signs in with {}; give this account another email first",
            account.email
        )));
    }
    let (purpose, hours) = match has_login {
        Some(_) => ("reset", RESET_TTL_HOURS),
        None => ("invite", INVITE_TTL_HOURS),
    };
    let token = new_token();
    let expires_at = Utc::now() + Duration::hours(hours);
    sqlx::query("UPDATE password_links SET expires_at = now() WHERE account_id = $1 AND used_at IS NULL AND expires_at > now()")
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO password_links (token_hash, account_id, purpose, created_by, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&token))
    .bind(account_id)
    .bind(purpose)
    .bind(actor)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let audit = Audit {
        actor,
        action: "login.link",
        target: format!("account:{account_id}"),
        reason: None,
        details: serde_json::json!({ "purpose": purpose, "expires_at": expires_at }),
    };
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(PasswordLink {
        account_id,
        purpose: purpose.to_owned(),
        url: format!("{}/dashboard/password?token={token}", state.config.public_url),
        expires_at,
    })
}

/// Creates a one-time link with which the customer sets (invite) or resets the dashboard password.
/// There is no mail server: pass the link on. A new link voids the earlier unused ones.
#[utoipa::path(post, path = "/v1/accounts/{id}/password-link", tag = "accounts",
    params(("id" = Uuid, Path, description = "account id")),
    security(("admin_token" = [])),
    responses((status = 201, body = PasswordLink), (status = 404, body = ErrorBody),
        (status = 409, description = "another account signs in with this email", body = ErrorBody)))]
async fn post_password_link(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(account_id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<PasswordLink>)> {
    let link = issue_link(&state, account_id, &admin.actor).await?;
    Ok((StatusCode::CREATED, Json(link)))
}

/// A live link: its account id and email.
async fn live_link(state: &AppState, token: &str) -> PageResult<(Uuid, String)> {
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT a.id, a.email FROM password_links l JOIN accounts a ON a.id = l.account_id
         WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > now()",
    )
    .bind(token_hash(token))
    .fetch_optional(&state.pool)
    .await?;
    row.ok_or_else(|| {
        PageError::NotFound(
            "This link is invalid, already used or expired. Ask support for a new one.".into(),
        )
    })
}

fn password_page(token: &str, email: &str, error: Option<&str>) -> Markup {
    page(
        "Set your password",
        Nav::None,
        html! {
            @if let Some(e) = error { (notice("error", e)) }
            form.stack.card method="post" action="/dashboard/password" {
                input type="hidden" name="token" value=(token);
                p { "Account: " strong { (email) } }
                label { "New password (at least " (MIN_PASSWORD) " characters)"
                    input type="password" name="password" required minlength=(MIN_PASSWORD) autocomplete="new-password"; }
                label { "Repeat it" input type="password" name="confirm" required autocomplete="new-password"; }
                button type="submit" { "Set password and sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn password_form(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
) -> PageResult<Html<String>> {
    let (_, email) = live_link(&state, &q.token).await?;
    Ok(Html(password_page(&q.token, &email, None).into_string()))
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// Sets the password (the link is the secret that authorises it), ends the account's other
/// sessions and signs in.
async fn password_set(
    State(state): State<AppState>,
    PlainForm(_, form): PlainForm<PasswordForm>,
) -> PageResult<Response> {
    let (account_id, email) = live_link(&state, &form.token).await?;
    if let Some(p) = new_password_problem(&form.password, &form.confirm, &email) {
        let body = password_page(&form.token, &email, Some(&p));
        return Ok((StatusCode::BAD_REQUEST, Html(body.into_string())).into_response());
    }
    let password = form.password.clone();
    let hash = blocking(move || hash_password(&password)).await??;
    let mut tx = state.pool.begin().await?;
    let used = sqlx::query(
        "UPDATE password_links SET used_at = now()
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
    )
    .bind(token_hash(&form.token))
    .execute(&mut *tx)
    .await?;
    if used.rows_affected() != 1 {
        return Err(PageError::NotFound(
            "This link has just been used or has expired.".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO customer_logins (account_id, email_lower, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (account_id) DO UPDATE SET email_lower = $2, password_hash = $3, updated_at = now()",
    )
    .bind(account_id)
    .bind(email.to_lowercase())
    .bind(&hash)
    .execute(&mut *tx)
    .await
    .map_err(|e| match constraint_of(&e) {
        Some("customer_logins_email_lower_key") => PageError::Refused(
            StatusCode::CONFLICT,
            "Another account already signs in with this email.".into(),
        ),
        _ => e.into(),
    })?;
    sqlx::query("DELETE FROM web_sessions WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
    let actor = format!("customer {account_id}");
    let audit = Audit {
        actor: &actor,
        action: "login.password_set",
        target: format!("account:{account_id}"),
        reason: None,
        details: serde_json::json!({}),
    };
    audit::record(&mut tx, audit).await?;
    tx.commit().await?;
    let set = session::open_customer(&state, account_id).await?;
    Ok(with_cookie(Redirect::to("/dashboard").into_response(), Some(set)))
}

pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_password_link))
}

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard/password", get(password_form).post(password_set))
}
