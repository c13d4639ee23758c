//! The path of one event: rules -> render -> store (event and deliveries in one transaction) -> wake
//! the delivery worker. Sources (the webhook, later the Traccar WebSocket) all call [`Pipeline::ingest`].

use std::sync::Arc;

use tokio::sync::Notify;

use crate::app::Shared;
use crate::event::Envelope;
use crate::plan::{plan, Arrival};
use crate::store::{Accepted, NewDelivery, NewEvent, Store, StoreError};

/// Shared by every source.
#[derive(Clone)]
pub struct Pipeline {
    /// Configuration and channels.
    pub shared: Arc<Shared>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Wakes the delivery worker.
    pub wake: Arc<Notify>,
}

impl Pipeline {
    /// Evaluates, renders and durably stores one event. Returns once the event is committed.
    pub async fn ingest(
        &self,
        raw: &str,
        env: &Envelope,
        arrival: Arrival,
    ) -> Result<Accepted, StoreError> {
        let event = {
            let rt = self.shared.get();
            let matched = rt.config.rules.evaluate(env, &arrival.source);
            let planned = plan(&rt.config, &matched, env, raw, &arrival);
            let deliveries = planned.iter().map(NewDelivery::from).collect();
            NewEvent {
                source: arrival.source.clone(),
                event_id: env.event.id,
                device_id: env.device_id(),
                event_type: env.event.event_type.clone(),
                received_at_ms: arrival.received_at_ms,
                txn: arrival.txn.clone(),
                payload: raw.to_string(),
                deliveries,
            }
        };
        let accepted = self.store.accept(event).await?;
        if matches!(accepted, Accepted::New { deliveries } if deliveries > 0) {
            self.wake.notify_one();
        }
        Ok(accepted)
    }
}
