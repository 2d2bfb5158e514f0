//! `notify:` webhooks from real agents on the real engine to a real HTTP receiver on
//! loopback: one signed `updated` per update and nothing for a pass that changes nothing;
//! `rolled-back` then `held` once; a Slack-shaped body; retries past 500s; an event kept
//! while the receiver is down and delivered once when it is back; `--once` bounded when
//! the receiver hangs; `deferred-long` once; the daemon's pass child posting as `--once` does.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac as _};

use crate::common::*;

const SECRET_ENV: &str = "BERTH_TEST_HOOK_SECRET";
const SECRET: &str = "s3cret-for-the-receiver";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Request>,
    /// Statuses to answer, in turn; 200 once they run out.
    answers: VecDeque<u16>,
    /// Read the request, then never answer.
    hang: bool,
}

/// A webhook receiver on 127.0.0.1: a minimal HTTP/1.1 server, one thread per connection,
/// that records every request and answers as told. Stops when dropped.
struct Receiver {
    port: u16,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").expect("the receiver binds"))
    }

    /// On a port chosen before, which a client's connection may hold for a moment.
    fn start_on(port: u16) -> Receiver {
        let mut tries = 0;
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => return Receiver::on(listener),
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("binding {port}: {e}; again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the receiver cannot bind {port}: {e}"),
            }
        }
    }

    fn on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (inner, stop) = (inner.clone(), stop.clone());
                            std::thread::spawn(move || serve(stream, &inner, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Receiver {
            port,
            inner,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn answer(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().answers.extend(statuses);
    }

    fn hang(&self) {
        self.inner.lock().unwrap().hang = true;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, inner: &Mutex<Inner>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let (status, hang) = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(Request {
            path,
            headers,
            body,
        });
        (inner.answers.pop_front().unwrap_or(200), inner.hang)
    };
    if hang {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

/// agent.yaml over the host's manifest directory with these `notify:` entries.
fn config(host: &Host, hooks: &str) -> PathBuf {
    host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        &format!("notify:\n{hooks}"),
    )
}

fn json_hook(receiver: &Receiver) -> String {
    format!(
        "  - url: {}\n    secret_env: {SECRET_ENV}\n",
        receiver.url()
    )
}

fn agent_once(config: &Path) -> Run {
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(config)
        .env(SECRET_ENV, SECRET)
        .run()
}

fn record(host: &Host) -> serde_json::Value {
    let text = std::fs::read_to_string(host.state_dir().join("record.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn outbox(host: &Host) -> serde_json::Value {
    let text = std::fs::read_to_string(host.state_dir().join("outbox.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn signature(body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn events(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn an_update_is_posted_once_and_signed_and_a_quiet_pass_posts_nothing() {
    let receiver = Receiver::start();
    let host = Host::new("notify-update");
    host.write(&versions("=1.0.0"));
    let config = config(&host, &json_hook(&receiver));
    agent_once(&config).assert_exit(0);
    assert!(
        receiver.requests().is_empty(),
        "a first pass knows of no change: {:?}",
        receiver.requests()
    );
    let before = record(&host)["scripts"][0]["running"].clone();

    host.write(&versions("^1"));
    agent_once(&config).assert_exit(0);
    let after = record(&host);
    let requests = receiver.requests();
    assert_eq!(events(&requests), ["updated"], "{requests:?}");
    let post = &requests[0];
    assert_eq!(post.path, "/hook");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(
        post.header("x-berth-signature"),
        Some(signature(&post.body).as_str()),
        "the receiver verifies the HMAC of the raw body with the shared secret"
    );
    let body = post.json();
    assert_eq!(body["partner"], host.partner.as_str());
    assert_eq!(body["script"], "svc");
    assert!(body.get("component").is_none(), "{body:#}");
    assert_eq!(body["from"]["version"], "1.0.0");
    assert_eq!(body["from"], before, "{body:#}");
    assert_eq!(body["to"]["version"], "1.1.0");
    assert_eq!(body["to"], after["scripts"][0]["running"], "{body:#}");
    assert!(
        body["to"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d != body["from"]["digest"]),
        "{body:#}"
    );
    assert_eq!(body["at"], after["at"]);
    assert_eq!(body["state"], "in-sync");

    agent_once(&config).assert_exit(0);
    assert_eq!(
        receiver.requests().len(),
        1,
        "an unchanged pass posts nothing"
    );
    assert_eq!(outbox(&host)["pending"], serde_json::json!([]));
}

#[test]
fn a_failed_update_posts_rolled_back_then_held_once_as_json_and_slack() {
    let json = Receiver::start();
    let slack = Receiver::start();
    let host = Host::new("notify-rollback");
    host.write(&versions("=1.0.0"));
    let config = config(
        &host,
        &format!(
            "{}  - url: {}\n    format: slack\n    events: [rolled-back, held]\n",
            json_hook(&json),
            slack.url()
        ),
    );
    agent_once(&config).assert_exit(0);

    host.write(&Setup {
        versions: Some(format!("={UNHEALTHY}")),
        health_timeout: "2s",
        ..Setup::default()
    });
    agent_once(&config).assert_exit(1);
    assert_eq!(events(&json.requests()), ["rolled-back"]);
    let body = json.requests()[0].json();
    assert_eq!(body["from"]["version"], "1.0.0", "what serves again");
    assert_eq!(body["to"]["version"], UNHEALTHY, "what failed");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("health check failed")),
        "{body:#}"
    );

    agent_once(&config).assert_exit(0);
    agent_once(&config).assert_exit(0);
    assert_eq!(
        events(&json.requests()),
        ["rolled-back", "held"],
        "held is posted once, not every pass"
    );

    let texts: Vec<serde_json::Value> = slack.requests().iter().map(Request::json).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    let line = texts[0]["text"].as_str().expect("a text field");
    assert_eq!(
        texts[0].as_object().unwrap().len(),
        1,
        "only text: {texts:?}"
    );
    assert!(
        line.starts_with(&format!(
            "berth {}: svc rolled-back, 1.0.0 → {UNHEALTHY}: ",
            host.partner
        )) && line.contains("health check failed"),
        "{line}"
    );
    assert_eq!(
        texts[1]["text"],
        format!(
            "berth {}: svc held, 1.0.0 → {UNHEALTHY}: {}",
            host.partner,
            record(&host)["scripts"][0]["detail"].as_str().unwrap()
        )
    );
    assert!(
        slack.requests()[0].header("x-berth-signature").is_none(),
        "a hook without secret_env is not signed"
    );
}

#[test]
fn a_receiver_answering_500_gets_the_event_after_retries() {
    let receiver = Receiver::start();
    receiver.answer(&[500, 503]);
    let host = Host::new("notify-retry");
    host.write(&versions("=1.0.0"));
    let config = config(&host, &json_hook(&receiver));
    agent_once(&config).assert_exit(0);

    host.write(&versions("^1"));
    agent_once(&config).assert_exit(0);
    let requests = receiver.requests();
    assert_eq!(events(&requests), ["updated", "updated", "updated"]);
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same body each time"
    );
    assert_eq!(outbox(&host)["pending"], serde_json::json!([]));

    agent_once(&config).assert_exit(0);
    assert_eq!(receiver.requests().len(), 3, "delivered means delivered");
}

#[test]
fn an_event_waits_for_a_receiver_that_is_down_and_is_delivered_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let host = Host::new("notify-down");
    host.write(&versions("=1.0.0"));
    let config = config(
        &host,
        &format!("  - url: {url}\n    secret_env: {SECRET_ENV}\n"),
    );
    agent_once(&config).assert_exit(0);

    host.write(&versions("^1"));
    let out = agent_once(&config);
    out.assert_exit(0);
    assert!(
        out.text().contains("a notification was not delivered"),
        "{}",
        out.text()
    );
    assert!(
        !out.text().contains("/hook"),
        "a hook's path can be its credential: logs show scheme, host and port only\n{}",
        out.text()
    );
    let pending = outbox(&host)["pending"].clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending:#}");
    assert_eq!(pending[0]["event"]["event"], "updated");
    assert_eq!(pending[0]["tries"], 1);

    let receiver = Receiver::start_on(port);
    agent_once(&config).assert_exit(0);
    agent_once(&config).assert_exit(0);
    let requests = receiver.requests();
    assert_eq!(events(&requests), ["updated"], "exactly once");
    assert_eq!(requests[0].json(), pending[0]["event"]);
    assert_eq!(
        requests[0].header("x-berth-signature"),
        Some(signature(&requests[0].body).as_str())
    );
}

#[test]
fn agent_once_waits_at_most_10s_for_a_receiver_that_hangs() {
    let receiver = Receiver::start();
    receiver.hang();
    let host = Host::new("notify-hang");
    host.write(&versions("=1.0.0"));
    let config = config(&host, &json_hook(&receiver));
    agent_once(&config).assert_exit(0);

    host.write(&versions("^1"));
    let out = agent_once(&config);
    out.assert_exit(0);
    let ended = std::time::SystemTime::now();
    let recorded = std::fs::metadata(host.state_dir().join("record.json"))
        .unwrap()
        .modified()
        .unwrap();
    let waited = ended.duration_since(recorded).unwrap();
    assert!(
        waited >= Duration::from_secs(8) && waited <= Duration::from_secs(12),
        "the deliveries after the pass took {waited:?}; output:\n{}",
        out.text()
    );
    assert!(
        receiver.requests().len() >= 2,
        "tried again within the bound: {:?}",
        receiver.requests()
    );
    assert_eq!(host.version_label(), "1.1.0");
    let pending = outbox(&host)["pending"].clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending:#}");
}

/// Waits until `done`, failing with `what` past `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < end, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemons_pass_child_posts_too() {
    let receiver = Receiver::start();
    let host = Host::new("notify-daemon");
    host.write(&versions("=1.0.0"));
    let config = config(&host, &json_hook(&receiver));
    let mut daemon = Berth::new("agent")
        .arg("--config")
        .arg(&config)
        .env(SECRET_ENV, SECRET)
        .spawn();
    wait_until(Duration::from_secs(30), "the first version runs", || {
        host.running() && host.state_dir().join("record.json").exists()
    });
    host.write(&versions("^1"));
    wait_until(
        Duration::from_secs(30),
        "the daemon posts the update",
        || !receiver.requests().is_empty(),
    );
    run(std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]));
    let mut status = None;
    wait_until(
        Duration::from_secs(30),
        "the daemon stops on SIGTERM",
        || {
            status = daemon.try_wait().unwrap();
            status.is_some()
        },
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let requests = receiver.requests();
    assert_eq!(events(&requests), ["updated"], "{requests:?}");
    assert_eq!(requests[0].json()["to"]["version"], "1.1.0");
    assert_eq!(
        requests[0].header("x-berth-signature"),
        Some(signature(&requests[0].body).as_str())
    );
}

#[test]
fn a_long_deferral_is_posted_once() {
    let receiver = Receiver::start();
    let host = Host::new("notify-deferred");
    // An hour-long window twelve hours away: nothing may start now.
    let hour = (jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .hour()
        + 12)
        % 24;
    host.write(&Setup {
        windows: Some(format!(
            "  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"{hour:02}:00\"\n    end: \"{:02}:00\"\n",
            hour + 1
        )),
        ..versions("=1.0.0")
    });
    let config = host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        &format!("deferred_long: 2s\nnotify:\n{}", json_hook(&receiver)),
    );
    agent_once(&config).assert_exit(0);
    assert_eq!(record(&host)["scripts"][0]["state"], "deferred(window)");
    agent_once(&config).assert_exit(0);
    std::thread::sleep(Duration::from_secs(2));
    agent_once(&config).assert_exit(0);
    agent_once(&config).assert_exit(0);
    let requests = receiver.requests();
    assert_eq!(events(&requests), ["deferred-long"], "{requests:?}");
    let body = requests[0].json();
    assert_eq!(body["state"], "deferred(window)");
    assert_eq!(body["from"], serde_json::Value::Null, "nothing runs yet");
    assert_eq!(body["to"]["version"], "1.0.0");
    assert_eq!(body["since"], record(&host)["scripts"][0]["since"]);
    assert!(!host.running());
}
