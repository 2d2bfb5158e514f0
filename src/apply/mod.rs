//! The executor: carries a plan out in the order of design.md §5 and decides nothing.
//! Every replace is journaled before each destructive step, so that a run killed at any
//! moment is finished or rolled back by the next: the old or the new container always
//! exists, and never two run under the managed name.

pub mod state;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plan::{Action, Deferral, DesiredContainer, Gate, Held, Plan, Step, container_name};
use crate::probe::Probe;
use crate::resolve::TagSource;
use crate::runtime::{Engine, RuntimeError};
use state::{Phase, Record, StateDir, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Unhealthy(String),
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
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
    /// The image could not be fetched; nothing was touched.
    NotPulled {
        error: String,
    },
    /// The new container failed; the old one serves again.
    RolledBack {
        error: String,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub script: String,
    pub action: Action,
    pub reason: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub millis: u128,
}

/// Checked right before a running container is stopped; the gate may have closed since the
/// plan was made.
#[allow(async_fn_in_trait)] // driven on berth's own single-threaded runtime
pub trait CutOverGuard {
    async fn check(&self) -> Result<(), Deferral>;
}

/// Aborts the process after the n-th destructive point of a replace when
/// `BERTH_ABORT_AFTER=n` is set: the crash-recovery tests' way to stop a run mid-step.
fn fault_point(n: u32) {
    if std::env::var("BERTH_ABORT_AFTER").is_ok_and(|v| v == n.to_string()) {
        std::process::abort();
    }
}

/// Suffixes of the names a container wears during a replace (the new one's is followed by
/// a per-attempt nonce).
pub const NEXT_SUFFIX: &str = ".next";
pub const OLD_SUFFIX: &str = ".old";

pub struct Executor<'a, E: Engine, P: Probe, G: CutOverGuard, S: TagSource> {
    pub engine: &'a E,
    /// Where pull credentials come from.
    pub sources: &'a S,
    pub probe: &'a P,
    pub guard: &'a G,
    pub state: &'a StateDir,
    /// Set when the process is asked to stop: the step in flight finishes, no new one
    /// starts.
    pub stopping: &'a std::sync::atomic::AtomicBool,
}

impl<E: Engine, P: Probe, G: CutOverGuard, S: TagSource> Executor<'_, E, P, G, S> {
    /// Finishes or rolls back what an earlier run of this partner left half done. Returns
    /// a line per record for the report.
    pub async fn recover(&self, partner: &str) -> Result<Vec<String>, ApplyError> {
        let mut done = Vec::new();
        for record in self.state.journals(partner)? {
            match record.phase {
                Phase::Creating | Phase::CutOver => {
                    self.roll_back(&record).await?;
                    done.push(format!(
                        "{}: rolled back an interrupted replace",
                        record.script
                    ));
                }
                Phase::Verified => {
                    self.roll_forward(&record).await?;
                    done.push(format!(
                        "{}: finished an interrupted replace",
                        record.script
                    ));
                }
            }
        }
        Ok(done)
    }

    /// Runs every allowed step; one step's failure does not stop the others.
    pub async fn execute(&self, plan: &Plan) -> Vec<StepReport> {
        let mut not_pulled = std::collections::BTreeMap::new();
        for step in plan.steps.iter().filter(|s| s.pre_pull) {
            if let Some(d) = &step.desired
                && let Err(e) = self.ensure_image(d).await
            {
                not_pulled.insert(step.script.clone(), crate::cli::chain(&e));
            }
        }
        let mut reports = Vec::new();
        for step in &plan.steps {
            let started = Instant::now();
            let outcome = match &step.gate {
                Gate::Allowed
                    if step.is_change()
                        && self.stopping.load(std::sync::atomic::Ordering::SeqCst) =>
                {
                    Outcome::Deferred {
                        reason: "shutdown".into(),
                        detail: "berth is stopping; the next run takes it up".into(),
                    }
                }
                _ if not_pulled.contains_key(&step.script) => Outcome::NotPulled {
                    error: not_pulled[&step.script].clone(),
                },
                Gate::Deferred(d) => Outcome::Deferred {
                    reason: d.name().to_owned(),
                    detail: d.describe(),
                },
                Gate::Allowed if step.action == Action::Keep => Outcome::Unchanged,
                Gate::Allowed => self.run(plan, step).await,
            };
            let report = StepReport {
                script: step.script.clone(),
                action: step.action,
                reason: step.reason.clone(),
                outcome,
                millis: started.elapsed().as_millis(),
            };
            tracing::info!(
                script = %report.script,
                action = report.action.as_str(),
                outcome = ?report.outcome,
                millis = report.millis as u64,
                "step"
            );
            reports.push(report);
        }
        reports
    }

    async fn run(&self, plan: &Plan, step: &Step) -> Outcome {
        if step.needs_idle
            && let Err(d) = self.guard.check().await
        {
            return Outcome::Deferred {
                reason: d.name().to_owned(),
                detail: d.describe(),
            };
        }
        let result = match (step.action, &step.desired, &step.observed) {
            (Action::Create, Some(d), _) => self.create(plan, d).await,
            (Action::Start, Some(d), Some(o)) => self.start(&o.id, d).await,
            (Action::Remove, _, Some(o)) => self.remove(&o.id).await,
            (Action::Replace, Some(d), Some(o)) => return self.replace(plan, d, &o.id).await,
            _ => unreachable!("the planner pairs each action with what it needs"),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed {
                error: crate::cli::chain(&e),
            },
        }
    }

    async fn create(&self, plan: &Plan, d: &DesiredContainer) -> Result<(), ApplyError> {
        let name = container_name(&plan.partner, &d.script);
        let id = self
            .engine
            .create(&name, &plan.partner, &plan.revision, d)
            .await?;
        self.engine.start(&id).await?;
        if let Err(e) = self.wait_healthy(&id, d).await {
            self.hold(plan, d)?;
            self.engine.stop(&id).await?;
            self.engine.remove(&id).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn start(&self, id: &str, d: &DesiredContainer) -> Result<(), ApplyError> {
        self.engine.start(id).await?;
        self.wait_healthy(id, d).await
    }

    async fn remove(&self, id: &str) -> Result<(), ApplyError> {
        self.engine.stop(id).await?;
        self.engine.remove(id).await?;
        Ok(())
    }

    /// design.md §5: new container under a temporary name first; then the swap; then
    /// health; then the old one goes, or comes back.
    async fn replace(&self, plan: &Plan, d: &DesiredContainer, old_id: &str) -> Outcome {
        let name = container_name(&plan.partner, &d.script);
        // Unique per attempt: a killed run's create request can still land after the next
        // run rolled it back, and must not block this one's name. Such a leftover is
        // removed by a later plan.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut record = Record {
            partner: plan.partner.clone(),
            script: d.script.clone(),
            next_name: format!("{name}{NEXT_SUFFIX}-{nonce:x}"),
            name: name.clone(),
            old_id: old_id.to_owned(),
            new_id: None,
            phase: Phase::Creating,
        };
        let cut_over = async {
            self.state.write_journal(&record)?;
            fault_point(1);
            let new_id = self
                .engine
                .create(&record.next_name, &plan.partner, &plan.revision, d)
                .await?;
            fault_point(2);
            record.new_id = Some(new_id.clone());
            record.phase = Phase::CutOver;
            self.state.write_journal(&record)?;
            fault_point(3);
            self.engine
                .rename(old_id, &format!("{name}{OLD_SUFFIX}"))
                .await?;
            fault_point(4);
            self.engine.rename(&new_id, &name).await?;
            fault_point(5);
            self.engine.stop(old_id).await?;
            fault_point(6);
            self.engine.start(&new_id).await?;
            fault_point(7);
            self.wait_healthy(&new_id, d).await?;
            record.phase = Phase::Verified;
            self.state.write_journal(&record)?;
            fault_point(8);
            Ok::<_, ApplyError>(())
        };
        let result = cut_over.await;
        let result = match result {
            Ok(()) => self.roll_forward(&record).await.map(|()| Outcome::Done),
            Err(failure) => {
                let error = crate::cli::chain(&failure);
                if matches!(failure, ApplyError::Unhealthy(_))
                    && let Err(e) = self.hold(plan, d)
                {
                    tracing::error!(error = %crate::cli::chain(&e), "cannot remember the failed digest");
                }
                self.roll_back(&record)
                    .await
                    .map(|()| Outcome::RolledBack { error })
            }
        };
        result.unwrap_or_else(|e| Outcome::Failed {
            error: crate::cli::chain(&e),
        })
    }

    /// Removes the new container if any, puts the old one back under its name, running.
    async fn roll_back(&self, record: &Record) -> Result<(), ApplyError> {
        let new = match &record.new_id {
            Some(id) => self.engine.find(id).await?,
            // Created but not yet journaled: find it by its temporary name.
            None => self
                .engine
                .find(&record.next_name)
                .await?
                .filter(|f| f.partner.as_deref() == Some(record.partner.as_str())),
        };
        if let Some(new) = new {
            self.engine.stop(&new.id).await?;
            self.engine.remove(&new.id).await?;
        }
        if let Some(old) = self.engine.find(&record.old_id).await? {
            if old.name != record.name {
                self.engine.rename(&old.id, &record.name).await?;
            }
            if !old.running {
                self.engine.start(&old.id).await?;
            }
        }
        self.state.clear_journal(&record.partner, &record.script)?;
        Ok(())
    }

    /// Removes the old container once the new one has proven itself.
    async fn roll_forward(&self, record: &Record) -> Result<(), ApplyError> {
        if let Some(old) = self.engine.find(&record.old_id).await? {
            self.engine.stop(&old.id).await?;
            self.engine.remove(&old.id).await?;
        }
        fault_point(9);
        if let Some(new_id) = &record.new_id
            && let Some(new) = self.engine.find(new_id).await?
        {
            if new.name != record.name {
                self.engine.rename(&new.id, &record.name).await?;
            }
            if !new.running {
                self.engine.start(&new.id).await?;
            }
        }
        self.state.clear_journal(&record.partner, &record.script)?;
        Ok(())
    }

    /// Pulls a registry image unless the engine has it. Credentials that the registry
    /// refuses are dropped and fetched afresh once, so an expired token never fails an
    /// update.
    async fn ensure_image(&self, d: &DesiredContainer) -> Result<(), ApplyError> {
        let Some(repo) = &d.pull_from else {
            return Ok(());
        };
        if self.engine.has_image(&d.image).await? {
            return Ok(());
        }
        let creds = self.sources.credentials(repo).await?;
        match self.engine.pull(&d.image, creds.as_ref()).await {
            Ok(()) => Ok(()),
            Err(first) if creds.is_some() => {
                tracing::warn!(image = %d.image, error = %crate::cli::chain(&first), "pull failed; retrying with fresh credentials");
                self.sources.forget_credentials(repo);
                let fresh = self.sources.credentials(repo).await?;
                Ok(self.engine.pull(&d.image, fresh.as_ref()).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn hold(&self, plan: &Plan, d: &DesiredContainer) -> Result<(), StateError> {
        self.state.hold(Held {
            partner: plan.partner.clone(),
            script: d.script.clone(),
            digest: d.digest.clone(),
            spec_hash: d.spec_hash.clone(),
        })
    }

    /// Healthy: running, and answering 2xx on `health.http` if there is one, within the
    /// health timeout.
    async fn wait_healthy(&self, id: &str, d: &DesiredContainer) -> Result<(), ApplyError> {
        let deadline = Instant::now() + d.health.timeout;
        loop {
            match self.engine.find(id).await? {
                Some(f) if f.running => {}
                _ => {
                    return Err(ApplyError::Unhealthy(
                        "health check failed: the container exited".into(),
                    ));
                }
            }
            let Some(url) = &d.health.http else {
                return Ok(());
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.probe.get(url, left.min(Duration::from_secs(2))).await {
                Ok(a) if (200..300).contains(&a.status) => return Ok(()),
                Ok(a) => format!("{url} answered HTTP {}", a.status),
                Err(e) => crate::cli::chain(&e),
            };
            if Instant::now() >= deadline {
                return Err(ApplyError::Unhealthy(format!(
                    "health check failed within {}s: {last}",
                    d.health.timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
