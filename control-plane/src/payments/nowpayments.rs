//! NOWPayments, the first crypto adapter: `POST /v1/payment` creates a payment in an explicit
//! currency code that names its network (`usdttrc20` is USDT on TRON); IPN callbacks
//! (`POST /v1/webhooks/nowpayments`) are verified with `x-nowpayments-sig`, the hex HMAC-SHA512 of
//! the body re-serialised with its keys sorted (recursively), keyed with the IPN secret.
//! The callback's route is in `callbacks.rs`.

use std::str::FromStr;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sha2::Sha512;
use uuid::Uuid;

use super::crypto::{
    BoxFuture, CallbackError, CryptoCurrency, CryptoInvoice, CryptoOrder, CryptoProvider, CryptoReport,
    CryptoStatus,
};

pub const SIGNATURE_HEADER: &str = "x-nowpayments-sig";

/// NOWPayments' currency code for each currency we sell.
pub fn code(c: CryptoCurrency) -> &'static str {
    match c {
        CryptoCurrency::Btc => "btc",
        CryptoCurrency::Eth => "eth",
        CryptoCurrency::UsdtTrc20 => "usdttrc20",
        CryptoCurrency::UsdtErc20 => "usdterc20",
        CryptoCurrency::UsdcErc20 => "usdcerc20",
    }
}

/// NOWPayments' network code for each currency we sell.
pub fn network_code(c: CryptoCurrency) -> &'static str {
    match c {
        CryptoCurrency::Btc => "btc",
        CryptoCurrency::Eth | CryptoCurrency::UsdtErc20 | CryptoCurrency::UsdcErc20 => "eth",
        CryptoCurrency::UsdtTrc20 => "trx",
    }
}

/// The currency a report names; a network, when the report gives one, must be the code's own.
pub fn from_code(code_reported: &str, network: Option<&str>) -> Result<CryptoCurrency, String> {
    let lower = code_reported.to_ascii_lowercase();
    let found = CryptoCurrency::ALL.into_iter().find(|c| code(*c) == lower);
    match (found, network) {
        (Some(c), None) => Ok(c),
        (Some(c), Some(n)) if n.eq_ignore_ascii_case(network_code(c)) => Ok(c),
        _ => Err(format!(
            "{code_reported}{}",
            network.map(|n| format!(" on network {n}")).unwrap_or_default()
        )),
    }
}

/// The key-sorted compact JSON NOWPayments signs (objects sorted at every level).
pub fn sorted_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                sorted_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                sorted_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON number or numeric string as an exact decimal.
fn decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn status(s: &str) -> CryptoStatus {
    match s {
        "finished" => CryptoStatus::Finished,
        "partially_paid" => CryptoStatus::PartiallyPaid,
        "failed" => CryptoStatus::Failed,
        "expired" => CryptoStatus::Expired,
        "refunded" => CryptoStatus::Refunded,
        _ => CryptoStatus::InProgress,
    }
}

pub struct NowPayments {
    http: reqwest::Client,
    base: String,
    api_key: String,
    ipn_secret: String,
}

impl NowPayments {
    pub fn new(http: reqwest::Client, base: &str, api_key: &str, ipn_secret: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            ipn_secret: ipn_secret.to_owned(),
        }
    }

    async fn create(&self, order: &CryptoOrder) -> Result<CryptoInvoice, String> {
        let body = json!({
            "price_amount": order.amount_usd.to_f64().unwrap_or_default(),
            "price_currency": "usd",
            "pay_currency": code(order.currency),
            "ipn_callback_url": order.callback_url,
            "order_id": order.purchase_id.to_string(),
            "order_description": order.description,
        });
        let resp = self
            .http
            .post(format!("{}/v1/payment", self.base))
            .header("x-api-key", &self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("NOWPayments could not be reached: {}", e.without_url()))?;
        let status = resp.status();
        let answer: Value = resp
            .json()
            .await
            .map_err(|e| format!("NOWPayments answered {status} with an unreadable body: {e}"))?;
        if !status.is_success() {
            let message = answer["message"].as_str().unwrap_or("no message");
            return Err(format!("NOWPayments answered {status}: {message}"));
        }
        let provider_ref = text(&answer["payment_id"]).ok_or("NOWPayments answered without payment_id")?;
        let pay_address = text(&answer["pay_address"]).ok_or("NOWPayments answered without pay_address")?;
        let pay_amount = decimal(&answer["pay_amount"])
            .filter(|a| *a > Decimal::ZERO)
            .ok_or("NOWPayments answered without a positive pay_amount")?;
        let currency = from_code(
            answer["pay_currency"].as_str().unwrap_or_default(),
            answer["network"].as_str(),
        )?;
        if currency != order.currency {
            return Err(format!(
                "NOWPayments created a payment in {} instead of {}",
                currency.name(),
                order.currency.name()
            ));
        }
        Ok(CryptoInvoice {
            provider_ref,
            pay_address,
            pay_amount,
        })
    }
}

impl CryptoProvider for NowPayments {
    fn name(&self) -> &'static str {
        "nowpayments"
    }

    fn create_payment<'a>(&'a self, order: &'a CryptoOrder) -> BoxFuture<'a, Result<CryptoInvoice, String>> {
        Box::pin(self.create(order))
    }

    fn verify_callback(&self, headers: &HeaderMap, body: &[u8]) -> Result<CryptoReport, CallbackError> {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(CallbackError::MissingSignature)?;
        let signature = hex::decode(signature).map_err(|_| CallbackError::BadSignature)?;
        // The signature covers the parsed-and-sorted body, so it has to be parsed first; nothing
        // in it is used before the check.
        let value: Value =
            serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(format!("not JSON: {e}")))?;
        let mut canonical = String::with_capacity(body.len());
        sorted_json(&value, &mut canonical);
        let mut mac = Hmac::<Sha512>::new_from_slice(self.ipn_secret.as_bytes())
            .map_err(|_| CallbackError::BadSignature)?;
        mac.update(canonical.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| CallbackError::BadSignature)?;
        let provider_ref =
            text(&value["payment_id"]).ok_or_else(|| CallbackError::Malformed("no payment_id".into()))?;
        let raw_status = value["payment_status"]
            .as_str()
            .ok_or_else(|| CallbackError::Malformed("no payment_status".into()))?
            .to_owned();
        let actually_paid = decimal(&value["actually_paid"]);
        let currency = from_code(
            value["pay_currency"].as_str().unwrap_or_default(),
            value["network"].as_str(),
        );
        Ok(CryptoReport {
            event_id: format!(
                "{provider_ref}:{raw_status}:{}",
                actually_paid.map(crate::money::plain).unwrap_or_default()
            ),
            status: status(&raw_status),
            raw_status,
            order_id: value["order_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()),
            provider_ref,
            currency,
            actually_paid,
        })
    }
}
