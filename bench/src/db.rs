//! The benchmark's direct database access, through `psql`: resetting its database, bulk fixtures
//! (thousands of accounts and keys written by SQL, as an import would: creating them one by one
//! through the admin API is not what is measured), and the exactly-once checks.

use std::process::Command;

use xtask::shell::Result;

/// Runs SQL (one or more statements) and returns psql's unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql failed: {}\nSQL: {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            sql.chars().take(300).collect::<String>()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Drops the benchmark's database (the control plane creates and migrates it again at start).
pub fn reset(server_url: &str, name: &str) -> Result {
    psql(
        &format!("{server_url}/postgres"),
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .map(|_| ())
}

/// Creates `n` accounts, each with one active key (hash of `<tag>-<i>`), all in one transaction
/// stamped with one new sync version, like the admin API would (minus the audit records).
pub fn bulk_accounts(url: &str, tag: &str, n: u64) -> Result {
    let sql = format!(
        "BEGIN;
         CREATE TEMP TABLE bench_new ON COMMIT DROP AS
             SELECT gen_random_uuid() AS id, i FROM generate_series(1, {n}) AS i;
         UPDATE sync_state SET version = version + 1;
         INSERT INTO accounts (id, name, email)
             SELECT id, 'bench {tag} ' || lpad(i::text, 7, '0'), 'bench' || i || '@{tag}.bench.example.com' FROM bench_new;
         INSERT INTO ledger_accounts (id, account_id, sync_version)
             SELECT id, id, (SELECT version FROM sync_state) FROM bench_new;
         INSERT INTO api_keys (id, account_id, name, key_hash, prefix, sync_version)
             SELECT gen_random_uuid(), id, 'bench', encode(sha256(convert_to('{tag}-' || i, 'UTF8')), 'hex'),
                    'csk_bench', (SELECT version FROM sync_state) FROM bench_new;
         COMMIT;"
    );
    psql(url, &sql).map(|_| ())
}

/// The accounts of a bulk fixture with their key hashes, in creation order.
pub fn fixture(url: &str, tag: &str) -> Result<Vec<(String, String)>> {
    let rows = psql(
        url,
        &format!(
            "SELECT a.id, k.key_hash FROM accounts a JOIN api_keys k ON k.account_id = a.id
             WHERE a.email LIKE '%@{tag}.bench.example.com' ORDER BY a.name"
        ),
    )?;
    Ok(rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(a, k)| (a.to_owned(), k.to_owned()))
        .collect())
}

pub fn scalar(url: &str, sql: &str) -> Result<f64> {
    let v = psql(url, sql)?;
    v.parse()
        .map_err(|_| format!("expected a number from `{sql}`, got {v:?}"))
}
