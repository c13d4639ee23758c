//! The one error type every HTTP endpoint answers with (webhook intake and admin API alike): a status, a
//! stable machine-readable code and a message safe to show; internals go to the log, never the body.
//!
//! Its own module so that HTTP adapters (the webhook in `source::http`) and the API in `api` share it
//! without the intake importing the API. It knows only the store port's [`StoreError`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

/// An HTTP error: status, a stable machine-readable code, and a message safe to show.
#[derive(Debug)]
pub struct HttpError {
    /// Status.
    pub status: StatusCode,
    /// Stable code (`invalid_event`, `unauthorized`, …).
    pub code: &'static str,
    /// Human explanation (never a secret, never an internal error).
    pub message: String,
    /// Seconds for `Retry-After` (503).
    pub retry_after: Option<u64>,
}

impl HttpError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401.
    pub fn unauthorized() -> HttpError {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong Authorization header",
        )
    }

    /// Maps a store failure: overload and outages are 503 with `Retry-After`; details go to the log only.
    pub fn from_store(e: &StoreError) -> HttpError {
        match e {
            StoreError::NotFound(what) => HttpError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            StoreError::Busy => HttpError {
                retry_after: Some(1),
                ..HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the relay is at capacity; retry shortly",
                )
            },
            StoreError::Unavailable(reason) => {
                tracing::warn!(reason = %reason, "storage unreachable; intake answers 503");
                HttpError {
                    retry_after: Some(2),
                    ..HttpError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "storage is unavailable; retry later",
                    )
                }
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                HttpError {
                    retry_after: Some(5),
                    ..HttpError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "storage is unavailable; retry later",
                    )
                }
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
