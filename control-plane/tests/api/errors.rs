use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn malformed_bodies_and_routes_get_the_error_shape_and_write_nothing() {
    let app = spawn_app().await;
    let post = |body: &'static str, ct: &'static str| {
        app.admin(Method::POST, "/v1/accounts")
            .header("content-type", ct)
            .body(body)
    };
    let (s, b) = send(post("{\"name\": \"a\", ", "application/json")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = send(post("name=a", "application/x-www-form-urlencoded")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = send(post("[]", "application/json")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = send(post("{\"name\": [1], \"email\": \"a@b.co\"}", "application/json")).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(b["error"]["message"].as_str().unwrap().contains("name"), "{b}");
    let big = format!(
        "{{\"name\": \"{}\", \"email\": \"a@b.co\"}}",
        "x".repeat(1024 * 1024)
    );
    let (s, b) = send(
        app.admin(Method::POST, "/v1/accounts")
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    let injected = "{\"name\": \"Robert'); DROP TABLE accounts;--\", \"email\": \"x@y.co\"}";
    let (s, b) = send(post(injected, "application/json")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "Robert'); DROP TABLE accounts;--");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the well-formed request wrote");

    let (s, b) = send(app.req(Method::GET, "/v1/nothing-here")).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let (s, b) = send(app.req(Method::DELETE, "/v1/plans")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert_eq!(b["type"], "error");
    let (s, b) = app.admin_get("/v1/accounts?limit=99999999999999999999").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (s, b) = app.admin_get("/v1/audit?cursor=%00%01").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
}

#[tokio::test]
async fn health_is_public_and_readiness_checks_migrations() {
    let app = spawn_app().await;
    let (s, b) = send(app.req(Method::GET, "/healthz")).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = send(app.req(Method::GET, "/readyz")).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let resp = app
        .req(Method::GET, "/healthz")
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-1");
    let resp = app.req(Method::GET, "/healthz").send().await.unwrap();
    assert!(
        !resp.headers()["x-request-id"].is_empty(),
        "a request id is generated"
    );
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.pool)
        .await
        .unwrap();
    let (s, b) = send(app.req(Method::GET, "/readyz")).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "api_error");
}
