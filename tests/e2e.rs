//! End to end through real peers on loopback: every example payload is posted to a relay running the
//! shipped example configuration and rules; the test asserts the exact messages that reach the Telegram
//! stand-in, the SMTP server and the webhook sink.

mod common;
mod support;

use std::time::Duration;

use common::{example_config, example_vars, payload, Relay};
use support::sink::Sink;
use support::smtp::SmtpServer;
use support::telegram::TelegramStandIn;
use trackrelay::notification::{Content, Notification, ParseMode};

const TOKEN: &str = "123456:TEST-token";
const WAIT: Duration = Duration::from_secs(15);

struct Peers {
    telegram: TelegramStandIn,
    smtp: SmtpServer,
    sink: Sink,
}

async fn example_relay(dir: &std::path::Path) -> (Relay, Peers) {
    let telegram = TelegramStandIn::start(TOKEN, &["4242"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let vars = example_vars(
        dir,
        TOKEN,
        telegram.base_url(),
        smtp.port(),
        sink.url("/ops"),
    );
    let relay = Relay::start(example_config(&vars)).await;
    (
        relay,
        Peers {
            telegram,
            smtp,
            sink,
        },
    )
}

#[tokio::test]
async fn every_example_payload_reaches_the_right_peer_with_the_exact_message() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, peers) = example_relay(dir.path()).await;
    let auth = [
        ("authorization", "Bearer s3cret"),
        ("content-type", "application/json"),
    ];
    // (payload, deliveries the shipped rules make of it)
    let cases = [
        ("alarm_vibration.json", 3), // theft: telegram text + pin, mail
        ("alarm_sos.json", 3),       // sos: telegram text + pin, ops webhook
        ("geofenceExit.json", 2),    // left home while parked: text + pin
        ("geofenceEnter.json", 1),   // another zone: text
        ("deviceOffline.json", 1),   // ops webhook, in a digest after a minute
        ("deviceMoving.json", 1),    // ride started (device 12): mail
        ("ignitionOn.json", 1),      // ride started (Lastenrad*): mail
        ("deviceOverspeed.json", 1), // overspeed: mail
        ("deviceOnline.json", 0),
        ("biketrax_doc_example.json", 0),
        ("legacy_biketrax_deviceOnline.json", 0),
    ];
    for (name, expected) in cases {
        let mut headers = auth.to_vec();
        if name == "alarm_sos.json" {
            headers.push(("x-powtxn", "txn-0815"));
        }
        let (status, body) = relay.post(payload(name), &headers).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["status"], "accepted", "{name}: {body}");
        assert_eq!(body["deliveries"], expected, "{name}: {body}");
    }

    // Geofence transitions are held for the shipped rules' debounce (a return across the border within
    // it would cancel them): three deliveries wait, the exit's text and pin and the enter's text.
    let store = relay.running.as_ref().unwrap().store.clone();
    let held: Vec<_> = store
        .list(trackrelay::store::Filter {
            status: Some(trackrelay::store::Status::Pending),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event_type.starts_with("geofence"))
        .collect();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held
        .iter()
        .all(|r| r.reason.as_deref().unwrap().starts_with("debounce: held")));
    // What they will say once the debounce has passed: the outbox holds them rendered, so read it.
    let db =
        rusqlite::Connection::open(dir.path().join(trackrelay::store::sqlite::DB_FILE)).unwrap();
    let held_texts: Vec<String> = db
        .prepare(
            "SELECT content FROM deliveries WHERE event_type LIKE 'geofence%' AND status = 'pending'
             ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| trackrelay::store::sqlite::pack::unpack(r.get_ref(0)?).map_err(Into::into))
        .unwrap()
        .map(|c| {
            let n: Notification = serde_json::from_str(&c.unwrap()).unwrap();
            assert_eq!((n.channel.as_str(), n.recipient.as_str()), ("phone", "4242"));
            match n.content {
                Content::TelegramText {
                    text, parse_mode, ..
                } => {
                    assert_eq!(parse_mode, ParseMode::Html);
                    text
                }
                Content::TelegramLocation {
                    latitude,
                    longitude,
                    ..
                } => format!("pin {latitude},{longitude}"),
                other => panic!("unexpected content {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        held_texts,
        [
            "🏠➡\u{fe0f} <b>Lena&#39;s Gazelle</b> left Zuhause Pradl at 2026-05-15 02:47:12 CEST\n\
             11.8 km/h · <a href=\"https://www.openstreetmap.org/?mlat=47.263421&amp;mlon=11.412008#map=17/47.263421/11.412008\">Open map</a>",
            "pin 47.263421,11.412008",
            "<b>Entered Innsbruck Altstadt (Fußgängerzone)</b>\nLena&#39;s Gazelle · 2026-05-14 08:21:33 CEST\n\
             7.7 km/h · Herzog-Friedrich-Straße 15, 6020 Innsbruck, Austria\n\
             <a href=\"https://www.openstreetmap.org/?mlat=47.268612&amp;mlon=11.393015#map=17/47.268612/11.393015\">Map</a>",
        ]
    );

    // Telegram: one chat, in the order the events came.
    let msgs = peers.telegram.wait_for_messages(4, WAIT).await;
    let seen: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            let what = match (&m.plain_text, m.latitude, m.longitude) {
                (Some(t), _, _) => t.clone(),
                (None, Some(lat), Some(lon)) => format!("pin {lat},{lon}"),
                _ => panic!("unexpected message {m:?}"),
            };
            (m.chat_id.clone(), what)
        })
        .collect();
    let expected: Vec<(String, String)> = [
        "🚨 Theft alarm: Lena's Gazelle\nvibration at 2026-05-15 02:41:05 CEST\nOpen map",
        "pin 47.262195,11.413561",
        "🆘 SOS from Lastenrad Wien at 2026-05-14 09:52:03 CEST\nOpen map",
        "pin 48.207815,16.419924",
    ]
    .iter()
    .map(|t| ("4242".to_string(), t.to_string()))
    .collect();
    assert_eq!(seen, expected);
    assert!(msgs
        .iter()
        .filter(|m| m.text.is_some())
        .all(|m| m.parse_mode.as_deref() == Some("HTML")
            || m.parse_mode.as_deref() == Some("Html")
            || m.parse_mode.as_deref() == Some("html")));
    assert!(
        peers.telegram.rejections().is_empty(),
        "{:?}",
        peers.telegram.rejections()
    );

    // Mail: one mailbox, in order, each with a text and an HTML part.
    let mails = peers.smtp.wait_for(4, WAIT).await;
    let subjects: Vec<&str> = mails
        .iter()
        .map(|m| m.subject.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        subjects,
        [
            "Theft alarm: Lena's Gazelle (vibration)",
            "Moving: Lena's Gazelle",
            "Ignition on: Lastenrad Wien",
            "Lastenrad Wien: Overspeed: 27.0 km/h (limit 20.0 km/h)",
        ]
    );
    assert!(mails.iter().all(|m| m.to == ["owner@example.org"]));
    assert_eq!(
        mails[3].text.as_deref().map(str::trim_end),
        Some(
            "Overspeed: 27.0 km/h (limit 20.0 km/h)\n\nDevice: Lastenrad Wien\nTime: 2026-05-14 09:28:44 CEST\n\
             Speed: 27.0 km/h\nMap: https://www.openstreetmap.org/?mlat=48.213412&mlon=16.405503#map=17/48.213412/16.405503\n\
             Geofence: Prater Hauptallee (20 km/h)"
        )
    );
    let html = mails[0].html.as_deref().unwrap();
    assert!(html.contains("Device: Lena&#39;s Gazelle"), "{html}");
    for m in &mails {
        let id = m.message_id.as_deref().unwrap();
        assert!(
            id.starts_with("<tr-") && id.ends_with("@trackrelay>"),
            "{id}"
        );
    }

    // The offline device waits in a digest of its device group (the shipped rule's `wait: 1m`).
    let grouped = store
        .list(trackrelay::store::Filter {
            status: Some(trackrelay::store::Status::Grouped),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(grouped.len(), 1);
    assert!(grouped[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("grouped into the digest due"));

    // Ops webhook: the example config's Slack preset (SOS is critical: @channel, red), the transaction
    // id carried through.
    let reqs = peers.sink.wait_for(1, WAIT).await;
    assert_eq!(reqs.len(), 1);
    let body = reqs[0].json();
    assert_eq!(
        body["text"], "<!channel> *Alarm: sos · Lastenrad Wien*",
        "{body}"
    );
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "#D0021B", "{body}");
    assert_eq!(
        attachment["text"],
        // Slack's text escapes `&` everywhere, links included.
        "2026-05-14 09:52:03 CEST\n0.0 km/h · Prater, 1020 Wien, Austria\n\
         <https://www.openstreetmap.org/?mlat=48.207815&amp;mlon=16.419924#map=17/48.207815/16.419924|Open map>",
        "{body}"
    );
    assert_eq!(reqs[0].header("x-powtxn"), Some("txn-0815"));
    assert!(reqs
        .iter()
        .all(|r| r.path == "/ops" && r.header("idempotency-key").is_some()));

    // Nothing more arrives (no duplicates) once everything was delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(peers.telegram.messages().len(), 4);
    assert_eq!(peers.smtp.mails().len(), 4);
    assert_eq!(peers.sink.requests().len(), 1);
    relay.stop().await;
}

/// A device name full of markup characters reaches every channel intact: the Telegram stand-in parses
/// HTML and MarkdownV2 like the real API and would reject a broken message; the mail and the JSON body
/// carry the name exactly.
#[tokio::test]
async fn hostile_names_survive_every_format() {
    const NAME: &str = "Lena's <Bike> *1*_. [x](y) & \"q\" #!";
    let telegram = TelegramStandIn::start(TOKEN, &["100", "200", "300"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
storage: {{ data_dir: "{data}" }}
channels:
  tg-html: {{ type: telegram, bot_token: "{TOKEN}", chat_id: "100", api_url: "{api}" }}
  tg-md: {{ type: telegram, bot_token: "{TOKEN}", chat_id: "200", parse_mode: markdownv2, api_url: "{api}" }}
  tg-plain: {{ type: telegram, bot_token: "{TOKEN}", chat_id: "300", parse_mode: plain, api_url: "{api}" }}
  mail: {{ type: email, host: 127.0.0.1, port: {smtp}, security: none, from: "relay@example.org", to: [a@example.org] }}
  hook: {{ type: webhook, url: "{hook}" }}
rules:
  - name: all
    notify:
      - channel: tg-html
        template: "<b>{{{{ device.name }}}}</b> {{{{ title }}}}"
      - channel: tg-md
        template: "*{{{{ device.name }}}}* {{{{ title }}}}"
      - channel: tg-plain
        template: "{{{{ device.name }}}}"
      - channel: mail
        subject: "{{{{ device.name }}}}"
        template: "Name: {{{{ device.name }}}}"
      - channel: hook
        template: "{{{{ device.name }}}}"
"#,
        data = dir.path().display(),
        api = telegram.base_url(),
        smtp = smtp.port(),
        hook = sink.url("/h"),
    );
    let relay = Relay::start(common::config_in(dir.path(), &yaml)).await;
    let mut event: serde_json::Value =
        serde_json::from_str(&payload("alarm_vibration.json")).unwrap();
    event["device"]["name"] = NAME.into();
    let (status, body) = relay.post(event.to_string(), &[]).await;
    assert_eq!(
        (status, &body["deliveries"]),
        (200, &serde_json::json!(5)),
        "{body}"
    );

    let msgs = telegram.wait_for_messages(3, WAIT).await;
    assert!(
        telegram.rejections().is_empty(),
        "Telegram rejected: {:?}",
        telegram.rejections()
    );
    let by_chat = |c: &str| {
        msgs.iter()
            .find(|m| m.chat_id == c)
            .unwrap()
            .plain_text
            .clone()
            .unwrap()
    };
    assert_eq!(by_chat("100"), format!("{NAME} Alarm: vibration"));
    assert_eq!(by_chat("200"), format!("{NAME} Alarm: vibration"));
    assert_eq!(by_chat("300"), NAME);

    let mail = &smtp.wait_for(1, WAIT).await[0];
    assert_eq!(mail.subject.as_deref(), Some(NAME));
    assert_eq!(
        mail.text.as_deref().map(str::trim_end),
        Some(format!("Name: {NAME}").as_str())
    );
    let html = mail.html.as_deref().unwrap();
    assert!(
        html.contains("Name: Lena&#39;s &lt;Bike&gt; *1*_. [x](y) &amp; &quot;q&quot; #!"),
        "{html}"
    );

    let req = &sink.wait_for(1, WAIT).await[0];
    let json = req.json();
    assert_eq!(json["message"], NAME);
    assert_eq!(json["rule"], "all");
    // The event exactly as received, byte for byte, inside the default body.
    assert_eq!(json["event"], event);
    assert!(
        req.body_text().contains(&format!("\"event\":{event}")),
        "{}",
        req.body_text()
    );
    relay.stop().await;
}

/// Webhook extras a receiver relies on: the HMAC signature over the exact body, and `Retry-After`
/// obeyed when it asks for a pause (the channel's own backoff is 100 ms, so only `Retry-After` explains
/// a 2 s wait).
#[tokio::test]
async fn webhook_signature_and_retry_after() {
    use hmac::{Hmac, Mac};
    let sink = Sink::start().await;
    sink.set_mode(support::sink::Mode::StatusRetryAfter(503, 2));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ hook: {{ type: webhook, url: \"{}\", secret: \"k3y\", headers: {{ X-Team: ops }}, \
         retry: {{ initial_backoff: 100ms }} }} }}\n\
         rules: [{{ name: a, notify: [{{ channel: hook }}] }}]\n",
        dir.path().display(),
        sink.url("/signed")
    );
    let relay = Relay::start(common::config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let first = sink.wait_for(1, WAIT).await[0].clone();
    assert_eq!(first.status, 503);
    sink.set_mode(support::sink::Mode::Ok);
    let got = sink.wait_for_successful(1, WAIT).await;
    let ok = &got[0];
    let waited = ok.received_at.duration_since(first.received_at);
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before Retry-After"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
    mac.update(&ok.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(ok.header("x-trackrelay-signature"), Some(expected.as_str()));
    assert_eq!(ok.header("x-team"), Some("ops"));
    assert_eq!(
        ok.header("idempotency-key"),
        first.header("idempotency-key")
    );
    relay.stop().await;
}

/// A message longer than Telegram's 4096 characters is split, not rejected.
#[tokio::test]
async fn overlong_telegram_messages_arrive_in_parts() {
    let telegram = TelegramStandIn::start(TOKEN, &["5"]).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ tg: {{ type: telegram, bot_token: \"{TOKEN}\", chat_id: \"5\", api_url: \"{}\" }} }}\n\
         rules: [{{ name: a, notify: [{{ channel: tg, template: \"{{% for i in range(300) %}}<b>{{{{ device.name }}}}</b> line {{{{ i }}}}\\n{{% endfor %}}\" }}] }}]\n",
        dir.path().display(),
        telegram.base_url()
    );
    let relay = Relay::start(common::config_in(dir.path(), &yaml)).await;
    relay.post(payload("alarm_sos.json"), &[]).await;
    let msgs = telegram.wait_for_messages(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = if telegram.messages().len() > msgs.len() {
        telegram.messages()
    } else {
        msgs
    };
    assert!(
        telegram.rejections().is_empty(),
        "{:?}",
        telegram.rejections()
    );
    let all: String = msgs.iter().map(|m| m.plain_text.clone().unwrap()).collect();
    assert!(msgs
        .iter()
        .all(|m| m.text.as_ref().unwrap().encode_utf16().count() <= 4096));
    assert!(
        all.contains("Lastenrad Wien line 0\n") && all.contains("Lastenrad Wien line 299"),
        "{all}"
    );
    relay.stop().await;
}

/// A tracker reporting a latitude beyond 90°: Telegram refuses such a pin with 400, which would
/// dead-letter it. The message goes without a map link, no pin is attempted, and the pin's delivery
/// says why it was not sent.
#[tokio::test]
async fn a_position_that_is_no_place_gets_its_message_without_pin_or_map_link() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, peers) = example_relay(dir.path()).await;
    let mut body: serde_json::Value =
        serde_json::from_str(&payload("alarm_vibration.json")).unwrap();
    body["position"]["latitude"] = serde_json::json!(91.5);
    let headers = [
        ("authorization", "Bearer s3cret"),
        ("content-type", "application/json"),
    ];
    let (status, answer) = relay.post(body.to_string(), &headers).await;
    assert_eq!(status, 200, "{answer}");
    // Theft: the Telegram message and its pin, and the mail.
    assert_eq!(answer["deliveries"], 3, "{answer}");

    let msgs = peers.telegram.wait_for_messages(1, WAIT).await;
    assert_eq!(
        msgs[0].plain_text.as_deref(),
        Some("🚨 Theft alarm: Lena's Gazelle\nvibration at 2026-05-15 02:41:05 CEST")
    );
    let mails = peers.smtp.wait_for(1, WAIT).await;
    let text = mails[0].text.as_deref().unwrap_or_default();
    assert!(!text.contains("Map:"), "{text}");
    assert!(
        text.contains("Speed: "),
        "the rest of the position stays: {text}"
    );

    let store = relay.running.as_ref().unwrap().store.clone();
    let suppressed = store
        .list(trackrelay::store::Filter {
            status: Some(trackrelay::store::Status::Suppressed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    let reason = suppressed[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason
            .starts_with("no map pin: impossible coordinates (latitude 91.5, longitude 11.413561"),
        "{reason}"
    );
    // Nothing else goes to Telegram, and nothing it would refuse was tried.
    peers
        .telegram
        .assert_stays_at(1, Duration::from_millis(300))
        .await;
    // (The two-way bot's own getMe / getUpdates calls are not sends.)
    assert!(
        peers.telegram.rejections().is_empty(),
        "{:?}",
        peers.telegram.rejections()
    );
    relay.stop().await;
}
