//! The rule mix and event history the benchmarks share (`benches/core.rs`, `benches/backtest.rs`,
//! `examples/backtest_data.rs`): rules as real rule files write them, spread over event types, and
//! the example payloads' events spread over devices and time.

#![allow(dead_code)]

use serde_json::{json, Value};

/// The example payloads the history is made of, in turn.
pub const PAYLOADS: &[&str] = &[
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

/// Rule `i`'s `match:` block: type and alarm lists, geofence and device globs, attribute comparisons,
/// regex, negation and expressions, with operands varying from rule to rule (a thousand copies of one
/// rule would measure a cache). The same mix as the server benchmark's (`scripts/bench/run`).
pub fn kind(i: usize) -> String {
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

/// Tenants of the fleet: device groups, each with its own rules.
pub const TENANTS: usize = 100;

/// A configuration of `n` rules of the mix, each with a 10-minute cooldown per device, sending to a
/// log channel; its data directory `data_dir`. With `tenants`, rule `i` belongs to tenant (device
/// group) `1 + i % TENANTS`, as a fleet's rule set does: each customer's or depot's rules for its own
/// devices, so an event is judged by all rules but matches only its tenant's. Without, every rule is
/// for every device (an event then matches about 17 of 1,000 rules).
pub fn rules_yaml(n: usize, data_dir: &str, tenants: bool) -> String {
    let mut yaml = format!(
        "storage: {{ data_dir: \"{data_dir}\" }}\nchannels: {{ out: {{ type: log }} }}\nrules:\n"
    );
    for i in 0..n {
        let mut m = kind(i);
        if tenants {
            m = m.replacen("{ ", &format!("{{ group: {}, ", 1 + i % TENANTS), 1);
        }
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {m}, cooldown: 10m, notify: [{{ channel: out }}] }}\n"
        ));
    }
    yaml
}

/// The example payloads, read from `tests/payloads`.
pub fn bodies() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/payloads");
    PAYLOADS
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(dir.join(p)).unwrap()).unwrap())
        .collect()
}

/// Event `n` of `total` spread over 30 days from 2026-11-01 and over `devices` devices: a webhook
/// body as one JSON line.
pub fn event_line(bodies: &[Value], n: u64, total: u64, devices: u64) -> String {
    let start = 1_793_491_200_000i64; // 2026-11-01T00:00:00Z
    let step = 30 * 86_400_000 / total.max(1) as i64;
    let mut b = bodies[(n % bodies.len() as u64) as usize].clone();
    let device = 1 + (n * 7919) % devices;
    let at = chrono::DateTime::from_timestamp_millis(start + n as i64 * step)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    b["event"]["id"] = json!(n + 1);
    b["event"]["deviceId"] = json!(device);
    b["event"]["eventTime"] = json!(at);
    if b["device"].is_object() {
        b["device"]["id"] = json!(device);
        b["device"]["name"] = json!(format!("Fleet {device}"));
        b["device"]["groupId"] = json!(1 + device % TENANTS as u64);
    }
    if b["position"].is_object() {
        b["position"]["deviceId"] = json!(device);
        b["position"]["fixTime"] = json!(at);
    }
    b.to_string()
}
