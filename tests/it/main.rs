//! berth's integration tests, in one binary: the built `berth` against the machine's real
//! Docker engine, real git repositories, a real OCI registry, `moto_server` for ECR, and
//! loopback HTTP servers. One module per area; `common` is the harness they share, and
//! `snapshots/` holds what berth prints, checked with `insta`.

mod common;

mod agent;
mod agent_edges;
mod apply;
mod components;
mod disk;
mod ecr;
mod fleet;
mod floor;
mod hostile;
mod images;
mod namespaces;
mod notify;
mod package;
mod policy;
mod registry;
mod report;
mod requires;
mod secrets;
mod source;
mod ssh;
mod swarm;
mod swarm_cluster;
mod validate;
mod volumes;
mod waves;
mod windows;
