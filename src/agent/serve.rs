//! `/status` (the status document) and `/metrics` (Prometheus text), read from the state
//! dir so they agree with `berth status` and survive restarts. Plain HTTP/1.1, one request
//! per connection: GET and HEAD only, the query string ignored.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::status::Status;

/// The first pause after a failed accept, doubled on each further failure up to
/// [`MAX_PAUSE`]. Out of file descriptors, the pending connection stays in the backlog
/// and accept fails again at once: retrying without a pause would spin a core until
/// connections close.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, state_dir: PathBuf) {
    let mut pause = FIRST_PAUSE;
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                pause = FIRST_PAUSE;
                tokio::spawn(answer(socket, state_dir.clone()));
            }
            Err(e) => {
                if pause == FIRST_PAUSE {
                    tracing::warn!(error = %e, "cannot accept a connection on the status address; retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

async fn answer(mut socket: TcpStream, state_dir: PathBuf) {
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
    if tokio::time::timeout(HEAD_TIMEOUT, read_head).await.is_err() {
        return;
    }
    let request = String::from_utf8_lossy(&head);
    let line = request.lines().next().unwrap_or_default();
    let response = respond(line, || Status::read(&state_dir).ok().flatten());
    let _ = socket.write_all(&response).await;
}

/// The whole answer to a request line; the status is read only for a request that needs it.
fn respond(request_line: &str, status: impl FnOnce() -> Option<Status>) -> Vec<u8> {
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or("/");
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let known = matches!(path, "/status" | "/metrics");
    let (code, kind, body, allow) = if !known {
        (
            "404 Not Found",
            "text/plain",
            "try /status or /metrics\n".to_owned(),
            false,
        )
    } else if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            format!("{path} answers GET and HEAD\n"),
            true,
        )
    } else {
        match (path, status()) {
            ("/status", Some(s)) => (
                "200 OK",
                "application/json",
                serde_json::to_string_pretty(&s).expect("status serializes"),
                false,
            ),
            (_, Some(s)) => ("200 OK", "text/plain; version=0.0.4", metrics(&s), false),
            (_, None) => (
                "503 Service Unavailable",
                "text/plain",
                "no pass has run yet\n".to_owned(),
                false,
            ),
        }
    };
    let allow = if allow { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
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
    metric(
        "berth_refused_scripts",
        "gauge",
        "Scripts the host's floor or policy refused in the last pass.",
        vec![(
            String::new(),
            s.scripts
                .iter()
                .filter(|x| x.state == "refused")
                .map(|x| x.script.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len() as f64,
        )],
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
    fn metrics_text() {
        let mut s = Status {
            partner: "p".into(),
            pending: 2,
            ..Status::default()
        };
        s.counters.passes = 3;
        s.counters.deferrals.insert("window".into(), 4);
        s.last_success = Some("2026-11-21T00:00:00Z".into());
        for (script, state) in [("a", "refused"), ("b", "in-sync"), ("c", "refused")] {
            s.scripts.push(crate::agent::status::ScriptStatus {
                script: script.into(),
                component: None,
                version: None,
                state: state.into(),
                detail: String::new(),
                tasks: None,
            });
        }
        let text = metrics(&s);
        assert!(
            text.contains("berth_refused_scripts{partner=\"p\"} 2\n"),
            "{text}"
        );
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

    fn text(request_line: &str, status: Option<Status>) -> String {
        String::from_utf8(respond(request_line, || status)).unwrap()
    }

    #[test]
    fn get_and_head_only_and_the_query_ignored() {
        let s = || {
            Some(Status {
                partner: "p".into(),
                ..Status::default()
            })
        };
        let get = text("GET /status?pretty=1 HTTP/1.1", s());
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        assert!(get_body.contains("\"partner\": \"p\""), "{get}");

        let head = text("HEAD /status HTTP/1.1", s());
        assert_eq!(head, format!("{get_head}\r\n\r\n"), "same headers, no body");

        for method in ["POST", "DELETE", "PUT"] {
            let refused = text(&format!("{method} /metrics HTTP/1.1"), s());
            assert!(
                refused.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
                "{refused}"
            );
            assert!(refused.contains("\r\nAllow: GET, HEAD\r\n"), "{refused}");
        }
        assert!(text("GET /nope?x HTTP/1.1", s()).starts_with("HTTP/1.1 404 "));
        assert!(text("GET /metrics HTTP/1.1", None).starts_with("HTTP/1.1 503 "));
    }
}
