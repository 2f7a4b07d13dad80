//! Faults during a load, on loopback, bounded in time: PostgreSQL stopped and started again (a
//! private cluster this test starts), and Envoy killed with SIGKILL. Each prints its counts
//! (served, recorded, lost, doubled). A control plane SIGKILLed during the debit batches and
//! restarted is in `supervision.rs`; two control planes with one killed, in `fleet.rs`.

use std::time::Duration;

use tests::pg::Cluster;
use tests::stack;

use crate::api::{count, load, Api};
use crate::call::Call;
use crate::harness::{Options, OwnedGateway};

const SONNET: &str = "claude-sonnet-4-5";

fn options() -> Options {
    Options::faults("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_during_a_load_loses_and_doubles_nothing() {
    let dir = std::env::temp_dir().join(format!("cs-chaos-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster =
        Stopped(Cluster::init(&dir, stack::free_port().unwrap()).expect("a private PostgreSQL cluster"));
    cluster.start().unwrap();
    let owned = OwnedGateway::start_on(options(), &format!("{}/postgres", cluster.server_url()));
    let api = Api::new(&owned.gw);
    let tenant = api.tenant("1000").await;
    api.send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    let gw = owned.gw.clone();
    let t = tenant.clone();
    let traffic = tokio::spawn(async move { load(&[gw], &t, 3, 40, Duration::from_millis(60)).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| cluster.stop()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cluster.start()).unwrap();
    let (served, other) = traffic.await.unwrap();
    // The control plane serves again once its check sees the database (every 250 ms).
    let ready = format!("{}/readyz", owned.gw.control);
    crate::api::eventually(
        "the control plane ready again",
        Duration::from_secs(10),
        || async {
            let r = reqwest::get(&ready).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let rows = api.usage_settled(tenant.account, served.len() + 1).await;
    let (lost, doubled) = count(&served, &rows);
    eprintln!(
        "measured (PostgreSQL stopped 3 s during a load): {} served, {other} refused, {} recorded, \
         lost {lost}, doubled {doubled}",
        served.len() + 1,
        rows.len()
    );
    assert_eq!(other, 0, "known keys are served through the outage (fail open)");
    assert_eq!((lost, doubled), (0, 0));
    api.assert_ledger_invariants().await;
    drop(owned);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rolling restart of an Envoy during a load: drained (new connections refused, requests being
/// served finish, debits delivered), stopped, started again on the same port: every request it
/// served is billed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_drained_and_restarted_during_a_load_bills_every_request_once() {
    let mut owned = OwnedGateway::start(options());
    let mut gw_b = owned.gw.clone();
    gw_b.url = owned.add_envoy("envoy-b");
    let port: u16 = gw_b.url.rsplit(':').next().unwrap().parse().unwrap();
    let api = Api::new(&owned.gw);
    let tenant = api.tenant("1000").await;
    Api::new(&gw_b)
        .send(Call::messages(&tenant.key, SONNET, false))
        .await
        .assert_ok();
    let gw = gw_b.clone();
    let t = tenant.clone();
    let traffic = tokio::spawn(async move { load(&[gw], &t, 3, 40, Duration::from_millis(40)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let drained = tokio::task::block_in_place(|| owned.stack().restart_envoy("envoy-b", port)).unwrap();
    let (served, refused) = traffic.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = api.usage(tenant.account).await;
    let (lost, doubled) = count(&served, &rows);
    eprintln!(
        "measured (Envoy drained and restarted during a load): {} served, {refused} refused or \
         cut while it restarted, {} recorded, lost {lost}, doubled {doubled}",
        served.len() + 1,
        rows.len()
    );
    assert!(drained, "the drain delivered every debit before the stop");
    assert_eq!((lost, doubled), (0, 0));
    api.assert_ledger_invariants().await;
}

/// The private cluster, stopped however the test ends.
struct Stopped(Cluster);

impl std::ops::Deref for Stopped {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// SIGKILL to Envoy: what it had not flushed is lost, and only that: at most the debits of the
/// requests that ended within about a flush period (plus its batch in flight) before the kill
/// (docs/operations.md, "Loss window").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_killed_loses_at_most_its_last_flush_window() {
    let mut owned = OwnedGateway::start(options());
    let mut gw_b = owned.gw.clone();
    gw_b.url = owned.add_envoy("envoy-b");
    let api = Api::new(&owned.gw);
    let tenant = api.tenant("1000").await;
    for g in [&owned.gw, &gw_b] {
        Api::new(g)
            .send(Call::messages(&tenant.key, SONNET, false))
            .await
            .assert_ok();
    }
    let gap = Duration::from_millis(20);
    let gw = gw_b.clone();
    let t = tenant.clone();
    let traffic = tokio::spawn(async move { load(&[gw], &t, 4, 30, gap).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| owned.stack().kill("envoy-b"));
    let (served, _cut) = traffic.await.unwrap();
    // What reached the control plane: wait until nothing more arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = api.usage(tenant.account).await;
    let served_ids = served;
    let (lost, doubled) = count(&served_ids, &rows);
    // 4 callers, one request each per ~20 ms plus its time: at most one flush period (100 ms) of
    // their requests, plus one batch in flight, doubled for scheduling on 2 cores.
    let window = 4 * (2 * 100 / 20 + 2);
    eprintln!(
        "measured (Envoy SIGKILLed during a load, flush 100 ms): {} served, {} recorded, lost {lost} \
         (bound {window}), doubled {doubled}",
        served_ids.len() + 2,
        rows.len()
    );
    assert_eq!(doubled, 0);
    assert!(
        lost <= window,
        "lost {lost} debits, more than a flush window ({window})"
    );
    api.assert_ledger_invariants().await;
}
