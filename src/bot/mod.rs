//! Two-way Telegram (an adapter): the relay reads what people send its bots and acts on it. A press
//! on an incident message's button acknowledges the incident, mutes the device for an hour or sends
//! where it is; commands (`/status`, `/where`, `/mute`, `/unmute`, `/ack`, `/help`) do the same by
//! name; [`follow`] edits the messages of an incident when its state changes and moves its live pins.
//! ([`pushover`], beside them, follows Pushover's emergencies up: receipts polled, ringing cancelled.)
//!
//! Updates come by `getUpdates` long polling (works behind NAT, no public URL). Telegram lets one
//! client poll a bot at a time (a second gets 409 Conflict), so with several instances on one
//! database a lease in the store decides which one polls; when it dies another takes over within the
//! lease. The last update handled is stored with the lease: an update delivered twice (the poller died
//! after acting, before recording) is acted on idempotently (an acknowledgement is, a mute makes no
//! second silence for the same press).

pub mod command;
pub mod follow;
mod handle;
pub mod pushover;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use teloxide_core::payloads::{GetUpdatesSetters, SetWebhookSetters};
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::AllowedUpdate;
use teloxide_core::{ApiError, Bot, RequestError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channel::telegram::{TelegramSettings, TwoWay, Updates};
use crate::clock::now_ms;
use crate::directory::{Directories, Whereabouts};
use crate::metrics::Metrics;
use crate::runtime::Shared;
use crate::secret::Secret;
use crate::settings::Config;
use crate::silence_cache::SilenceCache;
use crate::store::Store;

/// How often the set of two-way bots is compared with the configuration (a reload adds or removes
/// one).
const SUPERVISE_EVERY: Duration = Duration::from_secs(2);

/// The two-way bots of a relay and what they act on.
#[derive(Clone)]
pub struct Bots {
    /// The configuration in force.
    pub shared: Arc<Shared>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where devices were last seen.
    pub whereabouts: Arc<Whereabouts>,
    /// The live sources' devices (names of devices not seen since start).
    pub directories: Arc<Directories>,
    /// Silences in force (refreshed after a mute).
    pub silences: Arc<SilenceCache>,
    /// Instruments.
    pub metrics: Arc<Metrics>,
    /// Wakes the incident timer (an acknowledgement owes a notice).
    pub incidents_wake: Arc<Notify>,
    /// Wakes the follow-up (edits and live pins) after an acknowledgement.
    pub follow_wake: Arc<Notify>,
    /// This instance's name in leases (random per start).
    pub holder: String,
}

/// One bot the configuration talks to two-way: every Telegram channel with `two_way` and its token.
#[derive(Debug, Clone)]
pub struct BotConf {
    /// The numeric id (the token's part before `:`): names the bot in logs, leases and offsets.
    pub id: String,
    /// Token.
    pub token: Secret,
    /// Bot API base URL.
    pub api_url: reqwest::Url,
    /// Settings (of the first channel, by name).
    pub two_way: TwoWay,
    /// The channels that send through it.
    pub channels: Vec<String>,
}

impl BotConf {
    /// Whether `other` is the same bot with the same settings and channels.
    pub fn same(&self, other: &BotConf) -> bool {
        self.id == other.id
            && self.token.expose() == other.token.expose()
            && self.api_url == other.api_url
            && self.two_way == other.two_way
            && self.channels == other.channels
    }

    /// A client for this bot whose requests may wait `wait` (a long poll's) beyond the usual.
    pub fn client(&self, wait: Duration) -> Result<Bot, String> {
        let http = reqwest::Client::builder()
            .timeout(wait + Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Bot::with_client(self.token.expose(), http).set_api_url(self.api_url.clone()))
    }

    /// The name of its polling lease.
    fn lease(&self) -> String {
        format!("telegram-poll/{}", self.id)
    }
}

/// A channel's Telegram settings, if it is a Telegram channel.
pub fn telegram(cfg: &Config, channel: &str) -> Option<TelegramSettings> {
    let kind: &dyn std::any::Any = cfg.channels.get(channel)?.kind.as_ref();
    kind.downcast_ref::<TelegramSettings>().cloned()
}

/// The two-way bots of a configuration, by id.
pub fn two_way_bots(cfg: &Config) -> BTreeMap<String, BotConf> {
    let mut out: BTreeMap<String, BotConf> = BTreeMap::new();
    for name in cfg.channels.keys() {
        let Some(s) = telegram(cfg, name) else {
            continue;
        };
        let Some(two_way) = s.two_way else { continue };
        let id = s
            .bot_token
            .expose()
            .split_once(':')
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        out.entry(id.clone())
            .or_insert_with(|| BotConf {
                id,
                token: s.bot_token.clone(),
                api_url: s.api_url.clone(),
                two_way,
                channels: Vec::new(),
            })
            .channels
            .push(name.clone());
    }
    out
}

/// The channels whose messages a follow-up looks after: the two-way Telegram channels ([`follow`])
/// and the Pushover channels ([`pushover`]), by name.
pub fn followed_channels(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = two_way_bots(cfg)
        .into_values()
        .flat_map(|b| b.channels)
        .chain(pushover::pushover_channels(cfg).into_keys())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How often [`Sweep`] looks again while the followed channels stay the same.
const SWEEP_EVERY_MS: i64 = 60_000;

/// Makes final the messages no follow-up looks after (their channel was removed, is no longer
/// two-way, or is now of another kind): each follow-up asks the store only for its own channels, so
/// nobody else would, and they would stay in the index of active messages for good. Each follow-up
/// runs one under its lease: when the followed channels change (a reload) and every minute (an
/// instance still on an older configuration may have sent one meanwhile). Only messages made before
/// this instance took up its followed channels are swept: a later one of a channel unknown here may be
/// another instance's, on a newer configuration that follows it (a rolling update); once every
/// instance runs that configuration, the sweeps reach such messages of removed channels too.
#[derive(Debug, Default)]
pub struct Sweep {
    /// The followed channels of the last sweep, and when it was, unix ms.
    last: Option<(Vec<String>, i64)>,
    /// Since when this instance follows these channels, unix ms.
    since: i64,
}

impl Sweep {
    /// Sweeps if the followed channels changed or a minute passed.
    pub async fn run(&mut self, bots: &Bots) {
        let followed = followed_channels(&bots.shared.get().config);
        let now = now_ms();
        if self
            .last
            .as_ref()
            .is_some_and(|(f, at)| *f == followed && now - at < SWEEP_EVERY_MS)
        {
            return;
        }
        if self.last.as_ref().is_none_or(|(f, _)| *f != followed) {
            self.since = now;
        }
        match bots
            .store
            .stop_peer_messages_except(&followed, self.since)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                messages = n,
                "no longer following up the messages of channels removed or not followed up"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot stop following up removed channels' messages")
            }
        }
        // Tried again in a minute after an error too (the follow-up's own pass reports the store).
        self.last = Some((followed, now));
    }
}

/// A random name for this instance in leases.
pub fn new_holder() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        &crate::secret::new_link_token()[..12]
    )
}

impl Bots {
    /// Polls every two-way bot of the configuration in force (bots added or removed by a reload
    /// included), and runs the follow-up, until `shutdown`; then gives the leases up so that another
    /// instance takes over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pollers: BTreeMap<String, (tokio::task::JoinHandle<()>, CancellationToken)> =
            BTreeMap::new();
        let follow = tokio::spawn(follow::run(self.clone(), shutdown.clone()));
        loop {
            let bots = two_way_bots(&self.shared.get().config);
            pollers.retain(|id, (task, stop)| {
                let keep = bots.contains_key(id) && !task.is_finished();
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (id, conf) in bots {
                pollers.entry(id).or_insert_with(|| {
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(self.clone().poll(conf, stop.clone()));
                    (task, stop)
                });
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(SUPERVISE_EVERY) => {}
            }
        }
        for (_, (task, _)) in pollers {
            let _ = task.await;
        }
        let _ = follow.await;
    }

    /// The bot's configuration now, if it is still two-way.
    fn conf(&self, id: &str) -> Option<BotConf> {
        two_way_bots(&self.shared.get().config).remove(id)
    }

    /// Polls one bot while this instance holds its lease, until `stop`.
    async fn poll(self, conf: BotConf, stop: CancellationToken) {
        let lease = conf.lease();
        let mut leader = false;
        let mut pause = Duration::from_secs(1);
        let mut handler: Option<handle::Handler> = None;
        // How the bot gets its updates as this instance last told Telegram (none yet).
        let mut registered: Option<String> = None;
        while !stop.is_cancelled() {
            let Some(conf) = self.conf(&conf.id) else {
                break;
            };
            let ttl = conf.two_way.lease.as_millis() as i64;
            match self
                .store
                .try_lease(&lease, &self.holder, ttl, now_ms())
                .await
            {
                Ok(true) => {
                    if !leader {
                        tracing::info!(bot = %conf.id, "polling the Telegram bot's updates");
                        leader = true;
                    }
                }
                Ok(false) => {
                    if leader {
                        tracing::info!(bot = %conf.id, "another instance polls the bot now");
                        leader = false;
                    }
                    handler = None;
                    registered = None;
                    wait(&stop, (conf.two_way.lease / 3).min(Duration::from_secs(5))).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(bot = %conf.id, error = %e, "cannot take the bot's polling lease");
                    wait(&stop, Duration::from_secs(2)).await;
                    continue;
                }
            }
            // A reload that changed the bot (its token, API URL, settings or channels): new clients.
            let h = match handler.take().filter(|h| h.conf().same(&conf)) {
                Some(h) => h,
                None => match handle::Handler::new(self.clone(), &conf).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(bot = %conf.id, error = %e, "cannot reach the Telegram bot");
                        wait(&stop, pause).await;
                        pause = (pause * 2).min(Duration::from_secs(60));
                        continue;
                    }
                },
            };
            let done = match conf.two_way.updates {
                Updates::Poll => self.poll_once(&conf, &h, &stop, &mut registered).await,
                Updates::Webhook => self.keep_webhook(&conf, &h, &stop, &mut registered).await,
            };
            match done {
                Ok(()) => {
                    pause = Duration::from_secs(1);
                    handler = Some(h);
                }
                Err(e) => {
                    // Made again next time (a revoked token, a moved API server).
                    tracing::warn!(bot = %conf.id, error = %e, "cannot read the bot's updates");
                    wait(&stop, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(60));
                    registered = None;
                }
            }
        }
        if leader {
            let _ = self.store.release_lease(&lease, &self.holder).await;
        }
    }

    /// In webhook mode, the lease holder tells Telegram where to post (once per term, and whenever the
    /// address changes), then only keeps the lease: the updates come to [`webhook`]'s route.
    async fn keep_webhook(
        &self,
        conf: &BotConf,
        h: &handle::Handler,
        stop: &CancellationToken,
        registered: &mut Option<String>,
    ) -> Result<(), String> {
        let Some(base) = self.shared.get().config.public_url.clone() else {
            return Err("webhook mode needs public_url".into());
        };
        let url = webhook::url(&base, conf);
        // Registered again when the address or the secret (the token) changes.
        let wanted = format!(
            "webhook {url} {} {}",
            webhook::secret(conf).expose(),
            conf.api_url
        );
        if registered.as_deref() != Some(wanted.as_str()) {
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
            h.bot_client()
                .set_webhook(parsed)
                .secret_token(webhook::secret(conf).expose())
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                .send()
                .await
                .map_err(|e| h.redact(&e.to_string()))?;
            tracing::info!(bot = %conf.id, %url, "Telegram posts the bot's updates to the relay");
            *registered = Some(wanted);
        }
        wait(stop, (conf.two_way.lease / 3).min(Duration::from_secs(5))).await;
        Ok(())
    }

    /// One long poll: the updates after the stored offset, each handled, then the offset recorded.
    /// The first of a term removes a webhook a previous configuration set (Telegram refuses
    /// `getUpdates` while one is set).
    async fn poll_once(
        &self,
        conf: &BotConf,
        h: &handle::Handler,
        stop: &CancellationToken,
        registered: &mut Option<String>,
    ) -> Result<(), String> {
        if registered.as_deref() != Some("poll") {
            // Best effort: if it fails, getUpdates says why (409) and the next term tries again.
            if let Err(e) = h.bot_client().delete_webhook().send().await {
                tracing::warn!(bot = %conf.id, error = %h.redact(&e.to_string()), "cannot remove the bot's webhook");
            }
            *registered = Some("poll".into());
        }
        let offset = self
            .store
            .bot_offset(&conf.id)
            .await
            .map_err(|e| e.to_string())?;
        let req = h
            .poller
            .get_updates()
            .offset(offset as i32)
            .timeout(conf.two_way.poll_timeout.as_secs() as u32)
            .limit(50)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
        let updates = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = req.send() => r,
        };
        let updates = match updates {
            Ok(u) => u,
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                return Err(
                    "409 Conflict: another program polls this bot (only one may; give the \
                            relay its own bot, or stop the other poller)"
                        .into(),
                );
            }
            Err(e) => return Err(h.redact(&e.to_string())),
        };
        if updates.is_empty() {
            return Ok(());
        }
        // The wait may have used most of the lease, and acting on an update takes time: renew it before
        // each one, and act only while it is ours (else the new holder gets the rest, as they are not
        // confirmed yet).
        let ttl = conf.two_way.lease.as_millis() as i64;
        // One update may take a few Telegram calls; it must end well within the lease.
        let budget = conf.two_way.lease / 3;
        for u in updates {
            if !self.still_ours(conf, ttl).await? {
                return Ok(());
            }
            let id = i64::from(u.id.0);
            if tokio::time::timeout(budget, h.handle(u)).await.is_err() {
                tracing::warn!(bot = %conf.id, update = id, "an update took too long; left half done");
            }
            // Recorded only while the lease is still ours: a successor may have moved on already.
            if !self.still_ours(conf, ttl).await? {
                return Ok(());
            }
            self.store
                .set_bot_offset(&conf.id, id + 1)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Renews the bot's polling lease: whether this instance still holds it.
    async fn still_ours(&self, conf: &BotConf, ttl: i64) -> Result<bool, String> {
        self.store
            .try_lease(&conf.lease(), &self.holder, ttl, now_ms())
            .await
            .map_err(|e| format!("cannot renew the polling lease: {e}"))
    }
}

/// Sleeps `d`, or less if `stop` comes first.
async fn wait(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}
