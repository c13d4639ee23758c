//! The path of one event: rules -> render -> store (event and deliveries in one transaction) -> wake
//! the delivery worker. Sources (the webhook, the Traccar WebSocket) all call [`Pipeline::ingest`].

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::app::Shared;
use crate::event::Envelope;
use crate::metrics::Metrics;
use crate::noise::silence::SilenceCache;
use crate::noise::{debounce_key, judged_at, DebounceProbe};
use crate::plan::{plan, Arrival};
use crate::store::{Accepted, Claimed, NewDelivery, NewEvent, Status, Store, StoreError};

/// Shared by every source.
#[derive(Clone)]
pub struct Pipeline {
    /// Configuration and channels.
    pub shared: Arc<Shared>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Wakes the delivery worker.
    pub wake: Arc<Notify>,
    /// Hands deliveries claimed at intake straight to the worker.
    pub fast: mpsc::Sender<Claimed>,
    /// Instruments.
    pub metrics: Arc<Metrics>,
    /// Silences in force.
    pub silences: Arc<SilenceCache>,
    /// Devices, groups and geofences of the live Traccar sources, for enriching webhook events.
    pub directories: Arc<crate::source::traccar::Directories>,
}

/// The debounce probe of a geofence event.
fn probe(env: &Envelope) -> Option<DebounceProbe> {
    let t = env.event.event_type.as_str();
    (t == "geofenceEnter" || t == "geofenceExit").then(|| DebounceProbe {
        key: debounce_key(env),
        transition: t.to_string(),
    })
}

impl Pipeline {
    /// Evaluates, renders and durably stores one event. Returns once the event is committed.
    pub async fn ingest(
        &self,
        raw: &str,
        env: &Envelope,
        arrival: Arrival,
    ) -> Result<Accepted, StoreError> {
        // The runtime is held for the whole call: the matched rules borrow from it, and a reload
        // meanwhile does not change what this event is evaluated against.
        let rt = self.shared.get();
        let matched = rt.config.rules.evaluate(env, arrival.name());
        let mut event = {
            let silences = self.silences.get();
            let planned = plan(&rt.config, &matched, env, raw, &arrival, &silences);
            let deliveries = planned.iter().map(NewDelivery::from).collect();
            NewEvent {
                source: arrival.source.clone(),
                event_id: env.event.id,
                device_id: env.device_id(),
                event_type: env.event.event_type.clone(),
                received_at_ms: arrival.received_at_ms,
                judged_at_ms: judged_at(env, arrival.received_at_ms),
                txn: arrival.txn.clone(),
                // The body of an event that notifies nobody is only kept on request.
                payload: if matched.is_empty() && !rt.config.storage.keep_unmatched_payloads {
                    String::new()
                } else {
                    raw.to_string()
                },
                deliveries,
                claim_until: None,
                debounce: rt.config.rules.debounces().then(|| probe(env)).flatten(),
                position_missing: env.lacks_position(),
            }
        };
        // Fast lane: when the worker has room for this event's unordered deliveries, they are claimed in
        // the intake transaction and handed over directly, saving a store round trip each. Without room
        // they wait in the outbox as usual.
        let unordered = event
            .deliveries
            .iter()
            .filter(|d| d.order_key.is_none() && d.dead.is_none())
            .count();
        let permits = (unordered > 0)
            .then(|| self.fast.try_reserve_many(unordered).ok())
            .flatten();
        if permits.is_some() {
            let lease = rt.config.storage.lease;
            event.claim_until = Some(arrival.received_at_ms + lease.as_millis() as i64);
        }
        // For the log lines of held-back deliveries (only built when noise control is in play).
        let keys: Vec<(String, String)> = if event.deliveries.iter().any(|d| d.gates.any()) {
            event
                .deliveries
                .iter()
                .map(|d| (d.rule.clone(), d.channel.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let accepted = self.store.accept(event).await?;
        if let Accepted::New {
            deliveries,
            claimed,
            quieted,
        } = &accepted
        {
            for q in quieted {
                let Some((rule, channel)) = keys.get(q.index) else {
                    continue;
                };
                let outcome = match q.status {
                    Status::Suppressed => "suppressed",
                    Status::Grouped => "grouped",
                    _ => "deferred",
                };
                self.metrics.notification(channel, outcome, None);
                tracing::info!(
                    event_id = env.event.id, device_id = env.device_id(), rule = %rule,
                    channel = %channel, reason = %q.reason, "notification {outcome}"
                );
            }
            for r in &matched {
                self.metrics.rule_matched(&r.name);
            }
            if let Some(permits) = permits {
                for (permit, c) in permits.zip(claimed.iter().cloned()) {
                    permit.send(c);
                }
            }
            if *deliveries > claimed.len() {
                self.wake.notify_one();
            }
        }
        Ok(accepted)
    }
}
