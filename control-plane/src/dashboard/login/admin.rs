//! An admin opens the console by pasting the admin token into a form (never in a URL), and signs
//! out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::csrf::{check_login_csrf, login_form_cookie, with_cookie};
use super::throttle::{failures, record_failure, too_many, ClientIp, MAX_ADMIN_FAILURES_PER_IP};
use crate::dashboard::html::{notice, page, Nav};
use crate::dashboard::session::{self, csrf_for, AdminSession, Kind, NoFields, PlainForm, Posted};
use crate::dashboard::PageResult;
use crate::state::AppState;

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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/login", get(admin_login_form).post(admin_login))
        .route("/admin/logout", post(admin_logout))
}
