//! The console's pages about what happened: the overview, incidents (with acknowledge and resolve) and
//! deliveries (filtered, paged by id, with replay).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{form, view, Shared, Viewer};
use crate::clock::now_ms;
use crate::event::Envelope;
use crate::incident::{facts, AckSource, Status as IncidentStatus};
use crate::incident_service::{notice_text, IncidentError, Which};
use crate::store::{DeliveryRow, Filter, IncidentFilter, IncidentRow, Replay, Status};

/// Rows on a page of deliveries.
const PAGE: usize = 50;

/// The activity chart: this many buckets of a minute.
const CHART_MINUTES: usize = 180;

/// A store failure as a page: nothing changed, try again.
pub(super) fn store_failed(
    c: &super::Console,
    s: &super::Session,
    e: impl std::fmt::Display,
) -> Response {
    tracing::warn!(error = %e, "console: the store failed");
    c.message(
        Some(s),
        StatusCode::SERVICE_UNAVAILABLE,
        "The store did not answer",
        "Nothing was changed. Try again in a moment.",
    )
}

/// The overview: sources, activity, outbox, incidents, the latest events, the last reload.
pub async fn overview(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(q): Query<DoneQuery>,
) -> Response {
    let store = c.admin.pipeline.store.as_ref();
    let now = now_ms();
    let rt = c.admin.pipeline.shared.get();
    let tz = rt.config.timezone;
    let minute = 60_000;
    let since = (now / minute - CHART_MINUTES as i64 + 1) * minute;
    // The outbox figures as `/metrics` reads them: one read a second at most, however many
    // overviews refresh themselves (counting scans every delivery).
    let figures = c.admin.outbox.get(|| crate::api::read_figures(store));
    let (activity, figures, incidents, events) = tokio::join!(
        store.activity(since, minute),
        figures,
        store.incident_counts(),
        store.recent_events(10),
    );
    let (activity, (counts, oldest_s), events) = match (activity, figures, events) {
        (Ok(a), Ok(f), Ok(e)) => (a, f, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return store_failed(&c, &s, e),
    };
    let count = |st: Status| counts.iter().find(|(x, _)| *x == st).map_or(0, |(_, n)| *n);
    let outbox: Vec<Value> = [
        Status::Pending,
        Status::Inflight,
        Status::Dead,
        Status::Suppressed,
        Status::Grouped,
        Status::Done,
    ]
    .iter()
    .map(|st| json!({ "status": st.as_str(), "count": count(*st) }))
    .collect();
    let live = incidents.unwrap_or_default();
    let open: u64 = live.iter().map(|(_, n)| *n).sum();
    let sources: Vec<Value> = c
        .admin
        .sources
        .snapshot()
        .into_iter()
        .map(|x| {
            json!({
                "name": x.name, "url": x.url, "connected": x.connected,
                "last_frame": x.last_frame.map(|t| view::ago(t.timestamp_millis(), now)),
                "reconnects": x.reconnects, "last_error": x.last_error, "devices": x.devices,
                "events": x.events, "missing": x.missing_web_notifications,
            })
        })
        .collect();
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let env = Envelope::from_json(e.payload.as_bytes()).ok();
            json!({
                "id": e.id, "event_id": e.event_id, "type": e.event_type, "device_id": e.device_id,
                "has_body": !e.payload.is_empty(),
                "device": env.as_ref().and_then(|x| x.device.as_ref()).map(|d| d.name.clone()).unwrap_or_default(),
                "title": env.as_ref().map(crate::render::title),
                "at": view::time(e.received_at_ms, tz), "ago": view::ago(e.received_at_ms, now),
            })
        })
        .collect();
    let reload = c.admin.reloader.last_error().await;
    c.page(
        "overview.html",
        Some(&s),
        json!({
            "title": "Overview", "nav": "overview",
            "webhook": rt.config.ingest.path, "sources": sources,
            "chart": view::chart(&activity, now, minute, CHART_MINUTES),
            "outbox": outbox, "dead": count(Status::Dead),
            "oldest_due": (oldest_s > 0.0).then(|| view::ago(now - (oldest_s * 1000.0) as i64, now)),
            "incidents": live.iter().map(|(st, n)| json!({ "status": st, "count": n })).collect::<Vec<_>>(),
            "open": open, "events": events, "reload_error": reload,
            "waiting": count(Status::Pending), "done": done_text(q.done.as_deref()),
            "rules": rt.config.rules.rules().len(), "channels": rt.config.channels.len(),
        }),
    )
}

/// Query of the incidents page.
#[derive(Deserialize)]
pub struct IncidentsQuery {
    all: Option<String>,
}

/// An incident as the pages show it.
fn incident_view(row: &IncidentRow, tz: chrono_tz::Tz, now: i64) -> Value {
    let Ok(state) = &row.state else {
        return json!({ "id": row.id, "key": row.key, "rule": row.rule, "status": "unreadable" });
    };
    let f = facts(state, now);
    let ack = match &state.status {
        IncidentStatus::Acknowledged(a) => Some(a),
        IncidentStatus::Resolved { ack, .. } => ack.as_ref(),
        IncidentStatus::Open => None,
    };
    json!({
        "id": row.id, "key": state.key, "rule": state.rule, "status": row.status_name(),
        "opened": view::time(state.opened_at_ms, tz), "opened_ago": view::ago(state.opened_at_ms, now),
        "last_event": view::time(state.last_event_at_ms, tz),
        "events": state.events, "repeats": state.repeats_done, "escalations": state.escalations_done,
        "summary": f.summary(tz, now), "notice": notice_text(row.id, state, tz),
        "ack": ack.map(|a| json!({ "by": a.by, "via": crate::incident_service::source_name(a.via),
                                   "at": view::time(a.at_ms, tz) })),
        "map": state.last_seen.map(|p| crate::render::map_url(p.lat, p.lon)),
        "seen": state.last_seen.map(|p| json!({ "lat": p.lat, "lon": p.lon,
                                                "at": view::time(p.at_ms, tz) })),
        "live": !state.status.is_resolved(),
        "open": state.status == IncidentStatus::Open,
    })
}

/// Open and acknowledged incidents (`?all=1`: resolved ones too).
pub async fn incidents(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(q): Query<IncidentsQuery>,
) -> Response {
    let all = q.all.is_some_and(|a| !a.is_empty() && a != "0");
    let rows = match c
        .admin
        .pipeline
        .store
        .incidents(IncidentFilter { all, limit: 200 })
        .await
    {
        Ok(r) => r,
        Err(e) => return store_failed(&c, &s, e),
    };
    let tz = c.admin.pipeline.shared.get().config.timezone;
    let now = now_ms();
    let list: Vec<Value> = rows.iter().map(|r| incident_view(r, tz, now)).collect();
    c.page(
        "incidents.html",
        Some(&s),
        json!({ "title": "Incidents", "nav": "incidents", "incidents": list, "all": all }),
    )
}

/// One incident: its state, its device, its timeline (every message it sent or held back).
pub async fn incident(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Path(id): Path<i64>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let store = c.admin.pipeline.store.as_ref();
    let row = match store.incident(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return c.message(
                Some(&s),
                StatusCode::NOT_FOUND,
                "No such incident",
                &format!("There is no incident {id}."),
            )
        }
        Err(e) => return store_failed(&c, &s, e),
    };
    let filter = Filter {
        incident: Some(id),
        limit: 500,
        ..Default::default()
    };
    let (deliveries, event) = tokio::join!(store.list(filter), store.stored_event(row.event_ref));
    let tz = c.admin.pipeline.shared.get().config.timezone;
    let mut timeline: Vec<Value> = match deliveries {
        Ok(d) => d.iter().map(|d| delivery_view(d, tz)).collect(),
        Err(e) => return store_failed(&c, &s, e),
    };
    timeline.reverse();
    let device = event.ok().flatten().and_then(|e| {
        Envelope::from_json(e.payload.as_bytes())
            .ok()
            .and_then(|env| env.device)
            .map(|d| json!({ "id": d.id, "name": d.name }))
    });
    c.page(
        "incident.html",
        Some(&s),
        json!({
            "title": format!("Incident {id}"), "nav": "incidents",
            "incident": incident_view(&row, tz, now_ms()), "device": device,
            "timeline": timeline, "done": done_text(q.done.as_deref()),
        }),
    )
}

/// `?done=` after an action: a known word, shown as a sentence (never the query's own text).
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub(super) fn done_text(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "ack" => "Acknowledged.",
        "resolve" => "Resolved.",
        "already" => "Nothing to do: it was already so.",
        "replayed" => "Queued to be sent again.",
        "silenced" => "Silence created.",
        "expired" => "Silence expired.",
        "reloaded" => "Configuration reloaded.",
        _ => return None,
    })
}

/// The acknowledge and resolve forms.
#[derive(Deserialize)]
pub struct ActionForm {
    name: Option<String>,
}

/// `POST /console/incidents/{id}/ack|resolve`.
pub async fn incident_action(
    State(c): State<Shared>,
    Path((id, action)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, f): (_, ActionForm) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let resolve = match action.as_str() {
        "ack" => false,
        "resolve" => true,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let by = crate::api::clean_name(f.name.as_deref()).unwrap_or_else(|| "console".to_string());
    match crate::api::take(&c.admin, &Which::Id(id), &by, AckSource::Console, resolve).await {
        Ok(a) => {
            let done = if !a.changed {
                "already"
            } else {
                action.as_str()
            };
            Redirect::to(&format!("/console/incidents/{id}?done={done}")).into_response()
        }
        Err(IncidentError::NotFound) => c.message(
            Some(&s),
            StatusCode::NOT_FOUND,
            "No such incident",
            &format!("There is no incident {id}."),
        ),
        Err(e) => c.message(
            Some(&s),
            StatusCode::CONFLICT,
            "Not changed",
            &e.to_string(),
        ),
    }
}

/// A delivery as the lists show it.
fn delivery_view(d: &DeliveryRow, tz: chrono_tz::Tz) -> Value {
    json!({
        "id": d.id, "status": d.status.as_str(), "channel": d.channel, "recipient": d.recipient,
        "rule": d.rule, "event_id": d.event_id, "event_type": d.event_type, "device_id": d.device_id,
        "attempts": d.attempts, "created": view::rfc3339(&d.created_at, tz),
        "updated": view::rfc3339(&d.updated_at, tz),
        "next": d.next_attempt_at.as_deref().map(|t| view::rfc3339(t, tz)),
        "error": d.last_error, "reason": d.reason,
        "replayable": matches!(d.status, Status::Dead | Status::Done | Status::Suppressed),
    })
}

/// The deliveries page's filters, as the form sends them (every field text: a bad one is reported on
/// the page, not as a bare 400).
#[derive(Deserialize, Default, Clone)]
pub struct DeliveriesQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
    done: Option<String>,
}

impl DeliveriesQuery {
    /// The store filter, or what is wrong with the form.
    fn filter(&self, tz: chrono_tz::Tz, limit: usize) -> Result<Filter, String> {
        let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        let number = |what: &str, v: &str| -> Result<Option<i64>, String> {
            text(v)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{what}: `{v}` is not a number"))
                })
                .transpose()
        };
        Ok(Filter {
            status: match text(&self.status) {
                None => None,
                Some(v) => Some(Status::parse(&v).ok_or(format!("status: `{v}` is not one"))?),
            },
            channel: text(&self.channel),
            rule: text(&self.rule),
            device_id: number("device", &self.device)?,
            before_id: number("before", &self.before)?,
            since_ms: view::parse_local(&self.since, tz).map_err(|e| format!("from: {e}"))?,
            until_ms: view::parse_local(&self.until, tz).map_err(|e| format!("to: {e}"))?,
            limit,
            ..Default::default()
        })
    }

    /// The query string of these filters with another `before`.
    fn with_before(&self, before: i64) -> String {
        let pairs = [
            ("status", &self.status),
            ("channel", &self.channel),
            ("rule", &self.rule),
            ("device", &self.device),
            ("since", &self.since),
            ("until", &self.until),
        ];
        let mut q = form_urlencoded(pairs.iter().filter(|(_, v)| !v.is_empty()));
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!("before={before}"));
        q
    }
}

fn form_urlencoded<'a>(pairs: impl Iterator<Item = &'a (&'a str, &'a String)>) -> String {
    let v: Vec<(&str, &str)> = pairs.map(|(k, v)| (*k, v.as_str())).collect();
    serde_urlencoded::to_string(v).unwrap_or_default()
}

/// Deliveries, newest first, filtered, 50 a page (`before` = the last id of the page before).
pub async fn deliveries(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let rt = c.admin.pipeline.shared.get();
    let tz = rt.config.timezone;
    let (rows, error) = match q.filter(tz, PAGE + 1) {
        Ok(f) => match c.admin.pipeline.store.list(f).await {
            Ok(r) => (r, None),
            Err(e) => return store_failed(&c, &s, e),
        },
        Err(e) => (Vec::new(), Some(e)),
    };
    let more = rows.len() > PAGE;
    let rows = &rows[..rows.len().min(PAGE)];
    let next = more
        .then(|| rows.last().map(|r| q.with_before(r.id)))
        .flatten();
    let mut channels: Vec<&String> = rt.config.channels.keys().collect();
    channels.sort();
    let rules: Vec<&str> = rt
        .config
        .rules
        .rules()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    c.page(
        "deliveries.html",
        Some(&s),
        json!({
            "title": "Deliveries", "nav": "deliveries",
            "rows": rows.iter().map(|d| delivery_view(d, tz)).collect::<Vec<_>>(),
            "q": { "status": q.status, "channel": q.channel, "rule": q.rule, "device": q.device,
                   "since": q.since, "until": q.until, "before": q.before },
            "statuses": ["pending", "inflight", "done", "dead", "suppressed", "grouped"],
            "channels": channels, "rules": rules, "next": next, "error": error,
            "done": done_text(q.done.as_deref()),
            "replayed": q.done.as_deref().and_then(|d| d.strip_prefix("replayed-")?.parse::<u64>().ok()),
        }),
    )
}

/// One delivery: where it stands, its message as rendered, its event.
pub async fn delivery(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Path(id): Path<i64>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let d = match c.admin.pipeline.store.delivery(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return c.message(
                Some(&s),
                StatusCode::NOT_FOUND,
                "No such delivery",
                &format!("There is no delivery {id} (it may have been pruned)."),
            )
        }
        Err(e) => return store_failed(&c, &s, e),
    };
    let tz = c.admin.pipeline.shared.get().config.timezone;
    let content = serde_json::from_str::<crate::notification::Notification>(&d.content)
        .map(|n| view::content(&n.content))
        .unwrap_or_else(|e| json!({ "kind": "unreadable", "text": e.to_string() }));
    let event = d.event_payload.as_deref().map(|p| {
        serde_json::from_str::<Value>(p)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| p.to_string())
    });
    c.page(
        "delivery.html",
        Some(&s),
        json!({
            "title": format!("Delivery {id}"), "nav": "deliveries",
            "d": delivery_view(&d.row, tz), "key": d.row.key, "txn": d.row.txn,
            "content": content, "event": event, "incident": d.incident_ref, "digest": d.digest_ref,
            "done": done_text(q.done.as_deref()),
        }),
    )
}

/// `POST /console/deliveries/{id}/replay`: send it again (dead, done or suppressed).
pub async fn replay_one(
    State(c): State<Shared>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, _): (_, serde::de::IgnoredAny) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match c
        .admin
        .pipeline
        .store
        .replay(Replay::Id(id), now_ms())
        .await
    {
        Ok(0) => c.message(
            Some(&s),
            StatusCode::CONFLICT,
            "Not replayed",
            &format!("Delivery {id} is not dead, delivered or suppressed (or is gone)."),
        ),
        Ok(_) => {
            c.admin.pipeline.wake.notify_one();
            tracing::info!(id, "console: delivery replayed");
            Redirect::to(&format!("/console/deliveries/{id}?done=replayed")).into_response()
        }
        Err(e) => store_failed(&c, &s, e),
    }
}

/// Dead letters replayed per press of "Replay these": a filter that matches more is pressed again.
const REPLAY_BATCH: usize = 1000;

/// `POST /console/deliveries/replay-dead`: the dead letters the page's filters select (channel,
/// rule, device, times), up to [`REPLAY_BATCH`] at a time.
pub async fn replay_dead(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, q): (_, DeliveriesQuery) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tz = c.admin.pipeline.shared.get().config.timezone;
    let filter = match q.filter(tz, REPLAY_BATCH) {
        Ok(f) => Filter {
            status: Some(Status::Dead),
            before_id: None,
            ..f
        },
        Err(e) => return c.message(Some(&s), StatusCode::BAD_REQUEST, "Bad filter", &e),
    };
    let store = c.admin.pipeline.store.as_ref();
    let rows = match store.list(filter).await {
        Ok(r) => r,
        Err(e) => return store_failed(&c, &s, e),
    };
    let now = now_ms();
    let mut n = 0;
    for r in &rows {
        match store.replay(Replay::Id(r.id), now).await {
            Ok(k) => n += k,
            Err(e) => return store_failed(&c, &s, e),
        }
    }
    c.admin.pipeline.wake.notify_one();
    tracing::info!(replayed = n, "console: dead letters replayed");
    let back = DeliveriesQuery {
        status: "dead".into(),
        before: String::new(),
        ..q
    };
    let query = back.with_before(0);
    let query = query.trim_end_matches("before=0").trim_end_matches('&');
    Redirect::to(&format!("/console/deliveries?{query}&done=replayed-{n}")).into_response()
}
