//! The incident service: runs the incidents' timers (repeats, escalations, expiry, the notices owed to
//! the people notified) and takes acknowledgements and resolutions from every source (the link's page,
//! the admin API, the CLI; chat buttons later), all through compare-and-set writes to the store: two
//! instances, or a person and a timer, never both act on one revision of an incident.
//!
//! A step's message is rendered when it falls due, from the incident's latest event and its facts now
//! ("14 events since 02:41, last seen 300 m north"), with the policy of the configuration in force.

use std::sync::Arc;
use std::time::Duration;

use minijinja::context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channel_config::{Facts as MessageFacts, Message};
use crate::clock::{now_ms, rfc3339};
use crate::event::Envelope;
use crate::incident::{
    acknowledge as ack_state, escalated_targets, expired, facts, resolve as resolve_state, tick,
    AckSource, IncidentPolicy, IncidentState, Resolution, Status, Step,
};
use crate::metrics::Metrics;
use crate::notification::{idempotency_key, Notification, Origin};
use crate::pipeline::{buttons, links};
use crate::plan::{plan_step, Arrival, IncidentExtras};
use crate::rules::{Rule, RuleIncident, RuleSet, Target};
use crate::runtime::Shared;
use crate::settings::Config;
use crate::silence_cache::SilenceCache;
use crate::store::incidents::timer;
use crate::store::{
    DueIncident, IncidentRow, IncidentWrite, NewDelivery, NewToken, Notice, Store, StoreError,
    StoredEvent,
};

/// Incidents whose timers one run takes at most; the next run follows at once when it was full.
const BATCH: usize = 100;

/// The longest the timer sleeps: incidents another instance (or the CLI) changed are seen this late at
/// most.
const POLL: Duration = Duration::from_secs(2);

/// Compare-and-set attempts of one acknowledgement before giving up (each lost attempt means someone
/// else wrote the incident in between: an event joined, a timer ran).
const ATTEMPTS: usize = 5;

/// The timer's parts.
#[derive(Clone)]
pub struct IncidentService {
    /// Configuration and channels.
    pub shared: Arc<Shared>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Wakes the delivery worker when steps were enqueued.
    pub wake_worker: Arc<Notify>,
    /// Wakes the timer (an incident opened, was acknowledged or owes a notice).
    pub wake: Arc<Notify>,
    /// Silences in force (a step due while its device or rule is silenced is recorded suppressed).
    pub silences: Arc<SilenceCache>,
    /// Instruments.
    pub metrics: Arc<Metrics>,
    /// Rules this instance saw lose their incident in a reload: their incidents close at once.
    pub removed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// How long an incident whose rule this instance does not know waits before it is closed, counted
/// from its last event. Another instance may know the rule (a configuration rolled out one instance at
/// a time): it is left to it meanwhile, and looked at again every [`UNKNOWN_RULE_BACKOFF`].
pub const UNKNOWN_RULE_GRACE: Duration = Duration::from_secs(600);

/// See [`UNKNOWN_RULE_GRACE`].
pub const UNKNOWN_RULE_BACKOFF: Duration = Duration::from_secs(60);

/// Which incident an acknowledgement or resolution names.
#[derive(Debug, Clone)]
pub enum Which {
    /// By row id (API, CLI).
    Id(i64),
    /// By the hash of a link's token (the page).
    TokenHash(String),
}

/// What an acknowledgement or resolution found.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The incident as it is after the call.
    pub row: IncidentRow,
    /// The state.
    pub state: IncidentState,
    /// Whether this call changed it (false: it was acknowledged or resolved already).
    pub changed: bool,
}

/// Why an acknowledgement or resolution was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// No such incident (or token).
    #[error("no such incident")]
    NotFound,
    /// The incident is closed.
    #[error("the incident was resolved at {}", rfc3339(*.0))]
    Resolved(i64),
    /// Its stored state cannot be read by this version.
    #[error("the incident cannot be read: {0}")]
    Unreadable(String),
    /// Others kept writing it.
    #[error("the incident kept changing; try again")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IncidentService {
    /// Runs the timers until `shutdown`: at once, then whenever woken, at the next timer, or after
    /// [`POLL`] at the latest.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut applied = self.shared.get();
        loop {
            let now_in_force = self.shared.get();
            if !Arc::ptr_eq(&applied, &now_in_force) {
                self.reschedule(&applied.config.rules, &now_in_force.config.rules)
                    .await;
                applied = now_in_force;
            }
            let mut full = false;
            match self.run_due(now_ms()).await {
                // A full batch that moved on: more may be due. (One that moved nothing, rows another
                // version wrote, waits like the rest.)
                Ok(n) => full = n >= BATCH,
                Err(e) => tracing::error!(error = %e, "incident timers failed; trying again"),
            }
            if full {
                continue;
            }
            // Until the next timer; a timer already due was taken just now, so one still due is a
            // row this run could not move on (unreadable here, a write that failed): it waits a poll
            // rather than spinning.
            let sleep = match self.store.next_incident_at().await {
                Ok(Some(at)) if at > now_ms() => {
                    Duration::from_millis((at - now_ms()).min(POLL.as_millis() as i64) as u64)
                }
                _ => POLL,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// After a reload: the incidents of rules whose incident policy changed or that are gone run
    /// their timers now, under the new configuration (a changed repeat applies at once; a removed rule's
    /// incidents close).
    async fn reschedule(&self, before: &RuleSet, after: &RuleSet) {
        let changed: Vec<String> = before
            .incident_rules()
            .filter(|old| {
                after
                    .get(&old.name)
                    .and_then(|r| r.incident.as_ref())
                    .map(|i| &i.policy)
                    != old.incident.as_ref().map(|i| &i.policy)
            })
            .map(|r| r.name.clone())
            .collect();
        {
            let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            for name in &changed {
                match after.get(name).and_then(|r| r.incident.as_ref()) {
                    None => removed.insert(name.clone()),
                    Some(_) => removed.remove(name),
                };
            }
        }
        if changed.is_empty() {
            return;
        }
        match self.store.reschedule_incidents(changed, now_ms()).await {
            Ok(n) if n > 0 => tracing::info!(
                incidents = n,
                "configuration reloaded: incidents of changed rules rescheduled"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot reschedule the incidents of changed rules; they follow at their next timer")
            }
        }
    }

    /// Runs the timers due at `now`; returns how many incidents it moved on.
    pub async fn run_due(&self, now: i64) -> Result<usize, StoreError> {
        let due = self.store.due_incidents(now, BATCH).await?;
        let (mut moved, mut sent) = (0, false);
        for d in due {
            match self.advance(d, now).await {
                Ok(Some(s)) => {
                    moved += 1;
                    sent |= s;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "an incident's timer failed; it runs again"),
            }
        }
        if sent {
            self.wake_worker.notify_one();
        }
        Ok(moved)
    }

    /// Runs one incident's timer: the notice it owes, the steps due (or its expiry); writes it if no
    /// one else did meanwhile. Returns whether it enqueued deliveries, `None` when it wrote nothing.
    async fn advance(&self, d: DueIncident, now: i64) -> Result<Option<bool>, StoreError> {
        let state = match &d.row.state {
            Ok(s) => s.clone(),
            Err(e) => {
                tracing::debug!(incident = d.row.id, error = %e, "incident row unreadable by this version; left alone");
                return Ok(None);
            }
        };
        let rt = self.shared.get();
        let cfg = &rt.config;
        let mut w = IncidentWrite {
            id: d.row.id,
            revision: d.row.revision,
            state: state.clone(),
            next_at: None,
            notice: None,
            suppress_pending: None,
            deliveries: Vec::new(),
            tokens: Vec::new(),
            now_ms: now,
        };
        if let Some(n) = d.row.notice {
            w.deliveries.extend(self.notice(cfg, &d, &state, n, now));
        }
        let mut counted: Vec<&'static str> = Vec::new();
        match cfg
            .rules
            .get(&state.rule)
            .and_then(|r| r.incident.as_ref().map(|i| (r, i)))
        {
            None if !state.status.is_resolved() && !self.gone(&state, now) => {
                // A rule this instance does not know, not seen removed: perhaps one another instance
                // already runs. Left to it for now.
                w.next_at = Some(now + UNKNOWN_RULE_BACKOFF.as_millis() as i64);
            }
            None if !state.status.is_resolved() => {
                // Its rule is gone, or no longer has an incident: closed, and its people told.
                w.state = resolve_state(&state, Resolution::RuleRemoved, now).0;
                w.notice = Some(Notice::Resolved);
                w.next_at = Some(now);
                w.suppress_pending = Some("its rule no longer has an incident".into());
                counted.push("rule_removed");
            }
            None => {}
            Some((rule, inc)) => {
                let t = tick(&state, &inc.policy, now);
                if t.state.status.is_resolved() && !state.status.is_resolved() {
                    w.suppress_pending = Some(crate::store::incidents::RAN_OUT.into());
                    counted.push("resolve_after");
                }
                for step in &t.send {
                    let (planned, tokens) =
                        self.step(cfg, rule, inc, &d, (&state, &t.state), *step, now);
                    w.deliveries.extend(planned);
                    w.tokens.extend(tokens);
                    counted.push(match step {
                        Step::Repeat(_) => "repeat",
                        _ => "escalation",
                    });
                }
                w.next_at = timer(&t.state, &inc.policy, false, now);
                w.state = t.state;
            }
        }
        let any = !w.deliveries.is_empty();
        let notice = d.row.notice.is_some();
        if !self.store.write_incident(w).await? {
            tracing::debug!(
                incident = d.row.id,
                "incident changed meanwhile; its timer runs again"
            );
            return Ok(None);
        }
        self.count(&counted, notice);
        Ok(Some(any))
    }

    /// Counts a timer run's steps and resolutions once written (a write another writer won is done
    /// again from its state, and counted then).
    fn count(&self, counted: &[&'static str], notice: bool) {
        for &c in counted {
            match c {
                "repeat" | "escalation" => self.metrics.incident_step(c),
                how => self.metrics.incident_resolved(how),
            }
        }
        if notice {
            self.metrics.incident_step("notice");
        }
    }

    /// Whether the rule of an incident this instance has no rule for is gone: seen removed by a reload
    /// here, or unknown for [`UNKNOWN_RULE_GRACE`] after the incident's last event.
    fn gone(&self, state: &IncidentState, now: i64) -> bool {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        removed.contains(&state.rule)
            || now - state.last_event_at_ms >= UNKNOWN_RULE_GRACE.as_millis() as i64
    }

    /// The deliveries of one step of `rule`'s incident: a repeat goes to the rule's targets and to
    /// those of the escalation steps done (the circle only widens), an escalation to its step's.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        cfg: &Config,
        rule: &Rule,
        inc: &RuleIncident,
        d: &DueIncident,
        (before, state): (&IncidentState, &IncidentState),
        step: Step,
        now: i64,
    ) -> (Vec<NewDelivery>, Vec<NewToken>) {
        let own = rule.targets.len();
        let escalation = |i: usize| inc.escalation_targets.get(i).map(|t| (own + i, t));
        let targets: Vec<(usize, &Target)> = match step {
            Step::Repeat(_) => rule
                .targets
                .iter()
                .enumerate()
                // The circle as it was before this run: those an escalation reaches in the same run
                // hear it from the escalation, not twice.
                .chain(
                    escalated_targets(before, &inc.policy)
                        .into_iter()
                        .filter_map(escalation),
                )
                .collect(),
            Step::Escalate(i) => inc.policy.escalate[i]
                .notify
                .iter()
                .filter_map(|&j| escalation(j))
                .collect(),
            Step::Expire => Vec::new(),
        };
        let (env, raw, arrival) = step_event(d, now);
        let mut extras = IncidentExtras::default();
        let f = facts(state, now);
        let summary = f.summary(cfg.timezone, now);
        let (tag, header) = match step {
            Step::Repeat(n) => (
                format!("repeat-{n}"),
                format!(
                    "Reminder {n}{}: not acknowledged yet; {summary}",
                    inc.policy
                        .repeat
                        .map(|r| format!(" of {}", r.max))
                        .unwrap_or_default()
                ),
            ),
            Step::Escalate(i) => (
                format!("escalate-{}", i + 1),
                format!(
                    "Escalated (step {}): nobody has acknowledged; {summary}",
                    i + 1
                ),
            ),
            Step::Expire => ("expire".into(), String::new()),
        };
        extras.set_rule(
            &rule.name,
            context! { id => d.row.id, key => state.key.as_str(), step => tag.as_str(), facts => f, summary => summary.as_str() },
            Some(header),
        );
        let mut tokens = match &cfg.public_url {
            Some(base) => links(base, rule, targets.iter().copied(), &mut extras),
            None => Vec::new(),
        };
        let silences = self.silences.get();
        let mut planned = plan_step(
            cfg, rule, &targets, &env, &raw, &arrival, &silences, &extras, &tag,
        );
        let all: Vec<usize> = (0..planned.len()).collect();
        tokens.extend(buttons(cfg, &mut planned, &all));
        let deliveries = planned
            .iter()
            .map(|p| NewDelivery {
                incident_ref: Some(d.row.id),
                ..NewDelivery::from(p)
            })
            .collect();
        (deliveries, tokens)
    }

    /// The message owed to an incident's circle: who acknowledged it, or how it was resolved.
    fn notice(
        &self,
        cfg: &Config,
        d: &DueIncident,
        state: &IncidentState,
        notice: Notice,
        now: i64,
    ) -> Vec<NewDelivery> {
        let text = notice_text(d.row.id, state, cfg.timezone);
        let subject = match notice {
            Notice::Acknowledged => format!("Acknowledged: {}", state.key),
            Notice::Resolved => format!("Resolved: {}", state.key),
        };
        let (env, raw, arrival) = step_event(d, now);
        let ctx = cfg
            .renderer
            .event_context(&env, &arrival.source, arrival.txn.as_deref());
        let origin = notice_origin(d, state, &arrival, now);
        let mut out = Vec::new();
        for (channel, recipient) in &d.circle {
            let Some(ch) = cfg.channels.get(channel) else {
                continue;
            };
            // A channel's own body (a chat's JSON shape) carries the notice as its `message`.
            let body = ch.body.as_deref().and_then(|t| {
                let extra = context! { message => text.as_str(), rule => state.rule.as_str(), channel => channel.as_str() };
                cfg.renderer.render(t, &ctx, extra).ok()
            });
            let parts = ch.kind.content(Message {
                text: ch.kind.escape().apply(&text),
                subject: ch.kind.subject().map(|_| subject.clone()),
                html: Some(crate::render::escape_html(&text)),
                body,
                pin: None,
                live_period: None,
                digested: false,
                // Someone has it in hand, or it is over: told quietly.
                severity: crate::severity::Severity::Low,
                incident: false,
                ack_url: None,
                map_url: None,
                facts: MessageFacts {
                    rule: &state.rule,
                    channel,
                    source: &arrival.source,
                    txn: arrival.txn.as_deref(),
                    raw: &raw,
                },
            });
            for (part, content) in parts {
                let n = Notification {
                    key: idempotency_key(&[
                        "incident",
                        &d.row.id.to_string(),
                        notice.as_str(),
                        &d.row.revision.to_string(),
                        channel,
                        recipient,
                        part,
                    ]),
                    channel: channel.clone(),
                    recipient: recipient.clone(),
                    content,
                    origin: origin.clone(),
                };
                out.push(NewDelivery {
                    key: n.key.clone(),
                    channel: n.channel.clone(),
                    recipient: n.recipient.clone(),
                    rule: state.rule.clone(),
                    order_key: n.order_key(ch.kind.ordered()),
                    dead: None,
                    content: serde_json::to_string(&n).expect("a notification always serialises"),
                    gates: Default::default(),
                    incident_ref: None,
                });
            }
        }
        out
    }
}

/// A notice's text: "Incident 12 (theft-42) acknowledged by phone via link at 02:47."
pub fn notice_text(id: i64, state: &IncidentState, tz: chrono_tz::Tz) -> String {
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| crate::render::local_time(t, tz, Some("%H:%M")))
            .unwrap_or_default()
    };
    let what = format!("Incident {id} ({}, rule {})", state.key, state.rule);
    match &state.status {
        Status::Acknowledged(a) => format!(
            "{what} acknowledged by {} via {} at {}. No more reminders.",
            a.by,
            source_name(a.via),
            at(a.at_ms)
        ),
        Status::Resolved { how, at_ms, .. } => {
            let how = match how {
                Resolution::ResolveOn => "by the event its rule names (resolve_on)".to_string(),
                Resolution::ResolveAfter => "after a quiet period (resolve_after)".to_string(),
                Resolution::Manual { by, via } => format!("by {by} via {}", source_name(*via)),
                Resolution::RuleRemoved => "because its rule no longer has an incident".to_string(),
            };
            format!("{what} resolved {how} at {}.", at(*at_ms))
        }
        Status::Open => format!("{what} is open."),
    }
}

/// How an acknowledgement source is named in messages.
pub fn source_name(s: AckSource) -> &'static str {
    match s {
        AckSource::Link => "link",
        AckSource::Api => "API",
        AckSource::Cli => "command line",
        AckSource::Telegram => "Telegram",
        AckSource::Ntfy => "ntfy",
        AckSource::Pushover => "Pushover",
        AckSource::Console => "console",
    }
}

/// The event a step is rendered from: the incident's latest as stored (an empty one when retention
/// removed it, so that a step still goes out), its body, and its arrival now.
fn step_event(d: &DueIncident, now: i64) -> (Envelope, String, Arrival) {
    let stored = d.event.clone().unwrap_or(StoredEvent {
        id: 0,
        received_at_ms: now,
        source: String::new(),
        event_id: 0,
        device_id: 0,
        event_type: String::new(),
        txn: None,
        payload: String::new(),
    });
    let env = Envelope::from_json(stored.payload.as_bytes()).unwrap_or_else(|_| {
        serde_json::from_value(serde_json::json!({
            "event": { "id": stored.event_id, "deviceId": stored.device_id, "type": stored.event_type }
        }))
        .expect("a minimal event parses")
    });
    let arrival = Arrival {
        source: stored.source.clone(),
        via: None,
        txn: stored.txn.clone(),
        request_id: None,
        received_at_ms: now,
    };
    (env, stored.payload, arrival)
}

/// Acknowledges an incident (`by` who, through `via`) at `now`, or resolves it by hand when
/// `resolve` is set. Checks expiry first with the rule's policy in `rules` (an incident past its
/// `resolve_after` is closed, and the acknowledgement answered "resolved"). Idempotent: a second
/// acknowledgement changes nothing and says who came first. The people notified are told by the
/// timer (a notice).
pub async fn acknowledge(
    store: &dyn Store,
    rules: &RuleSet,
    which: &Which,
    by: &str,
    via: AckSource,
    resolve: bool,
    now: i64,
) -> Result<Answer, IncidentError> {
    for _ in 0..ATTEMPTS {
        let row = match which {
            Which::Id(id) => store.incident(*id).await?,
            Which::TokenHash(h) => store.incident_by_token(h).await?.map(|(r, _)| r),
        }
        .ok_or(IncidentError::NotFound)?;
        let state = row.state.clone().map_err(IncidentError::Unreadable)?;
        let policy: Option<&IncidentPolicy> = rules
            .get(&state.rule)
            .and_then(|r| r.incident.as_ref())
            .map(|i| &i.policy);
        if let Status::Resolved { at_ms, .. } = state.status {
            return Err(IncidentError::Resolved(at_ms));
        }
        if policy.is_some_and(|p| expired(&state, p, now)) {
            // Its timer closes it (as of its expiry); it cannot be acknowledged any more.
            let at = crate::incident::expires_at(&state, policy.expect("checked"));
            return Err(IncidentError::Resolved(at));
        }
        let (next, changed, why) = if resolve {
            let how = Resolution::Manual {
                by: by.to_string(),
                via,
            };
            let (s, changed) = resolve_state(&state, how, now);
            (s, changed, format!("incident resolved by {by}"))
        } else {
            let (s, changed) = ack_state(&state, by, via, now).map_err(|e| match e {
                crate::incident::AckError::Resolved { at_ms } => IncidentError::Resolved(at_ms),
            })?;
            (
                s,
                changed,
                format!("acknowledged by {by} via {}", source_name(via)),
            )
        };
        if !changed {
            return Ok(Answer {
                row,
                state,
                changed: false,
            });
        }
        let written = store
            .write_incident(IncidentWrite {
                id: row.id,
                revision: row.revision,
                state: next.clone(),
                next_at: Some(now),
                notice: Some(if resolve {
                    Notice::Resolved
                } else {
                    Notice::Acknowledged
                }),
                suppress_pending: Some(why),
                deliveries: Vec::new(),
                tokens: Vec::new(),
                now_ms: now,
            })
            .await?;
        if written {
            let row = store
                .incident(row.id)
                .await?
                .ok_or(IncidentError::NotFound)?;
            return Ok(Answer {
                row,
                state: next,
                changed: true,
            });
        }
    }
    Err(IncidentError::Busy)
}

/// Where a notice of incident `d` comes from: its latest event.
fn notice_origin(d: &DueIncident, state: &IncidentState, arrival: &Arrival, now: i64) -> Origin {
    Origin {
        source: arrival.source.clone(),
        event_id: d.event.as_ref().map_or(0, |e| e.event_id),
        event_type: d
            .event
            .as_ref()
            .map_or_else(String::new, |e| e.event_type.clone()),
        device_id: d.event.as_ref().map_or(0, |e| e.device_id),
        device_name: String::new(),
        rule: state.rule.clone(),
        txn: arrival.txn.clone(),
        request_id: None,
        received_at_ms: now,
    }
}
