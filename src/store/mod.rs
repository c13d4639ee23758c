//! Durable storage behind one interface: accepted events (deduplicated by source and event id), the
//! outbox of deliveries and their state. SQLite ([`sqlite`]) is the embedded default, for one instance;
//! PostgreSQL ([`postgres`]) is shared by several instances (claims carry a lease that another
//! instance may take over once it runs out). [`open`] picks the backend the configuration names.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::notification::Notification;
use crate::plan::Planned;

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
    /// Receive time, unix ms.
    pub received_at_ms: i64,
    /// `X-PowTxn`.
    pub txn: Option<String>,
    /// The body as received.
    pub payload: String,
    /// Deliveries to enqueue in the same transaction.
    pub deliveries: Vec<NewDelivery>,
    /// When set, deliveries without an ordering key are claimed in the same transaction, with this lease
    /// end (unix ms), and returned: the caller hands them to the worker without a claim round trip.
    pub claim_until: Option<i64>,
}

/// A delivery to enqueue, its notification already serialised (by the caller, off the writer's thread).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Idempotency key.
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
}

impl From<&Planned> for NewDelivery {
    fn from(p: &Planned) -> NewDelivery {
        let n = &p.notification;
        NewDelivery {
            key: n.key.clone(),
            channel: n.channel.clone(),
            recipient: n.recipient.clone(),
            rule: n.origin.rule.clone(),
            order_key: p.order_key.clone(),
            dead: p.dead.clone(),
            content: serde_json::to_string(n).expect("a notification always serialises"),
        }
    }
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
    },
    /// The event was stored before; nothing was done.
    Duplicate,
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
}

impl Claimed {
    /// The notification to send.
    pub fn notification(&self) -> Result<Notification, serde_json::Error> {
        serde_json::from_str(&self.content)
    }
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
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Inflight => "inflight",
            Status::Done => "done",
            Status::Dead => "dead",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "inflight" => Status::Inflight,
            "done" | "delivered" => Status::Done,
            "dead" => Status::Dead,
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
    /// `X-PowTxn` of the event.
    pub txn: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this state.
    pub status: Option<Status>,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this device.
    pub device_id: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Which deliveries to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// One delivery (dead or done).
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

    /// Records how attempts ended, in one transaction.
    async fn finish(&self, outcomes: Vec<(i64, Outcome)>, now_ms: i64) -> Result<(), StoreError>;

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
}

/// How long [`open`] waits at start for a PostgreSQL database that cannot be reached (restarting, or
/// starting together with the relay).
pub const PG_STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Opens the store the configuration names: PostgreSQL when `storage.url` is set, else the SQLite file
/// under `storage.data_dir`. `queue` bounds SQLite's write queue.
pub async fn open(
    storage: &crate::config::Storage,
    queue: usize,
) -> Result<Arc<dyn Store>, StoreError> {
    match &storage.postgres {
        Some(pg) => {
            let store = postgres::PgStore::connect(&postgres::PgOptions {
                url: pg.url.expose().to_string(),
                pool: pg.pool,
                statement_timeout: pg.statement_timeout,
                connect_timeout: pg.connect_timeout,
                startup_wait: PG_STARTUP_WAIT,
                restart_grace: storage.lease,
            })
            .await?;
            tracing::info!(database = %store.redacted_url(), "store opened (PostgreSQL)");
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open(&storage.data_dir, queue)?;
            tracing::info!(database = %store.path().display(), "store opened");
            Ok(Arc::new(store))
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
