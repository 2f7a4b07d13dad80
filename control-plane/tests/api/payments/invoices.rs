//! Invoices: gapless numbers under concurrency and failed transactions, the document as JSON,
//! HTML and PDF (text checked with pdftotext from Debian's poppler-utils), access, immutability.

use std::str::FromStr;

use chrono::Datelike;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

async fn telegram_sale(app: &PayApp, account: Uuid, plan: &str, reference: &str) -> Value {
    let (s, p) = app
        .purchase(
            account,
            json!({"plan_id": plan, "method": "telegram", "reference": reference}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p
}

async fn confirm(app: &PayApp, p: &Value) -> (StatusCode, Value) {
    send(app.admin(
        Method::POST,
        &format!("/v1/purchases/{}/confirm", p["id"].as_str().unwrap()),
    ))
    .await
}

#[tokio::test]
async fn invoice_numbers_stay_gapless_under_concurrent_payments_and_failed_transactions() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let (s, poison) = app
        .admin_json(
            Method::POST,
            "/v1/plans",
            json!({"name": "poison plan", "credits": "10", "price_usd": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{poison}");
    // Payments of this plan fail inside the paying transaction, after the invoice number is taken.
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.status = 'paid' AND NEW.plan_name = 'poison plan' THEN RAISE EXCEPTION 'poisoned'; END IF;
             RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE UPDATE ON purchases FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut sales = Vec::new();
    for i in 0..18 {
        let plan = if i % 3 == 2 {
            poison["id"].as_str().unwrap()
        } else {
            PLAN_1K
        };
        sales.push(telegram_sale(&app, account, plan, &format!("order-{i}")).await);
    }
    let series = format!("INV-{}", chrono::Utc::now().year());
    let rollbacks = (0..4).map(|_| {
        let pool = app.pool.clone();
        let series = series.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            control_plane::invoices::next_number(&mut tx, &series)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
        }
    });
    let confirms = futures::future::join_all(sales.iter().map(|p| confirm(&app, p)));
    let (results, _) = tokio::join!(confirms, futures::future::join_all(rollbacks));
    let mut paid = 0;
    for (p, (s, b)) in sales.iter().zip(&results) {
        if p["plan_name"] == "poison plan" {
            assert_error(*s, b, StatusCode::INTERNAL_SERVER_ERROR, "api_error");
        } else {
            assert_eq!(*s, StatusCode::OK, "{b}");
            paid += 1;
        }
    }
    assert_eq!(paid, 12);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM invoices WHERE series = $1 ORDER BY seq")
        .bind(&series)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        seqs,
        (1..=12).collect::<Vec<i64>>(),
        "numbers are 1..12 without a gap"
    );
    let issued: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT issued_at FROM invoices WHERE series = $1 ORDER BY seq")
            .bind(&series)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        issued.windows(2).all(|w| w[0] < w[1]),
        "issue times follow number order: {issued:?}"
    );
    let numbers: Vec<String> = sqlx::query_scalar(
        "SELECT invoice_number FROM purchases WHERE status = 'paid' ORDER BY invoice_number",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: Vec<String> = (1..=12).map(|n| format!("{series}-{n:06}")).collect();
    assert_eq!(numbers, expected);
    assert_eq!(app.balance(account).await, d("12000"));
    let (_, list) = app
        .admin_get(&format!("/v1/accounts/{account}/invoices?limit=1000"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 12);
    audit_ledger(&app.pool).await;
}

fn pdf_text(bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("cs-invoice-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invoice.pdf");
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&file)
        .arg("-")
        .output()
        .unwrap_or_else(|e| {
            panic!("pdftotext is needed to check invoice PDFs ({e}); install Debian's poppler-utils: apt-get install -y poppler-utils")
        });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "pdftotext failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn an_invoice_is_served_as_json_html_and_pdf_with_number_credits_and_total() {
    let app = spawn_pay_app().await;
    let account = app.create_account("acme").await;
    let (s, b) = app
        .admin_json(
            Method::PUT,
            &format!("/v1/accounts/{account}/billing"),
            json!({"name": "Acme <GmbH> & Söhne", "address": "Hauptstraße 1\n10115 Berlin", "tax_id": "DE999"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let p = telegram_sale(&app, account, PLAN_105K, "tg-order-9").await;
    let (_, paid) = confirm(&app, &p).await;
    let number = paid["invoice_number"].as_str().unwrap().to_owned();
    let path = format!("/v1/invoices/{number}");

    let (s, doc) = app.admin_get(&path).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["number"], number.as_str());
    assert_eq!(doc["kind"], "invoice");
    assert_eq!(doc["seller"]["name"], "ClaudeStore Test Seller Ltd");
    assert_eq!(doc["seller"]["tax_id"], "DE123456789");
    assert_eq!(doc["buyer"]["name"], "Acme <GmbH> & Söhne");
    assert_eq!(doc["buyer"]["tax_id"], "DE999");
    assert_eq!(doc["buyer"]["email"], "acme@example.com");
    let line = &doc["lines"][0];
    assert_eq!(line["description"], "105,000 credits");
    assert_eq!(line["credits"], "105000");
    assert_eq!(line["unit_price_usd"], "0.00476");
    assert_eq!(line["amount_usd"], "500.00");
    assert_eq!(
        (doc["total_usd"].as_str(), doc["tax_usd"].as_str()),
        (Some("500.00"), Some("0.00"))
    );
    assert_eq!(doc["payment_method"], "telegram");
    assert_eq!(doc["payment_reference"], "tg-order-9");

    let html = app
        .admin(Method::GET, &format!("{path}?format=html"))
        .send()
        .await
        .unwrap();
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = html.text().await.unwrap();
    for needle in [
        number.as_str(),
        "105000",
        "500.00",
        "0.00476",
        "Acme &lt;GmbH&gt; &amp; Söhne",
    ] {
        assert!(html.contains(needle), "HTML lacks {needle}: {html}");
    }
    let by_accept = app
        .admin(Method::GET, &path)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(by_accept.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let pdf = app
        .admin(Method::GET, &path)
        .header("accept", "application/pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-1.4"));
    let text = pdf_text(&bytes);
    for needle in [
        number.as_str(),
        "105000",
        "500.00 USD",
        "0.00476",
        "Acme <GmbH> & Söhne",
        "Hauptstraße 1",
        "DE123456789",
    ] {
        assert!(text.contains(needle), "the PDF's text lacks {needle:?}:\n{text}");
    }
    let (s, b) = app.admin_get(&format!("{path}?format=xml")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");

    // The customer sees their own invoice with their key; nobody else's.
    let (_, secret) = app.create_key(account, "k").await;
    let (s, own) = send(app.req(Method::GET, &path).header("x-api-key", &secret)).await;
    assert_eq!(s, StatusCode::OK, "{own}");
    assert_eq!(own["number"], number.as_str());
    let other = app.create_account("other").await;
    let (_, other_secret) = app.create_key(other, "k").await;
    let (s, b) = send(app.req(Method::GET, &path).bearer_auth(&other_secret)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = send(app.req(Method::GET, &path)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");

    let changed = sqlx::query("UPDATE invoices SET document = '{}'")
        .execute(&app.pool)
        .await;
    assert!(changed.is_err(), "issued invoices are immutable");
    let (_, again) = app.admin_get(&path).await;
    assert_eq!(again, doc);
}

#[tokio::test]
async fn a_configured_tax_rate_is_shown_inside_the_total() {
    let app = spawn_pay_app_with(|c| c.tax_rate = Decimal::from_str("0.2").unwrap(), |r| r).await;
    let account = app.create_account("acme").await;
    let (_, plans) = app.admin_get("/v1/plans").await;
    let plan_10k = plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["credits"] == "10000")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = telegram_sale(&app, account, &plan_10k, "o").await;
    let (_, paid) = confirm(&app, &p).await;
    let (_, doc) = app
        .admin_get(&format!(
            "/v1/invoices/{}",
            paid["invoice_number"].as_str().unwrap()
        ))
        .await;
    assert_eq!(doc["total_usd"], "50.00");
    assert_eq!(doc["tax_usd"], "8.33");
    assert_eq!(doc["subtotal_usd"], "41.67");
    assert_eq!(doc["tax_rate"], "0.2");
    assert_eq!(doc["lines"][0]["unit_price_usd"], "0.00500");
}
