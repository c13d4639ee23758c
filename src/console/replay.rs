//! The rule tester's "Replay a period": the rules as the configuration files have them now, run by
//! [`crate::backtest`] over the events the store kept between two days, reported on the tester's page.
//! Read-only (viewers may run it), one at a time, for at most [`MAX_DAYS`] days and [`TIME_LIMIT`]:
//! past that it reports what it replayed so far.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{form, tools::tester_page, Shared};
use crate::backtest::{history::Source, parse_when, run, Options};

/// The longest period replayed at once, in days.
pub const MAX_DAYS: i64 = 31;

/// How long a replay runs before it reports what it replayed so far.
pub const TIME_LIMIT: Duration = Duration::from_secs(30);

/// The form: two days (`YYYY-MM-DD`, in the configured zone; both included).
#[derive(Deserialize, Default)]
pub struct ReplayForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `POST /console/tester/replay`: the report of a replay of the stored events, on the tester's page.
pub async fn replay(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (s, f): (_, ReplayForm) = match form(&c, &headers, &body, false) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match outcome(&c, &f).await {
        Ok(v) => tester_page(&c, &s, "", None, None, None, Some(v)).await,
        Err(e) => tester_page(&c, &s, "", None, Some(e), None, None).await,
    }
}

/// Runs the replay the form asks for; the outcome as JSON (see [`crate::backtest::Outcome`]).
async fn outcome(c: &super::Console, f: &ReplayForm) -> Result<Value, String> {
    let _one = c
        .replays
        .try_acquire()
        .map_err(|_| "a replay is running already; try again when it is done".to_string())?;
    let (path, tz, store) = {
        let rt = c.admin.pipeline.shared.get();
        (
            rt.config.path.clone(),
            rt.config.timezone,
            c.admin.pipeline.store.clone(),
        )
    };
    let day = |s: &str| {
        chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| format!("`{}` is not a day (2026-11-01)", s.trim()))
    };
    let (first, last) = (day(&f.from)?, day(&f.to)?);
    // Calendar days: a month across a clock change is still a month.
    if (last - first).num_days() >= MAX_DAYS {
        return Err(format!("at most {MAX_DAYS} days at once"));
    }
    let from = parse_when(&first.to_string(), tz, false).map_err(|e| e.to_string())?;
    let until = parse_when(&last.to_string(), tz, true).map_err(|e| e.to_string())?;
    let config = crate::settings::Config::load(path.as_deref())
        .map_err(|e| format!("the configuration files do not load now: {e}"))?;
    let ms = |t: i64| crate::clock::rfc3339(t);
    let options = Options {
        config,
        compare: None,
        source: Source::Store,
        from: Some(ms(from)),
        to: Some(ms(until)),
        show: 0,
        top: 5,
        progress: false,
        window: chrono::Duration::days(7),
        store: Some(store),
    };
    let o = run(options, tokio::time::sleep(TIME_LIMIT))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        events = o.report.events,
        notified = o.report.total.notified,
        "console: period replayed"
    );
    serde_json::to_value(o).map_err(|e| e.to_string())
}
