//! `trackrelay setup`: prepares the server side so that events reach the relay. [`traccar`] creates
//! the `web` notifications a live source needs (Traccar pushes nothing else over its socket);
//! [`webhook`] points a BikeTrax or Traccar account's webhook at the relay with a new secret.
//!
//! Both plan first (pure: what the server has against what the rules need), print the plan, and change
//! something only with `--apply`. A second `--apply` finds nothing to do. When the server fails in the
//! middle, [`Progress`] says what was done and what was not, and the command fails; running it again
//! continues from there, as the plan is made anew from what the server then holds.
//!
//! Secrets are never printed: the webhook key shows masked, except once, when it is new and
//! `--show-psk` asks for it.

pub mod key_file;
pub mod traccar;
pub mod webhook;

use std::io::Write;
use std::path::PathBuf;

use crate::settings::Config;
use crate::source::traccar::SourceError;

/// `trackrelay setup ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SetupCommand {
    /// Create the `web` notifications each live Traccar source needs for the rules (dry run unless
    /// `--apply`).
    Traccar(traccar::TraccarArgs),
    /// Point a BikeTrax (or Traccar) account's webhook at the relay, with a new secret (dry run unless
    /// `--apply`).
    Webhook(webhook::WebhookArgs),
}

/// Why setting up failed. The report of what was done is printed before.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration does not load.
    #[error("{0}")]
    Config(String),
    /// The command line names what the configuration lacks, or is incomplete.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, refused the login, or failed a read.
    #[error("{what}: {source}")]
    Server {
        /// Which server or source.
        what: String,
        /// The failure.
        source: SourceError,
    },
    /// The server failed while changes were being made: some were made, some not (printed before).
    #[error("stopped after {done} of {planned} change(s): {source}")]
    Halfway {
        /// Changes made.
        done: usize,
        /// Changes planned.
        planned: usize,
        /// The failure.
        source: SourceError,
    },
    /// What the server holds after the changes is not what was asked for.
    #[error("the server did not keep the change: {0}")]
    NotKept(String),
    /// The webhook key's file.
    #[error("{0}")]
    KeyFile(String),
    /// Printing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs one `setup` command, printing its report to `out`.
pub async fn run(cmd: SetupCommand, out: &mut dyn Write) -> Result<(), SetupError> {
    match cmd {
        SetupCommand::Traccar(args) => traccar::run(&args, out).await,
        SetupCommand::Webhook(args) => webhook::run(&args, out).await,
    }
}

/// Loads the configuration the command names (or the built-in one).
fn load(path: Option<&PathBuf>) -> Result<Config, SetupError> {
    Config::load(path.map(PathBuf::as_path)).map_err(|e| SetupError::Config(e.to_string()))
}

/// The changes of an `--apply`, in order, and how far it got: printed step by step, and when one fails,
/// what was done and what was not.
pub struct Progress<'a> {
    out: &'a mut dyn Write,
    planned: Vec<String>,
    done: usize,
}

impl<'a> Progress<'a> {
    /// The steps about to be carried out, as the plan printed them.
    pub fn new(out: &'a mut dyn Write, planned: Vec<String>) -> Progress<'a> {
        Progress {
            out,
            planned,
            done: 0,
        }
    }

    /// The next step succeeded; `note` adds what the server answered (an id).
    pub fn done(&mut self, note: &str) -> Result<(), SetupError> {
        let step = self.planned.get(self.done).cloned().unwrap_or_default();
        self.done += 1;
        writeln!(self.out, "  done: {step}{note}")?;
        Ok(())
    }

    /// The next step failed: prints what was done and what was not, and returns the error to end with.
    pub fn failed(self, source: SourceError) -> SetupError {
        let out = self.out;
        let (done, rest) = self.planned.split_at(self.done.min(self.planned.len()));
        let _ = writeln!(
            out,
            "  FAILED: {}: {source}",
            rest.first().map_or("", String::as_str)
        );
        let _ = writeln!(out, "\nStopped halfway. Done ({}):", done.len());
        for s in done {
            let _ = writeln!(out, "  - {s}");
        }
        if done.is_empty() {
            let _ = writeln!(out, "  (nothing)");
        }
        let _ = writeln!(out, "Not done ({}):", rest.len());
        for s in rest {
            let _ = writeln!(out, "  - {s}");
        }
        let _ = writeln!(
            out,
            "Nothing else was changed. Run the same command again: it plans from what the server \
             holds now and continues from there."
        );
        SetupError::Halfway {
            done: done.len(),
            planned: self.planned.len(),
            source,
        }
    }
}

/// The dry run's closing line.
fn dry_run_note(out: &mut dyn Write) -> Result<(), SetupError> {
    writeln!(
        out,
        "\nDry run: nothing was changed. Run again with --apply to make these changes."
    )?;
    Ok(())
}
