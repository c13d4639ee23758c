//! The database-neutral parts of the store's operations besides intake, written once for both
//! backends: an outcome's columns, claims' order, listing, what a replay resets, retention in chunks,
//! and silences' stored form. Each backend writes its statements around them.

use std::future::Future;
use std::time::Duration;

use super::{Claimed, Filter, Outcome, Pruned, Status, StoreError};
use crate::clock::rfc3339;
use crate::noise::silence::NewSilence;

impl Outcome {
    /// The row's new (status, next attempt, last error); `None` keeps the column as it is.
    pub(super) fn columns(&self) -> (Status, Option<i64>, Option<&str>) {
        match self {
            Outcome::Delivered => (Status::Done, None, None),
            Outcome::Retry { at_ms, error } => {
                (Status::Pending, Some(*at_ms), Some(error.as_str()))
            }
            Outcome::Dead { error } => (Status::Dead, None, Some(error.as_str())),
        }
    }
}

/// Claimed deliveries oldest first: what the worker sends first (a statement's `RETURNING` has no
/// order).
pub(super) fn oldest_first(mut claimed: Vec<Claimed>) -> Vec<Claimed> {
    claimed.sort_unstable_by_key(|c| c.id);
    claimed
}

/// The columns a listing reads, in the order a [`super::DeliveryRow`] is built from.
pub(super) const LIST_COLUMNS: &str = "id, key, status, channel, recipient, rule, event_id, \
    event_type, device_id, attempts, created_at, updated_at, next_at, last_error, txn, reason";

impl Filter {
    /// The most rows to list: the filter's limit, or 100 when it sets none.
    pub(super) fn row_limit(&self) -> i64 {
        if self.limit == 0 {
            100
        } else {
            self.limit as i64
        }
    }
}

/// A stored status as listed: one this version does not know shows as dead (it needs a look).
pub(super) fn listed_status(stored: &str) -> Status {
    Status::parse(stored).unwrap_or(Status::Dead)
}

/// A listed delivery's next attempt (RFC 3339): only a pending one has one.
pub(super) fn next_attempt(status: Status, next_at: i64) -> Option<String> {
    (status == Status::Pending).then(|| rfc3339(next_at))
}

/// What a replay sets besides its times (each backend sets `next_at`, `created_at` and `updated_at`
/// to now): the delivery starts afresh (no attempt, error or lease), and noise control no longer holds
/// or explains it: a replay is an operator's "send it anyway", by id or of every dead letter alike.
pub(super) const REPLAY_RESET: &str = "status = 'pending', attempts = 0, last_error = NULL, \
    lease_until = NULL, reason = NULL, hold_key = NULL";

/// The deliveries a replay by id takes: dead, done or suppressed ones.
pub(super) const REPLAYABLE: &str = "status IN ('dead', 'done', 'suppressed')";

/// Deliveries retention removes after `retention` (dead letters have their own period).
pub(super) const FINISHED: &str = "status IN ('done', 'suppressed', 'grouped')";

/// Rows deleted per table and retention step: short enough not to hold up intake.
pub(super) const PRUNE_CHUNK: i64 = 5000;

/// The times a retention run removes rows before, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cutoffs {
    /// Noise state that expired before now.
    pub now: i64,
    /// Finished deliveries ([`FINISHED`]) last changed, and events received, before this.
    pub done: i64,
    /// Dead letters last changed, and silences ended, before this.
    pub dead: i64,
}

/// Removes what the retention periods allow, in steps: `step` removes at most [`PRUNE_CHUNK`] rows of
/// each table (in a transaction of its own, so intake goes on between steps) and says how many; steps
/// follow until one leaves no table with a full chunk. Returns the total.
pub(super) async fn prune_in_chunks<F, Fut>(
    now: i64,
    retention: Duration,
    dead_retention: Duration,
    mut step: F,
) -> Result<Pruned, StoreError>
where
    F: FnMut(Cutoffs) -> Fut,
    Fut: Future<Output = Result<Pruned, StoreError>>,
{
    let cut = Cutoffs {
        now,
        done: now - retention.as_millis() as i64,
        dead: now - dead_retention.as_millis() as i64,
    };
    let mut total = Pruned::default();
    loop {
        let p = step(cut).await?;
        total.deliveries += p.deliveries;
        total.events += p.events;
        total.state += p.state;
        let full = PRUNE_CHUNK as u64;
        if p.deliveries < full && p.events < full && p.state < full {
            return Ok(total);
        }
    }
}

/// The columns a silence is read from, in the order [`crate::noise::silence::Silence::stored`]
/// takes them.
pub(super) const SILENCE_COLUMNS: &str =
    "id, matchers, starts_at, ends_at, author, comment, created_at";

/// A new silence's matchers as stored (JSON).
pub(super) fn matchers_json(s: &NewSilence) -> String {
    serde_json::to_string(&s.matchers).expect("matchers serialise")
}
