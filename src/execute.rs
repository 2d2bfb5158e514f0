//! The executor: carries a plan out in order and decides nothing but how. Before each step
//! that stops or starts a container it asks the planner's gate again ([`gate::decide`]) with
//! a fresh clock and, where the step is idle-gated, a fresh answer from the partner's
//! service. Every replace is journaled before each destructive step, so that a run killed
//! at any moment is finished or rolled back by the next: the old or the new container
//! always exists, and never two run under the managed name. A new container that fails its
//! health check is rolled back here, and its digest held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::Clock;
use crate::container::{NewContainer, ObservedContainer};
use crate::engine::{Engine, EngineError, FreeSpace};
use crate::exit::chain;
use crate::image::{ImageRepo, SourceError, TagSource};
use crate::manifest::Idle;
use crate::plan::{Action, Change, Deferral, Gate, Held, Idleness, Plan, Readiness, Step, gate};
use crate::probe::{self, Probe, ProbeError};
use crate::prune::Pulled;
use crate::resolve::DesiredContainer;
use crate::secret::{DirError, Redact, SecretsDir};
use crate::state::{PartRecord, Phase, Record, StateDir, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Unhealthy(String),
    #[error(transparent)]
    Source(SourceError),
    #[error("cannot read the image's size from its registry, which the disk guard needs")]
    PullSize(#[source] SourceError),
    #[error("cannot write the secret files")]
    Secrets(#[source] DirError),
    #[error("the container has secret files, but this run has no usable secrets directory")]
    NoSecretsDir,
}

impl ExecuteError {
    /// The engine went away or the state directory could not be written: nothing about
    /// the step was wrong.
    pub fn could_not_run(&self) -> bool {
        match self {
            ExecuteError::Engine(e) => e.is_unreachable(),
            ExecuteError::State(StateError::Io { .. }) => true,
            ExecuteError::Secrets(_) | ExecuteError::NoSecretsDir => true,
            _ => false,
        }
    }
}

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Done,
    Unchanged,
    Deferred {
        reason: String,
        detail: String,
    },
    /// The step breaks the host's floor; nothing was touched.
    Refused {
        detail: String,
    },
    /// The image could not be fetched; nothing was touched.
    NotPulled {
        error: String,
    },
    /// The new container failed; the old one serves again.
    RolledBack {
        error: String,
        /// As for `Failed`: the engine or the state directory failed, not the new version.
        #[serde(skip)]
        could_not_run: bool,
    },
    Failed {
        error: String,
        /// The engine or the state directory failed under the step, not the step itself:
        /// the run could not run (exit 3), rather than found something wrong (exit 1).
        #[serde(skip)]
        could_not_run: bool,
    },
}

impl Outcome {
    fn failed(e: &ExecuteError) -> Outcome {
        Outcome::Failed {
            error: chain(e),
            could_not_run: e.could_not_run(),
        }
    }

    /// The outcome with every value of `redact` replaced in its text, as it goes to the
    /// logs, the status and the output.
    fn redacted(self, redact: &Redact) -> Outcome {
        match self {
            Outcome::Deferred { reason, detail } => Outcome::Deferred {
                reason,
                detail: redact.apply(&detail),
            },
            Outcome::Refused { detail } => Outcome::Refused {
                detail: redact.apply(&detail),
            },
            Outcome::NotPulled { error } => Outcome::NotPulled {
                error: redact.apply(&error),
            },
            Outcome::RolledBack {
                error,
                could_not_run,
            } => Outcome::RolledBack {
                error: redact.apply(&error),
                could_not_run,
            },
            Outcome::Failed {
                error,
                could_not_run,
            } => Outcome::Failed {
                error: redact.apply(&error),
                could_not_run,
            },
            other @ (Outcome::Done | Outcome::Unchanged) => other,
        }
    }

    fn deferred(d: &Deferral) -> Outcome {
        match d {
            Deferral::Refused { .. } => Outcome::Refused {
                detail: d.describe(),
            },
            _ => Outcome::Deferred {
                reason: d.name().to_owned(),
                detail: d.describe(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub script: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub action: Action,
    pub reason: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub millis: u128,
}

/// Aborts the process at the n-th destructive point of its updates when
/// `BERTH_ABORT_AFTER=n` is set: the real-engine crash-recovery tests' way to stop a run
/// at an exact point between two engine calls. A single replace passes points 1 to 9; a
/// multi-component update passes more, counted on.
fn fault_point() {
    static PASSED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var("BERTH_ABORT_AFTER").is_ok_and(|v| v == n.to_string()) {
        std::process::abort();
    }
}

/// Suffixes of the names a container wears during a replace (the new one's is followed by
/// a per-attempt nonce).
pub const NEXT_SUFFIX: &str = ".next";
pub const OLD_SUFFIX: &str = ".old";

/// The effects a pass acts through, and where it keeps its journal.
pub struct Executor<'a, E: Engine, T: TagSource, P: Probe, C: Clock> {
    pub engine: &'a E,
    /// Where pull credentials come from.
    pub sources: &'a T,
    pub probe: &'a P,
    pub clock: &'a C,
    /// The partner's idle probe, asked right before each idle-gated step.
    pub idle: Option<&'a Idle>,
    pub state: &'a StateDir,
    /// Where secret files are written; `None` when this run has no usable one (the
    /// scripts that need it were left unresolved).
    pub secrets: Option<&'a SecretsDir>,
    /// Set when the process is asked to stop: the step in flight finishes, no new one
    /// starts.
    pub stopping: &'a AtomicBool,
    /// Bytes a pull must leave free on the engine's data root (`min_free`); 0 turns the
    /// disk guard off.
    pub min_free: u64,
}

/// What the pre-pull made of a step's image.
enum Fetched {
    /// In the engine's store, pulled now or before.
    Ready,
    /// Not pulled: the disk guard holds it back.
    Deferred(Deferral),
}

/// The disk guard over one pass ([`gate::disk`]): the registry's size of each image to
/// pull, estimated as disk use, against the room on the engine's data root, measured
/// before the first pull it judges; each pull it lets through is taken off, so several
/// pulls count against the same free space.
struct DiskGuard<'a, E: Engine, T: TagSource> {
    engine: &'a E,
    sources: &'a T,
    min_free: u64,
    /// `Err`: the data root could not be measured.
    room: Option<Result<FreeSpace, String>>,
}

impl<'a, E: Engine, T: TagSource> DiskGuard<'a, E, T> {
    fn new(engine: &'a E, sources: &'a T, min_free: u64) -> Self {
        DiskGuard {
            engine,
            sources,
            min_free,
            room: None,
        }
    }

    /// Whether pulling `d`'s image from `repo` may start: `None` when it may (its estimate
    /// is then taken from the room), else why it waits. A data root that cannot be
    /// measured defers the pull (the operator sees why; `min_free: 0` turns the guard
    /// off); an engine that stopped answering fails it, as the pull would.
    async fn admit(
        &mut self,
        repo: &ImageRepo,
        d: &DesiredContainer,
    ) -> Result<Option<Deferral>, ExecuteError> {
        if self.min_free == 0 {
            return Ok(None);
        }
        let Some(compressed) = self
            .sources
            .pull_size(repo, &d.digest)
            .await
            .map_err(ExecuteError::PullSize)?
        else {
            return Ok(None);
        };
        let needed = gate::pull_estimate(compressed);
        if self.room.is_none() {
            self.room = Some(match self.engine.free_space().await {
                Ok(space) => Ok(space),
                Err(e) if e.is_unreachable() => return Err(e.into()),
                Err(e) => Err(chain(&e)),
            });
        }
        match self.room.as_mut().expect("measured above") {
            Err(detail) => Ok(Some(Deferral::DiskUnmeasured {
                detail: detail.clone(),
            })),
            Ok(space) => match gate::disk(needed, space.free, self.min_free, &space.data_root) {
                Gate::Allowed => {
                    space.free = space.free.saturating_sub(needed);
                    Ok(None)
                }
                Gate::Deferred(why) => Ok(Some(why)),
            },
        }
    }
}

impl<E: Engine, T: TagSource, P: Probe, C: Clock> Executor<'_, E, T, P, C> {
    /// Finishes or rolls back what an earlier run of this partner left half done. Returns
    /// a line per record for the report.
    pub async fn recover(&self, partner: &str) -> Result<Vec<String>, ExecuteError> {
        let mut done = Vec::new();
        for record in self.state.journals(partner)? {
            match record.phase {
                Phase::Creating | Phase::CutOver => {
                    self.roll_back(&record).await?;
                    done.push(format!(
                        "{}: rolled back an interrupted update",
                        record.script
                    ));
                }
                Phase::Verified => {
                    self.roll_forward(&record).await?;
                    done.push(format!("{}: finished an interrupted update", record.script));
                }
            }
        }
        Ok(done)
    }

    /// Pulls every image the plan needs (unless the disk guard holds one back: that
    /// script's steps are then deferred `disk`), then runs every allowed step; one step's
    /// failure does not stop the others. A multi-component script's allowed changes run together,
    /// as one update.
    pub async fn execute(&self, plan: &Plan) -> Vec<StepReport> {
        let mut not_pulled = std::collections::BTreeMap::new();
        let mut no_room: std::collections::BTreeMap<String, Deferral> = Default::default();
        let mut guard = DiskGuard::new(self.engine, self.sources, self.min_free);
        for step in plan.steps.iter().filter(|s| s.pre_pull()) {
            let Some(d) = step.desired() else { continue };
            // The script waits already: its other images need not take room.
            if no_room.contains_key(&step.script) {
                continue;
            }
            let started = Instant::now();
            // A pre-pull has changed nothing yet, so SIGTERM abandons it at once.
            let pulled = tokio::select! {
                pulled = self.ensure_image(&plan.partner, d, &mut guard) => pulled,
                () = stopped(self.stopping) => break,
            };
            match pulled {
                Ok(Fetched::Ready) => {}
                Ok(Fetched::Deferred(why)) => {
                    tracing::warn!(script = %step.script, image = %d.image, reason = %why.describe(), "pull deferred");
                    no_room.insert(step.script.clone(), why);
                }
                Err(e) => {
                    let from = d
                        .pull_from
                        .as_ref()
                        .map(|r| r.display())
                        .unwrap_or_default();
                    not_pulled.entry(step.script.clone()).or_insert(format!(
                        "{} from {from}, after {:.1} s: {}",
                        step.label(),
                        started.elapsed().as_secs_f64(),
                        chain(&e)
                    ));
                }
            }
        }
        let redact = plan_redactions(plan);
        let mut reports = Vec::new();
        let mut unit_outcomes: std::collections::BTreeMap<usize, Outcome> = Default::default();
        let mut removed_all: std::collections::BTreeMap<&str, bool> = Default::default();
        for (i, step) in plan.steps.iter().enumerate() {
            let started = Instant::now();
            let outcome = match &step.gate {
                _ if unit_outcomes.contains_key(&i) => unit_outcomes.remove(&i).expect("present"),
                Gate::Allowed if step.is_change() && self.stopping.load(Ordering::SeqCst) => {
                    Outcome::Deferred {
                        reason: "shutdown".into(),
                        detail: "berth is stopping; the next run takes it up".into(),
                    }
                }
                _ if step.is_change() && not_pulled.contains_key(&step.script) => {
                    Outcome::NotPulled {
                        error: not_pulled[&step.script].clone(),
                    }
                }
                _ if step.is_change() && no_room.contains_key(&step.script) => {
                    Outcome::deferred(&no_room[&step.script])
                }
                Gate::Deferred(d) => Outcome::deferred(d),
                Gate::Allowed if !step.is_change() => Outcome::Unchanged,
                Gate::Allowed if in_unit(step) => {
                    let members: Vec<usize> = (i..plan.steps.len())
                        .filter(|&j| {
                            let s = &plan.steps[j];
                            s.script == step.script && s.gate == Gate::Allowed && in_unit(s)
                        })
                        .collect();
                    let steps: Vec<&Step> = members.iter().map(|&j| &plan.steps[j]).collect();
                    let mut outcomes = self.update(plan, &steps).await.into_iter();
                    for &j in &members {
                        unit_outcomes.insert(j, outcomes.next().expect("one per step"));
                    }
                    unit_outcomes.remove(&i).expect("present")
                }
                Gate::Allowed => match self.gate(plan, &[step], true).await {
                    Gate::Allowed => self.run(plan, step).await,
                    Gate::Deferred(d) => Outcome::deferred(&d),
                },
            };
            if step.action() == Action::Remove {
                *removed_all.entry(step.script.as_str()).or_insert(true) &=
                    outcome == Outcome::Done;
            }
            let report = StepReport {
                script: step.script.clone(),
                component: step.component.clone(),
                action: step.action(),
                reason: step.reason.clone(),
                outcome: outcome.redacted(&redact),
                millis: started.elapsed().as_millis(),
            };
            tracing::info!(
                script = %report.script,
                component = report.component.as_deref().unwrap_or(""),
                action = report.action.as_str(),
                outcome = ?report.outcome,
                millis = report.millis as u64,
                "step"
            );
            reports.push(report);
        }
        for network in &plan.networks_to_remove {
            if removed_all.get(network.script.as_str()) == Some(&false) {
                continue;
            }
            if let Err(e) = self.engine.remove_network(network).await {
                tracing::error!(network = %network.name, error = %chain(&e), "cannot remove a script's network");
            }
        }
        reports
    }

    /// The planner's gate asked again now, for one step or a unit's steps together: the
    /// host paths they mount, resolved again (a pre-pull or an earlier step's health wait
    /// gave time to swap one for a symlink), the window, the services a new version
    /// requires (asked again: one may have been rolled back since the plan), and, when
    /// `ask_idle` and a step stops a running container, a fresh answer from the partner's
    /// service.
    async fn gate(&self, plan: &Plan, steps: &[&Step], ask_idle: bool) -> Gate {
        for to in steps.iter().filter_map(|s| s.desired()) {
            let binds = crate::resolve::host_binds(&to.spec);
            if binds != to.binds {
                let refusals = plan.policy.rules.refusals(&crate::policy::Candidate {
                    binds: &binds,
                    ..to.candidate()
                });
                if !refusals.is_empty() {
                    return Gate::Deferred(Deferral::Refused { refusals });
                }
            }
        }
        let changes: Vec<&Change> = steps.iter().map(|s| &s.change).collect();
        let now = self.clock.now();
        let first = gate::decide(&plan.policy, &changes, now, &Idleness::Unknown);
        if first == Gate::Allowed
            && let Some(script) = changes.iter().find_map(|c| plan.policy.requires_gated(c))
            && let Readiness::Unmet { url, detail } =
                probe::readiness(self.probe, &plan.policy.requires[script]).await
        {
            return Gate::Deferred(Deferral::Requires { url, detail });
        }
        let gated = changes.iter().any(|c| plan.policy.idle_gated(c));
        match (first, self.idle) {
            (Gate::Allowed, Some(idle)) if ask_idle && gated => {
                let answer = probe::idleness(self.probe, idle).await;
                gate::decide(&plan.policy, &changes, now, &answer)
            }
            (gate, _) => gate,
        }
    }

    async fn run(&self, plan: &Plan, step: &Step) -> Outcome {
        let result = match &step.change {
            Change::Create { to } => self.create(plan, to).await,
            Change::Start { current, to } => self.start(current, to).await,
            Change::Remove { from } => self.remove(from).await,
            Change::Replace { .. } => {
                return self
                    .update(plan, &[step])
                    .await
                    .pop()
                    .expect("one outcome per step");
            }
            Change::Keep { .. } => return Outcome::Unchanged,
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::failed(&e),
        }
    }

    async fn create(&self, plan: &Plan, d: &DesiredContainer) -> Result<(), ExecuteError> {
        let name = d.name(&plan.partner);
        let dir = self.write_secrets(&name, d)?;
        let id = match self
            .engine
            .create(&new_container(&name, plan, d, dir.as_deref()))
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.discard_secrets(dir.as_deref());
                return Err(e.into());
            }
        };
        let started = match self.engine.start(&id).await {
            Ok(()) => self.wait_healthy(&id, d).await,
            // A container that never ran is removed, env and all, not left `created`.
            Err(e) => Err(e.into()),
        };
        if let Err(e) = started {
            if matches!(e, ExecuteError::Unhealthy(_)) {
                self.hold(plan, d)?;
            }
            self.engine.stop(&id).await?;
            self.engine.remove(&id).await?;
            self.discard_secrets(dir.as_deref());
            return Err(e);
        }
        Ok(())
    }

    /// Starts a stopped container, its secret files written again first: after a reboot
    /// the tmpfs they live on is empty.
    async fn start(
        &self,
        current: &ObservedContainer,
        d: &DesiredContainer,
    ) -> Result<(), ExecuteError> {
        if !d.spec.secret_files.is_empty() {
            let secrets = self.secrets.ok_or(ExecuteError::NoSecretsDir)?;
            let dir = current
                .secrets_dir
                .as_deref()
                .ok_or(ExecuteError::NoSecretsDir)?;
            secrets
                .write(std::path::Path::new(dir), &d.spec.unsealed.files)
                .map_err(ExecuteError::Secrets)?;
        }
        self.engine.start(&current.id).await?;
        self.wait_healthy(&current.id, d).await
    }

    async fn remove(&self, from: &ObservedContainer) -> Result<(), ExecuteError> {
        self.engine.stop(&from.id).await?;
        self.engine.remove(&from.id).await?;
        self.discard_secrets(from.secrets_dir.as_deref());
        Ok(())
    }

    /// Writes the secret files of a container about to be created under `name`; returns
    /// their directory, `None` when it has none.
    fn write_secrets(
        &self,
        name: &str,
        d: &DesiredContainer,
    ) -> Result<Option<String>, ExecuteError> {
        if d.spec.secret_files.is_empty() {
            return Ok(None);
        }
        let secrets = self.secrets.ok_or(ExecuteError::NoSecretsDir)?;
        let dir = secrets.dir_for(name);
        secrets
            .write(&dir, &d.spec.unsealed.files)
            .map_err(ExecuteError::Secrets)?;
        Ok(Some(dir.display().to_string()))
    }

    /// Removes the secret files of a container berth removed. A failure is logged: the
    /// step itself is done, and the files are only on tmpfs.
    fn discard_secrets(&self, dir: Option<&str>) {
        if let (Some(secrets), Some(dir)) = (self.secrets, dir)
            && let Err(e) = secrets.remove(std::path::Path::new(dir))
        {
            tracing::error!(error = %chain(&e), "cannot remove a container's secret files");
        }
    }

    /// An update carried out as one journaled unit: a single-container script's replace,
    /// or a multi-component script's changes, in the plan's (dependency) order, with its
    /// removed components last. Each changed container must prove itself before the next
    /// is touched; the idle gate is asked right before the first running container stops.
    /// If anything fails, every container changed so far goes back, in reverse order, and
    /// the digests are held when a new version failed. One outcome per step.
    async fn update(&self, plan: &Plan, steps: &[&Step]) -> Vec<Outcome> {
        let Some(first) = steps.first() else {
            return Vec::new();
        };
        let script = first.script.clone();
        let multi = steps.iter().any(|s| in_unit(s));
        if multi && let Gate::Deferred(d) = self.gate(plan, steps, false).await {
            return steps.iter().map(|_| Outcome::deferred(&d)).collect();
        }
        let (removes, changes): (Vec<&Step>, Vec<&Step>) =
            steps.iter().partition(|s| s.action() == Action::Remove);
        // Unique per attempt: a killed run's create request can still land after the next
        // run rolled it back, and must not block this one's names. Such a leftover is
        // removed by a later plan.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut record = Record {
            partner: plan.partner.clone(),
            script: script.clone(),
            phase: Phase::Creating,
            parts: Vec::new(),
        };
        let mut asked_idle = !multi;
        let mut failed_at = None;
        let mut result = Ok(());
        for (i, step) in changes.iter().enumerate() {
            if !asked_idle && step.change.stops_running() {
                asked_idle = true;
                if let Gate::Deferred(d) = self.gate(plan, steps, true).await {
                    result = Err(Failure::Deferred(d));
                    failed_at = Some(i);
                    break;
                }
            }
            if let Err(e) = self.change_part(plan, step, &mut record, nonce).await {
                result = Err(Failure::Error(e));
                failed_at = Some(i);
                break;
            }
        }
        if result.is_ok()
            && !asked_idle
            && removes.iter().any(|s| s.change.stops_running())
            && let Gate::Deferred(d) = self.gate(plan, steps, true).await
        {
            failed_at = Some(changes.len());
            result = Err(Failure::Deferred(d));
        }
        if result.is_ok() && !record.parts.is_empty() {
            record.phase = Phase::Verified;
            result = self
                .state
                .write_journal(&record)
                .map_err(|e| Failure::Error(e.into()));
            fault_point();
        }
        match result {
            Ok(()) => {
                if let Err(e) = self.roll_forward(&record).await {
                    let failed = Outcome::failed(&e);
                    return steps.iter().map(|_| failed.clone()).collect();
                }
                let mut removed = Vec::new();
                for step in &removes {
                    let Change::Remove { from } = &step.change else {
                        continue;
                    };
                    removed.push(match self.remove(from).await {
                        Ok(()) => Outcome::Done,
                        Err(e) => Outcome::failed(&e),
                    });
                }
                let mut removed = removed.into_iter();
                steps
                    .iter()
                    .map(|s| {
                        if s.action() == Action::Remove {
                            removed.next().expect("one per removal")
                        } else {
                            Outcome::Done
                        }
                    })
                    .collect()
            }
            Err(failure) => {
                let failed_at = failed_at.unwrap_or(changes.len());
                let held = match (&failure, multi, changes.first().and_then(|s| s.desired())) {
                    (Failure::Error(ExecuteError::Unhealthy(_)), true, _) => {
                        self.hold_unit(plan, &changes)
                    }
                    (Failure::Error(ExecuteError::Unhealthy(_)), false, Some(d)) => {
                        self.hold(plan, d)
                    }
                    _ => Ok(()),
                };
                if let Err(e) = held {
                    tracing::error!(error = %chain(&e), "cannot remember the failed digests");
                }
                let rolled = self.roll_back(&record).await;
                let culprit = changes.get(failed_at).map(|s| s.label());
                steps
                    .iter()
                    .map(|s| match (&failure, &rolled) {
                        (_, Err(e)) => Outcome::failed(e),
                        (Failure::Deferred(d), Ok(())) => Outcome::deferred(d),
                        (Failure::Error(e), Ok(())) => Outcome::RolledBack {
                            error: match &culprit {
                                Some(c) if multi && *c != s.label() => {
                                    format!("{c}: {}", chain(e))
                                }
                                _ => chain(e),
                            },
                            could_not_run: e.could_not_run(),
                        },
                    })
                    .collect()
            }
        }
    }

    /// Replaces, adds or starts one container of an update, journaling it before each
    /// destructive call. A stateless container is created before the old one stops; a
    /// stateful one only after, so two processes never share its volumes (nor does the
    /// engine copy image content into a volume still in use). Either way the new one
    /// starts only once the old one has stopped. A job runs to completion instead of being
    /// health-checked, and keeps its temporary name until the update is verified.
    async fn change_part(
        &self,
        plan: &Plan,
        step: &Step,
        record: &mut Record,
        nonce: u128,
    ) -> Result<(), ExecuteError> {
        let (old, d) = match &step.change {
            Change::Replace { from, to } => (Some(from), to),
            Change::Create { to } => (None, to),
            Change::Start { current, to } => return self.start(current, to).await,
            Change::Remove { .. } | Change::Keep { .. } => return Ok(()),
        };
        if let Some(c) = &d.component {
            if let Some(network) = &c.network {
                self.engine.ensure_network(network).await?;
            }
            for volume in &c.volumes {
                self.engine.ensure_volume(volume).await?;
            }
        }
        let name = d.name(&plan.partner);
        if self.engine.updates_in_place() {
            return self.change_in_place(plan, old, d, record, &name).await;
        }
        let job = d.component.as_ref().and_then(|c| c.job);
        let stateful = d.component.as_ref().is_some_and(|c| c.stateful);
        let part = record.parts.len();
        record.parts.push(PartRecord {
            next_name: format!("{name}{NEXT_SUFFIX}-{nonce:x}"),
            name: name.clone(),
            old_id: old.map(|o| o.id.clone()),
            new_id: None,
            job: job.is_some(),
            reverts_to: None,
        });
        self.state.write_journal(record)?;
        fault_point();
        if stateful && let Some(old) = old {
            self.engine.stop(&old.id).await?;
            fault_point();
        }
        let next_name = record.parts[part].next_name.clone();
        let dir = self.write_secrets(&next_name, d)?;
        let new_id = self
            .engine
            .create(&new_container(&next_name, plan, d, dir.as_deref()))
            .await?;
        fault_point();
        record.parts[part].new_id = Some(new_id.clone());
        record.phase = Phase::CutOver;
        self.state.write_journal(record)?;
        fault_point();
        if let Some(timeout) = job {
            self.engine.start(&new_id).await?;
            fault_point();
            return self.wait_job(&new_id, timeout).await;
        }
        if let Some(old) = old {
            if !old.running {
                // A crash-looping container cannot be renamed by some engines (Docker
                // 20.10: "sandbox not found"); it serves nothing, so it stops first.
                self.engine.stop(&old.id).await?;
            }
            self.engine
                .rename(&old.id, &format!("{name}{OLD_SUFFIX}"))
                .await?;
            fault_point();
        }
        self.engine.rename(&new_id, &name).await?;
        fault_point();
        if let Some(old) = old {
            self.engine.stop(&old.id).await?;
            fault_point();
        }
        self.engine.start(&new_id).await?;
        fault_point();
        self.wait_healthy(&new_id, d).await
    }

    /// [`Self::change_part`] on an engine that updates in place (a swarm): an added service
    /// is created under its own name, a changed one updated where it is (the engine picks
    /// start-first or stop-first), journaled first with the spec hash a rollback returns
    /// to; either way berth's health gate judges it.
    async fn change_in_place(
        &self,
        plan: &Plan,
        old: Option<&ObservedContainer>,
        d: &DesiredContainer,
        record: &mut Record,
        name: &str,
    ) -> Result<(), ExecuteError> {
        let part = record.parts.len();
        record.parts.push(PartRecord {
            next_name: name.to_owned(),
            name: name.to_owned(),
            old_id: old.map(|o| o.id.clone()),
            new_id: old.map(|o| o.id.clone()),
            job: false,
            reverts_to: old.map(|o| format!("{} {}", o.digest, o.spec_hash)),
        });
        self.state.write_journal(record)?;
        fault_point();
        let dir = self.write_secrets(name, d)?;
        let id = match old {
            Some(old) => {
                self.engine
                    .update(&old.id, &new_container(name, plan, d, dir.as_deref()))
                    .await?;
                old.id.clone()
            }
            None => {
                let id = self
                    .engine
                    .create(&new_container(name, plan, d, dir.as_deref()))
                    .await?;
                record.parts[part].new_id = Some(id.clone());
                id
            }
        };
        record.phase = Phase::CutOver;
        self.state.write_journal(record)?;
        fault_point();
        self.wait_healthy(&id, d).await
    }

    /// Puts every container of the update back, last changed first: removes each new one,
    /// gives the old one its name again and starts it (a job's stays as it ended).
    async fn roll_back(&self, record: &Record) -> Result<(), ExecuteError> {
        for part in record.parts.iter().rev() {
            if let (Some(id), Some(to)) = (&part.old_id, &part.reverts_to) {
                self.engine.revert(id, to).await?;
                continue;
            }
            let new = match &part.new_id {
                Some(id) => self.engine.find(id).await?,
                // Created but not yet journaled: find it by its temporary name.
                None => self
                    .engine
                    .find(&part.next_name)
                    .await?
                    .filter(|f| f.partner.as_deref() == Some(record.partner.as_str())),
            };
            if let Some(new) = new {
                self.engine.stop(&new.id).await?;
                self.engine.remove(&new.id).await?;
            }
            // Written before the create, so there may be files even when no container was
            // made.
            if let Some(secrets) = self.secrets {
                let dir = secrets.dir_for(&part.next_name);
                self.discard_secrets(Some(&dir.display().to_string()));
            }
            let Some(old_id) = &part.old_id else { continue };
            if let Some(old) = self.engine.find(old_id).await? {
                if old.name != part.name {
                    self.engine.rename(&old.id, &part.name).await?;
                }
                if !old.running && !part.job {
                    self.engine.start(&old.id).await?;
                }
            }
        }
        self.state.clear_journal(&record.partner, &record.script)?;
        Ok(())
    }

    /// Removes the old containers once every new one has proven itself, and gives each
    /// new one its managed name.
    async fn roll_forward(&self, record: &Record) -> Result<(), ExecuteError> {
        for part in record.parts.iter().filter(|p| p.reverts_to.is_none()) {
            if let Some(old_id) = &part.old_id
                && let Some(old) = self.engine.find(old_id).await?
            {
                self.engine.stop(&old.id).await?;
                self.engine.remove(&old.id).await?;
                self.discard_secrets(old.secrets_dir.as_deref());
            }
            fault_point();
            if let Some(new_id) = &part.new_id
                && let Some(new) = self.engine.find(new_id).await?
            {
                if new.name != part.name {
                    self.engine.rename(&new.id, &part.name).await?;
                }
                if !new.running && !part.job {
                    self.engine.start(&new.id).await?;
                }
            }
        }
        if !record.parts.is_empty() {
            self.state.clear_journal(&record.partner, &record.script)?;
        }
        Ok(())
    }

    /// A job's run: done when it exits 0 within its timeout; a non-zero exit or a run
    /// past the timeout (the job is then stopped) fails the update, like a failed health
    /// check.
    async fn wait_job(&self, id: &str, timeout: Duration) -> Result<(), ExecuteError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.engine.find(id).await? {
                Some(f) if !f.running && f.exit_code == Some(0) => return Ok(()),
                Some(f) if !f.running && f.exit_code.is_some() => {
                    return Err(ExecuteError::Unhealthy(format!(
                        "the job exited with code {}",
                        f.exit_code.unwrap_or_default()
                    )));
                }
                None => {
                    return Err(ExecuteError::Unhealthy(
                        "the job's container disappeared".into(),
                    ));
                }
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                self.engine.stop(id).await?;
                return Err(ExecuteError::Unhealthy(format!(
                    "the job did not finish within {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pulls a registry image unless the engine has it or the disk guard holds it back, and
    /// records the pull: berth only ever prunes images it pulled. Credentials that the
    /// registry refuses are dropped and fetched afresh once, so an expired token never
    /// fails an update.
    async fn ensure_image(
        &self,
        partner: &str,
        d: &DesiredContainer,
        guard: &mut DiskGuard<'_, E, T>,
    ) -> Result<Fetched, ExecuteError> {
        let Some(repo) = &d.pull_from else {
            return Ok(Fetched::Ready);
        };
        if self.engine.has_image(&d.image).await? {
            return Ok(Fetched::Ready);
        }
        if let Some(why) = guard.admit(repo, d).await? {
            return Ok(Fetched::Deferred(why));
        }
        let creds = self
            .sources
            .credentials(repo)
            .await
            .map_err(ExecuteError::Source)?;
        match self.engine.pull(&d.image, creds.as_ref()).await {
            Ok(()) => {}
            Err(first) if creds.is_some() && !first.is_abandoned_pull() => {
                tracing::warn!(image = %d.image, error = %chain(&first), "pull failed; retrying with fresh credentials");
                self.sources.forget_credentials(repo);
                let fresh = self
                    .sources
                    .credentials(repo)
                    .await
                    .map_err(ExecuteError::Source)?;
                self.engine.pull(&d.image, fresh.as_ref()).await?;
            }
            Err(e) => return Err(e.into()),
        }
        // An image gone again at once has nothing to prune.
        if let Some(id) = self.engine.image_id(&d.image).await? {
            let pulled = Pulled {
                reference: d.image.clone(),
                digest: d.digest.clone(),
                id,
                script: d.script.clone(),
                component: d.component_name().map(str::to_owned),
            };
            self.state.record_pull(partner, pulled)?;
        }
        Ok(Fetched::Ready)
    }

    /// Remembers a digest and spec that failed, so they are not retried.
    fn hold(&self, plan: &Plan, d: &DesiredContainer) -> Result<(), StateError> {
        self.state.hold(Held {
            partner: plan.partner.clone(),
            script: d.script.clone(),
            digest: d.digest.clone(),
            spec_hash: d.spec_hash.clone(),
        })
    }

    /// Remembers a multi-component update that failed as the fingerprint of its changes,
    /// as the planner looks it up.
    fn hold_unit(&self, plan: &Plan, steps: &[&Step]) -> Result<(), StateError> {
        let changes: Vec<&Change> = steps.iter().map(|s| &s.change).collect();
        self.state.hold(Held {
            partner: plan.partner.clone(),
            script: steps.first().map(|s| s.script.clone()).unwrap_or_default(),
            digest: crate::plan::unit_fingerprint(&changes),
            spec_hash: String::new(),
        })
    }

    /// Healthy, within the health timeout: answering 2xx on `health.http` while still
    /// running without a restart (an answer from something else on the port does not
    /// count), or, without a probe, running for the stable period without exiting or
    /// restarting — running at one instant is not enough for a crash-looping container.
    async fn wait_healthy(&self, id: &str, d: &DesiredContainer) -> Result<(), ExecuteError> {
        let started = Instant::now();
        let deadline = started + d.health.timeout;
        let stable = stable_period().min(d.health.timeout);
        let mut first_restarts = None;
        let mut last = String::new();
        loop {
            let found = self.engine.find(id).await?;
            let restarts = match &found {
                Some(f) if f.running => f.restarts,
                _ if self.engine.updates_in_place() => {
                    return Err(ExecuteError::Unhealthy(
                        "health check failed: a task failed and Swarm paused the update".into(),
                    ));
                }
                _ => {
                    return Err(ExecuteError::Unhealthy(
                        "health check failed: the container exited".into(),
                    ));
                }
            };
            if *first_restarts.get_or_insert(restarts) != restarts {
                return Err(ExecuteError::Unhealthy(
                    "health check failed: the container restarted (it is crash-looping)".into(),
                ));
            }
            // With `health.exec` the engine's own verdict decides, before any probe.
            // A swarm's verdict covers its tasks converging, healthcheck or not.
            let engine_healthy = match found.as_ref().and_then(|f| f.health.as_deref()) {
                _ if d.spec.healthcheck.is_none() && !self.engine.updates_in_place() => true,
                Some("healthy") => true,
                Some(verdict) => {
                    last = format!("the engine reports it {verdict}");
                    false
                }
                None => {
                    last = "the engine reports no health yet".into();
                    false
                }
            };
            match &d.health.http {
                _ if !engine_healthy => {}
                None if d.spec.healthcheck.is_some() => return Ok(()),
                None if started.elapsed() >= stable => return Ok(()),
                None => {}
                Some(url) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.probe.get(url, left.min(Duration::from_secs(2))).await {
                        Ok(a) if (200..300).contains(&a.status) => {
                            // The answer counts only if the container is still up, and has
                            // not restarted, a moment later: something else on the port
                            // may have answered for a container that is crash-looping.
                            let left = deadline.saturating_duration_since(Instant::now());
                            tokio::time::sleep(CONFIRM.min(left)).await;
                            match self.engine.find(id).await? {
                                Some(f) if f.running && f.restarts == restarts => return Ok(()),
                                _ => {
                                    last =
                                        format!("{url} answered, but the container did not stay up")
                                }
                            }
                        }
                        Ok(a) => last = format!("{url} answered HTTP {}", a.status),
                        // The last try may be cut short by the deadline: a timeout never
                        // hides what an earlier try learnt.
                        Err(ProbeError::Timeout(_)) if !last.is_empty() => {}
                        Err(e) => last = chain(&e),
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ExecuteError::Unhealthy(format!(
                    "health check failed within {}s: {last}",
                    d.health.timeout.as_secs()
                )));
            }
            // A probe is asked often, so a healthy service cuts over at once; without one
            // only the engine is asked, and less often.
            let pause = if d.health.http.is_some() { 25 } else { 200 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Why an update stopped before it was verified.
enum Failure {
    /// A gate asked again mid-update said wait: what was changed so far goes back.
    Deferred(Deferral),
    Error(ExecuteError),
}

/// Whether a step is one of a multi-component script's changes, carried out together.
fn in_unit(step: &Step) -> bool {
    step.is_change()
        && !step.is_leftover()
        && (step.component.is_some() || step.desired().is_some_and(|d| d.component.is_some()))
}

/// How long a container must stay up after its health probe answered, for the answer to
/// count as its own.
const CONFIRM: Duration = Duration::from_millis(300);

/// How long a container without a health probe must run, without exiting or restarting,
/// to count as healthy: `BERTH_STABLE_SECS`, else 5 s.
fn stable_period() -> Duration {
    std::env::var("BERTH_STABLE_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// Resolves once the process is asked to stop.
async fn stopped(stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every value of the plan's containers that error text must not show.
fn plan_redactions(plan: &Plan) -> Redact {
    plan.steps
        .iter()
        .filter_map(Step::desired)
        .fold(Redact::default(), |all, d| {
            all.union(&d.spec.unsealed.redact)
        })
}

/// A desired container as the engine creates it, under `name`, with its secret files in
/// `secrets_dir`.
fn new_container<'a>(
    name: &'a str,
    plan: &'a Plan,
    d: &'a DesiredContainer,
    secrets_dir: Option<&'a str>,
) -> NewContainer<'a> {
    NewContainer {
        name,
        image: &d.image,
        partner: &plan.partner,
        script: &d.script,
        component: d.component_name(),
        version: &d.version,
        digest: &d.digest,
        spec_hash: &d.spec_hash,
        revision: &plan.revision,
        spec: &d.spec,
        secrets_dir,
    }
}

#[cfg(test)]
mod tests {
    //! The executor against the in-memory engine: gates asked again right before a step,
    //! and a replace crashed at every engine call, and at random sequences of calls across
    //! the replace and its recovery, always recovering to one container under the managed
    //! name.

    use std::cell::Cell;
    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::*;
    use crate::container::{ContainerSpec, label};
    use crate::engine::fake::{FakeContainer, FakeEngine};
    use crate::image::{Credentials, ImageRepo, TagRef};
    use crate::plan::{Observed, Policy};
    use crate::probe::{Answer, ProbeError};
    use crate::resolve::{Desired, HealthCheck};

    const OLD: &str = "sha256:old";
    const NEW: &str = "sha256:new";
    const NAME: &str = "berth-p-s";

    /// A clock that reads each instant of a list in turn, then stays at the last.
    struct Ticks(Vec<Timestamp>, Cell<usize>);

    impl Clock for Ticks {
        fn now(&self) -> Timestamp {
            let i = self.1.get();
            self.1.set(i + 1);
            self.0[i.min(self.0.len() - 1)]
        }
    }

    fn at(t: &str) -> Ticks {
        Ticks(vec![t.parse().unwrap()], Cell::new(0))
    }

    /// The partner's service, answering a fixed JSON state.
    struct Service(&'static str, Cell<u32>);

    impl Probe for Service {
        async fn get(&self, _url: &str, _timeout: Duration) -> Result<Answer, ProbeError> {
            self.1.set(self.1.get() + 1);
            Ok(Answer {
                status: 200,
                body: format!(r#"{{"state":"{}"}}"#, self.0).into_bytes(),
            })
        }
    }

    /// Local images only: nothing is listed or pulled.
    struct NoRegistry;

    impl TagSource for NoRegistry {
        async fn tags(&self, _: &ImageRepo) -> Result<Vec<TagRef>, SourceError> {
            unreachable!("local images are not listed by the executor")
        }
        async fn digest(&self, _: &ImageRepo, _: &str) -> Result<String, SourceError> {
            unreachable!("local images have no registry digest")
        }
        async fn credentials(&self, _: &ImageRepo) -> Result<Option<Credentials>, SourceError> {
            Ok(None)
        }
        fn forget_credentials(&self, _: &ImageRepo) {}
        async fn pull_size(&self, _: &ImageRepo, _: &str) -> Result<Option<u64>, SourceError> {
            unreachable!("local images are not pulled")
        }
    }

    /// A registry that knows the compressed size of each digest, and counts the asks.
    struct Sizes(BTreeMap<&'static str, u64>, Cell<u32>);

    impl TagSource for Sizes {
        async fn tags(&self, _: &ImageRepo) -> Result<Vec<TagRef>, SourceError> {
            unreachable!("the executor lists no tags")
        }
        async fn digest(&self, _: &ImageRepo, _: &str) -> Result<String, SourceError> {
            unreachable!("the executor pulls pinned digests")
        }
        async fn credentials(&self, _: &ImageRepo) -> Result<Option<Credentials>, SourceError> {
            Ok(None)
        }
        fn forget_credentials(&self, _: &ImageRepo) {}
        async fn pull_size(&self, _: &ImageRepo, digest: &str) -> Result<Option<u64>, SourceError> {
            self.1.set(self.1.get() + 1);
            Ok(self.0.get(digest).copied())
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            network: Some("none".into()),
            ..ContainerSpec::minimal()
        }
    }

    fn old_container() -> FakeContainer {
        let labels = [
            (label::MANAGED, "true"),
            (label::PARTNER, "p"),
            (label::SCRIPT, "s"),
            (label::VERSION, "1.0.0"),
            (label::DIGEST, OLD),
            (label::SPEC_HASH, &spec().hash()),
            (label::REVISION, "r1"),
        ];
        FakeContainer {
            id: "old".into(),
            name: NAME.into(),
            image: OLD.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            running: true,
            job: false,
            exit_code: None,
        }
    }

    fn desired() -> Desired {
        let spec = spec();
        Desired {
            partner: "p".into(),
            revision: "r2".into(),
            containers: vec![DesiredContainer {
                script: "s".into(),
                component: None,
                version: "2.0.0".into(),
                digest: NEW.into(),
                image: NEW.into(),
                pull_from: None,
                spec_hash: spec.hash(),
                spec,
                health: HealthCheck {
                    http: Some("http://127.0.0.1:1/health".into()),
                    timeout: Duration::from_secs(5),
                },
                binds: vec![],
                env_files: vec![],
                origin: Default::default(),
            }],
            unresolved: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    fn policy(ignore_window: bool) -> Policy {
        let mut policy = crate::plan::gate::saturday_mornings();
        policy.overrides.ignore_window = ignore_window;
        policy
    }

    fn idle() -> Idle {
        crate::manifest::parse("url: http://127.0.0.1:1/status\npointer: /state\nequals: idle\n")
            .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Plans the host as it is now and carries the plan out, under `clock`.
    async fn pass(
        engine: &FakeEngine,
        root: &std::path::Path,
        clock: &impl Clock,
        service: &Service,
        policy: &Policy,
    ) -> Result<Vec<StepReport>, ExecuteError> {
        pass_with(engine, root, clock, service, policy, &desired(), || {}).await
    }

    /// [`pass`] towards `want`, with `between` run after the plan and before the executor.
    async fn pass_with(
        engine: &FakeEngine,
        root: &std::path::Path,
        clock: &impl Clock,
        service: &Service,
        policy: &Policy,
        want: &Desired,
        between: impl FnOnce(),
    ) -> Result<Vec<StepReport>, ExecuteError> {
        let state = StateDir::open(root)?;
        let idle = idle();
        let executor = Executor {
            engine,
            sources: &NoRegistry,
            probe: service,
            clock,
            idle: Some(&idle),
            state: &state,
            secrets: None,
            stopping: &AtomicBool::new(false),
            min_free: 0,
        };
        executor.recover("p").await?;
        let observed = Observed {
            containers: engine.list_managed("p").await?,
            held: state.held()?,
            in_flight: Default::default(),
            idle: Idleness::Unknown,
            requires: Default::default(),
        };
        let plan = crate::plan::plan(want, &observed, policy, clock.now());
        between();
        Ok(executor.execute(&plan).await)
    }

    /// Recovery alone, as the next run starts with it.
    async fn recover(engine: &FakeEngine, root: &std::path::Path) -> Result<(), ExecuteError> {
        let state = StateDir::open(root)?;
        let executor = Executor {
            engine,
            sources: &NoRegistry,
            probe: &Service("idle", Cell::new(0)),
            clock: &at("2026-11-21T02:00:00Z"),
            idle: None,
            state: &state,
            secrets: None,
            stopping: &AtomicBool::new(false),
            min_free: 0,
        };
        executor.recover("p").await.map(|_| ())
    }

    /// One container under the managed name, running, the old or the new; nothing else of
    /// the script running beside it.
    fn one_serving(engine: &FakeEngine) -> Result<&'static str, String> {
        let all = engine.containers();
        let named: Vec<_> = all.iter().filter(|c| c.name == NAME).collect();
        let [serving] = named.as_slice() else {
            return Err(format!("{} containers named {NAME}: {all:?}", named.len()));
        };
        if !serving.running {
            return Err(format!("{NAME} is not running: {all:?}"));
        }
        if all.iter().filter(|c| c.running).count() != 1 {
            return Err(format!("more than one container runs: {all:?}"));
        }
        match serving.image.as_str() {
            OLD => Ok("old"),
            NEW => Ok("new"),
            other => Err(format!("{NAME} runs {other}")),
        }
    }

    #[test]
    fn a_mount_swapped_for_a_symlink_after_planning_is_refused_before_the_cut_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in ["allowed", "private"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let link = root.join("link");
        std::os::unix::fs::symlink(root.join("allowed"), &link).unwrap();
        let mut want = desired();
        let d = &mut want.containers[0];
        d.spec.volumes = vec![format!("{}:/data:ro", link.display())];
        d.spec_hash = d.spec.hash();
        d.binds = crate::resolve::host_binds(&d.spec);
        let mut policy = policy(true);
        policy.rules.floor.guarded.push(crate::floor::Guarded {
            path: root.join("private").display().to_string(),
            why: "the partner's private data".into(),
        });
        let engine = host();
        let state_dir = tempfile::tempdir().unwrap();
        let swap = || {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(root.join("private"), &link).unwrap();
        };
        let unswap = || {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(root.join("allowed"), &link).unwrap();
        };
        let reports = block_on(pass_with(
            &engine,
            state_dir.path(),
            &at("2026-11-21T02:00:00Z"),
            &Service("idle", Cell::new(0)),
            &policy,
            &want,
            swap,
        ))
        .unwrap();
        let Outcome::Refused { detail } = &reports[0].outcome else {
            panic!("{reports:?}");
        };
        assert!(detail.contains("the partner's private data"), "{detail}");
        assert_eq!(
            one_serving(&engine),
            Ok("old"),
            "the old container is untouched"
        );
        // Unswapped, the same plan is carried out: the refusal above was the executor's own
        // look at the mount, not the planner's.
        unswap();
        let engine = host();
        let reports = block_on(pass_with(
            &engine,
            tempfile::tempdir().unwrap().path(),
            &at("2026-11-21T02:00:00Z"),
            &Service("idle", Cell::new(0)),
            &policy,
            &want,
            || {},
        ))
        .unwrap();
        assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
        assert_eq!(one_serving(&engine), Ok("new"));
    }

    fn host() -> FakeEngine {
        let engine = FakeEngine::with_images(&[OLD, NEW]);
        engine.insert(old_container());
        engine
    }

    #[test]
    fn an_uncrashed_replace_swaps_the_container() {
        let engine = host();
        let dir = tempfile::tempdir().unwrap();
        let reports = block_on(pass(
            &engine,
            dir.path(),
            &at("2026-11-21T02:00:00Z"),
            &Service("idle", Cell::new(0)),
            &policy(false),
        ))
        .unwrap();
        assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
        assert_eq!(one_serving(&engine), Ok("new"));
        assert_eq!(engine.containers().len(), 1, "the old container is gone");
    }

    #[test]
    fn the_window_is_asked_again_right_before_the_step() {
        // Planned at 04:58 the replace fits (10 s stop + 5 s health + 30 s margin before
        // 05:00); by the time the executor reaches it, it is 04:59:30, and it no longer does.
        let engine = host();
        let dir = tempfile::tempdir().unwrap();
        let clock = Ticks(
            vec![
                "2026-11-21T04:58:00Z".parse().unwrap(),
                "2026-11-21T04:59:30Z".parse().unwrap(),
            ],
            Cell::new(0),
        );
        let service = Service("idle", Cell::new(0));
        let reports =
            block_on(pass(&engine, dir.path(), &clock, &service, &policy(false))).unwrap();
        assert_eq!(
            reports[0].outcome,
            Outcome::Deferred {
                reason: "window".into(),
                detail: "the window closes at 2026-11-21T05:00:00Z, before this step could \
                         finish; next opens 2026-11-28T01:00:00Z"
                    .into()
            }
        );
        assert_eq!(one_serving(&engine), Ok("old"));
        assert_eq!(
            engine.containers(),
            vec![old_container()],
            "nothing was touched"
        );
        assert_eq!(service.1.get(), 0, "a closed window needs no idle answer");
    }

    #[test]
    fn the_service_is_asked_again_right_before_a_step_that_stops_it() {
        let engine = host();
        let dir = tempfile::tempdir().unwrap();
        let service = Service("busy", Cell::new(0));
        let reports = block_on(pass(
            &engine,
            dir.path(),
            &at("2026-11-21T02:00:00Z"),
            &service,
            &policy(false),
        ))
        .unwrap();
        assert_eq!(service.1.get(), 1, "asked once, right before the cut-over");
        assert_eq!(
            reports[0].outcome,
            Outcome::Deferred {
                reason: "busy".into(),
                detail: "service not idle: /state is `busy`, not `idle`".into()
            }
        );
        assert_eq!(engine.containers(), vec![old_container()]);
    }

    /// Crashes a replace at engine call `crash`, then recovers (crashing the recovery at
    /// `again` if given), then runs a whole pass: the invariant holds after each recovery,
    /// and the host ends at the new version with nothing left over.
    fn crash_and_recover(crash: u64, again: Option<u64>, flaky: &[u64]) -> Result<(), String> {
        let engine = host();
        let dir = tempfile::tempdir().unwrap();
        let open = at("2026-11-21T02:00:00Z");
        let service = Service("idle", Cell::new(0));
        engine.crash_at(crash);
        engine.fail_calls(flaky.iter().copied());
        let _ = block_on(pass(&engine, dir.path(), &open, &service, &policy(false)));
        engine.restart();
        if let Some(n) = again {
            engine.crash_at(n);
            let _ = block_on(recover(&engine, dir.path()));
            engine.restart();
        }
        block_on(recover(&engine, dir.path())).map_err(|e| chain(&e))?;
        one_serving(&engine).map_err(|e| format!("after recovery: {e}"))?;
        let reports = block_on(pass(&engine, dir.path(), &open, &service, &policy(false)))
            .map_err(|e| chain(&e))?;
        block_on(pass(&engine, dir.path(), &open, &service, &policy(false)))
            .map_err(|e| chain(&e))?;
        match one_serving(&engine) {
            Ok("new") if engine.containers().len() == 1 => Ok(()),
            other => Err(format!(
                "after two more passes ({reports:?}): {other:?}, {:?}",
                engine.containers()
            )),
        }
    }

    #[test]
    fn a_replace_crashed_at_every_engine_call_recovers() {
        let engine = host();
        let dir = tempfile::tempdir().unwrap();
        let service = Service("idle", Cell::new(0));
        let open = at("2026-11-21T02:00:00Z");
        let before = engine.calls();
        block_on(pass(&engine, dir.path(), &open, &service, &policy(false))).unwrap();
        let calls = engine.calls() - before;
        assert!(calls >= 8, "a replace makes its calls: {calls}");
        for crash in 1..=calls {
            crash_and_recover(crash, None, &[]).unwrap_or_else(|e| panic!("crash at {crash}: {e}"));
        }
    }

    /// [`crash_and_recover`] on an engine that updates in place (a swarm): one service
    /// throughout, running the old or the new version after each recovery, the new one
    /// after a pass.
    fn crash_in_place(crash: u64) -> Result<(), String> {
        let engine = host();
        engine.update_in_place();
        let dir = tempfile::tempdir().unwrap();
        let open = at("2026-11-21T02:00:00Z");
        let service = Service("idle", Cell::new(0));
        engine.crash_at(crash);
        let _ = block_on(pass(&engine, dir.path(), &open, &service, &policy(false)));
        engine.restart();
        block_on(recover(&engine, dir.path())).map_err(|e| chain(&e))?;
        one_serving(&engine).map_err(|e| format!("after recovery: {e}"))?;
        let reports = block_on(pass(&engine, dir.path(), &open, &service, &policy(false)))
            .map_err(|e| chain(&e))?;
        match one_serving(&engine) {
            Ok("new") if engine.containers().len() == 1 => Ok(()),
            other => Err(format!(
                "after a pass ({reports:?}): {other:?}, {:?}",
                engine.containers()
            )),
        }
    }

    #[test]
    fn an_update_in_place_crashed_at_every_engine_call_recovers_to_one_service() {
        let engine = host();
        engine.update_in_place();
        let dir = tempfile::tempdir().unwrap();
        let service = Service("idle", Cell::new(0));
        let open = at("2026-11-21T02:00:00Z");
        let before = engine.calls();
        let reports = block_on(pass(&engine, dir.path(), &open, &service, &policy(false))).unwrap();
        assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
        assert_eq!(one_serving(&engine), Ok("new"));
        assert_eq!(engine.containers()[0].id, "old", "updated where it is");
        let calls = engine.calls() - before;
        assert!(calls >= 2, "an update makes its calls: {calls}");
        for crash in 1..=calls {
            crash_in_place(crash).unwrap_or_else(|e| panic!("crash at {crash}: {e}"));
        }
    }

    /// A directory left in the secrets dir, with its `tls.key`.
    type Left = (String, Vec<u8>);

    /// Replaces the old container (whose files are in `berth-p-s`) by one with a secret
    /// file, from `image`; gives the reports and what the secrets dir holds then.
    fn replace_with_secrets(image: &str) -> (Vec<StepReport>, Vec<Left>, FakeEngine) {
        let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs");
        let secrets = SecretsDir::open(&shm.path().join("s")).unwrap();
        let file = |v: &str| {
            [(
                "tls.key".to_owned(),
                crate::secret::Plaintext::new(v.into()),
            )]
            .into()
        };
        let old_dir = secrets.dir_for(NAME);
        secrets.write(&old_dir, &file("k1")).unwrap();
        let engine = FakeEngine::with_images(&[OLD, NEW]);
        let mut old = old_container();
        old.labels
            .insert(label::SECRETS_DIR.into(), old_dir.display().to_string());
        engine.insert(old);
        let mut want = desired();
        let d = &mut want.containers[0];
        d.image = image.into();
        d.spec.secret_files = vec![crate::container::SecretMount {
            secret: "tls.key".into(),
            target: "/run/k".into(),
        }];
        d.spec.unsealed.files = file("k2");
        d.spec_hash = d.spec.hash();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let clock = at("2026-11-21T02:00:00Z");
        let executor = Executor {
            engine: &engine,
            sources: &NoRegistry,
            probe: &Service("idle", Cell::new(0)),
            clock: &clock,
            idle: None,
            state: &state,
            secrets: Some(&secrets),
            stopping: &AtomicBool::new(false),
            min_free: 0,
        };
        let reports = block_on(async {
            let observed = Observed {
                containers: engine.list_managed("p").await.unwrap(),
                held: vec![],
                in_flight: Default::default(),
                idle: Idleness::Unknown,
                requires: Default::default(),
            };
            let plan = crate::plan::plan(&want, &observed, &policy(false), clock.now());
            executor.execute(&plan).await
        });
        let mut left = Vec::new();
        for e in std::fs::read_dir(secrets.path()).unwrap() {
            let e = e.unwrap();
            let content = std::fs::read(e.path().join("tls.key")).unwrap_or_default();
            left.push((e.file_name().to_string_lossy().into_owned(), content));
        }
        (reports, left, engine)
    }

    #[test]
    fn secret_files_come_and_go_with_their_containers() {
        let (reports, left, engine) = replace_with_secrets(NEW);
        assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
        let [(dir, content)] = left.as_slice() else {
            panic!("one directory, the new container's: {left:?}");
        };
        assert!(dir.starts_with(&format!("{NAME}.next-")), "{dir}");
        assert_eq!(content, b"k2");
        let new = &engine.containers()[0];
        assert!(new.labels[label::SECRETS_DIR].ends_with(dir.as_str()));

        let (reports, left, _) = replace_with_secrets("sha256:missing");
        assert!(
            matches!(reports[0].outcome, Outcome::RolledBack { .. }),
            "{reports:?}"
        );
        assert_eq!(
            left,
            vec![(NAME.to_owned(), b"k1".to_vec())],
            "the old container's files stay, the new one's went with it"
        );
    }

    proptest::proptest! {
        /// Crashes in the replace and again in its recovery, with flaky calls on the way,
        /// in any combination, still end with one container serving and then the new one.
        #[test]
        fn crashes_and_failures_in_any_sequence_recover(
            crash in 1u64..16,
            again in proptest::option::of(1u64..8),
            flaky in proptest::collection::vec(1u64..16, 0..3),
        ) {
            if let Err(e) = crash_and_recover(crash, again, &flaky) {
                proptest::prop_assert!(false, "crash at {crash}, again {again:?}, flaky {flaky:?}: {e}");
            }
        }
    }

    /// A multi-component script `m` on the fake engine: `db` (stateful, its own image),
    /// a `migrate` job, `api` and `worker`, the app at `A1` and the database at `DB`.
    mod unit {
        use super::*;
        use crate::container::part_name;
        use crate::manifest::Condition;
        use crate::resolve::ComponentOf;

        const A1: &str = "sha256:app1";
        const A2: &str = "sha256:app2";
        const DB: &str = "sha256:db";

        /// Answers 503 for URLs naming `failing`, 200 for the rest.
        struct Failing(&'static str);

        impl Probe for Failing {
            async fn get(&self, url: &str, _timeout: Duration) -> Result<Answer, ProbeError> {
                Ok(Answer {
                    status: if url.contains(self.0) { 503 } else { 200 },
                    body: br#"{"state":"idle"}"#.to_vec(),
                })
            }
        }

        fn part(name: &str, image: &str, deps: &[(&str, Condition)]) -> DesiredContainer {
            let spec = ContainerSpec {
                network: Some("berth-p-m".into()),
                network_alias: Some(name.into()),
                job: name == "migrate",
                ..ContainerSpec::minimal()
            };
            DesiredContainer {
                script: "m".into(),
                component: Some(ComponentOf {
                    name: name.into(),
                    stateful: name == "db",
                    job: (name == "migrate").then_some(Duration::from_secs(60)),
                    depends_on: deps.iter().map(|(d, c)| ((*d).to_owned(), *c)).collect(),
                    volumes: if name == "db" {
                        vec![crate::container::Volume::new("p", "m", "data")]
                    } else {
                        vec![]
                    },
                    network: Some(crate::container::Network::new("p", "m")),
                }),
                version: if image == DB {
                    "15.4.0"
                } else if image == A1 {
                    "1.0.0"
                } else {
                    "2.0.0"
                }
                .into(),
                digest: image.into(),
                image: image.into(),
                pull_from: None,
                spec_hash: spec.hash(),
                spec,
                health: HealthCheck {
                    http: Some(format!("http://127.0.0.1:1/{name}")),
                    timeout: Duration::ZERO,
                },
                binds: vec![],
                env_files: vec![],
                origin: Default::default(),
            }
        }

        /// The unit at `app`, in dependency order.
        fn unit(app: &str) -> Desired {
            use Condition::*;
            Desired {
                partner: "p".into(),
                revision: "r2".into(),
                containers: vec![
                    part("db", DB, &[]),
                    part("migrate", app, &[("db", Healthy)]),
                    part("api", app, &[("db", Healthy), ("migrate", Completed)]),
                    part("worker", app, &[("db", Healthy)]),
                ],
                unresolved: BTreeMap::new(),
                refused: BTreeMap::new(),
            }
        }

        /// The host with the unit at `A1`, as an earlier pass left it.
        fn host_at_a1() -> FakeEngine {
            let engine = FakeEngine::with_images(&[A1, A2, DB]);
            for d in unit(A1).containers {
                let c = d.component.as_ref().unwrap();
                let labels = [
                    (label::MANAGED, "true"),
                    (label::PARTNER, "p"),
                    (label::SCRIPT, "m"),
                    (label::COMPONENT, c.name.as_str()),
                    (label::VERSION, d.version.as_str()),
                    (label::DIGEST, d.digest.as_str()),
                    (label::SPEC_HASH, d.spec_hash.as_str()),
                    (label::REVISION, "r1"),
                ];
                engine.insert(FakeContainer {
                    id: format!("{}-old", c.name),
                    name: d.name("p"),
                    image: d.image.clone(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    running: c.job.is_none(),
                    job: c.job.is_some(),
                    exit_code: c.job.map(|_| 0),
                });
            }
            engine
        }

        async fn unit_pass(
            engine: &FakeEngine,
            root: &std::path::Path,
            probe: &impl Probe,
            want: &Desired,
        ) -> Result<Vec<StepReport>, ExecuteError> {
            let state = StateDir::open(root)?;
            let clock = at("2026-11-21T02:00:00Z");
            let idle = idle();
            let executor = Executor {
                engine,
                sources: &NoRegistry,
                probe,
                clock: &clock,
                idle: Some(&idle),
                state: &state,
                secrets: None,
                stopping: &AtomicBool::new(false),
                min_free: 0,
            };
            executor.recover("p").await?;
            let observed = Observed {
                containers: engine.list_managed("p").await?,
                held: state.held()?,
                in_flight: Default::default(),
                idle: Idleness::Unknown,
                requires: Default::default(),
            };
            let plan = crate::plan::plan(want, &observed, &policy(false), clock.now());
            Ok(executor.execute(&plan).await)
        }

        /// Each component under its managed name exactly once, every long-running one
        /// running, and the changed ones (all but `db`) all at `A1` or all at `A2`.
        fn all_old_or_all_new(engine: &FakeEngine) -> Result<&'static str, String> {
            let all = engine.containers();
            let mut images = BTreeSet::new();
            for c in ["db", "migrate", "api", "worker"] {
                let name = part_name("p", "m", Some(c));
                let named: Vec<_> = all.iter().filter(|x| x.name == name).collect();
                let [one] = named.as_slice() else {
                    return Err(format!("{} containers named {name}: {all:?}", named.len()));
                };
                if one.running == one.job {
                    return Err(format!("{name} running={}: {all:?}", one.running));
                }
                if c == "db" {
                    if one.id != "db-old" {
                        return Err(format!("the database was replaced: {all:?}"));
                    }
                } else {
                    images.insert(one.image.clone());
                }
            }
            if all.iter().filter(|c| c.running).count() != 3 {
                return Err(format!("not exactly three running: {all:?}"));
            }
            match images
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                [A1] => Ok("old"),
                [A2] => Ok("new"),
                other => Err(format!("a mix of versions {other:?}: {all:?}")),
            }
        }

        use std::collections::BTreeSet;

        #[test]
        fn a_component_whose_image_does_not_fit_defers_the_whole_unit_and_touches_nothing() {
            let engine = FakeEngine::with_images(&[A1, DB]);
            for c in host_at_a1().containers() {
                engine.insert(c);
            }
            engine.set_free(Ok(3 * GIB));
            let mut want = unit(A2);
            for d in want.containers.iter_mut().filter(|d| d.digest == A2) {
                d.pull_from = Some(ImageRepo {
                    source: crate::image::Source::Oci,
                    registry: Some("r.example".into()),
                    repository: "m".into(),
                    insecure: false,
                });
            }
            let sources = Sizes([(A2, 800 * MIB)].into(), Cell::new(0));
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::open(dir.path()).unwrap();
            let clock = at("2026-11-21T02:00:00Z");
            let executor = Executor {
                engine: &engine,
                sources: &sources,
                probe: &Service("idle", Cell::new(0)),
                clock: &clock,
                idle: None,
                state: &state,
                secrets: None,
                stopping: &AtomicBool::new(false),
                min_free: GIB,
            };
            let reports = block_on(async {
                let observed = Observed {
                    containers: engine.list_managed("p").await.unwrap(),
                    held: vec![],
                    in_flight: Default::default(),
                    idle: Idleness::Unknown,
                    requires: Default::default(),
                };
                let plan = crate::plan::plan(&want, &observed, &policy(true), clock.now());
                executor.execute(&plan).await
            });
            let changes: Vec<_> = reports
                .iter()
                .filter(|r| r.action != Action::Keep)
                .collect();
            assert_eq!(changes.len(), 3, "{reports:?}");
            for r in changes {
                assert!(
                    matches!(&r.outcome, Outcome::Deferred { reason, detail }
                        if reason == "disk" && detail.starts_with("pulling 2.3 GiB would leave")),
                    "{reports:?}"
                );
            }
            assert_eq!(sources.1.get(), 1, "the unit's image is judged once");
            assert!(!has(&engine, A2));
            assert_eq!(all_old_or_all_new(&engine), Ok("old"));
        }

        #[test]
        fn only_the_changed_components_are_replaced_in_dependency_order() {
            let engine = host_at_a1();
            let dir = tempfile::tempdir().unwrap();
            let reports =
                block_on(unit_pass(&engine, dir.path(), &Failing("none"), &unit(A2))).unwrap();
            let done: Vec<(Option<&str>, &Outcome)> = reports
                .iter()
                .map(|r| (r.component.as_deref(), &r.outcome))
                .collect();
            assert_eq!(
                done,
                vec![
                    (Some("db"), &Outcome::Unchanged),
                    (Some("migrate"), &Outcome::Done),
                    (Some("api"), &Outcome::Done),
                    (Some("worker"), &Outcome::Done),
                ]
            );
            assert_eq!(all_old_or_all_new(&engine), Ok("new"));
            // The fake numbers containers as it creates them: the job ran first, then its
            // dependents in order.
            let id = |c: &str| {
                let name = part_name("p", "m", Some(c));
                engine
                    .containers()
                    .into_iter()
                    .find(|x| x.name == name)
                    .unwrap()
                    .id
            };
            assert!(id("migrate") < id("api") && id("api") < id("worker"));
            assert_eq!(engine.containers().len(), 4, "the old containers are gone");
        }

        #[test]
        fn a_new_unit_gets_its_network_and_volume_and_every_component() {
            let engine = FakeEngine::with_images(&[A1, DB]);
            let dir = tempfile::tempdir().unwrap();
            let reports =
                block_on(unit_pass(&engine, dir.path(), &Failing("none"), &unit(A1))).unwrap();
            assert!(
                reports.iter().all(|r| r.outcome == Outcome::Done),
                "{reports:?}"
            );
            assert_eq!(engine.networks(), vec!["berth-p-m".to_owned()]);
            assert_eq!(engine.volumes(), vec!["berth-p-m-data".to_owned()]);
            for c in ["db", "migrate", "api", "worker"] {
                let name = part_name("p", "m", Some(c));
                let found: Vec<_> = engine
                    .containers()
                    .into_iter()
                    .filter(|x| x.name == name)
                    .collect();
                let [one] = found.as_slice() else {
                    panic!("{} containers named {name}", found.len());
                };
                assert_eq!(
                    one.running,
                    c != "migrate",
                    "{name}: only the job has ended"
                );
                assert_eq!(one.exit_code, (c == "migrate").then_some(0));
            }
        }

        #[test]
        fn a_failing_job_holds_the_update_before_anything_running_is_touched() {
            let engine = host_at_a1();
            engine.set_job_exit(3);
            let dir = tempfile::tempdir().unwrap();
            let before: Vec<_> = engine
                .containers()
                .into_iter()
                .filter(|c| c.running)
                .collect();
            let reports =
                block_on(unit_pass(&engine, dir.path(), &Failing("none"), &unit(A2))).unwrap();
            let Outcome::RolledBack { error, .. } = &reports[1].outcome else {
                panic!("{reports:?}");
            };
            assert_eq!(error, "the job exited with code 3");
            let Outcome::RolledBack { error, .. } = &reports[2].outcome else {
                panic!("{reports:?}");
            };
            assert_eq!(error, "m/migrate: the job exited with code 3");
            let after: Vec<_> = engine
                .containers()
                .into_iter()
                .filter(|c| c.running)
                .collect();
            assert_eq!(before, after, "the running containers were never stopped");
            assert_eq!(all_old_or_all_new(&engine), Ok("old"));
            // Held: the next pass does not run the job again.
            let again =
                block_on(unit_pass(&engine, dir.path(), &Failing("none"), &unit(A2))).unwrap();
            assert!(
                again[1..].iter().all(|r| r.outcome
                    == Outcome::Deferred {
                        reason: "failed-health".into(),
                        detail: Deferral::FailedHealth.describe()
                    }),
                "{again:?}"
            );
        }

        #[test]
        fn an_unhealthy_component_rolls_back_every_component_changed_with_it() {
            let engine = host_at_a1();
            let dir = tempfile::tempdir().unwrap();
            let reports = block_on(unit_pass(
                &engine,
                dir.path(),
                &Failing("worker"),
                &unit(A2),
            ))
            .unwrap();
            let Outcome::RolledBack { error, .. } = &reports[3].outcome else {
                panic!("{reports:?}");
            };
            assert!(error.starts_with("health check failed"), "{error}");
            let Outcome::RolledBack { error, .. } = &reports[2].outcome else {
                panic!("{reports:?}");
            };
            assert!(
                error.starts_with("m/worker: health check failed"),
                "{error}"
            );
            assert_eq!(all_old_or_all_new(&engine), Ok("old"));
            let id = |c: &str| {
                let name = part_name("p", "m", Some(c));
                engine
                    .containers()
                    .into_iter()
                    .find(|x| x.name == name)
                    .unwrap()
                    .id
            };
            assert_eq!(id("api"), "api-old", "the healthy API went back too");
            assert_eq!(engine.containers().len(), 4, "every new container is gone");
        }

        /// Crashes the unit's update at engine call `crash`, then runs normal passes: after
        /// the recovery the unit is all-old or all-new, and two passes later all-new.
        fn crash_unit(crash: u64) -> Result<(), String> {
            let engine = host_at_a1();
            let dir = tempfile::tempdir().unwrap();
            let ok = Failing("none");
            engine.crash_at(crash);
            let _ = block_on(unit_pass(&engine, dir.path(), &ok, &unit(A2)));
            engine.restart();
            block_on(recover(&engine, dir.path())).map_err(|e| chain(&e))?;
            all_old_or_all_new(&engine).map_err(|e| format!("after recovery: {e}"))?;
            block_on(unit_pass(&engine, dir.path(), &ok, &unit(A2))).map_err(|e| chain(&e))?;
            block_on(unit_pass(&engine, dir.path(), &ok, &unit(A2))).map_err(|e| chain(&e))?;
            match all_old_or_all_new(&engine) {
                Ok("new") if engine.containers().len() == 4 => Ok(()),
                other => Err(format!(
                    "after two passes: {other:?}, {:?}",
                    engine.containers()
                )),
            }
        }

        #[test]
        fn a_unit_update_crashed_at_every_engine_call_ends_all_old_or_all_new() {
            let engine = host_at_a1();
            let dir = tempfile::tempdir().unwrap();
            let before = engine.calls();
            block_on(unit_pass(&engine, dir.path(), &Failing("none"), &unit(A2))).unwrap();
            let calls = engine.calls() - before;
            assert!(calls > 30, "the update makes {calls} calls");
            for crash in 1..=calls {
                crash_unit(crash).unwrap_or_else(|e| panic!("crash at {crash}: {e}"));
            }
        }
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Script `script` at `digest`, pulled from a registry.
    fn pulled(script: &str, digest: &str) -> DesiredContainer {
        let mut d = desired().containers.remove(0);
        d.script = script.into();
        d.digest = digest.into();
        d.image = format!("r.example/{script}@{digest}");
        d.pull_from = Some(ImageRepo {
            source: crate::image::Source::Oci,
            registry: Some("r.example".into()),
            repository: script.into(),
            insecure: false,
        });
        d
    }

    /// Plans towards `want` and executes, pulling through `sources` under `min_free`.
    fn pull_pass(
        engine: &FakeEngine,
        sources: &Sizes,
        min_free: u64,
        want: Vec<DesiredContainer>,
    ) -> Vec<StepReport> {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let clock = at("2026-11-21T02:00:00Z");
        let executor = Executor {
            engine,
            sources,
            probe: &Service("idle", Cell::new(0)),
            clock: &clock,
            idle: None,
            state: &state,
            secrets: None,
            stopping: &AtomicBool::new(false),
            min_free,
        };
        let want = Desired {
            containers: want,
            ..desired()
        };
        block_on(async {
            let observed = Observed {
                containers: engine.list_managed("p").await.unwrap(),
                held: vec![],
                in_flight: Default::default(),
                idle: Idleness::Unknown,
                requires: Default::default(),
            };
            let plan = crate::plan::plan(&want, &observed, &policy(true), clock.now());
            executor.execute(&plan).await
        })
    }

    fn outcome<'r>(reports: &'r [StepReport], script: &str) -> &'r Outcome {
        &reports.iter().find(|r| r.script == script).unwrap().outcome
    }

    fn has(engine: &FakeEngine, image: &str) -> bool {
        block_on(engine.has_image(image)).unwrap()
    }

    #[test]
    fn pulls_count_against_one_free_space_and_the_one_that_would_cross_min_free_waits() {
        let engine = FakeEngine::with_images(&[OLD]);
        engine.insert(old_container());
        engine.set_free(Ok(3 * GIB));
        // Each pull is estimated at 1200 MiB: the first leaves 1872 MiB, the second would
        // leave 672 MiB, under min_free.
        let sources = Sizes(
            [("sha256:a", 400 * MIB), (NEW, 400 * MIB)].into(),
            Cell::new(0),
        );
        let reports = pull_pass(
            &engine,
            &sources,
            GIB,
            vec![pulled("a", "sha256:a"), pulled("s", NEW)],
        );
        assert_eq!(*outcome(&reports, "a"), Outcome::Done, "{reports:?}");
        assert_eq!(
            *outcome(&reports, "s"),
            Outcome::Deferred {
                reason: "disk".into(),
                detail: "pulling 1.2 GiB would leave 672 MiB free on /var/lib/docker, under \
                         min_free 1 GiB"
                    .into()
            }
        );
        assert!(!has(&engine, "r.example/s@sha256:new"), "never pulled");
        let old = engine.containers().into_iter().find(|c| c.name == NAME);
        assert!(
            old.is_some_and(|c| c.image == OLD && c.running),
            "the old container serves on"
        );
    }

    #[test]
    fn a_data_root_that_cannot_be_measured_defers_the_pull_and_says_why() {
        let engine = FakeEngine::with_images(&[OLD]);
        engine.insert(old_container());
        engine.set_free(Err("statvfs: No such file or directory".into()));
        let sources = Sizes([(NEW, MIB)].into(), Cell::new(0));
        let reports = pull_pass(&engine, &sources, GIB, vec![pulled("s", NEW)]);
        let Outcome::Deferred { reason, detail } = outcome(&reports, "s") else {
            panic!("{reports:?}")
        };
        assert_eq!(reason, "disk");
        assert!(
            detail.contains("No such file or directory") && detail.contains("set min_free to 0"),
            "{detail}"
        );
        assert!(!has(&engine, "r.example/s@sha256:new"));
    }

    #[test]
    fn min_free_zero_pulls_without_asking_sizes() {
        let engine = FakeEngine::with_images(&[OLD]);
        engine.insert(old_container());
        engine.set_free(Ok(0));
        let sources = Sizes([(NEW, GIB)].into(), Cell::new(0));
        let reports = pull_pass(&engine, &sources, 0, vec![pulled("s", NEW)]);
        assert_eq!(*outcome(&reports, "s"), Outcome::Done, "{reports:?}");
        assert_eq!(sources.1.get(), 0);
    }
}
