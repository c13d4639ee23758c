//! Writes a history and a rule set for timing `trackrelay backtest` at scale: `--events` events
//! (default 1,000,000) as JSON lines, the example payloads' event types spread over `--devices` devices
//! and 30 days, and `--rules` rules (default 1,000) in the benchmarks' mix, each for one of 100 tenants
//! (device groups; `--no-tenants`: for every device), each with a 10-minute cooldown per device (noise
//! control, so every match consults stored state), sending to a log channel.
//!
//! ```text
//! cargo run --release --example backtest_data -- --dir /tmp/bt
//! time target/release/trackrelay backtest /tmp/bt/rules.yaml --events /tmp/bt/events.jsonl > /dev/null
//! ```

#[path = "../benches/support/mix.rs"]
mod mix;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Where to write `events.jsonl` and `rules.yaml`.
    #[arg(long)]
    dir: PathBuf,
    /// Events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rules.
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Devices.
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
    /// Every rule for every device, rather than each for one tenant's (device group's) devices.
    #[arg(long)]
    no_tenants: bool,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir)?;
    let data = a.dir.join("data");
    std::fs::write(
        a.dir.join("rules.yaml"),
        mix::rules_yaml(a.rules, &data.display().to_string(), !a.no_tenants),
    )?;
    let bodies = mix::bodies();
    let mut out = std::io::BufWriter::new(std::fs::File::create(a.dir.join("events.jsonl"))?);
    for n in 0..a.events {
        out.write_all(mix::event_line(&bodies, n, a.events, a.devices).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
