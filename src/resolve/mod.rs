//! From manifests to what should run: each opted-in script's version (the highest tag its
//! ranges admit, or what `berth.lock` pins), its digest and its container spec. Pure but
//! for the tag source it is handed and the env files it reads: it decides, the registries
//! in [`crate::registry`] only answer.

mod pick;
mod spec;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use semver::VersionReq;

use crate::container::{Bind, ContainerSpec, EnvFile, Network, Volume};
use crate::exit::chain;
use crate::image::{ImageRepo, Source, TagRef, TagSource};
use crate::lock::{Lock, Pin};
use crate::manifest::{Condition, OptIn, Part, Partner, Repo, Script};
use crate::policy::{Candidate, Origin, Refusal, Rules};

pub use pick::{pick, tag_version};
pub use spec::{
    Secrets, container_spec, env_files, health, host_binds, job_timeout, named_volume, origin,
    parse_env_file, read_env_files, resolve_host_path,
};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no tag of {repository} satisfies {requirement}")]
    NoMatch {
        repository: String,
        requirement: String,
    },
    #[error("cannot read env file {path}")]
    EnvFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("env file {path} refused: {why}")]
    EnvFileRefused { path: String, why: String },
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("secret {name} refused: {why}")]
    SecretRefused { name: String, why: String },
}

/// When a new container counts as working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub http: Option<String>,
    pub timeout: Duration,
}

/// What a component adds to a desired container: its place in its script's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentOf {
    pub name: String,
    /// Replaced stop-first.
    pub stateful: bool,
    /// A job's timeout; `None` for a long-running component.
    pub job: Option<Duration>,
    pub depends_on: BTreeMap<String, Condition>,
    /// The named volumes it mounts, created before it is.
    pub volumes: Vec<Volume>,
    /// The script's network it joins (none when it opts out with `network:`).
    pub network: Option<Network>,
}

/// One container as it should run on the host: a single-container script's, or one
/// component's.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    pub script: String,
    pub component: Option<ComponentOf>,
    /// The version as the registry's tag spells it.
    pub version: String,
    /// What the container runs and `berth.digest` records.
    pub digest: String,
    /// The reference the engine creates the container from (pinned, never a mutable tag).
    pub image: String,
    /// The registry repository to pull `image` from; `None` for the engine's own images.
    pub pull_from: Option<ImageRepo>,
    pub spec: ContainerSpec,
    pub spec_hash: String,
    pub health: HealthCheck,
    /// The host paths it bind-mounts and the env files it reads, resolved, for the floor
    /// and the policy to judge.
    pub binds: Vec<Bind>,
    pub env_files: Vec<EnvFile>,
    /// Where its values are written in the manifests, for refusals to point at.
    pub origin: Origin,
}

/// A single container of `script` at `version` with `spec`, on an image the engine has, for
/// the unit tests of the modules that plan, prune and report on containers.
#[cfg(test)]
impl DesiredContainer {
    pub fn example(script: &str, version: &str, image: String, spec: ContainerSpec) -> Self {
        DesiredContainer {
            script: script.into(),
            component: None,
            version: version.into(),
            digest: format!("sha256:{script}{version}"),
            image,
            pull_from: None,
            spec_hash: spec.hash(),
            spec,
            health: HealthCheck {
                http: None,
                timeout: Duration::from_secs(5),
            },
            binds: vec![],
            env_files: vec![],
            origin: Default::default(),
        }
    }
}

impl DesiredContainer {
    /// Its managed container name.
    pub fn name(&self, partner: &str) -> String {
        crate::container::part_name(partner, &self.script, self.component_name())
    }

    pub fn component_name(&self) -> Option<&str> {
        self.component.as_ref().map(|c| c.name.as_str())
    }

    /// Everything the floor and the policy judge it by.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            spec: &self.spec,
            binds: &self.binds,
            env_files: &self.env_files,
            registry: self.pull_from.as_ref().and_then(ImageRepo::remote_registry),
            origin: &self.origin,
        }
    }
}

/// Everything a partner's manifests say its host should run, resolved to digests.
#[derive(Debug, Clone)]
pub struct Desired {
    pub partner: String,
    pub revision: String,
    pub containers: Vec<DesiredContainer>,
    /// Scripts whose version could not be resolved: their containers are left as they are.
    pub unresolved: BTreeMap<String, String>,
    /// Scripts the policy refuses before anything is asked of their registry: their
    /// containers are left as they are too.
    pub refused: BTreeMap<String, Vec<Refusal>>,
}

/// Lists each repository once per pass, however many scripts use it, and asks for each
/// digest at most once.
pub struct CachedTags<'a, S: TagSource> {
    inner: &'a S,
    tags: std::cell::RefCell<HashMap<ImageRepo, Result<Vec<TagRef>, String>>>,
    digests: std::cell::RefCell<HashMap<(ImageRepo, String), Result<String, String>>>,
}

impl<'a, S: TagSource> CachedTags<'a, S> {
    pub fn new(inner: &'a S) -> Self {
        CachedTags {
            inner,
            tags: Default::default(),
            digests: Default::default(),
        }
    }

    async fn tags(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, String> {
        if let Some(hit) = self.tags.borrow().get(repo) {
            return hit.clone();
        }
        let got = self.inner.tags(repo).await.map_err(|e| chain(&*e));
        self.tags.borrow_mut().insert(repo.clone(), got.clone());
        got
    }

    /// The digest of a chosen tag: from the listing when it had one, else asked once.
    async fn digest(&self, repo: &ImageRepo, tag: &TagRef) -> Result<String, String> {
        if let Some(d) = &tag.digest {
            return Ok(d.clone());
        }
        let key = (repo.clone(), tag.tag.clone());
        if let Some(hit) = self.digests.borrow().get(&key) {
            return hit.clone();
        }
        let got = self
            .inner
            .digest(repo, &tag.tag)
            .await
            .map_err(|e| chain(&*e));
        self.digests.borrow_mut().insert(key, got.clone());
        got
    }
}

/// A script's version for one partner, pinned to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub version: String,
    pub digest: String,
    pub image: ImageRepo,
}

/// The repository a partner's build of a script comes from.
pub fn image_repo(repo: &Repo, opt: &OptIn, script: &Script) -> ImageRepo {
    ImageRepo {
        source: script.image.source.value,
        registry: repo.registry(&script.image).map(str::to_owned),
        repository: opt
            .repository
            .as_ref()
            .map_or(&script.image.repository.value, |r| &r.value)
            .clone(),
        insecure: script.image.insecure,
    }
}

/// What a part's version is chosen from: its image, the ranges that narrow it, and
/// whether pre-releases count.
struct Choice<'a> {
    image: ImageRepo,
    ranges: Vec<&'a str>,
    prerelease: bool,
    /// Its key in `berth.lock`: the script, or `script/component` for a component with its
    /// own image.
    pin: String,
}

/// A component with its own image resolves its own range (the partner's narrower range
/// and per-partner build apply to the script's image only); every other part shares the
/// script's.
fn choice<'a>(repo: &Repo, opt: &'a OptIn, script: &'a Script, part: &Part<'a>) -> Choice<'a> {
    match (part.own_image, part.component) {
        (Some(own), Some(component)) => Choice {
            image: ImageRepo {
                source: own.image.source.value,
                registry: repo.registry(own.image).map(str::to_owned),
                repository: own.image.repository.value.clone(),
                insecure: own.image.insecure,
            },
            ranges: own.versions.iter().map(|v| v.as_str()).collect(),
            prerelease: own.prerelease,
            pin: pin_key(&script.name, Some(component)),
        },
        _ => Choice {
            image: image_repo(repo, opt, script),
            ranges: [script.versions.as_ref(), opt.versions.as_ref()]
                .into_iter()
                .flatten()
                .map(|v| v.as_str())
                .collect(),
            prerelease: script.prerelease,
            pin: script.name.value.clone(),
        },
    }
}

/// The `berth.lock` key of a script's own image, or of a component's own image.
pub fn pin_key(script: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => format!("{script}/{c}"),
        None => script.to_owned(),
    }
}

/// Live resolution: the highest tag within the ranges and the pre-release rule.
async fn resolve_choice<S: TagSource>(
    c: &Choice<'_>,
    tags: &CachedTags<'_, S>,
) -> Result<Resolved, String> {
    let mut reqs = Vec::new();
    for r in &c.ranges {
        reqs.push(VersionReq::parse(r).map_err(|e| e.to_string())?);
    }
    let listed = tags.tags(&c.image).await?;
    let req_refs: Vec<&VersionReq> = reqs.iter().collect();
    let chosen = pick(&listed, &req_refs, c.prerelease).ok_or_else(|| {
        let requirement = reqs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        chain(&ResolveError::NoMatch {
            repository: c.image.display(),
            requirement: if requirement.is_empty() {
                "*".into()
            } else {
                requirement
            },
        })
    })?;
    let digest = tags.digest(&c.image, chosen).await?;
    Ok(Resolved {
        version: chosen.tag.clone(),
        digest,
        image: c.image.clone(),
    })
}

/// Frozen mode: exactly what `berth.lock` pins, provided it was pinned from the image the
/// manifests name now.
fn resolve_pinned(lock: &Lock, partner: &str, c: &Choice<'_>) -> Result<Resolved, String> {
    let pin = lock.pin(partner, &c.pin).ok_or_else(|| {
        format!(
            "berth.lock has no pin for {partner}/{}: run `berth lock`",
            c.pin
        )
    })?;
    if pin.image != c.image.display() {
        return Err(format!(
            "berth.lock pins {partner}/{} from {}, but the manifests name {}: run `berth lock`",
            c.pin,
            pin.image,
            c.image.display()
        ));
    }
    Ok(Resolved {
        version: pin.version.clone(),
        digest: pin.digest.clone(),
        image: c.image.clone(),
    })
}

/// Every part of a script resolved for a partner, in dependency order: from `berth.lock`
/// when the repo has one, live otherwise. Parts sharing the script's image are resolved
/// once; the first failure fails the script, so a unit never runs half-resolved.
pub async fn resolve_parts<'a, S: TagSource>(
    repo: &Repo,
    partner: &str,
    opt: &'a OptIn,
    script: &'a Script,
    tags: &CachedTags<'_, S>,
) -> Result<Vec<(Part<'a>, Resolved)>, String> {
    let mut done: BTreeMap<String, Resolved> = BTreeMap::new();
    let mut out = Vec::new();
    for part in script.parts() {
        let c = choice(repo, opt, script, &part);
        let r = match done.get(&c.pin) {
            Some(r) => r.clone(),
            None => {
                let r = match &repo.lock {
                    Some(lock) => resolve_pinned(&lock.doc, partner, &c)?,
                    None => resolve_choice(&c, tags).await?,
                };
                done.insert(c.pin.clone(), r.clone());
                r
            }
        };
        out.push((part, r));
    }
    Ok(out)
}

/// One given version of a part, for a partner, when its tag is listed and the ranges
/// admit it: what a later rollout wave falls back to while the newest bakes in the earlier
/// wave. `None` in frozen mode (`berth.lock` pins exactly one version) and otherwise.
pub async fn version_of<S: TagSource>(
    repo: &Repo,
    partner: &Partner,
    script: &str,
    component: Option<&str>,
    version: &str,
    tags: &CachedTags<'_, S>,
) -> Option<Resolved> {
    if repo.lock.is_some() {
        return None;
    }
    let opt = partner
        .scripts
        .iter()
        .find(|o| o.script.as_str() == script)?;
    let doc = &repo.scripts.get(script)?.doc;
    let parts = doc.parts();
    let part = parts.iter().find(|p| p.component == component)?;
    let c = choice(repo, opt, doc, part);
    let reqs: Vec<VersionReq> = c
        .ranges
        .iter()
        .map(|r| VersionReq::parse(r))
        .collect::<Result<_, _>>()
        .ok()?;
    let listed = tags.tags(&c.image).await.ok()?;
    let tag = listed.iter().find(|t| t.tag == version)?;
    let req_refs: Vec<&VersionReq> = reqs.iter().collect();
    pick(std::slice::from_ref(tag), &req_refs, c.prerelease)?;
    let digest = tags.digest(&c.image, tag).await.ok()?;
    Some(Resolved {
        version: tag.tag.clone(),
        digest,
        image: c.image,
    })
}

/// What a partner's host should run at this revision: locked versions when the repo has
/// a `berth.lock`, live ones otherwise, with the policy's ceilings on containers without
/// limits. Scripts that cannot be resolved (a secret that does not open with `keys`
/// included) are listed in `unresolved`, so their containers are left as they are.
pub async fn desired<S: TagSource>(
    repo: &Repo,
    partner: &Partner,
    revision: &str,
    tags: &CachedTags<'_, S>,
    rules: &Rules,
    keys: Option<&crate::secret::Keyring>,
) -> Desired {
    let partner_path = partner_path(repo, partner);
    let secrets = Secrets::Open {
        root: &repo.root,
        partner: &partner.name,
        keys,
    };
    let mut containers = Vec::new();
    let mut unresolved = BTreeMap::new();
    let mut refused = BTreeMap::new();
    for opt in &partner.scripts {
        let Some(doc) = repo.scripts.get(opt.script.as_str()) else {
            continue;
        };
        let script = &doc.doc;
        // A registry the policy refuses is not contacted, for any part of the script.
        let before_contact: Vec<Refusal> = script
            .parts()
            .iter()
            .filter_map(|part| {
                let image = choice(repo, opt, script, part).image;
                let origin = origin(repo, partner_path, opt, doc, part);
                rules.image_refusal(image.remote_registry(), &origin.image)
            })
            .collect();
        if !before_contact.is_empty() {
            refused.insert(opt.script.value.clone(), before_contact);
            continue;
        }
        let built = match resolve_parts(repo, &partner.name, opt, script, tags).await {
            Ok(parts) => parts
                .into_iter()
                .map(|(part, r)| {
                    let origin = origin(repo, partner_path, opt, doc, &part);
                    let mut spec = container_spec(&partner.name, script, &part, opt, secrets)
                        .map_err(|e| chain(&e))?;
                    rules.apply_ceilings(&mut spec);
                    let env_files = env_files(&spec);
                    read_env_files(&mut spec, &env_files, &origin, rules).map_err(|e| chain(&e))?;
                    Ok(DesiredContainer {
                        script: script.name.value.clone(),
                        component: component_of(&partner.name, script, &part),
                        version: r.version,
                        image: r.image.reference(&r.digest),
                        digest: r.digest,
                        pull_from: (r.image.source != Source::Local).then_some(r.image),
                        spec_hash: spec.hash(),
                        binds: host_binds(&spec),
                        env_files,
                        origin,
                        spec,
                        health: health(&part),
                    })
                })
                .collect::<Result<Vec<_>, String>>(),
            Err(why) => Err(why),
        };
        match built {
            Ok(parts) => containers.extend(parts),
            Err(why) => {
                unresolved.insert(opt.script.value.clone(), why);
            }
        }
    }
    Desired {
        partner: partner.name.value.clone(),
        revision: revision.to_owned(),
        containers,
        unresolved,
        refused,
    }
}

/// A component's place in its script's unit; `None` for a single-container script.
fn component_of(partner: &str, script: &Script, part: &Part<'_>) -> Option<ComponentOf> {
    let name = part.component?;
    let volumes = part
        .container
        .volumes
        .iter()
        .filter_map(|v| named_volume(v))
        .filter(|v| script.volumes.contains_key(*v))
        .map(|v| Volume::new(partner, &script.name, v))
        .collect();
    Some(ComponentOf {
        name: name.to_owned(),
        stateful: part.stateful,
        job: part.job.then(|| job_timeout(part)),
        depends_on: part
            .depends_on
            .iter()
            .map(|(k, v)| (k.clone(), v.value))
            .collect(),
        volumes,
        network: part
            .container
            .network
            .is_none()
            .then(|| Network::new(partner, &script.name)),
    })
}

/// The repo-relative path of a partner's file.
fn partner_path<'a>(repo: &'a Repo, partner: &Partner) -> &'a str {
    repo.partners
        .get(partner.name.as_str())
        .map_or("", |d| d.path.as_str())
}

/// What the floor and a host policy refuse of a partner's scripts, judged from the
/// manifests alone (no registry, no env file read): `berth validate --partner` checks a
/// pull request against the partner's policy with it.
pub fn refusals(repo: &Repo, partner: &Partner, rules: &Rules) -> Vec<(String, Refusal)> {
    let partner_path = partner_path(repo, partner);
    let mut out = Vec::new();
    for opt in &partner.scripts {
        let Some(doc) = repo.scripts.get(opt.script.as_str()) else {
            continue;
        };
        for part in doc.doc.parts() {
            let image = choice(repo, opt, &doc.doc, &part).image;
            let mut spec = container_spec(&partner.name, &doc.doc, &part, opt, Secrets::NamesOnly)
                .expect("opening no secret cannot fail");
            rules.apply_ceilings(&mut spec);
            let origin = origin(repo, partner_path, opt, doc, &part);
            let (binds, env_files) = (host_binds(&spec), env_files(&spec));
            let candidate = Candidate {
                spec: &spec,
                binds: &binds,
                env_files: &env_files,
                registry: image.remote_registry(),
                origin: &origin,
            };
            let label = pin_key(&opt.script, part.component);
            out.extend(
                rules
                    .refusals(&candidate)
                    .into_iter()
                    .map(|r| (label.clone(), r)),
            );
        }
    }
    out
}

/// Resolves every opt-in of every partner live, for `berth lock`: a pin per script, and
/// one per component with its own image. Returns the fresh lock, or the pins that failed.
pub async fn resolve_all<S: TagSource>(
    repo: &Repo,
    tags: &CachedTags<'_, S>,
) -> Result<Lock, Vec<String>> {
    let mut lock = Lock {
        version: 1,
        ..Lock::default()
    };
    let mut failed = Vec::new();
    for (name, partner) in &repo.partners {
        for opt in &partner.doc.scripts {
            let Some(script) = repo.scripts.get(opt.script.as_str()) else {
                continue;
            };
            let script = &script.doc;
            for part in script.parts() {
                let c = choice(repo, opt, script, &part);
                let pins = lock.partners.entry(name.clone()).or_default();
                if pins.contains_key(&c.pin) {
                    continue;
                }
                match resolve_choice(&c, tags).await {
                    Ok(r) => {
                        pins.insert(
                            c.pin.clone(),
                            Pin {
                                version: r.version,
                                digest: r.digest,
                                image: r.image.display(),
                            },
                        );
                    }
                    Err(why) => failed.push(format!("{name}/{}: {why}", c.pin)),
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(lock)
    } else {
        Err(failed)
    }
}
