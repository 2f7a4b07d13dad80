//! What a customer and an admin do, click by click.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Mutex;

use crate::helpers::*;
use crate::webdriver::{Browser, WAIT};
use crate::{browser_available, screenshots, workdir};

/// One Chromium at a time: the machine has two cores.
pub static ONE_BROWSER: Mutex<()> = Mutex::const_new(());

pub const PASSWORD: &str = "correct horse battery staple";

pub async fn signed_in(app: &TestApp, browser: &Browser, account: uuid::Uuid) {
    let link = app.password_link(account).await.0;
    browser.goto(&format!("{}{link}", app.url)).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.fill("input[name=confirm]", PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.find("#balance").await;
    assert!(
        browser.url().await.ends_with("/dashboard"),
        "{}",
        browser.url().await
    );
}

/// A customer account with this name and email.
pub async fn account_named(app: &TestApp, name: &str, email: &str) -> uuid::Uuid {
    let (s, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": name, "email": email}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    id(&body["id"])
}

#[tokio::test]
async fn customer_sees_the_balance_drop_without_reloading_and_manages_keys() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let account = account_named(&app, "Ada Lovelace", "ada@example.com").await;
    let (_, secret) = app.create_key(account, "production").await;
    app.grant(account, "5000", "welcome").await;
    let earlier = Utc::now() - chrono::Duration::days(2);
    app.debits(vec![
        debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(40_000, 8_000),
            earlier,
        ),
        debit(
            account,
            &secret,
            "claude-haiku-4-5",
            usage(90_000, 20_000),
            earlier,
        ),
        debit(
            account,
            &secret,
            "claude-opus-4-5",
            usage(10_000, 3_000),
            earlier - chrono::Duration::days(3),
        ),
    ])
    .await;
    let work = workdir("customer");
    let browser = Browser::start(&work).await;

    // Sign-in: the dashboard refuses without a session, then the one-time link sets the password.
    browser.goto(&format!("{}/dashboard", app.url)).await;
    assert!(browser.url().await.ends_with("/dashboard/login"));
    browser.screenshot(&screenshots(), "01-sign-in").await;
    signed_in(&app, &browser, account).await;
    let before = app.balance(account).await;
    browser
        .wait_text("#balance", WAIT, |t| {
            t.replace(',', "") == before.round_dp(4).normalize().to_string()
        })
        .await;

    // A request through the gateway: the filter's debit batch. The open page follows it.
    browser.script("window.__notReloaded = true; return null;").await;
    let shown = browser.text("#balance").await;
    let started = Instant::now();
    app.debits(vec![debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        usage(100_000, 20_000),
        Utc::now(),
    )])
    .await;
    let after = browser
        .wait_text("#balance", Duration::from_secs(2), |t| t != shown)
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "balance moved after {elapsed:?}"
    );
    assert_eq!(
        browser.script("return window.__notReloaded === true;").await,
        json!(true),
        "the page reloaded"
    );
    let expected = app.balance(account).await;
    assert!(expected < before);
    assert_eq!(
        after.replace(',', ""),
        expected.round_dp(4).normalize().to_string()
    );
    browser.screenshot(&screenshots(), "02-overview").await;

    // Usage: the chart is drawn in the page (no request leaves the origin), the table and CSV.
    browser.click("a[href='/dashboard/usage']").await;
    browser.find("#usage-chart").await;
    let bars = browser
        .script("return document.querySelectorAll('#usage-chart rect').length;")
        .await;
    assert!(bars.as_u64().unwrap() >= 4, "{bars}");
    assert!(browser.text("#usage-table").await.contains("claude-opus-4-5"));
    browser.screenshot(&screenshots(), "03-usage").await;

    // Keys: a new key's secret is shown once; revoking asks first.
    browser.click("a[href='/dashboard/keys']").await;
    browser.fill("input[name=name]", "laptop").await;
    browser.click("form[action='/dashboard/keys'] button").await;
    let shown_secret = browser.text("#new-key-secret").await;
    assert!(shown_secret.starts_with("csk_"), "{shown_secret}");
    browser.screenshot(&screenshots(), "04-keys").await;
    let resp = app
        .req(Method::GET, "/v1/me")
        .bearer_auth(&shown_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the new key works");
    browser.click("form[data-confirm] button.danger").await;
    browser.accept_dialog().await;
    browser.find("#keys").await;
    assert!(
        !browser.exists("#new-key-secret").await,
        "the secret is not shown again"
    );
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1 AND status = 'revoked'")
            .bind(account)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(revoked, 1);

    // Sign-out ends the session.
    browser.click("form.signout button").await;
    browser.find("input[name=email]").await;
    browser.goto(&format!("{}/dashboard", app.url)).await;
    assert!(browser.url().await.ends_with("/dashboard/login"));
    browser.quit().await;
}

#[tokio::test]
async fn admin_signs_in_with_the_token_and_grants_credits() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let account = app.create_account("grace").await;
    app.create_key(account, "ci").await;
    app.create_account("linus").await;
    let work = workdir("admin");
    let browser = Browser::start(&work).await;
    browser.goto(&format!("{}/admin", app.url)).await;
    assert!(browser.url().await.ends_with("/admin/login"));
    browser.fill("input[name=token]", ADMIN).await;
    browser.fill("input[name=name]", "Margaret").await;
    browser.click("button[type=submit]").await;
    browser.find("#accounts").await;
    assert!(
        !browser.url().await.contains(ADMIN),
        "the token is never in a URL"
    );
    browser.fill("input[name=q]", "grace").await;
    browser.click("form[action='/admin'] button").await;
    browser
        .wait_text("#accounts", WAIT, |t| !t.contains("linus"))
        .await;
    browser.screenshot(&screenshots(), "10-admin-accounts").await;
    browser.click("#accounts a").await;
    browser.find("#credits-form").await;
    browser.fill("#credits-form input[name=credits]", "1500").await;
    browser
        .fill("#credits-form input[name=reason]", "support goodwill")
        .await;
    browser.click("#credits-form button").await;
    browser.wait_text("#balance", WAIT, |t| t == "1,500").await;
    assert!(browser.text("#ledger").await.contains("support goodwill"));
    assert_eq!(app.balance(account).await, d("1500"));
    browser.screenshot(&screenshots(), "11-admin-account").await;
    browser.click("a[href='/admin/prices']").await;
    browser.find("#prices").await;
    browser.screenshot(&screenshots(), "12-admin-prices").await;
    browser.click("a[href='/admin/plans']").await;
    browser.find("#plans").await;
    browser.screenshot(&screenshots(), "13-admin-plans").await;
    browser.quit().await;
}

#[tokio::test]
async fn hostile_names_do_not_run_and_a_cross_origin_form_is_refused() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let name = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
    let (_, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": name, "email": "mallory@example.com"}),
        )
        .await;
    let account = id(&body["id"]);
    let (_, secret) = app.create_key(account, "<svg onload=\"window.__xss=3\">").await;
    app.grant(account, "100", "g").await;
    let mut d1 = debit(account, &secret, "claude-sonnet-4-5", usage(10, 10), Utc::now());
    d1.model_served = Some("\"><img src=x onerror=\"window.__xss=4\">".into());
    app.debits(vec![d1]).await;

    // An attacker's page on another origin posts a form to the dashboard with the victim's cookie.
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_url = format!("http://{}", attacker.local_addr().unwrap());
    let target = format!("{}/dashboard/keys", app.url);
    let evil = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            axum::response::Html(format!(
                "<form id=f method=post action=\"{target}\"><input name=name value=stolen></form>\
                 <script>document.getElementById('f').submit()</script>"
            ))
        }),
    );
    tokio::spawn(async move { axum::serve(attacker, evil).await.unwrap() });

    let work = workdir("hostile");
    let browser = Browser::start(&work).await;
    signed_in(&app, &browser, account).await;
    for path in ["/dashboard", "/dashboard/keys", "/dashboard/usage"] {
        browser.goto(&format!("{}{path}", app.url)).await;
        browser.find("main h1").await;
        assert_eq!(browser.dialog().await, None, "{path}");
        assert_eq!(
            browser.script("return window.__xss === undefined;").await,
            json!(true),
            "{path}"
        );
    }
    assert!(
        browser.text("header .who").await.contains("<script>"),
        "the name shows as text"
    );
    browser.screenshot(&screenshots(), "20-escaped-names").await;

    browser.goto(&attacker_url).await;
    browser
        .wait_text("main", WAIT, |t| t.contains("did not come from this site"))
        .await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "the cross-origin post created nothing");
    browser.quit().await;
}
