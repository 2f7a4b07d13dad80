//! What the filter keeps in Envoy shared data and the per-worker copies of it.

pub mod accountcache;
pub mod balances;
pub mod keycache;
pub mod lookup_budget;
pub mod negcache;
pub mod state;
pub mod store;
