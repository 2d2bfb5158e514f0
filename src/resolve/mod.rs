//! From manifests to what should run: each opted-in script's version (semver over the
//! repository's tags, design.md §2 "Resolution"), its digest and its container spec.
//! Image sources sit behind [`TagSource`]; the engine's own store is the `local` source.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use semver::{Version, VersionReq};

use crate::lock::Lock;
use crate::manifest::{OptIn, Partner, Repo, Script, Source, syntax};
use crate::plan::{ContainerSpec, Desired, DesiredContainer, HealthCheck, Overrides};
use crate::runtime::{Engine, RuntimeError};

use crate::window::Schedule;

pub mod docker_config;
pub mod ecr;
pub mod oci;

/// How long one registry request may take: `BERTH_REGISTRY_TIMEOUT` seconds, else 30. A
/// registry that is slower than this counts as unreachable for the pass.
pub fn registry_timeout() -> Duration {
    std::env::var("BERTH_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// Where a script's images are listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRepo {
    pub source: Source,
    pub registry: Option<String>,
    pub repository: String,
    /// Plain HTTP to a registry that is not on loopback.
    pub insecure: bool,
}

impl ImageRepo {
    /// The reference the engine pulls and runs: pinned by digest, never a mutable tag. For
    /// `local` images the digest is the image id, which the engine runs directly.
    pub fn reference(&self, digest: &str) -> String {
        match (&self.source, &self.registry) {
            (Source::Local, _) | (_, None) => digest.to_owned(),
            (_, Some(registry)) => format!("{registry}/{}@{digest}", self.repository),
        }
    }

    /// `registry/repository`, as people name an image.
    pub fn display(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }
}

/// One tag of a repository, with its digest when the listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRef {
    pub tag: String,
    /// `sha256:…` of the image manifest; for `local` images, the image id.
    pub digest: Option<String>,
}

/// What the engine needs to pull from a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The registry host the credentials are for.
    pub server: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("listing the local images failed")]
    Engine(#[source] RuntimeError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    Ecr(#[from] ecr::EcrError),
    #[error("`local` images need a container engine, and none answers here")]
    NoEngine,
    #[error("{repository} has no registry")]
    NoRegistry { repository: String },
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
}

/// Lists the tags of image repositories, finds their digests, and says how to pull them.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait TagSource {
    /// Every tag of a repository: one listing per call (paginated as the registry needs).
    async fn tags(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, ResolveError>;
    /// The digest of one tag, for sources whose listing does not carry digests.
    async fn digest(&self, repo: &ImageRepo, tag: &str) -> Result<String, ResolveError>;
    /// Credentials for pulling from the repository's registry, if it needs any.
    async fn credentials(&self, repo: &ImageRepo) -> Result<Option<Credentials>, ResolveError>;
    /// Drops cached credentials after the registry refused them, so the next call fetches
    /// fresh ones.
    fn forget_credentials(&self, repo: &ImageRepo);
}

/// Every kind of source, chosen by the script's `image.source`.
pub struct Sources<'a, E: Engine> {
    /// The engine, for `local` images; `None` where there is none (CI's `lock` and `diff`).
    pub engine: Option<&'a E>,
    pub oci: oci::OciRegistry,
    pub ecr: ecr::EcrRegistry,
}

impl<'a, E: Engine> Sources<'a, E> {
    pub fn new(engine: Option<&'a E>) -> Self {
        Sources {
            engine,
            oci: oci::OciRegistry::new(docker_config::DockerConfig::load()),
            ecr: ecr::EcrRegistry::new(),
        }
    }
}

fn registry_of(repo: &ImageRepo) -> Result<&str, ResolveError> {
    repo.registry
        .as_deref()
        .ok_or_else(|| ResolveError::NoRegistry {
            repository: repo.repository.clone(),
        })
}

impl<E: Engine> TagSource for Sources<'_, E> {
    async fn tags(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, ResolveError> {
        match repo.source {
            Source::Local => Ok(self
                .engine
                .ok_or(ResolveError::NoEngine)?
                .local_tags(&repo.repository)
                .await
                .map_err(ResolveError::Engine)?
                .into_iter()
                .map(|(tag, id)| TagRef {
                    tag,
                    digest: Some(id),
                })
                .collect()),
            Source::Oci => Ok(self.oci.tags(repo, registry_of(repo)?).await?),
            Source::Ecr => Ok(self.ecr.tags(registry_of(repo)?, &repo.repository).await?),
        }
    }

    async fn digest(&self, repo: &ImageRepo, tag: &str) -> Result<String, ResolveError> {
        Ok(self.oci.digest(repo, registry_of(repo)?, tag).await?)
    }

    async fn credentials(&self, repo: &ImageRepo) -> Result<Option<Credentials>, ResolveError> {
        match repo.source {
            Source::Local => Ok(None),
            Source::Oci => Ok(self.oci.credentials(registry_of(repo)?).await?),
            Source::Ecr => Ok(Some(self.ecr.credentials(registry_of(repo)?).await?)),
        }
    }

    fn forget_credentials(&self, repo: &ImageRepo) {
        if let (Source::Ecr, Some(registry)) = (repo.source, &repo.registry) {
            self.ecr.forget(registry);
        }
    }
}

/// A tag read as semver: a leading `v` is accepted; other non-semver tags are ignored.
pub fn tag_version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Whether a version is admitted by a requirement, pre-releases only when allowed. With
/// pre-releases allowed, a pre-release counts by its release numbers (`1.5.0-rc.1`
/// satisfies `^1.2`), which is what "allow pre-release tags" means to a person.
fn admits(req: &VersionReq, v: &Version, prerelease: bool) -> bool {
    if v.pre.is_empty() {
        req.matches(v)
    } else if prerelease {
        let release = Version::new(v.major, v.minor, v.patch);
        req.matches(v) || req.matches(&release)
    } else {
        false
    }
}

/// The highest tag every requirement admits. Build metadata does not order: among tags of
/// equal precedence the unprefixed one wins, then the lexically smallest.
pub fn pick<'a>(tags: &'a [TagRef], reqs: &[&VersionReq], prerelease: bool) -> Option<&'a TagRef> {
    tags.iter()
        .filter_map(|t| tag_version(&t.tag).map(|v| (v, t)))
        .filter(|(v, _)| reqs.iter().all(|r| admits(r, v, prerelease)))
        .max_by(|(va, ta), (vb, tb)| {
            va.cmp_precedence(vb)
                .then_with(|| tb.tag.starts_with('v').cmp(&ta.tag.starts_with('v')))
                .then_with(|| tb.tag.cmp(&ta.tag))
        })
        .map(|(_, t)| t)
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
        let got = self
            .inner
            .tags(repo)
            .await
            .map_err(|e| crate::cli::chain(&e));
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
            .map_err(|e| crate::cli::chain(&e));
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

/// Live resolution (design.md §2): the highest tag within the script's range, the
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
        crate::cli::chain(&ResolveError::NoMatch {
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
/// a `berth.lock`, live ones otherwise. Scripts that cannot be resolved are listed in
/// `unresolved`, so their containers are left as they are.
pub async fn desired<S: TagSource>(
    repo: &Repo,
    partner: &Partner,
    revision: &str,
    tags: &CachedTags<'_, S>,
    overrides: Overrides,
) -> Desired {
    let mut containers = Vec::new();
    let mut unresolved = BTreeMap::new();
    for opt in &partner.scripts {
        let Some(script) = repo.scripts.get(opt.script.as_str()) else {
            continue;
        };
        let script = &script.doc;
        let resolved = match &repo.lock {
            Some(lock) => resolve_locked(&lock.doc, repo, &partner.name, opt, script),
            None => resolve_live(repo, opt, script, tags).await,
        };
        let built = resolved.and_then(|r| {
            let spec =
                container_spec(script, opt, EnvFiles::Read).map_err(|e| crate::cli::chain(&e))?;
            Ok(DesiredContainer {
                script: script.name.value.clone(),
                version: r.version,
                image: r.image.reference(&r.digest),
                digest: r.digest,
                pull_from: (r.image.source != Source::Local).then_some(r.image),
                spec_hash: spec.hash(),
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
        schedule: Schedule::from_manifest(
            repo.timezone(partner),
            repo.windows(partner),
            &partner.blackouts,
        ),
        containers,
        unresolved,
        has_idle_gate: partner.idle.is_some(),
        overrides,
    }
}

/// When a new container counts as healthy.
pub fn health(script: &Script) -> HealthCheck {
    HealthCheck {
        http: script
            .health
            .as_ref()
            .and_then(|h| h.http.as_ref())
            .map(|u| u.value.clone()),
        timeout: script
            .health
            .as_ref()
            .and_then(|h| h.timeout.as_ref())
            .and_then(|t| syntax::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(60)),
    }
}

/// Whether to read the host's env files into the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvFiles {
    /// On the host: their contents count, so a rotated secret rolls the container.
    Read,
    /// Away from the host (CI's `berth diff`): only their paths count.
    PathsOnly,
}

/// The container spec: the script's settings, the partner's env on top, then the host's
/// env files.
pub fn container_spec(
    script: &Script,
    opt: &OptIn,
    env_files: EnvFiles,
) -> Result<ContainerSpec, ResolveError> {
    let c = &script.container;
    let mut env: BTreeMap<String, String> = c
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    env.extend(opt.env.iter().map(|(k, v)| (k.clone(), v.value.clone())));
    if env_files == EnvFiles::Read {
        for file in &opt.env_files {
            let text =
                std::fs::read_to_string(&file.value).map_err(|source| ResolveError::EnvFile {
                    path: file.value.clone(),
                    source,
                })?;
            env.extend(parse_env_file(&text));
        }
    }
    Ok(ContainerSpec {
        command: c.command.clone(),
        env,
        env_files: opt.env_files.iter().map(|f| f.value.clone()).collect(),
        ports: c.ports.iter().map(|p| p.value.clone()).collect(),
        volumes: c.volumes.iter().map(|v| v.value.clone()).collect(),
        network: c.network.as_ref().map(|n| n.value.clone()),
        init: c.init.unwrap_or(true),
        stop_timeout_secs: c
            .stop_timeout
            .as_ref()
            .and_then(|t| syntax::parse_duration(t).ok())
            .map_or(10, |d| d.as_secs()),
        memory: c.memory.as_ref().and_then(|m| syntax::parse_memory(m).ok()),
        nano_cpus: c.cpus.as_ref().map(|n| (n.value * 1e9) as i64),
        read_only: c.read_only,
        user: c.user.as_ref().map(|u| u.value.clone()),
    })
}

/// `KEY=value` lines as `docker run --env-file` reads them; blank lines and `#` comments
/// are skipped, and so are bare `KEY` lines (berth does not pass its own environment on).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<TagRef> {
        names
            .iter()
            .map(|t| TagRef {
                tag: (*t).into(),
                digest: Some(format!("sha256:{t}")),
            })
            .collect()
    }

    fn chosen(names: &[&str], reqs: &[&str], pre: bool) -> Option<String> {
        let t = tags(names);
        let reqs: Vec<VersionReq> = reqs.iter().map(|r| r.parse().unwrap()).collect();
        let refs: Vec<&VersionReq> = reqs.iter().collect();
        pick(&t, &refs, pre).map(|t| t.tag.clone())
    }

    #[test]
    fn highest_in_both_ranges() {
        let all = [
            "1.2.0", "1.4.1", "1.4.3", "1.5.0", "2.0.0", "latest", "main",
        ];
        assert_eq!(chosen(&all, &["^1.2.0"], false).as_deref(), Some("1.5.0"));
        assert_eq!(
            chosen(&all, &["^1.2.0", "~1.4"], false).as_deref(),
            Some("1.4.3")
        );
        assert_eq!(chosen(&all, &["^3"], false), None);
        assert_eq!(chosen(&["latest"], &[], false), None);
    }

    #[test]
    fn prereleases_only_when_allowed() {
        let all = ["1.4.0", "1.5.0-rc.1"];
        assert_eq!(chosen(&all, &["^1.2"], false).as_deref(), Some("1.4.0"));
        assert_eq!(chosen(&all, &["^1.2"], true).as_deref(), Some("1.5.0-rc.1"));
    }

    #[test]
    fn v_prefix_counts_and_unprefixed_wins_a_tie() {
        assert_eq!(
            chosen(&["v1.3.0", "1.2.0"], &["^1"], false).as_deref(),
            Some("v1.3.0")
        );
        assert_eq!(
            chosen(&["v1.3.0", "1.3.0"], &["^1"], false).as_deref(),
            Some("1.3.0")
        );
        assert_eq!(
            chosen(&["1.3.0", "v1.3.0"], &["^1"], false).as_deref(),
            Some("1.3.0")
        );
    }

    #[test]
    fn build_metadata_does_not_order() {
        assert_eq!(
            chosen(&["1.3.0+b", "1.3.0+a"], &["^1"], false).as_deref(),
            Some("1.3.0+a")
        );
        assert_eq!(
            chosen(&["1.3.0+a", "1.3.0+b"], &["^1"], false).as_deref(),
            Some("1.3.0+a")
        );
    }

    fn arb_tag() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..3, 0u64..3, 0u64..3, any::<bool>(), prop::option::of(0u8..2), prop::option::of(0u8..2))
                .prop_map(|(ma, mi, pa, v, pre, build)| {
                    let mut t = format!("{}{ma}.{mi}.{pa}", if v { "v" } else { "" });
                    if let Some(p) = pre {
                        t.push_str(&format!("-rc.{p}"));
                    }
                    if let Some(b) = build {
                        t.push_str(&format!("+b{b}"));
                    }
                    t
                }),
            1 => prop::sample::select(vec!["latest".to_owned(), "main".to_owned(), "1.2".to_owned(), "vv1.0.0".to_owned()]),
        ]
    }

    proptest::proptest! {
        /// The pick satisfies every requirement, nothing admitted ranks above it, and the
        /// order tags are listed in does not matter.
        #[test]
        fn pick_is_the_highest_admitted_and_order_independent(
            names in proptest::collection::vec(arb_tag(), 0..12),
            req in proptest::sample::select(vec!["*", "^1", "~1.1", ">=0.2, <2", "=1.1.1", "^0.1", "<1"]),
            pre in proptest::bool::ANY,
            seed in proptest::num::u64::ANY,
        ) {
            let req: VersionReq = req.parse().unwrap();
            let t = tags(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let got = pick(&t, &[&req], pre).cloned();
            if let Some(g) = &got {
                let v = tag_version(&g.tag).expect("the pick is semver");
                proptest::prop_assert!(admits(&req, &v, pre));
                for other in &t {
                    if let Some(ov) = tag_version(&other.tag).filter(|ov| admits(&req, ov, pre)) {
                        proptest::prop_assert!(ov.cmp_precedence(&v) != std::cmp::Ordering::Greater);
                    }
                }
            } else {
                proptest::prop_assert!(t.iter().all(|x| tag_version(&x.tag).is_none_or(|v| !admits(&req, &v, pre))));
            }
            let mut shuffled = t.clone();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            proptest::prop_assert_eq!(pick(&shuffled, &[&req], pre).map(|x| x.tag.clone()), got.map(|x| x.tag));
        }
    }

    #[test]
    fn env_files() {
        let parsed = parse_env_file("# c\n\nA=1\n  B = x=y\nBARE\n");
        assert_eq!(
            parsed,
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
    }
}
