//! The ntfy and Gotify channels end to end, against stand-ins on loopback that check what the real
//! servers check (`tests/support/ntfy.rs`, `tests/support/gotify.rs`): the shipped theft rule on ntfy,
//! acknowledged by pressing its Acknowledge action; each severity mapped to each service's priority,
//! overrides included; 429 (with `Retry-After`), the daily quota and an outage retried; 4xx
//! dead-lettered; credentials neither stored nor in errors; bad settings refused by `check` with their
//! file and line.

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::{config_in, example_vars, payload, Relay};
use serde_json::Value;
use support::gotify::{gotify_error, GotifyStandIn};
use support::ntfy::{NtfyStandIn, Scripted};
use support::sink::Sink;
use support::smtp::{free_port, SmtpServer};
use support::stored::{contains, stored_bytes};
use support::telegram::TelegramStandIn;

const TG_TOKEN: &str = "123456:TEST-token";
const ADMIN: &str = "admin-s3cret";
const NTFY_TOKEN: &str = "tk_n0t4publ1c4cce55t0ken";
const GOTIFY_TOKEN: &str = "AppT0kenNeverStored";
const WAIT: Duration = Duration::from_secs(15);

/// A relay on a port chosen first, so that its `public_url` can name it.
async fn start_on(mut config: trackrelay::settings::Config, port: u16) -> Relay {
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = trackrelay::app::start(config).await.unwrap();
    Relay {
        addr: running.addr,
        running: Some(running),
        client: reqwest::Client::new(),
    }
}

/// The shipped example (config and rules, copied into `dir`) with an ntfy channel `push` added, and
/// the theft rule sending to it first. Everything else is as shipped.
fn example_with_ntfy(dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(repo.join("trackrelay.example.yaml")).unwrap();
    let push =
        "channels:\n  push:\n    type: ntfy\n    url: \"${NTFY_URL}\"\n    topic: bike-alarms\n\
                \x20   token: \"${NTFY_TOKEN}\"\n";
    assert!(config.contains("\nchannels:\n"));
    std::fs::write(
        dir.join("trackrelay.yaml"),
        config.replacen("\nchannels:\n", &format!("\n{push}"), 1),
    )
    .unwrap();
    std::fs::create_dir(dir.join("rules")).unwrap();
    for f in std::fs::read_dir(repo.join("rules")).unwrap() {
        let f = f.unwrap().path();
        let mut text = std::fs::read_to_string(&f).unwrap();
        if f.ends_with("10-theft.yaml") {
            // The first rule's targets: the theft alarm.
            assert!(text.contains("  - name: theft-alarm\n"));
            text = text.replacen("    notify:\n", "    notify:\n      - channel: push\n", 1);
        }
        std::fs::write(dir.join("rules").join(f.file_name().unwrap()), text).unwrap();
    }
}

#[tokio::test]
async fn the_shipped_theft_rule_on_ntfy_is_acknowledged_by_its_action() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let telegram = TelegramStandIn::start(TG_TOKEN, &["4242"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let ntfy = NtfyStandIn::start().await;
    ntfy.allow_token(NTFY_TOKEN, &["bike-alarms"]);
    let port = free_port();
    let mut vars = example_vars(
        &data,
        TG_TOKEN,
        telegram.base_url(),
        smtp.port(),
        sink.url("/ops"),
    );
    vars.insert("TRACKRELAY_ADMIN_TOKEN", ADMIN.to_string());
    vars.insert("TRACKRELAY_PUBLIC_URL", format!("http://127.0.0.1:{port}/"));
    vars.insert("NTFY_URL", ntfy.url());
    vars.insert("NTFY_TOKEN", NTFY_TOKEN.to_string());
    example_with_ntfy(dir.path());
    let path = dir.path().join("trackrelay.yaml");
    let config =
        trackrelay::settings::Config::load_with_env(Some(&path), &|k| vars.get(k).cloned())
            .unwrap_or_else(|e| panic!("{e}"));
    // The shipped theft rule is critical: ntfy's loudest priority.
    let priority = 5;
    let relay = start_on(config, port).await;

    let auth = [("authorization", "Bearer s3cret")];
    let (status, body) = relay.post(payload("alarm_vibration.json"), &auth).await;
    assert_eq!(status, 200, "{body}");
    let sent = ntfy.wait_published(1, WAIT).await;
    let request = &ntfy.requests()[0];
    assert_eq!(request.path, "/");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {NTFY_TOKEN}").as_str())
    );
    let m = &sent[0];
    assert_eq!(m["topic"], "bike-alarms");
    assert_eq!(m["priority"], priority, "{m}");
    assert!(
        m["title"].as_str().unwrap().contains("Lena's Gazelle"),
        "{m}"
    );
    assert!(m["sequence_id"].as_str().unwrap().starts_with("tr-"), "{m}");
    let map = m["click"].as_str().expect("the map is the click target");
    assert!(map.contains("47.26"), "{map}");
    assert_eq!(m["actions"][0]["action"], "view");
    assert_eq!(m["actions"][0]["label"], "Open map");
    assert_eq!(m["actions"][0]["url"], map);
    let ack = &m["actions"][1];
    assert_eq!(ack["action"], "http");
    assert_eq!(ack["label"], "Acknowledge");
    assert_eq!(ack["method"], "POST");
    assert_eq!(ack["body"], "via=ntfy");
    assert_eq!(
        ack["headers"]["Content-Type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(ack["clear"], true);
    assert!(
        ack["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/ack/")),
        "{ack}"
    );
    assert!(
        !m["message"].as_str().unwrap().contains("/ack/"),
        "the action carries the link, not the text: {m}"
    );
    // The other targets got theirs, with the link in the text.
    telegram.wait_for_messages(1, WAIT).await;
    smtp.wait_for(1, WAIT).await;
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    assert_eq!(list["incidents"][0]["status"], "open", "{list}");

    // The phone presses Acknowledge.
    let (status, page) = ntfy.tap(m, "Acknowledge").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acknowledged."), "{page}");
    let (_, list) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    let incident = &list["incidents"][0];
    assert_eq!(incident["status"], "acknowledged", "{list}");
    assert_eq!(incident["detail"]["via"], "ntfy", "{list}");
    assert!(
        incident["detail"]["by"].as_str().unwrap().contains("push"),
        "the target's label: {list}"
    );
    // Everyone notified is told, the ntfy topic too: quietly, and with nothing to press.
    let sent = ntfy.wait_published(2, WAIT).await;
    let notice = &sent[1];
    assert!(
        notice["message"].as_str().unwrap().contains("via ntfy"),
        "{notice}"
    );
    assert_eq!(notice["priority"], 2, "{notice}");
    assert!(notice.get("actions").is_none(), "{notice}");
    assert_ne!(notice["sequence_id"], m["sequence_id"]);
    // A second press changes nothing.
    let (_, again) = ntfy.tap(m, "Acknowledge").await;
    assert!(again.contains("Already acknowledged"), "{again}");
    relay.stop().await;

    // The token went in a header only: neither the outbox nor its journal holds it.
    let stored = stored_bytes(&data);
    assert!(contains(&stored, "Open map"), "the messages are stored");
    assert!(!contains(&stored, NTFY_TOKEN));
    assert!(!contains(&stored, "bike-alarms"), "nor the topic");
}

/// Four rules of four severities, each sending the same alarm to ntfy and Gotify, titled by rule.
fn severities_config(dir: &Path, ntfy: &str, gotify: &str) -> trackrelay::settings::Config {
    let mut rules = String::new();
    for s in ["critical", "high", "normal", "low"] {
        rules.push_str(&format!(
            "  - {{ name: {s}, severity: {s}, match: {{ type: alarm }}, \
             notify: [{{ channel: push }}, {{ channel: gotify }}] }}\n"
        ));
    }
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {ADMIN} }}\nchannels:\n\
         \x20 push: {{ type: ntfy, url: \"{ntfy}\", topic: alarms, username: lena, password: pw, \
         title: \"{{{{ rule }}}}\", priorities: {{ critical: 4 }}, tags: [bike], markdown: true }}\n\
         \x20 gotify: {{ type: gotify, url: \"{gotify}/\", token: \"{GOTIFY_TOKEN}\", \
         title: \"{{{{ rule }}}}\", markdown: true, priorities: {{ low: 1 }} }}\n\
         rules:\n{rules}",
        dir.display()
    );
    config_in(dir, &yaml)
}

#[tokio::test]
async fn each_severity_maps_to_each_services_priority_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let ntfy = NtfyStandIn::start().await;
    ntfy.allow_user("lena", "pw", &["alarms"]);
    let gotify = GotifyStandIn::start(GOTIFY_TOKEN).await;
    let relay = Relay::start(severities_config(dir.path(), &ntfy.url(), &gotify.url())).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;

    let by_title = |list: Vec<Value>| -> std::collections::BTreeMap<String, Value> {
        list.into_iter()
            .map(|m| (m["title"].as_str().unwrap().to_string(), m))
            .collect()
    };
    let pushed = by_title(ntfy.wait_published(4, WAIT).await);
    let priorities: Vec<(&str, i64)> = pushed
        .iter()
        .map(|(t, m)| (t.as_str(), m["priority"].as_i64().unwrap()))
        .collect();
    // critical overridden to 4; the others ntfy's defaults.
    assert_eq!(
        priorities,
        [("critical", 4), ("high", 4), ("low", 2), ("normal", 3)]
    );
    assert_eq!(pushed["critical"]["tags"], serde_json::json!(["bike"]));
    assert!(ntfy
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Basic bGVuYTpwdw==")));
    assert_eq!(ntfy.requests()[0].json()["markdown"], true);

    gotify.wait_requests(4, WAIT).await;
    let stored = by_title(gotify.messages());
    let priorities: Vec<(&str, i64)> = stored
        .iter()
        .map(|(t, m)| (t.as_str(), m["priority"].as_i64().unwrap()))
        .collect();
    // low overridden to 1; the others Gotify's defaults (never the app's default, 4).
    assert_eq!(
        priorities,
        [("critical", 10), ("high", 8), ("low", 1), ("normal", 5)]
    );
    let critical = &stored["critical"];
    assert_eq!(
        critical["extras"]["client::display"]["contentType"],
        "text/markdown"
    );
    assert!(critical["extras"]["client::notification"]["click"]["url"]
        .as_str()
        .unwrap()
        .contains("47.26"));
    let r = &gotify.requests()[0];
    assert_eq!(r.path, "/message");
    assert_eq!(r.header("x-gotify-key"), Some(GOTIFY_TOKEN));
    assert!(!r.body.contains(GOTIFY_TOKEN));

    // A test message works on both.
    for ch in ["push", "gotify"] {
        let (status, body) = relay
            .admin_post(&format!("/api/channels/{ch}/test"), ADMIN)
            .await;
        assert_eq!((status, &body["ok"]), (200, &Value::Bool(true)), "{body}");
    }
    assert_eq!(ntfy.published()[4]["title"], "trackrelay test");
    assert_eq!(gotify.messages()[4]["title"], "trackrelay test");
    relay.stop().await;
}

/// One rule sending every alarm to ntfy (anyone may publish) and Gotify, retrying fast.
fn retry_config(
    dir: &Path,
    ntfy: &str,
    gotify: &str,
    max_attempts: u32,
) -> trackrelay::settings::Config {
    let retry = format!(
        "retry: {{ initial_backoff: 50ms, max_backoff: 200ms, max_attempts: {max_attempts} }}"
    );
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {ADMIN} }}\nchannels:\n\
         \x20 push: {{ type: ntfy, url: \"{ntfy}\", topic: alarms, token: \"{NTFY_TOKEN}\", {retry} }}\n\
         \x20 gotify: {{ type: gotify, url: \"{gotify}\", token: \"{GOTIFY_TOKEN}\", {retry} }}\n\
         rules: [{{ name: a, match: {{ type: alarm }}, notify: [{{ channel: push }}, {{ channel: gotify }}] }}]\n",
        dir.join("data").display()
    );
    config_in(dir, &yaml)
}

/// The first delivery to `channel` with `status` for which `pred` holds, once there is one.
async fn delivery_where(
    relay: &Relay,
    status: &str,
    channel: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, list) = relay
            .admin_get(&format!("/api/deliveries?status={status}"), ADMIN)
            .await;
        let rows = list["deliveries"].as_array().cloned().unwrap_or_default();
        if let Some(d) = rows
            .into_iter()
            .find(|d| d["channel"] == channel && pred(d))
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such {status} delivery to {channel}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn delivery(relay: &Relay, status: &str, channel: &str) -> Value {
    delivery_where(relay, status, channel, |_| true).await
}

#[tokio::test]
async fn a_429_waits_its_retry_after_and_a_5xx_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ntfy = NtfyStandIn::start().await;
    let gotify = GotifyStandIn::start(GOTIFY_TOKEN).await;
    ntfy.script([Scripted::ntfy_error(
        429,
        42901,
        "limit reached: too many requests, please be nice",
    )
    .retry_after(1)]);
    gotify.script([gotify_error(500, "database error"), gotify_error(503, "")]);
    let relay = Relay::start(retry_config(dir.path(), &ntfy.url(), &gotify.url(), 10)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;

    let r = ntfy.wait_requests(2, WAIT).await;
    assert_eq!((r[0].status, r[1].status), (429, 200));
    let waited = r[1].at - r[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 is honoured (the backoff alone is 50 ms): {waited:?}"
    );
    assert_eq!(
        r[0].json()["sequence_id"],
        r[1].json()["sequence_id"],
        "a retry replaces, not adds"
    );
    let g = gotify.wait_requests(3, WAIT).await;
    assert_eq!(
        g.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    let done = relay.wait_deliveries("done", 2, ADMIN).await;
    assert!(
        done.iter().all(|d| d["attempts"].as_u64() > Some(1)),
        "{done:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_daily_quota_is_retried_and_named_and_4xx_are_dead_letters_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ntfy = NtfyStandIn::start().await;
    let gotify = GotifyStandIn::start("SomeOtherAppToken").await;
    ntfy.script([
        Scripted::ntfy_error(429, 42908, "limit reached: daily message quota reached"),
        Scripted::ntfy_error(429, 42908, "limit reached: daily message quota reached"),
    ]);
    let relay = Relay::start(retry_config(dir.path(), &ntfy.url(), &gotify.url(), 2)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;

    // The quota: tried twice (its retry policy's all), then given up, the reason saying why.
    let dead = delivery(&relay, "dead", "push").await;
    assert_eq!(dead["attempts"], 2, "{dead}");
    let reason = dead["last_error"].as_str().unwrap();
    assert!(
        reason.contains("daily quota") && reason.contains("42908"),
        "{reason}"
    );
    // Gotify does not know the token: dead at once, the reason Gotify's, the token not in it.
    let dead = delivery(&relay, "dead", "gotify").await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    let reason = dead["last_error"].as_str().unwrap();
    assert!(
        reason.contains("401") && reason.contains("valid access token"),
        "{reason}"
    );
    assert!(!reason.contains(GOTIFY_TOKEN));
    assert_eq!(gotify.requests().len(), 1);
    relay.stop().await;

    // ntfy with a token it does not know, and one without access to the topic: dead at once.
    for (allowed, code) in [(&["alarms"][..], "40101"), (&["elsewhere"][..], "40301")] {
        let dir = tempfile::tempdir().unwrap();
        let ntfy = NtfyStandIn::start().await;
        if code == "40101" {
            ntfy.allow_token("tk_another", allowed);
        } else {
            ntfy.allow_token(NTFY_TOKEN, allowed);
        }
        let relay = Relay::start(retry_config(dir.path(), &ntfy.url(), &gotify.url(), 5)).await;
        relay.post(payload("alarm_vibration.json"), &[]).await;
        let dead = delivery(&relay, "dead", "push").await;
        assert_eq!(dead["attempts"], 1, "{dead}");
        let reason = dead["last_error"].as_str().unwrap();
        assert!(reason.contains(code), "{reason}");
        assert!(!reason.contains(NTFY_TOKEN), "{reason}");
        relay.stop().await;
        let stored = stored_bytes(&dir.path().join("data"));
        assert!(contains(&stored, "Lena's Gazelle"), "the message is stored");
        assert!(!contains(&stored, NTFY_TOKEN) && !contains(&stored, GOTIFY_TOKEN));
    }
}

#[tokio::test]
async fn an_outage_is_retried_until_the_server_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let gotify = GotifyStandIn::start(GOTIFY_TOKEN).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let relay = Relay::start(retry_config(dir.path(), &url, &gotify.url(), 100)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;

    // Down: refused, and retried.
    let d = delivery_where(&relay, "pending", "push", |d| {
        d["attempts"].as_u64() >= Some(2)
    })
    .await;
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.starts_with("ntfy: connection failed"), "{reason}");
    // Back: delivered, once.
    let ntfy = NtfyStandIn::start_on(port).await;
    ntfy.wait_published(1, WAIT).await;
    let done = delivery(&relay, "done", "push").await;
    assert!(done["attempts"].as_u64() > Some(2), "{done}");
    ntfy.assert_stays_at(1, Duration::from_millis(500)).await;
    relay.stop().await;
}

#[test]
fn bad_settings_are_refused_by_check_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "channels:\n\
                \x20 no-topic: { type: ntfy, token: tk_x }\n\
                \x20 bad-topic: { type: ntfy, topic: \"alarms/all\" }\n\
                \x20 too-urgent: { type: ntfy, topic: a, priorities: { critical: 6 } }\n\
                \x20 no-token: { type: gotify, url: \"https://g.example\" }\n\
                \x20 gotify-range: { type: gotify, url: \"https://g.example\", token: x, priorities: { low: -1 } }\n\
                rules: []\n";
    std::fs::write(dir.path().join("trackrelay.yaml"), yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trackrelay"))
        .args(["check", "trackrelay.yaml"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expect in [
        "trackrelay.yaml:2: channel 'no-topic': topic is missing",
        "trackrelay.yaml:3: channel 'bad-topic': topic: only letters, digits",
        "trackrelay.yaml:4: channel 'too-urgent': priorities.critical: 6 is out of range (1 to 5)",
        "trackrelay.yaml:5: channel 'no-token': token is missing",
        "trackrelay.yaml:6: channel 'gotify-range': priorities.low: -1 is out of range (0 to 10)",
    ] {
        assert!(stderr.contains(expect), "{expect}\n{stderr}");
    }
    assert!(
        !stderr.contains("alarms/all"),
        "a topic is not quoted: {stderr}"
    );
}

#[tokio::test]
async fn a_digest_is_an_ntfy_message() {
    let dir = tempfile::tempdir().unwrap();
    let ntfy = NtfyStandIn::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels:\n\
         \x20 push: {{ type: ntfy, url: \"{}\", topic: alarms, rate_limit: {{ max: 1, per: 1s, over: digest }} }}\n\
         rules: [{{ name: a, match: {{ type: alarm }}, notify: [{{ channel: push }}] }}]\n",
        dir.path().display(),
        ntfy.url()
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    for id in 1..=3 {
        let alarm = payload("alarm_vibration.json").replace("1937310", &id.to_string());
        relay.post(alarm, &[]).await;
    }
    let sent = ntfy.wait_published(2, WAIT).await;
    let digest = &sent[1];
    assert_eq!(digest["topic"], "alarms");
    assert!(
        digest["title"]
            .as_str()
            .unwrap()
            .contains("2 notifications"),
        "{digest}"
    );
    let text = digest["message"].as_str().unwrap();
    assert_eq!(text.matches("Lena's Gazelle at").count(), 2, "{digest}");
    assert!(
        !text.contains("2 notifications"),
        "the title is not repeated: {text}"
    );
    assert_eq!(digest["priority"], 3);
    relay.stop().await;
}
