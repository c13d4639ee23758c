//! Incidents over HTTP: the admin API (`GET /api/incidents`, `GET /api/incidents/{id}`,
//! `POST /api/incidents/{id}/ack|resolve`) and the acknowledgement page a message links to
//! (`GET /ack/{token}` shows the incident, only `POST /ack/{token}` acknowledges: link previews and
//! mail scanners fetch links, and must not acknowledge for anyone).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{body::Bytes, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_admin, store_error, AdminState};
use crate::clock::{now_ms, rfc3339};
use crate::http_error::HttpError;
use crate::incident::{facts, schedule, AckSource, IncidentState, Status};
use crate::incident_service::{acknowledge, notice_text, Answer, IncidentError, Which};
use crate::render::escape_html;
use crate::secret::link_token_hash;
use crate::store::{IncidentFilter, IncidentRow};

/// The routes of this file (state: [`AdminState`]).
pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/api/incidents", get(list))
        .route("/api/incidents/{id}", get(one))
        .route("/api/incidents/{id}/ack", post(ack_api))
        .route("/api/incidents/{id}/resolve", post(resolve_api))
        .route("/ack/{token}", get(page).post(page_ack))
}

/// An incident as the API shows it: its row, state and what comes next under the rule in force.
pub fn view(row: &IncidentRow, s: &AdminState) -> Value {
    let Ok(state) = &row.state else {
        return json!({ "id": row.id, "key": row.key, "rule": row.rule, "status": "unreadable",
            "error": row.state.as_ref().err() });
    };
    let rt = s.pipeline.shared.get();
    let next: Vec<Value> = rt
        .config
        .rules
        .get(&state.rule)
        .and_then(|r| r.incident.as_ref())
        .map(|i| {
            schedule(state, &i.policy)
                .into_iter()
                .map(|d| d.to_json())
                .collect()
        })
        .unwrap_or_default();
    let f = facts(state, now_ms());
    json!({
        "id": row.id,
        "key": state.key,
        "rule": state.rule,
        "status": row.status_name(),
        "opened_at": rfc3339(state.opened_at_ms),
        "events": state.events,
        "repeats_done": state.repeats_done,
        "escalations_done": state.escalations_done,
        "last_seen": state.last_seen,
        "moved_m": f.moved_m,
        "heading": f.heading,
        "detail": state.status,
        "summary": notice_text(row.id, state, rt.config.timezone),
        "schedule": next,
        "updated_at": rfc3339(row.updated_at),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    all: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let all = match q.all.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("all: `{other}` is not true or false"),
            ))
        }
    };
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l.parse::<usize>().map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit: `{l}` is not a number"),
            )
        })?,
    }
    .clamp(1, 10_000);
    let rows = s
        .pipeline
        .store
        .incidents(IncidentFilter { all, limit })
        .await
        .map_err(store_error)?;
    let out: Vec<Value> = rows.iter().map(|r| view(r, &s)).collect();
    Ok(Json(json!({ "incidents": out })).into_response())
}

async fn one(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let row = s
        .pipeline
        .store
        .incident(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(view(&row, &s)).into_response())
}

fn not_found(id: i64) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no incident with id {id}"),
    )
}

/// `{"by": "Lena"}`, optional.
#[derive(Deserialize, Default)]
struct ByBody {
    by: Option<String>,
}

async fn ack_api(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, HttpError> {
    by_hand(s, headers, id, body, false).await
}

async fn resolve_api(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, HttpError> {
    by_hand(s, headers, id, body, true).await
}

/// An acknowledgement or resolution through the admin API.
async fn by_hand(
    s: AdminState,
    headers: HeaderMap,
    id: i64,
    body: Bytes,
    resolve: bool,
) -> Result<Response, HttpError> {
    check_admin(&s, &headers)?;
    let b: ByBody = if body.iter().all(u8::is_ascii_whitespace) {
        ByBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("expected {{\"by\": \"name\"}}: {e}"),
            )
        })?
    };
    let by = clean_name(b.by.as_deref()).unwrap_or_else(|| "admin".to_string());
    let answer = take(&s, &Which::Id(id), &by, AckSource::Api, resolve).await;
    match answer {
        Ok(a) => {
            Ok(Json(json!({ "changed": a.changed, "incident": view(&a.row, &s) })).into_response())
        }
        Err(IncidentError::NotFound) => Err(not_found(id)),
        Err(e) => Err(ack_error(e)),
    }
}

/// Runs an acknowledgement or resolution, counts it and wakes the timer (it owes a notice).
pub(crate) async fn take(
    s: &AdminState,
    which: &Which,
    by: &str,
    via: AckSource,
    resolve: bool,
) -> Result<Answer, IncidentError> {
    let rules = &s.pipeline.shared.get().config.rules;
    let now = now_ms();
    let a = acknowledge(
        s.pipeline.store.as_ref(),
        rules,
        which,
        by,
        via,
        resolve,
        now,
    )
    .await?;
    if a.changed {
        let m = &s.pipeline.metrics;
        if resolve {
            m.incident_resolved("manual");
        } else {
            m.incident_acknowledged((now - a.state.opened_at_ms) as f64 / 1000.0);
        }
        s.pipeline.incidents_wake.notify_one();
        tracing::info!(incident = a.row.id, by, via = ?via, "incident {}", if resolve { "resolved" } else { "acknowledged" });
    }
    Ok(a)
}

fn ack_error(e: IncidentError) -> HttpError {
    match e {
        IncidentError::NotFound => {
            HttpError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        IncidentError::Resolved(_) => {
            HttpError::new(StatusCode::CONFLICT, "resolved", e.to_string())
        }
        IncidentError::Unreadable(_) => {
            HttpError::new(StatusCode::CONFLICT, "unreadable", e.to_string())
        }
        IncidentError::Busy => {
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
        }
        IncidentError::Store(e) => store_error(e),
    }
}

/// A name given by a person: one line, printable, at most 60 characters; `None` when empty.
pub(crate) fn clean_name(name: Option<&str>) -> Option<String> {
    let n: String = name?.chars().filter(|c| !c.is_control()).take(60).collect();
    let n = n.trim().to_string();
    (!n.is_empty()).then_some(n)
}

/// A link token as messages carry it: 32 hex digits. Anything else is not looked up.
fn token_hash(token: &str) -> Option<String> {
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| link_token_hash(&token.to_ascii_lowercase()))
}

/// `GET /ack/{token}`: the incident and a button. Changes nothing.
async fn page(State(s): State<AdminState>, Path(token): Path<String>) -> Response {
    let Some(hash) = token_hash(&token) else {
        return gone();
    };
    match s.pipeline.store.incident_by_token(&hash).await {
        Ok(Some((row, label))) => match &row.state {
            Ok(state) if !state.status.is_resolved() => html(
                StatusCode::OK,
                &incident_page(&s, row.id, state, &label, None),
            ),
            _ => gone(),
        },
        Ok(None) => gone(),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// What a `POST /ack/{token}` may carry: the page's form (`name`), a push service's action (`via=ntfy`),
/// or Pushover's callback for an emergency message acknowledged in its app (`receipt`,
/// `acknowledged_by_device`, …; other fields are ignored).
#[derive(Deserialize)]
struct AckForm {
    name: Option<String>,
    via: Option<String>,
    receipt: Option<String>,
    acknowledged_by_device: Option<String>,
}

impl AckForm {
    /// Where the acknowledgement came from, and the name to record (`None`: the link's label alone).
    fn source(&self) -> (AckSource, Option<String>) {
        if self.receipt.is_some() {
            let device = clean_name(self.acknowledged_by_device.as_deref());
            let name = match device {
                Some(d) => format!("Pushover, {d}"),
                None => "Pushover".into(),
            };
            return (AckSource::Pushover, Some(name));
        }
        let via = match self.via.as_deref() {
            Some("ntfy") => AckSource::Ntfy,
            _ => AckSource::Link,
        };
        (via, clean_name(self.name.as_deref()))
    }
}

/// `POST /ack/{token}`: acknowledges (idempotent: a second press says who came first).
async fn page_ack(State(s): State<AdminState>, Path(token): Path<String>, body: Bytes) -> Response {
    // A body that is no form (a bare POST) acknowledges without a name.
    let form: Option<AckForm> = serde_urlencoded::from_bytes(&body).ok();
    // A push service's action or callback (not a person at the page): the incident of a known link
    // being closed is an answer, not an error it would repeat (Pushover calls back every minute until
    // it gets a 2xx). An unknown link stays a 404 (a wrong public_url must show).
    let service = form
        .as_ref()
        .is_some_and(|f| f.receipt.is_some() || f.via.is_some());
    let Some(hash) = token_hash(&token) else {
        return gone();
    };
    let label = match s.pipeline.store.incident_by_token(&hash).await {
        Ok(Some((_, label))) => label,
        Ok(None) => return gone(),
        Err(e) => return unavailable(&e.to_string()),
    };
    let (via, name) = form.map_or((AckSource::Link, None), |f| f.source());
    let by = match name {
        Some(n) => format!("{n} ({label})"),
        None => label.clone(),
    };
    match take(&s, &Which::TokenHash(hash), &by, via, false).await {
        Ok(a) => {
            let note = if a.changed {
                "Acknowledged. No more reminders; the others notified are told."
            } else {
                "Already acknowledged."
            };
            html(
                StatusCode::OK,
                &incident_page(&s, a.row.id, &a.state, &label, Some(note)),
            )
        }
        Err(IncidentError::NotFound | IncidentError::Resolved(_)) if service => closed(),
        Err(IncidentError::NotFound | IncidentError::Resolved(_)) => gone(),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// The page of an incident: what happened, where the device was last seen, and the button (until it
/// is acknowledged). Everything shown is escaped.
fn incident_page(
    s: &AdminState,
    id: i64,
    state: &IncidentState,
    label: &str,
    note: Option<&str>,
) -> String {
    let rt = s.pipeline.shared.get();
    let tz = rt.config.timezone;
    let f = facts(state, now_ms());
    let summary = f.summary(tz, now_ms());
    let map = state.last_seen.map_or(String::new(), |p| {
        format!(
            "<p><a href=\"{}\" rel=\"noreferrer\">Last seen on the map</a></p>",
            escape_html(&crate::render::map_url(p.lat, p.lon))
        )
    });
    let status = escape_html(&notice_text(id, state, tz));
    let form = if state.status == Status::Open {
        "<form method=\"post\"><label>Your name (optional)<br><input name=\"name\" maxlength=\"60\" \
         autocomplete=\"name\"></label><br><button type=\"submit\">Acknowledge</button></form>"
    } else {
        ""
    };
    let note = note.map_or(String::new(), |n| {
        format!("<p class=\"note\">{}</p>", escape_html(n))
    });
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Incident {id}</title><style>body{{font-family:sans-serif;max-width:32em;margin:1em auto;\
         padding:0 1em}}button{{font-size:1.4em;padding:.6em 1.2em;margin-top:.6em}}input{{font-size:1.1em}}\
         .note{{background:#e8f5e9;padding:.6em}}</style></head><body>\
         <h1>{rule}</h1>{note}<p>{summary}</p><p>{status}</p>{map}{form}\
         <p><small>Link sent to {label}.</small></p></body></html>",
        rule = escape_html(&state.rule),
        summary = escape_html(&summary),
        label = escape_html(label),
    )
}

/// A page with the headers an acknowledgement page needs: not cached or indexed, and the token in its
/// address never sent on as a referrer.
fn html(status: StatusCode, body: &str) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::HeaderName::from_static("x-robots-tag"), "noindex"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// An unknown or expired link: a 404 page, nothing changed.
fn gone() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Link expired</title>\
         </head><body><h1>This link has expired</h1><p>The incident it belongs to is closed, or the link \
         is not one this relay sent.</p></body></html>",
    )
}

/// What a push service's action or callback gets for a closed incident: 200, nothing to do.
fn closed() -> Response {
    html(
        StatusCode::OK,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Closed</title></head>\
         <body><p>This incident is closed: nothing to acknowledge.</p></body></html>",
    )
}

/// The store could not be reached: try again.
fn unavailable(why: &str) -> Response {
    tracing::warn!(error = why, "acknowledgement page: the store failed");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Try again</title></head>\
         <body><h1>Please try again in a moment</h1><p>Nothing was changed.</p></body></html>",
    )
}
