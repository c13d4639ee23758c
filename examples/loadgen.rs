//! A load generator for trackrelay's intake: posts a Traccar event body with a fresh `event.id` per
//! request, at saturation (closed loop) or at a fixed rate, and prints throughput and latency
//! percentiles. Loopback only: it refuses any URL whose host is not a loopback address.
//!
//! For the benchmark suite (`scripts/bench/run`) it can also stamp each event with the time it was sent
//! (`--stamp`: `event.attributes.benchT0`, Unix microseconds, which a webhook sink reads back for the
//! end-to-end latency), spread events over many devices (`--devices`), stop after a number of events
//! (`--count`), and post the same events as Prometheus Alertmanager alerts (`--format alertmanager`, to
//! `/api/v2/alerts`: one alert per event, labelled with the event id so Alertmanager keeps them apart).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8088/events --duration 10 --concurrency 64
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8088/events --duration 10 --rate 1000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Intake URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8088/events")]
    url: String,
    /// Authorization header value.
    #[arg(long)]
    auth: Option<String>,
    /// Event body to send (its event.id is replaced per request).
    #[arg(long, default_value = "tests/payloads/alarm_vibration.json")]
    payload: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// First event id (ids count up from here).
    #[arg(long, default_value_t = 1_000_000_000)]
    id_base: u64,
    /// Vary the device id over this many devices (1 = keep the payload's).
    #[arg(long, default_value_t = 1)]
    devices: u64,
    /// Stop after this many requests (0 = run for --duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Put the send time into each event (`event.attributes.benchT0`, Unix microseconds).
    #[arg(long)]
    stamp: bool,
    /// Body format: `traccar` (the payload) or `alertmanager` (the event as one Alertmanager v2 alert).
    #[arg(long, default_value = "traccar")]
    format: String,
}

/// Marker numbers in the body template, replaced per request.
const ID: &str = "987654321987";
const DEVICE: &str = "123456789123";
const T0: &str = "555555555555555";

/// The event as one Alertmanager alert: the event's facts as labels (the event id among them, so every
/// event is its own alert), the rest as annotations.
fn alert(event: &serde_json::Value) -> serde_json::Value {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    serde_json::json!([{
        "labels": {
            "alertname": s(&event["event"]["type"]),
            "event_id": ID,
            "device_id": DEVICE,
            "device": s(&event["device"]["name"]),
            "alarm": s(&event["event"]["attributes"]["alarm"]),
        },
        "annotations": {
            "benchT0": T0,
            "summary": format!("{} {}", s(&event["event"]["type"]), s(&event["device"]["name"])),
            "latitude": s(&event["position"]["latitude"]),
            "longitude": s(&event["position"]["longitude"]),
            "eventTime": s(&event["event"]["eventTime"]),
        },
    }])
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = reqwest::Url::parse(&args.url)?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    anyhow::ensure!(loopback, "loadgen only targets loopback addresses");
    let mut body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args.payload)?)?;
    // Marker ids, replaced per request: cheaper than serialising JSON for every request.
    body["event"]["id"] = serde_json::json!(987654321987u64);
    body["device"]["id"] = serde_json::json!(123456789123u64);
    if args.stamp {
        body["event"]["attributes"]["benchT0"] = serde_json::json!(555555555555555u64);
    }
    let template = Arc::new(match args.format.as_str() {
        "traccar" => body.to_string(),
        "alertmanager" => alert(&body).to_string(),
        other => anyhow::bail!("unknown format `{other}` (traccar or alertmanager)"),
    });
    let count = args.count;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next_id = Arc::new(AtomicU64::new(args.id_base));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(1 << 20)));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let mut ticker = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while (count == 0 && Instant::now() < end) || (count > 0 && sent < count) {
        sent += 1;
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let (client, url, template, next_id) = (
            client.clone(),
            url.clone(),
            template.clone(),
            next_id.clone(),
        );
        let (latencies, statuses, auth, devices) = (
            latencies.clone(),
            statuses.clone(),
            args.auth.clone(),
            args.devices,
        );
        tasks.spawn(async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let device = if devices > 1 { 1 + id % devices } else { 12 };
            let mut body =
                template
                    .replacen(ID, &id.to_string(), 1)
                    .replacen(DEVICE, &device.to_string(), 1);
            if body.contains(T0) {
                body = body.replacen(T0, &now_us().to_string(), 1);
            }
            let mut req = client
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let t0 = Instant::now();
            let key = match req.send().await {
                Ok(r) => {
                    let s = r.status().as_u16().to_string();
                    let _ = r.bytes().await;
                    s
                }
                Err(e) => format!(
                    "error: {}",
                    if e.is_connect() {
                        "connect"
                    } else if e.is_timeout() {
                        "timeout"
                    } else {
                        "other"
                    }
                ),
            };
            let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
            latencies.lock().unwrap().push(us);
            *statuses.lock().unwrap().entry(key).or_default() += 1;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let statuses = statuses.lock().unwrap().clone();
    let ok = statuses.get("200").copied().unwrap_or(0);
    println!(
        "requests: {}  elapsed: {elapsed:.2}s  statuses: {statuses:?}",
        lat.len()
    );
    println!(
        "throughput: {:.0} req/s ({:.0} accepted/s)",
        lat.len() as f64 / elapsed,
        ok as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    Ok(())
}
