//! The two-way half of the Telegram stand-in (issue 18): `getUpdates` long
//! polling, injected user messages and button presses, `answerCallbackQuery`,
//! message edits, live locations and inline-keyboard validation. Facts and
//! their sources are in docs/reference/telegram-bot-api.md (§2, §4–§7).
//! Webhook delivery of the same update queue lives in `two_way/webhook.rs`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Uri};
use serde_json::{json, Value};

use super::{
    bad_request, chat_json, check_chat, collect_params, fail, normalize_chat,
    validate_send_message, Inner, Outcome, Scripted, SentMessage, TelegramStandIn,
};

/// `live_period` for a live location that can be edited indefinitely.
pub const LIVE_PERIOD_FOREVER: i64 = 0x7FFF_FFFF;
const QUERY_INVALID: &str = "query is too old and response timeout expired or query ID is invalid";
const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply markup \
                            are exactly the same as a current content and reply markup of the message";
/// Types left out when `allowed_updates` is `[]` or never set.
const NOT_DEFAULT: [&str; 3] = ["chat_member", "message_reaction", "message_reaction_count"];
/// The update types `allowed_updates` understands, in the server's order.
const KNOWN_UPDATES: [&str; 8] = [
    "message",
    "edited_message",
    "channel_post",
    "callback_query",
    "my_chat_member",
    "chat_member",
    "message_reaction",
    "message_reaction_count",
];
const CANT_POLL: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
const POLL_ENDED_BY_WEBHOOK: &str = "Conflict: terminated by setWebhook request";

mod webhook;
pub(super) use webhook::{call_webhook_method, webhook_method};
pub use webhook::{WebhookPost, SECRET_HEADER};

/// A Telegram user who writes to the bot or presses its buttons.
#[derive(Debug, Clone)]
pub struct TgUser {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
}

impl TgUser {
    /// A user with an id, a first name and an optional `@username` (without `@`).
    pub fn new(id: i64, first_name: &str, username: Option<&str>) -> TgUser {
        TgUser {
            id,
            first_name: first_name.to_owned(),
            username: username.map(str::to_owned),
        }
    }

    fn json(&self) -> Value {
        let mut u = json!({"id": self.id, "is_bot": false, "first_name": self.first_name});
        if let Some(name) = &self.username {
            u["username"] = json!(name);
        }
        u
    }
}

/// One accepted `answerCallbackQuery`.
#[derive(Debug, Clone)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: Option<String>,
    pub show_alert: bool,
    pub received_at: Instant,
}

/// One accepted edit (`editMessageText`, `editMessageReplyMarkup`,
/// `editMessageLiveLocation` or `stopMessageLiveLocation`).
#[derive(Debug, Clone)]
pub struct Edit {
    /// Canonical method name, e.g. `"editMessageText"`.
    pub method: String,
    /// Normalised chat (see `normalize_chat`).
    pub chat_id: String,
    pub message_id: i64,
    pub params: BTreeMap<String, String>,
    pub received_at: Instant,
}

/// The live part of a location message.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub sent_at: Instant,
    /// Seconds from the send, or [`LIVE_PERIOD_FOREVER`].
    pub period: i64,
    /// `stopMessageLiveLocation` was called.
    pub stopped: bool,
    /// Positions set by `editMessageLiveLocation`, in order (not the sent one).
    pub moves: Vec<(f64, f64)>,
}

impl LiveState {
    fn editable(&self, now: Instant) -> bool {
        let period = u64::try_from(self.period).unwrap_or(0);
        !self.stopped
            && (self.period == LIVE_PERIOD_FOREVER
                || now < self.sent_at + Duration::from_secs(period))
    }
}

/// A message as it currently stands in its chat (after edits).
#[derive(Debug, Clone)]
pub struct MessageState {
    pub message_id: i64,
    /// Normalised chat (see `normalize_chat`).
    pub chat_id: String,
    /// Sent by the bot (only those can be edited).
    pub from_bot: bool,
    /// Visible text (markup removed, trimmed), None for locations.
    pub text: Option<String>,
    /// The text as last sent, with its `parse_mode`.
    pub raw: Option<(String, Option<String>)>,
    pub reply_markup: Option<Value>,
    pub location: Option<(f64, f64)>,
    pub live: Option<LiveState>,
    /// Accepted edits of this message.
    pub edit_count: usize,
    /// The Message JSON as `getUpdates` / edit answers show it now.
    pub json: Value,
}

/// Two-way state inside the stand-in's mutex.
pub(super) struct TwoWay {
    updates: VecDeque<(i64, Value)>,
    next_update_id: i64,
    /// `None`: Telegram's default set (everything but [`NOT_DEFAULT`]).
    allowed: Option<HashSet<String>>,
    /// Bumped by each long poll that starts waiting; an older waiter that sees
    /// it change answers 409.
    poll_generation: u64,
    messages: BTreeMap<i64, MessageState>,
    queries: HashSet<String>,
    next_query_id: u64,
    answers: Vec<CallbackAnswer>,
    edits: Vec<Edit>,
    /// The webhook, if set, and its delivery records.
    hook: webhook::Hook,
    /// Every update ever queued, by id (see `forget_confirmations`).
    history: BTreeMap<i64, Value>,
}

impl Default for TwoWay {
    fn default() -> Self {
        TwoWay::new()
    }
}

impl TwoWay {
    pub(super) fn new() -> TwoWay {
        TwoWay {
            updates: VecDeque::new(),
            // "Update identifiers start from a certain positive number".
            next_update_id: 100_000_001,
            allowed: None,
            poll_generation: 0,
            messages: BTreeMap::new(),
            queries: HashSet::new(),
            next_query_id: 4_382_000_000_000_000_001,
            answers: Vec::new(),
            edits: Vec::new(),
            hook: webhook::Hook::default(),
            history: BTreeMap::new(),
        }
    }

    /// Keeps a delivered sendMessage/sendLocation for later edits.
    pub(super) fn store_sent(&mut self, m: &SentMessage, json: &Value) {
        let live = m
            .params
            .get("live_period")
            .and_then(|p| p.parse::<i64>().ok());
        let state = MessageState {
            message_id: m.message_id,
            chat_id: normalize_chat(&m.chat_id).unwrap_or_default(),
            from_bot: true,
            text: m.plain_text.as_ref().map(|t| t.trim().to_owned()),
            raw: m.text.clone().map(|t| (t, m.parse_mode.clone())),
            reply_markup: m.reply_markup.clone(),
            location: m.latitude.zip(m.longitude),
            live: live.filter(|&p| p > 0).map(|period| LiveState {
                sent_at: m.received_at,
                period,
                stopped: false,
                moves: Vec::new(),
            }),
            edit_count: 0,
            json: json.clone(),
        };
        self.messages.insert(m.message_id, state);
    }

    fn allows(&self, kind: &str) -> bool {
        match &self.allowed {
            None => !NOT_DEFAULT.contains(&kind),
            Some(set) => set.contains(kind),
        }
    }

    /// Queues an update unless `allowed_updates` filters it out (then it is
    /// dropped for good, as on the real server).
    fn enqueue(&mut self, kind: &str, payload: Value) -> Option<i64> {
        if !self.allows(kind) {
            return None;
        }
        let id = self.next_update_id;
        self.next_update_id += 1;
        let mut update = json!({ "update_id": id });
        update[kind] = payload;
        self.history.insert(id, update.clone());
        self.updates.push_back((id, update));
        Some(id)
    }

    /// `offset` > 0 confirms (drops) every update below it; a negative one
    /// keeps only the last `-offset` updates.
    fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            self.updates.retain(|(id, _)| *id >= offset);
        } else if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.updates.len() > keep {
                self.updates.pop_front();
            }
        }
    }

    fn batch(&self, limit: usize) -> Vec<Value> {
        self.updates
            .iter()
            .take(limit)
            .map(|(_, u)| u.clone())
            .collect()
    }

    fn set_allowed(&mut self, raw: &str) {
        // Absent or unparsable: keep the previous setting.
        let Ok(Value::Array(names)) = serde_json::from_str::<Value>(raw) else {
            return;
        };
        let set: HashSet<String> = names
            .iter()
            .filter_map(Value::as_str)
            .filter(|n| KNOWN_UPDATES.contains(n))
            .map(str::to_owned)
            .collect();
        // `[]` or only unknown names fall back to the default set.
        self.allowed = (!set.is_empty()).then_some(set);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn int_param(params: &BTreeMap<String, String>, name: &str, default: i64) -> i64 {
    params
        .get(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(default)
}

/// `getUpdates`: answers at once when updates are queued or `timeout` is 0,
/// otherwise holds the request until one arrives, the timeout passes, or a
/// newer long poll or a setWebhook supersedes it (409, as the real server
/// does). While a webhook is set it answers 409 at once.
pub(super) async fn get_updates(
    inner: &Arc<Inner>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    if let Err(o) = super::bot_method(inner, uri) {
        return o;
    }
    if lock(inner).two_way.hook.active() {
        return Outcome::Failed(fail(409, CANT_POLL));
    }
    let params = match collect_params(uri, headers, body) {
        Ok(p) => p,
        Err(f) => return Outcome::Failed(f),
    };
    let offset = int_param(&params, "offset", 0);
    let limit = usize::try_from(int_param(&params, "limit", 100).clamp(1, 100)).unwrap_or(100);
    let timeout = int_param(&params, "timeout", 0).clamp(0, 50);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
    let (generation, hooks) = {
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(raw) = params.get("allowed_updates") {
            st.two_way.set_allowed(raw);
        }
        st.two_way.confirm(offset);
        let batch = st.two_way.batch(limit);
        if !batch.is_empty() || timeout == 0 {
            return Outcome::Ok(Value::Array(batch));
        }
        st.two_way.poll_generation += 1;
        (st.two_way.poll_generation, st.two_way.hook.set_count)
    };
    // Wake an older waiting poll so that it answers 409.
    inner.notify.notify_waiters();
    loop {
        let notified = inner.notify.notified();
        {
            let st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.two_way.hook.set_count != hooks {
                return Outcome::Failed(fail(409, POLL_ENDED_BY_WEBHOOK));
            }
            if st.two_way.poll_generation != generation {
                return Outcome::Failed(fail(
                    409,
                    "Conflict: terminated by other getUpdates request; \
                     make sure that only one bot instance is running",
                ));
            }
            let batch = st.two_way.batch(limit);
            if !batch.is_empty() {
                return Outcome::Ok(Value::Array(batch));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            return Outcome::Ok(Value::Array(st.two_way.batch(limit)));
        }
    }
}

/// A two-way method by lowercased name.
type Method = fn(&Inner, &BTreeMap<String, String>) -> Result<Value, Scripted>;

pub(super) fn two_way_method(name: &str) -> Option<Method> {
    Some(match name {
        "answercallbackquery" => answer_callback_query,
        "editmessagetext" => edit_message_text,
        "editmessagereplymarkup" => edit_message_reply_markup,
        "editmessagelivelocation" => edit_message_live_location,
        "stopmessagelivelocation" => stop_message_live_location,
        _ => return None,
    })
}

/// Validates `reply_markup`. Inline keyboards are checked button by button
/// (text, exactly one kind, `callback_data` 1–64 bytes); an empty one counts
/// as none. With `only_inline` (edits) other markups are refused.
pub(super) fn parse_reply_markup(
    params: &BTreeMap<String, String>,
    only_inline: bool,
) -> Result<Option<Value>, Scripted> {
    let Some(raw) = params.get("reply_markup").filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let Ok(Value::Object(markup)) = serde_json::from_str::<Value>(raw) else {
        return Err(bad_request("can't parse reply keyboard markup JSON object"));
    };
    let Some(keyboard) = markup.get("inline_keyboard") else {
        if only_inline {
            return Err(bad_request("inline keyboard expected"));
        }
        return Ok(Some(Value::Object(markup)));
    };
    let structure = || {
        bad_request(
            "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
        )
    };
    let rows = keyboard.as_array().ok_or_else(structure)?;
    let mut checked = Vec::new();
    for row in rows {
        let buttons = row.as_array().ok_or_else(structure)?;
        for button in buttons {
            check_button(button)?;
        }
        if !buttons.is_empty() {
            checked.push(row.clone());
        }
    }
    Ok((!checked.is_empty()).then(|| json!({ "inline_keyboard": checked })))
}

fn check_button(button: &Value) -> Result<(), Scripted> {
    let unparsable = |why: &str| bad_request(format!("can't parse inline keyboard button: {why}"));
    let Some(b) = button.as_object() else {
        return Err(unparsable("InlineKeyboardButton must be an Object"));
    };
    if !b.get("text").is_some_and(Value::is_string) {
        return Err(unparsable("Can't find field \"text\""));
    }
    let given = |k: &str| {
        b.get(k)
            .is_some_and(|v| v.as_str() != Some("") && !v.is_null())
    };
    let url = given("url");
    let data = given("callback_data");
    if data {
        let d = b["callback_data"]
            .as_str()
            .ok_or_else(|| bad_request("BUTTON_DATA_INVALID"))?;
        if d.len() > 64 {
            return Err(bad_request("BUTTON_DATA_INVALID"));
        }
    }
    let others = [
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    ]
    .iter()
    .filter(|k| b.contains_key(**k))
    .count();
    match usize::from(url) + usize::from(data) + others {
        0 => Err(unparsable(
            "Text buttons are unallowed in the inline keyboard",
        )),
        1 => Ok(()),
        // Deliberately strict: the real server silently keeps the first kind.
        _ => Err(unparsable(
            "(stand-in) a button needs exactly one of url, callback_data, …",
        )),
    }
}

/// `live_period` of sendLocation: absent or 0 = a static location.
pub(super) fn parse_live_period(
    params: &BTreeMap<String, String>,
) -> Result<Option<i64>, Scripted> {
    let Some(raw) = params
        .get("live_period")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let wrong = || bad_request("wrong live location period specified");
    let period = raw.parse::<i64>().map_err(|_| wrong())?;
    match period {
        0 => Ok(None),
        60..=86_400 | LIVE_PERIOD_FOREVER => Ok(Some(period)),
        _ => Err(wrong()),
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, super::StandInState> {
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn answer_callback_query(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Value, Scripted> {
    let id = params
        .get("callback_query_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mut st = lock(inner);
    if !st.two_way.queries.contains(&id) {
        return Err(bad_request(QUERY_INVALID));
    }
    st.two_way.answers.push(CallbackAnswer {
        callback_query_id: id,
        text: params.get("text").cloned(),
        show_alert: params
            .get("show_alert")
            .is_some_and(|v| v == "true" || v == "1"),
        received_at: Instant::now(),
    });
    Ok(json!(true))
}

/// Checks the chat and finds the message to edit; returns its id.
fn target(inner: &Inner, params: &BTreeMap<String, String>) -> Result<i64, Scripted> {
    let (chat, _) = check_chat(inner, params)?;
    let chat = normalize_chat(&chat).unwrap_or_default();
    let not_found = || bad_request("message to edit not found");
    let id = params
        .get("message_id")
        .and_then(|m| m.trim().parse::<i64>().ok())
        .ok_or_else(not_found)?;
    let st = lock(inner);
    match st.two_way.messages.get(&id) {
        Some(m) if m.chat_id == chat => Ok(id),
        _ => Err(not_found()),
    }
}

/// Records an accepted edit and returns the Message JSON with `edit_date`.
fn commit_edit(
    inner: &Inner,
    method: &str,
    params: &BTreeMap<String, String>,
    id: i64,
    change: impl FnOnce(&mut MessageState),
) -> Value {
    let mut st = lock(inner);
    let m = st.two_way.messages.get_mut(&id).expect("target() found it");
    change(m);
    m.edit_count += 1;
    m.json["edit_date"] = json!(unix_now());
    match &m.reply_markup {
        Some(markup) => m.json["reply_markup"] = markup.clone(),
        None => {
            if let Some(obj) = m.json.as_object_mut() {
                obj.remove("reply_markup");
            }
        }
    }
    let result = m.json.clone();
    let chat_id = m.chat_id.clone();
    st.two_way.edits.push(Edit {
        method: method.to_owned(),
        chat_id,
        message_id: id,
        params: params.clone(),
        received_at: Instant::now(),
    });
    result
}

fn edit_message_text(inner: &Inner, params: &BTreeMap<String, String>) -> Result<Value, Scripted> {
    // Same text checks as sendMessage (entities, emptiness, length, chat).
    let v = validate_send_message(inner, params)?;
    let markup = parse_reply_markup(params, true)?;
    let id = target(inner, params)?;
    let plain = v.plain_text.unwrap_or_default().trim().to_owned();
    let raw = v.text.map(|t| (t, v.parse_mode));
    {
        let st = lock(inner);
        let m = &st.two_way.messages[&id];
        let live_editable = m.live.as_ref().is_some_and(|l| l.editable(Instant::now()));
        if !m.from_bot || (m.text.is_none() && !live_editable) {
            return Err(bad_request("message can't be edited"));
        }
        if m.text.is_none() {
            return Err(bad_request("there is no text in the message to edit"));
        }
        if m.text.as_deref() == Some(plain.as_str()) && m.raw == raw && m.reply_markup == markup {
            return Err(bad_request(NOT_MODIFIED));
        }
    }
    Ok(commit_edit(inner, "editMessageText", params, id, |m| {
        m.json["text"] = json!(plain);
        m.text = Some(plain);
        m.raw = raw;
        m.reply_markup = markup;
    }))
}

fn edit_message_reply_markup(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Value, Scripted> {
    let markup = parse_reply_markup(params, true)?;
    let id = target(inner, params)?;
    {
        let st = lock(inner);
        let m = &st.two_way.messages[&id];
        // Bots may change the keyboard of any own message, also of an
        // expired live location (TDLib `can_edit_message`, only_reply_markup).
        if !m.from_bot {
            return Err(bad_request("message can't be edited"));
        }
        if m.reply_markup == markup {
            return Err(bad_request(NOT_MODIFIED));
        }
    }
    Ok(commit_edit(
        inner,
        "editMessageReplyMarkup",
        params,
        id,
        |m| {
            m.reply_markup = markup;
        },
    ))
}

/// Checks that message `id` is a live location that can still be edited.
fn check_live(inner: &Inner, id: i64) -> Result<(), Scripted> {
    let st = lock(inner);
    let m = &st.two_way.messages[&id];
    if !m.from_bot {
        return Err(bad_request("message can't be edited"));
    }
    match &m.live {
        Some(live) if live.editable(Instant::now()) => Ok(()),
        Some(_) => Err(bad_request("message can't be edited")),
        // TDLib checks editability before the content type: a static location
        // is not editable, a text message is.
        None if m.location.is_some() => Err(bad_request("message can't be edited")),
        None => Err(bad_request(
            "there is no live location in the message to edit",
        )),
    }
}

/// A latitude or longitude parameter within `limit`, with the Bot API's error texts.
pub(super) fn coordinate(
    params: &BTreeMap<String, String>,
    name: &str,
    limit: f64,
) -> Result<f64, Scripted> {
    let raw = params.get(name).map(|v| v.trim()).unwrap_or("");
    if raw.is_empty() {
        return Err(bad_request(format!("{name} is empty")));
    }
    raw.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && v.abs() <= limit)
        .ok_or_else(|| bad_request(format!("wrong {name}")))
}

fn edit_message_live_location(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Value, Scripted> {
    let point = (
        coordinate(params, "latitude", 90.0)?,
        coordinate(params, "longitude", 180.0)?,
    );
    let id = target(inner, params)?;
    check_live(inner, id)?;
    let markup = parse_reply_markup(params, true)?;
    let new_period = int_param(params, "live_period", 0);
    {
        let st = lock(inner);
        let m = &st.two_way.messages[&id];
        let current = m.live.as_ref().map_or(0, |l| l.period);
        if new_period != 0
            && new_period != LIVE_PERIOD_FOREVER
            && (new_period < 60
                || (current != LIVE_PERIOD_FOREVER && new_period > current + 86_400))
        {
            return Err(bad_request("wrong live location period specified"));
        }
        let same_period = new_period == 0 || new_period == current;
        if m.location == Some(point) && m.reply_markup == markup && same_period {
            return Err(bad_request(NOT_MODIFIED));
        }
    }
    Ok(commit_edit(
        inner,
        "editMessageLiveLocation",
        params,
        id,
        |m| {
            m.location = Some(point);
            m.json["location"]["latitude"] = json!(point.0);
            m.json["location"]["longitude"] = json!(point.1);
            m.reply_markup = markup;
            if let Some(live) = m.live.as_mut() {
                live.moves.push(point);
                if new_period != 0 {
                    live.period = new_period;
                    m.json["location"]["live_period"] = json!(new_period);
                }
            }
        },
    ))
}

fn stop_message_live_location(
    inner: &Inner,
    params: &BTreeMap<String, String>,
) -> Result<Value, Scripted> {
    let id = target(inner, params)?;
    check_live(inner, id)?;
    // The same server path as the edit: no reply_markup removes the keyboard.
    let markup = parse_reply_markup(params, true)?;
    Ok(commit_edit(
        inner,
        "stopMessageLiveLocation",
        params,
        id,
        |m| {
            m.reply_markup = markup;
            if let Some(live) = m.live.as_mut() {
                live.stopped = true;
            }
        },
    ))
}

/// Test-side control and inspection of the two-way state.
impl TelegramStandIn {
    fn notify(&self) {
        self.inner.notify.notify_waiters();
    }

    /// `user` writes `text` in `chat_id` (a private chat when it equals the
    /// user's id). The chat becomes known. A leading `/word` gets a
    /// `bot_command` entity. Returns the update id, or None when
    /// `allowed_updates` filters messages out.
    pub fn user_sends(&self, chat_id: i64, user: &TgUser, text: &str) -> Option<i64> {
        let chat = chat_id.to_string();
        let mut chat_obj = chat_json(&chat, false);
        if chat_id == user.id {
            chat_obj = user.json();
            chat_obj["type"] = json!("private");
            if let Some(obj) = chat_obj.as_object_mut() {
                obj.remove("is_bot");
            }
        }
        let update = {
            let mut st = self.state();
            st.chats.insert(chat.clone());
            let message_id = st.next_message_id;
            st.next_message_id += 1;
            let mut m = json!({"message_id": message_id, "from": user.json(), "chat": chat_obj,
                               "date": unix_now(), "text": text});
            if text.starts_with('/') {
                let command = text.split_whitespace().next().unwrap_or(text);
                m["entities"] = json!([{"type": "bot_command", "offset": 0,
                                        "length": command.encode_utf16().count()}]);
            }
            st.two_way.messages.insert(
                message_id,
                MessageState {
                    message_id,
                    chat_id: chat,
                    from_bot: false,
                    text: Some(text.to_owned()),
                    raw: Some((text.to_owned(), None)),
                    reply_markup: None,
                    location: None,
                    live: None,
                    edit_count: 0,
                    json: m.clone(),
                },
            );
            st.two_way.enqueue("message", m)
        };
        self.notify();
        update
    }

    /// `user` presses the button with `data` on message `message_id`;
    /// panics unless the message currently shows such a button. Returns the
    /// callback query id.
    pub fn press_button(&self, message_id: i64, user: &TgUser, data: &str) -> String {
        let keyboard = self
            .message_state(message_id)
            .unwrap_or_else(|| panic!("Telegram stand-in: no message {message_id} to press on"))
            .reply_markup;
        let has = keyboard
            .as_ref()
            .and_then(|k| k["inline_keyboard"].as_array())
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .any(|b| b["callback_data"].as_str() == Some(data));
        assert!(
            has,
            "Telegram stand-in: message {message_id} has no button with callback_data {data:?}; \
             keyboard: {keyboard:?}"
        );
        self.inject_callback_query(message_id, user, data)
    }

    /// A `callback_query` update for message `message_id` with any `data`
    /// (e.g. forged or stale data; real clients can send those too).
    pub fn inject_callback_query(&self, message_id: i64, user: &TgUser, data: &str) -> String {
        let id = {
            let mut st = self.state();
            let m = st.two_way.messages.get(&message_id).unwrap_or_else(|| {
                panic!("Telegram stand-in: no message {message_id} for a callback query")
            });
            let message = m.json.clone();
            let instance = format!("{}", 7_000_000_000_i64 + m.chat_id.len() as i64 * 7919);
            let id = st.two_way.next_query_id.to_string();
            st.two_way.next_query_id += 1;
            st.two_way.queries.insert(id.clone());
            let query = json!({"id": id, "from": user.json(), "message": message,
                               "chat_instance": instance, "data": data});
            st.two_way.enqueue("callback_query", query);
            id
        };
        self.notify();
        id
    }

    /// Queues any update payload under `kind` (e.g. `"my_chat_member"`).
    pub fn inject_update(&self, kind: &str, payload: Value) -> Option<i64> {
        let id = self.state().two_way.enqueue(kind, payload);
        self.notify();
        id
    }

    /// Forgets every confirmation: each update ever queued is pending again,
    /// as if the `offset`s that confirmed them never reached the server (a
    /// poller that died after acting on them, before its next getUpdates). A
    /// poll whose `offset` passes them drops them again.
    pub fn forget_confirmations(&self) {
        {
            let mut st = self.state();
            let all = st.two_way.history.clone();
            st.two_way.updates = all.into_iter().collect();
        }
        self.notify();
    }

    /// Ids of the updates not yet confirmed by a getUpdates `offset` (or, with
    /// a webhook, by a 2xx answer to their POST).
    pub fn pending_updates(&self) -> Vec<i64> {
        self.state()
            .two_way
            .updates
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// The current state of a sent (or user) message, after all edits.
    pub fn message_state(&self, message_id: i64) -> Option<MessageState> {
        self.state().two_way.messages.get(&message_id).cloned()
    }

    /// Accepted `answerCallbackQuery` calls, in order.
    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.state().two_way.answers.clone()
    }

    /// Accepted edits (text, markup, live location moves and stops), in order.
    pub fn edits(&self) -> Vec<Edit> {
        self.state().two_way.edits.clone()
    }

    /// Positions a live location was moved to (not the sent one).
    pub fn live_moves(&self, message_id: i64) -> Vec<(f64, f64)> {
        self.message_state(message_id)
            .and_then(|m| m.live)
            .map(|l| l.moves)
            .unwrap_or_default()
    }

    /// Lets the live period of `message_id` run out now (instead of waiting
    /// at least 60 s).
    pub fn expire_live_location(&self, message_id: i64) {
        if let Some(live) = self
            .state()
            .two_way
            .messages
            .get_mut(&message_id)
            .and_then(|m| m.live.as_mut())
        {
            live.period = 0;
        }
    }

    /// Waits until at least `n` edits were accepted; panics after `timeout`.
    pub async fn wait_for_edits(&self, n: usize, timeout: Duration) -> Vec<Edit> {
        if self
            .wait_until(timeout, |st| st.two_way.edits.len() >= n)
            .await
            .is_err()
        {
            panic!(
                "Telegram stand-in: expected at least {n} edit(s) within {timeout:?}, got {:#?}\n\
                 rejections: {:#?}",
                self.edits(),
                self.rejection_log()
            );
        }
        self.edits()
    }

    /// Waits until at least `n` callback answers were accepted.
    pub async fn wait_for_callback_answers(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<CallbackAnswer> {
        if self
            .wait_until(timeout, |st| st.two_way.answers.len() >= n)
            .await
            .is_err()
        {
            panic!(
                "Telegram stand-in: expected at least {n} callback answer(s) within {timeout:?}, \
                 got {:#?}\nrejections: {:#?}",
                self.callback_answers(),
                self.rejection_log()
            );
        }
        self.callback_answers()
    }

    /// Waits until every queued update was confirmed by an `offset`.
    pub async fn wait_for_updates_confirmed(&self, timeout: Duration) {
        if self
            .wait_until(timeout, |st| st.two_way.updates.is_empty())
            .await
            .is_err()
        {
            panic!(
                "Telegram stand-in: updates {:?} still unconfirmed after {timeout:?}",
                self.pending_updates()
            );
        }
    }
}
