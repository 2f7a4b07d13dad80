//! The billing filter's own work per billed request, without Envoy: the `request_path`
//! measurement (filter-core/src/request/flow/tests.rs: the request's flow as the HTTP context drives it, from
//! the header decision to the settlement, an account under spend control `reserve`, plus its share
//! of a debit batch, against in-memory shared data) run natively and compiled to wasm32-wasip1 under V8 (Node's, TurboFan only, as
//! Envoy's V8 compiles modules). Set beside the Envoy CPU the filter adds, it splits that cost into
//! our code and the rest (host calls, Envoy's side of the calls to the control plane).

use std::path::PathBuf;
use std::process::Command;

use crate::report::Report;
use xtask::shell::{self, cargo, output, Result};
use xtask::tools;

/// (ns per billed request, of which ns its share of a debit batch) from the test's output.
fn parse(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().find_map(|l| l.split("request_path: ").nth(1))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    match numbers.as_slice() {
        [total, batch, ..] => Some((*total, *batch)),
        _ => None,
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(f64, f64)> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{what} failed:\n{text}"));
    }
    parse(&text).ok_or_else(|| format!("{what}: no request_path figure in its output:\n{text}"))
}

/// `cargo test` of the filter's logic (`filter-core`, where `request_path` is), in `profile`.
fn core_tests(profile: &str) -> Command {
    let mut c = cargo();
    c.args(["test", "-p", "filter-core", "--lib", "--profile", profile]);
    c
}

/// The wasm32-wasip1 test binary of the filter's library, built in `profile`.
fn wasm_test_binary(profile: &str) -> Result<PathBuf> {
    let json =
        output(core_tests(profile).args(["--target", "wasm32-wasip1", "--no-run", "--message-format=json"]))
            .ok_or("building the filter's tests for wasm32-wasip1 failed")?;
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| m.get("executable")?.as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo named no wasm test binary".into())
}

/// `profile`: `release` for the figures, `dev` for the smoke test.
pub fn measure(report: &mut Report, profile: &str) -> Result {
    let (native, native_batch) = run(
        core_tests(profile).args(["request_path", "--", "--ignored", "--nocapture"]),
        "the native request_path measurement",
    )?;
    tools::ensure_node()?;
    let wasm = wasm_test_binary(profile)?;
    let (in_v8, in_v8_batch) = run(
        Command::new("node")
            .args(["--no-liftoff", "--no-warnings"])
            .arg(tools::wasi_runner())
            .arg(&wasm)
            .args(["request_path", "--ignored", "--nocapture", "--test-threads=1"])
            .current_dir(shell::root()),
        "the request_path measurement in V8",
    )?;
    let us = |ns: f64| ns / 1e3;
    report.add(
        "filter_own_work_native",
        us(native),
        "us",
        "the filter's own work per billed request, native build (request_path, 20,000 requests)",
    );
    report.add(
        "filter_own_work_v8",
        us(in_v8),
        "us",
        "the same, compiled to wasm32-wasip1 and run in Node's V8 with TurboFan only",
    );
    report.add(
        "filter_batch_share_v8",
        us(in_v8_batch),
        "us",
        "of which its share of a debit batch (encoding, answer, settlement), in V8",
    );
    report.add(
        "filter_batch_share_native",
        us(native_batch),
        "us",
        "of which its share of a debit batch, native",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_figures_of_the_test_output() {
        let text = "running 1 test\ntest request_path::request_path ... request_path: 14046 ns per billed \
                    request, of which 1583 ns its share of a debit batch\nok\n";
        assert_eq!(super::parse(text), Some((14046.0, 1583.0)));
        assert_eq!(super::parse("nothing"), None);
    }
}
