//! Rules: compiled from YAML into matchers, indexed by event type, evaluated purely (no I/O).
//!
//! A [`RuleSet`] is immutable; reloading builds a new one and swaps it whole.

pub mod cond;
pub mod expr;
pub mod field;

use std::collections::HashMap;

use crate::event::Envelope;
pub use cond::{Failed, Matcher};

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// File it came from.
    pub file: String,
    /// Line of its `name:` (1-based), when found.
    pub line: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// One destination of a rule, with its templates already compiled (they are named, not held, here:
/// the [`crate::render::Renderer`] holds them).
#[derive(Debug, Clone)]
pub struct Target {
    /// Channel name.
    pub channel: String,
    /// Template names of the recipients; empty = the channel's default recipient(s).
    pub to: Vec<String>,
    /// Template name of the subject (email).
    pub subject: Option<String>,
    /// Template name of the message body (text form).
    pub body: String,
    /// Template name of the HTML form of the body (email).
    pub body_html: Option<String>,
    /// Send a map pin after the message (Telegram).
    pub location: bool,
    /// Send it as a live location that follows the device while the incident is open (`location:
    /// live`; only on rules with an incident).
    pub live: bool,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Its conditions.
    pub matcher: Matcher,
    /// Stop evaluating later rules when this one matches.
    pub stop: bool,
    /// Where matches go.
    pub targets: Vec<Target>,
    /// How urgent its messages are.
    pub severity: crate::severity::Severity,
    /// Where it was written.
    pub origin: Origin,
    /// Cooldown, dedup, debounce, digests, schedule.
    pub noise: crate::noise::RuleNoise,
    /// Repeat and escalate until acknowledged (`incident:`).
    pub incident: Option<RuleIncident>,
}

/// A rule's `incident:` section, compiled: the policy the incident core schedules by, the key
/// template, the `resolve_on` conditions and the escalation steps' targets.
#[derive(Debug)]
pub struct RuleIncident {
    /// Repeats, escalation, `resolve_after`.
    pub policy: crate::incident::IncidentPolicy,
    /// Template name of the key (`None`: the rule and the device).
    pub key: Option<String>,
    /// Events that close the incident of their key.
    pub resolve_on: Option<Matcher>,
    /// Every escalation step's targets in the order written ([`crate::incident::Escalation::notify`]
    /// indexes this list).
    pub escalation_targets: Vec<Target>,
}

impl Rule {
    /// What an event does to this rule's incident: `None` when the rule has no incident or the event
    /// neither matched the rule (`matched`) nor its `resolve_on`. `resolve_on` is the narrower
    /// statement, so an event matching both resolves.
    pub fn incident_trigger(
        &self,
        env: &Envelope,
        source: &str,
        matched: bool,
    ) -> Option<crate::incident::Trigger> {
        let inc = self.incident.as_ref()?;
        if inc
            .resolve_on
            .as_ref()
            .is_some_and(|m| m.matches(env, source))
        {
            return Some(crate::incident::Trigger::ResolveOn);
        }
        matched.then_some(crate::incident::Trigger::Match)
    }
}

/// All rules, in file order, indexed by the event types they name.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// For each event type named by some rule: the rules to try, in order (typed and untyped merged).
    by_type: HashMap<String, Vec<Candidate>>,
    /// Rules without a type condition: tried for every type, and alone for types no rule names.
    untyped: Vec<Candidate>,
    /// Some rule debounces geofence transitions.
    debounces: bool,
    /// Distinct field paths the rules read: the size of an evaluation's [`field::Scope`].
    slots: usize,
    /// Distinct leaf conditions: each is tested at most once per event, however many rules state it.
    memos: usize,
    /// The rules with an `incident:` section, by index.
    incident_rules: Vec<usize>,
    /// Their policies by rule name: an incident is scheduled by the policy of the rule that opened
    /// it, also when another rule's event (a shared key) joins it.
    incident_policies: std::sync::Arc<HashMap<String, crate::incident::IncidentPolicy>>,
}

/// A rule to try for an event, with the memo slot of its first condition ([`Matcher::first_memo`]) kept
/// beside its index: a rule whose first condition another rule has already found false for this event
/// is passed over without being read. A thousand rules and their conditions do not fit the CPU's nearest
/// caches (the index does), and most fail on a condition they share (the same alarm list, the same
/// battery threshold).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    rule: u32,
    first_memo: u32,
}

/// What `explain` says of one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// All conditions hold.
    Matched,
    /// The first condition that did not hold.
    NotMatched(Failed),
    /// An earlier rule with `stop: true` matched.
    Stopped(String),
}

impl RuleSet {
    /// Builds the set and its type index.
    pub fn new(mut rules: Vec<Rule>) -> RuleSet {
        let mut slots = field::Slots::default();
        let mut memos = cond::Memos::default();
        for r in &mut rules {
            r.matcher.assign_slots(&mut slots);
            r.matcher.assign_memos(&mut memos);
        }
        let mut by_type: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut untyped = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let c = Candidate {
                rule: i as u32,
                first_memo: r.matcher.first_memo(),
            };
            match r.matcher.types() {
                Some(types) => {
                    for t in types {
                        by_type.entry(t.clone()).or_default().push(c);
                    }
                }
                None => untyped.push(c),
            }
        }
        for list in by_type.values_mut() {
            list.extend_from_slice(&untyped);
            list.sort_unstable_by_key(|c| c.rule);
            list.dedup_by_key(|c| c.rule);
        }
        RuleSet {
            debounces: rules.iter().any(|r| r.noise.debounce.is_some()),
            incident_rules: (0..rules.len())
                .filter(|&i| rules[i].incident.is_some())
                .collect(),
            incident_policies: std::sync::Arc::new(
                rules
                    .iter()
                    .filter_map(|r| Some((r.name.clone(), r.incident.as_ref()?.policy.clone())))
                    .collect(),
            ),
            rules,
            by_type,
            untyped,
            slots: slots.len(),
            memos: memos.len(),
        }
    }

    /// Whether any rule debounces geofence transitions.
    pub fn debounces(&self) -> bool {
        self.debounces
    }

    /// The rules with an `incident:` section, in order.
    pub fn incident_rules(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.incident_rules.iter().map(|&i| &self.rules[i])
    }

    /// The incident policies by rule name.
    pub fn incident_policies(
        &self,
    ) -> &std::sync::Arc<HashMap<String, crate::incident::IncidentPolicy>> {
        &self.incident_policies
    }

    /// The rule of this name.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules an event of this type can match, in order.
    fn candidates(&self, event_type: &str) -> &[Candidate] {
        self.by_type.get(event_type).unwrap_or(&self.untyped)
    }

    /// The rules that match, in order, honouring `stop`.
    pub fn evaluate<'a>(&'a self, env: &Envelope, source: &str) -> Vec<&'a Rule> {
        let candidates = self.candidates(&env.event.event_type);
        let mut out = Vec::with_capacity(candidates.len());
        let mut scope = field::Scope::new(env, source, self.slots).with_memos(self.memos);
        for c in candidates {
            // Its first condition already failed for this event: it cannot match.
            if scope.memo(c.first_memo) == Some(false) {
                continue;
            }
            let rule = &self.rules[c.rule as usize];
            if rule.matcher.matches_indexed_in(&mut scope) {
                out.push(rule);
                if rule.stop {
                    break;
                }
            }
        }
        out
    }

    /// A verdict for every rule, in order: why each did or did not match.
    pub fn explain<'a>(&'a self, env: &Envelope, source: &str) -> Vec<(&'a Rule, Verdict)> {
        let mut stopped_by: Option<&str> = None;
        let mut scope = field::Scope::new(env, source, self.slots);
        self.rules
            .iter()
            .map(|rule| {
                if let Some(s) = stopped_by {
                    return (rule, Verdict::Stopped(s.to_string()));
                }
                let verdict = match rule.matcher.first_failure_in(&mut scope) {
                    None => {
                        if rule.stop {
                            stopped_by = Some(&rule.name);
                        }
                        Verdict::Matched
                    }
                    Some(f) => Verdict::NotMatched(f),
                };
                (rule, verdict)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_raw::RawMatch;

    fn rule(name: &str, yaml: &str, stop: bool) -> Rule {
        let raw: RawMatch = serde_yaml::from_str(yaml).unwrap();
        Rule {
            name: name.into(),
            description: None,
            matcher: Matcher::compile(raw).unwrap(),
            stop,
            targets: vec![],
            severity: Default::default(),
            origin: Origin {
                file: "t.yaml".into(),
                line: Some(1),
            },
            noise: Default::default(),
            incident: None,
        }
    }

    fn payload(name: &str) -> Envelope {
        let path = format!("{}/tests/payloads/{name}", env!("CARGO_MANIFEST_DIR"));
        Envelope::from_json(&std::fs::read(path).unwrap()).unwrap()
    }

    fn names(rs: &RuleSet, env: &Envelope) -> Vec<String> {
        rs.evaluate(env, "traccar")
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    #[test]
    fn theft_rule_matches_only_while_armed() {
        let rs = RuleSet::new(vec![rule(
            "theft",
            "{type: alarm, alarm: [movement, vibration], where: {position.attributes.armed: true}}",
            false,
        )]);
        assert_eq!(names(&rs, &payload("alarm_vibration.json")), ["theft"]);
        assert!(names(&rs, &payload("alarm_sos.json")).is_empty());
        let mut disarmed = payload("alarm_vibration.json");
        let pos = disarmed.position.as_mut().unwrap();
        pos.attributes.insert("armed".into(), false.into());
        assert!(names(&rs, &disarmed).is_empty());
    }

    #[test]
    fn negation_globs_comparisons_and_expressions() {
        let rs = RuleSet::new(vec![
            rule("not-lena", "{not: {device: 'lena*'}}", false),
            rule("low", "{where: {batteryLevel: {lt: 70}}}", false),
            rule(
                "fast",
                "{type: deviceOverspeed, expr: 'speed_kmh > 25 && ignition'}",
                false,
            ),
            rule("zone", "{geofence: ['Prater*', 9]}", false),
            rule(
                "regex",
                "{where: {device.uniqueId: {regex: '^4710[0-9]+$'}}}",
                false,
            ),
        ]);
        assert_eq!(
            names(&rs, &payload("alarm_sos.json")),
            ["not-lena", "low", "regex"]
        );
        assert_eq!(
            names(&rs, &payload("deviceOverspeed.json")),
            ["not-lena", "fast", "zone", "regex"]
        );
        assert_eq!(names(&rs, &payload("geofenceExit.json")), ["zone", "regex"]);
    }

    #[test]
    fn stop_ends_evaluation_and_explain_says_why() {
        let rs = RuleSet::new(vec![
            rule("first", "{type: [alarm]}", true),
            rule("second", "{}", false),
            rule("third", "{type: deviceOnline}", false),
        ]);
        let env = payload("alarm_sos.json");
        assert_eq!(names(&rs, &env), ["first"]);
        let verdicts: Vec<_> = rs.explain(&env, "").into_iter().map(|(_, v)| v).collect();
        assert_eq!(verdicts[0], Verdict::Matched);
        assert_eq!(verdicts[1], Verdict::Stopped("first".into()));
        let online = payload("deviceOnline.json");
        let v = rs.explain(&online, "");
        assert_eq!(
            v[0].1,
            Verdict::NotMatched(Failed {
                condition: "type in [alarm]".into(),
                error: None
            })
        );
        assert_eq!(names(&rs, &online), ["second", "third"]);
    }

    #[test]
    fn shared_conditions_are_tested_once_and_answer_as_alone() {
        // Conditions repeated across rules share a memo slot; the same words in another kind of
        // condition (`alarm` the event's alarm list, `where: alarm` a field) do not.
        let yamls = [
            "{type: alarm, alarm: [vibration, sos]}",
            "{alarm: [vibration, sos], where: {batteryLevel: {lt: 70}}}",
            "{where: {alarm: {in: [vibration, sos]}}}",
            "{where: {batteryLevel: {lt: 70}}, device: 'Lena*'}",
            "{type: alarm, where: {batteryLevel: {lt: 70}}, expr: 'speed_kmh > 25'}",
            "{not: {where: {batteryLevel: {lt: 70}}}}",
            "{device: 'Lena*', expr: 'speed_kmh > 25'}",
            "{where: {batteryLevel: {lt: 70.0}}, source: traccar}",
            "{type: deviceOverspeed, expr: 'speed_kmh > 25'}",
        ];
        let rules: Vec<Rule> = (0..40)
            .map(|i| rule(&format!("r{i}"), yamls[i % yamls.len()], false))
            .collect();
        let alone: Vec<Matcher> = (0..40)
            .map(|i| rule("x", yamls[i % yamls.len()], false).matcher)
            .collect();
        let rs = RuleSet::new(rules);
        assert!(rs.memos < 40, "{} memo slots", rs.memos);
        for p in [
            "alarm_vibration.json",
            "alarm_sos.json",
            "deviceOverspeed.json",
            "geofenceExit.json",
            "deviceOffline.json",
        ] {
            let env = payload(p);
            let want: Vec<String> = alone
                .iter()
                .enumerate()
                .filter(|(_, m)| m.matches(&env, "traccar"))
                .map(|(i, _)| format!("r{i}"))
                .collect();
            assert_eq!(names(&rs, &env), want, "{p}");
        }
    }

    #[test]
    fn unknown_types_reach_untyped_rules() {
        let rs = RuleSet::new(vec![
            rule("typed", "{type: alarm}", false),
            rule("all", "{}", false),
        ]);
        let mut env = payload("alarm_sos.json");
        env.event.event_type = "somethingNew".into();
        assert_eq!(names(&rs, &env), ["all"]);
    }

    #[test]
    fn expression_errors_show_in_explain() {
        let rs = RuleSet::new(vec![rule("x", "{expr: '!foo'}", false)]);
        let v = rs.explain(&payload("alarm_sos.json"), "");
        match &v[0].1 {
            Verdict::NotMatched(f) => assert!(f.error.is_some(), "{f:?}"),
            other => panic!("{other:?}"),
        }
    }
}
