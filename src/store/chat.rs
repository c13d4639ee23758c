//! What two-way chat (Telegram's buttons, commands and live locations) keeps in the store, written once
//! for every backend: the messages a peer gave an id to ([`PeerMessage`]: what is edited when an
//! incident changes, and the live pins that follow a device), the last update a bot handled, and the
//! lease that lets one instance of several poll a bot.

/// A delivered message of an incident that its peer gave an id to (a Telegram `message_id`): edited
/// when the incident is acknowledged or resolved; a live pin is moved, then stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerMessage {
    /// The delivery's row id.
    pub delivery_id: i64,
    /// The incident it belongs to.
    pub incident_ref: i64,
    /// Channel name.
    pub channel: String,
    /// Recipient (the chat id).
    pub recipient: String,
    /// The peer's id of the message.
    pub peer_ref: String,
    /// The stored notification (JSON), as sent.
    pub payload: String,
    /// What the message shows now (set by [`super::Store::set_peer_shown`]); `None`: as sent.
    pub shown: Option<String>,
    /// The device of the event.
    pub device_id: i64,
    /// When the delivery was made, unix ms.
    pub created_at_ms: i64,
}

/// The `shown` values after which a message is never touched again: its incident was resolved and the
/// message says so, or the live pin was stopped.
pub const SHOWN_FINAL: [&str; 2] = ["resolved", "stopped"];
