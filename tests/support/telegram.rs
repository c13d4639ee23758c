//! A loopback stand-in for the Telegram Bot API (`api.telegram.org`).
//!
//! It answers the methods the relay uses (`sendMessage`, `sendLocation`, and
//! `getMe` for start-up checks) with the same status codes, descriptions and
//! JSON shapes as the real server, so a test fails on exactly the requests
//! Telegram would refuse: unknown chats, empty or over-long texts, and above
//! all texts whose HTML / MarkdownV2 markup does not parse. The entity parsers
//! follow TDLib's `parse_html` / `parse_markdown_v2` / `parse_markdown`
//! (which is what the Bot API runs), including their error wording.
//!
//! Deliberate deviations from the real server, all in the strict direction:
//! - an unknown *named* HTML entity written with its semicolon (`&apos;`,
//!   `&nbsp;`) is rejected. Telegram would accept it but show the literal
//!   `&apos;` to the user, which is a bug a test should catch.
//! - a non-numeric latitude/longitude is rejected (the real API reads it as 0).
//!
//! Two-way use (issue 18) lives in `telegram/two_way.rs`: `getUpdates`
//! long polling with `offset`/`limit`/`timeout` and 409 for a superseded
//! poller, webhook delivery (`setWebhook`, `deleteWebhook`, `getWebhookInfo`;
//! `telegram/two_way/webhook.rs`), injected user messages and button presses,
//! `answerCallbackQuery`,
//! `editMessageText`/`editMessageReplyMarkup`, live locations
//! (`live_period`, `editMessageLiveLocation`, `stopMessageLiveLocation`) and
//! inline-keyboard validation. Facts and sources: docs/reference/telegram-bot-api.md.
//! Further deviations there: a button with both `url` and `callback_data` is
//! rejected (the real server silently keeps the url), an `answerCallbackQuery`
//! is accepted at any age (real: ~15 s), edits compare the visible text
//! and raw markup rather than TDLib entities, and coordinates are compared
//! exactly (the real server rounds them before its "not modified" check).
//!
//! The server lives on the tokio runtime of the test that started it, so start
//! one per test (each `#[tokio::test]` has its own runtime).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Telegram's limit for `sendMessage` text, in UTF-16 code units after entity parsing.
pub const MAX_MESSAGE_UTF16: usize = 4096;

/// One request that Telegram would have accepted (and delivered).
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// `"sendMessage"` or `"sendLocation"`, whatever case the client used
    /// (teloxide sends `SendMessage`; the real API ignores case).
    pub method: String,
    /// The chat as addressed: a canonical integer (`"-100123"`) or `"@name"`.
    pub chat_id: String,
    /// `text` exactly as sent (sendMessage only).
    pub text: Option<String>,
    /// The text a user would see: markup removed, HTML entities / escapes decoded.
    pub plain_text: Option<String>,
    /// `parse_mode` as sent, if any.
    pub parse_mode: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub message_thread_id: Option<i64>,
    /// The `message_id` the stand-in answered with (1, 2, 3, … per stand-in).
    pub message_id: i64,
    /// The validated `reply_markup` as JSON (`{"inline_keyboard": [[…]]}`),
    /// `None` when absent or an empty inline keyboard.
    pub reply_markup: Option<Value>,
    /// Every parameter, flattened to strings the way the Bot API sees them
    /// (nested JSON objects such as `link_preview_options` stay JSON text).
    pub params: BTreeMap<String, String>,
    pub received_at: Instant,
}

/// A request the stand-in answered with an error (validation or scripted).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The method path segment as sent (empty if the path was malformed).
    pub method: String,
    pub status: u16,
    pub description: String,
    pub retry_after: Option<u64>,
    pub received_at: Instant,
}

#[derive(Clone)]
pub struct TelegramStandIn {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    token: String,
    notify: Notify,
    state: Mutex<StandInState>,
}

#[derive(Default)]
struct StandInState {
    /// Known chats, normalised (see [`normalize_chat`]).
    chats: HashSet<String>,
    messages: Vec<SentMessage>,
    rejections: Vec<Rejection>,
    requests: usize,
    scripted: VecDeque<Scripted>,
    next_message_id: i64,
    /// Two-way state: updates, stored messages, callback queries, edits.
    two_way: TwoWay,
}

#[derive(Debug, Clone)]
struct Scripted {
    status: u16,
    description: String,
    retry_after: Option<u64>,
}

/// Checks one method's parameters; Ok is what a delivered message holds.
type Validator = fn(&Inner, &BTreeMap<String, String>) -> Result<Validated, Scripted>;

impl TelegramStandIn {
    /// Starts the stand-in on `127.0.0.1:<free port>`. `known_chats` are the
    /// chats the bot "is in": integers (`"42"`, `"-1001234567890"`) or
    /// channel usernames (`"@alerts"`, matched case-insensitively).
    pub async fn start(token: &str, known_chats: &[&str]) -> TelegramStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Telegram stand-in on loopback");
        let addr = listener.local_addr().expect("stand-in local address");
        let state = StandInState {
            chats: known_chats
                .iter()
                .filter_map(|c| normalize_chat(c))
                .collect(),
            next_message_id: 1,
            two_way: TwoWay::new(),
            ..StandInState::default()
        };
        let inner = Arc::new(Inner {
            addr,
            token: token.to_owned(),
            notify: Notify::new(),
            state: Mutex::new(state),
        });
        // Every path goes to one handler because the interesting part of the
        // path (`bot<TOKEN>/<Method>`) must be matched case-insensitively and
        // answered with Telegram's own 401/404 bodies, not axum's.
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("Telegram stand-in server failed");
        });
        TelegramStandIn { inner }
    }

    /// What the relay gets as its API URL, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// Makes another chat known after start (e.g. a chat "created" mid-test).
    pub fn add_chat(&self, chat: &str) {
        if let Some(c) = normalize_chat(chat) {
            self.state().chats.insert(c);
        }
    }

    /// Accepted sendMessage/sendLocation calls, in arrival order.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.state().messages.clone()
    }

    /// All HTTP requests received, including rejected ones.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    /// `(status, description)` of every error answer, in arrival order.
    pub fn rejections(&self) -> Vec<(u16, String)> {
        self.state()
            .rejections
            .iter()
            .map(|r| (r.status, r.description.clone()))
            .collect()
    }

    /// Like [`Self::rejections`] with method and arrival time, e.g. to check a
    /// client waited `retry_after` before retrying.
    pub fn rejection_log(&self) -> Vec<Rejection> {
        self.state().rejections.clone()
    }

    /// The next `n_times` sendMessage/sendLocation calls (with a valid token)
    /// answer 429 `Too Many Requests: retry after N` with
    /// `parameters.retry_after`, as Telegram's flood control does.
    pub fn fail_next_with_429(&self, n_times: usize, retry_after_secs: u64) {
        let mut st = self.state();
        for _ in 0..n_times {
            st.scripted.push_back(Scripted {
                status: 429,
                description: format!("Too Many Requests: retry after {retry_after_secs}"),
                retry_after: Some(retry_after_secs),
            });
        }
    }

    /// The next `n_times` sendMessage/sendLocation calls answer `status` with
    /// `description` (e.g. `502, "Bad Gateway"`). Note that teloxide-core
    /// itself sleeps 10 s after any 5xx answer before returning the error, so
    /// each scripted 5xx costs a teloxide-based client 10 s.
    pub fn fail_next_with_status(&self, n_times: usize, status: u16, description: &str) {
        let mut st = self.state();
        for _ in 0..n_times {
            st.scripted.push_back(Scripted {
                status,
                description: description.to_owned(),
                retry_after: None,
            });
        }
    }

    /// Waits until at least `n` messages were accepted and returns them all;
    /// panics after `timeout`, listing what did arrive and what was rejected.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        self.wait_until(timeout, |st| st.messages.len() >= n)
            .await
            .unwrap_or_else(|st| {
                panic!(
                    "Telegram stand-in: expected at least {n} accepted message(s) within {timeout:?}, \
                     got {}:\n{}\nrejections: {:#?}",
                    st.messages.len(),
                    describe_messages(&st.messages),
                    st.rejections
                )
            });
        self.messages()
    }

    /// Waits until at least `n` requests (accepted or not) arrived.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> usize {
        self.wait_until(timeout, |st| st.requests >= n)
            .await
            .unwrap_or_else(|st| {
                panic!(
                    "Telegram stand-in: expected at least {n} request(s) within {timeout:?}, got {}:\n\
                     accepted:\n{}\nrejections: {:#?}",
                    st.requests,
                    describe_messages(&st.messages),
                    st.rejections
                )
            });
        self.requests()
    }

    /// Proves a negative: panics if more than `n` messages are accepted within
    /// `window` (returning as soon as that happens). Waiting out the window is
    /// the point here, e.g. for "delivered exactly once" assertions.
    pub async fn assert_stays_at(&self, n: usize, window: Duration) {
        if self
            .wait_until(window, |st| st.messages.len() > n)
            .await
            .is_ok()
        {
            panic!(
                "Telegram stand-in: expected no more than {n} message(s), got:\n{}",
                describe_messages(&self.messages())
            );
        }
    }

    /// Polls `done` after every state change until it holds or `timeout`
    /// passes. Err carries the state's final snapshot for the panic message.
    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&StandInState) -> bool,
    ) -> Result<(), Snapshot> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Create the Notified before checking: notify_waiters() wakes every
            // Notified that exists at that moment, so no update can slip
            // between the check and the wait.
            let notified = self.inner.notify.notified();
            if done(&self.state()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let st = self.state();
                if done(&st) {
                    return Ok(());
                }
                return Err(Snapshot {
                    messages: st.messages.clone(),
                    rejections: st.rejections.clone(),
                    requests: st.requests,
                });
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, StandInState> {
        // A panicking test thread must not hide the stand-in's records from
        // the next assertion, so ignore poisoning.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Snapshot {
    messages: Vec<SentMessage>,
    rejections: Vec<Rejection>,
    requests: usize,
}

fn describe_messages(messages: &[SentMessage]) -> String {
    if messages.is_empty() {
        return "  (none)".to_owned();
    }
    messages
        .iter()
        .map(|m| {
            format!(
                "  #{} {} chat={} parse_mode={:?} text={:?} lat={:?} lon={:?} thread={:?}",
                m.message_id,
                m.method,
                m.chat_id,
                m.parse_mode,
                m.text,
                m.latitude,
                m.longitude,
                m.message_thread_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let path = uri.path().to_owned();
    let method_segment = path.rsplit('/').next().unwrap_or("").to_owned();
    let outcome = if method_segment.eq_ignore_ascii_case("getupdates") {
        get_updates(&inner, &uri, &headers, &body).await
    } else if let Some(method) = webhook_method(&method_segment.to_ascii_lowercase()) {
        call_webhook_method(&inner, &uri, &headers, &body, method)
    } else {
        process(&inner, &uri, &headers, &body, now)
    };
    let response = {
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests += 1;
        match outcome {
            Outcome::Accepted(message, result) => {
                st.two_way.store_sent(&message, &result);
                st.messages.push(*message);
                ok(result)
            }
            Outcome::Ok(result) => ok(result),
            Outcome::Described(result, description) => ok_described(result, description),
            Outcome::Failed(f) => {
                st.rejections.push(Rejection {
                    method: method_segment,
                    status: f.status,
                    description: f.description.clone(),
                    retry_after: f.retry_after,
                    received_at: now,
                });
                error(&f)
            }
        }
    };
    inner.notify.notify_waiters();
    response
}

enum Outcome {
    /// A delivered message and the `result` JSON for it.
    Accepted(Box<SentMessage>, Value),
    /// A successful call that delivers nothing (getMe).
    Ok(Value),
    /// A success with a `description` (setWebhook / deleteWebhook).
    Described(Value, &'static str),
    Failed(Scripted),
}

fn fail(status: u16, description: impl Into<String>) -> Scripted {
    Scripted {
        status,
        description: description.into(),
        retry_after: None,
    }
}

fn bad_request(description: impl std::fmt::Display) -> Scripted {
    fail(400, format!("Bad Request: {description}"))
}

fn ok(result: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"ok": true, "result": result}).to_string(),
    )
        .into_response()
}

/// `{"ok":true,"result":…,"description":…}`, as the server answers
/// setWebhook and deleteWebhook (`JsonQueryOk` with a description).
fn ok_described(result: Value, description: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"ok": true, "result": result, "description": description}).to_string(),
    )
        .into_response()
}

fn error(f: &Scripted) -> Response {
    let mut body = json!({"ok": false, "error_code": f.status, "description": f.description});
    if let Some(secs) = f.retry_after {
        body["parameters"] = json!({ "retry_after": secs });
    }
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The method of `/bot<TOKEN>/<method>` when the token is the bot's: anything else is a 404 on the real
/// server too, a wrong token a 401.
fn bot_method<'u>(inner: &Inner, uri: &'u Uri) -> Result<&'u str, Outcome> {
    let Some((token, method_name)) = uri
        .path()
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Err(Outcome::Failed(fail(404, "Not Found")));
    };
    if token != inner.token {
        return Err(Outcome::Failed(fail(401, "Unauthorized")));
    }
    Ok(method_name)
}

fn process(inner: &Inner, uri: &Uri, headers: &HeaderMap, body: &[u8], now: Instant) -> Outcome {
    let method_name = match bot_method(inner, uri) {
        Ok(m) => m,
        Err(o) => return o,
    };
    // Method names are case-insensitive on the real server; `None` = getMe,
    // which needs no validation and delivers nothing.
    let (canonical, validate): (&str, Option<Validator>) =
        match method_name.to_ascii_lowercase().as_str() {
            "sendmessage" => ("sendMessage", Some(validate_send_message)),
            "sendlocation" => ("sendLocation", Some(validate_send_location)),
            "getme" => ("getMe", None),
            other => {
                let Some(two_way) = two_way_method(other) else {
                    return Outcome::Failed(fail(404, "Not Found"));
                };
                return match collect_params(uri, headers, body).and_then(|p| two_way(inner, &p)) {
                    Ok(result) => Outcome::Ok(result),
                    Err(f) => Outcome::Failed(f),
                };
            }
        };
    let params = match collect_params(uri, headers, body) {
        Ok(p) => p,
        Err(f) => return Outcome::Failed(f),
    };
    let Some(validate) = validate else {
        return Outcome::Ok(me_json(&inner.token));
    };
    // Scripted failures stand for flood control / outages, which the real API
    // applies before looking at the parameters.
    let scripted = inner
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .scripted
        .pop_front();
    if let Some(s) = scripted {
        return Outcome::Failed(s);
    }
    let v = match validate(inner, &params) {
        Ok(v) => v,
        Err(f) => return Outcome::Failed(f),
    };
    let message_id = {
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = st.next_message_id;
        st.next_message_id += 1;
        id
    };
    let result = message_json(&inner.token, message_id, &v);
    Outcome::Accepted(
        Box::new(SentMessage {
            method: canonical.to_owned(),
            chat_id: v.chat_id,
            text: v.text,
            plain_text: v.plain_text,
            parse_mode: v.parse_mode,
            latitude: v.latitude,
            longitude: v.longitude,
            message_thread_id: v.thread_id,
            message_id,
            reply_markup: v.reply_markup,
            params,
            received_at: now,
        }),
        result,
    )
}

/// Merges query-string and body parameters into the flat string map the Bot
/// API works on (it accepts query, form, JSON, and multipart alike).
fn collect_params(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, Scripted> {
    let mut params = BTreeMap::new();
    if let Some(q) = uri.query() {
        params.extend(parse_urlencoded(q.as_bytes()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(params);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|_| bad_request("can't parse JSON object"))?;
        let Value::Object(map) = value else {
            return Err(bad_request("JSON object expected"));
        };
        for (k, v) in map {
            let s = match v {
                // JSON null means "not given", as for the real server.
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            params.insert(k, s);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(parse_urlencoded(body));
    } else if content_type.starts_with("multipart/") {
        // teloxide sends setWebhook as multipart (its certificate may be a file); the real server
        // takes every parameter from the parts. Text parts only: the relay uploads no file.
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
            .ok_or_else(|| bad_request("multipart boundary missing"))?;
        params.extend(parse_multipart(body, &boundary)?);
    }
    Ok(params)
}

/// The text fields of a `multipart/form-data` body (RFC 7578): each part's `name` and its value.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, Scripted> {
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part
            .split_once("\r\n\r\n")
            .ok_or_else(|| bad_request("malformed multipart part"))?;
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .and_then(|l| l.split(';').find_map(|p| p.trim().strip_prefix("name=")))
            .map(|n| n.trim_matches('"').to_string())
            .ok_or_else(|| bad_request("multipart part without a name"))?;
        out.push((
            name,
            value.strip_suffix("\r\n").unwrap_or(value).to_string(),
        ));
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding (also used for query strings).
pub fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    fn decode(part: &[u8]) -> String {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let hex = std::str::from_utf8(&part[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&pair[..eq]), decode(&pair[eq + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Canonical form of a chat reference: integers without sign noise or
/// leading zeros, usernames lowercased (Telegram usernames are
/// case-insensitive). `None` for an empty reference.
fn normalize_chat(raw: &str) -> Option<String> {
    let s = raw.trim();
    if s.is_empty() {
        None
    } else if let Some(name) = s.strip_prefix('@') {
        Some(format!("@{}", name.to_lowercase()))
    } else if let Ok(n) = s.parse::<i64>() {
        Some(n.to_string())
    } else {
        Some(s.to_owned())
    }
}

struct Validated {
    chat_id: String,
    text: Option<String>,
    plain_text: Option<String>,
    parse_mode: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    thread_id: Option<i64>,
    reply_markup: Option<Value>,
    /// `live_period` of a live location (sendLocation only).
    live_period: Option<i64>,
}

/// Checks `chat_id` and `message_thread_id`; returns the normalised chat and thread.
fn check_chat(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<(String, Option<i64>), Scripted> {
    let chat = params
        .get("chat_id")
        .and_then(|c| normalize_chat(c))
        .ok_or_else(|| bad_request("chat_id is empty"))?;
    let known = inner
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .chats
        .contains(&chat);
    if !known {
        return Err(bad_request("chat not found"));
    }
    let thread_id = match params.get("message_thread_id").map(|t| t.trim()) {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<i64>()
                .ok()
                .filter(|&t| t > 0)
                .ok_or_else(|| bad_request("message thread not found"))?,
        ),
    };
    // Report the chat the way the client addressed it (usernames keep their case).
    let addressed = params.get("chat_id").map(|c| c.trim()).unwrap_or_default();
    let chat_id = if chat.starts_with('@') {
        addressed.to_owned()
    } else {
        chat
    };
    Ok((chat_id, thread_id))
}

/// Validation order follows the Bot API server: the text and its entities are
/// checked first, then the chat, then the parsed text's length.
fn validate_send_message(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Validated, Scripted> {
    let text = params
        .get("text")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad_request("message text is empty"))?;
    let parse_mode = params.get("parse_mode").cloned();
    let mode = parse_mode
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let plain = match mode.as_str() {
        "" => Ok(text.clone()),
        "html" => parse_html(text),
        "markdownv2" => parse_markdown_v2(text),
        "markdown" => parse_markdown_legacy(text),
        _ => return Err(bad_request("unsupported parse_mode")),
    }
    .map_err(|reason| bad_request(format!("can't parse entities: {reason}")))?;
    let (chat_id, thread_id) = check_chat(inner, params)?;
    // Telegram strips surrounding whitespace before these checks, so a text
    // of only blanks and tags counts as empty.
    let visible = plain.trim();
    if visible.is_empty() {
        return Err(bad_request("message text is empty"));
    }
    if visible.encode_utf16().count() > MAX_MESSAGE_UTF16 {
        return Err(bad_request("message is too long"));
    }
    let reply_markup = parse_reply_markup(params, false)?;
    Ok(Validated {
        chat_id,
        text: Some(text.clone()),
        plain_text: Some(plain),
        parse_mode,
        latitude: None,
        longitude: None,
        thread_id,
        reply_markup,
        live_period: None,
    })
}

fn validate_send_location(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Validated, Scripted> {
    let coordinate = |name: &str, limit: f64| two_way::coordinate(params, name, limit);
    let latitude = coordinate("latitude", 90.0)?;
    let longitude = coordinate("longitude", 180.0)?;
    let (chat_id, thread_id) = check_chat(inner, params)?;
    let live_period = parse_live_period(params)?;
    let reply_markup = parse_reply_markup(params, false)?;
    Ok(Validated {
        chat_id,
        text: None,
        plain_text: None,
        parse_mode: None,
        latitude: Some(latitude),
        longitude: Some(longitude),
        thread_id,
        reply_markup,
        live_period,
    })
}

fn bot_id(token: &str) -> i64 {
    token
        .split(':')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or(1)
}

fn bot_user_json(token: &str) -> Value {
    json!({
        "id": bot_id(token),
        "is_bot": true,
        "first_name": "Test Bot",
        "username": "trackrelay_test_bot",
    })
}

fn me_json(token: &str) -> Value {
    let mut me = bot_user_json(token);
    for (k, v) in [
        ("can_join_groups", true),
        ("can_read_all_group_messages", false),
        ("supports_inline_queries", false),
        ("can_connect_to_business", false),
        ("has_main_web_app", false),
    ] {
        me[k] = json!(v);
    }
    me
}

/// A `Chat` object shaped by the kind of id: positive ids are users, `-100…`
/// supergroups, other negative ids basic groups, `@name` channels.
fn chat_json(chat_id: &str, forum: bool) -> Value {
    if let Some(name) = chat_id.strip_prefix('@') {
        // Channels have numeric ids too; derive a stable fake one (FNV-1a).
        let hash = name
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        let id = -1_000_000_000_000 - (hash % 1_000_000_000) as i64;
        return json!({"id": id, "type": "channel", "title": "Test channel", "username": name});
    }
    let id: i64 = chat_id.parse().unwrap_or(0);
    if id > 0 {
        json!({"id": id, "type": "private", "first_name": "Test"})
    } else if id <= -1_000_000_000_000 {
        let mut chat = json!({"id": id, "type": "supergroup", "title": "Test supergroup"});
        if forum {
            chat["is_forum"] = json!(true);
        }
        chat
    } else {
        json!({"id": id, "type": "group", "title": "Test group"})
    }
}

fn message_json(token: &str, message_id: i64, v: &Validated) -> Value {
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let chat = chat_json(&v.chat_id, v.thread_id.is_some());
    let mut m = json!({"message_id": message_id, "date": date});
    // Channel posts carry the channel as sender_chat and no `from`.
    if chat["type"] == "channel" {
        m["sender_chat"] = chat.clone();
    } else {
        m["from"] = bot_user_json(token);
    }
    m["chat"] = chat;
    if let Some(thread) = v.thread_id {
        m["message_thread_id"] = json!(thread);
        m["is_topic_message"] = json!(true);
    }
    if let Some(plain) = &v.plain_text {
        // Telegram returns the parsed text with surrounding whitespace trimmed.
        m["text"] = json!(plain.trim());
    }
    if let (Some(lat), Some(lon)) = (v.latitude, v.longitude) {
        m["location"] = json!({"latitude": lat, "longitude": lon});
        if let Some(period) = v.live_period {
            m["location"]["live_period"] = json!(period);
        }
    }
    if let Some(markup) = &v.reply_markup {
        m["reply_markup"] = markup.clone();
    }
    m
}

mod two_way;
use two_way::{
    call_webhook_method, get_updates, parse_live_period, parse_reply_markup, two_way_method,
    webhook_method, TwoWay,
};
#[allow(unused_imports)] // not every test binary uses every type
pub use two_way::{
    CallbackAnswer, Edit, LiveState, MessageState, TgUser, WebhookPost, LIVE_PERIOD_FOREVER,
    SECRET_HEADER,
};

// ---------------------------------------------------------------------------
// Entity parsers. They mirror TDLib (td/telegram/MessageEntity.cpp), which is
// what the Bot API uses, and return the visible text or TDLib's error reason
// (the part after "Bad Request: can't parse entities: ").

/// The byte at `i`, or 0 past the end — TDLib scans a NUL-terminated string,
/// and reproducing that keeps the look-ahead logic identical.
fn at(text: &[u8], i: usize) -> u8 {
    text.get(i).copied().unwrap_or(0)
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Decodes the HTML entity starting at `*pos` (which holds `&`). Ok(None)
/// means "not an entity, keep the `&` literally", as Telegram does.
fn decode_html_entity(text: &[u8], pos: &mut usize) -> Result<Option<char>, String> {
    let start = *pos;
    let mut end = start + 1;
    let code: u32;
    if at(text, end) == b'#' {
        end += 1;
        let hex = at(text, end) == b'x' || at(text, end) == b'X';
        if hex {
            end += 1;
        }
        let digits_start = end;
        let radix = if hex { 16 } else { 10 };
        while (at(text, end) as char).is_digit(radix) {
            end += 1;
        }
        if end == digits_start || end - digits_start > 7 {
            return Ok(None);
        }
        let digits = std::str::from_utf8(&text[digits_start..end]).unwrap_or("");
        code = u32::from_str_radix(digits, radix).unwrap_or(0);
        if code == 0 || code >= 0x10ffff {
            return Ok(None);
        }
    } else {
        while at(text, end).is_ascii_alphabetic() {
            end += 1;
        }
        let name = &text[start + 1..end];
        code = match name {
            b"lt" => '<' as u32,
            b"gt" => '>' as u32,
            b"amp" => '&' as u32,
            b"quot" => '"' as u32,
            // Stricter than Telegram (which would show it literally), see the
            // module doc. Without a `;` it is just text like "AT&T".
            _ if !name.is_empty() && at(text, end) == b';' => {
                return Err(format!(
                    "Unsupported HTML entity \"&{};\" at byte offset {start}: only &lt;, &gt;, &amp;, &quot; and numeric entities are supported",
                    String::from_utf8_lossy(name)
                ));
            }
            _ => return Ok(None),
        };
    }
    let Some(ch) = char::from_u32(code) else {
        return Ok(None);
    };
    *pos = if at(text, end) == b';' { end + 1 } else { end };
    Ok(Some(ch))
}

const HTML_TAGS: &[&str] = &[
    "a",
    "b",
    "strong",
    "i",
    "em",
    "s",
    "strike",
    "del",
    "u",
    "ins",
    "tg-spoiler",
    "tg-emoji",
    "span",
    "pre",
    "code",
    "blockquote",
];

/// Parses Telegram's HTML flavour; returns the visible text or the reason
/// Telegram would give for refusing it.
pub fn parse_html(text: &str) -> Result<String, String> {
    struct Open {
        tag: String,
        argument: String,
    }
    let t = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    let mut open: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == b'&' {
            let mut pos = i;
            if let Some(ch) = decode_html_entity(t, &mut pos)? {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i = pos;
                continue;
            }
        }
        if c != b'<' {
            out.push(c);
            i += 1;
            continue;
        }
        let begin = i;
        i += 1;
        if at(t, i) != b'/' {
            // A start tag: every `<` must start one, so a literal `<` in the
            // text is an "Unsupported start tag" error, as on the real server.
            while i < t.len() && !is_space(t[i]) && t[i] != b'>' {
                i += 1;
            }
            if i >= t.len() {
                return Err(format!("Unclosed start tag at byte offset {begin}"));
            }
            let tag = String::from_utf8_lossy(&t[begin + 1..i]).to_lowercase();
            if !HTML_TAGS.contains(&tag.as_str()) {
                return Err(format!(
                    "Unsupported start tag \"{tag}\" at byte offset {begin}"
                ));
            }
            let mut argument = String::new();
            while at(t, i) != b'>' {
                while i < t.len() && is_space(t[i]) {
                    i += 1;
                }
                if at(t, i) == b'>' {
                    break;
                }
                if i >= t.len() {
                    return Err(format!(
                        "Unclosed start tag \"{tag}\" at byte offset {begin}"
                    ));
                }
                let attr_begin = i;
                while i < t.len() && !is_space(t[i]) && t[i] != b'=' && t[i] != b'>' {
                    i += 1;
                }
                let attr = String::from_utf8_lossy(&t[attr_begin..i]).to_lowercase();
                if attr.is_empty() {
                    return Err(format!(
                        "Empty attribute name in the tag \"{tag}\" at byte offset {begin}"
                    ));
                }
                while i < t.len() && is_space(t[i]) {
                    i += 1;
                }
                if at(t, i) != b'=' {
                    if tag == "blockquote" && attr == "expandable" {
                        continue;
                    }
                    return Err(format!(
                        "Expected equal sign in declaration of an attribute of the tag \"{tag}\" at byte offset {begin}"
                    ));
                }
                i += 1;
                while i < t.len() && is_space(t[i]) {
                    i += 1;
                }
                if i >= t.len() {
                    return Err(format!(
                        "Unclosed start tag \"{tag}\" at byte offset {begin}"
                    ));
                }
                let value = if t[i] != b'\'' && t[i] != b'"' {
                    // An unquoted name token: letters, digits, '.', '-'.
                    let token_begin = i;
                    while at(t, i).is_ascii_alphanumeric() || matches!(at(t, i), b'.' | b'-') {
                        i += 1;
                    }
                    if !is_space(at(t, i)) && at(t, i) != b'>' {
                        return Err(format!(
                            "Unexpected end of name token at byte offset {token_begin}"
                        ));
                    }
                    String::from_utf8_lossy(&t[token_begin..i]).to_lowercase()
                } else {
                    let quote = t[i];
                    i += 1;
                    let mut value: Vec<u8> = Vec::new();
                    while i < t.len() && t[i] != quote {
                        if t[i] == b'&' {
                            let mut pos = i;
                            if let Some(ch) = decode_html_entity(t, &mut pos)? {
                                let mut buf = [0u8; 4];
                                value.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                                i = pos;
                                continue;
                            }
                        }
                        value.push(t[i]);
                        i += 1;
                    }
                    if at(t, i) == quote {
                        i += 1;
                    }
                    String::from_utf8_lossy(&value).into_owned()
                };
                if i >= t.len() {
                    return Err(format!("Unclosed start tag at byte offset {begin}"));
                }
                match (tag.as_str(), attr.as_str()) {
                    ("a", "href") | ("tg-emoji", "emoji-id") => argument = value,
                    ("span", "class") if value.starts_with("tg-") => {
                        argument = value["tg-".len()..].to_owned();
                    }
                    _ => {}
                }
            }
            if tag == "span" && argument != "spoiler" {
                return Err(format!(
                    "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
                ));
            }
            open.push(Open { tag, argument });
            i += 1; // past '>'
        } else {
            // An end tag: `</name>` (or `</>`) closing the innermost open tag.
            let Some(last) = open.pop() else {
                return Err(format!("Unexpected end tag at byte offset {begin}"));
            };
            while i < t.len() && !is_space(t[i]) && t[i] != b'>' {
                i += 1;
            }
            let end_name = String::from_utf8_lossy(&t[begin + 2..i]).into_owned();
            while i < t.len() && is_space(t[i]) {
                i += 1;
            }
            if at(t, i) != b'>' {
                return Err(format!("Unclosed end tag at byte offset {begin}"));
            }
            i += 1;
            if !end_name.is_empty() && end_name != last.tag {
                return Err(format!(
                    "Unmatched end tag at byte offset {begin}, expected \"</{}>\", found \"</{end_name}>\"",
                    last.tag
                ));
            }
            if last.tag == "tg-emoji" && !matches!(last.argument.parse::<i64>(), Ok(id) if id != 0)
            {
                return Err("Invalid custom emoji identifier specified".to_owned());
            }
        }
    }
    if let Some(last) = open.last() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            last.tag
        ));
    }
    // Only whole UTF-8 sequences and ASCII delimiters were copied or skipped.
    Ok(String::from_utf8(out).expect("entity parsing keeps UTF-8 intact"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MdEntity {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    PreCode,
    TextUrl,
    CustomEmoji,
}

fn reserved(c: u8) -> String {
    format!(
        "Character '{}' is reserved and must be escaped with the preceding '\\'",
        c as char
    )
}

/// After an opening ```` ``` ````: skips an optional language word and one
/// line break, returning the index of the last skipped byte (the caller's
/// loop increments past it) and whether a language was given.
fn skip_pre_header(t: &[u8], mut i: usize) -> (usize, bool) {
    let mut language_end = i;
    while language_end < t.len() && !is_space(t[language_end]) && t[language_end] != b'`' {
        language_end += 1;
    }
    let mut has_language = false;
    if i != language_end && language_end < t.len() && t[language_end] != b'`' {
        has_language = true;
        i = language_end;
    }
    if matches!(at(t, i), b'\n' | b'\r') {
        if matches!(at(t, i + 1), b'\n' | b'\r') && at(t, i) != at(t, i + 1) {
            i += 2;
        } else {
            i += 1;
        }
    }
    (i - 1, has_language)
}

/// Parses MarkdownV2; returns the visible text or the reason Telegram would
/// give for refusing it. Block quotes (`>` at the start of a line) are
/// accepted; the expandable `**>` form is not modelled.
pub fn parse_markdown_v2(text: &str) -> Result<String, String> {
    struct Open {
        kind: MdEntity,
        /// Byte offset of the opening marker in the input (for errors).
        at: usize,
    }
    let t = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    let mut open: Vec<Open> = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == b'\\' && (1..=126).contains(&at(t, i + 1)) {
            out.push(t[i + 1]);
            i += 2;
            continue;
        }
        let in_code = matches!(
            open.last().map(|o| o.kind),
            Some(MdEntity::Code | MdEntity::Pre | MdEntity::PreCode)
        );
        let is_reserved = if in_code {
            c == b'`'
        } else {
            b"_*[]()~`>#+-=|{}.!".contains(&c)
        };
        if !is_reserved {
            out.push(c);
            i += 1;
            continue;
        }
        if c == b'>' && !in_code && (i == 0 || t[i - 1] == b'\n') {
            // Block quote marker: not part of the visible text.
            i += 1;
            continue;
        }
        let closes = open.last().is_some_and(|o| match o.kind {
            MdEntity::Bold => c == b'*',
            MdEntity::Italic => c == b'_' && at(t, i + 1) != b'_',
            MdEntity::Code => c == b'`',
            MdEntity::Pre | MdEntity::PreCode => {
                c == b'`' && at(t, i + 1) == b'`' && at(t, i + 2) == b'`'
            }
            MdEntity::TextUrl | MdEntity::CustomEmoji => c == b']',
            MdEntity::Underline => c == b'_' && at(t, i + 1) == b'_',
            MdEntity::Strikethrough => c == b'~',
            MdEntity::Spoiler => c == b'|' && at(t, i + 1) == b'|',
        });
        if !closes {
            let begin = i;
            let kind = match c {
                b'_' if at(t, i + 1) == b'_' => {
                    i += 1;
                    MdEntity::Underline
                }
                b'_' => MdEntity::Italic,
                b'*' => MdEntity::Bold,
                b'~' => MdEntity::Strikethrough,
                b'|' if at(t, i + 1) == b'|' => {
                    i += 1;
                    MdEntity::Spoiler
                }
                b'[' => MdEntity::TextUrl,
                b'`' if at(t, i + 1) == b'`' && at(t, i + 2) == b'`' => {
                    let (last, has_language) = skip_pre_header(t, i + 3);
                    i = last;
                    if has_language {
                        MdEntity::PreCode
                    } else {
                        MdEntity::Pre
                    }
                }
                b'`' => MdEntity::Code,
                b'!' if at(t, i + 1) == b'[' => {
                    i += 1;
                    MdEntity::CustomEmoji
                }
                other => return Err(reserved(other)),
            };
            open.push(Open { kind, at: begin });
            i += 1;
            continue;
        }
        let entity = open.pop().expect("closes implies an open entity");
        match entity.kind {
            MdEntity::Underline | MdEntity::Spoiler => i += 1,
            MdEntity::Pre | MdEntity::PreCode => i += 2,
            // Without "(url)" the link text itself is the URL: nothing to skip.
            MdEntity::TextUrl if at(t, i + 1) == b'(' => {
                i += 2;
                let url_begin = i;
                while i < t.len() && t[i] != b')' {
                    if t[i] == b'\\' && (1..=126).contains(&at(t, i + 1)) {
                        i += 1;
                    }
                    i += 1;
                }
                if at(t, i) != b')' {
                    return Err(format!(
                        "Can't find end of a URL at byte offset {url_begin}"
                    ));
                }
            }
            MdEntity::CustomEmoji => {
                if at(t, i + 1) != b'(' {
                    return Err("Custom emoji entity must contain a tg://emoji URL".to_owned());
                }
                i += 2;
                let url_begin = i;
                while i < t.len() && t[i] != b')' {
                    i += 1;
                }
                if at(t, i) != b')' {
                    return Err(format!(
                        "Can't find end of a custom emoji URL at byte offset {url_begin}"
                    ));
                }
                let url = String::from_utf8_lossy(&t[url_begin..i]);
                let id = url.strip_prefix("tg://emoji?id=").unwrap_or("");
                if !matches!(id.parse::<i64>(), Ok(id) if id != 0) {
                    return Err("Invalid custom emoji identifier specified".to_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(last) = open.last() {
        return Err(format!(
            "Can't find end of {:?} entity at byte offset {}",
            last.kind, last.at
        ));
    }
    Ok(String::from_utf8(out).expect("entity parsing keeps UTF-8 intact"))
}

/// Parses legacy `Markdown`: `*bold*`, `_italic_`, `` `code` ``,
/// ```` ```pre``` ````, `[text](url)`; only `\_ \* \` \[` are escapes and an
/// unclosed entity is an error (so a bare `_` in a device name breaks it).
pub fn parse_markdown_legacy(text: &str) -> Result<String, String> {
    let t = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == b'\\' && matches!(at(t, i + 1), b'_' | b'*' | b'`' | b'[') {
            out.push(t[i + 1]);
            i += 2;
            continue;
        }
        if !matches!(c, b'_' | b'*' | b'`' | b'[') {
            out.push(c);
            i += 1;
            continue;
        }
        let begin = i;
        let end_char = if c == b'[' { b']' } else { c };
        i += 1;
        let mut is_pre = false;
        if c == b'`' && at(t, i) == b'`' && at(t, i + 1) == b'`' {
            is_pre = true;
            let (last, _) = skip_pre_header(t, i + 2);
            i = last + 1;
        }
        while i < t.len()
            && (t[i] != end_char || (is_pre && !(at(t, i + 1) == b'`' && at(t, i + 2) == b'`')))
        {
            out.push(t[i]);
            i += 1;
        }
        if i >= t.len() {
            return Err(format!(
                "Can't find end of the entity starting at byte offset {begin}"
            ));
        }
        if c == b'[' && at(t, i + 1) == b'(' {
            i += 2;
            while i < t.len() && t[i] != b')' {
                i += 1;
            }
        }
        if is_pre {
            i += 2;
        }
        i += 1;
    }
    Ok(String::from_utf8(out).expect("entity parsing keeps UTF-8 intact"))
}
