//! The web console's reads (issue 20), on both backends: the listing's filters and keyset pages, one
//! delivery in full, activity by period, matches per rule, recent events.

use super::{
    alarm, cooldown_gate, delivery, event, finish_all, opens, Backend, Trigger, KEY, LEASE, T0,
};
use trackrelay::store::*;

/// A delivery `key` through `channel`, of rule `rule`.
fn of(key: &str, channel: &str, rule: &str) -> NewDelivery {
    NewDelivery {
        channel: channel.into(),
        rule: rule.into(),
        ..delivery(key, None)
    }
}

/// Every delivery, newest first (the listing without a filter is the reference the others are
/// checked against).
async fn everything(store: &dyn Store) -> Vec<DeliveryRow> {
    store
        .list(Filter {
            limit: 10_000,
            ..Filter::default()
        })
        .await
        .unwrap()
}

/// The ids `filter` lists, read in pages of `page` rows, each page starting before the last row of the
/// one before, until a short page (or more rows than the outbox holds: a page that does not move on).
async fn paged(store: &dyn Store, filter: &Filter, page: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut before = None;
    while ids.len() <= 1000 {
        let rows = store
            .list(Filter {
                before_id: before,
                limit: page,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(rows.len() <= page);
        ids.extend(rows.iter().map(|r| r.id));
        if rows.len() < page {
            return ids;
        }
        before = rows.last().map(|r| r.id);
    }
    ids
}

/// 40 events of 4 devices at 1 s apart, each with deliveries through two channels and three rules, in
/// every status: dead at intake, suppressed by a cooldown, sent, failed and pending again, in flight.
async fn a_mixed_outbox(store: &dyn Store) {
    for i in 0..40 {
        let mut d = vec![
            of(&format!("a{i}"), "mail", &format!("r{}", i % 3)),
            of(&format!("b{i}"), "chat", &format!("r{}", (i + 1) % 3)),
        ];
        if i % 5 == 0 {
            d[1].dead = Some("no such recipient".into());
        }
        if i % 7 == 0 {
            // The first one is let through, the later ones suppressed.
            d[0].gates = cooldown_gate();
        }
        let mut e = event(i, T0 + i * 1000, d);
        e.device_id = 1 + i % 4;
        store.accept(e).await.unwrap();
    }
    let claimed = store.claim(T0 + 100_000, 1000, LEASE).await.unwrap();
    let outcomes = claimed
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 9 != 0) // left in flight
        .map(|(n, c)| {
            let outcome = if n % 4 == 0 {
                Outcome::Retry {
                    at_ms: T0 + 200_000,
                    error: "HTTP 503".into(),
                }
            } else {
                Outcome::Delivered
            };
            (c.claim_ref(), outcome)
        })
        .collect();
    finish_all(store, outcomes, T0 + 101_000).await;
}

/// Whether `f` keeps `r` (its filters but the page's), written out: what the store's listing is
/// checked against. The row was created when its event was received (see [`a_mixed_outbox`]).
fn keeps(f: &Filter, r: &DeliveryRow) -> bool {
    let created = T0 + r.event_id * 1000;
    f.status.is_none_or(|s| r.status == s)
        && f.channel.as_ref().is_none_or(|c| &r.channel == c)
        && f.rule.as_ref().is_none_or(|x| &r.rule == x)
        && f.device_id.is_none_or(|d| r.device_id == d)
        && f.since_ms.is_none_or(|t| created >= t)
        && f.until_ms.is_none_or(|t| created < t)
}

pub(super) async fn keyset_pages_list_every_row_once_newest_first_under_each_filter(b: Backend) {
    let store = b.open().await;
    a_mixed_outbox(&*store).await;
    let all = everything(&*store).await;
    assert_eq!(all.len(), 80);
    let mut statuses: Vec<Status> = all.iter().map(|r| r.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    statuses.dedup();
    for s in [
        Status::Done,
        Status::Dead,
        Status::Suppressed,
        Status::Pending,
        Status::Inflight,
    ] {
        assert!(statuses.contains(&s), "no {s:?} row in {statuses:?}");
    }
    let (since, until) = (T0 + 10_000, T0 + 30_000);
    let mut filters = vec![
        Filter::default(),
        Filter {
            since_ms: Some(since),
            until_ms: Some(until),
            ..Filter::default()
        },
        // Several at once: each applies.
        Filter {
            status: Some(Status::Done),
            channel: Some("mail".into()),
            rule: Some("r1".into()),
            ..Filter::default()
        },
        Filter {
            status: Some(Status::Dead),
            device_id: Some(1),
            since_ms: Some(since),
            ..Filter::default()
        },
    ];
    filters.extend(statuses.into_iter().map(|s| Filter {
        status: Some(s),
        ..Filter::default()
    }));
    filters.extend(["mail", "chat", "none"].map(|ch| Filter {
        channel: Some(ch.into()),
        ..Filter::default()
    }));
    filters.extend(["r0", "r1", "r2", "r"].map(|rule| Filter {
        rule: Some(rule.into()),
        ..Filter::default()
    }));
    filters.extend((1..=5).map(|device| Filter {
        device_id: Some(device),
        ..Filter::default()
    }));
    for filter in &filters {
        let want: Vec<i64> = all
            .iter()
            .filter(|r| keeps(filter, r))
            .map(|r| r.id)
            .collect();
        for page in [1, 7, 100] {
            assert_eq!(
                paged(&*store, filter, page).await,
                want,
                "{filter:?} in pages of {page}"
            );
        }
    }
    // A page from the middle starts right below the id given.
    let middle = all[40].id;
    let rows = store
        .list(Filter {
            before_id: Some(middle),
            limit: 3,
            ..Filter::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [all[41].id, all[42].id, all[43].id]);
}

pub(super) async fn rule_and_time_filters_keep_exactly_their_rows(b: Backend) {
    let store = b.open().await;
    // Receive times 1000, 2000, 3000, 4000; rules alternate.
    for i in 1..=4 {
        let rule = if i % 2 == 0 { "theft" } else { "theft-2" };
        store
            .accept(event(i, i * 1000, vec![of(&format!("k{i}"), "c", rule)]))
            .await
            .unwrap();
    }
    let events = |f: Filter| {
        let store = store.clone();
        async move {
            let rows = store.list(f).await.unwrap();
            rows.iter().map(|r| r.event_id).collect::<Vec<_>>()
        }
    };
    let rule = |r: &str| Filter {
        rule: Some(r.into()),
        ..Filter::default()
    };
    // The exact name, not a prefix.
    assert_eq!(events(rule("theft")).await, [4, 2]);
    assert_eq!(events(rule("theft-2")).await, [3, 1]);
    assert!(events(rule("thef")).await.is_empty());
    // `since` is inclusive, `until` exclusive.
    let window = |since, until| Filter {
        since_ms: since,
        until_ms: until,
        ..Filter::default()
    };
    assert_eq!(events(window(Some(2000), None)).await, [4, 3, 2]);
    assert_eq!(events(window(None, Some(2000))).await, [1]);
    assert_eq!(events(window(Some(2000), Some(4000))).await, [3, 2]);
    assert!(events(window(Some(3000), Some(3000))).await.is_empty());
    assert_eq!(
        events(Filter {
            since_ms: Some(2000),
            ..rule("theft")
        })
        .await,
        [4, 2]
    );
}

pub(super) async fn a_delivery_in_full_and_none_for_a_missing_id(b: Backend) {
    let store = b.open().await;
    let mut e = event(1, 5000, vec![delivery("plain", None)]);
    e.payload = r#"{"event":{"id":1,"type":"alarm"}}"#.into();
    let content = e.deliveries[0].content.clone();
    store.accept(e).await.unwrap();
    // An event whose body was not kept.
    let mut bare = event(2, 6000, vec![delivery("bare", None)]);
    bare.payload = String::new();
    store.accept(bare).await.unwrap();
    let incident = opens(
        &*store,
        alarm(3, 7000, KEY, Trigger::Match, vec![delivery("inc", None)]),
    )
    .await;

    let all = everything(&*store).await;
    let id_of = |key: &str| all.iter().find(|r| r.key == key).unwrap().id;
    let d = store
        .delivery(id_of("plain"))
        .await
        .unwrap()
        .expect("the row");
    assert_eq!((d.row.key.as_str(), d.row.event_id), ("plain", 1));
    assert_eq!(d.row.created_at, trackrelay::clock::rfc3339(5000));
    assert_eq!(d.content, content);
    assert_eq!(
        d.event_payload.as_deref(),
        Some(r#"{"event":{"id":1,"type":"alarm"}}"#)
    );
    assert_eq!((d.incident_ref, d.digest_ref), (None, None));
    let d = store.delivery(id_of("bare")).await.unwrap().unwrap();
    assert_eq!(d.event_payload, None);
    let d = store.delivery(id_of("inc")).await.unwrap().unwrap();
    assert_eq!(d.incident_ref, Some(incident));
    assert!(store.delivery(999_999).await.unwrap().is_none());
    // An incident's timeline: only its own messages.
    let listed = |incident| {
        let store = &store;
        async move {
            let rows = store
                .list(Filter {
                    incident: Some(incident),
                    ..Filter::default()
                })
                .await
                .unwrap();
            rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(incident).await, ["inc"]);
    assert!(listed(incident + 1).await.is_empty());
    // Serialised as the console gets it.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["row"]["key"], "inc");
    assert_eq!(json["incident_ref"], incident);
}

pub(super) async fn a_grouped_delivery_names_its_digest(b: Backend) {
    let store = b.open().await;
    let gates = trackrelay::noise::Gates {
        group: Some(trackrelay::noise::GroupGate {
            key: "group/offline//c/r/msg".into(),
            wait_ms: 30_000,
            interval_ms: 300_000,
            title: None,
        }),
        ..Default::default()
    };
    let mut d = delivery("item", None);
    d.gates = gates;
    store.accept(event(1, 1000, vec![d])).await.unwrap();
    let all = everything(&*store).await;
    let item = all.iter().find(|r| r.key == "item").unwrap();
    let digest = all.iter().find(|r| r.key != "item").unwrap();
    assert_eq!(item.status, Status::Grouped);
    let d = store.delivery(item.id).await.unwrap().unwrap();
    assert_eq!(d.digest_ref, Some(digest.id));
}

/// An event at `at` with deliveries `keys` (through channel `c`, rule `r`).
fn at(id: i64, at: i64, keys: &[&str]) -> NewEvent {
    event(id, at, keys.iter().map(|k| of(k, "c", "r")).collect())
}

pub(super) async fn activity_counts_events_and_their_deliveries_by_period(b: Backend) {
    let store = b.open().await;
    const MIN: i64 = 60_000;
    // On the hour (a bucket of an hour starts there).
    let base = 1_000 * 60 * MIN;
    // Before the period: left out, and so are its deliveries.
    store.accept(at(1, base - 1, &["old"])).await.unwrap();
    // Minute 0: two events, three deliveries.
    store.accept(at(2, base, &["sent", "fails"])).await.unwrap();
    store
        .accept(at(3, base + MIN - 1, &["waits"]))
        .await
        .unwrap();
    // Minute 2: one event no rule matched.
    store.accept(at(4, base + 2 * MIN + 5, &[])).await.unwrap();
    // Minute 3: two events; one delivery dead at intake, one sent, one suppressed by a cooldown the
    // other event's started.
    let mut dead = of("dead", "c", "r");
    dead.dead = Some("no route".into());
    let mut first = of("first", "c", "r");
    first.gates = cooldown_gate();
    store
        .accept(event(5, base + 3 * MIN, vec![dead, first]))
        .await
        .unwrap();
    let mut quiet = of("quiet", "c", "r");
    quiet.gates = cooldown_gate();
    store
        .accept(event(6, base + 3 * MIN + 10, vec![quiet]))
        .await
        .unwrap();
    // Send: `sent` and `first` are delivered, `fails` dies, `waits` and `old` stay pending.
    let claimed = store.claim(base + 10 * MIN, 100, LEASE).await.unwrap();
    let key = |c: &Claimed| c.notification().unwrap().key;
    let outcomes = claimed
        .iter()
        .map(|c| {
            let outcome = match key(c).as_str() {
                "sent" | "first" => Outcome::Delivered,
                "fails" => Outcome::Dead {
                    error: "refused".into(),
                },
                _ => Outcome::Retry {
                    at_ms: base + 20 * MIN,
                    error: "later".into(),
                },
            };
            (c.claim_ref(), outcome)
        })
        .collect();
    finish_all(&*store, outcomes, base + 10 * MIN).await;

    let bucket = |start_ms, events, deliveries, delivered, dead, suppressed| ActivityBucket {
        start_ms,
        events,
        deliveries,
        delivered,
        dead,
        suppressed,
    };
    assert_eq!(
        store.activity(base, MIN).await.unwrap(),
        [
            bucket(base, 2, 3, 1, 1, 0),
            bucket(base + 2 * MIN, 1, 0, 0, 0, 0),
            bucket(base + 3 * MIN, 2, 3, 1, 1, 1),
        ]
    );
    // One bucket of the whole period; a later start leaves the earlier events out.
    assert_eq!(
        store.activity(base, 60 * MIN).await.unwrap(),
        [bucket(base, 5, 6, 2, 2, 1)]
    );
    assert_eq!(
        store.activity(base + MIN, MIN).await.unwrap().len(),
        2,
        "minutes 2 and 3"
    );
    // Buckets start at multiples of their length, wherever the period starts.
    assert_eq!(
        store.activity(base - 1, 7 * MIN).await.unwrap()[0].start_ms,
        (base - 1) / (7 * MIN) * (7 * MIN)
    );
    assert!(store
        .activity(base + 4 * MIN, MIN)
        .await
        .unwrap()
        .is_empty());
}

pub(super) async fn rule_counts_count_each_event_once_per_rule(b: Backend) {
    let store = b.open().await;
    // Before the period.
    store
        .accept(event(1, 999, vec![of("old", "c", "theft")]))
        .await
        .unwrap();
    // Two deliveries of one rule (two channels) and one of another: one event each.
    store
        .accept(event(
            2,
            1000,
            vec![
                of("t-mail", "mail", "theft"),
                of("t-chat", "chat", "theft"),
                of("s", "mail", "speed"),
            ],
        ))
        .await
        .unwrap();
    store
        .accept(event(3, 2000, vec![of("t", "mail", "theft")]))
        .await
        .unwrap();
    // No rule matched.
    store.accept(event(4, 3000, vec![])).await.unwrap();
    assert_eq!(
        store.rule_counts(1000).await.unwrap(),
        [("speed".to_string(), 1), ("theft".to_string(), 2)]
    );
    assert_eq!(
        store.rule_counts(999).await.unwrap(),
        [("speed".to_string(), 1), ("theft".to_string(), 3)]
    );
    assert!(store.rule_counts(2001).await.unwrap().is_empty());
}

pub(super) async fn recent_events_come_newest_first_up_to_the_limit(b: Backend) {
    let store = b.open().await;
    for i in 1..=5 {
        let mut e = event(
            100 + i,
            1000 * i,
            if i == 3 {
                vec![]
            } else {
                vec![delivery(&format!("k{i}"), None)]
            },
        );
        e.device_id = 40 + i;
        e.payload = format!(r#"{{"n":{i}}}"#);
        e.txn = Some(format!("txn-{i}"));
        store.accept(e).await.unwrap();
    }
    let recent = store.recent_events(3).await.unwrap();
    let ids: Vec<i64> = recent.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [105, 104, 103]);
    let e = &recent[0];
    assert_eq!(
        (
            e.source.as_str(),
            e.device_id,
            e.event_type.as_str(),
            e.received_at_ms,
            e.payload.as_str(),
            e.txn.as_deref()
        ),
        ("s", 45, "alarm", 5000, r#"{"n":5}"#, Some("txn-5"))
    );
    assert!(recent.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(store.recent_events(0).await.unwrap().len(), 5, "0: 100");
    let one = store.stored_event(recent[1].id).await.unwrap().unwrap();
    assert_eq!(
        (one.id, one.event_id, one.received_at_ms),
        (recent[1].id, 104, 4000)
    );
    assert!(store.stored_event(999_999).await.unwrap().is_none());
    let json = serde_json::to_value(&one).unwrap();
    assert_eq!(json["received_at_ms"], 4000);
}

/// A backtest's history: every stored event in the span once, oldest first, page after page, however
/// many share a receive time across a page's end; events outside the span left out.
pub(super) async fn history_pages_list_each_event_of_the_span_once_in_time_order(b: Backend) {
    let store = b.open().await;
    // Received out of order, three at a time at the same millisecond.
    for i in 0..30i64 {
        let at = 10_000 + ((i * 7) % 10) * 1000;
        store
            .accept(event(500 + i, at, vec![delivery(&format!("h{i}"), None)]))
            .await
            .unwrap();
    }
    store.accept(event(900, 5_000, vec![])).await.unwrap();
    store.accept(event(901, 20_000, vec![])).await.unwrap();
    for page in [1, 2, 4, 7, 100] {
        let (mut after, mut seen) = (None, Vec::new());
        loop {
            let rows = store.history(10_000, 20_000, after, page).await.unwrap();
            let Some(last) = rows.last() else { break };
            after = Some((last.received_at_ms, last.id));
            seen.extend(rows.iter().map(|e| (e.received_at_ms, e.id, e.event_id)));
        }
        assert_eq!(seen.len(), 30, "page {page}: {seen:?}");
        assert!(
            seen.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)),
            "page {page}"
        );
        assert!(
            seen.iter().all(|e| (500..530).contains(&e.2)),
            "page {page}"
        );
    }
}
