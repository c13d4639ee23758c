//! The webhook intake: `POST /events` with a Traccar event-forward or BikeTrax webhook body, and
//! `POST /positions` with a body of Traccar's position forwarding. Both are authenticated by an exact
//! `Authorization` value and bounded in size. An event is answered only after it is committed, and never
//! blocked: when the store is saturated the answer is 503 with `Retry-After`. A position is not stored:
//! it only moves the device's whereabouts (what "Where is it?", `/where` and live pins read).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::json;

use crate::clock::now_ms;
use crate::event::{Device, Envelope, ForwardedPosition, Position};
use crate::http_error::HttpError;
use crate::pipeline::Pipeline;
use crate::plan::Arrival;
use crate::secret::{token_matches, Secret};
use crate::store::Accepted;

/// Header values carried through (`X-PowTxn`, `X-Request-Id`) are cut to this length.
const MAX_TRACE_HEADER: usize = 128;

/// The intake routes: events at `path`, forwarded positions at `positions_path` (the two must differ).
/// Their settings (authorization, body limit, source name) are read from the current configuration on
/// every request, so a reload changes them at once.
pub fn router(path: &str, positions_path: &str, pipeline: Pipeline) -> Router {
    Router::new()
        .route(path, post(ingest))
        .route(positions_path, post(position))
        .with_state(pipeline)
}

/// A header value fit to log and forward: printable ASCII, bounded.
fn trace_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    let v: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_TRACE_HEADER)
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Content types accepted: JSON, and what `curl -d` sends by default (the body must still be JSON).
fn acceptable_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = mime == "application/json"
        || mime.ends_with("+json")
        || mime == "text/json"
        || mime == "text/plain"
        || mime == "application/x-www-form-urlencoded";
    if ok {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type application/json, got `{mime}`"),
        ))
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(4096).min(limit));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the body could not be read",
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// `POST /events`: checks the call, decodes the event, hands it to the pipeline and answers once it is
/// committed.
async fn ingest(
    State(p): State<Pipeline>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let (authorization, max_body, source) = {
        let rt = p.shared.get();
        let i = &rt.config.ingest;
        (i.authorization.clone(), i.max_body_bytes, i.source.clone())
    };
    let reject = |e: HttpError, result: &'static str| {
        p.metrics.event(&source, "-", result);
        e
    };
    authorized(&headers, authorization.as_ref()).map_err(|e| reject(e, "unauthorized"))?;
    acceptable_content_type(&headers).map_err(|e| reject(e, "invalid"))?;
    let bytes = read_body(body, &headers, max_body)
        .await
        .map_err(|e| reject(e, "invalid"))?;
    let (raw, mut env) = decode(&bytes).map_err(|e| reject(e, "invalid"))?;
    // A live Traccar source of the same namespace knows the group (and anything else the body lacks).
    p.directories.fill(&source, &mut env);
    let arrival = Arrival {
        source: source.clone(),
        via: None,
        txn: trace_header(&headers, "x-powtxn"),
        request_id: trace_header(&headers, "x-request-id"),
        received_at_ms: now_ms(),
    };
    let txn = arrival.txn.clone();
    let accepted = p.ingest(raw, &env, arrival).await.map_err(|e| {
        p.metrics
            .event(&source, env.event.event_type.as_str(), "unavailable");
        HttpError::from_store(&e)
    })?;
    let body = answer(&p, &source, &env, txn.as_deref().unwrap_or(""), accepted);
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Whether the call presents the `Authorization` value the configuration requires (if it requires one).
fn authorized(headers: &HeaderMap, expected: Option<&Secret>) -> Result<(), HttpError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token_matches(presented, expected) {
        Ok(())
    } else {
        tracing::warn!("webhook call with a missing or wrong Authorization header");
        Err(HttpError::unauthorized())
    }
}

/// The body as text: not blank, UTF-8. `expected` names what it should have been.
fn text<'a>(bytes: &'a [u8], expected: &str) -> Result<&'a str, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            format!("the body is empty; expected {expected} as JSON"),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
            format!("the body is not UTF-8: {e}"),
        )
    })
}

/// The body as text and as an event: not blank, UTF-8, a Traccar or BikeTrax event.
fn decode(bytes: &[u8]) -> Result<(&str, Envelope), HttpError> {
    let raw = text(bytes, "a Traccar event")?;
    let env = Envelope::from_json(raw.as_bytes()).map_err(|e| {
        tracing::warn!(error = %e, "rejected an undecodable webhook body");
        HttpError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string())
    })?;
    Ok((raw, env))
}

/// `POST /positions`: one position of Traccar's position forwarding (`forward.type=json`). It moves the
/// device's whereabouts (unless an older fix than the one known) and is answered 204; it is neither
/// stored nor turned into an event.
async fn position(
    State(p): State<Pipeline>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, HttpError> {
    let (authorization, max_body, source) = {
        let rt = p.shared.get();
        let i = &rt.config.ingest;
        (i.authorization.clone(), i.max_body_bytes, i.source.clone())
    };
    let reject = |e: HttpError, result: &'static str| {
        p.metrics.forwarded_position(result);
        e
    };
    authorized(&headers, authorization.as_ref()).map_err(|e| reject(e, "unauthorized"))?;
    acceptable_content_type(&headers).map_err(|e| reject(e, "invalid"))?;
    let bytes = read_body(body, &headers, max_body)
        .await
        .map_err(|e| reject(e, "invalid"))?;
    let (position, device) = decode_position(&bytes).map_err(|e| reject(e, "invalid"))?;
    // A live Traccar source of the same namespace knows the device when the body lacks it.
    let device = device.or_else(|| p.directories.device(&source, position.device_id));
    p.whereabouts.saw(
        position.device_id,
        device.as_ref(),
        Some(&position),
        now_ms(),
    );
    p.metrics.forwarded_position("accepted");
    tracing::debug!(
        device_id = position.device_id,
        position_id = position.id,
        "forwarded position received"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// A forwarded position and its device: the position is required, and its device id is taken from
/// `device.id` when the position lacks it (both must agree when both are given).
fn decode_position(bytes: &[u8]) -> Result<(Position, Option<Device>), HttpError> {
    let invalid = |message: String| {
        tracing::warn!(error = %message, "rejected an undecodable forwarded position");
        HttpError::new(StatusCode::BAD_REQUEST, "invalid_position", message)
    };
    let raw = text(bytes, "a Traccar position")?;
    let body = ForwardedPosition::from_json(raw.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    let Some(mut position) = body.position else {
        return Err(invalid(
            "the body has no `position`; expected Traccar's position forwarding \
             (`forward.type=json`): {\"position\": {...}, \"device\": {...}}"
                .into(),
        ));
    };
    let device_id = body.device.as_ref().map_or(0, |d| d.id);
    match (position.device_id, device_id) {
        (0, 0) => {
            return Err(invalid(
                "position without a device: neither `position.deviceId` nor `device.id` is set"
                    .into(),
            ))
        }
        (0, d) => position.device_id = d,
        (p, d) if d != 0 && d != p => {
            return Err(invalid(format!(
                "`position.deviceId` ({p}) and `device.id` ({d}) name different devices"
            )))
        }
        _ => {}
    }
    Ok((position, body.device))
}

/// Counts and logs an accepted (or duplicate) event, and the answer to its sender.
fn answer(
    p: &Pipeline,
    source: &str,
    env: &Envelope,
    txn: &str,
    accepted: Accepted,
) -> serde_json::Value {
    let event_type = env.event.event_type.as_str();
    let device = env.device.as_ref().map(|d| d.name.as_str()).unwrap_or("");
    match accepted {
        Accepted::New { deliveries, .. } => {
            p.metrics.event(source, event_type, "accepted");
            tracing::info!(
                event_id = env.event.id,
                event_type,
                device,
                txn,
                deliveries,
                "event accepted"
            );
            json!({ "status": "accepted", "event_id": env.event.id, "deliveries": deliveries })
        }
        Accepted::Duplicate => {
            p.metrics.event(source, event_type, "duplicate");
            tracing::info!(
                event_id = env.event.id,
                event_type,
                device,
                txn,
                "duplicate event ignored"
            );
            json!({ "status": "duplicate", "event_id": env.event.id })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::runtime::{Runtime, Shared};
    use crate::settings::Config;
    use crate::store::*;

    /// A store that is always full or always down: what intake answers when the outbox cannot keep up.
    struct Refusing(StoreError);

    #[async_trait]
    impl Store for Refusing {
        async fn accept(&self, _: NewEvent) -> Result<Accepted, StoreError> {
            Err(self.0.clone())
        }
        async fn claim(&self, _: i64, _: usize, _: Duration) -> Result<Vec<Claimed>, StoreError> {
            Ok(vec![])
        }
        async fn finish(
            &self,
            _: Vec<(ClaimRef, Outcome)>,
            _: i64,
        ) -> Result<Vec<ClaimRef>, StoreError> {
            Ok(vec![])
        }
        async fn next_due(&self, _: i64) -> Result<Option<i64>, StoreError> {
            Ok(None)
        }
        async fn oldest_due(&self, _: i64) -> Result<Option<i64>, StoreError> {
            Ok(None)
        }
        async fn recover(&self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn list(&self, _: Filter) -> Result<Vec<DeliveryRow>, StoreError> {
            Ok(vec![])
        }
        async fn replay(&self, _: Replay, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn prune(&self, _: i64, _: Duration, _: Duration) -> Result<Pruned, StoreError> {
            Ok(Pruned::default())
        }
        async fn counts(&self) -> Result<Vec<(Status, u64)>, StoreError> {
            Ok(vec![])
        }
        async fn digest_items(&self, _: i64) -> Result<Vec<String>, StoreError> {
            Err(self.0.clone())
        }
        async fn noise_states(
            &self,
            _: Vec<String>,
        ) -> Result<std::collections::HashMap<String, crate::noise::State>, StoreError> {
            Err(self.0.clone())
        }
        async fn add_silence(
            &self,
            _: crate::noise::silence::NewSilence,
            _: i64,
        ) -> Result<crate::noise::silence::Silence, StoreError> {
            Err(self.0.clone())
        }
        async fn silences(&self) -> Result<Vec<crate::noise::silence::Silence>, StoreError> {
            Err(self.0.clone())
        }
        async fn expire_silence(
            &self,
            _: i64,
            _: i64,
        ) -> Result<crate::noise::silence::Silence, StoreError> {
            Err(self.0.clone())
        }
    }

    async fn post_to(store: StoreError) -> (StatusCode, Option<String>, serde_json::Value) {
        let config = Config::load(None).unwrap();
        let shared = Arc::new(Shared::new(Runtime {
            config,
            channels: Default::default(),
        }));
        let (fast, _rx) = tokio::sync::mpsc::channel(1);
        let pipeline = Pipeline {
            incidents_wake: Default::default(),
            whereabouts: Default::default(),
            shared,
            store: Arc::new(Refusing(store)),
            wake: Default::default(),
            fast,
            metrics: Default::default(),
            silences: Default::default(),
            directories: Default::default(),
        };
        let app = router("/events", "/positions", pipeline);
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/payloads/alarm_sos.json"
        ))
        .unwrap();
        let resp = app
            .oneshot(Request::post("/events").body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_saturated_or_failing_store_answers_503_with_retry_after() {
        let (status, retry, body) = post_to(StoreError::Busy).await;
        assert_eq!(
            (status, retry.as_deref(), body["error"].as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("1"),
                Some("overloaded")
            )
        );
        let (status, retry, body) =
            post_to(StoreError::Db("disk I/O error at /secret/path".into())).await;
        assert_eq!(
            (status, retry.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("5"))
        );
        assert_eq!(body["error"], "storage_unavailable");
        assert!(
            !body.to_string().contains("/secret/path"),
            "internals leaked: {body}"
        );
    }
}
