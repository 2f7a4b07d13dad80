//! The one error type of the HTTP API, rendered in Anthropic's shape
//! `{"type":"error","error":{"type":T,"message":M}}`. Internal details are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a request that can never succeed as sent; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// 401: no credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: valid credentials that do not give access to this route.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state (an idempotency key reused with other
    /// content, a duplicate name). Rendered as `invalid_request_error`, Anthropic's closest type.
    #[error("{0}")]
    Conflict(String),
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed, but not acceptable (e.g. a price table the change would make invalid).
    #[error("{0}")]
    Unprocessable(String),
    /// 503: something the request needs is not available right now (readiness, a processor).
    #[error("{0}")]
    Unavailable(String),
    /// 503: the database cannot be reached (connection refused or lost, pool timeout): the
    /// request was not applied, and may be retried. Marks the database down (see `db::Health`).
    #[error("the database is unavailable: {0}")]
    DatabaseUnavailable(String),
    /// 500: logged in full, answered with a generic message.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a database error means for the caller: the database out of reach (503), a text with a NUL
/// byte, which PostgreSQL cannot store (400), or anything else (500).
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if unreachable(&e) {
            return Self::DatabaseUnavailable(e.to_string());
        }
        if let sqlx::Error::Database(db) = &e {
            // 22021: "invalid byte sequence for encoding UTF8: 0x00"; 22P05: untranslatable.
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return Self::Invalid("text must not contain NUL bytes (\\u0000)".into());
            }
        }
        Self::Database(e)
    }
}

/// Whether the error says the database cannot be reached (rather than that a statement failed).
pub fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions, the server shutting down or starting, too many connections.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Set on a response whose request failed because the database was out of reach.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseWasUnreachable;

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) | Self::Conflict(_) | Self::Unprocessable(_) | Self::MethodNotAllowed(_) => {
                "invalid_request_error"
            }
            Self::Unauthenticated(_) => "authentication_error",
            Self::Forbidden(_) => "permission_error",
            Self::NotFound(_) => "not_found_error",
            Self::TooLarge(_) => "request_too_large",
            Self::Unavailable(_) | Self::DatabaseUnavailable(_) | Self::Database(_) | Self::Internal(_) => {
                "api_error"
            }
        }
    }
}

/// The error body, as documented in the OpenAPI description.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `request_too_large` or `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::DatabaseUnavailable(e) => {
                tracing::warn!(error = %e, "database unreachable");
                "the database is unavailable; the request was not applied: retry shortly".to_owned()
            }
            Self::Database(e) => {
                tracing::error!(error = %e, "database error");
                "internal error; the request was not applied".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error; the request was not applied".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            kind: "error",
            error: ErrorDetail {
                kind: self.error_type(),
                message,
            },
        };
        let unreachable = matches!(self, Self::DatabaseUnavailable(_));
        let mut response = (status, Json(body)).into_response();
        if unreachable {
            response.extensions_mut().insert(DatabaseWasUnreachable);
        }
        response
    }
}

/// The name of the violated constraint, when a database error is one.
pub fn constraint_of(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
