//! The container engine, behind the narrow [`Engine`] trait berth owns. The Docker
//! implementation speaks to the host's engine through bollard, negotiating the API version.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
    RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use std::collections::HashMap;

use crate::manifest::syntax;
use crate::plan::{DesiredContainer, ObservedContainer};

/// Labels of design.md §3.
pub mod label {
    pub const MANAGED: &str = "berth.managed";
    pub const PARTNER: &str = "berth.partner";
    pub const SCRIPT: &str = "berth.script";
    pub const VERSION: &str = "berth.version";
    pub const DIGEST: &str = "berth.digest";
    pub const SPEC_HASH: &str = "berth.spec-hash";
    pub const REVISION: &str = "berth.revision";
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to the container engine")]
    Connect(#[source] bollard::errors::Error),
    #[error("the container engine failed to {what}")]
    Engine {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// A container found by name or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// The `berth.partner` label, when the container is managed.
    pub partner: Option<String>,
}

/// Everything berth asks of a container engine.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait Engine {
    /// The partner's managed containers: one list call, filtered by label.
    async fn list_managed(&self, partner: &str) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// Tags and image ids of a repository in the engine's own store.
    async fn local_tags(&self, repository: &str) -> Result<Vec<(String, String)>, RuntimeError>;
    /// Creates (does not start) a container; returns its id.
    async fn create(
        &self,
        name: &str,
        partner: &str,
        revision: &str,
        desired: &DesiredContainer,
    ) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops with the container's own `stop_timeout`, then kills; a container that is
    /// already stopped or gone counts as stopped.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError>;
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// `None` when no such container exists.
    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, RuntimeError>;
    /// Whether the engine's store holds an image (by id or pinned reference).
    async fn has_image(&self, reference: &str) -> Result<bool, RuntimeError>;
    /// Pulls `registry/repository@digest`, showing progress on a terminal.
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&crate::resolve::Credentials>,
    ) -> Result<(), RuntimeError>;
}

/// A managed container stopped, died or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    /// The engine's time of the event, in nanoseconds since the Unix epoch.
    pub time_nanos: Option<i64>,
}

/// The host's Docker engine.
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults()
            .map_err(RuntimeError::Connect)?
            .negotiate_version()
            .await
            .map_err(RuntimeError::Connect)?;
        Ok(DockerEngine { docker })
    }
}

fn engine(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Engine { what, source }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The engine's container settings for a desired container.
pub fn create_body(partner: &str, revision: &str, d: &DesiredContainer) -> ContainerCreateBody {
    let s = &d.spec;
    let labels = HashMap::from([
        (label::MANAGED.to_owned(), "true".to_owned()),
        (label::PARTNER.to_owned(), partner.to_owned()),
        (label::SCRIPT.to_owned(), d.script.clone()),
        (label::VERSION.to_owned(), d.version.clone()),
        (label::DIGEST.to_owned(), d.digest.clone()),
        (label::SPEC_HASH.to_owned(), d.spec_hash.clone()),
        (label::REVISION.to_owned(), revision.to_owned()),
    ]);
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in s.ports.iter().filter_map(|p| syntax::parse_port(p).ok()) {
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.push(key.clone());
        if let Some(host_port) = p.host_port {
            bindings
                .entry(key)
                .or_default()
                .get_or_insert_default()
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }
    ContainerCreateBody {
        image: Some(d.image.clone()),
        cmd: s.command.clone(),
        env: Some(s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: s.user.clone(),
        labels: Some(labels),
        stop_timeout: Some(s.stop_timeout_secs as i64),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            init: Some(s.init),
            binds: (!s.volumes.is_empty()).then(|| s.volumes.clone()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: s.network.clone(),
            memory: s.memory,
            nano_cpus: s.nano_cpus,
            readonly_rootfs: Some(s.read_only),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl DockerEngine {
    /// A stream that yields whenever one of the partner's managed containers stops, dies
    /// or disappears: drift the agent reconciles without waiting for its interval.
    pub fn container_events(
        &self,
        partner: &str,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, RuntimeError>> + Send + 'static
    {
        use futures_util::StreamExt;
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![
                    format!("{}=true", label::MANAGED),
                    format!("{}={partner}", label::PARTNER),
                ],
            ),
            (
                "event".to_owned(),
                vec!["die".to_owned(), "stop".to_owned(), "destroy".to_owned()],
            ),
        ]);
        self.docker
            .events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .map(|e| {
                e.map(|m| ContainerEvent {
                    id: m.actor.and_then(|a| a.id).unwrap_or_default(),
                    time_nanos: m.time_nano,
                })
                .map_err(engine("watch container events"))
            })
    }
}

impl Engine for DockerEngine {
    async fn list_managed(&self, partner: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=true", label::MANAGED),
                format!("{}={partner}", label::PARTNER),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(engine("list containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // The engine filtered already; checking again keeps berth's promise even
                // if a filter were ever ignored.
                if labels.get(label::MANAGED).map(String::as_str) != Some("true")
                    || labels.get(label::PARTNER).map(String::as_str) != Some(partner)
                {
                    return None;
                }
                let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
                Some(ObservedContainer {
                    id: c.id?,
                    name: c.names?.first()?.trim_start_matches('/').to_owned(),
                    script: get(label::SCRIPT),
                    version: get(label::VERSION),
                    digest: get(label::DIGEST),
                    spec_hash: get(label::SPEC_HASH),
                    revision: get(label::REVISION),
                    running: matches!(
                        c.state,
                        Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                    ),
                })
            })
            .collect())
    }

    async fn local_tags(&self, repository: &str) -> Result<Vec<(String, String)>, RuntimeError> {
        let filters = HashMap::from([("reference".to_owned(), vec![format!("{repository}:*")])]);
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(engine(format!("list images of {repository}")))?;
        let prefix = format!("{repository}:");
        Ok(images
            .into_iter()
            .flat_map(|i| {
                let id = i.id.clone();
                i.repo_tags
                    .into_iter()
                    .filter_map(|t| t.strip_prefix(&prefix).map(str::to_owned))
                    .map(move |tag| (tag, id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    async fn create(
        &self,
        name: &str,
        partner: &str,
        revision: &str,
        desired: &DesiredContainer,
    ) -> Result<String, RuntimeError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                create_body(partner, revision, desired),
            )
            .await
            .map_err(engine(format!("create {name}")))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Err(e) if !is_not_modified(&e) => Err(engine(format!("start {}", short_id(id)))(e)),
            _ => Ok(()),
        }
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .stop_container(id, None::<StopContainerOptions>)
            .await
        {
            Err(e) if !is_not_modified(&e) && !is_not_found(&e) => {
                Err(engine(format!("stop {}", short_id(id)))(e))
            }
            _ => Ok(()),
        }
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.docker
            .rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_owned(),
                },
            )
            .await
            .map_err(engine(format!("rename {} to {name}", short_id(id))))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(engine(format!("remove {}", short_id(id)))(e)),
            _ => Ok(()),
        }
    }

    async fn has_image(&self, reference: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(engine(format!("inspect image {reference}"))(e)),
        }
    }

    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&crate::resolve::Credentials>,
    ) -> Result<(), RuntimeError> {
        use futures_util::StreamExt;
        let (from_image, tag) = match reference.split_once('@') {
            Some((name, digest)) => (name, digest),
            None => (reference, "latest"),
        };
        let options = CreateImageOptions {
            from_image: Some(from_image.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let auth = credentials.map(|c| match c.identity_token() {
            Some(token) => DockerCredentials {
                identitytoken: Some(token.to_owned()),
                serveraddress: Some(c.server.clone()),
                ..Default::default()
            },
            None => DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.clone()),
                serveraddress: Some(c.server.clone()),
                ..Default::default()
            },
        });
        let mut progress = PullProgress::new();
        let mut stream = self.docker.create_image(Some(options), None, auth);
        while let Some(item) = stream.next().await {
            let info = item.map_err(engine(format!("pull {reference}")))?;
            progress.update(reference, &info);
        }
        progress.finish(reference);
        Ok(())
    }

    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, RuntimeError> {
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(c) => {
                let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
                let managed = labels.get(label::MANAGED).is_some_and(|v| v == "true");
                Ok(Some(Found {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    running: c.state.and_then(|s| s.running).unwrap_or(false),
                    partner: labels.get(label::PARTNER).filter(|_| managed).cloned(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine(format!("inspect {name_or_id}"))(e)),
        }
    }
}

/// Shows a pull's progress: a line per layer event on a terminal, a summary in the log.
struct PullProgress {
    terminal: bool,
    layers: std::collections::BTreeSet<String>,
    started: std::time::Instant,
}

impl PullProgress {
    fn new() -> Self {
        use std::io::IsTerminal;
        PullProgress {
            terminal: std::io::stderr().is_terminal(),
            layers: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    fn update(&mut self, reference: &str, info: &bollard::models::CreateImageInfo) {
        if let Some(id) = &info.id {
            self.layers.insert(id.clone());
        }
        if self.terminal
            && let (Some(id), Some(status)) = (&info.id, &info.status)
        {
            let detail = info
                .progress_detail
                .as_ref()
                .and_then(|d| Some((d.current?, d.total?)))
                .filter(|(_, total)| *total > 0)
                .map(|(c, t)| format!(" {}%", c * 100 / t))
                .unwrap_or_default();
            eprint!("\r\x1b[2Kpulling {reference}: {id} {status}{detail}");
        }
    }

    fn finish(&self, reference: &str) {
        if self.terminal {
            eprintln!();
        }
        tracing::info!(
            image = reference,
            layers = self.layers.len(),
            seconds = self.started.elapsed().as_secs_f64(),
            "pulled"
        );
    }
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}
