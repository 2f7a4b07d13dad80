//! Buying credits in the browser: a crypto purchase through the fake NOWPayments, completed by the
//! processor's signed callback while the page is open; the credits arrive; the invoice downloads
//! as a PDF.

use std::str::FromStr;
use std::time::{Duration, Instant};

use control_plane::config::PaymentConfig;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::fakes;
use crate::helpers::*;
use crate::scenarios::{signed_in, ONE_BROWSER};
use crate::webdriver::{Browser, WAIT};
use crate::{browser_available, screenshots, workdir};

const IPN_SECRET: &str = "ipn-secret-browser-0123456789";
const PLAN_105K: &str = "8f1c7a52-0d6e-4c41-9a7e-000000105000";

/// The processor's "finished" callback for `purchase`, signed.
async fn processor_confirms(app: &TestApp, purchase: &Value) {
    let body = json!({
        "payment_id": purchase["provider_ref"].as_str().unwrap().parse::<u64>().unwrap(),
        "payment_status": "finished",
        "pay_address": purchase["pay_address"],
        "price_amount": 500,
        "price_currency": "usd",
        "pay_amount": purchase["pay_amount"].as_str().unwrap().parse::<f64>().unwrap(),
        "actually_paid": purchase["pay_amount"].as_str().unwrap().parse::<f64>().unwrap(),
        "pay_currency": "usdttrc20",
        "order_id": purchase["id"],
        "order_description": "plan",
        "outcome_amount": 499.1,
        "outcome_currency": "usdttrc20",
    });
    let sig = fakes::np_sig(IPN_SECRET, &body);
    let (s, answer) = send(
        app.req(Method::POST, "/v1/webhooks/nowpayments")
            .header("content-type", "application/json")
            .header("x-nowpayments-sig", sig)
            .body(body.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn customer_buys_a_plan_with_crypto_sees_the_credits_arrive_and_downloads_the_invoice() {
    if !browser_available() {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let stripe = fakes::fake_stripe().await;
    let np = fakes::fake_nowpayments().await;
    let config = PaymentConfig {
        stripe_secret_key: Some(fakes::STRIPE_KEY.into()),
        stripe_webhook_secret: Some("whsec_browser_0123456789".into()),
        stripe_api_base: stripe.url.clone(),
        nowpayments_api_key: Some(fakes::NOWPAYMENTS_KEY.into()),
        nowpayments_ipn_secret: Some(IPN_SECRET.into()),
        nowpayments_api_base: np.url.clone(),
        seller_name: "ClaudeStore Browser Test Seller".into(),
        ..PaymentConfig::default()
    };
    let app = spawn_app_custom(Decimal::from_str("0.70").unwrap(), config, |r| r).await;
    let account = app.create_account("buyer").await;
    let work = workdir("purchase");
    let browser = Browser::start(&work).await;
    signed_in(&app, &browser, account).await;

    browser.click("a[href='/dashboard/buy']").await;
    browser.find(".plans").await;
    browser.screenshot(&screenshots(), "05-buy").await;
    let plan = format!("form:has(input[value='{PLAN_105K}'][name=plan_id]):has(select)");
    browser.click(&format!("{plan} option[value='USDT_TRC20']")).await;
    browser.click(&format!("{plan} button")).await;

    // The payment instructions: exact amount, network, address, a QR code drawn in the page.
    browser.find("#pay-address").await;
    let address = browser.text("#pay-address").await;
    assert!(address.starts_with("addr_usdttrc20_"), "{address}");
    assert!(browser.text("#pay-amount").await.contains("USDT_TRC20"));
    assert!(!browser.text("#network").await.is_empty());
    assert!(browser.exists("#qr path").await);
    assert_eq!(browser.text("#purchase-status").await, "pending");
    browser.screenshot(&screenshots(), "06-crypto-payment").await;

    // The processor reports the payment; the open page follows without a click.
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/purchases")).await;
    let purchase = list["data"][0].clone();
    let started = Instant::now();
    processor_confirms(&app, &purchase).await;
    browser.wait_text("#purchase-status", WAIT, |t| t == "paid").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    browser.find("#invoice a.pdf").await;
    browser.screenshot(&screenshots(), "07-purchase-paid").await;
    assert_eq!(app.balance(account).await, d("105000"));
    browser.click("a[href='/dashboard']").await;
    browser.wait_text("#balance", WAIT, |t| t == "105,000").await;

    // Purchases and the invoice: HTML in the page, PDF as a download.
    browser.click("a[href='/dashboard/purchases']").await;
    browser.find("#purchases a.pdf").await;
    browser.screenshot(&screenshots(), "08-purchases").await;
    browser.click("#purchases a.pdf").await;
    let deadline = Instant::now() + WAIT;
    let pdf = loop {
        let found = std::fs::read_dir(&browser.downloads)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pdf"));
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "no PDF downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF"), "{}", pdf.display());
    std::fs::copy(&pdf, screenshots().join("invoice.pdf")).unwrap();
    browser.click("#purchases td a[href$='format=html']").await;
    browser.find("body").await;
    browser.screenshot(&screenshots(), "09-invoice").await;
    browser.quit().await;
}
