//! The console's pages over the API's reports: the audit log (filtered by target, paged) and the
//! margin report (a date range); the seller banner while seller details are placeholders.

use chrono::Utc;
use control_plane::config::PaymentConfig;
use reqwest::StatusCode;

use crate::helpers::*;
use crate::web::*;

#[tokio::test]
async fn the_audit_log_page_filters_by_target_and_pages_to_the_end() {
    let app = spawn_app().await;
    let alice = app.create_account("alice").await;
    let bob = app.create_account("bob").await;
    for i in 0..55 {
        app.grant(alice, "1", &format!("g{i}")).await;
    }
    app.grant(bob, "2", "bob-1").await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "auditor").await;
    let all = web.get("/admin/audit").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert!(all.body.contains("credits.grant") && all.body.contains(&format!("account:{bob}")));
    let mine = web.get(&format!("/admin/audit?target=account:{alice}")).await;
    assert!(!mine.body.contains(&format!("account:{bob}")), "{}", mine.body);
    assert_eq!(
        mine.body.matches("<td class=\"mono\">credits.grant</td>").count(),
        50
    );
    let marker = "id=\"audit-older\" href=\"";
    let start = mine.body.find(marker).expect("an Older link") + marker.len();
    let end = mine.body[start..].find('"').unwrap() + start;
    let older = web.get(&mine.body[start..end].replace("&amp;", "&")).await;
    assert_eq!(older.status, StatusCode::OK, "{}", older.body);
    // 55 grants and the account's creation: 6 entries on the second page, and no further page.
    assert_eq!(older.body.matches("<tr>").count() - 1, 6, "{}", older.body);
    assert!(!older.body.contains("audit-older") && older.body.contains("audit-newest"));
    let bad = web.get("/admin/audit?cursor=not-a-cursor").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_margin_page_shows_a_date_range_by_model_and_day_and_refuses_a_bad_range_in_words() {
    let app = spawn_app().await;
    let account = app.create_account("margin").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "100000", "g").await;
    let now = Utc::now();
    app.debits(vec![
        debit(account, &secret, "claude-sonnet-4-5", usage(100_000, 10_000), now),
        debit(
            account,
            &secret,
            "claude-haiku-4-5",
            usage(50_000, 5_000),
            now - chrono::Duration::days(3),
        ),
    ])
    .await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "finance").await;
    let page = web.get("/admin/margins").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for said in [
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "All models",
        "id=\"margins\"",
    ] {
        assert!(page.body.contains(said), "{said}: {}", page.body);
    }
    let today = now.date_naive();
    let only_today = web.get(&format!("/admin/margins?from={today}&to={today}")).await;
    assert!(only_today.body.contains("claude-sonnet-4-5") && !only_today.body.contains("claude-haiku-4-5"));
    let old = web.get("/admin/margins?from=2020-01-01&to=2020-01-02").await;
    assert!(old.body.contains("id=\"no-margins\""), "{}", old.body);
    let bad = web.get("/admin/margins?from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not a date"), "{}", bad.body);
    let long = web.get("/admin/margins?from=2020-01-01&to=2026-01-01").await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    assert!(long.body.contains("at most"), "{}", long.body);
}

#[tokio::test]
async fn every_console_page_warns_while_seller_details_are_placeholders() {
    let app = spawn_app().await;
    let account = app.create_account("seller").await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "op").await;
    for path in [
        "/admin".to_owned(),
        format!("/admin/accounts/{account}"),
        "/admin/purchases".into(),
        "/admin/prices".into(),
        "/admin/plans".into(),
        "/admin/audit".into(),
        "/admin/margins".into(),
    ] {
        let p = web.get(&path).await;
        assert!(
            p.body.contains("id=\"seller-placeholders\"")
                && p.body.contains("SELLER_NAME, SELLER_ADDRESS and SELLER_TAX_ID"),
            "{path}: {}",
            p.body
        );
    }
    let configured = PaymentConfig {
        seller_name: "Seller Ltd".into(),
        seller_address: "1 Street".into(),
        seller_tax_id: "DE1".into(),
        ..PaymentConfig::default()
    };
    let app = spawn_app_custom(d("0.7"), configured, |r| r).await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "op").await;
    assert!(!web.get("/admin").await.body.contains("seller-placeholders"));
}
