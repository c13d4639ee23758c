//! HTTP around the pipeline: the one error type every endpoint answers with (JSON, no internals),
//! constant-time token checks, `/healthz`, and the admin API (deliveries, dead letters, replay), which
//! is mounted only when an admin token is configured.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::store::{now_ms, Filter, Replay, Status, Store, StoreError};

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
            StoreError::Busy => HttpError {
                retry_after: Some(1),
                ..HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the relay is at capacity; retry shortly",
                )
            },
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

/// Compares a presented credential with the expected one in constant time. Both are hashed first, so
/// neither the content nor the length of the secret leaks through timing.
pub fn token_matches(presented: Option<&[u8]>, expected: &Secret) -> bool {
    let a = Sha256::digest(presented.unwrap_or_default());
    let b = Sha256::digest(expected.expose().as_bytes());
    presented.is_some() && bool::from(a.ct_eq(&b))
}

/// State of the admin routes.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// `Bearer` token.
    pub token: Option<Secret>,
}

/// `/healthz`, plus `/api/...` when a token is configured.
pub fn router(state: AdminState) -> Router {
    let health = Router::new()
        .route("/healthz", get(healthz))
        .with_state(state.clone());
    if state.token.is_none() {
        return health;
    }
    let admin = Router::new()
        .route("/api/deliveries", get(list))
        .route("/api/deliveries/{id}/replay", post(replay_one))
        .route("/api/deliveries/replay-dead", post(replay_dead))
        .with_state(state);
    health.merge(admin)
}

fn check_admin(s: &AdminState, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(token) = &s.token else {
        return Err(HttpError::unauthorized());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    if token_matches(presented, token) {
        Ok(())
    } else {
        Err(HttpError::unauthorized())
    }
}

async fn healthz(State(s): State<AdminState>) -> Result<Json<serde_json::Value>, HttpError> {
    let counts = s
        .store
        .counts()
        .await
        .map_err(|e| HttpError::from_store(&e))?;
    let counts: serde_json::Map<String, serde_json::Value> = counts
        .into_iter()
        .map(|(st, n)| (st.as_str().to_string(), n.into()))
        .collect();
    Ok(Json(json!({ "status": "ok", "deliveries": counts })))
}

/// Query of `GET /api/deliveries`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    channel: Option<String>,
    // Numbers arrive as text and are parsed here, so a bad one gets the JSON error shape.
    device: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(v) => Some(Status::parse(v).ok_or_else(|| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                "status is one of pending, inflight, done, dead",
            )
        })?),
    };
    let number = |name: &str, v: Option<String>| -> Result<Option<i64>, HttpError> {
        v.map(|v| {
            v.parse::<i64>().map_err(|_| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("{name} must be a number"),
                )
            })
        })
        .transpose()
    };
    let device_id = number("device", q.device)?;
    let limit = number("limit", q.limit)?.unwrap_or(100).clamp(1, 10_000) as usize;
    let filter = Filter {
        status,
        channel: q.channel,
        device_id,
        limit,
    };
    let rows = s
        .store
        .list(filter)
        .await
        .map_err(|e| HttpError::from_store(&e))?;
    Ok(Json(json!({ "deliveries": rows })).into_response())
}

async fn replay_one(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let n = s
        .store
        .replay(Replay::Id(id), now_ms())
        .await
        .map_err(|e| HttpError::from_store(&e))?;
    if n == 0 {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead or delivered delivery with id {id}"),
        ));
    }
    Ok(Json(json!({ "replayed": n })).into_response())
}

async fn replay_dead(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let n = s
        .store
        .replay(Replay::AllDead, now_ms())
        .await
        .map_err(|e| HttpError::from_store(&e))?;
    Ok(Json(json!({ "replayed": n })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let s = Secret("Bearer abc".into());
        assert!(token_matches(Some(b"Bearer abc"), &s));
        assert!(!token_matches(Some(b"Bearer abd"), &s));
        assert!(!token_matches(Some(b"Bearer abc "), &s));
        assert!(!token_matches(Some(b""), &s));
        assert!(!token_matches(None, &s));
    }
}
