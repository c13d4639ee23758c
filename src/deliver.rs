//! The delivery worker: claims due deliveries from the outbox, sends each through its channel, and
//! records the outcome: done, retry at a time the [`RetryPolicy`] decides, or dead letter. Retries,
//! logging and the send deadline are written here once, around [`Channel::send`].

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::channel::SendError;
use crate::retry::{Decision, RetryPolicy};
use crate::store::{now_ms, Claimed, Outcome, Store};

/// A claim is held this long; a PostgreSQL backend hands an expired claim to another instance.
pub const LEASE: Duration = Duration::from_secs(300);
/// A send taking longer than this is abandoned and retried, whatever the channel's own timeout.
pub const SEND_DEADLINE: Duration = Duration::from_secs(120);
/// The worker looks for due deliveries at least this often, so rows another process made due (the CLI's
/// `replay`) are noticed.
pub const POLL: Duration = Duration::from_secs(1);

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
}

impl Dispatcher {
    /// Runs until `shutdown`, then waits up to the grace period for sends in flight. Sends still
    /// unfinished then stay claimed in the store and are sent again after restart.
    pub async fn run(self, shutdown: CancellationToken) {
        let sem = Arc::new(Semaphore::new(self.workers));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let free = sem.available_permits();
            let mut full_batch = false;
            if free > 0 {
                match self.store.claim(now_ms(), free, LEASE).await {
                    Ok(batch) => {
                        full_batch = batch.len() == free;
                        for d in batch {
                            let permit = sem
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("semaphore is never closed");
                            let (store, shared, wake) =
                                (self.store.clone(), self.shared.clone(), self.wake.clone());
                            tasks.spawn(async move {
                                deliver(&*store, &shared, d).await;
                                drop(permit);
                                wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim deliveries"),
                }
            }
            if full_batch {
                continue;
            }
            let wait = match self.store.next_due().await {
                Ok(Some(at)) if at > now_ms() => {
                    Duration::from_millis((at - now_ms()) as u64).min(POLL)
                }
                _ => POLL,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let n = tasks.len();
        if n > 0 {
            tracing::info!(in_flight = n, grace = ?self.grace, "waiting for sends in flight");
        }
        let drained = tokio::time::timeout(self.grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(abandoned = tasks.len(), "sends still in flight at the end of the grace period; they are resent after restart");
            tasks.abort_all();
        }
    }
}

/// Sends one claimed delivery and records the outcome.
async fn deliver(store: &dyn Store, shared: &Shared, d: Claimed) {
    let rt = shared.get();
    let n = &d.notification;
    let result = match rt.channels.get(&n.channel) {
        Some(ch) => match tokio::time::timeout(SEND_DEADLINE, ch.send(n)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}s",
                SEND_DEADLINE.as_secs()
            ))),
        },
        None => Err(SendError::permanent(format!(
            "channel '{}' is no longer configured",
            n.channel
        ))),
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
    let o = &n.origin;
    match &outcome {
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
    if let Err(e) = store.finish(d.id, outcome, now).await {
        // The row stays claimed; it is sent again after its lease or a restart, under the same key.
        tracing::error!(delivery = d.id, error = %e, "cannot record the delivery outcome");
    }
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
