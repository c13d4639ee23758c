//! The follow-up of incident messages in two-way chats: once an incident is acknowledged, its messages
//! are edited to say who did and when, and lose the Acknowledge button (Mute and Where is it? stay);
//! once it is resolved, they say so and lose every button. A live pin moves with the device's newest
//! position, at most every `live_every`, until the incident is resolved or acknowledged for
//! `live_grace`; then it is stopped.
//!
//! Driven by the store, not by who acknowledged: an acknowledgement by link, API or CLI (another
//! process) is followed up the same way, within a second. With several instances, one (the holder of
//! a lease) does it. Only the two-way channels' messages are asked for: other kinds' (Pushover's
//! receipts) are left to their own follow-up, and never fill this one's batch; those of channels
//! removed or no longer two-way are made final by a [`super::Sweep`].

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide_core::payloads::EditMessageTextSetters;
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::MessageId;
use teloxide_core::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use super::{two_way_bots, BotConf, Bots};
use crate::channel::telegram::{chunks, keyboard, recipient, Button};
use crate::clock::now_ms;
use crate::incident::{IncidentState, Resolution, Status};
use crate::notification::{Content, Notification, ParseMode};
use crate::store::{IncidentRow, PeerMessage};

/// How often the messages are looked at without a wake-up.
const PASS_EVERY: Duration = Duration::from_secs(1);
/// The follow-up lease (one instance of several does it).
const LEASE: &str = "telegram-follow";
/// Its length.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// Messages looked at in one pass.
const BATCH: usize = 1000;

/// What one live pin did last.
#[derive(Debug, Clone, Copy, Default)]
struct Pin {
    /// The fix time of the position it shows (none: as sent).
    fix: Option<DateTime<Utc>>,
    /// When it was last moved, unix ms.
    moved_at: i64,
}

/// Failed follow-ups of one message in a row before it is left as it is.
const MAX_FAILURES: u32 = 8;
/// A pass stops after this long (well within [`LEASE_TTL`]); the rest waits for the next one.
const PASS_BUDGET: Duration = Duration::from_secs(8);

/// When to try again: per bot after Telegram's flood control (`retry_after`), per message after it
/// failed (doubling from 2 s, at most 5 min; left alone after [`MAX_FAILURES`]). Without it a
/// failing edit would be tried every second forever, and keep the bot's alarms waiting behind
/// Telegram's flood control.
#[derive(Debug, Default)]
struct Pacing {
    /// Bot id → no request before this, unix ms.
    bot_until: HashMap<String, i64>,
    /// Delivery → (failures in a row, next try unix ms).
    failing: HashMap<i64, (u32, i64)>,
}

/// What a follow-up did.
enum Attempt {
    /// Done, or nothing to do.
    Done,
    /// Telegram refused or could not be reached: try again later.
    Failed(RequestError),
}

/// The follow-up's state between passes.
#[derive(Default)]
struct State {
    pins: HashMap<i64, Pin>,
    /// Clients by bot id, token and API URL (a new token or URL after a reload gets a new client).
    clients: HashMap<String, Bot>,
    pacing: Pacing,
    /// Makes final the messages of channels nobody follows up.
    sweep: super::Sweep,
}

/// Follows up until `shutdown`.
pub async fn run(bots: Bots, shutdown: CancellationToken) {
    let mut state = State::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = bots.follow_wake.notified() => {}
            () = tokio::time::sleep(PASS_EVERY) => {}
        }
        let confs = two_way_bots(&bots.shared.get().config);
        if confs.is_empty() {
            continue;
        }
        let ttl = LEASE_TTL.as_millis() as i64;
        if !matches!(
            bots.store
                .try_lease(LEASE, &bots.holder, ttl, now_ms())
                .await,
            Ok(true)
        ) {
            continue;
        }
        state.sweep.run(&bots).await;
        if let Err(e) = pass(&bots, &confs, &mut state, &shutdown).await {
            tracing::warn!(error = %e, "cannot follow up incident messages");
        }
    }
    let _ = bots.store.release_lease(LEASE, &bots.holder).await;
}

/// A client for `conf`'s bot, made once per token and API URL.
fn client(clients: &mut HashMap<String, Bot>, conf: &BotConf) -> Result<Bot, String> {
    let key = format!(
        "{}\u{1f}{}\u{1f}{}",
        conf.id,
        super::webhook::secret(conf).expose(),
        conf.api_url
    );
    if let Some(b) = clients.get(&key) {
        return Ok(b.clone());
    }
    let b = conf.client(Duration::ZERO)?;
    clients.retain(|k, _| !k.starts_with(&format!("{}\u{1f}", conf.id)));
    clients.insert(key, b.clone());
    Ok(b)
}

/// One look at every message still followed, within [`PASS_BUDGET`].
async fn pass(
    bots: &Bots,
    confs: &std::collections::BTreeMap<String, BotConf>,
    state: &mut State,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let channels: Vec<String> = confs.values().flat_map(|c| c.channels.clone()).collect();
    let msgs = bots
        .store
        .active_peer_messages(&channels, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut incidents: HashMap<i64, Option<IncidentRow>> = HashMap::new();
    let mut looked_at = std::collections::HashSet::new();
    let mut complete = true;
    for m in msgs {
        if shutdown.is_cancelled() || started.elapsed() > PASS_BUDGET {
            complete = false;
            break;
        }
        looked_at.insert(m.delivery_id);
        // Only the bots' channels' messages were asked for.
        let Some(conf) = confs.values().find(|c| c.channels.contains(&m.channel)) else {
            continue;
        };
        let now = now_ms();
        let waiting = state
            .pacing
            .bot_until
            .get(&conf.id)
            .is_some_and(|t| *t > now)
            || state
                .pacing
                .failing
                .get(&m.delivery_id)
                .is_some_and(|(_, next)| *next > now);
        if waiting {
            continue;
        }
        let bot = client(&mut state.clients, conf)?;
        let row = match incidents.get(&m.incident_ref) {
            Some(r) => r.clone(),
            None => {
                let r = bots
                    .store
                    .incident(m.incident_ref)
                    .await
                    .map_err(|e| e.to_string())?;
                incidents.insert(m.incident_ref, r.clone());
                r
            }
        };
        let Ok(n) = serde_json::from_str::<Notification>(&m.payload) else {
            continue;
        };
        let f = Followed {
            bots,
            conf,
            bot: &bot,
            m: &m,
        };
        let attempt = match n.content {
            Content::TelegramText {
                text,
                parse_mode,
                buttons: Some(token),
                ..
            } => f.edit(row.as_ref(), &text, parse_mode, &token).await,
            Content::TelegramLocation {
                live_period: Some(period),
                ..
            } => f.live(row.as_ref(), period, &mut state.pins).await,
            _ => Attempt::Done,
        };
        f.paced(attempt, &mut state.pacing).await;
    }
    state.pins.retain(|_, p| now_ms() - p.moved_at < 86_400_000);
    if complete {
        // Messages no longer followed (done here or by another instance) are forgotten.
        state.pacing.failing.retain(|id, _| looked_at.contains(id));
    }
    Ok(())
}

/// One message being followed up.
struct Followed<'a> {
    bots: &'a Bots,
    conf: &'a BotConf,
    bot: &'a Bot,
    m: &'a PeerMessage,
}

/// What an incident's messages should show: its status name, and its state (none: the incident is
/// gone, pruned after it was resolved). `None` for a row this version cannot read: left alone.
fn wanted(row: Option<&IncidentRow>) -> Option<(&'static str, Option<IncidentState>)> {
    match row.map(|r| (r.status_name(), r.state.clone())) {
        Some((name, Ok(state))) => Some((name, Some(state))),
        Some((_, Err(_))) => None,
        None => Some(("resolved", None)),
    }
}

impl Followed<'_> {
    fn target(&self) -> Option<(teloxide_core::types::Recipient, MessageId)> {
        let chat = recipient(&self.m.recipient).ok()?;
        let id = self.m.peer_ref.parse().ok()?;
        Some((chat, MessageId(id)))
    }

    /// Records what the message shows now.
    async fn shown(&self, what: &str) {
        if let Err(e) = self
            .bots
            .store
            .set_peer_shown(self.m.delivery_id, what)
            .await
        {
            tracing::warn!(error = %e, "cannot record a message's follow-up");
        }
    }

    /// Edits an incident message to its incident's state, if it changed.
    async fn edit(
        &self,
        row: Option<&IncidentRow>,
        text: &str,
        mode: ParseMode,
        token: &str,
    ) -> Attempt {
        let Some((want, state)) = wanted(row) else {
            return Attempt::Done;
        };
        if want == self.m.shown.as_deref().unwrap_or("open") || want == "open" {
            return Attempt::Done;
        }
        let Some((chat, id)) = self.target() else {
            self.shown("stopped").await;
            return Attempt::Done;
        };
        let tz = self.bots.shared.get().config.timezone;
        let line = state
            .as_ref()
            .map_or_else(|| "☑️ Resolved.".to_string(), |s| status_line(s, tz));
        let buttons: &[Button] = if want == "acknowledged" {
            &[Button::Mute, Button::Where]
        } else {
            &[]
        };
        let escaped = match mode {
            ParseMode::Html => crate::render::escape_html(&line),
            ParseMode::MarkdownV2 => crate::render::escape_markdown_v2(&line),
            ParseMode::Plain => line.clone(),
        };
        let new_text = format!("{text}\n\n{escaped}");
        let r = if chunks(&new_text, mode).len() == 1 {
            let mut req = self.bot.edit_message_text(chat, id, new_text);
            if let Some(m) = crate::channel::telegram::teloxide_mode(mode) {
                req = req.parse_mode(m);
            }
            if !buttons.is_empty() {
                req = req.reply_markup(keyboard(token, buttons));
            }
            req.send().await.map(|_| ())
        } else {
            // A message sent in pieces keeps its text; only its buttons change.
            use teloxide_core::payloads::EditMessageReplyMarkupSetters;
            let mut req = self.bot.edit_message_reply_markup(chat, id);
            if !buttons.is_empty() {
                req = req.reply_markup(keyboard(token, buttons));
            }
            req.send().await.map(|_| ())
        };
        self.settle("edit", r, want).await
    }

    /// Moves or stops a live pin.
    async fn live(
        &self,
        row: Option<&IncidentRow>,
        period: u32,
        pins: &mut HashMap<i64, Pin>,
    ) -> Attempt {
        let now = now_ms();
        let Some((_, state)) = wanted(row) else {
            return Attempt::Done;
        };
        let grace = self.conf.two_way.live_grace.as_millis() as i64;
        let over = match state.as_ref().map(|s| &s.status) {
            None | Some(Status::Resolved { .. }) => true,
            Some(Status::Acknowledged(a)) => a.at_ms + grace <= now,
            Some(Status::Open) => false,
        };
        let Some((chat, id)) = self.target() else {
            self.shown("stopped").await;
            return Attempt::Done;
        };
        if self.m.created_at_ms + i64::from(period) * 1000 <= now {
            // Telegram stopped it already.
            pins.remove(&self.m.delivery_id);
            self.shown("stopped").await;
            return Attempt::Done;
        }
        if over {
            let r = self.bot.stop_message_live_location(chat, id).send().await;
            pins.remove(&self.m.delivery_id);
            return self.settle("stop", r.map(|_| ()), "stopped").await;
        }
        let Some(p) = self
            .bots
            .whereabouts
            .get(self.m.device_id)
            .and_then(|w| w.position)
        else {
            return Attempt::Done;
        };
        let pin = pins.entry(self.m.delivery_id).or_default();
        let every = self.conf.two_way.live_every.as_millis() as i64;
        let newer = match (pin.fix, p.fix_time) {
            (Some(a), Some(b)) => b > a,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if !newer || now - pin.moved_at < every {
            return Attempt::Done;
        }
        let Ok((lat, lon)) = p.map_point() else {
            return Attempt::Done;
        };
        let r = self
            .bot
            .edit_message_live_location(chat, id, lat, lon)
            .send()
            .await;
        pin.moved_at = now;
        match r {
            Ok(_) => {
                pin.fix = p.fix_time;
                self.bots.metrics.bot_followup("move", "ok");
                Attempt::Done
            }
            Err(e) if not_modified(&e) => {
                pin.fix = p.fix_time;
                Attempt::Done
            }
            Err(e) if gone(&e) => {
                self.bots.metrics.bot_followup("move", "failed");
                self.shown("stopped").await;
                Attempt::Done
            }
            Err(e) => {
                self.bots.metrics.bot_followup("move", "failed");
                Attempt::Failed(e)
            }
        }
    }

    /// Records the outcome of an edit or a stop: done (or nothing to do: not modified, gone) is
    /// recorded as `shown`; anything else is tried again at the next pass.
    async fn settle(
        &self,
        what: &'static str,
        r: Result<(), RequestError>,
        shown: &str,
    ) -> Attempt {
        match r {
            Ok(()) => {
                self.bots.metrics.bot_followup(what, "ok");
                self.shown(shown).await;
            }
            Err(e) if not_modified(&e) => self.shown(shown).await,
            Err(e) if gone(&e) => {
                self.bots.metrics.bot_followup(what, "failed");
                tracing::info!(error = %redact(self.conf, &e), "an incident message can no longer be changed; left as it is");
                self.shown(if what == "edit" { shown } else { "stopped" })
                    .await;
            }
            Err(e) => {
                self.bots.metrics.bot_followup(what, "failed");
                return Attempt::Failed(e);
            }
        }
        Attempt::Done
    }

    /// Paces what comes after `attempt`: Telegram's flood control holds the bot back for as long as
    /// it asks; another failure holds the message back, doubling, and after [`MAX_FAILURES`] the
    /// message is left as it is.
    async fn paced(&self, attempt: Attempt, pacing: &mut Pacing) {
        let id = self.m.delivery_id;
        let e = match attempt {
            Attempt::Done => {
                pacing.failing.remove(&id);
                return;
            }
            Attempt::Failed(e) => e,
        };
        let now = now_ms();
        if let RequestError::RetryAfter(secs) = &e {
            let until = now + secs.duration().as_millis() as i64;
            pacing.bot_until.insert(self.conf.id.clone(), until);
            tracing::warn!(bot = %self.conf.id, retry_after_s = secs.seconds(), "Telegram's flood control: follow-ups wait");
            return;
        }
        if trouble_at_telegram(&e) {
            // Telegram (or the way to it) is down, or the token is wrong: not this message's fault.
            // The bot's follow-ups wait; nothing is counted against the message.
            pacing.bot_until.insert(self.conf.id.clone(), now + 10_000);
            tracing::warn!(bot = %self.conf.id, error = %redact(self.conf, &e), "cannot reach Telegram for follow-ups; trying again in 10s");
            return;
        }
        let failures = pacing.failing.get(&id).map_or(0, |(n, _)| *n) + 1;
        if failures >= MAX_FAILURES {
            pacing.failing.remove(&id);
            tracing::warn!(error = %redact(self.conf, &e), delivery = id, "cannot follow up an incident message; left as it is");
            self.shown("stopped").await;
            return;
        }
        let wait = (2_000_i64 << (failures - 1)).min(300_000);
        pacing.failing.insert(id, (failures, now + wait));
        tracing::warn!(error = %redact(self.conf, &e), delivery = id, failures, "cannot follow up an incident message; trying again");
    }
}

/// The line an incident message gets: who acknowledged it and when, or how it was resolved.
pub fn status_line(s: &IncidentState, tz: chrono_tz::Tz) -> String {
    let at = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .map(|t| crate::render::local_time(t, tz, Some("%H:%M")))
            .unwrap_or_default()
    };
    match &s.status {
        Status::Acknowledged(a) => format!("✅ acknowledged by {} at {}", a.by, at(a.at_ms)),
        Status::Resolved { how, at_ms, .. } => match how {
            Resolution::Manual { by, .. } => format!("☑️ resolved by {by} at {}", at(*at_ms)),
            _ => format!("☑️ resolved at {}", at(*at_ms)),
        },
        Status::Open => String::new(),
    }
}

/// Failures of Telegram or the way to it (not of one message): no answer, a 5xx, a token refused.
fn trouble_at_telegram(e: &RequestError) -> bool {
    match e {
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => true,
        RequestError::Api(ApiError::InvalidToken) => true,
        RequestError::Api(ApiError::Unknown(desc)) => [
            "Internal Server Error",
            "Bad Gateway",
            "Service Unavailable",
            "Gateway Timeout",
            "Unauthorized",
        ]
        .iter()
        .any(|p| desc.starts_with(p)),
        _ => false,
    }
}

/// Telegram's answer to an edit that changes nothing.
fn not_modified(e: &RequestError) -> bool {
    matches!(e, RequestError::Api(ApiError::MessageNotModified))
        || e.to_string().contains("message is not modified")
}

/// Telegram's answers for a message that cannot be changed any more (deleted, too old, a live
/// location expired or stopped).
fn gone(e: &RequestError) -> bool {
    let s = e.to_string();
    matches!(
        e,
        RequestError::Api(
            ApiError::MessageToEditNotFound
                | ApiError::MessageCantBeEdited
                | ApiError::BotBlocked
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::BotKickedFromChannel
                | ApiError::UserDeactivated
                | ApiError::ChatNotFound
        ) | RequestError::MigrateToChatId(_)
    ) || s.contains("message to edit not found")
        || s.contains("message can't be edited")
        || s.contains("chat not found")
        || s.contains("Forbidden:")
        || s.contains("group chat was upgraded")
}

fn redact(conf: &BotConf, e: &RequestError) -> String {
    e.to_string().replace(conf.token.expose(), "<bot-token>")
}
