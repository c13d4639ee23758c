//! The incident decider: what an event does to the incident of its key (open, join, resolve), what an
//! acknowledgement or a resolution does, and which repeat and escalation steps are due when, on an
//! injected clock.

use serde::Serialize;

use super::policy::{ms, IncidentPolicy};
use super::state::{Ack, AckSource, IncidentState, Resolution, Sighting, Status, STATE_VERSION};
use crate::clock::rfc3339;

/// Why the event is offered to the incident of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// It matched the rule: it opens an incident or joins the open one.
    Match,
    /// It matched the rule's `resolve_on` (whether or not it matched the rule too: `resolve_on` is the
    /// narrower statement, as a disarm alarm is to all alarms): it resolves the open incident.
    ResolveOn,
}

/// What the decider needs of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts {
    /// Match or resolve_on.
    pub trigger: Trigger,
    /// The incident key, rendered from the policy's key template.
    pub key: String,
    /// The rule.
    pub rule: String,
    /// The event's position, if it has one on a map ([`Sighting::of`]).
    pub seen: Option<Sighting>,
}

/// What an event does to the incident of its key.
#[derive(Debug, Clone, PartialEq)]
pub enum EventVerdict {
    /// A new incident. `closed` is the key's previous incident when it had run out its
    /// `resolve_after` without anyone noticing yet (the relay was down, or no timer has run): it is
    /// resolved as of then, and written too.
    Open {
        /// The new incident.
        state: IncidentState,
        /// The previous one, now resolved (boxed: the verdict stays small).
        closed: Option<Box<IncidentState>>,
    },
    /// The event joins the incident (open or acknowledged): count and last position updated; the
    /// schedule is unchanged (it counts from the opening) and nothing is notified for the event.
    Join(IncidentState),
    /// The incident is resolved (by `resolve_on`, or by `resolve_after` found run out).
    Resolve(IncidentState),
    /// A `resolve_on` event with no incident open for its key: nothing to do.
    NoIncident,
}

/// Decides what an event does at `now_ms` (its arrival; the whole decider keeps to that one clock, the
/// event's own time dates only its position). After resolution the key's next event opens a new
/// incident; while acknowledged, events join it without restarting repeats (someone is on it; the count
/// and position still update, for the page and the API).
pub fn on_event(
    existing: Option<&IncidentState>,
    policy: &IncidentPolicy,
    facts: &EventFacts,
    now_ms: i64,
) -> EventVerdict {
    let live = existing.filter(|s| !s.status.is_resolved());
    let (live, closed) = match live {
        Some(s) if expired(s, policy, now_ms) => (None, Some(Box::new(run_out(s, policy)))),
        other => (other, None),
    };
    match (facts.trigger, live) {
        (Trigger::Match, None) => EventVerdict::Open {
            state: open(facts, now_ms),
            closed,
        },
        (Trigger::Match, Some(s)) => EventVerdict::Join(join(s, facts, now_ms)),
        (Trigger::ResolveOn, Some(s)) => {
            EventVerdict::Resolve(resolve(s, Resolution::ResolveOn, now_ms).0)
        }
        (Trigger::ResolveOn, None) => {
            closed.map_or(EventVerdict::NoIncident, |c| EventVerdict::Resolve(*c))
        }
    }
}

fn open(facts: &EventFacts, now_ms: i64) -> IncidentState {
    IncidentState {
        version: STATE_VERSION,
        key: facts.key.clone(),
        rule: facts.rule.clone(),
        opened_at_ms: now_ms,
        last_event_at_ms: now_ms,
        events: 1,
        repeats_done: 0,
        escalations_done: 0,
        first_seen: facts.seen,
        last_seen: facts.seen,
        status: Status::Open,
    }
}

fn join(s: &IncidentState, facts: &EventFacts, now_ms: i64) -> IncidentState {
    let mut s = s.clone();
    s.events += 1;
    s.last_event_at_ms = s.last_event_at_ms.max(now_ms);
    if let Some(seen) = facts.seen {
        s.first_seen = Some(match s.first_seen {
            Some(first) if first.at_ms <= seen.at_ms => first,
            _ => seen,
        });
        s.last_seen = Some(match s.last_seen {
            Some(last) if last.at_ms > seen.at_ms => last,
            _ => seen,
        });
    }
    s
}

/// An incident whose `resolve_after` ran out, resolved as of then.
fn run_out(s: &IncidentState, policy: &IncidentPolicy) -> IncidentState {
    resolve(s, Resolution::ResolveAfter, expires_at(s, policy)).0
}

/// When the incident closes by itself if no event joins it before: its last event plus `resolve_after`.
pub fn expires_at(state: &IncidentState, policy: &IncidentPolicy) -> i64 {
    state
        .last_event_at_ms
        .saturating_add(policy.resolve_after_ms())
}

/// Whether an incident not yet resolved has run out its `resolve_after` at `now_ms`.
pub fn expired(state: &IncidentState, policy: &IncidentPolicy, now_ms: i64) -> bool {
    !state.status.is_resolved() && now_ms >= expires_at(state, policy)
}

/// An acknowledgement that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The incident is closed; the next event of its key opens a new one.
    #[error("the incident was resolved at {}", rfc3339(*.at_ms))]
    Resolved {
        /// When it was resolved.
        at_ms: i64,
    },
}

/// Acknowledges an incident: no more repeats or escalations. Idempotent: acknowledging an acknowledged
/// incident changes nothing (the first acknowledgement stays, `changed` is false), so two people
/// pressing at once both see "acknowledged". A resolved incident cannot be acknowledged.
pub fn acknowledge(
    state: &IncidentState,
    by: &str,
    via: AckSource,
    now_ms: i64,
) -> Result<(IncidentState, bool), AckError> {
    match &state.status {
        Status::Open => {
            let mut s = state.clone();
            s.status = Status::Acknowledged(Ack {
                by: by.to_string(),
                via,
                at_ms: now_ms,
            });
            Ok((s, true))
        }
        Status::Acknowledged(_) => Ok((state.clone(), false)),
        Status::Resolved { at_ms, .. } => Err(AckError::Resolved { at_ms: *at_ms }),
    }
}

/// Resolves an incident (open or acknowledged; an acknowledgement is kept with the resolution).
/// Idempotent: a resolved incident stays as it was, `changed` false.
pub fn resolve(state: &IncidentState, how: Resolution, at_ms: i64) -> (IncidentState, bool) {
    let ack = match &state.status {
        Status::Resolved { .. } => return (state.clone(), false),
        Status::Acknowledged(a) => Some(a.clone()),
        Status::Open => None,
    };
    let mut s = state.clone();
    s.status = Status::Resolved { how, at_ms, ack };
    (s, true)
}

/// A step of an incident's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "step", content = "n", rename_all = "snake_case")]
pub enum Step {
    /// It closes by itself (`resolve_after`).
    Expire,
    /// Escalation step `i` (0-based, index into the policy's `escalate`).
    Escalate(usize),
    /// Repeat `n` (1-based).
    Repeat(u32),
}

/// A step and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Due {
    /// Unix ms.
    pub at_ms: i64,
    /// What.
    pub step: Step,
}

impl Due {
    /// As the API and `explain` show it: `{"at": RFC 3339, "step": "repeat" | "escalate" | "expire",
    /// "n": …}`, steps counted from 1 as messages count them ("Reminder 2", "Escalated (step 1)").
    pub fn to_json(&self) -> serde_json::Value {
        let (step, n) = match self.step {
            Step::Expire => ("expire", None),
            Step::Escalate(i) => ("escalate", Some(i as u64 + 1)),
            Step::Repeat(n) => ("repeat", Some(u64::from(n))),
        };
        serde_json::json!({ "at": rfc3339(self.at_ms), "step": step, "n": n })
    }
}

/// The steps still to come, in the order they fall due. Of steps due at the same time, expiry comes
/// first (nothing is sent for a closed incident), then escalations, then the repeat. An open incident
/// has its remaining repeats and escalations and its expiry; an acknowledged one only its expiry (which
/// moves with each event that joins it); a resolved one none.
pub fn schedule(state: &IncidentState, policy: &IncidentPolicy) -> Vec<Due> {
    let mut all: Vec<Due> = steps(state, policy).collect();
    all.sort_by_key(|d| (d.at_ms, d.step));
    all
}

/// The next step: the first of [`schedule`]. After [`tick`] at `now`, it is later than `now`.
pub fn next_due(state: &IncidentState, policy: &IncidentPolicy) -> Option<Due> {
    steps(state, policy).min_by_key(|d| (d.at_ms, d.step))
}

/// Every step to come, unordered.
fn steps<'a>(
    state: &'a IncidentState,
    policy: &'a IncidentPolicy,
) -> impl Iterator<Item = Due> + 'a {
    let live = !state.status.is_resolved();
    let open = state.status == Status::Open;
    let opened = state.opened_at_ms;
    let expiry = live.then(|| Due {
        at_ms: expires_at(state, policy),
        step: Step::Expire,
    });
    let escalations = policy
        .escalate
        .iter()
        .enumerate()
        .skip(state.escalations_done as usize)
        .filter(move |_| open)
        .map(move |(i, e)| Due {
            at_ms: opened.saturating_add(ms(e.after)),
            step: Step::Escalate(i),
        });
    let repeats = policy
        .repeat
        .filter(|_| open)
        .into_iter()
        .flat_map(move |r| {
            (state.repeats_done.saturating_add(1)..=r.max).map(move |n| Due {
                at_ms: opened.saturating_add(ms(r.every).saturating_mul(n as i64)),
                step: Step::Repeat(n),
            })
        });
    expiry.into_iter().chain(escalations).chain(repeats)
}

/// What a timer run does at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The state after the run (steps counted done, or resolved).
    pub state: IncidentState,
    /// The steps to send now, in order: escalations first, then the repeat.
    pub send: Vec<Step>,
}

/// Runs the incident's timer at `now_ms`: resolves it if its `resolve_after` ran out (as of that
/// time, sending nothing), else takes the steps that are due. Catching up after a pause (a restart, a
/// timer that ran late): every escalation due is sent once, in order (each brings in other people);
/// of the repeats due only the latest is sent (the ones before it are counted done), so a relay that
/// was down for half an hour sends one reminder, not six. An acknowledged incident sends nothing.
pub fn tick(state: &IncidentState, policy: &IncidentPolicy, now_ms: i64) -> Tick {
    if expired(state, policy, now_ms) {
        return Tick {
            state: run_out(state, policy),
            send: Vec::new(),
        };
    }
    let mut s = state.clone();
    let mut send = Vec::new();
    if s.status != Status::Open {
        return Tick { state: s, send };
    }
    let elapsed = (now_ms - s.opened_at_ms).max(0);
    while let Some(e) = policy.escalate.get(s.escalations_done as usize) {
        if ms(e.after) > elapsed {
            break;
        }
        send.push(Step::Escalate(s.escalations_done as usize));
        s.escalations_done += 1;
    }
    if let Some(r) = policy.repeat {
        let due = u32::try_from(elapsed / ms(r.every).max(1))
            .unwrap_or(u32::MAX)
            .min(r.max);
        if due > s.repeats_done {
            send.push(Step::Repeat(due));
            s.repeats_done = due;
        }
    }
    Tick { state: s, send }
}

/// The escalation targets reached so far (indices as in [`super::Escalation::notify`]), in order: the
/// circle an incident has widened to.
pub fn escalated_targets(state: &IncidentState, policy: &IncidentPolicy) -> Vec<usize> {
    policy
        .escalate
        .iter()
        .take(state.escalations_done as usize)
        .flat_map(|e| e.notify.iter().copied())
        .collect()
}
