//! `trackrelay setup webhook`: points an account's webhook at the relay. BikeTrax (PowUnity's Traccar)
//! reads three user attributes: `webhookUrl` (where to POST each event), `webhookPsk` (the exact
//! `Authorization` header value it sends) and `webhookTypes` (comma-separated event types; absent: all).
//! This sets them on the logged-in user — the URL, a new key, and the types the rules can match on the
//! webhook source (absent when a rule takes every type) — keeping every other field and attribute: the
//! user is read just before and sent back whole (Traccar's `PUT` resets what it is not sent), then read
//! again to check.
//!
//! The key is written once to a private file (`--psk-file`, default `<data_dir>/webhook-psk`) that the
//! config reads with `ingest.authorization: "${file:PATH}"`; a file already there is reused, so running
//! the command again changes nothing. A self-hosted Traccar has no such attributes: its event forwarding
//! is set in `traccar.xml`, and the lines to add are printed (the key itself never is).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::key_file::{read_key, write_key};
use super::{dry_run_note, load, Progress, SetupError};
use crate::secret::{new_link_token, Secret};
use crate::settings::Config;
use crate::source::traccar::client::{Client, Session};
use crate::source::traccar::notifications::wanted;
use crate::traccar_config::{RawTraccarSource, TraccarSource};

/// The user attributes BikeTrax reads.
pub const URL_KEY: &str = "webhookUrl";
/// The `Authorization` value it sends.
pub const PSK_KEY: &str = "webhookPsk";
/// The event types it sends (all when absent).
pub const TYPES_KEY: &str = "webhookTypes";
/// The key file's name in the data directory when `--psk-file` is not given.
pub const PSK_FILE: &str = "webhook-psk";
/// Where the password comes from when `--email` is given.
pub const PASSWORD_ENV: &str = "TRACKRELAY_SETUP_PASSWORD";

/// `trackrelay setup webhook`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("login").required(true).args(["token", "email"])))]
pub struct WebhookArgs {
    /// The server's API address: `https://traccariot.powunity.com` for BikeTrax, or a Traccar's.
    #[arg(long)]
    pub server: String,
    /// The account's token (or set TRACKRELAY_SETUP_TOKEN).
    #[arg(long, env = "TRACKRELAY_SETUP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The account's email; the password is read from TRACKRELAY_SETUP_PASSWORD or asked for.
    #[arg(long)]
    pub email: Option<String>,
    /// The relay's address as the server reaches it, `https://relay.example.org`: the webhook calls
    /// it at `ingest.path` (`/events`).
    #[arg(long)]
    pub public_url: String,
    /// Config file (its rules, `ingest` and data directory).
    #[arg(short, long, env = "TRACKRELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// The key's file (default: `<data_dir>/webhook-psk`); reused when it exists.
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Make the changes; without it, only the plan is printed.
    #[arg(long)]
    pub apply: bool,
    /// Print the new key once (it is in the key file anyway).
    #[arg(long)]
    pub show_psk: bool,
}

/// The three attributes as they should be (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// `webhookUrl`.
    pub url: String,
    /// `webhookPsk`.
    pub psk: Secret,
    /// The key is made by this run (not read from the key file): shown as such, not masked.
    pub new_key: bool,
    /// `webhookTypes`.
    pub types: Option<String>,
}

/// One attribute's change, for the report (secrets masked).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Attribute name.
    pub key: &'static str,
    /// Before, as shown.
    pub old: String,
    /// After, as shown.
    pub new: String,
}

/// The URL the webhook calls: `public_url` with `ingest_path` (unless it already ends with it).
pub fn webhook_url(public_url: &str, ingest_path: &str) -> Result<String, SetupError> {
    let url = reqwest::Url::parse(public_url)
        .map_err(|e| SetupError::Usage(format!("--public-url `{public_url}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SetupError::Usage(format!(
            "--public-url `{public_url}`: an http(s) address with a host"
        )));
    }
    let base = public_url.trim_end_matches('/');
    if url.path().trim_end_matches('/').ends_with(ingest_path) {
        return Ok(base.to_string());
    }
    Ok(format!("{base}{ingest_path}"))
}

/// `webhookTypes`: the event types the rules can match on `source`, comma-separated; `None` when some
/// rule takes every type (or none names one): then every event is wanted.
pub fn webhook_types(cfg: &Config, source: &str) -> Option<String> {
    let w = wanted(&cfg.rules, source, false);
    if w.any_type || w.types.is_empty() {
        return None;
    }
    Some(w.types.into_iter().collect::<Vec<_>>().join(","))
}

/// A secret as the report shows it: its scheme and its length, nothing of the secret itself (a short
/// hash would let whoever reads the report check guesses of a weak old key).
pub fn mask(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, rest)) => format!("{scheme} *** ({} characters)", rest.chars().count()),
        None => format!("*** ({} characters)", value.chars().count()),
    }
}

/// What changes on `user` to have `wanted`. Pure.
pub fn changes(user: &Value, wanted: &Wanted) -> Vec<Change> {
    let attrs = &user["attributes"];
    let shown = |v: &Value, secret: bool| match v.as_str() {
        None if v.is_null() => "(unset)".to_string(),
        None => v.to_string(),
        Some(s) if secret => mask(s),
        Some(s) => s.to_string(),
    };
    let mut out = Vec::new();
    let targets = [
        (URL_KEY, Some(wanted.url.as_str()), false),
        (PSK_KEY, Some(wanted.psk.expose()), true),
        (TYPES_KEY, wanted.types.as_deref(), false),
    ];
    for (key, target, secret) in targets {
        let now = &attrs[key];
        if now.as_str() == target && (target.is_some() || now.is_null()) {
            continue;
        }
        let new = match target {
            None => "(removed: all event types)".to_string(),
            Some(_) if secret && wanted.new_key => "a new key".to_string(),
            // Listed only when it differs from what the server has: the masks may look alike.
            Some(t) if secret => format!("{}, the key file's", mask(t)),
            Some(t) => t.to_string(),
        };
        out.push(Change {
            key,
            old: shown(now, secret),
            new,
        });
    }
    out
}

/// `user` with the three attributes set as `wanted`, every other field and attribute as it was.
pub fn updated(user: &Value, wanted: &Wanted) -> Value {
    let mut u = user.clone();
    if !u["attributes"].is_object() {
        u["attributes"] = json!({});
    }
    let attrs = u["attributes"].as_object_mut().expect("an object");
    attrs.insert(URL_KEY.into(), json!(wanted.url));
    attrs.insert(PSK_KEY.into(), json!(wanted.psk.expose()));
    match &wanted.types {
        Some(t) => attrs.insert(TYPES_KEY.into(), json!(t)),
        None => attrs.remove(TYPES_KEY),
    };
    u
}

/// `trackrelay setup webhook`.
pub async fn run(args: &WebhookArgs, out: &mut dyn Write) -> Result<(), SetupError> {
    let cfg = load(args.config.as_ref())?;
    let url = webhook_url(&args.public_url, &cfg.ingest.path)?;
    let psk_path = args
        .psk_file
        .clone()
        .unwrap_or_else(|| cfg.storage.data_dir.join(PSK_FILE));
    // Absolute: the config line printed reads it relative to the config's folder, not to here.
    let psk_path = std::path::absolute(&psk_path)
        .map_err(|e| SetupError::KeyFile(format!("the key file {}: {e}", psk_path.display())))?;
    let existing = read_key(&psk_path)?;
    let client = Client::new(&login_source(args)?).map_err(|e| server(args, e))?;
    let session = client.login().await.map_err(|e| server(args, e))?;
    let me = client
        .session_user(&session)
        .await
        .map_err(|e| server(args, e))?;
    let id = me["id"].as_i64().unwrap_or(0);
    let user = client
        .user(&session, id)
        .await
        .map_err(|e| server(args, e))?;
    let new_key = existing.is_none();
    let psk = existing.unwrap_or_else(|| Secret(format!("Bearer {}", new_link_token())));
    let wanted = Wanted {
        url,
        psk,
        new_key,
        types: webhook_types(&cfg, &cfg.ingest.source),
    };
    let changes = changes(&user, &wanted);
    writeln!(
        out,
        "server {}, user {} (#{id}):",
        args.server,
        user["email"].as_str().unwrap_or("?")
    )?;
    report_plan(out, &changes, &psk_path, new_key)?;
    if args.apply {
        apply(&client, &session, &user, &wanted, &psk_path, new_key, out).await?;
        if new_key && args.show_psk {
            writeln!(
                out,
                "\nThe new key (shown this once; it is also in {}):\n  {}",
                psk_path.display(),
                wanted.psk.expose()
            )?;
        }
    } else if !changes.is_empty() || new_key {
        dry_run_note(out)?;
    }
    if args.show_psk && !(new_key && args.apply) {
        writeln!(
            out,
            "\n--show-psk: no new key was made by this run: nothing shown (the key is in {})",
            psk_path.display()
        )?;
    }
    print_config(out, &cfg, &wanted, &psk_path)
}

fn server(args: &WebhookArgs, source: crate::source::traccar::SourceError) -> SetupError {
    SetupError::Server {
        what: format!("server {}", args.server),
        source,
    }
}

/// The plan: the attribute changes and the key file.
fn report_plan(
    out: &mut dyn Write,
    changes: &[Change],
    psk_path: &Path,
    new_key: bool,
) -> Result<(), SetupError> {
    if new_key {
        writeln!(
            out,
            "  key file {}: a new key is made and written there (mode 0600)",
            psk_path.display()
        )?;
    } else {
        writeln!(out, "  key file {}: reused", psk_path.display())?;
    }
    if changes.is_empty() {
        writeln!(
            out,
            "  nothing to change: the account's webhook already points at the relay with this key"
        )?;
    }
    for c in changes {
        writeln!(out, "  {}: {} -> {}", c.key, c.old, c.new)?;
    }
    Ok(())
}

/// Writes the key file (when new), then the user, then reads the user back to check.
async fn apply(
    client: &Client,
    s: &Session,
    user: &Value,
    wanted: &Wanted,
    psk_path: &Path,
    new_key: bool,
    out: &mut dyn Write,
) -> Result<(), SetupError> {
    let id = user["id"].as_i64().unwrap_or(0);
    let before = user.clone();
    let mut steps = Vec::new();
    if new_key {
        steps.push(format!("write the key to {}", psk_path.display()));
    }
    let put = !changes(&before, wanted).is_empty();
    if put {
        steps.push(format!("set the webhook attributes of user #{id}"));
    }
    if steps.is_empty() {
        return Ok(());
    }
    writeln!(out, "  applying:")?;
    let mut progress = Progress::new(out, steps);
    if new_key {
        write_key(psk_path, &wanted.psk)?;
        progress.done("")?;
    }
    if put {
        let fresh = client.user(s, id).await;
        let sent = match fresh {
            Ok(fresh) => updated(&fresh, wanted),
            Err(e) => return Err(progress.failed(e)),
        };
        if let Err(e) = client.update_user(s, &sent).await {
            return Err(progress.failed(e));
        }
        progress.done("")?;
        let back = client.user(s, id).await.map_err(|e| SetupError::Server {
            what: "reading the user back".into(),
            source: e,
        })?;
        verify(&sent, &back)?;
        writeln!(
            out,
            "  checked: the user holds the three attributes, and every other field as before"
        )?;
    }
    Ok(())
}

/// The user read back must be what was sent (the password is write-only and not compared).
fn verify(sent: &Value, back: &Value) -> Result<(), SetupError> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("password");
        }
        v
    };
    let (sent, back) = (strip(sent), strip(back));
    if sent == back {
        return Ok(());
    }
    let differ: Vec<String> = sent
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| back.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    Err(SetupError::NotKept(format!(
        "the user read back differs in {}",
        if differ.is_empty() {
            "fields it did not have".to_string()
        } else {
            differ.join(", ")
        }
    )))
}

/// The config line that reads the key, and the `traccar.xml` lines of a self-hosted Traccar.
fn print_config(
    out: &mut dyn Write,
    cfg: &Config,
    wanted: &Wanted,
    psk_path: &Path,
) -> Result<(), SetupError> {
    let path = psk_path.display();
    let already = cfg.ingest.authorization.as_ref() == Some(&wanted.psk);
    writeln!(
        out,
        "\nThe relay accepts the webhook with this in {} ({}):\n\n  ingest:\n    authorization: \"${{file:{path}}}\"\n",
        cfg.path.as_ref().map_or("its config".into(), |p| p.display().to_string()),
        if already { "it does already" } else { "set it so, then reload the relay" }
    )?;
    writeln!(
        out,
        "A self-hosted Traccar ignores these attributes: set its event forwarding in traccar.xml instead\n\
         (Traccar 5 and 6 forward when event.forward.url is set; 4.x also needs event.forward.enable),\n\
         with the key as the header's value (it is not printed here):\n\n  \
         <entry key='event.forward.enable'>true</entry>\n  \
         <entry key='event.forward.url'>{}</entry>\n  \
         <entry key='event.forward.header'>Authorization: (the content of {path})</entry>\n\n\
         e.g. printf \"<entry key='event.forward.header'>Authorization: %s</entry>\\n\" \"$(cat {path})\"",
        wanted.url
    )?;
    Ok(())
}

/// The login as a source of the live client: the server and the token, or the email and a password.
fn login_source(args: &WebhookArgs) -> Result<TraccarSource, SetupError> {
    let mut raw = json!({"name": "setup", "url": args.server});
    match (&args.token, &args.email) {
        (Some(t), _) => raw["token"] = json!(t),
        (None, Some(e)) => {
            raw["email"] = json!(e);
            raw["password"] = json!(password(e)?.expose());
        }
        (None, None) => return Err(SetupError::Usage("give --token or --email".into())),
    }
    let raw: RawTraccarSource =
        serde_json::from_value(raw).map_err(|e| SetupError::Usage(e.to_string()))?;
    TraccarSource::compile(raw, "setup")
        .map_err(|e| SetupError::Usage(format!("--server: {}", e.join("; "))))
}

/// The password: `TRACKRELAY_SETUP_PASSWORD`, else asked on the terminal without echo.
fn password(email: &str) -> Result<Secret, SetupError> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(Secret(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(SetupError::Usage(format!(
            "no password for {email}: set {PASSWORD_ENV}, or run on a terminal to be asked"
        )));
    }
    rpassword::prompt_password(format!("Password for {email}: "))
        .map(Secret)
        .map_err(|e| SetupError::Usage(format!("cannot read the password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(types: Option<&str>) -> Wanted {
        Wanted {
            url: "https://relay.example.org/events".into(),
            psk: Secret("Bearer new-key".into()),
            new_key: false,
            types: types.map(String::from),
        }
    }

    #[test]
    fn the_webhook_url_is_the_public_address_with_the_ingest_path() {
        let u = |p: &str| webhook_url(p, "/events").unwrap();
        assert_eq!(
            u("https://relay.example.org"),
            "https://relay.example.org/events"
        );
        assert_eq!(
            u("https://relay.example.org/"),
            "https://relay.example.org/events"
        );
        assert_eq!(u("https://x.org/relay/"), "https://x.org/relay/events");
        assert_eq!(
            u("https://x.org/relay/events"),
            "https://x.org/relay/events"
        );
        assert!(webhook_url("relay.example.org", "/events").is_err());
        assert!(webhook_url("ftp://relay.example.org", "/events").is_err());
    }

    #[test]
    fn only_the_three_attributes_change_and_the_key_shows_masked() {
        let user = json!({"id": 7, "email": "a@b.c", "deviceLimit": -1,
            "attributes": {"timezone": "Europe/Vienna", "webhookPsk": "Bearer old-key",
                           "webhookTypes": "alarm"}});
        let c = changes(&user, &wanted(None));
        let keys: Vec<_> = c.iter().map(|c| c.key).collect();
        assert_eq!(keys, [URL_KEY, PSK_KEY, TYPES_KEY]);
        assert_eq!(c[0].old, "(unset)");
        assert_eq!(c[2].new, "(removed: all event types)");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("old-key") && !shown.contains("new-key"),
            "{shown}"
        );
        assert!(
            c[1].old.starts_with("Bearer *** (") && c[1].old.ends_with(" characters)"),
            "{}",
            c[1].old
        );
        assert_ne!(c[1].old, c[1].new);
        let after = updated(&user, &wanted(None));
        assert_eq!(
            after,
            json!({"id": 7, "email": "a@b.c", "deviceLimit": -1,
                "attributes": {"timezone": "Europe/Vienna", "webhookPsk": "Bearer new-key",
                               "webhookUrl": "https://relay.example.org/events"}})
        );
        // Once set, nothing changes.
        assert!(changes(&after, &wanted(None)).is_empty());
        let typed = updated(&after, &wanted(Some("alarm,deviceOffline")));
        assert_eq!(typed["attributes"][TYPES_KEY], "alarm,deviceOffline");
        assert_eq!(
            changes(&after, &wanted(Some("alarm,deviceOffline"))).len(),
            1
        );
    }

    #[test]
    fn a_read_back_that_lost_a_field_is_caught() {
        let sent = json!({"id": 7, "deviceLimit": -1, "password": null, "attributes": {"a": 1}});
        let mut back = sent.clone();
        back.as_object_mut().unwrap().remove("password");
        assert!(verify(&sent, &back).is_ok());
        back["deviceLimit"] = json!(0);
        let e = verify(&sent, &back).unwrap_err().to_string();
        assert!(e.contains("deviceLimit"), "{e}");
    }
}
