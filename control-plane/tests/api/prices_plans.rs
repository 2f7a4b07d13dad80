use chrono::{Duration, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn prices_are_public_with_credits_per_token_at_the_factor() {
    let app = spawn_app().await;
    let (s, list) = send(app.req(Method::GET, "/v1/prices")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["factor"], "0.7");
    // The November version (with the long-context tier that ended in April) and December's.
    let sonnet = price_versions(&list, "claude-sonnet-4-5");
    assert_eq!(sonnet.len(), 2);
    let (november, e) = (sonnet[0], sonnet[1]);
    assert_eq!(november["tiers"][0]["above_prompt_tokens"], 200000);
    assert_eq!(november["in_force"], false);
    for field in [
        "model",
        "aliases",
        "effective_from",
        "tiers",
        "usd_per_mtok",
        "credits_per_token",
        "version",
    ] {
        assert!(e.get(field).is_some(), "missing {field}: {e}");
    }
    assert_eq!(e["usd_per_mtok"]["input"], "3");
    assert_eq!(e["credits_per_token"]["input"], "0.00042");
    assert_eq!(e["credits_per_token"]["output"], "0.0021");
    assert_eq!(e["credits_per_token"]["cache_read"], "0.000042");
    assert_eq!(e["tiers"], json!([]));
    assert_eq!(e["in_force"], true);
    let half = spawn_app_with_factor(d("0.5")).await;
    let (_, list) = send(half.req(Method::GET, "/v1/prices")).await;
    assert_eq!(
        price_versions(&list, "claude-sonnet-4-5")[1]["credits_per_token"]["input"],
        "0.0003"
    );
}

#[tokio::test]
async fn a_price_change_adds_a_version_that_applies_from_its_time_and_keeps_history() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let snap_before = app.snapshot("").await["version"].as_u64().unwrap();
    let from = (Utc::now() + Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let body = json!({
        "effective_from": from,
        "usd_per_mtok": {"input": "6", "cache_write_5m": "7.5", "cache_write_1h": "12", "cache_read": "0.6", "output": 30},
        "reason": "upstream raised prices",
    });
    let (s, created) = app
        .admin_json(Method::PUT, "/v1/prices/claude-sonnet-4-5", body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["credits_per_token"]["input"], "0.00084");
    assert_eq!(created["in_force"], false);
    let (_, list) = send(app.req(Method::GET, "/v1/prices")).await;
    assert_eq!(
        price_versions(&list, "claude-sonnet-4-5").len(),
        3,
        "the earlier versions are kept"
    );

    let (s, b) = app
        .admin_json(Method::PUT, "/v1/prices/claude-sonnet-4-5", body)
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");

    let before = debit(account, &secret, "claude-sonnet-4-5", usage(1000, 0), Utc::now());
    let after = debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        usage(1000, 0),
        Utc::now() + Duration::hours(2),
    );
    let ack = app.debits(vec![before, after]).await;
    assert_eq!(ack.results[0].credits, Some(d("0.42")));
    assert_eq!(ack.results[1].credits, Some(d("0.84")));
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT price_version FROM usage_records ORDER BY admitted_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        versions,
        [
            "claude-sonnet-4-5@2026-12-01T00:00:00Z".to_owned(),
            format!("claude-sonnet-4-5@{from}")
        ]
    );

    let delta = app.snapshot(&format!("?since={snap_before}")).await;
    let prices: metering::wire::Prices = serde_json::from_value(delta["prices"].clone()).unwrap();
    assert_eq!(
        prices
            .entries
            .iter()
            .filter(|e| e.model == "claude-sonnet-4-5")
            .count(),
        3
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'price.set' AND reason = 'upstream raised prices'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // A new model, effective now.
    let (s, b) = app
        .admin_json(Method::PUT, "/v1/prices/claude-new-1", json!({"usd_per_mtok": {"input": "1", "cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "1", "output": "1"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["in_force"], true);
}

#[tokio::test]
async fn invalid_price_changes_are_refused_without_a_trace() {
    let app = spawn_app().await;
    let rates =
        json!({"input": "1", "cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "1", "output": "1"});
    let past = (Utc::now() - Duration::days(1)).to_rfc3339();
    for (model, body, status) in [
        (
            "claude-x",
            json!({"usd_per_mtok": rates, "effective_from": past}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "claude-x",
            json!({"usd_per_mtok": {"input": "-1", "cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "1", "output": "1"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "claude-x",
            json!({"usd_per_mtok": {"input": 1.5, "cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "1", "output": "1"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "claude-x",
            json!({"usd_per_mtok": rates, "surprise": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad%20model%3B",
            json!({"usd_per_mtok": rates}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "claude-x",
            json!({"usd_per_mtok": rates, "aliases": ["claude-sonnet-4-5"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, b) = app
            .admin_json(Method::PUT, &format!("/v1/prices/{model}"), body)
            .await;
        assert_error(s, &b, status, "invalid_request_error");
    }
    let custom: i64 = sqlx::query_scalar("SELECT count(*) FROM price_versions WHERE actor <> 'system'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(custom, 0);
}

#[tokio::test]
async fn plans_are_seeded_listed_publicly_added_and_retired_by_admins() {
    let app = spawn_app().await;
    let (s, list) = send(app.req(Method::GET, "/v1/plans")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let plans: Vec<(String, String, bool)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["credits"].as_str().unwrap().into(),
                p["price_usd"].as_str().unwrap().into(),
                p["active"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("1000", "5"),
        ("10000", "50"),
        ("105000", "500"),
        ("275000", "1250"),
    ];
    assert_eq!(plans, expected.map(|(c, p)| (c.to_owned(), p.to_owned(), true)));
    assert!(list["data"][0]["id"].is_string() && list["data"][0]["name"].is_string());

    let (s, plan) = app
        .admin_json(
            Method::POST,
            "/v1/plans",
            json!({"name": "Trial", "credits": "200", "price_usd": "0.99"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plan}");
    let plan_id = id(&plan["id"]);
    let (s, b) = app
        .admin_json(
            Method::POST,
            "/v1/plans",
            json!({"name": "Trial", "credits": "1", "price_usd": "1"}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    for bad in [
        json!({"name": "x", "credits": "0", "price_usd": "1"}),
        json!({"name": "x", "credits": "1", "price_usd": "0.001"}),
        json!({"name": "x", "credits": 1.5, "price_usd": "1"}),
    ] {
        let (s, b) = app.admin_json(Method::POST, "/v1/plans", bad).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let (s, retired) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/plans/{plan_id}"),
            json!({"active": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{retired}");
    assert_eq!(retired["active"], false);
    assert_eq!(retired["credits"], "200");
    let (s, b) = app
        .admin_json(Method::PATCH, &format!("/v1/plans/{plan_id}"), json!({}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/plans/{}", uuid::Uuid::new_v4()),
            json!({"active": false}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (_, list) = send(app.req(Method::GET, "/v1/plans")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 5);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'plan.%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audited, 2);
}
