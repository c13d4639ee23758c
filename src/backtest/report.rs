//! What a backtest reports: per rule and channel, what would have been notified and what noise
//! control held back (by reason), the incidents, the busiest devices and the messages per day; as a
//! terminal table, as JSON, and two runs side by side (`--compare`).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use serde::Serialize;

use crate::store::sqlite::DeliveryOutcome;
use crate::store::{IncidentRow, Status};

/// A delivery due this much after it was made was held (quiet hours, a debounce, a rate limit) rather
/// than sent at once.
const LATER_MS: i64 = 1_000;

/// Outcomes of one rule's messages on one channel (or of a whole rule, or of a run).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages that would have been sent (digests and incident steps included).
    pub notified: u64,
    /// Of those, sent later than their event (quiet hours deferred, debounce hold, rate limit wait).
    pub later: u64,
    /// Of those, digests.
    pub digests: u64,
    /// Held back by noise control, by reason (`cooldown`, `dedup`, `silence`, ...).
    pub suppressed: BTreeMap<String, u64>,
    /// Folded into a digest.
    pub grouped: u64,
    /// Could not be made (a template that failed, a recipient that rendered empty): dead at once.
    pub failed: u64,
}

impl Counters {
    fn add(&mut self, o: &DeliveryOutcome) {
        match o.status {
            Status::Pending | Status::Inflight | Status::Done => {
                self.notified += 1;
                self.later += u64::from(o.next_at_ms - o.created_at_ms >= LATER_MS);
                self.digests += u64::from(o.digest);
            }
            Status::Suppressed => {
                *self
                    .suppressed
                    .entry(reason_kind(o.reason.as_deref().unwrap_or("")).to_string())
                    .or_default() += 1;
            }
            Status::Grouped => self.grouped += 1,
            Status::Dead => self.failed += 1,
        }
    }

    fn merge(&mut self, other: &Counters) {
        self.notified += other.notified;
        self.later += other.later;
        self.digests += other.digests;
        self.grouped += other.grouped;
        self.failed += other.failed;
        for (k, v) in &other.suppressed {
            *self.suppressed.entry(k.clone()).or_default() += v;
        }
    }

    /// Messages held back by noise control, every reason.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }
}

/// The kind of a suppression, from the reason the store recorded (written by `crate::noise`, the
/// schedules, silences and incidents).
pub fn reason_kind(reason: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("silenced", "silence"),
        ("quiet hours", "quiet hours"),
        ("outside the active hours", "quiet hours"),
        ("cooldown", "cooldown"),
        ("duplicate", "dedup"),
        ("debounce", "debounce"),
        ("over the rate limit", "rate limit"),
        ("joined incident", "incident"),
        ("acknowledged", "incident"),
        ("resolved", "incident"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| reason.starts_with(prefix))
        .map_or("other", |(_, kind)| kind)
}

/// What one rule's incidents did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentCounts {
    /// Opened.
    pub opened: u64,
    /// Reminders sent.
    pub repeats: u64,
    /// Escalation steps taken.
    pub escalations: u64,
    /// Closed by the end of the history (resolve_on, resolve_after).
    pub resolved: u64,
    /// Events that joined an open incident.
    pub events: u64,
}

/// One rule's line.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// Events it matched.
    pub matched: u64,
    /// Its messages on every channel.
    pub total: Counters,
    /// Its messages per channel.
    pub channels: BTreeMap<String, Counters>,
    /// Its incidents (rules with `incident:` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incidents: Option<IncidentCounts>,
}

/// A device among the most notified.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceLine {
    /// Device id.
    pub device_id: i64,
    /// Its name, when an event carried it.
    pub name: Option<String>,
    /// Messages about it.
    pub notified: u64,
}

/// One sample message.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When it would have gone (RFC 3339, in the configured zone).
    pub at: String,
    /// Rule.
    pub rule: String,
    /// Channel.
    pub channel: String,
    /// Recipient.
    pub recipient: String,
    /// Device id.
    pub device_id: i64,
    /// What kind of message (`Telegram message`, `mail`, ...).
    pub kind: String,
    /// Subject or content type, where there is one.
    pub title: Option<String>,
    /// The message as rendered.
    pub text: String,
}

/// Aggregates a run's outcomes as they are read.
pub struct Tally {
    tz: chrono_tz::Tz,
    rules: BTreeMap<String, BTreeMap<String, Counters>>,
    devices: HashMap<i64, u64>,
    days: BTreeMap<NaiveDate, u64>,
    /// Ids of the notified deliveries and when each goes, in id order: where samples are drawn from.
    notified_ids: Vec<(i64, i64)>,
}

impl Tally {
    /// An empty tally; days are counted in `tz`.
    pub fn new(tz: chrono_tz::Tz) -> Tally {
        Tally {
            tz,
            rules: BTreeMap::new(),
            devices: HashMap::new(),
            days: BTreeMap::new(),
            notified_ids: Vec::new(),
        }
    }

    /// Counts one delivery.
    pub fn add(t: &mut Tally, o: DeliveryOutcome) {
        t.count(o);
    }

    fn count(&mut self, o: DeliveryOutcome) {
        let counters = self
            .rules
            .entry(o.rule.clone())
            .or_default()
            .entry(o.channel.clone())
            .or_default();
        counters.add(&o);
        if matches!(o.status, Status::Pending | Status::Inflight | Status::Done) {
            *self.devices.entry(o.device_id).or_default() += 1;
            if let Some(t) = chrono::DateTime::from_timestamp_millis(o.next_at_ms) {
                *self
                    .days
                    .entry(t.with_timezone(&self.tz).date_naive())
                    .or_default() += 1;
            }
            self.notified_ids.push((o.id, o.next_at_ms));
        }
    }

    /// `n` notified deliveries spread evenly over the run (the first, the last and between).
    pub fn sample_ids(&self, n: usize) -> Vec<(i64, i64)> {
        let len = self.notified_ids.len();
        if n == 0 || len == 0 {
            return Vec::new();
        }
        if n >= len {
            return self.notified_ids.clone();
        }
        let mut ids: Vec<(i64, i64)> = (0..n)
            .map(|i| self.notified_ids[if n == 1 { 0 } else { i * (len - 1) / (n - 1) }])
            .collect();
        ids.dedup();
        ids
    }
}

/// A run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration file, or `(built-in)`.
    pub config: String,
    /// Every rule of the configuration (matched or not) and every rule that left a message, by name.
    pub rules: Vec<RuleReport>,
    /// All messages.
    pub total: Counters,
    /// Events fed.
    pub events: u64,
    /// Events dropped as duplicates (same source and event id).
    pub duplicates: u64,
    /// The most notified devices, most first.
    pub top_devices: Vec<DeviceLine>,
    /// Messages per day, in the configured zone (days without any left out).
    pub per_day: BTreeMap<NaiveDate, u64>,
    /// Sample messages (`--show N`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
}

impl Report {
    /// Builds the report of a finished run: `rule_names` in configuration order, `matched` per rule.
    pub fn build(
        config: String,
        rule_names: &[String],
        counts: &super::engine::Counts,
        tally: &Tally,
        incidents: &[IncidentRow],
        top: usize,
    ) -> Report {
        let mut by_rule: BTreeMap<String, RuleReport> = BTreeMap::new();
        for (rule, channels) in &tally.rules {
            let r = by_rule.entry(rule.clone()).or_default();
            for c in channels.values() {
                r.total.merge(c);
            }
            r.channels = channels.clone();
        }
        for row in incidents {
            let Ok(s) = &row.state else { continue };
            let inc = by_rule
                .entry(row.rule.clone())
                .or_default()
                .incidents
                .get_or_insert_with(Default::default);
            inc.opened += 1;
            inc.repeats += u64::from(s.repeats_done);
            inc.escalations += u64::from(s.escalations_done);
            inc.resolved += u64::from(s.status.is_resolved());
            inc.events += s.events;
        }
        let mut rules = Vec::new();
        for name in rule_names {
            let mut r = by_rule.remove(name).unwrap_or_default();
            r.rule = name.clone();
            rules.push(r);
        }
        // Rules no longer in the configuration can still own messages (none in a fresh run).
        for (name, mut r) in by_rule {
            r.rule = name;
            rules.push(r);
        }
        let mut total = Counters::default();
        for r in &mut rules {
            r.matched = counts.matched.get(&r.rule).copied().unwrap_or(0);
            total.merge(&r.total);
        }
        let mut devices: Vec<(i64, u64)> = tally.devices.iter().map(|(k, v)| (*k, *v)).collect();
        devices.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top_devices = devices
            .into_iter()
            .take(top)
            .map(|(id, n)| DeviceLine {
                device_id: id,
                name: counts.device_names.get(&id).cloned(),
                notified: n,
            })
            .collect();
        Report {
            config,
            rules,
            total,
            events: counts.events,
            duplicates: counts.duplicates,
            top_devices,
            per_day: tally.days.clone(),
            samples: Vec::new(),
        }
    }
}

fn suppressed_text(c: &Counters) -> String {
    if c.suppressed.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = c
        .suppressed
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    format!("{} ({})", c.suppressed_total(), parts.join(", "))
}

fn incidents_text(i: &Option<IncidentCounts>) -> String {
    match i {
        None => String::new(),
        Some(i) => format!(
            "{} opened, {} repeats, {} escalations, {} resolved",
            i.opened, i.repeats, i.escalations, i.resolved
        ),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// Right-aligns the numeric columns `cols`.
fn numeric(t: &mut Table, cols: &[usize]) {
    for &i in cols {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn counter_cells(c: &Counters) -> [String; 5] {
    [
        c.notified.to_string(),
        c.later.to_string(),
        suppressed_text(c),
        c.grouped.to_string(),
        c.failed.to_string(),
    ]
}

/// One row a rule (its channel named when it has one), and one a channel under a rule with several.
fn rules_table(r: &Report) -> Table {
    let mut t = table(&[
        "rule",
        "channel",
        "matched",
        "notified",
        "later",
        "suppressed",
        "grouped",
        "failed",
        "incidents",
    ]);
    for rule in &r.rules {
        let channel = match rule.channels.len() {
            0 => "-".to_string(),
            1 => rule.channels.keys().next().cloned().unwrap_or_default(),
            _ => "(all)".to_string(),
        };
        let mut row = vec![rule.rule.clone(), channel, rule.matched.to_string()];
        row.extend(counter_cells(&rule.total));
        row.push(incidents_text(&rule.incidents));
        t.add_row(row);
        if rule.channels.len() > 1 {
            for (ch, c) in &rule.channels {
                let mut row = vec![String::new(), ch.clone(), String::new()];
                row.extend(counter_cells(c));
                t.add_row(row);
            }
        }
    }
    numeric(&mut t, &[2, 3, 4, 6, 7]);
    t
}

/// The report as text for a terminal.
pub fn text(r: &Report) -> String {
    let mut out = format!(
        "{}
",
        rules_table(r)
    );
    out.push_str(&format!(
        "{} events ({} duplicates); {} messages would have been sent ({} later than their event, {} digests); {} held back; {} grouped into digests; {} could not be made\n",
        r.events,
        r.duplicates,
        r.total.notified,
        r.total.later,
        r.total.digests,
        suppressed_text(&r.total),
        r.total.grouped,
        r.total.failed
    ));
    if !r.top_devices.is_empty() {
        let mut t = table(&["device", "name", "messages"]);
        for d in &r.top_devices {
            t.add_row(vec![
                d.device_id.to_string(),
                d.name.clone().unwrap_or_default(),
                d.notified.to_string(),
            ]);
        }
        numeric(&mut t, &[0, 2]);
        out.push_str(&format!("\nMost notified devices\n{t}\n"));
    }
    if !r.per_day.is_empty() {
        let mut t = table(&["day", "messages"]);
        for (d, n) in &r.per_day {
            t.add_row(vec![d.to_string(), n.to_string()]);
        }
        numeric(&mut t, &[1]);
        out.push_str(&format!("\nMessages per day\n{t}\n"));
    }
    for s in &r.samples {
        let title = s
            .title
            .as_deref()
            .map(|t| format!(" · {t}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n--- {} · {} → {} {} · device {} · {}{title}\n{}\n",
            s.at, s.rule, s.channel, s.recipient, s.device_id, s.kind, s.text
        ));
    }
    out
}

/// Two runs over the same history, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The first run (the configuration given first).
    pub a: Report,
    /// The second run (`--compare`).
    pub b: Report,
    /// Per rule (of either): matched and notified in each, in the order of `a` then new ones of `b`.
    pub rules: Vec<RuleDiff>,
    /// `b`'s messages minus `a`'s.
    pub notified_delta: i64,
}

/// One rule in two runs.
#[derive(Debug, Clone, Serialize)]
pub struct RuleDiff {
    /// Rule name.
    pub rule: String,
    /// In `a`: (matched, notified); None when `a` has no such rule.
    pub a: Option<(u64, u64)>,
    /// In `b`.
    pub b: Option<(u64, u64)>,
}

impl Comparison {
    /// Pairs the rules of two reports by name.
    pub fn new(a: Report, b: Report) -> Comparison {
        let find = |r: &Report, name: &str| {
            r.rules
                .iter()
                .find(|x| x.rule == name)
                .map(|x| (x.matched, x.total.notified))
        };
        let mut names: Vec<String> = a.rules.iter().map(|r| r.rule.clone()).collect();
        for r in &b.rules {
            if !names.contains(&r.rule) {
                names.push(r.rule.clone());
            }
        }
        let rules = names
            .into_iter()
            .map(|n| RuleDiff {
                a: find(&a, &n),
                b: find(&b, &n),
                rule: n,
            })
            .collect();
        let notified_delta = b.total.notified as i64 - a.total.notified as i64;
        Comparison {
            a,
            b,
            rules,
            notified_delta,
        }
    }
}

/// A comparison as text.
pub fn comparison_text(c: &Comparison) -> String {
    let mut t = table(&[
        "rule",
        "matched A",
        "matched B",
        "notified A",
        "notified B",
        "change",
    ]);
    let cell = |v: Option<(u64, u64)>, f: fn((u64, u64)) -> u64| {
        v.map_or_else(|| "-".to_string(), |x| f(x).to_string())
    };
    for r in &c.rules {
        let delta = r.b.map_or(0, |x| x.1) as i64 - r.a.map_or(0, |x| x.1) as i64;
        t.add_row(vec![
            r.rule.clone(),
            cell(r.a, |x| x.0),
            cell(r.b, |x| x.0),
            cell(r.a, |x| x.1),
            cell(r.b, |x| x.1),
            signed(delta),
        ]);
    }
    numeric(&mut t, &[1, 2, 3, 4, 5]);
    let d = c.notified_delta;
    let summary = match d.cmp(&0) {
        std::cmp::Ordering::Less => format!("{} fewer messages", -d),
        std::cmp::Ordering::Greater => format!("{d} more messages"),
        std::cmp::Ordering::Equal => "the same number of messages".to_string(),
    };
    format!(
        "A: {}\nB: {}\n{t}\nB sends {summary} than A ({} → {}) over the same {} events.\n",
        c.a.config, c.b.config, c.a.total.notified, c.b.total.notified, c.a.events
    )
}

fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: i64, status: Status, reason: Option<&str>, late: bool) -> DeliveryOutcome {
        DeliveryOutcome {
            id,
            rule: "theft".into(),
            channel: "phone".into(),
            status,
            reason: reason.map(str::to_string),
            device_id: 7,
            created_at_ms: 1_000_000,
            next_at_ms: if late { 5_000_000 } else { 1_000_000 },
            incident_ref: None,
            digest: false,
        }
    }

    #[test]
    fn outcomes_are_counted_by_what_happened_to_them() {
        let mut t = Tally::new(chrono_tz::UTC);
        t.count(outcome(1, Status::Pending, None, false));
        t.count(outcome(2, Status::Pending, None, true));
        t.count(outcome(
            3,
            Status::Suppressed,
            Some("cooldown: `x` notified less than 10m ago"),
            false,
        ));
        t.count(outcome(
            4,
            Status::Suppressed,
            Some("silenced by silence #2 (device=7)"),
            false,
        ));
        t.count(outcome(
            5,
            Status::Grouped,
            Some("grouped into the digest due …"),
            false,
        ));
        t.count(outcome(6, Status::Dead, Some("recipient empty"), false));
        let c = &t.rules["theft"]["phone"];
        assert_eq!((c.notified, c.later, c.grouped, c.failed), (2, 1, 1, 1));
        assert_eq!(c.suppressed["cooldown"], 1);
        assert_eq!(c.suppressed["silence"], 1);
        assert_eq!(t.devices[&7], 2);
        assert_eq!(t.sample_ids(5), vec![(1, 1_000_000), (2, 5_000_000)]);
    }

    #[test]
    fn samples_spread_over_the_run() {
        let mut t = Tally::new(chrono_tz::UTC);
        for id in 1..=100 {
            t.count(outcome(id, Status::Pending, None, false));
        }
        let ids = |v: Vec<(i64, i64)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(t.sample_ids(3)), vec![1, 50, 100]);
        assert_eq!(ids(t.sample_ids(1)), vec![1]);
        assert!(t.sample_ids(0).is_empty());
    }

    #[test]
    fn reasons_fall_into_their_kinds() {
        for (reason, kind) in [
            ("quiet hours `22:00-06:00` (Europe/Vienna)", "quiet hours"),
            (
                "outside the active hours `mon-fri 08:00-18:00` (UTC)",
                "quiet hours",
            ),
            (
                "duplicate: an identical event was notified 2m before (dedup window 5m)",
                "dedup",
            ),
            (
                "debounce: geofenceEnter then geofenceExit within 2m",
                "debounce",
            ),
            (
                "over the rate limit (5 per 1m): map pins are left out of digests",
                "rate limit",
            ),
            ("joined incident 3 (4 events since …)", "incident"),
            ("something new", "other"),
        ] {
            assert_eq!(reason_kind(reason), kind, "{reason}");
        }
    }
}
