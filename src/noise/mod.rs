//! Noise control: what keeps a vibrating bike at 3 a.m. from sending two hundred messages.
//!
//! Per rule: cooldown per key, dedup window, geofence debounce, grouping into digests, schedules (quiet
//! hours); per channel and recipient: a rate limit; and silences. The stateless parts (silences,
//! schedules) are decided while planning ([`crate::plan`]); each planned delivery then carries its
//! [`Gates`], and the store decides the stateful parts inside the transaction that accepts the event,
//! with [`Decider`] over the [`State`] rows the gates name. The logic is written once, here, and is
//! pure: the store only loads and saves state rows (locked, where several instances share them), so
//! every backend decides alike and decisions survive restarts.

pub mod digest;
pub mod schedule;
pub mod silence;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;

/// A rule's cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    /// How long the key stays quiet after a notification.
    pub period: Duration,
    /// Template name of the key; `None` = rule and device.
    pub key: Option<String>,
    /// Add "N more suppressed" to the next notification after the cooldown.
    pub summary: bool,
}

/// A rule's grouping into digests (Alertmanager's `group_by`/`group_wait`/`group_interval`).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Template name of the group key; `None` = the rule.
    pub by: Option<String>,
    /// How long the first event of a new group waits for others.
    pub wait: Duration,
    /// Digests of one group are at least this far apart.
    pub interval: Duration,
    /// Template name of the digest's title.
    pub title: Option<String>,
}

/// A rule's noise settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleNoise {
    /// Cooldown per key.
    pub cooldown: Option<Cooldown>,
    /// Identical (rule, device, type, alarm, geofence) events within this window notify once.
    pub dedup: Option<Duration>,
    /// Geofence enter/exit is held this long; the opposite transition meanwhile cancels both.
    pub debounce: Option<Duration>,
    /// Grouping into digests.
    pub group: Option<Group>,
    /// Active hours / quiet hours.
    pub schedule: Option<schedule::Schedule>,
}

impl RuleNoise {
    /// Whether any setting is on.
    pub fn is_empty(&self) -> bool {
        *self == RuleNoise::default()
    }
}

/// What happens over a rate limit: a setting as written, defined with the other raw settings.
pub use crate::config_raw::Over;

/// A channel's rate limit, per recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages at most ...
    pub max: u32,
    /// ... per this period.
    pub per: Duration,
    /// Over the limit.
    pub over: Over,
}

/// The stateful checks one delivery goes through, computed while planning. Deliveries of one rule and
/// event share their rule-level gates (same keys), and the [`Decider`] answers each key once per
/// event, so a rule's email and Telegram message are both sent or both suppressed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Suppressed before any state is consulted (silence, schedule), with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<String>,
    /// Not sent before this time (quiet hours with `defer`), unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// Why `not_before` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_by: Option<String>,
    /// Dedup window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<KeyedWindow>,
    /// Cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<CooldownGate>,
    /// Geofence debounce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<DebounceGate>,
    /// Digest grouping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupGate>,
    /// Rate limit of the channel and recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateGate>,
}

impl Gates {
    /// Whether the store has state to consult.
    pub fn is_stateful(&self) -> bool {
        self.suppress.is_none()
            && (self.dedup.is_some()
                || self.cooldown.is_some()
                || self.debounce.is_some()
                || self.group.is_some()
                || self.rate.is_some())
    }

    /// Whether any check is set.
    pub fn any(&self) -> bool {
        *self != Gates::default()
    }

    /// The state keys the gates read and write.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        [
            self.dedup.as_ref().map(|g| g.key.as_str()),
            self.cooldown.as_ref().map(|g| g.key.as_str()),
            self.debounce.as_ref().map(|g| g.key.as_str()),
            self.group.as_ref().map(|g| g.key.as_str()),
            self.rate.as_ref().map(|g| g.key.as_str()),
            self.rate.as_ref().map(|g| g.digest_key.as_str()),
        ]
        .into_iter()
        .flatten()
    }
}

/// A key and a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedWindow {
    /// State key.
    pub key: String,
    /// Window, ms.
    pub window_ms: i64,
}

/// Cooldown check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CooldownGate {
    /// State key (`cooldown/<rule>/<key>`).
    pub key: String,
    /// Period, ms.
    pub period_ms: i64,
    /// Add the count of suppressed events to the next notification.
    pub summary: bool,
}

/// Geofence debounce check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebounceGate {
    /// State key and hold key of the device and geofence (`geo/<device>/<geofence>`).
    pub key: String,
    /// This event's transition (`geofenceEnter` or `geofenceExit`).
    pub transition: String,
    /// Hold, ms.
    pub delay_ms: i64,
}

/// A geofence transition checked against held opposite transitions of the same device and geofence,
/// for every geofence event when any rule debounces: the rule that holds an exit need not match the
/// enter that cancels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebounceProbe {
    /// `geo/<device>/<geofence>`.
    pub key: String,
    /// `geofenceEnter` or `geofenceExit`.
    pub transition: String,
}

/// Digest grouping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupGate {
    /// Group key (`group/<rule>/<key>/<channel>/<recipient>/<part>`): one digest per recipient.
    pub key: String,
    /// Group wait, ms.
    pub wait_ms: i64,
    /// Group interval, ms.
    pub interval_ms: i64,
    /// Title template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Rate limit check: at most `max` per any window of `per`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateGate {
    /// State key (`rate/<channel>/<recipient>`).
    pub key: String,
    /// Digest group key for `over: digest`.
    pub digest_key: String,
    /// Limit.
    pub max: u32,
    /// Period, ms.
    pub per_ms: i64,
    /// Over the limit.
    pub over: Over,
    /// The delivery cannot be listed in a digest (a map pin): over the limit with `over: digest` it is
    /// suppressed, and takes no slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_digest: bool,
}

/// One row of noise state. The fields mean what the key's kind says (see [`Decider`]); unknown fields
/// are ignored so rows written by a newer version can be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Cooldown/dedup/debounce end, rate limiter's last slot, or open digest's due time.
    #[serde(default)]
    pub until: i64,
    /// Events suppressed by a cooldown since its last notification.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// Cooldown: first suppression of `count`. Debounce: when the held transition happened (0 in rows
    /// of older versions).
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub since: i64,
    /// Debounce: the transition being held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Rate limit: the last send times (at most `max`), unix ms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_zero_i(n: &i64) -> bool {
    *n == 0
}

impl State {
    /// Until when the row matters; the store may forget it after that.
    pub fn expires_at(&self, kind_ttl_ms: i64) -> i64 {
        self.until.max(self.since) + kind_ttl_ms
    }
}

/// A stored state row: the state and when it may be pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// The state.
    pub state: State,
    /// Prune after (unix ms).
    pub expires_at: i64,
}

/// What the gates decided for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send at `at` (now, or later: quiet hours, debounce hold, rate limit).
    Send {
        /// Not before, unix ms.
        at: i64,
        /// Debounce hold key: a later opposite transition cancels the delivery while it waits.
        hold_key: Option<String>,
        /// A line to add to the message ("3 more suppressed").
        note: Option<String>,
        /// Why it waits, when it does.
        waits_for: Option<String>,
    },
    /// Not sent; recorded with the reason.
    Suppress(String),
    /// Folded into the digest of `key`, sent at `due` (or with the digest already waiting).
    Group {
        /// Digest group key.
        key: String,
        /// When a new digest is due.
        due: i64,
        /// Title template name.
        title: Option<String>,
        /// Why (for the record).
        reason: String,
    },
}

/// A held delivery to cancel: (hold key, reason).
pub type Cancel = (String, String);

/// An event whose own time is more than this before its arrival is judged at its own time (see
/// [`judged_at`]), in ms. It is longer than a live event takes to arrive: the webhook is forwarded at
/// once, the live source holds an event for its position for about 2 s and then reads it from the
/// server, and hosts kept by NTP differ by milliseconds; such events keep being judged at their
/// arrival, on one clock. It is shorter than the windows it matters to (a 2-minute debounce, a 10-minute
/// cooldown): what arrives later than this (a backfill after a reconnect, a sender's retry) has
/// been squeezed together in time, and only its own times say what happened within a window.
pub const LATE_EVENT_MS: i64 = 30_000;

/// The time noise control judges an event at: its own time ([`Envelope::own_time`]) when that is
/// more than [`LATE_EVENT_MS`] before `received_at_ms`, else its arrival. The dedup, cooldown and
/// debounce windows and the schedule use it; when a notification is sent (holds, rate limits,
/// digests) stays on the arrival clock, since it is about what the recipient gets now.
///
/// [`Envelope::own_time`]: crate::event::Envelope::own_time
pub fn judged_at(env: &crate::event::Envelope, received_at_ms: i64) -> i64 {
    match env.own_time().map(|t| t.timestamp_millis()) {
        Some(t) if t < received_at_ms - LATE_EVENT_MS => t,
        _ => received_at_ms,
    }
}

/// Decides the gates of one event's deliveries over loaded state, at `now`. Each key is decided once
/// per event (the answer is reused by the event's other deliveries of the same rule).
///
/// Two clocks: `now`, the arrival, says when deliveries go (holds, rate limits, digests); `at`, the
/// time the event is judged at ([`judged_at`]), says which dedup, cooldown and debounce window it
/// falls in. A late event can be older than what a state row records (a live event came first): it is
/// judged against that row on both sides of it, and never sets it back, so the row stays right for
/// the live events that follow.
pub struct Decider<'a> {
    now: i64,
    at: i64,
    states: &'a mut HashMap<String, StateRow>,
    memo: HashMap<String, Result<Option<String>, String>>,
    /// Held deliveries the event cancels.
    pub cancels: Vec<Cancel>,
    /// Keys whose state changed (to write back).
    pub dirty: Vec<String>,
}

/// A delivery on its way to [`Verdict::Send`], as the gates set when it goes and why.
struct Sending {
    at: i64,
    hold_key: Option<String>,
    note: Option<String>,
    waits_for: Option<String>,
}

/// How long state outlives its own times, so a digest interval or a cooldown summary can still see it.
const STATE_GRACE_MS: i64 = 24 * 3600 * 1000;

impl<'a> Decider<'a> {
    /// A decider over `states` (the rows for every key the gates name; missing = fresh).
    pub fn new(now: i64, states: &'a mut HashMap<String, StateRow>) -> Decider<'a> {
        Decider {
            now,
            at: now,
            states,
            memo: HashMap::new(),
            cancels: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Judges the event at `at` (see [`judged_at`]) rather than at its arrival.
    pub fn judging_at(mut self, at: i64) -> Decider<'a> {
        self.at = at;
        self
    }

    fn state(&self, key: &str) -> State {
        self.states
            .get(key)
            .map(|r| r.state.clone())
            .unwrap_or_default()
    }

    fn put(&mut self, key: &str, state: State, ttl_ms: i64) {
        // A late event's state is kept as long after its arrival as a live one's would be: dated by the
        // event's own time alone it could already be past its expiry, and once pruned the next copy of
        // the same old event (a backfill overlap, a retry) would find no cooldown and notify again.
        let late_by = (self.now - self.at).max(0);
        let expires_at = state.expires_at(ttl_ms.max(0) + STATE_GRACE_MS) + late_by;
        self.states
            .insert(key.to_string(), StateRow { state, expires_at });
        if !self.dirty.iter().any(|k| k == key) {
            self.dirty.push(key.to_string());
        }
    }

    /// Checks an event's geofence transition against a held opposite one: when there is one, the held
    /// deliveries are cancelled and this event's debounced deliveries are suppressed (GPS jitter).
    pub fn probe(&mut self, p: &DebounceProbe) {
        let s = self.state(&p.key);
        if let Some(held) = &s.held {
            if *held != p.transition && self.near_held(&s) {
                let reason = format!(
                    "debounce: {held} then {} within the debounce window (GPS jitter at the border); neither is sent",
                    p.transition
                );
                self.cancels
                    .push((hold_key(&p.key, s.since), reason.clone()));
                self.put(&p.key, State::default(), 0);
                self.memo.insert(p.key.clone(), Err(reason));
            }
        }
    }

    /// Decides one delivery: suppressed, grouped into a digest, or sent (now or later).
    pub fn decide(&mut self, g: &Gates) -> Verdict {
        if let Some(reason) = &g.suppress {
            return Verdict::Suppress(reason.clone());
        }
        let mut send = Sending {
            at: g.not_before.unwrap_or(self.now).max(self.now),
            hold_key: None,
            note: None,
            waits_for: g.deferred_by.clone(),
        };
        if let Err(verdict) = self.windows(g, &mut send) {
            return verdict;
        }
        if let Some(gr) = &g.group {
            let due = self.group_due(&gr.key, gr.wait_ms, gr.interval_ms, send.at);
            return Verdict::Group {
                key: gr.key.clone(),
                due,
                title: gr.title.clone(),
                reason: format!("grouped into the digest due {}", rfc3339(due)),
            };
        }
        if let Some(r) = &g.rate {
            if let Err(verdict) = self.rate_limit(r, &mut send) {
                return verdict;
            }
        }
        Verdict::Send {
            at: send.at,
            hold_key: send.hold_key,
            note: send.note,
            waits_for: send.waits_for,
        }
    }

    /// The dedup, cooldown and debounce windows, each decided once per key and event: the delivery is
    /// suppressed, or goes on with a cooldown's note or held for the debounce.
    fn windows(&mut self, g: &Gates, send: &mut Sending) -> Result<(), Verdict> {
        if let Some(d) = &g.dedup {
            self.memoized(&d.key, |s| s.dedup(d))
                .map_err(Verdict::Suppress)?;
        }
        if let Some(c) = &g.cooldown {
            send.note = self
                .memoized(&c.key, |s| s.cooldown(c))
                .map_err(Verdict::Suppress)?;
        }
        if let Some(b) = &g.debounce {
            self.memoized(&b.key, |s| s.debounce(b))
                .map_err(Verdict::Suppress)?;
            send.at = send.at.max(self.now + b.delay_ms);
            send.hold_key = Some(hold_key(&b.key, self.at));
            send.waits_for = Some(format!(
                "debounce: held {} in case of a return across the border",
                human_ms(b.delay_ms)
            ));
        }
        Ok(())
    }

    /// A rate limit over its count: the delivery waits for the next slot, or goes into a digest (map
    /// pins, which digests leave out, are suppressed).
    fn rate_limit(&mut self, r: &RateGate, send: &mut Sending) -> Result<(), Verdict> {
        let (slot, over) = self.rate(r, send.at);
        if !over {
            return Ok(());
        }
        match r.over {
            Over::Wait => {
                send.waits_for = Some(format!(
                    "rate limit: {} per {} to this recipient",
                    r.max,
                    human_ms(r.per_ms)
                ));
                send.at = slot;
                Ok(())
            }
            Over::Digest if r.no_digest => Err(Verdict::Suppress(format!(
                "over the rate limit ({} per {}): map pins are left out of digests",
                r.max,
                human_ms(r.per_ms)
            ))),
            Over::Digest => {
                let due = self.group_due(&r.digest_key, 0, 0, slot);
                Err(Verdict::Group {
                    key: r.digest_key.clone(),
                    due,
                    title: None,
                    reason: format!(
                        "over the rate limit ({} per {}): in the digest due {}",
                        r.max,
                        human_ms(r.per_ms),
                        rfc3339(due)
                    ),
                })
            }
        }
    }

    fn memoized(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut Self) -> Result<Option<String>, String>,
    ) -> Result<Option<String>, String> {
        if let Some(r) = self.memo.get(key) {
            return r.clone();
        }
        let r = f(self);
        self.memo.insert(key.to_string(), r.clone());
        r
    }

    fn dedup(&mut self, d: &KeyedWindow) -> Result<Option<String>, String> {
        let s = self.state(&d.key);
        // The row's window runs from the identical event notified last.
        let notified = s.until - d.window_ms;
        let gap = self.at - notified;
        if s.until > 0 && gap.abs() < d.window_ms {
            let when = if gap >= 0 {
                format!("{} before", human_ms(gap))
            } else {
                format!("{} after this one happened", human_ms(-gap))
            };
            return Err(format!(
                "duplicate: an identical event was notified {when} (dedup window {})",
                human_ms(d.window_ms)
            ));
        }
        if self.at + d.window_ms > s.until {
            self.put(
                &d.key,
                State {
                    until: self.at + d.window_ms,
                    ..Default::default()
                },
                0,
            );
        }
        Ok(None)
    }

    fn cooldown(&mut self, c: &CooldownGate) -> Result<Option<String>, String> {
        let mut s = self.state(&c.key);
        // The key was notified last at `notified`; a late event older than that is also quiet within
        // the period before it (one notification per period either way).
        let notified = s.until - c.period_ms;
        if s.until > 0 && self.at < s.until && self.at > notified - c.period_ms {
            s.since = if s.count == 0 {
                self.at
            } else {
                s.since.min(self.at)
            };
            s.count += 1;
            let until = s.until;
            self.put(&c.key, s, 0);
            let key = c.key.split_once('/').map(|x| x.1).unwrap_or(&c.key);
            return Err(if self.at >= notified {
                format!(
                    "cooldown: `{key}` notified less than {} ago, quiet until {}",
                    human_ms(c.period_ms),
                    rfc3339(until)
                )
            } else {
                format!(
                    "cooldown: `{key}` notified less than {} after this event happened",
                    human_ms(c.period_ms)
                )
            });
        }
        if self.at < notified {
            // Older than the notification the row records, and outside its period: notified, and
            // the row (with its count) is kept for the live events that follow.
            return Ok(None);
        }
        let note = (c.summary && s.count > 0)
            .then(|| format!("({} more suppressed since {})", s.count, rfc3339(s.since)));
        self.put(
            &c.key,
            State {
                until: self.at + c.period_ms,
                ..Default::default()
            },
            0,
        );
        Ok(note)
    }

    /// Whether a transition at the judged time is within the debounce window of the one `s` holds,
    /// on either side of it: a late event can be older than the held transition.
    fn near_held(&self, s: &State) -> bool {
        // The held transition happened at `since` and its window ends at `until`. Rows of older
        // versions have no `since` and compare as they did: before `until`.
        let delay = s.until - s.since;
        self.at < s.until && self.at > s.since - delay
    }

    fn debounce(&mut self, b: &DebounceGate) -> Result<Option<String>, String> {
        let s = self.state(&b.key);
        match &s.held {
            Some(held) if *held != b.transition && self.near_held(&s) => {
                let reason = format!(
                    "debounce: {held} and {} within {} (GPS jitter at the border); neither is sent",
                    b.transition,
                    human_ms(b.delay_ms)
                );
                self.cancels
                    .push((hold_key(&b.key, s.since), reason.clone()));
                self.put(&b.key, State::default(), 0);
                Err(reason)
            }
            _ => {
                let held_at = if s.since > 0 {
                    s.since
                } else {
                    s.until - b.delay_ms
                };
                // A late transition older than the held one leaves it held: a live return within
                // its window must still cancel it.
                if s.held.is_none() || self.at >= held_at {
                    self.put(
                        &b.key,
                        State {
                            until: self.at + b.delay_ms,
                            held: Some(b.transition.clone()),
                            since: self.at,
                            ..Default::default()
                        },
                        0,
                    );
                }
                Ok(None)
            }
        }
    }

    /// When the digest of `key` is due if an item arrives (not before `at`): the open digest's due time
    /// while it waits, else after `wait` and at least `interval` after the previous digest.
    fn group_due(&mut self, key: &str, wait_ms: i64, interval_ms: i64, at: i64) -> i64 {
        let s = self.state(key);
        if s.until > self.now {
            return s.until;
        }
        let due = (at + wait_ms).max(if s.until > 0 {
            s.until + interval_ms
        } else {
            0
        });
        self.put(
            key,
            State {
                until: due,
                ..Default::default()
            },
            interval_ms,
        );
        due
    }

    /// The rate limiter, a sliding log of the last `max` send times: a delivery goes at the earliest
    /// time at which no window of `per` holds more than `max` sends. Returns its slot and whether it
    /// had to wait for it.
    fn rate(&mut self, r: &RateGate, at: i64) -> (i64, bool) {
        let max = r.max.clamp(1, MAX_RATE) as usize;
        let mut s = self.state(&r.key);
        let slot = if s.times.len() >= max {
            at.max(s.times[s.times.len() - max] + r.per_ms)
        } else {
            at
        };
        let over = slot > at;
        if over && r.over == Over::Digest {
            if r.no_digest {
                // Suppressed (see `decide`): the slot stays free for what a digest can carry.
                return (slot, true);
            }
            // A digest already waiting takes the item without a slot of its own.
            let open = self.state(&r.digest_key);
            if open.until > self.now {
                return (open.until, true);
            }
        }
        s.times.push(slot);
        if s.times.len() > max {
            s.times.drain(..s.times.len() - max);
        }
        s.until = slot;
        self.put(&r.key, s, r.per_ms);
        (slot, over)
    }
}

/// Rate limits count at most this many messages per period (the log of send times is kept per
/// recipient).
pub const MAX_RATE: u32 = 1000;

/// The hold key of a transition of the debounce state `key` that happened at `at`: a return cancels
/// the deliveries of the transition its state row holds, not others of the same device and geofence
/// (a late one from an hour before, held after it arrived, is no jitter of it). Rows of older versions
/// hold by the bare key, and their state rows have no time.
fn hold_key(key: &str, at: i64) -> String {
    if at == 0 {
        key.to_string()
    } else {
        format!("{key}@{at}")
    }
}

/// The debounce state key of a geofence event: its device and geofence.
pub fn debounce_key(env: &crate::event::Envelope) -> String {
    format!("geo/{}/{}", env.device_id(), env.event.geofence_id)
}

/// `90s` → "1m 30s".
pub fn human_ms(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis((ms.max(0) as u64 / 1000) * 1000)).to_string()
}

#[cfg(test)]
mod tests;
