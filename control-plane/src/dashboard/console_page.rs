//! The console's page frame: its navigation, and a banner on every console page while the seller
//! printed on invoices is still a placeholder. The banner names the variables to set: the console is
//! the operator's (customers never see it).

use axum::response::Html;
use maud::{html, Markup};

use super::html::page_with_banner;
use super::nav;
use super::session::AdminSession;
use crate::state::AppState;

/// A console page: the navigation, the seller banner if due, the title and the body.
pub fn render(state: &AppState, session: &AdminSession, title: &str, body: Markup) -> Html<String> {
    let missing = state.config.payments.seller_placeholders();
    Html(page_with_banner(title, nav::admin(session), seller_banner(&missing), body).into_string())
}

/// `A`, `A and B`, `A, B and C`.
fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The warning shown while invoices would carry placeholder seller details; nothing otherwise.
fn seller_banner(missing: &[&str]) -> Markup {
    html! {
        @if !missing.is_empty() {
            div.banner.warn #seller-placeholders role="alert" {
                "Invoices are being issued with placeholder seller details. Set "
                strong { (listed(missing)) }
                " in the control plane's environment and restart it; invoices already issued keep what they were issued with."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_names_each_unset_variable_and_is_absent_when_none_is() {
        assert_eq!(seller_banner(&[]).into_string(), "");
        let text = seller_banner(&["SELLER_NAME", "SELLER_ADDRESS", "SELLER_TAX_ID"]).into_string();
        assert!(
            text.contains("SELLER_NAME, SELLER_ADDRESS and SELLER_TAX_ID"),
            "{text}"
        );
        assert!(seller_banner(&["SELLER_TAX_ID"])
            .into_string()
            .contains("<strong>SELLER_TAX_ID</strong>"));
    }
}
