//! The `ntfy` channel: a push notification published as JSON to the root of an ntfy server (ntfy.sh or
//! self-hosted), its priority from the rule's severity, the map as its click target and "Open map"
//! action, and an incident's acknowledgement link as its "Acknowledge" action (an HTTP request the
//! phone sends: `POST <ack_url>` with `via=ntfy`).
//!
//! What is stored in the outbox is the JSON without the topic and without credentials: the server, the
//! topic and the token or password are the channel's settings, added when the message is sent (the
//! topic of a public server is as good as a password). The delivery's idempotency key goes along as
//! `sequence_id`, so a retry after a lost answer replaces the notification instead of adding a second.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::secret::Secret;
use crate::severity::{Priorities, RawPriorities, Severity};

/// The public server.
pub const DEFAULT_URL: &str = "https://ntfy.sh";
/// ntfy's limit on a message published as JSON (a longer one is refused with `413 41303`).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// ntfy's limit on a title.
pub const MAX_TITLE_BYTES: usize = 1024;
/// ntfy's limit on all tags together.
pub const MAX_TAGS_BYTES: usize = 512;
/// Priorities of critical, high, normal and low: max/urgent, high, default, low (1, "min", is never
/// used: it hides the notification).
pub const DEFAULT_PRIORITIES: [i64; 4] = [5, 4, 3, 2];
/// The priorities ntfy takes.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 1..=5;
/// Default title template of push notifications (ntfy, Gotify): the headline and the device.
pub const DEFAULT_TITLE: &str = "{{ title }}: {{ device.name }}";
/// Default message template of push notifications (ntfy, Gotify): the title says what, this says when
/// and where; the map is a tap away.
pub const DEFAULT_TEMPLATE: &str = "{{ device.name }} at {{ time_local }}\
{% if position %}\n{% if position.address %}{{ position.address }} · {% endif %}{{ speed_kmh }} km/h{% endif %}";
/// Content type of the body.
const JSON: &str = "application/json";

/// ntfy channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNtfy {
    /// The server's root URL (default `https://ntfy.sh`).
    pub url: Option<String>,
    /// The topic (`[-_A-Za-z0-9]`, 1 to 64).
    pub topic: Option<String>,
    /// Access token (`tk_…`), sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// User, with `password`: Basic authentication.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// Priority per severity (1 to 5).
    pub priorities: Option<RawPriorities>,
    /// Tags (emoji short codes or words) of every message; default: by severity.
    pub tags: Option<Vec<String>>,
    /// Messages are Markdown.
    pub markdown: Option<bool>,
    /// Default title template.
    pub title: Option<String>,
    /// Default message template.
    pub template: Option<String>,
    /// Request timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retry overrides.
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit.
    pub rate_limit: Option<RawRateLimit>,
}

impl Section for RawNtfy {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(NtfySettings::compile(self)?))
    }
}

/// How the relay logs in to the server.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Token(Secret),
    /// `Authorization: Basic <user:password>`.
    Basic(String, Secret),
}

/// Validated ntfy settings.
#[derive(Debug, Clone)]
pub struct NtfySettings {
    /// Where to publish (the server's root, ending in `/`).
    pub url: Url,
    /// The topic.
    pub topic: String,
    /// Credentials, if any.
    pub auth: Option<Auth>,
    /// Priority per severity.
    pub priorities: Priorities,
    /// Tags of every message (`None`: by severity).
    pub tags: Option<Vec<String>>,
    /// Messages are Markdown.
    pub markdown: bool,
    /// Title template source.
    pub title: String,
    /// Timeout.
    pub timeout: Duration,
}

/// Whether `s` is a name ntfy takes for a topic or a sequence id.
pub fn valid_topic(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A server URL as written, checked (`http` or `https`), ending in `/` so that paths join under it. The
/// problem never quotes the URL: it may hold a password.
pub(crate) fn server_url(raw: &str, errors: &mut Vec<String>) -> Option<Url> {
    let with_slash = if raw.ends_with('/') {
        raw.to_string()
    } else {
        format!("{raw}/")
    };
    match Url::parse(&with_slash) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => Some(u),
        Ok(u) if u.query().is_some() => {
            errors.push("url: the server's address takes no query".into());
            None
        }
        Ok(u) => {
            errors.push(format!("url: scheme `{}` is not http or https", u.scheme()));
            None
        }
        Err(e) => {
            errors.push(format!("url: not a valid URL ({e})"));
            None
        }
    }
}

/// `Some(value)` unless unset or empty (an empty `${VAR:-}` means "not set").
fn given(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl NtfySettings {
    /// Validates raw settings; every problem is returned.
    pub fn compile(raw: RawNtfy) -> Result<NtfySettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = server_url(raw.url.as_deref().unwrap_or(DEFAULT_URL), &mut errors);
        let topic = match given(raw.topic) {
            None => {
                errors.push("topic is missing: the ntfy topic to publish to".into());
                String::new()
            }
            // Not quoted: on a public server the topic is what keeps strangers out.
            Some(t) if !valid_topic(&t) => {
                errors.push(format!(
                    "topic: only letters, digits, `-` and `_`, 1 to 64 of them (this one has {} \
                     characters)",
                    t.chars().count()
                ));
                t
            }
            Some(t) => t,
        };
        let auth = match (given(raw.token), given(raw.username), given(raw.password)) {
            (None, None, None) => None,
            (Some(t), None, None) => Some(Auth::Token(Secret(t))),
            (None, Some(u), Some(p)) => Some(Auth::Basic(u, Secret(p))),
            (Some(_), _, _) => {
                errors.push("token: give a token or a username and password, not both".into());
                None
            }
            (None, _, _) => {
                errors.push("username and password go together".into());
                None
            }
        };
        let priorities = Priorities::compile(
            raw.priorities.as_ref(),
            DEFAULT_PRIORITIES,
            PRIORITY_RANGE,
            &mut errors,
        );
        if let Some(tags) = &raw.tags {
            if tags.iter().any(|t| t.trim().is_empty() || t.contains(',')) {
                errors.push("tags: a tag is empty or holds a comma".into());
            }
            let bytes: usize = tags.iter().map(|t| t.len() + 1).sum();
            if bytes > MAX_TAGS_BYTES {
                errors.push(format!(
                    "tags: {bytes} bytes together; ntfy takes at most {MAX_TAGS_BYTES}"
                ));
            }
        }
        match url {
            Some(url) if errors.is_empty() => Ok(NtfySettings {
                url,
                topic,
                auth,
                priorities,
                tags: raw.tags,
                markdown: raw.markdown.unwrap_or(false),
                title: raw.title.unwrap_or_else(|| DEFAULT_TITLE.into()),
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }),
            _ => Err(errors),
        }
    }

    /// The tags of a message of severity `s`: the channel's, or an emoji for the urgent ones.
    pub fn tags(&self, s: Severity) -> Vec<String> {
        match &self.tags {
            Some(t) => t.clone(),
            None => match s {
                Severity::Critical => vec!["rotating_light".into()],
                Severity::High => vec!["warning".into()],
                Severity::Normal | Severity::Low => Vec::new(),
            },
        }
    }

    /// The JSON of a message (without its topic: see the module's notes).
    fn body(&self, p: Publish<'_>) -> String {
        serde_json::to_string(&Body {
            title: p.title.map(|t| cap(t, MAX_TITLE_BYTES)),
            message: cap(p.message, MAX_MESSAGE_BYTES),
            priority: self.priorities.get(p.severity),
            tags: self.tags(p.severity),
            click: p.map_url,
            actions: actions(p.map_url, p.ack_url),
            markdown: self.markdown,
        })
        .expect("the body always serialises")
    }

    fn content(&self, body: String, message: Option<String>) -> Content {
        Content::Webhook {
            body,
            content_type: JSON.into(),
            message,
        }
    }
}

/// What one message says.
struct Publish<'a> {
    title: Option<&'a str>,
    message: &'a str,
    severity: Severity,
    map_url: Option<&'a str>,
    ack_url: Option<&'a str>,
}

/// The JSON published (the topic and `sequence_id` are added when it is sent).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    message: String,
    priority: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    click: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    actions: Vec<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    markdown: bool,
}

/// The buttons (ntfy shows at most 3): the map, and the incident's acknowledgement, which the phone
/// sends itself (`POST <ack_url>` with `via=ntfy`, so the incident records where it came from) and
/// which clears the notification once it succeeded.
fn actions(map_url: Option<&str>, ack_url: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(url) = map_url {
        out.push(json!({ "action": "view", "label": "Open map", "url": url }));
    }
    if let Some(url) = ack_url {
        out.push(json!({
            "action": "http",
            "label": "Acknowledge",
            "url": url,
            "method": "POST",
            "headers": { "Content-Type": "application/x-www-form-urlencoded" },
            "body": "via=ntfy",
            "clear": true,
        }));
    }
    out
}

/// `s` cut to at most `max` bytes at a character boundary, ending in `…` when cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl ChannelKind for NtfySettings {
    fn name(&self) -> &'static str {
        "ntfy"
    }

    fn default_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn ordered(&self) -> bool {
        false
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.title)
    }

    fn ack_action(&self) -> bool {
        true
    }

    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        let body = self.body(Publish {
            title: Some(title),
            message,
            severity,
            map_url: None,
            ack_url: None,
        });
        Some(self.content(body, Some(format!("{title}\n{message}"))))
    }

    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        let body = self.body(Publish {
            title: m.subject.as_deref(),
            message: &m.text,
            severity: m.severity,
            map_url: m.map_url.as_deref(),
            ack_url: m.ack_url.as_deref(),
        });
        vec![("msg", self.content(body, m.digested.then_some(m.text)))]
    }

    fn test_content(&self, text: String) -> Content {
        let body = self.body(Publish {
            title: Some("trackrelay test"),
            message: &text,
            severity: Severity::Normal,
            map_url: None,
            ack_url: None,
        });
        self.content(body, Some(text))
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(NtfyChannel {
            client: http_client(self.timeout)?,
            s: self.clone(),
        }))
    }
}

/// Publishes through one pooled HTTP client.
pub struct NtfyChannel {
    client: reqwest::Client,
    s: NtfySettings,
}

/// The stored body with the topic and the delivery's key as `sequence_id`.
fn publish_body(stored: &str, topic: &str, key: &str) -> Result<String, SendError> {
    let mut body: serde_json::Map<String, Value> = serde_json::from_str(stored).map_err(|_| {
        SendError::permanent("ntfy channel got a message rendered for another kind")
    })?;
    body.insert("topic".into(), topic.into());
    // A retry replaces the notification on the phone instead of adding one. Keys are `tr-` and hex,
    // which ntfy takes; anything else (a hand-made replay) goes without.
    if valid_topic(key) {
        body.insert("sequence_id".into(), key.into());
    }
    Ok(Value::Object(body).to_string())
}

#[async_trait]
impl Channel for NtfyChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Webhook { body, .. } = &n.content else {
            return Err(SendError::permanent(
                "ntfy channel got a message rendered for another kind",
            ));
        };
        let body = publish_body(body, &self.s.topic, &n.key)?;
        let mut req = self
            .client
            .post(self.s.url.clone())
            .header(CONTENT_TYPE, JSON)
            .body(body);
        req = match &self.s.auth {
            None => req,
            Some(Auth::Token(t)) => req.bearer_auth(t.expose()),
            Some(Auth::Basic(u, p)) => req.basic_auth(u, Some(p.expose())),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| SendError::transient(format!("ntfy: {}", http_failure(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Sent::default());
        }
        let (retry_after, text) = super::refusal(resp).await;
        Err(redact(classify(status, retry_after, &text), &self.s.auth))
    }
}

/// ntfy's error body: `{"code":42908,"http":429,"error":"…","link":"…"}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    error: Option<String>,
}

/// Whether a failed publish is worth retrying, and why it failed. 429 (too many requests, the daily
/// quota, too many failed logins from this address) and 5xx are transient, except 507 `50701` (a
/// UnifiedPush topic nobody listens to); every other status is permanent.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> SendError {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    let code = parsed.as_ref().and_then(|e| e.code);
    let detail = match parsed.as_ref().and_then(|e| e.error.as_deref()) {
        Some(e) => format!(
            ": {}{}",
            e.trim(),
            code.map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        None => {
            let snippet: String = body.trim().chars().take(200).collect();
            if snippet.is_empty() {
                String::new()
            } else {
                format!(": {snippet}")
            }
        }
    };
    let mut reason = format!("ntfy: HTTP {status}{detail}");
    if code == Some(42908) {
        reason.push_str(" (the daily quota of messages is used up; retried later)");
    }
    // 42909: too many failed logins from this address; retrying keeps it locked out and hides the
    // real cause (wrong credentials), so it is final like the 401 before it.
    let transient = (status == StatusCode::TOO_MANY_REQUESTS && code != Some(42909))
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && code != Some(50701));
    if transient {
        SendError::Transient {
            reason,
            retry_after,
        }
    } else {
        SendError::permanent(reason)
    }
}

/// The error with the credentials cut out of its reason, should the server ever echo them.
fn redact(e: SendError, auth: &Option<Auth>) -> SendError {
    let secret = match auth {
        Some(Auth::Token(t)) => t.expose(),
        Some(Auth::Basic(_, p)) => p.expose(),
        None => return e,
    };
    let clean = |r: String| r.replace(secret, "***");
    match e {
        SendError::Transient {
            reason,
            retry_after,
        } => SendError::Transient {
            reason: clean(reason),
            retry_after,
        },
        SendError::Permanent { reason } => SendError::Permanent {
            reason: clean(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<NtfySettings, Vec<String>> {
        NtfySettings::compile(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn settings_are_checked() {
        let s = settings("{ topic: bike-alarms, token: tk_x }").unwrap();
        assert_eq!(s.url.as_str(), "https://ntfy.sh/");
        assert!(matches!(s.auth, Some(Auth::Token(_))));
        assert_eq!(s.priorities.get(Severity::Critical), 5);
        assert_eq!(s.priorities.get(Severity::Low), 2);
        let sub = settings("{ url: \"http://h/ntfy\", topic: a }").unwrap();
        assert_eq!(sub.url.as_str(), "http://h/ntfy/");
        let e = settings("{ url: \"ftp://h\", token: t, username: u, password: p }").unwrap_err();
        assert_eq!(
            e,
            [
                "url: scheme `ftp` is not http or https",
                "topic is missing: the ntfy topic to publish to",
                "token: give a token or a username and password, not both",
            ]
        );
        let e =
            settings("{ topic: \"no/slash\", username: u, priorities: { high: 6 } }").unwrap_err();
        assert!(e[0].starts_with("topic: only letters") && !e[0].contains("no/slash"));
        assert_eq!(e[1], "username and password go together");
        assert_eq!(e[2], "priorities.high: 6 is out of range (1 to 5)");
        assert!(settings(&format!("{{ topic: {} }}", "a".repeat(65))).is_err());
        assert!(settings("{ topic: a, tags: [\"a,b\"] }").is_err());
    }

    #[test]
    fn the_body_maps_severity_and_carries_the_actions() {
        let s = settings("{ topic: t, priorities: { high: 5 }, markdown: true }").unwrap();
        let body = s.body(Publish {
            title: Some("Theft alarm: Bike"),
            message: "moved",
            severity: Severity::High,
            map_url: Some("https://map/x"),
            ack_url: Some("https://relay/ack/1"),
        });
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["priority"], 5);
        assert_eq!(v["tags"], json!(["warning"]));
        assert_eq!(v["click"], "https://map/x");
        assert_eq!(v["markdown"], true);
        assert_eq!(v["actions"][0]["label"], "Open map");
        assert_eq!(v["actions"][1]["action"], "http");
        assert_eq!(v["actions"][1]["body"], "via=ntfy");
        assert!(v.get("topic").is_none(), "the topic is added when sent");
        let sent: Value =
            serde_json::from_str(&publish_body(&body, "t", "tr-00ff").unwrap()).unwrap();
        assert_eq!(
            (sent["topic"].as_str(), sent["sequence_id"].as_str()),
            (Some("t"), Some("tr-00ff"))
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(3000);
        let c = cap(&long, MAX_MESSAGE_BYTES);
        assert!(
            c.len() <= MAX_MESSAGE_BYTES && c.ends_with('…'),
            "{}",
            c.len()
        );
        assert_eq!(cap("short", 10), "short");
    }

    #[test]
    fn failures_are_classified() {
        let body = |code: i64, text: &str| {
            format!(r#"{{"code":{code},"http":0,"error":"{text}","link":"x"}}"#)
        };
        let quota = classify(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            &body(42908, "limit reached: daily message quota reached"),
        );
        assert!(
            matches!(&quota, SendError::Transient { reason, .. } if reason.contains("daily quota") && reason.contains("42908")),
            "{quota:?}"
        );
        let slow = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "",
        );
        assert!(
            matches!(slow, SendError::Transient { retry_after: Some(d), .. } if d.as_secs() == 3)
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, "down"),
            SendError::Transient { .. }
        ));
        let locked = classify(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            &body(42909, "limit reached: too many auth failures"),
        );
        assert!(
            matches!(&locked, SendError::Permanent { reason } if reason.contains("42909")),
            "{locked:?}"
        );
        let unauthorized = classify(StatusCode::UNAUTHORIZED, None, &body(40101, "unauthorized"));
        assert_eq!(
            unauthorized,
            SendError::permanent("ntfy: HTTP 401 Unauthorized: unauthorized (40101)")
        );
        assert!(matches!(
            classify(
                StatusCode::INSUFFICIENT_STORAGE,
                None,
                &body(50701, "topic is inactive")
            ),
            SendError::Permanent { .. }
        ));
        let leaked = redact(
            SendError::permanent("bad token tk_secret"),
            &Some(Auth::Token(Secret("tk_secret".into()))),
        );
        assert_eq!(leaked, SendError::permanent("bad token ***"));
    }
}
