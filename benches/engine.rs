//! The engine targets of the README's Performance section, measured side by side in one run against the real engine:
//! a no-op `berth apply` on 50 containers vs a no-op `docker-compose up -d` on the same 50
//! services; unavailability during a replace vs a raw `docker stop` + `docker start` of a
//! pre-created container; a full replace whose PID 1 ignores SIGTERM; the engine calls of a
//! no-op pass; and the agent daemon idle between passes, following a git repo as a partner
//! runs it and a watched directory; and, for multi-component scripts (design §10), a no-op
//! agent pass over 10 scripts × 5 components vs a no-op `docker-compose up -d` of the same 50
//! services, and an update of one component of five (engine writes, unavailability, and what
//! compose recreates for the same change). Prints figures and PASS/FAIL; it is a report,
//! never a timed test. Arguments that are not flags name the targets to run (`noop`,
//! `unavailability`, `sigterm`, `agent`, `agent-git`, `components-noop`,
//! `components-update`); none runs them all.

#[path = "support/components.rs"]
mod components;
#[path = "support/proxy.rs"]
mod proxy;

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "berth-bench/svc";
const PARTNER: &str = "bench";
const RUNS: usize = 7;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    must(Command::new(root.join("script/build-images")).args(["--repo", REPO, "1.0.0", "1.1.0"]));
    // cargo passes `--bench`; anything else that is not a flag names a target.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let work = tempfile::tempdir().expect("temp dir");
    let mut report = String::new();
    if wanted("noop") {
        noop(work.path(), &mut report);
    }
    if wanted("unavailability") {
        unavailability(work.path(), &mut report);
    }
    if wanted("sigterm") {
        sigterm(work.path(), &mut report);
    }
    if wanted("agent") {
        agent(work.path(), &mut report);
    }
    if wanted("agent-git") {
        agent_on_git(work.path(), &mut report);
    }
    if wanted("components-noop") || wanted("components-update") {
        let mc = components::Fleet::start(work.path(), &mut report);
        if wanted("components-noop") {
            components::noop(&mc, &mut report);
        }
        if wanted("components-update") {
            components::update(&mc, &mut report);
        }
        drop(mc);
    }
    println!("\n{report}");
}

fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Distinct free loopback ports, all held at once while chosen so none repeats.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(cmd: &mut Command) -> f64 {
    let start = Instant::now();
    must(cmd);
    start.elapsed().as_secs_f64()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// Removes every container carrying a label.
fn remove_labelled(label: &str) {
    let out =
        must(Command::new("docker").args(["ps", "-aq", "--filter", &format!("label={label}")]));
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        must(Command::new("docker").args(["rm", "-f"]).args(&ids));
    }
}

/// A manifest repo for the bench partner with the given scripts (name, port, version range).
fn write_repo(dir: &Path, scripts: &[(String, u16, &str)], init: bool, stop_timeout: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("partners")).unwrap();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    let mut partner = format!(
        "apiVersion: berth/v1\nkind: Partner\nname: {PARTNER}\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\nscripts:\n"
    );
    for (name, port, versions) in scripts {
        let _ = writeln!(partner, "  - script: {name}\n    versions: \"{versions}\"");
        let script = format!(
            "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage:\n  source: local\n  repository: {REPO}\ncontainer:\n  env: {{ PORT: \"{port}\" }}\n  network: host\n  init: {init}\n  stop_timeout: {stop_timeout}\nhealth:\n  http: http://127.0.0.1:{port}/health\n  timeout: 30s\n"
        );
        std::fs::write(dir.join(format!("scripts/{name}.yaml")), script).unwrap();
    }
    std::fs::write(dir.join(format!("partners/{PARTNER}.yaml")), partner).unwrap();
}

fn berth(repo: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("apply")
        .arg(repo)
        .args(["--partner", PARTNER, "--state-dir"])
        .arg(state);
    c
}

fn noop(work: &Path, report: &mut String) {
    remove_labelled(&format!("berth.partner={PARTNER}"));
    let repo = work.join("noop");
    let state = work.join("noop-state");
    let ports = free_ports(100);
    let scripts: Vec<_> = (0..50)
        .map(|i| (format!("svc-{i:02}"), ports[i], "=1.0.0"))
        .collect();
    write_repo(&repo, &scripts, true, "5s");
    must(&mut berth(&repo, &state));

    let compose_dir = work.join("compose");
    std::fs::create_dir_all(&compose_dir).unwrap();
    let mut compose = String::from("version: \"2.4\"\nservices:\n");
    for ((name, _, _), port) in scripts.iter().zip(&ports[50..]) {
        let _ = writeln!(
            compose,
            "  {name}:\n    image: {REPO}:1.0.0\n    network_mode: host\n    init: true\n    stop_grace_period: 5s\n    environment:\n      PORT: \"{port}\"\n    labels:\n      berth.bench: compose"
        );
    }
    std::fs::write(compose_dir.join("docker-compose.yml"), compose).unwrap();
    let up = || {
        let mut c = Command::new("docker-compose");
        c.current_dir(&compose_dir)
            .args(["-p", "berthbench", "up", "-d"]);
        c
    };
    must(&mut up());

    let mut berth_times = Vec::new();
    let mut compose_times = Vec::new();
    for _ in 0..RUNS {
        berth_times.push(timed(&mut berth(&repo, &state)));
        compose_times.push(timed(&mut up()));
    }
    let (b, c) = (median(berth_times), median(compose_times));
    let ratio = b / c;
    let _ = writeln!(
        report,
        "no-op apply, 50 containers: berth {b:.3}s vs docker-compose up -d {c:.3}s (medians of {RUNS}): {:.1}% (target <= 5%) {}",
        ratio * 100.0,
        verdict(ratio <= 0.05)
    );

    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy::Proxy::start(dir.path());
    must(berth(&repo, &state).env("DOCKER_HOST", proxy.docker_host()));
    let lists = proxy.count("GET", "/containers/json");
    let images = proxy.count("GET", "/images/json");
    let writes = proxy.count("POST", "/") + proxy.count("DELETE", "/");
    if writes > 0 {
        let _ = writeln!(report, "unexpected engine writes: {:#?}", proxy.requests());
    }
    let _ = writeln!(
        report,
        "engine calls per no-op pass (50 scripts, 1 repository): {lists} container list, {images} image list, {writes} changes (target: exactly 1 list) {}",
        verdict(lists == 1 && images == 1 && writes == 0)
    );

    must(
        Command::new("docker-compose")
            .current_dir(&compose_dir)
            .args(["-p", "berthbench", "down", "-t", "1"]),
    );
    remove_labelled(&format!("berth.partner={PARTNER}"));
}

/// Polls `/health` on a port until stopped; returns the longest run of failed polls.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Duration>,
}

impl Poller {
    fn start(port: u16) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            let mut down_since: Option<Instant> = None;
            while !flag.load(Ordering::Relaxed) {
                let up = health(port);
                match (up, down_since) {
                    (false, None) => down_since = Some(Instant::now()),
                    (true, Some(t)) => {
                        longest = longest.max(t.elapsed());
                        down_since = None;
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            longest
        });
        Poller { stop, handle }
    }

    fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn wait_up(port: u16) {
    let end = Instant::now() + Duration::from_secs(10);
    while !health(port) {
        assert!(Instant::now() < end, "service on {port} never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unavailability(work: &Path, report: &mut String) {
    let repo = work.join("swap");
    let state = work.join("swap-state");
    let port = free_port();
    let name = "svc".to_owned();
    let mut berth_gaps = Vec::new();
    let mut raw_gaps = Vec::new();
    let times = Arc::new(Mutex::new(Vec::new()));
    for round in 0..5 {
        remove_labelled(&format!("berth.partner={PARTNER}"));
        write_repo(&repo, &[(name.clone(), port, "=1.0.0")], true, "5s");
        must(&mut berth(&repo, &state));
        wait_up(port);
        write_repo(&repo, &[(name.clone(), port, "=1.1.0")], true, "5s");
        let poller = Poller::start(port);
        let t = timed(&mut berth(&repo, &state));
        wait_up(port);
        berth_gaps.push(poller.finish().as_secs_f64());
        times.lock().unwrap().push(t);
        remove_labelled(&format!("berth.partner={PARTNER}"));

        let old = format!("berth-bench-raw-old-{round}");
        let new = format!("berth-bench-raw-new-{round}");
        let env = format!("PORT={port}");
        for (n, v, run) in [(&old, "1.0.0", true), (&new, "1.1.0", false)] {
            let verb = if run {
                ["run", "-d"].as_slice()
            } else {
                ["create"].as_slice()
            };
            must(Command::new("docker").args(verb).args([
                "--name",
                n,
                "--init",
                "--network",
                "host",
                "-e",
                &env,
                "--label",
                "berth.bench=raw",
                &format!("{REPO}:{v}"),
            ]));
        }
        wait_up(port);
        let poller = Poller::start(port);
        must(Command::new("docker").args(["stop", &old]));
        must(Command::new("docker").args(["start", &new]));
        wait_up(port);
        raw_gaps.push(poller.finish().as_secs_f64());
        remove_labelled("berth.bench=raw");
    }
    let (b, r) = (median(berth_gaps), median(raw_gaps));
    let _ = writeln!(
        report,
        "unavailability during a replace: berth {:.0}ms vs docker stop + docker start {:.0}ms (medians of 5): {:.2}x (target <= 1.25x) {}",
        b * 1000.0,
        r * 1000.0,
        b / r,
        verdict(b / r <= 1.25)
    );
}

fn sigterm(work: &Path, report: &mut String) {
    let repo = work.join("sigterm");
    let state = work.join("sigterm-state");
    let port = free_port();
    let mut line = String::new();
    for init in [true, false] {
        remove_labelled(&format!("berth.partner={PARTNER}"));
        write_repo(&repo, &[("svc".to_owned(), port, "=1.0.0")], init, "3s");
        must(&mut berth(&repo, &state));
        wait_up(port);
        write_repo(&repo, &[("svc".to_owned(), port, "=1.1.0")], init, "3s");
        let t = timed(&mut berth(&repo, &state));
        if init {
            let _ = write!(
                line,
                "full replace, PID 1 ignores SIGTERM, init on (default): {t:.2}s (target < 1s) {}",
                verdict(t < 1.0)
            );
        } else {
            let _ = write!(line, "; same with init: false and stop_timeout 3s: {t:.2}s");
        }
    }
    remove_labelled(&format!("berth.partner={PARTNER}"));
    let _ = writeln!(report, "{line}");
}

/// Reads `VmRSS` (kB) and the user+system CPU ticks of a process from /proc.
fn rss_and_ticks(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

/// The binary the agent targets run: the statically linked one the .deb installs, as
/// partners run it (`script/bench` builds it and names it in `BERTH_AGENT_BIN`), else this
/// bench's own release build.
fn agent_binary() -> std::path::PathBuf {
    std::env::var_os("BERTH_AGENT_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_berth").into(),
        std::path::PathBuf::from,
    )
}

/// The idle agent's memory target: VmRSS, MiB = 1024² bytes.
const IDLE_MIB: f64 = 8.0;

/// A daemon's memory and CPU once its first pass has ended (its `pass finished` line in
/// `log`) and settled, against the idle targets, and what that pass's child peaked at.
fn idle(pid: u32, log: &Path) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("\"pass finished\"")) {
            break serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(
            Instant::now() < end,
            "the first pass did not finish:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak = finished["fields"]["peak_kib"].as_u64().map_or_else(
        || "unknown".to_owned(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (rss, before) = rss_and_ticks(pid);
    std::thread::sleep(Duration::from_secs(5));
    let (_, after) = rss_and_ticks(pid);
    let mib = rss as f64 / 1024.0;
    format!(
        "{mib:.1} MiB RSS (target <= {IDLE_MIB} MiB) {}; {} CPU ticks in 5 s between passes (target 0) {}; the pass child peaked at {peak} RSS",
        verdict(mib <= IDLE_MIB),
        after - before,
        verdict(after == before)
    )
}

/// The agent daemon: idle memory and CPU between passes, and how soon a change to a
/// watched manifest directory starts a pass.
fn agent(work: &Path, report: &mut String) {
    remove_labelled(&format!("berth.partner={PARTNER}"));
    let repo = work.join("agent-repo");
    let state = work.join("agent-state");
    let port = free_port();
    write_repo(&repo, &[("svc".to_owned(), port, "=1.0.0")], true, "5s");
    let config = work.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "partner: {PARTNER}\nrepo:\n  url: {}\ninterval: 1h\nstate_dir: {}\nlisten: 127.0.0.1:{}\n",
            repo.display(),
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    let log = work.join("agent.log");
    let mut daemon = Command::new(agent_binary())
        .args(["agent", "--config"])
        .arg(&config)
        .env("BERTH_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_up(port);
    let _ = writeln!(report, "agent idle: {}", idle(daemon.id(), &log));

    let mut delays = Vec::new();
    for round in 0..5 {
        let starts_before = std::fs::read_to_string(&log)
            .unwrap()
            .matches("pass started")
            .count();
        let changed = jiff::Timestamp::now();
        // Edit the partner file in place, as a person or a config tool would.
        let next = work.join("agent-next");
        let version = if round % 2 == 0 { "=1.1.0" } else { "=1.0.0" };
        write_repo(&next, &[("svc".to_owned(), port, version)], true, "5s");
        let partner_file = format!("partners/{PARTNER}.yaml");
        std::fs::write(
            repo.join(&partner_file),
            std::fs::read(next.join(&partner_file)).unwrap(),
        )
        .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let started = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            let starts: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("pass started"))
                .collect();
            if starts.len() > starts_before {
                let line: serde_json::Value = serde_json::from_str(starts[starts_before]).unwrap();
                break line["timestamp"]
                    .as_str()
                    .unwrap()
                    .parse::<jiff::Timestamp>()
                    .unwrap();
            }
            assert!(
                Instant::now() < end,
                "no pass started after a manifest change"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        delays.push(started.duration_since(changed).as_secs_f64());
        // Let the pass finish before the next change.
        std::thread::sleep(Duration::from_secs(2));
    }
    let d = median(delays);
    let _ = writeln!(
        report,
        "agent: manifest change to start of convergence {:.0}ms (median of 5; target within 1 s) {}",
        d * 1000.0,
        verdict(d < 1.0)
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    remove_labelled(&format!("berth.partner={PARTNER}"));
}

/// The agent daemon as a partner runs it, following `main` of a git repo (here over
/// `file://`): idle memory and CPU between passes, after it has fetched and converged.
fn agent_on_git(work: &Path, report: &mut String) {
    remove_labelled(&format!("berth.partner={PARTNER}"));
    let repo = work.join("agent-git");
    let port = free_port();
    write_repo(&repo, &[("svc".to_owned(), port, "=1.0.0")], true, "5s");
    let git = |args: &[&str]| {
        must(
            Command::new("git")
                .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
                .args(args)
                .current_dir(&repo),
        )
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "manifests"]);
    let config = work.join("agent-git.yaml");
    std::fs::write(
        &config,
        format!(
            "partner: {PARTNER}\nrepo:\n  url: file://{}\n  branch: main\ninterval: 1h\nstate_dir: {}\nlisten: 127.0.0.1:{}\n",
            repo.display(),
            work.join("agent-git-state").display(),
            free_port()
        ),
    )
    .unwrap();
    let log = work.join("agent-git.log");
    let mut daemon = Command::new(agent_binary())
        .args(["agent", "--config"])
        .arg(&config)
        .env("BERTH_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_up(port);
    let _ = writeln!(
        report,
        "agent idle following a git repo: {}",
        idle(daemon.id(), &log)
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    remove_labelled(&format!("berth.partner={PARTNER}"));
}
