//! `cargo xtask up | test | istio | bench`: the project's set-up commands. Each installs what it
//! needs into the project-local `.tools/` (idempotently) and starts the services it needs; `bench`
//! hands its arguments to the benchmark's own crate (`bench/`).

mod istio;
mod test;
mod up;

use xtask::{postgres, shell, tools};

use std::process::ExitCode;

const USAGE: &str =
    "usage: cargo xtask <up | test [--skip-install] | istio [REPOSITORY] | bench [--quick | --instructions | --docs | --gateway-only [--filter-set NAME=JSON]... | --ledger [--reps N] [--bin PATH]...]>";

/// `cargo xtask bench ARGS`: the benchmark (`bench/`), built and run with the same arguments.
fn bench(args: &[String]) -> shell::Result {
    shell::exec(
        shell::cargo()
            .args(["run", "--quiet", "--package", "bench", "--bin", "bench", "--"])
            .args(args),
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up::run(),
        Some("test") => test::run(args.get(1..).unwrap_or_default()),
        Some("bench") => bench(args.get(1..).unwrap_or_default()),
        Some("istio") => istio::run(args.get(1..).unwrap_or_default()),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
