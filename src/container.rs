//! What a managed container is, as berth and the engine both speak of it: its spec (every
//! field counts towards `berth.spec-hash`), its name, its labels, and what the engine
//! reports of one. Pure data: the engine layer imports this and nothing of the manifests,
//! the resolver or the planner.

use std::collections::BTreeMap;

use serde::Serialize;

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
}

impl ContainerSpec {
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
}

/// The managed container name of a partner's script.
pub fn container_name(partner: &str, script: &str) -> String {
    format!("berth-{partner}-{script}")
}

/// Everything the engine needs to create a managed container.
#[derive(Debug, Clone, Copy)]
pub struct NewContainer<'a> {
    pub name: &'a str,
    /// A pinned reference or an image id, never a mutable tag.
    pub image: &'a str,
    pub partner: &'a str,
    pub script: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    pub spec_hash: &'a str,
    pub revision: &'a str,
    pub spec: &'a ContainerSpec,
}

impl NewContainer<'_> {
    /// The labels the container is created with.
    pub fn labels(&self) -> [(&'static str, &str); 7] {
        [
            (label::MANAGED, "true"),
            (label::PARTNER, self.partner),
            (label::SCRIPT, self.script),
            (label::VERSION, self.version),
            (label::DIGEST, self.digest),
            (label::SPEC_HASH, self.spec_hash),
            (label::REVISION, self.revision),
        ]
    }
}

/// A managed container as the engine reports it, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    pub script: String,
    pub version: String,
    pub digest: String,
    pub spec_hash: String,
    pub revision: String,
    pub running: bool,
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
    /// The resolved source is a unix socket.
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
