//! Spend control: the account setting (default from `SPEND_CONTROL`, changed by PATCH, carried by
//! snapshots and lookups), and the gateways' hold reports (each gateway hears the others' holds).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

fn row(snapshot: &Value, account: Uuid) -> &Value {
    snapshot["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == account.to_string())
        .unwrap_or_else(|| panic!("account {account} not in {snapshot}"))
}

#[tokio::test]
async fn new_accounts_reserve_unless_configured_and_a_patch_reaches_the_gateways() {
    let app = spawn_app().await;
    let account = app.create_account("reserving").await;
    let (_, body) = app.admin_get(&format!("/v1/accounts/{account}")).await;
    assert_eq!(body["spend_control"], "reserve");
    let before = app.snapshot("?protocol=3").await;
    assert_eq!(row(&before, account)["spend_control"], "reserve");
    let version = before["version"].as_u64().unwrap();

    let (status, body) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"spend_control": "balance", "reason": "trusted customer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spend_control"], "balance");
    // The change is in the next delta: gateways switch the account's admission at once.
    let delta = app.snapshot(&format!("?protocol=3&since={version}")).await;
    assert_eq!(row(&delta, account)["spend_control"], "balance");
    let (_, audit) = app
        .admin_get(&format!("/v1/audit?target=account:{account}"))
        .await;
    assert!(audit.to_string().contains("account.spend_control"), "{audit}");

    let (status, body) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"spend_control": "prepaid"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request_error");

    let app = spawn_app_with(|c| c.spend_control = metering::wire::SpendControl::Balance).await;
    let account = app.create_account("balance-default").await;
    let (_, body) = app.admin_get(&format!("/v1/accounts/{account}")).await;
    assert_eq!(body["spend_control"], "balance");
}

/// A hold report as the sync's first snapshot request carries it; the answer's `others` is what the
/// other gateways hold.
async fn report(app: &TestApp, gateway: Uuid, holds: Value) -> (StatusCode, Value) {
    send(
        app.internal(Method::POST, "/internal/v1/snapshot?protocol=3")
            .json(&json!({"protocol": 3, "gateway": gateway, "holds": holds})),
    )
    .await
}

#[tokio::test]
async fn each_gateway_hears_what_the_others_hold_and_a_report_replaces_the_last() {
    let app = spawn_app().await;
    let (a, b) = (app.create_account("a").await, app.create_account("b").await);
    let (g1, g2, g3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (status, body) = report(&app, g1, json!([{"account_id": a, "credits": "12.5"}])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["others"], json!([]), "nobody else holds anything");
    report(
        &app,
        g2,
        json!([{"account_id": a, "credits": "2"}, {"account_id": b, "credits": "1"}]),
    )
    .await;
    let (_, body) = report(&app, g3, json!([])).await;
    let mut others = body["others"].as_array().unwrap().clone();
    others.sort_by_key(|h| h["account_id"].as_str().unwrap().to_owned());
    let mut expected = vec![
        json!({"account_id": a, "credits": "14.5"}),
        json!({"account_id": b, "credits": "1"}),
    ];
    expected.sort_by_key(|h| h["account_id"].as_str().unwrap().to_owned());
    assert_eq!(others, expected);
    // g1's own holds are not in its answer; g2's are.
    let (_, body) = report(&app, g1, json!([{"account_id": a, "credits": "12.5"}])).await;
    let mut others = body["others"].as_array().unwrap().clone();
    others.sort_by_key(|h| h["account_id"].as_str().unwrap().to_owned());
    let mut expected = vec![
        json!({"account_id": a, "credits": "2"}),
        json!({"account_id": b, "credits": "1"}),
    ];
    expected.sort_by_key(|h| h["account_id"].as_str().unwrap().to_owned());
    assert_eq!(others, expected);
    // g2's requests ended: its next report is empty, and replaces the last.
    report(&app, g2, json!([])).await;
    let (_, body) = report(&app, g3, json!([])).await;
    assert_eq!(body["others"], json!([{"account_id": a, "credits": "12.5"}]));
}

#[tokio::test]
async fn a_gateway_that_stops_reporting_stops_counting() {
    let app = spawn_app().await;
    let a = app.create_account("a").await;
    let (gone, live) = (Uuid::new_v4(), Uuid::new_v4());
    report(&app, gone, json!([{"account_id": a, "credits": "5"}])).await;
    // Its report ages past the freshness bound (15 s), as when its Envoy dies.
    sqlx::query("UPDATE gateway_holds SET reported_at = now() - interval '16 seconds' WHERE gateway = $1")
        .bind(gone)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, body) = report(&app, live, json!([])).await;
    assert_eq!(body["others"], json!([]));
}

#[tokio::test]
async fn bad_reports_are_refused_and_need_the_internal_token() {
    let app = spawn_app().await;
    let a = app.create_account("a").await;
    for holds in [
        json!([{"account_id": a, "credits": "0"}]),
        json!([{"account_id": a, "credits": "-1"}]),
        json!([{"account_id": "not-a-uuid", "credits": "1"}]),
    ] {
        let (status, body) = report(&app, Uuid::new_v4(), holds).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let (status, body) = send(
        app.req(Method::POST, "/internal/v1/snapshot?protocol=3")
            .json(&json!({"gateway": Uuid::new_v4(), "holds": []})),
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "authentication_error");
}

/// A sync's first page carries the gateway's hold report and answers the other gateways' holds:
/// one call per sync period for both.
#[tokio::test]
async fn the_snapshot_request_carries_the_hold_report_and_answers_the_others() {
    let app = spawn_app().await;
    let a = app.create_account("a").await;
    let (g1, g2) = (Uuid::new_v4(), Uuid::new_v4());
    let post = |gateway: Uuid, holds: Value| {
        send(
            app.internal(Method::POST, "/internal/v1/snapshot?protocol=3")
                .json(&json!({"protocol": 3, "gateway": gateway, "holds": holds})),
        )
    };
    let (status, page) = post(g1, json!([{"account_id": a, "credits": "3.5"}])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["others"], json!([]));
    assert_eq!(
        row(&page, a)["spend_control"],
        "reserve",
        "the page is a snapshot too"
    );
    let (_, page) = post(g2, json!([])).await;
    assert_eq!(page["others"], json!([{"account_id": a, "credits": "3.5"}]));
    // A plain GET is the snapshot alone.
    let page = app.snapshot("?protocol=3").await;
    assert!(page.get("others").is_none(), "{page}");
}
