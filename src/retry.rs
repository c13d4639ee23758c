//! The retry policy as data: exponential backoff with jitter, an attempt cap, an age cap, and
//! `Retry-After` honoured within a clamp. Deciding is pure; the deliver worker applies the decision.

use std::time::Duration;

use crate::config_raw::RawRetry;

/// Attempts in all before a transiently failing delivery is dead: with the default backoff (2 s doubling
/// to 15 min) 100 attempts span about a day, so [`DEFAULT_MAX_AGE`] is what usually ends them.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 100;
/// A theft alarm a day old is no longer news; give up then.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// First wait: short, since most outages are blips.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Longest `Retry-After` obeyed; a peer asking for more is retried at this bound.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Backoffs are spread by ±20% so retries after an outage do not arrive as one wave.
pub const JITTER: f64 = 0.2;

/// A channel's retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Give up once the delivery is this old.
    pub max_age: Duration,
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Longest `Retry-After` obeyed.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_age: DEFAULT_MAX_AGE,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again after this long.
    RetryIn(Duration),
    /// Give up: dead letter, with the reason.
    Dead(String),
}

impl RetryPolicy {
    /// This policy with the overrides of `raw` applied.
    pub fn with(&self, raw: &RawRetry) -> RetryPolicy {
        RetryPolicy {
            max_attempts: raw.max_attempts.unwrap_or(self.max_attempts).max(1),
            max_age: raw.max_age.unwrap_or(self.max_age),
            initial_backoff: raw.initial_backoff.unwrap_or(self.initial_backoff),
            max_backoff: raw.max_backoff.unwrap_or(self.max_backoff),
            max_retry_after: raw.max_retry_after.unwrap_or(self.max_retry_after),
        }
    }

    /// The backoff before attempt `attempts + 1`, `jitter` in [-1, 1] scaling the ±20% spread.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        let base = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        let spread = base * JITTER * jitter.clamp(-1.0, 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }

    /// Decides after a transient failure of attempt number `attempts` (1-based) of a delivery `age` old.
    pub fn after_transient(
        &self,
        attempts: u32,
        age: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
        reason: &str,
    ) -> Decision {
        if attempts >= self.max_attempts {
            let s = if attempts == 1 { "" } else { "s" };
            return Decision::Dead(format!("gave up after {attempts} attempt{s}: {reason}"));
        }
        let wait = match retry_after {
            Some(ra) => ra.min(self.max_retry_after),
            None => self.backoff(attempts, jitter),
        };
        if age + wait > self.max_age {
            return Decision::Dead(format!(
                "gave up after {} (max age {}): {reason}",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(self.max_age)
            ));
        }
        Decision::RetryIn(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=7).map(|a| p.backoff(a, 0.0).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs_f64(9.6));
        assert_eq!(p.backoff(3, -1.0), Duration::from_secs_f64(6.4));
    }

    #[test]
    fn retry_after_is_honoured_within_the_clamp() {
        let p = policy();
        let d =
            |ra| p.after_transient(1, Duration::ZERO, Some(Duration::from_secs(ra)), 0.0, "429");
        assert_eq!(d(7), Decision::RetryIn(Duration::from_secs(7)));
        assert_eq!(d(100_000), Decision::RetryIn(Duration::from_secs(300)));
    }

    #[test]
    fn gives_up_on_attempts_and_age() {
        let p = policy();
        assert!(
            matches!(p.after_transient(5, Duration::ZERO, None, 0.0, "x"), Decision::Dead(r) if r.contains("5 attempts"))
        );
        let old = Duration::from_secs(3599);
        assert!(
            matches!(p.after_transient(2, old, None, 0.0, "x"), Decision::Dead(r) if r.contains("max age"))
        );
        assert_eq!(
            p.after_transient(2, Duration::from_secs(10), None, 0.0, "x"),
            Decision::RetryIn(Duration::from_secs(4))
        );
    }

    #[test]
    fn overrides_apply() {
        let raw = RawRetry {
            max_attempts: Some(0),
            initial_backoff: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let p = RetryPolicy::default().with(&raw);
        assert_eq!(p.max_attempts, 1, "at least one attempt");
        assert_eq!(p.initial_backoff, Duration::from_millis(100));
        assert_eq!(p.max_age, DEFAULT_MAX_AGE);
    }
}
