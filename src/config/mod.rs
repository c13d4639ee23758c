//! Configuration: `trackrelay.yaml` plus rule files, read, `${ENV}`-interpolated, and compiled into a
//! validated [`Config`]. Compiling reports every error at once, each with file, line and the rule or
//! channel it is about.

mod compile;
pub mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;

use crate::channel_config::ChannelConfig;
use crate::render::Renderer;
use crate::rules::RuleSet;
use crate::secret::Secret;

/// The configuration `trackrelay serve` runs on when no file is given: log channel only.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");
/// Where the built-in configuration says it comes from in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<built-in default config>";
/// Default listen address: loopback, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8088";
/// Default webhook path (what Traccar's `event.forward.url` and BikeTrax's `webhookUrl` point at).
pub const DEFAULT_INGEST_PATH: &str = "/events";
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
    pub traccar: Vec<crate::traccar_config::TraccarSource>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File.
    pub file: String,
    /// Line (1-based), when known.
    pub line: Option<usize>,
    /// What it is about: `rule 'theft'`, `channel 'phone'`, or empty.
    pub context: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads `path`, or the built-in default config when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        Config::load_with_env(path, &|k| std::env::var(k).ok())
    }

    /// Loads with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let (name, text, dir) = match path {
            None => (
                DEFAULT_CONFIG_NAME.to_string(),
                DEFAULT_CONFIG.to_string(),
                PathBuf::from("."),
            ),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigErrors(vec![ConfigError {
                        file: p.display().to_string(),
                        line: None,
                        context: String::new(),
                        message: format!("cannot read: {e}"),
                    }])
                })?;
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                let dir = if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                };
                (p.display().to_string(), text, dir)
            }
        };
        let mut config = compile::compile(SourceFile { name, text }, &dir, env)?;
        config.path = path.map(Path::to_path_buf);
        Ok(config)
    }
}

/// A file's name and text, for error locations.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown in errors.
    pub name: String,
    /// Its text, before interpolation.
    pub text: String,
}

impl SourceFile {
    /// An error located in this file.
    pub fn error(
        &self,
        line: Option<usize>,
        context: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.name.clone(),
            line,
            context: context.to_string(),
            message: message.into(),
        }
    }

    /// The line of the first `key: value` (or `- key: value`) whose value is `value`, at or after
    /// line `from` (1-based): locates a rule by its name or a channel by its key.
    pub fn find_line(&self, key: &str, value: Option<&str>, from: usize) -> Option<usize> {
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find_map(|(i, line)| {
                let t = line.trim_start().trim_start_matches("- ").trim_start();
                // Flow style (`- { name: x, notify: [...] }`): the value ends at the next `,` or `}`.
                let flow = t.starts_with('{');
                let t = t.trim_start_matches('{').trim_start();
                let rest = t.strip_prefix(key)?.strip_prefix(':')?;
                let rest = if flow {
                    rest.split([',', '}']).next().unwrap_or("")
                } else {
                    rest
                };
                let v = rest
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                match value {
                    Some(want) if v != want => None,
                    _ => Some(i + 1),
                }
            })
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values; `$${` stands for a literal `${`.
/// Comments are left alone. Unset variables without a default are errors, with the line they are on.
pub fn interpolate(
    file: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(file.text.len());
    let mut errors = Vec::new();
    for (i, line) in file.text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
                continue;
            }
            let Some(tail) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let Some(end) = tail.find('}') else {
                errors.push(file.error(Some(i + 1), "", "unterminated `${`"));
                out.push_str("${");
                rest = tail;
                continue;
            };
            let spec = &tail[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            match (valid, env(name), default) {
                (false, ..) => errors.push(file.error(Some(i + 1), "", format!("invalid variable name `{name}`"))),
                (true, Some(v), _) => out.push_str(&v),
                (true, None, Some(d)) => out.push_str(d),
                (true, None, None) => errors.push(file.error(
                    Some(i + 1),
                    "",
                    format!("environment variable `{name}` is not set (use ${{{name}:-default}} for a default)"),
                )),
            }
            rest = &tail[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Where a YAML comment starts on a line: a `#` at the start or after a blank, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut prev_blank) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_blank => return Some(i),
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    None
}

/// A YAML error as a located config error.
pub(crate) fn yaml_error(file: &SourceFile, e: &serde_yaml::Error) -> ConfigError {
    let line = e.location().map(|l| l.line());
    // serde_yaml prefixes the location to the message; keep only the reason.
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    file.error(line, "", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            name: "t.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn interpolation() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        let f = file("a: ${TOKEN}\nb: ${MISSING:-dflt}\nc: $${LITERAL} $5\n");
        assert_eq!(
            interpolate(&f, &env).unwrap(),
            "a: s3cret\nb: dflt\nc: ${LITERAL} $5\n"
        );
        let errs = interpolate(&file("x: 1\ny: ${NOPE}\n"), &env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("`NOPE` is not set"));
    }

    #[test]
    fn find_line_locates_names() {
        let f = file("rules:\n  - name: a\n    notify: []\n  - name: \"b\"  # x\n  - { name: c, notify: [] }\n");
        assert_eq!(f.find_line("name", Some("c"), 1), Some(5));
        assert_eq!(f.find_line("name", Some("b"), 1), Some(4));
        assert_eq!(f.find_line("name", Some("a"), 1), Some(2));
        assert_eq!(f.find_line("name", Some("d"), 1), None);
    }
}
