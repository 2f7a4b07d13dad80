//! CPU placement while the gateway is measured: the ledger's processes (the control plane and every
//! PostgreSQL process) on one CPU, the gateway side (each Envoy, the bench upstreams, wrk and the
//! stream client) on the others.
//!
//! In production the control plane and its database run on their own machines; here they share the
//! two cores with the gateway, and only the billing filter's runs make them work (each debit costs
//! the ledger ~100 us of CPU). Unpinned, the filter's figures would carry the ledger's CPU and the
//! scheduler's delays when it wakes up, which the runs without a filter never see. Pinned, every
//! variant gets the same CPU for its gateway side and the ledger works beside it.

use std::collections::HashMap;
use std::process::Command;

use xtask::shell::Result;

/// Which CPUs each side gets (`taskset` lists, e.g. "0" and "1").
#[derive(Debug, Clone)]
pub struct Split {
    pub gateway: String,
    pub ledger: String,
}

/// The CPUs a process may run on (`Cpus_allowed_list` of /proc/<pid>/status, e.g. "0-3,6").
fn allowed_list(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_owned())
}

/// The CPU ids of a list such as "0-3,6".
fn cpu_ids(list: &str) -> Vec<u32> {
    list.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.trim().parse::<u32>().ok()?..=b.trim().parse::<u32>().ok()?).collect()),
            None => part.trim().parse::<u32>().ok().map(|c| vec![c]),
        })
        .flatten()
        .collect()
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Split {
    /// Of the CPUs this process may use, the last for the ledger and the others for the gateway;
    /// `None` with a single one.
    pub fn new() -> Option<Split> {
        let ids = cpu_ids(&allowed_list("self")?);
        let (ledger, gateway) = ids.split_last()?;
        if gateway.is_empty() {
            return None;
        }
        Some(Split {
            gateway: join(gateway),
            ledger: ledger.to_string(),
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
    /// returned guard is dropped. Each process's CPUs are read first and given back by the guard.
    pub fn apply(&self, ledger: &[u32], gateway: &[u32]) -> Result<Placed> {
        // The guard first: whatever was moved is given back even if a later move fails.
        let mut placed = Placed {
            saved: HashMap::new(),
            postgres_default: None,
        };
        let postgres = postgres_pids();
        if postgres.is_empty() {
            return Err("no PostgreSQL process on this machine to place".into());
        }
        // Backends forked while placed inherit the placement; they get the postmaster's CPUs back.
        placed.postgres_default = postgres
            .iter()
            .filter_map(|pid| allowed_list(&pid.to_string()))
            .max_by_key(|l| cpu_ids(l).len());
        let moves = ledger
            .iter()
            .chain(&postgres)
            .map(|p| (*p, &self.ledger))
            .chain(gateway.iter().map(|p| (*p, &self.gateway)));
        for (pid, cpus) in moves {
            let Some(before) = allowed_list(&pid.to_string()) else {
                continue; // ended meanwhile (a backend)
            };
            placed.saved.insert(pid, before);
            if let Err(e) = move_process(pid, cpus) {
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(e);
                }
            }
        }
        Ok(placed)
    }
}

/// While it lives, the processes moved stay where they were placed; dropped (at the end of the
/// gateway part, or on an error), each gets back the CPUs it had, and PostgreSQL backends started
/// meanwhile get their server's. An interrupted bench (Ctrl-C) leaves them placed until the next
/// run of the bench or `taskset`.
pub struct Placed {
    saved: HashMap<u32, String>,
    postgres_default: Option<String>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        let mut pids: Vec<u32> = self.saved.keys().copied().collect();
        pids.extend(
            postgres_pids()
                .into_iter()
                .filter(|p| !self.saved.contains_key(p)),
        );
        for pid in pids {
            let cpus = self.saved.get(&pid).or(self.postgres_default.as_ref());
            let Some(cpus) = cpus else { continue };
            if let Err(e) = move_process(pid, cpus) {
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    eprintln!("warning: {e}");
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_ids() {
        assert_eq!(cpu_ids("0-1"), vec![0, 1]);
        assert_eq!(cpu_ids("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(cpu_ids("5"), vec![5]);
        assert_eq!(join(&[0, 2, 3]), "0,2,3");
    }
}
