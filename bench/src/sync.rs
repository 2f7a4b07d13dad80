//! Sync at scale: many keys in the database, the filter's cache filled from the control plane
//! (Envoy's memory before and after), a full snapshot's size and time at the filter's page size,
//! and a delta after 100 changes made through the admin API.

use std::time::{Duration, Instant};

use filter_core::sync::snapshot::Progress;
use tests::stack::http_json;

use crate::db::{bulk_accounts, psql, scalar};
use crate::gateway::{envoy_stat, rss_mib};
use crate::report::Report;
use xtask::shell::Result;

/// The filter's default `snapshot_page_limit`: what a gateway asks for.
const PAGE_LIMIT: u32 = 500;
const CHANGES: usize = 100;

pub struct Scale<'a> {
    pub control_port: u16,
    pub admin_token: &'a str,
    pub internal_token: &'a str,
    pub database_url: &'a str,
    pub envoy_admin_port: u16,
    pub envoy_pid: u32,
    /// The filter's `sync_period_ms`.
    pub sync_period_ms: u64,
}

/// Pages of one snapshot, fetched one after another: total bytes, wall time, rows of each kind.
struct Fetched {
    bytes: usize,
    seconds: f64,
    pages: usize,
    full: bool,
    keys: usize,
}

/// The value of `"next_cursor"` in a page, found without parsing the whole page (the client's
/// parsing is not part of the figure).
fn next_cursor(page: &str) -> Option<String> {
    let at = page.rfind("\"next_cursor\":")?;
    let rest = page.get(at + "\"next_cursor\":".len()..)?.trim_start();
    let rest = rest.strip_prefix('"')?;
    rest.find('"').and_then(|end| rest.get(..end)).map(str::to_owned)
}

fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

impl Scale<'_> {
    /// Every page of the snapshot since `since` (0: a full one).
    fn fetch(&self, since: u64) -> Result<Fetched> {
        let mut f = Fetched {
            bytes: 0,
            seconds: 0.0,
            pages: 0,
            full: false,
            keys: 0,
        };
        // Paged as the filter pages (the same cursor handling and query).
        let mut paging = Progress::default();
        paging.start(since, 0);
        let start = Instant::now();
        loop {
            let path = paging.path(PAGE_LIMIT);
            let (status, page) = http_json("GET", self.control_port, &path, Some(self.internal_token), None)?;
            if status != 200 {
                return Err(format!("snapshot page answered {status}: {page}"));
            }
            f.bytes += page.len();
            f.pages += 1;
            f.full |= page.contains("\"full\":true");
            f.keys += count(&page, "\"key_hash\":");
            if !paging.page_applied(next_cursor(&page), false, 0, 0) {
                break;
            }
        }
        f.seconds = start.elapsed().as_secs_f64();
        Ok(f)
    }

    fn sync_pages(&self) -> f64 {
        envoy_stat(self.envoy_admin_port, "wasmcustom.claudestore.sync.pages")
    }

    pub fn run(&self, report: &mut Report, keys: u64) -> Result {
        let rss_before = rss_mib(self.envoy_pid);
        let pages_before = self.sync_pages();
        let inserted = Instant::now();
        bulk_accounts(self.database_url, "sync", keys)?;
        println!(
            "  {keys} accounts with a key each written in {:.1} s",
            inserted.elapsed().as_secs_f64()
        );

        // The filter's leader pulls the new rows as a delta of about 2 x keys rows, page after page
        // at once; then it is back to one (empty) page per sync period. Filled when the page count
        // has grown by the expected pages and then grows at the idle rate only.
        let filled_at = Instant::now();
        let expected_pages = (2 * keys).div_ceil(u64::from(PAGE_LIMIT)) as f64;
        let idle_pages_per_s = 1000.0 / self.sync_period_ms.max(1) as f64 + 1.0;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut samples: Vec<(f64, Instant)> = vec![(self.sync_pages(), Instant::now())];
        let fill_seconds = loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = (self.sync_pages(), Instant::now());
            samples.push(now);
            let window = samples
                .iter()
                .rev()
                .find(|(_, t)| now.1.duration_since(*t) >= Duration::from_secs(1))
                .copied();
            if let Some((p0, t0)) = window {
                let rate = (now.0 - p0) / now.1.duration_since(t0).as_secs_f64();
                if now.0 - pages_before >= expected_pages && rate <= idle_pages_per_s {
                    break t0.duration_since(filled_at).as_secs_f64();
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the filter's cache did not fill: {} pages of about {expected_pages} in 300 s",
                    now.0 - pages_before
                ));
            }
        };
        let rss_after = rss_mib(self.envoy_pid);
        let total_keys = scalar(self.database_url, "SELECT count(*) FROM api_keys")?;
        report.add(
            "sync_keys",
            total_keys,
            "keys",
            "keys in the database (and in the filter's cache)",
        );
        report.add(
            "envoy_rss_before_fill",
            rss_before,
            "MiB",
            "Envoy resident memory (VmRSS) with a handful of keys cached",
        );
        report.add(
            "envoy_rss_filled",
            rss_after,
            "MiB",
            "Envoy resident memory with every key and account cached in shared data",
        );
        report.add(
            "envoy_fill_seconds",
            fill_seconds,
            "s",
            "from the rows' commit until the filter's pages slow to the idle rate (within 1 s)",
        );

        let full = self.fetch(0)?;
        if !full.full || (full.keys as f64) < total_keys {
            return Err(format!(
                "the full snapshot held {} keys of {total_keys} (full: {})",
                full.keys, full.full
            ));
        }
        report.add(
            "sync_full_bytes",
            full.bytes as f64,
            "bytes",
            &format!(
                "full snapshot, every page ({} pages of {PAGE_LIMIT} rows)",
                full.pages
            ),
        );
        report.add(
            "sync_full_ms",
            full.seconds * 1e3,
            "ms",
            "full snapshot, every page fetched one after another",
        );

        let since = scalar(self.database_url, "SELECT version FROM sync_state")? as u64;
        let ids = psql(
            self.database_url,
            &format!(
                "SELECT k.id FROM api_keys k JOIN accounts a ON a.id = k.account_id
                 WHERE a.email LIKE '%@sync.bench.example.com' AND k.status = 'active' LIMIT {CHANGES}"
            ),
        )?;
        let ids: Vec<&str> = ids.lines().collect();
        for id in &ids {
            let (status, body) = http_json(
                "DELETE",
                self.control_port,
                &format!("/v1/keys/{id}"),
                Some(self.admin_token),
                None,
            )?;
            if status != 204 {
                return Err(format!("revoking key {id} answered {status}: {body}"));
            }
        }
        let delta = self.fetch(since)?;
        if delta.full || delta.keys != ids.len() {
            return Err(format!(
                "the delta after {} revocations held {} keys (full: {})",
                ids.len(),
                delta.keys,
                delta.full
            ));
        }
        report.add(
            "sync_delta_changes",
            ids.len() as f64,
            "keys",
            "keys revoked through the admin API before the delta",
        );
        report.add(
            "sync_delta_bytes",
            delta.bytes as f64,
            "bytes",
            "delta snapshot since the version before the revocations",
        );
        report.add("sync_delta_ms", delta.seconds * 1e3, "ms", "delta snapshot time");
        report.add(
            "sync_delta_percent_of_full",
            delta.bytes as f64 * 100.0 / full.bytes as f64,
            "%",
            "delta bytes as a percentage of the full snapshot's",
        );
        Ok(())
    }
}
