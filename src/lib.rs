//! trackrelay: an alert relay for GPS trackers. Traccar and BikeTrax events come in (webhook, or a live
//! Traccar WebSocket), YAML rules pick what matters, and the right message goes out by email, Telegram,
//! webhook or log: durably, once.
//!
//! ```text
//! source (webhook POST | Traccar /api/socket + REST) -> decode -> Envelope (event + its position)
//!   -> rules: RuleSet::evaluate (pure) -> matching rules
//!   -> plan: silences, schedules, render per target (pure) -> notifications
//!   -> store: event + deliveries in one transaction (dedup by source and event id), noise control
//!      decided inside it                                     <- ack to the sender after commit
//!   -> deliver: claim due -> Channel::send -> done | retry at t | dead letter
//! ```
//!
//! # Layout
//!
//! - [`clock`]: Unix milliseconds now and as RFC 3339 (uses no other module).
//! - [`config`]: `trackrelay.yaml` and rule files -> validated [`settings::Config`], all errors at once.
//! - [`settings`]: the compiled configuration as data ([`settings::Config`] and its sections, with their
//!   defaults), read by the services, the planner and the sources.
//! - [`config_raw`]: the sections of the configuration as written (plain serde data, read by retry, rules
//!   and noise for their own settings; a channel's own section lives with the channel).
//! - [`event`]: Traccar's models, tolerant of every version.
//! - [`geo`]: WKT geofences, Traccar-exact containment, a spatial index of the zones, the zone
//!   enter/exit tracker with dwell.
//! - [`rules`]: matchers, field paths, expressions; [`rules::RuleSet`] indexed by event type.
//! - [`render`]: templates, per-channel escaping and the HTML mail page; [`plan`]: matched rules ->
//!   notifications.
//! - [`noise`]: cooldown, dedup, debounce, digests, rate limits, schedules and silences (decided purely;
//!   their state lives in the store).
//! - [`incident`]: incidents (an alarm that repeats and escalates until acknowledged), decided purely:
//!   policy, state, schedule and the facts their messages tell; [`incident_service`]: their timers
//!   (repeats, escalations, notices) and acknowledgements from every source.
//! - [`directory`]: devices, groups and geofences a live source knows, used to enrich webhook events.
//! - [`notification`]: what is sent, with its idempotency key.
//! - [`store`]: the durable store interface; its SQLite backend (one instance, group commit) and its
//!   PostgreSQL backend (several instances, leases).
//! - [`retry`]: the retry policy as data; [`deliver`]: the worker that sends and records outcomes.
//! - [`channel_config`]: what a channel is to the rest of the relay (pure): the `Channel` trait the
//!   senders implement, the `ChannelKind` trait each kind's settings implement, and `ChannelConfig`.
//! - [`channel`]: the kinds, one file each (log, email, Telegram, webhook: section as written, settings,
//!   sender), and the list of them.
//! - [`bot`]: two-way Telegram: button presses and commands acted on, incident messages edited and
//!   live pins moved as the incident changes, one poller among instances (a lease).
//! - [`secret`]: a token or password that debug output and logs show as `***`, and the constant-time
//!   check of a presented one (uses no other module).
//! - [`source`]: where events come from: the webhook ([`source::http`]) and the live Traccar source
//!   ([`source::traccar`]: login, socket, events joined with their positions, backfill, zones);
//!   [`pipeline`]: what every source calls.
//! - [`traccar_config`]: a live Traccar source's settings, as written and compiled (plain data, used by
//!   [`config`] and [`source::traccar`]).
//! - [`explain`]: what the rules and noise control would do with an event, without sending.
//! - [`setup`]: `trackrelay setup`: the `web` notifications a live source needs, and an account's
//!   webhook pointed at the relay, planned and (with `--apply`) made on the server.
//! - [`http_error`]: the one error type every HTTP endpoint answers with (JSON, no internals).
//! - [`api`]: health, metrics and the admin API; [`app`]: wiring (it opens the store the
//!   configuration names) and shutdown.
//! - [`runtime`]: the configuration in force with its channels, shared by the services, swapped on reload.
//! - [`silence_cache`]: the silences in force, re-read from the store every two seconds.
//! - [`metrics`]: Prometheus instruments; [`reload`]: hot reload on SIGHUP, file change or API call.
//!
//! The reference for users is in `docs/`; the facts about Traccar the live source relies on are in
//! `docs/reference/`.

// Functions a reader can hold: clippy counts code lines (not comments or blank ones) and CI denies
// warnings, so a function over the threshold of clippy.toml fails the build.
#![warn(clippy::too_many_lines)]

pub mod api;
pub mod app;
pub mod backtest;
pub mod bot;
pub mod channel;
pub mod channel_config;
pub mod clock;
pub mod config;
pub mod config_raw;
pub mod console;
pub mod deliver;
pub mod directory;
pub mod event;
pub mod explain;
pub mod geo;
pub mod http_error;
pub mod incident;
pub mod incident_service;
pub mod metrics;
pub mod noise;
pub mod notification;
pub mod pipeline;
pub mod plan;
pub mod reload;
pub mod render;
pub mod retry;
pub mod rules;
pub mod runtime;
pub mod secret;
pub mod settings;
pub mod setup;
pub mod severity;
pub mod silence_cache;
pub mod source;
pub mod store;
pub mod traccar_config;
