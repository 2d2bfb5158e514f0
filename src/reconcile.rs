//! One pass over one partner's host, the product's core: recover what an interrupted run
//! left, observe the host, resolve what should run, plan, carry the plan out. It flows one
//! way — manifests → resolution ([`crate::resolve`]) → plan ([`crate::plan`]) → execution
//! ([`crate::execute`]) → engine — and is generic over every effect it acts through
//! (engine, tag source, probe, clock), so `berth plan`, `berth apply`, `berth windows` and
//! the agent all run this same code, and tests can run it against fakes.
//!
//! Each pass records, in the state dir, the named volumes the partner's scripts declare
//! ([`crate::volumes::declared`]), which `berth volumes` reads. After its steps it removes
//! the images berth pulled that no script runs or would roll back to ([`crate::prune`]).
//!
//! A pass also says when it wants the next one ([`PassReport::next_wake`]): when a window
//! opens for steps waiting on it, or soon for steps waiting on a busy service.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::clock::Clock;
use crate::engine::{Engine, EngineError, ImageRemoval};
use crate::execute::{ExecuteError, Executor, Outcome, StepReport};
use crate::exit::{Exit, chain};
use crate::floor::{Floor, Guarded};
use crate::image::TagSource;
use crate::manifest::{Partner, Repo};
use crate::plan::{self, Deferral, Gate, Held, Idleness, Observed, Overrides, Plan, Policy};
use crate::policy::{HostPolicy, Rules};
use crate::probe::{self, Probe};
use crate::prune;
use crate::resolve::{self, CachedTags, Desired};
use crate::secret::{DirError, Keyring, SecretsDir};
use crate::state::{StateDir, StateError};
use crate::window::{Schedule, WindowState};

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("no partner `{0}` in the manifests")]
    NoPartner(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot recover an interrupted update")]
    Recover(#[source] ExecuteError),
}

/// What a pass is about.
pub struct Target<'a> {
    pub repo: &'a Repo,
    pub partner: &'a str,
    pub revision: &'a str,
    pub overrides: Overrides,
    /// berth's own state directory: no container mounts it or reads an env file from it.
    pub state_dir: &'a Path,
    /// berth's configuration directories besides `/etc/berth` (the agent's `--config`
    /// directory): no container mounts them, and the files directly in them are no env files.
    pub config_dirs: Vec<std::path::PathBuf>,
    /// berth's own files and directories wherever they are (the git token, the SSH key, the
    /// policy, the secrets dir): no container mounts or reads them.
    pub own_files: Vec<std::path::PathBuf>,
    /// The partner's host policy, if it has one.
    pub policy: Option<&'a HostPolicy>,
    /// The host's age identities, to open the partner's secrets with.
    pub keys: Option<&'a Keyring>,
    /// Where secret files go, as checked; `None` for a run that writes none (`windows`).
    pub secrets_dir: Option<&'a Result<SecretsDir, DirError>>,
    /// Bytes a pull must leave free on the engine's data root (`min_free`).
    pub min_free: u64,
    /// One engine or a swarm: what the rules let a container ask for.
    pub engine: crate::container::EngineKind,
}

impl Target<'_> {
    fn partner(&self) -> Result<&Partner, PassError> {
        self.repo
            .partners
            .get(self.partner)
            .map(|p| &p.doc)
            .ok_or_else(|| PassError::NoPartner(self.partner.to_owned()))
    }
}

/// The effects a pass acts through.
pub struct Effects<'a, E: Engine, T: TagSource, P: Probe, C: Clock> {
    pub engine: &'a E,
    pub sources: &'a T,
    pub probe: &'a P,
    pub clock: &'a C,
}

/// A partner's update windows, read in its zone (after fleet defaults).
pub fn schedule(repo: &Repo, partner: &Partner) -> Schedule {
    Schedule::from_manifest(
        repo.timezone(partner),
        repo.windows(partner),
        &partner.blackouts,
    )
}

/// The gates a partner's steps pass through.
pub fn policy(repo: &Repo, partner: &Partner, overrides: Overrides, rules: Rules) -> Policy {
    Policy {
        schedule: schedule(repo, partner),
        has_idle_gate: partner.idle.is_some(),
        overrides,
        rules,
        requires: partner
            .scripts
            .iter()
            .filter_map(|o| repo.scripts.get(o.script.as_str()))
            .filter(|s| !s.doc.requires.is_empty())
            .map(|s| (s.doc.name.value.clone(), s.doc.requires.clone()))
            .collect(),
    }
}

/// A host path as a mount or a read of it would find it.
fn guard(path: &Path, why: &str) -> Guarded {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    Guarded {
        path: resolve::resolve_host_path(&path.display().to_string())
            .display()
            .to_string(),
        why: why.to_owned(),
    }
}

/// The floor as far as it is known without asking the engine: the system's filesystems,
/// the engines' default paths, berth's own directories and files (its registry
/// credentials too).
fn own_floor(target: &Target<'_>) -> Floor {
    let config = "berth's own configuration: its git token, SSH key and age identity";
    let state = "berth's own state";
    let file = "one of berth's own files: its credentials, policy or secret files";
    let config_dirs: Vec<Guarded> = std::iter::once(Path::new("/etc/berth"))
        .chain(target.config_dirs.iter().map(|d| d.as_path()))
        .map(|d| guard(d, config))
        .collect();
    let unreadable: Vec<Guarded> = std::iter::once(guard(target.state_dir, state))
        .chain(target.own_files.iter().map(|f| guard(f, file)))
        .chain(
            crate::registry::credential_paths()
                .iter()
                .map(|f| guard(f, "berth's registry credentials")),
        )
        .chain(
            crate::floor::ENGINE_DEFAULTS
                .iter()
                .map(|(p, why)| guard(Path::new(p), why)),
        )
        .collect();
    Floor {
        guarded: crate::floor::SYSTEM
            .iter()
            .map(|(p, why)| guard(Path::new(p), why))
            .chain(config_dirs.iter().cloned())
            .chain(unreadable.iter().cloned())
            .collect(),
        unreadable,
        config_dirs,
    }
}

/// Whether any of the partner's scripts bind-mounts a host path or reads an env file.
fn names_host_paths(repo: &Repo, partner: &Partner) -> bool {
    partner.scripts.iter().any(|opt| {
        !opt.env_files.is_empty()
            || repo.scripts.get(opt.script.as_str()).is_some_and(|s| {
                s.doc.parts().iter().any(|p| {
                    p.container
                        .volumes
                        .iter()
                        .any(|v| crate::container::host_bind(v).is_some())
                })
            })
    })
}

/// How soon a pass retries steps that waited for a busy service.
pub const BUSY_RETRY: Duration = Duration::from_secs(30);

/// What a pass did.
pub struct PassReport {
    pub recovered: Vec<String>,
    pub plan: Plan,
    pub reports: Vec<StepReport>,
    /// The images removed after the steps, and those that could not be.
    pub pruned: Vec<Pruned>,
    /// Why no image could be considered for removal at all (the engine or the state dir
    /// failed after the steps).
    pub prune_error: Option<String>,
}

/// An image berth pulled and removed after a pass, or meant to and could not (the next
/// pass tries again). Neither changes the pass's exit code: a full disk is the disk
/// guard's to prevent, and a failed removal hurts nothing that runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub reference: String,
    pub why: String,
    pub error: Option<String>,
}

/// When a pass wants the next one, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    pub at: Timestamp,
    pub why: &'static str,
}

impl PassReport {
    /// 3 when a script could not be resolved or pulled, 1 when a step failed, was rolled
    /// back or was refused by the floor or the policy, else 0 (deferred steps included).
    pub fn exit(&self) -> Exit {
        self.reports
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Deferred { reason, .. } if reason == "unresolved" => Exit::CannotRun,
                Outcome::NotPulled { .. } => Exit::CannotRun,
                Outcome::Failed {
                    could_not_run: true,
                    ..
                }
                | Outcome::RolledBack {
                    could_not_run: true,
                    ..
                } => Exit::CannotRun,
                Outcome::Failed { .. } | Outcome::RolledBack { .. } | Outcome::Refused { .. } => {
                    Exit::Wrong
                }
                _ => Exit::Ok,
            })
            .fold(Exit::Ok, Exit::worst)
    }

    /// The earliest moment a pass could do what this one had to leave: the next window
    /// opening for steps that waited on the window or a blackout, [`BUSY_RETRY`] from
    /// `now` for steps that waited on a busy service. `None`: nothing waits on time, so the
    /// interval decides.
    pub fn next_wake(&self, now: Timestamp) -> Option<Wake> {
        let deferred = |pred: fn(&str) -> bool| {
            self.reports.iter().any(|r| {
                r.action != plan::Action::Keep
                    && matches!(&r.outcome, Outcome::Deferred { reason, .. } if pred(reason))
            })
        };
        let busy = deferred(|r| r == "busy").then(|| Wake {
            at: now
                .checked_add(SignedDuration::try_from(BUSY_RETRY).expect("30 s fits"))
                .unwrap_or(now),
            why: "retry after busy",
        });
        let window = deferred(|r| r == "window" || r == "blackout")
            .then(|| {
                let schedule = &self.plan.policy.schedule;
                let after = match schedule.state(now) {
                    WindowState::Open { closes } => closes,
                    _ => now,
                };
                schedule.next_open(after)
            })
            .flatten()
            .map(|at| Wake {
                at,
                why: "window opens",
            });
        [busy, window].into_iter().flatten().min_by_key(|w| w.at)
    }
}

/// What the state directory remembers that the plan needs: digests held after failing
/// health, and scripts with a replace in flight.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub held: Vec<Held>,
    pub in_flight: std::collections::BTreeSet<String>,
}

impl Memory {
    /// Read without the lock, for commands that change nothing.
    pub fn read(state_dir: &std::path::Path, partner: &str) -> Result<Memory, StateError> {
        Ok(Memory {
            held: crate::state::read_held(state_dir)?,
            in_flight: crate::state::read_journals(state_dir, partner)?
                .into_iter()
                .map(|r| r.script)
                .collect(),
        })
    }

    /// From the locked state directory, after recovery.
    fn of(state: &StateDir, partner: &str) -> Result<Memory, StateError> {
        Ok(Memory {
            held: state.held()?,
            in_flight: state
                .journals(partner)?
                .into_iter()
                .map(|r| r.script)
                .collect(),
        })
    }
}

/// Observes the host and plans; asks the services scripts require, then the idle gate, only
/// when a step would need them.
pub async fn plan<E: Engine, T: TagSource, P: Probe, C: Clock>(
    fx: &Effects<'_, E, T, P, C>,
    target: &Target<'_>,
    memory: Memory,
) -> Result<Plan, PassError> {
    Ok(plan_desired(fx, target, memory).await?.0)
}

/// [`plan`], with the desired state it planned towards.
async fn plan_desired<E: Engine, T: TagSource, P: Probe, C: Clock>(
    fx: &Effects<'_, E, T, P, C>,
    target: &Target<'_>,
    memory: Memory,
) -> Result<(Plan, Desired), PassError> {
    let partner = target.partner()?;
    let containers = fx.engine.list_managed(target.partner).await?;
    let tags = CachedTags::new(fx.sources);
    let mut rules = Rules {
        floor: own_floor(target),
        host: target.policy.cloned(),
        engine: target.engine,
    };
    // The engine's own paths (wherever its socket and data root are) matter only to
    // scripts that name host paths: without any, the engine is not asked for them.
    if names_host_paths(target.repo, partner) {
        for (path, why) in fx.engine.own_paths().await? {
            let g = guard(Path::new(&path), why);
            rules.floor.guarded.push(g.clone());
            rules.floor.unreadable.push(g);
        }
    }
    let mut desired = resolve::desired(
        target.repo,
        partner,
        target.revision,
        &tags,
        &rules,
        target.keys,
    )
    .await;
    if let Some(Err(why)) = target.secrets_dir {
        without_secret_files(&mut desired, why);
    }
    let policy = policy(target.repo, partner, target.overrides, rules);
    let now = fx.clock.now();
    let mut observed = Observed {
        containers,
        held: memory.held,
        in_flight: memory.in_flight,
        idle: Idleness::Unknown,
        requires: Default::default(),
    };
    let mut plan = plan::plan(&desired, &observed, &policy, now);
    let asked: Vec<String> = plan
        .wants_requires()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !asked.is_empty() {
        for script in asked {
            let answer = probe::readiness(fx.probe, &policy.requires[&script]).await;
            observed.requires.insert(script, answer);
        }
        plan = plan::plan(&desired, &observed, &policy, now);
    }
    if let Some(idle) = &partner.idle
        && plan.wants_idle_probe()
    {
        observed.idle = match probe::idleness(fx.probe, idle).await {
            Idleness::NotIdle(why) => Idleness::NotIdle(redactions(&desired).apply(&why)),
            answer => answer,
        };
        plan = plan::plan(&desired, &observed, &policy, now);
    }
    Ok((plan, desired))
}

/// Without a usable secrets directory, the scripts with secret files cannot run: they are
/// left as they are, like any script that cannot be resolved.
fn without_secret_files(desired: &mut Desired, why: &DirError) {
    let (blocked, fine) = std::mem::take(&mut desired.containers)
        .into_iter()
        .partition(|d| !d.spec.secret_files.is_empty());
    desired.containers = fine;
    for d in blocked {
        desired.unresolved.insert(d.script, chain(why));
    }
}

/// Every value error text about these containers must not show.
fn redactions(desired: &Desired) -> crate::secret::Redact {
    desired
        .containers
        .iter()
        .fold(Default::default(), |all, d| {
            all.union(&d.spec.unsealed.redact)
        })
}

/// Recovers, plans and executes one pass.
pub async fn converge<E: Engine, T: TagSource, P: Probe, C: Clock>(
    fx: &Effects<'_, E, T, P, C>,
    state: &StateDir,
    target: &Target<'_>,
    stopping: &AtomicBool,
) -> Result<PassReport, PassError> {
    let partner = target.partner()?;
    let executor = Executor {
        engine: fx.engine,
        sources: fx.sources,
        probe: fx.probe,
        clock: fx.clock,
        idle: partner.idle.as_ref(),
        state,
        secrets: target.secrets_dir.and_then(|d| d.as_ref().ok()),
        stopping,
        min_free: target.min_free,
    };
    let recovered = executor
        .recover(target.partner)
        .await
        .map_err(PassError::Recover)?;
    let (plan, desired) = plan_desired(fx, target, Memory::of(state, target.partner)?).await?;
    // Recorded before any step runs, so a volume the executor creates is already on
    // record as declared (`berth volumes`), even if the pass is cut short.
    let previous = state.declared_volumes(target.partner)?;
    state.record_volumes(
        target.partner,
        crate::volumes::declared(&desired, previous.as_deref()),
    )?;
    let reports = executor.execute(&plan).await;
    // After an engine or state-dir failure what runs is uncertain, and after SIGTERM the
    // next pass has time: either way the images wait for the next pass.
    let failed = reports.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Failed {
                could_not_run: true,
                ..
            } | Outcome::RolledBack {
                could_not_run: true,
                ..
            }
        )
    });
    let (pruned, prune_error) = if failed || stopping.load(std::sync::atomic::Ordering::SeqCst) {
        (Vec::new(), None)
    } else {
        match prune_images(fx.engine, state, &plan, &reports).await {
            Ok(pruned) => (pruned, None),
            Err(e) => {
                let error = chain(&e);
                tracing::warn!(error = %error, "could not prune images");
                (Vec::new(), Some(error))
            }
        }
    };
    Ok(PassReport {
        recovered,
        plan,
        reports,
        pruned,
        prune_error,
    })
}

/// Records what each of the partner's containers runs now, and removes the images berth
/// pulled for it that [`prune::decide`] lets go, each by the reference berth pulled.
async fn prune_images<E: Engine>(
    engine: &E,
    state: &StateDir,
    plan: &Plan,
    reports: &[StepReport],
) -> Result<Vec<Pruned>, PassError> {
    let partner = plan.partner.as_str();
    // A pass whose steps touched no container still sees what the plan saw: a no-op pass
    // lists the containers once.
    let touched = reports.iter().any(|r| {
        !matches!(
            r.outcome,
            Outcome::Unchanged
                | Outcome::Deferred { .. }
                | Outcome::Refused { .. }
                | Outcome::NotPulled { .. }
        )
    });
    let observed = if touched {
        engine.list_managed(partner).await?
    } else {
        plan.steps
            .iter()
            .filter_map(|s| s.observed())
            .cloned()
            .collect()
    };
    let all = state.images()?;
    let mut mine = all.partners.get(partner).cloned().unwrap_or_default();
    mine.ran = prune::ran(partner, &mine.ran, &observed, plan);
    let kept_by_others: BTreeSet<String> = all
        .partners
        .iter()
        .filter(|(p, _)| p.as_str() != partner)
        .flat_map(|(_, i)| &i.ran)
        .flat_map(|r| std::iter::once(&r.running).chain(&r.previous))
        .cloned()
        .collect();
    let nothing = BTreeSet::new();
    let mut host = prune::Host {
        in_use: &nothing,
        kept_by_others: &kept_by_others,
    };
    // Only when there is something to remove are all the engine's containers listed.
    let in_use;
    let mut decided = prune::decide(&mine, &host, plan);
    if !decided.is_empty() {
        in_use = engine.images_in_use().await?;
        host.in_use = &in_use;
        decided = prune::decide(&mine, &host, plan);
    }
    let mut out = Vec::new();
    for p in decided {
        let why = p.why.to_string();
        let forget = match engine.remove_image(&p.reference).await {
            Ok(ImageRemoval::Removed | ImageRemoval::Untagged) => {
                tracing::info!(image = %p.reference, why = %why, "pruned");
                out.push(Pruned {
                    reference: p.reference.clone(),
                    why,
                    error: None,
                });
                true
            }
            Ok(ImageRemoval::Gone) => true,
            Ok(ImageRemoval::InUse) => {
                tracing::info!(image = %p.reference, "not pruned: a container uses it");
                false
            }
            Err(e) => {
                let error = chain(&e);
                tracing::warn!(image = %p.reference, error = %error, "could not prune");
                out.push(Pruned {
                    reference: p.reference.clone(),
                    why,
                    error: Some(error),
                });
                false
            }
        };
        if forget {
            mine.pulled.retain(|q| q.reference != p.reference);
        }
    }
    state.record_images(partner, mine)?;
    Ok(out)
}

/// Whether a plan has a step that could not be resolved (`plan` then exits 3).
pub fn has_unresolved(plan: &Plan) -> bool {
    plan.steps
        .iter()
        .any(|s| matches!(&s.gate, Gate::Deferred(Deferral::Unresolved { .. })))
}

/// Whether a plan has a step the floor or the policy refuses (`plan` then exits 1).
pub fn has_refusals(plan: &Plan) -> bool {
    plan.steps
        .iter()
        .any(|s| matches!(&s.gate, Gate::Deferred(Deferral::Refused { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    /// Saturdays 01:00-05:00 UTC.
    fn report(outcomes: Vec<(Action, Outcome)>) -> PassReport {
        PassReport {
            recovered: vec![],
            plan: Plan {
                partner: "p".into(),
                revision: "r".into(),
                now: "2026-11-21T00:00:00Z".parse().unwrap(),
                steps: vec![],
                policy: crate::plan::gate::saturday_mornings(),
                networks_to_remove: vec![],
            },
            reports: outcomes
                .into_iter()
                .map(|(action, outcome)| StepReport {
                    script: "s".into(),
                    component: None,
                    action,
                    reason: String::new(),
                    outcome,
                    millis: 0,
                })
                .collect(),
            pruned: vec![],
            prune_error: None,
        }
    }

    fn deferred(reason: &str) -> Outcome {
        Outcome::Deferred {
            reason: reason.into(),
            detail: String::new(),
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    #[test]
    fn a_step_waiting_for_the_window_wakes_the_agent_when_it_opens() {
        let r = report(vec![(Action::Replace, deferred("window"))]);
        assert_eq!(
            r.next_wake(at("2026-11-21T00:59:00Z")),
            Some(Wake {
                at: at("2026-11-21T01:00:00Z"),
                why: "window opens"
            })
        );
        // Deferred as window-ending inside an open window: the next window, not this one.
        assert_eq!(
            r.next_wake(at("2026-11-21T04:59:40Z")).map(|w| w.at),
            Some(at("2026-11-28T01:00:00Z"))
        );
        let blackout = report(vec![(Action::Create, deferred("blackout"))]);
        assert_eq!(
            blackout.next_wake(at("2026-11-20T12:00:00Z")).map(|w| w.at),
            Some(at("2026-11-21T01:00:00Z"))
        );
    }

    #[test]
    fn a_busy_service_is_asked_again_soon_and_the_earliest_wake_wins() {
        let now = at("2026-11-21T02:00:00Z");
        let busy = report(vec![
            (Action::Replace, deferred("busy")),
            (Action::Create, deferred("window")),
        ]);
        assert_eq!(
            busy.next_wake(now),
            Some(Wake {
                at: at("2026-11-21T02:00:30Z"),
                why: "retry after busy"
            })
        );
    }

    #[test]
    fn nothing_waiting_on_time_leaves_it_to_the_interval() {
        let now = at("2026-11-21T02:00:00Z");
        for r in [
            report(vec![]),
            report(vec![(Action::Keep, Outcome::Unchanged)]),
            report(vec![(Action::Replace, Outcome::Done)]),
            report(vec![(Action::Replace, deferred("failed-health"))]),
            report(vec![(Action::Keep, deferred("unresolved"))]),
            report(vec![(Action::Replace, deferred("shutdown"))]),
        ] {
            assert_eq!(r.next_wake(now), None);
        }
    }

    #[test]
    fn exit_is_the_worst_step_outcome() {
        assert_eq!(report(vec![]).exit(), Exit::Ok);
        assert_eq!(
            report(vec![(Action::Replace, deferred("window"))]).exit(),
            Exit::Ok
        );
        let rolled = Outcome::RolledBack {
            error: "unhealthy".into(),
            could_not_run: false,
        };
        let not_pulled = Outcome::NotPulled {
            error: "down".into(),
        };
        assert_eq!(
            report(vec![(Action::Replace, rolled.clone())]).exit(),
            Exit::Wrong
        );
        assert_eq!(
            report(vec![
                (Action::Replace, not_pulled),
                (Action::Replace, rolled)
            ])
            .exit(),
            Exit::CannotRun
        );
        assert_eq!(
            report(vec![(Action::Keep, deferred("unresolved"))]).exit(),
            Exit::CannotRun
        );
    }
}
