//! The container engine, behind the narrow [`Engine`] trait berth owns. It speaks container
//! specs and labels only ([`crate::container`]): nothing here knows of manifests, resolution
//! or plans. [`docker`] is the real engine; the in-memory fake in `fake` scripts failures
//! and crashes for the executor's fault tests.

pub mod docker;
#[cfg(test)]
pub mod fake;
mod swarm;

pub use docker::{ContainerEvent, DockerEngine};

use std::collections::BTreeSet;

use crate::container::{Network, NewContainer, ObservedContainer, Volume};
use crate::image::Credentials;

/// The engine's own failure, boxed so every engine implementation can report its own.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to the container engine")]
    Connect(#[source] Cause),
    #[error("the container engine failed to {what}")]
    Engine {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("the container engine stopped answering when asked to {what}")]
    Unreachable {
        what: String,
        #[source]
        source: Cause,
    },
}

/// How long a pull may take: abandoned after `stall` without any progress, or after
/// `deadline` in all, so a bad link never holds a pass (and its lock) for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    pub stall: std::time::Duration,
    pub deadline: std::time::Duration,
}

impl PullLimits {
    /// `BERTH_PULL_STALL` (default 60) and `BERTH_PULL_DEADLINE` (default 1800) seconds.
    pub fn from_env() -> PullLimits {
        let secs = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(
                    std::time::Duration::from_secs(default),
                    std::time::Duration::from_secs_f64,
                )
        };
        PullLimits {
            stall: secs("BERTH_PULL_STALL", 60),
            deadline: secs("BERTH_PULL_DEADLINE", 1800),
        }
    }
}

/// A pull given up on.
#[derive(Debug, thiserror::Error)]
pub enum PullAbandoned {
    #[error("no progress for {0:.0} s (BERTH_PULL_STALL)")]
    Stalled(f64),
    #[error("not done after {0:.0} s (BERTH_PULL_DEADLINE)")]
    Deadline(f64),
}

impl EngineError {
    /// Whether the engine itself is gone, rather than refusing one request.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            EngineError::Connect(_) | EngineError::Unreachable { .. }
        )
    }

    /// Whether a pull was given up on by berth's own bounds (so retrying at once is
    /// pointless).
    pub fn is_abandoned_pull(&self) -> bool {
        matches!(self, EngineError::Engine { source, .. } if source.is::<PullAbandoned>())
    }
}

/// A container found by name or id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// How often the engine has restarted it after it exited: a count that grows while a
    /// health check waits means the container is crash-looping, not healthy.
    pub restarts: i64,
    /// The `berth.partner` label, when the container is managed in this namespace.
    pub partner: Option<String>,
    /// The `berth.secrets-dir` label: its secret files, removed with it.
    pub secrets_dir: Option<String>,
    /// The engine's healthcheck verdict (`starting`, `healthy`, `unhealthy`), when the
    /// container has a healthcheck.
    pub health: Option<String>,
    /// How it exited, once it has.
    pub exit_code: Option<i64>,
}

/// A named volume the engine holds with berth's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVolume {
    pub name: String,
    pub partner: String,
    pub script: String,
    /// The name the script declares it by.
    pub volume: String,
}

/// What removing one reference of an image did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRemoval {
    /// The image is gone from the engine's store.
    Removed,
    /// Only the reference went: the image stays under other references someone else made.
    Untagged,
    /// A container uses the image; the engine left it.
    InUse,
    /// The engine holds no such reference (already removed).
    Gone,
}

/// Everything berth asks of a container engine.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait Engine {
    /// The partner's managed containers in this namespace: one list call, filtered by label.
    async fn list_managed(&self, partner: &str) -> Result<Vec<ObservedContainer>, EngineError>;
    /// Tags and image ids of a repository in the engine's own store.
    async fn local_tags(&self, repository: &str) -> Result<Vec<(String, String)>, EngineError>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, new: &NewContainer<'_>) -> Result<String, EngineError>;
    async fn start(&self, id: &str) -> Result<(), EngineError>;
    /// Stops with the container's own `stop_timeout`, then kills; a container that is
    /// already stopped or gone counts as stopped.
    async fn stop(&self, id: &str) -> Result<(), EngineError>;
    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError>;
    /// Removes a container; one that is already gone counts as removed.
    async fn remove(&self, id: &str) -> Result<(), EngineError>;
    /// Whether a changed container is updated where it is ([`Engine::update`]: a swarm
    /// service, which cannot be renamed) instead of replaced by a new one under a
    /// temporary name.
    fn updates_in_place(&self) -> bool {
        false
    }
    /// Updates a container in place to `new`; only engines that [`Engine::updates_in_place`].
    async fn update(&self, id: &str, new: &NewContainer<'_>) -> Result<(), EngineError> {
        Err(EngineError::Engine {
            what: format!("update {id} in place ({})", new.name),
            source: "this engine replaces containers instead".into(),
        })
    }
    /// Puts a container updated in place back to what it ran before, `fingerprint` (its
    /// digest and spec hash, [`crate::container::fingerprint`]), unless it runs that already.
    async fn revert(&self, id: &str, fingerprint: &str) -> Result<(), EngineError> {
        Err(EngineError::Engine {
            what: format!("revert {id} to {fingerprint}"),
            source: "this engine replaces containers instead".into(),
        })
    }
    /// `None` when no such container exists.
    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, EngineError>;
    /// Whether the engine's store holds an image (by id or pinned reference).
    async fn has_image(&self, reference: &str) -> Result<bool, EngineError>;
    /// The engine's own paths on the host, which no container may mount: its socket and
    /// its data root, with why.
    async fn own_paths(&self) -> Result<Vec<(String, &'static str)>, EngineError>;
    /// Creates a named volume with its labels unless it exists with them. A volume of that
    /// name that berth did not create for this partner's script is refused, never used.
    async fn ensure_volume(&self, volume: &Volume) -> Result<(), EngineError>;
    /// The managed named volumes, of one partner or all.
    async fn list_volumes(&self, partner: Option<&str>) -> Result<Vec<FoundVolume>, EngineError>;
    /// Creates a script's bridge network unless it exists with its labels; one of that
    /// name berth did not create is refused.
    async fn ensure_network(&self, network: &Network) -> Result<(), EngineError>;
    /// Removes a script's network if it exists and carries its labels; gone counts as
    /// removed.
    async fn remove_network(&self, network: &Network) -> Result<(), EngineError>;
    /// Pulls `registry/repository@digest`, showing progress on a terminal.
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), EngineError>;
    /// The id of the image a reference names; `None` when the engine holds none.
    async fn image_id(&self, reference: &str) -> Result<Option<String>, EngineError>;
    /// The image id of every container on the engine, managed or not, running or not: one
    /// list call.
    async fn images_in_use(&self) -> Result<BTreeSet<String>, EngineError>;
    /// Removes one reference of an image, never by force: another reference keeps the
    /// image, and an image a container uses stays.
    async fn remove_image(&self, reference: &str) -> Result<ImageRemoval, EngineError>;
    /// The engine's data root and the bytes free on its filesystem, for the disk guard.
    /// berth runs on the engine's host, so it measures the path itself; a data root it
    /// cannot see (berth in a container without it mounted) is an error, not a guess.
    async fn free_space(&self) -> Result<FreeSpace, EngineError>;
}

/// Where the engine keeps images and containers, and how much room is left there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSpace {
    pub data_root: String,
    /// Bytes an unprivileged writer may still use: the filesystem's reserve is left out.
    pub free: u64,
}
