//! The console's forms that move money or change a sale: corrections and large grants confirmed
//! on a second page, a reason always; Telegram sales confirmed with the payment's reference or
//! rejected with a reason; each form applied once however often it is sent.

use reqwest::StatusCode;

use super::{borrowed, confirmation_fields};
use crate::helpers::*;
use crate::web::*;

async fn admin(app: &TestApp) -> (Web, String) {
    let mut web = Web::new(app);
    web.admin_login(ADMIN, "operator").await;
    let csrf = web.csrf("/admin").await;
    (web, csrf)
}

async fn corrections(app: &TestApp, account: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM transfers t JOIN entries e ON e.transfer_id = t.id
         WHERE t.kind = 'correction' AND e.ledger_account_id = $1",
    )
    .bind(account)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn one_click_never_applies_a_correction_and_its_confirmation_applies_it_once() {
    let app = spawn_app().await;
    let account = app.create_account("overdrawn").await;
    app.grant(account, "3000", "welcome").await;
    let (mut web, csrf) = admin(&app).await;
    let credits = format!("/admin/accounts/{account}/credits");
    let form = [
        ("csrf", csrf.as_str()),
        ("form_token", "first-form-token-0123456789"),
        ("credits", "-5000"),
        ("reason", "chargeback"),
    ];
    let asked = web.post(&credits, &form).await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.body);
    assert!(
        asked.location().starts_with(&format!("{credits}/confirm?")),
        "{}",
        asked.location()
    );
    // The same form again (a refresh, a double click) leads to the same question.
    let again = web.post_again(&credits, &form).await;
    assert_eq!(again.location(), asked.location());
    assert_eq!(app.balance(account).await, d("3000"));
    assert_eq!(corrections(&app, account).await, 0);

    let page = web.follow(&asked).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for said in [
        "-5,000 credits (-$25.00)",
        "3,000 credits ($15.00) → ",
        "-2,000 credits (-$10.00)",
        "chargeback",
        "balance is negative",
        "Nothing has been applied yet",
    ] {
        assert!(page.body.contains(said), "{said}: {}", page.body);
    }
    // Showing the question again changes nothing either.
    assert_eq!(web.get(asked.location()).await.status, StatusCode::OK);
    assert_eq!(app.balance(account).await, d("3000"));

    let fields = confirmation_fields(&page);
    let applied = web.post(&credits, &borrowed(&fields)).await;
    assert_eq!(applied.status, StatusCode::SEE_OTHER, "{}", applied.body);
    assert_eq!(app.balance(account).await, d("-2000"));
    // Its refresh, and a Confirm sent from a second rendering of the page (a fresh form token,
    // the same first post's key), apply nothing more.
    let refreshed = web.post_again(&credits, &borrowed(&fields)).await;
    assert_eq!(refreshed.location(), applied.location());
    let second_tab = web.follow(&asked).await;
    let other = web
        .post(&credits, &borrowed(&confirmation_fields(&second_tab)))
        .await;
    assert_eq!(other.status, StatusCode::SEE_OTHER, "{}", other.body);
    assert_eq!(app.balance(account).await, d("-2000"));
    assert_eq!(corrections(&app, account).await, 1);
    let told = web.follow(&other).await;
    assert!(
        told.body
            .contains("was applied before; it was not applied again. Balance now -2,000 credits"),
        "the second Confirm says it applied nothing: {}",
        told.body
    );

    let result = web.follow(&applied).await;
    assert!(
        result.body.contains(
            "Correction of -5,000 credits applied (chargeback). Balance now -2,000 credits (-$10.00)."
        ),
        "{}",
        result.body
    );
    // A negative balance is marked on the account and in the list, in a word too.
    assert!(result.body.contains("negative-word"), "{}", result.body);
    let list = web.get("/admin").await;
    assert!(list.body.contains("<tr class=\"negative\">"), "{}", list.body);
    assert!(list.body.contains(">negative<"));
}

#[tokio::test]
async fn a_grant_of_ten_thousand_credits_or_more_is_confirmed_first_and_a_smaller_one_is_not() {
    let app = spawn_app().await;
    let account = app.create_account("generous").await;
    let (mut web, csrf) = admin(&app).await;
    let credits = format!("/admin/accounts/{account}/credits");
    let small = web
        .post(
            &credits,
            &[("csrf", &csrf), ("credits", "9999"), ("reason", "goodwill")],
        )
        .await;
    assert_eq!(
        small.location().split('?').next(),
        Some(format!("/admin/accounts/{account}").as_str())
    );
    assert_eq!(app.balance(account).await, d("9999"));
    let large = web
        .post(
            &credits,
            &[("csrf", &csrf), ("credits", "10,000"), ("reason", "partner")],
        )
        .await;
    assert!(
        large.location().contains("/credits/confirm?"),
        "{}",
        large.location()
    );
    assert_eq!(app.balance(account).await, d("9999"));
    let page = web.follow(&large).await;
    assert!(
        page.body.contains("Confirm the grant")
            && page
                .body
                .contains("id=\"confirm-change\">10,000 credits ($50.00)<"),
        "{}",
        page.body
    );
    let done = web.post(&credits, &borrowed(&confirmation_fields(&page))).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(app.balance(account).await, d("19999"));
}

#[tokio::test]
async fn a_credits_change_without_a_reason_is_shown_again_with_the_error_and_applies_nothing() {
    let app = spawn_app().await;
    let account = app.create_account("reasonless").await;
    let (mut web, csrf) = admin(&app).await;
    let credits = format!("/admin/accounts/{account}/credits");
    let token = "reasonless-form-token-0123456789";
    let p = web
        .post(
            &credits,
            &[
                ("csrf", &csrf),
                ("form_token", token),
                ("credits", "700"),
                ("reason", "  "),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains("id=\"credits-error\"") && p.body.contains("Give a reason"),
        "{}",
        p.body
    );
    assert!(p.body.contains("value=\"700\""), "what was typed is kept");
    let p = web
        .post(
            &credits,
            &[("csrf", &csrf), ("credits", "seven"), ("reason", "r")],
        )
        .await;
    assert!(p.body.contains("is not a number"), "{}", p.body);
    // A tab pasted into the reason is refused on the form, as the API would refuse it.
    let p = web
        .post(
            &credits,
            &[
                ("csrf", &csrf),
                ("credits", "-70000"),
                ("reason", "pasted\treason"),
            ],
        )
        .await;
    assert!(
        p.body.contains("id=\"credits-error\"") && p.body.contains("without tabs"),
        "{}",
        p.body
    );
    assert_eq!(app.balance(account).await, d("0"));
    // Corrected, the same form (its token was given back) is applied.
    let p = web
        .post_again(
            &credits,
            &[
                ("csrf", &csrf),
                ("form_token", token),
                ("credits", "700"),
                ("reason", "fixed"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(app.balance(account).await, d("700"));
    // A confirmation address that was tampered with shows an error page and changes nothing.
    let p = web
        .get(&format!("{credits}/confirm?credits=-5&reason=x&key=made-up"))
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("incomplete") && p.body.contains("<nav>"),
        "{}",
        p.body
    );
    assert_eq!(app.balance(account).await, d("700"));
}

/// Records a Telegram sale through the account page's form; returns the purchase id.
async fn telegram_sale(
    app: &TestApp,
    web: &mut Web,
    csrf: &str,
    account: uuid::Uuid,
    reference: &str,
) -> String {
    let sale = web
        .post(
            &format!("/admin/accounts/{account}/telegram-sale"),
            &[
                ("csrf", csrf),
                ("plan_id", "8f1c7a52-0d6e-4c41-9a7e-000000001000"),
                ("reference", reference),
            ],
        )
        .await;
    assert_eq!(sale.status, StatusCode::SEE_OTHER, "{}", sale.body);
    assert!(web.follow(&sale).await.body.contains("Telegram sale recorded"));
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/purchases")).await;
    list["data"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_telegram_sale_is_confirmed_only_with_its_payment_reference_once_and_shows_its_documents() {
    let app = spawn_app().await;
    let account = app.create_account("telegram").await;
    let (mut web, csrf) = admin(&app).await;
    let id = telegram_sale(&app, &mut web, &csrf, account, "chat 42").await;
    let confirm = format!("/admin/purchases/{id}/confirm");
    let p = web.post(&confirm, &[("csrf", &csrf), ("reference", " ")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("payment&#39;s reference") || p.body.contains("payment's reference"),
        "{}",
        p.body
    );
    assert_eq!(app.balance(account).await, d("0"));
    let form = [
        ("csrf", csrf.as_str()),
        ("form_token", "confirm-form-token-0123456789"),
        ("reference", "tx 0xfeed"),
    ];
    let p = web.post(&confirm, &form).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(web.post_again(&confirm, &form).await.location(), p.location());
    assert_eq!(app.balance(account).await, d("1000"));
    let (_, purchase) = app.admin_get(&format!("/v1/purchases/{id}")).await;
    assert_eq!(purchase["status"], "paid");
    let reference: String =
        sqlx::query_scalar("SELECT details->>'reference' FROM audit_log WHERE action = 'purchase.paid'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(reference, "tx 0xfeed");
    let list = web.follow(&p).await;
    assert!(
        list.body
            .contains("Purchase confirmed as paid (reference tx 0xfeed)"),
        "{}",
        list.body
    );
    // The same sale confirmed from a second tab (its own form token): nothing is credited again,
    // and the page says so instead of "credited".
    let second = [
        ("csrf", csrf.as_str()),
        ("form_token", "confirm-form-token-second-tab0"),
        ("reference", "tx 0xother"),
    ];
    let again = web.post(&confirm, &second).await;
    let told = web.follow(&again).await;
    assert!(
        told.body.contains("was confirmed before") && !told.body.contains("tx 0xother): "),
        "{}",
        told.body
    );
    assert_eq!(app.balance(account).await, d("1000"));

    // The invoice: its number in the list, a console page, the document as HTML and PDF.
    let number = purchase["invoice_number"].as_str().unwrap().to_owned();
    assert!(
        list.body.contains(&format!("href=\"/admin/invoices/{number}\"")),
        "{}",
        list.body
    );
    let view = web.get(&format!("/admin/invoices/{number}")).await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    assert!(
        view.body.contains(&format!("Invoice {number}")) && view.body.contains("Paid by telegram"),
        "{}",
        view.body
    );
    let html = web.get(&format!("/admin/invoices/{number}?format=html")).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(
        html.body.contains(&number)
            && html.headers["content-type"]
                .to_str()
                .unwrap()
                .contains("text/html")
    );
    let pdf = web.get(&format!("/admin/invoices/{number}?format=pdf")).await;
    assert_eq!(pdf.status, StatusCode::OK);
    assert!(pdf.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("{number}.pdf")));
    assert_eq!(
        web.get("/admin/invoices/INV-1999-999999").await.status,
        StatusCode::NOT_FOUND
    );

    // Refunded with a reason: the credit note is listed beside the invoice.
    let refund = format!("/admin/purchases/{id}/refund");
    let p = web.post(&refund, &[("csrf", &csrf), ("reason", "")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = web
        .post(&refund, &[("csrf", &csrf), ("reason", "sold twice")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let list = web.follow(&p).await;
    let (_, purchase) = app.admin_get(&format!("/v1/purchases/{id}")).await;
    let note = purchase["credit_note_number"].as_str().unwrap();
    assert!(
        list.body.contains("Purchase refunded (sold twice)"),
        "{}",
        list.body
    );
    assert!(list
        .body
        .contains(&format!("href=\"/admin/invoices/{note}?format=pdf\"")));
    assert_eq!(app.balance(account).await, d("0"));
}

#[tokio::test]
async fn a_pending_telegram_sale_is_rejected_with_a_reason_and_credits_nothing() {
    let app = spawn_app().await;
    let account = app.create_account("rejected").await;
    let (mut web, csrf) = admin(&app).await;
    let id = telegram_sale(&app, &mut web, &csrf, account, "chat 7").await;
    let pending = web.get("/admin/purchases?status=pending").await;
    assert!(
        pending.body.contains(&format!("/admin/purchases/{id}/reject")),
        "{}",
        pending.body
    );
    let reject = format!("/admin/purchases/{id}/reject");
    let p = web.post(&reject, &[("csrf", &csrf), ("reason", "")]).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    let p = web
        .post(&reject, &[("csrf", &csrf), ("reason", "never paid")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(web
        .follow(&p)
        .await
        .body
        .contains("Purchase rejected (never paid)"));
    let (_, purchase) = app.admin_get(&format!("/v1/purchases/{id}")).await;
    assert_eq!(purchase["status"], "failed");
    // Rejected, it can no longer be confirmed, and the page says why.
    let p = web
        .post(
            &format!("/admin/purchases/{id}/confirm"),
            &[("csrf", &csrf), ("reference", "late")],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert_eq!(app.balance(account).await, d("0"));
}
