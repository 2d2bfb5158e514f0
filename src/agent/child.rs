//! The agent's short-lived children (`berth agent-fetch`, `berth agent-report`): the same
//! binary run with a hidden command, answering one JSON document on stdout. In a child,
//! libgit2 and the TLS stack it starts stay out of the agent, and a call that hangs is ended
//! by killing the child, which no thread of the agent could do to a libgit2 call.

use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Why a child gave no answer.
#[derive(Debug)]
pub enum Unanswered {
    /// It could not be started.
    Spawn(std::io::Error),
    /// `stopping` was set first; the child was killed.
    Stopped,
    /// The deadline passed first; the child was killed.
    TimedOut,
    /// It ended without a readable answer: how it ended.
    Lost(String),
}

/// Runs `berth <args…>` and reads its answer, killing it when `stopping` is set or at
/// `deadline`.
pub async fn ask<T: DeserializeOwned>(
    args: &[&OsStr],
    deadline: Option<tokio::time::Instant>,
    stopping: &AtomicBool,
) -> Result<T, Unanswered> {
    let exe = std::env::current_exe().map_err(Unanswered::Spawn)?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Unanswered::Spawn)?;
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
    let (read, out, status) = loop {
        tokio::select! {
            done = &mut read => break done,
            () = &mut deadline => return Err(Unanswered::TimedOut),
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stopping.load(Ordering::SeqCst) {
                    return Err(Unanswered::Stopped);
                }
            }
        }
    };
    let status = status.map_err(|e| Unanswered::Lost(e.to_string()))?;
    read.map_err(|e| Unanswered::Lost(e.to_string()))?;
    serde_json::from_slice(&out).map_err(|_| Unanswered::Lost(status.to_string()))
}
