//! Signing in and out: customers with email and password (argon2id), the password set through a
//! one-time link an admin generates (`POST /v1/accounts/{id}/password-link`, or the console's
//! button), so that an API key alone never opens the dashboard; admins by pasting the admin token
//! into a form (never in a URL).
//!
//! Failed sign-ins are rate-limited in PostgreSQL (so every instance counts them): at most
//! 5 failures per email and 20 per client address in 15 minutes for customers, 10 per address for
//! the console; past that even a correct password is refused until the window has moved on. The
//! sign-in forms carry a token bound to a short-lived cookie (login CSRF).

use std::net::SocketAddr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::html::{notice, page, Nav};
use super::session::{self, cookie, csrf_for, new_token, token_hash, Kind, PlainForm, Posted};
use super::session::{AdminSession, CustomerSession};
use super::{PageError, PageResult};
use crate::audit::{self, Audit};
use crate::auth::Admin;
use crate::error::{constraint_of, ApiError, ApiResult, ErrorBody};
use crate::extract::ApiPath;
use crate::state::AppState;

const WINDOW_MINUTES: i64 = 15;
const MAX_FAILURES_PER_EMAIL: i64 = 5;
const MAX_FAILURES_PER_IP: i64 = 20;
const MAX_ADMIN_FAILURES_PER_IP: i64 = 10;
const INVITE_TTL_HOURS: i64 = 72;
const RESET_TTL_HOURS: i64 = 24;
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 200;
const LOGIN_COOKIE: &str = "cs_login";

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

fn hash_password(password: &str) -> Result<String, PageError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PageError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PageError::Internal(format!("argon2: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Verifies against a fixed hash when the email is unknown, so both cases take as long.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> PageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PageError::Internal(format!("password hashing task: {e}")))
}

async fn failures(state: &AppState, scope: &str, column: &str, value: &str) -> PageResult<i64> {
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

async fn record_failure(state: &AppState, scope: &str, email: Option<&str>, ip: &str) -> PageResult<()> {
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

fn too_many() -> PageError {
    PageError::TooManyAttempts(format!(
        "Too many failed sign-ins. Wait {WINDOW_MINUTES} minutes and try again, or ask support for a password reset link."
    ))
}

/// A sign-in form's token: bound to the `cs_login` cookie set when the form was served.
fn login_form_cookie(headers: &HeaderMap, path: &str) -> (String, Option<HeaderValue>) {
    match cookie(headers, LOGIN_COOKIE).filter(|c| c.len() >= 32) {
        Some(existing) => (existing.to_owned(), None),
        None => {
            let token = new_token();
            let set = format!("{LOGIN_COOKIE}={token}; Path={path}; Max-Age=3600; HttpOnly; SameSite=Strict");
            (token.clone(), HeaderValue::from_str(&set).ok())
        }
    }
}

fn check_login_csrf(headers: &HeaderMap, given: &str) -> PageResult<()> {
    let expected = cookie(headers, LOGIN_COOKIE).map(csrf_for).unwrap_or_default();
    if !expected.is_empty() && metering::apikey::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(PageError::Csrf)
    }
}

fn with_cookie(mut resp: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn customer_login_page(csrf: &str, email: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        Nav::None,
        html! {
            @if let Some(e) = error { (notice("error", e)) }
            form.stack.card method="post" action="/dashboard/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Email" input type="email" name="email" value=(email) required autocomplete="username"; }
                label { "Password" input type="password" name="password" required autocomplete="current-password"; }
                button type="submit" { "Sign in" }
            }
            p.muted { "No password yet, or forgot it? Ask support for a sign-in link." }
        },
    )
}

async fn customer_login_form(headers: HeaderMap, State(state): State<AppState>) -> PageResult<Response> {
    if CustomerSession::load(&headers, &state).await?.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let (token, set) = login_form_cookie(&headers, "/dashboard");
    let body = customer_login_page(&csrf_for(&token), "", None);
    Ok(with_cookie(Html(body.into_string()).into_response(), set))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn customer_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PlainForm(headers, form): PlainForm<LoginForm>,
) -> PageResult<Response> {
    check_login_csrf(&headers, &form.csrf)?;
    let email = form.email.trim().to_lowercase();
    let refuse = |status: StatusCode, message: &str| {
        let body = customer_login_page(&form.csrf, &email, Some(message));
        (status, Html(body.into_string())).into_response()
    };
    if failures(&state, "customer", "email", &email).await? >= MAX_FAILURES_PER_EMAIL
        || failures(&state, "customer", "ip", &ip).await? >= MAX_FAILURES_PER_IP
    {
        return Ok(refuse(StatusCode::TOO_MANY_REQUESTS, &too_many().to_string()));
    }
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT account_id, password_hash FROM customer_logins WHERE email_lower = $1")
            .bind(&email)
            .fetch_optional(&state.pool)
            .await?;
    let stored = row
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |r| r.1.clone());
    let password = form.password.clone();
    let valid = blocking(move || verify_password(&password, &stored)).await?;
    let Some((account_id, _)) = row.filter(|_| valid) else {
        record_failure(&state, "customer", Some(&email), &ip).await?;
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "The email or the password is wrong.",
        ));
    };
    sqlx::query("DELETE FROM login_failures WHERE scope = 'customer' AND email = $1")
        .bind(&email)
        .execute(&state.pool)
        .await?;
    let set = session::open_customer(&state, account_id).await?;
    Ok(with_cookie(Redirect::to("/dashboard").into_response(), Some(set)))
}

#[derive(Deserialize)]
struct NoFields {}

async fn customer_logout(
    State(state): State<AppState>,
    posted: Posted<CustomerSession, NoFields>,
) -> PageResult<Response> {
    let clear = session::close(&state, Kind::Customer, posted.session.token()).await?;
    Ok(with_cookie(
        Redirect::to("/dashboard/login").into_response(),
        Some(clear),
    ))
}

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
    let length = form.password.chars().count();
    let problem = if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Some(format!(
            "The password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters."
        ))
    } else if form.password != form.confirm {
        Some("The two passwords differ.".to_owned())
    } else if form.password.to_lowercase() == email.to_lowercase() {
        Some("The password must not be your email.".to_owned())
    } else {
        None
    };
    if let Some(p) = problem {
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

fn admin_login_page(csrf: &str, error: Option<&str>) -> Markup {
    page(
        "Console sign-in",
        Nav::None,
        html! {
            @if let Some(e) = error { (notice("error", e)) }
            form.stack.card method="post" action="/admin/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Admin token" input type="password" name="token" required autocomplete="off"; }
                label { "Your name (kept in the audit log)" input type="text" name="name" maxlength="40" required; }
                button type="submit" { "Open the console" }
            }
        },
    )
}

async fn admin_login_form(headers: HeaderMap) -> Response {
    let (token, set) = login_form_cookie(&headers, "/admin");
    let body = admin_login_page(&csrf_for(&token), None);
    with_cookie(Html(body.into_string()).into_response(), set)
}

#[derive(Deserialize)]
struct AdminLoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
}

async fn admin_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    PlainForm(headers, form): PlainForm<AdminLoginForm>,
) -> PageResult<Response> {
    check_login_csrf(&headers, &form.csrf)?;
    let refuse = |status: StatusCode, message: &str| {
        (
            status,
            Html(admin_login_page(&form.csrf, Some(message)).into_string()),
        )
            .into_response()
    };
    if failures(&state, "admin", "ip", &ip).await? >= MAX_ADMIN_FAILURES_PER_IP {
        return Ok(refuse(StatusCode::TOO_MANY_REQUESTS, &too_many().to_string()));
    }
    let token = form.token.trim();
    if !metering::apikey::constant_time_eq(token.as_bytes(), state.config.admin_token.as_bytes()) {
        record_failure(&state, "admin", None, &ip).await?;
        return Ok(refuse(StatusCode::UNAUTHORIZED, "That is not the admin token."));
    }
    let name: String = form
        .name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    let name = if name.is_empty() { "admin".to_owned() } else { name };
    let set = session::open_admin(&state, &name).await?;
    Ok(with_cookie(Redirect::to("/admin").into_response(), Some(set)))
}

async fn admin_logout(
    State(state): State<AppState>,
    posted: Posted<AdminSession, NoFields>,
) -> PageResult<Response> {
    let clear = session::close(&state, Kind::Admin, posted.session.token()).await?;
    Ok(with_cookie(
        Redirect::to("/admin/login").into_response(),
        Some(clear),
    ))
}

pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_password_link))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/login", get(customer_login_form).post(customer_login))
        .route("/dashboard/logout", axum::routing::post(customer_logout))
        .route("/dashboard/password", get(password_form).post(password_set))
        .route("/admin/login", get(admin_login_form).post(admin_login))
        .route("/admin/logout", axum::routing::post(admin_logout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
