//! Image pruning against the real engine and a real registry: per script (and per
//! component) berth keeps the running and the rollback image and removes the other images
//! it pulled, never a tag it did not make and never an image a container uses.
//!
//! Every image here is this test's alone: a variant of a test image with a label naming
//! the test, so its id is unique and no other test's container can be using it.

use std::process::Command;

use crate::common::registry::Registry;
use crate::common::*;

/// Makes a variant of the test image `base` that is `unique`'s alone, publishes it as
/// `repo:version`, and removes every local name of it: only berth's pull brings it back.
pub(crate) fn publish(registry: &Registry, repo: &str, base: &str, version: &str, unique: &str) {
    let local = format!("berth-test/prune-{unique}:{version}");
    let created = docker(&["create", "--pull", "never", &format!("{IMAGE_REPO}:{base}")]);
    docker(&[
        "commit",
        "--change",
        &format!("LABEL berth.test.unique={unique}-{version}"),
        created.trim(),
        &local,
    ]);
    docker(&["rm", created.trim()]);
    registry.push(&local, repo, version);
    docker(&["rmi", &local]);
}

/// Whether the engine holds a reference (`repo@digest`, `repo:tag`) or an image id.
fn exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .expect("docker runs")
        .status
        .success()
}

fn pulled(registry: &Registry, repo: &str, version: &str) -> String {
    format!(
        "{}/{repo}@{}",
        registry.host(),
        registry.digest(repo, version)
    )
}

#[test]
fn keeps_the_running_and_the_rollback_image_and_removes_older_ones_it_pulled() {
    let registry = Registry::start();
    let host = Host::new("prune");
    let unique = host.partner.clone();
    let repo = "gh/svc";
    host.write(&crate::registry::oci(&registry.host(), "*"));
    let image = |v: &str| pulled(&registry, repo, v);

    publish(&registry, repo, "1.0.0", "1.0.0", &unique);
    host.berth("apply", &[]).assert_exit(0);
    publish(&registry, repo, "1.1.0", "1.1.0", &unique);
    host.berth("apply", &[]).assert_exit(0);
    assert_eq!(host.version_label(), "1.1.0");
    // Someone else's tag on the image berth pulled for 1.0.0.
    let by_hand = format!("{}/{repo}:by-hand", registry.host());
    docker(&["tag", &image("1.0.0"), &by_hand]);
    let _untag = Untag(by_hand.clone());
    let id_1_0 = inspect_image(&by_hand);

    publish(&registry, repo, "2.0.0", "2.0.0", &unique);
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "2.0.0");
    assert!(
        out.stdout().contains(&format!(
            "pruned {} (svc: neither the running nor the rollback image)",
            image("1.0.0")
        )),
        "{}",
        out.text()
    );
    assert!(
        !exists(&image("1.0.0")),
        "berth's reference to 1.0.0 is gone"
    );
    assert!(exists(&image("1.1.0")), "the rollback image stays");
    assert!(exists(&image("2.0.0")), "the running image stays");
    assert_eq!(
        inspect_image(&by_hand),
        id_1_0,
        "the tag berth did not make still names the image"
    );

    // An unmanaged container (labelled only so the harness removes it) uses 1.1.0: when
    // 1.1.0 is no longer the rollback image, it stays all the same.
    let bystander = docker(&[
        "create",
        "--pull",
        "never",
        "--label",
        &format!("berth.partner={}", host.partner),
        &image("1.1.0"),
    ]);
    publish(&registry, repo, "2.0.0", "2.1.0", &unique);
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert_eq!(host.version_label(), "2.1.0");
    assert!(!out.stdout().contains("pruned"), "{}", out.text());
    assert!(exists(&image("1.1.0")), "a container uses it");
    assert!(exists(&image("2.0.0")) && exists(&image("2.1.0")));

    // Once that container is gone, the next pass removes 1.1.0, image and all.
    let id_1_1 = inspect_image(&image("1.1.0"));
    docker(&["rm", bystander.trim()]);
    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(out.stdout().contains("pruned"), "{}", out.text());
    assert!(!exists(&image("1.1.0")));
    assert!(!exists(&id_1_1), "no other name kept the image");
    assert!(exists(&image("2.0.0")) && exists(&image("2.1.0")));
}

/// Removes the test's own tag when the test ends, passed or not.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

fn inspect_image(reference: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference])
        .trim()
        .to_owned()
}

/// Two components with images of their own: `a` moves on twice, `b` once. Each keeps its
/// own running and rollback image, so `b`'s first image stays while `a`'s goes.
#[test]
fn a_multi_component_script_keeps_per_component() {
    let registry = Registry::start();
    let host = Host::new("prune-parts");
    host.write(&Setup {
        opted_in: false,
        ..Setup::default()
    });
    let partner_file = host.repo().join(format!("partners/{}.yaml", host.partner));
    let text = std::fs::read_to_string(&partner_file).unwrap();
    std::fs::write(
        &partner_file,
        text.replace("scripts: []\n", "scripts:\n  - script: app\n"),
    )
    .unwrap();
    let component = |name: &str| {
        format!(
            "\x20 {name}:\n\
             \x20   image: {{ source: oci, registry: \"{}\", repository: gh/{name} }}\n\
             \x20   versions: \"*\"\n\
             \x20   container: {{ env: {{ LISTEN: \"0.0.0.0:8080\" }}, stop_timeout: 5s }}\n\
             \x20   health: {{ exec: [\"/serve\", \"check\", \"http://127.0.0.1:8080/health\"], timeout: 10s }}\n",
            registry.host()
        )
    };
    std::fs::write(
        host.repo().join("scripts/app.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Script\nname: app\n\
             image: {{ source: local, repository: {IMAGE_REPO} }}\nversions: \"^1\"\n\
             components:\n{}{}",
            component("a"),
            component("b")
        ),
    )
    .unwrap();
    let unique = host.partner.clone();
    let image = |name: &str, v: &str| pulled(&registry, &format!("gh/{name}"), v);
    let apply = || {
        let out = host.berth("apply", &["--ignore-idle"]);
        out.assert_exit(0);
        out.stdout().to_owned()
    };

    for name in ["a", "b"] {
        publish(&registry, &format!("gh/{name}"), "1.0.0", "1.0.0", &unique);
    }
    apply();
    for name in ["a", "b"] {
        publish(&registry, &format!("gh/{name}"), "1.1.0", "1.1.0", &unique);
    }
    apply();
    publish(&registry, "gh/a", "2.0.0", "2.0.0", &unique);
    let out = apply();
    assert!(
        out.contains(&format!(
            "pruned {} (app/a: neither the running nor the rollback image)",
            image("a", "1.0.0")
        )),
        "{out}"
    );
    assert_eq!(out.matches("pruned").count(), 1, "{out}");
    assert!(!exists(&image("a", "1.0.0")));
    for (name, v) in [
        ("a", "1.1.0"),
        ("a", "2.0.0"),
        ("b", "1.0.0"),
        ("b", "1.1.0"),
    ] {
        assert!(exists(&image(name, v)), "{name} {v} stays");
    }
}

/// A version that failed its health check is held and will not run again: its image goes
/// at the next pass, while the one that runs stays.
#[test]
fn an_image_that_failed_health_is_removed() {
    let registry = Registry::start();
    let host = Host::new("prune-held");
    let unique = host.partner.clone();
    let repo = "gh/svc";
    host.write(&Setup {
        health_timeout: "3s",
        ..crate::registry::oci(&registry.host(), "*")
    });
    let image = |v: &str| pulled(&registry, repo, v);

    publish(&registry, repo, "1.0.0", "1.0.0", &unique);
    host.berth("apply", &[]).assert_exit(0);
    publish(&registry, repo, UNHEALTHY, UNHEALTHY, &unique);
    let out = host.berth("apply", &[]);
    out.assert_exit(1);
    assert!(out.stdout().contains("ROLLED BACK"), "{}", out.text());
    assert_eq!(host.version_label(), "1.0.0");

    let out = host.berth("apply", &[]);
    out.assert_exit(0);
    assert!(
        out.stdout().contains(&format!(
            "pruned {} (svc: failed its health check)",
            image(UNHEALTHY)
        )),
        "{}",
        out.text()
    );
    assert!(!exists(&image(UNHEALTHY)));
    assert!(exists(&image("1.0.0")), "the running image stays");
}
