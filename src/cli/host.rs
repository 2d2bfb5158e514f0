//! `berth plan` and `berth apply`: one pass over one partner's host.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::{chain, exit, render};
use crate::apply::state::{self, StateDir};
use crate::apply::{CutOverGuard, Executor, Outcome};
use crate::manifest::{self, Idle, Repo};
use crate::plan::{self, Deferral, Idleness, Observed, Overrides, Plan};
use crate::probe::{self, Http};
use crate::resolve::{self, CachedTags, Sources};
use crate::runtime::{DockerEngine, Engine};

/// What every host command needs to know.
pub struct HostArgs {
    pub repo: PathBuf,
    pub partner: String,
    pub now: Option<Timestamp>,
    pub state_dir: PathBuf,
    pub overrides: Overrides,
}

/// Re-asks the partner's service right before each cut-over.
struct IdleGuard<'a> {
    idle: Option<&'a Idle>,
}

impl CutOverGuard for IdleGuard<'_> {
    async fn check(&self) -> Result<(), Deferral> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        match probe::idleness(&Http, idle).await {
            Idleness::NotIdle(detail) => Err(Deferral::Busy { detail }),
            _ => Ok(()),
        }
    }
}

/// A validated repo, or the exit code after printing why not.
pub(super) fn load(repo_path: &Path) -> Result<Repo, i32> {
    match manifest::validate(repo_path) {
        Ok((repo, diags)) if !diags.has_errors() => Ok(repo),
        Ok((_, diags)) => {
            eprint!("{}", diags.render_text(repo_path));
            eprintln!("berth: the manifests are invalid; nothing was changed");
            Err(exit::WRONG)
        }
        Err(e) => Err(super::cannot_run(&e)),
    }
}

/// Observes the host and plans; asks the idle gate only when a step would need it.
async fn make_plan(
    engine: &DockerEngine,
    sources: &Sources<'_, DockerEngine>,
    repo: &Repo,
    args: &HostArgs,
    held: Vec<plan::Held>,
) -> Result<Plan, i32> {
    let Some(partner) = repo.partners.get(&args.partner) else {
        eprintln!(
            "berth: no partner `{}` in {}",
            args.partner,
            repo.root.display()
        );
        return Err(exit::CANNOT_RUN);
    };
    let partner = &partner.doc;
    let containers = engine
        .list_managed(&args.partner)
        .await
        .map_err(|e| super::cannot_run(&e))?;
    let tags = CachedTags::new(sources);
    let desired = resolve::desired(repo, partner, "worktree", &tags, args.overrides).await;
    let now = args.now.unwrap_or_else(Timestamp::now);
    let mut observed = Observed {
        containers,
        held,
        idle: Idleness::Unknown,
    };
    let mut plan = plan::plan(&desired, &observed, now);
    if let Some(idle) = &partner.idle
        && !args.overrides.ignore_idle
        && plan.wants_idle_probe()
    {
        observed.idle = probe::idleness(&Http, idle).await;
        plan = plan::plan(&desired, &observed, now);
    }
    Ok(plan)
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

/// `berth plan`: what apply would do now; changes nothing.
pub fn plan(args: &HostArgs, format: render::PlanFormat, exit_code: bool) -> i32 {
    let repo = match load(&args.repo) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let held = match state::read_held(&args.state_dir) {
        Ok(h) => h,
        Err(e) => return super::cannot_run(&e),
    };
    runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return super::cannot_run(&e),
        };
        let sources = Sources::new(Some(&engine));
        let plan = match make_plan(&engine, &sources, &repo, args, held).await {
            Ok(p) => p,
            Err(code) => return code,
        };
        out!("{}", render::plan(&plan, format));
        if plan
            .steps
            .iter()
            .any(|s| matches!(&s.gate, plan::Gate::Deferred(Deferral::Unresolved { .. })))
        {
            exit::CANNOT_RUN
        } else if exit_code && plan.changes().next().is_some() {
            exit::PENDING
        } else {
            exit::OK
        }
    })
}

/// `berth apply`: recover, plan, carry the plan out.
pub fn apply(args: &HostArgs) -> i32 {
    let repo = match load(&args.repo) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let state = match StateDir::open(&args.state_dir) {
        Ok(s) => s,
        Err(e) => return super::cannot_run(&e),
    };
    runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return super::cannot_run(&e),
        };
        let idle = repo
            .partners
            .get(&args.partner)
            .and_then(|p| p.doc.idle.as_ref())
            .filter(|_| !args.overrides.ignore_idle);
        let guard = IdleGuard { idle };
        let sources = Sources::new(Some(&engine));
        let executor = Executor {
            engine: &engine,
            sources: &sources,
            probe: &Http,
            guard: &guard,
            state: &state,
        };
        match executor.recover(&args.partner).await {
            Ok(lines) => lines.iter().for_each(|l| outln!("recovered {l}")),
            Err(e) => {
                eprintln!("berth: cannot recover an interrupted update: {}", chain(&e));
                return exit::CANNOT_RUN;
            }
        }
        let held = match state.held() {
            Ok(h) => h,
            Err(e) => return super::cannot_run(&e),
        };
        let plan = match make_plan(&engine, &sources, &repo, args, held).await {
            Ok(p) => p,
            Err(code) => return code,
        };
        let reports = executor.execute(&plan).await;
        out!("{}", render::apply(&plan, &reports));
        let unresolved = reports.iter().any(
            |r| matches!(&r.outcome, Outcome::Deferred { reason, .. } if reason == "unresolved"),
        );
        let failed = reports.iter().any(|r| {
            matches!(
                r.outcome,
                Outcome::Failed { .. } | Outcome::RolledBack { .. }
            )
        });
        let not_pulled = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::NotPulled { .. }));
        if unresolved || not_pulled {
            exit::CANNOT_RUN
        } else if failed {
            exit::WRONG
        } else {
            exit::OK
        }
    })
}
