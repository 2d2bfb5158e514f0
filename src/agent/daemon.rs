//! `berth agent` without `--once`: a pass on the interval (with jitter, so a fleet does not
//! hit its registry in step) or sooner when the last pass asked for it (a window opening, a
//! busy service to ask again), within a second of a change to a local manifest directory,
//! and when a managed container stops (drift); `/status` and `/metrics` on the configured
//! loopback address; SIGTERM finishes the step in flight, then exits. Why a pass was woken
//! is logged, never handed to the pass: every pass does the same whole job. Each pass runs
//! in a child process ([`super::pass`]); the daemon itself keeps only this loop, the
//! watches and the server, so its idle footprint is theirs alone. `berth agent` hands the
//! daemon over to a binary of its own installed beside it ([`SUPERVISOR`]), which holds only
//! that code: the idle daemon's memory is mostly the code pages it has mapped, and the
//! kernel maps them in whole page-cache folios, so in the full binary the little it runs
//! is spread over most of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::config::AgentConfig;
use super::pass::{self, NextWake};
use crate::container::EngineKind;
use crate::engine::{ContainerEvent, DockerEngine, Engine, Found};
use crate::exit::Exit;

/// The daemon's own binary (`[[bin]]` in Cargo.toml), installed beside `berth`.
pub const SUPERVISOR: &str = "berth-agentd";

/// Replaces this process (same pid, so a service manager sees no change) with the
/// [`SUPERVISOR`] beside the running executable, to run the daemon on `config_path` (and
/// `--engine`, when given over agent.yaml's).
/// Returns only when it cannot, with why: the static download is `berth` alone, and runs
/// the daemon in its own process.
pub fn hand_over(config_path: &Path, engine: Option<EngineKind>) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe.with_file_name(SUPERVISOR))
            .arg("--config")
            .arg(config_path)
            .args(
                engine
                    .map(|e| ["--engine", e.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .exec(),
        Err(e) => e,
    }
}

/// The `berth` executable a pass runs in: beside the [`SUPERVISOR`], or this very one when
/// the daemon runs in `berth` itself.
pub fn berth_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(if exe.file_name().is_some_and(|n| n == SUPERVISOR) {
        exe.with_file_name("berth")
    } else {
        exe
    })
}

/// Why the daemon wakes before its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Manifests,
    Drift,
    Stop,
}

/// Waits after the first wake-up for more, so one save or one replace is one pass.
const SETTLE: Duration = Duration::from_millis(150);

/// How long to sleep: the jittered interval, or less when the pass asked to be woken
/// earlier (never less than a second, so a clock at the edge does not spin).
fn until_next(interval: Duration, wake: Option<&NextWake>) -> Duration {
    let Some(wake) = wake else {
        return interval;
    };
    let left = jiff::Timestamp::now().duration_until(wake.at);
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    let wait = left.max(Duration::from_secs(1));
    if wait < interval {
        tracing::info!(why = %wake.why, at = %wake.at, "next pass before the interval");
        wait
    } else {
        interval
    }
}

/// The interval stretched or shrunk by up to a tenth, pseudo-randomly per pass.
fn jittered(interval: Duration, salt: u64) -> Duration {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(salt, |d| d.subsec_nanos() as u64 ^ salt.rotate_left(17));
    let unit = (seed.wrapping_mul(6364136223846793005) >> 33) as f64 / (1u64 << 31) as f64;
    interval.mul_f64(0.9 + 0.2 * unit)
}

pub async fn run(config: &AgentConfig, engine: DockerEngine) -> Exit {
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Wake>(64);

    spawn_signals(tx.clone(), Arc::clone(&stopping));
    let mut watched = watch_manifests(config, tx.clone());
    let engine = Arc::new(engine);
    let own_until = Arc::new(AtomicI64::new(unix_nanos()));
    spawn_drift_events(
        Arc::clone(&engine),
        &config.partner,
        tx.clone(),
        Arc::clone(&own_until),
    );
    if let Some(addr) = config.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving /status and /metrics");
                tokio::spawn(super::serve::serve(listener, config.state_dir.clone()));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                return Exit::CannotRun;
            }
        }
    }

    let mut passes = 0u64;
    loop {
        // A SIGTERM that arrived while a manifest change settled starts no pass.
        if stopping.load(Ordering::SeqCst) {
            return Exit::Ok;
        }
        passes += 1;
        let end = pass::run(config, &stopping).await;
        own_until.store(unix_nanos(), Ordering::SeqCst);
        tracing::info!(
            exit = end.exit.code(),
            peak_kib = end.peak_kib,
            "pass finished"
        );
        if stopping.load(Ordering::SeqCst) {
            tracing::info!("stopping after the pass in flight");
            return Exit::Ok;
        }
        // A manifest directory replaced as a whole (not edited in place) needs a new watch.
        if watched
            .as_ref()
            .is_some_and(|(_, ino)| *ino != inode(&config.repo.url))
        {
            watched = watch_manifests(config, tx.clone());
        }
        // Containers stopping during the pass were berth's own doing; a manifest change
        // during the pass still needs a pass of its own.
        let mut changed = false;
        while let Ok(w) = rx.try_recv() {
            match w {
                Wake::Stop => return Exit::Ok,
                Wake::Manifests => changed = true,
                Wake::Drift => {}
            }
        }
        if changed {
            tokio::time::sleep(SETTLE).await;
            continue;
        }
        let wait = until_next(jittered(config.interval, passes), end.wake.as_ref());
        let woke = tokio::select! {
            () = tokio::time::sleep(wait) => None,
            w = rx.recv() => Some(w.unwrap_or(Wake::Stop)),
        };
        match woke {
            Some(Wake::Stop) => return Exit::Ok,
            Some(reason) => {
                tracing::info!(?reason, "woken before the interval");
                tokio::time::sleep(SETTLE).await;
                while let Ok(w) = rx.try_recv() {
                    if w == Wake::Stop {
                        return Exit::Ok;
                    }
                }
            }
            None => {}
        }
    }
}

fn spawn_signals(tx: mpsc::Sender<Wake>, stopping: Arc<AtomicBool>) {
    let Some(signalled) = super::stop_signal() else {
        return;
    };
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("asked to stop");
        stopping.store(true, Ordering::SeqCst);
        let _ = tx.send(Wake::Stop).await;
    });
}

/// Watches a plain-directory source; git sources change by commits and are fetched on the
/// interval.
fn watch_manifests(
    config: &AgentConfig,
    tx: mpsc::Sender<Wake>,
) -> Option<(notify::RecommendedWatcher, u64)> {
    use notify::Watcher;
    if !crate::source::is_plain_directory(&config.repo.url) {
        return None;
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(Wake::Manifests);
        }
    })
    .map_err(|e| tracing::error!(error = %e, "cannot watch the manifest directory"))
    .ok()?;
    watcher
        .watch(
            std::path::Path::new(&config.repo.url),
            notify::RecursiveMode::Recursive,
        )
        .map_err(|e| tracing::error!(error = %e, "cannot watch the manifest directory"))
        .ok()?;
    Some((watcher, inode(&config.repo.url)))
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.ino())
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How long after a pass the engine may still report that pass's own stops: it logs a
/// container's `die` once it has handled the exit, which can be after berth's stop and
/// remove calls returned.
const LATE: Duration = Duration::from_secs(1);

/// Wakes the daemon when a managed container stops, dies or goes away, unless the event is
/// the last pass's own doing (see [`is_own`]): a replace or removal by the agent causes no
/// second pass, while a container someone else stops wakes the daemon at once.
fn spawn_drift_events(
    engine: Arc<DockerEngine>,
    partner: &str,
    tx: mpsc::Sender<Wake>,
    own_until: Arc<AtomicI64>,
) {
    let mut events = engine.container_events(partner);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if is_own(&engine, &event, &own_until).await => {
                    tracing::debug!(container = %event.id, "a container event of berth's own pass");
                }
                Ok(_) => {
                    let _ = tx.try_send(Wake::Drift);
                }
                Err(e) => {
                    tracing::warn!(error = %crate::exit::chain(&e), "engine events ended; drift is caught on the interval");
                    return;
                }
            }
        }
    });
}

/// Whether an event is the last pass's own: the engine timed it before the pass ended
/// (`own_until`), or within [`LATE`] after for a container that is gone (the pass removed
/// it) or running. Events of a pass still in flight reach the channel and are dropped when
/// it ends. Someone removing a container within a second of a pass is seen on the interval.
async fn is_own(engine: &DockerEngine, event: &ContainerEvent, own_until: &AtomicI64) -> bool {
    let Some(at) = event.time_nanos else {
        return false;
    };
    let late = i64::try_from(LATE.as_nanos()).unwrap_or(i64::MAX);
    if at <= own_until.load(Ordering::SeqCst) {
        return true;
    }
    if at > own_until.load(Ordering::SeqCst).saturating_add(late) {
        return false;
    }
    let now = engine.find(&event.id).await;
    // A pass may have ended while the engine answered.
    at <= own_until.load(Ordering::SeqCst)
        || matches!(now, Ok(None) | Ok(Some(Found { running: true, .. })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth() {
        for salt in 0..200 {
            let d = jittered(Duration::from_secs(300), salt);
            assert!(
                d >= Duration::from_secs(270) && d <= Duration::from_secs(330),
                "{d:?}"
            );
        }
    }
}
