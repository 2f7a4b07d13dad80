use chrono::Utc;
use metering::wire::DebitOutcome;
use metering::Usage;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn worked_example_usage() -> Usage {
    Usage {
        input_tokens: 1_200,
        cache_write_5m_tokens: 1_000,
        cache_write_1h_tokens: 2_000,
        cache_read_tokens: 50_000,
        output_tokens: 800,
        ..Usage::default()
    }
}

#[tokio::test]
async fn worked_example_costs_6_489_credits_through_a_real_debit() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_id, secret) = app.create_key(account, "k").await;
    app.grant(account, "100", "g").await;
    let d1 = debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        worked_example_usage(),
        Utc::now(),
    );
    let ack = app.debits(vec![d1.clone()]).await;
    let r = &ack.results[0];
    assert_eq!(r.outcome, DebitOutcome::Applied, "{ack:?}");
    assert_eq!(r.credits, Some(d("6.489")));
    assert!(r.version > 0);
    assert_eq!(app.balance(account).await, d("93.511"));

    let (_, usage) = app.admin_get(&format!("/v1/accounts/{account}/usage")).await;
    let row = &usage["data"][0];
    assert_eq!(id(&row["request_id"]), d1.debit_id);
    assert_eq!(id(&row["key_id"]), key_id);
    assert_eq!(row["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(row["cost"], "6.489");
    assert_eq!(row["input_tokens"], 1200);
    assert_eq!(row["cache_write_5m_tokens"], 1000);
    assert_eq!(row["cache_write_1h_tokens"], 2000);
    assert_eq!(row["cache_read_tokens"], 50000);
    assert_eq!(row["output_tokens"], 800);
    assert_eq!(row["thinking_tokens"], 0);
    assert_eq!(row["web_search_requests"], 0);
    assert_eq!(row["partial"], false);
    assert_eq!(row["list_usd"], "0.04635");
    assert_eq!(row["price_version"], "claude-sonnet-4-5@2026-12-01T00:00:00Z");
    let stored: (String, Option<String>, Option<String>, String) = sqlx::query_as(
        "SELECT model_requested, upstream_request_id, upstream_message_id, model_billed FROM usage_records",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "claude-sonnet-4-5".into(),
            d1.upstream_request_id.clone(),
            d1.upstream_message_id.clone(),
            "claude-sonnet-4-5".into()
        )
    );
    let (_, ledger) = app.admin_get(&format!("/v1/accounts/{account}/ledger")).await;
    assert_eq!(ledger["data"][0]["kind"], "usage");
    assert_eq!(ledger["data"][0]["credits"], "-6.489");
    assert_eq!(ledger["data"][0]["balance_after"], "93.511");
    audit_ledger(&app.pool).await;
}

/// A partial debit whose input the gateway estimated is stored and listed with the mark; the
/// others are listed unmarked.
#[tokio::test]
async fn estimated_input_is_stored_and_listed() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "100", "g").await;
    let now = Utc::now();
    let plain = debit(account, &secret, "claude-sonnet-4-5", usage(10, 1), now);
    let mut estimated = debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        usage(250, 3),
        now - chrono::Duration::seconds(1),
    );
    estimated.partial = true;
    estimated.input_estimated = true;
    let ack = app.debits(vec![plain.clone(), estimated.clone()]).await;
    assert!(
        ack.results.iter().all(|r| r.outcome == DebitOutcome::Applied),
        "{ack:?}"
    );
    // Sent again: the same content, a duplicate (the mark is part of the fingerprint).
    let again = app.debits(vec![estimated.clone()]).await;
    assert_eq!(again.results[0].outcome, DebitOutcome::Duplicate, "{again:?}");

    let (_, listed) = app.admin_get(&format!("/v1/accounts/{account}/usage")).await;
    let rows = listed["data"].as_array().unwrap();
    let row = |d: &metering::wire::Debit| {
        rows.iter()
            .find(|r| id(&r["request_id"]) == d.debit_id)
            .unwrap()
            .clone()
    };
    assert_eq!(row(&estimated)["input_estimated"], true);
    assert_eq!(row(&estimated)["input_tokens"], 250);
    assert_eq!(row(&plain)["input_estimated"], false);
    let stored: Vec<bool> =
        sqlx::query_scalar("SELECT input_estimated FROM usage_records ORDER BY admitted_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![true, false]);
}

#[tokio::test]
async fn replaying_a_batch_whole_or_overlapping_changes_nothing_twice() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "10", "g").await;
    let now = Utc::now();
    let batch: Vec<_> = (1..=3)
        .map(|i| debit(account, &secret, "claude-sonnet-4-5", usage(1000 * i, 0), now))
        .collect();
    let first = app.debits(batch.clone()).await;
    assert!(first.results.iter().all(|r| r.outcome == DebitOutcome::Applied));
    let balance = app.balance(account).await;
    assert_eq!(balance, d("10") - d("0.00042") * d("6000"));
    let counts = || async {
        let c: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries), (SELECT count(*) FROM usage_records)",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        c
    };
    let before = counts().await;

    let replay = app.debits(batch.clone()).await;
    for (a, b) in first.results.iter().zip(&replay.results) {
        assert_eq!(b.outcome, DebitOutcome::Duplicate);
        assert_eq!(
            (b.debit_id, b.version, b.credits),
            (a.debit_id, a.version, a.credits)
        );
    }
    assert_eq!(counts().await, before);
    assert_eq!(app.balance(account).await, balance);

    let fresh: Vec<_> = (0..2)
        .map(|_| debit(account, &secret, "claude-sonnet-4-5", usage(500, 0), now))
        .collect();
    let overlap = vec![
        batch[1].clone(),
        fresh[0].clone(),
        batch[2].clone(),
        fresh[1].clone(),
    ];
    let ack = app.debits(overlap).await;
    let outcomes: Vec<_> = ack.results.iter().map(|r| r.outcome).collect();
    use DebitOutcome::*;
    assert_eq!(outcomes, [Duplicate, Applied, Duplicate, Applied]);
    assert_eq!(app.balance(account).await, balance - d("0.42"));
    assert_eq!(counts().await, (before.0 + 2, before.1 + 4, before.2 + 2));
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn a_compact_answer_lists_only_what_the_batch_did_not_apply() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "10", "g").await;
    let now = Utc::now();
    let earlier = debit(account, &secret, "claude-sonnet-4-5", usage(100, 0), now);
    let first = app.debits(vec![earlier.clone()]).await;
    let fresh: Vec<_> = (0..3)
        .map(|_| debit(account, &secret, "claude-sonnet-4-5", usage(200, 1), now))
        .collect();
    let unpriced = debit(account, &secret, "gpt-nothing", usage(1, 1), now);
    let batch = vec![
        fresh[0].clone(),
        earlier.clone(),
        fresh[1].clone(),
        unpriced.clone(),
        fresh[2].clone(),
    ];
    let ack = app.debits_compact(batch.clone()).await;
    use DebitOutcome::*;
    assert_eq!(ack.batch_len, Some(5));
    let listed: Vec<_> = ack.results.iter().map(|r| (r.debit_id, r.outcome)).collect();
    assert_eq!(
        listed,
        [(earlier.debit_id, Duplicate), (unpriced.debit_id, Rejected)]
    );
    assert_eq!(ack.results[0].version, first.results[0].version);
    // The one version given is each applied debit's: replayed and answered in full, they say so.
    let applied_at = ack.applied_at_version.unwrap();
    assert!(applied_at > first.results[0].version);
    let replay = app.debits(batch).await;
    assert_eq!((replay.applied_at_version, replay.batch_len), (None, None));
    for i in [0, 2, 4] {
        assert_eq!(
            (replay.results[i].outcome, replay.results[i].version),
            (Duplicate, applied_at)
        );
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 4);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn a_batch_that_repeats_an_id_or_applies_nothing_is_answered_in_full() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "10", "g").await;
    let d = debit(account, &secret, "claude-sonnet-4-5", usage(100, 1), Utc::now());
    use DebitOutcome::*;
    // Two results for one id could not be told apart by id: every result, in order.
    let twice = app.debits_compact(vec![d.clone(), d.clone()]).await;
    assert_eq!((twice.applied_at_version, twice.batch_len), (None, None));
    let outcomes: Vec<_> = twice.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Applied, Duplicate]);
    // Nothing applied: nothing to leave out.
    let replay = app.debits_compact(vec![d.clone()]).await;
    assert_eq!((replay.applied_at_version, replay.batch_len), (None, None));
    assert_eq!(replay.results.len(), 1);
    assert_eq!(replay.results[0].outcome, Duplicate);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn conflicting_and_impossible_debits_are_answered_and_not_recorded() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let other = app.create_account("other").await;
    let (_, secret) = app.create_key(account, "k").await;
    let (_, other_secret) = app.create_key(other, "k").await;
    let now = Utc::now();
    let original = debit(account, &secret, "claude-sonnet-4-5", usage(100, 10), now);
    assert_eq!(
        app.debits(vec![original.clone()]).await.results[0].outcome,
        DebitOutcome::Applied
    );

    let mut changed = original.clone();
    changed.usage.output_tokens = 11;
    let mut unknown_account = debit(account, &secret, "claude-sonnet-4-5", usage(1, 1), now);
    unknown_account.account_id = uuid::Uuid::new_v4();
    let wrong_key = debit(account, &other_secret, "claude-sonnet-4-5", usage(1, 1), now);
    let unknown_key = debit(account, "csk_unknown", "claude-sonnet-4-5", usage(1, 1), now);
    let unpriced = debit(account, &secret, "gpt-nothing", usage(1, 1), now);
    let mut bad_counts = debit(account, &secret, "claude-sonnet-4-5", usage(1, 1), now);
    bad_counts.usage.thinking_tokens = 5;
    let repeated = debit(account, &secret, "claude-sonnet-4-5", usage(7, 0), now);
    let mut repeated_changed = repeated.clone();
    repeated_changed.partial = true;
    let batch = vec![
        changed,
        unknown_account,
        wrong_key,
        unknown_key,
        unpriced,
        bad_counts,
        repeated.clone(),
        repeated.clone(),
        repeated_changed,
    ];
    let ack = app.debits(batch).await;
    use DebitOutcome::*;
    let outcomes: Vec<_> = ack.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Conflict, Rejected, Rejected, Rejected, Rejected, Rejected, Applied, Duplicate, Conflict]
    );
    assert!(ack.results[..6]
        .iter()
        .all(|r| r.error.is_some() && r.version == 0));
    assert_eq!(ack.results[7].version, ack.results[6].version);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 2);
    assert_eq!(app.balance(other).await, d("0"));
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn served_requests_are_debited_below_zero_and_after_revocation_or_suspension() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key_id, secret) = app.create_key(account, "k").await;
    app.grant(account, "1", "g").await;
    let now = Utc::now();
    let ack = app
        .debits(vec![debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(10_000, 0),
            now,
        )])
        .await;
    assert_eq!(ack.results[0].outcome, DebitOutcome::Applied);
    assert_eq!(app.balance(account).await, d("-3.2"));
    app.admin(Method::DELETE, &format!("/v1/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    app.admin_json(
        Method::PATCH,
        &format!("/v1/accounts/{account}"),
        json!({"status": "suspended"}),
    )
    .await;
    let ack = app
        .debits(vec![debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            usage(1_000, 0),
            now,
        )])
        .await;
    assert_eq!(ack.results[0].outcome, DebitOutcome::Applied);
    assert_eq!(app.balance(account).await, d("-3.62"));
    // A request that reported no tokens is recorded, with no transfer.
    let ack = app
        .debits(vec![debit(
            account,
            &secret,
            "claude-sonnet-4-5",
            Usage::default(),
            now,
        )])
        .await;
    assert_eq!(
        (ack.results[0].outcome, ack.results[0].credits),
        (DebitOutcome::Applied, Some(d("0")))
    );
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'usage'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(transfers, 2);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn debit_route_needs_the_internal_token_and_bounds_the_batch() {
    let app = spawn_app().await;
    let body = json!({"protocol": 1, "debits": []});
    let (s, b) = send(app.req(Method::POST, "/internal/v1/debits").json(&body)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.admin(Method::POST, "/internal/v1/debits").json(&body)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "authentication_error");
    let (s, b) = send(app.internal(Method::POST, "/internal/v1/debits").json(&body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["results"], json!([]));

    let account = app.create_account("acme").await;
    let (_, secret) = app.create_key(account, "k").await;
    let many: Vec<_> = (0..5001)
        .map(|_| debit(account, &secret, "claude-sonnet-4-5", usage(1, 1), Utc::now()))
        .collect();
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/debits")
            .json(&json!({"protocol": 1, "debits": many})),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    let huge = format!(
        "{{\"protocol\":1,\"gateway_id\":\"{}\",\"debits\":[]}}",
        "x".repeat(17 * 1024 * 1024)
    );
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/debits")
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    let (s, b) = send(
        app.internal(Method::POST, "/internal/v1/debits")
            .json(&json!({"protocol": 1, "debits": [{"debit_id": "x"}]})),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("debits[0]"),
        "{b}"
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0);
}

/// A batch's key lookup probes `api_keys` by hash: a plan made while the table was small must not
/// read every key once it holds many (a plain join did, per batch, for the connection's life).
#[tokio::test]
async fn the_key_lookup_of_a_batch_probes_by_hash_however_many_keys_there_are() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.create_key(account, "k").await;
    let hashes: Vec<String> = vec!["0".repeat(64), "f".repeat(64)];
    let keys_read = "SELECT seq_tup_read, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'api_keys'";
    // One connection, one transaction (rolled back). Run often enough for the server to settle
    // on a generic plan while the table holds one key.
    let mut tx = app.pool.begin().await.unwrap();
    for _ in 0..8 {
        sqlx::query(control_plane::internal::KEYS_BY_HASH)
            .bind(&hashes)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, key_hash, prefix, sync_version)
         SELECT gen_random_uuid(), $1, 'bulk', encode(sha256(convert_to('bulk-' || i, 'UTF8')), 'hex'), 'csk_bulk', 1
         FROM generate_series(1, 20000) AS i",
    )
    .bind(account)
    .execute(&mut *tx)
    .await
    .unwrap();
    let (seq_before, idx_before): (i64, i64) = sqlx::query_as(keys_read).fetch_one(&mut *tx).await.unwrap();
    let found = sqlx::query(control_plane::internal::KEYS_BY_HASH)
        .bind(&hashes)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(found.is_empty());
    let (seq_after, idx_after): (i64, i64) = sqlx::query_as(keys_read).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        seq_after - seq_before,
        0,
        "api_keys read by a sequential scan for 2 hashes"
    );
    assert!(
        idx_after - idx_before >= 2,
        "{idx_before} -> {idx_after} index scans"
    );
}
