//! Two-way Telegram end to end: every command of the bot and every refusal, on a real relay with a real
//! SQLite file and the Telegram stand-in. Five devices of three chats: Lena's two bikes and her helmet
//! tag go to her private chat, Max's bike to his, the club's tandem to a group; each device's
//! `telegramChatId` attribute routes its alarms, and so decides which chat may ask about it.

mod common;
mod support;

use std::time::Duration;

use common::{config_in, eventually, Relay};
use serde_json::{json, Value};
use support::telegram::{SentMessage, TelegramStandIn, TgUser};

const TOKEN: &str = "123456:TEST-token";
const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for the poller to have handled an update that would get an answer.
const QUIET: Duration = Duration::from_millis(400);

const LENA: i64 = 4242;
const MAX: i64 = 5151;
const CLUB: i64 = -1_001_234_567_890;

/// A tracker and the chat its alarms go to.
struct Dev {
    id: i64,
    name: &'static str,
    chat: i64,
}

const GAZELLE: Dev = Dev {
    id: 12,
    name: "Lena's Gazelle",
    chat: LENA,
};
const BROMPTON: Dev = Dev {
    id: 13,
    name: "Max's Brompton",
    chat: MAX,
};
const CARGO: Dev = Dev {
    id: 14,
    name: "Lena's Cargo",
    chat: LENA,
};
const TANDEM: Dev = Dev {
    id: 15,
    name: "Club tandem",
    chat: CLUB,
};
const TAG: Dev = Dev {
    id: 16,
    name: "Helmet tag",
    chat: LENA,
};

fn lena() -> TgUser {
    TgUser::new(LENA, "Lena", Some("lena"))
}

fn max() -> TgUser {
    TgUser::new(MAX, "Max", None)
}

/// A member of the club's group.
fn anna() -> TgUser {
    TgUser::new(777, "Anna", Some("anna"))
}

/// One Telegram channel, two-way, sending to the chat the device names; `theft` (a vibration alarm)
/// opens an incident, `sos` just notifies.
fn config(dir: &std::path::Path, api_url: &str) -> trackrelay::settings::Config {
    let yaml = format!(
        "storage: {{ data_dir: \"{dir}\" }}\nadmin: {{ token: {ADMIN} }}\n\
         channels:\n  phone:\n    type: telegram\n    bot_token: \"{TOKEN}\"\n    api_url: \"{api_url}\"\n\
         \x20   parse_mode: plain\n    two_way: {{ poll_timeout: 1s, lease: 6s }}\n\
         rules:\n  - name: theft\n    match: {{ type: alarm, alarm: vibration }}\n\
         \x20   incident: {{ key: \"theft-{{{{ device.id }}}}\", resolve_after: 2h }}\n\
         \x20   notify: [{{ channel: phone, to: \"{{{{ device.attributes.telegramChatId }}}}\" }}]\n\
         \x20 - name: sos\n    match: {{ type: alarm, alarm: sos }}\n\
         \x20   notify: [{{ channel: phone, to: \"{{{{ device.attributes.telegramChatId }}}}\" }}]\n",
        dir = dir.display(),
    );
    config_in(dir, &yaml)
}

/// A Traccar event of `dev`: an `alarm` of that kind, else a `deviceMoving`; with a position
/// (`lat`, `lon`, knots, fixed `age_s` ago) when given.
fn event(id: i64, dev: &Dev, alarm: Option<&str>, at: Option<(f64, f64, f64, i64)>) -> String {
    let now = chrono::Utc::now();
    let (kind, attrs) = match alarm {
        Some(a) => ("alarm", json!({ "alarm": a })),
        None => ("deviceMoving", json!({})),
    };
    let mut e = json!({
        "event": { "id": id, "type": kind, "deviceId": dev.id, "eventTime": now.to_rfc3339(),
                   "attributes": attrs, "positionId": if at.is_some() { id } else { 0 } },
        "device": { "id": dev.id, "name": dev.name, "status": "online",
                    "attributes": { "telegramChatId": dev.chat.to_string() } },
    });
    if let Some((lat, lon, knots, age_s)) = at {
        let fix = (now - chrono::Duration::seconds(age_s)).to_rfc3339();
        e["position"] = json!({ "id": id, "deviceId": dev.id, "valid": true, "latitude": lat,
            "longitude": lon, "speed": knots, "course": 0.0, "fixTime": fix, "deviceTime": fix,
            "serverTime": now.to_rfc3339(), "attributes": {} });
    }
    e.to_string()
}

/// A relay on [`config`] with its stand-in.
struct Bench {
    dir: tempfile::TempDir,
    tg: TelegramStandIn,
    relay: Relay,
}

impl Bench {
    async fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let chats = [LENA, MAX, CLUB].map(|c| c.to_string());
        let chats: Vec<&str> = chats.iter().map(String::as_str).collect();
        let tg = TelegramStandIn::start(TOKEN, &chats).await;
        let relay = Relay::start(config(dir.path(), &tg.base_url())).await;
        Bench { dir, tg, relay }
    }

    async fn post(&self, body: String) {
        let (status, answer) = self.relay.post(body, &[]).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Posts alarm `id` of `dev` (which opens its incident) and returns the message with buttons it
    /// sent, once the relay has recorded that message (what the bot reads to find an incident's chat
    /// and device: a person presses a button later than a test can).
    async fn alarm(&self, id: i64, dev: &Dev) -> SentMessage {
        let before = self.tg.messages().len();
        self.post(event(
            id,
            dev,
            Some("vibration"),
            Some((47.26, 11.41, 0.0, 60)),
        ))
        .await;
        let msg = self.tg.wait_for_messages(before + 1, WAIT).await[before].clone();
        assert_eq!(msg.chat_id, dev.chat.to_string(), "{msg:?}");
        assert!(
            msg.reply_markup.is_some(),
            "an incident message has buttons"
        );
        let store = &self.relay.running.as_ref().unwrap().store;
        let key = format!("theft-{}", dev.id);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let incident = store.live_incident(&key).await.unwrap().expect("opened");
            if !store.peer_messages(incident.id).await.unwrap().is_empty() {
                return msg;
            }
            assert!(tokio::time::Instant::now() < deadline, "never recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `user` says `text` in `chat`; returns the first `n` messages the bot sends after it.
    async fn say(&self, chat: i64, user: &TgUser, text: &str, n: usize) -> Vec<SentMessage> {
        let before = self.tg.messages().len();
        self.tg
            .user_sends(chat, user, text)
            .expect("messages are polled");
        let all = self.tg.wait_for_messages(before + n, WAIT).await;
        all[before..before + n].to_vec()
    }

    /// The text of the one reply to `text`, checked to go to `chat`.
    async fn reply(&self, chat: i64, user: &TgUser, text: &str) -> String {
        let m = self.say(chat, user, text, 1).await.remove(0);
        assert_eq!(m.chat_id, chat.to_string(), "{m:?}");
        m.text.unwrap_or_default()
    }

    /// Injects a callback query with `data` on message `message_id`; returns the answer's text.
    async fn press(&self, message_id: i64, user: &TgUser, data: &str) -> String {
        let before = self.tg.callback_answers().len();
        let id = self.tg.inject_callback_query(message_id, user, data);
        let answers = self.tg.wait_for_callback_answers(before + 1, WAIT).await;
        assert_eq!(answers[before].callback_query_id, id);
        answers[before].text.clone().unwrap_or_default()
    }

    /// Every silence in the store, expired ones included.
    async fn silences(&self) -> Vec<trackrelay::noise::silence::Silence> {
        self.relay
            .running
            .as_ref()
            .unwrap()
            .store
            .silences()
            .await
            .unwrap()
    }

    async fn incident(&self, id: i64) -> Value {
        let (status, one) = self
            .relay
            .admin_get(&format!("/api/incidents/{id}"), ADMIN)
            .await;
        assert_eq!(status, 200, "{one}");
        one
    }

    /// How many presses and commands were refused for `reason`.
    async fn refusals(&self, reason: &str) -> u64 {
        let metrics = self.relay.metrics().await;
        let name = format!("trackrelay_telegram_refusals_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// Proves that nothing more is sent within [`QUIET`].
    async fn quiet(&self) {
        let n = self.tg.messages().len();
        self.tg.assert_stays_at(n, QUIET).await;
    }
}

/// The callback data of the button labelled `label` on a keyboard.
fn button(markup: &Value, label: &str) -> Option<String> {
    buttons(markup)
        .into_iter()
        .find(|(text, _)| text.contains(label))
        .map(|(_, data)| data)
}

/// A keyboard's buttons: label and callback data.
fn buttons(markup: &Value) -> Vec<(String, String)> {
    markup["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["text"].as_str().unwrap_or("").to_string(),
                b["callback_data"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn is_location(m: &SentMessage) -> bool {
    m.method.eq_ignore_ascii_case("sendLocation")
}

#[tokio::test]
async fn help_lists_the_commands_and_other_talk_gets_a_hint_or_nothing() {
    let b = Bench::start().await;
    for cmd in ["/help", "/start", "/help@trackrelay_test_bot"] {
        let help = b.reply(LENA, &lena(), cmd).await;
        for line in [
            "/status",
            "/where NAME",
            "/mute NAME 2h",
            "/unmute NAME",
            "/ack",
        ] {
            assert!(help.contains(line), "{cmd}: {help}");
        }
    }
    let unknown = b.reply(LENA, &lena(), "/launch rockets").await;
    assert_eq!(unknown, "I don't know /launch. /help lists what I do.");
    let no_name = b.reply(LENA, &lena(), "/where").await;
    assert_eq!(no_name, "Which device? /where NAME");
    let chat = b.reply(LENA, &lena(), "hello bot").await;
    assert_eq!(chat, "Send /help to see what I can do.");

    // In a group, a command for another bot and plain talk get nothing; this bot's command an answer
    // (updates are handled in order: the answer comes after whatever the others got).
    b.tg.user_sends(CLUB, &anna(), "/where@other_bot Club tandem");
    b.tg.user_sends(CLUB, &anna(), "nice ride today");
    let next = b.say(CLUB, &anna(), "/help@trackrelay_test_bot", 1).await;
    assert!(
        next[0]
            .text
            .as_deref()
            .unwrap_or("")
            .contains("/where NAME"),
        "{next:?}"
    );
    b.quiet().await;
    b.relay.stop().await;
}

#[tokio::test]
async fn where_sends_a_pin_and_a_line_by_name_glob_or_pick() {
    let b = Bench::start().await;
    b.post(event(
        1,
        &GAZELLE,
        None,
        Some((47.2622, 11.4136, 10.0, 300)),
    ))
    .await;
    b.post(event(2, &CARGO, None, Some((48.2082, 16.3738, 0.0, 30))))
        .await;
    b.post(event(3, &TAG, None, None)).await;

    // By its name (case-insensitive): a pin where it was, a line with age and speed, and an answer.
    let sent = b.say(LENA, &lena(), "/where lena's gazelle", 3).await;
    assert!(is_location(&sent[0]), "{sent:?}");
    assert_eq!(sent[0].chat_id, LENA.to_string());
    assert_eq!(
        (sent[0].latitude, sent[0].longitude),
        (Some(47.2622), Some(11.4136))
    );
    assert!(!sent[0].params.contains_key("live_period"), "a static pin");
    let line = sent[1].text.clone().unwrap();
    assert!(line.starts_with("📍 Lena's Gazelle · 5m"), "{line}");
    assert!(line.ends_with(" ago · 19 km/h"), "10 knots: {line}");
    assert_eq!(
        sent[2].text.as_deref(),
        Some("📍 Sent where Lena's Gazelle is.")
    );

    // A glob that matches one of the chat's devices acts on it.
    let sent = b.say(LENA, &lena(), "/where *cargo", 3).await;
    assert!(is_location(&sent[0]), "{sent:?}");
    assert_eq!(
        (sent[0].latitude, sent[0].longitude),
        (Some(48.2082), Some(16.3738))
    );
    assert!(
        sent[1].text.as_deref().unwrap().ends_with("ago · 0 km/h"),
        "{sent:?}"
    );

    // One that matches two: a list to pick from, and the pick acts.
    let list = b.say(LENA, &lena(), "/where Lena*", 1).await.remove(0);
    assert_eq!(
        list.text.as_deref(),
        Some("2 devices match Lena*; which one?")
    );
    let picks = buttons(list.reply_markup.as_ref().expect("a list to pick from"));
    let names: Vec<&str> = picks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Lena's Gazelle", "Lena's Cargo"], "{picks:?}");
    let before = b.tg.messages().len();
    b.tg.press_button(list.message_id, &lena(), &picks[1].1);
    let answers = b.tg.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(
        answers[0].text.as_deref(),
        Some("📍 Sent where Lena's Cargo is.")
    );
    let sent = b.tg.wait_for_messages(before + 2, WAIT).await;
    assert!(is_location(&sent[before]), "{sent:?}");
    assert_eq!(sent[before].latitude, Some(48.2082));
    assert!(
        sent[before + 1]
            .text
            .as_deref()
            .unwrap()
            .starts_with("📍 Lena's Cargo"),
        "{sent:?}"
    );

    // Known but never located; and no such device.
    let none = b.say(LENA, &lena(), "/where Helmet tag", 1).await;
    assert_eq!(
        none[0].text.as_deref(),
        Some("No position of Helmet tag yet.")
    );
    let unknown = b.reply(LENA, &lena(), "/where Rocket").await;
    assert_eq!(unknown, "No device of yours is called Rocket.");
    b.quiet().await;
    b.relay.stop().await;
}

#[tokio::test]
async fn mute_silences_a_device_until_unmuted_and_status_shows_it() {
    let b = Bench::start().await;
    b.alarm(1, &CARGO).await;
    let sos = |id| event(id, &GAZELLE, Some("sos"), Some((47.26, 11.41, 0.0, 10)));
    b.post(sos(2)).await;
    b.tg.wait_for_messages(2, WAIT).await;

    let muted = b.reply(LENA, &lena(), "/mute Lena's Gazelle 2h").await;
    assert_eq!(muted, "🔕 Muted Lena's Gazelle for 2h.");
    let (_, list) = b.relay.admin_get("/api/silences", ADMIN).await;
    let silences = list["silences"].as_array().unwrap();
    assert_eq!(silences.len(), 1, "{list}");
    assert_eq!(silences[0]["matchers"]["device"], "12", "{list}");
    assert!(silences[0]["matchers"]["rule"].is_null(), "{list}");
    assert_eq!(silences[0]["author"], "Lena", "{list}");
    assert_eq!(silences[0]["state"], "active", "{list}");
    let s = &b.silences().await[0];
    assert_eq!(s.ends_at_ms - s.starts_at_ms, 2 * 3_600_000);

    // Its next alarm is suppressed, not sent.
    let n = b.tg.messages().len();
    b.post(sos(3)).await;
    let quiet = b.relay.wait_deliveries("suppressed", 1, ADMIN).await;
    assert!(
        quiet[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("silence"),
        "{quiet:?}"
    );
    b.tg.assert_stays_at(n, QUIET).await;

    // A name matching two: a list, and the pick mutes the one picked for as long as asked.
    let list = b.say(LENA, &lena(), "/mute Lena* 30m", 1).await.remove(0);
    let picks = buttons(list.reply_markup.as_ref().expect("a list to pick from"));
    assert_eq!(picks.len(), 2, "{picks:?}");
    let answer = b.press(list.message_id, &lena(), &picks[1].1).await;
    assert_eq!(answer, "🔕 Muted Lena's Cargo for 30m.");
    let cargo = b.silences().await.pop().unwrap();
    assert_eq!(cargo.matchers.device.as_deref(), Some("14"));
    assert_eq!(cargo.ends_at_ms - cargo.starts_at_ms, 30 * 60_000);
    assert_eq!(cargo.author, "Lena");

    // /status: the chat's open incident and its muted device.
    let status = b.reply(LENA, &lena(), "/status").await;
    assert!(
        status.contains("🚨 Incident 1 (theft-14): open, 1 event"),
        "{status}"
    );
    assert!(
        status.contains("🔕 Lena's Gazelle muted for 1h 59m"),
        "{status}"
    );
    assert!(status.contains("🔕 Lena's Cargo muted for 29m"), "{status}");
    // Max's chat sees neither.
    let other = b.reply(MAX, &max(), "/status").await;
    assert_eq!(other, "All quiet: no open incidents, nothing muted.");

    // /unmute: the silence ends, and alarms flow again.
    let unmuted = b.reply(LENA, &lena(), "/unmute lena's gazelle").await;
    assert_eq!(unmuted, "🔔 Lena's Gazelle sends alarms again.");
    let list = b.say(LENA, &lena(), "/unmute Lena*", 1).await.remove(0);
    let picks = buttons(list.reply_markup.as_ref().expect("a list to pick from"));
    let answer = b.press(list.message_id, &lena(), &picks[1].1).await;
    assert_eq!(answer, "🔔 Lena's Cargo sends alarms again.");
    let (_, list) = b.relay.admin_get("/api/silences", ADMIN).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 0, "{list}");
    let n = b.tg.messages().len();
    b.post(sos(4)).await;
    let sent = b.tg.wait_for_messages(n + 1, WAIT).await;
    assert_eq!(sent[n].chat_id, LENA.to_string());
    let again = b.reply(LENA, &lena(), "/unmute Lena's Gazelle").await;
    assert_eq!(again, "Lena's Gazelle was not muted.");
    let status = b.reply(LENA, &lena(), "/status").await;
    assert!(!status.contains("muted"), "{status}");
    assert!(status.contains("Incident 1"), "{status}");
    b.relay.stop().await;
}

#[tokio::test]
async fn ack_acknowledges_the_chats_latest_open_incident() {
    let b = Bench::start().await;
    b.alarm(1, &GAZELLE).await;
    b.alarm(2, &BROMPTON).await;
    b.alarm(3, &CARGO).await;

    // Lena's latest first (the Cargo's, incident 3), then her older one; never Max's. Each time the
    // answer, and the notice that the incident was acknowledged (in either order).
    for expected in [3, 1] {
        let sent = b.say(LENA, &lena(), "/ack", 2).await;
        let texts: Vec<String> = sent.iter().filter_map(|m| m.text.clone()).collect();
        assert!(
            texts.contains(&format!("✅ Acknowledged incident {expected}.")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("Incident {expected} ("))
                    && t.contains("acknowledged by Lena via Telegram")),
            "{texts:?}"
        );
        let one = b.incident(expected).await;
        assert_eq!(one["status"], "acknowledged", "{one}");
        assert_eq!(one["detail"]["by"], "Lena", "{one}");
        assert_eq!(one["detail"]["via"], "telegram", "{one}");
    }
    eventually(WAIT, "the follow-up edits settle", || {
        b.tg.edits().len() >= 2
    })
    .await;
    let none = b.reply(LENA, &lena(), "/ack").await;
    assert_eq!(none, "No open incident here.");
    assert_eq!(b.incident(2).await["status"], "open");
    b.relay.stop().await;
}

#[tokio::test]
async fn a_chat_cannot_act_on_devices_or_buttons_of_another_chat() {
    let b = Bench::start().await;
    b.post(event(1, &GAZELLE, None, Some((47.26, 11.41, 0.0, 10))))
        .await;
    b.post(event(2, &BROMPTON, None, Some((48.0, 16.0, 0.0, 10))))
        .await;

    // Commands naming Lena's bike from Max's chat: a polite no, nothing else happens.
    let refused = b.reply(MAX, &max(), "/where Lena's Gazelle").await;
    assert_eq!(
        refused,
        "Sorry, this chat does not get the alarms of Lena's Gazelle."
    );
    let refused = b.reply(MAX, &max(), "/mute Lena* 1h").await;
    assert_eq!(
        refused,
        "Sorry, this chat does not get the alarms of Lena*."
    );
    b.quiet().await;
    assert!(b.tg.messages().iter().all(|m| !is_location(m)), "no pin");
    assert!(b.silences().await.is_empty(), "no silence");
    assert_eq!(b.refusals("unauthorized_device").await, 2);
    // Max's own bike is his.
    let mine = b.say(MAX, &max(), "/where Max*", 3).await;
    assert!(is_location(&mine[0]), "{mine:?}");
    // A pick forged for Lena's bike is refused too.
    let answer = b.press(mine[2].message_id, &max(), "p:w:12").await;
    assert_eq!(
        answer,
        "Sorry, this chat does not get that device's alarms."
    );
    assert_eq!(b.refusals("unauthorized_device").await, 3);

    // Lena's incident message's buttons, pressed on Max's: another chat's.
    let lenas = b.alarm(3, &GAZELLE).await;
    let maxs = b.alarm(4, &BROMPTON).await;
    let keys = lenas.reply_markup.clone().unwrap();
    for label in ["Acknowledge", "Mute", "Where"] {
        let data = button(&keys, label).unwrap();
        let answer = b.press(maxs.message_id, &max(), &data).await;
        assert_eq!(answer, "This button belongs to another chat.", "{label}");
    }
    assert_eq!(b.refusals("foreign_chat").await, 3);
    assert_eq!(b.incident(1).await["status"], "open");
    assert!(b.silences().await.is_empty(), "no silence");
    // Forged and garbage data.
    let forged = format!("a:{}", "0".repeat(32));
    let answer = b.press(maxs.message_id, &max(), &forged).await;
    assert_eq!(answer, "This incident is closed.");
    assert_eq!(b.refusals("unknown_token").await, 1);
    for junk in ["hello", "a:xyz", "p:w:12:7", ""] {
        let answer = b.press(maxs.message_id, &max(), junk).await;
        assert_eq!(answer, "This button is no longer valid.", "{junk:?}");
    }
    b.quiet().await;
    assert_eq!(
        b.tg.messages().iter().filter(|m| is_location(m)).count(),
        1,
        "only Max's own pin"
    );
    assert_eq!(b.incident(1).await["status"], "open");
    b.relay.stop().await;
}

#[tokio::test]
async fn the_mute_button_silences_device_and_rule_for_an_hour_once() {
    let b = Bench::start().await;
    let msg = b.alarm(1, &GAZELLE).await;
    let mute = button(msg.reply_markup.as_ref().unwrap(), "Mute").unwrap();
    let query = b.tg.press_button(msg.message_id, &lena(), &mute);
    let answers = b.tg.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(
        answers[0].text.as_deref(),
        Some("🔕 Muted Lena's Gazelle (rule theft) for 1h.")
    );
    let silences = b.silences().await;
    assert_eq!(silences.len(), 1, "{silences:?}");
    let s = &silences[0];
    assert_eq!(s.matchers.device.as_deref(), Some("12"));
    assert_eq!(s.matchers.rule.as_deref(), Some("theft"));
    assert_eq!(s.ends_at_ms - s.starts_at_ms, 3_600_000);
    assert_eq!(s.author, "Lena");

    // The same press again (as after a poller that died between acting and recording it): no second
    // silence.
    let again = json!({
        "id": query, "from": { "id": LENA, "is_bot": false, "first_name": "Lena", "username": "lena" },
        "message": b.tg.message_state(msg.message_id).unwrap().json,
        "chat_instance": "4242", "data": mute,
    });
    b.tg.inject_update("callback_query", again);
    let answers = b.tg.wait_for_callback_answers(2, WAIT).await;
    assert_eq!(answers[1].callback_query_id, query);
    assert_eq!(
        answers[1].text.as_deref(),
        Some("🔕 Lena's Gazelle is muted.")
    );
    assert_eq!(b.silences().await.len(), 1);

    // So with a command: the same /mute message delivered twice mutes once.
    let reply = b
        .say(LENA, &lena(), "/mute Lena's Gazelle 2h", 1)
        .await
        .remove(0);
    assert_eq!(
        reply.text.as_deref(),
        Some("🔕 Muted Lena's Gazelle for 2h.")
    );
    let asked = b.tg.message_state(reply.message_id - 1).unwrap();
    assert_eq!(asked.text.as_deref(), Some("/mute Lena's Gazelle 2h"));
    let again = b.tg.messages().len();
    b.tg.inject_update("message", asked.json);
    let sent = b.tg.wait_for_messages(again + 1, WAIT).await;
    assert_eq!(
        sent[again].text.as_deref(),
        Some("🔕 Lena's Gazelle is muted.")
    );
    assert_eq!(
        b.silences().await.len(),
        2,
        "the button's and the command's"
    );
    b.relay.stop().await;
}

#[tokio::test]
async fn in_a_group_any_member_acknowledges_and_is_named() {
    let b = Bench::start().await;
    let msg = b.alarm(1, &TANDEM).await;
    let ack = button(msg.reply_markup.as_ref().unwrap(), "Acknowledge").unwrap();
    b.tg.press_button(msg.message_id, &anna(), &ack);
    let answers = b.tg.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(
        answers[0].text.as_deref(),
        Some("✅ Acknowledged incident 1.")
    );
    let one = b.incident(1).await;
    assert_eq!(one["status"], "acknowledged", "{one}");
    assert_eq!(one["detail"]["by"], "Anna", "{one}");
    assert_eq!(one["detail"]["via"], "telegram", "{one}");
    eventually(WAIT, "the message names Anna", || {
        b.tg.message_state(msg.message_id).is_some_and(|m| {
            m.text
                .unwrap_or_default()
                .contains("acknowledged by Anna at")
        })
    })
    .await;
    // Another member with the old keyboard: told who did it already.
    let otto = TgUser::new(778, "Otto", None);
    let answer = b.press(msg.message_id, &otto, &ack).await;
    assert_eq!(answer, "Already acknowledged by Anna.");
    assert_eq!(b.incident(1).await["detail"]["by"], "Anna");
    b.relay.stop().await;
}

#[tokio::test]
async fn updates_handled_before_a_restart_are_not_handled_again() {
    let b = Bench::start().await;
    let msg = b.alarm(1, &GAZELLE).await;
    let ack = button(msg.reply_markup.as_ref().unwrap(), "Acknowledge").unwrap();
    b.tg.press_button(msg.message_id, &lena(), &ack);
    b.tg.wait_for_callback_answers(1, WAIT).await;
    let status = b.reply(LENA, &lena(), "/status").await;
    assert!(status.contains("acknowledged by Lena"), "{status}");
    b.tg.wait_for_updates_confirmed(WAIT).await;
    eventually(WAIT, "the message is edited", || !b.tg.edits().is_empty()).await;
    let Bench { dir, tg, relay } = b;
    relay.stop().await;

    // Telegram offers both updates again (the confirmations never reached it): the restarted relay
    // asks from the offset it stored, and they are gone.
    tg.forget_confirmations();
    assert_eq!(tg.pending_updates().len(), 2);
    let (messages, edits) = (tg.messages().len(), tg.edits().len());
    let relay = Relay::start(config(dir.path(), &tg.base_url())).await;
    tg.wait_for_updates_confirmed(WAIT).await;
    tg.assert_stays_at(messages, QUIET).await;
    assert_eq!(
        tg.callback_answers().len(),
        1,
        "the press is not answered twice"
    );
    assert_eq!(tg.edits().len(), edits);
    relay.stop().await;
}

#[tokio::test]
async fn where_is_it_after_a_restart_sends_the_incidents_last_position() {
    let b = Bench::start().await;
    let msg = b.alarm(1, &GAZELLE).await;
    let where_ = button(msg.reply_markup.as_ref().unwrap(), "Where").unwrap();
    let Bench { dir, tg, relay } = b;
    relay.stop().await;
    // Positions are kept in memory only: the restarted relay knows none, but the incident does.
    let relay = Relay::start(config(dir.path(), &tg.base_url())).await;
    let b = Bench { dir, tg, relay };
    let before = b.tg.messages().len();
    let answer = b.press(msg.message_id, &lena(), &where_).await;
    assert_eq!(
        answer,
        format!("📍 Sent where {} was last seen.", GAZELLE.name)
    );
    let sent = b.tg.wait_for_messages(before + 2, WAIT).await;
    let pin = sent[before..]
        .iter()
        .find(|m| is_location(m))
        .expect("a pin");
    assert_eq!((pin.latitude, pin.longitude), (Some(47.26), Some(11.41)));
    assert_eq!(pin.chat_id, LENA.to_string());
    b.relay.stop().await;
}
