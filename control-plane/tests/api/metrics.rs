//! `GET /metrics`: the Prometheus (OpenMetrics) text, with what an operator watches. The counters
//! are per process and tests share the process, so checks read increases, not totals.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

async fn scrape(app: &TestApp) -> String {
    let resp = app.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "not a complete exposition");
    text
}

/// The value of the sample `name` (with its labels, exactly as exposed), 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_debits_lag_snapshots_clients_and_purchases() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "ci").await;
    app.admin_get(&format!("/v1/accounts/{account}")).await;
    let admitted = Utc::now() - chrono::Duration::seconds(3);
    let d = debit(account, &secret, "claude-sonnet-4-5", usage(100, 10), admitted);
    app.debits(vec![d.clone(), d]).await;
    let gateway = Uuid::new_v4();
    let (s, _) = send(
        app.internal(Method::POST, "/internal/v1/snapshot?protocol=4")
            .json(&json!({"protocol": 4, "gateway": gateway, "holds": []})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let after = scrape(&app).await;

    let increase = |name: &str| sample(&after, name) - sample(&before, name);
    assert!(
        increase(r#"claudestore_http_requests_total{method="POST",route="/v1/accounts",status="201"}"#)
            >= 1.0
    );
    // Route templates, never ids.
    assert!(
        increase(r#"claudestore_http_requests_total{method="GET",route="/v1/accounts/{id}",status="200"}"#)
            >= 1.0
    );
    assert!(!after.contains(&account.to_string()), "an id in a label");
    assert!(increase("claudestore_debit_batches_total") >= 1.0);
    assert!(increase(r#"claudestore_debits_total{outcome="applied"}"#) >= 1.0);
    assert!(increase(r#"claudestore_debits_total{outcome="duplicate"}"#) >= 1.0);
    // Admitted 3 s before: counted in the lag buckets above 2.56 s, not below.
    assert!(increase(r#"claudestore_ledger_lag_seconds_bucket{le="5.12"}"#) >= 1.0);
    assert!(increase("claudestore_ledger_lag_seconds_count") >= 1.0);
    assert!(increase("claudestore_snapshot_pages_total") >= 1.0);
    assert!(sample(&after, "claudestore_snapshot_version") >= 1.0);
    assert!(sample(&after, "claudestore_sync_clients") >= 1.0);
    assert_eq!(sample(&after, "claudestore_database_up"), 1.0);
    assert!(
        after.contains(r#"claudestore_purchases{state="paid"}"#),
        "{after}"
    );
    for name in [
        "claudestore_http_request_seconds_bucket",
        "claudestore_debit_batch_seconds_bucket",
        "claudestore_debit_batch_size_bucket",
        "# HELP claudestore_webhook_deliveries",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
}
