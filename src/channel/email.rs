//! The `email` channel: SMTP through lettre (tokio, rustls), a plain text and an HTML part, the
//! notification's idempotency key as `Message-ID`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{Section, DEFAULT_TIMEOUT};
use crate::channel_config::{Channel, ChannelKind, Common, Message, SendError, Sent};
use crate::config_raw::{OneOrMany, RawRateLimit, RawRetry};
use crate::notification::{Content, Notification};
use crate::render::{escape_html, html_page};
use crate::secret::Secret;
use crate::severity::Severity;

/// Default subject template.
pub const DEFAULT_SUBJECT: &str = "{{ title }}: {{ device.name }}";
/// Default body template (the HTML part is the same template, HTML-escaped).
pub const DEFAULT_TEMPLATE: &str = "{{ title }}\n\nDevice: {{ device.name }}\nTime: {{ time_local }}\
{% if position %}\nSpeed: {{ speed_kmh }} km/h{% if position.address %}\nAddress: {{ position.address }}{% endif %}\
{% if map_url %}\nMap: {{ map_url }}{% endif %}{% endif %}{% if geofence %}\nGeofence: {{ geofence.name }}{% endif %}";

/// Email channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// SMTP host.
    pub host: String,
    /// SMTP port (default by security: 587, 465 or 25).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    pub security: Option<String>,
    /// SMTP user.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<String>,
    /// Sender (`Name <addr>`).
    pub from: String,
    /// Default recipients.
    #[serde(default)]
    pub to: Option<OneOrMany<String>>,
    /// Default subject template.
    pub subject: Option<String>,
    /// Default body template.
    pub template: Option<String>,
    /// Connect + send timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Retry overrides.
    #[serde(default)]
    pub retry: RawRetry,
    /// Rate limit per recipient.
    pub rate_limit: Option<RawRateLimit>,
}

impl Section for RawEmail {
    fn common(&self) -> Common {
        Common::of(&self.template, &self.retry, &self.rate_limit)
    }

    fn compile(self) -> Result<Box<dyn ChannelKind>, Vec<String>> {
        Ok(Box::new(EmailSettings::compile(&self)?))
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (port 587); required, not opportunistic.
    StartTls,
    /// Implicit TLS (port 465).
    Tls,
    /// No encryption (local relays, tests).
    None,
}

/// Validated email settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// SMTP host.
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// Security.
    pub security: Security,
    /// Login.
    pub credentials: Option<(String, Secret)>,
    /// Sender.
    pub from: Mailbox,
    /// Default recipients.
    pub to: Vec<String>,
    /// Subject template source.
    pub subject: String,
    /// Timeout.
    pub timeout: Duration,
}

impl EmailSettings {
    /// Validates raw settings.
    pub fn compile(raw: &RawEmail) -> Result<EmailSettings, Vec<String>> {
        let mut errors = Vec::new();
        let security = match raw.security.as_deref().unwrap_or("starttls") {
            "starttls" => Security::StartTls,
            "tls" => Security::Tls,
            "none" => Security::None,
            other => {
                errors.push(format!(
                    "security: `{other}` is not one of starttls, tls, none"
                ));
                Security::StartTls
            }
        };
        let from = raw
            .from
            .parse::<Mailbox>()
            .map_err(|e| format!("from: `{}`: {e}", raw.from));
        let to: Vec<String> = raw.to.clone().map(|t| t.into_vec()).unwrap_or_default();
        for addr in &to {
            if let Err(e) = addr.parse::<Mailbox>() {
                errors.push(format!("to: `{addr}`: {e}"));
            }
        }
        // Empty values (from `${SMTP_USER:-}`) mean "not set": a relay that takes mail without login.
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let credentials = match (&nonempty(&raw.username), &nonempty(&raw.password)) {
            (Some(u), Some(p)) => Some((u.clone(), Secret(p.clone()))),
            (None, None) => None,
            _ => {
                errors.push("username and password go together".into());
                None
            }
        };
        if raw.host.trim().is_empty() {
            errors.push("host is empty".into());
        }
        let from = from.map_err(|e| errors.push(e)).ok();
        match from {
            Some(from) if errors.is_empty() => Ok(EmailSettings {
                host: raw.host.clone(),
                port: raw.port.unwrap_or(match security {
                    Security::StartTls => 587,
                    Security::Tls => 465,
                    Security::None => 25,
                }),
                security,
                credentials,
                from,
                to,
                subject: raw
                    .subject
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SUBJECT.into()),
                timeout: raw.timeout.unwrap_or(DEFAULT_TIMEOUT),
            }),
            _ => Err(errors),
        }
    }
}

impl ChannelKind for EmailSettings {
    fn name(&self) -> &'static str {
        "email"
    }

    fn default_template(&self) -> &'static str {
        DEFAULT_TEMPLATE
    }

    fn ordered(&self) -> bool {
        // One mailbox reads alarms in the order they happened.
        true
    }

    fn recipients(&self) -> Option<&[String]> {
        Some(&self.to)
    }

    fn subject(&self) -> Option<&str> {
        Some(&self.subject)
    }

    fn html_part(&self) -> bool {
        true
    }

    fn content(&self, m: Message<'_>) -> Vec<(&'static str, Content)> {
        vec![(
            "msg",
            Content::Email {
                subject: m.subject.unwrap_or_default(),
                text: m.text,
                html: html_page(&m.html.unwrap_or_default()),
                severity: (m.severity != Severity::Normal).then_some(m.severity),
            },
        )]
    }

    fn test_content(&self, text: String) -> Content {
        Content::Email {
            subject: "trackrelay test message".into(),
            html: html_page(&escape_html(&text)),
            text,
            severity: None,
        }
    }

    fn connect(&self) -> Result<Arc<dyn Channel>, String> {
        Ok(Arc::new(EmailChannel::new(self)?))
    }
}

/// Sends mail over one pooled SMTP transport.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailChannel {
    /// Builds the transport (no connection is made until the first send).
    pub fn new(s: &EmailSettings) -> Result<EmailChannel, String> {
        let tls = || TlsParameters::new(s.host.clone()).map_err(|e| format!("TLS setup: {e}"));
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port)
            .timeout(Some(s.timeout));
        b = match s.security {
            Security::StartTls => b.tls(Tls::Required(tls()?)),
            Security::Tls => b.tls(Tls::Wrapper(tls()?)),
            Security::None => b.tls(Tls::None),
        };
        if let Some((user, pass)) = &s.credentials {
            b = b.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(EmailChannel {
            transport: b.build(),
            from: s.from.clone(),
        })
    }
}

#[async_trait]
impl Channel for EmailChannel {
    async fn send(&self, n: &Notification) -> Result<Sent, SendError> {
        let Content::Email {
            subject,
            text,
            html,
            severity,
        } = &n.content
        else {
            return Err(SendError::permanent(
                "email channel got a message rendered for another kind",
            ));
        };
        let to: Mailbox = n.recipient.parse().map_err(|e| {
            SendError::permanent(format!("bad recipient address `{}`: {e}", n.recipient))
        })?;
        let mut msg = lettre::Message::builder();
        if let Some((importance, priority)) = severity.and_then(importance) {
            msg = msg
                .header(Importance(importance))
                .header(XPriority(priority));
        }
        let msg = msg
            .from(self.from.clone())
            .to(to)
            .subject(subject.as_str())
            // Stable across retries, so a mail sent twice after a crash is recognisably one message.
            .message_id(Some(format!("<{}@trackrelay>", n.key)))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html.clone()),
                    ),
            )
            .map_err(|e| SendError::permanent(format!("cannot build mail: {e}")))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(Sent::default()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("SMTP: {e}"))),
            // 4xx, timeouts, refused connections, TLS hiccups: the server may be back later.
            Err(e) => Err(SendError::transient(format!("SMTP: {e}"))),
        }
    }
}

/// The `Importance` (RFC 2156) and `X-Priority` values of a severity; `None` for normal, which mail
/// clients show without either.
pub fn importance(s: Severity) -> Option<(&'static str, &'static str)> {
    match s {
        Severity::Critical => Some(("high", "1 (Highest)")),
        Severity::High => Some(("high", "2 (High)")),
        Severity::Normal => None,
        Severity::Low => Some(("low", "5 (Lowest)")),
    }
}

/// Declares a mail header whose value is one of a few fixed words.
macro_rules! fixed_header {
    ($(#[$doc:meta])* $ty:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $ty(pub &'static str);

        impl Header for $ty {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Err("written only".into())
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.to_string())
            }
        }
    };
}

fixed_header!(
    /// `Importance: high | low` (Outlook, Thunderbird, Apple Mail).
    Importance,
    "Importance"
);
fixed_header!(
    /// `X-Priority: 1 (Highest)` … `5 (Lowest)` (older clients).
    XPriority,
    "X-Priority"
);
