//! `cargo xtask bench --docs`: `docs/performance.md` regenerated from the last full run's report
//! (`target/bench/report.md`), so that the published figures are always one run's, whole, with
//! the machine they ran on. Earlier figures stay in git history, not in the text.

use std::path::Path;

use xtask::shell::Result;

/// What the page says before the run's report.
const INTRO: &str = "# Performance

<!-- Written by `cargo xtask bench --docs` from target/bench/report.md (the last full
`cargo xtask bench`); do not edit by hand: run the bench, then the command. Earlier runs are in
git history (`git log -p docs/performance.md`). -->

`cargo xtask bench` measures the gateway side by side in one run: the same Envoy 1.40 configuration
without any filter, with a do-nothing wasm filter (`bench/noop-filter`: the floor any Proxy-Wasm
filter pays in Envoy's V8), with the same module making only the host calls any filter billing by
the contract must make per request (the host-call floor), and with the billing filter; then the
filter's own work without Envoy, the ledger's debit ingest into PostgreSQL and sync at 100,000 keys.
The method of each measurement is at the end of the report below.

The figure to compare changes of the filter by is the instruction count per request above the
host-call floor (`cargo xtask bench --instructions`, about a minute and a half once built): CPU
time and latency on shared VMs move by 10% and more from round to round and by a factor of four
between VMs, instruction counts by a few percent. Other modes: `--quick` (the smoke test that
`cargo xtask test` runs: figures produced, not meaningful), `--gateway-only [--filter-set
NAME=JSON]...`, `--ledger [--reps N] [--bin PATH]...` (control-plane builds compared on ingest).

";

/// The page for a report: the introduction, then the report's sections as they are.
pub fn render(report: &str) -> Result<String> {
    let body = report
        .strip_prefix("# ClaudeStore gateway benchmark\n")
        .ok_or("not a report of `cargo xtask bench` (its first line differs)")?;
    if report
        .lines()
        .any(|l| l.starts_with("- mode: ") && l != "- mode: full")
    {
        return Err(
            "the report is not a full run's (--quick figures are not meaningful): run \
                    `cargo xtask bench` first"
                .into(),
        );
    }
    let body = body
        .trim_start()
        .strip_prefix("Written by `cargo xtask bench`.")
        .unwrap_or(body)
        .trim_start();
    Ok(format!("{INTRO}{}\n", body.trim_end()))
}

/// Writes `docs/performance.md` from `target/bench/report.md`.
pub fn write(root: &Path) -> Result {
    let from = root.join("target/bench/report.md");
    let report = std::fs::read_to_string(&from)
        .map_err(|e| format!("{}: {e} (run `cargo xtask bench` first)", from.display()))?;
    let to = root.join("docs/performance.md");
    std::fs::write(&to, render(&report)?).map_err(|e| format!("{}: {e}", to.display()))?;
    println!("{} written from {}", to.display(), from.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    fn report(mode: &str) -> String {
        let mut r = Report::default();
        r.note("mode", mode);
        r.note("cpus", "2 x Example CPU");
        r.add(
            "wasm_size",
            123_456.0,
            "bytes",
            "target/wasm32-wasip1/wasm/filter.wasm",
        );
        r.method = vec!["**Gateway overhead.** How it is measured.".into()];
        let dir = std::env::temp_dir().join(format!("bench-docs-{}-{}", std::process::id(), mode.len()));
        r.write(&dir).unwrap();
        std::fs::read_to_string(dir.join("report.md")).unwrap()
    }

    #[test]
    fn the_page_is_the_introduction_then_the_full_runs_report() {
        let page = render(&report("full")).unwrap();
        assert!(page.starts_with("# Performance\n"));
        assert_eq!(page.matches("# ClaudeStore gateway benchmark").count(), 0);
        assert!(!page.contains("Written by `cargo xtask bench`."));
        for part in [
            "## Machine and run",
            "- cpus: 2 x Example CPU",
            "| wasm_size | 123456 | bytes |",
            "## Method",
            "How it is measured.",
        ] {
            assert!(page.contains(part), "{part} missing from:\n{page}");
        }
        assert!(page.ends_with("How it is measured.\n"));
    }

    #[test]
    fn a_smoke_run_or_another_file_is_refused() {
        let quick = render(&report(
            "--quick (smoke test on debug builds: figures are produced, not meaningful)",
        ));
        assert!(quick.unwrap_err().contains("not a full run's"));
        assert!(render("# Something else\n").is_err());
    }
}
