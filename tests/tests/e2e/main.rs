//! The end-to-end suite: real PostgreSQL (a fresh database per stack), the control plane, the fake
//! upstream and a real Envoy running the release filter, driven the way callers and admins use the
//! product. Charges are asserted as exact decimals read back from the control plane, and the
//! ledger's invariants are checked in PostgreSQL.
//!
//! Most tests share one stack and isolate themselves with accounts of their own; tests that stop
//! the control plane start stacks of their own. A missing binary fails the suite with the command
//! that builds it (`cargo xtask test`); nothing is skipped silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod api;
mod billing;
mod bodies;
mod call;
mod chaos;
mod concurrency;
mod dashboard;
mod fleet;
mod harness;
mod hostile;
mod key_limits;
mod modifiers;
mod outage;
mod prices;
mod pricing;
mod refusals;
mod reserve;
mod streaming;
mod supervision;
mod timings;
// The dashboard suite's WebDriver client, shared rather than copied.
#[allow(dead_code)]
#[path = "../../../control-plane/tests/browser/webdriver.rs"]
mod webdriver;
