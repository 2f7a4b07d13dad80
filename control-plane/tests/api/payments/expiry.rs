//! Expiry of pending purchases, driven one step at a time with a chosen `now`.

use chrono::{Duration, Utc};
use control_plane::config::PaymentConfig;
use control_plane::payments::expiry::{expire_pending, ExpiryReport};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn pending_purchases_expire_after_the_configured_time_and_nothing_else_does() {
    let app = spawn_pay_app_with(|c| c.purchase_expiry = Duration::hours(2), |r| r).await;
    let config = PaymentConfig {
        purchase_expiry: Duration::hours(2),
        ..PaymentConfig::default()
    };
    let account = app.create_account("acme").await;
    let card = app.card_purchase(account, PLAN_1K).await;
    let (_, sale) = app
        .purchase(
            account,
            json!({"plan_id": PLAN_1K, "method": "telegram", "reference": "r"}),
        )
        .await;
    let (_, paid) = app
        .purchase(
            account,
            json!({"plan_id": PLAN_1K, "method": "telegram", "reference": "r2"}),
        )
        .await;
    send(app.admin(
        Method::POST,
        &format!("/v1/purchases/{}/confirm", paid["id"].as_str().unwrap()),
    ))
    .await;
    let created = chrono::DateTime::parse_from_rfc3339(card["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(card["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, Duration::hours(2));

    let early = expire_pending(&app.pool, Utc::now() + Duration::minutes(110), &config)
        .await
        .unwrap();
    assert_eq!(early, ExpiryReport::default());
    let due = expire_pending(&app.pool, Utc::now() + Duration::minutes(121), &config)
        .await
        .unwrap();
    assert_eq!(due.expired, 2, "{due:?}");
    for p in [&card, &sale] {
        let p = app.get_purchase(&p["id"]).await;
        assert_eq!(p["status"], "expired");
        assert_eq!(p["status_reason"], "not paid in time");
    }
    assert_eq!(app.get_purchase(&paid["id"]).await["status"], "paid");
    let again = expire_pending(&app.pool, Utc::now() + Duration::days(3), &config)
        .await
        .unwrap();
    assert_eq!(again, ExpiryReport::default());

    // An expired sale can no longer be confirmed.
    let (s, b) = send(app.admin(
        Method::POST,
        &format!("/v1/purchases/{}/confirm", sale["id"].as_str().unwrap()),
    ))
    .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    assert_eq!(app.balance(account).await, d("1000"));
    assert_eq!(audit_actions(&app, "purchase.expired").await.len(), 2);
}

#[tokio::test]
async fn crypto_money_received_by_expiry_is_held_or_shared_never_dropped() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let confirming = app.crypto_purchase(account, PLAN_1K, "BTC").await;
    app.ipn(&ipn_body(&confirming, "confirming", "0")).await;
    let later = Utc::now() + Duration::hours(25);
    let report = expire_pending(&app.pool, later, &PaymentConfig::default())
        .await
        .unwrap();
    assert_eq!(report.held, 1, "{report:?}");
    let held = app.get_purchase(&confirming["id"]).await;
    assert_eq!(held["status"], "held");
    assert!(
        held["status_reason"]
            .as_str()
            .unwrap()
            .contains("being confirmed"),
        "{held}"
    );

    let shared = spawn_pay_app_with(credit_share, |r| r).await;
    let account = shared.create_account("acme").await;
    let p = shared.crypto_purchase(account, PLAN_105K, "USDT_ERC20").await;
    let (_, b) = shared.ipn(&ipn_body(&p, "partially_paid", "250.625")).await;
    assert_eq!(b["outcome"], "partial_waiting");
    let mut config = PaymentConfig::default();
    credit_share(&mut config);
    let report = expire_pending(&shared.pool, later, &config).await.unwrap();
    assert_eq!(report.paid, 1, "{report:?}");
    let paid = shared.get_purchase(&p["id"]).await;
    assert_eq!(paid["status"], "paid");
    // 250.625 / 501.25 = one half.
    assert_eq!(dec(&paid["credited"]), d("52500"));
    assert_eq!(shared.balance(account).await, d("52500"));
    audit_ledger(&shared.pool).await;
}
