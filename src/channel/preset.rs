//! Chat presets of the `webhook` channel (`preset: slack | mattermost | discord | teams | googlechat`):
//! the body each chat's incoming webhook takes, built from the rendered message, its subject (the
//! title), its severity, the map link and the incident's acknowledgement link, and how each service's
//! failures read.
//!
//! Severity shows as a colour (critical red, high orange, normal blue, low grey); critical messages
//! also carry the channel's `mention` (Slack `<!channel>`, Mattermost `@channel`, Discord `@everyone`,
//! Google Chat `<users/all>`; Teams cards cannot mention a channel).

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::render::escape_html;
use crate::severity::Severity;

/// Default subject of a preset's messages (its title line).
pub const DEFAULT_SUBJECT: &str = "{{ title }} · {{ device.name }}";
/// Default message of a preset (the title is the subject; the map link becomes a button or link).
pub const DEFAULT_TEMPLATE: &str = "{{ time_local }}\
{% if position %}\n{{ speed_kmh }} km/h{% if position.address %} · {{ position.address }}{% endif %}{% endif %}";

/// Discord's limits: message content, embed title, embed description.
const DISCORD_CONTENT: usize = 2000;
const DISCORD_TITLE: usize = 256;
const DISCORD_DESCRIPTION: usize = 4096;
/// Text cut beyond this many characters in Slack, Mattermost, Teams and Google Chat (their messages
/// are limited to 28 to 40 KB).
const MAX_TEXT: usize = 12_000;

/// A chat service whose incoming webhooks the channel speaks natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Slack incoming webhook.
    Slack,
    /// Mattermost incoming webhook (Slack-compatible).
    Mattermost,
    /// Discord webhook.
    Discord,
    /// Microsoft Teams Workflows ("When a Teams webhook request is received"): an Adaptive Card.
    Teams,
    /// Google Chat incoming webhook.
    GoogleChat,
}

impl Preset {
    /// Every preset, as written.
    pub const NAMES: &'static str = "slack, mattermost, discord, teams, googlechat";

    /// The preset named `s`.
    pub fn parse(s: &str) -> Option<Preset> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "slack" => Preset::Slack,
            "mattermost" => Preset::Mattermost,
            "discord" => Preset::Discord,
            "teams" => Preset::Teams,
            "googlechat" => Preset::GoogleChat,
            _ => return None,
        })
    }

    /// Its name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Slack => "slack",
            Preset::Mattermost => "mattermost",
            Preset::Discord => "discord",
            Preset::Teams => "teams",
            Preset::GoogleChat => "googlechat",
        }
    }

    /// The mention of critical messages when the channel names none.
    pub fn default_mention(self) -> &'static str {
        match self {
            Preset::Slack => "<!channel>",
            Preset::Mattermost => "@channel",
            Preset::Discord => "@everyone",
            Preset::GoogleChat => "<users/all>",
            Preset::Teams => "",
        }
    }
}

/// A preset's settings, checked: the preset and its mention. `url` is the webhook's address (Discord's
/// gets `wait=true`, so a message the service did not save is an error rather than a silent 204).
pub fn compile(
    preset: Option<&str>,
    mention: Option<&str>,
    json_body: bool,
    url: Option<&mut Url>,
    errors: &mut Vec<String>,
) -> Option<(Preset, String)> {
    let Some(name) = preset else {
        if mention.is_some() {
            errors.push("mention: only a chat preset (`preset:`) has a mention".into());
        }
        return None;
    };
    let Some(p) = Preset::parse(name) else {
        errors.push(format!("preset: `{name}` is not one of {}", Preset::NAMES));
        return None;
    };
    if !json_body {
        errors.push(format!(
            "content_type: a {} preset sends JSON; leave content_type out",
            p.as_str()
        ));
    }
    if p == Preset::Teams && mention.is_some_and(|m| !m.trim().is_empty()) {
        errors.push(
            "mention: a Teams card cannot mention a channel (Workflows webhooks have no channel \
             mention); leave mention out"
                .into(),
        );
    }
    if let Some(u) = url.filter(|_| p == Preset::Discord) {
        if !u.query_pairs().any(|(k, _)| k == "wait") {
            u.query_pairs_mut().append_pair("wait", "true");
        }
    }
    let mention = mention.unwrap_or(p.default_mention()).trim().to_string();
    Some((p, mention))
}

/// What one chat message says.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// The title (the target's subject).
    pub title: &'a str,
    /// The message.
    pub text: &'a str,
    /// Its severity: the colour.
    pub severity: Severity,
    /// The mention it starts with (critical messages of a channel with a mention).
    pub mention: Option<&'a str>,
    /// A map link: a button or link, unless the text has it.
    pub map_url: Option<&'a str>,
    /// The incident's acknowledgement link: a button or link (it opens the acknowledgement page).
    pub ack_url: Option<&'a str>,
}

impl Post<'_> {
    /// The links to show: (label, URL).
    fn links(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(m) = self.map_url.filter(|u| !self.text.contains(*u)) {
            out.push(("Open map", m));
        }
        if let Some(a) = self.ack_url.filter(|u| !self.text.contains(*u)) {
            out.push(("Acknowledge", a));
        }
        out
    }
}

/// The colour of a severity, as `0xRRGGBB`.
pub fn colour(severity: Severity) -> u32 {
    match severity {
        Severity::Critical => 0xD0_02_1B,
        Severity::High => 0xF5_A6_23,
        Severity::Normal => 0x4A_90_E2,
        Severity::Low => 0x9B_9B_9B,
    }
}

fn hex_colour(severity: Severity) -> String {
    format!("#{:06X}", colour(severity))
}

/// `s` cut to at most `max` characters (an ellipsis marks the cut).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The request body of a post for `preset`.
pub fn body(preset: Preset, p: &Post<'_>) -> String {
    match preset {
        Preset::Slack => slack(p),
        Preset::Mattermost => mattermost(p),
        Preset::Discord => discord(p),
        Preset::Teams => teams(p),
        Preset::GoogleChat => google_chat(p),
    }
    .to_string()
}

/// Slack's `&`, `<` and `>` escaped (mrkdwn reads `<…>` as links and mentions).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack: the title in bold as `text` (what the notification shows), the message in an attachment
/// coloured by severity, the links as `<url|label>`.
fn slack(p: &Post<'_>) -> Value {
    let title = format!("*{}*", slack_escape(p.title));
    let text = match p.mention {
        Some(m) => format!("{m} {title}"),
        None => title,
    };
    let mut body = slack_escape(&clip(p.text, MAX_TEXT));
    for (label, url) in p.links() {
        body.push_str(&format!("\n<{}|{label}>", slack_escape(url)));
    }
    json!({
        "text": text,
        "attachments": [{
            "color": hex_colour(p.severity),
            "fallback": format!("{}: {}", p.title, clip(p.text, 300)),
            "text": body,
            "mrkdwn_in": ["text"],
        }],
    })
}

/// Mattermost: like Slack, in Markdown.
fn mattermost(p: &Post<'_>) -> Value {
    let title = format!("**{}**", p.title);
    let text = match p.mention {
        Some(m) => format!("{m} {title}"),
        None => title,
    };
    let mut body = clip(p.text, MAX_TEXT);
    for (label, url) in p.links() {
        body.push_str(&format!("\n[{label}]({url})"));
    }
    json!({
        "text": text,
        "attachments": [{
            "color": hex_colour(p.severity),
            "fallback": format!("{}: {}", p.title, clip(p.text, 300)),
            "text": body,
        }],
    })
}

/// Discord: an embed (title, description, colour, the map as its link); the mention in `content`, and
/// only then may it notify (`allowed_mentions`), so a device called `@everyone` pings no one.
fn discord(p: &Post<'_>) -> Value {
    let links: Vec<String> = p
        .links()
        .iter()
        .map(|(label, url)| format!("[{label}]({url})"))
        .collect();
    let tail = if links.is_empty() {
        String::new()
    } else {
        format!("\n{}", links.join(" · "))
    };
    let room = DISCORD_DESCRIPTION.saturating_sub(tail.chars().count());
    let mut embed = json!({
        "title": clip(p.title, DISCORD_TITLE),
        "description": format!("{}{tail}", clip(p.text, room)),
        "color": colour(p.severity),
    });
    if let Some(url) = p.map_url {
        embed["url"] = url.into();
    }
    let mut body = json!({ "embeds": [embed], "allowed_mentions": { "parse": [] } });
    if let Some(m) = p.mention {
        body["content"] = clip(m, DISCORD_CONTENT).into();
        body["allowed_mentions"] = json!({ "parse": ["everyone", "roles", "users"] });
    }
    body
}

/// Teams (Workflows): an Adaptive Card in a message envelope: the title coloured by severity, one text
/// block per line, the links as `Action.OpenUrl` buttons (the Acknowledge one opens the page that
/// acknowledges).
fn teams(p: &Post<'_>) -> Value {
    let colour = match p.severity {
        Severity::Critical => "Attention",
        Severity::High => "Warning",
        Severity::Normal => "Accent",
        Severity::Low => "Default",
    };
    let mut blocks = vec![json!({
        "type": "TextBlock", "text": p.title, "weight": "Bolder", "size": "Medium",
        "color": colour, "wrap": true,
    })];
    for line in clip(p.text, MAX_TEXT)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        blocks.push(json!({ "type": "TextBlock", "text": line, "wrap": true, "spacing": "None" }));
    }
    let actions: Vec<Value> = p
        .links()
        .iter()
        .map(|(label, url)| json!({ "type": "Action.OpenUrl", "title": label, "url": url }))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
        "msteams": { "width": "Full" },
    });
    if !actions.is_empty() {
        card["actions"] = actions.into();
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// Google Chat: a card (title, severity, the message, link buttons); the mention as the message text.
fn google_chat(p: &Post<'_>) -> Value {
    let label = match p.severity {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Normal => "Normal",
        Severity::Low => "Low",
    };
    let mut widgets = vec![json!({ "textParagraph": { "text": format!(
        "<b><font color=\"{}\">{label}</font></b><br>{}",
        hex_colour(p.severity),
        escape_html(&clip(p.text, MAX_TEXT)).replace('\n', "<br>")
    ) } })];
    let buttons: Vec<Value> = p
        .links()
        .iter()
        .map(|(label, url)| json!({ "text": label, "onClick": { "openLink": { "url": url } } }))
        .collect();
    if !buttons.is_empty() {
        widgets.push(json!({ "buttonList": { "buttons": buttons } }));
    }
    let mut body = json!({ "cardsV2": [{
        "cardId": "trackrelay",
        "card": {
            "header": { "title": clip(p.title, 200) },
            "sections": [{ "widgets": widgets }],
        },
    }] });
    if let Some(m) = p.mention {
        body["text"] = m.into();
    }
    body
}

/// A message on one line, after its subject: what a digest lists of it (`Alarm: vibration · Bike:
/// 02:41 · 12 km/h`), where the subject is apart from the text.
pub fn digest_line(subject: Option<&str>, text: &str) -> String {
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" · ");
    match subject.filter(|s| !s.is_empty()) {
        Some(s) => format!("{s}: {text}"),
        None => text,
    }
}

/// The wait a service asks for in a failure's body, where its `Retry-After` header is missing (Discord
/// sends `retry_after` in seconds, as a decimal number).
pub fn retry_after(preset: Preset, text: &str) -> Option<Duration> {
    if preset != Preset::Discord {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    v["retry_after"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Whether a server error of `preset` is nonetheless permanent: Mattermost answers 501 when incoming
/// webhooks are off on the server, which no retry changes.
pub fn permanent_server_error(preset: Preset, status: StatusCode) -> bool {
    preset == Preset::Mattermost && status == StatusCode::NOT_IMPLEMENTED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(severity: Severity, mention: Option<&'static str>) -> Post<'static> {
        Post {
            title: "Theft <alarm> · Bike",
            text: "12:00\n3 km/h · Main St & 2nd",
            severity,
            mention,
            map_url: Some("https://osm.example/?a=1&b=2"),
            ack_url: Some("https://relay.example/ack/t0k"),
        }
    }

    fn json_of(preset: Preset, p: &Post<'_>) -> Value {
        serde_json::from_str(&body(preset, p)).unwrap()
    }

    #[test]
    fn slack_escapes_and_colours_by_severity() {
        let b = json_of(Preset::Slack, &post(Severity::Critical, Some("<!channel>")));
        assert_eq!(b["text"], "<!channel> *Theft &lt;alarm&gt; · Bike*");
        let a = &b["attachments"][0];
        assert_eq!(a["color"], "#D0021B");
        assert_eq!(
            a["text"],
            "12:00\n3 km/h · Main St &amp; 2nd\n<https://osm.example/?a=1&amp;b=2|Open map>\n\
             <https://relay.example/ack/t0k|Acknowledge>"
        );
        let low = json_of(Preset::Slack, &post(Severity::Low, None));
        assert_eq!(low["attachments"][0]["color"], "#9B9B9B");
        assert_eq!(low["text"], "*Theft &lt;alarm&gt; · Bike*");
    }

    #[test]
    fn discord_embeds_and_only_critical_mentions_notify() {
        let b = json_of(Preset::Discord, &post(Severity::High, None));
        assert_eq!(b["embeds"][0]["color"], 0xF5A623);
        assert_eq!(b["embeds"][0]["url"], "https://osm.example/?a=1&b=2");
        assert_eq!(b["allowed_mentions"], json!({ "parse": [] }));
        assert!(b.get("content").is_none());
        let long = "x".repeat(5000);
        let c = json_of(
            Preset::Discord,
            &Post {
                title: &long,
                text: &long,
                ..post(Severity::Critical, Some("@everyone"))
            },
        );
        assert_eq!(c["content"], "@everyone");
        assert_eq!(
            c["embeds"][0]["title"].as_str().unwrap().chars().count(),
            256
        );
        assert_eq!(
            c["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            4096
        );
    }

    #[test]
    fn teams_is_an_adaptive_card_in_a_message() {
        let b = json_of(Preset::Teams, &post(Severity::Critical, None));
        assert_eq!(b["type"], "message");
        let a = &b["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["body"][0]["color"], "Attention");
        assert_eq!(a["content"]["body"].as_array().unwrap().len(), 3);
        assert_eq!(a["content"]["actions"][1]["title"], "Acknowledge");
        assert_eq!(a["content"]["actions"][1]["type"], "Action.OpenUrl");
    }

    #[test]
    fn names_mentions_and_discord_waits() {
        let mut errors = Vec::new();
        let mut url = Url::parse("https://discord.example/api/webhooks/1/t").unwrap();
        let (p, m) = compile(Some("discord"), None, true, Some(&mut url), &mut errors).unwrap();
        assert_eq!((p, m.as_str()), (Preset::Discord, "@everyone"));
        assert_eq!(url.query(), Some("wait=true"));
        assert!(compile(Some("irc"), None, true, None, &mut errors).is_none());
        compile(Some("teams"), Some("@here"), true, None, &mut errors);
        compile(None, Some("@here"), true, None, &mut errors);
        compile(Some("slack"), None, false, None, &mut errors);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].contains("`irc` is not one of slack"),
            "{errors:?}"
        );
        assert_eq!(
            retry_after(Preset::Discord, r#"{"retry_after": 0.25, "global": false}"#),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(Preset::Slack, r#"{"retry_after": 1}"#), None);
        assert_eq!(
            digest_line(Some("Alarm · Bike"), "02:41\n\n3 km/h\n"),
            "Alarm · Bike: 02:41 · 3 km/h"
        );
    }
}
