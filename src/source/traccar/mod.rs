//! The live Traccar source: logs into a Traccar (or BikeTrax) server, follows `/api/socket`, and hands
//! every pushed event — enriched with device, group and geofence names from a cache — to
//! [`Pipeline::ingest`]. Positions drive the relay's own zones ([`crate::geo::ZoneTracker`]).
//!
//! One task per source runs [`run`]: login -> read devices/groups/geofences -> open the socket (cookie,
//! no `Origin`) -> after a reconnect, backfill the gap from `/api/reports/events` -> read frames until
//! the socket fails or stays silent longer than `silence_timeout` -> wait (exponential backoff with
//! jitter, capped) -> again. A 401 on the handshake or a REST call means the session expired: log in
//! again at once. Duplicates from overlapping backfill or double pushes are dropped by the store's
//! dedup on (namespace, event id).

pub mod cache;
pub mod client;
pub mod join;
pub mod notifications;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::event::Envelope;
use crate::pipeline::Pipeline;
use crate::plan::Arrival;
use crate::retry::RetryPolicy;
use crate::store::{Accepted, StoreError};
use crate::traccar_config::TraccarSource;
use cache::Cache;
use client::{Client, Session};
use join::{Joiner, Missing};

/// The live socket.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Events older than the last frame by this much are fetched again after a reconnect: covers clock skew
/// between relay and server and events stamped before they were pushed. Dedup drops the overlap.
const BACKFILL_MARGIN: Duration = Duration::from_secs(60);
/// When the first waiting event's position is read over REST, the events whose wait ends this soon after
/// are asked for in the same request.
const JOIN_BATCH_SLACK: Duration = Duration::from_millis(100);
/// Attempts at storing one event while the store is saturated.
const STORE_ATTEMPTS: u32 = 20;

/// Why a connection ended or could not start. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The server refused the credentials.
    #[error("login refused: {0}")]
    Auth(String),
    /// The session is no longer valid (401): log in again.
    #[error("session expired")]
    Expired,
    /// An HTTP failure (connection refused, 5xx, bad JSON).
    #[error("{0}")]
    Http(String),
    /// The server answered a REST call with an error status.
    #[error("{what}: server answered {status}")]
    Status {
        /// The path asked for.
        what: String,
        /// The HTTP status.
        status: u16,
    },
    /// The server refused a write, saying why (Traccar's message, e.g. `Write access denied`).
    #[error("{what}: server answered {status}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Refused {
        /// The request (`PUT /api/users/7`).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's reason, shortened.
        reason: String,
    },
    /// No answer in time.
    #[error("{0}: no answer in time")]
    Timeout(String),
    /// The WebSocket failed.
    #[error("socket: {0}")]
    Socket(String),
    /// Nothing arrived for longer than the keepalive allows.
    #[error("socket silent for {0:?}: considered dead")]
    Silent(Duration),
    /// The server closed the socket.
    #[error("socket closed by the server")]
    Closed,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

/// What `/healthz` shows of one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// Server URL (credentials are never part of it).
    pub url: String,
    /// Whether the socket is open now.
    pub connected: bool,
    /// Last frame (keepalives included).
    pub last_frame: Option<DateTime<Utc>>,
    /// Reconnects since start.
    pub reconnects: u64,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Devices in the cache.
    pub devices: usize,
    /// Events handed to the pipeline (new or duplicate).
    pub events: u64,
    /// Events that went on without the position they refer to (it could not be had in time).
    pub events_without_position: u64,
    /// Event types (`deviceOffline`) and alarms (`alarm:movement`) that rules can match on this source
    /// but for which the server has no notification with the `web` channel: Traccar never pushes those
    /// over the socket. `None` until the server's notifications have been read.
    pub missing_web_notifications: Option<Vec<String>>,
}

/// The status of every live source, by name.
#[derive(Debug, Default)]
pub struct Statuses(Mutex<BTreeMap<String, SourceStatus>>);

impl Statuses {
    fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(name.to_string()).or_default());
    }

    /// A copy of every source's status.
    pub fn snapshot(&self) -> Vec<SourceStatus> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }
}

/// Runs one source until `shutdown`.
pub async fn run(
    cfg: TraccarSource,
    pipeline: Pipeline,
    statuses: Arc<Statuses>,
    shutdown: CancellationToken,
) {
    let Some(mut conn) = Connection::new(cfg, pipeline, statuses) else {
        return;
    };
    let mut reconnect = Reconnect::new(&conn.cfg);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = conn.session_once() => r,
        };
        conn.statuses
            .update(&conn.cfg.name, |s| s.connected = false);
        conn.flush().await;
        let Err((e, was_up)) = result;
        let delay = reconnect.wait_after(&conn.cfg.name, &e, was_up);
        if matches!(e, SourceError::Expired | SourceError::Auth(_)) {
            conn.session = None;
        }
        tracing::warn!(source = %conn.cfg.name, error = %e, retry_in = ?delay, "live source disconnected");
        conn.statuses.update(&conn.cfg.name, |s| {
            s.reconnects += 1;
            s.last_error = Some(e.to_string());
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    // Events still waiting for their positions are not dropped at shutdown.
    conn.flush().await;
    tracing::info!(source = %conn.cfg.name, "live source stopped");
}

/// How long to wait before the next connection, from how the last ones ended.
struct Reconnect {
    policy: RetryPolicy,
    /// Connections in a row that failed before their socket was up.
    failures: u32,
    /// A session refused on the handshake right after a fresh login is not an expiry: back off.
    expired_in_row: u32,
}

impl Reconnect {
    fn new(cfg: &TraccarSource) -> Reconnect {
        Reconnect {
            policy: RetryPolicy {
                initial_backoff: cfg.backoff_initial,
                max_backoff: cfg.backoff_max,
                ..RetryPolicy::default()
            },
            failures: 0,
            expired_in_row: 0,
        }
    }

    /// The wait after a connection of `source` that ended with `e` (`was_up`: its socket was open,
    /// which resets the backoff).
    fn wait_after(&mut self, source: &str, e: &SourceError, was_up: bool) -> Duration {
        if matches!(e, SourceError::Expired) && (was_up || self.expired_in_row == 0) {
            // The session expired: log in again at once (a failing login then backs off).
            self.expired_in_row = 1;
            tracing::info!(source, "session expired; logging in again");
            return Duration::ZERO;
        }
        if was_up {
            self.expired_in_row = 0;
        }
        self.failures = if was_up { 1 } else { self.failures + 1 };
        let jitter = rand::random_range(-1.0..=1.0);
        self.policy.backoff(self.failures, jitter)
    }
}

/// The state of one source across reconnects.
struct Connection {
    cfg: TraccarSource,
    client: Client,
    pipeline: Pipeline,
    statuses: Arc<Statuses>,
    cache: Cache,
    session: Option<Session>,
    /// Time of the last frame of an earlier connection: where a backfill starts.
    last_frame: Option<DateTime<Utc>>,
    /// Events waiting for the positions they refer to.
    joiner: Joiner,
}

impl Connection {
    /// A source's connection state, its status shown; `None` (logged) when its HTTP client cannot be
    /// built.
    fn new(cfg: TraccarSource, pipeline: Pipeline, statuses: Arc<Statuses>) -> Option<Connection> {
        statuses.update(&cfg.name, |s| {
            s.name = cfg.name.clone();
            s.url = cfg.url.to_string();
        });
        let client = match Client::new(&cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(source = %cfg.name, error = %e, "live source cannot start");
                return None;
            }
        };
        let dir = pipeline.directories.register(&cfg.dedup_as);
        Some(Connection {
            cache: Cache::new(&cfg, dir),
            joiner: Joiner::new(cfg.position_wait),
            cfg,
            client,
            pipeline,
            statuses,
            session: None,
            last_frame: None,
        })
    }

    /// One connection from login to failure (it ends only with one). The flag says whether the socket
    /// was up (frames were read), which resets the backoff.
    async fn session_once(&mut self) -> Result<Infallible, (SourceError, bool)> {
        let down = |e| (e, false);
        let session = self.session().await.map_err(down)?;
        let mut ws = self.open_socket(&session).await.map_err(down)?;
        let connected_at = Utc::now();
        tracing::info!(source = %self.cfg.name, "socket open");
        self.statuses.update(&self.cfg.name, |s| {
            s.connected = true;
            s.devices = self.cache.device_ids().len();
        });
        let up = |e| (e, true);
        if let Some(from) = self.last_frame {
            self.backfill(&session, from, connected_at)
                .await
                .map_err(up)?;
        }
        self.follow(&mut ws, &session).await.map_err(up)
    }

    /// The session in force, or a new one (logged in now).
    async fn session(&mut self) -> Result<Session, SourceError> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let s = self.client.login().await?;
        tracing::info!(source = %self.cfg.name, "logged in");
        self.session = Some(s.clone());
        Ok(s)
    }

    /// Reads what a connection starts from (devices, groups, geofences; the server's notifications),
    /// then opens the socket. A 401 on the handshake is an expired session.
    async fn open_socket(&mut self, session: &Session) -> Result<Socket, SourceError> {
        self.refresh(session).await?;
        self.check_notifications(session).await?;
        let request = self.client.socket_request(session)?;
        match tokio::time::timeout(self.cfg.timeout, tokio_tungstenite::connect_async(request))
            .await
        {
            Err(_) => Err(SourceError::Timeout("socket handshake".into())),
            Ok(Err(tungstenite::Error::Http(resp)))
                if resp.status() == tungstenite::http::StatusCode::UNAUTHORIZED =>
            {
                Err(SourceError::Expired)
            }
            Ok(Err(e)) => Err(SourceError::Socket(socket_error(&e))),
            Ok(Ok((ws, _))) => Ok(ws),
        }
    }

    /// Reads frames until the socket fails, closes or stays silent too long; meanwhile pings, refreshes
    /// the cache and reads overdue positions.
    async fn follow(
        &mut self,
        ws: &mut Socket,
        session: &Session,
    ) -> Result<Infallible, SourceError> {
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.cfg.ping_interval,
            self.cfg.ping_interval,
        );
        let mut refresh = tokio::time::interval_at(
            Instant::now() + self.cfg.refresh_interval,
            self.cfg.refresh_interval,
        );
        let mut deadline = Instant::now() + self.cfg.silence_timeout;
        loop {
            let join_at = self.joiner.next_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(SourceError::Silent(self.cfg.silence_timeout));
                }
                _ = tokio::time::sleep_until(join_at.unwrap_or(deadline)), if join_at.is_some() => {
                    self.join_overdue(session).await?;
                }
                _ = ping.tick() => {
                    ws.send(Message::Ping(Default::default()))
                        .await
                        .map_err(|e| SourceError::Socket(socket_error(&e)))?;
                }
                _ = refresh.tick() => {
                    self.refresh(session).await?;
                    self.check_notifications(session).await?;
                }
                msg = ws.next() => {
                    let msg = match msg {
                        None => return Err(SourceError::Closed),
                        Some(Err(e)) => return Err(SourceError::Socket(socket_error(&e))),
                        Some(Ok(m)) => m,
                    };
                    deadline = Instant::now() + self.cfg.silence_timeout;
                    self.message(msg, session).await?;
                }
            }
        }
    }

    /// One message read from the socket: the time of the last frame, then a text frame handled.
    async fn message(&mut self, msg: Message, session: &Session) -> Result<(), SourceError> {
        let now = Utc::now();
        self.last_frame = Some(now);
        self.statuses
            .update(&self.cfg.name, |s| s.last_frame = Some(now));
        match msg {
            Message::Text(t) => {
                if self.frame(t.as_str()).await? {
                    self.refresh(session).await?;
                }
                Ok(())
            }
            Message::Close(_) => Err(SourceError::Closed),
            _ => Ok(()),
        }
    }

    /// Re-reads devices, groups and geofences.
    async fn refresh(&mut self, s: &Session) -> Result<(), SourceError> {
        let devices = self.client.devices(s).await?;
        let groups = self.client.groups(s).await?;
        let geofences = self.client.geofences(s).await?;
        self.cache.replace(devices, groups, geofences);
        let n = self.cache.device_ids().len();
        self.statuses.update(&self.cfg.name, |st| st.devices = n);
        Ok(())
    }

    /// Compares the server's `web` notifications with what the rules can match on this source, and says
    /// in the log (when it changes) and in the status what Traccar will never push. At connect and every
    /// `refresh_interval`, not on each `devices` frame (a fleet sends many).
    async fn check_notifications(&mut self, s: &Session) -> Result<(), SourceError> {
        let missing = match self.client.notifications(s).await {
            Ok(list) => {
                let rt = self.pipeline.shared.get();
                Some(missing_web_notifications(
                    &self.cfg,
                    &rt.config.rules,
                    &list,
                ))
            }
            Err(SourceError::Expired) => return Err(SourceError::Expired),
            Err(e) => {
                tracing::warn!(source = %self.cfg.name, error = %e, "cannot read the server's notifications");
                None
            }
        };
        let mut changed = false;
        self.statuses.update(&self.cfg.name, |st| {
            changed = st.missing_web_notifications != missing;
            st.missing_web_notifications = missing.clone();
        });
        match missing {
            Some(m) if changed && !m.is_empty() => tracing::warn!(
                source = %self.cfg.name, missing = %m.join(", "),
                "rules match events the server never pushes over the socket: add a notification with the `web` channel for each (see docs/live-source.md, `web` notifications)"
            ),
            Some(_) if changed => {
                tracing::info!(source = %self.cfg.name, "every event type the rules match has a web notification")
            }
            _ => {}
        }
        Ok(())
    }

    /// Fetches the events of every known device between `from` (less a margin, at most `backfill_max`
    /// ago) and `to`, oldest first, and ingests them.
    async fn backfill(
        &mut self,
        s: &Session,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), SourceError> {
        let floor = to - chrono::Duration::from_std(self.cfg.backfill_max).unwrap_or_default();
        let from =
            (from - chrono::Duration::from_std(BACKFILL_MARGIN).unwrap_or_default()).max(floor);
        let mut events = Vec::new();
        for id in self.cache.device_ids() {
            events.extend(self.client.events(s, id, from, to).await?);
        }
        events.sort_by_key(|e| (e.event_time, e.id));
        tracing::info!(source = %self.cfg.name, events = events.len(), %from, %to, "backfill");
        // Reports carry no positions: read the ones the events refer to, in batches.
        let mut joiner = Joiner::new(Duration::ZERO);
        let now = Instant::now();
        for e in events {
            let env = self.cache.envelope(e);
            self.count_known_position(&env);
            joiner.push(env, now);
        }
        self.fetch_positions(s, &mut joiner, now).await?;
        for env in joiner.ready() {
            self.ingest(&env).await?;
        }
        Ok(())
    }

    /// Reads from the REST API the positions that events in `joiner` have waited for until `now`, then
    /// gives up on the rest (they go on without). Only an expired session is an error, after the give-up.
    async fn fetch_positions(
        &self,
        s: &Session,
        joiner: &mut Joiner,
        now: Instant,
    ) -> Result<(), SourceError> {
        let ids = joiner.overdue(now);
        let mut result = Ok(());
        if !ids.is_empty() {
            match self.client.positions(s, &ids).await {
                Ok(found) => {
                    for p in &found {
                        for _ in 0..joiner.position(p) {
                            self.pipeline.metrics.event_position(&self.cfg.name, "rest");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %self.cfg.name, error = %e, positions = ids.len(), "cannot read positions");
                    if matches!(e, SourceError::Expired) {
                        result = Err(e);
                    }
                }
            }
        }
        for m in joiner.give_up(Some(now)) {
            self.position_missing(&m);
        }
        result
    }

    /// The events whose wait for a position on the socket is over: fetch, give up, release.
    async fn join_overdue(&mut self, s: &Session) -> Result<(), SourceError> {
        let mut joiner = std::mem::replace(&mut self.joiner, Joiner::new(self.cfg.position_wait));
        let until = Instant::now() + JOIN_BATCH_SLACK;
        let fetched = self.fetch_positions(s, &mut joiner, until).await;
        self.joiner = joiner;
        self.release().await?;
        fetched
    }

    /// Hands every event that may go to the pipeline, in order.
    async fn release(&mut self) -> Result<(), SourceError> {
        for env in self.joiner.ready() {
            self.ingest(&env).await?;
        }
        Ok(())
    }

    /// When a connection ends (or the source stops): the events still waiting get their positions from
    /// the REST API if the server still answers, and go on in any case.
    async fn flush(&mut self) {
        if self.joiner.is_empty() {
            return;
        }
        let mut joiner = std::mem::replace(&mut self.joiner, Joiner::new(self.cfg.position_wait));
        let far = Instant::now() + self.cfg.position_wait + Duration::from_secs(1);
        if let Some(s) = &self.session {
            let fetch = self.fetch_positions(s, &mut joiner, far);
            if tokio::time::timeout(self.cfg.timeout, fetch).await.is_err() {
                tracing::warn!(source = %self.cfg.name, "positions not read in time");
            }
        }
        for m in joiner.give_up(None) {
            self.position_missing(&m);
        }
        self.joiner = joiner;
        if let Err(e) = self.release().await {
            tracing::error!(source = %self.cfg.name, error = %e, events = self.joiner.len(), "events lost: the store did not take them");
            self.joiner = Joiner::new(self.cfg.position_wait);
        }
    }

    /// Counts an event whose position was known when it arrived.
    fn count_known_position(&self, env: &Envelope) {
        if env.event.position_id != 0 && env.position.is_some() {
            self.pipeline
                .metrics
                .event_position(&self.cfg.name, "socket");
        }
    }

    /// An event goes on without its position: said in the log, the metrics and the status.
    fn position_missing(&self, m: &Missing) {
        tracing::warn!(
            source = %self.cfg.name, event_id = m.event_id, device_id = m.device_id,
            position_id = m.position_id, position_missing = true,
            "event goes on without its position: not on the socket and not readable from the server"
        );
        self.pipeline
            .metrics
            .event_position(&self.cfg.name, "missing");
        self.statuses
            .update(&self.cfg.name, |st| st.events_without_position += 1);
    }

    /// Handles one text frame; returns whether the cache should be refreshed (a `devices` frame).
    /// A frame that is not a Traccar frame is logged and skipped.
    async fn frame(&mut self, text: &str) -> Result<bool, SourceError> {
        let frame: cache::Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let head: String = text.chars().take(120).collect();
                tracing::warn!(source = %self.cfg.name, error = %e, frame = %head, "skipped a malformed frame");
                return Ok(false);
            }
        };
        let refresh = !frame.devices.is_empty();
        for d in frame.devices {
            self.cache.update_device(d);
        }
        let now = Instant::now();
        for p in frame.positions {
            // What "Where is it?" and a live pin read: every position, not only those events wait for.
            let device = self.cache.device(p.device_id);
            self.pipeline
                .whereabouts
                .saw(p.device_id, device.as_ref(), Some(&p), now_ms());
            for _ in 0..self.joiner.position(&p) {
                self.pipeline
                    .metrics
                    .event_position(&self.cfg.name, "socket");
            }
            for env in self.cache.position(p) {
                self.joiner.push(env, now);
            }
        }
        for e in frame.events {
            let env = self.cache.envelope(e);
            self.count_known_position(&env);
            self.joiner.push(env, now);
        }
        self.release().await?;
        Ok(refresh)
    }

    /// Hands one event to the pipeline, waiting while the store is saturated.
    async fn ingest(&self, env: &Envelope) -> Result<(), SourceError> {
        let raw = serde_json::to_string(env).map_err(|e| SourceError::Store(e.to_string()))?;
        let event_type = env.event.event_type.as_str();
        let mut attempt = 0;
        loop {
            let arrival = Arrival {
                source: self.cfg.dedup_as.clone(),
                via: Some(self.cfg.name.clone()),
                txn: None,
                request_id: None,
                received_at_ms: now_ms(),
            };
            match self.pipeline.ingest(&raw, env, arrival).await {
                Ok(accepted) => {
                    let result = match accepted {
                        Accepted::New { deliveries, .. } => {
                            tracing::info!(source = %self.cfg.name, event_id = env.event.id, event_type, deliveries, "event accepted");
                            "accepted"
                        }
                        Accepted::Duplicate => {
                            tracing::debug!(source = %self.cfg.name, event_id = env.event.id, "duplicate event ignored");
                            "duplicate"
                        }
                    };
                    self.pipeline
                        .metrics
                        .event(&self.cfg.name, event_type, result);
                    self.statuses.update(&self.cfg.name, |s| s.events += 1);
                    return Ok(());
                }
                Err(StoreError::Busy) if attempt < STORE_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    self.pipeline
                        .metrics
                        .event(&self.cfg.name, event_type, "unavailable");
                    return Err(SourceError::Store(e.to_string()));
                }
            }
        }
    }
}

/// What rules can match on `cfg`'s source but its server's `notifications` will never push.
pub fn missing_web_notifications(
    cfg: &TraccarSource,
    rules: &crate::rules::RuleSet,
    notifications: &[notifications::Notification],
) -> Vec<String> {
    notifications::missing(&wanted_on(cfg, rules), notifications)
}

/// The event types and alarms the rules can match on `cfg`'s source and need its server to push (the
/// relay's own zones make geofence notifications unnecessary).
pub fn wanted_on(cfg: &TraccarSource, rules: &crate::rules::RuleSet) -> notifications::Wanted {
    let own_zones = !cfg.zones.is_empty() || cfg.geofences_from_server;
    notifications::wanted(rules, &cfg.name, own_zones)
}

/// `trackrelay check --online`: logs in to the server of `cfg` and says what the rules can match there
/// but the server will never push over the socket.
pub async fn check_online(
    cfg: &TraccarSource,
    rules: &crate::rules::RuleSet,
) -> Result<Vec<String>, SourceError> {
    let client = Client::new(cfg)?;
    let session = client.login().await?;
    let list = client.notifications(&session).await?;
    Ok(missing_web_notifications(cfg, rules, &list))
}

/// A tungstenite error in words, without the request (which could carry a URL).
fn socket_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("handshake refused: {}", resp.status()),
        other => other.to_string(),
    }
}
