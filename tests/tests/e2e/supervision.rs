//! What `cargo xtask up` does when the control plane crashes and when the operator stops it
//! (`tests::stack::{Supervisor, shutdown}`, the code `up` runs): a control plane killed with
//! SIGKILL during a load is restarted while Envoy serves on its buffer, and every served request
//! is in the ledger exactly once; a stop waits for the debits Envoy still holds (restarting the
//! control plane if need be) and, only when the operator insists, stops with them counted.

use std::time::{Duration, Instant};

use tests::stack::{shutdown, Stopped, Supervisor};
use uuid::Uuid;

use crate::api::{eventually, Api};
use crate::call::Call;
use crate::harness::{Options, OwnedGateway};

const SONNET: &str = "claude-sonnet-4-5";

fn options() -> Options {
    Options::faults("open")
}

/// Ticks the supervisor (as `up` does every half second) until `done` or the deadline.
fn supervise_until(
    owned: &mut OwnedGateway,
    supervisor: &mut Supervisor,
    deadline: Duration,
    mut done: impl FnMut(&Supervisor) -> bool,
) -> Vec<String> {
    let until = Instant::now() + deadline;
    let mut said = Vec::new();
    while !done(supervisor) {
        assert!(Instant::now() < until, "supervision did not get there: {said:#?}");
        said.extend(
            supervisor
                .tick(owned.stack())
                .expect("only the control plane stops"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_during_a_load_is_restarted_and_every_debit_arrives_once() {
    let mut owned = OwnedGateway::start(options());
    let api = Api::new(&owned.gw);
    let tenant = api.tenant("100").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    // 60 requests, one every 50 ms, while the control plane is killed and restarted.
    let load_api = Api::new(&owned.gw);
    let key = tenant.key.clone();
    let load = tokio::spawn(async move {
        let mut served: Vec<Uuid> = Vec::new();
        let mut refused = 0;
        for i in 0..60 {
            let reply = load_api.send(Call::messages(&key, SONNET, i % 2 == 0)).await;
            if reply.status == 200 {
                served.push(reply.request_id());
            } else {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (served, refused)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut supervisor = Supervisor::default();
    let said = tokio::task::block_in_place(|| {
        owned.stack().kill_control_plane();
        supervise_until(&mut owned, &mut supervisor, Duration::from_secs(60), |s| {
            s.restarts == 1 && !s.recovering()
        })
    });
    let (served, refused) = load.await.unwrap();
    eprintln!(
        "measured (control plane SIGKILLed during a load, restarted by the supervisor): {} served, \
         {refused} refused; supervisor restarts: {}",
        served.len() + 1,
        supervisor.restarts
    );
    assert_eq!(refused, 0, "a known key is served through the outage (fail open)");
    assert!(said.iter().any(|l| l.contains("restarting in")), "{said:?}");
    assert!(said.iter().any(|l| l.contains("ready again")), "{said:?}");
    let rows = api.usage_settled(tenant.account, served.len() + 1).await;
    for id in &served {
        assert_eq!(
            rows.iter().filter(|r| r.request_id == *id).count(),
            1,
            "request {id} not recorded exactly once"
        );
    }
    api.assert_ledger_invariants().await;
}

/// A gateway whose control plane was killed after the tenant's first request was recorded, and
/// `n` requests served since: their debits are held by Envoy.
async fn holding_debits(n: i64) -> (OwnedGateway, Api, crate::api::Tenant) {
    let mut owned = OwnedGateway::start(options());
    let api = Api::new(&owned.gw);
    let tenant = api.tenant("100").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    api.usage_settled(tenant.account, 1).await;
    owned.stack().kill_control_plane();
    for i in 0..n {
        api.send(Call::messages(&tenant.key, SONNET, i == 1))
            .await
            .assert_ok();
    }
    eventually("the debits held", Duration::from_secs(5), || async {
        (api.filter_stat("debit_buffer.size").await == n).then_some(())
    })
    .await;
    (owned, api, tenant)
}

/// Envoy holds debits the control plane has not taken (it was killed): a stop waits for them,
/// restarts the control plane, and ends once they are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_until_the_debits_envoy_holds_are_delivered() {
    let (mut owned, api, tenant) = holding_debits(3).await;
    let mut said = Vec::new();
    let stopped = tokio::task::block_in_place(|| {
        let mut supervisor = Supervisor::default();
        shutdown(
            owned.stack(),
            &mut supervisor,
            || false,
            |l| said.push(l.to_owned()),
        )
    });
    assert_eq!(stopped, Stopped::Drained);
    assert!(
        said.iter()
            .any(|l| l.contains("3 debit(s) not yet with the control plane")),
        "{said:#?}"
    );
    // The control plane the stop restarted has every debit: nothing lost.
    api.usage_settled(tenant.account, 4).await;
    api.assert_ledger_invariants().await;
}

/// The operator insists (a second Ctrl-C) before the control plane is back: the stop ends at
/// once and says how many debits it abandons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_counts_the_debits_abandoned() {
    let (mut owned, _api, _tenant) = holding_debits(2).await;
    let started = Instant::now();
    let stopped = tokio::task::block_in_place(|| {
        let mut supervisor = Supervisor::default();
        // Insisting after 300 ms: before the supervisor's first restart (1 s).
        shutdown(
            owned.stack(),
            &mut supervisor,
            || started.elapsed() > Duration::from_millis(300),
            |_| {},
        )
    });
    assert_eq!(stopped, Stopped::Abandoned { debits: 2 });
    assert!(started.elapsed() < Duration::from_secs(2));
}
