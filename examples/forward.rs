//! The forwarding ceiling, for the benchmark suite (`scripts/bench/run`, issue 22): the least a relay
//! does, "HTTP in, HTTP out". A minimal axum server decodes each `POST /events` body into the event
//! model trackrelay uses, posts the body to a webhook URL with one pooled reqwest client, and answers
//! 200 once the webhook answered 2xx (502 otherwise): no rules, no store, no retries. What trackrelay
//! delivers end to end is reported as a fraction of what this one forwards on the same machine.
//! Loopback only.
//!
//! ```text
//! cargo run --release --example forward -- --port 18095 --to http://127.0.0.1:18092/hook
//! ```

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use trackrelay::event::Envelope;

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18095)]
    port: u16,
    /// Where each event goes.
    #[arg(long)]
    to: String,
}

struct Forward {
    client: reqwest::Client,
    to: String,
}

async fn events(State(f): State<Arc<Forward>>, body: Bytes) -> StatusCode {
    if Envelope::from_json(&body).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    let sent = f
        .client
        .post(&f.to)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => StatusCode::OK,
        _ => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let forward = Arc::new(Forward {
        client: reqwest::Client::new(),
        to: args.to,
    });
    let app = Router::new()
        .route("/events", post(events))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(forward);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
