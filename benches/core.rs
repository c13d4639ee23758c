//! The pure core under criterion: decoding a webhook body, evaluating 10 / 100 / 1,000 rules, and
//! rendering the notifications of a matching rule. No I/O. Run: `cargo bench --bench core`.

use std::hint::black_box;
use std::path::Path;

#[path = "support/mix.rs"]
mod mix;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trackrelay::event::Envelope;
use trackrelay::plan::{plan, Arrival};
use trackrelay::settings::Config;

use mix::kind;

const PAYLOADS: &[&str] = &[
    "alarm_vibration.json",
    "geofenceExit.json",
    "deviceOverspeed.json",
    "deviceOffline.json",
];

fn payload(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/payloads")
            .join(name),
    )
    .unwrap()
}

fn config(n: usize) -> Config {
    load(&(0..n).map(kind).collect::<Vec<_>>())
}

/// A config with one rule per `match:` block, each sending to a log channel.
fn load(matches: &[String]) -> Config {
    let n = matches.len();
    let mut yaml = String::from("channels: { out: { type: log } }\nrules:\n");
    for (i, m) in matches.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {m}, notify: [{{ channel: out }}] }}\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("trackrelay-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cfg = Config::load_with_env(Some(&path), &|_| None).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    cfg
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for name in PAYLOADS {
        let body = payload(name);
        g.bench_function(*name, |b| {
            b.iter(|| Envelope::from_json(black_box(body.as_bytes())).unwrap())
        });
    }
    g.finish();
}

fn evaluate(c: &mut Criterion) {
    let events: Vec<Envelope> = PAYLOADS
        .iter()
        .map(|p| Envelope::from_json(payload(p).as_bytes()).unwrap())
        .collect();
    let mut g = c.benchmark_group("evaluate");
    for n in [10, 100, 1000] {
        let cfg = config(n);
        // Per event: the four payloads in turn, so the figure is the mean over event kinds.
        g.bench_with_input(BenchmarkId::new("rules", n), &cfg, |b, cfg| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % events.len();
                black_box(cfg.rules.evaluate(&events[i], "traccar").len())
            })
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    // One rule matching each payload: the theft alarm and a geofence rule.
    let cfg = load(&[kind(0), "{ type: [geofenceEnter, geofenceExit] }".into()]);
    let silences = trackrelay::noise::silence::SilenceSet::default();
    let mut g = c.benchmark_group("render");
    for name in ["alarm_vibration.json", "geofenceExit.json"] {
        let raw = payload(name);
        let env = Envelope::from_json(raw.as_bytes()).unwrap();
        let matched = cfg.rules.evaluate(&env, "traccar");
        assert_eq!(matched.len(), 1, "{name} matches one rule");
        let arrival = Arrival {
            source: "traccar".into(),
            ..Default::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    plan(
                        &cfg,
                        &matched,
                        &env,
                        &raw,
                        &arrival,
                        &silences,
                        &Default::default(),
                    )
                    .len(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, evaluate, render);
criterion_main!(benches);
