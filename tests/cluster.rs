//! Several instances on one PostgreSQL database, as real processes: two relays started together (they
//! migrate the empty database at once), a load generator spraying events at both (some events at both
//! at the same moment), `kill -9` of one mid-run, PostgreSQL restarted mid-run, and an outage during
//! which intake answers 503 with `Retry-After` and `/readyz` says not ready. At the webhook sink: every
//! acknowledged matching event arrived, none that does not match, one idempotency key per event.
//!
//! Needs the test PostgreSQL (`TRACKRELAY_TEST_PG_URL`, started by `scripts/test`) and restarts it
//! through `scripts/pg`; without it the test says it was skipped.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::sink::{Mode, Sink};
use support::smtp::free_port;

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
        let port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
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
            ),
        )
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_database_kill_and_restart_lose_and_repeat_nothing() {
    let Some(admin) = support::pg::admin_url() else {
        return;
    };
    let db = support::pg::fresh_database(&admin, "cluster").await;
    let tmp = tempfile::tempdir().unwrap();
    // TRACKRELAY_TEST_LOG_DIR keeps the configs and the relays' logs for a look after the run.
    let dir = match std::env::var_os("TRACKRELAY_TEST_LOG_DIR") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            PathBuf::from(d)
        }
        None => tmp.path().to_path_buf(),
    };
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
