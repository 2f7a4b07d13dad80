//! CPU placement while the gateway is measured: the ledger's processes (the control plane and every
//! PostgreSQL process) on one CPU, the gateway side (each Envoy, the bench upstreams, wrk and the
//! stream client) on the others.
//!
//! In production the control plane and its database run on their own machines; here they share the
//! two cores with the gateway, and only the billing filter's runs make them work (each debit costs
//! the ledger ~100 us of CPU). Unpinned, the filter's figures would carry the ledger's CPU and the
//! scheduler's delays when it wakes up, which the runs without a filter never see. Pinned, every
//! variant gets the same CPU for its gateway side and the ledger works beside it.

use std::process::Command;

use crate::shell::Result;

/// Which CPUs each side gets (`taskset` lists, e.g. "0" and "1").
#[derive(Debug, Clone)]
pub struct Split {
    pub gateway: String,
    pub ledger: String,
    /// Every CPU, to give processes back when the gateway part is over.
    all: String,
}

impl Split {
    /// The last CPU for the ledger, the others for the gateway; `None` on a single CPU.
    pub fn new() -> Option<Split> {
        let n = std::thread::available_parallelism().ok()?.get();
        if n < 2 {
            return None;
        }
        Some(Split {
            gateway: if n == 2 {
                "0".to_owned()
            } else {
                format!("0-{}", n - 2)
            },
            ledger: (n - 1).to_string(),
            all: format!("0-{}", n - 1),
        })
    }

    /// `program` to be started on the gateway's CPUs.
    pub fn on_gateway(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.gateway]).arg(program);
        cmd
    }

    /// Moves the running ledger processes (the control plane, every PostgreSQL process; backends
    /// forked later inherit the postmaster's CPUs) and the gateway side's processes, until the
    /// returned guard is dropped.
    pub fn apply(&self, ledger: Vec<u32>, gateway: &[u32]) -> Result<Placed> {
        // The guard first: whatever was moved is given back even if a later move fails.
        let placed = Placed {
            all: self.all.clone(),
            ledger,
        };
        for pid in &placed.ledger {
            move_process(*pid, &self.ledger)?;
        }
        move_postgres(&self.ledger)?;
        for pid in gateway {
            move_process(*pid, &self.gateway)?;
        }
        Ok(placed)
    }
}

/// While it lives, the ledger's processes stay on the ledger's CPU; dropped, they get every CPU
/// back (PostgreSQL is the machine's server, not the bench's). The gateway side's processes end
/// with the gateway part.
pub struct Placed {
    all: String,
    ledger: Vec<u32>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        for pid in &self.ledger {
            if let Err(e) = move_process(*pid, &self.all) {
                eprintln!("warning: {e}");
            }
        }
        if let Err(e) = move_postgres(&self.all) {
            eprintln!("warning: {e}");
        }
    }
}

/// Every thread of `pid` onto `cpus`.
fn move_process(pid: u32, cpus: &str) -> Result {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("cannot run taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every PostgreSQL process onto `cpus`; one that ended meanwhile (a backend) is no error.
fn move_postgres(cpus: &str) -> Result {
    let pids = postgres_pids();
    if pids.is_empty() {
        return Err("no PostgreSQL process found to place".into());
    }
    for pid in pids {
        if let Err(e) = move_process(pid, cpus) {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Every process named `postgres` (the server, its helpers and backends).
pub fn postgres_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(postgres)"))
        })
        .collect()
}
