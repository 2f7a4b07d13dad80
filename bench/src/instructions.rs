//! Instructions per request: each Envoy of the comparison (no filter, the do-nothing wasm filter,
//! the host-call floor, the billing filter) run under `valgrind --tool=callgrind`, which counts
//! every instruction the process executes (Envoy's, V8's and the JIT-compiled wasm alike), for a
//! fixed number of requests sent one after another on one keep-alive connection. Unlike CPU time
//! on a shared VM, the count repeats from run to run within about 2% (timers and the filter's tick
//! run during the window too), so that a change of the filter shows as a number.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::stack::{self, free_port, Proc, Stack};

use crate::ledger::Conn;
use crate::report::Report;
use crate::{envoy_args, render_variant, EnvoyConfig};
use xtask::shell::Result;
use xtask::tools;

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hello, how are you today?"}]}"#;

/// How many requests warm each Envoy up before the count starts, and how many are counted.
pub struct Counts {
    pub warmup: usize,
    pub counted: usize,
}

pub fn ensure_valgrind() -> Result {
    if Command::new("valgrind").arg("--version").output().is_ok() {
        return Ok(());
    }
    tools::ensure_debian_packages(&["valgrind"])
}

fn send(port: u16, key: &str, n: usize) -> Result {
    let mut conn = Conn::open(port)?;
    for _ in 0..n {
        let (status, body) = conn.post("/v1/messages", key, BODY)?;
        if status != 200 {
            return Err(format!("a counted request answered {status}: {body}"));
        }
    }
    Ok(())
}

fn callgrind_control(args: &[&str]) -> Result {
    let out = Command::new("callgrind_control")
        .args(args)
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `totals:` of the dumps callgrind wrote for `out` (`<out>.<n>`), the latest one.
fn dumped_total(out: &Path) -> Result<u64> {
    let dir = out.parent().ok_or("callgrind output has no directory")?;
    let stem = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("callgrind output has no name")?;
    let mut latest: Option<(u32, u64)> = None;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix(stem)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.parse::<u32>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let total = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(total) = total {
            if latest.is_none_or(|(m, _)| n > m) {
                latest = Some((n, total));
            }
        }
    }
    latest
        .map(|(_, t)| t)
        .ok_or_else(|| format!("callgrind wrote no dump for {}", out.display()))
}

/// An Envoy started under callgrind, not counted yet.
struct Started {
    config: EnvoyConfig,
    name: &'static str,
    proc: Proc,
    ports: (u16, u16),
    out: PathBuf,
}

/// Starts one configuration under callgrind, instrumentation off until the count.
fn start(stack: &Stack, envoy: &Path, config: EnvoyConfig, upstream_port: u16) -> Result<Started> {
    let name = match config {
        EnvoyConfig::Plain => "callgrind-plain",
        EnvoyConfig::Noop => "callgrind-noop",
        EnvoyConfig::HostCalls => "callgrind-hostcalls",
        EnvoyConfig::Filter => "callgrind-filter",
    };
    let ports = (free_port()?, free_port()?);
    let file = render_variant(stack, config, name, upstream_port, ports)?;
    let work = &stack.config.work_dir;
    let out = work.join(format!("{name}.out"));
    for entry in std::fs::read_dir(work).map_err(|e| e.to_string())?.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{name}.out"))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=callgrind",
        // V8 writes the code it runs: the JIT-compiled wasm must be re-read when it changes.
        "--smc-check=all-non-file",
        "--dump-instr=no",
        // Envoy starts and V8 compiles the module several times faster uninstrumented; the count
        // is switched on once the warm-up requests are served.
        "--instr-atstart=no",
    ])
    .arg(format!("--callgrind-out-file={}", out.display()))
    .arg(envoy)
    .args(envoy_args(stack, &file));
    let proc = Proc::spawn(name, &mut cmd, work)?;
    Ok(Started {
        config,
        name,
        proc,
        ports,
        out,
    })
}

/// Instructions per request of one started configuration; stops it.
fn count(stack: &Stack, mut s: Started, key: &str, counts: &Counts) -> Result<f64> {
    stack::wait_ready(&mut s.proc, s.ports.1, "/ready", Duration::from_secs(300))?;
    let pid = s.proc.pid().to_string();
    send(s.ports.0, key, counts.warmup)?;
    callgrind_control(&["-i", "on", &pid])?;
    callgrind_control(&["-z", &pid])?;
    send(s.ports.0, key, counts.counted)?;
    callgrind_control(&["-d", &pid])?;
    let total = dumped_total(&s.out)?;
    if s.config == EnvoyConfig::Filter {
        // Its debits reach the ledger before it stops (nothing is lost, even in a bench).
        let sync = Duration::from_millis(stack.config.sync_period_ms);
        if !stack::drain_envoy(s.ports.1, sync, Duration::from_secs(120)) {
            return Err(format!("{}: the debit buffer did not drain", s.name));
        }
    }
    s.proc.stop(Duration::from_secs(30));
    Ok(total as f64 / counts.counted as f64)
}

/// Counts the four configurations, one at a time (a count includes the timer work, ticks, sync
/// and flushes, of the time it takes: with nothing else running it repeats), in front of the same
/// upstream, and adds the figures. (Starting all four at once saved no time and moved the counts by
/// up to 1.6%.)
pub fn measure(
    report: &mut Report,
    stack: &Stack,
    envoy: &Path,
    upstream_port: u16,
    key: &str,
    counts: &Counts,
) -> Result {
    let configs = [
        EnvoyConfig::Plain,
        EnvoyConfig::Noop,
        EnvoyConfig::HostCalls,
        EnvoyConfig::Filter,
    ];
    let mut per_request = Vec::new();
    for config in configs {
        let started = start(stack, envoy, config, upstream_port)?;
        let n = count(stack, started, key, counts)?;
        println!("  {config:?}: {n:.0} instructions per request");
        per_request.push(n);
    }
    let [plain, noop, floor, filter] = per_request.as_slice() else {
        return Err("four configurations were counted".into());
    };
    let what = |who: &str| {
        format!(
            "instructions Envoy executes per request (callgrind, {} sequential requests after {} \
             to warm up), {who}",
            counts.counted, counts.warmup
        )
    };
    report.add(
        "envoy_instructions_plain",
        *plain,
        "instructions",
        &what("without any filter"),
    );
    report.add(
        "envoy_instructions_noop",
        *noop,
        "instructions",
        &what("with the do-nothing wasm filter"),
    );
    report.add(
        "envoy_instructions_hostcalls",
        *floor,
        "instructions",
        &what("with the host-call floor (the do-nothing module making only the host calls billing needs)"),
    );
    report.add(
        "envoy_instructions_filter",
        *filter,
        "instructions",
        &what("with the billing filter"),
    );
    report.add(
        "filter_instructions_per_request",
        filter - plain,
        "instructions",
        "instructions per request the billing filter adds to Envoy without any filter",
    );
    report.add(
        "filter_instructions_above_noop",
        filter - noop,
        "instructions",
        "instructions per request of the billing filter above the do-nothing wasm filter: its own \
         code and its host calls",
    );
    report.add(
        "hostcalls_instructions_above_noop",
        floor - noop,
        "instructions",
        "instructions per request of the host calls any billing filter makes (the host-call floor \
         above the do-nothing wasm filter)",
    );
    report.add(
        "filter_instructions_above_hostcalls",
        filter - floor,
        "instructions",
        "instructions per request of the billing filter above the host-call floor: its own code and \
         the host calls beyond those billing needs",
    );
    Ok(())
}
