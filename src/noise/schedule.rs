//! Schedules: when a rule may notify, as time-of-day windows on weekdays in an IANA time zone.
//!
//! A window is written `"mon-fri 22:00-06:00"` (days optional: every day). A window whose end is not
//! after its start runs past midnight into the next day and belongs to the day it starts on. Times are
//! wall-clock times in the schedule's zone, so "07:00" stays 07:00 across daylight-saving changes; an
//! end that falls into a spring-forward gap ends when the clock jumps, and one that occurs twice in an
//! autumn night ends at its first occurrence.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// What happens to notifications while a rule is muted by its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenMuted {
    /// Not sent; recorded as suppressed.
    Drop,
    /// Sent when the muted period ends.
    Defer,
}

/// One time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Weekdays it starts on, Monday = bit 0.
    days: u8,
    /// Start, minutes after midnight.
    from: u32,
    /// End, minutes after midnight (1440 = midnight at the end of the day).
    to: u32,
    /// As written, for messages.
    text: String,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Parses `"[days ]HH:MM-HH:MM"`; days are `mon`..`sun`, ranges (`mon-fri`) and lists (`sat,sun`).
    pub fn parse(s: &str) -> Result<Window, String> {
        let text = s.trim();
        let (days_text, times) = match text.rsplit_once(' ') {
            Some((d, t)) => (Some(d.trim()), t),
            None => (None, text),
        };
        let days = match days_text {
            None => 0x7f,
            Some(d) => parse_days(d)?,
        };
        let (from, to) = times.split_once('-').ok_or_else(|| {
            format!("`{text}`: expected a time range like `22:00-06:00`, optionally after days like `mon-fri`")
        })?;
        let from = parse_minutes(from).map_err(|e| format!("`{text}`: {e}"))?;
        let to = parse_minutes(to).map_err(|e| format!("`{text}`: {e}"))?;
        if from == 1440 {
            return Err(format!("`{text}`: a window cannot start at 24:00"));
        }
        Ok(Window {
            days,
            from,
            to,
            text: text.to_string(),
        })
    }

    fn on(&self, day: chrono::Weekday) -> bool {
        self.days & (1 << day.num_days_from_monday()) != 0
    }

    /// Runs past midnight (or is a whole day when start and end are equal).
    fn crosses_midnight(&self) -> bool {
        self.to <= self.from
    }

    /// Whether the local date and time fall in the window.
    fn contains(&self, date: NaiveDate, minute: u32) -> bool {
        if self.crosses_midnight() {
            (self.on(date.weekday()) && minute >= self.from)
                || (self.on(date.pred_opt().unwrap_or(date).weekday()) && minute < self.to)
        } else {
            self.on(date.weekday()) && minute >= self.from && minute < self.to
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_days(s: &str) -> Result<u8, String> {
    let day = |d: &str| {
        DAY_NAMES
            .iter()
            .position(|n| d.trim().to_ascii_lowercase().starts_with(n))
            .ok_or_else(|| format!("`{d}` is not a weekday (mon, tue, wed, thu, fri, sat, sun)"))
    };
    let mut bits = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut i = a;
                loop {
                    bits |= 1 << i;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => bits |= 1 << day(part)?,
        }
    }
    Ok(bits)
}

fn parse_minutes(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a time (HH:MM)"))?;
    let (h, m): (u32, u32) = match (h.parse(), m.parse()) {
        (Ok(h), Ok(m)) => (h, m),
        _ => return Err(format!("`{s}` is not a time (HH:MM)")),
    };
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(format!("`{s}` is not a time of day (00:00 to 24:00)"));
    }
    Ok(h * 60 + m)
}

/// A rule's schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Zone the windows are read in.
    pub timezone: Tz,
    /// When set, the rule notifies only inside these windows.
    pub active: Vec<Window>,
    /// The rule is muted inside these windows (quiet hours).
    pub quiet: Vec<Window>,
    /// What happens while muted.
    pub when_muted: WhenMuted,
}

impl Schedule {
    /// Whether notifications are muted at `at`.
    pub fn muted_at(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone);
        let (date, minute) = (local.date_naive(), minutes_of(local.time()));
        let active = self.active.is_empty() || self.active.iter().any(|w| w.contains(date, minute));
        !active || self.quiet.iter().any(|w| w.contains(date, minute))
    }

    /// Why `at` is muted, for logs and `explain`.
    pub fn reason(&self, at: DateTime<Utc>) -> String {
        let local = at.with_timezone(&self.timezone);
        let (date, minute) = (local.date_naive(), minutes_of(local.time()));
        if let Some(w) = self.quiet.iter().find(|w| w.contains(date, minute)) {
            return format!("quiet hours `{w}` ({})", self.timezone);
        }
        let windows: Vec<String> = self.active.iter().map(|w| format!("`{w}`")).collect();
        format!(
            "outside the active hours {} ({})",
            windows.join(", "),
            self.timezone
        )
    }

    /// The first instant after `at` at which notifications are no longer muted, within the next eight
    /// days; `None` when there is none (a schedule that never lets anything through).
    pub fn next_open(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = at.with_timezone(&self.timezone).date_naive();
        let mut boundaries: Vec<DateTime<Utc>> = Vec::new();
        for offset in -1..=8 {
            let Some(date) = today.checked_add_signed(ChronoDuration::days(offset)) else {
                continue;
            };
            for w in self.active.iter().chain(&self.quiet) {
                for (day, minute) in [(date, w.from), (date, w.to)] {
                    boundaries.extend(self.instant(day, minute));
                }
                if w.crosses_midnight() {
                    if let Some(next) = date.succ_opt() {
                        boundaries.extend(self.instant(next, w.to));
                    }
                }
            }
        }
        boundaries.retain(|b| *b > at);
        boundaries.sort_unstable();
        boundaries.dedup();
        boundaries.into_iter().find(|b| !self.muted_at(*b))
    }

    /// The instant of a local wall-clock time: the earlier of two in an autumn night, and the moment
    /// the clock jumps for a time inside a spring-forward gap.
    fn instant(&self, date: NaiveDate, minute: u32) -> Option<DateTime<Utc>> {
        let midnight = date.and_hms_opt(0, 0, 0)?;
        let local = midnight + ChronoDuration::minutes(minute as i64);
        // Walk forward through a gap (at most a few hours anywhere): the first wall time that exists
        // after it is the moment of the jump.
        (0..=(4 * 60)).find_map(|skip| {
            let t = local + ChronoDuration::minutes(skip);
            self.timezone
                .from_local_datetime(&t)
                .earliest()
                .map(|dt| dt.with_timezone(&Utc))
        })
    }
}

/// Minutes since midnight.
fn minutes_of(t: NaiveTime) -> u32 {
    use chrono::Timelike;
    t.hour() * 60 + t.minute()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sched(active: &[&str], quiet: &[&str]) -> Schedule {
        Schedule {
            timezone: "Europe/Vienna".parse().unwrap(),
            active: active.iter().map(|w| Window::parse(w).unwrap()).collect(),
            quiet: quiet.iter().map(|w| Window::parse(w).unwrap()).collect(),
            when_muted: WhenMuted::Defer,
        }
    }

    #[test]
    fn windows_parse_days_and_times() {
        let w = Window::parse("mon-fri 08:00-18:00").unwrap();
        assert_eq!((w.days, w.from, w.to), (0b0011111, 480, 1080));
        let w = Window::parse("sat,sun 00:00-24:00").unwrap();
        assert_eq!((w.days, w.from, w.to), (0b1100000, 0, 1440));
        let w = Window::parse("fri-mon 22:00-06:00").unwrap();
        assert_eq!(w.days, 0b1110001);
        assert_eq!(Window::parse("22:00-06:00").unwrap().days, 0x7f);
        for bad in [
            "22:00",
            "mon 25:00-06:00",
            "funday 10:00-11:00",
            "10:60-11:00",
            "24:00-06:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn night_window_runs_past_midnight() {
        // Theft alarms only 22:00-06:00 Vienna (CET = UTC+1 in January).
        let s = sched(&["22:00-06:00"], &[]);
        assert!(s.muted_at(utc("2026-01-14T20:59:00Z"))); // 21:59 local
        assert!(!s.muted_at(utc("2026-01-14T21:00:00Z"))); // 22:00
        assert!(!s.muted_at(utc("2026-01-15T04:59:00Z"))); // 05:59 next day
        assert!(s.muted_at(utc("2026-01-15T05:00:00Z"))); // 06:00
        assert_eq!(
            s.next_open(utc("2026-01-15T10:00:00Z")),
            Some(utc("2026-01-15T21:00:00Z"))
        );
    }

    #[test]
    fn weekdays_are_local_weekdays() {
        // Friday 23:30 UTC is Saturday 00:30 in Vienna: a weekday-only window does not apply.
        let s = sched(&["mon-fri 00:00-24:00"], &[]);
        assert!(s.muted_at(utc("2026-01-16T23:30:00Z")));
        assert!(!s.muted_at(utc("2026-01-16T22:30:00Z")));
        // Deferred to Monday 00:00 local = Sunday 23:00 UTC.
        assert_eq!(
            s.next_open(utc("2026-01-17T12:00:00Z")),
            Some(utc("2026-01-18T23:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_across_spring_forward() {
        // 2026-03-29: Vienna jumps from 02:00 CET to 03:00 CEST. Quiet 22:00-07:00: a mail at 23:00
        // CET on Saturday waits until 07:00 CEST on Sunday, which is 05:00 UTC, not 06:00.
        let s = sched(&[], &["22:00-07:00"]);
        let at = utc("2026-03-28T22:00:00Z");
        assert!(s.muted_at(at));
        assert_eq!(s.next_open(at), Some(utc("2026-03-29T05:00:00Z")));
        assert!(s.muted_at(utc("2026-03-29T04:59:00Z")));
        assert!(!s.muted_at(utc("2026-03-29T05:00:00Z")));
    }

    #[test]
    fn window_ending_in_the_gap_ends_at_the_jump() {
        // 01:00-02:30 on the spring-forward night: 02:30 never happens; the window ends at the jump
        // (02:00 CET = 03:00 CEST = 01:00 UTC).
        let s = sched(&[], &["01:00-02:30"]);
        assert!(s.muted_at(utc("2026-03-29T00:30:00Z")));
        assert_eq!(
            s.next_open(utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_across_fall_back() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET. The night is an hour longer: 23:00 CEST Saturday
        // (21:00 UTC) waits until 07:00 CET (06:00 UTC), nine hours.
        let s = sched(&[], &["22:00-07:00"]);
        let at = utc("2026-10-24T21:00:00Z");
        assert_eq!(s.next_open(at), Some(utc("2026-10-25T06:00:00Z")));
        // Both 02:30s of that night are quiet.
        assert!(s.muted_at(utc("2026-10-25T00:30:00Z")));
        assert!(s.muted_at(utc("2026-10-25T01:30:00Z")));
    }

    #[test]
    fn active_and_quiet_together_and_never_open() {
        let s = sched(&["mon-fri 08:00-18:00"], &["12:00-13:00"]);
        assert!(s.muted_at(utc("2026-01-14T11:30:00Z"))); // 12:30 Wed, lunch
        assert_eq!(
            s.next_open(utc("2026-01-14T11:30:00Z")),
            Some(utc("2026-01-14T12:00:00Z"))
        );
        assert!(s
            .reason(utc("2026-01-14T11:30:00Z"))
            .contains("quiet hours"));
        assert!(s
            .reason(utc("2026-01-14T20:00:00Z"))
            .contains("outside the active hours"));
        let never = sched(&["mon 10:00-11:00"], &["00:00-24:00"]);
        assert_eq!(never.next_open(utc("2026-01-14T11:30:00Z")), None);
    }
}
