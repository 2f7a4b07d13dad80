//! Crypto payments through the fake NOWPayments: quotes per currency and network, IPN policy for
//! full, partial, over, late and wrong-currency payments.

use chrono::{Duration, Utc};
use control_plane::payments::expiry::expire_pending;
use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_crypto_purchase_quotes_address_amount_currency_and_network_explicitly() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let expected = [
        ("BTC", "btc", "bitcoin", "0.0052"),
        ("ETH", "eth", "ethereum", "0.145"),
        ("USDT_TRC20", "usdttrc20", "tron", "500.5"),
        ("USDT_ERC20", "usdterc20", "ethereum", "501.25"),
        ("USDC_ERC20", "usdcerc20", "ethereum", "500.75"),
    ];
    for (currency, code, network, amount) in expected {
        let p = app.crypto_purchase(account, PLAN_105K, currency).await;
        assert_eq!(p["status"], "pending");
        assert_eq!(p["pay_currency"], currency, "{p}");
        assert_eq!(p["network"], network, "{p}");
        assert_eq!(dec(&p["pay_amount"]), d(amount), "{p}");
        assert!(
            p["pay_address"]
                .as_str()
                .unwrap()
                .starts_with(&format!("addr_{code}_")),
            "{p}"
        );
        let asked = app.np.state.payments.lock().unwrap().last().cloned().unwrap();
        assert_eq!(asked["pay_currency"], code);
        assert_eq!(asked["price_currency"], "usd");
        assert_eq!(asked["price_amount"], 500.0);
        assert_eq!(asked["order_id"], p["id"]);
        assert_eq!(
            asked["ipn_callback_url"],
            "http://127.0.0.1/v1/webhooks/nowpayments"
        );
    }
    for bad in [json!("DOGE"), json!("usdt_trc20"), json!(null)] {
        let (s, b) = app
            .purchase(
                account,
                json!({"plan_id": PLAN_1K, "method": "crypto", "currency": bad}),
            )
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
}

#[tokio::test]
async fn a_processor_quoting_another_currency_fails_the_purchase() {
    let app = spawn_pay_app().await;
    *app.np.state.answer_currency.lock().unwrap() = Some("usdtbsc".into());
    let account = app.create_account("acme").await;
    let (s, b) = app
        .purchase(
            account,
            json!({"plan_id": PLAN_1K, "method": "crypto", "currency": "USDT_TRC20"}),
        )
        .await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "api_error");
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/purchases")).await;
    assert_eq!(list["data"][0]["status"], "failed");
}

#[tokio::test]
async fn a_finished_payment_credits_once_however_often_it_is_reported() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_105K, "USDT_TRC20").await;
    let (s, b) = app.ipn(&ipn_body(&p, "confirming", "500.5")).await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("in_progress")),
        "{b}"
    );
    let finished = ipn_body(&p, "finished", "500.5");
    let sends = (0..12).map(|_| app.ipn(&finished));
    let results = futures::future::join_all(sends).await;
    let applied = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::OK && b["duplicate"] == false)
        .count();
    assert_eq!(applied, 1, "{results:?}");
    assert_eq!(app.balance(account).await, d("105000"));
    let paid = app.get_purchase(&p["id"]).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(dec(&paid["received_amount"]), d("500.5"));
    assert!(paid["review_note"].is_null());
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn an_under_payment_is_held_and_a_later_full_payment_pays_it() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_105K, "USDT_TRC20").await;
    let (_, b) = app.ipn(&ipn_body(&p, "partially_paid", "250.25")).await;
    assert_eq!(b["outcome"], "held_underpaid");
    let held = app.get_purchase(&p["id"]).await;
    assert_eq!(held["status"], "held");
    assert!(
        held["status_reason"]
            .as_str()
            .unwrap()
            .contains("received 250.25 of 500.5"),
        "{held}"
    );
    assert_eq!(app.balance(account).await, d("0"));
    let (_, b) = app.ipn(&ipn_body(&p, "finished", "500.5")).await;
    assert_eq!(b["outcome"], "paid");
    assert_eq!(app.get_purchase(&p["id"]).await["status"], "paid");
    assert_eq!(app.balance(account).await, d("105000"));
}

#[tokio::test]
async fn under_credit_share_a_short_payment_credits_the_share_in_whole_credits() {
    let app = spawn_pay_app_with(credit_share, |r| r).await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_105K, "USDT_TRC20").await;
    let (_, b) = app.ipn(&ipn_body(&p, "partially_paid", "100")).await;
    assert_eq!(b["outcome"], "partial_waiting");
    assert_eq!(app.get_purchase(&p["id"]).await["status"], "pending");
    let (_, b) = app.ipn(&ipn_body(&p, "finished", "200.2")).await;
    assert_eq!(b["outcome"], "paid_share");
    // 200.2 / 500.5 = 0.4 of 105,000 credits and of $500.
    let paid = app.get_purchase(&p["id"]).await;
    assert_eq!(dec(&paid["credited"]), d("42000"));
    assert_eq!(app.balance(account).await, d("42000"));
    let (_, inv) = app
        .admin_get(&format!(
            "/v1/invoices/{}",
            paid["invoice_number"].as_str().unwrap()
        ))
        .await;
    assert_eq!(inv["total_usd"], "200.00");
    assert_eq!(inv["lines"][0]["credits"], "42000");

    // A share that does not come to a whole credit: rounded down.
    let q = app.crypto_purchase(account, PLAN_1K, "USDT_TRC20").await;
    let (_, b) = app.ipn(&ipn_body(&q, "partially_paid", "0.3337")).await;
    assert_eq!(b["outcome"], "partial_waiting");
    let report = expire_pending(&app.pool, Utc::now() + Duration::hours(25), &share_config())
        .await
        .unwrap();
    // 0.3337 / 500.5 x 1000 = 0.666...: not a whole credit to grant, so it is held.
    assert_eq!((report.paid, report.held), (0, 1), "{report:?}");
    assert_eq!(app.get_purchase(&q["id"]).await["status"], "held");
    assert_eq!(app.balance(account).await, d("42000"));
}

fn share_config() -> control_plane::config::PaymentConfig {
    let mut c = control_plane::config::PaymentConfig::default();
    credit_share(&mut c);
    c
}

#[tokio::test]
async fn an_over_payment_credits_the_plan_and_notes_the_excess_for_review() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_105K, "BTC").await;
    let (_, b) = app.ipn(&ipn_body(&p, "finished", "0.0060")).await;
    assert_eq!(b["outcome"], "paid_overpaid");
    let paid = app.get_purchase(&p["id"]).await;
    assert_eq!(dec(&paid["credited"]), d("105000"));
    let note = paid["review_note"].as_str().unwrap();
    assert!(
        note.contains("over-payment") && note.contains("excess 0.0008"),
        "{note}"
    );
    assert_eq!(app.balance(account).await, d("105000"));
}

#[tokio::test]
async fn a_payment_in_another_currency_or_on_another_network_is_held() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_1K, "USDT_TRC20").await;
    let mut wrong = ipn_body(&p, "finished", "500.5");
    wrong["pay_currency"] = json!("usdterc20");
    let (_, b) = app.ipn(&wrong).await;
    assert_eq!(b["outcome"], "held_wrong_currency");
    let held = app.get_purchase(&p["id"]).await;
    assert_eq!(held["status"], "held");
    assert!(
        held["status_reason"]
            .as_str()
            .unwrap()
            .contains("USDT_ERC20 on ethereum"),
        "{held}"
    );

    let q = app.crypto_purchase(account, PLAN_1K, "USDT_TRC20").await;
    let mut network = ipn_body(&q, "finished", "500.5");
    network["network"] = json!("bsc");
    let (_, b) = app.ipn(&network).await;
    assert_eq!(b["outcome"], "held_wrong_currency");
    assert_eq!(app.get_purchase(&q["id"]).await["status"], "held");
    assert_eq!(app.balance(account).await, d("0"));
}

#[tokio::test]
async fn failed_expired_and_late_payments_never_credit() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let failed = app.crypto_purchase(account, PLAN_1K, "ETH").await;
    let (_, b) = app.ipn(&ipn_body(&failed, "failed", "0")).await;
    assert_eq!(b["outcome"], "failed");
    let expired = app.crypto_purchase(account, PLAN_1K, "ETH").await;
    let (_, b) = app.ipn(&ipn_body(&expired, "expired", "0")).await;
    assert_eq!(b["outcome"], "expired");
    assert_eq!(app.get_purchase(&failed["id"]).await["status"], "failed");
    assert_eq!(app.get_purchase(&expired["id"]).await["status"], "expired");

    let late = app.crypto_purchase(account, PLAN_1K, "ETH").await;
    let report = expire_pending(&app.pool, Utc::now() + Duration::hours(25), &Default::default())
        .await
        .unwrap();
    assert_eq!(report.expired, 1);
    let (_, b) = app.ipn(&ipn_body(&late, "finished", "0.145")).await;
    assert_eq!(b["outcome"], "noted_late_payment");
    let late = app.get_purchase(&late["id"]).await;
    assert_eq!(late["status"], "expired");
    assert!(
        late["review_note"].as_str().unwrap().contains("late payment"),
        "{late}"
    );
    assert_eq!(app.balance(account).await, d("0"));
    assert_eq!(audit_actions(&app, "purchase.review").await.len(), 1);
}
