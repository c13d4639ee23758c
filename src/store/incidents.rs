//! Incidents in the store, written once for every backend: the types of the contract (an event's
//! offer to the incident of its key, a stored incident, a compare-and-set write) and what the accept
//! transaction does with an offer once the backend has read the key's live row: run the incident core's
//! [`on_event`], and say which rows to write and what becomes of the event's deliveries. Each backend
//! runs the SQL.

use serde::{Deserialize, Serialize};

use super::{NewDelivery, NewEvent};
use crate::incident::{
    next_due, on_event, EventFacts, EventVerdict, IncidentPolicy, IncidentState, Status as Live,
};

/// One rule's incident as an event offers it: the decider's facts, the rule's policy, which of the
/// event's deliveries belong to the rule (they go out when the event opens the incident, and are
/// recorded `suppressed` when it joins or resolves one) and the acknowledgement links their messages
/// carry (stored only if the incident opens).
#[derive(Debug, Clone)]
pub struct IncidentOffer {
    /// Trigger, key, rule, position.
    pub facts: EventFacts,
    /// The rule's policy, as configured now.
    pub policy: IncidentPolicy,
    /// Every incident rule's policy by name (shared, cheap to clone): a live incident another rule
    /// opened (a shared key) is judged by the opening rule's policy.
    pub policies: std::sync::Arc<std::collections::HashMap<String, IncidentPolicy>>,
    /// Indices into [`super::NewEvent::deliveries`].
    pub deliveries: Vec<usize>,
    /// Acknowledgement tokens the messages link to.
    pub tokens: Vec<NewToken>,
    /// Every one of the rule's messages for the event was muted when it happened (quiet hours, a
    /// silence): the event opens no incident (the rule does not speak now), but joins a live one.
    pub muted: bool,
}

/// An acknowledgement token: only its hash is stored ([`crate::secret`]-style: the link in the message
/// is the secret), with who it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Who the link went to (the target's channel name): who acknowledged, when it is used.
    pub label: String,
    /// For a button token, the chat its message went to: a press from another chat is refused.
    pub chat: Option<String>,
}

/// A message owed to the people an incident notified: it was acknowledged, or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notice {
    /// Tell the circle who acknowledged it.
    Acknowledged,
    /// Tell the circle it was resolved.
    Resolved,
}

impl Notice {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Acknowledged => "acknowledged",
            Notice::Resolved => "resolved",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Notice> {
        match s {
            "acknowledged" => Some(Notice::Acknowledged),
            "resolved" => Some(Notice::Resolved),
            _ => None,
        }
    }
}

/// An incident as stored.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    /// Row id (what `incidents ack` takes).
    pub id: i64,
    /// Its key.
    pub key: String,
    /// The rule that opened it.
    pub rule: String,
    /// Bumped by every write: [`IncidentWrite::revision`] must name the one read.
    pub revision: i64,
    /// The state, or why it cannot be read (a row this version cannot use is left alone).
    pub state: Result<IncidentState, String>,
    /// When its timer runs next (a step due, its expiry, a notice owed), unix ms; none once settled.
    pub next_at: Option<i64>,
    /// A message owed to its circle.
    pub notice: Option<Notice>,
    /// Its latest event (its row id): what repeats are rendered from.
    pub event_ref: i64,
    /// Last write, unix ms.
    pub updated_at: i64,
}

impl IncidentRow {
    /// The stored status name: `open`, `acknowledged`, `resolved` (`unreadable` for a row that cannot
    /// be read).
    pub fn status_name(&self) -> &'static str {
        match &self.state {
            Ok(s) => status_name(&s.status),
            Err(_) => "unreadable",
        }
    }
}

/// The stored name of a status (`incidents.status`).
pub fn status_name(s: &Live) -> &'static str {
    match s {
        Live::Open => "open",
        Live::Acknowledged(_) => "acknowledged",
        Live::Resolved { .. } => "resolved",
    }
}

/// An incident whose timer is due, with what its repeats are rendered from.
#[derive(Debug, Clone)]
pub struct DueIncident {
    /// The incident.
    pub row: IncidentRow,
    /// Its latest event as stored (see [`StoredEvent`]); none once retention removed it.
    pub event: Option<StoredEvent>,
    /// Who its messages reached so far, (channel, recipient), in the order first notified: read when a
    /// notice is owed.
    pub circle: Vec<(String, String)>,
}

/// An event as the store keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// Row id (what [`super::Store::stored_event`] takes).
    pub id: i64,
    /// Dedup namespace.
    pub source: String,
    /// Traccar event id.
    pub event_id: i64,
    /// Device id.
    pub device_id: i64,
    /// Event type.
    pub event_type: String,
    /// Receive time, unix ms.
    pub received_at_ms: i64,
    /// `X-PowTxn`.
    pub txn: Option<String>,
    /// The body as received (empty for an unmatched event, unless `storage.keep_unmatched_payloads`
    /// kept it).
    pub payload: String,
}

/// A compare-and-set write of an incident by its timer, an acknowledgement or a resolution: it is made
/// only if the row is still at `revision` (no event, timer or person changed it since it was read), all
/// in one transaction with the deliveries it adds and the pending ones it cancels.
#[derive(Debug, Clone)]
pub struct IncidentWrite {
    /// Row id.
    pub id: i64,
    /// The revision read.
    pub revision: i64,
    /// The new state.
    pub state: IncidentState,
    /// The timer's next run.
    pub next_at: Option<i64>,
    /// A message owed to its circle after this write.
    pub notice: Option<Notice>,
    /// Set every pending delivery of the incident `suppressed` with this reason (an acknowledgement:
    /// no step goes out after it; one already in flight may).
    pub suppress_pending: Option<String>,
    /// Steps' and notices' deliveries to enqueue, for the incident's latest event. Noise control judges
    /// them at `now_ms` (silences were applied while planning; rate limits apply here).
    pub deliveries: Vec<NewDelivery>,
    /// Acknowledgement links their messages carry.
    pub tokens: Vec<NewToken>,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// Which incidents to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct IncidentFilter {
    /// Resolved ones too.
    pub all: bool,
    /// At most this many, newest first (0: 100).
    pub limit: usize,
}

impl IncidentFilter {
    /// The most rows to list.
    pub(super) fn row_limit(&self) -> i64 {
        if self.limit == 0 {
            100
        } else {
            self.limit as i64
        }
    }
}

/// What an event did to the incident of one of its rules (in [`super::Accepted::New`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentOutcome {
    /// The rule.
    pub rule: String,
    /// The incident (none when there was nothing to resolve, or its row could not be read).
    pub id: Option<i64>,
    /// What happened.
    pub effect: Effect,
    /// How an incident the event closed was resolved (`resolve_on`, or `resolve_after` for one found
    /// run out), for the metrics.
    pub closed: Option<&'static str>,
}

/// What an event did to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It opened one (the rule's deliveries go out).
    Opened,
    /// It joined the open one.
    Joined,
    /// It resolved it.
    Resolved,
    /// A `resolve_on` event with nothing open.
    NothingToResolve,
    /// The key's live row could not be read: the event was notified as if the rule had no incident.
    Unreadable,
    /// It would have opened one, but its rule was muted when it happened.
    Muted,
}

/// The key's live incident as the accept transaction read it: (id, revision, stored state).
pub(super) type LiveRow = (i64, i64, String);

/// A row write the accept transaction makes for an offer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RowWrite {
    /// A new incident.
    Insert {
        /// Its state.
        state: IncidentState,
        /// Its timer.
        next_at: Option<i64>,
    },
    /// The row `id` changes (revision bumped). A notice the row still owes is kept (`notice` here
    /// only adds one) and keeps its timer due now.
    Update {
        /// Row id.
        id: i64,
        /// Its new state.
        state: IncidentState,
        /// Its timer.
        next_at: Option<i64>,
        /// A notice owed.
        notice: Option<Notice>,
        /// Its pending deliveries are cancelled with this reason.
        suppress_pending: Option<String>,
    },
}

/// What the accept transaction does for one offer, decided from the live row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OfferPlan {
    /// Rows to write, in order (a run-out incident is closed before its successor is inserted).
    pub writes: Vec<RowWrite>,
    /// The offer's deliveries are suppressed with this reason (joined or resolving); `None`: they go
    /// out, tagged with the inserted incident when `writes` inserts one.
    pub suppress: Option<String>,
    /// For the caller's outcome.
    pub effect: Effect,
    /// The incident the effect is about, when it existed before.
    pub id: Option<i64>,
    /// How an incident this closes was resolved (see [`IncidentOutcome::closed`]).
    pub closed: Option<&'static str>,
}

/// The timer of a state: its next step's time, or now when a notice is owed.
pub fn timer(
    state: &IncidentState,
    policy: &IncidentPolicy,
    notice: bool,
    now: i64,
) -> Option<i64> {
    if notice {
        return Some(now);
    }
    next_due(state, policy).map(|d| d.at_ms)
}

/// Decides an offer against the key's live row at `now`.
pub(super) fn plan_offer(offer: &IncidentOffer, live: Option<LiveRow>, now: i64) -> OfferPlan {
    let parsed = match &live {
        None => None,
        Some((id, _, json)) => match IncidentState::from_json(json) {
            Ok(s) => Some((*id, s)),
            Err(e) => {
                // Not taken for a fresh one (that would open a second incident for the key): the row is
                // left alone and the event is notified as if the rule had no incident.
                tracing::error!(incident = id, error = %e, "incident row unreadable; the event is notified without it");
                return OfferPlan {
                    writes: vec![],
                    suppress: None,
                    effect: Effect::Unreadable,
                    id: Some(*id),
                    closed: None,
                };
            }
        },
    };
    let id = parsed.as_ref().map(|(id, _)| *id);
    // The opening rule's policy schedules the incident (a shared key); the event's own when that rule
    // is gone.
    let policy = parsed
        .as_ref()
        .and_then(|(_, s)| offer.policies.get(&s.rule))
        .unwrap_or(&offer.policy);
    let verdict = on_event(parsed.as_ref().map(|(_, s)| s), policy, &offer.facts, now);
    let mut plan = plan_verdict(verdict, id, policy, now);
    if offer.muted && plan.effect == Effect::Opened {
        // Muted when it happened: no new incident (a run-out one is still closed).
        plan.writes
            .retain(|w| !matches!(w, RowWrite::Insert { .. }));
        plan.effect = Effect::Muted;
    }
    plan
}

/// The rows and the deliveries' fate for the decider's verdict on the key's incident `id`.
fn plan_verdict(
    verdict: EventVerdict,
    id: Option<i64>,
    policy: &IncidentPolicy,
    now: i64,
) -> OfferPlan {
    match verdict {
        EventVerdict::Open { state, closed } => {
            let mut writes = Vec::new();
            if let (Some(id), Some(closed)) = (id, closed) {
                writes.push(RowWrite::Update {
                    id,
                    state: *closed,
                    next_at: None,
                    notice: None,
                    suppress_pending: Some(RAN_OUT.into()),
                });
            }
            let next_at = timer(&state, policy, false, now);
            let closed = (writes.len() == 1).then_some("resolve_after");
            writes.push(RowWrite::Insert { state, next_at });
            OfferPlan {
                writes,
                suppress: None,
                effect: Effect::Opened,
                id: None,
                closed,
            }
        }
        EventVerdict::Join(state) => {
            let id = id.expect("a join has a live incident");
            let reason = format!(
                "joined incident {id} ({} events since {})",
                state.events,
                crate::clock::rfc3339(state.opened_at_ms)
            );
            let next_at = timer(&state, policy, false, now);
            OfferPlan {
                writes: vec![RowWrite::Update {
                    id,
                    state,
                    next_at,
                    notice: None,
                    suppress_pending: None,
                }],
                suppress: Some(reason),
                effect: Effect::Joined,
                id: Some(id),
                closed: None,
            }
        }
        EventVerdict::Resolve(state) => {
            resolved(state, id.expect("a resolution has a live incident"), now)
        }
        EventVerdict::NoIncident => OfferPlan {
            writes: vec![],
            suppress: Some("resolve_on event: no incident open for its key".into()),
            effect: Effect::NothingToResolve,
            id: None,
            closed: None,
        },
    }
}

/// Why pending steps are cancelled when an incident runs out its `resolve_after`.
pub const RAN_OUT: &str = "the incident ran out its resolve_after";

/// An event resolved incident `id`: the circle is told of a resolution by an event (`resolve_on`); one
/// found run out is not news.
fn resolved(state: IncidentState, id: i64, now: i64) -> OfferPlan {
    let by_event = matches!(
        state.status,
        Live::Resolved {
            how: crate::incident::Resolution::ResolveOn,
            ..
        }
    );
    OfferPlan {
        writes: vec![RowWrite::Update {
            id,
            state,
            next_at: by_event.then_some(now),
            notice: by_event.then_some(Notice::Resolved),
            suppress_pending: Some(format!("incident {id} resolved")),
        }],
        suppress: Some(format!("resolves incident {id}")),
        effect: Effect::Resolved,
        id: Some(id),
        closed: Some(if by_event {
            "resolve_on"
        } else {
            "resolve_after"
        }),
    }
}

/// Applies an offer's plan to the event's deliveries: suppressed with the plan's reason, or tagged with
/// the incident `opened`.
pub(super) fn apply_to_deliveries(
    deliveries: &mut [NewDelivery],
    offer: &IncidentOffer,
    plan: &OfferPlan,
    opened: Option<i64>,
) {
    for &i in &offer.deliveries {
        let Some(d) = deliveries.get_mut(i) else {
            continue;
        };
        match &plan.suppress {
            Some(reason) => d.gates.suppress = Some(reason.clone()),
            None => d.incident_ref = opened,
        }
    }
}

/// The keys an event's incident offers lock on a shared database, prefixed so they never meet a noise
/// key (both are locked in one sorted list: see [`super::lock_keys`]).
pub(super) fn incident_lock_key(key: &str) -> String {
    format!("incident/{key}")
}

/// The event a write's deliveries are enqueued for: the incident's latest, judged now. The deliveries
/// are tagged with the incident (an acknowledgement cancels them while pending, and they count in its
/// circle).
pub(super) fn step_event(event: StoredEvent, w: &IncidentWrite) -> NewEvent {
    NewEvent {
        source: event.source,
        event_id: event.event_id,
        device_id: event.device_id,
        event_type: event.event_type,
        received_at_ms: w.now_ms,
        judged_at_ms: w.now_ms,
        txn: event.txn,
        payload: String::new(),
        deliveries: w
            .deliveries
            .iter()
            .map(|d| NewDelivery {
                incident_ref: Some(w.id),
                ..d.clone()
            })
            .collect(),
        claim_until: None,
        debounce: None,
        position_missing: false,
        incidents: Vec::new(),
    }
}

impl Effect {
    /// Its name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Effect::Opened => "opened",
            Effect::Joined => "joined",
            Effect::Resolved => "resolved",
            Effect::NothingToResolve => "nothing_to_resolve",
            Effect::Unreadable => "unreadable",
            Effect::Muted => "muted",
        }
    }
}
