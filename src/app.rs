//! Builds every part from a [`Config`], runs them, and owns shutdown, in this order: stop intake (the
//! HTTP server finishes the requests in progress; live sources and the background tasks stop), so that
//! everything intake committed is handed to the delivery worker; then let the worker finish what is in
//! flight and what was handed over, within the grace period; then close the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AdminState};
use crate::bot::Bots;
use crate::channel;
use crate::channel_config::Channels;
use crate::clock::now_ms;
use crate::deliver::Dispatcher;
use crate::incident_service::IncidentService;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reload::Reloader;
use crate::runtime::{release_freed_memory, Runtime, Shared};
use crate::settings::{Config, Storage};
use crate::silence_cache::{SilenceCache, REFRESH as SILENCE_REFRESH};
use crate::source::http as ingest;
use crate::source::traccar;
use crate::store::{self, Store};

/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long [`open_store`] waits at start for a PostgreSQL database that cannot be reached (restarting, or
/// starting together with the relay).
pub const PG_STARTUP_WAIT: Duration = Duration::from_secs(30);

/// The configured store when its database exists (PostgreSQL, or a SQLite file already made), else
/// `None`: commands that only read (`explain`, `backtest`) create no database.
pub async fn existing_store(
    cfg: &crate::settings::Config,
) -> Result<Option<Arc<dyn Store>>, store::StoreError> {
    let exists = cfg.storage.postgres.is_some()
        || cfg.storage.data_dir.join(store::sqlite::DB_FILE).exists();
    Ok(if exists {
        Some(open_store(&cfg.storage, 16).await?)
    } else {
        None
    })
}

/// Opens the store the configuration names: PostgreSQL when `storage.url` is set, else the SQLite file
/// under `storage.data_dir`. `queue` bounds SQLite's write queue.
pub async fn open_store(
    storage: &Storage,
    queue: usize,
) -> Result<Arc<dyn Store>, store::StoreError> {
    match &storage.postgres {
        Some(pg) => {
            let store = store::postgres::PgStore::connect(&store::postgres::PgOptions {
                url: pg.url.expose().to_string(),
                pool: pg.pool,
                statement_timeout: pg.statement_timeout,
                connect_timeout: pg.connect_timeout,
                startup_wait: PG_STARTUP_WAIT,
                restart_grace: storage.lease,
            })
            .await?;
            tracing::info!(database = %store.redacted_url(), "store opened (PostgreSQL)");
            Ok(Arc::new(store))
        }
        None => {
            let store = store::sqlite::SqliteStore::open(&storage.data_dir, queue)?;
            tracing::info!(database = %store.path().display(), "store opened");
            Ok(Arc::new(store))
        }
    }
}

/// A running relay.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its store.
    pub store: Arc<dyn Store>,
    /// The intake path every source calls.
    pub pipeline: Pipeline,
    /// Incident timers and acknowledgements.
    pub incidents: IncidentService,
    /// Stops intake: the server, the live sources and the background tasks.
    intake: CancellationToken,
    /// Stops the delivery worker, once intake has stopped.
    delivery: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    /// Stopped with intake.
    tasks: Vec<JoinHandle<()>>,
    worker: JoinHandle<()>,
    grace: Duration,
}

/// Opens the store, builds the channels, binds the listener and starts every task.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = open_store(&config.storage, config.ingest.queue).await?;
    recover(store.as_ref()).await?;
    let channels = channel::build_all(&config.channels)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let path = config.ingest.path.clone();
    let positions_path = config.ingest.positions_path.clone();
    let rules = config.rules.rules().len();
    let grace = config.delivery.shutdown_grace;

    for w in crate::config::warnings(&config) {
        tracing::warn!("{w}");
    }
    let own_token =
        crate::console::own_token(config.admin_token.is_some(), addr, &config.storage.data_dir);
    let (services, dispatcher) = wire(config, channels, store.clone()).await?;
    let admin = AdminState {
        pipeline: services.pipeline.clone(),
        reloader: services.reloader.clone(),
        sources: services.statuses.clone(),
        outbox: Default::default(),
    };
    match &own_token {
        Ok(Some((_, file))) => tracing::info!(
            url = %format!("http://{addr}/console/"),
            token_file = %file.display(),
            "web console: no admin.token is set; log in with the token in this file (loopback only)"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "web console: off (no admin.token, and no token file)")
        }
    }
    let own_token = own_token.ok().flatten().map(|(t, _)| t);
    let console = std::sync::Arc::new(crate::console::Console::new(admin.clone(), own_token));
    let app = ingest::router(&path, &positions_path, services.pipeline.clone())
        .merge(api::router(admin.clone()))
        .merge(crate::console::router(console))
        .merge(crate::bot::webhook::router(services.bots.clone()));
    // `intake` stops intake; `delivery` stops the worker, after intake (see `Running::stop`).
    let (intake, delivery) = (CancellationToken::new(), CancellationToken::new());
    let worker = tokio::spawn(dispatcher.run(delivery.clone()));
    let tasks = spawn_intake_tasks(&services, &store, &intake);
    let sd = intake.clone();
    let server = tokio::spawn(async move {
        // With the client's address: the console counts failed logins per address.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { sd.cancelled().await })
        .await
    });
    tracing::info!(%addr, path, positions_path, rules, "trackrelay listening");
    Ok(Running {
        addr,
        store,
        pipeline: services.pipeline,
        incidents: services.incidents,
        intake,
        delivery,
        server,
        tasks,
        worker,
        grace,
    })
}

/// Makes deliveries a previous run left in flight due again.
async fn recover(store: &dyn Store) -> anyhow::Result<()> {
    let recovered = store.recover(now_ms()).await?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "deliveries left in flight by a previous run are due again"
        );
    }
    Ok(())
}

/// The services of one relay, built and wired together, not yet running (but for the delivery worker,
/// which [`wire`] returns beside them).
struct Services {
    /// The intake path every source calls.
    pipeline: Pipeline,
    /// Hot reload.
    reloader: Arc<Reloader>,
    /// The live sources' states, for the admin API.
    statuses: Arc<traccar::Statuses>,
    /// The silences in force.
    silences: Arc<SilenceCache>,
    /// The runtime in force.
    shared: Arc<Shared>,
    /// Incident timers and acknowledgements.
    incidents: IncidentService,
    /// Two-way Telegram bots.
    bots: Bots,
}

/// Builds the services on `config` and `store`: the shared runtime, the instruments, the silences (read
/// once now), the pipeline, the reloader, and the delivery worker with its fast lane from intake.
async fn wire(
    config: Config,
    channels: Channels,
    store: Arc<dyn Store>,
) -> anyhow::Result<(Services, Dispatcher)> {
    let (workers, grace) = (config.delivery.workers, config.delivery.shutdown_grace);
    let config_path = config.path.clone();
    let shared = Arc::new(Shared::new(Runtime { config, channels }));
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());
    let incidents_wake = Arc::new(Notify::new());
    // The fast lane holds at most one worker pool's worth of deliveries claimed at intake.
    let (fast_tx, fast_rx) = tokio::sync::mpsc::channel(workers);
    let silences = Arc::new(SilenceCache::new(metrics.clone()));
    let directories: Arc<crate::directory::Directories> = Arc::default();
    let whereabouts: Arc<crate::directory::Whereabouts> = Arc::default();
    silences
        .refresh(store.as_ref())
        .await
        .context("cannot read the silences")?;
    let pipeline = Pipeline {
        shared: shared.clone(),
        store: store.clone(),
        wake: wake.clone(),
        fast: fast_tx,
        metrics: metrics.clone(),
        silences: silences.clone(),
        directories: directories.clone(),
        incidents_wake: incidents_wake.clone(),
        whereabouts: whereabouts.clone(),
    };
    let bots = Bots {
        shared: shared.clone(),
        store: store.clone(),
        whereabouts,
        directories,
        silences: silences.clone(),
        metrics: metrics.clone(),
        incidents_wake: incidents_wake.clone(),
        follow_wake: Default::default(),
        holder: crate::bot::new_holder(),
    };
    let incidents = IncidentService {
        shared: shared.clone(),
        store: store.clone(),
        wake_worker: wake.clone(),
        wake: incidents_wake,
        silences: silences.clone(),
        metrics: metrics.clone(),
        removed: Default::default(),
    };
    let reloader = Arc::new(Reloader::new(config_path, shared.clone(), metrics.clone()));
    let statuses = Arc::new(traccar::Statuses::default());
    let dispatcher = Dispatcher {
        store,
        shared: shared.clone(),
        wake,
        workers,
        grace,
        fast: fast_rx,
        metrics,
    };
    let services = Services {
        pipeline,
        reloader,
        statuses,
        silences,
        shared,
        incidents,
        bots,
    };
    Ok((services, dispatcher))
}

/// Starts the tasks that stop with intake: one per live Traccar source, the reload watcher, the silence
/// refresh and retention.
fn spawn_intake_tasks(
    services: &Services,
    store: &Arc<dyn Store>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for src in services.shared.get().config.traccar.clone() {
        tracing::info!(source = %src.name, url = %src.url, "following a Traccar server");
        tasks.push(tokio::spawn(traccar::run(
            src,
            services.pipeline.clone(),
            services.statuses.clone(),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(
        services.reloader.clone().watch(shutdown.clone()),
    ));
    tasks.push(tokio::spawn(refresh_silences(
        services.silences.clone(),
        store.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(
        services.incidents.clone().run(shutdown.clone()),
    ));
    tasks.push(tokio::spawn(services.bots.clone().run(shutdown.clone())));
    tasks.push(tokio::spawn(crate::bot::pushover::run(
        services.bots.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(prune(
        services.shared.clone(),
        store.clone(),
        shutdown.clone(),
    )));
    tasks
}

/// Re-reads the silences every [`SILENCE_REFRESH`] until `shutdown`: silences made by the CLI or another
/// instance apply within one refresh.
async fn refresh_silences(
    silences: Arc<SilenceCache>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SILENCE_REFRESH) => {}
        }
        if let Err(e) = silences.refresh(store.as_ref()).await {
            tracing::warn!(error = %e, "cannot re-read the silences; the last ones read still apply");
        }
    }
}

/// Retention: prunes at once, then every [`PRUNE_INTERVAL`] until `shutdown`, with the retention of the
/// configuration in force.
async fn prune(shared: Arc<Shared>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        let st = shared.get().config.storage.clone();
        match store.prune(now_ms(), st.retention, st.dead_retention).await {
            Ok(p) if p.deliveries + p.events + p.state > 0 => {
                tracing::info!(
                    deliveries = p.deliveries,
                    events = p.events,
                    state = p.state,
                    "retention: pruned"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

impl Running {
    /// Stops intake, then drains the delivery worker, and waits for every task (see the module docs).
    pub async fn stop(self) -> anyhow::Result<()> {
        // New connections are refused at once; requests in progress get the grace period to finish.
        // One cut off then is no loss: what its event committed is handed over all the same (see
        // `Pipeline::ingest`), and its sender was not answered, so it sends the event again.
        self.intake.cancel();
        match tokio::time::timeout(self.grace, self.server).await {
            Ok(r) => r.context("server task")??,
            Err(_) => tracing::warn!(
                grace = ?self.grace,
                "requests still in progress at the end of the grace period; no longer waiting for them"
            ),
        }
        for t in self.tasks {
            t.await.context("intake task")?;
        }
        // Intake has stopped: the worker sends what it committed, and what is in flight.
        self.delivery.cancel();
        self.worker.await.context("delivery worker")?;
        // The store closes with its last handle (SQLite: the writer thread ends once its queue is empty).
        drop(self.pipeline);
        drop(self.store);
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    release_freed_memory();
    shutdown_signal().await;
    tracing::info!("shutting down: stopping intake, then finishing sends in flight");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
