//! SQLite's statements for two-way chat (see `store::chat`): peer refs of delivered messages and what
//! they show, bots' update offsets, and leases. Every write goes through the single writer, so the
//! lease's conditional upsert is never raced.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use super::db;
use super::pack::Unpacked;
use crate::store::chat::{active_limit, PeerMessage, ACTIVE_PEER, PEER_COLUMNS};
use crate::store::StoreError;

/// A [`PeerMessage`] from [`PEER_COLUMNS`].
fn read_peer(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerMessage> {
    Ok(PeerMessage {
        delivery_id: r.get(0)?,
        incident_ref: r.get(1)?,
        channel: r.get(2)?,
        recipient: r.get(3)?,
        peer_ref: r.get(4)?,
        payload: r.get::<_, Unpacked>(5)?.0,
        shown: r.get(6)?,
        device_id: r.get(7)?,
        created_at_ms: r.get(8)?,
    })
}

/// Records each delivery's peer ref; what the message shows is as sent again (a replayed delivery is
/// a new message). Unknown ids are skipped.
pub(super) fn record_peer_refs(c: &Connection, refs: &[(i64, String)]) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached("UPDATE deliveries SET peer_ref = ?2, peer_shown = NULL WHERE id = ?1")
        .map_err(db)?;
    for (id, peer_ref) in refs {
        stmt.execute(params![id, peer_ref]).map_err(db)?;
    }
    Ok(())
}

/// `n` numbered parameters from `?first`: `?2, ?3, ?4`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Messages of `channels` that may still be edited, oldest first (by the partial index
/// `deliveries_peer`; the channel is checked on each of its rows).
pub(super) fn active(
    c: &Connection,
    channels: &[String],
    limit: usize,
) -> Result<Vec<PeerMessage>, StoreError> {
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let limit = active_limit(limit);
    let args =
        std::iter::once(&limit as &dyn ToSql).chain(channels.iter().map(|c| c as &dyn ToSql));
    c.prepare_cached(&format!(
        "SELECT {PEER_COLUMNS} FROM deliveries INDEXED BY deliveries_peer
         WHERE {ACTIVE_PEER} AND channel IN ({}) ORDER BY id LIMIT ?1",
        placeholders(2, channels.len())
    ))
    .and_then(|mut s| {
        s.query_map(params_from_iter(args), read_peer)?
            .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}

/// Marks `stopped` the messages that may still be edited of channels not in `followed`; how many.
pub(super) fn stop_except(
    c: &Connection,
    followed: &[String],
    created_before_ms: i64,
) -> Result<u64, StoreError> {
    let others = if followed.is_empty() {
        String::new()
    } else {
        format!(" AND channel NOT IN ({})", placeholders(2, followed.len()))
    };
    let mut params: Vec<rusqlite::types::Value> = vec![created_before_ms.into()];
    params.extend(followed.iter().map(|f| f.clone().into()));
    c.prepare_cached(&format!(
        "UPDATE deliveries INDEXED BY deliveries_peer SET peer_shown = 'stopped'
         WHERE {ACTIVE_PEER} AND created_at < ?1{others}"
    ))
    .and_then(|mut s| s.execute(params_from_iter(params)))
    .map(|n| n as u64)
    .map_err(db)
}

/// One incident's messages with a peer ref, oldest first.
pub(super) fn of_incident(c: &Connection, incident: i64) -> Result<Vec<PeerMessage>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {PEER_COLUMNS} FROM deliveries
         WHERE incident_ref = ?1 AND peer_ref IS NOT NULL ORDER BY id"
    ))
    .and_then(|mut s| {
        s.query_map(params![incident], read_peer)?
            .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}

/// Records what a message shows now (an unknown id changes nothing).
pub(super) fn set_shown(c: &Connection, id: i64, shown: &str) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE deliveries SET peer_shown = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, shown]))
        .map_err(db)?;
    Ok(())
}

/// A bot's next update id (0 before any).
pub(super) fn bot_offset(c: &Connection, bot: &str) -> Result<i64, StoreError> {
    c.prepare_cached("SELECT next_offset FROM bot_state WHERE bot = ?1")
        .and_then(|mut s| s.query_row(params![bot], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(db)
}

/// The device of a stored event (by row id).
pub(super) fn event_device(c: &Connection, event_ref: i64) -> Result<Option<i64>, StoreError> {
    c.prepare_cached("SELECT device_id FROM events WHERE id = ?1")
        .and_then(|mut s| s.query_row(params![event_ref], |r| r.get(0)).optional())
        .map_err(db)
}

/// Records a bot's next update id, as given.
pub(super) fn set_bot_offset(c: &Connection, bot: &str, offset: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO bot_state (bot, next_offset) VALUES (?1, ?2)
         ON CONFLICT (bot) DO UPDATE SET next_offset = excluded.next_offset",
    )
    .and_then(|mut s| s.execute(params![bot, offset]))
    .map_err(db)?;
    Ok(())
}

/// Takes the lease if it is free, ran out (`until_ms <= now`) or is `holder`'s own; `true` if taken.
pub(super) fn try_lease(
    c: &Connection,
    name: &str,
    holder: &str,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    c.prepare_cached(
        "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
         WHERE leases.holder = excluded.holder OR leases.until_ms <= ?4
         RETURNING holder",
    )
    .and_then(|mut s| {
        s.query_row(
            params![name, holder, now_ms.saturating_add(ttl_ms), now_ms],
            |_| Ok(()),
        )
        .optional()
    })
    .map(|taken| taken.is_some())
    .map_err(db)
}

/// Gives the lease up if `holder` has it.
pub(super) fn release_lease(c: &Connection, name: &str, holder: &str) -> Result<(), StoreError> {
    c.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
        .and_then(|mut s| s.execute(params![name, holder]))
        .map_err(db)?;
    Ok(())
}
