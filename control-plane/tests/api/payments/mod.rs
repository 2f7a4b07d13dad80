//! Payments against real PostgreSQL with fake Stripe and fake NOWPayments over real HTTP. Webhook
//! and IPN signatures are computed here, independently of the control plane's own code.

mod card;
mod crypto;
mod expiry;
mod fakes;
mod invoices;
mod signatures;
mod telegram_refunds;

use std::str::FromStr;

use control_plane::config::{PaymentConfig, UnderpayPolicy};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::{Sha256, Sha512};
use uuid::Uuid;

use crate::helpers::*;
use fakes::{np_sig, FakeNowPayments, FakeStripe};

pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";
pub const IPN_SECRET: &str = "ipn-secret-test-0123456789";

/// The seeded plans.
pub const PLAN_1K: &str = "8f1c7a52-0d6e-4c41-9a7e-000000001000";
pub const PLAN_105K: &str = "8f1c7a52-0d6e-4c41-9a7e-000000105000";

pub struct PayApp {
    pub app: TestApp,
    pub stripe: FakeStripe,
    pub np: FakeNowPayments,
}

impl std::ops::Deref for PayApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

pub fn payment_config(stripe: &FakeStripe, np: &FakeNowPayments) -> PaymentConfig {
    PaymentConfig {
        stripe_secret_key: Some(fakes::STRIPE_KEY.into()),
        stripe_webhook_secret: Some(WEBHOOK_SECRET.into()),
        stripe_api_base: stripe.url.clone(),
        nowpayments_api_key: Some(fakes::NOWPAYMENTS_KEY.into()),
        nowpayments_ipn_secret: Some(IPN_SECRET.into()),
        nowpayments_api_base: np.url.clone(),
        seller_name: "ClaudeStore Test Seller Ltd".into(),
        seller_address: "1 Test Street\n10115 Berlin".into(),
        seller_tax_id: "DE123456789".into(),
        ..PaymentConfig::default()
    }
}

pub async fn spawn_pay_app() -> PayApp {
    spawn_pay_app_with(|_| {}, |r| r).await
}

pub async fn spawn_pay_app_with(
    configure: impl FnOnce(&mut PaymentConfig),
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> PayApp {
    let stripe = fakes::fake_stripe().await;
    let np = fakes::fake_nowpayments().await;
    let mut config = payment_config(&stripe, &np);
    configure(&mut config);
    let app = spawn_app_custom(Decimal::from_str("0.70").unwrap(), config, wrap).await;
    PayApp { app, stripe, np }
}

pub fn credit_share(c: &mut PaymentConfig) {
    c.underpay_policy = UnderpayPolicy::CreditShare;
}

/// `Stripe-Signature` computed here: HMAC-SHA256 over `t.body`.
pub fn stripe_v1(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl PayApp {
    pub async fn purchase(&self, account: Uuid, body: Value) -> (StatusCode, Value) {
        self.admin_json(Method::POST, &format!("/v1/accounts/{account}/purchases"), body)
            .await
    }

    pub async fn card_purchase(&self, account: Uuid, plan: &str) -> Value {
        let (s, p) = self
            .purchase(account, json!({"plan_id": plan, "method": "card"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p
    }

    pub async fn crypto_purchase(&self, account: Uuid, plan: &str, currency: &str) -> Value {
        let (s, p) = self
            .purchase(
                account,
                json!({"plan_id": plan, "method": "crypto", "currency": currency}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p
    }

    pub async fn get_purchase(&self, id: &Value) -> Value {
        let (s, p) = self
            .admin_get(&format!("/v1/purchases/{}", id.as_str().unwrap()))
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        p
    }

    /// Sends a Stripe event body with a valid signature.
    pub async fn stripe_event(&self, body: &str) -> (StatusCode, Value) {
        let t = now();
        let header = format!("t={t},v1={}", stripe_v1(WEBHOOK_SECRET, t, body));
        self.stripe_raw(body, Some(&header)).await
    }

    pub async fn stripe_raw(&self, body: &str, header: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .req(Method::POST, "/v1/webhooks/stripe")
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(h) = header {
            req = req.header("Stripe-Signature", h);
        }
        send(req).await
    }

    /// Sends a NOWPayments IPN with a valid signature.
    pub async fn ipn(&self, body: &Value) -> (StatusCode, Value) {
        let sig = np_sig(IPN_SECRET, body);
        self.ipn_raw(&body.to_string(), Some(&sig)).await
    }

    pub async fn ipn_raw(&self, body: &str, sig: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .req(Method::POST, "/v1/webhooks/nowpayments")
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(s) = sig {
            req = req.header("x-nowpayments-sig", s);
        }
        send(req).await
    }
}

/// A Stripe `checkout.session.completed` (or other session event) for a card purchase.
pub fn session_event(event_id: &str, kind: &str, purchase: &Value, payment_status: &str) -> String {
    let cents = (dec(&purchase["amount_usd"]) * Decimal::ONE_HUNDRED).normalize();
    json!({
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": now(),
        "data": {"object": {
            "id": purchase["provider_ref"],
            "object": "checkout.session",
            "client_reference_id": purchase["id"],
            "metadata": {"purchase_id": purchase["id"]},
            "payment_status": payment_status,
            "amount_total": cents.to_string().parse::<i64>().unwrap(),
            "currency": "usd",
            "payment_intent": format!("pi_{}", purchase["id"].as_str().unwrap().replace('-', "")),
        }}
    })
    .to_string()
}

/// A NOWPayments IPN for a crypto purchase.
pub fn ipn_body(purchase: &Value, status: &str, actually_paid: &str) -> Value {
    let code = match purchase["pay_currency"].as_str().unwrap() {
        "BTC" => "btc",
        "ETH" => "eth",
        "USDT_TRC20" => "usdttrc20",
        "USDT_ERC20" => "usdterc20",
        _ => "usdcerc20",
    };
    json!({
        "payment_id": purchase["provider_ref"].as_str().unwrap().parse::<u64>().unwrap(),
        "payment_status": status,
        "pay_address": purchase["pay_address"],
        "price_amount": 500,
        "price_currency": "usd",
        "pay_amount": purchase["pay_amount"].as_str().unwrap().parse::<f64>().unwrap(),
        "actually_paid": actually_paid.parse::<f64>().unwrap(),
        "pay_currency": code,
        "order_id": purchase["id"],
        "order_description": "plan",
        "outcome_amount": 499.1,
        "outcome_currency": "usdttrc20",
    })
}

/// Rows of the audit log with this action.
pub async fn audit_actions(app: &TestApp, action: &str) -> Vec<(String, String, Value)> {
    sqlx::query_as("SELECT actor, target, details FROM audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}
