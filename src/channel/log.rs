//! The `log` channel: prints each notification to standard output, so the built-in configuration works
//! with no external service and a first `curl` shows what a rule would send.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::Section;
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};

/// Default template of log and webhook messages: one headline, the device, the time, where.
pub const DEFAULT_TEMPLATE: &str = "{{ title }}: {{ device.name }} at {{ time_local }}\
{% if position %} ({% if position.address %}{{ position.address }}, {% endif %}{{ speed_kmh }} km/h){% if map_url %} {{ map_url }}{% endif %}{% endif %}";

/// Log channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Default message template.
    pub template: Option<String>,
    /// Retry overrides (a log channel does not fail, but the key is accepted everywhere).
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
}

impl Section for RawLog {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(LogSettings))
    }
}

/// The log channel's settings: it has none of its own.
#[derive(Debug)]
pub struct LogSettings;

impl ChannelKind for LogSettings {
    fn name(&self) -> &'static str {
        "log"
    }

    fn default_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn ordered(&self) -> bool {
        false
    }

    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        vec![("msg", Content::Log { text: m.text })]
    }

    fn test_content(&self, text: String) -> Content {
        Content::Log { text }
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(LogChannel))
    }
}

/// Writes to standard output.
#[derive(Debug, Default)]
pub struct LogChannel;

#[async_trait]
impl Channel for LogChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let text = match &n.content {
            Content::Log { text } => text,
            other => {
                return Err(SendError::permanent(format!(
                    "log channel cannot send {other:?}"
                )))
            }
        };
        let line = format!(
            "[{}] rule={} event={} {}\n",
            n.channel, n.origin.rule, n.origin.event_id, text
        );
        // A closed stdout is an environment problem, not the message's: retry later.
        std::io::stdout()
            .lock()
            .write_all(line.as_bytes())
            .map(|()| Sent::default())
            .map_err(|e| SendError::transient(format!("stdout: {e}")))
    }
}
