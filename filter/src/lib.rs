//! ClaudeStore billing filter: a proxy-wasm HTTP filter for Envoy (wasm32-wasip1, one VM per
//! worker) that admits, rewrites, meters and debits requests to the Claude API.
//!
//! This crate is the thin host layer; every decision is made by `filter_core` (tested natively).
//! [`root`] (one per worker: configuration, the tick that syncs, reports holds and flushes),
//! [`http`] (one per request: carries out what its flow decides), [`metrics`] (the filter's
//! Envoy stats), and [`host`], the only module that makes host calls.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
pub mod host;
pub mod http;
pub mod metrics;
pub mod root;

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
