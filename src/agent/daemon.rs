//! `berth agent` without `--once`: a pass on the interval (with jitter, so a fleet does not
//! hit its registry in step) or sooner when the last pass asked for it (a window opening, a
//! busy service to ask again), within a second of a change to a local manifest directory,
//! and when a managed container stops (drift); `/status` and `/metrics` on the configured
//! loopback address; SIGTERM finishes the step in flight, then exits. Why a pass was woken
//! is logged, never handed to the pass: every pass does the same whole job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::config::AgentConfig;
use super::run_once;
use super::status::Status;
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::probe::Http;

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
fn until_next(interval: Duration, wake: Option<crate::reconcile::Wake>) -> Duration {
    let Some(wake) = wake else {
        return interval;
    };
    let left = jiff::Timestamp::now().duration_until(wake.at);
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    let wait = left.max(Duration::from_secs(1));
    if wait < interval {
        tracing::info!(why = wake.why, at = %wake.at, "next pass before the interval");
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
    spawn_drift_events(&engine, &config.partner, tx.clone());
    if let Some(addr) = config.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving /status and /metrics");
                tokio::spawn(serve(listener, config.state_dir.clone()));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                return Exit::CannotRun;
            }
        }
    }

    let http = Http::default();
    let mut passes = 0u64;
    loop {
        passes += 1;
        let end = run_once(config, &engine, &http, &stopping).await;
        tracing::info!(exit = end.exit.code(), "pass finished");
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
        let wait = until_next(jittered(config.interval, passes), end.wake);
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
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
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

fn spawn_drift_events(engine: &DockerEngine, partner: &str, tx: mpsc::Sender<Wake>) {
    let mut events = engine.container_events(partner);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(()) => {
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

/// Serves `/status` (the status document) and `/metrics` (Prometheus text) from the state
/// dir, so they agree with `berth status` and survive restarts.
async fn serve(listener: tokio::net::TcpListener, state_dir: std::path::PathBuf) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let state_dir = state_dir.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let read_head = async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&head);
            let path = request.split(' ').nth(1).unwrap_or("/");
            let status = Status::read(&state_dir).ok().flatten();
            let (code, kind, body) = match (path, status) {
                ("/status", Some(s)) => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string_pretty(&s).expect("status serializes"),
                ),
                ("/metrics", Some(s)) => ("200 OK", "text/plain; version=0.0.4", metrics(&s)),
                ("/status" | "/metrics", None) => (
                    "503 Service Unavailable",
                    "text/plain",
                    "no pass has run yet\n".into(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /status or /metrics\n".into(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// The Prometheus exposition of a status.
pub fn metrics(s: &Status) -> String {
    use std::fmt::Write as _;
    let p = &s.partner;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(out, "{name}{{partner=\"{p}\"{labels}}} {value}");
        }
    };
    let c = &s.counters;
    metric(
        "berth_passes_total",
        "counter",
        "Passes run.",
        vec![(String::new(), c.passes as f64)],
    );
    metric(
        "berth_pass_failures_total",
        "counter",
        "Passes that did not exit 0.",
        vec![(String::new(), c.failures as f64)],
    );
    metric(
        "berth_updates_total",
        "counter",
        "Containers created, replaced or started.",
        vec![(String::new(), c.updates as f64)],
    );
    metric(
        "berth_rollbacks_total",
        "counter",
        "Replaces rolled back after a failed health check.",
        vec![(String::new(), c.rollbacks as f64)],
    );
    metric(
        "berth_deferrals_total",
        "counter",
        "Steps deferred, by reason.",
        c.deferrals
            .iter()
            .map(|(r, n)| (format!(",reason=\"{r}\""), *n as f64))
            .collect(),
    );
    metric(
        "berth_pending_changes",
        "gauge",
        "Changes planned but not made.",
        vec![(String::new(), s.pending as f64)],
    );
    let last_success = s
        .last_success
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0.0, |t| t.as_second() as f64);
    metric(
        "berth_last_success_timestamp_seconds",
        "gauge",
        "When a pass last exited 0.",
        vec![(String::new(), last_success)],
    );
    let exit = s.last_pass.as_ref().map_or(-1.0, |l| f64::from(l.exit));
    metric(
        "berth_last_pass_exit_code",
        "gauge",
        "Exit code of the last pass.",
        vec![(String::new(), exit)],
    );
    out
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

    #[test]
    fn metrics_text() {
        let mut s = Status {
            partner: "p".into(),
            pending: 2,
            ..Status::default()
        };
        s.counters.passes = 3;
        s.counters.deferrals.insert("window".into(), 4);
        s.last_success = Some("2026-11-21T00:00:00Z".into());
        let text = metrics(&s);
        assert!(
            text.contains("berth_passes_total{partner=\"p\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("berth_deferrals_total{partner=\"p\",reason=\"window\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("berth_pending_changes{partner=\"p\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("berth_last_success_timestamp_seconds{partner=\"p\"} 1795219200\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE berth_rollbacks_total counter\n"),
            "{text}"
        );
    }
}
