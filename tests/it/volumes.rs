//! `berth volumes` against the machine's real Docker engine: a script's named volume is
//! listed as declared, survives its removal from the manifests, and is then orphaned.

use crate::common::*;

/// Removes what the test had berth create, which berth itself never deletes: the partner's
/// containers first (they hold the volume), then the script's network and the volume.
struct Cleanup {
    partner: String,
    volume: String,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_partner_containers(&self.partner);
        docker(&["network", "rm", &self.network]);
        docker(&["volume", "rm", &self.volume]);
    }
}

fn store(volumes: bool) -> String {
    let (declared, mounts) = if volumes {
        ("volumes: { data: {} }\n", ", volumes: [\"data:/data\"]")
    } else {
        ("", "")
    };
    format!(
        "{declared}components:\n  api:\n    container: {{ env: {{ LISTEN: \"0.0.0.0:8080\" }}{mounts} }}\n"
    )
}

fn listed(host: &Host) -> Vec<serde_json::Value> {
    let out = Berth::new("volumes")
        .args(["--partner", &host.partner, "--format", "json"])
        .arg("--state-dir")
        .arg(host.state_dir())
        .run();
    out.assert_exit(0);
    out.json().as_array().cloned().unwrap_or_default()
}

#[test]
fn a_volume_removed_from_the_manifests_is_kept_and_listed_as_orphaned() {
    let host = Host::new("volumes");
    host.write(&Setup::default());
    host.add_script("store", &store(true));
    let volume = format!("berth-{}-store-data", host.partner);
    let _cleanup = Cleanup {
        partner: host.partner.clone(),
        volume: volume.clone(),
        network: format!("berth-{}-store", host.partner),
    };

    host.berth("apply", &["--ignore-idle"]).assert_exit(0);
    let label = |k: &str| {
        docker(&[
            "volume",
            "inspect",
            "-f",
            &format!("{{{{index .Labels \"{k}\"}}}}"),
            &volume,
        ])
    };
    assert_eq!(label("berth.managed"), "true");
    assert_eq!(label("berth.script"), "store");
    assert_eq!(label("berth.volume"), "data");
    let created = docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &volume]);
    assert!(!created.is_empty(), "berth created {volume}");
    assert_eq!(
        listed(&host),
        vec![serde_json::json!({
            "name": volume,
            "partner": host.partner,
            "script": "store",
            "volume": "data",
            "state": "declared",
        })]
    );
    let text = Berth::new("volumes")
        .args(["--partner", &host.partner])
        .arg("--state-dir")
        .arg(host.state_dir())
        .run();
    text.assert_exit(0);
    assert!(
        text.stdout()
            .lines()
            .any(|l| l.starts_with(&volume) && l.ends_with("declared")),
        "{}",
        text.text()
    );

    // The script no longer declares the volume: the component is replaced without it,
    // and the volume stays as it was.
    let script = host.repo().join("scripts/store.yaml");
    let manifest = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, manifest.replace(&store(true), &store(false))).unwrap();
    host.berth("apply", &["--ignore-idle"]).assert_exit(0);
    let api = format!("berth-{}-store-api", host.partner);
    assert_eq!(inspect(&api, "{{.State.Running}}"), "true");
    let mounts = inspect(&api, "{{range .Mounts}}{{.Name}} {{end}}");
    assert!(
        !mounts.contains(&volume),
        "replaced without the volume: {mounts:?}"
    );
    assert_eq!(
        docker(&["volume", "inspect", "-f", "{{.CreatedAt}}", &volume]),
        created,
        "the volume is the same one, never recreated"
    );
    assert_eq!(label("berth.script"), "store");
    let rows = listed(&host);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], volume);
    assert_eq!(rows[0]["state"], "orphaned");
}
