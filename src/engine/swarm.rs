//! A Swarm manager through bollard's services API, for `engine: swarm`: each managed
//! container is a replicated service of the same name, with berth's labels on the service
//! (and on its tasks' containers), and a script's network an attachable overlay network.
//! [`super::DockerEngine`] dispatches here when it drives a swarm; images, volumes, pulls and
//! the disk stay the manager's own engine's.
//!
//! A service is updated in place rather than replaced under a temporary name (Swarm cannot
//! rename a service): start-first, or stop-first when two tasks could not coexist (a
//! stateful service's volume, a port published in host mode, the host network). berth's own
//! health gate judges the update from the tasks; Swarm only pauses a failed update, and
//! berth rolls the script back by updating each service to its previous spec.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountType, NetworkAttachmentConfig,
    NetworkCreateRequest, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};

use super::docker::{engine, health_config, is_not_found, labelled};
use super::{EngineError, Found};
use crate::container::{
    Network, NewContainer, ObservedContainer, Tasks, fingerprint, in_namespace, label, parse_port,
};

/// The replicas a service runs when berth has not stopped it: stopping scales it to 0,
/// starting scales it back to this.
const REPLICAS: &str = "berth.replicas";

fn managed_filter(partner: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        super::docker::managed_labels(Some(partner)),
    )])
}

/// The node berth runs on (the manager): where a stateful service is pinned, since its
/// named volume is created on this node's engine.
async fn own_node(docker: &Docker) -> Result<String, EngineError> {
    let info = docker.info().await.map_err(engine("ask the engine"))?;
    info.swarm
        .and_then(|s| s.node_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| EngineError::Engine {
            what: "find this node in the swarm".into(),
            source: "the engine is not a swarm manager (engine: swarm needs `docker swarm init`)"
                .into(),
        })
}

/// The service berth asks for: the container spec as a task template, one task per
/// replica, start-first unless two tasks cannot coexist.
pub(super) async fn service_spec(
    docker: &Docker,
    new: &NewContainer<'_>,
) -> Result<ServiceSpec, EngineError> {
    let s = new.spec;
    let labels: HashMap<String, String> = new
        .labels()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let replicas = s.replicas.unwrap_or(1);
    let mut service_labels = labels.clone();
    service_labels.insert(REPLICAS.to_owned(), replicas.to_string());
    let mut constraints = s.placement.clone();
    if s.stateful {
        constraints.push(format!("node.id=={}", own_node(docker).await?));
    }
    let mut mounts: Vec<Mount> = s.volumes.iter().filter_map(|v| volume_mount(v)).collect();
    mounts.extend(
        new.secret_mounts()
            .into_iter()
            .map(|(source, target)| Mount {
                typ: Some(MountType::BIND),
                source: Some(source),
                target: Some(target),
                read_only: Some(true),
                ..Default::default()
            }),
    );
    let ports: Vec<EndpointPortConfig> = s
        .ports
        .iter()
        .filter_map(|p| parse_port(p).ok())
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.protocol == "udp" {
                EndpointPortConfigProtocolEnum::UDP
            } else {
                EndpointPortConfigProtocolEnum::TCP
            }),
            target_port: Some(i64::from(p.container_port)),
            published_port: p.host_port.map(i64::from),
            // The routing mesh (ingress) needs the engine's iptables rules; host mode
            // publishes on the node that runs the task, as one engine does.
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        })
        .collect();
    let host_network = s.network.as_deref() == Some("host");
    let networks = s.network.as_ref().map(|n| {
        vec![NetworkAttachmentConfig {
            target: Some(n.clone()),
            aliases: s.network_alias.clone().map(|a| vec![a]),
            ..Default::default()
        }]
    });
    let stop_first = s.stateful || host_network || !ports.is_empty();
    Ok(ServiceSpec {
        name: Some(new.name.to_owned()),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(new.image.to_owned()),
                labels: Some(labels),
                // Swarm's `command` replaces the entrypoint; berth's `command` is the
                // image's CMD, as on one engine.
                args: s.command.clone(),
                env: Some(s.engine_env()),
                user: s.user.clone(),
                read_only: Some(s.read_only),
                init: Some(s.init),
                stop_grace_period: Some(s.stop_timeout_secs as i64 * 1_000_000_000),
                mounts: (!mounts.is_empty()).then_some(mounts),
                health_check: s.healthcheck.as_deref().map(health_config),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: s.nano_cpus,
                    memory_bytes: s.memory,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                ..Default::default()
            }),
            placement: (!constraints.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(constraints),
                ..Default::default()
            }),
            networks,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(replicas)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            // berth judges the update and rolls back itself: Swarm only stops.
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            order: Some(if stop_first {
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
            } else {
                ServiceSpecUpdateConfigOrderEnum::START_FIRST
            }),
            ..Default::default()
        }),
        // berth's rollback is an update back to the previous spec, in the same order.
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            order: Some(if stop_first {
                ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
            } else {
                ServiceSpecRollbackConfigOrderEnum::START_FIRST
            }),
            ..Default::default()
        }),
        // A virtual IP needs IPVS in the node's kernel; with DNS round robin a component's
        // name resolves to its tasks' addresses on the overlay network, and host-mode
        // ports publish as before.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: (!ports.is_empty()).then_some(ports),
        }),
        ..Default::default()
    })
}

/// `source:target[:ro|rw]` as a Swarm mount: a path is a bind mount, a name a volume.
fn volume_mount(entry: &str) -> Option<Mount> {
    let mut parts = entry.split(':');
    let source = parts.next()?;
    let target = parts.next()?;
    let read_only = parts.next() == Some("ro");
    Some(Mount {
        typ: Some(if source.starts_with('/') {
            MountType::BIND
        } else {
            MountType::VOLUME
        }),
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
        read_only: Some(read_only),
        ..Default::default()
    })
}

fn spec_labels(service: &Service) -> HashMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
}

fn replicas_of(spec: Option<&ServiceSpec>) -> Option<i64> {
    spec?.mode.as_ref()?.replicated.as_ref()?.replicas
}

fn task_fingerprint(task: &Task) -> Option<String> {
    let labels = task
        .spec
        .as_ref()?
        .container_spec
        .as_ref()?
        .labels
        .as_ref()?;
    Some(fingerprint(labels))
}

fn is_state(task: &Task, state: TaskState) -> bool {
    task.status.as_ref().and_then(|s| s.state) == Some(state)
}

fn desired_running(task: &Task) -> bool {
    task.desired_state == Some(TaskState::RUNNING)
}

/// Whether the service asks for the replicas berth gave it: 0 (stopped) or a count
/// changed by hand is drift, which a `start` puts back.
fn at_berths_scale(service: &Service, labels: &HashMap<String, String>) -> bool {
    let wanted = labels.get(REPLICAS).and_then(|r| r.parse::<i64>().ok());
    wanted.is_some() && replicas_of(service.spec.as_ref()) == wanted
}

pub(super) async fn list_managed(
    docker: &Docker,
    partner: &str,
) -> Result<Vec<ObservedContainer>, EngineError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(managed_filter(partner)),
            ..Default::default()
        }))
        .await
        .map_err(engine("list services"))?;
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([(
                "desired-state".to_owned(),
                vec!["running".to_owned()],
            )])),
        }))
        .await
        .map_err(engine("list tasks"))?;
    let nodes: HashMap<String, String> = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(engine("list nodes"))?
        .into_iter()
        .filter_map(|n| {
            let id = n.id?;
            let name = n.description.and_then(|d| d.hostname).unwrap_or(id.clone());
            Some((id, name))
        })
        .collect();
    Ok(services
        .into_iter()
        .filter_map(|service| {
            let labels = spec_labels(&service);
            if labels.get(label::MANAGED).map(String::as_str) != Some("true")
                || labels.get(label::PARTNER).map(String::as_str) != Some(partner)
                || !in_namespace(&labels)
            {
                return None;
            }
            let id = service.id.clone()?;
            let name = service.spec.as_ref()?.name.clone()?;
            let running: Vec<&Task> = tasks
                .iter()
                .filter(|t| t.service_id.as_deref() == Some(id.as_str()))
                .filter(|t| is_state(t, TaskState::RUNNING))
                .collect();
            let node_names: BTreeSet<String> = running
                .iter()
                .filter_map(|t| t.node_id.as_ref())
                .map(|n| nodes.get(n).cloned().unwrap_or_else(|| n.clone()))
                .collect();
            let tasks = Tasks {
                running: running.len() as u32,
                desired: replicas_of(service.spec.as_ref()).unwrap_or(0) as u32,
                nodes: node_names.into_iter().collect(),
            };
            // A service at berth's scale is up whether or not its tasks run now (a node
            // down, Swarm rescheduling): the planner reports it degraded from `tasks` and
            // leaves it to Swarm.
            Some(ObservedContainer::from_labels(
                id,
                name,
                |k| labels.get(k).cloned(),
                at_berths_scale(&service, &labels),
                Some(tasks),
            ))
        })
        .collect())
}

pub(super) async fn create(docker: &Docker, new: &NewContainer<'_>) -> Result<String, EngineError> {
    let spec = service_spec(docker, new).await?;
    docker
        .create_service(spec, None)
        .await
        .map_err(engine(format!("create service {}", new.name)))?
        .id
        .ok_or_else(|| EngineError::Engine {
            what: format!("create service {}", new.name),
            source: "the engine answered without the service's id".into(),
        })
}

async fn inspect(docker: &Docker, id: &str) -> Result<Option<Service>, EngineError> {
    match docker.inspect_service(id, None).await {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(engine(format!("inspect service {id}"))(e)),
    }
}

/// Writes `spec` over the service's current version.
async fn write(docker: &Docker, service: &Service, spec: ServiceSpec) -> Result<(), EngineError> {
    write_as(docker, service, spec, false).await
}

/// Writes `spec`, or with `previous` the spec the last update replaced.
async fn write_as(
    docker: &Docker,
    service: &Service,
    spec: ServiceSpec,
    previous: bool,
) -> Result<(), EngineError> {
    let id = service.id.clone().unwrap_or_default();
    let version = service
        .version
        .as_ref()
        .and_then(|v| v.index)
        .unwrap_or_default();
    docker
        .update_service(
            &id,
            spec,
            bollard::query_parameters::UpdateServiceOptions {
                version: version as i32,
                rollback: previous.then(|| "previous".to_owned()),
                ..Default::default()
            },
            None,
        )
        .await
        .map(drop)
        .map_err(engine(format!("update service {id}")))
}

/// Scales a service to `replicas`, or to the count berth gave it.
async fn scale(docker: &Docker, id: &str, replicas: Option<i64>) -> Result<(), EngineError> {
    let Some(service) = inspect(docker, id).await? else {
        return Ok(());
    };
    let mut spec = service.spec.clone().unwrap_or_default();
    let wanted = replicas.unwrap_or_else(|| {
        spec_labels(&service)
            .get(REPLICAS)
            .and_then(|r| r.parse().ok())
            .unwrap_or(1)
    });
    if replicas_of(Some(&spec)) == Some(wanted) {
        return Ok(());
    }
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(wanted),
        }),
        ..Default::default()
    });
    write(docker, &service, spec).await
}

pub(super) async fn start(docker: &Docker, id: &str) -> Result<(), EngineError> {
    scale(docker, id, None).await
}

pub(super) async fn stop(docker: &Docker, id: &str) -> Result<(), EngineError> {
    scale(docker, id, Some(0)).await
}

pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    match docker.delete_service(id).await {
        Err(e) if !is_not_found(&e) => Err(engine(format!("remove service {id}"))(e)),
        _ => Ok(()),
    }
}

/// The service as the health gate sees it: up unless stopped or its update paused (a task
/// of the new spec failed); healthy once every task Swarm keeps running has the current
/// spec and runs (Swarm counts a task with a healthcheck running only once it is healthy);
/// each failed task of the current spec counts as a restart.
pub(super) async fn find(docker: &Docker, name_or_id: &str) -> Result<Option<Found>, EngineError> {
    let Some(service) = inspect(docker, name_or_id).await? else {
        return Ok(None);
    };
    let id = service.id.clone().unwrap_or_default();
    let labels = spec_labels(&service);
    let managed = labels.get(label::MANAGED).is_some_and(|v| v == "true") && in_namespace(&labels);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([("service".to_owned(), vec![id.clone()])])),
        }))
        .await
        .map_err(engine(format!("list the tasks of {name_or_id}")))?;
    let current = Some(fingerprint(&labels));
    let of_current = |t: &Task| task_fingerprint(t) == current;
    let failed = tasks
        .iter()
        .filter(|t| of_current(t))
        .filter(|t| is_state(t, TaskState::FAILED) || is_state(t, TaskState::REJECTED))
        .count();
    let kept: Vec<&Task> = tasks.iter().filter(|t| desired_running(t)).collect();
    let running_current = kept
        .iter()
        .filter(|t| of_current(t))
        .filter(|t| is_state(t, TaskState::RUNNING))
        .count() as i64;
    let desired = replicas_of(service.spec.as_ref()).unwrap_or(0);
    let paused = service
        .update_status
        .as_ref()
        .and_then(|u| u.state)
        .is_some_and(|s| {
            matches!(
                s,
                ServiceUpdateStatusStateEnum::PAUSED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
            )
        });
    let converged = running_current >= desired && kept.iter().all(|t| of_current(t));
    Ok(Some(Found {
        id,
        name: service
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
        running: desired > 0 && !paused,
        restarts: failed as i64,
        partner: labels.get(label::PARTNER).filter(|_| managed).cloned(),
        secrets_dir: labels.get(label::SECRETS_DIR).filter(|_| managed).cloned(),
        health: Some(if converged { "healthy" } else { "starting" }.to_owned()),
        exit_code: None,
    }))
}

/// Updates the service to `new` in place (Swarm keeps the spec it replaces as its previous
/// one, which [`revert`] goes back to).
pub(super) async fn update(
    docker: &Docker,
    id: &str,
    new: &NewContainer<'_>,
) -> Result<(), EngineError> {
    let Some(service) = inspect(docker, id).await? else {
        return Err(EngineError::Engine {
            what: format!("update service {}", new.name),
            source: "the service is gone".into(),
        });
    };
    let spec = service_spec(docker, new).await?;
    write(docker, &service, spec).await
}

/// Puts the service back to its previous spec, the one whose [`fingerprint`] is `to`,
/// unless it runs that already (the update never landed, or was reverted before a crash).
pub(super) async fn revert(docker: &Docker, id: &str, to: &str) -> Result<(), EngineError> {
    let Some(service) = inspect(docker, id).await? else {
        return Ok(());
    };
    if fingerprint(&spec_labels(&service)) == to {
        return Ok(());
    }
    // Swarm keeps the spec an update replaced: the one berth wrote before this update.
    write_as(
        docker,
        &service,
        service.spec.clone().unwrap_or_default(),
        true,
    )
    .await
}

/// The script's network as an attachable overlay network, so its components reach each
/// other by name on whichever node their tasks run.
pub(super) async fn ensure_network(docker: &Docker, network: &Network) -> Result<(), EngineError> {
    let wanted = network.labels();
    match docker.inspect_network(&network.name, None).await {
        Ok(n) if n.labels.as_ref().is_some_and(|l| labelled(l, &wanted)) => Ok(()),
        Ok(_) => Err(EngineError::Engine {
            what: format!("use network {}", network.name),
            source: "a network of that name exists that berth did not create for this script; \
                     berth leaves it alone"
                .into(),
        }),
        Err(e) if is_not_found(&e) => docker
            .create_network(NetworkCreateRequest {
                name: network.name.clone(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                labels: Some(wanted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(engine(format!("create network {}", network.name))),
        Err(e) => Err(engine(format!("inspect network {}", network.name))(e)),
    }
}
