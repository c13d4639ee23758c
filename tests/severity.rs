//! One severity scale, mapped per channel, end to end against real peers on loopback: a rule's
//! `severity` reaches the Telegram stand-in as `disable_notification` (for the channel's `silent`
//! severities), a real SMTP server as the mail's `Importance` / `X-Priority` headers, and templates as
//! the `severity` variable. The push channels' mappings are tested with their stand-ins.

mod common;
mod support;

use std::time::Duration;

use common::{config_in, payload, Relay};
use support::smtp::SmtpServer;
use support::telegram::TelegramStandIn;

const TOKEN: &str = "123456:TEST-token";
const WAIT: Duration = Duration::from_secs(15);

/// The value of a mail header, if sent.
fn header<'a>(mail: &'a support::smtp::Mail, name: &str) -> Option<&'a str> {
    mail.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn severity_reaches_telegram_as_silence_and_mail_as_importance() {
    let dir = tempfile::tempdir().unwrap();
    let telegram = TelegramStandIn::start(TOKEN, &["4242", "77"]).await;
    let smtp = SmtpServer::start();
    let yaml = format!(
        r#"storage: {{ data_dir: "{dir}" }}
channels:
  phone: {{ type: telegram, bot_token: "{TOKEN}", chat_id: 4242, api_url: "{tg}", parse_mode: plain }}
  night: {{ type: telegram, bot_token: "{TOKEN}", chat_id: 77, api_url: "{tg}", parse_mode: plain, silent: [low, normal] }}
  mail: {{ type: email, host: 127.0.0.1, port: {smtp}, security: none, from: "relay@example.org", to: [a@example.org] }}
rules:
  - name: theft
    severity: critical
    match: {{ type: alarm }}
    notify:
      - {{ channel: phone, template: "{{{{ severity }}}}: {{{{ title }}}}" }}
      - {{ channel: mail, template: "{{{{ severity }}}}" }}
  - name: fence
    match: {{ type: geofenceEnter }}
    notify:
      - {{ channel: phone, template: "{{{{ severity }}}}: {{{{ title }}}}" }}
      - {{ channel: night, template: "{{{{ severity }}}}" }}
      - {{ channel: mail, template: "{{{{ severity }}}}" }}
  - name: offline
    severity: low
    match: {{ type: deviceOffline }}
    notify:
      - {{ channel: phone, template: "{{{{ severity }}}}: {{{{ title }}}}" }}
      - {{ channel: mail, template: "{{{{ severity }}}}" }}
"#,
        dir = dir.path().display(),
        tg = telegram.base_url(),
        smtp = smtp.port(),
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    for (i, p) in [
        "alarm_vibration.json",
        "geofenceEnter.json",
        "deviceOffline.json",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = relay.post(payload(p), &[]).await;
        assert_eq!(status, 200, "{p}: {body}");
        // One at a time, so the order of arrival is the order posted.
        telegram
            .wait_for_messages(i + 1 + usize::from(i > 0), WAIT)
            .await;
        smtp.wait_for(i + 1, WAIT).await;
    }
    let sent = telegram.wait_for_messages(4, WAIT).await;
    let silent = |m: &support::telegram::SentMessage| {
        m.params.get("disable_notification").map(String::as_str) == Some("true")
    };
    let phone: Vec<_> = sent.iter().filter(|m| m.chat_id == "4242").collect();
    let texts: Vec<&str> = phone.iter().map(|m| m.text.as_deref().unwrap()).collect();
    assert!(texts[0].starts_with("critical: "), "{texts:?}");
    assert!(texts[1].starts_with("normal: "), "{texts:?}");
    assert!(texts[2].starts_with("low: "), "{texts:?}");
    // The default: only low is silent.
    assert_eq!(
        phone.iter().map(|m| silent(m)).collect::<Vec<_>>(),
        [false, false, true]
    );
    // A channel's own list: normal is silent at night too.
    let night: Vec<_> = sent.iter().filter(|m| m.chat_id == "77").collect();
    assert_eq!(night.len(), 1);
    assert!(silent(night[0]), "{:?}", night[0].params);

    let mails = smtp.wait_for(3, WAIT).await;
    let by_text = |s: &str| {
        mails
            .iter()
            .find(|m| m.text.as_deref().map(str::trim) == Some(s))
            .unwrap_or_else(|| panic!("no mail saying {s}"))
    };
    let critical = by_text("critical");
    assert_eq!(header(critical, "importance"), Some("high"));
    assert_eq!(header(critical, "x-priority"), Some("1 (Highest)"));
    let normal = by_text("normal");
    assert_eq!(header(normal, "importance"), None);
    assert_eq!(header(normal, "x-priority"), None);
    let low = by_text("low");
    assert_eq!(header(low, "importance"), Some("low"));
    assert_eq!(header(low, "x-priority"), Some("5 (Lowest)"));
    relay.stop().await;
}

#[test]
fn an_unknown_severity_is_rejected_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ out: {{ type: log }} }}\nrules:\n  - name: a\n    severity: urgent\n    notify: [{{ channel: out }}]\n",
        dir.path().display()
    );
    let path = dir.path().join("trackrelay.yaml");
    std::fs::write(&path, yaml).unwrap();
    let e = trackrelay::settings::Config::load_with_env(Some(&path), &|_| None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trackrelay.yaml:4") && e.contains("urgent") && e.contains("critical"),
        "{e}"
    );
    let silent = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels:\n  t: {{ type: telegram, bot_token: \"1:x\", chat_id: 1, silent: [quiet] }}\nrules: []\n",
        dir.path().display()
    );
    std::fs::write(&path, silent).unwrap();
    let e = trackrelay::settings::Config::load_with_env(Some(&path), &|_| None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trackrelay.yaml:3") && e.contains("quiet"),
        "{e}"
    );
}
