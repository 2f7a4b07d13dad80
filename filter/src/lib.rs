//! ClaudeStore billing filter (proxy-wasm, wasm32-wasip1).
pub mod admission;
pub mod balances;
pub mod config;
pub mod debits;
pub mod exchange;
pub mod host;
pub mod meter;
pub mod metrics;
pub mod negcache;
pub mod refusal;
pub mod rewrite;
pub mod route;
pub mod state;
pub mod store;
pub mod sync;
pub mod worker;
