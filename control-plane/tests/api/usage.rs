use chrono::{Duration, TimeZone, Utc};
use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn usage_listing_pages_filters_and_exports_csv() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_a, secret_a) = app.create_key(account, "a").await;
    let (_, secret_b) = app.create_key(account, "b").await;
    let day1 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let day2 = day1 + Duration::days(1);
    let mut batch = vec![
        debit(account, &secret_a, "claude-sonnet-4-5", usage(1000, 100), day1),
        debit(
            account,
            &secret_a,
            "claude-haiku-4-5",
            usage(2000, 0),
            day1 + Duration::hours(1),
        ),
        debit(account, &secret_b, "claude-sonnet-4-5", usage(3000, 0), day2),
    ];
    batch[1].model_served = None;
    let ack = app.debits(batch.clone()).await;
    assert!(
        ack.results
            .iter()
            .all(|r| r.outcome == metering::wire::DebitOutcome::Applied),
        "{ack:?}"
    );
    let path = format!("/v1/accounts/{account}/usage");

    let (_, page1) = app.admin_get(&format!("{path}?limit=2")).await;
    let rows = page1["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(id(&rows[0]["request_id"]), batch[2].debit_id, "newest first");
    assert_eq!(
        rows[1]["model"], "claude-haiku-4-5",
        "falls back to the model requested"
    );
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.admin_get(&format!("{path}?limit=2&cursor={cursor}")).await;
    assert_eq!(id(&page2["data"][0]["request_id"]), batch[0].debit_id);
    assert!(page2["next_cursor"].is_null());

    let (_, by_key) = app.admin_get(&format!("{path}?key_id={key_a}")).await;
    assert_eq!(by_key["data"].as_array().unwrap().len(), 2);
    let (_, by_model) = app
        .admin_get(&format!("{path}?model=claude-sonnet-4-5-20250929"))
        .await;
    assert_eq!(by_model["data"].as_array().unwrap().len(), 2);
    let (_, by_time) = app
        .admin_get(&format!(
            "{path}?from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z"
        ))
        .await;
    assert_eq!(by_time["data"].as_array().unwrap().len(), 1);
    let (_, injected) = app
        .admin_get(&format!("{path}?model=%27%20OR%201%3D1%20--"))
        .await;
    assert_eq!(injected["data"].as_array().unwrap().len(), 0);

    let resp = app
        .admin(Method::GET, &format!("{path}?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("request_id,created_at,key_id,model"));
    assert!(lines[1].starts_with(&batch[2].debit_id.to_string()));
    assert!(lines[1].contains(",1.26,"), "{csv}");
    let resp = app
        .admin(Method::GET, &path)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().starts_with("request_id,"));

    for bad in [
        "?limit=0",
        "?limit=1001",
        "?from=yesterday",
        "?key_id=1",
        "?cursor=abc",
        "?format=xml",
        "?limit=1;DROP",
    ] {
        let (s, b) = app.admin_get(&format!("{path}{bad}")).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
}

#[tokio::test]
async fn daily_aggregate_and_margin_report_sum_by_day_and_model() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "a").await;
    let day1 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let batch = vec![
        debit(account, &secret, "claude-sonnet-4-5", usage(1000, 100), day1),
        debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(1000, 0),
            day1 + Duration::hours(2),
        ),
        debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(3000, 0),
            day1 + Duration::days(1),
        ),
    ];
    app.debits(batch).await;
    let range = "from=2026-02-28T00:00:00Z&to=2026-03-05T00:00:00Z";
    let (s, daily) = app
        .admin_get(&format!("/v1/accounts/{account}/usage/daily?{range}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{daily}");
    let rows = daily["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{daily}");
    assert_eq!(rows[0]["date"], "2026-03-02");
    assert_eq!(rows[1]["date"], "2026-03-01");
    assert_eq!(rows[1]["requests"], 2);
    assert_eq!(rows[1]["input_tokens"], 2000);
    assert_eq!(rows[1]["output_tokens"], 100);
    // 2000 x 0.00042 + 100 x 0.0021
    assert_eq!(rows[1]["cost"], "1.05");

    let (s, margin) = app.admin_get(&format!("/v1/reports/margin?{range}")).await;
    assert_eq!(s, StatusCode::OK, "{margin}");
    let day = &margin["data"][1];
    assert_eq!(day["model"], "claude-sonnet-4-5");
    assert_eq!(day["credits"], "1.05");
    assert_eq!(day["credits_usd"], "0.00525");
    assert_eq!(day["list_usd"], "0.0075");
    assert_eq!(day["margin_usd"], "-0.00225");
    for bad in [
        "from=2026-03-05T00:00:00Z&to=2026-03-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let (s, b) = app.admin_get(&format!("/v1/reports/margin?{bad}")).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
}

#[tokio::test]
async fn customers_read_their_own_balance_and_usage_with_their_key() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let other = app.create_account("other").await;
    let (key_id, secret) = app.create_key(account, "laptop").await;
    let (_, other_secret) = app.create_key(other, "x").await;
    app.grant(account, "50", "g").await;
    app.debits(vec![
        debit(account, &secret, "claude-sonnet-4-5", usage(1000, 0), Utc::now()),
        debit(
            other,
            &other_secret,
            "claude-sonnet-4-5",
            usage(1000, 0),
            Utc::now(),
        ),
    ])
    .await;
    for auth in [
        ("x-api-key", secret.clone()),
        ("authorization", format!("Bearer {secret}")),
    ] {
        let (s, me) = send(app.req(Method::GET, "/v1/me").header(auth.0, &auth.1)).await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(id(&me["account_id"]), account);
        assert_eq!(me["name"], "acme");
        assert_eq!(me["balance"], "49.58");
        assert_eq!(id(&me["key"]["id"]), key_id);
        assert_eq!(me["key"]["name"], "laptop");
        assert!(secret.starts_with(me["key"]["prefix"].as_str().unwrap()));
    }
    let (s, usage) = send(app.req(Method::GET, "/v1/me/usage").header("x-api-key", &secret)).await;
    assert_eq!(s, StatusCode::OK, "{usage}");
    let rows = usage["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the caller's own usage");
    assert!(
        rows[0].get("list_usd").is_none(),
        "the operator's cost is not shown to customers"
    );

    let (s, b) = send(
        app.req(Method::GET, "/v1/me")
            .header("x-api-key", &secret)
            .bearer_auth(&other_secret),
    )
    .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.req(Method::GET, "/v1/me")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.req(Method::GET, "/v1/me").header("x-api-key", "csk_0000")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.req(Method::GET, "/v1/me/usage").bearer_auth(ADMIN)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
}
