//! Card payments: Checkout Session creation, fulfilment exactly once, out-of-order events, a lost
//! reply, refunds and disputes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::response::IntoResponse;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn card_purchase_opens_a_checkout_session_and_the_paid_event_credits_once() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_105K).await;
    assert_eq!(p["status"], "pending");
    assert_eq!(p["method"], "card");
    assert_eq!(dec(&p["credits"]), d("105000"));
    assert_eq!(dec(&p["amount_usd"]), d("500"));
    assert!(
        p["checkout_url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.test/"),
        "{p}"
    );
    assert!(p["invoice_number"].is_null());
    let sessions = app.stripe.state.sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 1);
    let form = &sessions[0];
    let id = p["id"].as_str().unwrap();
    assert_eq!(form["client_reference_id"], id);
    assert_eq!(form["metadata[purchase_id]"], id);
    assert_eq!(form["line_items[0][price_data][unit_amount]"], "50000");
    assert_eq!(form["line_items[0][price_data][currency]"], "usd");
    assert_eq!(form["mode"], "payment");

    let event = session_event("evt_paid_1", "checkout.session.completed", &p, "paid");
    let (s, b) = app.stripe_event(&event).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "paid");
    assert_eq!(app.balance(account).await, d("105000"));
    let paid = app.get_purchase(&p["id"]).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(dec(&paid["credited"]), d("105000"));
    assert!(
        paid["invoice_number"].as_str().unwrap().starts_with("INV-"),
        "{paid}"
    );

    let (s, b) = app.stripe_event(&event).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["duplicate"].as_bool(), b["outcome"].as_str()),
        (Some(true), Some("paid"))
    );
    let (s, b) = app
        .stripe_event(&session_event(
            "evt_async_1",
            "checkout.session.async_payment_succeeded",
            &p,
            "paid",
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["outcome"], "already_paid");
    assert_eq!(app.balance(account).await, d("105000"));
    let balances = audit_ledger(&app.pool).await;
    assert_eq!(balances[&control_plane::payments::SALES], d("-105000"));
    let paid_audit = audit_actions(&app, "purchase.paid").await;
    assert_eq!(paid_audit.len(), 1);
    assert_eq!(paid_audit[0].0, "stripe");
    assert_eq!(paid_audit[0].2["reference"], "evt_paid_1");
    assert_eq!(paid_audit[0].2["amount_usd"], "500");
}

#[tokio::test]
async fn the_same_event_delivered_many_times_concurrently_credits_once() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    let event = session_event("evt_many", "checkout.session.completed", &p, "paid");
    let other = session_event(
        "evt_many_async",
        "checkout.session.async_payment_succeeded",
        &p,
        "paid",
    );
    let sends = (0..24).map(|i| {
        let body = if i % 3 == 0 { other.clone() } else { event.clone() };
        let app = &app;
        async move { app.stripe_event(&body).await }
    });
    let results = futures::future::join_all(sends).await;
    let mut paid = 0;
    for (s, b) in &results {
        assert_eq!(*s, StatusCode::OK, "{b}");
        if b["outcome"] == "paid" && b["duplicate"] == false {
            paid += 1;
        }
    }
    assert_eq!(paid, 1, "exactly one delivery applied the payment: {results:?}");
    assert_eq!(app.balance(account).await, d("1000"));
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'purchase'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(transfers, 1);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn events_out_of_order_never_move_the_status_back_or_credit_twice() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    let (s, _) = app
        .stripe_event(&session_event("evt_c", "checkout.session.completed", &p, "paid"))
        .await;
    assert_eq!(s, StatusCode::OK);
    for (id, kind) in [
        ("evt_x", "checkout.session.expired"),
        ("evt_f", "checkout.session.async_payment_failed"),
    ] {
        let (s, b) = app.stripe_event(&session_event(id, kind, &p, "unpaid")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["outcome"], "no_change", "{kind}");
    }
    let after = app.get_purchase(&p["id"]).await;
    assert_eq!(after["status"], "paid");
    assert_eq!(app.balance(account).await, d("1000"));

    // An expired session stays expired; a completion arriving after it is noted, not credited.
    let q = app.card_purchase(account, PLAN_1K).await;
    let (_, b) = app
        .stripe_event(&session_event(
            "evt_q_x",
            "checkout.session.expired",
            &q,
            "unpaid",
        ))
        .await;
    assert_eq!(b["outcome"], "expired");
    let (_, b) = app
        .stripe_event(&session_event(
            "evt_q_c",
            "checkout.session.completed",
            &q,
            "paid",
        ))
        .await;
    assert_eq!(b["outcome"], "noted_late_payment");
    let q = app.get_purchase(&q["id"]).await;
    assert_eq!(q["status"], "expired");
    assert!(
        q["review_note"]
            .as_str()
            .unwrap()
            .contains("after the purchase was expired"),
        "{q}"
    );
    assert_eq!(app.balance(account).await, d("1000"));
}

#[tokio::test]
async fn a_completion_that_overtakes_the_session_creation_is_applied_once() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *app.stripe.state.gate.lock().unwrap() = Some(gate.clone());
    let create = app.purchase(account, json!({"plan_id": PLAN_1K, "method": "card"}));
    let race = async {
        app.stripe.state.arrived.notified().await;
        let (id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM purchases")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let early = json!({"id": id.to_string(), "provider_ref": "cs_test_0000", "amount_usd": "5"});
        let (s, b) = app
            .stripe_event(&session_event(
                "evt_early",
                "checkout.session.completed",
                &early,
                "paid",
            ))
            .await;
        gate.add_permits(1);
        (s, b)
    };
    let ((cs, created), (ws, hook)) = tokio::join!(create, race);
    assert_eq!(ws, StatusCode::OK, "{hook}");
    assert_eq!(hook["outcome"], "paid");
    assert_eq!(cs, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["status"], "paid",
        "the answer shows the state after the early event"
    );
    assert_eq!(created["provider_ref"], "cs_test_0000");
    assert!(created["checkout_url"].is_string());
    assert_eq!(app.balance(account).await, d("1000"));
}

#[tokio::test]
async fn an_unpaid_completion_waits_for_the_async_result() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    let (_, b) = app
        .stripe_event(&session_event(
            "evt_u",
            "checkout.session.completed",
            &p,
            "unpaid",
        ))
        .await;
    assert_eq!(b["outcome"], "awaiting_payment");
    assert_eq!(app.get_purchase(&p["id"]).await["status"], "pending");
    let (_, b) = app
        .stripe_event(&session_event(
            "evt_ok",
            "checkout.session.async_payment_succeeded",
            &p,
            "paid",
        ))
        .await;
    assert_eq!(b["outcome"], "paid");
    assert_eq!(app.balance(account).await, d("1000"));

    let q = app.card_purchase(account, PLAN_1K).await;
    let (_, b) = app
        .stripe_event(&session_event(
            "evt_fail",
            "checkout.session.async_payment_failed",
            &q,
            "unpaid",
        ))
        .await;
    assert_eq!(b["outcome"], "failed");
    assert_eq!(app.get_purchase(&q["id"]).await["status"], "failed");
    assert_eq!(app.balance(account).await, d("1000"));
}

#[tokio::test]
async fn a_paid_amount_that_differs_from_the_price_is_held() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    let event = session_event("evt_amt", "checkout.session.completed", &p, "paid")
        .replace("\"amount_total\":500", "\"amount_total\":1");
    let (_, b) = app.stripe_event(&event).await;
    assert_eq!(b["outcome"], "held_amount_mismatch");
    let held = app.get_purchase(&p["id"]).await;
    assert_eq!(held["status"], "held");
    assert_eq!(app.balance(account).await, d("0"));
}

#[tokio::test]
async fn a_reply_lost_after_the_commit_neither_loses_nor_doubles_the_credit() {
    let lose = Arc::new(AtomicBool::new(true));
    let flag = lose.clone();
    let app = spawn_pay_app_with(
        |_| {},
        move |router| {
            router.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let flag = flag.clone();
                    async move {
                        let hook = req.uri().path() == "/v1/webhooks/stripe";
                        let response = next.run(req).await;
                        if hook && flag.swap(false, Ordering::SeqCst) {
                            // The handler committed; the processor never sees its 2xx.
                            return StatusCode::BAD_GATEWAY.into_response();
                        }
                        response
                    }
                },
            ))
        },
    )
    .await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    let event = session_event("evt_lost", "checkout.session.completed", &p, "paid");
    let (s, _) = app.stripe_event(&event).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(
        app.balance(account).await,
        d("1000"),
        "committed before the reply"
    );
    let (s, b) = app.stripe_event(&event).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["duplicate"], true);
    assert_eq!(app.balance(account).await, d("1000"));
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn stripe_refund_and_lost_dispute_reverse_the_credits_and_flag_the_account() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    app.stripe_event(&session_event("evt_p1", "checkout.session.completed", &p, "paid"))
        .await;
    let (s, b) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/credits"),
            json!({"credits": "-600", "reason": "usage stand-in", "idempotency_key": "spend"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let intent = format!("pi_{}", p["id"].as_str().unwrap().replace('-', ""));
    let refunded = json!({"id": "evt_r1", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "object": "charge", "payment_intent": intent, "refunded": true,
        "amount": 500, "amount_refunded": 500}}})
    .to_string();
    let (s, b) = app.stripe_event(&refunded).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "refunded");
    assert_eq!(
        app.balance(account).await,
        d("-600"),
        "the balance may go negative"
    );
    let after = app.get_purchase(&p["id"]).await;
    assert_eq!(after["status"], "refunded");
    assert!(after["credit_note_number"].as_str().unwrap().starts_with("CN-"));
    let (_, b) = app.stripe_event(&refunded.replace("evt_r1", "evt_r2")).await;
    assert_eq!(b["outcome"], "no_change");
    assert_eq!(app.balance(account).await, d("-600"));

    let q = app.card_purchase(account, PLAN_1K).await;
    app.stripe_event(&session_event("evt_p2", "checkout.session.completed", &q, "paid"))
        .await;
    let q_intent = format!("pi_{}", q["id"].as_str().unwrap().replace('-', ""));
    let dispute = |id: &str, kind: &str, status: &str| {
        json!({"id": id, "type": kind, "data": {"object": {"id": "dp_1", "object": "dispute",
            "payment_intent": q_intent, "status": status, "reason": "fraudulent"}}})
        .to_string()
    };
    let (_, b) = app
        .stripe_event(&dispute("evt_d1", "charge.dispute.created", "needs_response"))
        .await;
    assert_eq!(b["outcome"], "flagged_dispute");
    assert_eq!(app.balance(account).await, d("400"));
    let (_, b) = app
        .stripe_event(&dispute("evt_d2", "charge.dispute.closed", "lost"))
        .await;
    assert_eq!(b["outcome"], "refunded");
    assert_eq!(app.balance(account).await, d("-600"));
    let (_, billing) = app.admin_get(&format!("/v1/accounts/{account}/billing")).await;
    let flags = billing["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 3, "{billing}");
    assert!(
        flags[0]["reason"].as_str().unwrap().contains("chargeback"),
        "{billing}"
    );
    assert_eq!(audit_actions(&app, "purchase.chargeback").await.len(), 1);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn an_admin_refund_of_a_card_purchase_refunds_at_stripe_and_the_echo_event_changes_nothing() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let p = app.card_purchase(account, PLAN_1K).await;
    app.stripe_event(&session_event("evt_p", "checkout.session.completed", &p, "paid"))
        .await;
    let path = format!("/v1/purchases/{}/refund", p["id"].as_str().unwrap());
    let (s, first) = app
        .admin_json(Method::POST, &path, json!({"reason": "customer asked"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "refunded");
    let refunds = app.stripe.state.refunds.lock().unwrap().clone();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0]["payment_intent"],
        format!("pi_{}", p["id"].as_str().unwrap().replace('-', ""))
    );
    let echo = json!({"id": "evt_echo", "type": "charge.refunded", "data": {"object": {
        "payment_intent": refunds[0]["payment_intent"], "refunded": true}}})
    .to_string();
    let (_, b) = app.stripe_event(&echo).await;
    assert_eq!(b["outcome"], "no_change");
    assert_eq!(app.balance(account).await, d("0"));
    let (s, again) = app
        .admin_json(Method::POST, &path, json!({"reason": "again"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["credit_note_number"], first["credit_note_number"]);
    assert_eq!(app.balance(account).await, d("0"));
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn a_stripe_failure_marks_the_purchase_failed() {
    let app = spawn_pay_app().await;
    app.stripe.state.fail.store(true, Ordering::SeqCst);
    let account = app.create_account("acme").await;
    let (s, b) = app
        .purchase(account, json!({"plan_id": PLAN_1K, "method": "card"}))
        .await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "api_error");
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/purchases")).await;
    assert_eq!(list["data"][0]["status"], "failed", "{list}");
    assert!(list["data"][0]["status_reason"]
        .as_str()
        .unwrap()
        .contains("fake failure"));
}
