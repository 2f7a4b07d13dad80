//! What a customer does beyond the first visit, click by click: filters the usage and pages the
//! request log, creates a key and refreshes (one key), sends a form twice (one change), reads the
//! balance history and the prices, edits billing details, the alert and the password, and looks
//! at what buying offers.

use chrono::{Duration, Utc};

use crate::helpers::*;
use crate::scenarios::{signed_in, ONE_BROWSER};
use crate::webdriver::{Browser, WAIT};
use crate::{browser_available, screenshots, workdir};

async fn keys_of(app: &TestApp, account: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_customer_filters_usage_keeps_forms_to_one_change_and_edits_settings() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app_with(|c| {
        c.payments.telegram_contact = Some(control_plane::config::Contact {
            label: "@claudestore_sales".into(),
            href: "https://t.me/claudestore_sales".into(),
        });
    })
    .await;
    let account = app.create_account("lin").await;
    let (work_key, work) = app.create_key(account, "work").await;
    let (_, home) = app.create_key(account, "home").await;
    app.grant(account, "1000", "g").await;
    let now = Utc::now();
    let mut debits: Vec<_> = (0..55)
        .map(|i| {
            debit(
                account,
                &work,
                "claude-sonnet-4-5",
                usage(2000, 100),
                now - Duration::minutes(i),
            )
        })
        .collect();
    debits.push(debit(account, &home, "claude-haiku-4-5", usage(500, 50), now));
    app.debits(debits).await;
    let browser = Browser::start(&workdir("customer-flows")).await;
    signed_in(&app, &browser, account).await;

    // Usage: one key, then the log's second page.
    browser.goto(&format!("{}/dashboard/usage", app.url)).await;
    assert_eq!(browser.text("#usage-requests").await, "56");
    browser
        .script(&format!(
            "document.querySelector('select[name=key]').value = '{work_key}'; return null;"
        ))
        .await;
    browser.click("#usage-filters button").await;
    browser.wait_text("#usage-requests", WAIT, |t| t == "55").await;
    browser.screenshot(&screenshots(), "20-usage-one-key").await;
    browser.click("#requests-next").await;
    browser.find("#request-log").await;
    assert!(browser.url().await.contains("cursor="));
    assert!(!browser.exists("#requests-next").await, "55 requests: two pages");
    let rows = browser
        .script("return document.querySelectorAll('#request-log tbody tr').length;")
        .await;
    assert_eq!(rows.as_u64(), Some(5));

    // A new key, then a refresh of the page it lands on: still one new key, its secret gone.
    browser.goto(&format!("{}/dashboard/keys", app.url)).await;
    let before = keys_of(&app, account).await;
    browser.fill("input[name=name]", "laptop").await;
    browser.click("form[action='/dashboard/keys'] button").await;
    assert!(browser.text("#new-key-secret").await.starts_with("csk_"));
    assert!(browser.text("#done").await.contains("laptop"));
    browser.refresh().await;
    browser.find("#keys").await;
    assert!(!browser.exists("#new-key-secret").await, "shown once");
    assert_eq!(keys_of(&app, account).await, before + 1);

    // The same form sent twice at once (a double click): one key.
    browser.fill("input[name=name]", "double").await;
    browser
        .script("const f = document.querySelector(\"form[action='/dashboard/keys']\"); f.submit(); f.submit(); return null;")
        .await;
    browser.find("#done").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        keys_of(&app, account).await,
        before + 2,
        "one key for a double submission"
    );

    // History and prices.
    browser.click("a[href='/dashboard/history']").await;
    assert!(browser.text("#history").await.contains("API request"));
    browser.click("a[href='/dashboard/history?requests=hide']").await;
    browser
        .wait_text("#history", WAIT, |t| {
            t.contains("Credits added by us") && !t.contains("API request")
        })
        .await;
    browser.click("a[href='/dashboard/prices']").await;
    assert!(browser.text("#prices").await.contains("claude-sonnet-4-5"));

    // Settings: billing details, then an alert above the balance: the banner on every page.
    browser.click("a[href='/dashboard/settings']").await;
    browser.fill("#billing input[name=name]", "Lin Ltd").await;
    browser
        .fill("#billing textarea[name=address]", "1 Harbour Road\nHong Kong")
        .await;
    browser.click("#billing button").await;
    assert!(browser.text("#done").await.contains("Billing details saved"));
    let (_, billing) = app.admin_get(&format!("/v1/accounts/{account}/billing")).await;
    assert_eq!(billing["name"], "Lin Ltd");
    browser
        .fill("#alerts input[name=low_balance_threshold]", "100000")
        .await;
    browser.click("#alerts button").await;
    browser.find("#low-balance").await;
    browser.click("a[href='/dashboard/usage']").await;
    assert!(browser
        .text("#low-balance")
        .await
        .contains("below your alert threshold"));
    browser.screenshot(&screenshots(), "21-low-balance").await;

    // The password: a wrong current one is said, the right one changes it.
    for (current, says) in [
        ("wrong password!", "current password is not right"),
        (crate::scenarios::PASSWORD, "Password changed"),
    ] {
        browser.goto(&format!("{}/dashboard/settings", app.url)).await;
        browser.fill("#password input[name=current]", current).await;
        browser
            .fill("#password input[name=password]", "another long password")
            .await;
        browser
            .fill("#password input[name=confirm]", "another long password")
            .await;
        browser.click("#password button").await;
        browser.wait_text("main", WAIT, |t| t.contains(says)).await;
    }

    // Buying: the savings and the Telegram contact; card and crypto said to be off.
    browser.click("a[href='/dashboard/buy']").await;
    let plans = browser.text(".plans").await;
    assert!(
        plans.contains("Save 9%") && plans.contains("$1,250.00"),
        "{plans}"
    );
    assert!(browser
        .text("#methods")
        .await
        .contains("Card payments are not available here."));
    assert!(
        browser
            .exists("a.telegram[href='https://t.me/claudestore_sales']")
            .await
    );
    browser.screenshot(&screenshots(), "22-buy").await;
    browser.quit().await;
}
