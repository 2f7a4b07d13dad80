//! Browser sessions: a 256-bit random token in an HttpOnly cookie, only its SHA-256 hash in
//! `web_sessions`, an absolute expiry, and a CSRF token derived from the session token.
//!
//! Customers and admins have separate cookies (`cs_session` on `/`, SameSite=Lax so that the
//! return from a card checkout arrives signed in; `cs_admin` on `/admin`, SameSite=Strict), both
//! `Secure` when `PUBLIC_URL` is https. The CSRF token is SHA-256 of a label and the session token:
//! it is bound to the session, needs no storage, and does not reveal the cookie it came from.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::PageError;
use crate::state::AppState;

pub const CUSTOMER_COOKIE: &str = "cs_session";
pub const ADMIN_COOKIE: &str = "cs_admin";
const CUSTOMER_TTL_HOURS: i64 = 12;
const ADMIN_TTL_HOURS: i64 = 8;
/// Form bodies are small; anything larger is refused before parsing.
const FORM_LIMIT: usize = 64 * 1024;

/// A fresh 256-bit secret, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a session.
pub fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"claudestore dashboard csrf v1\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

fn csrf_matches(given: &str, session_token: &str) -> bool {
    metering::apikey::constant_time_eq(given.as_bytes(), csrf_for(session_token).as_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

fn set_cookie(state: &AppState, kind: Kind, value: &str, max_age: i64) -> HeaderValue {
    let (name, path, same_site) = match kind {
        Kind::Customer => (CUSTOMER_COOKIE, "/", "Lax"),
        Kind::Admin => (ADMIN_COOKIE, "/admin", "Strict"),
    };
    let secure = if secure(state) { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Customer,
    Admin,
}

/// Opens a customer session; returns the `Set-Cookie` value.
pub async fn open_customer(state: &AppState, account_id: Uuid) -> Result<HeaderValue, PageError> {
    let token = new_token();
    sqlx::query("DELETE FROM web_sessions WHERE expires_at < now()")
        .execute(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (token_hash, kind, account_id, expires_at) VALUES ($1, 'customer', $2, $3)",
    )
    .bind(token_hash(&token))
    .bind(account_id)
    .bind(Utc::now() + Duration::hours(CUSTOMER_TTL_HOURS))
    .execute(&state.pool)
    .await?;
    Ok(set_cookie(
        state,
        Kind::Customer,
        &token,
        CUSTOMER_TTL_HOURS * 3600,
    ))
}

/// Opens an admin session (the admin token was checked by the caller); returns `Set-Cookie`.
pub async fn open_admin(state: &AppState, name: &str) -> Result<HeaderValue, PageError> {
    let token = new_token();
    sqlx::query("DELETE FROM web_sessions WHERE expires_at < now()")
        .execute(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (token_hash, kind, admin_name, admin_token_hash, expires_at)
         VALUES ($1, 'admin', $2, $3, $4)",
    )
    .bind(token_hash(&token))
    .bind(name)
    .bind(token_hash(&state.config.admin_token))
    .bind(Utc::now() + Duration::hours(ADMIN_TTL_HOURS))
    .execute(&state.pool)
    .await?;
    Ok(set_cookie(state, Kind::Admin, &token, ADMIN_TTL_HOURS * 3600))
}

/// Ends the session behind `token` (if any) and returns the cookie that clears it.
pub async fn close(state: &AppState, kind: Kind, token: &str) -> Result<HeaderValue, PageError> {
    sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(&state.pool)
        .await?;
    Ok(set_cookie(state, kind, "", 0))
}

/// A signed-in customer.
#[derive(Debug, Clone)]
pub struct CustomerSession {
    pub account_id: Uuid,
    pub name: String,
    pub email: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub csrf: String,
    token: String,
}

impl CustomerSession {
    /// The session of this request's cookie, if it is a live customer session.
    pub async fn load(headers: &HeaderMap, state: &AppState) -> Result<Option<Self>, PageError> {
        let Some(token) = cookie(headers, CUSTOMER_COOKIE).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let row: Option<(Uuid, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT a.id, a.name, a.email, a.status, s.expires_at FROM web_sessions s
             JOIN accounts a ON a.id = s.account_id
             WHERE s.token_hash = $1 AND s.kind = 'customer' AND s.expires_at > now()",
        )
        .bind(token_hash(token))
        .fetch_optional(&state.pool)
        .await?;
        Ok(row.map(|(account_id, name, email, status, expires_at)| Self {
            account_id,
            name,
            email,
            status,
            expires_at,
            csrf: csrf_for(token),
            token: token.to_owned(),
        }))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The actor recorded in the audit log for what the customer does in the dashboard.
    pub fn actor(&self) -> String {
        format!("customer {}", self.account_id)
    }
}

impl FromRequestParts<AppState> for CustomerSession {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Self::load(&parts.headers, state)
            .await?
            .ok_or(PageError::SignIn(Kind::Customer))
    }
}

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub name: String,
    pub csrf: String,
    token: String,
}

impl AdminSession {
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The audit actor: the name typed at sign-in, through the console.
    pub fn actor(&self) -> String {
        format!("console {}", self.name)
    }
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, ADMIN_COOKIE).filter(|t| !t.is_empty()) else {
            return Err(PageError::SignIn(Kind::Admin));
        };
        let name: Option<String> = sqlx::query_scalar(
            "SELECT admin_name FROM web_sessions
             WHERE token_hash = $1 AND kind = 'admin' AND expires_at > now() AND admin_token_hash = $2",
        )
        .bind(token_hash(token))
        .bind(token_hash(&state.config.admin_token))
        .fetch_optional(&state.pool)
        .await?;
        let name = name.ok_or(PageError::SignIn(Kind::Admin))?;
        Ok(Self {
            name,
            csrf: csrf_for(token),
            token: token.to_owned(),
        })
    }
}

/// A session whose forms carry its CSRF token.
pub trait Session: FromRequestParts<AppState, Rejection = PageError> {
    fn session_token(&self) -> &str;
}

impl Session for CustomerSession {
    fn session_token(&self) -> &str {
        self.token()
    }
}

impl Session for AdminSession {
    fn session_token(&self) -> &str {
        self.token()
    }
}

/// A state-changing form post: the session, and the form once its `csrf` field has been checked
/// against the session. Handlers that change anything take this, so none can forget the check.
pub struct Posted<S, T> {
    pub session: S,
    pub form: T,
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// The session of a posted form and the form's bytes, once its `csrf` field has been checked
/// against the session.
pub async fn posted_body<S: Session + Send>(req: Request, state: &AppState) -> Result<(S, Bytes), PageError> {
    let (mut parts, body) = req.into_parts();
    let session = S::from_request_parts(&mut parts, state).await?;
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| PageError::BadRequest("What you sent is too large.".into()))?;
    let given: CsrfOnly = parse_form(&bytes)?;
    if !csrf_matches(&given.csrf, session.session_token()) {
        return Err(PageError::Csrf);
    }
    Ok((session, bytes))
}

impl<S: Session + Send, T: DeserializeOwned> FromRequest<AppState> for Posted<S, T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (session, bytes) = posted_body::<S>(req, state).await?;
        Ok(Self {
            session,
            form: parse_form(&bytes)?,
        })
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(bytes).map_err(|e| {
        tracing::debug!(error = %e, "unreadable form");
        PageError::BadRequest(
            "The form had a value we cannot read. Go back, check what you entered and send it again.".into(),
        )
    })
}

/// A form with nothing but its CSRF token (sign-out, a button).
#[derive(serde::Deserialize)]
pub struct NoFields {}

/// A form posted without a session (sign-in, password links), read with the same limit.
pub struct PlainForm<T>(pub HeaderMap, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PlainForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
        Ok(Self(parts.headers, parse_form(&bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_is_bound_to_its_session() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(csrf_matches(&csrf_for(&a), &a));
        assert!(!csrf_matches(&csrf_for(&b), &a));
        assert!(!csrf_matches("", &a));
        assert_ne!(csrf_for(&a), token_hash(&a));
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; cs_session=tok"));
        h.append(header::COOKIE, HeaderValue::from_static("cs_admin=adm"));
        assert_eq!(cookie(&h, CUSTOMER_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, ADMIN_COOKIE), Some("adm"));
        assert_eq!(cookie(&h, "cs"), None);
    }
}
