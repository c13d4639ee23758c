//! Incidents, decided purely: an alarm opens an incident that events of the same key join, that repeats
//! and escalates on a schedule until a person acknowledges it, and that closes by `resolve_on`,
//! `resolve_after` or by hand.
//!
//! Like [`crate::noise`], the logic is written once, here, over plain state on an injected clock: the
//! store will keep [`IncidentState`] rows and decide with these functions inside the transaction that
//! accepts an event, so every backend decides alike and a restart loses no timer (see
//! `docs/design/incidents.md` for the wiring). The schedule is not stored: it follows from when the
//! incident opened and the steps done, so a changed policy applies to open incidents at once.
//!
//! - [`policy`]: a rule's `incident:` section validated into an [`IncidentPolicy`], with its bounds.
//! - [`state`]: [`IncidentState`] and its stored form; acknowledgement sources ([`AckSource`]).
//! - [`decide`]: [`on_event`], [`acknowledge`], [`resolve`], [`schedule`], [`next_due`], [`tick`].
//! - [`facts`]: what the messages say ("14 events since 02:41, last seen 300 m north").

pub mod decide;
pub mod facts;
pub mod policy;
pub mod state;

pub use decide::{
    acknowledge, escalated_targets, expired, expires_at, next_due, on_event, resolve, schedule,
    tick, AckError, Due, EventFacts, EventVerdict, Step, Tick, Trigger,
};
pub use facts::{facts, Facts};
pub use policy::{Escalation, IncidentPolicy, Repeat};
pub use state::{
    Ack, AckSource, IncidentState, Resolution, Sighting, StateError, Status, STATE_VERSION,
};

#[cfg(test)]
mod tests;
