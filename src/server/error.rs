//! Every error a client sees is JSON with a machine-readable code and a sentence a human
//! can act on.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::propose::ProposeError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_report", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(mac) => ApiError::not_found(format!("no machine with MAC {mac}")),
            StoreError::Transition { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Store(s) => s.into(),
            ProposeError::NotFound(mac) => ApiError::not_found(format!("no proposal for MAC {mac}")),
            ProposeError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ProposeError::Render(r) => ApiError::unprocessable(r.to_string()),
            ProposeError::Invalid(m) => ApiError::unprocessable(m),
            other => ApiError::internal(other),
        }
    }
}
