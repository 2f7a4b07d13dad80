//! The console's credits form: a grant (positive) or a correction (negative) of an account's
//! credits, always with a reason.
//!
//! Some changes are not applied on the first post. Every correction, and every grant of
//! [`LARGE_GRANT`] credits or more, is answered with a confirmation page (redirected to, so that a
//! refresh shows it again and changes nothing) that states the effect: the balance before and after,
//! in credits and dollars. Its Confirm form carries the same values and the idempotency key of the
//! first post, derived from that form's single-use token: confirming twice (two tabs, a double
//! click) is one transfer.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::console_account::{account_page, CreditsEntry, Extras, LARGE_GRANT};
use super::console_page::render;
use super::form::{self, Done, Submitted};
use super::html::{credits, usd};
use super::session::AdminSession;
use super::{ApiClient, PageError, PageResult};
use crate::money;
use crate::state::AppState;

/// Whether a change of `credits` is applied only once confirmed: every correction, and a large grant.
pub fn needs_confirmation(credits: Decimal) -> bool {
    credits < Decimal::ZERO || credits >= Decimal::from(LARGE_GRANT)
}

/// The idempotency key the API gets for a credits form: derived from the form's single-use token
/// (not the token itself, which stays a secret of the browser's form).
fn idempotency_key(form_token: &str) -> String {
    let digest = hex::encode(Sha256::digest(
        format!("console credits\0{form_token}").as_bytes(),
    ));
    format!("console-{}", &digest[..32])
}

/// A key as [`idempotency_key`] makes them: the only kind a confirmation may carry.
fn is_console_key(key: &str) -> bool {
    key.strip_prefix("console-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A number typed with commas or spaces between groups of three digits (`12,500.5`), without
/// them; `None` when a comma or space is anywhere else (`1,5` is not 15: it is refused).
fn thousands(typed: &str) -> Option<String> {
    let (sign, rest) = match typed.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", typed),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    if int.contains([',', ' ']) {
        let groups: Vec<&str> = int.split([',', ' ']).collect();
        let first_ok = groups.first().is_some_and(|g| (1..=3).contains(&g.len()));
        if !first_ok || groups.iter().skip(1).any(|g| g.len() != 3) {
            return None;
        }
    }
    if frac.is_some_and(|f| f.contains([',', ' '])) {
        return None;
    }
    let int: String = int.chars().filter(|c| *c != ',' && *c != ' ').collect();
    Some(match frac {
        Some(f) => format!("{sign}{int}.{f}"),
        None => format!("{sign}{int}"),
    })
}

/// A change of credits as read from a form or a confirmation address.
struct Change {
    credits: Decimal,
    reason: String,
}

impl Change {
    /// Reads the typed values; the error is in words for the form.
    fn read(credits: &str, reason: &str) -> Result<Change, String> {
        let typed = thousands(credits.trim()).unwrap_or_default();
        let credits = money::parse_plain(&typed).map_err(|_| {
            format!(
                "Credits: {:?} is not a number; write it like 1500 or -250.5.",
                credits.trim()
            )
        })?;
        if credits.is_zero() {
            return Err("Credits: enter a positive number to grant or a negative one to correct.".into());
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("Give a reason: it is kept in the ledger and the audit log.".into());
        }
        // The API's own check of a reason, so that what passes here is not refused after the
        // confirmation page.
        let reason = crate::accounts::check_text("reason", reason, 1000).map_err(|_| {
            "The reason must be at most 1000 characters, on one line, without tabs.".to_owned()
        })?;
        Ok(Change { credits, reason })
    }

    fn what(&self) -> &'static str {
        if self.credits < Decimal::ZERO {
            "correction"
        } else {
            "grant"
        }
    }
}

#[derive(Deserialize)]
struct CreditsForm {
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    /// `yes` on the confirmation page's form.
    #[serde(default)]
    confirmed: String,
    /// The first post's key, on the confirmation page's form.
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    form_token: String,
}

/// What the API answers that the notice uses.
#[derive(Deserialize)]
struct Applied {
    balance_after: String,
}

fn confirm_address(account_id: Uuid, change: &Change, key: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("credits", &money::plain(change.credits))
        .append_pair("reason", &change.reason)
        .append_pair("key", key)
        .finish();
    format!("/admin/accounts/{account_id}/credits/confirm?{query}")
}

async fn post_credits(
    State(state): State<AppState>,
    Extension(api): Extension<ApiClient>,
    Path(id): Path<Uuid>,
    Submitted { session, form, claim }: Submitted<AdminSession, CreditsForm>,
) -> PageResult<Response> {
    let change = match Change::read(&form.credits, &form.reason) {
        Ok(c) => c,
        Err(message) => {
            // Shown again on the form with what was typed; nothing was changed.
            claim.release(&state).await;
            let extras = Extras {
                credits: CreditsEntry {
                    error: Some(&message),
                    credits: &form.credits,
                    reason: &form.reason,
                },
                ..Extras::default()
            };
            return Ok(account_page(&state, &session, id, extras).await?.into_response());
        }
    };
    let confirmed = form.confirmed == "yes" && is_console_key(&form.idempotency_key);
    if needs_confirmation(change.credits) && !confirmed {
        let key = idempotency_key(&form.form_token);
        let ask = Done::to(confirm_address(id, &change, &key), "");
        return claim.finish(&state, Ok(ask)).await;
    }
    let key = if confirmed {
        form.idempotency_key.clone()
    } else {
        idempotency_key(&form.form_token)
    };
    let body = json!({
        "credits": money::plain(change.credits),
        "reason": change.reason,
        "idempotency_key": key,
    });
    let applied = async {
        let (status, a) = api
            .json_with_status::<Applied>(
                &session.actor(),
                Method::POST,
                &format!("/v1/accounts/{id}/credits"),
                Some(&body),
            )
            .await?;
        let kind = if change.credits < Decimal::ZERO { "Correction" } else { "Grant" };
        let notice = if status == StatusCode::CREATED {
            let after = money::parse_plain(&a.balance_after).unwrap_or_default();
            format!(
                "{kind} of {} credits applied ({}). Balance now {} credits ({}).",
                credits(change.credits),
                change.reason,
                credits(after),
                usd(after * money::credit_usd()),
            )
        } else {
            // Confirmed before (another tab, a resend): the ledger holds it once; the balance
            // now is read, not the one right after that transfer.
            let now: Decimal = sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
                .bind(id)
                .fetch_one(&state.pool)
                .await?;
            format!(
                "This {} of {} credits was applied before; it was not applied again. Balance now {} credits ({}).",
                kind.to_lowercase(),
                credits(change.credits),
                credits(now),
                usd(now * money::credit_usd()),
            )
        };
        Ok(Done::to(format!("/admin/accounts/{id}"), notice))
    }
    .await;
    claim.finish(&state, applied).await
}

#[derive(Deserialize)]
struct ConfirmQuery {
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    key: String,
}

/// Credits and what they are worth: `-500 credits ($2.50)`.
fn worth(c: Decimal) -> String {
    format!("{} credits ({})", credits(c), usd(c * money::credit_usd()))
}

/// The confirmation page of a correction or a large grant: its effect, Confirm and Cancel.
async fn confirm_page(
    session: AdminSession,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<ConfirmQuery>,
    uri: Uri,
) -> PageResult<Html<String>> {
    // The first post's result, consumed so that it is not shown elsewhere later.
    form::outcome(&state, session.token(), &uri).await?;
    let change = Change::read(&q.credits, &q.reason).map_err(PageError::BadRequest)?;
    if !is_console_key(&q.key) {
        return Err(PageError::BadRequest(
            "This confirmation address is incomplete. Go back to the account and send the form again.".into(),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let account = crate::accounts::fetch(&mut conn, id).await?;
    let after = account.balance + change.credits;
    let account_url = format!("/admin/accounts/{id}");
    let title = if change.credits < Decimal::ZERO {
        "Confirm the correction"
    } else {
        "Confirm the grant"
    };
    let body = html! {
        div.card #confirm-effect {
            p { "Account: " strong { (account.name) } " " span.muted { (account.email) } }
            p { "Change: " strong #confirm-change { (worth(change.credits)) } }
            p { "Reason: " (change.reason) }
            p #confirm-balance { "Balance: " (worth(account.balance)) " → " strong.negative[after < Decimal::ZERO] { (worth(after)) } }
            @if after < Decimal::ZERO {
                p.notice.error { "After this the balance is negative: the account's API requests are refused until credits are added." }
            }
            p.muted { "Nothing has been applied yet." }
        }
        div.actions {
            form.inline #confirm-credits method="post" action={ (account_url) "/credits" } {
                (form::fields(&session.csrf))
                input type="hidden" name="credits" value=(money::plain(change.credits));
                input type="hidden" name="reason" value=(change.reason);
                input type="hidden" name="confirmed" value="yes";
                input type="hidden" name="idempotency_key" value=(q.key);
                button type="submit" { "Apply the " (change.what()) }
            }
            a.button.secondary #cancel href=(account_url) { "Cancel" }
        }
    };
    Ok(render(&state, &session, title, body))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts/{id}/credits", post(post_credits))
        .route("/admin/accounts/{id}/credits/confirm", get(confirm_page))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn commas_are_read_only_between_groups_of_three_digits() {
        assert_eq!(thousands("12,500.5").as_deref(), Some("12500.5"));
        assert_eq!(thousands("-1 000").as_deref(), Some("-1000"));
        assert_eq!(thousands("250").as_deref(), Some("250"));
        for bad in ["1,5", "2,50", "1.000,50", "1234,567", ",500"] {
            assert_eq!(thousands(bad), None, "{bad}");
        }
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn corrections_and_large_grants_need_a_confirmation() {
        for (credits, needed) in [
            ("-0.5", true),
            ("-100000", true),
            ("1", false),
            ("9999.99", false),
            ("10000", true),
            ("250000", true),
        ] {
            assert_eq!(needs_confirmation(d(credits)), needed, "{credits}");
        }
    }

    #[test]
    fn a_change_needs_a_number_other_than_zero_and_a_reason() {
        let c = Change::read(" -2,500 ", " typo ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.credits, c.reason.as_str(), c.what()),
            (d("-2500"), "typo", "correction")
        );
        assert!(Change::read("0", "r").is_err());
        assert!(Change::read("abc", "r").is_err());
        let no_reason = Change::read("100", "  ").err().unwrap_or_default();
        assert!(no_reason.contains("reason"), "{no_reason}");
    }

    #[test]
    fn the_idempotency_key_is_derived_from_the_form_token_and_recognised() {
        let key = idempotency_key("a-form-token-of-some-length");
        assert_eq!(key, idempotency_key("a-form-token-of-some-length"));
        assert_ne!(key, idempotency_key("another-form-token-entirely"));
        assert!(!key.contains("a-form-token"));
        assert!(is_console_key(&key));
        assert!(!is_console_key("k2") && !is_console_key("console-xyz"));
    }
}
