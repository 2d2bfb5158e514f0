//! The v1 manifest documents (docs/manifests.md). Unknown fields are
//! rejected by serde; everything a later check may complain about is kept with its position.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::span::Sp;

/// The `apiVersion` every document must carry.
pub const API_VERSION: &str = "berth/v1";

/// `fleet.yaml`: defaults that partners and scripts inherit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "berth Fleet", description = "fleet.yaml: fleet-wide defaults")]
pub struct Fleet {
    #[serde(rename = "apiVersion")]
    #[schemars(schema_with = "schema::api_version")]
    pub api_version: Sp<String>,
    #[schemars(schema_with = "schema::kind_fleet")]
    pub kind: Sp<String>,
    /// Default registry host for `oci` and `ecr` scripts that name none.
    #[serde(default)]
    pub registry: Option<Sp<String>>,
    /// Default IANA time zone for partners that name none.
    #[serde(default)]
    pub timezone: Option<Sp<String>>,
    /// Default update windows for partners that declare none.
    #[serde(default)]
    pub windows: Option<Vec<Window>>,
}

/// `partners/<name>.yaml`: one organisation's host, its windows, idle gate and opt-ins.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "berth Partner",
    description = "partners/<name>.yaml: one partner host"
)]
pub struct Partner {
    #[serde(rename = "apiVersion")]
    #[schemars(schema_with = "schema::api_version")]
    pub api_version: Sp<String>,
    #[schemars(schema_with = "schema::kind_partner")]
    pub kind: Sp<String>,
    #[schemars(schema_with = "schema::name")]
    pub name: Sp<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// IANA zone the windows are read in; defaults to the fleet's, then UTC.
    #[serde(default)]
    pub timezone: Option<Sp<String>>,
    /// When updates may run; none at all means never automatically.
    #[serde(default)]
    pub windows: Option<Vec<Window>>,
    /// Inclusive date ranges when nothing may change.
    #[serde(default)]
    pub blackouts: Vec<Blackout>,
    /// Gate that must report idle before a running container is stopped.
    #[serde(default)]
    pub idle: Option<Idle>,
    /// The scripts this partner runs.
    #[serde(default)]
    pub scripts: Vec<OptIn>,
    /// The partner host's SSH public key (an OpenSSH `authorized_keys` line): `berth fleet`
    /// trusts a status record only when the commit that wrote it was signed with this key.
    #[serde(default)]
    pub report_key: Option<Sp<String>>,
}

/// A weekly window in the partner's zone.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Weekdays the window starts on: mon..sun.
    #[schemars(schema_with = "schema::weekdays")]
    pub days: Sp<Vec<Sp<String>>>,
    /// `HH:MM` local start.
    #[schemars(schema_with = "schema::clock")]
    pub start: Sp<String>,
    /// `HH:MM` local end; before `start` crosses midnight; `24:00` is the end of the day.
    #[schemars(schema_with = "schema::clock")]
    pub end: Sp<String>,
}

/// Inclusive dates (in the partner's zone) when no step may run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Blackout {
    #[schemars(schema_with = "schema::date")]
    pub from: Sp<String>,
    #[schemars(schema_with = "schema::date")]
    pub to: Sp<String>,
}

/// The partner service's own word on whether it may be interrupted.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Idle {
    /// `http` or `https` URL answering JSON.
    pub url: Sp<String>,
    /// RFC 6901 JSON pointer into the answer.
    pub pointer: Sp<String>,
    /// The text the pointed-at value must equal (numbers and booleans compare as written).
    pub equals: Sp<String>,
    /// How long to wait for the answer, e.g. `2s`.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<Sp<String>>,
}

/// One script a partner opts into.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptIn {
    #[schemars(schema_with = "schema::name")]
    pub script: Sp<String>,
    /// Semver requirement that narrows the script's own range.
    #[serde(default)]
    pub versions: Option<Sp<String>>,
    /// A per-partner build of the script, in the same registry.
    #[serde(default)]
    pub repository: Option<Sp<String>>,
    /// Extra environment; secret-looking keys are refused here.
    #[serde(default)]
    pub env: BTreeMap<String, Sp<String>>,
    /// Absolute paths of env files on the host, for secrets.
    #[serde(default)]
    pub env_files: Vec<Sp<String>>,
    /// Sealed env files in the repo (`secrets/<partner>/<name>.age`), `KEY=value` lines set
    /// over every other env. Env values show in `docker inspect`: prefer `secret_files`.
    #[serde(default)]
    #[schemars(schema_with = "schema::secret_names")]
    pub env_secrets: Vec<Sp<String>>,
    /// Sealed files in the repo, mounted read-only into the container from tmpfs.
    #[serde(default)]
    pub secret_files: Vec<SecretFile>,
}

/// One of the partner's secrets, mounted as a file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    /// `<name>`: the repo's `secrets/<partner>/<name>.age`.
    #[schemars(schema_with = "schema::secret_name")]
    pub secret: Sp<String>,
    /// The absolute path in the container.
    #[schemars(schema_with = "schema::container_path")]
    pub target: Sp<String>,
}

/// `scripts/<name>.yaml`: an analysis script published as semver-tagged images.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "berth Script",
    description = "scripts/<name>.yaml: one analysis script"
)]
pub struct Script {
    #[serde(rename = "apiVersion")]
    #[schemars(schema_with = "schema::api_version")]
    pub api_version: Sp<String>,
    #[schemars(schema_with = "schema::kind_script")]
    pub kind: Sp<String>,
    #[schemars(schema_with = "schema::name")]
    pub name: Sp<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub pathogens: Vec<String>,
    pub image: Image,
    /// Semver requirement over the repository's tags; defaults to any release.
    #[serde(default)]
    pub versions: Option<Sp<String>>,
    /// Whether pre-release tags may be chosen.
    #[serde(default)]
    pub prerelease: bool,
    /// On `engine: swarm`: how many tasks run the single container (refused on one engine).
    #[serde(default)]
    pub replicas: Option<Sp<u32>>,
    /// On `engine: swarm`: Swarm placement constraints, e.g. `node.labels.gpu == true`.
    #[serde(default)]
    pub placement: Option<Sp<Vec<String>>>,
    /// A single-container script: how its one container runs.
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub health: Option<Health>,
    /// Named volumes its components mount, created as `berth-<partner>-<script>-<volume>`
    /// and never deleted by berth.
    #[serde(default)]
    pub volumes: BTreeMap<String, Sp<VolumeDecl>>,
    /// A multi-component script (instead of `container:`): component name -> component.
    #[serde(default)]
    pub components: Option<Sp<BTreeMap<String, Sp<Component>>>>,
    /// Services elsewhere in the federation a new version waits for (seed 000: the central
    /// service is deployed before the partner images that need it).
    #[serde(default)]
    pub requires: Vec<Requirement>,
}

/// A service whose version a new version of a script needs: it is applied only once `url`
/// answers JSON whose `pointer` holds a semver in `versions`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// `http` or `https` URL answering JSON.
    pub url: Sp<String>,
    /// RFC 6901 JSON pointer to the service's version in the answer, e.g. `/version`.
    pub pointer: Sp<String>,
    /// Semver requirement the service's version must meet, e.g. `>=2.0.0`.
    pub versions: Sp<String>,
    /// How long to wait for the answer, e.g. `5s` (the default).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<Sp<String>>,
}

/// A named volume a multi-component script declares. No settings yet: the map entry is the
/// declaration.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDecl {}

/// One container of a multi-component script.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Its own image; without one it runs the script's, at the script's version.
    #[serde(default)]
    pub image: Option<Image>,
    /// Semver requirement over its own image's tags.
    #[serde(default)]
    pub versions: Option<Sp<String>>,
    #[serde(default)]
    pub prerelease: bool,
    /// On `engine: swarm`: how many tasks run it (stateless components only).
    #[serde(default)]
    pub replicas: Option<Sp<u32>>,
    /// On `engine: swarm`: Swarm placement constraints (stateless components only).
    #[serde(default)]
    pub placement: Option<Sp<Vec<String>>>,
    /// Holds data: replaced stop-first, so two processes never share its volumes.
    #[serde(default)]
    pub stateful: bool,
    /// A one-shot that runs to completion from the new version before its dependents.
    #[serde(default)]
    pub job: bool,
    /// How long a job may run, e.g. `10m` (the default).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<Sp<String>>,
    #[serde(default)]
    pub container: Container,
    #[serde(default)]
    pub health: Option<Health>,
    /// Components that must be `started`, `healthy` or (jobs) `completed` first.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Sp<Condition>>,
}

/// What a dependency must have reached before its dependent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

pub use crate::image::Source;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub source: Sp<Source>,
    /// `host[:port]`; for ECR `<account>.dkr.ecr.<region>.amazonaws.com`; omitted for `local`.
    #[serde(default)]
    pub registry: Option<Sp<String>>,
    pub repository: Sp<String>,
    /// Allow plain HTTP to a registry that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
}

/// How the container runs. Privileged mode, host PID/IPC and added capabilities are
/// parsed only so that they can be refused with a clear message.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Container {
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, Sp<String>>,
    /// `[ip:]host:container[/proto]` or `container[/proto]`.
    #[serde(default)]
    pub ports: Vec<Sp<String>>,
    /// `/host/path:/container/path[:ro|rw]` or `volume:/container/path[:ro|rw]`.
    #[serde(default)]
    pub volumes: Vec<Sp<String>>,
    /// `host`, `none`, `bridge` or a network name.
    #[serde(default)]
    pub network: Option<Sp<String>>,
    /// Run an init as PID 1 so SIGTERM reaches the service; default true.
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub stop_timeout: Option<Sp<String>>,
    /// Bytes with an optional `k`, `m` or `g` suffix.
    #[serde(default)]
    pub memory: Option<Sp<String>>,
    #[serde(default)]
    pub cpus: Option<Sp<f64>>,
    #[serde(default)]
    pub read_only: bool,
    /// `uid[:gid]` or `name[:group]`.
    #[serde(default)]
    pub user: Option<Sp<String>>,
    #[serde(default)]
    #[schemars(skip)]
    pub privileged: Option<Sp<bool>>,
    #[serde(default)]
    #[schemars(skip)]
    pub pid: Option<Sp<String>>,
    #[serde(default)]
    #[schemars(skip)]
    pub ipc: Option<Sp<String>>,
    #[serde(default)]
    #[schemars(skip)]
    pub cap_add: Option<Sp<Vec<String>>>,
}

/// How berth decides a new container works before it removes the old one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// URL that must answer 2xx.
    #[serde(default)]
    pub http: Option<Sp<String>>,
    /// A command run inside the container as its engine healthcheck; exit 0 is healthy.
    #[serde(default)]
    pub exec: Option<Sp<Vec<String>>>,
    /// How long the new container has to pass, e.g. `60s`.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<Sp<String>>,
}

/// String formats the checks enforce, so editors flag mistakes before `berth validate` does.
mod schema {
    use schemars::{Schema, SchemaGenerator, json_schema};

    pub fn api_version(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": super::API_VERSION })
    }
    pub fn kind_fleet(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": "Fleet" })
    }
    pub fn kind_partner(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": "Partner" })
    }
    pub fn kind_script(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "const": "Script" })
    }
    pub fn name(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" })
    }
    pub fn weekdays(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "minItems": 1,
            "items": { "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] }
        })
    }
    pub fn clock(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$" })
    }
    pub fn date(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date" })
    }
    pub fn secret_name(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^(?!.*\\.\\.)[A-Za-z0-9_-][A-Za-z0-9._-]*$" })
    }
    pub fn secret_names(g: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "array", "items": secret_name(g) })
    }
    pub fn container_path(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^/.*[^/]" })
    }
    pub fn duration(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$" })
    }
}
