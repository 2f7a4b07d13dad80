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
    /// 503: the database is unreachable (readiness).
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged in full, answered with a generic message.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

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
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::Unavailable(_) | Self::Database(_) | Self::Internal(_) => "api_error",
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
        (status, Json(body)).into_response()
    }
}

/// The name of the violated constraint, when a database error is one.
pub fn constraint_of(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
