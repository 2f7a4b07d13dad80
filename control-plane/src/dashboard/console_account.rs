//! One account in the console: its balance (a negative one marked), details, the credits form,
//! status, Telegram sale, sign-in link and keys forms, and the ledger of grants, corrections,
//! purchases and refunds. The handlers of those forms (`admin`, `console_credits`, ...) show it
//! again with their result or their error.

use axum::response::Html;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::console_page::render;
use super::form;
use super::html::{credits, usd, when};
use super::session::AdminSession;
use super::PageResult;
use crate::money;
use crate::state::AppState;

/// A grant this large (credits; $50 at $0.005) or larger asks for a confirmation first.
pub const LARGE_GRANT: i64 = 10_000;

/// A balance below zero, said in a word beside the number (colour alone is not enough).
pub fn negative_mark(balance: Decimal) -> Markup {
    html! { @if balance < Decimal::ZERO { " " span.negative-word { "negative" } } }
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

/// What the credits form holds as it was typed, to show it again with its error.
#[derive(Default)]
pub struct CreditsEntry<'a> {
    pub error: Option<&'a str>,
    pub credits: &'a str,
    pub reason: &'a str,
}

/// The form on the account page.
pub fn credits_form(csrf: &str, account_id: Uuid, entry: &CreditsEntry<'_>) -> Markup {
    html! {
        @if let Some(e) = entry.error { p.notice.error #credits-error role="alert" { (e) } }
        form.row.card #credits-form method="post" action={ "/admin/accounts/" (account_id) "/credits" } {
            (form::fields(csrf))
            label { "Credits (negative to correct)" input type="text" name="credits" required inputmode="decimal" placeholder="1000" value=(entry.credits); }
            label { "Reason" input type="text" name="reason" required maxlength="1000" value=(entry.reason); }
            button type="submit" { "Post" }
        }
        p.muted { "A correction, or a grant of " (credits(Decimal::from(LARGE_GRANT))) " credits or more, is confirmed on the next page before it is applied." }
    }
}

/// What the account page shows on top of the account: a form's result, and the credits form as
/// it was sent when it has to be corrected.
#[derive(Default)]
pub struct Extras<'a> {
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
pub async fn account_page(
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
        (credits_form(csrf, id, &extras.credits))
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
