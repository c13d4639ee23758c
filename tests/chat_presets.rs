//! The chat presets of the webhook channel (Slack, Mattermost, Discord, Teams Workflows, Google Chat) and
//! the Matrix channel, against loopback stand-ins that check what the real services check: each body's
//! shape, severity as colour, message type and mention, Matrix's transaction ids across retries, rate
//! limits waited out as each service asks, permanent failures dead-lettered at once, digests in the
//! chat's own shape, and bad configurations refused with file and line.

mod common;
mod support;

use std::time::Duration;

use common::{config_in, payload, Relay};
use serde_json::{json, Value};
use support::chat::{Chat, Reply, Service};
use support::matrix::{Matrix, Script};

const ADMIN: &str = "admin-s3cret";
const MX_TOKEN: &str = "syt_matrix_access_token_s3cret";
const ROOM: &str = "!ops:example.org";
const WAIT: Duration = Duration::from_secs(15);

/// The channels: the five presets and Matrix, each with `extra` keys (a retry policy, a timeout).
fn channels(chat: &Chat, mx: &Matrix, extra: &str) -> String {
    let hook = |name: &str, preset: &str, s: Service| {
        format!(
            "  {name}: {{ type: webhook, preset: {preset}, url: \"{}\"{extra} }}\n",
            chat.url(s)
        )
    };
    [
        hook("slack", "slack", Service::Slack),
        hook("mm", "mattermost", Service::Mattermost),
        hook("discord", "discord", Service::Discord),
        hook("teams", "teams", Service::Teams),
        hook("gchat", "googlechat", Service::GoogleChat),
        format!(
            "  mx: {{ type: matrix, homeserver: \"{}\", access_token: {MX_TOKEN}, room: \"{ROOM}\"{extra} }}\n",
            mx.url()
        ),
    ]
    .concat()
}

const ALL: &str =
    "[{ channel: slack }, { channel: mm }, { channel: discord }, { channel: teams }, \
                   { channel: gchat }, { channel: mx }]";

async fn relay(dir: &std::path::Path, chat: &Chat, mx: &Matrix, extra: &str, rules: &str) -> Relay {
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\npublic_url: http://relay.invalid\nadmin: {{ token: {ADMIN} }}\n\
         delivery: {{ retry: {{ initial_backoff: 50ms, max_backoff: 200ms, max_attempts: 4 }} }}\n\
         channels:\n{}rules:\n{rules}",
        dir.display(),
        channels(chat, mx, extra)
    );
    Relay::start(config_in(dir, &yaml)).await
}

/// A theft alarm (critical, with an incident: an acknowledgement link) and a geofence entry (low).
const THEFT_AND_ZONE: &str = "  - name: theft\n    match: { type: alarm }\n    severity: critical\n\
                              \x20   incident: { repeat: 5m }\n    notify: ALL\n\
                              \x20 - name: zone\n    match: { type: geofenceEnter }\n    severity: low\n\
                              \x20   notify: ALL\n";

fn the_post<'a>(posts: &'a [Value], f: impl Fn(&Value) -> bool, what: &str) -> &'a Value {
    posts
        .iter()
        .find(|p| f(p))
        .unwrap_or_else(|| panic!("no {what} among {posts:#?}"))
}

#[tokio::test]
async fn each_preset_posts_the_chats_own_body_coloured_by_severity() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mx) = (Chat::start().await, Matrix::start(MX_TOKEN, &[ROOM]).await);
    let rules = THEFT_AND_ZONE.replace("ALL", ALL);
    let relay = relay(dir.path(), &chat, &mx, "", &rules).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    relay.post(payload("geofenceEnter.json"), &[]).await;
    relay.wait_deliveries("done", 12, ADMIN).await;

    // Slack: the title (and the mention, for critical) as `text`, the message in a coloured attachment,
    // links as <url|label>; `&`, `<`, `>` escaped; answered with a plain-text "ok".
    let slack = chat.wait_posts(Service::Slack, 2, WAIT).await;
    let crit = the_post(
        &slack,
        |p| p["text"].as_str().unwrap().starts_with("<!channel> "),
        "critical Slack post",
    );
    assert_eq!(
        crit["text"], "<!channel> *Alarm: vibration · Lena's Gazelle*",
        "{crit}"
    );
    let a = &crit["attachments"][0];
    assert_eq!(a["color"], "#D0021B");
    let text = a["text"].as_str().unwrap();
    assert!(
        text.contains("|Open map>") && text.contains("<https://www.openstreetmap.org/"),
        "{text}"
    );
    assert!(
        text.contains("<http://relay.invalid/ack/") && text.ends_with("|Acknowledge>"),
        "{text}"
    );
    let low = the_post(
        &slack,
        |p| p["attachments"][0]["color"] == "#9B9B9B",
        "low Slack post",
    );
    assert!(
        low["text"].as_str().unwrap().starts_with('*'),
        "no mention below critical: {low}"
    );
    assert!(chat
        .requests_to(Service::Slack)
        .iter()
        .all(|r| r.status == 200 && r.content_type == "application/json"));

    // Mattermost: Markdown, its own mention.
    let mm = chat.wait_posts(Service::Mattermost, 2, WAIT).await;
    let crit = the_post(
        &mm,
        |p| p["attachments"][0]["color"] == "#D0021B",
        "critical Mattermost post",
    );
    assert_eq!(
        crit["text"],
        "@channel **Alarm: vibration · Lena's Gazelle**"
    );
    assert!(crit["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("[Acknowledge](http://relay.invalid/ack/"));

    // Discord: an embed; only the critical one mentions, and only it may notify; `wait=true`.
    let discord = chat.wait_posts(Service::Discord, 2, WAIT).await;
    let crit = the_post(
        &discord,
        |p| p.get("content").is_some(),
        "critical Discord post",
    );
    assert_eq!(crit["content"], "@everyone");
    assert_eq!(
        crit["allowed_mentions"]["parse"],
        json!(["everyone", "roles", "users"])
    );
    assert_eq!(crit["embeds"][0]["color"], 0xD0021B);
    assert!(crit["embeds"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://www.openstreetmap.org/"));
    let low = the_post(&discord, |p| p.get("content").is_none(), "low Discord post");
    assert_eq!(low["allowed_mentions"], json!({ "parse": [] }));
    assert_eq!(low["embeds"][0]["color"], 0x9B9B9B);
    assert!(chat
        .requests_to(Service::Discord)
        .iter()
        .all(|r| r.query == "wait=true" && r.status == 200));

    // Teams: Adaptive Cards every flow run would post; the critical title red, an Acknowledge button.
    let runs = chat.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.failure.is_none()), "{runs:#?}");
    let card = |r: &support::chat::Run| r.body["attachments"][0]["content"].clone();
    let crit = runs
        .iter()
        .map(card)
        .find(|c| c["body"][0]["color"] == "Attention")
        .expect("a red title");
    let ack = &crit["actions"][1];
    assert_eq!(
        (ack["type"].as_str(), ack["title"].as_str()),
        (Some("Action.OpenUrl"), Some("Acknowledge"))
    );
    assert!(ack["url"]
        .as_str()
        .unwrap()
        .starts_with("http://relay.invalid/ack/"));
    assert!(chat
        .requests_to(Service::Teams)
        .iter()
        .all(|r| r.status == 202));

    // Google Chat: a card, the mention as the text (critical only).
    let g = chat.wait_posts(Service::GoogleChat, 2, WAIT).await;
    let crit = the_post(&g, |p| p.get("text").is_some(), "critical Google Chat post");
    assert_eq!(crit["text"], "<users/all>");
    assert_eq!(
        crit["cardsV2"][0]["card"]["header"]["title"],
        "Alarm: vibration · Lena's Gazelle"
    );
    assert!(g.iter().any(|p| p.get("text").is_none()));

    // Matrix: critical is m.text starting with @room (an intentional room mention), low an m.notice;
    // the HTML escapes the device's name; the room is percent-encoded; the token only in the header.
    let events = mx.events();
    assert_eq!(events.len(), 2);
    let crit = &events
        .iter()
        .find(|e| e.content["msgtype"] == "m.text")
        .expect("an m.text")
        .content;
    assert!(
        crit["body"]
            .as_str()
            .unwrap()
            .starts_with("@room Alarm: vibration\nLena's Gazelle · "),
        "{crit}"
    );
    assert_eq!(crit["m.mentions"], json!({ "room": true }));
    let html = crit["formatted_body"].as_str().unwrap();
    assert!(
        html.starts_with("@room <b>Alarm: vibration</b><br>Lena&#39;s Gazelle · "),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"http://relay.invalid/ack/") && html.contains(">Map</a>"),
        "{html}"
    );
    let low = &events
        .iter()
        .find(|e| e.content["msgtype"] == "m.notice")
        .expect("an m.notice")
        .content;
    assert_eq!(low["m.mentions"], json!({}));
    for r in mx.requests() {
        assert_eq!(r.method, "PUT");
        assert!(
            r.raw_path.starts_with(
                "/_matrix/client/v3/rooms/%21ops%3Aexample.org/send/m.room.message/tr-"
            ),
            "{}",
            r.raw_path
        );
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {MX_TOKEN}").as_str())
        );
    }
    // No secret in what the outbox stored.
    let (_, all) = relay.admin_get("/api/deliveries", ADMIN).await;
    let stored = all.to_string();
    assert!(
        !stored.contains(MX_TOKEN) && !stored.contains(support::chat::SLACK_SECRET),
        "{stored}"
    );
    relay.stop().await;
}

/// The homeserver stores the event but its answer comes after the channel's timeout: the retry sends
/// the same transaction id to the same path, gets the first answer again, and the room has one event.
#[tokio::test]
async fn a_matrix_retry_after_a_lost_answer_posts_once() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mx) = (Chat::start().await, Matrix::start(MX_TOKEN, &[ROOM]).await);
    mx.push(Script::AnswerLate(Duration::from_millis(1500)));
    let rules = "  - name: theft\n    match: { type: alarm }\n    notify: [{ channel: mx }]\n";
    let relay = relay(dir.path(), &chat, &mx, ", timeout: 400ms", rules).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    relay.wait_deliveries("done", 1, ADMIN).await;
    let requests = mx.requests();
    assert!(
        requests.len() >= 2,
        "retried after the timeout: {requests:#?}"
    );
    assert!(requests
        .iter()
        .all(|r| r.raw_path == requests[0].raw_path && r.status == 200));
    let events = mx.events();
    assert_eq!(events.len(), 1, "one event in the room: {events:#?}");
    assert_eq!(events[0].txn, requests[0].txn);
    relay.stop().await;
}

/// The gap between the first two requests of a service.
fn gap(r: &[Duration]) -> Duration {
    r[1] - r[0]
}

/// Each service's 429 is waited out as it asks: Matrix's `Retry-After` first, else its `retry_after_ms`;
/// Discord's decimal `retry_after` in the body; Slack's header; Google Chat's bare 429 by backoff. The
/// policy's own backoff (5 s) would be far longer, so a retry within a second is the service's wait.
#[tokio::test]
async fn rate_limits_are_waited_out_as_each_service_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mx) = (Chat::start().await, Matrix::start(MX_TOKEN, &[ROOM]).await);
    mx.push(Script::LimitExceeded {
        retry_after: None,
        retry_after_ms: Some(300),
    });
    mx.push(Script::LimitExceeded {
        retry_after: Some(1),
        retry_after_ms: Some(10),
    });
    chat.push(Service::Discord, Reply::discord_rate_limited(0.3, None));
    chat.push(
        Service::Slack,
        Reply::text(429, "rate_limited").with("retry-after", 1),
    );
    chat.push(Service::GoogleChat, Reply::google_exhausted());
    let extra = ", retry: { initial_backoff: 5s, max_backoff: 5s }";
    let rules = "  - name: theft\n    match: { type: alarm }\n    notify: [{ channel: slack }, { channel: discord }, { channel: mx }]\n";
    let relay = relay(dir.path(), &chat, &mx, extra, rules).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    relay.wait_deliveries("done", 3, ADMIN).await;

    let at = |s: Service| -> Vec<Duration> {
        let r = chat.requests_to(s);
        r.iter().map(|x| x.at - r[0].at).collect()
    };
    let d = gap(&at(Service::Discord));
    assert!(
        d >= Duration::from_millis(280) && d < Duration::from_secs(2),
        "discord {d:?}"
    );
    let s = gap(&at(Service::Slack));
    assert!(
        s >= Duration::from_millis(950) && s < Duration::from_secs(3),
        "slack {s:?}"
    );
    let m: Vec<_> = mx.requests().iter().map(|r| r.at).collect();
    assert_eq!(m.len(), 3, "{:#?}", mx.requests());
    assert!(m[1] - m[0] >= Duration::from_millis(280) && m[1] - m[0] < Duration::from_secs(2));
    assert!(
        m[2] - m[1] >= Duration::from_millis(950) && m[2] - m[1] < Duration::from_secs(3),
        "header first"
    );
    assert_eq!(mx.events().len(), 1);
    relay.stop().await;

    // Google Chat sends no Retry-After: the channel's own backoff retries it.
    let dir = tempfile::tempdir().unwrap();
    let rules = "  - name: theft\n    match: { type: alarm }\n    notify: [{ channel: gchat }]\n";
    let relay = self::relay(dir.path(), &chat, &mx, "", rules).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    relay.wait_deliveries("done", 1, ADMIN).await;
    let statuses: Vec<u16> = chat
        .requests_to(Service::GoogleChat)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 200]);
    relay.stop().await;
}

/// What no retry mends is dead at once (one attempt), the service's error in the reason; server errors
/// are retried.
#[tokio::test]
async fn permanent_failures_are_dead_at_once_and_server_errors_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mx) = (Chat::start().await, Matrix::start(MX_TOKEN, &[ROOM]).await);
    chat.push(Service::Slack, Reply::text(410, "channel_is_archived"));
    chat.push(Service::Mattermost, Reply::mattermost_disabled());
    mx.push(Script::Forbidden);
    let rules = "  - name: theft\n    match: { type: alarm }\n    notify: [{ channel: slack }, { channel: mm }, { channel: mx },\
                 \x20 { channel: mx, to: \"#ops:example.org\" }, { channel: lost }, { channel: badsig }]\n\
                 \x20 - name: zone\n    match: { type: geofenceEnter }\n    notify: [{ channel: slack }, { channel: mx }]\n";
    let extra_channels = format!(
        "  lost: {{ type: webhook, preset: discord, url: \"{}/api/webhooks/999/x\" }}\n\
         \x20 badsig: {{ type: webhook, preset: teams, url: \"{}\" }}\n",
        chat.base(),
        chat.url(Service::Teams)
            .replace("sig=teamsSig", "sig=forged")
    );
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nadmin: {{ token: {ADMIN} }}\n\
         delivery: {{ retry: {{ initial_backoff: 50ms, max_backoff: 200ms, max_attempts: 4 }} }}\n\
         channels:\n{}{extra_channels}rules:\n{rules}",
        dir.path().display(),
        channels(&chat, &mx, "")
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    let dead = relay.wait_deliveries("dead", 6, ADMIN).await;
    let reason = |channel: &str, recipient: &str| -> String {
        let row = dead
            .iter()
            .find(|r| {
                r["channel"] == channel && r["recipient"].as_str().unwrap().contains(recipient)
            })
            .unwrap_or_else(|| panic!("no dead {channel}: {dead:#?}"));
        assert_eq!(row["attempts"], 1, "{row}");
        row["last_error"].as_str().unwrap().to_string()
    };
    assert!(
        reason("slack", "").contains("410") && reason("slack", "").contains("channel_is_archived")
    );
    assert!(reason("mm", "").contains("501"));
    assert!(reason("mx", "!ops").contains("M_FORBIDDEN"));
    assert!(reason("mx", "#ops").contains("is a room alias"));
    assert!(reason("lost", "").contains("Unknown Webhook"));
    assert!(reason("badsig", "").contains("401"));
    let dead_text = serde_json::to_string(&dead).unwrap();
    assert!(
        !dead_text.contains(MX_TOKEN) && !dead_text.contains("forged"),
        "{dead_text}"
    );

    // Server errors: retried until they pass, and Matrix still stores one event.
    chat.push(Service::Slack, Reply::text(500, "rollup_error"));
    mx.push(Script::ServerError(502));
    let events_before = mx.events().len();
    relay.post(payload("geofenceEnter.json"), &[]).await;
    relay.wait_deliveries("done", 2, ADMIN).await;
    let slack: Vec<u16> = chat
        .requests_to(Service::Slack)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(slack, [410, 500, 200]);
    assert_eq!(mx.events().len(), events_before + 1);
    relay.stop().await;
}

/// A digest goes in the chat's own shape: titled, listing the items, as loud as its rule (critical:
/// red, `m.text`) but without a mention.
#[tokio::test]
async fn digests_are_chat_messages_too() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mx) = (Chat::start().await, Matrix::start(MX_TOKEN, &[ROOM]).await);
    let rules = "  - name: offline\n    match: { type: deviceOffline }\n    severity: critical\n\
                 \x20   group: { wait: 1s, title: \"{{ count }} devices offline\" }\n\
                 \x20   notify: [{ channel: slack }, { channel: teams }, { channel: mx }]\n";
    let relay = relay(dir.path(), &chat, &mx, "", rules).await;
    let mut body: Value = serde_json::from_str(&payload("deviceOffline.json")).unwrap();
    for id in 1..=3 {
        body["event"]["id"] = id.into();
        body["device"]["name"] = format!("bike-{id}").into();
        relay.post(body.to_string(), &[]).await;
    }
    let slack = chat.wait_posts(Service::Slack, 1, WAIT).await;
    assert_eq!(slack[0]["text"], "*3 devices offline*", "{}", slack[0]);
    assert_eq!(
        slack[0]["attachments"][0]["color"], "#D0021B",
        "{}",
        slack[0]
    );
    let listed = slack[0]["attachments"][0]["text"].as_str().unwrap();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("bike-1") && listed.contains("bike-3"),
        "{listed}"
    );
    chat.wait(WAIT, "a Teams digest", |r| {
        r.iter().any(|r| r.service == Some(Service::Teams))
    })
    .await;
    let run = &chat.runs()[0];
    assert!(run.failure.is_none(), "{run:#?}");
    mx.wait(WAIT, "a Matrix digest", |r| !r.is_empty()).await;
    let e = &mx.events()[0].content;
    assert_eq!(e["msgtype"], "m.text");
    assert!(
        e["formatted_body"]
            .as_str()
            .unwrap()
            .starts_with("<b>3 devices offline</b><br>"),
        "{e}"
    );
    relay.stop().await;
}

/// A `body:` still overrides the preset.
#[tokio::test]
async fn a_body_template_overrides_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Chat::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels:\n  slack: {{ type: webhook, preset: slack, url: \"{}\", \
         body: '{{\"text\": {{{{ message }}}}}}' }}\n\
         rules:\n  - name: a\n    match: {{ type: alarm }}\n    notify: [{{ channel: slack }}]\n",
        dir.path().display(),
        chat.url(Service::Slack)
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_vibration.json"), &[]).await;
    let posts = chat.wait_posts(Service::Slack, 1, WAIT).await;
    let keys: Vec<&String> = posts[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"], "{}", posts[0]);
    relay.stop().await;
}

/// Bad settings are refused with the file, the line and the reason.
#[test]
fn bad_chat_and_matrix_settings_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trackrelay.yaml");
    let err = |channel: &str| -> String {
        let yaml = format!(
            "channels:\n  ok: {{ type: log }}\n  c: {channel}\n\
             rules:\n  - name: a\n    notify: [{{ channel: ok }}]\n"
        );
        std::fs::write(&path, yaml).unwrap();
        trackrelay::settings::Config::load_with_env(Some(&path), &|_| None)
            .expect_err("refused")
            .to_string()
    };
    let cases = [
        ("{ type: webhook, url: \"https://h.example/x\", preset: irc }", "preset: `irc` is not one of slack, mattermost, discord, teams, googlechat"),
        ("{ type: webhook, url: \"https://h.example/x\", preset: teams, mention: \"@here\" }", "a Teams card cannot mention"),
        ("{ type: webhook, url: \"https://h.example/x\", mention: \"@here\" }", "only a chat preset"),
        ("{ type: webhook, url: \"https://h.example/x\", preset: slack, content_type: text/plain }", "sends JSON"),
        ("{ type: matrix, homeserver: \"https://m.example\", room: \"!r:m.example\" }", "access_token: required"),
        ("{ type: matrix, homeserver: \"https://m.example\", access_token: \"\", room: \"!r:m.example\" }", "access_token: required"),
        ("{ type: matrix, homeserver: \"https://m.example\", access_token: t, room: \"#ops:m.example\" }", "room: `#ops:m.example` is a room alias"),
        ("{ type: matrix, access_token: t, room: \"!r:m.example\" }", "homeserver: required"),
        ("{ type: matrix, homeserver: \"m.example\", access_token: t, room: \"!r:m.example\" }", "homeserver: not a valid URL"),
    ];
    for (channel, want) in cases {
        let e = err(channel);
        assert!(
            e.contains("trackrelay.yaml:3") && e.contains(want),
            "{channel}: {e}"
        );
    }
    // A Matrix channel without a room: its rules must name one (`to:`). (A rule's `to:` is a template:
    // an alias there is refused when sent, see the permanent-failure test.)
    let yaml =
        "channels:\n  mx: { type: matrix, homeserver: \"https://m.example\", access_token: t }\n\
                rules:\n  - name: a\n    notify: [{ channel: mx }]\n";
    std::fs::write(&path, yaml).unwrap();
    let e = trackrelay::settings::Config::load_with_env(Some(&path), &|_| None)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("trackrelay.yaml:4") && e.contains("no recipient"),
        "{e}"
    );
}
