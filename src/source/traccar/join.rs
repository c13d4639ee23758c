//! Joins socket events with the positions they refer to. Traccar pushes an event *before* its position:
//! its event handlers (and the `web` notificator that writes the `events` frame) run before
//! `PostProcessHandler` makes the position the device's latest and pushes the `positions` frame. An
//! event whose `positionId` is not yet known therefore waits here, briefly, for that frame; once its
//! wait is over the connection asks the REST API for what is still missing, and only then is the event
//! released to the rules. Events of one device leave in the order they came, so an event that needs no
//! position (or whose position is known) still waits behind an earlier one of the same device.
//!
//! Pure: the connection feeds it frames and the clock, and does the I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::event::{Envelope, Position};

/// One queued envelope.
#[derive(Debug)]
struct Item {
    /// Arrival order across devices, so that release keeps the socket's order where it can.
    seq: u64,
    env: Envelope,
    /// Until when it waits for its position on the socket.
    deadline: Instant,
    /// The wait is over (position found, fetched or given up on).
    settled: bool,
}

impl Item {
    fn awaits(&self) -> Option<i64> {
        (!self.settled).then_some(self.env.event.position_id)
    }
}

/// Events waiting for their positions, per device, in arrival order.
#[derive(Debug)]
pub struct Joiner {
    wait: Duration,
    queues: HashMap<i64, VecDeque<Item>>,
    next_seq: u64,
}

/// An event released without the position it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Event id.
    pub event_id: i64,
    /// Device id.
    pub device_id: i64,
    /// The position it referred to.
    pub position_id: i64,
}

impl Joiner {
    /// A joiner that lets an event wait `wait` for its position on the socket.
    pub fn new(wait: Duration) -> Joiner {
        Joiner {
            wait,
            queues: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Queues an envelope. One that lacks its position waits for it until `now + wait`.
    pub fn push(&mut self, env: Envelope, now: Instant) {
        let settled = !env.lacks_position();
        let item = Item {
            seq: self.next_seq,
            env,
            deadline: now + self.wait,
            settled,
        };
        self.next_seq += 1;
        self.queues
            .entry(item.env.event.device_id)
            .or_default()
            .push_back(item);
    }

    /// A position arrived (socket frame or REST answer): every waiting event of its device that refers
    /// to it gets it. Returns how many did.
    pub fn position(&mut self, p: &Position) -> usize {
        let Some(queue) = self.queues.get_mut(&p.device_id) else {
            return 0;
        };
        let mut joined = 0;
        for item in queue.iter_mut() {
            if item.awaits() == Some(p.id) {
                item.env.position = Some(p.clone());
                item.settled = true;
                joined += 1;
            }
        }
        joined
    }

    /// The position ids of waiting events whose wait on the socket is over at `now`, without repeats:
    /// what to ask the REST API for.
    pub fn overdue(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .queues
            .values()
            .flatten()
            .filter(|i| i.deadline <= now)
            .filter_map(Item::awaits)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Stops waiting for the events whose wait is over at `now` (all of them with `None`): they go on
    /// without their position. Returns them, for the log and the metrics.
    pub fn give_up(&mut self, now: Option<Instant>) -> Vec<Missing> {
        let mut missing = Vec::new();
        for item in self.queues.values_mut().flatten() {
            if item.awaits().is_some() && now.is_none_or(|now| item.deadline <= now) {
                item.settled = true;
                missing.push(Missing {
                    event_id: item.env.event.id,
                    device_id: item.env.event.device_id,
                    position_id: item.env.event.position_id,
                });
            }
        }
        missing
    }

    /// The envelopes that may go now, oldest first: for each device, the settled ones before its first
    /// one still waiting.
    pub fn ready(&mut self) -> Vec<Envelope> {
        let mut out = BTreeMap::new();
        self.queues.retain(|_, queue| {
            while queue.front().is_some_and(|i| i.settled) {
                let item = queue.pop_front().expect("front exists");
                out.insert(item.seq, item.env);
            }
            !queue.is_empty()
        });
        out.into_values().collect()
    }

    /// When the earliest wait ends, if anything waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .values()
            .flatten()
            .filter(|i| !i.settled)
            .map(|i| i.deadline)
            .min()
    }

    /// Events queued (waiting, or behind one that waits).
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn env(id: i64, device: i64, position_id: i64) -> Envelope {
        Envelope {
            event: Event {
                id,
                device_id: device,
                position_id,
                event_type: "alarm".into(),
                event_time: None,
                geofence_id: 0,
                maintenance_id: 0,
                attributes: Default::default(),
            },
            position: None,
            device: None,
            geofence: None,
            maintenance: None,
            group: None,
        }
    }

    fn pos(id: i64, device: i64) -> Position {
        Position {
            id,
            device_id: device,
            ..Position::default()
        }
    }

    fn ids(envs: &[Envelope]) -> Vec<i64> {
        envs.iter().map(|e| e.event.id).collect()
    }

    #[test]
    fn an_event_waits_for_its_position_and_keeps_its_devices_order() {
        let t0 = Instant::now();
        let mut j = Joiner::new(Duration::from_secs(2));
        j.push(env(1, 12, 100), t0);
        j.push(env(2, 12, 0), t0); // needs nothing, but device 12 has an earlier one waiting
        j.push(env(3, 27, 0), t0); // another device: free to go
        assert_eq!(ids(&j.ready()), [3]);
        assert_eq!(j.next_deadline(), Some(t0 + Duration::from_secs(2)));
        // A position of another device or id changes nothing.
        assert_eq!(j.position(&pos(100, 27)) + j.position(&pos(99, 12)), 0);
        assert!(j.ready().is_empty());
        assert_eq!(j.position(&pos(100, 12)), 1);
        let out = j.ready();
        assert_eq!(ids(&out), [1, 2]);
        assert_eq!(out[0].position.as_ref().unwrap().id, 100);
        assert!(out[1].position.is_none());
        assert!(j.is_empty() && j.next_deadline().is_none());
    }

    #[test]
    fn overdue_waits_are_fetched_then_given_up() {
        let t0 = Instant::now();
        let mut j = Joiner::new(Duration::from_secs(2));
        j.push(env(1, 12, 100), t0);
        j.push(env(2, 27, 200), t0 + Duration::from_secs(1));
        j.push(env(3, 27, 200), t0 + Duration::from_secs(1)); // double push of one position
        assert!(j.overdue(t0 + Duration::from_millis(1999)).is_empty());
        let at = t0 + Duration::from_secs(2);
        assert_eq!(j.overdue(at), [100]);
        assert_eq!(j.overdue(at + Duration::from_secs(1)), [100, 200]);
        // The REST answer had none for 100: it goes without.
        let missing = j.give_up(Some(at));
        assert_eq!(
            missing,
            [Missing {
                event_id: 1,
                device_id: 12,
                position_id: 100
            }]
        );
        assert_eq!(ids(&j.ready()), [1]);
        // Everything, e.g. when the socket ends.
        assert_eq!(j.give_up(None).len(), 2);
        assert_eq!(ids(&j.ready()), [2, 3]);
        assert_eq!(j.len(), 0);
    }

    #[test]
    fn events_with_their_position_or_none_to_wait_for_pass_straight_through() {
        let t0 = Instant::now();
        let mut j = Joiner::new(Duration::from_secs(2));
        let mut with = env(1, 12, 100);
        with.position = Some(pos(100, 12));
        j.push(with, t0);
        j.push(env(2, 12, 0), t0);
        assert_eq!(ids(&j.ready()), [1, 2]);
        assert!(j.overdue(t0 + Duration::from_secs(5)).is_empty());
    }
}
