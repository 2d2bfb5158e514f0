//! The disk guard against a real engine: a private `dockerd` whose data root is a 64 MiB
//! tmpfs, pulling from a `docker-registry` inside its network namespace. A pull that would
//! leave the data root under `min_free` is `deferred(disk)` with the figures, before it
//! starts: the image is not pulled, the old container serves on, the pass exits 0. With a
//! small `min_free` the same pass pulls and converges. The agent reads `min_free` from
//! agent.yaml and its status says why the script waits.

use berth::plan::gate::{bytes, pull_estimate};

use crate::common::dockerd::PrivateEngine;
use crate::common::registry::{Registry, http};
use crate::common::{Host, IMAGE_REPO, Setup};

const REPOSITORY: &str = "berth-test/disk-svc";

/// The compressed size of a tag's image as the registry lists it: config and layers.
fn compressed_size(registry: &Registry, tag: &str) -> u64 {
    let (status, _, body) = http(
        registry.port,
        "GET",
        &format!("/v2/{REPOSITORY}/manifests/{tag}"),
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        b"",
    )
    .expect("the registry answers");
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let size = |d: &serde_json::Value| d["size"].as_u64().unwrap();
    size(&manifest["config"])
        + manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(size)
            .sum::<u64>()
}

#[test]
fn a_pull_that_would_cross_min_free_waits_and_a_small_min_free_converges() {
    let host = Host::new("disk");
    let registry = Registry::start();
    for v in ["1.0.0", "1.1.0"] {
        registry.push(&format!("{IMAGE_REPO}:{v}"), REPOSITORY, v);
    }
    let engine = PrivateEngine::with_data_root_of("disk", 64);
    let inside = engine.serve_registry(&registry.storage());
    let at = |v: &str| Setup {
        versions: Some(v.into()),
        idle: false,
        image: Some(format!(
            "  source: oci\n  registry: {}\n  repository: {REPOSITORY}\n",
            inside.host()
        )),
        ..Setup::default()
    };
    let apply = |min_free: &str| {
        engine
            .berth("apply")
            .arg(host.repo())
            .args(["--partner", &host.partner, "--state-dir"])
            .arg(host.state_dir())
            .args(["--min-free", min_free])
            .run()
    };
    let label = |name: &str| {
        engine
            .docker(&[
                "inspect",
                "-f",
                "{{.Id}} {{index .Config.Labels \"berth.version\"}}",
                name,
            ])
            .stdout()
            .trim()
            .to_owned()
    };
    let serves = || engine.get(host.port, "/version").map(|(_, body)| body);

    host.write(&at("=1.0.0"));
    apply("1m").assert_exit(0);
    let old = label(&host.name());
    assert!(old.ends_with(" 1.0.0"), "{old}");
    assert_eq!(serves().as_deref(), Some("1.0.0"));

    // Any pull crosses a min_free of all that is free now.
    host.write(&at("=1.1.0"));
    let free = engine.free_bytes();
    assert!(free < 64 << 20, "the data root is the small tmpfs: {free}");
    let deferred = apply(&free.to_string());
    deferred.assert_exit(0);
    let needed = pull_estimate(compressed_size(&registry, "1.1.0"));
    let expected = format!("deferred(disk): pulling {} would leave ", bytes(needed));
    let figures = format!(
        " free on {}, under min_free {}",
        engine.data_root().display(),
        bytes(free)
    );
    assert!(
        deferred.text().contains(&expected) && deferred.text().contains(&figures),
        "{}",
        deferred.text()
    );
    let new_image = format!(
        "{}/{REPOSITORY}@{}",
        inside.host(),
        registry.digest(REPOSITORY, "1.1.0")
    );
    assert_ne!(
        engine.docker(&["image", "inspect", &new_image]).code(),
        Some(0),
        "the image was not pulled"
    );
    assert_eq!(label(&host.name()), old, "the old container is untouched");
    assert_eq!(serves().as_deref(), Some("1.0.0"));

    // The agent reads the same guard from agent.yaml, and its status says why it waits.
    let config = host.agent_config(
        &format!("  url: {}\n", host.repo().display()),
        &format!("min_free: {free}\n"),
    );
    engine
        .berth("agent")
        .args(["--once", "--config"])
        .arg(&config)
        .run()
        .assert_exit(0);
    let status = engine
        .berth("status")
        .arg("--state-dir")
        .arg(host.state_dir())
        .args(["--format", "json"])
        .run();
    let status: serde_json::Value = serde_json::from_str(status.stdout()).unwrap();
    assert_eq!(status["counters"]["deferrals"]["disk"], 1, "{status:#}");
    assert_eq!(status["scripts"][0]["state"], "deferred", "{status:#}");
    let detail = status["scripts"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&expected["deferred(disk): ".len()..]) && detail.contains(&figures),
        "{detail}"
    );
    assert_eq!(label(&host.name()), old);

    // With room to spare under a small min_free, the same pass pulls and converges.
    apply("1m").assert_exit(0);
    assert!(label(&host.name()).ends_with(" 1.1.0"));
    assert_eq!(serves().as_deref(), Some("1.1.0"));
    assert_eq!(
        engine.docker(&["image", "inspect", &new_image]).code(),
        Some(0)
    );
}
