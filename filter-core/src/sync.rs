//! Synchronisation with the control plane: snapshot pages of keys and balances, and the Envoy's
//! hold reports (spend control `reserve` across Envoys).

pub mod holds;
pub mod snapshot;
