//! A stand-in Traccar server on loopback (axum, real TCP): the session endpoints (token and form login,
//! `JSESSIONID` cookie), `/api/socket` (cookie required, a foreign `Origin` refused, `{}` keepalives),
//! the REST reads the relay uses, and `/api/reports/events` (honours `deviceId`, `from`, `to` and wants
//! `Accept: application/json`).
//!
//! Tests drive it: push frames, record events that happen while the relay is away, drop sockets,
//! expire sessions, make it hang or go silent; and read what it saw (logins, socket opens, report
//! queries).

use std::collections::HashSet;
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
    logins: Vec<Login>,
    socket_opens: usize,
    socket_refusals: Vec<u16>,
    report_queries: Vec<String>,
    connected: usize,
    hang: bool,
    silent: bool,
}

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
        let (frames, _) = broadcast::channel(256);
        let st = St {
            token: token.map(String::from),
            email: login.map(|l| l.0.to_string()),
            password: login.map(|l| l.1.to_string()),
            devices: example_devices(),
            groups: vec![
                json!({"id": 3, "name": "Familie Hofer", "groupId": 0, "attributes": {}}),
                json!({"id": 5, "name": "Radkultur Wien", "groupId": 0, "attributes": {}}),
            ],
            geofences: example_geofences(),
            ..St::default()
        };
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
            .with_state(inner.clone());
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

    /// An event happens: kept for reports and pushed to every open socket.
    pub fn push_event(&self, event: Value) {
        self.record_event(event.clone());
        self.push_text(json!({ "events": [event] }).to_string());
    }

    /// An event happens while nobody listens: kept for reports only.
    pub fn record_event(&self, event: Value) {
        self.st().history.push(event);
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

    /// Waits while hanging is on (never answers while it stays on).
    async fn maybe_hang(inner: &Inner) {
        while inner.state.lock().unwrap().hang {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
        Json(json!({"id": 1, "name": "relay", "email": st.email})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn session_token(State(inner): State<Arc<Inner>>, Query(q): Query<TokenQuery>) -> Response {
    Traccar::maybe_hang(&inner).await;
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

#[derive(serde::Deserialize)]
struct ReportQuery {
    #[serde(rename = "deviceId")]
    device_id: i64,
    from: String,
    to: String,
}

async fn reports(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<ReportQuery>,
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
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let (Some(from), Some(to)) = (t(&q.from), t(&q.to)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut st = inner.state.lock().unwrap();
    st.report_queries
        .push(uri.query().unwrap_or_default().to_string());
    let events: Vec<Value> = st
        .history
        .iter()
        .filter(|e| e["deviceId"].as_i64() == Some(q.device_id))
        .filter(|e| {
            e["eventTime"]
                .as_str()
                .and_then(t)
                .is_some_and(|et| et >= from && et <= to)
        })
        .cloned()
        .collect();
    Json(events).into_response()
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
                Err(broadcast::error::RecvError::Lagged(_)) => {}
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
