//! Which events a live source will ever see. Traccar pushes an event over `/api/socket` only when the
//! user has a notification of its type whose notificators include `web`; for `alarm` events the alarm
//! must also be listed in the notification's `alarms` attribute (a notification without that attribute
//! matches no alarm at all: Traccar's `NotificationManager`). A user who configures rules but no such
//! notifications gets nothing, so the relay compares the two and names what is missing.
//!
//! Pure: the connection reads `GET /api/notifications` and the rules; this module compares them.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::event::Attributes;
use crate::rules::cond::Cond;
use crate::rules::RuleSet;

/// Every alarm Traccar 6 knows (`Position.ALARM_*`): what a rule that takes any alarm needs listed
/// (a notification matches only the alarms its `alarms` attribute names).
pub const KNOWN_ALARMS: &[&str] = &[
    "general",
    "sos",
    "vibration",
    "movement",
    "lowspeed",
    "overspeed",
    "fallDown",
    "lowPower",
    "lowBattery",
    "fault",
    "powerOff",
    "powerOn",
    "door",
    "lock",
    "unlock",
    "geofence",
    "geofenceEnter",
    "geofenceExit",
    "gpsAntennaCut",
    "accident",
    "tow",
    "idle",
    "highRpm",
    "hardAcceleration",
    "hardBraking",
    "hardCornering",
    "laneChange",
    "fatigueDriving",
    "powerCut",
    "powerRestored",
    "jamming",
    "temperature",
    "parking",
    "bonnet",
    "footBrake",
    "fuelLeak",
    "tampering",
    "removing",
];

/// A Traccar notification as `GET /api/notifications` returns it (only what the check needs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Notification id.
    #[serde(default)]
    pub id: i64,
    /// Event type it is for.
    #[serde(rename = "type", default)]
    pub event_type: String,
    /// Comma-separated notificators (`web,mail`).
    #[serde(default)]
    pub notificators: Option<String>,
    /// Free attributes; `alarms` lists the alarms of an `alarm` notification (comma-separated).
    #[serde(default)]
    pub attributes: Attributes,
    /// For every device of the user (else only for the devices and groups linked to it). A server
    /// that does not say is taken at its word for every device.
    #[serde(default = "every_device")]
    pub always: bool,
}

fn every_device() -> bool {
    true
}

impl Notification {
    /// A `web` notification for every device: what makes the server push an event of its type
    /// whatever device it comes from (one limited to linked devices leaves the others out, a device
    /// added later too). A calendar limiting it to some times is taken as the user's choice.
    fn is_web(&self) -> bool {
        self.always
            && self
                .notificators
                .as_deref()
                .unwrap_or("")
                .split(',')
                .any(|n| n.trim() == "web")
    }

    fn alarms(&self) -> impl Iterator<Item = &str> {
        self.attributes
            .get("alarms")
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }
}

/// What the rules can match on one source: event types, and for `alarm` which alarms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Event types some rule names (rules without a type condition name none).
    pub types: BTreeSet<String>,
    /// Alarms named by rules on `alarm` events.
    pub alarms: BTreeSet<String>,
    /// Some rule takes `alarm` events without naming the alarms.
    pub any_alarm: bool,
    /// Some rule takes events of every type (it has no type condition).
    pub any_type: bool,
}

/// The event types and alarms the rules that can fire on `source` name (and whether one takes every
/// type), with what else decides: the events that close an incident (`resolve_on`), and both geofence
/// transitions when a rule debounces them (the return across the border cancels the held message,
/// whichever rule matches it). `own_zones`: the source computes geofence enter/exit itself, so those
/// types need no notification on the server.
pub fn wanted(rules: &RuleSet, source: &str, own_zones: bool) -> Wanted {
    let mut w = Wanted::default();
    for rule in rules.rules() {
        add(&mut w, &rule.matcher, source, own_zones);
        if let Some(on) = rule.incident.as_ref().and_then(|i| i.resolve_on.as_ref()) {
            add(&mut w, on, source, own_zones);
        }
    }
    if rules.debounces() && !own_zones {
        w.types.insert("geofenceEnter".into());
        w.types.insert("geofenceExit".into());
    }
    w
}

/// Adds what `m` can match on `source` to `w`.
fn add(w: &mut Wanted, m: &crate::rules::cond::Matcher, source: &str, own_zones: bool) {
    let conds = &m.conds;
    let other_source = conds.iter().any(|c| match &c.cond {
        Cond::Source(names) => !names.iter().any(|n| n == source),
        _ => false,
    });
    if other_source {
        return;
    }
    let Some(types) = m.types() else {
        w.any_type = true;
        return;
    };
    let alarms = conds.iter().find_map(|c| match &c.cond {
        Cond::Alarm(a) => Some(a),
        _ => None,
    });
    for t in types {
        if own_zones && (t == "geofenceEnter" || t == "geofenceExit") {
            continue;
        }
        w.types.insert(t.clone());
        if t == "alarm" {
            match alarms {
                Some(a) => w.alarms.extend(a.iter().cloned()),
                None => w.any_alarm = true,
            }
        }
    }
}

/// What `wanted` lacks among the user's `web` notifications (those for every device),
/// in words: event types (`deviceOffline`), alarms (`alarm:movement`), or `alarm:*` when rules take
/// every alarm and the notifications do not list every alarm Traccar knows ([`KNOWN_ALARMS`]).
pub fn missing(wanted: &Wanted, notifications: &[Notification]) -> Vec<String> {
    let web: Vec<&Notification> = notifications.iter().filter(|n| n.is_web()).collect();
    let covered_types: BTreeSet<&str> = web.iter().map(|n| n.event_type.as_str()).collect();
    let covered_alarms: BTreeSet<&str> = web
        .iter()
        .filter(|n| n.event_type == "alarm")
        .flat_map(|n| n.alarms())
        .collect();
    let mut out = Vec::new();
    for t in &wanted.types {
        if t == "alarm" {
            continue;
        }
        if !covered_types.contains(t.as_str()) {
            out.push(t.clone());
        }
    }
    if wanted.types.contains("alarm") {
        for a in &wanted.alarms {
            if !covered_alarms.contains(a.as_str()) {
                out.push(format!("alarm:{a}"));
            }
        }
        // A rule that takes every alarm needs every alarm listed.
        if wanted.any_alarm && KNOWN_ALARMS.iter().any(|a| !covered_alarms.contains(a)) {
            out.push("alarm:*".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let text = format!("channels: {{ out: {{ type: log }} }}\nrules:\n{yaml}");
        std::fs::write(&path, text).unwrap();
        crate::settings::Config::load_with_env(Some(&path), &|_| None)
            .unwrap()
            .rules
    }

    fn notification(t: &str, notificators: &str, alarms: Option<&str>) -> Notification {
        let mut attributes = Attributes::new();
        if let Some(a) = alarms {
            attributes.insert("alarms".into(), a.into());
        }
        Notification {
            id: 1,
            event_type: t.into(),
            notificators: Some(notificators.into()),
            attributes,
            always: true,
        }
    }

    #[test]
    fn what_closes_an_incident_and_a_debounced_return_are_wanted_too() {
        let r = rules(
            "
  - name: theft
    match: { type: alarm, alarm: sos }
    incident: { resolve_on: { type: ignitionOn } }
    notify: [{ channel: out }]
  - name: left
    match: { type: geofenceExit }
    debounce: 2m
    notify: [{ channel: out }]
",
        );
        let w = wanted(&r, "home", false);
        assert_eq!(
            w.types.iter().collect::<Vec<_>>(),
            ["alarm", "geofenceEnter", "geofenceExit", "ignitionOn"]
        );
        // The source's own zones make both transitions its own.
        let own = wanted(&r, "home", true);
        assert_eq!(
            own.types.iter().collect::<Vec<_>>(),
            ["alarm", "ignitionOn"]
        );
    }

    #[test]
    fn a_notification_for_some_devices_or_some_alarms_does_not_cover_all() {
        let w = wanted(&rules(RULES), "home", false);
        let mut offline = notification("deviceOffline", "web", None);
        offline.always = false;
        assert!(missing(&w, &[offline]).contains(&"deviceOffline".to_string()));
        // A rule taking every alarm needs every alarm listed, not just one.
        let any = wanted(
            &rules("  - { name: a, match: { type: alarm }, notify: [{ channel: out }] }\n"),
            "home",
            false,
        );
        assert!(any.any_alarm);
        let sos = notification("alarm", "web", Some("sos"));
        assert_eq!(missing(&any, &[sos]), ["alarm:*"]);
        let all = notification("alarm", "web", Some(&KNOWN_ALARMS.join(",")));
        assert!(missing(&any, &[all]).is_empty());
    }

    const RULES: &str = "
  - name: theft
    match: { type: alarm, alarm: [movement, vibration, tow] }
    notify: [{ channel: out }]
  - name: offline
    match: { type: [deviceOffline, geofenceExit] }
    notify: [{ channel: out }]
  - name: elsewhere
    match: { type: ignitionOn, source: other }
    notify: [{ channel: out }]
  - name: everything
    match: { device: 12 }
    notify: [{ channel: out }]
";

    #[test]
    fn rules_name_the_types_and_alarms_a_source_needs() {
        let w = wanted(&rules(RULES), "home", false);
        assert_eq!(
            w.types.iter().collect::<Vec<_>>(),
            ["alarm", "deviceOffline", "geofenceExit"]
        );
        assert_eq!(
            w.alarms.iter().collect::<Vec<_>>(),
            ["movement", "tow", "vibration"]
        );
        assert!(!w.any_alarm);
        // `everything` has no type condition.
        assert!(w.any_type);
        assert!(
            !wanted(
                &rules(&RULES[..RULES.find("  - name: everything").unwrap()]),
                "home",
                false
            )
            .any_type
        );
        // The relay's own zones make geofence notifications unnecessary; `source: other` is for another.
        let own = wanted(&rules(RULES), "home", true);
        assert!(!own.types.contains("geofenceExit"));
        assert!(wanted(&rules(RULES), "other", false)
            .types
            .contains("ignitionOn"));
    }

    #[test]
    fn only_web_notifications_with_the_alarm_listed_count() {
        let w = wanted(&rules(RULES), "home", false);
        let all = missing(&w, &[]);
        assert_eq!(
            all,
            [
                "deviceOffline",
                "geofenceExit",
                "alarm:movement",
                "alarm:tow",
                "alarm:vibration"
            ]
        );
        let some = [
            // Mail only: does not reach the socket.
            notification("deviceOffline", "mail", None),
            notification("geofenceExit", "mail,web", None),
            // An alarm notification without `alarms` matches no alarm in Traccar.
            notification("alarm", "web", None),
            notification("alarm", "web", Some("movement, tow")),
        ];
        assert_eq!(missing(&w, &some), ["deviceOffline", "alarm:vibration"]);
        let any = wanted(
            &rules("  - { name: a, match: { type: alarm }, notify: [{ channel: out }] }"),
            "home",
            false,
        );
        assert!(any.any_alarm);
        assert_eq!(missing(&any, &some[..3]), ["alarm:*"]);
        // Two alarms listed are not every alarm.
        assert_eq!(missing(&any, &some), ["alarm:*"]);
    }
}
