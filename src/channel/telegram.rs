//! The `telegram` channel: Bot API `sendMessage` / `sendLocation` through teloxide-core. Errors are
//! classified here and retried by the outbox, not by teloxide's own throttle (which would retry forever).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use teloxide_core::payloads::{SendLocationSetters, SendMessageSetters};
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LivePeriod, MessageId, Recipient, ThreadId,
};
use teloxide_core::{ApiError, Bot, RequestError};

use super::{http_client, http_failure, Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification, ParseMode};
use crate::render::{escape_html, escape_markdown_v2, Escape};
use crate::secret::Secret;
use crate::severity::Severity;

/// Telegram's limit on one message, in characters after entity parsing.
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// The public Bot API.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// Default template in HTML mode.
pub const DEFAULT_TEMPLATE_HTML: &str = "<b>{{ title }}</b>\n{{ device.name }} · {{ time_local }}\
{% if position %}\n{{ speed_kmh }} km/h{% if position.address %} · {{ position.address }}{% endif %}\
{% if map_url %}\n<a href=\"{{ map_url }}\">Map</a>{% endif %}{% endif %}";
/// Default template in MarkdownV2 mode (literal reserved characters escaped by hand).
pub const DEFAULT_TEMPLATE_MDV2: &str = "*{{ title }}*\n{{ device.name }} · {{ time_local }}\
{% if position %}\n{{ speed_kmh }} km/h{% if position.address %} · {{ position.address }}{% endif %}\
{% if map_url %}\n[Map]({{ map_url }}){% endif %}{% endif %}";
/// Default template in plain mode.
pub const DEFAULT_TEMPLATE_PLAIN: &str = "{{ title }}\n{{ device.name }} · {{ time_local }}\
{% if position %}\n{{ speed_kmh }} km/h{% if position.address %} · {{ position.address }}{% endif %}\
{% if map_url %}\n{{ map_url }}{% endif %}{% endif %}";

/// Telegram channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelegram {
    /// Bot token from @BotFather.
    pub bot_token: String,
    /// Default chat (numeric id or `@channel`).
    #[serde(default, deserialize_with = "string_or_number")]
    pub chat_id: Option<String>,
    /// Forum topic.
    pub thread_id: Option<i32>,
    /// `html` (default), `markdownv2` or `plain`.
    pub parse_mode: Option<String>,
    /// Also send the position as a map pin.
    pub location: Option<bool>,
    /// Bot API base URL (tests, or a self-hosted Bot API server).
    pub api_url: Option<String>,
    /// Default message template.
    pub template: Option<String>,
    /// Request timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retry overrides.
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
    /// The severities sent without sound (`disable_notification`); default `[low]`.
    pub silent: Option<Vec<Severity>>,
    /// Two-way: incident messages carry buttons, the bot answers commands, live pins follow a device.
    /// `true`, or its settings.
    pub two_way: Option<RawTwoWay>,
}

/// `two_way:` as written: `true` / `false`, or the settings (each with a default).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTwoWay {
    /// On with the defaults, or off.
    On(bool),
    /// On with these settings.
    Settings(RawTwoWaySettings),
}

/// The settings of a two-way bot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTwoWaySettings {
    /// How updates come: `poll` (`getUpdates` long polling, the default: works behind NAT) or
    /// `webhook` (Telegram posts them to `<public_url>/telegram/<bot id>`; needs `public_url`).
    pub updates: Option<String>,
    /// How long one `getUpdates` long poll waits (default 25 s, at most 50 s).
    #[serde(default, with = "humantime_serde")]
    pub poll_timeout: Option<Duration>,
    /// With several instances on PostgreSQL, how long the poller's lease lasts: another instance takes
    /// over within it when the poller dies (default 30 s; at least `poll_timeout` + 5 s).
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// A live pin is moved at most this often (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub live_every: Option<Duration>,
    /// A live pin keeps following this long after the incident is acknowledged (default 10 min).
    #[serde(default, with = "humantime_serde")]
    pub live_grace: Option<Duration>,
}

/// How a two-way bot gets its updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updates {
    /// `getUpdates` long polling.
    Poll,
    /// Telegram posts them to the relay (`setWebhook`).
    Webhook,
}

/// A two-way bot's settings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoWay {
    /// How updates come.
    pub updates: Updates,
    /// One long poll's wait.
    pub poll_timeout: Duration,
    /// The poller's lease.
    pub lease: Duration,
    /// Least time between two moves of a live pin.
    pub live_every: Duration,
    /// How long a live pin follows after an acknowledgement.
    pub live_grace: Duration,
}

impl TwoWay {
    fn compile(raw: &RawTwoWaySettings, errors: &mut Vec<String>) -> TwoWay {
        let poll_timeout = raw.poll_timeout.unwrap_or(Duration::from_secs(25));
        if poll_timeout > Duration::from_secs(50) {
            errors.push("two_way.poll_timeout: at most 50s (Telegram closes longer polls)".into());
        }
        if poll_timeout < Duration::from_secs(1) {
            errors.push(
                "two_way.poll_timeout: at least 1s (a poll that never waits asks Telegram nonstop)"
                    .into(),
            );
        }
        let lease = raw.lease.unwrap_or(Duration::from_secs(30));
        if lease < poll_timeout + Duration::from_secs(5) {
            errors.push(format!(
                "two_way.lease: {} is too short: at least poll_timeout + 5s ({}), or the poller loses \
                 it while it waits",
                humantime::format_duration(lease),
                humantime::format_duration(poll_timeout + Duration::from_secs(5))
            ));
        }
        let live_every = raw.live_every.unwrap_or(Duration::from_secs(10));
        if live_every < Duration::from_secs(1) {
            errors.push("two_way.live_every: at least 1s".into());
        }
        let updates = match raw.updates.as_deref().unwrap_or("poll") {
            "poll" => Updates::Poll,
            "webhook" => Updates::Webhook,
            other => {
                errors.push(format!(
                    "two_way.updates: `{other}` is not one of poll, webhook"
                ));
                Updates::Poll
            }
        };
        TwoWay {
            updates,
            poll_timeout,
            lease,
            live_every,
            live_grace: raw.live_grace.unwrap_or(Duration::from_secs(600)),
        }
    }
}

/// Chat ids are numbers to YAML unless quoted; take both.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Num(i64),
        Text(String),
    }
    Ok(Option::<Id>::deserialize(d)?.map(|v| match v {
        Id::Num(n) => n.to_string(),
        Id::Text(s) => s,
    }))
}

impl Section for RawTelegram {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(TelegramSettings::compile(&self)?))
    }
}

/// Validated Telegram settings.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// Bot token.
    pub bot_token: Secret,
    /// Default chat.
    pub chat_id: Option<String>,
    /// Forum topic.
    pub thread_id: Option<i32>,
    /// Formatting.
    pub parse_mode: ParseMode,
    /// Send a map pin after the message.
    pub location: bool,
    /// Bot API base URL.
    pub api_url: reqwest::Url,
    /// Request timeout.
    pub timeout: Duration,
    /// Two-way settings, when on.
    pub two_way: Option<TwoWay>,
    /// Severities sent without sound.
    pub silent: Vec<Severity>,
}

impl TelegramSettings {
    /// Validates raw settings.
    pub fn compile(raw: &RawTelegram) -> Result<TelegramSettings, Vec<String>> {
        let mut errors = Vec::new();
        // Tokens look like `123456:ABC-def`; anything else is a paste error caught now, not at 3 a.m.
        let token_ok = raw.bot_token.split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
        });
        if !token_ok {
            errors
                .push("bot_token does not look like a Bot API token (`<digits>:<secret>`)".into());
        }
        let parse_mode = match raw
            .parse_mode
            .as_deref()
            .unwrap_or("html")
            .to_ascii_lowercase()
            .as_str()
        {
            "html" => ParseMode::Html,
            "markdownv2" => ParseMode::MarkdownV2,
            "plain" | "none" => ParseMode::Plain,
            other => {
                errors.push(format!(
                    "parse_mode: `{other}` is not one of html, markdownv2, plain"
                ));
                ParseMode::Html
            }
        };
        if let Some(c) = &raw.chat_id {
            if let Err(e) = recipient(c) {
                errors.push(format!("chat_id: {e}"));
            }
        }
        let two_way = match &raw.two_way {
            None | Some(RawTwoWay::On(false)) => None,
            Some(RawTwoWay::On(true)) => {
                Some(TwoWay::compile(&RawTwoWaySettings::default(), &mut errors))
            }
            Some(RawTwoWay::Settings(s)) => Some(TwoWay::compile(s, &mut errors)),
        };
        let api_url = raw.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        let api_url = reqwest::Url::parse(api_url)
            .map_err(|e| errors.push(format!("api_url: `{api_url}`: {e}")))
            .ok();
        match api_url {
            Some(api_url) if errors.is_empty() => Ok(TelegramSettings {
                bot_token: Secret(raw.bot_token.clone()),
                chat_id: raw.chat_id.clone(),
                thread_id: raw.thread_id,
                parse_mode,
                location: raw.location.unwrap_or(false),
                api_url,
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
                two_way,
                silent: raw.silent.clone().unwrap_or_else(|| vec![Severity::Low]),
            }),
            _ => Err(errors),
        }
    }
}

impl ChannelKind for TelegramSettings {
    fn name(&self) -> &'static str {
        "telegram"
    }

    /// The default template for the parse mode.
    fn default_template(&self) -> &'static str {
        match self.parse_mode {
            ParseMode::Html => DEFAULT_TEMPLATE_HTML,
            ParseMode::MarkdownV2 => DEFAULT_TEMPLATE_MDV2,
            ParseMode::Plain => DEFAULT_TEMPLATE_PLAIN,
        }
    }

    /// The escaping that goes with the parse mode.
    fn escape(&self) -> Escape {
        match self.parse_mode {
            ParseMode::Html => Escape::Html,
            ParseMode::MarkdownV2 => Escape::MarkdownV2,
            ParseMode::Plain => Escape::Text,
        }
    }

    fn ordered(&self) -> bool {
        // One chat reads alarms in the order they happened.
        true
    }

    fn recipients(&self) -> Option<&[String]> {
        Some(self.chat_id.as_slice())
    }

    fn location(&self) -> Option<bool> {
        Some(self.location)
    }

    fn buttons(&self) -> bool {
        self.two_way.is_some()
    }

    /// The message, then the map pin if the target sends one.
    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        let mut parts = vec![(
            "msg",
            Content::TelegramText {
                text: m.text,
                parse_mode: self.parse_mode,
                buttons: None,
                silent: self.silent.contains(&m.severity),
            },
        )];
        if let Some((latitude, longitude)) = m.pin {
            parts.push((
                "loc",
                Content::TelegramLocation {
                    latitude,
                    longitude,
                    live_period: m.live_period,
                    silent: self.silent.contains(&m.severity),
                },
            ));
        }
        parts
    }

    fn test_content(&self, text: String) -> Content {
        Content::TelegramText {
            text: match self.parse_mode {
                ParseMode::Html => escape_html(&text),
                ParseMode::MarkdownV2 => escape_markdown_v2(&text),
                ParseMode::Plain => text,
            },
            parse_mode: self.parse_mode,
            buttons: None,
            silent: false,
        }
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(TelegramChannel::new(self)?))
    }
}

/// A chat id as the Bot API takes it: a number, or `@channelusername`.
pub fn recipient(chat: &str) -> Result<Recipient, String> {
    let chat = chat.trim();
    if let Ok(id) = chat.parse::<i64>() {
        Ok(Recipient::Id(ChatId(id)))
    } else if chat.starts_with('@') && chat.len() > 1 {
        Ok(Recipient::ChannelUsername(chat.to_string()))
    } else {
        Err(format!(
            "`{chat}` is neither a numeric chat id nor an @channel name"
        ))
    }
}

/// Sends through one Bot API client.
pub struct TelegramChannel {
    bot: Bot,
    token: Secret,
    thread_id: Option<i32>,
}

impl TelegramChannel {
    /// Builds the client.
    pub fn new(s: &TelegramSettings) -> Result<TelegramChannel, String> {
        let client = http_client(s.timeout)?;
        Ok(TelegramChannel {
            bot: Bot::with_client(s.bot_token.expose(), client).set_api_url(s.api_url.clone()),
            token: s.bot_token.clone(),
            thread_id: s.thread_id,
        })
    }

    /// The error in words, with the bot token (which is part of every request URL) removed.
    fn classify(&self, e: RequestError) -> SendError {
        let redact = |s: String| s.replace(self.token.expose(), "<bot-token>");
        match e {
            RequestError::RetryAfter(secs) => SendError::Transient {
                reason: format!("Telegram flood control: retry after {}s", secs.seconds()),
                retry_after: Some(secs.duration()),
            },
            RequestError::MigrateToChatId(id) => SendError::permanent(format!(
                "Telegram: the group moved to chat id {id}; update the chat id"
            )),
            RequestError::Api(ApiError::Unknown(desc)) => {
                // teloxide keeps only the description; Telegram starts it with the HTTP reason phrase.
                let client_error = [
                    "Bad Request",
                    "Forbidden",
                    "Unauthorized",
                    "Not Found",
                    "Conflict",
                ]
                .iter()
                .any(|p| desc.starts_with(p));
                let reason = redact(format!("Telegram: {desc}"));
                if client_error {
                    SendError::permanent(reason)
                } else {
                    SendError::transient(reason)
                }
            }
            RequestError::Api(api) => SendError::permanent(redact(format!("Telegram: {api}"))),
            RequestError::Network(e) => {
                SendError::transient(redact(format!("Telegram: {}", http_failure(&e))))
            }
            // An HTML error page from a proxy, a truncated answer: the next try may get through.
            RequestError::InvalidJson { .. } => SendError::transient("Telegram: unreadable answer"),
            RequestError::Io(e) => SendError::transient(redact(format!("Telegram: {e}"))),
        }
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    /// The message (its last piece carries the buttons, and is the one whose id is returned), or the
    /// pin (a live one for `live_period`).
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let chat = recipient(&n.recipient).map_err(SendError::permanent)?;
        let thread = self.thread_id.map(|t| ThreadId(MessageId(t)));
        match &n.content {
            Content::TelegramText {
                text,
                parse_mode,
                buttons,
                silent,
            } => {
                let pieces = chunks(text, *parse_mode);
                let last = pieces.len().saturating_sub(1);
                let mut sent = Sent::default();
                for (i, (chunk, mode)) in pieces.into_iter().enumerate() {
                    let mut req = self.bot.send_message(chat.clone(), chunk);
                    if let Some(m) = teloxide_mode(mode) {
                        req = req.parse_mode(m);
                    }
                    if let Some(t) = thread {
                        req = req.message_thread_id(t);
                    }
                    if *silent {
                        req = req.disable_notification(true);
                    }
                    if let (true, Some(token)) = (i == last, buttons) {
                        req = req.reply_markup(keyboard(token, &Button::ALL));
                    }
                    let m = req.send().await.map_err(|e| self.classify(e))?;
                    sent.peer_ref = Some(m.id.0.to_string());
                }
                Ok(sent)
            }
            Content::TelegramLocation {
                latitude,
                longitude,
                live_period,
                silent,
            } => {
                let mut req = self.bot.send_location(chat, *latitude, *longitude);
                if *silent {
                    req = req.disable_notification(true);
                }
                if let Some(t) = thread {
                    req = req.message_thread_id(t);
                }
                if let Some(p) = live_period {
                    req = req.live_period(LivePeriod::from_u32(*p));
                }
                let m = req.send().await.map_err(|e| self.classify(e))?;
                Ok(Sent {
                    peer_ref: Some(m.id.0.to_string()),
                })
            }
            _ => Err(SendError::permanent(
                "telegram channel got a message rendered for another kind",
            )),
        }
    }
}

/// The buttons of an incident message. Each one's callback data is `<letter>:<token>`: the token is
/// random, bound to the incident and the chat the message went to (a press is checked against both),
/// and 34 bytes in all, well under Telegram's limit of 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Acknowledge the incident.
    Ack,
    /// Silence the device and rule for an hour.
    Mute,
    /// Send the device's latest position.
    Where,
}

impl Button {
    /// Every button, in the order shown.
    pub const ALL: [Button; 3] = [Button::Ack, Button::Mute, Button::Where];

    /// The label on the button.
    pub fn label(self) -> &'static str {
        match self {
            Button::Ack => "✅ Acknowledge",
            Button::Mute => "🔕 Mute 1 h",
            Button::Where => "📍 Where is it?",
        }
    }

    fn letter(self) -> char {
        match self {
            Button::Ack => 'a',
            Button::Mute => 'm',
            Button::Where => 'w',
        }
    }

    /// The callback data of this button for `token`.
    pub fn data(self, token: &str) -> String {
        format!("{}:{token}", self.letter())
    }

    /// The button and token of callback data; `None` for data the relay did not make.
    pub fn parse(data: &str) -> Option<(Button, &str)> {
        let (letter, token) = data.split_once(':')?;
        let b = Button::ALL
            .into_iter()
            .find(|b| letter.len() == 1 && letter.starts_with(b.letter()))?;
        (!token.is_empty() && token.len() <= 60 && token.bytes().all(|c| c.is_ascii_hexdigit()))
            .then_some((b, token))
    }
}

/// An inline keyboard of `buttons` for the token, one row.
pub fn keyboard(token: &str, buttons: &[Button]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([buttons
        .iter()
        .map(|b| InlineKeyboardButton::callback(b.label(), b.data(token)))
        .collect::<Vec<_>>()])
}

/// The teloxide parse mode of a [`ParseMode`] (`None`: plain).
pub fn teloxide_mode(m: ParseMode) -> Option<teloxide_core::types::ParseMode> {
    match m {
        ParseMode::Html => Some(teloxide_core::types::ParseMode::Html),
        ParseMode::MarkdownV2 => Some(teloxide_core::types::ParseMode::MarkdownV2),
        ParseMode::Plain => None,
    }
}

/// Splits a message Telegram would reject as too long. A formatted text cannot be cut safely inside its
/// markup, so an overlong one is sent as plain text (markup removed), in pieces at line breaks.
pub fn chunks(text: &str, mode: ParseMode) -> Vec<(String, ParseMode)> {
    let plain_len = |s: &str| s.encode_utf16().count();
    if plain_len(text) <= MAX_MESSAGE_CHARS {
        return vec![(text.to_string(), mode)];
    }
    let plain = match mode {
        ParseMode::Html => strip_html(text),
        ParseMode::MarkdownV2 => strip_markdown_v2(text),
        ParseMode::Plain => text.to_string(),
    };
    if plain_len(&plain) <= MAX_MESSAGE_CHARS {
        return vec![(plain, ParseMode::Plain)];
    }
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in plain.split_inclusive('\n') {
        for c in line.chars() {
            if plain_len(&cur) + c.len_utf16() > MAX_MESSAGE_CHARS {
                out.push(std::mem::take(&mut cur));
            }
            cur.push(c);
        }
        // Prefer a break at the end of a line once the piece is well filled.
        if plain_len(&cur) > MAX_MESSAGE_CHARS * 3 / 4 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| (c, ParseMode::Plain))
        .collect()
}

/// Removes tags and decodes the entities Telegram's HTML mode knows.
fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode_entities(&out)
}

fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let ent = &after[1..e];
            let c = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes MarkdownV2 escapes and the markers of bold/italic/code (links keep their text).
fn strip_markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '*' | '_' | '~' | '`' | '|' | '[' | ']' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_keep_their_format() {
        assert_eq!(
            chunks("<b>x</b>", ParseMode::Html),
            vec![("<b>x</b>".to_string(), ParseMode::Html)]
        );
    }

    #[test]
    fn long_messages_become_plain_pieces() {
        let line = format!("<b>{}</b> &lt;x&gt;\n", "a".repeat(90));
        let text = line.repeat(100);
        let parts = chunks(&text, ParseMode::Html);
        assert!(parts.len() >= 2, "{}", parts.len());
        for (p, m) in &parts {
            assert_eq!(*m, ParseMode::Plain);
            assert!(p.encode_utf16().count() <= MAX_MESSAGE_CHARS);
            assert!(!p.contains("<b>"));
        }
        let joined: String = parts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(joined, format!("{} <x>\n", "a".repeat(90)).repeat(100));
    }

    #[test]
    fn buttons_round_trip_within_telegrams_limit() {
        let token = crate::secret::new_link_token();
        for b in Button::ALL {
            let data = b.data(&token);
            assert!(data.len() <= 64, "{data}");
            assert_eq!(Button::parse(&data), Some((b, token.as_str())));
        }
        assert_eq!(Button::parse("x:abcd"), None);
        assert_eq!(Button::parse("aa:abcd"), None);
        assert_eq!(Button::parse("a:"), None);
        assert_eq!(Button::parse("a:not-hex"), None);
        assert_eq!(Button::parse("noseparator"), None);
    }

    #[test]
    fn recipients() {
        assert!(matches!(
            recipient("-1001234"),
            Ok(Recipient::Id(ChatId(-1001234)))
        ));
        assert!(matches!(
            recipient("@fleet"),
            Ok(Recipient::ChannelUsername(_))
        ));
        assert!(recipient("fleet").is_err());
        assert!(recipient("").is_err());
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            strip_html("a &amp; <i>b</i> &#x27;&#39; &unknown; &"),
            "a & b '' &unknown; &"
        );
        assert_eq!(
            strip_markdown_v2(r"*Lena's \<Bike\> \*1\*\_\.*"),
            "Lena's <Bike> *1*_."
        );
    }
}
