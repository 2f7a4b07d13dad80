//! Ledger ingest: debits per second through `POST /internal/v1/debits` into PostgreSQL, spread over
//! many accounts and on one hot account, then checked exactly-once in the database (count, sum,
//! transfers, balances) and by replaying a batch.
//!
//! The request bodies are built before the clock starts, and the answers are read only after it
//! stops, so the client's work is not in the figure. Batches are the filter's default size and are
//! sent by several connections at once, as several gateway workers would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::db::psql;
use xtask::shell::Result;

/// The usage of every bench debit: 1,000 input, 500 output, 200 cache reads, 100 cache writes.
const USAGE: &str = r#"{"input_tokens":1000,"output_tokens":500,"thinking_tokens":0,"cache_write_5m_tokens":100,"cache_write_1h_tokens":0,"cache_read_tokens":200,"web_search_requests":0,"web_fetch_requests":0}"#;

pub struct Ingest<'a> {
    pub control_port: u16,
    pub internal_token: &'a str,
    pub database_url: &'a str,
    /// Debits per batch.
    pub batch: usize,
    /// Connections sending at once.
    pub senders: usize,
    /// Unique per run: debit ids and the batches' `gateway_id` derive from it.
    pub run_id: u64,
    /// The control plane's process, for its CPU per debit.
    pub control_plane_pid: Option<u32>,
}

/// The measured rate and the checks of one ingest run.
pub struct IngestResult {
    pub debits_per_s: f64,
    pub exactly_once: bool,
    /// PostgreSQL's CPU (every `postgres` process, user + system) per debit, microseconds: less
    /// sensitive than the rate to what else the machine runs.
    pub pg_cpu_us: f64,
    /// The control plane's CPU per debit, microseconds (NaN when its process is not known).
    pub control_plane_cpu_us: f64,
}

/// CPU time so far (user + system) of every process named `postgres`, microseconds.
pub fn postgres_cpu_us() -> f64 {
    crate::pin::postgres_pids()
        .into_iter()
        .map(crate::gateway::cpu_us)
        .sum()
}

fn debit_id(run: u64, phase: u32, i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        run >> 32,
        (run >> 16) & 0xffff,
        run & 0xfff,
        phase & 0xfff,
        i
    )
}

fn debit_json(id: &str, account: &str, key_hash: &str, at: &str) -> String {
    format!(
        r#"{{"debit_id":"{id}","key_hash":"{key_hash}","account_id":"{account}","route":"anthropic_messages","model_requested":"claude-sonnet-4-5","model_served":"claude-sonnet-4-5-20250929","usage":{USAGE},"partial":false,"output_estimated":false,"admitted_at":"{at}","finished_at":"{at}","upstream_request_id":"req_bench","upstream_message_id":"msg_bench","upstream_status":200}}"#
    )
}

/// A keep-alive HTTP/1.1 connection on loopback: to the control plane, or to a gateway (the
/// token goes in `Authorization: Bearer`, where a gateway reads the caller's key too).
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(port: u16) -> Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends one POST and returns the status and body.
    pub fn post(&mut self, path: &str, token: &str, body: &str) -> Result<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer
            .write_all(req.as_bytes())
            .and_then(|_| self.writer.write_all(body.as_bytes()))
            .map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())?;
                let start = out.len();
                out.resize(start + size + 2, 0);
                self.reader
                    .read_exact(out.get_mut(start..).unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                out.truncate(start + size);
                if size == 0 {
                    break;
                }
            }
        } else {
            out.resize(length.unwrap_or(0), 0);
            self.reader.read_exact(&mut out).map_err(|e| e.to_string())?;
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

impl Ingest<'_> {
    /// Sends `total` debits spread round-robin over `accounts` and checks them.
    pub fn run(&self, phase: u32, accounts: &[(String, String)], total: usize) -> Result<IngestResult> {
        if accounts.is_empty() {
            return Err("no accounts for the ingest run".into());
        }
        let gateway = format!("bench-{:x}-{phase}", self.run_id);
        let at = psql(
            self.database_url,
            "SELECT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        )?;
        let bodies: Vec<String> = (0..total)
            .collect::<Vec<_>>()
            .chunks(self.batch)
            .map(|chunk| {
                let debits: Vec<String> = chunk
                    .iter()
                    .map(|i| {
                        let (account, key) = accounts.get(i % accounts.len()).cloned().unwrap_or_default();
                        debit_json(&debit_id(self.run_id, phase, *i as u64), &account, &key, &at)
                    })
                    .collect();
                format!(
                    r#"{{"protocol":1,"gateway_id":"{gateway}","debits":[{}]}}"#,
                    debits.join(",")
                )
            })
            .collect();
        let balances_before = self.balances(accounts)?;
        let bodies = Arc::new(bodies);
        let next = Arc::new(AtomicUsize::new(0));
        let pg_before = postgres_cpu_us();
        let cp_before = self.control_plane_pid.map(crate::gateway::cpu_us);
        let start = Instant::now();
        let handles: Vec<_> = (0..self.senders)
            .map(|_| {
                let bodies = Arc::clone(&bodies);
                let next = Arc::clone(&next);
                let token = self.internal_token.to_owned();
                let port = self.control_port;
                std::thread::spawn(move || -> Result<Vec<(u16, String)>> {
                    let mut conn = Conn::open(port)?;
                    let mut answers = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else {
                            return Ok(answers);
                        };
                        answers.push(conn.post("/internal/v1/debits", &token, body)?);
                    }
                })
            })
            .collect();
        let mut answers = Vec::new();
        for h in handles {
            answers.extend(h.join().map_err(|_| "an ingest sender panicked")??);
        }
        let secs = start.elapsed().as_secs_f64();
        let debits_per_s = total as f64 / secs;
        let pg_cpu_us = (postgres_cpu_us() - pg_before) / total as f64;
        let control_plane_cpu_us = match (self.control_plane_pid, cp_before) {
            (Some(pid), Some(before)) => (crate::gateway::cpu_us(pid) - before) / total as f64,
            _ => f64::NAN,
        };
        println!(
            "  ingest phase {phase}: {total} debits in {secs:.2} s = {debits_per_s:.0}/s; CPU per debit: \
             PostgreSQL {pg_cpu_us:.1} us, control plane {control_plane_cpu_us:.1} us"
        );

        // Every answer: 200, every debit applied, all at one cost.
        let mut applied = 0usize;
        let mut costs = std::collections::BTreeSet::new();
        for (status, body) in &answers {
            if *status != 200 {
                return Err(format!("debits answered {status}: {body}"));
            }
            let ack: Value = serde_json::from_str(body).map_err(|e| format!("unreadable ack: {e}"))?;
            for r in ack["results"].as_array().into_iter().flatten() {
                if r["outcome"] == "applied" {
                    applied += 1;
                    costs.insert(r["credits"].as_str().unwrap_or("").to_owned());
                } else {
                    return Err(format!("a bench debit was not applied: {r}"));
                }
            }
        }
        let unit = match (applied == total, costs.len()) {
            (true, 1) => costs.into_iter().next().unwrap_or_default(),
            _ => return Err(format!("{applied} of {total} debits applied, costs {costs:?}")),
        };
        let exactly_once = self.check(&gateway, total, &unit, accounts, &balances_before)?;
        // Replaying a batch changes nothing and answers `duplicate` for each debit.
        let replay_ok = match bodies.first() {
            Some(body) => {
                let (status, text) =
                    Conn::open(self.control_port)?.post("/internal/v1/debits", self.internal_token, body)?;
                let ack: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                status == 200
                    && ack["results"]
                        .as_array()
                        .is_some_and(|r| r.iter().all(|x| x["outcome"] == "duplicate"))
                    && self.check(&gateway, total, &unit, accounts, &balances_before)?
            }
            None => false,
        };
        Ok(IngestResult {
            debits_per_s,
            exactly_once: exactly_once && replay_ok,
            pg_cpu_us,
            control_plane_cpu_us,
        })
    }

    /// The sum of the accounts' balances, as exact decimal text.
    fn balances(&self, accounts: &[(String, String)]) -> Result<String> {
        let ids: Vec<String> = accounts.iter().map(|(a, _)| format!("'{a}'")).collect();
        psql(
            self.database_url,
            &format!(
                "SELECT sum(balance) FROM ledger_accounts WHERE id IN ({})",
                ids.join(",")
            ),
        )
    }

    /// Count and sum of what the database holds for the run's debits (usage records, transfers,
    /// entries), and the accounts' balances fallen by exactly that sum since `balances_before`.
    fn check(
        &self,
        gateway: &str,
        total: usize,
        unit: &str,
        accounts: &[(String, String)],
        balances_before: &str,
    ) -> Result<bool> {
        let url = self.database_url;
        let sql = format!(
            "SELECT (SELECT count(*) FROM usage_records WHERE gateway_id = '{gateway}') = {total}
                AND (SELECT count(DISTINCT debit_id) FROM usage_records WHERE gateway_id = '{gateway}') = {total}
                AND (SELECT sum(cost) FROM usage_records WHERE gateway_id = '{gateway}') = {total} * {unit}::numeric
                AND (SELECT count(*) FROM transfers t JOIN usage_records u ON u.transfer_id = t.id
                     WHERE u.gateway_id = '{gateway}') = {total}
                AND (SELECT sum(t.amount) FROM transfers t JOIN usage_records u ON u.transfer_id = t.id
                     WHERE u.gateway_id = '{gateway}') = {total} * {unit}::numeric
                AND (SELECT count(*) FROM entries e JOIN usage_records u ON u.transfer_id = e.transfer_id
                     WHERE u.gateway_id = '{gateway}') = 2 * {total}"
        );
        let ok = psql(url, &sql)? == "t";
        let after = self.balances(accounts)?;
        let balanced = psql(
            url,
            &format!("SELECT {after}::numeric = {balances_before}::numeric - {total} * {unit}::numeric"),
        )? == "t";
        if !ok || !balanced {
            println!("  exactly-once check FAILED for {gateway}: rows/sums {ok}, balances {balances_before} -> {after}");
        }
        Ok(ok && balanced)
    }
}
