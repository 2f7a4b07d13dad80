//! The whole gateway as processes on loopback: control plane, Envoy with the billing filter, and
//! (in demo mode and in tests) the fake upstream. Used by `cargo xtask up` and the end-to-end suite,
//! so both run exactly the same binaries, configuration template and ports.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
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
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
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
        all.get(all.len().saturating_sub(lines)..).unwrap_or_default().join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
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
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
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
            return Err(format!("{} exited during start-up:\n{}", proc.name, proc.log_tail(40)));
        }
        if Instant::now() > deadline {
            return Err(format!("{} not ready on port {port}{path} after {timeout:?}:\n{}", proc.name, proc.log_tail(40)));
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
        let value = values.get(name).ok_or_else(|| format!("template placeholder ${{{name}}} has no value"))?;
        out.push_str(value);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}
