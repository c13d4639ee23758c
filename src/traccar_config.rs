//! The settings of one live Traccar source (`traccar:` in `trackrelay.yaml`), raw and compiled, with
//! the defaults beside their reasons.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::geo::{Shape, Zone};
use crate::secret::Secret;

/// Our own WebSocket ping: well inside Traccar's 55 s keepalive, so proxies never see an idle socket.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Traccar sends `{}` every 55 s; a socket silent for that plus a margin is dead.
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(55 + 20);
/// Login, REST calls and the WebSocket handshake each get this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before reconnecting.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between reconnects (a server down for hours is retried every 5 min).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Backfill never reaches further back than this after a long outage: a day-old alarm is no news.
pub const DEFAULT_BACKFILL_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long an event waits on the socket for the position it refers to before the relay asks the REST
/// API for it. Traccar pushes the `positions` frame milliseconds after the `events` frame; two seconds
/// cover a loaded server and still notify promptly.
pub const DEFAULT_POSITION_WAIT: Duration = Duration::from_secs(2);
/// Devices, groups and geofences are re-read this often (and on every `devices` frame).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// One entry of `traccar:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraccarSource {
    /// Name of the source: what rules match with `source:` and templates show as `{{ source }}`.
    pub name: String,
    /// Server base URL (`https://demo.traccar.org`, `http://localhost:8082`).
    pub url: String,
    /// API token (Traccar: Settings -> Preferences -> Token). Use `${ENV}`.
    pub token: Option<String>,
    /// Login email (with `password`), when no token is used.
    pub email: Option<String>,
    /// Login password. Use `${ENV}`.
    pub password: Option<String>,
    /// Dedup namespace shared with the webhook of the same server. Default: `ingest.source` when only
    /// one Traccar source is configured, else the source's name.
    pub dedup_as: Option<String>,
    /// Our WebSocket ping interval.
    #[serde(default, with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    /// Silence after which the socket counts as dead.
    #[serde(default, with = "humantime_serde")]
    pub silence_timeout: Option<Duration>,
    /// Timeout of login, REST calls and the handshake.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// First reconnect wait.
    #[serde(default, with = "humantime_serde")]
    pub backoff_initial: Option<Duration>,
    /// Longest reconnect wait.
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    /// Longest gap backfilled after a reconnect.
    #[serde(default, with = "humantime_serde")]
    pub backfill_max: Option<Duration>,
    /// How often devices, groups and geofences are re-read.
    #[serde(default, with = "humantime_serde")]
    pub refresh_interval: Option<Duration>,
    /// How long an event waits on the socket for its position before it is read from the REST API.
    #[serde(default, with = "humantime_serde")]
    pub position_wait: Option<Duration>,
    /// Zones the relay evaluates itself, by name.
    #[serde(default)]
    pub zones: BTreeMap<String, RawZone>,
    /// Also evaluate the server's geofences as zones (with `geofence_dwell`).
    pub geofences_from_server: Option<bool>,
    /// Dwell time for the server's geofences.
    #[serde(default, with = "humantime_serde")]
    pub geofence_dwell: Option<Duration>,
}

/// A zone as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// WKT, latitude first: `CIRCLE (lat lon, r)`, `POLYGON ((lat lon, ...))`, `LINESTRING (lat lon, ...)`.
    pub area: String,
    /// For a `LINESTRING`: the largest distance from the line in metres (Traccar's `polylineDistance`).
    pub distance: Option<f64>,
    /// Inside this long before the enter counts.
    #[serde(default, with = "humantime_serde")]
    pub dwell: Option<Duration>,
}

/// How the relay logs in.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `GET /api/session?token=`.
    Token(Secret),
    /// `POST /api/session` with a form.
    Password {
        /// Login email (not secret: shown in errors).
        email: String,
        /// Password.
        password: Secret,
    },
}

/// One compiled live source.
#[derive(Debug, Clone)]
pub struct TraccarSource {
    /// Name (rules, templates, status, metrics).
    pub name: String,
    /// Dedup namespace in the store.
    pub dedup_as: String,
    /// Base URL, ending in `/`.
    pub url: reqwest::Url,
    /// Credentials.
    pub auth: Auth,
    /// Our ping interval.
    pub ping_interval: Duration,
    /// Dead-socket silence.
    pub silence_timeout: Duration,
    /// Request and handshake timeout.
    pub timeout: Duration,
    /// First reconnect wait.
    pub backoff_initial: Duration,
    /// Longest reconnect wait.
    pub backoff_max: Duration,
    /// Longest backfill.
    pub backfill_max: Duration,
    /// Cache refresh period.
    pub refresh_interval: Duration,
    /// Wait for an event's position on the socket.
    pub position_wait: Duration,
    /// The relay's own zones.
    pub zones: Vec<Zone>,
    /// Track the server's geofences as zones too.
    pub geofences_from_server: bool,
    /// Their dwell.
    pub geofence_dwell: Duration,
}

impl TraccarSource {
    /// Validates one raw entry; `default_dedup` is the namespace used when `dedup_as` is not set.
    /// Errors are messages; the caller adds file and line.
    pub fn compile(
        raw: RawTraccarSource,
        default_dedup: &str,
    ) -> Result<TraccarSource, Vec<String>> {
        let mut errors = Vec::new();
        if raw.name.trim().is_empty() {
            errors.push("name is empty".to_string());
        }
        let url = base_url(&raw.url).map_err(|e| errors.push(e)).ok();
        let auth = credentials(raw.token, raw.email, raw.password)
            .map_err(|e| errors.push(e))
            .ok();
        let zones = zones(raw.zones, &mut errors);
        let ping_interval = raw.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL);
        let silence_timeout = raw.silence_timeout.unwrap_or(DEFAULT_SILENCE_TIMEOUT);
        if ping_interval.is_zero() || silence_timeout <= ping_interval {
            errors.push(format!(
                "silence_timeout ({}) must be longer than ping_interval ({})",
                humantime::format_duration(silence_timeout),
                humantime::format_duration(ping_interval)
            ));
        }
        let (Some(url), Some(auth), true) = (url, auth, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(TraccarSource {
            dedup_as: raw.dedup_as.unwrap_or_else(|| default_dedup.to_string()),
            name: raw.name,
            url,
            auth,
            ping_interval,
            silence_timeout,
            timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            backoff_initial: raw.backoff_initial.unwrap_or(DEFAULT_BACKOFF_INITIAL),
            backoff_max: raw.backoff_max.unwrap_or(DEFAULT_BACKOFF_MAX),
            backfill_max: raw.backfill_max.unwrap_or(DEFAULT_BACKFILL_MAX),
            refresh_interval: raw.refresh_interval.unwrap_or(DEFAULT_REFRESH_INTERVAL),
            position_wait: raw.position_wait.unwrap_or(DEFAULT_POSITION_WAIT),
            zones,
            geofences_from_server: raw.geofences_from_server.unwrap_or(false),
            geofence_dwell: raw.geofence_dwell.unwrap_or_default(),
        })
    }
}

/// The server's base URL: http(s) with a host and no credentials, ending in `/`, without a query.
fn base_url(text: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(text) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            Err("url: no credentials in the URL; use `token` or `email` + `password`".into())
        }
        Ok(mut u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.path().ends_with('/') {
                u.set_path(&format!("{}/", u.path()));
            }
            u.set_query(None);
            Ok(u)
        }
        Ok(_) => Err(format!(
            "url: `{text}` must be http:// or https:// with a host"
        )),
        Err(e) => Err(format!("url: `{text}`: {e}")),
    }
}

/// How the source logs in: a token, or an email with its password (empty values count as unset).
fn credentials(
    token: Option<String>,
    email: Option<String>,
    password: Option<String>,
) -> Result<Auth, String> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    match (nonempty(token), nonempty(email), nonempty(password)) {
        (Some(t), None, None) => Ok(Auth::Token(Secret(t))),
        (None, Some(email), Some(p)) => Ok(Auth::Password {
            email,
            password: Secret(p),
        }),
        (Some(_), _, _) => Err("set either `token` or `email` + `password`, not both".into()),
        (None, Some(_), None) => {
            Err("`email` needs a `password` (e.g. password: ${TRACCAR_PASSWORD})".into())
        }
        (None, None, Some(_)) => Err("`password` needs an `email`".into()),
        (None, None, None) => {
            Err("credentials: set `token` or `email` + `password` (from ${ENV})".into())
        }
    }
}

/// The relay's own zones, parsed; a zone whose area does not parse is an error in `errors`.
fn zones(raw: BTreeMap<String, RawZone>, errors: &mut Vec<String>) -> Vec<Zone> {
    let mut zones = Vec::new();
    for (name, z) in raw {
        match Shape::parse(&z.area, z.distance) {
            Ok(shape) => zones.push(Zone {
                id: 0,
                name,
                area: z.area,
                shape,
                dwell: z.dwell.unwrap_or_default(),
            }),
            Err(e) => errors.push(format!("zone '{name}': {e}")),
        }
    }
    zones
}
