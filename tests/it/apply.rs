//! `berth plan` and `berth apply` against the machine's real Docker engine: what runs,
//! its labels, what the service answers, the exit code and the message.

use std::time::Duration;

use crate::common::*;

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

#[test]
fn creates_the_declared_container_with_labels_and_settings() {
    let host = Host::new("create");
    host.write(&Setup {
        env: vec![("REGION".into(), "KE".into())],
        ..Setup::default()
    });
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("create   svc"), "{}", out.text());
    assert_stable_snapshot!("apply_create", out.stdout());
    assert!(host.running());
    assert_eq!(host.served_version().as_deref(), Some("1.1.0"));
    let labels = |k: &str| {
        inspect(
            &host.name(),
            &format!("{{{{index .Config.Labels \"{k}\"}}}}"),
        )
    };
    assert_eq!(labels("berth.managed"), "true");
    assert_eq!(labels("berth.partner"), host.partner);
    assert_eq!(labels("berth.script"), "svc");
    assert_eq!(labels("berth.version"), "1.1.0");
    assert_eq!(labels("berth.digest"), image_id("1.1.0"));
    assert_eq!(labels("berth.revision"), "worktree");
    assert_eq!(labels("berth.spec-hash").len(), 64);
    // The container runs the pinned image, not the mutable tag.
    assert_eq!(inspect(&host.name(), "{{.Image}}"), image_id("1.1.0"));
    assert_eq!(inspect(&host.name(), "{{.HostConfig.Init}}"), "true");
    assert_eq!(inspect(&host.name(), "{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(inspect(&host.name(), "{{.Config.StopTimeout}}"), "5");
    assert!(inspect(&host.name(), "{{json .Config.Env}}").contains("REGION=KE"));
}

#[test]
fn honours_every_container_field() {
    let host = Host::new("fields");
    host.write(&Setup::default());
    let script = host.repo().join("scripts/svc.yaml");
    let text_before = std::fs::read_to_string(&script).unwrap();
    let extra = "  command: [\"/serve\"]\n  init: false\n  memory: 64m\n  cpus: 0.5\n  read_only: true\n  user: \"65534:65534\"\n  volumes: [\"berth-test-vol:/data:ro\"]\n";
    std::fs::write(
        &script,
        text_before.replace(
            "  stop_timeout: 5s\n",
            &format!("  stop_timeout: 5s\n{extra}"),
        ),
    )
    .unwrap();
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    let get = |f: &str| inspect(&host.name(), f);
    assert_eq!(get("{{json .Config.Cmd}}"), "[\"/serve\"]");
    assert_eq!(get("{{.HostConfig.Init}}"), "false");
    assert_eq!(get("{{.HostConfig.Memory}}"), (64u64 << 20).to_string());
    assert_eq!(get("{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(get("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(get("{{.Config.User}}"), "65534:65534");
    assert_eq!(
        get("{{json .HostConfig.Binds}}"),
        "[\"berth-test-vol:/data:ro\"]"
    );
    assert_eq!(host.served_version().as_deref(), Some("1.1.0"));
    drop(host);
    docker(&["volume", "rm", "-f", "berth-test-vol"]);
}

#[test]
fn second_apply_is_a_no_op() {
    let host = Host::new("noop");
    host.write(&Setup::default());
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();
    let plan = host.berth("plan", &["--exit-code"]);
    plan.assert_exit(0);
    assert!(plan.text().contains("0 change(s)"), "{}", plan.text());
    assert_stable_snapshot!("plan_text_in_sync", plan.stdout());
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("in sync"), "{}", out.text());
    assert_stable_snapshot!("apply_in_sync", out.stdout());
    assert_eq!(host.id(), id, "the container was not touched");
}

#[test]
fn replaces_on_a_new_version() {
    let host = Host::new("version");
    host.write(&versions("=1.0.0"));
    host.berth("apply", &[]).assert_exit(0);
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
    let old = host.id();

    host.write(&versions("^1"));
    let plan = host.berth("plan", &["--exit-code"]);
    plan.assert_exit(2);
    assert!(
        plan.text().contains("version 1.0.0 -> 1.1.0"),
        "{}",
        plan.text()
    );
    assert_stable_snapshot!("plan_text_replace", plan.stdout());

    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("1.0.0 -> 1.1.0"), "{}", out.text());
    assert_stable_snapshot!("apply_replace", out.stdout());
    assert_ne!(host.id(), old);
    assert_eq!(host.version_label(), "1.1.0");
    assert_eq!(host.served_version().as_deref(), Some("1.1.0"));
    assert_eq!(
        host.containers(),
        vec![host.name()],
        "the old container is gone"
    );
}

#[test]
fn replaces_on_an_env_change() {
    let host = Host::new("env");
    host.write(&Setup::default());
    host.berth("apply", &[]).assert_exit(0);
    let old = host.id();
    host.write(&Setup {
        env: vec![("MODE".into(), "fast".into())],
        ..Setup::default()
    });
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("replace"), "{}", out.text());
    assert_ne!(host.id(), old);
    assert!(inspect(&host.name(), "{{json .Config.Env}}").contains("MODE=fast"));
}

#[test]
fn starts_a_stopped_container() {
    let host = Host::new("drift");
    host.write(&Setup::default());
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();
    docker(&["stop", "-t", "1", &host.name()]);
    assert!(!host.running());
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("start"), "{}", out.text());
    assert!(host.running());
    assert_eq!(
        host.id(),
        id,
        "the same container was started, not a new one"
    );
}

#[test]
fn removes_a_container_no_longer_declared() {
    let host = Host::new("remove");
    host.write(&Setup::default());
    host.berth("apply", &[]).assert_exit(0);
    host.write(&Setup {
        opted_in: false,
        ..Setup::default()
    });
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("remove"), "{}", out.text());
    assert!(host.containers().is_empty());
}

#[test]
fn never_touches_unmanaged_containers() {
    let host = Host::new("unmanaged");
    host.write(&Setup {
        opted_in: false,
        ..Setup::default()
    });
    // Looks like berth's, but lacks berth.managed=true.
    let lookalike = format!("lookalike-{}", host.partner);
    let partner_label = format!("berth.partner={}", host.partner);
    let out = run(std::process::Command::new("docker").args([
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &lookalike,
        "--label",
        &partner_label,
        "--label",
        "berth.script=svc",
        "--label",
        "berth.managed=false",
        &format!("{IMAGE_REPO}:1.0.0"),
    ]));
    out.assert_exit(0);
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(!out.text().contains("remove"), "{}", out.text());
    assert_eq!(inspect(&lookalike, "{{.State.Running}}"), "true");
    assert_eq!(host.containers(), vec![lookalike]);
}

#[test]
fn rolls_back_when_health_fails_and_holds_the_digest() {
    let host = Host::new("rollback");
    host.write(&versions("=1.0.0"));
    host.berth("apply", &[]).assert_exit(0);
    let old = host.id();

    host.write(&Setup {
        versions: Some(format!("={UNHEALTHY}")),
        health_timeout: "2s",
        ..Setup::default()
    });
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(out.text().contains("ROLLED BACK"), "{}", out.text());
    assert!(out.text().contains("health check failed"), "{}", out.text());
    assert_eq!(host.id(), old, "the old container serves again");
    assert!(host.running());
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
    assert_eq!(host.containers(), vec![host.name()]);

    let again = host.berth("apply", &[]);
    again.assert_exit(0);
    assert!(
        again.text().contains("deferred(failed-health)"),
        "{}",
        again.text()
    );
    assert_stable_snapshot!("apply_held_digest", again.stdout());
    assert_eq!(host.id(), old, "a held digest is not retried");

    // A manifest change lifts the hold.
    host.write(&Setup {
        versions: Some(format!("={UNHEALTHY}")),
        env: vec![("HEALTH".into(), "ok".into())],
        ..Setup::default()
    });
    let fixed = host.berth("apply", &[]);
    fixed.assert_exit(0);
    assert_eq!(host.version_label(), UNHEALTHY);
}

#[test]
fn waits_for_the_window() {
    let host = Host::new("window");
    host.write(&Setup {
        windows: Some("  - days: [sat]\n    start: \"01:00\"\n    end: \"05:00\"\n".into()),
        ..Setup::default()
    });
    let closed = host.berth("apply", &["--now", "2026-11-21T12:00:00Z"]);
    closed.assert_exit(0);
    assert!(
        closed.text().contains("deferred(window)"),
        "{}",
        closed.text()
    );
    assert!(
        closed.text().contains("2026-11-28T01:00:00Z"),
        "{}",
        closed.text()
    );
    assert_stable_snapshot!("apply_deferred_window", closed.stdout());
    assert!(host.containers().is_empty());

    let forced = host.berth(
        "apply",
        &["--now", "2026-11-21T12:00:00Z", "--ignore-window"],
    );
    forced.assert_exit(0);
    assert!(host.running());
}

#[test]
fn a_busy_service_defers_the_replace() {
    let host = Host::new("busy");
    let busy = |v: &str| Setup {
        versions: Some(v.into()),
        env: vec![("STATE".into(), "busy".into())],
        ..Setup::default()
    };
    host.write(&busy("=1.0.0"));
    host.berth("apply", &[]).assert_exit(0);
    let old = host.id();
    host.write(&busy("^1"));
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("deferred(busy)"), "{}", out.text());
    assert!(out.text().contains("`busy`, not `idle`"), "{}", out.text());
    assert_stable_snapshot!("apply_deferred_busy", out.stdout());
    assert_eq!(host.id(), old);

    let forced = host.berth("apply", &["--ignore-idle"]);
    forced.assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
}

#[test]
fn invalid_manifests_change_nothing() {
    let host = Host::new("invalid");
    host.write(&Setup::default());
    let p = host.repo().join("scripts/svc.yaml");
    let bad = std::fs::read_to_string(&p)
        .unwrap()
        .replace("network: host", "network: host\n  privileged: true");
    std::fs::write(&p, bad).unwrap();
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(out.text().contains("scripts/svc.yaml:"), "{}", out.text());
    assert!(
        out.text().contains("privileged containers are not allowed"),
        "{}",
        out.text()
    );
    assert!(host.containers().is_empty());
}

#[test]
fn unreachable_engine_exits_3() {
    let host = Host::new("noengine");
    host.write(&Setup::default());
    let out = host.berth_env(
        "apply",
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    out.assert_exit(3);
    assert!(out.text().contains("container engine"), "{}", out.text());
}

/// Aborts a replace at each destructive point in turn; the next run must find exactly one
/// container, serving, and converge.
#[test]
fn recovers_after_a_crash_at_every_step() {
    for point in 1..=9 {
        let host = Host::new(&format!("crash{point}"));
        host.write(&versions("=1.0.0"));
        host.berth("apply", &[]).assert_exit(0);
        host.write(&versions("^1"));
        let crashed = host.berth_env("apply", &[], &[("BERTH_ABORT_AFTER", &point.to_string())]);
        assert_eq!(
            crashed.code(),
            None,
            "point {point}: aborted by signal\n{}",
            crashed.text()
        );
        let left = host.containers();
        assert!(
            !left.is_empty() && left.len() <= 2,
            "point {point}: never zero containers: {left:?}"
        );

        // Recovery restarts the old service, which may take a moment to answer its idle
        // probe again (until then berth rightly defers the replace): a few passes converge.
        let mut out = host.berth("apply", &[]);
        for _ in 0..10 {
            out.assert_exit(0);
            if !out.text().contains("deferred(busy)") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            out = host.berth("apply", &[]);
        }
        assert!(
            !out.text().contains("deferred(busy)"),
            "point {point}: {}",
            out.text()
        );
        assert_eq!(
            host.containers(),
            vec![host.name()],
            "point {point}: {}",
            out.text()
        );
        assert!(host.running(), "point {point}");
        assert_eq!(
            host.version_label(),
            "1.1.0",
            "point {point}: {}",
            out.text()
        );
        assert_eq!(
            host.served_version().as_deref(),
            Some("1.1.0"),
            "point {point}"
        );
    }
}

/// Real `kill -9` at arbitrary moments of a replace.
#[test]
fn recovers_after_kill_9_at_random_times() {
    let host = Host::new("kill9");
    let mut seed = std::process::id() as u64;
    for round in 0..6 {
        let from = if round % 2 == 0 { "=1.0.0" } else { "=1.1.0" };
        let to = if round % 2 == 0 { "=1.1.0" } else { "=1.0.0" };
        host.write(&versions(from));
        host.berth("apply", &[]).assert_exit(0);
        host.write(&versions(to));
        let mut child = host.command("apply").spawn();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 250));
        let _ = child.kill();
        let _ = child.wait();
        let left = host.containers();
        assert!(
            !left.is_empty() && left.len() <= 2,
            "round {round}: {left:?}"
        );

        // The rolled-back service may take a moment to answer its idle probe again (until
        // then berth rightly defers), and a create request the killed run had sent may land
        // late and be cleaned up by the next pass: converge within a few passes.
        let mut out = host.berth("apply", &[]);
        for _ in 0..10 {
            out.assert_exit(0);
            if !out.text().contains("deferred(busy)") && host.containers() == vec![host.name()] {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            out = host.berth("apply", &[]);
        }
        assert_eq!(
            host.containers(),
            vec![host.name()],
            "round {round}: {}",
            out.text()
        );
        assert_eq!(
            host.version_label(),
            to.trim_start_matches('='),
            "round {round}: {}",
            out.text()
        );
        assert!(host.running());
    }
}

#[test]
fn plan_formats() {
    let host = Host::new("formats");
    host.write(&Setup::default());
    let json = host.berth("plan", &["--format", "json"]);
    json.assert_exit(0);
    let v = json.json();
    assert_eq!(v["partner"], host.partner.as_str());
    assert_eq!(v["changes"], 1);
    assert_eq!(v["steps"][0]["action"], "create");
    assert_eq!(v["steps"][0]["gate"]["state"], "allowed");
    assert_eq!(v["steps"][0]["to"]["version"], "1.1.0");
    assert_stable_snapshot!("plan_json", json.stdout());
    let md = host.berth("plan", &["--format", "markdown"]);
    md.assert_exit(0);
    assert!(
        md.text().contains("| create | `svc` | 1.1.0 |"),
        "{}",
        md.text()
    );
    assert_stable_snapshot!("plan_markdown", md.stdout());
    assert!(host.containers().is_empty(), "plan changes nothing");
}

/// A no-op pass makes one container list call, one image list per repository, and changes
/// nothing: an idle host costs its engine next to nothing.
#[test]
fn a_no_op_pass_lists_containers_once_and_changes_nothing() {
    let host = Host::new("calls");
    host.write(&Setup::default());
    host.berth("apply", &[]).assert_exit(0);
    let proxy = crate::common::proxy::Proxy::start(host.dir.path());
    let out = host.berth_env("apply", &[], &[("DOCKER_HOST", &proxy.docker_host())]);
    out.assert_exit(0);
    assert!(out.text().contains("in sync"), "{}", out.text());
    let calls = proxy.requests();
    assert_eq!(proxy.count("GET", "/containers/json"), 1, "{calls:#?}");
    assert_eq!(proxy.count("GET", "/images/json"), 1, "{calls:#?}");
    for verb in ["POST", "DELETE", "PUT"] {
        assert_eq!(proxy.count(verb, "/"), 0, "{calls:#?}");
    }
}
