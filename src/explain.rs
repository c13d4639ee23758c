//! `explain`: what the rules make of one event, without storing or sending anything. Shared by the
//! `trackrelay explain` command and `POST /api/explain`.

use serde::Serialize;

use crate::config::Config;
use crate::event::Envelope;
use crate::notification::Content;
use crate::plan::{plan, Arrival};
use crate::rules::Verdict;

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
}

/// The whole explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Every rule, in order.
    pub rules: Vec<RuleVerdict>,
    /// Every message the matching rules would send.
    pub notifications: Vec<WouldSend>,
}

/// Explains `env` (received as `raw`) under `cfg`.
pub fn explain(cfg: &Config, env: &Envelope, raw: &str) -> Explanation {
    let source = cfg.ingest.source.clone();
    let mut matched = Vec::new();
    let rules = cfg
        .rules
        .explain(env, &source)
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
    let arrival = Arrival {
        source,
        received_at_ms: crate::store::now_ms(),
        ..Default::default()
    };
    let notifications = plan(cfg, &matched, env, raw, &arrival)
        .into_iter()
        .map(|p| WouldSend {
            rule: p.notification.origin.rule.clone(),
            channel: p.notification.channel.clone(),
            recipient: p.notification.recipient.clone(),
            content: p.notification.content,
            dead: p.dead,
        })
        .collect();
    Explanation {
        rules,
        notifications,
    }
}
