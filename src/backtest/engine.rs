//! One configuration run over history, deciding as the relay would: each event goes through
//! [`crate::pipeline::prepare`] (rules, silences of the time, schedules, rendering, incident offers) and
//! the store's intake (dedup, cooldown, debounce, digests, rate limits, incidents) on a scratch SQLite
//! store in a temporary directory; incident timers (repeats, escalations, expiry) run at their own
//! times between events. Nothing is sent: no delivery worker runs, so what was to be sent stays
//! `pending` (or waits for its time) and is counted as notified. Time is the events': nothing reads the
//! wall clock.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::report::Tally;
use crate::event::Envelope;
use crate::incident_service::IncidentService;
use crate::metrics::Metrics;
use crate::noise::silence::{Silence, SilenceSet};
use crate::pipeline::{prepare, Prepared};
use crate::plan::Arrival;
use crate::runtime::{Runtime, Shared};
use crate::settings::Config;
use crate::silence_cache::SilenceCache;
use crate::store::sqlite::SqliteStore;
use crate::store::{Accepted, IncidentFilter, IncidentRow, Store, StoreError};

/// Every scratch directory this process made, for [`remove_scratch`].
static SCRATCH: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the scratch stores of every run of this process: for a process about to exit without
/// dropping its runs (a second Ctrl-C). A run that ends removes its own.
pub fn remove_scratch() {
    for dir in SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A run's scratch directory, listed for [`remove_scratch`] while it exists, removed when dropped.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(dir: tempfile::TempDir) -> Scratch {
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.path().to_path_buf());
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != self.0.path());
    }
}

/// One event of the history, ready for the rules.
#[derive(Debug, Clone)]
pub struct Item {
    /// The body as the relay would have received it.
    pub raw: Arc<str>,
    /// The body decoded.
    pub env: Arc<Envelope>,
    /// How and when it arrived (its own time, or its stored arrival).
    pub arrival: Arrival,
}

/// What one run counted while it went, beside what it left in its store.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Events fed.
    pub events: u64,
    /// Events the store already had (dedup on source and event id).
    pub duplicates: u64,
    /// Events each rule matched.
    pub matched: HashMap<String, u64>,
    /// Device names seen, by id.
    pub device_names: HashMap<i64, String>,
}

/// One configuration's run.
pub struct Engine {
    shared: Arc<Shared>,
    store: Arc<SqliteStore>,
    silences: Arc<SilenceCache>,
    incidents: Option<IncidentService>,
    /// The next incident timer, as last read from the store.
    next_timer: Option<i64>,
    /// No delivery still pending is due before this (None: none pending).
    pending_due: Option<i64>,
    counts: Counts,
    /// Holds the scratch store's directory; removed when the run is dropped.
    _dir: Scratch,
}

impl Engine {
    /// A run of `config` on a fresh scratch store, with `silences` (the live store's, ended ones too)
    /// as they stood at `from_ms` and after.
    pub fn new(config: Config, silences: Vec<Silence>, from_ms: i64) -> Result<Engine, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("trackrelay-backtest-")
            .tempdir()
            .map_err(|e| StoreError::Db(format!("cannot make a scratch directory: {e}")))?;
        let dir = Scratch::new(dir);
        let store = Arc::new(SqliteStore::open_scratch(dir.path(), 1024)?);
        let has_incidents = config.rules.incident_rules().next().is_some();
        let shared = Arc::new(Shared::new(Runtime {
            config,
            channels: Default::default(),
        }));
        let cache = Arc::new(SilenceCache::default());
        cache.set(SilenceSet::new(silences, from_ms));
        let incidents = has_incidents.then(|| IncidentService {
            shared: shared.clone(),
            store: store.clone(),
            wake_worker: Arc::new(Notify::new()),
            wake: Arc::new(Notify::new()),
            silences: cache.clone(),
            metrics: Arc::new(Metrics::new()),
            removed: Default::default(),
        });
        Ok(Engine {
            shared,
            store,
            silences: cache,
            incidents,
            next_timer: None,
            pending_due: None,
            counts: Counts::default(),
            _dir: dir,
        })
    }

    /// Decides one event at its arrival time, after the incident timers due before it.
    pub async fn feed(&mut self, item: &Item) -> Result<(), StoreError> {
        let prepared = self.preparer().prepare(item);
        self.commit(item, prepared).await
    }

    /// What prepares events for this run (see [`Preparer`]).
    pub fn preparer(&self) -> Preparer {
        Preparer {
            runtime: self.shared.get(),
            silences: self.silences.get(),
        }
    }

    /// Decides one prepared event at its arrival time (events in time order), after the incident
    /// timers due before it: the store's part, which depends on what came before.
    pub async fn commit(&mut self, item: &Item, prepared: Prepared) -> Result<(), StoreError> {
        let at = item.arrival.received_at_ms;
        self.timers_until(at).await?;
        self.counts.events += 1;
        if let Some(d) = &item.env.device {
            self.counts
                .device_names
                .entry(d.id)
                .or_insert_with(|| d.name.clone());
        }
        // Stored in production for dedup only; it can change no decision.
        if prepared.is_inert() {
            self.count_matches(&prepared.matched);
            return Ok(());
        }
        let concerns_incidents = !prepared.event.incidents.is_empty();
        self.settle(at).await?;
        match self.store.accept(prepared.event).await? {
            Accepted::Duplicate => self.counts.duplicates += 1,
            Accepted::New { deliveries, .. } => {
                self.count_matches(&prepared.matched);
                if deliveries > 0 {
                    self.may_be_due(at);
                }
                if concerns_incidents {
                    self.next_timer = self.store.next_incident_at().await?;
                }
            }
        }
        Ok(())
    }

    fn count_matches(&mut self, matched: &[String]) {
        for r in matched {
            *self.counts.matched.entry(r.clone()).or_default() += 1;
        }
    }

    /// What was due by `at` counts as sent (see [`SqliteStore::settle`]); nothing to do before the
    /// first pending delivery is due.
    async fn settle(&mut self, at: i64) -> Result<(), StoreError> {
        if self.pending_due.is_some_and(|due| due <= at) {
            self.pending_due = self.store.settle(at).await?;
        }
        Ok(())
    }

    /// Deliveries were enqueued at `at`: some may be due from then on.
    fn may_be_due(&mut self, at: i64) {
        self.pending_due = Some(self.pending_due.map_or(at, |due| due.min(at)));
    }

    /// Runs every incident timer due up to `until`, each at its own time.
    pub async fn timers_until(&mut self, until: i64) -> Result<(), StoreError> {
        let Some(service) = self.incidents.clone() else {
            return Ok(());
        };
        while let Some(at) = self.next_timer.filter(|at| *at <= until) {
            // What production had sent by then is not pending when an incident closes.
            self.settle(at).await?;
            let moved = service.run_due(at).await?;
            if moved > 0 {
                self.may_be_due(at);
            }
            self.next_timer = self.store.next_incident_at().await?;
            if moved == 0 && self.next_timer.is_some_and(|next| next <= at) {
                // Rows this run cannot move on (the service logged why): leave them.
                tracing::warn!(at, "incident timers that do not move on; left as they are");
                break;
            }
        }
        Ok(())
    }

    /// Ends the run at `until` (the timers due by then run) and counts what it decided.
    pub async fn finish(mut self, until: i64) -> Result<Finished, StoreError> {
        self.timers_until(until).await?;
        let runtime = self.shared.get();
        let tally = Tally::new(runtime.config.timezone);
        let tally = self.store.fold_outcomes(tally, Tally::add).await?;
        let incidents = self
            .store
            .incidents(IncidentFilter {
                all: true,
                limit: i64::MAX as usize,
            })
            .await?;
        Ok(Finished {
            runtime,
            counts: self.counts,
            tally,
            incidents,
            store: self.store,
            _dir: self._dir,
        })
    }
}

/// Prepares events for a run: rules, silences, schedules, rendering and incident offers, which depend
/// on the configuration and the silences only, not on what the store holds, so they may run ahead of
/// the store on another thread.
#[derive(Clone)]
pub struct Preparer {
    runtime: Arc<Runtime>,
    silences: Arc<SilenceSet>,
}

impl Preparer {
    /// `item` evaluated and planned (see [`crate::pipeline::prepare`]).
    pub fn prepare(&self, item: &Item) -> Prepared {
        prepare(
            &self.runtime.config,
            &self.silences,
            &item.raw,
            &item.env,
            &item.arrival,
        )
    }
}

/// A finished run: its counts, its deliveries counted, every incident.
pub struct Finished {
    /// The configuration it ran.
    pub runtime: Arc<Runtime>,
    /// Counted while running.
    pub counts: Counts,
    /// Every delivery, counted.
    pub tally: Tally,
    /// Every incident, newest first.
    pub incidents: Vec<IncidentRow>,
    /// The scratch store, for the sample messages.
    pub store: Arc<SqliteStore>,
    _dir: Scratch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(path: &std::path::Path) -> bool {
        SCRATCH.lock().unwrap().iter().any(|p| p.as_path() == path)
    }

    #[test]
    fn a_runs_scratch_store_is_listed_while_it_lives_and_gone_after() {
        let e = Engine::new(Config::load(None).unwrap(), Vec::new(), 0).unwrap();
        let path = e._dir.path().to_path_buf();
        assert!(path.join(crate::store::sqlite::DB_FILE).exists());
        assert!(listed(&path));
        drop(e);
        assert!(!listed(&path), "still listed for removal after its run");
        assert!(!path.exists(), "scratch store left behind");
    }
}
