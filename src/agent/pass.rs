//! The daemon's pass, in a child process of its own (`berth agent-pass`, hidden). A pass
//! touches most of berth (registries, the AWS SDK, rustls, the YAML loader, the planner,
//! the executor), and in the daemon's own process those code pages and that heap would stay
//! resident between passes; a child returns them when it exits, so the idle daemon keeps
//! only its loop. The child answers how the pass ended as one JSON document on stdout; its
//! logs go to the daemon's stderr, in the same format. SIGTERM to the daemon is forwarded,
//! so the child finishes the step in flight; the child asks the kernel for SIGTERM should
//! the daemon die without it, so it never outlives the daemon by more than that step.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::PassEnd;
use super::child::{self, OnStop, Unanswered};
use super::config::AgentConfig;
use super::status::{LastPass, Status};
use crate::exit::{Exit, chain};

/// The name of the hidden command the child runs.
pub const COMMAND: &str = "agent-pass";

/// What the child writes to its stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    exit: u8,
    /// When the pass wants the next one (RFC 3339), and why.
    wake: Option<(String, String)>,
    /// The child's peak resident memory (`VmHWM`, KiB): what a pass costs while it runs.
    peak_kib: Option<u64>,
}

/// When the pass wants the next one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextWake {
    pub at: jiff::Timestamp,
    pub why: String,
}

/// How a pass run in a child ended, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    pub wake: Option<NextWake>,
    pub peak_kib: Option<u64>,
}

/// Why a pass child gave no answer.
#[derive(Debug, thiserror::Error)]
enum LostError {
    #[error("cannot start the pass")]
    Spawn(#[source] std::io::Error),
    #[error("the pass ended without an answer ({0})")]
    NoAnswer(String),
}

/// Runs one pass in a child of this process and waits for it; when `stopping` is set, the
/// child is sent SIGTERM and still waited for. A child that gives no answer (it crashed,
/// was killed, could not start) is a failed pass (exit 3), recorded in the status here
/// because the child could not.
pub async fn run(config: &AgentConfig, stopping: &AtomicBool) -> Ended {
    let started = Instant::now();
    let at = jiff::Timestamp::now();
    match spawn_and_wait(config, stopping).await {
        Ok(answer) => Ended {
            exit: Exit::from_code(answer.exit),
            wake: answer.wake.and_then(|(at, why)| {
                Some(NextWake {
                    at: at.parse().ok()?,
                    why,
                })
            }),
            peak_kib: answer.peak_kib,
        },
        Err(e) => {
            tracing::error!(error = %chain(&e), "the pass could not run");
            record_lost(config, at, started.elapsed());
            Ended {
                exit: Exit::CannotRun,
                wake: None,
                peak_kib: None,
            }
        }
    }
}

async fn spawn_and_wait(config: &AgentConfig, stopping: &AtomicBool) -> Result<Answer, LostError> {
    // The engine as the daemon resolved it, `--engine` included.
    let args = [
        OsStr::new(COMMAND),
        OsStr::new("--config"),
        config.path.as_os_str(),
        OsStr::new("--engine"),
        OsStr::new(config.engine.as_str()),
    ];
    child::ask(&args, None, stopping, OnStop::Terminate)
        .await
        .map_err(|e| match e {
            Unanswered::Spawn(e) => LostError::Spawn(e),
            Unanswered::Lost(how) => LostError::NoAnswer(how),
            // Neither happens: a pass child has no deadline and is waited for when stopping.
            Unanswered::Stopped | Unanswered::TimedOut => LostError::NoAnswer("stopped".into()),
        })
}

/// Counts a pass whose child gave no answer as a failed pass in the status.
fn record_lost(config: &AgentConfig, at: jiff::Timestamp, took: Duration) {
    let mut status = Status::for_pass(&config.state_dir, &config.partner);
    status.counters.failures += 1;
    status.last_pass = Some(LastPass {
        at: at.to_string(),
        exit: i32::from(Exit::CannotRun.code()),
        millis: took.as_millis() as u64,
    });
    if let Err(e) = status.write(&config.state_dir) {
        tracing::error!(error = %e, "cannot write the status");
    }
}

/// The child's side, before its pass: SIGTERM when the daemon dies (forwarded or from the
/// kernel) and SIGINT (a terminal's Ctrl-C reaches the whole process group) set `stopping`,
/// so the step in flight finishes.
pub fn prepare(stopping: std::sync::Arc<AtomicBool>) {
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        tracing::warn!(error = %e, "cannot ask to be stopped with the agent");
    }
    let Some(signalled) = super::stop_signal() else {
        return;
    };
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("asked to stop; finishing the step in flight");
        stopping.store(true, Ordering::SeqCst);
    });
}

/// The child's side, after its pass: writes the answer to stdout.
pub fn answer(end: &PassEnd) -> Exit {
    let answer = Answer {
        exit: end.exit.code(),
        wake: end.wake.map(|w| (w.at.to_string(), w.why.to_owned())),
        peak_kib: peak_kib(),
    };
    let json = serde_json::to_string(&answer).expect("the answer serializes");
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{json}") {
        Ok(()) => end.exit,
        Err(_) => Exit::CannotRun,
    }
}

/// This process's peak resident memory so far, from `/proc/self/status`.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
