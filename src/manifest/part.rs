//! A script's containers in one shape: a single-container script is one part with no
//! component name, a multi-component script one part per component, in dependency order.
//! Validation, resolution and the planner all walk these, so a v1 script and a component
//! are judged by the same code.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Component, Condition, Container, Health, Image, Script};
use super::span::Sp;

/// One container a script declares.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// `None` for a single-container script.
    pub component: Option<&'a str>,
    /// Its own image, range and pre-release rule; `None` when it runs the script's image at
    /// the script's version.
    pub own_image: Option<OwnImage<'a>>,
    pub container: &'a Container,
    pub health: Option<&'a Health>,
    pub stateful: bool,
    pub job: bool,
    pub timeout: Option<&'a Sp<String>>,
    pub depends_on: &'a BTreeMap<String, Sp<Condition>>,
    /// `replicas` and `placement`, for a swarm.
    pub replicas: Option<&'a Sp<u32>>,
    pub placement: Option<&'a Sp<Vec<String>>>,
}

/// A component's own image and how its version is chosen.
#[derive(Debug, Clone, Copy)]
pub struct OwnImage<'a> {
    pub image: &'a Image,
    pub versions: Option<&'a Sp<String>>,
    pub prerelease: bool,
}

static NO_CONTAINER: Container = Container {
    command: None,
    env: BTreeMap::new(),
    ports: Vec::new(),
    volumes: Vec::new(),
    network: None,
    init: None,
    stop_timeout: None,
    memory: None,
    cpus: None,
    read_only: false,
    user: None,
    privileged: None,
    pid: None,
    ipc: None,
    cap_add: None,
};

static NO_DEPENDENCIES: BTreeMap<String, Sp<Condition>> = BTreeMap::new();

impl Script {
    /// The single container's settings (empty for a multi-component script).
    pub fn container(&self) -> &Container {
        self.container.as_ref().unwrap_or(&NO_CONTAINER)
    }

    /// Whether the script declares `components:`.
    pub fn is_multi(&self) -> bool {
        self.components.is_some()
    }

    /// Its containers, dependencies before their dependents (ties by name). A cycle, which
    /// validation refuses, leaves its members in name order at the end.
    pub fn parts(&self) -> Vec<Part<'_>> {
        let Some(components) = &self.components else {
            return vec![Part {
                component: None,
                own_image: None,
                container: self.container(),
                health: self.health.as_ref(),
                stateful: false,
                job: false,
                timeout: None,
                depends_on: &NO_DEPENDENCIES,
                replicas: self.replicas.as_ref(),
                placement: self.placement.as_ref(),
            }];
        };
        dependency_order(&components.value)
            .into_iter()
            .map(|(name, c)| component_part(name, c))
            .collect()
    }
}

fn component_part<'a>(name: &'a str, c: &'a Component) -> Part<'a> {
    Part {
        component: Some(name),
        own_image: c.image.as_ref().map(|image| OwnImage {
            image,
            versions: c.versions.as_ref(),
            prerelease: c.prerelease,
        }),
        container: &c.container,
        health: c.health.as_ref(),
        stateful: c.stateful,
        job: c.job,
        timeout: c.timeout.as_ref(),
        depends_on: &c.depends_on,
        replicas: c.replicas.as_ref(),
        placement: c.placement.as_ref(),
    }
}

/// Kahn's order over `depends_on`, the smallest name first among the ready ones; unknown
/// dependencies are ignored (validation reports them).
fn dependency_order(components: &BTreeMap<String, Sp<Component>>) -> Vec<(&str, &Component)> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let ready = components.iter().find(|(name, c)| {
            !placed.contains(name.as_str())
                && c.depends_on
                    .keys()
                    .all(|d| placed.contains(d.as_str()) || !components.contains_key(d))
        });
        match ready {
            Some((name, c)) => {
                placed.insert(name);
                out.push((name.as_str(), &c.value));
            }
            None => break,
        }
    }
    out.extend(
        components
            .iter()
            .filter(|(name, _)| !placed.contains(name.as_str()))
            .map(|(name, c)| (name.as_str(), &c.value)),
    );
    out
}

/// The components on a dependency cycle, in name order; empty when there is none.
pub fn cycle(components: &BTreeMap<String, Sp<Component>>) -> Vec<&str> {
    let order = dependency_order(components);
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut stuck = Vec::new();
    for (name, c) in order {
        if c.depends_on
            .keys()
            .all(|d| placed.contains(d.as_str()) || !components.contains_key(d))
        {
            placed.insert(name);
        } else {
            stuck.push(name);
        }
    }
    stuck
}
