//! One pass over one partner's host: recover what an interrupted run left, observe, plan,
//! carry the plan out. `berth apply` is one pass over a directory; the agent runs passes
//! over the revision its source accepted.

use std::sync::atomic::AtomicBool;

use jiff::Timestamp;

use crate::apply::state::{StateDir, StateError};
use crate::apply::{ApplyError, CutOverGuard, Executor, Outcome, StepReport};
use crate::cli::exit;
use crate::manifest::{Idle, Repo};
use crate::plan::{self, Deferral, Held, Idleness, Observed, Overrides, Plan};
use crate::probe::{self, Http};
use crate::resolve::{self, CachedTags, Sources};
use crate::runtime::{DockerEngine, Engine, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("no partner `{0}` in the manifests")]
    NoPartner(String),
    #[error(transparent)]
    Engine(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot recover an interrupted update")]
    Recover(#[source] ApplyError),
}

/// What a pass is about.
pub struct Target<'a> {
    pub repo: &'a Repo,
    pub partner: &'a str,
    pub revision: &'a str,
    pub now: Option<Timestamp>,
    pub overrides: Overrides,
}

/// What a pass did.
pub struct PassReport {
    pub recovered: Vec<String>,
    pub plan: Plan,
    pub reports: Vec<StepReport>,
}

impl PassReport {
    /// design.md §7: 3 when a script could not be resolved or pulled, 1 when a step failed
    /// or was rolled back, else 0 (deferred steps included).
    pub fn exit_code(&self) -> i32 {
        let cannot_run = self.reports.iter().any(|r| match &r.outcome {
            Outcome::Deferred { reason, .. } => reason == "unresolved",
            Outcome::NotPulled { .. } => true,
            _ => false,
        });
        let wrong = self.reports.iter().any(|r| {
            matches!(
                r.outcome,
                Outcome::Failed { .. } | Outcome::RolledBack { .. }
            )
        });
        if cannot_run {
            exit::CANNOT_RUN
        } else if wrong {
            exit::WRONG
        } else {
            exit::OK
        }
    }
}

/// Re-asks the partner's service right before each cut-over.
struct IdleGuard<'a> {
    http: &'a Http,
    idle: Option<&'a Idle>,
}

impl CutOverGuard for IdleGuard<'_> {
    async fn check(&self) -> Result<(), Deferral> {
        let Some(idle) = self.idle else {
            return Ok(());
        };
        match probe::idleness(self.http, idle).await {
            Idleness::NotIdle(detail) => Err(Deferral::Busy { detail }),
            _ => Ok(()),
        }
    }
}

/// Observes the host and plans; asks the idle gate only when a step would need it.
pub async fn plan(
    engine: &DockerEngine,
    sources: &Sources<'_, DockerEngine>,
    http: &Http,
    target: &Target<'_>,
    held: Vec<Held>,
) -> Result<Plan, PassError> {
    let partner = &target
        .repo
        .partners
        .get(target.partner)
        .ok_or_else(|| PassError::NoPartner(target.partner.to_owned()))?
        .doc;
    let containers = engine.list_managed(target.partner).await?;
    let tags = CachedTags::new(sources);
    let desired = resolve::desired(
        target.repo,
        partner,
        target.revision,
        &tags,
        target.overrides,
    )
    .await;
    let now = target.now.unwrap_or_else(Timestamp::now);
    let mut observed = Observed {
        containers,
        held,
        idle: Idleness::Unknown,
    };
    let mut plan = plan::plan(&desired, &observed, now);
    if let Some(idle) = &partner.idle
        && !target.overrides.ignore_idle
        && plan.wants_idle_probe()
    {
        observed.idle = probe::idleness(http, idle).await;
        plan = plan::plan(&desired, &observed, now);
    }
    Ok(plan)
}

/// Recovers, plans and executes one pass.
pub async fn converge(
    engine: &DockerEngine,
    state: &StateDir,
    target: &Target<'_>,
    stopping: &AtomicBool,
) -> Result<PassReport, PassError> {
    let idle = target
        .repo
        .partners
        .get(target.partner)
        .and_then(|p| p.doc.idle.as_ref())
        .filter(|_| !target.overrides.ignore_idle);
    let http = Http::default();
    let guard = IdleGuard { http: &http, idle };
    let sources = Sources::new(Some(engine));
    let executor = Executor {
        engine,
        sources: &sources,
        probe: &http,
        guard: &guard,
        state,
        stopping,
    };
    let recovered = executor
        .recover(target.partner)
        .await
        .map_err(PassError::Recover)?;
    let plan = plan(engine, &sources, &http, target, state.held()?).await?;
    let reports = executor.execute(&plan).await;
    Ok(PassReport {
        recovered,
        plan,
        reports,
    })
}
