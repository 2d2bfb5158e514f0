//! berth keeps the container hosts of a federation in the state that a git repository of
//! YAML manifests declares. `docs/architecture.md` draws the modules and how one pass flows
//! through them; the layering test below keeps their dependencies pointing one way.

// Leaves: no imports of berth's own.
pub mod clock;
pub mod diag;
pub mod durable;
pub mod exit;
pub mod http;

// What things are: pure data and rules.
pub mod container;
pub mod floor;
pub mod image;
pub mod lock;
pub mod manifest;
pub mod policy;
pub mod secret;
pub mod window;

// Deciding: pure functions over that data.
pub mod agenda;
pub mod diff;
pub mod plan;
pub mod prune;
pub mod resolve;
pub mod rollout;

// Effects behind traits berth owns.
pub mod engine;
pub mod probe;
pub mod registry;
pub mod source;
pub mod state;

// Acting: the executor and the pass that drives everything.
pub mod execute;
pub mod notify;
pub mod reconcile;
pub mod report;
pub mod volumes;

// Edges: the agent and the command line.
pub mod agent;
pub mod cli;
pub mod fleet;

#[cfg(test)]
mod layering;
