//! Raw configuration -> [`Config`]: reads rule files, checks every reference, compiles matchers and
//! templates. Pure apart from reading files; collects every error instead of stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

use super::raw::RawConfig;
use super::*;
use crate::channel::ChannelSection;
use crate::channel_config::ChannelConfig;
use crate::config_raw::RawIncident;
use crate::config_raw::{
    RawCooldown, RawDefaults, RawLocation, RawNotify, RawRule, RawRuleFile, RawRuleSource,
    RawSchedule,
};
use crate::incident::IncidentPolicy;
use crate::noise::schedule::{Schedule, WhenMuted, Window};
use crate::noise::{Cooldown, Group, RuleNoise};
use crate::render::{Escape, RendererBuilder};
use crate::retry::RetryPolicy;
use crate::rules::{Matcher, Origin, Rule, RuleIncident, RuleSet, Target};
use crate::secret::Secret;
use crate::settings::*;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Compiles the main file (and the rule files it names).
pub(super) fn compile(file: SourceFile, dir: &Path, env: Env<'_>) -> Result<Config, ConfigErrors> {
    let mut errors: Vec<ConfigError> = Vec::new();
    let text = interpolate(&file, env, dir).map_err(ConfigErrors)?;
    let raw: RawConfig =
        serde_yaml::from_str(&text).map_err(|e| ConfigErrors(vec![yaml_error(&file, &e)]))?;

    let listen = compile_listen(raw.listen.as_deref(), &file, &mut errors);
    let timezone = compile_timezone(raw.timezone.as_deref(), &file, &mut errors);
    let ingest = compile_ingest(&raw.ingest, &file, &mut errors);
    let default_retry = RetryPolicy::default().with(&raw.delivery.retry);
    let mut channels = compile_channels(raw.channels, &default_retry, &file, &mut errors);
    let (units, rule_files) = rule_units(raw.rules, &file, dir, env, &mut errors);
    let mut builder = RendererBuilder::new();
    let rules = compile_rules(
        units,
        &channels,
        &mut builder,
        &raw.defaults,
        timezone,
        &mut errors,
    );
    compile_channel_templates(&mut channels, &mut builder, &file, &mut errors);
    let traccar = compile_traccar(raw.traccar, &file, &ingest.source, &mut errors);
    let storage = compile_storage(raw.storage, &file, dir, &mut errors);
    let public_url = compile_public_url(raw.public_url.as_deref(), &file, &mut errors);
    check_webhook_bots(&channels, public_url.is_some(), &file, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        path: None,
        listen,
        timezone,
        ingest,
        admin_token: raw.admin.token.filter(|t| !t.is_empty()).map(Secret),
        viewer_token: raw.admin.viewer_token.filter(|t| !t.is_empty()).map(Secret),
        storage,
        delivery: Delivery {
            workers: raw.delivery.workers.unwrap_or(DEFAULT_WORKERS).max(1),
            shutdown_grace: raw
                .delivery
                .shutdown_grace
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        },
        channels,
        rules: RuleSet::new(rules),
        renderer: builder.build(timezone),
        rule_files,
        traccar,
        public_url,
    })
}

/// Telegram posts a webhook bot's updates to `<public_url>/telegram/<bot id>`: such a bot needs one.
fn check_webhook_bots(
    channels: &BTreeMap<String, ChannelConfig>,
    public_url: bool,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) {
    use crate::channel::telegram::{TelegramSettings, Updates};
    for (name, c) in channels {
        let kind: &dyn std::any::Any = c.kind.as_ref();
        let webhook = kind
            .downcast_ref::<TelegramSettings>()
            .and_then(|s| s.two_way)
            .is_some_and(|t| t.updates == Updates::Webhook);
        if webhook && !public_url {
            errors.push(
                file.error(
                    file.find_line(name, None, 1),
                    &format!("channel '{name}'"),
                    "two_way.updates: webhook needs `public_url` (Telegram posts the updates to \
                 <public_url>/telegram/<bot id>); or use `updates: poll`"
                        .to_string(),
                ),
            );
        }
    }
}

/// `public_url:`: an http(s) address without query or fragment, kept without its trailing slash.
fn compile_public_url(
    raw: Option<&str>,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let text = raw?.trim();
    if text.is_empty() {
        return None;
    }
    let problem = match reqwest::Url::parse(text) {
        Err(e) => Some(e.to_string()),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some("the address starts with http:// or https://".to_string())
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Some("no query or fragment: links are added to its path".to_string())
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            Some("no user or password: the address is shown in every message".to_string())
        }
        Ok(_) => None,
    };
    if let Some(p) = problem {
        // An address with a password is not repeated: the error would show it.
        let shown = if text.contains('@') {
            "public_url"
        } else {
            text
        };
        errors.push(file.error(
            file.find_line("public_url", None, 1),
            "",
            format!("public_url: `{shown}`: {p}"),
        ));
        return None;
    }
    Some(text.trim_end_matches('/').to_string())
}

/// `listen:`, the address the HTTP server binds.
fn compile_listen(
    raw: Option<&str>,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> SocketAddr {
    let text = raw.unwrap_or(DEFAULT_LISTEN);
    text.parse::<SocketAddr>().unwrap_or_else(|e| {
        errors.push(file.error(
            file.find_line("listen", None, 1),
            "",
            format!("listen: `{text}`: {e}"),
        ));
        DEFAULT_LISTEN
            .parse()
            .expect("default listen address parses")
    })
}

/// `timezone:`, the zone templates show times in.
fn compile_timezone(raw: Option<&str>, file: &SourceFile, errors: &mut Vec<ConfigError>) -> Tz {
    let text = raw.unwrap_or("UTC");
    text.parse::<Tz>().unwrap_or_else(|_| {
        let line = file.find_line("timezone", None, 1);
        errors.push(file.error(
            line,
            "",
            format!("timezone: `{text}` is not an IANA time zone (e.g. Europe/Vienna)"),
        ));
        Tz::UTC
    })
}

/// `ingest:`, the webhook intake.
fn compile_ingest(
    raw: &crate::config_raw::RawIngest,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> Ingest {
    let ingest = Ingest {
        path: raw
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_INGEST_PATH.into()),
        positions_path: raw
            .positions_path
            .clone()
            .unwrap_or_else(|| DEFAULT_POSITIONS_PATH.into()),
        authorization: raw
            .authorization
            .clone()
            .filter(|s| !s.is_empty())
            .map(Secret),
        max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
        source: raw.source.clone().unwrap_or_else(|| DEFAULT_SOURCE.into()),
        queue: raw.queue.unwrap_or(DEFAULT_INGEST_QUEUE).max(1),
    };
    if !ingest.path.starts_with('/') {
        errors.push(file.error(
            file.find_line("path", None, 1),
            "ingest",
            "path must start with `/`",
        ));
    }
    if !ingest.positions_path.starts_with('/') {
        errors.push(file.error(
            file.find_line("positions_path", None, 1),
            "ingest",
            "positions_path must start with `/`",
        ));
    } else if ingest.positions_path == ingest.path {
        errors.push(file.error(
            file.find_line("positions_path", None, 1),
            "ingest",
            format!(
                "positions_path must differ from path (both are `{}`): events and positions are different bodies",
                ingest.path
            ),
        ));
    }
    ingest
}

/// `channels:`, each checked by its kind.
fn compile_channels(
    raws: BTreeMap<String, serde_yaml::Value>,
    default_retry: &RetryPolicy,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, ChannelConfig> {
    let mut channels = BTreeMap::new();
    for (name, section) in raws {
        let line = file.find_line(&name, None, 1);
        let ctx = format!("channel '{name}'");
        let rc = match serde_yaml::from_value::<ChannelSection>(section) {
            Ok(ChannelSection(rc)) => rc,
            Err(e) => {
                errors.push(file.error(line, &ctx, e.to_string()));
                continue;
            }
        };
        match rc.compile(&name, default_retry) {
            Ok(c) => {
                channels.insert(name, c);
            }
            Err(es) => {
                let ctx = format!("channel '{name}'");
                errors.extend(es.into_iter().map(|m| file.error(line, &ctx, m)));
            }
        }
    }
    channels
}

/// The rules, by the file they are written in: inline ones from this file, and those of the files and
/// folders it names, in order; and the rule files read.
fn rule_units(
    sources: Vec<RawRuleSource>,
    file: &SourceFile,
    dir: &Path,
    env: Env<'_>,
    errors: &mut Vec<ConfigError>,
) -> (Vec<(SourceFile, Vec<RawRule>)>, Vec<PathBuf>) {
    let mut units: Vec<(SourceFile, Vec<RawRule>)> = Vec::new();
    let mut rule_files = Vec::new();
    let mut inline = Vec::new();
    for src in sources {
        match src {
            RawRuleSource::Inline(r) => inline.push(*r),
            RawRuleSource::Path(p) => {
                if !inline.is_empty() {
                    units.push((file.clone(), std::mem::take(&mut inline)));
                }
                for path in expand(&relative_to(dir, PathBuf::from(&p))).unwrap_or_else(|e| {
                    errors.push(file.error(
                        file.find_line("rules", None, 1),
                        "",
                        format!("rules: `{p}`: {e}"),
                    ));
                    vec![]
                }) {
                    match read_rule_file(&path, dir, env) {
                        Ok(unit) => units.push(unit),
                        Err(e) => errors.extend(e),
                    }
                    rule_files.push(path);
                }
            }
        }
    }
    if !inline.is_empty() {
        units.push((file.clone(), inline));
    }
    (units, rule_files)
}

/// Every rule, its templates added to `builder`; the enabled ones are returned.
fn compile_rules(
    units: Vec<(SourceFile, Vec<RawRule>)>,
    channels: &BTreeMap<String, ChannelConfig>,
    builder: &mut RendererBuilder,
    defaults: &RawDefaults,
    timezone: Tz,
    errors: &mut Vec<ConfigError>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    for (src, raws) in units {
        let mut from = 1;
        for raw_rule in raws {
            let line = src.find_line("name", Some(&raw_rule.name), from);
            from = line.unwrap_or(from);
            let ctx = format!("rule '{}'", raw_rule.name);
            if !seen.insert(raw_rule.name.clone()) {
                errors.push(src.error(line, &ctx, "another rule has the same name"));
                continue;
            }
            let origin = Origin {
                file: src.name.clone(),
                line,
            };
            let enabled = raw_rule.enabled != Some(false);
            match compile_rule(raw_rule, origin, channels, builder, defaults, timezone) {
                // A disabled rule is checked like any other, but never evaluated.
                Ok(r) if enabled => rules.push(r),
                Ok(_) => {}
                Err(es) => errors.extend(es.into_iter().map(|m| src.error(line, &ctx, m))),
            }
        }
    }
    rules
}

/// The templates a channel's kind has of its own (a webhook's body), compiled as `channel/{name}/body`.
fn compile_channel_templates(
    channels: &mut BTreeMap<String, ChannelConfig>,
    builder: &mut RendererBuilder,
    file: &SourceFile,
    errors: &mut Vec<ConfigError>,
) {
    for (name, c) in channels.iter_mut() {
        let Some((body, escape)) = c.kind.body_template() else {
            continue;
        };
        match builder.add(&format!("channel/{name}/body"), body, escape) {
            Ok(t) => c.body = Some(t),
            Err(e) => errors.push(file.error(
                file.find_line(name, None, 1),
                &format!("channel '{name}'"),
                format!("body: {e}"),
            )),
        }
    }
}

/// The live Traccar sources. With one source the dedup namespace defaults to the webhook's, so the
/// socket and the webhook of the same server share event ids; with several, each defaults to its name.
fn compile_traccar(
    raws: Vec<crate::traccar_config::RawTraccarSource>,
    file: &SourceFile,
    webhook_source: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<crate::traccar_config::TraccarSource> {
    let single = raws.len() == 1;
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for raw in raws {
        let line = file.find_line("name", Some(&raw.name), 1);
        let ctx = format!("traccar source '{}'", raw.name);
        if !names.insert(raw.name.clone()) {
            errors.push(file.error(line, &ctx, "another traccar source has the same name"));
            continue;
        }
        let default_dedup = if single {
            webhook_source
        } else {
            raw.name.as_str()
        }
        .to_string();
        match crate::traccar_config::TraccarSource::compile(raw, &default_dedup) {
            Ok(s) => out.push(s),
            Err(es) => errors.extend(es.into_iter().map(|m| file.error(line, &ctx, m))),
        }
    }
    out
}

/// A path to rule files: a file, or a folder's `*.yaml`/`*.yml` in name order.
fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_rule_file(
    path: &Path,
    dir: &Path,
    env: Env<'_>,
) -> Result<(SourceFile, Vec<RawRule>), Vec<ConfigError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: name.clone(),
            line: None,
            context: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    let file = SourceFile { name, text };
    let text = interpolate(&file, env, dir)?;
    let raw: RawRuleFile = serde_yaml::from_str(&text).map_err(|e| vec![yaml_error(&file, &e)])?;
    Ok((file, raw.rules))
}

fn compile_rule(
    raw: RawRule,
    origin: Origin,
    channels: &BTreeMap<String, ChannelConfig>,
    builder: &mut RendererBuilder,
    defaults: &RawDefaults,
    timezone: Tz,
) -> Result<Rule, Vec<String>> {
    let mut errors = Vec::new();
    let noise = compile_noise(&raw, defaults, timezone, builder, &mut errors);
    if raw.name.trim().is_empty() {
        errors.push("name is empty".to_string());
    }
    let matcher = Matcher::compile(raw.matcher)
        .map_err(|e| errors.push(format!("match: {e}")))
        .ok();
    if raw.notify.is_empty() {
        errors.push("notify: list at least one channel".into());
    }
    let mut targets = Vec::new();
    let notify_len = raw.notify.len();
    for (i, n) in raw.notify.into_iter().enumerate() {
        match compile_target(&raw.name, i, n, channels, builder) {
            Ok(t) => targets.push(t),
            Err(es) => errors.extend(es.into_iter().map(|e| format!("notify[{i}]: {e}"))),
        }
    }
    let incident = raw.incident.map(|inc| {
        if raw.group.is_some() {
            errors.push(
                "incident: a rule with an incident cannot also group into digests (`group`): each \
                 repeat and escalation is a message of its own"
                    .into(),
            );
        }
        compile_incident(&raw.name, inc, notify_len, channels, builder, &mut errors)
    });
    if incident.is_none() {
        for (i, t) in targets.iter().enumerate().filter(|(_, t)| t.live) {
            errors.push(format!(
                "notify[{i}]: location: live follows the device while an incident is open, and this rule has no `incident:` (use `location: true` for a pin); channel '{}'",
                t.channel
            ));
        }
    }
    match matcher {
        Some(matcher) if errors.is_empty() => Ok(Rule {
            name: raw.name,
            description: raw.description,
            matcher,
            stop: raw.stop,
            targets,
            severity: raw.severity.unwrap_or_default(),
            origin,
            noise,
            incident: incident.flatten(),
        }),
        _ => Err(errors),
    }
}

/// A rule's `incident:` section: its policy (bounds checked by the incident core), key template,
/// `resolve_on` conditions and escalation targets (compiled like `notify` entries, numbered after
/// them: `notify_len` is the rule's own count). Problems are pushed as `incident.…`.
fn compile_incident(
    rule: &str,
    raw: RawIncident,
    notify_len: usize,
    channels: &BTreeMap<String, ChannelConfig>,
    builder: &mut RendererBuilder,
    errors: &mut Vec<String>,
) -> Option<RuleIncident> {
    let before = errors.len();
    let policy = IncidentPolicy::from_raw(&raw)
        .map_err(|es| errors.extend(es.into_iter().map(|e| format!("incident.{e}"))))
        .ok();
    let key = raw
        .key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .and_then(|k| {
            Templates {
                builder: &mut *builder,
                base: format!("rule/{rule}/incident"),
            }
            .add("key", k, Escape::Text, errors)
            .or_else(|| {
                if let Some(e) = errors.last_mut() {
                    *e = format!("incident.{e}");
                }
                None
            })
        });
    let resolve_on = raw.resolve_on.and_then(|m| {
        Matcher::compile(m)
            .map_err(|e| errors.push(format!("incident.resolve_on: {e}")))
            .ok()
    });
    let mut escalation_targets = Vec::new();
    let mut n = notify_len;
    for (i, step) in raw.escalate.unwrap_or_default().into_iter().enumerate() {
        for (j, target) in step.notify.into_iter().enumerate() {
            match compile_target(rule, n, target, channels, builder) {
                Ok(t) => escalation_targets.push(t),
                Err(es) => errors.extend(
                    es.into_iter()
                        .map(|e| format!("incident.escalate[{i}].notify[{j}]: {e}")),
                ),
            }
            n += 1;
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(RuleIncident {
        policy: policy?,
        key,
        resolve_on,
        escalation_targets,
    })
}

/// A rule's noise settings, the config's `defaults:` filling what the rule leaves out. A zero duration
/// switches a default off for one rule.
fn compile_noise(
    raw: &RawRule,
    defaults: &RawDefaults,
    timezone: Tz,
    builder: &mut RendererBuilder,
    errors: &mut Vec<String>,
) -> RuleNoise {
    let mut t = Templates {
        builder,
        base: format!("rule/{}", raw.name),
    };
    let mut add =
        |what: &str, src: &str, errors: &mut Vec<String>| t.add(what, src, Escape::Text, errors);
    let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    let cooldown = match raw.cooldown.as_ref().or(defaults.cooldown.as_ref()) {
        None => None,
        Some(RawCooldown::Period(p)) => nonzero(Some(*p)).map(|period| Cooldown {
            period,
            key: None,
            summary: false,
        }),
        Some(RawCooldown::Full(f)) => nonzero(Some(f.period)).map(|period| Cooldown {
            period,
            key: f
                .key
                .as_deref()
                .and_then(|k| add("cooldown.key", k, errors)),
            summary: f.summary,
        }),
    };
    let group = raw.group.as_ref().map(|g| Group {
        by: g.by.as_deref().and_then(|b| add("group.by", b, errors)),
        wait: g.wait.unwrap_or(Duration::from_secs(30)),
        interval: g.interval.unwrap_or(Duration::from_secs(300)),
        title: g
            .title
            .as_deref()
            .and_then(|t| add("group.title", t, errors)),
    });
    let schedule = raw
        .schedule
        .as_ref()
        .or(defaults.schedule.as_ref())
        .and_then(|s| {
            compile_schedule(s, timezone)
                .map_err(|e| errors.extend(e.into_iter().map(|e| format!("schedule: {e}"))))
                .ok()
        });
    RuleNoise {
        cooldown,
        dedup: nonzero(raw.dedup.or(defaults.dedup)),
        debounce: nonzero(raw.debounce.or(defaults.debounce)),
        group,
        schedule,
    }
}

fn compile_schedule(s: &RawSchedule, default_tz: Tz) -> Result<Schedule, Vec<String>> {
    let mut errors = Vec::new();
    let timezone = match &s.timezone {
        None => default_tz,
        Some(t) => t.parse::<Tz>().unwrap_or_else(|_| {
            errors.push(format!(
                "timezone: `{t}` is not an IANA time zone (e.g. Europe/Vienna)"
            ));
            default_tz
        }),
    };
    let mut windows =
        |list: &Option<crate::config_raw::OneOrMany<String>>, what: &str| -> Vec<Window> {
            list.clone()
                .map(|l| l.into_vec())
                .unwrap_or_default()
                .iter()
                .filter_map(|w| {
                    Window::parse(w)
                        .map_err(|e| errors.push(format!("{what}: {e}")))
                        .ok()
                })
                .collect()
        };
    let active = windows(&s.active, "active");
    let quiet = windows(&s.quiet, "quiet");
    let when_muted = match s.when_muted.as_deref() {
        None | Some("drop") => WhenMuted::Drop,
        Some("defer") => WhenMuted::Defer,
        Some(other) => {
            errors.push(format!(
                "when_muted: `{other}` is neither `drop` nor `defer`"
            ));
            WhenMuted::Drop
        }
    };
    if s.active.is_none() && s.quiet.is_none() {
        errors.push("give `active` or `quiet` windows".into());
    }
    if errors.is_empty() {
        Ok(Schedule {
            timezone,
            active,
            quiet,
            when_muted,
        })
    } else {
        Err(errors)
    }
}

/// One entry of a rule's `notify:`, checked against its channel's kind.
fn compile_target(
    rule: &str,
    i: usize,
    n: RawNotify,
    channels: &BTreeMap<String, ChannelConfig>,
    builder: &mut RendererBuilder,
) -> Result<Target, Vec<String>> {
    let ch = channel_of(&n.channel, channels)?;
    let mut errors = Vec::new();
    let mut t = Templates {
        builder,
        base: format!("rule/{rule}/{i}"),
    };
    let body_src = n.template.as_deref().unwrap_or(&ch.template);
    let body = t.add("template", body_src, ch.kind.escape(), &mut errors);
    let body_html = if ch.kind.html_part() {
        t.add("template", body_src, Escape::Html, &mut errors)
    } else {
        None
    };
    let subject = target_subject(&n, ch, &mut t, &mut errors);
    let to = target_recipients(&n, ch, &mut t, &mut errors);
    let (location, live) = target_location(&n, ch, &mut errors);
    match body {
        Some(body) if errors.is_empty() => Ok(Target {
            channel: n.channel,
            to,
            subject,
            body,
            body_html,
            location,
            live,
        }),
        _ => Err(errors),
    }
}

/// The channel a target names.
fn channel_of<'a>(
    name: &str,
    channels: &'a BTreeMap<String, ChannelConfig>,
) -> Result<&'a ChannelConfig, Vec<String>> {
    channels.get(name).ok_or_else(|| {
        let known: Vec<&str> = channels.keys().map(String::as_str).collect();
        vec![format!(
            "unknown channel '{name}' (configured: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )]
    })
}

/// A target's subject template: its own or its channel's, for kinds with a subject.
fn target_subject(
    n: &RawNotify,
    ch: &ChannelConfig,
    t: &mut Templates<'_>,
    errors: &mut Vec<String>,
) -> Option<String> {
    match (n.subject.as_deref(), ch.kind.subject()) {
        (s, Some(default)) => t.add("subject", s.unwrap_or(default), Escape::Text, errors),
        (Some(_), None) => {
            errors.push(format!(
                "subject: {} channels have no subject or title ('{}')",
                ch.kind.name(),
                n.channel
            ));
            None
        }
        (None, None) => None,
    }
}

/// A target's recipient templates (`to:`); none means the channel's defaults.
fn target_recipients(
    n: &RawNotify,
    ch: &ChannelConfig,
    t: &mut Templates<'_>,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut to = Vec::new();
    match n.to.clone().map(|t| t.into_vec()) {
        Some(_) if !ch.takes_recipients() => {
            errors.push(format!(
                "to: a {} channel has no recipients to choose",
                ch.kind.name()
            ));
        }
        Some(list) => {
            for (j, src) in list.iter().enumerate() {
                if let Some(name) = t.add(&format!("to{j}"), src, Escape::Text, errors) {
                    to.push(name);
                }
            }
        }
        None if ch.takes_recipients() && ch.default_to.is_empty() => {
            errors.push(format!(
                "no recipient: set `to` here or a default (`to`/`chat_id`) on channel '{}'",
                n.channel
            ));
        }
        None => {}
    }
    to
}

/// Whether a target sends the position as a map pin too (its own choice or its channel's, for kinds
/// that can), and whether the pin is live.
fn target_location(n: &RawNotify, ch: &ChannelConfig, errors: &mut Vec<String>) -> (bool, bool) {
    match (n.location, ch.kind.location()) {
        (Some(RawLocation::Live(_)), Some(_)) if !ch.kind.buttons() => {
            errors.push(
                "location: live needs the channel to be two-way (`two_way: true`): the relay moves \
                 a live pin only in the chats it follows up"
                    .into(),
            );
            (true, false)
        }
        (Some(RawLocation::Live(_)), Some(_)) => (true, true),
        (Some(RawLocation::Pin(l)), Some(_)) => (l, false),
        (None, Some(default)) => (default, false),
        (Some(_), None) => {
            errors.push("location: only telegram channels send locations".into());
            (false, false)
        }
        (None, None) => (false, false),
    }
}

/// Adds templates under one name prefix (`rule/{name}`, `rule/{name}/{target}`); one that does not
/// compile is an error `{what}: {reason}`.
struct Templates<'a> {
    builder: &'a mut RendererBuilder,
    base: String,
}

impl Templates<'_> {
    /// The template's name, or `None` with the error pushed.
    fn add(
        &mut self,
        what: &str,
        src: &str,
        escape: Escape,
        errors: &mut Vec<String>,
    ) -> Option<String> {
        self.builder
            .add(&format!("{}/{what}", self.base), src, escape)
            .map_err(|e| errors.push(format!("{what}: {e}")))
            .ok()
    }
}

/// `p` relative to the config file's folder (left alone when absolute or when the folder is `.`).
fn relative_to(dir: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() || dir == Path::new(".") {
        p
    } else {
        dir.join(p)
    }
}

/// `storage:`: the SQLite folder, or a PostgreSQL URL (checked here; its password never appears in an
/// error), and the settings of either.
fn compile_storage(
    raw: crate::config_raw::RawStorage,
    file: &SourceFile,
    dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Storage {
    let line = |key: &str| {
        let from = file.find_line("storage", None, 1).unwrap_or(1);
        file.find_line(key, None, from)
            .or_else(|| file.find_line("storage", None, 1))
    };
    let postgres = raw.url.map(|url| {
        if let Err(e) = crate::store::postgres::parse_url(&url) {
            errors.push(file.error(line("url"), "storage", format!("url: {e}")));
        }
        if raw.data_dir.is_some() {
            errors.push(file.error(
                line("data_dir"),
                "storage",
                "set either data_dir (SQLite) or url (PostgreSQL), not both",
            ));
        }
        Postgres {
            redacted: crate::store::postgres::redact_url(&url),
            url: Secret(url),
            pool: raw.pool.unwrap_or(DEFAULT_PG_POOL).max(1),
            statement_timeout: raw
                .statement_timeout
                .unwrap_or(DEFAULT_PG_STATEMENT_TIMEOUT),
            connect_timeout: raw.connect_timeout.unwrap_or(DEFAULT_PG_CONNECT_TIMEOUT),
        }
    });
    if postgres.is_none() {
        for (key, set) in [
            ("pool", raw.pool.is_some()),
            ("statement_timeout", raw.statement_timeout.is_some()),
            ("connect_timeout", raw.connect_timeout.is_some()),
        ] {
            if set {
                errors.push(file.error(
                    line(key),
                    "storage",
                    format!("{key} is a PostgreSQL setting: it needs url"),
                ));
            }
        }
    }
    let lease = raw.lease.unwrap_or(if postgres.is_some() {
        DEFAULT_PG_LEASE
    } else {
        DEFAULT_LEASE
    });
    if lease < std::time::Duration::from_secs(1) {
        errors.push(file.error(line("lease"), "storage", "lease must be at least 1s"));
    }
    Storage {
        data_dir: raw
            .data_dir
            .map(|d| if d.is_absolute() { d } else { dir.join(d) })
            .unwrap_or_else(|| dir.join("data")),
        retention: raw.retention.unwrap_or(DEFAULT_RETENTION),
        dead_retention: raw.dead_retention.unwrap_or(DEFAULT_DEAD_RETENTION),
        postgres,
        lease,
        keep_unmatched_payloads: raw.keep_unmatched_payloads.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Envelope;

    fn load(yaml: &str) -> Result<Config, ConfigErrors> {
        let file = SourceFile {
            name: "t.yaml".into(),
            text: yaml.into(),
        };
        compile(file, Path::new("."), &|_| None)
    }

    #[test]
    fn two_way_telegram_and_live_pins_compile_or_fail_with_file_line_and_reason() {
        let tg = |two_way: &str| {
            format!(
                "channels:\n  tg: {{ type: telegram, bot_token: \"1:x\", chat_id: 5, two_way: {two_way} }}\n\
                 rules:\n  - name: r\n    match: {{ type: alarm }}\n    incident: {{ repeat: 5m }}\n\
                 \x20   notify: [{{ channel: tg, location: live }}]\n"
            )
        };
        let settings = |c: &Config| {
            let kind: &dyn std::any::Any = c.channels["tg"].kind.as_ref();
            kind.downcast_ref::<crate::channel::telegram::TelegramSettings>()
                .unwrap()
                .two_way
        };
        let on = load(&tg("true")).unwrap();
        let two_way = settings(&on).expect("two-way on");
        assert_eq!(two_way.poll_timeout, Duration::from_secs(25));
        assert_eq!(two_way.lease, Duration::from_secs(30));
        assert!(on.channels["tg"].kind.buttons());
        let t = &on.rules.rules()[0].targets[0];
        assert!(t.location && t.live);
        let off = load(&tg("false").replace("location: live", "location: true")).unwrap();
        assert!(settings(&off).is_none());
        let custom = load(&tg("{ poll_timeout: 2s, lease: 8s, live_every: 3s }")).unwrap();
        assert_eq!(
            settings(&custom).unwrap().live_every,
            Duration::from_secs(3)
        );

        let err = |yaml: &str| load(yaml).unwrap_err().to_string();
        let e = err(&tg("{ poll_timeout: 20s, lease: 21s }"));
        assert!(
            e.contains("t.yaml:2") && e.contains("two_way.lease: 21s is too short"),
            "{e}"
        );
        let e = err(&tg("{ poll_timeout: 60s, lease: 90s }"));
        assert!(e.contains("two_way.poll_timeout: at most 50s"), "{e}");
        // A live pin follows an incident's device: a rule without an incident cannot have one.
        let e = err(&tg("true").replace("    incident: { repeat: 5m }\n", ""));
        assert!(
            e.contains("t.yaml:4") && e.contains("notify[0]: location: live follows the device"),
            "{e}"
        );
        let e = err(&tg("false"));
        assert!(
            e.contains("t.yaml:4") && e.contains("location: live needs the channel to be two-way"),
            "{e}"
        );
        let e = err(&tg("true").replace("location: live", "location: alive"));
        assert!(e.contains("t.yaml"), "{e}");
    }

    #[test]
    fn incident_sections_compile_or_fail_with_file_line_and_reason() {
        let ok = load(
            "public_url: https://alerts.example.org/\nchannels: { c: { type: log }, d: { type: log } }\n\
             rules:\n  - name: a\n    match: { type: alarm }\n    incident:\n      key: \"theft-{{ device.id }}\"\n\
             \x20     repeat: 5m\n      escalate: [{ after: 10m, notify: [{ channel: d }] }]\n\
             \x20     resolve_on: { type: alarm, where: { position.attributes.armed: false } }\n\
             \x20   notify: [{ channel: c }]\n",
        )
        .unwrap();
        assert_eq!(ok.public_url.as_deref(), Some("https://alerts.example.org"));
        let inc = ok.rules.rules()[0].incident.as_ref().unwrap();
        assert_eq!(inc.policy.repeat.unwrap().max, 10);
        assert_eq!(inc.escalation_targets[0].channel, "d");
        assert!(inc.key.is_some() && inc.resolve_on.is_some());
        assert!(load("public_url: \"\"\n").unwrap().public_url.is_none());

        let err = |yaml: &str| load(yaml).unwrap_err().to_string();
        let rule = |incident: &str, extra: &str| {
            format!(
                "channels: {{ c: {{ type: log }} }}\nrules:\n  - name: x\n    match: {{ type: alarm }}\n{extra}\
                 \x20   incident: {incident}\n    notify: [{{ channel: c }}]\n"
            )
        };
        let e = err(&rule("{ repeat: 10s, max_repeats: 500 }", ""));
        assert!(
            e.contains("t.yaml:3") && e.contains("incident.repeat: 10s is too often"),
            "{e}"
        );
        assert!(
            e.contains("incident.max_repeats: 500 is not between 1 and 100"),
            "{e}"
        );
        let e = err(&rule(
            "{ escalate: [{ after: 10m, notify: [{ channel: nope }] }] }",
            "",
        ));
        assert!(
            e.contains("t.yaml:3") && e.contains("incident.escalate[0].notify[0]"),
            "{e}"
        );
        assert!(e.contains("nope"), "{e}");
        let e = err(&rule("{ repeat: 5m }", "    group: { wait: 1m }\n"));
        assert!(e.contains("cannot also group"), "{e}");
        let e = err(&rule("{ key: \"{{ device.id \" }", ""));
        assert!(e.contains("incident.key"), "{e}");
        let e = err(&rule("{ resolve_on: { type: [] , bogus: 1 } }", ""));
        assert!(e.contains("t.yaml"), "{e}");
        let e = err(&rule("{ repat: 5m }", ""));
        assert!(
            e.contains("t.yaml:3") && e.contains("unknown field `repat`"),
            "{e}"
        );
        let e = err("public_url: ftp://relay.example.org\n");
        assert!(
            e.contains("t.yaml:1") && e.contains("http:// or https://"),
            "{e}"
        );
        let e = err("public_url: https://u:pw@relay.example.org\n");
        assert!(
            e.contains("no user or password") && !e.contains("pw@"),
            "{e}"
        );
    }

    #[test]
    fn storage_url_selects_postgres_and_errors_hide_the_password() {
        let cfg =
            load("storage:\n  url: postgres://relay:s3cret@db:5432/tr\n  pool: 4\n  lease: 30s\n")
                .unwrap();
        let pg = cfg.storage.postgres.as_ref().unwrap();
        assert_eq!(
            (pg.pool, pg.redacted.as_str(), cfg.storage.lease),
            (
                4,
                "postgres://relay:***@db:5432/tr",
                Duration::from_secs(30)
            )
        );
        assert!(!format!("{:?}", cfg.storage).contains("s3cret"));
        assert_eq!(load("").unwrap().storage.lease, DEFAULT_LEASE);
        assert_eq!(
            load("storage: { url: 'postgres://db/tr' }")
                .unwrap()
                .storage
                .lease,
            DEFAULT_PG_LEASE
        );
        let err =
            load("listen: 127.0.0.1:1\nstorage:\n  data_dir: x\n  url: mysql://u:s3cret@db/tr\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("t.yaml:4"), "{err}");
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        assert!(
            err.contains("t.yaml:3") && err.contains("not both"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = load("storage: { pool: 3 }").unwrap_err().to_string();
        assert!(err.contains("needs url"), "{err}");
    }

    #[test]
    fn disabled_rules_are_checked_but_never_evaluated() {
        let cfg = load(
            "channels: { out: { type: log } }\nrules:\n  - { name: off, enabled: false, stop: true, notify: [{ channel: out }] }\n  - { name: on, notify: [{ channel: out }] }\n",
        )
        .unwrap();
        let env = Envelope::from_json(br#"{"event":{"id":1,"type":"alarm"}}"#).unwrap();
        let names: Vec<_> = cfg
            .rules
            .evaluate(&env, "s")
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(names, ["on"]);
        let err = load("channels: { out: { type: log } }\nrules:\n  - { name: off, enabled: false, notify: [{ channel: nope }] }\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown channel 'nope'"), "{err}");
    }

    #[test]
    fn numeric_chat_ids_and_content_type_headers() {
        let cfg = load(
            "channels:\n  tg: { type: telegram, bot_token: '1:x', chat_id: -100123 }\n  \
             hook: { type: webhook, url: 'http://127.0.0.1:1/', headers: { Content-Type: text/plain, X-A: b } }\n",
        )
        .unwrap();
        assert_eq!(cfg.channels["tg"].default_to, ["-100123"]);
        let hook: &dyn std::any::Any = cfg.channels["hook"].kind.as_ref();
        let w = hook
            .downcast_ref::<crate::channel::webhook::WebhookSettings>()
            .unwrap();
        assert_eq!(w.content_type, "text/plain");
        assert!(w.headers.get("content-type").is_none() && w.headers.get("x-a").is_some());
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err =
            load("listen: nowhere\ntimezone: Mars/Base\ningest: { path: events }\n").unwrap_err();
        let text = err.to_string();
        for want in [
            "t.yaml:1: listen: `nowhere`",
            "t.yaml:2: timezone: `Mars/Base`",
            "ingest: path must start with `/`",
        ] {
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
    }

    #[test]
    fn the_positions_path_defaults_and_must_be_its_own() {
        let cfg = load("{}\n").unwrap();
        assert_eq!(
            (cfg.ingest.path.as_str(), cfg.ingest.positions_path.as_str()),
            ("/events", "/positions")
        );
        let cfg = load("ingest: { positions_path: /traccar/positions }\n").unwrap();
        assert_eq!(cfg.ingest.positions_path, "/traccar/positions");
        for (yaml, want) in [
            (
                "ingest:\n  positions_path: positions\n",
                "t.yaml:2: ingest: positions_path must start with `/`",
            ),
            (
                "ingest:\n  path: /hook\n  positions_path: /hook\n",
                "t.yaml:3: ingest: positions_path must differ from path (both are `/hook`)",
            ),
        ] {
            let text = load(yaml).unwrap_err().to_string();
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
    }
}
