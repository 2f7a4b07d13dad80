//! The customer dashboard (`/dashboard`) and the admin console (`/admin`): server-rendered HTML
//! on the same process and database as the API.
//!
//! Every change a page makes goes through the JSON API in process ([`ApiClient`]: the router
//! itself, called with `tower::ServiceExt::oneshot`, no network), so validation, the ledger, the
//! audit log and the sync version have one implementation. The pages add sign-in, ownership checks,
//! CSRF checks and rendering. Reads that only a page needs (search, chart data) are plain queries.

pub mod account;
pub mod admin;
pub mod billing;
pub mod catalog;
pub mod console_account;
pub mod console_credits;
pub mod console_invoices;
pub mod console_page;
pub mod console_purchases;
pub mod console_reports;
pub mod customer;
pub mod documents;
pub mod form;
pub mod html;
pub mod login;
pub mod nav;
pub mod session;
pub mod usage_page;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;
use html::{page, Nav};
use session::Kind;

/// What a page answers when it cannot do what was asked. Rendered as a small HTML page (or a
/// redirect to sign-in); internal details are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("sign-in required")]
    SignIn(Kind),
    #[error("the form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooManyAttempts(String),
    /// The API refused the change; its message is meant for people.
    #[error("{1}")]
    Refused(StatusCode, String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The form was sent before: its result is at this address.
    #[error("already sent")]
    Again(String),
    /// The form was sent before with other values (Back, an edit, send again): its result is at
    /// this address, and the edit was not applied.
    #[error(
        "This form was sent before, and what it said then is done. What you changed since was not \
         applied: open the page again to make another change."
    )]
    Edited(String),
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e.status() {
            // Out of reach for a moment: said as it is, with its status.
            StatusCode::SERVICE_UNAVAILABLE => Self::Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            s if s.is_server_error() => Self::Internal(e.to_string()),
            StatusCode::NOT_FOUND => Self::NotFound(e.to_string()),
            s => Self::Refused(s, e.to_string()),
        }
    }
}

/// An error page's text, left on the response for [`error_pages`], which lays it out with the
/// navigation of the side of the site it was asked on.
#[derive(Clone, Debug)]
struct ErrorText(String, Option<String>);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::SignIn(Kind::Customer) => return Redirect::to("/dashboard/login").into_response(),
            Self::SignIn(Kind::Admin) => return Redirect::to("/admin/login").into_response(),
            Self::Again(location) => return Redirect::to(location).into_response(),
            Self::Edited(_) => StatusCode::CONFLICT,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Refused(s, _) => *s,
            Self::Internal(e) => {
                tracing::error!(error = %e, "dashboard error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            Self::Internal(_) => {
                "Something went wrong on our side; nothing was changed. Try again in a moment.".to_owned()
            }
            other => other.to_string(),
        };
        let link = match &self {
            Self::Edited(location) => Some(location.clone()),
            _ => None,
        };
        let mut resp = (status, error_page(html::Side::Other, &message, link.as_deref())).into_response();
        resp.extensions_mut().insert(ErrorText(message, link));
        resp
    }
}

/// An error page: what happened in words, and the way on.
fn error_page(side: html::Side, message: &str, done: Option<&str>) -> axum::response::Html<String> {
    let body = page(
        "Cannot do that",
        Nav::Guest(side),
        html! {
            (html::notice("error", message))
            @if let Some(done) = done { p { a #first-result href=(done) { "See what was done" } } }
            p.muted { "Use your browser's Back button to return to the form, or choose a page above." }
        },
    );
    axum::response::Html(body.into_string())
}

/// What an error says to a customer: a message that names the operator's configuration (a
/// payment method not set up, say) becomes plain words.
fn for_customers(message: &str) -> String {
    let names_configuration = crate::config::KEYS.iter().any(|key| message.contains(key));
    if names_configuration {
        "That is not available here at the moment. Choose another way, or contact us.".to_owned()
    } else {
        message.to_owned()
    }
}

/// The text of an error answered by something other than a page (a path or query the router or an
/// extractor refused, say `?days=abc`): in words, never the parser's.
fn generic_error(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "There is no such page. Check the address, or choose a page above.",
        StatusCode::METHOD_NOT_ALLOWED => "This page cannot be used that way. Choose a page above.",
        StatusCode::PAYLOAD_TOO_LARGE => "What you sent is too large.",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "You cannot see this page. Sign in again.",
        s if s.is_server_error() => {
            "Something went wrong on our side; nothing was changed. Try again in a moment."
        }
        _ => "The address of this page has a value we cannot read. Check the link, or choose a page above.",
    }
}

/// Whether a person's browser asked (a navigation asks for `text/html`; scripts ask for JSON).
fn wants_page(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The page of a dashboard or console address no route answers (a person's browser only), in words
/// and with the side's navigation; `None` elsewhere (the API answers JSON).
pub fn missing_page(
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    status: StatusCode,
) -> Option<Response> {
    let side = html::Side::of(uri.path());
    (side != html::Side::Other && wants_page(headers))
        .then(|| (status, error_page(side, generic_error(status), None)).into_response())
}

/// Every error a person's browser gets from the dashboard or the console is an HTML page with the
/// navigation of its side, in words: the pages' own errors, and what the router or an extractor
/// answered in plain text. Answers to scripts (JSON, the balance stream) are left as they are.
async fn error_pages(req: Request, next: Next) -> Response {
    let side = html::Side::of(req.uri().path());
    let wants_page = wants_page(req.headers());
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let own_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let (message, link) = match resp.extensions().get::<ErrorText>() {
        Some(ErrorText(m, link)) => (m.clone(), link.clone()),
        // A page that answers with its form and the error on it (sign-in, limits) stays as it is.
        None if own_page => return resp,
        None if wants_page => (generic_error(status).to_owned(), None),
        None => return resp,
    };
    let message = match side {
        html::Side::Customer => for_customers(&message),
        _ => message,
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(error_page(side, &message, link.as_deref()).0))
}

pub type PageResult<T> = Result<T, PageError>;

/// The JSON API, called in process with the admin token on behalf of a signed-in admin or of a
/// customer whose ownership of the target the page has checked.
#[derive(Clone)]
pub struct ApiClient {
    api: Router,
    admin_token: String,
}

impl ApiClient {
    pub fn new(api: Router, admin_token: String) -> Self {
        Self { api, admin_token }
    }

    /// Sends one request; returns the raw response.
    pub async fn send(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PageResult<Response> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin_token))
            .header(crate::auth::ACTOR_HEADER, actor_header(actor));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| PageError::Internal(format!("building an API request: {e}")))?;
        let resp = self.api.clone().oneshot(req).await;
        resp.map_err(|e| PageError::Internal(format!("API call: {e}")))
    }

    /// Sends one request and reads the JSON answer as the API's type `T`; API errors become
    /// [`PageError`]s.
    pub async fn json<T: DeserializeOwned>(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PageResult<T> {
        self.json_with_status(actor, method, path, body)
            .await
            .map(|(_, v)| v)
    }

    /// [`Self::json`], with the answer's status (201 applied now, 200 applied before, say).
    pub async fn json_with_status<T: DeserializeOwned>(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PageResult<(StatusCode, T)> {
        Self::read(self.send(actor, method, path, body).await?).await
    }

    /// [`Self::json`], and whether the API says the request had been carried out before and
    /// changed nothing now (`payments::review::REPLAYED`).
    pub async fn json_replayed<T: DeserializeOwned>(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PageResult<(bool, T)> {
        let resp = self.send(actor, method, path, body).await?;
        let replayed = resp
            .headers()
            .get(crate::payments::review::REPLAYED)
            .is_some_and(|v| v == "true");
        Self::read(resp).await.map(|(_, v)| (replayed, v))
    }

    /// The answer's status and its JSON, or the API's error as a page error.
    async fn read<T: DeserializeOwned>(resp: Response) -> PageResult<(StatusCode, T)> {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
            .await
            .map_err(|e| PageError::Internal(format!("reading an API answer: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| PageError::Internal(format!("API answer: {e}")))?
        };
        if status.is_success() {
            return serde_json::from_value(value)
                .map(|v| (status, v))
                .map_err(|e| PageError::Internal(format!("API answer: {e}")));
        }
        let message = value["error"]["message"].as_str().unwrap_or("refused").to_owned();
        Err(match status {
            s if s.is_server_error() => PageError::Internal(message),
            StatusCode::NOT_FOUND => PageError::NotFound(message),
            s => PageError::Refused(s, message),
        })
    }

    /// Sends one request whose answer the page does not read (it must still be JSON, or empty).
    pub async fn call(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> PageResult<()> {
        self.json::<IgnoredAny>(actor, method, path, body)
            .await
            .map(|_| ())
    }
}

/// The audit actor header: printable ASCII, at most 64 characters (what the API accepts).
fn actor_header(actor: &str) -> String {
    let clean: String = actor
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(64)
        .collect();
    if clean.trim().is_empty() {
        "console".to_owned()
    } else {
        clean
    }
}

/// Headers on every page: a strict same-origin content policy (no inline script, no third
/// parties, no framing), no caching of signed-in pages, no referrer (password links carry a token).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The JSON routes this module adds to the API (documented in the OpenAPI description).
pub fn api_router() -> OpenApiRouter<AppState> {
    login::api_router()
}

/// The HTML pages and their assets.
pub fn router(client: ApiClient) -> Router<AppState> {
    Router::new()
        .route(
            "/assets/dashboard.css",
            get(|| async { html::asset(html::CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { html::asset(html::JS, "text/javascript; charset=utf-8") }),
        )
        .merge(login::router())
        .merge(customer::router())
        .merge(account::router())
        .merge(usage_page::router())
        .merge(admin::router())
        .merge(catalog::router())
        .merge(billing::router())
        .merge(console_purchases::router())
        .merge(console_credits::router())
        .merge(console_invoices::router())
        .merge(console_reports::router())
        .layer(axum::Extension(client))
        .layer(middleware::from_fn(error_pages))
        .layer(middleware::from_fn(security_headers))
}
