//! The container engine, behind the narrow [`Engine`] trait berth owns. It speaks container
//! specs and labels only ([`crate::container`]): nothing here knows of manifests, resolution
//! or plans. [`docker`] is the real engine; the in-memory fake in `fake` scripts failures
//! and crashes for the executor's fault tests.

pub mod docker;
#[cfg(test)]
pub mod fake;

pub use docker::DockerEngine;

use crate::container::{NewContainer, ObservedContainer};
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
    /// `None` when no such container exists.
    async fn find(&self, name_or_id: &str) -> Result<Option<Found>, EngineError>;
    /// Whether the engine's store holds an image (by id or pinned reference).
    async fn has_image(&self, reference: &str) -> Result<bool, EngineError>;
    /// Pulls `registry/repository@digest`, showing progress on a terminal.
    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), EngineError>;
}
