//! An incident's policy: a rule's `incident:` section validated into plain data (repeats, escalation
//! steps, when it closes by itself), with the bounds it is held to and why.

use std::time::Duration;

use crate::config_raw::{RawEscalation, RawIncident};

/// Repeats are at least this far apart. A phone that rings more often is not heard better, and the
/// services that ring it count what a sender sends: Telegram takes about 20 messages a minute in a
/// group (shared with everything else the bot sends there), Pushover 10,000 a month per app.
pub const MIN_REPEAT: Duration = Duration::from_secs(60);

/// Repeats of one incident at most: with [`MIN_REPEAT`] that is more than an hour and a half of
/// calling, and one forgotten incident spends at most 1% of a Pushover month.
pub const MAX_REPEATS: u32 = 100;

/// Repeats when `repeat` is given without `max_repeats`: never calling forever is the safe default (a
/// lost phone would otherwise be called until the incident closes by itself).
pub const DEFAULT_MAX_REPEATS: u32 = 10;

/// An escalation step is at least this long after the incident opened: the first recipient needs the
/// time to read the message and acknowledge it. Targets meant to hear at once belong under `notify`.
pub const MIN_ESCALATION_AFTER: Duration = Duration::from_secs(60);

/// Escalation steps of one incident at most; more is a phone tree, not a rule.
pub const MAX_ESCALATIONS: usize = 10;

/// `resolve_after` is at least this long: an incident that closes sooner after its last event cannot
/// be acknowledged in time (a rule that only wants quiet between messages has `cooldown`).
pub const MIN_RESOLVE_AFTER: Duration = Duration::from_secs(60);

/// `resolve_after` when the rule gives none. An incident that nobody closes would swallow the device's
/// next alarm days later (it would join the old incident, and notify nobody).
pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The longest delay any incident setting takes (`repeat`, `after`, `resolve_after`). An incident is
/// about what happens now; a longer value is most likely a slip of unit (`30d` for `30m`).
pub const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// A rule's incident policy, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentPolicy {
    /// The key template as written (`None` = rule and device). The wiring registers it with the
    /// renderer, as it does a cooldown's key.
    pub key: Option<String>,
    /// Repeats until acknowledged, if any.
    pub repeat: Option<Repeat>,
    /// Escalation steps, `after` strictly increasing.
    pub escalate: Vec<Escalation>,
    /// The incident closes by itself this long after its last event.
    pub resolve_after: Duration,
    /// Whether the rule has `resolve_on` conditions (compiled and evaluated by the caller, which tells
    /// [`super::on_event`] that an event matched them).
    pub resolve_on: bool,
}

/// Repeats of the rule's notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// Repeat `n` is due `n` times this after the incident opened.
    pub every: Duration,
    /// Repeats at most.
    pub max: u32,
}

/// One escalation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// Due this long after the incident opened.
    pub after: Duration,
    /// The step's targets, as indices into the list of every step's `notify` entries in the order
    /// written (step 0's first, then step 1's, ...). The caller compiles that list into its targets; the
    /// incident core names them without knowing what a target is.
    pub notify: Vec<usize>,
}

/// A duration in ms (the bounds above keep every validated one far from overflow).
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// A problem if `d` is longer than [`MAX_SPAN`].
fn within_span(what: &str, d: Duration, errors: &mut Vec<String>) {
    if d > MAX_SPAN {
        errors.push(format!(
            "{what}: {} is longer than {}, the longest an incident setting takes (a slip of unit?)",
            human(d),
            human(MAX_SPAN)
        ));
    }
}

impl IncidentPolicy {
    /// Validates a rule's `incident:` section, returning every problem (the config compiler adds the
    /// file and line).
    pub fn from_raw(raw: &RawIncident) -> Result<IncidentPolicy, Vec<String>> {
        let mut errors = Vec::new();
        if raw.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            errors.push("key: empty; leave it out to key by rule and device".to_string());
        }
        let repeat = repeat(raw, &mut errors);
        let escalate = raw
            .escalate
            .as_deref()
            .map(|steps| escalation(steps, &mut errors))
            .unwrap_or_default();
        let resolve_after = raw.resolve_after.unwrap_or(DEFAULT_RESOLVE_AFTER);
        if resolve_after < MIN_RESOLVE_AFTER {
            errors.push(format!(
                "resolve_after: {} is too short to acknowledge the incident in; at least {} (for quiet between messages, use cooldown)",
                human(resolve_after),
                human(MIN_RESOLVE_AFTER)
            ));
        }
        within_span("resolve_after", resolve_after, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(IncidentPolicy {
            key: raw.key.clone(),
            repeat,
            escalate,
            resolve_after,
            resolve_on: raw.resolve_on.is_some(),
        })
    }

    /// `resolve_after` in ms.
    pub fn resolve_after_ms(&self) -> i64 {
        ms(self.resolve_after)
    }
}

fn repeat(raw: &RawIncident, errors: &mut Vec<String>) -> Option<Repeat> {
    let Some(every) = raw.repeat else {
        if raw.max_repeats.is_some() {
            errors.push(
                "max_repeats: without `repeat` nothing is repeated; give `repeat` too".into(),
            );
        }
        return None;
    };
    if every < MIN_REPEAT {
        errors.push(format!(
            "repeat: {} is too often; at least {} (phones are not heard better, and Telegram and Pushover limit what a sender may send)",
            human(every),
            human(MIN_REPEAT)
        ));
    }
    within_span("repeat", every, errors);
    let max = raw.max_repeats.unwrap_or(DEFAULT_MAX_REPEATS);
    if !(1..=MAX_REPEATS).contains(&max) {
        errors.push(format!(
            "max_repeats: {max} is not between 1 and {MAX_REPEATS} (leave out `repeat` for no repeats)"
        ));
    }
    Some(Repeat { every, max })
}

fn escalation(steps: &[RawEscalation], errors: &mut Vec<String>) -> Vec<Escalation> {
    if steps.is_empty() {
        errors.push("escalate: empty list; leave it out for no escalation".into());
    }
    if steps.len() > MAX_ESCALATIONS {
        errors.push(format!(
            "escalate: {} steps; at most {MAX_ESCALATIONS}",
            steps.len()
        ));
    }
    let mut next_target = 0;
    let mut previous: Option<Duration> = None;
    let mut out = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let what = format!("escalate[{i}]");
        if step.after < MIN_ESCALATION_AFTER {
            errors.push(format!(
                "{what}.after: {} leaves no time to acknowledge; at least {} (targets to notify at once go under notify)",
                human(step.after),
                human(MIN_ESCALATION_AFTER)
            ));
        }
        within_span(&format!("{what}.after"), step.after, errors);
        if let Some(p) = previous.filter(|p| step.after <= *p) {
            errors.push(format!(
                "{what}.after: {} is not later than the step before ({}); steps go in order of time",
                human(step.after),
                human(p)
            ));
        }
        previous = Some(step.after);
        if step.notify.is_empty() {
            errors.push(format!("{what}.notify: list at least one channel"));
        }
        let notify = (next_target..next_target + step.notify.len()).collect();
        next_target += step.notify.len();
        out.push(Escalation {
            after: step.after,
            notify,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<IncidentPolicy, Vec<String>> {
        let raw: RawIncident = serde_yaml::from_str(yaml).expect("valid YAML of the section");
        IncidentPolicy::from_raw(&raw)
    }

    fn errors(yaml: &str) -> Vec<String> {
        parse(yaml).expect_err("invalid")
    }

    const M: Duration = Duration::from_secs(60);

    #[test]
    fn the_issues_example_compiles() {
        let p = parse(
            r#"
key: "theft-{{ device.id }}"
repeat: 5m
max_repeats: 12
escalate:
  - after: 10m
    notify: [{ channel: partner-phone }]
  - after: 30m
    notify: [{ channel: ops-chat }, { channel: ops-mail }]
resolve_after: 2h
resolve_on: { type: alarm, where: { position.attributes.armed: false } }
"#,
        )
        .unwrap();
        assert_eq!(p.key.as_deref(), Some("theft-{{ device.id }}"));
        assert_eq!(
            p.repeat,
            Some(Repeat {
                every: 5 * M,
                max: 12
            })
        );
        assert_eq!(
            p.escalate,
            [
                Escalation {
                    after: 10 * M,
                    notify: vec![0]
                },
                Escalation {
                    after: 30 * M,
                    notify: vec![1, 2]
                },
            ]
        );
        assert_eq!(p.resolve_after, 120 * M);
        assert_eq!(p.resolve_after_ms(), 7_200_000);
        assert!(p.resolve_on);
    }

    #[test]
    fn defaults_bound_repeats_and_close_forgotten_incidents() {
        let p = parse("repeat: 5m").unwrap();
        assert_eq!(p.repeat.unwrap().max, DEFAULT_MAX_REPEATS);
        assert_eq!(p.resolve_after, DEFAULT_RESOLVE_AFTER);
        assert!(p.escalate.is_empty() && !p.resolve_on && p.key.is_none());
        // An empty section is valid: events join one incident until it is acknowledged or closes.
        let p = parse("{}").unwrap();
        assert_eq!(p.repeat, None);
    }

    #[test]
    fn unknown_keys_are_errors() {
        for yaml in [
            "repaet: 5m",
            "escalate: [{ after: 10m, notify: [{ channel: x }], when: night }]",
            "resolve_on: { typ: alarm }",
        ] {
            assert!(
                serde_yaml::from_str::<RawIncident>(yaml).is_err(),
                "{yaml} was accepted"
            );
        }
    }

    #[test]
    fn every_rule_is_checked_and_every_problem_reported() {
        let cases: &[(&str, &[&str])] = &[
            ("repeat: 30s", &["repeat: 30s is too often; at least 1m"]),
            ("max_repeats: 3", &["max_repeats: without `repeat`"]),
            (
                "{ repeat: 5m, max_repeats: 0 }",
                &["max_repeats: 0 is not between 1 and 100"],
            ),
            (
                "{ repeat: 5m, max_repeats: 101 }",
                &["max_repeats: 101 is not between 1 and 100"],
            ),
            ("repeat: 8days", &["repeat: 8days is longer than 7days"]),
            ("escalate: []", &["escalate: empty list"]),
            (
                "escalate: [{ after: 30s, notify: [{ channel: a }] }]",
                &["escalate[0].after: 30s leaves no time to acknowledge"],
            ),
            (
                "escalate: [{ after: 10m, notify: [] }]",
                &["escalate[0].notify: list at least one channel"],
            ),
            (
                "escalate: [{ after: 30m, notify: [{ channel: a }] }, { after: 10m, notify: [{ channel: b }] }]",
                &["escalate[1].after: 10m is not later than the step before (30m)"],
            ),
            (
                "escalate: [{ after: 10m, notify: [{ channel: a }] }, { after: 10m, notify: [{ channel: b }] }]",
                &["escalate[1].after: 10m is not later than the step before (10m)"],
            ),
            (
                "escalate: [{ after: 30days, notify: [{ channel: a }] }]",
                &["escalate[0].after: 30days is longer than 7days"],
            ),
            ("resolve_after: 0s", &["resolve_after: 0s is too short"]),
            ("resolve_after: 59s", &["resolve_after: 59s is too short"]),
            ("resolve_after: 8days", &["resolve_after: 8days is longer"]),
            ("key: ' '", &["key: empty"]),
            // Several problems at once, each reported.
            (
                "{ repeat: 10s, max_repeats: 500, resolve_after: 1s, escalate: [{ after: 1s, notify: [] }] }",
                &[
                    "repeat: 10s",
                    "max_repeats: 500",
                    "escalate[0].after: 1s",
                    "escalate[0].notify",
                    "resolve_after: 1s",
                ],
            ),
        ];
        for (yaml, expected) in cases {
            let got = errors(yaml);
            assert_eq!(got.len(), expected.len(), "{yaml}: {got:?}");
            for (g, e) in got.iter().zip(expected.iter()) {
                assert!(g.starts_with(e), "{yaml}: `{g}` does not start with `{e}`");
            }
        }
    }

    #[test]
    fn too_many_steps_are_an_error() {
        let steps: Vec<String> = (1..=MAX_ESCALATIONS + 1)
            .map(|i| format!("{{ after: {i}m, notify: [{{ channel: c{i} }}] }}"))
            .collect();
        let got = errors(&format!("escalate: [{}]", steps.join(", ")));
        assert_eq!(got, ["escalate: 11 steps; at most 10"]);
        // The boundaries themselves are accepted.
        let p = parse(&format!(
            "{{ repeat: 1m, max_repeats: {MAX_REPEATS}, resolve_after: 1m, escalate: [{}] }}",
            steps[..MAX_ESCALATIONS].join(", ")
        ))
        .unwrap();
        assert_eq!(p.escalate.len(), MAX_ESCALATIONS);
        assert_eq!(p.escalate[9].notify, [9]);
        assert!(parse("{ repeat: 7days, resolve_after: 7days }").is_ok());
    }
}
