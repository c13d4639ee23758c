//! Pushover emergencies after they are sent, from the receipts the delivery worker recorded
//! ([`crate::store::PeerMessage`]s of Pushover channels): while the incident is open, a receipt is
//! asked whether someone acknowledged the emergency in the app (every `emergency.poll` when the
//! message has no callback; as a safety net every [`CALLBACK_POLL`] when it has one, in case
//! Pushover cannot reach `public_url`), and the incident is acknowledged when it was; once the
//! incident is acknowledged or resolved by anyone else (a Telegram button, the link, the API), the
//! emergency is cancelled so that the phones stop ringing. A receipt is left alone once its emergency
//! has stopped ringing (acknowledged, cancelled or expired).
//!
//! Like the Telegram follow-up, it is driven by the store, and with several instances one of them
//! (the holder of a lease) does it. Each asks the store only for its own channels' messages, so that
//! neither fills the other's batch (Telegram's stay active until their incident is resolved, and
//! would keep the receipts out); those of channels removed are made final by a [`super::Sweep`].
//!
//! What this instance remembers of an emergency is lost at a restart (or when another instance
//! takes the lease): the delivery's own time bounds how long it can still ring, so an emergency
//! long expired is made final without asking Pushover again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Bots;
use crate::channel::pushover::{Api, PushoverSettings, Stored, EMERGENCY, MIN_RECEIPT_POLL};
use crate::channel_config::SendError;
use crate::clock::now_ms;
use crate::incident::{AckSource, Status};
use crate::incident_service::{acknowledge, IncidentError, Which};
use crate::notification::Notification;
use crate::settings::Config;
use crate::store::{IncidentRow, PeerMessage};

/// How often the receipts are looked at (each is asked at most every `emergency.poll`).
const PASS_EVERY: Duration = Duration::from_secs(1);
/// The lease (one instance of several polls and cancels).
const LEASE: &str = "pushover-receipts";
/// Its length.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// Messages looked at in one pass.
const BATCH: usize = 1000;
/// A pass stops after this long (well within [`LEASE_TTL`]); the rest waits for the next one.
const PASS_BUDGET: Duration = Duration::from_secs(8);
/// A receipt whose emergency has a callback is still asked this often: the callback may never come
/// (a `public_url` that only people on a VPN reach, the relay down when Pushover called).
pub const CALLBACK_POLL: Duration = Duration::from_secs(60);
/// An emergency is taken to have stopped ringing this long after its `expire`.
const EXPIRY_GRACE_MS: i64 = 60_000;
/// Longest wait between two failed cancellations.
const MAX_PAUSE_MS: i64 = 300_000;
/// The longest a request to Pushover may take here, whatever the channel's `timeout`: a pass (at
/// most [`PASS_BUDGET`] and one request) ends well within [`LEASE_TTL`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after its delivery was queued an emergency is taken to be sent at the latest, at least:
/// its retries' `max_age` when longer (the default is a day).
const MIN_SEND_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What the follow-up keeps between passes.
#[derive(Default)]
struct State {
    /// Clients by channel (made again when a reload changes its token or API URL).
    apis: HashMap<String, Api>,
    /// Delivery → when its receipt is asked next, unix ms (none: an interval after it was sent).
    poll_at: HashMap<i64, i64>,
    /// Delivery → not looked at before this, unix ms (after a failed cancellation).
    pause_until: HashMap<i64, i64>,
    /// Delivery → failed cancellations in a row.
    failures: HashMap<i64, u32>,
    /// Delivery → when this instance first saw it, unix ms: about when it was sent (the delivery's
    /// own time is when it was queued, which retries may have left far behind).
    seen: HashMap<i64, i64>,
    /// Makes final the messages of channels nobody follows up.
    sweep: super::Sweep,
}

/// The incident of an emergency, as far as its receipt is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incident {
    /// Still open: someone must acknowledge.
    Open,
    /// Acknowledged, resolved or gone: the ringing must stop.
    Settled,
    /// Its stored state cannot be read by this version: left alone for now.
    Unreadable,
}

/// What to do with one emergency now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Ask its receipt.
    Poll,
    /// Cancel it.
    Cancel,
    /// Nothing now: the poll is not due.
    Idle,
    /// Nothing before this time (unix ms).
    Pause(i64),
    /// Never again: it no longer rings.
    Stop,
}

/// What to do with an emergency sent at `sent_ms` that rings `expire_s`, polled every
/// `interval`, next due at `due` (none: never polled yet), of an incident that is `incident`.
fn action(
    incident: Incident,
    sent_ms: i64,
    expire_s: u64,
    interval: Duration,
    due: Option<i64>,
    now: i64,
) -> Action {
    let rings_until = sent_ms + expire_s as i64 * 1000 + EXPIRY_GRACE_MS;
    if now >= rings_until {
        return Action::Stop;
    }
    match incident {
        Incident::Unreadable => Action::Pause(now + CALLBACK_POLL.as_millis() as i64),
        Incident::Settled => Action::Cancel,
        Incident::Open => {
            // Nobody acknowledges in the first instant: the first poll is one interval after sending.
            let due = due.unwrap_or(sent_ms + interval.as_millis() as i64);
            if now >= due {
                Action::Poll
            } else {
                Action::Idle
            }
        }
    }
}

/// About when an emergency was sent: when this instance first saw it (`seen`), but no later than its
/// delivery (queued at `created_ms`) can have been sent, its retries giving up after `max_age`: after
/// a restart, `seen` is now, and an emergency long expired would be asked about once more.
fn sent_at(seen: i64, created_ms: i64, max_age: Duration) -> i64 {
    let window = max_age.max(MIN_SEND_WINDOW).as_millis() as i64;
    seen.min(created_ms.saturating_add(window))
}

/// The Pushover channels of a configuration, by name.
pub fn pushover_channels(cfg: &Config) -> BTreeMap<String, PushoverSettings> {
    cfg.channels
        .iter()
        .filter_map(|(name, c)| {
            let kind: &dyn std::any::Any = c.kind.as_ref();
            let s = kind.downcast_ref::<PushoverSettings>()?;
            Some((name.clone(), s.clone()))
        })
        .collect()
}

/// Follows the emergencies up until `shutdown`.
pub async fn run(bots: Bots, shutdown: CancellationToken) {
    let mut state = State::default();
    let mut held = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(PASS_EVERY) => {}
        }
        let channels = pushover_channels(&bots.shared.get().config);
        if channels.is_empty() {
            continue;
        }
        let ttl = LEASE_TTL.as_millis() as i64;
        held = matches!(
            bots.store
                .try_lease(LEASE, &bots.holder, ttl, now_ms())
                .await,
            Ok(true)
        );
        if !held {
            continue;
        }
        state.sweep.run(&bots).await;
        if let Err(e) = pass(&bots, &channels, &mut state, &shutdown).await {
            tracing::warn!(error = %e, "cannot follow up Pushover emergencies");
        }
    }
    if held {
        let _ = bots.store.release_lease(LEASE, &bots.holder).await;
    }
}

/// One look at every emergency still ringing, within [`PASS_BUDGET`].
async fn pass(
    bots: &Bots,
    channels: &BTreeMap<String, PushoverSettings>,
    state: &mut State,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    // Only these channels' messages: Telegram's, older and active until their incident is
    // resolved, would otherwise fill the batch and keep the receipts out.
    let names: Vec<String> = channels.keys().cloned().collect();
    let msgs = bots
        .store
        .active_peer_messages(&names, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut incidents: HashMap<i64, Option<IncidentRow>> = HashMap::new();
    let mut looked_at = HashSet::new();
    for m in msgs {
        if shutdown.is_cancelled() || started.elapsed() > PASS_BUDGET {
            return Ok(());
        }
        let Some(s) = channels.get(&m.channel) else {
            continue;
        };
        looked_at.insert(m.delivery_id);
        let now = now_ms();
        if state
            .pause_until
            .get(&m.delivery_id)
            .is_some_and(|t| *t > now)
        {
            continue;
        }
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
        let api = match state.apis.get(&m.channel).filter(|a| a.serves(s)) {
            Some(a) => a.clone(),
            None => {
                let a = Api::new(&PushoverSettings {
                    timeout: s.timeout.min(REQUEST_TIMEOUT),
                    ..s.clone()
                })?;
                state.apis.insert(m.channel.clone(), a.clone());
                a
            }
        };
        let e = Emergency {
            bots,
            m: &m,
            api: &api,
            poll: s.emergency.poll,
            max_age: bots
                .shared
                .get()
                .config
                .channels
                .get(&m.channel)
                .map_or(MIN_SEND_WINDOW, |c| c.retry.max_age),
        };
        e.follow(row.as_ref(), state, now).await;
    }
    // Messages no longer followed (done here or by another instance) are forgotten.
    state.poll_at.retain(|id, _| looked_at.contains(id));
    state.pause_until.retain(|id, _| looked_at.contains(id));
    state.failures.retain(|id, _| looked_at.contains(id));
    state.seen.retain(|id, _| looked_at.contains(id));
    state.apis.retain(|name, _| channels.contains_key(name));
    Ok(())
}

/// Records that a message is never looked at again.
async fn stop(bots: &Bots, m: &PeerMessage) {
    if let Err(e) = bots.store.set_peer_shown(m.delivery_id, "stopped").await {
        tracing::warn!(error = %e, "cannot record a Pushover emergency's follow-up");
    }
}

/// One emergency being followed up.
struct Emergency<'a> {
    bots: &'a Bots,
    m: &'a PeerMessage,
    api: &'a Api,
    poll: Duration,
    /// The channel's retries give up after this.
    max_age: Duration,
}

impl Emergency<'_> {
    /// Polls, cancels or stops following the emergency, as its incident's state asks.
    async fn follow(&self, row: Option<&IncidentRow>, state: &mut State, now: i64) {
        let id = self.m.delivery_id;
        let stored = serde_json::from_str::<Notification>(&self.m.payload)
            .ok()
            .and_then(|n| Some((Stored::of(&n.content)?, n.key)))
            .filter(|(s, _)| s.priority == EMERGENCY);
        let Some((stored, key)) = stored else {
            stop(self.bots, self.m).await;
            return;
        };
        let incident = match row.map(|r| &r.state) {
            None => Incident::Settled,
            Some(Ok(s)) if matches!(s.status, Status::Open) => Incident::Open,
            Some(Ok(_)) => Incident::Settled,
            Some(Err(_)) => Incident::Unreadable,
        };
        let interval = if stored.callback.is_some() {
            self.poll.max(CALLBACK_POLL)
        } else {
            self.poll
        };
        let expire_s = stored.expire_s.unwrap_or(10_800);
        let due = state.poll_at.get(&id).copied();
        let seen = *state.seen.entry(id).or_insert(now);
        let sent = sent_at(seen, self.m.created_at_ms, self.max_age);
        match action(incident, sent, expire_s, interval, due, now) {
            Action::Stop => {}
            Action::Idle => return,
            Action::Pause(at) => {
                state.pause_until.insert(id, at);
                return;
            }
            Action::Poll => {
                if let Some(at) = self.poll(now, interval).await {
                    state.poll_at.insert(id, at);
                    return;
                }
            }
            Action::Cancel => match self.api.cancel_by_tag(&key).await {
                Ok(()) => {}
                Err(SendError::Permanent { reason }) => {
                    tracing::warn!(delivery = id, error = %reason, "cannot cancel a Pushover emergency; left as it is");
                }
                Err(SendError::Transient { reason, .. }) => {
                    let n = state.failures.entry(id).or_default();
                    *n += 1;
                    tracing::warn!(delivery = id, error = %reason, failures = *n, "cannot cancel a Pushover emergency yet");
                    let pause = MIN_RECEIPT_POLL.as_millis() as i64 * (1 << (*n).min(6));
                    state.pause_until.insert(id, now + pause.min(MAX_PAUSE_MS));
                    return;
                }
            },
        }
        // It no longer rings: never looked at again.
        state.poll_at.remove(&id);
        state.pause_until.remove(&id);
        state.failures.remove(&id);
        state.seen.remove(&id);
        stop(self.bots, self.m).await;
    }

    /// Asks the receipt; acknowledges the incident when the emergency was acknowledged. When to look
    /// again (`None`: never).
    async fn poll(&self, now: i64, interval: Duration) -> Option<i64> {
        let again = now + interval.as_millis() as i64;
        let r = match self.api.receipt(&self.m.peer_ref).await {
            Ok(r) => r,
            Err(SendError::Permanent { reason }) => {
                tracing::warn!(delivery = self.m.delivery_id, error = %reason, "cannot poll a Pushover receipt; left as it is");
                return None;
            }
            Err(SendError::Transient { reason, .. }) => {
                tracing::warn!(delivery = self.m.delivery_id, error = %reason, "cannot poll a Pushover receipt yet");
                return Some(again);
            }
        };
        if r.acknowledged == 1 {
            return self.acknowledged(r.acknowledged_by_device.as_deref()).await;
        }
        (r.expired != 1).then_some(again)
    }

    /// Acknowledges the incident for the device the emergency was acknowledged on.
    async fn acknowledged(&self, device: Option<&str>) -> Option<i64> {
        let device: String = device
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(60)
            .collect();
        let by = match device.trim() {
            "" => format!("Pushover ({})", self.m.channel),
            d => format!("Pushover, {d} ({})", self.m.channel),
        };
        let rt = self.bots.shared.get();
        let id = self.m.incident_ref;
        let now = now_ms();
        let r = acknowledge(
            self.bots.store.as_ref(),
            &rt.config.rules,
            &Which::Id(id),
            &by,
            AckSource::Pushover,
            false,
            now,
        )
        .await;
        match r {
            Ok(a) => {
                if a.changed {
                    tracing::info!(incident = id, by, "incident acknowledged in Pushover");
                    let after = (now - a.state.opened_at_ms) as f64 / 1000.0;
                    self.bots.metrics.incident_acknowledged(after);
                    self.bots.incidents_wake.notify_one();
                    self.bots.follow_wake.notify_one();
                }
                None
            }
            Err(
                IncidentError::NotFound | IncidentError::Resolved(_) | IncidentError::Unreadable(_),
            ) => None,
            Err(e) => {
                tracing::warn!(incident = id, error = %e, "cannot acknowledge from Pushover yet");
                Some(now + MIN_RECEIPT_POLL.as_millis() as i64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(15);

    #[test]
    fn an_open_incident_is_polled_an_interval_after_sending_then_every_interval() {
        let a = |due, now| action(Incident::Open, 1_000, 3600, POLL, due, now);
        assert_eq!(a(None, 1_000), Action::Idle);
        assert_eq!(a(None, 15_999), Action::Idle);
        assert_eq!(a(None, 16_000), Action::Poll);
        assert_eq!(a(Some(31_000), 31_000), Action::Poll);
        assert_eq!(a(Some(31_000), 20_000), Action::Idle);
    }

    #[test]
    fn a_settled_incident_cancels_until_the_emergency_stopped_ringing_anyway() {
        let a = |inc, now| action(inc, 0, 60, POLL, None, now);
        assert_eq!(a(Incident::Settled, 5_000), Action::Cancel);
        assert_eq!(a(Incident::Settled, 120_000), Action::Stop);
        assert_eq!(a(Incident::Open, 120_000), Action::Stop);
        assert_eq!(a(Incident::Unreadable, 5_000), Action::Pause(65_000));
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn after_a_restart_an_emergency_long_expired_stops_without_a_request() {
        let day = Duration::from_secs(24 * 3600);
        // Seen for the first time now, queued two days ago with retries giving up after a day:
        // sent a day ago at the latest, so an hour's ringing is long over.
        let now = 48 * HOUR;
        let sent = sent_at(now, 0, day);
        assert_eq!(sent, 24 * HOUR);
        for inc in [Incident::Open, Incident::Settled, Incident::Unreadable] {
            assert_eq!(action(inc, sent, 3600, POLL, None, now), Action::Stop);
        }
        // Queued an hour ago: it may have been sent just now, and is asked as usual.
        let sent = sent_at(now, now - HOUR, day);
        assert_eq!(sent, now);
        assert_eq!(
            action(Incident::Settled, sent, 3600, POLL, None, now),
            Action::Cancel
        );
        // Longer retries send later; shorter ones are given a day all the same.
        assert_eq!(sent_at(now, 0, 3 * day), now);
        assert_eq!(sent_at(now, 0, Duration::from_secs(60)), 24 * HOUR);
    }

    /// The receipts' follow-up asks the store for the Pushover channels only, and the sweep keeps
    /// every followed channel's messages (the two-way Telegram ones too).
    #[test]
    fn the_follow_up_asks_for_its_own_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trackrelay.yaml");
        let key = "azGDORePK8gMaC0QOYAMyEEuzJnyUi";
        let yaml = format!(
            "storage: {{ data_dir: \"{}\" }}\nchannels:\n\
             \x20 push: {{ type: pushover, token: {key}, user: {key} }}\n\
             \x20 tg: {{ type: telegram, bot_token: \"1:x\", chat_id: 1, two_way: {{}} }}\n\
             \x20 plain: {{ type: telegram, bot_token: \"2:x\", chat_id: 1 }}\n\
             \x20 hook: {{ type: webhook, url: \"http://127.0.0.1:9/\" }}\n\
             rules: [{{ name: a, match: {{ type: alarm }}, notify: [{{ channel: hook }}] }}]\n",
            dir.path().display()
        );
        std::fs::write(&path, yaml).unwrap();
        let cfg = Config::load_with_env(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = pushover_channels(&cfg).into_keys().collect();
        assert_eq!(names, ["push"]);
        assert_eq!(super::super::followed_channels(&cfg), ["push", "tg"]);
    }
}
