//! The console's pages for acting ahead: silences (with a preview of what one would mute), the rules
//! with their matches of the last day, the rule tester (what `explain` says of an event, and its
//! message sent to one channel as a test) and reload.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use globset::Glob;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{form, view, Shared, Viewer};
use crate::clock::now_ms;
use crate::event::Envelope;
use crate::noise::silence::{Matchers, NewSilence};
use crate::notification::{Notification, Origin};

/// Length presets of the silence form.
const DURATIONS: &[(&str, &str)] = &[
    ("30m", "30 minutes"),
    ("1h", "1 hour"),
    ("2h", "2 hours"),
    ("8h", "8 hours"),
    ("1d", "1 day"),
    ("7d", "7 days"),
];

/// The silence form, as sent (every field text; checks give a page, not a bare 400).
#[derive(Deserialize, Default, Clone)]
pub struct SilenceForm {
    #[serde(default)]
    device: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    rule: String,
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    comment: String,
    /// After an action: what was done (see `pages::done_text`).
    done: Option<String>,
}

impl SilenceForm {
    /// The matchers, checked.
    fn matchers(&self) -> Result<Matchers, String> {
        let text = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        let m = Matchers {
            device: text(&self.device),
            group: text(&self.group)
                .map(|g| {
                    g.parse()
                        .map_err(|_| format!("group: `{g}` is not a number"))
                })
                .transpose()?,
            rule: text(&self.rule),
            event_type: text(&self.event_type),
            channel: text(&self.channel),
        };
        m.validate()?;
        Ok(m)
    }
}

/// Recent events the silence preview learns devices from (beside the live sources' directories).
const PREVIEW_EVENTS: usize = 200;

/// The devices the relay knows: those of the live sources' directories and those of recent events.
async fn known_devices(c: &super::Console) -> Vec<(i64, String, i64)> {
    let mut out: std::collections::BTreeMap<i64, (String, i64)> = c
        .admin
        .pipeline
        .directories
        .devices()
        .into_iter()
        .map(|d| (d.id, (d.name, d.group_id)))
        .collect();
    if let Ok(events) = c.admin.pipeline.store.recent_events(PREVIEW_EVENTS).await {
        for e in events {
            let device = Envelope::from_json(e.payload.as_bytes())
                .ok()
                .and_then(|env| env.device);
            let entry = out.entry(e.device_id).or_insert((String::new(), 0));
            if let Some(d) = device.filter(|_| entry.0.is_empty()) {
                *entry = (d.name, d.group_id);
            }
        }
    }
    out.into_iter().map(|(id, (n, g))| (id, n, g)).collect()
}

/// What matchers would mute among the known devices and the rules in force.
async fn preview_of(c: &super::Console, m: &Matchers) -> Value {
    let glob = |g: &Option<String>| {
        g.as_deref()
            .and_then(|g| Glob::new(g).ok())
            .map(|g| g.compile_matcher())
    };
    let (device_glob, rule_glob) = (glob(&m.device), glob(&m.rule));
    let device_id = m.device.as_deref().and_then(|d| d.parse::<i64>().ok());
    let devices: Vec<Value> = known_devices(c)
        .await
        .into_iter()
        .filter(|(id, name, group)| {
            let by_device = match (device_id, &device_glob) {
                (Some(want), _) => *id == want,
                (None, Some(g)) => g.is_match(name),
                (None, None) => true,
            };
            by_device && m.group.is_none_or(|g| g == *group)
        })
        .map(|(id, name, _)| json!({ "id": id, "name": name }))
        .collect();
    let rt = c.admin.pipeline.shared.get();
    let rules: Vec<&str> = rt
        .config
        .rules
        .rules()
        .iter()
        .map(|r| r.name.as_str())
        .filter(|r| rule_glob.as_ref().is_none_or(|g| g.is_match(r)))
        .collect();
    json!({
        "devices": devices, "rules": rules,
        "all_devices": m.device.is_none() && m.group.is_none(),
        "all_rules": m.rule.is_none(),
        "type": m.event_type, "channel": m.channel,
    })
}

/// Silences in force and recent ones, and the form to make one (`?device=…` fills it in).
pub async fn silences(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(f): Query<SilenceForm>,
) -> Response {
    let preview = match f.matchers() {
        Ok(m) => Some(preview_of(&c, &m).await),
        Err(_) => None,
    };
    silences_page(&c, &s, &f, preview, None).await
}

/// `POST /console/silences/preview`: the form's Preview button without JavaScript (a POST, so that
/// the form's CSRF token never lands in an address).
pub async fn preview_form(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, f): (_, SilenceForm) = match form(&c, &headers, &body, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (preview, error) = match f.matchers() {
        Ok(m) => (Some(preview_of(&c, &m).await), None),
        Err(e) => (None, Some(e)),
    };
    silences_page(&c, &s, &f, preview, error).await
}

/// The silences of the last 7 days, newest first, as the page lists them.
async fn recent_silences(c: &super::Console) -> Result<Vec<Value>, crate::store::StoreError> {
    let now = now_ms();
    let list = c.admin.pipeline.store.silences().await?;
    let tz = c.admin.pipeline.shared.get().config.timezone;
    Ok(list
        .iter()
        .rev()
        .filter(|x| x.ends_at_ms > now - 7 * 86_400_000)
        .map(|x| {
            let v = x.view(now);
            json!({ "id": x.id, "state": v.state, "matchers": x.matchers.describe(),
                    "error": v.error, "starts": view::time(x.starts_at_ms, tz),
                    "ends": view::time(x.ends_at_ms, tz), "author": x.author, "comment": x.comment,
                    "live": x.ends_at_ms > now })
        })
        .collect())
}

async fn silences_page(
    c: &super::Console,
    s: &super::Session,
    f: &SilenceForm,
    preview: Option<Value>,
    error: Option<String>,
) -> Response {
    let rows = match recent_silences(c).await {
        Ok(r) => r,
        Err(e) => return super::pages::store_failed(c, s, e),
    };
    let durations: Vec<Value> = DURATIONS
        .iter()
        .map(|(v, l)| json!({ "value": v, "label": l }))
        .collect();
    let mut r = c.page(
        "silences.html",
        Some(s),
        json!({
            "title": "Silences", "nav": "silences", "silences": rows, "durations": durations,
            "f": { "device": f.device, "group": f.group, "rule": f.rule, "type": f.event_type,
                   "channel": f.channel, "duration": if f.duration.is_empty() { "1h" } else { &f.duration },
                   "author": f.author, "comment": f.comment },
            "preview": preview, "error": error,
            "done": super::pages::done_text(f.done.as_deref()),
        }),
    );
    if error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r
}

/// `GET /console/silences/preview?…`: the preview alone, for the form's script.
pub async fn preview(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(f): Query<SilenceForm>,
) -> Response {
    let (preview, error) = match f.matchers() {
        Ok(m) => (Some(preview_of(&c, &m).await), None),
        Err(e) => (None, Some(e)),
    };
    c.page(
        "preview.html",
        Some(&s),
        json!({ "preview": preview, "error": error }),
    )
}

/// `POST /console/silences`: make a silence from the form.
pub async fn add_silence(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, f): (_, SilenceForm) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = now_ms();
    let checked = f.matchers().and_then(|m| {
        // One of the form's lengths: a silence is for a while, and the API and CLI take any.
        let d = DURATIONS
            .iter()
            .find(|(v, _)| *v == f.duration.trim())
            .and_then(|(v, _)| humantime::parse_duration(v).ok())
            .ok_or_else(|| format!("for: `{}` is not one of the lengths offered", f.duration))?;
        let author = f.author.trim();
        if author.is_empty() {
            return Err("author: say who makes the silence".to_string());
        }
        Ok(NewSilence {
            matchers: m,
            starts_at_ms: now,
            ends_at_ms: now + d.as_millis() as i64,
            author: author.chars().take(60).collect(),
            comment: f.comment.trim().chars().take(500).collect(),
        })
    });
    let new = match checked {
        Ok(n) => n,
        Err(e) => {
            let preview = match f.matchers() {
                Ok(m) => Some(preview_of(&c, &m).await),
                Err(_) => None,
            };
            return silences_page(&c, &s, &f, preview, Some(e)).await;
        }
    };
    let store = c.admin.pipeline.store.as_ref();
    match store.add_silence(new, now).await {
        Ok(x) => {
            tracing::info!(id = x.id, matchers = %x.matchers.describe(), author = %x.author, "console: silence created");
            refresh(&c).await;
            Redirect::to("/console/silences?done=silenced").into_response()
        }
        Err(e) => super::pages::store_failed(&c, &s, e),
    }
}

async fn refresh(c: &super::Console) {
    let p = &c.admin.pipeline;
    if let Err(e) = p.silences.refresh(p.store.as_ref()).await {
        tracing::warn!(error = %e, "cannot re-read the silences");
    }
}

/// `POST /console/silences/{id}/expire`.
pub async fn expire_silence(
    State(c): State<Shared>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (s, _): (_, serde::de::IgnoredAny) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match c.admin.pipeline.store.expire_silence(id, now_ms()).await {
        Ok(_) => {
            tracing::info!(id, "console: silence expired");
            refresh(&c).await;
            Redirect::to("/console/silences?done=expired").into_response()
        }
        Err(e) => c.message(
            Some(&s),
            StatusCode::NOT_FOUND,
            "Not expired",
            &e.to_string(),
        ),
    }
}

/// The rules in force, where each is written, and how many events each matched in the last 24 h.
pub async fn rules(State(c): State<Shared>, Viewer(s): Viewer) -> Response {
    let since = now_ms() - 86_400_000;
    let counts: std::collections::HashMap<String, u64> =
        match c.admin.pipeline.store.rule_counts(since).await {
            Ok(v) => v.into_iter().collect(),
            Err(e) => return super::pages::store_failed(&c, &s, e),
        };
    let rt = c.admin.pipeline.shared.get();
    let rules: Vec<Value> = rt
        .config
        .rules
        .rules()
        .iter()
        .map(|r| {
            let mut v = crate::api::rule_view(r);
            v["incident"] = json!(r.incident.is_some());
            v["matched"] = json!(counts.get(&r.name).copied().unwrap_or(0));
            v
        })
        .collect();
    c.page(
        "rules.html",
        Some(&s),
        json!({ "title": "Rules", "nav": "rules", "rules": rules,
                "config": rt.config.path.as_ref().map(|p| p.display().to_string()) }),
    )
}

/// The example events shipped with the relay: one of each kind.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "Alarm: vibration",
        include_str!("../../tests/payloads/alarm_vibration.json"),
    ),
    (
        "Alarm: SOS",
        include_str!("../../tests/payloads/alarm_sos.json"),
    ),
    (
        "Geofence exit",
        include_str!("../../tests/payloads/geofenceExit.json"),
    ),
    (
        "Geofence enter",
        include_str!("../../tests/payloads/geofenceEnter.json"),
    ),
    (
        "Device offline",
        include_str!("../../tests/payloads/deviceOffline.json"),
    ),
    (
        "Device moving",
        include_str!("../../tests/payloads/deviceMoving.json"),
    ),
    (
        "Overspeed",
        include_str!("../../tests/payloads/deviceOverspeed.json"),
    ),
    (
        "BikeTrax (PowUnity's documented example)",
        include_str!("../../tests/payloads/biketrax_doc_example.json"),
    ),
];

/// The tester's form.
#[derive(Deserialize, Default)]
pub struct TesterForm {
    #[serde(default)]
    event: String,
    /// A stored event's row id.
    #[serde(default)]
    stored: String,
    /// An example's index.
    #[serde(default)]
    example: String,
    /// The notification to send as a test (its index in the explanation).
    #[serde(default)]
    send: String,
}

/// `GET /console/tester?stored=ID|example=N`: the form, filled with that event.
pub async fn tester(
    State(c): State<Shared>,
    Viewer(s): Viewer,
    Query(f): Query<TesterForm>,
) -> Response {
    let event = match pick(&c, &f).await {
        Ok(e) => e,
        Err(e) => return tester_page(&c, &s, &f.event, None, Some(e), None, None).await,
    };
    tester_page(&c, &s, &event, None, None, None, None).await
}

/// The event the form names: pasted, a stored one, or an example.
async fn pick(c: &super::Console, f: &TesterForm) -> Result<String, String> {
    if let Ok(i) = f.example.trim().parse::<usize>() {
        return EXAMPLES
            .get(i)
            .map(|(_, e)| e.to_string())
            .ok_or_else(|| format!("no example {i}"));
    }
    if let Ok(id) = f.stored.trim().parse::<i64>() {
        return match c.admin.pipeline.store.stored_event(id).await {
            Ok(Some(e)) => Ok(e.payload),
            Ok(None) => Err(format!("no stored event {id} (it may have been pruned)")),
            Err(e) => Err(format!("the store did not answer: {e}")),
        };
    }
    Ok(f.event.clone())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn tester_page(
    c: &super::Console,
    s: &super::Session,
    event: &str,
    explanation: Option<Value>,
    error: Option<String>,
    sent: Option<Value>,
    backtest: Option<Value>,
) -> Response {
    let rt = c.admin.pipeline.shared.get();
    let tz = rt.config.timezone;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let recent: Vec<Value> = c
        .admin
        .pipeline
        .store
        .recent_events(20)
        .await
        .unwrap_or_default()
        .iter()
        // An event no rule matched is stored without its body (unless `keep_unmatched_payloads`).
        .filter(|e| !e.payload.is_empty())
        .map(|e| {
            json!({ "id": e.id, "label": format!("{} · {} · device {} · event {}",
                     view::time(e.received_at_ms, tz), e.event_type, e.device_id, e.event_id) })
        })
        .collect();
    let examples: Vec<Value> = EXAMPLES
        .iter()
        .enumerate()
        .map(|(i, (l, _))| json!({ "index": i, "label": l }))
        .collect();
    let bad = error.is_some();
    let mut r = c.page(
        "tester.html",
        Some(s),
        json!({ "title": "Rule tester", "nav": "tester", "event": event, "x": explanation,
                "error": error, "recent": recent, "examples": examples, "sent": sent,
                "bt": backtest, "bt_days": super::replay::MAX_DAYS,
                "bt_from": (today - chrono::Duration::days(7)).to_string(), "bt_to": today.to_string() }),
    );
    if bad {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r
}

/// What `explain` says of `raw`, for the page: rules, messages (as they will read) and incidents.
async fn explain(
    c: &super::Console,
    raw: &str,
) -> Result<(Value, crate::explain::Explanation), String> {
    let mut env = Envelope::from_json(raw.as_bytes()).map_err(|e| format!("not an event: {e}"))?;
    let p = &c.admin.pipeline;
    let rt = p.shared.get();
    // What intake adds to a webhook event: the device, group and geofence a live source knows.
    p.directories.fill(&rt.config.ingest.source, &mut env);
    let silences = p.silences.get();
    let x = crate::explain::explain(&rt.config, &env, raw, &silences, Some(p.store.as_ref())).await;
    let notifications: Vec<Value> = x
        .notifications
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({ "index": i, "rule": n.rule, "channel": n.channel, "recipient": n.recipient,
                    "decision": n.decision, "reason": n.reason, "send_at": n.send_at, "dead": n.dead,
                    "content": view::content(&n.content) })
        })
        .collect();
    let value = json!({
        "rules": x.rules, "notifications": notifications, "incidents": x.incidents,
        "state_known": x.state_known,
        "matched": x.rules.iter().filter(|r| r.verdict == "match").count(),
        "title": crate::render::title(&env),
    });
    Ok((value, x))
}

/// `POST /console/tester`: explain the event (changes nothing; viewers may run it too).
pub async fn run_tester(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, f): (_, TesterForm) = match form(&c, &headers, &body, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let raw = match pick(&c, &f).await {
        Ok(r) => r,
        Err(e) => return tester_page(&c, &s, &f.event, None, Some(e), None, None).await,
    };
    match explain(&c, &raw).await {
        Ok((v, _)) => tester_page(&c, &s, &raw, Some(v), None, None, None).await,
        Err(e) => tester_page(&c, &s, &raw, None, Some(e), None, None).await,
    }
}

/// `POST /console/tester/send`: one of the explained messages, sent now on its channel as a test
/// (a fresh idempotency key; nothing is stored).
pub async fn send_test(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, f): (_, TesterForm) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (v, x) = match explain(&c, &f.event).await {
        Ok(x) => x,
        Err(e) => return tester_page(&c, &s, &f.event, None, Some(e), None, None).await,
    };
    let Some(n) = f
        .send
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|i| x.notifications.get(i))
    else {
        return tester_page(
            &c,
            &s,
            &f.event,
            Some(v),
            Some("pick a message to send".into()),
            None,
            None,
        )
        .await;
    };
    let rt = c.admin.pipeline.shared.get();
    let Some(channel) = rt.channels.get(&n.channel) else {
        return tester_page(
            &c,
            &s,
            &f.event,
            Some(v),
            Some(format!("no channel '{}'", n.channel)),
            None,
            None,
        )
        .await;
    };
    let test = Notification {
        key: format!("tr-test-{:016x}", rand::random::<u64>()),
        channel: n.channel.clone(),
        recipient: n.recipient.clone(),
        content: n.content.clone(),
        origin: Origin {
            source: "test".into(),
            rule: n.rule.clone(),
            ..Default::default()
        },
    };
    let sent = match channel.send(&test).await {
        Ok(_) => json!({ "ok": true, "channel": n.channel, "recipient": n.recipient }),
        Err(e) => json!({ "ok": false, "channel": n.channel, "error": e.to_string() }),
    };
    tracing::info!(channel = %n.channel, rule = %n.rule, ok = sent["ok"].as_bool(), "console: test message sent");
    tester_page(&c, &s, &f.event, Some(v), None, Some(sent), None).await
}

/// `POST /console/reload`: reload the configuration now.
pub async fn reload(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, _): (_, serde::de::IgnoredAny) = match form(&c, &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match c.admin.reloader.reload("console").await {
        Ok(_) => Redirect::to("/console/?done=reloaded").into_response(),
        Err(e) => c.message(
            Some(&s),
            StatusCode::UNPROCESSABLE_ENTITY,
            "The configuration was not reloaded",
            &format!("The previous configuration keeps running. {e}"),
        ),
    }
}
