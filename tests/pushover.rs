//! The `pushover` channel end to end, on the real pipeline with a real SQLite file and the Pushover
//! stand-in on loopback: a critical rule with an incident sends an emergency whose acknowledgement in
//! the app acknowledges the incident, through its callback (`public_url` set) or by polling its
//! receipt (none); an incident acknowledged elsewhere cancels the ringing; severities map to
//! priorities; failures are classified as Pushover asks; the app token and user key are never
//! stored; bad settings are refused by `check` with file and line. The relay's clock is moved
//! forward with `trackrelay::clock::advance` (process-wide: the tests take turns).

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::{config_in, payload, Relay};
use support::pushover::PushoverStandIn;
use support::smtp::free_port;
use support::stored::{contains, stored_bytes};
use support::telegram::TelegramStandIn;
use trackrelay::clock;

const APP: &str = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";
const USER: &str = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG";
/// A key of the right shape that the stand-in does not know.
const STRANGER: &str = "gznej3rKEVAvPUxu9vvNnqpmZpokzF";
const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(10);

/// The clock is the process's: one test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config with the channel `push` at the stand-in (and `more` channels), the `rules`, and
/// `public_url` when given.
fn config(
    dir: &Path,
    po: &PushoverStandIn,
    public_url: Option<u16>,
    more: &str,
    rules: &str,
) -> String {
    let public = public_url.map_or_else(String::new, |p| {
        format!("public_url: http://127.0.0.1:{p}/\n")
    });
    format!(
        "storage: {{ data_dir: \"{dir}\" }}\n{public}admin: {{ token: {ADMIN} }}\nchannels:\n\
         \x20 push:\n    type: pushover\n    token: {APP}\n    user: {USER}\n    api_url: \"{base}\"\n\
         \x20   retry: {{ initial_backoff: 50ms, max_backoff: 200ms, max_retry_after: 300ms }}\n{more}\
         rules:\n{rules}",
        dir = dir.display(),
        base = po.base_url(),
    )
}

/// The theft rule: critical, with an incident, to `push`.
const THEFT: &str = "  - name: theft\n    severity: critical\n    match: { type: alarm }\n\
                     \x20   incident: { repeat: 30m }\n    notify: [{ channel: push }]\n";

/// A relay on `port` (its `public_url` names it).
async fn start_on(config: trackrelay::settings::Config, port: u16) -> Relay {
    let mut config = config;
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = trackrelay::app::start(config).await.unwrap();
    Relay {
        addr: running.addr,
        running: Some(running),
        client: reqwest::Client::new(),
    }
}

/// The only incident, as the admin API shows it.
async fn incident(relay: &Relay) -> serde_json::Value {
    let (_, list) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    let all = list["incidents"].as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 1, "{list}");
    let id = all[0]["id"].as_i64().unwrap();
    relay
        .admin_get(&format!("/api/incidents/{id}"), ADMIN)
        .await
        .1
}

/// Waits until the only incident is `status`; returns it.
async fn incident_becomes(relay: &Relay, status: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let i = incident(relay).await;
        if i["status"] == status {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {status}: {i}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The receipt the stand-in gave the only emergency.
fn only_receipt(po: &PushoverStandIn) -> String {
    let receipts = po.receipt_ids();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    receipts[0].clone()
}

/// The active followed-up messages (delivery id, peer ref) in the store.
async fn active(relay: &Relay) -> Vec<(i64, String)> {
    let store = &relay.running.as_ref().unwrap().store;
    store
        .active_peer_messages(&["push", "old", "tg"].map(String::from), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.delivery_id, m.peer_ref))
        .collect()
}

/// Waits until the store keeps `receipt` as its emergency's peer ref (recorded just after the send).
async fn kept(relay: &Relay, receipt: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !active(relay).await.iter().any(|(_, r)| r == receipt) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receipt is not kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no followed-up message is active (the emergency stopped ringing, and is left alone).
async fn made_final(relay: &Relay) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !active(relay).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message is still followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_emergency_acknowledged_in_the_app_acknowledges_the_incident_through_its_callback() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let port = free_port();
    let yaml = config(dir.path(), &po, Some(port), "", THEFT);
    let relay = start_on(config_in(dir.path(), &yaml), port).await;

    relay.post(payload("alarm_vibration.json"), &[]).await;
    let m = po.wait_for_messages(1, WAIT).await.remove(0);
    let f = |k: &str| {
        m.field(k)
            .unwrap_or_else(|| panic!("no {k} in {:?}", m.fields))
    };
    assert_eq!((f("token"), f("user")), (APP.to_string(), USER.to_string()));
    assert_eq!(
        (f("priority"), f("retry"), f("expire")),
        ("2".into(), "60".into(), "3600".into())
    );
    let callback = f("callback");
    assert!(
        callback.starts_with(&format!("http://127.0.0.1:{port}/ack/")),
        "{callback}"
    );
    assert!(f("tags").starts_with("tr-"), "{}", f("tags"));
    assert_eq!((f("html"), f("url_title")), ("1".into(), "Map".into()));
    assert!(f("url").starts_with("https://www.openstreetmap.org/?mlat=47.262195"));
    assert!(f("title").starts_with("Alarm: vibration"), "{}", f("title"));
    // The app's own Acknowledge button takes the link's place.
    assert!(!f("message").contains("/ack/"), "{}", f("message"));
    let receipt = only_receipt(&po);
    kept(&relay, &receipt).await;
    assert_eq!(incident(&relay).await["status"], "open");

    // Pressed in the app: Pushover posts its form to the callback.
    assert_eq!(po.acknowledge(&receipt, "iphone").await, Some(200));
    let i = incident_becomes(&relay, "acknowledged").await;
    let detail = i["detail"].to_string();
    assert!(
        detail.contains("Pushover, iphone (push)") && detail.contains("pushover"),
        "{detail}"
    );
    // Its message is left alone from then on; a callback's emergency was not polled meanwhile.
    made_final(&relay).await;
    assert!(po
        .requests_to(&format!("/1/receipts/{receipt}.json"))
        .is_empty());
    relay.stop().await;
    let bytes = stored_bytes(dir.path());
    assert!(contains(&bytes, "callback"), "the stored message is there");
    assert!(
        !contains(&bytes, APP) && !contains(&bytes, USER),
        "a secret was stored"
    );
}

#[tokio::test]
async fn without_public_url_the_receipt_is_polled_and_telegram_leaves_it_alone() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    // A two-way bot runs its own follow-up over the same stored messages.
    let tg = TelegramStandIn::start("123456:TEST-token", &["4242"]).await;
    let bot = format!(
        "  tg:\n    type: telegram\n    bot_token: \"123456:TEST-token\"\n    chat_id: 4242\n\
         \x20   api_url: \"{}\"\n    two_way: {{ poll_timeout: 1s, lease: 6s }}\n",
        tg.base_url()
    );
    let yaml = config(dir.path(), &po, None, &bot, THEFT);
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;

    relay.post(payload("alarm_vibration.json"), &[]).await;
    let m = po.wait_for_messages(1, WAIT).await.remove(0);
    assert_eq!(m.field("priority").as_deref(), Some("2"));
    assert_eq!(m.field("callback"), None, "no public_url, no callback");
    let receipt = only_receipt(&po);
    let poll_path = format!("/1/receipts/{receipt}.json");

    // Nobody acknowledges in the first instant: no poll before `emergency.poll` (15 s), and the
    // Telegram follow-up, which passes every second, does not take the receipt for one of its own.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(po.requests_to(&poll_path).is_empty());
    assert_eq!(
        active(&relay).await.len(),
        1,
        "the receipt is still followed"
    );
    po.acknowledge(&receipt, "pixel").await;
    assert_eq!(incident(&relay).await["status"], "open");

    clock::advance(16_000);
    let i = incident_becomes(&relay, "acknowledged").await;
    assert!(
        i["detail"].to_string().contains("Pushover, pixel (push)"),
        "{i}"
    );
    let polls = po.requests_to(&poll_path);
    assert_eq!(polls.len(), 1, "{polls:?}");
    assert!(
        polls[0].query.as_deref() == Some(&format!("token={APP}") as &str),
        "{:?}",
        polls[0].query
    );
    made_final(&relay).await;
    // Acknowledged there: nothing to cancel, nothing more to ask.
    clock::advance(60_000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(po.requests_to(&poll_path).len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn acknowledged_elsewhere_the_ringing_is_cancelled() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let yaml = config(dir.path(), &po, None, "", THEFT);
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;

    relay.post(payload("alarm_vibration.json"), &[]).await;
    let m = po.wait_for_messages(1, WAIT).await.remove(0);
    let receipt = only_receipt(&po);
    let id = incident(&relay).await["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!po.receipt(&receipt).unwrap().cancelled);

    let (status, _) = relay
        .admin_post(&format!("/api/incidents/{id}/ack"), ADMIN)
        .await;
    assert_eq!(status, 200);
    po.wait(WAIT, "the emergency cancelled", || {
        po.receipt(&receipt).unwrap().cancelled.then_some(())
    })
    .await;
    // By its tag: the delivery's key, so a copy sent twice (a timeout) stops ringing too.
    let tag = m.field("tags").unwrap();
    let cancels = po.requests_to(&format!("/1/receipts/cancel_by_tag/{tag}.json"));
    assert_eq!(cancels.len(), 1, "{:?}", po.requests());
    assert_eq!(cancels[0].field("token").as_deref(), Some(APP));
    made_final(&relay).await;
    assert!(
        po.requests_to(&format!("/1/receipts/{receipt}.json"))
            .is_empty(),
        "not polled"
    );
    relay.stop().await;
}

#[tokio::test]
async fn after_a_restart_a_removed_channels_emergency_and_one_long_expired_are_left_alone() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let old = format!(
        "  old:\n    type: pushover\n    token: {APP}\n    user: {USER}\n    api_url: \"{}\"\n",
        po.base_url()
    );
    let rule = |to: &str| {
        format!(
            "  - name: theft\n    severity: critical\n    match: {{ type: alarm }}\n\
             \x20   incident: {{}}\n    notify: [{to}]\n"
        )
    };
    let both = rule("{ channel: push }, { channel: old }");
    let yaml = config(dir.path(), &po, None, &old, &both);
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    po.wait_for_messages(2, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while active(&relay).await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "receipts not kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop().await;

    // A day and more later, started again without `old`: its emergency can no longer be asked
    // about (no token), and `push`'s stopped ringing long ago (what the last run saw of it is
    // gone). Both are made final, and Pushover is not asked.
    clock::advance(26 * 3_600_000);
    let yaml = config(dir.path(), &po, None, "", &rule("{ channel: push }"));
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    made_final(&relay).await;
    let asked: Vec<String> = po
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with("/1/receipts/"))
        .collect();
    assert!(asked.is_empty(), "{asked:?}");
    relay.stop().await;
}

#[tokio::test]
async fn severities_map_to_priorities_with_overrides() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let more = format!(
        "  loud:\n    type: pushover\n    token: {APP}\n    user: {USER}\n    api_url: \"{}\"\n\
         \x20   priorities: {{ normal: 1, low: -2 }}\n",
        po.base_url()
    );
    let rule = |name: &str, severity: &str, channel: &str| {
        format!(
            "  - name: {name}-{channel}\n    severity: {severity}\n    match: {{ type: alarm }}\n\
             \x20   notify: [{{ channel: {channel}, template: \"{name}-{channel}\" }}]\n"
        )
    };
    let rules = [
        rule("critical", "critical", "push"),
        rule("high", "high", "push"),
        rule("normal", "normal", "push"),
        rule("low", "low", "push"),
        rule("normal", "normal", "loud"),
        rule("low", "low", "loud"),
    ]
    .concat();
    let yaml = config(dir.path(), &po, None, &more, &rules);
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    let msgs = po.wait_for_messages(6, WAIT).await;
    let mut got: Vec<(String, String)> = msgs
        .iter()
        .map(|m| (m.field("message").unwrap(), m.field("priority").unwrap()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        // Critical without an incident: nobody could acknowledge an emergency, so it is high.
        ("critical-push", "1"),
        ("high-push", "1"),
        ("low-loud", "-2"),
        ("low-push", "-1"),
        ("normal-loud", "1"),
        ("normal-push", "0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(msgs.iter().all(|m| m.field("retry").is_none()));
    assert!(po.receipt_ids().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn outages_and_the_quota_are_retried_refusals_are_dead_and_no_secret_shows() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let po = PushoverStandIn::start(APP, &[USER]).await;
    let more = format!(
        "  stranger:\n    type: pushover\n    token: {APP}\n    user: {STRANGER}\n    api_url: \"{}\"\n",
        po.base_url()
    );
    let rules = "  - name: ok\n    match: { type: alarm }\n    notify: [{ channel: push }]\n\
                 \x20 - name: refused\n    match: { type: deviceOverspeed }\n    notify: [{ channel: stranger }]\n";
    let yaml = config(dir.path(), &po, None, &more, rules);
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;

    // Two 500s, then accepted.
    po.script(500, "Internal Server Error");
    po.script(503, "");
    relay.post(payload("alarm_vibration.json"), &[]).await;
    po.wait_for_messages(1, WAIT).await;
    let sent = relay.wait_deliveries("done", 1, ADMIN).await;
    assert_eq!(sent[0]["attempts"], 3, "{sent:?}");

    // The month's quota used up: 429, retried once it resets.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    po.set_quota(0, now + 2);
    relay
        .post(
            payload("alarm_vibration.json").replace("1937310", "1937311"),
            &[],
        )
        .await;
    po.wait(WAIT, "a 429", || {
        po.requests().iter().any(|r| r.status == 429).then_some(())
    })
    .await;
    // The relay records the answer just after the stand-in gave it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, list) = relay.admin_get("/api/deliveries", ADMIN).await;
        let list = list.to_string();
        if list.contains("monthly message limit is reached") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    po.set_quota(100, now + 86_400);
    po.wait_for_messages(2, WAIT).await;

    // A user key Pushover does not know: refused, dead at once, with Pushover's words.
    let overspeed = payload("alarm_vibration.json")
        .replace("1937310", "1937312")
        .replace("\"type\": \"alarm\"", "\"type\": \"deviceOverspeed\"");
    relay.post(overspeed, &[]).await;
    let dead = relay.wait_deliveries("dead", 1, ADMIN).await;
    let reason = dead[0].to_string();
    assert!(
        reason.contains("Pushover: HTTP 400 Bad Request: user identifier is not a valid user"),
        "{reason}"
    );
    assert_eq!(dead[0]["attempts"], 1);
    assert_eq!(
        po.requests().iter().filter(|r| r.status == 400).count(),
        1,
        "not repeated"
    );

    let (_, all) = relay.admin_get("/api/deliveries", ADMIN).await;
    let all = all.to_string();
    for secret in [APP, USER, STRANGER] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    relay.stop().await;
    let bytes = stored_bytes(dir.path());
    assert!(
        contains(&bytes, "user identifier"),
        "the stored reason is there"
    );
    for secret in [APP, USER, STRANGER] {
        assert!(!contains(&bytes, secret), "{secret} stored");
    }
}

#[test]
fn bad_settings_are_refused_by_check_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trackrelay.yaml"),
        format!(
            "channels:\n  ok: {{ type: pushover, token: {APP}, user: {USER} }}\n\
             \x20 short: {{ type: pushover, token: abc123, user: {USER} }}\n\
             \x20 long: {{ type: pushover, token: {APP}, user: {USER}, emergency: {{ expire: 4h }} }}\n\
             \x20 fast: {{ type: pushover, token: {APP}, user: {USER}, emergency: {{ retry: 10s }} }}\n\
             \x20 loud: {{ type: pushover, token: {APP}, user: {USER}, priorities: {{ critical: 3 }} }}\n\
             rules:\n  - name: r\n    match: {{ type: alarm }}\n    notify: [{{ channel: ok }}]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trackrelay"))
        .args(["check", "trackrelay.yaml"])
        .current_dir(dir.path())
        .env_remove("TRACKRELAY_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "trackrelay.yaml:3: channel 'short': token: a Pushover application token is 30 letters and digits",
        "trackrelay.yaml:4: channel 'long': emergency.expire: 4h is too long",
        "trackrelay.yaml:5: channel 'fast': emergency.retry: 10s is too short",
        "trackrelay.yaml:6: channel 'loud': priorities.critical: 3 is out of range (-2 to 2)",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("abc123") && !stderr.contains(APP),
        "{stderr}"
    );
}
