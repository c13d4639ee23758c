//! What the console's pages show, made from the store's rows: times in the configured time zone, a
//! message's text as it will read, the small activity chart. Pure functions, tested here.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::notification::Content;
use crate::store::ActivityBucket;

/// `2026-05-15 02:41:05` in `tz`, for a unix-ms time.
pub fn time(ms: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// An RFC 3339 time (as the store lists them) shown like [`time`].
pub fn rfc3339(s: &str, tz: Tz) -> String {
    DateTime::parse_from_rfc3339(s)
        .map(|t| time(t.timestamp_millis(), tz))
        .unwrap_or_else(|_| s.to_string())
}

/// A `datetime-local` form value (`2026-05-15T02:41`, seconds optional) read in `tz`, as unix ms.
/// An empty value is `Ok(None)`.
pub fn parse_local(s: &str, tz: Tz) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| format!("`{s}` is not a date and time (2026-05-15T02:41)"))?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| Some(t.timestamp_millis()))
        .ok_or_else(|| format!("`{s}` does not exist in {tz} (a clock change)"))
}

/// How long ago `ms` was, in words: `40 s`, `12 min`, `3 h`, `2 d`.
pub fn ago(ms: i64, now_ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// An incident's acknowledgement links in a message, with their tokens hidden: a link is a credential
/// that acknowledges without a login, and the console shows messages to viewers too.
pub fn redact_links(text: &str) -> String {
    static LINK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"/ack/[0-9A-Fa-f]{32}").expect("a valid pattern")
    });
    LINK.replace_all(text, "/ack/(link hidden)").into_owned()
}

/// A message as a person reads it: a title (mail subject) if it has one, and its text (acknowledgement
/// links hidden, see [`redact_links`]). A webhook's body is shown as sent (JSON pretty-printed).
pub fn content(c: &Content) -> Value {
    let (kind, title, text) = c.describe();
    json!({ "kind": kind, "title": title, "text": redact_links(&text) })
}

/// Width and height of the activity chart's drawing, in SVG units.
const CHART: (f64, f64) = (720.0, 90.0);

/// The activity chart: one pair of bars a bucket (events, deliveries) over `buckets` buckets of
/// `bucket_ms` ending at `now_ms`, scaled to the busiest bucket. Buckets without events are empty.
pub fn chart(rows: &[ActivityBucket], now_ms: i64, bucket_ms: i64, buckets: usize) -> Value {
    let first = (now_ms / bucket_ms - buckets as i64 + 1) * bucket_ms;
    let mut events = vec![0u64; buckets];
    let mut deliveries = vec![0u64; buckets];
    for r in rows {
        let i = (r.start_ms - first).div_euclid(bucket_ms);
        if (0..buckets as i64).contains(&i) {
            events[i as usize] += r.events;
            deliveries[i as usize] += r.deliveries;
        }
    }
    let max = events
        .iter()
        .chain(&deliveries)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let w = CHART.0 / buckets as f64;
    let bar = |i: usize, n: u64, offset: f64| {
        let h = (n as f64 / max as f64 * CHART.1).max(if n > 0 { 1.0 } else { 0.0 });
        json!({ "x": format!("{:.1}", i as f64 * w + offset), "y": format!("{:.1}", CHART.1 - h),
                "w": format!("{:.1}", (w / 2.0 - 0.2).max(0.3)), "h": format!("{h:.1}"), "n": n })
    };
    let bars: Vec<Value> = (0..buckets)
        .filter(|&i| events[i] + deliveries[i] > 0)
        .flat_map(|i| {
            [
                json!({ "kind": "events", "bar": bar(i, events[i], 0.0) }),
                json!({ "kind": "deliveries", "bar": bar(i, deliveries[i], w / 2.0) }),
            ]
        })
        .collect();
    json!({
        "width": CHART.0, "height": CHART.1, "bars": bars, "max": max,
        "events": events.iter().sum::<u64>(), "deliveries": deliveries.iter().sum::<u64>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start_ms: i64, events: u64, deliveries: u64) -> ActivityBucket {
        ActivityBucket {
            start_ms,
            events,
            deliveries,
            delivered: deliveries,
            dead: 0,
            suppressed: 0,
        }
    }

    #[test]
    fn the_chart_places_and_scales_buckets() {
        let m = 60_000;
        let now = 1_000 * m + 30_000;
        // The last bucket is the current minute; one 3 minutes ago; one outside the range.
        let rows = [
            bucket(1_000 * m, 2, 4),
            bucket(997 * m, 1, 1),
            bucket(900 * m, 9, 9),
        ];
        let c = chart(&rows, now, m, 10);
        assert_eq!(c["events"], 3);
        assert_eq!(c["deliveries"], 5);
        assert_eq!(c["max"], 4);
        let bars = c["bars"].as_array().unwrap();
        assert_eq!(bars.len(), 4);
        // The busiest bar is full height, at the last slot's second half.
        let full = &bars[3]["bar"];
        assert_eq!(full["h"], "90.0");
        assert_eq!(full["x"], format!("{:.1}", 9.0 * 72.0 + 36.0));
        // Three minutes before the last slot.
        assert_eq!(bars[0]["bar"]["x"], format!("{:.1}", 6.0 * 72.0));
        assert_eq!(bars[0]["bar"]["h"], "22.5");
    }

    #[test]
    fn local_times_read_in_the_zone() {
        let tz: Tz = "Europe/Vienna".parse().unwrap();
        let ms = parse_local("2026-05-15T02:41", tz).unwrap().unwrap();
        assert_eq!(time(ms, tz), "2026-05-15 02:41:00");
        assert_eq!(time(ms, chrono_tz::UTC), "2026-05-15 00:41:00");
        assert_eq!(parse_local("  ", tz), Ok(None));
        assert!(parse_local("yesterday", tz)
            .unwrap_err()
            .contains("yesterday"));
        // 02:30 does not exist on the day clocks go forward.
        assert!(parse_local("2026-03-29T02:30", tz).is_err());
    }

    #[test]
    fn ages_read_in_words() {
        assert_eq!(ago(0, 59_000), "59 s");
        assert_eq!(ago(0, 600_000), "10 min");
        assert_eq!(ago(0, 3 * 3_600_000), "3 h");
        assert_eq!(ago(0, 49 * 3_600_000), "2 d");
    }

    #[test]
    fn acknowledgement_links_are_hidden() {
        let c = Content::Log {
            text: "Theft! http://r.example/ack/0123456789abcdef0123456789ABCDEF ok".into(),
        };
        assert_eq!(
            content(&c)["text"],
            "Theft! http://r.example/ack/(link hidden) ok"
        );
    }

    #[test]
    fn webhook_bodies_show_pretty() {
        let c = Content::Webhook {
            body: "{\"a\":1}".into(),
            content_type: "application/json".into(),
            message: None,
        };
        let v = content(&c);
        assert_eq!(v["text"], "{\n  \"a\": 1\n}");
        assert_eq!(v["title"], "application/json");
    }
}
