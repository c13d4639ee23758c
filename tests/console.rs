//! The web console in a real browser (headless Chromium through chromedriver, see
//! `tests/support/browser.rs`), against a relay on loopback with a webhook sink: log in, watch an event
//! arrive, acknowledge an incident at phone size, silence a device, test a rule, replay a dead letter,
//! and a cross-site form refused. Without a browser: session cookies, CSRF, the viewer's limits, the
//! login rate limit and the token file of a relay without `admin.token`. Screenshots of every page at
//! desktop and phone size go to `target/console-screenshots/`.

mod common;
mod support;

use std::time::Duration;

use common::{config_in, Relay};
use support::browser::Browser;
use support::sink::{Mode, Sink};

const ADMIN: &str = "console-admin-token-0123456789";
const VIEWER: &str = "console-viewer-token-9876543210";
const WAIT: Duration = Duration::from_secs(10);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (360, 740);

/// A vibration alarm of device 12 ("Lena's Gazelle"), armed, with event id `id`.
fn alarm(id: u64, alarm: &str) -> String {
    common::payload("alarm_vibration.json")
        .replace("1937310", &id.to_string())
        .replace("\"vibration\"", &format!("\"{alarm}\""))
}

/// A relay with a webhook channel to `sink`, a theft rule with an incident (ack links under
/// `public_url`) and an SOS rule; admin and viewer tokens.
async fn relay(dir: &std::path::Path, sink: &Sink) -> Relay {
    let port = support::smtp::free_port();
    let yaml = format!(
        r#"listen: "127.0.0.1:{port}"
public_url: "http://127.0.0.1:{port}"
admin: {{ token: "{ADMIN}", viewer_token: "{VIEWER}" }}
storage: {{ data_dir: "{dir}" }}
channels:
  hook: {{ type: webhook, url: "{url}" }}
rules:
  - name: theft
    severity: critical
    match: {{ type: alarm, alarm: [vibration, movement] }}
    incident: {{ key: "theft-{{{{ device.id }}}}", repeat: 1h }}
    notify: [{{ channel: hook, template: "Theft {{{{ device.name }}}} {{{{ ack_url }}}}" }}]
  - name: sos
    match: {{ type: alarm, alarm: sos }}
    notify: [{{ channel: hook }}]
"#,
        dir = dir.display(),
        url = sink.url("/hook"),
    );
    let mut config = config_in(dir, &yaml);
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    Relay::start_as_configured(config).await
}

/// Logs `b` in with `token` (from the login page).
async fn log_in(b: &Browser, relay: &Relay, token: &str) {
    b.goto(&relay.url("/console/")).await;
    assert!(
        b.current_url().await.path().ends_with("/console/login"),
        "a visitor without a session is sent to the login page"
    );
    b.fill("#token", token).await;
    b.click("form button[type=submit]").await;
    b.wait_for_text("h1", "Overview", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_a_posted_event_shows_on_the_overview() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    let b = Browser::new(DESKTOP.0, DESKTOP.1).await;

    b.goto(&relay.url("/console/login")).await;
    b.fill("#token", "not-the-token").await;
    b.click("form button[type=submit]").await;
    b.wait_for_text("#login-error", "not right", WAIT).await;
    b.goto(&relay.url("/console/deliveries")).await;
    assert!(b.current_url().await.path().ends_with("/console/login"));

    log_in(&b, &relay, ADMIN).await;
    let cookie = b
        .cookies()
        .await
        .into_iter()
        .find(|c| c.name() == "trackrelay_session")
        .expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    // (fantoccini's cookie crate does not export its SameSite type.)
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    let (status, _) = relay.post(alarm(500, "sos"), &[]).await;
    assert_eq!(status, 200);
    // The overview refreshes itself (every 10 s); a reload shows it at once.
    b.goto(&relay.url("/console/")).await;
    let events = b.wait_for_text("#events", "Lena's Gazelle", WAIT).await;
    assert!(events.contains("sos"), "{events}");
    b.screenshot("overview-desktop").await;
    b.close().await;
    relay.stop().await;
}

/// The ack link a message carried (`/ack/<32 hex>`).
fn ack_link(text: &str) -> String {
    let at = text.find("http://").expect("a link in the message");
    text[at..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_acknowledged_from_a_phone_on_its_link_and_resolved_in_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    // An SOS first: not the incident's, so not on its timeline.
    relay.post(alarm(599, "sos"), &[]).await;
    sink.wait_for(1, WAIT).await;
    relay.post(alarm(600, "vibration"), &[]).await;
    let sent = sink.wait_for(2, WAIT).await;
    let link = ack_link(&sent[1].body_text());
    assert!(link.contains("/ack/"), "{link}");

    let b = Browser::phone(PHONE.0, PHONE.1).await;
    b.goto(&link).await;
    b.wait_for_text("h1", "theft", WAIT).await;
    b.screenshot("ack-page-phone").await;
    b.fill("input[name=name]", "Lena").await;
    b.click("form button[type=submit]").await;
    b.wait_for_text("body", "acknowledged by Lena", WAIT).await;
    let wide = b.eval("return document.documentElement.scrollWidth").await;
    assert!(
        wide.as_u64().unwrap() <= 360,
        "the page fits a phone: {wide}"
    );

    // The console, at the same size: the incident acknowledged via the link; resolve it.
    log_in(&b, &relay, ADMIN).await;
    b.goto(&relay.url("/console/incidents/1")).await;
    let status = b.text("#incident-status").await;
    assert!(
        status.contains("acknowledged by Lena (hook) via link"),
        "{status}"
    );
    // The timeline: the opening message (delivery 2) and the notice of the acknowledgement (3), not
    // the SOS (1).
    let entries = b
        .eval(
            "return [...document.querySelectorAll('#timeline a')].map(a => a.getAttribute('href'))",
        )
        .await;
    assert_eq!(
        entries,
        serde_json::json!(["/console/deliveries/2", "/console/deliveries/3"])
    );
    b.screenshot("incident-phone").await;
    b.click("form[action$='/resolve'] button").await;
    b.wait_for_text(".flash", "Resolved.", WAIT).await;
    let (_, one) = relay.admin_get("/api/incidents/1", ADMIN).await;
    assert_eq!(one["status"], "resolved", "{one}");
    assert!(
        one["summary"].as_str().unwrap().contains("via console"),
        "{one}"
    );
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_made_in_the_console_suppresses_the_next_event_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    // An event first, so the device is known to the preview.
    relay.post(alarm(700, "sos"), &[]).await;
    sink.wait_for(1, WAIT).await;

    let b = Browser::new(DESKTOP.0, DESKTOP.1).await;
    log_in(&b, &relay, ADMIN).await;
    b.goto(&relay.url("/console/silences")).await;
    b.fill("input[name=device]", "Lena*").await;
    // The preview follows the typing (the script) and names the device.
    b.wait_for_text("#preview", "Lena's Gazelle (12)", WAIT)
        .await;
    b.fill("input[name=author]", "Ops").await;
    b.fill("input[name=comment]", "bike in the workshop").await;
    b.select("select[name=duration]", "2h").await;
    b.screenshot("silences-desktop").await;
    b.click("#silence-form button.primary").await;
    b.wait_for_text(".flash", "Silence created", WAIT).await;
    let table = b.text("#silences").await;
    assert!(
        table.contains("device=Lena*") && table.contains("active"),
        "{table}"
    );

    relay.post(alarm(701, "sos"), &[]).await;
    let rows = relay.wait_deliveries("suppressed", 1, ADMIN).await;
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("silence") && reason.contains("Ops"),
        "{reason}"
    );
    sink.assert_stays_at(1, Duration::from_millis(300)).await;
    b.goto(&relay.url("/console/deliveries?status=suppressed"))
        .await;
    b.wait_for_text("#deliveries", "silence", WAIT).await;
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_tester_names_the_first_failing_condition_and_sends_a_test() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    let b = Browser::new(DESKTOP.0, DESKTOP.1).await;
    log_in(&b, &relay, ADMIN).await;
    b.goto(&relay.url("/console/tester")).await;
    b.fill("#event", &alarm(800, "vibration")).await;
    b.click("form[action='/console/tester'][method=post] button")
        .await;
    let verdicts = b.wait_for_text("#verdicts", "sos", WAIT).await;
    assert!(verdicts.contains("no match"), "{verdicts}");
    assert!(verdicts.contains("alarm in [sos]"), "{verdicts}");
    let result = b.text("#result").await;
    assert!(result.contains("opens an incident"), "{result}");
    b.screenshot("tester-desktop").await;
    // Nothing was stored or sent by testing.
    sink.assert_stays_at(0, Duration::from_millis(200)).await;
    b.click(".message-card form button").await;
    b.wait_for_text("#sent", "Sent to hook", WAIT).await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(
        got[0].body_text().contains("Theft Lena"),
        "{}",
        got[0].body_text()
    );
    // A stored event: picked from the list, tested as it was received (its incident open now).
    relay.post(alarm(801, "vibration"), &[]).await;
    let got = sink.wait_for(2, WAIT).await;
    assert!(
        got[1].body_text().contains("/ack/"),
        "{}",
        got[1].body_text()
    );
    b.goto(&relay.url("/console/tester")).await;
    b.click("form:has(select[name=stored]) button").await;
    // The page comes back with the event in the box.
    let mut event = serde_json::Value::Null;
    for _ in 0..100 {
        event = b
            .eval("return document.getElementById('event').value")
            .await;
        if event.as_str().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(event.as_str().unwrap().contains("801"), "{event}");
    b.click("form[action='/console/tester'][method=post] button")
        .await;
    b.wait_for_text("#result", "joins incident 1", WAIT).await;
    // The stored events of the last week replayed: the theft opened one incident and sent one message.
    b.click("#replay-form button").await;
    let heading = b
        .wait_for_text("#replay-h", "would have been sent", WAIT)
        .await;
    assert!(heading.starts_with("1 message would"), "{heading}");
    let rows = b.text("#replay-rules").await;
    assert!(rows.contains("theft 1 1 0 0 0 0 1 opened"), "{rows}");
    assert!(rows.contains("sos 0 0 0 0 0 0"), "{rows}");
    // The stored message hides its acknowledgement link (viewers see messages too).
    b.goto(&relay.url("/console/deliveries/1")).await;
    let message = b.text("pre.message").await;
    assert!(message.contains("/ack/(link hidden)"), "{message}");
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_from_the_console_reaches_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_mode(Mode::Status(400));
    let relay = relay(dir.path(), &sink).await;
    relay.post(alarm(900, "sos"), &[]).await;
    let dead = relay.wait_deliveries("dead", 1, ADMIN).await;
    let id = dead[0]["id"].as_i64().unwrap();
    sink.set_mode(Mode::Ok);

    let b = Browser::phone(PHONE.0, PHONE.1).await;
    log_in(&b, &relay, ADMIN).await;
    b.goto(&relay.url("/console/deliveries?status=dead")).await;
    b.wait_for_text("#deliveries", "400", WAIT).await;
    b.screenshot("deliveries-phone").await;
    b.click(&format!("a[href='/console/deliveries/{id}']"))
        .await;
    b.wait_for_text("#delivery-status", "dead", WAIT).await;
    b.click("form[action$='/replay'] button").await;
    b.wait_for_text(".flash", "Queued", WAIT).await;
    let ok = sink.wait_for_successful(1, WAIT).await;
    assert!(ok[0].body_text().contains("sos"), "{}", ok[0].body_text());
    relay.wait_deliveries("done", 1, ADMIN).await;
    b.close().await;
    relay.stop().await;
}

/// A page on another origin that posts a form to the console as soon as it loads.
async fn evil_site(target: String) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!DOCTYPE html><html><body><form id=f method=post action=\"{target}\">\
         <input name=device value=12><input name=author value=evil><input name=duration value=7d>\
         </form><script>document.getElementById('f').submit()</script></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let p = page.clone();
            async move { axum::response::Html(p) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    let b = Browser::new(DESKTOP.0, DESKTOP.1).await;
    log_in(&b, &relay, ADMIN).await;
    // The console is at 127.0.0.1; the attacker's page at localhost, another site.
    let (evil, task) = evil_site(relay.url("/console/silences")).await;
    b.goto(&format!("http://localhost:{}/", evil.port())).await;
    // The post lands on the console, which refuses it (the browser says where it came from).
    b.wait_for_text("h1", "Refused", WAIT).await;
    assert!(b.text("main").await.contains("another site"));
    let (_, list) = relay.admin_get("/api/silences", ADMIN).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 0, "{list}");
    task.abort();
    b.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_fits_desktop_and_phone_and_is_captured() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    relay.post(alarm(1000, "vibration"), &[]).await;
    relay.post(alarm(1001, "sos"), &[]).await;
    sink.wait_for(2, WAIT).await;
    let pages = [
        ("overview", "/console/"),
        ("incidents", "/console/incidents"),
        ("incident", "/console/incidents/1"),
        ("deliveries", "/console/deliveries"),
        ("delivery", "/console/deliveries/1"),
        ("silences", "/console/silences"),
        ("rules", "/console/rules"),
        ("tester", "/console/tester?example=0"),
    ];
    for (size, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        let b = if size == "phone" {
            Browser::phone(w, h).await
        } else {
            Browser::new(w, h).await
        };
        log_in(&b, &relay, ADMIN).await;
        for (name, path) in pages {
            b.goto(&relay.url(path)).await;
            b.wait_for_text("main h1", "", WAIT).await;
            // Wide tables scroll inside their box; the page itself never scrolls sideways.
            let wide = b
                .eval("return document.documentElement.scrollWidth")
                .await
                .as_u64()
                .unwrap();
            assert!(wide <= w as u64, "{name} is {wide} px wide at {w} px");
            b.screenshot(&format!("{name}-{size}")).await;
        }
        // The rules page counts the last day's matches: one event each.
        b.goto(&relay.url("/console/rules")).await;
        let counts = b
            .eval("return [...document.querySelectorAll('#rules tbody tr')].map(r => r.cells[0].innerText.split('\\n')[0] + '=' + r.cells[5].innerText)")
            .await;
        assert_eq!(counts, serde_json::json!(["theft=1", "sos=1"]));
        b.close().await;
    }
    relay.stop().await;
}

// ---- Without a browser: the HTTP rules of sessions and forms. ----

/// A client that does not follow redirects (the tests read them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in with `token`; returns the `Set-Cookie` header and the `name=value` pair.
async fn login(relay: &Relay, token: &str) -> (u16, String, String) {
    let r = client()
        .post(relay.url("/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let pair = set.split(';').next().unwrap_or_default().to_string();
    (status, set, pair)
}

/// The CSRF token on a page.
async fn csrf(relay: &Relay, cookie: &str, path: &str) -> String {
    let html = client()
        .get(relay.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with csrf")
        + 19;
    html[at..at + 32].to_string()
}

#[tokio::test]
async fn sessions_and_forms_follow_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    let (status, set, admin) = login(&relay, ADMIN).await;
    assert_eq!(status, 303, "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(!set.contains("Secure"), "http: no Secure flag: {set}");
    let token = csrf(&relay, &admin, "/console/silences").await;
    let post = |cookie: String, form: Vec<(&'static str, String)>, origin: Option<String>| {
        let mut r = client()
            .post(relay.url("/console/silences"))
            .header("cookie", cookie)
            .form(&form);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let silence = |csrf: &str| {
        vec![
            ("device", "12".to_string()),
            ("author", "Ops".to_string()),
            ("duration", "1h".to_string()),
            ("csrf", csrf.to_string()),
        ]
    };
    // No token, a wrong one, another origin: refused, nothing made.
    let (s, _) = post(admin.clone(), silence(""), None).await;
    assert_eq!(s, 403);
    let (s, _) = post(admin.clone(), silence(&"0".repeat(32)), None).await;
    assert_eq!(s, 403);
    let (s, body) = post(
        admin.clone(),
        silence(&token),
        Some("http://evil.example".into()),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (_, list) = relay.admin_get("/api/silences", ADMIN).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 0);
    // The viewer looks but cannot change anything, even with its own CSRF token.
    let (_, _, viewer) = login(&relay, VIEWER).await;
    let vtoken = csrf(&relay, &viewer, "/console/tester").await;
    let (s, body) = post(viewer.clone(), silence(&vtoken), None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("viewer"), "{body}");
    // Every state change is the admin's: the viewer gets 403 on each, with a valid CSRF token.
    for path in [
        "/console/incidents/1/ack",
        "/console/incidents/1/resolve",
        "/console/deliveries/1/replay",
        "/console/deliveries/replay-dead",
        "/console/silences/1/expire",
        "/console/tester/send",
        "/console/reload",
    ] {
        let r = client()
            .post(relay.url(path))
            .header("cookie", &viewer)
            .form(&[("csrf", vtoken.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
    }
    // ... but it may look, and run the tester (which changes nothing).
    let r = client()
        .post(relay.url("/console/tester"))
        .header("cookie", &viewer)
        .form(&[("csrf", vtoken.as_str()), ("event", &alarm(1, "sos"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("1 rule matches"), "{page}");
    // The admin with its token: made.
    let (s, body) = post(admin.clone(), silence(&token), Some(relay.url(""))).await;
    assert_eq!(s, 303, "{body}");
    let (_, list) = relay.admin_get("/api/silences", ADMIN).await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 1, "{list}");
    // A forged cookie is no session.
    let forged = admin.replacen("admin.", "admin.9", 1);
    let r = client()
        .get(relay.url("/console/"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    // Logging out needs the form's token too, and removes the cookie.
    let logout = |form: Vec<(&'static str, String)>| {
        client()
            .post(relay.url("/console/logout"))
            .header("cookie", &admin)
            .form(&form)
            .send()
    };
    assert_eq!(logout(vec![]).await.unwrap().status().as_u16(), 403);
    let r = logout(vec![("csrf", token.clone())]).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("Max-Age=0"), "{set}");
    assert_eq!(r.headers()["location"], "/console/login");
    relay.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited_even_for_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = relay(dir.path(), &sink).await;
    for _ in 0..10 {
        let (status, _, _) = login(&relay, "guess").await;
        assert_eq!(status, 401);
    }
    let (status, set, _) = login(&relay, ADMIN).await;
    assert_eq!(status, 429, "the limit holds for everyone: {set}");
    relay.stop().await;
}

#[tokio::test]
async fn a_loopback_relay_without_a_token_opens_its_console_with_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\nchannels: {{ hook: {{ type: webhook, url: \"{}\" }} }}\n\
         rules: [{{ name: a, notify: [{{ channel: hook }}] }}]\n",
        dir.path().display(),
        sink.url("/hook")
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    let file = dir.path().join("console-token");
    let token = std::fs::read_to_string(&file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner reads it: {mode:o}");
    }
    let (status, _, cookie) = login(&relay, token).await;
    assert_eq!(status, 303);
    let r = client()
        .get(relay.url("/console/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The admin API stays off: the file opens the console only.
    let (status, _) = relay.admin_get("/api/deliveries", token).await;
    assert_eq!(status, 404);
    relay.stop().await;
    // A restart keeps the token (and so the sessions).
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    relay.stop().await;
}
