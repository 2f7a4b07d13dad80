//! Who is calling: the admin (admin token), the gateway (internal token) or a customer (own API
//! key). Tokens are compared in constant time; no credential is ever logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use metering::apikey;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The optional header naming the operator behind the admin token, kept in the audit log.
pub const ACTOR_HEADER: &str = "x-claudestore-actor";

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not valid ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthenticated(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    }
    Ok(Some(token.trim()))
}

fn token_matches(given: &str, expected: &str) -> bool {
    apikey::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// An admin request; `actor` names who acted, for the audit log.
#[derive(Debug, Clone)]
pub struct Admin {
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?.ok_or_else(|| {
            ApiError::Unauthenticated(
                "this route needs the admin token: Authorization: Bearer <token>".into(),
            )
        })?;
        if !token_matches(token, &state.config.admin_token) {
            if apikey::is_well_formed(token) {
                return Err(ApiError::Forbidden(
                    "a customer API key cannot use admin routes".into(),
                ));
            }
            return Err(ApiError::Unauthenticated("invalid admin token".into()));
        }
        let actor = match parts.headers.get(ACTOR_HEADER).map(|v| v.to_str()) {
            None => "admin".to_owned(),
            Some(Ok(name))
                if !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
            {
                format!("admin:{name}")
            }
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "header {ACTOR_HEADER} must be 1 to 64 printable ASCII characters"
                )))
            }
        };
        Ok(Admin { actor })
    }
}

/// A request from a gateway, with the internal token.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

impl FromRequestParts<AppState> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?.ok_or_else(|| {
            ApiError::Unauthenticated(
                "this route needs the internal token: Authorization: Bearer <token>".into(),
            )
        })?;
        if token_matches(token, &state.config.internal_token) {
            Ok(Internal)
        } else {
            Err(ApiError::Unauthenticated("invalid internal token".into()))
        }
    }
}

/// A customer, authenticated by one of the account's own active keys.
#[derive(Debug, Clone)]
pub struct Customer {
    pub account_id: Uuid,
    pub key_id: Uuid,
    pub key_name: String,
    pub key_prefix: String,
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let from_header = match parts.headers.get("x-api-key") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::Unauthenticated("invalid API key".into()))?
                    .trim(),
            ),
        };
        let from_bearer = bearer(&parts.headers)?;
        let key = match (from_header, from_bearer) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::Unauthenticated(
                    "x-api-key and Authorization carry different keys; send one".into(),
                ))
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => {
                return Err(ApiError::Unauthenticated(
                    "this route needs your API key in x-api-key or Authorization: Bearer".into(),
                ))
            }
        };
        if !apikey::is_well_formed(key) {
            return Err(ApiError::Unauthenticated("invalid API key".into()));
        }
        let row: Option<(Uuid, Uuid, String, String, String, bool)> = sqlx::query_as(
            "SELECT id, account_id, name, prefix, status, coalesce(expires_at <= now(), false)
             FROM api_keys WHERE key_hash = $1",
        )
        .bind(apikey::hash(key))
        .fetch_optional(&state.pool)
        .await?;
        match row {
            Some((.., true)) => Err(ApiError::Unauthenticated("this API key has expired".into())),
            Some((key_id, account_id, key_name, key_prefix, status, _)) if status == "active" => {
                Ok(Customer {
                    account_id,
                    key_id,
                    key_name,
                    key_prefix,
                })
            }
            Some(_) => Err(ApiError::Unauthenticated("this API key has been revoked".into())),
            None => Err(ApiError::Unauthenticated("invalid API key".into())),
        }
    }
}
