//! A customer signs in with email and password, and signs out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::csrf::{check_login_csrf, login_form_cookie, with_cookie};
use super::password::{blocking, dummy_hash, verify_password};
use super::throttle::{
    failures, record_failure, too_many, ClientIp, MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP,
};
use crate::dashboard::html::{notice, page, Nav};
use crate::dashboard::session::{self, csrf_for, CustomerSession, Kind, NoFields, PlainForm, Posted};
use crate::dashboard::PageResult;
use crate::state::AppState;

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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/login", get(customer_login_form).post(customer_login))
        .route("/dashboard/logout", post(customer_logout))
}
