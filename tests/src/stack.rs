//! The whole gateway as processes on loopback: control plane, Envoy with the billing filter, and
//! (in demo mode and in tests) the fake upstream. Used by `cargo xtask up` and the end-to-end suite,
//! so both run exactly the same binaries, configuration template and ports.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the upstream is.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The fake upstream binary, started by the stack on `port`.
    Fake { port: u16 },
    /// A real upstream (`UPSTREAM_URL`), with the operator's key.
    Url { url: String, api_key: Option<String> },
}

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub gateway_port: u16,
    pub envoy_admin_port: u16,
    pub control_port: u16,
    /// Full URL of the control plane's database (created by the control plane when missing).
    pub database_url: String,
    pub admin_token: String,
    pub internal_token: String,
    pub upstream: Upstream,
    pub price_factor: String,
    /// `open` or `closed`.
    pub fail_mode: String,
    /// Filter timer period for snapshot pulls, milliseconds.
    pub sync_period_ms: u64,
    /// Filter timer period for debit flushes, milliseconds.
    pub flush_period_ms: u64,
    pub envoy_bin: PathBuf,
    pub control_plane_bin: PathBuf,
    pub fake_upstream_bin: PathBuf,
    pub wasm_path: PathBuf,
    /// Rendered configuration, logs and the control plane's data dir go here.
    pub work_dir: PathBuf,
    /// Envoy worker threads (`--concurrency`).
    pub envoy_concurrency: u32,
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log_dir: &Path) -> Result<Proc, String> {
        let log = log_dir.join(format!("{name}.log"));
        // Appended: a process restarted by the supervisor keeps the log of the one that stopped.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // Its own process group: a terminal's Ctrl-C reaches only the supervisor, which then stops
        // the processes in order (Envoy drained before the control plane goes away).
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all.get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Status code of a plain HTTP/1.1 GET on loopback, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(head.get(..n)?).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until `port` answers `path` with 200, or fails after `timeout` with the process's log.
pub fn wait_ready(proc: &mut Proc, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if http_status(port, path) == Some(200) {
            return Ok(());
        }
        if !proc.is_running() {
            return Err(format!(
                "{} exited during start-up:\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready on port {port}{path} after {timeout:?}:\n{}",
                proc.name,
                proc.log_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces every `${NAME}` in `template`; a placeholder without a value is an error.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let end = after.find('}').ok_or("unterminated ${ in template")?;
        let name = after.get(..end).unwrap_or_default();
        let value = values
            .get(name)
            .ok_or_else(|| format!("template placeholder ${{{name}}} has no value"))?;
        out.push_str(value);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Host, port and TLS of an upstream base URL (`http(s)://host[:port]`, no path).
pub fn parse_upstream_url(url: &str) -> Result<(String, u16, bool), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("UPSTREAM_URL {url} must start with http:// or https://"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(format!(
            "UPSTREAM_URL {url}: a base path is not supported, give scheme://host[:port]"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("UPSTREAM_URL {url}: bad port {p}"))?,
        ),
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("UPSTREAM_URL {url} has no host"));
    }
    Ok((host.to_owned(), port, tls))
}

/// The running stack. Dropping it stops every process it started.
pub struct Stack {
    pub config: StackConfig,
    /// Plugin configuration fields beyond those `StackConfig` sets (see [`Stack::start_with`]).
    plugin_extra: serde_json::Map<String, serde_json::Value>,
    /// In start order; stopped in reverse.
    procs: Vec<Proc>,
    /// Where Envoy sends the upstream traffic: host, port, TLS.
    upstream: Option<(String, u16, bool)>,
    /// Each Envoy's name and admin port.
    envoy_admin_ports: Vec<(&'static str, u16)>,
    /// The operator insisted on stopping (see [`shutdown`]): no more waiting for debits.
    abandoned: bool,
    /// Ports of the control plane's other replicas ([`Stack::add_control_plane`]).
    extra_control_ports: Vec<u16>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            if self.abandoned {
                p.stop(Duration::from_secs(5));
                continue;
            }
            let admin = self
                .envoy_admin_ports
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, port)| *port);
            if let Some(admin) = admin.filter(|_| p.is_running()) {
                drain_envoy(
                    admin,
                    Duration::from_millis(self.config.sync_period_ms),
                    ENVOY_DRAIN_DEADLINE,
                );
            }
            p.stop(Duration::from_secs(5));
        }
    }
}

/// How long a stop waits for the filter's buffered debits: past the filter's longest retry
/// backoff (30 s by default), so a backlog from an outage gets one more attempt.
pub const ENVOY_DRAIN_DEADLINE: Duration = Duration::from_secs(35);

/// How long after `drain_listeners?graceful` the listeners close (Envoy's `--drain-time-s 1`, with
/// a margin).
const LISTENER_DRAIN: Duration = Duration::from_millis(1300);

/// The filter's gauge of debits still owed to the control plane: buffered plus billed requests
/// being served, summed over workers.
pub const DEBIT_GAUGE: &str = "wasmcustom.claudestore.debit_buffer.size";
/// Requests being served by the callers' listener (its HTTP connection manager's `stat_prefix`).
pub const ACTIVE_REQUESTS: &str = "http.gateway.downstream_rq_active";

/// Envoy exits on SIGTERM without waiting for the filter's last flush, so a stop drains first,
/// within `deadline`:
/// 1. `POST /drain_listeners?graceful` (Envoy started with `--drain-strategy immediate
///    --drain-time-s 1`): every answer from then on carries `connection: close`, and the listeners
///    stop accepting a second later. A plain `/drain_listeners` only closes the listeners: callers
///    with keep-alive connections go on being served on them until Envoy exits, and those last
///    requests' debits were lost (measured: 3 of 83 in a rolling restart under load);
/// 2. wait until none is being served any more (`downstream_rq_active` 0): each has then handed
///    its debit to the filter;
/// 3. wait until the filter's gauge reads 0 on two reads at least two sync periods apart, so that
///    no worker still has a debit on its way (the control plane is still running: processes stop
///    in reverse start order).
pub fn drain_envoy(admin_port: u16, sync_period: Duration, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    let _ = http_json("POST", admin_port, "/drain_listeners?graceful", None, None);
    // The listeners accept for the drain time (`--drain-time-s 1`): nothing is settled before they
    // close, or a request accepted after the verdict would be cut by the stop.
    let closed_at = Instant::now() + LISTENER_DRAIN;
    let mut served = false;
    while Instant::now() < until {
        if envoy_stat(admin_port, ACTIVE_REQUESTS) == Some(0) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !served {
        return false;
    }
    let settle = sync_period.saturating_mul(2);
    let mut zero_since: Option<Instant> = None;
    while Instant::now() < until {
        let quiet = envoy_stat(admin_port, ACTIVE_REQUESTS) == Some(0)
            && envoy_stat(admin_port, DEBIT_GAUGE) == Some(0);
        if quiet && Instant::now() >= closed_at {
            if zero_since.get_or_insert_with(Instant::now).elapsed() >= settle {
                return true;
            }
        } else {
            zero_since = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One numeric stat from Envoy's admin `/stats`.
pub fn envoy_stat(admin_port: u16, name: &str) -> Option<i64> {
    let (status, text) = http_json("GET", admin_port, &format!("/stats?filter=^{name}$"), None, None).ok()?;
    if status != 200 {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
}

impl Stack {
    /// Starts the fake upstream (if configured), the control plane and Envoy, each waited for.
    pub fn start(config: StackConfig) -> Result<Stack, String> {
        Stack::start_with(config, serde_json::Map::new())
    }

    /// Like [`Stack::start`], with more fields of the filter's plugin configuration (see
    /// `filter-core/src/config.rs`), e.g. `stale_after_ms` or `debit_buffer_max` for tests of bounds.
    pub fn start_with(
        config: StackConfig,
        plugin_extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Stack, String> {
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| format!("{}: {e}", config.work_dir.display()))?;
        let mut stack = Stack {
            abandoned: false,
            extra_control_ports: Vec::new(),
            config,
            plugin_extra,
            procs: Vec::new(),
            upstream: None,
            envoy_admin_ports: Vec::new(),
        };
        let c = stack.config.clone();
        let (host, port, tls) = match &c.upstream {
            Upstream::Fake { port } => {
                let mut cmd = Command::new(&c.fake_upstream_bin);
                cmd.args(["--port", &port.to_string()]);
                stack.launch("fake-upstream", &mut cmd, *port, "/__fake/requests")?;
                ("127.0.0.1".to_owned(), *port, false)
            }
            Upstream::Url { url, .. } => parse_upstream_url(url)?,
        };
        stack.launch(
            "control-plane",
            &mut control_plane_command(&c),
            c.control_port,
            "/readyz",
        )?;

        stack.upstream = Some((host, port, tls));
        stack.launch_envoy("envoy", c.gateway_port, c.envoy_admin_port)?;
        Ok(stack)
    }

    /// One more Envoy with the same filter configuration, in front of the same control plane and
    /// upstream, on its own ports (as a second gateway of a fleet would be).
    pub fn add_envoy(
        &mut self,
        name: &'static str,
        gateway_port: u16,
        admin_port: u16,
    ) -> Result<(), String> {
        self.launch_envoy(name, gateway_port, admin_port)
    }

    fn launch_envoy(&mut self, name: &'static str, gateway_port: u16, admin_port: u16) -> Result<(), String> {
        let (host, port, tls) = self.upstream.clone().ok_or("the upstream is not known yet")?;
        let c = self.config.clone();
        let envoy_yaml = self.render_envoy_config(name, gateway_port, admin_port, &host, port, tls)?;
        let mut envoy = Command::new(&c.envoy_bin);
        envoy
            .arg("-c")
            .arg(&envoy_yaml)
            .args(["--concurrency", &c.envoy_concurrency.to_string()])
            .args([
                "--disable-hot-restart",
                // A drain (`drain_listeners?graceful`) answers every request from its start with
                // `connection: close`, so that keep-alive callers leave instead of being served
                // on their open connections until Envoy exits; the listeners close 1 s later.
                "--drain-time-s",
                "1",
                "--drain-strategy",
                "immediate",
                "--log-level",
                "warn",
                "--component-log-level",
                "wasm:info",
            ]);
        self.launch(name, &mut envoy, admin_port, "/ready")?;
        self.envoy_admin_ports.push((name, admin_port));
        Ok(())
    }

    fn launch(
        &mut self,
        name: &'static str,
        cmd: &mut Command,
        port: u16,
        ready_path: &str,
    ) -> Result<(), String> {
        let mut p = Proc::spawn(name, cmd, &self.config.work_dir)?;
        wait_ready(&mut p, port, ready_path, Duration::from_secs(90))?;
        self.procs.push(p);
        Ok(())
    }

    /// The filter's plugin configuration (see `filter-core/src/config.rs`).
    pub fn plugin_config(&self) -> serde_json::Value {
        let c = &self.config;
        let mut cfg = serde_json::json!({
            "internal_token": c.internal_token,
            "fail_mode": c.fail_mode,
            "sync_period_ms": c.sync_period_ms,
            "flush_period_ms": c.flush_period_ms,
            "price_factor": c.price_factor,
        });
        if let Upstream::Url {
            api_key: Some(key), ..
        } = &c.upstream
        {
            cfg["upstream_api_key"] = serde_json::Value::String(key.clone());
        }
        if let Some(obj) = cfg.as_object_mut() {
            obj.extend(self.plugin_extra.clone());
        }
        cfg
    }

    /// Renders `envoy/envoy.yaml` into the work dir (mode 0600: it holds tokens) and returns its path.
    fn render_envoy_config(
        &self,
        name: &str,
        gateway_port: u16,
        admin_port: u16,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<PathBuf, String> {
        let c = &self.config;
        let template_path = crate::repo_root().join("envoy").join("envoy.yaml");
        let template = std::fs::read_to_string(&template_path)
            .map_err(|e| format!("cannot read {}: {e}", template_path.display()))?;
        let plugin = serde_json::to_string(&self.plugin_config()).map_err(|e| e.to_string())?;
        let values = BTreeMap::from([
            ("GATEWAY_PORT", gateway_port.to_string()),
            ("ENVOY_ADMIN_PORT", admin_port.to_string()),
            ("CONTROL_PORT", c.control_port.to_string()),
            ("CONTROL_EXTRA_ENDPOINTS", self.extra_endpoints()),
            ("UPSTREAM_HOST", host.to_owned()),
            ("UPSTREAM_PORT", port.to_string()),
            ("UPSTREAM_TLS", tls.to_string()),
            ("WASM_PATH", c.wasm_path.display().to_string()),
            (
                "PLUGIN_CONFIG",
                serde_json::to_string(&plugin).map_err(|e| e.to_string())?,
            ),
        ]);
        let rendered = render(&template, &values)?;
        let out = c.work_dir.join(format!("{name}.yaml"));
        write_private(&out, &rendered)?;
        Ok(out)
    }

    /// The process named `name`, e.g. to stop the control plane for an outage test.
    pub fn proc_mut(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// Stops Envoy the safe way: drain, wait for the buffered debits to be delivered, then SIGTERM.
    /// Returns whether the buffer was empty before the signal.
    pub fn stop_envoy(&mut self) -> bool {
        let port = self.config.envoy_admin_port;
        let sync_period = Duration::from_millis(self.config.sync_period_ms);
        let Some(p) = self.proc_mut("envoy") else {
            return true;
        };
        if !p.is_running() {
            return true;
        }
        let drained = drain_envoy(port, sync_period, ENVOY_DRAIN_DEADLINE);
        p.stop(Duration::from_secs(5));
        drained
    }

    /// Drains the Envoy `name` (see [`drain_envoy`]), stops it, and starts it again on the same
    /// ports: a rolling restart. Whether its debits were all delivered before it stopped.
    pub fn restart_envoy(&mut self, name: &'static str, gateway_port: u16) -> Result<bool, String> {
        let admin = self
            .envoy_admin_ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("no Envoy named {name}"))?;
        let drained = drain_envoy(
            admin,
            Duration::from_millis(self.config.sync_period_ms),
            ENVOY_DRAIN_DEADLINE,
        );
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut old = self.procs.remove(i);
            old.stop(Duration::from_secs(5));
        }
        self.envoy_admin_ports.retain(|(n, _)| *n != name);
        self.launch_envoy(name, gateway_port, admin)?;
        Ok(drained)
    }

    /// Restarts a stopped control plane with the same configuration.
    pub fn restart_control_plane(&mut self) -> Result<(), String> {
        if let Some(i) = self.procs.iter().position(|p| p.name == "control-plane") {
            let mut old = self.procs.remove(i);
            old.stop(Duration::from_secs(5));
        }
        let c = self.config.clone();
        self.launch(
            "control-plane",
            &mut control_plane_command(&c),
            c.control_port,
            "/readyz",
        )
    }

    /// Starts the control plane again without waiting for it (see [`Supervisor`]): the one that
    /// stopped is reaped first.
    pub fn respawn_control_plane(&mut self) -> Result<(), String> {
        if let Some(i) = self.procs.iter().position(|p| p.name == "control-plane") {
            let mut old = self.procs.remove(i);
            old.stop(Duration::from_secs(1));
        }
        let c = self.config.clone();
        let p = Proc::spawn("control-plane", &mut control_plane_command(&c), &c.work_dir)?;
        self.insert_before_envoys(p);
        Ok(())
    }

    /// A control plane process, placed before the Envoys: processes stop in reverse order, so
    /// the Envoys drain into a running control plane.
    fn insert_before_envoys(&mut self, p: Proc) {
        let at = self
            .procs
            .iter()
            .position(|p| p.name.starts_with("envoy"))
            .unwrap_or(self.procs.len());
        self.procs.insert(at, p);
    }

    /// Another replica of the control plane on `port` (same database and tokens). Envoys started
    /// after it balance over every replica (see `envoy/envoy.yaml`, `CONTROL_EXTRA_ENDPOINTS`).
    pub fn add_control_plane(&mut self, name: &'static str, port: u16) -> Result<(), String> {
        let c = self.config.clone();
        let mut cmd = control_plane_command(&c);
        cmd.env("CONTROL_PORT", port.to_string());
        let mut p = Proc::spawn(name, &mut cmd, &c.work_dir)?;
        wait_ready(&mut p, port, "/readyz", Duration::from_secs(90))?;
        self.insert_before_envoys(p);
        self.extra_control_ports.push(port);
        Ok(())
    }

    fn extra_endpoints(&self) -> String {
        self.extra_control_ports
            .iter()
            .map(|port| {
                format!("- endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}")
            })
            .collect::<Vec<_>>()
            .join("\n        ")
    }

    /// SIGKILL to a control plane process (`control-plane`, or a replica's name): a crash.
    pub fn kill(&mut self, name: &str) {
        if let Some(p) = self.proc_mut(name) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGKILL to the control plane (a crash), waited for.
    pub fn kill_control_plane(&mut self) {
        if let Some(p) = self.proc_mut("control-plane") {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Debits the Envoys still owe the control plane, and requests they are serving.
    pub fn owed(&self) -> (i64, i64) {
        self.envoy_admin_ports.iter().fold((0, 0), |(d, r), (_, port)| {
            (
                d + envoy_stat(*port, DEBIT_GAUGE).unwrap_or(0),
                r + envoy_stat(*port, ACTIVE_REQUESTS).unwrap_or(0),
            )
        })
    }

    /// True while every process is running.
    pub fn healthy(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if !p.is_running() {
                return Err(format!("{} stopped:\n{}", p.name, p.log_tail(40)));
            }
        }
        Ok(())
    }
}

fn control_plane_command(c: &StackConfig) -> Command {
    let mut cp = Command::new(&c.control_plane_bin);
    cp.env("CONTROL_PORT", c.control_port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("ADMIN_TOKEN", &c.admin_token)
        .env("INTERNAL_TOKEN", &c.internal_token)
        .env("DATABASE_URL", &c.database_url)
        .env("PRICE_FACTOR", &c.price_factor)
        .env("DATA_DIR", c.work_dir.join("control-plane"))
        .env("PUBLIC_URL", format!("http://127.0.0.1:{}", c.control_port));
    cp
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A minimal HTTP/1.1 JSON call on loopback (for set-up scripts; tests use a real client):
/// returns the status and the body.
pub fn http_json(
    method: &str,
    port: u16,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(rest));
        body = rest.get(n + 2..).unwrap_or_default();
    }
    out
}

/// Keeps the control plane running under `cargo xtask up`: one that stopped (crashed, killed) is
/// started again after 1 s, then 2, 4, ... up to 30 s between attempts while it keeps stopping,
/// back to 1 s once one has been ready. Envoy goes on serving meanwhile (known keys, on cached
/// balances, `fail_mode: open`) and keeps the debits until the control plane takes them.
#[derive(Debug)]
pub struct Supervisor {
    /// Restarts so far.
    pub restarts: u32,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// A restarted control plane not yet ready.
    starting: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            restarts: 0,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            starting: false,
        }
    }
}

impl Supervisor {
    /// A control plane it started is not ready yet, or one that stopped waits for its restart.
    pub fn recovering(&self) -> bool {
        self.starting || self.retry_at.is_some()
    }

    /// One look at the processes: what happened, to say; an error when a process other than the
    /// control plane stopped (nothing to restart it into: Envoy's debits went with it).
    pub fn tick(&mut self, stack: &mut Stack) -> Result<Vec<String>, String> {
        let mut said = Vec::new();
        for p in &mut stack.procs {
            if p.name != "control-plane" && !p.is_running() {
                return Err(format!("{} stopped:\n{}", p.name, p.log_tail(40)));
            }
        }
        let port = stack.config.control_port;
        let running = stack.proc_mut("control-plane").is_some_and(|p| p.is_running());
        if running {
            if self.starting && http_status(port, "/readyz") == Some(200) {
                self.starting = false;
                self.backoff = FIRST_BACKOFF;
                said.push(format!(
                    "control plane ready again (restart {}); Envoy delivers what it kept",
                    self.restarts
                ));
            }
            return Ok(said);
        }
        match self.retry_at {
            None => {
                let log = stack
                    .proc_mut("control-plane")
                    .map(|p| p.log.display().to_string())
                    .unwrap_or_default();
                said.push(format!(
                    "control plane stopped (its log: {log}); Envoy keeps serving and keeps the debits; restarting in {:?}",
                    self.backoff
                ));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.starting = false;
            }
            Some(at) if Instant::now() >= at => {
                self.retry_at = None;
                self.restarts += 1;
                self.starting = true;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                match stack.respawn_control_plane() {
                    Ok(()) => said.push(format!("control plane started again (restart {})", self.restarts)),
                    Err(e) => said.push(format!("control plane not started: {e}")),
                }
            }
            Some(_) => {}
        }
        Ok(said)
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every debit reached the control plane.
    Drained,
    /// The operator insisted: these debits were still owed, and are lost.
    Abandoned { debits: i64 },
}

/// A stop that loses nothing unless the operator insists: the Envoys take no new connections,
/// the control plane stays supervised (restarted if it stops), and the stop waits until every
/// request being served has ended and every debit has been delivered; `insist()` (a second
/// Ctrl-C) ends the wait, after which the stack stops at once, and what it abandons is counted.
/// `say` gets a line every 5 s while it waits, naming what is still owed.
pub fn shutdown(
    stack: &mut Stack,
    supervisor: &mut Supervisor,
    mut insist: impl FnMut() -> bool,
    mut say: impl FnMut(&str),
) -> Stopped {
    for (_, port) in &stack.envoy_admin_ports {
        let _ = http_json("POST", *port, "/drain_listeners?graceful", None, None);
    }
    // As in `drain_envoy`: nothing is settled before the listeners close.
    let closed_at = Instant::now() + LISTENER_DRAIN;
    let settle = Duration::from_millis(stack.config.sync_period_ms).saturating_mul(2);
    let mut clear_since: Option<Instant> = None;
    let mut last_said: Option<Instant> = None;
    loop {
        match supervisor.tick(stack) {
            Ok(lines) => lines.iter().for_each(|l| say(l)),
            Err(e) => say(&e),
        }
        let (debits, requests) = stack.owed();
        let cp_up = http_status(stack.config.control_port, "/readyz") == Some(200);
        if debits == 0 && requests == 0 && cp_up && Instant::now() >= closed_at {
            if clear_since.get_or_insert_with(Instant::now).elapsed() >= settle {
                return Stopped::Drained;
            }
        } else {
            clear_since = None;
        }
        if insist() {
            stack.abandoned = true;
            return Stopped::Abandoned { debits };
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            last_said = Some(Instant::now());
            if debits > 0 || requests > 0 {
                say(&format!(
                    "waiting: {requests} request(s) being served, {debits} debit(s) not yet with the control plane ({}); Ctrl-C again stops now and loses them",
                    if cp_up { "up" } else { "not answering" }
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
