//! Namespaces on the machine's real Docker engine: a staging and a production deployment of
//! one partner share a host, each under its own names and `berth.namespace` label, with its
//! own state, and neither ever touches, lists or prunes what is the other's.

use std::process::Command;

use crate::common::registry::Registry;
use crate::common::*;

const NS: &str = "staging";

/// A second manifest repo for the same partner (staging follows its own branch), serving
/// on its own port.
fn same_partner(of: &Host) -> Host {
    let host = Host {
        dir: tempfile::tempdir().expect("temp dir"),
        partner: of.partner.clone(),
        port: free_port(),
    };
    std::fs::create_dir_all(host.repo().join("partners")).unwrap();
    std::fs::create_dir_all(host.repo().join("scripts")).unwrap();
    host
}

fn versions(v: &str) -> Setup {
    Setup {
        versions: Some(v.into()),
        ..Setup::default()
    }
}

/// A script with a named volume, on its own bridge network.
const STORE: &str = "volumes: { data: {} }\ncomponents:\n  api:\n    container: { env: { LISTEN: \"0.0.0.0:8080\" }, volumes: [\"data:/data\"] }\n";

fn label(kind: &str, name: &str, key: &str) -> String {
    docker(&[
        kind,
        "inspect",
        "-f",
        &format!("{{{{index .{} \"{key}\"}}}}", labels_path(kind)),
        name,
    ])
    .trim()
    .to_owned()
}

fn labels_path(kind: &str) -> &'static str {
    match kind {
        "container" => "Config.Labels",
        _ => "Labels",
    }
}

/// The id and start time of a container: both unchanged means nothing touched it.
fn identity(name: &str) -> String {
    inspect(name, "{{.Id}} {{.State.StartedAt}}")
}

fn plan_json(host: &Host, namespace: Option<&str>) -> serde_json::Value {
    let mut cmd = host
        .command("plan")
        .args(["--format", "json", "--ignore-idle"]);
    if let Some(ns) = namespace {
        cmd = cmd.args(["--namespace", ns]);
    }
    let out = cmd.run();
    out.assert_exit(0);
    out.json()
}

/// The plan's step for the script `svc`.
fn svc(plan: &serde_json::Value) -> &serde_json::Value {
    plan["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["script"] == "svc"))
        .unwrap_or_else(|| panic!("no svc step: {plan}"))
}

fn volumes_json(host: &Host, namespace: Option<&str>) -> Vec<serde_json::Value> {
    let mut cmd = Berth::new("volumes")
        .args(["--partner", &host.partner, "--format", "json"])
        .arg("--state-dir")
        .arg(host.state_dir());
    if let Some(ns) = namespace {
        cmd = cmd.args(["--namespace", ns]);
    }
    let out = cmd.run();
    out.assert_exit(0);
    out.json().as_array().cloned().unwrap_or_default()
}

#[test]
fn staging_and_production_run_side_by_side_and_never_touch_each_other() {
    let prod = Host::new("ns");
    let staging = same_partner(&prod);
    prod.write(&versions("^1"));
    prod.add_script("store", STORE);
    staging.write(&versions("2.0.0"));
    staging.add_script("store", STORE);
    let p = &prod.partner;
    let (prod_svc, staging_svc) = (format!("berth-{p}-svc"), format!("berth-{NS}-{p}-svc"));

    prod.berth("apply", &["--ignore-idle"]).assert_exit(0);
    staging
        .berth("apply", &["--ignore-idle", "--namespace", NS])
        .assert_exit(0);

    // Two containers of one partner and script, each with its own version and labels.
    assert_eq!(label("container", &prod_svc, "berth.version"), "1.1.0");
    assert_eq!(label("container", &prod_svc, "berth.namespace"), "");
    assert_eq!(label("container", &staging_svc, "berth.version"), "2.0.0");
    assert_eq!(label("container", &staging_svc, "berth.namespace"), NS);
    assert_eq!(label("container", &staging_svc, "berth.partner"), *p);
    assert_eq!(prod.served_version().as_deref(), Some("1.1.0"));
    assert_eq!(staging.served_version().as_deref(), Some("2.0.0"));
    let staging_net = format!("berth-{NS}-{p}-store");
    assert_eq!(label("network", &staging_net, "berth.namespace"), NS);
    assert_eq!(
        label("network", &format!("berth-{p}-store"), "berth.namespace"),
        ""
    );

    // Each plans against its own containers only: both in sync.
    let plan = plan_json(&prod, None);
    assert_eq!(plan["changes"], 0, "{plan}");
    assert_eq!(svc(&plan)["from"]["version"], "1.1.0", "{plan}");
    let plan = plan_json(&staging, Some(NS));
    assert_eq!(plan["changes"], 0, "{plan}");
    assert_eq!(svc(&plan)["from"]["version"], "2.0.0", "{plan}");
    // A namespace with nothing on the host sees nothing of either.
    let plan = plan_json(&prod, Some("review"));
    assert_eq!(svc(&plan)["action"], "create", "{plan}");
    // So do the changes `windows` lists as pending.
    let prod_windows = prod.berth("windows", &[]);
    assert!(
        prod_windows.stdout().contains("pending changes: none"),
        "{}",
        prod_windows.text()
    );
    let review_windows = prod.berth("windows", &["--namespace", "review"]);
    assert!(
        review_windows.stdout().contains("pending: create svc"),
        "{}",
        review_windows.text()
    );

    // Volumes kept apart, each listed in its own namespace only.
    let (prod_vol, staging_vol) = (
        format!("berth-{p}-store-data"),
        format!("berth-{NS}-{p}-store-data"),
    );
    assert_eq!(label("volume", &staging_vol, "berth.namespace"), NS);
    let names = |rows: Vec<serde_json::Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(volumes_json(&prod, None)), vec![prod_vol.clone()]);
    assert_eq!(names(volumes_json(&staging, Some(NS))), vec![staging_vol]);

    // Staging moves on; production's containers are the very same ones.
    let before = (
        identity(&prod_svc),
        identity(&format!("berth-{p}-store-api")),
    );
    staging.write(&versions("=1.0.0"));
    staging.add_script("store", STORE);
    let out = staging.berth("apply", &["--ignore-idle", "--namespace", NS]);
    out.assert_exit(0);
    assert_eq!(label("container", &staging_svc, "berth.version"), "1.0.0");
    assert_eq!(
        (
            identity(&prod_svc),
            identity(&format!("berth-{p}-store-api"))
        ),
        before,
        "{}",
        out.text()
    );

    // A production pass leaves staging's alone, and finds itself in sync.
    let staging_before = identity(&staging_svc);
    let out = prod.berth("apply", &["--ignore-idle"]);
    out.assert_exit(0);
    assert!(out.text().contains("in sync"), "{}", out.text());
    assert_eq!(identity(&staging_svc), staging_before);

    // A namespace keeps its state under namespaces/<ns> of the state dir.
    assert!(prod.state_dir().join("volumes.json").exists());
    let own = staging.state_dir().join(format!("namespaces/{NS}"));
    assert!(own.join("volumes.json").exists() && own.join("images.json").exists());
    assert!(!staging.state_dir().join("volumes.json").exists());
}

#[test]
fn each_namespace_prunes_only_its_own_images_and_never_one_the_other_runs() {
    let registry = Registry::start();
    let prod = Host::new("nsprune");
    let staging = same_partner(&prod);
    let unique = prod.partner.clone();
    let image = |v: &str| {
        format!(
            "{}/gh/svc@{}",
            registry.host(),
            registry.digest("gh/svc", v)
        )
    };
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        crate::images::publish(&registry, "gh/svc", v, v, &unique);
    }
    let oci = |versions: &str| crate::registry::oci(&registry.host(), versions);
    let staging_apply = || {
        let out = staging.berth("apply", &["--namespace", NS]);
        out.assert_exit(0);
        out
    };

    prod.write(&oci("=1.0.0"));
    prod.berth("apply", &[]).assert_exit(0);
    let prod_svc = prod.name();
    let prod_before = identity(&prod_svc);
    // Staging walks 1.0.0 (the image production runs), 1.1.0, 2.0.0.
    for v in ["=1.0.0", "=1.1.0", "=2.0.0"] {
        staging.write(&oci(v));
        staging_apply();
    }
    // 1.0.0 is neither staging's running nor its rollback image, but production's
    // container uses it: it stays.
    assert!(exists(&image("1.0.0")), "production runs it");
    assert_eq!(identity(&prod_svc), prod_before);

    // Staging moves on again: what it pulled and no longer needs it prunes; what production
    // runs it leaves.
    crate::images::publish(&registry, "gh/svc", "2.0.0", "2.1.0", &unique);
    staging.write(&oci("=2.1.0"));
    let out = staging_apply();
    assert!(
        out.stdout().contains(&format!("pruned {}", image("1.1.0"))),
        "staging prunes what it pulled: {}",
        out.text()
    );
    assert!(exists(&image("1.0.0")), "production still runs it");
    assert_eq!(identity(&prod_svc), prod_before);

    // Production never pulled 1.1.0 or 2.x, so it prunes nothing of staging's.
    let out = prod.berth("apply", &[]);
    out.assert_exit(0);
    assert!(!out.stdout().contains("pruned"), "{}", out.text());
    assert!(exists(&image("2.0.0")) && exists(&image("2.1.0")));
    assert_eq!(
        label(
            "container",
            &format!("berth-{NS}-{unique}-svc"),
            "berth.version"
        ),
        "2.1.0"
    );
}

/// Whether the engine holds a reference.
fn exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .expect("docker runs")
        .status
        .success()
}

#[test]
fn an_agent_in_a_namespace_converges_its_own_and_status_reads_its_state() {
    let prod = Host::new("nsagent");
    let staging = same_partner(&prod);
    prod.write(&versions("^1"));
    staging.write(&versions("2.0.0"));
    prod.berth("apply", &[]).assert_exit(0);
    let prod_before = identity(&prod.name());
    let config = staging.agent_config(
        &format!("  url: {}\n", staging.repo().display()),
        &format!("namespace: {NS}\n"),
    );

    let out = Berth::new("agent")
        .args(["--once", "--config"])
        .arg(&config)
        .run();
    out.assert_exit(0);
    let staging_svc = format!("berth-{NS}-{}-svc", prod.partner);
    assert_eq!(label("container", &staging_svc, "berth.namespace"), NS);
    assert_eq!(label("container", &staging_svc, "berth.version"), "2.0.0");
    assert_eq!(identity(&prod.name()), prod_before, "{}", out.text());

    let status = |namespace: Option<&str>| {
        let mut cmd = Berth::new("status")
            .args(["--format", "json", "--state-dir"])
            .arg(staging.state_dir());
        if let Some(ns) = namespace {
            cmd = cmd.args(["--namespace", ns]);
        }
        cmd.run()
    };
    let own = status(Some(NS));
    own.assert_exit(0);
    assert!(own.stdout().contains(&prod.partner), "{}", own.text());
    assert_ne!(
        status(None).code(),
        Some(0),
        "outside the namespace there is no agent's state"
    );

    let bad = staging.agent_config(
        &format!("  url: {}\n", staging.repo().display()),
        "namespace: Staging\n",
    );
    let out = Berth::new("agent")
        .args(["--once", "--config"])
        .arg(&bad)
        .run();
    out.assert_exit(1);
    assert!(
        out.stderr().contains("invalid namespace `Staging`"),
        "{}",
        out.text()
    );
}

/// Partner `lab` in `staging` and partner `staging-lab` outside any namespace would both be
/// `berth-staging-lab-svc`: the label decides, so the second is refused and the first's
/// container is never touched.
#[test]
fn a_name_another_namespace_owns_is_refused_never_touched() {
    let owner = Host::new("clash");
    owner.write(&versions("^1"));
    owner.berth("apply", &["--namespace", NS]).assert_exit(0);
    let name = format!("berth-{NS}-{}-svc", owner.partner);
    let before = identity(&name);

    let other = Host {
        dir: tempfile::tempdir().expect("temp dir"),
        partner: format!("{NS}-{}", owner.partner),
        port: free_port(),
    };
    std::fs::create_dir_all(other.repo().join("partners")).unwrap();
    std::fs::create_dir_all(other.repo().join("scripts")).unwrap();
    other.write(&versions("=1.0.0"));
    assert_eq!(other.name(), name, "the two names clash");
    let out = other.berth("apply", &[]);
    assert_ne!(out.code(), Some(0), "{}", out.text());
    assert_eq!(identity(&name), before, "{}", out.text());
    assert_eq!(label("container", &name, "berth.partner"), owner.partner);
    assert_eq!(label("container", &name, "berth.version"), "1.1.0");
}

#[test]
fn a_staging_agent_reports_beside_production_without_overwriting_its_record() {
    let prod = Host::new("nsreport");
    let staging = same_partner(&prod);
    prod.write(&versions("^1"));
    staging.write(&versions("2.0.0"));
    let repo = prod.dir.path().join("status.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--bare", "-b", "main"]);
    let report = format!("report:\n  url: file://{}\n", repo.display());
    let prod_config = prod.agent_config(&format!("  url: {}\n", prod.repo().display()), &report);
    let staging_config = staging.agent_config(
        &format!("  url: {}\n", staging.repo().display()),
        &format!("namespace: {NS}\n{report}"),
    );
    for config in [&prod_config, &staging_config] {
        Berth::new("agent")
            .args(["--once", "--config"])
            .arg(config)
            .run()
            .assert_exit(0);
    }

    let record = |path: String| -> serde_json::Value {
        serde_json::from_str(&git(&repo, &["show", &format!("main:{path}")])).unwrap()
    };
    let production = record(format!("partners/{}.json", prod.partner));
    let beside = record(format!("namespaces/{NS}/partners/{}.json", prod.partner));
    assert_eq!(production["scripts"][0]["running"]["version"], "1.1.0");
    assert_eq!(beside["scripts"][0]["running"]["version"], "2.0.0");
}
