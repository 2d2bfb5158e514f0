//! From manifests to what should run: each opted-in script's version (the highest tag its
//! ranges admit, or what `berth.lock` pins), its digest and its container spec. Pure but
//! for the tag source it is handed and the env files it reads: it decides, the registries
//! in [`crate::registry`] only answer.

mod pick;
mod spec;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use semver::VersionReq;

use crate::container::{Bind, ContainerSpec, EnvFile};
use crate::exit::chain;
use crate::image::{ImageRepo, Source, TagRef, TagSource};
use crate::lock::{Lock, Pin};
use crate::manifest::{OptIn, Partner, Repo, Script};
use crate::policy::{Candidate, Origin, Refusal, Rules};

pub use pick::{pick, tag_version};
pub use spec::{
    Secrets, container_spec, env_files, health, host_binds, origin, parse_env_file, read_env_files,
    resolve_host_path,
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

/// One script as it should run on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    pub script: String,
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

impl DesiredContainer {
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
        registry: repo.registry(script).map(str::to_owned),
        repository: opt
            .repository
            .as_ref()
            .map_or(&script.image.repository.value, |r| &r.value)
            .clone(),
        insecure: script.image.insecure,
    }
}

/// Live resolution: the highest tag within the script's range, the
/// partner's narrower range and the pre-release rule.
pub async fn resolve_live<S: TagSource>(
    repo: &Repo,
    opt: &OptIn,
    script: &Script,
    tags: &CachedTags<'_, S>,
) -> Result<Resolved, String> {
    let image = image_repo(repo, opt, script);
    let mut reqs = Vec::new();
    for r in [script.versions.as_ref(), opt.versions.as_ref()]
        .into_iter()
        .flatten()
    {
        reqs.push(VersionReq::parse(r).map_err(|e| e.to_string())?);
    }
    let listed = tags.tags(&image).await?;
    let req_refs: Vec<&VersionReq> = reqs.iter().collect();
    let chosen = pick(&listed, &req_refs, script.prerelease).ok_or_else(|| {
        let requirement = reqs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        chain(&ResolveError::NoMatch {
            repository: image.display(),
            requirement: if requirement.is_empty() {
                "*".into()
            } else {
                requirement
            },
        })
    })?;
    let digest = tags.digest(&image, chosen).await?;
    Ok(Resolved {
        version: chosen.tag.clone(),
        digest,
        image,
    })
}

/// Frozen mode: exactly what `berth.lock` pins, provided it was pinned from the image the
/// manifests name now.
pub fn resolve_locked(
    lock: &Lock,
    repo: &Repo,
    partner: &str,
    opt: &OptIn,
    script: &Script,
) -> Result<Resolved, String> {
    let image = image_repo(repo, opt, script);
    let pin = lock.pin(partner, &opt.script).ok_or_else(|| {
        format!(
            "berth.lock has no pin for {partner}/{}: run `berth lock`",
            opt.script.value
        )
    })?;
    if pin.image != image.display() {
        return Err(format!(
            "berth.lock pins {partner}/{} from {}, but the manifests name {}: run `berth lock`",
            opt.script.value,
            pin.image,
            image.display()
        ));
    }
    Ok(Resolved {
        version: pin.version.clone(),
        digest: pin.digest.clone(),
        image,
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
        let origin = origin(repo, partner_path, opt, doc);
        let image = image_repo(repo, opt, script);
        if let Some(r) = rules.image_refusal(image.remote_registry(), &origin.image) {
            refused.insert(opt.script.value.clone(), vec![r]);
            continue;
        }
        let resolved = match &repo.lock {
            Some(lock) => resolve_locked(&lock.doc, repo, &partner.name, opt, script),
            None => resolve_live(repo, opt, script, tags).await,
        };
        let built = resolved.and_then(|r| {
            let mut spec = container_spec(script, opt, secrets).map_err(|e| chain(&e))?;
            rules.apply_ceilings(&mut spec);
            let env_files = env_files(&spec);
            read_env_files(&mut spec, &env_files, &origin, rules).map_err(|e| chain(&e))?;
            Ok(DesiredContainer {
                script: script.name.value.clone(),
                version: r.version,
                image: r.image.reference(&r.digest),
                digest: r.digest,
                pull_from: (r.image.source != Source::Local).then_some(r.image),
                spec_hash: spec.hash(),
                binds: host_binds(&spec),
                env_files,
                origin,
                spec,
                health: health(script),
            })
        });
        match built {
            Ok(c) => containers.push(c),
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
        let image = image_repo(repo, opt, &doc.doc);
        let mut spec = container_spec(&doc.doc, opt, Secrets::NamesOnly)
            .expect("opening no secret cannot fail");
        rules.apply_ceilings(&mut spec);
        let origin = origin(repo, partner_path, opt, doc);
        let (binds, env_files) = (host_binds(&spec), env_files(&spec));
        let candidate = Candidate {
            spec: &spec,
            binds: &binds,
            env_files: &env_files,
            registry: image.remote_registry(),
            origin: &origin,
        };
        out.extend(
            rules
                .refusals(&candidate)
                .into_iter()
                .map(|r| (opt.script.value.clone(), r)),
        );
    }
    out
}

/// Resolves every opt-in of every partner live, for `berth lock`. Returns the fresh lock,
/// or the pins that failed.
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
            match resolve_live(repo, opt, &script.doc, tags).await {
                Ok(r) => {
                    lock.partners.entry(name.clone()).or_default().insert(
                        opt.script.value.clone(),
                        Pin {
                            version: r.version,
                            digest: r.digest,
                            image: r.image.display(),
                        },
                    );
                }
                Err(why) => failed.push(format!("{name}/{}: {why}", opt.script.value)),
            }
        }
    }
    if failed.is_empty() {
        Ok(lock)
    } else {
        Err(failed)
    }
}
