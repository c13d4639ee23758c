//! What a channel is, apart from how it talks to its peer: the [`Channel`] trait the senders implement,
//! the [`ChannelKind`] trait each kind's validated settings implement (how its messages are escaped,
//! shaped into [`Content`] and ordered, and how its sender is built), and a configured channel,
//! [`ChannelConfig`]. Pure: the senders (SMTP, Telegram, HTTP) are adapters in [`crate::channel`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config_raw::{RawRateLimit, RawRetry};
use crate::noise::{Over, RateLimit, MAX_RATE};
use crate::notification::{Content, Notification, Origin};
use crate::render::Escape;
use crate::retry::RetryPolicy;
use crate::severity::Severity;

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

/// What a peer said of a message it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// The peer's id of the message (Telegram's `message_id`, a Pushover emergency's receipt), where
    /// later edits need it. Kinds other than Telegram return one only for a message that is followed up
    /// (it is recorded, and listed among the active peer messages until made final).
    pub peer_ref: Option<String>,
}

/// A destination that can send a rendered notification.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Sends one notification; `Ok` only once the peer has accepted it.
    async fn send(&self, n: &Notification) -> Result<Sent, SendError>;
}

/// The live channels by name.
pub type Channels = BTreeMap<String, Arc<dyn Channel>>;

/// A kind of channel, as its validated settings: what the rest of the relay needs to know about it.
/// Each kind implements it in its own file in [`crate::channel`], beside its sender; the defaults
/// suit a kind with one destination, plain text and none of the optional parts. (`Any` lets a test
/// look at a kind's own settings.)
pub trait ChannelKind: Any + Debug + Send + Sync {
    /// The kind's name, as written in `type:` (for messages).
    fn name(&self) -> &'static str;

    /// The message template used where neither the channel nor the rule names one.
    fn default_template(&self) -> &'static str;

    /// How message templates are escaped.
    fn escape(&self) -> Escape {
        Escape::Text
    }

    /// Whether deliveries to one recipient must be sent one at a time, in order.
    fn ordered(&self) -> bool;

    /// `Some(default recipients)` for a kind whose rules may name recipients (`to:`); `None` for a kind
    /// with a single destination.
    fn recipients(&self) -> Option<&[String]> {
        None
    }

    /// `Some(default subject template)` for a kind whose messages have a subject line.
    fn subject(&self) -> Option<&str> {
        None
    }

    /// Whether messages have an HTML part: the message template rendered again, HTML-escaped.
    fn html_part(&self) -> bool {
        false
    }

    /// Whether incident messages carry buttons (Acknowledge, Mute, Where is it?): a two-way chat whose
    /// presses the relay receives.
    fn buttons(&self) -> bool {
        false
    }

    /// Whether a person can acknowledge an incident from a message of this severity without a link
    /// (a Telegram button, a Pushover emergency's Acknowledge): `check` then does not ask for
    /// `public_url`.
    fn acknowledges(&self, severity: Severity) -> bool {
        let _ = severity;
        self.buttons()
    }

    /// `Some(the channel's default)` for a kind that can send the event's position as a map pin.
    fn location(&self) -> Option<bool> {
        None
    }

    /// A template (with its escaping) that wraps the rendered message into the request body:
    /// `{{ message }}` is the message, and for a digest `digest` and `count` are set too.
    fn body_template(&self) -> Option<(&str, Escape)> {
        None
    }

    /// Whether the kind carries an incident's acknowledgement link as an action of its own (a push
    /// notification's button, a callback): the message text then does not end with the link. The
    /// kind finds it in [`Message::ack_url`].
    fn ack_action(&self) -> bool {
        false
    }

    /// The content of a digest titled `title` listing `message` (the items' messages, one a line),
    /// as loud as `severity` (its rule's), for a kind whose body has a shape of its own (a push
    /// service's JSON); `None`: the digest is built from the shape of its first item
    /// ([`crate::noise::digest::build`]).
    fn digest(&self, title: &str, message: &str, severity: Severity) -> Option<Content> {
        let _ = (title, message, severity);
        None
    }

    /// The contents sent for one rendered message, each with its part name (`msg`, `loc`): the part is
    /// in the idempotency key, so its name must never change.
    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)>;

    /// The content of a test message saying `text`.
    fn test_content(&self, text: String) -> Content;

    /// Builds the live sender (no connection is made until the first send).
    fn connect(&self) -> Result<Arc<dyn Channel>, String>;
}

/// One target's message for one event, rendered: what a kind makes its contents from.
#[derive(Debug)]
pub struct Message<'a> {
    /// The message, from the target's template.
    pub text: String,
    /// The subject, on one line (kinds with a [`ChannelKind::subject`]).
    pub subject: Option<String>,
    /// The message rendered again HTML-escaped: the body of the HTML part (kinds with an
    /// [`ChannelKind::html_part`]).
    pub html: Option<String>,
    /// The request body made by the channel's [`ChannelKind::body_template`]; `None` when it has none
    /// or it failed (the kind then sends its default body).
    pub body: Option<String>,
    /// Where the event happened (latitude, longitude), when the target sends a map pin.
    pub pin: Option<(f64, f64)>,
    /// Send the pin as a live location for this many seconds (`location: live`, incident messages).
    pub live_period: Option<u32>,
    /// Whether a digest may list the message (its rule groups, or the channel's rate limit digests).
    pub digested: bool,
    /// The rule's severity: what a kind maps to its priority, sound or importance.
    pub severity: Severity,
    /// Whether the rule has an incident (a person must acknowledge): a push service's
    /// acknowledge-or-keep-ringing level is used only then.
    pub incident: bool,
    /// The incident's acknowledgement link for this target (`POST` acknowledges), when the rule has
    /// an incident and `public_url` is set.
    pub ack_url: Option<String>,
    /// A map link to the event's position, when it has one that is a place.
    pub map_url: Option<String>,
    /// The rule, the channel and the event as received, for a default body.
    pub facts: Facts<'a>,
}

/// Where a message comes from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Channel name.
    pub channel: &'a str,
    /// The name of the source that delivered the event.
    pub source: &'a str,
    /// `X-PowTxn`, if sent.
    pub txn: Option<&'a str>,
    /// The event exactly as received.
    pub raw: &'a str,
}

/// The keys every channel section has, whatever its kind.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// Default message template.
    pub template: Option<String>,
    /// Retry overrides.
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
}

impl Common {
    /// The keys every kind has, copied from a section.
    pub fn of(
        template: &Option<String>,
        retry: &RawRetry,
        rate_limit: &Option<RawRateLimit>,
    ) -> Common {
        Common {
            template: template.clone(),
            retry: retry.clone(),
            rate_limit: rate_limit.clone(),
        }
    }
}

/// A configured channel.
#[derive(Debug)]
pub struct ChannelConfig {
    /// Its name.
    pub name: String,
    /// Kind and settings.
    pub kind: Box<dyn ChannelKind>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Default message template source.
    pub template: String,
    /// Default recipients (rendered literally), if any.
    pub default_to: Vec<String>,
    /// Rate limit per recipient.
    pub rate_limit: Option<RateLimit>,
    /// The compiled [`ChannelKind::body_template`], by name (set when the configuration is compiled).
    pub body: Option<String>,
}

impl ChannelConfig {
    /// A channel from the keys every kind has and its kind's settings as compiled (a wrong rate limit
    /// is reported alone).
    pub fn new(
        name: &str,
        common: Common,
        kind: Result<Box<dyn ChannelKind>, Vec<String>>,
        default_retry: &RetryPolicy,
    ) -> Result<ChannelConfig, Vec<String>> {
        let rate_limit = rate_limit(common.rate_limit)?;
        let kind = kind?;
        Ok(ChannelConfig {
            name: name.to_string(),
            retry: default_retry.with(&common.retry),
            template: common
                .template
                .unwrap_or_else(|| kind.default_template().into()),
            default_to: kind.recipients().unwrap_or_default().to_vec(),
            rate_limit,
            body: None,
            kind,
        })
    }

    /// Whether rules may name recipients (`to:`) for this channel.
    pub fn takes_recipients(&self) -> bool {
        self.kind.recipients().is_some()
    }

    /// A test message (`trackrelay send-test`, `POST /api/channels/{name}/test`), to `to` or the
    /// channel's default recipient.
    pub fn test_notification(&self, to: Option<&str>) -> Result<Notification, String> {
        let recipient = match (to, self.default_to.first()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.clone(),
            (None, None) if self.takes_recipients() => {
                return Err(format!(
                    "channel '{}' has no default recipient; name one with `to`",
                    self.name
                ))
            }
            (None, None) => String::new(),
        };
        let text = format!("trackrelay test message: channel '{}' works.", self.name);
        let nonce: u64 = rand::random();
        Ok(Notification {
            key: format!("tr-test-{nonce:016x}"),
            channel: self.name.clone(),
            recipient,
            content: self.kind.test_content(text),
            origin: Origin {
                source: "test".into(),
                rule: "send-test".into(),
                ..Default::default()
            },
        })
    }
}

/// A rate limit as written, checked.
fn rate_limit(raw: Option<RawRateLimit>) -> Result<Option<RateLimit>, Vec<String>> {
    match raw {
        None => Ok(None),
        Some(r) if r.max == 0 || r.per.is_zero() || r.max > MAX_RATE => Err(vec![format!(
            "rate_limit: `max` must be 1 to {MAX_RATE} and `per` more than zero"
        )]),
        Some(r) => Ok(Some(RateLimit {
            max: r.max,
            per: r.per,
            over: r.over.unwrap_or(Over::Wait),
        })),
    }
}
