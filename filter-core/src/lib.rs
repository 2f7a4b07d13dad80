//! The ClaudeStore billing filter's logic, free of proxy-wasm: every decision the filter makes,
//! as plain functions and small state machines tested natively (`cargo test -p filter-core`). The
//! `filter` crate is the thin host layer that reads what Envoy gives, calls these and carries out
//! the answer with host calls.
//!
//! Grouped by what each part owns:
//! - [`config`]: the plugin configuration, parsed and validated once;
//! - [`shared`]: what the filter keeps in Envoy shared data (key and account entries, their
//!   encodings, compare-and-swap writes) and the per-worker copies and caches of it;
//! - [`request`]: one request's way through the filter (route, admission, refusals, the rewrite
//!   for the upstream, the exchange and its meter), in [`request::flow`];
//! - [`debits`]: finalised debits, their ids and JSON, and the buffer that waits for the control
//!   plane's acknowledgement;
//! - [`sync`]: snapshot synchronisation with the control plane and the Envoy's hold reports;
//! - [`worker`]: the state one worker's contexts share.
// Tests may unwrap: a failing unwrap is a failing test. Outside tests the workspace lints deny it.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod debits;
pub mod request;
pub mod shared;
pub mod sync;
pub mod worker;

/// Values the tests of several modules build alike.
#[cfg(test)]
pub(crate) mod fixtures {
    use metering::wire::{KeyState, KeyStatus};
    use uuid::Uuid;

    /// Key 1 of account 2 (hash `h`), without limits, as a snapshot row at `version`.
    pub fn key_state(version: u64, status: KeyStatus) -> KeyState {
        KeyState {
            key_hash: "h".into(),
            key_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            status,
            version,
            limit: None,
            allowed_models: Vec::new(),
            expires_at: None,
        }
    }
}
