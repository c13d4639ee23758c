//! The web console's deliveries page under measurement (issue 20): `Store::list` on one SQLite store of
//! 1,000,000 deliveries, a page of 50 rows, with each filter the page offers alone: none, each status,
//! a channel and a rule (the most used and the least used, and a rule with no delivery at all: what
//! a rule added yesterday shows), a device, and a page from the middle of the outbox (`before_id`),
//! also of the dead letters. The goal: each under 50 ms. Before the Criterion measurements, each case
//! is timed once over a few runs and printed, with the console's other reads over the last 24 hours
//! (activity by hour, matches per rule), which read per event and so grow with the period's events.
//!
//! The store (schema and indexes made by `SqliteStore::open`) is filled by plain SQL on its file, in
//! a few large transactions: 500,000 events over 7 days (the default retention), two deliveries each;
//! 95 % delivered, 3 % suppressed, 1 % dead, 1 % pending; 10,000 devices; 5 channels and 20 rules,
//! used unevenly as in life (shares 1/k). About 600 MB in a temporary folder, removed at the end.
//!
//! Run: `cargo bench --bench console` (a quick look: `cargo bench --bench console -- --warm-up-time 1
//! --measurement-time 2`).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use rusqlite::{params, Connection};
use trackrelay::store::sqlite::{SqliteStore, DB_FILE};
use trackrelay::store::{Filter, Status, Store};

/// Deliveries in the store (two per event).
const DELIVERIES: i64 = 1_000_000;
/// Devices the events come from.
const DEVICES: u64 = 10_000;
/// Channels and rules, by name; the k-th is used with a share proportional to 1/k.
const CHANNELS: [&str; 5] = ["telegram", "email", "ntfy", "webhook", "pager"];
const RULES: usize = 20;
/// The period the events span, and their spacing.
const SPAN_MS: i64 = 7 * 24 * 3_600_000;
/// The first event's receive time (unix ms).
const T0: i64 = 1_767_225_600_000;
/// Rows a page shows.
const PAGE: usize = 50;

/// A fixed pseudo-random sequence (SplitMix64): the same store at every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index below `n` with a share proportional to 1/(index + 1).
    fn skewed(&mut self, n: usize) -> usize {
        let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        let mut x = (self.next() % 1_000_000) as f64 / 1_000_000.0 * total;
        for k in 1..=n {
            x -= 1.0 / k as f64;
            if x < 0.0 {
                return k - 1;
            }
        }
        n - 1
    }
}

fn rule(k: usize) -> String {
    format!("rule-{k:02}")
}

/// Fills the store's file: events and deliveries, in transactions of 100,000 deliveries.
fn fill(path: &Path) {
    let mut c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .unwrap();
    let mut mix = Mix(20);
    let events = DELIVERIES / 2;
    let step = SPAN_MS / events;
    let text = "Theft alarm: the bike moved 300 m while parked at the station (47.2649, 11.4136). \
                Acknowledge: https://relay.example/ack/xxxxxxxxxxxxxxxxxxxxxxxx";
    for chunk in 0..(events / 50_000) {
        let tx = c.transaction().unwrap();
        {
            let mut event = tx
                .prepare(
                    "INSERT INTO events (id, source, event_id, device_id, event_type, received_at,
                         payload) VALUES (?1, 'traccar', ?1, ?2, 'alarm', ?3, ?4)",
                )
                .unwrap();
            let mut delivery = tx
                .prepare(
                    "INSERT INTO deliveries (key, event_ref, channel, recipient, rule, event_id,
                         event_type, device_id, status, attempts, created_at, updated_at, next_at,
                         last_error, reason, content)
                     VALUES (?1, ?2, ?3, 'ops', ?4, ?2, 'alarm', ?5, ?6, 1, ?7, ?7, ?7, ?8, ?9, ?10)",
                )
                .unwrap();
            for e in (chunk * 50_000 + 1)..=((chunk + 1) * 50_000) {
                let device = (mix.next() % DEVICES) as i64;
                let at = T0 + e * step;
                let payload =
                    format!(r#"{{"event":{{"id":{e},"deviceId":{device},"type":"alarm"}}}}"#);
                event.execute(params![e, device, at, payload]).unwrap();
                for n in 0..2 {
                    let roll = mix.next() % 100;
                    let (status, error, reason) = match roll {
                        0..95 => ("done", None, None),
                        95..98 => ("suppressed", None, Some("cooldown: sent 2 min ago")),
                        98 => ("dead", Some("HTTP 400: chat not found"), None),
                        _ => ("pending", Some("HTTP 503"), None),
                    };
                    let channel = CHANNELS[mix.skewed(CHANNELS.len())];
                    let key = format!("tr-{e}-{n}");
                    let content = format!(
                        r#"{{"key":"{key}","channel":"{channel}","recipient":"ops","content":{{"kind":"log","text":"{text}"}},"origin":{{}}}}"#
                    );
                    delivery
                        .execute(params![
                            key,
                            e,
                            channel,
                            rule(mix.skewed(RULES)),
                            device,
                            status,
                            at,
                            error,
                            reason,
                            content
                        ])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

/// The cases: a name and its filter (a page of [`PAGE`]).
fn cases(mid: i64) -> Vec<(String, Filter)> {
    let page = |f: Filter| Filter { limit: PAGE, ..f };
    let mut out = vec![("no filter".to_string(), page(Filter::default()))];
    for s in [
        Status::Done,
        Status::Suppressed,
        Status::Dead,
        Status::Pending,
        Status::Inflight,
    ] {
        out.push((
            format!("status={}", s.as_str()),
            page(Filter {
                status: Some(s),
                ..Filter::default()
            }),
        ));
    }
    for ch in [CHANNELS[0], CHANNELS[4]] {
        out.push((
            format!("channel={ch}"),
            page(Filter {
                channel: Some(ch.into()),
                ..Filter::default()
            }),
        ));
    }
    for r in [rule(0), rule(RULES - 1), "rule-new".to_string()] {
        out.push((
            format!("rule={r}"),
            page(Filter {
                rule: Some(r),
                ..Filter::default()
            }),
        ));
    }
    out.push((
        "device=4242".into(),
        page(Filter {
            device_id: Some(4242),
            ..Filter::default()
        }),
    ));
    out.push((
        "deep page".into(),
        page(Filter {
            before_id: Some(mid),
            ..Filter::default()
        }),
    ));
    out.push((
        "deep page, status=dead".into(),
        page(Filter {
            before_id: Some(mid),
            status: Some(Status::Dead),
            ..Filter::default()
        }),
    ));
    out
}

/// The best of `runs` runs of `f`, in ms.
fn best_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn console(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), 16).unwrap());
    let started = Instant::now();
    fill(&dir.path().join(DB_FILE));
    println!(
        "console: {DELIVERIES} deliveries stored in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 16).unwrap());
    let cases = cases(DELIVERIES / 2);
    for (name, f) in &cases {
        let rows = rt.block_on(store.list(f.clone())).unwrap().len();
        let ms = best_ms(5, || rt.block_on(store.list(f.clone())).unwrap());
        println!("console list {name:<26} {rows:>3} rows  {ms:8.2} ms");
    }
    let day = T0 + SPAN_MS - 24 * 3_600_000;
    let ms = best_ms(3, || rt.block_on(store.activity(day, 3_600_000)).unwrap());
    println!("console activity, last 24 h by hour     {ms:8.2} ms");
    let ms = best_ms(3, || rt.block_on(store.rule_counts(day)).unwrap());
    println!("console rule counts, last 24 h          {ms:8.2} ms");

    let mut group = c.benchmark_group("console list at 1M deliveries");
    group.sample_size(20);
    for (name, f) in &cases {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| rt.block_on(store.list(black_box(f.clone()))).unwrap());
        });
    }
    group.finish();
    drop(store);
    // Let the store's writer thread close the file before the folder goes.
    std::thread::sleep(Duration::from_millis(200));
}

criterion_group!(benches, console);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
