//! `cargo xtask test`: installs what the tests need, then runs every suite: formatting, clippy with
//! warnings denied (native and the wasm filter), Envoy config validation, unit/property/integration
//! and end-to-end tests against a real PostgreSQL and a real Envoy, the metering tests compiled to
//! wasm32-wasip1 in Node, the benchmark's smoke mode, and a short fuzz run per parser.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::shell::{self, cargo, exec, step, Result};
use crate::{postgres, tools};

/// Seconds each fuzz target runs in the test command (a longer run: docs/operations.md).
const FUZZ_SECONDS: u32 = 12;

pub fn run(args: &[String]) -> Result {
    let skip_install = args.iter().any(|a| a == "--skip-install");
    if !skip_install {
        step("install rust targets", tools::ensure_rust_targets)?;
        // pdftotext checks invoice PDFs; Chromium and its driver run the dashboard's browser tests.
        step("install Debian packages the tests use", || {
            tools::ensure_debian_packages(&["poppler-utils", "chromium", "chromium-driver"])
        })?;
    }
    step("cargo fmt --check", || {
        exec(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy (native, warnings denied)", || {
        exec(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
    })?;
    step("clippy (filter for wasm32-wasip1, warnings denied)", || {
        exec(cargo().args([
            "clippy",
            "-p",
            "filter",
            "-p",
            "filter-core",
            "--target",
            "wasm32-wasip1",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    let envoy = step("install Envoy", tools::ensure_envoy)?;
    let wasm = step("build the release filter and the control plane", || {
        let wasm = tools::build_filters(&["filter"])?;
        exec(cargo().args(["build", "-p", "control-plane", "--bin", "control-plane"]))?;
        Ok(wasm)
    })?;
    step(
        "envoy --mode validate on every rendering of envoy/envoy.yaml",
        || validate_envoy(&envoy, &wasm),
    )?;
    let pg = step("PostgreSQL", postgres::ensure)?;
    step("unit, property, integration and end-to-end tests", || {
        exec(
            cargo()
                .args(["test", "--workspace"])
                .env("DATABASE_URL", pg.database_url("postgres"))
                .env("ENVOY_BIN", &envoy)
                .env("CLAUDESTORE_WASM", &wasm)
                .env(
                    "CONTROL_PLANE_BIN",
                    shell::root().join("target/debug/control-plane"),
                )
                // The dashboard's browser tests fail, instead of skipping, when Chromium is missing.
                .env("CLAUDESTORE_BROWSER_TESTS", "require"),
        )
    })?;
    step("install Node", tools::ensure_node)?;
    // The target the filter ships on: the metering code as it runs inside Envoy (32-bit, no
    // threads, panic=abort), in V8.
    step("metering tests compiled to wasm32-wasip1, in Node's V8", || {
        // A TOML array, not a string that cargo splits at spaces: the checkout's path may have some.
        let runner = tools::wasi_runner().display().to_string();
        let runner = serde_json::to_string(&["node", "--no-warnings", &runner]).map_err(|e| e.to_string())?;
        exec(cargo().args([
            "--config",
            &format!("target.wasm32-wasip1.runner={runner}"),
            "test",
            "-p",
            "metering",
            "--target",
            "wasm32-wasip1",
        ]))
    })?;
    // The benchmark's smoke mode: every figure must be produced (how fast is not checked here).
    step("cargo xtask bench --quick", || {
        crate::bench(&["--quick".to_owned()])
    })?;
    let fuzz = step("install cargo-fuzz", tools::ensure_cargo_fuzz)?;
    step("short fuzz run of every parser", || fuzz_all(&fuzz))?;
    Ok(())
}

/// Renders the template for a plain-http and a TLS upstream and has Envoy validate each (which
/// also loads the filter and runs its configuration check).
fn validate_envoy(envoy: &Path, wasm: &Path) -> Result {
    let plugin = serde_json::json!({"internal_token": "validate-token", "upstream_api_key": "sk-validate"});
    let plugin = serde_json::to_string(&plugin).map_err(|e| e.to_string())?;
    let template_path = shell::root().join("envoy/envoy.yaml");
    let template =
        std::fs::read_to_string(&template_path).map_err(|e| format!("{}: {e}", template_path.display()))?;
    let dir = shell::root().join("target/envoy-validate");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let upstreams = [
        ("http", "127.0.0.1", "10001", "false"),
        ("https", "api.anthropic.com", "443", "true"),
    ];
    for (name, host, port, tls) in upstreams {
        let values = BTreeMap::from([
            ("GATEWAY_PORT", "10000".to_owned()),
            ("ENVOY_ADMIN_PORT", "9901".to_owned()),
            ("CONTROL_PORT", "8080".to_owned()),
            // The TLS rendering also has two more control plane replicas.
            (
                "CONTROL_EXTRA_ENDPOINTS",
                if tls == "true" {
                    [8081, 8082]
                        .map(|p| format!("- endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}"))
                        .join("\n        ")
                } else {
                    String::new()
                },
            ),
            ("UPSTREAM_HOST", host.to_owned()),
            ("UPSTREAM_PORT", port.to_owned()),
            ("UPSTREAM_TLS", tls.to_owned()),
            ("WASM_PATH", wasm.display().to_string()),
            (
                "PLUGIN_CONFIG",
                serde_json::to_string(&plugin).map_err(|e| e.to_string())?,
            ),
        ]);
        let file = dir.join(format!("envoy-{name}.yaml"));
        std::fs::write(&file, tests::stack::render(&template, &values)?).map_err(|e| e.to_string())?;
        exec(
            Command::new(envoy)
                .args(["--mode", "validate", "--disable-hot-restart", "-c"])
                .arg(&file),
        )?;
    }
    // The container image renders the same template with envoy/render.sh: validate its output too.
    let envoy_dir = envoy.parent().ok_or("envoy binary without a directory")?;
    let path = format!(
        "{}:{}",
        envoy_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (name, url, key) in [
        ("demo", "", ""),
        ("anthropic", "https://api.anthropic.com", "sk-validate"),
    ] {
        exec(
            Command::new("sh")
                .arg(shell::root().join("envoy/render.sh"))
                .args(["--mode", "validate", "--disable-hot-restart"])
                .env("PATH", &path)
                .env("ENVOY_TEMPLATE", &template_path)
                .env("ENVOY_CONFIG", dir.join(format!("envoy-compose-{name}.yaml")))
                .env("WASM_PATH", wasm)
                .env("INTERNAL_TOKEN", "validate-token")
                .env("UPSTREAM_URL", url)
                .env("UPSTREAM_API_KEY", key),
        )?;
    }
    Ok(())
}

fn fuzz_all(cargo_fuzz: &Path) -> Result {
    let dir = shell::root().join("fuzz");
    let mut targets = std::fs::read_dir(dir.join("fuzz_targets"))
        .map_err(|e| format!("no fuzz targets: {e}"))?
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect::<Vec<_>>();
    targets.sort();
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
