//! The agent's edges against real parts: the `/status` server out of file descriptors and
//! asked with other methods; a git remote and a credential helper that hang; partner and
//! script names YAML reads as something else; Docker Hub names and identity tokens against
//! a loopback Bearer registry; drift the agent caused itself versus a real `docker stop`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::registry::{AuthFront, AuthMode, Registry, http};
use crate::common::*;

/// A daemon over the host's plain manifest directory, serving on `listen`.
fn plain_config(host: &Host, listen: u16) -> PathBuf {
    host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        &format!("listen: 127.0.0.1:{listen}\n"),
    )
}

/// A host whose partner runs nothing, for tests of the daemon itself.
fn quiet_host(tag: &str) -> Host {
    let host = Host::new(tag);
    host.write(&Setup {
        opted_in: false,
        idle: false,
        ..Setup::default()
    });
    host
}

fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < end,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `berth agent` as a daemon, its JSON log in a file; killed if a test ends without
/// stopping it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(host: &Host, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let cmd = Berth::new("agent").arg("--config").arg(config).command();
        Self::start(host, cmd, env)
    }

    /// The daemon under `ulimit -n limit` (the shell execs it, so the pid is berth's).
    fn spawn_with_fd_limit(host: &Host, config: &Path, limit: u32) -> Daemon {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" agent --config \"$1\""
            ))
            .arg(BIN)
            .arg(config);
        Self::start(host, cmd, &[])
    }

    fn start(host: &Host, mut cmd: Command, env: &[(&str, &str)]) -> Daemon {
        let log = host.dir.path().join("agent.log");
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("the daemon starts"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines whose message is exactly `message`.
    fn count(&self, message: &str) -> usize {
        let field = format!("\"message\":\"{message}\"");
        self.log().lines().filter(|l| l.contains(&field)).count()
    }

    /// User plus system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of proc(5), 12 and 13 after the command name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Sends SIGTERM; the exit code, or None if it has not exited within `limit`.
    fn terminate(&mut self, limit: Duration) -> Option<i32> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path as the `&str` a command line takes (test paths are UTF-8).
fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Out of file descriptors, the accept loop waits instead of spinning a core, and
/// answers again once connections close.
#[test]
fn status_server_backs_off_when_out_of_file_descriptors() {
    let host = quiet_host("fds");
    let listen = free_port();
    let daemon = Daemon::spawn_with_fd_limit(&host, &plain_config(&host, listen), 40);
    until("the first pass", Duration::from_secs(20), || {
        daemon.count("pass finished") >= 1
    });
    assert_eq!(
        wait_for(listen, "/status", Duration::from_secs(5)).map(|a| a.0),
        Some(200)
    );

    let held: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(("127.0.0.1", listen)).expect("the backlog takes it"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = daemon.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = daemon.cpu_ticks() - before;
    assert!(
        used < 30,
        "the daemon used {used} ticks of CPU in 3s with 60 connections open; log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("cannot accept a connection on the status address"),
        "the fd limit was reached: {}",
        daemon.log()
    );

    drop(held);
    let answer = wait_for(listen, "/status", Duration::from_secs(5));
    assert_eq!(answer.map(|a| a.0), Some(200), "answers again");
}

/// GET and HEAD (same headers, no body) with the query string ignored; 405 with `Allow`
/// for anything else.
#[test]
fn status_answers_get_and_head_only_whatever_the_query() {
    let host = quiet_host("methods");
    let listen = free_port();
    let daemon = Daemon::spawn(&host, &plain_config(&host, listen), &[]);
    until("the first pass", Duration::from_secs(20), || {
        daemon.count("pass finished") >= 1
    });

    let (status, _, body) = http(listen, "GET", "/status?verbose=1", &[], b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["partner"], host.partner.as_str());

    let (status, headers, head_body) = http(listen, "HEAD", "/status", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(head_body.is_empty(), "HEAD has no body");
    assert_eq!(
        header(&headers, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(header(&headers, "content-type"), Some("application/json"));

    let (status, _, metrics) = http(listen, "GET", "/metrics?name[]=x", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&metrics).contains("berth_passes_total{partner="),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    let (status, _, body) = http(listen, "HEAD", "/metrics?x", &[], b"").unwrap();
    assert_eq!((status, body.len()), (200, 0));

    for (method, path) in [
        ("POST", "/status"),
        ("DELETE", "/metrics"),
        ("PUT", "/status?x=1"),
    ] {
        let (status, headers, _) = http(listen, method, path, &[], b"").unwrap();
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(
            header(&headers, "allow"),
            Some("GET, HEAD"),
            "{method} {path}"
        );
    }
    assert_eq!(
        http(listen, "GET", "/nope?status", &[], b"").map(|a| a.0),
        Some(404)
    );
}

/// A loopback listener that accepts connections and never answers, counting them.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn silent_remote() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(c);
        }
    });
    Silent { port, accepted }
}

fn hanging_git_config(host: &Host, remote: &Silent, listen: u16) -> PathBuf {
    host.agent_config(
        &format!(
            "  url: http://127.0.0.1:{}/fleet.git\n  branch: main\n",
            remote.port
        ),
        &format!("listen: 127.0.0.1:{listen}\n"),
    )
}

/// While git waits on a remote that never answers, `/status` answers at once; the fetch
/// gives up after `BERTH_GIT_TIMEOUT` and says so.
#[test]
fn a_hanging_git_remote_leaves_status_answering_and_times_out() {
    let host = Host::new("githang");
    let remote = silent_remote();
    let listen = free_port();
    let config = hanging_git_config(&host, &remote, listen);
    let daemon = Daemon::spawn(&host, &config, &[("BERTH_GIT_TIMEOUT", "3")]);
    until("the fetch connecting", Duration::from_secs(10), || {
        remote.accepted.load(Ordering::SeqCst) >= 1
    });
    let connected = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    let answer = http_get(listen, "/status");
    let took = asked.elapsed();
    assert_eq!(
        answer.map(|a| a.0),
        Some(503),
        "/status answers (no pass has finished yet) while git waits"
    );
    assert!(took < Duration::from_secs(1), "/status took {took:?}");
    assert_eq!(
        daemon.count("cannot get the manifests"),
        0,
        "the fetch is still waiting"
    );

    until("the fetch giving up", Duration::from_secs(15), || {
        daemon.count("cannot get the manifests") >= 1
    });
    let gave_up = connected.elapsed();
    assert!(
        gave_up >= Duration::from_millis(2500) && gave_up < Duration::from_secs(10),
        "gave up after {gave_up:?}, not after the 3s timeout"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "http://127.0.0.1:{}/fleet.git did not answer within 3s (BERTH_GIT_TIMEOUT)",
            remote.port
        )),
        "{log}"
    );
    // The failed pass's status is written as its child ends; a loaded machine may take a
    // few seconds to get there.
    assert_eq!(
        wait_for(listen, "/status", Duration::from_secs(10)).map(|a| a.0),
        Some(200)
    );
}

/// SIGTERM during a fetch that would wait the whole default timeout stops the daemon at
/// once.
#[test]
fn sigterm_during_a_hanging_fetch_stops_the_daemon_promptly() {
    let host = Host::new("gitterm");
    let remote = silent_remote();
    let listen = free_port();
    let config = hanging_git_config(&host, &remote, listen);
    let mut daemon = Daemon::spawn(&host, &config, &[]);
    until("the fetch connecting", Duration::from_secs(10), || {
        remote.accepted.load(Ordering::SeqCst) >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    // The fetch runs in a child of the daemon, which must not outlive it.
    let fetching = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| {
                let c = String::from_utf8_lossy(c);
                c.contains("agent-fetch") && c.contains(&*config.to_string_lossy())
            })
            .count()
    };
    assert_eq!(fetching(), 1, "one fetch child while the remote hangs");
    let asked = Instant::now();
    assert_eq!(
        daemon.terminate(Duration::from_secs(3)),
        Some(0),
        "the daemon did not stop on SIGTERM within 3s; log:\n{}",
        daemon.log()
    );
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert!(daemon.log().contains("asked to stop"), "{}", daemon.log());
    until("the fetch child gone", Duration::from_secs(2), || {
        fetching() == 0
    });
}

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A Docker config dir with `config.json`, and a bin dir to put credential helpers in.
fn docker_config(host: &Host, json: &str) -> (PathBuf, PathBuf) {
    let config = host.dir.path().join("docker");
    let bin = host.dir.path().join("bin");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(config.join("config.json"), json).unwrap();
    (config, bin)
}

fn oci(registry: &str, versions: &str) -> Setup {
    Setup {
        versions: Some(versions.into()),
        image: Some(format!(
            "  source: oci\n  registry: {registry}\n  repository: gh/svc\n"
        )),
        ..Setup::default()
    }
}

/// A credential helper that never answers is stopped after 10s with a message naming it;
/// the pass goes on without its credentials.
#[test]
fn a_hanging_credential_helper_is_given_up_by_name() {
    let front = AuthFront::start(free_port(), AuthMode::CredentialedToken);
    let host = Host::new("helperhang");
    host.write(&oci(&front.host(), "^1"));
    let (config, bin) = docker_config(
        &host,
        &format!(r#"{{"credHelpers": {{"{}": "hang"}}}}"#, front.host()),
    );
    executable(
        &bin.join("docker-credential-hang"),
        "#!/bin/sh\nexec sleep 300\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let started = Instant::now();
    let (out, _) = Berth::new("plan")
        .arg(host.repo())
        .args(["--partner", &host.partner])
        .arg("--state-dir")
        .arg(host.state_dir())
        .env("DOCKER_CONFIG", &config)
        .env("PATH", &path)
        .run_watching_memory(Duration::from_secs(40));
    assert!(out.code().is_some(), "berth plan gives up on the helper");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(25),
        "took {took:?}"
    );
    assert!(
        out.text().contains(
            "credential helper docker-credential-hang did not answer within 10s and was stopped"
        ),
        "{}",
        out.text()
    );
    out.assert_exit(3);
    assert!(
        out.text()
            .contains(&format!("registry {} refused access", front.host())),
        "anonymous after the helper: {}",
        out.text()
    );
}

/// Removes the containers of the fixed partner `null` when created and dropped.
struct NullPartner;

impl NullPartner {
    fn new() -> NullPartner {
        remove_partner_containers("null");
        NullPartner
    }
}

impl Drop for NullPartner {
    fn drop(&mut self) {
        remove_partner_containers("null");
    }
}

/// A partner named `null` running a script named `true`: `berth lock` writes a lock that
/// `berth lock --check` and `berth apply` read back.
#[test]
fn a_partner_null_with_a_script_true_locks_and_applies() {
    images();
    let _guard = NullPartner::new();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("partners")).unwrap();
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    let port = free_port();
    std::fs::write(
        repo.join("partners/null.yaml"),
        "apiVersion: berth/v1\nkind: Partner\nname: \"null\"\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\nscripts:\n  - script: \"true\"\n    versions: \"=1.0.0\"\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("scripts/true.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Script\nname: \"true\"\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
             versions: \"*\"\ncontainer:\n  env: {{ PORT: \"{port}\" }}\n  network: host\n  stop_timeout: 5s\n\
             health:\n  http: http://127.0.0.1:{port}/health\n  timeout: 10s\n"
        ),
    )
    .unwrap();
    let berth = |args: &[&str]| {
        Berth::new(args[0])
            .args(&args[1..])
            .env("BERTH_LOG", "warn")
            .run()
    };
    let repo_arg = path_str(&repo);
    berth(&["lock", repo_arg]).assert_exit(0);
    let lock = std::fs::read_to_string(repo.join("berth.lock")).unwrap();
    assert!(
        lock.contains("\n  \"null\":\n    \"true\": { version: \"1.0.0\", "),
        "{lock}"
    );
    let check = berth(&["lock", "--check", repo_arg]);
    check.assert_exit(0);

    let state = dir.path().join("state");
    let apply = berth(&[
        "apply",
        repo_arg,
        "--partner",
        "null",
        "--state-dir",
        path_str(&state),
    ]);
    apply.assert_exit(0);
    let name = "berth-null-true";
    assert_eq!(inspect(name, "{{.State.Running}}"), "true");
    assert_eq!(
        inspect(name, "{{index .Config.Labels \"berth.partner\"}}"),
        "null"
    );
    assert_eq!(
        inspect(name, "{{index .Config.Labels \"berth.version\"}}"),
        "1.0.0"
    );
    assert_eq!(
        inspect(name, "{{index .Config.Labels \"berth.digest\"}}"),
        image_id("1.0.0")
    );
    assert_eq!(
        wait_for(port, "/version", Duration::from_secs(5)).map(|a| a.1),
        Some("1.0.0".to_owned())
    );
}

const IDENTITY_TOKEN: &str = "identity-token-17";
const ACCESS_TOKEN: &str = "access-token-99";

/// A registry front whose token service only takes OAuth2 refresh tokens (how Docker
/// clients spend an identity token), by POST; it forwards authorized pulls to `upstream`
/// and counts token grants and refusals.
struct RefreshTokenFront {
    port: u16,
    granted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl RefreshTokenFront {
    fn start(upstream: u16) -> RefreshTokenFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let granted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (g, r) = (Arc::clone(&granted), Arc::clone(&refused));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (g, r) = (Arc::clone(&g), Arc::clone(&r));
                std::thread::spawn(move || refresh_front(client, upstream, port, &g, &r));
            }
        });
        RefreshTokenFront {
            port,
            granted,
            refused,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn refresh_front(
    mut client: TcpStream,
    upstream: u16,
    port: u16,
    granted: &AtomicUsize,
    refused: &AtomicUsize,
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
    let length: usize = header(&headers, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reply = |c: &mut TcpStream, status: &str, extra: &str, body: &str| {
        let _ = write!(
            c,
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    if path.starts_with("/token") {
        let form: Vec<(&str, &str)> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let has = |k: &str, v: &str| form.contains(&(k, v));
        if method == "POST"
            && has("grant_type", "refresh_token")
            && has("refresh_token", IDENTITY_TOKEN)
        {
            granted.fetch_add(1, Ordering::SeqCst);
            return reply(
                &mut client,
                "200 OK",
                "",
                &format!(r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":300}}"#),
            );
        }
        refused.fetch_add(1, Ordering::SeqCst);
        return reply(&mut client, "401 Unauthorized", "", r#"{"errors":[]}"#);
    }
    if header(&headers, "authorization") != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"berth-test\",scope=\"repository:gh/svc:pull\"\r\n"
        );
        return reply(
            &mut client,
            "401 Unauthorized",
            &challenge,
            r#"{"errors":[]}"#,
        );
    }
    crate::common::registry::pass_through(client, upstream, method, path, &headers);
}

/// `identitytoken` in `auths` is spent as a refresh token at the registry's token service,
/// by berth resolving the version and by the engine pulling it.
#[test]
fn an_identity_token_is_exchanged_for_a_bearer_token() {
    let registry = Registry::start();
    registry.push(&format!("{IMAGE_REPO}:1.0.0"), "gh/svc", "1.0.0");
    registry.push(&format!("{IMAGE_REPO}:1.1.0"), "gh/svc", "1.1.0");
    let front = RefreshTokenFront::start(registry.port);
    let host = Host::new("idtoken");
    host.write(&oci(&front.host(), "^1"));
    let (config, _) = docker_config(
        &host,
        &format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "{IDENTITY_TOKEN}"}}}}}}"#,
            front.host()
        ),
    );
    let config = path_str(&config);
    let out = host.berth_env("apply", &[], &[("DOCKER_CONFIG", config)]);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(host.served_version().as_deref(), Some("1.1.0"));
    assert_eq!(
        inspect(&host.name(), "{{index .Config.Labels \"berth.digest\"}}"),
        registry.digest("gh/svc", "1.1.0")
    );
    assert!(front.granted.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        front.refused.load(Ordering::SeqCst),
        0,
        "no token request without the refresh token"
    );
}

/// The agent's own replace and removal wake no further, "drift" pass; a `docker stop` by
/// someone else is put right within seconds.
#[test]
fn the_agents_own_changes_are_not_drift_but_a_docker_stop_is() {
    let host = Host::new("owndrift");
    let setup = |versions: &str, opted_in: bool| Setup {
        versions: Some(versions.into()),
        opted_in,
        ..Setup::default()
    };
    host.write(&setup("=1.0.0", true));
    let mut daemon = Daemon::spawn(&host, &plain_config(&host, free_port()), &[]);
    let passes = |n: usize, what: &str| {
        until(what, Duration::from_secs(20), || {
            daemon.count("pass finished") >= n
        });
        // Long enough for late engine events to wake a pass they should not.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            daemon.count("pass started"),
            n,
            "{what}: one pass, none for berth's own container changes; log:\n{}",
            daemon.log()
        );
    };
    passes(1, "the first pass");
    assert!(host.running());

    host.write(&setup("^1", true));
    passes(2, "the replace");
    assert_eq!(host.version_label(), "1.1.0");

    let id = host.id();
    docker(&["stop", "-t", "1", &host.name()]);
    let stopped = Instant::now();
    until(
        "the stopped container running again",
        Duration::from_secs(10),
        || host.running(),
    );
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(host.id(), id, "the same container was started again");
    assert!(
        daemon.log().contains("\"reason\":\"Drift\""),
        "{}",
        daemon.log()
    );
    passes(3, "the drift pass");

    // The engine's events of a removal, the pass's last act, race the pass's end: a few
    // rounds make a late one all but certain.
    for round in 0..6 {
        host.write(&setup("^1", false));
        passes(4 + 2 * round, "a removal");
        assert!(host.containers().is_empty());
        host.write(&setup("^1", true));
        passes(5 + 2 * round, "a create");
        assert!(host.running());
    }
    assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
}

/// How many `berth agent-pass` children run for `config`.
fn pass_children(config: &Path) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.contains("agent-pass") && c.contains(&*config.to_string_lossy())
        })
        .count()
}

/// The pid of the one `berth agent-pass` child for `config`.
fn pass_child(config: &Path) -> Option<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let c = std::fs::read(e.path().join("cmdline")).ok()?;
        let c = String::from_utf8_lossy(&c);
        (c.contains("agent-pass") && c.contains(&*config.to_string_lossy()))
            .then(|| e.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

/// The host's service at `range`, whose PID 1 ignores SIGTERM for its 3 s stop timeout, so
/// a replace stays in flight long enough to interfere with.
fn slow_to_stop(host: &Host, range: &str) {
    host.write(&Setup {
        versions: Some(range.into()),
        ..Setup::default()
    });
    let script = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace(
            "  stop_timeout: 5s\n",
            "  stop_timeout: 3s\n  init: false\n",
        ),
    )
    .unwrap();
}

/// A daemon over a plain directory that has converged at 1.0.0 and is replacing it with
/// 1.1.0: the replace's old container is renamed aside when this returns.
fn daemon_in_a_replace(tag: &str) -> (Host, PathBuf, Daemon, u16) {
    let host = Host::new(tag);
    slow_to_stop(&host, "=1.0.0");
    let listen = free_port();
    let config = plain_config(&host, listen);
    let daemon = Daemon::spawn(&host, &config, &[]);
    until("the first pass", Duration::from_secs(20), || {
        daemon.count("pass finished") == 1
    });
    assert!(host.running() && host.version_label() == "1.0.0");
    slow_to_stop(&host, "^1");
    let old = format!("{}.old", host.name());
    until("the replace under way", Duration::from_secs(20), || {
        !inspect(&old, "{{.Id}}").is_empty()
    });
    (host, config, daemon, listen)
}

/// Each pass runs in a child of the daemon. One that dies in the middle of a replace is a
/// failed pass (exit 3, counted), the daemon lives on, and its next pass recovers the
/// interrupted replace from the journal.
#[test]
fn a_pass_child_that_dies_fails_the_pass_and_the_next_recovers() {
    let (host, config, mut daemon, listen) = daemon_in_a_replace("passkill");
    let child = pass_child(&config).expect("the pass runs in a child");
    run(Command::new("kill").args(["-KILL", &child.to_string()]));
    until("the lost pass reported", Duration::from_secs(5), || {
        daemon.count("pass finished") == 2
    });
    let log = daemon.log();
    assert!(
        log.contains("the pass ended without an answer (signal: 9 (SIGKILL))"),
        "{log}"
    );
    let (_, body) = wait_for(listen, "/status", Duration::from_secs(2)).expect("/status answers");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["last_pass"]["exit"], 3, "{body}");
    assert_eq!(status["counters"]["passes"], 2, "{body}");
    assert_eq!(status["counters"]["failures"], 1, "{body}");
    assert_eq!(
        host.containers().len(),
        2,
        "the replace was cut short: {:?}",
        host.containers()
    );

    // A manifest change wakes the daemon; its pass finishes the job.
    slow_to_stop(&host, "^1");
    until("the next pass", Duration::from_secs(30), || {
        daemon.count("pass finished") == 3
    });
    assert_eq!(host.containers(), vec![host.name()], "{}", daemon.log());
    assert!(host.running());
    assert!(
        daemon.log().contains("\"exit\":0,\"peak_kib\""),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(pass_children(&config), 0);
}

/// A daemon killed outright does not leave its pass running unattended: the child is sent
/// SIGTERM by the kernel, finishes the step in flight as the daemon would, and exits.
#[test]
fn a_pass_child_does_not_outlive_its_daemon() {
    let (host, config, mut daemon, _) = daemon_in_a_replace("passorphan");
    assert_eq!(pass_children(&config), 1);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    until("the pass child gone", Duration::from_secs(30), || {
        pass_children(&config) == 0
    });
    assert_eq!(host.containers(), vec![host.name()], "no half-done replace");
    assert_eq!(host.version_label(), "1.1.0");
    assert!(host.running());
    assert!(
        !host
            .state_dir()
            .join("journal")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "journal empty"
    );
    // Nobody but the kernel signalled the child.
    let log = daemon.log();
    assert!(
        log.contains("asked to stop; finishing the step in flight"),
        "{log}"
    );
}

/// `berth` installed alone (the static download without `berth-agentd` beside it) runs the
/// daemon in its own process, says so, and still runs its passes and serves `/status`.
#[test]
fn berth_alone_runs_the_daemon_in_its_own_process() {
    let host = quiet_host("alone");
    let listen = free_port();
    let config = plain_config(&host, listen);
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("berth");
    std::fs::hard_link(BIN, &alone)
        .or_else(|_| std::fs::copy(BIN, &alone).map(drop))
        .unwrap();
    let mut cmd = Command::new(&alone);
    cmd.arg("agent").arg("--config").arg(&config);
    let mut daemon = Daemon::start(&host, cmd, &[]);
    until("the first pass", Duration::from_secs(20), || {
        daemon.count("pass finished") >= 1
    });
    let exe = std::fs::read_link(format!("/proc/{}/exe", daemon.child.id())).unwrap();
    assert_eq!(exe, alone);
    let log = daemon.log();
    assert!(
        log.contains("cannot start berth-agentd: the daemon runs in this process"),
        "{log}"
    );
    assert_eq!(
        wait_for(listen, "/status", Duration::from_secs(5)).map(|a| a.0),
        Some(200)
    );
    assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
}
