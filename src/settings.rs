//! The compiled configuration as data: [`Config`] and its sections ([`Ingest`], [`Storage`],
//! [`Postgres`], [`Delivery`]), with the defaults they fall back to and why. Data only: the services,
//! the planner and the sources read these settings without reaching up into files, YAML and compiling,
//! which stay in [`crate::config`] (it also implements [`Config::load`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::channel_config::ChannelConfig;
use crate::render::Renderer;
use crate::rules::RuleSet;
use crate::secret::Secret;
use crate::traccar_config::TraccarSource;

/// Default listen address: loopback, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8088";
/// Default webhook path (what Traccar's `event.forward.url` and BikeTrax's `webhookUrl` point at).
pub const DEFAULT_INGEST_PATH: &str = "/events";
/// Default path of Traccar's position forwarding (`forward.url`).
pub const DEFAULT_POSITIONS_PATH: &str = "/positions";
/// Traccar event bodies are about 2 KiB; 1 MiB leaves room and still bounds memory.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Events waiting for the store at most before intake answers 503.
pub const DEFAULT_INGEST_QUEUE: usize = 8192;
/// Default dedup namespace: the webhook and a Traccar WebSocket deliver the same event ids.
pub const DEFAULT_SOURCE: &str = "traccar";
/// Delivered events are kept a week for `deliveries` and support questions.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Dead letters are kept a month: someone has to see them.
pub const DEFAULT_DEAD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Sends in flight at once.
pub const DEFAULT_WORKERS: usize = 64;
/// Shutdown waits this long for in-flight sends; unfinished ones are resent after restart.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Intake settings.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Webhook path.
    pub path: String,
    /// Path of Traccar's position forwarding: positions update the devices' whereabouts only.
    pub positions_path: String,
    /// Required `Authorization` header value.
    pub authorization: Option<Secret>,
    /// Body limit in bytes.
    pub max_body_bytes: usize,
    /// Dedup namespace.
    pub source: String,
    /// Pending events at most.
    pub queue: usize,
}

/// Storage settings.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Folder of the database.
    pub data_dir: PathBuf,
    /// Keep delivered events and deliveries this long.
    pub retention: Duration,
    /// Keep dead letters this long.
    pub dead_retention: Duration,
    /// A shared PostgreSQL database instead of the SQLite file under `data_dir`.
    pub postgres: Option<Postgres>,
    /// A claimed delivery belongs to its instance this long; then another instance may send it. Sends
    /// are abandoned (and retried) after half of it, so a live instance's claims never run out.
    pub lease: Duration,
    /// Events no rule matched are stored with their body too. By default only their identity is (source,
    /// id, device, type, arrival: enough to recognise a resent event), as nothing reads the body of an
    /// event that caused no delivery; storing it cost about a fifth of the intake of such events.
    pub keep_unmatched_payloads: bool,
}

/// PostgreSQL settings (`storage.url`).
#[derive(Debug, Clone)]
pub struct Postgres {
    /// The URL, password included: never log it, log `redacted`.
    pub url: Secret,
    /// The URL with its password replaced by `***`.
    pub redacted: String,
    /// Connections per instance at most.
    pub pool: usize,
    /// Statements running longer are cancelled.
    pub statement_timeout: Duration,
    /// Connecting (and waiting for a pooled connection) gives up after this.
    pub connect_timeout: Duration,
}

/// PostgreSQL connections per instance.
pub const DEFAULT_PG_POOL: usize = 16;
/// PostgreSQL statement timeout.
pub const DEFAULT_PG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL connect timeout.
pub const DEFAULT_PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lease of a claim with SQLite: one process, whose claims a restart takes back at once.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);
/// Lease of a claim with PostgreSQL: how long a dead instance's deliveries wait for another one.
pub const DEFAULT_PG_LEASE: Duration = Duration::from_secs(60);

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Sends in flight at once.
    pub workers: usize,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
}

/// The validated, compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// File it was read from (`None` = built-in default).
    pub path: Option<PathBuf>,
    /// Listen address.
    pub listen: SocketAddr,
    /// Time zone of templates.
    pub timezone: Tz,
    /// Intake.
    pub ingest: Ingest,
    /// Admin API token (off without).
    pub admin_token: Option<Secret>,
    /// The web console's read-only login token.
    pub viewer_token: Option<Secret>,
    /// Storage.
    pub storage: Storage,
    /// Delivery.
    pub delivery: Delivery,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Rules.
    pub rules: RuleSet,
    /// Templates.
    pub renderer: Renderer,
    /// Rule files read.
    pub rule_files: Vec<PathBuf>,
    /// Live Traccar sources (started once; a reload does not change them).
    pub traccar: Vec<TraccarSource>,
    /// The relay's address as users reach it, without a trailing slash (`https://alerts.example.org`):
    /// links in messages start with it. `None`: messages carry no links.
    pub public_url: Option<String>,
}
