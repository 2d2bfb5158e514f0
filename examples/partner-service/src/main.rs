//! A tiny static HTTP/1.1 server playing the "partner service" in berth's
//! tests and demo. It is packed into a scratch image by `script/build-images`.
//!
//! It deliberately installs no SIGTERM handler: as PID 1 without an init it
//! ignores SIGTERM (so `docker stop` waits for the full timeout), while under
//! `docker run --init` it dies promptly.
//!
//! Environment: `PORT` (default 8080) or `LISTEN` (full address), `STATE`,
//! `STATE_FILE`, `VERSION`, `HEALTH` (`fail` makes `/health` answer 503).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// Longest request line we read; anything beyond it is ignored.
const MAX_REQUEST_LINE: u64 = 8 * 1024;

fn var_or(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn version() -> String {
    var_or("VERSION", "0.0.0")
}

/// The current state: the trimmed contents of `$STATE_FILE` if it can be
/// read, else `$STATE`, else `idle`. Re-read on every request.
fn state() -> String {
    env::var("STATE_FILE")
        .ok()
        .and_then(|path| fs::read_to_string(path).ok())
        .map_or_else(|| var_or("STATE", "idle"), |s| s.trim().to_owned())
}

/// Escapes a string for inclusion in a JSON string literal.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Maps a request to `(status line, content type, body)`.
fn route(method: &str, path: &str) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET", "/status") => {
            let body = format!(
                r#"{{"state":"{}","version":"{}"}}"#,
                json_escape(&state()),
                json_escape(&version())
            );
            ("200 OK", JSON, body)
        }
        ("GET", "/health") if env::var("HEALTH").as_deref() == Ok("fail") => {
            ("503 Service Unavailable", TEXT, "unhealthy".into())
        }
        ("GET", "/health") => ("200 OK", TEXT, "ok".into()),
        ("GET", "/version") => ("200 OK", TEXT, version()),
        _ => ("404 Not Found", TEXT, "not found".into()),
    }
}

/// Serves one request on `stream`; headers are ignored. The connection is
/// closed when the caller drops the stream.
fn handle(mut stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_REQUEST_LINE)).read_until(b'\n', &mut line)?;
    let line = String::from_utf8_lossy(&line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let path = target.split('?').next().unwrap_or(target);
    let (status, content_type, body) = route(method, path);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn main() -> ExitCode {
    let addr =
        env::var("LISTEN").unwrap_or_else(|_| format!("127.0.0.1:{}", var_or("PORT", "8080")));
    let listener = match TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("partner-service: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("partner-service {} listening on {addr}", version());
    let _ = io::stdout().flush();
    for stream in listener.incoming() {
        match stream {
            // A failed connection only concerns its own client.
            Ok(stream) => drop(thread::spawn(move || handle(&stream))),
            Err(err) => eprintln!("partner-service: accept failed: {err}"),
        }
    }
    ExitCode::SUCCESS
}
