//! Two-way Telegram under measurement (issue 18): what a command costs before it acts. A command
//! naming a device checks every device the relay knows against the rules (is this chat one the rules
//! send the device's alarms to?), so its cost grows with the fleet; a button press costs one token
//! hash and one store lookup (measured by the store suite, not here). Criterion times: parsing a
//! command and a button's callback data, and the routing check of one device and of a 1,000-device
//! fleet on the shipped example configuration. Run: `cargo bench --bench two_way`.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use trackrelay::bot::command;
use trackrelay::channel::telegram::Button;
use trackrelay::event::Device;
use trackrelay::plan::routed_recipients;
use trackrelay::settings::Config;

/// Devices in the fleet case.
const FLEET: i64 = 1_000;

fn example() -> Config {
    let dir = std::env::temp_dir();
    let vars: HashMap<&str, String> = HashMap::from([
        ("TRACKRELAY_WEBHOOK_TOKEN", "s3cret".to_string()),
        ("TRACKRELAY_DATA_DIR", dir.display().to_string()),
        ("TELEGRAM_BOT_TOKEN", "123456:bench".to_string()),
        ("TELEGRAM_CHAT_ID", "4242".to_string()),
        ("SMTP_HOST", "127.0.0.1".to_string()),
        ("OPS_WEBHOOK_URL", "http://127.0.0.1:9/ops".to_string()),
    ]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("trackrelay.example.yaml");
    Config::load_with_env(Some(&path), &|k| vars.get(k).cloned()).expect("the example config")
}

/// Device `i`: every tenth has its own chat in an attribute (as a fleet operator sets one).
fn device(i: i64) -> Device {
    let mut d = Device {
        id: i,
        name: format!("bike-{i}"),
        ..Default::default()
    };
    if i % 10 == 0 {
        d.attributes
            .insert("telegramChatId".into(), serde_json::json!(format!("9{i}")));
    }
    d
}

fn bench(c: &mut Criterion) {
    let cfg = example();
    let channels = vec!["phone".to_string()];
    let token = trackrelay::secret::new_link_token();
    let data = Button::Ack.data(&token);
    c.bench_function("parse a command (/mute NAME 2h)", |b| {
        b.iter(|| command::parse(black_box("/mute Lena's bike 2h"), Some("relay_bot")));
    });
    c.bench_function("parse a button's callback data", |b| {
        b.iter(|| Button::parse(black_box(&data)));
    });
    let one = device(10);
    c.bench_function("route check: one device", |b| {
        b.iter(|| routed_recipients(&cfg, &channels, black_box(&one)).contains("4242"));
    });
    let fleet: Vec<Device> = (1..=FLEET).map(device).collect();
    c.bench_function("route check: 1,000 devices (a /where by name)", |b| {
        b.iter(|| {
            fleet
                .iter()
                .filter(|d| routed_recipients(&cfg, &channels, d).contains("4242"))
                .count()
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
