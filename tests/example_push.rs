//! The shipped example's commented phone-push parts, uncommented exactly as a user would: the `push`
//! (ntfy) and `pushover` channels of `trackrelay.example.yaml` and their targets in
//! `rules/10-theft.yaml`. A theft alarm (severity critical, with an incident) then reaches ntfy at
//! priority 5 with an Acknowledge button and Pushover as an emergency with its callback; acknowledging
//! in the Pushover app acknowledges the incident, and ntfy is told quietly. Real SQLite file, the
//! stand-ins on loopback.

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::{example_vars, payload, uncomment_block, Relay};
use support::ntfy::NtfyStandIn;
use support::pushover::PushoverStandIn;
use support::sink::Sink;
use support::smtp::{free_port, SmtpServer};
use support::telegram::TelegramStandIn;

const TG_TOKEN: &str = "123456:TEST-token";
const APP: &str = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";
const USER: &str = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG";
const NTFY_TOKEN: &str = "tk_example0123456789abcdefghij";
const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(15);

/// The example and its rules copied into `dir` with the push parts uncommented; the Pushover channel
/// pointed at the stand-in (the only line added).
fn shipped_with_push(dir: &Path, pushover_api: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(repo.join("trackrelay.example.yaml")).unwrap();
    let config = uncomment_block(&config, "  # push:");
    let config = uncomment_block(&config, "  # pushover:");
    let config = config.replacen(
        "    type: pushover",
        &format!("    type: pushover\n    api_url: \"{pushover_api}\""),
        1,
    );
    std::fs::write(dir.join("trackrelay.yaml"), config).unwrap();
    std::fs::create_dir(dir.join("rules")).unwrap();
    for f in std::fs::read_dir(repo.join("rules")).unwrap() {
        let f = f.unwrap().path();
        let mut text = std::fs::read_to_string(&f).unwrap();
        if f.ends_with("10-theft.yaml") {
            text = uncomment_block(&text, "      # - channel: push");
        }
        std::fs::write(dir.join("rules").join(f.file_name().unwrap()), text).unwrap();
    }
}

#[tokio::test]
async fn the_shipped_push_targets_ring_and_the_app_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let telegram = TelegramStandIn::start(TG_TOKEN, &["4242"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let ntfy = NtfyStandIn::start().await;
    ntfy.allow_token(NTFY_TOKEN, &["bike-alarms"]);
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let port = free_port();
    let mut vars = example_vars(
        &dir.path().join("data"),
        TG_TOKEN,
        telegram.base_url(),
        smtp.port(),
        sink.url("/ops"),
    );
    for (k, v) in [
        ("TRACKRELAY_ADMIN_TOKEN", ADMIN.to_string()),
        ("TRACKRELAY_PUBLIC_URL", format!("http://127.0.0.1:{port}/")),
        ("NTFY_URL", ntfy.url()),
        ("NTFY_TOPIC", "bike-alarms".to_string()),
        ("NTFY_TOKEN", NTFY_TOKEN.to_string()),
        ("PUSHOVER_APP_TOKEN", APP.to_string()),
        ("PUSHOVER_USER_KEY", USER.to_string()),
    ] {
        vars.insert(k, v);
    }
    shipped_with_push(dir.path(), &po.base_url());
    let path = dir.path().join("trackrelay.yaml");
    let mut config =
        trackrelay::settings::Config::load_with_env(Some(&path), &|k| vars.get(k).cloned())
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.channels.contains_key("push") && config.channels.contains_key("pushover"));
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = trackrelay::app::start(config).await.unwrap();
    let relay = Relay {
        addr: running.addr,
        running: Some(running),
        client: reqwest::Client::new(),
    };

    let auth = [("authorization", "Bearer s3cret")];
    let (status, body) = relay.post(payload("alarm_vibration.json"), &auth).await;
    assert_eq!(status, 200, "{body}");
    // ntfy: the loudest priority and a button that acknowledges.
    let m = ntfy.wait_published(1, WAIT).await.remove(0);
    assert_eq!(
        (m["topic"].as_str(), m["priority"].as_i64()),
        (Some("bike-alarms"), Some(5)),
        "{m}"
    );
    assert_eq!(m["actions"][1]["label"], "Acknowledge", "{m}");
    // Pushover: an emergency that rings until acknowledged, its callback the incident's link.
    let p = po.wait_for_messages(1, WAIT).await.remove(0);
    let f = |k: &str| {
        p.field(k)
            .unwrap_or_else(|| panic!("no {k} in {:?}", p.fields))
    };
    assert_eq!(
        (f("priority"), f("retry"), f("expire")),
        ("2".into(), "60".into(), "3600".into())
    );
    assert!(
        f("callback").starts_with(&format!("http://127.0.0.1:{port}/ack/")),
        "{}",
        f("callback")
    );
    let receipts = po.receipt_ids();
    assert_eq!(receipts.len(), 1);

    // Acknowledged in the Pushover app.
    assert_eq!(po.acknowledge(&receipts[0], "pixel").await, Some(200));
    let (_, list) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    let incident = &list["incidents"][0];
    assert_eq!(incident["status"], "acknowledged", "{list}");
    assert_eq!(incident["detail"]["via"], "pushover", "{list}");
    // The ntfy phone is told, quietly and without buttons.
    let notice = ntfy.wait_published(2, WAIT).await.remove(1);
    assert_eq!(notice["priority"], 2, "{notice}");
    assert!(notice.get("actions").is_none(), "{notice}");
    relay.stop().await;
}

/// The Apprise shorthand: one `url:` instead of the long form, the other keys beside it.
#[tokio::test]
async fn an_apprise_url_is_the_long_form_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ntfy = NtfyStandIn::start().await;
    ntfy.allow_token(NTFY_TOKEN, &["bike-alarms"]);
    let authority = ntfy
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels:\n  push: {{ url: \"ntfy://{NTFY_TOKEN}@{authority}/bike-alarms\", priorities: {{ normal: 4 }} }}\n\
         rules: [{{ name: all, match: {{ type: alarm }}, notify: [{{ channel: push }}] }}]\n",
        dir.path().display()
    );
    let relay = Relay::start(common::config_in(dir.path(), &yaml)).await;
    let (status, body) = relay.post(payload("alarm_vibration.json"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let m = ntfy.wait_published(1, WAIT).await.remove(0);
    assert_eq!(
        (m["topic"].as_str(), m["priority"].as_i64()),
        (Some("bike-alarms"), Some(4)),
        "{m}"
    );
    let request = &ntfy.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {NTFY_TOKEN}").as_str())
    );
    relay.stop().await;
}
