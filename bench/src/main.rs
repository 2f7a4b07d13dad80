//! The benchmark (`cargo xtask bench [--quick | --instructions | --gateway-only | --ledger |
//! --docs]`, which runs this binary): the gateway measured against plain Envoy, a do-nothing wasm
//! filter and the host-call floor, the filter's own work, the ledger against its target, sync at
//! scale, and the filter's size. Builds in release, starts its own processes on loopback (a fresh
//! database `claudestore_bench`), prints `BENCH <name> <value> <unit>` per figure and `BENCH done`,
//! and writes `target/bench/report.md` and `report.json`; `--docs` writes `docs/performance.md`
//! from that report. [`run`] is the sequence, one function per measurement.
//!
//! `--quick` runs every measurement briefly, on debug builds (the ones the test command has just
//! built), and only checks that every figure is produced.

mod db;
mod docs;
mod gateway;
mod ingest;
mod instructions;
mod ledger;
mod own_work;
mod pin;
mod report;
mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::stack::{self, free_port, Proc, Stack, StackConfig, Upstream};

use gateway::Variant;
use report::Report;
use xtask::shell::{self, cargo, exec, output, step, Result};
use xtask::{postgres, tools};

const DATABASE: &str = "claudestore_bench";

/// How long and how much each part runs.
pub struct Plan {
    pub rounds: u32,
    pub seconds: u32,
    pub warmup_seconds: u32,
    pub stream_rounds: u32,
    pub streams_per_round: u32,
    pub ingest_spread: usize,
    pub ingest_hot: usize,
    pub sync_keys: u64,
    /// Requests counted under callgrind per configuration.
    pub counted: instructions::Counts,
    /// Where the gateway side and the ledger run while the gateway is measured (None: one CPU).
    pub cpus: Option<pin::Split>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 1,
                seconds: 1,
                warmup_seconds: 1,
                stream_rounds: 1,
                streams_per_round: 1,
                ingest_spread: 2_000,
                ingest_hot: 1_000,
                sync_keys: 5_000,
                counted: instructions::Counts {
                    warmup: 20,
                    counted: 100,
                },
                cpus: pin::Split::new(),
            }
        } else {
            Plan {
                rounds: 5,
                seconds: 8,
                warmup_seconds: 3,
                stream_rounds: 4,
                streams_per_round: 3,
                ingest_spread: 60_000,
                ingest_hot: 20_000,
                sync_keys: 100_000,
                counted: instructions::Counts {
                    warmup: 300,
                    counted: 1_000,
                },
                cpus: pin::Split::new(),
            }
        }
    }
}

fn ensure_wrk() -> Result {
    // `wrk --version` exits non-zero: being able to start it is the check.
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    exec(Command::new("apt-get").args(["install", "-y", "wrk"]))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Every value given after `flag` (a flag that may repeat: `--bin A --bin B`).
fn repeated<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w.first().is_some_and(|a| a == flag))
        .filter_map(|w| w.get(1).map(String::as_str))
        .collect()
}

/// The `name=value` pairs given after a repeatable `flag`.
fn settings<'a>(args: &'a [String], flag: &str) -> Vec<(&'a str, &'a str)> {
    repeated(args, flag)
        .into_iter()
        .filter_map(|s| s.split_once('='))
        .collect()
}

fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_le_bytes(b)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a run measures, from its arguments.
struct Options {
    /// `--quick`: the smoke mode (debug builds, every figure briefly).
    quick: bool,
    /// `--instructions`: only the instruction counts (full counts): the check of a change of the
    /// filter.
    only_instructions: bool,
    /// `--gateway-only`: only the wrk rounds (16 connections, then 1), for profiling the gateway's
    /// figures; with `--filter-set name=json` (repeatable) overriding the filter's configuration.
    only_gateway: bool,
    filter_settings: Vec<(String, Value)>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let flag = |f: &str| args.iter().any(|a| a == f);
        let filter_settings = settings(args, "--filter-set")
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_str::<Value>(v)
                    .map(|v| (k.to_owned(), v))
                    .map_err(|e| format!("--filter-set {k}: the value must be JSON: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Options {
            quick: flag("--quick"),
            only_instructions: flag("--instructions"),
            only_gateway: flag("--gateway-only"),
            filter_settings,
        })
    }
}

pub fn run(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--ledger") {
        return ingest::run(args);
    }
    if args.iter().any(|a| a == "--docs") {
        return docs::write(&shell::root());
    }
    let options = Options::parse(args)?;
    let mut plan = Plan::new(options.quick);
    let started = Instant::now();
    let mut report = start_report(options.quick);
    let envoy_bin = install()?;
    let built = build(options.quick)?;
    machine_notes(&mut report, &envoy_bin);
    wasm_size(&mut report, &built)?;
    if !options.only_instructions {
        step(
            "the filter's own work per request (native, and in V8 without Envoy)",
            || own_work::measure(&mut report, built.profile),
        )?;
    }
    let mut rig = Rig::start(&mut report, &built, &envoy_bin, options.filter_settings)?;
    if options.only_instructions {
        return count_instructions(&mut report, &plan, &rig);
    }
    let placed = place(&mut report, &mut plan, &mut rig);
    step("gateway overhead (wrk, variants rotating)", || {
        gateway::overhead(&mut report, &plan, &rig.variants(), &rig.script)
    })?;
    if options.only_gateway {
        drop(placed);
        return Ok(());
    }
    step("streaming (200 events, 5 ms apart, variants rotating)", || {
        gateway::streaming(
            &mut report,
            &plan,
            &rig.variants(),
            &built.release.join("bench-stream"),
            &rig.key,
        )
    })?;
    step("every request through the filter debited exactly once", || {
        debited_once(&mut report, &plan, &rig)
    })?;
    drop(placed);
    count_instructions(&mut report, &plan, &rig)?;
    rig.stop_comparison()?;
    // Sync at scale first: the ingest below then runs on a database that holds 100,000 accounts
    // and keys besides the gateway run's debits, as a real ledger does.
    step(&format!("sync at scale ({} keys)", plan.sync_keys), || {
        sync_at_scale(&mut report, &plan, &mut rig)
    })?;
    step("ledger ingest (POST /internal/v1/debits)", || {
        ledger_ingest(&mut report, &plan, &mut rig)
    })?;
    rig.stop()?;
    finish_report(report, &plan, started, &built.out_dir)
}

fn start_report(quick: bool) -> Report {
    let mut report = Report::default();
    report.note(
        "mode",
        if quick {
            "--quick (smoke test on debug builds: figures are produced, not meaningful)"
        } else {
            "full"
        },
    );
    report.note("load average at start (1/5/15 min)", loadavg());
    report.note(
        "cpus",
        format!(
            "{} x {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model()
        ),
    );
    report
}

/// What the run needs installed; Envoy's binary.
fn install() -> Result<PathBuf> {
    step("install rust targets", tools::ensure_rust_targets)?;
    let envoy_bin = step("install Envoy", tools::ensure_envoy)?;
    step("install wrk", ensure_wrk)?;
    step("install valgrind", instructions::ensure_valgrind)?;
    Ok(envoy_bin)
}

/// What the run built and where it writes.
struct Built {
    /// `release` for the figures, `dev` for the smoke test.
    profile: &'static str,
    /// The native binaries' directory.
    release: PathBuf,
    wasm: PathBuf,
    out_dir: PathBuf,
    work_dir: PathBuf,
}

/// The filter is always built as it ships (profile `wasm`); the rest in release, or in debug for
/// the smoke test (the builds the test command has just made: a release build of the control plane
/// and its dependencies would be most of the smoke test's time).
fn build(quick: bool) -> Result<Built> {
    let profile = if quick { "dev" } else { "release" };
    step(
        &format!("build control plane, filter and bench tools ({profile})"),
        || {
            exec(cargo().args([
                "build",
                "--profile",
                profile,
                "-p",
                "control-plane",
                "--bin",
                "control-plane",
            ]))?;
            tools::build_filters(&["filter", "noop-filter"])?;
            exec(cargo().args([
                "build",
                "--profile",
                profile,
                "-p",
                "bench",
                "--bin",
                "bench-upstream",
                "--bin",
                "bench-stream",
            ]))
        },
    )?;
    let root = shell::root();
    let out_dir = root.join("target/bench");
    let work_dir = out_dir.join("run");
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    Ok(Built {
        profile,
        release: root.join(if quick { "target/debug" } else { "target/release" }),
        wasm: root.join("target/wasm32-wasip1/wasm/filter.wasm"),
        out_dir,
        work_dir,
    })
}

fn machine_notes(report: &mut Report, envoy_bin: &Path) {
    report.note(
        "envoy",
        output(Command::new(envoy_bin).arg("--version"))
            .and_then(|v| v.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_default(),
    );
    report.note(
        "commit",
        output(
            Command::new("git")
                .current_dir(shell::root())
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_default()
        .trim(),
    );
}

fn wasm_size(report: &mut Report, built: &Built) -> Result {
    let wasm_size = std::fs::metadata(&built.wasm)
        .map_err(|e| format!("{}: {e}", built.wasm.display()))?
        .len();
    report.add(
        "wasm_size",
        wasm_size as f64,
        "bytes",
        "target/wasm32-wasip1/wasm/filter.wasm",
    );
    Ok(())
}

/// Everything the gateway measurements run against: PostgreSQL with a fresh database, the control
/// plane and Envoy with the billing filter (the stack), the same Envoy without it, with the
/// do-nothing filter and with the host-call floor, an upstream for the billing filter's Envoy and
/// one for the others, and an account with credits and a key.
struct Rig {
    database_url: String,
    stack: Stack,
    upstream: Proc,
    upstream_port: u16,
    plain_upstream: Proc,
    plain_upstream_port: u16,
    /// The Envoys of the comparison: without the filter, with the do-nothing filter, with the
    /// host-call floor (stopped after the instruction counts).
    comparison: Vec<Proc>,
    plain: Variant,
    noop: Variant,
    hostcalls: Variant,
    filter: Variant,
    envoy_bin: PathBuf,
    account_id: String,
    key: String,
    script: PathBuf,
}

impl Rig {
    fn start(
        report: &mut Report,
        built: &Built,
        envoy_bin: &Path,
        filter_settings: Vec<(String, Value)>,
    ) -> Result<Rig> {
        let pg = step("PostgreSQL", postgres::ensure)?;
        step("fresh benchmark database", || db::reset(&pg.server_url, DATABASE))?;
        let database_url = pg.database_url(DATABASE);
        // One upstream per variant (the same binary), so each counts the requests its Envoy
        // passed.
        let spawn_upstream = |name: &'static str| -> Result<(Proc, u16)> {
            let port = free_port()?;
            let mut p = Proc::spawn(
                name,
                Command::new(built.release.join("bench-upstream")).args(["--port", &port.to_string()]),
                &built.work_dir,
            )?;
            stack::wait_ready(&mut p, port, "/", Duration::from_secs(10))?;
            Ok((p, port))
        };
        let (upstream, upstream_port) = spawn_upstream("bench-upstream-filter")?;
        let (plain_upstream, plain_upstream_port) = spawn_upstream("bench-upstream-plain")?;
        let config = StackConfig {
            gateway_port: free_port()?,
            envoy_admin_port: free_port()?,
            control_port: free_port()?,
            database_url: database_url.clone(),
            admin_token: format!("bench-admin-{:x}", random_u64()),
            internal_token: format!("bench-internal-{:x}", random_u64()),
            upstream: Upstream::Url {
                url: format!("http://127.0.0.1:{upstream_port}"),
                api_key: None,
            },
            price_factor: "0.70".into(),
            fail_mode: "open".into(),
            sync_period_ms: 250,
            flush_period_ms: 500,
            envoy_bin: envoy_bin.to_owned(),
            control_plane_bin: built.release.join("control-plane"),
            fake_upstream_bin: built.release.join("fake-anthropic"),
            wasm_path: built.wasm.clone(),
            work_dir: built.work_dir.clone(),
            // One worker, as in the reference figures.
            envoy_concurrency: 1,
        };
        // wrk drives one worker far past what the ledger on the same two cores ingests at once
        // (real generations take seconds, not 80 us): a buffer large enough for a whole run keeps
        // the filter admitting; every debit is still flushed, before the next run starts, and
        // checked.
        let mut plugin_extra = serde_json::Map::new();
        plugin_extra.insert("debit_buffer_max".into(), json!(1_000_000));
        for (k, v) in filter_settings {
            report.note(&format!("filter setting {k}"), v.to_string());
            plugin_extra.insert(k, v);
        }
        let mut stack = step("start control plane and Envoy with the filter", || {
            Stack::start_with(config, plugin_extra)
        })?;
        let start = |config: EnvoyConfig| start_variant_envoy(&stack, envoy_bin, plain_upstream_port, config);
        // The do-nothing filter is the floor of any wasm filter, the host-call floor that of any
        // billing filter. All three share the plain upstream (their runs never overlap).
        let (plain_envoy, plain) = step("start the same Envoy without the filter", || {
            start(EnvoyConfig::Plain)
        })?;
        let (noop_envoy, noop) = step("start the same Envoy with a do-nothing wasm filter", || {
            start(EnvoyConfig::Noop)
        })?;
        let (hostcalls_envoy, hostcalls) =
            step("start the same Envoy with the host-call floor filter", || {
                start(EnvoyConfig::HostCalls)
            })?;
        let c = stack.config.clone();
        let filter_pid = stack
            .proc_mut("envoy")
            .map(|p| p.pid())
            .ok_or("no envoy process")?;
        let filter = Variant {
            name: EnvoyConfig::Filter.name(),
            port: c.gateway_port,
            admin_port: c.envoy_admin_port,
            pid: filter_pid,
        };
        let (account_id, key) = step("bench account with credits and a key", || bench_account(&c))?;
        let script = gateway::wrk_script(&built.work_dir, &key)?;
        Ok(Rig {
            database_url,
            stack,
            upstream,
            upstream_port,
            plain_upstream,
            plain_upstream_port,
            comparison: vec![plain_envoy, noop_envoy, hostcalls_envoy],
            plain,
            noop,
            hostcalls,
            filter,
            envoy_bin: envoy_bin.to_owned(),
            account_id,
            key,
            script,
        })
    }

    /// The four variants, in the order they rotate.
    fn variants(&self) -> [&Variant; 4] {
        [&self.plain, &self.noop, &self.hostcalls, &self.filter]
    }

    fn control_plane_pid(&mut self) -> Option<u32> {
        self.stack.proc_mut("control-plane").map(|p| p.pid())
    }

    /// The comparison's Envoys must have run to the end; they are stopped.
    fn stop_comparison(&mut self) -> Result {
        for p in &mut self.comparison {
            if !p.is_running() {
                return Err(format!("an Envoy of the comparison stopped:\n{}", p.log_tail(20)));
            }
        }
        self.comparison.clear();
        Ok(())
    }

    fn stop(mut self) -> Result {
        self.stack.healthy()?;
        drop(self.stack);
        drop(self.upstream);
        drop(self.plain_upstream);
        Ok(())
    }
}

/// While the gateway is measured, the gateway side and the ledger on their own CPUs (when the
/// plan has a split); measured unplaced, and the report says so, when they cannot be placed.
fn place(report: &mut Report, plan: &mut Plan, rig: &mut Rig) -> Option<pin::Placed> {
    let split = plan.cpus.clone()?;
    let ledger: Vec<u32> = rig.control_plane_pid().into_iter().collect();
    let gateway = [
        rig.plain.pid,
        rig.noop.pid,
        rig.hostcalls.pid,
        rig.filter.pid,
        rig.upstream.pid(),
        rig.plain_upstream.pid(),
    ];
    match step("place the ledger and the gateway side on their own CPUs", || {
        split.apply(&ledger, &gateway)
    }) {
        Ok(placed) => {
            report.note(
                "cpus while the gateway is measured",
                format!(
                    "gateway side (Envoys, upstreams, wrk, stream client) on CPU {}, ledger (control \
                     plane, PostgreSQL) on CPU {}",
                    split.gateway, split.ledger
                ),
            );
            Some(placed)
        }
        Err(e) => {
            println!("warning: processes not placed ({e}); the gateway is measured unplaced");
            report.note("cpus while the gateway is measured", format!("not placed: {e}"));
            plan.cpus = None;
            None
        }
    }
}

fn count_instructions(report: &mut Report, plan: &Plan, rig: &Rig) -> Result {
    step("instructions per request (callgrind)", || {
        instructions::measure(
            report,
            &rig.stack,
            &rig.envoy_bin,
            rig.plain_upstream_port,
            &rig.key,
            &plan.counted,
        )
    })
}

fn debited_once(report: &mut Report, plan: &Plan, rig: &Rig) -> Result {
    // Each wrk run through the filter can cut one request per connection.
    let cut_bound = f64::from((1 + plan.rounds) * 16 + plan.rounds);
    check_gateway_debits(
        report,
        &rig.filter,
        rig.upstream_port,
        cut_bound,
        &rig.database_url,
        &rig.account_id,
    )
}

fn sync_at_scale(report: &mut Report, plan: &Plan, rig: &mut Rig) -> Result {
    let c = rig.stack.config.clone();
    let scale = sync::Scale {
        control_port: c.control_port,
        admin_token: &c.admin_token,
        internal_token: &c.internal_token,
        database_url: &rig.database_url,
        envoy_admin_port: c.envoy_admin_port,
        envoy_pid: rig.filter.pid,
        sync_period_ms: c.sync_period_ms,
    };
    scale.run(report, plan.sync_keys)
}

fn ledger_ingest(report: &mut Report, plan: &Plan, rig: &mut Rig) -> Result {
    let c = rig.stack.config.clone();
    let database_url = rig.database_url.clone();
    let ingest = ledger::Ingest {
        control_port: c.control_port,
        internal_token: &c.internal_token,
        database_url: &database_url,
        // The filter's default `debit_batch_max`.
        batch: 1_000,
        senders: 4,
        run_id: random_u64(),
        control_plane_pid: rig.control_plane_pid(),
    };
    db::bulk_accounts(&database_url, "ingest", 1_000)?;
    db::bulk_accounts(&database_url, "hot", 1)?;
    let spread_accounts = db::fixture(&database_url, "ingest")?;
    let hot_account = db::fixture(&database_url, "hot")?;
    let spread = ingest.run(1, &spread_accounts, plan.ingest_spread)?;
    let hot = ingest.run(2, &hot_account, plan.ingest_hot)?;
    // The same spread load in the filter's former default batches (200): how much of the cost is
    // per transaction rather than per debit.
    let small = ledger::Ingest { batch: 200, ..ingest };
    let spread_small = small.run(3, &spread_accounts, plan.ingest_spread)?;
    report.add(
        "ledger_debits_per_s_spread",
        spread.debits_per_s,
        "debits/s",
        &format!(
            "{} debits over 1,000 accounts, batches of 1,000 from 4 connections",
            plan.ingest_spread
        ),
    );
    report.add(
        "ledger_debits_per_s_hot",
        hot.debits_per_s,
        "debits/s",
        &format!(
            "{} debits on one account, batches of 1,000 from 4 connections",
            plan.ingest_hot
        ),
    );
    report.add(
        "ledger_pg_cpu_per_debit_spread",
        spread.pg_cpu_us,
        "us",
        "PostgreSQL CPU (all its processes) per debit in the spread run",
    );
    report.add(
        "ledger_control_plane_cpu_per_debit_spread",
        spread.control_plane_cpu_us,
        "us",
        "control plane CPU per debit in the spread run",
    );
    report.add(
        "ledger_debits_per_s_spread_batch_200",
        spread_small.debits_per_s,
        "debits/s",
        "the spread run again in batches of 200",
    );
    let once = spread.exactly_once && hot.exactly_once && spread_small.exactly_once;
    report.add("ledger_exactly_once", if once { 1.0 } else { 0.0 }, "bool", "count and sum of usage records, transfers, entries and balances match what was sent; a replayed batch changes nothing");
    Ok(())
}

fn finish_report(mut report: Report, plan: &Plan, started: Instant, out_dir: &Path) -> Result {
    report.note("load average at end (1/5/15 min)", loadavg());
    report.note("wall time", format!("{:.0} s", started.elapsed().as_secs_f64()));
    report.method = method(plan);
    report.write(out_dir)?;
    println!("\nreport: {}", out_dir.join("report.md").display());
    for (name, target, value, met) in report.outcomes() {
        let v = value
            .map(report::format_value)
            .unwrap_or_else(|| "missing".into());
        println!(
            "target {name} {target}: {v} {}",
            if met { "met" } else { "NOT MET" }
        );
    }
    let missing = report.missing();
    if !missing.is_empty() {
        return Err(format!("figures missing from the run: {}", missing.join(", ")));
    }
    println!("BENCH done");
    Ok(())
}

/// Renders the template exactly as the stack did, on other ports (listener, admin), with another
/// wasm module in the billing filter's place, or without the filter when `wasm` is `None`.
/// Which configuration an Envoy of the comparison runs: every one is rendered from
/// `envoy/envoy.yaml` with the stack's plugin configuration; only the filter entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoyConfig {
    /// The billing filter's `http_filters` entry cut out.
    Plain,
    /// The do-nothing wasm filter in its place.
    Noop,
    /// The same module in its place, configured to make only the host calls billing needs
    /// (`bench/noop-filter`): the floor of any billing filter.
    HostCalls,
    /// The billing filter, as the stack's Envoy runs it.
    Filter,
}

impl EnvoyConfig {
    /// The variant's name in figure names.
    pub fn name(self) -> &'static str {
        match self {
            EnvoyConfig::Plain => "plain",
            EnvoyConfig::Noop => "noop",
            EnvoyConfig::HostCalls => "hostcalls",
            EnvoyConfig::Filter => "filter",
        }
    }
}

/// Writes the configuration of `config` listening on `port` (admin `admin`) in front of
/// `upstream_port` as `<work dir>/<name>.yaml`.
pub fn render_variant(
    stack: &Stack,
    config: EnvoyConfig,
    name: &str,
    upstream_port: u16,
    (port, admin): (u16, u16),
) -> Result<std::path::PathBuf> {
    let c = &stack.config;
    let template_path = shell::root().join("envoy/envoy.yaml");
    let template =
        std::fs::read_to_string(&template_path).map_err(|e| format!("{}: {e}", template_path.display()))?;
    let plugin = match config {
        EnvoyConfig::HostCalls => "host-calls".to_owned(),
        _ => serde_json::to_string(&stack.plugin_config()).map_err(|e| e.to_string())?,
    };
    let wasm = match config {
        EnvoyConfig::Noop | EnvoyConfig::HostCalls => {
            shell::root().join("target/wasm32-wasip1/wasm/noop_filter.wasm")
        }
        EnvoyConfig::Plain | EnvoyConfig::Filter => c.wasm_path.clone(),
    };
    let values = BTreeMap::from([
        ("GATEWAY_PORT", port.to_string()),
        ("ENVOY_ADMIN_PORT", admin.to_string()),
        ("CONTROL_PORT", c.control_port.to_string()),
        ("CONTROL_EXTRA_ENDPOINTS", String::new()),
        ("UPSTREAM_HOST", "127.0.0.1".to_owned()),
        ("UPSTREAM_PORT", upstream_port.to_string()),
        ("UPSTREAM_TLS", "false".to_owned()),
        ("WASM_PATH", wasm.display().to_string()),
        (
            "PLUGIN_CONFIG",
            serde_json::to_string(&plugin).map_err(|e| e.to_string())?,
        ),
    ]);
    let rendered = stack::render(&template, &values)?;
    let rendered = match config {
        EnvoyConfig::Plain => gateway::without_filter(&rendered)?,
        EnvoyConfig::Noop | EnvoyConfig::HostCalls | EnvoyConfig::Filter => rendered,
    };
    let file = c.work_dir.join(format!("{name}.yaml"));
    std::fs::write(&file, rendered).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

/// Envoy's arguments for a rendered configuration: the same flags as the stack's Envoy.
pub fn envoy_args(stack: &Stack, file: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        file.display().to_string(),
        "--concurrency".into(),
        stack.config.envoy_concurrency.to_string(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warn".into(),
        "--component-log-level".into(),
        "wasm:info".into(),
    ]
}

/// Starts an Envoy of the comparison on ports of its own; the process and how the gateway runs
/// reach it.
fn start_variant_envoy(
    stack: &Stack,
    envoy: &Path,
    upstream_port: u16,
    config: EnvoyConfig,
) -> Result<(Proc, Variant)> {
    let (port, admin_port) = (free_port()?, free_port()?);
    // Process names are static (`Proc`); also the names of the rendered file and the log.
    let name = match config {
        EnvoyConfig::Plain => "envoy-plain",
        EnvoyConfig::Noop => "envoy-noop",
        EnvoyConfig::HostCalls => "envoy-hostcalls",
        EnvoyConfig::Filter => "envoy-filter",
    };
    let file = render_variant(stack, config, name, upstream_port, (port, admin_port))?;
    let mut p = Proc::spawn(
        name,
        Command::new(envoy).args(envoy_args(stack, &file)),
        &stack.config.work_dir,
    )?;
    stack::wait_ready(&mut p, admin_port, "/ready", Duration::from_secs(60))?;
    let variant = Variant {
        name: config.name(),
        port,
        admin_port,
        pid: p.pid(),
    };
    Ok((p, variant))
}

/// An account with plenty of credits and a key, made through the admin API; returns the account
/// id and the key once a request with it passes the filter.
fn bench_account(c: &StackConfig) -> Result<(String, String)> {
    let admin = Some(c.admin_token.as_str());
    let call = |method: &str, path: &str, body: Value| -> Result<Value> {
        let (status, text) = stack::http_json(method, c.control_port, path, admin, Some(&body))?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    };
    let account = call(
        "POST",
        "/v1/accounts",
        json!({"name": "Bench", "email": "bench@example.com"}),
    )?;
    let id = account["id"].as_str().ok_or("account without id")?.to_owned();
    call(
        "POST",
        &format!("/v1/accounts/{id}/credits"),
        json!({"credits": "100000000", "reason": "benchmark", "idempotency_key": format!("bench-{id}")}),
    )?;
    let key = call(
        "POST",
        &format!("/v1/accounts/{id}/keys"),
        json!({"name": "bench"}),
    )?["key"]
        .as_str()
        .ok_or("key response without key")?
        .to_owned();
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) =
            stack::http_json("POST", c.gateway_port, "/v1/messages", Some(&key), Some(&body))?;
        if status == 200 {
            return Ok((id, key));
        }
        if Instant::now() > deadline {
            return Err(format!("the bench key is not admitted: {status} {text}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After the load: the filter flushes everything, and the database holds one usage record per
/// request that reached the upstream through the filter (counted by the upstream), no more, no
/// fewer, each once, and the account's balance is the grant minus their cost.
fn check_gateway_debits(
    report: &mut Report,
    filter: &Variant,
    upstream_port: u16,
    cut_bound: f64,
    database_url: &str,
    account_id: &str,
) -> Result {
    let acked = gateway::wait_flushed(filter.admin_port, Duration::from_secs(120))?;
    let finalised = gateway::envoy_stat(filter.admin_port, "wasmcustom.claudestore.debits.finalised");
    let (status, answered) = stack::http_json("GET", upstream_port, "/__bench/count", None, None)?;
    let answered: f64 = match status {
        200 => answered
            .trim()
            .parse()
            .map_err(|_| format!("bad upstream count {answered:?}"))?,
        _ => return Err(format!("upstream count answered {status}")),
    };
    let (rows, distinct) = {
        let r = db::psql(
            database_url,
            &format!("SELECT count(*), count(DISTINCT debit_id) FROM usage_records WHERE account_id = '{account_id}'"),
        )?;
        let mut it = r.split('|').map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
        (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN))
    };
    let balance_ok = db::psql(
        database_url,
        &format!(
            "SELECT l.balance = 100000000 - (SELECT sum(cost) FROM usage_records WHERE account_id = '{account_id}')
             FROM ledger_accounts l WHERE l.id = '{account_id}'"
        ),
    )? == "t";
    println!("  upstream answered {answered}, debits finalised {finalised}, acked {acked}, usage records {rows} ({distinct} distinct), balance consistent: {balance_ok}");
    report.add(
        "gateway_debits_recorded",
        rows,
        "debits",
        "usage records of the bench account after the gateway runs",
    );
    // wrk stops with requests in flight: a request whose caller went away before the upstream's
    // answer reached the filter has no usage to bill (at most the connections of each wrk run).
    let cut = answered - rows;
    report.add("gateway_requests_cut_unbilled", cut, "requests", &format!("answered by the upstream but cut by wrk's stop before the answer reached the filter (bound: {cut_bound})"));
    let once = rows == distinct
        && finalised == rows
        && acked == rows
        && balance_ok
        && (0.0..=cut_bound).contains(&cut);
    report.add("gateway_debits_exactly_once", if once { 1.0 } else { 0.0 }, "bool", "usage records = debits finalised = debits acknowledged, all distinct, the balance is the grant minus their cost, and every upstream answer is recorded but those cut by wrk's stop");
    Ok(())
}

fn method(plan: &Plan) -> Vec<String> {
    vec![
        format!(
            "**Gateway overhead.** Two Envoy 1.40 processes rendered from the same `envoy/envoy.yaml`, one with the billing \
             filter and one with its `http_filters` entry cut out (nothing else differs), each `--concurrency 1`, in front of \
             the same `bench-upstream` (bench/src/bin: a thread-per-connection HTTP/1.1 server answering a prebuilt \
             Anthropic message with usage; no framework, so it is never the bottleneck). Load: Debian's wrk, one thread, \
             `POST /v1/messages` with a valid key of an account with credits, so every filtered request is admitted, \
             metered, and debited (the debits flush to the control plane during the runs and are checked in the \
             database afterwards). The filter runs with `debit_buffer_max` 1,000,000 so a whole run fits in its \
             buffer (the ledger sharing these two cores ingests fewer debits per second than one worker serves \
             80 us requests), and each run starts only after the previous run's debits are flushed: the flush \
             that overlaps a filtered run counts against it, the rest against neither variant. Four variants of the same configuration: no filter, a do-nothing Rust wasm filter \
             (bench/noop-filter, loaded like the billing filter: the floor of any Proxy-Wasm filter), the same module \
             configured `host-calls` (the host-call floor: only the host calls any filter billing by the contract \
             makes per request, the request's and the response's header maps, the request body held to its end \
             and read, each response body chunk read, the key and accept-encoding edits, the \
             `x-claudestore-request-id` header, two clock reads; nothing parsed, nothing debited: the floor of any \
             billing filter) and the billing filter. {} rounds of {} s per variant and per concurrency (16, then 1), the order rotated by one each \
             round; each figure is the median over rounds, the ratios and the added latencies are medians of \
             per-round pairs. Envoy CPU per request is the Envoy process's user + system time from \
             /proc over the run divided by the requests served. CPUs (on a machine with two or more): while the \
             gateway is measured (overhead, streaming), every process of the gateway side (the Envoys, the \
             upstreams, wrk, the stream client) runs on the first CPUs and the ledger (the control plane and every \
             PostgreSQL process) on the last one, as on production machines where the ledger runs elsewhere: \
             only the billing filter's runs make the ledger work (~100 us of CPU per debit), and unplaced, its work \
             and the scheduler's delays would count against the filter alone.",
            plan.rounds, plan.seconds
        ),
        format!(
            "**Streaming.** `bench-stream` (bench/src/bin) sends a streaming request; the upstream sends 200 SSE events \
             5 ms apart, each text delta stamped with its send time (wall clock, ns); the client subtracts the stamp \
             from its receive time. {} rounds x {} streams per variant (the four variants above), rotating; figures are medians over rounds of \
             per-round percentiles.",
            plan.stream_rounds, plan.streams_per_round
        ),
        "**Ledger ingest.** Run last, on a database that already holds the gateway run's debits and the sync \
         run's 100,000 accounts and keys. 1,000 accounts with a key each (plus one hot account) are written by SQL; debit batches of \
         1,000 (the filter's default `debit_batch_max`; also 200) are built before the clock starts and sent by 4 keep-alive \
         connections to `POST /internal/v1/debits` of the release control plane; answers are parsed after the clock \
         stops. Checked afterwards: every debit applied at one cost; in the database the count and sum of usage \
         records, transfers and entries equal what was sent, the accounts' balances fall by exactly that sum, and \
         replaying a batch answers `duplicate` and changes nothing."
            .into(),
        "**The filter's own work.** The `request_path` measurement (`filter-core/src/request/flow/tests.rs`) runs 20,000 billed requests through the \
         filter's code without Envoy (header decision, key hash, admission, body plan, response metering, pricing, \
         local spend, and each debit's share of a batch of 1,000: encoding, answer, settlement) against in-memory \
         shared data: once natively (release) and once compiled to wasm32-wasip1 (release) in Node's V8 with \
         `--no-liftoff` (TurboFan only, as Envoy's V8 compiles modules). Set beside the Envoy CPU per request \
         the filter adds, it separates our code from the host calls and Envoy's own work."
            .into(),
        format!(
            "**Instructions per request.** The four configurations again, each Envoy under `valgrind \
             --tool=callgrind --smc-check=all-non-file` (every instruction of the process: Envoy's, V8's and the \
             JIT-compiled wasm), in front of the same upstream; {} requests warm it up uninstrumented (`--instr-atstart=no`), then the counting is switched on and \
             {} `POST /v1/messages` are sent one after another on one keep-alive connection before the counters are \
             dumped. The count repeats within about 2% from run to run (timers and the filter's tick run in the \
             window too; one Envoy is counted at a time), where CPU time on this shared VM moves by 10% and more between rounds: \
             the figure to compare changes of the filter by. The billing filter's Envoy is drained before it stops, \
             so its debits reach the ledger.",
            plan.counted.warmup, plan.counted.counted
        ),
        "**Sync at scale.** The keys are written by SQL in one transaction (one sync version, as an import would). \
         The running filter's leader pulls them as a delta of pages of 500 rows (its default page size); Envoy's VmRSS is \
         read before, and after the page count stops growing. The full snapshot is then fetched page by page (500 \
         rows per page, as the filter does); 100 keys are revoked through `DELETE /v1/keys/{id}`, and the delta since \
         the version before them is fetched."
            .into(),
        "**Load.** The machine is shared; the load average at the start and end of the run is above. Alternating \
         the variants and taking medians cancels slow drift, not bursts."
            .into(),
    ]
}
