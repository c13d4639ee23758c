//! `trackrelay backtest`: history replayed through the rules decides as the relay decided. The relay's
//! own store replayed gives what the running relay did with the same events; a file of a month's events
//! (out of order, with unreadable lines) gives the figures worked out by hand for cooldown, quiet hours,
//! incidents and their repeats; `--compare` subtracts; a live source's server is read device by device
//! in windows, positions fetched by id, and gives what the same events from a file give; Ctrl-C stops
//! with a report of what was replayed.

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use trackrelay::backtest::history::Source;
use trackrelay::backtest::report::reason_kind;
use trackrelay::backtest::{run, Options};
use trackrelay::settings::Config;
use trackrelay::store::{Filter, Status};

use common::{config_in, payload, Relay};

const TOKEN: &str = "admin-secret-token-0123456789";

/// A webhook body from the payload `name`, as event `id` of `device` at `at` (RFC 3339).
fn event(name: &str, id: i64, device: i64, at: &str) -> Value {
    let mut b: Value = serde_json::from_str(&payload(name)).unwrap();
    b["event"]["id"] = json!(id);
    b["event"]["deviceId"] = json!(device);
    b["event"]["eventTime"] = json!(at);
    if b["device"].is_object() {
        b["device"]["id"] = json!(device);
        b["device"]["name"] = json!(format!("bike {device}"));
    }
    if b["position"].is_object() {
        b["position"]["deviceId"] = json!(device);
        b["position"]["fixTime"] = json!(at);
    }
    b
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trackrelay"))
}

/// Runs `trackrelay backtest ARGS`; returns exit code, stdout, stderr.
fn backtest(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("backtest")
        .args(args)
        .env_remove("TRACKRELAY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn options(config: Config, source: Source) -> Options {
    Options {
        config,
        compare: None,
        source,
        from: None,
        to: None,
        show: 0,
        top: 10,
        progress: false,
        window: chrono::Duration::days(7),
        store: None,
    }
}

/// Per (rule, channel): notified, suppressed by kind, grouped: what `outcomes` say.
type Figures = BTreeMap<(String, String), (u64, BTreeMap<String, u64>, u64)>;

fn live_figures(rows: &[trackrelay::store::DeliveryRow]) -> Figures {
    let mut f = Figures::new();
    for r in rows {
        let e = f.entry((r.rule.clone(), r.channel.clone())).or_default();
        match r.status {
            Status::Done | Status::Pending | Status::Inflight => e.0 += 1,
            Status::Suppressed => {
                *e.1.entry(reason_kind(r.reason.as_deref().unwrap_or("")).to_string())
                    .or_default() += 1
            }
            Status::Grouped => e.2 += 1,
            Status::Dead => panic!("a dead delivery in the live run: {r:?}"),
        }
    }
    f
}

fn backtest_figures(r: &trackrelay::backtest::report::Report) -> Figures {
    let mut f = Figures::new();
    for rule in &r.rules {
        for (ch, c) in &rule.channels {
            f.insert(
                (rule.rule.clone(), ch.clone()),
                (c.notified, c.suppressed.clone(), c.grouped),
            );
        }
    }
    f
}

const LIVE_RULES: &str = r#"
channels:
  out: { type: log }
  ops: { type: log }
rules:
  - name: shaking
    match: { type: alarm, alarm: [vibration] }
    cooldown: { key: "{{ device.id }}", for: 1h }
    notify: [{ channel: out }, { channel: ops }]
  - name: offline
    match: { type: deviceOffline }
    group: { by: "offline", wait: 10m, interval: 10m }
    notify: [{ channel: out }]
  - name: moving
    match: { type: deviceMoving }
    dedup: 10m
    notify: [{ channel: out }]
"#;

/// The relay's store, replayed: the same figures as the relay that stored it (cooldown, digests,
/// dedup of identical events, a silence made through the API while it ran).
#[tokio::test]
async fn the_store_replayed_decides_as_the_relay_did() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {TOKEN} }}\n{LIVE_RULES}",
        dir.path().join("data").display()
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    let (st, _) = relay
        .admin_send(
            reqwest::Method::POST,
            "/api/silences",
            TOKEN,
            Some(json!({"matchers": {"device": "27", "rule": "moving"}, "duration": "1h", "author": "test"})),
        )
        .await;
    assert_eq!(st, 201);
    // The relay re-reads silences every 2 s.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let now = utc(chrono::Utc::now());
    let mut id = 1000;
    let mut post = |name: &str, device: i64| {
        id += 1;
        event(name, id, device, &now)
    };
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(post("alarm_vibration.json", 12));
        bodies.push(post("alarm_vibration.json", 27));
        bodies.push(post("deviceOffline.json", 12));
        // Two moving events of one device: the second is a duplicate within 10 minutes.
        bodies.push(post("deviceMoving.json", 12));
        bodies.push(post("deviceMoving.json", 27));
    }
    for b in &bodies {
        let (st, answer) = relay.post(b.to_string(), &[]).await;
        assert_eq!(st, 200, "{answer}");
    }
    // Everything sent that goes at once (the digest waits its 10 minutes).
    relay.wait_deliveries("done", 2 + 1 + 1, TOKEN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop().await;
    let cfg = config_in(dir.path(), &yaml);
    let store = trackrelay::app::existing_store(&cfg)
        .await
        .unwrap()
        .unwrap();
    let rows = store
        .list(Filter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let live = live_figures(&rows);
    let mut o = options(cfg, Source::Store);
    o.store = Some(store);
    o.to = Some(utc(chrono::Utc::now() + chrono::Duration::minutes(1)));
    let outcome = run(o, std::future::pending()).await.unwrap();
    let replayed = backtest_figures(&outcome.report);
    assert_eq!(replayed, live, "backtest vs the relay");
    // And the figures are the ones the rules should give, not two runs agreeing on nothing.
    let k = |r: &str, c: &str| (r.to_string(), c.to_string());
    assert_eq!(live[&k("shaking", "out")].0, 2, "{live:?}");
    assert_eq!(live[&k("shaking", "ops")].1["cooldown"], 6);
    assert_eq!(live[&k("offline", "out")], (1, BTreeMap::new(), 4));
    assert_eq!(live[&k("moving", "out")].0, 1);
    assert_eq!(live[&k("moving", "out")].1["dedup"], 3);
    assert_eq!(live[&k("moving", "out")].1["silence"], 4);
    assert_eq!(outcome.report.events, bodies.len() as u64);
    assert_eq!(outcome.report.rules[0].matched, 8);
}

const MONTH_RULES: &str = r#"
timezone: Europe/Vienna
channels:
  out: { type: log }
rules:
  - name: theft
    match: { type: alarm, alarm: [sos] }
    incident: { repeat: 15m, max_repeats: 2, resolve_after: 2h }
    notify: [{ channel: out }]
  - name: shaking
    match: { type: alarm, alarm: [vibration] }
    cooldown: { key: "{{ device.id }}", for: COOLDOWN }
    notify: [{ channel: out }]
  - name: offline
    match: { type: deviceOffline }
    schedule: { quiet: "22:00-06:00" }
    notify: [{ channel: out }]
"#;

/// A month of history as a file, written out of order (device by device, the way an export per
/// device comes), with a blank and an unreadable line.
fn month_file(dir: &Path) -> PathBuf {
    let t = |d: u32, h: u32, m: u32| {
        utc(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, d, h, m, 0).unwrap())
    };
    let mut lines = Vec::new();
    let mut id = 0;
    for device in [27, 12] {
        // Shaking every 10 minutes for 3 hours on the 5th: with a 1 h cooldown, one an hour.
        for i in 0..18 {
            id += 1;
            let (h, m) = (8 + i / 6, (i % 6) * 10);
            lines.push(event("alarm_vibration.json", id, device, &t(5, h, m)).to_string());
        }
        // Offline at 23:30 and 12:00 Vienna time (22:30 and 11:00 UTC) on the 10th.
        id += 1;
        lines.push(event("deviceOffline.json", id, device, &t(10, 22, 30)).to_string());
        id += 1;
        lines.push(event("deviceOffline.json", id, device, &t(10, 11, 0)).to_string());
    }
    // One theft on the 20th: an incident, two reminders 15 minutes apart, closed 2 h after.
    id += 1;
    lines.push(event("alarm_sos.json", id, 12, &t(20, 3, 0)).to_string());
    lines.insert(3, String::new());
    lines.insert(5, "{\"event\": {\"type\": \"alarm\"".to_string());
    // Reversed: the file is not in time order.
    lines.reverse();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn month_config(dir: &Path, name: &str, cooldown: &str) -> PathBuf {
    let path = dir.join(name);
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\n{}",
        dir.join("nodata").display(),
        MONTH_RULES.replace("COOLDOWN", cooldown)
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report}"))
}

/// A month from a file: the figures worked out by hand, in JSON and as a table, with samples.
#[test]
fn a_month_of_events_from_a_file_gives_the_figures_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let events = month_file(dir.path());
    let config = month_config(dir.path(), "a.yaml", "1h");
    let (code, out, err) = backtest(&[
        config.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--json",
        "--show",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let o: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = &o["report"];
    assert_eq!(r["events"], 41);
    assert_eq!(o["skipped"]["unreadable"], 1, "{o}");
    assert!(
        o["skipped"]["examples"][0]
            .as_str()
            .unwrap()
            .starts_with("line "),
        "{o}"
    );
    let shaking = rule(r, "shaking");
    assert_eq!(shaking["matched"], 36);
    assert_eq!(
        shaking["total"]["notified"], 6,
        "3 an hour apart per device: {shaking}"
    );
    assert_eq!(shaking["total"]["suppressed"]["cooldown"], 30);
    let offline = rule(r, "offline");
    assert_eq!(offline["total"]["notified"], 2, "{offline}");
    assert_eq!(offline["total"]["suppressed"]["quiet hours"], 2);
    let theft = rule(r, "theft");
    assert_eq!(
        theft["total"]["notified"], 3,
        "opening + 2 reminders: {theft}"
    );
    assert_eq!(
        theft["incidents"],
        json!({"opened": 1, "repeats": 2, "escalations": 0, "resolved": 1, "events": 1})
    );
    assert_eq!(r["per_day"]["2026-11-05"], 6);
    assert_eq!(r["per_day"]["2026-11-10"], 2);
    assert_eq!(r["per_day"]["2026-11-20"], 3);
    assert_eq!(r["top_devices"][0]["device_id"], 12);
    assert_eq!(r["top_devices"][0]["notified"], 3 + 1 + 3);
    assert_eq!(r["samples"].as_array().unwrap().len(), 2);
    assert!(
        r["samples"][0]["text"].as_str().unwrap().contains("bike"),
        "{}",
        r["samples"]
    );
    // The table says the same.
    let (code, text, _) = backtest(&[
        config.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--from",
        "2026-11-05",
        "--to",
        "2026-11-05",
    ]);
    assert_eq!(code, 0);
    assert!(text.contains("36 events"), "{text}");
    assert!(text.contains("6 messages would have been sent"), "{text}");
    assert!(text.contains("30 (30 cooldown)"), "{text}");
}

/// `--compare`: the second configuration's figures beside the first's, and the difference.
#[test]
fn compare_puts_two_rule_sets_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let events = month_file(dir.path());
    let a = month_config(dir.path(), "a.yaml", "1h");
    let b = month_config(dir.path(), "b.yaml", "30m");
    let (code, out, err) = backtest(&[
        a.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--compare",
        b.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let o: Value = serde_json::from_str(&out).unwrap();
    let c = &o["comparison"];
    assert_eq!(rule(&c["a"], "shaking")["total"]["notified"], 6);
    assert_eq!(rule(&c["b"], "shaking")["total"]["notified"], 12);
    assert_eq!(rule(&c["b"], "theft")["total"]["notified"], 3);
    assert_eq!(c["notified_delta"], 6);
    let (_, text, _) = backtest(&[
        a.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--compare",
        b.to_str().unwrap(),
    ]);
    assert!(
        text.contains("B sends 6 more messages than A (11 → 17)"),
        "{text}"
    );
}

/// Wrong options are refused with a reason, before anything runs.
#[test]
fn bad_options_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let events = month_file(dir.path());
    let a = month_config(dir.path(), "a.yaml", "1h");
    let cases: [(&[&str], &str); 4] = [
        (&["--events", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
        (&["--server", "nope"], "no live source `nope`"),
        (
            &[
                "--from",
                "2026-11-10",
                "--to",
                "2026-11-01",
                "--events",
                events.to_str().unwrap(),
            ],
            "--from must be before --to",
        ),
        (
            &["--from", "yesterday", "--events", events.to_str().unwrap()],
            "`yesterday` is not a date",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec![a.to_str().unwrap()];
        all.extend_from_slice(args);
        let (code, _, err) = backtest(&all);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // No store to replay.
    let (code, _, err) = backtest(&[a.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing to replay"), "{err}");
}

/// Ctrl-C stops a long run cleanly: exit 130, a report of what was replayed, the scratch store gone.
#[test]
fn ctrl_c_stops_with_a_report_of_what_was_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let config = month_config(dir.path(), "a.yaml", "1h");
    let start = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 10, 1, 0, 0, 0).unwrap();
    let mut text = String::new();
    for i in 0..60_000i64 {
        let at = utc(start + chrono::Duration::seconds(i * 30));
        text.push_str(&event("alarm_vibration.json", i + 1, i % 500, &at).to_string());
        text.push('\n');
    }
    let events = dir.path().join("big.jsonl");
    std::fs::write(&events, text).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let child = Command::new(binary())
        .args([
            "backtest",
            config.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--json",
        ])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until its scratch store exists: it is replaying.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no scratch store made"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let events = o["report"]["events"].as_u64().unwrap();
    assert!(events > 0 && events < 60_000, "replayed {events}");
    assert!(
        o["stopped_at"].as_str().unwrap().starts_with("2026-10"),
        "{o}"
    );
    assert_eq!(rule(&o["report"], "shaking")["matched"], events);
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "scratch store left behind"
    );
}

/// A live source's server: every device's event reports read in windows (shorter ones after the
/// server refused a period as too long; an event on a border kept once), the positions the events refer to read by id, device names from the server; the figures equal
/// those of the same events given as a file.
#[tokio::test]
async fn a_servers_history_is_read_device_by_device_with_positions() {
    use support::traccar::Traccar;
    let server = Traccar::start(Some("tok-backtest"), None, Duration::from_secs(30)).await;
    let base: Value = serde_json::from_str(&payload("alarm_vibration.json")).unwrap();
    let mut lines = Vec::new();
    let (mut id, mut pid) = (0, 500_000);
    for day in 1..=21 {
        for device in [12, 27] {
            for minute in [0, 5] {
                id += 1;
                pid += 1;
                let at = utc(chrono::TimeZone::with_ymd_and_hms(
                    &chrono::Utc,
                    2026,
                    11,
                    day,
                    7,
                    minute,
                    0,
                )
                .unwrap());
                let mut position = base["position"].clone();
                position["id"] = json!(pid);
                position["deviceId"] = json!(device);
                position["fixTime"] = json!(at);
                position["latitude"] = json!(47.0 + f64::from(day) / 100.0);
                let mut ev = base["event"].clone();
                ev["id"] = json!(id);
                ev["deviceId"] = json!(device);
                ev["eventTime"] = json!(at);
                ev["positionId"] = json!(pid);
                server.record_event(ev.clone());
                server.add_position(position.clone());
                let name = if device == 12 {
                    "Lena's Gazelle"
                } else {
                    "Lastenrad Wien"
                };
                lines.push(
                    json!({"event": ev, "position": position, "device": {"id": device, "name": name}})
                        .to_string(),
                );
            }
        }
    }
    // An event on a window's border (the server's windows include both ends): read twice, kept once.
    let border = json!({"id": 9999, "type": "deviceOnline", "deviceId": 12, "positionId": 0,
        "eventTime": "2026-11-05T00:00:00.000Z", "attributes": {}});
    server.record_event(border.clone());
    lines
        .push(json!({"event": border, "device": {"id": 12, "name": "Lena's Gazelle"}}).to_string());
    // Traccar's `report.periodLimit`: 36 hours; the relay asks for 2 days, is refused, asks for 1.
    server.set_report_period_limit(Some(Duration::from_secs(36 * 3600)));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"storage: {{ data_dir: "{}" }}
channels:
  out: {{ type: log }}
rules:
  - name: shaking
    match: {{ type: alarm, alarm: [vibration] }}
    cooldown: {{ key: "{{{{ device.id }}}}", for: 1h }}
    notify: [{{ channel: out, template: "{{{{ device.name }}}} at {{{{ position.latitude }}}}" }}]
traccar:
  - name: home
    url: "{}"
    token: tok-backtest
"#,
        dir.path().join("nodata").display(),
        server.url()
    );
    let mut o = options(config_in(dir.path(), &yaml), Source::Server("home".into()));
    o.from = Some("2026-11-01".into());
    o.to = Some("2026-11-21".into());
    o.window = chrono::Duration::days(2);
    o.show = 42;
    let from_server = run(o, std::future::pending()).await.unwrap();
    let r = &from_server.report;
    assert_eq!(r.events, 85);
    assert_eq!(r.rules[0].total.notified, 42, "one a day per device");
    assert_eq!(r.rules[0].total.suppressed["cooldown"], 42);
    // Every device asked for a 2-day window, refused, then in 1-day windows over the 21 days.
    let queries = server.report_queries();
    for device in [12, 27] {
        let n = queries
            .iter()
            .filter(|q| q.contains(&format!("deviceId={device}&")))
            .count();
        assert_eq!(n, 1 + 21, "{queries:?}");
    }
    // Positions read by id: each message has its day's latitude; names come from the server.
    let texts: Vec<&str> = r.samples.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts.len(), 42);
    assert!(texts.contains(&"Lena's Gazelle at 47.21"), "{texts:?}");
    assert!(texts.contains(&"Lastenrad Wien at 47.01"), "{texts:?}");
    // The same events as a file: the same figures.
    let file = dir.path().join("same.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut o = options(config_in(dir.path(), &yaml), Source::File(file));
    o.show = 42;
    let from_file = run(o, std::future::pending()).await.unwrap();
    assert_eq!(
        backtest_figures(&from_file.report),
        backtest_figures(&from_server.report)
    );
    let file_texts: Vec<&str> = from_file
        .report
        .samples
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!(file_texts, texts);
}
