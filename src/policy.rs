//! The partner's host policy (`kind: HostPolicy`, docs/security.md): what any script may do
//! on this host, on top of the floor that holds without one. The manifest repo is the fleet
//! team's; this file is the partner's and never lives in it. Only [`load`] reads a file;
//! the rules are pure: a container is judged from its resolved spec and the resolved host
//! paths it names, and every refusal carries the rule's position in the policy file and
//! the value's in the manifests.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::container::{Bind, ContainerSpec, EngineKind, EnvFile, parse_port};
use crate::diag::{Diagnostic, Diagnostics, Loc, Pos};
use crate::floor::Floor;
use crate::manifest::{API_VERSION, Sp, syntax};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "apiVersion")]
    api_version: Sp<String>,
    kind: Sp<String>,
    #[serde(default)]
    volumes: Option<VolumesFile>,
    #[serde(default)]
    env_files: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    networks: Option<Sp<Vec<Sp<String>>>>,
    #[serde(default)]
    ports: Option<PortsFile>,
    #[serde(default)]
    images: Option<ImagesFile>,
    #[serde(default)]
    users: Option<UsersFile>,
    #[serde(default)]
    limits: Option<LimitsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumesFile {
    host_paths: Sp<Vec<Sp<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsFile {
    bind: Sp<Vec<Sp<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    registries: Sp<Vec<Sp<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    root: Sp<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default)]
    memory: Option<Sp<String>>,
    #[serde(default)]
    cpus: Option<Sp<f64>>,
}

/// One rule of the policy: what it allows, and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<T> {
    pub allows: T,
    pub at: Loc,
}

/// A checked host policy. A rule that is absent does not restrict.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPolicy {
    pub host_paths: Option<Rule<Vec<glob::Pattern>>>,
    pub env_files: Option<Rule<Vec<glob::Pattern>>>,
    pub networks: Option<Rule<Vec<String>>>,
    pub bind: Option<Rule<Vec<IpAddr>>>,
    pub registries: Option<Rule<Vec<String>>>,
    /// `users.root`: whether a container may run as root (user 0, or no user at all).
    pub root: Option<Rule<bool>>,
    /// Bytes.
    pub memory: Option<Rule<i64>>,
    /// Billionths of a CPU, as the engine counts them.
    pub nano_cpus: Option<Rule<i64>>,
}

/// Paths match component by component: `*` stays inside one, `**` spans any number.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Reads and checks a policy file; every problem is a diagnostic at its `path:line:col`.
pub fn load(path: &Path) -> Result<HostPolicy, Diagnostics> {
    let name = path.display().to_string();
    let mut diags = Diagnostics::default();
    let mut error = |pos: Pos, message: String| diags.push(Diagnostic::error(&name, pos, message));
    let text = match read(path) {
        Ok(t) => t,
        Err(why) => {
            error(Pos { line: 1, col: 1 }, why);
            return Err(diags);
        }
    };
    let file: File = match crate::manifest::parse(&text) {
        Ok(f) => f,
        Err((pos, message)) => {
            error(pos, message);
            return Err(diags);
        }
    };
    if file.api_version.value != API_VERSION {
        error(
            file.api_version.pos,
            format!("apiVersion must be `{API_VERSION}`"),
        );
    }
    if file.kind.value != "HostPolicy" {
        error(file.kind.pos, "kind must be `HostPolicy`".into());
    }
    let at = |pos: Pos| Loc {
        path: name.clone(),
        pos,
    };
    let each = |list: &Sp<Vec<Sp<String>>>,
                check: &dyn Fn(&str) -> Result<(), String>,
                error: &mut dyn FnMut(Pos, String)| {
        for item in &list.value {
            if let Err(why) = check(item) {
                error(item.pos, why);
            }
        }
    };
    let patterns = |list: &Sp<Vec<Sp<String>>>| {
        list.iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect()
    };
    let pattern = |p: &str| {
        if !p.starts_with('/') {
            return Err(format!("`{p}` must be an absolute path pattern"));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(format!("`{p}` must not contain `..`"));
        }
        glob::Pattern::new(p)
            .map(drop)
            .map_err(|e| format!("`{p}` is not a valid pattern: {e}"))
    };
    let mut policy = HostPolicy {
        host_paths: None,
        env_files: None,
        networks: None,
        bind: None,
        registries: None,
        root: None,
        memory: None,
        nano_cpus: None,
    };
    if let Some(v) = &file.volumes {
        each(&v.host_paths, &pattern, &mut error);
        policy.host_paths = Some(Rule {
            allows: patterns(&v.host_paths),
            at: at(v.host_paths.pos),
        });
    }
    if let Some(e) = &file.env_files {
        each(e, &pattern, &mut error);
        policy.env_files = Some(Rule {
            allows: patterns(e),
            at: at(e.pos),
        });
    }
    if let Some(n) = &file.networks {
        each(
            n,
            &|n| {
                if n.is_empty() || n.contains(char::is_whitespace) {
                    Err(format!("`{n}` is not a network name"))
                } else {
                    Ok(())
                }
            },
            &mut error,
        );
        policy.networks = Some(Rule {
            allows: n.iter().map(|n| n.value.clone()).collect(),
            at: at(n.pos),
        });
    }
    if let Some(p) = &file.ports {
        let ip = |a: &str| a.trim_matches(['[', ']']).parse::<IpAddr>();
        each(
            &p.bind,
            &|a| {
                ip(a)
                    .map(drop)
                    .map_err(|_| format!("`{a}` is not an IP address"))
            },
            &mut error,
        );
        policy.bind = Some(Rule {
            allows: p.bind.iter().filter_map(|a| ip(a).ok()).collect(),
            at: at(p.bind.pos),
        });
    }
    if let Some(i) = &file.images {
        each(
            &i.registries,
            &|r| {
                if r.is_empty() || r.contains(['/', ' ']) {
                    Err(format!(
                        "`{r}` is not a registry host (write `host[:port]`, no scheme or path)"
                    ))
                } else {
                    Ok(())
                }
            },
            &mut error,
        );
        policy.registries = Some(Rule {
            allows: i
                .registries
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .collect(),
            at: at(i.registries.pos),
        });
    }
    if let Some(u) = &file.users {
        policy.root = Some(Rule {
            allows: u.root.value,
            at: at(u.root.pos),
        });
    }
    if let Some(l) = &file.limits {
        if let Some(m) = &l.memory {
            match syntax::parse_memory(m) {
                Ok(bytes) => {
                    policy.memory = Some(Rule {
                        allows: bytes,
                        at: at(m.pos),
                    });
                }
                Err(why) => error(m.pos, why),
            }
        }
        if let Some(c) = &l.cpus {
            // Below a hundredth the engine's count rounds to 0: no limit at all.
            if c.value.is_finite() && c.value >= 0.01 {
                policy.nano_cpus = Some(Rule {
                    allows: (c.value * 1e9) as i64,
                    at: at(c.pos),
                });
            } else {
                error(c.pos, "cpus must be a number of at least 0.01".into());
            }
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(policy)
    }
}

/// The file's text, refusing what is not a plain file of settings or is absurdly large.
fn read(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file: refused".into());
    }
    let mut text = String::new();
    file.take(crate::diag::MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > crate::diag::MAX_FILE_BYTES {
        return Err("larger than 1 MiB: refused".into());
    }
    Ok(text)
}

/// Where each value of a container's spec was written in the manifests, so a refusal can
/// point at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The script's `name`: where a value that is absent (no user, say) is reported.
    pub script: Loc,
    /// The image's registry, or its source when the registry is the fleet's default.
    pub image: Loc,
    /// One per entry of the spec's `volumes`, `ports` and `env_files`.
    pub volumes: Vec<Loc>,
    pub ports: Vec<Loc>,
    pub env_files: Vec<Loc>,
    pub network: Option<Loc>,
    pub user: Option<Loc>,
    pub memory: Option<Loc>,
    pub cpus: Option<Loc>,
    pub replicas: Option<Loc>,
    pub placement: Option<Loc>,
}

/// A container as the policy judges it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub spec: &'a ContainerSpec,
    pub binds: &'a [Bind],
    pub env_files: &'a [EnvFile],
    /// The registry the image comes from; `None` for the engine's own (`local`) images.
    pub registry: Option<&'a str>,
    pub origin: &'a Origin,
}

/// Why a container may not run on this host: the rule, the offending value, and where
/// each is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// `floor`, or the policy's rule: `volumes.host_paths`, `users.root`, ...
    pub rule: String,
    /// Where the rule is written; `None` for the floor, which is berth's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_at: Option<Loc>,
    pub value: String,
    pub value_at: Loc,
    pub why: String,
}

impl Refusal {
    /// The refusal without the value's position, for a diagnostic that carries it.
    pub fn message(&self) -> String {
        match &self.rule_at {
            Some(at) => format!(
                "{}: {} (policy rule {} at {at})",
                self.value, self.why, self.rule
            ),
            None if self.rule == ENGINE_RULE => format!("{}: {}", self.value, self.why),
            None => format!("{}: {} (berth's floor)", self.value, self.why),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.message();
        let (value, rest) = message.split_at(self.value.len());
        write!(f, "{value} at {}{rest}", self.value_at)
    }
}

/// Whether a `user:` is root: the name, or a uid the engine reads as 0 (`0`, `00`, `+0`).
fn is_root(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or_default();
    uid == "root" || uid.trim_start_matches('+').parse::<u64>() == Ok(0)
}

/// Everything a container is judged by on this host: the floor, and the partner's policy
/// when it has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub floor: Floor,
    pub host: Option<HostPolicy>,
    /// The engine berth drives here: some settings exist only on a swarm, some only on one
    /// engine.
    pub engine: EngineKind,
}

fn refusal<T>(
    rule: &str,
    at: Option<&Rule<T>>,
    value: String,
    value_at: &Loc,
    why: String,
) -> Refusal {
    Refusal {
        rule: rule.to_owned(),
        rule_at: at.map(|r| r.at.clone()),
        value,
        value_at: value_at.clone(),
        why,
    }
}

/// The rule of a refusal by the engine berth drives (`engine: swarm` or one engine).
pub const ENGINE_RULE: &str = "engine";

fn engine_refusal(value: String, value_at: &Loc, why: String) -> Refusal {
    refusal::<()>(ENGINE_RULE, None, value, value_at, why)
}

fn floor_refusal(value: String, value_at: &Loc, why: String) -> Refusal {
    refusal::<()>("floor", None, value, value_at, why)
}

fn loc(list: &[Loc], i: usize, fallback: &Loc) -> Loc {
    list.get(i).unwrap_or(fallback).clone()
}

impl Rules {
    /// Why reading an env file breaks the floor or the policy, if it does: asked before the
    /// file is read, so a refused file is never opened.
    pub fn env_file_refusal(&self, file: &EnvFile, at: &Loc) -> Option<Refusal> {
        let value = format!("env file {}", file.path);
        if let Some(why) = self.floor.env_file_refusal(file) {
            return Some(floor_refusal(value, at, why));
        }
        let rule = self.host.as_ref()?.env_files.as_ref()?;
        (!rule
            .allows
            .iter()
            .any(|p| p.matches_with(&file.real, MATCH)))
        .then(|| {
            refusal(
                "env_files",
                Some(rule),
                value,
                at,
                format!("{} is not a file env_files allows", file.real),
            )
        })
    }

    /// Why the policy refuses images from a registry, if it does: asked before the
    /// registry is, so a host never contacts a registry its policy does not allow.
    pub fn image_refusal(&self, registry: Option<&str>, at: &Loc) -> Option<Refusal> {
        let rule = self.host.as_ref()?.registries.as_ref()?;
        let registry = registry?;
        (!rule.allows.contains(&registry.to_ascii_lowercase())).then(|| {
            refusal(
                "images.registries",
                Some(rule),
                format!("registry {registry}"),
                at,
                format!("images.registries allows only {}", rule.allows.join(", ")),
            )
        })
    }

    /// Every way the container breaks the floor or the policy; empty when it may run.
    pub fn refusals(&self, c: &Candidate<'_>) -> Vec<Refusal> {
        let o = c.origin;
        let mut out = Vec::new();
        for b in c.binds {
            let at = loc(&o.volumes, b.entry, &o.script);
            let value = format!(
                "volume {}",
                c.spec.volumes.get(b.entry).unwrap_or(&b.source)
            );
            if let Some(why) = self.floor.refusal(b) {
                out.push(floor_refusal(value, &at, why));
            } else if let Some(rule) = self.host.as_ref().and_then(|h| h.host_paths.as_ref())
                && !rule.allows.iter().any(|p| p.matches_with(&b.real, MATCH))
            {
                out.push(refusal(
                    "volumes.host_paths",
                    Some(rule),
                    value,
                    &at,
                    format!("{} is not a path volumes.host_paths allows", b.real),
                ));
            }
        }
        for (i, f) in c.env_files.iter().enumerate() {
            out.extend(self.env_file_refusal(f, &loc(&o.env_files, i, &o.script)));
        }
        out.extend(self.engine_refusals(c));
        let Some(host) = &self.host else {
            return out;
        };
        if let Some(rule) = &host.networks {
            // `private` names a script's own network (a component answering to its name
            // there), never an engine network of that name.
            let own = c.spec.network_alias.is_some();
            let network = match c.spec.network.as_deref() {
                _ if own => "private",
                Some(n) => n,
                None => "bridge",
            };
            if !rule
                .allows
                .iter()
                .any(|n| n == network && (own || n != "private"))
            {
                let at = o.network.as_ref().unwrap_or(&o.script);
                out.push(refusal(
                    "networks",
                    Some(rule),
                    format!("network {network}"),
                    at,
                    format!("networks allows only {}", rule.allows.join(", ")),
                ));
            }
        }
        if let Some(rule) = &host.bind {
            for (i, p) in c.spec.ports.iter().enumerate() {
                let Ok(port) = parse_port(p) else { continue };
                let address = port.host_ip.as_deref().map(|a| a.trim_matches(['[', ']']));
                let allowed = address
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| rule.allows.contains(&a))
                    || (address.is_none() && rule.allows.iter().any(IpAddr::is_unspecified));
                if !allowed {
                    out.push(refusal(
                        "ports.bind",
                        Some(rule),
                        format!("port {p}"),
                        &loc(&o.ports, i, &o.script),
                        match address {
                            Some(a) => format!("published on {a}, which ports.bind does not list"),
                            None => "published on every host address; ports.bind lists the ones allowed (write e.g. `127.0.0.1:8080:80`)".into(),
                        },
                    ));
                }
            }
        }
        out.extend(self.image_refusal(c.registry, &o.image));
        if let Some(rule) = &host.root
            && !rule.allows
        {
            let why = match c.spec.user.as_deref() {
                None => Some((
                    "no user".to_owned(),
                    "without a user the image's own runs, often root; set `user:`".to_owned(),
                )),
                Some(u) if is_root(u) => Some((format!("user {u}"), "root".to_owned())),
                Some(_) => None,
            };
            if let Some((value, why)) = why {
                let at = o.user.as_ref().unwrap_or(&o.script);
                out.push(refusal(
                    "users.root",
                    Some(rule),
                    value,
                    at,
                    format!("{why}, and users.root is false"),
                ));
            }
        }
        if let (Some(rule), Some(m)) = (&host.memory, c.spec.memory)
            && (m > rule.allows || m <= 0)
        {
            out.push(refusal(
                "limits.memory",
                Some(rule),
                format!("memory {m} bytes"),
                o.memory.as_ref().unwrap_or(&o.script),
                format!("above the ceiling of {} bytes", rule.allows),
            ));
        }
        // The engine reads 0 as no limit.
        if let (Some(rule), Some(n)) = (&host.nano_cpus, c.spec.nano_cpus)
            && (n > rule.allows || n <= 0)
        {
            out.push(refusal(
                "limits.cpus",
                Some(rule),
                format!("cpus {}", n as f64 / 1e9),
                o.cpus.as_ref().unwrap_or(&o.script),
                format!("above the ceiling of {}", rule.allows as f64 / 1e9),
            ));
        }
        out
    }

    /// What the engine berth drives cannot do: `replicas` and `placement` need a swarm; a
    /// swarm service cannot be attached to `network: none`, cannot publish a port on one
    /// host address only (Swarm publishes on every address of the node), and does not run
    /// jobs (yet).
    fn engine_refusals(&self, c: &Candidate<'_>) -> Vec<Refusal> {
        let o = c.origin;
        let mut out = Vec::new();
        match self.engine {
            EngineKind::Docker => {
                for (key, at, set) in [
                    ("replicas", &o.replicas, c.spec.replicas.is_some()),
                    ("placement", &o.placement, !c.spec.placement.is_empty()),
                ] {
                    if set {
                        out.push(engine_refusal(
                            key.to_owned(),
                            at.as_ref().unwrap_or(&o.script),
                            "replicas/placement need engine: swarm; this host runs one Docker engine (engine: docker)".into(),
                        ));
                    }
                }
            }
            EngineKind::Swarm => {
                if c.spec.network.as_deref() == Some("none") {
                    out.push(engine_refusal(
                        "network none".into(),
                        o.network.as_ref().unwrap_or(&o.script),
                        "the engine API cannot attach a Swarm service to `none` (engine: swarm); leave `network` out".into(),
                    ));
                }
                for (i, p) in c.spec.ports.iter().enumerate() {
                    let Ok(port) = parse_port(p) else { continue };
                    let address = port.host_ip.as_deref().map(|a| a.trim_matches(['[', ']']));
                    if address
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .is_some_and(|a| !a.is_unspecified())
                    {
                        out.push(engine_refusal(
                            format!("port {p}"),
                            &loc(&o.ports, i, &o.script),
                            "Swarm publishes a port on every address of the node, never on one (engine: swarm); write `host:container` and let the host's firewall decide who reaches it".into(),
                        ));
                    }
                }
                if !c.spec.secret_files.is_empty() {
                    out.push(engine_refusal(
                        "secret_files".into(),
                        &o.script,
                        "secret files are written on this node only, where a task on another node would not find them (engine: swarm); use env_secrets".into(),
                    ));
                }
                if c.spec.job {
                    out.push(engine_refusal(
                        "job".into(),
                        &o.script,
                        "berth does not run jobs as Swarm services yet (engine: swarm)".into(),
                    ));
                }
            }
        }
        out
    }

    /// Gives a container without limits the policy's ceilings, before its spec is hashed:
    /// a policy that gains a ceiling rolls such containers in their window.
    pub fn apply_ceilings(&self, spec: &mut ContainerSpec) {
        let Some(host) = &self.host else { return };
        if spec.memory.is_none() {
            spec.memory = host.memory.as_ref().map(|r| r.allows);
        }
        if spec.nano_cpus.is_none() {
            spec.nano_cpus = host.nano_cpus.as_ref().map(|r| r.allows);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn loaded(text: &str) -> HostPolicy {
        let (_dir, path) = write(text);
        load(&path).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        let (_dir, path) = write(text);
        load(&path)
            .expect_err("invalid")
            .iter()
            .map(|d| {
                let at = d.pos.map(|p| p.to_string()).unwrap_or_default();
                format!("{at} {}", d.message)
            })
            .collect()
    }

    const HEAD: &str = "apiVersion: berth/v1\nkind: HostPolicy\n";

    /// The floor of no host, and a policy of these rules.
    fn policy_rules(body: &str) -> Rules {
        Rules {
            floor: Floor::default(),
            host: Some(loaded(&format!("{HEAD}{body}"))),
            engine: EngineKind::Docker,
        }
    }

    /// A policy whose only rule is `networks`, written at line 3.
    pub(crate) fn allowing_networks(names: &[&str]) -> HostPolicy {
        HostPolicy {
            networks: Some(Rule {
                allows: names.iter().map(|n| (*n).to_owned()).collect(),
                at: Loc {
                    path: "/etc/berth/policy.yaml".into(),
                    pos: Pos { line: 3, col: 11 },
                },
            }),
            ..loaded(HEAD)
        }
    }

    #[test]
    fn the_design_example_loads_with_each_rule_at_its_line() {
        let p = loaded(&format!(
            "{HEAD}volumes: {{ host_paths: [\"/srv/gh/**\"] }}\nenv_files: [\"/etc/berth/env/**\"]\n\
             networks: [private, bridge, none]\nports: {{ bind: [\"127.0.0.1\"] }}\n\
             images: {{ registries: [\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"] }}\n\
             users: {{ root: false }}\nlimits: {{ memory: 4g, cpus: 2.0 }}\n"
        ));
        assert_eq!(
            p.host_paths.as_ref().unwrap().at.pos,
            Pos { line: 3, col: 24 }
        );
        assert_eq!(p.env_files.as_ref().unwrap().at.pos.line, 4);
        assert_eq!(
            p.networks.as_ref().unwrap().allows,
            ["private", "bridge", "none"]
        );
        assert_eq!(
            p.bind.as_ref().unwrap().allows,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(!p.root.as_ref().unwrap().allows);
        assert_eq!(p.memory.as_ref().unwrap().allows, 4 << 30);
        assert_eq!(p.nano_cpus.as_ref().unwrap().allows, 2_000_000_000);
        assert_eq!(p.memory.as_ref().unwrap().at.pos.line, 9);
    }

    #[test]
    fn mistakes_are_reported_where_they_are_written() {
        let e = errors(&format!(
            "{HEAD}volumes: {{ host_paths: [\"srv/**\", \"/a/../b\", \"/x/[\"] }}\nports: {{ bind: [localhost] }}\n\
             limits: {{ memory: lots, cpus: 0 }}\nimages: {{ registries: [\"https://r.example\"] }}\n"
        ));
        let want = [
            "3:25 `srv/**` must be an absolute path pattern",
            "3:35 `/a/../b` must not contain `..`",
            "3:46 `/x/[` is not a valid pattern",
            "4:17 `localhost` is not an IP address",
            "6:24 `https://r.example` is not a registry host",
            "5:19 invalid memory",
            "5:31 cpus must be a number of at least 0.01",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, want) in e.iter().zip(want) {
            assert!(got.starts_with(want), "{got} / {want}");
        }
        let unknown = errors(&format!("{HEAD}volume: {{}}\n"));
        assert!(
            unknown[0].starts_with("3:1 ") && unknown[0].contains("unknown field"),
            "{unknown:?}"
        );
        let kind = errors("apiVersion: berth/v1\nkind: Partner\n");
        assert_eq!(kind, ["2:7 kind must be `HostPolicy`"]);
    }

    fn loc(line: u32) -> Loc {
        Loc {
            path: "scripts/s.yaml".into(),
            pos: Pos { line, col: 3 },
        }
    }

    fn origin() -> Origin {
        Origin {
            script: loc(3),
            image: loc(5),
            volumes: vec![loc(10), loc(11)],
            ports: vec![loc(12), loc(13), loc(14)],
            env_files: vec![loc(20)],
            network: Some(loc(15)),
            user: Some(loc(16)),
            memory: Some(loc(17)),
            cpus: None,
            replicas: Some(loc(18)),
            placement: Some(loc(19)),
        }
    }

    fn engine_refusals(engine: EngineKind, spec: &ContainerSpec) -> Vec<String> {
        let rules = Rules {
            engine,
            ..Rules::default()
        };
        let origin = origin();
        rules
            .refusals(&Candidate {
                spec,
                binds: &[],
                env_files: &[],
                registry: None,
                origin: &origin,
            })
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn replicas_and_placement_need_a_swarm_and_a_swarm_refuses_what_it_cannot_run() {
        let scaled = ContainerSpec {
            replicas: Some(3),
            placement: vec!["node.labels.gpu == true".into()],
            ..ContainerSpec::minimal()
        };
        assert_eq!(
            engine_refusals(EngineKind::Docker, &scaled),
            [
                "replicas at scripts/s.yaml:18:3: replicas/placement need engine: swarm; this host runs one Docker engine (engine: docker)",
                "placement at scripts/s.yaml:19:3: replicas/placement need engine: swarm; this host runs one Docker engine (engine: docker)",
            ]
        );
        assert_eq!(
            engine_refusals(EngineKind::Swarm, &scaled),
            Vec::<String>::new()
        );
        let single = ContainerSpec {
            network: Some("none".into()),
            ports: vec![
                "8080:80".into(),
                "0.0.0.0:8081:80".into(),
                "127.0.0.1:8082:80".into(),
            ],
            ..ContainerSpec::minimal()
        };
        assert_eq!(
            engine_refusals(EngineKind::Docker, &single),
            Vec::<String>::new()
        );
        assert_eq!(
            engine_refusals(EngineKind::Swarm, &single),
            [
                "network none at scripts/s.yaml:15:3: the engine API cannot attach a Swarm service to `none` (engine: swarm); leave `network` out",
                "port 127.0.0.1:8082:80 at scripts/s.yaml:14:3: Swarm publishes a port on every address of the node, never on one (engine: swarm); write `host:container` and let the host's firewall decide who reaches it",
            ]
        );
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            volumes: vec!["/srv/gh/data:/data".into(), "/srv/other:/o".into()],
            ports: vec![
                "127.0.0.1:8080:80".into(),
                "8081:81".into(),
                "[::1]:8082:82".into(),
            ],
            network: Some("host".into()),
            user: Some("0:0".into()),
            memory: Some(8 << 30),
            ..ContainerSpec::minimal()
        }
    }

    fn binds() -> Vec<Bind> {
        ["/srv/gh/data", "/srv/other"]
            .iter()
            .enumerate()
            .map(|(entry, p)| Bind {
                entry,
                source: (*p).into(),
                real: (*p).into(),
                read_only: true,
                socket: false,
            })
            .collect()
    }

    #[test]
    fn private_allows_a_components_own_network_and_no_engine_network_of_that_name() {
        let rules = Rules {
            floor: Floor::default(),
            host: Some(allowing_networks(&["private"])),
            engine: EngineKind::Docker,
        };
        let judge = |network: &str, alias: Option<&str>| {
            let spec = ContainerSpec {
                network: Some(network.into()),
                network_alias: alias.map(str::to_owned),
                ..ContainerSpec::minimal()
            };
            rules
                .refusals(&Candidate {
                    spec: &spec,
                    binds: &[],
                    env_files: &[],
                    registry: None,
                    origin: &origin(),
                })
                .into_iter()
                .map(|r| r.value)
                .collect::<Vec<_>>()
        };
        assert!(judge("berth-p-s", Some("api")).is_empty());
        assert_eq!(judge("private", None), ["network private"]);
        assert_eq!(judge("host", None), ["network host"]);
    }

    #[test]
    fn each_rule_refuses_what_it_does_not_allow_naming_both_places() {
        let host = loaded(&format!(
            "{HEAD}volumes: {{ host_paths: [\"/srv/gh/**\"] }}\nenv_files: [\"/etc/berth/env/**\"]\n\
             networks: [bridge, none]\nports: {{ bind: [\"127.0.0.1\", \"::1\"] }}\n\
             images: {{ registries: [\"r.example:5000\"] }}\nusers: {{ root: false }}\nlimits: {{ memory: 4g, cpus: 2.0 }}\n"
        ));
        let rules = Rules {
            floor: Floor::default(),
            host: Some(host),
            engine: EngineKind::Docker,
        };
        let (spec, binds, origin) = (spec(), binds(), origin());
        let env = [EnvFile {
            path: "/srv/app.env".into(),
            real: "/srv/app.env".into(),
            kind: crate::container::FileKind::Regular,
        }];
        let refusals = rules.refusals(&Candidate {
            spec: &spec,
            binds: &binds,
            env_files: &env,
            registry: Some("Other.example"),
            origin: &origin,
        });
        let got: Vec<(&str, &str, String)> = refusals
            .iter()
            .map(|r| (r.rule.as_str(), r.value.as_str(), r.value_at.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "volumes.host_paths",
                    "volume /srv/other:/o",
                    "scripts/s.yaml:11:3".into()
                ),
                (
                    "env_files",
                    "env file /srv/app.env",
                    "scripts/s.yaml:20:3".into()
                ),
                ("networks", "network host", "scripts/s.yaml:15:3".into()),
                ("ports.bind", "port 8081:81", "scripts/s.yaml:13:3".into()),
                (
                    "images.registries",
                    "registry Other.example",
                    "scripts/s.yaml:5:3".into()
                ),
                ("users.root", "user 0:0", "scripts/s.yaml:16:3".into()),
                (
                    "limits.memory",
                    "memory 8589934592 bytes",
                    "scripts/s.yaml:17:3".into()
                ),
            ]
        );
        let at: Vec<String> = refusals
            .iter()
            .filter_map(|r| r.rule_at.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(at.len(), 7);
        assert!(at[0].ends_with("policy.yaml:3:24"), "{at:?}");
        assert!(
            refusals[3]
                .to_string()
                .contains("published on every host address")
        );
        let shown = refusals[5].to_string();
        assert!(
            shown.starts_with("user 0:0 at scripts/s.yaml:16:3: root, and users.root is false (policy rule users.root at ")
                && shown.ends_with("policy.yaml:8:16)"),
            "{shown}"
        );
    }

    #[test]
    fn absent_rules_do_not_restrict_and_local_images_have_no_registry() {
        let rules = policy_rules("images: { registries: [r.example] }\n");
        let (spec, binds, origin) = (spec(), binds(), origin());
        let c = Candidate {
            spec: &spec,
            binds: &binds,
            env_files: &[],
            registry: None,
            origin: &origin,
        };
        assert_eq!(rules.refusals(&c), vec![]);
        assert_eq!(Rules::default().refusals(&c), vec![]);
    }

    #[test]
    fn no_user_is_root_and_ceilings_fill_missing_limits() {
        let rules = policy_rules("users: { root: false }\nlimits: { memory: 512m, cpus: 0.5 }\n");
        let mut spec = ContainerSpec::minimal();
        rules.apply_ceilings(&mut spec);
        assert_eq!(
            (spec.memory, spec.nano_cpus),
            (Some(512 << 20), Some(500_000_000))
        );
        let origin = Origin {
            user: None,
            ..origin()
        };
        let c = Candidate {
            spec: &spec,
            binds: &[],
            env_files: &[],
            registry: None,
            origin: &origin,
        };
        let r = rules.refusals(&c);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (r[0].value.as_str(), r[0].value_at.to_string().as_str()),
            ("no user", "scripts/s.yaml:3:3")
        );
        let as_user = |user: &str| {
            let spec = ContainerSpec {
                user: Some(user.into()),
                ..spec.clone()
            };
            rules.refusals(&Candidate { spec: &spec, ..c }).len()
        };
        for fine in ["1000", "1000:0", "app", "rootless"] {
            assert_eq!(as_user(fine), 0, "{fine}");
        }
        for root in ["root:root", "0", "00", "+0", "0000:1000"] {
            assert_eq!(as_user(root), 1, "{root}");
        }
    }

    #[test]
    fn a_cpu_limit_the_engine_would_read_as_none_is_above_any_ceiling() {
        let rules = policy_rules("limits: { cpus: 1.0 }\n");
        let spec = ContainerSpec {
            nano_cpus: Some(0),
            ..ContainerSpec::minimal()
        };
        let origin = origin();
        let c = Candidate {
            spec: &spec,
            binds: &[],
            env_files: &[],
            registry: None,
            origin: &origin,
        };
        assert_eq!(rules.refusals(&c)[0].rule, "limits.cpus");
        assert!(errors(&format!("{HEAD}limits: {{ cpus: 0.001 }}\n"))[0].contains("at least 0.01"));
    }

    #[test]
    fn patterns_match_whole_components_of_the_resolved_path() {
        let rule = |p: &str| glob::Pattern::new(p).unwrap();
        assert!(rule("/srv/gh/**").matches_with("/srv/gh/a/b", MATCH));
        assert!(rule("/srv/gh/*").matches_with("/srv/gh/a", MATCH));
        assert!(!rule("/srv/gh/*").matches_with("/srv/gh/a/b", MATCH));
        assert!(!rule("/srv/gh/**").matches_with("/srv/ghost/a", MATCH));
        assert!(!rule("/srv/gh/**").matches_with("/etc/passwd", MATCH));
    }
}
