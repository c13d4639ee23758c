//! [`ZoneTracker`]: positions in, enter/exit crossings out, per device and zone, with an optional
//! dwell time; the zones found through their [`ZoneIndex`], the state kept only where a device is
//! inside or about to be.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::{Zone, ZoneIndex};

/// Entering or leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// `geofenceEnter`.
    Enter,
    /// `geofenceExit`.
    Exit,
}

impl Crossing {
    /// The Traccar event type.
    pub fn event_type(self) -> &'static str {
        match self {
            Crossing::Enter => "geofenceEnter",
            Crossing::Exit => "geofenceExit",
        }
    }
}

impl fmt::Display for Crossing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event_type())
    }
}

/// Where a device is in a zone it has state for; outside is the absence of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside since this time, the dwell not yet served.
    Pending(DateTime<Utc>),
    Inside,
}

/// One device: the zones it is inside or pending in (zone positions in the current list), and the
/// zone-list generation of its latest position.
#[derive(Debug)]
struct DeviceState {
    seen: u32,
    zones: Vec<(u32, State)>,
}

/// Per device and zone: outside, pending enter (since), inside. Pure: positions and times go in,
/// crossings come out.
///
/// The first position of a device for a zone only sets the state (inside or outside) without a
/// crossing: after a restart a bike parked at home does not "enter" home again, nor does a device
/// inside a zone that a geofence refresh has just added. A dwell time is only checked when a position
/// arrives; a device that goes quiet inside a zone enters it with its next position.
///
/// How: the tracker owns the zone list and its [`ZoneIndex`], so a position is tested exactly only
/// against the zones whose bounding box holds it. A device keeps state only for the zones it is
/// inside or pending in. Every zone list is a new generation; each zone remembers the generation that
/// added it (its key kept across refreshes keeps it) and each device the generation of its latest
/// position, so "outside" (no state, and the device has had a position since the zone came) is told
/// from "never seen" (the first position for that zone).
#[derive(Debug, Default)]
pub struct ZoneTracker {
    zones: Vec<Zone>,
    index: ZoneIndex,
    /// Per zone: the generation that added it.
    added: Vec<u32>,
    /// The current generation (1 for the first zone list; 0 means "before any").
    generation: u32,
    devices: HashMap<i64, DeviceState>,
    /// Candidates of the position being handled (kept to reuse its allocation).
    scratch: Vec<u32>,
}

impl ZoneTracker {
    /// A tracker of `zones`.
    pub fn new(zones: Vec<Zone>) -> ZoneTracker {
        let mut tracker = ZoneTracker::default();
        tracker.set_zones(zones);
        tracker
    }

    /// The zones, in the order [`ZoneTracker::update`]'s crossings refer to.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Replaces the zone list (after a geofence refresh): devices keep their state in zones whose key
    /// ([`Zone::key`]) is still there and forget the others; a zone with a new key counts as never
    /// seen by every device.
    pub fn set_zones(&mut self, zones: Vec<Zone>) {
        self.generation += 1;
        let old: HashMap<String, usize> = self
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.key(), i))
            .collect();
        // Old position -> new position, for the zones that stay.
        let mut moved = vec![None; self.zones.len()];
        let mut added = Vec::with_capacity(zones.len());
        for (i, z) in zones.iter().enumerate() {
            let pos = u32::try_from(i).expect("fewer than 2^32 zones");
            match old.get(&z.key()) {
                Some(&was) => {
                    moved[was] = Some(pos);
                    added.push(self.added[was]);
                }
                None => added.push(self.generation),
            }
        }
        for device in self.devices.values_mut() {
            device
                .zones
                .retain_mut(|(zone, _)| match moved[*zone as usize] {
                    Some(now) => {
                        *zone = now;
                        true
                    }
                    None => false,
                });
        }
        self.index = ZoneIndex::new(&zones);
        self.zones = zones;
        self.added = added;
    }

    /// Feeds one position of `device` at `time`; returns the crossings it causes, in zone order.
    /// Positions older than the last one seen are the caller's to drop.
    pub fn update(
        &mut self,
        device: i64,
        lat: f64,
        lon: f64,
        time: DateTime<Utc>,
    ) -> Vec<(usize, Crossing)> {
        let mut inside = std::mem::take(&mut self.scratch);
        inside.clear();
        self.index.candidates(lat, lon, &mut inside);
        inside.retain(|&z| self.zones[z as usize].shape.contains(lat, lon));
        let state = self.devices.entry(device).or_insert(DeviceState {
            seen: 0,
            zones: Vec::new(),
        });
        let mut out = Vec::new();
        // Zones left: an exit where it was inside, silence where the dwell was still pending.
        state.zones.retain(|(zone, st)| {
            if inside.binary_search(zone).is_ok() {
                return true;
            }
            if *st == State::Inside {
                out.push((*zone as usize, Crossing::Exit));
            }
            false
        });
        for &zone in &inside {
            let z = &self.zones[zone as usize];
            match state.zones.iter_mut().find(|(i, _)| *i == zone) {
                Some((_, st)) => {
                    if let State::Pending(since) = *st {
                        if (time - since).to_std().is_ok_and(|d| d >= z.dwell) {
                            *st = State::Inside;
                            out.push((zone as usize, Crossing::Enter));
                        }
                    }
                }
                // Its first position for this zone: inside, silently.
                None if self.added[zone as usize] > state.seen => {
                    state.zones.push((zone, State::Inside))
                }
                None if z.dwell.is_zero() => {
                    state.zones.push((zone, State::Inside));
                    out.push((zone as usize, Crossing::Enter));
                }
                None => state.zones.push((zone, State::Pending(time))),
            }
        }
        state.seen = self.generation;
        self.scratch = inside;
        out.sort_unstable_by_key(|(zone, _)| *zone);
        out
    }

    /// An estimate of the memory the per-device state takes, in bytes: the hash table's slots (its
    /// capacity over hashbrown's 7/8 load factor, each slot a key, a value and a control byte) plus
    /// each device's zone list (its capacity). Allocator overhead is not counted.
    pub fn state_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(i64, DeviceState)>() + 1;
        let table = self.devices.capacity() * 8 / 7 * slot;
        let lists: usize = self
            .devices
            .values()
            .map(|d| d.zones.capacity() * std::mem::size_of::<(u32, State)>())
            .sum();
        table + lists
    }

    /// Devices with state.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Shape;
    use std::time::Duration;

    fn zone(dwell: u64) -> Zone {
        let area = "CIRCLE (47.26221 11.41352, 50)".to_string();
        Zone {
            id: 0,
            name: "home".into(),
            shape: Shape::parse(&area, None).unwrap(),
            area,
            dwell: Duration::from_secs(dwell),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const IN: (f64, f64) = (47.26221, 11.41352);
    const OUT: (f64, f64) = (47.263421, 11.412008);

    fn run(tracker: &mut ZoneTracker, steps: &[(i64, (f64, f64))]) -> Vec<Option<Crossing>> {
        steps
            .iter()
            .map(|(s, p)| {
                let c = tracker.update(12, p.0, p.1, t(*s));
                assert!(c.len() <= 1);
                c.first().map(|(_, c)| *c)
            })
            .collect()
    }

    #[test]
    fn crossings_without_dwell() {
        let mut tr = ZoneTracker::new(vec![zone(0)]);
        let got = run(&mut tr, &[(0, OUT), (1, IN), (2, IN), (3, OUT), (4, OUT)]);
        assert_eq!(
            got,
            [
                None,
                Some(Crossing::Enter),
                None,
                Some(Crossing::Exit),
                None
            ]
        );
        // Another device has its own state: its first position sets it silently.
        assert!(tr.update(27, IN.0, IN.1, t(5)).is_empty());
    }

    #[test]
    fn dwell_delays_the_enter_and_jitter_cancels_it() {
        let mut tr = ZoneTracker::new(vec![zone(60)]);
        let got = run(
            &mut tr,
            &[
                (0, OUT),
                (10, IN),
                (40, OUT),
                (50, IN),
                (100, IN),
                (110, IN),
                (200, IN),
                (300, OUT),
            ],
        );
        assert_eq!(
            got,
            [
                None,
                None,
                None,
                None,
                None,
                Some(Crossing::Enter),
                None,
                Some(Crossing::Exit)
            ]
        );
    }

    #[test]
    fn first_position_inside_is_not_an_enter() {
        let mut tr = ZoneTracker::new(vec![zone(0)]);
        assert_eq!(
            run(&mut tr, &[(0, IN), (1, IN), (2, OUT)]),
            [None, None, Some(Crossing::Exit)]
        );
        tr.set_zones(vec![]);
        tr.set_zones(vec![zone(0)]);
        assert_eq!(run(&mut tr, &[(3, IN)]), [None]);
    }

    fn circle(id: i64, (lat, lon): (f64, f64), radius: f64, dwell: u64) -> Zone {
        let area = format!("CIRCLE ({lat} {lon}, {radius})");
        Zone {
            id,
            name: format!("c{id}"),
            shape: Shape::parse(&area, None).unwrap(),
            area,
            dwell: Duration::from_secs(dwell),
        }
    }

    #[test]
    fn a_zone_added_by_a_refresh_starts_silently() {
        let home = zone(0);
        let mut tr = ZoneTracker::new(vec![home.clone()]);
        // Device 12 is known (outside home); device 27 too, inside home.
        assert!(tr.update(12, OUT.0, OUT.1, t(0)).is_empty());
        assert!(tr.update(27, IN.0, IN.1, t(0)).is_empty());
        // A refresh adds a zone around IN before home: both devices' next positions there set its
        // state silently; device 12 enters home, which it was known to be outside of.
        let garage = circle(9, IN, 30.0, 0);
        tr.set_zones(vec![garage.clone(), home.clone()]);
        assert_eq!(tr.update(12, IN.0, IN.1, t(1)), [(1, Crossing::Enter)]);
        assert!(tr.update(27, IN.0, IN.1, t(1)).is_empty());
        // From now on the garage is known to both: leaving is an exit of both zones, in zone order.
        let both = [(0, Crossing::Exit), (1, Crossing::Exit)];
        assert_eq!(tr.update(12, OUT.0, OUT.1, t(2)), both);
        assert_eq!(tr.update(27, OUT.0, OUT.1, t(2)), both);
        assert_eq!(
            tr.update(27, IN.0, IN.1, t(3)),
            [(0, Crossing::Enter), (1, Crossing::Enter)]
        );
        // A refresh that drops the garage and adds it back: new again, so silent.
        tr.set_zones(vec![home.clone()]);
        tr.set_zones(vec![home.clone(), garage.clone()]);
        assert_eq!(tr.update(12, IN.0, IN.1, t(4)), [(0, Crossing::Enter)]);
        assert_eq!(tr.update(12, OUT.0, OUT.1, t(5)), both);
        assert_eq!(
            tr.update(12, IN.0, IN.1, t(6)),
            [(0, Crossing::Enter), (1, Crossing::Enter)]
        );
        // A refresh that keeps both, reordered, keeps their states: device 12 is inside both; device
        // 27 was forgotten in the garage when it was dropped, and is still inside home.
        tr.set_zones(vec![garage, home]);
        assert_eq!(tr.update(12, OUT.0, OUT.1, t(7)), both);
        assert_eq!(tr.update(27, OUT.0, OUT.1, t(7)), [(1, Crossing::Exit)]);
        // A device that only ever had positions outside every zone's box is known, too.
        assert!(tr.update(40, 0.0, 0.0, t(7)).is_empty());
        assert_eq!(
            tr.update(40, IN.0, IN.1, t(8)),
            [(0, Crossing::Enter), (1, Crossing::Enter)]
        );
    }

    /// The tracker as it was before the index: every zone tested, state per device and zone key.
    #[derive(Default)]
    struct Reference {
        state: HashMap<(i64, String), Option<State>>,
    }

    impl Reference {
        fn update(
            &mut self,
            zones: &[Zone],
            device: i64,
            p: (f64, f64),
            time: DateTime<Utc>,
        ) -> Vec<(usize, Crossing)> {
            let mut out = Vec::new();
            for (i, z) in zones.iter().enumerate() {
                let inside = z.shape.contains(p.0, p.1);
                let Some(st) = self.state.get_mut(&(device, z.key())) else {
                    self.state
                        .insert((device, z.key()), inside.then_some(State::Inside));
                    continue;
                };
                let dwelt =
                    |since: DateTime<Utc>| (time - since).to_std().is_ok_and(|d| d >= z.dwell);
                let (next, crossing) = match (*st, inside) {
                    (None, true) if z.dwell.is_zero() => {
                        (Some(State::Inside), Some(Crossing::Enter))
                    }
                    (None, true) => (Some(State::Pending(time)), None),
                    (Some(State::Pending(since)), true) if dwelt(since) => {
                        (Some(State::Inside), Some(Crossing::Enter))
                    }
                    (Some(State::Pending(_)), false) => (None, None),
                    (Some(State::Inside), false) => (None, Some(Crossing::Exit)),
                    (s, _) => (s, None),
                };
                *st = next;
                out.extend(crossing.map(|c| (i, c)));
            }
            out
        }

        fn retain(&mut self, zones: &[Zone]) {
            let keys: std::collections::HashSet<String> = zones.iter().map(Zone::key).collect();
            self.state.retain(|(_, k), _| keys.contains(k));
        }
    }

    #[test]
    fn same_crossings_as_testing_every_zone() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(22);
        // Overlapping circles on a 2 km square, some with a dwell; refreshes drop and add some.
        let all: Vec<Zone> = (1..=12)
            .map(|id| {
                let c = (
                    47.0 + rng.random_range(0.0..0.02),
                    11.0 + rng.random_range(0.0..0.02),
                );
                circle(
                    id,
                    c,
                    rng.random_range(100.0..800.0),
                    [0, 0, 30][id as usize % 3],
                )
            })
            .collect();
        let pick = |rng: &mut StdRng| -> Vec<Zone> {
            all.iter()
                .filter(|_| rng.random_bool(0.7))
                .cloned()
                .collect()
        };
        let mut zones = pick(&mut rng);
        let (mut tr, mut reference) = (ZoneTracker::new(zones.clone()), Reference::default());
        let mut crossings = 0;
        for step in 0..20_000 {
            if step % 1_000 == 999 {
                zones = pick(&mut rng);
                tr.set_zones(zones.clone());
                reference.retain(&zones);
            }
            let device = rng.random_range(0..30);
            let p = (
                47.0 + rng.random_range(-0.002..0.022),
                11.0 + rng.random_range(-0.002..0.022),
            );
            let time = t(step / 10);
            let want = reference.update(&zones, device, p, time);
            assert_eq!(tr.update(device, p.0, p.1, time), want, "step {step}");
            crossings += want.len();
        }
        assert!(crossings > 2_000, "{crossings}");
    }
}
