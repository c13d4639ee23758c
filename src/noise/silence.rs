//! Silences: mute notifications by matchers (device, group, rule, event type, channel) until a time,
//! with an author and a comment, like Alertmanager's. Stored in the store (shared by every instance),
//! created and expired through the admin API and `trackrelay silence`.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;

/// What a silence mutes; every matcher given must match, at least one must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// Device id (number) or name (glob, `Lena*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Device group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<i64>,
    /// Rule name (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Event type (glob, `alarm`, `geofence*`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Channel name (glob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Matchers {
    /// Checks the matchers: at least one, globs that compile.
    pub fn validate(&self) -> Result<(), String> {
        if self.device.is_none()
            && self.group.is_none()
            && self.rule.is_none()
            && self.event_type.is_none()
            && self.channel.is_none()
        {
            return Err(
                "a silence needs at least one matcher (device, group, rule, type, channel)".into(),
            );
        }
        for (what, g) in [
            ("device", &self.device),
            ("rule", &self.rule),
            ("type", &self.event_type),
            ("channel", &self.channel),
        ] {
            if let Some(g) = g {
                if g.trim().is_empty() {
                    return Err(format!("{what}: empty"));
                }
                Glob::new(g).map_err(|e| format!("{what}: `{g}`: {e}"))?;
            }
        }
        Ok(())
    }

    /// Reads matchers as stored (JSON) and checks them as when the silence was made. A silence whose
    /// matchers fail here (written by another version, damaged, an invalid glob) must mute nothing:
    /// the caller keeps it with [`Silence::unreadable`] set, never with empty matchers, which would
    /// mute everything.
    pub fn from_stored(json: &str) -> Result<Matchers, String> {
        let m: Matchers =
            serde_json::from_str(json).map_err(|e| format!("matchers unreadable: {e}"))?;
        m.validate()?;
        Ok(m)
    }

    /// Readable form: `device=42 rule=theft*`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.device {
            parts.push(format!("device={d}"));
        }
        if let Some(g) = self.group {
            parts.push(format!("group={g}"));
        }
        if let Some(r) = &self.rule {
            parts.push(format!("rule={r}"));
        }
        if let Some(t) = &self.event_type {
            parts.push(format!("type={t}"));
        }
        if let Some(c) = &self.channel {
            parts.push(format!("channel={c}"));
        }
        parts.join(" ")
    }
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Id (what `expire` takes).
    pub id: i64,
    /// What it mutes.
    pub matchers: Matchers,
    /// Start, unix ms.
    pub starts_at_ms: i64,
    /// End, unix ms: it stops applying then.
    pub ends_at_ms: i64,
    /// Who made it.
    pub author: String,
    /// Why.
    pub comment: String,
    /// When it was made, unix ms.
    pub created_at_ms: i64,
    /// Why its stored matchers cannot be used (see [`Matchers::from_stored`]); `matchers` is empty then.
    /// Such a silence never applies; it is listed with the state `unreadable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl Silence {
    /// A silence as read from the store, its matchers given as stored (see [`Matchers::from_stored`]).
    pub fn stored(
        id: i64,
        matchers: &str,
        starts_at_ms: i64,
        ends_at_ms: i64,
        author: String,
        comment: String,
        created_at_ms: i64,
    ) -> Silence {
        let (matchers, unreadable) = match Matchers::from_stored(matchers) {
            Ok(m) => (m, None),
            Err(reason) => (Matchers::default(), Some(reason)),
        };
        Silence {
            id,
            matchers,
            starts_at_ms,
            ends_at_ms,
            author,
            comment,
            created_at_ms,
            unreadable,
        }
    }

    /// Whether it applies at `now`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    /// The reason recorded on what it suppresses.
    pub fn reason(&self) -> String {
        format!(
            "silenced by silence #{} ({}) until {} by {}{}",
            self.id,
            self.matchers.describe(),
            rfc3339(self.ends_at_ms),
            self.author,
            if self.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", self.comment)
            }
        )
    }

    /// The JSON shape of the admin API and `silence list --json`.
    pub fn view(&self, now_ms: i64) -> SilenceView {
        SilenceView {
            id: self.id,
            matchers: self.unreadable.is_none().then(|| self.matchers.clone()),
            error: self.unreadable.clone(),
            starts_at: rfc3339(self.starts_at_ms),
            ends_at: rfc3339(self.ends_at_ms),
            author: self.author.clone(),
            comment: self.comment.clone(),
            created_at: rfc3339(self.created_at_ms),
            // Ended is final; before that, an unreadable silence is neither active nor pending.
            state: if now_ms >= self.ends_at_ms {
                "expired"
            } else if self.unreadable.is_some() {
                "unreadable"
            } else if now_ms < self.starts_at_ms {
                "pending"
            } else {
                "active"
            },
        }
    }
}

/// A silence as shown.
#[derive(Debug, Clone, Serialize)]
pub struct SilenceView {
    /// Id.
    pub id: i64,
    /// Matchers; `null` when they cannot be read (see `error`).
    pub matchers: Option<Matchers>,
    /// Why the stored matchers cannot be used (state `unreadable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// End, RFC 3339.
    pub ends_at: String,
    /// Author.
    pub author: String,
    /// Comment.
    pub comment: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// `active`, `pending`, `expired`, or `unreadable` (not ended, but mutes nothing; see `error`).
    pub state: &'static str,
}

/// A silence to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSilence {
    /// What it mutes.
    pub matchers: Matchers,
    /// Start, unix ms.
    pub starts_at_ms: i64,
    /// End, unix ms.
    pub ends_at_ms: i64,
    /// Who.
    pub author: String,
    /// Why.
    pub comment: String,
}

/// What a notification is, for silence matching.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Device id.
    pub device_id: i64,
    /// Device name, if known.
    pub device_name: &'a str,
    /// Device group id (0 = none).
    pub group_id: i64,
    /// Rule.
    pub rule: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Channel.
    pub channel: &'a str,
}

/// Silences compiled for matching.
#[derive(Debug, Default)]
pub struct SilenceSet {
    entries: Vec<(Silence, Compiled)>,
    unreadable: Vec<(i64, String)>,
}

#[derive(Debug)]
struct Compiled {
    device_id: Option<i64>,
    device: Option<GlobMatcher>,
    rule: Option<GlobMatcher>,
    event_type: Option<GlobMatcher>,
    channel: Option<GlobMatcher>,
}

fn glob(what: &str, g: &Option<String>) -> Result<Option<GlobMatcher>, String> {
    g.as_deref()
        .map(|g| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{what}: `{g}`: {e}"))
        })
        .transpose()
}

impl Compiled {
    /// Compiles a silence's matchers; fails (rather than leaving a matcher out, which would widen
    /// the silence) when any cannot be used.
    fn new(s: &Silence) -> Result<Compiled, String> {
        if let Some(reason) = &s.unreadable {
            return Err(reason.clone());
        }
        let m = &s.matchers;
        m.validate()?;
        let device_id = m.device.as_deref().and_then(|d| d.parse::<i64>().ok());
        Ok(Compiled {
            device_id,
            device: if device_id.is_some() {
                None
            } else {
                glob("device", &m.device)?
            },
            rule: glob("rule", &m.rule)?,
            event_type: glob("type", &m.event_type)?,
            channel: glob("channel", &m.channel)?,
        })
    }
}

impl SilenceSet {
    /// Compiles the silences that have not ended at `now` (ended ones never apply again). A silence
    /// whose matchers cannot be used is left out (it mutes nothing) and listed by [`Self::unreadable`].
    pub fn new(silences: Vec<Silence>, now_ms: i64) -> SilenceSet {
        let mut set = SilenceSet::default();
        for s in silences.into_iter().filter(|s| s.ends_at_ms > now_ms) {
            match Compiled::new(&s) {
                Ok(c) => set.entries.push((s, c)),
                Err(reason) => set.unreadable.push((s.id, reason)),
            }
        }
        set
    }

    /// The silences left out because their matchers cannot be used: (id, why).
    pub fn unreadable(&self) -> &[(i64, String)] {
        &self.unreadable
    }

    /// Number of silences held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first silence that applies to `s` at `now`.
    pub fn find(&self, s: &Subject<'_>, now_ms: i64) -> Option<&Silence> {
        self.entries
            .iter()
            .find(|(silence, c)| {
                silence.active_at(now_ms)
                    && c.device_id.is_none_or(|id| id == s.device_id)
                    && c.device.as_ref().is_none_or(|g| g.is_match(s.device_name))
                    && silence.matchers.group.is_none_or(|g| g == s.group_id)
                    && c.rule.as_ref().is_none_or(|g| g.is_match(s.rule))
                    && c.event_type
                        .as_ref()
                        .is_none_or(|g| g.is_match(s.event_type))
                    && c.channel.as_ref().is_none_or(|g| g.is_match(s.channel))
            })
            .map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: i64, m: Matchers, from: i64, to: i64) -> Silence {
        Silence {
            id,
            matchers: m,
            starts_at_ms: from,
            ends_at_ms: to,
            author: "ops".into(),
            comment: "maintenance".into(),
            created_at_ms: from,
            unreadable: None,
        }
    }

    fn subject<'a>(device_id: i64, name: &'a str, rule: &'a str) -> Subject<'a> {
        Subject {
            device_id,
            device_name: name,
            group_id: 3,
            rule,
            event_type: "alarm",
            channel: "phone",
        }
    }

    #[test]
    fn matchers_all_apply_and_time_bounds() {
        let set = SilenceSet::new(
            vec![
                silence(
                    1,
                    Matchers {
                        device: Some("42".into()),
                        rule: Some("theft*".into()),
                        ..Default::default()
                    },
                    1000,
                    2000,
                ),
                silence(
                    2,
                    Matchers {
                        device: Some("Lena*".into()),
                        group: Some(3),
                        ..Default::default()
                    },
                    1000,
                    2000,
                ),
            ],
            1500,
        );
        assert_eq!(
            set.find(&subject(42, "x", "theft-night"), 1500)
                .map(|s| s.id),
            Some(1)
        );
        assert_eq!(
            set.find(&subject(42, "x", "geofence"), 1500).map(|s| s.id),
            None
        );
        assert_eq!(
            set.find(&subject(7, "Lena's bike", "any"), 1500)
                .map(|s| s.id),
            Some(2)
        );
        // Not before the start, not at or after the end.
        assert!(set.find(&subject(42, "x", "theft"), 999).is_none());
        assert!(set.find(&subject(42, "x", "theft"), 2000).is_none());
        // Ended silences are not even held.
        assert!(SilenceSet::new(
            vec![silence(
                3,
                Matchers {
                    rule: Some("*".into()),
                    ..Default::default()
                },
                0,
                10
            )],
            10
        )
        .is_empty());
    }

    /// A silence whose glob does not compile (made before a check existed, or by another version)
    /// mutes nothing: leaving the matcher out would widen it to every rule.
    #[test]
    fn an_invalid_glob_mutes_nothing() {
        let bad = |id, m| silence(id, m, 0, 10_000);
        let set = SilenceSet::new(
            vec![
                bad(
                    1,
                    Matchers {
                        rule: Some("theft[".into()),
                        ..Default::default()
                    },
                ),
                bad(
                    2,
                    Matchers {
                        device: Some("Lena[".into()),
                        group: Some(3),
                        ..Default::default()
                    },
                ),
                bad(3, Matchers::default()),
            ],
            100,
        );
        for (id, name, rule) in [(42, "x", "theft"), (7, "Lena's bike", "any")] {
            assert!(set.find(&subject(id, name, rule), 100).is_none());
        }
        assert!(set.is_empty());
        let ids: Vec<i64> = set.unreadable().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(set.unreadable()[0].1.starts_with("rule: `theft[`"));
    }

    #[test]
    fn validation() {
        assert!(Matchers::default().validate().is_err());
        assert!(Matchers {
            rule: Some("[".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(Matchers {
            channel: Some("ops".into()),
            ..Default::default()
        }
        .validate()
        .is_ok());
        let s = silence(
            9,
            Matchers {
                device: Some("42".into()),
                ..Default::default()
            },
            0,
            1_700_000_000_000,
        );
        assert!(
            s.reason().contains("#9")
                && s.reason().contains("device=42")
                && s.reason().contains("maintenance")
        );
    }
}
