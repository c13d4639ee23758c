//! A stand-in Traccar server on loopback (axum, real TCP): the session endpoints (token and form login,
//! `JSESSIONID` cookie), `/api/socket` (cookie required, a foreign `Origin` refused, `{}` keepalives,
//! the latest positions on connect), the REST reads the relay uses, `/api/positions?id=..` (several ids;
//! an unknown id fails the whole request with 500, as Traccar's `PositionResource` does when it reads a
//! missing row), and `/api/reports/events` (several `deviceId`, `groupId` and
//! `type`, `from`, `to`; wants `Accept: application/json`; carries no positions; refuses a period over
//! the limit set with [`Traccar::set_report_period_limit`] as Traccar's `report.periodLimit` does).
//! The account side — the session's user, `/api/users/{id}`, `/api/notifications`, `/api/permissions`
//! with Traccar's write semantics, and BikeTrax's webhook — is in [`rest`].
//!
//! It behaves like Traccar 6 where the relay could be fooled by an easier order:
//! - [`Traccar::push`] sends the `events` frame first and the `positions` frame of the event's position
//!   a few milliseconds later (Traccar's `ProcessingHandler` runs the event handlers, whose `web`
//!   notificator writes the events frame, before `PostProcessHandler` pushes the position).
//! - An event reaches the socket only if a notification of the user (`always`, with the `web`
//!   notificator) covers its type (and, for `alarm`, lists the alarm in its `alarms` attribute); the
//!   default notifications cover the types and alarms the tests use. Every event is kept for reports
//!   regardless.
//!
//! Tests drive it: push events and positions, record events that happen while the relay is away, drop
//! sockets, expire sessions, make it hang or go silent, hold back positions frames, fail `/api/positions`,
//! serve a fleet of any size (devices, geofences); and read what it saw (logins, socket opens, report and
//! position queries, frames a slow reader made it drop).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

mod rest;
pub use rest::WriteRecord;

/// What a socket connection is told to do.
#[derive(Debug, Clone)]
enum Cmd {
    Text(String),
    Drop,
}

/// One login attempt.
#[derive(Debug, Clone)]
pub struct Login {
    pub by_token: bool,
    pub ok: bool,
    pub at: Instant,
}

#[derive(Default)]
struct St {
    token: Option<String>,
    email: Option<String>,
    password: Option<String>,
    sessions: HashSet<String>,
    next_session: u64,
    devices: Vec<Value>,
    groups: Vec<Value>,
    geofences: Vec<Value>,
    /// Every event the server knows (for reports).
    history: Vec<Value>,
    /// Every position the server knows, by id.
    positions: BTreeMap<i64, Value>,
    /// Every notification on the server; those linked to the user (`links`) are what
    /// `GET /api/notifications` lists and decide what the socket carries.
    notifications: Vec<Value>,
    /// User–notification link rows (`tc_user_notification`), duplicates possible as in Traccar.
    links: Vec<(i64, i64)>,
    /// The session's user (`GET /api/session`, `/api/users/{id}`).
    user: Value,
    /// Every write asked for, and the faults the test set.
    writes: Vec<WriteRecord>,
    faults: Vec<rest::Fault>,
    /// Positions frames are not sent (the relay must read the positions over REST).
    hold_positions: bool,
    /// `/api/positions` answers this status instead of positions.
    positions_status: Option<u16>,
    position_queries: Vec<String>,
    logins: Vec<Login>,
    socket_opens: usize,
    socket_refusals: Vec<u16>,
    report_queries: Vec<String>,
    /// `report.periodLimit`: `/api/reports/events` refuses a longer `to - from`.
    report_period_limit: Option<Duration>,
    connected: usize,
    /// Frames a socket never sent: its queue ran more than [`FRAME_QUEUE`] frames ahead of the reader.
    frames_dropped: u64,
    hang: bool,
    silent: bool,
}

/// Frames queued for each open socket; a socket whose reader falls further behind loses the oldest.
const FRAME_QUEUE: usize = 256;

struct Inner {
    addr: SocketAddr,
    state: Mutex<St>,
    frames: broadcast::Sender<Cmd>,
    keepalive: Duration,
}

/// The stand-in server.
#[derive(Clone)]
pub struct Traccar {
    inner: Arc<Inner>,
}

impl Traccar {
    /// Starts a server accepting `token` and/or `email` + `password`, sending `{}` every `keepalive`,
    /// with the devices, groups and geofences of the example payloads.
    pub async fn start(
        token: Option<&str>,
        login: Option<(&str, &str)>,
        keepalive: Duration,
    ) -> Traccar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frames, _) = broadcast::channel(FRAME_QUEUE);
        let mut st = St {
            token: token.map(String::from),
            email: login.map(|l| l.0.to_string()),
            password: login.map(|l| l.1.to_string()),
            devices: example_devices(),
            groups: vec![
                json!({"id": 3, "name": "Familie Hofer", "groupId": 0, "attributes": {}}),
                json!({"id": 5, "name": "Radkultur Wien", "groupId": 0, "attributes": {}}),
            ],
            geofences: example_geofences(),
            user: rest::default_user(login.map(|l| l.0)),
            ..St::default()
        };
        let me = st.user_id();
        st.notifications = default_notifications();
        st.links = st
            .notifications
            .iter()
            .map(|n| (me, n["id"].as_i64().unwrap()))
            .collect();
        let inner = Arc::new(Inner {
            addr,
            state: Mutex::new(st),
            frames,
            keepalive,
        });
        let app = Router::new()
            .route("/api/session", get(session_token).post(session_form))
            .route("/api/socket", get(socket))
            .route(
                "/api/devices",
                get(|s, h| list(s, h, |st| st.devices.clone())),
            )
            .route(
                "/api/groups",
                get(|s, h| list(s, h, |st| st.groups.clone())),
            )
            .route(
                "/api/geofences",
                get(|s, h| list(s, h, |st| st.geofences.clone())),
            )
            .route("/api/reports/events", get(reports))
            .route("/api/positions", get(positions));
        let app = rest::routes(app).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Traccar { inner }
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.inner.state.lock().unwrap()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// An event without a position of its own happens (or one whose position the test already sent):
    /// kept for reports and pushed to every open socket if a `web` notification covers it.
    pub fn push_event(&self, event: Value) {
        self.record_event(event.clone());
        if self.web_covers(&event) {
            self.push_text(json!({ "events": [event] }).to_string());
        }
    }

    /// A position arrives with an event raised for it, in Traccar's order: the `events` frame (if a
    /// `web` notification covers the event) at once, the `positions` frame a few milliseconds later
    /// (unless positions are held back). The event's `positionId` is set to the position's id.
    pub fn push(&self, mut event: Value, position: Value) {
        event["positionId"] = position["id"].clone();
        self.add_position(position.clone());
        self.push_event(event);
        if !self.st().hold_positions {
            let frames = self.inner.frames.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let text = json!({ "positions": [position] }).to_string();
                let _ = frames.send(Cmd::Text(text));
            });
        }
    }

    /// A position the server knows (for `/api/positions` and the latest positions on connect),
    /// without pushing it.
    pub fn add_position(&self, position: Value) {
        let id = position["id"].as_i64().expect("a position has an id");
        self.st().positions.insert(id, position);
    }

    /// Replaces every notification of the server with these, each linked to the user once.
    pub fn set_notifications(&self, notifications: Vec<Value>) {
        let mut st = self.st();
        let me = st.user_id();
        st.links = notifications
            .iter()
            .filter_map(|n| n["id"].as_i64())
            .map(|id| (me, id))
            .collect();
        st.notifications = notifications;
    }

    /// The notifications `GET /api/notifications` lists: those linked to the user.
    pub fn notifications(&self) -> Vec<Value> {
        self.st().user_notifications()
    }

    /// Positions frames are not sent while on (as if the socket lost them).
    pub fn set_hold_positions(&self, on: bool) {
        self.st().hold_positions = on;
    }

    /// `/api/positions` answers `status` (e.g. 503) while set.
    pub fn set_positions_status(&self, status: Option<u16>) {
        self.st().positions_status = status;
    }

    /// The query strings of every `/api/positions` request.
    pub fn position_queries(&self) -> Vec<String> {
        self.st().position_queries.clone()
    }

    /// Whether Traccar would push `event` over the socket: a notification of the user with the `web`
    /// notificator of its type, and for an alarm one that lists the alarm (Traccar's
    /// `NotificationManager`). The stand-in links no devices to notifications, so only `always` ones
    /// (for every device) count.
    fn web_covers(&self, event: &Value) -> bool {
        let st = self.st();
        let kind = event["type"].as_str().unwrap_or("");
        let alarm = event["attributes"]["alarm"].as_str().unwrap_or("");
        st.user_notifications().iter().any(|n| {
            let web = n["notificators"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .any(|x| x.trim() == "web");
            let alarms_ok = kind != "alarm"
                || n["attributes"]["alarms"]
                    .as_str()
                    .is_some_and(|a| a.split(',').any(|x| x.trim() == alarm));
            web && n["always"] == true && n["type"] == kind && alarms_ok
        })
    }

    /// An event happens while nobody listens: kept for reports only.
    pub fn record_event(&self, event: Value) {
        self.st().history.push(event);
    }

    /// Replaces the devices `GET /api/devices` lists (a fleet of any size).
    pub fn set_devices(&self, devices: Vec<Value>) {
        self.st().devices = devices;
    }

    /// Replaces the geofences `GET /api/geofences` lists.
    pub fn set_geofences(&self, geofences: Vec<Value>) {
        self.st().geofences = geofences;
    }

    /// Frames that open sockets dropped unsent because their reader fell too far behind.
    pub fn frames_dropped(&self) -> u64 {
        self.st().frames_dropped
    }

    /// Sends a text frame as is (positions, devices, garbage).
    pub fn push_text(&self, text: String) {
        let _ = self.inner.frames.send(Cmd::Text(text));
    }

    /// Closes every open socket.
    pub fn drop_sockets(&self) {
        let _ = self.inner.frames.send(Cmd::Drop);
    }

    /// Forgets every session: the next handshake or REST call gets 401.
    pub fn expire_sessions(&self) {
        self.st().sessions.clear();
    }

    /// Every endpoint accepts the connection and never answers.
    pub fn set_hang(&self, on: bool) {
        self.st().hang = on;
    }

    /// Open sockets send nothing (no keepalive, no pong).
    pub fn set_silent(&self, on: bool) {
        self.st().silent = on;
    }

    pub fn logins(&self) -> Vec<Login> {
        self.st().logins.clone()
    }

    pub fn socket_opens(&self) -> usize {
        self.st().socket_opens
    }

    pub fn connected(&self) -> usize {
        self.st().connected
    }

    pub fn socket_refusals(&self) -> Vec<u16> {
        self.st().socket_refusals.clone()
    }

    pub fn report_queries(&self) -> Vec<String> {
        self.st().report_queries.clone()
    }

    /// Traccar's `report.periodLimit`: while set, `/api/reports/events` answers a `to - from` longer
    /// than `limit` with 400 and [`PERIOD_LIMIT_BODY`], as the real server does.
    pub fn set_report_period_limit(&self, limit: Option<Duration>) {
        self.st().report_period_limit = limit;
    }

    /// Waits while hanging is on (never answers while it stays on).
    async fn maybe_hang(inner: &Inner) {
        while inner.state.lock().unwrap().hang {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `web` notification of `kind` (with `alarms` for an alarm notification), as Traccar stores it.
pub fn web_notification(id: i64, kind: &str, alarms: Option<&str>) -> Value {
    let mut attributes = json!({});
    if let Some(a) = alarms {
        attributes["alarms"] = json!(a);
    }
    json!({"id": id, "type": kind, "always": true, "notificators": "web", "calendarId": 0,
           "commandId": 0, "attributes": attributes})
}

/// Web notifications for the types and alarms the tests push.
fn default_notifications() -> Vec<Value> {
    let mut n = vec![web_notification(
        1,
        "alarm",
        Some("sos,movement,vibration,tow,overspeed,powerCut"),
    )];
    for (i, t) in [
        "deviceOnline",
        "deviceOffline",
        "geofenceEnter",
        "geofenceExit",
        "deviceOverspeed",
        "ignitionOn",
        "deviceMoving",
    ]
    .iter()
    .enumerate()
    {
        n.push(web_notification(i as i64 + 2, t, None));
    }
    n
}

/// The example devices 12 and 27 of the payloads.
fn example_devices() -> Vec<Value> {
    let path = format!(
        "{}/tests/payloads/websocket/devices.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let frame: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut devices = frame["devices"].as_array().unwrap().clone();
    devices.push(
        json!({"id": 27, "name": "Lastenrad Wien", "uniqueId": "4710198765", "groupId": 5,
        "status": "online", "attributes": {}}),
    );
    devices
}

/// Geofences 9, 17 and 41 of the payloads.
fn example_geofences() -> Vec<Value> {
    [
        "geofenceExit.json",
        "geofenceEnter.json",
        "deviceOverspeed.json",
    ]
    .iter()
    .map(|f| {
        let p = format!("{}/tests/payloads/{f}", env!("CARGO_MANIFEST_DIR"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["geofence"].clone()
    })
    .collect()
}

fn new_session(inner: &Inner, by_token: bool, ok: bool) -> Response {
    let mut st = inner.state.lock().unwrap();
    st.logins.push(Login {
        by_token,
        ok,
        at: Instant::now(),
    });
    if !ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    st.next_session += 1;
    let id = format!("node0s{}x{}", st.next_session, inner.addr.port());
    st.sessions.insert(id.clone());
    (
        [(
            header::SET_COOKIE,
            format!("JSESSIONID={id}; Path=/; HttpOnly"),
        )],
        Json(st.user.clone()),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn session_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if q.token.is_none() {
        // `SessionResource.get` without a token: the session's user, else 404.
        if has_session(&inner, &headers) {
            return Json(inner.state.lock().unwrap().user.clone()).into_response();
        }
        return StatusCode::NOT_FOUND.into_response();
    }
    let ok = {
        let st = inner.state.lock().unwrap();
        q.token.is_some() && q.token == st.token
    };
    new_session(&inner, true, ok)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

async fn session_form(State(inner): State<Arc<Inner>>, Form(f): Form<LoginForm>) -> Response {
    Traccar::maybe_hang(&inner).await;
    let ok = {
        let st = inner.state.lock().unwrap();
        st.email.as_deref() == Some(f.email.as_str())
            && st.password.as_deref() == Some(f.password.as_str())
    };
    new_session(&inner, false, ok)
}

/// Whether the request carries a live session cookie.
fn has_session(inner: &Inner, headers: &HeaderMap) -> bool {
    let st = inner.state.lock().unwrap();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("JSESSIONID="))
        .any(|id| st.sessions.contains(id))
}

async fn list(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    f: fn(&St) -> Vec<Value>,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(f(&inner.state.lock().unwrap())).into_response()
}

/// The parameters of `GET /api/reports/events`: `deviceId`, `groupId` and `type` may each repeat
/// (Traccar's `ReportResource.getEvents` takes them as `List`s).
struct ReportQuery {
    devices: Vec<i64>,
    groups: Vec<i64>,
    types: Vec<String>,
    from: Option<String>,
    to: Option<String>,
}

impl ReportQuery {
    fn parse(query: &str) -> ReportQuery {
        let mut q = ReportQuery {
            devices: Vec::new(),
            groups: Vec::new(),
            types: Vec::new(),
            from: None,
            to: None,
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "deviceId" => q.devices.extend(v.parse::<i64>().ok()),
                "groupId" => q.groups.extend(v.parse::<i64>().ok()),
                "type" => q.types.push(v.into_owned()),
                "from" => q.from = Some(v.into_owned()),
                "to" => q.to = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// What Traccar answers when `to - from` exceeds `report.periodLimit`: `ReportUtils.checkPeriodLimit`
/// throws `IllegalArgumentException("Time period exceeds the limit")` and `ResourceErrorHandler` maps
/// any exception that is not a `WebApplicationException` to 400 with `Log.exceptionStack(e)` as the body
/// (message, ` - `, class name, then the Traccar frames; the line numbers here are illustrative).
pub const PERIOD_LIMIT_BODY: &str = "Time period exceeds the limit - IllegalArgumentException \
     (ReportUtils:96 < EventsReportProvider:70 < ReportResource:137 < ...)";

/// `GET /api/reports/events`, as Traccar's `EventsReportProvider.getObjects`: the period limit first,
/// then for each device asked for (by id, then those of the groups asked for) its events between `from`
/// and `to` (inclusive) in `eventTime` order, of the types asked for (none or `allEvents`: every type).
async fn reports(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("application/json") {
        // Traccar answers a spreadsheet otherwise.
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let query = uri.query().unwrap_or_default().to_string();
    let q = ReportQuery::parse(&query);
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let (Some(from), Some(to)) = (q.from.as_deref().and_then(t), q.to.as_deref().and_then(t))
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut st = inner.state.lock().unwrap();
    st.report_queries.push(query);
    if let Some(limit) = st.report_period_limit {
        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
        if limit_ms > 0 && (to - from).num_milliseconds() > limit_ms {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain")],
                PERIOD_LIMIT_BODY,
            )
                .into_response();
        }
    }
    let mut devices = q.devices.clone();
    for d in &st.devices {
        let (Some(id), Some(group)) = (d["id"].as_i64(), d["groupId"].as_i64()) else {
            continue;
        };
        if q.groups.contains(&group) && !devices.contains(&id) {
            devices.push(id);
        }
    }
    let all_types = q.types.is_empty() || q.types.iter().any(|t| t == "allEvents");
    let time = |e: &Value| e["eventTime"].as_str().and_then(t);
    let mut events = Vec::new();
    for device in devices {
        let mut of_device: Vec<Value> = st
            .history
            .iter()
            .filter(|e| e["deviceId"].as_i64() == Some(device))
            .filter(|e| all_types || q.types.iter().any(|t| e["type"] == t.as_str()))
            .filter(|e| time(e).is_some_and(|et| et >= from && et <= to))
            .cloned()
            .collect();
        of_device.sort_by_key(|e| time(e));
        events.extend(of_device);
    }
    Json(events).into_response()
}

/// `GET /api/positions?id=..`: each id's position; an unknown id fails the request (Traccar reads each
/// row and dereferences it before the permission check, so a missing one ends in a server error).
async fn positions(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    if !has_session(&inner, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let query = uri.query().unwrap_or_default().to_string();
    // `id` repeats: axum's `Query` (serde_urlencoded) keeps only sequences it is told about.
    let ids: Vec<i64> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let mut st = inner.state.lock().unwrap();
    st.position_queries.push(query);
    if let Some(code) = st.positions_status {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    let mut out = Vec::new();
    for id in ids {
        match st.positions.get(&id) {
            Some(p) => out.push(p.clone()),
            None => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    Json(out).into_response()
}

async fn socket(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    Traccar::maybe_hang(&inner).await;
    let own_origin = format!("http://{}", inner.addr);
    let refuse = |code: StatusCode| {
        inner
            .state
            .lock()
            .unwrap()
            .socket_refusals
            .push(code.as_u16());
        code.into_response()
    };
    if headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.to_str().ok() != Some(own_origin.as_str()))
    {
        return refuse(StatusCode::FORBIDDEN);
    }
    if !has_session(&inner, &headers) {
        return refuse(StatusCode::UNAUTHORIZED);
    }
    let rx = inner.frames.subscribe();
    ws.on_upgrade(move |socket| serve_socket(inner, socket, rx))
}

async fn serve_socket(inner: Arc<Inner>, mut socket: WebSocket, mut rx: broadcast::Receiver<Cmd>) {
    {
        let mut st = inner.state.lock().unwrap();
        st.socket_opens += 1;
        st.connected += 1;
    }
    // On connect Traccar sends every device's latest position.
    let latest: Vec<Value> = {
        let st = inner.state.lock().unwrap();
        let mut by_device: BTreeMap<i64, Value> = BTreeMap::new();
        for p in st.positions.values() {
            by_device.insert(p["deviceId"].as_i64().unwrap_or(0), p.clone());
        }
        by_device.into_values().collect()
    };
    if !latest.is_empty() {
        let text = json!({ "positions": latest }).to_string();
        if socket.send(Message::Text(text.into())).await.is_err() {
            inner.state.lock().unwrap().connected -= 1;
            return;
        }
    }
    let mut keepalive = tokio::time::interval(inner.keepalive);
    keepalive.tick().await;
    loop {
        let silent = inner.state.lock().unwrap().silent;
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Ok(Cmd::Text(t)) if !silent => {
                    if socket.send(Message::Text(t.into())).await.is_err() { break; }
                }
                Ok(Cmd::Text(_)) => {}
                Ok(Cmd::Drop) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    inner.state.lock().unwrap().frames_dropped += n;
                }
            },
            _ = keepalive.tick() => {
                if !silent && socket.send(Message::Text("{}".into())).await.is_err() { break; }
            }
            // Reading answers pings; a silent server does not read.
            msg = socket.recv(), if !silent => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    inner.state.lock().unwrap().connected -= 1;
}
