//! A real three-node Docker Swarm on this machine, for the tests of `engine: swarm`: three
//! private engines ([`PrivateEngine`]), each in its own network namespace whose `eth0` is
//! one end of a veth pair; the other ends are ports of a bridge in a fourth namespace. The
//! nodes reach each other only through that bridge, on 10.213.0.0/24, and nothing leaves:
//! no namespace has a default route. Node 0 is the manager, 1 and 2 are workers. Cutting a
//! node off sets its bridge port down; the manager marks it down within seconds, as the
//! dispatcher heartbeat is 1 s here (5 s by default).
//!
//! What works on these engines (`--bridge=none --iptables=false`, vfs, a kernel without
//! IPVS): attachable overlay networks between the nodes (VXLAN), `tasks.<service>` names,
//! `--endpoint-mode dnsrr`, `network: host`, and host-mode published ports for a service
//! on an overlay network (docker-proxy forwards through `docker_gwbridge`). What does not:
//! the routing mesh (ingress-published ports) and a service's virtual IP, both IPVS; and
//! host-mode ports on a service with no network, whose tasks land on the default bridge
//! that `--bridge=none` leaves out.
//!
//! One swarm runs at a time in the test binary: three engines are what two cores carry.

use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::command::{Berth, Run};
use super::dockerd::PrivateEngine;
use super::run;

/// How many engines the swarm has; node 0 is the manager.
pub const NODES: usize = 3;

/// Overlay networks take their subnets from here, clear of the nodes' own link.
const ADDRESS_POOL: &str = "10.214.0.0/16";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Swarm {
    nodes: Vec<PrivateEngine>,
    ids: Vec<String>,
    bridge: String,
    _turn: MutexGuard<'static, ()>,
}

/// A task the manager wants running, as the manager sees it.
pub struct Task {
    /// Index of the node it is assigned to.
    pub node: usize,
    /// `running`, `starting`, `pending`…
    pub state: String,
    /// Its container on that node (empty until the node has created it).
    pub container: String,
    /// Its address on each network it is attached to: (network name, IP).
    pub addresses: Vec<(String, String)>,
}

impl Task {
    /// The task's IP on `network`.
    #[track_caller]
    pub fn ip_on(&self, network: &str) -> &str {
        self.addresses
            .iter()
            .find(|(name, _)| name == network)
            .map(|(_, ip)| ip.as_str())
            .unwrap_or_else(|| panic!("the task is not on {network}: {:?}", self.addresses))
    }
}

impl Swarm {
    /// Starts the three engines, imports `images` from the machine's engine into each,
    /// forms the swarm and waits until the manager sees every node ready.
    pub fn start(tag: &str, images: &[&str]) -> Swarm {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let bridge = format!("berth-{tag}-br-{}", std::process::id());
        ip(&["netns", "add", &bridge]);
        let mut swarm = Swarm {
            nodes: Vec::new(),
            ids: Vec::new(),
            bridge,
            _turn: turn,
        };
        swarm.ip_in_bridge(&["link", "set", "lo", "up"]);
        swarm.ip_in_bridge(&["link", "add", "br0", "type", "bridge"]);
        swarm.ip_in_bridge(&["link", "set", "br0", "up"]);
        for i in 0..NODES {
            let engine = PrivateEngine::named(&format!("{tag}-n{i}"), &hostname(i));
            let port = port_name(i);
            let ns = engine.netns().to_owned();
            swarm.nodes.push(engine);
            swarm.ip_in_bridge(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            swarm.ip_in_bridge(&["link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", address(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        swarm.load(images);
        swarm.form();
        swarm
    }

    fn load(&self, images: &[&str]) {
        if images.is_empty() {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let tar = dir.path().join("images.tar");
        run(Command::new("docker")
            .arg("save")
            .arg("-o")
            .arg(&tar)
            .args(images))
        .assert_exit(0);
        for node in &self.nodes {
            let tar = tar.to_str().expect("a UTF-8 temp path");
            node.docker(&["load", "-q", "-i", tar]).assert_exit(0);
        }
    }

    fn form(&mut self) {
        let manager = address(0);
        self.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &manager,
            "--listen-addr",
            &format!("{manager}:2377"),
            "--default-addr-pool",
            ADDRESS_POOL,
            "--dispatcher-heartbeat",
            "1s",
        ])
        .assert_exit(0);
        let token = self.docker(&["swarm", "join-token", "-q", "worker"]);
        let token = token.assert_exit(0).stdout().trim().to_owned();
        for i in 1..NODES {
            self.nodes[i]
                .docker(&[
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &address(i),
                    &format!("{manager}:2377"),
                ])
                .assert_exit(0);
        }
        self.ids = self
            .nodes
            .iter()
            .map(|node| {
                let id = node.docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
                id.assert_exit(0).stdout().trim().to_owned()
            })
            .collect();
        for i in 0..NODES {
            self.wait_node(i, "ready", Duration::from_secs(30));
        }
    }

    /// Node `i`'s engine: `docker` against it, or kill it and start it again.
    pub fn node(&self, i: usize) -> &PrivateEngine {
        &self.nodes[i]
    }

    /// Node `i`'s swarm node ID.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// `docker …` against the manager.
    pub fn docker(&self, args: &[&str]) -> Run {
        self.nodes[0].docker(args)
    }

    /// `berth <subcommand>` in the manager's namespace, talking to the manager.
    pub fn berth(&self, subcommand: &str) -> Berth {
        self.nodes[0].berth(subcommand)
    }

    /// Cuts node `i` off: its link goes down, its engine and containers run on alone.
    pub fn cut(&self, i: usize) {
        self.ip_in_bridge(&["link", "set", &port_name(i), "down"]);
    }

    /// Brings node `i`'s link back up.
    pub fn reconnect(&self, i: usize) {
        self.ip_in_bridge(&["link", "set", &port_name(i), "up"]);
    }

    /// Node `i`'s state as the manager sees it: `ready`, `down`, `unknown`.
    pub fn node_state(&self, i: usize) -> String {
        let state = self.docker(&[
            "node",
            "inspect",
            self.id(i),
            "--format",
            "{{.Status.State}}",
        ]);
        state.assert_exit(0).stdout().trim().to_owned()
    }

    /// Waits until the manager sees node `i` in `state`.
    #[track_caller]
    pub fn wait_node(&self, i: usize, state: &str, limit: Duration) {
        wait_until(limit, &format!("node {i} {state}"), || {
            self.node_state(i) == state
        });
    }

    /// The tasks of `service` that the manager wants running, wherever they are.
    pub fn tasks(&self, service: &str) -> Vec<Task> {
        let ids = self.docker(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            service,
        ]);
        let ids: Vec<&str> = ids.assert_exit(0).stdout().split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect", "--type", "task"];
        args.extend(&ids);
        let found = self.docker(&args);
        let found = found.assert_exit(0).json();
        found
            .as_array()
            .expect("docker inspect prints an array")
            .iter()
            .map(|task| {
                let node = task["NodeID"].as_str().unwrap_or_default();
                Task {
                    node: self.ids.iter().position(|id| id == node).unwrap_or(NODES),
                    state: task["Status"]["State"].as_str().unwrap_or_default().into(),
                    container: task["Status"]["ContainerStatus"]["ContainerID"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                    addresses: attachments(task),
                }
            })
            .collect()
    }

    fn ip_in_bridge(&self, args: &[&str]) {
        let mut all = vec!["-n", self.bridge.as_str()];
        all.extend(args);
        ip(&all);
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // A node cut off would stop in its own time; linked again, it leaves promptly.
        for i in 0..self.nodes.len() {
            let _ = Command::new("ip")
                .args(["-n", &self.bridge, "link", "set", &port_name(i), "up"])
                .status();
        }
        // Workers first, so the manager does not reschedule onto an engine going away.
        while let Some(node) = self.nodes.pop() {
            drop(node);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge])
            .status();
    }
}

/// Node `i`'s address on the swarm's link.
pub fn address(i: usize) -> String {
    format!("10.213.0.{}", i + 1)
}

/// Node `i`'s host name, as the swarm lists it.
pub fn hostname(i: usize) -> String {
    format!("node-{i}")
}

/// The bridge's port for node `i`.
fn port_name(i: usize) -> String {
    format!("n{i}")
}

/// (network name, IP) for each network a task is attached to.
fn attachments(task: &serde_json::Value) -> Vec<(String, String)> {
    task["NetworksAttachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let name = a["Network"]["Spec"]["Name"].as_str()?;
            let cidr = a["Addresses"].as_array()?.first()?.as_str()?;
            let ip = cidr.split_once('/').map_or(cidr, |(ip, _)| ip);
            Some((name.to_owned(), ip.to_owned()))
        })
        .collect()
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args)).assert_exit(0);
}

/// Polls `done` every 250 ms until it holds; fails naming `what` after `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
