use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn account_is_created_listed_fetched_and_suspended() {
    let app = spawn_app().await;
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": "Acme", "email": "ops@acme.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for field in ["id", "name", "email", "status", "balance", "created_at"] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    assert_eq!(body["status"], "active");
    assert_eq!(body["balance"], "0");
    let account = id(&body["id"]);
    let other = app.create_account("second").await;

    let (_, page1) = app.admin_get("/v1/accounts?limit=1").await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 1);
    assert_eq!(id(&page1["data"][0]["id"]), other, "newest first");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .admin_get(&format!("/v1/accounts?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(id(&page2["data"][0]["id"]), account);
    assert!(page2["next_cursor"].is_null());

    let (status, body) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"status": "suspended", "reason": "fraud check"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suspended");
    let (_, fetched) = app.admin_get(&format!("/v1/accounts/{account}")).await;
    assert_eq!(fetched["status"], "suspended");
    let (_, audit) = app
        .admin_get(&format!("/v1/audit?target=account:{account}"))
        .await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["account.status", "account.create"]);
    assert_eq!(audit["data"][0]["reason"], "fraud check");
}

#[tokio::test]
async fn admin_routes_refuse_missing_wrong_internal_and_customer_credentials() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let routes = [
        (Method::GET, "/v1/accounts".to_owned()),
        (Method::POST, "/v1/accounts".to_owned()),
        (Method::GET, format!("/v1/accounts/{account}")),
        (Method::PATCH, format!("/v1/accounts/{account}")),
        (Method::POST, format!("/v1/accounts/{account}/keys")),
        (Method::GET, format!("/v1/accounts/{account}/keys")),
        (Method::DELETE, format!("/v1/keys/{account}")),
        (Method::POST, format!("/v1/accounts/{account}/credits")),
        (Method::GET, format!("/v1/accounts/{account}/ledger")),
        (Method::GET, format!("/v1/accounts/{account}/usage")),
        (Method::GET, format!("/v1/accounts/{account}/usage/daily")),
        (Method::GET, "/v1/reports/margin".to_owned()),
        (Method::PUT, "/v1/prices/claude-x".to_owned()),
        (Method::POST, "/v1/plans".to_owned()),
        (Method::PATCH, format!("/v1/plans/{account}")),
        (Method::GET, "/v1/audit".to_owned()),
    ];
    for (method, path) in routes {
        let (s, b) = send(app.req(method.clone(), &path).json(&json!({}))).await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
        let (s, b) = send(
            app.req(method.clone(), &path)
                .bearer_auth("not-the-admin-token-at-all")
                .json(&json!({})),
        )
        .await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
        let (s, b) = send(
            app.req(method.clone(), &path)
                .bearer_auth(INTERNAL)
                .json(&json!({})),
        )
        .await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
        let (s, b) = send(
            app.req(method.clone(), &path)
                .bearer_auth(&secret)
                .json(&json!({})),
        )
        .await;
        assert_error(s, &b, StatusCode::FORBIDDEN, "permission_error");
        let (s, b) = send(
            app.req(method.clone(), &path)
                .header("authorization", "Basic abc")
                .json(&json!({})),
        )
        .await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    }
    // Nothing was changed by the refused requests.
    let (_, list) = app.admin_get("/v1/accounts").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn account_input_is_validated_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    for (body, needle) in [
        (json!({"name": "a"}), "email"),
        (json!({"name": "", "email": "a@b.co"}), "name"),
        (json!({"name": "x".repeat(201), "email": "a@b.co"}), "name"),
        (json!({"name": "a", "email": "not-an-email"}), "email"),
        (
            json!({"name": "a", "email": "a@b.co", "balance": "100"}),
            "balance",
        ),
        (json!({"name": 5, "email": "a@b.co"}), "name"),
    ] {
        let (s, b) = app.admin_json(Method::POST, "/v1/accounts", body).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(b["error"]["message"].as_str().unwrap().contains(needle), "{b}");
    }
    let missing = uuid::Uuid::new_v4();
    let (s, b) = app.admin_get(&format!("/v1/accounts/{missing}")).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = app.admin_get("/v1/accounts/not-a-uuid").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{missing}"),
            json!({"status": "suspended"}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let account = app.create_account("acme").await;
    let (s, b) = app
        .admin_json(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            json!({"status": "deleted"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "no partial write");
}

#[tokio::test]
async fn key_secret_is_returned_once_and_stored_only_as_hash_and_prefix() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/keys"),
            json!({"name": "prod"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for field in ["id", "name", "key", "prefix", "created_at"] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    let secret = body["key"].as_str().unwrap().to_owned();
    assert!(metering::apikey::is_well_formed(&secret));
    assert!(secret.starts_with(body["prefix"].as_str().unwrap()));

    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/keys")).await;
    let text = list.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&secret[20..]),
        "listing leaks the secret: {text}"
    );
    assert_eq!(list["data"][0]["status"], "active");

    let stored: Vec<(String, String)> = sqlx::query_as("SELECT key_hash, prefix FROM api_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![(
            metering::apikey::hash(&secret),
            metering::apikey::display_prefix(&secret).to_owned()
        )]
    );
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM api_keys) t")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(&secret), "secret stored in clear");
}

#[tokio::test]
async fn revoked_key_is_refused_by_me_and_revoking_again_is_a_no_op() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_id, secret) = app.create_key(account, "k").await;
    let (s, me) = send(app.req(Method::GET, "/v1/me").header("x-api-key", &secret)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    let resp = app
        .admin(Method::DELETE, &format!("/v1/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app
        .admin(Method::DELETE, &format!("/v1/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, b) = send(app.req(Method::GET, "/v1/me").header("x-api-key", &secret)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (_, list) = app.admin_get(&format!("/v1/accounts/{account}/keys")).await;
    assert_eq!(list["data"][0]["status"], "revoked");
    assert!(list["data"][0]["revoked_at"].is_string());
    let (s, b) = send(app.admin(Method::DELETE, &format!("/v1/keys/{}", uuid::Uuid::new_v4()))).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{}/keys", uuid::Uuid::new_v4()),
            json!({"name": "x"}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let revokes: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'key.revoke'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(revokes, 1);
}
