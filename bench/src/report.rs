//! The benchmark's figures, its targets, and the report: `BENCH <name> <value> <unit>` lines on
//! standard output, `target/bench/report.md` and `target/bench/report.json`.

use std::path::Path;

use serde_json::{json, Value};

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What it is, for the report.
    pub what: String,
}

/// A target from issue 7 on one figure.
pub struct Target {
    pub figure: &'static str,
    pub at_least: Option<f64>,
    pub at_most: Option<f64>,
}

/// Every figure a run must produce (the `--quick` check), in report order.
pub const EXPECTED: &[&str] = &[
    "wasm_size",
    "gateway_c16_rps_plain",
    "gateway_c16_rps_noop",
    "gateway_c16_rps_hostcalls",
    "gateway_c16_rps_filter",
    "gateway_c16_rps_ratio_noop",
    "gateway_c16_rps_ratio_hostcalls",
    "gateway_c16_rps_ratio",
    "gateway_c16_p50_plain",
    "gateway_c16_p50_noop",
    "gateway_c16_p50_hostcalls",
    "gateway_c16_p50_filter",
    "gateway_c16_p99_plain",
    "gateway_c16_p99_noop",
    "gateway_c16_p99_hostcalls",
    "gateway_c16_p99_filter",
    "gateway_c1_p50_plain",
    "gateway_c1_p50_noop",
    "gateway_c1_p50_hostcalls",
    "gateway_c1_p50_filter",
    "gateway_c1_p50_added_noop",
    "gateway_c1_p50_added_hostcalls",
    "gateway_c1_p50_added",
    "gateway_c1_p99_plain",
    "gateway_c1_p99_noop",
    "gateway_c1_p99_hostcalls",
    "gateway_c1_p99_filter",
    "gateway_c1_p99_added_noop",
    "gateway_c1_p99_added_hostcalls",
    "gateway_c1_p99_added",
    "gateway_c1_p999_added_noop",
    "gateway_c1_p999_added_hostcalls",
    "gateway_c1_p999_added",
    "envoy_cpu_per_request_plain",
    "envoy_cpu_per_request_noop",
    "envoy_cpu_per_request_hostcalls",
    "envoy_cpu_per_request_filter",
    "noop_cpu_per_request",
    "hostcalls_cpu_per_request",
    "filter_cpu_per_request",
    "filter_cpu_above_noop",
    "filter_cpu_above_hostcalls",
    "envoy_instructions_plain",
    "envoy_instructions_noop",
    "envoy_instructions_hostcalls",
    "envoy_instructions_filter",
    "filter_instructions_per_request",
    "filter_instructions_above_noop",
    "hostcalls_instructions_above_noop",
    "filter_instructions_above_hostcalls",
    "filter_own_work_native",
    "filter_own_work_v8",
    "filter_batch_share_native",
    "filter_batch_share_v8",
    "stream_ttfb_p50_plain",
    "stream_ttfb_p50_noop",
    "stream_ttfb_p50_hostcalls",
    "stream_ttfb_p50_filter",
    "stream_duration_p50_filter",
    "stream_first_byte_before_end",
    "stream_event_p50_plain",
    "stream_event_p50_noop",
    "stream_event_p50_hostcalls",
    "stream_event_p50_filter",
    "stream_event_p50_added_noop",
    "stream_event_p50_added_hostcalls",
    "stream_event_p50_added",
    "stream_event_p99_plain",
    "stream_event_p99_noop",
    "stream_event_p99_hostcalls",
    "stream_event_p99_filter",
    "stream_event_p99_added_noop",
    "stream_event_p99_added_hostcalls",
    "stream_event_p99_added",
    "gateway_debits_recorded",
    "gateway_requests_cut_unbilled",
    "gateway_debits_exactly_once",
    "ledger_debits_per_s_spread",
    "ledger_debits_per_s_hot",
    "ledger_pg_cpu_per_debit_spread",
    "ledger_control_plane_cpu_per_debit_spread",
    "ledger_debits_per_s_spread_batch_200",
    "ledger_exactly_once",
    "sync_keys",
    "sync_full_bytes",
    "sync_full_ms",
    "sync_delta_changes",
    "sync_delta_bytes",
    "sync_delta_ms",
    "sync_delta_percent_of_full",
    "envoy_rss_before_fill",
    "envoy_rss_filled",
    "envoy_fill_seconds",
];

pub const TARGETS: &[Target] = &[
    Target {
        figure: "gateway_c16_rps_ratio",
        at_least: Some(0.90),
        at_most: None,
    },
    Target {
        figure: "gateway_c1_p50_added",
        at_least: None,
        at_most: Some(20.0),
    },
    Target {
        figure: "gateway_c1_p99_added",
        at_least: None,
        at_most: Some(60.0),
    },
    Target {
        figure: "stream_event_p50_added",
        at_least: None,
        at_most: Some(20.0),
    },
    Target {
        figure: "stream_first_byte_before_end",
        at_least: Some(1.0),
        at_most: None,
    },
    Target {
        figure: "gateway_debits_exactly_once",
        at_least: Some(1.0),
        at_most: None,
    },
    Target {
        figure: "ledger_debits_per_s_spread",
        at_least: Some(10_000.0),
        at_most: None,
    },
    Target {
        figure: "ledger_exactly_once",
        at_least: Some(1.0),
        at_most: None,
    },
    Target {
        figure: "sync_delta_percent_of_full",
        at_least: None,
        at_most: Some(1.0),
    },
];

impl Target {
    fn describe(&self) -> String {
        match (self.at_least, self.at_most) {
            (Some(l), _) => format!(">= {l}"),
            (_, Some(m)) => format!("<= {m}"),
            _ => String::new(),
        }
    }

    fn met(&self, v: f64) -> bool {
        self.at_least.is_none_or(|l| v >= l) && self.at_most.is_none_or(|m| v <= m)
    }
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Lines about the machine and the run (load, versions, mode).
    pub context: Vec<(String, String)>,
    /// How each figure was measured, one paragraph per section.
    pub method: Vec<String>,
}

impl Report {
    /// Records a figure and prints its `BENCH` line at once (so a failed run still shows progress).
    pub fn add(&mut self, name: &str, value: f64, unit: &'static str, what: &str) {
        println!("BENCH {name} {} {unit}", format_value(value));
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit,
            what: what.to_owned(),
        });
    }

    pub fn note(&mut self, key: &str, value: impl Into<String>) {
        self.context.push((key.to_owned(), value.into()));
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// The names of expected figures that this run did not produce.
    pub fn missing(&self) -> Vec<&'static str> {
        EXPECTED
            .iter()
            .copied()
            .filter(|n| self.get(n).is_none_or(|v| !v.is_finite()))
            .collect()
    }

    /// Targets with their outcome: (figure, target text, value, met).
    pub fn outcomes(&self) -> Vec<(&'static str, String, Option<f64>, bool)> {
        TARGETS
            .iter()
            .map(|t| {
                let v = self.get(t.figure);
                (t.figure, t.describe(), v, v.is_some_and(|v| t.met(v)))
            })
            .collect()
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = json!({
            "context": self.context.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "figures": self.figures.iter().map(|f| json!({"name": f.name, "value": f.value, "unit": f.unit, "what": f.what})).collect::<Vec<_>>(),
            "targets": self.outcomes().iter().map(|(n, t, v, met)| json!({"figure": n, "target": t, "value": v, "met": met})).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("report.json"), text).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("report.md"), self.markdown()).map_err(|e| e.to_string())
    }

    fn markdown(&self) -> String {
        let mut md = String::from(
            "# ClaudeStore gateway benchmark\n\nWritten by `cargo xtask bench`.\n\n## Machine and run\n\n",
        );
        for (k, v) in &self.context {
            md.push_str(&format!("- {k}: {v}\n"));
        }
        md.push_str("\n## Targets (issue 7)\n\n| figure | target | value | met |\n|---|---|---|---|\n");
        for (n, t, v, met) in self.outcomes() {
            let v = v.map(format_value).unwrap_or_else(|| "missing".into());
            md.push_str(&format!(
                "| {n} | {t} | {v} | {} |\n",
                if met { "yes" } else { "**no**" }
            ));
        }
        md.push_str("\n## Figures\n\n| figure | value | unit | what |\n|---|---|---|---|\n");
        for f in &self.figures {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                f.name,
                format_value(f.value),
                f.unit,
                f.what
            ));
        }
        md.push_str("\n## Method\n\n");
        for m in &self.method {
            md.push_str(m);
            md.push_str("\n\n");
        }
        md
    }
}

pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The median of the values (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match (v.get(mid.wrapping_sub(1)), v.get(mid)) {
        (Some(a), Some(b)) if v.len() % 2 == 0 => (a + b) / 2.0,
        (_, Some(b)) => *b,
        _ => f64::NAN,
    }
}

/// The nearest-rank percentile `p` (0-100) of the values; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied().unwrap_or(f64::NAN)
}
