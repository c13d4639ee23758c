//! Chat webhook stand-ins on loopback, one server for five services, each at its own path and checking
//! what the real service checks (see `docs/reference/push-and-chat-apis.md`, "What the stand-ins must
//! do" #5–#9):
//!
//! - **Slack** `POST /services/T0/B0/<secret>`: `200 text/plain ok`; plain-text errors: unknown hook 404
//!   `no_service`, unparseable 400 `invalid_payload`, no `text` 400 `no_text`, over 100 attachments 400
//!   `too_many_attachments`.
//! - **Mattermost** `POST /hooks/<id>` (JSON, or a `payload=` form): `200 text/plain ok`; JSON AppError
//!   errors: unknown id 400 `web.incoming_webhook.invalid.app_error`, no text and no attachments 400
//!   `web.incoming_webhook.text.app_error`, unparseable 400 `web.incoming_webhook.parse.app_error`.
//! - **Discord** `POST /api/webhooks/<id>/<token>[?wait=true]`: 200 and the message with `wait=true`,
//!   else 204; unknown id 404 `10015`, wrong token 401 `50027`, empty message 400 `50006`, a field over
//!   its limit (content 2000, embeds 10, title 256, description 4096, all embeds 6000, colour, url,
//!   `allowed_mentions.parse`) 400 `50035` with `errors`; `X-RateLimit-*` headers on every answer.
//! - **Teams Workflows** `POST /workflows/<flow>/triggers/manual/paths/invoke?sig=<sig>`: 202 with an
//!   empty body for any JSON, like the real trigger; whether the card would have been posted (the
//!   envelope and Adaptive Card checked) is recorded apart, as a flow run's result. Bad `sig` 401, unknown
//!   flow 404, over 28 KB 413, unparseable 400.
//! - **Google Chat** `POST /v1/spaces/<space>/messages?key=&token=`: 200 with the message resource;
//!   missing key 403, bad token 401, over 32,000 bytes, empty message, unknown field or malformed card
//!   400 `INVALID_ARGUMENT`; a repeated `requestId` returns the first message.
//!
//! Each service has a script of answers used, in order, by its next requests instead of the above.

use std::collections::{HashMap, VecDeque};
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

pub const SLACK_SECRET: &str = "xoxSlackHookSecret";
pub const MATTERMOST_ID: &str = "mmhookid123";
pub const DISCORD_ID: &str = "112233";
pub const DISCORD_TOKEN: &str = "discordWebhookToken";
pub const TEAMS_FLOW: &str = "f10w";
pub const TEAMS_SIG: &str = "teamsSig";
pub const GCHAT_SPACE: &str = "AAAA";
pub const GCHAT_KEY: &str = "gkey";
pub const GCHAT_TOKEN: &str = "gchatToken";

/// The five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Slack,
    Mattermost,
    Discord,
    Teams,
    GoogleChat,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    /// A Slack-style plain-text answer (`channel_is_archived`, `rollup_error`).
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            headers: vec![],
            body: body.into(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: vec![],
            body: body.to_string(),
        }
    }

    /// With a header.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Discord's 429: `retry_after` in seconds (a decimal) in the body, the header only if given.
    pub fn discord_rate_limited(retry_after: f64, header: Option<u64>) -> Reply {
        let r = Reply::json(
            429,
            json!({ "message": "You are being rate limited.", "retry_after": retry_after, "global": false }),
        )
        .with("x-ratelimit-scope", "user")
        .with("x-ratelimit-remaining", 0);
        match header {
            Some(h) => r.with("retry-after", h),
            None => r,
        }
    }

    /// Google's quota error: no `Retry-After`.
    pub fn google_exhausted() -> Reply {
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        )
    }

    /// Mattermost with incoming webhooks turned off.
    pub fn mattermost_disabled() -> Reply {
        app_error(
            501,
            "web.incoming_webhook.disabled.app_error",
            "Incoming webhooks have been disabled by the system admin.",
        )
    }
}

/// One request as a service saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub service: Option<Service>,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A Teams flow run: the card, and why it would not have been posted (if so).
#[derive(Debug, Clone)]
pub struct Run {
    pub body: Value,
    pub failure: Option<String>,
}

#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    state: Mutex<St>,
    arrived: Notify,
}

#[derive(Default)]
struct St {
    requests: Vec<Request>,
    /// Accepted messages per service.
    posts: HashMap<Service, Vec<Value>>,
    runs: Vec<Run>,
    scripts: HashMap<Service, VecDeque<Reply>>,
    /// Google Chat: requestId → the message resource.
    request_ids: HashMap<String, Value>,
}

impl Chat {
    pub async fn start() -> Chat {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("chat stand-in binds");
        let inner = Arc::new(Inner {
            port: listener.local_addr().unwrap().port(),
            state: Mutex::new(St::default()),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Chat { inner }
    }

    /// A service's webhook URL, its secrets included.
    pub fn url(&self, s: Service) -> String {
        let base = format!("http://127.0.0.1:{}", self.inner.port);
        match s {
            Service::Slack => format!("{base}/services/T0/B0/{SLACK_SECRET}"),
            Service::Mattermost => format!("{base}/hooks/{MATTERMOST_ID}"),
            Service::Discord => format!("{base}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"),
            Service::Teams => format!(
                "{base}/workflows/{TEAMS_FLOW}/triggers/manual/paths/invoke?api-version=1&sig={TEAMS_SIG}"
            ),
            Service::GoogleChat => format!(
                "{base}/v1/spaces/{GCHAT_SPACE}/messages?key={GCHAT_KEY}&token={GCHAT_TOKEN}"
            ),
        }
    }

    /// The base URL (for wrong paths).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.inner.state.lock().unwrap()
    }

    /// Adds an answer to a service's script.
    pub fn push(&self, s: Service, r: Reply) {
        self.st().scripts.entry(s).or_default().push_back(r);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.st().requests.clone()
    }

    pub fn requests_to(&self, s: Service) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.service == Some(s))
            .collect()
    }

    /// The messages a service accepted (for Teams: every run, posted or not).
    pub fn posts(&self, s: Service) -> Vec<Value> {
        self.st().posts.get(&s).cloned().unwrap_or_default()
    }

    pub fn runs(&self) -> Vec<Run> {
        self.st().runs.clone()
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
                    .map(|r| {
                        format!(
                            "{:?} {} -> {} {}",
                            r.service,
                            r.path,
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )
                    })
                    .collect();
                panic!(
                    "chat: timed out waiting for {what}; requests:\n{}",
                    got.join("\n")
                );
            }
        }
    }

    /// Waits for `n` accepted messages of a service.
    pub async fn wait_posts(&self, s: Service, n: usize, timeout: Duration) -> Vec<Value> {
        let inner = self.inner.clone();
        self.wait(timeout, &format!("{n} {s:?} posts"), move |_| {
            inner
                .state
                .lock()
                .unwrap()
                .posts
                .get(&s)
                .map_or(0, Vec::len)
                >= n
        })
        .await;
        self.posts(s)
    }
}

fn app_error(status: u16, id: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "id": id, "message": message, "detailed_error": "", "request_id": "r1", "status_code": status }),
    )
}

fn discord_error(status: u16, code: u32, message: &str, errors: Option<Value>) -> Reply {
    let mut b = json!({ "message": message, "code": code });
    if let Some(e) = errors {
        b["errors"] = e;
    }
    Reply::json(status, b)
}

fn teams_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

fn google_error(status: u16, s: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "error": { "code": status, "message": message, "status": s } }),
    )
}

/// The service a path belongs to.
fn service_of(path: &str) -> Option<Service> {
    if path.starts_with("/services/") {
        Some(Service::Slack)
    } else if path.starts_with("/hooks/") {
        Some(Service::Mattermost)
    } else if path.starts_with("/api/webhooks/") {
        Some(Service::Discord)
    } else if path.starts_with("/workflows/") {
        Some(Service::Teams)
    } else if path.starts_with("/v1/spaces/") {
        Some(Service::GoogleChat)
    } else {
        None
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let service = service_of(&path);
    let reply = {
        let mut st = inner.state.lock().unwrap();
        let scripted = service.and_then(|s| st.scripts.get_mut(&s).and_then(VecDeque::pop_front));
        match (scripted, service) {
            (Some(r), _) => r,
            (None, None) => Reply::text(404, "404 page not found"),
            (None, Some(_)) if method != Method::POST => Reply::text(405, "method not allowed"),
            (None, Some(s)) => serve(&mut st, s, &path, &query, &content_type, &body),
        }
    };
    {
        let mut st = inner.state.lock().unwrap();
        st.requests.push(Request {
            service,
            path,
            query,
            content_type,
            body: body.to_vec(),
            status: reply.status,
            at: Instant::now(),
        });
    }
    inner.arrived.notify_waiters();
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if reply.status != 204 && reply.status != 202 {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        );
    }
    for (k, v) in reply.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// The unscripted answer of a service; an accepted message is added to `st.posts`.
fn serve(st: &mut St, s: Service, path: &str, query: &str, ct: &str, body: &[u8]) -> Reply {
    let accepted = match s {
        Service::Slack => slack(path, ct, body),
        Service::Mattermost => mattermost(path, ct, body),
        Service::Discord => discord(path, query, body),
        Service::Teams => teams(st, path, query, body),
        Service::GoogleChat => google_chat(st, path, query, body),
    };
    match accepted {
        Ok((post, reply)) => {
            st.posts.entry(s).or_default().push(post);
            reply
        }
        Err(reply) => reply,
    }
}

type Outcome = Result<(Value, Reply), Reply>;

fn slack(path: &str, ct: &str, body: &[u8]) -> Outcome {
    if path != format!("/services/T0/B0/{SLACK_SECRET}") {
        return Err(Reply::text(404, "no_service"));
    }
    let v: Value = if ct.starts_with("application/json") {
        serde_json::from_slice(body).map_err(|_| Reply::text(400, "invalid_payload"))?
    } else {
        return Err(Reply::text(400, "invalid_payload"));
    };
    if v["text"].as_str().is_none_or(|t| t.trim().is_empty()) && v.get("blocks").is_none() {
        return Err(Reply::text(400, "no_text"));
    }
    if v["attachments"].as_array().is_some_and(|a| a.len() > 100) {
        return Err(Reply::text(400, "too_many_attachments"));
    }
    Ok((v, Reply::text(200, "ok")))
}

fn mattermost(path: &str, ct: &str, body: &[u8]) -> Outcome {
    if path != format!("/hooks/{MATTERMOST_ID}") {
        return Err(app_error(
            400,
            "web.incoming_webhook.invalid.app_error",
            "Invalid webhook.",
        ));
    }
    let parse_err = || {
        app_error(
            400,
            "web.incoming_webhook.parse.app_error",
            "Unable to parse incoming data.",
        )
    };
    let v: Value = if ct.starts_with("application/json") {
        serde_json::from_slice(body).map_err(|_| parse_err())?
    } else {
        let payload = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(parse_err)?;
        serde_json::from_str(&payload).map_err(|_| parse_err())?
    };
    let has_text = v["text"].as_str().is_some_and(|t| !t.is_empty());
    let has_attachments = v["attachments"].as_array().is_some_and(|a| !a.is_empty());
    if !has_text && !has_attachments {
        return Err(app_error(
            400,
            "web.incoming_webhook.text.app_error",
            "No text specified.",
        ));
    }
    Ok((v, Reply::text(200, "ok")))
}

fn limit_error(field: &str, max: usize) -> Reply {
    discord_error(
        400,
        50035,
        "Invalid Form Body",
        Some(
            json!({ field: { "_errors": [{ "code": "BASE_TYPE_MAX_LENGTH", "message": format!("Must be {max} or fewer in length.") }] } }),
        ),
    )
}

fn len(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn discord(path: &str, query: &str, body: &[u8]) -> Outcome {
    let rest = path.trim_start_matches("/api/webhooks/");
    let (id, token) = rest.split_once('/').unwrap_or((rest, ""));
    if id != DISCORD_ID {
        return Err(discord_error(404, 10015, "Unknown Webhook", None));
    }
    if token != DISCORD_TOKEN {
        return Err(discord_error(401, 50027, "Invalid Webhook Token", None));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| discord_error(400, 50109, "The request body contains invalid JSON.", None))?;
    check_discord(&v)?;
    let limits = |r: Reply| {
        r.with("x-ratelimit-limit", 5)
            .with("x-ratelimit-remaining", 4)
            .with("x-ratelimit-reset-after", "0.4")
            .with("x-ratelimit-bucket", "b1")
    };
    let reply = if query_param(query, "wait").as_deref() == Some("true") {
        let mut msg = v.clone();
        msg["id"] = "1000".into();
        msg["channel_id"] = "2000".into();
        limits(Reply::json(200, msg))
    } else {
        limits(Reply::text(204, ""))
    };
    Ok((v, reply))
}

fn check_discord(v: &Value) -> Result<(), Reply> {
    if len(&v["content"]) > 2000 {
        return Err(limit_error("content", 2000));
    }
    let embeds = v["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        return Err(limit_error("embeds", 10));
    }
    let mut total = 0;
    for e in &embeds {
        if len(&e["title"]) > 256 {
            return Err(limit_error("embeds.0.title", 256));
        }
        if len(&e["description"]) > 4096 {
            return Err(limit_error("embeds.0.description", 4096));
        }
        if e.get("color")
            .is_some_and(|c| c.as_u64().is_none_or(|c| c > 0xFF_FFFF))
        {
            return Err(discord_error(
                400,
                50035,
                "Invalid Form Body",
                Some(
                    json!({ "embeds": { "0": { "color": { "_errors": [{ "code": "NUMBER_TYPE_MAX" }] } } } }),
                ),
            ));
        }
        if e.get("url").is_some_and(|u| {
            !u.as_str()
                .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
        }) {
            return Err(discord_error(
                400,
                50035,
                "Invalid Form Body",
                Some(
                    json!({ "embeds": { "0": { "url": { "_errors": [{ "code": "URL_TYPE_INVALID_URL" }] } } } }),
                ),
            ));
        }
        total += len(&e["title"]) + len(&e["description"]);
    }
    if total > 6000 {
        return Err(limit_error("embeds", 6000));
    }
    let parse_ok = v["allowed_mentions"]["parse"].as_array().is_none_or(|p| {
        p.iter()
            .all(|x| matches!(x.as_str(), Some("roles" | "users" | "everyone")))
    });
    if !parse_ok {
        return Err(discord_error(
            400,
            50035,
            "Invalid Form Body",
            Some(json!({ "allowed_mentions": { "_errors": [{ "code": "ENUM_TYPE_COERCE" }] } })),
        ));
    }
    if len(&v["content"]) == 0 && embeds.is_empty() {
        return Err(discord_error(
            400,
            50006,
            "Cannot send an empty message",
            None,
        ));
    }
    Ok(())
}

fn teams(st: &mut St, path: &str, query: &str, body: &[u8]) -> Outcome {
    if path != format!("/workflows/{TEAMS_FLOW}/triggers/manual/paths/invoke") {
        return Err(teams_error(
            404,
            "WorkflowNotFound",
            "The workflow could not be found.",
        ));
    }
    if query_param(query, "sig").as_deref() != Some(TEAMS_SIG) {
        return Err(teams_error(
            401,
            "DirectApiAuthorizationRequired",
            "The request must be authenticated.",
        ));
    }
    if body.len() > 28 * 1024 {
        return Err(teams_error(
            413,
            "RequestEntityTooLarge",
            "Request entity too large.",
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        teams_error(
            400,
            "InvalidRequestContent",
            "The request content is not valid JSON.",
        )
    })?;
    st.runs.push(Run {
        body: v.clone(),
        failure: check_card_envelope(&v).err(),
    });
    Ok((v, Reply::text(202, "")))
}

/// What the flow's "Post card in a chat or channel" would fail on.
fn check_card_envelope(v: &Value) -> Result<(), String> {
    if v["type"] != "message" {
        return Err("type is not message".into());
    }
    let a = &v["attachments"][0];
    if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Err("attachments[0].contentType is not an Adaptive Card".into());
    }
    let card = &a["content"];
    if card["type"] != "AdaptiveCard" || !card["version"].is_string() {
        return Err("content is not an AdaptiveCard with a version".into());
    }
    for b in card["body"].as_array().ok_or("card body is not a list")? {
        match b["type"].as_str() {
            Some("TextBlock") if b["text"].is_string() => {}
            Some("TextBlock") => return Err("TextBlock without text".into()),
            Some("Container" | "ColumnSet" | "FactSet" | "Image" | "ActionSet") => {}
            other => return Err(format!("unknown element {other:?}")),
        }
        if let Some(c) = b.get("color") {
            let ok = matches!(
                c.as_str(),
                Some("Default" | "Dark" | "Light" | "Accent" | "Good" | "Warning" | "Attention")
            );
            if !ok {
                return Err(format!("bad TextBlock color {c}"));
            }
        }
    }
    for act in card["actions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match act["type"].as_str() {
            Some("Action.OpenUrl") => {
                let url = act["url"].as_str().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || !act["title"].is_string()
                {
                    return Err("Action.OpenUrl needs an absolute url and a title".into());
                }
            }
            other => return Err(format!("unsupported action {other:?}")),
        }
    }
    Ok(())
}

fn google_chat(st: &mut St, path: &str, query: &str, body: &[u8]) -> Outcome {
    if path != format!("/v1/spaces/{GCHAT_SPACE}/messages") {
        return Err(google_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
        ));
    }
    if query_param(query, "key").as_deref() != Some(GCHAT_KEY) {
        return Err(google_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers.",
        ));
    }
    if query_param(query, "token").as_deref() != Some(GCHAT_TOKEN) {
        return Err(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ));
    }
    let invalid = |m: &str| google_error(400, "INVALID_ARGUMENT", m);
    if body.len() > 32_000 {
        return Err(invalid("Message too large."));
    }
    let request_id = query_param(query, "requestId");
    if let Some(prev) = request_id.as_ref().and_then(|r| st.request_ids.get(r)) {
        return Err(Reply::json(200, prev.clone()));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| invalid("Invalid JSON payload received."))?;
    check_google(&v).map_err(|m| invalid(&m))?;
    let n = st.posts.get(&Service::GoogleChat).map_or(0, Vec::len) + 1;
    let mut msg = v.clone();
    msg["name"] = format!("spaces/{GCHAT_SPACE}/messages/m{n}").into();
    msg["thread"] = json!({ "name": format!("spaces/{GCHAT_SPACE}/threads/t{n}") });
    if let Some(r) = request_id {
        st.request_ids.insert(r, msg.clone());
    }
    Ok((v, Reply::json(200, msg)))
}

/// Google parses the body as its protocol buffer: an unknown field is an error.
fn check_google(v: &Value) -> Result<(), String> {
    let unknown = |obj: &Value, known: &[&str]| -> Result<(), String> {
        for k in obj
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !known.contains(&k.as_str()) {
                return Err(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\""
                ));
            }
        }
        Ok(())
    };
    unknown(
        v,
        &[
            "text",
            "cardsV2",
            "thread",
            "fallbackText",
            "accessoryWidgets",
        ],
    )?;
    let cards = v["cardsV2"].as_array().cloned().unwrap_or_default();
    if v["text"].as_str().is_none_or(|t| t.is_empty()) && cards.is_empty() {
        return Err("Message cannot be empty. Discarding empty message.".into());
    }
    for c in &cards {
        unknown(c, &["cardId", "card"])?;
        if !c["cardId"].is_string() {
            return Err("cardsV2.cardId is required".into());
        }
        let card = &c["card"];
        unknown(
            card,
            &["header", "sections", "name", "fixedFooter", "cardActions"],
        )?;
        if let Some(h) = card.get("header") {
            unknown(
                h,
                &["title", "subtitle", "imageUrl", "imageType", "imageAltText"],
            )?;
            if !h["title"].is_string() {
                return Err("card header title is required".into());
            }
        }
        for s in card["sections"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            for w in s["widgets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                check_widget(w)?;
            }
        }
    }
    Ok(())
}

fn check_widget(w: &Value) -> Result<(), String> {
    let o = w.as_object().ok_or("widget is not an object")?;
    if o.len() != 1 {
        return Err("a widget has exactly one kind".into());
    }
    let (kind, body) = o.iter().next().unwrap();
    match kind.as_str() {
        "textParagraph" if body["text"].is_string() => Ok(()),
        "buttonList" => {
            for b in body["buttons"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let url = b["onClick"]["openLink"]["url"].as_str().unwrap_or_default();
                if !b["text"].is_string() || !url.starts_with("http") {
                    return Err("a button needs text and onClick.openLink.url".into());
                }
            }
            Ok(())
        }
        "divider" | "decoratedText" | "image" => Ok(()),
        other => Err(format!(
            "Invalid JSON payload received. Unknown name \"{other}\""
        )),
    }
}
