//! Channels: where notifications go. One narrow trait, [`Channel::send`], whose error says whether a
//! retry can help; retries, logging and metrics are written once around it, in [`crate::deliver`].
//!
//! Adding a channel means one new file here (settings, defaults, `send`) and one arm in each match below.

pub mod email;
pub mod log;
pub mod telegram;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config_raw::RawChannel;
use crate::notification::Notification;
use crate::render::Escape;
use crate::retry::RetryPolicy;

/// Every channel waits at most this long for its peer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: a timeout, a refused connection, a 5xx, a 429, an SMTP 4xx.
    #[error("{reason}")]
    Transient {
        /// What happened (no secrets).
        reason: String,
        /// How long the peer asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: a 4xx, an unknown chat, an SMTP 5xx, a bad address.
    #[error("{reason}")]
    Permanent {
        /// What happened (no secrets).
        reason: String,
    },
}

impl SendError {
    /// A transient error without a requested delay.
    pub fn transient(reason: impl Into<String>) -> SendError {
        SendError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError::Permanent {
            reason: reason.into(),
        }
    }
}

/// A destination that can send a rendered notification.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Sends one notification; `Ok` only once the peer has accepted it.
    async fn send(&self, n: &Notification) -> Result<(), SendError>;
}

/// A channel's validated settings.
#[derive(Debug)]
pub enum ChannelKind {
    /// Standard output.
    Log,
    /// SMTP.
    Email(email::EmailSettings),
    /// Telegram Bot API.
    Telegram(telegram::TelegramSettings),
    /// HTTP webhook.
    Webhook(webhook::WebhookSettings),
}

/// A configured channel.
#[derive(Debug)]
pub struct ChannelConfig {
    /// Its name.
    pub name: String,
    /// Kind and settings.
    pub kind: ChannelKind,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Default message template source.
    pub template: String,
    /// Default recipients (rendered literally), if any.
    pub default_to: Vec<String>,
    /// Rate limit per recipient.
    pub rate_limit: Option<crate::noise::RateLimit>,
}

impl ChannelConfig {
    /// Validates a raw channel; every problem is returned.
    pub fn compile(
        name: &str,
        raw: RawChannel,
        default_retry: &RetryPolicy,
    ) -> Result<ChannelConfig, Vec<String>> {
        let rate_limit = match &raw {
            RawChannel::Log { rate_limit, .. } => rate_limit.clone(),
            RawChannel::Email(r) => r.rate_limit.clone(),
            RawChannel::Telegram(r) => r.rate_limit.clone(),
            RawChannel::Webhook(r) => r.rate_limit.clone(),
        };
        let rate_limit = match rate_limit {
            None => None,
            Some(r) if r.max == 0 || r.per.is_zero() || r.max > crate::noise::MAX_RATE => {
                return Err(vec![format!(
                    "rate_limit: `max` must be 1 to {} and `per` more than zero",
                    crate::noise::MAX_RATE
                )])
            }
            Some(r) => Some(crate::noise::RateLimit {
                max: r.max,
                per: r.per,
                over: r.over.unwrap_or(crate::noise::Over::Wait),
            }),
        };
        let (kind, template, default_to, retry) = match raw {
            RawChannel::Log {
                template, retry, ..
            } => (
                ChannelKind::Log,
                template.unwrap_or_else(|| log::DEFAULT_TEMPLATE.into()),
                vec![],
                retry,
            ),
            RawChannel::Email(raw) => {
                let retry = raw.retry.clone();
                let s = email::EmailSettings::compile(&raw)?;
                let to = s.to.clone();
                let t = raw
                    .template
                    .unwrap_or_else(|| email::DEFAULT_TEMPLATE.into());
                (ChannelKind::Email(s), t, to, retry)
            }
            RawChannel::Telegram(raw) => {
                let retry = raw.retry.clone();
                let s = telegram::TelegramSettings::compile(&raw)?;
                let to = s.chat_id.iter().cloned().collect();
                let t = raw
                    .template
                    .unwrap_or_else(|| s.parse_mode_default_template().into());
                (ChannelKind::Telegram(s), t, to, retry)
            }
            RawChannel::Webhook(raw) => {
                let retry = raw.retry.clone();
                let t = raw
                    .template
                    .clone()
                    .unwrap_or_else(|| log::DEFAULT_TEMPLATE.into());
                let s = webhook::WebhookSettings::compile(raw)?;
                (ChannelKind::Webhook(s), t, vec![], retry)
            }
        };
        Ok(ChannelConfig {
            name: name.to_string(),
            kind,
            retry: default_retry.with(&retry),
            template,
            default_to,
            rate_limit,
        })
    }

    /// How message bodies for this channel are escaped.
    pub fn escape(&self) -> Escape {
        match &self.kind {
            ChannelKind::Telegram(t) => t.escape(),
            _ => Escape::Text,
        }
    }

    /// Whether deliveries to one recipient must be sent one at a time, in order.
    pub fn ordered(&self) -> bool {
        match &self.kind {
            ChannelKind::Log => false,
            // One mailbox and one chat read alarms in the order they happened.
            ChannelKind::Email(_) | ChannelKind::Telegram(_) => true,
            ChannelKind::Webhook(w) => w.ordered,
        }
    }

    /// Whether rules may name recipients (`to:`) for this channel.
    pub fn takes_recipients(&self) -> bool {
        matches!(self.kind, ChannelKind::Email(_) | ChannelKind::Telegram(_))
    }

    /// The kind's name, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Log => "log",
            ChannelKind::Email(_) => "email",
            ChannelKind::Telegram(_) => "telegram",
            ChannelKind::Webhook(_) => "webhook",
        }
    }
}

/// The live channels by name.
pub type Channels = BTreeMap<String, Arc<dyn Channel>>;

/// Builds the live channels of a configuration.
pub fn build_all(configs: &BTreeMap<String, ChannelConfig>) -> Result<Channels, BuildError> {
    let mut out: Channels = BTreeMap::new();
    for (name, c) in configs {
        let built: Result<Arc<dyn Channel>, String> = match &c.kind {
            ChannelKind::Log => Ok(Arc::new(log::LogChannel)),
            ChannelKind::Email(s) => email::EmailChannel::new(s).map(|c| Arc::new(c) as _),
            ChannelKind::Telegram(s) => telegram::TelegramChannel::new(s).map(|c| Arc::new(c) as _),
            ChannelKind::Webhook(s) => webhook::WebhookChannel::new(s).map(|c| Arc::new(c) as _),
        };
        let ch = built.map_err(|reason| BuildError {
            channel: name.clone(),
            reason,
        })?;
        out.insert(name.clone(), ch);
    }
    Ok(out)
}

/// A channel that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("channel '{channel}': {reason}")]
pub struct BuildError {
    /// Channel name.
    pub channel: String,
    /// What failed.
    pub reason: String,
}

/// A test message for a channel (`trackrelay send-test`, `POST /api/channels/{name}/test`), to `to` or
/// the channel's default recipient.
pub fn test_notification(cfg: &ChannelConfig, to: Option<&str>) -> Result<Notification, String> {
    use crate::notification::{Content, Origin, ParseMode};
    use crate::render::{escape_html, escape_markdown_v2, html_page};
    let recipient = match (to, cfg.default_to.first()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) if cfg.takes_recipients() => {
            return Err(format!(
                "channel '{}' has no default recipient; name one with `to`",
                cfg.name
            ))
        }
        (None, None) => String::new(),
    };
    let text = format!("trackrelay test message: channel '{}' works.", cfg.name);
    let content = match &cfg.kind {
        ChannelKind::Log => Content::Log { text },
        ChannelKind::Email(_) => Content::Email {
            subject: "trackrelay test message".into(),
            html: html_page(&escape_html(&text)),
            text,
        },
        ChannelKind::Telegram(t) => Content::TelegramText {
            text: match t.parse_mode {
                ParseMode::Html => escape_html(&text),
                ParseMode::MarkdownV2 => escape_markdown_v2(&text),
                ParseMode::Plain => text,
            },
            parse_mode: t.parse_mode,
        },
        ChannelKind::Webhook(w) => Content::Webhook {
            body: serde_json::json!({ "message": text, "test": true }).to_string(),
            content_type: w.content_type.clone(),
            message: Some(text),
        },
    };
    let nonce: u64 = rand::random();
    Ok(Notification {
        key: format!("tr-test-{nonce:016x}"),
        channel: cfg.name.clone(),
        recipient,
        content,
        origin: Origin {
            source: "test".into(),
            rule: "send-test".into(),
            ..Default::default()
        },
    })
}

/// An HTTP client for a channel, with its timeout and a connect timeout of at most 10 s.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Why an HTTP request failed, in words, built from the error's sources only: reqwest's own message
/// carries the URL, and URLs hold secrets (a bot token, the path of a Slack hook).
pub(crate) fn http_failure(e: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        src = inner.source();
    }
    out
}

/// Parses an HTTP `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
