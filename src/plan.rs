//! From matched rules to notifications: renders every target of every matching rule for one event.
//! Pure: the same event and configuration always give the same notifications, keys included.

use minijinja::context;

use crate::channel_config::{ChannelConfig, Facts, Message};
use crate::event::Envelope;
use crate::noise::schedule::WhenMuted;
use crate::noise::silence::{SilenceSet, Subject};
use crate::noise::{CooldownGate, DebounceGate, Gates, GroupGate, KeyedWindow, RateGate};
use crate::notification::{idempotency_key, Content, Notification, Origin};
use crate::render::{escape_html, Escape, Renderer};
use crate::rules::{Rule, Target};
use crate::settings::Config;

/// Facts about how an event arrived.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// Dedup namespace (and the source's name unless `via` says otherwise).
    pub source: String,
    /// The name of the source that delivered the event when it differs from the dedup namespace (a
    /// live Traccar source sharing the webhook's namespace): what rules match and templates show.
    pub via: Option<String>,
    /// `X-PowTxn`.
    pub txn: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// Receive time, unix ms.
    pub received_at_ms: i64,
}

impl Arrival {
    /// The name of the source that delivered the event.
    pub fn name(&self) -> &str {
        self.via.as_deref().unwrap_or(&self.source)
    }
}

/// A notification to store, or one that cannot be sent and goes straight to dead letter with a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The notification.
    pub notification: Notification,
    /// Why it cannot be sent (e.g. the recipient template rendered empty).
    pub dead: Option<String>,
    /// Send one at a time, in order, with the others of this key.
    pub order_key: Option<String>,
    /// Noise control the store applies (see [`crate::noise`]).
    pub gates: Gates,
}

/// Renders the notifications of every rule in `matched` for `env`. `raw` is the event as received.
/// Silences (at the arrival time) and schedules (at the time the event is judged at, see
/// [`crate::noise::judged_at`]) are applied here; the stateful noise checks are set
/// up as each delivery's [`Gates`] for the store. `incidents` adds what the rules' incidents put into
/// their messages (the acknowledgement links).
pub fn plan(
    cfg: &Config,
    matched: &[&Rule],
    env: &Envelope,
    raw: &str,
    arrival: &Arrival,
    silences: &SilenceSet,
    incidents: &IncidentExtras,
) -> Vec<Planned> {
    if matched.is_empty() {
        return vec![];
    }
    let p = Planner::new(cfg, env, raw, arrival, silences, incidents);
    let mut out = Vec::new();
    for rule in matched {
        let rule_gates = p.rule_gates(rule);
        for (i, target) in rule.targets.iter().enumerate() {
            if let Some(ch) = cfg.channels.get(&target.channel) {
                p.plan_target(rule, &rule_gates, (i, target), ch, None, &mut out);
            }
        }
    }
    out
}

/// Renders one step of an incident (`step`: `repeat-3`, `escalate-1`) of `rule` for the targets given
/// with their numbers (the rule's own `notify` entries first, then the escalation steps', as
/// [`crate::rules::RuleIncident::escalation_targets`] counts them), from the incident's latest event.
/// The rule's noise settings do not apply (a repeat is not a new event: no cooldown, dedup or quiet
/// hours); silences and the channels' rate limits do.
#[allow(clippy::too_many_arguments)]
pub fn plan_step(
    cfg: &Config,
    rule: &Rule,
    targets: &[(usize, &Target)],
    env: &Envelope,
    raw: &str,
    arrival: &Arrival,
    silences: &SilenceSet,
    incidents: &IncidentExtras,
    step: &str,
) -> Vec<Planned> {
    let p = Planner::new(cfg, env, raw, arrival, silences, incidents);
    let mut out = Vec::new();
    for &(i, target) in targets {
        if let Some(ch) = cfg.channels.get(&target.channel) {
            p.plan_target(
                rule,
                &Gates::default(),
                (i, target),
                ch,
                Some(step),
                &mut out,
            );
        }
    }
    out
}

/// How long a live pin of an incident may be moved: as long as the incident can stay open without a
/// new event (`resolve_after`), within what Telegram allows (1 minute to 1 day). The pursuit stops it
/// earlier, once the incident is acknowledged or resolved.
pub fn live_period(inc: &crate::rules::RuleIncident) -> u32 {
    inc.policy.resolve_after.as_secs().clamp(60, 86_400) as u32
}

/// What incidents add to their rules' messages: per rule, the `incident` template variable and a
/// first line (a repeat's or an escalation's); per target, the acknowledgement link (`ack_url`),
/// added at the end of the message when its template does not show it.
#[derive(Debug, Default)]
pub struct IncidentExtras {
    rules: std::collections::HashMap<String, RuleExtras>,
}

#[derive(Debug, Default)]
struct RuleExtras {
    vars: Option<minijinja::Value>,
    header: Option<String>,
    links: std::collections::HashMap<usize, String>,
}

impl IncidentExtras {
    /// Sets the `incident` variable of `rule`'s messages and their first line.
    pub fn set_rule(&mut self, rule: &str, vars: minijinja::Value, header: Option<String>) {
        let e = self.rules.entry(rule.to_string()).or_default();
        e.vars = Some(vars);
        e.header = header;
    }

    /// Sets the acknowledgement link of `rule`'s target number `target`.
    pub fn set_link(&mut self, rule: &str, target: usize, url: String) {
        self.rules
            .entry(rule.to_string())
            .or_default()
            .links
            .insert(target, url);
    }

    fn link(&self, rule: &str, target: usize) -> Option<&str> {
        self.rules.get(rule)?.links.get(&target).map(String::as_str)
    }
}

/// Adds an incident's first line and its acknowledgement link (unless the text shows it already) to a
/// rendered message, escaped like the message.
fn with_incident(text: String, header: Option<&str>, link: Option<&str>, esc: Escape) -> String {
    let mut out = match header {
        Some(h) => format!("{}\n{text}", esc.apply(h)),
        None => text,
    };
    if let Some(url) = link.filter(|u| !out.contains(*u)) {
        out.push_str("\n\n");
        // A link where the message's markup has one, so a tap opens it; the bare address elsewhere.
        out.push_str(&match esc {
            Escape::Html => format!("<a href=\"{}\">Acknowledge</a>", escape_html(url)),
            Escape::MarkdownV2 => format!(
                "[Acknowledge]({})",
                url.replace('\\', "\\\\").replace(')', "\\)")
            ),
            _ => esc.apply(&format!("Acknowledge: {url}")),
        });
    }
    out
}

/// The key of `rule`'s incident for `env`: its key template rendered, or the rule and the device.
pub fn incident_key(cfg: &Config, rule: &Rule, env: &Envelope, arrival: &Arrival) -> String {
    let device = env.device_id();
    let default = || format!("{}/{device}", rule.name);
    let Some(t) = rule.incident.as_ref().and_then(|i| i.key.as_deref()) else {
        return default();
    };
    let r = &cfg.renderer;
    let ctx = r.event_context(env, arrival.name(), arrival.txn.as_deref());
    match r.render(t, &ctx, context! { rule => rule.name.as_str() }) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
        Ok(_) => default(),
        Err(e) => {
            tracing::warn!(rule = %rule.name, error = %e, "incident key template failed; using the rule and the device");
            default()
        }
    }
}

/// One event being planned: what the rendering and the gates of each of its targets read.
struct Planner<'a> {
    r: &'a Renderer,
    env: &'a Envelope,
    raw: &'a str,
    arrival: &'a Arrival,
    silences: &'a SilenceSet,
    incidents: &'a IncidentExtras,
    /// The event's template context.
    ctx: minijinja::Value,
}

impl<'a> Planner<'a> {
    fn new(
        cfg: &'a Config,
        env: &'a Envelope,
        raw: &'a str,
        arrival: &'a Arrival,
        silences: &'a SilenceSet,
        incidents: &'a IncidentExtras,
    ) -> Planner<'a> {
        let r = &cfg.renderer;
        Planner {
            r,
            env,
            raw,
            arrival,
            silences,
            incidents,
            ctx: r.event_context(env, arrival.name(), arrival.txn.as_deref()),
        }
    }
}

impl Planner<'_> {
    /// The deliveries of the `i`th target of `rule`: each part its channel's kind makes of the rendered
    /// message, to each recipient. `step` names an incident's step (its deliveries are keyed apart).
    fn plan_target(
        &self,
        rule: &Rule,
        rule_gates: &Gates,
        (i, target): (usize, &Target),
        ch: &ChannelConfig,
        step: Option<&str>,
        out: &mut Vec<Planned>,
    ) {
        let extra = self.extra(rule, i, target);
        let mut message = self.message(rule, i, target, ch, &extra);
        if target.live && step.is_some_and(|s| !s.starts_with("escalate")) {
            // The live pin sent with the target's first message follows the device already: a
            // reminder adds none.
            message.pin = None;
            message.live_period = None;
        }
        let parts = ch.kind.content(message);
        let origin = self.origin(rule);
        for (recipient, dead) in recipients(self.r, target, &self.ctx, &extra, &ch.default_to) {
            for (part, content) in &parts {
                let (id, n) = (self.env.event.id.to_string(), i.to_string());
                let mut parts = vec![
                    self.arrival.source.as_str(),
                    &id,
                    &rule.name,
                    &n,
                    &target.channel,
                    &recipient,
                    part,
                ];
                // A step's deliveries are keyed apart; an event's own keep the keys they always had.
                parts.extend(step);
                let key = idempotency_key(&parts);
                let notification = Notification {
                    key,
                    channel: target.channel.clone(),
                    recipient: recipient.clone(),
                    content: content.clone(),
                    origin: origin.clone(),
                };
                let order_key = notification.order_key(ch.kind.ordered());
                let gates = self.delivery_gates(rule_gates, rule, ch, &notification, part);
                out.push(Planned {
                    notification,
                    dead: dead.clone(),
                    order_key,
                    gates,
                });
            }
        }
    }

    /// The variables a target's templates see besides the event's: the rule and channel, and an
    /// incident's `incident` and `ack_url`.
    fn extra(&self, rule: &Rule, i: usize, target: &Target) -> minijinja::Value {
        let base = context! {
            rule => rule.name.as_str(),
            channel => target.channel.as_str(),
            severity => rule.severity.as_str(),
        };
        match self.incidents.rules.get(&rule.name) {
            None => base,
            Some(e) => context! {
                ..base,
                ..context! { incident => e.vars.clone(), ack_url => e.links.get(&i).cloned() }
            },
        }
    }

    /// A target's message, rendered: its template, and the subject, HTML part, body and map pin where
    /// the target and its channel's kind have them. A template failing gives the fallback message; a
    /// body template failing gives the kind's default body.
    fn message<'m>(
        &'m self,
        rule: &'m Rule,
        i: usize,
        target: &'m Target,
        ch: &ChannelConfig,
        extra: &minijinja::Value,
    ) -> Message<'m> {
        let render = |name: &str| {
            self.r.render(name, &self.ctx, extra.clone()).unwrap_or_else(|e| {
                tracing::warn!(rule = %rule.name, channel = %target.channel, error = %e, "template failed; sending the fallback message");
                fallback(self.env)
            })
        };
        let header = self
            .incidents
            .rules
            .get(&rule.name)
            .and_then(|e| e.header.as_deref());
        let ack_url = self.incidents.link(&rule.name, i);
        // A kind with an acknowledge action of its own shows no link in the text.
        let link = ack_url.filter(|_| !ch.kind.ack_action());
        let text = with_incident(render(&target.body), header, link, ch.kind.escape());
        // Subjects are one line: a template's stray newline would end the header.
        let subject = target.subject.as_deref().map(|s| {
            let one = render(s).split_whitespace().collect::<Vec<_>>().join(" ");
            match header {
                Some(h) => format!("{h}: {one}"),
                None => one,
            }
        });
        let html = target
            .body_html
            .as_deref()
            .map(|t| with_incident(render(t), header, link, Escape::Html));
        let body = ch.body.as_deref().and_then(|tmpl| {
            self.r
                .render(tmpl, &self.ctx, context! { ..extra.clone(), ..context! { message => text.as_str() } })
                .map_err(|e| {
                    tracing::warn!(channel = %target.channel, error = %e, "{} body template failed; sending the default body", ch.kind.name());
                })
                .ok()
        });
        let pin = match (target.location, &self.env.position) {
            (true, Some(p)) => Some((p.latitude, p.longitude)),
            _ => None,
        };
        // Kept only where a digest may list it.
        let digested = rule.noise.group.is_some()
            || ch
                .rate_limit
                .is_some_and(|l| l.over == crate::noise::Over::Digest);
        let live_period = (pin.is_some() && target.live)
            .then(|| rule.incident.as_ref().map(live_period))
            .flatten();
        Message {
            text,
            subject,
            html,
            body,
            pin,
            live_period,
            digested,
            severity: rule.severity,
            incident: rule.incident.is_some(),
            ack_url: ack_url.map(str::to_string),
            map_url: self
                .env
                .map_point()
                .and_then(Result::ok)
                .map(|(lat, lon)| crate::render::map_url(lat, lon)),
            facts: Facts {
                rule: &rule.name,
                channel: &target.channel,
                source: self.arrival.name(),
                txn: self.arrival.txn.as_deref(),
                raw: self.raw,
            },
        }
    }

    /// Where the notifications of `rule` for this event come from.
    fn origin(&self, rule: &Rule) -> Origin {
        let (env, arrival) = (self.env, self.arrival);
        Origin {
            source: arrival.source.clone(),
            event_id: env.event.id,
            event_type: env.event.event_type.clone(),
            device_id: env.device_id(),
            device_name: env
                .device
                .as_ref()
                .map(|d| d.name.clone())
                .unwrap_or_default(),
            rule: rule.name.clone(),
            txn: arrival.txn.clone(),
            request_id: arrival.request_id.clone(),
            received_at_ms: arrival.received_at_ms,
        }
    }

    /// The gates every delivery of `rule` for this event shares: schedule, dedup, cooldown, debounce.
    fn rule_gates(&self, rule: &Rule) -> Gates {
        let (r, env, ctx, arrival) = (self.r, self.env, &self.ctx, self.arrival);
        let noise = &rule.noise;
        let mut g = Gates::default();
        if noise.is_empty() {
            return g;
        }
        // Quiet hours are those of when the event happened, also when it arrives late.
        let now = crate::noise::judged_at(env, arrival.received_at_ms);
        let extra = || context! { rule => rule.name.as_str() };
        if let Some(s) = &noise.schedule {
            if let Some(at) = chrono::DateTime::from_timestamp_millis(now) {
                if s.muted_at(at) {
                    let reason = s.reason(at);
                    match (s.when_muted, s.next_open(at)) {
                        (WhenMuted::Defer, Some(open)) => {
                            g.not_before = Some(open.timestamp_millis());
                            g.deferred_by = Some(format!("{reason}: deferred"));
                        }
                        (WhenMuted::Defer, None) => {
                            g.suppress = Some(format!("{reason}, and the schedule never opens"))
                        }
                        (WhenMuted::Drop, _) => g.suppress = Some(reason),
                    }
                }
            }
        }
        let device = env.device_id();
        if let Some(w) = noise.dedup {
            let alarms: Vec<&str> = env.alarms().collect();
            g.dedup = Some(KeyedWindow {
                key: format!(
                    "dedup/{}/{device}/{}/{}/{}",
                    rule.name,
                    env.event.event_type,
                    alarms.join(","),
                    env.event.geofence_id
                ),
                window_ms: w.as_millis() as i64,
            });
        }
        if let Some(c) = &noise.cooldown {
            let key = match &c.key {
                None => device.to_string(),
                Some(t) => r.render(t, ctx, extra()).unwrap_or_else(|e| {
                    tracing::warn!(rule = %rule.name, error = %e, "cooldown key template failed; using the device id");
                    device.to_string()
                }),
            };
            g.cooldown = Some(CooldownGate {
                key: format!("cooldown/{}/{key}", rule.name),
                period_ms: c.period.as_millis() as i64,
                summary: c.summary,
            });
        }
        if let Some(d) = noise.debounce {
            let t = env.event.event_type.as_str();
            if t == "geofenceEnter" || t == "geofenceExit" {
                g.debounce = Some(DebounceGate {
                    key: crate::noise::debounce_key(env),
                    transition: t.to_string(),
                    delay_ms: d.as_millis() as i64,
                });
            }
        }
        g
    }

    /// The gates of one delivery: its rule's, plus silences, grouping and the channel's rate limit.
    fn delivery_gates(
        &self,
        rule_gates: &Gates,
        rule: &Rule,
        ch: &ChannelConfig,
        n: &Notification,
        part: &str,
    ) -> Gates {
        let (r, env, ctx, arrival, silences) =
            (self.r, self.env, &self.ctx, self.arrival, self.silences);
        let mut g = rule_gates.clone();
        let pin = matches!(n.content, Content::TelegramLocation { .. });
        if pin {
            // Telegram refuses a pin that is no place with a 400: it is recorded instead of dead-lettered.
            if let Some(Err(bad)) = env.map_point() {
                g.suppress = Some(format!("no map pin: {bad}"));
                return g;
            }
        }
        if !silences.is_empty() {
            let subject = Subject {
                device_id: n.origin.device_id,
                device_name: &n.origin.device_name,
                group_id: env.device.as_ref().map(|d| d.group_id).unwrap_or(0),
                rule: &rule.name,
                event_type: &env.event.event_type,
                channel: &n.channel,
            };
            if let Some(s) = silences.find(&subject, arrival.received_at_ms) {
                g.suppress = Some(s.reason());
                return g;
            }
        }
        if let Some(gr) = &rule.noise.group {
            if pin {
                g.suppress = Some("map pins are left out of digests".into());
                return g;
            }
            let by = match &gr.by {
                None => String::new(),
                Some(t) => r
                    .render(
                        t,
                        ctx,
                        context! { rule => rule.name.as_str(), channel => n.channel.as_str() },
                    )
                    .unwrap_or_default(),
            };
            g.group = Some(GroupGate {
                key: format!(
                    "group/{}/{by}/{}/{}/{part}",
                    rule.name, n.channel, n.recipient
                ),
                wait_ms: gr.wait.as_millis() as i64,
                interval_ms: gr.interval.as_millis() as i64,
                title: gr.title.clone(),
            });
        }
        if let Some(rl) = &ch.rate_limit {
            g.rate = Some(RateGate {
                key: format!("rate/{}/{}", n.channel, n.recipient),
                digest_key: format!("ratedigest/{}/{}/{part}", n.channel, n.recipient),
                max: rl.max,
                per_ms: rl.per.as_millis() as i64,
                over: rl.over,
                // A digest lists text: a pin over the limit is left out of it, as from a rule's group.
                no_digest: pin,
            });
        }
        g
    }
}

/// The recipients of a target: rendered `to` templates (comma-separated lists split), or the channel's
/// defaults, or one empty recipient for channels that have a single destination.
fn recipients(
    r: &crate::render::Renderer,
    target: &Target,
    ctx: &minijinja::Value,
    extra: &minijinja::Value,
    defaults: &[String],
) -> Vec<(String, Option<String>)> {
    if target.to.is_empty() {
        if defaults.is_empty() {
            return vec![(String::new(), None)];
        }
        return defaults.iter().map(|d| (d.clone(), None)).collect();
    }
    let mut out = Vec::new();
    for t in &target.to {
        match r.render(t, ctx, extra.clone()) {
            Ok(s) => {
                let before = out.len();
                out.extend(
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| (s.to_string(), None)),
                );
                if out.len() == before {
                    out.push((
                        String::new(),
                        Some(
                            "no recipient: the `to` template rendered empty for this event".into(),
                        ),
                    ));
                }
            }
            Err(e) => out.push((String::new(), Some(format!("no recipient: {e}")))),
        }
    }
    out
}

/// The recipients of `channels` that the rules would route a notification of `device` to: every
/// target (escalation steps' included) on one of those channels, its `to` templates rendered with the
/// device alone (a template that needs more of an event names nobody), or its channel's default. What
/// a two-way chat may act on: only devices whose notifications reach it.
pub fn routed_recipients(
    cfg: &Config,
    channels: &[String],
    device: &crate::event::Device,
) -> std::collections::BTreeSet<String> {
    let env = Envelope {
        event: crate::event::Event {
            device_id: device.id,
            ..Default::default()
        },
        device: Some(device.clone()),
        ..Default::default()
    };
    let ctx = cfg.renderer.event_context(&env, "", None);
    let mut out = std::collections::BTreeSet::new();
    for rule in cfg.rules.rules() {
        let steps = rule
            .incident
            .iter()
            .flat_map(|i| i.escalation_targets.iter());
        for target in rule.targets.iter().chain(steps) {
            let Some(ch) = cfg.channels.get(&target.channel) else {
                continue;
            };
            if !channels.contains(&target.channel) {
                continue;
            }
            let extra = context! { rule => rule.name.as_str(), channel => target.channel.as_str() };
            out.extend(
                recipients(&cfg.renderer, target, &ctx, &extra, &ch.default_to)
                    .into_iter()
                    .filter(|(r, dead)| dead.is_none() && !r.is_empty())
                    .map(|(r, _)| r),
            );
        }
    }
    out
}

/// The message sent when a template fails at render time: never nothing.
fn fallback(env: &Envelope) -> String {
    let device = env
        .device
        .as_ref()
        .map(|d| d.name.as_str())
        .unwrap_or("unknown device");
    format!("{}: {device}", crate::render::title(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with a Telegram channel sending map pins and one rule for every alarm; `channel` is
    /// added to the channel's settings.
    fn config(channel: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "storage: {{ data_dir: \"{}\" }}\nchannels:\n  phone: {{ type: telegram, bot_token: \"123:abc\", \
             chat_id: \"42\", location: true{channel} }}\n\
             rules:\n  - {{ name: theft, match: {{ type: alarm }}, notify: [{{ channel: phone }}] }}\n",
            dir.path().display()
        );
        let path = dir.path().join("trackrelay.yaml");
        std::fs::write(&path, yaml).unwrap();
        let cfg = Config::load_with_env(Some(&path), &|_| None).unwrap();
        (dir, cfg)
    }

    fn alarm(latitude: f64, longitude: f64) -> Envelope {
        let body = serde_json::json!({
            "event": { "id": 1, "type": "alarm", "deviceId": 7, "attributes": { "alarm": "vibration" } },
            "device": { "id": 7, "name": "bike" },
            "position": { "id": 3, "deviceId": 7, "latitude": latitude, "longitude": longitude }
        });
        Envelope::from_json(body.to_string().as_bytes()).unwrap()
    }

    fn planned(cfg: &Config, env: &Envelope) -> Vec<Planned> {
        let matched = cfg.rules.evaluate(env, "traccar");
        let arrival = Arrival {
            source: "traccar".into(),
            received_at_ms: 1_768_392_000_000,
            ..Default::default()
        };
        plan(
            cfg,
            &matched,
            env,
            "{}",
            &arrival,
            &SilenceSet::default(),
            &IncidentExtras::default(),
        )
    }

    fn text(p: &Planned) -> &str {
        match &p.notification.content {
            Content::TelegramText { text, .. } => text,
            other => panic!("not a text: {other:?}"),
        }
    }

    #[test]
    fn a_position_that_is_no_place_gets_no_pin_and_no_map_link() {
        let (_dir, cfg) = config("");
        for (lat, lon, why) in [
            (
                91.5,
                11.4,
                "impossible coordinates (latitude 91.5, longitude 11.4",
            ),
            (-90.01, 11.4, "impossible coordinates (latitude -90.01"),
            (
                47.2,
                180.5,
                "impossible coordinates (latitude 47.2, longitude 180.5",
            ),
            (47.2, -200.0, "longitude -200"),
            (0.0, 0.0, "coordinates 0,0 (the tracker had no fix)"),
        ] {
            let p = planned(&cfg, &alarm(lat, lon));
            assert_eq!(p.len(), 2, "{lat},{lon}: a message and a pin");
            // The message goes, without a link to a place that is not one.
            assert_eq!(p[0].gates.suppress, None);
            assert!(!text(&p[0]).contains("openstreetmap"), "{}", text(&p[0]));
            assert!(
                text(&p[0]).contains("km/h"),
                "the rest of the position stays"
            );
            // The pin is recorded with the reason and never sent.
            assert!(matches!(
                p[1].notification.content,
                Content::TelegramLocation { .. }
            ));
            let reason = p[1].gates.suppress.as_deref().unwrap_or_default();
            assert!(
                reason.starts_with("no map pin: ") && reason.contains(why),
                "{lat},{lon}: {reason}"
            );
        }
        // The edges of the map are places.
        for (lat, lon) in [(47.262195, 11.413561), (-90.0, 180.0), (90.0, -180.0)] {
            let p = planned(&cfg, &alarm(lat, lon));
            assert_eq!(p.len(), 2);
            assert!(text(&p[0]).contains("openstreetmap"), "{}", text(&p[0]));
            assert_eq!(p[1].gates.suppress, None, "{lat},{lon}");
        }
    }
}
