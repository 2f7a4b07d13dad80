//! Prices are data: a model priced through the admin API is admitted and billed at its rates
//! (including a thinking rate of its own); a change applies from its effective time to requests
//! admitted from then on. Each test prices a model of its own, so the shared table only grows.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::{eventually, Api};
use crate::call::Call;
use crate::harness;
use crate::pricing::{dec, Tokens};

fn own_model() -> String {
    format!("claude-e2e-{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn rates(output: &str, thinking: &str) -> Value {
    json!({"input": "2", "cache_write_5m": "2.5", "cache_write_1h": "4", "cache_read": "0.2",
           "output": output, "thinking": thinking})
}

/// Polls with billed requests until the gateway admits `model` (each refusal is a free 400).
async fn wait_until_admitted(api: &Api, key: &str, model: &str, script: &Value) -> Uuid {
    eventually(
        "the new price to reach the gateway",
        Duration::from_secs(5),
        || async {
            let r = api.send(Call::messages(key, model, false).script(script)).await;
            if r.status == 400 {
                r.assert_refused(400, "invalid_request_error");
                return None;
            }
            r.assert_ok();
            Some(r.request_id())
        },
    )
    .await
}

#[tokio::test]
async fn newly_priced_model_is_admitted_and_billed_at_its_rates_with_its_thinking_rate() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let model = own_model();
    api.send(Call::messages(&tenant.key, &model, false))
        .await
        .assert_refused(400, "invalid_request_error");
    api.put_price(
        &model,
        json!({"usd_per_mtok": rates("10", "20"), "web_search_usd_per_request": "0.02", "reason": "e2e"}),
    )
    .await;
    let tokens = Tokens {
        input: 1000,
        output: 1000,
        thinking: 400,
        web_search: 1,
        ..Tokens::default()
    };
    let id = wait_until_admitted(
        &api,
        &tenant.key,
        &model,
        &json!({"usage": tokens.anthropic_usage()}),
    )
    .await;
    let rows = api.usage_settled(tenant.account, 1).await;
    assert_eq!(rows[0].request_id, id);
    assert_eq!(rows[0].model, model);
    // 1000 x 2 + 600 x 10 + 400 x 20 USD/MTok, x 0.7 / 0.005; one search at $0.02 = 2.8 credits.
    assert_eq!(
        rows[0].cost(),
        dec("0.28") + dec("0.84") + dec("1.12") + dec("2.8")
    );
}

#[tokio::test]
async fn price_change_applies_to_requests_admitted_from_its_effective_time() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("100").await;
    let model = own_model();
    let tokens = Tokens {
        output: 1000,
        ..Tokens::default()
    };
    let usage = json!({"usage": tokens.anthropic_usage()});
    api.put_price(&model, json!({"usd_per_mtok": rates("10", "10")}))
        .await;
    let first = wait_until_admitted(&api, &tenant.key, &model, &usage).await;

    let effective = Utc::now() + chrono::Duration::milliseconds(2500);
    api.put_price(
        &model,
        json!({"usd_per_mtok": rates("30", "30"), "effective_from": effective.to_rfc3339()}),
    )
    .await;
    // Admitted before the change, answered after it: the old price.
    let mut slow = usage.clone();
    slow["answer_after_ms"] = json!(3500);
    let before = api
        .send(Call::messages(&tenant.key, &model, false).script(&slow))
        .await;
    before.assert_ok();
    assert!(
        Utc::now() > effective,
        "the slow request did not outlive the change"
    );
    let after = api
        .send(Call::messages(&tenant.key, &model, false).script(&usage))
        .await;
    after.assert_ok();

    let rows = api.usage_settled(tenant.account, 3).await;
    assert_eq!(Api::row(&rows, first).cost(), dec("1.4"));
    assert_eq!(Api::row(&rows, before.request_id()).cost(), dec("1.4"));
    assert_eq!(Api::row(&rows, after.request_id()).cost(), dec("4.2"));
}
