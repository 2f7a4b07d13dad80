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
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::console_credits::{self, CreditsEntry};
use super::console_page::render;
use super::form::{self, Done, Submitted};
use super::html::{as_written, credits, usd, when};
use super::login::link::PasswordLink;
use super::session::{AdminSession, NoFields};
use super::{ApiClient, PageResult};
use crate::accounts::Account;
use crate::keys::CreatedKey;
use crate::money;
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

/// A balance below zero, said in a word beside the number (colour alone is not enough).
pub(super) fn negative_mark(balance: Decimal) -> Markup {
    html! { @if balance < Decimal::ZERO { " " span.negative-word { "negative" } } }
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

#[derive(sqlx::FromRow)]
struct LedgerRow {
    created_at: DateTime<Utc>,
    kind: String,
    amount: Decimal,
    balance_after: Decimal,
    reason: Option<String>,
    actor: String,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    status: String,
    created_at: DateTime<Utc>,
}

/// Which secret a result carries, named in the address it redirects to.
#[derive(Deserialize)]
struct Shown {
    shown: Option<String>,
}

/// What the account page shows on top of the account: a form's result, and the credits form as
/// it was sent when it has to be corrected.
#[derive(Default)]
pub(super) struct Extras<'a> {
    pub done: Option<form::Outcome>,
    pub shown: Option<&'a str>,
    pub credits: CreditsEntry<'a>,
}

/// The card of a secret shown once (a new key, a password link), or, on a later showing of the
/// same result, what to do if it was not copied.
fn secret_card(shown: Option<&str>, secret: Option<&str>) -> Markup {
    html! {
        @match (shown, secret) {
            (Some("key"), Some(s)) => div.card #new-key {
                p { "Pass the new key on now: it is shown only this once." }
                div.secret #new-key-secret { (s) }
            },
            (Some("link"), Some(s)) => div.card #password-link {
                p { "Pass this link on to the customer now: it is shown only this once, and works once." }
                div.secret #password-link-url { (s) }
            },
            (Some("key" | "link"), None) => p.muted #secret-gone {
                "The secret was shown once and is not kept. If it was not copied, revoke it and create another."
            },
            _ => {}
        }
    }
}

/// One account's page.
pub(super) async fn account_page(
    state: &AppState,
    session: &AdminSession,
    id: Uuid,
    extras: Extras<'_>,
) -> PageResult<Html<String>> {
    let mut conn = state.pool.acquire().await?;
    let account = crate::accounts::fetch(&mut conn, id).await?;
    let keys: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, name, prefix, status, created_at FROM api_keys WHERE account_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 500",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let ledger: Vec<LedgerRow> = sqlx::query_as(
        "SELECT t.created_at, t.kind, e.amount, e.balance_after, t.reason, t.actor
         FROM entries e JOIN transfers t ON t.id = e.transfer_id
         WHERE e.ledger_account_id = $1 AND t.kind <> 'usage' ORDER BY e.id DESC LIMIT 50",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let has_login: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT updated_at FROM customer_logins WHERE account_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let plans: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM plans WHERE active ORDER BY price_usd, name")
            .fetch_all(&mut *conn)
            .await?;
    let base = format!("/admin/accounts/{id}");
    let csrf = &session.csrf;
    let negative = account.balance < Decimal::ZERO;
    let body = html! {
        (form::notice(extras.done.as_ref()))
        (secret_card(extras.shown, extras.done.as_ref().and_then(|d| d.secret.as_deref())))
        div.cards {
            div.card.negative[negative] #balance-card {
                div.muted { "Balance (credits)" }
                div.balance #balance { (credits(account.balance)) }
                div.muted { "Worth " (usd(account.balance * money::credit_usd())) " at $0.005 a credit" (negative_mark(account.balance)) }
                @if negative { p.notice.error { "The balance is negative: this account's API requests are refused until it is above zero." } }
            }
            div.card {
                div { strong #account-name { (account.name) } }
                div { (account.email) }
                div.mono.muted.id { (account.id) }
                div { "Status: " span #account-status class={ "status-" (account.status) } { (account.status) } }
                div.muted { "Dashboard password: "
                    @if let Some(at) = has_login { "set " (when(at)) } @else { "not set" } }
            }
        }
        h2 { "Grant or correct credits" }
        (console_credits::credits_form(csrf, id, &extras.credits))
        h2 { "Status" }
        form.row.card #status-form method="post" action={ (base) "/status" }
            data-confirm="Change this account's status? Suspension stops every key within seconds." {
            (form::fields(csrf))
            @let next = if account.status == "active" { "suspended" } else { "active" };
            input type="hidden" name="status" value=(next);
            label { "Reason" input type="text" name="reason" maxlength="1000"; }
            button.danger type="submit" { @if next == "suspended" { "Suspend" } @else { "Reactivate" } }
        }
        h2 { "Telegram sale" }
        (super::console_purchases::telegram_sale_form(csrf, id, &plans))
        p { a href="/admin/purchases" { "Purchases of every account" } " · "
            a href={ "/admin/audit?target=account:" (id) } { "Audit log of this account" } }
        h2 { "Dashboard sign-in" }
        form.row #password-link-form method="post" action={ (base) "/password-link" } {
            (form::fields(csrf))
            button.secondary type="submit" {
                @if has_login.is_some() { "Create a password reset link" } @else { "Create an invite link" }
            }
        }
        h2 { "API keys" }
        form.row #key-form method="post" action={ (base) "/keys" } {
            (form::fields(csrf))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            button.secondary type="submit" { "Create key" }
        }
        div.table-wrap {
            table #keys {
                thead { tr { th { "Name" } th.wide { "Prefix" } th { "Status" } th.wide { "Created" } th {} } }
                tbody {
                    @for k in &keys {
                        tr {
                            td { (k.name) } td.mono.wide { (k.prefix) "…" }
                            td class={ "status-" (k.status) } { (k.status) } td.wide { (when(k.created_at)) }
                            td { @if k.status == "active" {
                                form.inline method="post" action={ "/admin/keys/" (k.id) "/revoke" } data-confirm="Revoke this key?" {
                                    (form::fields(csrf))
                                    input type="hidden" name="account_id" value=(id);
                                    button.danger type="submit" { "Revoke" }
                                }
                            } }
                        }
                    }
                }
            }
        }
        h2 { "Ledger (grants, corrections, purchases, refunds)" }
        div.table-wrap {
            table #ledger {
                thead { tr { th { "Time" } th { "Kind" } th.num { "Credits" } th.num { "Balance after" } th { "Reason" } th.wide { "By" } } }
                tbody {
                    @for l in &ledger {
                        tr.negative[l.balance_after < Decimal::ZERO] {
                            td { (when(l.created_at)) } td { (l.kind) } td.num { (credits(l.amount)) }
                            td.num { (credits(l.balance_after)) } td { (l.reason.as_deref().unwrap_or("")) } td.wide { (l.actor) }
                        }
                    }
                }
            }
        }
    };
    Ok(render(state, session, "Account", body))
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
