//! The `matrix` channel: one `m.room.message` event per notification through the client-server API
//! (`PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}`), with an access token.
//!
//! The transaction id is the delivery's idempotency key, the same on every retry: a homeserver that
//! accepted a message whose answer the relay never saw replays its first answer (the same event id)
//! instead of posting the message twice. The access token goes into the `Authorization` header at send
//! time only: the stored content holds the event, never the token.
//!
//! Severity: `critical` and `high` are `m.text`; `normal` and `low` are `m.notice`, which clients show
//! without notifying (the default push rule `.m.rule.suppress_notices`). Critical messages start with
//! the channel's `mention` (default `@room`, which notifies everyone in the room who may be notified).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::render::escape_html;
use crate::secret::Secret;
use crate::severity::Severity;

/// Default subject (the message's first line, in bold in the HTML).
pub const DEFAULT_SUBJECT: &str = "{{ title }}";
/// Default message template (the map link is added by the channel, as a link).
pub const DEFAULT_TEMPLATE: &str = "{{ device.name }} · {{ time_local }}\
{% if position %}\n{{ speed_kmh }} km/h{% if position.address %} · {{ position.address }}{% endif %}{% endif %}";
/// Default mention of critical messages.
pub const DEFAULT_MENTION: &str = "@room";
/// The only HTML format Matrix knows.
pub const HTML_FORMAT: &str = "org.matrix.custom.html";
const JSON: &str = "application/json";

/// Matrix channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    /// Homeserver base URL (`https://matrix.example.org`); required.
    pub homeserver: Option<String>,
    /// The sending account's access token; required (checked here, so the error names its line).
    pub access_token: Option<String>,
    /// Default room id (`!abc:example.org`).
    pub room: Option<String>,
    /// Put before critical messages (default `@room`; empty: none).
    pub mention: Option<String>,
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

impl Section for RawMatrix {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(MatrixSettings::compile(self)?))
    }
}

/// Validated Matrix settings.
#[derive(Debug, Clone)]
pub struct MatrixSettings {
    /// Homeserver base URL.
    pub homeserver: Url,
    /// Access token.
    pub access_token: Secret,
    /// The default room (none or one).
    pub rooms: Vec<String>,
    /// Mention of critical messages; empty: none.
    pub mention: String,
    /// Request timeout.
    pub timeout: Duration,
}

impl MatrixSettings {
    /// Validates raw settings.
    pub fn compile(raw: RawMatrix) -> Result<MatrixSettings, Vec<String>> {
        let mut errors = Vec::new();
        let homeserver = match Url::parse(raw.homeserver.as_deref().unwrap_or_default()) {
            _ if raw.homeserver.is_none() => {
                errors.push("homeserver: required (`https://matrix.example.org`)".into());
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(u) => {
                errors.push(format!(
                    "homeserver: scheme `{}` is not http or https",
                    u.scheme()
                ));
                None
            }
            Err(e) => {
                errors.push(format!("homeserver: not a valid URL ({e})"));
                None
            }
        };
        let access_token = raw.access_token.unwrap_or_default().trim().to_string();
        if access_token.is_empty() {
            errors.push("access_token: required (the sending account's access token)".into());
        }
        if let Some(room) = &raw.room {
            if let Err(e) = check_room(room) {
                errors.push(format!("room: {e}"));
            }
        }
        match homeserver {
            Some(homeserver) if errors.is_empty() => Ok(MatrixSettings {
                homeserver,
                access_token: Secret(access_token),
                rooms: raw.room.map(|r| r.trim().to_string()).into_iter().collect(),
                mention: raw
                    .mention
                    .unwrap_or_else(|| DEFAULT_MENTION.into())
                    .trim()
                    .to_string(),
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }),
            _ => Err(errors),
        }
    }

    /// The `PUT` address of an event with transaction id `txn` in `room`.
    pub fn send_url(&self, room: &str, txn: &str) -> Url {
        let mut url = self.homeserver.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!(
            "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            encode(room),
            encode(txn)
        ));
        url.set_query(None);
        url
    }
}

/// Checks that `room` is a room id (`!…`); an alias (`#…`) is refused: resolving it is not done.
pub fn check_room(room: &str) -> Result<(), String> {
    let room = room.trim();
    if room.starts_with('#') {
        Err(format!(
            "`{room}` is a room alias; give the room id (`!…`: in Element, Room settings › Advanced › \
             Internal room ID)"
        ))
    } else if room.len() > 1 && room.starts_with('!') && !room.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(format!("`{room}` is not a room id (`!…:server`)"))
    }
}

/// Percent-encodes a path segment: every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an event says, before it is shaped as `m.room.message` content.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// `m.text` or `m.notice`.
    pub msgtype: &'static str,
    /// The mention to start with (critical messages), if any.
    pub mention: Option<&'a str>,
    /// The first line, in bold in the HTML.
    pub subject: Option<&'a str>,
    /// The message.
    pub text: &'a str,
    /// The message as HTML (its template rendered HTML-escaped); `None`: the text, escaped.
    pub html: Option<&'a str>,
    /// A map link, added unless the text has it.
    pub map_url: Option<&'a str>,
}

/// The `msgtype` of a severity.
pub fn msgtype(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "m.text",
        Severity::Normal | Severity::Low => "m.notice",
    }
}

/// The `m.room.message` content of a post: the plain `body`, the same as HTML in `formatted_body`, and
/// `m.mentions` (the room or the users the mention names; empty otherwise, so a device called `@room`
/// notifies no one).
pub fn event_content(p: &Post<'_>) -> Value {
    let (mut body, mut html) = (String::new(), String::new());
    if let Some(m) = p.mention {
        body.push_str(&format!("{m} "));
        html.push_str(&format!("{} ", escape_html(m)));
    }
    if let Some(s) = p.subject.filter(|s| !s.is_empty()) {
        body.push_str(&format!("{s}\n"));
        html.push_str(&format!("<b>{}</b><br>", escape_html(s)));
    }
    body.push_str(p.text);
    let text_html = p.html.map_or_else(|| escape_html(p.text), str::to_string);
    html.push_str(&text_html.replace('\n', "<br>"));
    if let Some(url) = p.map_url.filter(|u| !p.text.contains(*u)) {
        body.push_str(&format!("\nMap: {url}"));
        html.push_str(&format!("<br><a href=\"{}\">Map</a>", escape_html(url)));
    }
    let mut mentions = serde_json::Map::new();
    let users: Vec<&str> = p
        .mention
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| w.starts_with('@') && w.contains(':'))
        .collect();
    if p.mention
        .is_some_and(|m| m.split_whitespace().any(|w| w == "@room"))
    {
        mentions.insert("room".into(), Value::Bool(true));
    }
    if !users.is_empty() {
        mentions.insert("user_ids".into(), json!(users));
    }
    json!({
        "msgtype": p.msgtype,
        "body": body,
        "format": HTML_FORMAT,
        "formatted_body": html,
        "m.mentions": mentions,
    })
}

impl MatrixSettings {
    fn webhook_content(&self, content: &Value, message: Option<String>) -> Content {
        Content::Webhook {
            body: content.to_string(),
            content_type: JSON.into(),
            message,
        }
    }
}

impl ChannelKind for MatrixSettings {
    fn name(&self) -> &'static str {
        "matrix"
    }

    fn default_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn ordered(&self) -> bool {
        // One room reads alarms in the order they happened.
        true
    }

    fn recipients(&self) -> Option<&[String]> {
        Some(&self.rooms)
    }

    fn subject(&self) -> Option<&str> {
        Some(DEFAULT_SUBJECT)
    }

    fn html_part(&self) -> bool {
        true
    }

    /// One event; critical ones start with the mention.
    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        let critical = m.severity == Severity::Critical;
        let content = event_content(&Post {
            msgtype: msgtype(m.severity),
            mention: Some(self.mention.as_str()).filter(|s| critical && !s.is_empty()),
            subject: m.subject.as_deref(),
            text: &m.text,
            html: m.html.as_deref(),
            map_url: m.map_url.as_deref(),
        });
        vec![(
            "msg",
            self.webhook_content(
                &content,
                m.digested
                    .then(|| super::preset::digest_line(m.subject.as_deref(), &m.text)),
            ),
        )]
    }

    /// A notice titled `title` listing the lines (a digest is a summary: it does not notify).
    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        let content = event_content(&Post {
            // As loud as the rule's messages, without a mention.
            msgtype: msgtype(severity),
            mention: None,
            subject: Some(title),
            text: message,
            html: None,
            map_url: None,
        });
        Some(self.webhook_content(&content, Some(format!("{title}\n{message}"))))
    }

    fn test_content(&self, text: String) -> Content {
        let content = event_content(&Post {
            msgtype: "m.notice",
            mention: None,
            subject: None,
            text: &text,
            html: None,
            map_url: None,
        });
        self.webhook_content(&content, Some(text))
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(MatrixChannel {
            client: http_client(self.timeout)?,
            s: self.clone(),
        }))
    }
}

/// Sends through one pooled HTTP client.
pub struct MatrixChannel {
    client: reqwest::Client,
    s: MatrixSettings,
}

#[async_trait]
impl Channel for MatrixChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Webhook { body, .. } = &n.content else {
            return Err(SendError::permanent(
                "matrix channel got a message rendered for another kind",
            ));
        };
        check_room(&n.recipient).map_err(|e| SendError::permanent(format!("matrix: {e}")))?;
        let url = self.s.send_url(n.recipient.trim(), &n.key);
        let resp = self
            .client
            .put(url)
            .bearer_auth(self.s.access_token.expose())
            .header(CONTENT_TYPE, JSON)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| SendError::transient(format!("matrix: {}", http_failure(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Sent::default());
        }
        let (retry_after, text) = super::refusal(resp).await;
        Err(failure(status, retry_after, &text))
    }
}

/// The error of a failed send, from its status, `Retry-After` header and body
/// (`{"errcode": "M_…", "error": "…", "retry_after_ms": …}`): rate limits (`M_LIMIT_EXCEEDED`, 429),
/// timeouts and server errors are transient, the rest (a bad token, not in the room, a bad event) is not.
pub fn failure(status: StatusCode, retry_after: Option<Duration>, text: &str) -> SendError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let errcode = v["errcode"].as_str().unwrap_or_default();
    let detail: String = v["error"]
        .as_str()
        .map_or_else(|| text.trim().to_string(), str::to_string)
        .chars()
        .take(200)
        .collect();
    let mut reason = format!("matrix: HTTP {status}");
    for part in [errcode, detail.as_str()] {
        if !part.is_empty() {
            reason.push_str(": ");
            reason.push_str(part);
        }
    }
    if errcode == "M_LIMIT_EXCEEDED" || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after =
            retry_after.or_else(|| v["retry_after_ms"].as_u64().map(Duration::from_millis));
        return SendError::Transient {
            reason,
            retry_after,
        };
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return SendError::Transient {
            reason,
            retry_after,
        };
    }
    SendError::permanent(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(room: Option<&str>) -> Result<MatrixSettings, Vec<String>> {
        MatrixSettings::compile(RawMatrix {
            homeserver: Some("https://matrix.example.org/base/".into()),
            access_token: Some("syt_secret".into()),
            room: room.map(str::to_string),
            mention: None,
            template: None,
            timeout: None,
            retry: RawRetry::default(),
            rate_limit: None,
        })
    }

    #[test]
    fn rooms_are_ids_and_aliases_are_refused() {
        assert!(check_room("!abc:example.org").is_ok());
        assert!(check_room("!opaqueRoomV12").is_ok());
        let e = check_room("#ops:example.org").unwrap_err();
        assert!(e.contains("room alias"), "{e}");
        assert!(check_room("ops").is_err());
        let errs = settings(Some("#ops:example.org")).unwrap_err();
        assert!(
            errs[0].starts_with("room: `#ops:example.org` is a room alias"),
            "{errs:?}"
        );
    }

    #[test]
    fn the_send_address_encodes_the_room_and_the_transaction() {
        let s = settings(Some("!abc:example.org")).unwrap();
        let url = s.send_url("!a/b?c:example.org", "tr-01");
        assert_eq!(
            url.as_str(),
            "https://matrix.example.org/base/_matrix/client/v3/rooms/%21a%2Fb%3Fc%3Aexample.org/send/m.room.message/tr-01"
        );
    }

    #[test]
    fn critical_messages_mention_the_room_and_others_are_notices() {
        let post = |severity: Severity, mention: Option<&'static str>| {
            event_content(&Post {
                msgtype: msgtype(severity),
                mention,
                subject: Some("Theft <alarm>"),
                text: "Bike & co\nmoving",
                html: None,
                map_url: Some("https://osm.org/?a=1&b=2"),
            })
        };
        let c = post(Severity::Critical, Some("@room"));
        assert_eq!(c["msgtype"], "m.text");
        assert_eq!(
            c["body"],
            "@room Theft <alarm>\nBike & co\nmoving\nMap: https://osm.org/?a=1&b=2"
        );
        assert_eq!(
            c["formatted_body"],
            "@room <b>Theft &lt;alarm&gt;</b><br>Bike &amp; co<br>moving<br>\
             <a href=\"https://osm.org/?a=1&amp;b=2\">Map</a>"
        );
        assert_eq!(c["format"], HTML_FORMAT);
        assert_eq!(c["m.mentions"], json!({"room": true}));
        let u = post(Severity::Critical, Some("@alice:example.org"));
        assert_eq!(u["m.mentions"], json!({"user_ids": ["@alice:example.org"]}));
        let n = post(Severity::Normal, None);
        assert_eq!(n["msgtype"], "m.notice");
        assert_eq!(n["m.mentions"], json!({}));
        assert_eq!(msgtype(Severity::High), "m.text");
        assert_eq!(msgtype(Severity::Low), "m.notice");
    }

    #[test]
    fn errors_are_classified_by_errcode_and_status() {
        let limited = failure(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":1500}"#,
        );
        assert_eq!(
            limited,
            SendError::Transient {
                reason: "matrix: HTTP 429 Too Many Requests: M_LIMIT_EXCEEDED: Too many requests"
                    .into(),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
        let header_first = failure(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#,
        );
        assert!(
            matches!(header_first, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let e = failure(
            StatusCode::FORBIDDEN,
            None,
            r#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#,
        );
        assert_eq!(
            e,
            SendError::permanent("matrix: HTTP 403 Forbidden: M_FORBIDDEN: not in room")
        );
        assert!(matches!(
            failure(StatusCode::BAD_GATEWAY, None, "<html>"),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            failure(
                StatusCode::UNAUTHORIZED,
                None,
                r#"{"errcode":"M_UNKNOWN_TOKEN"}"#
            ),
            SendError::Permanent { .. }
        ));
    }
}
