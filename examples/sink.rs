//! A fast webhook receiver for the benchmark suite (`scripts/bench/run`): answers every request 200 and
//! counts deliveries, for trackrelay's webhook channel and Alertmanager's webhook receiver alike.
//!
//! A delivery is a `benchT0` marker in a body (the load generator stamps each event with the Unix time
//! in microseconds it was sent; trackrelay's default webhook body carries the event verbatim, and
//! Alertmanager carries it as an annotation, several alerts per request). For each marker the sink
//! records now − benchT0: the end-to-end latency. A body without a marker counts as one delivery
//! without a latency.
//!
//! `GET /stats` answers `deliveries requests first_s last_s p50_ms p99_ms` (times since the last reset,
//! in seconds) and `POST /reset` starts over. Loopback only.
//!
//! ```text
//! cargo run --release --example sink -- --port 18099
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18099)]
    port: u16,
}

#[derive(Default)]
struct Stats {
    since: Option<Instant>,
    deliveries: u64,
    requests: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Latencies in microseconds.
    latencies: Vec<u32>,
}

type Shared = Arc<Mutex<Stats>>;

const MARKER: &[u8] = b"benchT0";

/// The numbers after each `benchT0` marker (skipping `":` or `":"` in between).
fn stamps(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let i = body[at..].windows(MARKER.len()).position(|w| w == MARKER)?;
        at += i + MARKER.len();
        let digits: Vec<u8> = body[at..]
            .iter()
            .skip_while(|b| matches!(b, b'"' | b':' | b' ' | b'\\'))
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        if let Some(n) = std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            return Some(n);
        }
    })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn receive(State(stats): State<Shared>, body: Bytes) -> &'static str {
    let now = now_us();
    let lat: Vec<u32> = stamps(&body)
        .map(|t0| now.saturating_sub(t0).min(u32::MAX as u64) as u32)
        .collect();
    let mut s = stats.lock().unwrap();
    let t = Instant::now();
    s.first.get_or_insert(t);
    s.last = Some(t);
    s.requests += 1;
    s.deliveries += lat.len().max(1) as u64;
    s.latencies.extend(lat);
    "ok"
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

async fn stats(State(stats): State<Shared>) -> String {
    let s = stats.lock().unwrap();
    let since = s.since.unwrap_or_else(Instant::now);
    let secs = |t: Option<Instant>| t.map_or(0.0, |t| (t - since).as_secs_f64());
    let mut lat = s.latencies.clone();
    lat.sort_unstable();
    format!(
        "{} {} {:.3} {:.3} {:.2} {:.2}\n",
        s.deliveries,
        s.requests,
        secs(s.first),
        secs(s.last),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    )
}

async fn reset(State(stats): State<Shared>) -> &'static str {
    *stats.lock().unwrap() = Stats {
        since: Some(Instant::now()),
        ..Default::default()
    };
    "ok"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shared: Shared = Arc::new(Mutex::new(Stats {
        since: Some(Instant::now()),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .fallback(receive)
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_every_stamp() {
        let body = br#"{"a":{"benchT0":123},"alerts":[{"annotations":{"benchT0":"456"}},{"benchT0":"x"}]}"#;
        assert_eq!(super::stamps(body).collect::<Vec<_>>(), [123, 456]);
    }
}
