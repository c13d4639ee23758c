//! Incidents under measurement (issue 17). Criterion times the pure core (what an event does to an
//! incident, a timer run); with `--bench` the store part runs too and prints its figures: SQLite intake
//! of events that open or join incidents against events without one (events/s, one run, concurrent
//! like real intake so commits are grouped), and the bytes an open incident takes in the database (row,
//! indexes, its acknowledgement token) for 100,000 devices. Run: `cargo bench --bench incidents`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use trackrelay::config_raw::{RawEscalation, RawIncident, RawNotify};
use trackrelay::incident::{on_event, tick, EventFacts, IncidentPolicy, Sighting, Trigger};
use trackrelay::store::sqlite::{SqliteStore, DB_FILE};
use trackrelay::store::{IncidentOffer, NewDelivery, NewEvent, NewToken, Store};

/// Devices (one incident each) for the bytes-per-incident figure.
const DEVICES: i64 = 100_000;
/// Events per intake run.
const EVENTS: i64 = 20_000;
/// Events in flight at once.
const IN_FLIGHT: usize = 256;

fn policy() -> IncidentPolicy {
    let notify = || RawNotify {
        channel: "c".into(),
        to: None,
        subject: None,
        template: None,
        location: None,
    };
    IncidentPolicy::from_raw(&RawIncident {
        repeat: Some(Duration::from_secs(300)),
        max_repeats: Some(12),
        escalate: Some(vec![
            RawEscalation {
                after: Duration::from_secs(600),
                notify: vec![notify()],
            },
            RawEscalation {
                after: Duration::from_secs(1800),
                notify: vec![notify()],
            },
        ]),
        resolve_after: Some(Duration::from_secs(7200)),
        ..Default::default()
    })
    .expect("a valid policy")
}

fn facts(key: &str) -> EventFacts {
    EventFacts {
        trigger: Trigger::Match,
        key: key.into(),
        rule: "theft".into(),
        seen: Some(Sighting {
            lat: 47.26,
            lon: 11.41,
            at_ms: 1_000,
        }),
    }
}

fn core(c: &mut Criterion) {
    let p = policy();
    let mut g = c.benchmark_group("incident");
    let f = facts("theft-42");
    g.bench_function("open", |b| {
        b.iter(|| black_box(on_event(None, &p, &f, 1_000)))
    });
    let open = match on_event(None, &p, &f, 1_000) {
        trackrelay::incident::EventVerdict::Open { state, .. } => state,
        _ => unreachable!(),
    };
    g.bench_function("join", |b| {
        b.iter(|| black_box(on_event(Some(&open), &p, &f, 60_000)))
    });
    g.bench_function("tick", |b| {
        b.iter(|| black_box(tick(&open, &p, 11 * 60_000)))
    });
    g.finish();
}

criterion_group!(benches, core);

/// One event of device `device`, with one delivery, offering an incident of key `key` if given.
fn event(id: i64, device: i64, key: Option<String>) -> NewEvent {
    let d = NewDelivery {
        key: format!("k{id}"),
        channel: "c".into(),
        recipient: "r".into(),
        rule: "theft".into(),
        order_key: None,
        dead: None,
        content: r#"{"kind":"log","text":"theft alarm"}"#.into(),
        gates: Default::default(),
        incident_ref: None,
    };
    let incidents = key
        .map(|k| {
            vec![IncidentOffer {
                facts: facts(&k),
                policy: policy(),
                policies: Default::default(),
                deliveries: vec![0],
                muted: false,
                tokens: vec![NewToken {
                    hash: trackrelay::secret::link_token_hash(&format!("t{id}")),
                    label: "phone".into(),
                    chat: None,
                }],
            }]
        })
        .unwrap_or_default();
    NewEvent {
        source: "bench".into(),
        event_id: id,
        device_id: device,
        event_type: "alarm".into(),
        received_at_ms: trackrelay::clock::now_ms(),
        judged_at_ms: trackrelay::clock::now_ms(),
        txn: None,
        payload: r#"{"event":{"id":1,"type":"alarm"}}"#.into(),
        deliveries: vec![d],
        claim_until: None,
        debounce: None,
        position_missing: false,
        incidents,
    }
}

/// Accepts `n` events made by `make`, `IN_FLIGHT` at a time; events/s.
async fn intake(store: &Arc<dyn Store>, n: i64, make: impl Fn(i64) -> NewEvent) -> f64 {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (store, e) = (store.clone(), make(i));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            loop {
                match store.accept(e.clone()).await {
                    Err(trackrelay::store::StoreError::Busy) => tokio::task::yield_now().await,
                    r => break r.unwrap(),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The database's size once its write-ahead log is folded in.
fn db_bytes(dir: &Path) -> u64 {
    let c = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    std::fs::metadata(dir.join(DB_FILE)).unwrap().len()
}

fn open(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir, 8192).unwrap())
}

async fn store_figures() {
    // Intake: without an incident, each event opening one (a device each), each joining one.
    let mut rates = Vec::new();
    for kind in ["none", "open", "join"] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let rate = intake(&store, EVENTS, |i| {
            let key = match kind {
                "none" => None,
                "open" => Some(format!("theft-{i}")),
                _ => Some("theft-1".to_string()),
            };
            event(i, i, key)
        })
        .await;
        rates.push(rate);
    }
    println!(
        "incidents intake: events/s none {:.0}, opening {:.0} ({:.2}x), joining {:.0} ({:.2}x)",
        rates[0],
        rates[1],
        rates[1] / rates[0],
        rates[2],
        rates[2] / rates[0]
    );
    // Bytes: the same events with and without an open incident per device.
    let mut sizes = Vec::new();
    for with in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        intake(&store, DEVICES, |i| {
            event(i, i, with.then(|| format!("theft-{i}")))
        })
        .await;
        drop(store);
        tokio::time::sleep(Duration::from_millis(200)).await;
        sizes.push(db_bytes(dir.path()));
    }
    println!(
        "incidents store: {} open incidents take {} bytes, {:.0} bytes each (row, indexes, token)",
        DEVICES,
        sizes[1] - sizes[0],
        (sizes[1] - sizes[0]) as f64 / DEVICES as f64
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store_figures());
    }
}
