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
    let planned = plan(cfg, &matched, env, raw, &arrival, silences);
    let (state_known, mut states) = match store {
        Some(store) => stored_states(store, &planned).await,
        None => (false, HashMap::new()),
    };
    let now = arrival.received_at_ms;
    let mut decider = Decider::new(now, &mut states).judging_at(crate::noise::judged_at(env, now));
    let notifications = planned
        .into_iter()
        .map(|p| would_send(&mut decider, p, now))
        .collect();
    Explanation {
        rules,
        notifications,
        state_known,
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
