//! The `gotify` channel: a push notification to a self-hosted Gotify server (`POST /message` with an
//! application token), its priority from the rule's severity, Markdown and the map as click target in
//! its `extras`. Gotify has no action buttons: an incident's acknowledgement link stays in the text.
//!
//! What is stored in the outbox is the JSON without the token: it is a header added when the message
//! is sent. Gotify has no way to recognise a retried request, so a retry after a lost answer can show a
//! message twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::ntfy::{server_url, DEFAULT_TEMPLATE, DEFAULT_TITLE};
use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::secret::Secret;
use crate::severity::{Priorities, RawPriorities, Severity};

/// Priorities of critical, high, normal and low. In the Android app, 8 and up vibrate, 4 to 7 make a
/// sound, 1 to 3 show an icon only, and 0 shows nothing (never used by default).
pub const DEFAULT_PRIORITIES: [i64; 4] = [10, 8, 5, 2];
/// The priorities Gotify takes.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 0..=10;
/// The header carrying the application token.
pub const TOKEN_HEADER: &str = "x-gotify-key";
/// Content type of the body.
const JSON: &str = "application/json";

/// Gotify channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGotify {
    /// The server's address (its root, or the path it is served under).
    pub url: Option<String>,
    /// An application token (a client token is refused by Gotify).
    pub token: Option<String>,
    /// Priority per severity (0 to 10).
    pub priorities: Option<RawPriorities>,
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

impl Section for RawGotify {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(GotifySettings::compile(self)?))
    }
}

/// Validated Gotify settings.
#[derive(Debug, Clone)]
pub struct GotifySettings {
    /// `<server>/message`.
    pub url: Url,
    /// The application token.
    pub token: Secret,
    /// Priority per severity.
    pub priorities: Priorities,
    /// Messages are Markdown.
    pub markdown: bool,
    /// Title template source.
    pub title: String,
    /// Timeout.
    pub timeout: Duration,
}

impl GotifySettings {
    /// Validates raw settings; every problem is returned.
    pub fn compile(raw: RawGotify) -> Result<GotifySettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = match raw.url.as_deref().filter(|u| !u.is_empty()) {
            None => {
                errors.push("url is missing: the Gotify server's address".into());
                None
            }
            Some(u) => server_url(u, &mut errors).and_then(|u| u.join("message").ok()),
        };
        let token = match raw.token.filter(|t| !t.is_empty()) {
            Some(t) => Secret(t),
            None => {
                errors.push("token is missing: a Gotify application token".into());
                Secret(String::new())
            }
        };
        let priorities = Priorities::compile(
            raw.priorities.as_ref(),
            DEFAULT_PRIORITIES,
            PRIORITY_RANGE,
            &mut errors,
        );
        match url {
            Some(url) if errors.is_empty() => Ok(GotifySettings {
                url,
                token,
                priorities,
                markdown: raw.markdown.unwrap_or(false),
                title: raw.title.unwrap_or_else(|| DEFAULT_TITLE.into()),
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }),
            _ => Err(errors),
        }
    }

    /// The JSON of a message.
    fn body(
        &self,
        title: Option<&str>,
        message: &str,
        severity: Severity,
        map_url: Option<&str>,
    ) -> Content {
        let mut extras = Map::new();
        if self.markdown {
            extras.insert(
                "client::display".into(),
                json!({ "contentType": "text/markdown" }),
            );
        }
        if let Some(url) = map_url {
            extras.insert(
                "client::notification".into(),
                json!({ "click": { "url": url } }),
            );
        }
        // Gotify refuses a message without text.
        let text = match (message.trim().is_empty(), title) {
            (false, _) => message,
            (true, Some(t)) => t,
            (true, None) => "(no text)",
        };
        let mut body = json!({
            "message": text,
            "priority": self.priorities.get(severity),
        });
        if let Some(t) = title {
            body["title"] = t.into();
        }
        if !extras.is_empty() {
            body["extras"] = Value::Object(extras);
        }
        Content::Webhook {
            body: body.to_string(),
            content_type: JSON.into(),
            message: None,
        }
    }
}

impl ChannelKind for GotifySettings {
    fn name(&self) -> &'static str {
        "gotify"
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

    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        Some(self.body(Some(title), message, severity, None))
    }

    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        let mut c = self.body(
            m.subject.as_deref(),
            &m.text,
            m.severity,
            m.map_url.as_deref(),
        );
        if let Content::Webhook { message, .. } = &mut c {
            *message = m.digested.then_some(m.text);
        }
        vec![("msg", c)]
    }

    fn test_content(&self, text: String) -> Content {
        self.body(Some("trackrelay test"), &text, Severity::Normal, None)
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(GotifyChannel {
            client: http_client(self.timeout)?,
            s: self.clone(),
        }))
    }
}

/// Sends through one pooled HTTP client.
pub struct GotifyChannel {
    client: reqwest::Client,
    s: GotifySettings,
}

#[async_trait]
impl Channel for GotifyChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Webhook { body, .. } = &n.content else {
            return Err(SendError::permanent(
                "gotify channel got a message rendered for another kind",
            ));
        };
        let mut token = reqwest::header::HeaderValue::from_str(self.s.token.expose())
            .map_err(|_| SendError::permanent("gotify: the token is not a valid header value"))?;
        token.set_sensitive(true);
        let resp = self
            .client
            .post(self.s.url.clone())
            .header(CONTENT_TYPE, JSON)
            .header(TOKEN_HEADER, token)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| SendError::transient(format!("gotify: {}", http_failure(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Sent::default());
        }
        let (retry_after, text) = super::refusal(resp).await;
        // Should the server ever echo the token, it is cut out.
        let secret = self.s.token.expose();
        Err(match classify(status, retry_after, &text) {
            SendError::Transient {
                reason,
                retry_after,
            } => SendError::Transient {
                reason: reason.replace(secret, "***"),
                retry_after,
            },
            SendError::Permanent { reason } => SendError::permanent(reason.replace(secret, "***")),
        })
    }
}

/// Gotify's error body: `{"error":"Unauthorized","errorCode":401,"errorDescription":"…"}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorDescription")]
    description: Option<String>,
}

/// Whether a failed send is worth retrying, and why it failed: 408, 429 and 5xx are transient; 400 (a
/// message Gotify refuses), 401 (an unknown token, or a client token), 403 (a user's login instead of an
/// application token) and every other status are permanent.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> SendError {
    let detail = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|e| e.description)
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let reason = if detail.is_empty() {
        format!("gotify: HTTP {status}")
    } else {
        format!("gotify: HTTP {status}: {}", detail.trim())
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        SendError::Transient {
            reason,
            retry_after,
        }
    } else {
        SendError::permanent(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<GotifySettings, Vec<String>> {
        GotifySettings::compile(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn settings_are_checked() {
        let s = settings("{ url: \"https://push.example/gotify\", token: A1 }").unwrap();
        assert_eq!(s.url.as_str(), "https://push.example/gotify/message");
        assert_eq!(s.priorities.get(Severity::Critical), 10);
        assert_eq!(s.priorities.get(Severity::Normal), 5);
        let e = settings("{ priorities: { low: 11 } }").unwrap_err();
        assert_eq!(
            e,
            [
                "url is missing: the Gotify server's address",
                "token is missing: a Gotify application token",
                "priorities.low: 11 is out of range (0 to 10)",
            ]
        );
    }

    #[test]
    fn the_body_has_priority_markdown_and_click() {
        let s =
            settings("{ url: \"http://g\", token: A1, markdown: true, priorities: { high: 9 } }")
                .unwrap();
        let Content::Webhook { body, .. } = s.body(
            Some("Theft"),
            "moved",
            Severity::High,
            Some("https://map/x"),
        ) else {
            unreachable!()
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["priority"], 9);
        assert_eq!(v["title"], "Theft");
        assert_eq!(
            v["extras"]["client::display"]["contentType"],
            "text/markdown"
        );
        assert_eq!(
            v["extras"]["client::notification"]["click"]["url"],
            "https://map/x"
        );
        assert!(
            !body.contains("A1"),
            "the token is a header, added when sent"
        );
    }

    #[test]
    fn failures_are_classified() {
        let unauthorized = classify(
            StatusCode::UNAUTHORIZED,
            None,
            r#"{"error":"Unauthorized","errorCode":401,"errorDescription":"you need to provide a valid access token or user credentials to access this api"}"#,
        );
        assert!(
            matches!(&unauthorized, SendError::Permanent { reason } if reason.ends_with("valid access token or user credentials to access this api")),
            "{unauthorized:?}"
        );
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, None, ""),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, "down"),
            SendError::Transient { .. }
        ));
        assert!(matches!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                ""
            ),
            SendError::Transient {
                retry_after: Some(_),
                ..
            }
        ));
    }
}
