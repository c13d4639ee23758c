//! The `log` channel: prints each notification to standard output, so the built-in configuration works
//! with no external service and a first `curl` shows what a rule would send.

use std::io::Write;

use async_trait::async_trait;

use super::{Channel, SendError};
use crate::notification::{Content, Notification};

/// Default template of log and webhook messages: one headline, the device, the time, where.
pub const DEFAULT_TEMPLATE: &str = "{{ title }}: {{ device.name }} at {{ time_local }}\
{% if position %} ({% if position.address %}{{ position.address }}, {% endif %}{{ speed_kmh }} km/h){% if map_url %} {{ map_url }}{% endif %}{% endif %}";

/// Writes to standard output.
#[derive(Debug, Default)]
pub struct LogChannel;

#[async_trait]
impl Channel for LogChannel {
    async fn send(&self, n: &Notification) -> Result<(), SendError> {
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
            .map_err(|e| SendError::transient(format!("stdout: {e}")))
    }
}
