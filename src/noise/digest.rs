//! Digests: one message listing the notifications grouped under one key ("14 devices offline: ...").
//!
//! A digest is an ordinary delivery in the outbox (so it is retried, leased and dead-lettered like any
//! other, and exactly one instance sends it); its items are the grouped deliveries, which point at it.
//! The message is built when the digest is sent, from the items, by [`build`].

use crate::notification::{Content, Notification, ParseMode};
use crate::render::{escape_html, escape_markdown_v2};
use crate::severity::Severity;

/// Most items listed in one digest message; the rest are counted.
pub const MAX_LISTED: usize = 50;

/// The default title.
pub fn default_title(count: usize, rule: &str) -> String {
    if rule.is_empty() {
        format!("{count} notifications")
    } else {
        format!("{count} notifications from {rule}")
    }
}

/// Builds the message of a digest titled `title` (plain text; escaped here per format) from its items,
/// oldest first. `template` is the shape of the digest's own content (its channel's kind).
pub fn build(template: &Content, title: &str, items: &[Notification]) -> Content {
    let listed = &items[..items.len().min(MAX_LISTED)];
    let items = Listed {
        listed,
        more: items.len() - listed.len(),
    };
    match template {
        // A digest is as loud as its rule's messages.
        Content::Email { severity, .. } => email(title, &items, *severity),
        Content::TelegramText {
            parse_mode, silent, ..
        } => telegram(*parse_mode, *silent, title, &items),
        Content::Webhook { content_type, .. } => webhook(content_type, title, &items),
        _ => {
            let mut lines = items.texts(&plain);
            lines.extend(items.more_line());
            Content::Log {
                text: format!("{title}: {}", lines.join(" | ")),
            }
        }
    }
}

/// The items a digest lists, and how many more it only counts.
struct Listed<'a> {
    listed: &'a [Notification],
    more: usize,
}

impl Listed<'_> {
    /// The text `f` takes from each listed item's content, where it gives one.
    fn texts(&self, f: &dyn Fn(&Content) -> Option<String>) -> Vec<String> {
        self.listed.iter().filter_map(|n| f(&n.content)).collect()
    }

    /// `… and N more`, when items are left out.
    fn more_line(&self) -> Option<String> {
        (self.more > 0).then(|| format!("… and {} more", self.more))
    }
}

/// An email digest: the items' texts and their HTML bodies, one after the other, in one page.
fn email(title: &str, items: &Listed<'_>, severity: Option<Severity>) -> Content {
    let text = items.texts(&|c| match c {
        Content::Email { text, .. } => Some(text.clone()),
        other => plain(other),
    });
    let html = items.texts(&|c| match c {
        Content::Email { html, .. } => Some(body_of(html).to_string()),
        other => plain(other).map(|t| escape_html(&t)),
    });
    let mut text_part = format!("{title}\n\n{}", text.join("\n\n"));
    let mut html_part = format!("<h3>{}</h3>\n{}", escape_html(title), html.join("\n<hr>\n"));
    if let Some(m) = items.more_line() {
        text_part.push_str(&format!("\n\n{m}"));
        html_part.push_str(&format!("\n<p>{}</p>", escape_html(&m)));
    }
    Content::Email {
        subject: title.to_string(),
        text: text_part,
        html: crate::render::html_page(&html_part),
        severity,
    }
}

/// A Telegram digest: the title in bold, then the items' texts (rendered for `parse_mode` already).
fn telegram(parse_mode: ParseMode, silent: bool, title: &str, items: &Listed<'_>) -> Content {
    let escape = |s: &str| match parse_mode {
        ParseMode::Html => escape_html(s),
        ParseMode::MarkdownV2 => escape_markdown_v2(s),
        ParseMode::Plain => s.to_string(),
    };
    let head = match parse_mode {
        ParseMode::Html => format!("<b>{}</b>", escape(title)),
        ParseMode::MarkdownV2 => format!("*{}*", escape(title)),
        ParseMode::Plain => title.to_string(),
    };
    // Items were rendered for this parse mode already.
    let mut lines = items.texts(&|c| match c {
        Content::TelegramText { text, .. } => Some(text.clone()),
        _ => None,
    });
    if let Some(m) = items.more_line() {
        lines.push(escape(&m));
    }
    Content::TelegramText {
        text: format!("{head}\n\n{}", lines.join("\n")),
        parse_mode,
        buttons: None,
        silent,
    }
}

/// A webhook digest: a message of the items' messages; for JSON, a body listing the items' bodies.
fn webhook(content_type: &str, title: &str, items: &Listed<'_>) -> Content {
    let mut lines = items.texts(&|c| match c {
        Content::Webhook {
            message: Some(m), ..
        } => Some(m.clone()),
        other => plain(other),
    });
    lines.extend(items.more_line());
    let message = format!("{title}\n{}", lines.join("\n"));
    let body = if content_type.contains("json") {
        json_body(title, &message, items)
    } else {
        message.clone()
    };
    // A channel with a body template renders it around `message` instead (see the worker).
    Content::Webhook {
        body,
        content_type: content_type.to_string(),
        message: Some(message),
    }
}

/// The JSON body of a webhook digest: title, message, counts and the items' bodies (as JSON where
/// they are, else as strings).
fn json_body(title: &str, message: &str, items: &Listed<'_>) -> String {
    let bodies: Vec<serde_json::Value> = items
        .listed
        .iter()
        .filter_map(|n| match &n.content {
            Content::Webhook { body, .. } => Some(
                serde_json::from_str(body)
                    .unwrap_or_else(|_| serde_json::Value::String(body.clone())),
            ),
            _ => None,
        })
        .collect();
    serde_json::json!({
        "digest": true,
        "title": title,
        "message": message,
        "count": bodies.len() + items.more,
        "omitted": items.more,
        "items": bodies,
    })
    .to_string()
}

/// The text of a content, where it has one.
fn plain(c: &Content) -> Option<String> {
    match c {
        Content::Log { text } | Content::TelegramText { text, .. } => Some(text.clone()),
        Content::Email { text, .. } => Some(text.clone()),
        Content::Webhook { body, message, .. } => {
            Some(message.clone().unwrap_or_else(|| body.clone()))
        }
        Content::TelegramLocation { .. } | Content::Digest { .. } => None,
    }
}

/// The inside of an HTML page's `<body>` (items are whole pages).
fn body_of(html: &str) -> &str {
    let start = html.find("<body>").map(|i| i + "<body>".len()).unwrap_or(0);
    let end = html.rfind("</body>").unwrap_or(html.len());
    if start <= end {
        &html[start..end]
    } else {
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Origin;

    fn item(content: Content) -> Notification {
        Notification {
            key: "k".into(),
            channel: "c".into(),
            recipient: "r".into(),
            content,
            origin: Origin::default(),
        }
    }

    #[test]
    fn telegram_digest_escapes_the_title_and_keeps_item_markup() {
        let items: Vec<Notification> = (0..3)
            .map(|i| {
                item(Content::TelegramText {
                    text: format!("<b>bike {i}</b> offline"),
                    parse_mode: ParseMode::Html,
                    buttons: None,
                    silent: false,
                })
            })
            .collect();
        let c = build(
            &Content::TelegramText {
                text: String::new(),
                parse_mode: ParseMode::Html,
                buttons: None,
                silent: false,
            },
            "3 devices <offline>",
            &items,
        );
        let Content::TelegramText { text, .. } = c else {
            panic!("{c:?}")
        };
        assert!(text.starts_with("<b>3 devices &lt;offline&gt;</b>\n\n<b>bike 0</b> offline\n"));
        assert_eq!(text.matches("offline").count(), 4);
    }

    #[test]
    fn long_digests_are_cut_with_a_count() {
        let items: Vec<Notification> = (0..(MAX_LISTED + 7))
            .map(|i| {
                item(Content::Log {
                    text: format!("e{i}"),
                })
            })
            .collect();
        let Content::Log { text } = build(
            &Content::Log {
                text: String::new(),
            },
            "t",
            &items,
        ) else {
            panic!()
        };
        assert!(text.contains("e49") && !text.contains("e50") && text.ends_with("… and 7 more"));
    }

    #[test]
    fn webhook_digest_is_json_with_items() {
        let items = vec![
            item(Content::Webhook {
                body: r#"{"a":1}"#.into(),
                content_type: "application/json".into(),
                message: Some("bike 1 offline".into()),
            }),
            item(Content::Webhook {
                body: r#"{"a":2}"#.into(),
                content_type: "application/json".into(),
                message: Some("bike 2 offline".into()),
            }),
        ];
        let Content::Webhook { body, .. } = build(
            &Content::Webhook {
                body: String::new(),
                content_type: "application/json".into(),
                message: None,
            },
            "2 events",
            &items,
        ) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["count"], 2);
        assert_eq!(v["items"][1]["a"], 2);
        assert_eq!(v["title"], "2 events");
        assert_eq!(v["message"], "2 events\nbike 1 offline\nbike 2 offline");
    }

    #[test]
    fn email_digest_has_subject_and_both_parts() {
        let items = vec![item(Content::Email {
            subject: "s".into(),
            text: "bike offline".into(),
            html: crate::render::html_page("<p>bike offline</p>"),
            severity: None,
        })];
        let Content::Email {
            subject,
            text,
            html,
            severity,
        } = build(
            &Content::Email {
                subject: String::new(),
                text: String::new(),
                html: String::new(),
                severity: Some(Severity::High),
            },
            "1 device offline",
            &items,
        )
        else {
            panic!()
        };
        assert_eq!(subject, "1 device offline");
        assert_eq!(
            severity,
            Some(Severity::High),
            "as loud as its rule's messages"
        );
        assert!(text.contains("bike offline"));
        assert!(html.contains("<p>bike offline</p>") && html.matches("<body>").count() == 1);
    }
}
