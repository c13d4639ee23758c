//! Phone push and chat presets under measurement (issue 19): what planning one theft alarm costs per
//! channel kind, from the rule's match to the stored content (render the templates, map the severity,
//! build the service's JSON). Each kind gets the same critical rule with an incident and an
//! acknowledgement link; the plain webhook (the default JSON document) is the baseline the others are
//! read against, as a ratio within one run. No I/O. Run: `cargo bench --bench push`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use trackrelay::event::Envelope;
use trackrelay::plan::{plan, Arrival, IncidentExtras};
use trackrelay::settings::Config;

const KEY: &str = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG";

/// Each kind's channel section, by name.
fn channels() -> Vec<(&'static str, String)> {
    vec![
        (
            "webhook",
            "{ type: webhook, url: \"http://127.0.0.1:9/hook\" }".into(),
        ),
        (
            "telegram",
            "{ type: telegram, bot_token: \"1:x\", chat_id: 42 }".into(),
        ),
        (
            "email",
            "{ type: email, host: 127.0.0.1, from: \"r@example.org\", to: [a@example.org] }".into(),
        ),
        ("ntfy", "{ type: ntfy, topic: bikes }".into()),
        (
            "gotify",
            "{ type: gotify, url: \"http://127.0.0.1:9\", token: AbCdEf }".into(),
        ),
        (
            "pushover",
            format!("{{ type: pushover, token: {KEY}, user: {KEY} }}"),
        ),
        (
            "matrix",
            "{ type: matrix, homeserver: \"http://127.0.0.1:9\", access_token: t, room: \"!r:x\" }"
                .into(),
        ),
        (
            "slack",
            "{ type: webhook, preset: slack, url: \"http://127.0.0.1:9/s\" }".into(),
        ),
        (
            "discord",
            "{ type: webhook, preset: discord, url: \"http://127.0.0.1:9/d\" }".into(),
        ),
        (
            "teams",
            "{ type: webhook, preset: teams, url: \"http://127.0.0.1:9/t\" }".into(),
        ),
    ]
}

/// A config with one channel and the theft rule (critical, with an incident) sending to it.
fn config(dir: &Path, channel: &str) -> Config {
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\npublic_url: https://relay.example.org\nchannels:\n  c: {channel}\n\
         rules:\n  - name: theft\n    severity: critical\n    match: {{ type: alarm }}\n\
         \x20   incident: {{ repeat: 5m }}\n    notify: [{{ channel: c }}]\n",
        dir.display()
    );
    let path = dir.join("bench.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load_with_env(Some(&path), &|_| None).expect("the bench config")
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join("trackrelay-bench-push");
    std::fs::create_dir_all(&dir).unwrap();
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/payloads/alarm_vibration.json"),
    )
    .unwrap();
    let env = Envelope::from_json(raw.as_bytes()).unwrap();
    let silences = trackrelay::noise::silence::SilenceSet::default();
    let arrival = Arrival {
        source: "traccar".into(),
        ..Default::default()
    };
    let mut extras = IncidentExtras::default();
    extras.set_link(
        "theft",
        0,
        format!("https://relay.example.org/ack/{}", "0".repeat(32)),
    );
    let mut g = c.benchmark_group("plan one theft alarm");
    for (kind, section) in channels() {
        let cfg = config(&dir, &section);
        let matched = cfg.rules.evaluate(&env, "traccar");
        assert_eq!(matched.len(), 1);
        let planned = plan(&cfg, &matched, &env, &raw, &arrival, &silences, &extras);
        assert!(!planned.is_empty(), "{kind} plans a delivery");
        g.bench_function(kind, |b| {
            b.iter(|| {
                black_box(plan(&cfg, &matched, &env, &raw, &arrival, &silences, &extras).len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
