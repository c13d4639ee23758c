//! The silences in force on this instance: the pure [`SilenceSet`] of [`crate::noise::silence`], re-read
//! from the store (which every instance and the CLI write) and reported in the metrics.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::noise::silence::SilenceSet;
use crate::store::{Store, StoreError};

/// How often every instance re-reads the silences (the CLI and other instances write them too).
pub const REFRESH: Duration = Duration::from_secs(2);

/// The silences in force, re-read from the store every [`REFRESH`] and at once after a change made
/// through this instance.
#[derive(Default)]
pub struct SilenceCache {
    set: RwLock<Arc<SilenceSet>>,
    /// Unreadable silences already logged: each is logged once, not at every refresh.
    reported: Mutex<HashSet<i64>>,
    metrics: Option<Arc<Metrics>>,
}

impl SilenceCache {
    /// A cache that reports unreadable silences in `metrics` too.
    pub fn new(metrics: Arc<Metrics>) -> SilenceCache {
        SilenceCache {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    /// The current set.
    pub fn get(&self) -> Arc<SilenceSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `set` in force (a backtest's silences, made as of the start of its history).
    pub fn set(&self, set: SilenceSet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// Re-reads the silences from `store`.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let all = store.silences().await?;
        let set = SilenceSet::new(all, now_ms());
        self.report(set.unreadable());
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Logs each unreadable silence once (the first refresh that finds it) and sets the gauge.
    fn report(&self, unreadable: &[(i64, String)]) {
        if let Some(m) = &self.metrics {
            m.silences_unreadable(unreadable.len());
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (id, reason) in unreadable {
            if !reported.contains(id) {
                tracing::error!(
                    silence = id,
                    reason = %reason,
                    "silence cannot be read (made by another version, or damaged): it mutes nothing; expire it and make it again"
                );
            }
        }
        // Forget those that were fixed or ended: should one turn unreadable again, it is logged again.
        *reported = unreadable.iter().map(|(id, _)| *id).collect();
    }
}
