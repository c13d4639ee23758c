//! HTTP around the pipeline: `/healthz`, `/readyz`, `/metrics`, and the admin API (deliveries, dead
//! letters, replay, reload, rules, explain, channel tests), which answers only when an admin token is
//! configured. Errors are [`HttpError`]s (JSON, no internals); tokens are checked in constant time by
//! [`token_matches`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{body::Bytes, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::channel_config::SendError;
use crate::clock::now_ms;
use crate::event::Envelope;
use crate::http_error::HttpError;
use crate::noise::silence::{Matchers, NewSilence};
use crate::pipeline::Pipeline;
use crate::reload::Reloader;
use crate::secret::token_matches;
use crate::store::{Filter, Replay, Status, Store, StoreError};

mod incidents;

pub(crate) use incidents::{clean_name, take};

/// State of the operational and admin routes.
#[derive(Clone)]
pub struct AdminState {
    /// The pipeline (store, configuration, metrics).
    pub pipeline: Pipeline,
    /// Hot reload.
    pub reloader: Arc<Reloader>,
    /// Status of the live Traccar sources.
    pub sources: Arc<crate::source::traccar::Statuses>,
    /// The outbox figures `/metrics` shows.
    pub outbox: Arc<OutboxFigures>,
}

/// The outbox figures of `/metrics` (deliveries by status, age of the oldest due one). They are read
/// one at a time, and a read serves every scrape that comes within [`OutboxFigures::FRESH`] of its start
/// (those that come while it runs wait for it). A scrape loop, however fast and however many
/// connections it opens, so costs at most one read a second, and holds at most one store connection
/// (PostgreSQL's pool serves intake too): reading the counts scans every delivery row.
pub struct OutboxFigures {
    fresh: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Figures)>>,
}

/// Deliveries by status; seconds the oldest due delivery has waited.
type Figures = (Vec<(Status, u64)>, f64);

impl Default for OutboxFigures {
    fn default() -> Self {
        OutboxFigures::with_window(OutboxFigures::FRESH)
    }
}

impl OutboxFigures {
    /// How long a read serves later scrapes: the gauges are at most this old, far below any scrape
    /// interval.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// Figures whose reads serve later scrapes for `fresh`.
    pub fn with_window(fresh: Duration) -> OutboxFigures {
        OutboxFigures {
            fresh,
            last: Default::default(),
        }
    }

    /// Figures `read` at most [`OutboxFigures::FRESH`] before this call began, or after.
    pub(crate) async fn get<F>(&self, read: impl FnOnce() -> F) -> Result<Figures, StoreError>
    where
        F: std::future::Future<Output = Result<Figures, StoreError>>,
    {
        let asked = tokio::time::Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, figures)) = &*last {
            if asked <= *started + self.fresh {
                return Ok(figures.clone());
            }
        }
        let started = tokio::time::Instant::now();
        let figures = read().await?;
        *last = Some((started, figures.clone()));
        Ok(figures)
    }
}

/// The outbox figures as the store has them now.
pub(crate) async fn read_figures(store: &dyn Store) -> Result<Figures, StoreError> {
    let counts = store.counts().await?;
    let now = now_ms();
    let oldest = store.oldest_due(now).await?;
    Ok((
        counts,
        oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
    ))
}

/// `/healthz`, `/readyz` and `/metrics` (open), `/-/reload` and `/api/...` (admin token). The admin
/// token is read from the current configuration, so a reload can set or change it.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/-/reload", post(reload))
        .route("/api/deliveries", get(list))
        .route("/api/deliveries/{id}/replay", post(replay_one))
        .route("/api/deliveries/replay-dead", post(replay_dead))
        .route("/api/rules", get(rules))
        .route("/api/explain", post(explain))
        .route("/api/channels/{name}/test", post(test_channel))
        .route("/api/silences", get(list_silences).post(add_silence))
        .route("/api/silences/{id}", axum::routing::delete(expire_silence))
        .merge(incidents::routes())
        .with_state(state)
}

fn check_admin(s: &AdminState, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(token) = s.pipeline.shared.get().config.admin_token.clone() else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off: set admin.token",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    if token_matches(presented, &token) {
        Ok(())
    } else {
        Err(HttpError::unauthorized())
    }
}

fn store_error(e: StoreError) -> HttpError {
    HttpError::from_store(&e)
}

/// Alive, with each live Traccar source's state (connected, last frame, reconnects, last error; never
/// a credential). A disconnected source does not make the relay unhealthy: it keeps reconnecting.
async fn healthz(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "sources": s.sources.snapshot() }))
}

/// Ready: the store answers, a configuration is loaded, the intake listens. A failed reload is
/// reported (the previous configuration keeps running) but does not make the relay unready.
async fn readyz(State(s): State<AdminState>) -> Response {
    let store = match tokio::time::timeout(READY_TIMEOUT, s.pipeline.store.ping()).await {
        Ok(Ok(())) => json!({ "ok": true }),
        Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => {
            json!({ "ok": false, "error": format!("no answer within {}s", READY_TIMEOUT.as_secs()) })
        }
    };
    let rt = s.pipeline.shared.get();
    let config = json!({
        "ok": true,
        "rules": rt.config.rules.rules().len(),
        "channels": rt.config.channels.len(),
        "last_reload_error": s.reloader.last_error().await,
    });
    let ready = store["ok"] == true;
    let body = json!({
        "ready": ready,
        "store": store,
        "config": config,
        "sources": { "webhook": { "ok": true, "path": rt.config.ingest.path } },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Readiness waits this long for the store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn metrics(State(s): State<AdminState>) -> Result<Response, HttpError> {
    let store = s.pipeline.store.as_ref();
    match store.incident_counts().await {
        Ok(c) => s.pipeline.metrics.incidents_live(&c),
        Err(e) => tracing::warn!(error = %e, "cannot count the incidents for /metrics"),
    }
    let (counts, age) = s
        .outbox
        .get(|| read_figures(store))
        .await
        .map_err(store_error)?;
    let text = s.pipeline.metrics.render(&counts, age);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn reload(State(s): State<AdminState>, headers: HeaderMap) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    match s.reloader.reload("POST /-/reload").await {
        Ok(loaded) => Ok(Json(json!({ "status": "reloaded", "loaded": loaded })).into_response()),
        Err(e) => Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            e,
        )),
    }
}

/// Query of `GET /api/deliveries`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    channel: Option<String>,
    rule: Option<String>,
    // Numbers arrive as text and are parsed here, so a bad one gets the JSON error shape.
    device: Option<String>,
    // The next page: rows older than this id (the last one of the page before).
    before: Option<String>,
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
    let before_id = number("before", q.before)?;
    let limit = number("limit", q.limit)?.unwrap_or(100).clamp(1, 10_000) as usize;
    let filter = Filter {
        status,
        channel: q.channel,
        device_id,
        rule: q.rule,
        before_id,
        limit,
        ..Filter::default()
    };
    let rows = s.pipeline.store.list(filter).await.map_err(store_error)?;
    Ok(Json(json!({ "deliveries": rows })).into_response())
}

async fn replay_one(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let n = s
        .pipeline
        .store
        .replay(Replay::Id(id), now_ms())
        .await
        .map_err(store_error)?;
    if n == 0 {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead or delivered delivery with id {id}"),
        ));
    }
    s.pipeline.wake.notify_one();
    Ok(Json(json!({ "replayed": n })).into_response())
}

async fn replay_dead(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let n = s
        .pipeline
        .store
        .replay(Replay::AllDead, now_ms())
        .await
        .map_err(store_error)?;
    s.pipeline.wake.notify_one();
    Ok(Json(json!({ "replayed": n })).into_response())
}

/// A rule as `GET /api/rules` and the console show it.
pub(crate) fn rule_view(r: &crate::rules::Rule) -> serde_json::Value {
    json!({
        "name": r.name,
        "origin": r.origin.to_string(),
        "description": r.description,
        "match": r.matcher.describe(),
        "stop": r.stop,
        "severity": r.severity.as_str(),
        "channels": r.targets.iter().map(|t| t.channel.as_str()).collect::<Vec<_>>(),
    })
}

async fn rules(State(s): State<AdminState>, headers: HeaderMap) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let rt = s.pipeline.shared.get();
    let rules: Vec<_> = rt.config.rules.rules().iter().map(rule_view).collect();
    Ok(Json(json!({ "rules": rules })).into_response())
}

async fn explain(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let raw = std::str::from_utf8(&body).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    let env = Envelope::from_json(raw.as_bytes())
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;
    let rt = s.pipeline.shared.get();
    let silences = s.pipeline.silences.get();
    let x = crate::explain::explain(
        &rt.config,
        &env,
        raw,
        &silences,
        Some(s.pipeline.store.as_ref()),
    )
    .await;
    Ok(Json(x).into_response())
}

/// Query of `GET /api/silences`.
#[derive(Debug, Deserialize)]
pub struct SilencesQuery {
    /// Include expired silences.
    #[serde(default)]
    all: bool,
}

async fn list_silences(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<SilencesQuery>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let now = now_ms();
    let list: Vec<_> = s
        .pipeline
        .store
        .silences()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|x| q.all || x.ends_at_ms > now)
        .map(|x| x.view(now))
        .collect();
    Ok(Json(json!({ "silences": list })).into_response())
}

/// Body of `POST /api/silences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// What to mute.
    matchers: Matchers,
    /// Start (RFC 3339; default now).
    starts_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// End (RFC 3339); or give `duration`.
    ends_at: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Length from the start (`2h`, `30m`).
    #[serde(default, with = "humantime_serde")]
    duration: Option<std::time::Duration>,
    /// Who.
    author: String,
    /// Why.
    #[serde(default)]
    comment: String,
}

async fn add_silence(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, "invalid_silence", m);
    let req: SilenceRequest = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    req.matchers.validate().map_err(bad)?;
    if req.author.trim().is_empty() {
        return Err(bad("author: say who makes the silence".into()));
    }
    let now = now_ms();
    let starts_at_ms = req.starts_at.map(|t| t.timestamp_millis()).unwrap_or(now);
    let ends_at_ms = match (req.ends_at, req.duration) {
        (Some(t), None) => t.timestamp_millis(),
        (None, Some(d)) => starts_at_ms + d.as_millis() as i64,
        _ => return Err(bad("give either `ends_at` or `duration`".into())),
    };
    if ends_at_ms <= starts_at_ms.max(now) {
        return Err(bad(
            "the silence would end before it starts, or in the past".into(),
        ));
    }
    let silence = s
        .pipeline
        .store
        .add_silence(
            NewSilence {
                matchers: req.matchers,
                starts_at_ms,
                ends_at_ms,
                author: req.author,
                comment: req.comment,
            },
            now,
        )
        .await
        .map_err(store_error)?;
    refresh_silences(&s).await;
    tracing::info!(id = silence.id, matchers = %silence.matchers.describe(), author = %silence.author, "silence created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "silence": silence.view(now) })),
    )
        .into_response())
}

async fn expire_silence(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let now = now_ms();
    let silence = s
        .pipeline
        .store
        .expire_silence(id, now)
        .await
        .map_err(store_error)?;
    refresh_silences(&s).await;
    tracing::info!(id, "silence expired");
    Ok(Json(json!({ "silence": silence.view(now) })).into_response())
}

async fn refresh_silences(s: &AdminState) {
    if let Err(e) = s.pipeline.silences.refresh(s.pipeline.store.as_ref()).await {
        tracing::warn!(error = %e, "cannot re-read the silences");
    }
}

/// Query of `POST /api/channels/{name}/test`.
#[derive(Debug, Deserialize)]
pub struct TestQuery {
    to: Option<String>,
}

async fn test_channel(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<TestQuery>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let rt = s.pipeline.shared.get();
    let (Some(cfg), Some(ch)) = (rt.config.channels.get(&name), rt.channels.get(&name)) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no channel '{name}'"),
        ));
    };
    let n = cfg
        .test_notification(q.to.as_deref())
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "no_recipient", e))?;
    match ch.send(&n).await {
        Ok(_) => Ok(Json(json!({ "ok": true, "channel": name, "recipient": n.recipient })).into_response()),
        Err(e) => Ok((
            StatusCode::BAD_GATEWAY,
            Json(json!({ "ok": false, "channel": name, "error": e.to_string(), "transient": matches!(e, SendError::Transient { .. }) })),
        )
            .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Scrapes that come while the outbox figures are being read wait for that read: however many
    /// connections a scrape loop opens, one store read runs at a time (one pooled connection on
    /// PostgreSQL). Without a window, those that came during a read share the next one.
    #[tokio::test]
    async fn concurrent_scrapes_share_one_read_at_a_time() {
        let figures = Arc::new(OutboxFigures::with_window(Duration::ZERO));
        let reads = Arc::new(AtomicUsize::new(0));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(tokio::sync::Notify::new());
        let scrape = || {
            let (figures, reads, running, most, gate) = (
                figures.clone(),
                reads.clone(),
                running.clone(),
                most.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                figures
                    .get(|| async move {
                        let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(
                            running.fetch_add(1, Ordering::SeqCst) + 1,
                            Ordering::SeqCst,
                        );
                        if n == 1 {
                            // The first read takes a while.
                            gate.notified().await;
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok((vec![(Status::Done, n as u64)], 0.0))
                    })
                    .await
            })
        };
        let first = scrape();
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = (0..4).map(|_| scrape()).collect();
        // One runtime thread: a yield lets each of them run until it waits for the first read.
        tokio::task::yield_now().await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().0, vec![(Status::Done, 1)]);
        for o in others {
            assert_eq!(o.await.unwrap().unwrap().0, vec![(Status::Done, 2)]);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    /// Within the window, a read serves the scrapes after it: a scrape loop costs one read a second.
    #[tokio::test]
    async fn a_read_serves_the_scrapes_within_its_window() {
        let figures = OutboxFigures::with_window(Duration::from_secs(3600));
        let reads = AtomicUsize::new(0);
        for _ in 0..3 {
            let got = figures
                .get(|| async {
                    let n = reads.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                    Ok((vec![(Status::Pending, n)], 0.5))
                })
                .await
                .unwrap();
            assert_eq!(got, (vec![(Status::Pending, 1)], 0.5));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
