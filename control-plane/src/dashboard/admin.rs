//! The admin console's accounts: search and create, one account's page (balance, status, credits,
//! keys, sign-in link, ledger). Accounts with a negative balance are marked. Every form posts once,
//! redirects and shows its result once ([`super::form`]); a new key or a password link is a secret
//! shown once. Credits go through [`super::console_credits`]. Changes go through the API.

use axum::extract::{Path, Query, State};
use axum::http::{Method, Uri};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use maud::html;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::console_account::{account_page, negative_mark, Extras};
use super::console_page::render;
use super::form::{self, Done, Submitted};
use super::html::{as_written, credits, when};
use super::login::link::PasswordLink;
use super::session::{AdminSession, NoFields};
use super::{ApiClient, PageResult};
use crate::accounts::Account;
use crate::keys::CreatedKey;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    name: String,
    email: String,
    status: String,
    balance: Decimal,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct SearchParams {
    #[serde(default)]
    q: String,
}

/// `%` and `_` in a search are literal.
fn like_pattern(q: &str) -> String {
    let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

async fn accounts(
    session: AdminSession,
    State(state): State<AppState>,
    Query(p): Query<SearchParams>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let done = form::outcome(&state, session.token(), &uri).await?;
    let q = p.q.trim();
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT a.id, a.name, a.email, a.status, l.balance, a.created_at
         FROM accounts a JOIN ledger_accounts l ON l.id = a.id
         WHERE $1 = '' OR a.name ILIKE $2 OR a.email ILIKE $2 OR a.id::text = $1
         ORDER BY a.created_at DESC, a.id DESC LIMIT 200",
    )
    .bind(q)
    .bind(like_pattern(q))
    .fetch_all(&state.pool)
    .await?;
    let body = html! {
        (form::notice(done.as_ref()))
        form.row method="get" action="/admin" {
            label { "Search name, email or id" input type="search" name="q" value=(q); }
            button.secondary type="submit" { "Search" }
        }
        div.table-wrap {
            table #accounts {
                thead { tr { th { "Name" } th { "Email" } th { "Status" } th.num { "Balance" } th.wide { "Created" } } }
                tbody {
                    @for a in &rows {
                        tr.negative[a.balance < Decimal::ZERO] {
                            td { a href={ "/admin/accounts/" (a.id) } { (a.name) } }
                            td { (a.email) }
                            td class={ "status-" (a.status) } { (a.status) }
                            td.num { (credits(a.balance)) (negative_mark(a.balance)) }
                            td.wide { (when(a.created_at)) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No account matches." } }
        h2 { "New account" }
        form.row.card #new-account method="post" action="/admin/accounts" {
            (form::fields(&session.csrf))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            label { "Email" input type="email" name="email" required maxlength="254"; }
            button type="submit" { "Create account" }
        }
    };
    Ok(render(&state, &session, "Accounts", body))
}

#[derive(Deserialize)]
struct NewAccountForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

async fn create_account(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Submitted { session, form, claim }: Submitted<AdminSession, NewAccountForm>,
) -> PageResult<Response> {
    let body = json!({ "name": form.name.trim(), "email": form.email.trim() });
    let created = api
        .json::<Account>(&session.actor(), Method::POST, "/v1/accounts", Some(&body))
        .await
        .map(|a| {
            Done::to(
                format!("/admin/accounts/{}", a.id),
                format!("Account {} created.", a.name),
            )
        });
    claim.finish(&state, created).await
}

/// Which secret a result carries, named in the address it redirects to.
#[derive(Deserialize)]
struct Shown {
    shown: Option<String>,
}

async fn account(
    session: AdminSession,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(s): Query<Shown>,
    uri: Uri,
) -> PageResult<Html<String>> {
    let done = form::outcome(&state, session.token(), &uri).await?;
    let extras = Extras {
        done,
        shown: s.shown.as_deref(),
        ..Extras::default()
    };
    account_page(&state, &session, id, extras).await
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: String,
}

async fn post_status(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, StatusForm>,
) -> PageResult<Response> {
    let reason = form.reason.trim();
    let body =
        json!({ "status": form.status, "reason": if reason.is_empty() { None } else { Some(reason) } });
    let changed = api
        .call(
            &session.actor(),
            Method::PATCH,
            &format!("/v1/accounts/{id}"),
            Some(&body),
        )
        .await
        .map(|()| {
            let said = if form.status == "suspended" {
                "Account suspended: its keys stop within seconds."
            } else {
                "Account reactivated."
            };
            Done::to(format!("/admin/accounts/{id}"), said)
        });
    claim.finish(&state, changed).await
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    name: String,
}

async fn post_key(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, NameForm>,
) -> PageResult<Response> {
    let body = json!({ "name": form.name });
    let created = api
        .json::<CreatedKey>(
            &session.actor(),
            Method::POST,
            &format!("/v1/accounts/{id}/keys"),
            Some(&body),
        )
        .await
        .map(|k| {
            Done::to(
                format!("/admin/accounts/{id}?shown=key"),
                format!("Key {} created.", k.name),
            )
            .with_secret(k.key)
        });
    claim.finish(&state, created).await
}

async fn post_password_link(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, claim, .. }: Submitted<AdminSession, NoFields>,
) -> PageResult<Response> {
    let link = api
        .json::<PasswordLink>(
            &session.actor(),
            Method::POST,
            &format!("/v1/accounts/{id}/password-link"),
            None,
        )
        .await
        .map(|l| {
            Done::to(
                format!("/admin/accounts/{id}?shown=link"),
                format!(
                    "One-time {} link created, valid until {}.",
                    l.purpose,
                    as_written(l.expires_at)
                ),
            )
            .with_secret(l.url)
        });
    claim.finish(&state, link).await
}

#[derive(Deserialize)]
struct RevokeForm {
    account_id: Uuid,
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(key_id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, RevokeForm>,
) -> PageResult<Response> {
    let revoked = api
        .call(
            &session.actor(),
            Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            None,
        )
        .await
        .map(|()| {
            Done::to(
                format!("/admin/accounts/{}", form.account_id),
                "Key revoked: requests with it stop within seconds.",
            )
        });
    claim.finish(&state, revoked).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(accounts))
        .route("/admin/accounts", post(create_account))
        .route("/admin/accounts/{id}", get(account))
        .route("/admin/accounts/{id}/status", post(post_status))
        .route("/admin/accounts/{id}/keys", post(post_key))
        .route("/admin/accounts/{id}/password-link", post(post_password_link))
        .route("/admin/keys/{key_id}/revoke", post(revoke_key))
}
