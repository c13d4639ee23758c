//! A Matrix homeserver stand-in on loopback: the client-server API's
//! `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`, checked as a homeserver checks it.
//!
//! - `Authorization: Bearer <token>`: missing gives 401 `M_MISSING_TOKEN`, wrong 401 `M_UNKNOWN_TOKEN`.
//! - A repeated transaction (same token, same path, same txnId) replays the first answer, status and
//!   body byte for byte, and stores no second event; failed requests are not remembered (as Synapse).
//! - The room must be one the account joined (else 403 `M_FORBIDDEN`); the body must be a JSON object
//!   (`M_NOT_JSON`) with string `msgtype` and `body`, `format` and `formatted_body` both present or both
//!   absent, `format` only `org.matrix.custom.html`, a well-formed `m.mentions` (`M_BAD_JSON`); events
//!   over 65,536 bytes give 413 `M_TOO_LARGE`; other methods 405 `M_UNRECOGNIZED`.
//! - Scripted answers for the next requests: 429 `M_LIMIT_EXCEEDED` (with `Retry-After` and/or
//!   `retry_after_ms`), 401 `M_UNKNOWN_TOKEN` (`soft_logout`), 403 `M_FORBIDDEN`, a 5xx, or an answer
//!   sent late after the event was stored (the client times out, though the server accepted it).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Largest event a homeserver takes.
pub const MAX_EVENT_BYTES: usize = 65_536;

/// A scripted answer, used by the next request that passes the token check (and is not a replay).
#[derive(Debug, Clone)]
pub enum Script {
    /// 429 `M_LIMIT_EXCEEDED` with these optional `Retry-After` (seconds) and `retry_after_ms`.
    LimitExceeded {
        retry_after: Option<u64>,
        retry_after_ms: Option<u64>,
    },
    /// 401 `M_UNKNOWN_TOKEN`.
    UnknownToken { soft_logout: bool },
    /// 403 `M_FORBIDDEN`.
    Forbidden,
    /// A server error with `M_UNKNOWN`.
    ServerError(u16),
    /// Processed normally (the event is stored), but answered only after this long.
    AnswerLate(Duration),
}

/// One request as the homeserver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path as sent (percent-encoded).
    pub raw_path: String,
    /// The room and transaction id, decoded.
    pub room: String,
    pub txn: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct Event {
    pub room: String,
    pub txn: String,
    pub event_id: String,
    pub content: Value,
}

#[derive(Clone)]
pub struct Matrix {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    token: String,
    rooms: Vec<String>,
    state: Mutex<St>,
    arrived: Notify,
}

#[derive(Default)]
struct St {
    requests: Vec<Request>,
    events: Vec<Event>,
    /// (token, path, txn) → the first answer (status, body).
    txns: HashMap<(String, String, String), (u16, String)>,
    script: VecDeque<Script>,
}

impl Matrix {
    /// A homeserver where the account with `token` has joined `rooms`.
    pub async fn start(token: &str, rooms: &[&str]) -> Matrix {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("matrix stand-in binds");
        let inner = Arc::new(Inner {
            port: listener.local_addr().unwrap().port(),
            token: token.to_string(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            state: Mutex::new(St::default()),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Matrix { inner }
    }

    /// The homeserver's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.inner.state.lock().unwrap()
    }

    /// Adds an answer to the script.
    pub fn push(&self, s: Script) {
        self.st().script.push_back(s);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.st().requests.clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.st().events.clone()
    }

    /// Waits until `done(requests)` holds; panics after `timeout` with what arrived.
    pub async fn wait(&self, timeout: Duration, what: &str, done: impl Fn(&[Request]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            // Cloned first: `done` may look at the state itself.
            let requests = self.st().requests.clone();
            if done(&requests) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {} -> {}", r.method, r.raw_path, r.status))
                    .collect();
                panic!(
                    "matrix: timed out waiting for {what}; requests:\n{}",
                    got.join("\n")
                );
            }
        }
    }
}

/// `%XX` sequences decoded.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: u16, errcode: &str, msg: &str) -> (u16, Value) {
    (status, json!({ "errcode": errcode, "error": msg }))
}

/// What the body of a `m.room.message` event fails, if anything.
fn check_content(body: &[u8]) -> Result<Value, (u16, Value)> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(error(413, "M_TOO_LARGE", "event too large"));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| error(400, "M_NOT_JSON", "Content not JSON."))?;
    if !v.is_object() {
        return Err(error(400, "M_BAD_JSON", "content must be an object"));
    }
    let bad = |m: &str| Err(error(400, "M_BAD_JSON", m));
    if !v["msgtype"].is_string() || !v["body"].is_string() {
        return bad("'msgtype' and 'body' must be strings");
    }
    match (v.get("format"), v.get("formatted_body")) {
        (None, None) => {}
        (Some(f), Some(Value::String(_))) if f == "org.matrix.custom.html" => {}
        (Some(_), Some(Value::String(_))) => return bad("unknown format"),
        _ => return bad("'format' and 'formatted_body' go together"),
    }
    if let Some(m) = v.get("m.mentions") {
        let ok = m.is_object()
            && m.get("room").is_none_or(Value::is_boolean)
            && m.get("user_ids").is_none_or(|u| {
                u.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|x| x.as_str().is_some_and(|s| s.starts_with('@')))
                })
            });
        if !ok {
            return bad("malformed m.mentions");
        }
    }
    Ok(v)
}

fn scripted(s: Script) -> (u16, Value, Option<String>) {
    match s {
        Script::LimitExceeded {
            retry_after,
            retry_after_ms,
        } => {
            let mut body = json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests" });
            if let Some(ms) = retry_after_ms {
                body["retry_after_ms"] = ms.into();
            }
            (429, body, retry_after.map(|s| s.to_string()))
        }
        Script::UnknownToken { soft_logout } => (
            401,
            json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed.", "soft_logout": soft_logout }),
            None,
        ),
        Script::Forbidden => {
            let (s, b) = error(
                403,
                "M_FORBIDDEN",
                "You don't have permission to post that to the room.",
            );
            (s, b, None)
        }
        Script::ServerError(code) => {
            let (s, b) = error(code, "M_UNKNOWN", "Internal server error");
            (s, b, None)
        }
        Script::AnswerLate(_) => unreachable!("handled by the caller"),
    }
}

fn respond(status: u16, body: &str, retry_after: Option<String>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(ra) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, ra.parse().unwrap());
    }
    r
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_string();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let segs: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let (room, txn) = match segs.as_slice() {
        ["_matrix", "client", "v3", "rooms", room, "send", _, txn] => (decode(room), decode(txn)),
        _ => (String::new(), String::new()),
    };
    let (status, text, retry_after, late) =
        answer(&inner, &method, &segs, &room, &txn, auth.as_deref(), &body);
    {
        let mut st = inner.state.lock().unwrap();
        st.requests.push(Request {
            method: method.to_string(),
            raw_path: raw_path.clone(),
            room,
            txn,
            authorization: auth,
            body: body.to_vec(),
            status,
            at: Instant::now(),
        });
    }
    inner.arrived.notify_waiters();
    if let Some(d) = late {
        tokio::time::sleep(d).await;
    }
    respond(status, &text, retry_after)
}

/// The answer to one request: status, body, `Retry-After`, and how late it is sent.
#[allow(clippy::too_many_arguments)]
fn answer(
    inner: &Inner,
    method: &Method,
    segs: &[&str],
    room: &str,
    txn: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, String, Option<String>, Option<Duration>) {
    let plain = |(s, v): (u16, Value)| (s, v.to_string(), None, None);
    if !matches!(segs, ["_matrix", "client", "v3", "rooms", _, "send", _, _]) {
        return plain(error(404, "M_UNRECOGNIZED", "Unrecognized request"));
    }
    if method != Method::PUT {
        return plain(error(405, "M_UNRECOGNIZED", "Unrecognized request"));
    }
    let token = match auth.and_then(|a| a.strip_prefix("Bearer ")) {
        None => return plain(error(401, "M_MISSING_TOKEN", "Missing access token")),
        Some(t) if t != inner.token => {
            return plain(error(
                401,
                "M_UNKNOWN_TOKEN",
                "Invalid access token passed.",
            ))
        }
        Some(t) => t.to_string(),
    };
    let key = (token, format!("{}/{}", segs[4], segs[6]), txn.to_string());
    let mut st = inner.state.lock().unwrap();
    if let Some((s, b)) = st.txns.get(&key) {
        return (*s, b.clone(), None, None);
    }
    let late = match st.script.pop_front() {
        None => None,
        Some(Script::AnswerLate(d)) => Some(d),
        Some(other) => {
            let (s, v, ra) = scripted(other);
            return (s, v.to_string(), ra, None);
        }
    };
    if segs[6] != "m.room.message" {
        return plain(error(400, "M_UNRECOGNIZED", "only m.room.message here"));
    }
    if !inner.rooms.iter().any(|r| r == room) {
        return plain(error(403, "M_FORBIDDEN", "User not in room"));
    }
    let content = match check_content(body) {
        Ok(c) => c,
        Err(e) => return plain(e),
    };
    let event_id = format!("$ev{}", st.events.len() + 1);
    st.events.push(Event {
        room: room.to_string(),
        txn: txn.to_string(),
        event_id: event_id.clone(),
        content,
    });
    let text = json!({ "event_id": event_id }).to_string();
    st.txns.insert(key, (200, text.clone()));
    (200, text, None, late)
}
