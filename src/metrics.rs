//! Prometheus metrics: one [`Metrics`] registry per relay (no global state, so tests can run several
//! relays in one process), rendered in the text format at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::store::Status;

type Labels = Vec<(&'static str, String)>;

/// The relay's instruments.
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    matches: Family<Labels, Counter>,
    notifications: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    outbox: Family<Labels, Gauge>,
    oldest_due: Gauge<f64, AtomicU64>,
    reloads: Family<Labels, Counter>,
    reload_time: Gauge<f64, AtomicU64>,
    reload_ok: Gauge,
    positions: Family<Labels, Counter>,
    forwarded_positions: Family<Labels, Counter>,
    stale_outcomes: Counter,
    silences_unreadable: Gauge,
    incident_events: Family<Labels, Counter>,
    incident_steps: Family<Labels, Counter>,
    incidents_live: Family<Labels, Gauge>,
    incident_ack: Histogram,
    incidents_resolved: Family<Labels, Counter>,
    bot_updates: Family<Labels, Counter>,
    bot_refusals: Family<Labels, Counter>,
    bot_sends: Family<Labels, Counter>,
}

/// Traccar's event types (its `Event.TYPE_*`), which include the relay's own zone crossings
/// (`geofenceEnter`/`geofenceExit`), and `-` for a body that could not be read.
const KNOWN_EVENT_TYPES: &[&str] = &[
    "-",
    "alarm",
    "commandResult",
    "deviceFuelDrop",
    "deviceFuelIncrease",
    "deviceInactive",
    "deviceMoving",
    "deviceOffline",
    "deviceOnline",
    "deviceOverspeed",
    "deviceStopped",
    "deviceUnknown",
    "driverChanged",
    "geofenceCrossed",
    "geofenceEnter",
    "geofenceExit",
    "ignitionOff",
    "ignitionOn",
    "maintenance",
    "media",
    "proximityEnter",
    "proximityExit",
    "queuedCommandSent",
    "textMessage",
    "unaccompaniedMotion",
];

/// The `type` label of an event type: its name when Traccar knows it, else `other`. The type comes
/// from the request body, and each distinct label value is a time series kept for the life of the
/// process: a sender making up types must not grow `/metrics` (and the relay's memory) without end.
pub fn type_label(event_type: &str) -> &str {
    if KNOWN_EVENT_TYPES.contains(&event_type) {
        event_type
    } else {
        "other"
    }
}

/// Delivery latency buckets: 5 ms to about 3 h (event received -> accepted by the peer; retries included).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 3.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every instrument registered (in the order `/metrics` shows them).
    pub fn new() -> Metrics {
        let m = Metrics {
            events: Family::default(),
            matches: Family::default(),
            notifications: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            outbox: Family::default(),
            oldest_due: Gauge::default(),
            reloads: Family::default(),
            reload_time: Gauge::default(),
            reload_ok: Gauge::default(),
            positions: Family::default(),
            forwarded_positions: Family::default(),
            stale_outcomes: Counter::default(),
            silences_unreadable: Gauge::default(),
            incident_events: Family::default(),
            incident_steps: Family::default(),
            incidents_live: Family::default(),
            // 10 s to about 4.5 days: from "on it at once" to a weekend.
            incident_ack: Histogram::new(exponential_buckets(10.0, 3.0, 11)),
            incidents_resolved: Family::default(),
            bot_updates: Family::default(),
            bot_refusals: Family::default(),
            bot_sends: Family::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("trackrelay");
        m.register_flow(&mut registry);
        m.register_incidents(&mut registry);
        m.register_reloads(&mut registry);
        m.register_diagnostics(&mut registry);
        m.reload_ok.set(1);
        Metrics { registry, ..m }
    }

    /// The flow: events (and forwarded positions) in, rule matches, notifications out with their latency, the outbox.
    fn register_flow(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "Events received, by source, type and result",
            self.events.clone(),
        );
        registry.register(
            "positions_received",
            "Positions received from Traccar's position forwarding (ingest.positions_path), by result (accepted, unauthorized, invalid); they update where devices are, nothing else",
            self.forwarded_positions.clone(),
        );
        registry.register(
            "rule_matches",
            "Rule matches, by rule",
            self.matches.clone(),
        );
        registry.register(
            "notifications",
            "Delivery attempts by channel and outcome (sent, retried, dead), and deliveries noise control held back (suppressed, grouped, deferred)",
            self.notifications.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From event received to notification accepted by the peer, by channel",
            self.latency.clone(),
        );
        registry.register(
            "outbox_deliveries",
            "Deliveries in the store, by status",
            self.outbox.clone(),
        );
        registry.register(
            "outbox_oldest_due_age_seconds",
            "How long the oldest due delivery has been waiting (0 when none)",
            self.oldest_due.clone(),
        );
    }

    /// Incidents: what events did to them, the steps sent, how many are live, time to acknowledge,
    /// how they were resolved.
    fn register_incidents(&self, registry: &mut Registry) {
        registry.register(
            "incident_events",
            "Events offered to an incident, by effect (opened, joined, resolved, nothing_to_resolve, unreadable)",
            self.incident_events.clone(),
        );
        registry.register(
            "incident_steps",
            "Incident steps sent, by step (repeat, escalation, notice)",
            self.incident_steps.clone(),
        );
        registry.register(
            "incidents_live",
            "Incidents not resolved, by status (open, acknowledged)",
            self.incidents_live.clone(),
        );
        registry.register(
            "incident_ack_seconds",
            "From an incident's opening to its acknowledgement",
            self.incident_ack.clone(),
        );
        registry.register(
            "telegram_updates",
            "Updates two-way bots handled, by kind (button, pick, command, other)",
            self.bot_updates.clone(),
        );
        registry.register(
            "telegram_refusals",
            "Presses and commands refused, by reason (foreign_chat, unknown_token, unauthorized_device)",
            self.bot_refusals.clone(),
        );
        registry.register(
            "telegram_followups",
            "Edits of incident messages and live pins, by what (edit, move, stop) and outcome (ok, failed)",
            self.bot_sends.clone(),
        );
        registry.register(
            "incidents_resolved",
            "Incidents resolved, by how (resolve_on, resolve_after, manual, rule_removed)",
            self.incidents_resolved.clone(),
        );
    }

    /// An event did `effect` to an incident (see [`crate::store::Effect::name`]).
    pub fn incident_event(&self, effect: &'static str) {
        self.incident_events
            .get_or_create(&vec![("effect", effect.to_string())])
            .inc();
    }

    /// An incident step was sent: `repeat`, `escalation` or `notice`.
    pub fn incident_step(&self, step: &'static str) {
        self.incident_steps
            .get_or_create(&vec![("step", step.to_string())])
            .inc();
    }

    /// An incident was acknowledged this long after it opened.
    pub fn incident_acknowledged(&self, after_s: f64) {
        self.incident_ack.observe(after_s.max(0.0));
    }

    /// A two-way bot handled an update of `kind`.
    pub fn bot_update(&self, kind: &'static str) {
        self.bot_updates
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// A two-way bot refused a press or command (`reason`).
    pub fn bot_refusal(&self, reason: &'static str) {
        self.bot_refusals
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A follow-up of an incident message (`edit`, `move`, `stop`) ended `outcome` (`ok`, `failed`).
    pub fn bot_followup(&self, what: &'static str, outcome: &'static str) {
        self.bot_sends
            .get_or_create(&vec![
                ("what", what.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// An incident was resolved `how`.
    pub fn incident_resolved(&self, how: &'static str) {
        self.incidents_resolved
            .get_or_create(&vec![("how", how.to_string())])
            .inc();
    }

    /// Live incidents by status, as the store counts them now.
    pub fn incidents_live(&self, counts: &[(String, u64)]) {
        for status in ["open", "acknowledged"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.incidents_live
                .get_or_create(&vec![("status", status.to_string())])
                .set(n as i64);
        }
    }

    /// Configuration reloads.
    fn register_reloads(&self, registry: &mut Registry) {
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            self.reloads.clone(),
        );
        registry.register(
            "config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt",
            self.reload_time.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 if the last reload attempt succeeded",
            self.reload_ok.clone(),
        );
    }

    /// How live-source events got their positions, outcomes too late to record, unreadable silences,
    /// and the build.
    fn register_diagnostics(&self, registry: &mut Registry) {
        registry.register(
            "source_event_positions",
            "Live-source events that refer to a position, by source and how it was joined: socket (its positions frame), rest (read from the server), missing (could not be had; the event went on without it)",
            self.positions.clone(),
        );
        registry.register(
            "delivery_outcomes_stale",
            "Delivery outcomes not recorded because the delivery had been claimed again meanwhile (its lease ran out)",
            self.stale_outcomes.clone(),
        );
        registry.register(
            "silences_unreadable",
            "Silences not ended whose matchers cannot be read (another version's, or invalid): they mute nothing",
            self.silences_unreadable.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
        );
    }

    /// An event was received; `result` is `accepted`, `duplicate`, `invalid`, `unauthorized` or `unavailable`.
    /// The type is counted under its name only if it is one Traccar knows (see [`type_label`]).
    pub fn event(&self, source: &str, event_type: &str, result: &'static str) {
        let labels = vec![
            ("source", source.to_string()),
            ("type", type_label(event_type).to_string()),
            ("result", result.to_string()),
        ];
        self.events.get_or_create(&labels).inc();
    }

    /// A forwarded position was received; `result` is `accepted`, `unauthorized` or `invalid`.
    pub fn forwarded_position(&self, result: &'static str) {
        self.forwarded_positions
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// A live-source event that refers to a position got it `via` `socket`, `rest` or `missing`.
    pub fn event_position(&self, source: &str, via: &'static str) {
        self.positions
            .get_or_create(&vec![
                ("source", source.to_string()),
                ("via", via.to_string()),
            ])
            .inc();
    }

    /// A rule matched.
    pub fn rule_matched(&self, rule: &str) {
        self.matches
            .get_or_create(&vec![("rule", rule.to_string())])
            .inc();
    }

    /// A delivery attempt ended; `latency_s` is given for sent ones.
    pub fn notification(&self, channel: &str, outcome: &'static str, latency_s: Option<f64>) {
        self.notifications
            .get_or_create(&vec![
                ("channel", channel.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        if let Some(s) = latency_s {
            self.latency
                .get_or_create(&vec![("channel", channel.to_string())])
                .observe(s.max(0.0));
        }
    }

    /// A reload was attempted at `unix_s`.
    pub fn reload(&self, ok: bool, unix_s: f64) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.reload_time.set(unix_s);
        self.reload_ok.set(i64::from(ok));
    }

    /// An outcome was dropped: its delivery is no longer in flight under the claim it came from.
    pub fn stale_outcome(&self) {
        self.stale_outcomes.inc();
    }

    /// How many silences not yet ended cannot be read (and so are not applied).
    pub fn silences_unreadable(&self, n: usize) {
        self.silences_unreadable.set(n as i64);
    }

    /// Renders the text format, with the outbox gauges set from `counts` and `oldest_due_age_s` first.
    pub fn render(&self, counts: &[(Status, u64)], oldest_due_age_s: f64) -> String {
        for st in [
            Status::Pending,
            Status::Inflight,
            Status::Done,
            Status::Dead,
            Status::Suppressed,
            Status::Grouped,
        ] {
            let n = counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
            self.outbox
                .get_or_create(&vec![("status", st.as_str().to_string())])
                .set(n as i64);
        }
        self.oldest_due.set(oldest_due_age_s);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.event("traccar", "alarm", "accepted");
        m.event("traccar", "alarm", "accepted");
        m.rule_matched("theft");
        m.notification("phone", "sent", Some(0.02));
        let text = m.render(&[(Status::Dead, 3)], 1.5);
        for line in [
            "trackrelay_events_received_total{source=\"traccar\",type=\"alarm\",result=\"accepted\"} 2",
            "trackrelay_rule_matches_total{rule=\"theft\"} 1",
            "trackrelay_notifications_total{channel=\"phone\",outcome=\"sent\"} 1",
            "trackrelay_delivery_latency_seconds_count{channel=\"phone\"} 1",
            "trackrelay_outbox_deliveries{status=\"dead\"} 3",
            "trackrelay_outbox_deliveries{status=\"pending\"} 0",
            "trackrelay_outbox_deliveries{status=\"suppressed\"} 0",
            "trackrelay_outbox_oldest_due_age_seconds 1.5",
            "trackrelay_config_last_reload_success 1",
            "trackrelay_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn event_types_nobody_defined_are_counted_as_other() {
        let m = Metrics::new();
        for i in 0..100 {
            m.event("hook", &format!("madeUp{i}"), "accepted");
        }
        m.event("hook", "geofenceEnter", "accepted");
        m.event("hook", "-", "invalid");
        let text = m.render(&[], 0.0);
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("trackrelay_events_received_total{"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                "trackrelay_events_received_total{source=\"hook\",type=\"-\",result=\"invalid\"} 1",
                "trackrelay_events_received_total{source=\"hook\",type=\"geofenceEnter\",result=\"accepted\"} 1",
                "trackrelay_events_received_total{source=\"hook\",type=\"other\",result=\"accepted\"} 100",
            ]
        );
    }
}
