//! Integration tests: the real app on port 0, a fresh PostgreSQL database per test, reqwest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod accounts_keys;
mod concurrency;
mod console;
mod credits;
mod customer_pages;
mod dashboard;
mod dashboard_billing;
mod debits;
mod errors;
mod faults;
mod helpers;
mod key_limits;
mod metrics;
mod modifiers;
mod openapi;
mod payments;
mod prices_plans;
mod snapshot;
mod spend_control;
mod startup;
mod usage;
mod web;
mod webhooks;
