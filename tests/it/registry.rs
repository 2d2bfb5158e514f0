//! The `oci` source against a real registry (Debian's `docker-registry` on loopback): the
//! seed's end-to-end update, how tags resolve to a version, pagination, authentication,
//! pulls by digest, and registries that are down, slow, rate-limiting or broken.

use std::time::{Duration, Instant};

use crate::common::registry::{
    self, AuthFront, AuthMode, BadRegistry, Misbehaviour, PASS, Registry, USER,
};
use crate::common::*;

const REPO: &str = "gh/svc";

pub(crate) fn oci(host: &str, versions: &str) -> Setup {
    Setup {
        versions: Some(versions.into()),
        image: Some(format!(
            "  source: oci\n  registry: {host}\n  repository: {REPO}\n"
        )),
        ..Setup::default()
    }
}

fn local(tag: &str) -> String {
    format!("{IMAGE_REPO}:{tag}")
}

fn plan_json(host: &Host) -> (Run, serde_json::Value) {
    let out = host.berth("plan", &["--format", "json"]);
    let v = out.json();
    (out, v)
}

/// The seed's test: two semver-tagged images in the registry, the partner at the older
/// one and idle; after `berth apply` the container runs the highest tag, its
/// `berth.version` says so, and the service itself answers that version.
#[test]
fn seed_end_to_end_update_to_the_highest_tag() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let host = Host::new("seed");
    host.write(&oci(&registry.host(), "^1"));
    host.berth("apply", &[]).assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));

    registry.push(&local("1.1.0"), REPO, "1.1.0");
    let (status, _, body) = registry::http(
        registry.port,
        "GET",
        &format!("/v2/{REPO}/tags/list"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let highest = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .max()
        .unwrap()
        .to_owned();
    assert_eq!(highest, "1.1.0");

    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.text().contains("1.0.0 -> 1.1.0"), "{}", out.text());
    assert_eq!(host.version_label(), highest);
    assert_eq!(host.served_version().as_deref(), Some(highest.as_str()));
    let digest = registry.digest(REPO, "1.1.0");
    assert_eq!(
        inspect(&host.name(), "{{index .Config.Labels \"berth.digest\"}}"),
        digest
    );
    assert_eq!(
        inspect(&host.name(), "{{.Config.Image}}"),
        format!("{}/{REPO}@{digest}", registry.host()),
        "the container runs the digest, not the mutable tag"
    );
}

/// Non-semver tags ignored, pre-releases only when allowed, `v` prefix
/// accepted with the unprefixed tag winning a tie, the highest wins; over two pages of tags,
/// listed once per pass however many scripts share the repository.
#[test]
fn resolution_rules_over_paginated_tags() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    for tag in [
        "1.1.0",
        "v1.2.0",
        "v1.3.0",
        "1.3.0",
        "2.0.0-rc.1",
        "latest",
        "main",
    ] {
        registry.retag(REPO, "1.0.0", tag);
    }
    for n in 0..1000 {
        registry.retag(REPO, "1.0.0", &format!("build-{n:04}"));
    }
    let front = AuthFront::start(registry.port, AuthMode::AnonymousToken);
    let host = Host::new("rules");
    host.write(&oci(&front.host(), "*"));

    let (out, v) = plan_json(&host);
    out.assert_exit(0);
    assert_eq!(
        v["steps"][0]["to"]["version"], "1.3.0",
        "unprefixed wins over v1.3.0; 2.0.0-rc.1 is a pre-release"
    );
    assert_eq!(
        v["steps"][0]["to"]["digest"],
        registry.digest(REPO, "1.3.0").as_str()
    );
    // 1,008 tags in pages of 400 (the front pages them as hosted registries do).
    assert_eq!(
        front.count(&format!("/v2/{REPO}/tags/list")),
        3,
        "three pages, each fetched once"
    );

    host.write(&Setup {
        prerelease: true,
        ..oci(&front.host(), "*")
    });
    let (out, v) = plan_json(&host);
    out.assert_exit(0);
    assert_eq!(v["steps"][0]["to"]["version"], "2.0.0-rc.1");

    host.write(&oci(&front.host(), "~1.2"));
    let (_, v) = plan_json(&host);
    assert_eq!(
        v["steps"][0]["to"]["version"], "v1.2.0",
        "a v-prefixed tag counts as semver"
    );
}

#[test]
fn one_tag_listing_per_repository_however_many_scripts_use_it() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let front = AuthFront::start(registry.port, AuthMode::AnonymousToken);
    let host = Host::new("shared");
    host.write(&oci(&front.host(), "^1"));
    // A second script on the same repository, on a port of its own.
    let script = std::fs::read_to_string(host.repo().join("scripts/svc.yaml")).unwrap();
    std::fs::write(
        host.repo().join("scripts/svc2.yaml"),
        script
            .replace("name: svc", "name: svc2")
            .replace(&host.port.to_string(), &free_port().to_string()),
    )
    .unwrap();
    let partner_path = host.repo().join(format!("partners/{}.yaml", host.partner));
    let partner = std::fs::read_to_string(&partner_path).unwrap();
    std::fs::write(&partner_path, format!("{partner}  - script: svc2\n")).unwrap();

    let (out, v) = plan_json(&host);
    out.assert_exit(0);
    assert_eq!(v["steps"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(front.count(&format!("/v2/{REPO}/tags/list")), 1);
    assert_eq!(
        front.count(&format!("/v2/{REPO}/manifests/1.0.0")),
        1,
        "one digest lookup for the tag both chose"
    );
}

#[test]
fn credentials_from_docker_config_and_helpers_reach_the_registry_and_the_pull() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let front = AuthFront::start(registry.port, AuthMode::CredentialedToken);
    let host = Host::new("creds");
    host.write(&oci(&front.host(), "^1"));
    let config_dir = host.dir.path().join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.to_str().unwrap();

    // No credentials: the registry refuses, berth says so and exits 3.
    std::fs::write(config_dir.join("config.json"), "{}").unwrap();
    let out = host.berth_env("apply", &[], &[("DOCKER_CONFIG", config)]);
    out.assert_exit(3);
    assert!(out.text().contains("refused access"), "{}", out.text());
    assert!(host.containers().is_empty());

    // `auths`: plan resolves and apply pulls through the authenticated front.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        config_dir.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            front.host()
        ),
    )
    .unwrap();
    let out = host.berth_env("apply", &[], &[("DOCKER_CONFIG", config)]);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "1.0.0");
    assert!(
        front.count("/manifests/sha256:") > 0,
        "the engine pulled the pinned manifest through the front with the credentials"
    );

    // A credential helper.
    registry.push(&local("1.1.0"), REPO, "1.1.0");
    let bin = host.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread host\necho '{{\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}'\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        config_dir.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "berthtest"}}}}"#, front.host()),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = host.berth_env("apply", &[], &[("DOCKER_CONFIG", config), ("PATH", &path)]);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
}

#[test]
fn basic_auth_registries_work_too() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let front = AuthFront::start(registry.port, AuthMode::Basic);
    let host = Host::new("basic");
    host.write(&oci(&front.host(), "^1"));
    let config_dir = host.dir.path().join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"username": "{USER}", "password": "{PASS}"}}}}}}"#,
            front.host()
        ),
    )
    .unwrap();
    let out = host.berth_env(
        "apply",
        &[],
        &[("DOCKER_CONFIG", config_dir.to_str().unwrap())],
    );
    out.assert_exit(0);
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
}

/// A registry that is down, silent, rate-limiting or answering garbage leaves running
/// containers untouched, names the script it could not resolve, and exits 3; other scripts
/// still converge.
#[test]
fn broken_registries_leave_the_host_as_it_is() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let host = Host::new("broken");
    host.write(&oci(&registry.host(), "^1"));
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();

    // A second, local script that must converge whatever the registry does.
    let other_port = free_port();
    std::fs::write(
        host.repo().join("scripts/other.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Script\nname: other\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
             container:\n  env: {{ PORT: \"{other_port}\" }}\n  network: host\n"
        ),
    )
    .unwrap();

    let closed = free_port();
    let silent = BadRegistry::start(Misbehaviour::Silent);
    let limited = BadRegistry::start(Misbehaviour::RateLimited);
    let garbage = BadRegistry::start(Misbehaviour::Garbage);
    let cases = [
        (format!("127.0.0.1:{closed}"), "cannot reach registry"),
        (silent.host(), "did not answer in time"),
        (
            limited.host(),
            "rate limiting berth (HTTP 429); it asks to retry after 30s",
        ),
        (garbage.host(), "not a tag list"),
    ];
    for (i, (bad, message)) in cases.iter().enumerate() {
        host.write(&oci(bad, "^1"));
        let partner_path = host.repo().join(format!("partners/{}.yaml", host.partner));
        let partner = std::fs::read_to_string(&partner_path).unwrap();
        std::fs::write(&partner_path, format!("{partner}  - script: other\n")).unwrap();
        let started = Instant::now();
        let out = host.berth_env("apply", &[], &[("BERTH_REGISTRY_TIMEOUT", "1")]);
        assert!(started.elapsed() < Duration::from_secs(15), "bounded time");
        out.assert_exit(3);
        assert!(out.text().contains("svc"), "{}", out.text());
        assert!(
            out.text().contains("deferred(unresolved)"),
            "{}",
            out.text()
        );
        assert!(out.text().contains(message), "case {i}: {}", out.text());
        assert_eq!(host.id(), id, "the running container was not touched");
        assert!(host.running());
        let other = format!("berth-{}-other", host.partner);
        assert_eq!(
            inspect(&other, "{{.State.Running}}"),
            "true",
            "the local script converged"
        );
    }
}

#[test]
fn a_failed_pull_touches_nothing_and_exits_3() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let host = Host::new("nopull");
    host.write(&oci(&registry.host(), "^1"));
    host.berth("apply", &[]).assert_exit(0);
    let id = host.id();

    registry.push(&local("1.1.0"), REPO, "1.1.0");
    let front = AuthFront::refusing_pulls(registry.port);
    host.write(&oci(&front.host(), "^1"));
    let out = host.berth("apply", &[]);
    out.assert_exit(3);
    assert!(out.text().contains("NOT PULLED"), "{}", out.text());
    assert_eq!(host.id(), id, "the old container still serves");
    assert_eq!(host.version_label(), "1.0.0");
    assert_eq!(host.served_version().as_deref(), Some("1.0.0"));
}

/// Images are pulled before the window opens, so the window holds only the cut-over.
#[test]
fn the_new_image_is_pulled_while_the_window_is_still_closed() {
    let registry = Registry::start();
    registry.push(&local("1.0.0"), REPO, "1.0.0");
    let host = Host::new("prepull");
    let closed_on_saturdays = |v: &str| Setup {
        windows: Some("  - days: [sun]\n    start: \"01:00\"\n    end: \"05:00\"\n".into()),
        ..oci(&registry.host(), v)
    };
    host.write(&closed_on_saturdays("=1.0.0"));
    host.berth("apply", &["--ignore-window"]).assert_exit(0);
    let id = host.id();

    registry.push(&local("1.1.0"), REPO, "1.1.0");
    host.write(&closed_on_saturdays("^1"));
    let reference = format!(
        "{}/{REPO}@{}",
        registry.host(),
        registry.digest(REPO, "1.1.0")
    );
    assert!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &reference]).is_empty(),
        "not pulled yet"
    );
    // Saturday noon: the window opens on Sunday.
    let out = host.berth("apply", &["--now", "2026-11-21T12:00:00Z"]);
    out.assert_exit(0);
    assert!(out.text().contains("deferred(window)"), "{}", out.text());
    assert_eq!(host.id(), id, "nothing was cut over");
    assert!(
        !docker(&["image", "inspect", "-f", "{{.Id}}", &reference]).is_empty(),
        "pulled ahead of the window"
    );
}
