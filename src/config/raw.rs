//! The configuration file as written: [`RawConfig`] mirrors `trackrelay.yaml` one to one, with
//! `deny_unknown_fields` so a typo is an error, not a silently ignored key. Its sections are the plain
//! types of [`crate::config_raw`]; a channel's is [`RawChannel`], a live source's [`RawTraccarSource`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_raw::{RawAdmin, RawDefaults, RawDelivery, RawIngest, RawRuleSource, RawStorage};
use crate::traccar_config::RawTraccarSource;

/// `trackrelay.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the HTTP server listens on.
    #[serde(default)]
    pub listen: Option<String>,
    /// IANA time zone for templates (`Europe/Vienna`); UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Webhook intake.
    #[serde(default)]
    pub ingest: RawIngest,
    /// Admin HTTP API.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Durable storage.
    #[serde(default)]
    pub storage: RawStorage,
    /// Delivery workers and the default retry policy.
    #[serde(default)]
    pub delivery: RawDelivery,
    /// Named channels, each read by [`crate::channel::ChannelSection`] when compiled (so that each
    /// one's problems name it, and all of them are reported).
    #[serde(default)]
    pub channels: BTreeMap<String, serde_yaml::Value>,
    /// Rule files or folders (relative to the config file), or rules written inline.
    #[serde(default)]
    pub rules: Vec<RawRuleSource>,
    /// Noise settings for rules that set none.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Live Traccar servers to follow over `/api/socket`.
    #[serde(default)]
    pub traccar: Vec<RawTraccarSource>,
    /// The relay's address as its users' phones reach it (`https://alerts.example.org`): links in
    /// messages (an incident's `ack_url`) start with it. Without it, messages carry no links.
    #[serde(default)]
    pub public_url: Option<String>,
}
