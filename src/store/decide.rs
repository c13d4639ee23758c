//! Noise control inside the accept transaction, written once for every backend: which state rows an
//! event reads, the decider's run over them, the state's stored form, and the stored content a verdict
//! changes (a note added to a message, a new digest shaped like its first item).

use std::collections::HashMap;

use super::NewEvent;
use crate::noise::{Decider, State, StateRow, Verdict};
use crate::notification::{Content, Notification, ParseMode};

/// Runs noise control for an event's deliveries inside a backend's accept transaction: `load` reads
/// (and, on a shared database, locks) the state rows of the given keys. Returns a verdict per delivery
/// and the decider's effects (rows to write back, held deliveries to cancel). Shared by every backend so
/// that they decide alike.
pub fn decide_noise<E>(
    e: &NewEvent,
    load: impl FnOnce(&[&str]) -> Result<HashMap<String, StateRow>, E>,
) -> Result<NoiseOutcome, E> {
    let keys = noise_keys(e);
    let mut states = if keys.is_empty() {
        HashMap::new()
    } else {
        load(&keys)?
    };
    let mut decider = Decider::new(e.received_at_ms, &mut states).judging_at(e.judged_at_ms);
    if let Some(p) = &e.debounce {
        decider.probe(p);
    }
    let verdicts = e
        .deliveries
        .iter()
        .map(|d| decider.decide(&d.gates))
        .collect();
    let cancels = std::mem::take(&mut decider.cancels);
    let dirty = std::mem::take(&mut decider.dirty);
    let writes = dirty
        .into_iter()
        .filter_map(|k| states.remove(&k).map(|row| (k, row)))
        .collect();
    Ok(NoiseOutcome {
        verdicts,
        cancels,
        writes,
    })
}

/// The noise state keys an event's gates read and write, sorted (the order a shared database locks
/// them in, so two instances never wait for each other in a cycle) and without repeats.
pub fn noise_keys(e: &NewEvent) -> Vec<&str> {
    let mut keys: Vec<&str> = e
        .deliveries
        .iter()
        .filter(|d| d.gates.is_stateful())
        .flat_map(|d| d.gates.keys())
        .chain(e.debounce.as_ref().map(|p| p.key.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What [`decide_noise`] decided.
#[derive(Debug)]
pub struct NoiseOutcome {
    /// One per delivery, in order.
    pub verdicts: Vec<Verdict>,
    /// Held deliveries to suppress: (hold key, reason).
    pub cancels: Vec<(String, String)>,
    /// State rows to write.
    pub writes: Vec<(String, StateRow)>,
}

/// Adds a line to a stored notification's text ("3 more suppressed"); contents without text (a map pin,
/// a webhook's JSON body) are left as they are.
pub fn with_note(content: &str, note: &str) -> String {
    let Ok(mut n) = serde_json::from_str::<Notification>(content) else {
        return content.to_string();
    };
    match &mut n.content {
        Content::Log { text } => {
            text.push('\n');
            text.push_str(note);
        }
        Content::TelegramText {
            text, parse_mode, ..
        } => {
            text.push('\n');
            text.push_str(&match parse_mode {
                ParseMode::Html => crate::render::escape_html(note),
                ParseMode::MarkdownV2 => crate::render::escape_markdown_v2(note),
                ParseMode::Plain => note.to_string(),
            });
        }
        Content::Email { text, html, .. } => {
            text.push_str("\n\n");
            text.push_str(note);
            if let Some(i) = html.rfind("</body>") {
                html.insert_str(i, &format!("<p>{}</p>", crate::render::escape_html(note)));
            }
        }
        _ => return content.to_string(),
    }
    serde_json::to_string(&n).expect("a notification always serialises")
}

/// The stored content of a new digest delivery for `key`, shaped like its first item (`item`, stored
/// JSON): same channel, recipient and origin. Returns (idempotency key, content JSON).
pub fn digest_content(
    item: &str,
    key: &str,
    due: i64,
    title: Option<&str>,
) -> Result<(String, String), serde_json::Error> {
    let n: Notification = serde_json::from_str(item)?;
    let digest_key = crate::notification::idempotency_key(&[
        "digest",
        key,
        &due.to_string(),
        &n.origin.event_id.to_string(),
        &n.origin.source,
    ]);
    let d = Notification {
        key: digest_key.clone(),
        channel: n.channel,
        recipient: n.recipient,
        content: Content::Digest {
            group: key.to_string(),
            rule: n.origin.rule.clone(),
            title_template: title.map(str::to_string),
            like: Box::new(n.content),
        },
        origin: n.origin,
    };
    Ok((digest_key, serde_json::to_string(&d)?))
}

/// A noise state as stored (JSON). A row this version cannot read counts as fresh state rather than
/// stopping intake.
pub(super) fn stored_state(json: &str) -> State {
    serde_json::from_str(json).unwrap_or_default()
}

/// A noise state row as read back: its stored state and its expiry.
pub(super) fn state_row(json: &str, expires_at: i64) -> StateRow {
    StateRow {
        state: stored_state(json),
        expires_at,
    }
}

/// The stored form of a noise state (JSON).
pub(super) fn state_json(row: &StateRow) -> String {
    serde_json::to_string(&row.state).expect("state serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Origin;

    #[test]
    fn notes_are_escaped_for_the_parse_mode() {
        let n = |parse_mode| {
            serde_json::to_string(&Notification {
                key: "k".into(),
                channel: "c".into(),
                recipient: "r".into(),
                content: Content::TelegramText {
                    text: "*Alarm*".into(),
                    parse_mode,
                    buttons: None,
                    silent: false,
                },
                origin: Origin::default(),
            })
            .unwrap()
        };
        let text = |json: String| match serde_json::from_str::<Notification>(&json).unwrap().content
        {
            Content::TelegramText { text, .. } => text,
            _ => unreachable!(),
        };
        let note = "(2 more suppressed since 2026-01-14T12:01:00.000Z)";
        assert_eq!(
            text(with_note(&n(ParseMode::MarkdownV2), note)),
            "*Alarm*\n\\(2 more suppressed since 2026\\-01\\-14T12:01:00\\.000Z\\)"
        );
        assert_eq!(
            text(with_note(&n(ParseMode::Html), "<3 & more")),
            "*Alarm*\n&lt;3 &amp; more"
        );
        // Contents without text are left alone.
        let pin = serde_json::to_string(&Notification {
            key: "k".into(),
            channel: "c".into(),
            recipient: "r".into(),
            content: Content::TelegramLocation {
                latitude: 1.0,
                longitude: 2.0,
                live_period: None,
                silent: false,
            },
            origin: Origin::default(),
        })
        .unwrap();
        assert_eq!(with_note(&pin, note), pin);
    }
}
