//! Key limits: `PATCH /v1/keys/{key_id}` (limit per UTC period, allowed models, expiry), the key
//! list's spend this period and last use, what snapshots and lookups tell the gateways (the
//! remaining budget, re-versioned by debits and at period ends), `key.limit_reached`, and the
//! customer API refusing an expired key.

use chrono::{DateTime, Duration, Utc};
use metering::keylimit::LimitPeriod;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

async fn patch(app: &TestApp, key: Uuid, body: Value) -> (StatusCode, Value) {
    app.admin_json(Method::PATCH, &format!("/v1/keys/{key}"), body)
        .await
}

fn key_row(snapshot: &Value, key: Uuid) -> Option<&Value> {
    snapshot["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key.to_string())
}

async fn listed(app: &TestApp, account: Uuid, key: Uuid) -> Value {
    let (s, body) = app.admin_get(&format!("/v1/accounts/{account}/keys")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key.to_string())
        .cloned()
        .unwrap()
}

/// Sonnet 4.5 input at 70%: 0.00042 credits a token.
fn spend(account: Uuid, secret: &str, tokens: u64, at: DateTime<Utc>) -> metering::wire::Debit {
    debit(account, secret, "claude-sonnet-4-5", usage(tokens, 0), at)
}

fn version(v: &Value) -> u64 {
    v["version"].as_u64().unwrap()
}

#[tokio::test]
async fn a_limit_reaches_the_gateways_and_the_list_shows_spend_this_period_and_last_use() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.grant(account, "1000", "g1").await;
    let (key, secret) = app.create_key(account, "ci").await;
    let (other, _) = app.create_key(account, "laptop").await;
    let fresh = listed(&app, account, key).await;
    assert_eq!(fresh["limit"], Value::Null);
    assert_eq!(fresh["allowed_models"], json!([]));
    assert_eq!(fresh["spend_this_period"], "0");
    assert_eq!(fresh["last_used_at"], Value::Null);
    let before = app.snapshot("").await;

    let expires = (Utc::now() + Duration::days(30)).to_rfc3339();
    let (s, body) = patch(
        &app,
        key,
        json!({"limit": {"credits": "50", "period": "day"},
               "allowed_models": ["claude-sonnet-4-5", "claude-opus-*", "claude-sonnet-4-5"],
               "expires_at": expires}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["limit"], json!({"credits": "50", "period": "day"}));
    assert_eq!(
        body["allowed_models"],
        json!(["claude-sonnet-4-5", "claude-opus-*"]),
        "deduplicated"
    );
    assert_eq!(body["expired"], false);
    let tomorrow = LimitPeriod::Day.bounds(Utc::now()).1.unwrap();
    assert_eq!(
        body["period_resets_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        tomorrow
    );

    // The gateways get it with the next delta: the remaining budget and when it resets.
    let delta = app.snapshot(&format!("?since={}", version(&before))).await;
    let row = key_row(&delta, key).expect("the key is in the delta");
    assert_eq!(row["limit"]["credits"], "50");
    assert_eq!(row["limit"]["period"], "day");
    assert_eq!(dec(&row["limit"]["remaining"]), d("50"));
    assert_eq!(
        row["limit"]["resets_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        tomorrow
    );
    assert_eq!(
        row["allowed_models"],
        json!(["claude-sonnet-4-5", "claude-opus-*"])
    );
    assert!(row["expires_at"].is_string());
    assert!(key_row(&delta, other).is_none());

    // Spend today counts; yesterday's does not (it is another day), but it was a use.
    let now = Utc::now();
    let yesterday = LimitPeriod::Day.bounds(now).0.unwrap() - Duration::minutes(1);
    let ack = app
        .debits(vec![
            spend(account, &secret, 10_000, yesterday),
            spend(account, &secret, 20_000, now),
        ])
        .await;
    let acked_at = ack.results[1].version;
    let row = listed(&app, account, key).await;
    assert_eq!(dec(&row["spend_this_period"]), d("8.4"));
    let last: DateTime<Utc> = row["last_used_at"].as_str().unwrap().parse().unwrap();
    assert!((last - now).num_milliseconds().abs() < 2, "{last} vs {now}");
    // The debit batch re-versioned the limited key: the next delta carries its remaining budget,
    // at a version its acknowledgement's group is dropped at.
    let delta = app.snapshot(&format!("?since={}", version(&delta))).await;
    let row = key_row(&delta, key).expect("re-versioned by the debits");
    assert_eq!(dec(&row["limit"]["remaining"]), d("41.6"));
    assert!(row["version"].as_u64().unwrap() >= acked_at);
    // A key without a limit is not re-versioned by its debits.
    let (_, other_secret) = app.create_key(account, "unlimited").await;
    let v = version(&app.snapshot("").await);
    app.debits(vec![spend(account, &other_secret, 100, now)]).await;
    let delta = app.snapshot(&format!("?since={v}")).await;
    assert!(delta["keys"].as_array().unwrap().is_empty(), "{delta}");

    // The lookup of a key not cached says the same.
    let (s, found) = send(
        app.internal(Method::POST, "/internal/v1/keys/lookup")
            .json(&json!({"protocol": 4, "key_hash": metering::apikey::hash(&secret)})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(dec(&found["key"]["limit"]["remaining"]), d("41.6"));

    // null removes the limit and the expiry, [] allows every model again; each change is audited.
    let (s, body) = patch(
        &app,
        key,
        json!({"limit": null, "allowed_models": [], "expires_at": null}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        (body["limit"].clone(), body["expires_at"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(body["allowed_models"], json!([]));
    let month = LimitPeriod::Month.bounds(now).0.unwrap();
    let this_month = if yesterday >= month { d("12.6") } else { d("8.4") };
    assert_eq!(
        dec(&body["spend_this_period"]),
        this_month,
        "without a limit: this month"
    );
    let (_, audit) = app.admin_get(&format!("/v1/audit?target=key:{key}")).await;
    assert_eq!(audit.to_string().matches("key.update").count(), 2, "{audit}");
}

#[tokio::test]
async fn bad_limits_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key, _) = app.create_key(account, "ci").await;
    for (body, needle) in [
        (json!({}), "nothing to change"),
        (
            json!({"limit": {"credits": "0", "period": "day"}}),
            "limit.credits",
        ),
        (
            json!({"limit": {"credits": "-5", "period": "week"}}),
            "limit.credits",
        ),
        (json!({"limit": {"credits": 2.5, "period": "week"}}), "inexact"),
        (json!({"limit": {"credits": "5", "period": "year"}}), "period"),
        (json!({"limit": {"credits": "5"}}), "period"),
        (json!({"allowed_models": ["gpt-4o"]}), "gpt-4o"),
        (
            json!({"allowed_models": ["claude-sonet-4-5"]}),
            "claude-sonet-4-5",
        ),
        (json!({"allowed_models": ["claude-*-4"]}), "prefix"),
        (json!({"allowed_models": vec!["claude-opus-*"; 65]}), "at most 64"),
        (json!({"expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "x"}), "name"),
    ] {
        let (s, b) = patch(&app, key, body.clone()).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (s, b) = patch(&app, Uuid::new_v4(), json!({"expires_at": null})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    // Nothing was changed by the refused calls.
    let row = listed(&app, account, key).await;
    assert_eq!(
        (row["limit"].clone(), row["allowed_models"].clone()),
        (Value::Null, json!([]))
    );
}

#[tokio::test]
async fn key_limit_reached_is_sent_once_per_period() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.grant(account, "1000", "g1").await;
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"webhook_url": "https://hooks.example.com/cs"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (key, secret) = app.create_key(account, "ci").await;
    let (s, b) = patch(&app, key, json!({"limit": {"credits": "5", "period": "month"}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let events = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT type, body FROM webhook_events WHERE type = 'key.limit_reached' ORDER BY created_at",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    // 4.2 credits: below the limit.
    app.debits(vec![spend(account, &secret, 10_000, Utc::now())])
        .await;
    assert!(events().await.is_empty());
    // 8.4: reached (served requests are debited in full, past the limit).
    app.debits(vec![spend(account, &secret, 10_000, Utc::now())])
        .await;
    let sent = events().await;
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_str(&sent[0].1).unwrap();
    assert_eq!(body["type"], "key.limit_reached");
    assert_eq!(body["data"]["key_id"], key.to_string());
    assert_eq!(body["data"]["account_id"], account.to_string());
    assert_eq!(body["data"]["limit"], json!({"credits": "5", "period": "month"}));
    assert_eq!(dec(&body["data"]["spend_this_period"]), d("8.4"));
    assert!(body["data"]["period_resets_at"].is_string());
    // More spend in the same period: no second event.
    app.debits(vec![spend(account, &secret, 10_000, Utc::now())])
        .await;
    assert_eq!(events().await.len(), 1);
    // A new limit is a new start: reaching it again is told again.
    patch(&app, key, json!({"limit": {"credits": "15", "period": "month"}})).await;
    app.debits(vec![spend(account, &secret, 10_000, Utc::now())])
        .await;
    assert_eq!(events().await.len(), 2);
}

#[tokio::test]
async fn a_period_that_ends_gives_the_gateways_the_new_budget() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.grant(account, "1000", "g1").await;
    let (key, secret) = app.create_key(account, "ci").await;
    patch(&app, key, json!({"limit": {"credits": "10", "period": "day"}})).await;
    app.debits(vec![spend(account, &secret, 10_000, Utc::now())])
        .await;
    let snap = app.snapshot("").await;
    assert_eq!(dec(&key_row(&snap, key).unwrap()["limit"]["remaining"]), d("5.8"));
    // As if the day ended: the spend is moved to yesterday and the key's reset is due.
    sqlx::query("UPDATE usage_records SET admitted_at = admitted_at - interval '1 day' WHERE key_id = $1")
        .bind(key)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET limit_resets_at = now() - interval '1 second' WHERE id = $1")
        .bind(key)
        .execute(&app.pool)
        .await
        .unwrap();
    let delta = app.snapshot(&format!("?since={}", version(&snap))).await;
    let row = key_row(&delta, key).expect("re-versioned when its period ended");
    assert_eq!(dec(&row["limit"]["remaining"]), d("10"));
    let (resets,): (DateTime<Utc>,) = sqlx::query_as("SELECT limit_resets_at FROM api_keys WHERE id = $1")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(Some(resets), LimitPeriod::Day.bounds(Utc::now()).1);
    // Rolled over once: the next delta does not carry it again.
    let again = app.snapshot(&format!("?since={}", version(&delta))).await;
    assert!(key_row(&again, key).is_none());
}

#[tokio::test]
async fn the_database_periods_agree_with_the_filters() {
    let app = spawn_app().await;
    for at in [
        "2026-12-06T23:59:59.999Z",
        "2026-12-07T00:00:00Z",
        "2026-02-28T12:00:00Z",
        "2028-02-29T00:00:01Z",
        "2026-12-31T23:00:00Z",
        "2027-01-03T10:00:00Z",
    ] {
        let at: DateTime<Utc> = at.parse().unwrap();
        for period in [LimitPeriod::Day, LimitPeriod::Week, LimitPeriod::Month] {
            let (start, end): (DateTime<Utc>, DateTime<Utc>) =
                sqlx::query_as("SELECT key_period_start($1, $2), key_period_end($1, $2)")
                    .bind(period.as_str())
                    .bind(at)
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            let (s, e) = period.bounds(at);
            assert_eq!((Some(start), Some(end)), (s, e), "{period:?} at {at}");
        }
    }
}

#[tokio::test]
async fn an_expired_key_is_refused_by_the_customer_api() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key, secret) = app.create_key(account, "ci").await;
    let me = || async {
        send(
            app.req(Method::GET, "/v1/me")
                .header("x-api-key", secret.as_str()),
        )
        .await
    };
    assert_eq!(me().await.0, StatusCode::OK);
    let past = (Utc::now() - Duration::seconds(1)).to_rfc3339();
    let (s, body) = patch(&app, key, json!({"expires_at": past})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["expired"], true);
    let (s, body) = me().await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, "authentication_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
}

/// Under `reserve` a key's last request may not fit while its spend is short of the limit: the
/// gateway's hold report names the keys it refused, and each limited key is told once a period.
#[tokio::test]
async fn keys_a_gateway_refused_for_their_limit_are_told_once_per_period() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"webhook_url": "https://hooks.example.com/cs"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (key, _) = app.create_key(account, "ci").await;
    let (unlimited, _) = app.create_key(account, "other").await;
    patch(&app, key, json!({"limit": {"credits": "5", "period": "week"}})).await;
    let report =
        |keys: Vec<Uuid>| {
            let app = &app;
            async move {
                let (s, b) = send(app.internal(Method::POST, "/internal/v1/snapshot?protocol=4").json(
                &json!({"protocol": 4, "gateway": Uuid::new_v4(), "holds": [], "limited_keys": keys}),
            ))
            .await;
                assert_eq!(s, StatusCode::OK, "{b}");
            }
        };
    let events = || async {
        sqlx::query_scalar::<_, String>("SELECT body FROM webhook_events WHERE type = 'key.limit_reached'")
            .fetch_all(&app.pool)
            .await
            .unwrap()
    };
    report(vec![key, unlimited, Uuid::new_v4()]).await;
    let sent = events().await;
    assert_eq!(sent.len(), 1, "only the limited key: {sent:?}");
    let body: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(body["data"]["key_id"], key.to_string());
    assert_eq!(dec(&body["data"]["spend_this_period"]), d("0"));
    report(vec![key]).await;
    assert_eq!(events().await.len(), 1, "once per period");
    // Too many keys in one report is refused, in the error shape.
    let many: Vec<Uuid> = (0..10_001).map(|_| Uuid::new_v4()).collect();
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/snapshot?protocol=4")
            .json(&json!({"protocol": 4, "gateway": Uuid::new_v4(), "limited_keys": many})),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
}
