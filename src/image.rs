//! What an image is to berth: where a script's images are listed ([`ImageRepo`]), one tag
//! of it ([`TagRef`]), what pulling needs ([`Credentials`]), and the [`TagSource`] trait the
//! registries implement and resolution calls. Pure data and a trait, so the planner, the
//! resolver and the engine can all speak of images without depending on a registry client.

use schemars::JsonSchema;
use serde::Deserialize;

/// Where a script's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Any registry speaking the OCI distribution API.
    Oci,
    /// Amazon ECR.
    Ecr,
    /// The engine's own image store, for hosts that receive images by `docker load`.
    Local,
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
    /// The registry images come from, as a host policy judges it; `None` for the engine's
    /// own (`local`) images.
    pub fn remote_registry(&self) -> Option<&str> {
        match self.source {
            Source::Local => None,
            _ => self.registry.as_deref(),
        }
    }

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

/// The user name under which an identity token travels in place of a password: how
/// credential helpers hand one over, and how berth passes one on. An identity token is a
/// refresh token for the registry's token service, never a Basic password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credentials {
    /// The identity token these credentials carry instead of a password, if they do.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }
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

/// A source's failure, whatever the source: resolution only reports it.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Lists the tags of image repositories, finds their digests, and says how to pull them.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait TagSource {
    /// Every tag of a repository: one listing per call (paginated as the registry needs).
    async fn tags(&self, repo: &ImageRepo) -> Result<Vec<TagRef>, SourceError>;
    /// The digest of one tag, for sources whose listing does not carry digests.
    async fn digest(&self, repo: &ImageRepo, tag: &str) -> Result<String, SourceError>;
    /// Credentials for pulling from the repository's registry, if it needs any.
    async fn credentials(&self, repo: &ImageRepo) -> Result<Option<Credentials>, SourceError>;
    /// Drops cached credentials after the registry refused them, so the next call fetches
    /// fresh ones.
    fn forget_credentials(&self, repo: &ImageRepo);
    /// The compressed size of what pulling `digest` downloads: its layers and config as the
    /// registry's manifest lists them (for an index, the manifest of this host's
    /// platform). `None` when the source pulls nothing (`local`).
    async fn pull_size(&self, repo: &ImageRepo, digest: &str) -> Result<Option<u64>, SourceError>;
}

/// The platform the engine runs images for, as image indexes name it: berth runs on the
/// engine's host, so it is berth's own.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux", arch)
}

/// Whether `s` is a digest berth will pass on: `sha256:` and 64 lowercase hex digits. A
/// registry's or a lock file's word is checked before it reaches the engine or a file.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The first 12 hex digits of a digest, as people read them.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
