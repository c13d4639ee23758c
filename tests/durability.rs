//! Never lose an alarm: kill -9 under load, peers that are down, flood control, permanent failures and
//! replay, an unusable data directory. The relay runs as a real process where a crash is the point.

mod common;
mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config_in, eventually, payload, Relay};
use support::sink::{Mode, Sink};
use support::smtp::{free_port, SmtpServer};
use support::telegram::TelegramStandIn;

const ADMIN: &str = "admin-token";

fn spawn_relay(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_trackrelay"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .expect("relay binary starts")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "relay did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `n` distinct events with `concurrency` in flight; kills the relay with SIGKILL once `kill_after`
/// were acknowledged, restarts it, and goes on. Every acknowledged event must reach the sink, once per
/// idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    // A flaky receiver: about a third of the requests fail with 500, deterministically.
    sink.set_mode(Mode::FailRandom {
        percent: 30,
        seed: 7,
    });
    let port = free_port();
    let config = dir.path().join("trackrelay.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: "127.0.0.1:{port}"
storage: {{ data_dir: "{data}" }}
delivery:
  retry: {{ initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 100 }}
channels:
  hook: {{ type: webhook, url: "{url}" }}
rules:
  - name: alarms
    match: {{ type: alarm }}
    notify: [{{ channel: hook }}]
"#,
            data = dir.path().join("data").display(),
            url = sink.url("/alarm")
        ),
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut child = spawn_relay(&config, &log);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_healthy(&client, port).await;

    const N: i64 = 3000;
    const KILL_AFTER: usize = 1000;
    let template: serde_json::Value =
        serde_json::from_str(&payload("alarm_vibration.json")).unwrap();
    let acked = Arc::new(Mutex::new(HashSet::<i64>::new()));
    let next = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let url = format!("http://127.0.0.1:{port}/events");
    let mut killed = false;
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, acked, next, url, template) = (
            client.clone(),
            acked.clone(),
            next.clone(),
            url.clone(),
            template.clone(),
        );
        posters.spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id > N {
                    break;
                }
                let mut body = template.clone();
                body["event"]["id"] = id.into();
                if let Ok(r) = client.post(&url).json(&body).send().await {
                    if r.status().is_success() {
                        acked.lock().unwrap().insert(id);
                    }
                }
            }
        });
    }
    // Kill mid-run, restart after a short outage; posts during the outage are refused (not acknowledged).
    while !killed {
        if acked.lock().unwrap().len() >= KILL_AFTER {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed = true;
            tokio::time::sleep(Duration::from_millis(300)).await;
            child = spawn_relay(&config, &log);
            wait_healthy(&client, port).await;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    while posters.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > KILL_AFTER,
        "load went on after the restart: {}",
        acked.len()
    );

    let delivered_ids = || -> HashSet<i64> {
        sink.successful()
            .iter()
            .filter_map(|r| r.header("x-trackrelay-event-id")?.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !acked.is_subset(&delivered_ids()) {
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never arrived; log: {}",
            acked.difference(&delivered_ids()).count(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = delivered_ids();
    // Exactly one delivery per event modulo the idempotency key: one key per delivered event.
    assert_eq!(
        sink.distinct_header_values("idempotency-key"),
        delivered.len()
    );
    // Nothing was invented: every delivered event was posted (some unacknowledged ones may have been
    // committed just before the kill, and are rightly delivered too).
    assert!(delivered.iter().all(|id| (1..=N).contains(id)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!std::fs::read_to_string(&log).unwrap().contains("panicked"));
}

fn email_yaml(data: &Path, port: u16, extra: &str) -> String {
    format!(
        r#"
storage: {{ data_dir: "{}" }}
admin: {{ token: "{ADMIN}" }}
channels:
  mail:
    type: email
    host: 127.0.0.1
    port: {port}
    security: none
    from: relay@example.org
    to: [owner@example.org]
    timeout: 2s
    retry: {{ initial_backoff: 100ms, max_backoff: 300ms }}
{extra}
rules:
  - name: mail-all
    notify:
      - channel: mail
        subject: "event {{{{ event.id }}}}"
"#,
        data.display()
    )
}

#[tokio::test]
async fn smtp_down_then_up_delivers_all_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = Relay::start(config_in(dir.path(), &email_yaml(dir.path(), port, ""))).await;
    let mut body: serde_json::Value = serde_json::from_str(&payload("deviceOnline.json")).unwrap();
    for id in 1..=5 {
        body["event"]["id"] = id.into();
        let (status, _) = relay.post(body.to_string(), &[]).await;
        assert_eq!(status, 200);
    }
    // The server is down: the first delivery is retried, the others wait behind it (one mailbox, in
    // order). The first may be caught in flight (mid-attempt), so wait until it has failed twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = relay.admin_get("/api/deliveries", ADMIN).await;
        let rows = list["deliveries"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 5, "{list}");
        assert!(
            rows.iter()
                .all(|r| r["status"] == "pending" || r["status"] == "inflight"),
            "{list}"
        );
        let first = rows.iter().find(|r| r["event_id"] == 1).unwrap();
        let later_untried = rows
            .iter()
            .filter(|r| r["event_id"] != 1)
            .all(|r| r["attempts"] == 0);
        assert!(
            later_untried,
            "a later mail was tried before the first: {list}"
        );
        if first["attempts"].as_u64().unwrap() >= 2
            && first["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("SMTP"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{first}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let smtp = SmtpServer::start_on(port);
    let mails = smtp.wait_for(5, Duration::from_secs(15)).await;
    let subjects: Vec<_> = mails.iter().map(|m| m.subject.clone().unwrap()).collect();
    assert_eq!(
        subjects,
        ["event 1", "event 2", "event 3", "event 4", "event 5"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: HashSet<_> = smtp.mails().iter().map(|m| m.message_id.clone()).collect();
    assert_eq!((smtp.mails().len(), ids.len()), (5, 5));
    relay.stop().await;
}

#[tokio::test]
async fn smtp_permanent_rejection_is_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start();
    smtp.fail_next(1, 550, "mailbox unavailable");
    let relay = Relay::start(config_in(
        dir.path(),
        &email_yaml(dir.path(), smtp.port(), ""),
    ))
    .await;
    relay.post(payload("deviceOnline.json"), &[]).await;
    let dead = relay.wait_deliveries("dead", 1, ADMIN).await;
    let row = &dead[0];
    assert_eq!(row["attempts"], 1, "{dead:?}");
    assert!(
        row["last_error"].as_str().unwrap().contains("550"),
        "{dead:?}"
    );
    assert!(smtp.mails().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn telegram_flood_control_is_waited_out() {
    const TOKEN: &str = "42:flood";
    let tg = TelegramStandIn::start(TOKEN, &["7"]).await;
    tg.fail_next_with_429(1, 2);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ tg: {{ type: telegram, bot_token: \"{TOKEN}\", chat_id: \"7\", api_url: \"{}\" }} }}\n\
         rules: [{{ name: a, notify: [{{ channel: tg }}] }}]\n",
        dir.path().display(),
        tg.base_url()
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let msgs = tg.wait_for_messages(1, Duration::from_secs(15)).await;
    let rejected = tg.rejection_log();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0].status, rejected[0].retry_after),
        (429, Some(2))
    );
    let waited = msgs[0].received_at.duration_since(rejected[0].received_at);
    assert!(
        waited >= Duration::from_secs(2),
        "sent again after {waited:?}, before retry_after"
    );
    relay.stop().await;
}

#[tokio::test]
async fn webhook_400_is_dead_after_one_attempt_and_replay_after_the_fix_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = Sink::start().await;
    wrong.set_mode(Mode::Status(400));
    let right = Sink::start().await;
    let admin = format!("admin: {{ token: \"{ADMIN}\" }}\n");
    let config = |url: String| common::hook_config(dir.path(), &url, "{}", &admin);
    let relay = Relay::start(config(wrong.url("/hook"))).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let rows = relay.wait_deliveries("dead", 1, ADMIN).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["attempts"], 1);
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("400"),
        "{:?}",
        rows[0]
    );
    wrong.assert_stays_at(1, Duration::from_millis(300)).await;
    let id = rows[0]["id"].as_i64().unwrap();
    let key = wrong.requests()[0]
        .header("idempotency-key")
        .unwrap()
        .to_string();
    // Without the admin token the API answers 401.
    assert_eq!(
        relay
            .admin_post(&format!("/api/deliveries/{id}/replay"), "nope")
            .await
            .0,
        401
    );
    relay.stop().await;

    // The operator fixes the URL and restarts; the dead letter is still there and replays to the fix.
    let relay = Relay::start(config(right.url("/hook"))).await;
    let (status, json) = relay
        .admin_post(&format!("/api/deliveries/{id}/replay"), ADMIN)
        .await;
    assert_eq!(
        (status, json["replayed"].as_u64()),
        (200, Some(1)),
        "{json}"
    );
    let got = right.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("idempotency-key"), Some(key.as_str()));
    let (status, _) = relay
        .admin_post("/api/deliveries/999999/replay", ADMIN)
        .await;
    assert_eq!(status, 404);
    relay.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_sends_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_mode(Mode::Delay(Duration::from_millis(700)));
    let relay = Relay::start(common::hook_config(
        dir.path(),
        &sink.url("/slow"),
        "{}",
        "",
    ))
    .await;
    let store = relay.running.as_ref().unwrap().store.clone();
    relay.post(payload("alarm_sos.json"), &[]).await;
    eventually(Duration::from_secs(5), "the send started", || {
        !sink.requests().is_empty()
    })
    .await;
    relay.stop().await; // returns only after the in-flight send finished
    let counts = store.counts().await.unwrap();
    assert_eq!(counts, vec![(trackrelay::store::Status::Done, 1)]);
}

#[test]
fn unusable_data_dir_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for data_dir in [
        "/proc/trackrelay-test/data".to_string(),
        file.display().to_string(),
    ] {
        let config = dir.path().join("c.yaml");
        std::fs::write(
            &config,
            format!("listen: \"127.0.0.1:0\"\nstorage: {{ data_dir: \"{data_dir}\" }}\n"),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_trackrelay"))
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot create the data directory"),
            "{stderr}"
        );
        assert!(stderr.contains(&data_dir), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn errors_never_show_the_bot_token() {
    const TOKEN: &str = "987654:SECRET-bot-token";
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: \"{ADMIN}\" }}\n\
         channels: {{ tg: {{ type: telegram, bot_token: \"{TOKEN}\", chat_id: \"7\", api_url: \"http://127.0.0.1:{}\" }} }}\n\
         rules: [{{ name: a, notify: [{{ channel: tg }}] }}]\n",
        dir.path().display(),
        free_port()
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let mut row = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, list) = relay.admin_get("/api/deliveries", ADMIN).await;
        row = list["deliveries"][0].clone();
        if row["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = row["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error recorded: {row}"));
    assert!(err.contains("connection failed"), "{err}");
    assert!(!err.contains("SECRET"), "the bot token leaked: {err}");
    relay.stop().await;
}
