//! Tests of the decider: each mechanism on explicit clocks, over a state map that persists between
//! events like the store's table does.

use super::*;

const S: i64 = 1000;
const M: i64 = 60 * S;

/// State that outlives each event, as the store keeps it.
#[derive(Default)]
struct World {
    states: HashMap<String, StateRow>,
    cancelled: Vec<Cancel>,
}

impl World {
    /// One event's deliveries decided at `now`.
    fn event(&mut self, now: i64, gates: &[Gates]) -> Vec<Verdict> {
        let mut d = Decider::new(now, &mut self.states);
        let v = gates.iter().map(|g| d.decide(g)).collect();
        self.cancelled.extend(d.cancels);
        v
    }

    fn one(&mut self, now: i64, g: &Gates) -> Verdict {
        self.event(now, std::slice::from_ref(g)).remove(0)
    }
}

fn sent_at(v: &Verdict) -> Option<i64> {
    match v {
        Verdict::Send { at, .. } => Some(*at),
        _ => None,
    }
}

fn cooldown(key: &str, period: i64, summary: bool) -> Gates {
    Gates {
        cooldown: Some(CooldownGate {
            key: format!("cooldown/theft/{key}"),
            period_ms: period,
            summary,
        }),
        ..Default::default()
    }
}

#[test]
fn cooldown_suppresses_per_key_and_summarises() {
    let mut w = World::default();
    let g = cooldown("42", 10 * M, true);
    assert_eq!(sent_at(&w.one(0, &g)), Some(0));
    for t in 1..=5 {
        let v = w.one(t * M, &g);
        let Verdict::Suppress(reason) = v else {
            panic!("{v:?}")
        };
        assert!(
            reason.contains("cooldown") && reason.contains("theft/42"),
            "{reason}"
        );
    }
    // Another key is independent.
    assert_eq!(
        sent_at(&w.one(2 * M, &cooldown("43", 10 * M, true))),
        Some(2 * M)
    );
    // After the period: sent, with the count of what was held back.
    let Verdict::Send { note, .. } = w.one(10 * M, &g) else {
        panic!()
    };
    assert_eq!(
        note.as_deref(),
        Some("(5 more suppressed since 1970-01-01T00:01:00.000Z)")
    );
    // The count starts again.
    assert!(matches!(w.one(11 * M, &g), Verdict::Suppress(_)));
    let Verdict::Send { note, .. } = w.one(21 * M, &g) else {
        panic!()
    };
    assert_eq!(
        note.as_deref(),
        Some("(1 more suppressed since 1970-01-01T00:11:00.000Z)")
    );
    // Without summary, no note.
    let mut w = World::default();
    let g = cooldown("1", M, false);
    w.one(0, &g);
    w.one(S, &g);
    assert!(matches!(w.one(M, &g), Verdict::Send { note: None, .. }));
}

#[test]
fn a_rules_deliveries_share_one_decision_per_event() {
    // Email and Telegram of one rule: the second delivery must not be suppressed by the first's
    // cooldown, and a suppressed event counts once.
    let mut w = World::default();
    let g = cooldown("42", M, true);
    let v = w.event(0, &[g.clone(), g.clone()]);
    assert!(v.iter().all(|v| sent_at(v) == Some(0)), "{v:?}");
    let v = w.event(S, &[g.clone(), g.clone()]);
    assert!(v.iter().all(|v| matches!(v, Verdict::Suppress(_))));
    let v = w.event(M, &[g.clone(), g]);
    for v in v {
        let Verdict::Send { note, .. } = v else {
            panic!()
        };
        assert!(note.unwrap().starts_with("(1 more"));
    }
}

#[test]
fn dedup_window_from_the_first_event() {
    let mut w = World::default();
    let g = Gates {
        dedup: Some(KeyedWindow {
            key: "dedup/r/1/alarm/vibration/0".into(),
            window_ms: 30 * S,
        }),
        ..Default::default()
    };
    assert!(sent_at(&w.one(0, &g)).is_some());
    assert!(matches!(w.one(10 * S, &g), Verdict::Suppress(r) if r.contains("duplicate")));
    assert!(matches!(w.one(29 * S, &g), Verdict::Suppress(_)));
    // The window is not extended by duplicates.
    assert!(sent_at(&w.one(30 * S, &g)).is_some());
}

fn geo(transition: &str) -> Gates {
    Gates {
        debounce: Some(DebounceGate {
            key: "geo/7/3".into(),
            transition: transition.into(),
            delay_ms: 2 * M,
        }),
        ..Default::default()
    }
}

#[test]
fn debounce_cancels_jitter_and_delays_real_exits() {
    let mut w = World::default();
    // Exit held for two minutes.
    let v = w.one(0, &geo("geofenceExit"));
    assert!(
        matches!(&v, Verdict::Send { at, hold_key: Some(k), .. } if *at == 2 * M && k == "geo/7/3")
    );
    // Back in after 40 s: the enter is suppressed, the held exit cancelled.
    let v = w.one(40 * S, &geo("geofenceEnter"));
    assert!(
        matches!(&v, Verdict::Suppress(r) if r.contains("jitter")),
        "{v:?}"
    );
    assert_eq!(w.cancelled.len(), 1);
    assert_eq!(w.cancelled[0].0, "geo/7/3");
    // A real exit: held, nothing comes back within the window, so it goes at +2 min.
    assert_eq!(sent_at(&w.one(10 * M, &geo("geofenceExit"))), Some(12 * M));
    // The enter long after is a new transition (held in turn), not a cancellation.
    assert_eq!(sent_at(&w.one(30 * M, &geo("geofenceEnter"))), Some(32 * M));
    assert_eq!(w.cancelled.len(), 1);
}

fn group(key: &str) -> Gates {
    Gates {
        group: Some(GroupGate {
            key: key.into(),
            wait_ms: 30 * S,
            interval_ms: 5 * M,
            title: None,
        }),
        ..Default::default()
    }
}

fn due(v: &Verdict) -> i64 {
    match v {
        Verdict::Group { due, .. } => *due,
        other => panic!("{other:?}"),
    }
}

#[test]
fn groups_wait_then_keep_their_interval() {
    let mut w = World::default();
    let g = group("group/offline//ops//msg");
    assert_eq!(due(&w.one(0, &g)), 30 * S);
    assert_eq!(due(&w.one(10 * S, &g)), 30 * S);
    // After the first digest went: the next one waits for the interval, counted from the last.
    assert_eq!(due(&w.one(40 * S, &g)), 30 * S + 5 * M);
    assert_eq!(due(&w.one(2 * M, &g)), 30 * S + 5 * M);
    // A quiet group starts over with the wait.
    assert_eq!(due(&w.one(60 * M, &g)), 60 * M + 30 * S);
}

fn rate(max: u32, per: i64, over: Over) -> Gates {
    Gates {
        rate: Some(RateGate {
            key: "rate/phone/42".into(),
            digest_key: "ratedigest/phone/42/msg".into(),
            max,
            per_ms: per,
            over,
            no_digest: false,
        }),
        ..Default::default()
    }
}

#[test]
fn rate_limit_waits_without_dropping() {
    let mut w = World::default();
    let g = rate(3, 60 * M, Over::Wait);
    // A burst of 3 goes at once; the next 3 wait an hour, and so on.
    let slots: Vec<i64> = (0..7).map(|_| sent_at(&w.one(0, &g)).unwrap()).collect();
    assert_eq!(slots, [0, 0, 0, 60 * M, 60 * M, 60 * M, 120 * M]);
    // Over any window of an hour, at most 3 are sent.
    for start in (-60 * M..180 * M).step_by(M as usize) {
        let n = slots
            .iter()
            .filter(|s| **s >= start && **s < start + 60 * M)
            .count();
        assert!(n <= 3, "{n} in the hour from {start}");
    }
    let Verdict::Send { waits_for, .. } = w.one(0, &g) else {
        panic!()
    };
    assert!(waits_for.unwrap().contains("rate limit: 3 per 1h"));
    // Spread-out sends are never held.
    let mut w = World::default();
    for i in 0..10 {
        assert_eq!(sent_at(&w.one(i * 21 * M, &g)), Some(i * 21 * M));
    }
}

#[test]
fn rate_limit_can_fold_into_a_digest() {
    let mut w = World::default();
    let g = rate(2, 10 * M, Over::Digest);
    assert_eq!(sent_at(&w.one(0, &g)), Some(0));
    assert_eq!(sent_at(&w.one(S, &g)), Some(S));
    // Over: into one digest at the next free slot, however many follow.
    let first = due(&w.one(2 * S, &g));
    assert_eq!(first, 10 * M);
    for t in 3..50 {
        assert_eq!(due(&w.one(t * S, &g)), first);
    }
}

#[test]
fn stateless_gates_and_order_of_checks() {
    let mut w = World::default();
    let suppressed = Gates {
        suppress: Some("silenced by silence #1".into()),
        ..cooldown("42", M, false)
    };
    assert!(matches!(w.one(0, &suppressed), Verdict::Suppress(r) if r.contains("silence")));
    // A silenced event does not start a cooldown.
    assert_eq!(sent_at(&w.one(S, &cooldown("42", M, false))), Some(S));
    // Deferred by quiet hours.
    let deferred = Gates {
        not_before: Some(8 * 60 * M),
        deferred_by: Some("quiet hours".into()),
        ..Default::default()
    };
    assert!(
        matches!(w.one(0, &deferred), Verdict::Send { at, waits_for: Some(_), .. } if at == 8 * 60 * M)
    );
}

#[test]
fn combined_on_one_rule() {
    // Dedup 30 s, cooldown 5 min with summary, quiet hours deferring: the checks compose.
    let mut w = World::default();
    let g = Gates {
        dedup: Some(KeyedWindow {
            key: "dedup/theft/1/alarm/vibration/0".into(),
            window_ms: 30 * S,
        }),
        ..cooldown("1", 5 * M, true)
    };
    assert_eq!(sent_at(&w.one(0, &g)), Some(0));
    // Within the dedup window: a duplicate, which does not count for the cooldown summary.
    assert!(matches!(w.one(10 * S, &g), Verdict::Suppress(r) if r.contains("duplicate")));
    // After dedup, within cooldown: counted.
    assert!(matches!(w.one(40 * S, &g), Verdict::Suppress(r) if r.contains("cooldown")));
    assert!(matches!(w.one(90 * S, &g), Verdict::Suppress(r) if r.contains("cooldown")));
    let Verdict::Send { note, .. } = w.one(5 * M, &g) else {
        panic!()
    };
    assert!(note.unwrap().starts_with("(2 more suppressed"));
}

#[test]
fn a_late_events_state_lasts_as_long_as_a_live_ones() {
    // An event from a day ago (a backfill), judged at its own time: its cooldown state must not be due
    // for pruning at once, or the next copy of that old event would notify again.
    let mut w = World::default();
    let now = 100 * 24 * 60 * M;
    let judged = now - 24 * 60 * M;
    let g = cooldown("7", 10 * M, false);
    let mut d = Decider::new(now, &mut w.states).judging_at(judged);
    assert!(sent_at(&d.decide(&g)).is_some());
    let row = &w.states["cooldown/theft/7"];
    assert!(row.expires_at >= now + 10 * M + STATE_GRACE_MS, "{row:?}");
    // The next copy of the same old event, later: still within its cooldown.
    let mut d = Decider::new(now + 5 * S, &mut w.states).judging_at(judged);
    assert!(matches!(d.decide(&g), Verdict::Suppress(r) if r.contains("cooldown")));
}

#[test]
fn state_expires_after_it_matters() {
    let mut w = World::default();
    w.one(0, &cooldown("42", 10 * M, false));
    let row = &w.states["cooldown/theft/42"];
    assert!(row.expires_at >= 10 * M + STATE_GRACE_MS);
    assert!(row.expires_at <= 10 * M + STATE_GRACE_MS + S);
}
