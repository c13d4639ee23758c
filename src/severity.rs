//! One severity scale for every rule (`severity: critical | high | normal | low`), and the numeric
//! scales the push services map it to (ntfy, Pushover and Gotify priorities), each with per-channel
//! overrides (`priorities: { critical: 5, low: 1 }`) checked against the service's range.
//!
//! What each channel kind does with a severity is written in its own file; the table of all of them is
//! in `docs/channels.md` ("Severity").

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// How urgent a rule's messages are. The default is [`Severity::Normal`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone must act now, day or night (a theft alarm): rings through Do Not Disturb where the
    /// service can.
    Critical,
    /// Important, with sound (a device tampered with).
    High,
    /// The default: an ordinary notification (a geofence entry).
    #[default]
    Normal,
    /// Informational: delivered quietly (a battery report).
    Low,
}

impl Severity {
    /// Every severity, from the most to the least urgent.
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Normal,
        Severity::Low,
    ];

    /// Its name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Normal => "normal",
            Severity::Low => "low",
        }
    }

    /// Its place in [`Severity::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel's `priorities:` as written: a number for some severities, the kind's default for the
/// others.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriorities {
    /// For `critical`.
    pub critical: Option<i64>,
    /// For `high`.
    pub high: Option<i64>,
    /// For `normal`.
    pub normal: Option<i64>,
    /// For `low`.
    pub low: Option<i64>,
}

/// A severity → priority table, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priorities([i64; 4]);

impl Priorities {
    /// The kind's `defaults` (critical, high, normal, low) with the overrides of `raw`; every value
    /// must lie in `range` (else a `priorities.<severity>: …` problem is pushed to `errors`).
    pub fn compile(
        raw: Option<&RawPriorities>,
        defaults: [i64; 4],
        range: RangeInclusive<i64>,
        errors: &mut Vec<String>,
    ) -> Priorities {
        let mut out = defaults;
        if let Some(r) = raw {
            for (s, v) in Severity::ALL
                .iter()
                .zip([r.critical, r.high, r.normal, r.low])
            {
                let Some(v) = v else { continue };
                if range.contains(&v) {
                    out[s.index()] = v;
                } else {
                    errors.push(format!(
                        "priorities.{s}: {v} is out of range ({} to {})",
                        range.start(),
                        range.end()
                    ));
                }
            }
        }
        Priorities(out)
    }

    /// The priority of `s`.
    pub fn get(&self, s: Severity) -> i64 {
        self.0[s.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_order_and_default() {
        assert_eq!(Severity::default(), Severity::Normal);
        assert!(Severity::Critical < Severity::Low);
        let parsed: Vec<Severity> = serde_yaml::from_str("[critical, high, normal, low]").unwrap();
        assert_eq!(parsed, Severity::ALL);
        assert!(serde_yaml::from_str::<Severity>("urgent").is_err());
        assert_eq!(Severity::High.to_string(), "high");
    }

    #[test]
    fn overrides_are_checked_against_the_range() {
        let mut errors = Vec::new();
        let raw: RawPriorities = serde_yaml::from_str("{ critical: 4, low: 0 }").unwrap();
        let p = Priorities::compile(Some(&raw), [5, 4, 3, 2], 1..=5, &mut errors);
        assert_eq!(p.get(Severity::Critical), 4);
        assert_eq!(p.get(Severity::High), 4);
        assert_eq!(
            p.get(Severity::Low),
            2,
            "a rejected value keeps the default"
        );
        assert_eq!(errors, ["priorities.low: 0 is out of range (1 to 5)"]);
        let none = Priorities::compile(None, [5, 4, 3, 2], 1..=5, &mut errors);
        assert_eq!(none.get(Severity::Normal), 3);
        assert!(serde_yaml::from_str::<RawPriorities>("{ urgent: 5 }").is_err());
    }
}
