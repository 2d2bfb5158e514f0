//! The agent's children (`berth agent-pass`, `agent-fetch`, `agent-report`): berth run with
//! a hidden command, answering one JSON document on stdout. A pass child gives back what a
//! pass touched when it exits; in a fetch or push child, libgit2 and the TLS stack it starts
//! stay out of the agent, and a call that hangs is ended by killing the child, which no
//! thread of the agent could do to a libgit2 call.

use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// What a child is told when the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Killed, with nothing of its own to finish (a fetch, a push).
    Kill,
    /// Sent SIGTERM and still waited for, so it finishes its step (a pass).
    Terminate,
}

/// Why a child gave no answer.
#[derive(Debug)]
pub enum Unanswered {
    /// It could not be started.
    Spawn(std::io::Error),
    /// `stopping` was set first; the child was killed ([`OnStop::Kill`]).
    Stopped,
    /// The deadline passed first; the child was killed.
    TimedOut,
    /// It ended without a readable answer: how it ended.
    Lost(String),
}

/// Runs `berth <args…>` and reads its answer; kills it at `deadline`, and when `stopping`
/// is set does what `on_stop` says.
pub async fn ask<T: DeserializeOwned>(
    args: &[&OsStr],
    deadline: Option<tokio::time::Instant>,
    stopping: &AtomicBool,
    on_stop: OnStop,
) -> Result<T, Unanswered> {
    let exe = super::daemon::berth_exe().map_err(Unanswered::Spawn)?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(on_stop == OnStop::Kill)
        .spawn()
        .map_err(Unanswered::Spawn)?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let read = async {
        use tokio::io::AsyncReadExt as _;
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out).await;
        (read, out, child.wait().await)
    };
    tokio::pin!(read);
    let deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut terminated = false;
    let (read, out, status) = loop {
        tokio::select! {
            done = &mut read => break done,
            () = &mut deadline => return Err(Unanswered::TimedOut),
            () = tokio::time::sleep(Duration::from_millis(100)), if !terminated => {
                if stopping.load(Ordering::SeqCst) {
                    if on_stop == OnStop::Kill {
                        return Err(Unanswered::Stopped);
                    }
                    terminated = true;
                    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                }
            }
        }
    };
    let status = status.map_err(|e| Unanswered::Lost(e.to_string()))?;
    read.map_err(|e| Unanswered::Lost(e.to_string()))?;
    serde_json::from_slice(&out).map_err(|_| Unanswered::Lost(status.to_string()))
}
