//! What an incident's messages say about it: how many events since when, how far and which way the
//! device moved ("14 events since 02:41, last seen 300 m north"), as data for templates and as text.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::state::{IncidentState, Sighting};
use crate::geo;

/// A move shorter than this, in metres, is not called one: the fixes of a tracker that stands still
/// wander by about this much (more indoors, or under trees).
pub const MOVE_NOISE_M: f64 = 30.0;

/// An incident's facts at a moment, for a template (`{{ incident.count }}`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// Events joined, the first included.
    pub count: u64,
    /// When it opened, unix ms.
    pub opened_at_ms: i64,
    /// How long it has been open, ms.
    pub open_for_ms: i64,
    /// The latest position known.
    pub last_seen: Option<Sighting>,
    /// Distance from the first position known to the latest, metres.
    pub moved_m: Option<f64>,
    /// Which way, as one of the 8 points of the compass (`north`, `north-east`, ...), when the move is
    /// longer than [`MOVE_NOISE_M`].
    pub heading: Option<&'static str>,
}

/// The facts of an incident at `now_ms`.
pub fn facts(state: &IncidentState, now_ms: i64) -> Facts {
    let moved = state.first_seen.zip(state.last_seen).map(|(a, b)| {
        (
            geo::distance(a.lat, a.lon, b.lat, b.lon),
            geo::bearing(a.lat, a.lon, b.lat, b.lon),
        )
    });
    Facts {
        count: state.events,
        opened_at_ms: state.opened_at_ms,
        open_for_ms: (now_ms - state.opened_at_ms).max(0),
        last_seen: state.last_seen,
        moved_m: moved.map(|(d, _)| d),
        heading: moved
            .filter(|(d, _)| *d >= MOVE_NOISE_M)
            .map(|(_, b)| compass_point(b)),
    }
}

/// One of the 8 points of the compass for a bearing in degrees.
pub fn compass_point(bearing_deg: f64) -> &'static str {
    const POINTS: [&str; 8] = [
        "north",
        "north-east",
        "east",
        "south-east",
        "south",
        "south-west",
        "west",
        "north-west",
    ];
    let i = (bearing_deg.rem_euclid(360.0) / 45.0).round() as usize % 8;
    POINTS[i]
}

/// A distance as people say it: `80 m` (to 10 m), `1.2 km`, `14 km`.
pub fn human_distance(m: f64) -> String {
    if m < 995.0 {
        format!("{} m", ((m / 10.0).round() * 10.0) as i64)
    } else if m < 9_950.0 {
        format!("{:.1} km", m / 1000.0)
    } else {
        format!("{} km", (m / 1000.0).round() as i64)
    }
}

impl Facts {
    /// One line for a message, in the time zone `tz`: "14 events since 02:41, last seen 300 m north" (or
    /// "not moved"; without positions the part after the comma is left out). The opening time carries
    /// its date when it was on another day than `now_ms`.
    pub fn summary(&self, tz: Tz, now_ms: i64) -> String {
        let local = |ms: i64| {
            tz.from_utc_datetime(
                &DateTime::<Utc>::from_timestamp_millis(ms)
                    .unwrap_or_default()
                    .naive_utc(),
            )
        };
        let (opened, now) = (local(self.opened_at_ms), local(now_ms));
        let when = if opened.date_naive() == now.date_naive() {
            opened.format("%H:%M").to_string()
        } else {
            opened.format("%-d %b %H:%M").to_string()
        };
        let mut out = match self.count {
            1 => format!("1 event at {when}"),
            n => format!("{n} events since {when}"),
        };
        match (self.moved_m, self.heading) {
            (Some(m), Some(h)) => out.push_str(&format!(", last seen {} {h}", human_distance(m))),
            (Some(_), None) => out.push_str(", not moved"),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::state::Status;

    const M: i64 = 60_000;

    fn state(first: Option<(f64, f64)>, last: Option<(f64, f64)>) -> IncidentState {
        let seen = |p: Option<(f64, f64)>, at_ms| p.map(|(lat, lon)| Sighting { lat, lon, at_ms });
        IncidentState {
            version: 1,
            key: "theft-42".into(),
            rule: "theft".into(),
            // 2026-01-14 01:41 UTC = 02:41 in Vienna.
            opened_at_ms: 1_768_354_860_000,
            last_event_at_ms: 1_768_354_860_000 + 20 * M,
            events: 14,
            repeats_done: 0,
            escalations_done: 0,
            first_seen: seen(first, 1_768_354_860_000),
            last_seen: seen(last, 1_768_354_860_000 + 20 * M),
            status: Status::Open,
        }
    }

    #[test]
    fn summary_says_how_many_since_when_and_where() {
        let vienna: Tz = "Europe/Vienna".parse().unwrap();
        // 0.0027 degrees of latitude is about 300 m.
        let s = state(Some((48.2, 16.37)), Some((48.2027, 16.37)));
        let now = s.opened_at_ms + 25 * M;
        let f = facts(&s, now);
        assert_eq!(f.count, 14);
        assert_eq!(f.open_for_ms, 25 * M);
        assert_eq!(f.heading, Some("north"));
        assert!((f.moved_m.unwrap() - 300.6).abs() < 1.0, "{f:?}");
        assert_eq!(
            f.summary(vienna, now),
            "14 events since 02:41, last seen 300 m north"
        );
        // Standing still (GPS jitter), no position at all, a single event, another day.
        let still = facts(&state(Some((48.2, 16.37)), Some((48.2001, 16.3701))), now);
        assert_eq!(still.heading, None);
        assert_eq!(
            still.summary(vienna, now),
            "14 events since 02:41, not moved"
        );
        let blind = facts(&state(None, None), now);
        assert_eq!((blind.moved_m, blind.last_seen), (None, None));
        assert_eq!(blind.summary(vienna, now), "14 events since 02:41");
        let mut one = state(None, None);
        one.events = 1;
        assert_eq!(facts(&one, now).summary(vienna, now), "1 event at 02:41");
        let next_day = now + 24 * 60 * M;
        assert_eq!(
            facts(&s, next_day).summary(vienna, next_day),
            "14 events since 14 Jan 02:41, last seen 300 m north"
        );
    }

    #[test]
    fn compass_points_and_distances_read_as_people_say_them() {
        let cases = [
            (0.0, "north"),
            (22.4, "north"),
            (22.6, "north-east"),
            (90.0, "east"),
            (200.0, "south"),
            (210.0, "south-west"),
            (337.6, "north"),
            (359.9, "north"),
            (-90.0, "west"),
        ];
        for (deg, point) in cases {
            assert_eq!(compass_point(deg), point, "{deg}");
        }
        let cases = [
            (34.0, "30 m"),
            (300.6, "300 m"),
            (994.0, "990 m"),
            (996.0, "1.0 km"),
            (1_240.0, "1.2 km"),
            (14_300.0, "14 km"),
        ];
        for (m, text) in cases {
            assert_eq!(human_distance(m), text, "{m}");
        }
    }
}
