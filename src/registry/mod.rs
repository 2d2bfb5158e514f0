//! The registry clients: OCI distribution registries, Amazon ECR, Docker's own credential
//! store, and the engine's image store for `local` images, together behind
//! [`crate::image::TagSource`] as [`Sources`]. This is where berth talks to registries;
//! choosing a version from what they list is [`crate::resolve`]'s job.

pub mod docker_config;
pub mod ecr;
pub mod oci;

use std::time::Duration;

use crate::engine::{Engine, EngineError};
use crate::image::{Credentials, ImageRepo, Source, SourceError, TagRef, TagSource};

/// How long one registry request may take: `BERTH_REGISTRY_TIMEOUT` seconds, else 30. A
/// registry that is slower than this counts as unreachable for the pass.
pub fn registry_timeout() -> Duration {
    std::env::var("BERTH_REGISTRY_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// Where this process finds its registry credentials: Docker's config directory and the
/// AWS shared files. berth's own, so no container may mount them or read them as env files.
pub fn credential_paths() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let aws = |var: &str, file: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(file)))
    };
    [
        docker_config::config_dir(),
        aws("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        aws("AWS_CONFIG_FILE", "config"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("listing the local images failed")]
    Engine(#[source] EngineError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    Ecr(#[from] ecr::EcrError),
    #[error("`local` images need a container engine, and none answers here")]
    NoEngine,
    #[error("{repository} has no registry")]
    NoRegistry { repository: String },
    #[error(
        "{repository}:{tag} is listed with digest {digest:?}, which is not sha256:<64 hex digits>"
    )]
    BadDigest {
        repository: String,
        tag: String,
        digest: String,
    },
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

fn registry_of(repo: &ImageRepo) -> Result<&str, RegistryError> {
    repo.registry
        .as_deref()
        .ok_or_else(|| RegistryError::NoRegistry {
            repository: repo.repository.clone(),
        })
}

impl<E: Engine> Sources<'_, E> {
    /// Every tag of a repository, refusing the listing when a digest in it is malformed:
    /// digests go to the engine and into `berth.lock`.
    async fn list(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, RegistryError> {
        let tags = self.list_unchecked(repo).await?;
        if let Some((t, d)) = tags.iter().find_map(|t| {
            t.digest
                .as_ref()
                .filter(|d| !crate::image::is_digest(d))
                .map(|d| (t, d))
        }) {
            return Err(RegistryError::BadDigest {
                repository: repo.display(),
                tag: t.tag.clone(),
                digest: d.clone(),
            });
        }
        Ok(tags)
    }

    async fn list_unchecked(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, RegistryError> {
        match repo.source {
            Source::Local => Ok(self
                .engine
                .ok_or(RegistryError::NoEngine)?
                .local_tags(&repo.repository)
                .await
                .map_err(RegistryError::Engine)?
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

    async fn pull_credentials(
        &self,
        repo: &ImageRepo,
    ) -> Result<Option<Credentials>, RegistryError> {
        match repo.source {
            Source::Local => Ok(None),
            Source::Oci => Ok(self.oci.credentials(registry_of(repo)?).await?),
            Source::Ecr => Ok(Some(self.ecr.credentials(registry_of(repo)?).await?)),
        }
    }
}

impl<E: Engine> TagSource for Sources<'_, E> {
    async fn tags(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, SourceError> {
        Ok(self.list(repo).await?)
    }

    async fn digest(&self, repo: &ImageRepo, tag: &str) -> Result<String, SourceError> {
        let registry = registry_of(repo)?;
        Ok(self
            .oci
            .digest(repo, registry, tag)
            .await
            .map_err(RegistryError::from)?)
    }

    async fn credentials(&self, repo: &ImageRepo) -> Result<Option<Credentials>, SourceError> {
        Ok(self.pull_credentials(repo).await?)
    }

    fn forget_credentials(&self, repo: &ImageRepo) {
        if let (Source::Ecr, Some(registry)) = (repo.source, &repo.registry) {
            self.ecr.forget(registry);
        }
    }

    async fn pull_size(&self, repo: &ImageRepo, digest: &str) -> Result<Option<u64>, SourceError> {
        let creds = match repo.source {
            Source::Local => return Ok(None),
            Source::Oci => None,
            // ECR's registry speaks the same distribution API, with its pull token.
            Source::Ecr => Some(
                self.ecr
                    .credentials(registry_of(repo)?)
                    .await
                    .map_err(RegistryError::from)?,
            ),
        };
        let size = self
            .oci
            .pull_size(repo, registry_of(repo)?, digest, creds.as_ref())
            .await
            .map_err(RegistryError::from)?;
        Ok(Some(size))
    }
}
