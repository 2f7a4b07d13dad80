//! The contract's freshness promises, measured on the shared stack (the product's default 250 ms
//! sync period): a revoked key is refused within 2 s, a top-up is spendable within 2 s, a new key
//! works on its first request.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api::Api;
use crate::call::Call;
use crate::harness;

const SONNET: &str = "claude-sonnet-4-5";
const PROMISE: Duration = Duration::from_secs(2);

/// Polls `probe` until it answers `status`; returns how long that took after `since`, or panics
/// once the promise is broken (with some slack to report the measured time).
async fn time_until_status(api: &Api, since: Instant, status: u16, probe: impl Fn() -> Call) -> Duration {
    loop {
        let reply = api.send(probe()).await;
        let elapsed = since.elapsed();
        if reply.status == status {
            return elapsed;
        }
        assert!(
            elapsed < PROMISE * 3,
            "still {} instead of {status} after {elapsed:?}: {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revoked_key_is_refused_within_two_seconds() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    // Known to the gateway (cached) before the revocation.
    api.send(Call::new(Method::GET, "/v1/models").key(&tenant.key))
        .await
        .assert_ok();
    let started = Instant::now();
    api.revoke(tenant.key_id).await;
    let took = time_until_status(&api, started, 401, || {
        Call::new(Method::GET, "/v1/models").key(&tenant.key)
    })
    .await;
    eprintln!("measured: revoked key refused after {took:?}");
    assert!(took < PROMISE, "revocation took {took:?}");
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_refused(401, "authentication_error");
}

#[tokio::test]
async fn top_up_is_spendable_within_two_seconds() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("0").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_refused(402, "billing_error");
    let started = Instant::now();
    api.grant(tenant.account, "5").await;
    let took = time_until_status(&api, started, 200, || Call::messages(&tenant.key, SONNET, false)).await;
    eprintln!("measured: top-up spendable after {took:?}");
    assert!(took < PROMISE, "top-up took {took:?}");
    api.usage_settled(tenant.account, 1).await;
}

#[tokio::test]
async fn new_key_works_on_its_first_request() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    // A second key of the same account and a key of a brand-new account, used at once.
    let (key_id, key) = api.new_key(tenant.account).await;
    let started = Instant::now();
    let reply = api.send(Call::messages(&key, SONNET, false)).await;
    reply.assert_ok();
    eprintln!(
        "measured: first request of a new key answered in {:?}",
        started.elapsed()
    );
    let fresh = api.tenant("10").await;
    api.send(Call::messages(&fresh.key, SONNET, true))
        .await
        .assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].key_id, key_id);
    api.usage_settled(fresh.account, 1).await;
}

/// Twenty concurrent first requests with a key nobody has used yet, over both Envoy workers: every
/// one waits for the lookup and is served, each billed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_of_a_new_key_are_all_served() {
    let api = Api::new(harness::shared());
    // Under `reserve` each request in flight holds its worst case (0.6 credits for max_tokens 256
    // on Sonnet 4.5): the credits must cover all twenty holds at once, or how many are served
    // would depend on how many finished before the last one was admitted.
    let tenant = api.tenant("20").await;
    // The upstream answers each after 300 ms: all twenty are in flight at once, on every machine
    // (with 10 credits, 3 of them were refused so).
    let script = serde_json::json!({"answer_after_ms": 300});
    let replies = futures_util::future::join_all(
        (0..20).map(|i| api.send(Call::messages(&tenant.key, SONNET, i % 2 == 0).script(&script))),
    )
    .await;
    for r in &replies {
        r.assert_ok();
    }
    api.usage_settled(tenant.account, 20).await;
}
