//! `berth plan` and `berth apply`: one pass over one partner's host, from a directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::Timestamp;

use super::{cannot_run, render};
use crate::clock::SystemClock;
use crate::container::EngineKind;
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::manifest::{self, Repo};
use crate::plan::Overrides;
use crate::plan::gate::DEFAULT_MIN_FREE;
use crate::policy::HostPolicy;
use crate::probe::Http;
use crate::reconcile::{self, Effects, Memory, Target};
use crate::registry::Sources;
use crate::secret::{DirError, Keyring, SecretsDir};
use crate::state::StateDir;

/// What every host command needs to know.
#[derive(clap::Args)]
pub struct HostArgs {
    /// The manifest repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    #[arg(long)]
    pub partner: String,
    /// Act as if it were this instant (RFC 3339): windows are read at it.
    #[arg(long)]
    pub now: Option<Timestamp>,
    /// Where the journal and failed digests are kept.
    #[arg(long, default_value = "/var/lib/berth")]
    pub state_dir: PathBuf,
    /// Run steps even outside the update window or in a blackout.
    #[arg(long)]
    pub ignore_window: bool,
    /// Run steps even when the partner's service is not idle.
    #[arg(long)]
    pub ignore_idle: bool,
    /// The partner's host policy (`kind: HostPolicy`): what any script may do on this host.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The age identity file (`age-keygen` format) the partner's secrets are opened with.
    #[arg(long)]
    pub age_identity: Option<PathBuf>,
    /// Where secret files are written for the containers to mount: a directory on tmpfs.
    #[arg(long, default_value = "/run/berth/secrets")]
    pub secrets_dir: PathBuf,
    /// Act in this namespace only (as an agent.yaml `namespace:` does).
    #[arg(long, value_name = "NS", value_parser = super::namespace)]
    pub namespace: Option<String>,
    /// `docker` (one engine) or `swarm` (a Swarm manager; docs/swarm.md), as agent.yaml's
    /// `engine:`.
    #[arg(long, value_name = "ENGINE", default_value = "docker")]
    pub engine: EngineKind,
}

/// `--min-free`, in berth's size syntax.
pub(super) fn min_free(s: &str) -> Result<u64, String> {
    crate::manifest::syntax::parse_size(s, "min_free")
}

/// What this run opens secrets with and writes secret files to.
struct Sealing {
    keys: Option<Keyring>,
    dir: Result<SecretsDir, DirError>,
}

impl Sealing {
    /// An identity file that cannot be read is the host's mistake, not a script's: the run
    /// stops before it changes anything.
    fn of(args: &HostArgs) -> Result<Sealing, Exit> {
        Ok(Sealing {
            keys: load_keys(args.age_identity.as_deref())?,
            dir: SecretsDir::open(&args.secrets_dir),
        })
    }
}

/// The age identities, or the exit code after printing why they cannot be read.
pub(super) fn load_keys(path: Option<&Path>) -> Result<Option<Keyring>, Exit> {
    match path {
        Some(path) => Ok(Some(Keyring::load(path).map_err(|e| cannot_run(&e))?)),
        None => Ok(None),
    }
}

/// A validated repo, or the exit code after printing why not.
pub(super) fn load(repo_path: &Path) -> Result<Repo, Exit> {
    match manifest::validate(repo_path) {
        Ok((repo, diags)) if !diags.has_errors() => Ok(repo),
        Ok((_, diags)) => {
            eprint!("{}", diags.render_text(repo_path));
            eprintln!("berth: the manifests are invalid; nothing was changed");
            Err(Exit::Wrong)
        }
        Err(e) => Err(cannot_run(&e)),
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

/// The real effects on this host: its engine, the registries, the probes, and the clock
/// (shifted to `--now` when given).
type HostEffects<'a> = Effects<'a, DockerEngine, Sources<'a, DockerEngine>, Http, SystemClock>;

/// Connects to the engine and runs `f` with the host's effects on a runtime of its own.
fn on_host(
    now: Option<Timestamp>,
    kind: EngineKind,
    f: impl AsyncFnOnce(&HostEffects<'_>) -> Exit,
) -> Exit {
    runtime().block_on(async {
        let engine = match DockerEngine::connect_as(kind).await {
            Ok(e) => e,
            Err(e) => return cannot_run(&e),
        };
        let sources = Sources::new(Some(&engine));
        let fx = Effects {
            engine: &engine,
            sources: &sources,
            probe: &Http::default(),
            clock: &SystemClock::from_option(now),
        };
        f(&fx).await
    })
}

/// The host policy file, checked, or the exit code after printing why not.
pub(super) fn load_policy(path: Option<&Path>) -> Result<Option<HostPolicy>, Exit> {
    match path.map(crate::policy::load).transpose() {
        Ok(p) => Ok(p),
        Err(diags) => {
            eprint!("{}", diags.render_text(Path::new("")));
            eprintln!("berth: the host policy is invalid; nothing was changed");
            Err(Exit::Wrong)
        }
    }
}

impl HostArgs {
    fn target<'a>(
        &'a self,
        repo: &'a Repo,
        policy: Option<&'a HostPolicy>,
        sealing: &'a Sealing,
        min_free: u64,
    ) -> Target<'a> {
        Target {
            repo,
            partner: &self.partner,
            revision: "worktree",
            overrides: Overrides {
                ignore_window: self.ignore_window,
                ignore_idle: self.ignore_idle,
            },
            state_dir: &self.state_dir,
            config_dirs: vec![],
            own_files: self
                .policy
                .iter()
                .chain(&self.age_identity)
                .chain([&self.secrets_dir])
                .cloned()
                .collect(),
            policy,
            keys: sealing.keys.as_ref(),
            secrets_dir: Some(&sealing.dir),
            min_free,
            engine: self.engine,
        }
    }
}

/// `berth plan`: what apply would do now; changes nothing.
pub fn plan(args: &HostArgs, format: render::PlanFormat, exit_code: bool) -> Exit {
    let (repo, policy) =
        match load(&args.repo).and_then(|r| Ok((r, load_policy(args.policy.as_deref())?))) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
    let memory = match Memory::read(&args.state_dir, &args.partner) {
        Ok(m) => m,
        Err(e) => return cannot_run(&e),
    };
    let sealing = match Sealing::of(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    on_host(args.now, args.engine, async |fx| {
        // `plan` pulls nothing, so the disk guard's `min_free` is not read.
        let target = args.target(&repo, policy.as_ref(), &sealing, DEFAULT_MIN_FREE);
        let plan = match reconcile::plan(fx, &target, memory).await {
            Ok(p) => p,
            Err(e) => return cannot_run(&e),
        };
        out!("{}", render::plan(&plan, format));
        if reconcile::has_unresolved(&plan) {
            Exit::CannotRun
        } else if reconcile::has_refusals(&plan) {
            Exit::Wrong
        } else if exit_code && plan.changes().next().is_some() {
            Exit::Pending
        } else {
            Exit::Ok
        }
    })
}

/// `berth apply`: recover, plan, carry the plan out, pulling only what leaves `min_free`
/// bytes free on the engine's data root.
pub fn apply(args: &HostArgs, min_free: u64) -> Exit {
    let (repo, policy) =
        match load(&args.repo).and_then(|r| Ok((r, load_policy(args.policy.as_deref())?))) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
    let state = match StateDir::open(&args.state_dir) {
        Ok(s) => s,
        Err(e) => return cannot_run(&e),
    };
    let sealing = match Sealing::of(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    on_host(args.now, args.engine, async |fx| {
        let target = args.target(&repo, policy.as_ref(), &sealing, min_free);
        match reconcile::converge(fx, &state, &target, &AtomicBool::new(false)).await {
            Ok(report) => {
                for line in &report.recovered {
                    outln!("recovered {line}");
                }
                out!(
                    "{}",
                    render::apply(&report.plan, &report.reports, &report.pruned)
                );
                if let Some(e) = &report.prune_error {
                    eprintln!("berth: could not prune images: {e}");
                }
                report.exit()
            }
            Err(e) => cannot_run(&e),
        }
    })
}
