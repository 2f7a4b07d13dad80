//! Buying credits in the dashboard and the console's purchases: ownership of purchases and
//! invoices, CSRF on the buy form, Telegram sales confirmed from the console.

use reqwest::StatusCode;

use crate::payments::*;
use crate::web::*;

#[tokio::test]
async fn a_customer_sees_only_own_purchases_and_invoices() {
    let app = spawn_pay_app().await;
    let (_, mut web) = signed_in_customer(&app, "alice").await;
    let bob = app.create_account("bob").await;
    let p = app.crypto_purchase(bob, PLAN_105K, "USDT_TRC20").await;
    let (s, _) = app
        .ipn(&ipn_body(&p, "finished", p["pay_amount"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK);
    let paid = app.get_purchase(&p["id"]).await;
    let number = paid["invoice_number"].as_str().unwrap().to_owned();
    let id = p["id"].as_str().unwrap();
    for path in [
        format!("/dashboard/purchases/{id}"),
        format!("/dashboard/purchases/{id}/status"),
        format!("/dashboard/invoices/{number}?format=pdf"),
        format!("/dashboard/invoices/{number}?format=html"),
    ] {
        assert_eq!(web.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let list = web.get("/dashboard/purchases").await;
    assert!(!list.body.contains(&number));

    let refused = web
        .post(
            "/dashboard/buy",
            &[("plan_id", PLAN_1K), ("method", "crypto"), ("currency", "BTC")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let csrf = web.csrf("/dashboard/buy").await;
    let created = web
        .post(
            "/dashboard/buy",
            &[
                ("csrf", &csrf),
                ("plan_id", PLAN_1K),
                ("method", "crypto"),
                ("currency", "BTC"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let page = web.get(created.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("addr_btc_") && page.body.contains("id=\"qr\""),
        "{}",
        page.body
    );
    let status = web.get(&format!("{}/status", created.location())).await;
    assert!(status.body.contains("\"pending\""), "{}", status.body);
}

#[tokio::test]
async fn the_console_records_and_confirms_a_telegram_sale() {
    let app = spawn_pay_app().await;
    let account = app.create_account("tg").await;
    let mut web = Web::new(&app);
    web.admin_login(crate::helpers::ADMIN, "support").await;
    let csrf = web.csrf(&format!("/admin/accounts/{account}")).await;
    let sale = web
        .post(
            &format!("/admin/accounts/{account}/telegram-sale"),
            &[("csrf", &csrf), ("plan_id", PLAN_1K), ("reference", "chat 42")],
        )
        .await;
    assert_eq!(sale.status, StatusCode::SEE_OTHER, "{}", sale.body);
    let list = web.get("/admin/purchases?status=pending").await;
    assert!(list.body.contains("chat 42"), "{}", list.body);
    let marker = "action=\"/admin/purchases/";
    let start = list.body.find(marker).unwrap() + marker.len();
    let id = &list.body[start..start + 36];
    let confirmed = web
        .post(
            &format!("/admin/purchases/{id}/confirm"),
            &[("csrf", &csrf), ("reference", "tx 1")],
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::SEE_OTHER, "{}", confirmed.body);
    assert_eq!(app.balance(account).await, crate::helpers::d("1000"));
}
