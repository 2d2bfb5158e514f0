//! What a managed container is, as berth and the engine both speak of it: its spec (every
//! field counts towards `berth.spec-hash`), its name, its labels, and what the engine
//! reports of one. Pure data: the engine layer imports this and nothing of the manifests,
//! the resolver or the planner.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Unsealed;

/// How the container runs; every field counts towards `berth.spec-hash`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Host paths of the env files; their contents are in `env` on the host.
    pub env_files: Vec<String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub init: bool,
    pub stop_timeout_secs: u64,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub read_only: bool,
    pub user: Option<String>,
    /// The secrets it uses, each with the keyed hash of its content (empty away from the
    /// host), so a rotated secret changes the spec hash without the hash revealing it.
    /// Left out of the hash when empty, so a container without secrets keeps the hash it
    /// had before berth knew of them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Secrets mounted read-only as files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<SecretMount>,
    /// The plaintexts: counted through `secrets`, never serialized.
    #[serde(skip)]
    pub unsealed: Unsealed,
    /// The name other components reach it by on the script's network. This and the
    /// fields below are left out of the hash when unset, so a v1 container keeps its hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_alias: Option<String>,
    /// `health.exec`: the engine's healthcheck command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Vec<String>>,
    /// A one-shot: never restarted by the engine.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub job: bool,
    /// On `engine: swarm`, how many tasks run it; `None` on one engine (and skipped in the
    /// hash, so a v1 container keeps its spec hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// On `engine: swarm`, the service's placement constraints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// Holds data: on a swarm, one task pinned to the node that holds its volume, updated
    /// stop-first. Not hashed: it only says how the engine places what the spec describes.
    #[serde(skip)]
    pub stateful: bool,
}

/// A secret file in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMount {
    pub secret: String,
    pub target: String,
}

impl ContainerSpec {
    /// The environment the engine sets: `env`, with `env_secrets`' variables over it.
    pub fn engine_env(&self) -> Vec<String> {
        let mut env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend(
            self.unsealed
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// `sha256` of the spec's canonical JSON, as the `berth.spec-hash` label carries it.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("spec serializes");
        let digest = sha2::Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A spec with nothing set: the base the planner's, executor's and diff's tests vary.
#[cfg(test)]
impl ContainerSpec {
    pub fn minimal() -> ContainerSpec {
        ContainerSpec {
            command: None,
            env: BTreeMap::new(),
            env_files: vec![],
            ports: vec![],
            volumes: vec![],
            network: None,
            init: true,
            stop_timeout_secs: 10,
            memory: None,
            nano_cpus: None,
            read_only: false,
            user: None,
            secrets: BTreeMap::new(),
            secret_files: vec![],
            unsealed: Unsealed::default(),
            network_alias: None,
            healthcheck: None,
            job: false,
            replicas: None,
            placement: vec![],
            stateful: false,
        }
    }
}

/// The labels every managed container carries; berth reads a host from them alone.
pub mod label {
    pub const MANAGED: &str = "berth.managed";
    pub const PARTNER: &str = "berth.partner";
    pub const SCRIPT: &str = "berth.script";
    pub const VERSION: &str = "berth.version";
    pub const DIGEST: &str = "berth.digest";
    pub const SPEC_HASH: &str = "berth.spec-hash";
    pub const REVISION: &str = "berth.revision";
    /// The keyed hash of each secret's content, as JSON: how the planner names the secret
    /// that changed.
    pub const SECRETS: &str = "berth.secrets";
    /// The container's own directory of secret files, which a restart must fill again.
    pub const SECRETS_DIR: &str = "berth.secrets-dir";
    /// The component of a multi-component script; absent on a single-container script's.
    pub const COMPONENT: &str = "berth.component";
    /// On a named volume: the name the script declares it by.
    pub const VOLUME: &str = "berth.volume";
    /// The namespace a container, network or volume belongs to; absent outside any.
    pub const NAMESPACE: &str = "berth.namespace";
}

/// The namespace this process acts in (`namespace:` in agent.yaml, `--namespace`): set once
/// at startup, before any name is made or the engine asked, and read by every name and
/// label below and by every engine query. A process-wide setting, because one berth process
/// only ever acts for one namespace.
static NAMESPACE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Sets the namespace of this process; later calls change nothing.
pub fn set_namespace(namespace: Option<&str>) {
    let _ = NAMESPACE.set(namespace.map(str::to_owned));
}

/// The namespace this process acts in; `None`: today's names and no label.
pub fn namespace() -> Option<&'static str> {
    NAMESPACE.get().and_then(Option::as_deref)
}

/// Whether an object's labels put it in this process's namespace: the label, not the name,
/// decides, so `berth-staging-lab` of partner `lab` in `staging` is never taken for partner
/// `staging-lab`'s outside any namespace.
pub fn in_namespace(labels: &std::collections::HashMap<String, String>) -> bool {
    belongs(namespace(), labels)
}

fn belongs(namespace: Option<&str>, labels: &std::collections::HashMap<String, String>) -> bool {
    labels.get(label::NAMESPACE).map(String::as_str) == namespace
}

/// `berth-[<namespace>-]<rest>`.
fn named(namespace: Option<&str>, rest: &str) -> String {
    match namespace {
        Some(ns) => format!("berth-{ns}-{rest}"),
        None => format!("berth-{rest}"),
    }
}

/// The `berth.namespace` label of this process's objects, when it has a namespace.
fn namespace_label() -> Option<(&'static str, String)> {
    namespace().map(|ns| (label::NAMESPACE, ns.to_owned()))
}

/// The managed container name of a partner's script; also the name of a multi-component
/// script's network.
/// What a container runs, as one string: its image digest and spec hash. A swarm service
/// updated in place is judged (and rolled back) by it.
pub fn fingerprint(labels: &std::collections::HashMap<String, String>) -> String {
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
    format!("{} {}", get(label::DIGEST), get(label::SPEC_HASH))
}

pub fn container_name(partner: &str, script: &str) -> String {
    named(namespace(), &format!("{partner}-{script}"))
}

/// The managed container name of a script's component (`None`: a single-container script,
/// which keeps its v1 name).
pub fn part_name(partner: &str, script: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => named(namespace(), &format!("{partner}-{script}-{c}")),
        None => container_name(partner, script),
    }
}

/// A named volume berth creates for a script, and never deletes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Volume {
    /// `berth-[<namespace>-]<partner>-<script>-<volume>`.
    pub name: String,
    pub partner: String,
    pub script: String,
    /// The name the script declares it by.
    pub volume: String,
}

impl Volume {
    pub fn new(partner: &str, script: &str, volume: &str) -> Volume {
        Volume {
            name: named(namespace(), &format!("{partner}-{script}-{volume}")),
            partner: partner.to_owned(),
            script: script.to_owned(),
            volume: volume.to_owned(),
        }
    }

    /// The labels it is created with and recognised by.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            (label::MANAGED, "true".to_owned()),
            (label::PARTNER, self.partner.clone()),
            (label::SCRIPT, self.script.clone()),
            (label::VOLUME, self.volume.clone()),
        ]
        .into_iter()
        .chain(namespace_label())
        .collect()
    }
}

/// The bridge network of a multi-component script, on which each component answers to
/// its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `berth-[<namespace>-]<partner>-<script>`.
    pub name: String,
    pub partner: String,
    pub script: String,
}

impl Network {
    pub fn new(partner: &str, script: &str) -> Network {
        Network {
            name: container_name(partner, script),
            partner: partner.to_owned(),
            script: script.to_owned(),
        }
    }

    pub fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            (label::MANAGED, "true".to_owned()),
            (label::PARTNER, self.partner.clone()),
            (label::SCRIPT, self.script.clone()),
        ]
        .into_iter()
        .chain(namespace_label())
        .collect()
    }
}

/// Everything the engine needs to create a managed container.
#[derive(Debug, Clone, Copy)]
pub struct NewContainer<'a> {
    pub name: &'a str,
    /// A pinned reference or an image id, never a mutable tag.
    pub image: &'a str,
    pub partner: &'a str,
    pub script: &'a str,
    pub component: Option<&'a str>,
    pub version: &'a str,
    pub digest: &'a str,
    pub spec_hash: &'a str,
    pub revision: &'a str,
    pub spec: &'a ContainerSpec,
    /// Where its secret files are, when it has any.
    pub secrets_dir: Option<&'a str>,
}

impl NewContainer<'_> {
    /// The labels the container is created with.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels: Vec<(&'static str, String)> = [
            (label::MANAGED, "true"),
            (label::PARTNER, self.partner),
            (label::SCRIPT, self.script),
            (label::VERSION, self.version),
            (label::DIGEST, self.digest),
            (label::SPEC_HASH, self.spec_hash),
            (label::REVISION, self.revision),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
        if let Some(c) = self.component {
            labels.push((label::COMPONENT, c.to_owned()));
        }
        labels.extend(namespace_label());
        if !self.spec.secrets.is_empty() {
            let hashes = serde_json::to_string(&self.spec.secrets).expect("a map serializes");
            labels.push((label::SECRETS, hashes));
        }
        if let Some(dir) = self.secrets_dir {
            labels.push((label::SECRETS_DIR, dir.to_owned()));
        }
        labels
    }

    /// Each secret file as a read-only bind mount: the host file and the container path.
    pub fn secret_mounts(&self) -> Vec<(String, String)> {
        let Some(dir) = self.secrets_dir else {
            return Vec::new();
        };
        self.spec
            .secret_files
            .iter()
            .map(|f| (format!("{dir}/{}", f.secret), f.target.clone()))
            .collect()
    }
}

/// A managed container as the engine reports it, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub script: String,
    /// `berth.component`; `None` on a single-container script's container.
    pub component: Option<String>,
    pub version: String,
    pub digest: String,
    pub spec_hash: String,
    pub revision: String,
    pub running: bool,
    /// Its secrets' keyed hashes (`berth.secrets`).
    #[serde(skip)]
    pub secrets: BTreeMap<String, String>,
    /// Its directory of secret files (`berth.secrets-dir`).
    #[serde(skip)]
    pub secrets_dir: Option<String>,
    /// A swarm service's tasks; `None` for a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Tasks>,
}

impl ObservedContainer {
    /// A managed container (or swarm service) read from its labels, `label` looking one
    /// up (`lookup`): the one reading every engine shares. A `berth.secrets` label that is absent or
    /// unreadable carries no hashes.
    pub fn from_labels(
        id: String,
        name: String,
        lookup: impl Fn(&str) -> Option<String>,
        running: bool,
        tasks: Option<Tasks>,
    ) -> ObservedContainer {
        let get = |k: &str| lookup(k).unwrap_or_default();
        ObservedContainer {
            id,
            name,
            script: get(label::SCRIPT),
            component: lookup(label::COMPONENT),
            version: get(label::VERSION),
            digest: get(label::DIGEST),
            spec_hash: get(label::SPEC_HASH),
            revision: get(label::REVISION),
            running,
            secrets: lookup(label::SECRETS)
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default(),
            secrets_dir: lookup(label::SECRETS_DIR),
            tasks,
        }
    }
}

/// How many of a swarm service's tasks run, of how many it asks for, and on which nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tasks {
    pub running: u32,
    pub desired: u32,
    /// The nodes' host names, sorted, one entry per node.
    pub nodes: Vec<String>,
}

impl std::fmt::Display for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} tasks", self.running, self.desired)?;
        if !self.nodes.is_empty() {
            write!(f, " on {}", self.nodes.join(", "))?;
        }
        Ok(())
    }
}

/// Which engine berth drives: one Docker engine, or a Swarm manager (`engine: swarm` in
/// agent.yaml, `--engine swarm`). Chosen once per process; the planner and the rules read
/// it from the policy, the engine from its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Docker,
    Swarm,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Swarm => "swarm",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker" => Ok(EngineKind::Docker),
            "swarm" => Ok(EngineKind::Swarm),
            other => Err(format!("unknown engine `{other}`: docker or swarm")),
        }
    }
}

/// A published port, as `docker run -p` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: &'static str,
}

/// `[ip:]host:container[/tcp|udp]` or `container[/tcp|udp]`.
pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    let bad = |why: &str| format!("invalid port `{s}`: {why}");
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, "tcp"),
        Some((b, "udp")) => (b, "udp"),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (s, "tcp"),
    };
    let number = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("ports are numbers from 1 to 65535")),
        }
    };
    let parts: Vec<&str> = body.rsplitn(3, ':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [c, h] => (None, Some(*h), *c),
        [c, h, ip] => (Some(*ip), Some(*h), *c),
        _ => return Err(bad("expected [ip:]host:container")),
    };
    if let Some(ip) = ip
        && ip
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_err()
    {
        return Err(bad("the host address is not an IP address"));
    }
    Ok(PortSpec {
        host_ip: ip.map(str::to_owned),
        host_port: match host {
            Some("") | None => None,
            Some(h) => Some(number(h)?),
        },
        container_port: number(container)?,
        protocol,
    })
}

/// A host path bind-mounted into a container, as written and as it resolves on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Which of the spec's `volumes` it is.
    pub entry: usize,
    /// The source as the manifest writes it.
    pub source: String,
    /// The source with `..` and symlinks resolved, as far as it exists.
    pub real: String,
    pub read_only: bool,
    /// The resolved source is a unix socket, or a directory holding one.
    pub socket: bool,
}

/// A host file read into a container's env, as written and as it resolves on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// The path as the manifest writes it.
    pub path: String,
    /// The path with `..` and symlinks resolved.
    pub real: String,
    pub kind: FileKind,
}

/// What is at a host path, as far as reading it as settings goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Regular,
    /// A directory, FIFO, socket or device: reading it would fail, block or hand a device over.
    Other(&'static str),
}

/// The host source and mode of a `volumes` entry; `None` for a named volume.
pub fn host_bind(volume: &str) -> Option<(&str, bool)> {
    let mut parts = volume.split(':');
    let source = parts.next()?;
    if !source.starts_with('/') {
        return None;
    }
    let read_only = parts.nth(1) == Some("ro");
    Some((source, read_only))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_namespace_goes_between_berth_and_the_partner() {
        assert_eq!(named(None, "lab-s"), "berth-lab-s");
        assert_eq!(named(Some("staging"), "lab-s"), "berth-staging-lab-s");
    }

    #[test]
    fn the_label_not_the_name_decides_the_namespace() {
        let labels = |ns: Option<&str>| -> HashMap<String, String> {
            [(label::PARTNER, "lab")]
                .into_iter()
                .chain(ns.map(|n| (label::NAMESPACE, n)))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        assert!(belongs(None, &labels(None)));
        assert!(!belongs(None, &labels(Some("staging"))));
        assert!(belongs(Some("staging"), &labels(Some("staging"))));
        assert!(!belongs(Some("staging"), &labels(None)));
        assert!(!belongs(Some("staging"), &labels(Some("prod"))));
    }
}
