//! Configuration loading: `trackrelay.yaml` plus rule files, read, interpolated (`${ENV}`,
//! `${file:PATH}`), and compiled into a validated [`Config`] (the data, in [`crate::settings`]).
//! Compiling reports every error at once, each with file, line and the rule or channel it is about.

mod compile;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::settings::Config;

/// The configuration `trackrelay serve` runs on when no file is given: log channel only.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");
/// Where the built-in configuration says it comes from in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<built-in default config>";

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

/// Loading is defined here, with the files, YAML and compiling it needs, so that [`crate::settings`]
/// stays data that the lower layers can read.
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

/// Replaces `${NAME}` and `${NAME:-default}` with environment values and `${file:PATH}` with a file's
/// content (without its trailing line break; a relative `PATH` is relative to `dir`, the config file's
/// folder); `$${` stands for a literal `${`. Comments are left alone. An unset variable without a default
/// and an unreadable file are errors, with the line they are on (never with the file's content).
pub fn interpolate(
    file: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
    dir: &Path,
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
            match substitute(&tail[..end], env, dir) {
                Ok(v) => out.push_str(&v),
                Err(message) => errors.push(file.error(Some(i + 1), "", message)),
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

/// The value of one `${spec}`: `file:PATH`, `NAME` or `NAME:-default`; or why there is none.
fn substitute(
    spec: &str,
    env: &dyn Fn(&str) -> Option<String>,
    dir: &Path,
) -> Result<String, String> {
    if let Some(path) = spec.strip_prefix("file:") {
        return read_secret_file(path, dir);
    }
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (valid, env(name), default) {
        (false, ..) => Err(format!("invalid variable name `{name}`")),
        (true, Some(v), _) => Ok(v),
        (true, None, Some(d)) => Ok(d.to_string()),
        (true, None, None) => Err(format!(
            "environment variable `{name}` is not set (use ${{{name}:-default}} for a default)"
        )),
    }
}

/// `${file:PATH}`: the file's one line (trailing line breaks dropped). Errors name the path and the
/// reason, never what the file holds: it is a secret.
fn read_secret_file(path: &str, dir: &Path) -> Result<String, String> {
    if path.is_empty() {
        return Err("`${file:}` names no file".into());
    }
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    };
    let text = std::fs::read_to_string(&full)
        .map_err(|e| format!("`${{file:{path}}}`: cannot read {}: {e}", full.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.contains(['\n', '\r']) {
        return Err(format!(
            "`${{file:{path}}}`: {} holds more than one line (a secret file holds one value)",
            full.display()
        ));
    }
    Ok(value.to_string())
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

/// What `check` (and the relay at start) warns of: settings that load but cannot work as written.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let two_way = cfg.channels.values().any(|c| c.kind.buttons());
    if two_way && cfg.ingest.authorization.is_none() {
        out.push(
            "ingest.authorization is unset while a Telegram channel is two-way: anyone who reaches the \
             relay can post events and positions, and a device attribute they send (a chat id) decides \
             which chat may ask where the device is; set ingest.authorization"
                .to_string(),
        );
    }
    for rule in cfg.rules.incident_rules() {
        let Some(inc) = &rule.incident else { continue };
        let at = format!("{}: rule '{}'", rule.origin, rule.name);
        let buttons = rule.targets.iter().all(|t| {
            cfg.channels
                .get(&t.channel)
                .is_some_and(|c| c.kind.acknowledges(rule.severity))
        });
        if cfg.public_url.is_none() && !buttons {
            out.push(format!(
                "{at}: incident messages carry no acknowledgement link: set public_url (the address phones reach the relay at); until then acknowledge with a two-way Telegram chat's button or /ack, a Pushover emergency, `trackrelay incidents ack ID` or the admin API"
            ));
        }
        for (i, e) in inc.policy.escalate.iter().enumerate() {
            if e.after >= inc.policy.resolve_after {
                out.push(format!(
                    "{at}: incident.escalate[{i}] after {} is not before resolve_after ({}): it only happens while events keep coming",
                    humantime::format_duration(e.after),
                    humantime::format_duration(inc.policy.resolve_after)
                ));
            }
        }
    }
    out
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
        let here = Path::new(".");
        assert_eq!(
            interpolate(&f, &env, here).unwrap(),
            "a: s3cret\nb: dflt\nc: ${LITERAL} $5\n"
        );
        let errs = interpolate(&file("x: 1\ny: ${NOPE}\n"), &env, here).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
        assert!(errs[0].message.contains("`NOPE` is not set"));
    }

    #[test]
    fn a_file_is_read_relative_to_the_config_folder_without_its_line_break() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("psk"), "Bearer 0123abcd\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/crlf"), "s3cret\r\n").unwrap();
        std::fs::write(dir.path().join("bare"), "x:y").unwrap();
        let abs = dir.path().join("bare").display().to_string();
        let f = file(&format!(
            "a: \"${{file:psk}}\"\nb: ${{file:sub/crlf}}\nc: ${{file:{abs}}} # ${{file:nope}}\n"
        ));
        let no_env = |_: &str| None;
        assert_eq!(
            interpolate(&f, &no_env, dir.path()).unwrap(),
            "a: \"Bearer 0123abcd\"\nb: s3cret\nc: x:y # ${file:nope}\n"
        );
        // A variable named `file` is still a variable when no `:` follows.
        let env = |k: &str| (k == "file").then(|| "v".to_string());
        assert_eq!(
            interpolate(&file("a: ${file}\n"), &env, dir.path()).unwrap(),
            "a: v\n"
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_at_its_line_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("two"), "first-secret\nsecond-secret\n").unwrap();
        let no_env = |_: &str| None;
        let f = file("x: 1\ny: ${file:missing}\nz: ${file:two}\nw: ${file:}\n");
        let errs = interpolate(&f, &no_env, dir.path()).unwrap_err();
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4)]);
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            shown[0].starts_with("t.yaml:2: `${file:missing}`: cannot read "),
            "{shown:?}"
        );
        assert!(shown[0].contains(&dir.path().join("missing").display().to_string()));
        assert!(shown[1].contains("holds more than one line"), "{shown:?}");
        assert!(shown[2].contains("names no file"), "{shown:?}");
        assert!(
            shown
                .iter()
                .all(|s| !s.contains("first-") && !s.contains("second-")),
            "{shown:?}"
        );
    }

    #[test]
    fn a_config_reads_its_secret_file_and_reports_a_missing_one_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook-psk"), "Bearer abc123\n").unwrap();
        let path = dir.path().join("t.yaml");
        let yaml = |psk: &str| {
            format!(
                "storage: {{ data_dir: \"{}\" }}\ningest:\n  authorization: \"${{file:{psk}}}\"\n",
                dir.path().display()
            )
        };
        std::fs::write(&path, yaml("webhook-psk")).unwrap();
        let cfg = Config::load_with_env(Some(&path), &|_| None).unwrap();
        assert_eq!(
            cfg.ingest.authorization.as_ref().map(|s| s.expose()),
            Some("Bearer abc123")
        );
        std::fs::write(&path, yaml("gone")).unwrap();
        let errs = Config::load_with_env(Some(&path), &|_| None).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].file, path.display().to_string());
        assert_eq!(errs.0[0].line, Some(3));
    }

    #[test]
    fn find_line_locates_names() {
        let f = file("rules:\n  - name: a\n    notify: []\n  - name: \"b\"  # x\n  - { name: c, notify: [] }\n");
        assert_eq!(f.find_line("name", Some("c"), 1), Some(5));
        assert_eq!(f.find_line("name", Some("b"), 1), Some(4));
        assert_eq!(f.find_line("name", Some("a"), 1), Some(2));
        assert_eq!(f.find_line("name", Some("d"), 1), None);
    }

    /// A rule whose every target can be acknowledged without a link (a Pushover emergency) needs no
    /// `public_url`; the same rule below critical, where Pushover does not ring until acknowledged, does.
    #[test]
    fn a_pushover_emergency_needs_no_link_and_a_lesser_message_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let load = |severity: &str| {
            let key = "u".repeat(30);
            std::fs::write(
                &path,
                format!(
                    "storage: {{ data_dir: \"{}\" }}\nchannels:\n  po: {{ type: pushover, token: {key}, user: {key} }}\n\
                     rules:\n  - name: theft\n    severity: {severity}\n    match: {{ type: alarm }}\n\
                     \x20   incident: {{ repeat: 30m }}\n    notify: [{{ channel: po }}]\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            let cfg = Config::load_with_env(Some(&path), &|_| None).unwrap();
            warnings(&cfg)
                .iter()
                .any(|w| w.contains("carry no acknowledgement link"))
        };
        assert!(!load("critical"));
        assert!(load("high"));
    }
}
