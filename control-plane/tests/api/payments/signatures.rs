//! Signature vectors computed in the test: Stripe's `Stripe-Signature` and NOWPayments'
//! `x-nowpayments-sig`, accepted only when exactly right.

use control_plane::payments::stripe::{verify_signature, SignatureError};
use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[test]
fn stripe_verifier_accepts_a_vector_signed_independently_and_refuses_the_rest() {
    let body = br#"{"id":"evt_1","type":"ping"}"#;
    let secret = "whsec_vector";
    let t = 1_764_064_800;
    let good = stripe_v1(secret, t, std::str::from_utf8(body).unwrap());
    let ok = |h: &str, now: i64| verify_signature(Some(h), body, secret, now, 300);
    assert_eq!(ok(&format!("t={t},v1={good}"), t), Ok(t));
    assert_eq!(
        ok(&format!("t={t},v1={good}"), t + 300),
        Ok(t),
        "300 s is within tolerance"
    );
    assert_eq!(
        ok(&format!("t={t},v1={good}"), t + 301),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        ok(&format!("t={t},v1={good}"), t - 301),
        Err(SignatureError::Future)
    );
    let bad = "0".repeat(64);
    assert_eq!(
        ok(&format!("t={t},v1={bad},v0={good},v1={good}"), t),
        Ok(t),
        "any one v1 may match"
    );
    assert_eq!(ok(&format!("t={t},v0={good}"), t), Err(SignatureError::NoV1));
    assert_eq!(ok(&format!("t={t},v1={bad}"), t), Err(SignatureError::Mismatch));
    assert_eq!(
        ok(&format!("t={},v1={good}", t + 1), t),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(ok(&format!("v1={good}"), t), Err(SignatureError::NoTimestamp));
    assert_eq!(
        ok(&format!("t=abc,v1={good}"), t),
        Err(SignatureError::NoTimestamp)
    );
    assert_eq!(ok(&format!("t={t},v1=not-hex"), t), Err(SignatureError::Mismatch));
    assert_eq!(
        verify_signature(None, body, secret, t, 300),
        Err(SignatureError::Missing)
    );
    let tampered = br#"{"id":"evt_1","type":"pong"}"#;
    assert_eq!(
        verify_signature(Some(&format!("t={t},v1={good}")), tampered, secret, t, 300),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(Some(&format!("t={t},v1={good}")), body, "whsec_other", t, 300),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn stripe_webhook_refuses_stale_future_tampered_missing_and_wrong_scheme_signatures() {
    let app = spawn_pay_app().await;
    let body = json!({"id": "evt_sig", "type": "customer.created", "data": {"object": {}}}).to_string();
    let t = now();
    let sig = |t: i64, b: &str| stripe_v1(WEBHOOK_SECRET, t, b);
    let cases = [
        ("stale", format!("t={},v1={}", t - 400, sig(t - 400, &body))),
        ("future", format!("t={},v1={}", t + 400, sig(t + 400, &body))),
        (
            "tampered",
            format!("t={t},v1={}", sig(t, &body.replace("customer", "customers"))),
        ),
        ("wrong scheme", format!("t={t},v0={}", sig(t, &body))),
        (
            "other secret",
            format!("t={t},v1={}", stripe_v1("whsec_other", t, &body)),
        ),
        ("no timestamp", format!("v1={}", sig(t, &body))),
        ("garbage", "nonsense".to_owned()),
    ];
    for (name, header) in cases {
        let (s, b) = app.stripe_raw(&body, Some(&header)).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("refused"),
            "{name}: {b}"
        );
    }
    let (s, b) = app.stripe_raw(&body, None).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "no refused event is recorded");

    let several = format!(
        "t={t},v1={},v1={},v1={}",
        "ab".repeat(32),
        sig(t, &body),
        "cd".repeat(32)
    );
    let (s, b) = app.stripe_raw(&body, Some(&several)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "ignored");
    assert_eq!(b["duplicate"], false);
}

#[tokio::test]
async fn nowpayments_ipn_is_verified_over_the_key_sorted_body() {
    let app = spawn_pay_app().await;
    // The signed text is the key-sorted compact JSON (byte order: "pay_currency" < "payment_id");
    // the body on the wire is in any order and spacing.
    let signed = r#"{"actually_paid":0,"order_id":"x","pay_currency":"btc","payment_id":123,"payment_status":"waiting"}"#;
    let mut mac = Hmac::<Sha512>::new_from_slice(IPN_SECRET.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let wire = r#"{ "payment_status": "waiting", "pay_currency": "btc", "payment_id": 123,
        "order_id": "x", "actually_paid": 0 }"#;
    let (s, b) = app.ipn_raw(wire, Some(&sig)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "unknown_payment");

    let tampered = wire.replace("123", "124");
    let (s, b) = app.ipn_raw(&tampered, Some(&sig)).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app.ipn_raw(wire, None).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let mut other = Hmac::<Sha512>::new_from_slice(b"another secret").unwrap();
    other.update(signed.as_bytes());
    let (s, b) = app
        .ipn_raw(wire, Some(&hex::encode(other.finalize().into_bytes())))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app.ipn_raw(wire, Some("zz")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");

    // Nested objects are sorted too.
    let nested = json!({"payment_id": 9, "payment_status": "waiting", "pay_currency": "eth",
        "fee": {"serviceFee": 1, "depositFee": 0, "currency": "eth"}});
    let (s, b) = app.ipn(&nested).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn webhooks_answer_not_found_when_the_processor_is_not_configured() {
    let app = spawn_app().await;
    let (s, b) = send(
        app.req(reqwest::Method::POST, "/v1/webhooks/stripe")
            .header("Stripe-Signature", "t=1,v1=00")
            .body("{}"),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = send(
        app.req(reqwest::Method::POST, "/v1/webhooks/nowpayments")
            .body("{}"),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let account = app.create_account("acme").await;
    for method in ["card", "crypto"] {
        let (s, b) = app
            .admin_json(
                reqwest::Method::POST,
                &format!("/v1/accounts/{account}/purchases"),
                json!({"plan_id": PLAN_1K, "method": method, "currency": "BTC"}),
            )
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("not configured"),
            "{b}"
        );
    }
}
