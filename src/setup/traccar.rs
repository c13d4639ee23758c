//! `trackrelay setup traccar`: for each live Traccar source, the `web` notifications its rules need
//! ([`crate::source::traccar::notifications::missing`]) are created on the server, marked as the
//! relay's (attribute `trackrelay: true`), `always` (every device). Alarms go into one notification of
//! the relay's, extended (`PUT`, the whole object) when a rule names a new alarm. A notification the
//! relay did not create is never changed.
//!
//! Traccar links a new notification to the user who creates it (`BaseObjectResource.add`); a
//! `POST /api/permissions` would store the same link a second time, so the link is checked after each
//! creation and asked for only when the server has not made it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::{dry_run_note, load, Progress, SetupError};
use crate::rules::RuleSet;
use crate::source::traccar::client::{Client, Session};
use crate::source::traccar::notifications::{missing, Notification, Wanted};
use crate::source::traccar::{wanted_on, SourceError};
use crate::traccar_config::TraccarSource;

/// The attribute that marks a notification as the relay's own.
pub const MARK: &str = "trackrelay";

pub use crate::source::traccar::notifications::KNOWN_ALARMS;

/// `trackrelay setup traccar`.
#[derive(Debug, clap::Args)]
pub struct TraccarArgs {
    /// Config file (its `traccar:` sources and its rules).
    #[arg(short, long, env = "TRACKRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Only the live source of this name.
    #[arg(long)]
    pub source: Option<String>,
    /// Make the changes; without it, only the plan is printed.
    #[arg(long)]
    pub apply: bool,
}

/// One change to a server's notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new `web` notification of this type (with these alarms for `alarm`).
    Create {
        /// Event type.
        kind: String,
        /// Alarms listed (for `alarm` only).
        alarms: Vec<String>,
    },
    /// The relay's own alarm notification (as the server returned it) with more alarms.
    Extend {
        /// The notification, every field as read.
        notification: Value,
        /// The alarms to add.
        add: Vec<String>,
    },
}

impl Change {
    /// The change in words, for the plan and the report.
    pub fn describe(&self) -> String {
        match self {
            Change::Create { kind, alarms } if alarms.is_empty() => {
                format!("create web notification `{kind}` (always, all devices)")
            }
            Change::Create { kind, alarms } => format!(
                "create web notification `{kind}` for alarms {} (always, all devices)",
                alarms.join(", ")
            ),
            Change::Extend { notification, add } => format!(
                "add alarms {} to trackrelay's alarm notification #{}",
                add.join(", "),
                notification["id"]
            ),
        }
    }

    /// What is sent: the new notification, or the whole existing one with the alarms added.
    pub fn body(&self) -> Value {
        match self {
            Change::Create { kind, alarms } => {
                let mut attributes = json!({ MARK: true });
                if !alarms.is_empty() {
                    attributes["alarms"] = json!(alarms.join(","));
                }
                json!({"type": kind, "notificators": "web", "always": true, "attributes": attributes})
            }
            Change::Extend { notification, add } => {
                let mut n = notification.clone();
                let mut alarms = alarms_of(&n);
                alarms.extend(add.iter().cloned());
                n["attributes"]["alarms"] = json!(alarms.join(","));
                n["always"] = json!(true);
                if !notificators(&n).any(|x| x == "web") {
                    let mut list: Vec<String> = notificators(&n).map(String::from).collect();
                    list.push("web".into());
                    n["notificators"] = json!(list.join(","));
                }
                n
            }
        }
    }
}

/// What a source lacks and the changes that add it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// In words, as `check --online` says it: `deviceOffline`, `alarm:movement`, `alarm:*`.
    pub missing: Vec<String>,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// What `wanted` needs that the user's notifications (`existing`, as the server returned them) lack,
/// and how to add it. Pure.
pub fn plan(wanted: &Wanted, existing: &[Value]) -> Plan {
    let typed: Vec<Notification> = existing
        .iter()
        .filter_map(|n| serde_json::from_value(n.clone()).ok())
        .collect();
    let missing = missing(wanted, &typed);
    let mut changes = Vec::new();
    let mut alarms = BTreeSet::new();
    for m in &missing {
        match m.strip_prefix("alarm:") {
            Some("*") => alarms.extend(KNOWN_ALARMS.iter().map(|a| a.to_string())),
            Some(a) => {
                alarms.insert(a.to_string());
            }
            None => changes.push(Change::Create {
                kind: m.clone(),
                alarms: Vec::new(),
            }),
        }
    }
    if !alarms.is_empty() {
        let own = existing
            .iter()
            .find(|n| n["type"] == "alarm" && n["attributes"][MARK] == true);
        changes.push(match own {
            Some(n) => {
                let have = alarms_of(n);
                Change::Extend {
                    notification: n.clone(),
                    add: alarms.into_iter().filter(|a| !have.contains(a)).collect(),
                }
            }
            None => Change::Create {
                kind: "alarm".into(),
                alarms: alarms.into_iter().collect(),
            },
        });
    }
    Plan { missing, changes }
}

/// The alarms a notification lists, in its order.
fn alarms_of(n: &Value) -> Vec<String> {
    n["attributes"]["alarms"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

fn notificators(n: &Value) -> impl Iterator<Item = &str> {
    n["notificators"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

/// `trackrelay setup traccar`: every live source of the config (or the one named), planned and, with
/// `--apply`, changed.
pub async fn run(args: &TraccarArgs, out: &mut dyn Write) -> Result<(), SetupError> {
    let cfg = load(args.config.as_ref())?;
    let sources: Vec<&TraccarSource> = cfg
        .traccar
        .iter()
        .filter(|s| args.source.as_ref().is_none_or(|n| *n == s.name))
        .collect();
    if sources.is_empty() {
        let known: Vec<&str> = cfg.traccar.iter().map(|s| s.name.as_str()).collect();
        return Err(SetupError::Usage(match &args.source {
            Some(n) if !known.is_empty() => {
                format!("no live source '{n}' (configured: {})", known.join(", "))
            }
            _ => "the config has no live Traccar source (traccar:): nothing to set up".into(),
        }));
    }
    let mut planned = false;
    for src in sources {
        planned |= setup_source(src, &cfg.rules, args.apply, out).await?;
    }
    if planned && !args.apply {
        dry_run_note(out)?;
    }
    Ok(())
}

/// One source: reads, plans, prints, and with `apply` changes and checks. Whether there was a change
/// to make.
async fn setup_source(
    src: &TraccarSource,
    rules: &RuleSet,
    apply: bool,
    out: &mut dyn Write,
) -> Result<bool, SetupError> {
    let server = |source: SourceError| SetupError::Server {
        what: format!("source '{}' ({})", src.name, src.url),
        source,
    };
    let client = Client::new(src).map_err(server)?;
    let session = client.login().await.map_err(server)?;
    let user = client.session_user(&session).await.map_err(server)?;
    let user_id = user["id"].as_i64().unwrap_or(0);
    let existing = client.notifications_json(&session).await.map_err(server)?;
    let wanted = wanted_on(src, rules);
    let plan = plan(&wanted, &existing);
    writeln!(
        out,
        "source '{}' ({}), user {} (#{user_id}), {} notification(s):",
        src.name,
        src.url,
        user["email"].as_str().unwrap_or("?"),
        existing.len()
    )?;
    if plan.changes.is_empty() {
        writeln!(
            out,
            "  nothing to change: every event type and alarm the rules match there has a web notification"
        )?;
        return Ok(false);
    }
    writeln!(
        out,
        "  no web notification covers {}: Traccar does not push these over the socket",
        plan.missing.join(", ")
    )?;
    writeln!(out, "  plan:")?;
    for c in &plan.changes {
        writeln!(out, "  - {}", c.describe())?;
    }
    if !apply {
        return Ok(true);
    }
    writeln!(out, "  applying:")?;
    apply_changes(&client, &session, user_id, &plan.changes, out).await?;
    let now = client.notifications_json(&session).await.map_err(server)?;
    let left = self::plan(&wanted, &now).missing;
    if !left.is_empty() {
        return Err(SetupError::NotKept(format!(
            "source '{}' still lacks web notifications for {}",
            src.name,
            left.join(", ")
        )));
    }
    writeln!(
        out,
        "  checked: every event type and alarm the rules match there now has a web notification"
    )?;
    Ok(true)
}

/// Makes the changes in order; stops at the first failure with the report of what was done.
async fn apply_changes(
    client: &Client,
    s: &Session,
    user_id: i64,
    changes: &[Change],
    out: &mut dyn Write,
) -> Result<(), SetupError> {
    let mut progress = Progress::new(out, changes.iter().map(Change::describe).collect());
    for c in changes {
        let result = match c {
            Change::Create { .. } => create(client, s, user_id, &c.body()).await,
            Change::Extend { .. } => client
                .update_notification(s, &c.body())
                .await
                .map(|_| String::new()),
        };
        match result {
            Ok(note) => progress.done(&note)?,
            Err(e) => return Err(progress.failed(e)),
        }
    }
    Ok(())
}

/// Creates one notification and makes sure the user has it; says which id it got and who linked it.
async fn create(
    client: &Client,
    s: &Session,
    user_id: i64,
    body: &Value,
) -> Result<String, SourceError> {
    let created = client.create_notification(s, body).await?;
    let id = created["id"].as_i64().unwrap_or(0);
    // Made, but perhaps not the user's: say so, or a rerun (which sees only the user's) makes another.
    let half = |e: SourceError| {
        SourceError::Http(format!(
            "notification #{id} was created, but linking it to user #{user_id} failed ({e}): link it in the server's web UI (or delete it) before running again"
        ))
    };
    let listed = client.notifications_json(s).await.map_err(half)?;
    if listed.iter().any(|n| n["id"] == id) {
        return Ok(format!(
            " -> #{id} (the server linked it to user #{user_id})"
        ));
    }
    client
        .link_notification(s, user_id, id)
        .await
        .map_err(half)?;
    Ok(format!(" -> #{id}, linked to user #{user_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(types: &[&str], alarms: &[&str], any_alarm: bool) -> Wanted {
        Wanted {
            types: types.iter().map(|t| t.to_string()).collect(),
            alarms: alarms.iter().map(|a| a.to_string()).collect(),
            any_alarm,
            any_type: false,
        }
    }

    fn n(id: i64, kind: &str, notificators: &str, attributes: Value) -> Value {
        json!({"id": id, "type": kind, "always": true, "notificators": notificators,
               "calendarId": 0, "commandId": 0, "description": "theirs", "attributes": attributes})
    }

    #[test]
    fn missing_types_get_a_notification_each_and_alarms_one_together() {
        let w = wanted(
            &["alarm", "deviceOffline", "ignitionOn"],
            &["tow", "movement"],
            false,
        );
        let existing = [
            // Mail only: does not count, and is left alone.
            n(1, "deviceOffline", "mail", json!({})),
            n(2, "ignitionOn", "web,mail", json!({})),
            // The user's own alarm notification covers movement.
            n(3, "alarm", "web", json!({"alarms": "movement"})),
        ];
        let p = plan(&w, &existing);
        assert_eq!(p.missing, ["deviceOffline", "alarm:tow"]);
        assert_eq!(
            p.changes,
            [
                Change::Create {
                    kind: "deviceOffline".into(),
                    alarms: vec![]
                },
                Change::Create {
                    kind: "alarm".into(),
                    alarms: vec!["tow".into()]
                }
            ]
        );
        assert_eq!(
            p.changes[1].body(),
            json!({"type": "alarm", "notificators": "web", "always": true,
                   "attributes": {"trackrelay": true, "alarms": "tow"}})
        );
        assert_eq!(
            p.changes[0].body()["attributes"],
            json!({"trackrelay": true})
        );
        // Covered: nothing to do.
        let covered = [
            n(4, "deviceOffline", "web", json!({})),
            n(5, "alarm", "web", json!({"alarms": "tow,movement"})),
        ];
        assert_eq!(
            plan(
                &w,
                &[existing[1].clone(), covered[0].clone(), covered[1].clone()]
            ),
            Plan::default()
        );
    }

    #[test]
    fn its_own_alarm_notification_is_extended_whole_and_no_other() {
        let w = wanted(&["alarm"], &["movement", "sos", "tow"], false);
        let ours = n(
            9,
            "alarm",
            "mail",
            json!({"trackrelay": true, "alarms": "tow", "note": "kept"}),
        );
        let theirs = n(3, "alarm", "web", json!({"alarms": "sos"}));
        let p = plan(&w, &[theirs, ours.clone()]);
        // Ours is not web yet: `tow` is missing too, and gets `web` back.
        assert_eq!(p.missing, ["alarm:movement", "alarm:tow"]);
        assert_eq!(
            p.changes,
            [Change::Extend {
                notification: ours,
                add: vec!["movement".into()]
            }]
        );
        let body = p.changes[0].body();
        assert_eq!(body["id"], 9);
        assert_eq!(body["description"], "theirs");
        assert_eq!(body["notificators"], "mail,web");
        assert_eq!(
            body["attributes"],
            json!({"trackrelay": true, "alarms": "tow,movement", "note": "kept"})
        );
        assert_eq!(
            p.changes[0].describe(),
            "add alarms movement to trackrelay's alarm notification #9"
        );
    }

    #[test]
    fn rules_taking_any_alarm_get_every_known_alarm() {
        let p = plan(&wanted(&["alarm"], &[], true), &[]);
        assert_eq!(p.missing, ["alarm:*"]);
        let Change::Create { alarms, .. } = &p.changes[0] else {
            panic!("{p:?}")
        };
        assert_eq!(alarms.len(), KNOWN_ALARMS.len());
        assert!(alarms.contains(&"fatigueDriving".to_string()));
    }
}
