//! Spend control `reserve` end to end: a request is admitted only if the most it may cost fits
//! what its account has available, the hold goes when the request ends (served, refused upstream),
//! many requests at once on one Envoy never overdraw, and two Envoys in front of one control plane
//! see each other's holds (measured: requests served and overdraft).

use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use metering::ceiling::{ceiling, CeilingRules};
use metering::request::RequestMeter;
use metering::PriceTable;
use rust_decimal::Decimal;
use serde_json::json;

use crate::api::{Api, Tenant};
use crate::call::{message_body, Call, Reply};
use crate::harness::{self, Options, OwnedGateway};
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

/// The ceiling the gateway computes for `Call::messages(.., SONNET, false)`, from the same body.
pub(crate) fn sonnet_ceiling() -> Decimal {
    let body = message_body(SONNET, false).to_string();
    let mut meter = RequestMeter::new();
    meter.feed(body.as_bytes());
    let fields = meter.finish().unwrap();
    let table = PriceTable::default_table(dec("0.70")).unwrap();
    let c = ceiling(
        &table,
        &fields,
        &fields.requested_options(),
        body.len() as u64,
        Utc::now(),
        &CeilingRules::default(),
    )
    .unwrap();
    assert_eq!(c.output_tokens, 256);
    c.credits
}

#[tokio::test]
async fn a_request_that_may_cost_more_than_is_available_gets_402_saying_why_and_reaches_no_one() {
    let api = Api::new(harness::shared());
    let tenant = api.tenant("40.2").await;
    let body = json!({
        "model": "claude-opus-4-8",
        "max_tokens": 32000,
        "messages": [{"role": "user", "content": "Write a long story."}]
    });
    let call = Call::new(reqwest::Method::POST, "/v1/messages")
        .key(&tenant.key)
        .json(&body);
    let marker = call.marker.clone();
    let reply = api.send(call).await;
    reply.assert_refused(402, "billing_error");
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    // 32000 x 25 USD/M x 0.7 / 0.005 = 112 credits of output, plus the input estimate.
    assert!(
        message.starts_with("this request may cost up to 112.")
            && message.contains("credits (max_tokens 32000 on claude-opus-4-8); 40.2 credits are available: lower max_tokens or buy credits"),
        "{message}"
    );
    assert!(
        api.upstream_saw(&marker).await.is_empty(),
        "the upstream got the refused request"
    );
    // What fits is served.
    let mut smaller = body.clone();
    smaller["max_tokens"] = json!(8000);
    api.send(
        Call::new(reqwest::Method::POST, "/v1/messages")
            .key(&tenant.key)
            .json(&smaller),
    )
    .await
    .assert_ok();
    // An account on `balance` is admitted on any positive balance, as before.
    let trusting = api.tenant_balance_mode("40.2").await;
    api.send(
        Call::new(reqwest::Method::POST, "/v1/messages")
            .key(&trusting.key)
            .json(&body),
    )
    .await
    .assert_ok();
}

/// Each request holds its ceiling and, when it ends, the hold is replaced by what it cost: on
/// 0.9 credits at a ceiling of about 0.55 and an actual 0.21, the second request fits only because
/// the first one's hold went; an answer the upstream refused costs nothing and holds nothing after.
#[tokio::test]
async fn a_hold_is_replaced_by_the_actual_cost_when_the_request_ends() {
    let api = Api::new(harness::shared());
    let ceiling = sonnet_ceiling();
    assert!(ceiling > dec("0.5") && ceiling < dec("0.6"), "{ceiling}");
    let tenant = api.tenant("0.9").await;
    let tokens = Tokens {
        output: 100,
        ..Tokens::default()
    };
    let served = json!({"usage": tokens.anthropic_usage()});
    let overloaded = json!({"status": 529});
    let mut statuses = Vec::new();
    for script in [&served, &overloaded, &served, &served] {
        let reply = api
            .send(Call::messages(&tenant.key, SONNET, false).script(script))
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 529, 200, 402]);
    let rows = api.usage_settled(tenant.account, 2).await;
    let balance = api.assert_balance(&tenant, dec("0.9"), &rows).await;
    assert_eq!(
        balance,
        dec("0.9") - tokens.cost(&sonnet_4_5()) * Decimal::from(2)
    );
}

struct Measured {
    served: usize,
    refused: usize,
    overdraft: Decimal,
}

/// `n` requests on `tenant`, spread over the gateways of `apis` in turn, `spacing` apart, each
/// answered after `answer_after_ms` with `tokens`; then the settled balance.
async fn race(
    apis: &[&Api],
    tenant: &Tenant,
    n: usize,
    spacing: Duration,
    answer_after_ms: u64,
    tokens: Tokens,
) -> Measured {
    let script = json!({"usage": tokens.anthropic_usage(), "answer_after_ms": answer_after_ms});
    let replies: Vec<Reply> = join_all((0..n).map(|i| {
        let api = apis[i % apis.len()];
        let call = Call::messages(&tenant.key, SONNET, i % 2 == 1).script(&script);
        async move {
            tokio::time::sleep(spacing * u32::try_from(i).unwrap()).await;
            api.send(call).await
        }
    }))
    .await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_refused(402, "billing_error");
    }
    let api = apis[0];
    let rows = api.usage_settled(tenant.account, served).await;
    let balance = api.assert_balance(tenant, tenant.granted, &rows).await;
    assert_eq!(
        balance,
        tenant.granted - tokens.cost(&sonnet_4_5()) * Decimal::from(served)
    );
    Measured {
        served,
        refused: n - served,
        overdraft: (-balance).max(Decimal::ZERO),
    }
}

/// Answers that cost close to their ceiling (250 of 256 output tokens), so that serving more
/// than the balance covers shows as an overdraft.
pub(crate) fn near_ceiling() -> Tokens {
    Tokens {
        input: 10,
        output: 250,
        ..Tokens::default()
    }
}

/// 40 requests at once on a balance that covers 5 ceilings, on one Envoy with two workers: the
/// holds are in shared data at once for both workers, so exactly 5 are served (none ends before
/// the others are decided) and nothing is overdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_at_once_on_one_envoy_serve_what_the_balance_covers_and_never_overdraw() {
    let api = Api::new(harness::shared());
    let k = 5;
    let granted = (sonnet_ceiling() * Decimal::from(k) + dec("0.01")).round_dp(2);
    let tenant = api.tenant(&granted.to_string()).await;
    let m = race(&[&api], &tenant, 40, Duration::ZERO, 1_500, near_ceiling()).await;
    eprintln!(
        "measured (one Envoy): 40 concurrent requests on {granted} credits (covers {k} ceilings): \
         {} served, {} refused, overdraft {}",
        m.served, m.refused, m.overdraft
    );
    assert_eq!(m.served, k);
    assert_eq!(m.overdraft, Decimal::ZERO);
    api.assert_ledger_invariants().await;
}

/// Two Envoys in front of one control plane: each sees its own holds at once and the other's
/// within about a sync period (through the control plane). A burst at the same instant can be
/// served up to the balance on each Envoy; requests coming 400 ms apart are held against each
/// other's. Whatever the timing, an Envoy never serves more than the balance covers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_see_each_others_holds_within_a_sync_period() {
    let mut owned = OwnedGateway::start(Options::shared());
    let second = owned.add_envoy("envoy-2");
    let one = Api::new(&owned.gw);
    let mut gw2 = owned.gw.clone();
    gw2.url = second;
    let two = Api::new(&gw2);
    let k = 5;
    let granted = (sonnet_ceiling() * Decimal::from(k) + dec("0.01")).round_dp(2);
    let cost = near_ceiling().cost(&sonnet_4_5());

    let tenant = one.tenant(&granted.to_string()).await;
    // Both Envoys know the key before the burst (else the lookups, not the holds, decide).
    for api in [&one, &two] {
        api.send(Call::new(reqwest::Method::GET, "/v1/models").key(&tenant.key))
            .await
            .assert_ok();
    }
    let burst = race(&[&one, &two], &tenant, 40, Duration::ZERO, 3_000, near_ceiling()).await;

    let tenant = one.tenant(&granted.to_string()).await;
    for api in [&one, &two] {
        api.send(Call::new(reqwest::Method::GET, "/v1/models").key(&tenant.key))
            .await
            .assert_ok();
    }
    let spread = race(
        &[&one, &two],
        &tenant,
        16,
        Duration::from_millis(400),
        8_000,
        near_ceiling(),
    )
    .await;
    eprintln!(
        "measured (two Envoys, sync 250 ms): 40 requests on {granted} credits (covers {k} \
         ceilings, {cost} per answer): 40 at once: {} served, overdraft {}; 16 one every 400 ms \
         (each lasting 8 s): {} served, overdraft {}",
        burst.served, burst.overdraft, spread.served, spread.overdraft
    );
    for m in [&burst, &spread] {
        assert!(m.served >= k && m.served <= 2 * k, "{} served", m.served);
        assert_eq!(
            m.overdraft,
            (cost * Decimal::from(m.served) - granted).max(Decimal::ZERO)
        );
    }
    assert!(
        spread.served < 2 * k,
        "requests 400 ms apart were not held against the other Envoy's: {} served",
        spread.served
    );
    one.assert_ledger_invariants().await;
}
