//! Balance alerts and account webhooks: the URL and its secret, events written with what causes
//! them (`balance.low` once per crossing, `purchase.paid`, `purchase.refunded`), signed delivery
//! to a real receiver, retries with backoff, giving up after 24 hours, the delivery log, and no
//! delivery to a private address unless the operator allows it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use chrono::{DateTime, Duration, Utc};
use control_plane::config::WebhookConfig;
use control_plane::webhooks::delivery::{deliver_due, DeliveryReport};
use control_plane::webhooks::target::signature;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const PLAN_1K: &str = "8f1c7a52-0d6e-4c41-9a7e-000000001000";

/// A webhook receiver on loopback: answers the statuses queued (then 200) and keeps every request.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let code = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                    AxumStatus::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn received(&self) -> Vec<(HeaderMap, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap()))
            .collect()
    }

    fn raw(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().unwrap().clone()
    }
}

fn config(allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        signing_key: WEBHOOK_SIGNING_KEY.into(),
        allow_private,
    }
}

async fn step(app: &TestApp, now: DateTime<Utc>, allow_private: bool) -> DeliveryReport {
    deliver_due(&app.pool, now, &config(allow_private)).await.unwrap()
}

async fn set_alerts(app: &TestApp, account: Uuid, body: Value) -> Value {
    let (s, b) = app
        .admin_json(Method::PATCH, &format!("/v1/accounts/{account}"), body)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn spend(app: &TestApp, account: Uuid, secret: &str, input_tokens: u64) {
    // Sonnet 4.5 input: 0.00042 credits a token.
    let d = debit(
        account,
        secret,
        "claude-sonnet-4-5",
        usage(input_tokens, 0),
        Utc::now(),
    );
    app.debits(vec![d]).await;
}

#[tokio::test]
async fn a_webhook_url_is_checked_and_its_secret_shown_once_per_setting() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let path = format!("/v1/accounts/{account}");
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/x",
        "http://169.254.169.254/",
        "ftp://example.com/",
    ] {
        let (s, b) = app
            .admin_json(Method::PATCH, &path, json!({"webhook_url": url}))
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let (s, b) = app.admin_json(Method::PATCH, &path, json!({})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app
        .admin_json(Method::PATCH, &path, json!({"low_balance_threshold": "-1"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");

    let first = set_alerts(
        &app,
        account,
        json!({"webhook_url": "https://hooks.example.com/cs", "low_balance_threshold": "50"}),
    )
    .await;
    let secret = first["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{first}");
    assert_eq!(first["webhook_url"], "https://hooks.example.com/cs");
    assert_eq!(first["low_balance_threshold"], "50");
    let (_, shown) = app.admin_get(&path).await;
    assert!(shown.get("webhook_secret").is_none() && !shown.to_string().contains(&secret));
    // Changing something else does not show it again; setting the URL again gives a new one.
    let other = set_alerts(&app, account, json!({"low_balance_threshold": "10"})).await;
    assert!(other.get("webhook_secret").is_none());
    let again = set_alerts(
        &app,
        account,
        json!({"webhook_url": "https://hooks.example.com/cs"}),
    )
    .await;
    assert_ne!(again["webhook_secret"], json!(secret));
    // Nothing secret is stored.
    let stored: String = sqlx::query_scalar("SELECT row_to_json(a)::text FROM accounts a WHERE id = $1")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!stored.contains("whsec_"), "{stored}");
    let removed = set_alerts(
        &app,
        account,
        json!({"webhook_url": null, "low_balance_threshold": null}),
    )
    .await;
    assert_eq!(
        (
            removed["webhook_url"].clone(),
            removed["low_balance_threshold"].clone()
        ),
        (Value::Null, Value::Null)
    );
    // The operator may allow private targets.
    let open = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let account = open.create_account("lab").await;
    set_alerts(&open, account, json!({"webhook_url": "http://127.0.0.1:9/hook"})).await;
}

#[tokio::test]
async fn balance_low_is_sent_once_per_crossing_signed_and_retried_until_delivered() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let (receiver, url) = Receiver::start().await;
    let account = app.create_account("acme").await;
    let (_, secret_key) = app.create_key(account, "k").await;
    app.grant(account, "100", "g1").await;
    let set = set_alerts(
        &app,
        account,
        json!({"webhook_url": url, "low_balance_threshold": "50"}),
    )
    .await;
    let secret = set["webhook_secret"].as_str().unwrap().to_owned();

    spend(&app, account, &secret_key, 100_000).await; // 100 -> 58: still above
    assert_eq!(step(&app, Utc::now(), true).await, DeliveryReport::default());
    spend(&app, account, &secret_key, 50_000).await; // -> 37: crosses below
    spend(&app, account, &secret_key, 10_000).await; // -> 32.8: still below, no second event
    receiver.answers.lock().unwrap().push_back(500);
    let now = Utc::now();
    let r = step(&app, now, true).await;
    assert_eq!((r.delivered, r.retrying), (0, 1), "the receiver answered 500");
    assert_eq!(
        step(&app, now + Duration::seconds(10), true).await,
        DeliveryReport::default(),
        "not due yet"
    );
    let r = step(&app, now + Duration::seconds(31), true).await;
    assert_eq!(r.delivered, 1);
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one event, two attempts");
    let (headers, event) = &got[1];
    assert_eq!(event["type"], "balance.low");
    assert_eq!(event["data"]["balance"], "37", "the balance when it crossed");
    assert_eq!(event["data"]["low_balance_threshold"], "50");
    assert_eq!(got[0].1["id"], event["id"], "a retry sends the same event");
    // The signature is the Stripe scheme over "<t>.<body>" with the account's secret.
    let (_, raw) = &receiver.raw()[1];
    let sig = headers["x-claudestore-signature"].to_str().unwrap();
    let t: i64 = sig
        .strip_prefix("t=")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sig, signature(&secret, t, raw));

    // Back above (a grant), then below again: a second event.
    app.grant(account, "100", "g2").await;
    spend(&app, account, &secret_key, 250_000).await; // 132.8 -> 27.8
    step(&app, Utc::now(), true).await;
    let lows: Vec<Value> = receiver
        .received()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "balance.low")
        .collect();
    assert_eq!(lows.len(), 3);
    assert_ne!(lows[2]["id"], lows[1]["id"]);
    assert_eq!(lows[2]["data"]["balance"], "27.8");

    // The delivery log.
    let (s, log) = app
        .admin_get(&format!("/v1/accounts/{account}/webhook-events"))
        .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let events = log["data"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    let first = &events[1];
    assert_eq!(
        (first["status"].clone(), first["type"].clone()),
        (json!("delivered"), json!("balance.low"))
    );
    let codes: Vec<Value> = first["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(200)]);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn a_threshold_set_above_the_balance_alerts_at_once() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let (receiver, url) = Receiver::start().await;
    let account = app.create_account("acme").await;
    app.grant(account, "20", "g").await;
    set_alerts(&app, account, json!({"webhook_url": url})).await;
    set_alerts(&app, account, json!({"low_balance_threshold": "50"})).await;
    step(&app, Utc::now(), true).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["data"]["balance"], "20");
}

#[tokio::test]
async fn an_event_is_given_up_after_24_hours_and_follows_a_moved_url() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let (failing, failing_url) = Receiver::start().await;
    let account = app.create_account("acme").await;
    set_alerts(
        &app,
        account,
        json!({"webhook_url": failing_url, "low_balance_threshold": "10"}),
    )
    .await;
    failing.answers.lock().unwrap().extend([503; 64]);
    let start = Utc::now();
    assert_eq!(step(&app, start, true).await.retrying, 1);
    // Hourly retries at most: by 23 hours in, still pending.
    let mut t = start;
    for _ in 0..30 {
        t += Duration::hours(1);
        step(&app, t, true).await;
    }
    let (_, log) = app
        .admin_get(&format!("/v1/accounts/{account}/webhook-events"))
        .await;
    let event = &log["data"][0];
    assert_eq!(event["status"], "failed", "{event}");
    let attempts = event["attempts"].as_array().unwrap().len();
    assert!((10..=30).contains(&attempts), "{attempts}");

    // A pending event goes to the URL in force at its attempt.
    let (moved, moved_url) = Receiver::start().await;
    let other = app.create_account("beta").await;
    set_alerts(
        &app,
        other,
        json!({"webhook_url": failing_url.clone(), "low_balance_threshold": "10"}),
    )
    .await;
    set_alerts(&app, other, json!({"webhook_url": moved_url})).await;
    step(&app, Utc::now() + Duration::hours(40), true).await;
    assert_eq!(moved.received().len(), 1);
}

#[tokio::test]
async fn purchases_paid_and_refunded_are_sent() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = true).await;
    let (receiver, url) = Receiver::start().await;
    let account = app.create_account("acme").await;
    set_alerts(&app, account, json!({"webhook_url": url})).await;
    let (s, p) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/purchases"),
            json!({"plan_id": PLAN_1K, "method": "telegram", "reference": "tg:@acme/1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (s, b) = app
            .admin_json(
                Method::POST,
                &format!("/v1/purchases/{id}/confirm"),
                json!({"reference": "tx 1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = app
        .admin_json(
            Method::POST,
            &format!("/v1/purchases/{id}/refund"),
            json!({"reason": "sold by mistake"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    step(&app, Utc::now(), true).await;
    let kinds: Vec<(Value, Value)> = receiver
        .received()
        .into_iter()
        .map(|(_, e)| (e["type"].clone(), e["data"]["purchase_id"].clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (json!("purchase.paid"), json!(id)),
            (json!("purchase.refunded"), json!(id))
        ],
        "confirmed twice, paid once"
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_not_called() {
    let app = spawn_app().await;
    let (receiver, url) = Receiver::start().await;
    let account = app.create_account("acme").await;
    set_alerts(
        &app,
        account,
        json!({"webhook_url": "https://hooks.example.com/x", "low_balance_threshold": "10"}),
    )
    .await;
    // As if the URL had been allowed and its name now pointed inside.
    let inside = url.replace("127.0.0.1", "localhost");
    sqlx::query("UPDATE accounts SET webhook_url = $2 WHERE id = $1")
        .bind(account)
        .bind(&inside)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(step(&app, Utc::now(), false).await.retrying, 1);
    assert!(receiver.received().is_empty());
    let (_, log) = app
        .admin_get(&format!("/v1/accounts/{account}/webhook-events"))
        .await;
    let error = log["data"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("private"), "{error}");
}

/// The customer's dashboard warns while the balance is below the threshold.
#[tokio::test]
async fn the_dashboard_shows_a_low_balance_banner() {
    let app = spawn_app().await;
    let (account, mut web) = crate::web::signed_in_customer(&app, "lowfunds").await;
    app.grant(account, "20", "g").await;
    let page = web.get("/dashboard").await.body;
    assert!(!page.contains("low-balance"), "no threshold, no banner");
    set_alerts(&app, account, json!({"low_balance_threshold": "50"})).await;
    let page = web.get("/dashboard").await.body;
    assert!(
        page.contains("id=\"low-balance\"") && page.contains("50 credits"),
        "{page}"
    );
    app.grant(account, "100", "g2").await;
    assert!(!web.get("/dashboard").await.body.contains("low-balance"));
}
