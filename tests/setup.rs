//! `trackrelay setup traccar` and `trackrelay setup webhook`, run as the binary against the Traccar
//! stand-in (`support::traccar`, which keeps Traccar's write semantics: `PUT` replaces the whole object,
//! a new notification is linked to its creator, an equal permission is stored twice): the dry run
//! changes nothing, `--apply` changes exactly what is missing, a second `--apply` nothing; the key is
//! never printed unless asked; a failure halfway is reported and the next run continues.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use common::{config_in, Relay};
use support::traccar::{web_notification, Traccar};

const TOKEN: &str = "tok-setup-5d1e";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `trackrelay ARGS` (no config from the environment, no terminal, `env` added).
async fn trackrelay(args: &[&str], env: &[(&str, &str)]) -> Run {
    trackrelay_in(Path::new("."), args, env).await
}

/// [`trackrelay`] in the folder `cwd`.
async fn trackrelay_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trackrelay"))
            .args(&args)
            .current_dir(&cwd)
            .env_remove("TRACKRELAY_CONFIG")
            .env_remove("TRACKRELAY_SETUP_TOKEN")
            .env_remove("TRACKRELAY_SETUP_PASSWORD")
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn server() -> Traccar {
    Traccar::start(
        Some(TOKEN),
        Some(("lena@example.org", "pw-setup-9")),
        Duration::from_secs(30),
    )
    .await
}

/// A config with live source `home` on `server` and these rules (YAML list items).
fn traccar_config(dir: &Path, server: &Traccar, rules: &str) -> PathBuf {
    let path = dir.join("trackrelay.yaml");
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ out: {{ type: log }} }}\n\
         traccar:\n  - {{ name: home, url: \"{}\", token: {TOKEN}, timeout: 2s }}\nrules:\n{rules}",
        dir.join("data").display(),
        server.url()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

const RULES: &str = "  - { name: theft, match: { type: alarm, alarm: [movement, tow] }, notify: [{ channel: out }] }
  - { name: offline, match: { type: [deviceOffline, ignitionOn] }, notify: [{ channel: out }] }
";

/// The user's own notifications: deviceOffline by mail only, and a web alarm notification for movement.
fn users_own() -> Vec<Value> {
    let mut mail = web_notification(1, "deviceOffline", None);
    mail["notificators"] = json!("mail");
    vec![mail, web_notification(2, "alarm", Some("movement"))]
}

async fn setup_traccar(config: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["setup", "traccar", "-c", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    trackrelay(&args, &[]).await
}

/// What the relay's own check (`/healthz`, `check --online`) finds missing on the server now.
fn still_missing(config: &Path, server: &Traccar) -> Vec<String> {
    let cfg = trackrelay::settings::Config::load_with_env(Some(config), &|_| None).unwrap();
    let list: Vec<_> = server
        .notifications()
        .into_iter()
        .map(|n| serde_json::from_value(n).unwrap())
        .collect();
    trackrelay::source::traccar::missing_web_notifications(&cfg.traccar[0], &cfg.rules, &list)
}

#[tokio::test]
async fn setup_traccar_creates_exactly_what_is_missing_once_and_leaves_the_users_own_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    server.set_notifications(users_own());
    let config = traccar_config(dir.path(), &server, RULES);
    assert_eq!(
        still_missing(&config, &server),
        ["deviceOffline", "ignitionOn", "alarm:tow"]
    );

    let dry = setup_traccar(&config, &[]).await;
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    for line in [
        "source 'home' (",
        "user lena@example.org (#7), 2 notification(s):",
        "no web notification covers deviceOffline, ignitionOn, alarm:tow",
        "- create web notification `deviceOffline` (always, all devices)",
        "- create web notification `ignitionOn` (always, all devices)",
        "- create web notification `alarm` for alarms tow (always, all devices)",
        "Dry run: nothing was changed. Run again with --apply",
    ] {
        assert!(dry.stdout.contains(line), "{line}\n{}", dry.stdout);
    }
    assert!(server.writes().is_empty(), "{:?}", server.writes());
    assert!(!dry.stdout.contains(TOKEN) && !dry.stderr.contains(TOKEN));

    let run = setup_traccar(&config, &["--apply"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("done: create web notification `deviceOffline` (always, all devices) -> #3 (the server linked it to user #7)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "checked: every event type and alarm the rules match there now has a web notification"
        ),
        "{}",
        run.stdout
    );
    // Three creations and nothing else: Traccar linked each to the user, so no permission was asked.
    let writes: Vec<(String, String)> = server
        .writes()
        .iter()
        .map(|w| (w.method.clone(), w.path.clone()))
        .collect();
    assert_eq!(
        writes,
        vec![("POST".to_string(), "/api/notifications".to_string()); 3]
    );
    assert_eq!(
        server.links(),
        [(7, 1), (7, 2), (7, 3), (7, 4), (7, 5)],
        "one link each"
    );
    let all = server.all_notifications();
    assert_eq!(all[..2], users_own()[..], "the user's own are untouched");
    assert_eq!(
        all[4],
        json!({"id": 5, "type": "alarm", "notificators": "web", "always": true, "calendarId": 0,
               "commandId": 0, "description": null,
               "attributes": {"trackrelay": true, "alarms": "tow"}})
    );
    assert!(still_missing(&config, &server).is_empty());

    // Again: nothing to do, nothing written.
    let again = setup_traccar(&config, &["--apply"]).await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("nothing to change"),
        "{}",
        again.stdout
    );
    assert_eq!(server.writes().len(), 3);
}

#[tokio::test]
async fn setup_traccar_extends_its_own_alarm_notification_when_a_rule_adds_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    server.set_notifications(users_own());
    let config = traccar_config(dir.path(), &server, RULES);
    assert_eq!(setup_traccar(&config, &["--apply"]).await.code, 0);
    let before = server.all_notifications();
    // The user gives the relay's alarm notification a calendar meanwhile: an extension keeps it.
    let mut ours = before[4].clone();
    ours["calendarId"] = json!(4);
    let mut edited = before.clone();
    edited[4] = ours.clone();
    server.set_notifications(edited);
    let more = RULES.replace("[movement, tow]", "[movement, tow, vibration, sos]");
    let config = traccar_config(dir.path(), &server, &more);
    let run = setup_traccar(&config, &["--apply"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("done: add alarms sos, vibration to trackrelay's alarm notification #5"),
        "{}",
        run.stdout
    );
    let last = server.writes().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("PUT", "/api/notifications/5")
    );
    let after = server.all_notifications();
    assert_eq!(after.len(), 5, "no second alarm notification");
    let mut expected = ours;
    expected["attributes"]["alarms"] = json!("tow,sos,vibration");
    assert_eq!(after[4], expected);
    assert_eq!(
        after[1],
        users_own()[1],
        "the user's alarm notification is untouched"
    );
    assert!(still_missing(&config, &server).is_empty());
}

#[tokio::test]
async fn setup_traccar_stopped_halfway_says_what_was_done_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    server.set_notifications(users_own());
    let config = traccar_config(dir.path(), &server, RULES);
    server.fail_write(2, 500);
    let run = setup_traccar(&config, &["--apply"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for line in [
        "done: create web notification `deviceOffline` (always, all devices) -> #3",
        "FAILED: create web notification `ignitionOn` (always, all devices): POST /api/notifications: server answered 500",
        "Stopped halfway. Done (1):\n  - create web notification `deviceOffline`",
        "Not done (2):\n  - create web notification `ignitionOn` (always, all devices)\n  - create web notification `alarm` for alarms tow",
        "Run the same command again: it plans from what the server holds now and continues from there.",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.stdout);
    }
    assert!(
        run.stderr.contains("error: stopped after 1 of 3 change(s)"),
        "{}",
        run.stderr
    );
    assert_eq!(server.all_notifications().len(), 3);
    let rerun = setup_traccar(&config, &["--apply"]).await;
    assert_eq!(rerun.code, 0, "{}{}", rerun.stdout, rerun.stderr);
    assert!(
        !rerun.stdout.contains("`deviceOffline`"),
        "{}",
        rerun.stdout
    );
    assert_eq!(server.all_notifications().len(), 5);
    assert!(still_missing(&config, &server).is_empty());
}

#[tokio::test]
async fn setup_traccar_names_an_unknown_source() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let config = traccar_config(dir.path(), &server, RULES);
    let run = setup_traccar(&config, &["--source", "office"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("error: no live source 'office' (configured: home)"),
        "{}",
        run.stderr
    );
}

// --- setup webhook ------------------------------------------------------------------------------

/// A config for the webhook: its rules match `alarm` (movement) and `deviceOffline` from the webhook;
/// `extra` adds top-level YAML.
fn webhook_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("trackrelay.yaml");
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\n{extra}channels: {{ out: {{ type: log }} }}\nrules:\n\
         \x20 - {{ name: theft, match: {{ type: alarm, alarm: movement }}, notify: [{{ channel: out }}] }}\n\
         \x20 - {{ name: offline, match: {{ type: deviceOffline }}, notify: [{{ channel: out }}] }}\n\
         \x20 - {{ name: office, match: {{ type: ignitionOn, source: office }}, notify: [{{ channel: out }}] }}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn setup_webhook(server: &Traccar, config: &Path, public: &str, extra: &[&str]) -> Run {
    let url = server.url();
    let mut args = vec![
        "setup",
        "webhook",
        "--server",
        &url,
        "--token",
        TOKEN,
        "--public-url",
        public,
        "-c",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    trackrelay(&args, &[]).await
}

/// The key file the command writes by default.
fn key_path(dir: &Path) -> PathBuf {
    dir.join("data/webhook-psk")
}

/// The user with the three webhook attributes removed: what must not change.
fn without_webhook(user: &Value) -> Value {
    let mut u = user.clone();
    for k in ["webhookUrl", "webhookPsk", "webhookTypes"] {
        u["attributes"].as_object_mut().unwrap().remove(k);
    }
    u
}

#[tokio::test]
async fn setup_webhook_sets_the_three_attributes_keeps_the_rest_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let mut user = server.user();
    // An attribute of the account the relay knows nothing of, and stale webhook types.
    user["attributes"]["notificationTokens"] = json!("fcm-abc");
    user["attributes"]["webhookTypes"] = json!("deviceOnline");
    server.set_user(user.clone());
    let config = webhook_config(dir.path(), "");

    let dry = setup_webhook(&server, &config, "https://relay.example.org/", &[]).await;
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    for line in [
        "user lena@example.org (#7):",
        "key file {KEY}: a new key is made and written there (mode 0600)",
        "webhookUrl: (unset) -> https://relay.example.org/events",
        "webhookPsk: (unset) -> a new key",
        "webhookTypes: deviceOnline -> alarm,deviceOffline",
        "Dry run: nothing was changed.",
        "authorization: \"${file:{KEY}}\"",
        "<entry key='event.forward.url'>https://relay.example.org/events</entry>",
        "<entry key='event.forward.header'>Authorization: (the content of {KEY})</entry>",
    ] {
        let line = line.replace("{KEY}", &key_path(dir.path()).display().to_string());
        assert!(dry.stdout.contains(&line), "{line}\n{}", dry.stdout);
    }
    assert!(server.writes().is_empty());
    assert!(!key_path(dir.path()).exists(), "a dry run writes no key");

    let run = setup_webhook(&server, &config, "https://relay.example.org/", &["--apply"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let key = std::fs::read_to_string(key_path(dir.path())).unwrap();
    let key = key.trim_end();
    assert!(
        key.starts_with("Bearer ") && key.len() >= "Bearer ".len() + 32,
        "{key}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let after = server.user();
    assert_eq!(
        after["attributes"]["webhookUrl"],
        "https://relay.example.org/events"
    );
    assert_eq!(after["attributes"]["webhookPsk"], key);
    assert_eq!(after["attributes"]["webhookTypes"], "alarm,deviceOffline");
    assert_eq!(
        without_webhook(&after),
        without_webhook(&user),
        "every other field and attribute kept"
    );
    assert!(
        run.stdout
            .contains("checked: the user holds the three attributes"),
        "{}",
        run.stdout
    );
    // Neither the key nor the token shows anywhere without --show-psk.
    for secret in [key, TOKEN] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{}{}",
            run.stdout,
            run.stderr
        );
    }
    let writes = server.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("PUT", "/api/users/7")
    );

    let again = setup_webhook(
        &server,
        &config,
        "https://relay.example.org/",
        &["--apply", "--show-psk"],
    )
    .await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("key file ") && again.stdout.contains(": reused"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("nothing to change"),
        "{}",
        again.stdout
    );
    assert!(
        again
            .stdout
            .contains("--show-psk: no new key was made by this run"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains(key), "{}", again.stdout);
    assert_eq!(server.writes().len(), 1, "nothing written again");
    assert_eq!(
        std::fs::read_to_string(key_path(dir.path()))
            .unwrap()
            .trim_end(),
        key
    );
}

#[tokio::test]
async fn show_psk_prints_the_new_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let config = webhook_config(dir.path(), "");
    let run = setup_webhook(
        &server,
        &config,
        "https://relay.example.org",
        &["--apply", "--show-psk"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let key = std::fs::read_to_string(key_path(dir.path())).unwrap();
    let key = key.trim_end();
    assert_eq!(run.stdout.matches(key).count(), 1, "{}", run.stdout);
    assert!(!run.stderr.contains(key));
}

#[tokio::test]
async fn a_rule_for_every_type_removes_webhook_types() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let mut user = server.user();
    user["attributes"]["webhookTypes"] = json!("alarm");
    server.set_user(user);
    let path = dir.path().join("trackrelay.yaml");
    std::fs::write(
        &path,
        format!(
            "storage: {{ data_dir: \"{}\" }}\nchannels: {{ out: {{ type: log }} }}\n\
             rules: [{{ name: all, match: {{ device: 12 }}, notify: [{{ channel: out }}] }}]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let run = setup_webhook(&server, &path, "https://relay.example.org", &["--apply"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("webhookTypes: alarm -> (removed: all event types)"),
        "{}",
        run.stdout
    );
    assert!(server.user()["attributes"].get("webhookTypes").is_none());
}

#[tokio::test]
async fn the_config_reading_the_key_file_accepts_the_webhook_and_refuses_other_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    // The key first (the relay's config reads it at start), then the webhook at the relay's address.
    let config = webhook_config(dir.path(), "");
    assert_eq!(
        setup_webhook(&server, &config, "http://127.0.0.1:9", &["--apply"])
            .await
            .code,
        0
    );
    let key_line = format!(
        "ingest: {{ authorization: \"${{file:{}}}\" }}\n",
        key_path(dir.path()).display()
    );
    let yaml = std::fs::read_to_string(webhook_config(dir.path(), &key_line)).unwrap();
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    let public = relay.url("");
    let run = setup_webhook(
        &server,
        &dir.path().join("trackrelay.yaml"),
        &public,
        &["--apply"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("(it does already)"), "{}", run.stdout);
    // Only the URL changed: the key was reused.
    assert_eq!(server.writes().len(), 2);
    assert!(
        run.stdout
            .contains("webhookUrl: http://127.0.0.1:9/events -> "),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("webhookPsk:"), "{}", run.stdout);

    // BikeTrax sends an alarm with the key: accepted. An ignitionOn is not wanted: not sent.
    let alarm = json!({"event": {"id": 7001, "type": "alarm", "deviceId": 12,
        "eventTime": "2026-05-14T06:14:01.000+00:00", "attributes": {"alarm": "movement"}},
        "device": {"id": 12, "name": "Lena's Gazelle", "attributes": {}}});
    assert_eq!(server.webhook(&alarm).await, Some(200));
    let mut ignition = alarm.clone();
    ignition["event"]["type"] = json!("ignitionOn");
    assert_eq!(server.webhook(&ignition).await, None);
    // Without the key, or with another: refused.
    let (status, _) = relay
        .post(alarm.to_string(), &[("content-type", "application/json")])
        .await;
    assert_eq!(status, 401);
    let (status, _) = relay
        .post(
            alarm.to_string(),
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer guess"),
            ],
        )
        .await;
    assert_eq!(status, 401);
    relay.stop().await;
}

#[tokio::test]
async fn setup_webhook_stopped_halfway_keeps_the_key_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let before = server.user();
    let config = webhook_config(dir.path(), "");
    server.fail_path("PUT", "/api/users/7", 500);
    let run = setup_webhook(&server, &config, "https://relay.example.org", &["--apply"]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let key_file = key_path(dir.path()).display().to_string();
    for line in [
        format!("done: write the key to {key_file}"),
        "FAILED: set the webhook attributes of user #7: PUT /api/users/7: server answered 500"
            .to_string(),
        format!("Done (1):\n  - write the key to {key_file}"),
        "Not done (1):\n  - set the webhook attributes of user #7".to_string(),
    ] {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    }
    assert!(
        run.stderr.contains("error: stopped after 1 of 2 change(s)"),
        "{}",
        run.stderr
    );
    assert_eq!(server.user(), before, "the user is unchanged");
    let key = std::fs::read_to_string(key_path(dir.path())).unwrap();
    server.clear_faults();
    let rerun = setup_webhook(&server, &config, "https://relay.example.org", &["--apply"]).await;
    assert_eq!(rerun.code, 0, "{}{}", rerun.stdout, rerun.stderr);
    assert_eq!(
        server.user()["attributes"]["webhookPsk"],
        key.trim_end(),
        "the kept key is used"
    );
}

#[tokio::test]
async fn setup_webhook_logs_in_with_email_and_the_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let config = webhook_config(dir.path(), "");
    let url = server.url();
    let args = [
        "setup",
        "webhook",
        "--server",
        &url,
        "--email",
        "lena@example.org",
        "--public-url",
        "https://relay.example.org",
        "-c",
        config.to_str().unwrap(),
    ];
    let run = trackrelay(&args, &[("TRACKRELAY_SETUP_PASSWORD", "pw-setup-9")]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("pw-setup-9") && !run.stderr.contains("pw-setup-9"));
    // No password and no terminal to ask on: said so.
    let run = trackrelay(&args, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("no password for lena@example.org: set TRACKRELAY_SETUP_PASSWORD"),
        "{}",
        run.stderr
    );
    let run = trackrelay(&args, &[("TRACKRELAY_SETUP_PASSWORD", "wrong-pw")]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("login refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-pw"), "{}", run.stderr);
}

#[tokio::test]
async fn the_config_line_names_the_key_file_so_that_the_config_finds_it_from_its_own_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/trackrelay.yaml"),
        "storage: { data_dir: data }\nchannels: { out: { type: log } }\n\
         rules: [{ name: a, match: { type: alarm }, notify: [{ channel: out }] }]\n",
    )
    .unwrap();
    let url = server.url();
    let args = [
        "setup",
        "webhook",
        "--server",
        &url,
        "--token",
        TOKEN,
        "--public-url",
        "https://relay.example.org",
        "-c",
        "conf/trackrelay.yaml",
        "--apply",
    ];
    let run = trackrelay_in(dir.path(), &args, &[]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let key_file = dir.path().join("conf/data/webhook-psk");
    let line = format!("authorization: \"${{file:{}}}\"", key_file.display());
    assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    // Pasted into the config, it reads the key.
    let config = dir.path().join("conf/trackrelay.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("ingest:\n  {line}\n{text}")).unwrap();
    let cfg = trackrelay::settings::Config::load_with_env(Some(&config), &|_| None).unwrap();
    assert_eq!(
        cfg.ingest.authorization.unwrap().expose(),
        server.user()["attributes"]["webhookPsk"].as_str().unwrap()
    );
}

// --- The stand-in keeps Traccar's write semantics (else the tests above prove little) -----------

/// A logged-in client of the stand-in.
async fn session(server: &Traccar) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/api/session?token={TOKEN}", server.url()))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    (http, cookie.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn the_stand_in_replaces_a_whole_user_on_put_and_refuses_admin_only_changes() {
    let server = server().await;
    let (http, cookie) = session(&server).await;
    let put = |body: Value| {
        http.put(format!("{}/api/users/7", server.url()))
            .header("cookie", &cookie)
            .json(&body)
            .send()
    };
    // A partial object resets deviceLimit (-1 -> 0): only an administrator may.
    let resp = put(json!({"id": 7, "attributes": {"webhookUrl": "x"}}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .starts_with("Administrator access required - SecurityException"));
    // The whole object with one field left out: that field is reset.
    let mut user = server.user();
    user.as_object_mut().unwrap().remove("phone");
    let resp = put(user).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.user()["phone"], Value::Null);
    assert_eq!(server.user()["deviceLimit"], -1);
}

#[tokio::test]
async fn the_stand_in_links_a_new_notification_to_its_creator_and_stores_an_equal_link_twice() {
    let server = server().await;
    server.set_notifications(vec![]);
    let (http, cookie) = session(&server).await;
    let created: Value = http
        .post(format!("{}/api/notifications", server.url()))
        .header("cookie", &cookie)
        .json(&json!({"type": "deviceOffline", "notificators": "web", "always": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    assert_eq!(server.links(), [(7, 1)]);
    assert_eq!(server.notifications().len(), 1);
    let link = || {
        http.post(format!("{}/api/permissions", server.url()))
            .header("cookie", &cookie)
            .json(&json!({"userId": 7, "notificationId": 1}))
            .send()
    };
    assert_eq!(link().await.unwrap().status(), 204);
    assert_eq!(server.links(), [(7, 1), (7, 1)]);
    // Not JSON: refused as Traccar's `@Consumes(APPLICATION_JSON)` does.
    let resp = http
        .post(format!("{}/api/notifications", server.url()))
        .header("cookie", &cookie)
        .body("type=alarm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}
