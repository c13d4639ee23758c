//! Where a backtest's history comes from, as events in time order: a file of event bodies (JSON lines,
//! one webhook body each, e.g. an export), the relay's own store (events kept with their bodies), or a
//! live source's Traccar server (`/api/reports/events` per device, the positions the events refer to
//! read by id, as the live source does after a reconnect).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::engine::Item;
use super::BacktestError;
use crate::event::{parse_time, Envelope};
use crate::plan::Arrival;
use crate::source::traccar::cache::Cache;
use crate::source::traccar::client::{Client, Session};
use crate::store::Store;
use crate::traccar_config::TraccarSource;

/// Events handed to the runs at a time.
const BATCH: usize = 512;

/// Where the history comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file of JSON lines, each a webhook body (Traccar's `event.forward` form); times are the
    /// events' own (`eventTime`, else the position's `fixTime`).
    File(PathBuf),
    /// The relay's store: events as they were received, at the times they were received.
    Store,
    /// The Traccar server of the live source of this name.
    Server(String),
}

/// The time span replayed: `[from_ms, until_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, unix ms.
    pub from_ms: i64,
    /// End (not included), unix ms.
    pub until_ms: i64,
}

impl Span {
    fn contains(&self, t: i64) -> bool {
        self.from_ms <= t && t < self.until_ms
    }
}

/// What was left out of the history, and why.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Skipped {
    /// Lines or stored events that are not an event (the first few named in `examples`).
    pub unreadable: u64,
    /// Stored events without their body (no rule matched them when they came, and
    /// `storage.keep_unmatched_payloads` was off).
    pub without_body: u64,
    /// Events outside the span.
    pub outside: u64,
    /// Why, for the first few unreadable ones (`line 17: ...`).
    pub examples: Vec<String>,
}

impl Skipped {
    fn unreadable(&mut self, what: String) {
        self.unreadable += 1;
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// A history being read.
pub struct History {
    /// The span replayed (for a file without `--from`/`--to`: its first to its last event).
    pub span: Span,
    /// What it left out so far.
    pub skipped: Arc<Mutex<Skipped>>,
    /// Events it will yield, when known beforehand.
    pub total: Option<u64>,
    reader: Reader,
}

enum Reader {
    /// Batches decoded by a thread of its own.
    Channel(mpsc::Receiver<Vec<Item>>),
    /// The store, page by page after the last event read (receive time, row id).
    Store {
        store: Arc<dyn Store>,
        after: Option<(i64, i64)>,
        done: bool,
    },
    /// Everything read already (a server's answer), oldest last.
    Ready(Vec<Item>),
}

impl History {
    /// The next events, oldest first; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<Item>>, BacktestError> {
        match &mut self.reader {
            Reader::Channel(rx) => Ok(rx.recv().await),
            Reader::Ready(items) => {
                if items.is_empty() {
                    return Ok(None);
                }
                let n = items.len().saturating_sub(BATCH);
                let mut batch = items.split_off(n);
                batch.reverse();
                Ok(Some(batch))
            }
            Reader::Store { store, after, done } => {
                if *done {
                    return Ok(None);
                }
                let rows = store
                    .history(self.span.from_ms, self.span.until_ms, *after, BATCH)
                    .await?;
                *done = rows.len() < BATCH;
                let Some(last) = rows.last() else {
                    return Ok(None);
                };
                *after = Some((last.received_at_ms, last.id));
                let mut skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = Vec::with_capacity(rows.len());
                for e in rows {
                    if e.payload.is_empty() {
                        skipped.without_body += 1;
                        continue;
                    }
                    match Envelope::from_json(e.payload.as_bytes()) {
                        Ok(env) => out.push(Item {
                            env: Arc::new(env),
                            raw: e.payload.into(),
                            arrival: Arrival {
                                source: e.source,
                                via: None,
                                txn: e.txn,
                                request_id: None,
                                received_at_ms: e.received_at_ms,
                            },
                        }),
                        Err(err) => skipped.unreadable(format!("stored event {}: {err}", e.id)),
                    }
                }
                Ok(Some(out))
            }
        }
    }
}

/// The history of the relay's store in `span`.
pub fn from_store(store: Arc<dyn Store>, span: Span) -> History {
    History {
        span,
        skipped: Default::default(),
        total: None,
        reader: Reader::Store {
            store,
            after: None,
            done: false,
        },
    }
}

/// Only the times of a webhook body, read without decoding the rest.
#[derive(Deserialize)]
struct Times {
    event: Option<EventTime>,
    position: Option<FixTime>,
}

#[derive(Deserialize)]
struct EventTime {
    #[serde(rename = "eventTime", alias = "serverTime")]
    event_time: Option<String>,
}

#[derive(Deserialize)]
struct FixTime {
    #[serde(rename = "fixTime")]
    fix_time: Option<String>,
}

/// A line's own time, as [`Envelope::own_time`] reads it, or why it has none.
fn line_time(line: &[u8]) -> Result<DateTime<Utc>, String> {
    let t: Times = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let event = t
        .event
        .ok_or("no `event` object: not a Traccar event body")?;
    let text = event
        .event_time
        .or_else(|| t.position.and_then(|p| p.fix_time))
        .ok_or("no `eventTime` (nor a position's `fixTime`): the event has no time")?;
    parse_time(&text).ok_or_else(|| format!("invalid date `{text}`"))
}

/// A line of the file: its time, where it is.
struct Line {
    at_ms: i64,
    number: u64,
    offset: u64,
    len: usize,
}

/// Reads `path`'s lines' times (in order: the file need not be sorted), then decodes them in time
/// order on a thread of its own. `span`: only events within it; None: the whole file, from the start
/// of its first event's day to the end of its last one's in `tz` (so the timers after the last event,
/// an incident's reminders, run too). `source`: the dedup namespace (and source name) the events
/// arrive under: the webhook's.
pub fn from_file(
    path: &Path,
    span: Option<Span>,
    tz: chrono_tz::Tz,
    source: String,
) -> Result<History, BacktestError> {
    let file =
        File::open(path).map_err(|e| BacktestError::History(format!("{}: {e}", path.display())))?;
    let mut skipped = Skipped::default();
    let mut lines = index(&file, path, &mut skipped)?;
    let day = |t: i64, next: bool| {
        DateTime::<Utc>::from_timestamp_millis(t).map_or(t, |t| {
            let d = t.with_timezone(&tz).date_naive();
            super::day_start(if next { d.succ_opt().unwrap_or(d) } else { d }, tz)
        })
    };
    let span = span.unwrap_or_else(|| Span {
        from_ms: lines
            .iter()
            .map(|l| l.at_ms)
            .min()
            .map_or(0, |t| day(t, false)),
        until_ms: lines
            .iter()
            .map(|l| l.at_ms)
            .max()
            .map_or(1, |t| day(t, true)),
    });
    let before = lines.len();
    lines.retain(|l| span.contains(l.at_ms));
    skipped.outside = (before - lines.len()) as u64;
    // Stable: events of the same millisecond keep the file's order.
    lines.sort_by_key(|l| l.at_ms);
    let skipped = Arc::new(Mutex::new(skipped));
    let (tx, rx) = mpsc::channel(4);
    let total = lines.len() as u64;
    let (shared, name) = (skipped.clone(), path.display().to_string());
    std::thread::Builder::new()
        .name("trackrelay-backtest-read".into())
        .spawn(move || decode_lines(&file, &name, lines, &source, &shared, &tx))
        .map_err(|e| BacktestError::History(format!("cannot start the reader: {e}")))?;
    Ok(History {
        span,
        skipped,
        total: Some(total),
        reader: Reader::Channel(rx),
    })
}

/// Every line's time and place; unreadable lines counted (blank ones ignored).
fn index(file: &File, path: &Path, skipped: &mut Skipped) -> Result<Vec<Line>, BacktestError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut lines, mut buf, mut offset, mut number) = (Vec::new(), Vec::new(), 0u64, 0u64);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| BacktestError::History(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        number += 1;
        let line = buf.trim_ascii();
        if !line.is_empty() {
            match line_time(line) {
                Ok(t) => lines.push(Line {
                    at_ms: t.timestamp_millis(),
                    number,
                    offset,
                    len: n,
                }),
                Err(e) => skipped.unreadable(format!("line {number}: {e}")),
            }
        }
        offset += n as u64;
    }
    Ok(lines)
}

/// Decodes `lines` in order and sends them in batches; stops when the receiver is gone.
fn decode_lines(
    file: &File,
    name: &str,
    lines: Vec<Line>,
    source: &str,
    skipped: &Mutex<Skipped>,
    tx: &mpsc::Sender<Vec<Item>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = Vec::new();
    for l in lines {
        buf.resize(l.len, 0);
        if let Err(e) = file.read_exact_at(&mut buf, l.offset) {
            skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unreadable(format!("{name}: line {}: {e}", l.number));
            continue;
        }
        let line = buf.trim_ascii();
        let decoded = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|raw| {
                Envelope::from_json(line)
                    .map(|env| (raw, env))
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok((raw, env)) => batch.push(Item {
                raw: raw.into(),
                env: Arc::new(env),
                arrival: Arrival {
                    source: source.to_string(),
                    via: None,
                    txn: None,
                    request_id: None,
                    received_at_ms: l.at_ms,
                },
            }),
            Err(e) => skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unreadable(format!("line {}: {e}", l.number)),
        }
        if batch.len() == BATCH && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
}

/// The shortest window the server is asked for at once before giving up on its period limit.
pub const MIN_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// The history of live source `cfg`'s server in `span`: every device's events (in windows of
/// `window`, halved while the server refuses a window as too long: Traccar's `report.periodLimit`), the
/// positions they refer to, and the device, group and geofence of each, as the live source would
/// have handed them to the rules.
pub async fn from_server(
    cfg: &TraccarSource,
    span: Span,
    window: chrono::Duration,
) -> Result<History, BacktestError> {
    let client = Client::new(cfg)?;
    let session = client.login().await?;
    let mut cache = Cache::new(cfg, Default::default());
    cache.replace(
        client.devices(&session).await?,
        client.groups(&session).await?,
        client.geofences(&session).await?,
    );
    let ms = |t: i64| DateTime::<Utc>::from_timestamp_millis(t).unwrap_or_default();
    let (from, until) = (ms(span.from_ms), ms(span.until_ms));
    let mut events = Vec::new();
    for device in cache.device_ids() {
        events.extend(device_events(&client, &session, device, from, until, window).await?);
    }
    // A window's end is inclusive on the server: an event on a border comes twice.
    events.sort_by_key(|e| (e.event_time, e.id));
    events.dedup_by_key(|e| e.id);
    let mut skipped = Skipped::default();
    let before = events.len();
    events.retain(|e| {
        e.event_time
            .is_some_and(|t| span.contains(t.timestamp_millis()))
    });
    skipped.outside = (before - events.len()) as u64;
    let positions = positions(&client, &session, &events).await?;
    let mut items = Vec::with_capacity(events.len());
    for e in events {
        let at = e.event_time.map_or(0, |t| t.timestamp_millis());
        let mut env = cache.envelope(e);
        if env.position.is_none() {
            env.position = positions.get(&env.event.position_id).cloned();
        }
        let raw = serde_json::to_string(&env).map_err(|e| BacktestError::History(e.to_string()))?;
        items.push(Item {
            raw: raw.into(),
            env: Arc::new(env),
            arrival: Arrival {
                source: cfg.dedup_as.clone(),
                via: Some(cfg.name.clone()),
                txn: None,
                request_id: None,
                received_at_ms: at,
            },
        });
    }
    items.reverse();
    Ok(History {
        span,
        skipped: Arc::new(Mutex::new(skipped)),
        total: Some(items.len() as u64),
        reader: Reader::Ready(items),
    })
}

/// One device's events from `from` to `until`, window by window.
async fn device_events(
    client: &Client,
    s: &Session,
    device: i64,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    mut window: chrono::Duration,
) -> Result<Vec<crate::event::Event>, BacktestError> {
    let mut out = Vec::new();
    let mut start = from;
    while start < until {
        let end = (start + window).min(until);
        match client.events(s, device, start, end).await {
            Ok(events) => {
                out.extend(events);
                start = end;
            }
            // Traccar refuses a period longer than its `report.periodLimit` with a 400.
            Err(crate::source::traccar::SourceError::Status { status: 400, .. })
                if window > MIN_WINDOW =>
            {
                window = (window / 2).max(MIN_WINDOW);
                tracing::info!(device, window = %humantime::format_duration(window.to_std().unwrap_or_default()), "the server refused the period; asking for shorter ones");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The positions `events` refer to, by id (the REST client asks in batches and leaves out ids the
/// server no longer has).
async fn positions(
    client: &Client,
    s: &Session,
    events: &[crate::event::Event],
) -> Result<std::collections::HashMap<i64, crate::event::Position>, BacktestError> {
    let mut ids: Vec<i64> = events
        .iter()
        .map(|e| e.position_id)
        .filter(|id| *id != 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let found = client.positions(s, &ids).await?;
    Ok(found.into_iter().map(|p| (p.id, p)).collect())
}
