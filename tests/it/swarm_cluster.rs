//! The three-node swarm harness (common::swarm) proves itself with plain `docker`: the
//! nodes are ready, a service's replicas spread over them and reach each other across nodes
//! on an attachable overlay network, and a worker cut off or whose engine dies is marked
//! down by the manager, which moves its replicas; back, it is ready again and what ran
//! there alone is stopped. Then berth with `--engine swarm` on the manager: it creates a
//! service whose tasks spread over the three nodes, updates it with a worker cut off (done,
//! not failed), and its plan shows where the tasks run; a script whose only eligible node is
//! cut off is reported degraded (`0/2 tasks`), left alone and not failed, and runs again once
//! the node is back. Two components placed on different nodes reach each other by name.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::swarm::{NODES, Swarm, Task, hostname, wait_until};
use crate::common::{Host, IMAGE_REPO, Run, images};

const NETWORK: &str = "mesh";
const SERVICE: &str = "web";

fn image() -> String {
    format!("{IMAGE_REPO}:1.0.0")
}

/// A swarm with the overlay network and a 3-replica service of the test image on it,
/// listening on every address so tasks on other nodes reach it, answering each name of the
/// service by DNS (no virtual IP: that needs IPVS), stopped at once (`--init`).
fn swarm_with_service(tag: &str, extra: &[&str]) -> Swarm {
    images();
    let image = image();
    let swarm = Swarm::start(tag, &[&image]);
    swarm
        .docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            NETWORK,
        ])
        .assert_exit(0);
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        SERVICE,
        "--replicas",
        "3",
        "--network",
        NETWORK,
        "--endpoint-mode",
        "dnsrr",
        "--init",
        "--stop-grace-period",
        "1s",
        "--env",
        "LISTEN=0.0.0.0:8080",
    ];
    args.extend(extra);
    args.push(&image);
    swarm.docker(&args).assert_exit(0);
    swarm
}

/// Waits until the service's three tasks run, each on a node of `allowed`, and returns them.
#[track_caller]
fn running_on(swarm: &Swarm, allowed: &[usize], limit: Duration) -> Vec<Task> {
    let mut tasks = Vec::new();
    wait_until(
        limit,
        &format!("3 tasks running on nodes {allowed:?}"),
        || {
            tasks = swarm.tasks(SERVICE);
            tasks.len() == 3
                && tasks
                    .iter()
                    .all(|t| t.state == "running" && allowed.contains(&t.node))
        },
    );
    tasks
}

/// From `from`'s container, GET /version of `to` over the overlay network.
#[track_caller]
fn assert_reaches(swarm: &Swarm, from: &Task, to: &Task) {
    let url = format!("http://{}:8080/version", to.ip_on(NETWORK));
    let out = swarm
        .node(from.node)
        .docker(&["exec", &from.container, "/serve", "check", &url]);
    out.assert_exit(0);
    assert!(out.stdout().contains("answered 200"), "{}", out.text());
}

/// The service's containers running on node `i`, as that node's engine lists them.
fn containers_on(swarm: &Swarm, i: usize) -> Vec<String> {
    let out = swarm.node(i).docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={SERVICE}"),
    ]);
    out.assert_exit(0)
        .stdout()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_ready_nodes_spread_a_service_whose_tasks_reach_each_other_across_nodes() {
    let swarm = swarm_with_service("swc-mesh", &["--replicas-max-per-node", "1"]);

    let nodes = swarm.docker(&["node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}"]);
    let mut nodes: Vec<&str> = nodes
        .assert_exit(0)
        .stdout()
        .lines()
        .map(str::trim)
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["Ready", "Ready", "Ready Leader"]);

    let tasks = running_on(&swarm, &[0, 1, 2], Duration::from_secs(60));
    let spread: BTreeSet<usize> = tasks.iter().map(|t| t.node).collect();
    assert_eq!(spread, (0..NODES).collect(), "one replica per node");
    for from in &tasks {
        for to in tasks.iter().filter(|t| t.node != from.node) {
            assert_reaches(&swarm, from, to);
        }
    }

    // A plain container on a worker joins the attachable network and finds the service by
    // name on the other nodes.
    let url = format!("http://{SERVICE}:8080/version");
    let probe = swarm.node(2).docker(&[
        "run",
        "--rm",
        "--network",
        NETWORK,
        &image(),
        "/serve",
        "check",
        &url,
    ]);
    probe.assert_exit(0);
    assert!(probe.stdout().contains("answered 200"), "{}", probe.text());
}

#[test]
fn a_worker_cut_off_is_marked_down_and_its_replicas_move_until_it_is_back() {
    let swarm = swarm_with_service("swc-cut", &[]);
    let before = running_on(&swarm, &[0, 1, 2], Duration::from_secs(60));
    assert!(before.iter().any(|t| t.node == 2), "a replica on node 2");

    swarm.cut(2);
    swarm.wait_node(2, "down", Duration::from_secs(30));
    let moved = running_on(&swarm, &[0, 1], Duration::from_secs(30));
    for from in &moved {
        for to in moved.iter().filter(|t| t.node != from.node) {
            assert_reaches(&swarm, from, to);
        }
    }
    assert_eq!(
        containers_on(&swarm, 2).len(),
        1,
        "cut off, node 2 runs its replica on alone"
    );

    swarm.reconnect(2);
    swarm.wait_node(2, "ready", Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "node 2 stops the replica that moved",
        || containers_on(&swarm, 2).is_empty(),
    );
    assert_eq!(swarm.tasks(SERVICE).len(), 3);
}

#[test]
fn a_worker_whose_engine_dies_is_marked_down_and_rejoins_when_it_starts_again() {
    let swarm = swarm_with_service("swc-kill", &[]);
    running_on(&swarm, &[0, 1, 2], Duration::from_secs(60));

    swarm.node(1).kill();
    swarm.wait_node(1, "down", Duration::from_secs(30));
    running_on(&swarm, &[0, 2], Duration::from_secs(30));

    swarm.node(1).up();
    swarm.wait_node(1, "ready", Duration::from_secs(30));
    let nodes = swarm.docker(&["node", "ls", "--format", "{{.Status}}"]);
    assert_eq!(nodes.assert_exit(0).stdout().matches("Ready").count(), 3);
}

/// The partner's manifests: `svc` (3 replicas) at `svc_version`, and, with `gpu`, a `gpu`
/// script (2 replicas placed on nodes labelled `gpu=true`) at 1.0.0; both with an exec
/// health check.
fn write_manifests(host: &Host, svc_version: &str, gpu: bool) {
    let partner = &host.partner;
    let gpu_opt_in = if gpu {
        "  - script: gpu\n    versions: \"=1.0.0\"\n"
    } else {
        ""
    };
    std::fs::write(
        host.repo().join(format!("partners/{partner}.yaml")),
        format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {partner}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
             scripts:\n  - script: svc\n    versions: \"={svc_version}\"\n{gpu_opt_in}"
        ),
    )
    .unwrap();
    let script = |name: &str, placement: &str, replicas: u32| {
        format!(
            "apiVersion: berth/v1\nkind: Script\nname: {name}\nimage:\n  source: local\n  repository: {IMAGE_REPO}\n\
             versions: \"*\"\nreplicas: {replicas}\n{placement}container:\n  env: {{ PORT: \"8080\" }}\n  stop_timeout: 2s\n\
             health:\n  exec: [/serve, check]\n  timeout: 60s\n"
        )
    };
    std::fs::write(host.repo().join("scripts/svc.yaml"), script("svc", "", 3)).unwrap();
    std::fs::write(
        host.repo().join("scripts/gpu.yaml"),
        script("gpu", "placement: [\"node.labels.gpu == true\"]\n", 2),
    )
    .unwrap();
}

/// `berth <cmd> <repo> --partner P --state-dir D --engine swarm` on the manager.
fn berth(swarm: &Swarm, host: &Host, cmd: &str) -> Run {
    swarm
        .berth(cmd)
        .arg(host.repo())
        .args(["--partner", &host.partner, "--state-dir"])
        .arg(host.state_dir())
        .args(["--engine", "swarm"])
        .run()
}

/// The nodes a service's running tasks are on, and their `berth.version`s, sorted.
fn placed(swarm: &Swarm, service: &str) -> (BTreeSet<usize>, Vec<String>) {
    let running: Vec<Task> = swarm
        .tasks(service)
        .into_iter()
        .filter(|t| t.state == "running")
        .collect();
    let mut versions: Vec<String> = running
        .iter()
        .map(|t| {
            let out = swarm.node(t.node).docker(&[
                "inspect",
                &t.container,
                "--format",
                "{{index .Config.Labels \"berth.version\"}}",
            ]);
            out.stdout().trim().to_owned()
        })
        .collect();
    versions.sort();
    (running.iter().map(|t| t.node).collect(), versions)
}

/// The line `berth plan` prints for `script`.
#[track_caller]
fn plan_line(plan: &Run, script: &str) -> String {
    plan.stdout()
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(script))
        .unwrap_or_else(|| panic!("no line for {script}:\n{}", plan.stdout()))
        .to_owned()
}

#[test]
fn berth_updates_a_swarm_with_a_worker_cut_off_and_reports_the_replicas_it_cannot_place() {
    let host = Host::new("swc-berth");
    let images = [format!("{IMAGE_REPO}:1.0.0"), format!("{IMAGE_REPO}:1.1.0")];
    let swarm = Swarm::start("swc-berth", &[&images[0], &images[1]]);
    let svc = host.name();
    let on_all = format!(
        "3/3 tasks on {}, {}, {}",
        hostname(0),
        hostname(1),
        hostname(2)
    );

    write_manifests(&host, "1.0.0", false);
    berth(&swarm, &host, "apply").assert_exit(0);
    wait_until(Duration::from_secs(60), "svc on every node", || {
        placed(&swarm, &svc) == ([0, 1, 2].into(), vec!["1.0.0".to_owned(); 3])
    });
    let plan = berth(&swarm, &host, "plan");
    plan.assert_exit(0);
    assert!(
        plan_line(&plan, "svc").ends_with(&on_all),
        "{}",
        plan.stdout()
    );

    // Worker 2 goes off the network: the manager marks it down and moves its replica; an
    // update then runs on the two nodes left, and berth counts it done, not failed.
    swarm.cut(2);
    swarm.wait_node(2, "down", Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "svc moved off node 2", || {
        placed(&swarm, &svc) == ([0, 1].into(), vec!["1.0.0".to_owned(); 3])
    });
    write_manifests(&host, "1.1.0", false);
    let update = berth(&swarm, &host, "apply");
    update.assert_exit(0);
    assert!(
        plan_line(&update, "svc").contains("1.0.0 -> 1.1.0       done"),
        "{}",
        update.text()
    );
    assert_eq!(
        placed(&swarm, &svc),
        ([0, 1].into(), vec!["1.1.0".to_owned(); 3])
    );
    let plan = berth(&swarm, &host, "plan");
    plan.assert_exit(0);
    let svc_line = plan_line(&plan, "svc");
    assert!(
        svc_line.starts_with("  keep ")
            && svc_line.ends_with(&format!("3/3 tasks on {}, {}", hostname(0), hostname(1))),
        "{}",
        plan.stdout()
    );

    // Back on the network, node 2 stops the replica that moved away.
    swarm.reconnect(2);
    swarm.wait_node(2, "ready", Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "node 2 runs nothing of svc",
        || {
            swarm
                .node(2)
                .docker(&["ps", "-q", "--filter", &format!("name={svc}")])
                .stdout()
                .trim()
                .is_empty()
        },
    );

    // A script that only node 2 may run: cut off, its replicas have nowhere to go. berth
    // reports it degraded, does nothing to it and fails nothing; back, Swarm runs its tasks
    // there again without berth.
    swarm
        .docker(&["node", "update", "--label-add", "gpu=true", swarm.id(2)])
        .assert_exit(0);
    write_manifests(&host, "1.1.0", true);
    berth(&swarm, &host, "apply").assert_exit(0);
    let gpu = format!("berth-{}-gpu", host.partner);
    assert_eq!(
        placed(&swarm, &gpu),
        ([2].into(), vec!["1.0.0".to_owned(); 2])
    );
    swarm.cut(2);
    swarm.wait_node(2, "down", Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "the manager sees no gpu task running",
        || placed(&swarm, &gpu).0.is_empty(),
    );
    let plan = berth(&swarm, &host, "plan");
    plan.assert_exit(0);
    let gpu_line = plan_line(&plan, "gpu");
    assert!(
        gpu_line.starts_with("  keep ")
            && gpu_line.contains("in sync at 1.0.0, degraded")
            && gpu_line.ends_with(" 0/2 tasks"),
        "{}",
        plan.stdout()
    );
    let started = Instant::now();
    let apply = berth(&swarm, &host, "apply");
    apply.assert_exit(0);
    assert!(
        !apply.text().contains("fail") && started.elapsed() < Duration::from_secs(30),
        "no action, no health wait: {:?}\n{}",
        started.elapsed(),
        apply.text()
    );

    swarm.reconnect(2);
    swarm.wait_node(2, "ready", Duration::from_secs(30));
    wait_until(Duration::from_secs(60), "gpu runs on node 2 again", || {
        placed(&swarm, &gpu) == ([2].into(), vec!["1.0.0".to_owned(); 2])
    });
    let plan = berth(&swarm, &host, "plan");
    plan.assert_exit(0);
    let gpu_line = plan_line(&plan, "gpu");
    assert!(
        gpu_line.starts_with("  keep ")
            && gpu_line.contains("in sync at 1.0.0  ")
            && gpu_line.ends_with(&format!(" 2/2 tasks on {}", hostname(2))),
        "{}",
        plan.stdout()
    );
}

/// The partner's `pair` script: `api` listening on every address, placed on node 1, and
/// `web` on node 2, whose health check asks `api` by its name over the script's overlay
/// network.
fn write_pair(host: &Host) {
    let partner = &host.partner;
    std::fs::write(
        host.repo().join(format!("partners/{partner}.yaml")),
        format!(
            "apiVersion: berth/v1\nkind: Partner\nname: {partner}\ntimezone: UTC\nwindows:\n  - days: [mon, tue, wed, thu, fri, sat, sun]\n    start: \"00:00\"\n    end: \"24:00\"\n\
             scripts:\n  - script: pair\n"
        ),
    )
    .unwrap();
    std::fs::write(
        host.repo().join("scripts/pair.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Script\nname: pair\nimage:\n  source: local\n  repository: {IMAGE_REPO}\nversions: \"=1.0.0\"\n\
             components:\n  api:\n    placement: [\"node.hostname == {api}\"]\n\
             \x20   container: {{ env: {{ LISTEN: \"0.0.0.0:8080\" }}, stop_timeout: 2s }}\n\
             \x20   health: {{ exec: [/serve, check], timeout: 60s }}\n\
             \x20 web:\n    placement: [\"node.hostname == {web}\"]\n\
             \x20   container: {{ env: {{ PORT: \"8080\" }}, stop_timeout: 2s }}\n\
             \x20   health: {{ exec: [/serve, check, \"http://api:8080/version\"], timeout: 60s }}\n\
             \x20   depends_on: {{ api: healthy }}\n",
            api = hostname(1),
            web = hostname(2),
        ),
    )
    .unwrap();
}

#[test]
fn berth_components_on_different_nodes_reach_each_other_by_name() {
    let host = Host::new("swc-pair");
    let swarm = Swarm::start("swc-pair", &[&image()]);
    write_pair(&host);
    berth(&swarm, &host, "apply").assert_exit(0);

    let api = format!("berth-{}-pair-api", host.partner);
    let web = format!("berth-{}-pair-web", host.partner);
    assert_eq!(placed(&swarm, &api).0, [1].into());
    let web_tasks = swarm.tasks(&web);
    assert_eq!(web_tasks.len(), 1);
    assert_eq!(web_tasks[0].node, 2);
    let mode = swarm.docker(&[
        "service",
        "inspect",
        &api,
        "--format",
        "{{.Spec.EndpointSpec.Mode}}",
    ]);
    assert_eq!(mode.assert_exit(0).stdout().trim(), "dnsrr");
    let check = swarm.node(2).docker(&[
        "exec",
        &web_tasks[0].container,
        "/serve",
        "check",
        "http://api:8080/version",
    ]);
    check.assert_exit(0);
    assert!(check.stdout().contains("answered 200"), "{}", check.text());
}
