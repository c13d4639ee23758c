//! Webhook delivery of updates in the Telegram stand-in: `setWebhook`,
//! `deleteWebhook`, `getWebhookInfo`, and a delivery task that POSTs each
//! queued update to the webhook URL, as telegram-bot-api's `WebhookActor`
//! does. Facts and sources: docs/reference/telegram-bot-api.md, "Webhooks".
//!
//! Deliberate simplifications: updates go out one at a time in queue order
//! (the real server keeps one queue per chat / user and sends different
//! queues in parallel, up to `max_connections`); a failed update is retried
//! after a fixed, configurable delay (real: at once, then 2 s, 4 s, … up to
//! 60–120 s) unless the answer carries `Retry-After`; the URL may be plain
//! `http://` on any port but must point at loopback (real: HTTPS on ports
//! 443, 80, 88 or 8443 and no reserved addresses, unless run with `--local`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Uri};
use serde_json::{json, Value};

use super::super::{bad_request, collect_params, Inner, Outcome, Scripted, TelegramStandIn};
use super::{lock, unix_now, KNOWN_UPDATES};

/// The header that carries `secret_token` on every webhook request.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// `max_connections` when none is given (the public server's default).
const DEFAULT_MAX_CONNECTIONS: i64 = 40;
/// The server waits this long for a webhook's answer ("Read timeout expired").
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The stand-in's retry delay after a failed delivery (see the module doc).
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// `Retry-After` from a webhook is honoured up to an hour (`MAX_RETRY_AFTER`).
const MAX_RETRY_AFTER: u64 = 3600;

/// One POST of an update to the webhook, whatever came of it.
#[derive(Debug, Clone)]
pub struct WebhookPost {
    pub update_id: i64,
    /// The HTTP status the webhook answered; 0 when no answer came
    /// (connection refused, timeout, connection closed).
    pub status: u16,
    /// The `last_error_message` this attempt set; None for a 2xx answer.
    pub error: Option<String>,
    /// The secret header sent, if a `secret_token` was set.
    pub secret: Option<String>,
    pub sent_at: Instant,
}

/// The webhook as set.
struct Current {
    url: String,
    /// Empty: no secret, no header (an empty `secret_token` is allowed).
    secret: String,
    max_connections: i64,
    /// `(unix time, message)` of the latest failed delivery; cleared only when
    /// the webhook is set anew or deleted, not by a later success.
    last_error: Option<(u64, String)>,
    /// Which setWebhook started the delivery task (see [`Hook::set_count`]).
    generation: u64,
    task: tokio::task::AbortHandle,
}

/// Webhook state inside the two-way state.
pub(in super::super) struct Hook {
    current: Option<Current>,
    /// Bumped by every setWebhook with a URL that passes the rate limit. A
    /// waiting long poll that sees it change answers 409 "terminated by
    /// setWebhook request"; a delivery task of an older value stops.
    pub(super) set_count: u64,
    /// setWebhook with a URL is allowed once a second.
    next_allowed_set: Option<Instant>,
    posts: Vec<WebhookPost>,
    retry_delay: Duration,
    read_timeout: Duration,
}

impl Default for Hook {
    fn default() -> Self {
        Hook {
            current: None,
            set_count: 0,
            next_allowed_set: None,
            posts: Vec::new(),
            retry_delay: DEFAULT_RETRY_DELAY,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl Hook {
    /// A webhook is set: getUpdates answers 409.
    pub(super) fn active(&self) -> bool {
        self.current.is_some()
    }

    /// Removes the webhook and stops its delivery task; true if one was set.
    fn stop(&mut self) -> bool {
        match self.current.take() {
            Some(current) => {
                current.task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One of the three webhook methods.
pub(in super::super) type HookMethod = fn(&Arc<Inner>, &BTreeMap<String, String>) -> Outcome;

/// setWebhook / deleteWebhook / getWebhookInfo by lowercased name.
pub(in super::super) fn webhook_method(name: &str) -> Option<HookMethod> {
    Some(match name {
        "setwebhook" => set_webhook,
        "deletewebhook" => delete_webhook,
        "getwebhookinfo" => get_webhook_info,
        _ => return None,
    })
}

/// Checks the token, reads the parameters and runs `method`.
pub(in super::super) fn call_webhook_method(
    inner: &Arc<Inner>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    method: HookMethod,
) -> Outcome {
    if let Err(o) = super::super::bot_method(inner, uri) {
        return o;
    }
    match collect_params(uri, headers, body) {
        Ok(params) => method(inner, &params),
        Err(f) => Outcome::Failed(f),
    }
}

fn flag(params: &BTreeMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn set_webhook(inner: &Arc<Inner>, params: &BTreeMap<String, String>) -> Outcome {
    let url = params.get("url").map(String::as_str).unwrap_or("");
    set_or_delete(inner, params, url)
}

/// deleteWebhook is setWebhook with an empty URL on the real server too
/// (`process_set_webhook_query` handles both).
fn delete_webhook(inner: &Arc<Inner>, params: &BTreeMap<String, String>) -> Outcome {
    set_or_delete(inner, params, "")
}

/// The order of `process_set_webhook_query` / `do_set_webhook`: rate limit,
/// "already set", end a waiting long poll, close the old webhook, drop
/// pending updates, and only then check the URL and the secret, so a refused
/// setWebhook has already removed the previous webhook.
fn set_or_delete(inner: &Arc<Inner>, params: &BTreeMap<String, String>, url: &str) -> Outcome {
    let now = Instant::now();
    let mut st = lock(inner);
    let tw = &mut st.two_way;
    if !url.is_empty() {
        if tw.hook.next_allowed_set.is_some_and(|t| now < t) {
            return Outcome::Failed(Scripted {
                status: 429,
                description: "Too Many Requests: retry after 1".to_owned(),
                retry_after: Some(1),
            });
        }
        tw.hook.next_allowed_set = Some(now + Duration::from_secs(1));
    }
    let secret = if url.is_empty() {
        ""
    } else {
        params.get("secret_token").map(String::as_str).unwrap_or("")
    };
    let max_connections = if url.is_empty() {
        0
    } else {
        super::int_param(params, "max_connections", DEFAULT_MAX_CONNECTIONS).clamp(1, 100)
    };
    let drop_pending = flag(params, "drop_pending_updates");
    let unchanged = match &tw.hook.current {
        Some(c) => c.url == url && c.secret == secret && c.max_connections == max_connections,
        None => url.is_empty(),
    };
    if unchanged && !drop_pending {
        if let Some(raw) = params.get("allowed_updates") {
            tw.set_allowed(raw);
        }
        let note = if url.is_empty() {
            "Webhook is already deleted"
        } else {
            "Webhook is already set"
        };
        return Outcome::Described(json!(true), note);
    }
    if !url.is_empty() {
        tw.hook.set_count += 1;
    }
    let was_set = tw.hook.stop();
    if drop_pending {
        tw.updates.clear();
    }
    if url.is_empty() {
        let note = if was_set {
            "Webhook was deleted"
        } else {
            "Webhook is already deleted"
        };
        return Outcome::Described(json!(true), note);
    }
    if let Err(f) = check_target(url, secret) {
        return Outcome::Failed(f);
    }
    if let Some(raw) = params.get("allowed_updates") {
        tw.set_allowed(raw);
    }
    let generation = tw.hook.set_count;
    let task = tokio::spawn(deliver(inner.clone(), generation)).abort_handle();
    tw.hook.current = Some(Current {
        url: url.to_owned(),
        secret: secret.to_owned(),
        max_connections,
        last_error: None,
        generation,
        task,
    });
    Outcome::Described(json!(true), "Webhook was set")
}

/// URL and secret checks in the server's order (`do_set_webhook`), then the
/// stand-in's own: the webhook must be on this machine.
fn check_target(url: &str, secret: &str) -> Result<(), Scripted> {
    let parsed = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| bad_request("invalid webhook URL specified"))?;
    if secret.len() > 256 {
        return Err(bad_request("secret token is too long"));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad_request("secret token contains unallowed characters"));
    }
    let host = parsed.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(bad_request(
            "bad webhook: (stand-in) only loopback webhook URLs are served",
        ));
    }
    Ok(())
}

/// `JsonWebhookInfo`: url ("" when none), has_custom_certificate,
/// pending_update_count, the last error if any, and with a webhook set
/// max_connections and ip_address; allowed_updates when not the default.
fn get_webhook_info(inner: &Arc<Inner>, _params: &BTreeMap<String, String>) -> Outcome {
    let st = lock(inner);
    let tw = &st.two_way;
    let current = tw.hook.current.as_ref();
    let mut info = json!({
        "url": current.map_or("", |c| c.url.as_str()),
        "has_custom_certificate": false,
        "pending_update_count": tw.updates.len(),
    });
    if let Some(c) = current {
        if let Some((date, message)) = &c.last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(message);
        }
        info["max_connections"] = json!(c.max_connections);
        // The server shows the address it resolved; the stand-in resolves nothing.
        let host = reqwest::Url::parse(&c.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        info["ip_address"] = match bare.parse::<IpAddr>() {
            Ok(ip) => json!(ip.to_string()),
            Err(_) => json!("<unknown>"),
        };
    }
    if let Some(allowed) = &tw.allowed {
        let names: Vec<&str> = KNOWN_UPDATES
            .iter()
            .copied()
            .filter(|n| allowed.contains(*n))
            .collect();
        info["allowed_updates"] = json!(names);
    }
    Outcome::Ok(info)
}

/// What came of one POST.
struct Answer {
    status: u16,
    error: Option<String>,
    retry_after: Option<u64>,
}

/// The delivery task of one setWebhook: POSTs the oldest queued update until
/// a 2xx answer confirms it, then the next. Ends when the webhook is deleted
/// or replaced (it is also aborted then) or the test's runtime shuts down.
async fn deliver(inner: Arc<Inner>, generation: u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("webhook client of the Telegram stand-in");
    loop {
        // Created before the check: notify_waiters() wakes it even if the
        // update arrives between the check and the await.
        let notified = inner.notify.notified();
        let next = {
            let st = lock(&inner);
            let tw = &st.two_way;
            let Some(current) = tw
                .hook
                .current
                .as_ref()
                .filter(|c| c.generation == generation)
            else {
                return;
            };
            tw.updates.front().map(|(id, update)| {
                let secret = (!current.secret.is_empty()).then(|| current.secret.clone());
                (
                    *id,
                    update.clone(),
                    current.url.clone(),
                    secret,
                    tw.hook.read_timeout,
                )
            })
        };
        let Some((update_id, update, url, secret, timeout)) = next else {
            notified.await;
            continue;
        };
        let answer = post(&client, &url, secret.as_deref(), &update, timeout).await;
        let wait = record(&inner, generation, update_id, secret, answer);
        inner.notify.notify_waiters();
        match wait {
            None => return,
            Some(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
            Some(_) => {}
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    update: &Value,
    timeout: Duration,
) -> Answer {
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(header::CONTENT_TYPE, "application/json")
        .body(update.to_string());
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Answer {
                status: 0,
                error: Some(describe(&e)),
                retry_after: None,
            }
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Read the answer to its end, as the server does (it may hold a method call).
    let _ = response.bytes().await;
    let error = (!status.is_success()).then(|| {
        format!(
            "Wrong response from the webhook: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    });
    Answer {
        status: status.as_u16(),
        error,
        retry_after,
    }
}

/// `last_error_message` for a POST that got no answer. Only "Read timeout
/// expired" is confirmed wording; the others follow the OS error text the
/// server passes on (as in "Connection timed out").
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "Read timeout expired".to_owned();
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "Connection refused".to_owned();
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        "Can't connect to the webhook".to_owned()
    } else {
        "Webhook connection closed".to_owned()
    }
}

/// Records the attempt; a 2xx answer confirms (removes) the update. Returns
/// how long to wait before the next POST, or None when the webhook is gone.
fn record(
    inner: &Inner,
    generation: u64,
    update_id: i64,
    secret: Option<String>,
    answer: Answer,
) -> Option<Duration> {
    let mut st = lock(inner);
    let tw = &mut st.two_way;
    let hook = &mut tw.hook;
    let current = hook
        .current
        .as_mut()
        .filter(|c| c.generation == generation)?;
    hook.posts.push(WebhookPost {
        update_id,
        status: answer.status,
        error: answer.error.clone(),
        secret,
        sent_at: Instant::now(),
    });
    match answer.error {
        None => {
            tw.updates.retain(|(id, _)| *id != update_id);
            Some(Duration::ZERO)
        }
        Some(message) => {
            current.last_error = Some((unix_now(), message));
            Some(match answer.retry_after {
                Some(secs) => Duration::from_secs(secs.min(MAX_RETRY_AFTER)),
                None => hook.retry_delay,
            })
        }
    }
}

/// Test-side view and control of webhook delivery.
impl TelegramStandIn {
    /// The webhook as set: `(url, secret_token)`; None in polling mode.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.state().two_way.hook.current.as_ref().map(|c| {
            let secret = (!c.secret.is_empty()).then(|| c.secret.clone());
            (c.url.clone(), secret)
        })
    }

    /// `(update_id, status)` of every POST to a webhook, in order; status 0
    /// when no answer came (e.g. connection refused).
    pub fn webhook_posts(&self) -> Vec<(i64, u16)> {
        self.state()
            .two_way
            .hook
            .posts
            .iter()
            .map(|p| (p.update_id, p.status))
            .collect()
    }

    /// Like [`Self::webhook_posts`] with the error, the secret sent and the time.
    pub fn webhook_post_log(&self) -> Vec<WebhookPost> {
        self.state().two_way.hook.posts.clone()
    }

    /// Waits until at least `n` POSTs were made (answered or not) and returns
    /// [`Self::webhook_posts`]; panics after `timeout` with what happened.
    pub async fn wait_for_webhook_posts(&self, n: usize, timeout: Duration) -> Vec<(i64, u16)> {
        if self
            .wait_until(timeout, |st| st.two_way.hook.posts.len() >= n)
            .await
            .is_err()
        {
            panic!(
                "Telegram stand-in: expected at least {n} webhook POST(s) within {timeout:?}, \
                 got {:#?}\nwebhook: {:?}; pending updates: {:?}",
                self.webhook_post_log(),
                self.webhook(),
                self.pending_updates()
            );
        }
        self.webhook_posts()
    }

    /// Delay before a failed update is POSTed again (default 200 ms; a
    /// `Retry-After` answer header overrides it).
    pub fn set_webhook_retry_delay(&self, delay: Duration) {
        self.state().two_way.hook.retry_delay = delay;
    }

    /// How long a POST may wait for the webhook's answer before it counts as
    /// failed with "Read timeout expired" (default 60 s, as on the server).
    pub fn set_webhook_read_timeout(&self, timeout: Duration) {
        self.state().two_way.hook.read_timeout = timeout;
    }
}
