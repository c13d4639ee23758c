//! The `url:` shorthand of a channel written without `type:`: an [Apprise](https://github.com/caronc/apprise/wiki)
//! URL for the common cases, expanded into the long form's keys before the channel is read, so every
//! other key (`priorities`, `template`, `retry`, ...) still works beside it and the long form stays
//! the reference:
//!
//! | URL | long form |
//! |---|---|
//! | `ntfy://topic` | `type: ntfy`, ntfy.sh, `topic` |
//! | `ntfy://host[:port]/topic`, `ntfys://...` | `url: http[s]://host[:port]`, `topic` |
//! | `ntfys://user:password@host/topic` | `username`, `password` |
//! | `ntfys://tk_token@host/topic` | `token` (an access token starts with `tk_`) |
//! | `pover://user_key@app_token[/device]` | `type: pushover`, `user`, `token`, `device` |
//! | `gotify[s]://host[:port][/path]/app_token` | `type: gotify`, `url`, `token` |
//! | `matrix[s]://access_token@host[:port]/!room:server` | `type: matrix`, `homeserver`, `access_token`, `room` |
//!
//! Secrets in the URL are percent-decoded (`%2F` for `/`); keep the URL in an environment variable.

use percent_encoding::percent_decode_str;
use reqwest::Url;
use serde_yaml::{Mapping, Value};

/// The long form's keys of an Apprise URL: `type` and the kind's own. Errors never repeat the URL (it
/// holds secrets).
pub fn expand(url: &str) -> Result<Vec<(&'static str, String)>, String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let Some(scheme) = scheme else {
        return Err(
            "url: without `type`, `url` is an Apprise URL (ntfy://, ntfys://, pover://, \
                    gotify://, gotifys://, matrix://, matrixs://); give `type` for the long form"
                .into(),
        );
    };
    let known = [
        "ntfy", "ntfys", "pover", "gotify", "gotifys", "matrix", "matrixs",
    ];
    if !known.contains(&scheme.as_str()) {
        return Err(format!(
            "url: `{scheme}://` is not a shorthand the relay knows (ntfy, ntfys, pover, gotify, \
             gotifys, matrix, matrixs); give `type` for the long form"
        ));
    }
    let rest = &url[scheme.len() + 3..];
    if rest.contains(['?', '#']) {
        return Err(format!(
            "url: a {scheme}:// shorthand takes no `?` options or `#` part: give the options as keys \
             beside `url` (a Matrix room by its id, `!room:server`)"
        ));
    }
    if scheme == "pover" {
        return pover(rest);
    }
    // These schemes are not "special" to the URL standard: the host keeps its case (an ntfy topic in
    // its place is case-sensitive) and the port is kept as written.
    let u = Url::parse(url).map_err(|e| format!("url: not a valid {scheme}:// URL ({e})"))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("url: a {scheme}:// URL needs a host"))?
        .to_string();
    let segments: Vec<String> = match u.path_segments() {
        Some(s) => s
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect::<Result<_, _>>()?,
        None => vec![],
    };
    let user = match u.username() {
        "" => None,
        name => Some(decode(name)?),
    };
    let password = u.password().map(decode).transpose()?;
    if segments.is_empty() && u.port().is_some() && scheme.starts_with("ntfy") {
        // `ntfys://host:8443` without a topic would publish to the topic "host" on ntfy.sh.
        return Err("url: ntfy://host:port/topic: the topic is missing".into());
    }
    let tls = scheme.ends_with('s');
    let base = |host: &str, path: &[String]| {
        let mut out = format!("{}://{host}", if tls { "https" } else { "http" });
        if let Some(p) = u.port() {
            out.push_str(&format!(":{p}"));
        }
        for s in path {
            out.push('/');
            out.push_str(s);
        }
        out
    };
    match scheme.as_str() {
        "ntfy" | "ntfys" => ntfy(&host, &segments, user, password, &base),
        "gotify" | "gotifys" => match segments.split_last() {
            Some((token, path)) => Ok(vec![
                ("type", "gotify".into()),
                ("url", base(&host, path)),
                ("token", token.clone()),
            ]),
            None => Err("url: gotify://host/app_token: the application token is missing".into()),
        },
        _ => matrix(user, &segments, &base(&host, &[])),
    }
}

/// `matrix[s]://access_token@host[:port]/!room:server` (`homeserver` is the URL's base).
fn matrix(
    user: Option<String>,
    segments: &[String],
    homeserver: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    match (user, segments) {
        (Some(token), [room]) => Ok(vec![
            ("type", "matrix".into()),
            ("homeserver", homeserver.to_string()),
            ("access_token", token),
            ("room", room.clone()),
        ]),
        (None, _) => Err(
            "url: matrix://access_token@host/!room:server: the access token \
                          is missing (log-in with a password is not supported)"
                .into(),
        ),
        _ => Err("url: matrix://access_token@host/!room:server: name one room id".into()),
    }
}

/// `ntfy://topic` (ntfy.sh), `ntfy[s]://[user:password@ | tk_token@]host/topic`.
fn ntfy(
    host: &str,
    segments: &[String],
    user: Option<String>,
    password: Option<String>,
    base: &dyn Fn(&str, &[String]) -> String,
) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = vec![("type", "ntfy".to_string())];
    match segments {
        // No path: the host is the topic, on ntfy.sh.
        [] => {
            out.push(("url", "https://ntfy.sh".into()));
            out.push(("topic", host.to_string()));
        }
        [topic] => {
            out.push(("url", base(host, &[])));
            out.push(("topic", topic.clone()));
        }
        _ => {
            return Err("url: ntfy://host/topic names one topic (write a channel per topic)".into())
        }
    }
    match (user, password) {
        (Some(u), Some(p)) if u.is_empty() => out.push(("token", p)),
        (Some(u), Some(p)) => {
            out.push(("username", u));
            out.push(("password", p));
        }
        (Some(t), None) if t.starts_with("tk_") => out.push(("token", t)),
        (Some(_), None) => {
            return Err(
                "url: ntfy://user@host: a user needs a password (user:password@), or give an \
                 access token (tk_...@)"
                    .into(),
            )
        }
        (None, Some(t)) => out.push(("token", t)),
        (None, None) => {}
    }
    Ok(out)
}

/// `pover://user_key@app_token[/device]`, read by hand: the app token stands where a host would, and
/// a URL parser would lowercase it.
fn pover(rest: &str) -> Result<Vec<(&'static str, String)>, String> {
    // The app token stands where a host would, and a URL parser would lowercase it.
    let (user, rest) = match rest.split_once('@') {
        Some((u, r)) => (Some(decode(u)?), r),
        None => (None, rest),
    };
    let mut parts = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let token = parts
        .next()
        .ok_or("url: pover://user_key@app_token: the app token is missing")?;
    pushover(
        &token,
        &parts.collect::<Vec<_>>(),
        user.filter(|u| !u.is_empty()),
    )
}

/// `pover://user_key@app_token[/device]`.
fn pushover(
    token: &str,
    segments: &[String],
    user: Option<String>,
) -> Result<Vec<(&'static str, String)>, String> {
    let user = user.ok_or("url: pover://user_key@app_token: the user key is missing")?;
    let mut out = vec![
        ("type", "pushover".to_string()),
        ("user", user),
        ("token", token.to_string()),
    ];
    match segments {
        [] => {}
        [device] => out.push(("device", device.clone())),
        _ => return Err("url: pover://user_key@app_token/device names one device".into()),
    }
    Ok(out)
}

/// A percent-encoded part, decoded; not UTF-8 is an error (a secret silently changed would fail
/// later, and less clearly).
fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "url: a percent-encoded part is not UTF-8".to_string())
}

/// Expands a channel section written with an Apprise `url:` and no `type:` in place; other sections
/// are left as written. A key given both in the URL and beside it is an error.
pub fn expand_section(section: &mut Value) -> Result<(), String> {
    let Value::Mapping(m) = section else {
        return Ok(());
    };
    if m.contains_key("type") {
        return Ok(());
    }
    let Some(url) = m.get("url").and_then(Value::as_str).map(str::to_string) else {
        return Ok(());
    };
    m.remove("url");
    let expanded: Mapping = expand(&url)?
        .into_iter()
        .map(|(k, v)| (Value::from(k), Value::from(v)))
        .collect();
    for (k, v) in expanded {
        if m.contains_key(&k) {
            return Err(format!(
                "`{}` is given twice: in the url and beside it",
                k.as_str().unwrap_or_default()
            ));
        }
        m.insert(k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(url: &str) -> Vec<(&'static str, String)> {
        expand(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn kv(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn ntfy_urls() {
        assert_eq!(
            keys("ntfy://bike-alarms"),
            kv(&[
                ("type", "ntfy"),
                ("url", "https://ntfy.sh"),
                ("topic", "bike-alarms")
            ])
        );
        assert_eq!(
            keys("ntfys://tk_abc@ntfy.example.org/bikes"),
            kv(&[
                ("type", "ntfy"),
                ("url", "https://ntfy.example.org"),
                ("topic", "bikes"),
                ("token", "tk_abc")
            ])
        );
        assert_eq!(
            keys("ntfy://lena:p%40ss%2Fw@10.0.0.2:8080/bikes"),
            kv(&[
                ("type", "ntfy"),
                ("url", "http://10.0.0.2:8080"),
                ("topic", "bikes"),
                ("username", "lena"),
                ("password", "p@ss/w")
            ])
        );
        assert_eq!(
            keys("ntfys://:tk_x@host/t")[3],
            ("token", "tk_x".to_string()),
            "shoutrrr's `:token@`"
        );
        assert!(expand("ntfy://lena@host/t")
            .unwrap_err()
            .contains("needs a password"));
        // A topic keeps its case; numbers are topics, not addresses; a port needs a topic.
        assert_eq!(
            keys("ntfy://BikeAlarms")[2],
            ("topic", "BikeAlarms".to_string())
        );
        assert_eq!(keys("ntfy://2024")[2], ("topic", "2024".to_string()));
        assert!(expand("ntfys://u:p@myntfy:8443")
            .unwrap_err()
            .contains("topic is missing"));
        // A port is kept as written, the default ones too.
        assert_eq!(
            keys("ntfy://host:443/t")[1],
            ("url", "http://host:443".to_string())
        );
        assert!(expand("ntfy://host/t?priority=5")
            .unwrap_err()
            .contains("no `?` options"));
        assert!(expand("matrix://t@host/#room:x")
            .unwrap_err()
            .contains("`#` part"));
        assert!(expand("ntfy://u:%FF@host/t")
            .unwrap_err()
            .contains("not UTF-8"));
        assert!(expand("ntfy://host/a/b").unwrap_err().contains("one topic"));
    }

    #[test]
    fn pushover_gotify_and_matrix_urls() {
        assert_eq!(
            keys("pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi/phone"),
            kv(&[
                ("type", "pushover"),
                ("user", "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"),
                ("token", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"),
                ("device", "phone")
            ])
        );
        assert!(expand("pover://apptoken").unwrap_err().contains("user key"));
        assert!(expand("pover://userkey@")
            .unwrap_err()
            .contains("app token"));
        assert_eq!(
            keys("gotifys://push.example.org:8443/gotify/AbCdEf"),
            kv(&[
                ("type", "gotify"),
                ("url", "https://push.example.org:8443/gotify"),
                ("token", "AbCdEf")
            ])
        );
        assert_eq!(
            keys("matrixs://syt_token@matrix.example.org/!abc:example.org"),
            kv(&[
                ("type", "matrix"),
                ("homeserver", "https://matrix.example.org"),
                ("access_token", "syt_token"),
                ("room", "!abc:example.org")
            ])
        );
        assert!(expand("matrix://host/!r:x")
            .unwrap_err()
            .contains("access token"));
    }

    #[test]
    fn unknown_or_bad_urls_say_why_without_the_secret() {
        let e = expand("slack://T0/B0/secretpart").unwrap_err();
        assert!(e.contains("slack://") && !e.contains("secretpart"), "{e}");
        let e = expand("just-a-word").unwrap_err();
        assert!(e.contains("give `type`"), "{e}");
        let e = expand("gotify://").unwrap_err();
        assert!(e.contains("gotify"), "{e}");
    }

    #[test]
    fn sections_with_a_type_are_left_alone_and_keys_are_not_given_twice() {
        let mut long: Value = serde_yaml::from_str("{ type: webhook, url: 'ntfy://x' }").unwrap();
        let before = long.clone();
        expand_section(&mut long).unwrap();
        assert_eq!(long, before);
        let mut short: Value =
            serde_yaml::from_str("{ url: 'ntfy://bikes', priorities: { low: 1 } }").unwrap();
        expand_section(&mut short).unwrap();
        assert_eq!(short["type"], "ntfy");
        assert_eq!(short["topic"], "bikes");
        assert_eq!(short["priorities"]["low"], 1);
        assert!(short.get("url").is_some_and(|u| u == "https://ntfy.sh"));
        let mut twice: Value =
            serde_yaml::from_str("{ url: 'ntfy://bikes', topic: other }").unwrap();
        assert!(expand_section(&mut twice)
            .unwrap_err()
            .contains("`topic` is given twice"));
    }
}
