//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL` (every commit is fsynced).
//!
//! One writer thread owns the connection. Every operation is a job sent to it; the thread takes all jobs
//! waiting (up to [`MAX_BATCH`]) and runs them in one transaction, each in its own savepoint so one
//! failing job does not undo the others: group commit, so durability costs one fsync per batch, not per
//! event. Answers are sent only after the commit succeeded. A job that panics fails alone (its savepoint
//! is rolled back, the writer goes on); a writer whose connection is left in a state it cannot vouch for
//! ends the process with a clear error, so that its supervisor restarts it.
//!
//! Delivery outcomes (and claims) are not acknowledged to anyone, and losing one costs one resend
//! under the same idempotency key (the row stays claimed and is sent again after its lease or a
//! restart). So they ride on the next commit rather than paying one of their own: an outcome is parked
//! until the writer's next batch takes it (at most [`LINGER`] later, when a wake-up job comes for it),
//! and a batch of nothing but such writes commits without its own fsync (`synchronous = NORMAL`; the
//! next durable commit, or the checkpoint, syncs the log it was written to). A process crash loses none
//! of them (the OS holds what was written); a power loss may lose the last ones. Intake's commits stay
//! `FULL`: an event is on disk when it is answered. At a steady 1,000 events/s this took one commit of
//! two and its fsync off every event (issue 22).
//!
//! The figures `/metrics` shows (deliveries by status, the oldest due one), the incidents' reads and
//! what the console browses (the listing, one delivery, activity: `browse`) are read on a read-only
//! connection of their own: WAL lets it read beside the writer, so a reader neither waits in the
//! writer's queue nor holds up intake, and sees every write that was answered (each is committed
//! first).

use std::any::Any;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use self::pack::{Packed, Unpacked};
use super::browse::events_limit;
use super::common::{
    matchers_json, oldest_first, prune_in_chunks, Cutoffs, FINISHED, PRUNE_CHUNK, REPLAYABLE,
    REPLAY_RESET, SILENCE_COLUMNS,
};
use super::decide::{state_json, state_row};
use super::rows::{plan_rows, EventRow, Group};
use super::*;

mod browse;
mod chat;
mod incidents;
pub mod pack;
mod tally;

pub use tally::DeliveryOutcome;

/// Jobs per transaction at most: bounds the latency one commit adds to the jobs in it.
pub const MAX_BATCH: usize = 2048;
/// A batch with durable jobs, of fewer jobs than this, within [`GATHER_AFTER`] of the last synced commit, waits
/// [`GATHER_FOR`] for more before it is committed: at a steady rate each commit (its fsync, the pages it
/// writes to the WAL in full, its locks) is then shared by more events. A lone event (none committed
/// for a while) is committed at once; under load batches are large without waiting.
const GATHER_BELOW: usize = 8;
/// See [`GATHER_BELOW`].
const GATHER_AFTER: Duration = Duration::from_millis(20);
/// See [`GATHER_BELOW`].
const GATHER_FOR: Duration = Duration::from_millis(2);
/// How long a parked outcome waits for a commit to ride on before one is made for it (see the module
/// docs): it holds up only the next delivery to an ordered recipient, by at most this much.
pub const LINGER: Duration = Duration::from_millis(20);
/// File name of the database under the data directory.
pub const DB_FILE: &str = "trackrelay.db";
/// Another process (the CLI next to a running server) may hold the write lock briefly.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Numbered migrations, applied in order at start; `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[&str] = &[
    // 1: events and the outbox.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        device_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        txn TEXT,
        payload TEXT NOT NULL,
        UNIQUE (source, event_id)
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        event_ref INTEGER NOT NULL REFERENCES events (id),
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        order_key TEXT,
        rule TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        lease_until INTEGER,
        last_error TEXT,
        txn TEXT,
        content TEXT NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_at);
    CREATE INDEX deliveries_order ON deliveries (order_key, id)
        WHERE order_key IS NOT NULL AND status IN ('pending', 'inflight');
    CREATE INDEX deliveries_event ON deliveries (event_ref);",
    // 2: noise control: held (debounced) and grouped deliveries, digests, noise state, silences.
    "ALTER TABLE deliveries ADD COLUMN hold_key TEXT;
    ALTER TABLE deliveries ADD COLUMN group_key TEXT;
    ALTER TABLE deliveries ADD COLUMN digest_ref INTEGER;
    ALTER TABLE deliveries ADD COLUMN reason TEXT;
    CREATE INDEX deliveries_hold ON deliveries (hold_key)
        WHERE hold_key IS NOT NULL AND status = 'pending';
    CREATE INDEX deliveries_group ON deliveries (group_key)
        WHERE group_key IS NOT NULL AND status = 'pending';
    CREATE INDEX deliveries_digest ON deliveries (digest_ref) WHERE digest_ref IS NOT NULL;
    CREATE TABLE noise_state (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX noise_state_expiry ON noise_state (expires_at);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at INTEGER NOT NULL,
        ends_at INTEGER NOT NULL,
        author TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 3: claims find expired leases without scanning every inflight row.
    "CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE status = 'inflight';",
    // 4: the idempotency key is unique per event, not in a table-wide index of its own. Keys are hashes:
    // a unique index on them alone takes every insert to a random leaf page, and SQLite's WAL writes each
    // page a commit touched in full, so that index cost about 4 KiB of WAL per delivery once the table had
    // grown (5x the rest of the insert). (event_ref, key) grows at its end like the table. Deliveries of
    // different events never share a key (the key hashes the event's source and id, and an event is
    // stored once), so nothing that was refused before is let in. SQLite cannot drop a constraint: the
    // table is rebuilt, once, at the upgrade. PostgreSQL's schema checks the same since its migration 5.
    "CREATE TABLE deliveries_v4 (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        event_ref INTEGER NOT NULL REFERENCES events (id),
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        order_key TEXT,
        rule TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        device_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        lease_until INTEGER,
        last_error TEXT,
        txn TEXT,
        content TEXT NOT NULL,
        hold_key TEXT,
        group_key TEXT,
        digest_ref INTEGER,
        reason TEXT
    );
    INSERT INTO deliveries_v4 SELECT id, key, event_ref, channel, recipient, order_key, rule, event_id,
        event_type, device_id, status, attempts, created_at, updated_at, next_at, lease_until, last_error,
        txn, content, hold_key, group_key, digest_ref, reason FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v4 RENAME TO deliveries;
    CREATE UNIQUE INDEX deliveries_event_key ON deliveries (event_ref, key);
    CREATE INDEX deliveries_due ON deliveries (status, next_at);
    CREATE INDEX deliveries_order ON deliveries (order_key, id)
        WHERE order_key IS NOT NULL AND status IN ('pending', 'inflight');
    CREATE INDEX deliveries_hold ON deliveries (hold_key)
        WHERE hold_key IS NOT NULL AND status = 'pending';
    CREATE INDEX deliveries_group ON deliveries (group_key)
        WHERE group_key IS NOT NULL AND status = 'pending';
    CREATE INDEX deliveries_digest ON deliveries (digest_ref) WHERE digest_ref IS NOT NULL;
    CREATE INDEX deliveries_lease ON deliveries (lease_until) WHERE status = 'inflight';",
    // 5: each claim of a delivery is numbered, so an outcome is recorded only by the claim it came from
    // (see `Claimed::claim`); `attempts` cannot tell claims apart, a replay resets it.
    "ALTER TABLE deliveries ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;",
    // 6: whether an event went through the rules without the position it refers to (see
    // `NewEvent::position_missing`): a later copy with the position then completes it.
    "ALTER TABLE events ADD COLUMN position_missing INTEGER NOT NULL DEFAULT 0;",
    // 7: incidents (see `store::incidents`): one live row per key at most, a timer per row, the
    // acknowledgement tokens' hashes, and each delivery's incident (an acknowledgement cancels the
    // pending ones).
    "CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        rule TEXT NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        next_at INTEGER,
        notice TEXT,
        revision INTEGER NOT NULL DEFAULT 0,
        event_ref INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX incidents_live ON incidents (key) WHERE status <> 'resolved';
    CREATE INDEX incidents_timer ON incidents (next_at) WHERE next_at IS NOT NULL;
    CREATE INDEX incidents_event ON incidents (event_ref);
    CREATE TABLE incident_tokens (
        hash TEXT PRIMARY KEY,
        incident_ref INTEGER NOT NULL,
        label TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX incident_tokens_incident ON incident_tokens (incident_ref);
    ALTER TABLE deliveries ADD COLUMN incident_ref INTEGER;
    CREATE INDEX deliveries_incident ON deliveries (incident_ref) WHERE incident_ref IS NOT NULL;",
    // 8: two-way chat (see `store::chat`): the peer's id of a delivered message and what it shows now,
    // indexed while it may still be edited (the condition is `chat::ACTIVE_PEER`, word for word); the
    // chat a button token's message went to; each bot's next update; leases (one poller of several).
    "ALTER TABLE deliveries ADD COLUMN peer_ref TEXT;
    ALTER TABLE deliveries ADD COLUMN peer_shown TEXT;
    CREATE INDEX deliveries_peer ON deliveries (id)
        WHERE peer_ref IS NOT NULL AND incident_ref IS NOT NULL
        AND (peer_shown IS NULL OR peer_shown NOT IN ('resolved', 'stopped'));
    ALTER TABLE incident_tokens ADD COLUMN chat TEXT;
    CREATE TABLE bot_state (
        bot TEXT PRIMARY KEY,
        next_offset INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until_ms INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: the console's listing (see `store::browse`): one index per filter that may keep few rows, each
    // read newest first (an index ends with the row id). `done` is most rows, so the id order finds
    // them and the status index leaves them out: a delivery leaves it when it is sent, and no
    // statement that does not name the partial condition can take it for another purpose. Each costs
    // intake an index write. Status, rule and channel write at the end of one value's run (a few hot
    // pages per commit); the device's lands on a random page, about 4 KiB more WAL per delivery at 50
    // deliveries a commit: what the device filter costs.
    "CREATE INDEX deliveries_status ON deliveries (status) WHERE status <> 'done';
    CREATE INDEX deliveries_device ON deliveries (device_id);
    CREATE INDEX deliveries_rule ON deliveries (rule);
    CREATE INDEX deliveries_channel ON deliveries (channel);",
];

type AnyResult = Result<Box<dyn Any + Send>, StoreError>;

struct Job {
    run: Box<dyn FnOnce(&Connection) -> AnyResult + Send>,
    reply: oneshot::Sender<AnyResult>,
    /// Nobody was or will be told it is on disk (outcomes, claims): a batch of only such jobs commits
    /// without an fsync of its own (see the module docs).
    lazy: bool,
}

/// Outcomes waiting for the writer's next batch (see the module docs).
type Parked = Arc<Mutex<Vec<Job>>>;

/// A job that only wakes the writer, so that it takes the parked outcomes.
fn wake_up_job() -> Job {
    Job {
        run: Box::new(|_| Ok(Box::new(()) as Box<dyn Any + Send>)),
        reply: oneshot::channel().0,
        lazy: true,
    }
}

/// The SQLite store.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    /// Outcomes parked for the next batch.
    parked: Parked,
    /// How long a parked outcome waits for a batch to ride on ([`LINGER`]).
    linger: Duration,
    path: PathBuf,
    /// Read-only, for the outbox figures (see the module docs). One at a time: reads are short.
    reader: Arc<Mutex<Connection>>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database under `data_dir` and migrates it. `queue` bounds the jobs
    /// waiting for the writer.
    pub fn open(data_dir: &Path, queue: usize) -> Result<SqliteStore, StoreError> {
        Self::open_with(data_dir, queue, true)
    }

    /// A store for a run that keeps nothing (a backtest in a temporary directory): as [`Self::open`],
    /// but commits are not synced to disk (`synchronous = OFF`). Never for events someone was answered
    /// for: a crash may lose the last commits.
    pub fn open_scratch(data_dir: &Path, queue: usize) -> Result<SqliteStore, StoreError> {
        Self::open_with(data_dir, queue, false)
    }

    fn open_with(data_dir: &Path, queue: usize, durable: bool) -> Result<SqliteStore, StoreError> {
        let path = data_dir.join(DB_FILE);
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| {
            open_err(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let mut conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        configure(&conn, durable).map_err(|e| open_err(e.to_string()))?;
        migrate(&mut conn).map_err(|e| open_err(e.to_string()))?;
        if !durable {
            lighten(&conn).map_err(|e| open_err(e.to_string()))?;
        }
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(BUSY_TIMEOUT).map(|()| c))
        .map_err(|e| open_err(format!("cannot open a reading connection: {e}")))?;
        let (tx, rx) = mpsc::channel(queue.max(16));
        let parked = Parked::default();
        let writer_parked = parked.clone();
        std::thread::Builder::new()
            .name("trackrelay-sqlite".into())
            .spawn(move || writer(conn, rx, writer_parked, durable))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            jobs: tx,
            parked,
            linger: LINGER,
            path,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks every delivery due by `now_ms` sent (`done`), as a delivery worker would have sent it: a
    /// backtest, which sends nothing, calls it before it decides at `now_ms`, so that what production
    /// had sent by then is no longer pending (an incident's resolution cancels only what is still
    /// pending; so does a debounce). Returns when the first delivery still pending is due.
    pub async fn settle(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.call(true, move |c| {
            c.prepare_cached(
                "UPDATE deliveries SET status = 'done', updated_at = ?1
                 WHERE status = 'pending' AND next_at <= ?1",
            )
            .and_then(|mut s| s.execute(params![now_ms]))
            .and_then(|_| {
                c.query_row(
                    "SELECT MIN(next_at) FROM deliveries WHERE status = 'pending'",
                    [],
                    |r| r.get(0),
                )
            })
            .map_err(db)
        })
        .await
    }

    /// Folds the outcome of every delivery, in id order, into `acc` with `f`, on the reading connection
    /// (see [`DeliveryOutcome`]).
    pub async fn fold_outcomes<A, F>(&self, mut acc: A, f: F) -> Result<A, StoreError>
    where
        A: Send + 'static,
        F: Fn(&mut A, DeliveryOutcome) + Send + 'static,
    {
        self.read(move |c| tally::for_each(c, &mut |o| f(&mut acc, o)).map(|()| acc))
            .await
    }

    async fn call<R, F>(&self, wait: bool, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(wait, false, f).await
    }

    /// Runs `f` on the writer like [`Self::call`] (waiting for room in the queue), as a lazy job: one
    /// nobody is told is on disk (see the module docs).
    async fn call_lazy<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.submit(true, true, f).await
    }

    /// Parks `f` for the writer's next batch (see the module docs) and answers once that is committed.
    async fn park<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = job(f, true);
        let first = {
            let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            parked.push(job);
            parked.len() == 1
        };
        if first {
            // The first to park brings the writer round after LINGER, unless a batch took it before.
            let (jobs, parked, linger) = (self.jobs.clone(), self.parked.clone(), self.linger);
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                if jobs.send(wake_up_job()).await.is_err() {
                    // The writer is gone: answer what is parked (dropping a job's reply says Closed).
                    parked.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            });
        }
        answer(rx).await
    }

    async fn submit<R, F>(&self, wait: bool, lazy: bool, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = job(f, lazy);
        if wait {
            self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        } else {
            self.jobs.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        }
        answer(rx).await
    }

    /// Runs `f` on the reading connection, on a blocking thread (not the writer's, not the runtime's).
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            // A read that panicked left nothing half-done: the connection only reads.
            let c = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| StoreError::Db(format!("a read failed: {e}")))?
    }
}

/// A job running `f`, and where its answer comes.
fn job<R, F>(f: F, lazy: bool) -> (Job, oneshot::Receiver<AnyResult>)
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Job {
        run: Box::new(move |c| f(c).map(|r| Box::new(r) as Box<dyn Any + Send>)),
        reply,
        lazy,
    };
    (job, rx)
}

/// A job's answer, as the type its caller asked for.
async fn answer<R: 'static>(rx: oneshot::Receiver<AnyResult>) -> Result<R, StoreError> {
    let any = rx.await.map_err(|_| StoreError::Closed)??;
    Ok(*any
        .downcast::<R>()
        .expect("a job's answer has the type its caller asked for"))
}

fn configure(conn: &Connection, durable: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode WAL refused ({mode})"
        )));
    }
    // A 16 MiB page cache holds the hot end of both tables; checkpoints every ~16 MiB of WAL instead of
    // 4 MiB keep them from stalling commits as often.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 4096; PRAGMA temp_store = MEMORY;",
    )?;
    if !durable {
        conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -65536;")?;
    }
    Ok(())
}

/// A scratch store (see [`SqliteStore::open_scratch`]) has no reader beside its writer while it
/// writes: a journal in memory instead of the WAL writes each page once (the WAL writes it twice: into
/// the log, then into the database at a checkpoint), and the console's indexes, which a run that
/// never lists its deliveries does not read, are left out.
fn lighten(conn: &Connection) -> rusqlite::Result<()> {
    let _: String = conn.query_row("PRAGMA journal_mode = MEMORY", [], |r| r.get(0))?;
    conn.execute_batch(
        "DROP INDEX IF EXISTS deliveries_status; DROP INDEX IF EXISTS deliveries_device;
         DROP INDEX IF EXISTS deliveries_rule; DROP INDEX IF EXISTS deliveries_channel;",
    )
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database is at schema version {version}, newer than this trackrelay knows ({})",
            MIGRATIONS.len()
        )));
    }
    if version > 0 && version < MIGRATIONS.len() {
        // Some upgrades rebuild a table: say why the start takes longer.
        tracing::info!(
            from = version,
            to = MIGRATIONS.len(),
            "upgrading the database schema (once; large databases take a while)"
        );
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

/// The writer thread: batches jobs, with the outcomes parked meanwhile, into transactions until every
/// sender is gone. A `durable` store syncs a batch's commit unless every job in it is lazy.
fn writer(mut conn: Connection, mut rx: mpsc::Receiver<Job>, parked: Parked, durable: bool) {
    let mut synced = true;
    let mut last_synced = std::time::Instant::now() - GATHER_AFTER;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        take_waiting(&mut rx, &mut batch);
        let durable_jobs = durable && batch.iter().any(|j| !j.lazy);
        if durable_jobs && batch.len() < GATHER_BELOW && last_synced.elapsed() < GATHER_AFTER {
            // A steady stream of small synced batches: wait a moment so that one fsync carries more.
            // Lazy batches (outcomes, claims, a wake-up) have no fsync to share and never wait.
            std::thread::sleep(GATHER_FOR);
            take_waiting(&mut rx, &mut batch);
        }
        batch.append(&mut parked.lock().unwrap_or_else(|e| e.into_inner()));
        if durable {
            let sync = batch.iter().any(|j| !j.lazy);
            if sync {
                last_synced = std::time::Instant::now();
            }
            if sync != synced {
                let level = if sync { "FULL" } else { "NORMAL" };
                if let Err(e) = conn.pragma_update(None, "synchronous", level) {
                    fatal(&format!("cannot set synchronous = {level}: {e}"));
                }
                synced = sync;
            }
        }
        // Jobs' own panics are caught in `in_savepoint`; one here is in the transaction's handling.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_batch(&mut conn, batch))) {
            fatal(&format!(
                "the writer panicked outside a job: {}",
                panic_message(&*panic)
            ));
        }
        if !conn.is_autocommit() {
            fatal("a transaction was left open");
        }
    }
}

/// Adds the jobs waiting to `batch`, up to [`MAX_BATCH`].
fn take_waiting(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
}

/// The writer cannot vouch for its connection any more. Going on would answer every write with an error
/// (the relay 503) for as long as the process lives: exit instead, so that the supervisor restarts the
/// relay on a fresh connection (SQLite's journal rolls back whatever was not committed).
fn fatal(why: &str) -> ! {
    tracing::error!(
        error = why,
        "the SQLite writer cannot go on; exiting so that the relay is restarted"
    );
    std::process::exit(70)
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for j in batch {
                let _ = j.reply.send(Err(StoreError::Db(msg.clone())));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        match in_savepoint(&tx, job.run) {
            Ok(result) => answers.push((job.reply, result)),
            Err(e) => {
                // A job's writes could not be undone alone: undo the whole batch (dropping the
                // transaction rolls it back) and fail every job in it; none was answered yet.
                tracing::error!(error = %e, "a failed job could not be rolled back; the batch is rolled back");
                let fail = || Err(StoreError::Db(format!("batch rolled back: {e}")));
                let _ = job.reply.send(fail());
                for (reply, _) in answers {
                    let _ = reply.send(fail());
                }
                for j in jobs {
                    let _ = j.reply.send(fail());
                }
                return;
            }
        }
    }
    match tx.commit() {
        Ok(()) => {
            for (reply, r) in answers {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Db(format!("commit failed: {msg}"))));
            }
        }
    }
}

/// Runs one job in a savepoint, so a failing job leaves no half of its writes in the shared transaction.
/// A job that panics fails like one that returned an error: the panic is caught here, and the writer
/// goes on with the next job. The outer error says the savepoint itself failed: the transaction then
/// holds writes that cannot be undone alone.
/// The statements are cached: this runs for every job, thousands of times a second.
fn in_savepoint(
    c: &Connection,
    run: Box<dyn FnOnce(&Connection) -> AnyResult + Send>,
) -> Result<AnyResult, StoreError> {
    let exec = |sql: &str| {
        c.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(db)
    };
    if let Err(e) = exec("SAVEPOINT job") {
        return Ok(Err(e));
    }
    // Unwinding drops the job's statements (a cached one is reset on its way back to the cache), so
    // the connection is as the job left it: the rollback below undoes its writes.
    let r = catch_unwind(AssertUnwindSafe(|| run(c))).unwrap_or_else(|panic| {
        let msg = panic_message(&*panic);
        tracing::error!(panic = msg, "a store operation panicked; it failed alone");
        Err(StoreError::Db(format!(
            "internal error: the store operation panicked ({msg})"
        )))
    });
    if r.is_err() {
        exec("ROLLBACK TO job")?;
    }
    exec("RELEASE job")?;
    Ok(r)
}

/// Stores the event and its deliveries, or nothing when it was stored before; a copy that completes an
/// event stored without its position adds the deliveries the first copy did not produce ([`completing`]).
fn insert_event(c: &Connection, e: &NewEvent) -> Result<Accepted, StoreError> {
    match EventRow::from_returned(insert_event_row(c, e)?) {
        EventRow::Duplicate => Ok(Accepted::Duplicate),
        EventRow::New(event_ref) => decide_and_insert(c, e, event_ref),
        EventRow::Completes(event_ref) => {
            let stored = stored_keys(c, event_ref)?;
            decide_and_insert(c, &completing(e, &stored), event_ref)
        }
    }
}

/// Decides the event's incidents, then enqueues its deliveries as they left them.
fn decide_and_insert(c: &Connection, e: &NewEvent, event_ref: i64) -> Result<Accepted, StoreError> {
    let (e, outcomes) = incidents::decide_incidents(c, e, event_ref)?;
    let mut accepted = insert_deliveries(c, &e, event_ref)?;
    if let Accepted::New { incidents, .. } = &mut accepted {
        *incidents = outcomes;
    }
    Ok(accepted)
}

/// The event row's insert (see [`EventRow`]): a conflict updates only a row stored without its
/// position, and only for a copy that has it; otherwise no row comes back: a duplicate.
fn insert_event_row(c: &Connection, e: &NewEvent) -> Result<Option<(i64, i64)>, StoreError> {
    c.prepare_cached(
        "INSERT INTO events (source, event_id, device_id, event_type, received_at, txn, payload,
             position_missing)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (source, event_id) DO UPDATE SET position_missing = 2,
             payload = CASE WHEN excluded.payload <> '' THEN excluded.payload ELSE events.payload END
         WHERE events.position_missing = 1 AND excluded.position_missing = 0
         RETURNING id, position_missing",
    )
    .and_then(|mut s| {
        s.query_row(
            params![e.source, e.event_id, e.device_id, e.event_type, e.received_at_ms, e.txn, Packed(&e.payload),
                e.position_marker()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
    })
    .map_err(db)
}

/// The idempotency keys of the deliveries stored for the event row `event_ref`.
fn stored_keys(c: &Connection, event_ref: i64) -> Result<HashSet<String>, StoreError> {
    c.prepare_cached("SELECT key FROM deliveries WHERE event_ref = ?1")
        .and_then(|mut s| {
            s.query_map([event_ref], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)
}

/// Decides noise control for the deliveries of `e` and enqueues them for the event row `event_ref`.
fn insert_deliveries(c: &Connection, e: &NewEvent, event_ref: i64) -> Result<Accepted, StoreError> {
    let noise = decide_noise(e, |keys| load_states(c, keys))?;
    save_states(c, &noise.writes)?;
    cancel_holds(c, &noise.cancels, e.received_at_ms)?;
    let (rows, quieted) = plan_rows(e, noise.verdicts);
    let mut insert = c.prepare_cached(INSERT_DELIVERY).map_err(db)?;
    let mut claimed = Vec::new();
    for row in &rows {
        let digest_ref = match &row.group {
            Some(g) => Some(open_digest(c, row.d, g, event_ref, e)?),
            None => None,
        };
        let inserted = insert
            .execute(params![
                row.d.key,
                event_ref,
                row.d.channel,
                row.d.recipient,
                row.order_key,
                row.d.rule,
                e.event_id,
                e.event_type,
                e.device_id,
                row.status.as_str(),
                e.received_at_ms,
                row.d.dead,
                e.txn,
                Packed(&row.content),
                row.intake_claims(),
                row.claim,
                row.next_at,
                row.hold_key,
                row.group_key(),
                digest_ref,
                row.reason,
                row.d.incident_ref,
            ])
            .map_err(db)?
            == 1;
        if inserted && row.claim.is_some() {
            claimed.push(row.claimed(c.last_insert_rowid(), e.received_at_ms));
        }
    }
    Ok(Accepted::New {
        deliveries: e.deliveries.len(),
        claimed,
        quieted,
        incidents: Vec::new(),
    })
}

/// One delivery row (see [`RowPlan`]); a key the event already has is skipped.
const INSERT_DELIVERY: &str = "INSERT INTO deliveries (key, event_ref, channel, recipient, order_key,
        rule, event_id, event_type, device_id, status, attempts, created_at, updated_at, next_at,
        last_error, txn, content, lease_until, hold_key, group_key, digest_ref, reason, claims,
        incident_ref)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?15, ?11, ?11, ?17, ?12, ?13, ?14, ?16, ?18, ?19,
        ?20, ?21, ?15, ?22)
    ON CONFLICT (event_ref, key) DO NOTHING";

/// Suppresses the held deliveries noise control cancelled: (hold key, reason).
fn cancel_holds(c: &Connection, cancels: &[(String, String)], now: i64) -> Result<(), StoreError> {
    for (hold_key, reason) in cancels {
        c.prepare_cached(
            "UPDATE deliveries SET status = 'suppressed', reason = ?2, updated_at = ?3
             WHERE hold_key = ?1 AND status = 'pending'",
        )
        .and_then(|mut s| s.execute(params![hold_key, reason, now]))
        .map_err(db)?;
    }
    Ok(())
}

/// The digest of `g` still waiting to be sent, or a new one due at `g.due` shaped like `item`;
/// returns its row id.
fn open_digest(
    c: &Connection,
    item: &NewDelivery,
    g: &Group,
    event_ref: i64,
    e: &NewEvent,
) -> Result<i64, StoreError> {
    let open: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM deliveries WHERE group_key = ?1 AND status = 'pending' ORDER BY id LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![g.key], |r| r.get(0)).optional())
        .map_err(db)?;
    if let Some(id) = open {
        return Ok(id);
    }
    let (digest_key, content) = g.digest(item)?;
    c.prepare_cached(
        "INSERT INTO deliveries (key, event_ref, channel, recipient, rule, event_id, event_type, device_id,
             status, attempts, created_at, updated_at, next_at, txn, content, group_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            digest_key,
            event_ref,
            item.channel,
            item.recipient,
            item.rule,
            e.event_id,
            e.event_type,
            e.device_id,
            e.received_at_ms,
            g.due,
            e.txn,
            Packed(&content),
            g.key
        ])
    })
    .map_err(db)?;
    Ok(c.last_insert_rowid())
}

fn load_states(c: &Connection, keys: &[&str]) -> Result<HashMap<String, StateRow>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT state, expires_at FROM noise_state WHERE key = ?1")
        .map_err(db)?;
    let mut out = HashMap::with_capacity(keys.len());
    for k in keys {
        let row: Option<(String, i64)> = stmt
            .query_row(params![k], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)?;
        if let Some((json, expires_at)) = row {
            out.insert(k.to_string(), state_row(&json, expires_at));
        }
    }
    Ok(out)
}

fn save_states(c: &Connection, writes: &[(String, StateRow)]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO noise_state (key, state, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
        )
        .map_err(db)?;
    for (k, row) in writes {
        stmt.execute(params![k, state_json(row), row.expires_at])
            .map_err(db)?;
    }
    Ok(())
}

/// A silence row; matchers this version cannot use mark it unreadable (it then mutes nothing).
fn read_silence(r: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    let matchers: String = r.get(1)?;
    Ok(Silence::stored(
        r.get(0)?,
        &matchers,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn claim(
    c: &Connection,
    now: i64,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    // Two ordered index scans that stop at the limit: deliveries whose lease ran out (sent by a process
    // that died), then due pending ones oldest first. One scan with an OR of both would read every
    // due row and sort them, at every claim: a backlog would make each claim as slow as it is long.
    let mut stmt = c
        .prepare_cached(
            // One statement claims and returns the rows (SQLite >= 3.35, bundled).
            "UPDATE deliveries SET status = 'inflight', attempts = attempts + 1, claims = claims + 1,
                 updated_at = ?1, lease_until = ?3
             WHERE id IN (
                 SELECT id FROM (
                     SELECT d.id FROM deliveries d INDEXED BY deliveries_lease
                     WHERE d.status = 'inflight' AND d.lease_until <= ?1 AND (d.order_key IS NULL OR NOT EXISTS (
                         SELECT 1 FROM deliveries e
                         WHERE e.order_key = d.order_key AND e.id < d.id AND e.status IN ('pending', 'inflight')))
                     ORDER BY d.lease_until LIMIT ?2)
                 UNION ALL
                 SELECT id FROM (
                     SELECT d.id FROM deliveries d INDEXED BY deliveries_due
                     WHERE d.status = 'pending' AND d.next_at <= ?1 AND (d.order_key IS NULL OR NOT EXISTS (
                         SELECT 1 FROM deliveries e
                         WHERE e.order_key = d.order_key AND e.id < d.id AND e.status IN ('pending', 'inflight')))
                     ORDER BY d.next_at, d.id LIMIT ?2)
                 LIMIT ?2)
             RETURNING id, attempts, created_at, content, claims",
        )
        .map_err(db)?;
    let lease_until = now + lease.as_millis() as i64;
    let claimed = stmt
        .query_map(params![now, limit as i64, lease_until], |r| {
            Ok(Claimed {
                id: r.get(0)?,
                attempts: r.get::<_, i64>(1)? as u32,
                created_at_ms: r.get(2)?,
                content: r.get::<_, Unpacked>(3)?.0,
                claim: r.get(4)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    Ok(oldest_first(claimed))
}

/// Records each outcome if its row is still the claim it came from; returns the stale ones.
fn finish(
    c: &Connection,
    outcomes: &[(ClaimRef, Outcome)],
    now: i64,
) -> Result<Vec<ClaimRef>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, updated_at = ?3, next_at = COALESCE(?4, next_at),
             last_error = COALESCE(?5, last_error), lease_until = NULL
             WHERE id = ?1 AND status = 'inflight' AND claims = ?6 AND attempts = ?7",
        )
        .map_err(db)?;
    let mut stale = Vec::new();
    for (at, outcome) in outcomes {
        let (status, next_at, error) = outcome.columns();
        let n = stmt
            .execute(params![
                at.id,
                status.as_str(),
                now,
                next_at,
                error,
                at.claim,
                at.attempts
            ])
            .map_err(db)?;
        if n == 0 {
            stale.push(*at);
        }
    }
    Ok(stale)
}

/// The earliest `next_at` of pending deliveries on one side of `now`: a range scan of the
/// (status, next_at) index, cheap however long the queue is.
fn min_next_at(c: &Connection, cond: &'static str, now: i64) -> Result<Option<i64>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT MIN(next_at) FROM deliveries WHERE status = 'pending' AND {cond}"
    ))
    .and_then(|mut s| s.query_row(params![now], |r| r.get(0)))
    .optional()
    .map(Option::flatten)
    .map_err(db)
}

/// One retention step: at most [`PRUNE_CHUNK`] rows of each table.
fn prune_chunk(c: &Connection, cut: Cutoffs) -> Result<Pruned, StoreError> {
    let deliveries = c
        .execute(
            &format!(
                "DELETE FROM deliveries WHERE id IN (
                     SELECT id FROM deliveries WHERE {FINISHED} AND updated_at < ?1
                     UNION ALL
                     SELECT id FROM deliveries WHERE status = 'dead' AND updated_at < ?2
                     LIMIT ?3)"
            ),
            params![cut.done, cut.dead, PRUNE_CHUNK],
        )
        .map_err(db)?;
    let events = c
        .execute(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM events WHERE received_at < ?1
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_ref = events.id)
                 AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.event_ref = events.id
                     AND (i.status <> 'resolved' OR i.next_at IS NOT NULL))
                 LIMIT ?2)",
            params![cut.done, PRUNE_CHUNK],
        )
        .map_err(db)?;
    let incidents = c
        .execute(
            "DELETE FROM incidents WHERE id IN (
                 SELECT id FROM incidents WHERE status = 'resolved' AND next_at IS NULL
                 AND updated_at < ?1 LIMIT ?2)",
            params![cut.done, PRUNE_CHUNK],
        )
        .map_err(db)?;
    c.execute(
        "DELETE FROM incident_tokens WHERE incident_ref IN (
             SELECT incident_ref FROM incident_tokens t
             WHERE NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = t.incident_ref
                 AND i.status <> 'resolved') LIMIT ?1)",
        params![PRUNE_CHUNK],
    )
    .map_err(db)?;
    let state = c
        .execute(
            "DELETE FROM noise_state WHERE key IN (
                 SELECT key FROM noise_state WHERE expires_at < ?1 LIMIT ?2)",
            params![cut.now, PRUNE_CHUNK],
        )
        .map_err(db)?
        + c.execute("DELETE FROM silences WHERE ends_at < ?1", params![cut.dead])
            .map_err(db)?;
    Ok(Pruned {
        deliveries: deliveries as u64,
        events: events as u64,
        state: (state + incidents) as u64,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(&self, event: NewEvent) -> Result<Accepted, StoreError> {
        self.call(false, move |c| insert_event(c, &event)).await
    }

    async fn claim(
        &self,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.call_lazy(move |c| claim(c, now_ms, limit, lease))
            .await
    }

    async fn finish(
        &self,
        outcomes: Vec<(ClaimRef, Outcome)>,
        now_ms: i64,
    ) -> Result<Vec<ClaimRef>, StoreError> {
        self.park(move |c| finish(c, &outcomes, now_ms)).await
    }

    async fn next_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            let retry = min_next_at(c, "next_at > ?1", now_ms)?;
            let lease = c
                .prepare_cached(
                    "SELECT MIN(lease_until) FROM deliveries WHERE status = 'inflight' AND lease_until > ?1",
                )
                .and_then(|mut s| s.query_row(params![now_ms], |r| r.get::<_, Option<i64>>(0)))
                .map_err(db)?;
            Ok(retry.into_iter().chain(lease).min())
        })
        .await
    }

    async fn oldest_due(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |c| min_next_at(c, "next_at <= ?1", now_ms))
            .await
    }

    async fn recover(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.call(true, move |c| {
            c.execute(
                "UPDATE deliveries SET status = 'pending', next_at = ?1, lease_until = NULL
                 WHERE status = 'inflight'",
                params![now_ms],
            )
            .map(|n| n as u64)
            .map_err(db)
        })
        .await
    }

    async fn list(&self, filter: Filter) -> Result<Vec<DeliveryRow>, StoreError> {
        self.read(move |c| browse::list(c, &filter)).await
    }

    async fn delivery(&self, id: i64) -> Result<Option<DeliveryDetail>, StoreError> {
        self.read(move |c| browse::delivery(c, id)).await
    }

    async fn activity(
        &self,
        since_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<ActivityBucket>, StoreError> {
        self.read(move |c| browse::activity(c, since_ms, bucket_ms))
            .await
    }

    async fn rule_counts(&self, since_ms: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |c| browse::rule_counts(c, since_ms)).await
    }

    async fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = events_limit(limit);
        self.read(move |c| browse::recent_events(c, limit)).await
    }

    async fn history(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = events_limit(limit);
        self.read(move |c| browse::history(c, since_ms, until_ms, after, limit))
            .await
    }

    async fn stored_event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.read(move |c| incidents::stored_event(c, id)).await
    }

    async fn replay(&self, which: Replay, now_ms: i64) -> Result<u64, StoreError> {
        self.call(true, move |c| {
            let set = format!(
                "UPDATE deliveries SET {REPLAY_RESET}, next_at = ?1, created_at = ?1, updated_at = ?1"
            );
            let n = match which {
                Replay::Id(id) => c.execute(
                    &format!("{set} WHERE id = ?2 AND {REPLAYABLE}"),
                    params![now_ms, id],
                ),
                Replay::AllDead => {
                    c.execute(&format!("{set} WHERE status = 'dead'"), params![now_ms])
                }
            };
            n.map(|n| n as u64).map_err(db)
        })
        .await
    }

    async fn prune(
        &self,
        now_ms: i64,
        retention: Duration,
        dead_retention: Duration,
    ) -> Result<Pruned, StoreError> {
        // In chunks, each its own job: intake and deliveries go on between them.
        prune_in_chunks(now_ms, retention, dead_retention, |cut| {
            self.call(true, move |c| prune_chunk(c, cut))
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            Ok(rows
                .into_iter()
                .filter_map(|(s, n)| Some((Status::parse(&s)?, n as u64)))
                .collect())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(true, |_| Ok(())).await
    }

    async fn digest_items(&self, digest_id: i64) -> Result<Vec<String>, StoreError> {
        self.call(true, move |c| {
            let mut stmt = c
                .prepare_cached("SELECT content FROM deliveries WHERE digest_ref = ?1 ORDER BY id")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![digest_id], |r| Ok(r.get::<_, Unpacked>(0)?.0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db);
            rows
        })
        .await
    }

    async fn noise_states(&self, keys: Vec<String>) -> Result<HashMap<String, State>, StoreError> {
        self.call(true, move |c| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            Ok(load_states(c, &keys)?
                .into_iter()
                .map(|(k, r)| (k, r.state))
                .collect())
        })
        .await
    }

    async fn add_silence(&self, s: NewSilence, now_ms: i64) -> Result<Silence, StoreError> {
        self.call(true, move |c| {
            let matchers = matchers_json(&s);
            c.query_row(
                &format!(
                    "INSERT INTO silences (matchers, starts_at, ends_at, author, comment, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {SILENCE_COLUMNS}"
                ),
                params![matchers, s.starts_at_ms, s.ends_at_ms, s.author, s.comment, now_ms],
                read_silence,
            )
            .map_err(db)
        })
        .await
    }

    async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.call(true, |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences ORDER BY id"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map([], read_silence)
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db);
            rows
        })
        .await
    }

    async fn expire_silence(&self, id: i64, now_ms: i64) -> Result<Silence, StoreError> {
        self.call(true, move |c| {
            c.execute(
                "UPDATE silences SET ends_at = MAX(MIN(ends_at, ?2), starts_at) WHERE id = ?1",
                params![id, now_ms],
            )
            .map_err(db)?;
            c.query_row(
                &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"),
                params![id],
                read_silence,
            )
            .optional()
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("silence #{id}")))
        })
        .await
    }

    async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<IncidentRow>, StoreError> {
        self.read(move |c| incidents::list(c, filter)).await
    }

    async fn incident(&self, id: i64) -> Result<Option<IncidentRow>, StoreError> {
        self.read(move |c| incidents::one(c, "id = ?1", &id)).await
    }

    async fn live_incident(&self, key: &str) -> Result<Option<IncidentRow>, StoreError> {
        let key = key.to_string();
        self.read(move |c| incidents::one(c, "key = ?1 AND status <> 'resolved'", &key))
            .await
    }

    async fn incident_by_token(
        &self,
        hash: &str,
    ) -> Result<Option<(IncidentRow, String)>, StoreError> {
        let hash = hash.to_string();
        let found = self.read(move |c| incidents::by_button(c, &hash)).await?;
        Ok(found.map(|(row, label, _)| (row, label)))
    }

    async fn due_incidents(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueIncident>, StoreError> {
        self.read(move |c| incidents::due(c, now_ms, limit)).await
    }

    async fn next_incident_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            c.query_row("SELECT MIN(next_at) FROM incidents", [], |r| r.get(0))
                .map_err(db)
        })
        .await
    }

    async fn write_incident(&self, w: IncidentWrite) -> Result<bool, StoreError> {
        self.call(true, move |c| incidents::write_incident(c, &w))
            .await
    }

    async fn reschedule_incidents(
        &self,
        rules: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.call(true, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "UPDATE incidents SET next_at = ?2, revision = revision + 1
                     WHERE rule = ?1 AND status <> 'resolved' AND (next_at IS NULL OR next_at > ?2)",
                )
                .map_err(db)?;
            let mut n = 0;
            for r in &rules {
                n += stmt.execute(params![r, now_ms]).map_err(db)? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn incident_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(incidents::counts).await
    }

    async fn incident_by_button(
        &self,
        hash: &str,
    ) -> Result<Option<(IncidentRow, String, Option<String>)>, StoreError> {
        let hash = hash.to_string();
        self.read(move |c| incidents::by_button(c, &hash)).await
    }

    async fn record_peer_refs(&self, refs: Vec<(i64, String)>) -> Result<(), StoreError> {
        self.call(true, move |c| chat::record_peer_refs(c, &refs))
            .await
    }

    async fn active_peer_messages(
        &self,
        channels: &[String],
        limit: usize,
    ) -> Result<Vec<PeerMessage>, StoreError> {
        let channels = channels.to_vec();
        self.read(move |c| chat::active(c, &channels, limit)).await
    }

    async fn stop_peer_messages_except(
        &self,
        followed: &[String],
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let followed = followed.to_vec();
        self.call(true, move |c| {
            chat::stop_except(c, &followed, created_before_ms)
        })
        .await
    }

    async fn peer_messages(&self, incident_ref: i64) -> Result<Vec<PeerMessage>, StoreError> {
        self.read(move |c| chat::of_incident(c, incident_ref)).await
    }

    async fn set_peer_shown(&self, delivery_id: i64, shown: &str) -> Result<(), StoreError> {
        let shown = shown.to_string();
        self.call(true, move |c| chat::set_shown(c, delivery_id, &shown))
            .await
    }

    async fn bot_offset(&self, bot: &str) -> Result<i64, StoreError> {
        let bot = bot.to_string();
        self.read(move |c| chat::bot_offset(c, &bot)).await
    }

    async fn event_device(&self, event_ref: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |c| chat::event_device(c, event_ref)).await
    }

    async fn set_bot_offset(&self, bot: &str, offset: i64) -> Result<(), StoreError> {
        let bot = bot.to_string();
        self.call(true, move |c| chat::set_bot_offset(c, &bot, offset))
            .await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(true, move |c| {
            chat::try_lease(c, &name, &holder, ttl_ms, now_ms)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.call(true, move |c| chat::release_lease(c, &name, &holder))
            .await
    }
}

#[cfg(test)]
mod tests {
    //! The storage contract itself (dedup, ordering, retries, leases, recovery, retention, noise state)
    //! is tested once for both backends in `tests/store_suite.rs`; here only what is SQLite's own.
    use super::*;
    use std::sync::Arc;

    /// Holds the writer thread with a job that waits until the returned sender is dropped or sent to;
    /// returns once the writer is inside that job.
    async fn hold_writer(store: &Arc<SqliteStore>) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (inside, entered) = oneshot::channel();
        let s = store.clone();
        tokio::spawn(async move {
            s.call(true, move |_| {
                let _ = inside.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
        });
        entered.await.unwrap();
        release
    }

    /// Waits until `n` jobs are queued for the writer.
    async fn queued(store: &SqliteStore, n: usize) {
        while store.jobs.max_capacity() - store.jobs.capacity() < n {
            tokio::task::yield_now().await;
        }
    }

    /// Two claimed deliveries of one event, for the outcome tests.
    async fn two_claimed(store: &SqliteStore) -> Vec<Claimed> {
        store
            .call(true, |c| {
                c.execute_batch(
                    "INSERT INTO events (id, source, event_id, device_id, event_type, received_at, payload)
                     VALUES (1, 'traccar', 42, 12, 'alarm', 1000, '{}');
                     INSERT INTO deliveries (key, event_ref, channel, recipient, rule, event_id, event_type,
                         device_id, status, created_at, updated_at, next_at, content)
                     VALUES ('tr-a', 1, 'hook', '', 'theft', 42, 'alarm', 12, 'pending', 1000, 1000, 1000, '{}'),
                            ('tr-b', 1, 'hook', '', 'theft', 42, 'alarm', 12, 'pending', 1000, 1000, 1000, '{}');",
                )
                .map_err(db)
            })
            .await
            .unwrap();
        let claimed = store
            .claim(2000, 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        claimed
    }

    async fn status_of(store: &SqliteStore, id: i64) -> String {
        store
            .read(move |c| {
                c.query_row("SELECT status FROM deliveries WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .map_err(db)
            })
            .await
            .unwrap()
    }

    /// An outcome parked alone is recorded when the wake-up job comes for it, after the linger.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_alone_is_recorded_after_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 16).unwrap();
        let claimed = two_claimed(&store).await;
        let start = std::time::Instant::now();
        let stale = store
            .finish(vec![(claimed[0].claim_ref(), Outcome::Delivered)], 3000)
            .await
            .unwrap();
        assert!(stale.is_empty());
        assert!(start.elapsed() >= LINGER, "{:?}", start.elapsed());
        assert_eq!(status_of(&store, claimed[0].id).await, "done");
        assert_eq!(status_of(&store, claimed[1].id).await, "inflight");
    }

    /// An outcome parked while another write is on its way rides on that write's batch: it is recorded
    /// and answered with it, though the wake-up job meant for it would come only an hour later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_rides_on_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), 16).unwrap();
        store.linger = Duration::from_secs(3600);
        let store = Arc::new(store);
        let claimed = two_claimed(&store).await;
        let release = hold_writer(&store).await;
        let s = store.clone();
        let at = claimed[1].claim_ref();
        let finish = tokio::spawn(async move {
            s.finish(
                vec![(
                    at,
                    Outcome::Dead {
                        error: "HTTP 410".into(),
                    },
                )],
                3000,
            )
            .await
        });
        while store.parked.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let s = store.clone();
        let write = tokio::spawn(async move {
            s.call(true, |c| {
                c.execute("UPDATE events SET txn = 'x' WHERE id = 1", [])
                    .map_err(db)
            })
            .await
        });
        queued(&store, 1).await;
        drop(release);
        let answered = tokio::time::timeout(Duration::from_secs(10), finish).await;
        assert!(answered
            .expect("answered with the batch it rode on")
            .unwrap()
            .unwrap()
            .is_empty());
        assert_eq!(write.await.unwrap().unwrap(), 1);
        assert_eq!(status_of(&store, claimed[1].id).await, "dead");
        assert!(store.parked.lock().unwrap().is_empty());
    }

    /// What `PRAGMA synchronous` is while a job runs (2: FULL, 1: NORMAL).
    fn sync_level(c: &Connection) -> Result<i64, StoreError> {
        c.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(db)
    }

    /// Only a batch of nothing but lazy jobs commits without an fsync of its own; the next batch with
    /// a durable job (intake: answered only once on disk) is synced again, and one that carries parked
    /// outcomes with a durable job is synced too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_lazy_batches_commit_without_their_own_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 16).unwrap());
        assert_eq!(store.call(true, sync_level).await.unwrap(), 2);
        assert_eq!(store.park(sync_level).await.unwrap(), 1, "parked alone");
        assert_eq!(store.call_lazy(sync_level).await.unwrap(), 1);
        assert_eq!(
            store.call(true, sync_level).await.unwrap(),
            2,
            "durable again"
        );
        // Parked beside a durable job: both run in its synced batch.
        let release = hold_writer(&store).await;
        let s = store.clone();
        let parked = tokio::spawn(async move { s.park(sync_level).await });
        while store.parked.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let s = store.clone();
        let durable = tokio::spawn(async move { s.call(true, sync_level).await });
        queued(&store, 1).await;
        drop(release);
        assert_eq!(durable.await.unwrap().unwrap(), 2);
        assert_eq!(parked.await.unwrap().unwrap(), 2);
        // A scratch store never syncs, lazy or not.
        let scratch = SqliteStore::open_scratch(&dir.path().join("scratch"), 16).unwrap();
        assert_eq!(scratch.call(true, sync_level).await.unwrap(), 0);
    }

    /// A job that panics fails alone, with an error that says so: its writes are rolled back, the job
    /// batched with it is committed, and the writer goes on taking jobs (before, the panic ended the
    /// writer thread and every later call failed with "storage is shut down").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 16).unwrap());
        let insert = |c: &Connection, id: i64| {
            c.execute(
                "INSERT INTO events (source, event_id, device_id, event_type, received_at, payload)
                 VALUES ('t', ?1, 1, 'alarm', 0, '')",
                params![id],
            )
            .map_err(db)
        };
        // The two jobs queue up behind a held writer, so they run in one transaction.
        let release = hold_writer(&store).await;
        let s = store.clone();
        let panicking = tokio::spawn(async move {
            s.call(true, move |c| -> Result<(), StoreError> {
                insert(c, 1)?;
                panic!("injected fault");
            })
            .await
        });
        queued(&store, 1).await;
        let s = store.clone();
        let mate = tokio::spawn(async move { s.call(true, move |c| insert(c, 2)).await });
        queued(&store, 2).await;
        drop(release);
        let err = panicking.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, StoreError::Db(m) if m.contains("panicked") && m.contains("injected fault")),
            "{err:?}"
        );
        mate.await.unwrap().unwrap();
        // The next job runs, and sees the mate's row but not the half of the panicking job.
        let ids = store
            .call(true, |c| {
                let mut stmt = c
                    .prepare("SELECT event_id FROM events ORDER BY id")
                    .map_err(db)?;
                let ids = stmt
                    .query_map([], |r| r.get::<_, i64>(0))
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)?;
                Ok(ids)
            })
            .await
            .unwrap();
        assert_eq!(ids, vec![2]);
        store.call(true, move |c| insert(c, 3)).await.unwrap();
    }

    /// `/metrics` reads (counts by status, the oldest due delivery) do not queue behind the writer:
    /// they answer while the writer is busy with another job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_figures_are_read_beside_a_busy_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 16).unwrap());
        let release = hold_writer(&store).await;
        // Generous: a read that waits for the writer never answers while it is held.
        let wait = Duration::from_secs(10);
        let counts = tokio::time::timeout(wait, store.counts()).await;
        let oldest = tokio::time::timeout(wait, store.oldest_due(0)).await;
        drop(release);
        assert_eq!(
            counts.expect("counts waited for the writer").unwrap(),
            vec![]
        );
        assert_eq!(
            oldest.expect("oldest_due waited for the writer").unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), 16).unwrap());
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = SqliteStore::open(dir.path(), 16).err().expect("refused");
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    /// A database of schema 3 (unique idempotency keys across the table) is rebuilt at the upgrade to 4
    /// with every row and column kept; its pending delivery is then claimed, and a key is still refused
    /// twice for the same event but is no longer a table-wide index of its own.
    #[tokio::test]
    async fn an_upgrade_from_schema_3_keeps_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut c = Connection::open(dir.path().join(DB_FILE)).unwrap();
            let tx = c.transaction().unwrap();
            for m in &MIGRATIONS[..3] {
                tx.execute_batch(m).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO events (id, source, event_id, device_id, event_type, received_at, payload)
                 VALUES (7, 'traccar', 42, 12, 'alarm', 1000, '{}');
                 INSERT INTO deliveries (id, key, event_ref, channel, recipient, rule, event_id, event_type,
                     device_id, status, attempts, created_at, updated_at, next_at, last_error, content, reason)
                 VALUES (3, 'tr-old', 7, 'hook', 'ops', 'theft', 42, 'alarm', 12, 'pending', 2, 1000, 1500,
                     2000, 'HTTP 503', '{\"kept\":true}', 'waits for quiet hours');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path(), 16).unwrap();
        let rows = store.list(Filter::default()).await.unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.id, r.key.as_str(), r.status),
            (3, "tr-old", Status::Pending)
        );
        assert_eq!((r.attempts, r.last_error.as_deref()), (2, Some("HTTP 503")));
        assert_eq!(r.reason.as_deref(), Some("waits for quiet hours"));
        let claimed = store
            .claim(5000, 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].id, claimed[0].content.as_str()),
            (3, "{\"kept\":true}")
        );
        drop(store);

        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let insert = "INSERT INTO deliveries (key, event_ref, channel, recipient, rule, event_id, event_type,
                device_id, status, created_at, updated_at, next_at, content)
            VALUES ('tr-old', ?1, 'hook', 'ops', 'theft', 42, 'alarm', 12, 'done', 0, 0, 0, '{}')";
        let err = c.execute(insert, params![7]).unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        let indexes: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for want in [
            "deliveries_event_key",
            "deliveries_due",
            "deliveries_lease",
            "deliveries_group",
        ] {
            assert!(
                indexes.iter().any(|i| i == want),
                "{want} missing: {indexes:?}"
            );
        }
        assert!(
            !indexes.iter().any(|i| i.starts_with("sqlite_autoindex")),
            "{indexes:?}"
        );
    }
}
