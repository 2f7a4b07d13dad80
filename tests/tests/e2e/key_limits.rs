//! Key limits end to end, through Envoy: a key's limit is reserved like the balance (many
//! requests at once never spend past it), its refusal names the limit and when it resets, models
//! a key may not use get 403 and an expired key 401, all before the upstream gets a byte; the key
//! list shows the spend of the period and the last use.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use metering::keylimit::LimitPeriod;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::json;

use crate::api::{eventually, Api};
use crate::call::{Call, Reply};
use crate::harness;
use crate::pricing::{dec, sonnet_4_5};
use crate::reserve::{near_ceiling, sonnet_ceiling};

const SONNET: &str = "claude-sonnet-4-5";
const WAIT: Duration = Duration::from_secs(10);

async fn refused_before_upstream(api: &Api, reply: &Reply, status: u16, kind: &str) -> String {
    reply.assert_refused(status, kind);
    assert!(
        api.upstream_saw(&reply.marker).await.is_empty(),
        "a refused request reached the upstream"
    );
    reply.json()["error"]["message"].as_str().unwrap().to_owned()
}

/// 40 requests at once on a key whose daily limit covers 5 ceilings (its account has plenty):
/// exactly 5 are served, the key's spend stays under its limit, and the next request is refused
/// naming the limit and its reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_is_reserved_like_the_balance_and_its_refusal_says_when_it_resets() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("1000").await;
    api.set_webhook(tenant.account, "https://hooks.example.com/cs")
        .await;
    let k = 5;
    let limit = (sonnet_ceiling() * Decimal::from(k) + dec("0.01")).round_dp(2);
    api.patch_key(
        tenant.key_id,
        json!({"limit": {"credits": limit.to_string(), "period": "day"}}),
    )
    .await;
    // In force within 2 s (as a revocation or a top-up), whether the gateway learns of the key by
    // a lookup or already had it from a snapshot: a request that may cost more than the whole
    // limit is refused, before the upstream, and costs nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let whole =
        json!({"model": SONNET, "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}]});
    let reply = api
        .send(
            Call::new(Method::POST, "/v1/messages")
                .key(&tenant.key)
                .json(&whole),
        )
        .await;
    let message = refused_before_upstream(&api, &reply, 402, "billing_error").await;
    assert!(message.contains("this API key's limit of"), "{message}");
    let tokens = near_ceiling();
    let script = json!({"usage": tokens.anthropic_usage(), "answer_after_ms": 1_500});
    let replies: Vec<Reply> = join_all((0..40).map(|i| {
        let call = Call::messages(&tenant.key, SONNET, i % 2 == 1).script(&script);
        let api = &api;
        async move { api.send(call).await }
    }))
    .await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_refused(402, "billing_error");
    }
    let rows = api.usage_settled(tenant.account, served).await;
    let spent: Decimal = rows.iter().map(|r| r.cost()).sum();
    eprintln!(
        "measured (one Envoy): 40 concurrent requests on a key limited to {limit} credits a day \
         (covers {k} ceilings; account 1000 credits): {served} served, key spend {spent}"
    );
    assert_eq!(served, k);
    assert!(spent <= limit, "the key spent {spent} past its limit {limit}");
    assert_eq!(spent, tokens.cost(&sonnet_4_5()) * Decimal::from(k));

    let reply = api.send(Call::messages(&tenant.key, SONNET, false)).await;
    let message = refused_before_upstream(&api, &reply, 402, "billing_error").await;
    let tomorrow = LimitPeriod::Day.bounds(Utc::now()).1.unwrap();
    let resets = tomorrow.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        message.contains(&format!("this API key's limit of {limit} credits per day"))
            && message.contains(&format!("it resets at {resets}"))
            && message.contains("raise the key's limit"),
        "{message}"
    );
    let listed = api.listed_key(tenant.account, tenant.key_id).await;
    assert_eq!(dec(listed["spend_this_period"].as_str().unwrap()), spent);
    // Its spend is short of the limit, but its requests no longer fit: the Envoy's hold report
    // names it and the account's webhook is told, once.
    let told = eventually("key.limit_reached", WAIT, || async {
        let log = api.webhook_events(tenant.account).await;
        let told: Vec<serde_json::Value> = log
            .into_iter()
            .filter(|e| e["type"] == "key.limit_reached")
            .collect();
        (!told.is_empty()).then_some(told)
    })
    .await;
    assert_eq!(told.len(), 1, "{told:?}");
    let last: DateTime<Utc> = listed["last_used_at"].as_str().unwrap().parse().unwrap();
    assert!(Utc::now() - last < chrono::Duration::minutes(1));
    // The account kept its credits: only the key was stopped.
    assert_eq!(api.balance(tenant.account).await, dec("1000") - spent);
    // A higher limit serves again within a sync period.
    api.patch_key(
        tenant.key_id,
        json!({"limit": {"credits": "100", "period": "day"}}),
    )
    .await;
    eventually("a raised key limit served", WAIT, || async {
        let r = api.send(Call::messages(&tenant.key, SONNET, false)).await;
        (r.status == 200).then_some(())
    })
    .await;
    api.assert_ledger_invariants().await;
}

/// Under spend control `balance` a limited key is admitted while its limit has anything left, as
/// the balance is; at or below nothing it gets 402 at once.
#[tokio::test]
async fn a_spent_key_limit_gets_402_under_balance_too() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("1000").await;
    api.patch_key(
        tenant.key_id,
        json!({"limit": {"credits": "0.01", "period": "total"}}),
    )
    .await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    api.usage_settled(tenant.account, 1).await;
    let message = eventually("the spent limit refused", WAIT, || async {
        let r = api.send(Call::messages(&tenant.key, SONNET, false)).await;
        if r.status == 200 {
            return None;
        }
        Some(refused_before_upstream(&api, &r, 402, "billing_error").await)
    })
    .await;
    assert!(
        message.contains("this API key's limit of 0.01 credits in total is spent"),
        "{message}"
    );
}

#[tokio::test]
async fn models_not_allowed_get_403_and_an_expired_key_401_before_the_upstream() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    // Changed after the key is in use: it reaches the gateway with the next snapshot.
    api.patch_key(tenant.key_id, json!({"allowed_models": ["claude-haiku-4-5"]}))
        .await;
    // Requests served before the change reached the gateway are billed as usual.
    let served_meanwhile = std::sync::atomic::AtomicUsize::new(0);
    let count = || {
        served_meanwhile.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    };
    let message = eventually("a model not allowed refused", WAIT, || async {
        let r = api.send(Call::messages(&tenant.key, SONNET, false)).await;
        if r.status == 200 {
            return count();
        }
        Some(refused_before_upstream(&api, &r, 403, "permission_error").await)
    })
    .await;
    assert_eq!(message, format!("this API key may not use model {SONNET}"));
    let openai = Call::new(Method::POST, "/v1/chat/completions")
        .bearer(&tenant.key)
        .json(&json!({"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "hi"}]}));
    let reply = api.send(openai).await;
    refused_before_upstream(&api, &reply, 403, "permission_error").await;
    api.send(Call::messages(&tenant.key, "claude-haiku-4-5", false))
        .await
        .assert_ok();

    let past = (Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let listed = api.patch_key(tenant.key_id, json!({"expires_at": past})).await;
    assert_eq!(listed["expired"], true);
    let message = eventually("an expired key refused", WAIT, || async {
        let r = api
            .send(Call::messages(&tenant.key, "claude-haiku-4-5", false))
            .await;
        if r.status == 200 {
            return count();
        }
        Some(refused_before_upstream(&api, &r, 401, "authentication_error").await)
    })
    .await;
    assert!(message.starts_with("this API key expired at "), "{message}");
    let meanwhile = served_meanwhile.load(std::sync::atomic::Ordering::Relaxed);
    api.usage_settled(tenant.account, 2 + meanwhile).await;
}
