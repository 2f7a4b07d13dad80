//! One request's way through the filter: its route, admission, the refusals, the rewrite for the
//! upstream, the exchange and its meter, and the state machine that runs them ([`flow`]).

pub mod admission;
pub mod exchange;
pub mod flow;
pub mod meter;
pub mod refusal;
pub mod rewrite;
pub mod route;
