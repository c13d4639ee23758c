//! A real SMTP server on loopback (mailin-embedded) that records every mail.
//!
//! Plain SMTP only: no STARTTLS and no AUTH. mailin-embedded offers AUTH only
//! over TLS (its `insecure_enable_plaintext_auth` switch is not exposed by
//! `Server`), and TLS would need a certificate the relay trusts.
//!
//! mailin-embedded's `serve()` blocks forever and has no stop handle, so each
//! server runs on its own thread until the test process exits. Outages are
//! therefore simulated in two ways: start the server late on a port reserved
//! with [`free_port`] (the relay first sees "connection refused"), or switch a
//! running server to [`SmtpServer::set_unavailable`] (421 replies).
//!
//! Received mails are parsed just enough for assertions: unfolded headers,
//! RFC 2047 encoded-word subjects, and the text/plain and text/html parts of
//! (possibly nested) multipart bodies with quoted-printable or base64
//! transfer encoding decoded.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailin_embedded::{response, Handler, Response, Server, SslConfig};
use tokio::sync::Notify;

/// One accepted mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// Envelope recipients (RCPT TO), in order.
    pub to: Vec<String>,
    /// `Subject`, unfolded and RFC 2047-decoded.
    pub subject: Option<String>,
    /// `Message-ID` exactly as in the header, e.g. `<abc@host>`.
    pub message_id: Option<String>,
    /// The first text/plain part (or the whole body of a text/plain mail),
    /// transfer-decoded, with CRLF line ends turned into `\n`.
    pub text: Option<String>,
    /// The first text/html part, decoded like `text`.
    pub html: Option<String>,
    /// Top-level headers in order, unfolded; values RFC 2047-decoded.
    pub headers: Vec<(String, String)>,
    /// The DATA as received (dot-unstuffed, without the final `.` line).
    pub raw: Vec<u8>,
    pub received_at: Instant,
}

impl Mail {
    /// First value of a top-level header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct SmtpServer {
    shared: Arc<Shared>,
    port: u16,
}

struct Shared {
    state: Mutex<SmtpState>,
    arrived: Notify,
}

#[derive(Default)]
struct SmtpState {
    mails: Vec<Mail>,
    /// Replies for the next transactions' DATA command, instead of 354.
    scripted: VecDeque<(u16, String)>,
    rejected: usize,
    unavailable: bool,
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released),
/// for outage tests that start the server later with [`SmtpServer::start_on`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a loopback port")
        .port()
}

impl SmtpServer {
    /// Starts a server on `127.0.0.1:<free port>`. Not async: it runs on its
    /// own thread and can be started from anywhere.
    pub fn start() -> SmtpServer {
        Self::start_with(TcpListener::bind("127.0.0.1:0").expect("bind SMTP server"))
    }

    /// Starts a server on a given port (see [`free_port`]). A port can only be
    /// used once per test process, because these servers never stop.
    pub fn start_on(port: u16) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
            panic!("SMTP server: cannot bind 127.0.0.1:{port} (servers cannot be stopped, so a port is usable once): {e}")
        });
        Self::start_with(listener)
    }

    fn start_with(listener: TcpListener) -> SmtpServer {
        let port = listener.local_addr().expect("SMTP local address").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(SmtpState::default()),
            arrived: Notify::new(),
        });
        let handler = Recorder {
            shared: shared.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp.stand-in.test")
            .with_ssl(SslConfig::None)
            .expect("plain SMTP needs no TLS setup")
            // One pool thread per open session: lettre's connection pool keeps
            // sessions open, and a fifth one would otherwise wait in the queue.
            .with_num_threads(16)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name(format!("smtp-stand-in-{port}"))
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("SMTP stand-in on port {port} stopped: {e}");
                }
            })
            .expect("spawn SMTP server thread");
        SmtpServer { shared, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Accepted mails in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        self.state().mails.clone()
    }

    /// The next `n` transactions are refused at the DATA command with `code`
    /// (4xx = transient, 5xx = permanent), so no mail is recorded. (Refusing
    /// after the content instead is not possible: mailin keeps the session in
    /// its data state after an error there, and the client would hang.)
    pub fn fail_next(&self, n: usize, code: u16, message: &str) {
        let mut st = self.state();
        for _ in 0..n {
            st.scripted.push_back((code, message.to_owned()));
        }
    }

    /// Transactions refused so far (scripted or while unavailable).
    pub fn rejected(&self) -> usize {
        self.state().rejected
    }

    /// While true, EHLO/HELO and MAIL FROM are answered `421 Service not
    /// available` and the connection is closed — a server that is up but
    /// refusing work, reaching pooled sessions too.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state().unavailable = unavailable;
    }

    /// Waits until at least `n` mails were accepted and returns them all;
    /// panics after `timeout` listing what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check: notify_waiters() from the SMTP thread
            // reaches every Notified that exists at that moment.
            let notified = self.shared.arrived.notified();
            if self.state().mails.len() >= n {
                return self.mails();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mails = self.mails();
                if mails.len() >= n {
                    return mails;
                }
                panic!(
                    "SMTP server: expected at least {n} mail(s) within {timeout:?}, got {} (rejected {}):\n{}",
                    mails.len(),
                    self.rejected(),
                    describe(&mails)
                );
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, SmtpState> {
        lock(&self.shared.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe(mails: &[Mail]) -> String {
    if mails.is_empty() {
        return "  (none)".to_owned();
    }
    mails
        .iter()
        .map(|m| format!("  {} -> {:?} subject={:?}", m.from, m.to, m.subject))
        .collect::<Vec<_>>()
        .join("\n")
}

/// mailin clones the prototype handler for every connection, so the
/// per-transaction fields start empty and only `shared` is common.
#[derive(Clone)]
struct Recorder {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Recorder {
    fn unavailable(&self) -> bool {
        lock(&self.shared.state).unavailable
    }
}

impl Handler for Recorder {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if self.unavailable() {
            return response::NO_SERVICE;
        }
        response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        if self.unavailable() {
            lock(&self.shared.state).rejected += 1;
            return response::NO_SERVICE;
        }
        self.from = from.to_owned();
        self.to.clear();
        self.data.clear();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.to.push(to.to_owned());
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        {
            let mut st = lock(&self.shared.state);
            if let Some((code, message)) = st.scripted.pop_front() {
                st.rejected += 1;
                return Response::custom(code, message);
            }
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = parse_mail(&self.from, &self.to, std::mem::take(&mut self.data));
        lock(&self.shared.state).mails.push(mail);
        self.shared.arrived.notify_waiters();
        response::OK
    }
}

// ---------------------------------------------------------------------------
// Minimal MIME parsing.

fn parse_mail(from: &str, to: &[String], raw: Vec<u8>) -> Mail {
    let (headers, body) = split_entity(&raw);
    let mut text = None;
    let mut html = None;
    collect_text_parts(&headers, body, &mut text, &mut html);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Mail {
        from: from.to_owned(),
        to: to.to_vec(),
        subject: find("subject"),
        message_id: find("message-id"),
        text,
        html,
        headers,
        raw,
        received_at: Instant::now(),
    }
}

/// Splits an entity into unfolded, decoded headers and its body.
pub fn split_entity(raw: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    // Headers end at the first empty line (CRLF CRLF, or LF LF if a client
    // sent bare LFs); an entity without one is all headers.
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, &raw[raw.len()..]),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut unfolded: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // RFC 5322 unfolding: drop the line break, keep the whitespace.
            if let Some(prev) = unfolded.last_mut() {
                prev.push_str(line);
                continue;
            }
        }
        unfolded.push(line.to_owned());
    }
    for line in unfolded {
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), decode_rfc2047(value.trim())));
        }
    }
    (headers, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `text/plain; charset="utf-8"` -> ("text/plain", [("charset", "utf-8")]).
pub fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect();
    (mime, params)
}

fn collect_text_parts(
    headers: &[(String, String)],
    body: &[u8],
    text: &mut Option<String>,
    html: &mut Option<String>,
) {
    // A mail without Content-Type is text/plain (RFC 2045).
    let (mime, params) =
        parse_content_type(header(headers, "content-type").unwrap_or("text/plain"));
    if mime.starts_with("multipart/") {
        let Some(boundary) = params.iter().find(|(k, _)| k == "boundary").map(|(_, v)| v) else {
            return;
        };
        for part in split_multipart(body, boundary) {
            let (part_headers, part_body) = split_entity(part);
            collect_text_parts(&part_headers, part_body, text, html);
        }
        return;
    }
    let attachment = header(headers, "content-disposition")
        .is_some_and(|d| d.trim().to_ascii_lowercase().starts_with("attachment"));
    let slot = match mime.as_str() {
        "text/plain" if !attachment => text,
        "text/html" if !attachment => html,
        _ => return,
    };
    if slot.is_none() {
        let encoding = header(headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "quoted-printable" => decode_quoted_printable(body),
            "base64" => decode_base64(body),
            _ => body.to_vec(),
        };
        *slot = Some(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
    }
}

/// The parts between `--boundary` delimiter lines (preamble and epilogue
/// dropped). The line break before a delimiter belongs to the delimiter
/// (RFC 2046), so it is not part of the preceding part.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut pos = 0;
    while pos <= body.len() {
        let line_end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..line_end];
        let trimmed = trim_line_end(line);
        if trimmed.starts_with(delimiter.as_bytes()) {
            let rest = &trimmed[delimiter.len()..];
            let is_close = rest.starts_with(b"--");
            if is_close || rest.iter().all(|b| b.is_ascii_whitespace()) {
                if let Some(start) = current {
                    parts.push(trim_line_end(&body[start..pos]));
                }
                if is_close {
                    break;
                }
                current = Some(line_end);
            }
        }
        if line_end == body.len() {
            break;
        }
        pos = line_end;
    }
    parts
}

fn trim_line_end(s: &[u8]) -> &[u8] {
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    s.strip_suffix(b"\r").unwrap_or(s)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` bytes and `=` soft line breaks.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            match (input.get(i + 1), input.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&h), Some(&l)) => {
                    if let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Standard base64, ignoring line breaks and anything outside the alphabet.
pub fn decode_base64(input: &[u8]) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in input {
        if c == b'=' {
            break;
        }
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a
/// header value. Whitespace between two adjacent encoded words is dropped,
/// as the RFC says (long subjects are split into several words), and their
/// bytes are decoded together so a character split across words survives.
pub fn decode_rfc2047(value: &str) -> String {
    fn flush(out: &mut String, bytes: &mut Vec<u8>, charset: &str) {
        if charset == "iso-8859-1" || charset == "latin1" {
            out.extend(bytes.iter().map(|&b| char::from(b)));
        } else {
            out.push_str(&String::from_utf8_lossy(bytes));
        }
        bytes.clear();
    }
    let mut out = String::new();
    let mut rest = value;
    let mut pending_space = String::new();
    let mut word_bytes: Vec<u8> = Vec::new();
    let mut word_charset = String::new();
    let mut in_words = false;
    while !rest.is_empty() {
        if let Some((charset, bytes, consumed)) = encoded_word(rest) {
            if !in_words {
                out.push_str(&pending_space);
            } else if charset != word_charset {
                flush(&mut out, &mut word_bytes, &word_charset);
            }
            pending_space.clear();
            word_bytes.extend_from_slice(&bytes);
            word_charset = charset;
            in_words = true;
            rest = &rest[consumed..];
            continue;
        }
        let c = rest.chars().next().expect("rest is not empty");
        if c == ' ' || c == '\t' {
            pending_space.push(c);
        } else {
            flush(&mut out, &mut word_bytes, &word_charset);
            in_words = false;
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut out, &mut word_bytes, &word_charset);
    out.push_str(&pending_space);
    out
}

/// Parses one encoded word at the start of `s`: (charset, decoded bytes,
/// bytes of `s` used).
fn encoded_word(s: &str) -> Option<(String, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let payload = &inner[..end];
    if payload.contains(' ') || charset.is_empty() {
        return None;
    }
    let consumed = "=?".len() + charset.len() + 1 + encoding.len() + 1 + end + "?=".len();
    let bytes = match encoding {
        "b" | "B" => decode_base64(payload.as_bytes()),
        // Q encoding is quoted-printable with '_' for space.
        "q" | "Q" => decode_quoted_printable(payload.replace('_', " ").as_bytes()),
        _ => return None,
    };
    // Drop an RFC 2231 language suffix ("utf-8*de").
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    Some((charset, bytes, consumed))
}
