//! SQLite's incident statements: the accept transaction's decision for each offer, the
//! compare-and-set write, and the reads. The single writer serialises every write, so no lock is taken
//! beyond the transaction's; the partial unique index on live keys backs the rule "one live incident per
//! key" all the same.

use std::borrow::Cow;

use rusqlite::{params, Connection, OptionalExtension};

use super::pack::Unpacked;
use super::{db, insert_deliveries};
use crate::incident::IncidentState;
use crate::store::browse::EVENT_COLUMNS;
use crate::store::incidents::{
    apply_to_deliveries, plan_offer, status_name, step_event, DueIncident, IncidentFilter,
    IncidentOutcome, IncidentRow, IncidentWrite, NewToken, Notice, RowWrite, StoredEvent,
};
use crate::store::{Accepted, NewEvent, StoreError};

/// The columns an [`IncidentRow`] is read from, in order.
pub(super) const INCIDENT_COLUMNS: &str =
    "id, key, rule, revision, state, next_at, notice, event_ref, updated_at";

/// An incident row from [`INCIDENT_COLUMNS`] (starting at column `at`).
pub(super) fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRow> {
    let state: String = r.get(4)?;
    let notice: Option<String> = r.get(6)?;
    Ok(IncidentRow {
        id: r.get(0)?,
        key: r.get(1)?,
        rule: r.get(2)?,
        revision: r.get(3)?,
        state: IncidentState::from_json(&state).map_err(|e| e.to_string()),
        next_at: r.get(5)?,
        notice: notice.as_deref().and_then(Notice::parse),
        event_ref: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// Decides the event's incident offers (see [`plan_offer`]) and writes their rows; returns the event
/// with its deliveries suppressed or tagged accordingly, and one outcome per offer.
pub(super) fn decide_incidents<'e>(
    c: &Connection,
    e: &'e NewEvent,
    event_ref: i64,
) -> Result<(Cow<'e, NewEvent>, Vec<IncidentOutcome>), StoreError> {
    if e.incidents.is_empty() {
        return Ok((Cow::Borrowed(e), Vec::new()));
    }
    let mut owned = e.clone();
    let mut outcomes = Vec::with_capacity(e.incidents.len());
    let now = e.received_at_ms;
    for offer in &e.incidents {
        let live = c
            .prepare_cached(
                "SELECT id, revision, state FROM incidents WHERE key = ?1 AND status <> 'resolved'",
            )
            .and_then(|mut s| {
                s.query_row(params![offer.facts.key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(db)?;
        let plan = plan_offer(offer, live, now);
        let mut opened = None;
        for w in &plan.writes {
            match w {
                RowWrite::Insert { state, next_at } => {
                    let id = insert_incident(c, state, *next_at, event_ref, now)?;
                    insert_tokens(c, id, &offer.tokens, now)?;
                    opened = Some(id);
                }
                RowWrite::Update {
                    id,
                    state,
                    next_at,
                    notice,
                    suppress_pending,
                } => {
                    c.prepare_cached(
                        // A notice still owed (an acknowledgement the timer has not told yet)
                        // is kept, and keeps the timer due: an event joining meanwhile must not
                        // swallow it. See `RowWrite::Update`.
                        "UPDATE incidents SET state = ?2, status = ?3,
                             next_at = CASE WHEN COALESCE(?5, notice) IS NOT NULL THEN ?7 ELSE ?4 END,
                             notice = COALESCE(?5, notice),
                             revision = revision + 1, event_ref = ?6, updated_at = ?7
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            id,
                            state.to_json(),
                            status_name(&state.status),
                            next_at,
                            notice.map(Notice::as_str),
                            event_ref,
                            now
                        ])
                    })
                    .map_err(db)?;
                    if let Some(reason) = suppress_pending {
                        suppress_pending_of(c, *id, reason, now)?;
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

fn insert_incident(
    c: &Connection,
    state: &IncidentState,
    next_at: Option<i64>,
    event_ref: i64,
    now: i64,
) -> Result<i64, StoreError> {
    c.prepare_cached(
        "INSERT INTO incidents (key, rule, status, state, opened_at, next_at, revision, event_ref,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            state.key,
            state.rule,
            status_name(&state.status),
            state.to_json(),
            state.opened_at_ms,
            next_at,
            event_ref,
            now
        ])
    })
    .map_err(db)?;
    Ok(c.last_insert_rowid())
}

fn insert_tokens(c: &Connection, id: i64, tokens: &[NewToken], now: i64) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO incident_tokens (hash, incident_ref, label, created_at, chat)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (hash) DO NOTHING",
        )
        .map_err(db)?;
    for t in tokens {
        stmt.execute(params![t.hash, id, t.label, now, t.chat])
            .map_err(db)?;
    }
    Ok(())
}

fn suppress_pending_of(c: &Connection, id: i64, reason: &str, now: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE deliveries SET status = 'suppressed', reason = ?2, updated_at = ?3
         WHERE incident_ref = ?1 AND status = 'pending'",
    )
    .and_then(|mut s| s.execute(params![id, reason, now]))
    .map_err(db)?;
    Ok(())
}

/// The compare-and-set write (see [`IncidentWrite`]).
pub(super) fn write_incident(c: &Connection, w: &IncidentWrite) -> Result<bool, StoreError> {
    let event_ref: Option<i64> = c
        .prepare_cached(
            "UPDATE incidents SET state = ?3, status = ?4, next_at = ?5, notice = ?6,
                 revision = revision + 1, updated_at = ?7
             WHERE id = ?1 AND revision = ?2 RETURNING event_ref",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    w.id,
                    w.revision,
                    w.state.to_json(),
                    status_name(&w.state.status),
                    w.next_at,
                    w.notice.map(Notice::as_str),
                    w.now_ms
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(db)?;
    let Some(event_ref) = event_ref else {
        return Ok(false);
    };
    if let Some(reason) = &w.suppress_pending {
        suppress_pending_of(c, w.id, reason, w.now_ms)?;
    }
    insert_tokens(c, w.id, &w.tokens, w.now_ms)?;
    if !w.deliveries.is_empty() {
        let event = stored_event(c, event_ref)?.ok_or_else(|| {
            StoreError::NotFound(format!("event row {event_ref} of incident {}", w.id))
        })?;
        let e = step_event(event, w);
        match insert_deliveries(c, &e, event_ref)? {
            Accepted::New { .. } | Accepted::Duplicate => {}
        }
    }
    Ok(true)
}

/// The event of row `event_ref`, as stored.
pub(super) fn stored_event(
    c: &Connection,
    event_ref: i64,
) -> Result<Option<StoredEvent>, StoreError> {
    c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))
        .and_then(|mut s| s.query_row(params![event_ref], read_event).optional())
        .map_err(db)
}

/// An event row read with [`EVENT_COLUMNS`].
pub(super) fn read_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        id: r.get(0)?,
        source: r.get(1)?,
        event_id: r.get(2)?,
        device_id: r.get(3)?,
        event_type: r.get(4)?,
        received_at_ms: r.get(5)?,
        txn: r.get(6)?,
        payload: r.get::<_, Unpacked>(7)?.0,
    })
}

/// Incidents whose timer is due, with their latest event and, where a notice is owed, their circle.
pub(super) fn due(c: &Connection, now: i64, limit: usize) -> Result<Vec<DueIncident>, StoreError> {
    let rows: Vec<IncidentRow> = c
        .prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE next_at <= ?1 ORDER BY next_at LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![now, limit as i64], read_row)?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    rows.into_iter()
        .map(|row| {
            let event = stored_event(c, row.event_ref)?;
            let circle = if row.notice.is_some() {
                circle(c, row.id)?
            } else {
                Vec::new()
            };
            Ok(DueIncident { row, event, circle })
        })
        .collect()
}

/// Who an incident's messages reached (sent or being sent), in the order first notified.
fn circle(c: &Connection, id: i64) -> Result<Vec<(String, String)>, StoreError> {
    c.prepare_cached(
        "SELECT channel, recipient FROM deliveries
         WHERE incident_ref = ?1 AND status IN ('done', 'inflight')
         GROUP BY channel, recipient ORDER BY MIN(id)",
    )
    .and_then(|mut s| {
        s.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}

/// Incidents, newest first.
pub(super) fn list(c: &Connection, f: IncidentFilter) -> Result<Vec<IncidentRow>, StoreError> {
    let cond = if f.all {
        ""
    } else {
        "WHERE status <> 'resolved'"
    };
    c.prepare_cached(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents {cond} ORDER BY id DESC LIMIT ?1"
    ))
    .and_then(|mut s| {
        s.query_map(params![f.row_limit()], read_row)?
            .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}

/// One incident by a condition on one parameter.
pub(super) fn one(
    c: &Connection,
    cond: &str,
    p: &dyn rusqlite::ToSql,
) -> Result<Option<IncidentRow>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {cond}"
    ))
    .and_then(|mut s| s.query_row([p], read_row).optional())
    .map_err(db)
}

/// The incident of a token, who its message went to, and the chat of a button token (`None` for a
/// link).
pub(super) fn by_button(
    c: &Connection,
    hash: &str,
) -> Result<Option<(IncidentRow, String, Option<String>)>, StoreError> {
    let found: Option<(i64, String, Option<String>)> = c
        .prepare_cached("SELECT incident_ref, label, chat FROM incident_tokens WHERE hash = ?1")
        .and_then(|mut s| {
            s.query_row(params![hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db)?;
    let Some((id, label, chat)) = found else {
        return Ok(None);
    };
    Ok(one(c, "id = ?1", &id)?.map(|row| (row, label, chat)))
}

/// Live incidents by status.
pub(super) fn counts(c: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    c.prepare_cached(
        "SELECT status, COUNT(*) FROM incidents WHERE status <> 'resolved' GROUP BY status",
    )
    .and_then(|mut s| {
        s.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}
