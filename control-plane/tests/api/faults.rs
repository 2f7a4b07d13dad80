//! Faults the API answers in the error shape, quickly: a NUL byte anywhere in a request is a 400,
//! and while the database is out of reach `/readyz` answers 503 within a second and requests that
//! need the database get 503 `api_error` at once, applying nothing; when it is back, they work
//! again (a retried grant applies once).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;

/// A TCP proxy in front of PostgreSQL that a test can cut (listener closed, every connection
/// reset: what a stopped server looks like) and restore on the same port.
struct Cuttable {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(target: &str) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = Cuttable {
            port,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        c.serve(listener, target.to_owned());
        c
    }

    fn serve(&self, listener: TcpListener, target: String) {
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restore(&self, target: &str) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener, target.to_owned());
    }
}

fn postgres_address() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let after_at = url.rsplit_once('@').map_or(url.as_str(), |(_, r)| r);
    after_at.split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_nul_byte_anywhere_is_a_400() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    for path in [
        format!("/v1/accounts/{account}/usage?model=%00"),
        "/v1/audit?target=%00".to_owned(),
        "/v1/invoices/%00".to_owned(),
        "/v1/accounts/%00".to_owned(),
        format!("/v1/accounts?cursor=a%00b&x={account}"),
    ] {
        let (s, b) = app.admin_get(&path).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("NUL"),
            "{path}: {b}"
        );
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            json!({"name": "a\u{0}b", "email": "x@example.com"}),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/keys"),
            json!({"name": "k\u{0}"}),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account}/credits"),
            json!({"credits": "5", "idempotency_key": "nul\u{0}key", "reason": "x"}),
        ),
    ] {
        let (s, b) = app.admin_json(method, &path, body.clone()).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert_eq!(app.balance(account).await, d("0"), "{body}");
    }
}

#[tokio::test]
async fn while_the_database_is_out_of_reach_requests_get_503_at_once_and_nothing_is_lost() {
    let target = postgres_address();
    let proxy = Cuttable::start(&target).await;
    let port = proxy.port;
    let app = spawn_app_routed(|url| url.replacen(&target, &format!("127.0.0.1:{port}"), 1)).await;
    let account = app.create_account("acme").await;
    assert_eq!(send(app.req(Method::GET, "/readyz")).await.0, StatusCode::OK);

    proxy.cut();
    let started = Instant::now();
    let (s, b) = send(app.req(Method::GET, "/readyz")).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "api_error");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "readyz took {:?}",
        started.elapsed()
    );
    // Requests that need the database: 503 api_error, at once.
    for _ in 0..3 {
        let started = Instant::now();
        let (s, b) = app.grant(account, "25", "grant-during-outage").await;
        assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "api_error");
        assert!(b["error"]["message"].as_str().unwrap().contains("retry"), "{b}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        let (s, _) = app.admin_get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    }
    // What needs no database still answers.
    assert_eq!(send(app.req(Method::GET, "/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        send(app.req(Method::GET, "/openapi.json")).await.0,
        StatusCode::OK
    );
    let balance: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(balance, d("0"), "nothing was applied");

    proxy.restore(&target).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if send(app.req(Method::GET, "/readyz")).await.0 == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again 5 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The caller retries with the same idempotency key: applied once.
    let (s, b) = app.grant(account, "25", "grant-during-outage").await;
    assert!(s.is_success(), "{b}");
    let (s, _) = app.grant(account, "25", "grant-during-outage").await;
    assert!(s.is_success());
    assert_eq!(app.balance(account).await, d("25"));
    audit_ledger(&app.pool).await;
}
