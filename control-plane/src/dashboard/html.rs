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

/// Which navigation a page shows.
pub enum Nav<'a> {
    /// Signed out: no navigation.
    None,
    /// A signed-in customer; the CSRF token is for the sign-out form.
    Customer { name: &'a str, csrf: &'a str },
    /// A signed-in admin.
    Admin { name: &'a str, csrf: &'a str },
}

/// A whole page.
pub fn page(title: &str, nav: Nav<'_>, body: Markup) -> Markup {
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
                    span.brand { "ClaudeStore" }
                    @match nav {
                        Nav::None => {}
                        Nav::Customer { name, csrf } => {
                            nav {
                                a href="/dashboard" { "Overview" }
                                a href="/dashboard/usage" { "Usage" }
                                a href="/dashboard/keys" { "API keys" }
                                a href="/dashboard/buy" { "Buy credits" }
                                a href="/dashboard/purchases" { "Purchases" }
                            }
                            (signout("/dashboard/logout", name, csrf))
                        }
                        Nav::Admin { name, csrf } => {
                            nav {
                                a href="/admin" { "Accounts" }
                                a href="/admin/purchases" { "Purchases" }
                                a href="/admin/prices" { "Prices" }
                                a href="/admin/plans" { "Plans" }
                            }
                            (signout("/admin/logout", name, csrf))
                        }
                    }
                }
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
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// USD with two decimals.
pub fn usd(d: Decimal) -> String {
    let mut r = d.round_dp(2);
    r.rescale(2);
    format!("${r}")
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
