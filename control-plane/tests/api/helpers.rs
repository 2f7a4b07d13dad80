//! Spawns the real app on port 0 against a fresh PostgreSQL database per test, plus the request
//! helpers and the ledger auditor the tests share.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use control_plane::config::{PaymentConfig, WebhookConfig};
use control_plane::{AppState, Config};
use metering::wire::{Debit, DebitAck, DebitBatch, Route};
use metering::Usage;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const INTERNAL: &str = "test-internal-token-0123456789";
pub const WEBHOOK_SIGNING_KEY: &str = "test-webhook-signing-key-0123456789";

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    db_name: String,
    server_url: String,
    server: tokio::task::JoinHandle<()>,
}

pub fn base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (main, query) = url.split_once('?').map_or((url, None), |(m, q)| (m, Some(q)));
    let prefix = main.rsplit_once('/').map_or(main, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_factor(Decimal::from_str("0.70").unwrap()).await
}

pub async fn spawn_app_with_factor(price_factor: Decimal) -> TestApp {
    spawn_app_custom(price_factor, PaymentConfig::default(), |router| router).await
}

/// The app with payment settings (fake processors) and a layer around the router (e.g. to lose a
/// reply after the handler committed).
pub async fn spawn_app_custom(
    price_factor: Decimal,
    payments: PaymentConfig,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> TestApp {
    spawn_app_configured(price_factor, payments, |_| {}, wrap).await
}

/// The app with its configuration changed by `tweak` (after the test defaults are set).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_configured(
        Decimal::from_str("0.70").unwrap(),
        PaymentConfig::default(),
        tweak,
        |router| router,
    )
    .await
}

/// The app whose database connections go through `route` (the database URL in, the URL the app
/// connects with out: e.g. through a proxy a test can cut); `TestApp::pool` connects directly.
pub async fn spawn_app_routed(route: impl FnOnce(&str) -> String) -> TestApp {
    spawn_app_inner(
        Decimal::from_str("0.70").unwrap(),
        PaymentConfig::default(),
        |_| {},
        |router| router,
        route,
    )
    .await
}

async fn spawn_app_configured(
    price_factor: Decimal,
    payments: PaymentConfig,
    tweak: impl FnOnce(&mut Config),
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> TestApp {
    spawn_app_inner(price_factor, payments, tweak, wrap, str::to_owned).await
}

async fn spawn_app_inner(
    price_factor: Decimal,
    payments: PaymentConfig,
    tweak: impl FnOnce(&mut Config),
    wrap: impl FnOnce(axum::Router) -> axum::Router,
    route: impl FnOnce(&str) -> String,
) -> TestApp {
    let base = base_url();
    let db_name = format!("cs_test_{}", Uuid::new_v4().simple());
    let url = with_database(&base, &db_name);
    let pool = control_plane::prepare(&url)
        .await
        .expect("prepare the test database");
    let app_pool = control_plane::connect(&route(&url))
        .await
        .expect("connect the app");
    let mut config = Config {
        control_port: 0,
        bind_addr: [127, 0, 0, 1].into(),
        admin_token: ADMIN.into(),
        internal_token: INTERNAL.into(),
        database_url: url,
        price_factor,
        upstream_inference_geo: None,
        public_url: "http://127.0.0.1".into(),
        data_dir: std::env::temp_dir(),
        payments,
        webhooks: WebhookConfig {
            signing_key: WEBHOOK_SIGNING_KEY.into(),
            allow_private: false,
        },
        spend_control: Default::default(),
    };
    tweak(&mut config);
    let state = AppState::new(app_pool, config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service =
        wrap(control_plane::app(state)).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service).await.unwrap();
    });
    TestApp {
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        pool,
        db_name,
        server_url: base,
        server,
    }
}

impl Drop for TestApp {
    /// Drops the database, best effort, from a thread of its own (no async in Drop).
    fn drop(&mut self) {
        self.server.abort();
        let (url, db) = (self.server_url.clone(), self.db_name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

impl TestApp {
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.req(method, path).bearer_auth(ADMIN)
    }

    pub fn internal(&self, method: Method, path: &str) -> RequestBuilder {
        self.req(method, path).bearer_auth(INTERNAL)
    }

    pub async fn admin_json(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.admin(method, path).json(&body)).await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        send(self.admin(Method::GET, path)).await
    }

    pub async fn create_account(&self, name: &str) -> Uuid {
        let (status, body) = self
            .admin_json(
                Method::POST,
                "/v1/accounts",
                json!({"name": name, "email": format!("{name}@example.com")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        id(&body["id"])
    }

    /// Returns (key id, secret).
    pub async fn create_key(&self, account: Uuid, name: &str) -> (Uuid, String) {
        let (status, body) = self
            .admin_json(
                Method::POST,
                &format!("/v1/accounts/{account}/keys"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (id(&body["id"]), body["key"].as_str().unwrap().to_owned())
    }

    pub async fn grant(&self, account: Uuid, credits: &str, key: &str) -> (StatusCode, Value) {
        self.admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/credits"),
            json!({"credits": credits, "idempotency_key": key, "reason": "test"}),
        )
        .await
    }

    /// Sends a batch and reads the answer in full (one result per debit).
    pub async fn debits(&self, debits: Vec<Debit>) -> DebitAck {
        self.debit_batch(debits, false).await
    }

    /// Sends a batch asking for the compact answer gateways ask for.
    pub async fn debits_compact(&self, debits: Vec<Debit>) -> DebitAck {
        self.debit_batch(debits, true).await
    }

    async fn debit_batch(&self, debits: Vec<Debit>, compact_ack: bool) -> DebitAck {
        let resp = self.send_debits(debits, compact_ack).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    async fn send_debits(&self, debits: Vec<Debit>, compact_ack: bool) -> Response {
        let batch = DebitBatch {
            protocol: 1,
            gateway_id: Some("test-gw".into()),
            debits,
            compact_ack,
        };
        self.internal(Method::POST, "/internal/v1/debits")
            .json(&batch)
            .send()
            .await
            .unwrap()
    }

    /// Sends a batch as a gateway does: a 503 (no database connection free within the pool's
    /// acquire timeout, nothing applied) is sent again, with the same debit ids. Returns the
    /// answer and how many 503s came before it.
    pub async fn debits_as_a_gateway(&self, debits: Vec<Debit>) -> (DebitAck, u32) {
        let (resp, unavailable) = resend_503(|| async {
            let resp = self.send_debits(debits.clone(), false).await;
            (resp.status(), resp)
        })
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        (resp.json().await.unwrap(), unavailable)
    }

    /// A grant sent as an operator's client does: a 503 is sent again, with the same
    /// idempotency key. Returns the last answer and how many 503s came before it.
    pub async fn grant_retrying(&self, account: Uuid, credits: &str, key: &str) -> (StatusCode, Value, u32) {
        let ((status, body), unavailable) = resend_503(|| async {
            let (status, body) = self.grant(account, credits, key).await;
            (status, (status, body))
        })
        .await;
        (status, body, unavailable)
    }

    /// A one-time password link made by the admin API: (its path with the token, its purpose).
    pub async fn password_link(&self, account: Uuid) -> (String, String) {
        let (s, body) = self
            .admin_json(
                Method::POST,
                &format!("/v1/accounts/{account}/password-link"),
                json!(null),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let url = body["url"].as_str().unwrap();
        let path = url[url.find("/dashboard/password").unwrap()..].to_owned();
        (path, body["purpose"].as_str().unwrap().to_owned())
    }

    pub async fn balance(&self, account: Uuid) -> Decimal {
        let (status, body) = self.admin_get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        dec(&body["balance"])
    }

    pub async fn snapshot(&self, query: &str) -> Value {
        let (status, body) = send(self.internal(Method::GET, &format!("/internal/v1/snapshot{query}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Sends what `send` makes until it is answered with something else than 503 (at most 20 times
/// more, 200 ms apart), as clients do. Returns the last answer and how many 503s came before it.
async fn resend_503<T, F, Fut>(mut send: F) -> (T, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, T)>,
{
    let mut unavailable = 0;
    loop {
        let (status, answer) = send().await;
        if status != StatusCode::SERVICE_UNAVAILABLE || unavailable == 20 {
            return (answer, unavailable);
        }
        unavailable += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp: Response = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn id(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap_or_else(|| panic!("not a uuid: {v}"))).unwrap()
}

pub fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}"))).unwrap()
}

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Asserts the error shape and returns the error type.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The versions of one model in a `GET /v1/prices` answer, oldest first.
pub fn price_versions<'a>(list: &'a Value, model: &str) -> Vec<&'a Value> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["model"] == model)
        .collect()
}

pub fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

pub fn debit(account: Uuid, secret: &str, model: &str, usage: Usage, admitted_at: DateTime<Utc>) -> Debit {
    Debit {
        debit_id: Uuid::new_v4(),
        key_hash: metering::apikey::hash(secret),
        account_id: account,
        route: Route::AnthropicMessages,
        model_requested: model.into(),
        model_served: Some(format!("{model}-20250929")),
        usage,
        requested: Default::default(),
        partial: false,
        output_estimated: false,
        input_estimated: false,
        admitted_at,
        finished_at: Some(admitted_at),
        upstream_request_id: Some(format!("req_{}", Uuid::new_v4().simple())),
        upstream_message_id: Some(format!("msg_{}", Uuid::new_v4().simple())),
        upstream_status: Some(200),
    }
}

/// The ledger's invariants, read straight from the database: every transfer has two entries that
/// sum to zero, each balance equals the sum of its entries and its last balance_after, and the sum
/// over all ledger accounts is zero. Returns every customer balance.
pub async fn audit_ledger(pool: &PgPool) -> HashMap<Uuid, Decimal> {
    let mut conn = pool.acquire().await.unwrap();
    let check = control_plane::ledger::check(&mut conn).await.unwrap();
    assert!(
        check.violations.is_empty(),
        "the ledger is not sound: {:#?}",
        check.violations
    );
    check.balances
}
