//! Fake Stripe and fake NOWPayments: small axum servers on port 0 implementing the calls the
//! control plane makes, recording every request, with switches for failures and delays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha512;
use tokio::sync::Semaphore;

pub const STRIPE_KEY: &str = "sk_test_fake_0123456789";
pub const NOWPAYMENTS_KEY: &str = "np-api-key-fake-0123";

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

#[derive(Default)]
pub struct StripeState {
    pub sessions: Mutex<Vec<HashMap<String, String>>>,
    pub refunds: Mutex<Vec<HashMap<String, String>>>,
    pub fail: AtomicBool,
    counter: AtomicU64,
    /// When set, session creation waits for a permit (the test holds them to delay the answer).
    pub gate: Mutex<Option<Arc<Semaphore>>>,
    /// Signalled when a session creation request has arrived.
    pub arrived: tokio::sync::Notify,
}

pub struct FakeStripe {
    pub url: String,
    pub state: Arc<StripeState>,
}

fn authorized(headers: &HeaderMap, expected: &str, header: &str) -> bool {
    headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn create_session(
    State(s): State<Arc<StripeState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &format!("Bearer {STRIPE_KEY}"), "authorization") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid API Key"}})),
        );
    }
    if s.fail.load(Ordering::SeqCst) {
        return (
            StatusCode::PAYMENT_REQUIRED,
            Json(json!({"error": {"message": "fake failure"}})),
        );
    }
    assert!(
        headers.contains_key("idempotency-key"),
        "Stripe calls carry an Idempotency-Key"
    );
    let n = s.counter.fetch_add(1, Ordering::SeqCst);
    let id = format!("cs_test_{n:04}");
    s.sessions.lock().unwrap().push(form);
    s.arrived.notify_one();
    let gate = s.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        let _permit = gate.acquire().await.unwrap();
    }
    (
        StatusCode::OK,
        Json(
            json!({"id": id, "object": "checkout.session", "url": format!("https://checkout.stripe.test/c/pay/{id}")}),
        ),
    )
}

async fn create_refund(
    State(s): State<Arc<StripeState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, &format!("Bearer {STRIPE_KEY}"), "authorization") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid API Key"}})),
        );
    }
    let n = s.counter.fetch_add(1, Ordering::SeqCst);
    s.refunds.lock().unwrap().push(form);
    (
        StatusCode::OK,
        Json(json!({"id": format!("re_{n:04}"), "status": "succeeded"})),
    )
}

pub async fn fake_stripe() -> FakeStripe {
    let state = Arc::new(StripeState::default());
    let router = Router::new()
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/refunds", post(create_refund))
        .with_state(state.clone());
    FakeStripe {
        url: serve(router).await,
        state,
    }
}

#[derive(Default)]
pub struct NowPaymentsState {
    pub payments: Mutex<Vec<Value>>,
    counter: AtomicU64,
    /// Answer with this pay_currency instead of the one asked (a processor that changed it).
    pub answer_currency: Mutex<Option<String>>,
}

pub struct FakeNowPayments {
    pub url: String,
    pub state: Arc<NowPaymentsState>,
}

/// (pay_amount, network) the fake quotes for a code.
pub fn quote(code: &str) -> (f64, &'static str) {
    match code {
        "btc" => (0.0052, "btc"),
        "eth" => (0.145, "eth"),
        "usdttrc20" => (500.5, "trx"),
        "usdterc20" => (501.25, "eth"),
        "usdcerc20" => (500.75, "eth"),
        _ => (1.0, "unknown"),
    }
}

async fn create_payment(
    State(s): State<Arc<NowPaymentsState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers, NOWPAYMENTS_KEY, "x-api-key") {
        return (StatusCode::FORBIDDEN, Json(json!({"message": "Invalid api key"})));
    }
    let n = s.counter.fetch_add(1, Ordering::SeqCst);
    let asked = body["pay_currency"].as_str().unwrap_or_default().to_owned();
    let code = s.answer_currency.lock().unwrap().clone().unwrap_or(asked);
    let (amount, network) = quote(&code);
    s.payments.lock().unwrap().push(body.clone());
    let price: f64 = body["price_amount"].as_f64().unwrap_or_default();
    (
        StatusCode::CREATED,
        Json(json!({
            "payment_id": 5_000_000_000u64 + n,
            "payment_status": "waiting",
            "pay_address": format!("addr_{code}_{n}"),
            "price_amount": price,
            "price_currency": "usd",
            "pay_amount": amount,
            "pay_currency": code,
            "order_id": body["order_id"],
            "order_description": body["order_description"],
            "network": network,
            "created_at": "2026-11-25T10:00:00.000Z",
        })),
    )
}

pub async fn fake_nowpayments() -> FakeNowPayments {
    let state = Arc::new(NowPaymentsState::default());
    let router = Router::new()
        .route("/v1/payment", post(create_payment))
        .with_state(state.clone());
    FakeNowPayments {
        url: serve(router).await,
        state,
    }
}

/// Key-sorted compact JSON, as NOWPayments signs its callbacks: written here, not taken from
/// the control plane, so that a mistake there is not repeated in the check.
fn sorted(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), sorted(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        other => serde_json::to_string(other).unwrap(),
    }
}

/// The NOWPayments signature of a callback body: HMAC-SHA512 of its key-sorted compact JSON.
pub fn np_sig(secret: &str, body: &Value) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(sorted(body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
