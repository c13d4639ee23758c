//! A Gotify server stand-in on loopback: `POST /message`, checked the way Gotify checks it (see
//! `docs/reference/push-and-chat-apis.md`, "Gotify"):
//!
//! - the token comes from `?token=`, the `X-Gotify-Key` header or `Authorization: Bearer`; only an
//!   application token is taken: an unknown token, or a client token, gives 401; a user's valid Basic
//!   login gives 403;
//! - `message` is required (400, "Field 'message' is required"); a missing `priority` is the
//!   application's default;
//! - errors are JSON `{"error","errorCode","errorDescription"}`; success is 200 and the stored message
//!   (`id`, `appid`, `message`, `title`, `priority`, `date`, `extras`).
//!
//! Answers can be scripted ahead (a 500, a 429 with `Retry-After`): they reuse the ntfy stand-in's
//! [`Scripted`] and [`Request`].

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

pub use super::ntfy::{Request, Scripted};

/// The application's default priority (used when a message has none).
pub const APP_PRIORITY: i64 = 4;

/// A Gotify error answer.
pub fn gotify_error(status: u16, description: &str) -> Scripted {
    let text = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Scripted {
        status,
        body: json!({ "error": text, "errorCode": status, "errorDescription": description }),
        retry_after: None,
    }
}

struct Inner {
    port: u16,
    app_token: String,
    /// A user's Basic login.
    user_basic: String,
    state: Mutex<GotifyState>,
    arrived: Notify,
}

#[derive(Default)]
struct GotifyState {
    requests: Vec<Request>,
    /// The messages stored, as Gotify answered them.
    stored: Vec<Value>,
    script: VecDeque<Scripted>,
    next_id: u64,
}

#[derive(Clone)]
pub struct GotifyStandIn {
    inner: Arc<Inner>,
}

impl GotifyStandIn {
    /// A server whose application has token `app_token`; a user `admin:admin` exists too (a login
    /// may not publish). Any other token (a client's, say) is unknown to `/message`.
    pub async fn start(app_token: &str) -> GotifyStandIn {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("gotify stand-in binds");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            port,
            app_token: app_token.to_string(),
            user_basic: format!("Basic {}", super::ntfy::base64(b"admin:admin")),
            state: Mutex::new(GotifyState::default()),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GotifyStandIn { inner }
    }

    /// The server's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state().script.extend(answers);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// The messages stored (as Gotify answered them), in order.
    pub fn messages(&self) -> Vec<Value> {
        self.state().stored.clone()
    }

    /// Waits until `n` requests arrived (any answer); returns all.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            if self.state().requests.len() >= n {
                return self.requests();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("gotify: fewer than {n} requests: {:#?}", self.requests());
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, GotifyState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The token a request carries, where Gotify looks for one, in its order.
fn token(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let query = uri.query().unwrap_or_default();
    let from_query = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_string);
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    from_query
        .or_else(|| header("x-gotify-key").map(str::to_string))
        .or_else(|| {
            header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_string)
        })
}

/// What Gotify answers, with no script.
fn check(
    inner: &Inner,
    st: &mut GotifyState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Scripted {
    if method != Method::POST || uri.path() != "/message" {
        return gotify_error(404, "page not found");
    }
    let token = token(uri, headers);
    if token.as_deref() != Some(inner.app_token.as_str()) {
        let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
        if token.is_none() && basic == Some(inner.user_basic.as_str()) {
            return gotify_error(403, "you are not allowed to access this api");
        }
        // An unknown token and a client token alike.
        return gotify_error(
            401,
            "you need to provide a valid access token or user credentials to access this api",
        );
    }
    let Ok(m) = serde_json::from_slice::<Value>(body) else {
        return gotify_error(400, "invalid JSON");
    };
    let Some(message) = m["message"].as_str().filter(|s| !s.is_empty()) else {
        return gotify_error(400, "Field 'message' is required");
    };
    st.next_id += 1;
    let mut stored = json!({
        "id": st.next_id,
        "appid": 1,
        "message": message,
        "title": m["title"].as_str().unwrap_or("trackrelay"),
        "priority": m["priority"].as_i64().unwrap_or(APP_PRIORITY),
        "date": "2024-01-01T00:00:00Z",
    });
    if m["extras"].is_object() {
        stored["extras"] = m["extras"].clone();
    }
    Scripted {
        status: 200,
        body: stored,
        retry_after: None,
    }
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
            None => check(&inner, &mut st, &method, &uri, &headers, &body),
        };
        if (200..300).contains(&answer.status) {
            st.stored.push(answer.body.clone());
        }
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
        answer.body.to_string(),
    )
        .into_response();
    if let Some(secs) = answer.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
