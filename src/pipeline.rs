//! The path of one event: rules -> render -> store (event and deliveries in one transaction) -> wake
//! the delivery worker. Sources (the webhook, the Traccar WebSocket) all call [`Pipeline::ingest`].

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::event::Envelope;
use crate::incident::{EventFacts, Sighting, Trigger};
use crate::metrics::Metrics;
use crate::noise::{debounce_key, judged_at, DebounceProbe};
use crate::notification::Content;
use crate::plan::{incident_key, plan, Arrival, IncidentExtras, Planned};
use crate::rules::Rule;
use crate::runtime::Shared;
use crate::settings::Config;
use crate::silence_cache::SilenceCache;
use crate::store::{
    Accepted, Claimed, Effect, IncidentOffer, NewDelivery, NewEvent, NewToken, Status, Store,
    StoreError,
};

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
    pub directories: Arc<crate::directory::Directories>,
    /// Wakes the incident timer (an incident opened or owes a notice).
    pub incidents_wake: Arc<Notify>,
    /// Where each device was last seen (events, live positions, position forwarding).
    pub whereabouts: Arc<crate::directory::Whereabouts>,
}

/// The rules with an incident that this event concerns, with how: it matched the rule, or its
/// `resolve_on`.
fn incident_triggers<'r>(
    cfg: &'r Config,
    matched: &[&Rule],
    env: &Envelope,
    arrival: &Arrival,
) -> Vec<(&'r Rule, Trigger)> {
    cfg.rules
        .incident_rules()
        .filter_map(|r| {
            let m = matched.iter().any(|x| std::ptr::eq(*x, r));
            r.incident_trigger(env, arrival.name(), m).map(|t| (r, t))
        })
        .collect()
}

/// The acknowledgement links of the messages an event may open incidents with: one token per target
/// of each rule it matched (kept, hashed, only if the incident opens). None without `public_url`.
fn opening_links(
    cfg: &Config,
    triggered: &[(&Rule, Trigger)],
) -> (IncidentExtras, Vec<Vec<NewToken>>) {
    let mut extras = IncidentExtras::default();
    let tokens = triggered
        .iter()
        .map(|(rule, trigger)| match (&cfg.public_url, trigger) {
            (Some(base), Trigger::Match) => {
                links(base, rule, rule.targets.iter().enumerate(), &mut extras)
            }
            _ => Vec::new(),
        })
        .collect();
    (extras, tokens)
}

/// A new acknowledgement link for each of `rule`'s `targets` (numbered), set in `extras`; returns the
/// tokens to store.
pub fn links<'t>(
    base: &str,
    rule: &Rule,
    targets: impl Iterator<Item = (usize, &'t crate::rules::Target)>,
    extras: &mut IncidentExtras,
) -> Vec<NewToken> {
    targets
        .map(|(i, t)| {
            let token = crate::secret::new_link_token();
            extras.set_link(&rule.name, i, format!("{base}/ack/{token}"));
            NewToken {
                hash: crate::secret::link_token_hash(&token),
                label: t.channel.clone(),
                chat: None,
            }
        })
        .collect()
}

/// Gives each Telegram message among `planned[which]` whose channel is two-way a button token (its
/// buttons' callback data), bound to the chat it goes to; returns the tokens to store with the
/// incident.
pub fn buttons(cfg: &Config, planned: &mut [Planned], which: &[usize]) -> Vec<NewToken> {
    let mut out = Vec::new();
    for &i in which {
        let Some(p) = planned.get_mut(i) else {
            continue;
        };
        let n = &mut p.notification;
        let two_way = cfg
            .channels
            .get(&n.channel)
            .is_some_and(|c| c.kind.buttons());
        if let (true, None, Content::TelegramText { buttons, .. }) =
            (two_way, &p.dead, &mut n.content)
        {
            let token = crate::secret::new_link_token();
            out.push(NewToken {
                hash: crate::secret::link_token_hash(&token),
                label: n.channel.clone(),
                chat: Some(n.recipient.clone()),
            });
            *buttons = Some(token);
        }
    }
    out
}

/// The event's offers to its rules' incidents: which planned deliveries are each rule's, the key, the
/// position.
fn offers(
    cfg: &Config,
    triggered: Vec<(&Rule, Trigger)>,
    tokens: Vec<Vec<NewToken>>,
    planned: &mut [Planned],
    env: &Envelope,
    arrival: &Arrival,
) -> Vec<IncidentOffer> {
    triggered
        .into_iter()
        .zip(tokens)
        .filter_map(|((rule, trigger), mut tokens)| {
            let inc = rule.incident.as_ref()?;
            let mine: Vec<usize> = planned
                .iter()
                .enumerate()
                .filter(|(_, p)| p.notification.origin.rule == rule.name)
                .map(|(i, _)| i)
                .collect();
            // Muted when it happened (quiet hours, a silence on every target): the rule does not
            // speak now, so it opens no incident that would call through the quiet (it still joins
            // a live one: see `IncidentOffer::muted`).
            let muted = !mine.is_empty()
                && mine.iter().all(|&i| {
                    let g = &planned[i].gates;
                    g.suppress.is_some() || g.not_before.is_some()
                });
            Some(IncidentOffer {
                muted: trigger == Trigger::Match && muted,
                facts: EventFacts {
                    trigger,
                    key: incident_key(cfg, rule, env, arrival),
                    rule: rule.name.clone(),
                    seen: Sighting::of(env, arrival.received_at_ms),
                },
                policy: inc.policy.clone(),
                policies: cfg.rules.incident_policies().clone(),
                tokens: {
                    tokens.extend(buttons(cfg, planned, &mine));
                    tokens
                },
                deliveries: mine,
            })
        })
        .collect()
}

/// The debounce probe of a geofence event.
fn probe(env: &Envelope) -> Option<DebounceProbe> {
    let t = env.event.event_type.as_str();
    (t == "geofenceEnter" || t == "geofenceExit").then(|| DebounceProbe {
        key: debounce_key(env),
        transition: t.to_string(),
    })
}

/// An event evaluated against the rules, planned and rendered: what the store is asked to accept.
#[derive(Debug)]
pub struct Prepared {
    /// The event, its deliveries and incident offers.
    pub event: NewEvent,
    /// The names of the rules it matched.
    pub matched: Vec<String>,
    /// (rule, channel) of each delivery, for the log lines of held-back ones; only built when noise
    /// control is in play.
    keys: Vec<(String, String)>,
}

impl Prepared {
    /// Whether storing it can change nothing: no delivery, no incident concerned, no geofence
    /// transition that might cancel a held one. Such an event is still stored in production (for
    /// dedup); a backtest leaves it out.
    pub fn is_inert(&self) -> bool {
        self.event.deliveries.is_empty()
            && self.event.incidents.is_empty()
            && self.event.debounce.is_none()
    }
}

/// Evaluates `env` against `cfg`'s rules and plans its deliveries and incident offers under
/// `silences`: every decision about an event that does not need the store. What [`Pipeline::ingest`]
/// does before it commits, and what a backtest runs on history.
pub fn prepare(
    cfg: &Config,
    silences: &crate::noise::silence::SilenceSet,
    raw: &str,
    env: &Envelope,
    arrival: &Arrival,
) -> Prepared {
    let matched = cfg.rules.evaluate(env, arrival.name());
    let triggered = incident_triggers(cfg, &matched, env, arrival);
    let (extras, tokens) = opening_links(cfg, &triggered);
    let mut planned = plan(cfg, &matched, env, raw, arrival, silences, &extras);
    let incidents = offers(cfg, triggered, tokens, &mut planned, env, arrival);
    let deliveries: Vec<NewDelivery> = planned.iter().map(NewDelivery::from).collect();
    let keys = if deliveries.iter().any(|d| d.gates.any()) {
        deliveries
            .iter()
            .map(|d| (d.rule.clone(), d.channel.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let event = NewEvent {
        source: arrival.source.clone(),
        event_id: env.event.id,
        device_id: env.device_id(),
        event_type: env.event.event_type.clone(),
        received_at_ms: arrival.received_at_ms,
        judged_at_ms: judged_at(env, arrival.received_at_ms),
        txn: arrival.txn.clone(),
        // The body of an event that notifies nobody is only kept on request.
        payload: if matched.is_empty() && !cfg.storage.keep_unmatched_payloads {
            String::new()
        } else {
            raw.to_string()
        },
        deliveries,
        claim_until: None,
        debounce: cfg.rules.debounces().then(|| probe(env)).flatten(),
        position_missing: env.lacks_position(),
        incidents,
    };
    Prepared {
        event,
        matched: matched.iter().map(|r| r.name.clone()).collect(),
        keys,
    }
}

impl Pipeline {
    /// Evaluates, renders and durably stores one event. Returns once the event is committed.
    pub async fn ingest(
        &self,
        raw: &str,
        env: &Envelope,
        arrival: Arrival,
    ) -> Result<Accepted, StoreError> {
        // The runtime is held for the whole call: a reload meanwhile does not change what this event
        // is evaluated against.
        let rt = self.shared.get();
        self.whereabouts.saw(
            env.device_id(),
            env.device.as_ref(),
            env.position.as_ref(),
            arrival.received_at_ms,
        );
        let prepared = prepare(&rt.config, &self.silences.get(), raw, env, &arrival);
        let claim_until = arrival.received_at_ms + rt.config.storage.lease.as_millis() as i64;
        let Prepared {
            event,
            matched,
            keys,
        } = prepared;
        let accepted = self.commit(event, claim_until).await?;
        if let Accepted::New { quieted, .. } = &accepted {
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
                self.metrics.rule_matched(r);
            }
        }
        if let Accepted::New { incidents, .. } = &accepted {
            self.incidents_decided(env, incidents);
        }
        Ok(accepted)
    }

    /// Counts and logs what an event did to its rules' incidents; wakes the timer for a notice owed.
    fn incidents_decided(&self, env: &Envelope, incidents: &[crate::store::IncidentOutcome]) {
        for o in incidents {
            self.metrics.incident_event(o.effect.name());
            if let Some(how) = o.closed {
                self.metrics.incident_resolved(how);
            }
            tracing::info!(
                event_id = env.event.id, device_id = env.device_id(), rule = %o.rule,
                incident = ?o.id, "incident {}", o.effect.name()
            );
        }
        if incidents.iter().any(|o| o.effect == Effect::Resolved) {
            self.incidents_wake.notify_one();
        }
    }

    /// Stores the event and hands what it claimed to the worker, in a task of its own that the caller
    /// awaits. A caller may go away at any await (a client that hangs up, a source stopping): the task
    /// goes on, so deliveries committed as claimed are always handed over, never left in flight until
    /// their lease (`claim_until`, when used) runs out. At shutdown the worker takes what such tasks
    /// still hand over before it stops (see [`crate::deliver::Dispatcher::run`]).
    async fn commit(&self, mut event: NewEvent, claim_until: i64) -> Result<Accepted, StoreError> {
        let (store, fast, wake) = (self.store.clone(), self.fast.clone(), self.wake.clone());
        let task = tokio::spawn(async move {
            // Fast lane: when the worker has room for this event's unordered deliveries, they are claimed
            // in the intake transaction and handed over directly, saving a store round trip each.
            // Without room (or once the worker stopped taking them) they wait in the outbox as usual.
            let unordered = event
                .deliveries
                .iter()
                .filter(|d| d.order_key.is_none() && d.dead.is_none())
                .count();
            let permits = (unordered > 0)
                .then(|| fast.try_reserve_many(unordered).ok())
                .flatten();
            if permits.is_some() {
                event.claim_until = Some(claim_until);
            }
            let accepted = store.accept(event).await?;
            if let Accepted::New {
                deliveries,
                claimed,
                ..
            } = &accepted
            {
                if let Some(permits) = permits {
                    for (permit, c) in permits.zip(claimed.iter().cloned()) {
                        permit.send(c);
                    }
                }
                if *deliveries > claimed.len() {
                    wake.notify_one();
                }
            }
            Ok(accepted)
        });
        task.await
            .map_err(|e| StoreError::Db(format!("the intake task failed: {e}")))?
    }
}

/// A planned notification as the store enqueues it (here, where planning meets the store, so that
/// neither of them imports the other).
impl From<&Planned> for NewDelivery {
    fn from(p: &Planned) -> NewDelivery {
        let n = &p.notification;
        NewDelivery {
            key: n.key.clone(),
            channel: n.channel.clone(),
            recipient: n.recipient.clone(),
            rule: n.origin.rule.clone(),
            order_key: p.order_key.clone(),
            dead: p.dead.clone(),
            content: serde_json::to_string(n).expect("a notification always serialises"),
            gates: p.gates.clone(),
            incident_ref: None,
        }
    }
}
