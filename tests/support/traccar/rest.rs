//! The Traccar stand-in's account side, as Traccar 6 does it (`docs/reference/traccar-api.md` names the
//! source files): the session's user (`GET /api/session`), `GET/PUT /api/users/{id}`,
//! `GET/POST /api/notifications`, `PUT/DELETE /api/notifications/{id}`, `POST/DELETE /api/permissions`;
//! and BikeTrax's webhook, sent to the user's `webhookUrl` ([`Traccar::webhook`]).
//!
//! Where Traccar is strict, so is this:
//! - `POST /api/notifications` links the new notification to the caller itself
//!   (`BaseObjectResource.add`); `POST /api/permissions` inserts a link row without looking for an equal
//!   one (`DatabaseStorage.addPermission`, no unique key on `tc_user_notification`), so a second equal
//!   link is accepted (204) and stored twice; `DELETE` removes every equal row.
//! - `PUT` replaces the whole object (`storage.updateObject` with every column but `id`): a field left
//!   out of the body is reset to its default; the id is the body's, not the path's.
//! - A non-administrator may not change `administrator`, `deviceLimit`, `userLimit`, `readonly`,
//!   `deviceReadonly`, `disabled`, `limitCommands`, `disableReports`, `fixedEmail` of a user
//!   (`PermissionsService.checkUserUpdate`): a partial `PUT` that resets `deviceLimit` from -1 to 0 is
//!   refused. A read-only user may write nothing. Refusals are 400 with `<message> - SecurityException`
//!   (`ResourceErrorHandler` maps every exception that is not a `WebApplicationException` to 400).
//! - Writes want `Content-Type: application/json` (415 otherwise).
//!
//! Tests see every write ([`Traccar::writes`]) and can make one fail ([`Traccar::fail_write`],
//! [`Traccar::fail_path`]): the failing write answers its status and changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{has_session, Inner, St, Traccar};

/// One write the server was asked for.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// `/api/notifications/3`.
    pub path: String,
    /// The JSON body (`null` when none or not JSON).
    pub body: Value,
    /// What the server answered.
    pub status: u16,
}

/// A write made to fail.
#[derive(Debug, Clone)]
pub(super) enum Fault {
    /// The write with this index in [`St::writes`] (0-based) answers `status`.
    Nth { index: usize, status: u16 },
    /// Every write of `method` to `path` answers `status`.
    Path {
        method: String,
        path: String,
        status: u16,
    },
}

/// The session's user as Traccar 6 returns it (`User` of `org.traccar.model`): id 7, not an
/// administrator, `deviceLimit` -1 (the column's default), a few attributes of its own.
pub(super) fn default_user(email: Option<&str>) -> Value {
    json!({
        "id": 7, "name": "relay", "login": null, "email": email.unwrap_or("relay@example.org"),
        "phone": "+43 660 1234567", "readonly": false, "administrator": false, "map": "osm",
        "latitude": 48.2, "longitude": 16.37, "zoom": 12, "coordinateFormat": "dd", "disabled": false,
        "expirationTime": null, "deviceLimit": -1, "userLimit": 0, "deviceReadonly": false,
        "limitCommands": false, "disableReports": false, "fixedEmail": false, "poiLayer": null,
        "totpKey": null, "temporary": false, "password": null,
        "attributes": {"timezone": "Europe/Vienna", "speedUnit": "kmh"}
    })
}

/// What a field of a user is when a `PUT` leaves it out: Java's default of its type.
fn user_defaults(id: Value) -> Value {
    json!({
        "id": id, "name": null, "login": null, "email": null, "phone": null, "readonly": false,
        "administrator": false, "map": null, "latitude": 0.0, "longitude": 0.0, "zoom": 0,
        "coordinateFormat": null, "disabled": false, "expirationTime": null, "deviceLimit": 0,
        "userLimit": 0, "deviceReadonly": false, "limitCommands": false, "disableReports": false,
        "fixedEmail": false, "poiLayer": null, "totpKey": null, "temporary": false, "password": null,
        "attributes": {}
    })
}

/// What a field of a notification is when the body leaves it out.
fn notification_defaults(id: i64) -> Value {
    json!({"id": id, "attributes": {}, "description": null, "calendarId": 0, "always": false,
           "type": null, "commandId": 0, "notificators": null})
}

/// `defaults` with the body's value for each field it knows (unknown fields are ignored).
fn overlay(defaults: Value, body: &Value) -> Value {
    let mut out = defaults;
    if let (Some(o), Some(b)) = (out.as_object_mut(), body.as_object()) {
        let keys: Vec<String> = o.keys().filter(|k| *k != "id").cloned().collect();
        for k in keys {
            if let Some(v) = b.get(&k) {
                o.insert(k, v.clone());
            }
        }
    }
    out
}

/// Fields only an administrator may change on a user (`PermissionsService.checkUserUpdate`).
const ADMIN_ONLY: &[&str] = &[
    "administrator",
    "deviceLimit",
    "userLimit",
    "readonly",
    "deviceReadonly",
    "disabled",
    "limitCommands",
    "disableReports",
    "fixedEmail",
];

/// A refused write: its status and text.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<StatusCode> for Refusal {
    fn from(status: StatusCode) -> Refusal {
        Refusal(status, String::new())
    }
}

/// Traccar's answer to a `SecurityException`: 400 and the message (`ResourceErrorHandler`).
fn denied(message: &str) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        format!("{message} - SecurityException (PermissionsService:... < ...)"),
    )
}

pub(super) fn routes(router: Router<Arc<Inner>>) -> Router<Arc<Inner>> {
    router
        .route("/api/users/{id}", get(get_user).put(write))
        .route("/api/notifications", get(list_notifications).post(write))
        .route("/api/notifications/{id}", put(write).delete(write))
        .route("/api/permissions", post(write).delete(write))
}

impl St {
    pub(super) fn user_id(&self) -> i64 {
        self.user["id"].as_i64().unwrap_or(0)
    }

    fn admin(&self) -> bool {
        self.user["administrator"] == true
    }

    /// The notifications linked to the session's user, each once, in the order they were made.
    pub(super) fn user_notifications(&self) -> Vec<Value> {
        let me = self.user_id();
        self.notifications
            .iter()
            .filter(|n| self.linked(me, n["id"].as_i64().unwrap_or(0)))
            .cloned()
            .collect()
    }

    fn linked(&self, user: i64, notification: i64) -> bool {
        self.links.contains(&(user, notification))
    }

    /// `PermissionsService.checkPermission(Notification.class, ...)`.
    fn check_notification(&self, id: i64) -> Result<(), Refusal> {
        if self.admin() || self.linked(self.user_id(), id) {
            Ok(())
        } else {
            Err(denied("Notification access denied"))
        }
    }

    fn check_edit(&self) -> Result<(), Refusal> {
        if !self.admin() && self.user["readonly"] == true {
            return Err(denied("Write access denied"));
        }
        Ok(())
    }

    fn fault(&self, method: &str, path: &str) -> Option<u16> {
        let index = self.writes.len();
        self.faults.iter().find_map(|f| match f {
            Fault::Nth { index: i, status } if *i == index => Some(*status),
            Fault::Path {
                method: m,
                path: p,
                status,
            } if m == method && p == path => Some(*status),
            _ => None,
        })
    }
}

impl Traccar {
    /// The session's user as the server holds it.
    pub fn user(&self) -> Value {
        self.st().user.clone()
    }

    /// Replaces the session's user (its `id` should stay that of [`Traccar::user`]).
    pub fn set_user(&self, user: Value) {
        self.st().user = user;
    }

    /// Every notification on the server, linked to the user or not.
    pub fn all_notifications(&self) -> Vec<Value> {
        self.st().notifications.clone()
    }

    /// The user–notification link rows, duplicates included.
    pub fn links(&self) -> Vec<(i64, i64)> {
        self.st().links.clone()
    }

    /// Every write asked for, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.st().writes.clone()
    }

    /// The `n`-th write from now (1: the next one) answers `status` and changes nothing.
    pub fn fail_write(&self, n: usize, status: u16) {
        let mut st = self.st();
        let index = st.writes.len() + n - 1;
        st.faults.push(Fault::Nth { index, status });
    }

    /// Every `method` write to `path` (`/api/users/7`) answers `status` and changes nothing.
    pub fn fail_path(&self, method: &str, path: &str, status: u16) {
        self.st().faults.push(Fault::Path {
            method: method.into(),
            path: path.into(),
            status,
        });
    }

    /// Writes answer normally again.
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// BikeTrax's webhook for one event body (`{"event": .., "device": ..}`): POSTed to the user's
    /// `webhookUrl` with `Authorization: <webhookPsk>` (when set) and `X-PowTxn`, unless `webhookTypes`
    /// is set and does not list the event's type. `None` when nothing is sent, else the answer's status.
    pub async fn webhook(&self, body: &Value) -> Option<u16> {
        let attrs = self.user()["attributes"].clone();
        let url = attrs["webhookUrl"].as_str()?.to_string();
        let kind = body["event"]["type"].as_str().unwrap_or("");
        if let Some(types) = attrs["webhookTypes"].as_str() {
            if !types.split(',').any(|t| t.trim() == kind) {
                return None;
            }
        }
        let mut req = reqwest::Client::new()
            .post(url)
            .header("X-PowTxn", "txn-standin-1")
            .json(body);
        if let Some(psk) = attrs["webhookPsk"].as_str() {
            req = req.header("Authorization", psk);
        }
        Some(req.send().await.ok()?.status().as_u16())
    }
}

/// `GET /api/users/{id}`: the user itself (or any user to an administrator).
async fn get_user(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let st = inner.state.lock().unwrap();
    if id == st.user_id() {
        Json(st.user.clone()).into_response()
    } else if st.admin() {
        StatusCode::NOT_FOUND.into_response()
    } else {
        denied("User access denied").into_response()
    }
}

async fn list_notifications(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(inner.state.lock().unwrap().user_notifications()).into_response()
}

/// Every write: session, content type, the faults set by the test, then the write itself; recorded.
async fn write(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let path = uri.path().to_string();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = inner.state.lock().unwrap();
    let response = match st.fault(method.as_str(), &path) {
        Some(status) => StatusCode::from_u16(status).unwrap().into_response(),
        None if !is_json(&headers) => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
        None => apply(&mut st, &method, &path, &json).unwrap_or_else(IntoResponse::into_response),
    };
    st.writes.push(WriteRecord {
        method: method.to_string(),
        path,
        body: json,
        status: response.status().as_u16(),
    });
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn apply(st: &mut St, method: &Method, path: &str, body: &Value) -> Result<Response, Refusal> {
    let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("PUT", ["users", _]) => put_user(st, body),
        ("POST", ["notifications"]) => {
            st.check_edit()?;
            let id = st
                .notifications
                .iter()
                .filter_map(|n| n["id"].as_i64())
                .max()
                .unwrap_or(0)
                + 1;
            let n = overlay(notification_defaults(id), body);
            st.notifications.push(n.clone());
            let me = st.user_id();
            st.links.push((me, id));
            Ok(Json(n).into_response())
        }
        ("PUT", ["notifications", _]) => {
            let id = body["id"].as_i64().unwrap_or(0);
            st.check_notification(id)?;
            st.check_edit()?;
            let n = overlay(notification_defaults(id), body);
            let Some(slot) = st.notifications.iter_mut().find(|x| x["id"] == id) else {
                return Ok(StatusCode::NOT_FOUND.into_response());
            };
            *slot = n.clone();
            Ok(Json(n).into_response())
        }
        ("DELETE", ["notifications", id]) => {
            let id: i64 = id.parse().map_err(|_| StatusCode::NOT_FOUND)?;
            st.check_notification(id)?;
            st.check_edit()?;
            st.notifications.retain(|n| n["id"] != id);
            st.links.retain(|l| l.1 != id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (m @ ("POST" | "DELETE"), ["permissions"]) => permission(st, m == "POST", body),
        _ => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

/// `POST/DELETE /api/permissions {"userId": .., "notificationId": ..}`.
fn permission(st: &mut St, add: bool, body: &Value) -> Result<Response, Refusal> {
    let keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let (Some(user), Some(notification), 2) = (
        body["userId"].as_i64(),
        body["notificationId"].as_i64(),
        keys.len(),
    ) else {
        // The stand-in knows user–notification links only.
        return Err(StatusCode::BAD_REQUEST.into());
    };
    st.check_edit()?;
    if !st.admin() {
        if user != st.user_id() {
            return Err(denied("User access denied"));
        }
        st.check_notification(notification)?;
    }
    if add {
        st.links.push((user, notification));
    } else {
        st.links.retain(|l| *l != (user, notification));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/users/{id}`: the body replaces the user (fields left out reset to their defaults).
fn put_user(st: &mut St, body: &Value) -> Result<Response, Refusal> {
    let id = body["id"].as_i64().unwrap_or(0);
    if id != st.user_id() && !st.admin() {
        return Err(denied("User access denied"));
    }
    if id != st.user_id() {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    let after = overlay(user_defaults(json!(id)), body);
    let before = &st.user;
    if !st.admin() && ADMIN_ONLY.iter().any(|k| before[*k] != after[*k]) {
        return Err(denied("Administrator access required"));
    }
    st.check_edit()?;
    if let Some(p) = after["password"].as_str().filter(|p| !p.is_empty()) {
        st.password = Some(p.to_string());
    }
    let mut stored = after.clone();
    // The password is write-only: never stored in the object or shown.
    if let Some(o) = stored.as_object_mut() {
        o.insert("password".into(), Value::Null);
    }
    st.user = stored.clone();
    Ok(Json(stored).into_response())
}
