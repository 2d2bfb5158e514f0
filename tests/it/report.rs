//! The agent's status record in the status repo (docs/reporting.md), against real bare git
//! repos (over `file://`, over `git://` from `git daemon`, and over SSH through a real
//! `sshd`, `common::sshd`), the real engine, and `git`
//! itself as the fleet team's reader: what lands in `partners/<partner>.json`, the SSH
//! signature `git verify-commit` checks, when a pass pushes and when it does not, many
//! partners pushing to one branch at once, and a status repo that is missing or hangs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::sshd::{Sshd, keygen};
use crate::common::*;

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

/// An empty bare status repo, as the fleet team sets one up.
fn status_repo(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    git(path, &["init", "-q", "--bare", "-b", "main"]);
    path.to_owned()
}

/// A host key without a passphrase, as `ssh-keygen` makes it; returns the private key's
/// path and the public key's line.
fn host_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("host_key");
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
        .arg(&key))
    .assert_exit(0);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_owned())
}

/// The agent's config for `host`: its manifests over `file://`, and this `report:` block.
fn config(host: &Host, report: &str) -> PathBuf {
    host.agent_config(
        &format!("  url: file://{}\n  branch: main\n", host.repo().display()),
        &format!("report:\n{report}"),
    )
}

fn agent_once(config: &Path) -> Run {
    Berth::new("agent")
        .args(["--once", "--config"])
        .arg(config)
        .run()
}

fn status_json(host: &Host) -> serde_json::Value {
    let out = Berth::new("status")
        .args(["--format", "json", "--state-dir"])
        .arg(host.state_dir())
        .run();
    out.assert_exit(0);
    out.json()
}

fn commits(repo: &Path) -> usize {
    git(repo, &["rev-list", "--count", "main"]).parse().unwrap()
}

fn record_in(repo: &Path, partner: &str) -> String {
    git(repo, &["show", &format!("main:partners/{partner}.json")])
}

fn local_record(host: &Host) -> String {
    std::fs::read_to_string(host.state_dir().join("record.json")).unwrap()
}

/// `git verify-commit main` in `repo`, trusting `key` for the partner's committer address,
/// as the fleet team checks a record's commit.
fn verify_commit(repo: &Path, host: &Host, key: &str) -> Run {
    let signers = host.dir.path().join("allowed_signers");
    std::fs::write(&signers, format!("{}@berth.invalid {key}\n", host.partner)).unwrap();
    run(Command::new("git")
        .current_dir(repo)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args(["verify-commit", "main"])
        .env("HOME", host.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1"))
}

/// The branch tip of `repo` carries a good signature by `key`.
fn assert_signed_by(repo: &Path, host: &Host, key: &str) {
    let verified = verify_commit(repo, host, key);
    verified.assert_exit(0);
    assert!(
        verified.stderr().contains("Good \"git\" signature"),
        "{}",
        verified.text()
    );
}

#[test]
fn once_pushes_a_signed_record_when_the_outcome_changes() {
    let host = Host::new("report");
    host.write(&versions("^1"));
    let first = host.commit_all("first");
    let repo = status_repo(&host.dir.path().join("status.git"));
    let (key, public) = host_key(host.dir.path());
    let config = config(
        &host,
        &format!(
            "  url: file://{}\n  signing_key: {}\n",
            repo.display(),
            key.display()
        ),
    );

    agent_once(&config).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(commits(&repo), 1);
    let pushed = record_in(&repo, &host.partner);
    assert_eq!(
        format!("{pushed}\n"),
        local_record(&host),
        "the repo holds the state dir's record, byte for byte"
    );
    let doc: serde_json::Value = serde_json::from_str(&pushed).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["partner"], host.partner.as_str());
    assert_eq!(doc["revision"], first.as_str());
    assert_eq!(doc["exit"], 0);
    assert_eq!(doc["interval_secs"], 3600);
    let script = &doc["scripts"][0];
    assert_eq!(script["script"], "svc");
    assert_eq!(script["state"], "in-sync");
    assert_eq!(script["desired"]["version"], "1.1.0");
    assert_eq!(script["running"]["version"], "1.1.0");
    let digest = script["desired"]["digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{doc:#}");
    assert_eq!(script["running"]["digest"], digest);

    // The fleet team's git checks the signature against the host's declared key.
    assert_signed_by(&repo, &host, &public);
    let (_, other) = host_key(&host.dir.path().join("other"));
    let refused = verify_commit(&repo, &host, &other);
    assert_ne!(refused.code(), Some(0), "another key does not verify it");
    assert_eq!(
        git(
            &repo,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"]
        ),
        format!(
            "berth {p} <{p}@berth.invalid>|berth {p} <{p}@berth.invalid>",
            p = host.partner
        )
    );
    let status = status_json(&host);
    assert_eq!(status["report"]["last_error"], serde_json::Value::Null);
    assert!(status["report"]["last_success"].is_string(), "{status:#}");
    assert_eq!(
        status["report"]["commit"],
        git(&repo, &["rev-parse", "main"]).as_str()
    );

    // The same outcome again: nothing new to tell.
    agent_once(&config).assert_exit(0);
    assert_eq!(commits(&repo), 1, "{}", git(&repo, &["log", "main"]));

    // The manifests move the service back to 1.0.0: a new outcome, a new commit.
    host.write(&versions("=1.0.0"));
    let second = host.commit_all("pin 1.0.0");
    agent_once(&config).assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(commits(&repo), 2);
    let doc: serde_json::Value = serde_json::from_str(&record_in(&repo, &host.partner)).unwrap();
    assert_eq!(doc["revision"], second.as_str());
    assert_eq!(doc["scripts"][0]["running"]["version"], "1.0.0");
    assert_eq!(
        git(&repo, &["show", "--name-only", "--format=", "main"]),
        format!("partners/{}.json", host.partner),
        "the commit touches the partner's file only"
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", "main"]),
        format!("{}: 1 in-sync at {} (exit 0)", host.partner, &second[..12])
    );
}

#[test]
fn a_missing_status_repo_never_fails_the_pass_and_the_record_goes_out_later() {
    let host = Host::new("report-down");
    host.write(&versions("^1"));
    host.commit_all("first");
    let repo = host.dir.path().join("status.git");
    let config = config(&host, &format!("  url: file://{}\n", repo.display()));

    let out = agent_once(&config);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0", "the host converged");
    let status = status_json(&host);
    assert_eq!(status["last_pass"]["exit"], 0);
    let error = status["report"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot open the status repo") && error.contains("status.git"),
        "{status:#}"
    );
    assert_eq!(status["report"]["last_success"], serde_json::Value::Null);
    let text = Berth::new("status")
        .arg("--state-dir")
        .arg(host.state_dir())
        .run();
    assert!(
        text.stdout()
            .contains("report error: cannot open the status repo"),
        "{}",
        text.text()
    );

    // The repo appears; the next pass, with the same outcome, sends the record.
    status_repo(&repo);
    agent_once(&config).assert_exit(0);
    assert_eq!(commits(&repo), 1);
    assert_eq!(
        format!("{}\n", record_in(&repo, &host.partner)),
        local_record(&host)
    );
    let status = status_json(&host);
    assert_eq!(status["report"]["last_error"], serde_json::Value::Null);
}

#[test]
fn a_status_repo_that_hangs_is_given_up_on_within_the_bound() {
    let host = Host::new("report-hang");
    host.write(&versions("^1"));
    host.commit_all("first");
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let config = config(
        &host,
        &format!("  url: http://127.0.0.1:{port}/status.git\n"),
    );
    // `timeout` ends a hung agent, so this test fails rather than hangs.
    let started = Instant::now();
    let out = run(Command::new("timeout")
        .args(["120", BIN, "agent", "--once", "--config"])
        .arg(&config)
        .env("BERTH_REPORT_TIMEOUT", "3"));
    out.assert_exit(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(host.version_label(), "1.1.0");
    let status = status_json(&host);
    let error = status["report"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "the push to http://127.0.0.1:{port}/status.git did not finish within 3s"
        )),
        "{status:#}"
    );
    let pass_ms = status["last_pass"]["millis"].as_u64().unwrap();
    assert!(
        took < Duration::from_millis(pass_ms) + Duration::from_secs(3 + 10),
        "the push was cut at its bound: {took:?} for a pass of {pass_ms} ms"
    );

    // Reachable again (here: moved to a repo that answers), the record is sent.
    let repo = status_repo(&host.dir.path().join("status.git"));
    let config = self::config(&host, &format!("  url: {}\n", repo.display()));
    agent_once(&config).assert_exit(0);
    assert_eq!(
        format!("{}\n", record_in(&repo, &host.partner)),
        local_record(&host)
    );
}

/// A state dir with a record for `partner` and an agent.yaml reporting to `url`, as a pass
/// leaves them; returns the config's path.
fn reporter(dir: &Path, partner: &str, url: &str, round: u32) -> PathBuf {
    let state = dir.join(partner);
    std::fs::create_dir_all(&state).unwrap();
    let record = serde_json::json!({
        "schema": 1,
        "partner": partner,
        "berth": "0.1.0 (test)",
        "revision": format!("{round:040}"),
        "exit": 0,
        "interval_secs": 300,
        "at": "2026-12-01T10:00:00Z",
        "window": {},
        "scripts": [{
            "script": "svc",
            "desired": { "version": format!("1.{round}.0"), "digest": "sha256:aa" },
            "running": { "version": format!("1.{round}.0"), "digest": "sha256:aa" },
            "state": "in-sync",
            "detail": "",
            "since": "2026-12-01T10:00:00Z"
        }]
    });
    let mut bytes = serde_json::to_vec_pretty(&record).unwrap();
    bytes.push(b'\n');
    std::fs::write(state.join("record.json"), bytes).unwrap();
    let config = state.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "partner: {partner}\nrepo:\n  url: /nonexistent\nstate_dir: {}\nreport:\n  url: {url}\n",
            state.display()
        ),
    )
    .unwrap();
    config
}

/// Six partners push to one branch at once, twice: every record lands, the history stays
/// linear and each commit touches its own partner's file only.
fn concurrent_pushes(repo: &Path, url: &str) {
    const PARTNERS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<String> = (0..PARTNERS).map(|i| format!("p{i}")).collect();
    for round in 1..=2 {
        let configs: Vec<PathBuf> = partners
            .iter()
            .map(|p| reporter(dir.path(), p, url, round))
            .collect();
        let children: Vec<_> = configs
            .iter()
            .map(|c| {
                Berth::new("agent-report")
                    .arg("--config")
                    .arg(c)
                    .command()
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && answer.contains("\"pushed\""),
                "{answer}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(commits(repo), 2 * PARTNERS);
    assert_eq!(
        git(repo, &["rev-list", "--merges", "main"]),
        "",
        "no merges: a linear history"
    );
    for line in git(repo, &["log", "--format=%H %ae", "main"]).lines() {
        let (commit, email) = line.split_once(' ').unwrap();
        let partner = email.trim_end_matches("@berth.invalid");
        assert_eq!(
            git(repo, &["show", "--name-only", "--format=", commit]),
            format!("partners/{partner}.json"),
            "commit {commit} by {partner}"
        );
    }
    for p in &partners {
        let doc: serde_json::Value = serde_json::from_str(&record_in(repo, p)).unwrap();
        assert_eq!(doc["partner"], p.as_str());
        assert_eq!(doc["scripts"][0]["running"]["version"], "1.2.0");
    }
}

#[test]
fn many_partners_push_to_one_branch_at_once_over_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let repo = status_repo(&dir.path().join("status.git"));
    concurrent_pushes(&repo, &format!("file://{}", repo.display()));
}

/// `git daemon`, serving the bare repos under `base` over `git://127.0.0.1:<port>/` with
/// pushes allowed; killed when dropped.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                "--informative-errors",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (Debian's git package) starts");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "git daemon did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn many_partners_push_to_one_branch_at_once_over_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let repo = status_repo(&dir.path().join("status.git"));
    let daemon = GitDaemon::start(dir.path());
    concurrent_pushes(
        &repo,
        &format!("git://127.0.0.1:{}/status.git", daemon.port),
    );
}

#[test]
fn the_daemon_reports_from_its_pass() {
    let host = Host::new("report-daemon");
    host.write(&versions("^1"));
    host.commit_all("first");
    let repo = status_repo(&host.dir.path().join("status.git"));
    let config = config(&host, &format!("  url: {}\n", repo.display()));
    let mut daemon = Berth::new("agent").arg("--config").arg(&config).spawn();
    let end = Instant::now() + Duration::from_secs(90);
    let found = loop {
        let shown = Command::new("git")
            .current_dir(&repo)
            .args(["show", &format!("main:partners/{}.json", host.partner)])
            .output()
            .unwrap();
        if shown.status.success() {
            break String::from_utf8(shown.stdout).unwrap();
        }
        if Instant::now() > end {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    run(Command::new("kill").args(["-TERM", &daemon.id().to_string()]));
    let _ = daemon.wait();
    assert!(!found.is_empty(), "the daemon's pass pushed no record");
    assert_eq!(found, local_record(&host));
}

/// The commented `report:` block of the example agent.yaml, uncommented, is a valid one.
#[test]
fn the_example_report_block_parses() {
    let example = std::fs::read_to_string(root().join("examples/agent/agent.yaml")).unwrap();
    let (before, block) = example.split_once("# report:\n").unwrap();
    let block: String = block
        .lines()
        .take_while(|l| l.starts_with("#   "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, format!("{before}report:\n{block}")).unwrap();
    let config = berth::agent::config::load(&path)
        .unwrap_or_else(|d| panic!("{}", d.render_text(Path::new(""))));
    let report = config.report.expect("a report block");
    assert_eq!(report.url, "ssh://git@git.example.org/fleet/status.git");
    assert_eq!(
        report.known_hosts.as_deref(),
        Some(Path::new("/etc/berth/status_known_hosts"))
    );
    assert_eq!(report.branch, "main");
    assert_eq!(
        report.signing_key.as_deref(),
        Some(Path::new("/etc/berth/report_signing_key"))
    );
}

/// A status repo over SSH, through a real sshd: the host key is checked against
/// `report.known_hosts` as the manifest fetch checks `repo.known_hosts`. A trusted server gets
/// the signed record; one whose key does not match gets nothing (berth never logs in), the
/// pass is untouched, and the status names the host and the key it offered.
#[test]
fn an_agent_reports_over_ssh_and_refuses_a_wrong_host_key() {
    let sshd = Sshd::start();
    let host = Host::new("report-ssh");
    host.write(&versions("^1"));
    host.commit_all("first");
    let repo = status_repo(&host.dir.path().join("status.git"));
    let (key, public) = host_key(host.dir.path());
    let known_hosts = host.dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", sshd.known_hosts_line())).unwrap();
    let impostor = keygen(host.dir.path(), "impostor");
    let wrong = host.dir.path().join("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!(
            "[127.0.0.1]:{} {}",
            sshd.port,
            std::fs::read_to_string(impostor.with_extension("pub")).unwrap()
        ),
    )
    .unwrap();
    let url = sshd.url(&repo);
    let config_with = |known_hosts: &Path| {
        config(
            &host,
            &format!(
                "  url: {url}\n  ssh_key: {}\n  known_hosts: {}\n  signing_key: {}\n",
                sshd.client_key().display(),
                known_hosts.display(),
                key.display()
            ),
        )
    };
    let logins = || sshd.log().matches("Accepted publickey for root").count();

    agent_once(&config_with(&known_hosts)).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(commits(&repo), 1, "{}", sshd.log());
    assert_eq!(
        format!("{}\n", record_in(&repo, &host.partner)),
        local_record(&host),
        "the repo holds the state dir's record, byte for byte"
    );
    assert!(logins() >= 1, "the push went through sshd:\n{}", sshd.log());
    assert_signed_by(&repo, &host, &public);

    // A new outcome to tell, and the server's key no longer matches: nothing is sent.
    host.write(&versions("=1.0.0"));
    host.commit_all("pin 1.0.0");
    let before = logins();
    agent_once(&config_with(&wrong)).assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0", "the pass converged");
    assert_eq!(commits(&repo), 1, "no commit landed");
    assert_eq!(logins(), before, "berth never logged in:\n{}", sshd.log());
    let status = status_json(&host);
    assert_eq!(status["last_pass"]["exit"], 0);
    let error = status["report"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("cannot reach {url}"))
            && error.contains(&format!(
                "the host key of [127.0.0.1]:{} changed",
                sshd.port
            ))
            && error.contains(&format!("ssh-ed25519 {}", sshd.fingerprint())),
        "{status:#}"
    );

    // Trusted again: the next pass, with the same outcome, sends the record.
    agent_once(&config_with(&known_hosts)).assert_exit(0);
    assert_eq!(commits(&repo), 2);
    let doc: serde_json::Value = serde_json::from_str(&record_in(&repo, &host.partner)).unwrap();
    assert_eq!(doc["scripts"][0]["running"]["version"], "1.0.0");
    assert_eq!(
        format!("{}\n", record_in(&repo, &host.partner)),
        local_record(&host)
    );
    assert_signed_by(&repo, &host, &public);
    let status = status_json(&host);
    assert_eq!(status["report"]["last_error"], serde_json::Value::Null);
}

/// An SSH status repo without `report.known_hosts` is refused when the config is read,
/// before any connection, as an SSH manifest repo without `repo.known_hosts` is.
#[test]
fn an_ssh_status_repo_without_known_hosts_is_refused_at_load() {
    let sshd = Sshd::start();
    let host = Host::new("report-nokh");
    host.write(&versions("^1"));
    host.commit_all("first");
    let repo = status_repo(&host.dir.path().join("status.git"));
    let url = sshd.url(&repo);
    let config = config(
        &host,
        &format!("  url: {url}\n  ssh_key: {}\n", sshd.client_key().display()),
    );
    let connections = sshd.log().matches("Connection from").count();
    let out = agent_once(&config);
    out.assert_exit(1);
    assert!(
        out.text().contains(&format!(
            "agent.yaml:8:8: error: `{url}` is an SSH remote: set report.known_hosts"
        )) && out.text().contains("ssh-keyscan"),
        "{}",
        out.text()
    );
    assert!(host.containers().is_empty(), "no pass ran");
    assert_eq!(
        sshd.log().matches("Connection from").count(),
        connections,
        "no connection was made:\n{}",
        sshd.log()
    );
}
