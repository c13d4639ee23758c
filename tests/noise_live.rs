//! Noise control in a running relay with a real webhook receiver: a digest arrives as one message, a
//! cooldown shows in `explain`, the deliveries list and the metrics, and silences are made and ended
//! through the admin API. (The timing of each mechanism is tested on an injected clock in `noise.rs`.)

mod common;
mod support;

use std::time::Duration;

use common::{config_in, payload, Relay};
use serde_json::{json, Value};
use support::sink::Sink;

const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(10);

fn event(name: &str, id: i64, device: i64) -> String {
    let mut v: Value = serde_json::from_str(&payload(name)).unwrap();
    v["event"]["id"] = id.into();
    v["event"]["deviceId"] = device.into();
    v["device"]["id"] = device.into();
    v["device"]["name"] = format!("bike-{device}").into();
    if v["position"].is_object() {
        v["position"]["deviceId"] = device.into();
    }
    v.to_string()
}

async fn admin_json(
    relay: &Relay,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    relay.admin_send(method, path, ADMIN, body).await
}

#[tokio::test]
async fn a_burst_of_offline_devices_arrives_as_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ hook: {{ type: webhook, url: \"{}\" }} }}\n\
         rules:\n  - name: offline\n    match: {{ type: deviceOffline }}\n    \
         group: {{ wait: 3s, interval: 1h, title: \"{{{{ count }}}} devices offline: {{{{ devices | join(', ') }}}}\" }}\n    \
         notify: [{{ channel: hook }}]\n",
        dir.path().display(),
        sink.url("/ops")
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    // The group waits 3 s from its first event: room for fourteen posts on a slow, busy machine.
    for d in 1..=14 {
        assert_eq!(
            relay.post(event("deviceOffline.json", d, d), &[]).await.0,
            200
        );
    }
    let got = sink.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["digest"], true, "{body}");
    assert_eq!(body["count"], 14);
    let title = body["title"].as_str().unwrap();
    assert!(
        title.starts_with("14 devices offline: bike-1, bike-2"),
        "{title}"
    );
    assert_eq!(body["items"].as_array().unwrap().len(), 14);
    assert_eq!(body["items"][13]["rule"], "offline");
    // One message, not fourteen: nothing else follows.
    sink.assert_stays_at(1, Duration::from_millis(800)).await;
    relay.stop().await;
}

#[tokio::test]
async fn cooldowns_and_silences_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {ADMIN} }}\n\
         channels: {{ hook: {{ type: webhook, url: \"{}\" }} }}\n\
         rules:\n  - name: theft\n    match: {{ type: alarm }}\n    cooldown: {{ for: 1h, summary: true }}\n    \
         notify: [{{ channel: hook }}]\n",
        dir.path().display(),
        sink.url("/alarms")
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    assert_eq!(
        relay.post(event("alarm_vibration.json", 1, 7), &[]).await.0,
        200
    );
    sink.wait_for(1, WAIT).await;
    // The second alarm of the device is accepted (200) and recorded as suppressed.
    assert_eq!(
        relay.post(event("alarm_vibration.json", 2, 7), &[]).await.0,
        200
    );
    let rows = relay.wait_deliveries("suppressed", 1, ADMIN).await;
    assert!(
        rows[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("cooldown: `theft/7`"),
        "{}",
        rows[0]
    );

    // explain tells the same before anything is stored.
    let resp = relay
        .client
        .post(relay.url("/api/explain"))
        .bearer_auth(ADMIN)
        .body(event("alarm_vibration.json", 3, 7))
        .send()
        .await
        .unwrap();
    let x: Value = resp.json().await.unwrap();
    assert_eq!(x["state_known"], true);
    assert_eq!(x["notifications"][0]["decision"], "suppress", "{x}");
    assert!(x["notifications"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("cooldown"));
    let resp = relay
        .client
        .post(relay.url("/api/explain"))
        .bearer_auth(ADMIN)
        .body(event("alarm_vibration.json", 3, 8))
        .send()
        .await
        .unwrap();
    let x: Value = resp.json().await.unwrap();
    assert_eq!(x["notifications"][0]["decision"], "send", "{x}");

    // A silence for device 8, made through the API, applies at once.
    let (status, made) = admin_json(
        &relay,
        reqwest::Method::POST,
        "/api/silences",
        Some(json!({ "matchers": { "device": "8" }, "duration": "2h", "author": "ops", "comment": "workshop" })),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["silence"]["id"].as_i64().unwrap();
    assert_eq!(made["silence"]["state"], "active");
    assert_eq!(
        relay.post(event("alarm_vibration.json", 4, 8), &[]).await.0,
        200
    );
    let rows = relay.wait_deliveries("suppressed", 2, ADMIN).await;
    assert!(rows.iter().any(|r| r["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("silence #{id}"))));
    let (_, list) = admin_json(&relay, reqwest::Method::GET, "/api/silences", None).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 1);

    // Bad silences are refused with the reason.
    for bad in [
        json!({ "matchers": {}, "duration": "1h", "author": "x" }),
        json!({ "matchers": { "rule": "[" }, "duration": "1h", "author": "x" }),
        json!({ "matchers": { "device": "8" }, "author": "x" }),
        json!({ "matchers": { "device": "8" }, "duration": "1h", "author": "" }),
        json!({ "matchers": { "device": "8" }, "duration": "1h", "author": "x", "extra": 1 }),
    ] {
        let (status, err) = admin_json(
            &relay,
            reqwest::Method::POST,
            "/api/silences",
            Some(bad.clone()),
        )
        .await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_silence")),
            "{bad} -> {err}"
        );
    }

    // Expired: the next alarm of device 8 goes out.
    let (status, ended) = admin_json(
        &relay,
        reqwest::Method::DELETE,
        &format!("/api/silences/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (status, ended["silence"]["state"].as_str()),
        (200, Some("expired"))
    );
    let (status, _) = admin_json(&relay, reqwest::Method::DELETE, "/api/silences/999", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        relay.post(event("alarm_vibration.json", 5, 8), &[]).await.0,
        200
    );
    sink.wait_for(2, WAIT).await;
    let (_, list) = admin_json(&relay, reqwest::Method::GET, "/api/silences", None).await;
    assert!(list["silences"].as_array().unwrap().is_empty());
    let (_, list) = admin_json(&relay, reqwest::Method::GET, "/api/silences?all=true", None).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 1);

    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("channel=\"hook\",outcome=\"suppressed\"} 2"),
        "{metrics}"
    );
    relay.stop().await;
}

/// A silence another version wrote (a matcher this one does not know) mutes nothing in a running
/// relay: the alarm goes out, and the admin API and the metrics show the silence as unreadable.
#[tokio::test]
async fn an_unreadable_silence_mutes_nothing_and_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {ADMIN} }}\n\
         channels: {{ hook: {{ type: webhook, url: \"{}\" }} }}\n\
         rules:\n  - name: theft\n    match: {{ type: alarm }}\n    notify: [{{ channel: hook }}]\n",
        dir.path().display(),
        sink.url("/alarms")
    );
    let config = config_in(dir.path(), &yaml);
    drop(trackrelay::store::sqlite::SqliteStore::open(&config.storage.data_dir, 16).unwrap());
    rusqlite::Connection::open(
        config
            .storage
            .data_dir
            .join(trackrelay::store::sqlite::DB_FILE),
    )
    .unwrap()
    .execute_batch(
        "INSERT INTO silences (matchers, starts_at, ends_at, author, comment, created_at)
         VALUES ('{\"device\": \"7\", \"severity\": \"low\"}', 0, 10000000000000, 'newer', 'x', 0)",
    )
    .unwrap();
    let relay = Relay::start(config).await;
    assert_eq!(
        relay.post(event("alarm_vibration.json", 1, 7), &[]).await.0,
        200
    );
    sink.wait_for(1, WAIT).await;
    let (_, list) = admin_json(&relay, reqwest::Method::GET, "/api/silences", None).await;
    let s = &list["silences"][0];
    assert_eq!(s["state"], "unreadable", "{list}");
    assert!(s["matchers"].is_null(), "{list}");
    assert!(s["error"].as_str().unwrap().contains("severity"), "{list}");
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("\ntrackrelay_silences_unreadable 1\n"),
        "{metrics}"
    );
    relay.stop().await;
}
