//! An incident's state as the store keeps it (versioned JSON): its key, when it opened, the events it
//! joined and where the device was last seen, the steps done, and whether it is open, acknowledged or
//! resolved, by whom and how.

use serde::{Deserialize, Serialize};

use crate::event::Envelope;

/// The version of the stored form [`IncidentState::to_json`] writes. Fields are added with defaults
/// without a new version (older rows read as before, unknown fields are ignored); the version goes up
/// only when a field changes meaning, and a version newer than this one is refused by
/// [`IncidentState::from_json`] rather than misread.
pub const STATE_VERSION: u32 = 1;

fn first_version() -> u32 {
    1
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentState {
    /// Version of the stored form ([`STATE_VERSION`]).
    #[serde(default = "first_version")]
    pub version: u32,
    /// The key events join it by (`theft-42`).
    pub key: String,
    /// The rule that opened it: its policy schedules the incident.
    pub rule: String,
    /// When it opened (arrival of its first event), unix ms; repeats and escalations count from here.
    pub opened_at_ms: i64,
    /// Arrival of its latest event, unix ms; `resolve_after` counts from here.
    pub last_event_at_ms: i64,
    /// Events joined, the first included.
    pub events: u64,
    /// Repeat steps done: the last repeat's number, sent or passed over when catching up.
    #[serde(default)]
    pub repeats_done: u32,
    /// Escalation steps done, in order.
    #[serde(default)]
    pub escalations_done: u32,
    /// The first position known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Sighting>,
    /// The latest position known (by the fix's own time: a late event does not move it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Sighting>,
    /// Open, acknowledged or resolved.
    pub status: Status,
}

/// Where the device was, and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// When (the fix's own time, else the event's arrival), unix ms.
    pub at_ms: i64,
}

impl Sighting {
    /// The event's position, when it is a place on a map (not 0,0 nor out of range); dated by its fix,
    /// else by its arrival `received_at_ms`.
    pub fn of(env: &Envelope, received_at_ms: i64) -> Option<Sighting> {
        let p = env.position.as_ref()?;
        let (lat, lon) = p.map_point().ok()?;
        let at_ms = p
            .fix_time
            .map(|t| t.timestamp_millis())
            .unwrap_or(received_at_ms);
        Some(Sighting { lat, lon, at_ms })
    }
}

/// Open, acknowledged or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Status {
    /// Repeating and escalating.
    Open,
    /// Someone knows: no more repeats or escalations; events still join it until it is resolved.
    Acknowledged(Ack),
    /// Closed: the key's next event opens a new incident.
    Resolved {
        /// How it closed.
        how: Resolution,
        /// When, unix ms.
        at_ms: i64,
        /// The acknowledgement before it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<Ack>,
    },
}

impl Status {
    /// Whether the incident is closed.
    pub fn is_resolved(&self) -> bool {
        matches!(self, Status::Resolved { .. })
    }
}

/// An acknowledgement: who, how, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who (a recipient's name or address, an admin, the CLI's user).
    pub by: String,
    /// Through what.
    pub via: AckSource,
    /// When, unix ms.
    pub at_ms: i64,
}

/// Where an acknowledgement or a manual resolution came from. A new way to acknowledge (a chat button,
/// a push action) is one more variant; the last three are listed before their sources exist so that
/// state written by a version that has them reads back in this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckSource {
    /// The link in a message (`/ack/{token}`).
    Link,
    /// The admin API.
    Api,
    /// `trackrelay incidents ack`.
    Cli,
    /// A Telegram button.
    Telegram,
    /// An ntfy action.
    Ntfy,
    /// A Pushover acknowledgement.
    Pushover,
    /// The web console.
    Console,
}

/// How an incident closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolution {
    /// An event matched the rule's `resolve_on`.
    ResolveOn,
    /// No event joined it for `resolve_after`.
    ResolveAfter,
    /// A person closed it.
    Manual {
        /// Who.
        by: String,
        /// Through what.
        via: AckSource,
    },
    /// Its rule was removed from the configuration, or lost its `incident:` section.
    RuleRemoved,
}

/// A stored incident state that this version cannot use.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Written by a newer version whose fields mean something else.
    #[error("incident state of version {0}; this version reads up to {max}", max = STATE_VERSION)]
    Newer(u32),
    /// Not an incident state.
    #[error("unreadable incident state: {0}")]
    Unreadable(#[from] serde_json::Error),
}

impl IncidentState {
    /// The stored form (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an incident state always serialises")
    }

    /// Reads a stored state. Unlike noise state, an unreadable incident is not taken for a fresh one
    /// (that would open a second incident for its key): the caller leaves the row alone and says so.
    pub fn from_json(json: &str) -> Result<IncidentState, StateError> {
        // The version first: a newer form may not parse as this one at all.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "first_version")]
            version: u32,
        }
        let Version { version } = serde_json::from_str(json)?;
        if version > STATE_VERSION {
            return Err(StateError::Newer(version));
        }
        Ok(serde_json::from_str(json)?)
    }
}
