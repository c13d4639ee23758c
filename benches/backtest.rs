//! A backtest's cost per event (issue 21): 20,000 events of the benchmarks' mix over 30 days and 2,000
//! devices through 10 / 1,000 rules of 100 tenants (device groups), each with a cooldown, on a scratch
//! store, as
//! `trackrelay backtest` runs them (rules, rendering, the store's intake with noise control, the
//! incident timers) but without reading a file: the events are decoded beforehand. Criterion's
//! throughput is events per second. A whole run of a million events is timed from the command line
//! (`examples/backtest_data.rs`, docs/performance.md).

#[path = "support/mix.rs"]
mod mix;

use std::sync::Arc;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use trackrelay::backtest::engine::{Engine, Item};
use trackrelay::event::Envelope;
use trackrelay::plan::Arrival;
use trackrelay::settings::Config;

const EVENTS: u64 = 20_000;

fn config(rules: usize, dir: &std::path::Path) -> Config {
    let path = dir.join(format!("rules-{rules}.yaml"));
    let data = dir.join("data").display().to_string();
    std::fs::write(&path, mix::rules_yaml(rules, &data, true)).unwrap();
    Config::load_with_env(Some(&path), &|_| None).unwrap()
}

fn items() -> Vec<Item> {
    let bodies = mix::bodies();
    (0..EVENTS)
        .map(|n| {
            let raw = mix::event_line(&bodies, n, EVENTS, 2000);
            let env = Envelope::from_json(raw.as_bytes()).unwrap();
            let at = env.own_time().unwrap().timestamp_millis();
            Item {
                raw: raw.into(),
                env: Arc::new(env),
                arrival: Arrival {
                    source: "traccar".into(),
                    received_at_ms: at,
                    ..Default::default()
                },
            }
        })
        .collect()
}

fn backtest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let items = items();
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    for rules in [10, 1000] {
        g.bench_with_input(BenchmarkId::new("rules", rules), &rules, |b, &rules| {
            b.iter(|| {
                rt.block_on(async {
                    let mut e = Engine::new(config(rules, dir.path()), Vec::new(), 0).unwrap();
                    for item in &items {
                        e.feed(item).await.unwrap();
                    }
                    let f = e.finish(i64::MAX / 2).await.unwrap();
                    assert!(f.counts.events == EVENTS);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, backtest);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
