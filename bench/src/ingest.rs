//! `cargo xtask bench --ledger [--reps N] [--spread N] [--hot N] [--scale N] [--batch N] [--bin PATH]... [--db-set name=value]...`:
//! only the ledger ingest part of the benchmark, for profiling it. `--scale N` first adds N accounts
//! with a key each (the full benchmark's sync step leaves 100,000). Each control-plane binary (by default the release
//! build of the working tree) gets its own fresh database and process; the repetitions alternate
//! between the binaries (spread run, then hot run, each checked exactly-once), so an old and a new
//! build are measured side by side under the same machine drift. Prints the median of each.

use std::process::Command;
use std::time::Duration;

use tests::stack::{self, free_port, Proc};

use crate::{db, ledger, loadavg, random_u64, repeated, settings};
use xtask::shell::{self, step, Result};
use xtask::{postgres, tools};

struct Target {
    bin: String,
    proc: Proc,
    port: u16,
    database_url: String,
    spread: Vec<(String, String)>,
    hot: Vec<(String, String)>,
    spread_rates: Vec<f64>,
    hot_rates: Vec<f64>,
    /// PostgreSQL CPU per debit of each spread run, microseconds.
    spread_pg_cpu: Vec<f64>,
}

fn value<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0,
    }
}

pub fn run(args: &[String]) -> Result {
    let reps: usize = value(args, "--reps", 5)?;
    let spread_n: usize = value(args, "--spread", 20_000)?;
    let hot_n: usize = value(args, "--hot", 10_000)?;
    let scale: u64 = value(args, "--scale", 0)?;
    let batch: usize = value(args, "--batch", 1_000)?;
    let mut bins: Vec<String> = repeated(args, "--bin").into_iter().map(str::to_owned).collect();
    let db_settings = settings(args, "--db-set");
    if bins.is_empty() {
        step(
            "build control plane (release)",
            tools::build_control_plane_release,
        )?;
        bins.push(
            shell::root()
                .join("target/release/control-plane")
                .display()
                .to_string(),
        );
    }
    let pg = step("PostgreSQL", postgres::ensure)?;
    let work_dir = shell::root().join("target/bench/ingest");
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let token = format!("bench-internal-{:x}", random_u64());
    let mut targets = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let name = format!("claudestore_bench_ingest_{i}");
        db::reset(&pg.server_url, &name)?;
        if !db_settings.is_empty() {
            // Profiling settings (e.g. auto_explain) for this database's sessions only.
            let admin = format!("{}/postgres", pg.server_url);
            db::psql(&admin, &format!("CREATE DATABASE \"{name}\""))?;
            for (k, v) in &db_settings {
                db::psql(&admin, &format!("ALTER DATABASE \"{name}\" SET {k} = '{v}'"))?;
            }
        }
        let database_url = pg.database_url(&name);
        let port = free_port()?;
        let dir = work_dir.join(format!("cp{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.env("CONTROL_PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("ADMIN_TOKEN", format!("bench-admin-{:x}", random_u64()))
            .env("INTERNAL_TOKEN", &token)
            .env("DATABASE_URL", &database_url)
            .env("PRICE_FACTOR", "0.70")
            .env("DATA_DIR", dir.join("data"))
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"));
        let mut proc = Proc::spawn(
            if i == 0 {
                "control-plane-0"
            } else {
                "control-plane-n"
            },
            &mut cmd,
            &dir,
        )?;
        stack::wait_ready(&mut proc, port, "/readyz", Duration::from_secs(90))?;
        if scale > 0 {
            db::bulk_accounts(&database_url, "scale", scale)?;
        }
        db::bulk_accounts(&database_url, "ingest", 1_000)?;
        db::bulk_accounts(&database_url, "hot", 1)?;
        let spread = db::fixture(&database_url, "ingest")?;
        let hot = db::fixture(&database_url, "hot")?;
        targets.push(Target {
            bin: bin.clone(),
            proc,
            port,
            database_url,
            spread,
            hot,
            spread_rates: Vec::new(),
            hot_rates: Vec::new(),
            spread_pg_cpu: Vec::new(),
        });
    }
    println!("load average before: {}", loadavg());
    let mut phase = 0u32;
    for rep in 0..reps {
        for t in targets.iter_mut() {
            let ingest = ledger::Ingest {
                control_port: t.port,
                internal_token: &token,
                database_url: &t.database_url,
                batch,
                senders: 4,
                run_id: random_u64(),
                control_plane_pid: Some(t.proc.pid()),
            };
            println!("rep {rep} {} (load {})", t.bin, loadavg());
            phase += 1;
            let s = ingest.run(phase, &t.spread, spread_n)?;
            phase += 1;
            let h = ingest.run(phase, &t.hot, hot_n)?;
            if !(s.exactly_once && h.exactly_once) {
                return Err(format!("exactly-once check failed for {}", t.bin));
            }
            t.spread_rates.push(s.debits_per_s);
            t.hot_rates.push(h.debits_per_s);
            t.spread_pg_cpu.push(s.pg_cpu_us);
            if !t.proc.is_running() {
                return Err(format!("{} stopped:\n{}", t.bin, t.proc.log_tail(20)));
            }
        }
    }
    println!("load average after: {}", loadavg());
    for t in &targets {
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
        println!(
            "INGEST {} spread median {:.0}/s [{}] hot median {:.0}/s [{}] PostgreSQL CPU per spread debit \
             median {:.1} us",
            t.bin,
            median(&t.spread_rates),
            fmt(&t.spread_rates),
            median(&t.hot_rates),
            fmt(&t.hot_rates),
            median(&t.spread_pg_cpu)
        );
    }
    Ok(())
}
