//! Payments: customers buy credit plans by card (Stripe Checkout), cryptocurrency (a crypto
//! processor behind [`crypto::CryptoProvider`], NOWPayments first) or through a Telegram sale that
//! support records and confirms. Every paid purchase is credited exactly once and invoiced.
//!
//! The state machine (`purchases.status`, enforced here under the row lock and by a trigger):
//! `pending -> paid | held | expired | failed`, `held -> paid | failed`, `paid -> refunded`.
//! Crediting, invoicing and marking paid happen in one transaction ([`fulfil::pay`]); the
//! ledger's idempotency key `purchase:<id>` makes a second credit impossible even if the status
//! check were bypassed. Processor callbacks are verified on the raw bytes, recorded by event id in
//! the same transaction that applies them, and answered 2xx only after the commit.

pub mod billing;
mod callbacks;
pub mod crypto;
pub mod expiry;
pub mod fulfil;
pub mod model;
pub mod nowpayments;
pub mod processors;
pub mod purchases;
pub mod review;
pub mod stripe;

use utoipa_axum::router::OpenApiRouter;

pub use fulfil::SALES;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(purchases::router())
        .merge(review::router())
        .merge(callbacks::router())
        .merge(billing::router())
}
