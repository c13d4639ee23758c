//! What accepting an event writes, planned once for every backend: the event row's position marker and
//! what its insert found, what a copy completing an event adds, and each delivery's row from its noise
//! verdict (status, times, claim at intake, digest, reason). The backends only run the SQL.

use std::borrow::Cow;
use std::collections::HashSet;

use super::decide::{digest_content, with_note};
use super::{Claimed, IncidentOffer, NewDelivery, NewEvent, Quieted, Status, StoreError};
use crate::noise::Verdict;

/// `events.position_missing`: the stored copy had its position (or referred to none).
pub const POSITION_HAD: i64 = 0;
/// `events.position_missing`: the stored copy went through the rules without its position.
pub const POSITION_MISSING: i64 = 1;
/// `events.position_missing`: a later copy with the position completed the event.
pub const POSITION_COMPLETED: i64 = 2;

/// What a copy that completes an event stored without its position adds: its deliveries whose
/// idempotency keys are not among `stored` (those the first copy already produced, whatever became of
/// them), with no debounce probe (the first copy's transition was already counted). Noise control then
/// judges only the notifications that are new, so a rule that matched both copies notifies once and
/// counts once, and a rule on `position.*` that only the complete copy satisfies still fires.
///
/// Incident offers follow their deliveries: an offer whose rule had deliveries stored already was
/// decided by the first copy and is dropped (the event joins no incident twice); the others keep their
/// deliveries' new places (a `resolve_on` that only the position satisfies still resolves).
pub fn completing(e: &NewEvent, stored: &HashSet<String>) -> NewEvent {
    let mut place = Vec::with_capacity(e.deliveries.len());
    let mut deliveries = Vec::new();
    for d in &e.deliveries {
        if stored.contains(&d.key) {
            place.push(None);
        } else {
            place.push(Some(deliveries.len()));
            deliveries.push(d.clone());
        }
    }
    let incidents = e
        .incidents
        .iter()
        .filter_map(|o| {
            let moved: Option<Vec<usize>> = o.deliveries.iter().map(|&i| place[i]).collect();
            moved.map(|deliveries| IncidentOffer {
                deliveries,
                ..o.clone()
            })
        })
        .collect();
    NewEvent {
        deliveries,
        incidents,
        debounce: None,
        ..e.clone()
    }
}

impl NewEvent {
    /// This copy's `events.position_missing`: [`POSITION_MISSING`] or [`POSITION_HAD`].
    pub(super) fn position_marker(&self) -> i64 {
        if self.position_missing {
            POSITION_MISSING
        } else {
            POSITION_HAD
        }
    }
}

/// What inserting the event row found. Both backends insert it with one statement that, on a conflict,
/// updates only a row stored without its position and only for a copy that has it, returning
/// `(id, position_missing)`; no row back means a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventRow {
    /// Stored before: nothing is done.
    Duplicate,
    /// A new event row, by id: every delivery is enqueued.
    New(i64),
    /// This copy completes the event row (by id) stored without its position: the deliveries it adds
    /// are enqueued ([`completing`]).
    Completes(i64),
}

impl EventRow {
    /// From the row the insert returned, if any.
    pub(super) fn from_returned(row: Option<(i64, i64)>) -> EventRow {
        match row {
            None => EventRow::Duplicate,
            Some((id, POSITION_COMPLETED)) => EventRow::Completes(id),
            Some((id, _)) => EventRow::New(id),
        }
    }
}

/// The digest a delivery is folded into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    /// Digest group key (`deliveries.group_key`).
    pub key: String,
    /// When a new digest is due, unix ms.
    pub due: i64,
    /// Title template name.
    pub title: Option<String>,
}

impl Group {
    /// A new digest's idempotency key and stored content, shaped like its first item (see
    /// [`digest_content`]).
    pub(super) fn digest(&self, item: &NewDelivery) -> Result<(String, String), StoreError> {
        digest_content(&item.content, &self.key, self.due, self.title.as_deref()).map_err(|err| {
            StoreError::Corrupt {
                id: 0,
                reason: format!("digest item unreadable: {err}"),
            }
        })
    }
}

/// How one delivery's row is written, from its noise verdict.
#[derive(Debug)]
pub(super) struct RowPlan<'a> {
    /// The delivery.
    pub d: &'a NewDelivery,
    /// Its state.
    pub status: Status,
    /// When it is due, unix ms.
    pub next_at: i64,
    /// Its ordering key; none for a deferred delivery, which does not hold up later ones to the same
    /// recipient.
    pub order_key: Option<&'a str>,
    /// Debounce hold key: a later opposite transition cancels it while it waits.
    pub hold_key: Option<String>,
    /// The digest it is folded into.
    pub group: Option<Group>,
    /// Why noise control suppressed, grouped or deferred it (none for a deferral without a reason).
    pub reason: Option<String>,
    /// What to send: the notification JSON, with the verdict's note added.
    pub content: Cow<'a, str>,
    /// The lease end when it is claimed at intake (it is then in flight).
    pub claim: Option<i64>,
}

impl<'a> RowPlan<'a> {
    /// The row of delivery `index` of `e`, and how noise control quieted it, if it did.
    fn new(e: &'a NewEvent, index: usize, verdict: Verdict) -> (RowPlan<'a>, Option<Quieted>) {
        let d = &e.deliveries[index];
        let now = e.received_at_ms;
        let mut row = RowPlan {
            d,
            status: Status::Pending,
            next_at: now,
            order_key: d.order_key.as_deref(),
            hold_key: None,
            group: None,
            reason: None,
            content: Cow::Borrowed(d.content.as_str()),
            claim: None,
        };
        if d.dead.is_some() {
            row.status = Status::Dead;
            return (row, None);
        }
        let quiet = |status, reason: &Option<String>| {
            Some(Quieted {
                index,
                status,
                reason: reason.clone().unwrap_or_default(),
            })
        };
        let quieted = match verdict {
            Verdict::Send {
                at,
                hold_key,
                note,
                waits_for,
            } => {
                row.next_at = at;
                row.hold_key = hold_key;
                if let Some(note) = note {
                    row.content = Cow::Owned(with_note(&d.content, &note));
                }
                if at > now {
                    row.order_key = None;
                    row.reason = waits_for;
                    quiet(Status::Pending, &row.reason)
                } else {
                    if d.order_key.is_none() && e.claim_until.is_some() {
                        row.claim = e.claim_until;
                        row.status = Status::Inflight;
                    }
                    None
                }
            }
            Verdict::Suppress(reason) => {
                row.status = Status::Suppressed;
                row.reason = Some(reason);
                quiet(Status::Suppressed, &row.reason)
            }
            Verdict::Group {
                key,
                due,
                title,
                reason,
            } => {
                row.status = Status::Grouped;
                row.group = Some(Group { key, due, title });
                row.reason = Some(reason);
                quiet(Status::Grouped, &row.reason)
            }
        };
        (row, quieted)
    }

    /// `deliveries.group_key`.
    pub(super) fn group_key(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.key.as_str())
    }

    /// `deliveries.attempts` and `deliveries.claims` as written: 1 when claimed at intake, else 0.
    pub(super) fn intake_claims(&self) -> i32 {
        i32::from(self.claim.is_some())
    }

    /// The delivery handed to the worker when it was claimed at intake (`now`) and stored as row `id`.
    pub(super) fn claimed(&self, id: i64, now: i64) -> Claimed {
        Claimed {
            id,
            content: self.content.clone().into_owned(),
            attempts: 1,
            created_at_ms: now,
            claim: 1,
        }
    }
}

/// The rows of `e`'s deliveries, in order, from their verdicts (one per delivery, as
/// [`super::decide_noise`] returns them), and the deliveries noise control quieted.
pub(super) fn plan_rows(e: &NewEvent, verdicts: Vec<Verdict>) -> (Vec<RowPlan<'_>>, Vec<Quieted>) {
    let mut quieted = Vec::new();
    let rows = verdicts
        .into_iter()
        .enumerate()
        .map(|(index, verdict)| {
            let (row, q) = RowPlan::new(e, index, verdict);
            quieted.extend(q);
            row
        })
        .collect();
    (rows, quieted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::Gates;

    fn delivery(key: &str, order_key: Option<&str>, dead: Option<&str>) -> NewDelivery {
        NewDelivery {
            key: key.into(),
            channel: "c".into(),
            recipient: "r".into(),
            rule: "theft".into(),
            order_key: order_key.map(str::to_string),
            dead: dead.map(str::to_string),
            content: "{}".into(),
            gates: Gates::default(),
            incident_ref: None,
        }
    }

    fn send(at: i64, waits_for: Option<&str>) -> Verdict {
        Verdict::Send {
            at,
            hold_key: None,
            note: None,
            waits_for: waits_for.map(str::to_string),
        }
    }

    /// The verdict decides the row: sent now (claimed at intake only without an ordering key), deferred
    /// (no ordering key, quieted as pending), suppressed; a dead letter stays dead whatever the verdict.
    #[test]
    fn each_verdict_makes_its_row() {
        let e = NewEvent {
            source: "s".into(),
            event_id: 1,
            device_id: 7,
            event_type: "alarm".into(),
            received_at_ms: 1000,
            judged_at_ms: 1000,
            txn: None,
            payload: String::new(),
            deliveries: vec![
                delivery("now", None, None),
                delivery("ordered", Some("k"), None),
                delivery("later", Some("k"), None),
                delivery("muted", None, None),
                delivery("dead", None, Some("no address")),
            ],
            claim_until: Some(61_000),
            debounce: None,
            position_missing: false,
            incidents: Vec::new(),
        };
        let verdicts = vec![
            send(1000, None),
            send(1000, None),
            send(5000, Some("quiet hours: deferred")),
            Verdict::Suppress("silenced".into()),
            send(1000, None),
        ];
        let (rows, quieted) = plan_rows(&e, verdicts);
        let seen: Vec<(Status, i64, Option<&str>, Option<i64>)> = rows
            .iter()
            .map(|r| (r.status, r.next_at, r.order_key, r.claim))
            .collect();
        assert_eq!(
            seen,
            [
                (Status::Inflight, 1000, None, Some(61_000)),
                (Status::Pending, 1000, Some("k"), None),
                (Status::Pending, 5000, None, None),
                (Status::Suppressed, 1000, None, None),
                (Status::Dead, 1000, None, None),
            ]
        );
        assert_eq!(
            rows.iter().map(RowPlan::intake_claims).collect::<Vec<_>>(),
            [1, 0, 0, 0, 0]
        );
        let why = |index, status, reason: &str| Quieted {
            index,
            status,
            reason: reason.into(),
        };
        assert_eq!(
            quieted,
            [
                why(2, Status::Pending, "quiet hours: deferred"),
                why(3, Status::Suppressed, "silenced"),
            ]
        );
    }
}
