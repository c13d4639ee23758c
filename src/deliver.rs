//! The delivery worker: claims due deliveries from the outbox, sends each through its channel, and
//! records the outcome: done, retry at a time the [`RetryPolicy`] decides, or dead letter. Retries,
//! logging and the send deadline are written here once, around [`Channel::send`](crate::channel_config::Channel::send).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel_config::{SendError, Sent};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::noise::digest;
use crate::notification::{Content, Notification};
use crate::retry::{Decision, RetryPolicy};
use crate::runtime::{Runtime, Shared};
use crate::store::{ClaimRef, Claimed, Outcome, Store, StoreError};

/// A send taking longer than this (or than half the claim's lease, `storage.lease`, if that is shorter)
/// is abandoned and retried, whatever the channel's own timeout: a claim never runs out while its
/// send is still running, so a shared store does not hand it to another instance meanwhile.
pub const SEND_DEADLINE: Duration = Duration::from_secs(120);
/// Recording outcomes is retried this long while a shared database is unreachable: a delivery sent
/// but not recorded would be sent again once its lease runs out.
pub const RECORD_PATIENCE: Duration = Duration::from_secs(60);
/// The worker looks for due deliveries at least this often, so rows another process made due (the CLI's
/// `replay`) are noticed.
pub const POLL: Duration = Duration::from_secs(1);
/// While sends are running, claims and outcome records are gathered for at most this long, up to a
/// quarter of the workers each: under load one store call then covers many deliveries, not one.
pub const GATHER: Duration = Duration::from_millis(5);

/// Claims and sends deliveries until shut down.
pub struct Dispatcher {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Configuration and channels.
    pub shared: Arc<Shared>,
    /// Woken when deliveries were enqueued or finished.
    pub wake: Arc<Notify>,
    /// Sends in flight at most.
    pub workers: usize,
    /// How long shutdown waits for sends in flight.
    pub grace: Duration,
    /// Deliveries claimed at intake (see [`crate::pipeline::Pipeline`]).
    pub fast: mpsc::Receiver<Claimed>,
    /// Instruments.
    pub metrics: Arc<Metrics>,
}

/// When the dispatcher asks the store for due deliveries.
struct Polling {
    /// Whether the store may hold deliveries to claim: at start, when woken (deliveries enqueued
    /// without the fast lane, outcomes recorded), after a full claim, and when `check_at` passes (the
    /// next retry or lease expiry falls due, or POLL). Deliveries handed over by the fast lane do not
    /// make the store worth asking: under load that would be a store call per event for nothing.
    dirty: bool,
    /// When to look again though nothing woke the loop.
    check_at: Instant,
    /// When the store was last asked.
    last_claim: Instant,
    /// Deliveries claimed from the store (not handed over by the fast lane) and still being sent: only
    /// their outcomes may let another delivery go (the next one to an ordered recipient; the fast lane
    /// carries unordered deliveries only), so only they, a retry or a stalled record wake the loop to
    /// claim again. Under a steady load every outcome would otherwise cost a claim that finds nothing.
    from_store: HashSet<i64>,
}

impl Dispatcher {
    /// Runs until `shutdown`, then drains within the grace period: claims nothing more from the store,
    /// but sends the deliveries intake claimed and handed over (see `Dispatcher::drain`) and waits for
    /// sends in flight. Sends still unfinished then stay claimed in the store and are sent again after
    /// restart. Stop intake first, so that what it commits until then is handed over and sent.
    ///
    /// Claims and outcomes go to the store in batches: when idle at once, under load every
    /// [`GATHER`] or a quarter of the workers, whichever comes first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tasks: JoinSet<(ClaimRef, Outcome)> = JoinSet::new();
        let mut recording: JoinSet<()> = JoinSet::new();
        let mut finished: Vec<(ClaimRef, Outcome)> = Vec::new();
        // Recordings waiting for the database: no new claims meanwhile, so this instance does not claim
        // its own sent deliveries again if their lease ran out during an outage.
        let stalled = Arc::new(AtomicUsize::new(0));
        let gather = (self.workers / 4).max(1);
        let mut last_record = Instant::now();
        let mut polling = Polling {
            dirty: true,
            check_at: Instant::now(),
            last_claim: Instant::now(),
            from_store: HashSet::new(),
        };
        loop {
            while let Some(r) = tasks.try_join_next() {
                finished.extend(r.ok());
            }
            while recording.try_join_next().is_some() {}
            // Alone or idle, at once; under load, in batches (see GATHER).
            if !finished.is_empty()
                && (finished.len() >= gather || tasks.is_empty() || last_record.elapsed() >= GATHER)
            {
                let wake = wakes(&finished, &mut polling.from_store);
                self.record(&mut finished, &mut recording, &stalled, wake);
                last_record = Instant::now();
            }
            if tasks.is_empty() && finished.is_empty() {
                // A send that panicked left its id behind.
                polling.from_store.clear();
            }
            while tasks.len() < self.workers {
                match self.fast.try_recv() {
                    Ok(d) => self.spawn(&mut tasks, d),
                    Err(_) => break,
                }
            }
            if Instant::now() >= polling.check_at {
                polling.dirty = true;
            }
            let free = self.workers.saturating_sub(tasks.len());
            let claim_now =
                free >= gather || tasks.is_empty() || polling.last_claim.elapsed() >= GATHER;
            let may_claim =
                polling.dirty && free > 0 && claim_now && stalled.load(Ordering::Relaxed) == 0;
            if may_claim && self.claim(&mut tasks, free, &mut polling).await {
                // A full batch: there may be more, claim again at once.
                continue;
            }
            // Sleep until new work, a finished send (which may unblock the next delivery to its
            // recipient), or the next retry falls due.
            let wait = if !finished.is_empty() || (polling.dirty && free > 0 && !claim_now) {
                // Gathering: come back when the batch is due.
                GATHER
            } else if polling.dirty {
                // No room or the store is stalled: a finished send or a wake-up brings the loop back.
                POLL
            } else {
                polling.check_at.saturating_duration_since(Instant::now())
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => polling.dirty = true,
                Some(r) = tasks.join_next(), if !tasks.is_empty() => finished.extend(r.ok()),
                Some(d) = self.fast.recv(), if tasks.len() < self.workers => self.spawn(&mut tasks, d),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.drain(&mut tasks, &mut finished).await;
        self.record(&mut finished, &mut recording, &stalled, false);
        while recording.join_next().await.is_some() {}
    }

    /// Claims up to `free` due deliveries from the store and starts sending them. Returns whether the
    /// batch was full: there may be more, to claim again at once.
    async fn claim(
        &self,
        tasks: &mut JoinSet<(ClaimRef, Outcome)>,
        free: usize,
        polling: &mut Polling,
    ) -> bool {
        polling.last_claim = Instant::now();
        let now = now_ms();
        let lease = self.shared.get().config.storage.lease;
        match self.store.claim(now, free, lease).await {
            Ok(batch) => {
                let full = batch.len() == free;
                for d in batch {
                    polling.from_store.insert(d.id);
                    self.spawn(tasks, d);
                }
                if full {
                    return true;
                }
                // Everything claimable is claimed: look again when the next retry or lease expiry
                // falls due, at the latest after POLL (rows another process made due).
                polling.dirty = false;
                let wait = match self.store.next_due(now).await {
                    Ok(Some(at)) => Duration::from_millis((at - now).max(0) as u64).min(POLL),
                    _ => POLL,
                };
                polling.check_at = polling.last_claim + wait;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim deliveries");
                polling.dirty = false;
                polling.check_at = polling.last_claim + POLL;
            }
        }
        false
    }

    /// At shutdown, within the grace period: the fast lane is closed, and what it still holds, or is
    /// still handed by intake calls that reserved room before (each reservation is used or released),
    /// is sent too, beside the sends in flight. Those deliveries were committed as claimed: left in the
    /// lane they would wait out their lease. They are at most the lane's capacity (one pool's worth),
    /// so for the grace period up to twice `workers` sends may run.
    async fn drain(
        &mut self,
        tasks: &mut JoinSet<(ClaimRef, Outcome)>,
        finished: &mut Vec<(ClaimRef, Outcome)>,
    ) {
        self.fast.close();
        let mut handing_over = true;
        if !tasks.is_empty() {
            tracing::info!(in_flight = tasks.len(), grace = ?self.grace, "waiting for sends in flight");
        }
        let deadline = Instant::now() + self.grace;
        while handing_over || !tasks.is_empty() {
            tokio::select! {
                d = self.fast.recv(), if handing_over => match d {
                    Some(d) => self.spawn(tasks, d),
                    None => handing_over = false,
                },
                Some(r) = tasks.join_next(), if !tasks.is_empty() => finished.extend(r.ok()),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(abandoned = tasks.len(), "sends still in flight at the end of the grace period; they are resent after restart");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    fn spawn(&self, tasks: &mut JoinSet<(ClaimRef, Outcome)>, d: Claimed) {
        let (shared, metrics, store) = (
            self.shared.clone(),
            self.metrics.clone(),
            self.store.clone(),
        );
        tasks.spawn(async move { deliver(&shared, &metrics, store.as_ref(), d).await });
    }

    /// Records finished sends in the background (the loop goes on claiming meanwhile), then, if `wake`
    /// (see [`wakes`]) or the store was unreachable for a while, wakes the loop: the outcome may let the
    /// next delivery to the same recipient go, or a retry needs its time watched. On failure the rows
    /// stay claimed and are sent again after restart (or, with a shared store, after their lease), under
    /// the same idempotency key.
    fn record(
        &self,
        finished: &mut Vec<(ClaimRef, Outcome)>,
        recording: &mut JoinSet<()>,
        stalled: &Arc<AtomicUsize>,
        wake_after: bool,
    ) {
        if finished.is_empty() {
            return;
        }
        let batch = std::mem::take(finished);
        let (store, wake, stalled) = (self.store.clone(), self.wake.clone(), stalled.clone());
        let metrics = self.metrics.clone();
        recording.spawn(async move {
            let n = batch.len();
            let give_up = Instant::now() + RECORD_PATIENCE;
            // Short pauses: the outcome has to land before the lease runs out.
            let mut pause = Duration::from_millis(50);
            let mut waited = false;
            loop {
                match store.finish(batch.clone(), now_ms()).await {
                    Ok(stale) => {
                        dropped_stale(&metrics, &stale);
                        break;
                    }
                    Err(e @ (StoreError::Unavailable(_) | StoreError::Busy))
                        if Instant::now() + pause < give_up =>
                    {
                        if !waited {
                            waited = true;
                            stalled.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::warn!(deliveries = n, error = %e, "cannot record delivery outcomes yet; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                    Err(e) => {
                        tracing::error!(deliveries = n, error = %e, "cannot record delivery outcomes");
                        break;
                    }
                }
            }
            if waited {
                stalled.fetch_sub(1, Ordering::Relaxed);
            }
            if wake_after || waited {
                wake.notify_one();
            }
        });
    }
}

/// Whether recording these outcomes may make a delivery claimable: one was claimed from the store
/// (it may be ordered: the next to its recipient waits for it) or is retried later (its time is
/// watched from the claims' `next_due`). Forgets the finished ones in `from_store`.
fn wakes(finished: &[(ClaimRef, Outcome)], from_store: &mut HashSet<i64>) -> bool {
    let mut wake = false;
    for (at, outcome) in finished {
        wake |= from_store.remove(&at.id) | matches!(outcome, Outcome::Retry { .. });
    }
    wake
}

/// Sends one claimed delivery; returns its outcome.
async fn deliver(
    shared: &Shared,
    metrics: &Metrics,
    store: &dyn Store,
    d: Claimed,
) -> (ClaimRef, Outcome) {
    let rt = shared.get();
    let n = match to_send(&rt, store, &d).await {
        Ok(n) => n,
        Err(outcome) => return (d.claim_ref(), outcome),
    };
    let result = match send(&rt, &n).await {
        Ok(sent) => {
            remember_peer_ref(store, &d, &n, sent).await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    let policy = rt
        .config
        .channels
        .get(&n.channel)
        .map(|c| c.retry)
        .unwrap_or_default();
    let now = now_ms();
    let outcome = decide(
        &policy,
        &d,
        result,
        now,
        rand::rng().random_range(-1.0..=1.0),
    );
    report(metrics, &n, &d, &outcome, now);
    (d.claim_ref(), outcome)
}

/// The notification a claimed delivery sends: as stored, or for a digest, built from its items. When it
/// cannot be had, the outcome to record instead.
async fn to_send(rt: &Runtime, store: &dyn Store, d: &Claimed) -> Result<Notification, Outcome> {
    let n = d.notification().map_err(|e| Outcome::Dead {
        error: format!("stored notification unreadable: {e}"),
    })?;
    match n.content {
        Content::Digest { .. } => {
            expand_digest(rt, store, d.id, n)
                .await
                .map_err(|e| Outcome::Retry {
                    at_ms: now_ms() + 1000,
                    error: format!("cannot read the digest's items: {e}"),
                })
        }
        _ => Ok(n),
    }
}

/// Records the peer's id of a message that is followed up later (an incident message with buttons,
/// edited when the incident is acknowledged; a live pin, moved; a Pushover emergency's receipt, polled
/// and cancelled). Best effort: without it the buttons stay (and still work), the pin stays put and
/// the emergency rings until acknowledged in the app or expired; the delivery itself is done either way.
async fn remember_peer_ref(store: &dyn Store, d: &Claimed, n: &Notification, sent: Sent) {
    let followed = match &n.content {
        // Telegram gives every message an id; only these are followed.
        Content::TelegramText { buttons, .. } => buttons.is_some(),
        Content::TelegramLocation { live_period, .. } => live_period.is_some(),
        // Other kinds return an id only for a message that is followed.
        _ => true,
    };
    if let (Some(peer_ref), true) = (sent.peer_ref, followed) {
        if let Err(e) = store.record_peer_refs(vec![(d.id, peer_ref)]).await {
            tracing::warn!(key = %n.key, error = %e, "cannot record the message's id: its buttons stay, a live pin is not moved");
        }
    }
}

/// Sends `n` through its channel, within the send deadline.
async fn send(rt: &Runtime, n: &Notification) -> Result<Sent, SendError> {
    let deadline = SEND_DEADLINE.min(rt.config.storage.lease / 2);
    match rt.channels.get(&n.channel) {
        Some(ch) => match tokio::time::timeout(deadline, ch.send(n)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}s",
                deadline.as_secs_f64()
            ))),
        },
        None => Err(SendError::permanent(format!(
            "channel '{}' is no longer configured",
            n.channel
        ))),
    }
}

/// Counts and logs the outcome of one attempt.
fn report(metrics: &Metrics, n: &Notification, d: &Claimed, outcome: &Outcome, now: i64) {
    let o = &n.origin;
    let (label, latency) = match outcome {
        Outcome::Delivered => ("sent", Some((now - o.received_at_ms) as f64 / 1000.0)),
        Outcome::Retry { .. } => ("retried", None),
        Outcome::Dead { .. } => ("dead", None),
    };
    metrics.notification(&n.channel, label, latency);
    match outcome {
        Outcome::Delivered => tracing::info!(
            event_id = o.event_id, device = %o.device_name, rule = %o.rule, channel = %n.channel,
            txn = o.txn.as_deref().unwrap_or(""), key = %n.key, attempt = d.attempts,
            latency_ms = now - o.received_at_ms, "delivered"
        ),
        Outcome::Retry { at_ms, error } => tracing::warn!(
            event_id = o.event_id, device = %o.device_name, rule = %o.rule, channel = %n.channel,
            txn = o.txn.as_deref().unwrap_or(""), key = %n.key, attempt = d.attempts,
            retry_in_ms = at_ms - now, error = %error, "send failed; will retry"
        ),
        Outcome::Dead { error } => tracing::error!(
            event_id = o.event_id, device = %o.device_name, rule = %o.rule, channel = %n.channel,
            txn = o.txn.as_deref().unwrap_or(""), key = %n.key, attempt = d.attempts,
            error = %error, "send failed; moved to dead letter"
        ),
    }
}

/// Outcomes the store did not record because their claim was over: the lease ran out and another
/// claim (this instance's or another's) now decides the delivery, or a retried recording had in fact
/// landed. Dropping them is right; they are counted so that a lease too short for the sends shows.
fn dropped_stale(metrics: &Metrics, stale: &[ClaimRef]) {
    for at in stale {
        metrics.stale_outcome();
        tracing::warn!(
            delivery = at.id,
            claim = at.claim,
            attempt = at.attempts,
            "outcome not recorded: the delivery is no longer in flight under this claim (its lease ran out and it was claimed again)"
        );
    }
}

/// A digest's message, built from its items (read from the store: they are fixed once the digest is
/// claimed, as later items start a new digest).
async fn expand_digest(
    rt: &Runtime,
    store: &dyn Store,
    id: i64,
    n: Notification,
) -> Result<Notification, StoreError> {
    let Content::Digest {
        group,
        rule,
        title_template,
        like,
    } = &n.content
    else {
        return Ok(n);
    };
    let items: Vec<Notification> = store
        .digest_items(id)
        .await?
        .iter()
        .filter_map(|c| serde_json::from_str(c).ok())
        .collect();
    let title = digest_title(rt, title_template.as_deref(), rule, group, &items);
    let mut content = digest::build(like, &title, &items);
    // A kind whose body has a shape of its own (a push service's JSON) makes it from the digest's
    // message; a body template still comes first.
    let has_body = rt
        .config
        .channels
        .get(&n.channel)
        .is_some_and(|c| c.body.is_some());
    if let (
        Content::Webhook {
            message: Some(message),
            ..
        },
        false,
    ) = (&content, has_body)
    {
        let own = rt.config.channels.get(&n.channel).and_then(|c| {
            // The kind gets the listed lines; the title is a field of its own.
            let lines = message
                .strip_prefix(title.as_str())
                .map_or(message.as_str(), |m| m.trim_start_matches('\n'));
            // As loud as its loudest item's rule (a channel's rate-limit digest mixes rules).
            let severity = items
                .iter()
                .filter_map(|i| rt.config.rules.get(&i.origin.rule))
                .map(|r| r.severity)
                .min()
                .unwrap_or_default();
            c.kind.digest(&title, lines, severity)
        });
        if let Some(own) = own {
            content = own;
        }
    }
    // A webhook with a body template (a chat's `{"text": ...}`) gets the digest as its message.
    if let Content::Webhook {
        body,
        message: Some(message),
        ..
    } = &mut content
    {
        if let Some(b) = digest_body(rt, &n.channel, rule, message, items.len()) {
            *body = b;
        }
    }
    Ok(Notification { content, ..n })
}

/// A digest's title: the rule's title template on one line, or the default title.
fn digest_title(
    rt: &Runtime,
    template: Option<&str>,
    rule: &str,
    group: &str,
    items: &[Notification],
) -> String {
    let mut devices: Vec<&str> = Vec::new();
    for i in items {
        let name = i.origin.device_name.as_str();
        if !name.is_empty() && !devices.contains(&name) {
            devices.push(name);
        }
    }
    template
        .and_then(|t| {
            rt.config
                .renderer
                .render(
                    t,
                    &minijinja::context! {},
                    minijinja::context! {
                        count => items.len(), rule => rule, group => group, devices => devices,
                    },
                )
                .map_err(
                    |e| tracing::warn!(rule = %rule, error = %e, "digest title template failed"),
                )
                .ok()
        })
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| digest::default_title(items.len(), rule))
}

/// A digest's request body, made by the channel's body template (`None`: it has none, or it failed
/// and the default digest body is sent).
fn digest_body(
    rt: &Runtime,
    channel: &str,
    rule: &str,
    message: &str,
    count: usize,
) -> Option<String> {
    let tmpl = rt.config.channels.get(channel)?.body.as_ref()?;
    let ctx = minijinja::context! {
        message => message, rule => rule, channel => channel, digest => true, count => count,
    };
    rt.config
        .renderer
        .render(tmpl, &minijinja::context! {}, ctx)
        .map_err(|e| {
            tracing::warn!(channel = %channel, error = %e, "webhook body template failed for a digest; sending the default digest body")
        })
        .ok()
}

/// The outcome of one attempt under `policy` (pure).
pub fn decide(
    policy: &RetryPolicy,
    d: &Claimed,
    result: Result<(), SendError>,
    now: i64,
    jitter: f64,
) -> Outcome {
    match result {
        Ok(()) => Outcome::Delivered,
        Err(SendError::Permanent { reason }) => Outcome::Dead { error: reason },
        Err(SendError::Transient {
            reason,
            retry_after,
        }) => {
            let age = Duration::from_millis((now - d.created_at_ms).max(0) as u64);
            match policy.after_transient(d.attempts, age, retry_after, jitter, &reason) {
                Decision::RetryIn(wait) => Outcome::Retry {
                    at_ms: now + wait.as_millis() as i64,
                    error: reason,
                },
                Decision::Dead(error) => Outcome::Dead { error },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: i64) -> ClaimRef {
        ClaimRef {
            id,
            claim: 1,
            attempts: 1,
        }
    }

    /// Outcomes of fast-lane deliveries (unordered, handed over by intake) wake nobody: nothing waits
    /// for them. One claimed from the store, or a retry, does; the finished ones are forgotten.
    #[test]
    fn only_outcomes_that_may_free_a_delivery_wake_the_loop() {
        let mut from_store = HashSet::from([7]);
        assert!(!wakes(&[(at(1), Outcome::Delivered)], &mut from_store));
        let dead = Outcome::Dead {
            error: "HTTP 410".into(),
        };
        assert!(!wakes(&[(at(2), dead.clone())], &mut from_store));
        let retry = Outcome::Retry {
            at_ms: 5,
            error: "HTTP 503".into(),
        };
        assert!(wakes(&[(at(3), retry)], &mut from_store));
        assert!(wakes(
            &[(at(1), Outcome::Delivered), (at(7), dead)],
            &mut from_store
        ));
        assert!(from_store.is_empty());
        assert!(!wakes(&[(at(7), Outcome::Delivered)], &mut from_store));
    }
}
