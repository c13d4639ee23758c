//! The pure core under criterion: decoding a webhook body, evaluating 10 / 100 / 1,000 rules, and
//! rendering the notifications of a matching rule. No I/O. Run: `cargo bench --bench core`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trackrelay::event::Envelope;
use trackrelay::plan::{plan, Arrival};
use trackrelay::settings::Config;

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

/// `n` rules mixing what real rule files use: type and alarm lists, geofence and device globs,
/// attribute comparisons, regex, negation and expressions, spread over event types, with their
/// operands varying from rule to rule (a thousand copies of one rule would measure a cache); all send
/// to a log channel. The same mix as the server benchmark's (`scripts/bench/run`).
fn kind(i: usize) -> String {
    match i % 8 {
        0 => "{ type: alarm, alarm: [movement, vibration], where: { position.attributes.armed: true } }".into(),
        1 => format!("{{ type: [geofenceEnter, geofenceExit], geofence: 'Zone {i}*', not: {{ where: {{ ignition: true }} }} }}"),
        2 => format!("{{ type: deviceOverspeed, expr: 'speed_kmh > {} || geofence.id == {i}' }}", 20 + i % 40),
        3 => format!("{{ type: [deviceOffline, deviceUnknown], device: ['Fleet {i}*', {}] }}", 100_000_000 + i),
        4 => format!("{{ where: {{ batteryLevel: {{ lt: {} }}, charge: {{ ne: true }} }} }}", 5 + i % 10),
        5 => format!("{{ type: ignitionOn, where: {{ device.uniqueId: {{ regex: '^9{i}' }} }} }}"),
        6 => format!("{{ type: alarm, alarm: sos, device: 'Team {i}*' }}"),
        _ => format!("{{ type: alarm, expr: 'batteryLevel < {} && !ignition' }}", 10 + i % 10),
    }
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
