//! The agent's manifest fetch, in a child process of its own (`berth agent-fetch`, hidden).
//! libgit2 starts OpenSSL for its HTTPS transport, and OpenSSL's start alone keeps about
//! 4 MB of the process resident for good; in a child that memory is returned when the fetch
//! ends, so the idle daemon holds none of it. A fetch that must stop (SIGTERM) is ended by
//! killing the child rather than abandoning a thread. A plain-directory source needs no git
//! and is read in the agent itself.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::child::{self, OnStop, Unanswered};
use super::config::{self, AgentConfig};
use crate::exit::{Exit, chain};
use crate::source::{self, Checkout};

/// The name of the hidden command the child runs.
pub const COMMAND: &str = "agent-fetch";

/// What the child writes to its stdout: one JSON document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Answer {
    Checkout(Checkout),
    /// The source's error, whole, and whether it means the repo is wrong (exit 1) rather
    /// than unreachable or unusable (exit 3).
    Failed {
        message: String,
        wrong: bool,
    },
}

/// Why the manifests could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{message}")]
    Source { message: String, wrong: bool },
    #[error("cannot start the fetch of {url}")]
    Spawn {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the fetch of {url} ended without an answer ({status})")]
    Lost { url: String, status: String },
    #[error("fetching {url} was stopped: berth is shutting down")]
    Stopped { url: String },
}

impl FetchError {
    /// 1 when the repo is wrong (an unverified or rewritten head with nothing to stay at),
    /// 3 when it could not be fetched or used.
    pub fn exit(&self) -> Exit {
        match self {
            FetchError::Source { wrong: true, .. } => Exit::Wrong,
            _ => Exit::CannotRun,
        }
    }
}

/// Brings the manifests of `config` to this host: in the agent itself for a plain
/// directory, else in a child process, killed if `stopping` is set before it answers.
pub async fn sync(
    config: &AgentConfig,
    now: jiff::Timestamp,
    stopping: &AtomicBool,
) -> Result<Checkout, FetchError> {
    let url = config.repo.url.clone();
    if source::is_plain_directory(&url) {
        return source::sync(&config.repo, &config.state_dir, now).map_err(|e| {
            let (message, wrong) = failure(&e);
            FetchError::Source { message, wrong }
        });
    }
    let now = now.to_string();
    let args = [
        OsStr::new(COMMAND),
        OsStr::new("--config"),
        config.path.as_os_str(),
        OsStr::new("--now"),
        OsStr::new(&now),
    ];
    match child::ask::<Answer>(&args, None, stopping, OnStop::Kill).await {
        Ok(Answer::Checkout(c)) => Ok(c),
        Ok(Answer::Failed { message, wrong }) => Err(FetchError::Source { message, wrong }),
        Err(Unanswered::Spawn(source)) => Err(FetchError::Spawn { url, source }),
        Err(Unanswered::Stopped | Unanswered::TimedOut) => Err(FetchError::Stopped { url }),
        Err(Unanswered::Lost(status)) => Err(FetchError::Lost { url, status }),
    }
}

/// A source error as the agent reports it, and whether it means the repo is wrong.
fn failure(e: &source::SourceError) -> (String, bool) {
    let wrong = matches!(
        e,
        source::SourceError::Verify(_) | source::SourceError::RefusedWithNothingToStayAt(_)
    );
    (chain(e), wrong)
}

/// The child's side: fetch as `config` says and write the answer to stdout.
pub fn answer(config_path: &Path, now: jiff::Timestamp) -> Exit {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(diags) => {
            eprint!("{}", diags.render_text(Path::new("")));
            return Exit::Wrong;
        }
    };
    let answer = match source::sync(&config.repo, &config.state_dir, now) {
        Ok(c) => Answer::Checkout(c),
        Err(e) => {
            let (message, wrong) = failure(&e);
            Answer::Failed { message, wrong }
        }
    };
    let json = serde_json::to_string(&answer).expect("the answer serializes");
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{json}") {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::CannotRun,
    }
}
