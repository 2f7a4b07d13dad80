use std::collections::HashSet;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

fn hashes(snapshot: &Value) -> HashSet<String> {
    snapshot["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_hash"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn full_snapshot_has_every_key_account_and_the_prices() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_id, secret) = app.create_key(account, "k").await;
    app.grant(account, "12.5", "g").await;
    let snap = app.snapshot("").await;
    assert_eq!(snap["full"], true);
    assert_eq!(snap["protocol"], 1);
    assert!(snap["next_cursor"].is_null());
    assert_eq!(snap["keys"].as_array().unwrap().len(), 1);
    let key = &snap["keys"][0];
    assert_eq!(key["key_hash"], metering::apikey::hash(&secret));
    assert_eq!(id(&key["key_id"]), key_id);
    assert_eq!(id(&key["account_id"]), account);
    assert_eq!(key["status"], "active");
    let acc = &snap["accounts"][0];
    assert_eq!(id(&acc["account_id"]), account);
    assert_eq!(dec(&acc["balance"]), d("12.5"));
    assert_eq!(acc["version"], snap["version"], "the grant was the last change");
    let prices: metering::wire::Prices = serde_json::from_value(snap["prices"].clone()).unwrap();
    assert_eq!(prices.factor, d("0.70"));
    assert!(prices.entries.iter().any(|e| e.model == "claude-sonnet-4-5"));
    // A reader ahead of the database (e.g. after a reset) gets a full snapshot.
    let ahead = app.snapshot("?since=999999").await;
    assert_eq!(ahead["full"], true);
    assert_eq!(ahead["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delta_after_n_key_changes_holds_exactly_those_keys_and_a_revoke_shows_next() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    for i in 0..3 {
        app.create_key(account, &format!("old{i}")).await;
    }
    let v0 = app.snapshot("").await["version"].as_u64().unwrap();
    let mut created = HashSet::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        let (key_id, secret) = app.create_key(account, &format!("new{i}")).await;
        created.insert(metering::apikey::hash(&secret));
        ids.push(key_id);
    }
    let delta = app.snapshot(&format!("?since={v0}")).await;
    assert_eq!(delta["full"], false);
    assert_eq!(hashes(&delta), created);
    assert!(
        delta["accounts"].as_array().unwrap().is_empty(),
        "no account changed: {delta}"
    );
    assert!(
        delta.get("prices").is_none_or(Value::is_null),
        "prices did not change"
    );
    let v1 = delta["version"].as_u64().unwrap();
    assert_eq!(v1, v0 + 7);

    app.admin(Method::DELETE, &format!("/v1/keys/{}", ids[2]))
        .send()
        .await
        .unwrap();
    let delta = app.snapshot(&format!("?since={v1}")).await;
    let keys = delta["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(id(&keys[0]["key_id"]), ids[2]);
    assert_eq!(keys[0]["status"], "revoked");
    let v2 = delta["version"].as_u64().unwrap();
    assert_eq!(app.snapshot(&format!("?since={v2}")).await["keys"], json!([]));

    app.admin_json(
        Method::PATCH,
        &format!("/v1/accounts/{account}"),
        json!({"status": "suspended"}),
    )
    .await;
    let delta = app.snapshot(&format!("?since={v2}")).await;
    assert_eq!(delta["accounts"][0]["status"], "suspended");
    assert_eq!(delta["keys"], json!([]));
}

#[tokio::test]
async fn debit_ack_version_is_the_snapshot_that_includes_the_debit() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "10", "g").await;
    let ack = app
        .debits(vec![debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(1000, 0),
            Utc::now(),
        )])
        .await;
    let v = ack.results[0].version;
    let delta = app.snapshot(&format!("?since={}", v - 1)).await;
    assert_eq!(delta["version"].as_u64().unwrap(), v);
    assert_eq!(delta["accounts"][0]["version"].as_u64().unwrap(), v);
    assert_eq!(dec(&delta["accounts"][0]["balance"]), d("9.58"));
    assert!(app.snapshot(&format!("?since={v}")).await["accounts"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn large_snapshots_are_paged_and_the_pages_add_up_to_the_whole() {
    let app = spawn_app().await;
    let mut all_keys = HashSet::new();
    let mut all_accounts = HashSet::new();
    for a in 0..4 {
        let account = app.create_account(&format!("acct{a}")).await;
        all_accounts.insert(account);
        for k in 0..3 {
            let (_, secret) = app.create_key(account, &format!("k{k}")).await;
            all_keys.insert(metering::apikey::hash(&secret));
        }
    }
    let mut keys = HashSet::new();
    let mut accounts = HashSet::new();
    let mut query = "?limit=5".to_owned();
    let mut pages = 0;
    let mut version = None;
    loop {
        let page = app.snapshot(&query).await;
        pages += 1;
        assert!(page["keys"].as_array().unwrap().len() + page["accounts"].as_array().unwrap().len() <= 5);
        assert_eq!(page["full"], true);
        assert_eq!(*version.get_or_insert(page["version"].clone()), page["version"]);
        keys.extend(hashes(&page));
        accounts.extend(
            page["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| id(&a["account_id"])),
        );
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=5&cursor={c}"),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(keys, all_keys);
    assert_eq!(accounts, all_accounts);
    assert_eq!(pages, 4, "16 rows in pages of 5");
    for bad in [
        "?limit=0",
        "?limit=5001",
        "?since=-1",
        "?since=abc",
        "?cursor=garbage",
        "?cursor=%27%3B%20DROP%20TABLE%20api_keys%3B--",
    ] {
        let (s, b) = send(app.internal(Method::GET, &format!("/internal/v1/snapshot{bad}"))).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    }
    let (s, b) = send(app.admin(Method::GET, "/internal/v1/snapshot")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
}

#[tokio::test]
async fn key_lookup_answers_a_known_hash_with_its_account_and_an_unknown_one_with_none() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_id, secret) = app.create_key(account, "k").await;
    app.grant(account, "3", "g").await;
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/keys/lookup")
            .json(&json!({"protocol": 1, "key_hash": metering::apikey::hash(&secret)})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(id(&b["key"]["key_id"]), key_id);
    assert_eq!(dec(&b["account"]["balance"]), d("3"));
    assert!(b["version"].as_u64().unwrap() >= b["key"]["version"].as_u64().unwrap());
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/keys/lookup")
            .json(&json!({"key_hash": "0".repeat(64)})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["key"].is_null() && b["account"].is_null());
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/keys/lookup")
            .json(&json!({"key_hash": "' OR 1=1 --"})),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = send(
        app.req(Method::POST, "/internal/v1/keys/lookup")
            .json(&json!({"key_hash": "0".repeat(64)})),
    )
    .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
}
