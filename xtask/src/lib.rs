//! What the project's automation shares: running commands ([`shell`]), installing what the
//! commands need into `.tools/` ([`tools`]) and a PostgreSQL to run against ([`postgres`]). The
//! `xtask` binary (`cargo xtask up | test | istio | bench`) and the benchmark (`bench/`) use it.

pub mod postgres;
pub mod shell;
pub mod tools;
