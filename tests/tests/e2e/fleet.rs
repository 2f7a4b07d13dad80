//! Two Envoys in front of two control-plane replicas on one PostgreSQL, as a fleet runs: a
//! revocation and a top-up reach both Envoys within 2 s; a concurrent load over both Envoys is
//! billed exactly once, also when one replica is killed (SIGKILL) in the middle of it: the Envoys
//! go on with the other (health checks and outlier detection on the control plane's cluster).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tests::stack;

use crate::api::{count, load, Api, Tenant};
use crate::call::Call;
use crate::harness::{Options, OwnedGateway};

const SONNET: &str = "claude-sonnet-4-5";

/// Polls `f` on both Envoys until each gives `status`; the time it took, for both.
async fn seen_by_both(apis: [&Api; 2], tenant: &Tenant, status: u16) -> Duration {
    let started = Instant::now();
    for api in apis {
        loop {
            let r = api
                .send(Call::new(Method::GET, "/v1/models").key(&tenant.key))
                .await;
            if r.status == status {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never {status} on {}",
                api.gw.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_and_two_control_planes_bill_once_through_a_replica_killed_under_load() {
    let mut owned = OwnedGateway::start(Options {
        fail_mode: "open",
        sync_period_ms: 250,
        flush_period_ms: 200,
        envoy_concurrency: 2,
        plugin_extra: json!({}),
    });
    let second_port = stack::free_port().unwrap();
    owned
        .stack()
        .add_control_plane("control-plane-2", second_port)
        .unwrap();
    // Envoys started now balance over both replicas.
    let mut gw_a = owned.gw.clone();
    gw_a.url = owned.add_envoy("envoy-a");
    let mut gw_b = owned.gw.clone();
    gw_b.url = owned.add_envoy("envoy-b");
    // The test's own admin calls go to the replica that stays.
    gw_a.control = format!("http://127.0.0.1:{second_port}");
    gw_b.control = gw_a.control.clone();
    let (a, b) = (Api::new(&gw_a), Api::new(&gw_b));

    // A top-up and a revocation, seen by both Envoys within 2 s.
    let broke = a.tenant("0").await;
    a.send(Call::messages(&broke.key, SONNET, false))
        .await
        .assert_refused(402, "billing_error");
    b.send(Call::messages(&broke.key, SONNET, false))
        .await
        .assert_refused(402, "billing_error");
    a.grant(broke.account, "5").await;
    let started = Instant::now();
    for api in [&a, &b] {
        loop {
            let r = api.send(Call::messages(&broke.key, SONNET, false)).await;
            if r.status == 200 {
                break;
            }
            r.assert_refused(402, "billing_error");
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let top_up = started.elapsed();
    let revoked = a.tenant("10").await;
    seen_by_both([&a, &b], &revoked, 200).await;
    a.revoke(revoked.key_id).await;
    let revocation = seen_by_both([&a, &b], &revoked, 401).await;
    assert!(
        top_up < Duration::from_secs(2),
        "top-up seen by both after {top_up:?}"
    );
    assert!(
        revocation < Duration::from_secs(2),
        "revocation seen by both after {revocation:?}"
    );

    // 120 requests from 6 callers over both Envoys; replica 1 killed after about a second.
    let tenant = a.tenant("1000").await;
    for api in [&a, &b] {
        api.send(Call::new(Method::GET, "/v1/models").key(&tenant.key))
            .await
            .assert_ok();
    }
    let gws = [gw_a.clone(), gw_b.clone()];
    let traffic = load(&gws, &tenant, 6, 20, Duration::from_millis(40));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        tokio::task::block_in_place(|| owned.stack().kill("control-plane"));
    };
    let ((served, refused), ()) = tokio::join!(traffic, kill);
    let rows = a.usage_settled(tenant.account, served.len()).await;
    let (lost, doubled) = count(&served, &rows);
    eprintln!(
        "measured (2 Envoys, 2 control planes, one SIGKILLed at 1 s): {} served, {refused} refused, \
         {} recorded, lost {lost}, doubled {doubled}; top-up seen by both in {top_up:?}, \
         revocation in {revocation:?}",
        served.len(),
        rows.len()
    );
    assert_eq!(refused, 0, "the Envoys went on with the other replica");
    assert_eq!((lost, doubled), (0, 0));
    assert_eq!(rows.len(), served.len());
    a.assert_ledger_invariants().await;
}
