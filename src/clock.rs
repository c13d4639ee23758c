//! Wall-clock time as the rest of the crate keeps it: Unix milliseconds, shown as RFC 3339.
//!
//! Layer 0: depends on no other module of the crate, so every layer may use it.

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
