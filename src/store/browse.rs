//! What a person browsing the relay reads (the web console): the deliveries listing's statement, built
//! from the filters that are set; one delivery in full; activity over time; how often each rule
//! matched; recent events. Written once here; each backend runs the statements in its own dialect.
//!
//! The listing is ordered by id, newest first, and pages by id ([`Filter::before_id`]), so that a
//! page costs what it shows wherever it lies. An index serves each filter alone (each backend's
//! migration 9 / 8): `deliveries_device`, `deliveries_rule`, `deliveries_channel`, and
//! `deliveries_status` for the states other than `done` (the common one: the id order finds its rows
//! at once). Each is ordered by id within one value (SQLite's indexes end with the row id; PostgreSQL's
//! name it), so the newest rows of a value are read first and the reading stops at the limit.

use serde::Serialize;

use super::{DeliveryRow, Filter, Status};

/// One delivery in full (what the console's delivery page shows).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryDetail {
    /// The row as listed.
    pub row: DeliveryRow,
    /// What it sends: the stored [`crate::notification::Notification`] as JSON (for a digest, the
    /// digest's own).
    pub content: String,
    /// The body of its event as received; `None` when the event row is gone or kept no body.
    pub event_payload: Option<String>,
    /// The incident it belongs to.
    pub incident_ref: Option<i64>,
    /// The digest it was folded into (a `grouped` delivery).
    pub digest_ref: Option<i64>,
}

/// The events received in one period, and what became of their deliveries (their status now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActivityBucket {
    /// Start of the period, unix ms: a multiple of the bucket length.
    pub start_ms: i64,
    /// Events received (matched or not).
    pub events: u64,
    /// Their deliveries, in any status.
    pub deliveries: u64,
    /// Of those, delivered (`done`).
    pub delivered: u64,
    /// Dead letters.
    pub dead: u64,
    /// Not sent by noise control (`suppressed`; folded into a digest, `grouped`, is not counted here).
    pub suppressed: u64,
}

/// The columns a [`super::StoredEvent`] is read from, in order.
pub(super) const EVENT_COLUMNS: &str =
    "id, source, event_id, device_id, event_type, received_at, txn, payload";

/// The listing columns of `d` (a delivery), then what a [`DeliveryDetail`] adds: content, incident,
/// digest, and the event's body (of `e`, joined on `d.event_ref`).
pub(super) const DETAIL_COLUMNS: &str = "d.id, d.key, d.status, d.channel, d.recipient, d.rule, \
    d.event_id, d.event_type, d.device_id, d.attempts, d.created_at, d.updated_at, d.next_at, \
    d.last_error, d.txn, d.reason, d.content, d.incident_ref, d.digest_ref, e.payload";

/// Events at or after the first parameter, bucketed by the second, each with its deliveries counted
/// by status (the backend's statement groups these rows per bucket).
pub(super) const ACTIVITY_COUNTS: &str = "COUNT(d.id), \
    COUNT(CASE WHEN d.status = 'done' THEN 1 END), COUNT(CASE WHEN d.status = 'dead' THEN 1 END), \
    COUNT(CASE WHEN d.status = 'suppressed' THEN 1 END)";

/// How many events [`super::Store::recent_events`] reads for `limit` (0: 100).
pub(super) fn events_limit(limit: usize) -> i64 {
    if limit == 0 {
        100
    } else {
        limit.min(i64::MAX as usize) as i64
    }
}

/// A stored event body as shown: none when nothing was kept.
pub(super) fn shown_payload(payload: Option<String>) -> Option<String> {
    payload.filter(|p| !p.is_empty())
}

/// A bound value of a listing statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg<'a> {
    /// Text.
    Text(&'a str),
    /// A number.
    Int(i64),
}

/// A listing's statement, from its filter: the `WHERE` clause of the filters set (empty when none is),
/// then `ORDER BY id DESC LIMIT`, with their values bound in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListQuery<'a> {
    /// From `WHERE` (or `ORDER BY`) on.
    pub tail: String,
    /// The values of the placeholders, in their order.
    pub args: Vec<Arg<'a>>,
    /// The index to read it through, or none for the id order itself (no filter with an index is
    /// set, or only `done`). SQLite names it (`INDEXED BY`, or `NOT INDEXED`): without statistics its
    /// planner weighs every equality alike, so it may read a filter's index that keeps most rows
    /// rather than one that keeps few, and for `status = 'done'` alone it reads the claims'
    /// `(status, next_at)` index and sorts every `done` row (seconds at a million). PostgreSQL keeps
    /// statistics and chooses alone.
    pub index: Option<&'static str>,
}

impl Filter {
    /// The listing's statement after `FROM deliveries`; `placeholder(n)` writes the n-th (from 1).
    ///
    /// The index is the filter's that likely keeps the fewest rows, so the reading stops soonest: a
    /// device (one of thousands), then a state other than `done` (the rare ones), a rule, a channel.
    /// The others are checked on each row read.
    pub(super) fn list_query<'a>(&'a self, placeholder: fn(usize) -> String) -> ListQuery<'a> {
        let mut terms = Vec::new();
        let mut args = Vec::new();
        let mut add = |column: &str, op: &str, arg: Arg<'a>| {
            args.push(arg);
            terms.push(format!("{column} {op} {}", placeholder(args.len())));
        };
        if let Some(i) = self.incident {
            add("incident_ref", "=", Arg::Int(i));
        }
        if let Some(d) = self.device_id {
            add("device_id", "=", Arg::Int(d));
        }
        if let Some(s) = self.status {
            add("status", "=", Arg::Text(s.as_str()));
        }
        if let Some(r) = &self.rule {
            add("rule", "=", Arg::Text(r));
        }
        if let Some(c) = &self.channel {
            add("channel", "=", Arg::Text(c));
        }
        if let Some(id) = self.before_id {
            add("id", "<", Arg::Int(id));
        }
        if let Some(t) = self.since_ms {
            add("created_at", ">=", Arg::Int(t));
        }
        if let Some(t) = self.until_ms {
            add("created_at", "<", Arg::Int(t));
        }
        let rare_status = self.status.is_some_and(|s| s != Status::Done);
        if rare_status {
            // Word for word the condition of the partial index `deliveries_status`: a planner uses a
            // partial index only for a statement that implies its condition.
            terms.push(RARE_STATUS.to_string());
        }
        let index = if self.incident.is_some() {
            // Partial (`incident_ref IS NOT NULL`), which `incident_ref = ?` implies.
            Some("deliveries_incident")
        } else if self.device_id.is_some() {
            Some("deliveries_device")
        } else if rare_status {
            Some("deliveries_status")
        } else if self.rule.is_some() {
            Some("deliveries_rule")
        } else if self.channel.is_some() {
            Some("deliveries_channel")
        } else {
            None
        };
        args.push(Arg::Int(self.row_limit()));
        let limit = placeholder(args.len());
        let tail = if terms.is_empty() {
            format!("ORDER BY id DESC LIMIT {limit}")
        } else {
            format!(
                "WHERE {} ORDER BY id DESC LIMIT {limit}",
                terms.join(" AND ")
            )
        };
        ListQuery { tail, args, index }
    }
}

/// The condition of the partial index `deliveries_status` (each backend's migration writes it so).
pub(super) const RARE_STATUS: &str = "status <> 'done'";

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement (tail, values, index) of `f` with SQLite's placeholders.
    fn sqlite(f: &Filter) -> (String, Vec<Arg<'_>>, Option<&'static str>) {
        let q = f.list_query(|n| format!("?{n}"));
        (q.tail, q.args, q.index)
    }

    #[test]
    fn a_listing_binds_the_filters_that_are_set_and_picks_the_narrowest_index() {
        let all = Filter::default();
        assert_eq!(
            sqlite(&all),
            (
                "ORDER BY id DESC LIMIT ?1".into(),
                vec![Arg::Int(100)],
                None
            )
        );

        let f = Filter {
            status: Some(Status::Dead),
            rule: Some("theft".into()),
            before_id: Some(77),
            limit: 50,
            ..Filter::default()
        };
        let q = f.list_query(|n| format!("${n}"));
        assert_eq!(
            q.tail,
            "WHERE status = $1 AND rule = $2 AND id < $3 AND status <> 'done' \
             ORDER BY id DESC LIMIT $4"
        );
        assert_eq!(
            q.args,
            vec![
                Arg::Text("dead"),
                Arg::Text("theft"),
                Arg::Int(77),
                Arg::Int(50)
            ]
        );
        assert_eq!(q.index, Some("deliveries_status"));

        // `done` is most rows: the id order finds them, a rule's index does better still.
        let done = Filter {
            status: Some(Status::Done),
            ..Filter::default()
        };
        let (tail, _, index) = sqlite(&done);
        assert!(!tail.contains(RARE_STATUS), "{tail}");
        assert_eq!(index, None);
        let done_of_rule = Filter {
            rule: Some("theft".into()),
            ..done
        };
        assert_eq!(sqlite(&done_of_rule).2, Some("deliveries_rule"));

        let f = Filter {
            device_id: Some(9),
            channel: Some("mail".into()),
            since_ms: Some(1),
            until_ms: Some(2),
            ..Filter::default()
        };
        let (tail, args, index) = sqlite(&f);
        assert_eq!(
            tail,
            "WHERE device_id = ?1 AND channel = ?2 AND created_at >= ?3 AND created_at < ?4 \
             ORDER BY id DESC LIMIT ?5"
        );
        assert_eq!(args.len(), 5);
        assert_eq!(index, Some("deliveries_device"));
        let channel = Filter {
            channel: Some("mail".into()),
            ..Filter::default()
        };
        assert_eq!(sqlite(&channel).2, Some("deliveries_channel"));
    }
}
