//! Account webhooks: the events a customer's system is told about, POSTed as JSON
//! `{"id", "type", "created_at", "data"}` to the account's `webhook_url` with the header
//! `x-claudestore-signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with the
//! account's webhook secret (shown once, when the URL is set).
//!
//! * [`events`]: events are written in the transaction that causes them (an outbox: an event
//!   exists if and only if what it tells happened), each with an id receivers can deduplicate on.
//!   `balance.low` once per crossing below the account's threshold, `purchase.paid`,
//!   `purchase.refunded`.
//! * [`delivery`]: a worker delivers them at least once, retrying with backoff for 24 hours, and
//!   logs every attempt; [`delivery::deliver_due`] is one step of it.
//! * [`target`]: which URLs are allowed (http or https; no loopback, link-local or private address
//!   unless `WEBHOOK_ALLOW_PRIVATE=true`, checked again at each delivery against what the name
//!   resolves to), and the secrets, derived from `WEBHOOK_SIGNING_KEY`, never stored.
//! * [`routes`]: the delivery log in the admin API.

pub mod delivery;
pub mod events;
mod routes;
pub mod target;

pub use routes::router;
