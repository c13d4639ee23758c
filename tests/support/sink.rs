//! A recording HTTP sink on loopback: the webhook / HTTP target peer.
//!
//! It records every request (method, path, headers, body, arrival time and the
//! status it answered) and can be scripted to fail, answer slowly, or go away
//! entirely and come back on the same port, so tests can drive the relay's
//! retry, idempotency and outage handling against a real socket.
//!
//! The server runs on the tokio runtime of the test that started it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// How the sink answers. Counters and the random sequence restart whenever
/// the mode is set, so a scripted sequence does not depend on earlier traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 to everything.
    Ok,
    /// Always this status.
    Status(u16),
    /// Always this status, with `Retry-After: <secs>`.
    StatusRetryAfter(u16, u64),
    /// Every n-th request (n, 2n, 3n, … since the mode was set) gets 500,
    /// the others 200. `FailEvery(0)` never fails.
    FailEvery(usize),
    /// Each request fails (500) with probability `percent`/100, drawn from a
    /// xorshift sequence seeded by `seed`: the same arrival order gives the
    /// same answers on every run.
    FailRandom { percent: u8, seed: u64 },
    /// Waits this long, then answers 200 (a slow endpoint; lets clients time out).
    Delay(Duration),
}

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Header names are lowercase (HTTP/1 names are case-insensitive; `http`
    /// normalises them). Repeated headers appear once per value, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Instant,
    /// The status the sink answered. For [`Mode::Delay`] this is set on
    /// arrival, so a client that timed out may never have seen it; a delayed
    /// request cut short by [`Sink::shutdown`] is rewritten to 503.
    pub status: u16,
}

impl Recorded {
    /// First value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body in the message if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "sink: body of {} {} is not JSON ({e}): {:?}",
                self.method,
                self.path,
                self.body_text()
            )
        })
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    state: Mutex<SinkState>,
    /// Woken after every recorded request (for the wait_* helpers).
    arrived: Notify,
    /// Woken on shutdown so delayed handlers stop waiting and the graceful
    /// shutdown does not hang on them.
    stopping: Notify,
    server: Mutex<Option<Running>>,
}

struct SinkState {
    records: Vec<Recorded>,
    mode: Mode,
    /// Requests seen since the mode was last set.
    counter: usize,
    rng: u64,
    running: bool,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Bind retries cover the moment after a shutdown when the kernel may not
/// have released the port yet; it normally binds on the first try.
const BIND_PATIENCE: Duration = Duration::from_secs(5);
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);

async fn bind(port: u16) -> TcpListener {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("sink: cannot bind {addr}: {e}"),
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    // xorshift64*: plenty for "fail about p% of the time, reproducibly".
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn seed_state(seed: u64) -> u64 {
    // xorshift must not start at 0; mixing in a constant keeps seed 0 usable.
    (seed ^ 0x9e37_79b9_7f4a_7c15).max(1)
}

impl Sink {
    /// Starts a sink on `127.0.0.1:<free port>` answering 200.
    pub async fn start() -> Sink {
        Self::start_with(bind(0).await).await
    }

    /// Starts a fresh sink (no records) on a given port, e.g. one a previous
    /// sink was shut down on.
    pub async fn start_on(port: u16) -> Sink {
        Self::start_with(bind(port).await).await
    }

    async fn start_with(listener: TcpListener) -> Sink {
        let port = listener.local_addr().expect("sink local address").port();
        let sink = Sink {
            inner: Arc::new(Inner {
                port,
                state: Mutex::new(SinkState {
                    records: Vec::new(),
                    mode: Mode::Ok,
                    counter: 0,
                    rng: seed_state(0),
                    running: false,
                }),
                arrived: Notify::new(),
                stopping: Notify::new(),
                server: Mutex::new(None),
            }),
        };
        sink.serve(listener);
        sink
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(self.inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender (sink handle gone) also stops the server.
                    let _ = rx.await;
                })
                .await
                .expect("sink server failed");
        });
        self.state().running = true;
        *self.server() = Some(Running { shutdown: tx, task });
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// `http://127.0.0.1:PORT{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.inner.port)
    }

    pub fn is_running(&self) -> bool {
        self.state().running
    }

    /// Changes how the sink answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        let mut st = self.state();
        st.rng = match mode {
            Mode::FailRandom { seed, .. } => seed_state(seed),
            _ => seed_state(0),
        };
        st.counter = 0;
        st.mode = mode;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().records.clone()
    }

    /// The requests that were answered with a 2xx status.
    pub fn successful(&self) -> Vec<Recorded> {
        self.state()
            .records
            .iter()
            .filter(|r| r.is_success())
            .cloned()
            .collect()
    }

    /// Forgets the records (the mode stays).
    pub fn clear(&self) {
        self.state().records.clear();
    }

    /// How many different values `name` had among 2xx-answered requests
    /// (requests without the header are not counted). With one key per
    /// logical event this is the number of events actually delivered.
    pub fn distinct_header_values(&self, name: &str) -> usize {
        let values: std::collections::HashSet<String> = self
            .successful()
            .iter()
            .filter_map(|r| r.header(name).map(str::to_owned))
            .collect();
        values.len()
    }

    /// Waits until at least `n` requests arrived (any status) and returns all
    /// records; panics after `timeout` listing what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        if !self.wait_until(timeout, |rs| rs.len() >= n).await {
            panic!(
                "sink: expected at least {n} request(s) within {timeout:?}, got {}:\n{}",
                self.requests().len(),
                describe(&self.requests())
            );
        }
        self.requests()
    }

    /// Waits until at least `n` requests were answered 2xx; returns those.
    pub async fn wait_for_successful(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let ok = |rs: &[Recorded]| rs.iter().filter(|r| r.is_success()).count() >= n;
        if !self.wait_until(timeout, ok).await {
            panic!(
                "sink: expected at least {n} successful request(s) within {timeout:?}, got:\n{}",
                describe(&self.requests())
            );
        }
        self.successful()
    }

    /// Proves a negative: panics if more than `n` requests arrive within
    /// `window` (returning as soon as that happens).
    pub async fn assert_stays_at(&self, n: usize, window: Duration) {
        if self.wait_until(window, |rs| rs.len() > n).await {
            panic!(
                "sink: expected no more than {n} request(s), got:\n{}",
                describe(&self.requests())
            );
        }
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check so a request recorded in between still
            // wakes us (notify_waiters reaches every existing Notified).
            let notified = self.inner.arrived.notified();
            if done(&self.state().records) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.state().records);
            }
        }
    }

    /// Stops accepting connections, closes idle keep-alive connections, ends
    /// delayed answers early (503) and returns once the port is released, so
    /// clients see "connection refused" like a real outage. Records are kept.
    pub async fn shutdown(&self) {
        let running = self.server().take();
        let Some(Running { shutdown, task }) = running else {
            return;
        };
        self.state().running = false;
        self.inner.stopping.notify_waiters();
        let _ = shutdown.send(());
        // axum drops the listener before it waits for open connections, and
        // it waits for connections to finish: hyper closes idle keep-alive
        // ones at once, and delayed handlers were just told to stop.
        match tokio::time::timeout(SHUTDOWN_PATIENCE, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("sink: server task failed: {e}"),
            Err(_) => panic!("sink: server did not shut down within {SHUTDOWN_PATIENCE:?}"),
        }
    }

    /// Brings a shut-down sink back on the same port, keeping its records and
    /// mode (one handle across an outage). No-op while running.
    pub async fn restart(&self) {
        if self.server().is_some() {
            return;
        }
        let listener = bind(self.inner.port).await;
        self.serve(listener);
    }

    fn state(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.inner.state)
    }

    fn server(&self) -> MutexGuard<'_, Option<Running>> {
        lock(&self.inner.server)
    }
}

/// Poisoning only means another test thread panicked mid-update; the records
/// are still the best evidence for the next assertion.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(records: &[Recorded]) -> String {
    if records.is_empty() {
        return "  (none)".to_owned();
    }
    records
        .iter()
        .map(|r| {
            let mut body = r.body_text();
            if body.len() > 300 {
                let mut cut = 300;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
                body.push('…');
            }
            format!(
                "  {} {} -> {} idempotency-key={:?} body={body:?}",
                r.method,
                r.path,
                r.status,
                r.header("idempotency-key")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Registered before `running` is read so a shutdown between the two still
    // interrupts the delay below.
    let stopping = inner.stopping.notified();
    let (index, status, retry_after, delay) = {
        let mut st = lock(&inner.state);
        st.counter += 1;
        let mut retry_after = None;
        let mut delay = None;
        let status = match st.mode.clone() {
            Mode::Ok => 200,
            Mode::Status(s) => s,
            Mode::StatusRetryAfter(s, secs) => {
                retry_after = Some(secs);
                s
            }
            Mode::FailEvery(n) if n > 0 && st.counter % n == 0 => 500,
            Mode::FailEvery(_) => 200,
            Mode::FailRandom { percent, .. } => {
                if xorshift(&mut st.rng) % 100 < u64::from(percent) {
                    500
                } else {
                    200
                }
            }
            Mode::Delay(d) => {
                delay = Some(d).filter(|_| st.running);
                200
            }
        };
        st.records.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            received_at: Instant::now(),
            status,
        });
        (st.records.len() - 1, status, retry_after, delay)
    };
    inner.arrived.notify_waiters();

    let mut status = status;
    if let Some(d) = delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stopping => {
                status = 503;
                if let Some(r) = lock(&inner.state).records.get_mut(index) {
                    r.status = status;
                }
            }
        }
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, if code.is_success() { "ok" } else { "error" }).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
        );
    }
    response
}
