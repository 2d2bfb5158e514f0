//! A real OCI registry for tests (Debian's `docker-registry`, on a free loopback port), an
//! authenticating front that makes a registry demand Basic or Bearer credentials the way
//! hosted registries do, and misbehaving registries for failure tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{docker, free_port};

/// Status, lower-cased headers and body of an HTTP answer.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.1 exchange over a fresh connection.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if header(&headers, "transfer-encoding") == Some("chunked") {
        body = dechunk(&body);
    }
    Some((status, headers, body))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Debian's `docker-registry`, storing in a temp dir; stopped when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        super::images();
        assert!(
            std::path::Path::new("/usr/bin/docker-registry").exists(),
            "Debian's docker-registry is missing: script/test installs it (apt-get install docker-registry)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while http(port, "GET", "/v2/", &[], b"").is_none_or(|(s, _, _)| s != 200) {
            assert!(
                Instant::now() < end,
                "docker-registry did not come up on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        forget_pulled(&registry.host());
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where it stores what was pushed, for a second registry to serve elsewhere.
    pub fn storage(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Pushes a local image under `repo:tag` and forgets the pushed name locally, so that
    /// berth has to pull it.
    pub fn push(&self, local: &str, repo: &str, tag: &str) {
        let target = format!("{}/{repo}:{tag}", self.host());
        for args in [
            vec!["tag", local, target.as_str()],
            vec!["push", "-q", target.as_str()],
            vec!["rmi", target.as_str()],
        ] {
            let out = Command::new("docker").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Gives an existing manifest another tag through the registry API (fast enough for
    /// the thousand tags a pagination test needs).
    pub fn retag(&self, repo: &str, from: &str, to: &str) {
        let (status, _, manifest) = http(
            self.port,
            "GET",
            &format!("/v2/{repo}/manifests/{from}"),
            &[("Accept", MANIFEST_V2)],
            b"",
        )
        .unwrap();
        assert_eq!(status, 200);
        let (status, _, body) = http(
            self.port,
            "PUT",
            &format!("/v2/{repo}/manifests/{to}"),
            &[("Content-Type", MANIFEST_V2)],
            &manifest,
        )
        .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }

    /// The manifest digest the registry reports for a tag.
    pub fn digest(&self, repo: &str, tag: &str) -> String {
        let (status, headers, _) = http(
            self.port,
            "HEAD",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", MANIFEST_V2)],
            b"",
        )
        .unwrap();
        assert_eq!(status, 200);
        header(&headers, "docker-content-digest")
            .unwrap()
            .to_owned()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        forget_pulled(&self.host());
    }
}

/// Removes the references the engine holds from `host` (berth's pulls from a registry or
/// front on that loopback port); the images themselves are shared with the local test
/// images, so only the references go. Done when a registry or front starts too: a port
/// used by an earlier one, in this run or a run before, must not find its pull already
/// made.
fn forget_pulled(host: &str) {
    let pulled = docker(&[
        "images",
        "--digests",
        "--filter",
        &format!("reference={host}/*/*"),
        "--format",
        "{{.Repository}}@{{.Digest}}",
    ]);
    for reference in pulled.lines() {
        docker(&["rmi", reference]);
    }
}

impl Drop for AuthFront {
    fn drop(&mut self) {
        forget_pulled(&self.host());
    }
}

/// How an [`AuthFront`] wants clients to authenticate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Bearer tokens from its realm, to anyone who asks.
    AnonymousToken,
    /// Bearer tokens, only for `user:pass` given as Basic to the realm.
    CredentialedToken,
    /// Basic `user:pass` on every request.
    Basic,
}

pub const USER: &str = "berth";
pub const PASS: &str = "s3cret-pass";
const TOKEN: &str = "test-token-42";

/// An HTTP front for a registry that demands authentication and counts the requests it
/// forwards; only pulls (GET, HEAD) pass through.
pub struct AuthFront {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl AuthFront {
    pub fn start(upstream: u16, mode: AuthMode) -> AuthFront {
        Self::start_with(upstream, mode, false)
    }

    /// A front that lists and resolves tags but answers 404 to manifests by digest, so
    /// the engine's pull fails after berth resolved the version.
    pub fn refusing_pulls(upstream: u16) -> AuthFront {
        Self::start_with(upstream, AuthMode::AnonymousToken, true)
    }

    fn start_with(upstream: u16, mode: AuthMode, refuse_pulls: bool) -> AuthFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    front(client, upstream, port, mode, refuse_pulls, &record)
                });
            }
        });
        let front = AuthFront { port, seen };
        forget_pulled(&front.host());
        front
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Authorized requests forwarded whose line contains `part`.
    pub fn count(&self, part: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(part))
            .count()
    }
}

fn basic_ok(auth: Option<&str>) -> bool {
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    auth == Some(&format!("Basic {want}"))
}

fn front(
    mut client: TcpStream,
    upstream: u16,
    port: u16,
    mode: AuthMode,
    refuse_pulls: bool,
    seen: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let line = request_line.trim_end().to_owned();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let auth = header(&headers, "authorization");
    let reply = |c: &mut TcpStream, status: &str, extra: &str, body: &str| {
        let _ = write!(
            c,
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    if path.starts_with("/token") {
        if mode == AuthMode::CredentialedToken && !basic_ok(auth) {
            return reply(
                &mut client,
                "401 Unauthorized",
                "",
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
        return reply(
            &mut client,
            "200 OK",
            "",
            &format!(r#"{{"token":"{TOKEN}"}}"#),
        );
    }
    let authorized = match mode {
        AuthMode::Basic => basic_ok(auth),
        _ => auth == Some(&format!("Bearer {TOKEN}")),
    };
    if !authorized {
        let repo = path
            .trim_start_matches("/v2/")
            .split("/manifests/")
            .next()
            .unwrap_or("");
        let repo = repo
            .split("/tags/")
            .next()
            .unwrap_or("")
            .split("/blobs/")
            .next()
            .unwrap_or("");
        let challenge = match mode {
            AuthMode::Basic => "WWW-Authenticate: Basic realm=\"berth-test\"\r\n".to_owned(),
            _ => format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"berth-test\",scope=\"repository:{repo}:pull\"\r\n"
            ),
        };
        return reply(
            &mut client,
            "401 Unauthorized",
            &challenge,
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        );
    }
    if method != "GET" && method != "HEAD" {
        return reply(&mut client, "405 Method Not Allowed", "", "{}");
    }
    seen.lock().unwrap().push(line.clone());
    if refuse_pulls && path.contains("/manifests/sha256:") {
        return reply(
            &mut client,
            "404 Not Found",
            "",
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
        );
    }
    if let Some((repo, query)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split_once("/tags/list"))
    {
        return page_tags(&mut client, upstream, repo, query);
    }
    pass_through(client, upstream, method, path, &headers);
}

/// Forwards an authorized request to the registry behind a front (without the front's own
/// `Authorization`) and copies the answer back.
pub fn pass_through(
    mut client: TcpStream,
    upstream: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\nConnection: close\r\n");
    for (k, v) in headers {
        if k != "host" && k != "connection" && k != "authorization" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    if up.write_all(head.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut up, &mut client);
}

/// Tags per page, whatever `n` asks: hosted registries cap pages like this, while
/// Debian's docker-registry 2.8 answers every tag at once.
const PAGE: usize = 400;

/// Serves a repository's tags in pages linked by `Link: <…>; rel="next"`, as the
/// distribution spec describes.
fn page_tags(client: &mut TcpStream, upstream: u16, repo: &str, query: &str) {
    let (_, _, body) = http(upstream, "GET", &format!("/v2/{repo}/tags/list"), &[], b"").unwrap();
    let all: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags: Vec<String> = all["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let last = query
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("last="))
        .map(str::to_owned);
    let start = last.map_or(0, |l| {
        tags.iter().position(|t| *t > l).unwrap_or(tags.len())
    });
    let page = &tags[start..(start + PAGE).min(tags.len())];
    let link = match page.last() {
        Some(l) if start + PAGE < tags.len() => {
            format!("Link: </v2/{repo}/tags/list?last={l}&n=1000>; rel=\"next\"\r\n")
        }
        _ => String::new(),
    };
    let body = serde_json::json!({ "name": repo, "tags": page }).to_string();
    let _ = write!(
        client,
        "HTTP/1.1 200 OK\r\n{link}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// How a [`BadRegistry`] misbehaves.
#[derive(Clone, Copy)]
pub enum Misbehaviour {
    /// Accepts connections and never answers.
    Silent,
    /// 429 with `Retry-After: 30`.
    RateLimited,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 and a body that never ends, to any request.
    Endless,
    /// One tag, `1.0.0`, on a page whose `Link` points back at itself.
    LinkLoop,
    /// One tag, `1.0.0`, whose manifest digest is the given (malformed) header value.
    Digest(&'static str),
}

/// A loopback server that is a registry in name only.
pub struct BadRegistry {
    pub port: u16,
    /// Requests answered so far.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl BadRegistry {
    pub fn start(how: Misbehaviour) -> BadRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let counted = std::sync::Arc::clone(&counted);
                // Each client on its own thread: one endless answer must not hold up the next.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let n = c.read(&mut buf).unwrap_or(0);
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = request.split(' ').nth(1).unwrap_or("/").to_owned();
                    match how {
                        Misbehaviour::Silent => std::thread::sleep(Duration::from_secs(120)),
                        Misbehaviour::RateLimited => {
                            let _ = c.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        }
                        Misbehaviour::Garbage => {
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<html>oops!");
                        }
                        Misbehaviour::Endless => {
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"tags\":[\"");
                            let chunk = vec![b'a'; 64 << 10];
                            // Until berth hangs up, or for a minute at most.
                            let end = std::time::Instant::now() + Duration::from_secs(60);
                            while std::time::Instant::now() < end && c.write_all(&chunk).is_ok() {}
                        }
                        Misbehaviour::LinkLoop => {
                            let body = r#"{"name":"x","tags":["1.0.0"]}"#;
                            let _ = write!(
                                c,
                                "HTTP/1.1 200 OK\r\nLink: <{path}>; rel=\"next\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Misbehaviour::Digest(digest) => {
                            if path.contains("/tags/list") {
                                let body = r#"{"name":"x","tags":["1.0.0"]}"#;
                                let _ = write!(
                                    c,
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                );
                            } else {
                                let _ = write!(
                                    c,
                                    "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                );
                            }
                        }
                    }
                });
            }
        });
        BadRegistry { port, requests }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
