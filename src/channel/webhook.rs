//! The `webhook` channel: an HTTP request per notification (reqwest), with an `Idempotency-Key` that is
//! stable across retries and an optional HMAC-SHA256 signature so the receiver can verify the sender.
//! With a chat `preset:` (see [`super::preset`]) the body is the chat's own, built from the message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use sha2::Sha256;

use super::preset::{self, Preset};
use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Facts, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::render::Escape;
use crate::secret::Secret;
use crate::severity::Severity;

/// Header carrying `sha256=<hex HMAC of the body>`.
pub const SIGNATURE_HEADER: &str = "x-trackrelay-signature";
/// Content type of the default body.
pub const JSON: &str = "application/json";

/// Webhook channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Target URL.
    pub url: String,
    /// HTTP method (default POST).
    pub method: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; JSON-escaped when the content type is JSON. Default: the event plus the message.
    pub body: Option<String>,
    /// Content type (default `application/json`).
    pub content_type: Option<String>,
    /// Default message template (`{{ message }}` in the body).
    pub template: Option<String>,
    /// Secret for the `X-Trackrelay-Signature` HMAC-SHA256 header.
    pub secret: Option<String>,
    /// Request timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Keep deliveries to this webhook in order (one at a time). Default false.
    pub ordered: Option<bool>,
    /// Retry overrides.
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
    /// A chat's native body: `slack`, `mattermost`, `discord`, `teams` or `googlechat`.
    pub preset: Option<String>,
    /// With a preset: put before critical messages (default per chat; empty: none).
    pub mention: Option<String>,
}

impl Section for RawWebhook {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(WebhookSettings::compile(self)?))
    }
}

/// Validated webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Target.
    pub url: Url,
    /// Method.
    pub method: Method,
    /// Extra headers.
    pub headers: HeaderMap,
    /// Body template source; `None` = the default JSON document.
    pub body: Option<String>,
    /// Content type of the body.
    pub content_type: String,
    /// HMAC secret.
    pub secret: Option<Secret>,
    /// Timeout.
    pub timeout: Duration,
    /// One request at a time, in order.
    pub ordered: bool,
    /// The chat whose native body is sent when there is no body template.
    pub preset: Option<Preset>,
    /// With a preset: the mention of critical messages; empty: none.
    pub mention: String,
}

impl WebhookSettings {
    /// Validates raw settings.
    pub fn compile(raw: RawWebhook) -> Result<WebhookSettings, Vec<String>> {
        let mut errors = Vec::new();
        let mut url = match Url::parse(&raw.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(u) => {
                errors.push(format!("url: scheme `{}` is not http or https", u.scheme()));
                None
            }
            // The URL may hold a token (Slack, Mattermost): say what is wrong, not what it is.
            Err(e) => {
                errors.push(format!("url: not a valid URL ({e})"));
                None
            }
        };
        let method = raw.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| errors.push(format!("method: `{method}` is not an HTTP method")))
            .ok();
        let mut headers = HeaderMap::new();
        let mut content_type = raw.content_type.clone();
        for (k, v) in &raw.headers {
            // A Content-Type among the headers is the body's content type, not a second header.
            if k.eq_ignore_ascii_case("content-type") {
                content_type.get_or_insert_with(|| v.clone());
                continue;
            }
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(mut v)) => {
                    v.set_sensitive(true);
                    headers.insert(k, v);
                }
                (Err(_), _) => errors.push(format!("headers: `{k}` is not a valid header name")),
                (_, Err(_)) => errors.push(format!(
                    "headers: the value of `{k}` is not a valid header value"
                )),
            }
        }
        let json = is_json(content_type.as_deref().unwrap_or(JSON));
        let preset = preset::compile(
            raw.preset.as_deref(),
            raw.mention.as_deref(),
            json || raw.body.is_some(),
            url.as_mut(),
            &mut errors,
        );
        match (url, method) {
            (Some(url), Some(method)) if errors.is_empty() => Ok(WebhookSettings {
                url,
                method,
                headers,
                body: raw.body,
                content_type: content_type.unwrap_or_else(|| JSON.into()),
                secret: raw.secret.filter(|s| !s.is_empty()).map(Secret),
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
                ordered: raw.ordered.unwrap_or(false),
                mention: preset.as_ref().map(|p| p.1.clone()).unwrap_or_default(),
                preset: preset.map(|p| p.0),
            }),
            _ => Err(errors),
        }
    }

    /// Whether the body is JSON (and its template JSON-escaped).
    pub fn is_json(&self) -> bool {
        is_json(&self.content_type)
    }

    /// The preset that makes the body: set, and no body template.
    fn native(&self) -> Option<Preset> {
        self.preset.filter(|_| self.body.is_none())
    }

    /// The preset's body of a message.
    fn preset_body(&self, p: Preset, m: &Message<'_>) -> String {
        let critical = m.severity == Severity::Critical;
        preset::body(
            p,
            &preset::Post {
                title: m.subject.as_deref().unwrap_or("trackrelay"),
                text: &m.text,
                severity: m.severity,
                mention: Some(self.mention.as_str()).filter(|s| critical && !s.is_empty()),
                map_url: m.map_url.as_deref(),
                ack_url: m.ack_url.as_deref(),
            },
        )
    }
}

/// Whether a content type is JSON.
fn is_json(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.starts_with(JSON) || ct.contains("+json")
}

impl ChannelKind for WebhookSettings {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn default_template(&self) -> &'static str {
        match self.preset {
            Some(_) => preset::DEFAULT_TEMPLATE,
            None => super::log::DEFAULT_TEMPLATE,
        }
    }

    /// A preset's messages have a title.
    fn subject(&self) -> Option<&str> {
        self.preset.map(|_| preset::DEFAULT_SUBJECT)
    }

    /// A preset's body has the acknowledgement link as a button or link of its own.
    fn ack_action(&self) -> bool {
        self.native().is_some()
    }

    /// A preset's digest: a message of its own, titled, listing the lines.
    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        let p = self.native()?;
        let post = preset::Post {
            title,
            text: message,
            severity,
            mention: None,
            map_url: None,
            ack_url: None,
        };
        Some(Content::Webhook {
            body: preset::body(p, &post),
            content_type: self.content_type.clone(),
            message: Some(format!("{title}\n{message}")),
        })
    }

    fn ordered(&self) -> bool {
        self.ordered
    }

    fn body_template(&self) -> Option<(&str, Escape)> {
        let escape = if self.is_json() {
            Escape::Json
        } else {
            Escape::Text
        };
        self.body.as_deref().map(|b| (b, escape))
    }

    /// The body template's body, or the default one; the message too where a digest may list it.
    fn content(&self, mut m: Message<'_>) -> Vec<(&'static str, Content)> {
        let body = match (m.body.take(), self.preset) {
            (Some(b), _) => b,
            (None, Some(p)) => self.preset_body(p, &m),
            (None, None) => default_body(&m.text, &m.facts),
        };
        vec![(
            "msg",
            Content::Webhook {
                body,
                content_type: self.content_type.clone(),
                message: m.digested.then(|| match self.preset {
                    Some(_) => preset::digest_line(m.subject.as_deref(), &m.text),
                    None => m.text,
                }),
            },
        )]
    }

    fn test_content(&self, text: String) -> Content {
        let body = match self.preset {
            Some(p) => preset::body(
                p,
                &preset::Post {
                    title: "trackrelay test",
                    text: &text,
                    severity: Severity::Normal,
                    mention: None,
                    map_url: None,
                    ack_url: None,
                },
            ),
            None => serde_json::json!({ "message": text, "test": true }).to_string(),
        };
        Content::Webhook {
            body,
            content_type: self.content_type.clone(),
            message: Some(text),
        }
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(WebhookChannel::new(self)?))
    }
}

/// The default body: the rendered message plus the event exactly as received.
fn default_body(message: &str, f: &Facts<'_>) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        message: &'a str,
        rule: &'a str,
        channel: &'a str,
        source: &'a str,
        txn: Option<&'a str>,
        /// Embedded byte for byte: key order, numbers and spacing as the sender wrote them.
        event: &'a serde_json::value::RawValue,
    }
    let fallback = serde_json::value::RawValue::from_string("null".into()).expect("null is JSON");
    let parsed: Option<&serde_json::value::RawValue> = serde_json::from_str(f.raw).ok();
    serde_json::to_string(&Body {
        message,
        rule: f.rule,
        channel: f.channel,
        source: f.source,
        txn: f.txn,
        event: parsed.unwrap_or(&fallback),
    })
    .expect("the body always serialises")
}

/// Sends through one pooled HTTP client.
pub struct WebhookChannel {
    client: reqwest::Client,
    s: WebhookSettings,
}

impl WebhookChannel {
    /// Builds the client.
    pub fn new(s: &WebhookSettings) -> Result<WebhookChannel, String> {
        let client = http_client(s.timeout)?;
        Ok(WebhookChannel {
            client,
            s: s.clone(),
        })
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Channel for WebhookChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Webhook {
            body, content_type, ..
        } = &n.content
        else {
            return Err(SendError::permanent(
                "webhook channel got a message rendered for another kind",
            ));
        };
        let mut req = self
            .client
            .request(self.s.method.clone(), self.s.url.clone())
            .headers(self.s.headers.clone())
            .header(CONTENT_TYPE, content_type.as_str())
            .header("idempotency-key", n.key.as_str())
            .header("x-trackrelay-event-id", n.origin.event_id.to_string());
        if let Some(txn) = &n.origin.txn {
            req = req.header("x-powtxn", txn.as_str());
        }
        if let Some(id) = &n.origin.request_id {
            req = req.header("x-request-id", id.as_str());
        }
        if let Some(secret) = &self.s.secret {
            req = req.header(
                SIGNATURE_HEADER,
                signature(secret.expose(), body.as_bytes()),
            );
        }
        let resp = match req.body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(SendError::transient(format!(
                    "webhook: {}",
                    http_failure(&e)
                )))
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(Sent::default());
        }
        let (retry_after, text) = super::refusal(resp).await;
        let retry_after =
            retry_after.or_else(|| self.s.preset.and_then(|p| preset::retry_after(p, &text)));
        let snippet: String = text.chars().take(200).collect();
        let reason = format!(
            "webhook: HTTP {status}{}{}",
            if snippet.is_empty() { "" } else { ": " },
            snippet.trim()
        );
        let permanent = self
            .s
            .preset
            .is_some_and(|p| preset::permanent_server_error(p, status));
        if !permanent
            && (status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error())
        {
            Err(SendError::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(SendError::permanent(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc_4231_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
