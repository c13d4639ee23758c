//! Writes a history and a rule set for timing `trackrelay backtest` at scale: `N` events (default
//! 1,000,000) as JSON lines, the example payloads' event types spread over `--devices` devices and 30
//! days, and a configuration of `--rules` rules (default 1,000) in the mix of the core benchmark, each
//! with a 10-minute cooldown per device (noise control, so most matches consult stored state), sending
//! to a log channel.
//!
//! ```text
//! cargo run --release --example backtest_data -- --dir /tmp/bt
//! time target/release/trackrelay backtest /tmp/bt/rules.yaml --events /tmp/bt/events.jsonl > /dev/null
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Where to write `events.jsonl` and `rules.yaml`.
    #[arg(long)]
    dir: PathBuf,
    /// Events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rules.
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Devices.
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
}

const PAYLOADS: &[&str] = &[
    "alarm_sos.json",
    "alarm_vibration.json",
    "deviceMoving.json",
    "deviceOffline.json",
    "deviceOnline.json",
    "deviceOverspeed.json",
    "geofenceEnter.json",
    "geofenceExit.json",
    "ignitionOn.json",
];

/// The core benchmark's mix of rules (`benches/core.rs`), spread over event types.
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

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir)?;
    let mut yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ out: {{ type: log }} }}\nrules:\n",
        a.dir.join("data").display()
    );
    for i in 0..a.rules {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {}, cooldown: 10m, notify: [{{ channel: out }}] }}\n",
            kind(i)
        ));
    }
    std::fs::write(a.dir.join("rules.yaml"), yaml)?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/payloads");
    let bodies: Vec<Value> = PAYLOADS
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(dir.join(p)).unwrap()).unwrap())
        .collect();
    let start = 1_793_491_200_000i64; // 2026-11-01T00:00:00Z
    let step = 30 * 86_400_000 / a.events.max(1) as i64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(a.dir.join("events.jsonl"))?);
    for n in 0..a.events {
        let mut b = bodies[(n % bodies.len() as u64) as usize].clone();
        let device = 1 + (n * 7919) % a.devices;
        let at = chrono::DateTime::from_timestamp_millis(start + n as i64 * step)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        b["event"]["id"] = json!(n + 1);
        b["event"]["deviceId"] = json!(device);
        b["event"]["eventTime"] = json!(at);
        if b["device"].is_object() {
            b["device"]["id"] = json!(device);
            b["device"]["name"] = json!(format!("Fleet {device}"));
        }
        if b["position"].is_object() {
            b["position"]["deviceId"] = json!(device);
            b["position"]["fixTime"] = json!(at);
        }
        serde_json::to_writer(&mut out, &b)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
