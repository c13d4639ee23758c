//! A Pushover API stand-in on loopback, checking what the real service checks
//! (`docs/reference/push-and-chat-apis.md`, "What the stand-ins must do" #2).
//!
//! `POST /1/messages.json` takes a JSON or form body and validates it as Pushover does: the app
//! token and the user key (30 letters and digits, and known), a non-empty message of at most 1024
//! characters, title ≤ 250, url ≤ 512, url_title ≤ 100, not both `html` and `monospace`, a priority
//! from -2 to 2, and for an emergency (2) `retry` ≥ 30 and `expire` ≤ 10800. Errors are 400
//! `{"<param>":"invalid","errors":[…],"status":0,"request":…}`. Every answer carries the
//! `X-Limit-App-*` headers; once the monthly quota is used up it answers 429. Scripted answers (a 500)
//! come first. An emergency gets a receipt: `GET /1/receipts/{r}.json?token=`,
//! `POST /1/receipts/{r}/cancel.json` and `POST /1/receipts/cancel_by_tag/{tag}.json` work on it, and
//! [`PushoverStandIn::acknowledge`] plays a person pressing Acknowledge in the app: the receipt says
//! so, and a registered `callback` gets Pushover's form, again after a (scaled-down) minute while it
//! does not answer 2xx.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How long the stand-in waits before calling a callback again (Pushover: a minute).
pub const CALLBACK_RETRY: Duration = Duration::from_millis(200);

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The body's fields (JSON values, or strings from a form).
    pub fields: Map<String, Value>,
    /// The raw body.
    pub body: String,
    /// What the stand-in answered.
    pub status: u16,
}

impl Recorded {
    /// A field as text (numbers too).
    pub fn field(&self, name: &str) -> Option<String> {
        text(&self.fields, name)
    }
}

/// An emergency's receipt.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    /// The message's fields as sent.
    pub fields: Map<String, Value>,
    pub callback: Option<String>,
    pub tags: Vec<String>,
    pub acknowledged_at: u64,
    pub acknowledged_by: String,
    pub acknowledged_by_device: String,
    pub expires_at: u64,
    /// Set by [`PushoverStandIn::expire`].
    pub expired: bool,
    pub cancelled: bool,
    pub called_back_at: u64,
}

struct St {
    records: Vec<Recorded>,
    receipts: BTreeMap<String, Receipt>,
    /// (status, body) answered to the next messages, before any check.
    script: VecDeque<(u16, String)>,
    limit: u64,
    remaining: u64,
    reset: u64,
}

struct Inner {
    token: String,
    users: Vec<String>,
    state: Mutex<St>,
    arrived: Notify,
}

/// The stand-in; stops when dropped.
pub struct PushoverStandIn {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushoverStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..30)
        .map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char)
        .collect()
}

fn request_id() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn is_key(s: &str) -> bool {
    s.len() == 30 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// Pushover's error answer about `param`.
fn invalid(param: &str, error: &str) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({ param: "invalid", "errors": [error], "status": 0, "request": request_id() }),
    )
}

/// The body's fields: JSON, or a form.
fn fields(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, (StatusCode, Value)> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(invalid("body", "body is not a JSON object")),
        }
    } else if body.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| invalid("body", "body is not a form"))?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    } else {
        // (Multipart, for attachments, is not played here: the relay sends none.)
        Err(invalid("body", "unsupported content type"))
    }
}

impl PushoverStandIn {
    /// A stand-in for the application `token`, whose users are `users`.
    pub async fn start(token: &str, users: &[&str]) -> PushoverStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            token: token.to_string(),
            users: users.iter().map(|u| u.to_string()).collect(),
            state: Mutex::new(St {
                records: Vec::new(),
                receipts: BTreeMap::new(),
                script: VecDeque::new(),
                limit: 10_000,
                remaining: 10_000,
                reset: now_s() + 86_400,
            }),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        PushoverStandIn { inner, addr, task }
    }

    /// `http://127.0.0.1:PORT` (the channel's `api_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.inner.state.lock().unwrap()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.st().records.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/1/messages.json" && r.status == 200)
            .collect()
    }

    /// Waits until `n` messages were accepted; returns them.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait(timeout, &format!("{n} messages"), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }

    /// Waits until `f` gives something, or panics after `timeout`.
    pub async fn wait<T>(&self, timeout: Duration, what: &str, f: impl Fn() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            if let Some(t) = f() {
                return t;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "Pushover stand-in: timed out waiting for {what}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), arrived).await;
        }
    }

    /// The next messages are answered `status` with `body`, before any check, in order.
    pub fn script(&self, status: u16, body: &str) {
        self.st().script.push_back((status, body.to_string()));
    }

    /// Messages left this month (0: every message gets 429), and when the quota resets.
    pub fn set_quota(&self, remaining: u64, reset: u64) {
        let mut st = self.st();
        st.remaining = remaining;
        st.reset = reset;
    }

    /// The receipts given so far.
    pub fn receipt_ids(&self) -> Vec<String> {
        self.st().receipts.keys().cloned().collect()
    }

    /// A receipt as it is now.
    pub fn receipt(&self, receipt: &str) -> Option<Receipt> {
        self.st().receipts.get(receipt).cloned()
    }

    /// The receipt's emergency stops ringing unacknowledged.
    pub fn expire(&self, receipt: &str) {
        if let Some(r) = self.st().receipts.get_mut(receipt) {
            r.expired = true;
        }
    }

    /// Someone presses Acknowledge on `device`: the receipt says so, and its callback, if it has one,
    /// gets Pushover's form, again after [`CALLBACK_RETRY`] (up to 5 times) while it does not answer
    /// 2xx. The callback's last status, if called.
    pub async fn acknowledge(&self, receipt: &str, device: &str) -> Option<u16> {
        let (callback, form) = {
            let mut st = self.st();
            let r = st
                .receipts
                .get_mut(receipt)
                .unwrap_or_else(|| panic!("no receipt {receipt}"));
            assert!(!r.cancelled, "receipt {receipt} was cancelled");
            r.acknowledged_at = now_s();
            r.acknowledged_by = text(&r.fields, "user").unwrap_or_default();
            r.acknowledged_by_device = device.to_string();
            let form = [
                ("receipt", receipt.to_string()),
                ("acknowledged", "1".to_string()),
                ("acknowledged_at", r.acknowledged_at.to_string()),
                ("acknowledged_by", r.acknowledged_by.clone()),
                ("acknowledged_by_device", device.to_string()),
            ];
            (r.callback.clone(), form)
        };
        let callback = callback?;
        let client = reqwest::Client::new();
        let mut status = 0;
        for _ in 0..5 {
            status = match client.post(&callback).form(&form).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            if (200..300).contains(&status) {
                if let Some(r) = self.st().receipts.get_mut(receipt) {
                    r.called_back_at = now_s();
                }
                break;
            }
            tokio::time::sleep(CALLBACK_RETRY).await;
        }
        Some(status)
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let parsed = fields(&headers, &body);
    let query: Map<String, Value> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let f = parsed.clone().unwrap_or_default();
    let (status, answer, limits) = {
        let mut st = inner.state.lock().unwrap();
        let (status, answer, limits) = match parsed {
            Err((s, v)) => (s, v.to_string(), false),
            Ok(f) => route(&inner, &mut st, &method, &path, &f, &query),
        };
        st.records.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().map(str::to_string),
            fields: f,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: status.as_u16(),
        });
        let limits = limits.then(|| (st.limit, st.remaining, st.reset));
        (status, answer, limits)
    };
    inner.arrived.notify_waiters();
    let mut resp = (status, answer).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    if let Some((limit, remaining, reset)) = limits {
        h.insert("x-limit-app-limit", limit.into());
        h.insert("x-limit-app-remaining", remaining.into());
        h.insert("x-limit-app-reset", reset.into());
    }
    resp
}

/// The answer to a request: status, body, and whether it carries the limit headers.
fn route(
    inner: &Inner,
    st: &mut St,
    method: &Method,
    path: &str,
    f: &Map<String, Value>,
    query: &Map<String, Value>,
) -> (StatusCode, String, bool) {
    let token = if method == Method::GET { query } else { f };
    let token_ok = text(token, "token").as_deref() == Some(inner.token.as_str());
    let (status, body) = match (method.as_str(), path) {
        ("POST", "/1/messages.json") => {
            if !token_ok {
                let (s, v) = invalid(
                    "token",
                    "application token is invalid, see https://pushover.net/api",
                );
                return (s, v.to_string(), true);
            }
            if let Some((s, b)) = st.script.pop_front() {
                return (StatusCode::from_u16(s).unwrap(), b, true);
            }
            let (s, v) = message(inner, st, f);
            return (s, v.to_string(), true);
        }
        _ if !token_ok => invalid("token", "application token is invalid"),
        ("GET", p) if p.starts_with("/1/receipts/") && p.ends_with(".json") => {
            let r = &p["/1/receipts/".len()..p.len() - ".json".len()];
            match st.receipts.get(r) {
                Some(r) => (StatusCode::OK, receipt_json(r)),
                None => not_found(),
            }
        }
        ("POST", p) if p.starts_with("/1/receipts/cancel_by_tag/") && p.ends_with(".json") => {
            let tag = &p["/1/receipts/cancel_by_tag/".len()..p.len() - ".json".len()];
            let mut n = 0;
            for r in st.receipts.values_mut() {
                if r.tags.iter().any(|t| t == tag) && !r.cancelled {
                    r.cancelled = true;
                    n += 1;
                }
            }
            (
                StatusCode::OK,
                json!({ "status": 1, "canceled": n, "request": request_id() }),
            )
        }
        ("POST", p) if p.starts_with("/1/receipts/") && p.ends_with("/cancel.json") => {
            let r = &p["/1/receipts/".len()..p.len() - "/cancel.json".len()];
            match st.receipts.get_mut(r) {
                Some(r) => {
                    r.cancelled = true;
                    (
                        StatusCode::OK,
                        json!({ "status": 1, "request": request_id() }),
                    )
                }
                None => not_found(),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({ "status": 0, "errors": ["not found"], "request": request_id() }),
        ),
    };
    (status, body.to_string(), false)
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "receipt": "not found", "errors": ["receipt not found; may be invalid or expired"],
                "status": 0, "request": request_id() }),
    )
}

fn receipt_json(r: &Receipt) -> Value {
    let now = now_s();
    let expired = r.expired || r.cancelled || now >= r.expires_at;
    json!({
        "status": 1,
        "acknowledged": u8::from(r.acknowledged_at > 0),
        "acknowledged_at": r.acknowledged_at,
        "acknowledged_by": r.acknowledged_by,
        "acknowledged_by_device": r.acknowledged_by_device,
        "last_delivered_at": now,
        "expired": u8::from(expired && r.acknowledged_at == 0),
        "expires_at": r.expires_at,
        "called_back": u8::from(r.called_back_at > 0),
        "called_back_at": r.called_back_at,
        "request": request_id(),
    })
}

/// A message checked as Pushover checks it, and accepted.
fn message(inner: &Inner, st: &mut St, f: &Map<String, Value>) -> (StatusCode, Value) {
    if st.remaining == 0 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "errors": ["application has exceeded its monthly message limit"], "status": 0,
                    "request": request_id() }),
        );
    }
    let user = text(f, "user").unwrap_or_default();
    if !is_key(&user) || !inner.users.contains(&user) {
        return invalid(
            "user",
            "user identifier is not a valid user, group, or subscribed user key",
        );
    }
    let len = |k: &str| text(f, k).map_or(0, |v| v.chars().count());
    let msg = text(f, "message").unwrap_or_default();
    if msg.trim().is_empty() {
        return invalid("message", "message cannot be blank");
    }
    for (k, max) in [
        ("message", 1024),
        ("title", 250),
        ("url", 512),
        ("url_title", 100),
    ] {
        if len(k) > max {
            return invalid(k, &format!("{k} is too long ({max} characters max)"));
        }
    }
    let on = |k: &str| text(f, k).is_some_and(|v| v == "1" || v == "true");
    if on("html") && on("monospace") {
        return invalid("monospace", "html and monospace cannot both be set");
    }
    let priority = match text(f, "priority").map(|p| p.parse::<i64>()) {
        None => 0,
        Some(Ok(p)) if (-2..=2).contains(&p) => p,
        _ => return invalid("priority", "priority is invalid"),
    };
    let mut receipt = None;
    if priority == 2 {
        let num = |k: &str| text(f, k).and_then(|v| v.parse::<u64>().ok());
        let (retry, expire) = match (num("retry"), num("expire")) {
            (None, _) => return invalid("retry", "retry must be supplied with priority=2"),
            (_, None) => return invalid("expire", "expire must be supplied with priority=2"),
            (Some(r), _) if r < 30 => {
                return invalid("retry", "retry is too low (must be at least 30 seconds)")
            }
            (_, Some(e)) if e > 10_800 => {
                return invalid("expire", "expire is too high (maximum of 10800 seconds)")
            }
            (Some(r), Some(e)) => (r, e),
        };
        let _ = retry;
        let r = key();
        st.receipts.insert(
            r.clone(),
            Receipt {
                fields: f.clone(),
                callback: text(f, "callback"),
                tags: text(f, "tags")
                    .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_default(),
                expires_at: now_s() + expire,
                ..Default::default()
            },
        );
        receipt = Some(r);
    }
    st.remaining -= 1;
    let mut ok = json!({ "status": 1, "request": request_id() });
    if let Some(r) = receipt {
        ok["receipt"] = r.into();
    }
    (StatusCode::OK, ok)
}
