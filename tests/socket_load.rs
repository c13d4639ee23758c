//! Socket load of the live Traccar source (issue 22): the relay runs as its real binary (so its memory
//! and CPU are its own, read from `/proc`), follows the stand-in's `/api/socket` with a fleet of 100,000
//! devices and 1,000 server geofences (circles, polygons, lines; `geofences_from_server`), and is sent
//! frames of 1,000 positions at 10,000 positions/s: every device reports every 10 s, as a Traccar server
//! with 100,000 devices would push them. One device in a hundred crosses its geofence's border with each
//! report (about 100 zone events/s), the others stay put inside or outside theirs; a rule sends every
//! zone event to a webhook sink on loopback.
//!
//! Each position carries the time its frame was sent (`attributes.sent`, µs since the test's start); the
//! webhook body carries the event's position, so the sink's arrival time gives each zone event's lag.
//! The relay keeps up when every expected zone event arrives (exact count, none twice), the last third's
//! p99 lag is not much worse than the first third's (no growing lag) and its RSS in the last third stays
//! within a slack of the middle third's (flat memory, once bounded caches have filled). Before the
//! measured run every device reports once (as fast as the relay reads), so the per-device state is all
//! there when measuring starts.
//!
//! `SOCKET_LOAD_SECS` (default 5) sets the length of the run, `SOCKET_LOAD_DEVICES` (default 100,000, a
//! multiple of 1,000) the fleet, `SOCKET_LOAD_RATE` the positions per second (a multiple of 1,000;
//! default 10,000, a fifth of it in a debug build). `scripts/bench/socket.sh` runs it for a minute in
//! release. The figures are one line starting with `socket-load:`, as `key=value` pairs.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use support::sink::{Recorded, Sink};
use support::smtp::free_port;
use support::traccar::Traccar;

const TOKEN: &str = "tok-load-81c2";
/// Positions per frame.
const FRAME: i64 = 1_000;
/// Server geofences.
const ZONES: i64 = 1_000;
/// Default run length and fleet.
const DEFAULT_SECS: u32 = 5;
const DEFAULT_DEVICES: i64 = 100_000;
/// Positions per second: 100,000 devices reporting every 10 s. A debug build (`cargo test`) of the
/// relay and the stand-in cannot parse that many on 2 cores beside each other: it runs a fifth.
const DEFAULT_RATE: u32 = if cfg!(debug_assertions) {
    2_000
} else {
    10_000
};
/// Every device whose id is a multiple of this crosses its geofence's border with each report.
const CROSS_EVERY: i64 = 100;
/// Devices whose id modulo [`CROSS_EVERY`] is at most this stay inside their geofence; the others
/// (neither crossing nor inside) stay outside.
const STAY_INSIDE: i64 = 50;
/// Radius of circles and polygons, half-width of line corridors (metres).
const ZONE_RADIUS_M: f64 = 300.0;
const LINE_DISTANCE_M: f64 = 30.0;
/// Where a device outside its geofence is: this far north of it, well clear of every zone (the grid
/// is about 11 km apart).
const OUTSIDE_M: f64 = 1_500.0;
/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;
/// How long the zone events still on their way may take after the last frame.
const DRAIN: Duration = Duration::from_secs(30);
/// How long the warm-up (every device once, unpaced) may take.
const WARMUP_PATIENCE: Duration = Duration::from_secs(120);
/// No growing lag: the last third's p99 <= the first third's p99 x factor + slack, and its p50 <= the
/// first third's p50 + slack. The p99 bound lets a stall pass that the relay recovers from; the p50
/// bound catches a relay that falls behind steadily from a lag that was already high (a tail twice as
/// long as at the start would pass the p99 bound).
const LAG_FACTOR: f64 = 2.0;
const LAG_SLACK_MS: f64 = 50.0;
/// Flat memory: the last third's RSS <= the middle third's largest + slack. Not the first third's:
/// bounded caches fill from cold during the first half minute at 100 zone events/s (about 36 MiB in
/// release, half of it SQLite's page caches of 16 MiB per connection), then RSS stays put; a leak
/// keeps growing through the last third.
const RSS_SLACK_KIB: u64 = 16 * 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `(lat, lon)` `metres` north of `(lat, lon)`.
fn north(lat: f64, lon: f64, metres: f64) -> (f64, f64) {
    (lat + metres / M_PER_DEG, lon)
}

/// `(lat, lon)` `metres` from `(lat, lon)` towards `bearing` (radians), flat approximation.
fn offset(lat: f64, lon: f64, metres: f64, bearing: f64) -> (f64, f64) {
    let dlat = metres * bearing.cos() / M_PER_DEG;
    let dlon = metres * bearing.sin() / (M_PER_DEG * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

/// Centre of geofence `i`: a 40 x 25 grid over roughly Austria.
fn zone_centre(i: i64) -> (f64, f64) {
    (46.5 + (i / 40) as f64 * 0.1, 9.6 + (i % 40) as f64 * 0.19)
}

/// Geofence `i` as `GET /api/geofences` lists it: a third each circles, 24-corner polygons and lines
/// running east from the centre. The centre is inside each.
fn geofence(i: i64) -> Value {
    let (lat, lon) = zone_centre(i);
    let wkt = |points: Vec<(f64, f64)>| {
        let p: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.6} {b:.6}"))
            .collect();
        p.join(", ")
    };
    let mut attributes = json!({});
    let area = match i % 3 {
        0 => format!("CIRCLE ({lat:.6} {lon:.6}, {ZONE_RADIUS_M})"),
        1 => {
            let corners = (0..24)
                .map(|k| {
                    offset(
                        lat,
                        lon,
                        ZONE_RADIUS_M,
                        f64::from(k) / 24.0 * std::f64::consts::TAU,
                    )
                })
                .collect();
            format!("POLYGON (({}))", wkt(corners))
        }
        _ => {
            attributes["polylineDistance"] = json!(LINE_DISTANCE_M);
            let points = (0..5)
                .map(|k| offset(lat, lon, f64::from(k) * 200.0, std::f64::consts::FRAC_PI_2))
                .collect();
            format!("LINESTRING ({})", wkt(points))
        }
    };
    json!({"id": i + 1, "name": format!("Zone {i}"), "description": null, "area": area,
           "calendarId": 0, "attributes": attributes})
}

/// Device `d` as `GET /api/devices` lists it.
fn device(d: i64) -> Value {
    json!({"id": d, "name": format!("Bike {d}"), "uniqueId": format!("86{d:011}"), "status": "online",
           "groupId": 0, "calendarId": 0, "lastUpdate": null, "positionId": 0, "phone": null,
           "model": null, "contact": null, "category": "bicycle", "disabled": false, "attributes": {}})
}

/// The fleet: where each device is at its n-th report.
struct Fleet {
    devices: i64,
    /// Reports sent per device (index `d - 1`).
    reports: Vec<u32>,
    next_position: i64,
}

impl Fleet {
    fn new(devices: i64) -> Fleet {
        Fleet {
            devices,
            reports: vec![0; usize::try_from(devices).unwrap()],
            next_position: 1,
        }
    }

    fn crosses(d: i64) -> bool {
        d % CROSS_EVERY == 0
    }

    /// The geofence of device `d`: spread over all of them (a crossing device's too).
    fn zone_of(d: i64) -> i64 {
        let h = u64::try_from(d)
            .unwrap()
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 32;
        i64::try_from(h % ZONES as u64).unwrap()
    }

    /// Where device `d` is at its report number `n`: a crossing device outside at even reports and
    /// inside at odd ones, the others always inside or always outside, a few metres of jitter each.
    fn place(d: i64, n: u32) -> (f64, f64) {
        let (lat, lon) = zone_centre(Fleet::zone_of(d));
        let inside = if Fleet::crosses(d) {
            n % 2 == 1
        } else {
            d % CROSS_EVERY <= STAY_INSIDE
        };
        let jitter = f64::from(n % 3) * 5.0 - 5.0;
        north(lat, lon, if inside { jitter } else { OUTSIDE_M + jitter })
    }

    /// The next report of device `d`, as a position JSON object; whether it crosses a border.
    fn report(&mut self, out: &mut String, d: i64, sent_us: u128, time: &str) -> bool {
        let slot = &mut self.reports[usize::try_from(d - 1).unwrap()];
        let n = *slot;
        *slot += 1;
        let (lat, lon) = Fleet::place(d, n);
        let id = self.next_position;
        self.next_position += 1;
        if !out.ends_with('[') {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":{id},"deviceId":{d},"protocol":"osmand","serverTime":"{time}","deviceTime":"{time}","fixTime":"{time}","outdated":false,"valid":true,"latitude":{lat:.6},"longitude":{lon:.6},"altitude":212.0,"speed":0.0,"course":0.0,"address":null,"accuracy":5.0,"network":null,"geofenceIds":null,"attributes":{{"sent":{sent_us},"batteryLevel":87,"motion":false}}}}"#
        ));
        Fleet::crosses(d) && n > 0
    }

    /// A `positions` frame of the devices `first..first + count`; the zone events it must cause.
    fn frame(&mut self, first: i64, count: i64, sent_us: u128) -> (String, usize) {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, false);
        let mut out = String::with_capacity(usize::try_from(count).unwrap() * 380);
        out.push_str(r#"{"positions":["#);
        let mut crossings = 0;
        for d in first..first + count {
            crossings += usize::from(self.report(&mut out, d, sent_us, &time));
        }
        out.push_str("]}");
        (out, crossings)
    }
}

/// The relay as a child process, killed when dropped.
struct RelayProcess {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl RelayProcess {
    fn start(dir: &Path, server: &Traccar, sink: &Sink) -> RelayProcess {
        let port = free_port();
        let yaml = format!(
            r#"
listen: "127.0.0.1:{port}"
storage: {{ data_dir: "{data}" }}
channels:
  hook: {{ type: webhook, url: "{sink}" }}
rules:
  - name: zones
    match: {{ type: [geofenceEnter, geofenceExit] }}
    notify: [{{ channel: hook }}]
traccar:
  - name: fleet
    url: "{url}"
    token: {TOKEN}
    geofences_from_server: true
"#,
            data = dir.join("data").display(),
            sink = sink.url("/zone"),
            url = server.url(),
        );
        let config = dir.join("trackrelay.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join("relay.log");
        let child = Command::new(env!("CARGO_BIN_EXE_trackrelay"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("TRACKRELAY_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the relay binary starts");
        RelayProcess { child, port, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the relay's log, for a failure message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The live source's status from `/healthz` (`Null` while the relay does not answer).
    async fn source_status(&self, client: &reqwest::Client) -> Value {
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        match client.get(url).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or_default()["sources"][0].clone(),
            Err(_) => Value::Null,
        }
    }

    /// Waits until the socket is open with the whole fleet in the cache.
    async fn wait_connected(&self, devices: i64) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.source_status(&client).await;
            if s["connected"] == true && s["devices"] == devices {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not connect with {devices} devices: {s}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time of `pid` (user + system), seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name (in parentheses, may hold spaces): field 3 (state) onwards.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

/// Polls the sink's request count until it reaches `n` or `patience` runs out; returns the count.
async fn wait_count(sink: &Sink, n: usize, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    loop {
        let got = sink.requests().len();
        if got >= n || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every device reports once, unpaced, then the first crossing device enters its zone: once that zone
/// event arrives the relay has read every frame. Returns how long it took.
async fn warm_up(server: &Traccar, sink: &Sink, fleet: &mut Fleet, t0: Instant) -> Duration {
    let start = Instant::now();
    for first in (1..=fleet.devices).step_by(FRAME as usize) {
        let (text, crossings) = fleet.frame(first, FRAME, t0.elapsed().as_micros());
        assert_eq!(crossings, 0, "first reports set the state silently");
        server.push_text(text);
        // Lets the socket's task send while the next frame is built.
        tokio::task::yield_now().await;
    }
    let (probe, crossings) = fleet.frame(CROSS_EVERY, 1, t0.elapsed().as_micros());
    assert_eq!(crossings, 1);
    server.push_text(probe);
    let got = wait_count(sink, 1, WARMUP_PATIENCE).await;
    assert_eq!(got, 1, "the warm-up's probe zone event did not arrive");
    let took = start.elapsed();
    sink.clear();
    took
}

/// What the paced run sent.
struct Sent {
    /// When the first frame was due.
    start: Instant,
    /// Zone events the frames must cause.
    expected: usize,
    frames: u32,
    /// How late the latest frame left after its deadline (the test's own pacing).
    late_max: Duration,
    /// RSS every second: (seconds since start, KiB).
    rss: Vec<(f64, u64)>,
    /// Relay CPU over the run, seconds.
    cpu: f64,
}

/// Sends the run's frames, each due at an absolute deadline (no drift from the time a send takes),
/// the devices in turn; samples the relay's RSS every second and its CPU time over the run.
async fn send_frames(
    server: &Traccar,
    fleet: &mut Fleet,
    t0: Instant,
    load: Load,
    pid: u32,
) -> Sent {
    let per_sec = load.frames_per_sec();
    let frames = load.secs * per_sec;
    let period = Duration::from_secs(1) / per_sec;
    let start = Instant::now() + Duration::from_millis(100);
    let slots = fleet.devices / FRAME;
    let cpu_before = cpu_secs(pid);
    let (mut expected, mut late_max, mut rss) = (0, Duration::ZERO, Vec::new());
    for k in 0..frames {
        let due = start + period * k;
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        late_max = late_max.max(now - due);
        if k % per_sec == 0 {
            rss.push(((now - start).as_secs_f64(), rss_kib(pid)));
        }
        let first = i64::from(k) % slots * FRAME + 1;
        let (text, crossings) = fleet.frame(first, FRAME, now.duration_since(t0).as_micros());
        server.push_text(text);
        expected += crossings;
    }
    tokio::time::sleep_until((start + period * frames).into()).await;
    rss.push((start.elapsed().as_secs_f64(), rss_kib(pid)));
    Sent {
        start,
        expected,
        frames,
        late_max,
        rss,
        cpu: cpu_secs(pid) - cpu_before,
    }
}

/// p50, p99 and max of `v` (ms), zeros when empty.
fn percentiles(mut v: Vec<f64>) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), v[v.len() - 1]]
}

/// Each zone event's frame time (seconds into the run) and lag (ms), in order of frame time.
fn lag_points(records: &[Recorded], t0: Instant, sent: &Sent) -> Vec<(f64, f64)> {
    let offset = sent.start.duration_since(t0).as_secs_f64();
    let mut points: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| {
            let us = r.json()["event"]["position"]["attributes"]["sent"].as_u64()?;
            let sent_s = us as f64 / 1e6;
            let lag = r.received_at.duration_since(t0).as_secs_f64() - sent_s;
            Some((sent_s - offset, lag * 1e3))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// The lags (ms) of the zone events whose frames were sent in `[from, to)` seconds of the run.
fn lags_in(points: &[(f64, f64)], from: f64, to: f64) -> Vec<f64> {
    let inside = points.iter().filter(|(at, _)| *at >= from && *at < to);
    inside.map(|(_, lag)| *lag).collect()
}

/// The largest lag of each second of the run, ms, rounded.
fn lag_series(points: &[(f64, f64)], secs: u32) -> String {
    let max = |s: u32| {
        let lags = lags_in(points, f64::from(s), f64::from(s + 1));
        lags.into_iter().fold(0.0, f64::max)
    };
    let each: Vec<String> = (0..secs).map(|s| format!("{:.0}", max(s))).collect();
    each.join(" ")
}

/// The largest RSS sampled in `[from, to)` seconds of the run, KiB.
fn rss_max(sent: &Sent, from: f64, to: f64) -> u64 {
    let inside = sent.rss.iter().filter(|(t, _)| *t >= from && *t < to);
    inside.map(|(_, kib)| *kib).max().unwrap_or(0)
}

/// The run's settings, from the environment.
#[derive(Debug, Clone, Copy)]
struct Load {
    secs: u32,
    devices: i64,
    /// Positions per second.
    rate: u32,
}

impl Load {
    fn from_env() -> Load {
        let load = Load {
            secs: env_or("SOCKET_LOAD_SECS", DEFAULT_SECS).max(3),
            devices: env_or("SOCKET_LOAD_DEVICES", DEFAULT_DEVICES),
            rate: env_or("SOCKET_LOAD_RATE", DEFAULT_RATE),
        };
        // The warm-up queues every device's first report at once: the stand-in's socket holds 256
        // frames before it drops the oldest.
        assert!(
            load.devices >= FRAME && load.devices % FRAME == 0 && load.devices <= 250 * FRAME,
            "SOCKET_LOAD_DEVICES: a multiple of {FRAME}, at most 250,000"
        );
        assert!(
            load.frames_per_sec() > 0 && i64::from(load.rate) % FRAME == 0,
            "SOCKET_LOAD_RATE: a multiple of {FRAME}"
        );
        load
    }

    fn frames_per_sec(self) -> u32 {
        self.rate / FRAME as u32
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_up_with_a_fleet_on_the_socket() {
    let load = Load::from_env();
    let dir = tempfile::tempdir().unwrap();
    let server = Traccar::start(Some(TOKEN), None, Duration::from_secs(55)).await;
    server.set_devices((1..=load.devices).map(device).collect());
    server.set_geofences((0..ZONES).map(geofence).collect());
    let sink = Sink::start().await;
    let relay = RelayProcess::start(dir.path(), &server, &sink);
    relay.wait_connected(load.devices).await;
    let rss_connected = rss_kib(relay.pid());
    let t0 = Instant::now();
    let mut fleet = Fleet::new(load.devices);
    let warmup = warm_up(&server, &sink, &mut fleet, t0).await;
    let rss_warm = rss_kib(relay.pid());
    let sent = send_frames(&server, &mut fleet, t0, load, relay.pid()).await;
    let received = wait_count(&sink, sent.expected, DRAIN).await;
    // Anything beyond the expected count would be a duplicate or a stray: give it a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = sink.requests();
    let figures = Figures::new(&records, t0, &sent, load);
    println!(
        "socket-load: {} warmup_s={:.2} rss_connected_mib={:.1} rss_warm_mib={:.1} frames_dropped={}",
        figures.line(load, &sent, records.len()),
        warmup.as_secs_f64(),
        mib(rss_connected),
        mib(rss_warm),
        server.frames_dropped()
    );
    println!("socket-load-rss-mib (every second): {}", figures.rss_series);
    println!(
        "socket-load-lag-ms (largest of each second): {}",
        figures.lag_series
    );
    assert_eq!(
        server.frames_dropped(),
        0,
        "the stand-in dropped frames: the relay read too slowly"
    );
    assert_eq!(
        (received, records.len(), figures.distinct),
        (sent.expected, sent.expected, sent.expected),
        "zone events (expected, received, distinct) vs expected\n{}",
        relay.log_tail()
    );
    figures.check();
}

/// What a run measured.
struct Figures {
    /// Distinct idempotency keys among the webhook requests.
    distinct: usize,
    /// p50, p99, max lag (ms) of the first and the last third.
    first: [f64; 3],
    last: [f64; 3],
    /// Largest RSS (KiB) of the middle and of the last third; first, largest, last sample.
    rss_middle_third: u64,
    rss_last_third: u64,
    rss: [u64; 3],
    rss_series: String,
    lag_series: String,
}

impl Figures {
    fn new(records: &[Recorded], t0: Instant, sent: &Sent, load: Load) -> Figures {
        let d = f64::from(load.secs);
        let points = lag_points(records, t0, sent);
        let samples: Vec<u64> = sent.rss.iter().map(|(_, k)| *k).collect();
        let keys: HashSet<&str> = records
            .iter()
            .filter_map(|r| r.header("idempotency-key"))
            .collect();
        let series: Vec<String> = samples.iter().map(|k| format!("{:.1}", mib(*k))).collect();
        Figures {
            distinct: keys.len(),
            first: percentiles(lags_in(&points, 0.0, d / 3.0)),
            last: percentiles(lags_in(&points, d * 2.0 / 3.0, d)),
            rss_middle_third: rss_max(sent, d / 3.0, d * 2.0 / 3.0),
            rss_last_third: rss_max(sent, d * 2.0 / 3.0, f64::MAX),
            rss: [
                samples[0],
                samples.iter().copied().max().unwrap_or(0),
                samples[samples.len() - 1],
            ],
            rss_series: series.join(" "),
            lag_series: lag_series(&points, load.secs),
        }
    }

    /// The figures as `key=value` pairs.
    fn line(&self, load: Load, sent: &Sent, received: usize) -> String {
        let (f, l, r) = (self.first, self.last, self.rss);
        format!(
            "secs={} devices={} zones={ZONES} frame={FRAME} positions_per_s={} frames={} expected={} \
             received={received} distinct={} lag_first_p50_ms={:.1} lag_first_p99_ms={:.1} \
             lag_first_max_ms={:.1} lag_last_p50_ms={:.1} lag_last_p99_ms={:.1} lag_last_max_ms={:.1} \
             rss_first_mib={:.1} rss_max_mib={:.1} rss_last_mib={:.1} cpu_s={:.2} cpu_pct={:.1} \
             pace_late_max_ms={:.1}",
            load.secs, load.devices, load.rate, sent.frames, sent.expected, self.distinct,
            f[0], f[1], f[2], l[0], l[1], l[2], mib(r[0]), mib(r[1]), mib(r[2]),
            sent.cpu, sent.cpu / f64::from(load.secs) * 100.0, sent.late_max.as_secs_f64() * 1e3,
        )
    }

    /// No growing lag, flat memory.
    fn check(&self) {
        let (first, last) = (self.first, self.last);
        assert!(
            last[1] <= first[1] * LAG_FACTOR + LAG_SLACK_MS,
            "growing lag: p99 {:.1} ms in the last third, {:.1} ms in the first",
            last[1],
            first[1]
        );
        assert!(
            last[0] <= first[0] + LAG_SLACK_MS,
            "growing lag: p50 {:.1} ms in the last third, {:.1} ms in the first",
            last[0],
            first[0]
        );
        assert!(
            self.rss_last_third <= self.rss_middle_third + RSS_SLACK_KIB,
            "memory grows: up to {} KiB in the last third, at most {} KiB in the middle one",
            self.rss_last_third,
            self.rss_middle_third
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
