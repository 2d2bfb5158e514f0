//! The ECR API stand-in: `moto_server` (PyPI `moto[server]`) on a free loopback port, one per
//! test binary, and a small front in front of it that each test owns.
//!
//! moto answers `DescribeImages` in one page whatever the size, and hands out authorization
//! tokens that expired in 2015. The front makes it behave like ECR where the tests need it:
//! it pages `DescribeImages` (`maxResults`, default 100, and `nextToken`, as ECR does), can
//! give tokens a lifetime, and counts every API call by name.
//!
//! One moto serves the tests of a binary that run at the same time: each holds it (through
//! its [`Front`]), and the last one to let go stops it and waits for it to exit. moto is
//! started through `sh`, which holds the read end of a pipe whose write end only this
//! process has: when the pipe closes (the holder drops it, or the test binary dies however
//! it dies), `sh` stops moto by its pid. Nothing outlives `cargo test`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// moto's account id, which every ECR registry host in the tests must carry.
pub const ACCOUNT: &str = "123456789012";
/// Access key the tests (and the `berth` they run) sign with; moto accepts anything.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
/// `DescribeImages` page size when the caller gives no `maxResults` (ECR's default).
pub const DEFAULT_PAGE: usize = 100;

/// The ECR registry host for a region, with moto's account.
pub fn registry(region: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{region}.amazonaws.com")
}

/// A running `moto_server`. Tests share one while any of them holds it; when the last
/// holder drops it, it is stopped and waited for.
pub struct MotoServer {
    pub port: u16,
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing the pipe makes `sh` stop moto, wait for it, and exit.
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("moto_server on port {} did not stop within 20s", self.port);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared `moto_server`, started (and waited for) when no test holds one.
pub fn moto() -> Arc<MotoServer> {
    static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = shared.upgrade() {
        return m;
    }
    let m = Arc::new(start_moto());
    *shared = Arc::downgrade(&m);
    m
}

fn start_moto() -> MotoServer {
    let found = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "moto_server is not on PATH: the ECR tests need it (script/test installs it: pip install 'moto[server]')"
    );
    let port = super::free_port();
    let log = std::env::temp_dir().join(format!("berth-moto-{}-{port}.log", std::process::id()));
    // `read` returns when this process's end of the pipe closes (it exits, or panics its way
    // out); then moto is stopped by its own pid and its log removed.
    let script = r#"moto_server -H 127.0.0.1 -p "$0" </dev/null >"$1" 2>&1 &
m=$!
read -r _ || true
kill "$m" 2>/dev/null
wait "$m" 2>/dev/null
rm -f "$1""#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts");
    let lifeline = child.stdin.take().expect("piped stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if super::http_get(port, "/moto-api/").is_some() {
            break;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "moto_server did not come up on 127.0.0.1:{port} ({}); its output:\n{out}",
                if exited.is_some() {
                    "it exited"
                } else {
                    "60s passed"
                }
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    MotoServer {
        port,
        child,
        lifeline: Some(lifeline),
    }
}

/// A runtime for the SDK calls a test makes itself.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The credentials the tests sign with, as the SDK takes them.
pub fn credentials() -> Credentials {
    Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "berth-tests")
}

/// An ECR client talking straight to moto, for seeding and for reading back what moto says.
pub async fn client(moto: &MotoServer, region: &str) -> aws_sdk_ecr::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
        .credentials_provider(credentials())
        .http_client(http)
        .build();
    aws_sdk_ecr::Client::from_conf(conf)
}

/// A Docker v2 image manifest moto accepts. moto's digest is the hash of the layer digests,
/// so a distinct `n` gives a distinct digest.
pub fn manifest(n: u64) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": format!("sha256:{:064x}", n),
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 2,
            "digest": format!("sha256:{:064x}", n + (1 << 32)),
        }],
    })
    .to_string()
}

/// Creates a repository and pushes images to it in order: each entry is the tags of one
/// image. Returns every tag with the digest moto gave its image.
pub fn seed(
    moto: &MotoServer,
    region: &str,
    repository: &str,
    images: &[Vec<String>],
) -> Vec<(String, String)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    runtime().block_on(async {
        let ecr = client(moto, region).await;
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_repository {repository}: {e:?}"));
        let mut out = Vec::new();
        for tags in images {
            let body = manifest(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            for tag in tags {
                let put = ecr
                    .put_image()
                    .repository_name(repository)
                    .image_manifest(&body)
                    .image_tag(tag)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put_image {repository}:{tag}: {e:?}"));
                let digest = put
                    .image()
                    .and_then(|i| i.image_id())
                    .and_then(|i| i.image_digest())
                    .expect("put_image answers with a digest")
                    .to_owned();
                out.push((tag.clone(), digest));
            }
        }
        out
    })
}

/// What moto itself says the digest of a tag is (one `DescribeImages` by tag).
pub fn digest_of(moto: &MotoServer, region: &str, repository: &str, tag: &str) -> String {
    runtime().block_on(async {
        let out = client(moto, region)
            .await
            .describe_images()
            .repository_name(repository)
            .image_ids(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_tag(tag)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe_images {repository}:{tag}: {e:?}"));
        out.image_details()
            .first()
            .and_then(|d| d.image_digest())
            .unwrap_or_else(|| panic!("moto has no image {repository}:{tag}"))
            .to_owned()
    })
}

/// Per-test front for moto: pages `DescribeImages`, sets token lifetimes, counts calls.
pub struct Front {
    pub port: u16,
    calls: Arc<Mutex<Vec<String>>>,
    moto: Arc<MotoServer>,
}

#[derive(Clone, Copy, Default)]
pub struct FrontConfig {
    /// Lifetime of the tokens `GetAuthorizationToken` hands out; None keeps moto's answer
    /// (expired in 2015).
    pub token_ttl: Option<Duration>,
    /// An answer (HTTP status, body) every `DescribeImages` gets instead of moto's, to play
    /// a refusing, throttling or broken ECR.
    pub describe_images: Option<(u16, &'static str)>,
}

impl Front {
    pub fn start(config: FrontConfig) -> Front {
        let moto = moto();
        let upstream = moto.port;
        let listener = TcpListener::bind("127.0.0.1:0").expect("front binds");
        let port = listener.local_addr().expect("front address").port();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = Arc::clone(&calls);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let _ = serve(client, upstream, config, &seen);
                });
            }
        });
        Front { port, calls, moto }
    }

    /// The moto this front passes calls to (kept running while the front lives).
    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    /// `AWS_ENDPOINT_URL` for this front.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many calls of an operation (`DescribeImages`, `GetAuthorizationToken`) it passed on.
    pub fn count(&self, operation: &str) -> usize {
        self.calls
            .lock()
            .expect("front calls")
            .iter()
            .filter(|c| *c == operation)
            .count()
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("front calls").clone()
    }
}

/// An HTTP/1.1 message: first line, headers, body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads one message; a body by `Content-Length`, chunks, or (responses) to the end.
    fn read(r: &mut impl BufRead, response: bool) -> std::io::Result<Option<Message>> {
        let mut start = String::new();
        if r.read_line(&mut start)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let mut m = Message {
            start: start.trim_end().to_owned(),
            headers,
            body: Vec::new(),
        };
        if let Some(n) = m
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            m.body.resize(n, 0);
            r.read_exact(&mut m.body)?;
        } else if m
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                m.body.extend_from_slice(&chunk[..n]);
            }
        } else if response {
            r.read_to_end(&mut m.body)?;
        }
        Ok(Some(m))
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut head = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            let k_low = k.to_ascii_lowercase();
            if matches!(
                k_low.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                continue;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        w.write_all(head.as_bytes())?;
        w.write_all(&self.body)?;
        w.flush()
    }
}

/// One request per connection: pass it to moto, adjust the answer, close.
fn serve(
    client: TcpStream,
    upstream: u16,
    config: FrontConfig,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(request) = Message::read(&mut reader, false)? else {
        return Ok(());
    };
    let operation = request
        .header("x-amz-target")
        .and_then(|t| t.rsplit_once('.'))
        .map(|(_, op)| op.to_owned())
        .unwrap_or_default();
    seen.lock().expect("front calls").push(operation.clone());
    if operation == "DescribeImages"
        && let Some((status, body)) = config.describe_images
    {
        let canned = Message {
            start: format!("HTTP/1.1 {status} Canned"),
            headers: vec![("Content-Type".into(), "application/x-amz-json-1.1".into())],
            body: body.as_bytes().to_vec(),
        };
        return canned.write(&mut &client);
    }

    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    request.write(&mut server)?;
    let mut answer = Message::read(&mut BufReader::new(server), true)?
        .ok_or_else(|| std::io::Error::other("moto closed without answering"))?;
    let ok = answer.start.split(' ').nth(1) == Some("200");
    if ok && operation == "DescribeImages" {
        answer.body = page(&request.body, &answer.body);
    } else if ok
        && operation == "GetAuthorizationToken"
        && let Some(ttl) = config.token_ttl
    {
        answer.body = with_expiry(&answer.body, SystemTime::now() + ttl);
    }
    answer.write(&mut &client)
}

/// One page of moto's full `DescribeImages` answer, by the request's `nextToken` (an offset
/// this front handed out) and `maxResults`.
fn page(request: &[u8], answer: &[u8]) -> Vec<u8> {
    let req: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
    let mut doc: serde_json::Value = serde_json::from_slice(answer).expect("moto answers JSON");
    let all = doc["imageDetails"].as_array().cloned().unwrap_or_default();
    let from = req["nextToken"]
        .as_str()
        .and_then(|t| t.strip_prefix("offset-"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(all.len());
    let size = req["maxResults"]
        .as_u64()
        .map_or(DEFAULT_PAGE, |n| n as usize)
        .max(1);
    let to = (from + size).min(all.len());
    doc["imageDetails"] = serde_json::Value::Array(all[from..to].to_vec());
    if to < all.len() {
        doc["nextToken"] = format!("offset-{to}").into();
    } else if let Some(o) = doc.as_object_mut() {
        o.remove("nextToken");
    }
    serde_json::to_vec(&doc).expect("JSON")
}

/// The `GetAuthorizationToken` answer with every token expiring at `at`.
fn with_expiry(answer: &[u8], at: SystemTime) -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(answer).expect("moto answers JSON");
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    if let Some(data) = doc["authorizationData"].as_array_mut() {
        for d in data {
            d["expiresAt"] = secs.into();
        }
    }
    serde_json::to_vec(&doc).expect("JSON")
}
