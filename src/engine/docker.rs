//! The host's Docker engine through bollard, negotiating the API version (engines as old as
//! API 1.41 answer).

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
    ListVolumesOptions, RemoveContainerOptions, RemoveImageOptions, RenameContainerOptions,
    StopContainerOptions,
};
use std::collections::{BTreeSet, HashMap};

use super::{
    Engine, EngineError, Found, FoundVolume, FreeSpace, ImageRemoval, PullAbandoned, PullLimits,
};
use crate::container::{
    EngineKind, Network, NewContainer, ObservedContainer, Volume, in_namespace, label, namespace,
    parse_port,
};
use crate::image::Credentials;

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
    pulls: PullLimits,
    /// A swarm manager: containers are services ([`super::swarm`]).
    swarm: bool,
}

impl DockerEngine {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version.
    pub async fn connect() -> Result<Self, EngineError> {
        Self::connect_as(EngineKind::Docker).await
    }

    /// Connects to drive one engine's containers, or a swarm's services.
    pub async fn connect_as(kind: EngineKind) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| EngineError::Connect(Box::new(e)))?
            .negotiate_version()
            .await
            .map_err(|e| EngineError::Connect(Box::new(e)))?;
        Ok(DockerEngine {
            docker,
            pulls: PullLimits::from_env(),
            swarm: kind == EngineKind::Swarm,
        })
    }
}

/// The engine's refusal of a request, or the loss of the engine itself: only an answer
/// from the engine is the engine saying no; anything else means it is gone.
pub(super) fn engine(
    what: impl Into<String>,
) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let what = what.into();
    move |source| match source {
        bollard::errors::Error::DockerResponseServerError { .. } => EngineError::Engine {
            what,
            source: Box::new(source),
        },
        _ => EngineError::Unreachable {
            what,
            source: Box::new(source),
        },
    }
}

pub(super) fn is_not_found(e: &bollard::errors::Error) -> bool {
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

/// The engine's container settings for a new managed container.
pub fn create_body(new: &NewContainer<'_>) -> ContainerCreateBody {
    let s = new.spec;
    let labels: HashMap<String, String> = new
        .labels()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    // Mounts, not binds: a missing source then fails the create instead of the engine
    // making an empty directory in its place.
    let mounts: Vec<Mount> = new
        .secret_mounts()
        .into_iter()
        .map(|(source, target)| Mount {
            typ: Some(MountType::BIND),
            source: Some(source),
            target: Some(target),
            read_only: Some(true),
            ..Default::default()
        })
        .collect();
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in s.ports.iter().filter_map(|p| parse_port(p).ok()) {
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
    // On the script's network the component answers to its name.
    let networking_config = match (&s.network, &s.network_alias) {
        (Some(net), Some(alias)) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: Some(vec![alias.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        _ => None,
    };
    let healthcheck = s.healthcheck.as_deref().map(health_config);
    let restart = if s.job {
        RestartPolicyNameEnum::NO
    } else {
        RestartPolicyNameEnum::UNLESS_STOPPED
    };
    ContainerCreateBody {
        image: Some(new.image.to_owned()),
        healthcheck,
        networking_config,
        cmd: s.command.clone(),
        env: Some(s.engine_env()),
        user: s.user.clone(),
        labels: Some(labels),
        stop_timeout: Some(s.stop_timeout_secs as i64),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            init: Some(s.init),
            binds: (!s.volumes.is_empty()).then(|| s.volumes.clone()),
            mounts: (!mounts.is_empty()).then_some(mounts),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: s.network.clone(),
            memory: s.memory,
            nano_cpus: s.nano_cpus,
            readonly_rootfs: Some(s.read_only),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The label Swarm puts on a task's container.
const SWARM_TASK: &str = "com.docker.swarm.service.id";

/// How often the engine runs a `health.exec` check, and how long one check may take.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
const HEALTH_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A `health.exec` check as the engine runs it, for a container or a service's tasks:
/// checked often, so a healthy component is seen healthy within a second; failures only
/// make the engine say `unhealthy`, and berth waits out the health timeout.
pub(super) fn health_config(cmd: &[String]) -> HealthConfig {
    HealthConfig {
        test: Some(
            std::iter::once("CMD".to_owned())
                .chain(cmd.iter().cloned())
                .collect(),
        ),
        interval: Some(HEALTH_INTERVAL.as_nanos() as i64),
        timeout: Some(HEALTH_CHECK_TIMEOUT.as_nanos() as i64),
        retries: Some(3),
        ..Default::default()
    }
}

/// The label filter that finds what berth manages, of one partner or all.
fn managed_filter(partner: Option<&str>) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), managed_labels(partner))])
}

/// The label filters of berth's objects, of one partner or all, in this namespace. The
/// engine cannot filter on a label's absence, so objects of a namespace are also seen
/// outside any: every list checks [`in_namespace`] again on what the engine returns.
pub(super) fn managed_labels(partner: Option<&str>) -> Vec<String> {
    let mut labels = vec![format!("{}=true", label::MANAGED)];
    labels.extend(partner.map(|p| format!("{}={p}", label::PARTNER)));
    labels.extend(namespace().map(|ns| format!("{}={ns}", label::NAMESPACE)));
    labels
}

/// Whether an object's labels are exactly the ones berth gave it, in this namespace, so
/// berth uses only what it created.
pub(super) fn labelled(found: &HashMap<String, String>, wanted: &[(&'static str, String)]) -> bool {
    in_namespace(found)
        && wanted
            .iter()
            .all(|(k, v)| found.get(*k).is_some_and(|f| f == v))
}

fn refused(what: String, why: String) -> EngineError {
    EngineError::Engine {
        what,
        source: why.into(),
    }
}

impl DockerEngine {
    /// A stream that yields whenever one of the partner's managed containers stops, dies
    /// or disappears: drift the agent reconciles without waiting for its interval.
    pub fn container_events(
        &self,
        partner: &str,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, EngineError>> + Send + 'static
    {
        use futures_util::StreamExt;
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), managed_labels(Some(partner))),
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
            .filter(|e| {
                // Outside any namespace the engine also sends those of every namespace.
                let theirs = e.as_ref().is_ok_and(|m| {
                    let attributes = m.actor.as_ref().and_then(|a| a.attributes.as_ref());
                    !attributes.is_none_or(in_namespace)
                });
                std::future::ready(!theirs)
            })
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
    async fn list_managed(&self, partner: &str) -> Result<Vec<ObservedContainer>, EngineError> {
        if self.swarm {
            return super::swarm::list_managed(&self.docker, partner).await;
        }
        let filters = managed_filter(Some(partner));
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
                // A swarm's task containers carry berth's labels too: they are the
                // services', never one engine's to replace or remove.
                if labels.get(label::MANAGED).map(String::as_str) != Some("true")
                    || labels.get(label::PARTNER).map(String::as_str) != Some(partner)
                    || !in_namespace(&labels)
                    || labels.contains_key(SWARM_TASK)
                {
                    return None;
                }
                let running = matches!(
                    c.state,
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                );
                Some(ObservedContainer::from_labels(
                    c.id?,
                    c.names?.first()?.trim_start_matches('/').to_owned(),
                    |k| labels.get(k).cloned(),
                    running,
                    None,
                ))
            })
            .collect())
    }

    async fn local_tags(&self, repository: &str) -> Result<Vec<(String, String)>, EngineError> {
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

    async fn create(&self, new: &NewContainer<'_>) -> Result<String, EngineError> {
        if self.swarm {
            return super::swarm::create(&self.docker, new).await;
        }
        let name = new.name;
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                create_body(new),
            )
            .await
            .map_err(engine(format!("create {name}")))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        if self.swarm {
            return super::swarm::start(&self.docker, id).await;
        }
        match self.docker.start_container(id, None).await {
            Err(e) if !is_not_modified(&e) => Err(engine(format!("start {}", short_id(id)))(e)),
            _ => Ok(()),
        }
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        if self.swarm {
            return super::swarm::stop(&self.docker, id).await;
        }
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

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
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

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        if self.swarm {
            return super::swarm::remove(&self.docker, id).await;
        }
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(engine(format!("remove {}", short_id(id)))(e)),
            _ => Ok(()),
        }
    }

    async fn has_image(&self, reference: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(engine(format!("inspect image {reference}"))(e)),
        }
    }

    async fn own_paths(&self) -> Result<Vec<(String, &'static str)>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(engine("describe itself"))?;
        let mut paths = vec![
            (
                "/var/run/docker.sock".to_owned(),
                "the container engine's socket: root on the host",
            ),
            (
                "/run/containerd".to_owned(),
                "containerd's socket: root on the host",
            ),
        ];
        if let Some(sock) = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        {
            paths.push((sock, "the container engine's socket: root on the host"));
        }
        if let Some(root) = info.docker_root_dir {
            paths.push((root, "the container engine's data: every container's files"));
        }
        Ok(paths)
    }

    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), EngineError> {
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
        let started = std::time::Instant::now();
        let deadline = started + self.pulls.deadline;
        let mut last_progress = started;
        loop {
            let now = std::time::Instant::now();
            let wait = (last_progress + self.pulls.stall).min(deadline);
            let item = tokio::time::timeout(wait.saturating_duration_since(now), stream.next());
            let abandoned = match item.await {
                Ok(Some(item)) => {
                    let info = item.map_err(engine(format!("pull {reference}")))?;
                    if progress.update(reference, &info) {
                        last_progress = std::time::Instant::now();
                    }
                    continue;
                }
                Ok(None) => break,
                Err(_) if std::time::Instant::now() >= deadline => {
                    PullAbandoned::Deadline(self.pulls.deadline.as_secs_f64())
                }
                Err(_) => PullAbandoned::Stalled(self.pulls.stall.as_secs_f64()),
            };
            progress.abandoned(reference);
            return Err(EngineError::Engine {
                what: format!("pull {reference}"),
                source: Box::new(abandoned),
            });
        }
        progress.finish(reference);
        Ok(())
    }

    async fn ensure_volume(&self, volume: &Volume) -> Result<(), EngineError> {
        let wanted = volume.labels();
        match self.docker.inspect_volume(&volume.name).await {
            Ok(v) if labelled(&v.labels, &wanted) => Ok(()),
            Ok(_) => Err(refused(
                format!("use volume {}", volume.name),
                "a volume of that name exists that berth did not create for this script; \
                 berth leaves it alone"
                    .into(),
            )),
            Err(e) if is_not_found(&e) => self
                .docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.name.clone()),
                    labels: Some(wanted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(engine(format!("create volume {}", volume.name))),
            Err(e) => Err(engine(format!("inspect volume {}", volume.name))(e)),
        }
    }

    async fn list_volumes(&self, partner: Option<&str>) -> Result<Vec<FoundVolume>, EngineError> {
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(managed_filter(partner)),
            }))
            .await
            .map_err(engine("list volumes"))?;
        let mut out: Vec<FoundVolume> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                let get = |k: &str| v.labels.get(k).cloned();
                (get(label::MANAGED)? == "true" && in_namespace(&v.labels)).then_some(())?;
                Some(FoundVolume {
                    partner: get(label::PARTNER)?,
                    script: get(label::SCRIPT)?,
                    volume: get(label::VOLUME)?,
                    name: v.name,
                })
            })
            .filter(|v| partner.is_none_or(|p| v.partner == p))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn ensure_network(&self, network: &Network) -> Result<(), EngineError> {
        if self.swarm {
            return super::swarm::ensure_network(&self.docker, network).await;
        }
        let wanted = network.labels();
        match self.docker.inspect_network(&network.name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| labelled(l, &wanted)) => Ok(()),
            Ok(_) => Err(refused(
                format!("use network {}", network.name),
                "a network of that name exists that berth did not create for this script; \
                 berth leaves it alone"
                    .into(),
            )),
            Err(e) if is_not_found(&e) => self
                .docker
                .create_network(NetworkCreateRequest {
                    name: network.name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(wanted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(engine(format!("create network {}", network.name))),
            Err(e) => Err(engine(format!("inspect network {}", network.name))(e)),
        }
    }

    async fn remove_network(&self, network: &Network) -> Result<(), EngineError> {
        match self.docker.inspect_network(&network.name, None).await {
            Ok(n)
                if n.labels
                    .as_ref()
                    .is_some_and(|l| labelled(l, &network.labels())) =>
            {
                match self.docker.remove_network(&network.name).await {
                    Err(e) if !is_not_found(&e) => {
                        Err(engine(format!("remove network {}", network.name))(e))
                    }
                    _ => Ok(()),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine(format!("inspect network {}", network.name))(e)),
        }
    }

    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, EngineError> {
        if self.swarm {
            return super::swarm::find(&self.docker, name_or_id).await;
        }
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(c) => {
                let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
                // Another namespace's container is not berth's here: seen as unmanaged,
                // never touched.
                let managed = labels.get(label::MANAGED).is_some_and(|v| v == "true")
                    && in_namespace(&labels);
                let state = c.state.unwrap_or_default();
                let health = state
                    .health
                    .and_then(|h| h.status)
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty() && s != "none");
                let exit_code = match state.status {
                    Some(bollard::models::ContainerStateStatusEnum::EXITED) => state.exit_code,
                    _ => None,
                };
                Ok(Some(Found {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    running: state.running.unwrap_or(false),
                    restarts: c.restart_count.unwrap_or(0),
                    health,
                    exit_code,
                    partner: labels.get(label::PARTNER).filter(|_| managed).cloned(),
                    secrets_dir: labels.get(label::SECRETS_DIR).filter(|_| managed).cloned(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine(format!("inspect {name_or_id}"))(e)),
        }
    }

    fn updates_in_place(&self) -> bool {
        self.swarm
    }

    async fn update(&self, id: &str, new: &NewContainer<'_>) -> Result<(), EngineError> {
        super::swarm::update(&self.docker, id, new).await
    }

    async fn revert(&self, id: &str, fingerprint: &str) -> Result<(), EngineError> {
        super::swarm::revert(&self.docker, id, fingerprint).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine(format!("inspect image {reference}"))(e)),
        }
    }

    async fn images_in_use(&self) -> Result<BTreeSet<String>, EngineError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(engine("list containers"))?;
        Ok(list.into_iter().filter_map(|c| c.image_id).collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<ImageRemoval, EngineError> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(items) if items.iter().any(|i| i.deleted.is_some()) => Ok(ImageRemoval::Removed),
            Ok(_) => Ok(ImageRemoval::Untagged),
            Err(e) if is_not_found(&e) => Ok(ImageRemoval::Gone),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(ImageRemoval::InUse),
            Err(e) => Err(engine(format!("remove image {reference}"))(e)),
        }
    }

    async fn free_space(&self) -> Result<FreeSpace, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(engine("describe itself"))?;
        let data_root = info.docker_root_dir.ok_or_else(|| EngineError::Engine {
            what: "name its data root".into(),
            source: "`docker info` gives no DockerRootDir".into(),
        })?;
        let stat = rustix::fs::statvfs(data_root.as_str()).map_err(|e| EngineError::Engine {
            what: format!("measure the free space of its data root {data_root} from here"),
            source: Box::new(std::io::Error::from(e)),
        })?;
        Ok(FreeSpace {
            data_root,
            free: stat.f_bavail.saturating_mul(stat.f_frsize),
        })
    }
}

/// Shows a pull's progress: a line per layer event on a terminal, a line in the log every
/// ten seconds otherwise (a slow pull must not look like a hang), and a summary at the end.
struct PullProgress {
    terminal: bool,
    /// Per layer: its last status and bytes, to tell progress from a repeated event.
    layers: std::collections::BTreeMap<String, (String, i64)>,
    started: std::time::Instant,
    logged: std::time::Instant,
}

impl PullProgress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        PullProgress {
            terminal: std::io::stderr().is_terminal(),
            layers: Default::default(),
            started: now,
            logged: now,
        }
    }

    /// Records an event; whether it shows progress (a new status or more bytes of a layer).
    fn update(&mut self, reference: &str, info: &bollard::models::CreateImageInfo) -> bool {
        let Some(id) = &info.id else {
            return false;
        };
        let status = info.status.clone().unwrap_or_default();
        let current = info
            .progress_detail
            .as_ref()
            .and_then(|d| d.current)
            .unwrap_or(0);
        let seen = (status.clone(), current);
        let moved = self.layers.get(id) != Some(&seen);
        self.layers.insert(id.clone(), seen);
        if self.terminal {
            let detail = info
                .progress_detail
                .as_ref()
                .and_then(|d| Some((d.current?, d.total?)))
                .filter(|(_, total)| *total > 0)
                .map(|(c, t)| format!(" {}%", c * 100 / t))
                .unwrap_or_default();
            eprint!("\r\x1b[2Kpulling {reference}: {id} {status}{detail}");
        } else if self.logged.elapsed() >= std::time::Duration::from_secs(10) {
            self.logged = std::time::Instant::now();
            let bytes: i64 = self.layers.values().map(|(_, b)| b).sum();
            tracing::info!(
                image = reference,
                layers = self.layers.len(),
                bytes,
                seconds = self.started.elapsed().as_secs_f64(),
                "pulling"
            );
        }
        moved
    }

    fn abandoned(&self, reference: &str) {
        if self.terminal {
            eprintln!();
        }
        tracing::warn!(
            image = reference,
            seconds = self.started.elapsed().as_secs_f64(),
            "pull abandoned"
        );
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
