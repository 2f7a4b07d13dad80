//! Talking to the stack as its users do: callers through Envoy, admins to the control plane's REST
//! API, plus what only a test may look at (what the fake upstream received, Envoy's stats, the
//! ledger tables in PostgreSQL).

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::call::{Call, Reply};
use crate::harness::{Gateway, ADMIN_TOKEN};
use crate::pricing::{dec, Tokens};

/// How long a debit may take to reach the control plane before a test fails.
pub const DELIVERY: Duration = Duration::from_secs(20);
/// After the expected number of usage records is there, how long nothing more may arrive.
const SETTLE: Duration = Duration::from_millis(1200);

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A customer account with one key, as the admin API created it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account: Uuid,
    pub key: String,
    pub key_id: Uuid,
    pub granted: Decimal,
}

/// One row of `GET /v1/accounts/{id}/usage`.
#[derive(Debug, Clone, Deserialize)]
pub struct UsageRow {
    pub request_id: Uuid,
    pub key_id: Uuid,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub thinking_tokens: u64,
    pub web_search_requests: u64,
    cost: String,
    pub partial: bool,
    /// Input estimated from the request's size (a response cut before its usage).
    #[serde(default)]
    pub input_estimated: bool,
    /// The speed and inference geo billed, and the tier the upstream reported.
    pub speed: Option<String>,
    pub inference_geo: Option<String>,
    pub service_tier: Option<String>,
    /// `usage.iterations` as reported.
    pub iterations: Vec<Value>,
}

impl UsageRow {
    pub fn cost(&self) -> Decimal {
        dec(&self.cost)
    }

    pub fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input_tokens,
            write_5m: self.cache_write_5m_tokens,
            write_1h: self.cache_write_1h_tokens,
            read: self.cache_read_tokens,
            output: self.output_tokens,
            thinking: self.thinking_tokens,
            web_search: self.web_search_requests,
        }
    }
}

/// One row of `GET /v1/accounts/{id}/ledger`.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    credits: String,
    balance_after: String,
    pub kind: String,
}

impl Transfer {
    pub fn credits(&self) -> Decimal {
        dec(&self.credits)
    }
    pub fn balance_after(&self) -> Decimal {
        dec(&self.balance_after)
    }
}

/// One request as the fake upstream recorded it.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A test's client: its own connection pool on its own runtime.
pub struct Api {
    pub gw: Gateway,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(gw: &Gateway) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");
        Api { gw: gw.clone(), http }
    }

    /// Sends `call` through Envoy and reads the whole answer.
    pub async fn send(&self, call: Call) -> Reply {
        let marker = call.marker.clone();
        let resp = self.start(call).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_else(|e| panic!("reading the gateway's answer (marker {marker}): {e}"));
        Reply {
            status,
            headers,
            body,
            marker,
        }
    }

    /// Sends `call` through Envoy and reads the whole answer; `None` when the connection failed or
    /// broke (a gateway killed under the test).
    pub async fn try_send(&self, call: Call) -> Option<Reply> {
        let marker = call.marker.clone();
        let resp = call.request(&self.http, &self.gw.url).send().await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.ok()?.to_vec();
        Some(Reply {
            status,
            headers,
            body,
            marker,
        })
    }

    /// Sends `call` through Envoy and returns as soon as the headers are in.
    pub async fn start(&self, call: Call) -> reqwest::Response {
        let marker = call.marker.clone();
        call.request(&self.http, &self.gw.url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("gateway request failed (marker {marker}): {e}"))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.gw.control))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("control plane {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.admin(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    /// A new account with one key and `credits` granted (none when "0").
    /// Waits (polling the free `GET /v1/models`, so that nothing is billed while it waits) until
    /// the gateway answers the key with `status`: a change that reaches the gateways by sync, a
    /// mode that takes effect, a restart; the answer.
    pub async fn until_models_answer(&self, key: &str, status: u16, what: &str, timeout: Duration) -> Reply {
        eventually(what, timeout, || async {
            let r = self.send(Call::new(Method::GET, "/v1/models").key(key)).await;
            (r.status == status).then_some(r)
        })
        .await
    }

    pub async fn tenant(&self, credits: &str) -> Tenant {
        self.tenant_with(credits, None).await
    }

    /// A tenant whose account admits requests while its balance is above zero (spend control
    /// `balance`), as every account did before reservation: for the tests of what that allows.
    pub async fn tenant_balance_mode(&self, credits: &str) -> Tenant {
        self.tenant_with(credits, Some("balance")).await
    }

    /// A tenant with `spend_control` set before its key exists: whenever the gateway learns of
    /// the key, it learns of the setting too.
    pub async fn tenant_with(&self, credits: &str, spend_control: Option<&str>) -> Tenant {
        let name = format!("e2e-{}", Uuid::new_v4().simple());
        let account = self
            .admin_ok(
                Method::POST,
                "/v1/accounts",
                Some(json!({"name": name, "email": format!("{name}@example.com")})),
            )
            .await;
        let account = Uuid::parse_str(account["id"].as_str().expect("account id")).expect("uuid");
        // Credits before the key: whenever the gateway learns of the key (snapshot or lookup), it
        // learns of the credits too. (A grant after the key is a top-up: spendable within 2 s.)
        let granted = dec(credits);
        if !granted.is_zero() {
            self.grant(account, credits).await;
        }
        if let Some(control) = spend_control {
            self.admin_ok(
                Method::PATCH,
                &format!("/v1/accounts/{account}"),
                Some(json!({"spend_control": control})),
            )
            .await;
        }
        let (key_id, key) = self.new_key(account).await;
        Tenant {
            account,
            key,
            key_id,
            granted,
        }
    }

    /// Returns (key id, secret).
    pub async fn new_key(&self, account: Uuid) -> (Uuid, String) {
        let k = self
            .admin_ok(
                Method::POST,
                &format!("/v1/accounts/{account}/keys"),
                Some(json!({"name": "e2e"})),
            )
            .await;
        let id = Uuid::parse_str(k["id"].as_str().expect("key id")).expect("uuid");
        (id, k["key"].as_str().expect("key secret").to_owned())
    }

    /// The absolute URL of a one-time link that sets the account's dashboard password.
    pub async fn password_link(&self, account: Uuid) -> String {
        let v = self
            .admin_ok(
                Method::POST,
                &format!("/v1/accounts/{account}/password-link"),
                Some(json!({})),
            )
            .await;
        let url = v["url"].as_str().expect("link url");
        let path = &url[url.find("/dashboard/").expect("dashboard path")..];
        format!("{}{path}", self.gw.control)
    }

    /// Grants (positive) or corrects (negative) credits.
    pub async fn grant(&self, account: Uuid, credits: &str) {
        let mut body = json!({"credits": credits, "idempotency_key": Uuid::new_v4().to_string()});
        if credits.starts_with('-') {
            body["reason"] = json!("e2e correction");
        }
        self.admin_ok(
            Method::POST,
            &format!("/v1/accounts/{account}/credits"),
            Some(body),
        )
        .await;
    }

    /// Adds a price version (`PUT /v1/prices/{model}`).
    pub async fn put_price(&self, model: &str, change: Value) {
        let (status, v) = self
            .admin(Method::PUT, &format!("/v1/prices/{model}"), Some(change))
            .await;
        assert_eq!(status, 201, "pricing {model}: {v}");
    }

    pub async fn revoke(&self, key_id: Uuid) {
        let (status, v) = self
            .admin(Method::DELETE, &format!("/v1/keys/{key_id}"), None)
            .await;
        assert_eq!(status, 204, "revoking {key_id}: {v}");
    }

    /// `PATCH /v1/keys/{key_id}`: the key as listed after the change.
    pub async fn patch_key(&self, key_id: Uuid, change: Value) -> Value {
        self.admin_ok(Method::PATCH, &format!("/v1/keys/{key_id}"), Some(change))
            .await
    }

    pub async fn set_webhook(&self, account: Uuid, url: &str) {
        self.admin_ok(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            Some(json!({"webhook_url": url})),
        )
        .await;
    }

    /// The account's webhook delivery log (`GET /v1/accounts/{id}/webhook-events`), newest first.
    pub async fn webhook_events(&self, account: Uuid) -> Vec<Value> {
        let log = self
            .admin_ok(
                Method::GET,
                &format!("/v1/accounts/{account}/webhook-events"),
                None,
            )
            .await;
        log["data"].as_array().cloned().unwrap_or_default()
    }

    /// The key as `GET /v1/accounts/{id}/keys` lists it.
    pub async fn listed_key(&self, account: Uuid, key_id: Uuid) -> Value {
        let list = self
            .admin_ok(Method::GET, &format!("/v1/accounts/{account}/keys"), None)
            .await;
        list["data"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["id"] == key_id.to_string()))
            .cloned()
            .unwrap_or_else(|| panic!("key {key_id} not listed: {list}"))
    }

    pub async fn set_status(&self, account: Uuid, status: &str) {
        self.admin_ok(
            Method::PATCH,
            &format!("/v1/accounts/{account}"),
            Some(json!({"status": status})),
        )
        .await;
    }

    pub async fn balance(&self, account: Uuid) -> Decimal {
        let a = self
            .admin_ok(Method::GET, &format!("/v1/accounts/{account}"), None)
            .await;
        dec(a["balance"]
            .as_str()
            .unwrap_or_else(|| panic!("balance is not a string: {a}")))
    }

    /// Every usage record of the account, newest first.
    pub async fn usage(&self, account: Uuid) -> Vec<UsageRow> {
        self.pages(&format!("/v1/accounts/{account}/usage")).await
    }

    /// Every transfer of the account, newest first.
    pub async fn ledger(&self, account: Uuid) -> Vec<Transfer> {
        self.pages(&format!("/v1/accounts/{account}/ledger")).await
    }

    async fn pages<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Vec<T> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?limit=1000&cursor={c}"),
                None => format!("{path}?limit=1000"),
            };
            let page = self.admin_ok(Method::GET, &url, None).await;
            let rows: Vec<T> = serde_json::from_value(page["data"].clone())
                .unwrap_or_else(|e| panic!("{path}: unexpected rows ({e}): {page}"));
            out.extend(rows);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Waits until the account has exactly `n` usage records and no more arrive for a while.
    pub async fn usage_settled(&self, account: Uuid, n: usize) -> Vec<UsageRow> {
        let what = format!(
            "{n} usage records of account {account} (logs in {})",
            self.gw.work_dir.display()
        );
        eventually(&what, DELIVERY, || async {
            let rows = self.usage(account).await;
            assert!(rows.len() <= n, "more usage records than requests: {rows:#?}");
            (rows.len() == n).then_some(())
        })
        .await;
        let until = Instant::now() + SETTLE;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rows = self.usage(account).await;
        assert_eq!(rows.len(), n, "usage records kept arriving: {rows:#?}");
        rows
    }

    /// Waits until the usage records of every id in `ids` are there, then until no more arrive;
    /// returns all of the account's records.
    pub async fn usage_including(&self, account: Uuid, ids: &[Uuid]) -> Vec<UsageRow> {
        let what = format!("usage records of {} requests of account {account}", ids.len());
        eventually(&what, DELIVERY, || async {
            let rows = self.usage(account).await;
            ids.iter()
                .all(|id| rows.iter().any(|r| r.request_id == *id))
                .then_some(())
        })
        .await;
        let mut rows = self.usage(account).await;
        let until = Instant::now() + SETTLE;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let again = self.usage(account).await;
            assert!(again.len() >= rows.len());
            rows = again;
        }
        rows
    }

    /// The usage record of `request_id` among `rows`.
    pub fn row(rows: &[UsageRow], request_id: Uuid) -> &UsageRow {
        rows.iter()
            .find(|r| r.request_id == request_id)
            .unwrap_or_else(|| panic!("no usage record {request_id} in {rows:#?}"))
    }

    /// What the fake upstream received for the call with `marker`.
    pub async fn upstream_saw(&self, marker: &str) -> Vec<Recorded> {
        let all: Vec<Recorded> = self
            .http
            .get(format!("{}/__fake/requests", self.gw.fake))
            .send()
            .await
            .expect("fake upstream")
            .json()
            .await
            .expect("fake upstream records");
        all.into_iter()
            .filter(|r| r.header("x-e2e-marker") == Some(marker))
            .collect()
    }

    /// The one upstream request of `marker`.
    pub async fn upstream_one(&self, marker: &str) -> Recorded {
        let mut seen = self.upstream_saw(marker).await;
        assert_eq!(seen.len(), 1, "upstream requests for marker {marker}: {seen:#?}");
        seen.remove(0)
    }

    /// The filter's metrics from Envoy's admin `/stats` (`wasmcustom.claudestore.*`).
    pub async fn filter_stat(&self, name: &str) -> i64 {
        let text = self
            .http
            .get(format!("{}/stats?filter=claudestore", self.gw.envoy_admin))
            .send()
            .await
            .expect("envoy admin")
            .text()
            .await
            .expect("stats");
        let wanted = format!("wasmcustom.claudestore.{name}");
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == wanted)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stat {wanted} in:\n{text}"))
    }

    /// The account's balance is the grants minus the usage, and equals its ledger, three ways:
    /// the API's balance, the newest ledger row's `balance_after`, and the sum of its entries.
    pub async fn assert_balance(&self, tenant: &Tenant, grants: Decimal, usage: &[UsageRow]) -> Decimal {
        let spent: Decimal = usage.iter().map(UsageRow::cost).sum();
        let balance = self.balance(tenant.account).await;
        assert_eq!(
            balance,
            grants - spent,
            "balance != grants {grants} - usage {spent}"
        );
        let ledger = self.ledger(tenant.account).await;
        let newest = ledger.first().expect("ledger rows");
        assert_eq!(newest.balance_after(), balance, "newest ledger balance_after");
        let ledger_sum: Decimal = ledger.iter().map(Transfer::credits).sum();
        assert_eq!(ledger_sum, balance, "sum of ledger rows");
        let usage_debits: Decimal = ledger
            .iter()
            .filter(|t| t.kind == "usage")
            .map(Transfer::credits)
            .sum();
        assert_eq!(usage_debits, -spent, "usage transfers in the ledger");
        let entries: Decimal =
            sqlx::query_scalar("SELECT COALESCE(SUM(amount), 0) FROM entries WHERE ledger_account_id = $1")
                .bind(tenant.account)
                .fetch_one(&mut self.db().await)
                .await
                .expect("sum of entries");
        assert_eq!(entries, balance, "sum of the account's entries in PostgreSQL");
        balance
    }

    pub async fn db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.gw.database_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.gw.database_url))
    }

    /// The ledger's invariants over the whole database, by the control plane's one auditor
    /// (`control_plane::ledger::check`).
    pub async fn assert_ledger_invariants(&self) {
        let mut db = self.db().await;
        let check = control_plane::ledger::check(&mut db)
            .await
            .expect("reading the ledger");
        assert!(
            check.violations.is_empty(),
            "the ledger is not sound: {:#?}",
            check.violations
        );
    }
}

/// `callers` callers, each sending `n` requests `gap` apart (caller `c` through `gws[c % len]`,
/// streaming every other request), none of them failing the test when a gateway goes away: the
/// ids served, and how many were answered otherwise or cut.
pub async fn load(
    gws: &[Gateway],
    tenant: &Tenant,
    callers: usize,
    n: usize,
    gap: Duration,
) -> (Vec<Uuid>, usize) {
    let tasks = (0..callers).map(|c| {
        let api = Api::new(&gws[c % gws.len()]);
        let key = tenant.key.clone();
        tokio::spawn(async move {
            let mut served = Vec::new();
            let mut other = 0;
            for i in 0..n {
                match api
                    .try_send(Call::messages(&key, "claude-sonnet-4-5", (c + i) % 2 == 0))
                    .await
                {
                    Some(r) if r.status == 200 => served.push(r.request_id()),
                    _ => other += 1,
                }
                tokio::time::sleep(gap).await;
            }
            (served, other)
        })
    });
    let mut served = Vec::new();
    let mut other = 0;
    for r in join_all(tasks).await {
        let (s, o) = r.unwrap();
        served.extend(s);
        other += o;
    }
    (served, other)
}

/// (lost, doubled) of the served ids in the usage records.
pub fn count(served: &[Uuid], rows: &[UsageRow]) -> (usize, usize) {
    let lost = served
        .iter()
        .filter(|id| !rows.iter().any(|r| r.request_id == **id))
        .count();
    let doubled = served
        .iter()
        .filter(|id| rows.iter().filter(|r| r.request_id == **id).count() > 1)
        .count();
    (lost, doubled)
}
