//! The three-node swarm harness (common::swarm) proves itself with plain `docker`: the
//! nodes are ready, a service's replicas spread over them and reach each other across nodes
//! on an attachable overlay network, and a worker cut off or whose engine dies is marked
//! down by the manager, which moves its replicas; back, it is ready again and what ran
//! there alone is stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::swarm::{NODES, Swarm, Task, wait_until};
use crate::common::{IMAGE_REPO, images};

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
