//! The ceiling for HTTP + JSON on this machine, for the benchmark suite (`scripts/bench/run`): a minimal
//! axum server that decodes each `POST /events` body into the same event model trackrelay uses and
//! answers 200, with no rules, no store and no delivery. Loopback only.
//!
//! ```text
//! cargo run --release --example baseline -- --port 18090
//! ```

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use trackrelay::event::Envelope;

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18090)]
    port: u16,
}

async fn events(body: Bytes) -> StatusCode {
    match Envelope::from_json(&body) {
        Ok(env) => {
            std::hint::black_box(env);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Router::new()
        .route("/events", post(events))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
