//! An ntfy server stand-in on loopback: JSON publishing to the root URL (`POST|PUT /`), checked the way
//! ntfy checks it (see `docs/reference/push-and-chat-apis.md`, "ntfy"):
//!
//! - the body must be JSON (`400 40017`) with a `topic` of `[-_A-Za-z0-9]{1,64}` (`400 40009`);
//! - a message over 4,096 bytes is refused (`413 41303`), a title over 1 KB and tags over 512 bytes too;
//! - `priority` must be 1 to 5 (`400 40007`); at most 3 actions, each well-formed (`400 40018`);
//! - once credentials are set up: a wrong token or password gives `401 40101`; no credentials, or
//!   credentials without write access to the topic, give `403 40301` (ntfy authenticates first and
//!   checks the topic's access afterwards; an anonymous request is a visitor without access);
//! - errors are `application/json` `{"code","http","error","link"}`; success is `200` and the message
//!   as ntfy stores it (`id`, `time`, `event: "message"`, `topic`, …).
//!
//! Answers can be scripted ahead (a 429 with or without `Retry-After`, a 500). [`NtfyStandIn::tap`]
//! presses a message's `http` action the way the phone does: the stored method (default POST), URL,
//! headers and body, sent by the "phone", not by the server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status answered.
    pub status: u16,
    pub at: Instant,
}

impl Request {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A scripted answer: the next request gets it instead of being checked.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    /// The answer's JSON body.
    pub body: Value,
    /// `Retry-After: <secs>`.
    pub retry_after: Option<u64>,
}

impl Scripted {
    /// An ntfy error: `{"code","http","error","link"}`.
    pub fn ntfy_error(status: u16, code: u32, error: &str) -> Scripted {
        Scripted {
            status,
            body: json!({ "code": code, "http": status, "error": error, "link": "https://ntfy.sh/docs/publish/" }),
            retry_after: None,
        }
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Scripted {
        self.retry_after = Some(secs);
        self
    }
}

/// Who may publish to which topics.
#[derive(Debug, Clone)]
struct Login {
    /// The exact `Authorization` value that logs in.
    header: String,
    topics: Vec<String>,
}

struct Inner {
    port: u16,
    state: Mutex<StandInState>,
    arrived: Notify,
}

#[derive(Default)]
struct StandInState {
    requests: Vec<Request>,
    script: VecDeque<Scripted>,
    logins: Vec<Login>,
    next_id: u64,
}

#[derive(Clone)]
pub struct NtfyStandIn {
    inner: Arc<Inner>,
}

impl NtfyStandIn {
    /// A server on a free loopback port where anyone may publish (until a login is added).
    pub async fn start() -> NtfyStandIn {
        Self::start_on(0).await
    }

    /// The same on a given port (one a test chose while the server was still "down").
    pub async fn start_on(port: u16) -> NtfyStandIn {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("ntfy stand-in binds");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            port,
            state: Mutex::new(StandInState::default()),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NtfyStandIn { inner }
    }

    /// The server's root URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// From now on only logins publish: this access token may write to `topics`.
    pub fn allow_token(&self, token: &str, topics: &[&str]) {
        self.login(format!("Bearer {token}"), topics);
    }

    /// This user may write to `topics` (Basic authentication).
    pub fn allow_user(&self, user: &str, password: &str, topics: &[&str]) {
        let basic = base64(format!("{user}:{password}").as_bytes());
        self.login(format!("Basic {basic}"), topics);
    }

    fn login(&self, header: String, topics: &[&str]) {
        self.state().logins.push(Login {
            header,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        });
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state().script.extend(answers);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// The bodies of the messages published (answered 200), in order.
    pub fn published(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.ok())
            .map(Request::json)
            .collect()
    }

    /// Waits until `n` messages were published; returns them.
    pub async fn wait_published(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let published = |s: &StandInState| s.requests.iter().filter(|r| r.ok()).count() >= n;
        if !self.wait(timeout, published).await {
            panic!("ntfy: fewer than {n} published: {:#?}", self.requests());
        }
        self.published()
    }

    /// Waits until `n` requests arrived (any answer); returns all.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        if !self.wait(timeout, |s| s.requests.len() >= n).await {
            panic!("ntfy: fewer than {n} requests: {:#?}", self.requests());
        }
        self.requests()
    }

    /// Panics if more than `n` requests arrive within `window`.
    pub async fn assert_stays_at(&self, n: usize, window: Duration) {
        if self.wait(window, |s| s.requests.len() > n).await {
            panic!("ntfy: more than {n} requests: {:#?}", self.requests());
        }
    }

    async fn wait(&self, timeout: Duration, done: impl Fn(&StandInState) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            if done(&self.state()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.state());
            }
        }
    }

    /// Presses the action labelled `label` of a published message as the phone would: sends its
    /// method (default POST), URL, headers and body. Returns the status and the answer's text.
    pub async fn tap(&self, message: &Value, label: &str) -> (u16, String) {
        let action = message["actions"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["label"] == label))
            .unwrap_or_else(|| panic!("no action `{label}` in {message}"));
        assert_eq!(action["action"], "http", "only http actions make requests");
        let method = action["method"].as_str().unwrap_or("POST");
        let mut req = reqwest::Client::new().request(
            method.parse().unwrap(),
            action["url"].as_str().expect("an http action has a url"),
        );
        if let Some(headers) = action["headers"].as_object() {
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str().unwrap_or_default());
            }
        }
        if let Some(body) = action["body"].as_str() {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("the action's URL answers");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    fn state(&self) -> MutexGuard<'_, StandInState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Standard base64 with padding (what `Authorization: Basic` carries).
pub fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The topic and sequence-id rule.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn error(status: u16, code: u32, text: &str) -> Scripted {
    Scripted::ntfy_error(status, code, text)
}

/// What ntfy answers to a publish, with no script: the first check that fails, or the stored message.
fn check(
    st: &mut StandInState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Scripted {
    if !(method == Method::POST || method == Method::PUT) || path != "/" {
        return error(404, 40401, "page not found");
    }
    let Ok(m) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            40017,
            "invalid request: request body must be message JSON",
        );
    };
    let topic = m["topic"].as_str().unwrap_or_default();
    if !valid_name(topic) {
        return error(400, 40009, "invalid request: topic invalid");
    }
    let message = m["message"].as_str().unwrap_or("triggered");
    if message.len() > 4096 {
        return error(413, 41303, "JSON body too large");
    }
    if !st.logins.is_empty() {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth {
            None => return error(403, 40301, "forbidden"),
            Some(a) => match st.logins.iter().find(|l| l.header == a) {
                None => return error(401, 40101, "unauthorized"),
                Some(l) if !l.topics.iter().any(|t| t == topic) => {
                    return error(403, 40301, "forbidden")
                }
                Some(_) => {}
            },
        }
    }
    match &m["priority"] {
        Value::Null => {}
        p if p.as_i64().is_some_and(|p| (1..=5).contains(&p)) => {}
        _ => return error(400, 40007, "invalid request: priority invalid"),
    }
    // The codes of the next three errors are not documented (the status is): any 400 does.
    if m["title"].as_str().is_some_and(|t| t.len() > 1024) {
        return error(400, 40030, "invalid request: title too long");
    }
    let tags: usize = m["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t.as_str().map_or(0, |s| s.len() + 1))
                .sum()
        })
        .unwrap_or(0);
    if tags > 512 {
        return error(400, 40031, "invalid request: tags too long");
    }
    if let Some(sid) = m.get("sequence_id") {
        if !sid.as_str().is_some_and(valid_name) {
            return error(400, 40049, "invalid request: sequence ID invalid");
        }
    }
    if !actions_ok(&m["actions"]) {
        return error(400, 40018, "invalid request: actions invalid");
    }
    st.next_id += 1;
    let mut stored = json!({
        "id": format!("msg{:07}", st.next_id),
        "time": 1_700_000_000 + st.next_id,
        "expires": 1_700_043_200 + st.next_id,
        "event": "message",
        "topic": topic,
        "message": message,
    });
    for k in [
        "title",
        "priority",
        "tags",
        "click",
        "actions",
        "sequence_id",
    ] {
        if !m[k].is_null() {
            stored[k] = m[k].clone();
        }
    }
    Scripted {
        status: 200,
        body: stored,
        retry_after: None,
    }
}

/// At most 3 actions; each `view`/`http` with a label and a URL, `http` with a known method.
fn actions_ok(actions: &Value) -> bool {
    let list = match actions {
        Value::Null => return true,
        Value::Array(a) => a,
        _ => return false,
    };
    list.len() <= 3
        && list.iter().all(|a| {
            let label = a["label"].as_str().is_some_and(|l| !l.is_empty());
            let url = a["url"].as_str().is_some_and(|u| u.starts_with("http"));
            match a["action"].as_str() {
                Some("view") => label && url,
                Some("http") => {
                    label
                        && url
                        && a["method"]
                            .as_str()
                            .is_none_or(|m| ["GET", "POST", "PUT", "DELETE"].contains(&m))
                        && (a["headers"].is_null() || a["headers"].is_object())
                }
                Some("broadcast" | "copy") => label,
                _ => false,
            }
        })
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let answer = match st.script.pop_front() {
            Some(s) => s,
            None => check(&mut st, &method, uri.path(), &headers, &body),
        };
        st.requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: answer.status,
            at: Instant::now(),
        });
        answer
    };
    inner.arrived.notify_waiters();
    let mut resp = (
        StatusCode::from_u16(answer.status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", answer.body),
    )
        .into_response();
    if let Some(secs) = answer.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
