//! A tiny static HTTP/1.1 server playing the "partner service" in berth's
//! tests and demo. It is packed into a scratch image by `script/build-images`.
//!
//! It deliberately installs no SIGTERM handler: as PID 1 without an init it
//! ignores SIGTERM (so `docker stop` waits for the full timeout), while under
//! `docker run --init` it dies promptly.
//!
//! Environment: `PORT` (default 8080) or `LISTEN` (full address), `STATE`,
//! `STATE_FILE`, `VERSION`, `HEALTH` (`fail` makes `/health` answer 503),
//! `REDIS` (`host:port`, for `/kv/<key>` and the `job` subcommand), `JOB_SLEEP`
//! and `JOB_EXIT` (the `job` subcommand).
//!
//! Subcommands: `serve check [URL]` (a healthcheck: exit 0 on a 2xx answer)
//! and `serve job` (a one-shot migration). Without one it serves.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// Longest request line or header line we read; anything beyond it is cut off.
const MAX_REQUEST_LINE: u64 = 8 * 1024;
/// Most header lines we read before giving up on a request.
const MAX_HEADERS: usize = 100;
/// Largest request body (a `PUT /kv/<key>` value) we accept.
const MAX_BODY: usize = 1024 * 1024;
/// Largest answer we read from a peer or from Redis.
const MAX_FETCH: usize = 4 * 1024 * 1024;
/// Connect and read timeout for Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout for `/peer/...` and `check`.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const BYTES: &str = "application/octet-stream";

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

/// Names a read that timed out as such (the OS says "resource temporarily unavailable").
fn timed_out(err: io::Error, timeout: Duration) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ),
        _ => err,
    }
}

/// Connects to the first address of `addr` (`host:port`) that answers within
/// `timeout`, with read and write timeouts of `timeout` too.
fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Redis over RESP on a plain TCP connection: one command per connection.
mod redis {
    use super::{connect, timed_out, MAX_FETCH, REDIS_TIMEOUT};
    use std::io::{self, BufRead, BufReader, Read, Write};

    /// A RESP reply we care about.
    #[derive(Debug)]
    pub enum Reply {
        Simple(String),
        Bulk(Option<Vec<u8>>),
    }

    fn bad(msg: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, msg.into())
    }

    /// Sends `args` as a RESP array of bulk strings and reads one reply; an
    /// error reply (`-ERR ...`) becomes an `Err`.
    pub fn command(addr: &str, args: &[&[u8]]) -> io::Result<Reply> {
        exchange(addr, args).map_err(|e| timed_out(e, REDIS_TIMEOUT))
    }

    fn exchange(addr: &str, args: &[&[u8]]) -> io::Result<Reply> {
        let mut stream = connect(addr, REDIS_TIMEOUT)?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            req.extend_from_slice(arg);
            req.extend_from_slice(b"\r\n");
        }
        stream.write_all(&req)?;
        stream.flush()?;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        (&mut reader).take(64 * 1024).read_until(b'\n', &mut line)?;
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Err(io::Error::other(format!("redis error: {rest}"))),
            "$" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|_| bad(format!("bad bulk length {rest:?}")))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).map_err(|_| bad("bulk length"))?;
                if len > MAX_FETCH {
                    return Err(bad(format!("value of {len} bytes is too large")));
                }
                let mut value = vec![0; len + 2];
                reader.read_exact(&mut value)?;
                value.truncate(len);
                Ok(Reply::Bulk(Some(value)))
            }
            "" => Err(bad("redis closed the connection without a reply")),
            _ => Err(bad(format!("unexpected redis reply {line:?}"))),
        }
    }

    pub fn set(addr: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        match command(addr, &[b"SET", key, value])? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(bad(format!("unexpected SET reply {other:?}"))),
        }
    }

    pub fn get(addr: &str, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match command(addr, &[b"GET", key])? {
            Reply::Bulk(value) => Ok(value),
            other => Err(bad(format!("unexpected GET reply {other:?}"))),
        }
    }
}

/// `GET http://host:port/path` over plain HTTP/1.1, all of it within
/// `FETCH_TIMEOUT`. Returns the status code and the body.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    // A host without a port means port 80.
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let mut stream = connect(&addr, FETCH_TIMEOUT).map_err(|e| format!("{url}: connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("{url}: send: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{url}: no complete answer within {FETCH_TIMEOUT:?}"
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("{url}: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() > MAX_FETCH {
                    return Err(format!("{url}: answer larger than {MAX_FETCH} bytes"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{url}: read: {}", timed_out(e, FETCH_TIMEOUT))),
        }
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: answer has no end of headers"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{url}: bad status line"))?;
    let mut body = answer[split + 4..].to_vec();
    let length = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length {
        body.truncate(length);
    }
    Ok((status, body))
}

type Answer = (&'static str, &'static str, Vec<u8>);

fn text(status: &'static str, body: impl Into<String>) -> Answer {
    (status, TEXT, body.into().into_bytes())
}

/// `GET`/`PUT /kv/<key>` against `$REDIS`.
fn kv(method: &str, key: &str, body: &[u8]) -> Answer {
    let Ok(addr) = env::var("REDIS") else {
        return text("503 Service Unavailable", "no redis");
    };
    if key.is_empty() {
        return text("400 Bad Request", "no key");
    }
    match method {
        "GET" => match redis::get(&addr, key.as_bytes()) {
            Ok(Some(value)) => ("200 OK", BYTES, value),
            Ok(None) => text("404 Not Found", format!("no key {key}")),
            Err(err) => text("502 Bad Gateway", format!("redis {addr}: {err}")),
        },
        "PUT" => match redis::set(&addr, key.as_bytes(), body) {
            Ok(()) => text("200 OK", "ok"),
            Err(err) => text("502 Bad Gateway", format!("redis {addr}: {err}")),
        },
        _ => text("405 Method Not Allowed", "method not allowed"),
    }
}

/// `GET /peer/<host>:<port>/<path>`: fetches `http://<host>:<port>/<path>`.
fn peer(target: &str) -> Answer {
    let (authority, path) = target
        .find('/')
        .map_or((target, ""), |i| target.split_at(i));
    let path = if path.is_empty() { "/" } else { path };
    let url = format!("http://{authority}{path}");
    match fetch(&url) {
        Ok((code, body)) if (200..300).contains(&code) => ("200 OK", BYTES, body),
        Ok((code, body)) => text(
            "502 Bad Gateway",
            format!("{url} answered {code}: {}", String::from_utf8_lossy(&body)),
        ),
        Err(err) => text("502 Bad Gateway", err),
    }
}

/// Maps a request to `(status line, content type, body)`.
fn route(method: &str, path: &str, body: &[u8]) -> Answer {
    if let Some(key) = path.strip_prefix("/kv/") {
        return kv(method, key, body);
    }
    if let Some(target) = path.strip_prefix("/peer/") {
        if method != "GET" {
            return text("405 Method Not Allowed", "method not allowed");
        }
        return peer(target);
    }
    match (method, path) {
        ("GET", "/status") => {
            let body = format!(
                r#"{{"state":"{}","version":"{}"}}"#,
                json_escape(&state()),
                json_escape(&version())
            );
            ("200 OK", JSON, body.into_bytes())
        }
        ("GET", "/health") if env::var("HEALTH").as_deref() == Ok("fail") => {
            text("503 Service Unavailable", "unhealthy")
        }
        ("GET", "/health") => text("200 OK", "ok"),
        ("GET", "/version") => text("200 OK", version()),
        _ => text("404 Not Found", "not found"),
    }
}

/// Reads one line of at most `MAX_REQUEST_LINE` bytes.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.take(MAX_REQUEST_LINE).read_until(b'\n', &mut line)?;
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Serves one request on `stream`; of the headers only `Content-Length` and
/// `Expect: 100-continue` matter. The connection is closed when the caller
/// drops the stream.
fn handle(mut stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let line = read_line(&mut reader)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let mut length = 0usize;
    let mut expect_continue = false;
    for _ in 0..MAX_HEADERS {
        let header = read_line(&mut reader)?;
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("expect") {
                expect_continue = value.eq_ignore_ascii_case("100-continue");
            }
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    let (status, content_type, body) = if length > MAX_BODY {
        text("413 Payload Too Large", "body too large")
    } else {
        if expect_continue && length > 0 {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut request_body = vec![0; length];
        reader.read_exact(&mut request_body)?;
        route(method, path, &request_body)
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

/// The address to listen on: `$LISTEN`, else `127.0.0.1:$PORT`.
fn listen_addr() -> String {
    env::var("LISTEN").unwrap_or_else(|_| format!("127.0.0.1:{}", var_or("PORT", "8080")))
}

/// `check [URL]`: GETs URL (default: this server's `/health`, on 127.0.0.1 when
/// it listens on all addresses) and exits 0 on a 2xx answer, else 1.
fn check(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let listen = listen_addr();
        let local = match listen.rsplit_once(':') {
            Some(("0.0.0.0" | "[::]" | "", port)) => format!("127.0.0.1:{port}"),
            _ => listen,
        };
        format!("http://{local}/health")
    });
    match fetch(&url) {
        Ok((code, _)) if (200..300).contains(&code) => {
            println!("check: {url} answered {code}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            println!(
                "check: {url} answered {code}: {}",
                String::from_utf8_lossy(&body).trim()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("check: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `job`: a one-shot migration. Sleeps `$JOB_SLEEP` seconds if set; exits
/// `$JOB_EXIT` if set; else, with `$REDIS`, sets `migrated` to `$VERSION`.
fn job() -> ExitCode {
    let mut done = Vec::new();
    if let Ok(secs) = env::var("JOB_SLEEP") {
        match secs.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                thread::sleep(Duration::from_secs_f64(s));
                done.push(format!("slept {secs}s"));
            }
            _ => {
                println!("job: JOB_SLEEP={secs:?} is not a number of seconds");
                return ExitCode::from(2);
            }
        }
    }
    if let Ok(code) = env::var("JOB_EXIT") {
        let Ok(code) = code.trim().parse::<u8>() else {
            println!("job: JOB_EXIT={code:?} is not an exit code (0-255)");
            return ExitCode::from(2);
        };
        done.push(format!("exiting {code} (JOB_EXIT)"));
        println!("job {}: {}", version(), done.join(", "));
        return ExitCode::from(code);
    }
    if let Ok(addr) = env::var("REDIS") {
        let v = version();
        if let Err(err) = redis::set(&addr, b"migrated", v.as_bytes()) {
            done.push(format!("cannot set migrated in redis {addr}: {err}"));
            println!("job {v}: {}", done.join(", "));
            return ExitCode::FAILURE;
        }
        done.push(format!("set migrated={v} in redis {addr}"));
    } else {
        done.push("nothing to migrate (no REDIS)".into());
    }
    println!("job {}: {}", version(), done.join(", "));
    ExitCode::SUCCESS
}

fn serve() -> ExitCode {
    let addr = listen_addr();
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

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        None => serve(),
        Some("check") => check(args.next()),
        Some("job") => job(),
        Some(other) => {
            eprintln!(
                "partner-service: unknown subcommand {other:?} (usage: serve [check [URL] | job])"
            );
            ExitCode::from(2)
        }
    }
}
