//! Tests of the incident decider on explicit clocks: the schedule of repeats and escalations, catching
//! up after a pause, acknowledgement and resolution, events joining, and the stored form.

use std::time::Duration;

use super::*;

const M: i64 = 60_000;
const T0: i64 = 1_768_354_860_000;
/// No step sent.
const NONE: [Step; 0] = [];
/// No step sent by a run of timers.
const QUIET: [(i64, Step); 0] = [];

fn min(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

/// Repeats every 5 min at most `max` times, escalations at 10 and 30 min, closed after 2 h of quiet.
fn policy(max: u32) -> IncidentPolicy {
    IncidentPolicy {
        key: None,
        repeat: Some(Repeat { every: min(5), max }),
        escalate: vec![
            Escalation {
                after: min(10),
                notify: vec![0],
            },
            Escalation {
                after: min(30),
                notify: vec![1, 2],
            },
        ],
        resolve_after: min(120),
        resolve_on: true,
    }
}

/// Resolved by `resolve_after`, `minutes` after [`T0`].
fn run_out_at(minutes: i64, ack: Option<Ack>) -> Status {
    Status::Resolved {
        how: Resolution::ResolveAfter,
        at_ms: T0 + minutes * M,
        ack,
    }
}

/// A step due `minutes` after [`T0`].
fn due(minutes: i64, step: Step) -> Due {
    Due {
        at_ms: T0 + minutes * M,
        step,
    }
}

fn seen(lat: f64, lon: f64, at_ms: i64) -> Option<Sighting> {
    Some(Sighting { lat, lon, at_ms })
}

fn alarm(seen: Option<Sighting>) -> EventFacts {
    EventFacts {
        trigger: Trigger::Match,
        key: "theft-42".into(),
        rule: "theft".into(),
        seen,
    }
}

fn disarm() -> EventFacts {
    EventFacts {
        trigger: Trigger::ResolveOn,
        ..alarm(None)
    }
}

/// A new incident opened at `at`.
fn opened(p: &IncidentPolicy, at: i64) -> IncidentState {
    match on_event(None, p, &alarm(seen(48.2, 16.37, at)), at) {
        EventVerdict::Open {
            state,
            closed: None,
        } => state,
        v => panic!("{v:?}"),
    }
}

/// Runs the timer at each due time until `until` (as the store's scheduled timer would), returning
/// each step sent with its minute after the opening.
fn run(s: &mut IncidentState, p: &IncidentPolicy, until: i64) -> Vec<(i64, Step)> {
    let mut sent = Vec::new();
    while let Some(due) = next_due(s, p).filter(|d| d.at_ms <= until) {
        let t = tick(s, p, due.at_ms);
        sent.extend(
            t.send
                .iter()
                .map(|st| ((due.at_ms - s.opened_at_ms) / M, *st)),
        );
        *s = t.state;
    }
    sent
}

#[test]
fn repeats_at_5_10_15_minutes_stop_at_max_repeats() {
    let p = IncidentPolicy {
        escalate: vec![],
        ..policy(3)
    };
    let mut s = opened(&p, T0);
    assert_eq!(
        schedule(&s, &p),
        [
            due(5, Step::Repeat(1)),
            due(10, Step::Repeat(2)),
            due(15, Step::Repeat(3)),
            due(120, Step::Expire),
        ]
    );
    // Nothing before it is due.
    assert_eq!(tick(&s, &p, T0 + 5 * M - 1).send, NONE);
    assert_eq!(
        run(&mut s, &p, T0 + 60 * M),
        [
            (5, Step::Repeat(1)),
            (10, Step::Repeat(2)),
            (15, Step::Repeat(3))
        ]
    );
    assert_eq!(s.repeats_done, 3);
    // After the last repeat only the expiry is left.
    assert_eq!(next_due(&s, &p), Some(due(120, Step::Expire)));
}

#[test]
fn escalations_at_10_and_30_minutes_between_the_repeats() {
    let p = policy(12);
    let mut s = opened(&p, T0);
    let sent = run(&mut s, &p, T0 + 61 * M);
    let mut expected: Vec<(i64, Step)> =
        (1..=12).map(|n| (5 * n as i64, Step::Repeat(n))).collect();
    expected.insert(1, (10, Step::Escalate(0)));
    expected.insert(6, (30, Step::Escalate(1)));
    assert_eq!(sent, expected);
    assert_eq!((s.repeats_done, s.escalations_done), (12, 2));
    assert_eq!(escalated_targets(&s, &p), [0, 1, 2]);
    // The incident stays open (unacknowledged) until it runs out, then closes and sends nothing more.
    assert_eq!(s.status, Status::Open);
    assert_eq!(run(&mut s, &p, T0 + 500 * M), QUIET);
    assert_eq!(s.status, run_out_at(120, None));
    assert_eq!(next_due(&s, &p), None);
}

#[test]
fn acknowledgement_stops_repeats_and_escalation() {
    let p = policy(12);
    let mut s = opened(&p, T0);
    assert_eq!(run(&mut s, &p, T0 + 12 * M).len(), 3, "R1, E0, R2");
    assert_eq!(escalated_targets(&s, &p), [0]);
    let (acked, changed) = acknowledge(&s, "Lena", AckSource::Link, T0 + 12 * M).unwrap();
    assert!(changed);
    let ack = Ack {
        by: "Lena".into(),
        via: AckSource::Link,
        at_ms: T0 + 12 * M,
    };
    assert_eq!(acked.status, Status::Acknowledged(ack.clone()));
    // Only the expiry is left; a timer run when a repeat would have been due sends nothing.
    assert_eq!(schedule(&acked, &p), [due(120, Step::Expire)]);
    assert_eq!(tick(&acked, &p, T0 + 15 * M).send, NONE);
    assert_eq!(tick(&acked, &p, T0 + 30 * M).send, NONE);
    s = acked;
    assert_eq!(run(&mut s, &p, T0 + 119 * M), QUIET);
    // It closes by itself later, the acknowledgement kept with the resolution.
    assert_eq!(run(&mut s, &p, T0 + 120 * M), QUIET);
    assert_eq!(s.status, run_out_at(120, Some(ack)));
}

#[test]
fn a_second_acknowledgement_changes_nothing_and_a_resolved_incident_takes_none() {
    let p = policy(12);
    let s = opened(&p, T0);
    let (first, changed) = acknowledge(&s, "Lena", AckSource::Link, T0 + M).unwrap();
    assert!(changed);
    let (second, changed) = acknowledge(&first, "admin", AckSource::Api, T0 + 2 * M).unwrap();
    assert!(!changed);
    assert_eq!(second, first, "the first acknowledgement stays");
    let (resolved, changed) = resolve(&first, Resolution::ResolveOn, T0 + 3 * M);
    assert!(changed);
    let err = acknowledge(&resolved, "Lena", AckSource::Cli, T0 + 4 * M).unwrap_err();
    assert_eq!(err, AckError::Resolved { at_ms: T0 + 3 * M });
    assert_eq!(
        err.to_string(),
        "the incident was resolved at 2026-01-14T01:44:00.000Z"
    );
}

#[test]
fn manual_resolution_is_recorded_and_idempotent() {
    let p = policy(12);
    let s = opened(&p, T0);
    let how = Resolution::Manual {
        by: "admin".into(),
        via: AckSource::Cli,
    };
    let (r, changed) = resolve(&s, how.clone(), T0 + 7 * M);
    assert!(changed);
    assert_eq!(
        r.status,
        Status::Resolved {
            how: how.clone(),
            at_ms: T0 + 7 * M,
            ack: None
        }
    );
    let (again, changed) = resolve(&r, Resolution::ResolveOn, T0 + 8 * M);
    assert!(!changed);
    assert_eq!(again, r);
    // A resolved incident has no schedule, and its timer does nothing.
    assert!(schedule(&r, &p).is_empty());
    assert_eq!(
        tick(&r, &p, T0 + 10 * M),
        Tick {
            state: r,
            send: vec![]
        }
    );
}

#[test]
fn resolve_after_counts_from_the_last_event() {
    let p = policy(12);
    let mut s = opened(&p, T0);
    for at in [T0 + 30 * M, T0 + 90 * M] {
        let EventVerdict::Join(j) = on_event(Some(&s), &p, &alarm(None), at) else {
            panic!()
        };
        s = j;
    }
    assert_eq!(expires_at(&s, &p), T0 + 210 * M);
    assert!(!expired(&s, &p, T0 + 210 * M - 1));
    assert!(expired(&s, &p, T0 + 210 * M));
    // A relay that was down past the expiry closes the incident as of the expiry and sends none of the
    // steps missed meanwhile.
    let t = tick(&s, &p, T0 + 300 * M);
    assert_eq!(t.send, NONE);
    assert_eq!(t.state.status, run_out_at(210, None));
    assert!(
        !expired(&t.state, &p, T0 + 400 * M),
        "resolved is not expired"
    );
}

#[test]
fn an_event_after_resolution_opens_a_new_incident() {
    let p = policy(12);
    let mut s = opened(&p, T0);
    run(&mut s, &p, T0 + 12 * M);
    let EventVerdict::Resolve(r) = on_event(Some(&s), &p, &disarm(), T0 + 20 * M) else {
        panic!()
    };
    assert!(matches!(
        r.status,
        Status::Resolved { how: Resolution::ResolveOn, at_ms, ack: None } if at_ms == T0 + 20 * M
    ));
    // Another disarm finds nothing to resolve.
    assert_eq!(
        on_event(Some(&r), &p, &disarm(), T0 + 21 * M),
        EventVerdict::NoIncident
    );
    assert_eq!(on_event(None, &p, &disarm(), T0), EventVerdict::NoIncident);
    // The next alarm opens a fresh incident: new opening time, count and schedule.
    let EventVerdict::Open {
        state: n,
        closed: None,
    } = on_event(Some(&r), &p, &alarm(None), T0 + 25 * M)
    else {
        panic!()
    };
    assert_eq!(
        (
            n.opened_at_ms,
            n.events,
            n.repeats_done,
            n.escalations_done,
            &n.status
        ),
        (T0 + 25 * M, 1, 0, 0, &Status::Open)
    );
    assert_eq!(next_due(&n, &p), Some(due(30, Step::Repeat(1))));
}

#[test]
fn an_incident_found_run_out_is_closed_as_of_then() {
    let p = policy(12);
    let s = opened(&p, T0);
    let (acked, _) = acknowledge(&s, "Lena", AckSource::Api, T0 + M).unwrap();
    // No timer ran (the relay was down): the next alarm closes the old incident and opens a new one.
    let EventVerdict::Open {
        state,
        closed: Some(c),
    } = on_event(Some(&acked), &p, &alarm(None), T0 + 150 * M)
    else {
        panic!()
    };
    assert_eq!(state.opened_at_ms, T0 + 150 * M);
    let Status::Acknowledged(ack) = acked.status else {
        panic!()
    };
    assert_eq!(c.status, run_out_at(120, Some(ack)), "the ack kept");
    // A disarm then resolves it as having run out, not by `resolve_on`.
    assert_eq!(
        on_event(Some(&s), &p, &disarm(), T0 + 150 * M),
        EventVerdict::Resolve(IncidentState {
            status: run_out_at(120, None),
            ..s.clone()
        })
    );
}

#[test]
fn joining_updates_count_and_position_and_keeps_the_schedule() {
    let p = policy(12);
    let s = opened(&p, T0);
    let before = schedule(&s, &p);
    let join = |s: &IncidentState, at: i64, seen| match on_event(Some(s), &p, &alarm(seen), at) {
        EventVerdict::Join(j) => j,
        v => panic!("{v:?}"),
    };
    let j = join(&s, T0 + 3 * M, seen(48.203, 16.37, T0 + 3 * M));
    assert_eq!((j.events, j.last_event_at_ms), (2, T0 + 3 * M));
    assert_eq!(j.first_seen, seen(48.2, 16.37, T0));
    assert_eq!(j.last_seen, seen(48.203, 16.37, T0 + 3 * M));
    // Timers count from the opening: the same steps at the same times; only the expiry moved.
    let after = schedule(&j, &p);
    assert_eq!(after[..after.len() - 1], before[..before.len() - 1]);
    assert_eq!(after.last().unwrap().at_ms, T0 + 123 * M);
    // A late event (its fix older than the last) counts but does not move the last position back, nor
    // the last event's time; an event without a position keeps the position.
    let late = join(&j, T0 + 2 * M, seen(48.1, 16.3, T0 + M));
    assert_eq!((late.events, late.last_event_at_ms), (3, T0 + 3 * M));
    assert_eq!(late.last_seen, j.last_seen);
    assert_eq!(late.first_seen, j.first_seen);
    let blind = join(&late, T0 + 4 * M, None);
    assert_eq!((blind.events, blind.last_seen), (4, j.last_seen));
    // An incident opened without a position takes the first one that comes.
    let EventVerdict::Open { state: s, .. } = on_event(None, &p, &alarm(None), T0) else {
        panic!()
    };
    let j = join(&s, T0 + M, seen(1.0, 2.0, T0 + M));
    assert_eq!(
        (j.first_seen, j.last_seen),
        (seen(1.0, 2.0, T0 + M), seen(1.0, 2.0, T0 + M))
    );
}

#[test]
fn events_join_an_acknowledged_incident_without_restarting_it() {
    let p = policy(12);
    let s = opened(&p, T0);
    let (acked, _) = acknowledge(&s, "Lena", AckSource::Link, T0 + 6 * M).unwrap();
    let EventVerdict::Join(j) = on_event(Some(&acked), &p, &alarm(None), T0 + 40 * M) else {
        panic!()
    };
    assert_eq!(j.status, acked.status);
    assert_eq!(j.events, 2);
    assert_eq!(schedule(&j, &p), [due(160, Step::Expire)]);
}

#[test]
fn catching_up_sends_each_escalation_once_and_only_the_latest_repeat() {
    let p = policy(12);
    let mut s = opened(&p, T0);
    assert_eq!(run(&mut s, &p, T0 + 4 * M), QUIET);
    // Down from minute 4 to 47: both escalations, in order, and one repeat (the 9th, at 45 min).
    let t = tick(&s, &p, T0 + 47 * M);
    assert_eq!(
        t.send,
        [Step::Escalate(0), Step::Escalate(1), Step::Repeat(9)]
    );
    assert_eq!((t.state.repeats_done, t.state.escalations_done), (9, 2));
    assert_eq!(next_due(&t.state, &p), Some(due(50, Step::Repeat(10))));
    // Down past the last repeat: the last one, once.
    let t = tick(&s, &p, T0 + 100 * M);
    assert_eq!(
        t.send,
        [Step::Escalate(0), Step::Escalate(1), Step::Repeat(12)]
    );
    assert_eq!(tick(&t.state, &p, T0 + 101 * M).send, NONE);
    // A clock that went back before the opening sends nothing.
    assert_eq!(tick(&s, &p, T0 - M).send, NONE);
}

/// Whatever the state and however late the timer runs, after it ran the next step is later than now
/// (or there is none): a timer never fires in a loop, and nothing due is left behind.
#[test]
fn after_a_timer_run_the_next_step_is_in_the_future() {
    let policies = [
        policy(12),
        policy(1),
        IncidentPolicy {
            repeat: None,
            ..policy(1)
        },
        IncidentPolicy {
            escalate: vec![],
            ..policy(100)
        },
        IncidentPolicy {
            repeat: Some(Repeat {
                every: min(1),
                max: 100,
            }),
            escalate: vec![],
            resolve_after: min(7 * 24 * 60),
            resolve_on: false,
            key: None,
        },
    ];
    let base = opened(&policy(12), T0);
    let (acked, _) = acknowledge(&base, "x", AckSource::Cli, T0 + M).unwrap();
    let mut partly = base.clone();
    partly.repeats_done = 4;
    partly.escalations_done = 1;
    let states = [base, acked, partly];
    let nows = [
        0, 1, 5, 9, 10, 11, 29, 30, 31, 59, 60, 61, 119, 120, 121, 500, 20_000,
    ];
    let mut checked = 0;
    for p in &policies {
        for s in &states {
            for now in nows.map(|m| T0 + m * M) {
                let t = tick(s, p, now);
                match next_due(&t.state, p) {
                    Some(d) => assert!(d.at_ms > now, "{p:?} {s:?} at {now}: {d:?}"),
                    None => assert!(t.state.status.is_resolved(), "{t:?}"),
                }
                // A second run at the same time has nothing left to send.
                assert_eq!(tick(&t.state, p, now).send, NONE, "{p:?} {s:?} at {now}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 3 * 17);
}

#[test]
fn the_stored_form_round_trips_and_is_pinned() {
    let p = policy(12);
    let open = opened(&p, T0);
    let (acked, _) = acknowledge(&open, "Lena", AckSource::Link, T0 + M).unwrap();
    let manual = resolve(
        &acked,
        Resolution::Manual {
            by: "admin".into(),
            via: AckSource::Api,
        },
        T0 + 2 * M,
    )
    .0;
    let expired = resolve(&open, Resolution::ResolveAfter, T0 + 120 * M).0;
    let blind = IncidentState {
        first_seen: None,
        last_seen: None,
        ..resolve(&open, Resolution::ResolveOn, T0 + 3 * M).0
    };
    for s in [&open, &acked, &manual, &expired, &blind] {
        assert_eq!(&IncidentState::from_json(&s.to_json()).unwrap(), s);
    }
    for via in [
        AckSource::Link,
        AckSource::Api,
        AckSource::Cli,
        AckSource::Telegram,
        AckSource::Ntfy,
        AckSource::Pushover,
    ] {
        let (s, _) = acknowledge(&open, "x", via, T0).unwrap();
        assert_eq!(IncidentState::from_json(&s.to_json()).unwrap(), s);
    }
    // The form the store keeps: changing it needs a new version or defaults that read the old one.
    assert_eq!(
        manual.to_json(),
        r#"{"version":1,"key":"theft-42","rule":"theft","opened_at_ms":1768354860000,"last_event_at_ms":1768354860000,"events":1,"repeats_done":0,"escalations_done":0,"first_seen":{"lat":48.2,"lon":16.37,"at_ms":1768354860000},"last_seen":{"lat":48.2,"lon":16.37,"at_ms":1768354860000},"status":{"kind":"resolved","how":{"kind":"manual","by":"admin","via":"api"},"at_ms":1768354980000,"ack":{"by":"Lena","via":"link","at_ms":1768354920000}}}"#
    );
}

#[test]
fn stored_forms_of_other_versions_are_read_or_refused() {
    // Fields added later default; unknown fields (from a newer version of the same form) are ignored.
    let minimal = r#"{"key":"k","rule":"r","opened_at_ms":5,"last_event_at_ms":6,"events":2,"status":{"kind":"open"},"added_later":true}"#;
    let s = IncidentState::from_json(minimal).unwrap();
    assert_eq!(
        (s.version, s.repeats_done, s.first_seen, &s.status),
        (1, 0, None, &Status::Open)
    );
    // A newer version is refused, even when it would not parse as this one.
    let newer = r#"{"version":2,"key":"k","status":"open-now"}"#;
    assert!(matches!(
        IncidentState::from_json(newer),
        Err(StateError::Newer(2))
    ));
    assert!(matches!(
        IncidentState::from_json("{\"version\":1}"),
        Err(StateError::Unreadable(_))
    ));
    assert!(matches!(
        IncidentState::from_json("not json"),
        Err(StateError::Unreadable(_))
    ));
}

#[test]
fn a_sighting_is_a_position_on_the_map_dated_by_its_fix() {
    let env = |pos: &str| {
        crate::event::Envelope::from_json(
            format!(r#"{{"event":{{"id":1,"type":"alarm","deviceId":42}},"position":{pos}}}"#)
                .as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(
        Sighting::of(
            &env(r#"{"latitude":48.2,"longitude":16.37,"fixTime":"2026-01-14T01:40:00Z"}"#),
            T0
        ),
        seen(48.2, 16.37, T0 - M)
    );
    assert_eq!(
        Sighting::of(&env(r#"{"latitude":48.2,"longitude":16.37}"#), T0),
        seen(48.2, 16.37, T0),
        "no fix time: its arrival"
    );
    assert_eq!(
        Sighting::of(&env(r#"{"latitude":0,"longitude":0}"#), T0),
        None,
        "no fix"
    );
    let none =
        crate::event::Envelope::from_json(br#"{"event":{"id":1,"type":"deviceOnline"}}"#).unwrap();
    assert_eq!(Sighting::of(&none, T0), None);
}
