//! The console in a real browser: every page at a phone's width and a laptop's (screenshots in
//! `target/screenshots/pages/console-*`), and what an operator does click by click: a large
//! correction confirmed on its second page (and not applied twice), a Telegram sale confirmed
//! with its payment reference, another rejected with a reason, a refresh that changes nothing.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::pages::check_pages;
use crate::scenarios::{account_named, ONE_BROWSER};
use crate::webdriver::{Browser, WAIT};
use crate::{browser_available, screenshots, workdir};

const PLAN_1K: &str = "8f1c7a52-0d6e-4c41-9a7e-000000001000";

/// What the console shows: accounts (one overdrawn, with usage), a pending and a paid Telegram sale.
struct Data {
    grace: Uuid,
    overdrawn: Uuid,
    pending: String,
    invoice: String,
}

async fn telegram_sale(app: &TestApp, account: Uuid, reference: &str) -> Value {
    let (s, p) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/purchases"),
            json!({"plan_id": PLAN_1K, "method": "telegram", "reference": reference}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p
}

async fn console_data(app: &TestApp) -> Data {
    let grace = account_named(app, "Grace Brewster Murray Hopper", "grace.hopper@example.com").await;
    let overdrawn = account_named(app, "Linus Overdrawn", "linus@example.com").await;
    app.grant(grace, "3000", "welcome").await;
    app.grant(overdrawn, "100", "trial").await;
    let (_, secret) = app.create_key(overdrawn, "production").await;
    let now = Utc::now();
    let mut debits = Vec::new();
    for day in 0..5i64 {
        for model in ["claude-sonnet-4-5", "claude-haiku-4-5"] {
            debits.push(debit(
                overdrawn,
                &secret,
                model,
                usage(20_000, 2_000),
                now - chrono::Duration::days(day),
            ));
        }
    }
    app.debits(debits).await;
    let pending = telegram_sale(app, grace, "tg:@grace/order-1").await;
    let paid = telegram_sale(app, overdrawn, "tg:@linus/order-9").await;
    let (s, paid) = app
        .admin_json(
            Method::POST,
            &format!("/v1/purchases/{}/confirm", paid["id"].as_str().unwrap()),
            json!({"reference": "tx 0xabc"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{paid}");
    // The sale's 1,000 credits and then more taken back: the balance ends below zero.
    let (s, b) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{overdrawn}/credits"),
            json!({"credits": "-1600", "reason": "chargeback on a card payment", "idempotency_key": "c1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    Data {
        grace,
        overdrawn,
        pending: pending["id"].as_str().unwrap().to_owned(),
        invoice: paid["invoice_number"].as_str().unwrap().to_owned(),
    }
}

async fn admin_signs_in(app: &TestApp, browser: &Browser) {
    browser.goto(&format!("{}/admin", app.url)).await;
    browser.fill("input[name=token]", ADMIN).await;
    browser.fill("input[name=name]", "Margaret").await;
    browser.click("button[type=submit]").await;
    browser.find("#accounts").await;
}

/// The page's address without its origin.
async fn path_of(app: &TestApp, browser: &Browser) -> String {
    browser.url().await.trim_start_matches(&app.url).to_owned()
}

#[tokio::test]
async fn every_console_page_fits_a_phone_and_a_laptop() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let data = console_data(&app).await;
    let browser = Browser::start(&workdir("console-pages")).await;
    admin_signs_in(&app, &browser).await;
    // The confirmation page of a correction, reached as an operator reaches it.
    browser
        .goto(&format!("{}/admin/accounts/{}", app.url, data.grace))
        .await;
    browser.fill("#credits-form input[name=credits]", "-12,500").await;
    browser
        .fill(
            "#credits-form input[name=reason]",
            "a duplicated grant from last month's migration",
        )
        .await;
    browser.click("#credits-form button").await;
    browser.find("#confirm-effect").await;
    let confirmation = path_of(&app, &browser).await;
    let before = app.balance(data.grace).await;
    let pages: Vec<(&str, String)> = vec![
        ("accounts", "/admin".into()),
        ("account", format!("/admin/accounts/{}", data.grace)),
        ("account-negative", format!("/admin/accounts/{}", data.overdrawn)),
        ("correction-confirmation", confirmation),
        ("purchases", "/admin/purchases".into()),
        ("invoice", format!("/admin/invoices/{}", data.invoice)),
        ("prices", "/admin/prices".into()),
        ("plans", "/admin/plans".into()),
        ("audit", "/admin/audit".into()),
        ("margins", "/admin/margins".into()),
        ("error-bad-value", "/admin/margins?from=last-tuesday".into()),
        ("error-no-page", "/admin/no-such-page".into()),
    ];
    check_pages(&browser, &app.url, "console", &pages).await;
    // Every console page carries the seller banner here (the test's seller is unset).
    for (_, path) in pages.iter().take(10) {
        browser.goto(&format!("{}{path}", app.url)).await;
        assert!(
            browser.text("#seller-placeholders").await.contains("SELLER_NAME"),
            "{path}"
        );
    }
    // The invoice document itself, at a phone's width too.
    for width in crate::pages::WIDTHS {
        browser.set_width(width).await;
        browser
            .goto(&format!(
                "{}/admin/invoices/{}?format=html",
                app.url, data.invoice
            ))
            .await;
        browser.find("h1").await;
        let (overflow, worst) = browser.overflow().await;
        assert!(
            overflow <= 0,
            "the invoice at {width} px scrolls sideways by {overflow} px ({worst})"
        );
        browser
            .full_page_screenshot(
                &screenshots().join("pages"),
                &format!("console-invoice-document-{width}"),
            )
            .await;
    }
    assert_eq!(app.balance(data.grace).await, before, "looking applied nothing");
    browser.quit().await;
}

#[tokio::test]
async fn admin_confirms_a_large_correction_and_a_sale_rejects_another_and_a_refresh_changes_nothing() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let data = console_data(&app).await;
    let browser = Browser::start(&workdir("console-flows")).await;
    admin_signs_in(&app, &browser).await;
    // The overdrawn account is marked in the list, in a word too.
    assert!(browser.text("#accounts tr.negative").await.contains("negative"));

    // A correction: the first click asks; the confirmation applies it once.
    let account = format!("{}/admin/accounts/{}", app.url, data.grace);
    browser.goto(&account).await;
    browser.fill("#credits-form input[name=credits]", "-2500").await;
    browser
        .fill("#credits-form input[name=reason]", "duplicate grant")
        .await;
    browser.click("#credits-form button").await;
    let effect = browser.text("#confirm-balance").await;
    assert!(
        effect.contains("3,000 credits ($15.00) → 500 credits ($2.50)"),
        "{effect}"
    );
    assert_eq!(app.balance(data.grace).await, d("3000"));
    browser
        .screenshot(&screenshots(), "30-console-confirm-correction")
        .await;
    let question = browser.url().await;
    browser.click("#confirm-credits button").await;
    browser
        .wait_text("#done", WAIT, |t| {
            t.contains("Correction of -2,500 credits applied")
        })
        .await;
    assert_eq!(browser.text("#balance").await, "500");
    // A refresh of the result, and the question answered again from its page: nothing more.
    browser.refresh().await;
    browser.find("#balance").await;
    browser.goto(&question).await;
    browser.click("#confirm-credits button").await;
    browser.find("#balance").await;
    assert_eq!(browser.text("#balance").await, "500");
    assert_eq!(app.balance(data.grace).await, d("500"));

    // A Telegram sale confirmed with its payment reference.
    browser
        .goto(&format!("{}/admin/purchases?status=pending", app.url))
        .await;
    let row = format!("#purchase-{}", data.pending);
    browser
        .fill(&format!("{row} form.confirm input[name=reference]"), "tx 0xbeef")
        .await;
    browser.click(&format!("{row} form.confirm button")).await;
    browser
        .wait_text("#done", WAIT, |t| {
            t.contains("confirmed as paid (reference tx 0xbeef)")
        })
        .await;
    assert_eq!(app.balance(data.grace).await, d("1500"));
    assert!(browser.text(&row).await.contains("INV-"));
    browser
        .screenshot(&screenshots(), "31-console-sale-confirmed")
        .await;
    // The result is a page of its own (post, redirect, get): a reload asks for it again and
    // sends no form. (A form sent again is the API suite's test: `post_again`.)
    let shown = browser.url().await;
    assert!(shown.contains("/admin/purchases?done="), "{shown}");
    browser.refresh().await;
    browser.find("#admin-purchases").await;
    assert_eq!(browser.url().await, shown);
    assert_eq!(app.balance(data.grace).await, d("1500"));

    // Another sale recorded on the account page, then rejected with a reason.
    browser.goto(&account).await;
    browser
        .fill("#telegram-sale input[name=reference]", "tg:@grace/order-2")
        .await;
    browser.click("#telegram-sale button").await;
    browser
        .wait_text("#done", WAIT, |t| t.contains("Telegram sale recorded"))
        .await;
    let (_, list) = app
        .admin_get(&format!("/v1/accounts/{}/purchases?limit=1", data.grace))
        .await;
    let second = list["data"][0]["id"].as_str().unwrap().to_owned();
    let row = format!("#purchase-{second}");
    browser
        .fill(
            &format!("{row} form.reject input[name=reason]"),
            "customer never paid",
        )
        .await;
    browser.click(&format!("{row} form.reject button")).await;
    browser.accept_dialog().await;
    browser
        .wait_text("#done", WAIT, |t| {
            t.contains("Purchase rejected (customer never paid)")
        })
        .await;
    let (_, p) = app.admin_get(&format!("/v1/purchases/{second}")).await;
    assert_eq!(p["status"], "failed");
    assert_eq!(app.balance(data.grace).await, d("1500"));

    // A new key: its secret once; a refresh shows the notice without it and makes no other key.
    browser.goto(&account).await;
    browser.fill("#key-form input[name=name]", "ops").await;
    browser.click("#key-form button").await;
    assert!(browser.text("#new-key-secret").await.starts_with("csk_"));
    browser.refresh().await;
    browser.find("#secret-gone").await;
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1 AND name = 'ops'")
            .bind(data.grace)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(keys, 1);
    browser.quit().await;
}
