//! Page chrome shared by the dashboard and the console: the layout, number formatting, and the
//! self-served stylesheet and script. Every page is a `maud` template, so every interpolated value
//! is HTML-escaped by construction; nothing here builds markup from strings.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};
use rust_decimal::Decimal;

use crate::money;

pub const CSS: &str = include_str!("assets/dashboard.css");
pub const JS: &str = include_str!("assets/dashboard.js");

/// The two sides of the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Customer,
    Admin,
    /// Neither (an address outside both).
    Other,
}

impl Side {
    /// The side an address belongs to.
    pub fn of(path: &str) -> Side {
        if path == "/admin" || path.starts_with("/admin/") {
            Side::Admin
        } else if path == "/dashboard" || path.starts_with("/dashboard/") {
            Side::Customer
        } else {
            Side::Other
        }
    }
}

/// Which navigation a page shows.
pub enum Nav<'a> {
    /// Signed out: no navigation.
    None,
    /// A signed-in customer; the CSRF token is for the sign-out form.
    Customer { name: &'a str, csrf: &'a str },
    /// A signed-in admin.
    Admin { name: &'a str, csrf: &'a str },
    /// The links of a side without knowing who is signed in (error pages).
    Guest(Side),
}

/// The customer pages, in the navigation's order.
pub const CUSTOMER_PAGES: &[(&str, &str)] = &[
    ("/dashboard", "Overview"),
    ("/dashboard/usage", "Usage"),
    ("/dashboard/keys", "API keys"),
    ("/dashboard/history", "Balance history"),
    ("/dashboard/prices", "Prices"),
    ("/dashboard/buy", "Buy credits"),
    ("/dashboard/purchases", "Purchases"),
    ("/dashboard/settings", "Settings"),
];

/// The console's pages, in the navigation's order.
pub const ADMIN_PAGES: &[(&str, &str)] = &[
    ("/admin", "Accounts"),
    ("/admin/purchases", "Purchases"),
    ("/admin/prices", "Prices"),
    ("/admin/plans", "Plans"),
    ("/admin/audit", "Audit log"),
    ("/admin/margins", "Margins"),
];

fn links(pages: &[(&str, &str)]) -> Markup {
    html! {
        nav {
            @for (href, label) in pages { a href=(href) { (label) } }
        }
    }
}

/// A whole page.
pub fn page(title: &str, nav: Nav<'_>, body: Markup) -> Markup {
    page_with_banner(title, nav, html! {}, body)
}

/// A whole page with a banner above its title (a warning that concerns every page of a side).
pub fn page_with_banner(title: &str, nav: Nav<'_>, banner: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ClaudeStore" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header.top {
                    @let home = match nav { Nav::Admin { .. } | Nav::Guest(Side::Admin) => "/admin", _ => "/dashboard" };
                    a.brand href=(home) { "ClaudeStore" }
                    @match nav {
                        Nav::None => {}
                        Nav::Customer { name, csrf } => {
                            (links(CUSTOMER_PAGES))
                            (signout("/dashboard/logout", name, csrf))
                        }
                        Nav::Admin { name, csrf } => {
                            (links(ADMIN_PAGES))
                            (signout("/admin/logout", name, csrf))
                        }
                        Nav::Guest(Side::Customer) => { (links(CUSTOMER_PAGES)) }
                        Nav::Guest(Side::Admin) => { (links(ADMIN_PAGES)) }
                        Nav::Guest(Side::Other) => {
                            nav { a href="/dashboard" { "Dashboard" } a href="/dashboard/login" { "Sign in" } }
                        }
                    }
                }
                (banner)
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn signout(action: &str, name: &str, csrf: &str) -> Markup {
    html! {
        form.signout method="post" action=(action) {
            span.who { (name) }
            (csrf_field(csrf))
            button type="submit" { "Sign out" }
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A notice above a form (an error the user can act on, or a confirmation).
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role="status" { (text) } }
}

/// Credits for display: grouped thousands, at most 4 decimals (exact values are in the CSV and API).
pub fn credits(d: Decimal) -> String {
    let rounded = d.round_dp(4);
    let text = money::plain(rounded);
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let grouped = group(int);
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// USD with two decimals (half a cent rounded away from zero, as on invoices: 1 credit is
/// `$0.01`, not `$0.00`) and grouped thousands: `$1,250.00`.
pub fn usd(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    let text = r.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "00"));
    format!("{sign}${}.{frac}", group(int))
}

/// Digits grouped by thousands with commas.
fn group(int: &str) -> String {
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A time as the API writes it in JSON (RFC 3339 in UTC with `Z`, the fraction as needed).
pub fn as_written(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Static assets: long-lived, same-origin, typed.
pub fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// What a request ran as, for a table cell: its speed, inference geo and service tier as billed
/// and reported (`fast · us · priority`), `standard` when none was.
pub fn request_options(
    speed: Option<&str>,
    inference_geo: Option<&str>,
    service_tier: Option<&str>,
) -> String {
    let parts: Vec<&str> = [speed, inference_geo, service_tier]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "standard".into()
    } else {
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn times_are_shown_as_the_api_writes_them() {
        for t in [
            "2025-06-01T12:34:56Z",
            "2025-06-01T12:34:56.120Z",
            "2025-06-01T12:34:56.123456789Z",
        ] {
            let t: DateTime<Utc> = t.parse().unwrap();
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(as_written(t))
            );
        }
    }

    #[test]
    fn credits_are_grouped_and_rounded_for_display() {
        let d = |s: &str| Decimal::from_str(s).unwrap_or_default();
        assert_eq!(credits(d("0")), "0");
        assert_eq!(credits(d("1000")), "1,000");
        assert_eq!(credits(d("275000.5")), "275,000.5");
        assert_eq!(credits(d("-1234567.123456")), "-1,234,567.1235");
        assert_eq!(credits(d("999.99999")), "1,000");
    }

    #[test]
    fn dollars_round_half_a_cent_away_from_zero_as_invoices_do() {
        let d = |s: &str| Decimal::from_str(s).unwrap_or_default();
        assert_eq!(usd(d("0.005")), "$0.01");
        assert_eq!(usd(d("0.025")), "$0.03");
        assert_eq!(usd(d("-0.025")), "-$0.03");
        assert_eq!(usd(d("1250")), "$1,250.00");
        assert_eq!(usd(d("0.0049")), "$0.00");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let evil = "<script>alert(1)</script>\"'&";
        let out = page(evil, Nav::None, html! { p { (evil) } }).into_string();
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{out}"
        );
    }
}
