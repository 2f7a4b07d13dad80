//! `cargo xtask up`: the gateway on this machine, in the foreground until SIGINT/SIGTERM.
//!
//! Installs what it needs (wasm target, Envoy), finds or starts PostgreSQL, builds the release
//! binaries and filter, and starts the control plane and Envoy (and, in demo mode, the fake
//! upstream plus a demo account with credits and a key). Configuration is the contract's
//! environment variables; tokens that are not given are generated once and kept under `.data/`.
//! A control plane that stops is restarted with backoff while Envoy keeps serving; Ctrl-C stops
//! only once every debit has been delivered, unless pressed again (see `tests::stack::shutdown`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tests::stack::{self, Stack, StackConfig, Stopped, Supervisor, Upstream};

use crate::shell::{self, cargo, exec, step, Result};
use crate::{postgres, tools};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn env_port(name: &str, default: u16) -> Result<u16> {
    let v = env_or(name, &default.to_string());
    v.parse().map_err(|_| format!("{name}={v} is not a port number"))
}

fn data_dir() -> PathBuf {
    shell::root().join(".data")
}

/// The token from the environment, else the one kept in `.data/<file>`, else a new one (kept).
/// Returns the token and whether it was generated now.
fn token(var: &str, file: &str) -> Result<(String, bool)> {
    if let Ok(t) = std::env::var(var) {
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    let path = data_dir().join(file);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_owned(), false));
        }
    }
    let t = random_hex(32)?;
    write_secret(&path, &t)?;
    Ok((t, true))
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_secret(path: &Path, text: &str) -> Result {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run() -> Result {
    step("install rust targets", tools::ensure_rust_targets)?;
    let envoy_bin = step("install Envoy", tools::ensure_envoy)?;
    step("build control plane, fake upstream and filter (release)", || {
        exec(cargo().args([
            "build",
            "--release",
            "-p",
            "control-plane",
            "-p",
            "tests",
            "--bins",
        ]))?;
        tools::build_filters(&["filter"])
    })?;
    let pg = step("PostgreSQL", postgres::ensure)?;
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| pg.database_url("claudestore"));
    let (admin_token, admin_new) = token("ADMIN_TOKEN", "admin_token")?;
    let (internal_token, _) = token("INTERNAL_TOKEN", "internal_token")?;

    let upstream_url = std::env::var("UPSTREAM_URL").ok().filter(|v| !v.is_empty());
    let upstream_key = std::env::var("UPSTREAM_API_KEY").ok().filter(|v| !v.is_empty());
    let demo = upstream_url.is_none() && upstream_key.is_none();
    let upstream = if demo {
        Upstream::Fake {
            port: env_port("FAKE_UPSTREAM_PORT", 10001)?,
        }
    } else {
        let url = upstream_url.unwrap_or_else(|| "https://api.anthropic.com".to_owned());
        stack::parse_upstream_url(&url)?;
        Upstream::Url {
            url,
            api_key: upstream_key,
        }
    };
    let release = shell::root().join("target").join("release");
    let config = StackConfig {
        gateway_port: env_port("GATEWAY_PORT", 10000)?,
        envoy_admin_port: env_port("ENVOY_ADMIN_PORT", 9901)?,
        control_port: env_port("CONTROL_PORT", 8080)?,
        database_url,
        admin_token: admin_token.clone(),
        internal_token,
        upstream,
        price_factor: env_or("PRICE_FACTOR", "0.70"),
        fail_mode: env_or("FAIL_MODE", "open"),
        sync_period_ms: 250,
        flush_period_ms: 500,
        envoy_bin,
        control_plane_bin: release.join("control-plane"),
        fake_upstream_bin: release.join("fake-anthropic"),
        wasm_path: shell::root().join("target/wasm32-wasip1/wasm/filter.wasm"),
        work_dir: data_dir().join("run"),
        envoy_concurrency: 2,
    };
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;

    let mut stack = step("start control plane and Envoy", || Stack::start(config))?;
    let c = stack.config.clone();
    println!("\nClaudeStore gateway is up.");
    println!("  gateway (callers)   http://127.0.0.1:{}", c.gateway_port);
    println!(
        "  control plane       http://127.0.0.1:{}   (OpenAPI: /openapi.json)",
        c.control_port
    );
    println!("  Envoy admin         http://127.0.0.1:{}", c.envoy_admin_port);
    println!("  logs                {}", c.work_dir.display());
    if admin_new {
        println!("  admin token (new, kept in .data/admin_token): {admin_token}");
    } else {
        println!("  admin token         in .data/admin_token (or ADMIN_TOKEN)");
    }
    if demo {
        let key = step("demo account", || demo_account(&c))?;
        print_demo(&c, &key);
    }
    println!("\nCtrl-C stops everything this command started (after Envoy's debits are delivered).");
    // A control plane that stops is restarted, with backoff, while Envoy serves on its buffer.
    let mut supervisor = Supervisor::default();
    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
        for line in supervisor.tick(&mut stack)? {
            println!("{line}");
        }
    }
    println!(
        "\nstopping: Envoy takes no new connections; waiting for the requests being served and \
         for every debit to reach the control plane (Ctrl-C again to stop at once and lose them)"
    );
    let stopped = stack::shutdown(
        &mut stack,
        &mut supervisor,
        || rx.try_recv().is_ok(),
        |line| println!("{line}"),
    );
    match stopped {
        Stopped::Drained => println!("every debit delivered; stopping"),
        Stopped::Abandoned { debits } => {
            println!("stopping at once: {debits} debit(s) not delivered are lost (served, never billed)")
        }
    }
    drop(stack);
    drop(pg);
    Ok(())
}

/// The demo account (created once, found by name later) with 10,000 credits granted once, and a
/// key kept in `.data/demo_key` so the printed examples stay valid across restarts.
fn demo_account(c: &StackConfig) -> Result<String> {
    let admin = Some(c.admin_token.as_str());
    let call = |method: &str, path: &str, body: Option<&Value>| -> Result<Value> {
        let (status, text) = stack::http_json(method, c.control_port, path, admin, body)?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    };
    let accounts = call("GET", "/v1/accounts?limit=1000", None)?;
    let existing = accounts["data"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["email"] == "demo@example.com"))
        .and_then(|x| x["id"].as_str().map(str::to_owned));
    let id = match existing {
        Some(id) => id,
        None => call(
            "POST",
            "/v1/accounts",
            Some(&json!({"name": "Demo", "email": "demo@example.com"})),
        )?["id"]
            .as_str()
            .ok_or("account without id")?
            .to_owned(),
    };
    call(
        "POST",
        &format!("/v1/accounts/{id}/credits"),
        Some(
            &json!({"credits": "10000", "reason": "demo credits", "idempotency_key": format!("demo-grant-{id}")}),
        ),
    )?;
    let key_file = data_dir().join("demo_key");
    if let Ok(key) = std::fs::read_to_string(&key_file) {
        let (status, _) = stack::http_json("GET", c.control_port, "/v1/me", Some(key.trim()), None)?;
        if status == 200 {
            return Ok(key.trim().to_owned());
        }
    }
    let created = call(
        "POST",
        &format!("/v1/accounts/{id}/keys"),
        Some(&json!({"name": "demo"})),
    )?;
    let key = created["key"]
        .as_str()
        .ok_or("key response without key")?
        .to_owned();
    write_secret(&key_file, &key)?;
    Ok(key)
}

fn print_demo(c: &StackConfig, key: &str) {
    let port = c.gateway_port;
    println!("\nDemo mode: the upstream is the built-in fake (no real model is called).");
    println!("Demo key (kept in .data/demo_key): {key}\n");
    println!("  curl -s http://127.0.0.1:{port}/v1/messages \\");
    println!(
        "    -H 'x-api-key: {key}' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \\"
    );
    println!("    -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'");
    println!("\n  curl -s http://127.0.0.1:{port}/v1/me -H 'x-api-key: {key}'");
    println!("\n  python3 -c 'import anthropic; c = anthropic.Anthropic(base_url=\"http://127.0.0.1:{port}\", api_key=\"{key}\"); \\");
    println!("    print(c.messages.create(model=\"claude-sonnet-4-5\", max_tokens=64, messages=[{{\"role\":\"user\",\"content\":\"Hi\"}}]).usage)'");
}
