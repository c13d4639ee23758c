//! Durable storage behind one interface: accepted events (deduplicated by source and event id), the
//! outbox of deliveries and their state. SQLite ([`sqlite`]) is the embedded default, for one instance;
//! PostgreSQL ([`postgres`]) is shared by several instances (claims carry a lease that another
//! instance may take over once it runs out). The composition root ([`crate::app::open_store`]) picks
//! the backend the configuration names.
//!
//! What does not depend on the database is written once, above both backends: noise control inside the
//! accept transaction (`decide`), each delivery's row from its verdict (`rows`), and the other
//! operations' shared parts (`common`: outcomes, listing, replay, retention, silences; `browse`: the
//! listing's statement and the console's reads). Each backend keeps its SQL.

pub mod browse;
pub mod chat;
mod common;
mod decide;
pub mod incidents;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use browse::{ActivityBucket, DeliveryDetail};
pub use chat::PeerMessage;
pub use decide::{decide_noise, digest_content, noise_keys, with_note, NoiseOutcome};
pub use incidents::{
    DueIncident, Effect, IncidentFilter, IncidentOffer, IncidentOutcome, IncidentRow,
    IncidentWrite, NewToken, Notice, StoredEvent,
};
pub use rows::{completing, POSITION_COMPLETED, POSITION_HAD, POSITION_MISSING};

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::noise::silence::{NewSilence, Silence};
use crate::noise::{Gates, State, StateRow};
use crate::notification::Notification;

/// An event to accept, with the deliveries its rules produced.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Dedup namespace.
    pub source: String,
    /// Traccar event id.
    pub event_id: i64,
    /// Device id.
    pub device_id: i64,
    /// Event type.
    pub event_type: String,
    /// Receive time, unix ms: the clock deliveries are sent on.
    pub received_at_ms: i64,
    /// The time noise control judges the event at (dedup, cooldown and debounce windows), unix ms: the
    /// event's own time when it arrived late (a backfill, a sender's retry), else `received_at_ms`.
    /// See [`crate::noise::judged_at`].
    pub judged_at_ms: i64,
    /// `X-PowTxn`.
    pub txn: Option<String>,
    /// The body as received; empty for an event no rule matched, unless
    /// `storage.keep_unmatched_payloads` asks for it.
    pub payload: String,
    /// Deliveries to enqueue in the same transaction.
    pub deliveries: Vec<NewDelivery>,
    /// When set, deliveries without an ordering key are claimed in the same transaction, with this lease
    /// end (unix ms), and returned: the caller hands them to the worker without a claim round trip.
    pub claim_until: Option<i64>,
    /// A geofence transition that cancels a held opposite one (see [`crate::noise::DebounceProbe`]),
    /// whether or not any rule matched this event.
    pub debounce: Option<crate::noise::DebounceProbe>,
    /// The event refers to a position this copy lacks ([`crate::event::Envelope::lacks_position`]): a
    /// live-source copy whose position could not be had. A later copy of the same event that has its
    /// position (Traccar's webhook) is then not a plain duplicate: see [`completing`].
    pub position_missing: bool,
    /// What the event offers the incidents of its rules' keys, decided in the same transaction.
    pub incidents: Vec<IncidentOffer>,
}

/// A delivery to enqueue, its notification already serialised (by the caller, off the writer's thread).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Idempotency key: unique per event (a second delivery of the event under it is not stored). Keys
    /// hash their event's source and id, so those of different events never meet; both backends'
    /// schemas check the key per event, not across the table (SQLite's schema 4, PostgreSQL's 5).
    pub key: String,
    /// Channel.
    pub channel: String,
    /// Recipient.
    pub recipient: String,
    /// Rule.
    pub rule: String,
    /// Ordering key.
    pub order_key: Option<String>,
    /// Straight to dead letter, with this reason.
    pub dead: Option<String>,
    /// The [`Notification`] as JSON.
    pub content: String,
    /// Noise control: what the store decides before enqueueing (see [`crate::noise`]).
    pub gates: Gates,
    /// The incident it belongs to (set by the store: an acknowledgement cancels it while pending).
    pub incident_ref: Option<i64>,
}

/// What accepting did.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Stored, with this many deliveries enqueued.
    New {
        /// Deliveries enqueued.
        deliveries: usize,
        /// Those claimed at once (see [`NewEvent::claim_until`]).
        claimed: Vec<Claimed>,
        /// Deliveries noise control suppressed, grouped or deferred, by index in
        /// [`NewEvent::deliveries`].
        quieted: Vec<Quieted>,
        /// What the event did to its rules' incidents, one per offer.
        incidents: Vec<IncidentOutcome>,
    },
    /// The event was stored before; nothing was done.
    Duplicate,
}

/// A delivery that noise control did not let go at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quieted {
    /// Index in [`NewEvent::deliveries`].
    pub index: usize,
    /// What happened to it.
    pub status: Status,
    /// Why: the reason recorded with the delivery.
    pub reason: String,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// What to send: a [`Notification`] as JSON (see [`Claimed::notification`]).
    pub content: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When the delivery was created (or last replayed), unix ms.
    pub created_at_ms: i64,
    /// This claim's number on the row: every claim (at intake or by [`Store::claim`]) increments it,
    /// and unlike `attempts` nothing resets it (a replay starts the attempts afresh), so it names this
    /// claim alone. [`Store::finish`] records an outcome only while the row is still this claim.
    pub claim: i64,
}

impl Claimed {
    /// The notification to send.
    pub fn notification(&self) -> Result<Notification, serde_json::Error> {
        serde_json::from_str(&self.content)
    }

    /// Which claim an outcome of this send belongs to.
    pub fn claim_ref(&self) -> ClaimRef {
        ClaimRef {
            id: self.id,
            claim: self.claim,
            attempts: self.attempts,
        }
    }
}

/// The claim an outcome comes from: [`Store::finish`] records the outcome only if the delivery is
/// still in flight under this claim. Once a lease ran out and another instance claimed the delivery
/// again, the first sender's late outcome would otherwise undo the newer one (a `Retry` making a sent
/// delivery pending again, a third send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimRef {
    /// Row id.
    pub id: i64,
    /// The claim's number (see [`Claimed::claim`]).
    pub claim: i64,
    /// Attempts counted at the claim. Compared as well: an instance of an older version on the same
    /// database claims without advancing the claim number, but does count the attempt.
    pub attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The peer accepted it.
    Delivered,
    /// Try again at this time (unix ms).
    Retry {
        /// Next attempt, unix ms.
        at_ms: i64,
        /// What went wrong.
        error: String,
    },
    /// Give up.
    Dead {
        /// Why.
        error: String,
    },
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting to be sent (now or after a backoff).
    Pending,
    /// Being sent.
    Inflight,
    /// Sent.
    Done,
    /// Given up: dead letter.
    Dead,
    /// Not sent by noise control (silence, cooldown, dedup, debounce, schedule); the reason is recorded.
    Suppressed,
    /// Folded into a digest (the digest is a delivery of its own).
    Grouped,
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Inflight => "inflight",
            Status::Done => "done",
            Status::Dead => "dead",
            Status::Suppressed => "suppressed",
            Status::Grouped => "grouped",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "inflight" => Status::Inflight,
            "done" | "delivered" => Status::Done,
            "dead" => Status::Dead,
            "suppressed" => Status::Suppressed,
            "grouped" => Status::Grouped,
            _ => return None,
        })
    }
}

/// One delivery as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    /// Row id (what `replay` takes).
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// State.
    pub status: Status,
    /// Channel.
    pub channel: String,
    /// Recipient.
    pub recipient: String,
    /// Rule.
    pub rule: String,
    /// Traccar event id.
    pub event_id: i64,
    /// Event type.
    pub event_type: String,
    /// Device id.
    pub device_id: i64,
    /// Attempts made.
    pub attempts: u32,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// Next attempt, RFC 3339 (pending only).
    pub next_attempt_at: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Why noise control suppressed, grouped or deferred it.
    pub reason: Option<String>,
    /// `X-PowTxn` of the event.
    pub txn: Option<String>,
}

/// Which deliveries to list: every filter that is set applies (none set: every delivery). Each single
/// filter, and a page further down ([`Filter::before_id`]), is answered from an index (see
/// [`browse`]). [`Filter::since_ms`] and [`Filter::until_ms`] have none (a replay makes an old row
/// new again): they narrow what the others find, and alone they read back from the newest row (or
/// `before_id`) until the page is full or the outbox ends.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this state.
    pub status: Option<Status>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this device.
    pub device_id: Option<i64>,
    /// Only this rule (its exact name).
    pub rule: Option<String>,
    /// Only the messages of this incident (its opening message, repeats, escalations, notices).
    pub incident: Option<i64>,
    /// Only rows with a smaller id: the next page after a page whose last (oldest) row had this id
    /// (keyset pagination; rows stay ordered by id, newest first).
    pub before_id: Option<i64>,
    /// Only rows created (or last replayed) at or after this time, unix ms.
    pub since_ms: Option<i64>,
    /// Only rows created (or last replayed) before this time, unix ms.
    pub until_ms: Option<i64>,
    /// At most this many, newest first (0: 100).
    pub limit: usize,
}

/// Which deliveries to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// One delivery (dead, done or suppressed: "send it anyway").
    Id(i64),
    /// Every dead letter.
    AllDead,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Deliveries removed.
    pub deliveries: u64,
    /// Events removed.
    pub events: u64,
    /// Noise state rows and silences past their time removed.
    pub state: u64,
}

/// Storage failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The write queue is full: the store cannot keep up right now.
    #[error("storage is busy")]
    Busy,
    /// The store was shut down.
    #[error("storage is shut down")]
    Closed,
    /// The database could not be opened or migrated.
    #[error("cannot open the database at {path}: {reason}")]
    Open {
        /// Database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A database operation failed.
    #[error("database error: {0}")]
    Db(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached right now (a shared database restarting or down). Transient:
    /// the same call succeeds once it is back, without a restart.
    #[error("database unreachable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back.
    #[error("corrupt row {id}: {reason}")]
    Corrupt {
        /// Row id.
        id: i64,
        /// Why.
        reason: String,
    },
}

/// The storage contract shared by every backend.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores an event and its deliveries in one transaction, unless the (source, event id) was stored
    /// before. Returns only once committed (durable). Fails fast with [`StoreError::Busy`] when the
    /// write queue is full.
    async fn accept(&self, event: NewEvent) -> Result<Accepted, StoreError>;

    /// Claims up to `limit` due deliveries (status pending and next attempt due, or in flight with a
    /// lease that ran out; no earlier unfinished delivery with the same ordering key) for `lease`,
    /// marking them in flight. A delivery is never handed out twice while its lease runs, also not to
    /// two store objects (instances) on the same database.
    async fn claim(
        &self,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records how attempts ended, in one transaction. An outcome is recorded only if its delivery is
    /// still in flight under the claim it names; the others are stale (the lease ran out and the
    /// delivery was claimed again, or recovered) and are returned, changing nothing.
    async fn finish(
        &self,
        outcomes: Vec<(ClaimRef, Outcome)>,
        now_ms: i64,
    ) -> Result<Vec<ClaimRef>, StoreError>;

    /// The earliest next attempt after `now_ms`: a retry waiting for its backoff, or a claim whose lease
    /// runs out then. Deliveries due already but waiting behind an earlier one of their recipient are not
    /// counted: finishing that one wakes the worker anyway.
    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError>;

    /// The next-attempt time of the oldest delivery that is due at `now_ms` and still pending.
    async fn oldest_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError>;

    /// At startup: returns deliveries whose sender cannot be running any more to pending, and says how
    /// many. The embedded store has one process, so that is every delivery in flight (left by the
    /// previous run); a shared store takes back only those whose lease ran out, since the others may be
    /// being sent by a live instance (and are claimable anyway once their lease runs out).
    async fn recover(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Lists deliveries, newest first.
    async fn list(&self, filter: Filter) -> Result<Vec<DeliveryRow>, StoreError>;

    /// One delivery in full: its row as listed, the notification it sends, its event's stored body,
    /// its incident and digest. `None` when there is no such row (or retention removed it). (The
    /// console's reads default to failing, like the incidents' below: both backends implement them.)
    async fn delivery(&self, id: i64) -> Result<Option<DeliveryDetail>, StoreError> {
        let _ = id;
        Err(no_browsing())
    }

    /// Events received at or after `since_ms`, in buckets of `bucket_ms` by their receive time (a
    /// bucket starts at a multiple of `bucket_ms`; one below 1 is taken as 1), with their deliveries
    /// counted by current status: only buckets with an event, oldest first. Reads the events of the
    /// period (by their receive time) and each one's deliveries, never the whole outbox.
    async fn activity(
        &self,
        since_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<ActivityBucket>, StoreError> {
        let _ = (since_ms, bucket_ms);
        Err(no_browsing())
    }

    /// Per rule, how many events received at or after `since_ms` have a delivery of it (in any
    /// status; an event counts once per rule), by rule name. Only rules with such an event are
    /// listed. As cheap as [`Store::activity`].
    async fn rule_counts(&self, since_ms: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let _ = since_ms;
        Err(no_browsing())
    }

    /// Up to `limit` (0: 100) stored events, newest first, matched or not (an unmatched event's
    /// payload is empty unless `storage.keep_unmatched_payloads` kept it).
    async fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = limit;
        Err(no_browsing())
    }

    /// Stored events received in `[since_ms, until_ms)`, oldest first (by receive time, then row id),
    /// after `after` (the receive time and row id of the last one of the previous page), at most `limit`:
    /// the history a backtest replays.
    async fn history(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = (since_ms, until_ms, after, limit);
        Err(no_browsing())
    }

    /// One stored event by its row id ([`StoredEvent::id`]).
    async fn stored_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        let _ = id;
        Err(no_browsing())
    }

    /// Makes deliveries due again; returns how many.
    async fn replay(&self, which: Replay, now_ms: i64) -> Result<u64, StoreError>;

    /// Removes finished deliveries and events older than the retention periods.
    async fn prune(
        &self,
        now_ms: i64,
        retention: Duration,
        dead_retention: Duration,
    ) -> Result<Pruned, StoreError>;

    /// Number of deliveries by state.
    async fn counts(&self) -> Result<Vec<(Status, u64)>, StoreError>;

    /// Answers once the store has run a no-op the way it runs writes (SQLite: through the writer's
    /// queue; PostgreSQL: on a pooled connection): what `/readyz` asks, cheap whatever the outbox holds.
    /// The default asks for [`Store::counts`].
    async fn ping(&self) -> Result<(), StoreError> {
        self.counts().await.map(|_| ())
    }

    /// The items of a digest delivery, oldest first, as [`Notification`] JSON.
    async fn digest_items(&self, digest_id: i64) -> Result<Vec<String>, StoreError>;

    /// Noise state rows by key (read only: what `explain` shows).
    async fn noise_states(&self, keys: Vec<String>) -> Result<HashMap<String, State>, StoreError>;

    /// Stores a silence.
    async fn add_silence(&self, s: NewSilence, now_ms: i64) -> Result<Silence, StoreError>;

    /// Every silence not yet pruned, expired ones included, by id.
    async fn silences(&self) -> Result<Vec<Silence>, StoreError>;

    /// Ends a silence now (it stops applying at once); returns it as it is now.
    async fn expire_silence(&self, id: i64, now_ms: i64) -> Result<Silence, StoreError>;

    /// Incidents, newest first: live ones, or all. (The incident operations' defaults fail: both
    /// backends implement them; a test's stand-in store need not.)
    async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<IncidentRow>, StoreError> {
        let _ = filter;
        Err(no_incidents())
    }

    /// One incident by id.
    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>, StoreError> {
        let _ = id;
        Err(no_incidents())
    }

    /// The live (open or acknowledged) incident of a key.
    async fn live_incident(&self, key: &str) -> Result<Option<IncidentRow>, StoreError> {
        let _ = key;
        Err(no_incidents())
    }

    /// The incident an acknowledgement token (by its hash) belongs to, and who the link went to.
    async fn incident_by_token(
        &self,
        hash: &str,
    ) -> Result<Option<(IncidentRow, String)>, StoreError> {
        let _ = hash;
        Err(no_incidents())
    }

    /// Up to `limit` incidents whose timer is due at `now_ms`, soonest first, with their latest event
    /// and, where a notice is owed, their circle.
    async fn due_incidents(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueIncident>, StoreError> {
        let _ = (now_ms, limit);
        Err(no_incidents())
    }

    /// The earliest incident timer, due or not.
    async fn next_incident_at(&self) -> Result<Option<i64>, StoreError> {
        Err(no_incidents())
    }

    /// Writes an incident if it is still at the revision read (see [`IncidentWrite`]); `false`
    /// when another writer came first (nothing was written: read it again).
    async fn write_incident(&self, w: IncidentWrite) -> Result<bool, StoreError> {
        let _ = w;
        Err(no_incidents())
    }

    /// Makes the timers of the live incidents of these rules due now (their policy changed, or the
    /// rule is gone): the timer then runs them under the configuration in force. Bumps their revision,
    /// so that a write computed under the old policy is refused. Returns how many.
    async fn reschedule_incidents(
        &self,
        rules: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let _ = (rules, now_ms);
        Err(no_incidents())
    }

    /// Live incidents by status name (`open`, `acknowledged`).
    async fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(no_incidents())
    }

    /// The incident a button token (by its hash) belongs to, with the channel and the chat its message
    /// went to (`None` for a link token, which is not bound to a chat).
    async fn incident_by_button(
        &self,
        hash: &str,
    ) -> Result<Option<(IncidentRow, String, Option<String>)>, StoreError> {
        let _ = hash;
        Err(no_incidents())
    }

    /// Records the peer's ids of delivered messages (delivery row id, peer ref), e.g. Telegram's
    /// `message_id`: what later edits address.
    async fn record_peer_refs(&self, refs: Vec<(i64, String)>) -> Result<(), StoreError> {
        let _ = refs;
        Err(no_incidents())
    }

    /// Up to `limit` (0: 100) delivered messages of incidents that have a peer ref, are not final
    /// (`shown` not in [`chat::SHOWN_FINAL`]) and went through one of `channels` (none: no message),
    /// oldest first: what a follow-up edits, moves, polls or cancels. Each follow-up asks for its own
    /// channels, so that another kind's older messages never fill its batch.
    async fn active_peer_messages(
        &self,
        channels: &[String],
        limit: usize,
    ) -> Result<Vec<PeerMessage>, StoreError> {
        let _ = (channels, limit);
        Err(no_incidents())
    }

    /// Marks `stopped` (final) every message [`Store::active_peer_messages`] would list that went
    /// through none of `followed` (a channel removed, or no longer followed up) and was created before
    /// `created_before_ms` (a message made later may be another instance's, on a newer configuration
    /// that follows its channel); how many.
    async fn stop_peer_messages_except(
        &self,
        followed: &[String],
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let _ = (followed, created_before_ms);
        Err(no_incidents())
    }

    /// The delivered messages of one incident that have a peer ref, oldest first.
    async fn peer_messages(&self, incident_ref: i64) -> Result<Vec<PeerMessage>, StoreError> {
        let _ = incident_ref;
        Err(no_incidents())
    }

    /// Records what a message shows now (`acknowledged`, `resolved`, `stopped`).
    async fn set_peer_shown(&self, delivery_id: i64, shown: &str) -> Result<(), StoreError> {
        let _ = (delivery_id, shown);
        Err(no_incidents())
    }

    /// The device of a stored event (by its row id, e.g. an incident's latest event).
    async fn event_device(&self, event_ref: i64) -> Result<Option<i64>, StoreError> {
        let _ = event_ref;
        Err(no_incidents())
    }

    /// The next update id a bot should ask for (one past the last it handled; 0 when none yet).
    async fn bot_offset(&self, bot: &str) -> Result<i64, StoreError> {
        let _ = bot;
        Err(no_incidents())
    }

    /// Records the next update id a bot should ask for, as given: it may go back, since Telegram
    /// numbers the first update after a week without any at random (only the poller's lease holder
    /// writes it).
    async fn set_bot_offset(&self, bot: &str, offset: i64) -> Result<(), StoreError> {
        let _ = (bot, offset);
        Err(no_incidents())
    }

    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`: `true` if `holder` has it
    /// now (it was free, expired, or already its own). One instance of several polls a bot.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let _ = (name, holder, ttl_ms, now_ms);
        Err(no_incidents())
    }

    /// Gives the lease up if `holder` has it (at shutdown: another instance takes over at once).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _ = (name, holder);
        Err(no_incidents())
    }
}

/// What a store without incidents (a test's stand-in) answers to their operations; both backends keep
/// them.
fn no_incidents() -> StoreError {
    StoreError::Db("this store keeps no incidents".into())
}

/// What a store without the console's reads (a test's stand-in) answers to them; both backends have
/// them.
fn no_browsing() -> StoreError {
    StoreError::Db("this store answers no console reads".into())
}

/// The advisory lock keys of an event on a shared database, sorted and without repeats: its noise
/// state keys and its incidents' keys (prefixed), in one order, so two transactions never wait for each
/// other in a cycle.
pub fn lock_keys(e: &NewEvent) -> Vec<String> {
    let mut keys: Vec<String> = noise_keys(e).into_iter().map(str::to_string).collect();
    keys.extend(
        e.incidents
            .iter()
            .map(|o| incidents::incident_lock_key(&o.facts.key)),
    );
    keys.sort_unstable();
    keys.dedup();
    keys
}
