//! ClaudeStore billing filter: a proxy-wasm HTTP filter for Envoy (wasm32-wasip1, one VM per
//! worker) that admits, rewrites, meters and debits requests to the Claude API.
//!
//! Two layers. The decisions are plain functions and small state machines tested natively
//! (`cargo test -p filter`), the request's way through them in [`flow`] (admit, hold, forward,
//! meter, settle): [`config`], [`route`], [`admission`], [`refusal`], [`rewrite`], [`holds`],
//! [`exchange`], [`debit_json`], [`meter`], [`state`], [`store`], [`balances`], [`sync`], [`debits`],
//! [`negcache`], [`keycache`], [`ids`], [`lookup_budget`], [`worker`]. The proxy-wasm side is thin: [`root`] (one per worker: configuration,
//! the tick that syncs, reports holds and flushes), [`http`] (one per request: carries out what
//! its [`flow`] decides), and
//! [`host`], the only module that makes host calls.
// Tests may unwrap: a failing unwrap is a failing test. Outside tests the workspace lints deny it.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
pub mod accountcache;
pub mod admission;
pub mod balances;
pub mod config;
pub mod debit_json;
pub mod debits;
pub mod exchange;
pub mod flow;
pub mod holds;
pub mod host;
pub mod http;
pub mod ids;
pub mod keycache;
pub mod lookup_budget;
pub mod meter;
pub mod metrics;
pub mod negcache;
pub mod refusal;
pub mod rewrite;
pub mod root;
pub mod route;
pub mod state;
pub mod store;
pub mod sync;
pub mod worker;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // After set_log_level, which installs the SDK's own hook (one that unwraps): a panic kills
    // the VM and fails traffic, so the one thing left to do is say so, loudly.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("claudestore filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::BillingRoot::new()) });
}}
