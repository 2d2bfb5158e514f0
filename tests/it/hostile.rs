//! berth under peers that misbehave on purpose or by breaking: registries and probes that
//! never stop talking, pagination that loops, digests that are not digests, manifest and
//! env files that are FIFOs or kernel files. Each case checks what a user would: the exit
//! code, the message naming the peer and the bound, the memory the run took, and that the
//! host was left as it was.

use std::time::Duration;

use crate::common::registry::{BadRegistry, Misbehaviour};
use crate::common::*;
use crate::registry::oci;

/// Far above what a pass needs (a few MiB) and far below what an unbounded read reaches in
/// the time a peer is given (gigabytes).
const MEMORY_BOUND_KIB: u64 = 100 << 10;

#[test]
fn an_endless_tag_list_is_cut_off_at_its_bound() {
    let bad = BadRegistry::start(Misbehaviour::Endless);
    let host = Host::new("endless-tags");
    host.write(&oci(&bad.host(), "^1"));
    let (out, peak) = host
        .command("plan")
        .run_watching_memory(Duration::from_secs(60));
    out.assert_exit(3);
    assert!(
        out.text().contains(&format!(
            "registry {} sent more than 4096 KiB for the tag list of gh/svc: refused",
            bad.host()
        )),
        "{}",
        out.text()
    );
    assert!(peak < MEMORY_BOUND_KIB, "peak RSS {peak} KiB");
}

#[test]
fn a_tag_list_that_links_back_to_itself_is_a_loop() {
    let bad = BadRegistry::start(Misbehaviour::LinkLoop);
    let host = Host::new("link-loop");
    host.write(&oci(&bad.host(), "^1"));
    let out = host.berth("plan", &[]);
    out.assert_exit(3);
    assert!(out.text().contains("a pagination loop"), "{}", out.text());
    assert_eq!(
        bad.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the page is fetched once"
    );
    assert!(
        out.elapsed() < Duration::from_secs(10),
        "{:?}",
        out.elapsed()
    );
}

#[test]
fn a_malformed_digest_reaches_neither_the_engine_nor_the_lock() {
    for digest in [
        "sha256:../../etc/passwd",
        r#"sha256:aa", image: "evil.example/x", version: "9.9.9"#,
        "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
    ] {
        let bad = BadRegistry::start(Misbehaviour::Digest(digest));
        let host = Host::new("bad-digest");
        host.write(&oci(&bad.host(), "^1"));
        let out = Berth::new("lock").arg(host.repo()).run();
        out.assert_exit(3);
        assert!(
            out.text().contains("which is not sha256:<64 hex digits>"),
            "{digest}: {}",
            out.text()
        );
        assert!(!host.repo().join("berth.lock").exists(), "{digest}");
        let apply = host.berth("apply", &[]);
        apply.assert_exit(3);
        assert!(
            apply.text().contains("deferred(unresolved)"),
            "{}",
            apply.text()
        );
        assert!(host.containers().is_empty(), "nothing was created");
    }
}

/// The partner file with its idle probe pointed at `url`.
fn idle_at(host: &Host, url: &str) {
    let path = host.repo().join(format!("partners/{}.yaml", host.partner));
    let text = std::fs::read_to_string(&path).unwrap();
    let probe = format!("http://127.0.0.1:{}/status", host.port);
    assert!(text.contains(&probe));
    std::fs::write(&path, text.replace(&probe, url)).unwrap();
}

#[test]
fn an_endless_idle_answer_is_cut_off_and_counts_as_busy() {
    let bad = BadRegistry::start(Misbehaviour::Endless);
    let host = Host::new("endless-idle");
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();
    host.write(&Setup::default());
    idle_at(&host, &format!("http://{}/status", bad.host()));
    let (out, peak) = host
        .command("apply")
        .run_watching_memory(Duration::from_secs(60));
    out.assert_exit(0);
    assert!(out.text().contains("deferred(busy)"), "{}", out.text());
    assert!(
        out.text()
            .contains("sent more than 64 KiB for its answer: refused"),
        "{}",
        out.text()
    );
    assert!(peak < MEMORY_BOUND_KIB, "peak RSS {peak} KiB");
    assert_eq!(host.id(), id, "the running container was not touched");
}

#[test]
fn an_endless_health_answer_is_cut_off_and_fails_the_check() {
    let bad = BadRegistry::start(Misbehaviour::Endless);
    let host = Host::new("endless-health");
    host.write(&Setup {
        health_timeout: "3s",
        ..Setup::default()
    });
    let script = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&script).unwrap();
    let own = format!("http://127.0.0.1:{}/health", host.port);
    std::fs::write(
        &script,
        text.replace(&own, &format!("http://{}/health", bad.host())),
    )
    .unwrap();
    let (out, peak) = host
        .command("apply")
        .run_watching_memory(Duration::from_secs(60));
    out.assert_exit(1);
    assert!(
        out.text()
            .contains("sent more than 64 KiB for its answer: refused"),
        "{}",
        out.text()
    );
    assert!(peak < MEMORY_BOUND_KIB, "peak RSS {peak} KiB");
    assert!(
        host.containers().is_empty(),
        "the failed container was removed"
    );
}

fn mkfifo(path: &std::path::Path) {
    run(std::process::Command::new("mkfifo").arg(path)).assert_exit(0);
}

#[test]
fn a_fifo_in_the_manifest_repo_is_refused_not_waited_on() {
    for rel in ["partners/extra.yaml", "fleet.yaml", "berth.lock"] {
        let host = Host::new("fifo");
        host.write(&Setup::default());
        mkfifo(&host.repo().join(rel));
        let (out, _) = Berth::new("validate")
            .arg(host.repo())
            .run_watching_memory(Duration::from_secs(20));
        out.assert_exit(1);
        assert!(
            out.text().contains(&format!(
                "{rel}:1:1: error: a FIFO, not a regular file: refused"
            )),
            "{rel}: {}",
            out.text()
        );
        let (apply, _) = host
            .command("apply")
            .run_watching_memory(Duration::from_secs(20));
        apply.assert_exit(1);
        assert!(host.containers().is_empty(), "{rel}: nothing changed");
    }
}

#[test]
fn env_files_that_are_not_plain_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("secrets.env");
    mkfifo(&fifo);
    let nul = dir.path().join("nul.env");
    std::fs::write(&nul, b"A=1\0B=2\n").unwrap();
    let into_proc = dir.path().join("environ.env");
    std::os::unix::fs::symlink("/proc/self/environ", &into_proc).unwrap();
    // The floor refuses what it can tell from the path and the file's kind, before reading
    // (exit 1, like any refused step); what only reading shows makes the script unresolved.
    let cases = [
        (
            fifo.display().to_string(),
            1,
            "a FIFO, not a regular file".to_owned(),
        ),
        (
            nul.display().to_string(),
            3,
            "contains a NUL byte".to_owned(),
        ),
        (
            into_proc.display().to_string(),
            1,
            ": under /proc, which holds no env files".to_owned(),
        ),
        ("/dev/zero".to_owned(), 1, "under /dev".to_owned()),
    ];
    for (path, code, why) in cases {
        let host = Host::new("env-file");
        host.write(&Setup::default());
        let partner = host.repo().join(format!("partners/{}.yaml", host.partner));
        let text = std::fs::read_to_string(&partner).unwrap();
        std::fs::write(
            &partner,
            text.replace(
                "  - script: svc\n",
                &format!("  - script: svc\n    env_files: [\"{path}\"]\n"),
            ),
        )
        .unwrap();
        let (out, _) = host
            .command("apply")
            .run_watching_memory(Duration::from_secs(20));
        out.assert_exit(code);
        let said = if code == 1 {
            format!("REFUSED(policy): env file {path}")
        } else {
            format!("env file {path} refused")
        };
        assert!(
            out.text().contains(&said) && out.text().contains(&why),
            "{path}: {}",
            out.text()
        );
        assert!(host.containers().is_empty(), "{path}: nothing was created");
    }
}

/// The script file without its `health:` block.
fn without_health(host: &Host) {
    let path = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("health:\n").expect("a health block");
    std::fs::write(&path, &text[..at]).unwrap();
}

#[test]
fn a_crash_looping_container_is_not_healthy_without_a_probe() {
    let host = Host::new("crashloop");
    host.write(&Setup {
        env: vec![("LISTEN".into(), "not-an-address".into())],
        ..Setup::default()
    });
    without_health(&host);
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(
        out.text().contains("health check failed: the container"),
        "{}",
        out.text()
    );
    assert!(
        host.containers().is_empty(),
        "the crash-looping container was removed"
    );
    let again = host.berth("apply", &[]);
    again.assert_exit(0);
    assert!(
        again.text().contains("deferred(failed-health)"),
        "{}",
        again.text()
    );
}

#[test]
fn a_fixed_manifest_replaces_a_crash_looping_container() {
    let host = Host::new("crashfix");
    // No idle probe: the service that would answer it is the one crash-looping.
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        idle: false,
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    // Make the running container crash-loop: stop it, hold its port, start it again.
    docker(&["stop", "-t", "1", &host.name()]);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", host.port)).unwrap();
    docker(&["start", &host.name()]);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while inspect(&host.name(), "{{.RestartCount}}") == "0" {
        assert!(
            std::time::Instant::now() < end,
            "the container did not crash-loop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The fix: a new version, listening on a port of its own.
    let port = free_port();
    let script = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&script).unwrap();
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    let fixed = std::fs::read_to_string(&script)
        .unwrap()
        .replace(&host.port.to_string(), &port.to_string());
    assert_ne!(text, fixed);
    std::fs::write(&script, fixed).unwrap();
    let out = host.berth("apply", &[]);
    drop(squatter);
    out.assert_exit(0);
    assert!(
        out.text().contains("replace") && out.text().contains("done"),
        "{}",
        out.text()
    );
    assert_eq!(host.containers(), vec![host.name()]);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(
        http_get(port, "/version").map(|(s, _)| s),
        Some(200),
        "the fixed version serves"
    );
}

/// A host at 1.0.0 from a real registry, with 1.1.0 pushed as an image no engine has yet,
/// served through a front whose blob downloads behave as `link` says.
fn behind_a_bad_link(
    tag: &str,
    link: crate::common::slow::Link,
) -> (
    Host,
    crate::common::registry::Registry,
    crate::common::slow::SlowFront,
) {
    use crate::common::registry::Registry;
    use crate::common::slow::{SlowFront, unique_image};
    let registry = Registry::start();
    registry.push(&format!("{IMAGE_REPO}:1.0.0"), "gh/svc", "1.0.0");
    let host = Host::new(tag);
    host.write(&oci(&registry.host(), "=1.0.0"));
    host.berth("apply", &[]).assert_exit(0);
    let slow_image = unique_image(&host.partner, 256 << 10);
    registry.push(&slow_image, "gh/svc", "1.1.0");
    docker(&["rmi", &slow_image]);
    let front = SlowFront::start(registry.port, link);
    host.write(&oci(&front.host(), "^1"));
    (host, registry, front)
}

#[test]
fn a_stalled_pull_is_abandoned_and_touches_nothing() {
    let (host, _registry, front) =
        behind_a_bad_link("stalled-pull", crate::common::slow::Link::Stalled);
    let id = host.id();
    let out = host.berth_env("apply", &[], &[("BERTH_PULL_STALL", "2")]);
    out.assert_exit(3);
    assert!(out.text().contains("NOT PULLED"), "{}", out.text());
    assert!(
        out.text()
            .contains("no progress for 2 s (BERTH_PULL_STALL)"),
        "{}",
        out.text()
    );
    assert!(
        out.text()
            .contains(&format!("from {}/gh/svc, after ", front.host())),
        "the registry and the time it took: {}",
        out.text()
    );
    assert!(
        out.elapsed() < Duration::from_secs(30),
        "{:?}",
        out.elapsed()
    );
    assert_eq!(host.id(), id, "the old container still serves");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
}

#[test]
fn a_crawling_pull_is_abandoned_at_its_deadline() {
    let (host, _registry, _front) =
        behind_a_bad_link("slow-pull", crate::common::slow::Link::Throttled(3 << 10));
    let id = host.id();
    let out = host.berth_env(
        "apply",
        &[],
        &[("BERTH_PULL_DEADLINE", "4"), ("BERTH_PULL_STALL", "60")],
    );
    out.assert_exit(3);
    assert!(
        out.text()
            .contains("not done after 4 s (BERTH_PULL_DEADLINE)"),
        "{}",
        out.text()
    );
    assert!(
        out.elapsed() < Duration::from_secs(30),
        "{:?}",
        out.elapsed()
    );
    assert_eq!(host.id(), id, "the old container still serves");
}

#[test]
fn sigterm_abandons_a_pre_pull_at_once() {
    let (host, _registry, _front) = behind_a_bad_link(
        "sigterm-pull",
        crate::common::slow::Link::Throttled(3 << 10),
    );
    let id = host.id();
    let config = host.agent_config(&format!("  url: {}\n", host.repo().display()), "");
    let mut daemon = Berth::new("agent").arg("--config").arg(&config).spawn();
    // Well into the pull, which would take over a minute at 3 KB/s.
    std::thread::sleep(Duration::from_secs(4));
    run(std::process::Command::new("kill").args(["-TERM", &daemon.id().to_string()]));
    let asked = std::time::Instant::now();
    let code = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the agent did not stop within 5 s of SIGTERM during a pull"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert_eq!(host.id(), id, "the old container still serves");
}

#[test]
fn plan_reads_the_journal_of_a_replace_in_flight() {
    let host = Host::new("inflight");
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    host.write(&Setup::default());
    // Killed after the old container was renamed aside and the new one took its name.
    let crashed = host.berth_env("apply", &[], &[("BERTH_ABORT_AFTER", "5")]);
    assert_eq!(crashed.code(), None, "{}", crashed.text());
    assert_eq!(host.containers().len(), 2, "{:?}", host.containers());
    let plan = host.berth("plan", &[]);
    plan.assert_exit(0);
    assert!(
        plan.text().contains("deferred(in-flight)"),
        "{}",
        plan.text()
    );
    assert!(!plan.text().contains("leftover"), "{}", plan.text());
    // The next apply recovers it, and converges.
    let mut out = host.berth("apply", &[]);
    for _ in 0..10 {
        if !out.text().contains("deferred(busy)") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = host.berth("apply", &[]);
    }
    out.assert_exit(0);
    assert_eq!(host.containers(), vec![host.name()]);
    assert_eq!(host.version_label(), "1.1.0");
}

#[test]
fn an_engine_that_dies_under_a_replace_exits_3_and_is_recovered() {
    use crate::common::dockerd::PrivateEngine;
    let host = Host::new("engine-death");
    let engine = PrivateEngine::start("death");
    engine.load(&format!("{IMAGE_REPO}:1.0.0"));
    engine.load(&format!("{IMAGE_REPO}:{UNHEALTHY}"));
    let apply = || {
        engine
            .berth("apply")
            .arg(host.repo())
            .args(["--partner", &host.partner, "--state-dir"])
            .arg(host.state_dir())
    };
    let at = |v: &str| Setup {
        versions: Some(v.into()),
        idle: false,
        health_timeout: "30s",
        ..Setup::default()
    };
    host.write(&at("=1.0.0"));
    apply().run().assert_exit(0);
    let running = |name: &str| {
        engine
            .docker(&["inspect", "-f", "{{.State.Running}}", name])
            .stdout()
            .trim()
            == "true"
    };
    assert!(running(&host.name()));

    // A replace whose new version never turns healthy: berth waits on its health check
    // while the engine is killed.
    host.write(&at(&format!("={UNHEALTHY}")));
    let replacing = std::thread::scope(|s| {
        let run = s.spawn(|| apply().run());
        let end = std::time::Instant::now() + Duration::from_secs(20);
        // The old container parked aside and the new one up under the name: the cut-over
        // is done, the health wait under way.
        let parked = format!("{}.old", host.name());
        while !(engine.docker(&["inspect", &parked]).code() == Some(0) && running(&host.name())) {
            assert!(
                std::time::Instant::now() < end,
                "the cut-over never happened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        engine.kill();
        run.join().unwrap()
    });
    replacing.assert_exit(3);
    assert!(
        replacing
            .text()
            .contains("the container engine stopped answering")
            || replacing
                .text()
                .contains("cannot connect to the container engine"),
        "{}",
        replacing.text()
    );

    // The engine comes back; the next run finds the journal and rolls the replace back.
    engine.up();
    host.write(&at("=1.0.0"));
    let recovered = apply().run();
    recovered.assert_exit(0);
    assert!(
        recovered
            .text()
            .contains("rolled back an interrupted update"),
        "{}",
        recovered.text()
    );
    let names = engine.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(
        names.stdout().trim(),
        host.name(),
        "one container, the old one"
    );
    assert!(running(&host.name()));
    assert_eq!(
        engine
            .docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"berth.version\"}}",
                &host.name()
            ])
            .stdout()
            .trim(),
        "1.0.0"
    );
}

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(at))
        .assert_exit(0);
        SmallDisk(at.to_owned())
    }

    /// Writes until the disk is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_directory_exits_3_and_leaves_the_old_version_serving() {
    let host = Host::new("full-disk");
    let disk = SmallDisk::mount(&host.state_dir());
    host.write(&Setup {
        versions: Some("=1.0.0".into()),
        ..Setup::default()
    });
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();
    disk.fill();
    host.write(&Setup::default());
    let out = host.berth("apply", &[]);
    out.assert_exit(3);
    assert!(
        out.text().contains("No space left on device"),
        "{}",
        out.text()
    );
    assert_eq!(host.id(), id, "the old container still serves");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
    let left: Vec<_> = std::fs::read_dir(host.state_dir().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "no journal and no temporary file: {left:?}"
    );
}

#[test]
fn a_health_answer_from_another_process_does_not_make_a_crash_loop_healthy() {
    // Something else on the host answers the health URL while the new container
    // crash-loops: the answer must not count.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut c in impostor.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let host = Host::new("impostor");
    host.write(&Setup {
        env: vec![("LISTEN".into(), "not-an-address".into())],
        idle: false,
        health_timeout: "5s",
        ..Setup::default()
    });
    let script = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace(
            &format!("http://127.0.0.1:{}/health", host.port),
            &format!("http://127.0.0.1:{port}/health"),
        ),
    )
    .unwrap();
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(
        out.text().contains("FAILED: health check failed"),
        "{}",
        out.text()
    );
    assert!(
        host.containers().is_empty(),
        "the crash-looping container was removed"
    );
}
