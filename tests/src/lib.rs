//! The end-to-end suite's support code: the fake Anthropic upstream ([`fake`]), also shipped as the
//! `fake-anthropic` binary that `cargo xtask up` runs in demo mode.

pub mod fake;
pub mod stack;
