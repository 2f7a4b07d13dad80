//! What the gateway refuses, with the exact status and Anthropic's error shape, and what it never
//! lets through: refused requests never reach the upstream, the caller's key never reaches the
//! upstream, the operator's key never reaches the caller, and nothing a caller sends picks the
//! debit id, the price or the account.

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::api::{eventually, Api};
use crate::call::{message_body, well_formed_unknown_key, Call, Reply};
use crate::harness::{self, OPERATOR_KEY};
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn no_key() -> Call {
    Call::new(Method::POST, "/v1/messages").json(&message_body(SONNET, false))
}

async fn assert_refused_before_upstream(api: &Api, reply: &Reply, status: u16, kind: &str) {
    reply.assert_refused(status, kind);
    let seen = api.upstream_saw(&reply.marker).await;
    assert!(
        seen.is_empty(),
        "a refused request reached the upstream: {seen:#?}"
    );
}

#[tokio::test]
async fn missing_malformed_unknown_and_conflicting_keys_get_401_before_the_upstream() {
    let api = Api::new(harness::shared());
    let a = api.tenant("10").await;
    let b = api.tenant("10").await;
    let mut bad_checksum = a.key.clone();
    let last = if bad_checksum.ends_with('0') { "1" } else { "0" };
    bad_checksum.replace_range(bad_checksum.len() - 1.., last);
    let cases = [
        ("missing", no_key()),
        ("malformed", no_key().key("sk-ant-api03-not-one-of-ours")),
        ("bad checksum", no_key().key(&bad_checksum)),
        ("empty bearer", no_key().header("authorization", "Bearer ")),
        ("unknown well-formed", no_key().key(&well_formed_unknown_key())),
        (
            "unknown well-formed bearer",
            no_key().bearer(&well_formed_unknown_key()),
        ),
        ("two different keys", no_key().key(&a.key).bearer(&b.key)),
        ("free route without a key", Call::new(Method::GET, "/v1/models")),
        (
            "another account's key in the other header",
            no_key().bearer(&a.key).key(&b.key),
        ),
    ];
    for (name, call) in cases {
        let reply = api.send(call).await;
        assert_refused_before_upstream(&api, &reply, 401, "authentication_error").await;
        assert!(!reply.text().contains(&a.key), "{name}: the refusal echoes a key");
    }
    // The same key in both headers is one key, not a conflict; the scheme is case-insensitive.
    api.send(no_key().key(&a.key).bearer(&a.key)).await.assert_ok();
    api.send(no_key().header("authorization", &format!("bearer {}", a.key)))
        .await
        .assert_ok();
    api.usage_settled(a.account, 2).await;
    assert!(api.usage(b.account).await.is_empty());
}

#[tokio::test]
async fn revoked_key_and_suspended_account_get_401_before_the_upstream() {
    let api = Api::new(harness::shared());
    let revoked = api.tenant("10").await;
    let suspended = api.tenant("10").await;
    api.send(Call::messages(&revoked.key, SONNET, false))
        .await
        .assert_ok();
    api.send(Call::messages(&suspended.key, SONNET, false))
        .await
        .assert_ok();
    api.revoke(revoked.key_id).await;
    api.set_status(suspended.account, "suspended").await;
    for tenant in [&revoked, &suspended] {
        api.until_models_answer(
            &tenant.key,
            401,
            "the refusal of a revoked key / suspended account",
            WAIT,
        )
        .await;
        let reply = api.send(Call::messages(&tenant.key, SONNET, false)).await;
        assert_refused_before_upstream(&api, &reply, 401, "authentication_error").await;
    }
    // A key revoked before its first use is refused on its first use.
    let (never_used_id, never_used) = api.new_key(suspended.account).await;
    api.revoke(never_used_id).await;
    let reply = api.send(Call::messages(&never_used, SONNET, false)).await;
    assert_refused_before_upstream(&api, &reply, 401, "authentication_error").await;
    // Reactivated, the account's key works again.
    api.set_status(suspended.account, "active").await;
    api.until_models_answer(&suspended.key, 200, "a reactivated account served", WAIT)
        .await;
    api.send(Call::messages(&suspended.key, SONNET, false))
        .await
        .assert_ok();
    api.usage_settled(revoked.account, 1).await;
    api.usage_settled(suspended.account, 2).await;
}

#[tokio::test]
async fn zero_and_negative_balances_get_402_before_the_upstream() {
    let api = Api::new(harness::shared());
    let zero = api.tenant("0").await;
    let reply = api.send(Call::messages(&zero.key, SONNET, false)).await;
    assert_refused_before_upstream(&api, &reply, 402, "billing_error").await;
    let openai = Call::new(Method::POST, "/v1/chat/completions")
        .bearer(&zero.key)
        .json(&json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}], "stream": true}));
    assert_refused_before_upstream(&api, &api.send(openai).await, 402, "billing_error").await;

    let negative = api.tenant("5").await;
    api.grant(negative.account, "-8").await;
    assert_eq!(api.balance(negative.account).await, dec("-3"));
    let reply = eventually("402 at a negative balance", WAIT, || async {
        let r = api.send(Call::messages(&negative.key, SONNET, false)).await;
        (r.status == 402).then_some(r)
    })
    .await;
    assert_refused_before_upstream(&api, &reply, 402, "billing_error").await;
    assert!(api.usage(zero.account).await.is_empty());
}

#[tokio::test]
async fn unpriced_model_and_unreadable_body_get_400_before_the_upstream() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("10").await;
    let messages = |body: Vec<u8>| {
        Call::new(Method::POST, "/v1/messages")
            .key(&tenant.key)
            .header("content-type", "application/json")
            .raw(body)
    };
    let cases = [
        (
            "unpriced model",
            messages(message_body("claude-imaginary-9", false).to_string().into_bytes()),
        ),
        (
            "unpriced dated model",
            messages(
                message_body("claude-fable-5-3-20270101", false)
                    .to_string()
                    .into(),
            ),
        ),
        ("not JSON", messages(b"{not json".to_vec())),
        (
            "no model",
            messages(br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#.to_vec()),
        ),
        (
            "model not a string",
            messages(br#"{"messages":[],"model":42}"#.to_vec()),
        ),
        ("empty body", messages(Vec::new())),
        (
            "unpriced top-level model, priced nested ones",
            messages(
                br#"{"metadata":{"model":"claude-sonnet-4-5"},"messages":[{"role":"user","content":"x","model":"claude-sonnet-4-5"}],"model":"claude-imaginary-9"}"#
                    .to_vec(),
            ),
        ),
        (
            "OpenAI unpriced model",
            Call::new(Method::POST, "/v1/chat/completions")
                .bearer(&tenant.key)
                .json(&json!({"model": "gpt-imaginary", "messages": []})),
        ),
    ];
    for (name, call) in cases {
        let reply = api.send(call).await;
        assert_eq!(reply.status, 400, "{name}: {}", reply.text());
        assert_refused_before_upstream(&api, &reply, 400, "invalid_request_error").await;
    }
    // The reverse is served: only the top-level member is the model, escapes decoded.
    let nested = messages(
        br#"{"metadata":{"model":"claude-imaginary-9"},"messages":[{"role":"user","content":"x","model":"claude-imaginary-9"}],"model":"claude-sonnet-4\u002d5"}"#
            .to_vec(),
    );
    let billed = api.send(nested).await;
    billed.assert_ok();
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id, billed.request_id());
}

/// A key the gateway has not cached yet is looked up with the request paused; an empty body must
/// still get the filter's own 400 after the lookup, as for a known key, and never reach the upstream.
#[tokio::test]
async fn empty_body_with_a_key_not_yet_cached_gets_400_after_the_lookup() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let lookups_before = api.filter_stat("lookups").await;
    for _ in 0..3 {
        // A fresh key sent at once: the sync (250 ms) has not brought it yet, so it is looked up.
        let (_, key) = api.new_key(tenant.account).await;
        let call = Call::new(Method::POST, "/v1/messages")
            .key(&key)
            .header("content-type", "application/json")
            .raw(Vec::new());
        let reply = api.send(call).await;
        assert_refused_before_upstream(&api, &reply, 400, "invalid_request_error").await;
    }
    assert!(
        api.filter_stat("lookups").await > lookups_before,
        "no request took the lookup path"
    );
    assert!(api.usage(tenant.account).await.is_empty());
}

#[tokio::test]
async fn routes_not_offered_get_403_before_the_upstream() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let body = message_body(SONNET, false);
    let cases = [
        Call::new(Method::POST, "/v1/complete").json(&body),
        Call::new(Method::POST, "/v1/messages/batches").json(&body),
        Call::new(Method::GET, "/v1/messages/batches"),
        Call::new(Method::GET, "/v1/messages"),
        Call::new(Method::POST, "/v1/models").json(&body),
        Call::new(Method::GET, "/__fake/requests"),
        Call::new(Method::DELETE, "/__fake/requests"),
        Call::new(Method::POST, "/v1/messages/../complete").json(&body),
        Call::new(Method::POST, "/v1/files"),
        Call::new(Method::GET, "/"),
    ];
    for call in cases {
        for with_key in [true, false] {
            let call = if with_key {
                call.clone().key(&tenant.key)
            } else {
                call.clone()
            };
            let reply = api.send(call).await;
            assert_refused_before_upstream(&api, &reply, 403, "permission_error").await;
        }
    }
    assert!(api.usage(tenant.account).await.is_empty());
}

#[tokio::test]
async fn upstream_gets_the_operator_key_and_identity_encoding_never_the_callers_key() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let calls = [
        Call::messages(&tenant.key, SONNET, false).header("accept-encoding", "gzip, br"),
        Call::messages(&tenant.key, SONNET, true).header("accept-encoding", "gzip"),
        Call::new(Method::POST, "/v1/messages")
            .bearer(&tenant.key)
            .json(&message_body(SONNET, false)),
        Call::messages(&tenant.key, SONNET, false).bearer(&tenant.key),
        Call::new(Method::POST, "/v1/messages/count_tokens")
            .key(&tenant.key)
            .json(&message_body(SONNET, false)),
        Call::new(Method::GET, "/v1/models")
            .bearer(&tenant.key)
            .header("accept-encoding", "gzip"),
    ];
    for call in calls {
        let reply = api.send(call).await;
        reply.assert_ok();
        let up = api.upstream_one(&reply.marker).await;
        assert_eq!(up.header("x-api-key"), Some(OPERATOR_KEY), "{up:#?}");
        assert_eq!(up.header("authorization"), None, "{up:#?}");
        assert_eq!(up.header("accept-encoding"), Some("identity"), "{up:#?}");
        for (name, value) in &up.headers {
            assert!(
                !value.contains(&tenant.key),
                "the caller's key reached the upstream in {name}"
            );
            assert!(!name.starts_with("x-claudestore-"), "{name} reached the upstream");
        }
        assert!(!up.body.contains(&tenant.key));
    }
    api.usage_settled(tenant.account, 4).await;
}

#[tokio::test]
async fn operator_key_never_reaches_the_caller() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let calls = [
        Call::messages(&tenant.key, SONNET, false),
        Call::messages(&tenant.key, SONNET, true),
        Call::messages(&tenant.key, SONNET, false).script(&json!({"status": 500})),
        Call::messages(&tenant.key, SONNET, false).script(&json!({"status": 401})),
        Call::new(Method::GET, "/v1/models").key(&tenant.key),
        Call::new(Method::GET, "/v1/me").key(&tenant.key),
        Call::messages("sk-ant-wrong", SONNET, false),
        Call::new(Method::POST, "/v1/complete").key(&tenant.key),
    ];
    for call in calls {
        let reply = api.send(call).await;
        assert!(
            !reply.text().contains(OPERATOR_KEY),
            "operator key in the body: {}",
            reply.text()
        );
        for (name, value) in &reply.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(OPERATOR_KEY),
                "operator key in response header {name}"
            );
        }
    }
}

/// A caller-sent `x-claudestore-request-id` (even one of an earlier request) and forged body fields
/// (usage, cost, another account) change nothing: the filter picks the debit id, the upstream's
/// usage sets the price, the key sets the account.
#[tokio::test]
async fn caller_cannot_choose_the_request_id_the_price_or_the_account() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant_balance_mode("100").await;
    let victim = api.tenant_balance_mode("100").await;
    let tokens = Tokens {
        input: 1000,
        output: 100,
        ..Tokens::default()
    };
    let script = json!({"usage": tokens.anthropic_usage()});
    let first = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&script))
        .await;
    first.assert_ok();
    let forged_id = Uuid::new_v4();
    let mut forged_body = message_body(SONNET, false);
    forged_body["usage"] = json!({"input_tokens": 0, "output_tokens": 0});
    forged_body["cost"] = json!("0");
    forged_body["account_id"] = json!(victim.account.to_string());
    forged_body["metadata"] = json!({"user_id": victim.account.to_string()});
    let calls = [
        Call::messages(&tenant.key, SONNET, false)
            .header("x-claudestore-request-id", &first.request_id().to_string())
            .script(&script),
        Call::new(Method::POST, "/v1/messages")
            .key(&tenant.key)
            .header("x-claudestore-request-id", &forged_id.to_string())
            .header("x-claudestore-account", &victim.account.to_string())
            .json(&forged_body)
            .script(&script),
        // Duplicate `model` members: the response's model is what is billed.
        Call::new(Method::POST, "/v1/messages")
            .key(&tenant.key)
            .header("content-type", "application/json")
            .raw(
                br#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}],"model":"claude-sonnet-4-5"}"#
                    .to_vec(),
            )
            .script(&script),
    ];
    let mut ids = vec![first.request_id()];
    for call in calls {
        let reply = api.send(call).await;
        reply.assert_ok();
        let id = reply.request_id();
        assert!(
            !ids.contains(&id) && id != forged_id,
            "the caller chose the request id {id}"
        );
        ids.push(id);
    }
    let rows = api.usage_settled(tenant.account, ids.len()).await;
    for id in &ids {
        let row = Api::row(&rows, *id);
        assert_eq!(row.cost(), tokens.cost(&sonnet_4_5()), "request {id}");
        assert_eq!(row.model, SONNET);
    }
    assert!(
        api.usage(victim.account).await.is_empty(),
        "billed to another account"
    );
    api.assert_balance(&tenant, tenant.granted, &rows).await;
    assert_eq!(api.balance(victim.account).await, dec("100"));
}

/// Refusals and debits are visible in Envoy's `/stats` as `wasmcustom.claudestore.*`.
#[tokio::test]
async fn refusals_and_debits_are_counted_in_envoy_stats() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("10").await;
    let refused = api.filter_stat("refused.route_not_offered").await;
    let acked = api.filter_stat("debits.acked").await;
    api.send(Call::new(Method::POST, "/v1/complete"))
        .await
        .assert_refused(403, "permission_error");
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    api.usage_settled(tenant.account, 1).await;
    eventually("the counters to move", WAIT, || async {
        let r = api.filter_stat("refused.route_not_offered").await;
        let a = api.filter_stat("debits.acked").await;
        (r > refused && a > acked).then_some(())
    })
    .await;
}
