//! The control plane goes away: with `fail_mode: open` known keys are served on cached balances
//! and every debit arrives exactly once after the restart; unknown keys get 503. With
//! `fail_mode: closed` everything gets 503 until the control plane is back. Each test has its own
//! stack, since it stops the control plane.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::api::{eventually, Api};
use crate::call::{well_formed_unknown_key, Call};
use crate::harness::{Options, OwnedGateway};
use crate::pricing::{dec, sonnet_4_5, Tokens};

const SONNET: &str = "claude-sonnet-4-5";

fn options(fail_mode: &'static str) -> Options {
    Options::faults(fail_mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_outage_serves_known_keys_and_delivers_every_debit_once() {
    let mut stack = OwnedGateway::start(options("open"));
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("100").await;
    let other = api.tenant("100").await;
    let tokens = Tokens {
        input: 1000,
        output: 200,
        ..Tokens::default()
    };
    let script = json!({"usage": tokens.anthropic_usage()});
    let mut ids = vec![];
    let before = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&script))
        .await;
    before.assert_ok();
    ids.push(before.request_id());
    // `other` is known to the gateway through the snapshot only: no request before the outage.
    api.usage_settled(tenant.account, 1).await;

    stack.stop_control_plane();
    // Past `stale_after_ms`: the gateway knows the control plane is unreachable.
    eventually("the snapshot to go stale", Duration::from_secs(10), || async {
        (api.filter_stat("sync.age_ms").await > 1500).then_some(())
    })
    .await;
    for (i, key) in [
        &tenant.key,
        &other.key,
        &tenant.key,
        &tenant.key,
        &other.key,
        &tenant.key,
    ]
    .iter()
    .enumerate()
    {
        let reply = api
            .send(Call::messages(key, SONNET, i % 2 == 1).script(&script))
            .await;
        reply.assert_ok();
        ids.push(reply.request_id());
    }
    let unknown = api
        .send(Call::messages(&well_formed_unknown_key(), SONNET, false))
        .await;
    unknown.assert_refused(503, "api_error");
    assert!(api.upstream_saw(&unknown.marker).await.is_empty());
    // The gateway kept trying to deliver while the control plane was down.
    eventually("a failed flush retried", Duration::from_secs(10), || async {
        (api.filter_stat("debits.retried").await > 0).then_some(())
    })
    .await;
    assert!(
        api.filter_stat("debit_buffer.size").await > 0,
        "the served requests' debits are buffered"
    );

    stack.restart_control_plane();
    let rows = api.usage_settled(tenant.account, 5).await;
    let other_rows = api.usage_settled(other.account, 2).await;
    for row in rows.iter().chain(&other_rows) {
        assert!(ids.contains(&row.request_id), "unexpected usage record {row:#?}");
        assert_eq!(row.cost(), tokens.cost(&sonnet_4_5()));
        assert!(!row.partial);
    }
    assert_eq!(tokens.cost(&sonnet_4_5()), dec("0.84"));
    api.assert_balance(&tenant, dec("100"), &rows).await;
    api.assert_balance(&other, dec("100"), &other_rows).await;
    assert_eq!(api.balance(tenant.account).await, dec("95.8"));
    api.assert_ledger_invariants().await;
    eventually("the debit buffer drained", Duration::from_secs(10), || async {
        (api.filter_stat("debit_buffer.size").await == 0).then_some(())
    })
    .await;
    // Back to normal: the gateway serves and bills as before.
    let after = api
        .send(Call::messages(&tenant.key, SONNET, false).script(&script))
        .await;
    after.assert_ok();
    api.usage_settled(tenant.account, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_outage_answers_503_until_the_control_plane_is_back() {
    let mut stack = OwnedGateway::start(options("closed"));
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("100").await;
    // Fail-closed refuses until the first snapshot has been applied, a moment after Envoy is ready.
    api.until_models_answer(&tenant.key, 200, "the first snapshot", Duration::from_secs(10))
        .await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();

    stack.stop_control_plane();
    // Once the gateway notices (no successful sync for `stale_after_ms`), it refuses everything.
    // Polled on a free route, so that nothing served while it has not noticed yet is billed.
    let models = api
        .until_models_answer(
            &tenant.key,
            503,
            "503 in fail-closed mode",
            Duration::from_secs(20),
        )
        .await;
    models.assert_refused(503, "api_error");
    let refused = api.send(Call::messages(&tenant.key, SONNET, false)).await;
    refused.assert_refused(503, "api_error");
    assert!(api.upstream_saw(&refused.marker).await.is_empty());

    stack.restart_control_plane();
    api.until_models_answer(
        &tenant.key,
        200,
        "served again after the restart",
        Duration::from_secs(20),
    )
    .await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    // The request before and the one after the outage; nothing during it.
    api.usage_settled(tenant.account, 2).await;
    api.assert_ledger_invariants().await;
}

/// The debit buffer is bounded: once it holds `debit_buffer_max` debits that cannot be delivered,
/// billed requests get 503 (free ones still pass); when the control plane is back it drains and
/// billed requests are served again. One worker, so that the bound is the whole gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_debit_buffer_answers_503_until_it_drains() {
    let mut stack = OwnedGateway::start(Options {
        envoy_concurrency: 1,
        plugin_extra: json!({"debit_buffer_max": 3}),
        ..options("open")
    });
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("100").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    api.usage_settled(tenant.account, 1).await;

    stack.stop_control_plane();
    for stream in [false, true, false] {
        api.send(Call::messages(&tenant.key, SONNET, stream))
            .await
            .assert_ok();
    }
    let full = api.send(Call::messages(&tenant.key, SONNET, false)).await;
    full.assert_refused(503, "api_error");
    assert!(api.upstream_saw(&full.marker).await.is_empty());
    assert!(api.filter_stat("refused.debit_buffer_full").await >= 1);
    api.send(Call::new(Method::GET, "/v1/models").key(&tenant.key))
        .await
        .assert_ok();

    stack.restart_control_plane();
    api.usage_settled(tenant.account, 4).await;
    eventually(
        "billed requests served again",
        Duration::from_secs(20),
        || async {
            let r = api.send(Call::messages(&tenant.key, SONNET, false)).await;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let rows = api.usage_settled(tenant.account, 5).await;
    api.assert_balance(&tenant, dec("100"), &rows).await;
}

/// Debits still buffered when Envoy is asked to stop are delivered before it exits. An outage of
/// a few seconds pushes the retry backoff to seconds; Envoy is stopped right after the control
/// plane is back. Envoy exits on SIGTERM without waiting for the filter, so the stop drains the
/// listeners and waits for the buffer to empty first (`Stack::stop_envoy`, also used by
/// `cargo xtask up`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_envoy_delivers_the_buffered_debits_first() {
    let mut stack = OwnedGateway::start(options("open"));
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("100").await;
    api.send(Call::new(Method::GET, "/v1/models").key(&tenant.key))
        .await
        .assert_ok();
    stack.stop_control_plane();
    let mut ids = Vec::new();
    for stream in [false, true, false, true] {
        let reply = api.send(Call::messages(&tenant.key, SONNET, stream)).await;
        reply.assert_ok();
        ids.push(reply.request_id());
    }
    // Four debits per failed attempt: six attempts, 3 s of outage, the next retry seconds away.
    let retried_at_least = 24;
    eventually(
        "the flush retried with backoff",
        Duration::from_secs(30),
        || async { (api.filter_stat("debits.retried").await >= retried_at_least).then_some(()) },
    )
    .await;
    stack.restart_control_plane();
    stack.stop_envoy();
    let rows = api.usage_settled(tenant.account, ids.len()).await;
    for id in ids {
        Api::row(&rows, id);
    }
    api.assert_balance(&tenant, dec("100"), &rows).await;
}

/// Envoy is stopped while a slow stream is being served: the stop waits for it (new connections
/// are refused at once), the stream reaches its end, and its debit is recorded before Envoy exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_envoy_mid_stream_lets_the_stream_finish_and_records_its_debit() {
    let mut stack = OwnedGateway::start(options("open"));
    let api = Api::new(&stack.gw);
    let tenant = api.tenant("100").await;
    let usage = Tokens {
        input: 30,
        output: 120,
        ..Tokens::default()
    };
    // 40 deltas 50 ms apart: about 2 s of stream.
    let script = json!({"usage": usage.anthropic_usage(), "deltas": 40, "delay_ms": 50});
    let mut resp = api
        .start(Call::messages(&tenant.key, SONNET, true).script(&script))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let request_id = resp
        .headers()
        .get("x-claudestore-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .expect("request id");
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        let chunk = resp.chunk().await.expect("stream data").expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let stopper = tokio::task::spawn_blocking(move || {
        stack.stop_envoy();
        stack
    });
    // The drain refuses new connections at once, while the stream goes on.
    let gateway = api.gw.url.trim_start_matches("http://").to_owned();
    eventually("new connections refused", Duration::from_secs(1), || async {
        tokio::net::TcpStream::connect(&gateway)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    while let Some(chunk) = resp.chunk().await.expect("the stream was cut by the stop") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: message_stop"), "stream incomplete: {seen}");
    let _stack = stopper.await.expect("stop");
    let rows = api.usage_settled(tenant.account, 1).await;
    let row = Api::row(&rows, request_id);
    assert!(!row.partial, "{row:#?}");
    assert_eq!(row.tokens(), usage);
    assert_eq!(row.cost(), usage.cost(&sonnet_4_5()));
}
