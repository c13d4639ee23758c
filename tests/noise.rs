//! Noise control through the real pipeline and a real SQLite file, on an injected clock: every event is
//! ingested with the arrival time the test chooses, and the outcome is read back from the store (what
//! is due when, what is suppressed and why). Nothing here waits on the wall clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use trackrelay::event::Envelope;
use trackrelay::noise::silence::{Matchers, NewSilence};
use trackrelay::pipeline::Pipeline;
use trackrelay::plan::Arrival;
use trackrelay::runtime::{Runtime, Shared};
use trackrelay::silence_cache::SilenceCache;
use trackrelay::store::sqlite::SqliteStore;
use trackrelay::store::{Accepted, DeliveryRow, Filter, Status, Store};

const S: i64 = 1000;
const M: i64 = 60 * S;
/// 2026-01-14T12:00:00Z, a Wednesday.
const T0: i64 = 1_768_392_000_000;

/// A pipeline on a SQLite file in a temporary folder, with the config `yaml` (a `log` channel `out`,
/// rate-limited `chat` and `folded`, and a Telegram channel `pinned` sending map pins under a rate
/// limit that folds into digests are always there).
struct Bench {
    dir: tempfile::TempDir,
    pipeline: Pipeline,
    store: Arc<SqliteStore>,
    next_id: i64,
    _fast: tokio::sync::mpsc::Receiver<trackrelay::store::Claimed>,
}

fn config_yaml(dir: &std::path::Path, rules: &str) -> String {
    format!(
        "storage: {{ data_dir: \"{}\" }}\ntimezone: Europe/Vienna\n\
         channels:\n  out: {{ type: log }}\n  \
         chat: {{ type: log, rate_limit: {{ max: 3, per: 1h }} }}\n  \
         folded: {{ type: log, rate_limit: {{ max: 2, per: 10m, over: digest }} }}\n  \
         pinned: {{ type: telegram, bot_token: \"123:abc\", chat_id: \"42\", location: true, \
                    rate_limit: {{ max: 1, per: 1h, over: digest }} }}\n\
         rules:\n{rules}",
        dir.display()
    )
}

impl Bench {
    fn new(rules: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        Bench::in_dir(dir, rules)
    }

    fn in_dir(dir: tempfile::TempDir, rules: &str) -> Bench {
        let config = common::config_in(dir.path(), &config_yaml(dir.path(), rules));
        let store = Arc::new(SqliteStore::open(&config.storage.data_dir, 65536).unwrap());
        // The fast lane is kept full, so every delivery stays in the outbox for the test to read.
        let (fast, rx) = tokio::sync::mpsc::channel(1);
        fast.try_send(trackrelay::store::Claimed {
            id: 0,
            content: String::new(),
            attempts: 0,
            created_at_ms: 0,
            claim: 0,
        })
        .unwrap();
        let pipeline = Pipeline {
            incidents_wake: Default::default(),
            whereabouts: Default::default(),
            shared: Arc::new(Shared::new(Runtime {
                config,
                channels: Default::default(),
            })),
            store: store.clone(),
            wake: Default::default(),
            fast,
            metrics: Default::default(),
            silences: Arc::new(SilenceCache::default()),
            directories: Default::default(),
        };
        Bench {
            dir,
            pipeline,
            store,
            next_id: 1,
            _fast: rx,
        }
    }

    /// Closes the store and opens it again, as a restarted relay does.
    fn restart(self, rules: &str) -> Bench {
        let Bench { dir, next_id, .. } = self;
        let mut b = Bench::in_dir(dir, rules);
        b.next_id = next_id;
        b
    }

    /// An event body: `kind` with `attrs` for `device` (id and name `bike-<id>`, group 3).
    fn event(&mut self, kind: &str, device: i64, attrs: Value, geofence: i64) -> String {
        let id = self.next_id;
        self.next_id += 1;
        json!({
            "event": { "id": id, "type": kind, "deviceId": device, "geofenceId": geofence,
                       "eventTime": "2026-01-14T12:00:00.000+00:00", "attributes": attrs },
            "device": { "id": device, "name": format!("bike-{device}"), "uniqueId": format!("u{device}"),
                        "status": "online", "groupId": 3, "attributes": {} },
            "position": { "id": id, "deviceId": device, "latitude": 48.2, "longitude": 16.37,
                          "attributes": { "armed": true, "ignition": false } }
        })
        .to_string()
    }

    /// Ingests an event that arrives at `at`, as it happens (its `eventTime` is `at`).
    async fn ingest_at(&self, body: &str, at: i64) -> Accepted {
        self.ingest_late(body, at, at).await
    }

    /// Ingests an event that happened at `happened` (its `eventTime`) and arrives at `at`: a backfill
    /// after a reconnect, or a sender's retry, when `happened` is well before `at`.
    async fn ingest_late(&self, body: &str, happened: i64, at: i64) -> Accepted {
        let mut v: Value = serde_json::from_str(body).unwrap();
        v["event"]["eventTime"] = json!(trackrelay::clock::rfc3339(happened));
        let body = v.to_string();
        let env = Envelope::from_json(body.as_bytes()).unwrap();
        self.pipeline
            .ingest(
                &body,
                &env,
                Arrival {
                    source: "traccar".into(),
                    received_at_ms: at,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    async fn alarm(&mut self, device: i64, alarm: &str, at: i64) -> Accepted {
        let body = self.event("alarm", device, json!({ "alarm": alarm }), 0);
        self.ingest_at(&body, at).await
    }

    async fn rows(&self) -> Vec<DeliveryRow> {
        let mut rows = self
            .store
            .list(Filter {
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap();
        rows.reverse();
        rows
    }

    async fn with_status(&self, status: Status) -> Vec<DeliveryRow> {
        self.rows()
            .await
            .into_iter()
            .filter(|r| r.status == status)
            .collect()
    }
}

fn ms(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .unwrap()
        .timestamp_millis()
}

const THEFT: &str = "  - name: theft\n    match: { type: alarm, alarm: vibration, where: { position.attributes.armed: true } }\n    \
     cooldown: { for: 10m, summary: true }\n    dedup: 30s\n    notify: [{ channel: out }]\n";

#[tokio::test]
async fn ten_thousand_vibration_alarms_from_a_hundred_devices() {
    // Every device vibrates every 30 s for 50 minutes: 100 alarms each, 10,000 in all. With a 10-minute
    // cooldown per device, each device may notify at 0, 10, 20, 30 and 40 minutes: 500 notifications,
    // 9,500 suppressed, none lost, and each later notification tells how many were held back.
    let mut b = Bench::new(THEFT);
    for step in 0..100 {
        let at = T0 + step * 30 * S;
        let bodies: Vec<String> = (1..=100)
            .map(|d| b.event("alarm", d, json!({"alarm": "vibration"}), 0))
            .collect();
        let accepted =
            futures_util::future::join_all(bodies.iter().map(|body| b.ingest_at(body, at))).await;
        assert!(accepted.iter().all(|a| matches!(a, Accepted::New { .. })));
    }
    let rows = b.rows().await;
    assert_eq!(rows.len(), 10_000, "every event is recorded");
    let sent: Vec<&DeliveryRow> = rows
        .iter()
        .filter(|r| r.status == Status::Pending)
        .collect();
    let suppressed = rows
        .iter()
        .filter(|r| r.status == Status::Suppressed)
        .count();
    assert_eq!((sent.len(), suppressed), (500, 9_500));
    for d in 1..=100 {
        let times: Vec<String> = sent
            .iter()
            .filter(|r| r.device_id == d)
            .map(|r| r.created_at.clone())
            .collect();
        assert_eq!(
            times,
            ["12:00:00", "12:10:00", "12:20:00", "12:30:00", "12:40:00"]
                .map(|t| format!("2026-01-14T{t}.000Z")),
            "device {d}"
        );
    }
    assert!(rows
        .iter()
        .filter(|r| r.status == Status::Suppressed)
        .all(|r| r
            .reason
            .as_deref()
            .unwrap()
            .starts_with("cooldown: `theft/")));
    // 19 suppressed between two notifications, told in the next one.
    let noted = b
        .store
        .claim(T0 + 60 * M, 1000, Duration::from_secs(60))
        .await
        .unwrap();
    let with_note = noted
        .iter()
        .filter(|c| c.content.contains("(19 more suppressed since"))
        .count();
    assert_eq!(with_note, 400);
}

#[tokio::test]
async fn duplicates_with_other_event_ids_notify_once() {
    let mut b = Bench::new(
        "  - { name: sos, match: { type: alarm, alarm: sos }, dedup: 30s, notify: [{ channel: out }] }\n",
    );
    // Traccar sends the same SOS three times with fresh ids; another device and another alarm pass.
    b.alarm(7, "sos", T0).await;
    b.alarm(7, "sos", T0 + 2 * S).await;
    b.alarm(8, "sos", T0 + 3 * S).await;
    b.alarm(7, "sos", T0 + 29 * S).await;
    b.alarm(7, "sos", T0 + 30 * S).await;
    let rows = b.rows().await;
    let st: Vec<(i64, Status)> = rows.iter().map(|r| (r.device_id, r.status)).collect();
    use Status::*;
    assert_eq!(
        st,
        [
            (7, Pending),
            (7, Suppressed),
            (8, Pending),
            (7, Suppressed),
            (7, Pending)
        ]
    );
    assert!(rows[1].reason.as_deref().unwrap().contains("duplicate"));
}

#[tokio::test]
async fn a_cooldown_survives_a_restart() {
    let mut b = Bench::new(THEFT);
    b.alarm(1, "vibration", T0).await;
    b.alarm(1, "vibration", T0 + M).await;
    let b = b.restart(THEFT);
    let mut b = b;
    // Five minutes in, after the restart: still quiet.
    b.alarm(1, "vibration", T0 + 5 * M).await;
    assert_eq!(b.with_status(Status::Suppressed).await.len(), 2);
    // Ten minutes in: notified, with the two held back counted across the restart.
    b.alarm(1, "vibration", T0 + 10 * M).await;
    let pending = b.with_status(Status::Pending).await;
    assert_eq!(pending.len(), 2);
    let claimed = b
        .store
        .claim(T0 + 10 * M, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(claimed.iter().any(|c| c
        .content
        .contains("(2 more suppressed since 2026-01-14T12:01:00.000Z)")));
}

#[tokio::test]
async fn cooldown_key_template_groups_what_the_rule_says() {
    // Keyed by alarm across all devices: the second device's vibration is within the cooldown.
    let mut b = Bench::new(
        "  - name: any-vibration\n    match: { type: alarm }\n    cooldown: { for: 5m, key: \"{{ event.attributes.alarm }}\" }\n    notify: [{ channel: out }]\n",
    );
    b.alarm(1, "vibration", T0).await;
    b.alarm(2, "vibration", T0 + S).await;
    b.alarm(2, "sos", T0 + 2 * S).await;
    let st: Vec<Status> = b.rows().await.iter().map(|r| r.status).collect();
    assert_eq!(st, [Status::Pending, Status::Suppressed, Status::Pending]);
}

const GEOFENCE: &str = "  - name: left-zone\n    match: { type: [geofenceExit, geofenceEnter] }\n    debounce: 2m\n    notify: [{ channel: out }]\n";

#[tokio::test]
async fn geofence_jitter_is_silent_and_real_exits_are_late_but_sent() {
    let mut b = Bench::new(GEOFENCE);
    let exit = b.event("geofenceExit", 5, json!({}), 9);
    let enter = b.event("geofenceEnter", 5, json!({}), 9);
    b.ingest_at(&exit, T0).await;
    b.ingest_at(&enter, T0 + 40 * S).await;
    // Both suppressed: the held exit was cancelled by the return.
    let rows = b.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::Suppressed; 2]
    );
    assert!(
        rows[0].reason.as_deref().unwrap().contains("jitter"),
        "{:?}",
        rows[0].reason
    );
    // Nothing is due, now or later.
    assert!(b
        .store
        .claim(T0 + 60 * M, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());

    // Another geofence of the same device is separate; a real exit is held for the window, then due.
    let exit = b.event("geofenceExit", 5, json!({}), 10);
    b.ingest_at(&exit, T0 + 10 * M).await;
    let held = b.with_status(Status::Pending).await;
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].next_attempt_at.as_deref(),
        Some("2026-01-14T12:12:00.000Z")
    );
    assert!(b
        .store
        .claim(T0 + 11 * M, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        b.store
            .claim(T0 + 12 * M, 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_return_cancels_a_held_exit_even_when_no_rule_matches_it() {
    // Only exits are notified; the enter that follows within the window still cancels the exit.
    let mut b = Bench::new(
        "  - { name: left-home, match: { type: geofenceExit }, debounce: 2m, notify: [{ channel: out }] }\n",
    );
    let exit = b.event("geofenceExit", 5, json!({}), 9);
    let enter = b.event("geofenceEnter", 5, json!({}), 9);
    b.ingest_at(&exit, T0).await;
    b.ingest_at(&enter, T0 + 30 * S).await;
    let rows = b.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Suppressed);
    assert!(rows[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("geofenceExit then geofenceEnter"));
}

#[tokio::test]
async fn digests_collect_a_group_and_keep_their_interval() {
    let mut b = Bench::new(
        "  - name: offline\n    match: { type: deviceOffline }\n    \
         group: { wait: 30s, interval: 5m, title: \"{{ count }} devices offline\" }\n    notify: [{ channel: out }]\n",
    );
    // 14 devices drop off within 20 s: one digest due at +30 s.
    for d in 1..=14 {
        let body = b.event("deviceOffline", d, json!({}), 0);
        b.ingest_at(&body, T0 + d * S).await;
    }
    let grouped = b.with_status(Status::Grouped).await;
    let digests = b.with_status(Status::Pending).await;
    assert_eq!((grouped.len(), digests.len()), (14, 1));
    assert_eq!(
        digests[0].next_attempt_at.as_deref(),
        Some("2026-01-14T12:00:31.000Z")
    );
    assert!(b
        .store
        .claim(T0 + 30 * S, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
    let claimed = b
        .store
        .claim(T0 + 31 * S, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let items = b.store.digest_items(claimed[0].id).await.unwrap();
    assert_eq!(items.len(), 14);
    assert!(items[13].contains("bike-14"));
    // A 15th device after the digest went: a new digest, five minutes after the first.
    let body = b.event("deviceOffline", 15, json!({}), 0);
    b.ingest_at(&body, T0 + M).await;
    let next: Vec<DeliveryRow> = b.with_status(Status::Pending).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].next_attempt_at.as_deref(),
        Some("2026-01-14T12:05:31.000Z")
    );
    assert_eq!(b.store.digest_items(next[0].id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn quiet_hours_defer_across_the_spring_forward_night() {
    let mut b = Bench::new(
        "  - name: battery\n    match: { type: alarm, alarm: lowBattery }\n    \
         schedule: { timezone: Europe/Vienna, quiet: \"22:00-07:00\", when_muted: defer }\n    notify: [{ channel: out }]\n",
    );
    // Saturday 23:00 CET, the night Vienna moves to CEST: due Sunday 07:00 CEST = 05:00 UTC.
    b.alarm(1, "lowBattery", ms("2026-03-28T22:00:00Z")).await;
    // Saturday 10:00: sent at once.
    b.alarm(1, "lowBattery", ms("2026-03-28T09:00:00Z")).await;
    let rows = b.rows().await;
    assert_eq!(
        rows[0].next_attempt_at.as_deref(),
        Some("2026-03-29T05:00:00.000Z")
    );
    assert!(rows[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("quiet hours `22:00-07:00`"));
    assert_eq!(
        rows[1].next_attempt_at.as_deref(),
        Some("2026-03-28T09:00:00.000Z")
    );
    // And in autumn the night is an hour longer: 07:00 CET = 06:00 UTC.
    b.alarm(1, "lowBattery", ms("2026-10-24T21:00:00Z")).await;
    let rows = b.rows().await;
    assert_eq!(
        rows[2].next_attempt_at.as_deref(),
        Some("2026-10-25T06:00:00.000Z")
    );
}

#[tokio::test]
async fn active_hours_drop_outside_and_record_why() {
    let mut b = Bench::new(
        "  - name: night-theft\n    match: { type: alarm }\n    \
         schedule: { timezone: Europe/Vienna, active: \"22:00-06:00\" }\n    notify: [{ channel: out }]\n",
    );
    b.alarm(1, "vibration", ms("2026-01-14T12:00:00Z")).await; // 13:00 local
    b.alarm(1, "vibration", ms("2026-01-14T22:30:00Z")).await; // 23:30 local
    let rows = b.rows().await;
    assert_eq!(rows[0].status, Status::Suppressed);
    assert!(rows[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("outside the active hours `22:00-06:00` (Europe/Vienna)"));
    assert_eq!(rows[1].status, Status::Pending);
}

#[tokio::test]
async fn rate_limit_per_recipient_waits_and_can_fold() {
    let mut b = Bench::new(
        "  - { name: all, match: { type: alarm }, notify: [{ channel: chat }, { channel: folded }] }\n",
    );
    for i in 0..5 {
        b.alarm(1, "vibration", T0 + i * S).await;
    }
    let rows = b.rows().await;
    let chat: Vec<Option<String>> = rows
        .iter()
        .filter(|r| r.channel == "chat")
        .map(|r| r.next_attempt_at.clone())
        .collect();
    // Three within the hour, the next two an hour after the first ones: waiting, not dropped.
    assert_eq!(
        chat,
        ["12:00:00", "12:00:01", "12:00:02", "13:00:00", "13:00:01"]
            .map(|t| Some(format!("2026-01-14T{t}.000Z")))
    );
    // The folding channel sends two, then one digest of the other three at the next free slot.
    let folded: Vec<&DeliveryRow> = rows.iter().filter(|r| r.channel == "folded").collect();
    let st: Vec<Status> = folded.iter().map(|r| r.status).collect();
    use Status::*;
    // (The digest is a delivery of its own, written just before its first item.)
    assert_eq!(st, [Pending, Pending, Pending, Grouped, Grouped, Grouped]);
    assert_eq!(
        folded[2].next_attempt_at.as_deref(),
        Some("2026-01-14T12:10:00.000Z")
    );
    assert_eq!(b.store.digest_items(folded[2].id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn silences_mute_until_their_end_and_are_recorded() {
    let mut b = Bench::new(THEFT);
    let now = trackrelay::clock::now_ms();
    let s = b
        .store
        .add_silence(
            NewSilence {
                matchers: Matchers {
                    device: Some("bike-4*".into()),
                    rule: Some("theft".into()),
                    ..Default::default()
                },
                starts_at_ms: now,
                ends_at_ms: now + 60 * M,
                author: "lena".into(),
                comment: "bike in the workshop".into(),
            },
            now,
        )
        .await
        .unwrap();
    b.pipeline.silences.refresh(b.store.as_ref()).await.unwrap();
    b.alarm(42, "vibration", now + S).await; // silenced
    b.alarm(7, "vibration", now + S).await; // another device
    b.alarm(42, "vibration", now + 61 * M).await; // after the end
    let rows = b.rows().await;
    assert_eq!(
        rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::Suppressed, Status::Pending, Status::Pending]
    );
    let why = rows[0].reason.as_deref().unwrap();
    assert!(
        why.contains(&format!("silence #{}", s.id))
            && why.contains("lena")
            && why.contains("workshop"),
        "{why}"
    );
    // Expired early: it stops applying at once.
    let s2 = b
        .store
        .add_silence(
            NewSilence {
                matchers: Matchers {
                    channel: Some("out".into()),
                    ..Default::default()
                },
                starts_at_ms: now,
                ends_at_ms: now + 600 * M,
                author: "ops".into(),
                comment: String::new(),
            },
            now,
        )
        .await
        .unwrap();
    b.pipeline.silences.refresh(b.store.as_ref()).await.unwrap();
    b.alarm(8, "vibration", now + 62 * M).await;
    b.store.expire_silence(s2.id, now + 63 * M).await.unwrap();
    b.pipeline.silences.refresh(b.store.as_ref()).await.unwrap();
    b.alarm(9, "vibration", now + 64 * M).await;
    let st: Vec<Status> = b.rows().await.iter().skip(3).map(|r| r.status).collect();
    assert_eq!(st, [Status::Suppressed, Status::Pending]);
    assert!(b.store.expire_silence(999, now).await.is_err());
}

#[tokio::test]
async fn everything_on_one_rule() {
    // One rule with dedup, cooldown with summary, quiet hours (deferred), on a rate-limited channel.
    let rules = "  - name: combo\n    match: { type: alarm }\n    dedup: 30s\n    \
                 cooldown: { for: 10m, summary: true }\n    \
                 schedule: { timezone: Europe/Vienna, quiet: \"mon-fri 12:30-13:30\", when_muted: defer }\n    \
                 notify: [{ channel: chat }]\n";
    let mut b = Bench::new(rules);
    let at = |m: i64| ms("2026-01-14T11:00:00Z") + m * M; // 12:00 Vienna, Wednesday
    b.alarm(1, "sos", at(0)).await; // sent
    b.alarm(1, "sos", at(0) + 10 * S).await; // duplicate
    b.alarm(1, "sos", at(5)).await; // cooldown
    b.alarm(1, "sos", at(10)).await; // sent, "1 more"
    b.alarm(1, "sos", at(40)).await; // 12:40: quiet hours -> deferred to 13:30
    b.alarm(2, "sos", at(41)).await; // other device, deferred too
    b.alarm(3, "sos", at(42)).await; // deferred too: the third send in the hour from 12:30
    b.alarm(4, "sos", at(43)).await; // a fourth in that hour: the chat's limit of 3 pushes it
    let rows = b.rows().await;
    let got: Vec<(Status, Option<String>)> = rows
        .iter()
        .map(|r| (r.status, r.next_attempt_at.clone()))
        .collect();
    let p = |t: &str| (Status::Pending, Some(format!("2026-01-14T{t}.000Z")));
    assert_eq!(
        got,
        [
            p("11:00:00"),
            (Status::Suppressed, None),
            (Status::Suppressed, None),
            p("11:10:00"),
            p("12:30:00"),
            p("12:30:00"),
            p("12:30:00"),
            p("13:30:00"),
        ]
    );
    assert!(rows[1].reason.as_deref().unwrap().contains("duplicate"));
    assert!(rows[2].reason.as_deref().unwrap().contains("cooldown"));
    assert!(rows[4].reason.as_deref().unwrap().contains("quiet hours"));
    assert!(rows[7].reason.as_deref().unwrap().contains("rate limit"));
}

#[tokio::test]
async fn bad_noise_settings_are_rejected_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(
        dir.path(),
        "  - name: a\n    match: { type: alarm }\n    schedule: { quiet: \"22:00\", when_muted: later }\n    notify: [{ channel: out }]\n",
    );
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let err =
        trackrelay::settings::Config::load_with_env(Some(&dir.path().join("c.yaml")), &|_| None)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("c.yaml:9: rule 'a': schedule: quiet: `22:00`"),
        "{err}"
    );
    assert!(err.contains("when_muted: `later`"), "{err}");
}

fn statuses(rows: &[DeliveryRow]) -> Vec<Status> {
    rows.iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn over_the_rate_limit_map_pins_are_left_out_of_digests() {
    // Telegram with `location: true` and `over: digest`: a digest lists text, and a digest of pins
    // would be built as a log line, which the Telegram channel refuses for good.
    let mut b =
        Bench::new("  - { name: all, match: { type: alarm }, notify: [{ channel: pinned }] }\n");
    for i in 0..3 {
        b.alarm(1, "vibration", T0 + i * S).await;
    }
    let rows = b.rows().await;
    use Status::*;
    // The first message takes the hour's slot; the other two wait in one digest (written just before
    // its first item). Every pin is over the limit and recorded as suppressed, none in a digest.
    assert_eq!(
        statuses(&rows),
        [Pending, Suppressed, Pending, Grouped, Suppressed, Grouped, Suppressed]
    );
    for pin in [&rows[1], &rows[4], &rows[6]] {
        assert_eq!(
            pin.reason.as_deref(),
            Some("over the rate limit (1 per 1h): map pins are left out of digests")
        );
    }
    let items = b.store.digest_items(rows[2].id).await.unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|i| i.contains("telegram_text")),
        "{items:?}"
    );
}

#[tokio::test]
async fn a_backfill_is_debounced_on_the_events_own_times() {
    // A reconnect fetches what the socket missed: an exit and, an hour later, the return. Both arrive
    // within milliseconds, two hours late; they are an hour apart, no jitter, and both are notified.
    let mut b = Bench::new(GEOFENCE);
    let at = T0 + 120 * M;
    let exit = b.event("geofenceExit", 5, json!({}), 9);
    let enter = b.event("geofenceEnter", 5, json!({}), 9);
    b.ingest_late(&exit, T0, at).await;
    b.ingest_late(&enter, T0 + 60 * M, at + 5).await;
    let rows = b.rows().await;
    assert_eq!(statuses(&rows), [Status::Pending; 2], "{rows:?}");
    // Still held for the debounce after they arrived: a return later in the same backfill can cancel.
    let due: Vec<Option<&str>> = rows.iter().map(|r| r.next_attempt_at.as_deref()).collect();
    assert_eq!(
        due,
        [
            Some("2026-01-14T14:02:00.000Z"),
            Some("2026-01-14T14:02:00.005Z")
        ]
    );

    // Real jitter inside a backfill (another geofence: out and back within 40 s) is still silent.
    let exit = b.event("geofenceExit", 5, json!({}), 10);
    let enter = b.event("geofenceEnter", 5, json!({}), 10);
    b.ingest_late(&exit, T0 + 30 * M, at + 10).await;
    b.ingest_late(&enter, T0 + 30 * M + 40 * S, at + 15).await;
    let rows = b.rows().await;
    assert_eq!(
        statuses(&rows[2..]),
        [Status::Suppressed; 2],
        "{:?}",
        &rows[2..]
    );
}

#[tokio::test]
async fn a_late_event_is_judged_by_the_quiet_hours_of_its_own_time() {
    let mut b = Bench::new(
        "  - name: battery\n    match: { type: alarm, alarm: lowBattery }\n    \
         schedule: { timezone: Europe/Vienna, quiet: \"22:00-07:00\" }\n    notify: [{ channel: out }]\n",
    );
    // Happened at 23:30 in Vienna, in the quiet hours; replayed at 09:00 the next morning: dropped.
    let night = b.event("alarm", 1, json!({ "alarm": "lowBattery" }), 0);
    b.ingest_late(
        &night,
        ms("2026-01-14T22:30:00Z"),
        ms("2026-01-15T08:00:00Z"),
    )
    .await;
    // Happened at 13:00; a sender's retry brings it at 23:00, in the quiet hours: sent.
    let noon = b.event("alarm", 1, json!({ "alarm": "lowBattery" }), 0);
    b.ingest_late(
        &noon,
        ms("2026-01-15T12:00:00Z"),
        ms("2026-01-15T22:00:00Z"),
    )
    .await;
    let rows = b.rows().await;
    assert_eq!(statuses(&rows), [Status::Suppressed, Status::Pending]);
    assert!(rows[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("quiet hours `22:00-07:00`"));
    assert_eq!(
        rows[1].next_attempt_at.as_deref(),
        Some("2026-01-15T22:00:00.000Z"),
        "sent when it arrives"
    );
}

#[tokio::test]
async fn a_late_event_does_not_set_live_noise_state_back() {
    // A live exit is held. A backfilled enter from an hour before arrives: no jitter with it, so sent,
    // and it must not replace the held exit, or the live return that follows would not cancel it.
    let mut b = Bench::new(GEOFENCE);
    let exit = b.event("geofenceExit", 5, json!({}), 9);
    let old_enter = b.event("geofenceEnter", 5, json!({}), 9);
    let enter = b.event("geofenceEnter", 5, json!({}), 9);
    b.ingest_at(&exit, T0).await;
    b.ingest_late(&old_enter, T0 - 60 * M, T0 + S).await;
    b.ingest_at(&enter, T0 + 30 * S).await;
    let rows = b.rows().await;
    use Status::*;
    assert_eq!(
        statuses(&rows),
        [Suppressed, Pending, Suppressed],
        "{rows:?}"
    );
    assert!(rows[0].reason.as_deref().unwrap().contains("jitter"));

    // Same for a cooldown: the live notification's period holds after an old alarm was notified.
    let mut b = Bench::new(THEFT);
    b.alarm(1, "vibration", T0).await;
    let old = b.event("alarm", 1, json!({ "alarm": "vibration" }), 0);
    b.ingest_late(&old, T0 - 60 * M, T0 + S).await;
    b.alarm(1, "vibration", T0 + 2 * M).await;
    b.alarm(1, "vibration", T0 + 10 * M).await;
    let rows = b.rows().await;
    assert_eq!(
        statuses(&rows),
        [Pending, Pending, Suppressed, Pending],
        "{rows:?}"
    );
    // An old alarm within the period before the live notification counts as held back, too.
    let close = b.event("alarm", 1, json!({ "alarm": "vibration" }), 0);
    b.ingest_late(&close, T0 + 5 * M, T0 + 11 * M).await;
    assert_eq!(b.rows().await[4].status, Suppressed);
}
