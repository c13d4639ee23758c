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

/// The columns a [`PeerMessage`] is read from, in its fields' order (both backends).
pub(super) const PEER_COLUMNS: &str =
    "id, incident_ref, channel, recipient, peer_ref, content, peer_shown, device_id, created_at";

/// The deliveries [`super::Store::active_peer_messages`] lists: with a peer ref, of an incident, not
/// final ([`SHOWN_FINAL`]). Written out, not built from [`SHOWN_FINAL`]: each backend's migration
/// indexes exactly this condition (`deliveries_peer`), and a planner uses a partial index only for a
/// query whose condition implies the index's.
pub(super) const ACTIVE_PEER: &str = "peer_ref IS NOT NULL AND incident_ref IS NOT NULL \
     AND (peer_shown IS NULL OR peer_shown NOT IN ('resolved', 'stopped'))";

/// Most messages [`super::Store::active_peer_messages`] lists when asked for 0.
pub(super) const ACTIVE_PEER_DEFAULT_LIMIT: usize = 100;

/// The row limit of an [`super::Store::active_peer_messages`] call.
pub(super) fn active_limit(limit: usize) -> i64 {
    if limit == 0 {
        ACTIVE_PEER_DEFAULT_LIMIT as i64
    } else {
        limit.min(i64::MAX as usize) as i64
    }
}

// Leases (`Store::try_lease`): a lease is held while `now_ms < until_ms`; at `until_ms` it has run out
// (as a delivery's claim lease, taken back at `lease_until <= now`). Taking, renewing and taking over
// an expired lease are one upsert whose update is conditional: the row is locked (PostgreSQL) or the
// writer is alone (SQLite) while the condition is checked, so two instances asking at the same
// instant never both get it.

#[cfg(test)]
mod tests {
    use super::*;

    /// The condition written out names exactly the final values.
    #[test]
    fn the_active_condition_excludes_exactly_the_final_values() {
        let list = ACTIVE_PEER
            .split("NOT IN (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap();
        let named: Vec<&str> = list.split(", ").map(|s| s.trim_matches('\'')).collect();
        assert_eq!(named, SHOWN_FINAL);
    }

    #[test]
    fn zero_asks_for_the_default_limit() {
        assert_eq!(active_limit(0), 100);
        assert_eq!(active_limit(7), 7);
    }
}
