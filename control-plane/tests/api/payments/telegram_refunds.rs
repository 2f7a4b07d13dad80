//! Telegram sales recorded and confirmed by an admin, admin refunds with credit notes, and who may
//! call the purchase routes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_telegram_sale_is_recorded_confirmed_once_and_audited() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let (s, b) = app
        .purchase(account, json!({"plan_id": PLAN_1K, "method": "telegram"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("reference"),
        "{b}"
    );

    let (s, p) = app
        .purchase(
            account,
            json!({"plan_id": PLAN_105K, "method": "telegram", "currency": "USDT", "reference": "tg:@acme/order-77"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["status"].as_str(), p["reference"].as_str()),
        (Some("pending"), Some("tg:@acme/order-77"))
    );
    assert!(p["checkout_url"].is_null() && p["pay_address"].is_null());
    assert_eq!(app.balance(account).await, d("0"));

    let path = format!("/v1/purchases/{}/confirm", p["id"].as_str().unwrap());
    let confirm = |body: Value| {
        let app = &app;
        let path = path.clone();
        async move {
            let resp = app
                .admin(Method::POST, &path)
                .header("x-claudestore-actor", "support-anna")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = resp
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            (resp.status(), replayed, resp.json::<Value>().await.unwrap())
        }
    };
    let results = futures::future::join_all((0..8).map(|_| confirm(json!({"reference": "tx 0xabc"})))).await;
    for (s, _, b) in &results {
        assert_eq!(*s, StatusCode::OK, "{b}");
        assert_eq!(b["status"], "paid");
    }
    // One of the eight paid it; the others are told that they changed nothing.
    assert_eq!(results.iter().filter(|(_, replayed, _)| !replayed).count(), 1);
    assert_eq!(app.balance(account).await, d("105000"));
    let paid = audit_actions(&app, "purchase.paid").await;
    assert_eq!(paid.len(), 1);
    let (actor, target, details) = &paid[0];
    assert_eq!(actor, "admin:support-anna");
    assert_eq!(target, &format!("purchase:{}", p["id"].as_str().unwrap()));
    assert_eq!(details["reference"], "tx 0xabc");
    assert_eq!(details["amount_usd"], "500");
    assert_eq!(details["credits"], "105000");
    let created = audit_actions(&app, "purchase.create").await;
    assert_eq!(created[0].2["reference"], "tg:@acme/order-77");
    let (_, log) = app
        .admin_get(&format!(
            "/v1/audit?target=purchase:{}",
            p["id"].as_str().unwrap()
        ))
        .await;
    assert!(log["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["created_at"].is_string()));

    // A card purchase is confirmed by its processor, never by hand.
    let card = app.card_purchase(account, PLAN_1K).await;
    let (s, b) = send(app.admin(
        Method::POST,
        &format!("/v1/purchases/{}/confirm", card["id"].as_str().unwrap()),
    ))
    .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn an_admin_refund_reverses_the_credits_issues_a_credit_note_and_may_go_negative() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let (_, p) = app
        .purchase(
            account,
            json!({"plan_id": PLAN_1K, "method": "telegram", "reference": "order-1"}),
        )
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let refund = format!("/v1/purchases/{id}/refund");
    let (s, b) = app
        .admin_json(Method::POST, &refund, json!({"reason": "x"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");

    send(app.admin(Method::POST, &format!("/v1/purchases/{id}/confirm"))).await;
    app.admin_json(
        Method::POST,
        &format!("/v1/accounts/{account}/credits"),
        json!({"credits": "-250", "reason": "spent", "idempotency_key": "spend-1"}),
    )
    .await;
    let (s, b) = app.admin_json(Method::POST, &refund, json!({})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let refund_once = |reason: &'static str| {
        let req = app
            .admin(Method::POST, &refund)
            .json(&json!({ "reason": reason }));
        async move {
            let resp = req.send().await.unwrap();
            let replayed = resp
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            (resp.status(), replayed, resp.json::<Value>().await.unwrap())
        }
    };
    let (s, replayed, r) = refund_once("sold by mistake").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(!replayed, "the first refund is carried out now");
    assert_eq!(r["status"], "refunded");
    assert_eq!(r["status_reason"], "sold by mistake");
    assert_eq!(app.balance(account).await, d("-250"));
    let (_, replayed, r2) = refund_once("again").await;
    assert!(replayed, "a second refund is told it changed nothing");
    assert_eq!(r2["credit_note_number"], r["credit_note_number"]);
    assert_eq!(app.balance(account).await, d("-250"));

    let (s, note) = app
        .admin_get(&format!(
            "/v1/invoices/{}",
            r["credit_note_number"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{note}");
    assert_eq!(note["kind"], "credit_note");
    assert_eq!(note["corrects"], r["invoice_number"]);
    assert_eq!(note["total_usd"], "-5.00");
    assert_eq!(note["lines"][0]["credits"], "-1000");
    assert_eq!(note["note"], "sold by mistake");
    let (_, ledger) = app.admin_get(&format!("/v1/accounts/{account}/ledger")).await;
    assert_eq!(ledger["data"][0]["kind"], "refund");
    assert_eq!(ledger["data"][0]["credits"], "-1000");
    let (_, billing) = app.admin_get(&format!("/v1/accounts/{account}/billing")).await;
    assert_eq!(billing["flags"].as_array().unwrap().len(), 1);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn purchase_routes_are_for_the_admin_and_validate_their_input() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let path = format!("/v1/accounts/{account}/purchases");
    let body = json!({"plan_id": PLAN_1K, "method": "telegram", "reference": "r"});
    let (s, b) = send(app.req(Method::POST, &path).json(&body)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.req(Method::POST, &path).bearer_auth(&secret).json(&body)).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "permission_error");
    let (s, b) = app.purchase(uuid::Uuid::new_v4(), body.clone()).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = app
        .purchase(
            account,
            json!({"plan_id": uuid::Uuid::new_v4(), "method": "telegram", "reference": "r"}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = app
        .purchase(account, json!({"plan_id": PLAN_1K, "method": "cash"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/plans/{PLAN_1K}"),
            json!({"active": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.purchase(account, body).await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error");
    let (s, b) = app
        .admin_get(&format!("/v1/purchases/{}", uuid::Uuid::new_v4()))
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
}

#[tokio::test]
async fn purchases_list_newest_first_in_pages() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, p) = app
            .purchase(
                account,
                json!({"plan_id": PLAN_1K, "method": "telegram", "reference": format!("o{i}")}),
            )
            .await;
        ids.push(p["id"].clone());
    }
    let (_, page1) = app
        .admin_get(&format!("/v1/accounts/{account}/purchases?limit=3"))
        .await;
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .admin_get(&format!(
            "/v1/accounts/{account}/purchases?limit=3&cursor={cursor}"
        ))
        .await;
    assert!(page2["next_cursor"].is_null());
    let seen: Vec<Value> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|p| p["id"].clone())
        .collect();
    ids.reverse();
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn a_held_purchase_is_approved_for_a_chosen_share_or_rejected_by_an_admin() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.crypto_purchase(account, PLAN_105K, "USDT_TRC20").await;
    app.ipn(&ipn_body(&p, "partially_paid", "250.25")).await;
    assert_eq!(app.get_purchase(&p["id"]).await["status"], "held");
    let confirm = format!("/v1/purchases/{}/confirm", p["id"].as_str().unwrap());
    for bad in [
        json!({"credits": "0"}),
        json!({"credits": "105001"}),
        json!({"credits": "1.5"}),
    ] {
        let (s, b) = app.admin_json(Method::POST, &confirm, bad).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let (s, b) = app
        .admin_json(Method::POST, &confirm, json!({"credits": "52500"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["status"].as_str(), b["credited"].as_str()),
        (Some("paid"), Some("52500"))
    );
    let (_, inv) = app
        .admin_get(&format!("/v1/invoices/{}", b["invoice_number"].as_str().unwrap()))
        .await;
    assert_eq!(inv["total_usd"], "250.00");
    assert_eq!(inv["payment_reference"], p["provider_ref"]);
    assert_eq!(app.balance(account).await, d("52500"));

    let q = app.crypto_purchase(account, PLAN_1K, "BTC").await;
    let q_confirm = format!("/v1/purchases/{}/confirm", q["id"].as_str().unwrap());
    let (s, b) = send(app.admin(Method::POST, &q_confirm)).await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    let reject = format!("/v1/purchases/{}/reject", q["id"].as_str().unwrap());
    let (s, b) = app
        .admin_json(Method::POST, &reject, json!({"reason": "customer gave up"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["status_reason"], "rejected: customer gave up");
    let (s, b) = app
        .admin_json(Method::POST, &reject, json!({"reason": "again"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    let (_, b) = app.ipn(&ipn_body(&q, "finished", "0.0052")).await;
    assert_eq!(b["outcome"], "noted_late_payment");
    assert_eq!(app.balance(account).await, d("52500"));
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn a_customer_lists_their_own_purchases_and_invoices_with_their_key() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let other = app.create_account("other").await;
    let (_, secret) = app.create_key(account, "k").await;
    for (acc, reference) in [(account, "mine"), (other, "theirs")] {
        let (_, p) = app
            .purchase(
                acc,
                json!({"plan_id": PLAN_1K, "method": "telegram", "reference": reference}),
            )
            .await;
        send(app.admin(
            Method::POST,
            &format!("/v1/purchases/{}/confirm", p["id"].as_str().unwrap()),
        ))
        .await;
    }
    let (s, mine) = send(
        app.req(Method::GET, "/v1/me/purchases")
            .header("x-api-key", &secret),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let data = mine["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["reference"], "mine");
    assert!(data[0]["review_note"].is_null());
    let (s, invoices) = send(app.req(Method::GET, "/v1/me/invoices").bearer_auth(&secret)).await;
    assert_eq!(s, StatusCode::OK, "{invoices}");
    assert_eq!(invoices["data"].as_array().unwrap().len(), 1);
    assert_eq!(invoices["data"][0]["number"], data[0]["invoice_number"]);
    assert_eq!(invoices["data"][0]["total_usd"], "5.00");
    let (s, b) = send(app.req(Method::GET, "/v1/me/purchases")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
}
