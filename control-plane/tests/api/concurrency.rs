//! Hundreds of concurrent debit batches and grants over HTTP, on one account and across accounts;
//! an auditor rebuilds the expected balances from the operations' answers and compares exactly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use metering::wire::DebitOutcome;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::*;

enum Op {
    Grant(Uuid, Decimal, String),
    Debits(Vec<metering::wire::Debit>),
}

#[tokio::test]
async fn concurrent_debits_and_grants_keep_every_balance_equal_to_its_operations() {
    let app = spawn_app().await;
    let mut accounts = Vec::new();
    for i in 0..4 {
        let account = app.create_account(&format!("acct{i}")).await;
        let (_, secret) = app.create_key(account, "k").await;
        accounts.push((account, secret));
    }
    let hot = accounts[0].0;
    let mut ops = Vec::new();
    let mut all_debits = Vec::new();
    for i in 0..240u64 {
        if i % 4 == 0 {
            let target = if i % 8 == 0 {
                hot
            } else {
                accounts[(i as usize / 4) % 4].0
            };
            ops.push(Op::Grant(
                target,
                Decimal::new(i as i64 * 7 + 1, 2),
                format!("grant-{i}"),
            ));
        } else {
            let mut batch = Vec::new();
            for j in 0..(1 + i % 5) {
                let (account, secret) = if j % 2 == 0 {
                    &accounts[0]
                } else {
                    &accounts[(i + j) as usize % 4]
                };
                let d = debit(
                    *account,
                    secret,
                    "claude-sonnet-4-5",
                    usage(100 + i * 13 + j, i % 7),
                    Utc::now(),
                );
                batch.push(d);
            }
            // Every fifth batch replays debits of an earlier one: applied once in total.
            if i % 5 == 0 {
                if let Some(prev) = all_debits.get(all_debits.len().saturating_sub(3)..) {
                    batch.extend(prev.iter().cloned());
                }
            }
            all_debits.extend(batch.iter().cloned());
            ops.push(Op::Debits(batch));
        }
    }
    // Each grant key is also sent twice, concurrently. All of it at once is far more than the
    // pool's 16 connections serve within its 2 s acquire timeout on a busy machine: what is
    // answered 503 (nothing applied) is sent again, as gateways and operators' clients do.
    let retried = AtomicU32::new(0);
    let retried = &retried;
    let mut futures = Vec::new();
    for op in &ops {
        match op {
            Op::Grant(account, credits, key) => {
                for _ in 0..2 {
                    let app = &app;
                    futures.push(Box::pin(async move {
                        let (s, b, unavailable) =
                            app.grant_retrying(*account, &credits.to_string(), key).await;
                        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{b}");
                        retried.fetch_add(unavailable, Ordering::Relaxed);
                        vec![(
                            *account,
                            if s == StatusCode::CREATED {
                                dec(&b["credits"])
                            } else {
                                Decimal::ZERO
                            },
                        )]
                    })
                        as std::pin::Pin<
                            Box<dyn std::future::Future<Output = Vec<(Uuid, Decimal)>>>,
                        >);
                }
            }
            Op::Debits(batch) => {
                let app = &app;
                futures.push(Box::pin(async move {
                    let (ack, unavailable) = app.debits_as_a_gateway(batch.clone()).await;
                    retried.fetch_add(unavailable, Ordering::Relaxed);
                    batch
                        .iter()
                        .zip(&ack.results)
                        .filter(|(_, r)| r.outcome == DebitOutcome::Applied)
                        .map(|(d, r)| (d.account_id, -r.credits.unwrap()))
                        .collect()
                }));
            }
        }
    }
    let results = futures::future::join_all(futures).await;
    eprintln!(
        "measured: {} requests answered 503 and sent again",
        retried.load(Ordering::Relaxed)
    );

    // The auditor: expected balances from the answers, and each debit's cost recomputed here.
    let mut expected: HashMap<Uuid, Decimal> = HashMap::new();
    for (account, delta) in results.into_iter().flatten() {
        *expected.entry(account).or_default() += delta;
    }
    let mut unique = HashMap::new();
    for d in &all_debits {
        unique.insert(d.debit_id, d);
    }
    let mut recomputed: HashMap<Uuid, Decimal> = HashMap::new();
    for op in &ops {
        if let Op::Grant(account, credits, _) = op {
            *recomputed.entry(*account).or_default() += credits;
        }
    }
    for debit in unique.values() {
        let cost = Decimal::from(debit.usage.input_tokens) * d("0.00042")
            + Decimal::from(debit.usage.output_tokens) * d("0.0021");
        *recomputed.entry(debit.account_id).or_default() -= cost;
    }
    let balances = audit_ledger(&app.pool).await;
    for (account, _) in &accounts {
        assert_eq!(
            expected[account], recomputed[account],
            "answers disagree with the operations"
        );
        assert_eq!(
            balances[account], recomputed[account],
            "database balance of {account}"
        );
        assert_eq!(app.balance(*account).await, recomputed[account]);
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded as usize, unique.len());
    let snapshot = app.snapshot("").await;
    for a in snapshot["accounts"].as_array().unwrap() {
        assert_eq!(dec(&a["balance"]), recomputed[&id(&a["account_id"])]);
    }
}
