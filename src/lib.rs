//! berth keeps the container hosts of a federation in the state that a git repository of
//! YAML manifests declares. See `design.md` for the contract this crate implements.

pub mod agent;
pub mod apply;
pub mod cli;
pub mod diag;
pub mod diff;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod probe;
pub mod resolve;
pub mod runtime;
pub mod source;
pub mod window;
