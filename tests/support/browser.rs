//! A real browser for the web console's tests: headless Chromium (Debian's `chromium`) driven over
//! WebDriver by fantoccini through Debian's `chromedriver`. `eval "$(scripts/browser ensure)"` (which
//! `scripts/test` runs) installs both when missing and exports `TRACKRELAY_CHROMEDRIVER` and
//! `TRACKRELAY_CHROMIUM`; without the variables the Debian paths are used, and a missing chromedriver
//! fails the test (it does not skip it).
//!
//! One chromedriver serves each test binary: the first [`Browser::new`] starts it on a free loopback
//! port. It runs under a `sh` that leads a process group of its own, and that group (chromedriver and
//! every Chromium process it started) is killed when the test binary exits: by an `atexit` handler on a
//! normal exit, and on Linux by the `sh` itself when the kernel tells it that the test binary died
//! (`PR_SET_PDEATHSIG`), say from SIGKILL or a crash.
//!
//! Each [`Browser`] is a WebDriver session with a fresh Chromium profile; dropping it (or
//! [`Browser::close`]) ends the session and Chromium with it. At most two sessions are alive at once in
//! a test binary (the machines have two cores); the others wait. A test that needs two browsers at
//! once takes them together with [`Browser::pair`], so that two such tests cannot each hold one slot
//! and wait for the other's.
//!
//! The helpers panic with what they looked for (CSS selector, page URL): they are for tests. Anything
//! else is on [`Browser::client`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

/// How long the helpers wait for an element to appear before they fail.
pub const ELEMENT_WAIT: Duration = Duration::from_secs(5);
/// Sessions alive at once in one test binary.
const SESSIONS: u32 = 2;
/// How long a test waits for a free session slot before it fails (a deadlock, most likely).
const SLOT_WAIT: Duration = Duration::from_secs(300);
const DRIVER_START: Duration = Duration::from_secs(30);
const SESSION_START: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const ENSURE: &str = "run `eval \"$(scripts/browser ensure)\"` first";

static DRIVER: OnceCell<Driver> = OnceCell::const_new();
static SLOTS: Semaphore = Semaphore::const_new(SESSIONS as usize);

/// The running chromedriver of this test binary.
struct Driver {
    port: u16,
}

/// A Chromium window in a WebDriver session of its own.
pub struct Browser {
    /// The WebDriver client, for what the helpers do not cover.
    pub client: Client,
    port: u16,
    session: String,
    mobile: bool,
    closed: bool,
    // Dropped after the session has ended (fields drop after `Drop::drop`): the profile folder, then
    // the slot.
    _profile: tempfile::TempDir,
    _slot: SemaphorePermit<'static>,
}

impl Browser {
    /// Opens a browser whose page area (the viewport, and so the screenshots) is `width` x `height`
    /// CSS pixels at device scale factor 1, laid out as on a desktop: any width, however small.
    pub async fn new(width: u32, height: u32) -> Browser {
        let slot = take_slots(1).await;
        Browser::start(width, height, false, slot).await
    }

    /// Like [`Browser::new`], but laid out as on a phone (Chromium's mobile emulation, with touch):
    /// the page's `<meta name="viewport">` is honoured, and a page without one is laid out 980 pixels
    /// wide and shrunk to fit, as a phone would.
    pub async fn phone(width: u32, height: u32) -> Browser {
        let slot = take_slots(1).await;
        Browser::start(width, height, true, slot).await
    }

    /// Opens two browsers of the same size (as [`Browser::new`]) at once: the way for a test to hold
    /// two sessions.
    pub async fn pair(width: u32, height: u32) -> (Browser, Browser) {
        let mut first = take_slots(2).await;
        let second = first.split(1).expect("two slots were taken");
        let a = Browser::start(width, height, false, first).await;
        let b = Browser::start(width, height, false, second).await;
        (a, b)
    }

    async fn start(
        width: u32,
        height: u32,
        mobile: bool,
        slot: SemaphorePermit<'static>,
    ) -> Browser {
        let driver = driver().await;
        let profile = tempfile::Builder::new()
            .prefix("trackrelay-chromium-")
            .tempdir()
            .expect("a temporary Chromium profile folder");
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities(width, height, mobile, profile.path()));
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = tokio::time::timeout(SESSION_START, builder.connect(&url))
            .await
            .unwrap_or_else(|_| panic!("no WebDriver session from {url} within {SESSION_START:?}"))
            .unwrap_or_else(|e| panic!("a WebDriver session from chromedriver at {url}: {e}"));
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a new WebDriver session has an id");
        let browser = Browser {
            client,
            port: driver.port,
            session,
            mobile,
            closed: false,
            _profile: profile,
            _slot: slot,
        };
        browser.set_size(width, height).await;
        browser
    }

    /// Loads `url` and waits for the page's load event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// The page's URL now.
    pub async fn current_url(&self) -> url::Url {
        self.client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("the current URL: {e}"))
    }

    /// Replaces the value of the field at `css` with `text` (typed, as a person would).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing `{css}`: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing {text:?} into `{css}`: {e}"));
    }

    /// Chooses the option whose value is `value` in the `<select>` at `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing {value:?} in `{css}`: {e}"));
    }

    /// Clicks the element at `css` (a following navigation completes before the next command).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        if let Err(e) = element.click().await {
            panic!("clicking `{css}` on {}: {e}", self.page().await);
        }
    }

    /// The rendered text of the first element at `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("the text of `{css}`: {e}"))
    }

    /// Whether some element matches `css` now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_now(css).await.is_empty()
    }

    /// Waits until an element at `css` has a text containing `needle`, and returns that text; fails
    /// after `timeout` with the texts it saw.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let mut seen = Vec::new();
            for element in self.find_now(css).await {
                // An element may go stale while the page changes: it is looked for again.
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    seen.push(text);
                }
            }
            if start.elapsed() >= timeout {
                panic!(
                    "no `{css}` with a text containing {needle:?} on {} after {timeout:?}; seen: {seen:?}",
                    self.page().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` as the body of a function in the page and returns what it returns
    /// (`return document.title`).
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {script:?}: {e}"))
    }

    /// The cookies the page can see (name, value, flags such as `http_only()` and `same_site()`).
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .unwrap_or_else(|e| panic!("the cookies: {e}"))
    }

    /// Resizes the page area to `width` x `height` CSS pixels (for this page and the next ones).
    ///
    /// Headless Chromium's window is at least 500 pixels wide and its page area shorter than the
    /// window: the page area is set with DevTools' device metrics instead, which also sizes the
    /// screenshots.
    pub async fn set_size(&self, width: u32, height: u32) {
        let metrics = json!({
            "width": width,
            "height": height,
            "deviceScaleFactor": 1,
            "mobile": self.mobile,
        });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics)
            .await;
    }

    /// Runs the Chrome DevTools Protocol command `cmd` on the page (through chromedriver) and returns
    /// its result, e.g. `cdp("Emulation.setEmulatedMedia", json!({"features": [{"name":
    /// "prefers-color-scheme", "value": "dark"}]}))`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/goog/cdp/execute",
            self.port, self.session
        );
        let body = json!({ "cmd": cmd, "params": params });
        let answer = async {
            let response = reqwest::Client::new().post(&url).json(&body).send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.json::<Value>().await?))
        };
        match answer.await {
            Ok((status, answer)) if status.is_success() => answer["value"].clone(),
            Ok((status, answer)) => panic!("DevTools command {cmd} {params}: {status} {answer}"),
            Err(e) => panic!("DevTools command {cmd} {params} at {url}: {e}"),
        }
    }

    /// Saves a PNG of the visible page as `<screenshot_dir()>/<name>.png` and returns its path.
    /// `name` is letters, digits, `-`, `_` and `.`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty()
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "screenshot name {name:?}: letters, digits, -, _ and ."
        );
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => panic!("a screenshot of {}: {e}", self.page().await),
        };
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Ends the session (Chromium quits) and waits for it; dropping the browser does the same.
    pub async fn close(mut self) {
        self.closed = true;
        self.client
            .clone()
            .close()
            .await
            .unwrap_or_else(|e| panic!("ending WebDriver session {}: {e}", self.session));
    }

    /// The first element at `css`, waiting up to [`ELEMENT_WAIT`] for it to appear.
    async fn find(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(ELEMENT_WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!(
                "no element matches `{css}` on {} after {ELEMENT_WAIT:?}: {e}",
                self.page().await
            ),
        }
    }

    /// The elements at `css` now; none if the page is between two loads.
    async fn find_now(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// The page's URL for a failure message.
    async fn page(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("<unknown page: {e}>"),
        }
    }
}

impl Drop for Browser {
    /// Ends the session with a blocking DELETE to chromedriver: fantoccini's own request on drop runs
    /// on the test's runtime, which may be shutting down, and Chromium would then live on.
    fn drop(&mut self) {
        if !self.closed {
            end_session(self.port, &self.session);
        }
    }
}

/// `DELETE /session/<id>`, waiting for the answer (chromedriver answers once Chromium has quit; it
/// then keeps the connection open despite `Connection: close`, so the answer is read by its length).
fn end_session(port: u16, session: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !complete_http_answer(&answer) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether `answer` holds an HTTP response's head and as much body as its Content-Length says.
fn complete_http_answer(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= end + 4 + length
}

/// Where [`Browser::screenshot`] writes: `console-screenshots` in Cargo's target folder
/// (`$CARGO_TARGET_DIR` when set, else `target/` of the package).
pub fn screenshot_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir),
        _ => manifest.join("target"),
    };
    target.join("console-screenshots")
}

/// The new-session capabilities: headless Chromium with a fresh profile at `profile`, and for a phone
/// chromedriver's mobile emulation (touch events and the viewport tag; the size is set again by
/// [`Browser::set_size`]).
fn capabilities(
    width: u32,
    height: u32,
    mobile: bool,
    profile: &Path,
) -> serde_json::Map<String, Value> {
    let chromium = std::env::var("TRACKRELAY_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium not found at {chromium}: {ENSURE}"
    );
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // The same pixels and language on every machine.
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ])
    .collect::<Vec<_>>();
    let mut options = json!({ "binary": chromium, "args": args });
    if mobile {
        options["mobileEmulation"] = json!({"deviceMetrics": {
            "width": width, "height": height, "pixelRatio": 1.0, "touch": true, "mobile": true,
        }});
    }
    let caps = json!({ "browserName": "chrome", "goog:chromeOptions": options });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// Waits up to [`SLOT_WAIT`] for `n` session slots.
async fn take_slots(n: u32) -> SemaphorePermit<'static> {
    tokio::time::timeout(SLOT_WAIT, SLOTS.acquire_many(n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no browser slot for {SLOT_WAIT:?}: more than {SESSIONS} sessions wanted at once? \
                 (a test that needs two takes them with Browser::pair)"
            )
        })
        .expect("the slots are never closed")
}

/// This test binary's chromedriver, started on first use.
async fn driver() -> &'static Driver {
    DRIVER.get_or_init(start_driver).await
}

/// The chromedriver to run: `$TRACKRELAY_CHROMEDRIVER`, else Debian's.
fn driver_program() -> PathBuf {
    match std::env::var_os("TRACKRELAY_CHROMEDRIVER") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "TRACKRELAY_CHROMEDRIVER={}: no such program; {ENSURE}",
                p.display()
            );
            p
        }
        _ => {
            let p = PathBuf::from("/usr/bin/chromedriver");
            assert!(
                p.is_file(),
                "no chromedriver: /usr/bin/chromedriver is missing and TRACKRELAY_CHROMEDRIVER is unset; {ENSURE}"
            );
            p
        }
    }
}

/// Starts chromedriver on a free port and waits until it is ready. A port taken between choosing and
/// binding it makes chromedriver exit at once: another port is tried.
async fn start_driver() -> Driver {
    let program = driver_program();
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let (group, exited) = spawn_driver(&program, port)
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        match wait_ready(port, &exited).await {
            Ok(()) => {
                process_group::kill_at_exit(group);
                return Driver { port };
            }
            Err(why) => {
                process_group::kill(group);
                failures.push(format!("port {port}: {why}"));
            }
        }
    }
    panic!(
        "chromedriver ({}) did not start: {failures:?}",
        program.display()
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls chromedriver's `/status` until it says it is ready.
async fn wait_ready(port: u16, exited: &OnceLock<String>) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/status");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let start = Instant::now();
    while start.elapsed() < DRIVER_START {
        if let Some(status) = exited.get() {
            return Err(format!("exited ({status})"));
        }
        if let Ok(response) = http.get(&url).send().await {
            if let Ok(body) = response.json::<Value>().await {
                if body["value"]["ready"] == true {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("{url} not ready after {DRIVER_START:?}"))
}

/// Spawns chromedriver from a thread that lives as long as it does (the kernel's parent-death signal
/// follows the spawning thread, not the process), and returns its process group and a slot that
/// receives its exit status.
fn spawn_driver(program: &Path, port: u16) -> std::io::Result<(i32, Arc<OnceLock<String>>)> {
    let exited = Arc::new(OnceLock::new());
    let status = Arc::clone(&exited);
    let mut command = process_group::command(program);
    command
        .arg(format!("--port={port}"))
        .arg("--log-level=SEVERE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("chromedriver-{port}"))
        .spawn(move || match command.spawn() {
            Err(e) => {
                let _ = tx.send(Err(e));
            }
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let result = child.wait();
                let _ = status.set(match result {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                });
            }
        })?;
    let pid = rx.recv().expect("the chromedriver thread reports")?;
    Ok((i32::try_from(pid).expect("a pid fits i32"), exited))
}

#[cfg(unix)]
mod process_group {
    //! chromedriver's process group: a `sh` leads it and waits for chromedriver; the group is killed
    //! at exit, or by the `sh` when the test binary dies first.

    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::Command;
    use std::sync::atomic::{AtomicI32, Ordering};

    static GROUP: AtomicI32 = AtomicI32::new(0);

    /// `sh` runs the program in the background and waits; on SIGTERM (the parent-death signal) or
    /// SIGHUP/SIGINT it kills its whole group, itself included.
    const LEADER: &str = "trap 'kill -9 0' TERM HUP INT; \"$@\" & wait $!";

    /// `program` under a group-leading `sh`; arguments added to the command go to the program.
    pub(super) fn command(program: &Path) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(LEADER).arg("sh").arg(program);
        command.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = i32::try_from(std::process::id()).expect("a pid fits i32");
            // SAFETY: prctl and getppid are async-signal-safe, as code between fork and exec must be.
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The test binary died before the signal was asked for: nothing would send it.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("the test binary has exited"));
                    }
                    Ok(())
                });
            }
        }
        command
    }

    /// Kills the group now.
    pub(super) fn kill(group: i32) {
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }

    /// Kills the group when the test binary exits.
    pub(super) fn kill_at_exit(group: i32) {
        if GROUP.swap(group, Ordering::SeqCst) == 0 {
            // SAFETY: registers a plain `extern "C" fn()` that only calls killpg.
            unsafe {
                libc::atexit(kill_registered);
            }
        }
    }

    extern "C" fn kill_registered() {
        let group = GROUP.load(Ordering::SeqCst);
        if group > 0 {
            kill(group);
        }
    }
}

#[cfg(not(unix))]
mod process_group {
    //! Elsewhere chromedriver runs as a plain child: nothing stops it when the test binary exits.

    use std::path::Path;
    use std::process::Command;

    pub(super) fn command(program: &Path) -> Command {
        Command::new(program)
    }

    pub(super) fn kill(_group: i32) {}

    pub(super) fn kill_at_exit(_group: i32) {}
}
