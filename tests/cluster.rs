//! Several instances on one PostgreSQL database, as real processes: two relays started together (they
//! migrate the empty database at once), a load generator spraying events at both (some events at both
//! at the same moment), `kill -9` of one mid-run, PostgreSQL restarted mid-run, and an outage during
//! which intake answers 503 with `Retry-After` and `/readyz` says not ready. At the webhook sink: every
//! acknowledged matching event arrived, none that does not match, one idempotency key per event.
//!
//! And a two-way Telegram bot served by two relays (issue 18): the one that polls it is killed with
//! button presses in flight, the other takes over within the polling lease, and no press is lost or
//! acted on twice.
//!
//! Needs the test PostgreSQL (`TRACKRELAY_TEST_PG_URL`, started by `scripts/test`) and restarts it
//! through `scripts/pg`; without it the tests say they were skipped.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::sink::{Mode, Sink};
use support::smtp::free_port;
use support::telegram::TelegramStandIn;

/// Events posted (ids 1..=N); every fifth is not an alarm, and no rule matches it.
const N: i64 = 1500;
/// Sends in flight per instance. The killed instance can have sent about this many (plus those whose
/// outcome it was recording) without recording it: they are sent again after its lease, same key.
const WORKERS: usize = 8;
const PASSWORD_IN_URL: &str = "trackrelay-test-pw";

fn payload(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/payloads")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pg_script(action: &str) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg"))
        .arg(action)
        .output()
        .expect("scripts/pg runs");
    assert!(
        out.status.success(),
        "scripts/pg {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Instance {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    fn new(dir: &Path, name: &str, db: &str, sink: &str, online: &str) -> Instance {
        Instance::with_config(dir, name, |port| {
            format!(
                r#"
listen: "127.0.0.1:{port}"
storage: {{ url: "{db}", pool: 8, statement_timeout: 5s, connect_timeout: 5s, lease: 10s }}
delivery:
  workers: {WORKERS}
  retry: {{ initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 100 }}
channels:
  hook: {{ type: webhook, url: "{sink}" }}
  online: {{ type: webhook, url: "{online}" }}
rules:
  - name: alarms
    match: {{ type: alarm }}
    notify: [{{ channel: hook }}]
  - name: online-once
    match: {{ type: deviceOnline }}
    cooldown: 1h
    notify: [{{ channel: online }}]
"#
            )
        })
    }

    /// An instance on a free port whose configuration `yaml` writes for that port.
    fn with_config(dir: &Path, name: &str, yaml: impl FnOnce(u16) -> String) -> Instance {
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml(port)).unwrap();
        Instance {
            port,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_trackrelay"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("relay binary starts"),
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A relay left running by a failed assertion is killed, not left behind.
impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_ready(client: &reqwest::Client, i: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(i.url("/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "instance on {} did not become ready: {}",
            i.port,
            i.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the load generator saw.
#[derive(Default)]
struct Seen {
    acked: HashSet<i64>,
    unavailable_with_retry_after: usize,
    unavailable_without_retry_after: usize,
}

/// Where a test keeps its configs and the relays' logs: `TRACKRELAY_TEST_LOG_DIR` when set (for a
/// look after the run), else its temporary directory.
fn log_dir(tmp: &tempfile::TempDir) -> PathBuf {
    match std::env::var_os("TRACKRELAY_TEST_LOG_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            PathBuf::from(d)
        }
        None => tmp.path().to_path_buf(),
    }
}

/// The tests of this file take turns: the first restarts the PostgreSQL server mid-run, which would
/// fail the other's store calls.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_database_kill_and_restart_lose_and_repeat_nothing() {
    let _turn = TURN.lock().await;
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let db = support::pg::fresh_database(&admin, "cluster").await;
    let tmp = tempfile::tempdir().unwrap();
    // TRACKRELAY_TEST_LOG_DIR keeps the configs and the relays' logs for a look after the run.
    let dir = log_dir(&tmp);
    let sink = Sink::start().await;
    // A flaky receiver: some requests fail with 500 and are retried.
    sink.set_mode(Mode::FailRandom {
        percent: 10,
        seed: 3,
    });
    // One device's deviceOnline events, at both instances, under a one-hour cooldown: one message.
    let online = Sink::start().await;
    let mut a = Instance::new(&dir, "a", &db, &sink.url("/alarm"), &online.url("/online"));
    let mut b = Instance::new(&dir, "b", &db, &sink.url("/alarm"), &online.url("/online"));
    // Both at once, on an empty database: the migrations run once, under the advisory lock.
    a.spawn();
    b.spawn();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_ready(&client, &a).await;
    wait_ready(&client, &b).await;

    let alarm = payload("alarm_vibration.json");
    let other = payload("deviceOnline.json");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let next = Arc::new(AtomicI64::new(1));
    let posted = Arc::new(AtomicUsize::new(0));
    let urls = [a.url("/events"), b.url("/events")];
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, seen, next, posted, urls) = (
            client.clone(),
            seen.clone(),
            next.clone(),
            posted.clone(),
            urls.clone(),
        );
        let (alarm, other) = (alarm.clone(), other.clone());
        posters.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id > N {
                    break;
                }
                let mut body = if id % 5 == 0 {
                    other.clone()
                } else {
                    alarm.clone()
                };
                body["event"]["id"] = id.into();
                // Every seventh event reaches both instances at the same moment (a retrying sender
                // behind a load balancer); the others alternate.
                let targets: Vec<&String> = if id % 7 == 0 {
                    urls.iter().collect()
                } else {
                    vec![&urls[id as usize % 2]]
                };
                let answers = futures_util::future::join_all(
                    targets.iter().map(|u| client.post(*u).json(&body).send()),
                )
                .await;
                posted.fetch_add(1, Ordering::Relaxed);
                let mut s = seen.lock().unwrap();
                for r in answers.into_iter().flatten() {
                    if r.status().is_success() {
                        s.acked.insert(id);
                    } else if r.status() == 503 {
                        if r.headers().contains_key("retry-after") {
                            s.unavailable_with_retry_after += 1;
                        } else {
                            s.unavailable_without_retry_after += 1;
                        }
                    }
                }
            }
        });
    }

    // kill -9 of one instance a third of the way in; PostgreSQL restarted two thirds of the way in;
    // the killed instance comes back after that.
    let wait_posted = |n: usize| {
        let posted = posted.clone();
        async move {
            while posted.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_posted(N as usize / 3).await;
    a.kill();
    let killed = Instant::now();
    let killed_at = seen.lock().unwrap().acked.len();
    wait_posted(2 * N as usize / 3).await;
    let restarted = Instant::now();
    tokio::task::spawn_blocking(|| pg_script("restart"))
        .await
        .unwrap();
    let restart_took = restarted.elapsed();
    a.spawn();
    while posters.join_next().await.is_some() {}
    wait_ready(&client, &a).await;

    // An outage long enough to look at: intake refuses with Retry-After, readiness says not ready, and
    // both come back by themselves when the database does.
    tokio::task::spawn_blocking(|| pg_script("down"))
        .await
        .unwrap();
    let mut body = alarm.clone();
    body["event"]["id"] = (N + 1).into();
    let r = client
        .post(b.url("/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let retry_after = r.headers().get("retry-after").cloned();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    assert!(retry_after.is_some(), "503 without Retry-After");
    let r = client.get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert!(
        !ready.to_string().contains(PASSWORD_IN_URL),
        "the password leaked: {ready}"
    );
    tokio::task::spawn_blocking(|| pg_script("up"))
        .await
        .unwrap();
    wait_ready(&client, &b).await;
    let r = client
        .post(b.url("/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "intake did not recover after the outage");
    seen.lock().unwrap().acked.insert(N + 1);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let delivered = || -> HashMap<i64, usize> {
        let mut m = HashMap::new();
        for r in sink.successful() {
            if let Some(id) = r
                .header("x-trackrelay-event-id")
                .and_then(|v| v.parse().ok())
            {
                *m.entry(id).or_insert(0) += 1;
            }
        }
        m
    };
    let matching: HashSet<i64> = seen
        .acked
        .iter()
        .copied()
        .filter(|id| id % 5 != 0)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = delivered();
        let missing = matching.iter().filter(|id| !got.contains_key(id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never arrived; logs:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unacknowledged events committed just before a failure may still be arriving: one snapshot.
    let successes = sink.successful();
    let mut keys_of: HashMap<i64, HashSet<String>> = HashMap::new();
    for r in &successes {
        let id: i64 = r.header("x-trackrelay-event-id").unwrap().parse().unwrap();
        let key = r.header("idempotency-key").unwrap().to_string();
        keys_of.entry(id).or_default().insert(key);
    }
    // Nothing that does not match, nothing invented.
    assert!(keys_of
        .keys()
        .all(|id| id % 5 != 0 && (1..=N + 1).contains(id)));
    // One notification per event, also for events that reached both instances at once: one key each.
    let split: Vec<_> = keys_of.iter().filter(|(_, k)| k.len() > 1).collect();
    assert!(
        split.is_empty(),
        "events with several notifications: {split:?}"
    );
    // A key may arrive twice only if the killed instance had sent it and died before recording that:
    // the first arrival is before the kill. Every other key arrives once, across the restart of the
    // database too (outcomes are recorded once it is back, before their lease runs out).
    let mut first_success: HashMap<String, Instant> = HashMap::new();
    let mut repeated_keys = Vec::new();
    for r in &successes {
        let key = r.header("idempotency-key").unwrap_or_default().to_string();
        match first_success.get(&key) {
            None => {
                first_success.insert(key, r.received_at);
            }
            Some(first) => repeated_keys.push((key, *first < killed)),
        }
    }
    let repeated = repeated_keys.len();
    let unexplained: Vec<&String> = repeated_keys
        .iter()
        .filter(|(_, before_kill)| !before_kill)
        .map(|(k, _)| k)
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} notifications first sent after the kill arrived twice: {unexplained:?}",
        unexplained.len()
    );
    assert!(
        repeated <= 2 * WORKERS,
        "{repeated} notifications repeated after the kill; more than the killed instance had in hand"
    );
    assert!(
        seen.unavailable_with_retry_after > 0 || restart_took < Duration::from_millis(200),
        "the restart went unnoticed"
    );
    assert_eq!(
        seen.unavailable_without_retry_after, 0,
        "a 503 without Retry-After"
    );
    assert!(
        seen.acked.len() - killed_at > N as usize / 8,
        "load went on after the kill: {} acknowledged, {killed_at} before",
        seen.acked.len()
    );

    // Every delivery ends done (recording the last outcomes may take a moment), one per notification
    // the sink accepted; the outbox is shared, so either instance sees them all.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, counts) = metric_counts(&client, &b).await;
        let open = counts.get("pending").copied().unwrap_or(0)
            + counts.get("inflight").copied().unwrap_or(0);
        let keys = sink.distinct_header_values("idempotency-key") as u64;
        let online_keys = online.distinct_header_values("idempotency-key") as u64;
        if open == 0
            && counts.get("done") == Some(&(keys + online_keys))
            && counts.get("dead").copied().unwrap_or(0) == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "{counts:?}, {keys} delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The cooldown held across both instances, the kill and the database restart.
    let onlines = seen.acked.iter().filter(|id| *id % 5 == 0).count();
    assert!(onlines > 10, "{onlines} deviceOnline events acknowledged");
    assert_eq!(
        online.distinct_header_values("idempotency-key"),
        1,
        "deviceOnline notified more than once within its cooldown"
    );
    // Every acknowledged deviceOnline but the first is suppressed. An unacknowledged one may have
    // been committed just before the kill or the database restart (its answer lost): the stored count
    // lies between the acknowledged and the posted ones.
    let posted_onlines = (1..=N).filter(|id| id % 5 == 0).count();
    let (_, counts) = metric_counts(&client, &b).await;
    let stored_onlines = counts.get("suppressed").copied().unwrap_or(0) as usize + 1;
    assert!(
        (onlines..=posted_onlines).contains(&stored_onlines),
        "{stored_onlines} deviceOnline events stored, {onlines} acknowledged, {posted_onlines} posted"
    );
    a.kill();
    b.kill();
    for i in [&a, &b] {
        let log = i.log_text();
        assert!(!log.contains("panicked"), "{log}");
        assert!(
            !log.contains(PASSWORD_IN_URL),
            "the password leaked into the log"
        );
    }
    eprintln!(
        "cluster: {} acknowledged ({} before the kill), {} delivered, {} repeated, {} refused with 503 + Retry-After, PostgreSQL restart took {restart_took:?}",
        seen.acked.len(),
        killed_at,
        keys_of.len(),
        repeated,
        seen.unavailable_with_retry_after
    );
}

/// The outbox counts from `/metrics` (`trackrelay_outbox_deliveries{status="..."}`).
async fn metric_counts(client: &reqwest::Client, i: &Instance) -> (String, HashMap<String, u64>) {
    let text = client
        .get(i.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("trackrelay_outbox_deliveries{status=\"") {
            if let Some((status, n)) = rest.split_once("\"} ") {
                counts.insert(status.to_string(), n.trim().parse().unwrap_or(0));
            }
        }
    }
    (text, counts)
}

// --- Two-way Telegram on two instances (issue 18) -----------------------------------------------

const BOT_TOKEN: &str = "123456:TEST-token";
/// The group chat the incident messages go to: any member may press their buttons.
const GROUP: &str = "-1001234567890";
const ADMIN: &str = "cluster-admin-token";
/// Bikes with an alarm each: one incident, and one message with buttons, per bike.
const BIKES: i64 = 10;
/// The bot's polling lease (short for the test; the long poll waits 1 s).
const BOT_LEASE: Duration = Duration::from_secs(6);
/// What the log of the instance that polls the bot says.
const POLLING: &str = "polling the Telegram bot's updates";

fn bot_config(port: u16, db: &str, api: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:{port}"
admin: {{ token: "{ADMIN}" }}
storage: {{ url: "{db}", pool: 4, statement_timeout: 5s, connect_timeout: 5s, lease: 10s }}
delivery:
  workers: 2
  retry: {{ initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 100 }}
channels:
  phone:
    type: telegram
    bot_token: "{BOT_TOKEN}"
    chat_id: "{GROUP}"
    api_url: "{api}"
    two_way: {{ poll_timeout: 1s, lease: {lease}s }}
rules:
  - name: theft
    match: {{ type: alarm }}
    incident: {{ key: "bike-{{{{ device.id }}}}", repeat: 1h, resolve_after: 2h }}
    notify: [{{ channel: phone }}]
"#,
        lease = BOT_LEASE.as_secs()
    )
}

/// The vibration alarm of bike `n` ("Bike n", device id `n`).
fn bike_alarm(n: i64) -> serde_json::Value {
    let mut body = payload("alarm_vibration.json");
    body["event"]["id"] = (5000 + n).into();
    body["event"]["deviceId"] = n.into();
    body["event"]["positionId"] = (9000 + n).into();
    body["position"]["id"] = (9000 + n).into();
    body["position"]["deviceId"] = n.into();
    body["device"]["id"] = n.into();
    body["device"]["name"] = format!("Bike {n}").into();
    body
}

/// One bike's incident message and who presses its Acknowledge button.
struct Press {
    bike: i64,
    message_id: i64,
    data: String,
    user: support::telegram::TgUser,
}

/// The incident messages (one per bike) with their Acknowledge buttons, in bike order.
fn presses(sent: &[support::telegram::SentMessage]) -> Vec<Press> {
    let mut out: Vec<Press> = sent
        .iter()
        .filter_map(|m| {
            let data = m.reply_markup.as_ref()?["inline_keyboard"]
                .as_array()?
                .iter()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .filter_map(|b| b["callback_data"].as_str().map(str::to_string))
                .find(|d| d.starts_with("a:"))?;
            let text = m.plain_text.as_deref().unwrap_or("");
            // From 10 down: "Bike 10" contains "Bike 1".
            let bike = (1..=BIKES)
                .rev()
                .find(|n| text.contains(&format!("Bike {n}")))?;
            let user = support::telegram::TgUser::new(7000 + bike, &format!("Member{bike}"), None);
            Some(Press {
                bike,
                message_id: m.message_id,
                data,
                user,
            })
        })
        .collect();
    out.sort_by_key(|p| p.bike);
    out
}

/// The instance whose log says it polls the bot; panics unless exactly one does.
async fn poller_of(relays: &[Instance; 2]) -> usize {
    let polls = |i: &Instance| i.log_text().contains(POLLING);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !relays.iter().any(polls) {
        assert!(Instant::now() < deadline, "nobody polls the bot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other one tries the lease every 2 s meanwhile (a third of it).
    tokio::time::sleep(BOT_LEASE / 2).await;
    let polling: Vec<usize> = (0..2).filter(|&i| polls(&relays[i])).collect();
    assert_eq!(
        polling.len(),
        1,
        "exactly one instance polls the bot:\n{}\n{}",
        relays[0].log_text(),
        relays[1].log_text()
    );
    polling[0]
}

/// Waits until every callback query in `ids` has an answer; panics after `timeout`.
async fn wait_answered(telegram: &TelegramStandIn, ids: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answered: HashSet<String> = telegram
            .callback_answers()
            .into_iter()
            .map(|a| a.callback_query_id)
            .collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !answered.contains(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presses {missing:?} unanswered after {timeout:?}; answers {:#?}",
            telegram.callback_answers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_bot_the_poller_killed_the_other_takes_over_no_press_lost_or_doubled() {
    let _turn = TURN.lock().await;
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let db = support::pg::fresh_database(&admin, "cluster_bot").await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let telegram = TelegramStandIn::start(BOT_TOKEN, &[GROUP]).await;
    let api = telegram.base_url();
    let mut relays = [
        Instance::with_config(&dir, "bot-a", |port| bot_config(port, &db, &api)),
        Instance::with_config(&dir, "bot-b", |port| bot_config(port, &db, &api)),
    ];
    relays.iter_mut().for_each(Instance::spawn);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for r in &relays {
        wait_ready(&client, r).await;
    }

    // An alarm per bike, at either instance: an incident each, a message with buttons each.
    for n in 1..=BIKES {
        let r = client
            .post(relays[n as usize % 2].url("/events"))
            .json(&bike_alarm(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    telegram
        .wait_for_messages(BIKES as usize, Duration::from_secs(30))
        .await;
    let presses = presses(&telegram.messages());
    assert_eq!(presses.len(), BIKES as usize, "{:#?}", telegram.messages());
    let poller = poller_of(&relays).await;
    let press = |p: &Press| telegram.press_button(p.message_id, &p.user, &p.data);

    // Three presses handled by the poller. Then four at once, which it fetches in one or two
    // batches: it is killed the moment it has answered the third of them (before or after it
    // recorded that update), the fourth pressed just before (it may be acted on or not). The rest
    // are pressed after the kill.
    let before: Vec<String> = presses[..3].iter().map(press).collect();
    wait_answered(&telegram, &before, Duration::from_secs(10)).await;
    let around: Vec<String> = presses[3..7].iter().map(press).collect();
    telegram
        .wait_for_callback_answers(before.len() + 3, Duration::from_secs(10))
        .await;
    relays[poller].kill();
    let killed = Instant::now();
    let after: Vec<String> = presses[7..].iter().map(press).collect();
    let all: Vec<String> = before
        .iter()
        .chain(&around)
        .chain(&after)
        .cloned()
        .collect();
    wait_answered(&telegram, &all, BOT_LEASE + Duration::from_secs(15)).await;
    let takeover = telegram
        .callback_answers()
        .iter()
        .filter(|a| after.contains(&a.callback_query_id))
        .map(|a| a.received_at.duration_since(killed))
        .min()
        .unwrap();
    // The survivor takes over once the lease runs out: a second try of it (a third of the lease
    // apart), a getMe and a poll later.
    assert!(
        takeover <= BOT_LEASE + Duration::from_secs(4),
        "the other instance took {takeover:?} to take over (lease {BOT_LEASE:?})"
    );
    telegram
        .wait_for_updates_confirmed(Duration::from_secs(10))
        .await;
    // A press handled again would be answered again after the survivor's next polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let survivor = &relays[1 - poller];
    let around = check_presses(&telegram, &presses, &all, &around, killed);
    check_incidents(&client, survivor, &presses).await;
    assert!(
        telegram.pending_updates().is_empty(),
        "unconfirmed updates {:?}",
        telegram.pending_updates()
    );
    let conflicts: Vec<_> = telegram
        .rejection_log()
        .into_iter()
        .filter(|r| r.status == 409)
        .collect();
    assert!(conflicts.is_empty(), "two pollers at once: {conflicts:?}");
    assert!(survivor.log_text().contains(POLLING));
    for r in &mut relays {
        r.kill();
        let log = r.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
    eprintln!(
        "cluster bot: the survivor took over {takeover:?} after the kill (lease {BOT_LEASE:?}); \
         the presses around the kill were answered {around:?}"
    );
}

/// Every press answered exactly once, with the acknowledgement; in words, what the presses around
/// the kill were answered.
///
/// The poller handles updates one at a time and records each before the next: when it dies, at
/// most the one update it was handling is not recorded, and the survivor fetches it again. So one
/// press around the kill, no more, may be answered twice: first by the killed poller (before the
/// kill; a request in flight may reach the stand-in a moment later), then by the survivor, which
/// finds it acknowledged. The survivor's answer alone means the poller died after acknowledging,
/// before answering.
fn check_presses(
    telegram: &TelegramStandIn,
    presses: &[Press],
    ids: &[String],
    around: &[String],
    killed: Instant,
) -> Vec<String> {
    let answers = telegram.callback_answers();
    let mut seen = Vec::new();
    let mut doubled = Vec::new();
    let mut acked_incidents: HashMap<String, usize> = HashMap::new();
    for (p, id) in presses.iter().zip(ids) {
        let of: Vec<_> = answers
            .iter()
            .filter(|a| &a.callback_query_id == id)
            .collect();
        let text = |i: usize| of[i].text.clone().unwrap_or_default();
        let acked = |i: usize| text(i).starts_with("✅ Acknowledged incident");
        let already = format!("Already acknowledged by {}.", p.user.first_name);
        match of.len() {
            1 => assert!(
                acked(0) || (around.contains(id) && text(0) == already),
                "bike {}: {:?}",
                p.bike,
                text(0)
            ),
            2 if around.contains(id) && of[0].received_at < killed + Duration::from_secs(1) => {
                assert!(acked(0) && text(1) == already, "bike {}: {of:#?}", p.bike);
                doubled.push(p.bike);
            }
            n => panic!("bike {}: press answered {n} times: {of:#?}", p.bike),
        }
        if around.contains(id) {
            let texts: Vec<String> = (0..of.len()).map(text).collect();
            seen.push(format!("bike {}: {texts:?}", p.bike));
        }
        *acked_incidents.entry(text(0)).or_default() += 1;
    }
    assert!(
        doubled.len() <= 1,
        "presses of bikes {doubled:?} were handled again after the kill: {seen:#?}"
    );
    let unknown: Vec<_> = answers
        .iter()
        .filter(|a| !ids.contains(&a.callback_query_id))
        .collect();
    assert!(unknown.is_empty(), "answers to no press: {unknown:?}");
    let twice: Vec<_> = acked_incidents
        .iter()
        .filter(|(t, n)| t.starts_with('✅') && **n > 1)
        .collect();
    assert!(twice.is_empty(), "acknowledged twice: {twice:?}");
    seen
}

/// Every bike's incident is acknowledged, in Telegram, by whoever pressed its button (the admin API
/// of the surviving instance).
async fn check_incidents(client: &reqwest::Client, survivor: &Instance, presses: &[Press]) {
    let get = |path: String| client.get(survivor.url(&path)).bearer_auth(ADMIN).send();
    let list: serde_json::Value = get("/api/incidents?all=true".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), presses.len(), "{list}");
    for p in presses {
        let id = incidents
            .iter()
            .find(|i| i["key"] == format!("bike-{}", p.bike))
            .unwrap_or_else(|| panic!("no incident of bike {}: {list}", p.bike))["id"]
            .as_i64()
            .unwrap();
        let one: serde_json::Value = get(format!("/api/incidents/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["status"], "acknowledged", "bike {}: {one}", p.bike);
        assert_eq!(one["detail"]["by"], p.user.first_name.as_str(), "{one}");
        assert_eq!(one["detail"]["via"], "telegram", "{one}");
    }
}
