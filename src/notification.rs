//! What the relay sends: a [`Notification`] is one rendered message for one channel and recipient,
//! stored in the outbox as it is and sent, possibly many times, under one idempotency key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Telegram parse modes the relay renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseMode {
    /// Telegram HTML (`<b>`, entities).
    Html,
    /// Telegram MarkdownV2 (every reserved character escaped).
    MarkdownV2,
    /// No formatting.
    Plain,
}

/// The rendered content, by channel kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// A line on standard output.
    Log {
        /// The message.
        text: String,
    },
    /// A mail with a plain text and an HTML part.
    Email {
        /// Subject.
        subject: String,
        /// Plain text part.
        text: String,
        /// HTML part.
        html: String,
        /// The rule's severity, sent as the mail's `Importance` and `X-Priority` (none: normal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        severity: Option<crate::severity::Severity>,
    },
    /// A Telegram message.
    TelegramText {
        /// The text, escaped for `parse_mode`.
        text: String,
        /// How the text is formatted.
        parse_mode: ParseMode,
        /// An incident message's button token: the message carries the buttons Acknowledge, Mute 1 h
        /// and Where is it?, whose callback data hold it (see `crate::channel::telegram::keyboard`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        buttons: Option<String>,
        /// Sent without sound (`disable_notification`): the channel's `silent` severities.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        silent: bool,
    },
    /// A Telegram map pin (sent after the message of the same event, in order).
    TelegramLocation {
        /// Latitude.
        latitude: f64,
        /// Longitude.
        longitude: f64,
        /// Sent as a live location for this many seconds (an incident's pin that follows the device).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        live_period: Option<u32>,
        /// Sent without sound, like its message.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        silent: bool,
    },
    /// An HTTP request body.
    Webhook {
        /// The body.
        body: String,
        /// Its content type.
        content_type: String,
        /// The rendered message the body was made with (what a digest lists).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A digest of grouped notifications: built from its items when sent
    /// ([`crate::noise::digest::build`]); channels never see this variant.
    Digest {
        /// Group key.
        group: String,
        /// Rule of the items.
        rule: String,
        /// Title template name, if the rule has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title_template: Option<String>,
        /// The first item's content: the digest's shape (kind, parse mode, content type).
        like: Box<Content>,
    },
}

impl Content {
    /// What a person reads of it: the kind (`mail`, `Telegram message`, ...), a title where there is
    /// one (a mail's subject, a request's content type) and the text (a request's JSON body pretty).
    pub fn describe(&self) -> (&'static str, Option<String>, String) {
        match self {
            Content::Log { text } => ("log line", None, text.clone()),
            Content::Email { subject, text, .. } => ("mail", Some(subject.clone()), text.clone()),
            Content::TelegramText { text, .. } => ("Telegram message", None, text.clone()),
            Content::TelegramLocation {
                latitude,
                longitude,
                ..
            } => ("Telegram map pin", None, format!("{latitude}, {longitude}")),
            Content::Webhook {
                body, content_type, ..
            } => {
                let pretty = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| body.clone());
                ("HTTP request", Some(content_type.clone()), pretty)
            }
            Content::Digest { group, rule, .. } => (
                "digest",
                None,
                format!("a digest of rule {rule}'s messages grouped by {group}, built when sent"),
            ),
        }
    }
}

/// Where a notification came from: carried to logs, the deliveries list and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// Source name (dedup namespace).
    pub source: String,
    /// Traccar event id.
    pub event_id: i64,
    /// Event type.
    pub event_type: String,
    /// Device id.
    pub device_id: i64,
    /// Device name.
    pub device_name: String,
    /// Rule name.
    pub rule: String,
    /// BikeTrax's `X-PowTxn`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// `X-Request-Id`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the relay received the event (unix ms).
    pub received_at_ms: i64,
}

/// One message to one recipient over one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Idempotency key: stable across retries and replays (`Idempotency-Key`, `Message-ID`).
    pub key: String,
    /// Channel name.
    pub channel: String,
    /// Recipient (address, chat id); empty where the channel has a single destination.
    pub recipient: String,
    /// Rendered content.
    pub content: Content,
    /// Where it came from.
    pub origin: Origin,
}

impl Notification {
    /// Deliveries with the same ordering key are sent one at a time, oldest first.
    pub fn order_key(&self, ordered: bool) -> Option<String> {
        ordered.then(|| format!("{}\u{1f}{}", self.channel, self.recipient))
    }
}

/// The idempotency key of (source, event, rule, target, channel, recipient, part): the same inputs always
/// give the same key, so a replayed or re-delivered event can be recognised by the receiver.
pub fn idempotency_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    format!("tr-{}", hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = idempotency_key(&["traccar", "1", "theft", "0", "phone", "42"]);
        assert_eq!(
            a,
            idempotency_key(&["traccar", "1", "theft", "0", "phone", "42"])
        );
        assert_ne!(
            a,
            idempotency_key(&["traccar", "1", "theft", "0", "phone", "43"])
        );
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(idempotency_key(&["ab", "c"]), idempotency_key(&["a", "bc"]));
        assert_eq!(a.len(), 3 + 32);
    }
}
