//! Signing in and out: customers with email and password (argon2id), the password set through a
//! one-time link an admin generates (`POST /v1/accounts/{id}/password-link`, or the console's
//! button), so that an API key alone never opens the dashboard; admins by pasting the admin token
//! into a form (never in a URL).
//!
//! Failed sign-ins are rate-limited in PostgreSQL (so every instance counts them): at most
//! 5 failures per email and 20 per client address in 15 minutes for customers, 10 per address for
//! the console; past that even a correct password is refused until the window has moved on. The
//! sign-in forms carry a token bound to a short-lived cookie (login CSRF).

mod admin;
mod change;
mod csrf;
mod customer;
pub mod link;
mod password;
mod throttle;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn api_router() -> OpenApiRouter<AppState> {
    link::api_router()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(customer::router())
        .merge(link::router())
        .merge(admin::router())
        .merge(change::router())
}
