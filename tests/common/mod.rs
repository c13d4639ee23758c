//! The relay under test: configs written into a temporary folder, the relay started in-process on a
//! free loopback port, and small helpers to post events and read the admin API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trackrelay::app::{self, Running};
use trackrelay::settings::Config;

/// Where the shared example payloads are.
pub fn payloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/payloads")
}

/// The text of an example payload.
pub fn payload(name: &str) -> String {
    std::fs::read_to_string(payloads_dir().join(name))
        .unwrap_or_else(|e| panic!("payload {name}: {e}"))
}

/// The variables the shipped example config needs, for peers on loopback: data in `dir`, the Telegram
/// stand-in at `telegram_url` (bot `telegram_token`, chat 4242), SMTP on `smtp_port` without TLS, the ops
/// chat at `ops_url`, webhook token `s3cret`.
pub fn example_vars(
    dir: &Path,
    telegram_token: &str,
    telegram_url: String,
    smtp_port: u16,
    ops_url: String,
) -> HashMap<&'static str, String> {
    HashMap::from([
        ("TRACKRELAY_WEBHOOK_TOKEN", "s3cret".to_string()),
        ("TRACKRELAY_DATA_DIR", dir.display().to_string()),
        ("TELEGRAM_BOT_TOKEN", telegram_token.to_string()),
        ("TELEGRAM_CHAT_ID", "4242".to_string()),
        ("TELEGRAM_API_URL", telegram_url),
        ("SMTP_HOST", "127.0.0.1".to_string()),
        ("SMTP_PORT", smtp_port.to_string()),
        ("SMTP_SECURITY", "none".to_string()),
        ("OPS_WEBHOOK_URL", ops_url),
    ])
}

/// The shipped example config, with variables taken from `vars`.
pub fn example_config(vars: &HashMap<&str, String>) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("trackrelay.example.yaml");
    Config::load_with_env(Some(&path), &|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"))
}

/// A config written to `dir/trackrelay.yaml` and loaded (with no environment).
pub fn config_in(dir: &Path, yaml: &str) -> Config {
    let path = dir.join("trackrelay.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load_with_env(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// A config with one webhook channel `hook` at `url` and one rule `a` sending the events `matcher`
/// selects to it; `extra` (whole YAML lines, e.g. an admin token) is added at the top level.
pub fn hook_config(dir: &Path, url: &str, matcher: &str, extra: &str) -> Config {
    let yaml = format!(
        "storage: {{ data_dir: \"{}\" }}\n{extra}channels: {{ hook: {{ type: webhook, url: \"{url}\" }} }}\n\
         rules: [{{ name: a, match: {matcher}, notify: [{{ channel: hook }}] }}]\n",
        dir.display()
    );
    config_in(dir, &yaml)
}

/// A running relay.
pub struct Relay {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl Relay {
    pub async fn start(mut config: Config) -> Relay {
        config.listen = "127.0.0.1:0".parse().unwrap();
        Relay::start_as_configured(config).await
    }

    /// Starts the relay on the address its configuration names (e.g. the port its `public_url` has).
    pub async fn start_as_configured(config: Config) -> Relay {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let running = app::start(config)
            .await
            .unwrap_or_else(|e| panic!("relay did not start: {e:#}"));
        Relay {
            addr: running.addr,
            running: Some(running),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Posts a body to `/events` with the given headers; returns status and JSON answer.
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.post(self.url("/events")).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("relay answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
        (status, json)
    }

    /// GET an admin path with a bearer token.
    pub async fn admin_get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.admin(reqwest::Method::GET, path, token).await
    }

    /// POST an admin path with a bearer token.
    pub async fn admin_post(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        self.admin(reqwest::Method::POST, path, token).await
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> (u16, serde_json::Value) {
        self.admin_send(method, path, token, None).await
    }

    /// Any admin request, with an optional JSON body; returns status and JSON answer (null if none).
    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls the admin API until at least `n` deliveries have `status`; returns them.
    pub async fn wait_deliveries(
        &self,
        status: &str,
        n: usize,
        token: &str,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, list) = self
                .admin_get(&format!("/api/deliveries?status={status}"), token)
                .await;
            let rows = list["deliveries"].as_array().cloned().unwrap_or_default();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} {status} deliveries: {list}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `text` with the commented block that starts at the line `first` (e.g. `  # push:`) uncommented: that
/// line and the ones after it with the same `<indent># ` prefix lose their `# `, up to the first line
/// that is a bare `<indent>#` or no comment of that indent. Panics when `first` is not in `text`, so a
/// test of a shipped example's commented part fails when the example changes.
pub fn uncomment_block(text: &str, first: &str) -> String {
    let indent = &first[..first.find('#').expect("`first` is a comment line")];
    let prefix = format!("{indent}# ");
    let mut out = Vec::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        if line.starts_with(first) {
            inside = true;
            found = true;
        } else if inside && !line.starts_with(&prefix) {
            inside = false;
        }
        out.push(match (inside, line.strip_prefix(&prefix)) {
            (true, Some(rest)) => format!("{indent}{rest}"),
            _ => line.to_string(),
        });
    }
    assert!(found, "no line starting with {first:?}");
    out.join("\n") + "\n"
}
