//! The `pushover` channel: `POST /1/messages.json` with the rule's severity as Pushover's priority.
//! A critical rule with an incident sends an emergency (priority 2): it rings again every
//! `emergency.retry` until someone acknowledges it in the app or `emergency.expire` passes, and its
//! `receipt` is kept ([`Sent::peer_ref`]) so that [`crate::bot::pushover`] can acknowledge the
//! incident when the app does (receipt polling) and cancel the ringing when someone else does. With
//! `public_url` the emergency also carries the incident's link as its `callback`: Pushover posts the
//! acknowledgement there at once.
//!
//! The app token and the user key are secrets: the stored message holds the other fields, and both
//! are added when it is sent ([`PushoverChannel`]); neither ever shows in a reason or a log.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::render::{escape_html, Escape};
use crate::secret::Secret;
use crate::severity::{Priorities, RawPriorities, Severity};

/// The public API.
pub const DEFAULT_API_URL: &str = "https://api.pushover.net";
/// Pushover's limit on a message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// Pushover's limit on a title, in characters.
pub const MAX_TITLE_CHARS: usize = 250;
/// Pushover's limit on the supplementary URL, in characters.
pub const MAX_URL_CHARS: usize = 512;
/// The emergency priority: repeats until acknowledged.
pub const EMERGENCY: i64 = 2;
/// Default priorities of critical, high, normal and low: emergency (only where the rule has an
/// incident, else high), high (bypasses quiet hours), normal, low (no sound). -2 (no notification at
/// all) is left to an override.
pub const DEFAULT_PRIORITIES: [i64; 4] = [2, 1, 0, -1];
/// Pushover repeats an emergency at most this often.
pub const MIN_EMERGENCY_RETRY: Duration = Duration::from_secs(30);
/// Pushover rings an emergency for at most this long.
pub const MAX_EMERGENCY_EXPIRE: Duration = Duration::from_secs(10_800);
/// Pushover asks for no more than one receipt poll every 5 s.
pub const MIN_RECEIPT_POLL: Duration = Duration::from_secs(5);
/// Pushover asks for at least 5 s before a failed request is tried again: the channel's first backoff
/// unless its `retry:` says otherwise, 7 s so that the retry policy's jitter (±20%) stays above 5 s.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(7);
/// A monthly quota that resets later than this makes a message a dead letter at once.
pub const QUOTA_WAIT_AT_MOST: Duration = Duration::from_secs(86_400);
/// Default subject template: the push notification's title.
pub const DEFAULT_SUBJECT: &str = "{{ title }} · {{ device.name }}";
/// Default message template (the title says what and which device; the map is the message's link).
pub const DEFAULT_TEMPLATE: &str = "{{ time_local }}{% if position %}\n{{ speed_kmh }} km/h\
{% if position.address %} · {{ position.address }}{% endif %}{% endif %}";

/// Pushover channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPushover {
    /// The application's API token (30 letters and digits).
    pub token: String,
    /// The user or group key the messages go to (30 letters and digits).
    pub user: String,
    /// Only these of the user's devices (a name, or names separated by commas).
    pub device: Option<String>,
    /// A sound by name (Pushover's, or one of the user's own).
    pub sound: Option<String>,
    /// Send the message as Pushover HTML (default true).
    pub html: Option<bool>,
    /// Severity → priority overrides (-2 to 2).
    pub priorities: Option<RawPriorities>,
    /// How an emergency rings and how its receipt is polled.
    pub emergency: Option<RawEmergency>,
    /// API base URL (tests, a proxy).
    pub api_url: Option<String>,
    /// Default message template.
    pub template: Option<String>,
    /// Request timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retry overrides.
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
}

/// `emergency:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmergency {
    /// How often the app rings again (at least 30 s; default 60 s).
    #[serde(default, with = "humantime_serde")]
    pub retry: Option<Duration>,
    /// How long it rings at most (at most 3 h; default 1 h).
    #[serde(default, with = "humantime_serde")]
    pub expire: Option<Duration>,
    /// How often the receipt is asked whether someone acknowledged (at least 5 s; default 15 s).
    #[serde(default, with = "humantime_serde")]
    pub poll: Option<Duration>,
}

/// How an emergency rings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emergency {
    /// Rings again this often.
    pub retry: Duration,
    /// Stops ringing after this long.
    pub expire: Duration,
    /// The receipt is polled this often (when no callback tells the relay first).
    pub poll: Duration,
}

impl Emergency {
    fn compile(raw: &RawEmergency, errors: &mut Vec<String>) -> Emergency {
        let e = Emergency {
            retry: raw.retry.unwrap_or(Duration::from_secs(60)),
            expire: raw.expire.unwrap_or(Duration::from_secs(3600)),
            poll: raw.poll.unwrap_or(Duration::from_secs(15)),
        };
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if e.retry < MIN_EMERGENCY_RETRY {
            errors.push(format!(
                "emergency.retry: {} is too short: Pushover rings again at most every 30s",
                show(e.retry)
            ));
        }
        if e.expire > MAX_EMERGENCY_EXPIRE {
            errors.push(format!(
                "emergency.expire: {} is too long: Pushover rings for at most 3h (10800 s)",
                show(e.expire)
            ));
        }
        if e.expire < e.retry {
            errors.push(format!(
                "emergency.expire: {} is shorter than emergency.retry ({})",
                show(e.expire),
                show(e.retry)
            ));
        }
        if e.poll < MIN_RECEIPT_POLL {
            errors.push(format!(
                "emergency.poll: {} is too short: Pushover asks for at most one receipt poll every 5s",
                show(e.poll)
            ));
        }
        e
    }
}

impl Section for RawPushover {
    fn common(&self) -> Common {
        let mut c = Common::of(&self.template, &self.retry, &self.rate_limit);
        c.retry.initial_backoff.get_or_insert(FIRST_BACKOFF);
        c
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(PushoverSettings::compile(&self)?))
    }
}

/// Validated Pushover settings.
#[derive(Debug, Clone)]
pub struct PushoverSettings {
    /// The application's token.
    pub token: Secret,
    /// The user or group key.
    pub user: Secret,
    /// The devices, if not all of the user's.
    pub device: Option<String>,
    /// The sound.
    pub sound: Option<String>,
    /// Pushover HTML.
    pub html: bool,
    /// Severity → priority.
    pub priorities: Priorities,
    /// Emergency settings.
    pub emergency: Emergency,
    /// API base URL.
    pub api_url: Url,
    /// Request timeout.
    pub timeout: Duration,
}

/// Whether `s` is a Pushover token or key: 30 letters and digits.
pub fn is_key(s: &str) -> bool {
    s.len() == 30 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `s` is a name Pushover takes for a device or sound.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PushoverSettings {
    /// Validates raw settings.
    pub fn compile(raw: &RawPushover) -> Result<PushoverSettings, Vec<String>> {
        let mut errors = Vec::new();
        // Neither value is shown: both are secrets, and a paste error is found by its shape.
        if !is_key(&raw.token) {
            errors.push("token: a Pushover application token is 30 letters and digits".into());
        }
        if !is_key(&raw.user) {
            errors.push("user: a Pushover user or group key is 30 letters and digits".into());
        }
        if let Some(d) = &raw.device {
            if !d.split(',').all(|n| is_name(n.trim(), 25)) {
                errors.push(format!(
                    "device: `{d}` is not a device name (up to 25 letters, digits, `_` or `-`) \
                     or a list of them separated by commas"
                ));
            }
        }
        if let Some(s) = raw.sound.as_deref().filter(|s| !is_name(s, 32)) {
            errors.push(format!("sound: `{s}` is not a sound name"));
        }
        let priorities = Priorities::compile(
            raw.priorities.as_ref(),
            DEFAULT_PRIORITIES,
            -2..=2,
            &mut errors,
        );
        let emergency = Emergency::compile(
            raw.emergency.as_ref().unwrap_or(&RawEmergency::default()),
            &mut errors,
        );
        let api_url = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        let api_url = match Url::parse(api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(_) | Err(_) => {
                errors.push(format!("api_url: `{api_url}` is not an http(s) URL"));
                None
            }
        };
        match api_url {
            Some(api_url) if errors.is_empty() => Ok(PushoverSettings {
                token: Secret(raw.token.clone()),
                user: Secret(raw.user.clone()),
                device: raw
                    .device
                    .as_ref()
                    .map(|d| d.split(',').map(str::trim).collect::<Vec<_>>().join(",")),
                sound: raw.sound.clone(),
                html: raw.html.unwrap_or(true),
                priorities,
                emergency,
                api_url,
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }),
            _ => Err(errors),
        }
    }

    /// The priority of a message of `severity`: an emergency only where the rule has an incident
    /// (someone can acknowledge it, and the relay cancels it once someone does), else high.
    pub fn priority(&self, severity: Severity, incident: bool) -> i64 {
        match self.priorities.get(severity) {
            EMERGENCY if !incident => 1,
            p => p,
        }
    }

    /// The fields every message has: the devices and the sound.
    fn base(&self, title: &str, message: String, priority: i64) -> Map<String, Value> {
        self.base_as(title, message, priority, self.html)
    }

    /// [`Self::base`] for a message that is HTML or not as `html` says.
    fn base_as(
        &self,
        title: &str,
        message: String,
        priority: i64,
        html: bool,
    ) -> Map<String, Value> {
        let (message, html) = fit(message, html);
        let mut body = Map::new();
        body.insert("message".into(), message.into());
        let title = cut(title.trim(), MAX_TITLE_CHARS);
        if !title.is_empty() {
            body.insert("title".into(), title.into());
        }
        if html {
            body.insert("html".into(), 1.into());
        }
        body.insert("priority".into(), priority.into());
        if let Some(s) = &self.sound {
            body.insert("sound".into(), s.as_str().into());
        }
        if let Some(d) = &self.device {
            body.insert("device".into(), d.as_str().into());
        }
        body
    }

    /// The content of a body.
    fn wrap(&self, body: Map<String, Value>, message: Option<String>) -> Content {
        Content::Webhook {
            body: Value::Object(body).to_string(),
            content_type: super::webhook::JSON.into(),
            message,
        }
    }
}

impl ChannelKind for PushoverSettings {
    fn name(&self) -> &'static str {
        "pushover"
    }

    fn default_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    /// Pushover HTML is HTML: the values a template shows are escaped.
    fn escape(&self) -> Escape {
        if self.html {
            Escape::Html
        } else {
            Escape::Text
        }
    }

    fn ordered(&self) -> bool {
        // One phone reads alarms in the order they happened; and Pushover asks for at most two
        // connections at a time.
        true
    }

    fn subject(&self) -> Option<&str> {
        Some(DEFAULT_SUBJECT)
    }

    /// An emergency is acknowledged in the app (its receipt is polled without `public_url`).
    fn acknowledges(&self, severity: Severity) -> bool {
        self.priority(severity, true) == 2
    }

    /// An emergency carries the link as its `callback` (the app's own Acknowledge button); other
    /// messages get it at the end of their text here ([`ChannelKind::content`]).
    fn ack_action(&self) -> bool {
        true
    }

    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        // No emergency: a digest belongs to no incident.
        let body = self.base(title, message.to_string(), self.priority(severity, false));
        Some(self.wrap(body, Some(message.to_string())))
    }

    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        let priority = self.priority(m.severity, m.incident);
        let emergency = priority == EMERGENCY;
        let mut text = m.text;
        if text.trim().is_empty() {
            text = self
                .escape()
                .apply(m.subject.as_deref().unwrap_or("(no text)"));
        }
        let mut html = self.html;
        if let Some(url) = m.ack_url.as_deref() {
            if !emergency && !text.contains(url) {
                let link = format!("\n\nAcknowledge: {url}");
                if text.chars().count() + link.chars().count() > MAX_MESSAGE_CHARS {
                    // Too long: the text gives way, never the link (cutting would lose an href).
                    let plain = if html { strip_html(&text) } else { text };
                    let room = MAX_MESSAGE_CHARS.saturating_sub(link.chars().count());
                    text = cut(&plain, room) + &link;
                    html = false;
                } else if html {
                    text.push_str(&format!(
                        "\n\n<a href=\"{}\">Acknowledge</a>",
                        escape_html(url)
                    ));
                } else {
                    text.push_str(&link);
                }
            }
        }
        let message = m.digested.then(|| text.clone());
        let mut body = self.base_as(m.subject.as_deref().unwrap_or(""), text, priority, html);
        if let Some(url) = m.map_url.filter(|u| u.chars().count() <= MAX_URL_CHARS) {
            body.insert("url".into(), url.into());
            body.insert("url_title".into(), "Map".into());
        }
        if emergency {
            body.insert("retry".into(), self.emergency.retry.as_secs().into());
            body.insert("expire".into(), self.emergency.expire.as_secs().into());
            if let Some(url) = m.ack_url {
                body.insert("callback".into(), url.into());
            }
        }
        vec![("msg", self.wrap(body, message))]
    }

    fn test_content(&self, text: String) -> Content {
        let body = self.base("trackrelay test message", self.escape().apply(&text), 0);
        self.wrap(body, Some(text))
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(PushoverChannel {
            api: Api::new(self)?,
            user: self.user.clone(),
        }))
    }
}

/// A message within Pushover's limit: as it is, or, when too long, without its markup (which cannot
/// be cut safely) and cut; whether it is still HTML.
fn fit(text: String, html: bool) -> (String, bool) {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return (text, html);
    }
    let plain = if html { strip_html(&text) } else { text };
    (cut(&plain, MAX_MESSAGE_CHARS), false)
}

/// `s` in at most `max` characters, ending with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The text of Pushover HTML: tags removed, the entities the relay writes decoded.
fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(out, |s, (e, c)| s.replace(e, c))
}

/// The emergency fields of a stored message: its priority, how long it rings, and its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Priority.
    pub priority: i64,
    /// How long it rings, seconds (emergencies).
    pub expire_s: Option<u64>,
    /// Where Pushover posts the acknowledgement.
    pub callback: Option<String>,
}

impl Stored {
    /// The fields of a stored Pushover message; `None` for another kind's content.
    pub fn of(c: &Content) -> Option<Stored> {
        let Content::Webhook { body, .. } = c else {
            return None;
        };
        let v: Value = serde_json::from_str(body).ok()?;
        Some(Stored {
            priority: v.get("priority")?.as_i64()?,
            expire_s: v.get("expire").and_then(Value::as_u64),
            callback: v
                .get("callback")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// The Pushover API of one application: messages and receipts.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: Url,
    token: Secret,
}

/// A receipt's answer: whether the emergency was acknowledged (on which device) or stopped ringing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Receipt {
    /// 1 once acknowledged.
    #[serde(default)]
    pub acknowledged: u8,
    /// The device it was acknowledged on.
    #[serde(default)]
    pub acknowledged_by_device: Option<String>,
    /// 1 once it stopped ringing unacknowledged.
    #[serde(default)]
    pub expired: u8,
}

/// What Pushover answers (the fields the relay reads).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    status: i64,
    #[serde(default)]
    errors: Vec<Value>,
    receipt: Option<String>,
}

impl Api {
    /// The API of `s`'s application.
    pub fn new(s: &PushoverSettings) -> Result<Api, String> {
        Ok(Api {
            client: http_client(s.timeout)?,
            base: s.api_url.clone(),
            token: s.token.clone(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, SendError> {
        self.base
            .join(path)
            .map_err(|e| SendError::permanent(format!("Pushover: bad API URL: {e}")))
    }

    /// Whether this is the API of `s`'s application (a reload may change the token or the URL).
    pub fn serves(&self, s: &PushoverSettings) -> bool {
        self.base == s.api_url && self.token == s.token
    }

    /// Sends a message: its fields, with the token, and the answer's receipt (emergencies).
    async fn message(&self, mut fields: Map<String, Value>) -> Result<Option<String>, SendError> {
        fields.insert("token".into(), self.token.expose().into());
        let req = self.client.post(self.url("1/messages.json")?).json(&fields);
        self.call(req).await.map(|a| a.receipt)
    }

    /// Asks whether an emergency was acknowledged.
    pub async fn receipt(&self, receipt: &str) -> Result<Receipt, SendError> {
        if !is_key(receipt) {
            return Err(SendError::permanent("Pushover: not a receipt"));
        }
        let mut url = self.url(&format!("1/receipts/{receipt}.json"))?;
        url.query_pairs_mut()
            .append_pair("token", self.token.expose());
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Pushover: {}", http_failure(&e))))?;
        let (status, text) = (resp.status(), resp.text().await.unwrap_or_default());
        classify(status, None, &text, &[self.token.expose()])?;
        serde_json::from_str(&text)
            .map_err(|_| SendError::transient("Pushover: unreadable receipt"))
    }

    /// Stops every emergency sent with `tag` from ringing (a message sent twice too).
    pub async fn cancel_by_tag(&self, tag: &str) -> Result<(), SendError> {
        if !is_name(tag, 100) {
            return Err(SendError::permanent("Pushover: not a tag"));
        }
        let req = self
            .client
            .post(self.url(&format!("1/receipts/cancel_by_tag/{tag}.json"))?)
            .json(&json!({ "token": self.token.expose() }));
        self.call(req).await.map(|_| ())
    }

    /// Sends a request and reads Pushover's answer.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
        let resp = req
            .send()
            .await
            .map_err(|e| SendError::transient(format!("Pushover: {}", http_failure(&e))))?;
        let status = resp.status();
        let reset = resp
            .headers()
            .get("x-limit-app-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = resp.text().await.unwrap_or_default();
        classify(status, reset, &text, &[self.token.expose()])
    }
}

/// Pushover's answer classified, per its "being friendly" rules: a 4xx or a `status` other than 1 is
/// not repeated (its `errors` say why); 429 is the application's monthly limit, tried again once it
/// resets (`reset`, Unix seconds); a 5xx or another status is tried again. `secrets` never show.
fn classify(
    status: StatusCode,
    reset: Option<u64>,
    text: &str,
    secrets: &[&str],
) -> Result<Answer, SendError> {
    let answer: Option<Answer> = serde_json::from_str(text).ok();
    let errors = answer
        .as_ref()
        .map(|a| {
            a.errors
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| {
            text.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        });
    let redact = |s: String| {
        secrets
            .iter()
            .filter(|x| !x.is_empty())
            .fold(s, |s, x| s.replace(x, "<redacted>"))
    };
    let reason = |what: &str| {
        redact(format!(
            "Pushover: {what}{}{errors}",
            if errors.is_empty() { "" } else { ": " }
        ))
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // A reset within a month is believed; anything else is a clock problem, left to the backoff.
        let wait = reset
            .filter(|r| *r > now && *r - now <= 31 * 86_400)
            .map(|r| Duration::from_secs(r - now));
        // Days away: an alarm sent then is no use, and every try until then is one more 4xx that
        // Pushover counts against this address. Dead now, saying why.
        if wait.is_some_and(|w| w > QUOTA_WAIT_AT_MOST) {
            return Err(SendError::permanent(redact(format!(
                "Pushover: HTTP 429: the application's monthly message limit is reached; it resets at \
                 {}: raise the limit or use another application token",
                crate::clock::rfc3339(reset.unwrap_or(0) as i64 * 1000)
            ))));
        }
        return Err(SendError::Transient {
            reason: redact(format!(
                "Pushover: HTTP 429: the application's monthly message limit is reached{}",
                reset.map_or_else(String::new, |r| format!(
                    "; it resets at {}",
                    crate::clock::rfc3339(r as i64 * 1000)
                ))
            )),
            retry_after: wait,
        });
    }
    if status.is_client_error() {
        return Err(SendError::permanent(reason(&format!("HTTP {status}"))));
    }
    if !status.is_success() {
        return Err(SendError::transient(reason(&format!("HTTP {status}"))));
    }
    match answer {
        Some(a) if a.status == 1 => Ok(a),
        Some(_) => Err(SendError::permanent(reason("refused"))),
        // A proxy's page, a cut answer: whether Pushover took it is unknown; trying again is safer
        // than losing an alarm.
        None => Err(SendError::transient(reason("unreadable answer"))),
    }
}

/// Sends through one application's API.
pub struct PushoverChannel {
    api: Api,
    user: Secret,
}

#[async_trait]
impl Channel for PushoverChannel {
    /// The stored fields with the token and the user key; an emergency is tagged with the delivery's
    /// key (the same on every retry, so a message sent twice is cancelled with the original) and
    /// returns its receipt.
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Webhook { body, .. } = &n.content else {
            return Err(SendError::permanent(
                "pushover channel got a message rendered for another kind",
            ));
        };
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(body) else {
            return Err(SendError::permanent(
                "pushover: the stored message is not a JSON object",
            ));
        };
        let emergency = fields.get("priority").and_then(Value::as_i64) == Some(EMERGENCY);
        if emergency {
            fields.insert("tags".into(), n.key.as_str().into());
        }
        fields.insert("user".into(), self.user.expose().into());
        let receipt = self.api.message(fields).await.map_err(|e| match e {
            SendError::Transient {
                reason,
                retry_after,
            } => SendError::Transient {
                reason: reason.replace(self.user.expose(), "<redacted>"),
                retry_after,
            },
            SendError::Permanent { reason } => {
                SendError::permanent(reason.replace(self.user.expose(), "<redacted>"))
            }
        })?;
        Ok(Sent {
            peer_ref: receipt.filter(|r| emergency && is_key(r)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_config::Facts;

    const KEY: &str = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";

    fn settings(extra: &str) -> PushoverSettings {
        let raw: RawPushover =
            serde_yaml::from_str(&format!("{{ token: {KEY}, user: {KEY}{extra} }}")).unwrap();
        PushoverSettings::compile(&raw).unwrap()
    }

    fn message(
        text: &str,
        severity: Severity,
        incident: bool,
        ack: Option<&str>,
    ) -> Message<'static> {
        Message {
            text: text.into(),
            subject: Some("Alarm: vibration · Lena's bike".into()),
            html: None,
            body: None,
            pin: None,
            live_period: None,
            digested: false,
            severity,
            incident,
            ack_url: ack.map(str::to_string),
            map_url: Some("https://www.openstreetmap.org/?mlat=1&mlon=2".into()),
            facts: Facts {
                rule: "r",
                channel: "push",
                source: "s",
                txn: None,
                raw: "{}",
            },
        }
    }

    fn body(c: &[(&str, Content)]) -> Value {
        let Content::Webhook { body, .. } = &c[0].1 else {
            panic!("{c:?}")
        };
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn an_emergency_carries_retry_expire_and_the_callback_and_no_secret() {
        let s = settings(", emergency: { retry: 30s, expire: 3h }, sound: siren");
        let link = "https://relay.example/ack/0123";
        let b = body(&s.content(message(
            "02:41 &amp; 27 km/h",
            Severity::Critical,
            true,
            Some(link),
        )));
        assert_eq!(
            b,
            json!({
                "message": "02:41 &amp; 27 km/h", "title": "Alarm: vibration · Lena's bike", "html": 1,
                "priority": 2, "sound": "siren", "url": "https://www.openstreetmap.org/?mlat=1&mlon=2",
                "url_title": "Map", "retry": 30, "expire": 10800, "callback": link
            })
        );
        assert!(!b.to_string().contains(KEY));
    }

    #[test]
    fn severities_map_to_priorities_and_only_incidents_ring_until_acknowledged() {
        let s = settings("");
        let p = |sev, inc| body(&s.content(message("x", sev, inc, None)))["priority"].clone();
        assert_eq!(p(Severity::Critical, true), 2);
        assert_eq!(p(Severity::Critical, false), 1);
        assert_eq!(p(Severity::High, true), 1);
        assert_eq!(p(Severity::Normal, false), 0);
        assert_eq!(p(Severity::Low, false), -1);
        let b = body(&s.content(message("x", Severity::Critical, false, None)));
        assert!(
            b.get("retry").is_none() && b.get("callback").is_none(),
            "{b}"
        );
        let o = settings(", priorities: { normal: 1, low: -2 }");
        assert_eq!(o.priority(Severity::Normal, false), 1);
        assert_eq!(o.priority(Severity::Low, false), -2);
    }

    #[test]
    fn a_message_that_does_not_ring_gets_the_link_in_its_text() {
        let link = "https://relay.example/ack/0123";
        let b = body(&settings("").content(message("x", Severity::High, true, Some(link))));
        assert_eq!(
            b["message"],
            format!("x\n\n<a href=\"{link}\">Acknowledge</a>")
        );
        assert!(b.get("callback").is_none());
        let plain = settings(", html: false");
        assert_eq!(plain.escape(), Escape::Text);
        let b = body(&plain.content(message("x", Severity::Normal, true, Some(link))));
        assert_eq!(b["message"], format!("x\n\nAcknowledge: {link}"));
        assert!(b.get("html").is_none());
        // A long message is cut to make room: the link stays whole, as plain text.
        let long = format!("<b>{}</b>", "é".repeat(1100));
        let b = body(&settings("").content(message(&long, Severity::High, true, Some(link))));
        let text = b["message"].as_str().unwrap();
        assert!(
            text.ends_with(&format!("…\n\nAcknowledge: {link}")),
            "{text}"
        );
        assert_eq!(text.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!text.contains("<b>") && b.get("html").is_none(), "{b}");
    }

    #[test]
    fn long_messages_lose_their_markup_and_are_cut() {
        let text = format!("<b>{}</b> &amp;", "a".repeat(1100));
        let (m, html) = fit(text, true);
        assert!(!html);
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS);
        assert!(m.starts_with("aaa") && m.ends_with('…'), "{m}");
        let (short, html) = fit("<b>é</b>".into(), true);
        assert_eq!((short.as_str(), html), ("<b>é</b>", true));
        assert_eq!(cut(&"é".repeat(300), MAX_TITLE_CHARS).chars().count(), 250);
        assert_eq!(strip_html("<i>a</i> &lt;b&gt; &amp;lt;"), "a <b> &lt;");
    }

    #[test]
    fn answers_are_classified_as_pushover_asks() {
        let ok = classify(
            StatusCode::OK,
            None,
            r#"{"status":1,"request":"r","receipt":"abc"}"#,
            &[],
        );
        assert_eq!(ok.unwrap().receipt.as_deref(), Some("abc"));
        let bad = classify(
            StatusCode::BAD_REQUEST,
            None,
            &format!(
                r#"{{"user":"invalid","errors":["user identifier is invalid for {KEY}"],"status":0}}"#
            ),
            &[KEY],
        );
        assert_eq!(
            bad.unwrap_err(),
            SendError::permanent(
                "Pushover: HTTP 400 Bad Request: user identifier is invalid for <redacted>"
            )
        );
        let refused = classify(StatusCode::OK, None, r#"{"status":0,"errors":["no"]}"#, &[]);
        assert!(matches!(refused, Err(SendError::Permanent { .. })));
        let down = classify(StatusCode::BAD_GATEWAY, None, "<html>", &[]);
        assert!(matches!(
            down,
            Err(SendError::Transient {
                retry_after: None,
                ..
            })
        ));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let Err(SendError::Transient {
            reason,
            retry_after,
        }) = classify(StatusCode::TOO_MANY_REQUESTS, Some(now + 3600), "{}", &[])
        else {
            panic!()
        };
        assert!(reason.contains("monthly message limit"), "{reason}");
        let wait = retry_after.unwrap().as_secs();
        assert!((3590..=3600).contains(&wait), "{wait}");
        // Days away: dead now, saying why.
        let far = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(now + 10 * 86_400),
            "{}",
            &[],
        );
        assert!(
            matches!(&far, Err(SendError::Permanent { reason }) if reason.contains("raise the limit")),
            "{far:?}"
        );
        let Err(SendError::Transient { retry_after, .. }) = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(now + 90 * 86_400),
            "{}",
            &[],
        ) else {
            panic!()
        };
        assert_eq!(retry_after, None, "a reset months away is not believed");
    }

    #[test]
    fn bad_settings_are_all_reported_without_the_secrets() {
        let raw: RawPushover = serde_yaml::from_str(
            "{ token: short, user: 'azGDORePK8gMaC0QOYAMyEEuzJnyU!', device: 'a b', \
             priorities: { critical: 3 }, emergency: { retry: 10s, expire: 4h, poll: 1s } }",
        )
        .unwrap();
        let e = PushoverSettings::compile(&raw).unwrap_err();
        assert_eq!(e.len(), 7, "{e:?}");
        let all = e.join("\n");
        for want in [
            "token: a Pushover application token is 30 letters and digits",
            "user: a Pushover user or group key",
            "device: `a b`",
            "priorities.critical: 3 is out of range (-2 to 2)",
            "emergency.retry: 10s is too short",
            "emergency.expire: 4h is too long",
            "emergency.poll: 1s is too short",
        ] {
            assert!(all.contains(want), "{want} not in {all}");
        }
        assert!(!all.contains("short,") && !all.contains("yU!"), "{all}");
    }

    #[test]
    fn the_stored_fields_are_read_back() {
        let s = settings("");
        let c = s.content(message(
            "x",
            Severity::Critical,
            true,
            Some("http://r/ack/1"),
        ));
        assert_eq!(
            Stored::of(&c[0].1),
            Some(Stored {
                priority: 2,
                expire_s: Some(3600),
                callback: Some("http://r/ack/1".into())
            })
        );
        assert_eq!(Stored::of(&Content::Log { text: "x".into() }), None);
    }
}
