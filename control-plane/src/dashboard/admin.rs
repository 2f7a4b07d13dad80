//! The admin console's accounts: search and create, one account's page (balance, status, credits
//! grant or correction with a reason, keys, sign-in link, ledger). Changes go through the API.

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::html::{as_written, credits, csrf_field, notice, page, when};
use super::login::link::PasswordLink;
use super::nav;
use super::session::{AdminSession, NoFields, Posted};
use super::{ApiClient, PageError, PageResult};
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
) -> PageResult<Html<String>> {
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
        form.row method="get" action="/admin" {
            label { "Search name, email or id" input type="search" name="q" value=(q); }
            button.secondary type="submit" { "Search" }
        }
        table #accounts {
            thead { tr { th { "Name" } th { "Email" } th { "Status" } th.num { "Balance" } th { "Created" } } }
            tbody {
                @for a in &rows {
                    tr {
                        td { a href={ "/admin/accounts/" (a.id) } { (a.name) } }
                        td { (a.email) }
                        td class={ "status-" (a.status) } { (a.status) }
                        td.num { (credits(a.balance)) }
                        td { (when(a.created_at)) }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No account matches." } }
        h2 { "New account" }
        form.row.card method="post" action="/admin/accounts" {
            (csrf_field(&session.csrf))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            label { "Email" input type="email" name="email" required maxlength="254"; }
            button type="submit" { "Create account" }
        }
    };
    Ok(Html(page("Accounts", nav::admin(&session), body).into_string()))
}

#[derive(Deserialize)]
struct NewAccountForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

async fn create_account(
    Extension(api): Extension<ApiClient>,
    Posted { session, form }: Posted<AdminSession, NewAccountForm>,
) -> PageResult<Redirect> {
    let body = json!({ "name": form.name, "email": form.email });
    let created: Account = api
        .json(&session.actor(), Method::POST, "/v1/accounts", Some(&body))
        .await?;
    Ok(Redirect::to(&format!("/admin/accounts/{}", created.id)))
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

#[derive(Deserialize)]
struct Done {
    done: Option<String>,
}

fn done_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "credits" => Some("Credits posted."),
        "status" => Some("Status changed."),
        "revoked" => Some("Key revoked."),
        _ => None,
    }
}

/// One account's page; `extra` is shown on top (a new key's secret, a new sign-in link).
async fn account_page(
    state: &AppState,
    session: &AdminSession,
    id: Uuid,
    extra: Option<Markup>,
    done: Option<&str>,
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
    let body = html! {
        @if let Some(text) = done_text(done) { (notice("ok", text)) }
        @if let Some(extra) = extra { (extra) }
        div.cards {
            div.card {
                div.muted { "Balance (credits)" }
                div.balance #balance { (credits(account.balance)) }
            }
            div.card {
                div { strong #account-name { (account.name) } }
                div { (account.email) }
                div.mono.muted { (account.id) }
                div { "Status: " span #account-status class={ "status-" (account.status) } { (account.status) } }
                div.muted { "Dashboard password: "
                    @if let Some(at) = has_login { "set " (when(at)) } @else { "not set" } }
            }
        }
        h2 { "Grant or correct credits" }
        form.row.card #credits-form method="post" action={ (base) "/credits" } {
            (csrf_field(csrf))
            input type="hidden" name="idempotency_key" value={ "console-" (Uuid::new_v4()) };
            label { "Credits (negative to correct)" input type="text" name="credits" required inputmode="decimal" placeholder="1000"; }
            label { "Reason" input type="text" name="reason" required maxlength="1000"; }
            button type="submit" { "Post" }
        }
        h2 { "Status" }
        form.row.card method="post" action={ (base) "/status" }
            data-confirm="Change this account's status? Suspension stops every key within seconds." {
            (csrf_field(csrf))
            @let next = if account.status == "active" { "suspended" } else { "active" };
            input type="hidden" name="status" value=(next);
            label { "Reason" input type="text" name="reason" maxlength="1000"; }
            button.danger type="submit" { @if next == "suspended" { "Suspend" } @else { "Reactivate" } }
        }
        h2 { "Telegram sale" }
        (super::console_purchases::telegram_sale_form(csrf, id, &plans))
        p { a href="/admin/purchases" { "Purchases of every account" } }
        h2 { "Dashboard sign-in" }
        form.row method="post" action={ (base) "/password-link" } {
            (csrf_field(csrf))
            button.secondary type="submit" {
                @if has_login.is_some() { "Create a password reset link" } @else { "Create an invite link" }
            }
        }
        h2 { "API keys" }
        form.row method="post" action={ (base) "/keys" } {
            (csrf_field(csrf))
            label { "Name" input type="text" name="name" required maxlength="200"; }
            button.secondary type="submit" { "Create key" }
        }
        table #keys {
            thead { tr { th { "Name" } th { "Prefix" } th { "Status" } th { "Created" } th {} } }
            tbody {
                @for k in &keys {
                    tr {
                        td { (k.name) } td.mono { (k.prefix) "…" }
                        td class={ "status-" (k.status) } { (k.status) } td { (when(k.created_at)) }
                        td { @if k.status == "active" {
                            form.inline method="post" action={ "/admin/keys/" (k.id) "/revoke" } data-confirm="Revoke this key?" {
                                (csrf_field(csrf))
                                input type="hidden" name="account_id" value=(id);
                                button.danger type="submit" { "Revoke" }
                            }
                        } }
                    }
                }
            }
        }
        h2 { "Ledger (grants, corrections, purchases, refunds)" }
        table #ledger {
            thead { tr { th { "Time" } th { "Kind" } th.num { "Credits" } th.num { "Balance after" } th { "Reason" } th { "By" } } }
            tbody {
                @for l in &ledger {
                    tr { td { (when(l.created_at)) } td { (l.kind) } td.num { (credits(l.amount)) }
                        td.num { (credits(l.balance_after)) } td { (l.reason.as_deref().unwrap_or("")) } td { (l.actor) } }
                }
            }
        }
    };
    Ok(Html(page("Account", nav::admin(session), body).into_string()))
}

async fn account(
    session: AdminSession,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(d): Query<Done>,
) -> PageResult<Html<String>> {
    account_page(&state, &session, id, None, d.done.as_deref()).await
}

#[derive(Deserialize)]
struct CreditsForm {
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    idempotency_key: String,
}

async fn post_credits(
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, CreditsForm>,
) -> PageResult<Redirect> {
    let amount = form.credits.trim().replace([',', ' '], "");
    crate::money::parse_plain(&amount).map_err(|e| PageError::BadRequest(format!("credits: {e}")))?;
    let reason = form.reason.trim();
    let body = json!({
        "credits": amount,
        "reason": if reason.is_empty() { None } else { Some(reason) },
        "idempotency_key": form.idempotency_key,
    });
    api.call(
        &session.actor(),
        Method::POST,
        &format!("/v1/accounts/{id}/credits"),
        Some(&body),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/accounts/{id}?done=credits")))
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: String,
}

async fn post_status(
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, StatusForm>,
) -> PageResult<Redirect> {
    let reason = form.reason.trim();
    let body =
        json!({ "status": form.status, "reason": if reason.is_empty() { None } else { Some(reason) } });
    api.call(
        &session.actor(),
        Method::PATCH,
        &format!("/v1/accounts/{id}"),
        Some(&body),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/accounts/{id}?done=status")))
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
    Posted { session, form }: Posted<AdminSession, NameForm>,
) -> PageResult<Html<String>> {
    let body = json!({ "name": form.name });
    let created: CreatedKey = api
        .json(
            &session.actor(),
            Method::POST,
            &format!("/v1/accounts/{id}/keys"),
            Some(&body),
        )
        .await?;
    let extra = html! {
        div.card #new-key {
            p { "New key " strong { (created.name) } ": pass it on now, it is shown only this once." }
            div.secret #new-key-secret { (created.key) }
        }
    };
    account_page(&state, &session, id, Some(extra), None).await
}

async fn post_password_link(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Posted { session, .. }: Posted<AdminSession, NoFields>,
) -> PageResult<Html<String>> {
    let link: PasswordLink = api
        .json(
            &session.actor(),
            Method::POST,
            &format!("/v1/accounts/{id}/password-link"),
            None,
        )
        .await?;
    let extra = html! {
        div.card #password-link {
            p { "One-time " (link.purpose) " link, valid until "
                (as_written(link.expires_at)) ". Pass it on to the customer; it is shown only this once." }
            div.secret #password-link-url { (link.url) }
        }
    };
    account_page(&state, &session, id, Some(extra), None).await
}

#[derive(Deserialize)]
struct RevokeForm {
    account_id: Uuid,
}

async fn revoke_key(
    Extension(api): Extension<ApiClient>,
    Path(key_id): Path<Uuid>,
    Posted { session, form }: Posted<AdminSession, RevokeForm>,
) -> PageResult<Redirect> {
    api.call(
        &session.actor(),
        Method::DELETE,
        &format!("/v1/keys/{key_id}"),
        None,
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/admin/accounts/{}?done=revoked",
        form.account_id
    )))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(accounts))
        .route("/admin/accounts", post(create_account))
        .route("/admin/accounts/{id}", get(account))
        .route("/admin/accounts/{id}/credits", post(post_credits))
        .route("/admin/accounts/{id}/status", post(post_status))
        .route("/admin/accounts/{id}/keys", post(post_key))
        .route("/admin/accounts/{id}/password-link", post(post_password_link))
        .route("/admin/keys/{key_id}/revoke", post(revoke_key))
}
