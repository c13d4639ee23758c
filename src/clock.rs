//! Wall-clock time as the rest of the crate keeps it: Unix milliseconds, shown as RFC 3339.
//!
//! Layer 0: depends on no other module of the crate, so every layer may use it.

use std::sync::atomic::{AtomicI64, Ordering};

/// How far this process's clock is ahead of the wall clock, ms: zero unless [`advance`] moved it.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Unix milliseconds now: the wall clock, plus what [`advance`] added.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + OFFSET_MS.load(Ordering::Relaxed)
}

/// Moves this process's clock forward by `ms` (never back: a negative value is ignored). For tests and
/// drills that need an incident's five-minute repeat without waiting five minutes: every part of the
/// relay reads [`now_ms`], so intake, timers and deliveries move together. The relay never calls it.
pub fn advance(ms: i64) {
    OFFSET_MS.fetch_add(ms.max(0), Ordering::Relaxed);
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
