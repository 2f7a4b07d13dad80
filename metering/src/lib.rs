//! Metering: everything billing needs that does no I/O, shared by the Envoy filter (wasm32) and
//! the control plane (native).
//!
//! * [`usage`]: the usage model (five token categories, cache TTL split, server tools).
//! * [`json`]: a bounded-memory incremental JSON scanner the response and request parsers use.
//! * [`sse`]: an incremental Server-Sent-Events framer.
//! * [`anthropic`], [`openai`]: response meters for JSON and SSE bodies.
//! * [`request`]: the request-side fields (`model`, `stream`, `max_tokens`, what changes the price).
//! * [`price`], [`cost`]: the effective-dated price table (rates, tiers, modifiers, fees) and the
//!   one function that prices a served request, exactly, in credits.
//! * [`billable`]: whether a request can be billed, decided before it is served.
//! * [`ceiling`]: the most a request may cost, estimated before it is served (reservation).
//! * [`wire`]: the internal API between filter and control plane.
//! * [`apikey`]: the API key format, hashing and display prefix.
//! * [`keylimit`]: key limits' calendar periods and allowed models.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod anthropic;
pub mod apikey;
pub mod billable;
pub mod ceiling;
pub mod cost;
pub mod json;
pub mod keylimit;
pub mod meter;
pub mod openai;
pub mod price;
pub mod request;
pub mod sse;
pub mod usage;
pub mod wire;

pub use cost::{cost, credits, Cost, ServedRequest};
pub use price::{Modifier, PriceEntry, PriceError, PriceTable, Rates, Tier};
pub use request::RequestedOptions;
pub use usage::{Iteration, IterationKind, MeterError, Metered, Usage};
