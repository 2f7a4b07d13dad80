//! Gateway overhead: the same Envoy configuration without a filter, with a do-nothing wasm filter
//! (the floor of any Proxy-Wasm filter) and with the billing filter, in front of the same bench
//! upstream, under wrk (fixed connections) and the bench stream client; the order of the variants
//! rotates round by round and each figure is the median over rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::report::{median, percentile, Report};
use crate::Plan;
use xtask::shell::{output, Result};

/// One Envoy to measure: its listener, admin port and process id.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub name: &'static str,
    pub port: u16,
    pub admin_port: u16,
    pub pid: u32,
}

/// What one wrk run reports.
#[derive(Debug, Default, Clone)]
pub struct WrkRun {
    pub rps: f64,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// From the script's `done` hook (wrk's `--latency` table stops at 99%).
    pub p999_us: f64,
    pub bad: u64,
    /// Envoy CPU (user + system) over the run, microseconds.
    pub envoy_cpu_us: f64,
}

/// The removed block when rendering the variant without the filter: from the billing filter's
/// entry up to the router, both in `http_filters`.
const FILTER_START: &str = "          - name: claudestore.billing\n";
const FILTER_END: &str = "          - name: envoy.filters.http.router\n";

/// The rendered configuration without the billing filter: every other line is the same.
pub fn without_filter(rendered: &str) -> Result<String> {
    let start = rendered
        .find(FILTER_START)
        .ok_or("envoy/envoy.yaml: the billing filter entry was not found (bench needs updating)")?;
    let end = rendered
        .find(FILTER_END)
        .filter(|e| *e > start)
        .ok_or("envoy/envoy.yaml: the router entry after the billing filter was not found")?;
    Ok(format!(
        "{}{}",
        rendered.get(..start).unwrap_or_default(),
        rendered.get(end..).unwrap_or_default()
    ))
}

pub fn wrk_script(dir: &Path, key: &str) -> Result<PathBuf> {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hello, how are you today?"}]}"#;
    let script = format!(
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"anthropic-version\"] = \"2023-06-01\"\nwrk.headers[\"x-api-key\"] = \"{key}\"\n\
         done = function(summary, latency, requests)\n  io.write(string.format(\"p99.9 %dus\\n\", latency:percentile(99.9)))\nend\n"
    );
    let path = dir.join("bench-request.lua");
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The process's CPU time so far (user + system), microseconds.
pub fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_us(&stat).unwrap_or(0.0)
}

/// User + system CPU time in a `/proc/<pid>/stat` line, microseconds.
pub fn stat_cpu_us(stat: &str) -> Option<f64> {
    // Fields after the command name (which may contain spaces) start at state: utime is 14th
    // overall, i.e. the 12th after the closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.len() == 2).then(|| f.iter().sum::<f64>() * 1e6 / clock_ticks())
}

/// Clock ticks per second of `/proc` CPU times (asked once).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        output(Command::new("getconf").arg("CLK_TCK"))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn wrk_duration_us(v: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun {
        // Missing unless the script's hook printed it: the report then names the figure missing.
        p999_us: f64::NAN,
        ..WrkRun::default()
    };
    for line in text.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => run.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => run.p50_us = wrk_duration_us(v).unwrap_or(f64::NAN),
            ["99%", v] => run.p99_us = wrk_duration_us(v).unwrap_or(f64::NAN),
            ["p99.9", v] => run.p999_us = wrk_duration_us(v).unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => run.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.bad += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", ..] => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                run.bad += words
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if !run.rps.is_finite() || run.requests == 0 {
        return Err(format!("wrk reported no requests:\n{text}"));
    }
    Ok(run)
}

/// A load generator or client on the gateway side's CPUs when the run places processes.
fn client(plan: &Plan, program: &Path) -> Command {
    match &plan.cpus {
        Some(split) => split.on_gateway(program),
        None => Command::new(program),
    }
}

pub fn wrk(plan: &Plan, v: &Variant, script: &Path, connections: u32, seconds: u32) -> Result<WrkRun> {
    let url = format!("http://127.0.0.1:{}/v1/messages", v.port);
    let mut cmd = client(plan, Path::new("wrk"));
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
        "-s",
    ])
    .arg(script)
    .arg(&url);
    let cpu_before = cpu_us(v.pid);
    let out = cmd.output().map_err(|e| format!("cannot run wrk: {e}"))?;
    let cpu_after = cpu_us(v.pid);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut run = parse_wrk(&text)?;
    run.envoy_cpu_us = cpu_after - cpu_before;
    // The filter's backlog of debits drains before anything else runs, so no run competes with
    // the previous one's flush.
    if envoy_stat(v.admin_port, "wasmcustom.claudestore.debits.finalised") > 0.0 {
        wait_drained(v.admin_port, Duration::from_secs(300))?;
    }
    if run.bad > 0 {
        return Err(format!(
            "{}: {} failed requests in a wrk run (a refused request is no measure):\n{text}",
            v.name, run.bad
        ));
    }
    Ok(run)
}

/// The order of the variants in a round: rotated by one each round, so none always follows another.
fn rotated<'a>(variants: &[&'a Variant], round: u32) -> Vec<&'a Variant> {
    let n = variants.len().max(1);
    let k = usize::try_from(round).unwrap_or(0) % n;
    variants
        .iter()
        .cycle()
        .skip(k)
        .take(variants.len())
        .copied()
        .collect()
}

/// Figure names per variant: the billing filter keeps the plain names the targets use; other
/// variants get their name as a suffix.
fn suffixed(base: &str, v: &Variant) -> String {
    if v.name == "filter" {
        base.to_owned()
    } else {
        format!("{base}_{}", v.name)
    }
}

/// Throughput and latency rounds over every variant (the first is the baseline without a filter),
/// in rotating order, each variant warmed first.
pub fn overhead(report: &mut Report, plan: &Plan, variants: &[&Variant], script: &Path) -> Result {
    let [_, others @ ..] = variants else {
        return Err("no variant to measure".into());
    };
    for v in variants {
        wrk(plan, v, script, 16, plan.warmup_seconds)?;
    }
    // Per variant (in `variants` order): runs of each round.
    let mut c16: Vec<Vec<WrkRun>> = vec![Vec::new(); variants.len()];
    for round in 0..plan.rounds {
        for v in rotated(variants, round) {
            let r = wrk(plan, v, script, 16, plan.seconds)?;
            println!(
                "  c16 round {round} {}: {:.0} req/s, p50 {:.0} us, p99 {:.0} us, envoy {:.1} us CPU/req",
                v.name,
                r.rps,
                r.p50_us,
                r.p99_us,
                r.envoy_cpu_us / r.requests as f64
            );
            if let Some(i) = variants.iter().position(|x| x.name == v.name) {
                if let Some(runs) = c16.get_mut(i) {
                    runs.push(r);
                }
            }
        }
    }
    let cpu = |r: &WrkRun| r.envoy_cpu_us / r.requests as f64;
    let column = |i: usize, f: &dyn Fn(&WrkRun) -> f64| -> Vec<f64> {
        c16.get(i)
            .map(|runs| runs.iter().map(f).collect())
            .unwrap_or_default()
    };
    // Per round, one variant's figure against another's (the same round, so drift cancels).
    let paired = |i: usize, j: usize, f: &dyn Fn(&WrkRun, &WrkRun) -> f64| -> Vec<f64> {
        match (c16.get(i), c16.get(j)) {
            (Some(a), Some(b)) => a.iter().zip(b).map(|(a, b)| f(a, b)).collect(),
            _ => Vec::new(),
        }
    };
    for (i, v) in variants.iter().enumerate() {
        let who = if i == 0 {
            "Envoy without any filter".to_owned()
        } else {
            format!("Envoy with the {} filter", describe(v))
        };
        let name = |base: &str| {
            if i == 0 {
                format!("{base}_plain")
            } else {
                format!("{base}_{}", v.name)
            }
        };
        report.add(
            &name("gateway_c16_rps"),
            median(&column(i, &|r| r.rps)),
            "req/s",
            &format!("{who}, 16 connections"),
        );
        report.add(
            &name("gateway_c16_p50"),
            median(&column(i, &|r| r.p50_us)),
            "us",
            &format!("latency p50 at 16 connections, {who}"),
        );
        report.add(
            &name("gateway_c16_p99"),
            median(&column(i, &|r| r.p99_us)),
            "us",
            &format!("latency p99 at 16 connections, {who}"),
        );
        report.add(
            &name("envoy_cpu_per_request"),
            median(&column(i, &cpu)),
            "us",
            &format!("Envoy process CPU (user+system, /proc) per request at 16 connections, {who}"),
        );
    }
    for (j, v) in others.iter().enumerate() {
        let j = j + 1;
        report.add(
            &suffixed("gateway_c16_rps_ratio", v),
            median(&paired(j, 0, &|b, a| b.rps / a.rps)),
            "ratio",
            &format!(
                "with the {} filter / without, median of the per-round ratios",
                describe(v)
            ),
        );
        report.add(
            &format!("{}_cpu_per_request", v.name),
            median(&paired(j, 0, &|b, a| cpu(b) - cpu(a))),
            "us",
            &format!(
                "Envoy CPU per request added by the {} filter (median of per-round differences)",
                describe(v)
            ),
        );
    }
    let position = |name: &str| variants.iter().position(|v| v.name == name);
    if let (Some(noop), Some(filter)) = (position("noop"), position("filter")) {
        report.add(
            "filter_cpu_above_noop",
            median(&paired(filter, noop, &|b, a| cpu(b) - cpu(a))),
            "us",
            "Envoy CPU per request of the billing filter above the do-nothing wasm filter: the \
             filter's own work and host calls (median of per-round differences)",
        );
    }
    if let (Some(floor), Some(filter)) = (position("hostcalls"), position("filter")) {
        report.add(
            "filter_cpu_above_hostcalls",
            median(&paired(filter, floor, &|b, a| cpu(b) - cpu(a))),
            "us",
            "Envoy CPU per request of the billing filter above the host-call floor: its own code \
             and the host calls beyond those billing needs (median of per-round differences)",
        );
    }

    let mut c1: Vec<Vec<WrkRun>> = vec![Vec::new(); variants.len()];
    for round in 0..plan.rounds {
        for v in rotated(variants, round) {
            let r = wrk(plan, v, script, 1, plan.seconds)?;
            println!(
                "  c1 round {round} {}: {:.0} req/s, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
                v.name, r.rps, r.p50_us, r.p99_us, r.p999_us
            );
            if let Some(i) = variants.iter().position(|x| x.name == v.name) {
                if let Some(runs) = c1.get_mut(i) {
                    runs.push(r);
                }
            }
        }
    }
    for (i, v) in variants.iter().enumerate() {
        let (name, who) = if i == 0 {
            ("plain", "without any filter".to_owned())
        } else {
            (v.name, format!("with the {} filter", describe(v)))
        };
        let runs = c1.get(i).cloned().unwrap_or_default();
        report.add(
            &format!("gateway_c1_p50_{name}"),
            median(&runs.iter().map(|r| r.p50_us).collect::<Vec<_>>()),
            "us",
            &format!("latency p50 at 1 connection, {who}"),
        );
        report.add(
            &format!("gateway_c1_p99_{name}"),
            median(&runs.iter().map(|r| r.p99_us).collect::<Vec<_>>()),
            "us",
            &format!("latency p99 at 1 connection, {who}"),
        );
        if i == 0 {
            continue;
        }
        let base_runs = c1.first().cloned().unwrap_or_default();
        let added = |f: fn(&WrkRun) -> f64| -> Vec<f64> {
            runs.iter().zip(&base_runs).map(|(b, a)| f(b) - f(a)).collect()
        };
        report.add(
            &suffixed("gateway_c1_p50_added", v),
            median(&added(|r| r.p50_us)),
            "us",
            &format!(
                "p50 added by the {} filter (median of per-round differences)",
                describe(v)
            ),
        );
        report.add(
            &suffixed("gateway_c1_p99_added", v),
            median(&added(|r| r.p99_us)),
            "us",
            &format!(
                "p99 added by the {} filter (median of per-round differences)",
                describe(v)
            ),
        );
        report.add(
            &suffixed("gateway_c1_p999_added", v),
            median(&added(|r| r.p999_us)),
            "us",
            &format!(
                "p99.9 added by the {} filter (median of per-round differences; no target: shows where \
                 the rarer stalls of the worker, e.g. a debit batch, land)",
                describe(v)
            ),
        );
    }
    Ok(())
}

/// How the report names a variant's filter.
fn describe(v: &Variant) -> &'static str {
    match v.name {
        "filter" => "billing",
        "noop" => "do-nothing wasm",
        "hostcalls" => "host-call floor",
        _ => "other",
    }
}

/// What the stream client measured over some streams.
#[derive(Default)]
struct StreamRun {
    ttfb_us: Vec<f64>,
    total_us: Vec<f64>,
    event_us: Vec<f64>,
}

fn stream_client(plan: &Plan, bin: &Path, v: &Variant, key: &str) -> Result<StreamRun> {
    let streams = plan.streams_per_round;
    let out = client(plan, bin)
        .args([
            "--port",
            &v.port.to_string(),
            "--streams",
            &streams.to_string(),
            "--key",
            key,
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{}: stream client failed: {}",
            v.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut run = StreamRun::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((k, n)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ns) = n.parse::<f64>() else {
            continue;
        };
        match k {
            "ttfb_ns" => run.ttfb_us.push(ns / 1e3),
            "total_ns" => run.total_us.push(ns / 1e3),
            "event_ns" => run.event_us.push(ns / 1e3),
            _ => {}
        }
    }
    if run.event_us.is_empty() {
        return Err(format!("{}: the stream client measured no event", v.name));
    }
    Ok(run)
}

/// Streams of 200 events 5 ms apart through each variant (the first is the baseline without a
/// filter), in rotating order.
pub fn streaming(
    report: &mut Report,
    plan: &Plan,
    variants: &[&Variant],
    client: &Path,
    key: &str,
) -> Result {
    // Per variant (in `variants` order): the run of each round.
    let mut runs: Vec<Vec<StreamRun>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..plan.stream_rounds {
        for v in rotated(variants, round) {
            let r = stream_client(plan, client, v, key)?;
            println!(
                "  stream round {round} {}: ttfb {:.0} us, event p50 {:.1} us, p99 {:.1} us ({} events)",
                v.name,
                median(&r.ttfb_us),
                percentile(&r.event_us, 50.0),
                percentile(&r.event_us, 99.0),
                r.event_us.len()
            );
            if let Some(i) = variants.iter().position(|x| x.name == v.name) {
                if let Some(list) = runs.get_mut(i) {
                    list.push(r);
                }
            }
        }
    }
    let base = runs.first().map(Vec::as_slice).unwrap_or_default();
    for (i, v) in variants.iter().enumerate() {
        let list = runs.get(i).map(Vec::as_slice).unwrap_or_default();
        let (name, who) = if i == 0 {
            ("plain", "without any filter".to_owned())
        } else {
            (v.name, format!("with the {} filter", describe(v)))
        };
        let ttfb: Vec<f64> = list.iter().flat_map(|r| r.ttfb_us.iter().copied()).collect();
        report.add(
            &format!("stream_ttfb_p50_{name}"),
            median(&ttfb),
            "us",
            &format!("time to the first response byte of a 200-event stream, {who}"),
        );
        let p = |q: f64| -> Vec<f64> { list.iter().map(|r| percentile(&r.event_us, q)).collect() };
        report.add(
            &format!("stream_event_p50_{name}"),
            median(&p(50.0)),
            "us",
            &format!("upstream send to client receive per event, p50, {who}"),
        );
        report.add(
            &format!("stream_event_p99_{name}"),
            median(&p(99.0)),
            "us",
            &format!("per event p99, {who}"),
        );
        if i == 0 {
            continue;
        }
        let added = |q: f64| -> Vec<f64> {
            list.iter()
                .zip(base)
                .map(|(b, a)| percentile(&b.event_us, q) - percentile(&a.event_us, q))
                .collect()
        };
        report.add(
            &suffixed("stream_event_p50_added", v),
            median(&added(50.0)),
            "us",
            &format!(
                "p50 added per event by the {} filter (median of per-round differences)",
                describe(v)
            ),
        );
        report.add(
            &suffixed("stream_event_p99_added", v),
            median(&added(99.0)),
            "us",
            &format!(
                "p99 added per event by the {} filter (median of per-round differences)",
                describe(v)
            ),
        );
        if v.name != "filter" {
            continue;
        }
        let total: Vec<f64> = list.iter().flat_map(|r| r.total_us.iter().copied()).collect();
        report.add(
            "stream_duration_p50_filter",
            median(&total),
            "us",
            "the whole stream with the filter (the upstream sends for 200 x 5 ms)",
        );
        let before = ttfb.iter().zip(&total).all(|(t, d)| t * 4.0 < *d) && !ttfb.is_empty();
        report.add(
            "stream_first_byte_before_end",
            if before { 1.0 } else { 0.0 },
            "bool",
            "1 when every filtered stream's first byte came in its first quarter (nothing buffered)",
        );
    }
    Ok(())
}

/// A counter or gauge from Envoy's admin `/stats`, 0 when absent.
pub fn envoy_stat(admin_port: u16, name: &str) -> f64 {
    let path = format!("/stats?filter=^{name}$");
    match tests::stack::http_json("GET", admin_port, &path, None, None) {
        Ok((200, text)) => text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Waits until the filter's debit buffer is empty.
fn wait_drained(admin_port: u16, timeout: Duration) -> Result {
    let deadline = std::time::Instant::now() + timeout;
    while envoy_stat(admin_port, "wasmcustom.claudestore.debit_buffer.size") > 0.0 {
        if std::time::Instant::now() > deadline {
            return Err(format!("the filter's debit buffer did not drain in {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits until the filter has no debit left to flush (acked = finalised), or `timeout`.
pub fn wait_flushed(admin_port: u16, timeout: Duration) -> Result<f64> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let finalised = envoy_stat(admin_port, "wasmcustom.claudestore.debits.finalised");
        let acked = envoy_stat(admin_port, "wasmcustom.claudestore.debits.acked");
        let buffered = envoy_stat(admin_port, "wasmcustom.claudestore.debit_buffer.size");
        if finalised > 0.0 && acked >= finalised && buffered == 0.0 {
            return Ok(acked);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the filter did not flush its debits in {timeout:?}: finalised {finalised}, acked {acked}, buffered {buffered}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
