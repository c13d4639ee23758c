//! The webhook intake against bad input: every malformed request gets a clear JSON error with the right
//! status, nothing is stored for it, and the server keeps serving good events afterwards.

mod common;
mod support;

use std::time::Duration;

use common::{config_in, payload, Relay};
use support::sink::Sink;

async fn relay(dir: &std::path::Path, sink: &Sink, extra: &str) -> Relay {
    let yaml = format!(
        r#"
storage: {{ data_dir: "{}" }}
ingest:
  authorization: "Bearer s3cret"
  max_body_bytes: 65536
{extra}
channels:
  hook: {{ type: webhook, url: "{}" }}
rules:
  - name: all
    notify: [{{ channel: hook }}]
"#,
        dir.display(),
        sink.url("/in")
    );
    Relay::start(config_in(dir, &yaml)).await
}

const AUTH: (&str, &str) = ("authorization", "Bearer s3cret");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink, "").await;
    let good = payload("alarm_sos.json");
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            good.clone(),
            vec![JSON],
            401,
            "unauthorized",
            "",
        ),
        (
            "wrong token",
            good.clone(),
            vec![("authorization", "Bearer wrong"), JSON],
            401,
            "unauthorized",
            "",
        ),
        (
            "token without scheme",
            good.clone(),
            vec![("authorization", "s3cret"), JSON],
            401,
            "unauthorized",
            "",
        ),
        (
            "malformed JSON",
            "{\"event\": {".into(),
            vec![AUTH, JSON],
            400,
            "invalid_event",
            "EOF",
        ),
        (
            "not an object",
            "[1,2]".into(),
            vec![AUTH, JSON],
            400,
            "invalid_event",
            "expected struct",
        ),
        (
            "wrong type",
            good.replace("\"id\": 1934577", "\"id\": \"1934577\""),
            vec![AUTH, JSON],
            400,
            "invalid_event",
            "event.id",
        ),
        (
            "missing type",
            r#"{"event":{"id":5}}"#.into(),
            vec![AUTH, JSON],
            400,
            "invalid_event",
            "missing field `type`",
        ),
        (
            "bad date",
            good.replace("2026-05-14T07:52:03.000+00:00", "yesterday"),
            vec![AUTH, JSON],
            400,
            "invalid_event",
            "invalid date",
        ),
        (
            "empty body",
            String::new(),
            vec![AUTH, JSON],
            400,
            "empty_body",
            "",
        ),
        (
            "2 MiB body",
            big,
            vec![AUTH, JSON],
            413,
            "body_too_large",
            "65536",
        ),
        (
            "XML",
            "<event/>".into(),
            vec![AUTH, ("content-type", "application/xml")],
            415,
            "unsupported_media_type",
            "application/xml",
        ),
    ];
    for (what, body, headers, status, code, detail) in cases {
        let (got, json) = relay.post(body, &headers).await;
        assert_eq!(got, status, "{what}: {json}");
        assert_eq!(json["error"], code, "{what}: {json}");
        let msg = json["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(detail),
            "{what}: message {msg:?} lacks {detail:?}"
        );
        assert!(
            !msg.contains("s3cret"),
            "{what}: the token leaked into {msg:?}"
        );
    }
    let (status, json) = relay
        .post(b"{\"event\":\"\xff\"}".to_vec(), &[AUTH, JSON])
        .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_utf8")),
        "{json}"
    );
    // Nothing was stored, nothing sent; the server still takes a good event.
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("trackrelay_outbox_deliveries{status=\"pending\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trackrelay_outbox_deliveries{status=\"done\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("result=\"accepted\""), "{metrics}");
    assert!(metrics.contains("trackrelay_events_received_total{source=\"traccar\",type=\"-\",result=\"unauthorized\"} 3"), "{metrics}");
    let (status, json) = relay.post(good, &[AUTH, JSON]).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("accepted")),
        "{json}"
    );
    sink.wait_for(1, Duration::from_secs(10)).await;
    relay.stop().await;
}

#[tokio::test]
async fn unknown_types_alarms_and_shapes_are_normal_events() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink, "").await;
    let bodies = [
        // A type Traccar may add tomorrow, an alarm value nobody knows, extra keys and nulls everywhere.
        r#"{"event":{"id":1,"type":"deviceTeleported","attributes":{"alarm":"ufo"},"extra":1,"eventTime":"2026-05-14T06:14:01.000+0000"},
           "device":{"id":3,"name":"X","attributes":null,"geofenceIds":null,"new":[1]},"position":null,"geofence":null,"users":[{"id":1}]}"#,
        // No device, no position, legacy time key.
        r#"{"event":{"id":2,"type":"alarm","serverTime":"2021-01-01T00:00:00.000+00:00","attributes":{"alarm":"sos,vibration"}}}"#,
    ];
    for b in bodies {
        let (status, json) = relay.post(b.to_string(), &[AUTH, JSON]).await;
        assert_eq!(
            (status, json["deliveries"].as_u64()),
            (200, Some(1)),
            "{json}"
        );
    }
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    let mut ids: Vec<i64> = got
        .iter()
        .map(|r| r.json()["event"]["event"]["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    relay.stop().await;
}

#[tokio::test]
async fn duplicates_are_acknowledged_once_and_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink, "").await;
    let body = payload("alarm_vibration.json");
    let posts = (0..8).map(|_| relay.post(body.clone(), &[AUTH, JSON]));
    let answers = futures_util::future::join_all(posts).await;
    let accepted = answers
        .iter()
        .filter(|(_, j)| j["status"] == "accepted")
        .count();
    let duplicate = answers
        .iter()
        .filter(|(_, j)| j["status"] == "duplicate")
        .count();
    assert!(answers.iter().all(|(s, _)| *s == 200));
    assert_eq!((accepted, duplicate), (1, 7));
    sink.wait_for(1, Duration::from_secs(10)).await;
    sink.assert_stays_at(1, Duration::from_millis(500)).await;
    relay.stop().await;
}

#[tokio::test]
async fn open_intake_when_no_authorization_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(common::hook_config(dir.path(), &sink.url("/x"), "{}", "")).await;
    // curl -d sends application/x-www-form-urlencoded; the body is still JSON and is accepted.
    let (status, json) = relay
        .post(
            payload("deviceOnline.json"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(status, 200, "{json}");
    relay.stop().await;
}

/// An event no rule matched is stored by its identity only (a resend is still recognised as one), unless
/// `storage.keep_unmatched_payloads` asks for its body too, which a reload switches on at once; a matched
/// event keeps its body either way.
#[tokio::test]
async fn unmatched_events_are_stored_without_their_body_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = |keep: &str| {
        format!(
            "storage: {{ data_dir: \"{}\"{keep} }}\nadmin: {{ token: admin-s3cret }}\n\
             channels: {{ hook: {{ type: webhook, url: \"{}\" }} }}\n\
             rules: [{{ name: a, match: {{ type: alarm }}, notify: [{{ channel: hook }}] }}]\n",
            dir.path().join("data").display(),
            sink.url("/in")
        )
    };
    let relay = Relay::start(config_in(dir.path(), &yaml(""))).await;
    let (alarm, online, offline) = (
        payload("alarm_vibration.json"),
        payload("deviceOnline.json"),
        payload("deviceOffline.json"),
    );
    let post = |body: &String, deliveries: u64| {
        let req = relay.post(body.clone(), &[JSON]);
        async move {
            let (status, json) = req.await;
            assert_eq!(
                (status, json["status"].as_str(), json["deliveries"].as_u64()),
                (200, Some("accepted"), Some(deliveries)),
                "{json}"
            );
        }
    };
    post(&alarm, 1).await;
    post(&online, 0).await;
    let (_, json) = relay.post(online.clone(), &[JSON]).await;
    assert_eq!(json["status"], "duplicate", "{json}");
    sink.wait_for(1, Duration::from_secs(10)).await;

    config_in(dir.path(), &yaml(", keep_unmatched_payloads: true"));
    let (status, answer) = relay.admin_post("/-/reload", "admin-s3cret").await;
    assert_eq!(status, 200, "{answer}");
    post(&offline, 0).await;
    relay.stop().await;

    let db = rusqlite::Connection::open(
        dir.path()
            .join("data")
            .join(trackrelay::store::sqlite::DB_FILE),
    )
    .unwrap();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT event_type, payload FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                trackrelay::store::sqlite::pack::unpack(r.get_ref(1)?)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            ("alarm".to_string(), alarm),
            ("deviceOnline".to_string(), String::new()),
            ("deviceOffline".to_string(), offline),
        ]
    );
}

/// The `type` label of `trackrelay_events_received_total` comes from the body: a sender making up a
/// new type per event must not grow `/metrics` without end. Such events are still accepted, stored and
/// notified like any other.
#[tokio::test]
async fn made_up_event_types_do_not_grow_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink, "").await;
    const N: i64 = 200;
    for id in 1..=N {
        let body = format!(r#"{{"event":{{"id":{id},"type":"madeUp{id}","deviceId":3}}}}"#);
        let (status, json) = relay.post(body, &[AUTH, JSON]).await;
        assert_eq!(
            (status, json["status"].as_str()),
            (200, Some("accepted")),
            "{json}"
        );
    }
    let (status, json) = relay.post(payload("alarm_sos.json"), &[AUTH, JSON]).await;
    assert_eq!(status, 200, "{json}");
    sink.wait_for(N as usize + 1, Duration::from_secs(20)).await;

    let metrics = relay.metrics().await;
    let mut series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("trackrelay_events_received_total{"))
        .collect();
    series.sort_unstable();
    assert_eq!(
        series,
        [
            "trackrelay_events_received_total{source=\"traccar\",type=\"alarm\",result=\"accepted\"} 1",
            "trackrelay_events_received_total{source=\"traccar\",type=\"other\",result=\"accepted\"} 200",
        ],
        "{metrics}"
    );
    relay.stop().await;

    let db =
        rusqlite::Connection::open(dir.path().join(trackrelay::store::sqlite::DB_FILE)).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE event_type LIKE 'madeUp%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, N);
}

/// Posts `body` to Traccar's position-forwarding path; returns the status and the answer's text.
async fn post_position(
    relay: &Relay,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = relay.client.post(relay.url("/positions")).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("relay answers");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A body of Traccar's position forwarding (`forward.type=json`): device 7 at `lat`, fixed `secs`
/// seconds after 06:00; `position_device` is `position.deviceId` (`null` = left out), `device` the
/// device object (`null` = left out).
fn forwarded(position_device: &str, device: &str, lat: f64, secs: u32) -> String {
    let device = if device == "null" {
        String::new()
    } else {
        format!(r#","device":{device}"#)
    };
    format!(
        r#"{{"position":{{"id":{secs},"deviceId":{position_device},"protocol":"osmand","valid":true,
           "fixTime":"2026-05-14T06:00:{secs:02}.000+00:00","latitude":{lat},"longitude":16.37,
           "speed":0.0,"course":0.0,"attributes":{{"batteryLevel":80}}}}{device}}}"#
    )
}

/// Traccar's position forwarding (`forward.url` at `ingest.positions_path`) moves a device's
/// whereabouts, never back to an older fix; it is authorized, bounded and checked like `/events`, and
/// neither stores nor notifies anything.
#[tokio::test]
async fn forwarded_positions_move_the_whereabouts_only() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink, "").await;
    let whereabouts = &relay.running.as_ref().unwrap().pipeline.whereabouts;
    let lat = |id: i64| {
        whereabouts
            .get(id)
            .and_then(|w| w.position)
            .map(|p| p.latitude)
    };
    let bike =
        r#"{"id":7,"name":"Lena's bike","uniqueId":"861234","attributes":{"telegramChatId":"42"}}"#;

    let (status, text) =
        post_position(&relay, forwarded("7", bike, 48.21, 30), &[AUTH, JSON]).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let w = whereabouts.get(7).expect("device 7 is known");
    assert_eq!((w.name.as_str(), lat(7)), ("Lena's bike", Some(48.21)));
    assert_eq!(w.attributes["telegramChatId"], "42");
    // An older fix (a late or resent one) does not move it back; a newer one moves it, its device id
    // taken from `device` when the position has none.
    let (status, _) = post_position(&relay, forwarded("7", bike, 1.0, 10), &[AUTH, JSON]).await;
    assert_eq!((status, lat(7)), (204, Some(48.21)));
    let (status, _) =
        post_position(&relay, forwarded("null", bike, 48.22, 40), &[AUTH, JSON]).await;
    assert_eq!((status, lat(7)), (204, Some(48.22)));

    let big = forwarded("9", "null", 47.5, 50).replace(
        "\"batteryLevel\":80",
        &format!("\"pad\":\"{}\"", "x".repeat(70_000)),
    );
    let cases = [
        (
            "no token",
            forwarded("8", "null", 47.5, 50),
            vec![JSON],
            401,
            "unauthorized",
            "",
        ),
        (
            "wrong token",
            forwarded("8", "null", 47.5, 50),
            vec![("authorization", "Bearer wrong"), JSON],
            401,
            "unauthorized",
            "",
        ),
        (
            "malformed JSON",
            "{\"position\": {".to_string(),
            vec![AUTH, JSON],
            400,
            "invalid_position",
            "EOF",
        ),
        (
            "wrong type",
            forwarded("9", "null", 47.5, 50).replace("\"latitude\":47.5", "\"latitude\":\"north\""),
            vec![AUTH, JSON],
            400,
            "invalid_position",
            "position.latitude",
        ),
        (
            "only a device",
            format!(r#"{{"device":{bike}}}"#),
            vec![AUTH, JSON],
            400,
            "invalid_position",
            "no `position`",
        ),
        (
            "no device at all",
            forwarded("null", "null", 47.5, 50),
            vec![AUTH, JSON],
            400,
            "invalid_position",
            "position without a device",
        ),
        (
            "two devices",
            forwarded("9", bike, 47.5, 50),
            vec![AUTH, JSON],
            400,
            "invalid_position",
            "different devices",
        ),
        (
            "empty body",
            String::new(),
            vec![AUTH, JSON],
            400,
            "empty_body",
            "position",
        ),
        (
            "oversized",
            big,
            vec![AUTH, JSON],
            413,
            "body_too_large",
            "65536",
        ),
        (
            "XML",
            "<position/>".to_string(),
            vec![AUTH, ("content-type", "application/xml")],
            415,
            "unsupported_media_type",
            "application/xml",
        ),
    ];
    for (what, body, headers, status, code, detail) in cases {
        let (got, text) = post_position(&relay, body, &headers).await;
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(code)),
            "{what}: {json}"
        );
        let msg = json["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(detail),
            "{what}: message {msg:?} lacks {detail:?}"
        );
    }
    // Nothing of the refused ones was recorded; device 7 stayed where it was.
    assert!(whereabouts.get(8).is_none() && whereabouts.get(9).is_none());
    assert_eq!(lat(7), Some(48.22));

    let metrics = relay.metrics().await;
    for line in [
        "trackrelay_positions_received_total{result=\"accepted\"} 3",
        "trackrelay_positions_received_total{result=\"unauthorized\"} 2",
        "trackrelay_positions_received_total{result=\"invalid\"} 8",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // Positions are not events: nothing received, stored or sent.
    assert!(
        !metrics.contains("trackrelay_events_received_total{"),
        "{metrics}"
    );
    sink.assert_stays_at(0, Duration::from_millis(300)).await;
    relay.stop().await;
    let db =
        rusqlite::Connection::open(dir.path().join(trackrelay::store::sqlite::DB_FILE)).unwrap();
    let events: i64 = db
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 0);
}
