//! The floor that holds on every host, with no policy file: a script may not bind-mount
//! the host's root, the kernel's or devices' filesystems, the engine's socket (under any
//! name) or data, `/etc` read-write, or berth's own configuration and state. Judged on the
//! resolved path (`..`, symlinks, trailing slashes); a refused container is never created,
//! as the engine itself shows, and the partner's other scripts still converge.

use crate::common::*;

/// The script's container with one more `volumes` entry.
fn mounting(host: &Host, volume: &str) {
    let path = host.repo().join("scripts/svc.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "container:\n",
            &format!("container:\n  volumes: [\"{volume}\"]\n"),
            1,
        ),
    )
    .unwrap();
}

/// A second script of the partner, with nothing to refuse.
fn with_a_harmless_script(host: &Host) -> String {
    let port = free_port();
    host.add_script(
        "other",
        &format!(
            "container:\n  env: {{ PORT: \"{port}\" }}\n  network: host\nhealth:\n  http: http://127.0.0.1:{port}/health\n"
        ),
    )
}

#[test]
fn the_floor_refuses_what_would_hand_a_script_the_host() {
    let dir = tempfile::tempdir().unwrap();
    // A path that looks harmless but leads to berth's own configuration.
    let innocent = dir.path().join("shared");
    std::os::unix::fs::symlink("/etc/berth", &innocent).unwrap();
    let innocent = innocent.display().to_string();
    let cases = [
        (
            "/var/run/docker.sock:/var/run/docker.sock",
            "the container engine's socket",
        ),
        ("/:/host:ro", "the host's root"),
        ("/srv/../proc:/p:ro", "/proc"),
        ("/dev/:/d:ro", "/dev"),
        ("/etc/ssl:/etc-ssl", "/etc read-write"),
        ("/etc:/etc-host:ro", "berth's own configuration"),
        (&format!("{innocent}:/cfg:ro"), "berth's own configuration"),
        ("/var/lib/docker:/data:ro", "the container engine's data"),
    ];
    for (volume, why) in cases {
        let host = Host::new("floor");
        host.write(&Setup {
            idle: false,
            ..Setup::default()
        });
        mounting(&host, volume);
        let other = with_a_harmless_script(&host);
        Berth::new("validate").arg(host.repo()).run().assert_exit(0);
        let plan = host.berth("plan", &[]);
        assert!(
            plan.text().contains("refused(policy)"),
            "{volume}: {}",
            plan.text()
        );
        let out = host.berth("apply", &[]);
        out.assert_exit(1);
        assert!(
            out.text().contains("REFUSED(policy)") && out.text().contains(why),
            "{volume}: {}",
            out.text()
        );
        assert_eq!(
            host.containers(),
            vec![other.clone()],
            "{volume}: the refused container was never created; the other one was"
        );
    }
}

#[test]
fn a_socket_under_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("harmless");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let host = Host::new("floor-sock");
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    mounting(&host, &format!("{}:/run/x.sock", socket.display()));
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(out.text().contains("a socket"), "{}", out.text());
    assert!(host.containers().is_empty());
    // The directory that holds it, a level up: the container would reach the socket inside.
    let host = Host::new("floor-sock-dir");
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    mounting(&host, &format!("{}:/srv:ro", dir.path().display()));
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(
        out.text().contains("a socket, or a directory holding one"),
        "{}",
        out.text()
    );
    assert!(host.containers().is_empty());
}

#[test]
fn ordinary_mounts_and_etc_read_only_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let host = Host::new("floor-ok");
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    mounting(&host, &format!("{data}:/data:ro\", \"/etc/ssl:/etc/ssl:ro"));
    host.berth("apply", &[]).assert_exit(0);
    assert!(host.running());
    assert_eq!(
        inspect(&host.name(), "{{json .HostConfig.Binds}}"),
        format!("[\"{data}:/data:ro\",\"/etc/ssl:/etc/ssl:ro\"]")
    );
}

#[test]
fn berths_own_state_is_guarded_when_given_relative() {
    let host = Host::new("floor-own");
    host.write(&Setup {
        idle: false,
        ..Setup::default()
    });
    mounting(
        &host,
        &format!("{}:/s:ro", host.dir.path().join("own-state").display()),
    );
    let out = Berth::new("apply")
        .arg(host.repo())
        .args(["--partner", &host.partner, "--state-dir", "own-state"])
        .current_dir(host.dir.path())
        .run();
    out.assert_exit(1);
    assert!(
        out.text().contains("it mounts") && out.text().contains("own-state: berth's own state"),
        "{}",
        out.text()
    );
    assert!(host.containers().is_empty());
}
