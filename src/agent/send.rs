//! The push of a pass's record to the status repo (docs/reporting.md), in a child process of
//! its own (`berth agent-report`, hidden) for the reasons the fetch has one ([`super::fetch`]):
//! libgit2 and the TLS stack it starts stay out of the agent, and a remote that hangs is
//! dealt with by killing the child after [`timeout`]. The push comes after the pass has
//! written its status and record: its exit code and status never depend on the push, which
//! only sets the status's `report` entry.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child::{self, OnStop, Unanswered};
use super::config::{self, AgentConfig};
use super::status::Status;
use crate::exit::{Exit, chain};
use crate::report::push::{self, Pushed};
use crate::report::{self, Record};

/// The name of the hidden command the child runs.
pub const COMMAND: &str = "agent-report";

/// How long a push may take, retries included, before its child is killed:
/// `BERTH_REPORT_TIMEOUT` in seconds, 60 by default.
pub fn timeout() -> Duration {
    std::env::var("BERTH_REPORT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

/// What the child writes to its stdout: one JSON document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Answer {
    Pushed { commit: String },
    Unchanged,
    Failed { message: String },
}

/// Why a record did not reach the status repo.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("{0}")]
    Push(String),
    #[error("cannot start the push to {url}")]
    Spawn {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the push to {url} did not finish within {}s (BERTH_REPORT_TIMEOUT)", timeout.as_secs_f64())]
    Timeout { url: String, timeout: Duration },
    #[error("the push to {url} ended without an answer ({status})")]
    Lost { url: String, status: String },
    #[error("the push to {url} was stopped: berth is shutting down")]
    Stopped { url: String },
}

/// After a pass: sends `record` to the status repo when it is due (see [`report::due`]),
/// and notes how that went in the status. Nothing here fails or changes the pass.
pub async fn after_pass(config: &AgentConfig, record: &Record, stopping: &AtomicBool) {
    let Some(spec) = &config.report else {
        return;
    };
    // Shutting down: the record, news to the repo, is still news at the next start.
    if stopping.load(Ordering::SeqCst) {
        return;
    }
    let mut status = Status::read(&config.state_dir)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut noted = status.report.take().unwrap_or_default();
    let reported = report::read_reported(&config.state_dir);
    let Some(due) = report::due(record, reported.as_ref(), noted.last_error.is_some()) else {
        tracing::debug!("the status repo already has this outcome");
        return;
    };
    tracing::info!(url = %spec.url, due = due.as_str(), "sending the status record");
    let now = jiff::Timestamp::now().to_string();
    noted.last_attempt = Some(now.clone());
    match push_in_child(config, &spec.url, stopping).await {
        Ok(answer) => {
            noted.last_success = Some(now);
            noted.last_error = None;
            match answer {
                Pushed::Commit(commit) => {
                    tracing::info!(%commit, "the status record reached the status repo");
                    noted.commit = Some(commit);
                }
                Pushed::Unchanged => {
                    tracing::info!("the status repo already held this record");
                }
            }
            if let Err(e) = report::write_reported(&config.state_dir, record) {
                tracing::error!(error = %e, "cannot note the record as reported");
            }
        }
        Err(e) => {
            let message = chain(&e);
            tracing::warn!(error = %message, "the status record was not sent; it goes out at the next pass");
            noted.last_error = Some(message);
        }
    }
    status.report = Some(noted);
    if let Err(e) = status.write(&config.state_dir) {
        tracing::error!(error = %e, "cannot write the status");
    }
}

/// Runs the push in a child, killed after [`timeout`] or when `stopping` is set.
async fn push_in_child(
    config: &AgentConfig,
    url: &str,
    stopping: &AtomicBool,
) -> Result<Pushed, ReportError> {
    let bound = timeout();
    let args = [
        OsStr::new(COMMAND),
        OsStr::new("--config"),
        config.path.as_os_str(),
    ];
    let deadline = tokio::time::Instant::now() + bound;
    let url = url.to_owned();
    match child::ask::<Answer>(&args, Some(deadline), stopping, OnStop::Kill).await {
        Ok(Answer::Pushed { commit }) => Ok(Pushed::Commit(commit)),
        Ok(Answer::Unchanged) => Ok(Pushed::Unchanged),
        Ok(Answer::Failed { message }) => Err(ReportError::Push(message)),
        Err(Unanswered::Spawn(source)) => Err(ReportError::Spawn { url, source }),
        Err(Unanswered::Stopped) => Err(ReportError::Stopped { url }),
        Err(Unanswered::TimedOut) => Err(ReportError::Timeout {
            url,
            timeout: bound,
        }),
        Err(Unanswered::Lost(status)) => Err(ReportError::Lost { url, status }),
    }
}

/// The child's side: push the state dir's record as `config` says and write the answer to
/// stdout. Its retries stop a little before the parent's bound, so a contended branch ends
/// in an answer rather than a kill.
pub fn answer(config_path: &Path) -> Exit {
    let started = Instant::now();
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(diags) => {
            eprint!("{}", diags.render_text(Path::new("")));
            return Exit::Wrong;
        }
    };
    let answer = match push_record(&config, started + timeout().mul_f64(0.8)) {
        Ok(Pushed::Commit(commit)) => Answer::Pushed { commit },
        Ok(Pushed::Unchanged) => Answer::Unchanged,
        Err(message) => Answer::Failed { message },
    };
    let json = serde_json::to_string(&answer).expect("the answer serializes");
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{json}") {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::CannotRun,
    }
}

fn push_record(config: &AgentConfig, deadline: Instant) -> Result<Pushed, String> {
    let Some(spec) = &config.report else {
        return Err(format!("{} has no report: block", config.path.display()));
    };
    let bytes = report::read_local_bytes(&config.state_dir).map_err(|e| {
        format!(
            "cannot read the record in {}: {e}",
            config.state_dir.display()
        )
    })?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the record in {} is unreadable: {e}",
            config.state_dir.display()
        )
    })?;
    push::push(
        spec,
        &config.state_dir,
        &config.partner,
        config.namespace.as_deref(),
        &bytes,
        &format!("{}\n", record.summary()),
        deadline,
    )
    .map_err(|e| chain(&e))
}
