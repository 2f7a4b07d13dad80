use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn grant_is_idempotent_by_key_and_conflicts_on_other_content() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (status, first) = app.grant(account, "1000", "grant-1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for field in [
        "id",
        "account_id",
        "credits",
        "balance_after",
        "kind",
        "reason",
        "idempotency_key",
        "created_at",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {first}");
    }
    assert_eq!(first["kind"], "grant");
    assert_eq!(first["credits"], "1000");
    assert_eq!(first["balance_after"], "1000");

    let (status, again) = app.grant(account, "1000.00", "grant-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "a replay returns the original transfer");

    let (s, b) = app.grant(account, "999", "grant-1").await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");
    let other = app.create_account("other").await;
    let (s, b) = app.grant(other, "1000", "grant-1").await;
    assert_error(s, &b, StatusCode::CONFLICT, "invalid_request_error");

    assert_eq!(app.balance(account).await, d("1000"));
    assert_eq!(app.balance(other).await, d("0"));
    let balances = audit_ledger(&app.pool).await;
    assert_eq!(balances[&account], d("1000"));
}

#[tokio::test]
async fn correction_needs_a_reason_and_zero_or_inexact_credits_are_refused() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.grant(account, "100", "g").await;
    let path = format!("/v1/accounts/{account}/credits");
    for (body, needle) in [
        (json!({"credits": "-10", "idempotency_key": "c1"}), "reason"),
        (
            json!({"credits": "0", "idempotency_key": "c2", "reason": "x"}),
            "zero",
        ),
        (
            json!({"credits": 0, "idempotency_key": "c2", "reason": "x"}),
            "zero",
        ),
        (
            json!({"credits": 12.5, "idempotency_key": "c3", "reason": "x"}),
            "credits",
        ),
        (
            json!({"credits": "1e5", "idempotency_key": "c4", "reason": "x"}),
            "credits",
        ),
        (
            json!({"credits": "1.0000000000000000001", "idempotency_key": "c5"}),
            "credits",
        ),
        (
            json!({"credits": "9999999999999999", "idempotency_key": "c6"}),
            "credits",
        ),
        (json!({"credits": "10"}), "idempotency_key"),
        (json!({"credits": "10", "idempotency_key": ""}), "idempotency_key"),
        (
            json!({"credits": "10", "idempotency_key": "x".repeat(201)}),
            "idempotency_key",
        ),
        (json!({"credits": true, "idempotency_key": "c7"}), "credits"),
    ] {
        let (s, b) = app.admin_json(Method::POST, &path, body.clone()).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request_error");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(needle),
            "{body} -> {b}"
        );
    }
    let (status, body) = app
        .admin_json(
            Method::POST,
            &path,
            json!({"credits": "-12.5", "idempotency_key": "fix-1", "reason": "double grant"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "correction");
    assert_eq!(body["credits"], "-12.5");
    assert_eq!(body["balance_after"], "87.5");
    let (status, body) = app
        .admin_json(
            Method::POST,
            &path,
            json!({"credits": 7, "idempotency_key": "int"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["balance_after"], "94.5");
    let (s, b) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{}/credits", uuid::Uuid::new_v4()),
            json!({"credits": "1", "idempotency_key": "z"}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(transfers, 3, "refused requests wrote nothing");
    let audits: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'credits.%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audits, 3);
    audit_ledger(&app.pool).await;
}

#[tokio::test]
async fn ledger_lists_transfers_newest_first_with_running_balance() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    for (i, credits) in ["100", "50.25", "0.000000000000000001"].iter().enumerate() {
        let (s, b) = app.grant(account, credits, &format!("g{i}")).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (_, page1) = app
        .admin_get(&format!("/v1/accounts/{account}/ledger?limit=2"))
        .await;
    let rows = page1["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["balance_after"], "150.250000000000000001");
    assert_eq!(rows[0]["credits"], "0.000000000000000001");
    assert_eq!(rows[1]["balance_after"], "150.25");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .admin_get(&format!("/v1/accounts/{account}/ledger?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["data"][0]["balance_after"], "100");
    assert!(page2["next_cursor"].is_null());
    let (s, b) = app
        .admin_get(&format!("/v1/accounts/{}/ledger", uuid::Uuid::new_v4()))
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
}

#[tokio::test]
async fn fifty_concurrent_grants_with_one_key_apply_once() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let results = futures::future::join_all((0..50).map(|_| app.grant(account, "25", "same-key"))).await;
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let replayed = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((created, replayed), (1, 49), "{results:?}");
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, b)| b["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "every answer is the one transfer");
    assert_eq!(app.balance(account).await, d("25"));
    let balances = audit_ledger(&app.pool).await;
    assert_eq!(balances[&account], d("25"));
}

#[tokio::test]
async fn the_database_refuses_ledger_edits_and_unbalanced_entries() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    app.grant(account, "10", "g").await;
    for sql in [
        "UPDATE entries SET amount = amount * 2",
        "DELETE FROM transfers",
        "UPDATE transfers SET amount = 1",
    ] {
        let err = sqlx::query(sql).execute(&app.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let transfer = uuid::Uuid::new_v4();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO transfers (id, scope, idempotency_key, kind, from_account, to_account, amount, actor, fingerprint)
         VALUES ($1, 'admin', 'raw', 'grant', '00000000-0000-0000-0000-000000000001', $2, 5, 'test', 'x')",
    )
    .bind(transfer)
    .bind(account)
    .execute(&mut *tx)
    .await
    .unwrap();
    let err = sqlx::query(
        "INSERT INTO entries (transfer_id, ledger_account_id, amount, balance_after)
         VALUES ($1, '00000000-0000-0000-0000-000000000001', -5, -15), ($1, $2, 4, 14)",
    )
    .bind(transfer)
    .bind(account)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("balanced"), "{err}");
    drop(tx);
    audit_ledger(&app.pool).await;
}

/// The balance check of new entries reads their transfers by id (migration 0006): on a connection
/// whose trigger plan was made while the ledger was small, a later batch must not read every
/// transfer written since (it did: one full scan of `transfers` per debit batch).
#[tokio::test]
async fn the_balance_check_probes_transfers_by_id_however_the_ledger_grew() {
    let app = spawn_app().await;
    let house = "'00000000-0000-0000-0000-000000000001'::uuid";
    let revenue = "'00000000-0000-0000-0000-000000000002'::uuid";
    let transfers = |ids: &str| {
        format!(
            "INSERT INTO transfers (id, scope, idempotency_key, kind, from_account, to_account, amount, actor, fingerprint)
             SELECT md5('plan' || i)::uuid, 'admin', 'plan-' || i, 'grant', {house}, {revenue}, 1, 'test', 'x'
             FROM generate_series({ids}) AS i"
        )
    };
    let entries = |ids: &str| {
        format!(
            "INSERT INTO entries (transfer_id, ledger_account_id, amount, balance_after)
             SELECT md5('plan' || i)::uuid, a, m, 0 FROM generate_series({ids}) AS i,
                 (VALUES ({house}, -1), ({revenue}, 1)) AS v(a, m)"
        )
    };
    let transfers_read =
        "SELECT seq_tup_read, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'transfers'";
    // One connection, one transaction (rolled back: the ledger's balances are not touched).
    let mut tx = app.pool.begin().await.unwrap();
    for sql in [
        transfers("1, 1"),
        entries("1, 1"),
        transfers("2, 20001"),
        entries("2, 20001"),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    let (seq_before, idx_before): (i64, i64) =
        sqlx::query_as(transfers_read).fetch_one(&mut *tx).await.unwrap();
    for sql in [transfers("20002, 20003"), entries("20002, 20003")] {
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    let (seq_after, idx_after): (i64, i64) =
        sqlx::query_as(transfers_read).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        seq_after - seq_before,
        0,
        "transfers read by a sequential scan for 2 new ones"
    );
    assert!(
        idx_after - idx_before >= 2,
        "{idx_before} -> {idx_after} index scans"
    );
    drop(tx);
    audit_ledger(&app.pool).await;
}

/// The control plane's connections plan each statement for the ledger as it is: a balance update
/// prepared while the ledger held a few accounts must not read every account once it holds many.
#[tokio::test]
async fn statements_are_planned_for_the_ledger_as_it_is_not_as_it_was() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
    let balances: std::collections::HashMap<uuid::Uuid, rust_decimal::Decimal> =
        [(account, rust_decimal::Decimal::ZERO)].into();
    // A batch's worth of ids (none of them an account: nothing is changed) for the runs on the
    // small ledger: for those the cheapest plan hashes the ids and reads the whole table.
    let mut batch = balances.clone();
    batch.extend((0..1000).map(|_| (uuid::Uuid::new_v4(), rust_decimal::Decimal::ZERO)));
    let accounts_read =
        "SELECT seq_tup_read, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'ledger_accounts'";
    // One connection, one transaction (rolled back).
    let mut tx = app.pool.begin().await.unwrap();
    for _ in 0..8 {
        control_plane::ledger::store_balances(&mut tx, &batch, 1)
            .await
            .unwrap();
    }
    sqlx::query(
        "WITH n AS (SELECT gen_random_uuid() AS id, i FROM generate_series(1, 20000) AS i),
              a AS (INSERT INTO accounts (id, name, email) SELECT id, 'bulk', 'bulk' || i || '@example.com' FROM n)
         INSERT INTO ledger_accounts (id, account_id) SELECT id, id FROM n",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let (seq_before, idx_before): (i64, i64) =
        sqlx::query_as(accounts_read).fetch_one(&mut *tx).await.unwrap();
    control_plane::ledger::store_balances(&mut tx, &balances, 1)
        .await
        .unwrap();
    let (seq_after, idx_after): (i64, i64) = sqlx::query_as(accounts_read).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        seq_after - seq_before,
        0,
        "ledger accounts read by a sequential scan to update one"
    );
    assert!(idx_after > idx_before, "{idx_before} -> {idx_after} index scans");
}

/// The ledger's references are checked per statement (migration 0005), not by foreign keys: each
/// dangling reference is still refused with the foreign-key SQLSTATE, and what the ledger names can
/// be neither deleted nor renumbered.
#[tokio::test]
async fn the_database_refuses_dangling_ledger_references() {
    let app = spawn_app().await;
    let account = app.create_account("acme").await;
    let (key, _) = app.create_key(account, "k").await;
    app.grant(account, "10", "g").await;
    let missing = uuid::Uuid::new_v4();
    let house = "00000000-0000-0000-0000-000000000001";
    let usage =
        "INSERT INTO usage_records (debit_id, account_id, key_id, transfer_id, route, model_requested,
            model_billed, price_version, input_tokens, output_tokens, thinking_tokens, cache_write_5m_tokens,
            cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, cost, list_usd,
            partial, output_estimated, served_model_unpriced, admitted_at, fingerprint, sync_version)
         VALUES (gen_random_uuid(), $1, $2, $3, 'messages', 'm', 'm', 'v', 1, 1, 0, 0, 0, 0, 0, 0, 1, 1,
            false, false, false, now(), 'f', 1)";
    let cases: Vec<(&str, Vec<uuid::Uuid>, &str)> = vec![
        (
            "INSERT INTO entries (transfer_id, ledger_account_id, amount, balance_after)
             VALUES ($1, '00000000-0000-0000-0000-000000000001', -5, -5), ($1, $2, 5, 5)",
            vec![missing, account],
            "entry names a missing transfer",
        ),
        (
            "INSERT INTO transfers (id, scope, idempotency_key, kind, from_account, to_account, amount, actor, fingerprint)
             VALUES (gen_random_uuid(), 'admin', 'dangling', 'grant', '00000000-0000-0000-0000-000000000001', $1, 5, 't', 'x')",
            vec![missing],
            "transfer names a missing ledger account",
        ),
        (usage, vec![missing, key, missing], "usage record names a missing account"),
        (usage, vec![account, missing, missing], "usage record names a missing key"),
        (usage, vec![account, key, missing], "usage record names a missing transfer"),
    ];
    for (sql, binds, what) in cases {
        let mut tx = app.pool.begin().await.unwrap();
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        let err = q.execute(&mut *tx).await.unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code()).unwrap_or_default();
        assert_eq!(code, "23503", "{what}: {err}");
        drop(tx);
    }
    // The same usage record with real references (no transfer: a free request, costing nothing)
    // is accepted.
    let usage_free = usage
        .replace("$3", "NULL")
        .replace("0, 0, 1, 1,\n", "0, 0, 0, 0,\n");
    assert_ne!(usage_free, usage.replace("$3", "NULL"), "the free record costs 0");
    sqlx::query(&usage_free)
        .bind(account)
        .bind(key)
        .execute(&app.pool)
        .await
        .unwrap();
    // A delete that matches nothing is no harm; one that matches a row is refused.
    let none = format!("DELETE FROM accounts WHERE id = '{missing}'");
    sqlx::query(&none).execute(&app.pool).await.unwrap();
    for sql in [
        "UPDATE usage_records SET key_id = gen_random_uuid()".to_owned(),
        "UPDATE usage_records SET transfer_id = gen_random_uuid()".to_owned(),
        format!("DELETE FROM accounts WHERE id = '{account}'"),
        format!("DELETE FROM api_keys WHERE id = '{key}'"),
        format!("DELETE FROM ledger_accounts WHERE id = '{house}'"),
        "TRUNCATE entries".to_owned(),
        "TRUNCATE transfers CASCADE".to_owned(),
        format!("UPDATE accounts SET id = gen_random_uuid() WHERE id = '{account}'"),
        format!("UPDATE api_keys SET id = gen_random_uuid() WHERE id = '{key}'"),
    ] {
        let err = sqlx::query(&sql).execute(&app.pool).await.unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code()).unwrap_or_default();
        assert_eq!(code, "23503", "{sql}: {err}");
    }
    audit_ledger(&app.pool).await;
}
