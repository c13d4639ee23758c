//! PostgreSQL's reads for browsing (see `store::browse`): the listing, one delivery, activity, rule
//! counts, stored events. The per-event reads go through `LATERAL` subqueries: each event of the
//! period reads its own deliveries by `deliveries_event_key`, and the planner cannot turn that into a
//! hash join over the whole outbox, however many events the period holds.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::incidents::read_event;
use super::pg;
use crate::clock::rfc3339;
use crate::store::browse::{shown_payload, Arg, ACTIVITY_COUNTS, DETAIL_COLUMNS, EVENT_COLUMNS};
use crate::store::common::{listed_status, next_attempt, LIST_COLUMNS};
use crate::store::{ActivityBucket, DeliveryDetail, DeliveryRow, Filter, StoreError, StoredEvent};

/// A delivery as listed, from the first 16 columns ([`LIST_COLUMNS`], or the start of
/// [`DETAIL_COLUMNS`]).
fn listed(r: &tokio_postgres::Row) -> DeliveryRow {
    let st = listed_status(r.get(2));
    DeliveryRow {
        id: r.get(0),
        key: r.get(1),
        status: st,
        channel: r.get(3),
        recipient: r.get(4),
        rule: r.get(5),
        event_id: r.get(6),
        event_type: r.get(7),
        device_id: r.get(8),
        attempts: r.get::<_, i32>(9) as u32,
        created_at: rfc3339(r.get(10)),
        updated_at: rfc3339(r.get(11)),
        next_attempt_at: next_attempt(st, r.get(12)),
        last_error: r.get(13),
        txn: r.get(14),
        reason: r.get(15),
    }
}

/// Deliveries, newest first (see [`Filter`]). Planned afresh with its values each time (the statement
/// is not kept prepared): a plan kept for every value (PostgreSQL's generic plan, taken once five
/// runs cost alike) would read a common rule's way for a rare one, scanning the outbox by id.
pub(super) async fn list(
    c: &impl GenericClient,
    f: &Filter,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let q = f.list_query(|n| format!("${n}"));
    let args: Vec<&(dyn ToSql + Sync)> = q
        .args
        .iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect();
    let sql = format!("SELECT {LIST_COLUMNS} FROM deliveries {}", q.tail);
    let rows = c.query(sql.as_str(), &args).await.map_err(pg)?;
    Ok(rows.iter().map(listed).collect())
}

/// One delivery in full.
pub(super) async fn delivery(
    c: &impl GenericClient,
    id: i64,
) -> Result<Option<DeliveryDetail>, StoreError> {
    let sql = format!(
        "SELECT {DETAIL_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_ref
         WHERE d.id = $1"
    );
    let row = c.query_opt(sql.as_str(), &[&id]).await.map_err(pg)?;
    Ok(row.map(|r| DeliveryDetail {
        row: listed(&r),
        content: r.get(16),
        incident_ref: r.get(17),
        digest_ref: r.get(18),
        event_payload: shown_payload(r.get(19)),
    }))
}

/// Events since `since`, bucketed by `bucket` (at least 1), with their deliveries by status.
pub(super) async fn activity(
    c: &impl GenericClient,
    since: i64,
    bucket: i64,
) -> Result<Vec<ActivityBucket>, StoreError> {
    // A floor also below zero (`/` and `%` truncate towards it). SUM of BIGINT is NUMERIC: cast back.
    let sql = format!(
        "SELECT e.received_at - (e.received_at % $2 + $2) % $2 AS start, COUNT(*),
             SUM(x.n)::BIGINT, SUM(x.done)::BIGINT, SUM(x.dead)::BIGINT, SUM(x.suppressed)::BIGINT
         FROM events e CROSS JOIN LATERAL (
             SELECT {ACTIVITY_COUNTS} FROM deliveries d WHERE d.event_ref = e.id
         ) AS x(n, done, dead, suppressed)
         WHERE e.received_at >= $1
         GROUP BY start ORDER BY start"
    );
    let rows = c
        .query(sql.as_str(), &[&since, &bucket.max(1)])
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| {
            let n = |i| r.get::<_, i64>(i) as u64;
            ActivityBucket {
                start_ms: r.get(0),
                events: n(1),
                deliveries: n(2),
                delivered: n(3),
                dead: n(4),
                suppressed: n(5),
            }
        })
        .collect())
}

/// Per rule, the events since `since` with a delivery of it.
pub(super) async fn rule_counts(
    c: &impl GenericClient,
    since: i64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = c
        .query(
            "SELECT x.rule, COUNT(*) FROM events e CROSS JOIN LATERAL (
                 SELECT DISTINCT d.rule FROM deliveries d WHERE d.event_ref = e.id) x
             WHERE e.received_at >= $1
             GROUP BY x.rule ORDER BY x.rule",
            &[&since],
        )
        .await
        .map_err(pg)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// The newest `limit` stored events.
/// See [`crate::store::Store::history`].
pub(super) async fn history(
    c: &impl GenericClient,
    since_ms: i64,
    until_ms: i64,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let (at, id) = after.unwrap_or((since_ms, i64::MIN));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE received_at >= GREATEST($1::BIGINT, $3::BIGINT) AND received_at < $2 AND (received_at, id) > ($3, $4)
         ORDER BY received_at, id LIMIT $5"
    );
    let rows = c
        .query(sql.as_str(), &[&since_ms, &until_ms, &at, &id, &limit])
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(read_event).collect())
}

pub(super) async fn recent_events(
    c: &impl GenericClient,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1");
    let rows = c.query(sql.as_str(), &[&limit]).await.map_err(pg)?;
    Ok(rows.iter().map(read_event).collect())
}
