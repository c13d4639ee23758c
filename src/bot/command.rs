//! What a chat says to the bot, parsed: a command (`/where Lena*`, `/mute bike 2h`, `/ack`) or the
//! callback data of a device picked from a list. Pure: [`super::handle`] acts on it.

use std::time::Duration;

/// The longest `/mute` (a forgotten silence should not hide a theft for months).
pub const MAX_MUTE: Duration = Duration::from_secs(7 * 86_400);
/// `/mute NAME` without a duration.
pub const DEFAULT_MUTE: Duration = Duration::from_secs(3600);

/// A command the bot knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/start` or `/help`.
    Help,
    /// `/status`: open incidents and muted devices this chat sees.
    Status,
    /// `/where NAME`: the latest position.
    Where(String),
    /// `/mute NAME [DURATION]`.
    Mute(String, Duration),
    /// `/unmute NAME`.
    Unmute(String),
    /// `/ack`: the chat's latest open incident.
    Ack,
    /// A command the bot does not know, or one used wrongly: the reason.
    Bad(String),
}

/// The text of `/help`.
pub const HELP: &str = "I send the alarms of your trackers here.\n\
/status – open incidents and muted devices\n\
/where NAME – where a device is now\n\
/mute NAME 2h – no alarms from a device for a while (default 1h, at most 7d)\n\
/unmute NAME – alarms again\n\
/ack – acknowledge the latest open incident\n\
NAME may use * and ? (Lena*).";

/// Parses a message's text: `None` when it is not a command for this bot (plain text, or a command
/// addressed to another bot in a group: `/where@other_bot`). `bot_username` is this bot's, if known.
pub fn parse(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (word, args) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(w, a)| (w, a.trim()));
    let (name, to) = word
        .split_once('@')
        .map_or((word, None), |(n, b)| (n, Some(b)));
    if let (Some(to), Some(me)) = (to, bot_username) {
        if !to.eq_ignore_ascii_case(me) {
            return None;
        }
    }
    let need_name = |what: &str| Command::Bad(format!("Which device? /{what} NAME"));
    Some(match name.to_ascii_lowercase().as_str() {
        "start" | "help" => Command::Help,
        "status" => Command::Status,
        "ack" => Command::Ack,
        "where" if args.is_empty() => need_name("where"),
        "where" => Command::Where(args.to_string()),
        "unmute" if args.is_empty() => need_name("unmute"),
        "unmute" => Command::Unmute(args.to_string()),
        "mute" if args.is_empty() => need_name("mute"),
        "mute" => mute(args),
        other => Command::Bad(format!("I don't know /{other}. /help lists what I do.")),
    })
}

/// `/mute NAME [DURATION]`: the last word is the duration when it reads as one (`2h`, `30m`, `1d`).
fn mute(args: &str) -> Command {
    let (name, last) = args
        .rsplit_once(char::is_whitespace)
        .map_or((args, ""), |(n, l)| (n.trim(), l));
    match humantime::parse_duration(last) {
        Ok(d) if d.is_zero() => Command::Bad("Mute for how long? /mute NAME 2h".into()),
        Ok(d) if d > MAX_MUTE => Command::Bad("At most 7d: /mute NAME 7d".into()),
        Ok(d) => Command::Mute(name.to_string(), d),
        Err(_) => Command::Mute(args.to_string(), DEFAULT_MUTE),
    }
}

/// A device picked from a list the bot offered (several matched a name): `p:<action>:<device id>`,
/// and for a mute, its seconds. Not secret: the chat's right to the device is checked again on press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// `/where` for this device.
    Where(i64),
    /// `/mute` for this device, this many seconds.
    Mute(i64, u64),
    /// `/unmute` for this device.
    Unmute(i64),
}

impl Pick {
    /// The callback data.
    pub fn data(self) -> String {
        match self {
            Pick::Where(d) => format!("p:w:{d}"),
            Pick::Mute(d, s) => format!("p:m:{d}:{s}"),
            Pick::Unmute(d) => format!("p:u:{d}"),
        }
    }

    /// Parses callback data made by [`Pick::data`].
    pub fn parse(data: &str) -> Option<Pick> {
        let mut it = data.strip_prefix("p:")?.split(':');
        let (action, device) = (it.next()?, it.next()?.parse().ok()?);
        let pick = match action {
            "w" => Pick::Where(device),
            "u" => Pick::Unmute(device),
            // Callback data can be forged (a modified client): a mute stays within /mute's bounds.
            "m" => Pick::Mute(
                device,
                it.next()?
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_MUTE.as_secs()).contains(s))?,
            ),
            _ => return None,
        };
        it.next().is_none().then_some(pick)
    }
}

/// What the user typed for a device name, compiled once: a glob (`*`, `?`, `[…]`) or, without one,
/// the whole name case-insensitively.
#[derive(Debug)]
pub enum NamePattern {
    /// A glob.
    Glob(globset::GlobMatcher),
    /// A name, lowercased.
    Exact(String),
    /// A glob that does not compile: matches nothing.
    Nothing,
}

impl NamePattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> NamePattern {
        let pattern = pattern.trim();
        if pattern.contains(['*', '?', '[']) {
            globset::GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_or(NamePattern::Nothing, |g| {
                    NamePattern::Glob(g.compile_matcher())
                })
        } else {
            NamePattern::Exact(pattern.to_lowercase())
        }
    }

    /// Whether device `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Glob(g) => g.is_match(name),
            NamePattern::Exact(p) => *p == name.trim().to_lowercase(),
            NamePattern::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/help", None), Some(Command::Help));
        assert_eq!(parse("/start", None), Some(Command::Help));
        assert_eq!(parse(" /STATUS ", None), Some(Command::Status));
        assert_eq!(
            parse("/where Lena's bike", None),
            Some(Command::Where("Lena's bike".into()))
        );
        assert_eq!(
            parse("/mute Lena's bike 2h", None),
            Some(Command::Mute(
                "Lena's bike".into(),
                Duration::from_secs(7200)
            ))
        );
        assert_eq!(
            parse("/mute bike", None),
            Some(Command::Mute("bike".into(), DEFAULT_MUTE))
        );
        assert!(matches!(
            parse("/mute bike 30d", None),
            Some(Command::Bad(_))
        ));
        assert!(matches!(parse("/where", None), Some(Command::Bad(_))));
        assert!(matches!(parse("/launch", None), Some(Command::Bad(_))));
        assert_eq!(parse("hello", None), None);
        assert_eq!(
            parse("/ack@relay_bot", Some("Relay_Bot")),
            Some(Command::Ack)
        );
        assert_eq!(parse("/ack@other_bot", Some("relay_bot")), None);
    }

    #[test]
    fn picks_round_trip() {
        for p in [Pick::Where(7), Pick::Mute(-3, 7200), Pick::Unmute(42)] {
            assert_eq!(Pick::parse(&p.data()), Some(p));
        }
        assert_eq!(Pick::parse("p:w:x"), None);
        assert_eq!(Pick::parse("p:m:1"), None);
        assert_eq!(Pick::parse("p:w:1:2"), None);
        assert_eq!(Pick::parse("p:m:1:0"), None);
        assert_eq!(
            Pick::parse(&format!("p:m:1:{}", MAX_MUTE.as_secs() + 1)),
            None
        );
        assert_eq!(Pick::parse("p:m:1:18446744073709551615"), None);
        assert_eq!(Pick::parse("a:abcd"), None);
    }

    fn name_matches(pattern: &str, name: &str) -> bool {
        NamePattern::new(pattern).matches(name)
    }

    #[test]
    fn names_match_like_globs() {
        assert!(name_matches("lena*", "Lena's bike"));
        assert!(name_matches("LENA'S BIKE", "Lena's bike"));
        assert!(!name_matches("Lena", "Lena's bike"));
        assert!(name_matches("bike-?", "bike-7"));
        assert!(!name_matches("bike-?", "bike-17"));
    }
}
