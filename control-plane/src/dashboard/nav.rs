//! The navigation bar of each side of the dashboard, from its session: the admin console's
//! (accounts, purchases, prices, plans) and the customer's pages'.

use super::html::Nav;
use super::session::{AdminSession, CustomerSession};

/// The admin console's navigation.
pub fn admin(s: &AdminSession) -> Nav<'_> {
    Nav::Admin {
        name: &s.name,
        csrf: &s.csrf,
    }
}

/// The customer pages' navigation.
pub fn customer(s: &CustomerSession) -> Nav<'_> {
    Nav::Customer {
        name: &s.name,
        csrf: &s.csrf,
    }
}
