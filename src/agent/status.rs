//! What the agent last did, kept in the state dir so that `berth status`, `/status` and
//! `/metrics` all tell the same story, across cron runs as well as in the daemon.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::execute::{Outcome, StepReport};
use crate::plan::{Action, Plan};

/// Counters since the state dir was created (Prometheus counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub passes: u64,
    pub failures: u64,
    pub updates: u64,
    pub rollbacks: u64,
    pub deferrals: BTreeMap<String, u64>,
}

/// One script's state after the last pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStatus {
    pub script: String,
    /// The component, for a multi-component script (one entry per component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The version running, or about to run.
    pub version: Option<String>,
    /// `in-sync`, `updated`, `deferred`, `refused`, `failed`, `rolled-back` or `not-pulled`.
    pub state: String,
    pub detail: String,
    /// A swarm service's tasks, as the pass found them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<crate::container::Tasks>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPass {
    pub at: String,
    pub exit: i32,
    pub millis: u64,
}

/// The status document (`/status`, `berth status --format json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub partner: String,
    pub revision: Option<String>,
    /// Why the host is not at the manifest repo's head, if it is not.
    pub source: Option<String>,
    /// Why the host policy could not be used in the last pass (nothing was changed then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub last_pass: Option<LastPass>,
    pub last_success: Option<String>,
    pub scripts: Vec<ScriptStatus>,
    /// Changes planned but not made (deferred or failed).
    pub pending: usize,
    pub next_window: Option<String>,
    pub counters: Counters,
    /// How the status record last went to the status repo; absent without `report:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportStatus>,
}

/// The agent's pushes to the status repo (docs/reporting.md). A failed push never fails a
/// pass: it shows here, and the record goes out at the next pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportStatus {
    /// When the last push was tried.
    pub last_attempt: Option<String>,
    /// When a record last reached the status repo (or was found there already).
    pub last_success: Option<String>,
    /// Why the last push failed; `None` once one succeeds.
    pub last_error: Option<String>,
    /// The commit the last successful push made, if it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

const FILE: &str = "status.json";

impl Status {
    /// The status in a state dir; a default one when there is none yet.
    pub fn read(state_dir: &Path) -> std::io::Result<Option<Status>> {
        match std::fs::read(state_dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The status a new pass starts from: the last one's (its counters persist across
    /// cron runs and pass children; an unreadable one starts afresh), one more pass counted.
    pub fn for_pass(state_dir: &Path, partner: &str) -> Status {
        let mut status = Status::read(state_dir).ok().flatten().unwrap_or_default();
        status.partner = partner.to_owned();
        status.counters.passes += 1;
        status
    }

    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::durable::write(
            &state_dir.join(FILE),
            &serde_json::to_vec_pretty(self).expect("status serializes"),
        )
    }

    /// Folds a pass's plan and outcomes into the status and its counters.
    pub fn record(&mut self, plan: &Plan, reports: &[StepReport]) {
        self.scripts.clear();
        self.pending = 0;
        for (step, report) in plan.steps.iter().zip(reports) {
            let version = step
                .desired()
                .map(|d| d.version.clone())
                .or_else(|| step.observed().map(|o| o.version.clone()));
            let (state, detail) = match &report.outcome {
                Outcome::Unchanged => ("in-sync", step.reason.clone()),
                Outcome::Done => {
                    if matches!(
                        step.action(),
                        Action::Create | Action::Replace | Action::Start
                    ) {
                        self.counters.updates += 1;
                    }
                    (
                        "updated",
                        format!("{}: {}", step.action().as_str(), step.reason),
                    )
                }
                Outcome::Deferred { reason, detail } => {
                    *self.counters.deferrals.entry(reason.clone()).or_default() += 1;
                    if step.is_change() {
                        self.pending += 1;
                    }
                    (
                        "deferred",
                        format!("{} {}: {detail}", step.action().as_str(), step.reason),
                    )
                }
                Outcome::RolledBack { error, .. } => {
                    self.counters.rollbacks += 1;
                    self.pending += 1;
                    ("rolled-back", error.clone())
                }
                Outcome::Failed { error, .. } => {
                    self.pending += 1;
                    ("failed", error.clone())
                }
                Outcome::Refused { detail } => {
                    if step.is_change() {
                        self.pending += 1;
                    }
                    ("refused", detail.clone())
                }
                Outcome::NotPulled { error } => {
                    self.pending += 1;
                    ("not-pulled", error.clone())
                }
            };
            self.scripts.push(ScriptStatus {
                script: step.script.clone(),
                component: step.component.clone(),
                version,
                state: state.into(),
                detail,
                tasks: step.observed().and_then(|o| o.tasks.clone()),
            });
        }
    }
}
