//! The channels (adapters): one file per kind with its section as written, its settings (a
//! [`ChannelKind`]) and its sender (a [`Channel`](crate::channel_config::Channel)), and `kinds!` below,
//! the list of kinds. Retries, logging and metrics are written once around the sends, in
//! [`crate::deliver`].
//!
//! Adding a channel means one new file here and one line in that list (see `docs/development.md`).

pub mod apprise;
pub mod email;
pub mod gotify;
pub mod log;
pub mod matrix;
pub mod ntfy;
pub mod preset;
pub mod pushover;
pub mod telegram;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::channel_config::{ChannelConfig, ChannelKind, Channels, Common};
use crate::retry::RetryPolicy;

/// Every channel waits at most this long for its peer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A kind's section of `channels:` as written (serde, `deny_unknown_fields`).
pub trait Section {
    /// The keys every kind has.
    fn common(&self) -> Common;
    /// Validates the kind's own keys; every problem is returned.
    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>>;
}

/// The list of channel kinds: `Variant(its section)`, the variant's name in lowercase being the `type:`
/// that selects it. It makes [`RawChannel`], a channel as written.
macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident($section:ty),)*) => {
        /// A channel as written, by `type`.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
        pub enum RawChannel {
            $($(#[$doc])* $kind($section),)*
        }

        impl RawChannel {
            fn common(&self) -> Common {
                match self {
                    $(RawChannel::$kind(s) => s.common(),)*
                }
            }

            fn compile_kind(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
                match self {
                    $(RawChannel::$kind(s) => s.compile(),)*
                }
            }
        }
    };
}

kinds! {
    /// Print to standard output.
    Log(log::RawLog),
    /// Email over SMTP.
    Email(email::RawEmail),
    /// Telegram Bot API.
    Telegram(telegram::RawTelegram),
    /// Generic HTTP webhook.
    Webhook(webhook::RawWebhook),
    /// ntfy push notifications.
    Ntfy(ntfy::RawNtfy),
    /// Gotify push notifications.
    Gotify(gotify::RawGotify),
    /// Matrix client-server API (a room message).
    Matrix(matrix::RawMatrix),
    /// Pushover push notifications.
    Pushover(pushover::RawPushover),
}

/// A channel section as written: the long form, or without `type:` an Apprise URL in `url:` (see
/// [`apprise`]), expanded into the long form's keys first.
#[derive(Debug)]
pub struct ChannelSection(pub RawChannel);

impl<'de> Deserialize<'de> for ChannelSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_yaml::Value::deserialize(d)?;
        apprise::expand_section(&mut v).map_err(D::Error::custom)?;
        RawChannel::deserialize(v)
            .map(ChannelSection)
            .map_err(D::Error::custom)
    }
}

impl RawChannel {
    /// Validates the channel `name`; every problem is returned.
    pub fn compile(
        self,
        name: &str,
        default_retry: &RetryPolicy,
    ) -> Result<ChannelConfig, Vec<String>> {
        let common = self.common();
        ChannelConfig::new(name, common, self.compile_kind(), default_retry)
    }
}

/// Builds the live channels of a configuration.
pub fn build_all(configs: &BTreeMap<String, ChannelConfig>) -> Result<Channels, BuildError> {
    let mut out: Channels = BTreeMap::new();
    for (name, c) in configs {
        let ch = c.kind.connect().map_err(|reason| BuildError {
            channel: name.clone(),
            reason,
        })?;
        out.insert(name.clone(), ch);
    }
    Ok(out)
}

/// A channel that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("channel '{channel}': {reason}")]
pub struct BuildError {
    /// Channel name.
    pub channel: String,
    /// What failed.
    pub reason: String,
}

/// An HTTP client for a channel, with its timeout and a connect timeout of at most 10 s.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Why an HTTP request failed, in words, built from the error's sources only: reqwest's own message
/// carries the URL, and URLs hold secrets (a bot token, the path of a Slack hook).
pub(crate) fn http_failure(e: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        src = inner.source();
    }
    out
}

/// What a peer's non-2xx answer says: the wait its `Retry-After` asks for, and its body (empty when
/// unreadable).
pub(crate) async fn refusal(resp: reqwest::Response) -> (Option<Duration>, String) {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    (retry_after, resp.text().await.unwrap_or_default())
}

/// Parses an HTTP `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
