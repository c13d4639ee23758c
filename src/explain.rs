//! `explain`: what the rules make of one event, without storing or sending anything. Shared by the
//! `trackrelay explain` command and `POST /api/explain`.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::event::Envelope;
use crate::noise::silence::SilenceSet;
use crate::noise::{Decider, StateRow, Verdict as NoiseVerdict};
use crate::notification::Content;
use crate::plan::{plan, Arrival, Planned};
use crate::rules::{Rule, Verdict};
use crate::settings::Config;
use crate::store::Store;

/// The verdict of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleVerdict {
    /// Rule name.
    pub rule: String,
    /// Where it is written (`file:line`).
    pub origin: String,
    /// `match`, `no_match` or `skipped`.
    pub verdict: &'static str,
    /// The first condition that did not hold, or the rule whose `stop` skipped this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An evaluation error (an expression over a missing field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A message that would be sent.
#[derive(Debug, Clone, Serialize)]
pub struct WouldSend {
    /// Rule.
    pub rule: String,
    /// Channel.
    pub channel: String,
    /// Recipient (empty for single-destination channels).
    pub recipient: String,
    /// The rendered content.
    pub content: Content,
    /// Why it would go straight to dead letter, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    /// What noise control would do now: `send`, `defer`, `suppress` or `group`.
    pub decision: &'static str,
    /// Why, for anything but an immediate send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it would be sent, if later than now (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
}

/// The whole explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Every rule, in order.
    pub rules: Vec<RuleVerdict>,
    /// Every message the matching rules would send.
    pub notifications: Vec<WouldSend>,
    /// Whether cooldowns, dedup windows, debounces, digests and rate limits were judged on the stored
    /// state (`false`: as if the event were the first of its kind).
    pub state_known: bool,
    /// What the event would do to its rules' incidents.
    pub incidents: Vec<IncidentExplained>,
}

/// The acknowledgement links the messages of `matched` rules with an incident would carry: each a
/// new token when sent, shown as `TOKEN` here (explain stores nothing).
fn example_links(cfg: &Config, matched: &[&Rule]) -> crate::plan::IncidentExtras {
    let mut extras = crate::plan::IncidentExtras::default();
    if let Some(base) = &cfg.public_url {
        for rule in matched.iter().filter(|r| r.incident.is_some()) {
            for i in 0..rule.targets.len() {
                extras.set_link(&rule.name, i, format!("{base}/ack/TOKEN"));
            }
        }
    }
    extras
}

/// What an event would do to one rule's incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentExplained {
    /// The rule.
    pub rule: String,
    /// The incident key.
    pub key: String,
    /// `opens`, `joins`, `resolves` or `nothing_to_resolve`.
    pub effect: &'static str,
    /// The live incident of the key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
    /// In words: "joins incident 12 (14 events), next: repeat 3 at ...".
    pub detail: String,
    /// The steps that would follow, with their times (RFC 3339).
    pub schedule: Vec<serde_json::Value>,
}

/// What `env` would do to the incidents of the rules it concerns, from the live rows in `store` (none
/// known without a store: every matching event would open one).
async fn incidents(
    cfg: &Config,
    matched: &[&Rule],
    env: &Envelope,
    arrival: &Arrival,
    store: Option<&dyn Store>,
) -> Vec<IncidentExplained> {
    use crate::incident::{on_event, schedule, EventFacts, EventVerdict, Sighting};
    let now = arrival.received_at_ms;
    let mut out = Vec::new();
    for rule in cfg.rules.incident_rules() {
        let m = matched.iter().any(|x| std::ptr::eq(*x, rule));
        let (Some(trigger), Some(inc)) = (
            rule.incident_trigger(env, arrival.name(), m),
            rule.incident.as_ref(),
        ) else {
            continue;
        };
        let key = crate::plan::incident_key(cfg, rule, env, arrival);
        let live = match store {
            Some(st) => st.live_incident(&key).await.ok().flatten(),
            None => None,
        };
        let (id, state) = match &live {
            Some(r) => (Some(r.id), r.state.as_ref().ok()),
            None => (None, None),
        };
        let facts = EventFacts {
            trigger,
            key: key.clone(),
            rule: rule.name.clone(),
            seen: Sighting::of(env, now),
        };
        let verdict = on_event(state, &inc.policy, &facts, now);
        let (effect, detail, next) = match &verdict {
            EventVerdict::Open { state, .. } => {
                ("opens", "opens an incident".to_string(), Some(state))
            }
            EventVerdict::Join(s) => (
                "joins",
                format!("joins incident {} ({} events)", id.unwrap_or(0), s.events),
                Some(s),
            ),
            EventVerdict::Resolve(_) => (
                "resolves",
                format!("resolves incident {}", id.unwrap_or(0)),
                None,
            ),
            EventVerdict::NoIncident => (
                "nothing_to_resolve",
                "no incident to resolve".to_string(),
                None,
            ),
        };
        out.push(IncidentExplained {
            rule: rule.name.clone(),
            key,
            effect,
            incident: id,
            detail,
            schedule: next
                .map(|s| {
                    schedule(s, &inc.policy)
                        .into_iter()
                        .map(|d| d.to_json())
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// Explains `env` (received as `raw`) under `cfg`, with the silences in force, judging the stateful
/// noise checks on the state in `store` when one is given. Nothing is written.
pub async fn explain(
    cfg: &Config,
    env: &Envelope,
    raw: &str,
    silences: &SilenceSet,
    store: Option<&dyn Store>,
) -> Explanation {
    let source = cfg.ingest.source.clone();
    let (rules, matched) = rule_verdicts(cfg, env, &source);
    let arrival = Arrival {
        source,
        received_at_ms: crate::clock::now_ms(),
        ..Default::default()
    };
    let planned = plan(
        cfg,
        &matched,
        env,
        raw,
        &arrival,
        silences,
        &example_links(cfg, &matched),
    );
    let (state_known, mut states) = match store {
        Some(store) => stored_states(store, &planned).await,
        None => (false, HashMap::new()),
    };
    let now = arrival.received_at_ms;
    let incidents = incidents(cfg, &matched, env, &arrival, store).await;
    let mut decider = Decider::new(now, &mut states).judging_at(crate::noise::judged_at(env, now));
    let notifications = planned
        .into_iter()
        .map(|mut p| {
            // An event that joins or resolves an incident notifies nobody for its rule.
            if let Some(i) = incidents
                .iter()
                .find(|i| i.rule == p.notification.origin.rule && i.effect != "opens")
            {
                p.gates.suppress = Some(i.detail.clone());
            }
            would_send(&mut decider, p, now)
        })
        .collect();
    Explanation {
        rules,
        notifications,
        state_known,
        incidents,
    }
}

/// Every rule's verdict on `env`, and the rules that matched.
fn rule_verdicts<'a>(
    cfg: &'a Config,
    env: &Envelope,
    source: &str,
) -> (Vec<RuleVerdict>, Vec<&'a Rule>) {
    let mut matched = Vec::new();
    let rules = cfg
        .rules
        .explain(env, source)
        .into_iter()
        .map(|(rule, verdict)| {
            let origin = rule.origin.to_string();
            let (verdict, reason, error) = match verdict {
                Verdict::Matched => {
                    matched.push(rule);
                    ("match", None, None)
                }
                Verdict::NotMatched(f) => ("no_match", Some(f.condition), f.error),
                Verdict::Stopped(by) => (
                    "skipped",
                    Some(format!("rule '{by}' matched with stop: true")),
                    None,
                ),
            };
            RuleVerdict {
                rule: rule.name.clone(),
                origin,
                verdict,
                reason,
                error,
            }
        })
        .collect();
    (rules, matched)
}

/// The stored noise state of every gate of `planned`, and whether it could be read (when it cannot,
/// each check is judged as if the event were the first of its kind).
async fn stored_states(
    store: &dyn Store,
    planned: &[Planned],
) -> (bool, HashMap<String, StateRow>) {
    let mut keys: Vec<String> = planned
        .iter()
        .flat_map(|p| p.gates.keys().map(str::to_string))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    match store.noise_states(keys).await {
        Ok(found) => {
            let states = found
                .into_iter()
                .map(|(k, state)| {
                    (
                        k,
                        StateRow {
                            state,
                            expires_at: 0,
                        },
                    )
                })
                .collect();
            (true, states)
        }
        Err(e) => {
            tracing::warn!(error = %e, "explain: cannot read the noise state");
            (false, HashMap::new())
        }
    }
}

/// What noise control would do with `p` now, as the message that would be sent.
fn would_send(decider: &mut Decider<'_>, p: Planned, now: i64) -> WouldSend {
    let (decision, reason, send_at) = match decider.decide(&p.gates) {
        NoiseVerdict::Send { at, waits_for, .. } if at > now => {
            ("defer", waits_for, Some(rfc3339(at)))
        }
        NoiseVerdict::Send { .. } => ("send", None, None),
        NoiseVerdict::Suppress(r) => ("suppress", Some(r), None),
        NoiseVerdict::Group { due, reason, .. } => ("group", Some(reason), Some(rfc3339(due))),
    };
    WouldSend {
        rule: p.notification.origin.rule.clone(),
        channel: p.notification.channel.clone(),
        recipient: p.notification.recipient.clone(),
        content: p.notification.content,
        dead: p.dead,
        decision,
        reason,
        send_at,
    }
}
