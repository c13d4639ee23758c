//! Incidents end to end, on the real pipeline with a real SQLite file and real peers on loopback (the
//! Telegram stand-in, an SMTP server, a webhook sink): an alarm opens an incident whose messages carry
//! an acknowledgement link; it repeats and escalates on the relay's clock until a person acknowledges
//! it through the link's page, the admin API or the CLI; `resolve_on` and `resolve_after` close it; a
//! restart keeps its timer. The clock is moved forward with `trackrelay::clock::advance` (process-wide:
//! the tests of this file take turns).

mod common;
mod support;

use std::time::Duration;

use common::{config_in, eventually, example_config, example_vars, payload, Relay};
use support::sink::Sink;
use support::smtp::{free_port, SmtpServer};
use support::telegram::TelegramStandIn;
use trackrelay::clock;

const TOKEN: &str = "123456:TEST-token";
const ADMIN: &str = "admin-s3cret";
const WAIT: Duration = Duration::from_secs(15);
const MIN: i64 = 60_000;

/// The clock is the process's: one test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A relay on a port chosen first, so that its `public_url` can name it.
async fn start_on(mut config: trackrelay::settings::Config, port: u16) -> Relay {
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let running = trackrelay::app::start(config).await.unwrap();
    Relay {
        addr: running.addr,
        running: Some(running),
        client: reqwest::Client::new(),
    }
}

/// Moves the clock and runs the incident timers now. Sends in flight finish first: a jump past their
/// lease would hand them out again (at least once, as after a crash), which no real clock does.
async fn advance(relay: &Relay, ms: i64) {
    let r = relay.running.as_ref().unwrap();
    let inflight = trackrelay::store::Filter {
        status: Some(trackrelay::store::Status::Inflight),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !r.store.list(inflight.clone()).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sends still in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock::advance(ms);
    r.incidents.run_due(clock::now_ms()).await.unwrap();
    r.pipeline.wake.notify_one();
}

/// The acknowledgement link in a text.
fn ack_link(text: &str) -> String {
    let at = text
        .find("/ack/")
        .unwrap_or_else(|| panic!("no link in {text}"));
    let start = text[..at].rfind("http").unwrap();
    text[start..at + 5 + 32].to_string()
}

#[tokio::test]
async fn the_shipped_theft_rule_repeats_and_escalates_until_acknowledged_from_its_link() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let telegram = TelegramStandIn::start(TOKEN, &["4242"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    let mut vars = example_vars(
        dir.path(),
        TOKEN,
        telegram.base_url(),
        smtp.port(),
        sink.url("/ops"),
    );
    vars.insert("TRACKRELAY_ADMIN_TOKEN", ADMIN.to_string());
    vars.insert("TRACKRELAY_PUBLIC_URL", format!("http://127.0.0.1:{port}/"));
    let relay = start_on(example_config(&vars), port).await;
    let auth = [("authorization", "Bearer s3cret")];

    // The alarm: the owner's phone (text + pin) and the family's mail, each with a link.
    let (status, body) = relay.post(payload("alarm_vibration.json"), &auth).await;
    assert_eq!(
        (status, body["deliveries"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    let first = telegram.wait_for_messages(2, WAIT).await;
    let text = first[0].text.clone().unwrap();
    assert!(text.starts_with("🚨 <b>Theft alarm"), "{text}");
    let link = ack_link(&text);
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/ack/")),
        "{link}"
    );
    let mails = smtp.wait_for(1, WAIT).await;
    assert!(
        mails[0].text.as_deref().unwrap_or("").contains("/ack/"),
        "the mail carries a link too"
    );
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{list}");
    assert_eq!(incidents[0]["status"], "open");
    assert_eq!(incidents[0]["key"], "theft-12");

    // More alarms of the bike join it: nobody is notified again for them.
    let again = payload("alarm_vibration.json").replace("1937310", "1937311");
    let (_, body) = relay.post(again, &auth).await;
    assert_eq!(body["status"], "accepted", "{body}");
    telegram
        .assert_stays_at(2, Duration::from_millis(500))
        .await;

    // 5 minutes: the first reminder, to the phone and the mail, saying how many alarms since when.
    advance(&relay, 5 * MIN + 1000).await;
    // (A reminder carries no pin: the live one follows the bike already.)
    let msgs = telegram.wait_for_messages(3, WAIT).await;
    let reminder = msgs[2].plain_text.clone().unwrap();
    assert!(
        reminder.starts_with("Reminder 1 of 12: not acknowledged yet; 2 events since"),
        "{reminder}"
    );
    smtp.wait_for(2, WAIT).await;
    assert!(
        sink.requests().is_empty(),
        "no escalation before 10 minutes"
    );

    // 10 minutes: the escalation to the ops chat, and the second reminder.
    advance(&relay, 5 * MIN).await;
    let ops = sink.wait_for(1, WAIT).await;
    assert!(
        ops[0].body_text().contains("Escalated (step 1)"),
        "{}",
        ops[0].body_text()
    );
    telegram.wait_for_messages(4, WAIT).await;

    // A link preview fetches the page: nothing is acknowledged.
    let page = relay.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<button type=\"submit\">Acknowledge</button>"),
        "{html}"
    );
    let (_, one) = relay.admin_get("/api/incidents", ADMIN).await;
    assert_eq!(one["incidents"][0]["status"], "open");

    // The owner presses the button: acknowledged, and everyone notified is told.
    let page = relay
        .client
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Lena")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Acknowledged."));
    let notices = telegram.wait_for_messages(5, WAIT).await;
    let notice = notices[4].plain_text.clone().unwrap();
    assert!(
        notice.contains("acknowledged by Lena (phone) via link"),
        "{notice}"
    );
    sink.wait_for(2, WAIT).await;

    // No more reminders, however long nobody else does anything.
    advance(&relay, 30 * MIN).await;
    telegram
        .assert_stays_at(5, Duration::from_millis(800))
        .await;
    // A second press is answered, and changes nothing.
    let again = relay.client.post(&link).send().await.unwrap();
    assert!(again.text().await.unwrap().contains("Already acknowledged"));
    // An unknown link: a 404 page.
    let bad = format!("http://127.0.0.1:{port}/ack/{}", "0".repeat(32));
    assert_eq!(relay.client.get(&bad).send().await.unwrap().status(), 404);
    assert_eq!(relay.client.post(&bad).send().await.unwrap().status(), 404);
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("trackrelay_incidents_live{status=\"acknowledged\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trackrelay_incident_steps_total{step=\"repeat\"} 2"),
        "{metrics}"
    );
    relay.stop().await;
}

/// A config with a webhook channel `hook` (the owner) and `boss` (the escalation), and one rule whose
/// incident repeats every 5 minutes and escalates at 10 and 30.
fn hook_incident_config(dir: &std::path::Path, sink: &Sink) -> trackrelay::settings::Config {
    hook_incident_config_on(dir, sink, None)
}

/// [`hook_incident_config`] on the PostgreSQL database `pg` when given. Messages link to an address
/// that is not the relay's (the tests open the pages on the relay itself).
fn hook_incident_config_on(
    dir: &std::path::Path,
    sink: &Sink,
    pg: Option<&str>,
) -> trackrelay::settings::Config {
    let storage = match pg {
        Some(url) => format!("{{ url: \"{url}\" }}"),
        None => format!("{{ data_dir: \"{}\" }}", dir.display()),
    };
    let yaml = format!(
        "storage: {storage}\npublic_url: http://relay.invalid\nadmin: {{ token: {ADMIN} }}\n\
         channels:\n  hook: {{ type: webhook, url: \"{owner}\" }}\n  boss: {{ type: webhook, url: \"{boss}\" }}\n\
         rules:\n  - name: theft\n    match: {{ type: alarm, where: {{ position.attributes.armed: true }} }}\n\
         \x20   incident:\n      repeat: 5m\n      max_repeats: 3\n      escalate:\n\
         \x20       - {{ after: 10m, notify: [{{ channel: boss }}] }}\n\
         \x20       - {{ after: 30m, notify: [{{ channel: boss, template: \"still nobody\" }}] }}\n\
         \x20     resolve_after: 2h\n\
         \x20     resolve_on: {{ type: alarm, where: {{ position.attributes.armed: false }} }}\n\
         \x20   notify: [{{ channel: hook }}]\n",
        owner = sink.url("/owner"),
        boss = sink.url("/boss"),
    );
    config_in(dir, &yaml)
}

/// A relay on [`hook_incident_config`] with an incident opened by alarm 1, its first message received.
async fn opened(dir: &std::path::Path, sink: &Sink) -> Relay {
    opened_on(dir, sink, None).await
}

/// [`opened`] on the PostgreSQL database `pg` when given.
async fn opened_on(dir: &std::path::Path, sink: &Sink, pg: Option<&str>) -> Relay {
    let relay = Relay::start(hook_incident_config_on(dir, sink, pg)).await;
    relay.post(alarm(1, true), &[]).await;
    sink.wait_for(1, WAIT).await;
    relay
}

fn alarm(id: i64, armed: bool) -> String {
    payload("alarm_vibration.json")
        .replace("1937310", &id.to_string())
        .replace("\"armed\": true", &format!("\"armed\": {armed}"))
}

fn paths(sink: &Sink, path: &str) -> usize {
    sink.requests().iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn a_restart_keeps_the_timer_and_resolve_on_closes_the_incident() {
    let _turn = TURN.lock().await;
    restart_and_resolve(None).await;
}

/// The same on PostgreSQL (skipped without a test server; `scripts/test` starts one).
#[tokio::test]
async fn on_postgres_a_restart_keeps_the_timer_and_resolve_on_closes_the_incident() {
    let _turn = TURN.lock().await;
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let db = support::pg::fresh_database(&admin, "incidents").await;
    restart_and_resolve(Some(&db)).await;
}

async fn restart_and_resolve(pg: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    assert!(payload("alarm_vibration.json").contains("\"armed\": true"));
    let config = || hook_incident_config_on(dir.path(), &sink, pg);
    let relay = Relay::start(config()).await;
    relay.post(alarm(1, true), &[]).await;
    let first = sink.wait_for(1, WAIT).await[0].body_text();
    let token = ack_link(&first).rsplit('/').next().unwrap().to_string();
    relay.stop().await;

    // Down for 12 minutes: on start, the escalation due goes once and of the two repeats due only the
    // latest: the escalation to the boss, the reminder to the owner (the boss hears it once).
    clock::advance(12 * MIN);
    let relay = Relay::start(config()).await;
    eventually(WAIT, "escalation and one repeat after the restart", || {
        paths(&sink, "/boss") == 1 && paths(&sink, "/owner") == 2
    })
    .await;
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    assert_eq!(list["incidents"][0]["repeats_done"], 2, "{list}");
    assert_eq!(list["incidents"][0]["escalations_done"], 1, "{list}");
    let page = relay.url(&format!("/ack/{token}"));
    assert_eq!(relay.client.get(&page).send().await.unwrap().status(), 200);

    // Disarming resolves it: the circle (owner and boss) is told, and the timer stops.
    let (_, body) = relay.post(alarm(2, false), &[]).await;
    assert_eq!(body["status"], "accepted", "{body}");
    eventually(WAIT, "resolution notices", || {
        paths(&sink, "/boss") == 2 && paths(&sink, "/owner") == 3
    })
    .await;
    let last = sink.requests().last().unwrap().body_text();
    assert!(
        last.contains("resolved by the event its rule names"),
        "{last}"
    );
    advance(&relay, 60 * MIN).await;
    sink.assert_stays_at(5, Duration::from_millis(500)).await;
    let (_, all) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    assert_eq!(all["incidents"][0]["status"], "resolved", "{all}");
    // Its links died with it: a 404 page, and pressing changes nothing.
    assert_eq!(relay.client.get(&page).send().await.unwrap().status(), 404);
    assert_eq!(relay.client.post(&page).send().await.unwrap().status(), 404);
    // A push service's action or callback is told it is closed (200), so it does not call again.
    for form in [
        "via=ntfy",
        "receipt=r1&acknowledged=1&acknowledged_by_device=pixel",
    ] {
        let resp = relay
            .client
            .post(&page)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{form}");
        assert!(resp.text().await.unwrap().contains("closed"), "{form}");
        // A link the relay never made stays a 404, service or not (a wrong public_url shows).
        let unknown = format!("{}{}", &page[..page.len() - 32], "f".repeat(32));
        let resp = relay
            .client
            .post(&unknown)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{form}");
    }
    let (_, again) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    assert_eq!(
        again["incidents"][0]["detail"],
        all["incidents"][0]["detail"]
    );

    // The next alarm opens a new incident.
    relay.post(alarm(3, true), &[]).await;
    sink.wait_for(6, WAIT).await;
    let (_, live) = relay.admin_get("/api/incidents", ADMIN).await;
    assert_eq!(live["incidents"].as_array().unwrap().len(), 1);
    assert_ne!(live["incidents"][0]["id"], all["incidents"][0]["id"]);
    relay.stop().await;
}

#[tokio::test]
async fn api_and_cli_acknowledge_resolve_after_closes_and_bad_input_changes_nothing() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = opened(dir.path(), &sink).await;
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let id = list["incidents"][0]["id"].as_i64().unwrap();

    // Bad input: an unknown id, a body that is no JSON, no token.
    assert_eq!(
        relay.admin_post("/api/incidents/999/ack", ADMIN).await.0,
        404
    );
    let (status, _) = relay
        .admin_send(
            reqwest::Method::POST,
            &format!("/api/incidents/{id}/ack"),
            "wrong",
            None,
        )
        .await;
    assert_eq!(status, 401);
    let bad = relay
        .client
        .post(relay.url(&format!("/api/incidents/{id}/ack")))
        .bearer_auth(ADMIN)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (_, still) = relay
        .admin_get(&format!("/api/incidents/{id}"), ADMIN)
        .await;
    assert_eq!(still["status"], "open", "{still}");

    // The API acknowledges; a second call says it was already.
    let (status, body) = relay
        .admin_send(
            reqwest::Method::POST,
            &format!("/api/incidents/{id}/ack"),
            ADMIN,
            Some(serde_json::json!({ "by": "ops desk" })),
        )
        .await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (_, body) = relay
        .admin_post(&format!("/api/incidents/{id}/ack"), ADMIN)
        .await;
    assert_eq!(body["changed"], false, "{body}");
    eventually(WAIT, "the acknowledgement notice", || {
        paths(&sink, "/owner") == 2
    })
    .await;
    advance(&relay, 11 * MIN).await;
    sink.assert_stays_at(2, Duration::from_millis(500)).await;

    // resolve_after: two hours after its last event it closes by itself, telling nobody.
    advance(&relay, 2 * 60 * MIN).await;
    let (_, body) = relay
        .admin_get(&format!("/api/incidents/{id}"), ADMIN)
        .await;
    assert_eq!(body["status"], "resolved", "{body}");
    assert_eq!(
        relay
            .admin_post(&format!("/api/incidents/{id}/ack"), ADMIN)
            .await
            .0,
        409
    );

    // The CLI: a new incident, acknowledged from the command line on the same data directory.
    relay.post(alarm(2, true), &[]).await;
    sink.wait_for(3, WAIT).await;
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let id2 = list["incidents"][0]["id"].as_i64().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trackrelay"))
            .args(args)
            .args(["--data-dir", &dir.path().display().to_string()])
            .output()
            .unwrap()
    };
    let out = cli(&["incidents"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("#{id2} open")), "{text}");
    let out = cli(&["incidents", "ack", &id2.to_string(), "--by", "night shift"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("acknowledged by night shift via command line"));
    let out = cli(&["incidents", "ack", "4711"]);
    assert_eq!(out.status.code(), Some(1));
    relay.running.as_ref().unwrap().incidents.wake.notify_one();
    eventually(WAIT, "the CLI's acknowledgement notice", || {
        paths(&sink, "/owner") == 4
    })
    .await;
    advance(&relay, 6 * MIN).await;
    sink.assert_stays_at(4, Duration::from_millis(500)).await;
    relay.stop().await;
}

/// An acknowledgement and the timer's repeat racing: whichever commits first, the other's write is
/// refused (compare-and-set), so the incident stays acknowledged and nothing more is sent after it.
#[tokio::test]
async fn an_acknowledgement_racing_a_repeat_is_never_undone() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(hook_incident_config(dir.path(), &sink)).await;
    let r = relay.running.as_ref().unwrap();
    let rules = &r.pipeline.shared.get().config.rules;
    for round in 0..20i64 {
        relay.post(alarm(100 + round, true), &[]).await;
        let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
        let id = list["incidents"][0]["id"].as_i64().unwrap();
        // The first repeat falls due; the acknowledgement and the timer run at the same moment.
        clock::advance(5 * MIN + 1000);
        let now = clock::now_ms();
        let which = trackrelay::incident_service::Which::Id(id);
        let (ack, timer) = tokio::join!(
            trackrelay::incident_service::acknowledge(
                r.store.as_ref(),
                rules,
                &which,
                "racer",
                trackrelay::incident::AckSource::Api,
                false,
                now,
            ),
            r.incidents.run_due(now),
        );
        assert!(ack.unwrap().changed, "round {round}");
        timer.unwrap();
        // Whatever the timer did, the incident is acknowledged and its pending steps are cancelled.
        r.incidents.run_due(clock::now_ms()).await.unwrap();
        let (_, one) = relay
            .admin_get(&format!("/api/incidents/{id}"), ADMIN)
            .await;
        assert_eq!(one["status"], "acknowledged", "round {round}: {one}");
        let db = rusqlite::Connection::open(dir.path().join(trackrelay::store::sqlite::DB_FILE))
            .unwrap();
        // The acknowledgement's notice (it says so) may still be on its way; no step may. (The store
        // keeps contents packed: they are read back as text here.)
        let pending = db
            .prepare(
                "SELECT content FROM deliveries WHERE incident_ref = ?1 AND status = 'pending'",
            )
            .unwrap()
            .query_map([id], |r| {
                Ok(trackrelay::store::sqlite::pack::unpack(r.get_ref(0)?)?)
            })
            .unwrap()
            .map(Result::unwrap)
            .filter(|c| !c.contains("No more reminders"))
            .count();
        assert_eq!(
            pending, 0,
            "round {round}: a step waits to go out after the acknowledgement"
        );
        // Close it by hand for the next round.
        let (status, _) = relay
            .admin_post(&format!("/api/incidents/{id}/resolve"), ADMIN)
            .await;
        assert_eq!(status, 200);
    }
    relay.stop().await;
}

/// A reminder waiting for a retry (the owner's service is down) when someone acknowledges: it is
/// cancelled, with who acknowledged as the reason, and never sent once the service is back.
#[tokio::test]
async fn an_acknowledgement_cancels_the_reminder_waiting_for_a_retry() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = opened(dir.path(), &sink).await;
    sink.set_mode(support::sink::Mode::StatusRetryAfter(503, 600));
    advance(&relay, 5 * MIN + 1000).await;
    // Pending once made, and again once its attempt failed: wait for the failure.
    let mut waiting = Vec::new();
    for _ in 0..400 {
        waiting = relay.wait_deliveries("pending", 1, ADMIN).await;
        if waiting[0]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waiting[0]["last_error"].as_str().is_some(), "{waiting:?}");
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let id = list["incidents"][0]["id"].as_i64().unwrap();
    // The service is back (the reminder still waits for its retry, ten minutes on).
    sink.set_mode(support::sink::Mode::Ok);
    let (status, _) = relay
        .admin_post(&format!("/api/incidents/{id}/ack"), ADMIN)
        .await;
    assert_eq!(status, 200);
    let suppressed = relay.wait_deliveries("suppressed", 1, ADMIN).await;
    assert_eq!(suppressed[0]["id"], waiting[0]["id"]);
    assert_eq!(suppressed[0]["reason"], "acknowledged by admin via API");
    // The notice to the owner goes out; the cancelled reminder does not, also once its retry is due.
    eventually(WAIT, "the notice", || sink.successful().len() == 2).await;
    advance(&relay, 15 * MIN).await;
    sink.assert_stays_at(3, Duration::from_millis(500)).await;
    let last = sink.successful().last().unwrap().body_text();
    assert!(last.contains("acknowledged by admin via API"), "{last}");
    relay.stop().await;
}

/// A reload that takes a rule's `incident:` away closes its open incidents at once, telling the people
/// notified; one that only changes the repeat applies the new one to the open incident.
#[tokio::test]
async fn a_reload_applies_changed_policies_and_closes_incidents_of_removed_ones() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = opened(dir.path(), &sink).await;
    let path = dir.path().join("trackrelay.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();

    // repeat 5m -> 2m: the first reminder comes at 2 minutes, not 5.
    std::fs::write(&path, yaml.replace("repeat: 5m", "repeat: 2m")).unwrap();
    assert_eq!(relay.admin_post("/-/reload", ADMIN).await.0, 200);
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let id = list["incidents"][0]["id"].as_i64().unwrap();
    // The timer takes the new configuration within its poll (2 s) and reschedules the incident.
    let mut next = String::new();
    for _ in 0..300 {
        let (_, one) = relay
            .admin_get(&format!("/api/incidents/{id}"), ADMIN)
            .await;
        next = one["schedule"][0].to_string();
        if one["updated_at"] != list["incidents"][0]["updated_at"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    advance(&relay, 2 * MIN + 1000).await;
    eventually(WAIT, "a reminder at 2 minutes", || {
        paths(&sink, "/owner") == 2
    })
    .await;

    // The incident section removed: closed, and the owner told.
    let without = yaml.split("    incident:").next().unwrap().to_string()
        + "    notify: [{ channel: hook }]\n";
    std::fs::write(&path, without).unwrap();
    let (status, body) = relay.admin_post("/-/reload", ADMIN).await;
    assert_eq!(status, 200, "{body}");
    eventually(WAIT, "the closing notice", || paths(&sink, "/owner") == 3).await;
    let last = sink.requests().last().unwrap().body_text();
    assert!(
        last.contains("because its rule no longer has an incident"),
        "{last} ({next})"
    );
    let (_, one) = relay
        .admin_get(&format!("/api/incidents/{id}"), ADMIN)
        .await;
    assert_eq!(one["status"], "resolved", "{one}");
    relay.stop().await;
}

/// A reminder due while its device is silenced is recorded as suppressed, not sent, and the incident
/// goes on after the silence.
#[tokio::test]
async fn a_silence_mutes_reminders_and_the_incident_goes_on() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = opened(dir.path(), &sink).await;
    let (status, body) = relay
        .admin_send(
            reqwest::Method::POST,
            "/api/silences",
            ADMIN,
            Some(serde_json::json!({ "matchers": { "device": "12" }, "duration": "7m", "author": "lena", "comment": "moving it" })),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    relay
        .running
        .as_ref()
        .unwrap()
        .pipeline
        .silences
        .refresh(relay.running.as_ref().unwrap().store.as_ref())
        .await
        .unwrap();
    advance(&relay, 5 * MIN + 1000).await;
    let quiet = relay.wait_deliveries("suppressed", 1, ADMIN).await;
    assert!(
        quiet[0]["reason"].as_str().unwrap().contains("silence"),
        "{quiet:?}"
    );
    sink.assert_stays_at(1, Duration::from_millis(300)).await;
    // An alarm while silenced opens nothing new, but joins the live incident (its count and position).
    relay.post(alarm(2, true), &[]).await;
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["incidents"][0]["events"], 2, "{list}");
    // After the silence: the next reminder goes out.
    advance(&relay, 5 * MIN).await;
    eventually(WAIT, "the reminder after the silence", || {
        paths(&sink, "/owner") == 2
    })
    .await;
    relay.stop().await;
}

/// An alarm joining between an acknowledgement and the timer's notice does not swallow the notice.
#[tokio::test]
async fn an_alarm_joining_before_the_notice_goes_out_keeps_it() {
    let _turn = TURN.lock().await;
    join_keeps_the_notice(None).await;
}

/// The same on PostgreSQL.
#[tokio::test]
async fn on_postgres_an_alarm_joining_before_the_notice_goes_out_keeps_it() {
    let _turn = TURN.lock().await;
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let db = support::pg::fresh_database(&admin, "incident_notice").await;
    join_keeps_the_notice(Some(&db)).await;
}

async fn join_keeps_the_notice(pg: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = opened_on(dir.path(), &sink, pg).await;
    let r = relay.running.as_ref().unwrap();
    let (_, list) = relay.admin_get("/api/incidents", ADMIN).await;
    let id = list["incidents"][0]["id"].as_i64().unwrap();
    // Acknowledged from the CLI's side (no wake-up for the timer), and at once another alarm joins.
    let rules = &r.pipeline.shared.get().config.rules;
    let which = trackrelay::incident_service::Which::Id(id);
    let source = trackrelay::incident::AckSource::Cli;
    let now = clock::now_ms();
    trackrelay::incident_service::acknowledge(
        r.store.as_ref(),
        rules,
        &which,
        "lena",
        source,
        false,
        now,
    )
    .await
    .unwrap();
    let (_, body) = relay.post(alarm(2, true), &[]).await;
    assert_eq!(body["status"], "accepted", "{body}");
    let (_, one) = relay
        .admin_get(&format!("/api/incidents/{id}"), ADMIN)
        .await;
    assert_eq!(
        (one["status"].as_str(), one["events"].as_u64()),
        (Some("acknowledged"), Some(2)),
        "{one}"
    );
    eventually(WAIT, "the acknowledgement notice", || {
        paths(&sink, "/owner") == 2
    })
    .await;
    let last = sink.requests().last().unwrap().body_text();
    assert!(
        last.contains("acknowledged by lena via command line"),
        "{last}"
    );
    relay.stop().await;
}

/// Two rules sharing a key share the incident, and the rule that opened it schedules it: an alarm of a
/// rule with a short `resolve_after` joins the incident another rule opened minutes before; it does not
/// find it run out by its own policy.
#[tokio::test]
async fn a_shared_key_is_judged_by_the_opening_rules_policy() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let yaml = format!(
        "storage: {{ data_dir: \"{d}\" }}\nadmin: {{ token: {ADMIN} }}\n\
         channels: {{ hook: {{ type: webhook, url: \"{url}\" }} }}\n\
         rules:\n\
         \x20 - {{ name: theft, match: {{ type: alarm, alarm: vibration }}, incident: {{ key: \"bike-{{{{ device.id }}}}\", repeat: 5m, resolve_after: 2h }}, notify: [{{ channel: hook }}] }}\n\
         \x20 - {{ name: tow, match: {{ type: alarm, alarm: tow }}, incident: {{ key: \"bike-{{{{ device.id }}}}\", resolve_after: 2m }}, notify: [{{ channel: hook }}] }}\n",
        d = dir.path().display(),
        url = sink.url("/owner"),
    );
    let relay = Relay::start(config_in(dir.path(), &yaml)).await;
    relay.post(alarm(1, true), &[]).await;
    sink.wait_for(1, WAIT).await;
    advance(&relay, 3 * MIN).await;
    let tow = alarm(2, true).replace("\"alarm\": \"vibration\"", "\"alarm\": \"tow\"");
    assert!(tow.contains("\"tow\""));
    relay.post(tow, &[]).await;
    let (_, list) = relay.admin_get("/api/incidents?all=true", ADMIN).await;
    let all = list["incidents"].as_array().unwrap();
    assert_eq!(
        all.len(),
        1,
        "the tow alarm joined, it did not close and reopen: {list}"
    );
    assert_eq!(
        (all[0]["rule"].as_str(), all[0]["events"].as_u64()),
        (Some("theft"), Some(2))
    );
    sink.assert_stays_at(1, Duration::from_millis(300)).await;
    relay.stop().await;
}

/// The alarm `id` of device 12 at (`lat`, `lon`), fixed `secs` after the first one's fix.
fn moved_alarm(id: i64, lat: f64, lon: f64, secs: u32) -> String {
    let at = format!(
        "2026-05-15T00:{:02}:{:02}.000+00:00",
        41 + secs / 60,
        5 + secs % 60
    );
    payload("alarm_vibration.json")
        .replace("1937310", &id.to_string())
        .replace("47.262195", &lat.to_string())
        .replace("11.413561", &lon.to_string())
        .replace("2026-05-15T00:41:05.000+00:00", &at)
}

/// The callback data of the button labelled `label` on a message's keyboard.
fn button(markup: &serde_json::Value, label: &str) -> Option<String> {
    markup["inline_keyboard"]
        .as_array()?
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .find(|b| b["text"].as_str().is_some_and(|t| t.contains(label)))
        .and_then(|b| b["callback_data"].as_str().map(str::to_string))
}

#[tokio::test]
async fn the_shipped_theft_alarm_arrives_with_buttons_and_a_live_pin_that_follows_until_acknowledged(
) {
    use support::telegram::TgUser;
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let telegram = TelegramStandIn::start(TOKEN, &["4242"]).await;
    let smtp = SmtpServer::start();
    let sink = Sink::start().await;
    let mut vars = example_vars(
        dir.path(),
        TOKEN,
        telegram.base_url(),
        smtp.port(),
        sink.url("/ops"),
    );
    vars.insert("TRACKRELAY_ADMIN_TOKEN", ADMIN.to_string());
    let relay = start_on(example_config(&vars), free_port()).await;
    let auth = [("authorization", "Bearer s3cret")];

    // The alarm: a message with three buttons, and a live pin.
    relay.post(payload("alarm_vibration.json"), &auth).await;
    let sent = telegram.wait_for_messages(2, WAIT).await;
    let (msg, pin) = (&sent[0], &sent[1]);
    let markup = msg.reply_markup.clone().expect("the alarm has buttons");
    let ack = button(&markup, "Acknowledge").expect("an Acknowledge button");
    assert!(button(&markup, "Mute").is_some() && button(&markup, "Where").is_some());
    assert!(ack.len() <= 64, "{ack}");
    assert_eq!(pin.method.to_ascii_lowercase(), "sendlocation");
    let period: i64 = pin.params["live_period"].parse().unwrap();
    assert_eq!(
        period, 7200,
        "live for as long as the incident may stay open (2h)"
    );

    // The bike moves: five positions (alarms that join the incident), each at least 10 s apart.
    let route = [
        (47.2630, 11.4140),
        (47.2640, 11.4150),
        (47.2650, 11.4160),
        (47.2660, 11.4170),
        (47.2670, 11.4180),
    ];
    for (i, (lat, lon)) in route.iter().enumerate() {
        let n = i as u32 + 1;
        relay
            .post(moved_alarm(2000 + i64::from(n), *lat, *lon, n * 15), &auth)
            .await;
        clock::advance(11_000);
        eventually(WAIT, "the pin moves", || {
            telegram.live_moves(pin.message_id).len() > i
        })
        .await;
    }
    assert_eq!(telegram.live_moves(pin.message_id), route.to_vec());
    assert_eq!(telegram.messages().len(), 2, "joining alarms notify nobody");

    // The owner presses Acknowledge.
    let lena = TgUser::new(4242, "Lena", Some("lena"));
    telegram.press_button(msg.message_id, &lena, &ack);
    let answers = telegram.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(
        answers[0].text.as_deref(),
        Some("✅ Acknowledged incident 1."),
        "{answers:?}"
    );
    let (_, one) = relay.admin_get("/api/incidents/1", ADMIN).await;
    assert_eq!(one["status"], "acknowledged", "{one}");
    assert_eq!(one["detail"]["by"], "Lena", "{one}");
    assert_eq!(one["detail"]["via"], "telegram", "{one}");
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("trackrelay_incident_ack_seconds_count 1"),
        "{metrics}"
    );

    // The message says who, and keeps only the buttons that still apply.
    eventually(WAIT, "the message is edited", || {
        telegram.message_state(msg.message_id).is_some_and(|m| {
            m.text
                .unwrap_or_default()
                .contains("acknowledged by Lena at")
        })
    })
    .await;
    let now = telegram.message_state(msg.message_id).unwrap();
    let keys = now.reply_markup.clone().unwrap_or_default();
    assert!(button(&keys, "Acknowledge").is_none(), "{keys}");
    assert!(button(&keys, "Where").is_some(), "{keys}");
    // The family, notified too, is told who acknowledged.
    let mails = smtp.wait_for(2, WAIT).await;
    assert!(
        mails[1]
            .text
            .as_deref()
            .unwrap_or("")
            .contains("acknowledged by Lena"),
        "{:?}",
        mails[1].text
    );

    // No more reminders; the pin follows for the grace period, then stops.
    advance(&relay, 9 * MIN).await;
    let live = telegram
        .message_state(pin.message_id)
        .unwrap()
        .live
        .unwrap();
    assert!(!live.stopped, "still following within the grace period");
    advance(&relay, 2 * MIN).await;
    eventually(WAIT, "the pin stops", || {
        telegram
            .message_state(pin.message_id)
            .and_then(|m| m.live)
            .is_some_and(|l| l.stopped)
    })
    .await;
    let msgs = telegram.messages();
    assert!(
        msgs.iter().all(|m| !m
            .plain_text
            .as_deref()
            .unwrap_or("")
            .starts_with("Reminder")),
        "acknowledged: no reminders"
    );
    relay.stop().await;
}

#[tokio::test]
async fn in_webhook_mode_telegram_posts_the_press_and_only_with_the_secret() {
    use support::telegram::{TgUser, SECRET_HEADER};
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let telegram = TelegramStandIn::start(TOKEN, &["4242"]).await;
    let port = free_port();
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\npublic_url: http://127.0.0.1:{port}\nadmin: {{ token: {ADMIN} }}\n\
         channels:\n  tg: {{ type: telegram, bot_token: \"{TOKEN}\", chat_id: 4242, api_url: \"{}\",\n\
         \x20       two_way: {{ updates: webhook }} }}\n\
         rules:\n  - name: theft\n    match: {{ type: alarm }}\n    incident: {{ repeat: 5m }}\n\
         \x20   notify: [{{ channel: tg }}]\n",
        dir.path().display(),
        telegram.base_url(),
    );
    let relay = start_on(config_in(dir.path(), &yaml), port).await;

    // The lease holder registers the relay's address, with a secret.
    eventually(WAIT, "the webhook is set", || telegram.webhook().is_some()).await;
    let (url, secret) = telegram.webhook().unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{port}/telegram/123456"));
    let secret = secret.expect("a secret token");
    assert!(
        !secret.contains("TEST-token") && secret.len() >= 32,
        "{secret}"
    );

    relay.post(alarm(1, true), &[]).await;
    let sent = telegram.wait_for_messages(1, WAIT).await;
    let ack = button(sent[0].reply_markup.as_ref().unwrap(), "Acknowledge").unwrap();

    // Forged posts: without the secret, with a wrong one, to a bot that is not one: refused, no effect.
    let press = serde_json::json!({"update_id": 77, "callback_query": {
        "id": "forged", "from": {"id": 1, "is_bot": false, "first_name": "Mallory"},
        "chat_instance": "1", "data": ack,
        "message": {"message_id": sent[0].message_id, "date": 0,
                    "chat": {"id": 4242, "type": "private", "first_name": "Lena"}}}});
    let post = |path: &str, secret: Option<&str>, body: String| {
        let mut req = relay
            .client
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = secret {
            req = req.header(SECRET_HEADER, s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post("/telegram/123456", None, press.to_string()).await, 401);
    assert_eq!(
        post("/telegram/123456", Some("0123abcd"), press.to_string()).await,
        401
    );
    assert_eq!(
        post("/telegram/999", Some(&secret), press.to_string()).await,
        404
    );
    assert_eq!(
        post("/telegram/123456", Some(&secret), "{\"update_id\":".into()).await,
        400
    );
    let (_, one) = relay.admin_get("/api/incidents/1", ADMIN).await;
    assert_eq!(one["status"], "open", "{one}");

    // An update posted twice (Telegram got no 2xx the first time) is acted on once.
    let help = serde_json::json!({"update_id": 500, "message": {"message_id": 900, "date": 0,
        "from": {"id": 4242, "is_bot": false, "first_name": "Lena"},
        "chat": {"id": 4242, "type": "private", "first_name": "Lena"}, "text": "/help"}});
    for _ in 0..2 {
        assert_eq!(
            post("/telegram/123456", Some(&secret), help.to_string()).await,
            200
        );
    }
    let helps = || {
        telegram
            .messages()
            .iter()
            .filter(|m| m.text.as_deref().unwrap_or("").contains("/status"))
            .count()
    };
    eventually(WAIT, "the help is sent", || helps() == 1).await;
    telegram
        .assert_stays_at(2, Duration::from_millis(300))
        .await;
    assert_eq!(helps(), 1);

    // The owner's press comes through Telegram's post: acknowledged, answered, the message edited.
    let lena = TgUser::new(4242, "Lena", None);
    telegram.press_button(sent[0].message_id, &lena, &ack);
    let answers = telegram.wait_for_callback_answers(1, WAIT).await;
    assert_eq!(
        answers[0].text.as_deref(),
        Some("✅ Acknowledged incident 1.")
    );
    let posts = telegram.wait_for_webhook_posts(1, WAIT).await;
    assert_eq!(posts.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [200]);
    let (_, one) = relay.admin_get("/api/incidents/1", ADMIN).await;
    assert_eq!(one["status"], "acknowledged", "{one}");
    eventually(WAIT, "the message is edited", || {
        telegram
            .message_state(sent[0].message_id)
            .is_some_and(|m| m.text.unwrap_or_default().contains("acknowledged by Lena"))
    })
    .await;
    relay.stop().await;
}
