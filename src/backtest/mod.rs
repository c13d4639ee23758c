//! `trackrelay backtest`: what would these rules have sent? Replays history (a file of event bodies,
//! the relay's own store, or a live source's Traccar server) through one configuration, or two side by
//! side (`--compare`), deciding exactly as the relay does (see [`engine`]) on the events' own times.
//! Nothing is sent and nothing is written to the live store: each run has a scratch store of its own
//! in a temporary directory, removed at the end.
//!
//! The history is read and decoded on one thread while the runs decide on others (each run's store
//! writes on a thread of its own), so two configurations cost little more than one. A long run shows a
//! progress bar on a terminal; Ctrl-C stops it cleanly and reports what was replayed so far.

pub mod engine;
pub mod history;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use engine::{Engine, Finished};
use history::{History, Skipped, Source, Span};
use report::{Comparison, Report, Sample};

use crate::settings::Config;
use crate::store::{Store, StoreError};

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The configuration or an option is wrong.
    #[error("{0}")]
    Usage(String),
    /// The history cannot be read.
    #[error("history: {0}")]
    History(String),
    /// The live source's server failed.
    #[error("server: {0}")]
    Server(#[from] crate::source::traccar::SourceError),
    /// A store (the live one read, or a run's scratch one) failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What to replay, through what, and how to report it.
pub struct Options {
    /// The configuration to test.
    pub config: Config,
    /// A second configuration to run on the same history (`--compare`).
    pub compare: Option<Config>,
    /// Where the history comes from.
    pub source: Source,
    /// `--from`: a date (`2026-11-01`, the day's start in the configured zone) or an RFC 3339 time.
    pub from: Option<String>,
    /// `--to`: a date (included: up to the end of that day) or an RFC 3339 time (excluded).
    pub to: Option<String>,
    /// Sample messages to show.
    pub show: usize,
    /// Devices to list among the most notified.
    pub top: usize,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// The longest period asked of a Traccar server at once (halved while it refuses).
    pub window: chrono::Duration,
    /// The live store to read the history and silences from (the configuration's, when its database
    /// exists; a running relay's); `None`: no store (no silences; a store history is refused).
    pub store: Option<Arc<dyn Store>>,
}

/// A finished backtest.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Where the history came from.
    pub history: String,
    /// Replayed from (RFC 3339).
    pub from: String,
    /// Replayed until (RFC 3339, excluded).
    pub until: String,
    /// What was left out of the history.
    pub skipped: Skipped,
    /// Stopped by Ctrl-C before the end: the time of the last event replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// The run of `config`.
    pub report: Report,
    /// Both runs side by side, with `--compare`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// A time given on the command line: an RFC 3339 time, or a date (`end`: the end of that day), in `tz`.
pub fn parse_when(s: &str, tz: chrono_tz::Tz, end: bool) -> Result<i64, BacktestError> {
    if let Some(t) = crate::event::parse_time(s) {
        return Ok(t.timestamp_millis());
    }
    let local = |n: NaiveDateTime| {
        tz.from_local_datetime(&n)
            .earliest()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| BacktestError::Usage(format!("`{s}` does not exist in {tz}")))
    };
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(day_start(day, tz));
    }
    for f in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return local(n);
        }
    }
    Err(BacktestError::Usage(format!(
        "`{s}` is not a date (2026-11-01), a local time (2026-11-01 08:00) or an RFC 3339 time"
    )))
}

/// When `day` starts in `tz`, unix ms: its midnight, or the first hour after it where a clock change
/// skips midnight (America/Santiago, Africa/Cairo).
pub fn day_start(day: NaiveDate, tz: chrono_tz::Tz) -> i64 {
    (0..=2)
        .find_map(|h| {
            day.and_hms_opt(h, 0, 0)
                .and_then(|n| tz.from_local_datetime(&n).earliest())
        })
        .map_or(0, |t| t.timestamp_millis())
}

/// The span the options name; `None` when neither end is given and the source tells (a file).
fn span(o: &Options, now_ms: i64) -> Result<Option<Span>, BacktestError> {
    let tz = o.config.timezone;
    let from = o
        .from
        .as_deref()
        .map(|s| parse_when(s, tz, false))
        .transpose()?;
    let to =
        o.to.as_deref()
            .map(|s| parse_when(s, tz, true))
            .transpose()?;
    let span = match (from, to, &o.source) {
        (None, None, Source::File(_)) => return Ok(None),
        (from, to, _) => {
            // Not into the future: the timers after the last event run until now at most.
            let until = match &o.source {
                Source::File(_) => to.unwrap_or(now_ms),
                _ => to.map_or(now_ms, |t| t.min(now_ms)),
            };
            Span {
                from_ms: from.unwrap_or(until - 30 * 86_400_000),
                until_ms: until,
            }
        }
    };
    if span.from_ms >= span.until_ms {
        return Err(BacktestError::Usage(
            "--from must be before --to (and, replaying the store or a server, before now)".into(),
        ));
    }
    Ok(Some(span))
}

/// Opens the history the options name.
async fn open_history(
    o: &Options,
    live: Option<Arc<dyn Store>>,
    now_ms: i64,
) -> Result<History, BacktestError> {
    let span = span(o, now_ms)?;
    match &o.source {
        Source::File(path) => history::from_file(
            path,
            span,
            o.config.timezone,
            o.config.ingest.source.clone(),
        ),
        Source::Store => {
            let store = live.ok_or_else(|| {
                BacktestError::Usage(format!(
                    "no store at {}: nothing to replay (give a file of events with --events, or a live source with --server)",
                    o.config.storage.data_dir.display()
                ))
            })?;
            Ok(history::from_store(
                store,
                span.expect("a store's span is always set"),
            ))
        }
        Source::Server(_) if o.window < history::MIN_WINDOW => Err(BacktestError::Usage(
            "--window: at least 1h (the server is asked for one window per device at a time)"
                .into(),
        )),
        Source::Server(name) => {
            let cfg = o
                .config
                .traccar
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        o.config.traccar.iter().map(|s| s.name.as_str()).collect();
                    BacktestError::Usage(format!(
                        "no live source `{name}` in the configuration (its sources: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?;
            history::from_server(cfg, span.expect("a server's span is always set"), o.window).await
        }
    }
}

/// The silences of the live store (ended ones too: those active during the history apply), if any,
/// each from when it was made at the earliest: one made with a start in the past muted nothing before
/// it existed.
async fn silences(
    live: Option<&Arc<dyn Store>>,
) -> Result<Vec<crate::noise::silence::Silence>, BacktestError> {
    let mut all = match live {
        Some(s) => s.silences().await?,
        None => Vec::new(),
    };
    for s in &mut all {
        s.starts_at_ms = s.starts_at_ms.max(s.created_at_ms);
    }
    Ok(all)
}

fn describe(source: &Source) -> String {
    match source {
        Source::File(p) => format!("file {}", p.display()),
        Source::Store => "the relay's store".into(),
        Source::Server(name) => format!("live source {name}'s server"),
    }
}

fn rfc3339(ms: i64, tz: chrono_tz::Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
}

/// Runs the backtest. `stop` resolves when the user asks to stop (Ctrl-C): the runs end at the last
/// event replayed and report what they decided so far.
pub async fn run(
    o: Options,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Outcome, BacktestError> {
    let now = crate::clock::now_ms();
    let live = o.store.clone();
    let history = open_history(&o, live.clone(), now).await?;
    let silences = silences(live.as_ref()).await?;
    let from = history.span.from_ms;
    let bar = progress_bar(o.progress, &history);
    let (show, top, tz, source) = (o.show, o.top, o.config.timezone, describe(&o.source));
    let mut a = Engine::new(o.config, silences.clone(), from)?;
    let mut b = match o.compare {
        Some(c) => Some(Engine::new(c, silences, from)?),
        None => None,
    };
    let (span, skipped) = (history.span, history.skipped.clone());
    let mut batches = prepare_ahead(history, a.preparer(), b.as_ref().map(Engine::preparer));
    let mut last = None;
    tokio::pin!(stop);
    let stopped = loop {
        let batch = tokio::select! {
            biased;
            () = &mut stop => break true,
            batch = batches.recv() => batch,
        };
        let Some(batch) = batch else { break false };
        let batch = batch?;
        for (item, pa, pb) in batch {
            match (&mut b, pb) {
                (Some(b), Some(pb)) => {
                    let (x, y) = tokio::join!(a.commit(&item, pa), b.commit(&item, pb));
                    x?;
                    y?;
                }
                _ => a.commit(&item, pa).await?,
            }
            last = Some(item.arrival.received_at_ms);
        }
        if let Some(t) = last {
            bar.set_position(progress_of(&span, t));
            bar.set_message(rfc3339(t, tz));
        }
    };
    bar.finish_and_clear();
    // A stopped run ends where it stopped: the timers after its last event did not come yet.
    let until = match (stopped, last) {
        (true, Some(t)) => t,
        _ => span.until_ms,
    };
    let a = report_of(a.finish(until).await?, show, top).await?;
    let comparison = match b {
        Some(b) => {
            let b = report_of(b.finish(until).await?, show, top).await?;
            Some(Comparison::new(a.clone(), b))
        }
        None => None,
    };
    let skipped = skipped.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Outcome {
        history: source,
        from: rfc3339(span.from_ms, tz),
        until: rfc3339(span.until_ms, tz),
        skipped,
        stopped_at: stopped.then(|| last.map(|t| rfc3339(t, tz)).unwrap_or_default()),
        report: a,
        comparison,
    })
}

/// A prepared event: the item, and what each run's [`Preparer`] made of it.
type Ready = (
    engine::Item,
    crate::pipeline::Prepared,
    Option<crate::pipeline::Prepared>,
);

/// Reads the history and prepares its events for both runs on a task of its own, ahead of the runs'
/// store work (a few batches ahead at most); an error ends the stream after it is handed over.
fn prepare_ahead(
    mut history: History,
    a: engine::Preparer,
    b: Option<engine::Preparer>,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Ready>, BacktestError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let batch = match history.next().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            };
            let (a, b) = (a.clone(), b.clone());
            let ready = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|item| {
                        let pa = a.prepare(&item);
                        let pb = b.as_ref().map(|b| b.prepare(&item));
                        (item, pa, pb)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(ready) = ready else { break };
            if tx.send(Ok(ready)).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Where `t` lies in `span`, in thousandths.
fn progress_of(span: &Span, t: i64) -> u64 {
    let len = (span.until_ms - span.from_ms).max(1);
    (((t - span.from_ms).clamp(0, len) as f64 / len as f64) * 1000.0) as u64
}

fn progress_bar(show: bool, history: &History) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% at {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if let Some(total) = history.total {
        bar.set_message(format!("{total} events"));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A finished run's report, with its sample messages.
async fn report_of(f: Finished, show: usize, top: usize) -> Result<Report, BacktestError> {
    let cfg = &f.runtime.config;
    let names: Vec<String> = cfg.rules.rules().iter().map(|r| r.name.clone()).collect();
    let ids = f.tally.sample_ids(show);
    let config = cfg
        .path
        .as_ref()
        .map_or("(built-in)".to_string(), |p| p.display().to_string());
    let mut report = Report::build(config, &names, &f.counts, &f.tally, &f.incidents, top);
    for (id, at) in ids {
        if let Some(d) = f.store.delivery(id).await? {
            report.samples.push(sample(&d, at, cfg.timezone));
        }
    }
    Ok(report)
}

fn sample(d: &crate::store::DeliveryDetail, at: i64, tz: chrono_tz::Tz) -> Sample {
    let (kind, title, text) = serde_json::from_str::<crate::notification::Notification>(&d.content)
        .map(|n| n.content.describe())
        .unwrap_or(("unreadable", None, String::new()));
    Sample {
        at: rfc3339(at, tz),
        rule: d.row.rule.clone(),
        channel: d.row.channel.clone(),
        recipient: d.row.recipient.clone(),
        device_id: d.row.device_id,
        kind: kind.to_string(),
        title,
        text,
    }
}

/// The text a terminal shows for `o`.
pub fn text(o: &Outcome) -> String {
    let mut out = format!("History: {}, {} to {}", o.history, o.from, o.until);
    if let Some(at) = &o.stopped_at {
        out.push_str(&format!(
            " — stopped at {at} (Ctrl-C): what follows covers the events up to then"
        ));
    }
    out.push('\n');
    let s = &o.skipped;
    if s.unreadable + s.without_body > 0 {
        out.push_str(&format!(
            "Left out: {} unreadable, {} stored without their body (no rule matched them then; storage.keep_unmatched_payloads keeps them)\n",
            s.unreadable, s.without_body
        ));
        for e in &s.examples {
            out.push_str(&format!("  {e}\n"));
        }
    }
    match &o.comparison {
        Some(c) => out.push_str(&report::comparison_text(c)),
        None => out.push_str(&report::text(&o.report)),
    }
    out
}
