//! Acting on one update of a two-way bot: a button press on an incident message (Acknowledge, Mute
//! 1 h, Where is it?), a device picked from a list, or a command. Every act is checked against the chat
//! it came from: a button works only in the chat its message went to, and a chat acts only on
//! devices whose notifications the rules route to it (the channel's chat, or the chat a device
//! attribute names); anything else gets a polite refusal, is logged and counted.

use std::time::Duration;

use teloxide_core::payloads::{AnswerCallbackQuerySetters, SendMessageSetters};
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::{
    CallbackQuery, ChatId, ChatKind, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update,
    UpdateKind, User,
};
use teloxide_core::Bot;

use super::command::{self, Command, NamePattern, Pick, HELP};
use super::{BotConf, Bots};
use crate::channel::telegram::Button;
use crate::clock::now_ms;
use crate::event::Device;
use crate::incident::{AckSource, Status};
use crate::incident_service::{acknowledge, IncidentError, Which};
use crate::noise::silence::{Matchers, NewSilence};
use crate::store::IncidentFilter;

/// How long the Mute button silences a device and rule.
const MUTE_BUTTON: Duration = Duration::from_secs(3600);
/// At most this many devices are offered when a name matches several.
const MAX_PICKS: usize = 8;

/// Handles the updates of one bot.
pub struct Handler {
    bots: Bots,
    conf: BotConf,
    /// Sends answers and replies.
    bot: Bot,
    /// Long polls (a client that waits longer).
    pub poller: Bot,
    /// This bot's `@username`, to tell commands meant for another bot in a group.
    username: Option<String>,
}

/// A device a chat may act on.
#[derive(Debug, Clone)]
struct Known {
    id: i64,
    name: String,
}

impl Handler {
    /// Clients for the bot, and its username (`getMe`).
    pub async fn new(bots: Bots, conf: &BotConf) -> Result<Handler, String> {
        let bot = conf.client(Duration::ZERO)?;
        let poller = conf.client(conf.two_way.poll_timeout)?;
        let me = bot
            .get_me()
            .send()
            .await
            .map_err(|e| redact(conf, &e.to_string()))?;
        Ok(Handler {
            bots,
            conf: conf.clone(),
            bot,
            poller,
            username: me.user.username.clone(),
        })
    }

    /// The bot and settings it was made for.
    pub fn conf(&self) -> &BotConf {
        &self.conf
    }

    /// The client that sends (for requests about the bot itself).
    pub fn bot_client(&self) -> &Bot {
        &self.bot
    }

    /// An error text without the bot token (it is part of every request URL).
    pub fn redact(&self, s: &str) -> String {
        redact(&self.conf, s)
    }

    /// Handles one update; failures are logged (an update is never handled twice for a failure to
    /// answer).
    pub async fn handle(&self, u: Update) {
        match u.kind {
            UpdateKind::CallbackQuery(q) => self.on_callback(q).await,
            UpdateKind::Message(m) => self.on_message(m).await,
            UpdateKind::Error(v) => {
                // A kind or field this version of the Bot API types cannot read: say so (a button
                // press lost here would spin on the phone with no trace).
                self.bots.metrics.bot_update("other");
                let head: String = v.to_string().chars().take(200).collect();
                tracing::warn!(bot = %self.conf.id, update = %head, "an update the relay cannot read; skipped");
            }
            _ => self.bots.metrics.bot_update("other"),
        }
    }

    async fn on_callback(&self, q: CallbackQuery) {
        let data = q.data.as_deref().unwrap_or("");
        let chat = q.message.as_ref().map(|m| m.chat().id);
        // A channel or public group may be addressed by its @username: a token bound to that name
        // matches a press in it too.
        let username = q
            .message
            .as_ref()
            .and_then(|m| m.chat().username().map(|u| format!("@{u}")));
        let by = display(&q.from);
        let answer = match (chat, Button::parse(data), Pick::parse(data)) {
            (Some(chat), Some((button, token)), _) => {
                self.bots.metrics.bot_update("button");
                let names = (chat, username.as_deref());
                let pressed = q.message.as_ref().map_or(0, |m| m.id().0);
                self.press(button, token, names, &by, (&q.id.0, pressed))
                    .await
            }
            (Some(chat), None, Some(pick)) => {
                self.bots.metrics.bot_update("pick");
                self.pick(pick, chat, &by, &q.id.0).await
            }
            _ => {
                self.bots.metrics.bot_update("other");
                "This button is no longer valid.".to_string()
            }
        };
        // Telegram shows at most 200 characters (a long name in "Already acknowledged by ...").
        let answer: String = answer.chars().take(200).collect();
        if let Err(e) = self
            .bot
            .answer_callback_query(q.id.clone())
            .text(answer)
            .send()
            .await
        {
            tracing::warn!(bot = %self.conf.id, error = %self.redact(&e.to_string()), "cannot answer a button press");
        }
    }

    /// A press on an incident message's button.
    async fn press(
        &self,
        button: Button,
        token: &str,
        chat: (ChatId, Option<&str>),
        by: &str,
        (press_id, pressed): (&str, i32),
    ) -> String {
        let (chat, username) = chat;
        let hash = crate::secret::link_token_hash(token);
        let found = match self.bots.store.incident_by_button(&hash).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a button's incident");
                return "Sorry, I cannot do that right now; try again in a moment.".into();
            }
        };
        let Some((row, channel, bound)) = found else {
            self.refuse(
                "unknown_token",
                chat,
                "button of an unknown or closed incident",
            );
            return "This incident is closed.".into();
        };
        let here = |b: &str| {
            b == chat.0.to_string() || username.is_some_and(|u| u.eq_ignore_ascii_case(b))
        };
        if !bound.as_deref().is_some_and(here) || !self.conf.channels.contains(&channel) {
            self.refuse(
                "foreign_chat",
                chat,
                "button pressed in a chat it was not sent to",
            );
            return "This button belongs to another chat.".into();
        }
        match button {
            Button::Ack => self.ack(row.id, by).await,
            Button::Mute => {
                let Some(device) = self.incident_device(row.id, chat, pressed).await else {
                    return "I don't know which device this incident is about.".into();
                };
                let rule = row.rule.clone();
                self.mute(&device, Some(rule), MUTE_BUTTON, by, press_id)
                    .await
            }
            Button::Where => {
                let device = self.incident_device(row.id, chat, pressed).await;
                let known = device.as_ref().is_some_and(|d| {
                    self.bots
                        .whereabouts
                        .get(d.id)
                        .is_some_and(|w| w.position.is_some())
                });
                match (device, row.state.as_ref().ok().and_then(|s| s.last_seen)) {
                    (Some(device), _) if known => self.send_where(chat, &device).await,
                    // No position since the relay started: where the incident last saw it.
                    (device, Some(seen)) => self.send_sighting(chat, device.as_ref(), seen).await,
                    (Some(device), None) => self.send_where(chat, &device).await,
                    (None, None) => "I don't know which device this incident is about.".into(),
                }
            }
        }
    }

    /// Acknowledges incident `id` for `by`; the answer in words.
    async fn ack(&self, id: i64, by: &str) -> String {
        let rt = self.bots.shared.get();
        let r = acknowledge(
            self.bots.store.as_ref(),
            &rt.config.rules,
            &Which::Id(id),
            by,
            AckSource::Telegram,
            false,
            now_ms(),
        )
        .await;
        self.bots.incidents_wake.notify_one();
        self.bots.follow_wake.notify_one();
        match r {
            Ok(a) if a.changed => {
                tracing::info!(incident = id, by, "incident acknowledged in Telegram");
                let after = (now_ms() - a.state.opened_at_ms) as f64 / 1000.0;
                self.bots.metrics.incident_acknowledged(after);
                format!("✅ Acknowledged incident {id}.")
            }
            Ok(a) => match a.state.status {
                Status::Acknowledged(prev) => {
                    format!("Already acknowledged by {}.", prev.by)
                }
                _ => format!("Incident {id} is {}.", a.row.status_name()),
            },
            Err(IncidentError::Resolved(_)) => format!("Incident {id} is already resolved."),
            Err(IncidentError::NotFound) => "This incident no longer exists.".into(),
            Err(e) => {
                tracing::warn!(incident = id, error = %e, "cannot acknowledge from Telegram");
                "Sorry, I cannot acknowledge right now; try again in a moment.".into()
            }
        }
    }

    /// The device of an incident: that of the pressed message (an incident whose key spans devices
    /// has messages about several), else that of its latest event (the message's id not recorded yet).
    async fn incident_device(&self, id: i64, chat: ChatId, pressed: i32) -> Option<Known> {
        let msgs = self.bots.store.peer_messages(id).await.unwrap_or_default();
        let chat = chat.0.to_string();
        let of_message = msgs
            .iter()
            .find(|m| m.recipient == chat && m.peer_ref == pressed.to_string())
            .filter(|m| m.device_id != 0);
        if let Some(m) = of_message {
            let mut known = self.known(m.device_id);
            // Not seen since the relay started: the name the message was sent with.
            let sent_as = serde_json::from_str::<crate::notification::Notification>(&m.payload)
                .map(|n| n.origin.device_name)
                .unwrap_or_default();
            if known.name == format!("device {}", m.device_id) && !sent_as.is_empty() {
                known.name = sent_as;
            }
            return Some(known);
        }
        let row = self.bots.store.incident(id).await.ok()??;
        let device_id = self.bots.store.event_device(row.event_ref).await.ok()??;
        (device_id != 0).then(|| self.known(device_id))
    }

    /// A device by id with the best name known.
    fn known(&self, id: i64) -> Known {
        let name = self
            .bots
            .whereabouts
            .get(id)
            .map(|w| w.name)
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.bots
                    .directories
                    .devices()
                    .into_iter()
                    .find(|d| d.id == id)
                    .map(|d| d.name)
            })
            .unwrap_or_else(|| format!("device {id}"));
        Known { id, name }
    }

    /// Silences `device` (and `rule`, if given) for `d`. A press delivered twice makes one silence.
    async fn mute(
        &self,
        device: &Known,
        rule: Option<String>,
        d: Duration,
        by: &str,
        press_id: &str,
    ) -> String {
        let store = self.bots.store.as_ref();
        let now = now_ms();
        let comment = format!("Telegram, by {by} ({press_id})");
        if let Ok(existing) = store.silences().await {
            if existing
                .iter()
                .any(|s| s.comment == comment && s.ends_at_ms > now)
            {
                return format!("🔕 {} is muted.", device.name);
            }
        }
        let s = NewSilence {
            matchers: Matchers {
                device: Some(device.id.to_string()),
                rule: rule.clone(),
                ..Default::default()
            },
            starts_at_ms: now,
            ends_at_ms: now + d.as_millis() as i64,
            author: by.to_string(),
            comment,
        };
        match store.add_silence(s, now).await {
            Ok(_) => {
                let _ = self.bots.silences.refresh(store).await;
                let what = rule.map(|r| format!(" (rule {r})")).unwrap_or_default();
                format!(
                    "🔕 Muted {}{what} for {}.",
                    device.name,
                    humantime::format_duration(d)
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot add a silence from Telegram");
                "Sorry, I cannot mute right now; try again in a moment.".into()
            }
        }
    }

    /// Ends the silences that mute `device` as a whole (those a chat made or any by device).
    async fn unmute(&self, device: &Known) -> String {
        let store = self.bots.store.as_ref();
        let now = now_ms();
        let Ok(all) = store.silences().await else {
            return "Sorry, I cannot unmute right now; try again in a moment.".into();
        };
        let mut ended = 0;
        for s in all.iter().filter(|s| {
            s.ends_at_ms > now && s.matchers.device.as_deref() == Some(&device.id.to_string())
        }) {
            if store.expire_silence(s.id, now).await.is_ok() {
                ended += 1;
            }
        }
        let _ = self.bots.silences.refresh(store).await;
        if ended == 0 {
            format!("{} was not muted.", device.name)
        } else {
            format!("🔔 {} sends alarms again.", device.name)
        }
    }

    /// Sends the device's latest position to `chat`, as a pin and a line; the answer in words.
    /// Sends where an incident last saw its device (its events' newest position).
    async fn send_sighting(
        &self,
        chat: ChatId,
        device: Option<&Known>,
        seen: crate::incident::Sighting,
    ) -> String {
        let name = device.map_or("the device", |d| d.name.as_str());
        let age = Duration::from_secs(((now_ms() - seen.at_ms).max(0) / 1000) as u64);
        let line = format!(
            "📍 {name} · {} ago (the incident's latest position)",
            humantime::format_duration(age)
        );
        let sent = self
            .bot
            .send_location(chat, seen.lat, seen.lon)
            .send()
            .await;
        let _ = self.bot.send_message(chat, line).send().await;
        match sent {
            Ok(_) => format!("📍 Sent where {name} was last seen."),
            Err(e) => {
                tracing::warn!(error = %self.redact(&e.to_string()), "cannot send a position");
                "Sorry, I cannot send the position right now.".into()
            }
        }
    }

    async fn send_where(&self, chat: ChatId, device: &Known) -> String {
        let seen = self.bots.whereabouts.get(device.id);
        let Some(p) = seen.as_ref().and_then(|w| w.position.clone()) else {
            return format!("No position of {} yet.", device.name);
        };
        let Ok((lat, lon)) = p.map_point() else {
            return format!("No usable position of {} yet.", device.name);
        };
        let age = p
            .fix_time
            .map(|t| (now_ms() - t.timestamp_millis()).max(0) / 1000)
            .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
            .map_or_else(String::new, |a| format!(" · {a} ago"));
        let speed = format!(" · {:.0} km/h", p.speed * 1.852);
        let line = format!("📍 {}{age}{speed}", device.name);
        let sent = self.bot.send_location(chat, lat, lon).send().await;
        let _ = self.bot.send_message(chat, line).send().await;
        match sent {
            Ok(_) => format!("📍 Sent where {} is.", device.name),
            Err(e) => {
                tracing::warn!(error = %self.redact(&e.to_string()), "cannot send a position");
                "Sorry, I cannot send the position right now.".into()
            }
        }
    }

    async fn on_message(&self, m: Message) {
        let Some(text) = m.text() else {
            return;
        };
        let Some(cmd) = command::parse(text, self.username.as_deref()) else {
            if matches!(m.chat.kind, ChatKind::Private(_)) {
                self.reply(m.chat.id, "Send /help to see what I can do.", None)
                    .await;
            }
            return;
        };
        self.bots.metrics.bot_update("command");
        let by = m.from.as_ref().map_or_else(|| "someone".into(), display);
        let chat = m.chat.id;
        // Names the command in a silence it makes: the same message delivered twice mutes once.
        let press = format!("message {} in chat {}", m.id.0, chat.0);
        let who = (by.as_str(), press.as_str());
        let (text, keyboard) = match cmd {
            Command::Help => (HELP.to_string(), None),
            Command::Bad(why) => (why, None),
            Command::Status => (self.status(chat).await, None),
            Command::Ack => (self.ack_latest(chat, &by).await, None),
            Command::Where(name) => self.by_name(chat, &name, who, Pick::Where).await,
            Command::Unmute(name) => self.by_name(chat, &name, who, Pick::Unmute).await,
            Command::Mute(name, d) => {
                let secs = d.as_secs();
                self.by_name(chat, &name, who, |id| Pick::Mute(id, secs))
                    .await
            }
        };
        self.reply(chat, &text, keyboard).await;
    }

    /// A command naming a device: acts when one device of the chat's matches, offers a list when
    /// several do, refuses when the only matches are other chats' devices. `who`: the user who sent
    /// it and a name of the message.
    async fn by_name(
        &self,
        chat: ChatId,
        name: &str,
        (by, press): (&str, &str),
        pick: impl Fn(i64) -> Pick,
    ) -> (String, Option<InlineKeyboardMarkup>) {
        let (mine, others) = self.devices_named(chat, name);
        match mine.as_slice() {
            [] if others > 0 => {
                self.refuse(
                    "unauthorized_device",
                    chat,
                    "command for a device of another chat",
                );
                (
                    format!("Sorry, this chat does not get the alarms of {name}."),
                    None,
                )
            }
            [] => (format!("No device of yours is called {name}."), None),
            [one] => (self.act(pick(one.id), chat, by, press).await, None),
            many => {
                let rows = many.iter().take(MAX_PICKS).map(|d| {
                    vec![InlineKeyboardButton::callback(
                        d.name.clone(),
                        pick(d.id).data(),
                    )]
                });
                (
                    format!("{} devices match {name}; which one?", many.len()),
                    Some(InlineKeyboardMarkup::new(rows)),
                )
            }
        }
    }

    /// A device picked from a list (the press `press_id`): the chat's right to it is checked again.
    async fn pick(&self, pick: Pick, chat: ChatId, by: &str, press_id: &str) -> String {
        let id = match pick {
            Pick::Where(id) | Pick::Unmute(id) | Pick::Mute(id, _) => id,
        };
        if !self.authorized(chat, id) {
            self.refuse(
                "unauthorized_device",
                chat,
                "picked a device of another chat",
            );
            return "Sorry, this chat does not get that device's alarms.".into();
        }
        self.act(pick, chat, by, press_id).await
    }

    /// Does what `by` asked for one device; `press` names the message or button press that asked.
    async fn act(&self, pick: Pick, chat: ChatId, by: &str, press: &str) -> String {
        match pick {
            Pick::Where(id) => self.send_where(chat, &self.known(id)).await,
            Pick::Unmute(id) => self.unmute(&self.known(id)).await,
            Pick::Mute(id, secs) => {
                self.mute(&self.known(id), None, Duration::from_secs(secs), by, press)
                    .await
            }
        }
    }

    /// The devices named `pattern` that the chat may act on, and how many others match.
    fn devices_named(&self, chat: ChatId, pattern: &str) -> (Vec<Known>, usize) {
        let mut mine = Vec::new();
        let mut others = 0;
        let pattern = NamePattern::new(pattern);
        for d in self.candidates() {
            if !pattern.matches(&d.name) {
                continue;
            }
            if self.routes_to(chat, &d) {
                mine.push(Known {
                    id: d.id,
                    name: d.name.clone(),
                });
            } else {
                others += 1;
            }
        }
        (mine, others)
    }

    /// Every device known: the live sources' and those seen since start.
    fn candidates(&self) -> Vec<Device> {
        let mut out: std::collections::BTreeMap<i64, Device> = self
            .bots
            .directories
            .devices()
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        for w in self.bots.whereabouts.all() {
            out.entry(w.device_id).or_insert_with(|| Device {
                id: w.device_id,
                name: w.name.clone(),
                attributes: w.attributes.clone(),
                ..Default::default()
            });
        }
        out.into_values().filter(|d| !d.name.is_empty()).collect()
    }

    fn authorized(&self, chat: ChatId, device_id: i64) -> bool {
        self.candidates()
            .iter()
            .any(|d| d.id == device_id && self.routes_to(chat, d))
    }

    /// Whether the rules route notifications of `device` to `chat` through this bot's channels.
    fn routes_to(&self, chat: ChatId, device: &Device) -> bool {
        let cfg = &self.bots.shared.get().config;
        crate::plan::routed_recipients(cfg, &self.conf.channels, device)
            .contains(&chat.0.to_string())
    }

    /// `/status`: the live incidents whose messages came to this chat, and the chat's muted devices.
    async fn status(&self, chat: ChatId) -> String {
        let mut lines = Vec::new();
        for (row, state) in self.chat_incidents(chat).await {
            let what = match &state.status {
                Status::Acknowledged(a) => format!("acknowledged by {}", a.by),
                _ => "open".to_string(),
            };
            lines.push(format!(
                "🚨 Incident {} ({}): {what}, {} event{}",
                row.id,
                state.key,
                state.events,
                if state.events == 1 { "" } else { "s" }
            ));
        }
        let now = now_ms();
        let silences = self.bots.store.silences().await.unwrap_or_default();
        for d in self.candidates().iter().filter(|d| self.routes_to(chat, d)) {
            let id = d.id.to_string();
            if let Some(s) = silences
                .iter()
                .filter(|s| s.ends_at_ms > now && s.starts_at_ms <= now)
                .find(|s| s.matchers.device.as_deref() == Some(&id))
            {
                let left = Duration::from_secs(((s.ends_at_ms - now) / 1000).max(0) as u64);
                lines.push(format!(
                    "🔕 {} muted for {} more",
                    d.name,
                    humantime::format_duration(left)
                ));
            }
        }
        if lines.is_empty() {
            "All quiet: no open incidents, nothing muted.".into()
        } else {
            lines.join("\n")
        }
    }

    /// The live incidents that sent a message to this chat, newest first.
    async fn chat_incidents(
        &self,
        chat: ChatId,
    ) -> Vec<(crate::store::IncidentRow, crate::incident::IncidentState)> {
        let chat = chat.0.to_string();
        let rows = self
            .bots
            .store
            .incidents(IncidentFilter {
                all: false,
                limit: 100,
            })
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for row in rows {
            let Ok(state) = row.state.clone() else {
                continue;
            };
            let msgs = self
                .bots
                .store
                .peer_messages(row.id)
                .await
                .unwrap_or_default();
            if msgs
                .iter()
                .any(|m| m.recipient == chat && self.conf.channels.contains(&m.channel))
            {
                out.push((row, state));
            }
        }
        out
    }

    /// `/ack`: the chat's latest open incident.
    async fn ack_latest(&self, chat: ChatId, by: &str) -> String {
        let open = self
            .chat_incidents(chat)
            .await
            .into_iter()
            .filter(|(_, s)| s.status == Status::Open)
            .max_by_key(|(r, s)| (s.opened_at_ms, r.id));
        match open {
            Some((row, _)) => self.ack(row.id, by).await,
            None => "No open incident here.".into(),
        }
    }

    async fn reply(&self, chat: ChatId, text: &str, keyboard: Option<InlineKeyboardMarkup>) {
        let mut req = self.bot.send_message(chat, text);
        if let Some(k) = keyboard {
            req = req.reply_markup(k);
        }
        if let Err(e) = req.send().await {
            tracing::warn!(bot = %self.conf.id, error = %self.redact(&e.to_string()), "cannot reply in Telegram");
        }
    }

    fn refuse(&self, reason: &'static str, chat: ChatId, what: &str) {
        self.bots.metrics.bot_refusal(reason);
        tracing::warn!(bot = %self.conf.id, chat = chat.0, reason, "refused: {what}");
    }
}

/// How a Telegram user is named in acknowledgements: their name, else `@username`.
fn display(u: &User) -> String {
    let name = match &u.last_name {
        Some(l) => format!("{} {l}", u.first_name),
        None => u.first_name.clone(),
    };
    let name = name.trim().to_string();
    if name.is_empty() {
        u.username
            .as_ref()
            .map_or_else(|| format!("user {}", u.id.0), |n| format!("@{n}"))
    } else {
        name
    }
}

fn redact(conf: &BotConf, s: &str) -> String {
    s.replace(conf.token.expose(), "<bot-token>")
}
