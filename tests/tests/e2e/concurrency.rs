//! Many requests at once: each billed exactly once, balances exact and equal to the ledger; and the
//! overdraft that requests already in flight can cause, measured and bounded.

use std::collections::{BTreeMap, HashSet};

use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use crate::api::{Api, Tenant};
use crate::call::Call;
use crate::harness;
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_over_keys_and_accounts_are_each_billed_once() {
    let api = Api::new(harness::shared());
    let a = api.tenant("1000").await;
    let (_, a2) = api.new_key(a.account).await;
    let (_, a3) = api.new_key(a.account).await;
    let (b, c, d) = (
        api.tenant("1000").await,
        api.tenant("1000").await,
        api.tenant("1000").await,
    );
    let keys: [(&Tenant, &str); 6] = [
        (&a, &a.key),
        (&a, &a2),
        (&a, &a3),
        (&b, &b.key),
        (&c, &c.key),
        (&d, &d.key),
    ];

    let plan: Vec<(usize, Tokens, bool)> = (0..100u64)
        .map(|i| {
            let tokens = Tokens {
                input: 100 + i,
                read: 3 * i,
                output: 10 + i % 13,
                ..Tokens::default()
            };
            ((i % 6) as usize, tokens, i % 2 == 1)
        })
        .collect();
    let replies = join_all(plan.iter().map(|(k, tokens, stream)| {
        let script = json!({"usage": tokens.anthropic_usage(), "answer_after_ms": 50});
        api.send(Call::messages(keys[*k].1, SONNET, *stream).script(&script))
    }))
    .await;

    let mut expected: BTreeMap<Uuid, Vec<(Uuid, Tokens)>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (reply, (k, tokens, _)) in replies.iter().zip(&plan) {
        reply.assert_ok();
        assert!(
            ids.insert(reply.request_id()),
            "request id {} given twice",
            reply.request_id()
        );
        expected
            .entry(keys[*k].0.account)
            .or_default()
            .push((reply.request_id(), *tokens));
    }
    for tenant in [&a, &b, &c, &d] {
        let mine = &expected[&tenant.account];
        let rows = api.usage_settled(tenant.account, mine.len()).await;
        let recorded: HashSet<Uuid> = rows.iter().map(|r| r.request_id).collect();
        let sent: HashSet<Uuid> = mine.iter().map(|(id, _)| *id).collect();
        assert_eq!(recorded, sent, "usage records are not exactly the requests sent");
        for (id, tokens) in mine {
            let row = Api::row(&rows, *id);
            assert_eq!(row.tokens(), *tokens);
            assert_eq!(row.cost(), tokens.cost(&sonnet_4_5()));
        }
        let spent: Decimal = mine.iter().map(|(_, t)| t.cost(&sonnet_4_5())).sum();
        let balance = api.assert_balance(tenant, tenant.granted, &rows).await;
        assert_eq!(balance, dec("1000") - spent);
    }
    api.assert_ledger_invariants().await;
}

/// Spend control `balance`: 20 requests admitted at once on a balance of 1 credit, each costing
/// 0.21: all were admitted
/// while the balance was positive, so all are served and billed (the tokens were delivered); the
/// overdraft is at most what was in flight, and the next request is refused with 402 at once and
/// after the control plane has settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overdraft_is_bounded_and_the_next_request_gets_402() {
    let api = Api::new(harness::shared());
    // Spend control `balance`: admitted while the balance is above zero (under `reserve`, the
    // default, only what 1 credit covers is served: see reserve.rs).
    let tenant = api.tenant_balance_mode("1").await;
    let tokens = Tokens {
        output: 100,
        ..Tokens::default()
    };
    let cost = tokens.cost(&sonnet_4_5());
    assert_eq!(cost, dec("0.21"));
    // Admitted before any of them finished: the upstream answers each after 500 ms.
    let script = json!({"usage": tokens.anthropic_usage(), "answer_after_ms": 500});
    let in_flight = 20usize;
    let replies = join_all(
        (0..in_flight).map(|_| api.send(Call::messages(&tenant.key, SONNET, false).script(&script))),
    )
    .await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_refused(402, "billing_error");
    }
    assert!(
        served >= 5,
        "only {served} served although 1 credit covers 4 requests"
    );

    let next = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&script))
        .await;
    next.assert_refused(402, "billing_error");

    let rows = api.usage_settled(tenant.account, served).await;
    let balance = api.assert_balance(&tenant, dec("1"), &rows).await;
    assert_eq!(balance, dec("1") - cost * Decimal::from(served));
    let overdraft = -balance;
    let bound = cost * Decimal::from(in_flight) - dec("1");
    eprintln!("measured: {served} of {in_flight} concurrent requests served on 1 credit; overdraft {overdraft} credits (bound {bound})");
    assert!(
        overdraft > Decimal::ZERO && overdraft <= bound,
        "overdraft {overdraft} outside (0, {bound}]"
    );
    // Settled at the control plane and synced back: still refused.
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_refused(402, "billing_error");
    api.assert_ledger_invariants().await;
}

/// One request after another, back to back and with snapshots landing in between: the gateway's
/// spendable balance (snapshot minus local pending spend) counts each debit exactly once. On 1
/// credit at 0.21 a request, the 5th is admitted (0.16 left) and the 6th refused: an earlier 402
/// would mean a debit counted twice, a later one a debit not counted.
#[tokio::test]
async fn spendable_balance_counts_each_debit_once_across_snapshots() {
    let api = Api::new(harness::shared());
    let tokens = Tokens {
        output: 100,
        ..Tokens::default()
    };
    let script = json!({"usage": tokens.anthropic_usage()});
    // 400 ms is longer than the sync period: a snapshot with the previous debits lands in between.
    for pause_ms in [0, 400] {
        // Spend control `balance`: every request is admitted while the balance is above zero.
        let tenant = api.tenant_balance_mode("1").await;
        let (_, second_key) = api.new_key(tenant.account).await;
        let mut statuses = Vec::new();
        for i in 0..7 {
            let key = if i % 2 == 0 { &tenant.key } else { &second_key };
            let reply = api
                .send(Call::messages(key, SONNET, i % 3 == 0).script(&script))
                .await;
            statuses.push(reply.status);
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        }
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 200, 402, 402],
            "pause {pause_ms} ms"
        );
        let rows = api.usage_settled(tenant.account, 5).await;
        assert_eq!(api.assert_balance(&tenant, dec("1"), &rows).await, dec("-0.05"));
    }
}
