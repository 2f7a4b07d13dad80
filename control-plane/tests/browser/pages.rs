//! Every page of the dashboard (and, through [`check_pages`], of the console) at a phone's width
//! (390 px) and a laptop's (1280 px): nothing on the page is wider than the screen, and a
//! screenshot of each goes to `target/screenshots/pages/` for review.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::scenarios::{account_named, signed_in, ONE_BROWSER};
use crate::webdriver::Browser;
use crate::{browser_available, screenshots, workdir};

/// A phone's and a laptop's width, in CSS pixels.
pub const WIDTHS: [u32; 2] = [390, 1280];

/// Visits each `(name, path)` at both widths: the page loads (its `h1`), nothing sticks out
/// sideways, and a screenshot `{prefix}-{name}-{width}.png` is written.
pub async fn check_pages(browser: &Browser, base: &str, prefix: &str, pages: &[(&str, String)]) {
    let dir = screenshots().join("pages");
    for width in WIDTHS {
        browser.set_width(width).await;
        for (name, path) in pages {
            browser.goto(&format!("{base}{path}")).await;
            browser.find("main h1").await;
            let (overflow, worst) = browser.overflow().await;
            assert!(
                overflow <= 0,
                "{path} at {width} px scrolls sideways by {overflow} px (widest: {worst})"
            );
            browser
                .full_page_screenshot(&dir, &format!("{prefix}-{name}-{width}"))
                .await;
        }
    }
}

#[tokio::test]
async fn every_customer_page_fits_a_phone_and_a_laptop() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let account = account_named(&app, "Grace Brewster Murray Hopper", "grace.hopper@example.com").await;
    let (key_id, secret) = app
        .create_key(account, "a key with a rather long name for a phone screen")
        .await;
    app.grant(account, "12345.6789", "welcome").await;
    let (s, body) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/keys/{key_id}"),
            json!({"limit": {"credits": "500", "period": "day"}, "allowed_models": ["claude-sonnet-4-5", "claude-haiku-*"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let now = Utc::now();
    let mut debits = Vec::new();
    for (i, model) in [
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-5",
        "claude-sonnet-4-5",
    ]
    .iter()
    .enumerate()
    {
        for day in 0..12 {
            debits.push(debit(
                account,
                &secret,
                model,
                usage(10_000 * (i as u64 + 1), 2_000 + day * 100),
                now - chrono::Duration::days(day as i64) - chrono::Duration::minutes(i as i64),
            ));
        }
    }
    app.debits(debits).await;
    let browser = Browser::start(&workdir("pages")).await;
    // Signed out: the sign-in pages and the page of a password link.
    let link = app.password_link(account).await.0;
    let signed_out: Vec<(&str, String)> = vec![
        ("sign-in", "/dashboard/login".into()),
        ("console-sign-in", "/admin/login".into()),
        ("password-link", link),
    ];
    check_pages(&browser, &app.url, "signed-out", &signed_out).await;
    signed_in(&app, &browser, account).await;
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/dashboard".into()),
        ("usage", "/dashboard/usage".into()),
        (
            "usage-90-days",
            "/dashboard/usage?days=90&model=claude-sonnet-4-5".into(),
        ),
        ("keys", "/dashboard/keys".into()),
        ("key-limits", format!("/dashboard/keys/{key_id}")),
        ("history", "/dashboard/history".into()),
        ("prices", "/dashboard/prices".into()),
        ("buy", "/dashboard/buy".into()),
        ("purchases", "/dashboard/purchases".into()),
        ("settings", "/dashboard/settings".into()),
        ("error-bad-value", "/dashboard/purchases/not-a-purchase".into()),
        ("error-no-page", "/dashboard/no-such-page".into()),
    ];
    check_pages(&browser, &app.url, "customer", &pages).await;
    browser.quit().await;
}
