//! The `trackrelay` command line: `serve`, `check`, `explain`, `deliveries`, `replay`, `silence`,
//! `send-test`, `version`.

// Functions a reader can hold: clippy counts code lines (not comments or blank ones) and CI denies
// warnings, so a function over the threshold of clippy.toml fails the build.
#![warn(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use trackrelay::clock::now_ms;
use trackrelay::event::Envelope;
use trackrelay::noise::silence::{Matchers, NewSilence, SilenceSet};
use trackrelay::settings::Config;
use trackrelay::store::{Filter, Replay, Status, Store};

/// Alert relay for GPS trackers: Traccar / BikeTrax events in, the right message out, once.
///
/// Exit codes: 0 success; 1 invalid configuration, rules that do not check, or a runtime failure;
/// 2 wrong command-line usage.
#[derive(Parser)]
#[command(name = "trackrelay", version, about, long_about)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "TRACKRELAY_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Create a silence; a running relay applies it within two seconds.
    Add {
        /// Device id or name glob (`42`, `Lena*`).
        #[arg(long)]
        device: Option<String>,
        /// Device group id.
        #[arg(long)]
        group: Option<i64>,
        /// Rule name glob.
        #[arg(long)]
        rule: Option<String>,
        /// Event type glob (`alarm`, `geofence*`).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Channel name glob.
        #[arg(long)]
        channel: Option<String>,
        /// How long, from now (`2h`, `30m`, `3days`).
        #[arg(long = "for", value_parser = humantime::parse_duration, conflicts_with = "until")]
        duration: Option<std::time::Duration>,
        /// Until this time (RFC 3339, `2026-12-01T08:00:00+01:00`).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::FixedOffset>>,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        author: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List silences (active and pending; `--all` adds expired ones).
    List {
        /// Include expired silences.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        /// Silence id (from `silence list`).
        id: i64,
    },
}

#[derive(Subcommand)]
enum IncidentAction {
    /// Acknowledge: no more repeats or escalations; the people notified are told.
    Ack {
        /// Incident id (see `trackrelay incidents`).
        id: i64,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Resolve (close) it; the key's next event opens a new incident.
    Resolve {
        /// Incident id.
        id: i64,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
}

/// `trackrelay backtest`'s arguments.
#[derive(clap::Args)]
struct BacktestArgs {
    /// Config file (default: $TRACKRELAY_CONFIG, else the built-in config).
    pub config: Option<PathBuf>,
    /// Config file, as with the other commands.
    #[arg(
        short = 'c',
        long = "config",
        env = "TRACKRELAY_CONFIG",
        conflicts_with = "config"
    )]
    pub config_flag: Option<PathBuf>,
    /// Start: a date (2026-11-01, in the configured time zone), a local time (2026-11-01 08:00)
    /// or an RFC 3339 time. Default: 30 days before the end (a file without --from and --to: the
    /// start of its first event's day).
    #[arg(long)]
    pub from: Option<String>,
    /// End: a date (included, to the end of that day) or a time (excluded). Default: now (a file
    /// without --from and --to: the end of its last event's day).
    #[arg(long)]
    pub to: Option<String>,
    /// Replay a file of event bodies, one JSON webhook body a line (any order).
    #[arg(long, conflicts_with = "server")]
    pub events: Option<PathBuf>,
    /// Replay the history of this live Traccar source's server (its event reports).
    #[arg(long)]
    pub server: Option<String>,
    /// A second config to run on the same history, reported side by side.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print this many of the messages, as rendered, spread over the history.
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    /// List this many of the most notified devices.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// The longest period asked of a Traccar server at once (shorter ones while it refuses).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay. Without a config file it runs on the built-in one (every event to stdout).
    Serve {
        /// Config file.
        #[arg(short, long, env = "TRACKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the config and all rules; report every error with file:line. Exit 1 on errors.
    Check {
        /// Config file (default: $TRACKRELAY_CONFIG, else the built-in config).
        config: Option<PathBuf>,
        /// Config file, as with the other commands.
        #[arg(
            short = 'c',
            long = "config",
            env = "TRACKRELAY_CONFIG",
            conflicts_with = "config"
        )]
        config_flag: Option<PathBuf>,
        /// Also log in to every live Traccar source and name the event types and alarms the rules match
        /// there but no `web` notification of the server covers (Traccar never pushes those over the
        /// socket). Exit 1 when a source cannot be reached or something is missing.
        #[arg(long)]
        online: bool,
    },
    /// Dry run: which rules match an event, why the others do not, and the messages. Sends nothing.
    Explain {
        /// Event file (a webhook body).
        #[arg(short, long)]
        event: PathBuf,
        /// Config file (default: $TRACKRELAY_CONFIG, else the built-in config).
        config: Option<PathBuf>,
        /// Config file, as with the other commands.
        #[arg(
            short = 'c',
            long = "config",
            env = "TRACKRELAY_CONFIG",
            conflicts_with = "config"
        )]
        config_flag: Option<PathBuf>,
    },
    /// List deliveries (newest first), e.g. the dead letters: `--status dead`.
    Deliveries {
        /// Config file (read for its storage settings only: data directory or PostgreSQL URL).
        #[arg(short, long, env = "TRACKRELAY_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory itself: no config (and none of its secrets) needed.
        #[arg(long, env = "TRACKRELAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// pending, inflight, done, dead, suppressed or grouped.
        #[arg(long)]
        status: Option<String>,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this device id.
        #[arg(long)]
        device: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a dead (or delivered) delivery again, or every dead letter. A running relay picks it up.
    Replay {
        /// Config file (read for its storage settings only: data directory or PostgreSQL URL).
        #[arg(short, long, env = "TRACKRELAY_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory itself: no config (and none of its secrets) needed.
        #[arg(long, env = "TRACKRELAY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Delivery id (from `trackrelay deliveries`).
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Replay every dead letter.
        #[arg(long)]
        all_dead: bool,
    },
    /// Mute notifications by device, group, rule, event type or channel until a time.
    Silence {
        /// Config file (read for its data directory only).
        #[arg(short, long, env = "TRACKRELAY_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The data directory itself: no config (and none of its secrets) needed.
        #[arg(long, env = "TRACKRELAY_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: SilenceAction,
    },
    /// List incidents (alarms that repeat until acknowledged), or acknowledge or resolve one.
    Incidents {
        /// Config file (its data directory, and its rules for the incidents' schedules).
        #[arg(short, long, env = "TRACKRELAY_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The data directory itself: no config needed.
        #[arg(long, env = "TRACKRELAY_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<IncidentAction>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What would these rules have sent? Replays history through the rules as the relay would decide
    /// (noise control, silences of the time, incidents), on the events' own times. Sends nothing and
    /// writes nothing to the live store. History: the relay's store (default), a file (--events) or a
    /// live source's server (--server).
    Backtest(BacktestArgs),
    /// Send a test message through a channel of the config, now (no rule, no outbox).
    SendTest {
        /// Channel name.
        channel: String,
        /// Recipient (email address, chat id); default: the channel's own.
        #[arg(long)]
        to: Option<String>,
        /// Config file.
        #[arg(short, long, env = "TRACKRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Prepare the server side: the `web` notifications live sources need (`setup traccar`), or an
    /// account's webhook pointed at the relay (`setup webhook`). A dry run unless `--apply`.
    Setup {
        #[command(subcommand)]
        what: trackrelay::setup::SetupCommand,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // Both ring and aws-lc may be linked through dependencies; pin the provider so rustls never panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `check --online`: each live source's server against the rules. Says what is missing and how to add it.
async fn check_online(cfg: &Config) -> ExitCode {
    let mut ok = true;
    if cfg.traccar.is_empty() {
        println!("online: no live Traccar source configured (traccar:), nothing to check");
    }
    for src in &cfg.traccar {
        match trackrelay::source::traccar::check_online(src, &cfg.rules).await {
            Ok(missing) if missing.is_empty() => println!(
                "online: source '{}': every event type the rules match has a web notification",
                src.name
            ),
            Ok(missing) => {
                ok = false;
                println!(
                    "online: source '{}': no web notification for {}: Traccar will not push these events over the socket. \
                     In Traccar: Settings -> Notifications -> add, type as named, channel `web`, `All devices` \
                     (for alarm:X, select alarm X under Alarms)",
                    src.name,
                    missing.join(", ")
                );
            }
            Err(e) => {
                ok = false;
                println!("online: source '{}': {e}", src.name);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve { config } => {
            let cfg = load(config.as_deref())?;
            trackrelay::app::serve(cfg).await?;
        }
        Command::Check {
            config,
            config_flag,
            online,
        } => return Ok(check(config.or(config_flag).as_deref(), online).await),
        Command::Explain {
            event,
            config,
            config_flag,
        } => explain_event(&event, config.or(config_flag).as_deref()).await?,
        Command::Incidents {
            config,
            data_dir,
            action,
            all,
            json,
        } => return incidents(config.as_deref(), data_dir, action, all, json).await,
        Command::Silence {
            config,
            data_dir,
            action,
        } => {
            let store = open_store(config.as_deref(), data_dir).await?;
            return silence(store.as_ref(), action).await;
        }
        Command::Deliveries {
            config,
            data_dir,
            status,
            channel,
            device,
            limit,
            json,
        } => {
            let store = open_store(config.as_deref(), data_dir).await?;
            let filter = Filter {
                status: parse_status(status)?,
                channel,
                device_id: device,
                limit,
                ..Filter::default()
            };
            deliveries(store.as_ref(), filter, json).await?;
        }
        Command::Replay {
            config,
            data_dir,
            id,
            all_dead,
        } => {
            let store = open_store(config.as_deref(), data_dir).await?;
            return replay(store.as_ref(), id, all_dead).await;
        }
        Command::SendTest {
            channel,
            to,
            config,
        } => send_test(&channel, to.as_deref(), config.as_deref()).await?,
        Command::Backtest(args) => return backtest(args).await,
        Command::Setup { what } => return Ok(setup(what).await),
        Command::Version => println!("trackrelay {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(ExitCode::SUCCESS)
}

/// `setup traccar|webhook`: the report on standard output, the error on standard error (exit 1).
async fn setup(what: trackrelay::setup::SetupCommand) -> ExitCode {
    match trackrelay::setup::run(what, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`: loads the config and says what it holds, or every error; `--online` goes on to the servers.
async fn check(path: Option<&Path>, online: bool) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            let n: usize = cfg.rules.rules().len();
            println!(
                "ok: {} channel(s), {n} rule(s) from {} file(s){}",
                cfg.channels.len(),
                cfg.rule_files.len(),
                cfg.path
                    .as_ref()
                    .map(|p| format!(" ({})", p.display()))
                    .unwrap_or_default()
            );
            for w in trackrelay::config::warnings(&cfg) {
                println!("warning: {w}");
            }
            if online {
                return check_online(&cfg).await;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `explain`: what the rules and noise control make of the event in `event`, printed.
async fn explain_event(event: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let raw = std::fs::read_to_string(event)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", event.display()))?;
    let env = Envelope::from_json(raw.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", event.display()))?;
    let store = existing_store(&cfg).await?;
    let silences = match &store {
        Some(s) => SilenceSet::new(s.silences().await?, now_ms()),
        None => SilenceSet::default(),
    };
    for (id, reason) in silences.unreadable() {
        eprintln!("warning: silence #{id} cannot be read ({reason}): it mutes nothing");
    }
    let x = trackrelay::explain::explain(&cfg, &env, &raw, &silences, store.as_deref()).await;
    explain(&env, &x);
    Ok(())
}

/// `backtest`: runs it until done or Ctrl-C (a second Ctrl-C exits at once), prints the report.
async fn backtest(a: BacktestArgs) -> anyhow::Result<ExitCode> {
    use trackrelay::backtest::history::Source;
    let source = match (a.events, a.server) {
        (Some(f), _) => Source::File(f),
        (None, Some(s)) => Source::Server(s),
        (None, None) => Source::Store,
    };
    let json = a.json;
    let config = load(a.config.or(a.config_flag).as_deref())?;
    let store = existing_store(&config).await?;
    let options = trackrelay::backtest::Options {
        config,
        compare: a.compare.as_deref().map(|p| load(Some(p))).transpose()?,
        source,
        from: a.from,
        to: a.to,
        show: a.show,
        top: a.top,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()) && !json,
        window: chrono::Duration::from_std(a.window)?,
        store,
    };
    let stop = async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "stopping: reporting what was replayed so far (Ctrl-C again to quit at once)"
            );
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    trackrelay::backtest::engine::remove_scratch();
                    std::process::exit(130);
                }
            });
        } else {
            std::future::pending::<()>().await;
        }
    };
    let outcome = trackrelay::backtest::run(options, stop).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", trackrelay::backtest::text(&outcome));
    }
    Ok(if outcome.stopped_at.is_some() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// The configured store when its database exists (see [`trackrelay::app::existing_store`]).
async fn existing_store(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Store>>> {
    Ok(trackrelay::app::existing_store(cfg).await?)
}

/// `--status` of `deliveries`, checked.
fn parse_status(status: Option<String>) -> anyhow::Result<Option<Status>> {
    status
        .map(|s| {
            Status::parse(&s).ok_or_else(|| {
                anyhow::anyhow!(
                    "--status is one of pending, inflight, done, dead, suppressed, grouped"
                )
            })
        })
        .transpose()
}

/// `deliveries`: the deliveries `filter` selects, as JSON or a table.
async fn deliveries(store: &dyn Store, filter: Filter, json: bool) -> anyhow::Result<()> {
    let rows = store.list(filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:<10}  {:<20}  {:<14}  {:>8}  {:>5}  {:<20}  REASON / ERROR",
        "ID", "STATUS", "RULE", "CHANNEL", "EVENT", "TRIES", "UPDATED"
    );
    for r in rows {
        let why = match (r.reason, r.last_error) {
            (Some(reason), Some(e)) => format!("{reason}; {e}"),
            (a, b) => a.or(b).unwrap_or_default(),
        };
        println!(
            "{:>6}  {:<10}  {:<20}  {:<14}  {:>8}  {:>5}  {:<20}  {}",
            r.id,
            r.status.as_str(),
            r.rule,
            r.channel,
            r.event_id,
            r.attempts,
            &r.updated_at[..r.updated_at.len().min(19)],
            why
        );
    }
    Ok(())
}

/// `replay`: delivery `id` (or every dead letter) due again; fails when a given id replays nothing.
async fn replay(store: &dyn Store, id: Option<i64>, all_dead: bool) -> anyhow::Result<ExitCode> {
    let which = if all_dead {
        Replay::AllDead
    } else {
        Replay::Id(id.expect("clap requires an id without --all-dead"))
    };
    let n = store.replay(which, now_ms()).await?;
    println!(
        "{n} deliver{} due again",
        if n == 1 { "y is" } else { "ies are" }
    );
    Ok(if n == 0 && !all_dead {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `send-test`: a test message through `channel` of the config, now.
async fn send_test(channel: &str, to: Option<&str>, config: Option<&Path>) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let Some(c) = cfg.channels.get(channel) else {
        let known: Vec<_> = cfg.channels.keys().cloned().collect();
        anyhow::bail!("no channel '{channel}' (configured: {})", known.join(", "));
    };
    let n = c.test_notification(to).map_err(anyhow::Error::msg)?;
    let channels = trackrelay::channel::build_all(&cfg.channels)?;
    match channels[channel].send(&n).await {
        Ok(_) => println!(
            "sent a test message through '{channel}'{}",
            if n.recipient.is_empty() {
                String::new()
            } else {
                format!(" to {}", n.recipient)
            }
        ),
        Err(e) => anyhow::bail!("'{channel}' failed: {e}"),
    }
    Ok(())
}

/// The store of the CLI's commands: the SQLite file under `data_dir` when given, else the config's store
/// (its SQLite folder or its PostgreSQL database).
async fn open_store(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match data_dir {
        Some(d) => Arc::new(trackrelay::store::sqlite::SqliteStore::open(&d, 16)?),
        None => trackrelay::app::open_store(&load(config)?.storage, 16).await?,
    })
}

/// `incidents [--all] [--json]`, `incidents ack|resolve ID`. Acknowledging works whether or not the
/// relay runs: the notice to the people notified goes out from the relay's timer.
async fn incidents(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    action: Option<IncidentAction>,
    all: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use trackrelay::incident::AckSource;
    use trackrelay::incident_service::{acknowledge, notice_text, IncidentError, Which};
    let (rules, tz) = match (&data_dir, config) {
        (None, c) => {
            let cfg = load(c)?;
            (cfg.rules, cfg.timezone)
        }
        (Some(_), _) => (Default::default(), chrono_tz::UTC),
    };
    let store = open_store(config, data_dir).await?;
    let (id, by, resolve) = match action {
        None => {
            let rows = store
                .incidents(trackrelay::store::IncidentFilter { all, limit: 1000 })
                .await?;
            for r in &rows {
                let line = match &r.state {
                    Ok(s) if json => {
                        serde_json::json!({"id": r.id, "status": r.status_name(), "state": s})
                            .to_string()
                    }
                    Ok(s) => format!(
                        "#{} {:<12} {} (rule {}): {}",
                        r.id,
                        r.status_name(),
                        s.key,
                        s.rule,
                        trackrelay::incident::facts(s, now_ms()).summary(tz, now_ms())
                    ),
                    Err(e) => format!("#{} unreadable: {e}", r.id),
                };
                println!("{line}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(IncidentAction::Ack { id, by }) => (id, by, false),
        Some(IncidentAction::Resolve { id, by }) => (id, by, true),
    };
    match acknowledge(
        store.as_ref(),
        &rules,
        &Which::Id(id),
        &by,
        AckSource::Cli,
        resolve,
        now_ms(),
    )
    .await
    {
        Ok(a) => {
            let what = if a.changed { "" } else { "already: " };
            println!("{what}{}", notice_text(a.row.id, &a.state, tz));
            Ok(ExitCode::SUCCESS)
        }
        Err(IncidentError::NotFound) => {
            eprintln!("no incident with id {id}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("incident {id}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `silence add | list | expire`.
async fn silence(store: &dyn Store, action: SilenceAction) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    match action {
        SilenceAction::Add {
            device,
            group,
            rule,
            event_type,
            channel,
            duration,
            until,
            author,
            comment,
        } => {
            let matchers = Matchers {
                device,
                group,
                rule,
                event_type,
                channel,
            };
            matchers.validate().map_err(anyhow::Error::msg)?;
            let silence = NewSilence {
                matchers,
                starts_at_ms: now,
                ends_at_ms: silence_end(now, duration, until)?,
                author,
                comment,
            };
            let s = store.add_silence(silence, now).await?;
            println!(
                "silence #{} ({}) until {}",
                s.id,
                s.matchers.describe(),
                s.view(now).ends_at
            );
        }
        SilenceAction::List { all, json } => list_silences(store, now, all, json).await?,
        SilenceAction::Expire { id } => {
            let s = store.expire_silence(id, now).await?;
            println!("silence #{} ends {}", s.id, s.view(now).ends_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// When a new silence ends (Unix ms): `--for` from `now`, or `--until`; never in the past.
fn silence_end(
    now: i64,
    duration: Option<std::time::Duration>,
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> anyhow::Result<i64> {
    let ends_at_ms = match (duration, until) {
        (Some(d), _) => now + d.as_millis() as i64,
        (None, Some(t)) => t.timestamp_millis(),
        (None, None) => anyhow::bail!("give --for DURATION or --until TIME"),
    };
    if ends_at_ms <= now {
        anyhow::bail!("the silence would end in the past");
    }
    Ok(ends_at_ms)
}

/// `silence list`: the silences in force and to come (`all`: expired ones too), as JSON or a table.
async fn list_silences(store: &dyn Store, now: i64, all: bool, json: bool) -> anyhow::Result<()> {
    let list: Vec<_> = store
        .silences()
        .await?
        .into_iter()
        .filter(|s| all || s.ends_at_ms > now)
        .map(|s| s.view(now))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:>5}  {:<10}  {:<25}  {:<12}  {:<40}  COMMENT",
        "ID", "STATE", "ENDS", "AUTHOR", "MATCHERS"
    );
    for s in list {
        // An unreadable silence mutes nothing: say why instead of showing no matchers.
        let matchers = match (&s.matchers, &s.error) {
            (Some(m), _) => m.describe(),
            (None, e) => format!("({})", e.as_deref().unwrap_or_default()),
        };
        println!(
            "{:>5}  {:<10}  {:<25}  {:<12}  {:<40}  {}",
            s.id, s.state, s.ends_at, s.author, matchers, s.comment
        );
    }
    Ok(())
}

fn explain(env: &Envelope, x: &trackrelay::explain::Explanation) {
    println!(
        "event {} `{}` of device {} ({})\n",
        env.event.id,
        env.event.event_type,
        env.device_id(),
        env.device.as_ref().map(|d| d.name.as_str()).unwrap_or("?")
    );
    for r in &x.rules {
        match r.verdict {
            "match" => println!("MATCH     {} ({})", r.rule, r.origin),
            "no_match" => {
                let why = r
                    .error
                    .as_ref()
                    .map(|e| format!(" — error: {e}"))
                    .unwrap_or_default();
                println!(
                    "no match  {} ({}): failed `{}`{why}",
                    r.rule,
                    r.origin,
                    r.reason.as_deref().unwrap_or("")
                );
            }
            _ => println!(
                "skipped   {} ({}): {}",
                r.rule,
                r.origin,
                r.reason.as_deref().unwrap_or("")
            ),
        }
    }
    for i in &x.incidents {
        let next = i
            .schedule
            .first()
            .map(|d| {
                let n = d["n"].as_u64().map(|n| format!(" {n}")).unwrap_or_default();
                format!(
                    "; next: {}{n} at {}",
                    d["step"].as_str().unwrap_or(""),
                    d["at"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        println!("\nincident  {} (key {}): {}{next}", i.rule, i.key, i.detail);
    }
    for n in &x.notifications {
        let to = if n.recipient.is_empty() {
            String::new()
        } else {
            format!(" -> {}", n.recipient)
        };
        println!("\n--- rule '{}' -> channel '{}'{to}", n.rule, n.channel);
        if let Some(why) = &n.dead {
            println!("(would go to dead letter: {why})");
        }
        match (n.decision, &n.reason, &n.send_at) {
            ("send", _, _) => {}
            (d, reason, at) => println!(
                "({d}{}: {})",
                at.as_ref()
                    .map(|a| format!(" until {a}"))
                    .unwrap_or_default(),
                reason.as_deref().unwrap_or("")
            ),
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&n.content).unwrap_or_default()
        );
    }
    if x.rules.iter().all(|r| r.verdict != "match") {
        println!("\nno rule matches: nothing would be sent");
    } else if !x.state_known {
        println!(
            "\n(no stored state read: cooldowns and dedup windows judged as for a first event)"
        );
    }
}
