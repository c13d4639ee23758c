//! SQLite's reads for browsing (see `store::browse`): the listing, one delivery, activity, rule counts,
//! stored events. They run on the reading connection, beside the writer. Where the planner, without
//! statistics, could take a worse way, the statement names its way: the listing its index (see
//! [`ListQuery::index`]), the per-event reads their join order (the events of the period first).

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use super::db;
use super::incidents::read_event;
use super::pack::Unpacked;
use crate::clock::rfc3339;
use crate::store::browse::{
    shown_payload, Arg, ListQuery, ACTIVITY_COUNTS, DETAIL_COLUMNS, EVENT_COLUMNS,
};
use crate::store::common::{listed_status, next_attempt, LIST_COLUMNS};
use crate::store::{ActivityBucket, DeliveryDetail, DeliveryRow, Filter, StoreError, StoredEvent};

/// A delivery as listed, from the first 16 columns ([`LIST_COLUMNS`], or the start of
/// [`DETAIL_COLUMNS`]).
fn listed(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    let st = listed_status(&r.get::<_, String>(2)?);
    Ok(DeliveryRow {
        id: r.get(0)?,
        key: r.get(1)?,
        status: st,
        channel: r.get(3)?,
        recipient: r.get(4)?,
        rule: r.get(5)?,
        event_id: r.get(6)?,
        event_type: r.get(7)?,
        device_id: r.get(8)?,
        attempts: r.get::<_, i64>(9)? as u32,
        created_at: rfc3339(r.get(10)?),
        updated_at: rfc3339(r.get(11)?),
        next_attempt_at: next_attempt(st, r.get(12)?),
        last_error: r.get(13)?,
        txn: r.get(14)?,
        reason: r.get(15)?,
    })
}

/// The listing's statement for SQLite: read through the index [`ListQuery::index`] names, or in the
/// id order itself (`NOT INDEXED` still reads a range of ids).
fn list_sql(q: &ListQuery<'_>) -> String {
    let way = match q.index {
        Some(index) => format!("INDEXED BY {index}"),
        None => "NOT INDEXED".to_string(),
    };
    format!("SELECT {LIST_COLUMNS} FROM deliveries {way} {}", q.tail)
}

/// Deliveries, newest first (see [`Filter`]).
pub(super) fn list(c: &Connection, f: &Filter) -> Result<Vec<DeliveryRow>, StoreError> {
    let q = f.list_query(|n| format!("?{n}"));
    let args = q.args.iter().map(|a| match a {
        Arg::Text(s) => s as &dyn ToSql,
        Arg::Int(i) => i as &dyn ToSql,
    });
    let mut stmt = c.prepare_cached(&list_sql(&q)).map_err(db)?;
    let rows = stmt
        .query_map(params_from_iter(args), listed)
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db);
    rows
}

/// One delivery in full.
pub(super) fn delivery(c: &Connection, id: i64) -> Result<Option<DeliveryDetail>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {DETAIL_COLUMNS} FROM deliveries d LEFT JOIN events e ON e.id = d.event_ref
         WHERE d.id = ?1"
    ))
    .and_then(|mut s| {
        s.query_row(params![id], |r| {
            Ok(DeliveryDetail {
                row: listed(r)?,
                content: r.get::<_, Unpacked>(16)?.0,
                incident_ref: r.get(17)?,
                digest_ref: r.get(18)?,
                event_payload: shown_payload(r.get::<_, Option<Unpacked>>(19)?.map(|u| u.0)),
            })
        })
        .optional()
    })
    .map_err(db)
}

/// Events since `since`, bucketed by `bucket` (at least 1), with their deliveries by status. The
/// events of the period are read by `events_received`, each one's deliveries by
/// `deliveries_event_key` (a `LEFT JOIN` keeps the events as the outer loop).
pub(super) fn activity(
    c: &Connection,
    since: i64,
    bucket: i64,
) -> Result<Vec<ActivityBucket>, StoreError> {
    // A floor also below zero (`/` and `%` truncate towards it).
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT e.received_at - (e.received_at % ?2 + ?2) % ?2 AS start, COUNT(DISTINCT e.id),
                 {ACTIVITY_COUNTS}
             FROM events e LEFT JOIN deliveries d ON d.event_ref = e.id
             WHERE e.received_at >= ?1
             GROUP BY start ORDER BY start"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![since, bucket.max(1)], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok(ActivityBucket {
                start_ms: r.get(0)?,
                events: n(1)?,
                deliveries: n(2)?,
                delivered: n(3)?,
                dead: n(4)?,
                suppressed: n(5)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db);
    rows
}

/// Per rule, the events since `since` with a delivery of it. `CROSS JOIN` keeps the events of the
/// period as the outer loop (the planner would otherwise read every delivery).
pub(super) fn rule_counts(c: &Connection, since: i64) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT rule, COUNT(*) FROM (
                 SELECT DISTINCT d.event_ref, d.rule
                 FROM events e CROSS JOIN deliveries d ON d.event_ref = e.id
                 WHERE e.received_at >= ?1)
             GROUP BY rule ORDER BY rule",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map(params![since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db);
    rows
}

/// The newest `limit` stored events.
pub(super) fn recent_events(c: &Connection, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?1"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![limit], read_event)
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db);
    rows
}

/// See [`crate::store::Store::history`]. Reads `events_received` in order from the last row read (the
/// range starts there, not at `since_ms`): a page costs its rows, wherever it is.
pub(super) fn history(
    c: &Connection,
    since_ms: i64,
    until_ms: i64,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let (at, id) = after.unwrap_or((since_ms, i64::MIN));
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_received
             WHERE received_at >= max(?1, ?3) AND received_at < ?2 AND (received_at, id) > (?3, ?4)
             ORDER BY received_at, id LIMIT ?5"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map(params![since_ms, until_ms, at, id, limit], read_event)
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db);
    rows
}

#[cfg(test)]
mod tests {
    //! The ways SQLite's planner takes (the speed at a million rows is the `console` benchmark's).
    use rusqlite::types::Null;

    use super::*;
    use crate::store::sqlite::{SqliteStore, DB_FILE};
    use crate::store::Status;

    /// What `EXPLAIN QUERY PLAN` says of `sql`, one step a line.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![Null; stmt.parameter_count()];
        let steps: Vec<String> = stmt
            .query_map(params_from_iter(nulls), |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        steps.join("\n")
    }

    /// An empty store's schema (the planner has no statistics, as in a running relay).
    fn schema() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), 16).unwrap());
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        (dir, c)
    }

    #[test]
    fn each_listing_reads_its_index_in_order() {
        let (_dir, c) = schema();
        let filters = [
            (
                Filter {
                    status: Some(Status::Dead),
                    ..Filter::default()
                },
                "USING INDEX deliveries_status (status=?)",
            ),
            (
                Filter {
                    status: Some(Status::Pending),
                    before_id: Some(9),
                    ..Filter::default()
                },
                "USING INDEX deliveries_status (status=? AND rowid<?)",
            ),
            (
                Filter {
                    device_id: Some(7),
                    status: Some(Status::Done),
                    ..Filter::default()
                },
                "USING INDEX deliveries_device (device_id=?)",
            ),
            (
                Filter {
                    rule: Some("theft".into()),
                    ..Filter::default()
                },
                "USING INDEX deliveries_rule (rule=?)",
            ),
            (
                Filter {
                    channel: Some("mail".into()),
                    ..Filter::default()
                },
                "USING INDEX deliveries_channel (channel=?)",
            ),
            (
                Filter {
                    before_id: Some(9),
                    ..Filter::default()
                },
                "USING INTEGER PRIMARY KEY (rowid<?)",
            ),
        ];
        for (f, way) in filters {
            let p = plan(&c, &list_sql(&f.list_query(|n| format!("?{n}"))));
            assert!(p.contains(way), "{f:?}: {p}");
            // The index gives the order: nothing is sorted.
            assert!(!p.contains("TEMP B-TREE"), "{f:?}: {p}");
        }
        // `done` and no filter: the id order, newest first, without a sort.
        let done = Filter {
            status: Some(Status::Done),
            ..Filter::default()
        };
        let p = plan(&c, &list_sql(&done.list_query(|n| format!("?{n}"))));
        assert!(!p.contains("TEMP B-TREE") && !p.contains("INDEX"), "{p}");
    }

    #[test]
    fn per_event_reads_start_from_the_period_and_intake_keeps_its_indexes() {
        let (_dir, c) = schema();
        // Activity and rule counts: the period's events, then each one's deliveries.
        for sql in [
            format!(
                "SELECT e.received_at, {ACTIVITY_COUNTS} FROM events e
                 LEFT JOIN deliveries d ON d.event_ref = e.id WHERE e.received_at >= ?1
                 GROUP BY e.received_at"
            ),
            "SELECT rule, COUNT(*) FROM (SELECT DISTINCT d.event_ref, d.rule
                 FROM events e CROSS JOIN deliveries d ON d.event_ref = e.id
                 WHERE e.received_at >= ?1) GROUP BY rule"
                .to_string(),
        ] {
            let p = plan(&c, &sql);
            assert!(p.contains("events_received (received_at>?)"), "{p}");
            assert!(p.contains("deliveries_event_key (event_ref=?)"), "{p}");
        }

        // Intake's reads of held and grouped deliveries keep their partial indexes: the status index
        // serves only statements that name its condition.
        for (sql, index) in [
            (
                "UPDATE deliveries SET status = 'suppressed' WHERE hold_key = ?1 AND status = 'pending'",
                "deliveries_hold",
            ),
            (
                "SELECT id FROM deliveries WHERE group_key = ?1 AND status = 'pending' ORDER BY id LIMIT 1",
                "deliveries_group",
            ),
        ] {
            let p = plan(&c, sql);
            assert!(p.contains(index), "{sql}: {p}");
        }
    }
}
