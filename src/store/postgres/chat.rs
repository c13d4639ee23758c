//! PostgreSQL's statements for two-way chat (see `store::chat`): peer refs of delivered messages and
//! what they show, bots' update offsets, and leases. Several instances share these rows: the offset
//! only moves forward, and a lease is taken by one conditional upsert (the conflicting row is locked
//! while its condition is checked), so two instances asking at the same instant never both get it.

use deadpool_postgres::GenericClient;

use super::pg;
use crate::store::chat::{active_limit, PeerMessage, ACTIVE_PEER, PEER_COLUMNS};
use crate::store::StoreError;

/// A [`PeerMessage`] from [`PEER_COLUMNS`].
fn read_peer(r: &tokio_postgres::Row) -> PeerMessage {
    PeerMessage {
        delivery_id: r.get(0),
        incident_ref: r.get(1),
        channel: r.get(2),
        recipient: r.get(3),
        peer_ref: r.get(4),
        payload: r.get(5),
        shown: r.get(6),
        device_id: r.get(7),
        created_at_ms: r.get(8),
    }
}

/// Records each delivery's peer ref; what the message shows is as sent again (a replayed delivery is
/// a new message). Unknown ids are skipped.
pub(super) async fn record_peer_refs(
    c: &impl GenericClient,
    refs: &[(i64, String)],
) -> Result<(), StoreError> {
    if refs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = refs.iter().map(|(id, _)| *id).collect();
    let peer_refs: Vec<&str> = refs.iter().map(|(_, r)| r.as_str()).collect();
    c.execute(
        "UPDATE deliveries d SET peer_ref = x.peer_ref, peer_shown = NULL
         FROM unnest($1::BIGINT[], $2::TEXT[]) AS x(id, peer_ref) WHERE d.id = x.id",
        &[&ids, &peer_refs],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Messages of `channels` that may still be edited, oldest first (the partial index
/// `deliveries_peer` holds them; the channel is checked on each of its rows).
pub(super) async fn active(
    c: &impl GenericClient,
    channels: &[String],
    limit: usize,
) -> Result<Vec<PeerMessage>, StoreError> {
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            &format!(
                "SELECT {PEER_COLUMNS} FROM deliveries
                 WHERE {ACTIVE_PEER} AND channel = ANY($1) ORDER BY id LIMIT $2"
            ),
            &[&channels, &active_limit(limit)],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(read_peer).collect())
}

/// Marks `stopped` the messages that may still be edited of channels not in `followed`; how many.
pub(super) async fn stop_except(
    c: &impl GenericClient,
    followed: &[String],
    created_before_ms: i64,
) -> Result<u64, StoreError> {
    c.execute(
        &format!(
            "UPDATE deliveries SET peer_shown = 'stopped' WHERE {ACTIVE_PEER} AND channel <> ALL($1) \
             AND created_at < $2"
        ),
        &[&followed, &created_before_ms],
    )
    .await
    .map_err(pg)
}

/// One incident's messages with a peer ref, oldest first.
pub(super) async fn of_incident(
    c: &impl GenericClient,
    incident: i64,
) -> Result<Vec<PeerMessage>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {PEER_COLUMNS} FROM deliveries
                 WHERE incident_ref = $1 AND peer_ref IS NOT NULL ORDER BY id"
            ),
            &[&incident],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(read_peer).collect())
}

/// Takes the lease if it is free, ran out (`until_ms <= now`) or is `holder`'s own; `true` if taken.
pub(super) async fn try_lease(
    c: &impl GenericClient,
    name: &str,
    holder: &str,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let taken = c
        .query_opt(
            "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
             WHERE leases.holder = EXCLUDED.holder OR leases.until_ms <= $4
             RETURNING holder",
            &[&name, &holder, &now_ms.saturating_add(ttl_ms), &now_ms],
        )
        .await
        .map_err(pg)?;
    Ok(taken.is_some())
}
