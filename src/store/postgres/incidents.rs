//! PostgreSQL's incident statements, as SQLite's (`store::sqlite::incidents`): the accept
//! transaction's decision for each offer, the compare-and-set write, and the reads. Several instances
//! write at once here: the accept transaction holds the advisory lock of each offer's key (taken with
//! its noise keys, see [`crate::store::lock_keys`]) before it reads the key's live row, and a write
//! takes the same lock before its compare-and-set, so one key's decisions are made one after the other,
//! each on what the one before committed. The partial unique index on live keys backs the rule "one
//! live incident per key" all the same.

use std::borrow::Cow;

use deadpool_postgres::{GenericClient, Transaction};

use super::{insert_deliveries, lock, pg};
use crate::incident::IncidentState;
use crate::store::browse::EVENT_COLUMNS;
use crate::store::incidents::{
    apply_to_deliveries, incident_lock_key, plan_offer, status_name, step_event, DueIncident,
    IncidentFilter, IncidentOutcome, IncidentRow, IncidentWrite, NewToken, Notice, RowWrite,
    StoredEvent,
};
use crate::store::{lock_keys, Accepted, NewEvent, StoreError};

/// The columns an [`IncidentRow`] is read from, in order.
const INCIDENT_COLUMNS: &str =
    "id, key, rule, revision, state, next_at, notice, event_ref, updated_at";

/// An incident row from [`INCIDENT_COLUMNS`].
fn read_row(r: &tokio_postgres::Row) -> IncidentRow {
    let state: String = r.get(4);
    let notice: Option<String> = r.get(6);
    IncidentRow {
        id: r.get(0),
        key: r.get(1),
        rule: r.get(2),
        revision: r.get(3),
        state: IncidentState::from_json(&state).map_err(|e| e.to_string()),
        next_at: r.get(5),
        notice: notice.as_deref().and_then(Notice::parse),
        event_ref: r.get(7),
        updated_at: r.get(8),
    }
}

/// Decides the event's incident offers (see [`plan_offer`]) and writes their rows; returns the event
/// with its deliveries suppressed or tagged accordingly, and one outcome per offer. The caller holds
/// the advisory locks of the offers' keys.
pub(super) async fn decide_incidents<'e>(
    tx: &Transaction<'_>,
    e: &'e NewEvent,
    event_ref: i64,
) -> Result<(Cow<'e, NewEvent>, Vec<IncidentOutcome>), StoreError> {
    if e.incidents.is_empty() {
        return Ok((Cow::Borrowed(e), Vec::new()));
    }
    let mut owned = e.clone();
    let mut outcomes = Vec::with_capacity(e.incidents.len());
    let now = e.received_at_ms;
    let live_of = tx
        .prepare_cached(
            "SELECT id, revision, state FROM incidents WHERE key = $1 AND status <> 'resolved'",
        )
        .await
        .map_err(pg)?;
    for offer in &e.incidents {
        let live = tx
            .query_opt(&live_of, &[&offer.facts.key])
            .await
            .map_err(pg)?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        let plan = plan_offer(offer, live, now);
        let mut opened = None;
        for w in &plan.writes {
            match w {
                RowWrite::Insert { state, next_at } => {
                    let id = insert_incident(tx, state, *next_at, event_ref, now).await?;
                    insert_tokens(tx, id, &offer.tokens, now).await?;
                    opened = Some(id);
                }
                RowWrite::Update {
                    id,
                    state,
                    next_at,
                    notice,
                    suppress_pending,
                } => {
                    tx.execute(
                        // A notice still owed is kept, and keeps the timer due (as on SQLite).
                        "UPDATE incidents SET state = $2, status = $3,
                             next_at = CASE WHEN COALESCE($5::TEXT, notice) IS NOT NULL THEN $7::BIGINT
                                 ELSE $4::BIGINT END,
                             notice = COALESCE($5::TEXT, notice),
                             revision = revision + 1, event_ref = $6, updated_at = $7
                         WHERE id = $1",
                        &[
                            id,
                            &state.to_json(),
                            &status_name(&state.status),
                            next_at,
                            &notice.map(Notice::as_str),
                            &event_ref,
                            &now,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                    if let Some(reason) = suppress_pending {
                        suppress_pending_of(tx, *id, reason, now).await?;
                    }
                }
            }
        }
        apply_to_deliveries(&mut owned.deliveries, offer, &plan, opened);
        outcomes.push(IncidentOutcome {
            rule: offer.facts.rule.clone(),
            id: opened.or(plan.id),
            effect: plan.effect,
            closed: plan.closed,
        });
    }
    Ok((Cow::Owned(owned), outcomes))
}

async fn insert_incident(
    tx: &Transaction<'_>,
    state: &IncidentState,
    next_at: Option<i64>,
    event_ref: i64,
    now: i64,
) -> Result<i64, StoreError> {
    let r = tx
        .query_one(
            "INSERT INTO incidents (key, rule, status, state, opened_at, next_at, revision,
                 event_ref, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) RETURNING id",
            &[
                &state.key,
                &state.rule,
                &status_name(&state.status),
                &state.to_json(),
                &state.opened_at_ms,
                &next_at,
                &event_ref,
                &now,
            ],
        )
        .await
        .map_err(pg)?;
    Ok(r.get(0))
}

async fn insert_tokens(
    tx: &Transaction<'_>,
    id: i64,
    tokens: &[NewToken],
    now: i64,
) -> Result<(), StoreError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let hashes: Vec<&str> = tokens.iter().map(|t| t.hash.as_str()).collect();
    let labels: Vec<&str> = tokens.iter().map(|t| t.label.as_str()).collect();
    let chats: Vec<Option<&str>> = tokens.iter().map(|t| t.chat.as_deref()).collect();
    tx.execute(
        "INSERT INTO incident_tokens (hash, incident_ref, label, created_at, chat)
         SELECT x.hash, $1, x.label, $4, x.chat
         FROM unnest($2::TEXT[], $3::TEXT[], $5::TEXT[]) AS x(hash, label, chat)
         ON CONFLICT (hash) DO NOTHING",
        &[&id, &hashes, &labels, &now, &chats],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn suppress_pending_of(
    tx: &Transaction<'_>,
    id: i64,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE deliveries SET status = 'suppressed', reason = $2, updated_at = $3
         WHERE incident_ref = $1 AND status = 'pending'",
        &[&id, &reason, &now],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The compare-and-set write (see [`IncidentWrite`]); the caller commits when it says `true`. The
/// locks are taken in the global order: the key is read first (a key never changes), then the noise
/// keys of the deliveries it adds and the incident's key are locked in one sorted list, as an accept
/// transaction locks them, and only then is the revision compared and the row written.
pub(super) async fn write_incident(
    tx: &Transaction<'_>,
    w: &IncidentWrite,
) -> Result<bool, StoreError> {
    let Some(read) = tx
        .query_opt(
            "SELECT key, revision, event_ref FROM incidents WHERE id = $1",
            &[&w.id],
        )
        .await
        .map_err(pg)?
    else {
        return Ok(false);
    };
    let (key, revision, event_ref): (String, i64, i64) = (read.get(0), read.get(1), read.get(2));
    if revision != w.revision {
        // Revisions only grow: the compare-and-set below would fail.
        return Ok(false);
    }
    let step = if w.deliveries.is_empty() {
        None
    } else {
        let event = stored_event(tx, event_ref).await?.ok_or_else(|| {
            StoreError::NotFound(format!("event row {event_ref} of incident {}", w.id))
        })?;
        Some(step_event(event, w))
    };
    let mut keys = step.as_ref().map(lock_keys).unwrap_or_default();
    keys.push(incident_lock_key(&key));
    keys.sort_unstable();
    keys.dedup();
    lock(tx, &keys).await?;
    let written = tx
        .query_opt(
            "UPDATE incidents SET state = $3, status = $4, next_at = $5, notice = $6,
                 revision = revision + 1, updated_at = $7
             WHERE id = $1 AND revision = $2 RETURNING event_ref, key",
            &[
                &w.id,
                &w.revision,
                &w.state.to_json(),
                &status_name(&w.state.status),
                &w.next_at,
                &w.notice.map(Notice::as_str),
                &w.now_ms,
            ],
        )
        .await
        .map_err(pg)?;
    match written {
        // Every change of the event or key bumps the revision: this is the row read above.
        Some(r) if r.get::<_, i64>(0) == event_ref && r.get::<_, &str>(1) == key => {}
        _ => return Ok(false),
    }
    if let Some(reason) = &w.suppress_pending {
        suppress_pending_of(tx, w.id, reason, w.now_ms).await?;
    }
    insert_tokens(tx, w.id, &w.tokens, w.now_ms).await?;
    if let Some(e) = step {
        match insert_deliveries(tx, &e, event_ref).await? {
            Accepted::New { .. } | Accepted::Duplicate => {}
        }
    }
    Ok(true)
}

/// The event of row `event_ref`, as stored.
pub(super) async fn stored_event(
    c: &impl GenericClient,
    event_ref: i64,
) -> Result<Option<StoredEvent>, StoreError> {
    let r = c
        .query_opt(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"),
            &[&event_ref],
        )
        .await
        .map_err(pg)?;
    Ok(r.as_ref().map(read_event))
}

/// An event row read with [`EVENT_COLUMNS`].
pub(super) fn read_event(r: &tokio_postgres::Row) -> StoredEvent {
    StoredEvent {
        id: r.get(0),
        source: r.get(1),
        event_id: r.get(2),
        device_id: r.get(3),
        event_type: r.get(4),
        received_at_ms: r.get(5),
        txn: r.get(6),
        payload: r.get(7),
    }
}

/// Incidents whose timer is due, with their latest event and, where a notice is owed, their circle.
/// A plain read: two instances may read the same row, and the compare-and-set lets one write it.
pub(super) async fn due(
    c: &impl GenericClient,
    now: i64,
    limit: usize,
) -> Result<Vec<DueIncident>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE next_at <= $1
                 ORDER BY next_at LIMIT $2"
            ),
            &[&now, &(limit as i64)],
        )
        .await
        .map_err(pg)?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows.iter().map(read_row) {
        let event = stored_event(c, row.event_ref).await?;
        let circle = if row.notice.is_some() {
            circle(c, row.id).await?
        } else {
            Vec::new()
        };
        due.push(DueIncident { row, event, circle });
    }
    Ok(due)
}

/// Who an incident's messages reached (sent or being sent), in the order first notified.
async fn circle(c: &impl GenericClient, id: i64) -> Result<Vec<(String, String)>, StoreError> {
    let rows = c
        .query(
            "SELECT channel, recipient FROM deliveries
             WHERE incident_ref = $1 AND status IN ('done', 'inflight')
             GROUP BY channel, recipient ORDER BY MIN(id)",
            &[&id],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Incidents, newest first.
pub(super) async fn list(
    c: &impl GenericClient,
    f: IncidentFilter,
) -> Result<Vec<IncidentRow>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE $1 OR status <> 'resolved'
                 ORDER BY id DESC LIMIT $2"
            ),
            &[&f.all, &f.row_limit()],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(read_row).collect())
}

/// One incident by id.
pub(super) async fn by_id(
    c: &impl GenericClient,
    id: i64,
) -> Result<Option<IncidentRow>, StoreError> {
    let r = c
        .query_opt(
            &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(pg)?;
    Ok(r.as_ref().map(read_row))
}

/// The live incident of a key.
pub(super) async fn live(
    c: &impl GenericClient,
    key: &str,
) -> Result<Option<IncidentRow>, StoreError> {
    let r = c
        .query_opt(
            &format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE key = $1 AND status <> 'resolved'"
            ),
            &[&key],
        )
        .await
        .map_err(pg)?;
    Ok(r.as_ref().map(read_row))
}

/// The incident of a token, who its message went to, and the chat of a button token (`None` for a
/// link).
pub(super) async fn by_button(
    c: &impl GenericClient,
    hash: &str,
) -> Result<Option<(IncidentRow, String, Option<String>)>, StoreError> {
    let Some(found) = c
        .query_opt(
            "SELECT incident_ref, label, chat FROM incident_tokens WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(pg)?
    else {
        return Ok(None);
    };
    let (label, chat): (String, Option<String>) = (found.get(1), found.get(2));
    Ok(by_id(c, found.get(0)).await?.map(|row| (row, label, chat)))
}

/// The earliest timer.
pub(super) async fn next_at(c: &impl GenericClient) -> Result<Option<i64>, StoreError> {
    let r = c
        .query_one("SELECT MIN(next_at) FROM incidents", &[])
        .await
        .map_err(pg)?;
    Ok(r.get(0))
}

/// Live incidents by status.
pub(super) async fn counts(c: &impl GenericClient) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = c
        .query(
            "SELECT status, COUNT(*) FROM incidents WHERE status <> 'resolved' GROUP BY status",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}
