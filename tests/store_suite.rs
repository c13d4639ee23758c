//! The storage contract, one suite for every backend: each test runs against SQLite (always) and
//! against PostgreSQL (when `TRACKRELAY_TEST_PG_URL` names a server; `scripts/test` starts one). A
//! second store object on the same database stands for a second instance: dedup, ordering, leases and
//! concurrent claims must hold across them.

#[path = "store_suite/console.rs"]
mod console;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trackrelay::clock::{now_ms, rfc3339};
use trackrelay::config_raw::RawIncident;
use trackrelay::incident::{
    acknowledge, resolve, tick, AckSource, EventFacts, IncidentPolicy, IncidentState, Resolution,
    Trigger,
};
use trackrelay::noise::{CooldownGate, DebounceGate, Gates, GroupGate};
use trackrelay::notification::{Content, Notification, Origin};
use trackrelay::plan::Planned;
use trackrelay::store::postgres::{PgOptions, PgStore};
use trackrelay::store::sqlite::SqliteStore;
use trackrelay::store::*;

use console::*;

/// One database, of either kind, and how to open another store object on it.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres(label: &str) -> Option<Backend> {
        let admin = support::pg::admin_url()?;
        Some(Backend::Postgres(
            support::pg::fresh_database(&admin, label).await,
        ))
    }

    /// A new store object (another instance) on the same database.
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path(), 256).unwrap()),
            Backend::Postgres(url) => Arc::new(
                PgStore::connect(&PgOptions {
                    url: url.clone(),
                    pool: 8,
                    statement_timeout: Duration::from_secs(10),
                    connect_timeout: Duration::from_secs(5),
                    startup_wait: Duration::ZERO,
                    restart_grace: Duration::ZERO,
                })
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            ),
        }
    }

    /// Runs `sql` on the database directly, past the store: rows another version (or damage) left.
    async fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                rusqlite::Connection::open(dir.path().join(trackrelay::store::sqlite::DB_FILE))
                    .and_then(|c| c.execute_batch(sql))
                    .expect(sql);
            }
            Backend::Postgres(url) => support::pg::execute(url, sql).await,
        }
    }

    /// Whether several processes share the database (then only expired leases are recovered).
    fn shared(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
}

/// Each test function, run once per backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = super::Backend::postgres(stringify!($name)).await {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
}

suite!(
    dedup_ordering_retry_and_dead,
    intake_claims_unordered_deliveries_at_once,
    an_expired_lease_goes_to_another_instance,
    a_claim_takes_expired_leases_first_then_the_oldest_due_up_to_its_limit,
    recovery_takes_back_only_what_no_one_can_be_sending,
    concurrent_claims_never_hand_out_a_delivery_twice,
    the_same_event_at_two_instances_at_once_is_stored_once,
    list_replay_prune_and_counts,
    a_cooldown_holds_across_instances_under_a_race,
    one_digest_per_group_across_instances,
    a_return_at_another_instance_cancels_a_held_exit,
    late_events_are_judged_at_their_own_time,
    silences_are_shared,
    an_unreadable_silence_mutes_nothing_and_is_reported,
    a_late_outcome_of_an_expired_claim_changes_nothing,
    an_intake_claim_is_numbered_like_any_claim,
    a_copy_with_its_position_completes_one_stored_without,
    an_idempotency_key_is_unique_per_event,
    a_deferral_records_its_reason_or_none,
    a_replay_forgets_why_a_delivery_waited,
    stale_outcomes_come_back_in_the_order_given,
    // Incidents (issue 17).
    an_incident_opens_is_joined_acknowledged_and_resolved,
    one_incident_per_key_across_instances_under_a_race,
    an_incident_write_is_made_only_at_the_revision_read,
    incident_writes_racing_joins_are_never_lost,
    due_incidents_come_with_their_event_and_the_circle_owed_a_notice,
    acknowledgement_tokens_find_their_incident,
    a_copy_completing_an_event_does_not_join_its_incident_twice,
    retention_keeps_the_event_of_an_incident_not_done_with,
    an_unreadable_incident_is_left_alone_and_the_event_notified,
    // Two-way chat (issue 18).
    button_tokens_find_their_incident_and_chat,
    peer_refs_list_the_messages_still_to_edit,
    at_most_a_hundred_active_messages_unless_asked,
    each_follow_up_lists_only_its_channels_messages,
    messages_of_channels_no_follow_up_looks_after_are_stopped,
    bot_offsets_are_kept_as_given_each_bot_its_own,
    an_incidents_latest_event_names_its_device,
    a_lease_has_one_holder_at_a_time,
    instances_racing_for_a_lease_never_both_get_it,
    // The web console's reads (issue 20).
    keyset_pages_list_every_row_once_newest_first_under_each_filter,
    rule_and_time_filters_keep_exactly_their_rows,
    a_delivery_in_full_and_none_for_a_missing_id,
    a_grouped_delivery_names_its_digest,
    activity_counts_events_and_their_deliveries_by_period,
    rule_counts_count_each_event_once_per_rule,
    recent_events_come_newest_first_up_to_the_limit,
    history_pages_list_each_event_of_the_span_once_in_time_order,
);

/// A delivery of rule `r` with noise gates.
fn gated(key: &str, gates: Gates) -> NewDelivery {
    let mut d = delivery(key, None);
    d.gates = gates;
    d
}

fn cooldown_gate() -> Gates {
    Gates {
        cooldown: Some(CooldownGate {
            key: "cooldown/theft/7".into(),
            period_ms: 600_000,
            summary: true,
        }),
        ..Default::default()
    }
}

async fn with_status(store: &dyn Store, status: Status) -> Vec<DeliveryRow> {
    store
        .list(Filter {
            status: Some(status),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn a_cooldown_holds_across_instances_under_a_race(b: Backend) {
    // Two instances get 40 alarms of one device (one key) at the same moment, 20 each: one notifies.
    let (x, y) = (b.open().await, b.open().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { x.clone() } else { y.clone() };
        tasks.push(tokio::spawn(async move {
            let e = event(
                100 + i,
                5000,
                vec![gated(&format!("k{i}"), cooldown_gate())],
            );
            store.accept(e).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Accepted::New { .. }));
    }
    assert_eq!(with_status(&*x, Status::Pending).await.len(), 1);
    let suppressed = with_status(&*y, Status::Suppressed).await;
    assert_eq!(suppressed.len(), 39);
    assert!(suppressed.iter().all(|r| r
        .reason
        .as_deref()
        .unwrap()
        .starts_with("cooldown: `theft/7`")));
    // After the period, the next one (at either instance) tells how many were held back.
    let Accepted::New { quieted, .. } = y
        .accept(event(
            200,
            5000 + 600_000,
            vec![gated("later", cooldown_gate())],
        ))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(quieted.is_empty());
    let due = x
        .claim(5000 + 600_000, 100, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        due.iter()
            .any(|c| c.content.contains("(39 more suppressed since")),
        "{due:?}"
    );
}

async fn one_digest_per_group_across_instances(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    let gates = Gates {
        group: Some(GroupGate {
            key: "group/offline//c/r/msg".into(),
            wait_ms: 30_000,
            interval_ms: 300_000,
            title: None,
        }),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = if i % 2 == 0 { x.clone() } else { y.clone() };
        let d = gated(&format!("g{i}"), gates.clone());
        tasks.push(tokio::spawn(async move {
            store.accept(event(300 + i, 1000, vec![d])).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let digests = with_status(&*x, Status::Pending).await;
    assert_eq!(digests.len(), 1, "{digests:?}");
    assert_eq!(with_status(&*y, Status::Grouped).await.len(), 30);
    // Both instances claim when it is due: exactly one gets it, with every item.
    let due = 1000 + 30_000;
    let (a, c) = tokio::join!(
        x.claim(due, 10, Duration::from_secs(60)),
        y.claim(due, 10, Duration::from_secs(60))
    );
    let got: Vec<Claimed> = a.unwrap().into_iter().chain(c.unwrap()).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(x.digest_items(got[0].id).await.unwrap().len(), 30);
    // The next item after it went starts a new digest, an interval later.
    y.accept(event(400, due + 1, vec![gated("late", gates.clone())]))
        .await
        .unwrap();
    let next = with_status(&*x, Status::Pending).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].next_attempt_at.as_deref(),
        Some(rfc3339(due + 300_000).as_str())
    );
}

async fn a_return_at_another_instance_cancels_a_held_exit(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    let geo = |t: &str| Gates {
        debounce: Some(DebounceGate {
            key: "geo/5/9".into(),
            transition: t.into(),
            delay_ms: 120_000,
        }),
        ..Default::default()
    };
    let probe = |t: &str| trackrelay::noise::DebounceProbe {
        key: "geo/5/9".into(),
        transition: t.into(),
    };
    let mut exit = event(500, 10_000, vec![gated("exit", geo("geofenceExit"))]);
    exit.debounce = Some(probe("geofenceExit"));
    x.accept(exit).await.unwrap();
    assert_eq!(
        with_status(&*y, Status::Pending).await[0]
            .next_attempt_at
            .as_deref(),
        Some(rfc3339(130_000).as_str())
    );
    // The enter matches no debounced rule (no deliveries) but still cancels the held exit.
    let mut enter = event(501, 40_000, vec![]);
    enter.debounce = Some(probe("geofenceEnter"));
    y.accept(enter).await.unwrap();
    let rows = with_status(&*x, Status::Suppressed).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].reason.as_deref().unwrap().contains("jitter"));
    assert!(x
        .claim(200_000, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
}

/// A backfill: events that happened far apart arrive within milliseconds. The store judges them at
/// `judged_at_ms` (their own times) and sends on `received_at_ms`.
async fn late_events_are_judged_at_their_own_time(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    let geo = |fence: i64, t: &str| Gates {
        debounce: Some(DebounceGate {
            key: format!("geo/5/{fence}"),
            transition: t.into(),
            delay_ms: 120_000,
        }),
        ..Default::default()
    };
    let late = |id: i64, happened: i64, at: i64, fence: i64, t: &str| {
        let mut e = event(id, at, vec![gated(&format!("d{id}"), geo(fence, t))]);
        e.judged_at_ms = happened;
        e.debounce = Some(trackrelay::noise::DebounceProbe {
            key: format!("geo/5/{fence}"),
            transition: t.into(),
        });
        e
    };
    let at = 10_000_000;
    // An hour apart: no jitter, both held for the debounce after they arrived.
    x.accept(late(600, 1_000_000, at, 9, "geofenceExit"))
        .await
        .unwrap();
    y.accept(late(601, 4_600_000, at + 5, 9, "geofenceEnter"))
        .await
        .unwrap();
    let pending = with_status(&*x, Status::Pending).await;
    let mut due: Vec<Option<String>> = pending.iter().map(|r| r.next_attempt_at.clone()).collect();
    due.sort();
    assert_eq!(
        due,
        [Some(rfc3339(at + 120_000)), Some(rfc3339(at + 120_005))]
    );
    // Forty seconds apart by their own times: jitter, the held exit is cancelled at either instance.
    x.accept(late(602, 2_000_000, at + 10, 10, "geofenceExit"))
        .await
        .unwrap();
    y.accept(late(603, 2_040_000, at + 15, 10, "geofenceEnter"))
        .await
        .unwrap();
    let suppressed = with_status(&*x, Status::Suppressed).await;
    assert_eq!(suppressed.len(), 2, "{suppressed:?}");
    assert!(suppressed
        .iter()
        .all(|r| r.reason.as_deref().unwrap().contains("jitter")));
    assert_eq!(with_status(&*y, Status::Pending).await.len(), 2);
}

async fn silences_are_shared(b: Backend) {
    use trackrelay::noise::silence::{Matchers, NewSilence};
    let (x, y) = (b.open().await, b.open().await);
    let s = x
        .add_silence(
            NewSilence {
                matchers: Matchers {
                    device: Some("42".into()),
                    ..Default::default()
                },
                starts_at_ms: 1000,
                ends_at_ms: 9000,
                author: "ops".into(),
                comment: "workshop".into(),
            },
            1000,
        )
        .await
        .unwrap();
    let seen = y.silences().await.unwrap();
    assert_eq!(seen, vec![s.clone()]);
    let ended = y.expire_silence(s.id, 5000).await.unwrap();
    assert_eq!(ended.ends_at_ms, 5000);
    assert_eq!(x.silences().await.unwrap()[0].ends_at_ms, 5000);
    assert!(matches!(
        x.expire_silence(s.id + 100, 5000).await,
        Err(StoreError::NotFound(_))
    ));
    // Gone once ended longer ago than the dead-letter retention.
    let day = Duration::from_secs(86_400);
    let pruned = x.prune(5000 + 2 * 86_400_000, day, day).await.unwrap();
    assert_eq!(pruned.state, 1);
    assert!(y.silences().await.unwrap().is_empty());
}

async fn an_unreadable_silence_mutes_nothing_and_is_reported(b: Backend) {
    use trackrelay::metrics::Metrics;
    use trackrelay::noise::silence::{Matchers, NewSilence, SilenceSet, Subject};
    use trackrelay::silence_cache::SilenceCache;
    let store = b.open().await;
    let far = 10_000_000_000_000_i64;
    let good = store
        .add_silence(
            NewSilence {
                matchers: Matchers {
                    device: Some("42".into()),
                    ..Default::default()
                },
                starts_at_ms: 0,
                ends_at_ms: far,
                author: "ops".into(),
                comment: "workshop".into(),
            },
            0,
        )
        .await
        .unwrap();
    // Rows another version (or damage) left: a matcher this version does not know, matchers that are
    // not JSON, an invalid glob, no matcher at all. Read as "no matchers", each would mute everything.
    b.execute(&format!(
        "INSERT INTO silences (matchers, starts_at, ends_at, author, comment, created_at) VALUES
             ('{{\"device\": \"7\", \"severity\": \"low\"}}', 0, {far}, 'newer', '', 0),
             ('{{\"device\": ', 0, {far}, 'damaged', '', 0),
             ('{{\"rule\": \"[\"}}', 0, {far}, 'glob', '', 0),
             ('{{}}', 0, {far}, 'empty', '', 0)"
    ))
    .await;
    let all = store.silences().await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0], good);
    let bad: Vec<i64> = all[1..].iter().map(|s| s.id).collect();
    let reasons: Vec<&str> = all[1..]
        .iter()
        .map(|s| s.unreadable.as_deref().expect("marked unreadable"))
        .collect();
    assert!(reasons[0].contains("severity"), "{}", reasons[0]);
    assert!(
        reasons[1].starts_with("matchers unreadable"),
        "{}",
        reasons[1]
    );
    assert!(reasons[2].starts_with("rule: `[`"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("at least one matcher"),
        "{}",
        reasons[3]
    );
    // Listed as unreadable, with the reason and no matchers (an empty set would read as "all").
    for s in &all[1..] {
        let v = serde_json::to_value(s.view(1000)).unwrap();
        assert_eq!(v["state"], "unreadable", "{v}");
        assert!(v["matchers"].is_null(), "{v}");
        assert_eq!(v["error"].as_str(), s.unreadable.as_deref());
    }
    // They match nothing; the readable one still applies.
    let subject = |device_id| Subject {
        device_id,
        device_name: "bike",
        group_id: 0,
        rule: "theft",
        event_type: "alarm",
        channel: "c",
    };
    let set = SilenceSet::new(all, 1000);
    assert_eq!(set.len(), 1);
    assert_eq!(
        set.unreadable()
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        bad
    );
    assert!(set.find(&subject(7), 1000).is_none());
    assert_eq!(set.find(&subject(42), 1000).map(|s| s.id), Some(good.id));
    // Reported in the metrics: how many not ended cannot be read.
    let metrics = Arc::new(Metrics::new());
    let cache = SilenceCache::new(metrics.clone());
    cache.refresh(&*store).await.unwrap();
    assert!(cache.get().find(&subject(7), now_ms()).is_none());
    let gauge = |m: &Metrics| {
        m.render(&[], 0.0)
            .lines()
            .find(|l| l.starts_with("trackrelay_silences_unreadable "))
            .map(str::to_string)
    };
    assert_eq!(
        gauge(&metrics).as_deref(),
        Some("trackrelay_silences_unreadable 4")
    );
    // Expiring one works as for any silence (how an operator clears it).
    let now = now_ms();
    let ended = store.expire_silence(bad[0], now).await.unwrap();
    assert!(ended.unreadable.is_some());
    assert_eq!(ended.view(now).state, "expired");
    cache.refresh(&*store).await.unwrap();
    assert_eq!(
        gauge(&metrics).as_deref(),
        Some("trackrelay_silences_unreadable 3")
    );
}

/// The only delivery, as listed.
async fn only_row(store: &dyn Store) -> DeliveryRow {
    let rows = store.list(Filter::default()).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

async fn a_late_outcome_of_an_expired_claim_changes_nothing(b: Backend) {
    let (one, two) = (b.open().await, b.open().await);
    let lease = Duration::from_secs(10);
    one.accept(event(1, 1000, vec![delivery("d", None)]))
        .await
        .unwrap();
    let first = one.claim(1000, 10, lease).await.unwrap();
    assert_eq!(keys(&first), ["d"]);
    let late = first[0].claim_ref();
    // The first instance's send outlives its lease: the second claims the delivery again.
    let second = two.claim(11_000, 10, lease).await.unwrap();
    assert_eq!(keys(&second), ["d"]);
    assert_eq!(
        (second[0].attempts, second[0].claim),
        (2, first[0].claim + 1)
    );
    let retry = || Outcome::Retry {
        at_ms: 12_000,
        error: "timeout".into(),
    };
    // A late outcome while the second claim is in flight: still in flight, still the second's.
    assert_eq!(
        one.finish(vec![(late, retry())], 11_500).await.unwrap(),
        [late]
    );
    let r = only_row(&*one).await;
    assert_eq!((r.status, r.last_error), (Status::Inflight, None));
    assert!(one.claim(15_000, 10, lease).await.unwrap().is_empty());
    // The second claimer sends it; the first one's late outcomes, whatever they say, change nothing.
    finish_all(
        &*two,
        vec![(second[0].claim_ref(), Outcome::Delivered)],
        12_000,
    )
    .await;
    let dead = Outcome::Dead {
        error: "refused".into(),
    };
    for o in [retry(), dead.clone(), Outcome::Delivered] {
        assert_eq!(one.finish(vec![(late, o)], 13_000).await.unwrap(), [late]);
    }
    let r = only_row(&*two).await;
    assert_eq!(
        (r.status, r.attempts, r.last_error, r.updated_at),
        (Status::Done, 2, None, rfc3339(12_000))
    );
    // No third send.
    assert!(two.claim(100_000, 10, lease).await.unwrap().is_empty());
    // A replay starts the attempts afresh, so its claim has the first one's attempt number; its own
    // claim number still tells them apart.
    assert_eq!(
        two.replay(Replay::Id(second[0].id), 20_000).await.unwrap(),
        1
    );
    let third = two.claim(20_000, 10, lease).await.unwrap();
    assert_eq!(third[0].attempts, first[0].attempts);
    assert_eq!(
        one.finish(vec![(late, dead)], 20_001).await.unwrap(),
        [late]
    );
    assert_eq!(only_row(&*one).await.status, Status::Inflight);
    // A batch mixing a stale outcome with a current one records the current one.
    let stale = one
        .finish(
            vec![(late, retry()), (third[0].claim_ref(), Outcome::Delivered)],
            20_002,
        )
        .await
        .unwrap();
    assert_eq!(stale, [late]);
    let r = only_row(&*one).await;
    assert_eq!((r.status, r.attempts), (Status::Done, 1));
}

async fn an_intake_claim_is_numbered_like_any_claim(b: Backend) {
    let (one, two) = (b.open().await, b.open().await);
    // Both ways of accepting: one statement (no noise state) and the transaction consulting state.
    let mut plain = event(1, 1000, vec![delivery("p", None), delivery("q", None)]);
    plain.claim_until = Some(11_000);
    let mut stateful = event(2, 1000, vec![gated("s", cooldown_gate())]);
    stateful.claim_until = Some(11_000);
    let mut at_intake = Vec::new();
    for e in [plain, stateful] {
        let Accepted::New { claimed, .. } = one.accept(e).await.unwrap() else {
            panic!("not stored")
        };
        at_intake.extend(claimed);
    }
    assert_eq!(keys(&at_intake), ["p", "q", "s"]);
    assert!(at_intake.iter().all(|c| (c.attempts, c.claim) == (1, 1)));
    // The normal path: the intake claim's outcome is recorded.
    finish_all(
        &*one,
        vec![(at_intake[1].claim_ref(), Outcome::Delivered)],
        2000,
    )
    .await;
    // The others' senders outlive the intake lease; another instance claims them again and sends.
    let taken = two.claim(11_000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&taken), ["p", "s"]);
    assert!(taken.iter().all(|c| (c.attempts, c.claim) == (2, 2)));
    let late: Vec<(ClaimRef, Outcome)> = [&at_intake[0], &at_intake[2]]
        .into_iter()
        .map(|c| {
            (
                c.claim_ref(),
                Outcome::Retry {
                    at_ms: 12_000,
                    error: "slow".into(),
                },
            )
        })
        .collect();
    let stale = one.finish(late, 11_500).await.unwrap();
    assert_eq!(stale, [at_intake[0].claim_ref(), at_intake[2].claim_ref()]);
    assert_eq!(
        sorted_counts(&*one).await,
        [(Status::Done, 1), (Status::Inflight, 2)]
    );
    finish_all(
        &*two,
        taken
            .iter()
            .map(|c| (c.claim_ref(), Outcome::Delivered))
            .collect(),
        12_000,
    )
    .await;
    assert_eq!(sorted_counts(&*two).await, [(Status::Done, 3)]);
}

fn delivery(key: &str, order: Option<&str>) -> NewDelivery {
    NewDelivery::from(&Planned {
        notification: Notification {
            key: key.into(),
            channel: "c".into(),
            recipient: "r".into(),
            content: Content::Log { text: key.into() },
            origin: Origin::default(),
        },
        dead: None,
        order_key: order.map(str::to_string),
        gates: Default::default(),
    })
}

fn event(id: i64, at: i64, deliveries: Vec<NewDelivery>) -> NewEvent {
    NewEvent {
        source: "s".into(),
        event_id: id,
        device_id: 1,
        event_type: "alarm".into(),
        received_at_ms: at,
        judged_at_ms: at,
        txn: None,
        payload: "{}".into(),
        deliveries,
        claim_until: None,
        debounce: None,
        position_missing: false,
        incidents: Vec::new(),
    }
}

fn keys(c: &[Claimed]) -> Vec<String> {
    c.iter().map(|d| d.notification().unwrap().key).collect()
}

async fn sorted_counts(store: &dyn Store) -> Vec<(Status, u64)> {
    let mut counts = store.counts().await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    counts
}

const LEASE: Duration = Duration::from_secs(60);

/// Records outcomes of claims that are still current: every one must be recorded.
async fn finish_all(store: &dyn Store, outcomes: Vec<(ClaimRef, Outcome)>, now: i64) {
    let stale = store.finish(outcomes, now).await.unwrap();
    assert!(
        stale.is_empty(),
        "current claims taken for stale: {stale:?}"
    );
}

async fn dedup_ordering_retry_and_dead(b: Backend) {
    let store = b.open().await;
    // What `/readyz` asks: the store answers.
    store.ping().await.unwrap();
    let first = store
        .accept(event(
            1,
            1000,
            vec![delivery("a", Some("k")), delivery("x", None)],
        ))
        .await
        .unwrap();
    assert_eq!(
        first,
        Accepted::New {
            deliveries: 2,
            claimed: vec![],
            quieted: vec![],
            incidents: vec![],
        }
    );
    store
        .accept(event(2, 1000, vec![delivery("b", Some("k"))]))
        .await
        .unwrap();
    // The same (source, event id) again: nothing is stored, whatever it carries now.
    assert_eq!(
        store
            .accept(event(2, 1000, vec![delivery("z", None)]))
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    // Another source is another namespace.
    let mut other = event(2, 1000, vec![]);
    other.source = "t".into();
    assert!(matches!(
        store.accept(other).await.unwrap(),
        Accepted::New { deliveries: 0, .. }
    ));

    // "b" waits behind "a" (same ordering key); "x" has none.
    let claimed = store.claim(1000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&claimed), ["a", "x"]);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].created_at_ms, 1000);
    assert!(store.claim(1000, 10, LEASE).await.unwrap().is_empty());
    let (a, x) = (claimed[0].claim_ref(), claimed[1].claim_ref());
    finish_all(&*store, vec![(x, Outcome::Delivered)], 1001).await;
    let retry = Outcome::Retry {
        at_ms: 5000,
        error: "down".into(),
    };
    finish_all(&*store, vec![(a, retry)], 1001).await;
    // While "a" waits for its retry, "b" still waits behind it, and the next due time is a's.
    assert!(store.claim(2000, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(store.next_due(2000).await.unwrap(), Some(5000));
    // "b" is due (since 1000), only held back by "a".
    assert_eq!(store.oldest_due(2000).await.unwrap(), Some(1000));
    let again = store.claim(5000, 10, LEASE).await.unwrap();
    assert_eq!(
        (keys(&again), again[0].attempts),
        (vec!["a".to_string()], 2)
    );
    let dead = Outcome::Dead {
        error: "gone".into(),
    };
    finish_all(&*store, vec![(again[0].claim_ref(), dead)], 5001).await;
    assert_eq!(keys(&store.claim(5001, 10, LEASE).await.unwrap()), ["b"]);
    assert_eq!(
        sorted_counts(&*store).await,
        [(Status::Dead, 1), (Status::Done, 1), (Status::Inflight, 1)]
    );
    let rows = store
        .list(Filter {
            status: Some(Status::Dead),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].key.as_str(),
            rows[0].attempts,
            rows[0].last_error.as_deref()
        ),
        ("a", 2, Some("gone"))
    );
}

async fn intake_claims_unordered_deliveries_at_once(b: Backend) {
    let store = b.open().await;
    let mut dead = delivery("refused", None);
    dead.dead = Some("no address".into());
    let mut e = event(
        1,
        1000,
        vec![
            delivery("fast", None),
            delivery("ordered", Some("k")),
            dead,
            delivery("fast2", None),
        ],
    );
    e.claim_until = Some(61_000);
    let Accepted::New {
        deliveries,
        claimed,
        ..
    } = store.accept(e).await.unwrap()
    else {
        panic!("not stored")
    };
    assert_eq!(deliveries, 4);
    assert_eq!(keys(&claimed), ["fast", "fast2"]);
    assert!(claimed.iter().all(|c| c.attempts == 1));
    assert!(claimed[0].id < claimed[1].id);
    // Only the ordered one is left for the claim; the fast ones are in flight until finished.
    let rest = store.claim(1000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&rest), ["ordered"]);
    finish_all(
        &*store,
        vec![
            (claimed[0].claim_ref(), Outcome::Delivered),
            (rest[0].claim_ref(), Outcome::Delivered),
        ],
        1001,
    )
    .await;
    assert_eq!(
        sorted_counts(&*store).await,
        [(Status::Dead, 1), (Status::Done, 2), (Status::Inflight, 1)]
    );
    // The intake claim carries its lease: once it ran out, the delivery is claimable again.
    assert!(store.claim(60_999, 10, LEASE).await.unwrap().is_empty());
    let again = store.claim(61_000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&again), ["fast2"]);
    assert_eq!(again[0].attempts, 2);
}

async fn an_expired_lease_goes_to_another_instance(b: Backend) {
    let (one, two) = (b.open().await, b.open().await);
    one.accept(event(1, 1000, vec![delivery("d", Some("k"))]))
        .await
        .unwrap();
    one.accept(event(2, 1000, vec![delivery("e", Some("k"))]))
        .await
        .unwrap();
    let lease = Duration::from_secs(10);
    let mine = one.claim(1000, 10, lease).await.unwrap();
    assert_eq!(keys(&mine), ["d"]);
    // The lease runs: the other instance gets nothing, not even what waits behind it.
    assert!(two.claim(10_999, 10, lease).await.unwrap().is_empty());
    // The end of the lease is when something falls due next.
    assert_eq!(two.next_due(5000).await.unwrap(), Some(11_000));
    // The first instance died: at the end of its lease the delivery is the other one's, one attempt on.
    let taken = two.claim(11_000, 10, lease).await.unwrap();
    assert_eq!((keys(&taken), taken[0].attempts), (vec!["d".into()], 2));
    assert!(one.claim(11_000, 10, lease).await.unwrap().is_empty());
    finish_all(
        &*two,
        vec![(taken[0].claim_ref(), Outcome::Delivered)],
        11_001,
    )
    .await;
    // Its successor in order is free now, for whoever asks first.
    assert_eq!(keys(&one.claim(11_002, 10, lease).await.unwrap()), ["e"]);
}

async fn a_claim_takes_expired_leases_first_then_the_oldest_due_up_to_its_limit(b: Backend) {
    let store = b.open().await;
    let lease = Duration::from_secs(10);
    store
        .accept(event(1, 1000, vec![delivery("a", None)]))
        .await
        .unwrap();
    assert_eq!(keys(&store.claim(1000, 1, lease).await.unwrap()), ["a"]);
    // A backlog behind it, due from 2000 on.
    for (id, key) in (2..).zip(["b", "c", "d", "e"]) {
        store
            .accept(event(id, 1000 * id, vec![delivery(key, None)]))
            .await
            .unwrap();
    }
    // At 11,000 the lease of `a` has run out: it comes first, the limit leaves room for one more.
    let first = store.claim(11_000, 2, lease).await.unwrap();
    assert_eq!(keys(&first), ["a", "b"]);
    assert_eq!(first[0].attempts, 2);
    assert_eq!(
        keys(&store.claim(11_000, 2, lease).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(keys(&store.claim(11_000, 10, lease).await.unwrap()), ["e"]);
    assert!(store.claim(11_000, 10, lease).await.unwrap().is_empty());
}

async fn recovery_takes_back_only_what_no_one_can_be_sending(b: Backend) {
    let store = b.open().await;
    store
        .accept(event(
            1,
            1000,
            vec![delivery("p", None), delivery("q", None)],
        ))
        .await
        .unwrap();
    assert_eq!(store.claim(1000, 10, LEASE).await.unwrap().len(), 2);
    // A restart (a new store object) while the leases still run.
    let restarted = b.open().await;
    let recovered = restarted.recover(2000).await.unwrap();
    if b.shared() {
        // Another instance may be sending them: they stay its until the lease runs out.
        assert_eq!(recovered, 0);
        assert!(restarted.claim(2000, 10, LEASE).await.unwrap().is_empty());
        assert_eq!(restarted.recover(61_000).await.unwrap(), 2);
    } else {
        // One process: whatever was in flight was left by the previous run.
        assert_eq!(recovered, 2);
    }
    let again = restarted.claim(61_000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&again), ["p", "q"]);
    assert!(again.iter().all(|c| c.attempts == 2));
}

async fn concurrent_claims_never_hand_out_a_delivery_twice(b: Backend) {
    const EVENTS: i64 = 300;
    let setup = b.open().await;
    let mut total = 0;
    for id in 1..=EVENTS {
        // Two unordered deliveries per event, and one to one of five recipients that need order.
        let order = format!("k{}", id % 5);
        let ds = vec![
            delivery(&format!("u{id}"), None),
            delivery(&format!("v{id}"), None),
            delivery(&format!("o{id}"), Some(&order)),
        ];
        total += ds.len();
        setup.accept(event(id, 1000, ds)).await.unwrap();
    }
    let stores = [b.open().await, b.open().await];
    let seen = Arc::new(Mutex::new(HashSet::<i64>::new()));
    // Per ordering key: the one in flight, and the ids in the order they were claimed.
    let ordered = Arc::new(Mutex::new(HashMap::<String, (Option<i64>, Vec<i64>)>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let store = stores[worker % 2].clone();
        let (seen, ordered) = (seen.clone(), ordered.clone());
        tasks.spawn(async move {
            let mut idle = 0;
            while idle < 20 {
                let batch = store.claim(2000, 7, LEASE).await.unwrap();
                if batch.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let mut done = Vec::new();
                for c in &batch {
                    assert!(
                        seen.lock().unwrap().insert(c.id),
                        "delivery {} handed out twice",
                        c.id
                    );
                    let key = c.notification().unwrap().key;
                    if let Some(n) = key.strip_prefix('o') {
                        let id: i64 = n.parse().unwrap();
                        let mut o = ordered.lock().unwrap();
                        let (inflight, order) = o.entry(format!("k{}", id % 5)).or_default();
                        assert_eq!(*inflight, None, "two deliveries of one key in flight");
                        *inflight = Some(c.id);
                        order.push(id);
                    }
                    done.push((c.claim_ref(), key));
                }
                tokio::task::yield_now().await;
                // Cleared before the outcome is recorded: the next one of the key may go after that.
                for (at, key) in &done {
                    if let Some(n) = key.strip_prefix('o') {
                        let n: i64 = n.parse().unwrap();
                        let mut o = ordered.lock().unwrap();
                        let (inflight, _) = o.get_mut(&format!("k{}", n % 5)).unwrap();
                        assert_eq!(*inflight, Some(at.id));
                        *inflight = None;
                    }
                }
                finish_all(
                    &*store,
                    done.iter()
                        .map(|(at, _)| (*at, Outcome::Delivered))
                        .collect(),
                    2001,
                )
                .await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), total);
    for (key, (_, order)) in ordered.lock().unwrap().iter() {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {order:?}"
        );
        assert_eq!(order.len(), EVENTS as usize / 5);
    }
    assert_eq!(
        setup.counts().await.unwrap(),
        [(Status::Done, total as u64)]
    );
}

async fn the_same_event_at_two_instances_at_once_is_stored_once(b: Backend) {
    const EVENTS: i64 = 100;
    let stores = [b.open().await, b.open().await];
    let mut tasks = tokio::task::JoinSet::new();
    for store in stores.clone() {
        tasks.spawn(async move {
            let mut new = Vec::new();
            for id in 1..=EVENTS {
                let mut e = event(id, 1000, vec![delivery(&format!("d{id}"), None)]);
                e.claim_until = Some(61_000);
                if let Accepted::New { claimed, .. } = store.accept(e).await.unwrap() {
                    assert_eq!(claimed.len(), 1);
                    new.push(id);
                }
            }
            new
        });
    }
    let mut stored = Vec::new();
    while let Some(r) = tasks.join_next().await {
        stored.extend(r.unwrap());
    }
    stored.sort_unstable();
    assert_eq!(stored, (1..=EVENTS).collect::<Vec<_>>());
    assert_eq!(
        stores[0].counts().await.unwrap(),
        [(Status::Inflight, EVENTS as u64)]
    );
}

async fn list_replay_prune_and_counts(b: Backend) {
    let store = b.open().await;
    for id in 1..=3 {
        let mut e = event(id, 1000, vec![delivery(&format!("d{id}"), None)]);
        e.device_id = id;
        e.txn = Some(format!("txn-{id}"));
        store.accept(e).await.unwrap();
    }
    let c = store.claim(1000, 10, LEASE).await.unwrap();
    let ids: Vec<i64> = c.iter().map(|c| c.id).collect();
    finish_all(
        &*store,
        vec![
            (c[0].claim_ref(), Outcome::Delivered),
            (
                c[1].claim_ref(),
                Outcome::Dead {
                    error: "refused".into(),
                },
            ),
            (
                c[2].claim_ref(),
                Outcome::Dead {
                    error: "refused".into(),
                },
            ),
        ],
        2000,
    )
    .await;

    let all = store.list(Filter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    let r = &all[2];
    assert_eq!(
        (
            r.status,
            r.channel.as_str(),
            r.recipient.as_str(),
            r.event_id,
            r.device_id
        ),
        (Status::Done, "c", "r", 1, 1)
    );
    assert_eq!(r.txn.as_deref(), Some("txn-1"));
    assert_eq!(r.event_type, "alarm");
    assert_eq!(r.created_at, rfc3339(1000));
    assert_eq!(r.updated_at, rfc3339(2000));
    assert_eq!(r.next_attempt_at, None);
    let by_device = store
        .list(Filter {
            device_id: Some(2),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_device.len(), 1);
    assert_eq!(by_device[0].id, ids[1]);
    let limited = store
        .list(Filter {
            limit: 1,
            channel: Some("c".into()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert!(store
        .list(Filter {
            channel: Some("nope".into()),
            ..Filter::default()
        })
        .await
        .unwrap()
        .is_empty());

    // Replay: one by id (dead or done only), then every dead letter.
    assert_eq!(store.replay(Replay::Id(ids[1]), 3000).await.unwrap(), 1);
    assert_eq!(store.replay(Replay::Id(999_999), 3000).await.unwrap(), 0);
    let pending = store
        .list(Filter {
            status: Some(Status::Pending),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].attempts,
            pending[0].last_error.as_deref(),
            pending[0].next_attempt_at.clone()
        ),
        (0, None, Some(rfc3339(3000)))
    );
    assert_eq!(store.replay(Replay::AllDead, 3000).await.unwrap(), 1);
    let again = store.claim(3000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&again), ["d2", "d3"]);
    assert!(again
        .iter()
        .all(|c| c.attempts == 1 && c.created_at_ms == 3000));
    finish_all(
        &*store,
        vec![
            (again[0].claim_ref(), Outcome::Delivered),
            (
                again[1].claim_ref(),
                Outcome::Dead {
                    error: "still refused".into(),
                },
            ),
        ],
        3001,
    )
    .await;

    // Retention: done rows (and then their events) after `retention`, dead ones after `dead_retention`.
    let day = Duration::from_secs(86_400);
    let ms = |d: u32| (day * d).as_millis() as i64;
    assert_eq!(
        store.prune(3001, day, 10 * day).await.unwrap(),
        Pruned::default()
    );
    assert_eq!(
        store.prune(3002 + ms(2), day, 10 * day).await.unwrap(),
        Pruned {
            deliveries: 2,
            events: 2,
            state: 0
        }
    );
    assert_eq!(sorted_counts(&*store).await, [(Status::Dead, 1)]);
    assert_eq!(
        store.prune(3002 + ms(11), day, 10 * day).await.unwrap(),
        Pruned {
            deliveries: 1,
            events: 1,
            state: 0
        }
    );
    assert!(store.counts().await.unwrap().is_empty());
    // A pruned event is forgotten: the same id is new again.
    assert!(matches!(
        store.accept(event(1, 5000, vec![])).await.unwrap(),
        Accepted::New { .. }
    ));
}

/// PostgreSQL only: an unreachable server is a clear error naming the database without its password.
#[tokio::test]
async fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let port = support::smtp::free_port();
    let started = std::time::Instant::now();
    let err = PgStore::connect(&PgOptions {
        url: format!("postgres://relay:s3cret-pw@127.0.0.1:{port}/db"),
        pool: 2,
        statement_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        startup_wait: Duration::ZERO,
        restart_grace: Duration::ZERO,
    })
    .await
    .err()
    .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://relay:***@127.0.0.1:{port}/db")),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// PostgreSQL only: instances starting together migrate once; a newer schema is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_are_safe_when_instances_start_together() {
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let url = support::pg::fresh_database(&admin, "migrate").await;
    let opts = PgOptions {
        url: url.clone(),
        pool: 2,
        statement_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        startup_wait: Duration::ZERO,
        restart_grace: Duration::ZERO,
    };
    let mut starting = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let opts = opts.clone();
        starting.spawn(async move {
            PgStore::connect(&opts)
                .await
                .map(|s| s.redacted_url().to_string())
        });
    }
    while let Some(r) = starting.join_next().await {
        r.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let store = PgStore::connect(&opts).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 8);
    support::pg::execute(&url, "INSERT INTO trackrelay_schema (version) VALUES (99)").await;
    let err = PgStore::connect(&opts).await.err().expect("refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

/// The keys of every delivery of the store, sorted.
async fn all_keys(store: &dyn Store) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(Filter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    keys.sort();
    keys
}

async fn a_copy_with_its_position_completes_one_stored_without(b: Backend) {
    let store = b.open().await;
    let missing = |id, deliveries| NewEvent {
        position_missing: true,
        ..event(id, 5000, deliveries)
    };
    // The socket's copy went on without its position: one rule matched.
    let first = store
        .accept(missing(1, vec![delivery("e1-any", None)]))
        .await
        .unwrap();
    assert!(
        matches!(first, Accepted::New { deliveries: 1, .. }),
        "{first:?}"
    );
    // The webhook's copy has it: the rule that needs it matches too; only that one is added.
    let both = vec![delivery("e1-any", None), delivery("e1-armed", None)];
    let second = store.accept(event(1, 5001, both.clone())).await.unwrap();
    assert!(
        matches!(second, Accepted::New { deliveries: 1, .. }),
        "{second:?}"
    );
    assert_eq!(all_keys(store.as_ref()).await, ["e1-any", "e1-armed"]);
    // Once complete, every further copy is a duplicate, with or without the position.
    assert_eq!(
        store.accept(event(1, 5002, both.clone())).await.unwrap(),
        Accepted::Duplicate
    );
    assert_eq!(
        store.accept(missing(1, both)).await.unwrap(),
        Accepted::Duplicate
    );
    // The other way round: a complete copy first, one without after it: a plain duplicate.
    store
        .accept(event(2, 5000, vec![delivery("e2-any", None)]))
        .await
        .unwrap();
    let late = missing(2, vec![delivery("e2-any", None), delivery("e2-x", None)]);
    assert_eq!(store.accept(late).await.unwrap(), Accepted::Duplicate);
    // With noise control: the notification both copies produced is neither stored twice nor counted
    // again by its cooldown; the new one is judged like any other.
    let gated_first = missing(3, vec![gated("e3-any", cooldown_gate())]);
    store.accept(gated_first).await.unwrap();
    let gated_second = event(
        3,
        5003,
        vec![gated("e3-any", cooldown_gate()), delivery("e3-armed", None)],
    );
    let second = store.accept(gated_second).await.unwrap();
    assert!(
        matches!(second, Accepted::New { deliveries: 1, .. }),
        "{second:?}"
    );
    assert_eq!(
        all_keys(store.as_ref()).await,
        ["e1-any", "e1-armed", "e2-any", "e3-any", "e3-armed"]
    );
    assert!(with_status(store.as_ref(), Status::Suppressed)
        .await
        .is_empty());
}

/// A delivery's idempotency key is unique per event (on both backends since SQLite's schema 4 and
/// PostgreSQL's 5), on both ways of accepting (one statement, and the transaction consulting noise
/// state): a key comes once per event, and another event's delivery under the same key is its own.
/// (Real keys hash their event's source and id, so keys of different events never meet.)
async fn an_idempotency_key_is_unique_per_event(b: Backend) {
    let store = b.open().await;
    for (id, gates) in [
        (1, Gates::default()),
        (2, cooldown_gate()),
        (3, Gates::default()),
    ] {
        let twice = vec![gated("same", gates.clone()), gated("same", gates)];
        let accepted = store.accept(event(id, 1000, twice)).await.unwrap();
        assert!(
            matches!(accepted, Accepted::New { deliveries: 2, .. }),
            "{accepted:?}"
        );
    }
    assert_eq!(all_keys(store.as_ref()).await, ["same", "same", "same"]);
    let due = store.claim(1000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&due), ["same", "same", "same"]);
}

/// A delivery noise control defers is stored pending with why it waits, and listed as quieted; a
/// deferral that gives no reason records none (not an empty one), on both ways of accepting.
async fn a_deferral_records_its_reason_or_none(b: Backend) {
    let store = b.open().await;
    let deferred = |key: &str, why: Option<&str>, stateful: bool| {
        let mut gates = if stateful {
            cooldown_gate()
        } else {
            Gates::default()
        };
        gates.not_before = Some(5000);
        gates.deferred_by = why.map(str::to_string);
        gated(key, gates)
    };
    for (id, stateful) in [(1, false), (2, true)] {
        let e = event(
            id,
            1000,
            vec![
                deferred(&format!("why{id}"), Some("quiet hours: deferred"), stateful),
                deferred(&format!("none{id}"), None, stateful),
            ],
        );
        let Accepted::New { quieted, .. } = store.accept(e).await.unwrap() else {
            panic!("not stored")
        };
        let pending = |index, reason: &str| Quieted {
            index,
            status: Status::Pending,
            reason: reason.into(),
        };
        assert_eq!(
            quieted,
            [pending(0, "quiet hours: deferred"), pending(1, "")]
        );
    }
    let mut rows = with_status(store.as_ref(), Status::Pending).await;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.key.as_str(),
                r.reason.as_deref(),
                r.next_attempt_at.as_deref(),
            )
        })
        .collect();
    let at = rfc3339(5000);
    assert_eq!(
        seen,
        [
            ("none1", None, Some(at.as_str())),
            ("none2", None, Some(at.as_str())),
            ("why1", Some("quiet hours: deferred"), Some(at.as_str())),
            ("why2", Some("quiet hours: deferred"), Some(at.as_str())),
        ]
    );
}

/// A replay sends a delivery afresh, by id and with every dead letter alike: why noise control once
/// made it wait is not kept (a replayed delivery listed as "quiet hours: deferred" would not be).
async fn a_replay_forgets_why_a_delivery_waited(b: Backend) {
    let store = b.open().await;
    let deferred = |key: &str| {
        gated(
            key,
            Gates {
                not_before: Some(5000),
                deferred_by: Some("quiet hours: deferred".into()),
                ..Default::default()
            },
        )
    };
    store
        .accept(event(1, 1000, vec![deferred("a"), deferred("b")]))
        .await
        .unwrap();
    let sent = store.claim(5000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&sent), ["a", "b"]);
    let dead = || Outcome::Dead {
        error: "refused".into(),
    };
    finish_all(
        &*store,
        sent.iter().map(|c| (c.claim_ref(), dead())).collect(),
        5001,
    )
    .await;
    assert_eq!(store.replay(Replay::Id(sent[0].id), 6000).await.unwrap(), 1);
    assert_eq!(store.replay(Replay::AllDead, 6000).await.unwrap(), 1);
    let rows = with_status(store.as_ref(), Status::Pending).await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            (r.reason.as_deref(), r.next_attempt_at.as_deref()),
            (None, Some(rfc3339(6000).as_str())),
            "{r:?}"
        );
    }
}

/// `finish` returns the stale outcomes in the order it was given them.
async fn stale_outcomes_come_back_in_the_order_given(b: Backend) {
    let store = b.open().await;
    store
        .accept(event(
            1,
            1000,
            vec![delivery("a", None), delivery("b", None)],
        ))
        .await
        .unwrap();
    let first = store.claim(1000, 10, LEASE).await.unwrap();
    // Their lease runs out: claimed again, the first claims are stale.
    let again = store.claim(61_000, 10, LEASE).await.unwrap();
    assert_eq!(keys(&again), ["a", "b"]);
    let late: Vec<(ClaimRef, Outcome)> = first
        .iter()
        .rev()
        .map(|c| (c.claim_ref(), Outcome::Delivered))
        .collect();
    let stale = store.finish(late, 61_001).await.unwrap();
    assert_eq!(stale, [first[1].claim_ref(), first[0].claim_ref()]);
}

/// PostgreSQL only: a database of schema 4 (idempotency keys unique across the table) upgrades to
/// keys unique per event, as SQLite's are, keeping its outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_of_schema_4_upgrades_to_keys_unique_per_event() {
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let url = support::pg::fresh_database(&admin, "upgrade4").await;
    let b = Backend::Postgres(url.clone());
    b.open()
        .await
        .accept(event(1, 1000, vec![delivery("k", None)]))
        .await
        .unwrap();
    // Back to what schema 4 had: the key unique across the table, an index on the event alone, no
    // incidents (schema 6), no chat (schema 7) and no console indexes (schema 8).
    support::pg::execute(
        &url,
        "DROP INDEX deliveries_status, deliveries_device, deliveries_rule, deliveries_channel;
         DELETE FROM trackrelay_schema WHERE version = 8;
         DROP TABLE bot_state, leases;
         ALTER TABLE deliveries DROP COLUMN peer_ref, DROP COLUMN peer_shown;
         DELETE FROM trackrelay_schema WHERE version = 7;
         DROP TABLE incidents, incident_tokens;
         ALTER TABLE deliveries DROP COLUMN incident_ref;
         DELETE FROM trackrelay_schema WHERE version = 6;
         DROP INDEX deliveries_event_key;
         ALTER TABLE deliveries ADD CONSTRAINT deliveries_key_key UNIQUE (key);
         CREATE INDEX deliveries_event ON deliveries (event_ref);
         DELETE FROM trackrelay_schema WHERE version = 5;",
    )
    .await;
    let store = b.open().await;
    // The outbox is kept.
    assert_eq!(keys(&store.claim(1000, 10, LEASE).await.unwrap()), ["k"]);
    // The key is unique per event now: another event's delivery under it is stored, once.
    store
        .accept(event(
            2,
            1000,
            vec![delivery("k", None), delivery("k", None)],
        ))
        .await
        .unwrap();
    assert_eq!(all_keys(store.as_ref()).await, ["k", "k"]);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let version: i32 = client
        .query_one("SELECT MAX(version) FROM trackrelay_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 8);
    let mut indexes: Vec<String> = client
        .query(
            "SELECT indexname::TEXT FROM pg_indexes WHERE tablename = 'deliveries'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "deliveries_channel",
            "deliveries_device",
            "deliveries_digest",
            "deliveries_due",
            "deliveries_event_key",
            "deliveries_group",
            "deliveries_hold",
            "deliveries_incident",
            "deliveries_lease",
            "deliveries_order",
            "deliveries_peer",
            "deliveries_pkey",
            "deliveries_rule",
            "deliveries_status",
        ]
    );
    drop(client);
    let _ = task.await;
}

// ---------------------------------------------------------------------------------------------------
// Incidents (issue 17): the store's side, decided by the pure core (`trackrelay::incident`) inside the
// accept transaction and written by compare-and-set.

const T0: i64 = 1_000_000;
const REPEAT_MS: i64 = 300_000;
const KEY: &str = "theft/7";

/// Repeats every 5 minutes; `resolve_on` set.
fn incident_policy() -> IncidentPolicy {
    let mut p = IncidentPolicy::from_raw(&RawIncident {
        repeat: Some(Duration::from_millis(REPEAT_MS as u64)),
        ..Default::default()
    })
    .unwrap();
    p.resolve_on = true;
    p
}

/// Rule `rule`'s offer to the incident of `key`, owning the event's deliveries `deliveries`.
fn offer(key: &str, rule: &str, trigger: Trigger, deliveries: Vec<usize>) -> IncidentOffer {
    IncidentOffer {
        facts: EventFacts {
            trigger,
            key: key.into(),
            rule: rule.into(),
            seen: None,
        },
        policy: incident_policy(),
        policies: Default::default(),
        deliveries,
        tokens: vec![],
        muted: false,
    }
}

/// Event `id` at `at` whose deliveries all belong to rule `theft`'s incident of `key`.
fn alarm(id: i64, at: i64, key: &str, trigger: Trigger, deliveries: Vec<NewDelivery>) -> NewEvent {
    NewEvent {
        incidents: vec![offer(
            key,
            "theft",
            trigger,
            (0..deliveries.len()).collect(),
        )],
        ..event(id, at, deliveries)
    }
}

/// A delivery `key` to `recipient` on channel `c`.
fn to(key: &str, recipient: &str) -> NewDelivery {
    NewDelivery {
        recipient: recipient.into(),
        ..delivery(key, None)
    }
}

/// What an accepted event did to its incidents: (incident, effect) per offer.
fn outcomes(a: &Accepted) -> Vec<(Option<i64>, Effect)> {
    match a {
        Accepted::New { incidents, .. } => incidents.iter().map(|o| (o.id, o.effect)).collect(),
        Accepted::Duplicate => panic!("a duplicate"),
    }
}

/// Accepts `e`, which must open an incident; returns its id.
async fn opens(store: &dyn Store, e: NewEvent) -> i64 {
    let a = store.accept(e).await.unwrap();
    match outcomes(&a)[..] {
        [(Some(id), Effect::Opened)] => id,
        ref other => panic!("not opened: {other:?}"),
    }
}

fn state(row: &IncidentRow) -> &IncidentState {
    row.state.as_ref().unwrap()
}

async fn incident_row(store: &dyn Store, id: i64) -> IncidentRow {
    store.incident(id).await.unwrap().expect("the incident")
}

/// The delivery stored under `key`.
async fn by_key(store: &dyn Store, key: &str) -> DeliveryRow {
    store
        .list(Filter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("no delivery {key}"))
}

/// Lena acknowledges `row` at `now`: its pending deliveries are cancelled, its circle is owed a notice.
fn ack_write(row: &IncidentRow, now: i64) -> IncidentWrite {
    let (state, changed) = acknowledge(state(row), "Lena", AckSource::Api, now).unwrap();
    assert!(changed);
    IncidentWrite {
        id: row.id,
        revision: row.revision,
        state,
        next_at: Some(now),
        notice: Some(Notice::Acknowledged),
        suppress_pending: Some("acknowledged by Lena".into()),
        deliveries: vec![],
        tokens: vec![],
        now_ms: now,
    }
}

/// `row` resolved by hand at `now`, owing its circle a notice or not.
fn resolve_write(row: &IncidentRow, now: i64, notice: bool) -> IncidentWrite {
    let how = Resolution::Manual {
        by: "Max".into(),
        via: AckSource::Cli,
    };
    IncidentWrite {
        id: row.id,
        revision: row.revision,
        state: resolve(state(row), how, now).0,
        next_at: notice.then_some(now),
        notice: notice.then_some(Notice::Resolved),
        suppress_pending: None,
        deliveries: vec![],
        tokens: vec![],
        now_ms: now,
    }
}

async fn an_incident_opens_is_joined_acknowledged_and_resolved(b: Backend) {
    let store = b.open().await;
    let opening = vec![to("o-lena", "lena"), to("o-max", "max")];
    let id = opens(&*store, alarm(1, T0, KEY, Trigger::Match, opening)).await;
    let row = store.live_incident(KEY).await.unwrap().expect("live");
    assert_eq!(
        (
            row.id,
            row.status_name(),
            row.next_at,
            row.notice,
            row.revision
        ),
        (id, "open", Some(T0 + REPEAT_MS), None, 0)
    );
    assert_eq!(
        (row.key.as_str(), row.rule.as_str(), state(&row).events),
        (KEY, "theft", 1)
    );
    assert_eq!(store.incident_counts().await.unwrap(), [("open".into(), 1)]);
    assert_eq!(
        store.next_incident_at().await.unwrap(),
        Some(T0 + REPEAT_MS)
    );
    // Its deliveries go out; one is being sent when the acknowledgement comes.
    assert_eq!(with_status(&*store, Status::Pending).await.len(), 2);
    assert_eq!(keys(&store.claim(T0, 1, LEASE).await.unwrap()), ["o-lena"]);

    // Another alarm of the key joins it: it notifies nobody.
    let joining = alarm(
        2,
        T0 + 1000,
        KEY,
        Trigger::Match,
        vec![to("j-lena", "lena")],
    );
    let joined = store.accept(joining).await.unwrap();
    assert_eq!(outcomes(&joined), [(Some(id), Effect::Joined)]);
    let j = by_key(&*store, "j-lena").await;
    assert_eq!(j.status, Status::Suppressed);
    let reason = j.reason.unwrap();
    assert!(
        reason.starts_with(&format!("joined incident {id} (2 events since")),
        "{reason}"
    );
    let row = incident_row(&*store, id).await;
    assert_eq!(
        (state(&row).events, row.revision, row.next_at),
        (2, 1, Some(T0 + REPEAT_MS))
    );

    // Acknowledged: the pending delivery of the incident is cancelled, the one in flight may finish,
    // the joined one keeps its reason.
    assert!(store
        .write_incident(ack_write(&row, T0 + 2000))
        .await
        .unwrap());
    let cancelled = by_key(&*store, "o-max").await;
    assert_eq!(
        (cancelled.status, cancelled.reason.as_deref()),
        (Status::Suppressed, Some("acknowledged by Lena"))
    );
    assert_eq!(by_key(&*store, "o-lena").await.status, Status::Inflight);
    assert_eq!(by_key(&*store, "j-lena").await.reason, Some(reason));
    assert_eq!(
        store.incident_counts().await.unwrap(),
        [("acknowledged".into(), 1)]
    );

    // A `resolve_on` event resolves it; its circle is owed a notice, now.
    let resolving = alarm(
        3,
        T0 + 3000,
        KEY,
        Trigger::ResolveOn,
        vec![to("r-lena", "lena")],
    );
    let resolved = store.accept(resolving).await.unwrap();
    assert_eq!(outcomes(&resolved), [(Some(id), Effect::Resolved)]);
    let r = by_key(&*store, "r-lena").await;
    assert_eq!(
        (r.status, r.reason),
        (Status::Suppressed, Some(format!("resolves incident {id}")))
    );
    let row = incident_row(&*store, id).await;
    assert_eq!(
        (row.status_name(), row.notice, row.next_at),
        ("resolved", Some(Notice::Resolved), Some(T0 + 3000))
    );
    assert!(store.live_incident(KEY).await.unwrap().is_none());
    assert!(store.incident_counts().await.unwrap().is_empty());
    assert!(store
        .incidents(IncidentFilter::default())
        .await
        .unwrap()
        .is_empty());

    // Nothing to resolve now; the key's next alarm opens a new incident.
    let nothing = alarm(4, T0 + 4000, KEY, Trigger::ResolveOn, vec![to("n", "lena")]);
    let nothing = store.accept(nothing).await.unwrap();
    assert_eq!(outcomes(&nothing), [(None, Effect::NothingToResolve)]);
    assert_eq!(by_key(&*store, "n").await.status, Status::Suppressed);
    let again = alarm(
        5,
        T0 + 5000,
        KEY,
        Trigger::Match,
        vec![to("p-lena", "lena")],
    );
    let new = opens(&*store, again).await;
    assert_ne!(new, id);
    assert_eq!(by_key(&*store, "p-lena").await.status, Status::Pending);
    let all = store
        .incidents(IncidentFilter {
            all: true,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [new, id]);
}

async fn one_incident_per_key_across_instances_under_a_race(b: Backend) {
    // Two instances get 40 alarms of one key at the same moment, 20 each: one opens the incident,
    // the others join it, one after the other.
    let (x, y) = (b.open().await, b.open().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { x.clone() } else { y.clone() };
        tasks.push(tokio::spawn(async move {
            let e = alarm(
                100 + i,
                T0 + i,
                KEY,
                Trigger::Match,
                vec![to(&format!("k{i}"), "lena")],
            );
            store.accept(e).await.unwrap()
        }));
    }
    let mut effects = Vec::new();
    for t in tasks {
        effects.extend(outcomes(&t.await.unwrap()));
    }
    let opened: Vec<i64> = effects
        .iter()
        .filter(|(_, e)| *e == Effect::Opened)
        .filter_map(|(id, _)| *id)
        .collect();
    assert_eq!(opened.len(), 1, "{effects:?}");
    let id = opened[0];
    assert!(effects.iter().all(|(i, _)| *i == Some(id)), "{effects:?}");
    let all = x
        .incidents(IncidentFilter {
            all: true,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].id, state(&all[0]).events, all[0].revision),
        (id, 40, 39)
    );
    assert_eq!(with_status(&*y, Status::Pending).await.len(), 1);
    let suppressed = with_status(&*x, Status::Suppressed).await;
    assert_eq!(suppressed.len(), 39);
    let joined = format!("joined incident {id} ");
    assert!(suppressed
        .iter()
        .all(|d| d.reason.as_deref().unwrap().starts_with(&joined)));
}

async fn an_incident_write_is_made_only_at_the_revision_read(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    let opening = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    let id = opens(&*x, opening).await;
    let row = incident_row(&*x, id).await;
    // Writers read revision 0 (two instances' timers, or a timer and a person) and write at once, at
    // two instances, each adding a delivery and cancelling the pending ones: one is written, all of
    // it; the others not at all. (Several rounds: the writes must overlap.)
    const ROUNDS: usize = 8;
    let write = |row: &IncidentRow, by: &str| IncidentWrite {
        suppress_pending: Some(format!("acknowledged by {by}")),
        deliveries: vec![to(&format!("note-{by}"), by)],
        ..ack_write(row, T0 + 1000)
    };
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let (key, o) = (format!("race/{round}"), format!("o-{round}"));
        let e = alarm(
            100 + round as i64,
            T0,
            &key,
            Trigger::Match,
            vec![to(&o, "lena")],
        );
        let row = incident_row(&*x, opens(&*x, e).await).await;
        let mut writes = tokio::task::JoinSet::new();
        for w in 0..4 {
            let store = if w % 2 == 0 { x.clone() } else { y.clone() };
            let by = format!("{round}-{w}");
            let write = write(&row, &by);
            writes.spawn(async move { (store.write_incident(write).await.unwrap(), by) });
        }
        let mut won = Vec::new();
        while let Some(r) = writes.join_next().await {
            let (written, by) = r.unwrap();
            if written {
                won.push(by);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one write: {won:?}");
        let winner = &won[0];
        assert_eq!(
            by_key(&*x, &o).await.reason,
            Some(format!("acknowledged by {winner}"))
        );
        assert_eq!(incident_row(&*x, row.id).await.revision, 1);
        winners.push(format!("note-{winner}"));
    }
    let notes: Vec<String> = all_keys(&*x)
        .await
        .into_iter()
        .filter(|k| k.starts_with("note-"))
        .collect();
    winners.sort();
    assert_eq!(notes, winners);
    assert!(x.write_incident(write(&row, "one")).await.unwrap());
    let read = incident_row(&*x, id).await;
    assert_eq!((read.revision, read.status_name()), (1, "acknowledged"));

    // An event joins after the row was read: the write of what was read is refused, and nothing of it
    // is written.
    let joining = alarm(2, T0 + 2000, KEY, Trigger::Match, vec![to("j", "lena")]);
    assert_eq!(
        outcomes(&x.accept(joining).await.unwrap()),
        [(Some(id), Effect::Joined)]
    );
    let stale = IncidentWrite {
        deliveries: vec![to("late", "max")],
        ..resolve_write(&read, T0 + 3000, true)
    };
    assert!(!y.write_incident(stale).await.unwrap());
    let now = incident_row(&*x, id).await;
    assert_eq!(
        (now.revision, now.status_name(), state(&now).events),
        (2, "acknowledged", 2)
    );
    assert!(!all_keys(&*x).await.contains(&"late".to_string()));
    // Read again, it is written.
    let fresh = IncidentWrite {
        deliveries: vec![to("late", "max")],
        ..resolve_write(&now, T0 + 3000, true)
    };
    assert!(y.write_incident(fresh).await.unwrap());
    let done = incident_row(&*x, id).await;
    assert_eq!(
        (done.revision, done.status_name(), state(&done).events),
        (3, "resolved", 2)
    );
    assert_eq!(by_key(&*x, "late").await.status, Status::Pending);
    // No such incident: nothing is written.
    let missing = IncidentWrite {
        id: id + 1000,
        ..resolve_write(&done, T0 + 4000, false)
    };
    assert!(!x.write_incident(missing).await.unwrap());
}

async fn incident_writes_racing_joins_are_never_lost(b: Backend) {
    // Alarms join incidents at two instances while timers write them (each write counts a repeat):
    // every join and every write that said so is kept. The accept transaction reads and writes the row
    // under the key's lock, and a write takes the same lock: neither overwrites what the other wrote
    // after it read.
    const KEYS: i64 = 8;
    const JOINS: i64 = 12;
    const WRITES: u32 = 20;
    let (x, y) = (b.open().await, b.open().await);
    let key = |k: i64| format!("theft/{k}");
    for k in 0..KEYS {
        let e = alarm(
            k + 1,
            T0,
            &key(k),
            Trigger::Match,
            vec![to(&format!("o{k}"), "l")],
        );
        opens(&*x, e).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..KEYS {
        for j in 0..JOINS {
            let store = if j % 2 == 0 { x.clone() } else { y.clone() };
            let e = alarm(
                1000 + k * 100 + j,
                T0 + 1 + j,
                &key(k),
                Trigger::Match,
                vec![to(&format!("j{k}-{j}"), "l")],
            );
            tasks.spawn(async move {
                store.accept(e).await.unwrap();
            });
        }
        let (store, key) = (if k % 2 == 0 { y.clone() } else { x.clone() }, key(k));
        tasks.spawn(async move {
            let mut written = 0;
            while written < WRITES {
                let row = store.live_incident(&key).await.unwrap().unwrap();
                let mut next = state(&row).clone();
                next.repeats_done += 1;
                let w = IncidentWrite {
                    id: row.id,
                    revision: row.revision,
                    state: next,
                    next_at: row.next_at,
                    notice: None,
                    suppress_pending: None,
                    deliveries: vec![],
                    tokens: vec![],
                    now_ms: T0 + 500,
                };
                if store.write_incident(w).await.unwrap() {
                    written += 1;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for k in 0..KEYS {
        let row = x.live_incident(&key(k)).await.unwrap().unwrap();
        let s = state(&row);
        assert_eq!(
            (s.events, s.repeats_done, row.revision),
            (JOINS as u64 + 1, WRITES, JOINS + i64::from(WRITES)),
            "{}",
            key(k)
        );
    }
}

async fn due_incidents_come_with_their_event_and_the_circle_owed_a_notice(b: Backend) {
    let store = b.open().await;
    let mut e = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    e.payload = r#"{"event":{"id":1}}"#.into();
    e.txn = Some("txn-1".into());
    let id = opens(&*store, e).await;
    // An incident of another key, opened a little earlier: due first.
    let other = alarm(
        2,
        T0 - 10,
        "theft/8",
        Trigger::Match,
        vec![to("o-8", "lena")],
    );
    let earlier = opens(&*store, other).await;
    let first_repeat = T0 + REPEAT_MS;
    assert!(store
        .due_incidents(first_repeat - 11, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.next_incident_at().await.unwrap(),
        Some(first_repeat - 10)
    );
    let ids = |due: &[DueIncident]| due.iter().map(|d| d.row.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&store.due_incidents(first_repeat, 1).await.unwrap()),
        [earlier]
    );
    let due = store.due_incidents(first_repeat, 10).await.unwrap();
    assert_eq!(ids(&due), [earlier, id]);
    let d = &due[1];
    let ev = d.event.as_ref().expect("its event");
    assert_eq!(
        (
            ev.source.as_str(),
            ev.event_id,
            ev.device_id,
            ev.event_type.as_str(),
            ev.txn.as_deref(),
            ev.payload.as_str()
        ),
        ("s", 1, 1, "alarm", Some("txn-1"), r#"{"event":{"id":1}}"#)
    );
    assert_eq!(d.row.notice, None);
    assert!(d.circle.is_empty(), "no notice owed: no circle");
    // Lena got the opening message.
    let sent = store.claim(T0, 10, LEASE).await.unwrap();
    finish_all(
        &*store,
        sent.iter()
            .map(|c| (c.claim_ref(), Outcome::Delivered))
            .collect(),
        T0,
    )
    .await;

    // The timer sends the first repeat, to Max and Zoe, for the incident's event; the timer moves on.
    let policy = incident_policy();
    let t = tick(state(&d.row), &policy, first_repeat);
    assert_eq!(t.send.len(), 1);
    let repeat = IncidentWrite {
        id,
        revision: d.row.revision,
        next_at: trackrelay::store::incidents::timer(&t.state, &policy, false, first_repeat),
        state: t.state,
        notice: None,
        suppress_pending: None,
        deliveries: vec![to("repeat-max", "max"), to("repeat-zoe", "zoe")],
        tokens: vec![],
        now_ms: first_repeat,
    };
    assert!(store.write_incident(repeat).await.unwrap());
    assert_eq!(
        ids(&store.due_incidents(first_repeat, 10).await.unwrap()),
        [earlier]
    );
    let rep = by_key(&*store, "repeat-max").await;
    assert_eq!(
        (rep.status, rep.event_id, rep.txn.as_deref()),
        (Status::Pending, 1, Some("txn-1"))
    );
    // Max's is being sent when Lena acknowledges: Zoe's, pending, is cancelled (the steps belong to
    // the incident), and the circle is owed a notice.
    assert_eq!(
        keys(&store.claim(first_repeat, 1, LEASE).await.unwrap()),
        ["repeat-max"]
    );
    let row = incident_row(&*store, id).await;
    let acked = first_repeat + 1000;
    assert!(store.write_incident(ack_write(&row, acked)).await.unwrap());
    assert_eq!(
        by_key(&*store, "repeat-zoe").await.status,
        Status::Suppressed
    );
    let due = store.due_incidents(acked, 10).await.unwrap();
    assert_eq!(ids(&due), [earlier, id]);
    assert_eq!(due[1].row.notice, Some(Notice::Acknowledged));
    assert_eq!(
        due[1].circle,
        [
            ("c".to_string(), "lena".to_string()),
            ("c".to_string(), "max".to_string())
        ]
    );
}

async fn acknowledgement_tokens_find_their_incident(b: Backend) {
    let store = b.open().await;
    let token = |hash: &str, label: &str| NewToken {
        hash: hash.into(),
        label: label.into(),
        chat: None,
    };
    let mut e = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    e.incidents[0].tokens = vec![token("h-lena", "lena"), token("h-max", "max")];
    let id = opens(&*store, e).await;
    let (row, label) = store.incident_by_token("h-max").await.unwrap().unwrap();
    assert_eq!((row.id, label.as_str()), (id, "max"));
    assert!(store.incident_by_token("h-nobody").await.unwrap().is_none());
    // A joining event's links are not kept: its messages are not sent.
    let mut j = alarm(2, T0 + 1000, KEY, Trigger::Match, vec![to("j", "lena")]);
    j.incidents[0].tokens = vec![token("h-join", "lena")];
    assert_eq!(
        outcomes(&store.accept(j).await.unwrap()),
        [(Some(id), Effect::Joined)]
    );
    assert!(store.incident_by_token("h-join").await.unwrap().is_none());
    // A write's are.
    let row = incident_row(&*store, id).await;
    let w = IncidentWrite {
        tokens: vec![token("h-zoe", "zoe")],
        ..ack_write(&row, T0 + 2000)
    };
    assert!(store.write_incident(w).await.unwrap());
    let (row, label) = store.incident_by_token("h-zoe").await.unwrap().unwrap();
    assert_eq!(
        (row.id, row.status_name(), label.as_str()),
        (id, "acknowledged", "zoe")
    );
}

async fn a_copy_completing_an_event_does_not_join_its_incident_twice(b: Backend) {
    let store = b.open().await;
    // The socket's copy went on without its position: the theft rule matched, and opened an incident.
    let first = NewEvent {
        position_missing: true,
        incidents: vec![offer(KEY, "theft", Trigger::Match, vec![0])],
        ..event(1, T0, vec![to("e1-theft", "lena")])
    };
    let id = opens(&*store, first).await;
    // The webhook's copy has it: the theft rule again (decided by the first copy already) and a rule
    // that needs the position, with an incident of its own.
    let second = NewEvent {
        incidents: vec![
            offer(KEY, "theft", Trigger::Match, vec![0]),
            offer("armed/1", "armed", Trigger::Match, vec![1]),
        ],
        ..event(
            1,
            T0 + 1,
            vec![to("e1-theft", "lena"), to("e1-armed", "lena")],
        )
    };
    let a = store.accept(second.clone()).await.unwrap();
    let armed = match outcomes(&a)[..] {
        [(Some(armed), Effect::Opened)] => armed,
        ref other => panic!("{other:?}"),
    };
    assert_ne!(armed, id);
    let theft = incident_row(&*store, id).await;
    assert_eq!((state(&theft).events, theft.revision), (1, 0));
    assert_eq!(all_keys(&*store).await, ["e1-armed", "e1-theft"]);
    assert_eq!(with_status(&*store, Status::Pending).await.len(), 2);
    // Once complete, a further copy is a duplicate.
    assert_eq!(store.accept(second).await.unwrap(), Accepted::Duplicate);
    assert_eq!(state(&incident_row(&*store, id).await).events, 1);
    assert_eq!(state(&incident_row(&*store, armed).await).events, 1);
}

async fn retention_keeps_the_event_of_an_incident_not_done_with(b: Backend) {
    let store = b.open().await;
    let day = Duration::from_secs(86_400);
    let days = |n: i64| T0 + n * 86_400_000;
    let mut e = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    e.incidents[0].tokens = vec![NewToken {
        hash: "h-lena".into(),
        label: "lena".into(),
        chat: None,
    }];
    let id = opens(&*store, e).await;
    store
        .accept(event(2, T0, vec![to("plain", "lena")]))
        .await
        .unwrap();
    let sent = store.claim(T0, 10, LEASE).await.unwrap();
    finish_all(
        &*store,
        sent.iter()
            .map(|c| (c.claim_ref(), Outcome::Delivered))
            .collect(),
        T0,
    )
    .await;
    // Two days later the sent deliveries go, and the plain event; the live incident's event stays.
    assert_eq!(
        store.prune(days(2), day, 10 * day).await.unwrap(),
        Pruned {
            deliveries: 2,
            events: 1,
            state: 0
        }
    );
    let due = store.due_incidents(days(2), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].event.as_ref().map(|e| e.event_id), Some(1));
    assert!(store.incident_by_token("h-lena").await.unwrap().is_some());
    // Resolved by hand, its circle still owed the notice: the event stays (the notice is rendered
    // from it), the link is dead.
    let row = incident_row(&*store, id).await;
    assert!(store
        .write_incident(resolve_write(&row, days(2), true))
        .await
        .unwrap());
    assert_eq!(
        store.prune(days(4), day, 10 * day).await.unwrap(),
        Pruned::default()
    );
    assert!(store.incident_by_token("h-lena").await.unwrap().is_none());
    let due = store.due_incidents(days(4), 10).await.unwrap();
    assert_eq!(due[0].event.as_ref().map(|e| e.event_id), Some(1));
    // Once the notice is sent, its event goes with the rest (it is older than the retention), and the
    // incident once its last write is.
    let row = incident_row(&*store, id).await;
    let sent = IncidentWrite {
        next_at: None,
        notice: None,
        state: state(&row).clone(),
        ..resolve_write(&row, days(4), false)
    };
    assert!(store.write_incident(sent).await.unwrap());
    assert_eq!(
        store.prune(days(4) + 1, day, 10 * day).await.unwrap(),
        Pruned {
            deliveries: 0,
            events: 1,
            state: 0
        }
    );
    assert_eq!(incident_row(&*store, id).await.status_name(), "resolved");
    assert_eq!(
        store.prune(days(6), day, 10 * day).await.unwrap(),
        Pruned {
            deliveries: 0,
            events: 0,
            state: 1
        }
    );
    assert!(store.incident(id).await.unwrap().is_none());
    assert_eq!(store.next_incident_at().await.unwrap(), None);
}

async fn an_unreadable_incident_is_left_alone_and_the_event_notified(b: Backend) {
    let store = b.open().await;
    let id = opens(
        &*store,
        alarm(1, T0, KEY, Trigger::Match, vec![to("o", "lena")]),
    )
    .await;
    // A row a newer version wrote.
    b.execute(r#"UPDATE incidents SET state = '{"version": 99}'"#)
        .await;
    let a = store
        .accept(alarm(
            2,
            T0 + 1000,
            KEY,
            Trigger::Match,
            vec![to("u", "lena")],
        ))
        .await
        .unwrap();
    assert_eq!(outcomes(&a), [(Some(id), Effect::Unreadable)]);
    assert_eq!(by_key(&*store, "u").await.status, Status::Pending);
    let row = store.live_incident(KEY).await.unwrap().expect("left alone");
    assert_eq!(
        (row.id, row.revision, row.status_name()),
        (id, 0, "unreadable")
    );
    assert!(row.state.is_err());
    let all = store
        .incidents(IncidentFilter {
            all: true,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Two-way chat (issue 18): button tokens bound to a chat, the peer's ids of delivered messages and what
// they show, a bot's update offset, and the lease that lets one instance poll a bot.

async fn button_tokens_find_their_incident_and_chat(b: Backend) {
    let store = b.open().await;
    let token = |hash: &str, label: &str, chat: Option<&str>| NewToken {
        hash: hash.into(),
        label: label.into(),
        chat: chat.map(str::to_string),
    };
    let mut e = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    e.incidents[0].tokens = vec![
        token("b-lena", "tg", Some("4242")),
        token("h-lena", "lena", None),
    ];
    let id = opens(&*store, e).await;
    let (row, label, chat) = store.incident_by_button("b-lena").await.unwrap().unwrap();
    assert_eq!(
        (row.id, label.as_str(), chat.as_deref()),
        (id, "tg", Some("4242"))
    );
    // A link's token is bound to no chat; a button's still finds its incident as a link's does.
    let (row, label, chat) = store.incident_by_button("h-lena").await.unwrap().unwrap();
    assert_eq!((row.id, label.as_str(), chat), (id, "lena", None));
    let (row, label) = store.incident_by_token("b-lena").await.unwrap().unwrap();
    assert_eq!((row.id, label.as_str()), (id, "tg"));
    assert!(store
        .incident_by_button("b-nobody")
        .await
        .unwrap()
        .is_none());
    // A write's buttons keep their chat too, seen by another instance.
    let row = incident_row(&*store, id).await;
    let w = IncidentWrite {
        tokens: vec![token("b-max", "tg", Some("-100777"))],
        ..ack_write(&row, T0 + 2000)
    };
    assert!(store.write_incident(w).await.unwrap());
    let other = b.open().await;
    let (row, _, chat) = other.incident_by_button("b-max").await.unwrap().unwrap();
    assert_eq!(
        (row.id, row.status_name(), chat.as_deref()),
        (id, "acknowledged", Some("-100777"))
    );
}

/// The delivery ids of `keys`, in order.
async fn ids_of(store: &dyn Store, keys: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for k in keys {
        ids.push(by_key(store, k).await.id);
    }
    ids
}

fn delivery_ids(messages: &[PeerMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.delivery_id).collect()
}

async fn peer_refs_list_the_messages_still_to_edit(b: Backend) {
    let store = b.open().await;
    let theft = opens(
        &*store,
        alarm(
            1,
            T0,
            KEY,
            Trigger::Match,
            vec![to("o-lena", "lena"), to("o-max", "max")],
        ),
    )
    .await;
    store
        .accept(event(2, T0, vec![to("plain", "lena")]))
        .await
        .unwrap();
    let other = opens(
        &*store,
        alarm(
            3,
            T0 + 5,
            "other/8",
            Trigger::Match,
            vec![to("x-zoe", "zoe")],
        ),
    )
    .await;
    let ids = ids_of(&*store, &["o-lena", "o-max", "plain", "x-zoe"]).await;
    let (lena, plain, zoe) = (ids[0], ids[2], ids[3]);
    assert!(store
        .active_peer_messages(&on(&["c"]), 0)
        .await
        .unwrap()
        .is_empty());
    // Max's message got no id (not sent yet); the plain one belongs to no incident; an unknown
    // delivery is skipped.
    store
        .record_peer_refs(vec![
            (zoe, "m-4".into()),
            (lena, "m-1".into()),
            (plain, "m-3".into()),
            (987_654, "m-x".into()),
        ])
        .await
        .unwrap();
    let active = store.active_peer_messages(&on(&["c"]), 0).await.unwrap();
    assert_eq!(delivery_ids(&active), [lena, zoe]);
    let m = &active[0];
    assert_eq!(
        PeerMessage {
            payload: String::new(),
            ..m.clone()
        },
        PeerMessage {
            delivery_id: lena,
            incident_ref: theft,
            channel: "c".into(),
            recipient: "lena".into(),
            peer_ref: "m-1".into(),
            payload: String::new(),
            shown: None,
            device_id: 1,
            created_at_ms: T0,
        }
    );
    // The notification as stored (the test's deliveries keep `delivery`'s recipient in it).
    let sent: Notification = serde_json::from_str(&m.payload).unwrap();
    assert_eq!(sent.key, "o-lena");
    assert_eq!(active[1].created_at_ms, T0 + 5);
    assert_eq!(
        delivery_ids(&store.active_peer_messages(&on(&["c"]), 1).await.unwrap()),
        [lena]
    );
    // Acknowledged, it is still edited later; resolved or stopped, never again.
    store.set_peer_shown(lena, "acknowledged").await.unwrap();
    let active = store.active_peer_messages(&on(&["c"]), 0).await.unwrap();
    assert_eq!(delivery_ids(&active), [lena, zoe]);
    assert_eq!(active[0].shown.as_deref(), Some("acknowledged"));
    store.set_peer_shown(lena, "resolved").await.unwrap();
    assert_eq!(
        delivery_ids(&store.active_peer_messages(&on(&["c"]), 0).await.unwrap()),
        [zoe]
    );
    store.set_peer_shown(zoe, "stopped").await.unwrap();
    assert!(store
        .active_peer_messages(&on(&["c"]), 0)
        .await
        .unwrap()
        .is_empty());
    // An incident's messages are listed whatever they show, only those with a peer ref.
    let of_theft = store.peer_messages(theft).await.unwrap();
    assert_eq!(delivery_ids(&of_theft), [lena]);
    assert_eq!(of_theft[0].shown.as_deref(), Some("resolved"));
    assert_eq!(
        delivery_ids(&store.peer_messages(other).await.unwrap()),
        [zoe]
    );
    assert!(store.peer_messages(987_654).await.unwrap().is_empty());
    // Max's message is sent later; a message sent again (replayed) shows what it was sent with.
    let max = ids[1];
    store
        .record_peer_refs(vec![(max, "m-2".into()), (lena, "m-5".into())])
        .await
        .unwrap();
    let active = b
        .open()
        .await
        .active_peer_messages(&on(&["c"]), 0)
        .await
        .unwrap();
    assert_eq!(delivery_ids(&active), [lena, max]);
    assert_eq!(
        (active[0].peer_ref.as_str(), active[0].shown.as_deref()),
        ("m-5", None)
    );
}

async fn at_most_a_hundred_active_messages_unless_asked(b: Backend) {
    let store = b.open().await;
    let keys: Vec<String> = (0..101).map(|i| format!("o-{i}")).collect();
    opens(
        &*store,
        alarm(
            1,
            T0,
            KEY,
            Trigger::Match,
            keys.iter().map(|k| to(k, "lena")).collect(),
        ),
    )
    .await;
    let rows = store
        .list(Filter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .record_peer_refs(rows.iter().map(|r| (r.id, format!("m-{}", r.id))).collect())
        .await
        .unwrap();
    let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    ids.sort();
    let first = store.active_peer_messages(&on(&["c"]), 0).await.unwrap();
    assert_eq!(delivery_ids(&first), ids[..100]);
    assert_eq!(
        store
            .active_peer_messages(&on(&["c"]), 101)
            .await
            .unwrap()
            .len(),
        101
    );
}

/// Channel names, as a follow-up asks for them.
fn on(channels: &[&str]) -> Vec<String> {
    channels.iter().map(|c| c.to_string()).collect()
}

/// A delivery through `channel`.
fn via(channel: &str, key: &str) -> NewDelivery {
    NewDelivery {
        channel: channel.into(),
        ..to(key, "lena")
    }
}

/// One incident with `n` messages of each channel, given in this order, each with a peer ref; their
/// ids, in order.
async fn messages_of(store: &dyn Store, channels: &[(&str, usize)]) -> Vec<i64> {
    let mut deliveries = Vec::new();
    for (ch, n) in channels {
        deliveries.extend((0..*n).map(|i| via(ch, &format!("{ch}-{i}"))));
    }
    let keys: Vec<String> = deliveries.iter().map(|d| d.key.clone()).collect();
    opens(store, alarm(1, T0, KEY, Trigger::Match, deliveries)).await;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let ids = ids_of(store, &keys).await;
    store
        .record_peer_refs(ids.iter().map(|id| (*id, format!("m-{id}"))).collect())
        .await
        .unwrap();
    ids
}

/// Two follow-ups share the table (Telegram's edits, Pushover's receipts): each asks for its own
/// channels, and another channel's older messages, however many, never fill its batch.
async fn each_follow_up_lists_only_its_channels_messages(b: Backend) {
    let store = b.open().await;
    let ids = messages_of(&*store, &[("tg", 10), ("po", 3)]).await;
    let (tg, po) = ids.split_at(10);
    assert_eq!(
        delivery_ids(&store.active_peer_messages(&on(&["po"]), 5).await.unwrap()),
        po
    );
    assert_eq!(
        delivery_ids(&store.active_peer_messages(&on(&["tg"]), 5).await.unwrap()),
        tg[..5]
    );
    let both = store
        .active_peer_messages(&on(&["po", "tg", "other"]), 0)
        .await
        .unwrap();
    assert_eq!(delivery_ids(&both), ids);
    assert!(store.active_peer_messages(&[], 0).await.unwrap().is_empty());
    assert!(store
        .active_peer_messages(&on(&["other"]), 0)
        .await
        .unwrap()
        .is_empty());
    // Another instance asks the same.
    let again = b.open().await;
    let polled = again.active_peer_messages(&on(&["po"]), 2).await.unwrap();
    assert_eq!(delivery_ids(&polled), po[..2]);
    assert_eq!(polled[0].channel, "po");
}

/// Messages of a channel no follow-up looks after (removed, no longer two-way) are made final at
/// once; the others, and those final already, are left as they are.
async fn messages_of_channels_no_follow_up_looks_after_are_stopped(b: Backend) {
    let store = b.open().await;
    let ids = messages_of(&*store, &[("tg", 2), ("gone", 3), ("po", 1)]).await;
    store.set_peer_shown(ids[2], "resolved").await.unwrap();
    store.set_peer_shown(ids[3], "acknowledged").await.unwrap();
    let followed = on(&["po", "tg"]);
    // Made after the sweeper took up its channels: maybe another instance's, on a newer configuration.
    assert_eq!(
        store.stop_peer_messages_except(&followed, 0).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .stop_peer_messages_except(&followed, i64::MAX)
            .await
            .unwrap(),
        2
    );
    let all = on(&["gone", "po", "tg"]);
    let active = store.active_peer_messages(&all, 0).await.unwrap();
    assert_eq!(delivery_ids(&active), [ids[0], ids[1], ids[5]]);
    let incident = active[0].incident_ref;
    let shown: Vec<Option<String>> = store
        .peer_messages(incident)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.shown)
        .collect();
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        shown,
        [None, None, s("resolved"), s("stopped"), s("stopped"), None]
    );
    assert_eq!(
        store
            .stop_peer_messages_except(&followed, i64::MAX)
            .await
            .unwrap(),
        0
    );
    // None followed: every active message is stopped.
    assert_eq!(
        b.open()
            .await
            .stop_peer_messages_except(&[], i64::MAX)
            .await
            .unwrap(),
        3
    );
    assert!(store
        .active_peer_messages(&all, 0)
        .await
        .unwrap()
        .is_empty());
}

async fn an_incidents_latest_event_names_its_device(b: Backend) {
    let store = b.open().await;
    let mut e = alarm(1, T0, KEY, Trigger::Match, vec![to("o-lena", "lena")]);
    e.device_id = 77;
    let id = opens(&*store, e).await;
    let row = store.incident(id).await.unwrap().unwrap();
    assert_eq!(store.event_device(row.event_ref).await.unwrap(), Some(77));
    assert_eq!(
        store.event_device(row.event_ref + 1000).await.unwrap(),
        None
    );
}

async fn bot_offsets_are_kept_as_given_each_bot_its_own(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    assert_eq!(x.bot_offset("alerts").await.unwrap(), 0);
    x.set_bot_offset("alerts", 10).await.unwrap();
    assert_eq!(y.bot_offset("alerts").await.unwrap(), 10);
    // After a week without updates Telegram numbers the next one at random, maybe lower: the
    // offset follows it back (else the same updates would come again and again).
    y.set_bot_offset("alerts", 5).await.unwrap();
    assert_eq!(x.bot_offset("alerts").await.unwrap(), 5);
    y.set_bot_offset("alerts", 11).await.unwrap();
    assert_eq!(x.bot_offset("alerts").await.unwrap(), 11);
    assert_eq!(x.bot_offset("family").await.unwrap(), 0);
    x.set_bot_offset("family", 3).await.unwrap();
    assert_eq!(
        (
            y.bot_offset("family").await.unwrap(),
            y.bot_offset("alerts").await.unwrap()
        ),
        (3, 11)
    );
}

async fn a_lease_has_one_holder_at_a_time(b: Backend) {
    let (x, y) = (b.open().await, b.open().await);
    const POLL: &str = "telegram/alerts";
    const TTL: i64 = 1000;
    assert!(x.try_lease(POLL, "A", TTL, T0).await.unwrap());
    assert!(!y.try_lease(POLL, "B", TTL, T0 + 500).await.unwrap());
    assert!(!y.try_lease(POLL, "B", TTL, T0 + 999).await.unwrap());
    // Held while now < until: at T0 + 1000 it has run out, and B takes it.
    assert!(y.try_lease(POLL, "B", TTL, T0 + 1000).await.unwrap());
    assert!(!x.try_lease(POLL, "A", TTL, T0 + 1001).await.unwrap());
    // B renews it: A is still refused after the first term would have ended.
    assert!(y.try_lease(POLL, "B", TTL, T0 + 1500).await.unwrap());
    assert!(!x.try_lease(POLL, "A", TTL, T0 + 2200).await.unwrap());
    // Another lease is another lease.
    assert!(x
        .try_lease("telegram/family", "A", TTL, T0 + 2200)
        .await
        .unwrap());
    // Only its holder gives a lease up; then another instance takes it at once.
    x.release_lease(POLL, "A").await.unwrap();
    assert!(!x.try_lease(POLL, "A", TTL, T0 + 2300).await.unwrap());
    y.release_lease(POLL, "B").await.unwrap();
    assert!(x.try_lease(POLL, "A", TTL, T0 + 2300).await.unwrap());
    assert!(!y.try_lease(POLL, "B", TTL, T0 + 2400).await.unwrap());
}

async fn instances_racing_for_a_lease_never_both_get_it(b: Backend) {
    let stores = [b.open().await, b.open().await];
    // Rounds in pairs: a lease no one has had, then the same lease after its winner let it run out.
    for round in 0..6i64 {
        let name = format!("poll/{}", round / 2);
        let now = T0 + round * 10_000;
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, start) = (stores[i % 2].clone(), start.clone());
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store
                    .try_lease(&name, &format!("i{i}"), 5_000, now)
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "round {round}: {won} instances got the lease");
    }
}
