//! trackrelay: an alert relay for GPS trackers. Traccar and BikeTrax events come in (webhook), YAML rules
//! pick what matters, and the right message goes out by email, Telegram or webhook — durably, once.
//!
//! ```text
//! source (webhook POST) -> decode -> Event
//!   -> rules: RuleSet::evaluate (pure) -> matching rules
//!   -> plan: render templates per target (pure) -> notifications
//!   -> store: event + deliveries in one transaction (dedup by event id)   <- ack to the sender after commit
//!   -> deliver: claim due -> Channel::send -> done | retry at t | dead letter
//! ```
//!
//! # Layout
//!
//! - [`config`]: `trackrelay.yaml` and rule files -> validated [`config::Config`], all errors at once.
//! - [`event`]: Traccar's models, tolerant of every version.
//! - [`geo`]: WKT geofences, Traccar-exact containment, the zone enter/exit tracker with dwell.
//! - [`rules`]: matchers, field paths, expressions; [`rules::RuleSet`] indexed by event type.
//! - [`render`]: templates and per-channel escaping; [`plan`]: matched rules -> notifications.
//! - [`notification`]: what is sent, with its idempotency key.
//! - [`store`]: the durable store interface and its SQLite backend (group commit).
//! - [`retry`]: the retry policy as data; [`deliver`]: the worker that sends and records outcomes.
//! - [`channel`]: the `Channel` trait and its log, email, Telegram and webhook implementations.
//! - [`source`]: where events come from (the webhook); [`pipeline`]: what every source calls.
//! - [`api`]: HTTP errors, token checks, health, metrics and the admin API; [`app`]: wiring and shutdown.
//! - [`metrics`]: Prometheus instruments; [`reload`]: hot reload on SIGHUP, file change or API call.

pub mod api;
pub mod app;
pub mod channel;
pub mod config;
pub mod deliver;
pub mod event;
pub mod explain;
pub mod geo;
pub mod metrics;
pub mod noise;
pub mod notification;
pub mod pipeline;
pub mod plan;
pub mod reload;
pub mod render;
pub mod retry;
pub mod rules;
pub mod source;
pub mod store;
