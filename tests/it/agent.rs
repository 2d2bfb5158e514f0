//! `berth agent` against real git repos, the real engine and a real daemon: following a
//! branch, tag or commit; the revision containers carry; an unreachable remote; rewritten
//! history; frozen mode; `/status`, `/metrics` and `berth status`; convergence within a
//! second of a manifest change; drift; SIGTERM; the cross-process lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

fn file_url(host: &Host) -> String {
    format!("  url: file://{}\n  branch: main\n", host.repo().display())
}

fn agent_once(config: &Path) -> Run {
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(config)
        .run()
}

/// `berth agent` as a daemon, its output discarded.
fn spawn_daemon(config: &Path) -> std::process::Child {
    Berth::new("agent").arg("--config").arg(config).spawn()
}

/// Sends SIGTERM and waits for the exit code, failing past `limit`.
fn terminate(daemon: &mut std::process::Child, limit: Duration) -> Option<i32> {
    run(Command::new("kill").args(["-TERM", &daemon.id().to_string()]));
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < end, "the daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host whose agent follows `main` of a git repo and has applied its first commit.
fn converged_on_git(tag: &str, range: &str) -> (Host, String, PathBuf) {
    let host = Host::new(tag);
    host.write(&versions(range));
    let first = host.commit_all("first");
    let config = host.agent_config(&file_url(&host), "");
    agent_once(&config).assert_exit(0);
    let mirror = host.state_dir().join("source/mirror.git");
    assert_eq!(
        git(&mirror, &["rev-parse", "refs/berth/accepted"]),
        first,
        "git itself reads the accepted revision the agent recorded"
    );
    (host, first, config)
}

fn revision_label(host: &Host) -> String {
    inspect(&host.name(), "{{index .Config.Labels \"berth.revision\"}}")
}

/// `berth status --format FORMAT` over the host's state dir.
fn status(host: &Host, format: &str) -> Run {
    Berth::new("status")
        .args(["--format", format, "--state-dir"])
        .arg(host.state_dir())
        .run()
}

fn status_json(host: &Host) -> serde_json::Value {
    let out = status(host, "json");
    out.assert_exit(0);
    out.json()
}

#[test]
fn follows_a_branch_and_labels_the_revision() {
    let (host, first, config) = converged_on_git("branch", "=1.0.0");
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(revision_label(&host), first);

    host.write(&versions("^1"));
    let second = host.commit_all("bump");
    agent_once(&config).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(revision_label(&host), second);
    let json = status(&host, "json");
    json.assert_exit(0);
    let doc = json.json();
    assert_eq!(doc["revision"], second.as_str());
    assert_eq!(doc["last_pass"]["exit"], 0);
    assert_eq!(doc["scripts"][0]["state"], "updated");
    assert_eq!(doc["counters"]["passes"], 2);
    assert_stable_snapshot!("status_json", json.stdout());
    let text = status(&host, "text");
    text.assert_exit(0);
    assert!(
        text.stdout().contains(&format!("revision:     {second}\n")),
        "{}",
        text.text()
    );
    assert_stable_snapshot!("status_text", text.stdout());

    // Uncommitted edits are not the source of truth: nothing changes.
    host.write(&versions("=1.0.0"));
    agent_once(&config).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
}

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

#[test]
fn follows_a_tag_or_a_pinned_commit() {
    let host = Host::new("pin");
    host.write(&versions("=1.0.0"));
    let old = host.commit_all("old");
    git(&host.repo(), &["tag", "release"]);
    host.write(&versions("^1"));
    host.commit_all("new");

    let by_tag = host.agent_config(
        &format!("  url: file://{}\n  tag: release\n", host.repo().display()),
        "",
    );
    agent_once(&by_tag).assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(revision_label(&host), old);

    let by_commit = host.agent_config(
        &format!("  url: file://{}\n  commit: {old}\n", host.repo().display()),
        "",
    );
    agent_once(&by_commit).assert_exit(0);
    assert_eq!(revision_label(&host), old);
}

#[test]
fn an_unreachable_remote_leaves_the_host_as_it_is() {
    let (host, first, config) = converged_on_git("unreach", "^1");
    let id = host.id();

    let moved = host.dir.path().join("moved-away");
    std::fs::rename(host.repo(), &moved).unwrap();
    let out = agent_once(&config);
    out.assert_exit(3);
    assert_eq!(host.id(), id, "the container was not touched");
    assert_eq!(revision_label(&host), first);
    let status = status_json(&host);
    assert!(
        status["source"]
            .as_str()
            .unwrap()
            .contains("remote unreachable"),
        "{status:#}"
    );
    assert_eq!(status["revision"], first.as_str());
    std::fs::rename(&moved, host.repo()).unwrap();
}

#[test]
fn rewritten_history_is_refused_unless_allowed() {
    let (host, first, config) = converged_on_git("rewrite", "=1.0.0");

    // A new root commit force-pushed over main.
    host.write(&versions("^1"));
    git(&host.repo(), &["checkout", "-q", "--orphan", "rewritten"]);
    let rewritten = host.commit_all("rewritten");
    git(&host.repo(), &["branch", "-q", "-M", "rewritten", "main"]);
    let out = agent_once(&config);
    out.assert_exit(1);
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(revision_label(&host), first);
    let status = status_json(&host);
    assert!(
        status["source"]
            .as_str()
            .unwrap()
            .contains("does not descend"),
        "{status:#}"
    );

    let allowed = host.agent_config(&format!("{}  allow_rewrite: true\n", file_url(&host)), "");
    agent_once(&allowed).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(revision_label(&host), rewritten);
}

#[test]
fn unsigned_heads_are_refused_when_verification_is_on() {
    let host = Host::new("verify");
    host.write(&versions("=1.0.0"));
    let repo = host.repo();
    let key = host.dir.path().join("signing");
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleet", "-f"])
        .arg(&key));
    out.assert_exit(0);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers = host.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("fleet@example.org {public}")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    let key_arg = format!("user.signingkey={}", key.display());
    git(
        &repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &key_arg,
            "commit",
            "-q",
            "-S",
            "-m",
            "signed",
        ],
    );
    let signed = git(&repo, &["rev-parse", "HEAD"]);
    let config = host.agent_config(
        &format!(
            "{}  verify: {{ allowed_signers: {} }}\n",
            file_url(&host),
            signers.display()
        ),
        "",
    );
    agent_once(&config).assert_exit(0);
    assert_eq!(revision_label(&host), signed);

    host.write(&versions("^1"));
    host.commit_all("unsigned");
    let out = agent_once(&config);
    out.assert_exit(1);
    assert_eq!(
        host.version_label(),
        "1.0.0",
        "the host stays at the last verified revision"
    );
    let status = status_json(&host);
    assert!(
        status["source"].as_str().unwrap().contains("not signed"),
        "{status:#}"
    );
}

#[test]
fn frozen_mode_applies_exactly_what_is_locked() {
    let host = Host::new("frozen");
    host.write(&versions("=1.0.0"));
    let out = Berth::new("lock").arg(host.repo()).run();
    out.assert_exit(0);
    // The range widens, but the lock still pins 1.0.0: agents apply the lock.
    host.write(&versions("^1"));
    host.commit_all("locked");
    let config = host.agent_config(&file_url(&host), "");
    agent_once(&config).assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0");
    let check = Berth::new("lock").arg("--check").arg(host.repo()).run();
    check.assert_exit(1);
    assert!(
        check.text().contains("locked at 1.0.0, resolves to 1.1.0"),
        "{}",
        check.text()
    );
}

#[test]
fn two_runs_never_overlap() {
    let host = Host::new("lock");
    host.write(&Setup::default());
    let config = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    std::fs::create_dir_all(host.state_dir()).unwrap();
    // Another process holds the lock (as a second berth would) for five seconds: longer
    // than the second of grace a run gives a lock that is being let go.
    let mut holder = Command::new("flock")
        .arg(host.state_dir().join("lock"))
        .args(["sleep", "5"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = agent_once(&config);
    out.assert_exit(3);
    assert!(
        out.text().contains("another berth run holds"),
        "{}",
        out.text()
    );
    holder.wait().unwrap();
    assert!(host.containers().is_empty());
    agent_once(&config).assert_exit(0);
}

/// A daemon over a plain directory: converges within a second of a change, restarts a
/// stopped container, serves `/status` and `/metrics`, and stops cleanly on SIGTERM.
#[test]
fn daemon_converges_on_change_and_drift_and_stops_on_sigterm() {
    let host = Host::new("daemon");
    host.write(&versions("=1.0.0"));
    let listen = free_port();
    let config = host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        &format!("listen: 127.0.0.1:{listen}\n"),
    );
    let mut daemon = spawn_daemon(&config);
    let until = |what: &str, limit: Duration, check: &dyn Fn() -> bool| {
        let end = Instant::now() + limit;
        while !check() {
            assert!(
                Instant::now() < end,
                "daemon: {what} did not happen within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("first pass", Duration::from_secs(20), &|| {
        host.running() && host.version_label() == "1.0.0"
    });
    // `berth agent` handed the daemon over to the small binary beside it, in its own process.
    let exe = std::fs::read_link(format!("/proc/{}/exe", daemon.id())).unwrap();
    assert_eq!(
        exe.file_name().unwrap(),
        "berth-agentd",
        "{}",
        exe.display()
    );

    host.write(&versions("^1"));
    let changed = Instant::now();
    until(
        "convergence after a change",
        Duration::from_secs(10),
        &|| host.version_label() == "1.1.0" && host.running(),
    );
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "converged in {took:?}, long before the 1h interval"
    );

    let (status, body) =
        wait_for(listen, "/status", Duration::from_secs(5)).expect("/status answers");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["partner"], host.partner.as_str());
    assert_eq!(doc["revision"], "worktree");
    let (status, metrics) = http_get(listen, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "berth_passes_total{{partner=\"{}\"}}",
            host.partner
        )),
        "{metrics}"
    );
    assert!(metrics.contains("berth_updates_total"), "{metrics}");
    assert_eq!(http_get(listen, "/nope").map(|a| a.0), Some(404));

    let id = host.id();
    // Wait out the settle time of the last pass, then cause drift.
    std::thread::sleep(Duration::from_millis(500));
    docker(&["stop", "-t", "1", &host.name()]);
    until("drift repaired", Duration::from_secs(10), &|| {
        host.running()
    });
    assert_eq!(host.id(), id, "the same container was started again");

    assert_eq!(terminate(&mut daemon, Duration::from_secs(20)), Some(0));
    assert!(
        host.running(),
        "stopping the agent leaves the service running"
    );
}

/// The daemon sleeps until the window a deferred step waits for opens, not its interval:
/// with a one-hour interval, a window opening at the next minute is used within seconds.
#[test]
fn the_daemon_wakes_when_the_window_opens() {
    let host = Host::new("wake");
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    // The next minute at least 8 s away, so the first pass surely finds the window closed.
    let mut opens = now
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .unwrap()
        .checked_add(jiff::SignedDuration::from_mins(1))
        .unwrap();
    if opens.duration_since(&now) < jiff::SignedDuration::from_secs(8) {
        opens = opens
            .checked_add(jiff::SignedDuration::from_mins(1))
            .unwrap();
    }
    let closes = opens
        .checked_add(jiff::SignedDuration::from_mins(10))
        .unwrap();
    host.write(&Setup {
        windows: Some(format!(
            "  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"{}\"\n    end: \"{}\"\n",
            opens.strftime("%H:%M"),
            closes.strftime("%H:%M")
        )),
        ..versions("=1.0.0")
    });
    let config = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    let mut daemon = spawn_daemon(&config);
    let opens = opens.timestamp();
    while jiff::Timestamp::now() < opens {
        assert!(!host.running(), "nothing runs before the window opens");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !host.running() {
        assert!(
            Instant::now() < deadline,
            "the window opened at {opens} but the daemon did not use it within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = jiff::Timestamp::now().duration_since(opens);
    assert!(
        used < jiff::SignedDuration::from_secs(10),
        "used {used:?} after opening"
    );
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(terminate(&mut daemon, Duration::from_secs(20)), Some(0));
}

#[test]
fn an_invalid_head_changes_nothing_and_is_not_accepted() {
    let (host, first, config) = converged_on_git("invalidhead", "=1.0.0");
    let id = host.id();

    let script = host.repo().join("scripts/svc.yaml");
    let valid = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        valid.replace("network: host", "network: host\n  privileged: true"),
    )
    .unwrap();
    host.commit_all("broken");
    agent_once(&config).assert_exit(1);
    assert_eq!(host.id(), id);

    // Undoing the broken commit by resetting the branch is not a history rewrite, because
    // the broken commit was never accepted.
    git(&host.repo(), &["reset", "-q", "--hard", &first]);
    agent_once(&config).assert_exit(0);
    assert_eq!(revision_label(&host), first);
    assert_eq!(status_json(&host)["source"], serde_json::Value::Null);
}

/// SIGTERM during a replace: the step in flight finishes (the new version serves, the old
/// container is gone) and the daemon exits 0; nothing is left half done.
#[test]
fn sigterm_during_a_replace_finishes_the_step() {
    let host = Host::new("termstep");
    let slow_stop = |v: &str| {
        host.write(&versions(v));
        // Without an init, the service is PID 1 and ignores SIGTERM: stopping it takes the
        // whole stop_timeout, which keeps the replace in flight long enough to signal.
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
    };
    slow_stop("=1.0.0");
    let config = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    let mut daemon = spawn_daemon(&config);
    let end = Instant::now() + Duration::from_secs(20);
    while !(host.running() && host.version_label() == "1.0.0") {
        assert!(Instant::now() < end, "first pass");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    slow_stop("^1");
    let old = format!("{}.old", host.name());
    let end = Instant::now() + Duration::from_secs(20);
    while inspect(&old, "{{.Id}}").is_empty() {
        assert!(Instant::now() < end, "the replace did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(terminate(&mut daemon, Duration::from_secs(30)), Some(0));
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
}
