//! What a run left in the store, row by row: every delivery's outcome, read in one pass on the reading
//! connection. For a backtest, which runs the real intake on a scratch store and then counts what it
//! decided.

use rusqlite::Connection;

use super::db;
use crate::store::{Status, StoreError};

/// One delivery as a backtest counts it.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    /// Row id.
    pub id: i64,
    /// Rule.
    pub rule: String,
    /// Channel.
    pub channel: String,
    /// Status.
    pub status: Status,
    /// Why it was suppressed, grouped or made dead, when it was.
    pub reason: Option<String>,
    /// Device id.
    pub device_id: i64,
    /// Made at, unix ms.
    pub created_at_ms: i64,
    /// When it is (or was) due to go, unix ms.
    pub next_at_ms: i64,
    /// The incident it belongs to.
    pub incident_ref: Option<i64>,
    /// It is a digest of others.
    pub digest: bool,
}

/// Calls `f` with every delivery, in id order.
pub(super) fn for_each(
    c: &Connection,
    f: &mut dyn FnMut(DeliveryOutcome),
) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare(
            "SELECT id, rule, channel, status, COALESCE(reason, last_error), device_id, created_at,
                    next_at, incident_ref,
                    EXISTS (SELECT 1 FROM deliveries i WHERE i.digest_ref = d.id)
             FROM deliveries d ORDER BY id",
        )
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    while let Some(r) = rows.next().map_err(db)? {
        let status: String = r.get(3).map_err(db)?;
        f(DeliveryOutcome {
            id: r.get(0).map_err(db)?,
            rule: r.get(1).map_err(db)?,
            channel: r.get(2).map_err(db)?,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Db(format!("unknown status {status}")))?,
            reason: r.get(4).map_err(db)?,
            device_id: r.get(5).map_err(db)?,
            created_at_ms: r.get(6).map_err(db)?,
            next_at_ms: r.get(7).map_err(db)?,
            incident_ref: r.get(8).map_err(db)?,
            digest: r.get(9).map_err(db)?,
        });
    }
    Ok(())
}
