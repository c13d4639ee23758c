//! The configuration as written, part by part: serde types that mirror the sections of `trackrelay.yaml`
//! and rule files one to one, with `deny_unknown_fields` so a typo is an error, not a silently ignored
//! key. Plain data that the modules reading their own settings (retry, rules, noise) take from here;
//! the file as a whole is [`crate::config::raw::RawConfig`]. A channel's own section lives with the
//! channel (see [`crate::channel::RawChannel`]); the keys every channel has (retry, rate limit) are here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One value or a list of them (`type: alarm` or `type: [alarm, sos]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Intake settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Path of the webhook endpoint (default `/events`).
    pub path: Option<String>,
    /// Path of the endpoint Traccar's position forwarding posts to (default `/positions`).
    pub positions_path: Option<String>,
    /// Exact `Authorization` header value required (e.g. `Bearer s3cret`); none = open.
    pub authorization: Option<String>,
    /// Largest accepted body in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Name under which webhook events are deduplicated (default `traccar`).
    pub source: Option<String>,
    /// Events waiting for the store at most; beyond it intake answers 503.
    pub queue: Option<usize>,
}

/// Admin API settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token for `/api/...`; the admin API is off without it.
    pub token: Option<String>,
    /// Token of the web console's read-only login (looks, changes nothing); none: only the admin token
    /// logs in.
    pub viewer_token: Option<String>,
}

/// Storage settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Folder of the SQLite database (default `./data`).
    pub data_dir: Option<PathBuf>,
    /// How long delivered events and deliveries are kept.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// How long dead letters are kept.
    #[serde(default, with = "humantime_serde")]
    pub dead_retention: Option<Duration>,
    /// `postgres://user:password@host:port/database`: a PostgreSQL database shared by several instances
    /// instead of the SQLite file.
    pub url: Option<String>,
    /// PostgreSQL connections per instance at most.
    pub pool: Option<usize>,
    /// PostgreSQL statements running longer are cancelled.
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// Connecting to PostgreSQL gives up after this.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How long a claimed delivery belongs to the instance sending it.
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// Whether events no rule matched are stored with their body, not just their identity.
    pub keep_unmatched_payloads: Option<bool>,
}

/// Delivery settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Sends in flight at once.
    pub workers: Option<usize>,
    /// How long shutdown waits for in-flight sends.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// Default retry policy of every channel.
    #[serde(default)]
    pub retry: RawRetry,
}

/// Retry policy overrides.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included.
    pub max_attempts: Option<u32>,
    /// Give up when the delivery is older than this.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// First backoff.
    #[serde(default, with = "humantime_serde")]
    pub initial_backoff: Option<Duration>,
    /// Longest backoff.
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
    /// Longest `Retry-After` honoured.
    #[serde(default, with = "humantime_serde")]
    pub max_retry_after: Option<Duration>,
}

/// An entry of `rules:` in the config: a path (a file, or a folder of `*.yaml`) or an inline rule.
#[derive(Debug)]
pub enum RawRuleSource {
    /// A file or folder of rule files.
    Path(String),
    /// A rule written inline.
    Inline(Box<RawRule>),
}

/// A string is a path; anything else is read as a rule, with the rule's own error (serde's untagged
/// enums would only say that no variant matched, hiding a misspelt key).
impl<'de> Deserialize<'de> for RawRuleSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(p) => Ok(RawRuleSource::Path(p)),
            other => RawRule::deserialize(other)
                .map(|r| RawRuleSource::Inline(Box::new(r)))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A rule file: `rules: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    /// The rules of the file.
    pub rules: Vec<RawRule>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Conditions; all must hold. Empty = every event.
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    /// Stop evaluating later rules when this one matches.
    #[serde(default)]
    pub stop: bool,
    /// `false` switches the rule off without deleting it.
    pub enabled: Option<bool>,
    /// Where matches go.
    pub notify: Vec<RawNotify>,
    /// How urgent its messages are: `critical`, `high`, `normal` (the default) or `low`; each channel
    /// maps it to its own notion (a push priority, a silent message, a mail's importance).
    pub severity: Option<crate::severity::Severity>,
    /// After a notification, suppress the same key for a while.
    pub cooldown: Option<RawCooldown>,
    /// Identical events (rule, device, type, alarm, geofence) within this window notify once.
    #[serde(default, with = "humantime_serde")]
    pub dedup: Option<Duration>,
    /// Hold geofence enter/exit this long; the opposite transition meanwhile cancels both.
    #[serde(default, with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// Collect matches into digests.
    pub group: Option<RawGroup>,
    /// Active hours / quiet hours.
    pub schedule: Option<RawSchedule>,
    /// Repeat and escalate until a person acknowledges (see [`RawIncident`]).
    pub incident: Option<RawIncident>,
}

/// Noise settings every rule gets unless it sets its own (`defaults:` in the main file).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Default cooldown.
    pub cooldown: Option<RawCooldown>,
    /// Default dedup window.
    #[serde(default, with = "humantime_serde")]
    pub dedup: Option<Duration>,
    /// Default geofence debounce.
    #[serde(default, with = "humantime_serde")]
    pub debounce: Option<Duration>,
    /// Default schedule.
    pub schedule: Option<RawSchedule>,
}

/// `cooldown: 10m` or `cooldown: { for: 10m, key: "...", summary: true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCooldown {
    /// Just the period.
    Period(#[serde(with = "humantime_serde")] Duration),
    /// Period, key and summary.
    Full(RawCooldownFull),
}

/// The long form of a cooldown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCooldownFull {
    /// Period.
    #[serde(rename = "for", with = "humantime_serde")]
    pub period: Duration,
    /// Key template (default: rule and device).
    pub key: Option<String>,
    /// Add "N more suppressed" to the next notification.
    #[serde(default)]
    pub summary: bool,
}

/// Grouping into digests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Group key template (default: the rule).
    pub by: Option<String>,
    /// Wait for more before the first digest of a group (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub wait: Option<Duration>,
    /// Between digests of one group (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Title template (`{{ count }}`, `{{ rule }}`, `{{ devices }}`).
    pub title: Option<String>,
}

/// Active hours / quiet hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// IANA time zone (default: the config's `timezone`).
    pub timezone: Option<String>,
    /// Notify only inside these windows (`"mon-fri 22:00-06:00"`).
    pub active: Option<OneOrMany<String>>,
    /// Never notify inside these windows.
    pub quiet: Option<OneOrMany<String>>,
    /// `drop` (default) or `defer` (send when the muted time ends).
    pub when_muted: Option<String>,
}

/// A channel's rate limit, per recipient.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Messages at most ...
    pub max: u32,
    /// ... per this period.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// `wait` (default) or `digest`.
    pub over: Option<Over>,
}

/// What happens over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// The delivery waits for the next free slot (nothing is dropped).
    Wait,
    /// The delivery joins a digest sent at the next free slot.
    Digest,
}

/// A rule's conditions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Event types.
    #[serde(rename = "type")]
    pub types: Option<OneOrMany<String>>,
    /// Alarm values of `alarm` events.
    pub alarm: Option<OneOrMany<String>>,
    /// Geofences by id (number) or name (glob).
    pub geofence: Option<OneOrMany<IdOrName>>,
    /// Devices by id (number) or name (glob).
    pub device: Option<OneOrMany<IdOrName>>,
    /// Devices by unique id (glob).
    pub unique_id: Option<OneOrMany<String>>,
    /// Devices by group id.
    pub group: Option<OneOrMany<i64>>,
    /// Device status (`online`, `offline`, `unknown`).
    pub status: Option<OneOrMany<String>>,
    /// Source names.
    pub source: Option<OneOrMany<String>>,
    /// Field comparisons: `path: value`, `path: [values]` or `path: {op: value}`.
    #[serde(rename = "where")]
    pub fields: Option<serde_yaml::Mapping>,
    /// An evalexpr expression.
    pub expr: Option<String>,
    /// Must not match.
    pub not: Option<Box<RawMatch>>,
    /// At least one must match.
    pub any: Option<Vec<RawMatch>>,
}

/// A number (id) or a string (name glob).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdOrName {
    /// Numeric id.
    Id(i64),
    /// Name glob (`Lena*`).
    Name(String),
}

/// One destination of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Channel name.
    pub channel: String,
    /// Recipient override(s), templates (`{{ device.attributes.telegramChatId }}`).
    pub to: Option<OneOrMany<String>>,
    /// Subject template (email).
    pub subject: Option<String>,
    /// Message template.
    pub template: Option<String>,
    /// Send the position as a map pin too (Telegram): `true`, `false`, or `live` (a live location that
    /// follows the device while the rule's incident is open).
    pub location: Option<RawLocation>,
}

/// A target's `location`: a map pin or not, or a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawLocation {
    /// `true` / `false`.
    Pin(bool),
    /// `live`.
    Live(LiveWord),
}

/// The word `live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveWord {
    /// A live location.
    Live,
}

/// A rule's `incident:` section: an alarm opens an incident that repeats and escalates until a person
/// acknowledges it. Validated by [`crate::incident::IncidentPolicy::from_raw`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncident {
    /// Key template: events with the same key join one incident (default: rule and device).
    pub key: Option<String>,
    /// Notify again this often until acknowledged.
    #[serde(default, with = "humantime_serde")]
    pub repeat: Option<Duration>,
    /// Repeats at most (needs `repeat`).
    pub max_repeats: Option<u32>,
    /// Steps that widen the circle, each so long after the incident opened.
    pub escalate: Option<Vec<RawEscalation>>,
    /// The incident closes by itself when no event joined it for this long.
    #[serde(default, with = "humantime_serde")]
    pub resolve_after: Option<Duration>,
    /// An event matching these conditions closes the incident of its key.
    pub resolve_on: Option<RawMatch>,
}

/// One escalation step of an incident.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    /// How long after the incident opened, if nobody acknowledged it by then.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Who is notified as well from then on.
    pub notify: Vec<RawNotify>,
}
