//! The sign-in forms' token (login CSRF): bound to a short-lived `cs_login` cookie set when the
//! form is served.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

use crate::dashboard::session::{cookie, csrf_for, new_token};
use crate::dashboard::{PageError, PageResult};

const LOGIN_COOKIE: &str = "cs_login";

/// A sign-in form's token: bound to the `cs_login` cookie set when the form was served.
pub(super) fn login_form_cookie(headers: &HeaderMap, path: &str) -> (String, Option<HeaderValue>) {
    match cookie(headers, LOGIN_COOKIE).filter(|c| c.len() >= 32) {
        Some(existing) => (existing.to_owned(), None),
        None => {
            let token = new_token();
            let set = format!("{LOGIN_COOKIE}={token}; Path={path}; Max-Age=3600; HttpOnly; SameSite=Strict");
            (token.clone(), HeaderValue::from_str(&set).ok())
        }
    }
}

pub(super) fn check_login_csrf(headers: &HeaderMap, given: &str) -> PageResult<()> {
    let expected = cookie(headers, LOGIN_COOKIE).map(csrf_for).unwrap_or_default();
    if !expected.is_empty() && metering::apikey::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(())
    } else {
        Err(PageError::Csrf)
    }
}

pub(super) fn with_cookie(mut resp: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}
