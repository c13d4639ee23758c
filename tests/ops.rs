//! Operating the relay: metrics after a known sequence, hot reload (API, file change, SIGHUP) that keeps
//! the old rules when the new ones are broken, the admin API's authentication, readiness, channel tests,
//! and logs that never show a secret.

mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{config_in, eventually, payload, Relay};
use support::sink::{Mode, Sink};
use support::smtp::free_port;

const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(10);

fn with_event_id(name: &str, id: i64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&payload(name)).unwrap();
    v["event"]["id"] = id.into();
    v.to_string()
}

#[tokio::test]
async fn metrics_count_a_known_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Sink::start().await;
    let bad = Sink::start().await;
    bad.set_mode(Mode::Status(400));
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels:\n  hook: {{ type: webhook, url: \"{}\" }}\n  broken: {{ type: webhook, url: \"{}\" }}\n\
         rules:\n  - {{ name: alarms, match: {{ type: alarm }}, notify: [{{ channel: hook }}] }}\n  \
         - {{ name: offline, match: {{ type: deviceOffline }}, notify: [{{ channel: broken }}] }}\n",
        dir.path().display(),
        ok.url("/ok"),
        bad.url("/bad")
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    for (body, status) in [
        (with_event_id("alarm_sos.json", 1), 200),
        (with_event_id("alarm_vibration.json", 2), 200),
        (with_event_id("alarm_sos.json", 1), 200), // duplicate
        (with_event_id("deviceOffline.json", 3), 200),
        (with_event_id("deviceOnline.json", 4), 200), // no rule
        ("{".to_string(), 400),
    ] {
        assert_eq!(relay.post(body, &[]).await.0, status);
    }
    ok.wait_for(2, WAIT).await;
    let mut text = String::new();
    for _ in 0..200 {
        text = relay.metrics().await;
        // The outcome is counted when the send ends and recorded in the store just after (in a batch).
        if text.contains("trackrelay_notifications_total{channel=\"broken\",outcome=\"dead\"} 1")
            && text.contains("trackrelay_outbox_deliveries{status=\"dead\"} 1")
            && text.contains("trackrelay_outbox_deliveries{status=\"done\"} 2")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for line in [
        "trackrelay_events_received_total{source=\"traccar\",type=\"alarm\",result=\"accepted\"} 2",
        "trackrelay_events_received_total{source=\"traccar\",type=\"alarm\",result=\"duplicate\"} 1",
        "trackrelay_events_received_total{source=\"traccar\",type=\"deviceOffline\",result=\"accepted\"} 1",
        "trackrelay_events_received_total{source=\"traccar\",type=\"deviceOnline\",result=\"accepted\"} 1",
        "trackrelay_events_received_total{source=\"traccar\",type=\"-\",result=\"invalid\"} 1",
        "trackrelay_rule_matches_total{rule=\"alarms\"} 2",
        "trackrelay_rule_matches_total{rule=\"offline\"} 1",
        "trackrelay_notifications_total{channel=\"hook\",outcome=\"sent\"} 2",
        "trackrelay_notifications_total{channel=\"broken\",outcome=\"dead\"} 1",
        "trackrelay_delivery_latency_seconds_count{channel=\"hook\"} 2",
        "trackrelay_outbox_deliveries{status=\"done\"} 2",
        "trackrelay_outbox_deliveries{status=\"dead\"} 1",
        "trackrelay_outbox_oldest_due_age_seconds 0",
        "trackrelay_build_info{version=\"",
    ] {
        assert!(text.contains(line), "{line}\nmissing in:\n{text}");
    }
    relay.stop().await;
}

fn reload_yaml(dir: &std::path::Path, channels: &str) -> String {
    format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: \"{ADMIN}\" }}\nchannels:\n{channels}rules: [rules/]\n",
        dir.join("data").display()
    )
}

#[tokio::test]
async fn reload_keeps_old_rules_on_error_and_routes_to_new_channels() {
    let dir = tempfile::tempdir().unwrap();
    let a = Sink::start().await;
    let b = Sink::start().await;
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let rules = dir.path().join("rules/r.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - { name: to-a, notify: [{ channel: a }] }\n",
    )
    .unwrap();
    let chan_a = format!("  a: {{ type: webhook, url: \"{}\" }}\n", a.url("/a"));
    let relay = Relay::start(config_in(dir.path(), &reload_yaml(dir.path(), &chan_a))).await;
    relay.post(with_event_id("alarm_sos.json", 1), &[]).await;
    a.wait_for(1, WAIT).await;

    // A broken rule: the reload is refused with the location, and the old rules keep running.
    std::fs::write(&rules, "rules:\n  - { name: to-a, notify: [{ channel: a }] }\n  - { name: bad, match: { where: { device.colour: red } }, notify: [{ channel: a }] }\n").unwrap();
    let (status, err) = relay.admin_post("/-/reload", ADMIN).await;
    assert_eq!(status, 422, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("r.yaml:3: rule 'bad'") && msg.contains("unknown field `device.colour`"),
        "{msg}"
    );
    relay.post(with_event_id("alarm_sos.json", 2), &[]).await;
    a.wait_for(2, WAIT).await;
    let (_, ready) = relay.admin_get("/readyz", "").await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(
        ready["config"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("device.colour"),
        "{ready}"
    );
    let text = relay.metrics().await;
    assert!(
        text.contains("trackrelay_config_reloads_total{result=\"failure\"}"),
        "{text}"
    );
    assert!(
        text.contains("trackrelay_config_last_reload_success 0"),
        "{text}"
    );

    // A new channel and a rule for it: routed without a restart.
    let chan_b = format!(
        "{chan_a}  b: {{ type: webhook, url: \"{}\" }}\n",
        b.url("/b")
    );
    std::fs::write(
        dir.path().join("trackrelay.yaml"),
        reload_yaml(dir.path(), &chan_b),
    )
    .unwrap();
    std::fs::write(
        &rules,
        "rules:\n  - { name: to-b, notify: [{ channel: b }] }\n",
    )
    .unwrap();
    let (status, ok) = relay.admin_post("/-/reload", ADMIN).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(
        (
            ok["loaded"]["rules"].as_u64(),
            ok["loaded"]["channels"].as_u64()
        ),
        (Some(1), Some(2)),
        "{ok}"
    );
    relay.post(with_event_id("alarm_sos.json", 3), &[]).await;
    let got = b.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-trackrelay-event-id"), Some("3"));
    a.assert_stays_at(2, Duration::from_millis(300)).await;
    assert!(relay
        .metrics()
        .await
        .contains("trackrelay_config_last_reload_success 1"));

    // Editing a rule file is enough: the watcher reloads by itself.
    std::fs::write(
        &rules,
        "rules:\n  - { name: to-a-again, notify: [{ channel: a }] }\n",
    )
    .unwrap();
    let mut moved = false;
    for id in 4..200 {
        relay.post(with_event_id("alarm_sos.json", id), &[]).await;
        if a.requests().len() > 2 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "the file change was not picked up");
    relay.stop().await;
}

#[tokio::test]
async fn admin_api_needs_its_token_and_is_off_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let admin = format!("admin: {{ token: \"{ADMIN}\" }}\n");
    let relay = Relay::start(common::hook_config(
        dir.path(),
        &sink.url("/t"),
        "{ type: alarm }",
        &admin,
    ))
    .await;
    for (method, path) in [
        ("GET", "/api/deliveries"),
        ("POST", "/api/deliveries/1/replay"),
        ("POST", "/api/deliveries/replay-dead"),
        ("GET", "/api/rules"),
        ("POST", "/api/explain"),
        ("POST", "/api/channels/hook/test"),
        ("POST", "/-/reload"),
    ] {
        for token in [None, Some("wrong"), Some("admin-s3cre")] {
            let mut req = relay
                .client
                .request(method.parse().unwrap(), relay.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
    // With the token: rules, explain, channel test.
    let (status, rules) = relay.admin_get("/api/rules", ADMIN).await;
    assert_eq!(
        (status, rules["rules"][0]["name"].as_str()),
        (200, Some("a")),
        "{rules}"
    );
    assert_eq!(rules["rules"][0]["severity"], "normal", "the default");
    let resp = relay
        .client
        .post(relay.url("/api/explain"))
        .bearer_auth(ADMIN)
        .body(payload("alarm_sos.json"))
        .send()
        .await
        .unwrap();
    let x: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(x["rules"][0]["verdict"], "match", "{x}");
    assert_eq!(x["notifications"][0]["channel"], "hook", "{x}");
    assert!(sink.requests().is_empty(), "explain must not send");
    let (status, t) = relay.admin_post("/api/channels/hook/test", ADMIN).await;
    assert_eq!((status, &t["ok"]), (200, &serde_json::json!(true)), "{t}");
    assert_eq!(sink.wait_for(1, WAIT).await[0].json()["test"], true);
    let (status, _) = relay.admin_post("/api/channels/nope/test", ADMIN).await;
    assert_eq!(status, 404);
    relay.stop().await;

    // Without an admin token configured the admin API is off.
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(config_in(
        dir.path(),
        &format!("storage: {{ data_dir: \"{}\" }}\n", dir.path().display()),
    ))
    .await;
    let (status, body) = relay.admin_get("/api/deliveries", "anything").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("admin_disabled"))
    );
    let (status, ready) = relay.admin_get("/readyz", "").await;
    assert_eq!(
        (status, &ready["ready"]),
        (200, &serde_json::json!(true)),
        "{ready}"
    );
    relay.stop().await;
}

/// `GET /api/deliveries` filters by rule (the exact name) and pages by id: `before` the last id of a
/// page lists the next; a `before` that is not a number is the JSON 400 of the other numbers.
#[tokio::test]
async fn the_deliveries_listing_filters_by_rule_and_pages_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let admin = format!("admin: {{ token: \"{ADMIN}\" }}\n");
    let relay = Relay::start(common::hook_config(
        dir.path(),
        &sink.url("/t"),
        "{ type: alarm }",
        &admin,
    ))
    .await;
    for id in 1..=3 {
        let (status, _) = relay.post(with_event_id("alarm_sos.json", id), &[]).await;
        assert_eq!(status, 200);
    }
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let (status, all) = relay.admin_get("/api/deliveries?rule=a", ADMIN).await;
    assert_eq!(status, 200, "{all}");
    let all = ids(&all);
    assert_eq!(all.len(), 3);
    let (_, none) = relay.admin_get("/api/deliveries?rule=b", ADMIN).await;
    assert!(ids(&none).is_empty(), "{none}");
    let (_, first) = relay.admin_get("/api/deliveries?limit=2", ADMIN).await;
    assert_eq!(ids(&first), all[..2]);
    let (_, next) = relay
        .admin_get(
            &format!("/api/deliveries?rule=a&limit=2&before={}", all[1]),
            ADMIN,
        )
        .await;
    assert_eq!(ids(&next), all[2..]);
    let (status, bad) = relay.admin_get("/api/deliveries?before=x", ADMIN).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_query"))
    );
    relay.stop().await;
}

/// Secrets reach logs through error messages (URLs carry bot tokens and webhook paths) and through
/// rejected requests. The relay runs as a process with JSON logs at debug level; none may appear.
#[tokio::test]
async fn logs_never_show_secrets() {
    const BOT: &str = "424242:BOT-SECRET-token";
    const HOOK_PATH: &str = "hooks/WEBHOOK-SECRET-path";
    const SMTP_PASSWORD: &str = "SMTP-SECRET-password";
    const INGEST: &str = "Bearer INGEST-SECRET";
    const HMAC: &str = "HMAC-SECRET-key";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let closed = free_port();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: "127.0.0.1:{port}"
storage: {{ data_dir: "{data}" }}
ingest: {{ authorization: "{INGEST}" }}
admin: {{ token: "{ADMIN}" }}
delivery: {{ retry: {{ initial_backoff: 50ms, max_backoff: 100ms, max_attempts: 3 }} }}
channels:
  tg: {{ type: telegram, bot_token: "{BOT}", chat_id: "1", api_url: "http://127.0.0.1:{closed}" }}
  mail: {{ type: email, host: 127.0.0.1, port: {closed}, security: none, username: u, password: "{SMTP_PASSWORD}", from: a@b.c, to: [d@e.f] }}
  hook: {{ type: webhook, url: "http://127.0.0.1:{closed}/{HOOK_PATH}", secret: "{HMAC}" }}
rules: [{{ name: all, notify: [{{ channel: tg }}, {{ channel: mail }}, {{ channel: hook }}] }}]
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("log.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackrelay"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{url}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "relay did not start");
    let post = |auth: &'static str| {
        client
            .post(format!("{url}/events"))
            .header("authorization", auth)
            .body(payload("alarm_sos.json"))
            .send()
    };
    assert_eq!(
        post("Bearer INGEST-SECRET-but-wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(INGEST).await.unwrap().status(), 200);
    // Every delivery fails three times and is dead; then the log is complete.
    let mut dead = 0;
    for _ in 0..200 {
        let r = client
            .get(format!("{url}/api/deliveries?status=dead"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        dead = v["deliveries"].as_array().map_or(0, Vec::len);
        if dead == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 3);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("send failed; moved to dead letter"), "{text}");
    assert!(
        text.contains("\"level\":\"DEBUG\""),
        "debug logging was not on"
    );
    for secret in [
        "BOT-SECRET",
        "WEBHOOK-SECRET",
        "SMTP-SECRET",
        "INGEST-SECRET",
        "HMAC-SECRET",
        ADMIN,
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn sighup_reloads_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = Sink::start().await;
    let b = Sink::start().await;
    let port = free_port();
    let config = dir.path().join("c.yaml");
    let write = |url: String| {
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\nstorage: {{ data_dir: \"{}\" }}\nchannels: {{ hook: {{ type: webhook, url: \"{url}\" }} }}\n\
                 rules: [{{ name: a, notify: [{{ channel: hook }}] }}]\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap()
    };
    write(a.url("/a"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_trackrelay"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    eventually(WAIT, "relay up", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    client
        .post(format!("{url}/events"))
        .body(with_event_id("alarm_sos.json", 1))
        .send()
        .await
        .unwrap();
    a.wait_for(1, WAIT).await;
    // Rewrite the config into another folder's copy? No: same file; the watcher may also see it, SIGHUP
    // makes it certain.
    write(b.url("/b"));
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status();
    let mut moved = false;
    for id in 2..100 {
        client
            .post(format!("{url}/events"))
            .body(with_event_id("alarm_sos.json", id))
            .send()
            .await
            .unwrap();
        if !b.requests().is_empty() {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(moved, "SIGHUP did not reload");
}

#[tokio::test]
async fn a_removed_channel_turns_its_queued_deliveries_into_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let yaml = |with_channel: bool| {
        let (channel, rule) = if with_channel {
            (
                format!("  gone: {{ type: webhook, url: \"http://127.0.0.1:{closed}/x\", retry: {{ initial_backoff: 300ms }} }}\n"),
                "rules: [{ name: r, notify: [{ channel: gone }] }]\n",
            )
        } else {
            (String::new(), "rules: []\n")
        };
        format!(
            "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: \"{ADMIN}\" }}\nchannels:\n  keep: {{ type: log }}\n{channel}{rule}",
            dir.path().join("data").display()
        )
    };
    let relay = Relay::start(config_in(dir.path(), &yaml(true))).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let mut rows = serde_json::Value::Null;
    for _ in 0..100 {
        rows = relay
            .admin_get("/api/deliveries?status=pending", ADMIN)
            .await
            .1;
        if rows["deliveries"][0]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        rows["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{rows}"
    );
    std::fs::write(dir.path().join("trackrelay.yaml"), yaml(false)).unwrap();
    let (status, body) = relay.admin_post("/-/reload", ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let dead = relay.wait_deliveries("dead", 1, ADMIN).await;
    assert_eq!(
        dead[0]["last_error"], "channel 'gone' is no longer configured",
        "{dead:?}"
    );
    relay.stop().await;
}
