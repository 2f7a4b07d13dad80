//! `cargo xtask test`: installs what the tests need, then runs every suite: formatting, clippy with
//! warnings denied (native and the wasm filter), unit/property/integration tests against a real
//! PostgreSQL, the metering tests compiled to wasm under Node, and a short fuzz run per parser.

use std::process::Command;

use crate::shell::{self, cargo, exec, step, Result};
use crate::{postgres, tools};

/// Seconds each fuzz target runs in the test command (a longer run is in the README).
const FUZZ_SECONDS: u32 = 20;

pub fn run(args: &[String]) -> Result {
    let skip_install = args.iter().any(|a| a == "--skip-install");
    if !skip_install {
        step("install rust targets", tools::ensure_rust_targets)?;
    }
    step("cargo fmt --check", || {
        exec(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy (native, warnings denied)", || {
        exec(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
    })?;
    let envoy = step("install Envoy", tools::ensure_envoy)?;
    let pg = step("PostgreSQL", postgres::ensure)?;
    step("unit, property and integration tests", || {
        exec(
            cargo()
                .args(["test", "--workspace"])
                .env("DATABASE_URL", pg.database_url("postgres"))
                .env("ENVOY_BIN", &envoy),
        )
    })?;
    let runner = step(
        "install wasm-bindgen-test-runner",
        tools::ensure_wasm_bindgen_runner,
    )?;
    step("metering tests compiled to wasm32, under Node", || {
        exec(
            cargo()
                .args(["test", "-p", "metering", "--target", "wasm32-unknown-unknown"])
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", &runner),
        )
    })?;
    let fuzz = step("install cargo-fuzz", tools::ensure_cargo_fuzz)?;
    step("short fuzz run of every parser", || fuzz_all(&fuzz))?;
    Ok(())
}

fn fuzz_all(cargo_fuzz: &std::path::Path) -> Result {
    let dir = shell::root().join("fuzz");
    let targets = std::fs::read_dir(dir.join("fuzz_targets"))
        .map_err(|e| format!("no fuzz targets: {e}"))?
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect::<Vec<_>>();
    for target in targets {
        // cargo-fuzz needs nightly flags; the one stable toolchain accepts them with RUSTC_BOOTSTRAP.
        exec(
            Command::new(cargo_fuzz)
                .current_dir(&dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", "--sanitizer", "none", &target, "--"])
                .arg(format!("-max_total_time={FUZZ_SECONDS}")),
        )?;
    }
    Ok(())
}
