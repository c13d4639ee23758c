//! Message templates (minijinja): compiled once at load, rendered purely per event, with escaping chosen
//! by the channel's format so a device called `Lena's <Bike> *1*_.` cannot break Telegram's parser,
//! an HTML mail or a JSON body.
//!
//! A template's escaping is given by the suffix of its internal name: `.txt` none, `.html` HTML,
//! `.mdv2` Telegram MarkdownV2, `.json` JSON.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::value::Value;
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::event::{parse_time, Envelope, KNOTS_TO_KMH};

/// How a template's values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Plain text: nothing escaped.
    Text,
    /// HTML (email, Telegram HTML).
    Html,
    /// Telegram MarkdownV2.
    MarkdownV2,
    /// JSON: every value becomes a JSON literal.
    Json,
}

impl Escape {
    /// `s` escaped for a text of this kind (added to a rendered message; JSON gives a string literal).
    pub fn apply(self, s: &str) -> String {
        match self {
            Escape::Text => s.to_string(),
            Escape::Html => escape_html(s),
            Escape::MarkdownV2 => escape_markdown_v2(s),
            Escape::Json => serde_json::Value::from(s).to_string(),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Escape::Text => "txt",
            Escape::Html => "html",
            Escape::MarkdownV2 => "mdv2",
            Escape::Json => "json",
        }
    }
}

/// Characters Telegram's MarkdownV2 reserves; each needs a backslash outside entities.
const MARKDOWN_V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

/// Escapes text for Telegram MarkdownV2.
pub fn escape_markdown_v2(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if MARKDOWN_V2_RESERVED.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes text for HTML (and Telegram's HTML mode, which documents `&lt; &gt; &amp; &quot;` and numeric
/// entities): only what must be escaped, so links stay readable.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Wraps a rendered, HTML-escaped body into a minimal mail page, keeping its line breaks.
pub fn html_page(escaped_body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><body><div style=\"font-family:sans-serif;white-space:pre-wrap\">{escaped_body}</div></body></html>\n"
    )
}

/// Compiles templates into a [`Renderer`].
pub struct RendererBuilder {
    env: Environment<'static>,
    /// Internal name of each distinct (source, escaping) added so far.
    names: std::collections::HashMap<(String, &'static str), String>,
}

impl Default for RendererBuilder {
    fn default() -> Self {
        RendererBuilder::new()
    }
}

/// Holds every compiled template and renders them.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    tz: Tz,
}

/// A template that failed to render.
#[derive(Debug, thiserror::Error)]
#[error("template `{name}`: {source}")]
pub struct RenderError {
    /// Internal template name.
    pub name: String,
    /// minijinja's error.
    #[source]
    pub source: minijinja::Error,
}

impl RendererBuilder {
    /// An empty builder with the relay's filters and functions.
    pub fn new() -> RendererBuilder {
        let mut env = Environment::new();
        // Chainable: `{{ geofence.name }}` on an event without a geofence renders empty, not an error.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|name| match name.rsplit('.').next() {
            Some("html") => AutoEscape::Html,
            Some("json") => AutoEscape::Json,
            Some("mdv2") => AutoEscape::Custom("markdownv2"),
            _ => AutoEscape::None,
        });
        env.set_formatter(|out, state, value| {
            // A null attribute (`"address": null`) prints as nothing, not as `none`.
            if value.is_none() || value.is_undefined() {
                return Ok(());
            }
            if state.auto_escape() == AutoEscape::Custom("markdownv2") && !value.is_safe() {
                let text = if value.is_none() || value.is_undefined() {
                    String::new()
                } else {
                    value.to_string()
                };
                return out
                    .write_str(&escape_markdown_v2(&text))
                    .map_err(Into::into);
            }
            if state.auto_escape() == AutoEscape::Html
                && !value.is_safe()
                && !value.is_undefined()
                && !value.is_none()
            {
                return out
                    .write_str(&escape_html(&value.to_string()))
                    .map_err(Into::into);
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("kmh", |knots: f64| round1(knots * KNOTS_TO_KMH));
        env.add_filter(
            "localtime",
            move |state: &minijinja::State, v: Value, fmt: Option<String>| -> String {
                let tz = state
                    .lookup("timezone")
                    .and_then(|t| t.as_str().and_then(|s| s.parse::<Tz>().ok()))
                    .unwrap_or(Tz::UTC);
                v.as_str()
                    .and_then(parse_time)
                    .map(|t| local_time(t, tz, fmt.as_deref()))
                    .unwrap_or_default()
            },
        );
        env.add_function("map_link", |lat: f64, lon: f64| map_url(lat, lon));
        RendererBuilder {
            env,
            names: Default::default(),
        }
    }

    /// Adds a template under `base` with the escaping `esc`; returns its internal name. A source
    /// added before with the same escaping is not compiled again: its first name is returned. A
    /// thousand rules sending the channel's default message then hold one compiled template, not a
    /// thousand (about 12 KiB each).
    pub fn add(&mut self, base: &str, source: &str, esc: Escape) -> Result<String, String> {
        let key = (source.to_string(), esc.suffix());
        if let Some(name) = self.names.get(&key) {
            return Ok(name.clone());
        }
        let name = format!("{base}.{}", esc.suffix());
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| describe(&e))?;
        self.names.insert(key, name.clone());
        Ok(name)
    }

    /// Finishes the set.
    pub fn build(self, tz: Tz) -> Renderer {
        Renderer { env: self.env, tz }
    }
}

/// A minijinja error in one line, with the template line it points at.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(l) = e.line() {
        s.push_str(&format!(" (template line {l})"));
    }
    s
}

/// Rounds to one decimal: speeds read better as 27.0 km/h than 26.999548.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// OpenStreetMap link to a position.
pub fn map_url(lat: f64, lon: f64) -> String {
    format!("https://www.openstreetmap.org/?mlat={lat:.6}&mlon={lon:.6}#map=17/{lat:.6}/{lon:.6}")
}

/// Formats a time in the configured zone (`2026-05-15 02:41:05 CEST` by default).
pub fn local_time(t: DateTime<Utc>, tz: Tz, fmt: Option<&str>) -> String {
    t.with_timezone(&tz)
        .format(fmt.unwrap_or("%Y-%m-%d %H:%M:%S %Z"))
        .to_string()
}

/// A headline for an event, e.g. `Alarm: vibration`, `Left Zuhause Pradl`.
pub fn title(env: &Envelope) -> String {
    let e = &env.event;
    let geofence = env
        .geofence
        .as_ref()
        .map(|g| g.name.as_str())
        .unwrap_or("a geofence");
    let attr_kmh = |k: &str| {
        e.attributes
            .get(k)
            .and_then(|v| v.as_f64())
            .map(|v| round1(v * KNOTS_TO_KMH))
    };
    match e.event_type.as_str() {
        "alarm" => {
            let alarms: Vec<&str> = env.alarms().collect();
            if alarms.is_empty() {
                "Alarm".into()
            } else {
                format!("Alarm: {}", alarms.join(", "))
            }
        }
        "geofenceEnter" => format!("Entered {geofence}"),
        "geofenceExit" => format!("Left {geofence}"),
        "deviceOnline" => "Online".into(),
        "deviceOffline" => "Offline".into(),
        "deviceUnknown" => "Status unknown".into(),
        "deviceInactive" => "Inactive".into(),
        "deviceMoving" => "Moving".into(),
        "deviceStopped" => "Stopped".into(),
        "deviceOverspeed" => match (attr_kmh("speed"), attr_kmh("speedLimit")) {
            (Some(s), Some(l)) => format!("Overspeed: {s:.1} km/h (limit {l:.1} km/h)"),
            _ => "Overspeed".into(),
        },
        "ignitionOn" => "Ignition on".into(),
        "ignitionOff" => "Ignition off".into(),
        "maintenance" => match env.maintenance.as_ref() {
            Some(m) if !m.name.is_empty() => format!("Maintenance due: {}", m.name),
            _ => "Maintenance due".into(),
        },
        "deviceFuelDrop" => "Fuel drop".into(),
        "deviceFuelIncrease" => "Fuel increase".into(),
        "textMessage" => "Text message".into(),
        "commandResult" => "Command result".into(),
        other => split_camel(other),
    }
}

/// `someNewType` -> `Some new type`: unknown types still get a readable headline.
fn split_camel(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The variables every template sees.
#[derive(Serialize)]
struct Vars<'a> {
    event: &'a crate::event::Event,
    device: &'a Option<crate::event::Device>,
    position: &'a Option<crate::event::Position>,
    geofence: &'a Option<crate::event::Geofence>,
    maintenance: &'a Option<crate::event::Maintenance>,
    group: &'a Option<crate::event::Group>,
    source: &'a str,
    txn: Option<&'a str>,
    title: String,
    alarm: Option<String>,
    speed_kmh: Option<f64>,
    time_local: Option<String>,
    map_url: Option<String>,
    timezone: &'a str,
}

impl Renderer {
    /// The variables of one event, built once and shared by all its templates.
    pub fn event_context(&self, env: &Envelope, source: &str, txn: Option<&str>) -> Value {
        let alarms: Vec<&str> = env.alarms().collect();
        let vars = Vars {
            event: &env.event,
            device: &env.device,
            position: &env.position,
            geofence: &env.geofence,
            maintenance: &env.maintenance,
            group: &env.group,
            source,
            txn,
            title: title(env),
            alarm: (!alarms.is_empty()).then(|| alarms.join(", ")),
            speed_kmh: env.speed_kmh().map(round1),
            time_local: env.event.event_time.map(|t| local_time(t, self.tz, None)),
            // No link to a place that is not one (see `Position::map_point`).
            map_url: env
                .map_point()
                .and_then(Result::ok)
                .map(|(lat, lon)| map_url(lat, lon)),
            timezone: self.tz.name(),
        };
        Value::from_serialize(&vars)
    }

    /// Renders template `name` with the event's context plus `extra` (rule, channel, message, …).
    pub fn render(
        &self,
        name: &str,
        event_ctx: &Value,
        extra: Value,
    ) -> Result<String, RenderError> {
        let err = |source| RenderError {
            name: name.to_string(),
            source,
        };
        let tmpl = self.env.get_template(name).map_err(err)?;
        tmpl.render(context! { ..extra, ..event_ctx.clone() })
            .map_err(err)
    }

    /// The configured time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAUGHTY: &str = "Lena's <Bike> *1*_.";

    fn renderer(templates: &[(&str, &str, Escape)]) -> (Renderer, Vec<String>) {
        let mut b = RendererBuilder::new();
        let names = templates
            .iter()
            .map(|(n, s, e)| b.add(n, s, *e).unwrap())
            .collect();
        (b.build("Europe/Vienna".parse().unwrap()), names)
    }

    fn env() -> Envelope {
        let body = format!(
            r#"{{"event":{{"id":1,"type":"alarm","eventTime":"2026-05-15T00:41:05.000+00:00",
            "attributes":{{"alarm":"vibration"}}}},"device":{{"id":12,"name":{}}},
            "position":{{"latitude":47.262195,"longitude":11.413561,"speed":10.0,"address":null}}}}"#,
            serde_json::to_string(NAUGHTY).unwrap()
        );
        Envelope::from_json(body.as_bytes()).unwrap()
    }

    #[test]
    fn escaping_follows_the_format() {
        let src = "<b>{{ device.name }}</b>";
        let (r, names) = renderer(&[
            ("a", src, Escape::Html),
            ("b", "*{{ device.name }}*", Escape::MarkdownV2),
            ("c", "{\"text\": {{ device.name }}}", Escape::Json),
            ("d", "{{ device.name }}", Escape::Text),
        ]);
        let e = env();
        let ctx = r.event_context(&e, "traccar", None);
        let out = |i: usize| r.render(&names[i], &ctx, context! {}).unwrap();
        assert_eq!(out(0), "<b>Lena&#39;s &lt;Bike&gt; *1*_.</b>");
        // `<` is not reserved in MarkdownV2; `>` is.
        assert_eq!(out(1), r"*Lena's <Bike\> \*1\*\_\.*");
        let json: serde_json::Value = serde_json::from_str(&out(2)).unwrap();
        assert_eq!(json["text"], NAUGHTY);
        assert_eq!(out(3), NAUGHTY);
    }

    #[test]
    fn a_source_added_again_with_the_same_escaping_is_compiled_once() {
        let src = "<b>{{ device.name }}</b>";
        let (r, names) = renderer(&[
            ("rule/a/0/template", src, Escape::Html),
            ("rule/b/0/template", src, Escape::Html),
            ("rule/c/0/template", src, Escape::Text),
            ("rule/d/0/template", "{{ device.id }}", Escape::Text),
        ]);
        assert_eq!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        assert_ne!(names[2], names[3]);
        let e = env();
        let ctx = r.event_context(&e, "traccar", None);
        let out = |i: usize| r.render(&names[i], &ctx, context! {}).unwrap();
        assert_eq!(out(1), "<b>Lena&#39;s &lt;Bike&gt; *1*_.</b>");
        assert_eq!(out(2), "<b>Lena's <Bike> *1*_.</b>");
        assert_eq!(out(3), "12");
    }

    #[test]
    fn helpers_convert_units_and_zones() {
        let (r, names) = renderer(&[(
            "t",
            "{{ title }}|{{ speed_kmh }}|{{ position.speed | kmh }}|{{ time_local }}|\
             {{ event.eventTime | localtime('%H:%M') }}|{{ geofence.name }}|{{ position.address }}|{{ map_url }}|\
             {{ map_link(1.5, 2) }}",
            Escape::Text,
        )]);
        let e = env();
        let out = r
            .render(&names[0], &r.event_context(&e, "", None), context! {})
            .unwrap();
        assert_eq!(
            out,
            "Alarm: vibration|18.5|18.5|2026-05-15 02:41:05 CEST|02:41|||\
             https://www.openstreetmap.org/?mlat=47.262195&mlon=11.413561#map=17/47.262195/11.413561|\
             https://www.openstreetmap.org/?mlat=1.500000&mlon=2.000000#map=17/1.500000/2.000000"
        );
    }

    #[test]
    fn titles_for_unknown_types_are_readable() {
        let mut e = env();
        e.event.event_type = "deviceBatteryCritical".into();
        assert_eq!(title(&e), "Device battery critical");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut b = RendererBuilder::new();
        let err = b.add("x", "ok\n{{ device.name ", Escape::Text).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
