//! The live Traccar source against a stand-in Traccar server: login by token and by password, wrong
//! credentials, socket drops with backfill and no duplicate notification, session expiry, malformed
//! frames, a server that never answers or goes silent, enrichment in rendered messages, and the relay's
//! own zones with dwell from a stream of positions. Every wait is on a condition with a deadline.

mod common;
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use common::{config_in, eventually, payload, Relay};
use support::sink::Sink;
use support::traccar::{web_notification, Traccar};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "tok-3f9a7c";
const PASSWORD: &str = "pw-Very$ecret-771";

/// A relay following `server` (credentials as YAML lines), sending the events `matcher` selects to
/// the sink with `template` as the message. Timings are short so reconnects take milliseconds.
async fn start_relay(
    dir: &Path,
    server: &Traccar,
    credentials: &str,
    sink: &Sink,
    matcher: &str,
    template: &str,
    extra: &str,
) -> Relay {
    let yaml = format!(
        r#"
storage: {{ data_dir: "{dir}" }}
channels:
  hook: {{ type: webhook, url: "{sink}" }}
rules:
  - name: r
    match: {matcher}
    notify: [{{ channel: hook, template: {template:?} }}]
traccar:
  - name: home
    url: "{url}"
{credentials}
    ping_interval: 200ms
    silence_timeout: 1s
    timeout: 500ms
    backoff_initial: 50ms
    backoff_max: 400ms
{extra}
"#,
        dir = dir.display(),
        sink = sink.url("/hook"),
        url = server.url(),
    );
    Relay::start(config_in(dir, &yaml)).await
}

/// A stand-in server taking the token [`TOKEN`], with a keepalive every 100 ms.
async fn server() -> Traccar {
    Traccar::start(Some(TOKEN), None, Duration::from_millis(100)).await
}

/// A relay logged in by token, sending every alarm's event id to the sink.
async fn ids_relay(dir: &Path, server: &Traccar, sink: &Sink) -> Relay {
    let credentials = format!("    token: {TOKEN}");
    start_relay(
        dir,
        server,
        &credentials,
        sink,
        "{ type: alarm }",
        "{{ event.id }}",
        "",
    )
    .await
}

fn alarm(id: i64, device: i64, message: Option<&str>) -> Value {
    let mut attributes = json!({ "alarm": "movement" });
    if let Some(m) = message {
        attributes["message"] = json!(m);
    }
    json!({
        "id": id, "attributes": attributes, "deviceId": device, "type": "alarm",
        "eventTime": chrono::Utc::now().to_rfc3339(), "positionId": 0, "geofenceId": 0, "maintenanceId": 0
    })
}

async fn health(relay: &Relay) -> Value {
    relay
        .client
        .get(relay.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `/healthz` until the source `home` satisfies `f`.
async fn wait_status(relay: &Relay, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = health(relay).await;
        if let Some(s) = h["sources"].as_array().and_then(|a| a.first()) {
            if f(s) {
                return s.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn messages(sink: &Sink) -> Vec<String> {
    sink.requests()
        .iter()
        .map(|r| r.json()["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn token_login_enriches_pushed_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    token: {TOKEN}"),
        &sink,
        "{ type: alarm, source: home }",
        "{{ device.name }} ({{ group.name }}) via {{ source }}: {{ event.attributes.message }}",
        "",
    )
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    // The frame carries only ids; names come from the cache.
    let frame: Value = serde_json::from_str(&payload("websocket/events.json")).unwrap();
    let mut event = frame["events"][0].clone();
    event["eventTime"] = json!(chrono::Utc::now().to_rfc3339());
    let pid = event["positionId"].as_i64().unwrap();
    server.push(event, position(pid, 12, 47.26, 11.39, 0));
    sink.wait_for(1, WAIT).await;
    assert_eq!(
        messages(&sink),
        ["Lena's Gazelle (Familie Hofer) via home: Lena's Gazelle alarm: Movement at 2026-05-15 02:46:12"]
    );
    let logins = server.logins();
    assert!(
        logins.len() == 1 && logins[0].by_token && logins[0].ok,
        "{logins:?}"
    );
    assert_eq!(
        server.socket_refusals(),
        Vec::<u16>::new(),
        "no Origin, cookie sent"
    );
    let s = wait_status(&relay, "a frame", |s| !s["last_frame"].is_null()).await;
    assert_eq!(s["reconnects"], 0);
    assert_eq!(s["devices"], 2);
    relay.stop().await;
}

#[tokio::test]
async fn socket_and_webhook_share_the_dedup_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    token: {TOKEN}"),
        &sink,
        "{ type: alarm }",
        "{{ source }}: {{ device.name }} ({{ group.name }})",
        "",
    )
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    let body: Value = serde_json::from_str(&payload("alarm_sos.json")).unwrap();
    let id = body["event"]["id"].as_i64().unwrap();
    let (status, answer) = relay.post(body.to_string(), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let mut pushed = body["event"].clone();
    pushed["eventTime"] = json!(chrono::Utc::now().to_rfc3339());
    server.push_event(pushed);
    server.push_event(alarm(id + 1, 12, None));
    sink.wait_for(2, WAIT).await;
    sink.assert_stays_at(2, Duration::from_millis(300)).await;
    // The webhook body has no group: the live source's cache fills it in.
    assert_eq!(
        messages(&sink),
        [
            "traccar: Lastenrad Wien (Radkultur Wien)",
            "home: Lena's Gazelle (Familie Hofer)"
        ]
    );
    relay.stop().await;
}

#[tokio::test]
async fn password_login_and_wrong_credentials_back_off_without_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let server = Traccar::start(
        None,
        Some(("lena@example.org", PASSWORD)),
        Duration::from_millis(100),
    )
    .await;
    let sink = Sink::start().await;
    // Capture the relay's logs: the test runtime is single-threaded, so its tasks log here.
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || Capture(writer.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let relay = start_relay(
        dir.path(),
        &server,
        "    email: lena@example.org\n    password: wrong-Pa55word-xyz",
        &sink,
        "{ type: alarm }",
        "x",
        "",
    )
    .await;
    eventually(WAIT, "four refused logins", || server.logins().len() >= 4).await;
    let s = wait_status(&relay, "an error", |s| !s["last_error"].is_null()).await;
    assert_eq!(s["connected"], false);
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("wrong email or password for `lena@example.org`"),
        "{err}"
    );
    // Backoff: the waits grow (50 ms doubling, jitter ±20%).
    let logins = server.logins();
    assert!(logins.iter().all(|l| !l.ok && !l.by_token));
    let gaps: Vec<Duration> = logins.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[2] > gaps[0], "no backoff: {gaps:?}");
    relay.stop().await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.contains("login refused"), "{text}");
    assert!(
        !text.contains("wrong-Pa55word-xyz"),
        "password logged: {text}"
    );
    assert!(!health_text_leaks(&s, "wrong-Pa55word-xyz"));

    // The right password logs in.
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    email: lena@example.org\n    password: {PASSWORD:?}"),
        &sink,
        "{ type: alarm }",
        "{{ device.name }}",
        "",
    )
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.push_event(alarm(5001, 27, None));
    sink.wait_for(1, WAIT).await;
    assert_eq!(messages(&sink), ["Lastenrad Wien"]);
    relay.stop().await;
}

fn health_text_leaks(v: &Value, secret: &str) -> bool {
    v.to_string().contains(secret)
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_backfills_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = ids_relay(dir.path(), &server, &sink).await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.push_event(alarm(7001, 12, Some("live")));
    sink.wait_for(1, WAIT).await;
    // Wait for a frame after the event so the gap starts after it... or not: the margin covers
    // both, and dedup drops 7001 when the backfill returns it again.
    server.drop_sockets();
    wait_status(&relay, "disconnected", |s| {
        s["reconnects"].as_u64() >= Some(1)
    })
    .await;
    // Events while the relay is away: not pushed, only in the server's history.
    server.record_event(alarm(7002, 12, None));
    server.record_event(alarm(7003, 27, None));
    eventually(WAIT, "a second socket", || server.socket_opens() >= 2).await;
    sink.wait_for(3, WAIT).await;
    sink.assert_stays_at(3, Duration::from_millis(400)).await;
    let mut got = messages(&sink);
    got.sort();
    assert_eq!(got, ["7001", "7002", "7003"]);
    let queries = server.report_queries();
    assert!(
        queries.iter().any(|q| q.contains("deviceId=12")),
        "{queries:?}"
    );
    assert!(
        queries.iter().any(|q| q.contains("deviceId=27")),
        "{queries:?}"
    );
    // Only one login: the session survived the drop.
    assert_eq!(server.logins().len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn an_expired_session_logs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = ids_relay(dir.path(), &server, &sink).await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.expire_sessions();
    server.drop_sockets();
    eventually(WAIT, "a second login", || server.logins().len() >= 2).await;
    eventually(WAIT, "a new socket", || server.socket_opens() >= 2).await;
    assert!(server.logins().iter().all(|l| l.ok));
    server.push_event(alarm(8001, 12, None));
    sink.wait_for(1, WAIT).await;
    assert_eq!(messages(&sink), ["8001"]);
    relay.stop().await;
}

#[tokio::test]
async fn malformed_frames_are_skipped_and_the_socket_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = ids_relay(dir.path(), &server, &sink).await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.push_text("not json at all".into());
    server.push_text(r#"{"events":[{"id":"seven","type":"alarm"}]}"#.into());
    server.push_text(r#"[1,2,3]"#.into());
    server.push_event(alarm(9001, 12, None));
    sink.wait_for(1, WAIT).await;
    assert_eq!(messages(&sink), ["9001"]);
    assert_eq!(server.socket_opens(), 1);
    let s = wait_status(&relay, "status", |_| true).await;
    assert_eq!(s["reconnects"], 0, "{s}");
    relay.stop().await;
}

#[tokio::test]
async fn a_server_that_never_answers_or_goes_silent_is_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    server.set_hang(true);
    let sink = Sink::start().await;
    let relay = ids_relay(dir.path(), &server, &sink).await;
    let s = wait_status(&relay, "a timeout", |s| s["reconnects"].as_u64() >= Some(2)).await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer in time"),
        "{s}"
    );
    assert!(
        !health(&relay).await.to_string().contains(TOKEN),
        "token leaked: {s}"
    );
    assert_eq!(s["connected"], false);
    server.set_hang(false);
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    // A socket that stops talking (no keepalive, no pong) is dead after silence_timeout.
    server.set_silent(true);
    let s = wait_status(&relay, "silence detected", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("silent"))
    })
    .await;
    assert!(s["reconnects"].as_u64() >= Some(3), "{s}");
    server.set_silent(false);
    eventually(WAIT, "a socket after the silence", || {
        server.connected() >= 1
    })
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.push_event(alarm(9101, 12, None));
    sink.wait_for(1, WAIT).await;
    relay.stop().await;
}

fn position(id: i64, device: i64, lat: f64, lon: f64, secs: i64) -> Value {
    let t = chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
        .unwrap()
        .to_rfc3339();
    json!({ "id": id, "deviceId": device, "latitude": lat, "longitude": lon, "valid": true,
            "fixTime": t, "deviceTime": t, "serverTime": t, "attributes": {} })
}

#[tokio::test]
async fn zones_enter_after_dwell_and_exit_from_positions() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    token: {TOKEN}"),
        &sink,
        "{ type: [geofenceEnter, geofenceExit], geofence: 'Zuhause*' }",
        "{{ title }}: {{ device.name }}",
        "    zones:\n      Zuhause (relay): { area: 'CIRCLE (47.26221 11.41352, 50)', dwell: 30s }\n",
    )
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    let (inside, outside) = ((47.26221, 11.41352), (47.263421, 11.412008));
    let steps = [
        (outside, 0),
        (inside, 10),  // pending
        (outside, 20), // jitter: back out, no enter
        (inside, 30),  // pending again
        (inside, 50),  // 20 s: not yet
        (inside, 61),  // 31 s: enter
        (inside, 90),
        (outside, 100), // exit
    ];
    for (i, ((lat, lon), t)) in steps.iter().enumerate() {
        let p = position(100 + i as i64, 12, *lat, *lon, *t);
        server.push_text(json!({ "positions": [p] }).to_string());
    }
    sink.wait_for(2, WAIT).await;
    sink.assert_stays_at(2, Duration::from_millis(300)).await;
    assert_eq!(
        messages(&sink),
        [
            "Entered Zuhause (relay): Lena's Gazelle",
            "Left Zuhause (relay): Lena's Gazelle"
        ]
    );
    let event = &sink.requests()[0].json()["event"];
    assert_eq!(event["event"]["attributes"]["origin"], "relay");
    assert!(event["event"]["id"].as_i64().unwrap() < 0);
    assert_eq!(event["position"]["id"], 105);
    relay.stop().await;
}

#[tokio::test]
async fn config_errors_name_the_source_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trackrelay.yaml");
    std::fs::write(
        &path,
        "traccar:\n  - name: a\n    url: ftp://x\n    email: me@x\n  - name: b\n    url: http://x\n    token: t\n    zones: { z: { area: 'CIRCLE (1 2)' } }\n  - name: c\n    url: https://me:pw@x\n    token: t\n",
    )
    .unwrap();
    let err = trackrelay::settings::Config::load_with_env(Some(&path), &|_| None)
        .unwrap_err()
        .to_string();
    for want in [
        "trackrelay.yaml:2: traccar source 'a': url: `ftp://x` must be http:// or https://",
        "trackrelay.yaml:2: traccar source 'a': `email` needs a `password`",
        "trackrelay.yaml:5: traccar source 'b': zone 'z': CIRCLE: expected",
        "trackrelay.yaml:9: traccar source 'c': url: no credentials in the URL",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
}

/// The `match:` block of the shipped theft rule (rules/10-theft.yaml), as YAML flow (JSON), so these
/// tests follow the rule users start from.
fn theft_match() -> String {
    let path = format!("{}/rules/10-theft.yaml", env!("CARGO_MANIFEST_DIR"));
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rule = &rules["rules"][0];
    assert_eq!(rule["name"].as_str(), Some("theft-alarm"));
    let m: Value = serde_yaml::from_value(rule["match"].clone()).unwrap();
    m.to_string()
}

/// An alarm event as Traccar raises it (its position id set by [`Traccar::push`]).
fn alarm_of(id: i64, device: i64, alarm: &str) -> Value {
    json!({
        "id": id, "attributes": { "alarm": alarm }, "deviceId": device, "type": "alarm",
        "eventTime": chrono::Utc::now().to_rfc3339(), "positionId": 0, "geofenceId": 0, "maintenanceId": 0
    })
}

/// A position of `device` with `armed` set, taken now.
fn armed_position(id: i64, device: i64, armed: bool) -> Value {
    let t = chrono::Utc::now().to_rfc3339();
    json!({ "id": id, "deviceId": device, "latitude": 47.2633, "longitude": 11.3844, "valid": true,
            "fixTime": t, "deviceTime": t, "serverTime": t, "speed": 3.2,
            "attributes": { "armed": armed, "alarm": "movement" } })
}

/// A relay following `server` with the shipped theft rule; the message names the event and the position
/// it was matched with. `extra` adds source settings.
async fn theft_relay(dir: &Path, server: &Traccar, sink: &Sink, extra: &str) -> Relay {
    start_relay(
        dir,
        server,
        &format!("    token: {TOKEN}"),
        sink,
        &theft_match(),
        "{{ event.id }} at {{ position.id }}",
        extra,
    )
    .await
}

/// `trackrelay_source_event_positions_total` of the source `home` for `via` (0 when absent).
async fn positions_via(relay: &Relay, via: &str) -> f64 {
    let series = format!(r#"trackrelay_source_event_positions_total{{source="home",via="{via}"}}"#);
    let text = relay.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_theft_rule_fires_for_an_alarm_pushed_before_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = theft_relay(dir.path(), &server, &sink, "").await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    // Traccar's order: the events frame, then (5 ms later) the positions frame.
    server.push(
        alarm_of(11001, 12, "movement"),
        armed_position(5001, 12, true),
    );
    // Not armed: the rule must not fire, position or not.
    server.push(
        alarm_of(11002, 27, "vibration"),
        armed_position(5002, 27, false),
    );
    // Armed, but an alarm the rule does not name.
    server.push(alarm_of(11003, 12, "sos"), armed_position(5003, 12, true));
    sink.wait_for(1, WAIT).await;
    sink.assert_stays_at(1, Duration::from_millis(400)).await;
    assert_eq!(messages(&sink), ["11001 at 5001"]);
    // Joined on the socket: the REST API was not needed.
    assert!(server.position_queries().is_empty());
    assert_eq!(positions_via(&relay, "socket").await, 3.0);
    relay.stop().await;
}

#[tokio::test]
async fn positions_the_socket_does_not_bring_are_read_over_rest_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = theft_relay(dir.path(), &server, &sink, "    position_wait: 300ms\n").await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.set_hold_positions(true);
    // Two alarms of two bikes in one frame; their positions never come on the socket.
    server.add_position(armed_position(6001, 12, true));
    server.add_position(armed_position(6002, 27, true));
    let mut a = alarm_of(12001, 12, "movement");
    a["positionId"] = json!(6001);
    let mut b = alarm_of(12002, 27, "tow");
    b["positionId"] = json!(6002);
    server.push_text(json!({ "events": [a, b] }).to_string());
    sink.wait_for(2, WAIT).await;
    let mut got = messages(&sink);
    got.sort();
    assert_eq!(got, ["12001 at 6001", "12002 at 6002"]);
    let queries = server.position_queries();
    assert_eq!(queries, ["id=6001&id=6002"], "one request for both");
    relay.stop().await;
}

#[tokio::test]
async fn an_event_whose_position_cannot_be_had_goes_on_without_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    token: {TOKEN}"),
        &sink,
        "{ type: alarm }",
        "{{ event.id }} at {{ position.id or 'nowhere' }}",
        "    position_wait: 200ms\n",
    )
    .await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.set_hold_positions(true);
    server.set_positions_status(Some(503));
    server.push(
        alarm_of(13001, 12, "movement"),
        armed_position(7001, 12, true),
    );
    // A later event of the same device waits behind it, then follows in order.
    server.push_event(alarm_of(13002, 12, "sos"));
    sink.wait_for(2, WAIT).await;
    assert_eq!(messages(&sink), ["13001 at nowhere", "13002 at nowhere"]);
    let s = wait_status(&relay, "the count", |s| s["events_without_position"] == 1).await;
    assert_eq!(s["connected"], true);
    assert_eq!(positions_via(&relay, "missing").await, 1.0);
    relay.stop().await;
}

#[tokio::test]
async fn the_theft_rule_fires_for_a_backfilled_alarm_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = theft_relay(dir.path(), &server, &sink, "").await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.push_event(alarm_of(14000, 27, "sos"));
    wait_status(&relay, "a first event", |s| s["events"] == 1).await;
    server.drop_sockets();
    wait_status(&relay, "disconnected", |s| {
        s["reconnects"].as_u64() >= Some(1)
    })
    .await;
    // While the relay is away: an armed alarm and an unarmed one, each with its position.
    for (id, pid, device, armed) in [(14001, 8001, 12, true), (14002, 8002, 27, false)] {
        let mut e = alarm_of(id, device, "movement");
        e["positionId"] = json!(pid);
        server.add_position(armed_position(pid, device, armed));
        server.record_event(e);
    }
    sink.wait_for(1, WAIT).await;
    sink.assert_stays_at(1, Duration::from_millis(400)).await;
    assert_eq!(messages(&sink), ["14001 at 8001"]);
    assert!(
        server
            .position_queries()
            .iter()
            .any(|q| q.contains("id=8001") && q.contains("id=8002")),
        "{:?}",
        server.position_queries()
    );
    relay.stop().await;
}

#[tokio::test]
async fn missing_web_notifications_are_named_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    // Mail only for going offline; alarms for the web, but only `movement` listed.
    server.set_notifications(vec![
        json!({"id": 1, "type": "deviceOffline", "always": true, "notificators": "mail", "attributes": {}}),
        web_notification(2, "alarm", Some("movement,sos")),
    ]);
    let sink = Sink::start().await;
    let relay = start_relay(
        dir.path(),
        &server,
        &format!("    token: {TOKEN}"),
        &sink,
        &theft_match(),
        "{{ event.id }}",
        "    refresh_interval: 300ms\n",
    )
    .await;
    let s = wait_status(&relay, "notifications read", |s| {
        !s["missing_web_notifications"].is_null()
    })
    .await;
    assert_eq!(
        s["missing_web_notifications"],
        json!(["alarm:tow", "alarm:vibration"])
    );
    // Traccar really does not push what no web notification covers.
    server.push(alarm_of(15001, 12, "tow"), armed_position(9001, 12, true));
    sink.assert_stays_at(0, Duration::from_millis(300)).await;
    // The user adds them; the relay reads them at its next refresh.
    server.set_notifications(vec![web_notification(
        2,
        "alarm",
        Some("movement,vibration,tow"),
    )]);
    wait_status(&relay, "nothing missing", |s| {
        s["missing_web_notifications"] == json!([])
    })
    .await;
    server.push(alarm_of(15002, 12, "tow"), armed_position(9002, 12, true));
    sink.wait_for(1, WAIT).await;
    assert_eq!(messages(&sink), ["15002"]);
    relay.stop().await;
}

/// Runs `trackrelay check --online` on `yaml` off the runtime, so the stand-in keeps answering.
async fn check_online(dir: &Path, yaml: String) -> (bool, String) {
    let path = dir.join("trackrelay.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trackrelay"))
            .args(["check", "--online"])
            .arg(&path)
            .env_remove("TRACKRELAY_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn check_online_names_missing_web_notifications_and_unreachable_servers() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    server.set_notifications(vec![web_notification(2, "alarm", Some("movement"))]);
    let yaml = |url: &str, token: &str| {
        format!(
            "channels: {{ out: {{ type: log }} }}\nrules:\n  - name: theft\n    match: {}\n    notify: [{{ channel: out }}]\n  - name: offline\n    match: {{ type: deviceOffline }}\n    notify: [{{ channel: out }}]\ntraccar:\n  - name: home\n    url: \"{url}\"\n    token: {token}\n    timeout: 2s\n",
            theft_match()
        )
    };
    let (ok, out) = check_online(dir.path(), yaml(&server.url(), TOKEN)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "source 'home': no web notification for deviceOffline, alarm:tow, alarm:vibration"
        ),
        "{out}"
    );
    server.set_notifications(vec![
        web_notification(2, "alarm", Some("movement,vibration,tow")),
        web_notification(3, "deviceOffline", None),
    ]);
    let (ok, out) = check_online(dir.path(), yaml(&server.url(), TOKEN)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("every event type the rules match has a web notification"),
        "{out}"
    );
    // A wrong token: a clear error, without the token.
    let (ok, out) = check_online(dir.path(), yaml(&server.url(), "wrong-tok-123")).await;
    assert!(!ok && out.contains("login refused"), "{out}");
    assert!(!out.contains("wrong-tok-123"), "{out}");
}

#[tokio::test]
async fn the_webhook_copy_with_its_position_is_not_lost_to_a_socket_copy_without() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    let relay = theft_relay(dir.path(), &server, &sink, "    position_wait: 100ms\n").await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    // The server cannot give the position: the socket's copy goes on without it, and the theft rule
    // (armed) cannot hold for it.
    server.set_hold_positions(true);
    server.set_positions_status(Some(503));
    let event = alarm_of(16001, 12, "movement");
    let position = armed_position(10001, 12, true);
    server.push(event.clone(), position.clone());
    wait_status(&relay, "the socket copy", |s| {
        s["events_without_position"] == 1
    })
    .await;
    sink.assert_stays_at(0, Duration::from_millis(200)).await;
    // Traccar's webhook copy of the same event carries the position: the rule fires, once.
    let mut body = json!({ "event": event, "position": position,
        "device": {"id": 12, "name": "Lena's Gazelle", "groupId": 3, "attributes": {}} });
    body["event"]["positionId"] = json!(10001);
    let (status, answer) = relay.post(body.to_string(), &[]).await;
    assert_eq!(status, 200, "{answer}");
    sink.wait_for(1, WAIT).await;
    assert_eq!(messages(&sink), ["16001 at 10001"]);
    // Sent again (Traccar does not retry, but a proxy might): nothing more.
    let (status, answer) = relay.post(body.to_string(), &[]).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    // The other way round: the webhook's copy first, the socket's (with its position) after it.
    server.set_hold_positions(false);
    server.set_positions_status(None);
    let mut body2 = body.clone();
    body2["event"]["id"] = json!(16002);
    body2["event"]["positionId"] = json!(10002);
    body2["position"]["id"] = json!(10002);
    let (status, _) = relay.post(body2.to_string(), &[]).await;
    assert_eq!(status, 200);
    server.push(
        alarm_of(16002, 12, "movement"),
        armed_position(10002, 12, true),
    );
    sink.wait_for(2, WAIT).await;
    sink.assert_stays_at(2, Duration::from_millis(400)).await;
    assert_eq!(messages(&sink), ["16001 at 10001", "16002 at 10002"]);
    relay.stop().await;
}

#[tokio::test]
async fn events_waiting_for_their_position_are_handed_on_when_the_relay_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let sink = Sink::start().await;
    // A wait far longer than the test: only the hand-on at shutdown can send it.
    let relay = theft_relay(dir.path(), &server, &sink, "    position_wait: 60s\n").await;
    wait_status(&relay, "connected", |s| s["connected"] == true).await;
    server.set_hold_positions(true);
    server.push(
        alarm_of(17001, 12, "movement"),
        armed_position(11001, 12, true),
    );
    wait_status(&relay, "the event frame", |s| {
        s["events"] == 0 && !s["last_frame"].is_null()
    })
    .await;
    sink.assert_stays_at(0, Duration::from_millis(300)).await;
    // Stopping: the source reads the waiting event's position over REST and hands the event on before
    // intake closes; the worker then sends it before the relay has stopped.
    relay.stop().await;
    assert_eq!(messages(&sink), ["17001 at 11001"]);
    assert!(
        server.position_queries().iter().any(|q| q == "id=11001"),
        "{:?}",
        server.position_queries()
    );
}
